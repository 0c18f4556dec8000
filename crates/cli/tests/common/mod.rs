//! Running the real `tally` binary in tests: start a node, find its port, talk to it.

#![allow(dead_code)]

pub mod holder;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn tally() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tally"))
}

/// A `tally serve` child process.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub data: PathBuf,
    pub admin_key: String,
    /// What the server printed on stderr, collected by a thread.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `tally serve --data DATA --listen 127.0.0.1:0 EXTRA…` and waits until it prints
    /// its address (bounded wait: a node that never comes up fails the test).
    pub fn start(data: &Path, extra: &[&str]) -> Server {
        Server::start_on(data, "127.0.0.1:0", extra)
    }

    /// [`Server::start`] on a given address (a node restarted where its peers know it).
    pub fn start_on(data: &Path, listen: &str, extra: &[&str]) -> Server {
        let mut child = tally()
            .args(["serve", "--data"])
            .arg(data)
            .args(["--listen", listen])
            .args(extra)
            .env("TALLY_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tally serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split(" listening on ").nth(1) {
                    let url = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let _ = tx.send(url);
                }
                log2.lock().expect("log").push(line);
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "tally serve did not start; log: {:?}",
                    log.lock().expect("log")
                );
            }
        };
        let admin_key = std::fs::read_to_string(data.join("admin.key"))
            .expect("admin.key")
            .trim()
            .to_string();
        Server {
            child,
            url,
            data: data.to_path_buf(),
            admin_key,
            log,
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill_hard(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tally` set up to talk to `server` with `key` (and never to a local data directory).
pub fn tally_for(server: &Server, key: &str) -> Command {
    let mut command = tally();
    command
        .env("TALLY_SERVER", &server.url)
        .env("TALLY_API_KEY", key)
        .env_remove("TALLY_DATA");
    command
}

/// A finished run as (exit status success, stdout, stderr).
pub fn outcome(out: Output) -> (bool, String, String) {
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the CLI against `server`, returning (exit status success, stdout, stderr).
pub fn cli(server: &Server, key: &str, args: &[&str]) -> (bool, String, String) {
    outcome(
        tally_for(server, key)
            .args(args)
            .output()
            .expect("run tally"),
    )
}

/// The stdout of a command that must have succeeded.
pub fn ok(r: (bool, String, String)) -> String {
    assert!(r.0, "command failed:\nstdout: {}\nstderr: {}", r.1, r.2);
    r.1
}

/// The value of the output line that starts with `name`.
pub fn field<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(name).map(str::trim))
        .unwrap_or_else(|| panic!("no `{name}` in:\n{out}"))
}

/// `tally account open --currency EUR EXTRA…` with `key`; the new account's id.
pub fn open_account(server: &Server, key: &str, extra: &[&str]) -> String {
    let mut args = vec!["account", "open", "--currency", "EUR"];
    args.extend_from_slice(extra);
    field(&ok(cli(server, key, &args)), "account").to_string()
}

/// `tally transfer --from FROM --to TO --amount AMOUNT EXTRA…` with `key`, which must
/// succeed; its stdout.
pub fn transfer(
    server: &Server,
    key: &str,
    from: &str,
    to: &str,
    amount: &str,
    extra: &[&str],
) -> String {
    let mut args = vec!["transfer", "--from", from, "--to", to, "--amount", amount];
    args.extend_from_slice(extra);
    ok(cli(server, key, &args))
}

/// `tally ledger audit` on the node's data directory passes.
pub fn assert_audit_passes(server: &Server) {
    let audit = tally()
        .args(["ledger", "audit", "--data"])
        .arg(&server.data)
        .output()
        .expect("audit");
    let text = String::from_utf8_lossy(&audit.stdout);
    assert!(
        audit.status.success() && text.contains("audit passed"),
        "{text}"
    );
}

/// A bounded wait for a condition that another process makes true.
pub fn wait_until(what: &str, f: impl FnMut() -> bool) {
    wait_within(30, what, f);
}

/// [`wait_until`] with a bound of `seconds`.
pub fn wait_within(seconds: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A merchant `name` at `server` with its own key and account, registered for trading
/// sessions in agent mode (by itself): `(its key, its account)`.
pub fn agent_mode_merchant(server: &Server, name: &str) -> (String, String) {
    let key = field(
        &ok(cli(
            server,
            &server.admin_key,
            &["api-key", "create", "--role", "merchant", "--owner", name],
        )),
        "key",
    )
    .to_string();
    let account = open_account(
        server,
        &server.admin_key,
        &["--kind", "merchant", "--owner", name],
    );
    ok(cli(
        server,
        &key,
        &[
            "session",
            "merchant",
            name,
            "--account",
            &account,
            "--auto-ack",
        ],
    ));
    (key, account)
}

/// A merchant agent's process, killed when dropped: a test that fails before it stops the
/// agent leaves none running.
pub struct Agent(std::process::Child);

impl std::ops::Deref for Agent {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Agent {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The merchant agent, a process of its own, started like the merchant would.
pub fn start_agent(data: &std::path::Path, node: &Server, key: &str) -> (Agent, String) {
    start_agent_with(data, node, key, &[])
}

/// [`start_agent`] with `extra` arguments (a catalogue).
pub fn start_agent_with(
    data: &std::path::Path,
    node: &Server,
    key: &str,
    extra: &[&str],
) -> (Agent, String) {
    let mut child = tally()
        .args(["session", "agent", "--data"])
        .arg(data)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--server",
            &node.url,
            "--api-key",
            key,
            "--merchant",
            "kiosk",
        ])
        .args(extra)
        .env("TALLY_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the agent");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("the agent says where it listens")
            .expect("line");
        if let Some(rest) = line.split(" listening on ").nth(1) {
            break rest.split_whitespace().next().expect("url").to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (Agent(child), url)
}

/// A webhook receiver on loopback (a billing system, a pad provider): its URL, and each
/// webhook it took (its `Tally-Signature` header and body).
#[allow(clippy::type_complexity)]
pub fn webhook_receiver() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
) {
    use std::io::{BufRead, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/billing", listener.local_addr().expect("addr"));
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let mut reader = std::io::BufReader::new(conn);
            let (mut len, mut signature) = (0usize, String::new());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("tally-signature:") {
                    signature = line["tally-signature:".len()..].trim().to_string();
                }
            }
            let mut body = vec![0u8; len];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            keep.lock()
                .expect("lock")
                .push((signature, String::from_utf8_lossy(&body).into_owned()));
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, got)
}

/// The code in a message: the first run of 6–10 digits after the word "code".
pub fn code_in(body: &str) -> String {
    let at = body
        .find("code")
        .unwrap_or_else(|| panic!("no code in {body:?}"));
    let rest = &body[at..];
    let start = rest
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or_else(|| panic!("no digits in {body:?}"));
    let digits: String = rest[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert!((6..=10).contains(&digits.len()), "{body:?}");
    digits
}

/// Reads the code of `session` from the dev inbox `address` (through `tally inbox --json`).
pub fn code_for(server: &Server, key: &str, address: &str, session: &str) -> String {
    let out = ok(cli(server, key, &["inbox", address, "--json"]));
    let messages: serde_json::Value = serde_json::from_str(&out).expect("inbox JSON");
    let message = messages
        .as_array()
        .expect("a list")
        .iter()
        .find(|m| m.pointer("/data/session").and_then(|s| s.as_str()) == Some(session))
        .unwrap_or_else(|| panic!("no message for session {session} in {out}"));
    code_in(message["body"].as_str().expect("body"))
}
