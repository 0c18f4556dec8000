//! Rows beside the ledger, decided inside the writer's batch: guards and row writes.
//!
//! A job may carry [`Guard`]s (preconditions) and [`RowWrite`]s (rows it writes if its command
//! succeeds). The hot ones are batched: keyed guards are checked against rows loaded once per
//! batch (one `SELECT … IN (…)` per kind) and kept current in memory as jobs write, and row
//! inserts/upserts are written at the end of the batch as multi-row statements. Rare ones
//! (counts, plain statements) run inline, in job order. Either way a guard sees what earlier
//! jobs of the same batch wrote, so two jobs deciding on one row cannot both pass.
//!
//! Rejected: one statement per guard and per row, in job order (the first version): correct,
//! but every statement is a round trip to SQLite's worker thread, and the writer is the one
//! serial path of the node; batching is what the ledger's rows already do.

use crate::rows::{Value, bind_all};
use crate::{Dialect, StoreError};
use sqlx::Row;
use std::collections::HashMap;

/// A precondition of a job. Made by the store's table modules, which own the SQL.
#[derive(Debug, Clone)]
pub struct Guard {
    pub(crate) kind: GuardKind,
    /// What a failure means.
    pub(crate) conflict: Conflict,
}

/// Why a guarded job wrote nothing: what holds in the database instead of the job's premise.
/// Callers decide by the variant (retry, refuse, rate-limit), never by the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Conflict {
    /// A limit counted in the database is reached (sessions per address, unpaid orders).
    Limit(&'static str),
    /// The row moved on since it was read: read it again and decide again.
    Moved(&'static str),
    /// A warrant the step relies on was revoked meanwhile.
    Revoked(&'static str),
    /// Something unique belongs to someone else (an address of another user).
    Taken(&'static str),
}

impl Conflict {
    /// What it means, in words.
    pub fn what(self) -> &'static str {
        match self {
            Conflict::Limit(w) | Conflict::Moved(w) | Conflict::Revoked(w) | Conflict::Taken(w) => {
                w
            }
        }
    }
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.what())
    }
}

