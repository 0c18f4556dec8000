//! E-mail over SMTP: lettre's SMTP client on connections this channel opens and pools itself.
//!
//! One [`SmtpChannel`] keeps up to [`SmtpConfig::connections_max`] SMTP sessions: a message
//! takes an idle one (or opens one: TCP with `TCP_NODELAY`, the greeting, EHLO, STARTTLS when
//! required, AUTH) and gives it back after the server accepted the message, so concurrent
//! messages go out in parallel and consecutive ones reuse a session. Messages are plain text
//! (`text/plain; charset=utf-8`); lettre picks the transfer encoding and RFC 2047-encodes
//! non-ASCII subjects.
//!
//! Why not lettre's own pooled transport: it connects without `TCP_NODELAY`, and its client
//! writes a message's body and the terminating `.` separately, so Nagle's algorithm held every
//! message until the server's delayed ACK (about 40 ms per e-mail, measured on loopback).
//! Implicit TLS (`SmtpTls::Tls`, port 465) still goes through lettre's transport, which owns
//! the TLS handshake there.
//!
//! The `Message-ID` is derived from [`Message::id`] ([`email_message_id`]): every retry of one
//! message carries the same Message-ID, which is what mail servers and clients deduplicate on.
//! SMTP has no idempotent send, so after a lost `250 OK` the message will go out twice; the
//! stable Message-ID is the best the protocol allows.
//!
//! Error classification: SMTP 5xx replies and client-side errors (e.g. an address lettre
//! refuses) are permanent; SMTP 4xx replies, connection and I/O errors, timeouts and TLS
//! failures are transient (a TLS failure is an operator problem and the message is fine, so it
//! waits until the configuration is fixed instead of being dropped).
//!
//! Rejected: `Tls::Opportunistic` (a man in the middle can strip STARTTLS and read the
//! password); the choice is explicit `None`, `StartTls` (required) or implicit `Tls`. And a
//! sendmail-binary transport: another moving part outside the process, untestable here.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tally_kernel::Secret;

use crate::error::error_chain;
use crate::webhook::wrong_kind;
use crate::{Channel, ChannelError, ChannelKind, Delivery, DeliveryFuture, Message};

/// How the SMTP connection is secured. Variants are alphabetical.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain text. Only for a relay on the same host or in tests.
    None,
    /// Plain connect, then a required `STARTTLS` (port 587). The default.
    #[default]
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
}

impl SmtpTls {
    /// The usual port for this mode: 25, 587 or 465.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::None => 25,
            SmtpTls::StartTls => 587,
            SmtpTls::Tls => 465,
        }
    }
}

/// Configuration of [`SmtpChannel`].
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// The relay's host name (also the TLS server name).
    pub host: String,
    /// Defaults to [`SmtpTls::default_port`].
    #[serde(default)]
    pub port: Option<u16>,
    /// Default [`SmtpTls::StartTls`].
    #[serde(default)]
    pub tls: SmtpTls,
    /// Set together with `password` to authenticate (PLAIN or LOGIN, as the server offers).
    #[serde(default)]
    pub username: Option<String>,
    /// Set together with `username`.
    #[serde(default, deserialize_with = "crate::config::optional_secret_string")]
    pub password: Option<Secret<String>>,
    /// The `From` mailbox, e.g. `Tally <noreply@shop.example>`.
    pub from: String,
    /// Per SMTP command and connect. Default 10 s.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Larger formatted messages fail permanently before any connection. Default 1 MiB.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Most SMTP sessions open at once (messages beyond wait for one). Default 16.
    #[serde(default = "default_connections_max")]
    pub connections_max: usize,
}

fn default_connections_max() -> usize {
    16
}

fn default_timeout_ms() -> u64 {
    10_000
}

fn default_max_message_bytes() -> usize {
    1024 * 1024
}

impl SmtpConfig {
    /// A configuration with defaults for everything but the relay and the sender.
    pub fn new(host: impl Into<String>, from: impl Into<String>) -> Self {
        SmtpConfig {
            host: host.into(),
            port: None,
            tls: SmtpTls::default(),
            username: None,
            password: None,
            from: from.into(),
            timeout_ms: default_timeout_ms(),
            max_message_bytes: default_max_message_bytes(),
            connections_max: default_connections_max(),
        }
    }
}

/// Delivers [`ChannelKind::Email`] messages through one SMTP relay.
pub struct SmtpChannel {
    route: Route,
    from: Mailbox,
    max_message_bytes: usize,
}

/// How messages reach the relay.
enum Route {
    /// Sessions this channel opens (plain or STARTTLS) and pools.
    Pooled(Box<Pool>),
    /// Implicit TLS through lettre's transport.
    Transport(AsyncSmtpTransport<Tokio1Executor>),
}

/// Idle SMTP sessions and the bound on open ones.
struct Pool {
    host: String,
    port: u16,
    starttls: Option<TlsParameters>,
    credentials: Option<Credentials>,
    timeout: Duration,
    hello: ClientId,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    open: tokio::sync::Semaphore,
}

