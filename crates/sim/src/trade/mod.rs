//! Trading sessions across two nodes (issue [7], SPEC M1–M9): node A, the customers' account
//! manager (AM, in EUR), and node B, the merchants' operator and mediating trusted agent (MTA,
//! merchants paid in USD and in EUR, B's operator publishing the EUR → USD table), each a real
//! `tally_service::Node` on its own SQLite directory, peered both ways, sharing one fake clock
//! (envelopes more than 300 s off are refused).
//!
//! Each step the seed picks one of: a customer at A opens a session (sometimes beyond what it
//! may spend, sometimes naming a merchant B does not know; sometimes its answer is lost and it
//! retries with the same idempotency key); a merchant at B answers an informed session; a
//! customer buys at the merchant's agent (the real `purchase::Tab`, kept by the simulator); a
//! side posts its signed record (usually agreeing, sometimes not, sometimes twice, sometimes a
//! second different one); a customer whose session is cleared starts the session's next
//! transaction (M4) with a new deposit (sometimes beyond what it may spend; sometimes its
//! answer is lost and it sends the same request again, a replay; sometimes too soon, or naming
//! another transaction or deposit: refused), after which its wallet, the agent's tab and both
//! records are of the new transaction (often, a session its merchant ended: B refuses it,
//! `ended`, and A voids its hold); a merchant at B ends one of its sessions (its agent's word
//! on the merchant's terminate: taken once, the same word again answers the same and changes
//! nothing; another merchant's word, or one for a session B does not know yet, is not found;
//! sometimes B crashes right after and keeps it), the current transaction concluding as
//! usual and no next one opening; a node's outbox rows for its peer are sealed onto the
//! simulated wire ([`net`]); the wire delivers one of them to the other node's
//! `receive_peer_message`, as `POST /v1/peer/messages` would (dropped, duplicated, reordered,
//! held back, its answer lost); the clock moves; the timers run; B's operator publishes a
//! table; B's operator settles a dispute (on both records or on the merchant's alone;
//! sometimes beyond the deposit, or a session settled before: the same verdict again, or
//! another); a node crashes (also between a commit and its delivery, and between taking a
//! message and answering it) and restarts from its directory. The clearing goes in two phases
//! over the same wire: B sends it (`clearing`), A posts and answers `session_posted` (or
//! `session_released` when its hold is gone), and B pays the merchant on that word, or on the
//! next transaction's initiation when it overtakes the word. After every step the invariants
//! of [`check`] hold on both nodes. At the end every customer retries what it never heard back
//! about (openings and next transactions), both sides conclude what is open, the wire drains
//! without faults and the clock passes every timeout; once, B's operator rules on the disputes
//! left; once, the customers of the merchant in agent mode start one more transaction where
//! there is time for it and buy in it, and it ends the same way; so do the customers of every
//! session its merchant ended, cleared with time left, and theirs opens nothing: once the wire
//! drained it is refused at B (`ended`) and aborted at A for that reason, its hold voided.
//! Then every session at A has ended, consistently with B, none at B waits for A's word on a
//! clearing, no session the merchant ended opened a transaction after its word (its hold
//! released, nothing posted), and the audits pass.
//!
//! The messages go through the simulator's own wire rather than HTTP (the `http` crate is not a
//! dependency): what the HTTP route and the peer channel decide is copied here (a 2xx marks the
//! row sent; `peer_refused` and other 4xx fail it for good; an answer that never comes leaves
//! the row leased, so it is sent again). Rejected: driving the nodes' own outbox workers, which
//! run on the wall clock and in tasks of their own, so a seed would not replay.

mod check;
mod net;
mod parties;

use crate::Config;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tally_kernel::crypto::SigningKey;
use tally_kernel::{Amount, Currency, Id, Timestamp};
use tally_ledger::AccountKind;
use tally_proto::session::conclusion::{Clearing, Side};
use tally_proto::session::ids::{NodeId, SessionId, TransactionId};
use tally_proto::session::purchase::Tab;
use tally_proto::session::trade::{AmState, MtaState};
use tally_service::ledger_ops::{OpenAccount, TransferOrder};
use tally_service::session::SessionSettings;
use tally_service::{Node, NodeClock, NodeConfig, Principal, Role};
use tally_wire::federation::{
    AddPeerRequest, NextTransaction, OpenTradingSession, SessionMerchantRequest,
};

