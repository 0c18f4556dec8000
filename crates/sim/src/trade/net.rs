//! The wire between A and B. A node's outbox rows of kind `peer` are leased and sealed as its
//! outbox worker would (`Federation::outgoing`), and put on the wire; the wire hands one to the
//! other node's `receive_peer_message`, as `POST /v1/peer/messages` does, and takes the answer
//! back to the sender, which marks the row as the peer channel would: taken (2xx) → sent;
//! `peer_refused` or another refusal (4xx) → failed for good.
//!
//! Faults: a message is lost (its row stays leased, so the sender sends it again once the
//! lease runs out), delivered twice, delivered out of order (any message on the wire, not the
//! oldest), held back (it stays on the wire while time passes: when it arrives its sender has
//! given up waiting, and past 300 s the receiver refuses it as stale), or its answer is lost
//! (the receiver took it, the sender sends it again: a duplicate), or the receiver dies between
//! taking it and answering.

use super::{B, NAMES, Step, TradeSim, session_seq, unexpected};
use rand::RngExt;
use tally_kernel::{Id, Timestamp};
use tally_service::ServiceError;

/// How long a leased peer row is withheld from the next lease, seconds
/// (`tally_store::outbox::PEER_LEASE_S`).
pub(super) const LEASE_S: i64 = 15;
/// How long the sender waits for an answer, seconds (the peer channel's request timeout).
const ANSWER_WAIT_S: i64 = 10;

/// A sealed message on the wire.
#[derive(Debug, Clone)]
pub(super) struct Packet {
    /// The sending node.
    from: usize,
    /// Its outbox row there.
    row: Id,
    sealed: String,
    kind: String,
    sealed_at: Timestamp,
    /// The sender's life it was sent in: a crash loses the answer.
    epoch: u64,
}

impl TradeSim {
    /// Leases `from`'s due messages to its peer and puts them on the wire, sealed; returns how
    /// many.
    pub(super) async fn pump(&mut self, from: usize) -> Step<usize> {
        let node = self.node(from);
        let mut due = node
            .store()
            .claim_due(self.now(), 64, LEASE_S)
            .await
            .map_err(unexpected)?;
        due.retain(|m| m.message.kind == tally_store::federation::PEER_KIND);
        // A stable order (row ids are random): by time, kind and session number.
        let am = self.sites[super::A].id;
        due.sort_by_key(|m| {
            (
                m.created_at,
                m.message.subject.clone(),
                session_seq(&m.message.body, &am),
            )
        });
        let n = due.len();
        for m in due {
            let (url, sealed) = node
                .federation()
                .outgoing(&m)
                .await
                .map_err(|e| format!("{} cannot seal a message: {e}", NAMES[from]))?;
            if url.is_none() {
                return Err(format!("{} addressed a message to itself", NAMES[from]));
            }
            self.wire.push(Packet {
                from,
                row: m.id,
                sealed,
                kind: m.message.subject.clone(),
                sealed_at: self.now(),
                epoch: self.sites[from].epoch,
            });
        }
        if n > 0 {
            self.note(format!("{} sends {n} messages", NAMES[from]));
        }
        Ok(n)
    }

