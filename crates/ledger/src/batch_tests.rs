use super::*;
use crate::audit::Auditor;
use crate::journal::{GENESIS, next_entry};
use crate::{AccountFlags, AccountKind, Command, Event};
use EventStatus as S;
use proptest::prelude::*;

fn eur() -> Currency {
    Currency::from_code("EUR").expect("EUR")
}

fn id(n: u128) -> Id {
    Id(uuid::Uuid::from_u128(n))
}

const T0: Timestamp = Timestamp(1_767_225_600_000_000); // 2026-01-01T00:00:00Z

/// A book with a world account (unbounded) and bounded customer accounts 1..=n, the first
/// funded with 1,000.
struct Fix {
    book: Book,
    now: Timestamp,
    next: u128,
    world: Id,
    /// What a journal would hold: accounts opened, then each batch's created transfers.
    journal: Vec<Event>,
}

impl Fix {
    fn new(customers: usize) -> Fix {
        let mut f = Fix {
            book: Book::default(),
            now: T0,
            next: 1_000,
            world: id(0),
            journal: Vec::new(),
        };
        f.world = f.open(false, None);
        for _ in 0..customers {
            f.open(true, None);
        }
        if customers > 0 {
            let (first, funding) = (f.customer(0), f.fresh());
            f.ok(&[TransferEvent::single(funding, f.world, first, 1_000, eur())]);
        }
        f
    }

    fn fresh(&mut self) -> Id {
        self.next += 1;
        id(self.next)
    }

    fn open(&mut self, bounded: bool, imported_at: Option<Timestamp>) -> Id {
        let next = self.fresh();
        let event = self
            .book
            .apply(
                &Command::OpenAccount {
                    owner: "o".into(),
                    currency: eur(),
                    kind: AccountKind::Customer,
                    flags: AccountFlags {
                        debits_must_not_exceed_credits: bounded,
                        ..Default::default()
                    },
                    limit_minor: 0,
                    imported_at,
                    references: Default::default(),
                },
                self.now,
                &mut || next,
            )
            .expect("open");
        self.journal.push(event);
        next
    }

    fn customer(&self, n: usize) -> Id {
        let mut ids: Vec<Id> = self
            .book
            .accounts
            .keys()
            .copied()
            .filter(|a| *a != self.world)
            .collect();
        ids.sort();
        ids[n]
    }

    /// Applies a batch (imports after `latest`) and journals what it created.
    fn batch(&mut self, events: &[TransferEvent], latest: Timestamp) -> Vec<EventResult> {
        let results = self.book.apply_batch(events, self.now, latest);
        let created: Vec<Transfer> = results
            .iter()
            .filter(|r| r.status == S::Created)
            .filter_map(|r| r.transfer.clone())
            .collect();
        if !created.is_empty() {
            self.journal.push(Event::Transfers { transfers: created });
        }
        results
    }

    fn run(&mut self, events: &[TransferEvent]) -> Vec<EventStatus> {
        let results = self.batch(events, Timestamp(0));
        results.iter().map(|r| r.status).collect()
    }

    fn ok(&mut self, events: &[TransferEvent]) {
        let statuses = self.run(events);
        assert!(statuses.iter().all(|s| *s == S::Created), "{statuses:?}");
    }

    fn balance(&self, account: Id) -> i64 {
        self.book.accounts[&account].balance_minor()
    }
}

fn linked(mut e: TransferEvent) -> TransferEvent {
    e.flags.linked = true;
    e
}

fn pending(mut e: TransferEvent, timeout_s: Option<i64>) -> TransferEvent {
    e.kind = EventKind::Pending;
    e.timeout_s = timeout_s;
    e
}

fn resolve(kind: EventKind, id: Id, pending_id: Id, amount: Option<i64>) -> TransferEvent {
    TransferEvent {
        kind,
        pending_id: Some(pending_id),
        amount_minor: amount,
        debit_account: None,
        credit_account: None,
        currency: None,
        ..TransferEvent::single(id, id, id, 1, eur())
    }
}

