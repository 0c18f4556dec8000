//! Batches of transfer events, TigerBeetle's way: one result per event, linked chains that
//! succeed or fail whole, client-chosen ids that make a retried batch harmless, balancing and
//! closing transfers, and imported history.
//!
//! [`Book::apply_batch`] decides a batch in memory. Each event is checked in TigerBeetle's
//! order of precedence (the order of [`EventStatus`]'s variants, read from
//! `src/state_machine.zig` at commit 52ad553f) and either creates one [`Transfer`] or is refused
//! with a status; a refused event changes nothing. Events flagged `linked` form a chain with the
//! event after them: the first refusal inside a chain undoes every event of the chain already
//! applied (an undo log of the accounts, holds and ids they touched, kept only while a chain is
//! open), the refused event keeps its own status and the chain's others answer
//! [`EventStatus::LinkedEventFailed`]. A batch whose last event is `linked` leaves that chain
//! open: it answers [`EventStatus::LinkedEventChainOpen`] and the chain fails.
//!
//! Where we differ from TigerBeetle, on purpose:
//! * an amount is never zero (every transfer row moves something; the audit checks it): a zero
//!   amount is [`EventStatus::AmountMustNotBeZero`] and a balancing transfer with nothing to
//!   move answers `exceeds_credits`/`exceeds_debits`, as TigerBeetle did before 0.16;
//! * a post's amount is optional (absent = the whole hold) instead of a maximum sentinel;
//! * every event of a batch gets the batch's time, not a time of its own;
//! * the ids of events refused for a transient reason are not remembered
//!   (`id_already_failed`): a retry is decided afresh;
//! * a currency takes the place of TigerBeetle's ledger number, and `code` may be 0.

use crate::{
    Account, LedgerError, MEMO_LEN_MAX, TIMEOUT_S_MAX, Transfer, TransferFlags, TransferKind,
    TransferState, effect,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tally_kernel::{Currency, Id, Timestamp};

/// Most events in one batch (TigerBeetle's limit for transfers in one request).
pub const BATCH_EVENTS_MAX: usize = 8189;

/// What an event asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A hold, resolved later by a post, a void or its timeout.
    Pending,
    /// Posts all or part of a hold.
    Post,
    /// Moves the amount at once.
    #[default]
    Single,
    /// Releases a hold.
    Void,
}

impl EventKind {
    /// The kind of the row the event creates.
    pub fn transfer_kind(self) -> TransferKind {
        match self {
            EventKind::Pending => TransferKind::Pending,
            EventKind::Post => TransferKind::PostPending,
            EventKind::Single => TransferKind::Single,
            EventKind::Void => TransferKind::VoidPending,
        }
    }
}

/// One event of a batch: a transfer to create, named by the client's own id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferEvent {
    /// The client's id for the transfer (not nil): a retry with the same id answers `exists`.
    pub id: Id,
    /// What to do.
    #[serde(default)]
    pub kind: EventKind,
    /// Account debited (for a post or void: optional, must match the hold's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debit_account: Option<Id>,
    /// Account credited (for a post or void: optional, must match the hold's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_account: Option<Id>,
    /// Minor units. For a balancing transfer the most to move (absent: as much as possible);
    /// for a post the part to post (absent: all of it); for a void absent or the hold's amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_minor: Option<i64>,
    /// Both accounts' currency (for a post or void: optional, must match the hold's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<Currency>,
    /// For a post or void: the hold it resolves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_id: Option<Id>,
    /// For a hold: seconds until it expires (absent: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<i64>,
    /// Linked, balancing, closing, imported.
    #[serde(default, skip_serializing_if = "TransferFlags::is_empty")]
    pub flags: TransferFlags,
    /// The client's own reference, 128 bits as a decimal string (absent or 0: none; a post or
    /// void inherits the hold's).
    #[serde(
        default,
        skip_serializing_if = "crate::is_zero",
        with = "crate::u128_text"
    )]
    pub user_data_128: u128,
    /// The client's own reference, 64 bits.
    #[serde(default, skip_serializing_if = "crate::is_zero")]
    pub user_data_64: u64,
    /// The client's own reference, 32 bits.
    #[serde(default, skip_serializing_if = "crate::is_zero")]
    pub user_data_32: u32,
    /// The client's reason code (0: none; a post or void inherits the hold's).
    #[serde(default, skip_serializing_if = "crate::is_zero")]
    pub code: u16,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub memo: String,
    /// For an imported event only: when it happened (before the batch, after everything
    /// already in the ledger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
}

