//! The ledger writer: one task that turns queued commands into durable batches (group commit).
//!
//! Callers submit a [`Request`] and wait on a oneshot. The task takes everything queued (up to
//! `batch_max`), opens one write transaction, loads the accounts and pending transfers the
//! batch touches, applies each command in order with [`tally_ledger::Book::apply`], writes the
//! changed rows, one journal entry per successful command (carrying its idempotency key) and any outbox
//! messages, commits, and only then answers every caller. One fsync covers the whole batch;
//! that is where the throughput comes from.
//!
//! A batch of transfer events (`POST /v1/transfers/batch`) is one job: the book decides its
//! events ([`tally_ledger::Book::apply_batch`], linked chains whole) and its created transfers
//! become one journal entry with no idempotency key (each event's id is its key). A
//! transaction takes at most `batch_max` commands or four full batches' worth of events
//! ([`EVENTS_PER_TRANSACTION_MAX`]), so a writer queue of large batches is cut into several
//! commits.
//!
//! A command that the ledger refuses is answered with its error and leaves no trace; the others
//! in the batch are unaffected. If the transaction itself fails (a lost connection, a
//! serialisation failure), the batch is retried from scratch a bounded number of times; nothing
//! was answered yet, so nothing is lost or doubled.
//!
//! Decision: one journal chain for the whole node, so every batch takes the journal head.
//! Rejected: per-account chains (cheaper under contention, but an audit could not prove the
//! global order of events, which clearing and disputes need).
//!
//! Engine decisions of issue [10] (each kept only if `tally bench ledger` showed it; figures
//! are SQLite, in process, on the project's 2-core machine):
//! * The writer keeps the accounts it committed ([`Accounts`]), valid while the journal head
//!   is where it left it: a batch stops reading back the rows it wrote. Singles 11.9k ->
//!   16.6k/s, batches of 8,189 19.8k -> 26.9k/s. Works on PostgreSQL too: another node's
//!   commit moves the head, and the cache is dropped.
//! * Transfers journal bodies in a binary layout (`tally_ledger::body`): 679 -> 381 bytes per
//!   transfer stored, batches of 8,189 26.9k -> 31.1k/s.
//! * Up to four full batches in one transaction ([`EVENTS_PER_TRANSACTION_MAX`]): about
//!   +20% for batches of 8,189 (their index pages are dirtied once).
//! * Rejected after measuring: a larger `wal_autocheckpoint`, `mmap_size` for readers, a
//!   smaller or larger page size (no difference beyond the ±10% noise); foreign keys off on
//!   the writer (a few %, for the database's own check of every transfer's accounts).
//! * Where the rest goes: `docs/bench/sqlite_ceiling.py` hands SQLite exactly a batch's rows
//!   in this schema with no ledger at all and gets about 42k transfers/s (70k without the
//!   two per-account indexes on `transfers`): the writer reaches about 75-80% of SQLite's own
//!   ceiling, so the 30x pgbench (about 95k/s here) needs a different index
//!   structure (append-only, LSM-like, as TigerBeetle's), not a faster writer. The same
//!   on PostgreSQL (`docs/bench/postgres_ceiling.py`): 17k/s with multi-row INSERTs, 22k/s
//!   with COPY, against the writer's ~21k/s and the 10x target's ~33k/s.
//! * The writer keeps its own connection ([`Held`]): SQLite drops a connection's page cache
//!   when another connection wrote, so a pooled connection per transaction re-read its pages
//!   every commit (singles with 64 clients 5.6k -> 6.8k/s).
//!   Not tried yet: a synchronous writer thread with prepared statements (rusqlite 0.39 links
//!   the same libsqlite3-sys 0.37 as sqlx), PostgreSQL `unnest` inserts (the `Any` driver
//!   binds no arrays).

use crate::guarded::{Guard, RowWrite, Rows};
use crate::outbox::NewMessage;
use crate::rows::{self, Value, bind_all, multi_insert, placeholders};
use crate::{Dialect, StoreError};
use sqlx::{AnyPool, Connection, Executor, Row};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tally_kernel::{Id, Timestamp};
use tally_ledger::batch::{BATCH_EVENTS_MAX, EventResult, EventStatus, TransferEvent};
use tally_ledger::journal::{self, JournalEntry};
use tally_ledger::{Book, Event, LedgerError, Request, Transfer, TransferState};
use tokio::sync::{mpsc, oneshot, watch};

/// What a successful command produced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    /// Journal position of the entry that recorded it.
    pub journal_seq: i64,
    /// True when this is a replay of an earlier request with the same idempotency key.
    pub replayed: bool,
    /// What happened.
    pub event: Event,
}

impl Outcome {
    /// The first transfer of the outcome, if it recorded transfers.
    pub fn transfer(&self) -> Option<&Transfer> {
        match &self.event {
            Event::Transfers { transfers } => transfers.first(),
            Event::AccountOpened { .. } | Event::Recorded { .. } | Event::LimitSet { .. } => None,
        }
    }

    /// The account opened, if any.
    pub fn account(&self) -> Option<&tally_ledger::Account> {
        match &self.event {
            Event::AccountOpened { account } => Some(account),
            Event::Recorded { .. } | Event::Transfers { .. } | Event::LimitSet { .. } => None,
        }
    }
}

