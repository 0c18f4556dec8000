//! `tally bench auth`'s rows through the path users take: the HTTP API and real SMTP.
//!
//! What is measured, in one run:
//! * **The listener's own rate** (the reference): a plain SMTP sender (one TCP connection per
//!   slot, `TCP_NODELAY`, EHLO once, then MAIL/RCPT/DATA per message) hands messages to an
//!   SMTP server on loopback (mailin-embedded, 64 threads) for the set time: messages
//!   accepted per second. No client can flow codes through that listener faster.
//! * **E-mail flows through Tally**: a node on SQLite (as `tally serve` runs it: the HTTP
//!   router on a loopback port, the outbox worker, an SMTP channel to the same listener).
//!   `clients` tasks each loop: `POST /v1/oob/sessions` (a login for one of its users) → wait
//!   for the code e-mail at the listener → `POST /v1/oob/sessions/{id}/verify`. A flow counts
//!   when the verification answered 200 with an access token.
//! * **Commit-to-handoff latency**, under light load (one client, one flow after another):
//!   from the moment the open's HTTP answer arrived (it is sent after the session and its
//!   message committed) to the moment the listener accepted the e-mail. p50 and p90.

use anyhow::{Context, bail};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// The figures of one run.
pub struct SmtpFigures {
    /// Messages per second the listener accepted from the plain sender.
    pub listener_rate: f64,
    /// Completed e-mail authentications per second through Tally.
    pub flow_rate: f64,
    /// Commit-to-handoff latency under light load, p50 and p90, milliseconds.
    pub handoff_ms: (f64, f64),
}

/// Mail arriving at the listener, routed to whoever waits for its recipient.
type Inboxes = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<(Instant, String)>>>>;

fn recipient(raw: &str) -> Option<String> {
    raw.lines().find_map(|l| {
        let value = l.strip_prefix("To:")?.trim();
        let value = value
            .rsplit_once('<')
            .map_or(value, |(_, v)| v.trim_end_matches('>'));
        Some(value.trim().to_string())
    })
}

/// Runs the three measurements.
pub async fn measure(
    clients: usize,
    seconds: u64,
    connections: usize,
) -> anyhow::Result<SmtpFigures> {
    let (port, arrivals) = tally_testkit::smtp_sink_timed();
    let inboxes: Inboxes = Arc::new(Mutex::new(HashMap::new()));
    let accepted = Arc::new(AtomicU64::new(0));
    {
        let (inboxes, accepted) = (inboxes.clone(), accepted.clone());
        std::thread::spawn(move || {
            for (at, raw) in arrivals {
                accepted.fetch_add(1, Ordering::Relaxed);
                let Some(to) = recipient(&raw) else { continue };
                let inbox = inboxes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&to)
                    .cloned();
                if let Some(tx) = inbox {
                    let _ = tx.send((at, raw));
                }
            }
        });
    }

    // The reference: the listener fed by a plain SMTP sender.
    let before = accepted.load(Ordering::Relaxed);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut senders = Vec::new();
    for _ in 0..connections.max(1) {
        senders.push(tokio::spawn(plain_sender(port, deadline)));
    }
    for s in senders {
        s.await??;
    }
    let listener_rate =
        (accepted.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64();
    println!(
        "SMTP listener: {} messages/s from a plain sender ({} connections)",
        crate::bench_kit::fmt_rate(listener_rate),
        connections
    );

    let node = BenchNode::start(port, connections, inboxes.clone()).await?;
    let users = node.users(clients).await?;
    // Load: e-mail flows through HTTP and SMTP.
    let done = Arc::new(AtomicU64::new(0));
    let users = Arc::new(users);
    let node = Arc::new(node);
    let elapsed = crate::bench_kit::load(clients, seconds, |client, stop| {
        let (node, users, done) = (node.clone(), users.clone(), done.clone());
        async move {
            let (user, inbox) = &users[client];
            let mut inbox = inbox.lock().await;
            while !stop.load(Ordering::Relaxed) {
                node.flow(user, &mut inbox).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }
    })
    .await?;
    let flow_rate = done.load(Ordering::Relaxed) as f64 / elapsed;
    println!(
        "Tally e-mail flows (HTTP + SMTP, SQLite): {} completed in {elapsed:.1} s = {} flows/s",
        done.load(Ordering::Relaxed),
        crate::bench_kit::fmt_rate(flow_rate)
    );

    // Light load: one flow after another, the latency from commit to handoff.
    let (user, inbox) = &users[0];
    let mut inbox = inbox.lock().await;
    let mut latencies = Vec::new();
    for _ in 0..100 {
        latencies.push(node.flow(user, &mut inbox).await?);
    }
    latencies.sort_by(f64::total_cmp);
    let handoff_ms = (
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 9 / 10],
    );
    println!(
        "commit to SMTP handoff, light load: p50 {:.1} ms, p90 {:.1} ms",
        handoff_ms.0, handoff_ms.1
    );
    node.stop().await;
    Ok(SmtpFigures {
        listener_rate,
        flow_rate,
        handoff_ms,
    })
}

