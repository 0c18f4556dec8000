//! Anonymous PIN accounts of pads (SPEC P6; `docs/protocols/pads.md`, Accounts): opened with a
//! PIN and nothing else; a pad joins one with a `join` frame (the PIN travels under the pad);
//! a lost pad is cancelled with the PIN and its value restored into the account, which buys
//! new pads from it.
//!
//! PINs: an Argon2id hash; a wrong PIN counts (the only state it changes, under a guard, so two
//! at once count twice); after 5 the account locks for an hour, doubling each time, and a right
//! PIN resets the count. Every route takes the PIN in the body, never in a URL.
//!
//! A pad moves to another account with the node's signed receipt ([`TransferReceipt`]). Not
//! yet: cancelling through an out-of-band ceremony of [2].

use super::{Issue, PadServiceError, Pads, corrupt};
use crate::access::invalid;
use crate::{Missing, Result, ServiceError};
use tally_kernel::crypto::kdf::{PasswordParams, hash_password, verify_password};
use tally_kernel::{Amount, Currency, Id};
use tally_ledger::AccountKind;
use tally_proto::effects::Effects;
use tally_proto::pad::ids::{AccountId, PadId};
use tally_proto::pad::machine::{Input, Pad, PinCheck};
use tally_proto::pad::plain::Pin;
use tally_proto::pad::receipt::TransferReceipt;
use tally_store::Attachment;
use tally_store::pads::{
    PadAccountRow, PadRow, insert_account_value, insert_pad_account, update_pin_tries,
};
use tally_wire::pads::{
    PadAccountBuyRequest, PadAccountOpenRequest, PadAccountValue, PadAccountView, PadAllowRequest,
    PadAllowed, PadSold, PadTransferRequest, PadTransferred,
};

/// Wrong PINs before an account locks.
pub const ATTEMPTS_MAX: i64 = 5;
/// Seconds of the first lockout (each next one doubles).
pub const LOCK_S: i64 = 3600;

/// What a PIN check found, and the rows that record it.
pub(crate) struct PinVerdict {
    pub(crate) check: PinCheck,
    /// Locked now (or before): seconds left.
    pub(crate) locked_for_s: Option<i64>,
    /// The account's tries after the check (committed with the step, right or wrong).
    pub(crate) rows: Vec<Attachment>,
}

fn pin(text: &str) -> Result<Pin> {
    Pin::new(text).map_err(|e| invalid("pin", e.0.to_string()))
}

pub(super) fn account_id(text: &str) -> Result<AccountId> {
    text.parse().map_err(|e| invalid("account", format!("{e}")))
}

impl Pads {
    /// Opens an account controlled by `pin` (no API key: the PIN is the credential).
    pub async fn open_pad_account(&self, req: &PadAccountOpenRequest) -> Result<PadAccountView> {
        let pin = pin(&req.pin)?;
        let digits = pin.expose().to_string();
        let hash = tokio::task::spawn_blocking(move || {
            hash_password(digits.as_bytes(), &PasswordParams::default())
        })
        .await
        .map_err(|e| ServiceError::Setup(e.to_string()))?
        .map_err(|e| ServiceError::Setup(e.to_string()))?;
        let mut id = [0u8; 16];
        crate::identity::getrandom_fill(&mut id)?;
        let row = PadAccountRow {
            id,
            pin_hash: hash,
            attempts: 0,
            lockouts: 0,
            locked_until: 0,
            created_at: self.core.now(),
        };
        self.core
            .commit(
                format!(":pad_account:{}", AccountId(id)),
                Effects::record(
                    "pad_account_opened",
                    serde_json::json!({"account": AccountId(id)}),
                ),
                vec![insert_pad_account(&row)],
            )
            .await?;
        Ok(PadAccountView {
            account: AccountId(id).to_string(),
            values: Vec::new(),
        })
    }