/// What a batch of transfer events produced: one result per event, in order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Batched {
    /// Journal position of the entry holding the transfers the batch created (`None` when it
    /// created none).
    pub journal_seq: Option<i64>,
    /// One per event.
    pub results: Vec<EventResult>,
}

/// Signs journal checkpoints with the node key.
pub trait Checkpointer: Send + Sync {
    /// The Ed25519 public key.
    fn public_key(&self) -> [u8; 32];
    /// Signs `CHECKPOINT_DOMAIN || message`.
    fn sign(&self, message: &[u8]) -> Vec<u8>;
}

/// Where the writer reads the time (tests move it by hand).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Tuning and collaborators of the writer.
#[derive(Clone)]
pub struct WriteOptions {
    /// Most commands in one transaction.
    pub batch_max: usize,
    /// Sign a checkpoint whenever the journal passes a multiple of this many entries.
    pub checkpoint_every: i64,
    /// The node key that signs checkpoints; without one no checkpoints are written.
    pub checkpointer: Option<Arc<dyn Checkpointer>>,
    /// The time source.
    pub clock: Clock,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            batch_max: 2048,
            checkpoint_every: 10_000,
            checkpointer: None,
            clock: Arc::new(Timestamp::now),
        }
    }
}

/// A row written in the same transaction as a command's journal entry, and only if the
/// command succeeds: an outgoing message, or a state change that moves no money.
#[derive(Debug, Clone)]
pub enum Attachment {
    /// A new API key (stored by hash).
    ApiKeyCreated {
        /// SHA-256 of the key.
        key_hash: [u8; 32],
        /// What the key is.
        record: crate::keys::ApiKeyRecord,
    },
    /// An API key revoked at the batch's time.
    ApiKeyRevoked {
        /// The key's id.
        id: Id,
    },
    /// A message for the outbox.
    Message(NewMessage),
    /// A precondition checked inside the transaction before the command applies: if it does
    /// not hold, the job fails with [`StoreError::Conflict`] and writes nothing. Guards see the
    /// rows written by earlier jobs of the same batch, so two jobs racing on one row cannot
    /// both pass (see [`crate::guarded`]).
    Guard(Guard),
    /// A row written if the command succeeds (batched or inline, see [`crate::guarded`]).
    Row(RowWrite),
}

impl From<NewMessage> for Attachment {
    fn from(m: NewMessage) -> Self {
        Attachment::Message(m)
    }
}

/// What a job asks of the writer.
enum Asked {
    /// One command under its idempotency key, with the rows that go with it.
    Command {
        request: Request,
        fingerprint: [u8; 32],
        attachments: Vec<Attachment>,
    },
    /// A batch of transfer events: one job, so the fallback that writes jobs one by one can
    /// never split a linked chain. Idempotency is per event (its id), not per job.
    Events(Vec<TransferEvent>),
}

impl Asked {
    /// Its share of one transaction's budget of rows.
    fn weight(&self) -> usize {
        match self {
            Asked::Command { .. } => 1,
            Asked::Events(events) => events.len().max(1),
        }
    }
}

/// What a job got back.
enum Answer {
    Command(Outcome),
    Events(Batched),
}

struct Job {
    asked: Asked,
    reply: oneshot::Sender<Result<Answer, StoreError>>,
}

