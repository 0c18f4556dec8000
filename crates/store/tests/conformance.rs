//! The store conformance suite: every behaviour test runs once on SQLite (a temporary file)
//! and once on a real PostgreSQL (a throwaway cluster from Debian's binaries, or
//! `TEST_DATABASE_URL`). With `TALLY_REQUIRE_POSTGRES=1` the PostgreSQL half cannot skip.
//!
//! Tests never assume an empty database (with `TEST_DATABASE_URL` they share one): each
//! makes its own accounts and checks only those, plus the whole-ledger audit, which must pass
//! whatever else is in the database.

use ed25519_dalek::{Signer, Verifier};
use proptest::prelude::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tally_kernel::{Currency, Id, Rate, Timestamp};
use tally_ledger::{
    AccountFlags, AccountKind, Command, Event, LedgerError, Request, TransferState,
};
use tally_store::outbox::NewMessage;
use tally_store::{Checkpointer, Store, StoreError, WriteOptions};

/// A database to run one test against, kept alive for the test's duration.
struct Db {
    url: String,
    _dir: Option<tempfile::TempDir>,
    clock: Arc<AtomicI64>,
}

impl Db {
    async fn open(&self) -> Store {
        let clock = self.clock.clone();
        let key = Arc::new(TestKey(ed25519_dalek::SigningKey::from_bytes(&[7; 32])));
        let options = WriteOptions {
            checkpoint_every: 8,
            checkpointer: Some(key),
            clock: Arc::new(move || Timestamp(clock.load(Ordering::SeqCst))),
            ..WriteOptions::default()
        };
        Store::open(&self.url, options).await.expect("open store")
    }

    fn advance_s(&self, seconds: i64) {
        self.clock.fetch_add(seconds * 1_000_000, Ordering::SeqCst);
    }

    fn now(&self) -> Timestamp {
        Timestamp(self.clock.load(Ordering::SeqCst))
    }
}

struct TestKey(ed25519_dalek::SigningKey);

impl Checkpointer for TestKey {
    fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let mut m = tally_ledger::journal::CHECKPOINT_DOMAIN.to_vec();
        m.extend_from_slice(message);
        self.0.sign(&m).to_bytes().to_vec()
    }
}

fn verify(pk: &[u8; 32], message: &[u8], sig: &[u8]) -> bool {
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(pk) else {
        return false;
    };
    let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else {
        return false;
    };
    let mut m = tally_ledger::journal::CHECKPOINT_DOMAIN.to_vec();
    m.extend_from_slice(message);
    key.verify(&m, &sig).is_ok()
}

fn sqlite_db() -> Db {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("tally.db").display());
    Db {
        url,
        _dir: Some(dir),
        clock: Arc::new(AtomicI64::new(1_700_000_000_000_000)),
    }
}

fn postgres_db() -> Option<Db> {
    let url = tally_testkit::shared_test_database_url()?;
    Some(Db {
        url,
        _dir: None,
        clock: Arc::new(AtomicI64::new(1_700_000_000_000_000)),
    })
}

/// Checkpoints by the test key only, at most a checkpoint interval (8) plus a batch behind.
fn policy() -> tally_store::audit::AuditPolicy {
    tally_store::audit::AuditPolicy {
        trusted_signers: vec![
            TestKey(ed25519_dalek::SigningKey::from_bytes(&[7; 32])).public_key(),
        ],
        checkpoint_gap_max: Some(8 + WriteOptions::default().batch_max as i64),
    }
}

async fn audit_ok(store: &Store) -> tally_store::audit::StoreAudit {
    let report = store
        .audit(&verify, &policy(), &|_| {})
        .await
        .expect("audit runs");
    assert!(
        report.ok(),
        "audit found problems: {:#?}",
        report.ledger.problems
    );
    report
}

fn eur() -> Currency {
    Currency::from_code("EUR").expect("EUR")
}

fn usd() -> Currency {
    Currency::from_code("USD").expect("USD")
}

fn key() -> String {
    Id::new().to_string()
}

async fn open_account(store: &Store, currency: Currency, bounded: bool, limit: i64) -> Id {
    let out = store
        .execute(Request {
            idempotency_key: key(),
            command: Command::OpenAccount {
                owner: format!("owner-{}", Id::new()),
                currency,
                kind: if bounded {
                    AccountKind::Customer
                } else {
                    AccountKind::Settlement
                },
                flags: AccountFlags {
                    debits_must_not_exceed_credits: bounded,
                    ..Default::default()
                },
                limit_minor: limit,
                imported_at: None,
                references: Default::default(),
            },
        })
        .await
        .expect("open account");
    out.account().expect("account event").id
}

fn transfer(d: Id, c: Id, amount: i64, timeout_s: Option<i64>) -> Command {
    Command::Transfer {
        debit_account: d,
        credit_account: c,
        amount_minor: amount,
        currency: eur(),
        timeout_s,
        memo: "test".into(),
    }
}

async fn pay(
    store: &Store,
    d: Id,
    c: Id,
    amount: i64,
) -> Result<tally_ledger::Transfer, StoreError> {
    let out = store
        .execute(Request {
            idempotency_key: key(),
            command: transfer(d, c, amount, None),
        })
        .await?;
    Ok(out.transfer().expect("transfer").clone())
}

async fn balance(store: &Store, id: Id) -> i64 {
    store
        .account(id)
        .await
        .expect("read")
        .expect("exists")
        .balance_minor()
}

// ---------------------------------------------------------------------------------------------
// The behaviours.
// ---------------------------------------------------------------------------------------------

async fn accounts_open_and_read_back(db: Db) {
    let store = db.open().await;
    let id = open_account(&store, eur(), true, 25).await;
    let a = store.account(id).await.expect("read").expect("exists");
    assert_eq!(
        (a.currency, a.limit_minor, a.balance_minor()),
        (eur(), 25, 0)
    );
    assert!(a.flags.debits_must_not_exceed_credits);
    assert_eq!(
        store.accounts_of(&a.owner).await.expect("by owner"),
        vec![a]
    );
    assert!(store.account(Id::new()).await.expect("read").is_none());
    audit_ok(&store).await;
}

async fn transfers_move_money_within_limits(db: Db) {
    let store = db.open().await;
    let world = open_account(&store, eur(), false, 0).await;
    let alice = open_account(&store, eur(), true, 0).await;
    let bob = open_account(&store, eur(), true, 0).await;
    pay(&store, world, alice, 1_000).await.expect("fund");
    let t = pay(&store, alice, bob, 600).await.expect("pay");
    assert_eq!(store.transfer(t.id).await.expect("read"), Some(t.clone()));
    let err = pay(&store, alice, bob, 401)
        .await
        .expect_err("beyond funds");
    assert!(matches!(
        err,
        StoreError::Ledger(LedgerError::ExceedsCredits {
            available_minor: 400,
            ..
        })
    ));
    assert_eq!(
        (balance(&store, alice).await, balance(&store, bob).await),
        (400, 600)
    );
    let history = store.transfers_of(alice, 10).await.expect("history");
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].id, t.id, "newest first");
    audit_ok(&store).await;
}

async fn bad_input_changes_nothing(db: Db) {
    let store = db.open().await;
    let world = open_account(&store, eur(), false, 0).await;
    let dollars = open_account(&store, usd(), false, 0).await;
    let alice = open_account(&store, eur(), true, 0).await;
    let before = store.counts().await.expect("counts");
    let bad = [
        transfer(world, dollars, 5, None),
        transfer(world, Id::new(), 5, None),
        transfer(world, alice, -5, None),
        transfer(world, alice, 0, None),
        transfer(world, world, 5, None),
        transfer(alice, world, 1, None),
        Command::Post {
            pending_id: Id::new(),
            amount_minor: None,
        },
        Command::Void {
            pending_id: Id::new(),
        },
        // PostgreSQL's TEXT refuses NUL: it must be refused before it can fail a batch.
        Command::Transfer {
            debit_account: world,
            credit_account: alice,
            amount_minor: 1,
            currency: eur(),
            timeout_s: None,
            memo: "x\0y".into(),
        },
    ];
    for command in bad {
        let r = store
            .execute(Request {
                idempotency_key: key(),
                command: command.clone(),
            })
            .await;
        assert!(
            matches!(r, Err(StoreError::Ledger(_))),
            "{command:?} gave {r:?}"
        );
    }
    let empty_key = store.execute(Request {
        idempotency_key: String::new(),
        command: transfer(world, alice, 1, None),
    });
    assert!(matches!(
        empty_key.await,
        Err(StoreError::Ledger(LedgerError::IdempotencyKeyInvalid(_)))
    ));
    pay(&store, world, alice, i64::MAX)
        .await
        .expect("largest amount once");
    assert!(matches!(
        pay(&store, world, alice, 1).await,
        Err(StoreError::Ledger(LedgerError::Overflow { .. }))
    ));
    let after = store.counts().await.expect("counts");
    assert_eq!(
        after.journal_seq,
        before.journal_seq + 1,
        "only the one valid transfer was journaled"
    );
    audit_ok(&store).await;
}

