//! The merchant agent's journal (issue [7] step 4, SPEC M4): the merchant's own SQLite file,
//! apart from any node, holding each transaction's tab and every purchase taken on it.
//!
//! Callers check what needs no tab state on their own threads: a purchase's size, MAC,
//! canonical spelling and item, under the tab's key ([`TabKey::check`], keys cached once
//! their tab is on disk). One writer, on a thread of its own, owns the file and the tabs: it
//! takes the jobs queued meanwhile (up to [`BATCH_MAX`]), decides each on the batch's copy of
//! its tab (`Tab::take_checked`: the order, the deposit, the list hash), and hands the taken
//! purchases (one `segments` row per tab per batch: its purchases of that batch as a JSON
//! array) and the changed tabs to a commit, several rows to a statement, in one transaction
//! (`synchronous = FULL`). While that commit runs, the writer decides the next batch on top
//! of it; a batch's answers go out only after its own commit, so what a customer was told
//! is taken is on disk. A failed commit answers its batch, and the batch decided on top of
//! it, with the error and keeps neither. This is the group commit of the node's ledger
//! writer, pipelined, for a file with one writer.

use crate::StoreError;
use sqlx::{AnyPool, Executor, Row};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use tally_kernel::Currency;
use tally_kernel::Timestamp;
use tally_proto::session::acceptance::Delivery;
use tally_proto::session::ids::TransactionId;
use tally_proto::session::purchase::{
    Checked, MacedPurchase, PurchaseError, Tab, TabKey, Taken, hex32,
};
use tokio::sync::{mpsc, oneshot};

/// Most jobs decided and committed together.
pub const BATCH_MAX: usize = 4096;

/// An order the agent delivers with acceptance (M9): where it stands and its current sending.
#[derive(Debug, Clone)]
pub struct StoredDelivery {
    /// The session.
    pub session: String,
    /// The customer's session key (hex) the order and answers are signed with.
    pub customer_key: String,
    /// The order's state (it holds K1 and K2).
    pub delivery: Delivery,
    /// The current signed package (JSON text).
    pub package: String,
    /// The current sealed product.
    pub sealed: Vec<u8>,
}

/// What the agent is asked.
#[derive(Debug)]
pub enum AgentOp {
    /// Keep a new tab (opened and checked by the caller).
    Open(Box<Tab>),
    /// Take a purchase on a tab.
    Buy(MacedPurchase),
    /// Take no more purchases on a tab: asked by the customer with the close MAC
    /// (`purchase::close_mac`).
    Close {
        /// The close MAC, hex.
        mac: String,
    },
    /// Take no more purchases on a tab: the merchant ends it (asked by the merchant itself,
    /// or at the session's end).
    Terminate,
    /// The merchant's operator took the closed tab's record: it is not sent again.
    Reported,
}

/// What the agent owes its operator: tabs whose session is over but are still open (to end),
/// closed tabs whose record the operator has not taken (to send), and when the next open tab
/// ends.
#[derive(Debug, Default)]
pub struct Chores {
    /// Open tabs whose session is over.
    pub to_end: Vec<TransactionId>,
    /// Closed tabs whose record is not taken yet.
    pub to_report: Vec<Tab>,
    /// The earliest end of a tab still open (µs).
    pub next_end: Option<i64>,
}

/// A tab as the agent answers it (never with its key). Its fields are values, not text: the
/// agent answers every purchase with one, and spelling the transaction, the currency and the
/// list hash as strings each time was three allocations a purchase (the JSON is the same).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TabView {
    /// The transaction.
    pub transaction: TransactionId,
    /// Purchases taken.
    pub count: u64,
    /// What they cost, minor units.
    pub spent: i64,
    /// What the deposit still covers, minor units.
    pub remaining: i64,
    /// The deposit's currency.
    pub currency: Currency,
    /// The list hash (64 hex digits in JSON).
    #[serde(with = "hex32")]
    pub list: [u8; 32],
    /// True when the last purchase was a repeat (nothing new was taken).
    pub repeat: bool,
    /// No more purchases.
    pub closed: bool,
}

