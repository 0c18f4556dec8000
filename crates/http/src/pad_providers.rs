//! Pads' service providers over HTTP (issue [8], `docs/protocols/pads.md`, Money and
//! Forwarding): registration, a provider's replies to forwarded requests, the operator's
//! settlement and escrow verdicts, a PIN account's allow-list of providers for a pad and its
//! recovery subscriber, and mailboxes addressed by a public key.

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use tally_wire::pads::{
    PadAccountView, PadAlias, PadAliasRequest, PadRecovery, PadRecoveryRequest,
};
use tally_wire::pads::{
    PadAllowRequest, PadAllowed, PadForwardView, PadPaid, PadPayRequest, PadPayoutRequest,
    PadProviderRequest, PadProviderView, PadReplyRequest, PadSettlement, PadSold, PadVerdict,
};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, Caller, IdempotencyKey};
use crate::handlers::written;

/// Register a service provider of pads, or change its terms (the owner of the merchant account
/// it is paid into, or the operator). Forwards to it are posted to its webhook, signed
/// (`Tally-Signature`) with a secret of its own, answered here (`webhook_secret`) and nowhere
/// else.
#[utoipa::path(
    put, path = "/v1/pad-providers/{name}", tag = "pads",
    params(("name" = String, Path, description = "1 to 64 of a-z, 0-9 and -")),
    request_body(content = PadProviderRequest, description = "`{account, price_minor, webhook, escrow?}`"),
    responses((status = 200, description = "The provider", body = PadProviderView), (status = 403, description = "forbidden: not the account's owner", body = ErrorBody), (status = 404, description = "account_not_found", body = ErrorBody), (status = 409, description = "conflict: the name belongs to another owner", body = ErrorBody), (status = 422, description = "invalid_request (`details.field`: name, price_minor, webhook, account)", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn register(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<PadProviderRequest>,
) -> Result<Json<PadProviderView>, ApiError> {
    Ok(Json(
        state
            .node
            .pads()
            .register_provider(&by, &name, &body)
            .await?,
    ))
}

/// A provider's terms (any API key).
#[utoipa::path(
    get, path = "/v1/pad-providers/{name}", tag = "pads",
    params(("name" = String, Path, description = "The provider's name")),
    responses((status = 200, description = "The provider", body = PadProviderView), (status = 404, description = "not_found", body = ErrorBody), (status = 422, description = "invalid_request", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn provider(
    State(state): State<AppState>,
    Caller(_by): Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<PadProviderView>, ApiError> {
    Ok(Json(state.node.pads().provider(&name).await?))
}

/// A request forwarded to the provider (its owner, or the operator).
#[utoipa::path(
    get, path = "/v1/pad-providers/{name}/requests/{request}", tag = "pads",
    params(("name" = String, Path, description = "The provider's name"), ("request" = String, Path, description = "`req-` and 32 hex digits")),
    responses((status = 200, description = "The request", body = PadForwardView), (status = 403, description = "forbidden", body = ErrorBody), (status = 404, description = "not_found", body = ErrorBody), (status = 422, description = "invalid_request", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn request(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath((name, request)): ApiPath<(String, String)>,
) -> Result<Json<PadForwardView>, ApiError> {
    Ok(Json(state.node.pads().forward(&by, &name, &request).await?))
}

/// The provider's reply to a forwarded request: delivered into the asking pad's mailbox
/// through the relay. A request is answered once; the call again answers `200` with
/// `Idempotency-Replayed: true`.
#[utoipa::path(
    post, path = "/v1/pad-providers/{name}/replies", tag = "pads",
    params(("name" = String, Path, description = "The provider's name")),
    request_body(content = PadReplyRequest, description = "`{request, body (base64), performed?}`"),
    responses((status = 201, description = "Delivered to the relay", body = PadForwardView), (status = 200, description = "Answered before", body = PadForwardView), (status = 403, description = "forbidden: not the provider's owner", body = ErrorBody), (status = 404, description = "not_found: no such provider or request", body = ErrorBody), (status = 422, description = "invalid_request (`details.field`: request, body)", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn reply(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<PadReplyRequest>,
) -> Result<Response, ApiError> {
    let (view, replayed) = state.node.pads().reply(&by, &name, &body).await?;
    Ok(written(view, replayed, None))
}

/// Pay out of every pad clearing account what it owes now (operator): the operator's shares
/// into its fee account per currency, each provider's into its account. Running it again
/// pays nothing twice. The node also does it every `--pad-settle-every` seconds.
#[utoipa::path(
    post, path = "/v1/pad-settlements", tag = "pads",
    responses((status = 200, description = "The transfers made", body = PadSettlement), (status = 403, description = "forbidden: operator only", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn settle(
    State(state): State<AppState>,
    Caller(by): Caller,
) -> Result<Json<PadSettlement>, ApiError> {
    Ok(Json(state.node.pads().settle(&by).await?))
}

/// Decide a disputed escrow (operator): pay the provider, or refuse (the price goes back to
/// the pad, the byte debit stays).
#[utoipa::path(
    post, path = "/v1/pad-escrows/{request}/verdict", tag = "pads",
    params(("request" = String, Path, description = "`req-` and 32 hex digits")),
    request_body(content = PadVerdict),
    responses((status = 200, description = "The escrow after", body = PadForwardView), (status = 403, description = "forbidden: operator only", body = ErrorBody), (status = 404, description = "not_found", body = ErrorBody), (status = 422, description = "invalid_request: not disputed", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn verdict(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(request): ApiPath<String>,
    ApiJson(body): ApiJson<PadVerdict>,
) -> Result<Json<PadForwardView>, ApiError> {
    Ok(Json(
        state
            .node
            .pads()
            .decide_escrow(&by, &request, body.pay)
            .await?,
    ))
}

/// Set the providers a pad of the account may pay (its PIN in the body); empty: any.
#[utoipa::path(
    put, path = "/v1/pad-accounts/{account}/pads/{pad}/allow", tag = "pads",
    params(("account" = String, Path, description = "`pa-` and 32 hex digits"), ("pad" = String, Path, description = "`pad-` and 32 hex digits")),
    request_body(content = PadAllowRequest, description = "`{pin, providers}`"),
    responses((status = 200, description = "The allow-list now", body = PadAllowed), (status = 403, description = "pin_wrong", body = ErrorBody), (status = 404, description = "not_found: no such account, or the pad is not the account's", body = ErrorBody), (status = 409, description = "pad_not_active: cancelled", body = ErrorBody), (status = 422, description = "invalid_request (`details.field`: allow)", body = ErrorBody), (status = 429, description = "pin_locked", body = ErrorBody)),
)]
pub async fn allow(
    State(state): State<AppState>,
    ApiPath((account, pad)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<PadAllowRequest>,
) -> Result<Json<PadAllowed>, ApiError> {
    Ok(Json(
        state
            .node
            .pads()
            .allow_account_pad(&account, &pad, &body)
            .await?,
    ))
}

/// The seed's reverse flow: the provider pays the holder of the pad that sent a request, from
/// its account, without learning which pad it is. The same key answers the same payment.
#[utoipa::path(
    post, path = "/v1/pad-providers/{name}/pay", tag = "pads",
    params(("name" = String, Path, description = "The provider's name"), ("Idempotency-Key" = String, Header, description = "Required; a retry answers the same payment")),
    request_body(content = PadPayRequest, description = "`{request, amount_minor}`"),
    responses((status = 201, description = "Paid", body = PadPaid), (status = 403, description = "forbidden: not the provider's owner", body = ErrorBody), (status = 404, description = "not_found: no such provider or request", body = ErrorBody), (status = 422, description = "insufficient_funds, invalid_request (`details.field`: amount_minor, request)", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn pay(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(name): ApiPath<String>,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<PadPayRequest>,
) -> Result<Response, ApiError> {
    let (paid, replayed) = state
        .node
        .pads()
        .pay_holder(&by, &name, &key.0, &body)
        .await?;
    Ok(written(paid, replayed, None))
}

/// The provider's earnings paid out in a new pad: its value from the provider's account; the
/// answer carries the pad file. The same key answers the same pad until it is used.
#[utoipa::path(
    post, path = "/v1/pad-providers/{name}/payout-pad", tag = "pads",
    params(("name" = String, Path, description = "The provider's name"), ("Idempotency-Key" = String, Header, description = "Required; a retry answers the same pad")),
    request_body(content = PadPayoutRequest, description = "`{value_minor, size, mode?, node_url}`"),
    responses((status = 201, description = "The pad and its file", body = PadSold), (status = 403, description = "forbidden: not the provider's owner", body = ErrorBody), (status = 404, description = "not_found", body = ErrorBody), (status = 422, description = "insufficient_funds, invalid_request", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn payout_pad(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(name): ApiPath<String>,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<PadPayoutRequest>,
) -> Result<Response, ApiError> {
    let (sold, replayed) = state
        .node
        .pads()
        .payout_pad(&by, &name, &key.0, &body)
        .await?;
    Ok(written(sold, replayed, None))
}

/// Name the out-of-band subscriber who may cancel the account's lost pads without the PIN
/// (its PIN in the body). The first call opens a code session on the subscriber's second
/// channel and answers `confirmation_required`; once the code is verified, the same call
/// again binds it.
#[utoipa::path(
    put, path = "/v1/pad-accounts/{account}/recovery", tag = "pads",
    params(("account" = String, Path, description = "`pa-` and 32 hex digits")),
    request_body(content = PadRecoveryRequest, description = "`{pin, user}`"),
    responses((status = 200, description = "Bound", body = PadRecovery), (status = 403, description = "pin_wrong; forbidden: the subscriber has no verified second channel; confirmation_required (`details.session`)", body = ErrorBody), (status = 404, description = "not_found", body = ErrorBody), (status = 409, description = "confirmation_failed", body = ErrorBody), (status = 422, description = "invalid_request", body = ErrorBody), (status = 429, description = "pin_locked", body = ErrorBody)),
)]
pub async fn recovery(
    State(state): State<AppState>,
    ApiPath(account): ApiPath<String>,
    ApiJson(body): ApiJson<PadRecoveryRequest>,
) -> Result<Json<PadRecovery>, ApiError> {
    let node = &state.node;
    Ok(Json(
        node.pads()
            .bind_recovery(node.oob(), &account, &body)
            .await?,
    ))
}

/// Cancel a lost pad of the account by its recovery subscriber's code, without the PIN: the
/// first call sends the code and answers `confirmation_required`; verified, the same call
/// again cancels the pad and moves its value into the account.
#[utoipa::path(
    post, path = "/v1/pad-accounts/{account}/pads/{pad}/cancel-by-code", tag = "pads",
    params(("account" = String, Path, description = "`pa-` and 32 hex digits"), ("pad" = String, Path, description = "`pad-` and 32 hex digits")),
    responses((status = 200, description = "The account after", body = PadAccountView), (status = 403, description = "forbidden: no recovery subscriber; confirmation_required (`details.session`)", body = ErrorBody), (status = 404, description = "not_found", body = ErrorBody), (status = 409, description = "confirmation_failed", body = ErrorBody), (status = 422, description = "invalid_request", body = ErrorBody)),
)]
pub async fn cancel_by_code(
    State(state): State<AppState>,
    ApiPath((account, pad)): ApiPath<(String, String)>,
) -> Result<Json<PadAccountView>, ApiError> {
    let node = &state.node;
    Ok(Json(
        node.pads()
            .cancel_by_code(node.oob(), &account, &pad)
            .await?,
    ))
}

/// Point a public key's mailbox address at a pad's mailbox (no API key: the key's signature
/// over the mailbox and a fresh time is the credential); a later claim moves it.
#[utoipa::path(
    put, path = "/v1/pad-aliases/{key}", tag = "pads",
    params(("key" = String, Path, description = "`pk-` and 64 hex digits (Ed25519)")),
    request_body(content = PadAliasRequest, description = "`{mailbox, at, signature}`"),
    responses((status = 200, description = "Where the key's messages go now", body = PadAlias), (status = 404, description = "not_found: no pad has the mailbox", body = ErrorBody), (status = 422, description = "invalid_request (`details.field`: key, mailbox, at — stale or not fresh —, signature)", body = ErrorBody)),
)]
pub async fn alias(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
    ApiJson(body): ApiJson<PadAliasRequest>,
) -> Result<Json<PadAlias>, ApiError> {
    Ok(Json(state.node.pads().claim_alias(&key, &body).await?))
}
