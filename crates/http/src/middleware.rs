//! Cross-cutting layers: per-client rate limiting, request metrics, the JSON error normaliser,
//! request-id hygiene, the panic handler and the tracing span.
//!
//! Key decisions:
//! * **Rate limiting** is a GCRA limiter from `governor`, one cell per client, in memory. The
//!   client is the first 8 bytes of SHA-256 of the bearer token when there is one (so a key is
//!   limited wherever it comes from, and the limiter never holds a usable secret), else the peer
//!   IP from `ConnectInfo`, else `unknown` (in-process tests). Stale cells are dropped with
//!   `retain_recent()` every [`RETAIN_EVERY`] checks, which bounds memory without a timer task.
//!   Rejected: `tower_governor` (its key extractors do not know our API keys and its errors are not
//!   in our format). `X-Forwarded-For` is read only from the peers named by `--trusted-proxy`
//!   (anyone else could forge it): the client is the rightmost address a trusted proxy added.
//! * **Failed authentications** are counted per presented key *and* client address: a key that
//!   keeps failing from an address is refused there for a while, and the address's other keys
//!   are not. Made-up keys are each new, so the failures of keys not yet seen to authenticate
//!   in this process share one budget per address (the client rate limit): past it, a guesser
//!   gets 429s instead of lookups for a while, a key already seen passes whatever the guesser
//!   does, and a valid new key spends nothing (it is only refused while the address is
//!   blocked). Behind a
//!   reverse proxy, `--trusted-proxy` tells clients apart; without it they are one address.
//! * **Normaliser**: layers below axum (body limit, timeout, method router) answer with empty or
//!   plain-text bodies. One middleware rewrites every non-JSON error response into our
//!   `{"error":{…}}` shape, so clients parse one format whatever produced the error.
//! * **Logging**: the request span carries the method, the *route template* and the request id,
//!   never the raw URI (query strings may name owners), headers (the `Authorization` and `Cookie`
//!   headers are additionally marked sensitive) or bodies.

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tally_kernel::crypto::kdf::sha256;

use crate::error::{ApiError, ErrorCode};
use crate::extract::bearer;
use crate::telemetry;

/// Drop idle limiter cells after this many checks.
pub const RETAIN_EVERY: u64 = 4096;
/// Longest client-supplied `x-request-id` we keep; longer or odd ones are replaced.
pub const REQUEST_ID_LEN_MAX: usize = 64;

/// Who a request is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// First 8 bytes of SHA-256 of the bearer token.
    ApiKey([u8; 8]),
    /// The TCP peer.
    Peer(IpAddr),
    /// No key and no peer address (in-process calls).
    Unknown,
}

impl ClientKey {
    /// The key for a request: its API key, else its client address.
    pub fn of(req: &Request, trusted: &[IpAddr]) -> ClientKey {
        match key_digest(req) {
            Some(prefix) => ClientKey::ApiKey(prefix),
            None => client_address(req, trusted),
        }
    }
}

/// The first 8 bytes of SHA-256 of the request's bearer token.
fn key_digest(req: &Request) -> Option<[u8; 8]> {
    let digest = sha256(bearer(req.headers())?.as_bytes());
    let mut prefix = [0_u8; 8];
    prefix.copy_from_slice(&digest[..8]);
    Some(prefix)
}

/// The client's address: the TCP peer, or, when the peer is a trusted proxy, the rightmost
/// address in `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_address(req: &Request, trusted: &[IpAddr]) -> ClientKey {
    let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>() else {
        return ClientKey::Unknown;
    };
    let peer = peer.ip();
    if !trusted.contains(&peer) {
        return ClientKey::Peer(peer);
    }
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in forwarded.iter().rev() {
        match hop_address(hop) {
            Ok(ip) if trusted.contains(&ip) => continue,
            Ok(ip) => return ClientKey::Peer(ip),
            // A malformed hop: nothing left of it can be believed.
            Err(_) => break,
        }
    }
    ClientKey::Peer(peer)
}

/// One `X-Forwarded-For` hop: an address, or an address with a port (`203.0.113.7:41234`,
/// `[2001:db8::7]:443`) as some proxies write it.
fn hop_address(hop: &str) -> Result<IpAddr, std::net::AddrParseError> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
}

/// The client's address as the rate limit resolved it (the TCP peer, or what a trusted proxy
/// forwarded), for handlers that cap per client address.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientAddress(pub Option<IpAddr>);

/// Set by the `Caller` extractor when the request's API key authenticated.
#[derive(Debug, Clone, Default)]
pub struct Authenticated(pub Arc<std::sync::atomic::AtomicBool>);