/// The customers' node.
const A: usize = 0;
/// The merchants' node.
const B: usize = 1;
const NAMES: [&str; 2] = ["A", "B"];
/// What B's operator may publish for EUR → USD.
const RATES: [&str; 4] = ["1.0842", "0.9731", "1.25", "1"];

/// What a trading run did, for the summary.
#[derive(Debug, Default, Clone)]
pub struct TradeOutcome {
    /// Sessions opened at A (its rows at the end).
    pub opened: usize,
    /// Opening requests refused because the deposit was beyond what the customer may spend.
    pub refused_opens: usize,
    /// Opening requests sent again after a lost answer that came back as the same session.
    pub replays: usize,
    /// Sessions cleared (at both nodes, at the end).
    pub cleared: usize,
    /// Sessions disputed (at both nodes, at the end).
    pub disputed: usize,
    /// Sessions B refused (unknown merchant, no rate, declined, unanswered).
    pub refused: usize,
    /// Sessions A aborted (refused, or unanswered in time).
    pub aborted: usize,
    /// Sessions B took although A had aborted them (the ack came after A's wait): open at B at
    /// the end, as the protocol has no session end yet.
    pub orphaned: usize,
    /// Purchases taken by merchant agents.
    pub purchases: usize,
    /// Signed records the nodes took.
    pub records: usize,
    /// Disputes B's operator settled (verdicts taken).
    pub verdicts: usize,
    /// Clearings A answered `session_released` (its hold was gone): B paid nothing, the
    /// session expired at both nodes (at the end).
    pub released: usize,
    /// Next transactions' initiations that reached B while it still waited for A's word on
    /// the clearing before (`session_posted` overtaken): B paid the merchant on them.
    pub overtaken: usize,
    /// A session's next transactions (M4) started at A (its sessions' transactions beyond
    /// the first, at the end).
    pub next_transactions: usize,
    /// Transactions beyond a session's first that cleared (at the end).
    pub next_cleared: usize,
    /// Next transactions refused because the deposit was beyond what the customer may spend.
    pub refused_nexts: usize,
    /// Next-transaction requests sent again after a lost answer that came back as the same
    /// transaction (replays).
    pub next_replays: usize,
    /// Sessions their merchant ended (B took its word; at the end).
    pub ended_by_merchant: usize,
    /// Next transactions B refused because the merchant had ended the session (at the end).
    pub refused_ended: usize,
    /// Node crashes and restarts.
    pub crashes: usize,
    /// Messages delivered with their answer back to the sender.
    pub delivered: usize,
    /// Messages lost on the wire.
    pub dropped: usize,
    /// Messages delivered twice (or more).
    pub duplicated: usize,
    /// Messages held back on the way (delivered much later, or refused as stale).
    pub held: usize,
    /// Messages whose sender had given up waiting (held back, or its sender crashed).
    pub late: usize,
    /// Answers lost on the way back (the sender sends again).
    pub answers_lost: usize,
    /// Messages the receiver refused, by reason.
    pub refusals: BTreeMap<String, usize>,
}

impl TradeOutcome {
    /// Adds another run's figures.
    pub fn add(&mut self, o: &TradeOutcome) {
        self.opened += o.opened;
        self.refused_opens += o.refused_opens;
        self.replays += o.replays;
        self.cleared += o.cleared;
        self.disputed += o.disputed;
        self.refused += o.refused;
        self.aborted += o.aborted;
        self.orphaned += o.orphaned;
        self.purchases += o.purchases;
        self.records += o.records;
        self.verdicts += o.verdicts;
        self.released += o.released;
        self.overtaken += o.overtaken;
        self.next_transactions += o.next_transactions;
        self.next_cleared += o.next_cleared;
        self.refused_nexts += o.refused_nexts;
        self.next_replays += o.next_replays;
        self.ended_by_merchant += o.ended_by_merchant;
        self.refused_ended += o.refused_ended;
        self.crashes += o.crashes;
        self.delivered += o.delivered;
        self.dropped += o.dropped;
        self.duplicated += o.duplicated;
        self.held += o.held;
        self.late += o.late;
        self.answers_lost += o.answers_lost;
        for (k, v) in &o.refusals {
            *self.refusals.entry(k.clone()).or_default() += v;
        }
    }
}

