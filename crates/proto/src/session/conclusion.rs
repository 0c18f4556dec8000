//! A trading session's conclusion (SPEC M5; issue [7] step 5): the records both parties sign
//! and the clearing information the mediating trusted agent (MTA) makes of them.
//!
//! ```text
//! record   = SignedRecord {domain "tally/session-record/v1",
//!            bytes: RFC 8785 JSON of {transaction, side, total: {minor, currency}, count, list},
//!            signature: Ed25519 by the customer's session key (side "customer") or the
//!            merchant agent's key (side "merchant")}
//! clearing = {transaction, total (merchant currency), customer_total (customer currency),
//!             count, list}
//! ```
//!
//! The records carry the list's hash only (see `purchase`), so neither operator learns what was
//! bought. The MTA clears a transaction when both records name the same transaction, total,
//! count and list; otherwise it is disputed and nothing is posted.

use super::ids::TransactionId;
use serde::{Deserialize, Serialize};
use tally_kernel::crypto::canonical::SignedRecord;
use tally_kernel::crypto::{SigningKey, VerifyingKey};
use tally_kernel::{Amount, Rate};

/// The records' domain.
pub const RECORD_DOMAIN: &str = "tally/session-record/v1";
/// Largest signed record, bytes.
pub const RECORD_LEN_MAX: usize = 2048;

/// Who signed a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The customer, with its session key.
    Customer,
    /// The merchant, with its agent's key.
    Merchant,
}

/// What one side says the transaction was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The transaction.
    pub transaction: TransactionId,
    /// Who says so.
    pub side: Side,
    /// What the purchases cost, in the merchant's currency.
    pub total: Amount,
    /// How many purchases.
    pub count: u64,
    /// The purchase list's hash (hex, see `purchase::list_next`).
    pub list: String,
}

/// Why a record was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Not a signed record of this kind, or too large.
    #[error("not a signed session record")]
    Malformed,
    /// Not signed by the key of its side.
    #[error("not signed by the key of its side")]
    BadSignature,
    /// Another side, or another transaction, than expected.
    #[error("a record of another side or transaction")]
    Mismatch,
}

impl Record {
    /// Signs the record.
    pub fn sign(&self, key: &SigningKey) -> Result<Vec<u8>, RecordError> {
        let record =
            SignedRecord::sign(RECORD_DOMAIN, self, key).map_err(|_| RecordError::Malformed)?;
        serde_json::to_vec(&record).map_err(|_| RecordError::Malformed)
    }

    /// Opens a signed record of `side` for `transaction` under `key`.
    pub fn open(
        bytes: &[u8],
        key: &VerifyingKey,
        side: Side,
        transaction: TransactionId,
    ) -> Result<Record, RecordError> {
        if bytes.len() > RECORD_LEN_MAX {
            return Err(RecordError::Malformed);
        }
        let signed: SignedRecord =
            serde_json::from_slice(bytes).map_err(|_| RecordError::Malformed)?;
        if signed.domain != RECORD_DOMAIN {
            return Err(RecordError::Malformed);
        }
        if signed.signer != key.fingerprint()
            || signed.verify(key).is_err()
            || !signed.is_canonical()
        {
            return Err(RecordError::BadSignature);
        }
        let record: Record =
            serde_json::from_slice(&signed.bytes).map_err(|_| RecordError::Malformed)?;
        let list_ok = record.list.len() == 64 && record.list.bytes().all(|b| b.is_ascii_hexdigit());
        if !list_ok || record.total.minor < 0 {
            return Err(RecordError::Malformed);
        }
        if record.side != side || record.transaction != transaction {
            return Err(RecordError::Mismatch);
        }
        Ok(record)
    }

    /// True when the two records say the same (apart from who says it).
    pub fn agrees_with(&self, other: &Record) -> bool {
        self.transaction == other.transaction
            && self.total == other.total
            && self.count == other.count
            && self.list == other.list
    }
}

/// What the MTA makes of two records that agree (M5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clearing {
    /// The transaction.
    pub transaction: TransactionId,
    /// What the merchant is paid, in its currency.
    pub total: Amount,
    /// What the customer pays, in its currency (the total converted back at the session's
    /// rate, rounded up: the customer never pays less than the merchant is paid).
    pub customer_total: Amount,
    /// How many purchases.
    pub count: u64,
    /// The list hash both records carry.
    pub list: String,
    /// Decided by the MTA's operator on a dispute (the records disagreed): the AM takes it
    /// whatever its own record says. Absent (false) on the wire otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verdict: bool,
}

