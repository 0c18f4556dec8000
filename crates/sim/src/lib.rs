//! A deterministic simulator of a Tally node, in the manner of TigerBeetle's VOPR and
//! quinn-proto's test pair: one seed drives customers, merchants, buyers and receipt parties
//! through all three protocols (out-of-band sessions, locked-delivery sales and payments,
//! receipts with fair exchange) against the real node (`tally_service::Node`) on its real
//! store (SQLite in a temporary directory), over a fake clock.
//!
//! Each step the seed picks what happens next: an actor sends a request (it goes into the
//! simulated network), the network delivers one request (a random one: requests are
//! reordered; some are dropped, some delivered twice, some answered but the answer lost so the
//! client retries with the same idempotency key), the outbox is pumped to the people's phones
//! (messages dropped, delayed, duplicated), timers fire, the clock moves, or the node crashes
//! (between a commit and its effects, or half way through a delivery) and restarts from its
//! data directory. After every step the invariants of [`check`] hold, or the run stops with
//! the seed that replays it: `SIM_SEED=<seed> cargo test -p tally-sim`.
//!
//! The same world also drives the ledger's batch API (module `batches`): the operator's back
//! office sends batches of transfer events in linked chains through the same faulty network
//! (and sends them again), interleaved with the protocols, the clock and the crashes; each
//! chain is created whole or not at all, a retried batch creates nothing twice, closed
//! accounts take nothing, and every account's counters are its transfers' sums, within its
//! bounds, after every step.
//!
//! A second world drives trading sessions across two nodes ([`run_trading`], module `trade`):
//! a customers' node and a merchants' node, peered, on one fake clock, the sealed messages
//! between them carried by a faulty simulated wire; its invariants hold on both nodes and
//! across them after every step.
//!
//! A third world drives anonymous prepaid pads (module `pads`, [`run_pads`]): holders send
//! frames through a faulty network to one node that crashes, providers answer and meter their
//! requests, escrows are released, disputed, decided and run out, the clearing is settled; no
//! pad byte is handed out twice, no value goes below zero, and debits equal what clearing
//! holds plus what settlements paid the providers and the operator, after every step.
//!
//! What the simulator does not do: run two processes (`crates/cli/tests/cluster.rs` does, on
//! PostgreSQL), or make node-internal races deterministic (requests run one after another, so
//! a failure replays exactly from its seed).

mod batches;
pub mod check;
mod pads;
mod trade;
mod world;

pub use batches::BatchOutcome;
pub use pads::{PadsOutcome, run_pads};
pub use trade::{TradeOptions, TradeOutcome, TradeSim, run_trading, run_trading_with};
pub use world::{Failure, Outcome, Sim};

/// What a run does.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// The seed: everything the simulator chooses follows from it.
    pub seed: u64,
    /// Steps of the run.
    pub steps: usize,
}

/// Runs one seed; the failure names the seed, the step and what broke.
pub async fn run(config: Config) -> Result<Outcome, Failure> {
    let mut sim = Sim::new(config).await?;
    sim.run().await
}

/// A failure while a world is set up (step 0, no trace).
pub(crate) fn setup_failure(seed: u64, what: String) -> Failure {
    Failure {
        seed,
        step: 0,
        what,
        trace: Vec::new(),
    }
}

/// The simulator's clock, and the node's view of it: every world starts at the same instant
/// and moves it by hand.
pub(crate) fn fake_clock() -> (
    std::sync::Arc<std::sync::atomic::AtomicI64>,
    tally_service::NodeClock,
) {
    use std::sync::atomic::Ordering;
    let clock = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(1_800_000_000_000_000));
    let c = clock.clone();
    let node_clock = tally_service::NodeClock(Some(std::sync::Arc::new(move || {
        tally_kernel::Timestamp(c.load(Ordering::SeqCst))
    })));
    (clock, node_clock)
}

/// Closes `node`'s store (as a crash leaves it: nothing beyond what committed) and opens the
/// node again from `config`'s directory; a restart must not make a second admin key.
pub(crate) async fn reopen(
    node: &tally_service::Node,
    config: &tally_service::NodeConfig,
) -> Result<tally_service::Node, String> {
    node.store().close().await;
    let (node, admin) = tally_service::Node::open(config)
        .await
        .map_err(|e| format!("unexpected failure: {e}"))?;
    if admin.is_some() {
        return Err("a restart made a second admin key".into());
    }
    Ok(node)
}

/// An unbounded EUR settlement account of the operator (where money enters the world).
pub(crate) async fn settlement_account(
    node: &tally_service::Node,
    admin: &tally_service::Principal,
) -> Result<tally_kernel::Id, String> {
    let (account, _) = node
        .open_account(
            admin,
            None,
            tally_service::ledger_ops::OpenAccount {
                currency: "EUR".into(),
                kind: Some(tally_ledger::AccountKind::Settlement),
                debits_must_not_exceed_credits: Some(false),
                ..tally_service::ledger_ops::OpenAccount::default()
            },
        )
        .await
        .map_err(|e| format!("unexpected failure: {e}"))?;
    Ok(account.id)
}

/// A temporary directory for a world's data, on tmpfs when there is one: the nodes sync every
/// commit.
fn scratch_dir() -> std::io::Result<tempfile::TempDir> {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
}