/// The outbox's own writes: leasing due messages and recording deliveries. They go through
/// the writer too, into the same transaction as the ledger batch, because on SQLite a second
/// writer waits for the first's lock with the busy handler's sleeps (up to 100 ms each), which
/// held e-mail flows to a few hundred per second; here they cost no extra commit.
pub(crate) enum OutboxOp {
    /// Lease up to `limit` due messages for `lease_s` seconds.
    Claim {
        now: Timestamp,
        limit: i64,
        lease_s: i64,
        reply: oneshot::Sender<Result<Vec<crate::outbox::StoredMessage>, StoreError>>,
    },
    /// Record deliveries.
    Sent {
        ids: Vec<Id>,
        now: Timestamp,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// What an outbox operation returned, before its caller is answered (after the commit).
enum OutboxDone {
    Claimed(Vec<crate::outbox::StoredMessage>),
    Sent,
}

enum Work {
    Ledger(Job),
    Outbox(OutboxOp),
}

/// The submitting side of the writer.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Work>,
    /// The journal position of the newest commit this writer made (0 before its first):
    /// readers of the journal wait on it instead of polling.
    head: watch::Receiver<i64>,
    stopped: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Handle {
    pub(crate) async fn submit(
        &self,
        request: Request,
        attachments: Vec<Attachment>,
    ) -> Result<Outcome, StoreError> {
        let fingerprint = request.command.fingerprint();
        let asked = Asked::Command {
            request,
            fingerprint,
            attachments,
        };
        match self.job(asked).await? {
            Answer::Command(outcome) => Ok(outcome),
            Answer::Events(_) => Err(StoreError::Corrupt(
                "writer answered a command with events".into(),
            )),
        }
    }

    /// Wakes when this writer commits a journal entry (the value is the newest position).
    pub(crate) fn journal_head(&self) -> watch::Receiver<i64> {
        self.head.clone()
    }

    /// Submits a batch of transfer events (1 to [`BATCH_EVENTS_MAX`]).
    pub(crate) async fn submit_events(
        &self,
        events: Vec<TransferEvent>,
    ) -> Result<Batched, StoreError> {
        if events.is_empty() || events.len() > BATCH_EVENTS_MAX {
            return Err(LedgerError::Invalid {
                field: "events".to_string(),
                reason: format!("a batch holds 1 to {BATCH_EVENTS_MAX} events"),
            }
            .into());
        }
        match self.job(Asked::Events(events)).await? {
            Answer::Events(batched) => Ok(batched),
            Answer::Command(_) => Err(StoreError::Corrupt(
                "writer answered events with a command".into(),
            )),
        }
    }

    async fn job(&self, asked: Asked) -> Result<Answer, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Work::Ledger(Job { asked, reply }))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Leases due outbox messages in the writer's next transaction.
    pub(crate) async fn claim(
        &self,
        now: Timestamp,
        limit: i64,
        lease_s: i64,
    ) -> Result<Vec<crate::outbox::StoredMessage>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Work::Outbox(OutboxOp::Claim {
                now,
                limit,
                lease_s,
                reply,
            }))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Records deliveries in the writer's next transaction.
    pub(crate) async fn sent(&self, ids: Vec<Id>, now: Timestamp) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Work::Outbox(OutboxOp::Sent { ids, now, reply }))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    pub(crate) async fn stop(&self) {
        let task = self.stopped.lock().await.take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Most events one transaction takes: up to four full batches. A commit's cost is mostly the
/// index pages its transfers dirty, which grows slower than the transfers do (two transfers of
/// one account share a page), so batches queued together commit together: `bench ledger`'s
/// batches of 8,189 went from about 26k to 30-34k transfers/s on SQLite. Memory stays bounded
/// by the queue either way.
const EVENTS_PER_TRANSACTION_MAX: usize = 4 * BATCH_EVENTS_MAX;
/// Queue bound: callers wait (backpressure) rather than the queue growing without limit.
const QUEUE_MAX: usize = 65_536;
/// How often a failed batch transaction is retried before its callers get the error.
const BATCH_RETRIES_MAX: usize = 5;
/// SQLite refuses more than 32 766 parameters per statement; stay well under it.
const PARAMS_PER_STATEMENT_MAX: usize = 16_000;
/// Rows per generated INSERT; the last block of a batch may be shorter.
const ROWS_PER_STATEMENT: usize = 1024;

pub(crate) fn spawn(pool: AnyPool, dialect: Dialect, options: WriteOptions) -> Handle {
    let (tx, rx) = mpsc::channel(QUEUE_MAX);
    let (head_tx, head) = watch::channel(0);
    let task = tokio::spawn(run(pool, dialect, options, rx, head_tx));
    Handle {
        tx,
        head,
        stopped: Arc::new(tokio::sync::Mutex::new(Some(task))),
    }
}

async fn run(
    pool: AnyPool,
    dialect: Dialect,
    options: WriteOptions,
    mut rx: mpsc::Receiver<Work>,
    head: watch::Sender<i64>,
) {
    let mut work: Vec<Work> = Vec::with_capacity(options.batch_max);
    let mut jobs: Vec<Job> = Vec::with_capacity(options.batch_max);
    let mut outbox: Vec<OutboxOp> = Vec::new();
    // Rows one transaction takes: `batch_max` commands, or several full batches of events.
    let budget = options.batch_max.max(EVENTS_PER_TRANSACTION_MAX);
    let mut cache = Accounts::default();
    let mut held = Held {
        conn: None,
        keep: pool.options().get_max_connections() > 1,
        pool,
    };
    loop {
        if rx.recv_many(&mut work, options.batch_max).await == 0 {
            return; // every Handle dropped
        }
        for w in work.drain(..) {
            match w {
                Work::Ledger(j) => jobs.push(j),
                Work::Outbox(o) => outbox.push(o),
            }
        }
        // Cut the queue into transactions of at most `budget` rows (at least one job each);
        // the outbox operations ride with the first.
        let mut ops = std::mem::take(&mut outbox);
        let mut rest = std::mem::take(&mut jobs).into_iter().peekable();
        loop {
            let mut group = Vec::new();
            let mut weight = 0;
            while let Some(next) = rest.peek() {
                let w = next.asked.weight();
                if !group.is_empty() && weight + w > budget {
                    break;
                }
                weight += w;
                group.extend(rest.next());
            }
            if group.is_empty() && ops.is_empty() {
                break;
            }
            write_group(
                &mut held,
                dialect,
                &options,
                &mut cache,
                group,
                std::mem::take(&mut ops),
                &head,
            )
            .await;
        }
    }
}

/// Writes one transaction's jobs and outbox operations and answers their callers.
async fn write_group(
    held: &mut Held,
    dialect: Dialect,
    options: &WriteOptions,
    cache: &mut Accounts,
    jobs: Vec<Job>,
    outbox: Vec<OutboxOp>,
    head: &watch::Sender<i64>,
) {
    let (results, done) = match write_with_retries(held, dialect, options, cache, &jobs, &outbox)
        .await
    {
        Ok((results, done)) => (results, Ok(done)),
        // A failure that repeats may be one job's fault (a value the database refuses):
        // write each job alone, so only that job fails and the others are not held hostage.
        Err(_) if jobs.len() > 1 || !outbox.is_empty() => {
            let mut results = Vec::with_capacity(jobs.len());
            for i in 0..jobs.len() {
                match write_with_retries(held, dialect, options, cache, &jobs[i..=i], &[]).await {
                    Ok((mut one, _)) => {
                        results.push(one.pop().unwrap_or(Err(StoreError::WriterGone)))
                    }
                    Err(e) => results.push(Err(StoreError::Corrupt(format!("write failed: {e}")))),
                }
            }
            let done = write_with_retries(held, dialect, options, cache, &[], &outbox)
                .await
                .map(|(_, done)| done);
            (results, done.map_err(|e| e.to_string()))
        }
        Err(e) => (
            vec![Err(StoreError::Corrupt(format!("write failed: {e}")))],
            Err(e.to_string()),
        ),
    };
    let newest = results
        .iter()
        .filter_map(|r| match r {
            Ok(Answer::Command(o)) => Some(o.journal_seq),
            Ok(Answer::Events(b)) => b.journal_seq,
            Err(_) => None,
        })
        .max();
    if let Some(seq) = newest {
        head.send_if_modified(|h| {
            let newer = seq > *h;
            *h = (*h).max(seq);
            newer
        });
    }
    for (job, result) in jobs.into_iter().zip(results) {
        let _ = job.reply.send(result);
    }
    answer_outbox(outbox.into_iter(), done);
}

/// Answers the outbox operations of a batch: their results, or the batch's failure.
fn answer_outbox(ops: impl Iterator<Item = OutboxOp>, done: Result<Vec<OutboxDone>, String>) {
    let (mut done, error) = match done {
        Ok(d) => (d.into_iter(), None),
        Err(e) => (Vec::new().into_iter(), Some(e)),
    };
    let failed = || {
        StoreError::Corrupt(format!(
            "outbox write failed: {}",
            error.as_deref().unwrap_or("no result")
        ))
    };
    for op in ops {
        match (op, done.next()) {
            (OutboxOp::Claim { reply, .. }, Some(OutboxDone::Claimed(m))) => {
                let _ = reply.send(Ok(m));
            }
            (OutboxOp::Sent { reply, .. }, Some(OutboxDone::Sent)) => {
                let _ = reply.send(Ok(()));
            }
            (OutboxOp::Claim { reply, .. }, _) => {
                let _ = reply.send(Err(failed()));
            }
            (OutboxOp::Sent { reply, .. }, _) => {
                let _ = reply.send(Err(failed()));
            }
        }
    }
}

/// One batch, retried a bounded number of times (lost connections, serialisation failures).
/// The ledger jobs' results and the outbox operations' results of one committed batch.
type BatchResults = (Vec<Result<Answer, StoreError>>, Vec<OutboxDone>);

async fn write_with_retries(
    held: &mut Held,
    dialect: Dialect,
    options: &WriteOptions,
    cache: &mut Accounts,
    jobs: &[Job],
    outbox: &[OutboxOp],
) -> Result<BatchResults, StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let written = write_batch(held, dialect, options, cache, jobs, outbox).await;
        if written.is_err() || !held.keep {
            // A failed transaction may have broken the connection: take a fresh one.
            held.conn = None;
        }
        match written {
            Ok(results) => return Ok(results),
            Err(e) if attempt < BATCH_RETRIES_MAX => {
                tracing::warn!(error = %e, attempt, jobs = jobs.len(), "ledger batch failed; retrying");
                tokio::time::sleep(Duration::from_millis(10 << attempt)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, jobs = jobs.len(), "ledger batch failed; giving up on it");
                return Err(e);
            }
        }
    }
}

