//! Out-of-band authentication over HTTP (SPEC A1–A7): the subscriber directory, sessions,
//! their confirmation, and what verified sessions leave behind (tokens, certificates, mail,
//! registers).
//!
//! Key decision: confirming a session (`/v1/oob/sessions/{session}/verify`, `…/cancel`,
//! `GET …/{session}`) needs no API key. The 128-bit session number is channel A's capability
//! and the code is channel B's proof; the person typing the code on a merchant's terminal or
//! on the node's web page has no API key. Brute force is bounded per session (attempts), per
//! address (sessions per window, decided in the database) and per peer (the rate limiter).
//! Everything else needs an API key. Bodies are the service's own types, so the shapes are
//! documented once, in `tally_service::oob`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tally_kernel::Id;
use tally_service::oob::{OpenSession, Opened};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Caller, IdempotencyKey, bearer};
use crate::handlers::written;
use tally_wire::oob::{
    AddressRequest, CertificateRequest, IssuedCertificate, OfferDeposited, OfferRequest,
    PeriodQuery, RuleRequest, SettleRequest, Settlement, SubscriberRequest, TrusteeCredit,
    TrusteeLimitRequest, UserQuery, VerifyRequest, VerifyResponse, WhoAmI,
};

use crate::handlers::time_param;