async fn idempotent_replays_return_the_original(db: Db) {
    let store = db.open().await;
    let world = open_account(&store, eur(), false, 0).await;
    let alice = open_account(&store, eur(), true, 0).await;
    let k = key();
    let first = store
        .execute(Request {
            idempotency_key: k.clone(),
            command: transfer(world, alice, 70, None),
        })
        .await
        .expect("first");
    assert!(!first.replayed);
    // Retries, sequential and concurrent, return the same transfer and move nothing.
    let mut retries = Vec::new();
    for _ in 0..20 {
        retries.push(store.execute(Request {
            idempotency_key: k.clone(),
            command: transfer(world, alice, 70, None),
        }));
    }
    for r in futures_join(retries).await {
        let r = r.expect("retry");
        assert!(r.replayed);
        assert_eq!(r.event, first.event);
        assert_eq!(r.journal_seq, first.journal_seq);
    }
    let conflict = store
        .execute(Request {
            idempotency_key: k.clone(),
            command: transfer(world, alice, 71, None),
        })
        .await;
    assert!(matches!(
        conflict,
        Err(StoreError::Ledger(LedgerError::IdempotencyConflict))
    ));
    assert_eq!(balance(&store, alice).await, 70);
    // A refused request does not burn its key: it can succeed later.
    let k2 = key();
    let r = store
        .execute(Request {
            idempotency_key: k2.clone(),
            command: transfer(alice, world, 100, None),
        })
        .await;
    assert!(matches!(
        r,
        Err(StoreError::Ledger(LedgerError::ExceedsCredits { .. }))
    ));
    pay(&store, world, alice, 30).await.expect("top up");
    store
        .execute(Request {
            idempotency_key: k2,
            command: transfer(alice, world, 100, None),
        })
        .await
        .expect("now it fits");
    assert_eq!(balance(&store, alice).await, 0);
    audit_ok(&store).await;
}

/// Polls all futures together so they land in the same writer batches.
async fn futures_join<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output> {
    futures::future::join_all(fs).await
}

