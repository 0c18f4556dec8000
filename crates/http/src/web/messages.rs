//! What to try next, for every API error code: the second half of a web page's refusal (the
//! first is the API's message, which says what happened). An exhaustive `match`, so a new
//! code does not build until it has its sentence.

use crate::error::ErrorCode;

/// What a person can do about a refusal with `code`.
pub fn advice(code: ErrorCode) -> &'static str {
    use ErrorCode as E;
    match code {
        E::BadCertificate => "Check that the certificate is the one the node issued, unaltered.",
        E::BadEscrow => "Check the escrow's request and its state, then try again.",
        E::BadReceipt => "The receipt does not verify; ask its issuer for a fresh copy.",
        E::BadWarrant => "The warrant does not verify; ask its signer for a new one.",
        E::BadWrite => "The signing token refused the write; check it is plugged in and unlocked.",
        E::ExchangeAborted => "Nothing was exchanged; start a new exchange if you still want one.",
        E::ExchangeFailed => "The exchange did not complete; the arbiter's decision is final.",
        E::NoWarrant => "Ask the signer for a warrant first.",
        E::ReceiptState => "Reload the receipt to see its current state.",
        E::BadReference => "Check the reference code for a typo: it ends with a check character.",
        E::BadSignature => "The sender's signature does not verify; nothing was applied.",
        E::CreditRefused => "Pay or cancel one of your unpaid purchases first, then buy again.",
        E::FilesMissing => "Ask the operator to restore the product's files.",
        E::NotRefundable => "This payment cannot be refunded any more.",
        E::NotReleased => "Pay first: the key is released as soon as the payment arrives.",
        E::ProductState => "This product is not on sale right now; look at the other products.",
        E::StaleNotification => "Send the notification again with a fresh timestamp.",
        E::WrongPackage => "Download the package again from your checkout page.",
        E::ConfirmationRequired => {
            "Type the code we sent to your second channel to confirm the payment."
        }
        E::ConfirmationFailed => "The confirmation ended without a code; start the payment again.",
        E::UriTooLong => "Use a shorter address.",
        E::HeadersTooLarge => "Clear this site's cookies and try again.",
        E::LastAdminKey => "Make another admin key before revoking this one.",
        E::SaleClosed => "This purchase is closed; buy the product again if you still want it.",
        E::AccountExists => "Use the existing account.",
        E::AccountClosed => "This account is closed; ask the operator to reopen it.",
        E::AccountNotFound => "Check the account, or pick one of your own accounts.",
        E::AmountNotPositive => "Enter an amount above zero.",
        E::CurrencyMismatch => "Pick an account in the price's currency.",
        E::Conflict => "Someone changed this at the same time; reload the page and try again.",
        E::DevInboxDisabled => "The dev inbox exists only on a node started with --dev.",
        E::Disabled => "This node does not offer that; ask its operator.",
        E::Expired => "The code's time is up; start again to get a new code.",
        E::Forbidden => "Sign in as the right user, or go back to your own pages.",
        E::IdempotencyKeyInvalid | E::IdempotencyKeyRequired => {
            "Reload the page and send the form again."
        }
        E::IdempotencyKeyReused => "Reload the page and send the form again.",
        E::InsufficientFunds => "Top up the account or pick another one, then pay again.",
        E::Internal => {
            "Try again in a moment; if it keeps happening, tell the operator the time it happened."
        }
        E::InvalidRequest => "Correct the highlighted field and send the form again.",
        E::ArbiterRefused => "The arbiter refused the case; check it and ask again.",
        E::PeerRefused => "The other node refused the message; its operator can say why.",
        E::LimitBelowUse => "Set a limit at or above what is already used.",
        E::LimitExceeded => "The receiving account is at its limit; pay a smaller amount.",
        E::MalformedJson => "Reload the page and send the form again.",
        E::MethodNotAllowed => "Use the page's own links and buttons.",
        E::NoLiquidity => "Ask the operator to add liquidity in that currency.",
        E::NotFound => "Check the link, or start again from the shop's home page.",
        E::Overflow => "The amount is too large for the account.",
        E::PayloadTooLarge => "Send less at once.",
        E::PendingExpired => "The hold expired; start the payment again.",
        E::PendingNotFound => "Check the hold's id.",
        E::PendingNotPending => "This hold is already settled; reload to see how.",
        E::PostExceedsPending => "Post at most the held amount.",
        E::RateLimited => "Too many tries in a short time: wait a few minutes, then try again.",
        E::SameAccount => "Pick a different account to pay from.",
        E::SessionClosed => "This code session is over; start again to get a new code.",
        E::TooManyAttempts => {
            "The session is locked after wrong codes; start again to get a new code."
        }
        E::TransactionMismatch => {
            "The code was sent for another transaction; start again from the payment."
        }
        E::TransferNotFound => "Check the transfer's id.",
        E::TrusteeLimitReached => "Ask the operator to raise your trustee credit, or pay less.",
        E::Unauthorized => "Sign in again: your sign-in expired or was ended.",
        E::Unavailable => "The node is busy or restarting; try again in a moment.",
        E::UnsupportedMediaType => "Reload the page and send the form again.",
        E::WrongCode => "Check the code in the message we sent you and type it again.",
        E::MalformedFrame
        | E::PadNotAuthentic
        | E::PadOffsetUsed
        | E::PadOffsetAhead
        | E::MalformedRequest => "Let your pad's app resend the frame.",
        E::PadBytesExhausted => "The pad is used up; buy a new one.",
        E::PadNotActive => "Activate the pad first, or use another one.",
        E::PadValueExhausted => "Top up the pad's value, or use another pad.",
        E::ProviderNotAllowed => "Add the provider to the pad's allow-list first.",
        E::UnknownMailbox => "Check the mailbox address.",
        E::PinWrong => "Check the PIN and type it again.",
        E::UnknownRequest => "Check the request's id.",
        E::PinLocked => "Too many wrong PINs: wait until the lock ends, then try again.",
        E::VoucherState => "Check the voucher card's state with the seller.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_sentence_a_person_can_read() {
        for code in ErrorCode::ALL {
            let text = advice(code);
            assert!(
                text.len() >= 12
                    && text.ends_with('.')
                    && text.chars().next().is_some_and(char::is_uppercase),
                "{code:?}: {text:?}"
            );
            assert!(
                !text.contains('_') && !text.contains("error code"),
                "{code:?} reads like a machine: {text:?}"
            );
        }
    }
}