/// One connection sending messages until `deadline`.
async fn plain_sender(port: u16, deadline: Instant) -> anyhow::Result<()> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let (read, mut write) = tcp.into_split();
    let mut read = BufReader::new(read);
    let mut line = String::new();
    async fn reply(
        read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
        line: &mut String,
        want: &str,
    ) -> anyhow::Result<()> {
        loop {
            line.clear();
            if read.read_line(line).await? == 0 {
                bail!("the SMTP listener closed the connection");
            }
            // Multi-line replies continue with "250-".
            if line.len() >= 4 && &line[3..4] == "-" {
                continue;
            }
            if !line.starts_with(want) {
                bail!("SMTP listener answered {line:?}, expected {want}");
            }
            return Ok(());
        }
    }
    reply(&mut read, &mut line, "220").await?;
    write.write_all(b"EHLO bench.test\r\n").await?;
    reply(&mut read, &mut line, "250").await?;
    let body = "Subject: Your code\r\nTo: <reference@bench.test>\r\n\r\nYour code: 12345678\r\n";
    while Instant::now() < deadline {
        write.write_all(b"MAIL FROM:<tally@bench.test>\r\n").await?;
        reply(&mut read, &mut line, "250").await?;
        write
            .write_all(b"RCPT TO:<reference@bench.test>\r\n")
            .await?;
        reply(&mut read, &mut line, "250").await?;
        write.write_all(b"DATA\r\n").await?;
        reply(&mut read, &mut line, "354").await?;
        write.write_all(format!("{body}.\r\n").as_bytes()).await?;
        reply(&mut read, &mut line, "250").await?;
    }
    write.write_all(b"QUIT\r\n").await?;
    Ok(())
}

/// The code in a raw e-mail (headers, then the plain-text body).
fn code_of_mail(raw: &str) -> anyhow::Result<&str> {
    let body = raw.split_once("\r\n\r\n").map_or(raw, |(_, b)| b);
    crate::bench_kit::code_in(body).with_context(|| format!("no code in the e-mail: {raw:?}"))
}

/// A node serving HTTP on loopback with an SMTP channel to the listener.
struct BenchNode {
    node: tally_service::Node,
    admin: String,
    api: tally_client::Client,
    inboxes: Inboxes,
    workers: Mutex<Option<tally_service::workers::Workers>>,
    server: axum_server::Handle<SocketAddr>,
    _dir: tempfile::TempDir,
}

type Inbox = tokio::sync::Mutex<mpsc::UnboundedReceiver<(Instant, String)>>;

