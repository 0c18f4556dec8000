//! The audit: replay a journal from the first entry, check the hash chain and the checkpoints,
//! recompute every account from the events, and compare with what the store holds.
//!
//! [`Auditor`] is fed entries in order and keeps only the recomputed accounts in memory, so a
//! journal of any length is checked in one pass. It never trusts the stored counters: they are
//! the thing being checked. Signature checks are the caller's (it holds the keys); the auditor
//! only records which checkpoint hashes matched the chain.

use crate::journal::{JournalEntry, entry_hash};
use crate::{Account, Event, TransferKind, TransferState, effect};
use std::collections::{BTreeMap, HashMap};
use tally_kernel::{Currency, Id};

/// Per-currency totals after replay; debits equal credits when the ledger balances.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurrencyTotals {
    /// Sum of `debits_posted` over all accounts.
    pub debits_posted: i128,
    /// Sum of `credits_posted` over all accounts.
    pub credits_posted: i128,
    /// Sum of `debits_pending` over all accounts.
    pub debits_pending: i128,
    /// Sum of `credits_pending` over all accounts.
    pub credits_pending: i128,
}

/// What an audit found.
#[derive(Debug, Clone, Default)]
pub struct AuditReport {
    /// Journal entries read.
    pub entries: u64,
    /// Accounts recomputed.
    pub accounts: u64,
    /// Transfer rows replayed.
    pub transfers: u64,
    /// Entries that record state changes moving no money (API keys and the like).
    pub records: u64,
    /// Checkpoints whose hash matched the chain (signatures are counted by the caller).
    pub checkpoints_matched: u64,
    /// Totals per currency.
    pub totals: BTreeMap<String, CurrencyTotals>,
    /// Every discrepancy, in words; empty when everything balances.
    pub problems: Vec<String>,
}

impl AuditReport {
    /// True when nothing is wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Replays a journal incrementally.
#[derive(Debug)]
pub struct Auditor {
    expect_seq: i64,
    prev_hash: [u8; 32],
    accounts: HashMap<Id, Account>,
    pending: HashMap<Id, TransferState>,
    checkpoints: HashMap<i64, [u8; 32]>,
    report: AuditReport,
}

impl Auditor {
    /// An auditor that will compare the chain against these checkpoint `(seq, hash)` pairs.
    pub fn new(checkpoints: impl IntoIterator<Item = (i64, [u8; 32])>) -> Auditor {
        Auditor {
            expect_seq: 1,
            prev_hash: crate::journal::GENESIS,
            accounts: HashMap::new(),
            pending: HashMap::new(),
            checkpoints: checkpoints.into_iter().collect(),
            report: AuditReport::default(),
        }
    }

    /// Feeds the next entry.
    pub fn feed(&mut self, e: &JournalEntry) {
        let r = &mut self.report;
        r.entries += 1;
        if e.seq != self.expect_seq {
            r.problems.push(format!(
                "journal gap: expected seq {}, found {}",
                self.expect_seq, e.seq
            ));
        }
        if e.prev_hash != self.prev_hash {
            r.problems
                .push(format!("entry {}: previous-hash link broken", e.seq));
        }
        let computed = entry_hash(e.seq, e.at, &e.prev_hash, &e.body);
        if computed != e.hash {
            r.problems
                .push(format!("entry {}: hash does not match its content", e.seq));
        }
        if let Some(cp) = self.checkpoints.get(&e.seq) {
            if *cp == e.hash {
                r.checkpoints_matched += 1;
            } else {
                r.problems
                    .push(format!("checkpoint at {} does not match the chain", e.seq));
            }
        }
        self.expect_seq = e.seq + 1;
        self.prev_hash = e.hash;
        // Every entry is an event; its stored kind must agree with what the body says.
        match crate::body::decode(&e.body) {
            Ok(event) if event.kind() == e.kind => self.replay(e.seq, event),
            Ok(event) => r.problems.push(format!(
                "entry {}: kind `{}` but the event is `{}`",
                e.seq,
                e.kind,
                event.kind()
            )),
            Err(err) => r
                .problems
                .push(format!("entry {}: unreadable event: {err}", e.seq)),
        }
    }

