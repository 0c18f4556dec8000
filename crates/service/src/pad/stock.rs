//! Pads as retail stock (SPEC P1; the seed's media "carried on store shelves in blank or
//! inactivated form"): the operator makes a blank pad for a retailer, its file goes onto
//! media with a printed serial (never the pad id); the retailer activates it at the till with
//! a value paid from its own account (the machine's `blank → active`); stock reported stolen
//! is cancelled (`blank → cancelled`, its twin deleted) and replaced by a new blank. A blank
//! pad's frames are refused (`pad_not_active`) and its value account holds nothing.

use super::{Issue, Pads, corrupt};
use crate::access::{check_name, invalid, namespaced, require_admin};
use crate::{Missing, Principal, Result, ServiceError};
use tally_kernel::{Amount, Currency};
use tally_proto::pad::file::Mode;
use tally_proto::pad::machine::{Input, Pad, State};
use tally_store::pads::{PadRow, StockRow, insert_stock, set_replaced_by, update};
use tally_wire::pads::{
    PadActivateRequest, PadStockCancelRequest, PadStockRequest, PadStocked, StockView,
};

impl Pads {
    /// Makes a blank pad for a retailer (the operator); the same key answers the same pad.
    pub async fn stock(
        &self,
        by: &Principal,
        idempotency_key: &str,
        req: &PadStockRequest,
    ) -> Result<(PadStocked, bool)> {
        require_admin(by)?;
        check_name("retailer", &req.retailer)?;
        let currency = Currency::from_code(&req.currency)?;
        let mode = self.check_pad(req.size, req.mode.as_deref(), &req.node_url)?;
        let key = namespaced(by, idempotency_key)?;
        self.blank(
            key,
            &req.retailer,
            currency,
            req.size,
            mode,
            &req.node_url,
            None,
        )
        .await
    }

    /// A blank pad under `key`, with a fresh serial; `replaces` names the serial it replaces.
    #[allow(clippy::too_many_arguments)]
    async fn blank(
        &self,
        key: String,
        retailer: &str,
        currency: Currency,
        size: u64,
        mode: Mode,
        url: &str,
        replaces: Option<&str>,
    ) -> Result<(PadStocked, bool)> {
        if let Some(row) = self.core.store().pad_by_issue_key(&key).await? {
            let serial = self.serial_of(&row).await?;
            return Ok((
                PadStocked {
                    serial,
                    pad: self.sold(&row, url).await?,
                },
                true,
            ));
        }
        let mut id = [0u8; 16];
        crate::identity::getrandom_fill(&mut id)?;
        let mut s = [0u8; 8];
        crate::identity::getrandom_fill(&mut s)?;
        let serial = format!("ps-{}", hex::encode(s));
        let mut rows = vec![insert_stock(&StockRow {
            serial: serial.clone(),
            pad: id,
            retailer: retailer.into(),
            replaced_by: None,
            created_at: self.core.now(),
        })];
        if let Some(old) = replaces {
            rows.push(set_replaced_by(old, &serial));
        }
        let issue = Issue {
            key: key.clone(),
            from: None,
            account: None,
            value: Amount::new(0, currency),
            size,
            mode,
            url: url.into(),
            memo: format!("stock {serial} for {retailer}"),
            allow: Vec::new(),
        };
        let (pad, replayed) = self.issue(issue, id, rows).await?;
        let serial = match replayed {
            true => {
                let row = self
                    .core
                    .store()
                    .pad_by_issue_key(&key)
                    .await?
                    .ok_or_else(|| ServiceError::Setup("a stocked pad is missing".into()))?;
                self.serial_of(&row).await?
            }
            false => serial,
        };
        Ok((PadStocked { serial, pad }, replayed))
    }

    async fn serial_of(&self, row: &PadRow) -> Result<String> {
        self.core
            .store()
            .pad_stock_of(&row.id)
            .await?
            .ok_or_else(|| ServiceError::Setup("a stocked pad without its serial".into()))
    }

