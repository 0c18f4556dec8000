//! Tally's HTTP API: an axum [`Router`] over [`tally_service::Node`], with JSON DTOs, one error
//! format with stable codes, API-key authentication, body and rate limits, timeouts, request ids,
//! metrics and an OpenAPI 3.1 document.
//!
//! ```text
//! request → set/sanitise x-request-id → mark Authorization/Cookie sensitive → trace span
//!         → metrics → normalise errors → catch panic → rate limit → timeout → body limit
//!         → handler: extract (Caller, Idempotency-Key, JSON) → Node → DTO | ApiError
//! ```
//!
//! Key decision: this crate holds no business logic. Authorisation, idempotency, and every money
//! rule are in `tally-service` and `tally-ledger`; here a request is parsed into the service's
//! order type, the node is called, and the result or [`ServiceError`](tally_service::ServiceError)
//! is mapped to JSON and a status ([`error`]). The CLI's direct paths and any future transport
//! therefore get the same rules. The router is one function, [`router`], so tests drive it with
//! `oneshot` and no socket, and [`openapi`] is generated from the same handlers.
//!
//! Rejected: per-handler auth checks (an extractor, [`extract::Caller`], makes "needs a key" part
//! of the signature), a response cache for idempotency (the ledger stores keys transactionally),
//! and sharing domain types on the wire ([`dto`]).

pub mod changes;
pub mod delivery;
pub mod dto;
pub mod error;
pub mod extract;
pub mod federation;
pub mod handlers;
pub mod middleware;
pub mod oob;
pub mod openapi;
pub mod ops;
pub mod pad_providers;
pub mod pads;
pub mod receipts;
pub mod telemetry;
pub mod web;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, StatusCode, header};
use axum::routing::{delete, get, post};
use std::sync::Arc;
use std::time::Duration;
use tally_service::Node;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use utoipa::OpenApi as _;

pub use error::{ApiError, ErrorCode};

/// Limits of the HTTP layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// Largest request body, in bytes (default 64 KiB); larger → 413 `payload_too_large`.
    pub body_limit_bytes: usize,
    /// Sustained requests per second per client (default 1000; 0 counts as 1).
    pub rate_limit_per_second: u32,
    /// Requests a client may send at once (default 2000; 0 counts as 1).
    pub rate_limit_burst: u32,
    /// Longest a request may take (default 30 s); longer → 503 `unavailable`.
    pub request_timeout: Duration,
    /// Reverse proxies whose `X-Forwarded-For` names the client (default none: the TCP peer is
    /// the client).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// An arbiter node (`tally serve --role arbiter`): only health, metrics and the arbiter's
    /// two routes are served.
    pub arbiter_only: bool,
    /// The node serves HTTPS: the web session cookie is marked `Secure`.
    pub secure_cookies: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            body_limit_bytes: 64 * 1024,
            rate_limit_per_second: 1000,
            rate_limit_burst: 2000,
            request_timeout: Duration::from_secs(30),
            trusted_proxies: Vec::new(),
            arbiter_only: false,
            secure_cookies: false,
        }
    }
}

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The node every operation goes to.
    pub node: Node,
    /// The web session cookie is marked `Secure` (the node serves HTTPS).
    pub secure_cookies: bool,
}