impl std::fmt::Display for TradeOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} sessions opened ({} cleared, {} disputed, {} refused by B, {} aborted at A, {} \
             orphaned at B), {} opens refused for want of money, {} replays, {} purchases, {} \
             records, {} verdicts, {} clearings released, {} next transactions ({} cleared, {} \
             refused for want of money, {} replays, {} paid at B on their initiation), {} \
             sessions ended by their merchant ({} next transactions refused so), {} crashes; \
             wire: {} delivered, {} dropped, {} duplicated, {} held back, {} late, {} \
             answers lost; refused: {:?}",
            self.opened,
            self.cleared,
            self.disputed,
            self.refused,
            self.aborted,
            self.orphaned,
            self.refused_opens,
            self.replays,
            self.purchases,
            self.records,
            self.verdicts,
            self.released,
            self.next_transactions,
            self.next_cleared,
            self.refused_nexts,
            self.next_replays,
            self.overtaken,
            self.ended_by_merchant,
            self.refused_ended,
            self.crashes,
            self.delivered,
            self.dropped,
            self.duplicated,
            self.held,
            self.late,
            self.answers_lost,
            self.refusals
        )
    }
}

/// What a trading run does beyond the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct TradeOptions {
    /// The clock sometimes jumps by a day or more while sessions are open, beyond a deposit's
    /// hold (the session's lifetime plus the clearing grace).
    pub long_jumps: bool,
    /// A session still open at B at the end while A aborted it (B's ack came after A gave up)
    /// fails the run, instead of being counted as `orphaned`.
    pub strict_end: bool,
}

/// One node of the pair.
struct Site {
    config: NodeConfig,
    node: Node,
    admin: Principal,
    id: NodeId,
    /// Bumped by every crash: answers to what an earlier life sent are lost.
    epoch: u64,
}

struct Customer {
    principal: Principal,
    account: Id,
    /// What the operator paid in (EUR minor units).
    funded: i64,
}

struct Merchant {
    name: String,
    principal: Principal,
    account: Id,
    currency: Currency,
    /// The merchant agent's key, registered at B.
    agent: SigningKey,
    /// Agent mode: B acks its sessions at once.
    auto_ack: bool,
}

/// The customer's wallet for a session: its purchases as it counted them.
#[derive(Debug, Clone, Default)]
struct Wallet {
    spent: i64,
    count: u64,
    list: [u8; 32],
}

/// A session as its two parties know it: the customer's wallet and the merchant agent's tab,
/// of the transaction they are on (the session's first, then each next one the customer heard
/// its AM start, M4).
struct Trade {
    id: SessionId,
    /// The number of the transaction the wallet, the tab and the records are of.
    txn: u64,
    customer: usize,
    /// `None`: a merchant B does not know.
    merchant: Option<usize>,
    key: SigningKey,
    /// The tab's MAC key, fresh for each transaction.
    mac_key: [u8; 32],
    tab: Option<Tab>,
    wallet: Wallet,
    /// The records each side's node took.
    customer_record: Option<Vec<u8>>,
    merchant_record: Option<Vec<u8>>,
    /// A request for the next transaction whose answer the customer never got: it sends it
    /// again (and starts nothing else meanwhile).
    lost_next: Option<NextRequest>,
    /// The transaction B was on when the merchant ended the session (B took its word): no
    /// transaction after it opens.
    ended_at: Option<u64>,
}

impl Trade {
    /// The transaction the parties are on.
    fn transaction(&self) -> TransactionId {
        TransactionId {
            session: self.id,
            seq: self.txn,
        }
    }
}

/// A request for a session's next transaction as the customer keeps it, to send again.
struct NextRequest {
    body: NextTransaction,
    /// The new tab's MAC key.
    mac_key: [u8; 32],
    /// `None` while never sent; once sent and its answer lost, whether that attempt started
    /// the transaction (hidden from the customer).
    took: Option<bool>,
}

