//! Ledger batches in the simulated world (issue [10], TigerBeetle's `create_transfers`): the
//! operator's back office sends batches of transfer events through the same faulty network as
//! every other request (reordered, dropped, repeated, answers lost), the node may crash after a
//! batch committed and before its answer left, and the client sends batches again, old ones
//! too. A batch mixes single transfers, holds with timeouts, posts and voids of holds made
//! earlier or earlier in the same batch, balancing transfers, closing holds and their voids, in
//! linked chains of 1–5 events; some chains are built to fail whatever the ledger holds (a bad
//! event, an id already used, a chain left open at the end of the batch).
//!
//! Checked on every answer: each chain all created or all refused, with one reason (and the
//! open chain's own status) and `linked_event_failed` for the rest; a chain built to fail never
//! created, its bad event answering its own status; an event whose id was already in the ledger
//! never created again (a chain that was in the ledger answers `exists` then
//! `linked_event_failed`); a created transfer is the event asked for.
//!
//! Checked after every step, on the store as it is ([`Batches::check`]): no chain partly in the
//! ledger and none built to fail; no transfer id twice in the journal, the journal's ids are
//! the table's, a stored transfer never changes what it moved; every account's counters are the
//! sums of its transfer rows, and within its bounds; a hold is posted, voided or expired by
//! exactly the one row its state names, never after its timeout; replaying the journal in
//! order, no transfer moves money on a closed account, and the accounts closed are exactly
//! those with a closing hold pending.

use crate::check::{Broken, int, rows, text};
use rand::RngExt;
use rand::rngs::StdRng;
use sqlx::Row;
use std::collections::{BTreeSet, HashMap, HashSet};
use tally_kernel::{Currency, Id, Timestamp};
use tally_ledger::batch::{EventKind, EventStatus, TransferEvent};
use tally_ledger::{
    AccountFlags, AccountKind, Event, Transfer, TransferFlags, TransferKind, TransferState,
};
use tally_service::ledger_ops::OpenAccount;
use tally_service::{Node, Principal};

/// What the batches did in a run.
#[derive(Debug, Default, Clone, Copy)]
pub struct BatchOutcome {
    /// Batches made.
    pub sent: usize,
    /// Batches delivered and answered (repeats included).
    pub deliveries: usize,
    /// Deliveries of a batch delivered before (a retry or a repeat).
    pub retries: usize,
    /// Events created.
    pub created: usize,
    /// Chains of two or more events created whole.
    pub chains_created: usize,
    /// Chains of two or more events refused whole.
    pub chains_refused: usize,
    /// Chains built to fail, refused.
    pub built_to_fail: usize,
    /// Events answered `exists` (they were in the ledger already).
    pub exists: usize,
    /// Holds posted, voided, and closing holds created.
    pub posted: usize,
    /// Holds voided.
    pub voided: usize,
    /// Closing holds created.
    pub closings: usize,
    /// Events refused because an account was closed.
    pub refused_closed: usize,
    /// Posts and voids refused because the hold's time ran out.
    pub refused_expired: usize,
    /// Balancing transfers that moved less than they asked.
    pub clamped: usize,
    /// Node crashes after a batch committed, before its answer reached the client.
    pub crashes: usize,
}

impl BatchOutcome {
    /// Adds another run's figures.
    pub fn add(&mut self, o: &BatchOutcome) {
        self.sent += o.sent;
        self.deliveries += o.deliveries;
        self.retries += o.retries;
        self.created += o.created;
        self.chains_created += o.chains_created;
        self.chains_refused += o.chains_refused;
        self.built_to_fail += o.built_to_fail;
        self.exists += o.exists;
        self.posted += o.posted;
        self.voided += o.voided;
        self.closings += o.closings;
        self.refused_closed += o.refused_closed;
        self.refused_expired += o.refused_expired;
        self.clamped += o.clamped;
        self.crashes += o.crashes;
    }
}

impl std::fmt::Display for BatchOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} batches ({} deliveries, {} retries, {} crashes before the answer), {} events \
             created, chains {} created / {} refused ({} built to fail), {} exists, {} posted, \
             {} voided, {} closing holds, refused: {} closed / {} expired, {} clamped",
            self.sent,
            self.deliveries,
            self.retries,
            self.crashes,
            self.created,
            self.chains_created,
            self.chains_refused,
            self.built_to_fail,
            self.exists,
            self.posted,
            self.voided,
            self.closings,
            self.refused_closed,
            self.refused_expired,
            self.clamped
        )
    }
}

/// What an event was made to do (for the checks and the trace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Single,
    Hold,
    Post,
    Void,
    Balancing,
    Closing,
    /// Built to be refused; the status it must answer when its chain reaches it, if that
    /// does not depend on the ledger's state.
    Bad(Option<EventStatus>),
    /// A copy of an event already created (its id is taken).
    Reused,
}

impl Tag {
    fn letter(self) -> &'static str {
        match self {
            Tag::Single => "S",
            Tag::Hold => "H",
            Tag::Post => "P",
            Tag::Void => "V",
            Tag::Balancing => "B",
            Tag::Closing => "C",
            Tag::Bad(_) => "!",
            Tag::Reused => "R",
        }
    }
}

/// A hold some batch asked for (created or not).
#[derive(Debug, Clone, Copy)]
struct Hold {
    id: Id,
    debit: Id,
    credit: Id,
    currency: Currency,
    amount: i64,
    /// When it runs out, once known to be made.
    expires_at: Option<Timestamp>,
}

/// A linked chain of a batch: `start..end`.
#[derive(Debug, Clone, Copy)]
struct Chain {
    start: usize,
    end: usize,
    /// The batch ends inside it (its last event is linked).
    open: bool,
    /// Built to fail: open, or holding a bad or reused event.
    must_fail: bool,
}

