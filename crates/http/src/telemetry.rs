//! The process-wide Prometheus recorder.
//!
//! Key decision: `metrics` has one global recorder per process, so it is installed once behind a
//! `OnceLock` the first time a router is built; later routers (tests build many, a server may
//! build one per listener) reuse the handle. If something else installed a recorder first, we
//! log a warning and render from a private recorder instead of panicking: `/metrics` then shows
//! only what that recorder sees, which is better than a node that will not start. Rejected: the
//! exporter's own HTTP listener (default features; one more port) and a push gateway.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Request latency buckets, in seconds: 1 ms to 10 s.
const LATENCY_BUCKETS_S: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The name of the request latency histogram.
pub const REQUEST_DURATION: &str = "tally_http_request_duration_seconds";
/// The name of the request counter.
pub const REQUESTS: &str = "tally_http_requests_total";
/// The name of the error counter (by stable error code).
pub const ERRORS: &str = "tally_http_errors_total";

/// The name of the counter of connections closed at once because too many were open.
pub const REFUSED_CONNECTIONS: &str = "tally_http_connections_refused_total";

/// Counts a connection closed at once because too many were open.
pub fn count_refused_connection() {
    metrics::counter!(REFUSED_CONNECTIONS).increment(1);
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The handle to render `/metrics` from, installing the recorder on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        let builder = match PrometheusBuilder::new().set_buckets_for_metric(
            Matcher::Full(REQUEST_DURATION.to_string()),
            LATENCY_BUCKETS_S,
        ) {
            Ok(b) => b,
            // Only an empty bucket list is refused; ours is a non-empty constant.
            Err(_) => PrometheusBuilder::new(),
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "a metrics recorder was already installed; /metrics shows only HTTP-local metrics"
            );
        }
        describe();
        handle
    })
}

fn describe() {
    metrics::describe_counter!(REQUESTS, "HTTP requests by method, route and status");
    metrics::describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "HTTP request latency by method, route and status"
    );
    metrics::describe_counter!(ERRORS, "HTTP error responses by stable error code");
    metrics::describe_counter!(
        REFUSED_CONNECTIONS,
        "Connections closed at once because --max-connections were open"
    );
    metrics::describe_gauge!(
        "tally_ledger_accounts",
        "Accounts in the ledger (at scrape time)"
    );
    metrics::describe_gauge!(
        "tally_ledger_transfers",
        "Transfer rows in the ledger (at scrape time)"
    );
    metrics::describe_gauge!(
        "tally_ledger_journal_seq",
        "Last journal sequence number (at scrape time)"
    );
    metrics::describe_gauge!(
        "tally_store_up",
        "1 when the store answered the last scrape"
    );
}