impl TransferEvent {
    /// A single transfer with everything else empty (a starting point for tests and tools).
    pub fn single(id: Id, debit: Id, credit: Id, amount_minor: i64, currency: Currency) -> Self {
        TransferEvent {
            id,
            kind: EventKind::Single,
            debit_account: Some(debit),
            credit_account: Some(credit),
            amount_minor: Some(amount_minor),
            currency: Some(currency),
            pending_id: None,
            timeout_s: None,
            flags: TransferFlags::default(),
            user_data_128: 0,
            user_data_64: 0,
            user_data_32: 0,
            code: 0,
            memo: String::new(),
            timestamp: None,
        }
    }
}

/// Declares [`EventStatus`] and its list [`EventStatus::ALL`] from one list of names, so the
/// order of precedence is written once.
macro_rules! event_statuses {
    ($($name:ident),* $(,)?) => {
        /// What became of one event. Variants are in TigerBeetle's order of precedence: when
        /// several apply, the earliest is answered.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        #[allow(missing_docs)] // each name says it; docs/ledger-batches.md explains
        pub enum EventStatus {
            $($name),*
        }

        impl EventStatus {
            /// Every status, in order of precedence.
            pub const ALL: &'static [EventStatus] = &[$(EventStatus::$name),*];
        }
    };
}

event_statuses! {
    Created,
    LinkedEventFailed,
    LinkedEventChainOpen,
    ImportedEventExpected,
    ImportedEventNotExpected,
    TimestampMustBeZero,
    ImportedEventTimestampOutOfRange,
    ImportedEventTimestampMustNotAdvance,
    IdMustNotBeZero,
    IdMustNotBeIntMax,
    ExistsWithDifferentFlags,
    ExistsWithDifferentPendingId,
    ExistsWithDifferentTimeout,
    ExistsWithDifferentDebitAccount,
    ExistsWithDifferentCreditAccount,
    ExistsWithDifferentAmount,
    ExistsWithDifferentUserData128,
    ExistsWithDifferentUserData64,
    ExistsWithDifferentUserData32,
    ExistsWithDifferentCurrency,
    ExistsWithDifferentCode,
    Exists,
    FlagsAreMutuallyExclusive,
    DebitAccountMustBeGiven,
    CreditAccountMustBeGiven,
    AccountsMustBeDifferent,
    PendingIdMustBeEmpty,
    PendingIdMustBeGiven,
    PendingIdMustBeDifferent,
    TimeoutReservedForPendingTransfer,
    ClosingTransferMustBePending,
    AmountMustNotBeZero,
    AmountMustNotBeNegative,
    TimeoutOutOfRange,
    MemoInvalid,
    CurrencyMustBeGiven,
    DebitAccountNotFound,
    CreditAccountNotFound,
    AccountsMustHaveTheSameCurrency,
    TransferMustHaveTheSameCurrencyAsAccounts,
    PendingTransferNotFound,
    PendingTransferNotPending,
    PendingTransferHasDifferentDebitAccount,
    PendingTransferHasDifferentCreditAccount,
    PendingTransferHasDifferentCurrency,
    PendingTransferHasDifferentCode,
    ExceedsPendingTransferAmount,
    PendingTransferHasDifferentAmount,
    PendingTransferAlreadyPosted,
    PendingTransferAlreadyVoided,
    PendingTransferExpired,
    ImportedEventTimestampMustNotRegress,
    ImportedEventTimestampMustPostdateDebitAccount,
    ImportedEventTimestampMustPostdateCreditAccount,
    ImportedEventTimeoutMustBeZero,
    DebitAccountAlreadyClosed,
    CreditAccountAlreadyClosed,
    OverflowsDebitsPending,
    OverflowsCreditsPending,
    OverflowsDebitsPosted,
    OverflowsCreditsPosted,
    OverflowsDebits,
    OverflowsCredits,
    ExceedsCredits,
    ExceedsDebits,
}

