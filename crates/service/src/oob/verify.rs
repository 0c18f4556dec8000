//! The steps of an open session: a code typed back, a cancellation, a timeout. Each loads the
//! session, feeds its machine, and commits the new state with the machine's effects (and,
//! once verified, the application's) under a guard on the state it read.

use super::{Delivery, Oob, Payload, SessionView, advanced, machine, oob, view};
use crate::access::{corrupt, invalid};
use crate::exec::retrying;
use crate::{Principal, Result, ServiceError};
use tally_kernel::crypto::kdf::sha256;
use tally_kernel::{Secret, Timestamp};
use tally_proto::effects::Effects;
use tally_proto::oob::{Input, OobError, State, Transaction};
use tally_store::oob::{SessionRow, update_session};

/// What a successful verification returns.
#[derive(Debug)]
pub struct Verified {
    /// The session afterwards (with its `result`).
    pub session: SessionView,
    /// For a login: the access token (returned once, stored only as a hash).
    pub token: Option<Secret<String>>,
}

impl Oob {
    /// A session as channel A sees it. The session number is the capability.
    pub async fn session(&self, number: &str) -> Result<SessionView> {
        let row = self.session_row(number).await?;
        self.present(&row).await
    }

    /// Checks a code typed back on channel A. `confirm` is the transaction the confirming
    /// client displays: it must be the one the code was sent for.
    pub async fn verify(
        &self,
        number: &str,
        code: &str,
        confirm: Option<&Transaction>,
    ) -> Result<Verified> {
        if code.len() > 32 {
            return Err(invalid("code", "at most 32 characters"));
        }
        retrying(|| async {
            let row = self.session_row(number).await?;
            self.code_step(&row, code, confirm).await
        })
        .await
        .map_err(|e| match e {
            // Lost every race: the session was decided by others.
            ServiceError::Conflict(_) => oob(OobError::SessionClosed),
            other => other,
        })
    }

    async fn code_step(
        &self,
        row: &SessionRow,
        code: &str,
        confirm: Option<&Transaction>,
    ) -> Result<Verified> {
        let hold_id = self.hold_of(row).await?;
        let hold = self.core.still_pending(hold_id).await?;
        let session = machine(row)?.with_pending_hold(hold);
        let payload: Payload = serde_json::from_str(&row.payload).map_err(corrupt)?;
        let now = self.core.now();
        let (next, effects) = session
            .handle(
                now,
                Input::Code {
                    submitted: code,
                    confirm,
                },
                self.key(),
            )
            .map_err(oob)?;
        let hex_number = next.number_hex();
        let mut after = advanced(row, &next, now)?;
        let verdict = next.verdict();
        let (key, effects, mut rows, token) = match next.state {
            State::Verified => {
                let app = self
                    .application(row, &next, &payload, effects, hold, now)
                    .await?;
                after.result = Some(serde_json::to_string(&app.result).map_err(corrupt)?);
                (
                    format!(":oob:{hex_number}:verified"),
                    app.effects,
                    app.rows,
                    app.token,
                )
            }
            State::Locked => (
                format!(":oob:{hex_number}:locked"),
                effects,
                Vec::new(),
                None,
            ),
            _ => (
                format!(":oob:{hex_number}:attempt:{}", next.attempts),
                effects,
                Vec::new(),
                None,
            ),
        };
        rows.extend(update_session(row, &after));
        let outcome = self.core.commit(key, effects, rows).await?;
        if outcome.replayed {
            return Err(oob(OobError::SessionClosed));
        }
        verdict.map_err(oob)?;
        // The code was typed back, so it was delivered.
        Ok(Verified {
            session: view(&after, Delivery("sent".into(), None), hold_id)?,
            token,
        })
    }

    /// Cancels an open session (the payment hold is released).
    pub async fn cancel(&self, number: &str) -> Result<SessionView> {
        retrying(|| async {
            let row = self.session_row(number).await?;
            let after = self.step(&row, Input::Cancel, "closed").await?;
            self.present(&after).await
        })
        .await
        .map_err(|e| match e {
            ServiceError::Conflict(_) => oob(OobError::SessionClosed),
            other => other,
        })
    }

    /// Feeds every session whose code expired its timeout (its hold is released); returns how
    /// many moved. Safe on every node of a database: each step is guarded.
    pub async fn sweep_timeouts(&self, limit: i64) -> Result<usize> {
        let now = self.core.now();
        let mut moved = 0;
        for row in self.core.store().due_sessions(now, limit).await? {
            match self.step(&row, Input::Timeout, "expired").await {
                Ok(_) => moved += 1,
                // Verified, cancelled or expired by another request meanwhile.
                Err(ServiceError::Conflict(_) | ServiceError::Oob(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(moved)
    }

    /// A step without application effects (cancel, timeout): the machine's effects and the
    /// session row, guarded.
    async fn step(&self, row: &SessionRow, input: Input<'_>, name: &str) -> Result<SessionRow> {
        let hold = self.core.still_pending(self.hold_of(row).await?).await?;
        let session = machine(row)?.with_pending_hold(hold);
        let now = self.core.now();
        let (next, effects) = session.handle(now, input, self.key()).map_err(oob)?;
        let after = advanced(row, &next, now)?;
        let key = format!(":oob:{}:{name}", next.number_hex());
        self.core
            .commit(key, effects, update_session(row, &after).into())
            .await?;
        Ok(after)
    }

    /// The user an access token was granted to, and until when.
    pub async fn token_user(&self, token: &str) -> Result<(String, Timestamp)> {
        if token.is_empty() || token.len() > 200 {
            return Err(ServiceError::Unauthorized);
        }
        self.core
            .store()
            .oob_token(&sha256(token.as_bytes()), self.core.now())
            .await?
            .ok_or(ServiceError::Unauthorized)
    }

    /// Signs out: the access token stops working at once (and so does every request that
    /// presents it). A token signed out already is unknown: signing out again is refused as
    /// unauthorized.
    pub async fn sign_out(&self, token: &str) -> Result<()> {
        let (user, _) = self.token_user(token).await?;
        let hash = sha256(token.as_bytes());
        self.core
            .commit(
                format!(":oob_sign_out:{}", hex::encode(hash)),
                Effects::record("oob_signed_out", serde_json::json!({ "user": user })),
                vec![tally_store::oob::revoke_token(hash)],
            )
            .await?;
        Ok(())
    }

    /// A user's sessions (the user or the operator).
    pub async fn sessions(&self, by: &Principal, user: &str) -> Result<Vec<SessionView>> {
        if !by.is_admin() && by.owner != user {
            return Err(ServiceError::Forbidden(
                "you can only list your own sessions",
            ));
        }
        let rows = self.core.store().oob_sessions_of(user, 100).await?;
        rows.iter()
            .map(|r| view(r, Delivery("-".into(), None), None))
            .collect()
    }
}