    pub(super) async fn account_row(&self, id: &AccountId) -> Result<PadAccountRow> {
        self.core
            .store()
            .pad_account(&id.0)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: Missing::PadAccount,
                id: id.to_string(),
            })
    }

    /// Checks `pin` against the account: the verdict and the rows recording the tries.
    pub(crate) async fn check_pin(&self, a: &PadAccountRow, pin: &Pin) -> Result<PinVerdict> {
        if let Some(v) = self.locked(a) {
            return Ok(v);
        }
        let (hash, digits) = (a.pin_hash.clone(), pin.expose().to_string());
        let right = tokio::task::spawn_blocking(move || verify_password(&hash, digits.as_bytes()))
            .await
            .map_err(|e| ServiceError::Setup(e.to_string()))?
            .map_err(corrupt)?;
        if !right {
            return Ok(self.wrong(a));
        }
        let after = PadAccountRow {
            attempts: 0,
            ..a.clone()
        };
        Ok(PinVerdict {
            check: PinCheck::Right,
            locked_for_s: None,
            rows: if after == *a {
                Vec::new()
            } else {
                update_pin_tries(a, &after).to_vec()
            },
        })
    }

    /// The verdict on an account locked now, if it is.
    fn locked(&self, a: &PadAccountRow) -> Option<PinVerdict> {
        let now = self.core.now().as_micros();
        (a.locked_until > now).then(|| PinVerdict {
            check: PinCheck::Wrong { attempts_left: 0 },
            locked_for_s: Some((a.locked_until - now + 999_999) / 1_000_000),
            rows: Vec::new(),
        })
    }

    /// One more wrong PIN on `a`: the count, or the lock after the fifth.
    fn wrong(&self, a: &PadAccountRow) -> PinVerdict {
        let now = self.core.now().as_micros();
        let mut after = a.clone();
        let (check, locked_for_s) = if a.attempts + 1 >= ATTEMPTS_MAX {
            let lock_s = LOCK_S << a.lockouts.min(16);
            after.attempts = 0;
            after.lockouts += 1;
            after.locked_until = now + lock_s * 1_000_000;
            (PinCheck::Wrong { attempts_left: 0 }, Some(lock_s))
        } else {
            after.attempts += 1;
            let left = (ATTEMPTS_MAX - after.attempts) as u32;
            (
                PinCheck::Wrong {
                    attempts_left: left,
                },
                None,
            )
        };
        PinVerdict {
            check,
            locked_for_s,
            rows: update_pin_tries(a, &after).to_vec(),
        }
    }

    /// The account, once its PIN is right; a wrong PIN is recorded and refused.
    pub(super) async fn unlocked(
        &self,
        id: &AccountId,
        pin_text: &str,
    ) -> Result<(PadAccountRow, Vec<Attachment>)> {
        let pin = pin(pin_text)?;
        let a = self.account_row(id).await?;
        let v = self.check_pin(&a, &pin).await?;
        match v.check {
            PinCheck::Right => Ok((a, v.rows)),
            PinCheck::Wrong { .. } => {
                // The wrong try is counted even when another request moved the tries first:
                // read them again and count again (else concurrent guesses would go free).
                let v = crate::exec::retrying(|| async {
                    let fresh = self.account_row(id).await?;
                    if let Some(v) = self.locked(&fresh) {
                        return Ok((v.check, v.locked_for_s));
                    }
                    let v = self.wrong(&fresh);
                    self.core
                        .commit(
                            format!(":pad_pin_wrong:{id}:{}", Id::new()),
                            Effects::record("pad_pin_wrong", serde_json::json!({"account": id})),
                            v.rows,
                        )
                        .await?;
                    Ok((v.check, v.locked_for_s))
                })
                .await?;
                Err(ServiceError::Pad(match v {
                    (_, Some(retry_after_s)) => PadServiceError::PinLocked { retry_after_s },
                    (PinCheck::Wrong { attempts_left }, None) => {
                        PadServiceError::PinWrong { attempts_left }
                    }
                    (PinCheck::Right, None) => {
                        return Err(ServiceError::Setup(
                            "bug: a wrong PIN counted as right".into(),
                        ));
                    }
                }))
            }
        }
    }

    /// Pad `pad` and its machine, if it belongs to one of `accounts`; `not_found` otherwise
    /// (the same answer as for no such pad).
    pub(super) async fn pad_of(
        &self,
        pad: &PadId,
        accounts: &[AccountId],
    ) -> Result<(PadRow, Pad)> {
        let not_here = || ServiceError::NotFound {
            what: Missing::Pad,
            id: pad.to_string(),
        };
        let row = self.core.store().pad(&pad.0).await?.ok_or_else(not_here)?;
        let machine = self.machine(&row)?;
        match machine.account {
            Some(a) if accounts.contains(&a) => Ok((row, machine)),
            _ => Err(not_here()),
        }
    }

    /// The account's ledger account in `currency`, opened on first use.
    pub(super) async fn account_value(&self, a: &PadAccountRow, currency: Currency) -> Result<Id> {
        let values = self.core.store().pad_account_values(&a.id).await?;
        if let Some((_, ledger)) = values.iter().find(|(c, _)| *c == currency) {
            return Ok(*ledger);
        }
        let id = AccountId(a.id);
        let ledger = self
            .open_bounded(
                format!(":pad_account_value:{id}:{}", currency.code()),
                "pad-accounts",
                currency,
                AccountKind::Customer,
            )
            .await?;
        self.core
            .commit(
                format!(":pad_account_value_named:{id}:{}", currency.code()),
                Effects::record(
                    "pad_account_value",
                    serde_json::json!({"account": id, "currency": currency.code()}),
                ),
                vec![insert_account_value(&a.id, currency, ledger.id)],
            )
            .await?;
        Ok(ledger.id)
    }

    pub(super) async fn account_view(&self, a: &PadAccountRow) -> Result<PadAccountView> {
        let mut values = Vec::new();
        for (currency, ledger) in self.core.store().pad_account_values(&a.id).await? {
            values.push(PadAccountValue {
                currency: currency.code().into(),
                available_minor: self.available(ledger).await?,
            });
        }
        Ok(PadAccountView {
            account: AccountId(a.id).to_string(),
            values,
        })
    }

    /// The account's value (its PIN in the body).
    pub async fn pad_account(&self, id: &str, pin_text: &str) -> Result<PadAccountView> {
        let id = account_id(id)?;
        let (a, rows) = self.unlocked(&id, pin_text).await?;
        self.reset_tries(&id, rows).await?;
        self.account_view(&a).await
    }

    pub(super) async fn reset_tries(&self, id: &AccountId, rows: Vec<Attachment>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.core
            .commit(
                format!(":pad_pin_right:{id}:{}", Id::new()),
                Effects::record("pad_pin_right", serde_json::json!({"account": id})),
                rows,
            )
            .await
            .map(drop)
    }

    /// Cancels a lost pad of the account (its PIN in the body): the pad takes no more frames,
    /// its twin is deleted, and its available value moves into the account.
    pub async fn cancel_account_pad(
        &self,
        id: &str,
        pad: &str,
        pin_text: &str,
    ) -> Result<PadAccountView> {
        let id = account_id(id)?;
        let pad_id: PadId = pad.parse().map_err(|e| invalid("pad", format!("{e}")))?;
        let (a, rows) = self.unlocked(&id, pin_text).await?;
        self.reset_tries(&id, rows).await?;
        let (row, machine) = self.pad_of(&pad_id, &[id]).await?;
        let to = self.account_value(&a, row.currency).await?;
        let available = self.available(row.value_account).await?;
        self.cancel_pad(
            format!(":pad_cancel:{pad_id}"),
            &row,
            machine,
            Some(to),
            available,
            Vec::new(),
        )
        .await?;
        self.account_view(&a).await
    }

    /// Buys a pad from the account's value (its PIN in the body); the same key answers the
    /// same pad.
    pub async fn buy_from_account(
        &self,
        id: &str,
        idempotency_key: &str,
        req: &PadAccountBuyRequest,
    ) -> Result<(PadSold, bool)> {
        let id = account_id(id)?;
        crate::access::namespaced(
            &crate::Principal {
                key_id: Id::new(),
                role: crate::Role::Customer,
                owner: id.to_string(),
            },
            idempotency_key,
        )?;
        let key = format!(":pad_account_buy:{id}:{idempotency_key}");
        if let Some(row) = self.core.store().pad_by_issue_key(&key).await? {
            return Ok((self.sold(&row, &req.node_url).await?, true));
        }
        let (currency, mode) = self.check_sale(
            &req.currency,
            req.value_minor,
            req.size,
            req.mode.as_deref(),
            &req.node_url,
        )?;
        let (a, rows) = self.unlocked(&id, &req.pin).await?;
        self.reset_tries(&id, rows).await?;
        let from = self.account_value(&a, currency).await?;
        let mut pad = [0u8; 16];
        crate::identity::getrandom_fill(&mut pad)?;
        let issue = Issue {
            key,
            from: Some(from),
            account: Some(id),
            value: Amount::new(req.value_minor, currency),
            size: req.size,
            mode,
            url: req.node_url.clone(),
            memo: format!("{} bought from {id}", PadId(pad)),
            allow: Vec::new(),
        };
        self.issue(issue, pad, Vec::new()).await
    }

    /// Moves a pad of the account to another account (the giving account's PIN in the body)
    /// and answers the node's signed receipt. The same transfer again answers a receipt of the
    /// pad as it is (in the account it went to).
    pub async fn transfer_account_pad(
        &self,
        id: &str,
        pad: &str,
        req: &PadTransferRequest,
    ) -> Result<PadTransferred> {
        let id = account_id(id)?;
        let to = account_id(&req.to)?;
        let pad_id: PadId = pad.parse().map_err(|e| invalid("pad", format!("{e}")))?;
        if to == id {
            return Err(invalid("to", "the pad is in this account already"));
        }
        let (_, rows) = self.unlocked(&id, &req.pin).await?;
        self.reset_tries(&id, rows).await?;
        self.account_row(&to).await?;
        let (row, machine) = self.pad_of(&pad_id, &[id, to]).await?;
        let (after, effects) = machine.handle(self.core.now(), Input::Transfer { to })?;
        if !effects.is_none() {
            self.core
                .commit(
                    format!(":pad_transfer:{pad_id}:{to}:{}", row.up_next),
                    effects,
                    super::moved(&row, &after, self.core.now())?.to_vec(),
                )
                .await?;
        }
        let receipt = TransferReceipt {
            pad: pad_id,
            from: id,
            to,
            value: Amount::new(self.available(row.value_account).await?, row.currency),
            up_next: after.up_next,
            down_low: after.down_low,
            at: self.core.now(),
        }
        .sign(self.core.node_key())
        .map_err(corrupt)?;
        Ok(PadTransferred {
            pad: pad_id.to_string(),
            from: id.to_string(),
            to: to.to_string(),
            receipt: serde_json::to_string(&receipt).map_err(corrupt)?,
        })
    }

    /// Sets the providers a pad of the account may pay (a `forward` to any other is burned
    /// with `provider_not_allowed`, no debit); empty: any. Setting the same list again
    /// changes nothing.
    pub async fn allow_account_pad(
        &self,
        id: &str,
        pad: &str,
        req: &PadAllowRequest,
    ) -> Result<PadAllowed> {
        let id = account_id(id)?;
        let pad_id: PadId = pad.parse().map_err(|e| invalid("pad", format!("{e}")))?;
        let allow = super::allow_list(&req.providers)?;
        let (_, rows) = self.unlocked(&id, &req.pin).await?;
        self.reset_tries(&id, rows).await?;
        crate::exec::retrying(|| async {
            let (row, machine) = self.pad_of(&pad_id, &[id]).await?;
            let (after, effects) = machine.handle(
                self.core.now(),
                Input::Restrict {
                    allow: allow.clone(),
                },
            )?;
            if !effects.is_none() {
                self.core
                    .commit(
                        format!(":pad_allow:{pad_id}:{}", Id::new()),
                        effects,
                        super::moved(&row, &after, self.core.now())?.to_vec(),
                    )
                    .await?;
            }
            Ok(PadAllowed {
                pad: pad_id.to_string(),
                allow: after.allow.iter().map(|p| p.as_str().to_string()).collect(),
            })
        })
        .await
    }
}