/// `total` (merchant minor units) in the customer's currency at `rate` (merchant per
/// customer), rounded up; `None` when it overflows or the rate is not positive.
pub fn customer_total(total: i64, rate: Rate) -> Option<i64> {
    if rate.numerator <= 0 || rate.denominator <= 0 || total < 0 {
        return None;
    }
    let wide = i128::from(total) * i128::from(rate.denominator);
    let n = i128::from(rate.numerator);
    i64::try_from((wide + n - 1) / n).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::ids::{NodeId, SessionId};
    use tally_kernel::Currency;

    fn transaction() -> TransactionId {
        let am = NodeId::of(&SigningKey::from_seed(&[1; 32]).verifying_key());
        SessionId::new(am, 2).expect("id").first_transaction()
    }

    fn record(side: Side, minor: i64) -> Record {
        Record {
            transaction: transaction(),
            side,
            total: Amount::new(minor, Currency::from_code("EUR").expect("EUR")),
            count: 3,
            list: "ab".repeat(32),
        }
    }

    #[test]
    fn a_record_opens_only_under_its_sides_key_and_transaction() {
        let customer = SigningKey::from_seed(&[9; 32]);
        let signed = record(Side::Customer, 100).sign(&customer).expect("sign");
        let opened = Record::open(
            &signed,
            &customer.verifying_key(),
            Side::Customer,
            transaction(),
        )
        .expect("open");
        assert_eq!(opened, record(Side::Customer, 100));
        let other = SigningKey::from_seed(&[8; 32]).verifying_key();
        assert_eq!(
            Record::open(&signed, &other, Side::Customer, transaction()),
            Err(RecordError::BadSignature)
        );
        assert_eq!(
            Record::open(
                &signed,
                &customer.verifying_key(),
                Side::Merchant,
                transaction()
            ),
            Err(RecordError::Mismatch)
        );
        let next = transaction().next().expect("next");
        assert_eq!(
            Record::open(&signed, &customer.verifying_key(), Side::Customer, next),
            Err(RecordError::Mismatch)
        );
        assert_eq!(
            Record::open(
                b"[]",
                &customer.verifying_key(),
                Side::Customer,
                transaction()
            ),
            Err(RecordError::Malformed)
        );
        assert!(record(Side::Customer, 100).agrees_with(&record(Side::Merchant, 100)));
        assert!(!record(Side::Customer, 100).agrees_with(&record(Side::Merchant, 99)));
    }

    /// The `session_cleared` body, byte for byte: without `verdict` when the records agreed
    /// (as before verdicts existed), with `"verdict":true` when the MTA's operator settled a
    /// dispute; both parse back to what was sent, and an unknown field is refused.
    #[test]
    fn the_clearing_body_is_golden() {
        let am = "1".repeat(64);
        let mut c = Clearing {
            transaction: format!("{am}.7.1").parse().expect("id"),
            total: Amount::new(270, Currency::from_code("EUR").expect("EUR")),
            customer_total: Amount::new(270, Currency::from_code("EUR").expect("EUR")),
            count: 2,
            list: "a".repeat(64),
            verdict: false,
        };
        let agreed = format!(
            r#"{{"transaction":"{am}.7.1","total":{{"minor":270,"currency":"EUR"}},"customer_total":{{"minor":270,"currency":"EUR"}},"count":2,"list":"{}"}}"#,
            "a".repeat(64)
        );
        assert_eq!(serde_json::to_string(&c).expect("json"), agreed);
        assert_eq!(serde_json::from_str::<Clearing>(&agreed).expect("back"), c);
        c.verdict = true;
        let open = &agreed[..agreed.len() - 1];
        let settled = format!(r#"{open},"verdict":true}}"#);
        assert_eq!(serde_json::to_string(&c).expect("json"), settled);
        assert_eq!(serde_json::from_str::<Clearing>(&settled).expect("back"), c);
        let unknown = format!(r#"{open},"paid":true}}"#);
        assert!(serde_json::from_str::<Clearing>(&unknown).is_err());
    }

    #[test]
    fn the_customer_total_rounds_up() {
        let one = Rate {
            numerator: 1,
            denominator: 1,
        };
        assert_eq!(customer_total(250, one), Some(250));
        // 1.0842 USD per EUR (cents): 1084 USD cents is 999.81 → 1000 EUR cents.
        let usd_per_eur = Rate {
            numerator: 10_842,
            denominator: 10_000,
        };
        assert_eq!(customer_total(1084, usd_per_eur), Some(1000));
        assert_eq!(customer_total(0, usd_per_eur), Some(0));
        assert_eq!(
            customer_total(
                1,
                Rate {
                    numerator: 0,
                    denominator: 1
                }
            ),
            None
        );
    }
}