/// An idempotency key seen before (in the journal, or earlier in this batch).
struct Known {
    fingerprint: [u8; 32],
    seq: i64,
    /// The stored event; `None` when the entry was made earlier in the same batch.
    body: Option<Vec<u8>>,
}

fn blob(id: &Id) -> Vec<u8> {
    id.as_bytes().to_vec()
}

async fn write_batch(
    held: &mut Held,
    dialect: Dialect,
    options: &WriteOptions,
    cache: &mut Accounts,
    jobs: &[Job],
    outbox: &[OutboxOp],
) -> Result<BatchResults, StoreError> {
    let conn = held.get().await?;
    let mut tx = match dialect {
        Dialect::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await?,
        Dialect::Postgres => conn.begin().await?,
    };
    if jobs.is_empty() {
        let done = outbox_ops(&mut tx, dialect, outbox).await?;
        tx.commit().await?;
        return Ok((Vec::new(), done));
    }
    let head_sql = match dialect {
        Dialect::Sqlite => "SELECT seq, hash, transfers_at FROM journal_head WHERE id = 1",
        Dialect::Postgres => {
            "SELECT seq, hash, transfers_at FROM journal_head WHERE id = 1 FOR UPDATE"
        }
    };
    let head = tx.fetch_one(head_sql).await?;
    let (mut seq, mut prev_hash): (i64, [u8; 32]) = (
        head.try_get("seq")?,
        head.try_get::<Vec<u8>, _>("hash")?
            .try_into()
            .map_err(|_| StoreError::Corrupt("journal head hash".into()))?,
    );
    let start_seq = seq;
    // The accounts this writer holds are the committed ones only if nobody else has written
    // since its last commit (every change to an account is a journal entry); until this
    // transaction commits, they are not trusted at all.
    let mut cached = cache.take_if_current(seq, &prev_hash);
    // The latest transfer time in the ledger (imported events must come after it).
    let mut transfers_at = Timestamp(head.try_get("transfers_at")?);
    let commands = || {
        jobs.iter().filter_map(|j| match &j.asked {
            Asked::Command { request, .. } => Some(request),
            Asked::Events(_) => None,
        })
    };
    let events = || {
        jobs.iter().flat_map(|j| match &j.asked {
            Asked::Command { .. } => &[][..],
            Asked::Events(events) => events.as_slice(),
        })
    };

    // 1. Idempotency: which keys were used before? The journal entry of a command carries its
    // key and request fingerprint, so one lookup also yields the original event for a replay.
    let keys: Vec<String> = commands().map(|r| r.idempotency_key.clone()).collect();
    let mut known: HashMap<String, Known> = HashMap::new();
    let keys = keys.into_iter().map(Value::Text).collect();
    let select =
        "SELECT idempotency_key, request_hash, seq, body FROM journal WHERE idempotency_key";
    for r in select_in(&mut tx, dialect, select, keys).await? {
        let hash: Vec<u8> = r.try_get("request_hash")?;
        let hash: [u8; 32] = hash
            .try_into()
            .map_err(|_| StoreError::Corrupt("request hash".into()))?;
        let known_entry = Known {
            fingerprint: hash,
            seq: r.try_get("seq")?,
            body: Some(r.try_get("body")?),
        };
        known.insert(r.try_get("idempotency_key")?, known_entry);
    }

    // 2. Pending transfers the batch resolves, transfers whose id an event reuses, then every
    // account it touches.
    let mut pending_ids: Vec<Id> = commands()
        .filter_map(|r| r.command.pending_id())
        .chain(events().filter_map(|e| e.pending_id))
        .collect();
    pending_ids.sort();
    pending_ids.dedup();
    let mut book = Book::default();
    let select = format!("SELECT {} FROM transfers WHERE id", rows::TRANSFER_COLUMNS);
    let ids = pending_ids.iter().map(|id| Value::Blob(blob(id))).collect();
    for r in select_in(&mut tx, dialect, &select, ids).await? {
        let t = rows::transfer(&r)?;
        book.pending.insert(t.id, t);
    }
    let mut event_ids: Vec<Id> = events().map(|e| e.id).collect();
    event_ids.sort();
    event_ids.dedup();
    let ids = event_ids.iter().map(|id| Value::Blob(blob(id))).collect();
    for r in select_in(&mut tx, dialect, &select, ids).await? {
        let t = rows::transfer(&r)?;
        book.transfers.insert(t.id, t);
    }
    let mut account_ids: Vec<Id> = commands()
        .flat_map(|r| r.command.account_ids())
        .chain(events().flat_map(|e| [e.debit_account, e.credit_account].into_iter().flatten()))
        .collect();
    account_ids.extend(
        book.pending
            .values()
            .flat_map(|t| [t.debit_account, t.credit_account]),
    );
    account_ids.sort();
    account_ids.dedup();
    account_ids.retain(|id| match cached.remove(id) {
        Some(a) => {
            book.accounts.insert(a.id, a);
            false
        }
        None => true,
    });
    let select = format!("SELECT {} FROM accounts WHERE id", rows::ACCOUNT_COLUMNS);
    let ids = account_ids.iter().map(|id| Value::Blob(blob(id))).collect();
    for r in select_in(&mut tx, dialect, &select, ids).await? {
        let a = rows::account(&r)?;
        book.accounts.insert(a.id, a);
    }
    // Guarded rows the batch decides on, loaded once.
    let all_guards: Vec<&Guard> = jobs
        .iter()
        .flat_map(|j| match &j.asked {
            Asked::Command { attachments, .. } => attachments.as_slice(),
            Asked::Events(_) => &[][..],
        })
        .filter_map(guard_of)
        .collect();
    let mut guarded = Rows::load(&mut tx, dialect, all_guards.into_iter()).await?;
    // 3. Apply in order.
    let now = (options.clock)();
    let mut results: Vec<Result<Answer, StoreError>> = Vec::with_capacity(jobs.len());
    let mut entries: Vec<JournalEntry> = Vec::new();
    // Each entry's idempotency key and request fingerprint (none for a batch of events).
    let mut entry_keys: Vec<Option<(String, [u8; 32])>> = Vec::new();
    let mut transfers: Vec<(Transfer, i64)> = Vec::new();
    let mut opened: HashSet<Id> = HashSet::new();
    let mut touched: HashSet<Id> = HashSet::new();
    let mut resolved: Vec<(Id, TransferState)> = Vec::new();
    let mut history: Vec<Vec<Value>> = Vec::new();
    let mut attached: Vec<&Attachment> = Vec::new();
    for job in jobs {
        let (request, fingerprint, attachments) = match &job.asked {
            Asked::Command {
                request,
                fingerprint,
                attachments,
            } => (request, *fingerprint, attachments),
            Asked::Events(events) => {
                let decided = book.apply_batch(events, now, transfers_at);
                let created: Vec<Transfer> = decided
                    .iter()
                    .filter(|r| r.status == EventStatus::Created)
                    .filter_map(|r| r.transfer.clone())
                    .collect();
                let mut journal_seq = None;
                if !created.is_empty() {
                    note_transfers(&created, &mut touched, &mut resolved, &mut transfers_at);
                    let event = Event::Transfers { transfers: created };
                    let entry = chain_entry(&event, now, &mut seq, &mut prev_hash)?;
                    if let Event::Transfers { transfers: ts } = event {
                        transfers.extend(ts.into_iter().map(|t| (t, seq)));
                    }
                    entries.push(entry);
                    entry_keys.push(None);
                    journal_seq = Some(seq);
                }
                drain_history(&mut book, seq, &mut history);
                results.push(Ok(Answer::Events(Batched {
                    journal_seq,
                    results: decided,
                })));
                continue;
            }
        };
        let key = &request.idempotency_key;
        if let Some(k) = known.get(key) {
            if k.fingerprint == fingerprint {
                // Decoded from the stored entry, or (same batch) from the entry just made.
                let body = k.body.as_deref().or_else(|| {
                    entries
                        .iter()
                        .find(|e| e.seq == k.seq)
                        .map(|e| e.body.as_slice())
                });
                let event: Event = body
                    .ok_or_else(|| StoreError::Corrupt(format!("journal entry {} missing", k.seq)))
                    .and_then(|b| {
                        tally_ledger::body::decode(b)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))
                    })?;
                results.push(Ok(Answer::Command(Outcome {
                    journal_seq: k.seq,
                    replayed: true,
                    event,
                })));
            } else {
                results.push(Err(LedgerError::IdempotencyConflict.into()));
            }
            continue;
        }
        let guards: Vec<&Guard> = attachments.iter().filter_map(guard_of).collect();
        if let Some(what) = guarded.check(&mut tx, &guards).await? {
            results.push(Err(StoreError::Conflict(what)));
            continue;
        }
        let mut new_id = Id::new;
        match book.apply(&request.command, now, &mut new_id) {
            Err(e) => results.push(Err(e.into())),
            Ok(event) => {
                match &event {
                    Event::AccountOpened { account } => {
                        opened.insert(account.id);
                    }
                    Event::Recorded { .. } => {}
                    Event::LimitSet { account, .. } => {
                        touched.insert(*account);
                    }
                    Event::Transfers { transfers: ts } => {
                        note_transfers(ts, &mut touched, &mut resolved, &mut transfers_at);
                    }
                }
                let entry = chain_entry(&event, now, &mut seq, &mut prev_hash)?;
                if let Event::Transfers { transfers: ts } = &event {
                    transfers.extend(ts.iter().cloned().map(|t| (t, seq)));
                }
                attached.extend(attachments.iter());
                let writes: Vec<&RowWrite> = attachments
                    .iter()
                    .filter_map(|a| match a {
                        Attachment::Row(w) => Some(w),
                        _ => None,
                    })
                    .collect();
                guarded.write(&mut tx, &guards, &writes).await?;
                known.insert(
                    key.clone(),
                    Known {
                        fingerprint,
                        seq,
                        body: None,
                    },
                );
                entry_keys.push(Some((key.clone(), fingerprint)));
                entries.push(entry);
                drain_history(&mut book, seq, &mut history);
                results.push(Ok(Answer::Command(Outcome {
                    journal_seq: seq,
                    replayed: false,
                    event,
                })));
            }
        }
    }
    // 4. Write rows. Accounts first (transfers reference them).
    let new_accounts: Vec<Vec<Value>> = opened
        .iter()
        .map(|id| rows::account_values(&book.accounts[id]))
        .collect();
    insert_chunked(
        &mut tx,
        dialect,
        "accounts",
        rows::ACCOUNT_COLUMNS,
        rows::ACCOUNT_WIDTH,
        new_accounts,
        "",
    )
    .await?;
    // Existing accounts get their new counters by upsert on the primary key: one indexed
    // statement per chunk on both dialects (an UPDATE … FROM (VALUES …) join was planned as a
    // scan of the whole table on SQLite).
    let changed: Vec<Vec<Value>> = touched
        .iter()
        .filter(|id| !opened.contains(id))
        .map(|id| rows::account_values(&book.accounts[id]))
        .collect();
    insert_chunked(
        &mut tx,
        dialect,
        "accounts",
        rows::ACCOUNT_COLUMNS,
        rows::ACCOUNT_WIDTH,
        changed,
        " ON CONFLICT (id) DO UPDATE SET debits_pending = excluded.debits_pending, \
         debits_posted = excluded.debits_posted, credits_pending = excluded.credits_pending, \
         credits_posted = excluded.credits_posted, limit_minor = excluded.limit_minor, \
         flags = excluded.flags",
    )
    .await?;
    let transfer_rows: Vec<Vec<Value>> = transfers
        .iter()
        .map(|(t, s)| rows::transfer_values(t, *s))
        .collect();
    insert_chunked(
        &mut tx,
        dialect,
        "transfers",
        &format!("{}, journal_seq", rows::TRANSFER_COLUMNS),
        rows::TRANSFER_WIDTH,
        transfer_rows,
        "",
    )
    .await?;
    insert_chunked(
        &mut tx,
        dialect,
        "account_balances",
        "account_id, journal_seq, ordinal, transfer_id, at, debits_pending, debits_posted, \
         credits_pending, credits_posted",
        9,
        history,
        "",
    )
    .await?;
    for (pending_id, state) in &resolved {
        sqlx::query("UPDATE transfers SET state = $1 WHERE id = $2 AND state = 'pending'")
            .bind(state.as_str().to_string())
            .bind(blob(pending_id))
            .execute(&mut *tx)
            .await
            .and_then(|r| {
                // Pair assertion: the book saw it pending, so exactly one row must change.
                if r.rows_affected() == 1 {
                    Ok(())
                } else {
                    Err(sqlx::Error::RowNotFound)
                }
            })?;
    }
    let journal_rows: Vec<Vec<Value>> = entries
        .iter()
        .zip(&entry_keys)
        .map(|(e, keyed)| {
            let (key, fingerprint) = match keyed {
                Some((key, fingerprint)) => {
                    (Value::Text(key.clone()), Value::Blob(fingerprint.to_vec()))
                }
                None => (Value::NullText, Value::NullBlob),
            };
            vec![
                Value::Int(e.seq),
                Value::Int(e.at.as_micros()),
                Value::Text(e.kind.clone()),
                Value::Blob(e.prev_hash.to_vec()),
                Value::Blob(e.hash.to_vec()),
                Value::Blob(e.body.clone()),
                key,
                fingerprint,
            ]
        })
        .collect();
    insert_chunked(
        &mut tx,
        dialect,
        "journal",
        "seq, at, kind, prev_hash, hash, body, idempotency_key, request_hash",
        8,
        journal_rows,
        "",
    )
    .await?;
    let message_rows: Vec<Vec<Value>> = attached
        .iter()
        .filter_map(|a| match a {
            Attachment::Message(m) => Some(m.values(now)),
            _ => None,
        })
        .collect();
    insert_chunked(
        &mut tx,
        dialect,
        "outbox",
        crate::outbox::COLUMNS,
        crate::outbox::WIDTH,
        message_rows,
        " ON CONFLICT (dedup_key) DO NOTHING",
    )
    .await?;
    for a in &attached {
        match a {
            Attachment::ApiKeyCreated { key_hash, record } => {
                crate::keys::insert_api_key(&mut tx, key_hash, record).await?;
            }
            Attachment::ApiKeyRevoked { id } => {
                crate::keys::revoke_api_key(&mut tx, *id, now).await?;
            }
            Attachment::Message(_) | Attachment::Guard(_) | Attachment::Row(_) => {}
        }
    }
    guarded.flush(&mut tx, dialect).await?;
    if seq != start_seq {
        sqlx::query("UPDATE journal_head SET seq = $1, hash = $2, transfers_at = $3 WHERE id = 1")
            .bind(seq)
            .bind(prev_hash.to_vec())
            .bind(transfers_at.as_micros())
            .execute(&mut *tx)
            .await?;
        if let Some(signer) = &options.checkpointer
            && options.checkpoint_every > 0
            && seq / options.checkpoint_every != start_seq / options.checkpoint_every
        {
            let signature = signer.sign(&journal::checkpoint_message(seq, &prev_hash));
            sqlx::query(
                "INSERT INTO checkpoints (seq, hash, at, signer, signature) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(seq)
            .bind(prev_hash.to_vec())
            .bind(now.as_micros())
            .bind(signer.public_key().to_vec())
            .bind(signature)
            .execute(&mut *tx)
            .await?;
        }
    }
    let done = outbox_ops(&mut tx, dialect, outbox).await?;
    tx.commit().await?;
    cache.keep(cached, book.accounts, seq, prev_hash);

    let out = (results, done);
    debug_assert!(transfers.iter().all(|(t, _)| t.amount_minor > 0));
    Ok(out)
}

