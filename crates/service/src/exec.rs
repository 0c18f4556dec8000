//! The one executor: every step of every protocol, and every ledger operation, commits here.
//!
//! A step is what a machine of `tally_proto` returned ([`Effects`]: one ledger command, the
//! messages to send) plus the rows the driver writes with it: the machine's new state, always
//! under a guard on the state it was decided from, and whatever else the step records. All of
//! it commits in one database transaction through the store's batched writer, under the step's
//! idempotency key, so a step happens once or not at all, and a retry of a committed step
//! answers what the first did. A message to another node is an outbox row of kind `peer`
//! (sealed when it is sent, see [`crate::federation`]). A message is stored with its secret by reference
//! ([`tally_proto::effects::SecretRef`]) and rendered only at delivery; a commit that enqueues
//! one wakes the outbox worker at once.
//!
//! One conflict policy ([`retrying`]): when a guard finds that another request moved the row
//! first ([`Conflict::Moved`]), the driver reads again and decides again, a bounded number of
//! times; every other refusal is answered as it is.
//!
//! Rejected: a transaction per driver (each protocol had its own, and its own retry loop);
//! enqueueing messages after the commit (a crash in between would lose them).

use crate::core::Core;
use crate::{Result, ServiceError};
use tally_ledger::Request;
use tally_proto::effects::{Effects, PeerMessage};
use tally_store::outbox::NewMessage;
use tally_store::{Attachment, Conflict, Outcome};

/// Most times a step is decided again after another request moved its row first.
pub const CONFLICT_RETRIES: usize = 8;

impl Core {
    /// Commits one step: its ledger command (the journal entry, under `key`), the driver's
    /// `rows` (the new state under a guard on the previous one, and the rows the step writes)
    /// and its messages, in one transaction. A step with nothing to commit is a bug of its
    /// driver (it should have answered without committing).
    pub async fn commit(
        &self,
        key: String,
        effects: Effects,
        rows: Vec<Attachment>,
    ) -> Result<Outcome> {
        let Effects {
            ledger,
            messages,
            peers,
        } = effects;
        let command = ledger.ok_or_else(|| {
            ServiceError::Setup(format!("bug: step {key} has no journal entry to commit"))
        })?;
        // A development-inbox message is delivered by its commit; others wait for the worker.
        let wake = !peers.is_empty() || messages.iter().any(|m| m.channel != "dev");
        let mut attachments = rows;
        for p in peers {
            attachments.push(Attachment::Message(peer_row(p)?));
        }
        attachments.extend(messages.into_iter().map(|m| {
            Attachment::Message(NewMessage {
                dedup_key: m.dedup_key,
                kind: m.channel,
                address: m.address,
                subject: m.subject,
                body: m.body,
                data: m.data,
                secret: m.secret,
                not_before: None,
            })
        }));
        let outcome = self
            .store()
            .execute_with(
                Request {
                    idempotency_key: key,
                    command,
                },
                attachments,
            )
            .await?;
        if wake && !outcome.replayed {
            self.outbox_signal().notify_one();
        }
        Ok(outcome)
    }
}

/// The outbox dedup-key prefix of a message to a peer node (then its id).
pub(crate) const PEER_DEDUP_PREFIX: &str = ":peer:";
/// Largest body of a message to a peer: its envelope and signature must fit in 64 KiB.
pub const PEER_BODY_LEN_MAX: usize = 48 * 1024;

/// The outbox row of a message to a peer node: address its node id, subject its kind, body its
/// JSON. It is sealed only when the outbox worker sends it.
fn peer_row(p: PeerMessage) -> Result<NewMessage> {
    let body = p.body.to_string();
    if body.len() > PEER_BODY_LEN_MAX {
        return Err(ServiceError::Setup(format!(
            "bug: a {} message to a peer of {} bytes (at most {PEER_BODY_LEN_MAX})",
            p.kind,
            body.len()
        )));
    }
    Ok(NewMessage {
        dedup_key: format!("{PEER_DEDUP_PREFIX}{}", p.id),
        kind: tally_store::federation::PEER_KIND.into(),
        address: p.to.to_string(),
        subject: p.kind,
        body,
        data: serde_json::Value::Null,
        secret: None,
        not_before: None,
    })
}

/// Runs `attempt` (read, decide, commit) again while another request keeps moving its row
/// first, at most [`CONFLICT_RETRIES`] times; any other result is the answer.
pub async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut last = Conflict::Moved("the row kept changing");
    for _ in 0..CONFLICT_RETRIES {
        match attempt().await {
            Err(ServiceError::Conflict(c @ Conflict::Moved(_))) => last = c,
            other => return other,
        }
    }
    Err(ServiceError::Conflict(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retrying_decides_again_only_after_a_moved_row_and_gives_up() {
        let mut calls = 0;
        let r: Result<u32> = retrying(|| {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(ServiceError::Conflict(Conflict::Moved("moved")))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.expect("third try"), 3);
        let mut calls = 0;
        let r: Result<()> = retrying(|| {
            calls += 1;
            async { Err(ServiceError::Conflict(Conflict::Limit("quota"))) }
        })
        .await;
        assert!(matches!(r, Err(ServiceError::Conflict(Conflict::Limit(_)))));
        assert_eq!(calls, 1, "a limit is an answer, not a race");
        let mut calls = 0;
        let r: Result<()> = retrying(|| {
            calls += 1;
            async { Err(ServiceError::Conflict(Conflict::Moved("again"))) }
        })
        .await;
        assert!(matches!(r, Err(ServiceError::Conflict(Conflict::Moved(_)))));
        assert_eq!(calls, CONFLICT_RETRIES);
    }
}
