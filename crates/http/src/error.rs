//! `ApiError`: the one error type every handler, extractor and middleware returns, rendered as
//! `{"error":{"code":"…","message":"…","details":{…}}}` with a stable `code`.
//!
//! Key decision: the mapping from [`ServiceError`] and [`LedgerError`] to a status and a code
//! lives here, in two exhaustive `match`es with no `_` arm, so a new domain variant does not
//! compile until someone decides what clients see for it. Codes are an enum ([`ErrorCode`]) so the
//! whole table is in one place and appears in the OpenAPI document.
//!
//! Internal failures (storage, setup, a panic) are logged here at `error` level with the real
//! cause and reach the client only as `internal` / "internal error": a database message can
//! name tables, hosts or file paths, none of which a client needs. Rejected: passing
//! `Display` of every error to the client (leaks internals), and one generic `bad_request` code
//! (clients could not tell "retry with more money" from "fix your JSON").

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tally_kernel::MoneyError;
use tally_ledger::LedgerError;
use tally_proto::delivery::notification::NotificationError;
use tally_proto::oob::OobError;
use tally_proto::pad::machine::Refusal as PadRefusal;
use tally_proto::receipt::ReceiptError;
use tally_proto::receipt::exchange::Refusal;
use tally_proto::session::envelope::EnvelopeError;
use tally_proto::session::trade::TradeError;
use tally_service::delivery::DeliveryError;
use tally_service::pad::{PadServiceError, VoucherError};
use tally_service::receipt::ReceiptServiceError;
use tally_service::{Missing, PeerRefusal, ServiceError};
use tally_store::{Conflict, StoreError};

pub use tally_wire::error::{ErrorBody, ErrorCode, ErrorDetail};

/// The status a code is sent with by default.
pub fn status_of(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// An error on its way to becoming a response.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    pub(crate) details: Option<Value>,
    retry_after_s: Option<u64>,
}

