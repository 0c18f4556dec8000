//! The one error format of the API: `{"error":{"code":"…","message":"…","details":{…}}}` with a
//! stable `code` ([`ErrorCode`]; its snake_case name is the contract, its status the default
//! for it). Clients decide by the code, never by the message, which is for people.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Stable error codes. The string form (snake_case) is the API contract; the status is the
/// default for the code. Variants are alphabetical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadCertificate,
    BadEscrow,
    BadReceipt,
    BadWarrant,
    BadWrite,
    ExchangeAborted,
    ExchangeFailed,
    NoWarrant,
    ReceiptState,
    /// 422: a reference code with a typo (its check character does not match) or the wrong shape.
    BadReference,
    /// 401: a payment notification whose signature does not verify with the receiver's key.
    BadSignature,
    /// 422: the credit rule refused the purchase (too many unpaid orders).
    CreditRefused,
    /// 410: a product's sealed files are missing on this node; the operator must restore them.
    FilesMissing,
    /// 409: the payment released a key or was refunded already.
    NotRefundable,
    /// 409: the sale is not paid yet; its key is released on payment.
    NotReleased,
    /// 409: the product is not in the state this needs (on sale, or a draft).
    ProductState,
    /// 401: a payment notification outside the timestamp window (a replay, or a clock far off).
    StaleNotification,
    /// 422: the acknowledgement is not of this sale's package.
    WrongPackage,
    /// 202: the payment is above the payer's or payee's threshold: nothing moved yet; a code
    /// went to the payer's second channel (`details.session`). Confirm it, then send the same
    /// request again with the same `Idempotency-Key`.
    ConfirmationRequired,
    /// 409: the confirmation session of this request ended without a verified code (locked,
    /// cancelled, expired): nothing moved; send the request with a new `Idempotency-Key`.
    ConfirmationFailed,
    /// 414: the request target (path and query) is longer than the node reads.
    UriTooLong,
    /// 431: too many request headers, or too many bytes of them.
    HeadersTooLarge,
    /// 409: revoking this key would leave the node without a live admin key.
    LastAdminKey,
    /// 409: the sale is paid, expired or cancelled (`details.state`): it cannot be cancelled.
    SaleClosed,
    /// 409: an account with this id already exists.
    AccountExists,
    /// 409: the account was closed by a closing transfer; only voiding a hold on it works.
    AccountClosed,
    /// 404: no such account, or not the caller's to see.
    AccountNotFound,
    /// 422: the amount is zero or negative.
    AmountNotPositive,
    /// 422: the amount's currency differs from an account's.
    CurrencyMismatch,
    /// 409: another request changed the same thing first; read again and retry.
    Conflict,
    /// 404: the dev inbox is off (the node was not started with `--dev`).
    DevInboxDisabled,
    /// 404: a feature switched off on this node.
    Disabled,
    /// 410: the one-time code's time is up (`details.expires_at`); nothing was executed.
    Expired,
    /// 403: the caller's role may not do this.
    Forbidden,
    /// 400: the `Idempotency-Key` header is malformed (1 to 128 printable ASCII characters).
    IdempotencyKeyInvalid,
    /// 400: this operation needs an `Idempotency-Key` header.
    IdempotencyKeyRequired,
    /// 409: the `Idempotency-Key` was used before for a different request.
    IdempotencyKeyReused,
    /// 422: the debited account lacks the funds (`details.available_minor`).
    InsufficientFunds,
    /// 500: a bug or an unusable node; details are in the server log only.
    Internal,
    /// 400 or 422: a field is missing, out of range or malformed (`details.field`).
    InvalidRequest,
    /// 422: the arbiter node refused the exchange's case (or handed over a signature that does
    /// not verify); nothing was decided.
    ArbiterRefused,
    /// 403: a message from another node that this node does not take (`details.reason`:
    /// `unknown_peer`, `bad_signature`, `not_for_me`, `stale`, `unknown_kind`, …); nothing was
    /// applied.
    PeerRefused,
    /// 422: a new limit below what the account already uses (`details.used_minor`).
    LimitBelowUse,
    /// 422: crediting would exceed the credited account's bound.
    LimitExceeded,
    /// 400: the body is not JSON of the expected shape (syntax, types, unknown fields).
    MalformedJson,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 422: the operator has no liquidity account for a currency of the exchange.
    NoLiquidity,
    /// 404: no such route or thing.
    NotFound,
    /// 422: an account counter would overflow.
    Overflow,
    /// 413: the body is larger than the node accepts.
    PayloadTooLarge,
    /// 409: the hold expired before it was posted or voided.
    PendingExpired,
    /// 404: no such hold.
    PendingNotFound,
    /// 409: the hold was already posted, voided or expired.
    PendingNotPending,
    /// 422: posting more than the hold.
    PostExceedsPending,
    /// 429: too many requests from this API key or address (`Retry-After`).
    RateLimited,
    /// 422: debit and credit account are the same.
    SameAccount,
    /// 409: the out-of-band session is over (verified, cancelled) or the confirmation is a
    /// replay; nothing was executed.
    SessionClosed,
    /// 423: too many wrong codes; the session is locked and nothing was executed.
    TooManyAttempts,
    /// 422: the confirmation names another transaction than the code was sent for.
    TransactionMismatch,
    /// 404: no such transfer, or not the caller's to see.
    TransferNotFound,
    /// 422: the user's trustee credit (set by the operator) would be exceeded
    /// (`details.available_minor`); nothing was held.
    TrusteeLimitReached,
    /// 401: no or an unknown API key.
    Unauthorized,
    /// 503: the database is unreachable, the node is stopping, or the request took too long.
    Unavailable,
    /// 415: a body was sent without `Content-Type: application/json`.
    UnsupportedMediaType,
    /// 422: the code is wrong (`details.attempts_left`); nothing was executed.
    WrongCode,
    /// 400: not a pad frame (magic, version, direction, length); nothing changed.
    MalformedFrame,
    /// 401: the frame's tag does not verify, or no such pad (the same answer for both); nothing changed.
    PadNotAuthentic,
    /// 409: another frame was taken at this offset (`details.up_next`); nothing changed.
    PadOffsetUsed,
    /// 409: the frame is ahead of the next free offset (`details.up_next`): send the frames before it first; nothing changed.
    PadOffsetAhead,
    /// 422: the pad's bytes are used up (`details.up_next`, `details.down_low`); buy a new pad.
    PadBytesExhausted,
    /// 409: the pad is blank (not activated) or cancelled; nothing changed.
    PadNotActive,
    /// 422: the pad's value does not cover the request (`details.available_minor`, `details.needed_minor`); the frame's bytes are spent, nothing else.
    PadValueExhausted,
    /// 403: the provider is not registered or not on the pad's allow-list; the frame's bytes are spent, nothing else.
    ProviderNotAllowed,
    /// 404: no pad has this mailbox address; the frame's bytes are spent, nothing else.
    UnknownMailbox,
    /// 403: a wrong PIN (`details.attempts_left`); the frame's bytes are spent.
    PinWrong,
    /// 422: an authentic frame whose plaintext does not decode; its bytes are spent, nothing else.
    MalformedRequest,
    /// 404: the pad has no escrowed request of this id; the frame's bytes are spent, nothing else.
    UnknownRequest,
    /// 429: too many wrong PINs: the pad account is locked (`details.retry_after_s`); nothing
    /// changed.
    PinLocked,
    /// 409: the voucher card is not in a state that allows this (`details.state`: blank,
    /// sold, redeemed, cancelled); nothing changed.
    VoucherState,
}

