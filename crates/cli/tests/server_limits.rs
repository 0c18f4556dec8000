//! `tally serve` against slow, idle and oversize clients (issue [6] items 15 and 18), over real
//! TCP: a thousand half-open connections and a header sent a byte at a time do not make
//! `/healthz` time out; a trickling header is cut off; connections beyond `--max-connections`
//! are closed; an oversize target or header block and two `Idempotency-Key` headers get our
//! JSON error body.

mod common;

use common::Server;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn addr(server: &Server) -> String {
    server.url.trim_start_matches("http://").to_string()
}

/// One request on a fresh connection; the whole answer (the node closes after it).
fn request(server: &Server, raw: &str) -> String {
    let mut s = TcpStream::connect(addr(server)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(raw.as_bytes()).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn healthz(server: &Server) -> String {
    request(
        server,
        "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
}

/// True once the node closed `s` (end of stream or reset), waiting at most `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let end = Instant::now() + within;
    let mut buf = [0_u8; 512];
    while Instant::now() < end {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn half_open_and_trickling_clients_do_not_lock_the_node() {
    // The test holds a thousand sockets too.
    tally_cli_test_raise_open_files();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), &["--header-timeout", "2"]);
    let mut idle: Vec<TcpStream> = (0..1000)
        .map(|_| {
            let mut s = TcpStream::connect(addr(&server)).expect("connect");
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
                .expect("partial header");
            s
        })
        .collect();
    let answer = healthz(&server);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "healthz beside 1000 half-open connections: {answer:?}"
    );
    // A header trickling in a byte at a time is cut off after --header-timeout.
    let mut slow = TcpStream::connect(addr(&server)).expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").expect("start");
    let started = Instant::now();
    let mut cut = false;
    for b in
        b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter()
    {
        if slow.write_all(&[*b]).is_err() || closed_within(&mut slow, Duration::from_millis(200)) {
            cut = true;
            break;
        }
    }
    assert!(cut, "a trickling header was not cut off");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "cut off after {:?}",
        started.elapsed()
    );
    assert!(healthz(&server).starts_with("HTTP/1.1 200"));
    // The half-open ones were closed by the timeout as well.
    assert!(
        closed_within(&mut idle[0], Duration::from_secs(10)),
        "a half-open connection was kept"
    );
    idle.clear();
}

#[test]
fn connections_beyond_the_cap_are_closed_and_the_node_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        &dir.path().join("data"),
        &["--max-connections", "20", "--header-timeout", "60"],
    );
    let held: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(addr(&server)).expect("connect");
            // A complete request on a kept-alive connection: accepted, then idle.
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                .expect("request");
            let mut buf = [0_u8; 12];
            s.read_exact(&mut buf).expect("answered");
            assert_eq!(&buf, b"HTTP/1.1 200");
            s
        })
        .collect();
    let mut extra = TcpStream::connect(addr(&server)).expect("the kernel accepts");
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(
        closed_within(&mut extra, Duration::from_secs(10)),
        "the 21st connection was served"
    );
    drop(held);
    let end = Instant::now() + Duration::from_secs(10);
    let mut answer = String::new();
    while Instant::now() < end {
        answer = healthz(&server);
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
    }
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "not served again: {answer:?}"
    );
    let metrics = request(
        &server,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tally_http_connections_refused_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[test]
fn oversize_requests_and_two_keys_get_our_json_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), &[]);
    let long = format!(
        "GET /v1/accounts?x={} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        "a".repeat(9000)
    );
    let answer = request(&server, &long);
    assert!(answer.starts_with("HTTP/1.1 414"), "{answer}");
    assert!(answer.contains("\"code\":\"uri_too_long\""), "{answer}");

    let headers: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = request(
        &server,
        &format!("GET /healthz HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n"),
    );
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(
        answer.contains("\"code\":\"headers_too_large\""),
        "{answer}"
    );

    let body = r#"{"currency":"EUR"}"#;
    let answer = request(
        &server,
        &format!(
            "POST /v1/transfers HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\
             Idempotency-Key: a\r\nIdempotency-Key: b\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            server.admin_key,
            body.len()
        ),
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("\"code\":\"idempotency_key_invalid\""),
        "{answer}"
    );
}

/// Raises this test process's open-file limit to its hard maximum.
fn tally_cli_test_raise_open_files() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    let _ = setrlimit(Resource::Nofile, limit);
}

/// The status code of an answer.
fn status(answer: &str) -> &str {
    answer.split_whitespace().nth(1).unwrap_or("none")
}

/// `GET /v1/accounts` with a made-up key `i`, as forwarded for `client`.
fn guess(server: &Server, i: usize, client: &str) -> String {
    let answer = request(
        server,
        &format!(
            "GET /v1/accounts HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer tally_admin_{i:064x}\r\n\
             X-Forwarded-For: {client}\r\nConnection: close\r\n\r\n"
        ),
    );
    status(&answer).to_string()
}

#[test]
fn a_trusted_proxy_tells_clients_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Keys not yet seen share one budget per client address (the client rate: 2/s, 4 at once).
    for (trusted, other_client_limited) in [(true, false), (false, true)] {
        let mut args = vec!["--rate-limit", "2"];
        if trusted {
            args.extend(["--trusted-proxy", "127.0.0.1"]);
        }
        let server = Server::start(&dir.path().join(format!("data-{trusted}")), &args);
        let statuses: Vec<String> = (0..12).map(|i| guess(&server, i, "10.0.0.1")).collect();
        assert!(
            statuses.iter().any(|s| s == "429"),
            "a guesser was not limited: {statuses:?}"
        );
        let other = guess(&server, 100, "10.0.0.2");
        assert_eq!(
            other == "429",
            other_client_limited,
            "trusted proxy {trusted}: another client's first guess answered {other}"
        );
    }
}