/// The writer's own connection, kept from one transaction to the next. SQLite keeps a page
/// cache per connection and empties it when another connection has written, so a writer that
/// took whichever pooled connection was idle read its pages back from the file on every
/// commit. Not kept when the pool holds a single connection (an in-memory database), which
/// readers need too.
struct Held {
    pool: AnyPool,
    conn: Option<sqlx::pool::PoolConnection<sqlx::Any>>,
    keep: bool,
}

impl Held {
    async fn get(&mut self) -> Result<&mut sqlx::pool::PoolConnection<sqlx::Any>, StoreError> {
        if self.conn.is_none() {
            self.conn = Some(self.pool.acquire().await?);
        }
        self.conn.as_mut().ok_or(StoreError::WriterGone)
    }
}

/// The accounts as this writer last committed them, so a batch need not read back the rows
/// it wrote itself: on SQLite, where one process owns the file, that is every batch; on
/// PostgreSQL, every batch after one of this node's own (another node's commit moves the
/// journal head and empties the cache). Bounded by [`ACCOUNTS_CACHED_MAX`]: when the accounts
/// kept from earlier and this transaction's would pass it, only this transaction's are kept
/// (the likeliest to be named next).
#[derive(Default)]
struct Accounts {
    /// The journal head (`seq`, hash) the accounts are current at; `None` while a
    /// transaction is under way or after one failed.
    at: Option<(i64, [u8; 32])>,
    accounts: HashMap<Id, tally_ledger::Account>,
}