/// A transaction that ended (cleared at A) before its session's next one started, as both
/// nodes had it then: the machines keep the current transaction only, the checks of the ones
/// before read it here (taken when the next one started, see `parties::next_transaction`).
/// B may not have paid it yet then (`clearing`, A's `session_posted` on its way): B pays it
/// once that word, or the next transaction's initiation, reaches it.
#[derive(Debug, Clone)]
struct Done {
    /// The deposit held at A (customer minor units).
    deposit: i64,
    /// The clearing, the same at both nodes: what A posted from the deposit
    /// (`customer_total`), what B pays the merchant (`total`, its currency).
    clearing: Clearing,
    /// Where B pays it, and from which account owed by A.
    account: Option<Id>,
    owed_by: Option<Id>,
}

impl Done {
    /// What A posted from the deposit (customer minor units).
    fn customer_total(&self) -> i64 {
        self.clearing.customer_total.minor
    }
}

/// An opening request as the customer keeps it, to send again.
struct OpenRequest {
    customer: usize,
    merchant: Option<usize>,
    key: String,
    body: OpenTradingSession,
    session_key: SigningKey,
    mac_key: [u8; 32],
}

/// An opening request whose answer the customer never got.
struct LostOpen {
    request: OpenRequest,
    /// The session it made (hidden from the customer), if it made one.
    took: Option<SessionId>,
}

type Step<T> = Result<T, String>;

fn unexpected(e: impl std::fmt::Display) -> String {
    format!("unexpected failure: {e}")
}

fn currency(code: &str) -> Currency {
    // The three codes used here are ISO-4217 codes the kernel knows.
    Currency::from_code(code).unwrap_or_else(|_| unreachable!("{code} is a currency"))
}

fn eur(minor: i64) -> Amount {
    Amount::new(minor, currency("EUR"))
}

/// The simulated pair of nodes.
pub struct TradeSim {
    config: Config,
    options: TradeOptions,
    rng: StdRng,
    _dir: tempfile::TempDir,
    clock: Arc<AtomicI64>,
    sites: Vec<Site>,
    customers: Vec<Customer>,
    merchants: Vec<Merchant>,
    trades: Vec<Trade>,
    lost: Vec<LostOpen>,
    /// Transactions that ended before their session's next one, by label (`<session>` for a
    /// first, `<session>.<n>` after: as billing records name them).
    done: BTreeMap<String, Done>,
    wire: Vec<net::Packet>,
    /// Messages held back somewhere on the way: they arrive much later.
    held: Vec<net::Packet>,
    /// Every purchase's item carries it: it must never reach a node.
    marker: String,
    keys: usize,
    trace: Vec<String>,
    /// The next transactions started at the end of a run in sessions their merchant had
    /// ended (`next_at_end`): refused once the wire drains.
    refused_at_end: Vec<TransactionId>,
    /// `SIM_VERBOSE` set: every step is printed as it is taken.
    verbose: bool,
    outcome: TradeOutcome,
}

impl TradeSim {
    /// A pair for `config.seed`: A with three funded customers, B with three merchants (two in
    /// USD, one in EUR; one in agent mode) and an EUR → USD table, peered both ways.
    pub async fn new(config: Config, options: TradeOptions) -> Result<TradeSim, crate::Failure> {
        let fail = |what: String| crate::Failure {
            seed: config.seed,
            step: 0,
            what,
            trace: Vec::new(),
        };
        let dir = crate::scratch_dir().map_err(|e| fail(e.to_string()))?;
        let clock = Arc::new(AtomicI64::new(1_800_000_000_000_000));
        let mut sites = Vec::new();
        for name in ["a", "b"] {
            let c = clock.clone();
            let node_config = NodeConfig {
                dev: true,
                clock: NodeClock(Some(Arc::new(move || Timestamp(c.load(Ordering::SeqCst))))),
                sessions: SessionSettings::default(),
                ..NodeConfig::new(dir.path().join(name))
            };
            let (node, admin_key) = Node::open(&node_config)
                .await
                .map_err(|e| fail(e.to_string()))?;
            let admin_key = admin_key.ok_or_else(|| fail("no admin key".into()))?;
            let admin = node
                .authenticate(admin_key.expose())
                .await
                .map_err(|e| fail(e.to_string()))?;
            let id = node.federation().node_id();
            sites.push(Site {
                config: node_config,
                node,
                admin,
                id,
                epoch: 0,
            });
        }
        let mut rng = StdRng::seed_from_u64(config.seed);
        let marker = format!("sim-secret-{:016x}", rng.random::<u64>());
        let mut sim = TradeSim {
            config,
            options,
            rng,
            _dir: dir,
            clock,
            sites,
            customers: Vec::new(),
            merchants: Vec::new(),
            trades: Vec::new(),
            lost: Vec::new(),
            done: BTreeMap::new(),
            wire: Vec::new(),
            held: Vec::new(),
            marker,
            keys: 0,
            trace: Vec::new(),
            refused_at_end: Vec::new(),
            verbose: std::env::var_os("SIM_VERBOSE").is_some(),
            outcome: TradeOutcome::default(),
        };
        sim.setup().await.map_err(fail)?;
        Ok(sim)
    }

