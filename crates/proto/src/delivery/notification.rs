//! Signed payment notifications from an external payment receiver (SPEC D6 (b)): a bank tells
//! the node that a buyer paid, quoting the sale's reference code.
//!
//! ```text
//! POST body   = JSON {"id", "reference", "amount": "9.90 EUR", "paid_at": <unix seconds>, "payer"}
//! headers     = Tally-Timestamp: <unix seconds>
//!               Tally-Signature: hmac-sha256=<hex>  |  ed25519=<hex>
//! signed      = "tally/payment-notification/v1" 0x00 ‖ timestamp ‖ "." ‖ body
//! ```
//!
//! [`verify`] checks the signature (HMAC in constant time, or strict Ed25519), then the
//! timestamp window, then the body; it returns the notification or says exactly what is wrong.
//! Replays are refused by the caller through the notification's `id`, which becomes the
//! ledger idempotency key, so a resent notification changes nothing.
//!
//! Rejected: signing only the body (a captured notification could be replayed forever);
//! trusting `paid_at` for freshness (it is the bank's business time, not the message time).

use serde::Deserialize;
use tally_kernel::crypto::kdf::hmac_sha256_verify;
use tally_kernel::crypto::{Signature, VerifyingKey};
use tally_kernel::{Amount, Secret, Timestamp};

use super::ReferenceCode;

/// Domain of the signed message.
pub const DOMAIN: &[u8] = b"tally/payment-notification/v1\0";
/// Largest body accepted.
pub const BODY_LEN_MAX: usize = 16 * 1024;

/// How the node knows a payment receiver.
pub enum ReceiverKey {
    /// A shared secret (HMAC-SHA256).
    Hmac(Secret<Vec<u8>>),
    /// The receiver's Ed25519 public key.
    Ed25519(VerifyingKey),
}

/// A verified notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The receiver's unique id for this payment (the idempotency key).
    pub id: String,
    /// The sale's reference code as quoted by the payer: a valid code, or the text as typed
    /// (a typo, a wrong code): that money is kept in suspense with the text, never refused.
    pub reference: Quoted,
    /// What was paid.
    pub amount: Amount,
    /// When the receiver says it was paid.
    pub paid_at: Timestamp,
    /// Who paid, as the receiver names them.
    pub payer: String,
}

/// A reference as a payer quoted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Quoted {
    /// A reference code whose check character matches.
    Code(ReferenceCode),
    /// Anything else, as typed (printable, at most 200 bytes).
    Text(String),
}

impl Quoted {
    /// The code, or the text as typed.
    pub fn as_str(&self) -> &str {
        match self {
            Quoted::Code(c) => c.as_str(),
            Quoted::Text(t) => t,
        }
    }

    /// The code, when it is one.
    pub fn code(&self) -> Option<&ReferenceCode> {
        match self {
            Quoted::Code(c) => Some(c),
            Quoted::Text(_) => None,
        }
    }
}

/// Why a notification was refused; nothing is done with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    /// A header is missing or malformed.
    #[error("malformed header: {0}")]
    BadHeader(&'static str),
    /// The signature does not verify with this receiver's key.
    #[error("the signature does not verify")]
    BadSignature,
    /// The message is older than the window (a replay, or a clock far off).
    #[error("the notification is {age_s} s old (window {window_s} s)")]
    Stale {
        /// Its age.
        age_s: i64,
        /// The window.
        window_s: i64,
    },
    /// The message claims to come from the future beyond the window.
    #[error("the notification is dated {ahead_s} s in the future")]
    FromTheFuture {
        /// How far ahead.
        ahead_s: i64,
    },
    /// The body is not a notification.
    #[error("malformed body: {0}")]
    BadBody(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    id: String,
    reference: String,
    amount: String,
    paid_at: i64,
    payer: String,
}

/// Verifies a notification received at `now`, accepting timestamps within `window_s`.
pub fn verify(
    body: &[u8],
    timestamp_header: &str,
    signature_header: &str,
    key: &ReceiverKey,
    now: Timestamp,
    window_s: i64,
) -> Result<Notification, NotificationError> {
    if body.len() > BODY_LEN_MAX {
        return Err(NotificationError::BadBody("larger than 16 KiB".into()));
    }
    let ts = timestamp_header.trim();
    if ts.is_empty() || ts.len() > 12 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NotificationError::BadHeader(
            "Tally-Timestamp is not unix seconds",
        ));
    }
    let sent: i64 = ts
        .parse()
        .map_err(|_| NotificationError::BadHeader("Tally-Timestamp is out of range"))?;
    let signed = [ts.as_bytes(), b".", body].concat();
    let (scheme, value) =
        signature_header
            .trim()
            .split_once('=')
            .ok_or(NotificationError::BadHeader(
                "Tally-Signature is not scheme=value",
            ))?;
    let raw = hex::decode(value)
        .map_err(|_| NotificationError::BadHeader("Tally-Signature value is not hex"))?;
    let valid = match (scheme, key) {
        ("hmac-sha256", ReceiverKey::Hmac(secret)) => {
            hmac_sha256_verify(secret.expose(), &[DOMAIN, &signed].concat(), &raw)
        }
        ("ed25519", ReceiverKey::Ed25519(public)) => Signature::from_slice(&raw)
            .is_ok_and(|sig| public.verify(DOMAIN, &signed, &sig).is_ok()),
        ("hmac-sha256" | "ed25519", _) => false,
        _ => return Err(NotificationError::BadHeader("unknown signature scheme")),
    };
    if !valid {
        return Err(NotificationError::BadSignature);
    }
    let now_s = now.as_micros().div_euclid(1_000_000);
    if sent < now_s - window_s {
        return Err(NotificationError::Stale {
            age_s: now_s - sent,
            window_s,
        });
    }
    if sent > now_s + window_s {
        return Err(NotificationError::FromTheFuture {
            ahead_s: sent - now_s,
        });
    }
    let b: Body =
        serde_json::from_slice(body).map_err(|e| NotificationError::BadBody(e.to_string()))?;
    let id_ok = !b.id.is_empty() && b.id.len() <= 128 && b.id.bytes().all(|c| c.is_ascii_graphic());
    if !id_ok {
        return Err(NotificationError::BadBody(
            "id must be 1 to 128 printable characters".into(),
        ));
    }
    if b.payer.len() > 200 || b.payer.chars().any(char::is_control) {
        return Err(NotificationError::BadBody(
            "payer must be at most 200 printable bytes".into(),
        ));
    }
    let reference = match ReferenceCode::parse(&b.reference) {
        Ok(code) => Quoted::Code(code),
        Err(_) => {
            let text = b.reference.trim();
            if text.is_empty() || text.len() > 200 || !tally_kernel::text::plain(text, false) {
                return Err(NotificationError::BadBody(
                    "reference must be 1 to 200 printable bytes".into(),
                ));
            }
            Quoted::Text(text.to_string())
        }
    };
    let amount: Amount = b
        .amount
        .parse()
        .map_err(|e: tally_kernel::MoneyError| NotificationError::BadBody(e.to_string()))?;
    if amount.minor <= 0 {
        return Err(NotificationError::BadBody("amount must be positive".into()));
    }
    Ok(Notification {
        id: b.id,
        reference,
        amount,
        paid_at: Timestamp(b.paid_at.saturating_mul(1_000_000)),
        payer: b.payer,
    })
}
