//! Signed receipts over HTTP (SPEC R1–R6): the node's receipt keys, tokens, warrants, the
//! receipt protocol with fair exchange, token writes and their acks, the arbiter, and the
//! receipt package. Shapes: `docs/protocols/receipts.md`; bodies are the service's own types
//! (`tally_service::receipt`).
//!
//! Key decision: the transaction id is a path segment of its own (`/v1/receipts/{transaction}`)
//! and a decimal below 2^53, so every JSON reader keeps it exact.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tally_service::receipt::{NewReceipt, NewToken, SignReceipt};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, Caller, IdempotencyKey};
use crate::handlers::written;
use axum::body::Bytes;
use tally_wire::receipts::{
    AckBody, ArbiterCase, ArbiterIdentity, ArbiterRuling, EscrowBody, OnlineVerification,
    PartyRevocation, ResolveBody, WarrantBody,
};

/// The receipt service's keys and certificates.
#[utoipa::path(
    get, path = "/v1/receipts/node", tag = "receipts",
    responses((status = 200, description = "`{server_id, server_key, server_certificate, ca_certificate, proxy_bls_key, arbiter_key}`", body = Object)),
    security(("api_key" = []))
)]
pub async fn node(State(state): State<AppState>, Caller(_by): Caller) -> Response {
    Json(state.node.receipts().node_view()).into_response()
}

/// What party B checks before signing: A's certificate and A's warrant, with its revocation
/// state (the receipt's parties only).
#[utoipa::path(
    get, path = "/v1/receipts/{transaction}/warrant", tag = "receipts",
    params(("transaction" = u64, Path, description = "The transaction")),
    responses((status = 200, description = "`{party_certificate, warrant: {serial, issuer, counterparties, not_before, not_after, revoked_at, certificate}}`", body = Object), (status = 404, description = "not_found", body = ErrorBody), (status = 422, description = "invalid_request: party A signs itself", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn offer_warrant(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(transaction): ApiPath<u64>,
) -> Result<Response, ApiError> {
    Ok(Json(
        state
            .node
            .receipts()
            .offer_warrant(&by, transaction)
            .await?,
    )
    .into_response())
}

/// Issue a token (operator): certifies the holder's keys, returns the application key once.
#[utoipa::path(
    post, path = "/v1/tokens", tag = "receipts",
    params(("Idempotency-Key" = String, Header, description = "Required; a retry returns the same token")),
    request_body(content = NewToken, description = "`{holder, role, public_key, bls_key?, slots?, days?}`"),
    responses((status = 201, description = "`{serial, holder, slots, app_key, certificate, created_at}`", body = Object), (status = 403, description = "forbidden", body = ErrorBody), (status = 422, description = "invalid_request", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn issue_token(
    State(state): State<AppState>,
    Caller(by): Caller,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<NewToken>,
) -> Result<Response, ApiError> {
    let (t, replayed) = state.node.receipts().token_issue(&by, &key.0, body).await?;
    let mut r = written(&t, replayed, None);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// Tokens: all (operator) or the caller's.
#[utoipa::path(
    get, path = "/v1/tokens", tag = "receipts",
    responses((status = 200, description = "Tokens", body = Vec<Object>)),
    security(("api_key" = []))
)]
pub async fn tokens(
    State(state): State<AppState>,
    Caller(by): Caller,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.receipts().tokens(&by).await?).into_response())
}

/// The token's writes still waiting for an ack (re-sent; each retry is counted).
#[utoipa::path(
    get, path = "/v1/tokens/{serial}/writes", tag = "receipts",
    params(("serial" = String, Path, description = "Token serial, hex")),
    responses((status = 200, description = "Receipts with their `write`", body = Vec<Object>), (status = 404, description = "not_found", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn token_writes(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(serial): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.receipts().token_writes(&by, &serial).await?).into_response())
}

/// Store a warrant the caller signed for the node's receipt key.
#[utoipa::path(
    post, path = "/v1/warrants", tag = "receipts",
    request_body(content = WarrantBody, description = "`{certificate}` (PEM)"),
    responses((status = 200, description = "The warrant", body = Object), (status = 422, description = "bad_warrant", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn add_warrant(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiJson(body): ApiJson<WarrantBody>,
) -> Result<Response, ApiError> {
    Ok(Json(
        state
            .node
            .receipts()
            .warrant_add(&by, &body.certificate)
            .await?,
    )
    .into_response())
}

/// Warrants: all (operator) or the caller's.
#[utoipa::path(
    get, path = "/v1/warrants", tag = "receipts",
    responses((status = 200, description = "Warrants", body = Vec<Object>)),
    security(("api_key" = []))
)]
pub async fn warrants(
    State(state): State<AppState>,
    Caller(by): Caller,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.receipts().warrants(&by).await?).into_response())
}