/// An idle session older than this is checked with `NOOP` before it is used again.
const IDLE_CHECK_AFTER: Duration = Duration::from_secs(30);

impl Pool {
    /// An idle session (checked if it waited long), or a new one.
    async fn session(&self) -> Result<AsyncSmtpConnection, ChannelError> {
        loop {
            let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let Some((mut conn, since)) = idle else {
                return self.connect().await;
            };
            if conn.has_broken() {
                continue;
            }
            if since.elapsed() < IDLE_CHECK_AFTER || conn.test_connected().await {
                return Ok(conn);
            }
        }
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, ChannelError> {
        let io =
            |e: std::io::Error| ChannelError::Transient(format!("SMTP connection failed: {e}"));
        let smtp = |e: lettre::transport::smtp::Error| classify_smtp(&e);
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(io)?;
        // The client writes a message's body and its final "." separately: without this,
        // Nagle's algorithm holds the "." until the server's delayed ACK.
        tcp.set_nodelay(true).map_err(io)?;
        let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello)
            .await
            .map_err(smtp)?;
        if let Some(tls) = &self.starttls {
            conn.starttls(tls.clone(), &self.hello)
                .await
                .map_err(smtp)?;
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(smtp)?;
        }
        Ok(conn)
    }

    /// Sends one message on a pooled session, bounded by the timeout as a whole.
    async fn send(
        &self,
        envelope: &lettre::address::Envelope,
        email: &[u8],
    ) -> Result<lettre::transport::smtp::response::Response, ChannelError> {
        let _permit = self
            .open
            .acquire()
            .await
            .map_err(|_| ChannelError::permanent("the SMTP channel is closed"))?;
        let attempt = async {
            let mut conn = self.session().await?;
            match conn.send(envelope, email).await {
                Ok(response) => {
                    self.idle
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((conn, Instant::now()));
                    Ok(response)
                }
                Err(e) => {
                    conn.abort().await;
                    Err(classify_smtp(&e))
                }
            }
        };
        // Connect, greeting, EHLO, TLS, AUTH and the transaction: each bounded before, so the
        // whole is bounded by a few of them.
        match tokio::time::timeout(self.timeout * 4, attempt).await {
            Ok(r) => r,
            Err(_) => Err(ChannelError::Transient(format!(
                "SMTP timed out after {} ms",
                (self.timeout * 4).as_millis()
            ))),
        }
    }
}

impl std::fmt::Debug for SmtpChannel {
    // By hand: the transport holds the credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpChannel")
            .field("from", &self.from.to_string())
            .field("max_message_bytes", &self.max_message_bytes)
            .finish_non_exhaustive()
    }
}

impl SmtpChannel {
    /// Builds the transport (no connection is made yet). Must be called inside a Tokio runtime:
    /// the connection pool starts its cleanup task here. Fails (permanently) outside a runtime,
    /// on a bad `from`, half-given credentials or unusable TLS parameters.
    pub fn new(config: SmtpConfig) -> Result<Self, ChannelError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ChannelError::permanent(
                "SmtpChannel::new must be called inside a Tokio runtime",
            ));
        }
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| ChannelError::permanent(format!("invalid SMTP from address: {e}")))?;
        let credentials = match (&config.username, &config.password) {
            (Some(user), Some(password)) => {
                Some(Credentials::new(user.clone(), password.expose().clone()))
            }
            (None, None) => None,
            _ => {
                return Err(ChannelError::permanent(
                    "SMTP username and password must be given together",
                ));
            }
        };
        let port = config.port.unwrap_or(config.tls.default_port());
        let timeout = Duration::from_millis(config.timeout_ms);
        let route = match config.tls {
            SmtpTls::Tls => {
                let mut builder =
                    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
                        .port(port)
                        .tls(Tls::Wrapper(tls_parameters(&config.host)?))
                        .timeout(Some(timeout));
                if let Some(c) = credentials {
                    builder = builder.credentials(c);
                }
                Route::Transport(builder.build())
            }
            SmtpTls::None | SmtpTls::StartTls => Route::Pooled(Box::new(Pool {
                starttls: match config.tls {
                    SmtpTls::StartTls => Some(tls_parameters(&config.host)?),
                    SmtpTls::None | SmtpTls::Tls => None,
                },
                host: config.host.clone(),
                port,
                credentials,
                timeout,
                hello: ClientId::default(),
                idle: Mutex::new(Vec::new()),
                open: tokio::sync::Semaphore::new(config.connections_max.max(1)),
            })),
        };
        Ok(SmtpChannel {
            route,
            from,
            max_message_bytes: config.max_message_bytes,
        })
    }

    async fn send(&self, msg: &Message) -> Result<Delivery, ChannelError> {
        if msg.kind != ChannelKind::Email {
            return Err(wrong_kind(ChannelKind::Email, msg.kind));
        }
        msg.validate()?;
        let to: lettre::Address = msg
            .address
            .parse()
            .map_err(|e| ChannelError::permanent(format!("invalid e-mail address: {e}")))?;
        // Header injection: a subject is one line.
        let subject: String = msg
            .subject
            .chars()
            .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
            .collect();
        let email = lettre::Message::builder()
            .message_id(Some(email_message_id(&msg.id, self.from.email.domain())))
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(msg.body.clone())
            .map_err(|e| ChannelError::permanent(format!("cannot build e-mail: {e}")))?;
        let size = email.formatted().len();
        if size > self.max_message_bytes {
            return Err(ChannelError::permanent(format!(
                "message too large: {size} bytes, limit {}",
                self.max_message_bytes
            )));
        }
        let sent = match &self.route {
            Route::Pooled(pool) => pool.send(email.envelope(), &email.formatted()).await,
            Route::Transport(t) => t.send(email).await.map_err(|e| classify_smtp(&e)),
        };
        match sent {
            Ok(response) => {
                let reply = response.message().collect::<Vec<_>>().join(" ");
                tracing::debug!(message_id = %msg.id, code = %response.code(), "SMTP delivery accepted");
                Ok(Delivery {
                    provider_id: (!reply.is_empty()).then(|| reply.chars().take(256).collect()),
                })
            }
            Err(classified) => {
                tracing::info!(message_id = %msg.id, error = %classified, "SMTP delivery failed");
                Err(classified)
            }
        }
    }
}

