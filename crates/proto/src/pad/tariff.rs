//! What pads pay (`docs/protocols/pads.md`, Money): a price per KiB of pad bytes of charged
//! frames, a price per `post`, and the operator's commission on providers' prices.
//!
//! ```text
//! byte debit = ⌊charged_after · p / 1024⌋ − ⌊charged_before · p / 1024⌋
//! ```
//! so a pad's byte debits total `⌊charged · p / 1024⌋`, whatever the frames' sizes: no
//! rounding drift, and a byte is never paid twice.

use serde::{Deserialize, Serialize};
use tally_kernel::Currency;

/// The operator's prices in one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tariff {
    /// Their currency.
    pub currency: Currency,
    /// Minor units per 1024 pad bytes of charged frames (up and down), `0 ..= 1_000_000`.
    pub byte_price_minor_per_kib: i64,
    /// Minor units per `post`.
    pub post_price_minor: i64,
    /// The operator's share of providers' prices, in basis points (rounded down), `0 ..= 10_000`.
    pub commission_bps: u32,
}

/// A tariff no node may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid tariff: {0}")]
pub struct TariffError(pub &'static str);

impl Tariff {
    /// A tariff of nothing: free bytes and posts, no commission.
    pub fn free(currency: Currency) -> Tariff {
        Tariff {
            currency,
            byte_price_minor_per_kib: 0,
            post_price_minor: 0,
            commission_bps: 0,
        }
    }

    /// Refuses prices out of range.
    pub fn check(&self) -> Result<(), TariffError> {
        if !(0..=1_000_000).contains(&self.byte_price_minor_per_kib) {
            return Err(TariffError(
                "the byte price is 0 to 1000000 minor units per KiB",
            ));
        }
        if !(0..=1_000_000_000).contains(&self.post_price_minor) {
            return Err(TariffError("the post price is 0 to 1000000000 minor units"));
        }
        if self.commission_bps > 10_000 {
            return Err(TariffError("the commission is 0 to 10000 basis points"));
        }
        Ok(())
    }

    /// What a pad pays for its charged bytes going from `before` to `after`.
    pub fn byte_debit(&self, before: u64, after: u64) -> i64 {
        let total = |bytes: u64| {
            (i128::from(bytes) * i128::from(self.byte_price_minor_per_kib) / 1024) as i64
        };
        total(after) - total(before)
    }

    /// The operator's share of a provider's price.
    pub fn commission(&self, price_minor: i64) -> i64 {
        (i128::from(price_minor) * i128::from(self.commission_bps) / 10_000) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_debits_do_not_drift() {
        let eur = Currency::from_code("EUR").expect("EUR");
        let t = Tariff {
            currency: eur,
            byte_price_minor_per_kib: 3,
            post_price_minor: 1,
            commission_bps: 250,
        };
        t.check().expect("valid");
        // 1000 frames of 100 bytes: each alone would round to 0; together 292 minor units.
        let mut paid = 0;
        for i in 0..1000u64 {
            paid += t.byte_debit(i * 100, (i + 1) * 100);
        }
        assert_eq!(paid, 100_000 * 3 / 1024);
        assert_eq!(t.byte_debit(0, 1024), 3);
        assert_eq!(t.commission(1000), 25);
        assert_eq!(t.commission(39), 0);
        let bad = Tariff {
            commission_bps: 10_001,
            ..t
        };
        assert!(bad.check().is_err());
        assert!(
            Tariff {
                byte_price_minor_per_kib: -1,
                ..t
            }
            .check()
            .is_err()
        );
    }
}
