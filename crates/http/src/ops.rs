//! Operator endpoints without authentication: `/healthz`, `/metrics`, `/openapi.json`, and the
//! JSON 404 for unknown routes.
//!
//! Key decision: the health check asks the store for its row counts (one cheap query that needs a
//! working pool and the schema) rather than answering a constant `ok`: a load balancer should
//! take a node out when its database is gone. `/metrics` sets the `tally_ledger_*` gauges from the
//! same query at scrape time, so there is no background task to keep them fresh. These routes
//! reveal no per-customer data; operators are expected to expose them on loopback or behind
//! their proxy. Rejected: a separate metrics listener (one more port to configure and secure).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::dto::Health;
use crate::error::{ApiError, ErrorCode};

/// Liveness plus a store round trip.
#[utoipa::path(
    get, path = "/healthz", tag = "ops",
    responses(
        (status = 200, description = "The store answers", body = Health),
        (status = 503, description = "The store does not answer", body = Health),
    )
)]
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    match state.node.store().counts().await {
        Ok(_) => (
            StatusCode::OK,
            Json(Health {
                status: "ok".into(),
            }),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "health check: store unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Health {
                    status: "unavailable".into(),
                }),
            )
        }
    }
}

/// Who this node is: its public key and CA certificate, without an API key, so a buyer can
/// check who signed a package and a receipt holder which CA to trust.
#[utoipa::path(
    get, path = "/v1/node", tag = "ops",
    responses((status = 200, description = "The node's public key and CA certificate", body = tally_wire::ledger::NodeView))
)]
pub async fn node(State(state): State<AppState>) -> Json<tally_wire::ledger::NodeView> {
    let key = state.node.core().node_key().verifying_key();
    let ca = state.node.ca().certificate();
    Json(tally_wire::ledger::NodeView {
        node_key: key.to_hex(),
        node_key_fingerprint: key.fingerprint(),
        ca_certificate: ca.to_pem(),
        ca_fingerprint: ca.fingerprint(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    })
}

/// The ledger's row counts and the journal head as gauges (read from the database at each
/// scrape, so every node of one database reports the same figures).
pub(crate) fn store_gauges(c: &tally_store::Counts) {
    // Row counts fit an f64 exactly far beyond any realistic ledger (2^53).
    metrics::gauge!("tally_ledger_accounts").set(c.accounts as f64);
    metrics::gauge!("tally_ledger_transfers").set(c.transfers as f64);
    metrics::gauge!("tally_ledger_journal_seq").set(c.journal_seq as f64);
    metrics::gauge!("tally_store_up").set(1.0);
}

/// Prometheus text exposition.
#[utoipa::path(
    get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    match state.node.store().counts().await {
        Ok(c) => store_gauges(&c),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: store unavailable");
            metrics::gauge!("tally_store_up").set(0.0);
        }
    }
    let handle = crate::telemetry::prometheus();
    handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(
    get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> Response {
    Json(crate::openapi()).into_response()
}

/// Any route we do not have.
pub async fn no_route() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}
