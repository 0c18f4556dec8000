//! A transaction's closing receipt (SPEC M5, issue [7]): the closing records as a receipt in
//! the sense of issue [4], verifiable offline. The MTA, which compared the records, signs once
//! it cleared the transaction: the clearing information, the rate, and each side's record as
//! that side signed it with the key it was checked under. Anyone holding the receipt checks
//! it alone: the MTA's signature (its node key is in the receipt; its id, the SHA-256 of that
//! key, is what operators exchange out of band), each record under its key, and that the
//! records and the clearing say the same.
//!
//! ```text
//! receipt = SignedRecord {domain "tally/session-receipt/v1",
//!           bytes: RFC 8785 JSON of {at (µs), clearing, customer?: {key, record},
//!                  issuer (node id), issuer_key (Ed25519, hex), merchant?: {key, record},
//!                  rate: {numerator, denominator}},
//!           signature by the issuer's node key}
//! record  = a signed record of `conclusion` (domain "tally/session-record/v1"), as text
//! ```
//!
//! A side's record is missing when the transaction cleared without it: the customer's alone
//! at the deadline, or a merchant's alone that claims nothing. A verdict (`clearing.verdict`)
//! pays what the operator decided: the records are then kept as they were (either may be
//! missing: a verdict may settle a dispute held on the merchant's record alone), and may
//! disagree.
//!
//! Vector: `docs/protocols/vectors/session_receipt.json`.

use super::conclusion::{Clearing, Record, Side, customer_total};
use super::ids::NodeId;
use serde::{Deserialize, Serialize};
use tally_kernel::Rate;
use tally_kernel::crypto::canonical::SignedRecord;
use tally_kernel::crypto::{SigningKey, VerifyingKey};

/// The receipts' domain.
pub const RECEIPT_DOMAIN: &str = "tally/session-receipt/v1";
/// Largest receipt, bytes.
pub const RECEIPT_LEN_MAX: usize = 16 * 1024;

/// A side's record as that side signed it, with the key it was checked under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    /// The key (Ed25519, hex): the customer's session key, or the merchant agent's key.
    pub key: String,
    /// The signed record (JSON text, domain `tally/session-record/v1`).
    pub record: String,
}

/// What a receipt says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionReceipt {
    /// When the MTA signed it (µs).
    pub at: i64,
    /// The clearing information sent to the customer's operator.
    pub clearing: Clearing,
    /// The customer's record, when the transaction cleared with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<Signed>,
    /// The MTA's node.
    pub issuer: NodeId,
    /// Its node key (Ed25519, hex): `issuer` is its SHA-256.
    pub issuer_key: String,
    /// The merchant's record, when the transaction cleared with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant: Option<Signed>,
    /// The session's rate (merchant minor units per customer minor unit).
    pub rate: Rate,
}

/// Why a receipt was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// Not a receipt, or too large.
    #[error("not a session receipt")]
    Malformed,
    /// Not signed by the node it names.
    #[error("the receipt is not signed by the operator it names")]
    BadSignature,
    /// A side's record does not open under its key, or is of another transaction.
    #[error("the {0:?} record does not check under its key")]
    Record(Side),
    /// The records, or the clearing, do not say the same.
    #[error("the records and the clearing do not say the same")]
    Disagrees,
}

impl SessionReceipt {
    /// Checks what the receipt holds, then signs it with the MTA's node key; as JSON text.
    pub fn issue(&self, node_key: &SigningKey) -> Result<String, ReceiptError> {
        let key = node_key.verifying_key();
        if self.issuer != NodeId::of(&key) || self.issuer_key != key.to_hex() {
            return Err(ReceiptError::BadSignature);
        }
        self.check()?;
        let record = SignedRecord::sign(RECEIPT_DOMAIN, self, node_key)
            .map_err(|_| ReceiptError::Malformed)?;
        serde_json::to_string(&record).map_err(|_| ReceiptError::Malformed)
    }

    /// Opens a receipt: signed by the node it names, each record under its key, and all of it
    /// saying the same. Which node to trust is the reader's: compare `issuer` with the id the
    /// MTA's operator gave out.
    pub fn open(text: &str) -> Result<SessionReceipt, ReceiptError> {
        if text.len() > RECEIPT_LEN_MAX {
            return Err(ReceiptError::Malformed);
        }
        let signed: SignedRecord =
            serde_json::from_str(text).map_err(|_| ReceiptError::Malformed)?;
        if signed.domain != RECEIPT_DOMAIN {
            return Err(ReceiptError::Malformed);
        }
        let receipt: SessionReceipt =
            serde_json::from_slice(&signed.bytes).map_err(|_| ReceiptError::Malformed)?;
        let key =
            VerifyingKey::from_hex(&receipt.issuer_key).map_err(|_| ReceiptError::Malformed)?;
        if NodeId::of(&key) != receipt.issuer
            || signed.signer != key.fingerprint()
            || signed.verify(&key).is_err()
        {
            return Err(ReceiptError::BadSignature);
        }
        if !signed.is_canonical() {
            return Err(ReceiptError::Malformed);
        }
        receipt.check()?;
        Ok(receipt)
    }

    /// Each record opens under its key for the cleared transaction, and they say what the
    /// clearing says (a verdict: the amount is the operator's, the records as they were); the
    /// customer's total is the merchant's converted back at the rate.
    fn check(&self) -> Result<(), ReceiptError> {
        let c = &self.clearing;
        let open = |signed: &Option<Signed>, side| -> Result<Option<Record>, ReceiptError> {
            let Some(s) = signed else {
                return Ok(None);
            };
            let key = VerifyingKey::from_hex(&s.key).map_err(|_| ReceiptError::Record(side))?;
            Record::open(s.record.as_bytes(), &key, side, c.transaction)
                .map(Some)
                .map_err(|_| ReceiptError::Record(side))
        };
        let customer = open(&self.customer, Side::Customer)?;
        let merchant = open(&self.merchant, Side::Merchant)?;
        let says = |r: &Record| r.total == c.total && r.count == c.count && r.list == c.list;
        let agrees = match (&customer, &merchant) {
            (None, None) => false,
            _ if c.verdict => true,
            (Some(r), None) | (None, Some(r)) => says(r),
            (Some(a), Some(b)) => says(a) && says(b),
        };
        let converted = customer_total(c.total.minor, self.rate) == Some(c.customer_total.minor);
        if !agrees || !converted || c.total.minor < 0 {
            return Err(ReceiptError::Disagrees);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