/// Most accounts the writer keeps between batches: 2^18, about 50 MB at ~200 bytes each.
const ACCOUNTS_CACHED_MAX: usize = 1 << 18;

impl Accounts {
    /// The cached accounts if the journal head is still where this writer left it (else
    /// none), leaving the cache invalid until [`Accounts::keep`].
    fn take_if_current(&mut self, seq: i64, hash: &[u8; 32]) -> HashMap<Id, tally_ledger::Account> {
        let current = self.at.take() == Some((seq, *hash));
        let accounts = std::mem::take(&mut self.accounts);
        if current { accounts } else { HashMap::new() }
    }

    /// Keeps the accounts a committed transaction left at journal head (`seq`, `hash`): those
    /// kept from before it (`earlier`) and those it loaded or changed (`latest`, which win).
    fn keep(
        &mut self,
        mut earlier: HashMap<Id, tally_ledger::Account>,
        latest: HashMap<Id, tally_ledger::Account>,
        seq: i64,
        hash: [u8; 32],
    ) {
        if earlier.len() + latest.len() > ACCOUNTS_CACHED_MAX {
            earlier.clear();
        }
        earlier.extend(latest);
        self.accounts = earlier;
        self.at = Some((seq, hash));
    }
}

/// Notes what newly recorded transfers change: the accounts to write back, the holds they
/// resolve, and the latest transfer time.
fn note_transfers(
    ts: &[Transfer],
    touched: &mut HashSet<Id>,
    resolved: &mut Vec<(Id, TransferState)>,
    transfers_at: &mut Timestamp,
) {
    for t in ts {
        touched.insert(t.debit_account);
        touched.insert(t.credit_account);
        if let Some(p) = t.pending_id {
            resolved.push((p, t.state));
        }
        *transfers_at = (*transfers_at).max(t.created_at);
    }
}