    /// Delivers one message on the wire; `faults`: with the wire's faults (see the module
    /// docs), else the oldest, answered.
    pub(super) async fn deliver(&mut self, faults: bool) -> Step<()> {
        if self.wire.is_empty() {
            return Ok(());
        }
        let i = if faults && self.rng.random_bool(0.5) {
            self.rng.random_range(0..self.wire.len())
        } else {
            0
        };
        let p = self.wire.remove(i);
        let fate = if faults {
            self.rng.random_range(0..100)
        } else {
            99
        };
        let to = 1 - p.from;
        let route = format!("{} {} → {}", p.kind, NAMES[p.from], NAMES[to]);
        if fate < 6 {
            self.note(format!("lost: {route}"));
            self.outcome.dropped += 1;
            return Ok(());
        }
        if fate < 10 {
            self.note(format!("held back: {route}"));
            self.outcome.held += 1;
            self.held.push(p);
            return Ok(());
        }
        if fate < 15 {
            self.outcome.duplicated += 1;
            self.wire.push(p.clone());
        }
        // A next transaction's initiation that finds B waiting for A's word on the clearing
        // before stands for that word (B pays the merchant first): counted.
        let initiation = to == B && p.kind == tally_proto::session::trade::INITIATION;
        let clearing = if initiation {
            self.clearing_at_b().await?
        } else {
            0
        };
        let taken = self
            .node(to)
            .receive_peer_message(p.sealed.as_bytes())
            .await;
        if initiation && self.clearing_at_b().await? < clearing {
            self.note("  it stood for session_posted: B paid the clearing before".into());
            self.outcome.overtaken += 1;
        }
        // What the HTTP route answers, as the peer channel reads it: `Ok` is a 2xx; a refusal
        // a 4xx (failed for good); the node failing would be a 5xx, and is a bug here.
        let permanent = match taken {
            Ok(t) => {
                let dup = if t.duplicate { " (a duplicate)" } else { "" };
                self.note(format!("delivered: {route}{dup}"));
                None
            }
            Err(e @ (ServiceError::Store(_) | ServiceError::Setup(_))) => {
                return Err(format!("{} failed taking {route}: {e}", NAMES[to]));
            }
            Err(e) => {
                let reason = match &e {
                    ServiceError::PeerRefused(why) => why.as_str().to_string(),
                    other => format!("other: {other}"),
                };
                self.note(format!("refused: {route}: {e}"));
                *self.outcome.refusals.entry(reason.clone()).or_default() += 1;
                Some(reason)
            }
        };
        if fate < 21 {
            self.note("  the answer is lost".into());
            self.outcome.answers_lost += 1;
            return Ok(());
        }
        if fate < 23 {
            self.note(format!("  {} dies before it answers", NAMES[to]));
            return self.crash(to).await;
        }
        let waited_s = (self.now().as_micros() - p.sealed_at.as_micros()) / 1_000_000;
        if p.epoch != self.sites[p.from].epoch || waited_s > ANSWER_WAIT_S {
            self.note(format!("  late: {} gave up waiting", NAMES[p.from]));
            self.outcome.late += 1;
            return Ok(());
        }
        let store = self.node(p.from).store().clone();
        let now = self.now();
        match permanent {
            None => store.mark_sent(p.row, now).await.map_err(unexpected)?,
            Some(reason) => {
                store
                    .mark_attempt_failed(p.row, now, &reason, true)
                    .await
                    .map_err(unexpected)?;
            }
        }
        self.outcome.delivered += 1;
        Ok(())
    }

    /// Nothing on the wire (or held back) and no message to the peer waiting at either node.
    pub(super) async fn quiet(&self) -> Step<bool> {
        if !self.wire.is_empty() || !self.held.is_empty() {
            return Ok(false);
        }
        for site in [super::A, B] {
            let rows = crate::check::rows(
                &self.node(site),
                "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM outbox \
                 WHERE kind = 'peer' AND state = 'pending'",
            )
            .await?;
            let n = rows
                .first()
                .map(|r| crate::check::int(r, "n"))
                .transpose()?
                .unwrap_or(0);
            if n > 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// How many sessions at B wait for A's word on their clearing.
    async fn clearing_at_b(&self) -> Step<i64> {
        let rows = crate::check::rows(
            &self.node(B),
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM trading_sessions \
             WHERE role = 'mta' AND state = 'clearing'",
        )
        .await?;
        Ok(rows
            .first()
            .map(|r| crate::check::int(r, "n"))
            .transpose()?
            .unwrap_or(0))
    }

    /// Delivers everything, without faults, until no message waits at either node (leases of
    /// messages sent before run out as the clock moves).
    pub(super) async fn drain(&mut self) -> Step<()> {
        let held = std::mem::take(&mut self.held);
        self.wire.extend(held);
        for _ in 0..100 {
            let sent = self.pump(super::A).await? + self.pump(B).await?;
            while !self.wire.is_empty() {
                self.deliver(false).await?;
            }
            if sent == 0 {
                if self.quiet().await? {
                    return Ok(());
                }
                self.advance(LEASE_S + 1);
            }
        }
        Err("the wire never drained: messages are sent again and again".into())
    }
}
