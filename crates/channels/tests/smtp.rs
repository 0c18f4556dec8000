//! `SmtpChannel` against a real SMTP server (mailin-embedded) listening on loopback.

use std::io;
use std::net::{IpAddr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;

use mailin_embedded::{Handler, Response, Server, response};
use tally_channels::{
    Channel, ChannelKind, Message, SmtpChannel, SmtpConfig, SmtpTls, email_message_id,
};

/// One mail transaction as the server saw it.
#[derive(Clone, Debug, Default)]
struct Mail {
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
}

impl Mail {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// The value of the first header named `name` (unfolded).
    fn header(&self, name: &str) -> Option<String> {
        let text = self.text();
        let (head, _) = text.split_once("\r\n\r\n")?;
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }

    fn body(&self) -> String {
        let text = self.text();
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default()
    }
}

/// Collects every message into a channel; `reject…` recipients get 550, `defer…` get 451.
#[derive(Clone)]
struct Sink {
    tx: mpsc::Sender<Mail>,
    current: Mail,
}

impl Handler for Sink {
    fn rcpt(&mut self, to: &str) -> Response {
        if to.starts_with("reject") {
            response::NO_MAILBOX
        } else if to.starts_with("defer") {
            response::INTERNAL_ERROR
        } else {
            response::OK
        }
    }

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.current = Mail {
            from: from.to_owned(),
            to: to.to_vec(),
            data: Vec::new(),
        };
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        self.current.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        // The receiver lives as long as the test; a failed send only means it has finished.
        let _ = self.tx.send(std::mem::take(&mut self.current));
        response::OK
    }

    fn helo(&mut self, _ip: IpAddr, _domain: &str) -> Response {
        response::OK
    }
}

/// Starts a sink on `127.0.0.1:<free port>`; the server thread runs until the process exits.
fn start_sink() -> (u16, mpsc::Receiver<Mail>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().expect("local addr").port();
    let (tx, rx) = mpsc::channel();
    let mut server = Server::new(Sink {
        tx,
        current: Mail::default(),
    });
    server.with_name("sink.test").with_tcp_listener(listener);
    std::thread::spawn(move || {
        // `serve` only returns on a listener error; the test then fails on its timeout.
        if let Err(e) = server.serve() {
            eprintln!("SMTP sink stopped: {e}");
        }
    });
    (port, rx)
}

fn channel(port: u16) -> SmtpChannel {
    let mut config = SmtpConfig::new("127.0.0.1", "Tally <noreply@shop.example>");
    config.port = Some(port);
    config.tls = SmtpTls::None;
    config.timeout_ms = 5_000;
    SmtpChannel::new(config).expect("channel")
}

