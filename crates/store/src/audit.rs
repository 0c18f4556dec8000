//! `tally ledger audit`: read the whole journal in order, check the chain, the checkpoints and
//! their signatures, replay every event, and compare with the stored accounts, transfers and
//! journal head. Streams rows, so memory grows with accounts, not with journal length.

use crate::rows;
use crate::{Store, StoreError};
use futures::TryStreamExt;
use sqlx::Row;
use tally_kernel::Timestamp;
use tally_ledger::TransferState;
use tally_ledger::audit::{AuditReport, Auditor};
use tally_ledger::journal::{Checkpoint, JournalEntry};

/// Checks a checkpoint signature: `(public key, message after the domain tag, signature)`.
pub type SignatureCheck<'a> = &'a (dyn Fn(&[u8; 32], &[u8], &[u8]) -> bool + Sync);

/// What the audit demands beyond a consistent chain.
#[derive(Debug, Clone, Default)]
pub struct AuditPolicy {
    /// Public keys allowed to sign checkpoints (the node keys). Empty: any key is accepted
    /// and only reported in [`StoreAudit::signers`], which proves the chain consistent but
    /// not that the operator's own key vouches for it.
    pub trusted_signers: Vec<[u8; 32]>,
    /// Most journal entries allowed before the first checkpoint, between two checkpoints and
    /// after the last (the writer signs every `checkpoint_every` entries, a batch late at
    /// most). `None`: not checked.
    pub checkpoint_gap_max: Option<i64>,
}

/// What the audit adds to the ledger's report.
#[derive(Debug, Clone, Default)]
pub struct StoreAudit {
    /// The ledger-level report (chain, replay, balances).
    pub ledger: AuditReport,
    /// Checkpoints whose signature verified.
    pub signatures_verified: u64,
    /// Distinct checkpoint signers (hex public keys).
    pub signers: Vec<String>,
}

impl StoreAudit {
    /// True when everything balances and verifies.
    pub fn ok(&self) -> bool {
        self.ledger.ok()
    }
}

fn hash32(v: Vec<u8>, what: &str) -> Result<[u8; 32], StoreError> {
    v.try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} is not 32 bytes")))
}

impl Store {
    /// All checkpoints, in order.
    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        checkpoints(&mut conn).await
    }

    /// The newest checkpoint, if any.
    pub async fn last_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let row = sqlx::query(
            "SELECT seq, hash, at, signer, signature FROM checkpoints ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(Checkpoint {
                seq: r.try_get("seq")?,
                hash: hash32(r.try_get("hash")?, "checkpoint hash")?,
                at: Timestamp(r.try_get("at")?),
                signer: hash32(r.try_get("signer")?, "checkpoint signer")?,
                signature: r.try_get("signature")?,
            })
        })
        .transpose()
    }

    /// Runs the full audit on one consistent snapshot (a read-only transaction), so a node
    /// that keeps writing meanwhile cannot make it see half a batch. `progress` is told the
    /// journal seq reached, now and then.
    pub async fn audit(
        &self,
        verify: SignatureCheck<'_>,
        policy: &AuditPolicy,
        progress: &(dyn Fn(i64) + Sync),
    ) -> Result<StoreAudit, StoreError> {
        let begin = match self.dialect() {
            crate::Dialect::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            crate::Dialect::Sqlite => "BEGIN",
        };
        let mut tx = self.pool().begin_with(begin).await?;
        let report = audit_in(&mut tx, verify, policy, progress).await;
        tx.rollback().await?;
        report
    }
}

async fn checkpoints(conn: &mut sqlx::AnyConnection) -> Result<Vec<Checkpoint>, StoreError> {
    let rows = sqlx::query("SELECT seq, hash, at, signer, signature FROM checkpoints ORDER BY seq")
        .fetch_all(&mut *conn)
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Checkpoint {
                seq: r.try_get("seq")?,
                hash: hash32(r.try_get("hash")?, "checkpoint hash")?,
                at: Timestamp(r.try_get("at")?),
                signer: hash32(r.try_get("signer")?, "checkpoint signer")?,
                signature: r.try_get("signature")?,
            })
        })
        .collect()
}