struct Sent {
    events: Vec<TransferEvent>,
    tags: Vec<Tag>,
    chains: Vec<Chain>,
    deliveries: usize,
}

/// What a stored transfer moved; never changes once created.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Moved {
    kind: TransferKind,
    debit: Id,
    credit: Id,
    amount: i64,
    created_at: i64,
    flags: i64,
}

/// A transfer row as the checks read it.
struct Stored {
    id: Id,
    kind: TransferKind,
    state: TransferState,
    debit: Id,
    credit: Id,
    amount: i64,
    pending_id: Option<Id>,
    expires_at: Option<i64>,
    created_at: i64,
    flags: TransferFlags,
}

/// The batch workload and what its checks remember.
pub(crate) struct Batches {
    currencies: [Currency; 2],
    /// Unbounded operator accounts, EUR and USD: where money enters.
    treasury: [Id; 2],
    /// Bounded wallets per currency (debits at most credits).
    wallets: [Vec<Id>; 2],
    /// Bounded EUR wallets that closing holds close (a party to other transfers now and then).
    closable: Vec<Id>,
    /// An EUR account bounded the other way (credits at most debits plus a limit), the target
    /// of balancing credits.
    sink: Id,
    /// The world's customers' accounts (EUR), sometimes a party to a transfer.
    customers: Vec<Id>,
    /// Every hold asked for, and those answered created and not known resolved since.
    holds: Vec<Hold>,
    live: Vec<Hold>,
    /// Closing holds answered created and not known voided since.
    closing: Vec<Hold>,
    /// Events answered `created` (copies are sent again under the same id).
    created: Vec<TransferEvent>,
    sent: Vec<Sent>,
    /// What each stored transfer of a batch moved, as first seen.
    moved: HashMap<Id, Moved>,
    /// Journal entries read so far, the transfer ids they held, accounts closed by them.
    journal_seq: i64,
    journal_ids: HashSet<Id>,
    closed: BTreeSet<Id>,
    /// The journal head at the last check.
    checked_head: i64,
    /// The time a batch is being made at.
    now: Timestamp,
    pub(crate) outcome: BatchOutcome,
}

fn fail(e: impl std::fmt::Display) -> Broken {
    format!("unexpected failure: {e}")
}

fn blob_id(r: &sqlx::any::AnyRow, column: &str) -> Result<Id, Broken> {
    let bytes: Vec<u8> = r.try_get(column).map_err(|e| e.to_string())?;
    Id::from_slice(&bytes).ok_or_else(|| format!("bad id in {column}"))
}

fn is_exists(s: EventStatus) -> bool {
    use EventStatus as S;
    matches!(
        s,
        S::Exists
            | S::ExistsWithDifferentFlags
            | S::ExistsWithDifferentPendingId
            | S::ExistsWithDifferentTimeout
            | S::ExistsWithDifferentDebitAccount
            | S::ExistsWithDifferentCreditAccount
            | S::ExistsWithDifferentAmount
            | S::ExistsWithDifferentUserData128
            | S::ExistsWithDifferentUserData64
            | S::ExistsWithDifferentUserData32
            | S::ExistsWithDifferentCurrency
            | S::ExistsWithDifferentCode
    )
}

/// A fresh event id from the seed (never nil, never all ones).
fn fresh(rng: &mut StdRng) -> Id {
    loop {
        let bytes: [u8; 16] = rng.random();
        if let Some(id) = Id::from_slice(&bytes)
            && !id.0.is_nil()
            && !id.0.is_max()
        {
            return id;
        }
    }
}

fn amount(rng: &mut StdRng) -> i64 {
    match rng.random_range(0..10) {
        0 if rng.random_bool(0.5) => rng.random_range(5_000..80_000),
        0..=4 => rng.random_range(200..5_000),
        _ => rng.random_range(1..200),
    }
}

fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> Option<T> {
    (!items.is_empty()).then(|| items[rng.random_range(0..items.len())])
}

/// The chains of a batch, as the ledger reads its `linked` flags.
fn chains_of(events: &[TransferEvent], tags: &[Tag]) -> Vec<Chain> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, e) in events.iter().enumerate() {
        let last = i + 1 == events.len();
        if e.flags.linked && !last {
            continue;
        }
        let open = e.flags.linked;
        let bad = tags[start..=i]
            .iter()
            .any(|t| matches!(t, Tag::Bad(_) | Tag::Reused));
        out.push(Chain {
            start,
            end: i + 1,
            open,
            must_fail: open || bad,
        });
        start = i + 1;
    }
    out
}

impl Batches {
    /// No accounts yet ([`Batches::setup`] opens them).
    pub(crate) fn empty() -> Batches {
        let code = |c| Currency::from_code(c).expect("a currency");
        Batches {
            currencies: [code("EUR"), code("USD")],
            treasury: [Id::new(), Id::new()],
            wallets: [Vec::new(), Vec::new()],
            closable: Vec::new(),
            sink: Id::new(),
            customers: Vec::new(),
            holds: Vec::new(),
            live: Vec::new(),
            closing: Vec::new(),
            created: Vec::new(),
            sent: Vec::new(),
            moved: HashMap::new(),
            journal_seq: 0,
            journal_ids: HashSet::new(),
            closed: BTreeSet::new(),
            checked_head: -1,
            now: Timestamp(0),
            outcome: BatchOutcome::default(),
        }
    }

