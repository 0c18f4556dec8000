//! The durable store: one SQL layer over embedded SQLite (the default) and PostgreSQL.
//!
//! Decision: sqlx's `Any` driver with SQL written in the dialect both databases share (`$N`
//! parameters, `ON CONFLICT`, `CAST(.. AS BIGINT)`), ids as 16-byte blobs, money and times as
//! 64-bit integers. The two dialects differ only in their migration files
//! (`migrations/{sqlite,postgres}`) and in how a write transaction starts (see [`Dialect`]).
//! Rejected: two native drivers (two code paths to keep equal), an ORM (hides the locking a
//! ledger must control).
//!
//! Isolation we rely on: every ledger write goes through the [`writer`], which runs batches
//! of commands in one transaction. On SQLite the transaction starts with `BEGIN IMMEDIATE`
//! (one writer at a time); on PostgreSQL it starts by locking the single `journal_head` row
//! `FOR UPDATE`, so batches from every `tally serve` process sharing the database are
//! serialised and each reads the committed state of its predecessor (READ COMMITTED suffices
//! once that lock is held). Nothing correctness-critical (balances, idempotency, pending
//! states) lives only in a process's memory.
//!
//! Durability: SQLite runs in WAL mode with `synchronous=FULL`; PostgreSQL with its defaults
//! (`fsync=on`, `synchronous_commit=on`). A command's result is returned only after the
//! transaction holding it committed, so an acknowledged transfer survives a crash.

pub mod agent;
pub mod audit;
pub mod delivery;
pub mod federation;
pub mod guarded;
pub mod keys;
pub mod oob;
pub mod outbox;
pub mod pad_providers;
pub mod pads;
pub mod queries;
pub mod receipts;
mod rows;
pub mod trade;
pub mod trustee;
pub mod writer;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::pool::PoolConnection;
use sqlx::{AnyPool, Executor};
use std::time::Duration;
use tally_kernel::{Id, Timestamp};
use tally_ledger::{Account, LedgerError, Transfer};

pub use guarded::{Conflict, Guard, RowWrite};
pub use rows::Value;
pub use writer::{Attachment, Batched, Checkpointer, Clock, Outcome, WriteOptions};

/// Which database we talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL: `BEGIN` + `SELECT … FOR UPDATE` on the journal head.
    Postgres,
    /// SQLite: `BEGIN IMMEDIATE`.
    Sqlite,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The ledger refused the command (the caller's fault); nothing changed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The database failed or is unreachable.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A row did not decode (a bug or a hand-edited database).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A precondition of the write no longer holds (another request changed the row first,
    /// or a limit is reached); nothing was written. The variant says which.
    #[error("conflict: {0}")]
    Conflict(guarded::Conflict),
    /// The writer task has stopped (the node is shutting down).
    #[error("the ledger writer has stopped")]
    WriterGone,
    /// The URL names no database we support.
    #[error("unsupported database URL (use sqlite://PATH or postgres://…): {0}")]
    BadUrl(String),
}

/// A connection to the database plus the ledger writer task.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    pub(crate) writer: writer::Handle,
    /// Idle read connections kept out of the pool between reads (see [`Reader`]).
    readers: std::sync::Arc<std::sync::Mutex<Readers>>,
    /// How many idle read connections are kept: none when the pool holds one connection.
    readers_max: usize,
}

/// Most idle read connections a store keeps out of its pool (the pool holds 8 on SQLite and
/// 16 on PostgreSQL; the writer keeps one more).
pub const READERS_KEPT_MAX: usize = 3;

/// The idle read connections, until [`Store::close`] gives them back for good.
#[derive(Default)]
struct Readers {
    kept: Vec<PoolConnection<sqlx::Any>>,
    closed: bool,
}

/// A connection for one read, from the store's kept readers (or the pool), given back with
/// [`Reader::done`] once the read has completed.
///
/// Why not the pool alone: `sqlx` pings every connection it takes back (a round trip to the
/// connection's worker thread on SQLite, to the server on PostgreSQL), since a query dropped
/// half-way may have left it mid-statement. A read that completed leaves its connection
/// idle, so a kept reader skips that round trip. A read that did not complete (an error, a
/// cancelled request) drops its `Reader`, and the connection goes back to the pool, which
/// pings it as before.
pub(crate) struct Reader<'s> {
    store: &'s Store,
    conn: Option<PoolConnection<sqlx::Any>>,
}