async fn concurrent_transfers_never_overdraw(db: Db) {
    let store = db.open().await;
    // A second store on the same database: another `tally serve` process.
    let other = db.open().await;
    let world = open_account(&store, eur(), false, 0).await;
    let alice = open_account(&store, eur(), true, 50).await;
    let shop = open_account(&store, eur(), false, 0).await;
    pay(&store, world, alice, 1_000).await.expect("fund");
    let mut tasks = Vec::new();
    for i in 0..300 {
        let s = if i % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            s.execute(Request {
                idempotency_key: key(),
                command: transfer(alice, shop, 7, (i % 3 == 0).then_some(60)),
            })
            .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => ok += 1,
            Err(StoreError::Ledger(LedgerError::ExceedsCredits { .. })) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    // 1050 available (1000 + limit 50): exactly 150 transfers of 7 fit.
    assert_eq!(ok, 150);
    let a = store.account(alice).await.expect("read").expect("exists");
    assert_eq!(a.debits_posted + a.debits_pending, 1_050);
    assert!(a.within_limits());
    audit_ok(&other).await;
}

async fn pending_resolves_exactly_once(db: Db) {
    let store = db.open().await;
    let other = db.open().await;
    let world = open_account(&store, eur(), false, 0).await;
    let alice = open_account(&store, eur(), true, 0).await;
    let shop = open_account(&store, eur(), false, 0).await;
    pay(&store, world, alice, 1_000).await.expect("fund");
    for round in 0..10 {
        let available = store
            .account(alice)
            .await
            .expect("r")
            .expect("a")
            .available_minor()
            .expect("bounded");
        let hold = store
            .execute(Request {
                idempotency_key: key(),
                command: transfer(alice, shop, 100, Some(60)),
            })
            .await
            .expect("hold");
        let pid = hold.transfer().expect("t").id;
        assert_eq!(
            store
                .account(alice)
                .await
                .expect("r")
                .expect("a")
                .available_minor(),
            Some(available - 100)
        );
        if round % 2 == 1 {
            db.advance_s(61);
        }
        let commands = [
            Command::Post {
                pending_id: pid,
                amount_minor: Some(40),
            },
            Command::Void { pending_id: pid },
            Command::Expire { pending_id: pid },
            Command::Post {
                pending_id: pid,
                amount_minor: None,
            },
        ];
        let mut futs = Vec::new();
        for (i, c) in commands.iter().enumerate() {
            let s = if i % 2 == 0 { &store } else { &other };
            futs.push(s.execute(Request {
                idempotency_key: key(),
                command: c.clone(),
            }));
        }
        let results = futures_join(futs).await;
        let winners: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let stored = store.transfer(pid).await.expect("read").expect("exists");
        assert_ne!(stored.state, TransferState::Pending);
        if round % 2 == 1 {
            assert_eq!(
                stored.state,
                TransferState::Expired,
                "after the timeout only expiry may win"
            );
        }
        let a = store.account(alice).await.expect("r").expect("a");
        assert_eq!(a.debits_pending, 0);
    }
    audit_ok(&store).await;
}

async fn sweeper_expires_due_holds_once(db: Db) {
    let store = db.open().await;
    let world = open_account(&store, eur(), false, 0).await;
    let alice = open_account(&store, eur(), true, 0).await;
    pay(&store, world, alice, 300).await.expect("fund");
    let mut holds = Vec::new();
    for t in [10, 20, 30] {
        let h = store
            .execute(Request {
                idempotency_key: key(),
                command: transfer(alice, world, 100, Some(t)),
            })
            .await
            .expect("hold");
        holds.push(h.transfer().expect("t").id);
    }
    assert_eq!(
        store
            .account(alice)
            .await
            .expect("r")
            .expect("a")
            .available_minor(),
        Some(0)
    );
    db.advance_s(20);
    let expired = store.expire_due(db.now(), 100).await.expect("sweep");
    assert!(
        expired >= 2,
        "both due holds of this test expire (others may share the database)"
    );
    assert_eq!(
        store.expire_due(db.now(), 100).await.expect("sweep again"),
        0,
        "expiry happens once"
    );
    let states: Vec<_> = futures_join(holds.iter().map(|h| store.transfer(*h)).collect()).await;
    let states: Vec<_> = states
        .into_iter()
        .map(|t| t.expect("r").expect("t").state)
        .collect();
    assert_eq!(
        states,
        vec![
            TransferState::Expired,
            TransferState::Expired,
            TransferState::Pending
        ]
    );
    assert_eq!(
        store
            .account(alice)
            .await
            .expect("r")
            .expect("a")
            .available_minor(),
        Some(200)
    );
    audit_ok(&store).await;
}

async fn exchange_goes_through_liquidity(db: Db) {
    let store = db.open().await;
    let world_eur = open_account(&store, eur(), false, 0).await;
    let world_usd = open_account(&store, usd(), false, 0).await;
    let alice = open_account(&store, eur(), true, 0).await;
    let bob = open_account(&store, usd(), true, 0).await;
    let liq_eur = open_account(&store, eur(), false, 0).await;
    let liq_usd = open_account(&store, usd(), true, 0).await;
    pay(&store, world_eur, alice, 10_000)
        .await
        .expect("fund alice");
    store
        .execute(Request {
            idempotency_key: key(),
            command: Command::Transfer {
                debit_account: world_usd,
                credit_account: liq_usd,
                amount_minor: 5_000,
                currency: usd(),
                timeout_s: None,
                memo: String::new(),
            },
        })
        .await
        .expect("fund liquidity");
    let rate = Rate::parse("1.0834", eur(), usd()).expect("rate");
    let fx = |amount| Command::Exchange {
        debit_account: alice,
        liquidity_from: liq_eur,
        liquidity_to: liq_usd,
        credit_account: bob,
        amount_minor: amount,
        rate,
        memo: "fx".into(),
    };
    let out = store
        .execute(Request {
            idempotency_key: key(),
            command: fx(2_000),
        })
        .await
        .expect("exchange");
    let Event::Transfers { transfers } = &out.event else {
        panic!("transfers")
    };
    assert_eq!(
        (transfers[0].amount_minor, transfers[1].amount_minor),
        (2_000, 2_166)
    );
    assert_eq!(transfers[1].rate, Some(rate));
    // Not enough USD liquidity: neither leg happens.
    let r = store
        .execute(Request {
            idempotency_key: key(),
            command: fx(5_000),
        })
        .await;
    assert!(matches!(
        r,
        Err(StoreError::Ledger(LedgerError::ExceedsCredits { .. }))
    ));
    assert_eq!(balance(&store, alice).await, 8_000);
    assert_eq!(balance(&store, bob).await, 2_166);
    audit_ok(&store).await;
}

async fn outbox_commits_with_the_change(db: Db) {
    let store = db.open().await;
    let world = open_account(&store, eur(), false, 0).await;
    let alice = open_account(&store, eur(), true, 0).await;
    let msg = |k: &str| NewMessage {
        dedup_key: k.to_string(),
        kind: "email".into(),
        address: format!("{k}@example.com"),
        subject: "paid".into(),
        body: "you were paid".into(),
        data: serde_json::json!({"amount_minor": 5}),
        secret: None,
        not_before: None,
    };
    let ok_key = key();
    store
        .execute_with(
            Request {
                idempotency_key: key(),
                command: transfer(world, alice, 5, None),
            },
            vec![msg(&ok_key).into()],
        )
        .await
        .expect("transfer with message");
    let refused_key = key();
    let r = store
        .execute_with(
            Request {
                idempotency_key: key(),
                command: transfer(alice, world, 50, None),
            },
            vec![msg(&refused_key).into()],
        )
        .await;
    assert!(r.is_err());
    assert!(
        store.message(&ok_key).await.expect("read").is_some(),
        "message committed with the transfer"
    );
    assert!(
        store.message(&refused_key).await.expect("read").is_none(),
        "a refused change sends nothing"
    );
    // Leasing: a claimed message is not handed out again until its lease runs out.
    let now = Timestamp::now();
    let claimed = store.claim_due(now, 1000, 30).await.expect("claim");
    let mine = claimed
        .iter()
        .find(|m| m.message.dedup_key == ok_key)
        .expect("due");
    let again = store.claim_due(now, 1000, 30).await.expect("claim again");
    assert!(again.iter().all(|m| m.message.dedup_key != ok_key));
    assert_eq!(
        store
            .mark_attempt_failed(mine.id, now, "boom", false)
            .await
            .expect("retry"),
        "pending"
    );
    store.mark_sent(mine.id, now).await.expect("sent");
    let sent = store.message(&ok_key).await.expect("read").expect("stored");
    assert_eq!((sent.state.as_str(), sent.attempts), ("sent", 2));
    assert_eq!(sent.message.body, "you were paid");
    // The worker's path: several deliveries recorded in one batch of the writer.
    let (k1, k2) = (key(), key());
    store
        .enqueue(&[msg(&k1), msg(&k2)], now)
        .await
        .expect("enqueue two");
    let leased: Vec<_> = store
        .claim_due(now, 1000, 30)
        .await
        .expect("claim two")
        .into_iter()
        .filter(|m| m.message.dedup_key == k1 || m.message.dedup_key == k2)
        .map(|m| m.id)
        .collect();
    assert_eq!(leased.len(), 2);
    store.mark_sent_many(&leased, now).await.expect("marks");
    for k in [&k1, &k2] {
        let m = store.message(k).await.expect("read").expect("stored");
        assert_eq!((m.state.as_str(), m.attempts), ("sent", 1), "{k}");
    }
    // A message to a peer node is leased briefly: a worker killed while sending it leaves it
    // due again 15 s later, not after the whole lease.
    let peer_key = key();
    let peer = NewMessage {
        kind: "peer".into(),
        ..msg(&peer_key)
    };
    store
        .enqueue(&[peer], now)
        .await
        .expect("enqueue a peer message");
    let leased = store.claim_due(now, 1000, 300).await.expect("claim");
    assert!(leased.iter().any(|m| m.message.dedup_key == peer_key));
    let soon = now.plus_seconds(tally_store::outbox::PEER_LEASE_S - 1);
    assert!(
        store
            .claim_due(soon, 1000, 300)
            .await
            .expect("claim")
            .iter()
            .all(|m| m.message.dedup_key != peer_key)
    );
    let later = now.plus_seconds(tally_store::outbox::PEER_LEASE_S);
    assert!(
        store
            .claim_due(later, 1000, 300)
            .await
            .expect("claim")
            .iter()
            .any(|m| m.message.dedup_key == peer_key)
    );
    // A message held for the pad relay is not due before its release time.
    let held_key = key();
    let held = NewMessage {
        not_before: Some(now.plus_seconds(30)),
        ..msg(&held_key)
    };
    store
        .enqueue(&[held], now)
        .await
        .expect("enqueue a held message");
    let early = store
        .claim_due(now.plus_seconds(29), 1000, 300)
        .await
        .expect("claim");
    assert!(early.iter().all(|m| m.message.dedup_key != held_key));
    let due = store
        .claim_due(now.plus_seconds(30), 1000, 300)
        .await
        .expect("claim");
    assert!(due.iter().any(|m| m.message.dedup_key == held_key));
    // The same dedup key is stored once.
    store
        .enqueue(&[msg(&ok_key)], now)
        .await
        .expect("enqueue duplicate");
    let again = store.message(&ok_key).await.expect("read").expect("stored");
    assert_eq!((again.id, again.state.as_str()), (sent.id, "sent"));
    // A dev message is delivered when it commits: in the dev inbox at once, never leased.
    let dev_key = key();
    let dev = NewMessage {
        kind: "dev".into(),
        address: format!("inbox-{dev_key}"),
        ..msg(&dev_key)
    };
    store
        .execute_with(
            Request {
                idempotency_key: key(),
                command: transfer(world, alice, 1, None),
            },
            vec![dev.into()],
        )
        .await
        .expect("transfer with a dev message");
    let inbox = store
        .dev_inbox(&format!("inbox-{dev_key}"), 10)
        .await
        .expect("inbox");
    assert_eq!(inbox.len(), 1);
    let claimed = store.claim_due(now, 1000, 30).await.expect("claim");
    assert!(claimed.iter().all(|m| m.message.dedup_key != dev_key));
}

/// A row decided under a guard (an out-of-band session's state): two stores (two nodes)
/// racing to move it from the same state, many times over, never both succeed, and the loser
/// writes nothing, not even its journal entry or attached rows.
async fn guarded_rows_are_decided_once(db: Db) {
    use tally_proto::oob::State;
    use tally_store::oob::{SessionRow, insert_session, update_session};
    let (a, b) = (db.open().await, db.open().await);
    let number: [u8; 16] = *Id::new().as_bytes();
    let row = SessionRow {
        id: number,
        user_id: "alice".into(),
        opened_by: "shop".into(),
        application: "login".into(),
        state: State::Open,
        attempts: 0,
        session: "{}".into(),
        payload: "{}".into(),
        result: None,
        channel: "dev".into(),
        address: format!("alice-{}", Id::new()),
        client_key: None,
        created_at: db.now(),
        expires_at: db.now(),
        updated_at: db.now(),
        wake_at: Some(db.now()),
    };
    let record = |key: String| Request {
        idempotency_key: key,
        command: Command::Record {
            kind: "oob_test".into(),
            data: serde_json::json!({}),
        },
    };
    let since = Timestamp(db.now().as_micros() - 1);
    a.execute_with(
        record(format!("open:{}", Id::new())),
        insert_session(&row, since, 2).into_iter().collect(),
    )
    .await
    .expect("opened");
    // The per-address quota is a guard too: the third session for the address is refused.
    let mut second = row.clone();
    second.id = *Id::new().as_bytes();
    b.execute_with(
        record(format!("open:{}", Id::new())),
        insert_session(&second, since, 2).into_iter().collect(),
    )
    .await
    .expect("second fits");
    let mut third = row.clone();
    third.id = *Id::new().as_bytes();
    let refused = a
        .execute_with(
            record(format!("open:{}", Id::new())),
            insert_session(&third, since, 2).into_iter().collect(),
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(StoreError::Conflict(tally_store::Conflict::Limit(_)))
        ),
        "{refused:?}"
    );
    assert!(a.oob_session(&third.id).await.expect("read").is_none());

    let mut current = row;
    for round in 0..12 {
        let mut next = current.clone();
        next.attempts += 1;
        let mut other = current.clone();
        other.state = State::Verified;
        other.attempts += 1;
        let (ka, kb) = (
            format!("r{round}:a:{}", Id::new()),
            format!("r{round}:b:{}", Id::new()),
        );
        let (ra, rb) = tokio::join!(
            a.execute_with(
                record(ka.clone()),
                update_session(&current, &next).into_iter().collect()
            ),
            b.execute_with(
                record(kb.clone()),
                update_session(&current, &other).into_iter().collect()
            ),
        );
        let wins = [ra.is_ok(), rb.is_ok()];
        assert_eq!(
            wins.iter().filter(|w| **w).count(),
            1,
            "round {round}: {ra:?} {rb:?}"
        );
        let loser = if ra.is_ok() { rb } else { ra };
        assert!(
            matches!(
                loser,
                Err(StoreError::Conflict(tally_store::Conflict::Moved(_)))
            ),
            "{loser:?}"
        );
        let stored = a.oob_session(&number).await.expect("read").expect("row");
        let (winner, losing_key) = if wins[0] { (next, kb) } else { (other, ka) };
        assert_eq!(
            (stored.state.as_str(), stored.attempts),
            (winner.state.as_str(), winner.attempts)
        );
        assert!(
            a.journal_event(&losing_key).await.expect("read").is_none(),
            "the loser left no entry"
        );
        current = stored;
        if current.state != State::Open {
            current.state = State::Open;
            let reopen = update_session(&stored_clone(&a, &number).await, &current);
            a.execute_with(
                record(format!("reopen:{}", Id::new())),
                reopen.into_iter().collect(),
            )
            .await
            .expect("reopen");
        }
    }
    audit_ok(&a).await;
}

