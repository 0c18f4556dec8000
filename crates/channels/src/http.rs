//! The outgoing-HTTP core shared by webhooks and the SMS gateway: one POST, bounded retries,
//! one error classification, one SSRF guard.
//!
//! `HttpSender` owns a reqwest client built for hostile receivers: the [`GuardedResolver`]
//! (unless `allow_private_addresses`), no redirects (a 3xx could point at an internal host, and
//! a receiver that moved should be re-registered, not silently followed), no proxies (they would
//! resolve names themselves and bypass the guard), a connect and a total timeout, and a cap on
//! how much of a response body is read.
//!
//! Status classification: 2xx delivered; 408, 429 and 5xx transient; every other status,
//! including 3xx, permanent. Connect errors, timeouts and DNS failures are transient; a
//! refusal by the SSRF guard is permanent. A transient failure is retried inside the same
//! call, at most `max_attempts` times in all, after `backoff_base_ms · 2^n`; long-term
//! retrying is the outbox worker's job, so these numbers stay small.
//!
//! Rejected: reqwest-middleware/reqwest-retry (two more dependencies for a ten-line loop, and
//! the webhook must re-sign each attempt) and following redirects with a per-hop guard check.

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};

use crate::ChannelError;
use crate::error::error_chain;
use crate::guard::{GuardedResolver, SsrfRefused, check_url};

/// Tuning and safety knobs of outgoing HTTP. Every field has a default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Whole request, from connect to the last byte of the (capped) response. Default 10 s.
    pub timeout_ms: u64,
    /// TCP (and TLS) connect. Default 5 s.
    pub connect_timeout_ms: u64,
    /// Tries per delivery call, including the first. Default 3; 0 is treated as 1.
    pub max_attempts: u32,
    /// Delay before retry n (0-based) is `backoff_base_ms · 2^n`. Default 50 ms.
    pub backoff_base_ms: u64,
    /// Larger request bodies fail permanently without a request. Default 1 MiB.
    pub max_request_bytes: usize,
    /// At most this much of a response body is read. Default 64 KiB.
    pub max_response_bytes: usize,
    /// Turns the SSRF guard off: loopback, private and link-local receivers become reachable.
    /// Only for tests and for deployments whose receivers are deliberately internal.
    pub allow_private_addresses: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            timeout_ms: 10_000,
            connect_timeout_ms: 5_000,
            max_attempts: 3,
            backoff_base_ms: 50,
            max_request_bytes: 1024 * 1024,
            max_response_bytes: 64 * 1024,
            allow_private_addresses: false,
        }
    }
}

/// The longest delay between two attempts, whatever the configuration says.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How much of an error response body goes into the error message.
const ERROR_SNIPPET_BYTES: usize = 200;

/// A successful (2xx) response.
#[derive(Debug)]
pub(crate) struct HttpReply {
    pub(crate) status: StatusCode,
    /// At most `max_response_bytes` of the body.
    pub(crate) body: Vec<u8>,
}

/// One POST request to be made, possibly several times.
pub(crate) struct Post<'a> {
    pub(crate) url: &'a Url,
    pub(crate) content_type: &'static str,
    pub(crate) body: Vec<u8>,
    /// Headers that are the same on every attempt.
    pub(crate) headers: HeaderMap,
    /// For the log line only.
    pub(crate) message_id: &'a str,
}

/// The shared HTTP client; see the module docs.
#[derive(Clone, Debug)]
pub(crate) struct HttpSender {
    client: reqwest::Client,
    config: HttpConfig,
}