impl ApiError {
    /// `code` with its default status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status: status_of(code),
            code,
            message: message.into(),
            details: None,
            retry_after_s: None,
        }
    }

    /// Adds structured details.
    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    /// The same error with another status (for statuses a layer chose).
    pub fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// 422 `invalid_request` naming a body field.
    pub fn invalid_field(field: &str, reason: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("invalid {field}: {reason}"),
        )
        .with_details(json!({ "field": field }))
    }

    /// 400 `invalid_request` naming a path segment, query parameter or header.
    pub fn bad_parameter(name: &str, reason: impl std::fmt::Display) -> ApiError {
        ApiError::invalid_field(name, reason).with_status(StatusCode::BAD_REQUEST)
    }

    /// 429 with `Retry-After`.
    pub fn rate_limited(retry_after_s: u64) -> ApiError {
        let mut e = ApiError::new(ErrorCode::RateLimited, "too many requests; slow down")
            .with_details(json!({ "retry_after_s": retry_after_s }));
        e.retry_after_s = Some(retry_after_s);
        e
    }

    /// 500 `internal`: logs `cause` (never sent to the client).
    pub fn internal(cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(ErrorCode::Internal, "internal error")
    }

    /// 503 `unavailable`: logs `cause` (never sent to the client).
    pub fn unavailable(cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "service unavailable");
        ApiError::new(
            ErrorCode::Unavailable,
            "service unavailable; retry later with the same Idempotency-Key",
        )
    }

    /// For the dev inbox: "switched off" gets its own code.
    pub fn dev_inbox(e: ServiceError) -> ApiError {
        match e {
            ServiceError::Disabled(why) => ApiError::new(ErrorCode::DevInboxDisabled, why),
            other => ApiError::from(other),
        }
    }

    /// The body this error renders to.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.clone(),
                details: self.details.clone(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        if let Some(s) = self.retry_after_s {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.code == ErrorCode::Unauthorized {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        // For the metrics middleware: errors are counted by code as well as by status.
        response.extensions_mut().insert(self.code);
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        match e {
            ServiceError::Ledger(l) => ApiError::from(l),
            ServiceError::Money(m) => money(m),
            ServiceError::IdempotencyKeyReused => ApiError::new(
                ErrorCode::IdempotencyKeyReused,
                "idempotency key was used for another kind of request",
            ),
            // A malformed key is refused by our extractor first; this is the backstop.
            ServiceError::IdempotencyKeyInvalid(reason) => ApiError::new(
                ErrorCode::IdempotencyKeyInvalid,
                format!("invalid Idempotency-Key: {reason}"),
            ),
            ServiceError::Invalid { field, reason } => ApiError::invalid_field(field, reason),
            ServiceError::NoChannel => ApiError::invalid_field(
                "user",
                "has no verified second-channel address (of that kind)",
            ),
            ServiceError::Unauthorized => {
                ApiError::new(ErrorCode::Unauthorized, "missing or unknown API key")
            }
            ServiceError::Forbidden(why) => ApiError::new(ErrorCode::Forbidden, why),
            ServiceError::NotFound { what, id } => {
                let code = match what {
                    Missing::Account => ErrorCode::AccountNotFound,
                    Missing::Transfer => ErrorCode::TransferNotFound,
                    _ => ErrorCode::NotFound,
                };
                ApiError::new(code, format!("{what} {id} not found"))
                    .with_details(json!({ "id": id }))
            }
            ServiceError::NoLiquidity(c) => ApiError::new(
                ErrorCode::NoLiquidity,
                format!("no liquidity account for {c}; the operator must open one"),
            )
            .with_details(json!({ "currency": c.code() })),
            ServiceError::Disabled(why) => ApiError::new(ErrorCode::Disabled, why),
            ServiceError::Oob(o) => oob(o),
            ServiceError::Delivery(d) => delivery(d),
            ServiceError::Pad(p) => pad(p),
            ServiceError::Voucher(VoucherError::State(state)) => ApiError::new(
                ErrorCode::VoucherState,
                format!("the voucher is {state}; nothing changed"),
            )
            .with_details(json!({ "state": state.as_str() })),
            ServiceError::Receipt(r) => receipt(r),
            ServiceError::ConfirmationRequired(session) => {
                let message = format!(
                    "confirmation required: nothing moved yet; a code was sent to {} ({}); \
                     verify it (POST /v1/oob/sessions/{}/verify), then send this request again \
                     with the same Idempotency-Key",
                    session.address, session.channel, session.session
                );
                ApiError::new(ErrorCode::ConfirmationRequired, message)
                    .with_details(json!({ "session": session }))
            }
            ServiceError::TrusteeLimit {
                currency,
                available_minor,
            } => ApiError::new(
                ErrorCode::TrusteeLimitReached,
                format!(
                    "the user's trustee credit is used up: {} left; nothing was held",
                    tally_kernel::Amount::new(available_minor, currency)
                ),
            )
            .with_details(json!({
                "currency": currency.code(),
                "available_minor": available_minor,
            })),
            ServiceError::Trade(t) => match t {
                TradeError::Invalid(why) => ApiError::new(ErrorCode::InvalidRequest, why),
                TradeError::NotDue => ApiError::internal(&"a session timeout fed early"),
                other => ApiError::new(ErrorCode::SessionClosed, other.to_string()),
            },
            ServiceError::PeerRefused(why) => match why {
                PeerRefusal::Envelope(EnvelopeError::TooLarge) => ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    "a peer message is at most 64 KiB",
                ),
                why => ApiError::new(
                    ErrorCode::PeerRefused,
                    format!(
                        "message from another node refused ({}): nothing was applied",
                        why.as_str()
                    ),
                )
                .with_details(json!({ "reason": why.as_str() })),
            },
            ServiceError::LastAdminKey => ApiError::new(
                ErrorCode::LastAdminKey,
                "the last admin key cannot be revoked; create another admin key first",
            ),
            ServiceError::ConfirmationFailed(state) => ApiError::new(
                ErrorCode::ConfirmationFailed,
                format!(
                    "the confirmation of this request ended ({}) without a verified code: \
                     nothing moved; send the request again with a new Idempotency-Key",
                    state.as_str()
                ),
            )
            .with_details(json!({ "state": state.as_str() })),
            ServiceError::RateLimited(why) => {
                let mut e = ApiError::rate_limited(60);
                e.message = why.to_string();
                e
            }
            ServiceError::Conflict(c) => match c {
                Conflict::Limit(why) => {
                    let mut e = ApiError::rate_limited(60);
                    e.message = why.to_string();
                    e
                }
                Conflict::Moved(why) | Conflict::Revoked(why) | Conflict::Taken(why) => {
                    ApiError::new(ErrorCode::Conflict, why)
                }
            },
            ServiceError::Store(s) => ApiError::from(s),
            ServiceError::Setup(s) => ApiError::internal(&s),
            ServiceError::ArbiterUnreachable(why) => ApiError::unavailable(&why),
            ServiceError::ArbiterRefused(why) => ApiError::new(
                ErrorCode::ArbiterRefused,
                format!("the arbiter node refused: {why}"),
            ),
        }
    }
}