async fn stored_clone(store: &Store, number: &[u8; 16]) -> tally_store::oob::SessionRow {
    store.oob_session(number).await.expect("read").expect("row")
}

async fn records_and_api_keys_commit_with_their_entry(db: Db) {
    let store = db.open().await;
    let id = Id::new();
    let record = tally_store::keys::ApiKeyRecord {
        id,
        role: "merchant".into(),
        owner: format!("shop-{id}"),
        label: String::new(),
        created_at: db.now(),
        revoked_at: None,
    };
    let hash = [id.as_bytes()[15]; 32];
    let created = |kind: &str| Request {
        idempotency_key: format!("api_key_created:{id}:{kind}"),
        command: Command::Record {
            kind: kind.into(),
            data: serde_json::json!({"id": id}),
        },
    };
    let attach = || {
        vec![tally_store::Attachment::ApiKeyCreated {
            key_hash: hash,
            record: record.clone(),
        }]
    };
    // A refused record writes nothing that was attached to it.
    let refused = store.execute_with(created("Not A Kind"), attach()).await;
    assert!(matches!(
        refused,
        Err(StoreError::Ledger(LedgerError::Invalid { .. }))
    ));
    let refused = store.execute_with(created("transfers"), attach()).await;
    assert!(matches!(
        refused,
        Err(StoreError::Ledger(LedgerError::Invalid { .. }))
    ));
    assert!(store.api_key_by_hash(&hash).await.expect("read").is_none());
    let out = store
        .execute_with(created("api_key_created"), attach())
        .await
        .expect("record");
    assert_eq!(out.event.kind(), "api_key_created");
    assert_eq!(
        store
            .api_key_by_hash(&hash)
            .await
            .expect("read")
            .map(|k| k.id),
        Some(id)
    );
    let revoke = Request {
        idempotency_key: format!("api_key_revoked:{id}"),
        command: Command::Record {
            kind: "api_key_revoked".into(),
            data: serde_json::json!({"id": id}),
        },
    };
    let attach = || vec![tally_store::Attachment::ApiKeyRevoked { id }];
    store
        .execute_with(revoke.clone(), attach())
        .await
        .expect("revoke");
    let again = store
        .execute_with(revoke, attach())
        .await
        .expect("revoke again");
    assert!(again.replayed, "a second revoke is a replay");
    assert!(
        store.api_key_by_hash(&hash).await.expect("read").is_none(),
        "revoked keys do not authenticate"
    );
    let report = audit_ok(&store).await;
    assert!(report.ledger.records >= 2);
}

/// Two writers on one database (two processes of one node on PostgreSQL; a CLI beside a
/// server on SQLite): each keeps the accounts it committed in memory, and must drop them as
/// soon as the other commits, or its next batch would write back stale balances.
async fn two_writers_on_one_database_see_each_others_commits(db: Db) {
    let a = db.open().await;
    let b = db.open().await;
    let world = open_account(&a, eur(), false, 0).await;
    let alice = open_account(&a, eur(), true, 0).await;
    pay(&a, world, alice, 100).await.expect("a pays");
    pay(&b, world, alice, 20).await.expect("b pays");
    pay(&a, world, alice, 3).await.expect("a pays again");
    pay(&b, alice, world, 1).await.expect("b pays back");
    for store in [&a, &b] {
        let account = store.account(alice).await.expect("read").expect("alice");
        assert_eq!(account.credits_posted, 123, "every writer's credit kept");
        assert_eq!(account.debits_posted, 1);
        audit_ok(store).await;
    }
}

async fn audit_detects_tampering_and_checks_checkpoints(db: Db) {
    let store = db.open().await;
    let world = open_account(&store, eur(), false, 0).await;
    let alice = open_account(&store, eur(), true, 0).await;
    for _ in 0..20 {
        pay(&store, world, alice, 3).await.expect("pay");
    }
    let report = audit_ok(&store).await;
    assert!(
        report.signatures_verified >= 2,
        "a checkpoint every 8 entries"
    );
    assert_eq!(
        report.ledger.checkpoints_matched,
        report.signatures_verified
    );
    // Someone edits a balance behind the ledger's back.
    sqlx::query("UPDATE accounts SET credits_posted = credits_posted + 1 WHERE id = $1")
        .bind(alice.as_bytes().to_vec())
        .execute(store.pool())
        .await
        .expect("tamper");
    let bad = store
        .audit(&verify, &policy(), &|_| {})
        .await
        .expect("audit runs");
    assert!(!bad.ok());
    assert!(
        bad.ledger
            .problems
            .iter()
            .any(|p| p.contains(&alice.to_string())),
        "{:?}",
        bad.ledger.problems
    );
    sqlx::query("UPDATE accounts SET credits_posted = credits_posted - 1 WHERE id = $1")
        .bind(alice.as_bytes().to_vec())
        .execute(store.pool())
        .await
        .expect("untamper");
    audit_ok(&store).await;
    // A forged checkpoint signature is caught.
    sqlx::query(
        "UPDATE checkpoints SET signature = $1 WHERE seq = (SELECT MAX(seq) FROM checkpoints)",
    )
    .bind(vec![0_u8; 64])
    .execute(store.pool())
    .await
    .expect("forge");
    let forged = store
        .audit(&verify, &policy(), &|_| {})
        .await
        .expect("audit runs");
    assert!(
        forged
            .ledger
            .problems
            .iter()
            .any(|p| p.contains("signature")),
        "{:?}",
        forged.ledger.problems
    );
    // A key the auditor does not trust is named, even with a valid signature.
    let strict = tally_store::audit::AuditPolicy {
        trusted_signers: vec![[9; 32]],
        checkpoint_gap_max: None,
    };
    let untrusted = store
        .audit(&verify, &strict, &|_| {})
        .await
        .expect("audit runs");
    assert!(
        untrusted
            .ledger
            .problems
            .iter()
            .any(|p| p.contains("untrusted key")),
        "{:?}",
        untrusted.ledger.problems
    );
    // Deleting the checkpoints leaves history no signature covers.
    sqlx::query("DELETE FROM checkpoints")
        .execute(store.pool())
        .await
        .expect("delete");
    let tight = tally_store::audit::AuditPolicy {
        trusted_signers: Vec::new(),
        checkpoint_gap_max: Some(10),
    };
    let unsigned = store
        .audit(&verify, &tight, &|_| {})
        .await
        .expect("audit runs");
    assert!(
        unsigned
            .ledger
            .problems
            .iter()
            .any(|p| p.contains("not covered")),
        "{:?}",
        unsigned.ledger.problems
    );
}