/// Add a subscriber or set its stored account.
#[utoipa::path(
    post, path = "/v1/subscribers/{user}", tag = "oob",
    params(("user" = String, Path, description = "The user")),
    request_body(content = SubscriberRequest, description = "`{\"contract_account\": uuid?}`"),
    responses((status = 204, description = "Stored"), (status = 403, description = "forbidden", body = ErrorBody), (status = 422, description = "invalid_request", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn upsert_subscriber(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(user): ApiPath<String>,
    ApiJson(body): ApiJson<SubscriberRequest>,
) -> Result<StatusCode, ApiError> {
    state
        .node
        .oob()
        .subscriber_upsert(&by, &user, body.contract_account.map(Id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Add a second-channel address; a code goes to it, confirm it like any session.
#[utoipa::path(
    post, path = "/v1/subscribers/{user}/addresses", tag = "oob",
    params(("user" = String, Path, description = "The user")),
    request_body(content = AddressRequest, description = "`{\"channel\": \"email|sms|webhook|dev\", \"address\"}`"),
    responses((status = 201, description = "A verification session (confirm it like any session)", body = Object), (status = 422, description = "invalid_request", body = ErrorBody), (status = 429, description = "rate_limited: too many codes for the address, the user (per day), the client address or the node", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn add_address(
    State(state): State<AppState>,
    Caller(by): Caller,
    client: Option<axum::Extension<crate::middleware::ClientAddress>>,
    ApiPath(user): ApiPath<String>,
    ApiJson(body): ApiJson<AddressRequest>,
) -> Result<Response, ApiError> {
    let client = client.and_then(|c| c.0.0);
    let view = state
        .node
        .oob()
        .address_add(&by, &user, &body.channel, &body.address, client)
        .await?;
    let location = format!("/v1/oob/sessions/{}", view.session);
    Ok(written(view, false, Some(location)))
}

/// A user's addresses.
#[utoipa::path(
    get, path = "/v1/subscribers/{user}/addresses", tag = "oob",
    params(("user" = String, Path, description = "The user")),
    responses((status = 200, description = "The addresses", body = Vec<Object>), (status = 403, description = "forbidden", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn addresses(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(user): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.oob().addresses(&by, &user).await?).into_response())
}

/// Issue a certificate naming the user's channel B address (operator only).
#[utoipa::path(
    post, path = "/v1/subscribers/{user}/certificate", tag = "oob",
    params(("user" = String, Path, description = "The user")),
    request_body(content = CertificateRequest, description = "`{\"channel\", \"address\", \"days\"?}`"),
    responses((status = 201, description = "`{certificate, private_key}` (PEM)", body = Object), (status = 403, description = "forbidden: operator only", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn issue_certificate(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(user): ApiPath<String>,
    ApiJson(body): ApiJson<CertificateRequest>,
) -> Result<Response, ApiError> {
    let (certificate, key) = state.node.oob().issue_address_certificate(
        &by,
        &user,
        &body.channel,
        &body.address,
        body.days.unwrap_or(365),
    )?;
    Ok((
        StatusCode::CREATED,
        Json(IssuedCertificate {
            certificate,
            private_key: key.expose().clone(),
        }),
    )
        .into_response())
}

/// Open a session (or, below the threshold, execute at once).
#[utoipa::path(
    post, path = "/v1/oob/sessions", tag = "oob",
    params(("Idempotency-Key" = String, Header, description = "Optional; a retry returns the same session")),
    request_body(content = OpenSession, description = "`{\"user\", \"application\": \"login|transfer|bet|payment|trustee|mail_send|mail_retrieve|declaration|offers\", …application fields, \"channel\"?, \"certificate\"?}`; see docs/protocols/oob.md"),
    responses((status = 201, description = "`{\"outcome\": \"secured\", \"session\"}` or, below the threshold, `{\"outcome\": \"normal\", \"transfer\"}`", body = Object), (status = 200, description = "Replay of an earlier request with the same key", body = Object), (status = 409, description = "idempotency_key_reused", body = ErrorBody), (status = 422, description = "invalid_request, insufficient_funds", body = ErrorBody), (status = 429, description = "rate_limited: too many sessions for the address", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn open_session(
    State(state): State<AppState>,
    Caller(by): Caller,
    key: Option<IdempotencyKey>,
    ApiJson(body): ApiJson<OpenSession>,
) -> Result<Response, ApiError> {
    let key = key.as_ref().map(|k| k.0.as_str());
    let opened = state.node.oob().open(Some(&by), key, body, None).await?;
    let (replayed, location) = match &opened {
        Opened::Secured { session, replayed } => (
            *replayed,
            Some(format!("/v1/oob/sessions/{}", session.session)),
        ),
        Opened::Normal { transfer, replayed } => {
            (*replayed, Some(format!("/v1/transfers/{}", transfer.id)))
        }
    };
    Ok(written(opened, replayed, location))
}

/// A session as channel A shows it (no API key: the number is the capability).
#[utoipa::path(
    get, path = "/v1/oob/sessions/{session}", tag = "oob",
    params(("session" = String, Path, description = "The session number (32 hex digits)")),
    responses((status = 200, description = "The session as channel A shows it", body = Object), (status = 404, description = "not_found", body = ErrorBody)),
)]
pub async fn session(
    State(state): State<AppState>,
    ApiPath(number): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.oob().session(&number).await?).into_response())
}

/// Type the code back.
#[utoipa::path(
    post, path = "/v1/oob/sessions/{session}/verify", tag = "oob",
    params(("session" = String, Path, description = "The session number (32 hex digits)")),
    request_body(content = VerifyRequest, description = "`{\"code\", \"confirm\"?: the transaction shown}`"),
    responses((status = 200, description = "Authorised: `{session, access_token?}`", body = Object), (status = 409, description = "session_closed", body = ErrorBody), (status = 410, description = "expired", body = ErrorBody), (status = 422, description = "wrong_code (`details.attempts_left`), transaction_mismatch", body = ErrorBody), (status = 423, description = "too_many_attempts", body = ErrorBody)),
)]
pub async fn verify(
    State(state): State<AppState>,
    ApiPath(number): ApiPath<String>,
    ApiJson(body): ApiJson<VerifyRequest>,
) -> Result<Response, ApiError> {
    let verified = state
        .node
        .oob()
        .verify(&number, &body.code, body.confirm.as_ref())
        .await?;
    Ok(Json(VerifyResponse {
        session: verified.session,
        access_token: verified.token.map(|t| t.expose().clone()),
    })
    .into_response())
}

/// Cancel an open session (a payment's hold is released).
#[utoipa::path(
    post, path = "/v1/oob/sessions/{session}/cancel", tag = "oob",
    params(("session" = String, Path, description = "The session number (32 hex digits)")),
    responses((status = 200, description = "Closed (a payment hold is released)", body = Object), (status = 409, description = "session_closed", body = ErrorBody)),
)]
pub async fn cancel(
    State(state): State<AppState>,
    ApiPath(number): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.oob().cancel(&number).await?).into_response())
}

/// A user's sessions.
#[utoipa::path(
    get, path = "/v1/oob/sessions", tag = "oob",
    params(("user" = String, Query, description = "Whose sessions")),
    responses((status = 200, description = "Newest first", body = Vec<Object>), (status = 403, description = "forbidden", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn sessions(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.oob().sessions(&by, &q.user).await?).into_response())
}

/// The protected resource of the login application: who the access token belongs to.
#[utoipa::path(
    get, path = "/v1/oob/whoami", tag = "oob",
    responses((status = 200, description = "`{user, expires_at}` of a login's access token (`Authorization: Bearer tally_session_…`). The token also works as a customer API key of that user on every route, until it expires or `POST /v1/oob/sign-out`", body = Object), (status = 401, description = "unauthorized", body = ErrorBody)),
)]
pub async fn whoami(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = access_token(&headers)?;
    let (user, expires_at) = state.node.oob().token_user(token).await?;
    Ok(Json(WhoAmI { user, expires_at }).into_response())
}

/// The access token of a login session a request presents.
fn access_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    bearer(headers).ok_or_else(|| {
        ApiError::new(
            crate::ErrorCode::Unauthorized,
            "send `Authorization: Bearer <access token>` from a login session",
        )
    })
}

/// Sign out: the presented access token stops working at once.
#[utoipa::path(
    post, path = "/v1/oob/sign-out", tag = "oob",
    responses((status = 204, description = "The access token is revoked"), (status = 401, description = "unauthorized: no such live token", body = ErrorBody)),
)]
pub async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let token = access_token(&headers)?;
    state.node.oob().sign_out(token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A user's certificates.
#[utoipa::path(
    get, path = "/v1/certificates", tag = "oob",
    params(("user" = String, Query, description = "Whose certificates")),
    responses((status = 200, description = "Node-signed certificates, newest first", body = Vec<Object>)),
    security(("api_key" = []))
)]
pub async fn certificates(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.oob().certificates(&by, &q.user).await?).into_response())
}