    /// Opens the back office's accounts (two currencies) and funds the wallets with one batch.
    pub(crate) async fn setup(
        &mut self,
        node: &Node,
        admin: &Principal,
        customers: Vec<Id>,
    ) -> Result<(), Broken> {
        self.customers = customers;
        let open =
            |currency: Currency, debits_bounded: bool, credits_bounded: bool, limit| OpenAccount {
                owner: Some("backoffice".into()),
                currency: currency.code().into(),
                kind: Some(if debits_bounded {
                    AccountKind::Customer
                } else {
                    AccountKind::Operator
                }),
                limit_minor: Some(limit),
                debits_must_not_exceed_credits: Some(debits_bounded),
                credits_must_not_exceed_debits: Some(credits_bounded),
                imported_at: None,
                history: None,
                references: Default::default(),
            };
        let mut funding = Vec::new();
        for (c, currency) in self.currencies.into_iter().enumerate() {
            let (t, _) = node
                .open_account(admin, None, open(currency, false, false, 0))
                .await
                .map_err(fail)?;
            self.treasury[c] = t.id;
            let wallets = if c == 0 { 5 } else { 2 };
            for w in 0..wallets {
                // One EUR wallet may be overdrawn a little (a credit limit).
                let limit = if c == 0 && w == 2 { 5_000 } else { 0 };
                let (a, _) = node
                    .open_account(admin, None, open(currency, true, false, limit))
                    .await
                    .map_err(fail)?;
                if c == 0 && w >= 3 {
                    self.closable.push(a.id);
                } else {
                    self.wallets[c].push(a.id);
                }
                funding.push(TransferEvent::single(
                    Id::new(),
                    t.id,
                    a.id,
                    50_000,
                    currency,
                ));
            }
        }
        let (sink, _) = node
            .open_account(admin, None, open(self.currencies[0], false, true, 20_000))
            .await
            .map_err(fail)?;
        self.sink = sink.id;
        // The sink has paid out, so it may take balancing credits.
        funding.push(TransferEvent::single(
            Id::new(),
            sink.id,
            self.treasury[0],
            30_000,
            self.currencies[0],
        ));
        let funded = node.transfer_batch(admin, funding).await.map_err(fail)?;
        if funded
            .results
            .iter()
            .any(|r| r.status != EventStatus::Created)
        {
            return Err(format!("the funding batch was refused: {funded:?}"));
        }
        Ok(())
    }

    /// Two different accounts of one currency for a movement, and the currency.
    fn parties(&self, rng: &mut StdRng) -> (Id, Id, Currency) {
        let c = usize::from(rng.random_bool(0.25));
        let mut pool = self.wallets[c].clone();
        if c == 0 && rng.random_bool(0.3) {
            pool.extend(&self.customers);
        }
        if c == 0 && rng.random_bool(0.15) {
            pool.extend(&self.closable);
        }
        let debit = if rng.random_bool(0.1) {
            self.treasury[c]
        } else {
            pick(rng, &pool).unwrap_or(self.treasury[c])
        };
        pool.retain(|a| *a != debit);
        if debit != self.treasury[c] && rng.random_bool(0.1) {
            pool = vec![self.treasury[c]];
        }
        let credit = pick(rng, &pool).unwrap_or(self.treasury[c]);
        (debit, credit, self.currencies[c])
    }

    fn base(
        &self,
        rng: &mut StdRng,
        debit: Id,
        credit: Id,
        minor: i64,
        c: Currency,
    ) -> TransferEvent {
        let mut e = TransferEvent::single(fresh(rng), debit, credit, minor, c);
        e.memo = "sim batch".into();
        if rng.random_bool(0.2) {
            e.user_data_64 = rng.random();
            e.code = rng.random_range(1..5);
        }
        e
    }

    /// A hold to resolve: one made earlier in this batch, one known to be pending, or any
    /// recent one (which may never have been made, or be resolved already).
    fn some_hold(&self, rng: &mut StdRng, here: &[Hold]) -> Option<Hold> {
        let roll = rng.random_range(0..100);
        if !here.is_empty() && roll < 40 {
            return pick(rng, here);
        }
        let (live, late): (Vec<Hold>, Vec<Hold>) = self
            .live
            .iter()
            .partition(|h| h.expires_at.is_none_or(|at| at > self.now));
        if !live.is_empty() && roll < 85 {
            return pick(rng, &live[live.len().saturating_sub(24)..]);
        }
        // Late: its time ran out (the expiry pass may not have seen it yet).
        if !late.is_empty() && roll < 92 {
            return pick(rng, &late[late.len().saturating_sub(24)..]);
        }
        pick(rng, &self.holds[self.holds.len().saturating_sub(24)..])
    }

    fn resolution(&self, rng: &mut StdRng, kind: EventKind, h: Hold) -> TransferEvent {
        fn maybe<T>(rng: &mut StdRng, v: T) -> Option<T> {
            rng.random_bool(0.5).then_some(v)
        }
        let amount = match kind {
            EventKind::Post if rng.random_bool(0.4) => Some(rng.random_range(1..=h.amount)),
            EventKind::Void if rng.random_bool(0.3) => Some(h.amount),
            _ => None,
        };
        TransferEvent {
            kind,
            debit_account: maybe(rng, h.debit),
            credit_account: maybe(rng, h.credit),
            amount_minor: amount,
            currency: maybe(rng, h.currency),
            pending_id: Some(h.id),
            ..TransferEvent::single(fresh(rng), h.debit, h.credit, 1, h.currency)
        }
    }