/// Out-of-band refusals: one code per cause, so a client can tell the user what to do.
fn pad(e: PadServiceError) -> ApiError {
    let message = e.to_string();
    match e {
        PadServiceError::MalformedFrame(_) => ApiError::new(ErrorCode::MalformedFrame, message),
        PadServiceError::NotAuthentic => ApiError::new(ErrorCode::PadNotAuthentic, message),
        PadServiceError::OffsetUsed { up_next } => ApiError::new(ErrorCode::PadOffsetUsed, message)
            .with_details(json!({ "up_next": up_next })),
        PadServiceError::OffsetAhead { up_next } => {
            ApiError::new(ErrorCode::PadOffsetAhead, message)
                .with_details(json!({ "up_next": up_next }))
        }
        PadServiceError::BytesExhausted { up_next, down_low } => {
            ApiError::new(ErrorCode::PadBytesExhausted, message)
                .with_details(json!({ "up_next": up_next, "down_low": down_low }))
        }
        PadServiceError::NotActive => ApiError::new(ErrorCode::PadNotActive, message),
        PadServiceError::PinWrong { attempts_left } => ApiError::new(ErrorCode::PinWrong, message)
            .with_details(json!({ "attempts_left": attempts_left })),
        PadServiceError::PinLocked { retry_after_s } => {
            ApiError::new(ErrorCode::PinLocked, message)
                .with_details(json!({ "retry_after_s": retry_after_s }))
        }
        PadServiceError::Refused(r) => {
            let details = serde_json::to_value(&r).unwrap_or(Value::Null);
            let (code, message) = match r {
                PadRefusal::MalformedRequest => (
                    ErrorCode::MalformedRequest,
                    "the frame's request does not decode; its pad bytes are spent".to_string(),
                ),
                PadRefusal::PadBytesExhausted { up_next, down_low } => (
                    ErrorCode::PadBytesExhausted,
                    format!(
                        "the reply would not fit the pad's bytes left (up {up_next}, down \
                         {down_low}); the frame's bytes are spent; buy a new pad"
                    ),
                ),
                PadRefusal::PadValueExhausted {
                    available_minor,
                    needed_minor,
                } => (
                    ErrorCode::PadValueExhausted,
                    format!(
                        "the pad's value ({available_minor} minor units) does not cover the \
                         request ({needed_minor}); the frame's bytes are spent; buy a new pad"
                    ),
                ),
                PadRefusal::ProviderNotAllowed => (
                    ErrorCode::ProviderNotAllowed,
                    "the provider is not registered here or not on the pad's allow-list; \
                     nothing was debited"
                        .to_string(),
                ),
                PadRefusal::PinWrong { attempts_left } => (
                    ErrorCode::PinWrong,
                    format!("wrong PIN ({attempts_left} attempts left)"),
                ),
                PadRefusal::UnknownMailbox => (
                    ErrorCode::UnknownMailbox,
                    "no pad has this mailbox address; nothing was debited".to_string(),
                ),
                PadRefusal::UnknownRequest => (
                    ErrorCode::UnknownRequest,
                    "the pad has no escrowed request of this id; nothing was debited".to_string(),
                ),
            };
            ApiError::new(code, message).with_details(details)
        }
    }
}

fn delivery(e: DeliveryError) -> ApiError {
    let message = e.to_string();
    match e {
        DeliveryError::CreditRefused(_) => ApiError::new(ErrorCode::CreditRefused, message),
        DeliveryError::WrongProductState(_) => ApiError::new(ErrorCode::ProductState, message),
        DeliveryError::TooLarge { limit } => ApiError::new(ErrorCode::PayloadTooLarge, message)
            .with_details(json!({ "limit_bytes": limit })),
        DeliveryError::BadReference(_) => ApiError::new(ErrorCode::BadReference, message),
        DeliveryError::NotReleased => ApiError::new(ErrorCode::NotReleased, message),
        DeliveryError::WrongPackage(_) => ApiError::new(ErrorCode::WrongPackage, message),
        DeliveryError::NotRefundable(_) => ApiError::new(ErrorCode::NotRefundable, message),
        DeliveryError::FilesMissing(_) => ApiError::new(ErrorCode::FilesMissing, message),
        DeliveryError::SaleClosed(state) => ApiError::new(ErrorCode::SaleClosed, message)
            .with_details(json!({ "state": state.as_str() })),
        DeliveryError::Notification(n) => match n {
            NotificationError::BadSignature => ApiError::new(ErrorCode::BadSignature, message),
            NotificationError::Stale { .. } | NotificationError::FromTheFuture { .. } => {
                ApiError::new(ErrorCode::StaleNotification, message)
            }
            NotificationError::BadHeader(_) => ApiError::new(ErrorCode::InvalidRequest, message)
                .with_status(StatusCode::BAD_REQUEST),
            NotificationError::BadBody(_) => ApiError::new(ErrorCode::InvalidRequest, message),
        },
    }
}

