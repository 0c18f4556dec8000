use super::*;
use crate::audit::Auditor;
use crate::journal::{GENESIS, next_entry};
use proptest::prelude::*;

fn eur() -> Currency {
    Currency::from_code("EUR").expect("EUR")
}

fn usd() -> Currency {
    Currency::from_code("USD").expect("USD")
}

struct Fixture {
    book: Book,
    now: Timestamp,
    next: u128,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            book: Book::default(),
            now: Timestamp(1_000_000),
            next: 1,
        }
    }

    fn id(&mut self) -> Id {
        self.next += 1;
        Id(uuid::Uuid::from_u128(self.next))
    }

    fn apply(&mut self, c: Command) -> Result<Event, LedgerError> {
        let mut counter = self.next;
        let r = self.book.apply(&c, self.now, &mut || {
            counter += 1;
            Id(uuid::Uuid::from_u128(counter))
        });
        self.next = counter;
        r
    }

    fn open(&mut self, currency: Currency, dmnec: bool, limit: i64) -> Id {
        let e = self
            .apply(Command::OpenAccount {
                owner: "o".into(),
                currency,
                kind: AccountKind::Customer,
                flags: AccountFlags {
                    debits_must_not_exceed_credits: dmnec,
                    ..Default::default()
                },
                limit_minor: limit,
                imported_at: None,
                references: Default::default(),
            })
            .expect("open");
        match e {
            Event::AccountOpened { account } => account.id,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn transfer(
        &mut self,
        d: Id,
        c: Id,
        amount: i64,
        timeout_s: Option<i64>,
    ) -> Result<Transfer, LedgerError> {
        let e = self.apply(Command::Transfer {
            debit_account: d,
            credit_account: c,
            amount_minor: amount,
            currency: eur(),
            timeout_s,
            memo: String::new(),
        })?;
        match e {
            Event::Transfers { mut transfers } => Ok(transfers.remove(0)),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// An id no account has.
    fn next_unknown(&self) -> Id {
        Id(uuid::Uuid::from_u128(u128::MAX))
    }

    fn acct(&self, id: Id) -> &Account {
        &self.book.accounts[&id]
    }
}

#[test]
fn single_transfer_moves_money_and_respects_the_limit() {
    let mut f = Fixture::new();
    let world = f.open(eur(), false, 0);
    let alice = f.open(eur(), true, 0);
    let bob = f.open(eur(), true, 0);
    f.transfer(world, alice, 1000, None).expect("fund");
    f.transfer(alice, bob, 600, None).expect("pay");
    let err = f.transfer(alice, bob, 401, None).expect_err("beyond funds");
    assert_eq!(
        err,
        LedgerError::ExceedsCredits {
            account: alice,
            currency: eur(),
            needed_minor: 401,
            available_minor: 400
        }
    );
    assert!(
        err.to_string()
            .ends_with("needs 4.01 EUR, available 4.00 EUR"),
        "money as money: {err}"
    );
    assert_eq!(f.acct(alice).balance_minor(), 400);
    assert_eq!(f.acct(bob).balance_minor(), 600);
    assert_eq!(f.acct(world).balance_minor(), -1000);
}

#[test]
fn credit_limit_allows_overdraft_up_to_the_limit() {
    let mut f = Fixture::new();
    let world = f.open(eur(), false, 0);
    let alice = f.open(eur(), true, 50);
    f.transfer(alice, world, 50, None).expect("within limit");
    assert!(f.transfer(alice, world, 1, None).is_err());
    assert_eq!(f.acct(alice).balance_minor(), -50);
}

#[test]
fn refusals_change_nothing() {
    let mut f = Fixture::new();
    let world = f.open(eur(), false, 0);
    let alice = f.open(eur(), true, 0);
    let dollars = f.open(usd(), false, 0);
    let before = f.book.accounts.clone();
    assert!(matches!(
        f.transfer(world, dollars, 5, None),
        Err(LedgerError::CurrencyMismatch { .. })
    ));
    assert!(matches!(
        f.transfer(alice, world, 5, None),
        Err(LedgerError::ExceedsCredits { .. })
    ));
    let ghost = f.id();
    assert_eq!(
        f.transfer(world, ghost, 5, None),
        Err(LedgerError::AccountNotFound { id: ghost })
    );
    assert_eq!(
        f.transfer(world, world, 5, None),
        Err(LedgerError::SameAccount)
    );
    let max = f
        .transfer(world, alice, i64::MAX, None)
        .expect("max fits once");
    assert_eq!(max.amount_minor, i64::MAX);
    let snapshot = f.book.accounts.clone();
    assert!(matches!(
        f.transfer(world, alice, 1, None),
        Err(LedgerError::Overflow { .. })
    ));
    assert_eq!(
        f.book.accounts, snapshot,
        "overflow must leave the book unchanged"
    );
    assert_ne!(before, snapshot);
}

#[test]
fn pending_transfers_post_in_part_and_release_the_rest() {
    let mut f = Fixture::new();
    let world = f.open(eur(), false, 0);
    let alice = f.open(eur(), true, 0);
    let shop = f.open(eur(), false, 0);
    f.transfer(world, alice, 1000, None).expect("fund");
    let hold = f.transfer(alice, shop, 700, Some(60)).expect("hold");
    assert_eq!(f.acct(alice).available_minor(), Some(300));
    assert!(
        f.transfer(alice, shop, 301, None).is_err(),
        "the hold reserves funds"
    );
    let post = f
        .apply(Command::Post {
            pending_id: hold.id,
            amount_minor: Some(250),
        })
        .expect("post");
    let Event::Transfers { transfers } = post else {
        panic!("post event")
    };
    assert_eq!(transfers[0].amount_minor, 250);
    assert_eq!(transfers[0].pending_amount_minor, Some(700));
    assert_eq!(f.acct(alice).balance_minor(), 750);
    assert_eq!(f.acct(alice).debits_pending, 0);
    assert_eq!(f.acct(shop).balance_minor(), 250);
    let again = f.apply(Command::Void {
        pending_id: hold.id,
    });
    assert_eq!(
        again,
        Err(LedgerError::PendingNotPending {
            id: hold.id,
            state: TransferState::Posted
        })
    );
}

#[test]
fn post_beyond_pending_and_after_expiry_are_refused() {
    let mut f = Fixture::new();
    let world = f.open(eur(), false, 0);
    let shop = f.open(eur(), false, 0);
    let hold = f.transfer(world, shop, 100, Some(10)).expect("hold");
    assert_eq!(
        f.apply(Command::Post {
            pending_id: hold.id,
            amount_minor: Some(101)
        }),
        Err(LedgerError::PostExceedsPending {
            currency: eur(),
            requested_minor: 101,
            pending_minor: 100
        })
    );
    assert!(
        f.apply(Command::Expire {
            pending_id: hold.id
        })
        .is_err(),
        "not due yet"
    );
    f.now = f.now.plus_seconds(10);
    assert!(matches!(
        f.apply(Command::Post {
            pending_id: hold.id,
            amount_minor: None
        }),
        Err(LedgerError::PendingExpired { .. })
    ));
    f.apply(Command::Expire {
        pending_id: hold.id,
    })
    .expect("expire once");
    assert!(
        f.apply(Command::Expire {
            pending_id: hold.id
        })
        .is_err(),
        "expire exactly once"
    );
    assert_eq!(f.acct(world).debits_pending, 0);
    assert_eq!(f.acct(shop).credits_pending, 0);
}

#[test]
fn exchange_is_all_or_nothing_with_the_rate_recorded() {
    let mut f = Fixture::new();
    let world_eur = f.open(eur(), false, 0);
    let alice = f.open(eur(), true, 0);
    let liq_eur = f.open(eur(), false, 0);
    let liq_usd = f.open(usd(), true, 0);
    let bob = f.open(usd(), false, 0);
    f.transfer(world_eur, alice, 10_000, None).expect("fund");
    let rate = Rate::parse("1.08", eur(), usd()).expect("rate");
    let cmd = |amount| Command::Exchange {
        debit_account: alice,
        liquidity_from: liq_eur,
        liquidity_to: liq_usd,
        credit_account: bob,
        amount_minor: amount,
        rate,
        memo: "fx".into(),
    };
    let before = f.book.accounts.clone();
    assert!(
        matches!(f.apply(cmd(1000)), Err(LedgerError::ExceedsCredits { account, .. }) if account == liq_usd),
        "USD liquidity is empty, so the first leg must not stick either"
    );
    assert_eq!(f.book.accounts, before);
    // Fund USD liquidity via a USD settlement account.
    let world_usd = f.open(usd(), false, 0);
    f.apply(Command::Transfer {
        debit_account: world_usd,
        credit_account: liq_usd,
        amount_minor: 100_000,
        currency: usd(),
        timeout_s: None,
        memo: String::new(),
    })
    .expect("fund liquidity");
    let Event::Transfers { transfers } = f.apply(cmd(1000)).expect("exchange") else {
        panic!()
    };
    assert_eq!(transfers.len(), 2);
    assert_eq!(transfers[0].amount_minor, 1000);
    assert_eq!(transfers[1].amount_minor, 1080);
    assert_eq!(transfers[0].link_id, transfers[1].link_id);
    assert_eq!(transfers[1].rate, Some(rate));
    assert_eq!(f.acct(bob).balance_minor(), 1080);
}

#[test]
fn request_validation_refuses_bad_fields() {
    let ok = Command::Transfer {
        debit_account: Id(uuid::Uuid::from_u128(1)),
        credit_account: Id(uuid::Uuid::from_u128(2)),
        amount_minor: 5,
        currency: eur(),
        timeout_s: None,
        memo: String::new(),
    };
    let req = |key: &str, command: Command| Request {
        idempotency_key: key.into(),
        command,
    };
    assert!(req("k", ok.clone()).validate().is_ok());
    assert!(req("", ok.clone()).validate().is_err());
    assert!(req(&"k".repeat(201), ok.clone()).validate().is_err());
    let mut neg = ok.clone();
    if let Command::Transfer { amount_minor, .. } = &mut neg {
        *amount_minor = -1;
    }
    assert_eq!(
        req("k", neg).validate(),
        Err(LedgerError::AmountNotPositive { amount_minor: -1 })
    );
    let mut t0 = ok.clone();
    if let Command::Transfer { timeout_s, .. } = &mut t0 {
        *timeout_s = Some(0);
    }
    assert!(req("k", t0).validate().is_err());
    assert_ne!(
        ok.fingerprint(),
        Command::Void {
            pending_id: Id(uuid::Uuid::from_u128(1))
        }
        .fingerprint()
    );
}

/// A random workload over a handful of accounts; every operation may fail, none may break rules.
#[derive(Debug, Clone)]
enum Op {
    Transfer {
        from: usize,
        to: usize,
        amount: i64,
        hold: bool,
    },
    Post {
        which: usize,
        amount: Option<i64>,
    },
    Void {
        which: usize,
    },
    Tick {
        seconds: i64,
    },
    Expire {
        which: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..5_usize, 0..5_usize, 1..2_000_i64, any::<bool>())
            .prop_map(|(from, to, amount, hold)| Op::Transfer { from, to, amount, hold }),
        2 => (0..32_usize, proptest::option::of(1..2_000_i64)).prop_map(|(which, amount)| Op::Post { which, amount }),
        1 => (0..32_usize).prop_map(|which| Op::Void { which }),
        1 => (1..40_i64).prop_map(|seconds| Op::Tick { seconds }),
        1 => (0..32_usize).prop_map(|which| Op::Expire { which }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Money is conserved, no bounded account passes its limit, every pending transfer is
    /// resolved at most once, and the journal replays to exactly the book's accounts.
    #[test]
    fn conservation_limits_and_single_resolution(ops in proptest::collection::vec(op(), 1..120)) {
        let mut f = Fixture::new();
        let world = f.open(eur(), false, 0);
        let mut accounts = vec![world];
        for limit in [0, 0, 100, 0] {
            accounts.push(f.open(eur(), true, limit));
        }
        f.transfer(world, accounts[1], 3_000, None).expect("fund");
        let mut holds: Vec<Id> = Vec::new();
        let mut events = vec![];
        let mut resolutions: HashMap<Id, usize> = HashMap::new();
        for op in ops {
            let result = match op {
                Op::Transfer { from, to, amount, hold } => {
                    let r = f.transfer(accounts[from], accounts[to], amount, hold.then_some(30));
                    if let Ok(t) = &r && hold { holds.push(t.id); }
                    r.map(|t| Event::Transfers { transfers: vec![t] })
                }
                Op::Post { which, amount } if !holds.is_empty() => {
                    f.apply(Command::Post { pending_id: holds[which % holds.len()], amount_minor: amount })
                }
                Op::Void { which } if !holds.is_empty() => {
                    f.apply(Command::Void { pending_id: holds[which % holds.len()] })
                }
                Op::Expire { which } if !holds.is_empty() => {
                    f.apply(Command::Expire { pending_id: holds[which % holds.len()] })
                }
                Op::Tick { seconds } => { f.now = f.now.plus_seconds(seconds); continue; }
                _ => continue,
            };
            if let Ok(event) = result {
                if let Event::Transfers { transfers } = &event {
                    for t in transfers {
                        if let Some(p) = t.pending_id { *resolutions.entry(p).or_default() += 1; }
                    }
                }
                events.push(event);
            }
            let (mut dr, mut cr) = (0_i128, 0_i128);
            for a in f.book.accounts.values() {
                prop_assert!(a.within_limits(), "account {} beyond limit: {:?}", a.id, a);
                dr += i128::from(a.debits_posted) + i128::from(a.debits_pending);
                cr += i128::from(a.credits_posted) + i128::from(a.credits_pending);
            }
            prop_assert_eq!(dr, cr, "money created or destroyed");
        }
        for (id, n) in &resolutions {
            prop_assert_eq!(*n, 1, "pending {} resolved {} times", id, n);
        }
        // The journal of what happened replays to the same book.
        let mut auditor = Auditor::new([]);
        let (mut seq, mut prev) = (0, GENESIS);
        let mut all = vec![];
        for a in f.book.accounts.values() {
            let mut opened = a.clone();
            opened.debits_pending = 0; opened.debits_posted = 0;
            opened.credits_pending = 0; opened.credits_posted = 0;
            all.push(Event::AccountOpened { account: opened });
        }
        all.push(Event::Transfers { transfers: vec![] });
        // The funding transfer was made before `events` started recording; replay it too.
        let funding = Transfer {
            id: Id(uuid::Uuid::from_u128(u128::MAX)), kind: TransferKind::Single, state: TransferState::Posted,
            debit_account: world, credit_account: accounts[1], amount_minor: 3_000, currency: eur(),
            pending_id: None, pending_amount_minor: None, expires_at: None, link_id: None, rate: None,
            memo: String::new(), created_at: Timestamp(0), flags: TransferFlags::default(),
            user_data_128: 0, user_data_64: 0, user_data_32: 0, code: 0,
        };
        all.push(Event::Transfers { transfers: vec![funding] });
        all.extend(events);
        for e in all {
            let entry = next_entry(seq, prev, f.now, e.kind(), serde_json::to_vec(&e).expect("json"));
            seq = entry.seq; prev = entry.hash;
            auditor.feed(&entry);
        }
        let report = auditor.finish(f.book.accounts.values().cloned());
        prop_assert!(report.ok(), "audit problems: {:?}", report.problems);
    }
}

#[test]
fn audit_detects_tampering() {
    let mut f = Fixture::new();
    let world = f.open(eur(), false, 0);
    let alice = f.open(eur(), true, 0);
    let mut entries = vec![];
    let (mut seq, mut prev) = (0, GENESIS);
    for a in [world, alice] {
        let mut acc = f.acct(a).clone();
        acc.created_at = f.now;
        let body = serde_json::to_vec(&Event::AccountOpened { account: acc }).expect("json");
        let e = next_entry(seq, prev, f.now, "account_opened", body);
        seq = e.seq;
        prev = e.hash;
        entries.push(e);
    }
    let t = f.transfer(world, alice, 10, None).expect("t");
    let body = serde_json::to_vec(&Event::Transfers { transfers: vec![t] }).expect("json");
    entries.push(next_entry(seq, prev, f.now, "transfers", body));

    let audit = |entries: &[crate::journal::JournalEntry], accounts: Vec<Account>| {
        let mut a = Auditor::new([]);
        for e in entries {
            a.feed(e);
        }
        a.finish(accounts)
    };
    let stored: Vec<Account> = f.book.accounts.values().cloned().collect();
    assert!(audit(&entries, stored.clone()).ok());

    let mut edited = entries.clone();
    edited[2].body = edited[2]
        .body
        .iter()
        .map(|b| if *b == b'1' { b'9' } else { *b })
        .collect();
    assert!(!audit(&edited, stored.clone()).ok(), "edited body");

    let mut dropped = entries.clone();
    dropped.remove(1);
    assert!(!audit(&dropped, stored.clone()).ok(), "removed entry");

    let mut wrong = stored;
    wrong[0].credits_posted += 1;
    assert!(
        !audit(&entries, wrong).ok(),
        "stored counter differs from replay"
    );
}

#[test]
fn records_journal_changes_that_move_no_money() {
    let mut f = Fixture::new();
    let before = f.book.accounts.clone();
    let record = |kind: &str| Request {
        idempotency_key: "k".into(),
        command: Command::Record {
            kind: kind.into(),
            data: serde_json::json!({"id": 1}),
        },
    };
    assert!(record("api_key_created").validate().is_ok());
    for bad in [
        "",
        "Api",
        "api-key",
        "transfers",
        "account_opened",
        &"x".repeat(65),
    ] {
        assert!(record(bad).validate().is_err(), "{bad:?} must be refused");
    }
    let big = Request {
        idempotency_key: "k".into(),
        command: Command::Record {
            kind: "note".into(),
            data: serde_json::json!("x".repeat(RECORD_DATA_LEN_MAX)),
        },
    };
    assert!(big.validate().is_err());
    let e = f.apply(record("api_key_created").command).expect("record");
    assert_eq!(e.kind(), "api_key_created");
    assert_eq!(f.book.accounts, before, "a record moves no money");
}

#[test]
fn a_limit_is_raised_used_and_never_lowered_below_its_use_and_the_audit_replays_it() {
    let mut f = Fixture::new();
    let receivable = f.open(eur(), true, 0);
    let payable = f.open(eur(), false, 0);
    assert!(matches!(
        f.transfer(receivable, payable, 1, None),
        Err(LedgerError::ExceedsCredits { .. })
    ));
    let set = |account, limit_minor| Command::SetLimit {
        account,
        limit_minor,
    };
    let e = f.apply(set(receivable, 5_000)).expect("raised");
    assert_eq!(
        e,
        Event::LimitSet {
            account: receivable,
            previous_minor: 0,
            limit_minor: 5_000
        }
    );
    assert_eq!(e.kind(), "limit_set");
    f.transfer(receivable, payable, 3_000, None)
        .expect("within the limit");
    f.transfer(receivable, payable, 1_000, Some(60))
        .expect("a hold counts too");
    assert!(matches!(
        f.transfer(receivable, payable, 1_001, None),
        Err(LedgerError::ExceedsCredits {
            available_minor: 1_000,
            ..
        })
    ));

    let before = f.book.accounts.clone();
    assert_eq!(
        f.apply(set(receivable, 3_999)),
        Err(LedgerError::LimitBelowUse {
            account: receivable,
            currency: eur(),
            used_minor: 4_000
        })
    );
    assert_eq!(f.book.accounts, before, "a refused limit changes nothing");
    f.apply(set(receivable, 4_000))
        .expect("down to what is used: no more credit");
    assert!(matches!(
        f.transfer(receivable, payable, 1, None),
        Err(LedgerError::ExceedsCredits { .. })
    ));
    assert_eq!(
        f.apply(set(f.next_unknown(), 1)),
        Err(LedgerError::AccountNotFound {
            id: Id(uuid::Uuid::from_u128(u128::MAX))
        })
    );
    let negative = Request {
        idempotency_key: "k".into(),
        command: set(receivable, -1),
    };
    assert!(negative.validate().is_err());
    assert!(
        Request {
            idempotency_key: "k".into(),
            command: Command::Record {
                kind: "limit_set".into(),
                data: serde_json::json!({})
            }
        }
        .validate()
        .is_err(),
        "a record cannot pose as a limit change"
    );

    // The audit replays the limit: an account stored with another limit differs.
    let mut entries = vec![];
    let (mut seq, mut prev) = (0, GENESIS);
    let mut push = |kind: &str, event: &Event| {
        let body = serde_json::to_vec(event).expect("json");
        let e = next_entry(seq, prev, Timestamp(0), kind, body);
        seq = e.seq;
        prev = e.hash;
        entries.push(e);
    };
    let mut opened = f.acct(receivable).clone();
    (
        opened.limit_minor,
        opened.debits_posted,
        opened.debits_pending,
    ) = (0, 0, 0);
    push(
        "account_opened",
        &Event::AccountOpened {
            account: opened.clone(),
        },
    );
    push(
        "limit_set",
        &Event::LimitSet {
            account: receivable,
            previous_minor: 0,
            limit_minor: 4_000,
        },
    );
    let audit = |stored: Account| {
        let mut a = Auditor::new([]);
        for e in &entries {
            a.feed(e);
        }
        a.finish([stored])
    };
    let mut stored = opened.clone();
    stored.limit_minor = 4_000;
    assert!(
        audit(stored.clone()).ok(),
        "{:?}",
        audit(stored.clone()).problems
    );
    stored.limit_minor = 9_000;
    assert!(!audit(stored).ok(), "a limit edited in the table is found");
}