    fn replay(&mut self, seq: i64, event: Event) {
        let r = &mut self.report;
        match event {
            Event::Recorded { .. } => r.records += 1,
            Event::LimitSet {
                account,
                previous_minor,
                limit_minor,
            } => match self.accounts.get_mut(&account) {
                Some(a) if a.limit_minor == previous_minor => a.limit_minor = limit_minor,
                Some(a) => r.problems.push(format!(
                    "entry {seq}: limit of {account} set from {previous_minor} but it was {}",
                    a.limit_minor
                )),
                None => r.problems.push(format!(
                    "entry {seq}: limit set on unknown account {account}"
                )),
            },
            Event::AccountOpened { account } => {
                let zero = account.debits_pending == 0
                    && account.debits_posted == 0
                    && account.credits_pending == 0
                    && account.credits_posted == 0;
                if !zero {
                    r.problems.push(format!(
                        "entry {seq}: account {} opened with counters",
                        account.id
                    ));
                }
                if self.accounts.insert(account.id, account).is_some() {
                    r.problems
                        .push(format!("entry {seq}: account opened twice"));
                }
            }
            Event::Transfers { transfers } => {
                for t in transfers {
                    r.transfers += 1;
                    if t.amount_minor <= 0 {
                        r.problems.push(format!(
                            "entry {seq}: transfer {} has amount {}",
                            t.id, t.amount_minor
                        ));
                    }
                    match t.kind {
                        TransferKind::Pending => {
                            self.pending.insert(t.id, TransferState::Pending);
                        }
                        TransferKind::PostPending
                        | TransferKind::VoidPending
                        | TransferKind::ExpirePending => {
                            let Some(pid) = t.pending_id else {
                                r.problems
                                    .push(format!("entry {seq}: resolution without pending id"));
                                continue;
                            };
                            match self.pending.get_mut(&pid) {
                                Some(s) if *s == TransferState::Pending => *s = t.state,
                                Some(s) => r.problems.push(format!(
                                    "entry {seq}: pending {pid} resolved twice (was {s})"
                                )),
                                None => r
                                    .problems
                                    .push(format!("entry {seq}: resolves unknown pending {pid}")),
                            }
                        }
                        TransferKind::Single => {}
                    }
                    if let Err(err) = effect(&mut self.accounts, &t) {
                        r.problems.push(format!(
                            "entry {seq}: transfer {} does not replay: {err}",
                            t.id
                        ));
                    }
                }
            }
        }
    }

    /// The last hash of the chain and its seq.
    pub fn head(&self) -> (i64, [u8; 32]) {
        (self.expect_seq - 1, self.prev_hash)
    }

    /// The state a pending transfer has after replay.
    pub fn pending_state(&self, id: &Id) -> Option<TransferState> {
        self.pending.get(id).copied()
    }

    /// Compares the replayed accounts with the stored ones (all of them, in any order) and
    /// checks per-currency conservation. Returns the report.
    pub fn finish(mut self, stored: impl IntoIterator<Item = Account>) -> AuditReport {
        let mut seen = 0_u64;
        for s in stored {
            seen += 1;
            match self.accounts.get(&s.id) {
                None => self.report.problems.push(format!("account {} is not in the journal", s.id)),
                Some(replayed) if *replayed != s => self.report.problems.push(format!(
                    "account {} differs from its replay: stored dr {}/{} cr {}/{} limit {}, replayed dr {}/{} cr {}/{} limit {}",
                    s.id,
                    s.debits_posted,
                    s.debits_pending,
                    s.credits_posted,
                    s.credits_pending,
                    s.limit_minor,
                    replayed.debits_posted,
                    replayed.debits_pending,
                    replayed.credits_posted,
                    replayed.credits_pending,
                    replayed.limit_minor
                )),
                Some(_) => {}
            }
        }
        if seen != self.accounts.len() as u64 {
            self.report.problems.push(format!(
                "{} accounts stored, {} in the journal",
                seen,
                self.accounts.len()
            ));
        }
        let mut totals: BTreeMap<String, CurrencyTotals> = BTreeMap::new();
        for a in self.accounts.values() {
            if !a.within_limits() {
                self.report
                    .problems
                    .push(format!("account {} is beyond its limit", a.id));
            }
            let t = totals.entry(code(a.currency)).or_default();
            t.debits_posted += i128::from(a.debits_posted);
            t.credits_posted += i128::from(a.credits_posted);
            t.debits_pending += i128::from(a.debits_pending);
            t.credits_pending += i128::from(a.credits_pending);
        }
        for (c, t) in &totals {
            if t.debits_posted != t.credits_posted || t.debits_pending != t.credits_pending {
                self.report.problems.push(format!(
                    "{c} does not balance: posted dr {} cr {}, pending dr {} cr {}",
                    t.debits_posted, t.credits_posted, t.debits_pending, t.credits_pending
                ));
            }
        }
        let missing: Vec<_> = self
            .checkpoints
            .keys()
            .filter(|s| **s >= self.expect_seq)
            .collect();
        if !missing.is_empty() {
            self.report.problems.push(format!(
                "{} checkpoints point past the journal's end",
                missing.len()
            ));
        }
        self.report.accounts = self.accounts.len() as u64;
        self.report.totals = totals;
        self.report
    }
}

fn code(c: Currency) -> String {
    c.code().to_string()
}
