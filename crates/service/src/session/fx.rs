//! Exchange tables (SPEC M6, issue [7]): the rates an operator publishes, each with a lifespan
//! and signed by its node key (`tally/fx-table/v1`), so a customer's client can keep its own
//! operator's table and check it offline. The merchant's operator converts a session's deposit
//! at its own table valid at the initiation; without one the session is refused (`no_rate`).

use super::Sessions;
use crate::access::{corrupt, invalid, require_admin};
use crate::{Principal, Result};
use serde_json::json;
use tally_kernel::crypto::canonical::SignedRecord;
use tally_kernel::{Currency, Id, Rate, Timestamp};
use tally_proto::effects::Effects;
use tally_store::trade::{FxTable, insert_fx};
use tally_wire::federation::FxTableView;

/// The signed record's domain.
pub const FX_DOMAIN: &str = "tally/fx-table/v1";
/// Default lifespan, seconds.
const VALID_FOR_S: i64 = 86_400;

fn view(t: FxTable) -> FxTableView {
    FxTableView {
        from: t.from,
        to: t.to,
        rate: t.rate_text,
        numerator: t.numerator,
        denominator: t.denominator,
        valid_from: t.valid_from,
        valid_until: t.valid_until,
        signed: t.signed,
    }
}

impl Sessions {
    /// Publishes a rate from `from` to `to` (operator).
    pub async fn fx_publish(
        &self,
        by: &Principal,
        from: &str,
        to: &str,
        rate: &str,
        valid_for_s: Option<i64>,
    ) -> Result<FxTableView> {
        require_admin(by)?;
        let (from, to) = (Currency::from_code(from)?, Currency::from_code(to)?);
        if from == to {
            return Err(invalid("to", "another currency than `from`"));
        }
        let parsed = Rate::parse(rate, from, to)?;
        let valid_for_s = valid_for_s.unwrap_or(VALID_FOR_S);
        if !(60..=7 * 86_400).contains(&valid_for_s) {
            return Err(invalid("valid_for_s", "60 seconds to 7 days"));
        }
        let now = self.core.now();
        let until = now.plus_seconds(valid_for_s);
        let body = json!({
            "from": from.code(), "to": to.code(), "rate": rate,
            "numerator": parsed.numerator, "denominator": parsed.denominator,
            "valid_from": now.as_micros(), "valid_until": until.as_micros(),
            "operator": self.federation.node_id(),
        });
        let signed = SignedRecord::sign(FX_DOMAIN, &body, self.core.node_key()).map_err(corrupt)?;
        let table = FxTable {
            id: Id::new(),
            from: from.code().into(),
            to: to.code().into(),
            numerator: parsed.numerator,
            denominator: parsed.denominator,
            rate_text: rate.to_string(),
            valid_from: now,
            valid_until: until,
            signed: serde_json::to_string(&signed).map_err(corrupt)?,
        };
        self.core
            .commit(
                format!(":fx:{}", table.id),
                Effects::record("fx_published", body),
                vec![insert_fx(&table)],
            )
            .await?;
        Ok(view(table))
    }

    /// The tables valid now, newest first per pair (any caller).
    pub async fn fx_tables(&self) -> Result<Vec<FxTableView>> {
        let tables = self.core.store().fx_tables(self.core.now(), None).await?;
        Ok(tables.into_iter().map(view).collect())
    }

    /// The rate from `from` to `to` valid at `now` (the newest table), if any.
    pub(super) async fn rate(
        &self,
        from: Currency,
        to: Currency,
        now: Timestamp,
    ) -> Result<Option<Rate>> {
        let tables = self
            .core
            .store()
            .fx_tables(now, Some((from.code(), to.code())))
            .await?;
        Ok(tables.first().map(|t| Rate {
            numerator: t.numerator,
            denominator: t.denominator,
        }))
    }
}