/// Receipt refusals: one code per cause.
fn receipt(e: ReceiptServiceError) -> ApiError {
    let message = e.to_string();
    let code = match e {
        ReceiptServiceError::Receipt(r) => match r {
            ReceiptError::BadSignature(_) => ErrorCode::BadSignature,
            ReceiptError::BadCertificate { .. } => ErrorCode::BadCertificate,
            ReceiptError::BadWarrant { .. } => ErrorCode::BadWarrant,
            ReceiptError::Malformed(_)
            | ReceiptError::UnsupportedVersion(_)
            | ReceiptError::RecordAltered
            | ReceiptError::NotPlainText(_)
            | ReceiptError::BadJournalEntry(_) => ErrorCode::BadReceipt,
        },
        ReceiptServiceError::NoWarrant(_) => ErrorCode::NoWarrant,
        ReceiptServiceError::BadWarrant(_) => ErrorCode::BadWarrant,
        ReceiptServiceError::BadEscrow(_) => ErrorCode::BadEscrow,
        ReceiptServiceError::WrongState(_) => ErrorCode::ReceiptState,
        ReceiptServiceError::Arbiter(a) => match a {
            Refusal::Aborted => ErrorCode::ExchangeAborted,
            Refusal::Failed => ErrorCode::ExchangeFailed,
            Refusal::BadEscrow => ErrorCode::BadEscrow,
        },
        ReceiptServiceError::BadWrite(_) => ErrorCode::BadWrite,
    };
    ApiError::new(code, message)
}