impl Reader<'_> {
    /// The connection.
    pub(crate) fn conn(&mut self) -> &mut sqlx::AnyConnection {
        // Invariant: `conn` is `Some` from `Store::reader` until `done` consumes the reader.
        self.conn
            .as_mut()
            .expect("a reader holds its connection until done")
    }

    /// The read completed: the connection is idle, kept for the next read.
    pub(crate) fn done(mut self) {
        if let Some(conn) = self.conn.take() {
            let mut readers = self.store.readers.lock().unwrap_or_else(|e| e.into_inner());
            // After `close` the pool waits for every connection: give it back.
            if !readers.closed && readers.kept.len() < self.store.readers_max {
                readers.kept.push(conn);
            }
        }
    }
}

/// The migrations, per dialect, in order.
const MIGRATIONS_SQLITE: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_ledger.sql")),
    (2, include_str!("../migrations/sqlite/0002_oob.sql")),
    (3, include_str!("../migrations/sqlite/0003_delivery.sql")),
    (4, include_str!("../migrations/sqlite/0004_receipts.sql")),
    (5, include_str!("../migrations/sqlite/0005_machines.sql")),
    (6, include_str!("../migrations/sqlite/0006_hardening.sql")),
    (7, include_str!("../migrations/sqlite/0007_send_caps.sql")),
    (
        8,
        include_str!("../migrations/sqlite/0008_trustee_credit.sql"),
    ),
    (
        9,
        include_str!("../migrations/sqlite/0009_party_revocations.sql"),
    ),
    (
        10,
        include_str!("../migrations/sqlite/0010_arbitrations.sql"),
    ),
    (
        11,
        include_str!("../migrations/sqlite/0011_arbitration_case.sql"),
    ),
    (12, include_str!("../migrations/sqlite/0012_federation.sql")),
    (
        13,
        include_str!("../migrations/sqlite/0013_trading_sessions.sql"),
    ),
    (
        14,
        include_str!("../migrations/sqlite/0014_session_clearing.sql"),
    ),
    (15, include_str!("../migrations/sqlite/0015_fx_tables.sql")),
    (16, include_str!("../migrations/sqlite/0016_order_keys.sql")),
    (
        17,
        include_str!("../migrations/sqlite/0017_session_receipts.sql"),
    ),
    (18, include_str!("../migrations/sqlite/0018_pads.sql")),
    (
        19,
        include_str!("../migrations/sqlite/0019_pad_mailboxes.sql"),
    ),
    (
        20,
        include_str!("../migrations/sqlite/0020_pad_vouchers.sql"),
    ),
    (21, include_str!("../migrations/sqlite/0021_pad_stock.sql")),
    (
        22,
        include_str!("../migrations/sqlite/0022_pad_accounts.sql"),
    ),
    (
        23,
        include_str!("../migrations/sqlite/0023_pad_providers.sql"),
    ),
    (
        24,
        include_str!("../migrations/sqlite/0024_pad_forward_commission.sql"),
    ),
    (
        25,
        include_str!("../migrations/sqlite/0025_transfer_events.sql"),
    ),
    (
        26,
        include_str!("../migrations/sqlite/0026_account_history.sql"),
    ),
    (
        27,
        include_str!("../migrations/sqlite/0027_account_references.sql"),
    ),
    (
        28,
        include_str!("../migrations/sqlite/0028_product_entry_blake3.sql"),
    ),
];
const MIGRATIONS_POSTGRES: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_ledger.sql")),
    (2, include_str!("../migrations/postgres/0002_oob.sql")),
    (3, include_str!("../migrations/postgres/0003_delivery.sql")),
    (4, include_str!("../migrations/postgres/0004_receipts.sql")),
    (5, include_str!("../migrations/postgres/0005_machines.sql")),
    (6, include_str!("../migrations/postgres/0006_hardening.sql")),
    (7, include_str!("../migrations/postgres/0007_send_caps.sql")),
    (
        8,
        include_str!("../migrations/postgres/0008_trustee_credit.sql"),
    ),
    (
        9,
        include_str!("../migrations/postgres/0009_party_revocations.sql"),
    ),
    (
        10,
        include_str!("../migrations/postgres/0010_arbitrations.sql"),
    ),
    (
        11,
        include_str!("../migrations/postgres/0011_arbitration_case.sql"),
    ),
    (
        12,
        include_str!("../migrations/postgres/0012_federation.sql"),
    ),
    (
        13,
        include_str!("../migrations/postgres/0013_trading_sessions.sql"),
    ),
    (
        14,
        include_str!("../migrations/postgres/0014_session_clearing.sql"),
    ),
    (
        15,
        include_str!("../migrations/postgres/0015_fx_tables.sql"),
    ),
    (
        16,
        include_str!("../migrations/postgres/0016_order_keys.sql"),
    ),
    (
        17,
        include_str!("../migrations/postgres/0017_session_receipts.sql"),
    ),
    (18, include_str!("../migrations/postgres/0018_pads.sql")),
    (
        19,
        include_str!("../migrations/postgres/0019_pad_mailboxes.sql"),
    ),
    (
        20,
        include_str!("../migrations/postgres/0020_pad_vouchers.sql"),
    ),
    (
        21,
        include_str!("../migrations/postgres/0021_pad_stock.sql"),
    ),
    (
        22,
        include_str!("../migrations/postgres/0022_pad_accounts.sql"),
    ),
    (
        23,
        include_str!("../migrations/postgres/0023_pad_providers.sql"),
    ),
    (
        24,
        include_str!("../migrations/postgres/0024_pad_forward_commission.sql"),
    ),
    (
        25,
        include_str!("../migrations/postgres/0025_transfer_events.sql"),
    ),
    (
        26,
        include_str!("../migrations/postgres/0026_account_history.sql"),
    ),
    (
        27,
        include_str!("../migrations/postgres/0027_account_references.sql"),
    ),
    (
        28,
        include_str!("../migrations/postgres/0028_product_entry_blake3.sql"),
    ),
];