impl ErrorCode {
    /// Every code, for documentation and tests.
    pub const ALL: [ErrorCode; 79] = [
        ErrorCode::SaleClosed,
        ErrorCode::LastAdminKey,
        ErrorCode::UriTooLong,
        ErrorCode::HeadersTooLarge,
        ErrorCode::ConfirmationRequired,
        ErrorCode::ConfirmationFailed,
        ErrorCode::BadCertificate,
        ErrorCode::BadEscrow,
        ErrorCode::BadReceipt,
        ErrorCode::BadWarrant,
        ErrorCode::BadWrite,
        ErrorCode::ExchangeAborted,
        ErrorCode::ExchangeFailed,
        ErrorCode::NoWarrant,
        ErrorCode::ReceiptState,
        ErrorCode::BadReference,
        ErrorCode::BadSignature,
        ErrorCode::CreditRefused,
        ErrorCode::FilesMissing,
        ErrorCode::NotRefundable,
        ErrorCode::NotReleased,
        ErrorCode::ProductState,
        ErrorCode::StaleNotification,
        ErrorCode::WrongPackage,
        ErrorCode::AccountExists,
        ErrorCode::AccountClosed,
        ErrorCode::AccountNotFound,
        ErrorCode::AmountNotPositive,
        ErrorCode::Conflict,
        ErrorCode::CurrencyMismatch,
        ErrorCode::DevInboxDisabled,
        ErrorCode::Disabled,
        ErrorCode::Expired,
        ErrorCode::Forbidden,
        ErrorCode::IdempotencyKeyInvalid,
        ErrorCode::IdempotencyKeyRequired,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::InsufficientFunds,
        ErrorCode::Internal,
        ErrorCode::InvalidRequest,
        ErrorCode::LimitBelowUse,
        ErrorCode::ArbiterRefused,
        ErrorCode::PeerRefused,
        ErrorCode::LimitExceeded,
        ErrorCode::MalformedJson,
        ErrorCode::MethodNotAllowed,
        ErrorCode::NoLiquidity,
        ErrorCode::NotFound,
        ErrorCode::Overflow,
        ErrorCode::PayloadTooLarge,
        ErrorCode::PendingExpired,
        ErrorCode::PendingNotFound,
        ErrorCode::PendingNotPending,
        ErrorCode::PostExceedsPending,
        ErrorCode::RateLimited,
        ErrorCode::SameAccount,
        ErrorCode::SessionClosed,
        ErrorCode::TooManyAttempts,
        ErrorCode::TransactionMismatch,
        ErrorCode::TransferNotFound,
        ErrorCode::TrusteeLimitReached,
        ErrorCode::Unauthorized,
        ErrorCode::Unavailable,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::WrongCode,
        ErrorCode::MalformedFrame,
        ErrorCode::PadNotAuthentic,
        ErrorCode::PadOffsetUsed,
        ErrorCode::PadOffsetAhead,
        ErrorCode::PadBytesExhausted,
        ErrorCode::PadNotActive,
        ErrorCode::PadValueExhausted,
        ErrorCode::ProviderNotAllowed,
        ErrorCode::UnknownMailbox,
        ErrorCode::PinWrong,
        ErrorCode::MalformedRequest,
        ErrorCode::UnknownRequest,
        ErrorCode::VoucherState,
        ErrorCode::PinLocked,
    ];