fn email(id: &str, to: &str) -> Message {
    Message {
        id: id.to_owned(),
        kind: ChannelKind::Email,
        address: to.to_owned(),
        subject: "Your receipt".to_owned(),
        body: "You paid 12.50 EUR to Corner Shop.\nReceipt: R-42\n".to_owned(),
        data: serde_json::json!({"amount_minor": 1250}),
    }
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn delivers_to_a_real_smtp_server() {
    let (port, inbox) = start_sink();
    let smtp = channel(port);
    assert_eq!(smtp.kind(), ChannelKind::Email);
    let id = "0190f3a2-7c1e-7000-8000-000000000001";

    let delivery = smtp
        .deliver(&email(id, "alice@example.com"))
        .await
        .expect("delivered");
    assert_eq!(delivery.provider_id.as_deref(), Some("OK"));

    let mail = inbox.recv_timeout(WAIT).expect("mail arrived");
    assert_eq!(mail.to, vec!["alice@example.com".to_owned()]);
    assert!(mail.from.contains("noreply@shop.example"), "{}", mail.from);
    assert_eq!(mail.header("To").as_deref(), Some("alice@example.com"));
    assert_eq!(mail.header("Subject").as_deref(), Some("Your receipt"));
    assert_eq!(
        mail.header("Message-ID").as_deref(),
        Some("<tally.0190f3a2-7c1e-7000-8000-000000000001@shop.example>")
    );
    assert_eq!(
        mail.header("Message-ID"),
        Some(email_message_id(id, "shop.example"))
    );
    let content_type = mail.header("Content-Type").unwrap_or_default();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let body = mail.body();
    assert!(
        body.contains("You paid 12.50 EUR to Corner Shop.\r\nReceipt: R-42"),
        "{body}"
    );
}

#[tokio::test]
async fn redelivery_carries_the_same_message_id() {
    let (port, inbox) = start_sink();
    let smtp = channel(port);
    let msg = email("retry-me-7", "bob@example.com");
    smtp.deliver(&msg).await.expect("first");
    smtp.deliver(&msg).await.expect("second");
    let first = inbox.recv_timeout(WAIT).expect("first mail");
    let second = inbox.recv_timeout(WAIT).expect("second mail");
    let first_id = first.header("Message-ID").expect("first id");
    assert_eq!(first_id, "<tally.retry-me-7@shop.example>");
    assert_eq!(second.header("Message-ID"), Some(first_id));

    let other = email("another-8", "bob@example.com");
    smtp.deliver(&other).await.expect("third");
    let third = inbox.recv_timeout(WAIT).expect("third mail");
    assert_eq!(
        third.header("Message-ID").as_deref(),
        Some("<tally.another-8@shop.example>")
    );
}

#[tokio::test]
async fn closed_port_is_transient() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
        // dropped here: nothing listens on `port` any more
    };
    let err = channel(port)
        .deliver(&email("m-closed", "alice@example.com"))
        .await
        .expect_err("nothing listens");
    assert!(err.is_transient(), "{err}");
}

#[tokio::test]
async fn smtp_5xx_is_permanent_and_4xx_transient() {
    let (port, inbox) = start_sink();
    let smtp = channel(port);
    let err = smtp
        .deliver(&email("m-550", "reject@example.com"))
        .await
        .expect_err("550");
    assert!(err.is_permanent(), "{err}");
    assert!(err.reason().contains("550"), "{err}");

    let err = smtp
        .deliver(&email("m-451", "defer@example.com"))
        .await
        .expect_err("451");
    assert!(err.is_transient(), "{err}");

    // The channel is still usable afterwards, and only the good message arrived.
    smtp.deliver(&email("m-ok", "carol@example.com"))
        .await
        .expect("ok");
    let mail = inbox.recv_timeout(WAIT).expect("mail");
    assert_eq!(mail.to, vec!["carol@example.com".to_owned()]);
    assert!(inbox.try_recv().is_err());
}

#[tokio::test]
async fn refuses_bad_input_before_connecting() {
    let (port, inbox) = start_sink();
    let smtp = channel(port);

    let mut wrong_kind = email("m1", "alice@example.com");
    wrong_kind.kind = ChannelKind::Sms;
    assert!(
        smtp.deliver(&wrong_kind)
            .await
            .expect_err("kind")
            .is_permanent()
    );

    let bad_address = email("m2", "Alice <alice@example.com>");
    assert!(
        smtp.deliver(&bad_address)
            .await
            .expect_err("address")
            .is_permanent()
    );

    let mut injected = email("m3", "alice@example.com");
    injected.subject = "Hi\r\nBcc: mallory@example.com".to_owned();
    smtp.deliver(&injected)
        .await
        .expect("subject newlines are flattened");
    let mail = inbox.recv_timeout(WAIT).expect("mail");
    assert_eq!(mail.to, vec!["alice@example.com".to_owned()]);
    assert_eq!(mail.header("Bcc"), None);
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("Hi  Bcc: mallory@example.com")
    );

    let mut config = SmtpConfig::new("127.0.0.1", "noreply@shop.example");
    config.port = Some(port);
    config.tls = SmtpTls::None;
    config.max_message_bytes = 2_000;
    let small = SmtpChannel::new(config).expect("channel");
    let mut big = email("m4", "alice@example.com");
    big.body = "x".repeat(5_000);
    let err = small.deliver(&big).await.expect_err("too large");
    assert!(
        err.is_permanent() && err.reason().contains("too large"),
        "{err}"
    );
    assert!(inbox.try_recv().is_err());
}
