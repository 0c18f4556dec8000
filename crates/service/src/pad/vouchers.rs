//! Vouchers (SPEC P1; `docs/protocols/pads.md`, Pad material and files): cards a retailer sells
//! for cash at the till and a customer redeems, without an account or a name, for a new pad.
//!
//! * **Issue** (the operator): `count` cards of one value for a retailer, `blank`. Each code is
//!   `HMAC-SHA256(voucher key, "tally/voucher-code/v1" 0x00 ‖ issue key ‖ index)` cut to 125
//!   bits, so the same request again answers the same codes; the node keeps only
//!   `HMAC-SHA256(voucher key, code text)`, and the voucher key derives from `pad.key`, so a
//!   leaked database gives no code away.
//! * **Sell** (the retailer, at the till): `blank → sold`; the value moves from the retailer's
//!   account to the voucher float of its currency. The serial is the step's key.
//! * **Redeem** (anyone holding the code, no API key): `sold → redeemed`; the value moves from
//!   the float into a new pad's value account, in the sale's transaction. The code is the
//!   credential and the key: the same code again answers the same pad and file.
//! * **Cancel** (the operator): a stolen `blank` card never sells or redeems; a `sold` one is
//!   refunded to the account that paid it.

use super::{Issue, Pads};
use crate::access::{invalid, namespaced, require_admin};
use crate::{Missing, Principal, Result, ServiceError};
use tally_kernel::crypto::kdf::HmacSha256Key;
use tally_kernel::{Amount, Currency, Id};
use tally_ledger::{AccountKind, Command};
use tally_proto::effects::Effects;
use tally_proto::pad::ids::{VoucherCode, VoucherState};
use tally_store::pads::{VoucherRow, insert_float, insert_voucher, update_voucher};
use tally_wire::pads::{
    PadSold, VoucherIssueRequest, VoucherIssued, VoucherRedeemRequest, VoucherSellRequest,
    VoucherView,
};

/// Most cards one request issues.
pub const ISSUE_MAX: u32 = 100;

/// Why a voucher request was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoucherError {
    /// The card is not in a state that allows this (`details.state`).
    #[error("the voucher is {0}")]
    State(VoucherState),
}

fn view(v: &VoucherRow) -> VoucherView {
    VoucherView {
        serial: v.serial.clone(),
        state: v.state.as_str().into(),
        value_minor: v.value_minor,
        currency: v.currency.code().into(),
        retailer: v.retailer.clone(),
    }
}

fn state(v: &VoucherRow) -> ServiceError {
    ServiceError::Voucher(VoucherError::State(v.state))
}

impl Pads {
    fn voucher_key(&self) -> Result<HmacSha256Key> {
        let k =
            tally_kernel::crypto::kdf::hkdf_sha256(self.key.expose(), b"", b"tally/voucher/v1", 32)
                .map_err(|e| ServiceError::Setup(e.to_string()))?;
        Ok(HmacSha256Key::new(k.expose()))
    }

    fn code_hash(&self, code: &VoucherCode) -> Result<[u8; 32]> {
        Ok(self.voucher_key()?.mac_parts(&[code.text().as_bytes()]))
    }

    /// Issues `count` blank cards of one value for a retailer (the operator). The same key
    /// again answers the same serials and codes.
    pub async fn issue_vouchers(
        &self,
        by: &Principal,
        idempotency_key: &str,
        req: &VoucherIssueRequest,
    ) -> Result<(Vec<VoucherIssued>, bool)> {
        require_admin(by)?;
        let key = namespaced(by, idempotency_key)?;
        let currency = Currency::from_code(&req.currency)?;
        if req.value_minor <= 0 {
            return Err(invalid("value_minor", "a voucher has a positive value"));
        }
        if !(1..=ISSUE_MAX).contains(&req.count) {
            return Err(invalid("count", format!("1 to {ISSUE_MAX} cards")));
        }
        crate::access::check_name("retailer", &req.retailer)?;
        let vk = self.voucher_key()?;
        let now = self.core.now();
        let mut cards = Vec::new();
        let mut rows = Vec::new();
        for i in 0..req.count {
            let draw =
                vk.mac_parts(&[b"tally/voucher-code/v1\0", key.as_bytes(), &i.to_be_bytes()]);
            let mut random = [0u8; 16];
            random.copy_from_slice(&draw[..16]);
            let code = VoucherCode::from_random(random);
            let serial = format!("vs-{}", hex::encode(&draw[16..24]));
            rows.push(insert_voucher(&VoucherRow {
                serial: serial.clone(),
                code_hash: self.code_hash(&code)?,
                state: VoucherState::Blank,
                value_minor: req.value_minor,
                currency,
                retailer: req.retailer.clone(),
                paid_from: None,
                pad: None,
                created_at: now,
                updated_at: now,
            }));
            cards.push(VoucherIssued {
                serial,
                code: code.text(),
            });
        }
        let outcome = self
            .core
            .commit(
                key,
                Effects::record(
                    "pad_vouchers_issued",
                    serde_json::json!({
                        "retailer": req.retailer, "count": req.count,
                        "value": {"minor": req.value_minor, "currency": currency.code()},
                        "serials": cards.iter().map(|c| c.serial.clone()).collect::<Vec<_>>(),
                    }),
                ),
                rows,
            )
            .await?;
        Ok((cards, outcome.replayed))
    }