/// Why the agent refused.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The purchase or tab was refused (see the cause).
    #[error(transparent)]
    Purchase(#[from] PurchaseError),
    /// No tab for that transaction.
    #[error("no tab for that transaction")]
    UnknownTab,
    /// A tab for that transaction is open already.
    #[error("a tab for that transaction is open already")]
    TabExists,
    /// The journal could not be written; nothing was taken.
    #[error("the journal could not be written: {0}")]
    Store(String),
}

struct Job {
    transaction: TransactionId,
    work: Work,
    reply: oneshot::Sender<Result<TabView, AgentError>>,
}

/// What the writer is given: an operation as asked, or a purchase already checked on the
/// caller's thread under the tab's cached key (it carries the purchase).
enum Work {
    Op(AgentOp),
    Checked(Checked),
    /// A purchase taken: its text went to the batch's commit, the job keeps its reply.
    Written,
}

/// The keys of the tabs on disk, so that callers check their purchases' MACs and spellings
/// on their own threads and the one writer only decides what depends on a tab's state. A
/// cache: a purchase whose tab is not in it goes to the writer unchecked and is checked
/// there, and the writer takes a checked purchase only if it was checked under the tab's own
/// key.
type TabKeys = std::sync::Arc<std::sync::RwLock<HashMap<TransactionId, TabKey>>>;

/// The journal; cheap to clone.
#[derive(Clone)]
pub struct AgentJournal {
    tx: mpsc::Sender<Job>,
    pool: AnyPool,
    keys: TabKeys,
}

impl TabView {
    /// The tab as it stands; `repeat` when the last purchase was asked again.
    pub fn of(tab: &Tab, repeat: bool) -> TabView {
        TabView {
            transaction: tab.transaction,
            count: tab.count,
            spent: tab.spent,
            remaining: tab.remaining(),
            currency: tab.deposit.currency,
            list: tab.list,
            repeat,
            closed: tab.closed,
        }
    }
}

impl AgentJournal {
    /// Opens (creating) the journal at `path` and starts its writer.
    pub async fn open(path: &Path) -> Result<AgentJournal, StoreError> {
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let pool = crate::sqlite_pool(2).connect(&url).await?;
        pool.execute(
            "CREATE TABLE IF NOT EXISTS tabs (transaction_id TEXT PRIMARY KEY, tab TEXT NOT NULL, \
             updated_at INTEGER NOT NULL) STRICT",
        )
        .await?;
        pool.execute(
            "CREATE TABLE IF NOT EXISTS purchases (transaction_id TEXT NOT NULL, seq INTEGER NOT NULL, \
             bytes TEXT NOT NULL, mac TEXT NOT NULL, price INTEGER NOT NULL, taken_at INTEGER NOT NULL, \
             PRIMARY KEY (transaction_id, seq)) STRICT",
        )
        .await?;
        pool.execute(
            "CREATE TABLE IF NOT EXISTS segments (transaction_id TEXT NOT NULL, first_seq INTEGER NOT NULL, \
             last_seq INTEGER NOT NULL, data TEXT NOT NULL, taken_at INTEGER NOT NULL, \
             PRIMARY KEY (transaction_id, first_seq)) STRICT",
        )
        .await?;
        pool.execute(
            "CREATE TABLE IF NOT EXISTS deliveries (order_id TEXT PRIMARY KEY, session TEXT NOT NULL, \
             customer_key TEXT NOT NULL, delivery TEXT NOT NULL, package TEXT NOT NULL, \
             sealed BLOB NOT NULL, updated_at INTEGER NOT NULL) STRICT",
        )
        .await?;
        let mut tabs = HashMap::new();
        let mut keys = HashMap::new();
        for r in sqlx::query("SELECT transaction_id, tab FROM tabs")
            .fetch_all(&pool)
            .await?
        {
            let tab: Tab = serde_json::from_str(&r.try_get::<String, _>("tab")?)
                .map_err(|e| StoreError::Corrupt(format!("agent tab: {e}")))?;
            if let Ok(key) = tab.key() {
                keys.insert(tab.transaction, key);
            }
            tabs.insert(tab.transaction, tab);
        }
        let keys: TabKeys = std::sync::Arc::new(std::sync::RwLock::new(keys));
        let (tx, rx) = mpsc::channel(65_536);
        // The writer decides on a thread of its own (thousands of purchases at a time, tens
        // of milliseconds of work no other task should wait behind) and commits on the
        // caller's runtime, whose workers drive SQLite meanwhile.
        let runtime = tokio::runtime::Handle::current();
        let thread_error = |e: std::io::Error| StoreError::Corrupt(format!("agent writer: {e}"));
        let local = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(thread_error)?;
        let writer_pool = pool.clone();
        let writer_keys = keys.clone();
        std::thread::Builder::new()
            .name("agent-journal".into())
            .spawn(move || local.block_on(writer(writer_pool, tabs, writer_keys, rx, runtime)))
            .map_err(thread_error)?;
        Ok(AgentJournal { tx, pool, keys })
    }