async fn audit_in(
    conn: &mut sqlx::AnyConnection,
    verify: SignatureCheck<'_>,
    policy: &AuditPolicy,
    progress: &(dyn Fn(i64) + Sync),
) -> Result<StoreAudit, StoreError> {
    let checkpoints = checkpoints(&mut *conn).await?;
    let mut out = StoreAudit::default();
    let mut problems = Vec::new();
    for c in &checkpoints {
        let message = tally_ledger::journal::checkpoint_message(c.seq, &c.hash);
        if verify(&c.signer, &message, &c.signature) {
            out.signatures_verified += 1;
        } else {
            problems.push(format!("checkpoint {}: signature does not verify", c.seq));
        }
        let signer = hex::encode(c.signer);
        if !policy.trusted_signers.is_empty() && !policy.trusted_signers.contains(&c.signer) {
            problems.push(format!(
                "checkpoint {}: signed by an untrusted key {signer}",
                c.seq
            ));
        }
        if !out.signers.contains(&signer) {
            out.signers.push(signer);
        }
    }
    let mut auditor = Auditor::new(checkpoints.iter().map(|c| (c.seq, c.hash)));
    {
        let mut stream =
            sqlx::query("SELECT seq, at, kind, prev_hash, hash, body FROM journal ORDER BY seq")
                .fetch(&mut *conn);
        while let Some(r) = stream.try_next().await? {
            let e = JournalEntry {
                seq: r.try_get("seq")?,
                at: Timestamp(r.try_get("at")?),
                kind: r.try_get("kind")?,
                prev_hash: hash32(r.try_get("prev_hash")?, "prev_hash")?,
                hash: hash32(r.try_get("hash")?, "hash")?,
                body: r.try_get("body")?,
            };
            auditor.feed(&e);
            if e.seq % 10_000 == 0 {
                progress(e.seq);
            }
        }
    }
    let (last_seq, last_hash) = auditor.head();
    progress(last_seq);
    // Checkpoints deleted (or never written) leave a stretch of history no signature covers.
    if let Some(gap_max) = policy.checkpoint_gap_max {
        let mut covered = 0;
        for seq in checkpoints
            .iter()
            .map(|c| c.seq)
            .chain(std::iter::once(last_seq))
        {
            if seq - covered > gap_max {
                problems.push(format!(
                    "entries {}..={seq} are not covered by a signed checkpoint (at most {gap_max} may be)",
                    covered + 1
                ));
            }
            covered = covered.max(seq);
        }
    }
    let head = sqlx::query("SELECT seq, hash FROM journal_head WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    let head_seq: i64 = head.try_get("seq")?;
    let head_hash = hash32(head.try_get("hash")?, "head hash")?;
    if head_seq != last_seq || (last_seq > 0 && head_hash != last_hash) {
        problems.push(format!(
            "journal head says {head_seq}, the chain ends at {last_seq}"
        ));
    }
    // Transfers: the table holds exactly the replayed rows, pending states agree.
    let mut stored_transfers = 0_u64;
    {
        let mut stream = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM transfers",
            rows::TRANSFER_COLUMNS
        )))
        .fetch(&mut *conn);
        while let Some(r) = stream.try_next().await? {
            let t = rows::transfer(&r)?;
            stored_transfers += 1;
            if t.kind == tally_ledger::TransferKind::Pending {
                let replayed = auditor.pending_state(&t.id);
                if replayed != Some(t.state) {
                    problems.push(format!(
                        "pending transfer {} is {} in the table but {:?} in the journal",
                        t.id, t.state, replayed
                    ));
                }
            } else if t.state == TransferState::Pending {
                problems.push(format!("non-pending transfer {} is marked pending", t.id));
            }
        }
    }
    let mut accounts = Vec::new();
    {
        let mut stream = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM accounts",
            rows::ACCOUNT_COLUMNS
        )))
        .fetch(&mut *conn);
        while let Some(r) = stream.try_next().await? {
            accounts.push(rows::account(&r)?);
        }
    }
    let mut report = auditor.finish(accounts);
    if stored_transfers != report.transfers {
        problems.push(format!(
            "{stored_transfers} transfer rows stored, {} in the journal",
            report.transfers
        ));
    }
    report.problems.extend(problems);
    out.ledger = report;
    Ok(out)
}