/// A pool of SQLite connections as every embedded database here uses them: WAL, a commit
/// durable when it returns (`synchronous = FULL`), a wait for the writer's lock, no pings and
/// no connection recycling (an embedded database has no network to fail: pinging a
/// connection before each use only costs a round trip to its worker thread).
pub(crate) fn sqlite_pool(max_connections: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .test_before_acquire(false)
        .idle_timeout(None)
        .max_lifetime(None)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA synchronous = FULL").await?;
                conn.execute("PRAGMA busy_timeout = 10000").await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                conn.execute("PRAGMA cache_size = -131072").await?;
                conn.execute("PRAGMA wal_autocheckpoint = 16384").await?;
                Ok(())
            })
        })
}

impl Store {
    /// Connects to `url` (`sqlite://path`, `sqlite::memory:` or `postgres://…`), applies
    /// migrations and starts the writer.
    pub async fn open(url: &str, options: WriteOptions) -> Result<Store, StoreError> {
        install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else {
            return Err(StoreError::BadUrl(url.to_string()));
        };
        let pool = match dialect {
            Dialect::Sqlite => {
                let url = if url.contains('?') || url.contains(":memory:") {
                    url.to_string()
                } else {
                    format!("{url}?mode=rwc")
                };
                // An in-memory database exists per connection: keep exactly one.
                let max = if url.contains(":memory:") { 1 } else { 8 };
                sqlite_pool(max).connect(&url).await?
            }
            Dialect::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect(url)
                    .await?
            }
        };
        migrate(&pool, dialect).await?;
        let writer = writer::spawn(pool.clone(), dialect, options);
        // One connection (an in-memory database) is everyone's: none is kept aside.
        let readers_max = if pool.options().get_max_connections() > 1 {
            READERS_KEPT_MAX
        } else {
            0
        };
        Ok(Store {
            pool,
            dialect,
            writer,
            readers: std::sync::Arc::default(),
            readers_max,
        })
    }

    /// The dialect in use.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The connection pool, for read-only queries elsewhere in the workspace.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The rows `sql` selects with `params` bound to `$1…`: the store's one read path, on a
    /// kept reader (see [`Reader`]).
    pub(crate) async fn fetch_all(
        &self,
        sql: String,
        params: Vec<rows::Value>,
    ) -> Result<Vec<sqlx::any::AnyRow>, StoreError> {
        let mut reader = self.reader().await?;
        let rows = rows::bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), params)
            .fetch_all(reader.conn())
            .await?;
        reader.done();
        Ok(rows)
    }

    /// A connection for one read (see [`Reader`]).
    pub(crate) async fn reader(&self) -> Result<Reader<'_>, StoreError> {
        let kept = self
            .readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .kept
            .pop();
        let conn = match kept {
            Some(conn) => conn,
            None => self.pool.acquire().await?,
        };
        Ok(Reader {
            store: self,
            conn: Some(conn),
        })
    }

    /// Runs one ledger command through the batched writer and returns its outcome once it is
    /// durable. A retry with the same idempotency key returns the first outcome.
    pub async fn execute(&self, request: tally_ledger::Request) -> Result<Outcome, StoreError> {
        self.execute_with(request, Vec::new()).await
    }

    /// Like [`Store::execute`], also writing `attachments` (outbox messages, API-key rows) in
    /// the same transaction, only if the command succeeds.
    pub async fn execute_with(
        &self,
        request: tally_ledger::Request,
        attachments: Vec<Attachment>,
    ) -> Result<Outcome, StoreError> {
        request.validate()?;
        for a in &attachments {
            if let Attachment::Message(m) = a {
                m.validate()?;
            }
        }
        self.writer.submit(request, attachments).await
    }

    /// Decides a batch of 1 to [`tally_ledger::batch::BATCH_EVENTS_MAX`] transfer events in
    /// one durable transaction and answers one result per event (see
    /// [`tally_ledger::Book::apply_batch`]). A retried batch answers `exists` for what it made.
    pub async fn execute_events(
        &self,
        events: Vec<tally_ledger::batch::TransferEvent>,
    ) -> Result<Batched, StoreError> {
        self.writer.submit_events(events).await
    }

    /// Sweeps pending transfers whose timeout passed; returns how many were expired.
    pub async fn expire_due(&self, now: Timestamp, limit: i64) -> Result<u64, StoreError> {
        let due: Vec<(Vec<u8>,)> = sqlx::query_as(
            "SELECT id FROM transfers WHERE state = 'pending' AND expires_at <= $1 \
             ORDER BY expires_at LIMIT $2",
        )
        .bind(now.as_micros())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut expired = 0;
        let mut jobs = Vec::with_capacity(due.len());
        for (id,) in due {
            let id =
                Id::from_slice(&id).ok_or_else(|| StoreError::Corrupt("transfer id".into()))?;
            let request = tally_ledger::Request {
                // System keys start with ':', which no caller's namespaced key
                // (`{owner}:{key}`, owners never empty) can.
                idempotency_key: format!(":expire:{id}"),
                command: tally_ledger::Command::Expire { pending_id: id },
            };
            jobs.push(self.execute(request));
        }
        for r in futures::future::join_all(jobs).await {
            match r {
                Ok(_) => expired += 1,
                // Another process (or a post that won the race) resolved it first: fine.
                Err(StoreError::Ledger(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(expired)
    }

    /// One account, or `None`.
    pub async fn account(&self, id: Id) -> Result<Option<Account>, StoreError> {
        let rows = self
            .fetch_all(
                rows::ACCOUNT_SELECT_BY_ID.into(),
                vec![rows::Value::Blob(id.as_bytes().to_vec())],
            )
            .await?;
        rows.first().map(rows::account).transpose()
    }

    /// Accounts of one owner, oldest first.
    pub async fn accounts_of(&self, owner: &str) -> Result<Vec<Account>, StoreError> {
        let rows = self
            .fetch_all(
                rows::ACCOUNT_SELECT_BY_OWNER.into(),
                vec![rows::Value::Text(owner.to_string())],
            )
            .await?;
        rows.iter().map(rows::account).collect()
    }

    /// One transfer, or `None`.
    pub async fn transfer(&self, id: Id) -> Result<Option<Transfer>, StoreError> {
        let rows = self
            .fetch_all(
                rows::TRANSFER_SELECT_BY_ID.into(),
                vec![rows::Value::Blob(id.as_bytes().to_vec())],
            )
            .await?;
        rows.first().map(rows::transfer).transpose()
    }

    /// The latest transfers touching `account`, newest first.
    pub async fn transfers_of(&self, account: Id, limit: i64) -> Result<Vec<Transfer>, StoreError> {
        let rows = self
            .fetch_all(
                rows::TRANSFER_SELECT_BY_ACCOUNT.into(),
                vec![
                    rows::Value::Blob(account.as_bytes().to_vec()),
                    rows::Value::Int(limit),
                ],
            )
            .await?;
        rows.iter().map(rows::transfer).collect()
    }

    /// Numbers for `/metrics` and `tally ledger audit`: rows in the main tables.
    pub async fn counts(&self) -> Result<Counts, StoreError> {
        let (accounts, transfers, seq): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT CAST(COUNT(*) AS BIGINT) FROM accounts), \
                    (SELECT CAST(COUNT(*) AS BIGINT) FROM transfers), \
                    (SELECT seq FROM journal_head WHERE id = 1)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Counts {
            accounts,
            transfers,
            journal_seq: seq,
        })
    }

    /// The journal head: the sequence number and hash of the last entry (0 and zeros on an
    /// empty journal). Read-only; a test compares two heads to prove a refused request wrote
    /// nothing to the journal.
    pub async fn journal_head(&self) -> Result<(i64, Vec<u8>), StoreError> {
        let (seq, hash): (i64, Vec<u8>) =
            sqlx::query_as("SELECT seq, hash FROM journal_head WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
        Ok((seq, hash))
    }

    /// Stops the writer after the batch in flight and closes the pool.
    pub async fn close(&self) {
        {
            // The pool's close waits for every connection taken from it, the kept readers too.
            let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
            readers.closed = true;
            readers.kept.clear();
        }
        self.writer.stop().await;
        self.pool.close().await;
    }
}

/// Row counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Accounts.
    pub accounts: i64,
    /// Transfer rows.
    pub transfers: i64,
    /// Last journal seq.
    pub journal_seq: i64,
}

async fn migrate(pool: &AnyPool, dialect: Dialect) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await?;
    conn.execute(
        "CREATE TABLE IF NOT EXISTS tally_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .await?;
    let migrations = match dialect {
        Dialect::Sqlite => MIGRATIONS_SQLITE,
        Dialect::Postgres => MIGRATIONS_POSTGRES,
    };
    for (version, sql) in migrations {
        let mut tx = match dialect {
            Dialect::Sqlite => sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?,
            Dialect::Postgres => {
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                // Two processes starting at once must not both apply a migration.
                tx.execute("LOCK TABLE tally_migrations IN EXCLUSIVE MODE")
                    .await?;
                tx
            }
        };
        let done: Option<(i64,)> =
            sqlx::query_as("SELECT version FROM tally_migrations WHERE version = $1")
                .bind(*version)
                .fetch_optional(&mut *tx)
                .await?;
        if done.is_none() {
            tx.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))).await?;
            sqlx::query("INSERT INTO tally_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(*version)
                .bind(Timestamp::now().as_micros())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly by design.
mod reader_tests {
    use super::*;

    fn kept(store: &Store) -> usize {
        store.readers.lock().unwrap().kept.len()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn completed_reads_keep_their_connection_and_close_gives_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url, WriteOptions::default()).await.unwrap();
        assert_eq!(kept(&store), 0);
        assert!(store.api_key_by_hash(&[1; 32]).await.unwrap().is_none());
        assert_eq!(kept(&store), 1, "a completed read keeps its connection");
        // Two reads at once take two connections; both are kept, up to the limit.
        let (a, b) = tokio::join!(store.reader(), store.reader());
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(kept(&store), 0);
        a.done();
        b.done();
        assert_eq!(kept(&store), 2);
        // A read that fails gives its connection back to the pool, not to the kept ones.
        let mut reader = store.reader().await.unwrap();
        let failed = sqlx::query("SELECT no_such_column FROM api_keys")
            .fetch_all(reader.conn())
            .await;
        assert!(failed.is_err());
        drop(reader);
        assert_eq!(kept(&store), 1);
        // The pool's close waits for every connection taken from it: the kept ones are given
        // back first, so closing ends (it would wait forever otherwise).
        tokio::time::timeout(std::time::Duration::from_secs(30), store.close())
            .await
            .expect("close ends with readers kept");
        assert_eq!(kept(&store), 0);
        // A reader that finishes after close is not kept.
        assert!(store.reader().await.is_err());
    }

    #[tokio::test]
    async fn an_in_memory_store_keeps_no_reader() {
        let store = Store::open("sqlite::memory:", WriteOptions::default())
            .await
            .unwrap();
        assert!(store.api_key_by_hash(&[1; 32]).await.unwrap().is_none());
        assert_eq!(kept(&store), 0, "its one connection is everyone's");
        assert!(store.api_key_by_hash(&[2; 32]).await.unwrap().is_none());
    }
}