    /// Submits one operation on the tab of `transaction`; answered once it is on disk.
    pub async fn submit(
        &self,
        transaction: TransactionId,
        op: AgentOp,
    ) -> Result<TabView, AgentError> {
        let rx = self.enqueue(transaction, op).await?;
        rx.await
            .map_err(|_| AgentError::Store("the writer stopped".into()))?
    }

    /// Queues one operation and returns where its answer will come: operations queued one
    /// after another are decided in that order (a customer may send several purchases of one
    /// tab without waiting for each).
    pub async fn enqueue(
        &self,
        transaction: TransactionId,
        op: AgentOp,
    ) -> Result<oneshot::Receiver<Result<TabView, AgentError>>, AgentError> {
        let work = match op {
            AgentOp::Buy(p) => {
                let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
                match keys.get(&transaction) {
                    Some(key) => Work::Checked(key.check(p)?),
                    None => Work::Op(AgentOp::Buy(p)),
                }
            }
            op => Work::Op(op),
        };
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                transaction,
                work,
                reply,
            })
            .await
            .map_err(|_| AgentError::Store("the writer stopped".into()))?;
        Ok(rx)
    }

    /// The purchases taken on a tab, in order: `(seq, canonical bytes)`.
    pub async fn purchases(
        &self,
        transaction: TransactionId,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT first_seq, data FROM segments WHERE transaction_id = $1 ORDER BY first_seq",
        )
        .bind(transaction.to_string())
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let first = u64::try_from(r.try_get::<i64, _>("first_seq")?)
                .map_err(|_| StoreError::Corrupt("purchase seq".into()))?;
            out.extend(decode_segment(first, &r.try_get::<String, _>("data")?)?);
        }
        Ok(out)
    }

    /// What is due at `now` (µs), from what is on disk.
    pub async fn chores(&self, now: i64) -> Result<Chores, StoreError> {
        let rows = sqlx::query(
            "SELECT tab FROM tabs WHERE json_extract(tab, '$.reported') IS NOT 1 \
             ORDER BY transaction_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut chores = Chores::default();
        for r in rows {
            let tab: Tab = serde_json::from_str(&r.try_get::<String, _>("tab")?)
                .map_err(|e| StoreError::Corrupt(format!("agent tab: {e}")))?;
            if tab.closed {
                chores.to_report.push(tab);
            } else if tab.is_expired(now) {
                chores.to_end.push(tab.transaction);
            } else if let Some(end) = tab.expires_at {
                chores.next_end = Some(chores.next_end.map_or(end, |n| n.min(end)));
            }
        }
        Ok(chores)
    }

    /// An order delivered with acceptance (M9), if any.
    pub async fn delivery(&self, order: &str) -> Result<Option<StoredDelivery>, StoreError> {
        let row = sqlx::query(
            "SELECT session, customer_key, delivery, package, sealed FROM deliveries WHERE order_id = $1",
        )
        .bind(order.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(StoredDelivery {
                session: r.try_get("session")?,
                customer_key: r.try_get("customer_key")?,
                delivery: serde_json::from_str(&r.try_get::<String, _>("delivery")?)
                    .map_err(|e| StoreError::Corrupt(format!("agent delivery: {e}")))?,
                package: r.try_get("package")?,
                sealed: r.try_get("sealed")?,
            })
        })
        .transpose()
    }

    /// Keeps an order's delivery (durable when it returns), replacing what was kept.
    pub async fn put_delivery(&self, d: &StoredDelivery) -> Result<(), StoreError> {
        let json = serde_json::to_string(&d.delivery)
            .map_err(|e| StoreError::Corrupt(format!("agent delivery: {e}")))?;
        sqlx::query(
            "INSERT INTO deliveries (order_id, session, customer_key, delivery, package, sealed, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (order_id) DO UPDATE SET \
             delivery = excluded.delivery, package = excluded.package, sealed = excluded.sealed, \
             updated_at = excluded.updated_at",
        )
        .bind(d.delivery.order.order.to_string())
        .bind(d.session.clone())
        .bind(d.customer_key.clone())
        .bind(json)
        .bind(d.package.clone())
        .bind(d.sealed.clone())
        .bind(Timestamp::now().as_micros())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Stops the writer and closes the file.
    pub async fn close(self) {
        drop(self.tx);
        self.pool.close().await;
    }
}

