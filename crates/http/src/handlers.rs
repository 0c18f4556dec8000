//! The `/v1` handlers: extract, call [`tally_service::Node`], map to a DTO. Nothing else.
//!
//! Key decision: handlers hold no business rules. Who may do what, namespacing idempotency keys,
//! and every money rule live in `tally-service` and `tally-ledger`; a handler only parses the
//! request shape into the service's order type (e.g. `"12.50 EUR"` into an `Amount`) and shapes
//! the answer. Writes answer 201 with a `Location`; a replay of an earlier request with the same
//! `Idempotency-Key` answers 200 with `Idempotency-Replayed: true` and the original result, so a
//! client that lost a response can retry blindly. Rejected: idempotency bookkeeping in `http`
//! (a response cache keyed by header): the ledger already stores the key with the command in
//! the same transaction, which is the only place it can be exact.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tally_kernel::Id;
use uuid::Uuid;

use crate::AppState;
use crate::dto::{
    self, AccountDto, AccountsQuery, ApiKeyDto, AuditDto, BalanceDto, EventResultDto,
    ExchangeRequest, ExchangeResponse, HistoryPage, HistoryQuery, HoldRequest, LimitQuery,
    MessageDto, NewApiKeyRequest, NewApiKeyResponse, OpenAccountRequest, PostHoldRequest,
    TransferBatchRequest, TransferBatchResponse, TransferDto, TransferPage, TransferQuery,
    TransferRequest,
};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{
    ApiJson, ApiPath, ApiQuery, Caller, IDEMPOTENCY_REPLAYED, IdempotencyKey, OptionalJson,
};

/// Default page size of list endpoints.
const LIMIT_DEFAULT: i64 = 50;

/// 201 (new) or 200 + `Idempotency-Replayed: true` (replay), with `Location` when known.
pub(crate) fn written(body: impl Serialize, replayed: bool, location: Option<String>) -> Response {
    let status = if replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut response = (status, Json(body)).into_response();
    let headers = response.headers_mut();
    if replayed {
        headers.insert(IDEMPOTENCY_REPLAYED, HeaderValue::from_static("true"));
    }
    if let Some(value) = location.and_then(|l| HeaderValue::try_from(l).ok()) {
        headers.insert(header::LOCATION, value);
    }
    response
}

fn transfer_location(t: &TransferDto) -> Option<String> {
    Some(format!("/v1/transfers/{}", t.id))
}