/// Random workloads over the real store: money is conserved, limits hold, replays are
/// harmless, and every pending transfer is resolved at most once.
async fn random_workload(db: Db, seed: u64) {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let store = db.open().await;
    let other = db.open().await;
    let world = open_account(&store, eur(), false, 0).await;
    let mut accts = vec![world];
    for limit in [0, 0, 100] {
        accts.push(open_account(&store, eur(), true, limit).await);
    }
    pay(&store, world, accts[1], 2_000).await.expect("fund");
    let mut holds: Vec<Id> = Vec::new();
    let mut seen: std::collections::HashMap<String, Event> = Default::default();
    for _round in 0..6 {
        let mut reqs = Vec::new();
        for _ in 0..40 {
            let command = match rng.random_range(0..10) {
                0..=5 => {
                    let (d, c) = (accts[rng.random_range(0..4)], accts[rng.random_range(0..4)]);
                    transfer(
                        d,
                        c,
                        rng.random_range(1..500),
                        rng.random_bool(0.3).then_some(30),
                    )
                }
                6 | 7 if !holds.is_empty() => Command::Post {
                    pending_id: holds[rng.random_range(0..holds.len())],
                    amount_minor: rng.random_bool(0.5).then(|| rng.random_range(1..300)),
                },
                _ if !holds.is_empty() => Command::Void {
                    pending_id: holds[rng.random_range(0..holds.len())],
                },
                _ => continue,
            };
            // A third of the requests reuse a key seen before with the same command: replays.
            let k = if !seen.is_empty() && rng.random_bool(0.3) {
                let keys: Vec<_> = seen.keys().cloned().collect();
                keys[rng.random_range(0..keys.len())].clone()
            } else {
                key()
            };
            reqs.push((k, command));
        }
        let futs: Vec<_> = reqs
            .iter()
            .enumerate()
            .map(|(i, (k, c))| {
                let s = if i % 2 == 0 { &store } else { &other };
                let c = if let Some(Event::Transfers { .. }) = seen.get(k) {
                    None
                } else {
                    Some(c.clone())
                };
                async move {
                    match c {
                        Some(c) => Some(
                            s.execute(Request {
                                idempotency_key: k.clone(),
                                command: c,
                            })
                            .await,
                        ),
                        None => None,
                    }
                }
            })
            .collect();
        let results = futures_join(futs).await;
        for ((k, _), r) in reqs.iter().zip(results) {
            if let Some(Ok(out)) = r {
                if let Some(first) = seen.get(k) {
                    assert_eq!(&out.event, first, "a replay returns the original");
                } else {
                    seen.insert(k.clone(), out.event.clone());
                }
                if let Event::Transfers { transfers } = &out.event
                    && transfers[0].state == TransferState::Pending
                {
                    holds.push(transfers[0].id);
                }
            }
        }
        // Replays of known keys must come back identical and move nothing.
        let before = store.counts().await.expect("counts");
        for (k, e) in seen.iter().take(5) {
            let Event::Transfers { transfers } = e else {
                continue;
            };
            let t = &transfers[0];
            let command = match t.kind {
                tally_ledger::TransferKind::Single | tally_ledger::TransferKind::Pending => {
                    transfer(
                        t.debit_account,
                        t.credit_account,
                        t.amount_minor,
                        t.expires_at
                            .map(|x| (x.as_micros() - t.created_at.as_micros()) / 1_000_000),
                    )
                }
                _ => continue,
            };
            let r = store
                .execute(Request {
                    idempotency_key: k.clone(),
                    command,
                })
                .await
                .expect("replay");
            assert!(r.replayed);
            assert_eq!(&r.event, e);
        }
        assert_eq!(
            store.counts().await.expect("counts").journal_seq,
            before.journal_seq
        );
        db.advance_s(rng.random_range(0..20));
        store.expire_due(db.now(), 1000).await.expect("sweep");
        for a in &accts {
            assert!(
                store
                    .account(*a)
                    .await
                    .expect("r")
                    .expect("a")
                    .within_limits()
            );
        }
    }
    audit_ok(&store).await;
}

async fn random_workloads(db_fn: fn() -> Option<Db>) {
    // Seeds are fixed so a failure names its reproduction: the seed is in the panic message.
    for seed in [1_u64, 2, 3, 0xdead_beef] {
        let Some(db) = db_fn() else { return };
        let r = tokio::spawn(random_workload(db, seed)).await;
        if let Err(e) = r {
            panic!("random workload failed with seed {seed}: {e}");
        }
    }
}

/// Two writers (two stores on one database, as two nodes) move one pad's cursors from the
/// same row at once: one wins, the other gets `Conflict::Moved` and writes nothing (no pad row
/// change, no record line, no journal entry); the winner's record line and cursors are stored.
async fn pad_rows_are_decided_once(db: Db) {
    use tally_store::pads::{PadRecord, PadRow, insert, insert_record, update};
    let (a, b) = (db.open().await, db.open().await);
    let id: [u8; 16] = *Id::new().as_bytes();
    let row = PadRow {
        id,
        state: "active".into(),
        up_next: 64,
        down_low: 65_536,
        mode: "one_time".into(),
        currency: eur(),
        value_account: Id::new(),
        face_minor: 100,
        issue_key: format!("sale:{}", Id::new()),
        machine: "{}".into(),
        created_at: db.now(),
        updated_at: db.now(),
    };
    let record = |key: String| Request {
        idempotency_key: key,
        command: Command::Record {
            kind: "pad_test".into(),
            data: serde_json::json!({}),
        },
    };
    a.execute_with(record(format!("sale:{}", Id::new())), vec![insert(&row)])
        .await
        .expect("sold");
    let again = b
        .execute_with(record(format!("sale:{}", Id::new())), vec![insert(&row)])
        .await;
    assert!(again.is_err(), "a second row for one pad is refused");
    let mut current = row;
    for round in 0..10u64 {
        let step = |down: u64, digest: u8| {
            let next = PadRow {
                up_next: current.up_next + 288,
                down_low: current.down_low - down,
                ..current.clone()
            };
            let line = PadRecord {
                n: round,
                up_offset: current.up_next,
                digest: [digest; 32],
                line: vec![digest; 65],
                reply: Some(vec![digest; 10]),
                refusal: None,
            };
            let mut rows = update(&current, &next).to_vec();
            rows.extend(insert_record(&current.id, &line));
            (next, rows)
        };
        let (next_a, rows_a) = step(288, 1);
        let (next_b, rows_b) = step(576, 2);
        let (ka, kb) = (
            format!("pa{round}:{}", Id::new()),
            format!("pb{round}:{}", Id::new()),
        );
        let (ra, rb) = tokio::join!(
            a.execute_with(record(ka.clone()), rows_a),
            b.execute_with(record(kb.clone()), rows_b),
        );
        assert_eq!(
            [ra.is_ok(), rb.is_ok()].iter().filter(|w| **w).count(),
            1,
            "round {round}"
        );
        let (winner, loser, losing_key, digest) = if ra.is_ok() {
            (next_a, rb, kb, 1)
        } else {
            (next_b, ra, ka, 2)
        };
        assert!(
            matches!(
                loser,
                Err(StoreError::Conflict(tally_store::Conflict::Moved(_)))
            ),
            "{loser:?}"
        );
        assert!(a.journal_event(&losing_key).await.expect("read").is_none());
        let stored = a.pad(&id).await.expect("read").expect("row");
        assert_eq!(
            (stored.up_next, stored.down_low),
            (winner.up_next, winner.down_low)
        );
        let line = a
            .pad_record_at(&id, current.up_next)
            .await
            .expect("read")
            .expect("line");
        assert_eq!(line.digest, [digest; 32], "the winner's line only");
        current = stored;
    }
    // Every line is kept, one per round.
    assert_eq!(a.pad_records(&id, 0, 100).await.expect("read").len(), 10);
    audit_ok(&a).await;
}