    fn now(&self) -> Timestamp {
        Timestamp(self.clock.load(Ordering::SeqCst))
    }

    fn advance(&mut self, seconds: i64) {
        self.clock.fetch_add(seconds * 1_000_000, Ordering::SeqCst);
    }

    fn node(&self, site: usize) -> Node {
        self.sites[site].node.clone()
    }

    fn key(&mut self) -> String {
        self.keys += 1;
        format!("sim-{}", self.keys)
    }

    fn seed32(&mut self) -> [u8; 32] {
        self.rng.random()
    }

    fn note(&mut self, what: String) {
        if self.verbose {
            eprintln!("{what}");
        }
        self.trace.push(what);
        if self.trace.len() > 60 {
            self.trace.remove(0);
        }
    }

    async fn principal(&self, site: usize, name: &str, role: Role) -> Step<Principal> {
        let s = &self.sites[site];
        let (_, secret) = s
            .node
            .issue_api_key(&s.admin, role, name, "sim")
            .await
            .map_err(unexpected)?;
        s.node
            .authenticate(secret.expose())
            .await
            .map_err(unexpected)
    }

    async fn account(&self, site: usize, owner: &str, code: &str, kind: AccountKind) -> Step<Id> {
        let s = &self.sites[site];
        let (account, _) = s
            .node
            .open_account(
                &s.admin,
                None,
                OpenAccount {
                    owner: Some(owner.into()),
                    currency: code.into(),
                    kind: Some(kind),
                    ..OpenAccount::default()
                },
            )
            .await
            .map_err(unexpected)?;
        Ok(account.id)
    }

    async fn setup(&mut self) -> Step<()> {
        // Peers both ways, as each operator adds the other.
        for (on, other, name) in [(A, B, "bank-b"), (B, A, "bank-a")] {
            let req = AddPeerRequest {
                name: name.into(),
                url: format!("http://{}.test", NAMES[other].to_lowercase()),
                public_key: self.sites[other].node.node_public_key(),
                fingerprint: self.sites[other].id.to_string(),
            };
            let s = &self.sites[on];
            s.node
                .federation()
                .add_peer(&s.admin, &req)
                .await
                .map_err(unexpected)?;
        }
        // A: the operator's settlement account and three funded customers.
        let a = &self.sites[A];
        let world = crate::settlement_account(&a.node, &a.admin).await?;
        for (i, funded) in [100_000, 30_000, 5_000].into_iter().enumerate() {
            let name = format!("cust{i}");
            let principal = self.principal(A, &name, Role::Customer).await?;
            let account = self.account(A, &name, "EUR", AccountKind::Customer).await?;
            let key = self.key();
            let a = &self.sites[A];
            a.node
                .transfer_money(
                    &a.admin,
                    &key,
                    TransferOrder {
                        debit_account: world,
                        credit_account: account,
                        amount: eur(funded),
                        timeout_s: None,
                        memo: None,
                        notify: None,
                    },
                )
                .await
                .map_err(unexpected)?;
            self.customers.push(Customer {
                principal,
                account,
                funded,
            });
        }
        // B: merchants in USD (by hand, and in agent mode) and in EUR (by hand), each with
        // its agent's key; the EUR → USD table.
        for (name, code, auto_ack) in [
            ("usd-shop", "USD", false),
            ("usd-kiosk", "USD", true),
            ("eur-cafe", "EUR", false),
        ] {
            let principal = self.principal(B, name, Role::Merchant).await?;
            let account = self.account(B, name, code, AccountKind::Merchant).await?;
            let agent = SigningKey::from_seed(&self.seed32());
            let b = &self.sites[B];
            b.node
                .sessions()
                .set_merchant(
                    &b.admin,
                    name,
                    &SessionMerchantRequest { account, auto_ack },
                )
                .await
                .map_err(unexpected)?;
            b.node
                .sessions()
                .set_agent_key(&principal, name, &agent.verifying_key().to_hex())
                .await
                .map_err(unexpected)?;
            self.merchants.push(Merchant {
                name: name.into(),
                principal,
                account,
                currency: currency(code),
                agent,
                auto_ack,
            });
        }
        self.publish(RATES[0], 86_400).await
    }

