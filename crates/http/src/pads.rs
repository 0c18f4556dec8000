//! Pads over HTTP (issue [8], `docs/protocols/pads.md`): the operator's counter sale, view and
//! tariff, and `POST /v1/pad-frames`, which needs no API key: the frame's one-time tag under
//! the pad's bytes is the credential, and the pad id is all that names the holder.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tally_wire::pads::{
    PadAccountBuyRequest, PadAccountOpenRequest, PadAccountPin, PadAccountView, PadActivateRequest,
    PadSaleRequest, PadSold, PadStockCancelRequest, PadStockRequest, PadStocked, PadTariff,
    PadTransferRequest, PadTransferred, PadView, StockView, VoucherIssueRequest,
    VoucherRedeemRequest, VoucherSellRequest, VoucherView, VouchersIssued,
};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, Caller, IDEMPOTENCY_REPLAYED, IdempotencyKey};
use crate::handlers::written;

/// Sell a pad at the operator's counter: its value is paid from `from` into the pad's own
/// value account, and the answer carries the pad file (the customer's half). A retry with the
/// same key answers the same pad.
#[utoipa::path(
    post, path = "/v1/pads", tag = "pads",
    params(("Idempotency-Key" = String, Header, description = "Required; a retry answers the same pad and file")),
    request_body(content = PadSaleRequest, description = "`{from, value_minor, currency, size, mode?, node_url}`"),
    responses((status = 201, description = "The pad and its file", body = PadSold), (status = 403, description = "forbidden: operator only", body = ErrorBody), (status = 422, description = "invalid_request (`details.field`: size, mode, value_minor, node_url), insufficient_funds, currency_mismatch", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn sell(
    State(state): State<AppState>,
    Caller(by): Caller,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<PadSaleRequest>,
) -> Result<Response, ApiError> {
    let (sold, replayed): (PadSold, bool) = state.node.pads().sell(&by, &key.0, &body).await?;
    let location = format!("/v1/pads/{}", sold.pad);
    Ok(written(sold, replayed, Some(location)))
}

/// A pad's state, cursors, value and records head (operator); never its bytes.
#[utoipa::path(
    get, path = "/v1/pads/{pad}", tag = "pads",
    params(("pad" = String, Path, description = "`pad-` and 32 hex digits")),
    responses((status = 200, description = "The pad", body = PadView), (status = 403, description = "forbidden: operator only", body = ErrorBody), (status = 404, description = "not_found", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn view(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(pad): ApiPath<String>,
) -> Result<Json<PadView>, ApiError> {
    Ok(Json(state.node.pads().view(&by, &pad).await?))
}

/// Set what pads pay in a currency (operator): per KiB of charged pad bytes, per `post`, and
/// the commission on providers' prices.
#[utoipa::path(
    put, path = "/v1/pad-tariff/{currency}", tag = "pads",
    params(("currency" = String, Path, description = "ISO-4217 code")),
    request_body(content = PadTariff),
    responses((status = 200, description = "The tariff now", body = PadTariff), (status = 403, description = "forbidden: operator only", body = ErrorBody), (status = 422, description = "invalid_request", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn tariff(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(currency): ApiPath<String>,
    ApiJson(body): ApiJson<PadTariff>,
) -> Result<Json<PadTariff>, ApiError> {
    Ok(Json(
        state.node.pads().set_tariff(&by, &currency, &body).await?,
    ))
}

/// Take an up frame from a pad's holder and answer with the down frame. The same frame sent
/// again is answered the same (`Idempotency-Replayed: true`), changing nothing.
#[utoipa::path(
    post, path = "/v1/pad-frames", tag = "pads",
    request_body(content = Vec<u8>, description = "An up frame (docs/protocols/pads.md, The frame): 51 to 65 586 bytes", content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "The down frame", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 400, description = "malformed_frame", body = ErrorBody),
        (status = 401, description = "pad_not_authentic: the tag does not verify, or no such pad", body = ErrorBody),
        (status = 403, description = "provider_not_allowed, pin_wrong (burned)", body = ErrorBody),
        (status = 404, description = "unknown_mailbox, unknown_request (burned)", body = ErrorBody),
        (status = 409, description = "pad_offset_used, pad_offset_ahead (`details.up_next`), pad_not_active: nothing changed", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 422, description = "pad_bytes_exhausted, pad_value_exhausted, malformed_request (burned, or nothing changed for a frame crossing the node's bytes)", body = ErrorBody),
    ),
)]
pub async fn frame(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let answer = state.node.pads().frame(&body).await?;
    let mut response = (StatusCode::OK, answer.reply).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if answer.replayed {
        h.insert(IDEMPOTENCY_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Issue blank voucher cards for a retailer (operator). The same key again answers the same
/// serials and codes; the codes are not stored.
#[utoipa::path(
    post, path = "/v1/vouchers", tag = "pads",
    params(("Idempotency-Key" = String, Header, description = "Required; a retry answers the same cards")),
    request_body(content = VoucherIssueRequest),
    responses((status = 201, description = "The cards, serials and codes", body = VouchersIssued), (status = 403, description = "forbidden: operator only", body = ErrorBody), (status = 422, description = "invalid_request (`details.field`: count, value_minor, retailer)", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn issue_vouchers(
    State(state): State<AppState>,
    Caller(by): Caller,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<VoucherIssueRequest>,
) -> Result<Response, ApiError> {
    let (vouchers, replayed) = state.node.pads().issue_vouchers(&by, &key.0, &body).await?;
    Ok(written(VouchersIssued { vouchers }, replayed, None))
}

/// A voucher card (the operator or its retailer).
#[utoipa::path(
    get, path = "/v1/vouchers/{serial}", tag = "pads",
    params(("serial" = String, Path, description = "`vs-` and 16 hex digits")),
    responses((status = 200, description = "The card", body = VoucherView), (status = 403, description = "forbidden", body = ErrorBody), (status = 404, description = "not_found", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn voucher(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(serial): ApiPath<String>,
) -> Result<Json<VoucherView>, ApiError> {
    Ok(Json(state.node.pads().voucher(&by, &serial).await?))
}

/// Sell a card at the till (its retailer): its value moves from `from` into the voucher
/// float. Selling it again from the same account answers the same.
#[utoipa::path(
    post, path = "/v1/vouchers/{serial}/sell", tag = "pads",
    params(("serial" = String, Path, description = "`vs-` and 16 hex digits")),
    request_body(content = VoucherSellRequest),
    responses((status = 201, description = "Sold", body = VoucherView), (status = 200, description = "Sold before, from this account", body = VoucherView), (status = 403, description = "forbidden: not its retailer, or not the caller's account", body = ErrorBody), (status = 404, description = "not_found", body = ErrorBody), (status = 409, description = "voucher_state (`details.state`)", body = ErrorBody), (status = 422, description = "insufficient_funds, currency_mismatch", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn sell_voucher(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(serial): ApiPath<String>,
    ApiJson(body): ApiJson<VoucherSellRequest>,
) -> Result<Response, ApiError> {
    let (v, replayed) = state.node.pads().sell_voucher(&by, &serial, &body).await?;
    Ok(written(v, replayed, None))
}

/// Cancel a card (operator): a blank one never sells or redeems; a sold one is refunded.
#[utoipa::path(
    post, path = "/v1/vouchers/{serial}/cancel", tag = "pads",
    params(("serial" = String, Path, description = "`vs-` and 16 hex digits")),
    responses((status = 200, description = "Cancelled", body = VoucherView), (status = 403, description = "forbidden: operator only", body = ErrorBody), (status = 404, description = "not_found", body = ErrorBody), (status = 409, description = "voucher_state: redeemed or cancelled already", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn cancel_voucher(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(serial): ApiPath<String>,
) -> Result<Json<VoucherView>, ApiError> {
    Ok(Json(state.node.pads().cancel_voucher(&by, &serial).await?))
}

/// Redeem a sold card for a new pad (no API key: the code is the credential). The same code
/// again answers the same pad and file.
#[utoipa::path(
    post, path = "/v1/vouchers/redeem", tag = "pads",
    request_body(content = VoucherRedeemRequest),
    responses((status = 201, description = "The pad and its file", body = PadSold), (status = 200, description = "Redeemed before: the same pad", body = PadSold), (status = 404, description = "not_found: no card has this code", body = ErrorBody), (status = 409, description = "voucher_state: not sold yet, or cancelled (`details.state`)", body = ErrorBody), (status = 422, description = "invalid_request (`details.field`: code — mistyped —, size, mode, node_url)", body = ErrorBody)),
)]
pub async fn redeem_voucher(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<VoucherRedeemRequest>,
) -> Result<Response, ApiError> {
    let (sold, replayed) = state.node.pads().redeem_voucher(&body).await?;
    let location = format!("/v1/pads/{}", sold.pad);
    Ok(written(sold, replayed, Some(location)))
}

/// Make a blank pad for a retailer's shelf (operator): its file goes onto media with the
/// serial printed on it; frames are refused until the retailer activates it.
#[utoipa::path(
    post, path = "/v1/pad-stock", tag = "pads",
    params(("Idempotency-Key" = String, Header, description = "Required; a retry answers the same pad")),
    request_body(content = PadStockRequest),
    responses((status = 201, description = "The serial and the pad", body = PadStocked), (status = 403, description = "forbidden: operator only", body = ErrorBody), (status = 422, description = "invalid_request (`details.field`: size, mode, node_url, retailer)", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn stock(
    State(state): State<AppState>,
    Caller(by): Caller,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<PadStockRequest>,
) -> Result<Response, ApiError> {
    let (stocked, replayed) = state.node.pads().stock(&by, &key.0, &body).await?;
    Ok(written(stocked, replayed, None))
}

/// Activate blank stock at the till (its retailer): the value is paid from the retailer's
/// account into the pad. The same activation again answers the same.
#[utoipa::path(
    post, path = "/v1/pad-stock/{serial}/activate", tag = "pads",
    params(("serial" = String, Path, description = "`ps-` and 16 hex digits")),
    request_body(content = PadActivateRequest),
    responses((status = 201, description = "Active", body = StockView), (status = 200, description = "Activated before with this value", body = StockView), (status = 403, description = "forbidden: not its retailer, or not the caller's account", body = ErrorBody), (status = 404, description = "not_found", body = ErrorBody), (status = 422, description = "invalid_request (cancelled, or active with another value), insufficient_funds, currency_mismatch", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn activate(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(serial): ApiPath<String>,
    ApiJson(body): ApiJson<PadActivateRequest>,
) -> Result<Response, ApiError> {
    let (v, replayed) = state.node.pads().activate(&by, &serial, &body).await?;
    Ok(written(v, replayed, None))
}

/// Cancel stock reported stolen (its retailer or the operator): it never activates, and a new
/// blank replaces it (answered). Again: the same replacement.
#[utoipa::path(
    post, path = "/v1/pad-stock/{serial}/cancel", tag = "pads",
    params(("serial" = String, Path, description = "`ps-` and 16 hex digits")),
    request_body(content = PadStockCancelRequest),
    responses((status = 200, description = "The replacement", body = PadStocked), (status = 403, description = "forbidden", body = ErrorBody), (status = 404, description = "not_found", body = ErrorBody), (status = 422, description = "invalid_request: the pad is active", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn cancel_stock(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(serial): ApiPath<String>,
    ApiJson(body): ApiJson<PadStockCancelRequest>,
) -> Result<Json<PadStocked>, ApiError> {
    Ok(Json(
        state.node.pads().cancel_stock(&by, &serial, &body).await?,
    ))
}

/// Open an anonymous account of pads controlled by a PIN (no API key).
#[utoipa::path(
    post, path = "/v1/pad-accounts", tag = "pads",
    request_body(content = PadAccountOpenRequest, description = "`{pin}`: 6 to 12 digits"),
    responses((status = 201, description = "The account", body = PadAccountView), (status = 422, description = "invalid_request (`details.field`: pin)", body = ErrorBody)),
)]
pub async fn open_account(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<PadAccountOpenRequest>,
) -> Result<Response, ApiError> {
    let view = state.node.pads().open_pad_account(&body).await?;
    Ok(written(view, false, None))
}

/// An account's value (its PIN in the body).
#[utoipa::path(
    post, path = "/v1/pad-accounts/{account}/show", tag = "pads",
    params(("account" = String, Path, description = "`pa-` and 32 hex digits")),
    request_body(content = PadAccountPin),
    responses((status = 200, description = "The account", body = PadAccountView), (status = 403, description = "pin_wrong (`details.attempts_left`)", body = ErrorBody), (status = 404, description = "not_found", body = ErrorBody), (status = 429, description = "pin_locked (`details.retry_after_s`)", body = ErrorBody)),
)]
pub async fn show_account(
    State(state): State<AppState>,
    ApiPath(account): ApiPath<String>,
    ApiJson(body): ApiJson<PadAccountPin>,
) -> Result<Json<PadAccountView>, ApiError> {
    Ok(Json(
        state.node.pads().pad_account(&account, &body.pin).await?,
    ))
}

/// Cancel a lost pad of the account (its PIN in the body): its value moves into the account.
#[utoipa::path(
    post, path = "/v1/pad-accounts/{account}/pads/{pad}/cancel", tag = "pads",
    params(("account" = String, Path, description = "`pa-` and 32 hex digits"), ("pad" = String, Path, description = "`pad-` and 32 hex digits")),
    request_body(content = PadAccountPin),
    responses((status = 200, description = "The account after", body = PadAccountView), (status = 403, description = "pin_wrong", body = ErrorBody), (status = 404, description = "not_found: no such account, or the pad is not the account's", body = ErrorBody), (status = 422, description = "invalid_request: cancelled already", body = ErrorBody), (status = 429, description = "pin_locked", body = ErrorBody)),
)]
pub async fn cancel_account_pad(
    State(state): State<AppState>,
    ApiPath((account, pad)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<PadAccountPin>,
) -> Result<Json<PadAccountView>, ApiError> {
    Ok(Json(
        state
            .node
            .pads()
            .cancel_account_pad(&account, &pad, &body.pin)
            .await?,
    ))
}

/// Buy a pad from the account's value (its PIN in the body); the same key answers the same pad.
#[utoipa::path(
    post, path = "/v1/pad-accounts/{account}/pads", tag = "pads",
    params(("account" = String, Path, description = "`pa-` and 32 hex digits"), ("Idempotency-Key" = String, Header, description = "Required; a retry answers the same pad")),
    request_body(content = PadAccountBuyRequest),
    responses((status = 201, description = "The pad and its file", body = PadSold), (status = 403, description = "pin_wrong", body = ErrorBody), (status = 404, description = "not_found", body = ErrorBody), (status = 422, description = "insufficient_funds, invalid_request", body = ErrorBody), (status = 429, description = "pin_locked", body = ErrorBody)),
)]
pub async fn buy_from_account(
    State(state): State<AppState>,
    ApiPath(account): ApiPath<String>,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<PadAccountBuyRequest>,
) -> Result<Response, ApiError> {
    let (sold, replayed) = state
        .node
        .pads()
        .buy_from_account(&account, &key.0, &body)
        .await?;
    Ok(written(sold, replayed, None))
}

/// Move a pad of the account to another account (the giving account's PIN in the body): the
/// answer carries the node's signed receipt.
#[utoipa::path(
    post, path = "/v1/pad-accounts/{account}/pads/{pad}/transfer", tag = "pads",
    params(("account" = String, Path, description = "`pa-` and 32 hex digits"), ("pad" = String, Path, description = "`pad-` and 32 hex digits")),
    request_body(content = PadTransferRequest, description = "`{pin, to}`"),
    responses((status = 200, description = "Moved, with the receipt", body = PadTransferred), (status = 403, description = "pin_wrong", body = ErrorBody), (status = 404, description = "not_found: no such account, or the pad is not the account's", body = ErrorBody), (status = 422, description = "invalid_request", body = ErrorBody), (status = 429, description = "pin_locked", body = ErrorBody)),
)]
pub async fn transfer_account_pad(
    State(state): State<AppState>,
    ApiPath((account, pad)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<PadTransferRequest>,
) -> Result<Json<PadTransferred>, ApiError> {
    Ok(Json(
        state
            .node
            .pads()
            .transfer_account_pad(&account, &pad, &body)
            .await?,
    ))
}