    /// One event of the mix; holds it makes are added to `here`.
    fn event(&self, rng: &mut StdRng, here: &mut Vec<Hold>) -> (TransferEvent, Tag) {
        let roll = rng.random_range(0..100);
        match roll {
            0..=29 => {
                if let Some(h) = self.some_hold(rng, here) {
                    // Mostly a hold is resolved once in a batch; now and then twice.
                    if rng.random_bool(0.8) {
                        here.retain(|x| x.id != h.id);
                    }
                    let (kind, tag) = if roll < 20 {
                        (EventKind::Post, Tag::Post)
                    } else {
                        (EventKind::Void, Tag::Void)
                    };
                    return (self.resolution(rng, kind, h), tag);
                }
            }
            30..=49 => {
                let (d, c, cur) = self.parties(rng);
                let minor = amount(rng).min(3_000);
                let mut e = self.base(rng, d, c, minor, cur);
                e.kind = EventKind::Pending;
                e.timeout_s = match rng.random_range(0..10) {
                    0 | 1 => None,
                    2 => Some(rng.random_range(1..20)),
                    _ => Some(rng.random_range(30..1_800)),
                };
                here.push(self.hold(&e));
                return (e, Tag::Hold);
            }
            50..=61 => {
                // Balancing: at most what the debit account holds, or what the sink may take.
                let (mut d, mut c, cur) = self.parties(rng);
                let mut e;
                if rng.random_bool(0.35) {
                    (d, c) = (pick(rng, &self.wallets[0]).unwrap_or(d), self.sink);
                    if rng.random_bool(0.3) {
                        d = self.treasury[0];
                    }
                    let minor = amount(rng);
                    e = self.base(rng, d, c, minor, self.currencies[0]);
                    e.flags.balancing_credit = true;
                } else {
                    let minor = amount(rng);
                    e = self.base(rng, d, c, minor, cur);
                    e.flags.balancing_debit = true;
                }
                // As much as there is, or at most a sum that may be more than there is.
                e.amount_minor = rng
                    .random_bool(0.7)
                    .then(|| rng.random_range(1_000..120_000));
                return (e, Tag::Balancing);
            }
            62..=67 => {
                // A closing hold on one of the closable wallets.
                let w = pick(rng, &self.closable).unwrap_or(self.treasury[0]);
                let t = self.treasury[0];
                let debit_side = rng.random_bool(0.6);
                let (d, c) = if debit_side { (w, t) } else { (t, w) };
                let minor = rng.random_range(1..50);
                let mut e = self.base(rng, d, c, minor, self.currencies[0]);
                e.kind = EventKind::Pending;
                e.flags.closing_debit = debit_side;
                e.flags.closing_credit = !debit_side;
                e.timeout_s = rng.random_bool(0.7).then(|| rng.random_range(20..900));
                return (e, Tag::Closing);
            }
            68..=73 => {
                // Reopen: void a closing hold.
                if let Some(h) = pick(rng, &self.closing) {
                    return (self.resolution(rng, EventKind::Void, h), Tag::Void);
                }
            }
            74..=77 => {
                // The sink pays out, so it has room to take credits again.
                let w = pick(rng, &self.wallets[0]).unwrap_or(self.treasury[0]);
                let minor = amount(rng);
                let e = self.base(rng, self.sink, w, minor, self.currencies[0]);
                return (e, Tag::Single);
            }
            78..=81 => {
                // The sink is paid, or holds a payment: at most its debits and its limit.
                let minor = rng.random_range(1_000..40_000);
                let mut e = self.base(rng, self.treasury[0], self.sink, minor, self.currencies[0]);
                if rng.random_bool(0.3) {
                    e.kind = EventKind::Pending;
                    e.timeout_s = Some(rng.random_range(30..1_800));
                    here.push(self.hold(&e));
                    return (e, Tag::Hold);
                }
                return (e, Tag::Single);
            }
            _ => {}
        }
        let (d, c, cur) = self.parties(rng);
        let minor = amount(rng);
        (self.base(rng, d, c, minor, cur), Tag::Single)
    }

    /// An event that is refused whatever the ledger holds.
    fn bad(&self, rng: &mut StdRng, here: &[Hold]) -> (TransferEvent, Tag) {
        use EventStatus as S;
        let eur = self.currencies[0];
        let w = pick(rng, &self.wallets[0]).unwrap_or(self.treasury[0]);
        let t = self.treasury[0];
        let minor = rng.random_range(1..100);
        let mut e = self.base(rng, w, t, minor, eur);
        let expect = match rng.random_range(0..8) {
            0 => {
                e.credit_account = pick(rng, &self.wallets[1]);
                Some(S::AccountsMustHaveTheSameCurrency)
            }
            1 => {
                e.amount_minor = Some(0);
                Some(S::AmountMustNotBeZero)
            }
            2 => {
                e.credit_account = Some(w);
                Some(S::AccountsMustBeDifferent)
            }
            3 => {
                e.kind = EventKind::Post;
                e.pending_id = Some(fresh(rng));
                Some(S::PendingTransferNotFound)
            }
            4 => {
                // More than there is in the world (these wallets are never closed).
                e.amount_minor = Some(1_000_000_000_000);
                Some(S::ExceedsCredits)
            }
            5 => {
                e.timeout_s = Some(60);
                Some(S::TimeoutReservedForPendingTransfer)
            }
            6 => {
                e.flags.closing_debit = true;
                Some(S::ClosingTransferMustBePending)
            }
            _ => match self.some_hold(rng, here) {
                // A void of less than the hold (refused found or not).
                Some(h) => {
                    e = self.resolution(rng, EventKind::Void, h);
                    e.amount_minor = Some(h.amount - 1);
                    None
                }
                None => {
                    e.amount_minor = Some(-5);
                    Some(S::AmountMustNotBeNegative)
                }
            },
        };
        (e, Tag::Bad(expect))
    }