/// The answer to one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventResult {
    /// What became of it.
    pub status: EventStatus,
    /// The transfer as it stands in the ledger: the one created (`created`) or the one found
    /// under the event's id (`exists`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<Transfer>,
}

impl EventResult {
    fn refused(status: EventStatus) -> EventResult {
        EventResult {
            status,
            transfer: None,
        }
    }
}

/// What an open chain has changed, to put back if the chain fails: the first value seen of
/// every account, hold and id it touched (`None` = was absent).
#[derive(Default)]
struct Undo {
    accounts: HashMap<Id, Option<Account>>,
    pending: HashMap<Id, Option<Transfer>>,
    transfers: HashMap<Id, Option<Transfer>>,
    latest: Option<Timestamp>,
    /// How many history rows the book held before the chain's first change.
    balances: Option<usize>,
}

impl Undo {
    fn save(&mut self, book: &Book, t: &Transfer, latest: Timestamp) {
        for id in [t.debit_account, t.credit_account] {
            self.accounts
                .entry(id)
                .or_insert_with(|| book.accounts.get(&id).cloned());
        }
        for id in [Some(t.id), t.pending_id].into_iter().flatten() {
            self.pending
                .entry(id)
                .or_insert_with(|| book.pending.get(&id).cloned());
        }
        self.transfers
            .entry(t.id)
            .or_insert_with(|| book.transfers.get(&t.id).cloned());
        self.latest.get_or_insert(latest);
        self.balances.get_or_insert(book.balances.len());
    }

    fn restore(self, book: &mut Book, latest: &mut Timestamp) {
        fn put<T>(map: &mut HashMap<Id, T>, saved: HashMap<Id, Option<T>>) {
            for (id, before) in saved {
                match before {
                    Some(v) => map.insert(id, v),
                    None => map.remove(&id),
                };
            }
        }
        put(&mut book.accounts, self.accounts);
        put(&mut book.pending, self.pending);
        put(&mut book.transfers, self.transfers);
        if let Some(t) = self.latest {
            *latest = t;
        }
        if let Some(n) = self.balances {
            book.balances.truncate(n);
        }
    }
}

use crate::Book;

impl Book {
    /// Decides a batch at `now`: one result per event, in order. The book keeps every created
    /// transfer's effect; refused events and failed chains leave nothing. `latest` is the
    /// latest transfer time already in the ledger (imported events must come after it).
    ///
    /// The book must hold the accounts the events name, the holds they resolve and every
    /// stored transfer whose id an event reuses (in [`Book::transfers`]); what is missing is
    /// taken as absent.
    pub fn apply_batch(
        &mut self,
        events: &[TransferEvent],
        now: Timestamp,
        latest: Timestamp,
    ) -> Vec<EventResult> {
        let mut latest = latest;
        let imported = events.first().is_some_and(|e| e.flags.imported);
        let mut results: Vec<EventResult> = Vec::with_capacity(events.len());
        // The open chain: where it started, whether it broke, what to put back.
        let mut chain: Option<(usize, bool, Undo)> = None;
        for (i, event) in events.iter().enumerate() {
            if event.flags.linked && chain.is_none() {
                chain = Some((i, false, Undo::default()));
            }
            let last = i + 1 == events.len();
            let result = if event.flags.linked && last {
                EventResult::refused(EventStatus::LinkedEventChainOpen)
            } else if chain.as_ref().is_some_and(|c| c.1) {
                EventResult::refused(EventStatus::LinkedEventFailed)
            } else {
                let undo = chain.as_mut().map(|c| &mut c.2);
                match self.event(event, now, imported, &mut latest, undo) {
                    Ok(result) => result,
                    Err(status) => EventResult::refused(status),
                }
            };
            let failed = result.status != EventStatus::Created;
            results.push(result);
            if let Some((start, broken, undo)) = &mut chain {
                if failed && !*broken {
                    *broken = true;
                    std::mem::take(undo).restore(self, &mut latest);
                    for earlier in &mut results[*start..i] {
                        *earlier = EventResult::refused(EventStatus::LinkedEventFailed);
                    }
                }
                if !event.flags.linked || last {
                    chain = None;
                }
            }
        }
        results
    }