    /// The code of a wire string (`None` for a code this build does not know).
    pub fn from_wire(text: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadReference => "bad_reference",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::BadCertificate => "bad_certificate",
            ErrorCode::BadEscrow => "bad_escrow",
            ErrorCode::BadReceipt => "bad_receipt",
            ErrorCode::BadWarrant => "bad_warrant",
            ErrorCode::BadWrite => "bad_write",
            ErrorCode::ExchangeAborted => "exchange_aborted",
            ErrorCode::ExchangeFailed => "exchange_failed",
            ErrorCode::NoWarrant => "no_warrant",
            ErrorCode::ReceiptState => "receipt_state",
            ErrorCode::CreditRefused => "credit_refused",
            ErrorCode::FilesMissing => "files_missing",
            ErrorCode::NotRefundable => "not_refundable",
            ErrorCode::NotReleased => "not_released",
            ErrorCode::ProductState => "product_state",
            ErrorCode::StaleNotification => "stale_notification",
            ErrorCode::WrongPackage => "wrong_package",
            ErrorCode::ConfirmationRequired => "confirmation_required",
            ErrorCode::ConfirmationFailed => "confirmation_failed",
            ErrorCode::UriTooLong => "uri_too_long",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::LastAdminKey => "last_admin_key",
            ErrorCode::SaleClosed => "sale_closed",
            ErrorCode::AccountExists => "account_exists",
            ErrorCode::AccountClosed => "account_closed",
            ErrorCode::AccountNotFound => "account_not_found",
            ErrorCode::AmountNotPositive => "amount_not_positive",
            ErrorCode::Conflict => "conflict",
            ErrorCode::CurrencyMismatch => "currency_mismatch",
            ErrorCode::Expired => "expired",
            ErrorCode::SessionClosed => "session_closed",
            ErrorCode::TooManyAttempts => "too_many_attempts",
            ErrorCode::TransactionMismatch => "transaction_mismatch",
            ErrorCode::WrongCode => "wrong_code",
            ErrorCode::DevInboxDisabled => "dev_inbox_disabled",
            ErrorCode::Disabled => "disabled",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::IdempotencyKeyInvalid => "idempotency_key_invalid",
            ErrorCode::IdempotencyKeyRequired => "idempotency_key_required",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::InsufficientFunds => "insufficient_funds",
            ErrorCode::Internal => "internal",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::LimitBelowUse => "limit_below_use",
            ErrorCode::ArbiterRefused => "arbiter_refused",
            ErrorCode::PeerRefused => "peer_refused",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::NoLiquidity => "no_liquidity",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Overflow => "overflow",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::PendingExpired => "pending_expired",
            ErrorCode::PendingNotFound => "pending_not_found",
            ErrorCode::PendingNotPending => "pending_not_pending",
            ErrorCode::PostExceedsPending => "post_exceeds_pending",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::SameAccount => "same_account",
            ErrorCode::TransferNotFound => "transfer_not_found",
            ErrorCode::TrusteeLimitReached => "trustee_limit_reached",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::MalformedFrame => "malformed_frame",
            ErrorCode::PadNotAuthentic => "pad_not_authentic",
            ErrorCode::PadOffsetUsed => "pad_offset_used",
            ErrorCode::PadOffsetAhead => "pad_offset_ahead",
            ErrorCode::PadBytesExhausted => "pad_bytes_exhausted",
            ErrorCode::PadNotActive => "pad_not_active",
            ErrorCode::PadValueExhausted => "pad_value_exhausted",
            ErrorCode::ProviderNotAllowed => "provider_not_allowed",
            ErrorCode::UnknownMailbox => "unknown_mailbox",
            ErrorCode::PinWrong => "pin_wrong",
            ErrorCode::MalformedRequest => "malformed_request",
            ErrorCode::UnknownRequest => "unknown_request",
            ErrorCode::VoucherState => "voucher_state",
            ErrorCode::PinLocked => "pin_locked",
        }
    }

    /// The status this code is sent with (`invalid_request` is 400 for path, query and header
    /// problems; see `ApiError::bad_parameter` in `tally-http`).
    pub fn status_code(self) -> u16 {
        match self {
            ErrorCode::MalformedFrame => 400,
            ErrorCode::PinLocked => 429,
            ErrorCode::PadNotAuthentic => 401,
            ErrorCode::ProviderNotAllowed | ErrorCode::PinWrong => 403,
            ErrorCode::UnknownMailbox | ErrorCode::UnknownRequest => 404,
            ErrorCode::PadOffsetUsed
            | ErrorCode::PadOffsetAhead
            | ErrorCode::PadNotActive
            | ErrorCode::VoucherState => 409,
            ErrorCode::PadBytesExhausted
            | ErrorCode::PadValueExhausted
            | ErrorCode::MalformedRequest => 422,
            ErrorCode::IdempotencyKeyInvalid
            | ErrorCode::IdempotencyKeyRequired
            | ErrorCode::MalformedJson => 400,
            ErrorCode::ConfirmationRequired => 202,
            ErrorCode::UriTooLong => 414,
            ErrorCode::HeadersTooLarge => 431,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::AccountNotFound
            | ErrorCode::DevInboxDisabled
            | ErrorCode::Disabled
            | ErrorCode::NotFound
            | ErrorCode::PendingNotFound
            | ErrorCode::TransferNotFound => 404,
            ErrorCode::BadReference => 422,
            ErrorCode::BadSignature => 401,
            ErrorCode::BadCertificate => 422,
            ErrorCode::BadEscrow => 422,
            ErrorCode::BadReceipt => 422,
            ErrorCode::BadWarrant => 422,
            ErrorCode::BadWrite => 422,
            ErrorCode::ExchangeAborted => 409,
            ErrorCode::ExchangeFailed => 409,
            ErrorCode::NoWarrant | ErrorCode::PeerRefused => 403,
            ErrorCode::ReceiptState => 409,
            ErrorCode::CreditRefused => 422,
            ErrorCode::FilesMissing => 410,
            ErrorCode::NotRefundable => 409,
            ErrorCode::NotReleased => 409,
            ErrorCode::ProductState => 409,
            ErrorCode::StaleNotification => 401,
            ErrorCode::WrongPackage => 422,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::AccountExists
            | ErrorCode::AccountClosed
            | ErrorCode::IdempotencyKeyReused
            | ErrorCode::Conflict
            | ErrorCode::PendingExpired
            | ErrorCode::PendingNotPending
            | ErrorCode::SessionClosed
            | ErrorCode::ConfirmationFailed
            | ErrorCode::LastAdminKey
            | ErrorCode::SaleClosed => 409,
            ErrorCode::Expired => 410,
            ErrorCode::TooManyAttempts => 423,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::AmountNotPositive
            | ErrorCode::CurrencyMismatch
            | ErrorCode::InsufficientFunds
            | ErrorCode::InvalidRequest
            | ErrorCode::LimitBelowUse
            | ErrorCode::ArbiterRefused
            | ErrorCode::LimitExceeded
            | ErrorCode::NoLiquidity
            | ErrorCode::Overflow
            | ErrorCode::PostExceedsPending
            | ErrorCode::SameAccount
            | ErrorCode::TransactionMismatch
            | ErrorCode::TrusteeLimitReached
            | ErrorCode::WrongCode => 422,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error body: `{"error": {...}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// Code, human message and optional structured details.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// For people; may change between versions.
    pub message: String,
    /// Structured facts, e.g. `{"field": "amount"}` or `{"available_minor": 500}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_from_its_wire_name() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_wire(code.as_str()), Some(code));
            let json = serde_json::to_string(&code).expect("serialize");
            assert_eq!(
                json,
                format!("\"{}\"", code.as_str()),
                "serde and as_str agree"
            );
            // The one code that is not a failure: taken, waiting for a confirmation (202).
            let failure = code != ErrorCode::ConfirmationRequired;
            assert_eq!((400..600).contains(&code.status_code()), failure, "{code}");
        }
        assert_eq!(ErrorCode::from_wire("no_such_code"), None);
    }
}