/// Revoke a warrant (its issuer or the operator).
#[utoipa::path(
    post, path = "/v1/warrants/{serial}/revoke", tag = "receipts",
    params(("serial" = String, Path, description = "Warrant serial, hex")),
    responses((status = 200, description = "The warrant", body = Object), (status = 404, description = "not_found", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn revoke_warrant(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(serial): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.receipts().warrant_revoke(&by, &serial).await?).into_response())
}

/// Offer a record for signing (party A's side).
#[utoipa::path(
    post, path = "/v1/receipts", tag = "receipts",
    params(("Idempotency-Key" = String, Header, description = "Required; a retry returns the same offer")),
    request_body(content = NewReceipt, description = "`{record, party_a, party_b, fair?, proxy_b?}`"),
    responses((status = 201, description = "The offer", body = Object), (status = 403, description = "no_warrant", body = ErrorBody), (status = 422, description = "bad_receipt / bad_certificate", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn offer(
    State(state): State<AppState>,
    Caller(by): Caller,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<NewReceipt>,
) -> Result<Response, ApiError> {
    let (r, replayed) = state.node.receipts().offer(&by, &key.0, body).await?;
    let location = format!("/v1/receipts/{}", r.transaction);
    Ok(written(r, replayed, Some(location)))
}

/// Receipts the caller is in (all for the operator).
#[utoipa::path(
    get, path = "/v1/receipts", tag = "receipts",
    responses((status = 200, description = "Receipts", body = Vec<Object>)),
    security(("api_key" = []))
)]
pub async fn list(State(state): State<AppState>, Caller(by): Caller) -> Result<Response, ApiError> {
    Ok(Json(state.node.receipts().list(&by).await?).into_response())
}

/// A receipt at any step.
#[utoipa::path(
    get, path = "/v1/receipts/{transaction}", tag = "receipts",
    params(("transaction" = u64, Path, description = "Transaction id")),
    responses((status = 200, description = "The receipt", body = Object), (status = 404, description = "not_found", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn receipt(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(tx): ApiPath<u64>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.receipts().receipt(&by, tx).await?).into_response())
}

/// B's verifiable escrow (fair exchange): A's signature is released if it verifies.
#[utoipa::path(
    post, path = "/v1/receipts/{transaction}/escrow", tag = "receipts",
    params(("transaction" = u64, Path, description = "Transaction id")),
    request_body(content = EscrowBody, description = "`{ves}`"),
    responses((status = 200, description = "The receipt with `signature_a`", body = Object), (status = 422, description = "bad_escrow (the exchange is aborted)", body = ErrorBody), (status = 409, description = "receipt_state / exchange_aborted", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn escrow(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(tx): ApiPath<u64>,
    ApiJson(body): ApiJson<EscrowBody>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.receipts().escrow(&by, tx, &body.ves).await?).into_response())
}

/// B's signature (and where to write the short receipt).
#[utoipa::path(
    post, path = "/v1/receipts/{transaction}/sign", tag = "receipts",
    params(("transaction" = u64, Path, description = "Transaction id")),
    request_body(content = SignReceipt, description = "`{signature_b, token?: {serial, challenge, slot}}`"),
    responses((status = 200, description = "The complete receipt (`core`, `write`, `receipt_number`)", body = Object), (status = 401, description = "bad_signature", body = ErrorBody), (status = 409, description = "receipt_state", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn sign(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(tx): ApiPath<u64>,
    ApiJson(body): ApiJson<SignReceipt>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.receipts().sign(&by, tx, body).await?).into_response())
}