    async fn stock_of(&self, by: &Principal, serial: &str) -> Result<(StockRow, PadRow, Pad)> {
        let stock =
            self.core
                .store()
                .pad_stock(serial)
                .await?
                .ok_or_else(|| ServiceError::NotFound {
                    what: Missing::Pad,
                    id: serial.into(),
                })?;
        if !by.is_admin() && by.owner != stock.retailer {
            return Err(ServiceError::Forbidden(
                "only its retailer handles this stock",
            ));
        }
        let row = self
            .core
            .store()
            .pad(&stock.pad)
            .await?
            .ok_or_else(|| ServiceError::Setup("stock without its pad".into()))?;
        let pad = self.machine(&row)?;
        Ok((stock, row, pad))
    }

    fn stock_view(stock: &StockRow, row: &PadRow, pad: &Pad) -> StockView {
        StockView {
            serial: stock.serial.clone(),
            state: pad.state.as_str().into(),
            value_minor: row.face_minor,
            currency: row.currency.code().into(),
            retailer: stock.retailer.clone(),
            replaced_by: stock.replaced_by.clone(),
        }
    }

    /// Activates blank stock at the till (its retailer): the value is paid from the retailer's
    /// account into the pad. The same activation again answers the same.
    pub async fn activate(
        &self,
        by: &Principal,
        serial: &str,
        req: &PadActivateRequest,
    ) -> Result<(StockView, bool)> {
        let (stock, row, pad) = self.stock_of(by, serial).await?;
        if pad.state == State::Active && row.face_minor == req.value_minor {
            return Ok((Self::stock_view(&stock, &row, &pad), true));
        }
        if req.value_minor <= 0 {
            return Err(invalid(
                "value_minor",
                "a pad is activated with a positive value",
            ));
        }
        self.core
            .require_owner(
                by,
                req.from,
                "the value is paid from the retailer's own account",
            )
            .await?;
        let (after, effects) = pad.handle(
            self.core.now(),
            Input::Activate {
                from: req.from,
                into: row.value_account,
                value: Amount::new(req.value_minor, row.currency),
            },
        )?;
        let after_row = PadRow {
            state: after.state.as_str().into(),
            face_minor: req.value_minor,
            machine: serde_json::to_string(&after).map_err(corrupt)?,
            updated_at: self.core.now(),
            ..row.clone()
        };
        self.core
            .commit(
                format!(":pad_activate:{serial}"),
                effects,
                update(&row, &after_row).to_vec(),
            )
            .await?;
        Ok((Self::stock_view(&stock, &after_row, &after), false))
    }

    /// Cancels stock reported stolen (its retailer or the operator): a blank pad never
    /// activates, its twin is deleted, and a new blank replaces it (answered). Cancelling it
    /// again answers the same replacement.
    pub async fn cancel_stock(
        &self,
        by: &Principal,
        serial: &str,
        req: &PadStockCancelRequest,
    ) -> Result<PadStocked> {
        super::check_url(&req.node_url)?;
        let (stock, row, pad) = self.stock_of(by, serial).await?;
        let key = format!(":pad_replace:{serial}");
        let size = pad.size;
        match pad.state {
            State::Blank => {
                self.cancel_pad(
                    format!(":pad_stock_cancel:{serial}"),
                    &row,
                    pad,
                    None,
                    0,
                    Vec::new(),
                )
                .await?;
            }
            State::Cancelled => {}
            State::Active | State::Exhausted => {
                return Err(invalid(
                    "serial",
                    "the pad is active: a holder's pad is cancelled through its account",
                ));
            }
        }
        let mode = Mode::parse(&row.mode).ok_or_else(|| corrupt("a pad's mode"))?;
        let (stocked, _) = self
            .blank(
                key,
                &stock.retailer,
                row.currency,
                size,
                mode,
                &req.node_url,
                Some(serial),
            )
            .await?;
        Ok(stocked)
    }
}