impl Channel for SmtpChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Email
    }

    fn deliver<'a>(&'a self, msg: &'a Message) -> DeliveryFuture<'a> {
        Box::pin(self.send(msg))
    }
}

fn tls_parameters(host: &str) -> Result<TlsParameters, ChannelError> {
    TlsParameters::new(host.to_owned()).map_err(|e| {
        ChannelError::permanent(format!("unusable SMTP TLS parameters: {}", error_chain(&e)))
    })
}

fn classify_smtp(err: &lettre::transport::smtp::Error) -> ChannelError {
    let text = error_chain(err);
    if err.is_permanent() {
        ChannelError::Permanent(format!("SMTP server refused: {text}"))
    } else if err.is_client() {
        ChannelError::Permanent(format!("SMTP client error: {text}"))
    } else if err.is_transient() {
        ChannelError::Transient(format!("SMTP server deferred: {text}"))
    } else if err.is_timeout() {
        ChannelError::Transient(format!("SMTP timed out: {text}"))
    } else {
        ChannelError::Transient(format!("SMTP connection failed: {text}"))
    }
}

/// The `Message-ID` header value for a message id: `<tally.{id}@{domain}>`.
///
/// Ids made only of ASCII letters, digits, `-` and `_` (UUIDs, ULIDs) are used as they are, so
/// a human can match a bounce to the outbox row; anything else is replaced by the first 32 hex
/// digits of its SHA-256, which keeps the header valid and still deterministic.
pub fn email_message_id(id: &str, domain: &str) -> String {
    let plain = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        format!("<tally.{id}@{domain}>")
    } else {
        let digest = Sha256::digest(id.as_bytes());
        let hex = hex::encode(digest);
        format!("<tally.{}@{domain}>", &hex[..32])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_stable_and_header_safe() {
        assert_eq!(
            email_message_id("0190f3a2-7c1e-7000-8000-000000000001", "shop.example"),
            "<tally.0190f3a2-7c1e-7000-8000-000000000001@shop.example>"
        );
        let odd = email_message_id("a@b>c", "shop.example");
        assert_eq!(odd, email_message_id("a@b>c", "shop.example"));
        assert_eq!(odd.len(), "<tally.@shop.example>".len() + 32);
        assert!(!odd.contains("a@b"));
        assert_ne!(odd, email_message_id("a@b>d", "shop.example"));
    }

    #[tokio::test]
    async fn config_checks() {
        let mut config = SmtpConfig::new("smtp.example", "Tally <noreply@shop.example>");
        assert!(SmtpChannel::new(config.clone()).is_ok());
        config.username = Some("user".into());
        let err = SmtpChannel::new(config.clone()).expect_err("half credentials");
        assert!(err.is_permanent());
        config.password = Some(Secret::new("pw".into()));
        let channel = SmtpChannel::new(config.clone()).expect("full credentials");
        assert!(!format!("{channel:?}").contains("pw"));
        config.from = "not an address".into();
        assert!(SmtpChannel::new(config).is_err());
    }

    #[test]
    fn outside_a_runtime_is_an_error_not_a_panic() {
        let config = SmtpConfig::new("smtp.example", "noreply@shop.example");
        let err = SmtpChannel::new(config).expect_err("no runtime");
        assert!(err.reason().contains("Tokio runtime"));
    }

    #[test]
    fn default_ports() {
        assert_eq!(SmtpTls::None.default_port(), 25);
        assert_eq!(SmtpTls::StartTls.default_port(), 587);
        assert_eq!(SmtpTls::Tls.default_port(), 465);
    }
}