/// What a batch decided: its changed tabs and the purchases it took.
#[derive(Default)]
struct Staged {
    tabs: HashMap<TransactionId, Tab>,
    rows: Vec<PurchaseRow>,
}

/// A decided batch whose commit is under way: its jobs wait for it.
struct InFlight {
    jobs: Vec<Job>,
    answers: Vec<Result<TabView, AgentError>>,
    tabs: HashMap<TransactionId, Tab>,
    commit: tokio::task::JoinHandle<Result<(), StoreError>>,
}

/// The writer, pipelined: while one batch commits (SQLite's work, on its own thread), the
/// next is received and decided on top of the committing batch's tabs; then the first
/// batch's outcome is awaited, and only then is the second committed (one writer, in
/// order). A batch's answers go out after its own commit. A failed commit fails its batch
/// and the batch decided on top of it, and keeps neither: what was answered taken is on
/// disk, and what is kept in memory is what is on disk.
async fn writer(
    pool: AnyPool,
    mut tabs: HashMap<TransactionId, Tab>,
    keys: TabKeys,
    mut rx: mpsc::Receiver<Job>,
    runtime: tokio::runtime::Handle,
) {
    let mut inflight: Option<InFlight> = None;
    // Emptied batches, used again: a batch of thousands of jobs is most of a megabyte, and
    // allocating one a batch kept the allocator consolidating its heap.
    let mut spare: Vec<Vec<Job>> = Vec::new();
    loop {
        let mut jobs: Vec<Job> = spare.pop().unwrap_or_else(|| Vec::with_capacity(BATCH_MAX));
        let received = match inflight.as_mut() {
            None => rx.recv_many(&mut jobs, BATCH_MAX).await,
            Some(f) => tokio::select! {
                biased;
                n = rx.recv_many(&mut jobs, BATCH_MAX) => n,
                done = &mut f.commit => {
                    let f = inflight.take().expect("in flight");
                    spare.push(settle(&mut tabs, &keys, f.jobs, f.answers, f.tabs, joined(done)));
                    continue;
                }
            },
        };
        if received == 0 {
            if let Some(f) = inflight.take() {
                let done = joined(f.commit.await);
                settle(&mut tabs, &keys, f.jobs, f.answers, f.tabs, done);
            }
            return;
        }
        let mut staged = Staged::default();
        // The batch is decided at one instant (a clock read per purchase was a hundredth of
        // the agent's time): a tab whose time is over by then takes none of its purchases.
        let now = Timestamp::now().as_micros();
        let answers: Vec<_> = {
            let kept = Kept {
                tabs: &tabs,
                committing: inflight.as_ref().map(|f| &f.tabs),
            };
            jobs.iter_mut()
                .map(|job| decide(&kept, &mut staged, job, now))
                .collect()
        };
        if let Some(f) = inflight.take() {
            let done = joined(f.commit.await);
            let failed = done.as_ref().err().map(|e| e.to_string());
            spare.push(settle(&mut tabs, &keys, f.jobs, f.answers, f.tabs, done));
            if let Some(e) = failed {
                // Decided on top of tabs that are not on disk: refused, nothing kept.
                spare.push(refuse(jobs, &e));
                continue;
            }
        }
        let changed = match encode_tabs(&staged.tabs) {
            Ok(changed) => changed,
            Err(e) => {
                spare.push(settle(
                    &mut tabs,
                    &keys,
                    jobs,
                    answers,
                    HashMap::new(),
                    Err(e),
                ));
                continue;
            }
        };
        inflight = Some(InFlight {
            jobs,
            answers,
            tabs: staged.tabs,
            commit: runtime.spawn(commit(pool.clone(), staged.rows, changed)),
        });
    }
}