/// A batch of transfer events decides each event, a linked chain whole; a retry creates
/// nothing twice; closing, balancing and imported history persist (the floor that imports
/// must come after is kept in the database); the audit replays it all.
async fn batches_decide_each_event_and_chains_whole(db: Db) {
    use tally_ledger::batch::{EventKind, EventStatus as S, TransferEvent};
    let store = db.open().await;
    let world = open_account(&store, eur(), false, 0).await;
    let a = open_account(&store, eur(), true, 0).await;
    let b = open_account(&store, eur(), true, 0).await;
    pay(&store, world, a, 1_000).await.expect("fund");
    let single = |d: Id, c: Id, amount: i64| TransferEvent::single(Id::new(), d, c, amount, eur());
    let linked = |mut e: TransferEvent| {
        e.flags.linked = true;
        e
    };
    let statuses =
        |out: &tally_store::Batched| -> Vec<S> { out.results.iter().map(|r| r.status).collect() };
    let hold = Id::new();
    let mut held = TransferEvent::single(hold, a, b, 200, eur());
    held.kind = EventKind::Pending;
    held.timeout_s = Some(60);
    let mut chain = vec![
        linked(single(a, b, 300)),
        linked(held),
        single(b, world, 10_000),
    ];
    let out = store.execute_events(chain.clone()).await.expect("batch");
    assert_eq!(
        statuses(&out),
        [
            S::LinkedEventFailed,
            S::LinkedEventFailed,
            S::ExceedsCredits
        ]
    );
    assert_eq!(
        out.journal_seq, None,
        "a batch that made nothing writes no entry"
    );
    assert_eq!(
        (balance(&store, a).await, balance(&store, b).await),
        (1_000, 0)
    );
    assert!(
        store.transfer(hold).await.expect("read").is_none(),
        "the failed chain's hold is not stored"
    );
    chain[2].amount_minor = Some(100);
    let out = store.execute_events(chain.clone()).await.expect("batch");
    assert_eq!(statuses(&out), [S::Created; 3]);
    assert!(out.journal_seq.is_some());
    assert_eq!(
        (balance(&store, a).await, balance(&store, b).await),
        (700, 200)
    );
    // A retried chain: its first event exists, which (as in TigerBeetle) breaks the chain;
    // nothing is made twice.
    let out = store.execute_events(chain.clone()).await.expect("retry");
    assert_eq!(
        statuses(&out),
        [S::Exists, S::LinkedEventFailed, S::LinkedEventFailed]
    );
    let unlinked: Vec<TransferEvent> = chain
        .iter()
        .cloned()
        .map(|mut e| {
            e.flags.linked = false;
            e
        })
        .collect();
    let out = store.execute_events(unlinked).await.expect("retry");
    // Without the linked flag they are not the same events, bar the last.
    assert_eq!(
        statuses(&out),
        [
            S::ExistsWithDifferentFlags,
            S::ExistsWithDifferentFlags,
            S::Exists
        ]
    );
    assert_eq!(
        (balance(&store, a).await, balance(&store, b).await),
        (700, 200)
    );
    // Post part of the hold with the client's references, read back from the table.
    let post = Id::new();
    let mut posting = TransferEvent::single(post, a, b, 150, eur());
    posting.kind = EventKind::Post;
    posting.pending_id = Some(hold);
    posting.currency = None;
    posting.user_data_128 = u128::MAX;
    posting.user_data_64 = u64::MAX;
    posting.user_data_32 = 7;
    let out = store.execute_events(vec![posting]).await.expect("post");
    assert_eq!(statuses(&out), [S::Created]);
    let stored = store.transfer(post).await.expect("read").expect("stored");
    assert_eq!(
        (
            stored.user_data_128,
            stored.user_data_64,
            stored.user_data_32,
            stored.amount_minor
        ),
        (u128::MAX, u64::MAX, 7, 150)
    );
    let held = store.transfer(hold).await.expect("read").expect("stored");
    assert_eq!(held.state, TransferState::Posted);
    assert_eq!(
        (balance(&store, a).await, balance(&store, b).await),
        (550, 350)
    );
    // Balancing: sweep everything b holds, whatever it is.
    let mut sweep = single(b, a, 1);
    sweep.amount_minor = None;
    sweep.flags.balancing_debit = true;
    let out = store.execute_events(vec![sweep]).await.expect("sweep");
    assert_eq!(
        out.results[0].transfer.as_ref().map(|t| t.amount_minor),
        Some(350)
    );
    assert_eq!(balance(&store, b).await, 0);
    // Closing: the account is closed in the table, for batches and single commands alike.
    let close = Id::new();
    let mut closing = TransferEvent::single(close, a, world, 1, eur());
    closing.kind = EventKind::Pending;
    closing.flags.closing_debit = true;
    assert_eq!(
        statuses(&store.execute_events(vec![closing]).await.expect("close")),
        [S::Created]
    );
    assert!(
        store
            .account(a)
            .await
            .expect("read")
            .expect("a")
            .flags
            .closed
    );
    let out = store
        .execute_events(vec![single(a, b, 5)])
        .await
        .expect("batch");
    assert_eq!(statuses(&out), [S::DebitAccountAlreadyClosed]);
    let refused = pay(&store, a, b, 5).await;
    assert!(
        matches!(refused, Err(StoreError::Ledger(LedgerError::AccountClosed { account })) if account == a),
        "{refused:?}"
    );
    let mut reopen = TransferEvent::single(Id::new(), a, world, 1, eur());
    reopen.kind = EventKind::Void;
    reopen.pending_id = Some(close);
    (
        reopen.debit_account,
        reopen.credit_account,
        reopen.currency,
        reopen.amount_minor,
    ) = (None, None, None, None);
    assert_eq!(
        statuses(&store.execute_events(vec![reopen]).await.expect("void")),
        [S::Created]
    );
    assert!(
        !store
            .account(a)
            .await
            .expect("read")
            .expect("a")
            .flags
            .closed
    );
    pay(&store, a, b, 5).await.expect("open again");
    // Imported history, ten years on (past anything another test wrote): after the floor kept
    // in the database, in order, and not before the accounts opened.
    db.advance_s(10 * 365 * 86_400);
    let now = db.now();
    let hours_ago = |h: i64| Timestamp(now.as_micros() - h * 3_600_000_000);
    let opened = |imported_at: Timestamp| {
        let store = &store;
        async move {
            store
                .execute(Request {
                    idempotency_key: key(),
                    command: Command::OpenAccount {
                        owner: "history".into(),
                        currency: eur(),
                        kind: AccountKind::Customer,
                        flags: AccountFlags::default(),
                        limit_minor: 0,
                        imported_at: Some(imported_at),
                        references: Default::default(),
                    },
                })
                .await
                .expect("open in the past")
                .account()
                .expect("account")
                .id
        }
    };
    let (x, y) = (opened(hours_ago(48)).await, opened(hours_ago(48)).await);
    let import = |at: Timestamp| {
        let mut e = TransferEvent::single(Id::new(), x, y, 10, eur());
        e.flags.imported = true;
        e.timestamp = Some(at);
        e
    };
    let out = store
        .execute_events(vec![import(hours_ago(3)), import(hours_ago(2))])
        .await
        .expect("import");
    assert_eq!(statuses(&out), [S::Created, S::Created]);
    let first = out.results[0].transfer.as_ref().expect("made").id;
    let stored = store.transfer(first).await.expect("read").expect("stored");
    assert_eq!(stored.created_at, hours_ago(3));
    assert!(stored.flags.imported);
    let out = store
        .execute_events(vec![import(Timestamp(hours_ago(2).as_micros() - 1))])
        .await
        .expect("import");
    assert_eq!(statuses(&out), [S::ImportedEventTimestampMustNotRegress]);
    let out = store
        .execute_events(vec![import(hours_ago(60))])
        .await
        .expect("import");
    assert_eq!(statuses(&out), [S::ImportedEventTimestampMustNotRegress]);
    let out = store
        .execute_events(vec![import(hours_ago(1))])
        .await
        .expect("import");
    assert_eq!(statuses(&out), [S::Created]);
    // A store opened again keeps the floor (it is in the database, not in the writer).
    drop(store);
    let store = db.open().await;
    let out = store
        .execute_events(vec![import(hours_ago(1))])
        .await
        .expect("import");
    assert_eq!(statuses(&out), [S::ImportedEventTimestampMustNotRegress]);
    // Malformed batches are refused whole.
    assert!(store.execute_events(Vec::new()).await.is_err());
    audit_ok(&store).await;
}

