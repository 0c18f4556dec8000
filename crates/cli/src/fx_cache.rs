//! The customer's copy of its own operator's exchange tables (SPEC M6, the seed's alternative
//! embodiment): fetched when a session opens (or with `tally fx fetch`), kept in the wallet
//! directory (`fx.json`), checked under the operator's node key, and used offline to show a
//! merchant's prices in the customer's currency; with a warning when the table has expired or
//! there is none. The money itself is always converted by the operators (the merchant's
//! operator's rate, `sessions.md`); this is what the customer sees while buying.

use crate::client::Client;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tally_kernel::crypto::VerifyingKey;
use tally_kernel::crypto::canonical::SignedRecord;
use tally_kernel::{Amount, Currency, Timestamp};

/// The signed tables' domain (`tally_service::session::fx`).
const FX_DOMAIN: &str = "tally/fx-table/v1";

/// What the wallet keeps.
#[derive(Serialize, Deserialize)]
pub struct FxCache {
    /// The operator's node key (hex) the tables are signed with.
    pub operator_key: String,
    /// The tables as the operator signed them (JSON text).
    pub tables: Vec<String>,
    /// When they were fetched (µs).
    pub fetched_at: i64,
}

/// One table, checked.
#[derive(Debug, Deserialize)]
struct Table {
    from: String,
    to: String,
    rate: String,
    numerator: i64,
    denominator: i64,
    valid_until: i64,
}

fn path(wallet: &Path) -> PathBuf {
    wallet.join("fx.json")
}

/// Fetches the operator's valid tables, checks each under its node key, and keeps them.
pub async fn refresh(c: &Client, wallet: &Path) -> anyhow::Result<FxCache> {
    let node = c.api.node().await?;
    let key = VerifyingKey::from_hex(&node.node_key)?;
    let mut tables = Vec::new();
    for t in c.api.fx_tables().await? {
        let record: SignedRecord = serde_json::from_str(&t.signed)?;
        if record.domain != FX_DOMAIN || record.verify(&key).is_err() {
            anyhow::bail!("an exchange table not signed by your operator");
        }
        tables.push(t.signed);
    }
    let cache = FxCache {
        operator_key: node.node_key,
        tables,
        fetched_at: Timestamp::now().as_micros(),
    };
    std::fs::create_dir_all(wallet)?;
    let tmp = wallet.join("fx.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&cache)?)?;
    std::fs::rename(&tmp, path(wallet)).context("keeping the exchange tables")?;
    Ok(cache)
}

/// The kept tables, if any.
pub fn load(wallet: &Path) -> Option<FxCache> {
    serde_json::from_slice(&std::fs::read(path(wallet)).ok()?).ok()
}

/// `price` in the customer's `home` currency at the kept tables, as a line to show; or, when
/// no valid table converts it, a warning saying why.
pub fn in_home_currency(
    cache: Option<&FxCache>,
    price: Amount,
    home: Currency,
    now: Timestamp,
) -> Result<String, String> {
    let (m, h) = (price.currency.code(), home.code());
    let fetch = "fetch your operator's tables with `tally fx fetch`";
    let Some(cache) = cache else {
        return Err(format!("no exchange table of your operator kept: {fetch}"));
    };
    let key = VerifyingKey::from_hex(&cache.operator_key).map_err(|e| e.to_string())?;
    let tables: Vec<Table> = cache
        .tables
        .iter()
        .filter_map(|text| {
            let record: SignedRecord = serde_json::from_str(text).ok()?;
            (record.domain == FX_DOMAIN)
                .then(|| record.open::<Table>(&key).ok())
                .flatten()
        })
        .filter(|t| (t.from == m && t.to == h) || (t.from == h && t.to == m))
        .collect();
    let Some(best) = tables.iter().max_by_key(|t| t.valid_until) else {
        return Err(format!(
            "no exchange table of your operator between {m} and {h}: {fetch}"
        ));
    };
    if best.valid_until <= now.as_micros() {
        return Err(format!(
            "your operator's exchange table {}→{} expired at {}: {fetch}",
            best.from,
            best.to,
            Timestamp(best.valid_until)
        ));
    }
    let (num, den) = (i128::from(best.numerator), i128::from(best.denominator));
    if num <= 0 || den <= 0 {
        return Err("an exchange table with a rate that is not positive".into());
    }
    let minor = i128::from(price.minor);
    // Rounded up: the customer is never shown less than it may pay.
    let home_minor = if best.from == m {
        (minor * num + den - 1) / den
    } else {
        (minor * den + num - 1) / num
    };
    let home_minor = i64::try_from(home_minor).map_err(|_| "a price too large".to_string())?;
    Ok(format!(
        "about {} at your operator's table {}→{} {} (until {})",
        Amount::new(home_minor, home),
        best.from,
        best.to,
        best.rate,
        Timestamp(best.valid_until)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_kernel::crypto::SigningKey;

    const T0: i64 = 1_767_225_600_000_000;

    fn table(key: &SigningKey, from: &str, to: &str, rate: &str, num: i64, den: i64) -> String {
        let body = serde_json::json!({
            "from": from, "to": to, "rate": rate, "numerator": num, "denominator": den,
            "valid_from": T0, "valid_until": T0 + 3_600_000_000, "operator": "op",
        });
        serde_json::to_string(&SignedRecord::sign(FX_DOMAIN, &body, key).expect("sign"))
            .expect("json")
    }

    fn money(s: &str) -> Amount {
        s.parse().expect("amount")
    }

    #[test]
    fn prices_show_in_the_customers_currency_at_its_own_operators_table() {
        let op = SigningKey::from_seed(&[61; 32]);
        let eur = Currency::from_code("EUR").expect("EUR");
        let cache = FxCache {
            operator_key: op.verifying_key().to_hex(),
            // EUR→USD 1.0842: 10842 USD cents per 10000 EUR cents.
            tables: vec![table(&op, "EUR", "USD", "1.0842", 10842, 10000)],
            fetched_at: T0,
        };
        let now = Timestamp(T0 + 1);
        // 0.30 USD is about 0.28 EUR (27.67 cents, rounded up).
        let line = in_home_currency(Some(&cache), money("0.30 USD"), eur, now).expect("a line");
        assert!(
            line.starts_with("about 0.28 EUR at your operator's table EUR→USD 1.0842"),
            "{line}"
        );
        // The other direction of a table converts too (USD→EUR 0.9223: 0.30 USD → 0.27669).
        let back = FxCache {
            tables: vec![table(&op, "USD", "EUR", "0.9223", 9223, 10000)],
            ..cache
        };
        let line = in_home_currency(Some(&back), money("0.30 USD"), eur, now).expect("a line");
        assert!(line.starts_with("about 0.28 EUR"), "{line}");
        // Expired, missing, or not signed by the operator: a warning instead.
        let late = Timestamp(T0 + 3_600_000_000);
        let w = in_home_currency(Some(&back), money("0.30 USD"), eur, late).expect_err("expired");
        assert!(w.contains("expired at"), "{w}");
        let w = in_home_currency(None, money("0.30 USD"), eur, now).expect_err("none kept");
        assert!(w.contains("tally fx fetch"), "{w}");
        let forged = FxCache {
            tables: vec![table(
                &SigningKey::from_seed(&[62; 32]),
                "USD",
                "EUR",
                "2",
                2,
                1,
            )],
            ..back
        };
        let w = in_home_currency(Some(&forged), money("0.30 USD"), eur, now).expect_err("forged");
        assert!(w.contains("no exchange table"), "{w}");
    }
}