fn joined(r: Result<Result<(), StoreError>, tokio::task::JoinError>) -> Result<(), StoreError> {
    r.map_err(|e| StoreError::Corrupt(format!("the journal's commit stopped: {e}")))?
}

/// Answers a batch once its commit is over: on success keeps its tabs and sends its
/// answers; on failure keeps nothing and answers every job with the error. Gives back the
/// batch, emptied.
fn settle(
    tabs: &mut HashMap<TransactionId, Tab>,
    keys: &TabKeys,
    mut jobs: Vec<Job>,
    answers: Vec<Result<TabView, AgentError>>,
    staged: HashMap<TransactionId, Tab>,
    done: Result<(), StoreError>,
) -> Vec<Job> {
    match done {
        Ok(()) => {
            // The keys of the tabs this batch opened, for callers to check purchases with.
            let opened: Vec<(TransactionId, TabKey)> = jobs
                .iter()
                .zip(&answers)
                .filter(|(job, answer)| {
                    matches!(job.work, Work::Op(AgentOp::Open(_))) && answer.is_ok()
                })
                .filter_map(|(job, _)| {
                    let key = staged.get(&job.transaction)?.key().ok()?;
                    Some((job.transaction, key))
                })
                .collect();
            if !opened.is_empty() {
                keys.write()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(opened);
            }
            tabs.extend(staged);
            for (job, answer) in jobs.drain(..).zip(answers) {
                let _ = job.reply.send(answer);
            }
            jobs
        }
        Err(e) => {
            tracing::warn!(error = %e, "merchant agent: a batch could not be written");
            refuse(jobs, &e.to_string())
        }
    }
}

/// Answers every job of a batch that was not written: nothing was taken. Gives back the
/// batch, emptied.
fn refuse(mut jobs: Vec<Job>, why: &str) -> Vec<Job> {
    for job in jobs.drain(..) {
        let _ = job.reply.send(Err(AgentError::Store(why.to_string())));
    }
    jobs
}

/// The tabs as they stand for a batch being decided: on disk, overlaid with those of the
/// batch committing meanwhile.
struct Kept<'a> {
    tabs: &'a HashMap<TransactionId, Tab>,
    committing: Option<&'a HashMap<TransactionId, Tab>>,
}

impl Kept<'_> {
    fn get(&self, transaction: &TransactionId) -> Option<&Tab> {
        self.committing
            .and_then(|c| c.get(transaction))
            .or_else(|| self.tabs.get(transaction))
    }
}

