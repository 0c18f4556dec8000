//! What every part of a node shares: the store, the data directory, the node's identity (its
//! key and CA), the clock, and the signal that wakes the outbox worker. Cheap to clone.
//!
//! Decision: one small shared core that every protocol driver holds, instead of one `Node`
//! object spread over every protocol's file (which made the protocols import each other). The
//! core knows no protocol; the [`crate::node::Node`] composes the core and the protocols.

use crate::identity::{Identity, NodeFiles};
use crate::{Principal, Result, ServiceError};
use std::sync::Arc;
use tally_kernel::Timestamp;
use tally_kernel::crypto::{CertificateAuthority, SigningKey};
use tally_store::Store;
use tokio::sync::Notify;

/// The node's time source: the wall clock unless a test sets one.
#[derive(Clone, Default)]
pub struct NodeClock(pub Option<tally_store::Clock>);

impl NodeClock {
    /// The time now.
    pub fn now(&self) -> Timestamp {
        self.0.as_ref().map_or_else(Timestamp::now, |c| c())
    }
}

impl std::fmt::Debug for NodeClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "NodeClock(test)"
        } else {
            "NodeClock(wall)"
        })
    }
}

/// The shared state of a node.
#[derive(Clone)]
pub struct Core {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    files: NodeFiles,
    identity: Identity,
    dev: bool,
    clock: NodeClock,
    outbox: Arc<Notify>,
    /// `checkpoint_every + batch_max`: the most entries a signed checkpoint can lag.
    checkpoint_gap_max: i64,
}

impl Core {
    pub(crate) fn new(
        store: Store,
        files: NodeFiles,
        identity: Identity,
        dev: bool,
        clock: NodeClock,
        checkpoint_gap_max: i64,
    ) -> Core {
        Core {
            inner: Arc::new(Inner {
                store,
                files,
                identity,
                dev,
                clock,
                outbox: Arc::new(Notify::new()),
                checkpoint_gap_max,
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The data directory's files.
    pub fn files(&self) -> &NodeFiles {
        &self.inner.files
    }

    /// The node key (shared by every node of the database): journal checkpoints, packages,
    /// certificates of verified sessions.
    pub fn node_key(&self) -> &SigningKey {
        &self.inner.identity.node_key
    }

    /// The node CA (shared by every node of the database).
    pub fn ca(&self) -> &CertificateAuthority {
        &self.inner.identity.ca
    }

    /// The node's time (the wall clock unless a test set one).
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// True in development mode.
    pub fn is_dev(&self) -> bool {
        self.inner.dev
    }

    /// Notified whenever a commit enqueued a message: the outbox worker waits on it.
    pub fn outbox_signal(&self) -> Arc<Notify> {
        self.inner.outbox.clone()
    }

    /// The most journal entries a signed checkpoint can lag.
    pub fn checkpoint_gap_max(&self) -> i64 {
        self.inner.checkpoint_gap_max
    }

    /// Checks the node key and CA against the database's (see [`crate::identity`]).
    pub(crate) async fn check_identity(&self) -> Result<()> {
        self.inner.identity.check(self.files(), self.store()).await
    }

    /// The first transfer of the journal entry made under `key`: the hold a protocol's opening
    /// step placed (found through the journal, so it is never missing after a crash).
    pub(crate) async fn transfer_made_by(&self, key: &str) -> Result<Option<tally_kernel::Id>> {
        Ok(match self.store().journal_event(key).await? {
            Some(tally_ledger::Event::Transfers { transfers }) => transfers.first().map(|t| t.id),
            _ => None,
        })
    }

    /// `hold` while it is still pending (a hold the sweeper expired needs no void).
    pub(crate) async fn still_pending(
        &self,
        hold: Option<tally_kernel::Id>,
    ) -> Result<Option<tally_kernel::Id>> {
        Ok(self.pending(hold).await?.map(|t| t.id))
    }

    /// `hold` while it is still pending and not past its expiry: the ledger posts and voids it
    /// no more once its time is over, even before the sweeper marks it expired.
    pub(crate) async fn live_hold(
        &self,
        hold: Option<tally_kernel::Id>,
    ) -> Result<Option<tally_kernel::Id>> {
        let now = self.now();
        Ok(self
            .pending(hold)
            .await?
            .filter(|t| t.expires_at.is_none_or(|at| at > now))
            .map(|t| t.id))
    }

    /// The transfer `hold`, read once, if it is pending.
    pub(crate) async fn pending(
        &self,
        hold: Option<tally_kernel::Id>,
    ) -> Result<Option<tally_ledger::Transfer>> {
        let Some(hold) = hold else {
            return Ok(None);
        };
        Ok(self
            .store()
            .transfer(hold)
            .await?
            .filter(|t| t.state == tally_ledger::TransferState::Pending))
    }

    /// The caller owns `account` (the operator owns every account).
    pub async fn require_owner(
        &self,
        by: &Principal,
        account: tally_kernel::Id,
        why: &'static str,
    ) -> Result<()> {
        if by.is_admin() || self.owns(by, account).await? {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(why))
        }
    }

    /// Ledger account `id`, or `NotFound` naming it.
    pub async fn existing_account(&self, id: tally_kernel::Id) -> Result<tally_ledger::Account> {
        self.store()
            .account(id)
            .await?
            .ok_or_else(|| crate::ServiceError::NotFound {
                what: crate::Missing::Account,
                id: id.to_string(),
            })
    }

    /// True when `account` is one of the caller's own.
    pub async fn owns(&self, by: &Principal, account: tally_kernel::Id) -> Result<bool> {
        Ok(self
            .store()
            .account(account)
            .await?
            .is_some_and(|a| a.owner == by.owner))
    }
}

/// A payment out of a user's own account, as the threshold rule (A6) sees it: every path
/// that moves a user's money out describes itself so before it commits.
#[derive(Debug, Clone)]
pub struct Outflow {
    /// Which path (`transfer`, `hold`, `sale_payment`, `auto_debit`), shown with the code.
    pub operation: &'static str,
    /// The user's account debited.
    pub payer_account: tally_kernel::Id,
    /// The account credited.
    pub payee_account: tally_kernel::Id,
    /// How much.
    pub amount: tally_kernel::Amount,
    /// What for, shown on the second channel.
    pub description: String,
}

/// The threshold rule on a path that moves money: implemented by out-of-band authentication
/// and handed to the drivers that move money by the node, so no driver imports another.
pub trait Gate: Sync {
    /// What the payment under `key` (the path's own idempotency key) must commit with to run
    /// now (a confirmation it uses up, or nothing), or a refusal:
    /// [`ServiceError::ConfirmationRequired`] with the session to confirm, or
    /// [`ServiceError::ConfirmationFailed`] when that session ended unconfirmed.
    fn gate(
        &self,
        by: &Principal,
        key: &str,
        out: Outflow,
    ) -> impl std::future::Future<Output = Result<Vec<tally_store::Attachment>>> + Send;

    /// A ceremony another protocol asks of subscriber `user` before a step that is not a
    /// payment of theirs (binding a pad account for recovery, cancelling a lost pad): a
    /// certified declaration `title` of `form`, under `key`, with the same answers as
    /// [`Gate::gate`] (the rows that use the verified session up with the step, or
    /// `ConfirmationRequired` / `ConfirmationFailed`).
    fn ceremony(
        &self,
        user: &str,
        key: &str,
        title: &str,
        form: &str,
    ) -> impl std::future::Future<Output = Result<Vec<tally_store::Attachment>>> + Send;
}