/// The complete application: routes, state and every cross-cutting layer. Serve it with
/// `axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())` so the
/// rate limit can key anonymous requests by peer address.
pub fn router(node: Node, options: HttpOptions) -> Router {
    telemetry::prometheus();
    let routes = if options.arbiter_only {
        arbiter_routes()
    } else {
        routes().merge(arbiter_routes())
    };
    let limited = bounded(routes, &options);
    // A pad frame may be larger than the JSON body limit: up to its largest ciphertext and
    // header and tag.
    let frames = bounded(
        Router::new().route("/v1/pad-frames", post(pads::frame)),
        &HttpOptions {
            body_limit_bytes: options
                .body_limit_bytes
                .max(tally_proto::pad::frame::LEN_MAX as usize + tally_proto::pad::frame::OVERHEAD),
            ..options.clone()
        },
    );
    // Uploads and downloads stream gigabytes: no body limit (the service enforces its own
    // upload limit) and no request timeout.
    let streaming = streaming_routes().layer(DefaultBodyLimit::disable());
    // A batch of 8,189 transfer events is larger than a single request's JSON.
    let batches = bounded(
        Router::new().route("/v1/transfers/batch", post(handlers::create_transfer_batch)),
        &HttpOptions {
            body_limit_bytes: options.body_limit_bytes.max(dto::BATCH_BODY_MAX),
            ..options.clone()
        },
    );
    let limited = if options.arbiter_only {
        limited
    } else {
        limited.merge(frames).merge(batches)
    };
    let app = limited
        .merge(streaming)
        .fallback(ops::no_route)
        .with_state(AppState {
            node,
            secure_cookies: options.secure_cookies,
        });
    layered(app, &options)
}

/// The body limit and the request timeout, for every route that does not stream.
fn bounded<S: Clone + Send + Sync + 'static>(
    routes: Router<S>,
    options: &HttpOptions,
) -> Router<S> {
    routes
        .layer(DefaultBodyLimit::max(options.body_limit_bytes))
        .layer(RequestBodyLimitLayer::new(options.body_limit_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            options.request_timeout,
        ))
}

/// Wraps `app` in every cross-cutting layer (innermost first; see the crate docs for the order).
fn layered(app: Router, options: &HttpOptions) -> Router {
    let limit = Arc::new(middleware::RateLimit::new(
        options.rate_limit_per_second,
        options.rate_limit_burst,
        options.trusted_proxies.clone(),
    ));
    app.layer(axum::middleware::from_fn_with_state(
        limit,
        middleware::rate_limit,
    ))
    .layer(axum::middleware::from_fn(middleware::request_limits))
    .layer(CatchPanicLayer::custom(middleware::panic_response))
    .layer(axum::middleware::from_fn(middleware::normalise_errors))
    // HTML pages pass `normalise_errors` as 200 and get their real status back here.
    .layer(axum::middleware::from_fn(middleware::record_metrics))
    .layer(PropagateRequestIdLayer::new(HeaderName::from_static(
        "x-request-id",
    )))
    .layer(
        TraceLayer::new_for_http()
            .make_span_with(middleware::request_span)
            .on_response(DefaultOnResponse::new().level(tracing::Level::INFO))
            .on_failure(DefaultOnFailure::new().level(tracing::Level::ERROR)),
    )
    .layer(SetSensitiveRequestHeadersLayer::new([
        header::AUTHORIZATION,
        header::COOKIE,
    ]))
    .layer(SetRequestIdLayer::new(
        HeaderName::from_static("x-request-id"),
        MakeRequestUuid,
    ))
    .layer(axum::middleware::map_request(
        middleware::sanitise_request_id,
    ))
}

/// The route table. Every API route here is in [`openapi`] (a test checks both directions);
/// the web page's HTML routes ([`web::routes`]) are not part of the API document.
/// What an arbiter node serves (a receipt node serves them too: its own arbiter key, and a
/// refusal to decide unless it is an arbiter).
fn arbiter_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/v1/arbiter/key", get(receipts::arbiter_key))
        .route("/v1/arbiter/decide", post(receipts::arbiter_decide))
        .route("/v1/arbiter/resolve", post(receipts::arbiter_resolve_for_b))
}

fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/node", get(ops::node))
        .route("/openapi.json", get(ops::openapi_json))
        .route(
            "/v1/accounts",
            post(handlers::open_account).get(handlers::list_accounts),
        )
        .route("/v1/accounts/{id}", get(handlers::account))
        .route(
            "/v1/accounts/{id}/transfers",
            get(handlers::account_transfers),
        )
        .route("/v1/accounts/{id}/history", get(handlers::account_history))
        .route(
            "/v1/transfers",
            post(handlers::create_transfer).get(handlers::query_transfers),
        )
        .route("/v1/transfers/{id}", get(handlers::transfer))
        .route("/v1/holds", post(handlers::create_hold))
        .route("/v1/holds/{id}/post", post(handlers::post_hold))
        .route("/v1/holds/{id}/void", post(handlers::void_hold))
        .route("/v1/exchanges", post(handlers::exchange))
        .route(
            "/v1/api-keys",
            post(handlers::create_api_key).get(handlers::list_api_keys),
        )
        .route("/v1/api-keys/{id}", delete(handlers::revoke_api_key))
        .route("/v1/dev/inbox/{address}", get(handlers::dev_inbox))
        .route("/v1/ledger/audit", get(handlers::audit))
        .route("/v1/subscribers/{user}", post(oob::upsert_subscriber))
        .route(
            "/v1/subscribers/{user}/addresses",
            post(oob::add_address).get(oob::addresses),
        )
        .route(
            "/v1/subscribers/{user}/certificate",
            post(oob::issue_certificate),
        )
        .route("/v1/subscribers/{user}/statement", get(oob::statement))
        .route(
            "/v1/oob/sessions",
            post(oob::open_session).get(oob::sessions),
        )
        .route("/v1/oob/sessions/{session}", get(oob::session))
        .route("/v1/oob/sessions/{session}/verify", post(oob::verify))
        .route("/v1/oob/sessions/{session}/cancel", post(oob::cancel))
        .route("/v1/oob/whoami", get(oob::whoami))
        .route("/v1/oob/sign-out", post(oob::sign_out))
        .route("/v1/oob/rules/{owner}", axum::routing::put(oob::set_rule))
        .route("/v1/certificates", get(oob::certificates))
        .route("/v1/mail", get(oob::mailbox))
        .route("/v1/offers", post(oob::deposit_offer))
        .route("/v1/trustee/settle", post(oob::settle))
        .route(
            "/v1/trustee/credit/{user}",
            get(oob::trustee_credit).put(oob::set_trustee_limit),
        )
        .route(
            "/v1/products",
            post(delivery::create_product).get(delivery::products),
        )
        .route(
            "/v1/products/{id}",
            get(delivery::product).delete(delivery::withdraw_product),
        )
        .route("/v1/products/{id}/publish", post(delivery::publish_product))
        .route("/v1/sales", post(delivery::buy))
        .route("/v1/sales/pay", post(delivery::pay))
        .route("/v1/sales/{id}", get(delivery::sale))
        .route(
            "/v1/sales/by-reference/{code}",
            get(delivery::sale_by_reference),
        )
        .route("/v1/sales/{id}/acknowledge", post(delivery::acknowledge))
        .route("/v1/sales/{id}/cancel", post(delivery::cancel))
        .route("/v1/sales/{id}/key", get(delivery::sale_key))
        .route(
            "/v1/receivers/{name}",
            axum::routing::put(delivery::set_receiver),
        )
        .route(
            "/v1/receivers/{name}/notifications",
            post(delivery::notification),
        )
        .route("/v1/pads", post(pads::sell))
        .route("/v1/pads/{pad}", get(pads::view))
        .route("/v1/pad-accounts", post(pads::open_account))
        .route("/v1/pad-accounts/{account}/show", post(pads::show_account))
        .route(
            "/v1/pad-accounts/{account}/pads",
            post(pads::buy_from_account),
        )
        .route(
            "/v1/pad-accounts/{account}/pads/{pad}/cancel",
            post(pads::cancel_account_pad),
        )
        .route(
            "/v1/pad-accounts/{account}/pads/{pad}/transfer",
            post(pads::transfer_account_pad),
        )
        .route(
            "/v1/pad-accounts/{account}/recovery",
            axum::routing::put(pad_providers::recovery),
        )
        .route(
            "/v1/pad-accounts/{account}/pads/{pad}/cancel-by-code",
            post(pad_providers::cancel_by_code),
        )
        .route(
            "/v1/pad-accounts/{account}/pads/{pad}/allow",
            axum::routing::put(pad_providers::allow),
        )
        .route(
            "/v1/pad-providers/{name}",
            axum::routing::put(pad_providers::register).get(pad_providers::provider),
        )
        .route(
            "/v1/pad-providers/{name}/requests/{request}",
            get(pad_providers::request),
        )
        .route(
            "/v1/pad-providers/{name}/replies",
            post(pad_providers::reply),
        )
        .route("/v1/pad-providers/{name}/pay", post(pad_providers::pay))
        .route(
            "/v1/pad-providers/{name}/payout-pad",
            post(pad_providers::payout_pad),
        )
        .route(
            "/v1/pad-aliases/{key}",
            axum::routing::put(pad_providers::alias),
        )
        .route("/v1/pad-settlements", post(pad_providers::settle))
        .route(
            "/v1/pad-escrows/{request}/verdict",
            post(pad_providers::verdict),
        )
        .route("/v1/pad-stock", post(pads::stock))
        .route("/v1/pad-stock/{serial}/activate", post(pads::activate))
        .route("/v1/pad-stock/{serial}/cancel", post(pads::cancel_stock))
        .route("/v1/vouchers", post(pads::issue_vouchers))
        .route("/v1/vouchers/redeem", post(pads::redeem_voucher))
        .route("/v1/vouchers/{serial}", get(pads::voucher))
        .route("/v1/vouchers/{serial}/sell", post(pads::sell_voucher))
        .route("/v1/vouchers/{serial}/cancel", post(pads::cancel_voucher))
        .route(
            "/v1/pad-tariff/{currency}",
            axum::routing::put(pads::tariff),
        )
        .route("/v1/complaints", post(delivery::complaint))
        .route("/v1/payments/{id}/refund", post(delivery::refund))
        .route("/v1/reports/sales", get(delivery::report))
        .route("/v1/receipts/node", get(receipts::node))
        .route(
            "/v1/tokens",
            post(receipts::issue_token).get(receipts::tokens),
        )
        .route("/v1/tokens/{serial}/writes", get(receipts::token_writes))
        .route(
            "/v1/warrants",
            post(receipts::add_warrant).get(receipts::warrants),
        )
        .route(
            "/v1/warrants/{serial}/revoke",
            post(receipts::revoke_warrant),
        )
        .route("/v1/receipts", post(receipts::offer).get(receipts::list))
        .route("/v1/receipts/verify", post(receipts::verify))
        .route("/v1/parties/{name}/revoke", post(receipts::revoke_party))
        .route("/v1/receipts/{transaction}", get(receipts::receipt))
        .route(
            "/v1/receipts/{transaction}/warrant",
            get(receipts::offer_warrant),
        )
        .route("/v1/receipts/{transaction}/escrow", post(receipts::escrow))
        .route("/v1/receipts/{transaction}/sign", post(receipts::sign))
        .route("/v1/receipts/{transaction}/ack", post(receipts::ack))
        .route("/v1/receipts/{transaction}/package", get(receipts::package))
        .route("/v1/arbiter/{transaction}/abort", post(receipts::abort))
        .route("/v1/arbiter/{transaction}/resolve", post(receipts::resolve))
        .route(
            "/v1/peers",
            post(federation::add_peer).get(federation::peers),
        )
        .route("/v1/peers/{peer}", get(federation::peer))
        .route("/v1/peers/{peer}/ping", post(federation::ping))
        .route("/v1/peer/messages", post(federation::receive))
        .route(
            "/v1/trading-sessions",
            post(federation::open_session).get(federation::sessions),
        )
        .route("/v1/trading-sessions/{session}", get(federation::session))
        .route(
            "/v1/trading-sessions/{session}/answer",
            post(federation::answer),
        )
        .route(
            "/v1/session-merchants/{name}",
            axum::routing::put(federation::set_merchant),
        )
        .route(
            "/v1/session-merchants/{name}/agent-key",
            axum::routing::put(federation::agent_key),
        )
        .route(
            "/v1/trading-sessions/{session}/record",
            post(federation::record),
        )
        .route("/v1/trading-sessions/{session}/end", post(federation::end))
        .route(
            "/v1/trading-sessions/{session}/verdict",
            post(federation::verdict),
        )
        .route(
            "/v1/trading-sessions/{session}/transactions",
            post(federation::next_transaction),
        )
        .route(
            "/v1/trading-sessions/{session}/receipts",
            get(federation::receipts),
        )
        .route(
            "/v1/trading-sessions/{session}/order-keys",
            post(federation::send_order_key),
        )
        .route(
            "/v1/trading-sessions/{session}/order-keys/{order}",
            get(federation::order_key),
        )
        .route(
            "/v1/trading-sessions/{session}/order-keys/{order}/escrow",
            axum::routing::put(federation::escrow).get(federation::escrowed),
        )
        .route("/v1/billing/records", get(federation::billing))
        .route("/v1/clearing", get(federation::clearing))
        .route("/v1/fx", get(federation::fx_tables))
        .route(
            "/v1/fx/{from}/{to}",
            axum::routing::put(federation::fx_publish),
        )
        // The web page (HTML for people, not part of the API document).
        .merge(web::routes())
}

