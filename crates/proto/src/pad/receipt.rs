//! The receipt of a pad's transfer between PIN accounts (SPEC P6: "transfer of a pad between
//! accounts (with a receipt)"): a `SignedRecord` of domain `tally/pad-transfer/v1` under the
//! node key over the RFC 8785 JSON of [`TransferReceipt`]. Either account's holder keeps it; it
//! says the node moved the pad, with its value and cursors at that moment, and verifies
//! offline against the node's key.

use serde::{Deserialize, Serialize};
use tally_kernel::crypto::canonical::SignedRecord;
use tally_kernel::crypto::{CryptoError, SigningKey, VerifyingKey};
use tally_kernel::{Amount, Timestamp};

use super::ids::{AccountId, PadId};

/// The receipt's domain.
pub const TRANSFER_DOMAIN: &str = "tally/pad-transfer/v1";

/// What the node signs when a pad changes account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferReceipt {
    /// The pad.
    pub pad: PadId,
    /// The account it left.
    pub from: AccountId,
    /// The account it joined.
    pub to: AccountId,
    /// Its available value then.
    pub value: Amount,
    /// Its up cursor then.
    pub up_next: u64,
    /// Its down cursor then.
    pub down_low: u64,
    /// When.
    pub at: Timestamp,
}

impl TransferReceipt {
    /// Signed under the node key.
    pub fn sign(&self, key: &SigningKey) -> Result<SignedRecord, CryptoError> {
        SignedRecord::sign(TRANSFER_DOMAIN, self, key)
    }

    /// The receipt in `signed`, if the node key signed it for this domain.
    pub fn open(
        signed: &SignedRecord,
        node: &VerifyingKey,
    ) -> Result<TransferReceipt, CryptoError> {
        if signed.domain != TRANSFER_DOMAIN {
            return Err(CryptoError::WrongKey("not a pad transfer receipt"));
        }
        signed.open(node)
    }
}