#[derive(Debug, Clone)]
pub(crate) enum GuardKind {
    /// Row `key` of `table` exists and has these column values.
    Row {
        table: &'static str,
        key_column: &'static str,
        key: Value,
        expect: Vec<(&'static str, Value)>,
    },
    /// Fewer than `max` rows of `table` have `a` and `b` and `time >= since`, counting what
    /// this batch already added to `bucket` (each passing job adds one). Loaded for the whole
    /// batch in one query from the batch's earliest `since`, so it errs on the strict side.
    Recent {
        table: &'static str,
        a: (&'static str, Value),
        b: (&'static str, Value),
        time: (&'static str, i64),
        bucket: String,
        max: i64,
    },
    /// `sql` (a `SELECT COUNT(*)`) plus what this batch already added to `bucket` is below
    /// `max`; each passing job adds one to `bucket`. Runs inline: for rare checks.
    Count {
        sql: &'static str,
        params: Vec<Value>,
        bucket: String,
        max: i64,
    },
}

/// A row a job writes if its command succeeds.
#[derive(Debug, Clone)]
pub enum RowWrite {
    /// Batched: `INSERT INTO table (columns) VALUES (…) tail`, with the rows of the whole batch
    /// in few statements. With `key`, the row is the current state of that key for guards,
    /// and an upsert `tail` keeps only the last row per key of a batch.
    Insert {
        /// Table.
        table: &'static str,
        /// Column list, `", "`-separated.
        columns: &'static str,
        /// The values, one per column.
        values: Vec<Value>,
        /// `ON CONFLICT …` or empty.
        tail: &'static str,
        /// The key column and value, for rows guards look at.
        key: Option<(&'static str, Value)>,
    },
    /// Inline, in job order: a statement changing rows. With `touches`, later guards of the
    /// same batch on that row fail (they re-read and decide again).
    Statement {
        /// SQL.
        sql: &'static str,
        /// Parameters.
        params: Vec<Value>,
        /// `(table, key)` of the row it changes, if guards look at it.
        touches: Option<(&'static str, Value)>,
    },
}

/// The statement an insert goes into: table, columns, tail.
type InsertShape = (&'static str, &'static str, &'static str);

/// Identifies a row for guards: table, key column, key.
type RowKey = (&'static str, &'static str, Value);

/// What a batch knows about guarded rows: column values, or `None` for a row changed by an
/// inline statement (unknown until re-read).
#[derive(Default)]
pub(crate) struct Rows {
    rows: HashMap<RowKey, Option<HashMap<&'static str, Value>>>,
    /// Stored counts of `Recent` guards: (table, a, b) → rows.
    recent: HashMap<(&'static str, Value, Value), i64>,
    buckets: HashMap<String, i64>,
    /// Deferred inserts, grouped by statement shape, in first-seen order.
    inserts: Vec<(InsertShape, Vec<RowWrite>)>,
}

impl Rows {
    /// Loads every row a keyed guard of the batch names.
    pub(crate) async fn load(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        dialect: Dialect,
        guards: impl Iterator<Item = &Guard>,
    ) -> Result<Rows, StoreError> {
        let mut wanted: HashMap<(&'static str, &'static str, Vec<&'static str>), Vec<Value>> =
            HashMap::new();
        type Shape = (&'static str, &'static str, &'static str, &'static str);
        let mut recent: HashMap<Shape, (Vec<Value>, Vec<Value>, i64)> = HashMap::new();
        for g in guards {
            if let GuardKind::Recent {
                table, a, b, time, ..
            } = &g.kind
            {
                let e = recent
                    .entry((table, a.0, b.0, time.0))
                    .or_insert_with(|| (Vec::new(), Vec::new(), time.1));
                e.0.push(a.1.clone());
                e.1.push(b.1.clone());
                e.2 = e.2.min(time.1);
            }
            if let GuardKind::Row {
                table,
                key_column,
                key,
                expect,
            } = &g.kind
            {
                let columns = expect.iter().map(|(c, _)| *c).collect();
                wanted
                    .entry((table, key_column, columns))
                    .or_default()
                    .push(key.clone());
            }
        }
        let mut rows = Rows::default();
        for ((table, a, b, time), (mut av, mut bv, since)) in recent {
            for v in [&mut av, &mut bv] {
                *v = std::mem::take(v)
                    .into_iter()
                    .collect::<std::collections::HashSet<_>>()
                    .into_iter()
                    .collect();
            }
            let Some(like) = av.first().cloned().zip(bv.first().cloned()) else {
                continue;
            };
            let mut params = vec![Value::Int(since)];
            let first = crate::rows::placeholders_from(dialect, 2, av.len());
            let second = crate::rows::placeholders_from(dialect, 2 + av.len(), bv.len());
            params.extend(av);
            params.extend(bv);
            let sql = format!(
                "SELECT {a}, {b}, COUNT(*) AS n FROM {table} WHERE {time} >= {} AND {a} IN ({first}) \
                 AND {b} IN ({second}) GROUP BY {a}, {b}",
                crate::rows::placeholders_from(dialect, 1, 1)
            );
            for r in bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), params)
                .fetch_all(&mut **tx)
                .await?
            {
                let key = (
                    table,
                    decode_like(&r, a, &like.0)?,
                    decode_like(&r, b, &like.1)?,
                );
                rows.recent.insert(key, r.try_get("n")?);
            }
        }
        for ((table, key_column, columns), keys) in wanted {
            let keys: Vec<Value> = keys
                .into_iter()
                .collect::<std::collections::HashSet<_>>()
                .into_iter()
                .collect();
            let Some(like) = keys.first().cloned() else {
                continue;
            };
            let select = format!(
                "SELECT {key_column}, {} FROM {table} WHERE {key_column}",
                columns.join(", ")
            );
            for r in crate::writer::select_in(tx, dialect, &select, keys).await? {
                let key = decode_like(&r, key_column, &like)?;
                let mut values = HashMap::new();
                for c in &columns {
                    values.insert(*c, decode_column(&r, c)?);
                }
                rows.rows.insert((table, key_column, key), Some(values));
            }
        }
        Ok(rows)
    }

    /// Checks `guards` of one job; the first that fails names why.
    pub(crate) async fn check(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        guards: &[&Guard],
    ) -> Result<Option<Conflict>, StoreError> {
        for g in guards {
            let holds = match &g.kind {
                GuardKind::Row {
                    table,
                    key_column,
                    key,
                    expect,
                } => match self.rows.get(&(*table, *key_column, key.clone())) {
                    Some(Some(values)) => expect
                        .iter()
                        .all(|(c, v)| values.get(c).is_some_and(|have| same(have, v))),
                    _ => false,
                },
                GuardKind::Recent {
                    table,
                    a,
                    b,
                    bucket,
                    max,
                    ..
                } => {
                    let stored = self
                        .recent
                        .get(&(*table, a.1.clone(), b.1.clone()))
                        .copied()
                        .unwrap_or(0);
                    stored + self.buckets.get(bucket).copied().unwrap_or(0) < *max
                }
                GuardKind::Count {
                    sql,
                    params,
                    bucket,
                    max,
                } => {
                    let r = bind_all(sqlx::query(*sql), params.clone())
                        .fetch_one(&mut **tx)
                        .await?;
                    let stored: i64 = r.try_get(0)?;
                    stored + self.buckets.get(bucket).copied().unwrap_or(0) < *max
                }
            };
            if !holds {
                return Ok(Some(g.conflict));
            }
        }
        Ok(None)
    }

    /// Records what a job that succeeded writes: inline statements run now, inserts wait for
    /// [`Rows::flush`], and the guarded rows' state is updated for later jobs.
    pub(crate) async fn write(
        &mut self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        guards: &[&Guard],
        writes: &[&RowWrite],
    ) -> Result<(), StoreError> {
        for g in guards {
            if let GuardKind::Count { bucket, .. } | GuardKind::Recent { bucket, .. } = &g.kind {
                *self.buckets.entry(bucket.clone()).or_insert(0) += 1;
            }
        }
        for w in writes {
            match w {
                RowWrite::Statement {
                    sql,
                    params,
                    touches,
                } => {
                    bind_all(sqlx::query(*sql), params.clone())
                        .execute(&mut **tx)
                        .await?;
                    if let Some((table, key)) = touches {
                        for ((t, _, k), state) in self.rows.iter_mut() {
                            if t == table && k == key {
                                *state = None;
                            }
                        }
                    }
                }
                RowWrite::Insert {
                    table,
                    columns,
                    values,
                    tail,
                    key,
                } => {
                    if let Some((key_column, key)) = key {
                        let state: HashMap<&'static str, Value> =
                            columns.split(", ").zip(values.iter().cloned()).collect();
                        self.rows
                            .insert((table, key_column, key.clone()), Some(state));
                    }
                    let shape = (*table, *columns, *tail);
                    match self.inserts.iter_mut().find(|(s, _)| *s == shape) {
                        Some((_, rows)) => rows.push((*w).clone()),
                        None => self.inserts.push((shape, vec![(*w).clone()])),
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes the deferred inserts, a few multi-row statements per shape. An upsert keeps only
    /// the last row per key (a statement may not change one row twice).
    pub(crate) async fn flush(
        self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        dialect: Dialect,
    ) -> Result<(), StoreError> {
        for ((table, columns, tail), rows) in self.inserts {
            let mut last: HashMap<Value, usize> = HashMap::new();
            for (i, r) in rows.iter().enumerate() {
                if let RowWrite::Insert {
                    key: Some((_, k)), ..
                } = r
                {
                    last.insert(k.clone(), i);
                }
            }
            let upsert = tail.contains("DO UPDATE");
            let values: Vec<Vec<Value>> = rows
                .into_iter()
                .enumerate()
                .filter_map(|(i, r)| match r {
                    RowWrite::Insert { values, key, .. } => {
                        let superseded =
                            upsert && key.as_ref().is_some_and(|(_, k)| last.get(k) != Some(&i));
                        (!superseded).then_some(values)
                    }
                    RowWrite::Statement { .. } => None,
                })
                .collect();
            let width = columns.split(", ").count();
            crate::writer::insert_chunked(tx, dialect, table, columns, width, values, tail).await?;
        }
        Ok(())
    }
}

/// Values compare by content; a NULL of any type equals any NULL.
fn same(a: &Value, b: &Value) -> bool {
    let null = |v: &Value| matches!(v, Value::NullBlob | Value::NullInt | Value::NullText);
    (null(a) && null(b)) || a == b
}

/// Decodes a key column as the same variant as `like`.
fn decode_like(r: &sqlx::any::AnyRow, column: &str, like: &Value) -> Result<Value, StoreError> {
    Ok(match like {
        Value::Blob(_) | Value::NullBlob => Value::Blob(r.try_get(column)?),
        Value::Int(_) | Value::NullInt => Value::Int(r.try_get(column)?),
        Value::Text(_) | Value::NullText => Value::Text(r.try_get(column)?),
    })
}

/// Decodes a guarded column by trying integer, text, then blob (NULL as the first that fits).
fn decode_column(r: &sqlx::any::AnyRow, column: &str) -> Result<Value, StoreError> {
    if let Ok(v) = r.try_get::<Option<i64>, _>(column) {
        return Ok(v.map_or(Value::NullInt, Value::Int));
    }
    if let Ok(v) = r.try_get::<Option<String>, _>(column) {
        return Ok(v.map_or(Value::NullText, Value::Text));
    }
    Ok(r.try_get::<Option<Vec<u8>>, _>(column)?
        .map_or(Value::NullBlob, Value::Blob))
}