/// Transfer queries filter by account and side, time, the client's references and code, page
/// by cursor in both orders without skipping or repeating a row; an account opened with
/// `history` has its counters after each transfer, in journal order, and no other has rows.
async fn queries_filter_and_page_and_history_follows_each_transfer(db: Db) {
    use tally_ledger::batch::{EventStatus as S, TransferEvent};
    use tally_store::queries::{HistoryFilter, Side, TransferFilter};
    let store = db.open().await;
    let world = open_account(&store, eur(), false, 0).await;
    let plain = open_account(&store, eur(), true, 0).await;
    let kept = store
        .execute(Request {
            idempotency_key: key(),
            command: Command::OpenAccount {
                owner: format!("owner-{}", Id::new()),
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
        })
        .await
        .expect("open")
        .account()
        .expect("account")
        .id;
    // Six transfers into `kept`, one second apart, tagged by their number; then two out.
    let mut ids = Vec::new();
    for n in 1..=6_u16 {
        let mut e = TransferEvent::single(Id::new(), world, kept, i64::from(n) * 100, eur());
        e.code = n % 2 + 1; // 2, 1, 2, 1, 2, 1
        e.user_data_64 = u64::from(n);
        e.user_data_128 = u128::from(n) << 100;
        ids.push(e.id);
        let out = store.execute_events(vec![e]).await.expect("event");
        assert_eq!(out.results[0].status, S::Created);
        db.advance_s(1);
    }
    let out_a = pay(&store, kept, plain, 50).await.expect("out");
    let out_b = pay(&store, kept, world, 70).await.expect("out");
    let query = |f: TransferFilter| {
        let store = &store;
        async move { store.query_transfers(&f).await.expect("query") }
    };
    let all = TransferFilter {
        account: Some(kept),
        limit: 100,
        ..Default::default()
    };
    let got: Vec<Id> = query(all.clone()).await.iter().map(|t| t.id).collect();
    let mut expected = ids.clone();
    expected.extend([out_a.id, out_b.id]);
    assert_eq!(got, expected, "both sides, oldest first");
    let debits = query(TransferFilter {
        side: Side::Debit,
        ..all.clone()
    })
    .await;
    assert_eq!(
        debits.iter().map(|t| t.id).collect::<Vec<_>>(),
        [out_a.id, out_b.id]
    );
    let credits = query(TransferFilter {
        side: Side::Credit,
        ..all.clone()
    })
    .await;
    assert_eq!(credits.len(), 6);
    let code_one = query(TransferFilter {
        code: Some(1),
        ..all.clone()
    })
    .await;
    assert_eq!(
        code_one.iter().map(|t| t.id).collect::<Vec<_>>(),
        [ids[1], ids[3], ids[5]]
    );
    let third = query(TransferFilter {
        user_data_128: Some(3_u128 << 100),
        ..all.clone()
    })
    .await;
    assert_eq!(third.iter().map(|t| t.id).collect::<Vec<_>>(), [ids[2]]);
    let fourth = query(TransferFilter {
        user_data_64: Some(4),
        ..all.clone()
    })
    .await;
    assert_eq!(fourth.iter().map(|t| t.id).collect::<Vec<_>>(), [ids[3]]);
    let first_at = query(all.clone()).await[0].created_at;
    let window = query(TransferFilter {
        since: Some(first_at.plus_seconds(1)),
        until: Some(first_at.plus_seconds(3)),
        ..all.clone()
    })
    .await;
    assert_eq!(
        window.iter().map(|t| t.id).collect::<Vec<_>>(),
        [ids[1], ids[2], ids[3]]
    );
    // Pages of three, both orders: every row exactly once.
    for reversed in [false, true] {
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = query(TransferFilter {
                limit: 3,
                reversed,
                after,
                ..all.clone()
            })
            .await;
            if page.is_empty() {
                break;
            }
            after = page.last().map(|t| (t.created_at, t.id));
            seen.extend(page.iter().map(|t| t.id));
        }
        let mut want = expected.clone();
        if reversed {
            want.reverse();
        }
        assert_eq!(seen, want, "reversed: {reversed}");
    }
    // History: one row per transfer of `kept`, counters as each left it; none for `plain`.
    let history = store
        .account_history(
            kept,
            &HistoryFilter {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .expect("history");
    let credited: Vec<(i64, i64)> = history
        .iter()
        .map(|h| (h.balance.credits_posted, h.balance.debits_posted))
        .collect();
    assert_eq!(
        credited,
        [
            (100, 0),
            (300, 0),
            (600, 0),
            (1_000, 0),
            (1_500, 0),
            (2_100, 0),
            (2_100, 50),
            (2_100, 120)
        ]
    );
    assert_eq!(history.last().map(|h| h.balance.transfer), Some(out_b.id));
    let newest_two = store
        .account_history(
            kept,
            &HistoryFilter {
                limit: 2,
                reversed: true,
                ..Default::default()
            },
        )
        .await
        .expect("history");
    assert_eq!(
        newest_two
            .iter()
            .map(|h| h.balance.transfer)
            .collect::<Vec<_>>(),
        [out_b.id, out_a.id]
    );
    let after = newest_two.last().map(|h| (h.journal_seq, h.ordinal));
    let next = store
        .account_history(
            kept,
            &HistoryFilter {
                limit: 1,
                reversed: true,
                after,
                ..Default::default()
            },
        )
        .await
        .expect("history");
    assert_eq!(
        next.iter().map(|h| h.balance.transfer).collect::<Vec<_>>(),
        [ids[5]]
    );
    let none = store
        .account_history(
            plain,
            &HistoryFilter {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .expect("history");
    assert!(none.is_empty());
    // Accounts of one owner by their references and code, a page at a time by id.
    let owner = format!("refs-{}", Id::new());
    let mut opened = Vec::new();
    for n in 1..=4_u16 {
        let account = store
            .execute(Request {
                idempotency_key: key(),
                command: Command::OpenAccount {
                    owner: owner.clone(),
                    currency: eur(),
                    kind: AccountKind::Customer,
                    flags: AccountFlags::default(),
                    limit_minor: 0,
                    imported_at: None,
                    references: tally_ledger::References {
                        user_data_128: u128::from(n) << 100,
                        user_data_64: u64::MAX - u64::from(n),
                        user_data_32: u32::from(n),
                        code: n % 2,
                    },
                },
            })
            .await
            .expect("open")
            .account()
            .expect("account")
            .clone();
        opened.push(account);
        db.advance_s(1);
    }
    let accounts = |f: tally_store::queries::AccountFilter| {
        let store = &store;
        async move { store.query_accounts(&f).await.expect("accounts") }
    };
    let mine = tally_store::queries::AccountFilter {
        owner: owner.clone(),
        limit: 100,
        ..Default::default()
    };
    let read = accounts(mine.clone()).await;
    assert_eq!(read, opened, "references read back as written");
    let odd = accounts(tally_store::queries::AccountFilter {
        code: Some(1),
        ..mine.clone()
    })
    .await;
    assert_eq!(
        odd.iter().map(|a| a.id).collect::<Vec<_>>(),
        [opened[0].id, opened[2].id]
    );
    let by_64 = accounts(tally_store::queries::AccountFilter {
        user_data_64: Some(u64::MAX - 2),
        ..mine.clone()
    })
    .await;
    assert_eq!(
        by_64.iter().map(|a| a.id).collect::<Vec<_>>(),
        [opened[1].id]
    );
    let page = accounts(tally_store::queries::AccountFilter {
        reversed: true,
        limit: 2,
        after: Some(opened[3].id),
        ..mine.clone()
    })
    .await;
    assert_eq!(
        page.iter().map(|a| a.id).collect::<Vec<_>>(),
        [opened[2].id, opened[1].id]
    );
    audit_ok(&store).await;
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::sqlite_db()).await
                }
            )*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn random_workloads() {
                super::random_workloads(|| Some(super::sqlite_db())).await
            }
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = super::postgres_db() else { return };
                    super::$name(db).await
                }
            )*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn random_workloads() {
                super::random_workloads(super::postgres_db).await
            }
        }
    };
}