    async fn voucher_of(&self, serial: &str) -> Result<VoucherRow> {
        self.core
            .store()
            .voucher(serial)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: Missing::Voucher,
                id: serial.into(),
            })
    }

    /// A voucher, for the operator or its retailer.
    pub async fn voucher(&self, by: &Principal, serial: &str) -> Result<VoucherView> {
        let v = self.voucher_of(serial).await?;
        if !by.is_admin() && by.owner != v.retailer {
            return Err(ServiceError::Forbidden("the operator's or its retailer's"));
        }
        Ok(view(&v))
    }

    /// The retailer sells a card at the till: its value moves from `from` (the retailer's
    /// account) into the voucher float. Selling it again answers the same.
    pub async fn sell_voucher(
        &self,
        by: &Principal,
        serial: &str,
        req: &VoucherSellRequest,
    ) -> Result<(VoucherView, bool)> {
        let v = self.voucher_of(serial).await?;
        if !by.is_admin() && by.owner != v.retailer {
            return Err(ServiceError::Forbidden("only its retailer sells a voucher"));
        }
        if v.state == VoucherState::Sold && v.paid_from == Some(req.from) {
            return Ok((view(&v), true));
        }
        if v.state != VoucherState::Blank {
            return Err(state(&v));
        }
        self.core
            .require_owner(
                by,
                req.from,
                "the card is paid from the retailer's own account",
            )
            .await?;
        let float = self.float(v.currency).await?;
        let after = VoucherRow {
            state: VoucherState::Sold,
            paid_from: Some(req.from),
            updated_at: self.core.now(),
            ..v.clone()
        };
        let transfer = Command::Transfer {
            debit_account: req.from,
            credit_account: float,
            amount_minor: v.value_minor,
            currency: v.currency,
            timeout_s: None,
            memo: format!("voucher {serial} sold"),
        };
        let outcome = self
            .core
            .commit(
                format!(":voucher_sale:{serial}"),
                Effects::ledger(transfer),
                update_voucher(&v, &after).to_vec(),
            )
            .await?;
        Ok((view(&after), outcome.replayed))
    }

    /// Redeems a sold card for a new pad (anyone with the code; no API key). The same code
    /// again answers the same pad and file.
    pub async fn redeem_voucher(&self, req: &VoucherRedeemRequest) -> Result<(PadSold, bool)> {
        let code = VoucherCode::parse(&req.code).map_err(|e| invalid("code", e.to_string()))?;
        let v = self
            .core
            .store()
            .voucher_by_code(&self.code_hash(&code)?)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: Missing::Voucher,
                id: "(by code)".into(),
            })?;
        let key = format!(":voucher_redeem:{}", v.serial);
        if v.state == VoucherState::Redeemed {
            let row = self
                .core
                .store()
                .pad_by_issue_key(&key)
                .await?
                .ok_or_else(|| ServiceError::Setup("a redeemed voucher without its pad".into()))?;
            return Ok((self.sold(&row, &req.node_url).await?, true));
        }
        if v.state != VoucherState::Sold {
            return Err(state(&v));
        }
        let mode = self.check_pad(req.size, req.mode.as_deref(), &req.node_url)?;
        let float = self.float(v.currency).await?;
        let mut id = [0u8; 16];
        crate::identity::getrandom_fill(&mut id)?;
        let after = VoucherRow {
            state: VoucherState::Redeemed,
            pad: Some(id),
            updated_at: self.core.now(),
            ..v.clone()
        };
        let issue = Issue {
            key,
            from: Some(float),
            account: None,
            value: Amount::new(v.value_minor, v.currency),
            size: req.size,
            mode,
            url: req.node_url.clone(),
            memo: format!("voucher {} redeemed", v.serial),
            allow: Vec::new(),
        };
        self.issue(issue, id, update_voucher(&v, &after).to_vec())
            .await
    }

    /// Cancels a card (the operator): a blank one never sells; a sold one is refunded to the
    /// account that paid it.
    pub async fn cancel_voucher(&self, by: &Principal, serial: &str) -> Result<VoucherView> {
        require_admin(by)?;
        let v = self.voucher_of(serial).await?;
        let after = VoucherRow {
            state: VoucherState::Cancelled,
            updated_at: self.core.now(),
            ..v.clone()
        };
        let effects = match (v.state, v.paid_from) {
            (VoucherState::Blank, _) => Effects::record(
                "pad_voucher_cancelled",
                serde_json::json!({"serial": serial}),
            ),
            (VoucherState::Sold, Some(from)) => Effects::ledger(Command::Transfer {
                debit_account: self.float(v.currency).await?,
                credit_account: from,
                amount_minor: v.value_minor,
                currency: v.currency,
                timeout_s: None,
                memo: format!("voucher {serial} cancelled, refunded"),
            }),
            _ => return Err(state(&v)),
        };
        self.core
            .commit(
                format!(":voucher_cancel:{serial}"),
                effects,
                update_voucher(&v, &after).to_vec(),
            )
            .await?;
        Ok(view(&after))
    }

    /// The voucher float of `currency`, opened on first use (its key names the currency, so
    /// two nodes opening it at once share one account).
    async fn float(&self, currency: Currency) -> Result<Id> {
        if let Some(a) = self.core.store().pad_float(currency).await? {
            return Ok(a);
        }
        let account = self
            .open_bounded(
                format!(":pad_float:{}", currency.code()),
                "operator",
                currency,
                AccountKind::Operator,
            )
            .await?;
        self.core
            .commit(
                format!(":pad_float_named:{}", currency.code()),
                Effects::record(
                    "pad_float",
                    serde_json::json!({"currency": currency.code(), "account": account.id}),
                ),
                vec![insert_float(currency, account.id)],
            )
            .await?;
        self.core
            .store()
            .pad_float(currency)
            .await?
            .ok_or_else(|| ServiceError::Setup("bug: the voucher float was not kept".into()))
    }
}