    /// Makes a new batch; its index, and a line for the trace.
    pub(crate) fn plan(&mut self, rng: &mut StdRng, now: Timestamp) -> (usize, String) {
        self.now = now;
        let mut events = Vec::new();
        let mut tags = Vec::new();
        let mut here = Vec::new();
        for _ in 0..rng.random_range(1..=4) {
            let start = events.len();
            let len = [1, 1, 1, 2, 2, 3, 3, 4, 5][rng.random_range(0..9)];
            for _ in 0..len {
                let (e, tag) = self.event(rng, &mut here);
                events.push(e);
                tags.push(tag);
            }
            let at = start + rng.random_range(0..len);
            if rng.random_bool(0.12) {
                (events[at], tags[at]) = self.bad(rng, &here);
            } else if rng.random_bool(0.05)
                && let Some(old) = pick_event(rng, &self.created)
            {
                events[at] = old;
                tags[at] = Tag::Reused;
            }
            for (i, e) in events[start..].iter_mut().enumerate() {
                e.flags.linked = i + 1 < len;
            }
        }
        if rng.random_bool(0.05)
            && let Some(e) = events.last_mut()
        {
            e.flags.linked = true;
        }
        let chains = chains_of(&events, &tags);
        let line = describe(&tags, &chains);
        for (e, tag) in events.iter().zip(&tags) {
            if matches!(tag, Tag::Hold | Tag::Closing) {
                self.holds.push(self.hold(e));
            }
            // A hold this batch resolves is mostly left alone by the next ones (they may be
            // made before this one is delivered).
            if matches!(tag, Tag::Post | Tag::Void) && rng.random_bool(0.75) {
                self.live.retain(|h| Some(h.id) != e.pending_id);
                self.closing.retain(|h| Some(h.id) != e.pending_id);
            }
        }
        self.sent.push(Sent {
            events,
            tags,
            chains,
            deliveries: 0,
        });
        self.outcome.sent += 1;
        (self.sent.len() - 1, line)
    }

    fn hold(&self, e: &TransferEvent) -> Hold {
        Hold {
            id: e.id,
            debit: e.debit_account.unwrap_or(self.treasury[0]),
            credit: e.credit_account.unwrap_or(self.treasury[0]),
            currency: e.currency.unwrap_or(self.currencies[0]),
            amount: e.amount_minor.unwrap_or(1),
            expires_at: None,
        }
    }

    /// What an answer at `now` says of the holds: made, or resolved.
    fn follow(&mut self, e: &TransferEvent, now: Timestamp) {
        let made = Hold {
            expires_at: e.timeout_s.map(|s| now.plus_seconds(s)),
            ..self.hold(e)
        };
        match e.kind {
            EventKind::Pending if e.flags.closing_debit || e.flags.closing_credit => {
                self.closing.push(made);
            }
            EventKind::Pending => self.live.push(made),
            EventKind::Post | EventKind::Void => {
                self.live.retain(|h| Some(h.id) != e.pending_id);
                self.closing.retain(|h| Some(h.id) != e.pending_id);
            }
            EventKind::Single => {}
        }
    }

    /// An earlier batch, to send again (the client never heard back, or is not sure).
    pub(crate) fn again(&self, rng: &mut StdRng) -> Option<(usize, String)> {
        let i = (!self.sent.is_empty()).then(|| rng.random_range(0..self.sent.len()))?;
        let s = &self.sent[i];
        Some((i, describe(&s.tags, &s.chains)))
    }