fn decide(
    kept: &Kept<'_>,
    staged: &mut Staged,
    job: &mut Job,
    now: i64,
) -> Result<TabView, AgentError> {
    if let Work::Op(AgentOp::Open(tab)) = &job.work {
        if staged.tabs.contains_key(&job.transaction) || kept.get(&job.transaction).is_some() {
            return Err(AgentError::TabExists);
        }
        let v = TabView::of(tab, false);
        staged.tabs.insert(job.transaction, (**tab).clone());
        return Ok(v);
    }
    // The tab as this batch left it, copied once per tab and batch (not once per purchase);
    // a refused operation leaves it as it was.
    let tab = match staged.tabs.entry(job.transaction) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => e.insert(
            kept.get(&job.transaction)
                .ok_or(AgentError::UnknownTab)?
                .clone(),
        ),
    };
    let taken = match &job.work {
        Work::Op(AgentOp::Open(_)) => return Err(AgentError::TabExists),
        Work::Op(AgentOp::Close { mac }) => {
            tab.check_close(mac)?;
            *tab = tab.clone().ended();
            return Ok(TabView::of(tab, false));
        }
        Work::Op(AgentOp::Terminate) => {
            *tab = tab.clone().terminated();
            return Ok(TabView::of(tab, false));
        }
        Work::Op(AgentOp::Reported) => {
            tab.reported = true;
            return Ok(TabView::of(tab, false));
        }
        Work::Op(AgentOp::Buy(p)) => tab.take(p, now)?,
        Work::Checked(checked) => tab.take_checked(checked, now)?,
        Work::Written => return Err(AgentError::Store("a purchase decided twice".into())),
    };
    match taken {
        Taken::Repeat => Ok(TabView::of(tab, true)),
        Taken::New { seq, price } => {
            let v = TabView::of(tab, false);
            // The purchase's text goes to the commit as it came (the job keeps only its reply).
            let wire = match std::mem::replace(&mut job.work, Work::Written) {
                Work::Checked(checked) => checked.into_wire(),
                Work::Op(AgentOp::Buy(p)) => p,
                other => {
                    job.work = other;
                    return Err(AgentError::Store("a purchase decided twice".into()));
                }
            };
            staged
                .rows
                .push((job.transaction, seq, wire.bytes, wire.mac, price.minor));
            Ok(v)
        }
    }
}

/// Rows per INSERT statement. Measured on this machine (131,072 rows of a purchase's size in
/// transactions of 4,096, `synchronous=FULL`): 1,024 rows a statement took 13k rows/s, 256
/// 27k, 64 43k, 4 to 32 about 50k (one row a statement 40k): SQLite compiles a statement of
/// thousands of parameters slower than it runs a small cached one several times.
const ROWS_PER_STATEMENT: usize = 16;

/// A purchase row: transaction, seq, canonical bytes, MAC, price.
pub type PurchaseRow = (TransactionId, u64, String, String, i64);

/// One purchase in a segment, as read: `{"purchase": its canonical bytes as they are (JSON
/// already), "mac", "price"}`; a journal written before 2026-12 spelled the bytes as a JSON
/// string instead (`"bytes"`), read too.
#[derive(serde::Deserialize)]
struct SegmentEntry<'a> {
    #[serde(borrow, default)]
    purchase: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    bytes: Option<String>,
}

/// A segment's purchases, numbered from `first`: `(seq, canonical bytes)`.
fn decode_segment(first: u64, data: &str) -> Result<Vec<(u64, String)>, StoreError> {
    let entries: Vec<SegmentEntry<'_>> = serde_json::from_str(data)
        .map_err(|e| StoreError::Corrupt(format!("agent segment: {e}")))?;
    entries
        .into_iter()
        .zip(first..)
        .map(|(entry, seq)| match (entry.purchase, entry.bytes) {
            (Some(raw), None) => Ok((seq, raw.get().to_string())),
            (None, Some(text)) => Ok((seq, text)),
            _ => Err(StoreError::Corrupt("agent segment: a purchase".into())),
        })
        .collect()
}

/// Appends one purchase to a segment's JSON array (see [`SegmentEntry`]). Its bytes go in as
/// they are: they are one JSON object (checked canonical before it was taken) and its MAC 64
/// hex digits, so nothing needs escaping; escaping the bytes as a string was a twentieth of
/// the agent's time per purchase.
fn push_entry(data: &mut String, bytes: &str, mac: &str, price: i64) {
    data.push_str(if data.is_empty() { "[" } else { "," });
    data.push_str("{\"purchase\":");
    data.push_str(bytes);
    data.push_str(",\"mac\":\"");
    data.push_str(mac);
    // Writing to a String cannot fail.
    let _ = write!(data, "\",\"price\":{price}}}");
}