/// Golden vector: the wire names of the statuses, in order of precedence. A rename or a
/// reorder breaks clients and this test.
#[test]
fn status_names_and_precedence_are_fixed() {
    let names: Vec<String> = EventStatus::ALL
        .iter()
        .map(|s| {
            serde_json::to_value(s)
                .expect("name")
                .as_str()
                .expect("str")
                .to_string()
        })
        .collect();
    let expected = "created linked_event_failed linked_event_chain_open imported_event_expected \
        imported_event_not_expected timestamp_must_be_zero imported_event_timestamp_out_of_range \
        imported_event_timestamp_must_not_advance id_must_not_be_zero id_must_not_be_int_max \
        exists_with_different_flags exists_with_different_pending_id \
        exists_with_different_timeout exists_with_different_debit_account \
        exists_with_different_credit_account exists_with_different_amount \
        exists_with_different_user_data128 exists_with_different_user_data64 \
        exists_with_different_user_data32 exists_with_different_currency \
        exists_with_different_code exists flags_are_mutually_exclusive \
        debit_account_must_be_given credit_account_must_be_given accounts_must_be_different \
        pending_id_must_be_empty pending_id_must_be_given pending_id_must_be_different \
        timeout_reserved_for_pending_transfer closing_transfer_must_be_pending \
        amount_must_not_be_zero amount_must_not_be_negative timeout_out_of_range memo_invalid \
        currency_must_be_given debit_account_not_found credit_account_not_found \
        accounts_must_have_the_same_currency transfer_must_have_the_same_currency_as_accounts \
        pending_transfer_not_found pending_transfer_not_pending \
        pending_transfer_has_different_debit_account \
        pending_transfer_has_different_credit_account pending_transfer_has_different_currency \
        pending_transfer_has_different_code exceeds_pending_transfer_amount \
        pending_transfer_has_different_amount pending_transfer_already_posted \
        pending_transfer_already_voided pending_transfer_expired \
        imported_event_timestamp_must_not_regress \
        imported_event_timestamp_must_postdate_debit_account \
        imported_event_timestamp_must_postdate_credit_account \
        imported_event_timeout_must_be_zero debit_account_already_closed \
        credit_account_already_closed overflows_debits_pending overflows_credits_pending \
        overflows_debits_posted overflows_credits_posted overflows_debits overflows_credits \
        exceeds_credits exceeds_debits";
    let expected: Vec<&str> = expected.split_whitespace().collect();
    assert_eq!(names, expected);
    // The declaration order is the precedence order.
    for (i, s) in EventStatus::ALL.iter().enumerate() {
        assert_eq!(*s as usize, i, "{s:?} out of order");
    }
}