    /// Sends batch `index` to the node and checks its answer; a line for the trace.
    pub(crate) async fn deliver(
        &mut self,
        node: &Node,
        admin: &Principal,
        index: usize,
        now: Timestamp,
    ) -> Result<String, Broken> {
        let events = self.sent[index].events.clone();
        // Which of its ids the ledger holds already: those are never created again.
        let mut before = HashSet::new();
        for e in &events {
            if node.store().transfer(e.id).await.map_err(fail)?.is_some() {
                before.insert(e.id);
            }
        }
        let answer = node
            .transfer_batch(admin, events.clone())
            .await
            .map_err(fail)?;
        let sent = &self.sent[index];
        let retry = sent.deliveries > 0;
        let results = &answer.results;
        if results.len() != events.len() {
            return Err(format!(
                "batch {index}: {} events, {} results",
                events.len(),
                results.len()
            ));
        }
        let any_created = results.iter().any(|r| r.status == EventStatus::Created);
        if answer.journal_seq.is_some() != any_created {
            return Err(format!(
                "batch {index}: journal entry {:?} but created: {any_created}",
                answer.journal_seq
            ));
        }
        let mut o = BatchOutcome {
            deliveries: 1,
            retries: usize::from(retry),
            ..BatchOutcome::default()
        };
        let mut created = Vec::new();
        for chain in &sent.chains {
            let rs = &results[chain.start..chain.end];
            let len = rs.len();
            let statuses: Vec<EventStatus> = rs.iter().map(|r| r.status).collect();
            let made = statuses
                .iter()
                .filter(|s| **s == EventStatus::Created)
                .count();
            let what = format!(
                "batch {index} events {}..{}: {statuses:?}",
                chain.start, chain.end
            );
            if made != 0 && made != len {
                return Err(format!("{what}: a chain partly created"));
            }
            if made == len && chain.must_fail {
                return Err(format!("{what}: a chain built to fail was created"));
            }
            if made == 0 {
                let reasons = statuses
                    .iter()
                    .filter(|s| **s != EventStatus::LinkedEventFailed)
                    .count();
                let open_ok = !chain.open || statuses[len - 1] == EventStatus::LinkedEventChainOpen;
                let reasons_ok = reasons == 1 || (reasons == 2 && chain.open);
                if !open_ok || !reasons_ok {
                    return Err(format!(
                        "{what}: a refused chain answers one reason (and `linked_event_chain_open` \
                         when the batch ends inside it), the rest `linked_event_failed`"
                    ));
                }
                if len > 1 {
                    o.chains_refused += 1;
                }
                if chain.must_fail {
                    o.built_to_fail += 1;
                }
            } else if len > 1 {
                o.chains_created += 1;
            }
            // A chain the ledger held already answers `exists` once, then `linked_event_failed`.
            let fresh_before = (chain.start..chain.end)
                .filter(|i| sent.tags[*i] != Tag::Reused && before.contains(&events[*i].id))
                .count();
            if fresh_before > 0 {
                let whole = fresh_before == len
                    && statuses[0] == EventStatus::Exists
                    && statuses[1..]
                        .iter()
                        .all(|s| *s == EventStatus::LinkedEventFailed);
                if !whole {
                    return Err(format!(
                        "{what}: {fresh_before} of its ids were in the ledger before: it answers \
                         `exists`, then `linked_event_failed`"
                    ));
                }
            }
            for (k, r) in rs.iter().enumerate() {
                let i = chain.start + k;
                let e = &events[i];
                let at = format!("batch {index} event {i} ({:?})", sent.tags[i]);
                use EventStatus as S;
                match sent.tags[i] {
                    Tag::Bad(Some(expect))
                        if ![expect, S::LinkedEventFailed, S::LinkedEventChainOpen]
                            .contains(&r.status) =>
                    {
                        return Err(format!("{at} answers {:?}, not {expect:?}", r.status));
                    }
                    Tag::Reused
                        if !is_exists(r.status)
                            && ![S::LinkedEventFailed, S::LinkedEventChainOpen]
                                .contains(&r.status) =>
                    {
                        return Err(format!(
                            "{at}: its id is taken, yet it answers {:?}",
                            r.status
                        ));
                    }
                    _ => {}
                }
                if r.status == S::Created && before.contains(&e.id) {
                    return Err(format!("{at}: created again (its id was in the ledger)"));
                }
                match r.status {
                    S::Created => {
                        let t = r
                            .transfer
                            .as_ref()
                            .ok_or(format!("{at}: created, no transfer"))?;
                        self.created_as_asked(e, t, now)
                            .map_err(|why| format!("{at}: {why}"))?;
                        o.created += 1;
                        match e.kind {
                            EventKind::Post => o.posted += 1,
                            EventKind::Void => o.voided += 1,
                            _ => {}
                        }
                        if e.flags.closing_debit || e.flags.closing_credit {
                            o.closings += 1;
                        }
                        if (e.flags.balancing_debit || e.flags.balancing_credit)
                            && e.amount_minor.is_some_and(|a| a > t.amount_minor)
                        {
                            o.clamped += 1;
                        }
                        created.push(e.clone());
                    }
                    S::Exists => {
                        o.exists += 1;
                        if r.transfer.as_ref().map(|t| t.id) != Some(e.id) {
                            return Err(format!("{at}: `exists` without its transfer"));
                        }
                    }
                    S::DebitAccountAlreadyClosed | S::CreditAccountAlreadyClosed => {
                        o.refused_closed += 1;
                    }
                    S::PendingTransferExpired => o.refused_expired += 1,
                    _ => {}
                }
            }
        }
        // The journal entry holds exactly what the answer says was created, in order.
        if let Some(seq) = answer.journal_seq {
            let entry = rows(node, &format!("SELECT body FROM journal WHERE seq = {seq}")).await?;
            let body: Vec<u8> = entry
                .first()
                .ok_or(format!("batch {index}: no journal entry {seq}"))?
                .try_get("body")
                .map_err(|e| e.to_string())?;
            let journalled: Vec<Id> = match tally_ledger::body::decode(&body) {
                Ok(Event::Transfers { transfers }) => transfers.iter().map(|t| t.id).collect(),
                other => return Err(format!("batch {index}: journal {seq} holds {other:?}")),
            };
            let answered: Vec<Id> = created.iter().map(|e| e.id).collect();
            if journalled != answered {
                return Err(format!(
                    "batch {index}: journal {seq} holds {journalled:?}, the answer created \
                     {answered:?}"
                ));
            }
        }
        for e in &created {
            self.follow(e, now);
        }
        self.created.extend(created);
        self.sent[index].deliveries += 1;
        self.outcome.add(&o);
        let line = results
            .iter()
            .map(|r| short(r.status))
            .collect::<Vec<_>>()
            .join(" ");
        Ok(format!("  batch {index} answered: {line}"))
    }

    /// A created transfer is the event asked for, at the batch's time.
    fn created_as_asked(
        &self,
        e: &TransferEvent,
        t: &Transfer,
        now: Timestamp,
    ) -> Result<(), Broken> {
        if t.id != e.id || t.kind != e.kind.transfer_kind() || t.created_at != now {
            return Err(format!("created {t:?}"));
        }
        let given = |asked: Option<Id>, is: Id| asked.is_none_or(|a| a == is);
        if !given(e.debit_account, t.debit_account)
            || !given(e.credit_account, t.credit_account)
            || e.currency.is_some_and(|c| c != t.currency)
        {
            return Err(format!("created on other accounts: {t:?}"));
        }
        let amount_ok = match e.kind {
            EventKind::Single | EventKind::Pending => {
                if e.flags.balancing_debit || e.flags.balancing_credit {
                    t.amount_minor > 0 && t.amount_minor <= e.amount_minor.unwrap_or(i64::MAX)
                } else {
                    Some(t.amount_minor) == e.amount_minor
                }
            }
            EventKind::Post => {
                t.pending_id == e.pending_id
                    && Some(t.amount_minor) == e.amount_minor.or(t.pending_amount_minor)
            }
            EventKind::Void => {
                t.pending_id == e.pending_id && Some(t.amount_minor) == t.pending_amount_minor
            }
        };
        if !amount_ok {
            return Err(format!("created another amount: {t:?}"));
        }
        let expires = e.timeout_s.map(|s| now.plus_seconds(s));
        if e.kind == EventKind::Pending && t.expires_at != expires {
            return Err(format!("created with another timeout: {t:?}"));
        }
        if t.flags.linked != e.flags.linked
            || t.flags.balancing_debit != e.flags.balancing_debit
            || t.flags.balancing_credit != e.flags.balancing_credit
        {
            return Err(format!("created with other flags: {t:?}"));
        }
        Ok(())
    }

