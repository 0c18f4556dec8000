//! Federation over HTTP (issue [7]): the operator's peers, the one route other nodes call,
//! `POST /v1/peer/messages`, which needs no API key (the message's signature by a known
//! peer's node key is the credential), and trading sessions across operators
//! (docs/protocols/sessions.md).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tally_wire::federation::{
    AddPeerRequest, AgentKeyRequest, BillingQuery, BillingRecordView, ClearingLine,
    FxPublishRequest, FxTableView, MerchantAnswer, NextTransaction, OpenTradingSession,
    PeerMessageTaken, PeerView, PingQueued, SessionMerchantRequest, SessionMerchantView,
    SessionReceiptView, TradingSessionView, VerdictRequest,
};
use tally_wire::ledger::AccountsQuery;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Caller, IdempotencyKey};
use crate::handlers::written;

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

/// Open a trading session (a customer, at its own operator): the deposit is held on its
/// account and the initiation goes to the merchant's operator, which answers with its rate.
#[utoipa::path(
    post, path = "/v1/trading-sessions", tag = "federation",
    params(("Idempotency-Key" = String, Header, description = "Required; a retry returns the same session")),
    request_body(content = OpenTradingSession, description = "`{account, deposit, merchant, operator, lifetime_s?}`"),
    responses((status = 201, description = "The session, `held` until the merchant's operator answers", body = TradingSessionView), (status = 403, description = "forbidden: not the caller's account", body = ErrorBody), (status = 422, description = "insufficient_funds (the deposit exceeds what the account may hold), invalid_request", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn open_session(
    State(state): State<AppState>,
    Caller(by): Caller,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<OpenTradingSession>,
) -> Result<Response, ApiError> {
    let (session, replayed) = state.node.sessions().open(&by, &key.0, &body).await?;
    let location = format!("/v1/trading-sessions/{}", session.session);
    Ok(written(session, replayed, Some(location)))
}

/// Start the session's next transaction (the customer, at its operator; M4): once the one
/// before is cleared, a new deposit is held and the merchant's operator answers again with its
/// rate. The body names the transaction, which makes a retry the same step (200, the session
/// as it is).
#[utoipa::path(
    post, path = "/v1/trading-sessions/{session}/transactions", tag = "federation",
    params(("session" = String, Path, description = "`<AM node id>.<seq>`")),
    request_body(content = NextTransaction, description = "`{transaction, deposit}`"),
    responses((status = 201, description = "The session, `held` for its next transaction until the merchant's operator answers", body = TradingSessionView), (status = 200, description = "Taken before: the session as it is", body = TradingSessionView), (status = 404, description = "not_found", body = ErrorBody), (status = 409, description = "session_closed: the transaction before is not cleared", body = ErrorBody), (status = 422, description = "insufficient_funds, invalid_request: not the next transaction, started before with another deposit, another currency, too close to the session's end", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn next_transaction(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(session): ApiPath<String>,
    ApiJson(body): ApiJson<NextTransaction>,
) -> Result<Response, ApiError> {
    let (view, replayed) = state
        .node
        .sessions()
        .next_transaction(&by, &session, &body)
        .await?;
    Ok(written(view, replayed, None))
}

/// A session's receipts, one per cleared transaction, each signed by the merchant's operator
/// (the customer at its operator, the merchant at its own, or the operator): each checks
/// offline (`tally session verify-receipt`).
#[utoipa::path(
    get, path = "/v1/trading-sessions/{session}/receipts", tag = "federation",
    params(("session" = String, Path, description = "`<AM node id>.<seq>`")),
    responses((status = 200, description = "In the order of the transactions", body = Vec<SessionReceiptView>), (status = 404, description = "not_found", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn receipts(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(session): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.sessions().receipts(&by, &session).await?).into_response())
}

/// The caller's trading sessions (a customer's at its operator, a merchant's at its own);
/// the operator may name an owner.
#[utoipa::path(
    get, path = "/v1/trading-sessions", tag = "federation",
    params(AccountsQuery),
    responses((status = 200, description = "Newest first", body = Vec<TradingSessionView>), (status = 403, description = "forbidden", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn sessions(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiQuery(q): ApiQuery<AccountsQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.sessions().list(&by, q.owner.as_deref()).await?).into_response())
}

/// One trading session (its customer at the AM, its merchant at the MTA, or the operator).
#[utoipa::path(
    get, path = "/v1/trading-sessions/{session}", tag = "federation",
    params(("session" = String, Path, description = "`<AM node id>.<seq>`")),
    responses((status = 200, description = "The session", body = TradingSessionView), (status = 404, description = "not_found", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn session(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(session): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.sessions().show(&by, &session).await?).into_response())
}

/// The merchant takes or declines a session it was informed of (not needed in agent mode).
#[utoipa::path(
    post, path = "/v1/trading-sessions/{session}/answer", tag = "federation",
    params(("session" = String, Path, description = "`<AM node id>.<seq>`")),
    request_body(content = MerchantAnswer, description = "`{accept}`"),
    responses((status = 200, description = "The session, `open` or `refused`", body = TradingSessionView), (status = 404, description = "not_found", body = ErrorBody), (status = 409, description = "session_closed: not waiting for the merchant", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn answer(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(session): ApiPath<String>,
    ApiJson(body): ApiJson<MerchantAnswer>,
) -> Result<Response, ApiError> {
    Ok(Json(
        state
            .node
            .sessions()
            .answer(&by, &session, body.accept)
            .await?,
    )
    .into_response())
}

/// Let a merchant take trading sessions here (the operator, or the merchant itself with its
/// own account).
#[utoipa::path(
    put, path = "/v1/session-merchants/{name}", tag = "federation",
    params(("name" = String, Path, description = "The merchant's name, as customers' operators send it")),
    request_body(content = SessionMerchantRequest, description = "`{account, auto_ack?}`"),
    responses((status = 200, description = "The merchant", body = SessionMerchantView), (status = 403, description = "forbidden", body = ErrorBody), (status = 422, description = "invalid_request", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn set_merchant(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<SessionMerchantRequest>,
) -> Result<Response, ApiError> {
    Ok(Json(
        state
            .node
            .sessions()
            .set_merchant(&by, &name, &body)
            .await?,
    )
    .into_response())
}

/// A party's signed record of a session (M5): the customer's at its operator (forwarded to
/// the merchant's), the merchant's (from its agent) at the merchant's operator.
#[utoipa::path(
    post, path = "/v1/trading-sessions/{session}/record", tag = "federation",
    params(("session" = String, Path, description = "`<AM node id>.<seq>`")),
    request_body(content = tally_wire::federation::SessionRecordDoc, description = "A signed record of domain `tally/session-record/v1` (docs/protocols/sessions.md)"),
    responses((status = 200, description = "The session, `concluding`, `clearing` or `disputed`", body = TradingSessionView), (status = 404, description = "not_found", body = ErrorBody), (status = 409, description = "session_closed: not open", body = ErrorBody), (status = 422, description = "invalid_request (`details.field` record: not signed by the session's key, another transaction, beyond the deposit)", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn record(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(session): ApiPath<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.sessions().record(&by, &session, &body).await?).into_response())
}

/// The merchant ends the session (its agent, on the merchant's terminate; M4): the current
/// transaction concludes as it would, a next one is refused (`ended`) and the customer's
/// operator voids its hold. Taken once: the same word again answers the same.
#[utoipa::path(
    post, path = "/v1/trading-sessions/{session}/end", tag = "federation",
    params(("session" = String, Path, description = "`<AM node id>.<seq>`")),
    responses((status = 200, description = "The session, as it stands", body = TradingSessionView), (status = 404, description = "not_found: no session of this merchant", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn end(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(session): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.sessions().end(&by, &session).await?).into_response())
}

/// Settle a disputed session (the merchant's operator): the customer's operator posts the
/// customer's side of `total_minor` of the merchant's `currency` at the session's rate and
/// releases the rest, then the merchant is paid it (the session is `clearing` until the
/// customer's operator answers; nothing is paid if it no longer holds the deposit). A session
/// is settled once: the same verdict again answers the same, another is refused.
#[utoipa::path(
    post, path = "/v1/trading-sessions/{session}/verdict", tag = "federation",
    params(("session" = String, Path, description = "`<AM node id>.<seq>`")),
    request_body(content = VerdictRequest, description = "`{total_minor, currency}`"),
    responses((status = 200, description = "The session, `clearing` (or later, on a repeat)", body = TradingSessionView), (status = 403, description = "forbidden: operator only", body = ErrorBody), (status = 404, description = "not_found", body = ErrorBody), (status = 409, description = "session_closed: not disputed, or settled otherwise", body = ErrorBody), (status = 422, description = "invalid_request: beyond the deposit, negative, or not the merchant's currency", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn verdict(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(session): ApiPath<String>,
    ApiJson(body): ApiJson<VerdictRequest>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.sessions().verdict(&by, &session, &body).await?).into_response())
}

/// The customer's K1 of an order (M9), sent to the merchant's operator through its own (the
/// customer, at its operator; the session must be open).
#[utoipa::path(
    post, path = "/v1/trading-sessions/{session}/order-keys", tag = "federation",
    params(("session" = String, Path, description = "`<AM node id>.<seq>`")),
    request_body(content = tally_wire::federation::OrderKeyRequest, description = "`{order, k1}`"),
    responses((status = 202, description = "On its way to the merchant's operator", body = tally_wire::federation::OrderKeyQueued), (status = 404, description = "not_found", body = ErrorBody), (status = 409, description = "session_closed: not open; or idempotency_key_reused: another K1 for that order", body = ErrorBody), (status = 422, description = "invalid_request", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn send_order_key(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(session): ApiPath<String>,
    ApiJson(body): ApiJson<tally_wire::federation::OrderKeyRequest>,
) -> Result<Response, ApiError> {
    let order = body
        .order
        .parse::<tally_kernel::Id>()
        .map_err(|_| ApiError::invalid_field("order", "a UUID"))?;
    let queued = state
        .node
        .sessions()
        .send_order_key(&by, &session, order, &body.k1)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(queued)).into_response())
}

/// K1 of an order as this node signed it (the merchant, at its operator): `404` until the
/// customer's operator delivered it.
#[utoipa::path(
    get, path = "/v1/trading-sessions/{session}/order-keys/{order}", tag = "federation",
    params(("session" = String, Path, description = "`<AM node id>.<seq>`"), ("order" = String, Path, description = "The order's id")),
    responses((status = 200, description = "`sign(K1)^MTA`", body = tally_wire::federation::SignedOrderKey), (status = 404, description = "not_found: no such session, or its K1 has not arrived", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn order_key(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath((session, order)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    Ok(Json(
        state
            .node
            .sessions()
            .signed_order_key(&by, &session, &order)
            .await?,
    )
    .into_response())
}

/// The merchant's agent escrows K2 of the package it sent (the merchant; a re-send replaces
/// it). An arbiter obtains it from the operator in a dispute.
#[utoipa::path(
    put, path = "/v1/trading-sessions/{session}/order-keys/{order}/escrow", tag = "federation",
    params(("session" = String, Path, description = "`<AM node id>.<seq>`"), ("order" = String, Path, description = "The order's id")),
    request_body(content = tally_wire::federation::EscrowRequest, description = "`{k2, package}`"),
    responses((status = 204, description = "Escrowed"), (status = 404, description = "not_found", body = ErrorBody), (status = 422, description = "invalid_request", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn escrow(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath((session, order)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<tally_wire::federation::EscrowRequest>,
) -> Result<StatusCode, ApiError> {
    state
        .node
        .sessions()
        .escrow(&by, &session, &order, &body.k2, &body.package)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An escrowed K2, for an arbiter (the operator).
#[utoipa::path(
    get, path = "/v1/trading-sessions/{session}/order-keys/{order}/escrow", tag = "federation",
    params(("session" = String, Path, description = "`<AM node id>.<seq>`"), ("order" = String, Path, description = "The order's id")),
    responses((status = 200, description = "K2 and the package it opens", body = tally_wire::federation::EscrowView), (status = 403, description = "forbidden: operator only", body = ErrorBody), (status = 404, description = "not_found", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn escrowed(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath((session, order)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    Ok(Json(
        state
            .node
            .sessions()
            .escrowed(&by, &session, &order)
            .await?,
    )
    .into_response())
}

/// Register the key a merchant's agent signs the merchant's records with (the merchant).
#[utoipa::path(
    put, path = "/v1/session-merchants/{name}/agent-key", tag = "federation",
    params(("name" = String, Path, description = "The merchant")),
    request_body(content = AgentKeyRequest, description = "`{public_key}`"),
    responses((status = 204, description = "Registered"), (status = 403, description = "forbidden", body = ErrorBody), (status = 404, description = "not_found: no such merchant", body = ErrorBody), (status = 422, description = "invalid_request", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn agent_key(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<AgentKeyRequest>,
) -> Result<StatusCode, ApiError> {
    state
        .node
        .sessions()
        .set_agent_key(&by, &name, &body.public_key)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Records for the billing systems (operator): withdrawals (customers here) and deposits
/// (merchants here) of cleared sessions, as JSON or CSV.
#[utoipa::path(
    get, path = "/v1/billing/records", tag = "federation",
    params(BillingQuery),
    responses((status = 200, description = "Oldest first (`format=csv`: text/csv with a header line)", body = Vec<BillingRecordView>), (status = 403, description = "forbidden: operator only", body = ErrorBody), (status = 422, description = "invalid_request", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn billing(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiQuery(q): ApiQuery<BillingQuery>,
) -> Result<Response, ApiError> {
    let now = state.node.now();
    let from =
        crate::handlers::time_param("from", q.from.as_deref(), now.plus_seconds(-31 * 86_400))?;
    let to = crate::handlers::time_param("to", q.to.as_deref(), now.plus_seconds(1))?;
    let records = state.node.sessions().billing_records(&by, from, to).await?;
    match q.format.as_deref() {
        None | Some("json") => Ok(Json(records).into_response()),
        Some("csv") => {
            let mut out =
                String::from("id,kind,session,owner,account,amount_minor,currency,peer,at\n");
            for r in records {
                out.push_str(&format!(
                    "{},{},{},{},{},{},{},{},{}\n",
                    r.id,
                    r.kind,
                    r.session,
                    csv_field(&r.owner),
                    r.account,
                    r.amount_minor,
                    r.currency,
                    r.peer,
                    r.at.to_rfc3339()
                ));
            }
            Ok((
                [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
                out,
            )
                .into_response())
        }
        Some(_) => Err(ApiError::new(
            tally_wire::error::ErrorCode::InvalidRequest,
            "format: json or csv",
        )
        .with_details(serde_json::json!({"field": "format"}))),
    }
}

/// A CSV field: quoted when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// What this operator and each peer owe each other, per currency (operator): the settlement
/// report between operators.
#[utoipa::path(
    get, path = "/v1/clearing", tag = "federation",
    responses((status = 200, description = "Per peer and currency", body = Vec<ClearingLine>), (status = 403, description = "forbidden: operator only", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn clearing(
    State(state): State<AppState>,
    Caller(by): Caller,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.sessions().clearing(&by).await?).into_response())
}

/// Publish an exchange rate with a lifespan (operator, M6): the merchant's operator converts
/// sessions' deposits at its own valid table.
#[utoipa::path(
    put, path = "/v1/fx/{from}/{to}", tag = "federation",
    params(("from" = String, Path, description = "Source currency"), ("to" = String, Path, description = "Target currency")),
    request_body(content = FxPublishRequest, description = "`{rate, valid_for_s?}`"),
    responses((status = 200, description = "The signed table", body = FxTableView), (status = 403, description = "forbidden: operator only", body = ErrorBody), (status = 422, description = "invalid_request", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn fx_publish(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath((from, to)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<FxPublishRequest>,
) -> Result<Response, ApiError> {
    let table = state
        .node
        .sessions()
        .fx_publish(&by, &from, &to, &body.rate, body.valid_for_s)
        .await?;
    Ok(Json(table).into_response())
}

/// The exchange tables valid now, signed (any caller: a client keeps its operator's).
#[utoipa::path(
    get, path = "/v1/fx", tag = "federation",
    responses((status = 200, description = "Newest first per pair", body = Vec<FxTableView>)),
    security(("api_key" = []))
)]
pub async fn fx_tables(
    State(state): State<AppState>,
    Caller(_by): Caller,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.sessions().fx_tables().await?).into_response())
}