    async fn publish(&mut self, rate: &str, valid_for_s: i64) -> Step<()> {
        self.note(format!("B publishes EUR → USD {rate} for {valid_for_s} s"));
        let b = &self.sites[B];
        b.node
            .sessions()
            .fx_publish(&b.admin, "EUR", "USD", rate, Some(valid_for_s))
            .await
            .map_err(unexpected)?;
        Ok(())
    }

    /// The run: `steps` seeded steps with the invariants after each, then the end (see the
    /// module docs).
    pub async fn run(&mut self) -> Result<TradeOutcome, crate::Failure> {
        for step in 1..=self.config.steps {
            let taken = self.step().await;
            let checked = match taken {
                Ok(()) => check::all(self).await,
                Err(e) => Err(e),
            };
            if let Err(what) = checked {
                return Err(self.failure(step, what));
            }
        }
        let end = self.config.steps + 1;
        if let Err(what) = self.finish().await {
            return Err(self.failure(end, what));
        }
        for site in [A, B] {
            self.sites[site].node.store().close().await;
        }
        Ok(self.outcome.clone())
    }

    fn failure(&self, step: usize, what: String) -> crate::Failure {
        crate::Failure {
            seed: self.config.seed,
            step,
            what,
            trace: self.trace.clone(),
        }
    }

    /// One step, chosen by the seed.
    async fn step(&mut self) -> Step<()> {
        match self.rng.random_range(0..100) {
            0..=9 => self.open_session().await,
            10..=12 => self.retry_open().await,
            13..=22 => self.merchant_answers().await,
            23..=32 => self.buy().await,
            33..=42 => self.conclude().await,
            43..=69 => {
                // The outbox workers send what is due (sometimes one node dies right after it
                // sealed its messages, before it marked them sent), and the wire delivers some.
                for from in [A, B] {
                    if self.rng.random_bool(0.7) {
                        self.pump(from).await?;
                        if self.rng.random_bool(0.03) {
                            self.crash(from).await?;
                        }
                    }
                }
                if !self.held.is_empty() && self.rng.random_bool(0.2) {
                    self.note(format!("{} messages held back arrive", self.held.len()));
                    let held = std::mem::take(&mut self.held);
                    self.wire.extend(held);
                }
                for _ in 0..self.rng.random_range(1..=4) {
                    self.deliver(true).await?;
                }
                Ok(())
            }
            70..=72 => self.next_transaction().await,
            73..=80 => {
                let seconds = match self.rng.random_range(0..100) {
                    // Past a hold's lifetime (the session's plus the clearing grace).
                    90.. if self.options.long_jumps => self.rng.random_range(90_000..=180_000),
                    0..=49 => self.rng.random_range(1..=5),
                    50..=79 => self.rng.random_range(6..=60),
                    80..=94 => self.rng.random_range(61..=300),
                    95..=98 => self.rng.random_range(301..=1_800),
                    _ => self.rng.random_range(1_801..=3_600),
                };
                self.note(format!("clock +{seconds} s"));
                self.advance(seconds);
                Ok(())
            }
            81..=87 => self.timers().await,
            88..=90 => {
                let rate = RATES[self.rng.random_range(0..RATES.len())];
                let valid_for_s = [600, 3_600, 86_400][self.rng.random_range(0..3)];
                self.publish(rate, valid_for_s).await
            }
            91..=93 => self.deliver(true).await,
            94..=95 => self.settle().await,
            96 => {
                // A merchant ends a session; or, after an end, the customer of a session
                // its merchant ended asks for the next transaction once it is cleared.
                if self.rng.random_bool(0.6) && self.next_after_end().await? {
                    return Ok(());
                }
                self.merchant_ends().await
            }
            _ => {
                let site = self.rng.random_range(0..2);
                self.crash(site).await
            }
        }
    }