/// Failed authentications allowed per presented key and address per second (and twice that
/// at once) before that key is refused there for a while. Made-up keys are bounded by the
/// address's budget for unseen keys (see the module docs), which the per-key limiter alone
/// does not do (each made-up key would get a fresh allowance).
pub const FAILED_AUTH_PER_SECOND: u32 = 20;

/// Who failed authentication: the client address and the presented key's digest (none when
/// no key was presented).
type FailKey = (ClientKey, Option<[u8; 8]>);

/// Most API keys remembered as valid (by digest) for blocked addresses.
const GOOD_KEYS_MAX: usize = 100_000;

/// The per-client limiter shared by all routes of one router.
pub struct RateLimit {
    limiter: RateLimiter<ClientKey, HashMapStateStore<ClientKey>, DefaultClock>,
    checks: AtomicU64,
    failed_auth: RateLimiter<FailKey, HashMapStateStore<FailKey>, DefaultClock>,
    /// Requests per address with a key not yet seen to authenticate.
    unseen_keys: RateLimiter<ClientKey, HashMapStateStore<ClientKey>, DefaultClock>,
    /// Keys at addresses over the failed-authentication quota, and until when.
    blocked: std::sync::Mutex<std::collections::HashMap<FailKey, Instant>>,
    /// Digests of keys that authenticated (they skip the unseen-key budget).
    good: std::sync::Mutex<std::collections::HashSet<[u8; 8]>>,
    /// Proxies whose `X-Forwarded-For` is believed.
    trusted: Vec<IpAddr>,
}

impl RateLimit {
    /// `per_second` sustained, `burst` at once (each at least 1), believing `X-Forwarded-For`
    /// from `trusted` proxies only.
    pub fn new(per_second: u32, burst: u32, trusted: Vec<IpAddr>) -> RateLimit {
        let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(per_second).allow_burst(burst);
        let failed = NonZeroU32::new(FAILED_AUTH_PER_SECOND).unwrap_or(NonZeroU32::MIN);
        let failed_burst = NonZeroU32::new(FAILED_AUTH_PER_SECOND * 2).unwrap_or(NonZeroU32::MIN);
        RateLimit {
            limiter: RateLimiter::hashmap(quota),
            checks: AtomicU64::new(0),
            failed_auth: RateLimiter::hashmap(Quota::per_second(failed).allow_burst(failed_burst)),
            unseen_keys: RateLimiter::hashmap(quota),
            blocked: std::sync::Mutex::new(std::collections::HashMap::new()),
            good: std::sync::Mutex::new(std::collections::HashSet::new()),
            trusted,
        }
    }

    fn is_good(&self, digest: &[u8; 8]) -> bool {
        self.good
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(digest)
    }

    fn mark_good(&self, digest: [u8; 8]) {
        let mut good = self.good.lock().unwrap_or_else(|p| p.into_inner());
        if good.len() >= GOOD_KEYS_MAX {
            good.clear();
        }
        good.insert(digest);
    }

    /// Seconds left while `peer` is refused for failed authentications.
    fn blocked_for(&self, peer: &FailKey) -> Option<u64> {
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        blocked.retain(|_, until| *until > now);
        blocked
            .get(peer)
            .map(|until| until.duration_since(now).as_secs().max(1))
    }

    /// Counts a failed authentication by `peer`; past the quota the peer is refused for a
    /// while. Returns the seconds to wait when it is.
    fn failed(&self, peer: &FailKey) -> Option<u64> {
        let not_until = self.failed_auth.check_key(peer).err()?;
        let wait = not_until
            .wait_time_from(self.failed_auth.clock().now())
            .max(std::time::Duration::from_secs(1));
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        blocked.insert(peer.clone(), Instant::now() + wait);
        Some(wait.as_secs().max(1))
    }

    /// Counts a failed unseen key from `peer`; past the address's budget, unseen keys from it
    /// are refused for a while (recorded under the address with no key).
    fn unseen_failed(&self, peer: &ClientKey) {
        if let Err(not_until) = self.unseen_keys.check_key(peer) {
            let wait = not_until
                .wait_time_from(self.unseen_keys.clock().now())
                .max(std::time::Duration::from_secs(1));
            let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
            blocked.insert((peer.clone(), None), Instant::now() + wait);
        }
    }