impl HttpSender {
    pub(crate) fn new(config: HttpConfig) -> Result<Self, ChannelError> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_millis(config.timeout_ms))
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .user_agent(concat!("tally/", env!("CARGO_PKG_VERSION")));
        if !config.allow_private_addresses {
            builder = builder.dns_resolver(std::sync::Arc::new(GuardedResolver));
        }
        let client = builder.build().map_err(|e| {
            ChannelError::permanent(format!("cannot build HTTP client: {}", error_chain(&e)))
        })?;
        Ok(HttpSender { client, config })
    }

    pub(crate) fn config(&self) -> &HttpConfig {
        &self.config
    }

    /// POSTs `post`, retrying transient failures. `per_attempt` adds headers that must be fresh
    /// on every attempt (the webhook signature's timestamp); it sees the body bytes.
    pub(crate) async fn post<F>(
        &self,
        post: Post<'_>,
        per_attempt: F,
    ) -> Result<HttpReply, ChannelError>
    where
        F: Fn(&[u8]) -> Result<HeaderMap, ChannelError> + Sync,
    {
        check_url(post.url, self.config.allow_private_addresses)?;
        if post.body.len() > self.config.max_request_bytes {
            return Err(ChannelError::permanent(format!(
                "message too large: {} bytes, limit {}",
                post.body.len(),
                self.config.max_request_bytes
            )));
        }
        let attempts = self.config.max_attempts.max(1);
        let mut attempt: u32 = 0;
        loop {
            let result = self.post_once(&post, &per_attempt).await;
            attempt += 1;
            match result {
                Ok(reply) => {
                    tracing::debug!(
                        message_id = post.message_id,
                        attempt,
                        status = reply.status.as_u16(),
                        "HTTP delivery accepted"
                    );
                    return Ok(reply);
                }
                Err(err @ ChannelError::Permanent(_)) => {
                    tracing::info!(message_id = post.message_id, attempt, error = %err, "HTTP delivery refused");
                    return Err(err);
                }
                Err(err @ ChannelError::Transient(_)) => {
                    if attempt >= attempts {
                        tracing::info!(message_id = post.message_id, attempt, error = %err, "HTTP delivery failed, giving up for now");
                        return Err(err);
                    }
                    let delay = backoff(self.config.backoff_base_ms, attempt - 1);
                    tracing::debug!(message_id = post.message_id, attempt, error = %err, delay = ?delay, "HTTP delivery failed, retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn post_once<F>(
        &self,
        post: &Post<'_>,
        per_attempt: &F,
    ) -> Result<HttpReply, ChannelError>
    where
        F: Fn(&[u8]) -> Result<HeaderMap, ChannelError> + Sync,
    {
        let mut headers = post.headers.clone();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(post.content_type));
        headers.extend(per_attempt(&post.body)?);
        let request = self
            .client
            .post(post.url.clone())
            .headers(headers)
            .body(post.body.clone());
        let mut response = request.send().await.map_err(classify_reqwest)?;
        let status = response.status();
        if status.is_success() {
            // The receiver has accepted the message; a failure while reading the rest of the
            // body must not turn into a retry (that would deliver twice).
            let body = read_capped(&mut response, self.config.max_response_bytes)
                .await
                .unwrap_or_else(|e| {
                    tracing::debug!(message_id = post.message_id, error = %error_chain(&e.without_url()), "could not read the response body of an accepted delivery");
                    Vec::new()
                });
            return Ok(HttpReply { status, body });
        }
        let snippet = read_capped(&mut response, ERROR_SNIPPET_BYTES)
            .await
            .map(|b| printable(&b))
            .unwrap_or_default();
        Err(classify_status(status, &snippet))
    }
}

/// `base · 2^retry`, capped at [`BACKOFF_MAX`].
fn backoff(base_ms: u64, retry: u32) -> Duration {
    let factor = 1u64.checked_shl(retry.min(32)).unwrap_or(u64::MAX);
    Duration::from_millis(base_ms.saturating_mul(factor)).min(BACKOFF_MAX)
}

/// Reads at most `cap` bytes of the body and drops the rest.
async fn read_capped(
    response: &mut reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = cap.saturating_sub(body.len());
        if chunk.len() >= room {
            body.extend_from_slice(&chunk[..room]);
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Response text safe for a log line: lossy UTF-8, control characters replaced.
fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// The retry decision for a non-2xx status.
pub(crate) fn classify_status(status: StatusCode, snippet: &str) -> ChannelError {
    let reason = if snippet.is_empty() {
        format!("receiver answered {status}")
    } else {
        format!("receiver answered {status}: {snippet}")
    };
    if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        ChannelError::Transient(reason)
    } else if status.is_redirection() {
        ChannelError::Permanent(format!("{reason} (redirects are not followed)"))
    } else {
        ChannelError::Permanent(reason)
    }
}

/// The retry decision for a request that got no response. The URL is stripped: webhook URLs
/// often carry a token.
fn classify_reqwest(err: reqwest::Error) -> ChannelError {
    let err = err.without_url();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(inner) = source {
        if let Some(refused) = inner.downcast_ref::<SsrfRefused>() {
            return ChannelError::Permanent(refused.to_string());
        }
        source = inner.source();
    }
    let text = error_chain(&err);
    if err.is_builder() {
        ChannelError::Permanent(format!("invalid request: {text}"))
    } else if err.is_timeout() {
        ChannelError::Transient(format!("timed out: {text}"))
    } else {
        // Connect errors, DNS failures, resets and broken bodies: the receiver may be back.
        ChannelError::Transient(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        let cases: &[(u16, bool)] = &[
            (500, true),
            (502, true),
            (503, true),
            (504, true),
            (408, true),
            (429, true),
            (400, false),
            (401, false),
            (403, false),
            (404, false),
            (410, false),
            (413, false),
            (422, false),
            (301, false),
            (302, false),
            (307, false),
        ];
        for (code, transient) in cases {
            let status = StatusCode::from_u16(*code).expect("valid status");
            assert_eq!(
                classify_status(status, "").is_transient(),
                *transient,
                "{code}"
            );
        }
        let e = classify_status(StatusCode::BAD_REQUEST, "bad field");
        assert_eq!(e.reason(), "receiver answered 400 Bad Request: bad field");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(50, 0), Duration::from_millis(50));
        assert_eq!(backoff(50, 1), Duration::from_millis(100));
        assert_eq!(backoff(50, 2), Duration::from_millis(200));
        assert_eq!(backoff(50, 40), BACKOFF_MAX);
        assert_eq!(backoff(u64::MAX, 3), BACKOFF_MAX);
    }

    #[test]
    fn printable_strips_control_characters() {
        assert_eq!(printable(b"bad\r\nX-Injected: 1\x00"), "bad  X-Injected: 1");
        assert_eq!(printable(&[0xff, b'a']), "\u{fffd}a");
    }
}