    /// A node stops dead (nothing beyond what committed survives) and starts again from its
    /// data directory.
    async fn crash(&mut self, site: usize) -> Step<()> {
        self.note(format!("crash {} and restart", NAMES[site]));
        self.outcome.crashes += 1;
        self.sites[site].node.store().close().await;
        let (node, admin) = Node::open(&self.sites[site].config)
            .await
            .map_err(unexpected)?;
        if admin.is_some() {
            return Err("a restart made a second admin key".into());
        }
        if node.federation().node_id() != self.sites[site].id {
            return Err("a restart changed the node's id".into());
        }
        self.sites[site].node = node;
        self.sites[site].epoch += 1;
        Ok(())
    }

    /// Both nodes' timers: expired holds, and sessions whose wait ran out.
    async fn timers(&mut self) -> Step<()> {
        self.note("timers".into());
        for site in [A, B] {
            let node = self.node(site);
            node.store()
                .expire_due(self.now(), 256)
                .await
                .map_err(unexpected)?;
            node.sessions()
                .sweep_timeouts(256)
                .await
                .map_err(unexpected)?;
        }
        Ok(())
    }

    // ----- the end ---------------------------------------------------------------------------

    /// The end of a run: every customer retries what it never heard back about, every open
    /// session is concluded by both sides, the wire drains without faults and the clock passes
    /// every wait; then every session at A has ended, consistently with B, and no session at B
    /// still waits for A's word on its clearing (B paid what A posted, and nothing else). At
    /// last the clock passes every hold's lifetime (disputed deposits are released), and the
    /// audits pass.
    async fn finish(&mut self) -> Step<()> {
        self.note("the end: retries, conclusions, the wire drained, every timer run".into());
        while let Some(lost) = self.lost.pop() {
            self.send_open(lost.request, false, Some(lost.took)).await?;
        }
        for i in 0..self.trades.len() {
            if let Some(r) = self.trades[i].lost_next.take() {
                self.send_next(i, r, false).await?;
            }
        }
        let ack_window_s = self.sites[A].config.sessions.ack_window_s;
        let mut settled = false;
        let mut one_more = true;
        let mut verdicts = true;
        for _ in 0..12 {
            self.drain().await?;
            self.conclude_all().await?;
            self.drain().await?;
            check::all(self).await?;
            if self.settled().await? {
                // Once, B's operator rules on the disputes left (on both records or on the
                // merchant's alone): the AMs post the verdicts like any clearing, or answer
                // that their hold is gone (B then pays nothing).
                if std::mem::take(&mut verdicts) && self.settle_at_end().await? > 0 {
                    self.drain().await?;
                    continue;
                }
                // Once, the customers of the merchant in agent mode start one more transaction
                // where the session has time left for it: it ends like the rest.
                if std::mem::take(&mut one_more) && self.next_at_end().await? > 0 {
                    self.drain().await?;
                    self.refused_as_ended().await?;
                    self.buy_at_end().await?;
                    continue;
                }
                settled = true;
                break;
            }
            self.advance(ack_window_s + 1);
            self.timers().await?;
        }
        if !settled {
            return Err(self.stuck().await?);
        }
        // Past every hold's lifetime: what is still held (disputes) is released.
        let s = &self.sites[A].config.sessions;
        let hold_s = s.lifetime_max_s + s.clearing_grace_s + 1;
        self.advance(hold_s);
        self.timers().await?;
        self.drain().await?;
        check::all(self).await?;
        if !self.settled().await? {
            return Err(self.stuck().await?);
        }
        check::ended(self).await?;
        for site in [A, B] {
            let s = &self.sites[site];
            let audit = s.node.audit(&s.admin).await.map_err(unexpected)?;
            if !audit.ok() {
                return Err(format!(
                    "{}'s audit found problems: {:?}",
                    NAMES[site], audit.ledger.problems
                ));
            }
        }
        Ok(())
    }