/// Routes that stream large bodies (see [`router`]).
fn streaming_routes() -> Router<AppState> {
    Router::new()
        // Server-sent events last as long as the client listens: no request timeout.
        .route("/v1/transfers/changes", get(changes::transfer_changes))
        .route(
            "/v1/products/{id}/entries/{name}",
            axum::routing::put(delivery::upload_entry),
        )
        .route("/v1/sales/{id}/package", get(delivery::package))
        .route("/checkout/{sale}/package", get(web::package))
        .route("/shop/products/{id}/entries", post(web::upload))
        .route(
            "/shop/products/{id}/parts",
            get(web::part_status).put(web::put_part),
        )
}

/// The OpenAPI 3.1 document of [`router`].
pub fn openapi() -> utoipa::openapi::OpenApi {
    openapi::ApiDoc::openapi()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn call(
        app: Router,
        method: &str,
        uri: &str,
    ) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .expect("request");
        let res = app.oneshot(req).await.expect("infallible");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .expect("body");
        (
            status,
            headers,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    fn code(body: &serde_json::Value) -> &str {
        body.pointer("/error/code")
            .and_then(|c| c.as_str())
            .unwrap_or("<none>")
    }

    async fn boom() -> &'static str {
        panic!("kaboom with a secret")
    }

    fn test_app(timeout: Duration) -> Router {
        let options = HttpOptions {
            request_timeout: timeout,
            ..HttpOptions::default()
        };
        let app = Router::new()
            .route("/boom", get(boom))
            .route("/slow", get(std::future::pending::<&'static str>))
            .route("/only-post", post(|| async { "ok" }));
        layered(bounded(app, &options).fallback(ops::no_route), &options)
    }

    #[tokio::test]
    async fn a_panic_becomes_internal_without_its_message() {
        let (status, headers, body) = call(test_app(Duration::from_secs(30)), "GET", "/boom").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(code(&body), "internal");
        assert!(!body.to_string().contains("secret"), "{body}");
        assert!(
            headers.contains_key("x-request-id"),
            "request id is echoed on errors too"
        );
    }

    #[tokio::test]
    async fn a_timeout_becomes_unavailable_in_our_format() {
        // The handler never completes; the timeout layer answers.
        let (status, _, body) = call(test_app(Duration::from_millis(20)), "GET", "/slow").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(code(&body), "unavailable");
    }

    #[tokio::test]
    async fn layer_errors_are_rewritten_into_our_format() {
        let (status, headers, body) =
            call(test_app(Duration::from_secs(30)), "GET", "/only-post").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(code(&body), "method_not_allowed");
        assert_eq!(
            headers.get(header::ALLOW).and_then(|v| v.to_str().ok()),
            Some("POST")
        );
        let (status, _, body) = call(test_app(Duration::from_secs(30)), "GET", "/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(code(&body), "not_found");
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let o = HttpOptions::default();
        assert_eq!(o.body_limit_bytes, 65_536);
        assert_eq!((o.rate_limit_per_second, o.rate_limit_burst), (1000, 2000));
        assert_eq!(o.request_timeout, Duration::from_secs(30));
    }
}