/// The journal entry recording `event`, chained after `seq`/`prev_hash` (which move to it).
fn chain_entry(
    event: &Event,
    now: Timestamp,
    seq: &mut i64,
    prev_hash: &mut [u8; 32],
) -> Result<JournalEntry, StoreError> {
    let body = tally_ledger::body::encode(event);
    let entry = journal::next_entry(*seq, *prev_hash, now, event.kind(), body);
    *seq = entry.seq;
    *prev_hash = entry.hash;
    Ok(entry)
}

/// Moves the book's history rows (accounts opened with `history`) into rows of the journal
/// entry `seq`, numbered in the order the transfers applied.
fn drain_history(book: &mut Book, seq: i64, rows: &mut Vec<Vec<Value>>) {
    for (ordinal, b) in book.balances.drain(..).enumerate() {
        rows.push(vec![
            Value::Blob(blob(&b.account)),
            Value::Int(seq),
            Value::Int(i64::try_from(ordinal).unwrap_or(i64::MAX)),
            Value::Blob(blob(&b.transfer)),
            Value::Int(b.at.as_micros()),
            Value::Int(b.debits_pending),
            Value::Int(b.debits_posted),
            Value::Int(b.credits_pending),
            Value::Int(b.credits_posted),
        ]);
    }
}