impl BenchNode {
    async fn start(port: u16, connections: usize, inboxes: Inboxes) -> anyhow::Result<BenchNode> {
        use tally_service::oob::OobSettings;
        use tally_service::{Node, NodeConfig};
        let dir = tempfile::tempdir()?;
        let config = NodeConfig {
            oob: OobSettings {
                // A real node caps the codes one address receives; the benchmark sends
                // thousands to each address on purpose.
                address_quota: i64::MAX,
                // The load's users sign in far more often than a person: no daily cap.
                user_daily_quota: i64::MAX,
                ..OobSettings::default()
            },
            ..NodeConfig::new(dir.path().join("node"))
        };
        let (node, admin) = Node::open(&config).await?;
        let admin = admin
            .context("a fresh node has an admin key")?
            .expose()
            .clone();
        let smtp = tally_channels::SmtpConfig {
            port: Some(port),
            tls: tally_channels::SmtpTls::None,
            connections_max: connections,
            ..tally_channels::SmtpConfig::new("127.0.0.1", "Tally <tally@bench.test>")
        };
        let channels = tally_channels::ChannelSet::new().with(Arc::new(
            tally_channels::SmtpChannel::new(smtp).map_err(|e| anyhow::anyhow!("{e}"))?,
        ));
        // As `tally serve` starts them.
        let workers =
            tally_service::workers::start(node.clone(), channels, Duration::from_millis(500));
        let options = tally_http::HttpOptions {
            // Every client uses the admin key: the per-key rate limit would be the bottleneck.
            rate_limit_per_second: 1_000_000,
            rate_limit_burst: 1_000_000,
            ..tally_http::HttpOptions::default()
        };
        let app = tally_http::router(node.clone(), options)
            .into_make_service_with_connect_info::<SocketAddr>();
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let base = format!("http://{}", listener.local_addr()?);
        let server = axum_server::Handle::new();
        let serving = axum_server::from_tcp(listener)?.handle(server.clone());
        tokio::spawn(async move { serving.serve(app).await });
        Ok(BenchNode {
            api: tally_client::Client::builder(&base)
                .api_key(admin.clone())
                .build()?,
            node,
            admin,
            inboxes,
            workers: Mutex::new(Some(workers)),
            server,
            _dir: dir,
        })
    }

    /// `n` users, each with a verified e-mail address and its inbox at the listener.
    async fn users(&self, n: usize) -> anyhow::Result<Vec<(String, Inbox)>> {
        let admin = self.node.authenticate(&self.admin).await?;
        let tag = tally_kernel::Id::new().to_string();
        let tag = &tag[tag.len() - 8..];
        let bar = crate::progress_bar(n as u64, "verifying e-mail addresses");
        let mut out = Vec::new();
        for i in 0..n {
            let user = format!("mail-{tag}-{i}");
            let address = format!("{user}@bench.test");
            let (tx, rx) = mpsc::unbounded_channel();
            self.inboxes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(address.clone(), tx);
            let mut rx = rx;
            let view = self
                .node
                .oob()
                .address_add(&admin, &user, "email", &address, None)
                .await?;
            let (_, mail) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .context("no address code e-mail within 30 s")?
                .context("listener gone")?;
            let code = code_of_mail(&mail)?;
            self.node.oob().verify(&view.session, code, None).await?;
            out.push((user, tokio::sync::Mutex::new(rx)));
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(out)
    }

    /// One login over HTTP with its code from the e-mail; the commit-to-handoff latency (ms).
    async fn flow(
        &self,
        user: &str,
        inbox: &mut mpsc::UnboundedReceiver<(Instant, String)>,
    ) -> anyhow::Result<f64> {
        use tally_client::wire::oob::{AppRequest, OpenSession, Opened, VerifyRequest};
        let open = OpenSession {
            user: user.to_string(),
            app: AppRequest::Login,
            channel: None,
            certificate: None,
        };
        let Opened::Secured { session, .. } = self.api.session_open(None, &open).await? else {
            bail!("a login was executed without a session");
        };
        let answered = Instant::now();
        let (arrived, mail) = tokio::time::timeout(Duration::from_secs(30), inbox.recv())
            .await
            .context("no code e-mail within 30 s")?
            .context("listener gone")?;
        let code = code_of_mail(&mail)?;
        let verify = VerifyRequest {
            code: code.to_string(),
            confirm: None,
        };
        let verified = self.api.session_verify(&session.session, &verify).await?;
        if verified.access_token.is_none() {
            bail!(
                "session {} verified without an access token",
                session.session
            );
        }
        Ok(arrived.saturating_duration_since(answered).as_secs_f64() * 1000.0)
    }

    async fn stop(&self) {
        self.server.shutdown();
        let workers = self
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(w) = workers {
            w.stop();
        }
        self.node.store().close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::recipient;

    #[test]
    fn the_recipient_is_read_from_the_to_header() {
        assert_eq!(
            recipient("From: a@b\r\nTo: alice@bench.test\r\nSubject: x\r\n\r\nbody").as_deref(),
            Some("alice@bench.test")
        );
        assert_eq!(
            recipient("To: Alice <alice@bench.test>\r\n").as_deref(),
            Some("alice@bench.test")
        );
        assert_eq!(recipient("Subject: none\r\n"), None);
    }
}