/// A segment row: transaction, first seq, last seq, the purchases (JSON array).
type SegmentRow = (String, i64, i64, String);

/// The purchases a batch took, one row per tab ("segment": the tab's consecutive purchases of
/// that batch, as a JSON array). A batch of thousands of purchases on hundreds of tabs writes
/// hundreds of rows, not thousands.
fn encode_segments(mut rows: Vec<PurchaseRow>) -> Result<Vec<SegmentRow>, StoreError> {
    // Each tab's purchases together, in the order taken (the sort is stable).
    rows.sort_by_key(|r| r.0);
    let mut segments = Vec::new();
    let mut rows = rows.into_iter().peekable();
    while let Some(first) = rows.next() {
        let seq =
            |r: &PurchaseRow| i64::try_from(r.1).map_err(|_| StoreError::Corrupt("seq".into()));
        let (first_seq, mut last_seq) = (seq(&first)?, seq(&first)?);
        let (transaction, _, bytes, mac, price) = first;
        let mut data = String::with_capacity(2 * (bytes.len() + mac.len() + 32));
        push_entry(&mut data, &bytes, &mac, price);
        while let Some(next) = rows.next_if(|r| r.0 == transaction) {
            last_seq = seq(&next)?;
            let (_, _, bytes, mac, price) = next;
            push_entry(&mut data, &bytes, &mac, price);
        }
        data.push(']');
        segments.push((transaction.to_string(), first_seq, last_seq, data));
    }
    Ok(segments)
}

/// A batch's changed tabs as JSON (done by the writer: it keeps the tabs themselves).
fn encode_tabs(tabs: &HashMap<TransactionId, Tab>) -> Result<Vec<(String, String)>, StoreError> {
    tabs.iter()
        .map(|(transaction, tab)| {
            serde_json::to_string(tab)
                .map(|json| (transaction.to_string(), json))
                .map_err(|e| StoreError::Corrupt(format!("agent tab: {e}")))
        })
        .collect()
}