/// B acks the secure write with its receipt number.
#[utoipa::path(
    post, path = "/v1/receipts/{transaction}/ack", tag = "receipts",
    params(("transaction" = u64, Path, description = "Transaction id")),
    request_body(content = AckBody, description = "`{receipt_number}`"),
    responses((status = 200, description = "The receipt", body = Object), (status = 422, description = "invalid_request", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn ack(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(tx): ApiPath<u64>,
    ApiJson(body): ApiJson<AckBody>,
) -> Result<Response, ApiError> {
    Ok(Json(
        state
            .node
            .receipts()
            .ack(&by, tx, body.receipt_number)
            .await?,
    )
    .into_response())
}

/// The receipt package file (verify it offline with `tally receipt verify`).
#[utoipa::path(
    get, path = "/v1/receipts/{transaction}/package", tag = "receipts",
    params(("transaction" = u64, Path, description = "Transaction id")),
    responses((status = 200, description = "The package", body = Vec<u8>, content_type = "application/octet-stream"), (status = 409, description = "receipt_state: not complete", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn package(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(tx): ApiPath<u64>,
) -> Result<Response, ApiError> {
    let bytes = state.node.receipts().package(&by, tx).await?;
    let disposition = format!("attachment; filename=\"receipt-{tx}.tally\"");
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response())
}

/// Abort a fair exchange at the arbiter (the originator).
#[utoipa::path(
    post, path = "/v1/arbiter/{transaction}/abort", tag = "receipts",
    params(("transaction" = u64, Path, description = "Transaction id")),
    responses((status = 200, description = "`{transaction, decision, signature?, receipt}`", body = Object), (status = 409, description = "receipt_state", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn abort(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(tx): ApiPath<u64>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.receipts().abort(&by, tx).await?).into_response())
}

/// Resolve a fair exchange at the arbiter: B deposits its signature, or the originator opens
/// B's verifiable escrow.
#[utoipa::path(
    post, path = "/v1/arbiter/{transaction}/resolve", tag = "receipts",
    params(("transaction" = u64, Path, description = "Transaction id")),
    request_body(content = ResolveBody, description = "`{signature_b?}` (B deposits its signature; the originator sends `{}`)"),
    responses((status = 200, description = "`{transaction, decision, signature, receipt}`", body = Object), (status = 409, description = "exchange_aborted / exchange_failed", body = ErrorBody), (status = 422, description = "bad_escrow", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn resolve(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(tx): ApiPath<u64>,
    ApiJson(body): ApiJson<ResolveBody>,
) -> Result<Response, ApiError> {
    let view = state
        .node
        .receipts()
        .resolve(&by, tx, body.signature_b.as_deref())
        .await?;
    Ok(Json(view).into_response())
}

/// Revoke a party's certificate (operator): it signs no new receipt; receipts completed before
/// stand, and online verification reports the revocation.
#[utoipa::path(
    post, path = "/v1/parties/{name}/revoke", tag = "receipts",
    params(("name" = String, Path, description = "The party (its certificate's CN)")),
    responses((status = 200, description = "The revocation (the first one, when repeated)", body = PartyRevocation), (status = 403, description = "forbidden: operator only", body = ErrorBody), (status = 404, description = "not_found: no such party", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn revoke_party(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.receipts().party_revoke(&by, &name).await?).into_response())
}

/// Verify a receipt package online: the offline checks against this node's CA, plus the
/// revocations only the node knows. No key needed: anyone holding a package may ask.
#[utoipa::path(
    post, path = "/v1/receipts/verify", tag = "receipts",
    request_body(content = Vec<u8>, description = "The package file (up to the node's body limit)", content_type = "application/octet-stream"),
    responses((status = 200, description = "`valid`, the first `problem` if it did not verify, and the revoked certificates and warrants (revoked `before_receipt`: the receipt does not stand)", body = OnlineVerification), (status = 422, description = "bad_receipt: not a package", body = ErrorBody), (status = 413, description = "payload_too_large", body = ErrorBody))
)]
pub async fn verify(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    Ok(Json(state.node.receipts().verify_online(&body).await?).into_response())
}

/// An arbiter node's key (a receipt node's parties escrow to the key in `GET
/// /v1/receipts/node`).
#[utoipa::path(
    get, path = "/v1/arbiter/key", tag = "receipts",
    responses((status = 200, description = "`{arbiter_key}`", body = ArbiterIdentity), (status = 404, description = "disabled: not an arbiter node", body = ErrorBody))
)]
pub async fn arbiter_key(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(state.node.receipts().arbiter_identity()?).into_response())
}

/// Arbiter node: rule on one fair exchange of a receipt node it trusts (any API key of this
/// node; the receipt node's operator holds one).
#[utoipa::path(
    post, path = "/v1/arbiter/decide", tag = "receipts",
    request_body(content = ArbiterCase, description = "Fields 1–7, A's certificate and warrant, B's certificate (DER hex) and what is asked"),
    responses((status = 200, description = "The standing decision, the signature handed out or why the request was refused", body = ArbiterRuling), (status = 404, description = "disabled: not an arbiter node", body = ErrorBody), (status = 422, description = "bad_certificate, bad_warrant, bad_signature, bad_escrow, invalid_request", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn arbiter_decide(
    State(state): State<AppState>,
    Caller(_by): Caller,
    ApiJson(body): ApiJson<ArbiterCase>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.receipts().arbitrate(&body).await?).into_response())
}

/// Arbiter node, for party B itself (no key: B's signature over the fields authenticates the
/// request): resolve a fair exchange the receipt node does not forward. Only
/// `resolve_by_client` is taken here.
#[utoipa::path(
    post, path = "/v1/arbiter/resolve", tag = "receipts",
    request_body(content = ArbiterCase, description = "The case with `ask.kind = resolve_by_client`: B's signature and A's escrow as the receipt node showed them"),
    responses((status = 200, description = "The standing decision and A's signature when resolved", body = ArbiterRuling), (status = 403, description = "forbidden: another ask", body = ErrorBody), (status = 404, description = "disabled: not an arbiter node", body = ErrorBody), (status = 422, description = "bad_certificate, bad_warrant, invalid_request", body = ErrorBody))
)]
pub async fn arbiter_resolve_for_b(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ArbiterCase>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.receipts().arbitrate_for_b(&body).await?).into_response())
}
