//! Escrowed forwards (SPEC P7; `docs/protocols/pads.md`, Escrow): a forward to a provider
//! registered with `escrow`, or sent with the escrow flag, debits the pad by a ledger hold
//! into clearing instead of a transfer, and its charge line is `held` (not in clearing, not
//! settled). The provider's reply marks it `performed` (or `declined`); the holder may
//! `release` it at once or `dispute` it by frame; the operator decides a dispute. The sweeper
//! resolves it: released, or performed at its deadline, is paid (the hold posted whole); held
//! at its deadline (the provider never answered) or declined is refused (the byte debit
//! posted, the price released back to the pad, which becomes active again if it was out of
//! value). Metering: a provider that performed may charge less than the price held (time or
//! resources used, `charge_minor`); then that much is paid and the rest goes back to the pad.
//!
//! ```text
//! held ──reply──> performed ──release | deadline──> released ─sweep─> paid
//!   │  └─reply (not performed)──> declined ───────────────────sweep─> refused
//!   ├──deadline──────────────────────────────────────────────sweep─> refused
//!   └──dispute (held | performed)──> disputed ──operator: pay──> released
//!                                              ├─operator: refuse──> declined
//!                                              └─undecided 12 h after the deadline─> refused
//! ```
//!
//! Each resolution is one step: the ledger's post, the charge line's shares and the forward's
//! state commit together under a guard on the state read, so two sweepers resolve it once.

use super::providers::forward_view;
use super::{Pads, corrupt};
use crate::access::{invalid, require_admin};
use crate::{Principal, Result, ServiceError};
use tally_ledger::Command;
use tally_proto::effects::Effects;
use tally_proto::pad::ids::RequestId;
use tally_proto::pad::machine::Input;
use tally_store::pad_providers::{ForwardRow, move_forward, resolve_charge};
use tally_store::pads::PadRow;
use tally_store::{Attachment, Conflict};
use tally_wire::pads::PadForwardView;

/// The state a holder's `release` or `dispute` frame moves an escrow to, if it may.
pub(super) fn by_holder(f: &ForwardRow, release: bool) -> Option<&'static str> {
    if !f.escrow {
        return None;
    }
    match (release, f.state.as_str()) {
        (true, "held" | "performed") => Some("released"),
        (false, "held" | "performed") => Some("disputed"),
        _ => None,
    }
}

/// How long after its deadline a dispute waits for the operator's verdict, seconds: then it is
/// refused (the price back to the holder), half a day before the ledger's hold runs out.
pub const DISPUTE_GRACE_S: i64 = 12 * 3600;

impl Pads {
    /// The operator's verdict on a disputed escrow: pay the provider, or refuse (the price
    /// goes back to the pad). Resolved at once.
    pub async fn decide_escrow(
        &self,
        by: &Principal,
        request: &str,
        pay: bool,
    ) -> Result<PadForwardView> {
        require_admin(by)?;
        let f = self.forward_where(request, |f| f.escrow).await?;
        let id = RequestId(f.request);
        if f.state == "disputed" {
            let to = if pay { "released" } else { "declined" };
            let now = self.core.now();
            let outcome = self
                .core
                .commit(
                    format!(":pad_verdict:{id}"),
                    Effects::record(
                        "pad_escrow_verdict",
                        serde_json::json!({"request": id, "pay": pay}),
                    ),
                    move_forward(&f.request, "disputed", to, now).to_vec(),
                )
                .await;
            match outcome {
                Ok(_) | Err(ServiceError::Conflict(Conflict::Moved(_))) => {}
                Err(e) => return Err(e),
            }
        } else if !matches!(
            f.state.as_str(),
            "released" | "declined" | "paid" | "refused"
        ) {
            return Err(invalid("request", "only a disputed escrow takes a verdict"));
        }
        let f = self.forward_where(request, |_| true).await?;
        if matches!(f.state.as_str(), "released" | "declined") {
            self.resolve_escrow(&f).await?;
        }
        Ok(forward_view(&self.forward_where(request, |_| true).await?))
    }

    /// Resolves the escrows that are due (the sweeper): released and declined ones, held or
    /// performed ones past their deadline, and disputes undecided [`DISPUTE_GRACE_S`] after
    /// theirs (refused). Returns how many.
    pub async fn sweep_escrows(&self, limit: i64) -> Result<usize> {
        let now = self.core.now();
        let due = self
            .core
            .store()
            .pad_escrows_due(now, now.plus_seconds(-DISPUTE_GRACE_S), limit)
            .await?;
        let mut n = 0;
        for f in due {
            match self.resolve_escrow(&f).await {
                Ok(()) => n += 1,
                // Resolved meanwhile (here or on another node), or the pad moved: next pass.
                Err(ServiceError::Conflict(Conflict::Moved(_))) => {}
                // One escrow that cannot be resolved does not hold up the others.
                Err(e) => tracing::warn!(
                    request = %RequestId(f.request), error = %e,
                    "a pad escrow could not be resolved"
                ),
            }
        }
        Ok(n)
    }