    /// `Ok` or the whole seconds to wait (at least 1).
    pub fn check(&self, key: &ClientKey) -> Result<(), u64> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % RETAIN_EVERY == RETAIN_EVERY - 1 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
            self.failed_auth.retain_recent();
            self.unseen_keys.retain_recent();
        }
        match self.limiter.check_key(key) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Err(secs.max(1))
            }
        }
    }

    /// Cells currently held.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    /// True when no cell is held.
    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

/// Refuses a request with 429 when its client is over the quota, when its key kept failing
/// from its address, or when its address sent too many keys not yet seen to authenticate.
pub async fn rate_limit(
    State(limit): State<Arc<RateLimit>>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = client_address(&req, &limit.trusted);
    let digest = key_digest(&req);
    let fail_key = (peer.clone(), digest);
    if let Some(retry_after_s) = limit.blocked_for(&fail_key) {
        return ApiError::rate_limited(retry_after_s).into_response();
    }
    // An address whose unseen keys kept failing is refused further unseen keys for a while
    // (a key that authenticated before passes); valid new keys spend nothing.
    if let Some(d) = digest
        && !limit.is_good(&d)
        && let Some(retry_after_s) = limit.blocked_for(&(peer.clone(), None))
    {
        return ApiError::rate_limited(retry_after_s).into_response();
    }
    let client = match digest {
        Some(d) => ClientKey::ApiKey(d),
        None => peer.clone(),
    };
    if let Err(retry_after_s) = limit.check(&client) {
        return ApiError::rate_limited(retry_after_s).into_response();
    }
    let authenticated = Authenticated::default();
    req.extensions_mut().insert(authenticated.clone());
    req.extensions_mut()
        .insert(ClientAddress(match &fail_key.0 {
            ClientKey::Peer(ip) => Some(*ip),
            ClientKey::ApiKey(_) | ClientKey::Unknown => None,
        }));
    let response = next.run(req).await;
    if response.status() == StatusCode::UNAUTHORIZED {
        limit.failed(&fail_key);
        if let Some(d) = digest
            && !limit.is_good(&d)
        {
            limit.unseen_failed(&peer);
        }
    } else if let Some(d) = digest
        && authenticated.0.load(Ordering::Relaxed)
    {
        limit.mark_good(d);
    }
    response
}

fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    // A fixed set: extension methods would otherwise create unbounded label values.
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The route template (`/v1/accounts/{id}`), never the raw path: bounded label values.
fn route_label(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string())
}

/// Counts requests and records latency by method, route and status; errors by code.
pub async fn record_metrics(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let route = route_label(&req);
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(telemetry::REQUESTS, "method" => method, "route" => route.clone(), "status" => status.clone())
        .increment(1);
    metrics::histogram!(telemetry::REQUEST_DURATION, "method" => method, "route" => route, "status" => status)
        .record(started.elapsed().as_secs_f64());
    if let Some(code) = response.extensions().get::<ErrorCode>() {
        metrics::counter!(telemetry::ERRORS, "code" => code.as_str()).increment(1);
    }
    response
}

/// Our own answers: the API's JSON, and the web page's HTML (nothing else here makes HTML).
fn is_ours(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"))
}

/// Longest request target (path and query) the node reads, bytes.
pub const URI_LEN_MAX: usize = 8 * 1024;
/// Most request headers.
pub const HEADER_COUNT_MAX: usize = 100;
/// Most bytes of request headers (names and values).
pub const HEADER_BYTES_MAX: usize = 32 * 1024;

/// Refuses an oversize request target (`414 uri_too_long`) or oversize headers (`431
/// headers_too_large`) in our JSON format. `tally serve` lets hyper read more than this
/// (which would answer with an empty body) so these limits are the ones clients meet.
pub async fn request_limits(req: Request, next: Next) -> Response {
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > URI_LEN_MAX {
        return ApiError::new(
            ErrorCode::UriTooLong,
            format!("the request target is {uri_len} bytes; at most {URI_LEN_MAX}"),
        )
        .into_response();
    }
    let headers = req.headers();
    let bytes: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum();
    if headers.len() > HEADER_COUNT_MAX || bytes > HEADER_BYTES_MAX {
        return ApiError::new(
            ErrorCode::HeadersTooLarge,
            format!(
                "{} headers of {bytes} bytes; at most {HEADER_COUNT_MAX} headers of {HEADER_BYTES_MAX} bytes",
                headers.len()
            ),
        )
        .into_response();
    }
    next.run(req).await
}