/// Mail for and from a user.
#[utoipa::path(
    get, path = "/v1/mail", tag = "oob",
    params(("user" = String, Query, description = "Whose mail")),
    responses((status = 200, description = "Mail for and from the user (bodies only once retrieved)", body = Vec<Object>)),
    security(("api_key" = []))
)]
pub async fn mailbox(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.oob().mailbox(&by, &q.user).await?).into_response())
}

/// A merchant leaves an offer in a user's mailbox.
#[utoipa::path(
    post, path = "/v1/offers", tag = "oob",
    request_body(content = OfferRequest, description = "`{\"recipient\", \"subject\", \"body\"}`"),
    responses((status = 201, description = "`{id}`", body = Object), (status = 403, description = "forbidden: merchants only", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn deposit_offer(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiJson(body): ApiJson<OfferRequest>,
) -> Result<Response, ApiError> {
    let id = state
        .node
        .oob()
        .deposit_offer(&by, &body.recipient, &body.subject, &body.body)
        .await?;
    Ok((StatusCode::CREATED, Json(OfferDeposited { id })).into_response())
}

/// A user's statement (billing register).
#[utoipa::path(
    get, path = "/v1/subscribers/{user}/statement", tag = "oob",
    params(("user" = String, Path, description = "The user"), ("from" = String, Query, description = "RFC 3339, default 31 days before `to`"), ("to" = String, Query, description = "RFC 3339, default now")),
    responses((status = 200, description = "Register lines and totals", body = Object)),
    security(("api_key" = []))
)]
pub async fn statement(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(user): ApiPath<String>,
    ApiQuery(q): ApiQuery<PeriodQuery>,
) -> Result<Response, ApiError> {
    let now = state.node.now();
    let to = time_param("to", q.to.as_deref(), now.plus_seconds(1))?;
    let from = time_param("from", q.from.as_deref(), to.plus_seconds(-31 * 86_400))?;
    Ok(Json(state.node.oob().statement(&by, &user, from, to).await?).into_response())
}

/// Set a threshold rule.
#[utoipa::path(
    put, path = "/v1/oob/rules/{owner}", tag = "oob",
    params(("owner" = String, Path, description = "The payee (or `operator` for the default), or with `side: payer` the payer")),
    request_body(content = RuleRequest, description = "`{\"secured_above\": \"50.00 EUR\", \"side\": \"payee\"}`: `side` is `payee` (payments to the owner; the default) or `payer` (payments by the owner). Above it, every path that moves the payer's money (transfers, holds, payments by reference, auto-debit) answers 202 `confirmation_required`"),
    responses((status = 204, description = "Stored"), (status = 403, description = "forbidden", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn set_rule(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(owner): ApiPath<String>,
    ApiJson(body): ApiJson<RuleRequest>,
) -> Result<StatusCode, ApiError> {
    state
        .node
        .oob()
        .set_rule(&by, &owner, body.secured_above, body.side)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// End a trustee period (operator): pay merchants their trustee payments less the fee, and
/// collect the users' debts.
#[utoipa::path(
    post, path = "/v1/trustee/settle", tag = "oob",
    request_body(content = SettleRequest, description = "`{\"until\"?: RFC 3339}`"),
    responses((status = 200, description = "The payouts made and the debts collected (both empty when run again)", body = Settlement), (status = 403, description = "forbidden: operator only", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn settle(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiJson(body): ApiJson<SettleRequest>,
) -> Result<Response, ApiError> {
    let until = time_param("until", body.until.as_deref(), state.node.now())?;
    Ok(Json(state.node.oob().settle_trustee(&by, until).await?).into_response())
}

/// Set a user's trustee limit in one currency (operator).
#[utoipa::path(
    put, path = "/v1/trustee/credit/{user}", tag = "oob",
    params(("user" = String, Path, description = "The user")),
    request_body(content = TrusteeLimitRequest, description = "The most the user may owe through the trustee; never below what it owes and holds"),
    responses((status = 200, description = "The user's credit in that currency", body = TrusteeCredit), (status = 403, description = "forbidden: operator only", body = ErrorBody), (status = 422, description = "limit_below_use (`details.used_minor`), invalid_request", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn set_trustee_limit(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(user): ApiPath<String>,
    ApiJson(body): ApiJson<TrusteeLimitRequest>,
) -> Result<Response, ApiError> {
    let credit = state
        .node
        .oob()
        .trustee_set_limit(&by, &user, body.limit)
        .await?;
    Ok(Json(credit).into_response())
}

/// A user's trustee credit per currency (the operator or the user).
#[utoipa::path(
    get, path = "/v1/trustee/credit/{user}", tag = "oob",
    params(("user" = String, Path, description = "The user")),
    responses((status = 200, description = "Limit, owed, held and available per currency (empty: no trustee credit)", body = Vec<TrusteeCredit>), (status = 403, description = "forbidden", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn trustee_credit(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(user): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.oob().trustee_credit(&by, &user).await?).into_response())
}