    /// One event: its transfer created (the book changed) or the status that refused it
    /// (nothing changed). `Ok` also carries `exists` answers, which change nothing.
    fn event(
        &mut self,
        e: &TransferEvent,
        now: Timestamp,
        imported: bool,
        latest: &mut Timestamp,
        undo: Option<&mut Undo>,
    ) -> Result<EventResult, EventStatus> {
        use EventStatus as S;
        if e.flags.imported != imported {
            return Err(if e.flags.imported {
                S::ImportedEventNotExpected
            } else {
                S::ImportedEventExpected
            });
        }
        let created_at = match (imported, e.timestamp) {
            (false, Some(_)) => return Err(S::TimestampMustBeZero),
            (false, None) => now,
            (true, None) => return Err(S::ImportedEventTimestampOutOfRange),
            (true, Some(t)) if t.as_micros() < 1 => {
                return Err(S::ImportedEventTimestampOutOfRange);
            }
            (true, Some(t)) if t >= now => return Err(S::ImportedEventTimestampMustNotAdvance),
            (true, Some(t)) => t,
        };
        if e.id.0.is_nil() {
            return Err(S::IdMustNotBeZero);
        }
        if e.id.0.is_max() {
            return Err(S::IdMustNotBeIntMax);
        }
        if let Some(existing) = self.transfers.get(&e.id) {
            let status = self.compare(e, existing);
            return Ok(EventResult {
                status,
                transfer: (status == S::Exists).then(|| existing.clone()),
            });
        }
        let row = match e.kind {
            EventKind::Post | EventKind::Void => self.resolution(e, now, created_at, *latest)?,
            EventKind::Single | EventKind::Pending => self.movement(e, now, created_at, *latest)?,
        };
        if let Some(undo) = undo {
            undo.save(self, &row, *latest);
        }
        // Every check passed, so applying cannot fail; if it did (a bug), the event is refused
        // and the book is unchanged (`effect` writes nothing on error).
        let applied = effect(&mut self.accounts, &row);
        debug_assert!(applied.is_ok(), "checked event did not apply: {applied:?}");
        if applied.is_err() {
            return Err(S::OverflowsDebits);
        }
        // Pair assertion, as `Book::commit` makes for single commands.
        for id in [row.debit_account, row.credit_account] {
            assert!(
                self.accounts.get(&id).is_none_or(Account::within_limits),
                "ledger rule let account {id} pass its limit"
            );
        }
        let history = crate::history_of(&self.accounts, &row);
        self.balances.extend(history);
        if let Some(pending_id) = row.pending_id
            && let Some(p) = self.pending.get_mut(&pending_id)
        {
            p.state = row.state;
        }
        if row.kind == TransferKind::Pending {
            self.pending.insert(row.id, row.clone());
        }
        self.transfers.insert(row.id, row.clone());
        if imported {
            *latest = row.created_at;
        }
        Ok(EventResult {
            status: S::Created,
            transfer: Some(row),
        })
    }