/// The offer's reads of two parties and of two certificates' revocations, each in one query:
/// every party and revocation lands in its own slot (missing ones `None`), the same name
/// twice fills both.
async fn receipt_parties_and_revocations_read_two_at_once(db: Db) {
    use tally_store::receipts::{PartyRow, TokenRow, issue_token, revoke_party_certificate};
    let store = db.open().await;
    let run = Id::new();
    let party = |n: &str| PartyRow {
        name: format!("{n}-{run}"),
        role: "customer".into(),
        certificate: vec![n.as_bytes()[0]; 8],
        fingerprint: format!("{n}-fp-{run}"),
        bls_key: None,
        token_serial: Some(format!("{n}-token-{run}")),
        created_at: db.now(),
    };
    let (alice, bob) = (party("alice"), party("bob"));
    for p in [&alice, &bob] {
        let token = TokenRow {
            serial: p.token_serial.clone().expect("set above"),
            holder: p.name.clone(),
            slots: 4,
            client_key: None,
            created_at: db.now(),
        };
        let request = Request {
            idempotency_key: format!("token_issued:{}", p.name),
            command: Command::Record {
                kind: "token_issued".into(),
                data: serde_json::json!({"holder": p.name}),
            },
        };
        store
            .execute_with(request, issue_token(&token, p).into())
            .await
            .expect("issue");
    }
    let missing = format!("carol-{run}");
    let [a, b] = store
        .receipt_parties([&alice.name, &bob.name])
        .await
        .expect("read");
    assert_eq!((a.as_ref(), b.as_ref()), (Some(&alice), Some(&bob)));
    let [b, none] = store
        .receipt_parties([&bob.name, &missing])
        .await
        .expect("read");
    assert_eq!((b.as_ref(), none), (Some(&bob), None));
    let [a1, a2] = store
        .receipt_parties([&alice.name, &alice.name])
        .await
        .expect("read");
    assert_eq!((a1.as_ref(), a2.as_ref()), (Some(&alice), Some(&alice)));

    let (s1, s2) = (format!("serial-1-{run}"), format!("serial-2-{run}"));
    assert_eq!(
        store.parties_revoked_at([&s1, &s2]).await.expect("read"),
        [None, None]
    );
    let now = db.now();
    let request = Request {
        idempotency_key: format!("party_certificate_revoked:{s2}"),
        command: Command::Record {
            kind: "party_certificate_revoked".into(),
            data: serde_json::json!({"serial": s2}),
        },
    };
    store
        .execute_with(request, vec![revoke_party_certificate(&s2, &bob.name, now)])
        .await
        .expect("revoke");
    let at = store.parties_revoked_at([&s1, &s2]).await.expect("read");
    assert_eq!(at[0], None);
    assert_eq!(at[1].map(|t| t.as_micros()), Some(now.as_micros()));
    let at = store.parties_revoked_at([&s2, &s1]).await.expect("read");
    assert!(at[0].is_some() && at[1].is_none());
}

/// The operator console's reads answer alike on both stores: rules of both sides, receivers
/// without their keys' use, the outbox by state with its failures, the newest checkpoint.
async fn console_reads_answer_on_both_stores(db: Db) {
    use tally_store::delivery::{ReceiverRow, upsert_receiver};
    use tally_store::oob::{upsert_payer_rule, upsert_rule};
    let store = db.open().await;
    let owner = format!("shop-{}", Id::new());
    let record = |key: String| Request {
        idempotency_key: key,
        command: Command::Record {
            kind: "console_test".into(),
            data: serde_json::json!({}),
        },
    };
    let account = open_account(&store, eur(), false, 0).await;
    let receiver = format!("bank-{}", Id::new());
    store
        .execute_with(
            record(key()),
            vec![
                upsert_rule(&owner, "EUR", 5_000, db.now()),
                upsert_payer_rule(&owner, "EUR", 700, db.now()),
                upsert_receiver(&ReceiverRow {
                    name: receiver.clone(),
                    account,
                    kind: "hmac".into(),
                    key: vec![1, 2, 3],
                    updated_at: db.now(),
                }),
            ],
        )
        .await
        .expect("rules and a receiver");
    let rules: Vec<_> = store
        .rules(10_000)
        .await
        .expect("rules")
        .into_iter()
        .filter(|(_, o, _, _)| *o == owner)
        .collect();
    assert_eq!(
        rules,
        vec![
            (false, owner.clone(), "EUR".to_string(), 5_000),
            (true, owner.clone(), "EUR".to_string(), 700),
        ]
    );
    let listed = store.receivers().await.expect("receivers");
    let mine = listed
        .iter()
        .find(|r| r.name == receiver)
        .expect("the receiver is listed");
    assert_eq!((mine.account, mine.kind.as_str()), (account, "hmac"));

    // A message that failed once is "retrying" and among the failures, with its error.
    let dedup = key();
    let now = Timestamp::now();
    store
        .enqueue(
            &[NewMessage {
                dedup_key: dedup.clone(),
                kind: "email".into(),
                address: "x@example.com".into(),
                subject: "s".into(),
                body: "b".into(),
                data: serde_json::json!({}),
                secret: None,
                not_before: None,
            }],
            now,
        )
        .await
        .expect("enqueue");
    let claimed = store.claim_due(now, 10_000, 30).await.expect("claim");
    let mine = claimed
        .iter()
        .find(|m| m.message.dedup_key == dedup)
        .expect("due");
    store
        .mark_attempt_failed(mine.id, now, "smtp: 451 try later", false)
        .await
        .expect("failed once");
    let by_state = store.outbox_by_state().await.expect("by state");
    let names: Vec<&str> = by_state.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(names, ["pending", "retrying", "sent", "failed"]);
    assert!(
        by_state[1].1 >= 1 && by_state[0].1 >= by_state[1].1,
        "{by_state:?}"
    );
    let failures = store.outbox_failures(200).await.expect("failures");
    let failed = failures
        .iter()
        .find(|m| m.message.dedup_key == dedup)
        .expect("listed among the failures");
    assert_eq!(failed.last_error.as_deref(), Some("smtp: 451 try later"));

    // Checkpoints are signed every 8 entries: after enough, the newest is the highest.
    for _ in 0..9 {
        store
            .execute_with(record(key()), Vec::new())
            .await
            .expect("record");
    }
    let last = store
        .last_checkpoint()
        .await
        .expect("read")
        .expect("a checkpoint after 9 entries");
    let all = store.checkpoints().await.expect("all");
    assert_eq!(all.last().map(|c| c.seq), Some(last.seq));
}

conformance!(
    accounts_open_and_read_back,
    transfers_move_money_within_limits,
    bad_input_changes_nothing,
    idempotent_replays_return_the_original,
    concurrent_transfers_never_overdraw,
    pending_resolves_exactly_once,
    sweeper_expires_due_holds_once,
    exchange_goes_through_liquidity,
    outbox_commits_with_the_change,
    records_and_api_keys_commit_with_their_entry,
    guarded_rows_are_decided_once,
    pad_rows_are_decided_once,
    audit_detects_tampering_and_checks_checkpoints,
    two_writers_on_one_database_see_each_others_commits,
    console_reads_answer_on_both_stores,
    batches_decide_each_event_and_chains_whole,
    queries_filter_and_page_and_history_follows_each_transfer,
    receipt_parties_and_revocations_read_two_at_once,
);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]
    /// Property form of the random workload on SQLite: any seed keeps the invariants.
    #[test]
    fn any_seed_keeps_the_ledger_sound(seed in any::<u64>()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
        rt.block_on(random_workload(sqlite_db(), seed));
    }
}
