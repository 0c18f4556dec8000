//! Federation over HTTP (issue [7]): the operator's peers, and the one route other nodes call,
//! `POST /v1/peer/messages`, which needs no API key: the message's signature by a known
//! peer's node key is the credential (docs/protocols/sessions.md).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tally_wire::federation::{AddPeerRequest, PeerMessageTaken, PeerView, PingQueued};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, Caller};

/// Add a peer node, or change its name or URL (operator). Its key must match the fingerprint.
#[utoipa::path(
    post, path = "/v1/peers", tag = "federation",
    request_body(content = AddPeerRequest, description = "The peer's name here, base URL, node key and the fingerprint its operator gave"),
    responses((status = 200, description = "The peer", body = PeerView), (status = 403, description = "forbidden: operator only", body = ErrorBody), (status = 422, description = "invalid_request (`details.field`: fingerprint, public_key, url, name)", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn add_peer(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiJson(body): ApiJson<AddPeerRequest>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.federation().add_peer(&by, &body).await?).into_response())
}

/// The peers, with the traffic to and from each (operator).
#[utoipa::path(
    get, path = "/v1/peers", tag = "federation",
    responses((status = 200, description = "The peers by name", body = Vec<PeerView>), (status = 403, description = "forbidden: operator only", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn peers(
    State(state): State<AppState>,
    Caller(by): Caller,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.federation().peers(&by).await?).into_response())
}

/// One peer, by node id or name (operator).
#[utoipa::path(
    get, path = "/v1/peers/{peer}", tag = "federation",
    params(("peer" = String, Path, description = "Node id or name")),
    responses((status = 200, description = "The peer", body = PeerView), (status = 403, description = "forbidden: operator only", body = ErrorBody), (status = 404, description = "not_found", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn peer(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(peer): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.federation().peer(&by, &peer).await?).into_response())
}

/// Send the peer a `ping` (operator): it answers with a `pong`, both counted in `GET
/// /v1/peers/{peer}`.
#[utoipa::path(
    post, path = "/v1/peers/{peer}/ping", tag = "federation",
    params(("peer" = String, Path, description = "Node id or name")),
    responses((status = 202, description = "Queued in the outbox", body = PingQueued), (status = 403, description = "forbidden: operator only", body = ErrorBody), (status = 404, description = "not_found", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn ping(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(peer): ApiPath<String>,
) -> Result<Response, ApiError> {
    let queued = state.node.federation().ping(&by, &peer).await?;
    Ok((StatusCode::ACCEPTED, Json(queued)).into_response())
}

/// A sealed message from a peer node (no API key: the signature is the credential). Taken
/// once: a repeat of its id is answered as a duplicate and applies nothing.
#[utoipa::path(
    post, path = "/v1/peer/messages", tag = "federation",
    request_body(content = tally_wire::federation::SealedMessageDoc, description = "A signed record of domain `tally/peer-message/v1`, at most 64 KiB (docs/protocols/sessions.md)"),
    responses((status = 200, description = "Taken, now or before (`duplicate`)", body = PeerMessageTaken), (status = 403, description = "peer_refused (`details.reason`: malformed, wrong_domain, unknown_peer, bad_signature, not_from_signer, not_for_me, stale, bad_kind, unknown_kind, id_reused)", body = ErrorBody), (status = 413, description = "payload_too_large", body = ErrorBody)),
)]
pub async fn receive(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let taken: PeerMessageTaken = state.node.receive_peer_message(&body).await?;
    Ok(Json(taken).into_response())
}