fn oob(e: OobError) -> ApiError {
    let message = e.to_string();
    match e {
        OobError::SessionClosed => ApiError::new(ErrorCode::SessionClosed, message),
        OobError::Expired { expires_at } => ApiError::new(ErrorCode::Expired, message)
            .with_details(json!({ "expires_at": expires_at })),
        OobError::TooManyAttempts => ApiError::new(ErrorCode::TooManyAttempts, message),
        OobError::WrongCode { attempts_left } => ApiError::new(ErrorCode::WrongCode, message)
            .with_details(json!({ "attempts_left": attempts_left })),
        OobError::TransactionMismatch => ApiError::new(ErrorCode::TransactionMismatch, message),
        OobError::ApiMisuse(why) => ApiError::internal(&why),
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Ledger(l) => ApiError::from(l),
            // Unreachable database, exhausted pool, failed transaction: the request did not
            // happen (or is safe to retry with the same key), so clients may retry.
            StoreError::Database(_) | StoreError::WriterGone => ApiError::unavailable(&e),
            StoreError::Conflict(what) => ApiError::new(ErrorCode::Conflict, what.what()),
            StoreError::Corrupt(_) | StoreError::BadUrl(_) => ApiError::internal(&e),
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> ApiError {
        let message = e.to_string();
        match e {
            LedgerError::AccountNotFound { id } => {
                ApiError::new(ErrorCode::AccountNotFound, message).with_details(json!({ "id": id }))
            }
            LedgerError::AccountExists { id } => {
                ApiError::new(ErrorCode::AccountExists, message).with_details(json!({ "id": id }))
            }
            LedgerError::AmountNotPositive { amount_minor } => {
                ApiError::new(ErrorCode::AmountNotPositive, message)
                    .with_details(json!({ "amount_minor": amount_minor }))
            }
            LedgerError::CurrencyMismatch {
                account,
                account_currency,
                currency,
            } => ApiError::new(ErrorCode::CurrencyMismatch, message).with_details(json!({
                "account": account,
                "account_currency": account_currency.code(),
                "currency": currency.code(),
            })),
            LedgerError::ExceedsCredits {
                account,
                currency,
                needed_minor,
                available_minor,
            } => ApiError::new(ErrorCode::InsufficientFunds, message).with_details(json!({
                "account": account,
                "currency": currency.code(),
                "needed_minor": needed_minor,
                "available_minor": available_minor,
            })),
            LedgerError::ExceedsDebits {
                account,
                currency,
                needed_minor,
                available_minor,
            } => ApiError::new(ErrorCode::LimitExceeded, message).with_details(json!({
                "account": account,
                "currency": currency.code(),
                "needed_minor": needed_minor,
                "available_minor": available_minor,
            })),
            // The ledger bounds the namespaced key (owner + client key).
            LedgerError::IdempotencyKeyInvalid(reason) => ApiError::new(
                ErrorCode::IdempotencyKeyInvalid,
                format!("invalid Idempotency-Key: {reason}"),
            ),
            LedgerError::Invalid { field, reason } => ApiError::invalid_field(&field, reason),
            LedgerError::IdempotencyConflict => {
                ApiError::new(ErrorCode::IdempotencyKeyReused, message)
            }
            LedgerError::Overflow { account } => ApiError::new(ErrorCode::Overflow, message)
                .with_details(json!({ "account": account })),
            LedgerError::PendingNotPending { id, state } => {
                ApiError::new(ErrorCode::PendingNotPending, message)
                    .with_details(json!({ "id": id, "state": state.as_str() }))
            }
            LedgerError::PendingExpired { id, expires_at } => {
                ApiError::new(ErrorCode::PendingExpired, message)
                    .with_details(json!({ "id": id, "expires_at": expires_at.to_rfc3339() }))
            }
            LedgerError::PendingNotFound { id } => {
                ApiError::new(ErrorCode::PendingNotFound, message).with_details(json!({ "id": id }))
            }
            LedgerError::PostExceedsPending {
                currency,
                requested_minor,
                pending_minor,
            } => ApiError::new(ErrorCode::PostExceedsPending, message).with_details(json!({
                "currency": currency.code(),
                "requested_minor": requested_minor,
                "pending_minor": pending_minor,
            })),
            LedgerError::SameAccount => ApiError::new(ErrorCode::SameAccount, message),
            LedgerError::AccountClosed { account } => {
                ApiError::new(ErrorCode::AccountClosed, message)
                    .with_details(json!({ "account": account }))
            }
            LedgerError::LimitBelowUse {
                account,
                currency,
                used_minor,
            } => ApiError::new(ErrorCode::LimitBelowUse, message).with_details(json!({
                "account": account,
                "currency": currency.code(),
                "used_minor": used_minor,
            })),
        }
    }
}

/// A [`MoneyError`] from the service names no field; the variant tells which one it was about.
fn money(e: MoneyError) -> ApiError {
    match e {
        MoneyError::UnknownCurrency(_) => ApiError::invalid_field("currency", &e),
        MoneyError::CurrencyMismatch { left, right } => {
            ApiError::new(ErrorCode::CurrencyMismatch, e.to_string())
                .with_details(json!({ "currency": left.code(), "other_currency": right.code() }))
        }
        MoneyError::Overflow | MoneyError::Malformed(_) | MoneyError::TooPrecise { .. } => {
            ApiError::invalid_field("amount", &e)
        }
        MoneyError::BadRate(_) => ApiError::invalid_field("rate", &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_match_serde() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate code {code}");
            assert_eq!(
                serde_json::to_value(code).ok(),
                Some(Value::from(code.as_str()))
            );
            // One code is not a failure: the request was taken and waits for a code (202).
            let accepted = code == ErrorCode::ConfirmationRequired;
            assert_eq!(
                status_of(code).is_client_error() || status_of(code).is_server_error(),
                !accepted,
                "{code}"
            );
        }
    }

    #[test]
    fn insufficient_funds_carries_available_amount() {
        let id = tally_kernel::Id::new();
        let e = ApiError::from(ServiceError::Ledger(LedgerError::ExceedsCredits {
            account: id,
            currency: tally_kernel::Currency::from_code("EUR").expect("EUR"),
            needed_minor: 900,
            available_minor: 500,
        }));
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.code(), ErrorCode::InsufficientFunds);
        let body = serde_json::to_value(e.body()).ok();
        let available = body
            .as_ref()
            .and_then(|b| b.pointer("/error/details/available_minor"))
            .cloned();
        assert_eq!(available, Some(Value::from(500)));
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let e = ApiError::from(ServiceError::Setup("/secret/path/ca.key unreadable".into()));
        assert_eq!(e.code(), ErrorCode::Internal);
        let body = serde_json::to_string(&e.body()).unwrap_or_default();
        assert!(!body.contains("secret"), "{body}");
        let e = ApiError::from(StoreError::Corrupt("row 17 of accounts".into()));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            !serde_json::to_string(&e.body())
                .unwrap_or_default()
                .contains("row 17")
        );
        let e = ApiError::from(StoreError::WriterGone);
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