/// Rewrites error responses that are not ours (empty or plain text) into our JSON format.
pub async fn normalise_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_ours(&response) {
        return response;
    }
    let error = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::PayloadTooLarge, "request body too large")
        }
        StatusCode::NOT_FOUND => ApiError::new(ErrorCode::NotFound, "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            ErrorCode::MethodNotAllowed,
            "method not allowed on this route",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the body with `Content-Type: application/json`",
        ),
        // Our only source of a bare 503 is the request timeout.
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => {
            tracing::warn!("request timed out");
            ApiError::new(
                ErrorCode::Unavailable,
                "the request did not complete in time; it may still apply: retry with the same Idempotency-Key",
            )
        }
        s if s.is_client_error() => {
            ApiError::new(ErrorCode::InvalidRequest, "bad request").with_status(s)
        }
        s => ApiError::internal(&format_args!("a layer answered {s} without a body")),
    };
    let allow = response.headers().get(header::ALLOW).cloned();
    let mut out = error.into_response();
    if let Some(allow) = allow {
        out.headers_mut().insert(header::ALLOW, allow);
    }
    out
}

/// Keeps a client's `x-request-id` only when it is short and plain (`[A-Za-z0-9._:-]`), so it is
/// safe to log and echo; otherwise a fresh one is generated.
pub async fn sanitise_request_id(mut req: Request) -> Request {
    let ok = req.headers().get("x-request-id").is_none_or(|v| {
        let b = v.as_bytes();
        !b.is_empty()
            && b.len() <= REQUEST_ID_LEN_MAX
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
    });
    if !ok {
        req.headers_mut().remove("x-request-id");
    }
    req
}

/// The tracing span of one request: method, route template, request id and, once
/// authenticated, the caller's API key id.
pub fn request_span(req: &Request) -> tracing::Span {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        method = method_label(req.method()),
        route = %route_label(req),
        request_id,
        caller = tracing::field::Empty,
    )
}

/// A handler panicked: log it, answer 500 `internal`.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("non-string panic payload");
    ApiError::internal(&format_args!("handler panicked: {detail}")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_has_its_own_budget() {
        let limit = RateLimit::new(1, 2, Vec::new());
        let a = ClientKey::ApiKey([1; 8]);
        let b = ClientKey::Peer(IpAddr::from([127, 0, 0, 1]));
        assert_eq!((limit.check(&a), limit.check(&a)), (Ok(()), Ok(())));
        let wait = limit.check(&a).expect_err("burst of 2 is spent");
        assert!((1..=2).contains(&wait), "about a second at 1/s, got {wait}");
        assert_eq!(limit.check(&b), Ok(()), "another client is unaffected");
        assert_eq!(limit.len(), 2);
    }

    #[test]
    fn a_forwarded_client_is_found_with_or_without_a_port() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let at = |xff: &str| {
            let mut req = Request::builder()
                .header("x-forwarded-for", xff)
                .body(axum::body::Body::empty())
                .unwrap();
            req.extensions_mut()
                .insert(ConnectInfo(SocketAddr::new(proxy, 443)));
            client_address(&req, &[proxy])
        };
        let client = |ip: &str| ClientKey::Peer(ip.parse().unwrap());
        assert_eq!(at("203.0.113.7"), client("203.0.113.7"));
        assert_eq!(at("203.0.113.7:41234"), client("203.0.113.7"));
        assert_eq!(at("[2001:db8::7]:443"), client("2001:db8::7"));
        assert_eq!(
            at("198.51.100.1, 203.0.113.7:5, 10.0.0.1"),
            client("203.0.113.7")
        );
        // A hop that is no address: nothing before it is believed.
        assert_eq!(at("198.51.100.1, not-an-ip"), ClientKey::Peer(proxy));
    }

    #[test]
    fn zero_options_still_admit_one_request() {
        let limit = RateLimit::new(0, 0, Vec::new());
        assert_eq!(limit.check(&ClientKey::Unknown), Ok(()));
        assert!(limit.check(&ClientKey::Unknown).is_err());
    }

    #[tokio::test]
    async fn odd_request_ids_are_dropped() {
        let req = |id: &str| {
            axum::http::Request::builder()
                .header("x-request-id", id)
                .body(axum::body::Body::empty())
                .expect("request")
        };
        let kept = sanitise_request_id(req("abc-123_x.y:z")).await;
        assert!(kept.headers().contains_key("x-request-id"));
        let long = "a".repeat(REQUEST_ID_LEN_MAX + 1);
        for bad in ["has space", "quote\"d", long.as_str()] {
            let dropped = sanitise_request_id(req(bad)).await;
            assert!(!dropped.headers().contains_key("x-request-id"), "{bad}");
        }
    }
}