    /// The invariants on the store as it is (see the module's notes). Unless `full`, only when
    /// the journal moved since the last check (every change to the ledger is journalled; the
    /// audit at the end compares the tables with the journal).
    pub(crate) async fn check(&mut self, node: &Node, full: bool) -> Result<(), Broken> {
        let (head, _) = node.store().journal_head().await.map_err(fail)?;
        if !full && head == self.checked_head {
            // Nothing was written to the ledger since the last check.
            return Ok(());
        }
        let transfers = transfer_rows(node).await?;
        let by_id: HashMap<Id, &Stored> = transfers.iter().map(|t| (t.id, t)).collect();
        self.chains_whole(&by_id)?;
        self.never_changed(&by_id)?;
        counters(node, &transfers).await?;
        holds(&transfers, &by_id)?;
        self.journal(node, &transfers).await?;
        self.checked_head = head;
        Ok(())
    }

    /// No chain partly in the ledger, none built to fail in it at all.
    fn chains_whole(&self, by_id: &HashMap<Id, &Stored>) -> Result<(), Broken> {
        for (index, sent) in self.sent.iter().enumerate() {
            for chain in &sent.chains {
                let fresh: Vec<Id> = (chain.start..chain.end)
                    .filter(|i| sent.tags[*i] != Tag::Reused)
                    .map(|i| sent.events[i].id)
                    .collect();
                let stored = fresh.iter().filter(|id| by_id.contains_key(id)).count();
                if stored != 0 && (stored != fresh.len() || chain.must_fail) {
                    return Err(format!(
                        "batch {index} events {}..{}: {stored} of {} in the ledger (built to \
                         fail: {}): a chain is created whole or not at all",
                        chain.start,
                        chain.end,
                        fresh.len(),
                        chain.must_fail
                    ));
                }
            }
        }
        Ok(())
    }

    /// A stored transfer of a batch never changes what it moved.
    fn never_changed(&mut self, by_id: &HashMap<Id, &Stored>) -> Result<(), Broken> {
        for sent in &self.sent {
            for e in &sent.events {
                let Some(t) = by_id.get(&e.id) else { continue };
                let now = Moved {
                    kind: t.kind,
                    debit: t.debit,
                    credit: t.credit,
                    amount: t.amount,
                    created_at: t.created_at,
                    flags: t.flags.bits(),
                };
                let first = self.moved.entry(e.id).or_insert_with(|| now.clone());
                if *first != now {
                    return Err(format!("transfer {} was {first:?}, is now {now:?}", e.id));
                }
            }
        }
        Ok(())
    }

    /// The journal read on from where the last check stopped: no transfer id twice, and no
    /// movement on an account a closing hold closed; then the journal's ids are the table's and
    /// the accounts closed are those it says.
    async fn journal(&mut self, node: &Node, transfers: &[Stored]) -> Result<(), Broken> {
        let entries = rows(
            node,
            &format!(
                "SELECT seq, body FROM journal WHERE kind = 'transfers' AND seq > {} ORDER BY seq",
                self.journal_seq
            ),
        )
        .await?;
        for r in entries {
            let seq = int(&r, "seq")?;
            let body: Vec<u8> = r.try_get("body").map_err(|e| e.to_string())?;
            let Event::Transfers { transfers } =
                tally_ledger::body::decode(&body).map_err(|e| format!("journal {seq}: {e}"))?
            else {
                return Err(format!("journal {seq} is of kind transfers but holds none"));
            };
            for t in transfers {
                if !self.journal_ids.insert(t.id) {
                    return Err(format!(
                        "transfer {} is in the journal twice (again at {seq})",
                        t.id
                    ));
                }
                let moves = matches!(
                    t.kind,
                    TransferKind::Single | TransferKind::Pending | TransferKind::PostPending
                );
                for account in [t.debit_account, t.credit_account] {
                    if moves && self.closed.contains(&account) {
                        return Err(format!(
                            "{} {} (journal {seq}) moved money on closed account {account}",
                            t.kind.as_str(),
                            t.id
                        ));
                    }
                }
                let closes = match t.kind {
                    TransferKind::Pending => Some(true),
                    TransferKind::VoidPending | TransferKind::ExpirePending => Some(false),
                    _ => None,
                };
                if let Some(closes) = closes {
                    for (flag, account) in [
                        (t.flags.closing_debit, t.debit_account),
                        (t.flags.closing_credit, t.credit_account),
                    ] {
                        if flag && closes {
                            self.closed.insert(account);
                        } else if flag {
                            self.closed.remove(&account);
                        }
                    }
                }
            }
            self.journal_seq = seq;
        }
        if self.journal_ids.len() != transfers.len()
            || transfers.iter().any(|t| !self.journal_ids.contains(&t.id))
        {
            return Err(format!(
                "{} transfers in the journal, {} in the table",
                self.journal_ids.len(),
                transfers.len()
            ));
        }
        let mut holding = BTreeSet::new();
        for t in transfers {
            if t.kind == TransferKind::Pending && t.state == TransferState::Pending {
                for (flag, account) in [
                    (t.flags.closing_debit, t.debit),
                    (t.flags.closing_credit, t.credit),
                ] {
                    if flag && !holding.insert(account) {
                        return Err(format!("account {account} has two closing holds pending"));
                    }
                }
            }
        }
        let flagged: BTreeSet<Id> = rows(node, "SELECT id, flags FROM accounts")
            .await?
            .iter()
            .map(|r| Ok((blob_id(r, "id")?, int(r, "flags")?)))
            .collect::<Result<Vec<_>, Broken>>()?
            .into_iter()
            .filter(|(_, bits)| AccountFlags::from_bits(*bits).closed)
            .map(|(id, _)| id)
            .collect();
        if flagged != self.closed || flagged != holding {
            return Err(format!(
                "accounts closed: {flagged:?}; by the journal: {:?}; with a closing hold \
                 pending: {holding:?}",
                self.closed
            ));
        }
        Ok(())
    }
}