/// Runs the outbox operations of a batch inside its transaction, after its rows (so a message
/// the batch enqueued can be leased in the same commit).
async fn outbox_ops(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    dialect: Dialect,
    ops: &[OutboxOp],
) -> Result<Vec<OutboxDone>, StoreError> {
    let mut done = Vec::with_capacity(ops.len());
    for op in ops {
        done.push(match op {
            OutboxOp::Claim {
                now,
                limit,
                lease_s,
                ..
            } => OutboxDone::Claimed(
                crate::outbox::claim_in(tx, dialect, *now, *limit, *lease_s).await?,
            ),
            OutboxOp::Sent { ids, now, .. } => {
                crate::outbox::mark_sent_in(tx, ids, *now).await?;
                OutboxDone::Sent
            }
        });
    }
    Ok(done)
}

fn guard_of(a: &Attachment) -> Option<&Guard> {
    match a {
        Attachment::Guard(g) => Some(g),
        _ => None,
    }
}

/// `{select} IN (…)` over `values`, in chunks small enough for either database.
pub(crate) async fn select_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    dialect: Dialect,
    select: &str,
    values: Vec<Value>,
) -> Result<Vec<sqlx::any::AnyRow>, StoreError> {
    let mut out = Vec::new();
    let mut values = values.into_iter().peekable();
    while values.peek().is_some() {
        let chunk: Vec<Value> = values.by_ref().take(PARAMS_PER_STATEMENT_MAX).collect();
        let sql = format!("{select} IN ({})", placeholders(dialect, chunk.len()));
        out.extend(
            bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), chunk)
                .fetch_all(&mut **tx)
                .await?,
        );
    }
    Ok(out)
}

pub(crate) async fn insert_chunked(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    dialect: Dialect,
    table: &str,
    columns: &str,
    width: usize,
    rows: Vec<Vec<Value>>,
    tail: &str,
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    // Fixed-size blocks: the statement text repeats, so its prepared form is reused from the
    // connection's statement cache instead of being parsed anew for every batch size.
    let per = ROWS_PER_STATEMENT
        .min(PARAMS_PER_STATEMENT_MAX / width)
        .max(1);
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Value>> = rows.by_ref().take(per).collect();
        let sql = multi_insert(dialect, table, columns, width, chunk.len(), tail);
        let q = bind_all(
            sqlx::query(sqlx::AssertSqlSafe(sql)),
            chunk.into_iter().flatten().collect(),
        );
        q.execute(&mut **tx).await?;
    }
    Ok(())
}
