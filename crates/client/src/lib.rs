//! A typed client of a Tally node's HTTP API.
//!
//! One method per route, taking and returning the types of [`tally_wire`] (re-exported as
//! [`wire`]), which are the same types the node's handlers build and parse: a field renamed on
//! one side does not compile on the other. The CLI is argument parsing, a call here, and
//! printing; the tests that talk to a node over HTTP use the same calls.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tally_client::Error> {
//! let node = tally_client::Client::builder("http://127.0.0.1:8640")
//!     .api_key("tally_…")
//!     .build()?;
//! let account = node.account(uuid::Uuid::nil()).await;
//! match account {
//!     Err(e) if e.code() == Some(tally_client::wire::error::ErrorCode::NotFound) => {}
//!     other => println!("{other:?}"),
//! }
//! # Ok(()) }
//! ```
//!
//! Decisions:
//! * A refusal is [`Error::Refused`] with the node's stable [`ErrorCode`]; callers decide by
//!   the code (or the status), never by the message, which is for people.
//! * Retries: transport failures and 5xx answers are retried (bounded, with backoff) only for a
//!   request that cannot take effect twice: a `GET`, a `PUT` (the same state again), or a write
//!   carrying an `Idempotency-Key` (the node answers a retry with the first result, and
//!   [`Answer::replayed`] says so), or a step the node applies at most once by itself (a
//!   refund, a sale's acknowledgement, a publication). Anything else is tried once and its
//!   error returned; if such a request was accepted but its answer broke off, the error is
//!   [`Error::AnswerLost`], never "cannot reach".
//! * Streams (a product's upload, a package's download) are never retried here: the caller
//!   knows whether and where a stream can resume ([`Client::sale_package`] takes the offset).
//! * The API key is a secret: it is sent as a bearer token and left out of `Debug`, as are the
//!   secrets in answers (keys, tokens, unlock keys).

use bytes::Bytes;
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

pub use reqwest::Body;
pub use tally_wire as wire;
use tally_wire::error::ErrorCode;

mod delivery;
mod federation;
mod ledger;
mod oob;
mod pads;
mod receipts;

pub use delivery::{Download, Package};

/// How often a retry-safe request is tried at most (transport failures and 5xx).
pub const ATTEMPTS_MAX: u32 = 4;

/// Time limit of a JSON call, and of a download that receives nothing.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a call did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The node answered with an error body (or a non-success status).
    #[error("{0}")]
    Refused(Refusal),
    /// The node could not be reached, or the connection broke.
    #[error("cannot reach {base}: {cause}")]
    Transport {
        /// The node's URL.
        base: String,
        /// What failed, with its causes (refused, timed out, certificate not trusted …).
        cause: String,
    },
    /// The node accepted the request (a success status) but its answer broke off: the request
    /// has probably taken effect. Look before repeating it (it was not retried: it carries no
    /// idempotency key).
    #[error(
        "{base} answered {status} but the answer broke off ({cause}): the request has probably taken effect; check before repeating it"
    )]
    AnswerLost {
        /// The node's URL.
        base: String,
        /// The success status it sent.
        status: u16,
        /// What broke.
        cause: String,
    },
    /// The node answered with a success status, but not with what the route promises.
    #[error("the node's answer to {what} does not parse: {cause}")]
    Decode {
        /// The request.
        what: String,
        /// The parser's complaint.
        cause: String,
    },
    /// The client cannot be built as configured (a bad URL or CA certificate).
    #[error("{0}")]
    Setup(String),
    /// Nothing moved yet: the payment is above the payer's or payee's threshold, and a code
    /// went to the payer's second channel. Verify it (`verify` with the session number), then
    /// send the same request again with the same idempotency key.
    #[error(
        "confirmation required: nothing moved yet; a code was sent to {} ({}) for session {}; verify it, then repeat the request with the same idempotency key",
        .0.address, .0.channel, .0.session
    )]
    ConfirmationRequired(Box<wire::oob::SessionView>),
}

impl Error {
    /// The node's stable code of a refusal.
    pub fn code(&self) -> Option<ErrorCode> {
        self.refusal().and_then(|r| r.code)
    }

    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        self.refusal().map(|r| r.status)
    }

    /// The refusal, if the node refused.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Error::Refused(r) => Some(r),
            Error::Transport { .. }
            | Error::AnswerLost { .. }
            | Error::Decode { .. }
            | Error::Setup(_)
            | Error::ConfirmationRequired(_) => None,
        }
    }

    /// Whether trying again later may succeed: the node was not reached or failed (5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport { .. } => true,
            Error::Refused(r) => r.status >= 500,
            Error::AnswerLost { .. }
            | Error::Decode { .. }
            | Error::Setup(_)
            | Error::ConfirmationRequired(_) => false,
        }
    }
}