fn pick_event(rng: &mut StdRng, events: &[TransferEvent]) -> Option<TransferEvent> {
    (!events.is_empty()).then(|| events[rng.random_range(0..events.len())].clone())
}

/// `S H~P | !` and so on: events by kind, `~` a link, `|` between chains, `~…` an open end.
fn describe(tags: &[Tag], chains: &[Chain]) -> String {
    chains
        .iter()
        .map(|c| {
            let mut s = tags[c.start..c.end]
                .iter()
                .map(|t| t.letter())
                .collect::<Vec<_>>()
                .join("~");
            if c.open {
                s.push_str("~…");
            }
            s
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

fn short(s: EventStatus) -> String {
    use EventStatus as S;
    match s {
        S::Created => "ok".into(),
        S::Exists => "exists".into(),
        S::LinkedEventFailed => "-".into(),
        S::LinkedEventChainOpen => "open".into(),
        other => format!("{other:?}"),
    }
}

async fn transfer_rows(node: &Node) -> Result<Vec<Stored>, Broken> {
    rows(
        node,
        "SELECT id, kind, state, debit_account, credit_account, amount_minor, pending_id, \
         expires_at, created_at, flags FROM transfers",
    )
    .await?
    .iter()
    .map(|r| {
        let pending: Option<Vec<u8>> = r.try_get("pending_id").map_err(|e| e.to_string())?;
        Ok(Stored {
            id: blob_id(r, "id")?,
            kind: TransferKind::parse(&text(r, "kind")?).ok_or("unknown transfer kind")?,
            state: TransferState::parse(&text(r, "state")?).ok_or("unknown transfer state")?,
            debit: blob_id(r, "debit_account")?,
            credit: blob_id(r, "credit_account")?,
            amount: int(r, "amount_minor")?,
            pending_id: pending.and_then(|b| Id::from_slice(&b)),
            expires_at: r.try_get("expires_at").map_err(|e| e.to_string())?,
            created_at: int(r, "created_at")?,
            flags: TransferFlags::from_bits(int(r, "flags")?),
        })
    })
    .collect()
}

/// Every account's counters are the sums of its transfer rows, and within its bounds.
async fn counters(node: &Node, transfers: &[Stored]) -> Result<(), Broken> {
    // debits pending, debits posted, credits pending, credits posted
    let mut sums: HashMap<Id, [i64; 4]> = HashMap::new();
    for t in transfers {
        let (debit, credit) = match (t.kind, t.state) {
            (TransferKind::Pending, TransferState::Pending) => (0, 2),
            (TransferKind::Single | TransferKind::PostPending, _) => (1, 3),
            _ => continue,
        };
        sums.entry(t.debit).or_default()[debit] += t.amount;
        sums.entry(t.credit).or_default()[credit] += t.amount;
    }
    for r in rows(
        node,
        "SELECT id, flags, limit_minor, debits_pending, debits_posted, credits_pending, \
         credits_posted FROM accounts",
    )
    .await?
    {
        let id = blob_id(&r, "id")?;
        let flags = AccountFlags::from_bits(int(&r, "flags")?);
        let limit = i128::from(int(&r, "limit_minor")?);
        let stored = [
            int(&r, "debits_pending")?,
            int(&r, "debits_posted")?,
            int(&r, "credits_pending")?,
            int(&r, "credits_posted")?,
        ];
        let from_rows = sums.get(&id).copied().unwrap_or_default();
        if stored != from_rows {
            return Err(format!(
                "account {id} counts {stored:?} (debits pending, posted, credits pending, \
                 posted) but its transfers add up to {from_rows:?}"
            ));
        }
        let [dq, dp, cq, cp] = stored.map(i128::from);
        let over = (flags.debits_must_not_exceed_credits && dq + dp > cp + limit)
            || (flags.credits_must_not_exceed_debits && cq + cp > dp + limit);
        if over || stored.iter().any(|v| *v < 0) {
            return Err(format!(
                "account {id} is beyond its bounds: {stored:?} (debits pending, posted, credits \
                 pending, posted), limit {limit}, {flags:?}"
            ));
        }
    }
    Ok(())
}

/// A hold is resolved by exactly the one row its state names, never after its time ran out
/// (and expired only once it did).
fn holds(transfers: &[Stored], by_id: &HashMap<Id, &Stored>) -> Result<(), Broken> {
    let mut resolved: HashMap<Id, &Stored> = HashMap::new();
    for t in transfers.iter().filter(|t| t.pending_id.is_some()) {
        let pending_id = t.pending_id.unwrap_or(t.id);
        if resolved.insert(pending_id, t).is_some() {
            return Err(format!("hold {pending_id} is resolved twice"));
        }
        let hold = by_id
            .get(&pending_id)
            .ok_or(format!("{} resolves a hold that is not there", t.id))?;
        let ran_out = hold.expires_at.is_some_and(|at| t.created_at >= at);
        let expiry = t.kind == TransferKind::ExpirePending;
        if ran_out != expiry {
            return Err(format!(
                "hold {pending_id} (expires {:?}) resolved by a {} at {}",
                hold.expires_at,
                t.kind.as_str(),
                t.created_at
            ));
        }
    }
    for t in transfers.iter().filter(|t| t.kind == TransferKind::Pending) {
        let by = resolved.get(&t.id).map(|r| r.kind);
        let fits = matches!(
            (t.state, by),
            (TransferState::Pending, None)
                | (TransferState::Posted, Some(TransferKind::PostPending))
                | (TransferState::Voided, Some(TransferKind::VoidPending))
                | (TransferState::Expired, Some(TransferKind::ExpirePending))
        );
        if !fits {
            return Err(format!(
                "hold {} is {} but resolved by {by:?}",
                t.id, t.state
            ));
        }
    }
    Ok(())
}