    /// A single transfer or a hold, checked; the row to create.
    fn movement(
        &self,
        e: &TransferEvent,
        now: Timestamp,
        created_at: Timestamp,
        latest: Timestamp,
    ) -> Result<Transfer, EventStatus> {
        use EventStatus as S;
        let f = e.flags;
        let pending = e.kind == EventKind::Pending;
        let debit_id = e.debit_account.ok_or(S::DebitAccountMustBeGiven)?;
        let credit_id = e.credit_account.ok_or(S::CreditAccountMustBeGiven)?;
        if debit_id == credit_id {
            return Err(S::AccountsMustBeDifferent);
        }
        if e.pending_id.is_some() {
            return Err(S::PendingIdMustBeEmpty);
        }
        if !pending {
            if e.timeout_s.is_some() {
                return Err(S::TimeoutReservedForPendingTransfer);
            }
            if f.closing_debit || f.closing_credit {
                return Err(S::ClosingTransferMustBePending);
            }
        }
        let balancing = f.balancing_debit || f.balancing_credit;
        let asked = match e.amount_minor {
            None if balancing => i64::MAX,
            None | Some(0) => return Err(S::AmountMustNotBeZero),
            Some(a) if a < 0 => return Err(S::AmountMustNotBeNegative),
            Some(a) => a,
        };
        if let Some(t) = e.timeout_s
            && !(1..=TIMEOUT_S_MAX).contains(&t)
        {
            return Err(S::TimeoutOutOfRange);
        }
        memo(&e.memo)?;
        let currency = e.currency.ok_or(S::CurrencyMustBeGiven)?;
        let debit = self
            .accounts
            .get(&debit_id)
            .ok_or(S::DebitAccountNotFound)?;
        let credit = self
            .accounts
            .get(&credit_id)
            .ok_or(S::CreditAccountNotFound)?;
        if debit.currency != credit.currency {
            return Err(S::AccountsMustHaveTheSameCurrency);
        }
        if currency != debit.currency {
            return Err(S::TransferMustHaveTheSameCurrencyAsAccounts);
        }
        if f.imported {
            if created_at <= latest {
                return Err(S::ImportedEventTimestampMustNotRegress);
            }
            if created_at <= debit.created_at {
                return Err(S::ImportedEventTimestampMustPostdateDebitAccount);
            }
            if created_at <= credit.created_at {
                return Err(S::ImportedEventTimestampMustPostdateCreditAccount);
            }
            if e.timeout_s.is_some() {
                return Err(S::ImportedEventTimeoutMustBeZero);
            }
        }
        if debit.flags.closed {
            return Err(S::DebitAccountAlreadyClosed);
        }
        if credit.flags.closed {
            return Err(S::CreditAccountAlreadyClosed);
        }
        let mut amount = asked;
        let debit_holds = i128::from(debit.credits_posted)
            - i128::from(debit.debits_posted)
            - i128::from(debit.debits_pending);
        if f.balancing_debit {
            amount = amount.min(i64::try_from(debit_holds.max(0)).unwrap_or(i64::MAX));
        }
        if f.balancing_credit {
            let room = i128::from(credit.debits_posted)
                - i128::from(credit.credits_posted)
                - i128::from(credit.credits_pending);
            amount = amount.min(i64::try_from(room.max(0)).unwrap_or(i64::MAX));
        }
        overflows(debit, credit, amount, pending)?;
        if amount == 0 {
            // A balancing transfer with nothing to move (see the module's notes): the side
            // that had nothing answers.
            return Err(if f.balancing_debit && debit_holds <= 0 {
                S::ExceedsCredits
            } else {
                S::ExceedsDebits
            });
        }
        debit_room(debit, amount)?;
        credit_room(credit, amount)?;
        let (kind, state, expires_at) = if pending {
            let expires = e.timeout_s.map(|t| now.plus_seconds(t));
            (TransferKind::Pending, TransferState::Pending, expires)
        } else {
            (TransferKind::Single, TransferState::Posted, None)
        };
        Ok(Transfer {
            id: e.id,
            kind,
            state,
            debit_account: debit_id,
            credit_account: credit_id,
            amount_minor: amount,
            currency,
            pending_id: None,
            pending_amount_minor: None,
            expires_at,
            link_id: None,
            rate: None,
            memo: e.memo.clone(),
            created_at,
            flags: f,
            user_data_128: e.user_data_128,
            user_data_64: e.user_data_64,
            user_data_32: e.user_data_32,
            code: e.code,
        })
    }