/// A refusal from the node: its status, stable code and message, shown as
/// `422 wrong_code: wrong code (2 attempts left)`.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// The stable code, when it is one this client knows.
    pub code: Option<ErrorCode>,
    /// The code as sent (`http_error` when the answer had no error body, e.g. from a proxy).
    pub code_text: String,
    /// For people.
    pub message: String,
    /// Structured facts (`{"attempts_left": 2}`, `{"field": "amount"}` …).
    pub details: Option<serde_json::Value>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code_text, self.message)
    }
}

impl Refusal {
    fn parse(status: u16, body: &[u8]) -> Refusal {
        #[derive(serde::Deserialize)]
        struct Body {
            error: Detail,
        }
        #[derive(serde::Deserialize)]
        struct Detail {
            code: String,
            #[serde(default)]
            message: String,
            #[serde(default)]
            details: Option<serde_json::Value>,
        }
        match serde_json::from_slice::<Body>(body) {
            Ok(b) => Refusal {
                status,
                code: ErrorCode::from_wire(&b.error.code),
                code_text: b.error.code,
                message: b.error.message,
                details: b.error.details,
            },
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                Refusal {
                    status,
                    code: None,
                    code_text: "http_error".to_string(),
                    message: text.chars().take(200).collect(),
                    details: None,
                }
            }
        }
    }

    /// A number in `details` (`attempts_left`, `available_minor` …).
    pub fn detail_i64(&self, name: &str) -> Option<i64> {
        self.details.as_ref()?.get(name)?.as_i64()
    }
}

/// An answer to a write that carries an idempotency key.
#[derive(Debug, Clone)]
pub struct Answer<T> {
    /// What the node answered.
    pub value: T,
    /// The key was used before: this is the first request's result, and nothing was done again.
    pub replayed: bool,
}

/// How to build a [`Client`].
pub struct Builder {
    base: String,
    key: Option<String>,
    ca_pem: Vec<Vec<u8>>,
    user_agent: String,
    attempts: u32,
}

impl Builder {
    /// The API key sent as a bearer token.
    pub fn api_key(mut self, key: impl Into<String>) -> Builder {
        self.key = Some(key.into());
        self
    }

    /// The API key, when there is one.
    pub fn api_key_opt(mut self, key: Option<String>) -> Builder {
        self.key = key;
        self
    }

    /// Trust this CA certificate (PEM; the node's `DATA/ca.pem`) for `https://` nodes.
    pub fn ca_pem(mut self, pem: &[u8]) -> Builder {
        self.ca_pem.push(pem.to_vec());
        self
    }

    /// The `User-Agent` (default `tally-client`).
    pub fn user_agent(mut self, agent: &str) -> Builder {
        self.user_agent = agent.to_string();
        self
    }

    /// Tries of a retry-safe request (default [`ATTEMPTS_MAX`]; 1 turns retries off).
    pub fn attempts(mut self, attempts: u32) -> Builder {
        self.attempts = attempts.max(1);
        self
    }

    /// The client.
    pub fn build(self) -> Result<Client, Error> {
        let url = reqwest::Url::parse(&self.base)
            .map_err(|e| Error::Setup(format!("node URL {:?}: {e}", self.base)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::Setup(format!(
                "node URL {:?}: use http:// or https://",
                self.base
            )));
        }
        // No overall time limit: a streamed upload or download takes what it takes. JSON calls
        // set [`CALL_TIMEOUT`] per request.
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .tcp_keepalive(Duration::from_secs(30))
            .tcp_nodelay(true)
            .user_agent(self.user_agent);
        for pem in &self.ca_pem {
            let cert = reqwest::Certificate::from_pem(pem)
                .map_err(|e| Error::Setup(format!("CA certificate: {}", chain(&e))))?;
            http = http.add_root_certificate(cert);
        }
        Ok(Client {
            http: http
                .build()
                .map_err(|e| Error::Setup(format!("HTTP client: {}", chain(&e))))?,
            base: self.base.trim_end_matches('/').to_string(),
            key: self.key,
            attempts: self.attempts,
        })
    }
}

/// A client of one node, acting with one API key (or none). Cheap to clone; clones share
/// connections.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
    attempts: u32,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("api_key", &self.key.as_ref().map(|_| "<secret>"))
            .finish()
    }
}

impl Client {
    /// A builder for the node at `base` (`http://127.0.0.1:8640`).
    pub fn builder(base: &str) -> Builder {
        Builder {
            base: base.to_string(),
            key: None,
            ca_pem: Vec::new(),
            user_agent: "tally-client".to_string(),
            attempts: ATTEMPTS_MAX,
        }
    }

    /// The same node and connections, acting with another API key.
    pub fn with_key(&self, key: impl Into<String>) -> Client {
        Client {
            key: Some(key.into()),
            ..self.clone()
        }
    }