/// Open an account.
#[utoipa::path(
    post, path = "/v1/accounts", tag = "accounts",
    request_body = OpenAccountRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Optional; a retry with the same key returns the same account")),
    responses(
        (status = 201, description = "Opened", body = AccountDto),
        (status = 200, description = "Replay of an earlier request with the same key", body = AccountDto,
            headers(("Idempotency-Replayed" = String, description = "`true`"))),
        (status = 400, description = "malformed_json, idempotency_key_invalid", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: not for yourself, credit limit or unbounded account", body = ErrorBody),
        (status = 409, description = "idempotency_key_reused", body = ErrorBody),
        (status = 422, description = "invalid_request (e.g. unknown currency)", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn open_account(
    State(state): State<AppState>,
    Caller(by): Caller,
    key: Option<IdempotencyKey>,
    ApiJson(body): ApiJson<OpenAccountRequest>,
) -> Result<Response, ApiError> {
    let key = key.as_ref().map(|k| k.0.as_str());
    let (account, replayed) = state
        .node
        .open_account(&by, key, dto::open_account_order(body)?)
        .await?;
    let dto = AccountDto::from(account);
    let location = format!("/v1/accounts/{}", dto.id);
    Ok(written(dto, replayed, Some(location)))
}

/// List accounts (the caller's; admins: any owner's), filtered by time, the client's
/// references and code, oldest first (or reversed), up to 1,000 at a time (`after` = the last
/// one's id continues).
#[utoipa::path(
    get, path = "/v1/accounts", tag = "accounts",
    params(AccountsQuery),
    responses(
        (status = 200, description = "Accounts", body = Vec<AccountDto>),
        (status = 400, description = "invalid_request: a malformed parameter", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: another owner's accounts", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn list_accounts(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiQuery(query): ApiQuery<AccountsQuery>,
) -> Result<Json<Vec<AccountDto>>, ApiError> {
    let filter = dto::account_filter(&query)?;
    let accounts = state
        .node
        .query_accounts(&by, query.owner.as_deref(), filter)
        .await?;
    Ok(Json(accounts.into_iter().map(AccountDto::from).collect()))
}

/// One account with its balance.
#[utoipa::path(
    get, path = "/v1/accounts/{id}", tag = "accounts",
    params(("id" = Uuid, Path, description = "Account id")),
    responses(
        (status = 200, description = "The account", body = AccountDto),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 404, description = "account_not_found (also for another owner's account)", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn account(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<AccountDto>, ApiError> {
    Ok(Json(state.node.account(&by, Id(id)).await?.into()))
}

/// Recent transfers of an account, newest first.
#[utoipa::path(
    get, path = "/v1/accounts/{id}/transfers", tag = "accounts",
    params(("id" = Uuid, Path, description = "Account id"), LimitQuery),
    responses(
        (status = 200, description = "Transfers", body = Vec<TransferDto>),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 404, description = "account_not_found", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn account_transfers(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<LimitQuery>,
) -> Result<Json<Vec<TransferDto>>, ApiError> {
    let limit = query.limit.unwrap_or(LIMIT_DEFAULT);
    let transfers = state.node.account_transfers(&by, Id(id), limit).await?;
    Ok(Json(transfers.into_iter().map(TransferDto::from).collect()))
}

/// Transfers by account and side, time, the client's references and code, in either order,
/// a page at a time (`next` → `after`). Callers other than the operator name an account of
/// theirs.
#[utoipa::path(
    get, path = "/v1/transfers", tag = "transfers",
    params(TransferQuery),
    responses(
        (status = 200, description = "A page of transfers", body = TransferPage),
        (status = 400, description = "invalid_request: a malformed parameter", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 404, description = "account_not_found", body = ErrorBody),
        (status = 422, description = "invalid_request: no account named (not the operator)", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn query_transfers(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiQuery(query): ApiQuery<TransferQuery>,
) -> Result<Json<TransferPage>, ApiError> {
    let filter = dto::transfer_filter(query)?;
    let limit = filter.limit;
    let transfers = state.node.query_transfers(&by, filter).await?;
    let next = (transfers.len() as i64 == limit)
        .then(|| transfers.last().map(dto::transfer_cursor))
        .flatten();
    Ok(Json(TransferPage {
        transfers: transfers.into_iter().map(TransferDto::from).collect(),
        next,
    }))
}

/// An account's counters after each transfer (accounts opened with `history`), a page at a
/// time.
#[utoipa::path(
    get, path = "/v1/accounts/{id}/history", tag = "accounts",
    params(("id" = Uuid, Path, description = "Account id"), HistoryQuery),
    responses(
        (status = 200, description = "A page of the account's history", body = HistoryPage),
        (status = 400, description = "invalid_request: a malformed parameter", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 404, description = "account_not_found", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn account_history(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<HistoryPage>, ApiError> {
    let filter = dto::history_filter(query)?;
    let limit = filter.limit;
    let rows = state.node.account_history(&by, Id(id), filter).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| {
            rows.last()
                .map(|r| format!("{}.{}", r.journal_seq, r.ordinal))
        })
        .flatten();
    Ok(Json(HistoryPage {
        balances: rows
            .into_iter()
            .map(|r| BalanceDto::from(r.balance))
            .collect(),
        next,
    }))
}

/// Move money at once.
#[utoipa::path(
    post, path = "/v1/transfers", tag = "transfers",
    request_body = TransferRequest,
    params(("Idempotency-Key" = String, Header, description = "Required; 1 to 128 printable ASCII characters")),
    responses(
        (status = 201, description = "Posted", body = TransferDto),
        (status = 202, description = "confirmation_required: above the payer's or payee's threshold; nothing moved; `details.session` is the out-of-band session to verify, then repeat with the same Idempotency-Key", body = ErrorBody),
        (status = 200, description = "Replay: the original transfer", body = TransferDto,
            headers(("Idempotency-Replayed" = String, description = "`true`"))),
        (status = 400, description = "malformed_json, idempotency_key_required, idempotency_key_invalid", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: not your debit account", body = ErrorBody),
        (status = 404, description = "account_not_found", body = ErrorBody),
        (status = 409, description = "idempotency_key_reused, confirmation_failed", body = ErrorBody),
        (status = 422, description = "insufficient_funds, limit_exceeded, currency_mismatch, amount_not_positive, same_account, overflow, invalid_request", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn create_transfer(
    State(state): State<AppState>,
    Caller(by): Caller,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(body): ApiJson<TransferRequest>,
) -> Result<Response, ApiError> {
    let order = dto::transfer_order(body, None)?;
    let (transfer, replayed) = state.node.transfer_money(&by, &key, order).await?;
    let dto = TransferDto::from(transfer);
    let location = transfer_location(&dto);
    Ok(written(dto, replayed, location))
}

/// Decide a batch of transfer events (operator only): up to 8,189 events in one durable
/// transaction, each answered in order. Events flagged `linked` succeed only together with the
/// next one (all or none); each event's `id` is its idempotency key, so a retried batch answers
/// `exists` for what it made. A refused event is a result, not an error: the answer is 200.
#[utoipa::path(
    post, path = "/v1/transfers/batch", tag = "transfers",
    request_body = TransferBatchRequest,
    responses(
        (status = 200, description = "One result per event, in order", body = TransferBatchResponse),
        (status = 400, description = "malformed_json (an unknown field, a wrong type)", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: operator only", body = ErrorBody),
        (status = 413, description = "payload_too_large: more than 8,189 events, or more than 8 MiB", body = ErrorBody),
        (status = 422, description = "invalid_request: no events, or an event's field malformed (`details.index`, `details.field`)", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn create_transfer_batch(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiJson(body): ApiJson<TransferBatchRequest>,
) -> Result<Json<TransferBatchResponse>, ApiError> {
    let events = dto::transfer_events(&body)?;
    let batched = state.node.transfer_batch(&by, events).await?;
    Ok(Json(TransferBatchResponse {
        results: batched
            .results
            .into_iter()
            .map(EventResultDto::from)
            .collect(),
        journal_seq: batched.journal_seq,
    }))
}

/// One transfer, if the caller owns one of its accounts.
#[utoipa::path(
    get, path = "/v1/transfers/{id}", tag = "transfers",
    params(("id" = Uuid, Path, description = "Transfer id")),
    responses(
        (status = 200, description = "The transfer", body = TransferDto),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 404, description = "transfer_not_found", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn transfer(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<TransferDto>, ApiError> {
    Ok(Json(state.node.transfer(&by, Id(id)).await?.into()))
}

/// Hold money until the beneficiary posts or voids it, or it expires.
#[utoipa::path(
    post, path = "/v1/holds", tag = "holds",
    request_body = HoldRequest,
    params(("Idempotency-Key" = String, Header, description = "Required")),
    responses(
        (status = 201, description = "Pending transfer", body = TransferDto),
        (status = 202, description = "confirmation_required: above the payer's or payee's threshold; nothing moved; `details.session` is the out-of-band session to verify, then repeat with the same Idempotency-Key", body = ErrorBody),
        (status = 200, description = "Replay", body = TransferDto,
            headers(("Idempotency-Replayed" = String, description = "`true`"))),
        (status = 400, description = "malformed_json, idempotency_key_required", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden", body = ErrorBody),
        (status = 409, description = "idempotency_key_reused, confirmation_failed", body = ErrorBody),
        (status = 422, description = "insufficient_funds, invalid_request (timeout_s), …", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn create_hold(
    State(state): State<AppState>,
    Caller(by): Caller,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(body): ApiJson<HoldRequest>,
) -> Result<Response, ApiError> {
    let order = dto::hold_order(body)?;
    let (transfer, replayed) = state.node.transfer_money(&by, &key, order).await?;
    let dto = TransferDto::from(transfer);
    let location = transfer_location(&dto);
    Ok(written(dto, replayed, location))
}

/// Post a hold, all of it or `amount_minor` (the rest is released). The body may be empty.
#[utoipa::path(
    post, path = "/v1/holds/{id}/post", tag = "holds",
    request_body(content = Option<PostHoldRequest>, description = "Optional; empty posts everything"),
    params(("id" = Uuid, Path, description = "The pending transfer"),
        ("Idempotency-Key" = String, Header, description = "Required")),
    responses(
        (status = 201, description = "The post transfer", body = TransferDto),
        (status = 200, description = "Replay", body = TransferDto,
            headers(("Idempotency-Replayed" = String, description = "`true`"))),
        (status = 403, description = "forbidden: only the beneficiary posts", body = ErrorBody),
        (status = 404, description = "transfer_not_found, pending_not_found", body = ErrorBody),
        (status = 409, description = "pending_not_pending, pending_expired, idempotency_key_reused", body = ErrorBody),
        (status = 422, description = "post_exceeds_pending, amount_not_positive", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn post_hold(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(id): ApiPath<Uuid>,
    IdempotencyKey(key): IdempotencyKey,
    OptionalJson(body): OptionalJson<PostHoldRequest>,
) -> Result<Response, ApiError> {
    let (amount_minor, currency) = dto::post_amount(&body)?;
    let (transfer, replayed) = state
        .node
        .post(&by, &key, Id(id), amount_minor, currency)
        .await?;
    let dto = TransferDto::from(transfer);
    let location = transfer_location(&dto);
    Ok(written(dto, replayed, location))
}

/// Void a hold: release all of it.
#[utoipa::path(
    post, path = "/v1/holds/{id}/void", tag = "holds",
    params(("id" = Uuid, Path, description = "The pending transfer"),
        ("Idempotency-Key" = String, Header, description = "Required")),
    responses(
        (status = 201, description = "The void transfer", body = TransferDto),
        (status = 200, description = "Replay", body = TransferDto,
            headers(("Idempotency-Replayed" = String, description = "`true`"))),
        (status = 403, description = "forbidden: only the beneficiary voids", body = ErrorBody),
        (status = 404, description = "transfer_not_found, pending_not_found", body = ErrorBody),
        (status = 409, description = "pending_not_pending, pending_expired, idempotency_key_reused", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn void_hold(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(id): ApiPath<Uuid>,
    IdempotencyKey(key): IdempotencyKey,
) -> Result<Response, ApiError> {
    let (transfer, replayed) = state.node.void(&by, &key, Id(id)).await?;
    let dto = TransferDto::from(transfer);
    let location = transfer_location(&dto);
    Ok(written(dto, replayed, location))
}

/// Exchange between currencies through the operator's liquidity accounts (two linked legs).
#[utoipa::path(
    post, path = "/v1/exchanges", tag = "transfers",
    request_body = ExchangeRequest,
    params(("Idempotency-Key" = String, Header, description = "Required")),
    responses(
        (status = 201, description = "Both legs", body = ExchangeResponse),
        (status = 200, description = "Replay", body = ExchangeResponse,
            headers(("Idempotency-Replayed" = String, description = "`true`"))),
        (status = 403, description = "forbidden", body = ErrorBody),
        (status = 404, description = "account_not_found", body = ErrorBody),
        (status = 409, description = "idempotency_key_reused", body = ErrorBody),
        (status = 422, description = "no_liquidity, insufficient_funds, invalid_request (rate), …", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn exchange(
    State(state): State<AppState>,
    Caller(by): Caller,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(body): ApiJson<ExchangeRequest>,
) -> Result<Response, ApiError> {
    let (transfers, replayed) = state
        .node
        .exchange(&by, &key, dto::exchange_order(body)?)
        .await?;
    let body = ExchangeResponse {
        transfers: transfers.into_iter().map(TransferDto::from).collect(),
    };
    Ok(written(body, replayed, None))
}

/// Issue an API key (admins). The key is in this response only.
#[utoipa::path(
    post, path = "/v1/api-keys", tag = "api-keys",
    request_body = NewApiKeyRequest,
    responses(
        (status = 201, description = "The key, shown once", body = NewApiKeyResponse),
        (status = 403, description = "forbidden: operator only", body = ErrorBody),
        (status = 422, description = "invalid_request (owner, label)", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn create_api_key(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiJson(body): ApiJson<NewApiKeyRequest>,
) -> Result<Response, ApiError> {
    let label = body.label.unwrap_or_default();
    let (record, key) = state
        .node
        .issue_api_key(&by, dto::role(body.role), &body.owner, &label)
        .await?;
    let body = NewApiKeyResponse {
        id: record.id.0,
        role: record.role,
        owner: record.owner,
        label: record.label,
        key: key.expose().clone(),
    };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    // The secret must not linger in shared caches or proxies.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// List API keys without their secrets (admins).
#[utoipa::path(
    get, path = "/v1/api-keys", tag = "api-keys",
    responses(
        (status = 200, description = "Keys", body = Vec<ApiKeyDto>),
        (status = 403, description = "forbidden: operator only", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn list_api_keys(
    State(state): State<AppState>,
    Caller(by): Caller,
) -> Result<Json<Vec<ApiKeyDto>>, ApiError> {
    let keys = state.node.api_keys(&by).await?;
    Ok(Json(keys.into_iter().map(dto::api_key).collect()))
}

/// Revoke an API key (admins).
#[utoipa::path(
    delete, path = "/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = Uuid, Path, description = "API key id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 403, description = "forbidden: operator only", body = ErrorBody),
        (status = 404, description = "not_found", body = ErrorBody),
        (status = 409, description = "last_admin_key: the node's only live admin key", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    state.node.revoke_api_key(&by, Id(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Messages delivered to a development inbox (nodes started with `--dev` only).
#[utoipa::path(
    get, path = "/v1/dev/inbox/{address}", tag = "dev",
    params(("address" = String, Path, description = "Inbox name"), LimitQuery),
    responses(
        (status = 200, description = "Messages, newest first", body = Vec<MessageDto>),
        (status = 404, description = "dev_inbox_disabled", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn dev_inbox(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(address): ApiPath<String>,
    ApiQuery(query): ApiQuery<LimitQuery>,
) -> Result<Json<Vec<MessageDto>>, ApiError> {
    let limit = query.limit.unwrap_or(LIMIT_DEFAULT);
    let messages = state
        .node
        .dev_inbox(&caller.0, &address, limit)
        .await
        .map_err(ApiError::dev_inbox)?;
    Ok(Json(messages.into_iter().map(dto::message).collect()))
}

/// Replay the journal and check every balance, checkpoint and signature (admins).
#[utoipa::path(
    get, path = "/v1/ledger/audit", tag = "ledger",
    responses(
        (status = 200, description = "The audit report (`ok` false lists `problems`)", body = AuditDto),
        (status = 403, description = "forbidden: operator only", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn audit(
    State(state): State<AppState>,
    Caller(by): Caller,
) -> Result<Json<AuditDto>, ApiError> {
    Ok(Json(dto::audit(state.node.audit(&by).await?)))
}

/// A query parameter's RFC 3339 time, or `default` without it.
pub(crate) fn time_param(
    name: &str,
    value: Option<&str>,
    default: tally_kernel::Timestamp,
) -> Result<tally_kernel::Timestamp, ApiError> {
    match value {
        None => Ok(default),
        Some(v) => tally_kernel::Timestamp::parse_rfc3339(v).ok_or_else(|| {
            ApiError::bad_parameter(name, "an RFC 3339 time, e.g. 2026-11-01T00:00:00Z")
        }),
    }
}