async fn insert_segments(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    segments: Vec<SegmentRow>,
    now: i64,
) -> Result<(), StoreError> {
    let mut segments = segments.into_iter().peekable();
    while segments.peek().is_some() {
        let chunk: Vec<SegmentRow> = segments.by_ref().take(ROWS_PER_STATEMENT).collect();
        let values: Vec<String> = (0..chunk.len())
            .map(|i| {
                let b = i * 5;
                format!(
                    "(${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO segments (transaction_id, first_seq, last_seq, data, taken_at) VALUES {}",
            values.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (transaction, first, last, data) in chunk {
            q = q
                .bind(transaction)
                .bind(first)
                .bind(last)
                .bind(data)
                .bind(now);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

async fn insert_purchases(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    rows: &[PurchaseRow],
    now: i64,
) -> Result<(), StoreError> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut sql = String::from(
            "INSERT INTO purchases (transaction_id, seq, bytes, mac, price, taken_at) VALUES ",
        );
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push(',');
            }
            let b = i * 6;
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6
            ));
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (t, seq, bytes, mac, price) in chunk {
            q = q
                .bind(t.to_string())
                .bind(i64::try_from(*seq).map_err(|_| StoreError::Corrupt("seq".into()))?)
                .bind(bytes.clone())
                .bind(mac.clone())
                .bind(*price)
                .bind(now);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// The benchmark's reference: `rows` appended to a fresh journal file at `path` by plain
/// batched INSERTs, [`BATCH_MAX`] per durable transaction, with no tab to decide; rows/s.
pub async fn raw_append_rate(path: &Path, rows: &[PurchaseRow]) -> Result<f64, StoreError> {
    let journal = AgentJournal::open(path).await?;
    let started = std::time::Instant::now();
    for batch in rows.chunks(BATCH_MAX) {
        let mut tx = journal.pool.begin_with("BEGIN IMMEDIATE").await?;
        insert_purchases(&mut tx, batch, Timestamp::now().as_micros()).await?;
        tx.commit().await?;
    }
    let rate = rows.len() as f64 / started.elapsed().as_secs_f64();
    journal.close().await;
    Ok(rate)
}

/// Writes a batch in one durable transaction (spawned: it runs, and encodes its segments,
/// while the next batch is decided).
async fn commit(
    pool: AnyPool,
    rows: Vec<PurchaseRow>,
    tabs: Vec<(String, String)>,
) -> Result<(), StoreError> {
    if tabs.is_empty() {
        return Ok(());
    }
    let segments = encode_segments(rows)?;
    let now = Timestamp::now().as_micros();
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    insert_segments(&mut tx, segments, now).await?;
    // The changed tabs, several to a statement, as the purchases (a batch changes up to
    // thousands: one statement each cost more than the purchases' rows).
    for chunk in tabs.chunks(ROWS_PER_STATEMENT) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
            .collect();
        let sql = format!(
            "INSERT INTO tabs (transaction_id, tab, updated_at) VALUES {} \
             ON CONFLICT (transaction_id) DO UPDATE SET tab = excluded.tab, updated_at = excluded.updated_at",
            values.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (transaction, json) in chunk {
            q = q.bind(transaction.clone()).bind(json.clone()).bind(now);
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_kernel::crypto::SigningKey;
    use tally_proto::session::ids::{NodeId, SessionId};

    fn transaction(n: u64) -> TransactionId {
        let am = NodeId::of(&SigningKey::from_seed(&[1; 32]).verifying_key());
        SessionId::new(am, n).expect("id").first_transaction()
    }

    const P1: &str = r#"{"at":1,"item":"a \"b\"","price":{"currency":"EUR","minor":2},"seq":1,"transaction":"x"}"#;
    const P2: &str =
        r#"{"at":2,"item":"c","price":{"currency":"EUR","minor":3},"seq":2,"transaction":"x"}"#;

    /// Golden: a segment's `data` is the purchases' bytes as they are, with their MAC and
    /// price, in the order taken; one row per tab; and it reads back to the same bytes.
    #[test]
    fn a_segment_is_written_and_read_byte_exactly() {
        let (a, b) = (transaction(1), transaction(2));
        let mac = |c: char| c.to_string().repeat(64);
        let rows = vec![
            (b, 7, P2.to_string(), mac('c'), 3),
            (a, 1, P1.to_string(), mac('a'), 2),
            (a, 2, P2.to_string(), mac('b'), 3),
        ];
        let segments = encode_segments(rows).expect("segments");
        assert_eq!(segments.len(), 2);
        let (first, second) = if segments[0].0 == a.to_string() {
            (&segments[0], &segments[1])
        } else {
            (&segments[1], &segments[0])
        };
        assert_eq!((first.1, first.2), (1, 2));
        assert_eq!(
            first.3,
            format!(
                "[{{\"purchase\":{P1},\"mac\":\"{}\",\"price\":2}},\
                 {{\"purchase\":{P2},\"mac\":\"{}\",\"price\":3}}]",
                mac('a'),
                mac('b')
            )
        );
        assert_eq!(
            decode_segment(1, &first.3).expect("read"),
            vec![(1, P1.to_string()), (2, P2.to_string())]
        );
        assert_eq!((second.1, second.2), (7, 7));
        assert_eq!(
            decode_segment(7, &second.3).expect("read"),
            vec![(7, P2.to_string())]
        );
    }

    /// A segment written before the bytes went in as they are (a JSON string) still reads;
    /// an entry with neither, or both, is corrupt.
    #[test]
    fn an_older_segment_still_reads() {
        let old = serde_json::json!([{"bytes": P1, "mac": "00", "price": 2}]).to_string();
        assert_eq!(
            decode_segment(4, &old).expect("read"),
            vec![(4, P1.to_string())]
        );
        for bad in [
            r#"[{"mac":"00","price":2}]"#.to_string(),
            format!(r#"[{{"purchase":{P1},"bytes":"x","mac":"00","price":2}}]"#),
        ] {
            assert!(matches!(
                decode_segment(1, &bad),
                Err(StoreError::Corrupt(_))
            ));
        }
    }
}