    /// The node's URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path` as JSON.
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: String) -> Result<T, Error> {
        Ok(self.call(Call::new(Method::GET, path)).await?.value)
    }

    /// A JSON body, answered with JSON.
    pub(crate) async fn send<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: String,
        body: &B,
        key: Option<&str>,
    ) -> Result<Answer<T>, Error> {
        let mut call = Call::new(method, path).json(body)?;
        call.idempotency_key = key.map(str::to_string);
        self.call(call).await
    }

    /// A call answered with JSON.
    pub(crate) async fn call<T: DeserializeOwned>(&self, call: Call) -> Result<Answer<T>, Error> {
        let what = format!("{} {}", call.method, call.path);
        let (replayed, body) = self.round_trip(call).await?;
        let value = serde_json::from_slice(&body).map_err(|e| Error::Decode {
            what,
            cause: e.to_string(),
        })?;
        Ok(Answer { value, replayed })
    }

    /// A call whose answer has no body worth reading (`204 No Content`).
    pub(crate) async fn call_empty(&self, call: Call) -> Result<(), Error> {
        self.round_trip(call).await.map(drop)
    }

    /// A call answered with text (CSV, metrics).
    pub(crate) async fn call_text(&self, call: Call) -> Result<String, Error> {
        let what = format!("{} {}", call.method, call.path);
        let (_, body) = self.round_trip(call).await?;
        String::from_utf8(body.to_vec()).map_err(|e| Error::Decode {
            what,
            cause: e.to_string(),
        })
    }

    /// A call answered with bytes (a receipt package).
    pub(crate) async fn call_bytes(&self, call: Call) -> Result<Bytes, Error> {
        self.round_trip(call).await.map(|(_, b)| b)
    }

    /// A call answered with bytes, saying whether the answer is a replay.
    pub(crate) async fn call_bytes_answer(&self, call: Call) -> Result<Answer<Bytes>, Error> {
        let (replayed, value) = self.round_trip(call).await?;
        Ok(Answer { value, replayed })
    }

    /// Sends `call`, retrying what is safe to retry; the success answer's body.
    async fn round_trip(&self, call: Call) -> Result<(bool, Bytes), Error> {
        let retry_safe = call.method == Method::GET
            || call.method == Method::PUT
            || call.idempotency_key.is_some()
            || call.once_only;
        check_path(&call.path)?;
        let attempts = if retry_safe { self.attempts } else { 1 };
        let mut last = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let resp = match self.request(&call).timeout(CALL_TIMEOUT).send().await {
                Ok(r) => r,
                Err(e) => {
                    last = Some(self.transport(&e));
                    continue;
                }
            };
            let status = resp.status();
            let replayed = resp.headers().contains_key("idempotency-replayed");
            let body = match resp.bytes().await {
                Ok(b) => b,
                // The node took the request (a success status) but its answer broke off: a
                // request that may not be repeated must not look like one that never arrived.
                Err(e) if status.is_success() && !retry_safe => {
                    return Err(Error::AnswerLost {
                        base: self.base.clone(),
                        status: status.as_u16(),
                        cause: chain(&e),
                    });
                }
                Err(e) => {
                    last = Some(self.transport(&e));
                    continue;
                }
            };
            if status == reqwest::StatusCode::ACCEPTED
                && let Some(session) = confirmation(&body)
            {
                return Err(Error::ConfirmationRequired(Box::new(session)));
            }
            if status.is_success() {
                return Ok((replayed, body));
            }
            let refusal = Error::Refused(Refusal::parse(status.as_u16(), &body));
            if !status.is_server_error() {
                return Err(refusal);
            }
            last = Some(refusal);
        }
        Err(last.unwrap_or_else(|| Error::Setup("no attempt was made".to_string())))
    }

    fn request(&self, call: &Call) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(call.method.clone(), format!("{}{}", self.base, call.path));
        if let Some(token) = call.bearer.as_ref().or(self.key.as_ref()) {
            req = req.bearer_auth(token);
        }
        if let Some(k) = &call.idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        for (name, value) in &call.headers {
            req = req.header(*name, value);
        }
        if let Some(b) = &call.body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, call.content_type)
                .body(b.clone());
        }
        req
    }

    /// A streamed request: the key is set, there is no overall time limit, nothing is retried.
    pub(crate) fn streaming(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        req
    }

    pub(crate) fn transport(&self, e: &reqwest::Error) -> Error {
        Error::Transport {
            base: self.base.clone(),
            cause: chain(e),
        }
    }

    /// The refusal in a non-success answer to a streamed request.
    pub(crate) async fn refused(resp: reqwest::Response) -> Error {
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_default();
        Error::Refused(Refusal::parse(status, &body))
    }
}