    /// One escrow's resolution: paid (the hold posted whole) when released or performed,
    /// refused otherwise (the byte debit posted, the price released to the pad).
    async fn resolve_escrow(&self, f: &ForwardRow) -> Result<()> {
        let pay = matches!(f.state.as_str(), "released" | "performed");
        let charge = self
            .core
            .store()
            .pad_charge(&f.request)
            .await?
            .ok_or_else(|| corrupt("an escrow without its charge line"))?;
        let debit = charge.operator_minor + charge.provider_minor;
        let hold = self
            .core
            .pending(self.core.transfer_made_by(&f.step_key).await?)
            .await?;
        let now = self.core.now();
        let id = RequestId(f.request);
        let (to, operator, provider, command, back) =
            match (hold.map(|t| (t.id, t.expires_at)), pay) {
                // The ledger's backstop expired the hold: the whole debit went back to the pad
                // (its value already counts it).
                (None, _) => ("refused", 0, 0, None, 0),
                // Its time ran out, and the ledger's expiry pass has not come by yet: it expires in
                // this step (the ledger posts and voids a hold no more once its time is over).
                (Some((pending_id, Some(at))), _) if at <= now => {
                    ("refused", 0, 0, Some(Command::Expire { pending_id }), debit)
                }
                // Metered below the price held: the charge is paid, the rest goes back.
                (Some((pending_id, _)), true)
                    if f.charge_minor.is_some_and(|c| c < f.price_minor) =>
                {
                    let used = f.charge_minor.unwrap_or(f.price_minor);
                    // At the rate of the request's time (the tariff now for older forwards).
                    let mut tariff = self.tariff(charge.currency).await?;
                    if let Some(bps) = f.commission_bps.and_then(|b| u32::try_from(b).ok()) {
                        tariff.commission_bps = bps;
                    }
                    let commission = tariff.commission(used);
                    let bytes = debit - f.price_minor;
                    let posted = bytes + used;
                    let command = if posted > 0 {
                        Command::Post {
                            pending_id,
                            amount_minor: Some(posted),
                        }
                    } else {
                        Command::Void { pending_id }
                    };
                    (
                        "paid",
                        bytes + commission,
                        used - commission,
                        Some(command),
                        f.price_minor - used,
                    )
                }
                (Some((pending_id, _)), true) => (
                    "paid",
                    charge.operator_minor,
                    charge.provider_minor,
                    Some(Command::Post {
                        pending_id,
                        amount_minor: None,
                    }),
                    0,
                ),
                (Some((pending_id, _)), false) => {
                    let bytes = debit - f.price_minor;
                    let command = if bytes > 0 {
                        Command::Post {
                            pending_id,
                            amount_minor: Some(bytes),
                        }
                    } else {
                        Command::Void { pending_id }
                    };
                    ("refused", bytes.max(0), 0, Some(command), f.price_minor)
                }
            };
        let effects = match command {
            Some(c) => Effects::ledger(c),
            None => Effects::record("pad_escrow_expired", serde_json::json!({"request": id})),
        };
        let mut rows: Vec<Attachment> = move_forward(&f.request, &f.state, to, now).to_vec();
        rows.extend(resolve_charge(&f.request, operator, provider));
        if to == "refused" || back > 0 {
            rows.extend(self.credited(&f.pad, back).await?);
        }
        self.core
            .commit(format!(":pad_escrow:{id}"), effects, rows)
            .await
            .map(drop)
    }

    /// The rows of a pad credited `back` minor units: an exhausted pad with bytes left becomes
    /// active (none when nothing changes).
    pub(super) async fn credited(&self, pad: &[u8; 16], back: i64) -> Result<Vec<Attachment>> {
        let row: PadRow = self
            .core
            .store()
            .pad(pad)
            .await?
            .ok_or_else(|| corrupt("an escrow's pad is missing"))?;
        let machine = self.machine(&row)?;
        let available = self.available(row.value_account).await? + back;
        let (after, effects) = machine.handle(
            self.core.now(),
            Input::Credited {
                available_minor: available,
            },
        )?;
        if effects.is_none() {
            return Ok(Vec::new());
        }
        Ok(super::moved(&row, &after, self.core.now())?.to_vec())
    }
}