    /// A post or void of a hold, checked; the row to create.
    fn resolution(
        &self,
        e: &TransferEvent,
        now: Timestamp,
        created_at: Timestamp,
        latest: Timestamp,
    ) -> Result<Transfer, EventStatus> {
        use EventStatus as S;
        let f = e.flags;
        if f.balancing_debit || f.balancing_credit || f.closing_debit || f.closing_credit {
            return Err(S::FlagsAreMutuallyExclusive);
        }
        let pending_id = e.pending_id.ok_or(S::PendingIdMustBeGiven)?;
        if pending_id == e.id {
            return Err(S::PendingIdMustBeDifferent);
        }
        if e.timeout_s.is_some() {
            return Err(S::TimeoutReservedForPendingTransfer);
        }
        if let Some(a) = e.amount_minor {
            if a == 0 {
                return Err(S::AmountMustNotBeZero);
            }
            if a < 0 {
                return Err(S::AmountMustNotBeNegative);
            }
        }
        memo(&e.memo)?;
        let p = self
            .pending
            .get(&pending_id)
            .ok_or(S::PendingTransferNotFound)?;
        if p.kind != TransferKind::Pending {
            return Err(S::PendingTransferNotPending);
        }
        if e.debit_account.is_some_and(|d| d != p.debit_account) {
            return Err(S::PendingTransferHasDifferentDebitAccount);
        }
        if e.credit_account.is_some_and(|c| c != p.credit_account) {
            return Err(S::PendingTransferHasDifferentCreditAccount);
        }
        if e.currency.is_some_and(|c| c != p.currency) {
            return Err(S::PendingTransferHasDifferentCurrency);
        }
        if e.code != 0 && e.code != p.code {
            return Err(S::PendingTransferHasDifferentCode);
        }
        let amount = e.amount_minor.unwrap_or(p.amount_minor);
        if amount > p.amount_minor {
            return Err(S::ExceedsPendingTransferAmount);
        }
        if e.kind == EventKind::Void && amount < p.amount_minor {
            return Err(S::PendingTransferHasDifferentAmount);
        }
        match p.state {
            TransferState::Pending => {}
            TransferState::Posted => return Err(S::PendingTransferAlreadyPosted),
            TransferState::Voided => return Err(S::PendingTransferAlreadyVoided),
            TransferState::Expired => return Err(S::PendingTransferExpired),
        }
        if p.expires_at.is_some_and(|at| at <= now) {
            return Err(S::PendingTransferExpired);
        }
        if f.imported && created_at <= latest {
            return Err(S::ImportedEventTimestampMustNotRegress);
        }
        let post = e.kind == EventKind::Post;
        if post {
            // A void is the one movement a closed account allows.
            let closed = |id: Id| self.accounts.get(&id).is_some_and(|a| a.flags.closed);
            if closed(p.debit_account) {
                return Err(S::DebitAccountAlreadyClosed);
            }
            if closed(p.credit_account) {
                return Err(S::CreditAccountAlreadyClosed);
            }
        }
        Ok(Transfer {
            id: e.id,
            kind: e.kind.transfer_kind(),
            state: if post {
                TransferState::Posted
            } else {
                TransferState::Voided
            },
            debit_account: p.debit_account,
            credit_account: p.credit_account,
            amount_minor: amount,
            currency: p.currency,
            pending_id: Some(p.id),
            pending_amount_minor: Some(p.amount_minor),
            expires_at: None,
            link_id: None,
            rate: None,
            memo: e.memo.clone(),
            created_at,
            // The hold's closing flags travel with its resolution, so a replay of the row
            // alone knows a void reopens the account.
            flags: TransferFlags {
                closing_debit: p.flags.closing_debit,
                closing_credit: p.flags.closing_credit,
                ..f
            },
            user_data_128: inherit(e.user_data_128, p.user_data_128),
            user_data_64: inherit(e.user_data_64, p.user_data_64),
            user_data_32: inherit(e.user_data_32, p.user_data_32),
            code: p.code,
        })
    }