/// The session of a `202 confirmation_required` answer.
fn confirmation(body: &[u8]) -> Option<wire::oob::SessionView> {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Detail,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        code: ErrorCode,
        details: Details,
    }
    #[derive(serde::Deserialize)]
    struct Details {
        session: wire::oob::SessionView,
    }
    let b: Body = serde_json::from_slice(body).ok()?;
    (b.error.code == ErrorCode::ConfirmationRequired).then_some(b.error.details.session)
}

/// One request, before it is sent (and re-sent).
pub(crate) struct Call {
    method: Method,
    path: String,
    body: Option<Bytes>,
    content_type: &'static str,
    idempotency_key: Option<String>,
    bearer: Option<String>,
    headers: Vec<(&'static str, String)>,
    /// The node applies this request at most once without a key (a guarded step: a refund, an
    /// acknowledgement, a publication), so a retry is safe.
    once_only: bool,
}

impl Call {
    pub(crate) fn new(method: Method, path: String) -> Call {
        Call {
            method,
            path,
            body: None,
            content_type: "application/json",
            idempotency_key: None,
            bearer: None,
            headers: Vec::new(),
            once_only: false,
        }
    }

    /// Marks a request the node applies at most once by itself (see [`Call::once_only`]).
    pub(crate) fn once_only(mut self) -> Call {
        self.once_only = true;
        self
    }

    pub(crate) fn json<B: Serialize + ?Sized>(mut self, body: &B) -> Result<Call, Error> {
        let bytes = serde_json::to_vec(body).map_err(|e| Error::Setup(e.to_string()))?;
        self.body = Some(Bytes::from(bytes));
        Ok(self)
    }

    pub(crate) fn raw(mut self, content_type: &'static str, body: Bytes) -> Call {
        self.content_type = content_type;
        self.body = Some(body);
        self
    }

    pub(crate) fn bearer(mut self, token: &str) -> Call {
        self.bearer = Some(token.to_string());
        self
    }

    pub(crate) fn header(mut self, name: &'static str, value: String) -> Call {
        self.headers.push((name, value));
        self
    }
}

/// One path segment, percent-encoded (a user name with a space, an address with `@`).
pub(crate) fn seg(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Refuses a path with a `.` or `..` segment: URL parsing would fold it away and the request
/// would go to another route (`/v1/dev/inbox/..` is `/v1/dev/`). Percent-encoding does not
/// help: `%2E` is a dot to the parser too.
pub(crate) fn check_path(path: &str) -> Result<(), Error> {
    let path = path.split('?').next().unwrap_or_default();
    if path
        .split('/')
        .any(|s| s == "." || s == ".." || s.eq_ignore_ascii_case("%2e"))
    {
        return Err(Error::Setup(format!(
            "{path}: a name in a request cannot be `.` or `..`"
        )));
    }
    Ok(())
}

/// `?a=1&b=2` from the pairs that have a value (`""` when none has).
pub(crate) fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", seg(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// An error and its causes, `outer: inner: innermost`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_queries_are_encoded() {
        assert_eq!(seg("alice"), "alice");
        assert_eq!(seg("a b@c/d"), "a%20b%40c%2Fd");
        for bad in [".", ".."] {
            let path = format!("/v1/dev/inbox/{}", seg(bad));
            assert!(check_path(&path).is_err(), "{path}");
        }
        assert!(check_path("/v1/dev/inbox/a.b?x=..").is_ok());
        assert_eq!(query(&[("user", None)]), "");
        assert_eq!(
            query(&[("user", Some("a&b".into())), ("limit", Some("5".into()))]),
            "?user=a%26b&limit=5"
        );
    }

    #[test]
    fn refusals_keep_the_code_and_survive_foreign_bodies() {
        let r = Refusal::parse(
            422,
            br#"{"error":{"code":"wrong_code","message":"wrong code","details":{"attempts_left":2}}}"#,
        );
        assert_eq!(r.code, Some(ErrorCode::WrongCode));
        assert_eq!(r.detail_i64("attempts_left"), Some(2));
        assert_eq!(r.to_string(), "422 wrong_code: wrong code");
        let r = Refusal::parse(
            409,
            br#"{"error":{"code":"from_a_newer_node","message":"m"}}"#,
        );
        assert_eq!((r.code, r.code_text.as_str()), (None, "from_a_newer_node"));
        let r = Refusal::parse(502, b"<html>Bad Gateway</html>");
        assert_eq!(r.code_text, "http_error");
        assert!(r.message.contains("Bad Gateway"));
        assert!(Error::Refused(r).is_transient());
    }

    #[test]
    fn the_key_stays_out_of_debug() {
        let c = Client::builder("http://127.0.0.1:1")
            .api_key("tally_secret_value")
            .build()
            .expect("client");
        let shown = format!("{c:?}");
        assert!(!shown.contains("tally_secret_value"), "{shown}");
        assert!(Client::builder("ftp://x").build().is_err());
    }
}