    /// Both sides conclude every session they can: the customer where A says open, the
    /// merchant where B says open or concluding; records as counted, of the transaction the
    /// parties are on (every customer heard of its next transactions by now). Each node takes
    /// the record, unless A's hold ran out or B's conclusion deadline passed (their timers
    /// have not run since the clock last moved: they end the session next).
    async fn conclude_all(&mut self) -> Step<()> {
        for i in 0..self.trades.len() {
            let t = &self.trades[i];
            let Some(_) = t.merchant else {
                continue;
            };
            let id = t.id;
            let transaction = t.transaction();
            if t.customer_record.is_none() {
                let principal = self.customers[t.customer].principal.clone();
                let view = self
                    .node(A)
                    .sessions()
                    .show(&principal, &id.to_string())
                    .await
                    .map_err(unexpected)?;
                if view.transaction != transaction.to_string() {
                    return Err(format!(
                        "{id} is on {} at A, and its customer on {transaction}",
                        view.transaction
                    ));
                }
                if AmState::parse(&view.state) == Some(AmState::Open) {
                    self.post(i, Side::Customer, true, 100).await?;
                    // (unless its hold ran out: A's timers end it)
                    let s = self.am(&id).await?.ok_or("a session vanished at A")?;
                    let ran_out = s.release_at > 0 && self.now().as_micros() >= s.release_at;
                    if self.trades[i].customer_record.is_none() && !ran_out {
                        return Err(format!("{id} is open at A, which refused its record"));
                    }
                }
            }
            if self.trades[i].merchant_record.is_none()
                && let Some(s) = self.mta(&id).await?
                && matches!(s.state, MtaState::Open | MtaState::Concluding)
            {
                if s.transaction() != transaction {
                    return Err(format!(
                        "{id} is open at B on {}, and its merchant's agent on {transaction}",
                        s.transaction()
                    ));
                }
                self.post(i, Side::Merchant, true, 100).await?;
                // (unless its conclusion deadline passed: B's timers end it)
                let late = s.conclude_by > 0 && self.now().as_micros() >= s.conclude_by;
                if self.trades[i].merchant_record.is_none() && !late {
                    return Err(format!("{id} is open at B, which refused its record"));
                }
            }
        }
        Ok(())
    }

    /// Every session at A has ended and B has no session waiting for its merchant or for A's
    /// word on a clearing, with nothing on the wire.
    async fn settled(&self) -> Step<bool> {
        let (am, mta) = check::sessions(self).await?;
        let live_a = am
            .values()
            .any(|s| matches!(s.state, AmState::Held | AmState::Open | AmState::Concluding));
        let live_b = mta
            .values()
            .any(|s| matches!(s.state, MtaState::Informed | MtaState::Clearing));
        Ok(!live_a && !live_b && self.quiet().await?)
    }

    /// Why the end did not settle: the sessions still going.
    async fn stuck(&self) -> Step<String> {
        let (am, mta) = check::sessions(self).await?;
        let mut out = Vec::new();
        for (id, s) in &am {
            if matches!(s.state, AmState::Held | AmState::Open | AmState::Concluding) {
                let at_b = mta.get(id).map(|t| t.state.as_str()).unwrap_or("unknown");
                out.push(format!("{id} is {} at A ({at_b} at B)", s.state));
            }
        }
        for (id, t) in &mta {
            if matches!(t.state, MtaState::Informed | MtaState::Clearing) {
                let at_a = am.get(id).map(|s| s.state.as_str()).unwrap_or("unknown");
                out.push(format!("{id} is still {} at B ({at_a} at A)", t.state));
            }
        }
        Ok(format!(
            "after the end, sessions never ended (quiet: {}): {}",
            self.quiet().await?,
            out.join("; ")
        ))
    }
}

/// Runs one seed of the trading simulation; the failure names the seed, the step and what
/// broke.
pub async fn run_trading(config: Config) -> Result<TradeOutcome, crate::Failure> {
    run_trading_with(config, TradeOptions::default()).await
}

/// The same with `options`.
pub async fn run_trading_with(
    config: Config,
    options: TradeOptions,
) -> Result<TradeOutcome, crate::Failure> {
    let mut sim = TradeSim::new(config, options).await?;
    sim.run().await
}

/// The session number of the first session id of `am` in `text`, for a stable order.
fn session_seq(text: &str, am: &NodeId) -> u64 {
    let prefix = format!("{am}.");
    text.find(&prefix)
        .map(|at| {
            text[at + prefix.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|d| d.parse().ok())
        .unwrap_or(0)
}