/// Golden vector: an event's JSON, with the 128-bit reference as a decimal string.
#[test]
fn an_event_reads_and_writes_its_fixed_json() {
    let json = r#"{"id":"00000000-0000-0000-0000-000000000007","kind":"pending","debit_account":"00000000-0000-0000-0000-000000000001","credit_account":"00000000-0000-0000-0000-000000000002","amount_minor":250,"currency":"EUR","timeout_s":60,"flags":{"linked":true,"closing_debit":true},"user_data_128":"340282366920938463463374607431768211455","user_data_64":18446744073709551615,"user_data_32":7,"code":12,"memo":"m"}"#;
    let e: TransferEvent = serde_json::from_str(json).expect("parse");
    assert_eq!(e.user_data_128, u128::MAX);
    assert_eq!(e.user_data_64, u64::MAX);
    assert!(e.flags.linked && e.flags.closing_debit && !e.flags.imported);
    assert_eq!(serde_json::to_string(&e).expect("json"), json);
    for bad in [
        r#"{"id":"00000000-0000-0000-0000-000000000007","surprise":1}"#,
        r#"{"id":"00000000-0000-0000-0000-000000000007","user_data_128":12}"#,
        r#"{"id":"00000000-0000-0000-0000-000000000007","user_data_128":"-1"}"#,
        r#"{"id":"00000000-0000-0000-0000-000000000007","user_data_128":"340282366920938463463374607431768211456"}"#,
        r#"{"id":"00000000-0000-0000-0000-000000000007","flags":{"sticky":true}}"#,
        r#"{"id":"00000000-0000-0000-0000-000000000007","kind":"expire"}"#,
    ] {
        assert!(serde_json::from_str::<TransferEvent>(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_retry_answers_exists_and_a_changed_retry_names_the_first_field_that_differs() {
    let mut f = Fix::new(2);
    let (a, b) = (f.customer(0), f.customer(1));
    let t = f.fresh();
    let event = TransferEvent::single(t, a, b, 100, eur());
    f.ok(std::slice::from_ref(&event));
    assert_eq!(f.run(std::slice::from_ref(&event)), [S::Exists]);
    assert_eq!(f.balance(b), 100, "a retry moves nothing");
    let mut changed = event.clone();
    changed.amount_minor = Some(101);
    changed.code = 9;
    // Amount comes before code in the order of precedence.
    assert_eq!(f.run(&[changed.clone()]), [S::ExistsWithDifferentAmount]);
    changed.kind = EventKind::Pending;
    assert_eq!(f.run(&[changed]), [S::ExistsWithDifferentFlags]);
    // The same id twice in one batch: the second is a retry of the first.
    let u = f.fresh();
    let twice = TransferEvent::single(u, a, b, 5, eur());
    let mut different = twice.clone();
    different.user_data_32 = 3;
    assert_eq!(
        f.run(&[twice.clone(), twice, different]),
        [S::Created, S::Exists, S::ExistsWithDifferentUserData32]
    );
    assert_eq!(f.balance(b), 105);
}

#[test]
fn a_chain_with_one_bad_event_fails_whole_and_leaves_no_trace() {
    let mut f = Fix::new(3);
    let (a, b, c) = (f.customer(0), f.customer(1), f.customer(2));
    let before = f.book.accounts.clone();
    let hold = f.fresh();
    let events = [
        linked(TransferEvent::single(f.fresh(), a, b, 300, eur())),
        linked(pending(
            TransferEvent::single(hold, a, c, 200, eur()),
            Some(60),
        )),
        linked(resolve(EventKind::Post, f.fresh(), hold, Some(150))),
        // c holds nothing of its own: the chain's last event fails.
        TransferEvent::single(f.fresh(), c, b, 10_000, eur()),
        // Independent of the chain.
        TransferEvent::single(f.fresh(), a, c, 1, eur()),
    ];
    let statuses = f.run(&events);
    assert_eq!(
        statuses,
        [
            S::LinkedEventFailed,
            S::LinkedEventFailed,
            S::LinkedEventFailed,
            S::ExceedsCredits,
            S::Created
        ]
    );
    // Only the independent transfer moved money; the hold and its post are gone.
    let mut expected = before;
    expected.get_mut(&a).expect("a").debits_posted += 1;
    expected.get_mut(&c).expect("c").credits_posted += 1;
    assert_eq!(f.book.accounts, expected);
    assert!(!f.book.pending.contains_key(&hold));
    assert!(!f.book.transfers.contains_key(&hold));
    // The failed ids are free: the chain can be sent again, fixed, and now applies.
    let mut fixed = events[..4].to_vec();
    fixed[3].amount_minor = Some(100);
    assert_eq!(f.run(&fixed), [S::Created; 4]);
    assert_eq!(f.book.pending[&hold].state, TransferState::Posted);
}

#[test]
fn a_batch_ending_inside_a_chain_fails_that_chain() {
    let mut f = Fix::new(2);
    let (a, b) = (f.customer(0), f.customer(1));
    let events = [
        TransferEvent::single(f.fresh(), a, b, 1, eur()),
        linked(TransferEvent::single(f.fresh(), a, b, 2, eur())),
        linked(TransferEvent::single(f.fresh(), a, b, 3, eur())),
    ];
    assert_eq!(
        f.run(&events),
        [S::Created, S::LinkedEventFailed, S::LinkedEventChainOpen]
    );
    assert_eq!(f.balance(b), 1);
    // A retried event inside a chain breaks it too (TigerBeetle: anything but `created`).
    let again = [
        linked(events[0].clone()),
        TransferEvent::single(f.fresh(), a, b, 4, eur()),
    ];
    assert_eq!(
        f.run(&again),
        [S::ExistsWithDifferentFlags, S::LinkedEventFailed]
    );
}

#[test]
fn holds_post_in_part_void_in_full_and_expire_by_their_timeout() {
    let mut f = Fix::new(2);
    let (a, b) = (f.customer(0), f.customer(1));
    let (h1, h2, h3) = (f.fresh(), f.fresh(), f.fresh());
    f.ok(&[
        pending(TransferEvent::single(h1, a, b, 100, eur()), Some(60)),
        pending(TransferEvent::single(h2, a, b, 100, eur()), Some(60)),
        pending(TransferEvent::single(h3, a, b, 100, eur()), None),
    ]);
    assert_eq!(f.book.accounts[&a].available_minor(), Some(700));
    let post = resolve(EventKind::Post, f.fresh(), h1, Some(150));
    assert_eq!(f.run(&[post]), [S::ExceedsPendingTransferAmount]);
    let void_part = resolve(EventKind::Void, f.fresh(), h2, Some(50));
    assert_eq!(f.run(&[void_part]), [S::PendingTransferHasDifferentAmount]);
    let mut wrong_side = resolve(EventKind::Post, f.fresh(), h1, None);
    wrong_side.credit_account = Some(a);
    assert_eq!(
        f.run(&[wrong_side]),
        [S::PendingTransferHasDifferentCreditAccount]
    );
    let (p1, v2) = (f.fresh(), f.fresh());
    f.ok(&[
        resolve(EventKind::Post, p1, h1, Some(40)),
        resolve(EventKind::Void, v2, h2, None),
    ]);
    assert_eq!(f.balance(b), 40);
    assert_eq!(f.book.accounts[&a].available_minor(), Some(860));
    let again = resolve(EventKind::Void, f.fresh(), h1, None);
    assert_eq!(f.run(&[again]), [S::PendingTransferAlreadyPosted]);
    // A retried post answers exists; the same post under a new id is refused.
    assert_eq!(
        f.run(&[resolve(EventKind::Post, p1, h1, Some(40))]),
        [S::Exists]
    );
    assert_eq!(
        f.run(&[resolve(EventKind::Post, p1, h1, None)]),
        [S::ExistsWithDifferentAmount]
    );
    // A hold without a timeout never expires; one with a timeout does.
    f.now = f.now.plus_seconds(3600);
    let (late, never) = (f.fresh(), f.fresh());
    let h4 = f.fresh();
    f.ok(&[pending(TransferEvent::single(h4, a, b, 10, eur()), Some(1))]);
    f.now = f.now.plus_seconds(2);
    assert_eq!(
        f.run(&[resolve(EventKind::Post, late, h4, None)]),
        [S::PendingTransferExpired]
    );
    f.ok(&[resolve(EventKind::Post, never, h3, None)]);
    assert_eq!(f.balance(b), 140);
}

#[test]
fn balancing_transfers_move_at_most_what_there_is() {
    let mut f = Fix::new(2);
    let (a, b) = (f.customer(0), f.customer(1));
    let mut sweep = TransferEvent::single(f.fresh(), a, b, 0, eur());
    sweep.amount_minor = None; // as much as possible
    sweep.flags.balancing_debit = true;
    let results = f.batch(std::slice::from_ref(&sweep), Timestamp(0));
    assert_eq!(results[0].status, S::Created);
    assert_eq!(
        results[0].transfer.as_ref().map(|t| t.amount_minor),
        Some(1_000)
    );
    assert_eq!((f.balance(a), f.balance(b)), (0, 1_000));
    // A retry asking for at least what was moved is the same transfer.
    sweep.amount_minor = Some(5_000);
    assert_eq!(f.run(std::slice::from_ref(&sweep)), [S::Exists]);
    sweep.amount_minor = Some(999);
    assert_eq!(f.run(&[sweep]), [S::ExistsWithDifferentAmount]);
    // Nothing left to move: refused, not a zero transfer.
    let mut empty = TransferEvent::single(f.fresh(), a, b, 10, eur());
    empty.flags.balancing_debit = true;
    assert_eq!(f.run(&[empty]), [S::ExceedsCredits]);
    // With a cap below the balance, the cap is moved.
    let mut capped = TransferEvent::single(f.fresh(), b, a, 250, eur());
    capped.flags.balancing_debit = true;
    f.ok(&[capped]);
    assert_eq!(f.balance(a), 250);
}

#[test]
fn a_closing_hold_closes_the_account_until_it_is_voided() {
    let mut f = Fix::new(2);
    let (a, b) = (f.customer(0), f.customer(1));
    let close = f.fresh();
    let mut closing = pending(TransferEvent::single(close, a, b, 1, eur()), None);
    closing.flags.closing_debit = true;
    let mut single_closing = closing.clone();
    single_closing.id = f.fresh();
    single_closing.kind = EventKind::Single;
    assert_eq!(f.run(&[single_closing]), [S::ClosingTransferMustBePending]);
    f.ok(&[closing]);
    assert!(f.book.accounts[&a].flags.closed);
    assert!(!f.book.accounts[&b].flags.closed);
    let out = TransferEvent::single(f.fresh(), a, b, 5, eur());
    let into = TransferEvent::single(f.fresh(), b, a, 1, eur());
    assert_eq!(
        f.run(std::slice::from_ref(&out)),
        [S::DebitAccountAlreadyClosed]
    );
    assert_eq!(f.run(&[into]), [S::CreditAccountAlreadyClosed]);
    // A closing hold cannot be posted (the account is closed); voiding it reopens.
    let post = resolve(EventKind::Post, f.fresh(), close, None);
    assert_eq!(f.run(&[post]), [S::DebitAccountAlreadyClosed]);
    // Single commands see the closed account too.
    let cmd = Command::Transfer {
        debit_account: a,
        credit_account: b,
        amount_minor: 5,
        currency: eur(),
        timeout_s: None,
        memo: String::new(),
    };
    let refused = f.book.apply(&cmd, f.now, &mut Id::new);
    assert_eq!(refused, Err(LedgerError::AccountClosed { account: a }));
    let reopen = f.fresh();
    f.ok(&[resolve(EventKind::Void, reopen, close, None)]);
    assert!(!f.book.accounts[&a].flags.closed);
    f.ok(&[out]);
}

#[test]
fn imported_history_carries_its_own_past_times_in_order() {
    let mut f = Fix::new(0);
    f.now = T0.plus_seconds(86_400);
    let past = |s: i64| Some(T0.plus_seconds(s));
    let (x, y) = (f.open(false, past(-10)), f.open(true, past(-10)));
    let imported = |f: &mut Fix, at: Option<Timestamp>| {
        let mut e = TransferEvent::single(f.fresh(), x, y, 10, eur());
        e.flags.imported = true;
        e.timestamp = at;
        e
    };
    let live = TransferEvent::single(f.fresh(), x, y, 10, eur());
    let first = imported(&mut f, past(5));
    assert_eq!(
        f.run(&[first.clone(), live.clone()]),
        [S::Created, S::ImportedEventExpected]
    );
    let mut late = live.clone();
    late.timestamp = past(6);
    assert_eq!(f.run(&[late]), [S::TimestampMustBeZero]);
    let same_time = imported(&mut f, past(5));
    let now = f.now;
    let future = imported(&mut f, Some(now));
    let before_accounts = imported(&mut f, past(-20));
    let missing = imported(&mut f, None);
    let results = f.batch(
        &[same_time, future, missing, before_accounts],
        T0.plus_seconds(5),
    );
    let statuses: Vec<EventStatus> = results.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            S::ImportedEventTimestampMustNotRegress,
            S::ImportedEventTimestampMustNotAdvance,
            S::ImportedEventTimestampOutOfRange,
            S::ImportedEventTimestampMustNotRegress,
        ]
    );
    let ordered = [imported(&mut f, past(6)), imported(&mut f, past(7))];
    let results = f.batch(&ordered, T0.plus_seconds(5));
    let times: Vec<Option<Timestamp>> = results
        .iter()
        .map(|r| r.transfer.as_ref().map(|t| t.created_at))
        .collect();
    assert_eq!(times, [past(6), past(7)]);
    // The accounts opened in the past; one opened now cannot take older history.
    let z = f.open(false, None);
    let mut onto_new = imported(&mut f, past(8));
    onto_new.credit_account = Some(z);
    let results = f.batch(&[onto_new], T0.plus_seconds(7));
    assert_eq!(
        results[0].status,
        S::ImportedEventTimestampMustPostdateCreditAccount
    );
}

#[test]
fn malformed_events_are_refused_in_order_of_precedence() {
    let mut f = Fix::new(2);
    let (a, b) = (f.customer(0), f.customer(1));
    let base = TransferEvent::single(f.fresh(), a, b, 10, eur());
    let with = |change: &dyn Fn(&mut TransferEvent)| {
        let mut e = base.clone();
        change(&mut e);
        e
    };
    let cases: Vec<(TransferEvent, EventStatus)> = vec![
        (with(&|e| e.id = Id(uuid::Uuid::nil())), S::IdMustNotBeZero),
        (
            with(&|e| e.id = Id(uuid::Uuid::max())),
            S::IdMustNotBeIntMax,
        ),
        (
            with(&|e| e.debit_account = None),
            S::DebitAccountMustBeGiven,
        ),
        (
            with(&|e| e.credit_account = Some(a)),
            S::AccountsMustBeDifferent,
        ),
        (with(&|e| e.pending_id = Some(a)), S::PendingIdMustBeEmpty),
        (
            with(&|e| e.timeout_s = Some(5)),
            S::TimeoutReservedForPendingTransfer,
        ),
        (with(&|e| e.amount_minor = Some(0)), S::AmountMustNotBeZero),
        (with(&|e| e.amount_minor = None), S::AmountMustNotBeZero),
        (
            with(&|e| e.amount_minor = Some(-3)),
            S::AmountMustNotBeNegative,
        ),
        (
            with(&|e| {
                e.kind = EventKind::Pending;
                e.timeout_s = Some(TIMEOUT_S_MAX + 1);
            }),
            S::TimeoutOutOfRange,
        ),
        (with(&|e| e.memo = "a\u{0}b".into()), S::MemoInvalid),
        (with(&|e| e.currency = None), S::CurrencyMustBeGiven),
        (
            with(&|e| e.debit_account = Some(id(77))),
            S::DebitAccountNotFound,
        ),
        (
            with(&|e| e.credit_account = Some(id(77))),
            S::CreditAccountNotFound,
        ),
        (
            with(&|e| e.currency = Some(Currency::from_code("USD").expect("USD"))),
            S::TransferMustHaveTheSameCurrencyAsAccounts,
        ),
        (with(&|e| e.amount_minor = Some(1_001)), S::ExceedsCredits),
        (
            with(&|e| {
                e.kind = EventKind::Void;
                e.flags.balancing_debit = true;
            }),
            S::FlagsAreMutuallyExclusive,
        ),
        (with(&|e| e.kind = EventKind::Post), S::PendingIdMustBeGiven),
        (
            with(&|e| {
                e.kind = EventKind::Post;
                e.pending_id = Some(e.id);
            }),
            S::PendingIdMustBeDifferent,
        ),
        (
            with(&|e| {
                e.kind = EventKind::Post;
                e.pending_id = Some(id(78));
            }),
            S::PendingTransferNotFound,
        ),
        (
            with(&|e| {
                e.flags.imported = true;
                e.timestamp = Some(T0);
            }),
            S::ImportedEventNotExpected,
        ),
    ];
    let before = f.book.accounts.clone();
    for (event, status) in cases {
        // Each alone, after a good first event so that mode checks see a mismatch where set.
        let lead = TransferEvent::single(f.fresh(), a, b, 1, eur());
        let got = f.run(&[lead.clone(), event.clone()]);
        assert_eq!(got[1], status, "{event:?}");
        let back = f.fresh();
        assert_eq!(
            f.run(&[TransferEvent::single(back, b, a, 1, eur())]),
            [S::Created]
        );
    }
    assert_eq!(
        f.book.accounts[&a].balance_minor(),
        before[&a].balance_minor(),
        "only the leads and their returns moved money"
    );
}

/// One event of a random batch, over accounts 0..4 and holds made earlier in the batch.
#[derive(Debug, Clone)]
enum Op {
    Move {
        from: usize,
        to: usize,
        amount: i64,
        hold: bool,
        balancing: bool,
    },
    Post {
        which: usize,
        amount: Option<i64>,
    },
    Void {
        which: usize,
    },
    Again {
        which: usize,
    },
}

fn op() -> impl Strategy<Value = (Op, bool)> {
    let op = prop_oneof![
        6 => (0..4_usize, 0..4_usize, 1..600_i64, any::<bool>(), proptest::bool::weighted(0.2))
            .prop_map(|(from, to, amount, hold, balancing)| Op::Move { from, to, amount, hold, balancing }),
        2 => (0..16_usize, proptest::option::of(1..400_i64)).prop_map(|(which, amount)| Op::Post { which, amount }),
        1 => (0..16_usize).prop_map(|which| Op::Void { which }),
        1 => (0..16_usize).prop_map(|which| Op::Again { which }),
    ];
    (op, proptest::bool::weighted(0.4))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A failed chain leaves no trace: after any batch, the book equals the one obtained by
    /// applying only the created transfers, in order, to the book before it. Every chain is
    /// all created or all refused; money is conserved, no bounded account passes its limit,
    /// and the journal entry of the created transfers replays through the audit.
    #[test]
    fn a_failed_chain_leaves_no_trace(batches in proptest::collection::vec(proptest::collection::vec(op(), 1..40), 1..4)) {
        let mut f = Fix::new(4);
        let accounts: Vec<Id> = (0..4).map(|n| f.customer(n)).collect();
        let second = accounts[1];
        let (world, funding) = (f.world, f.fresh());
        f.ok(&[TransferEvent::single(funding, world, second, 700, eur())]);
        let mut made: Vec<TransferEvent> = Vec::new();
        let mut holds: Vec<Id> = Vec::new();
        for ops in batches {
            let mut events = Vec::new();
            for (op, link) in ops {
                let mut e = match op {
                    Op::Move { from, to, amount, hold, balancing } => {
                        let mut e = TransferEvent::single(f.fresh(), accounts[from], accounts[to], amount, eur());
                        if hold { e = pending(e, Some(600)); holds.push(e.id); }
                        e.flags.balancing_debit = balancing;
                        e
                    }
                    Op::Post { which, amount } if !holds.is_empty() => resolve(EventKind::Post, f.fresh(), holds[which % holds.len()], amount),
                    Op::Void { which } if !holds.is_empty() => resolve(EventKind::Void, f.fresh(), holds[which % holds.len()], None),
                    Op::Again { which } if !made.is_empty() => made[which % made.len()].clone(),
                    _ => continue,
                };
                e.flags.linked = link;
                made.push(e.clone());
                events.push(e);
            }
            let before = f.book.clone();
            let results = f.batch(&events, Timestamp(0));
            prop_assert_eq!(results.len(), events.len());
            // Chains: maximal runs of linked events plus the event that ends them.
            let mut start = 0;
            for i in 0..events.len() {
                if !events[i].flags.linked || i + 1 == events.len() {
                    let created = results[start..=i].iter().filter(|r| r.status == S::Created).count();
                    prop_assert!(created == 0 || created == i + 1 - start, "chain {}..={} split: {:?}", start, i, &results[start..=i]);
                    start = i + 1;
                }
            }
            // No trace: replaying the created rows onto the book before gives the book after.
            let rows: Vec<Transfer> = results.iter().filter(|r| r.status == S::Created).filter_map(|r| r.transfer.clone()).collect();
            let mut replayed = before.accounts.clone();
            for t in &rows {
                prop_assert!(effect(&mut replayed, t).is_ok(), "created row does not replay: {:?}", t);
            }
            prop_assert_eq!(&replayed, &f.book.accounts);
            for (id, p) in &f.book.pending {
                let resolved = rows.iter().any(|t| t.pending_id == Some(*id));
                let new = rows.iter().any(|t| t.id == *id);
                match before.pending.get(id) {
                    Some(old) if !resolved => prop_assert_eq!(old.state, p.state),
                    Some(_) => prop_assert_ne!(p.state, TransferState::Pending),
                    None => prop_assert!(new, "hold {} appeared without being created", id),
                }
            }
            for id in f.book.transfers.keys() {
                prop_assert!(before.transfers.contains_key(id) || rows.iter().any(|t| t.id == *id));
            }
            let (mut dr, mut cr) = (0_i128, 0_i128);
            for a in f.book.accounts.values() {
                prop_assert!(a.within_limits(), "beyond its limit: {:?}", a);
                dr += i128::from(a.debits_posted) + i128::from(a.debits_pending);
                cr += i128::from(a.credits_posted) + i128::from(a.credits_pending);
            }
            prop_assert_eq!(dr, cr);
        }
        // The journal of everything, funding included, replays to the same accounts.
        let mut auditor = Auditor::new([]);
        let (mut seq, mut prev) = (0, GENESIS);
        for e in &f.journal {
            let entry = next_entry(seq, prev, f.now, e.kind(), serde_json::to_vec(&e).expect("json"));
            seq = entry.seq;
            prev = entry.hash;
            auditor.feed(&entry);
        }
        let report = auditor.finish(f.book.accounts.values().cloned());
        prop_assert!(report.ok(), "audit problems: {:?}", report.problems);
    }
}

#[test]
fn accounts_with_history_keep_their_balance_after_each_transfer_and_failed_chains_none() {
    let mut f = Fix::new(1);
    let a = f.customer(0);
    let h = f.fresh();
    f.book
        .apply(
            &Command::OpenAccount {
                owner: "h".into(),
                currency: eur(),
                kind: AccountKind::Customer,
                flags: AccountFlags {
                    debits_must_not_exceed_credits: true,
                    history: true,
                    ..Default::default()
                },
                limit_minor: 0,
                imported_at: None,
                references: Default::default(),
            },
            f.now,
            &mut || h,
        )
        .expect("open");
    f.book.balances.clear();
    let (t1, t2, t3) = (f.fresh(), f.fresh(), f.fresh());
    let failing = [
        linked(TransferEvent::single(t1, a, h, 10, eur())),
        TransferEvent::single(t2, h, a, 1_000, eur()),
    ];
    assert_eq!(f.run(&failing), [S::LinkedEventFailed, S::ExceedsCredits]);
    assert!(
        f.book.balances.is_empty(),
        "a failed chain leaves no history"
    );
    f.ok(&[
        TransferEvent::single(t1, a, h, 10, eur()),
        TransferEvent::single(t3, h, a, 4, eur()),
    ]);
    let rows: Vec<(Id, Id, i64, i64)> = f
        .book
        .balances
        .iter()
        .map(|b| (b.account, b.transfer, b.debits_posted, b.credits_posted))
        .collect();
    // Only the history account has rows (a does not keep history), one per transfer.
    assert_eq!(rows, [(h, t1, 0, 10), (h, t3, 4, 10)]);
}
