//! Recovery of a lost pad without the PIN (SPEC P6; `docs/protocols/pads.md`, Accounts): a PIN
//! account may name an out-of-band subscriber of issue [2], who then cancels the account's lost
//! pads by a code on their second channel, the value restored into the account — some
//! anonymity traded for recovery, as the owner chose.
//!
//! Both steps run the [2] ceremony through [`Gate::ceremony`]: the first call opens a
//! certified-declaration session on the subscriber's second channel and is answered
//! `confirmation_required` with it; once its code is verified, the same call again runs the
//! step, using the session up in the step's own transaction (one code, one step). Binding
//! needs the PIN as well: the owner names the subscriber, the subscriber agrees by the code.

use super::Pads;
use super::accounts::account_id;
use crate::access::{check_name, invalid};
use crate::core::Gate;
use crate::{Result, ServiceError};
use tally_proto::effects::Effects;
use tally_proto::pad::ids::PadId;
use tally_proto::pad::machine::State;
use tally_store::pads::set_recovery_user;
use tally_wire::pads::{PadAccountView, PadRecovery, PadRecoveryRequest};

impl Pads {
    /// Names the account's recovery subscriber (the PIN, then the subscriber's code). Naming
    /// the same subscriber again answers at once.
    pub async fn bind_recovery(
        &self,
        gate: &impl Gate,
        id: &str,
        req: &PadRecoveryRequest,
    ) -> Result<PadRecovery> {
        let id = account_id(id)?;
        check_name("user", &req.user)?;
        let (_, tries) = self.unlocked(&id, &req.pin).await?;
        self.reset_tries(&id, tries).await?;
        let view = PadRecovery {
            account: id.to_string(),
            user: req.user.clone(),
        };
        let store = self.core.store();
        if store.pad_account_recovery(&id.0).await?.as_deref() == Some(req.user.as_str()) {
            return Ok(view);
        }
        let key = format!(":pad_recovery:{id}:{}", req.user);
        let form = format!(
            "Let Tally user {} cancel the lost pads of pad account {id} with a code sent to \
             this channel; their value goes back into the account.",
            req.user
        );
        let mut rows = gate
            .ceremony(&req.user, &key, "Pad account recovery", &form)
            .await?;
        rows.push(set_recovery_user(&id.0, &req.user));
        self.core
            .commit(
                key,
                Effects::record(
                    "pad_recovery_bound",
                    serde_json::json!({"account": id, "user": req.user}),
                ),
                rows,
            )
            .await?;
        Ok(view)
    }

    /// Cancels a lost pad of the account by its recovery subscriber's code, no PIN: it takes
    /// no more frames and its value moves into the account. A cancelled pad answers at once.
    pub async fn cancel_by_code(
        &self,
        gate: &impl Gate,
        id: &str,
        pad: &str,
    ) -> Result<PadAccountView> {
        let id = account_id(id)?;
        let pad_id: PadId = pad.parse().map_err(|e| invalid("pad", format!("{e}")))?;
        let a = self.account_row(&id).await?;
        let user =
            self.core
                .store()
                .pad_account_recovery(&id.0)
                .await?
                .ok_or(ServiceError::Forbidden(
                    "the account names no recovery subscriber: cancel with its PIN",
                ))?;
        let form = format!(
            "Cancel pad {pad_id} of pad account {id}: it takes no more frames, and its value \
             goes into the account."
        );
        // Decided again when a frame moved the pad meanwhile (the session is used up only by
        // the step that commits).
        crate::exec::retrying(|| async {
            let (row, machine) = self.pad_of(&pad_id, &[id]).await?;
            if machine.state == State::Cancelled {
                return Ok(());
            }
            let key = format!(":pad_cancel_oob:{pad_id}");
            let rows = gate
                .ceremony(&user, &key, "Cancel a lost pad", &form)
                .await?;
            let to = self.account_value(&a, row.currency).await?;
            let available = self.available(row.value_account).await?;
            self.cancel_pad(key, &row, machine, Some(to), available, rows)
                .await
        })
        .await?;
        self.account_view(&a).await
    }
}