    /// An event whose id is taken: `exists` when it asks for what is there, else the first
    /// field that differs (TigerBeetle's order).
    fn compare(&self, e: &TransferEvent, x: &Transfer) -> EventStatus {
        use EventStatus as S;
        let resolves = matches!(e.kind, EventKind::Post | EventKind::Void);
        // A resolution row carries its hold's closing flags; the event did not ask for them.
        let x_flags = if resolves {
            TransferFlags {
                closing_debit: false,
                closing_credit: false,
                ..x.flags
            }
        } else {
            x.flags
        };
        if e.kind.transfer_kind() != x.kind || e.flags != x_flags {
            return S::ExistsWithDifferentFlags;
        }
        if e.pending_id != x.pending_id {
            return S::ExistsWithDifferentPendingId;
        }
        if e.timeout_s.unwrap_or(0) != x.timeout_s() {
            return S::ExistsWithDifferentTimeout;
        }
        let p = x.pending_id.and_then(|id| self.pending.get(&id));
        if resolves {
            if e.debit_account.is_some_and(|d| d != x.debit_account) {
                return S::ExistsWithDifferentDebitAccount;
            }
            if e.credit_account.is_some_and(|c| c != x.credit_account) {
                return S::ExistsWithDifferentCreditAccount;
            }
            let asked = e.amount_minor.or(x.pending_amount_minor);
            if asked != Some(x.amount_minor) {
                return S::ExistsWithDifferentAmount;
            }
            // Zero asks for the hold's value, which the row inherited.
            let same = |mine: u128, stored: u128, held: Option<u128>| {
                if mine == 0 {
                    held.is_none_or(|h| h == stored)
                } else {
                    mine == stored
                }
            };
            if !same(e.user_data_128, x.user_data_128, p.map(|p| p.user_data_128)) {
                return S::ExistsWithDifferentUserData128;
            }
            if !same(
                e.user_data_64.into(),
                x.user_data_64.into(),
                p.map(|p| p.user_data_64.into()),
            ) {
                return S::ExistsWithDifferentUserData64;
            }
            if !same(
                e.user_data_32.into(),
                x.user_data_32.into(),
                p.map(|p| p.user_data_32.into()),
            ) {
                return S::ExistsWithDifferentUserData32;
            }
            if e.currency.is_some_and(|c| c != x.currency) {
                return S::ExistsWithDifferentCurrency;
            }
            if e.code != 0 && e.code != x.code {
                return S::ExistsWithDifferentCode;
            }
            return S::Exists;
        }
        if e.debit_account != Some(x.debit_account) {
            return S::ExistsWithDifferentDebitAccount;
        }
        if e.credit_account != Some(x.credit_account) {
            return S::ExistsWithDifferentCreditAccount;
        }
        let amount_differs = if e.flags.balancing_debit || e.flags.balancing_credit {
            // The stored amount was clamped: any request at least as large asked for it.
            e.amount_minor.unwrap_or(i64::MAX) < x.amount_minor
        } else {
            e.amount_minor != Some(x.amount_minor)
        };
        if amount_differs {
            return S::ExistsWithDifferentAmount;
        }
        if e.user_data_128 != x.user_data_128 {
            return S::ExistsWithDifferentUserData128;
        }
        if e.user_data_64 != x.user_data_64 {
            return S::ExistsWithDifferentUserData64;
        }
        if e.user_data_32 != x.user_data_32 {
            return S::ExistsWithDifferentUserData32;
        }
        if e.currency != Some(x.currency) {
            return S::ExistsWithDifferentCurrency;
        }
        if e.code != x.code {
            return S::ExistsWithDifferentCode;
        }
        S::Exists
    }
}

/// A post or void's own user data, or its hold's where it gave none.
fn inherit<T: Default + PartialEq>(mine: T, held: T) -> T {
    if mine == T::default() { held } else { mine }
}

fn memo(memo: &str) -> Result<(), EventStatus> {
    if memo.len() > MEMO_LEN_MAX || !tally_kernel::text::plain(memo, false) {
        return Err(EventStatus::MemoInvalid);
    }
    Ok(())
}

/// TigerBeetle's overflow checks, in its order, on the counters an amount would raise.
fn overflows(
    debit: &Account,
    credit: &Account,
    amount: i64,
    pending: bool,
) -> Result<(), EventStatus> {
    use EventStatus as S;
    let over = |sum: i128| sum > i128::from(i64::MAX);
    let a = i128::from(amount);
    if pending {
        if over(i128::from(debit.debits_pending) + a) {
            return Err(S::OverflowsDebitsPending);
        }
        if over(i128::from(credit.credits_pending) + a) {
            return Err(S::OverflowsCreditsPending);
        }
    }
    if over(i128::from(debit.debits_posted) + a) {
        return Err(S::OverflowsDebitsPosted);
    }
    if over(i128::from(credit.credits_posted) + a) {
        return Err(S::OverflowsCreditsPosted);
    }
    if over(i128::from(debit.debits_pending) + i128::from(debit.debits_posted) + a) {
        return Err(S::OverflowsDebits);
    }
    if over(i128::from(credit.credits_pending) + i128::from(credit.credits_posted) + a) {
        return Err(S::OverflowsCredits);
    }
    Ok(())
}

fn debit_room(account: &Account, amount: i64) -> Result<(), EventStatus> {
    account
        .debit_room(amount)
        .map_err(|_: LedgerError| EventStatus::ExceedsCredits)
}

fn credit_room(account: &Account, amount: i64) -> Result<(), EventStatus> {
    account
        .credit_room(amount)
        .map_err(|_: LedgerError| EventStatus::ExceedsDebits)
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
