//! The merchant agent's journal (issue [7] step 4): what it answers as taken is on disk (a
//! reopened journal has it, in order, and knows the last purchase's repeat); refusals write
//! nothing; a tab opens once.

use tally_kernel::crypto::SigningKey;
use tally_kernel::{Amount, Currency, Timestamp};
use tally_proto::session::ids::{NodeId, SessionId, TransactionId};
use tally_proto::session::purchase::{
    MacedPurchase, Purchase, PurchaseError, Tab, close_mac, new_tab,
};
use tally_store::agent::{AgentError, AgentJournal, AgentOp, TabView};

const KEY: [u8; 32] = [5; 32];

fn transaction() -> TransactionId {
    let am = NodeId::of(&SigningKey::from_seed(&[1; 32]).verifying_key());
    SessionId::new(am, 1).expect("id").first_transaction()
}

fn eur(minor: i64) -> Amount {
    Amount::new(minor, Currency::from_code("EUR").expect("EUR"))
}

fn tab() -> Tab {
    let customer = SigningKey::from_seed(&[2; 32]);
    let signed = new_tab(&customer, transaction(), KEY, Timestamp::now()).expect("tab");
    Tab::open(&signed, &customer.verifying_key(), transaction(), eur(100)).expect("open")
}

fn buy(seq: u64, minor: i64) -> AgentOp {
    AgentOp::Buy(purchase(seq, minor))
}

fn purchase(seq: u64, minor: i64) -> MacedPurchase {
    Purchase {
        transaction: transaction(),
        seq,
        price: eur(minor),
        item: format!("item {seq}"),
        at: 1,
    }
    .mac(&KEY)
    .expect("mac")
}

/// The agent's answer keeps its JSON spelling (ids and currency as text, the list hash as 64
/// lowercase hex digits), whatever the type holds: customers read it.
#[test]
fn a_tab_view_is_spelled_as_before() {
    let view = TabView {
        transaction: transaction(),
        count: 2,
        spent: 40,
        remaining: 60,
        currency: Currency::from_code("EUR").expect("EUR"),
        list: [0xAB; 32],
        repeat: false,
        closed: true,
    };
    let json = serde_json::to_string(&view).expect("json");
    assert_eq!(
        json,
        format!(
            "{{\"transaction\":\"{}\",\"count\":2,\"spent\":40,\"remaining\":60,\
             \"currency\":\"EUR\",\"list\":\"{}\",\"repeat\":false,\"closed\":true}}",
            transaction(),
            "ab".repeat(32)
        )
    );
    assert_eq!(serde_json::from_str::<TabView>(&json).expect("back"), view);
}

#[tokio::test]
async fn what_is_answered_taken_is_on_disk() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("agent.db");
    let t = transaction();
    let journal = AgentJournal::open(&path).await.expect("open");
    assert!(matches!(
        journal.submit(t, buy(1, 10)).await,
        Err(AgentError::UnknownTab)
    ));
    journal
        .submit(t, AgentOp::Open(Box::new(tab())))
        .await
        .expect("tab");
    assert!(matches!(
        journal.submit(t, AgentOp::Open(Box::new(tab()))).await,
        Err(AgentError::TabExists)
    ));
    // Three purchases queued at once are decided in order, in one or more batches.
    let mut answers = Vec::new();
    for seq in 1..=3 {
        answers.push(journal.enqueue(t, buy(seq, 20)).await.expect("queued"));
    }
    for a in answers {
        a.await.expect("answer").expect("taken");
    }
    let refused = journal.submit(t, buy(4, 41)).await;
    assert!(matches!(
        refused,
        Err(AgentError::Purchase(PurchaseError::Exhausted {
            remaining: 40
        }))
    ));
    let list = journal.submit(t, buy(3, 20)).await.expect("repeat");
    assert!(list.repeat);
    journal.close().await;

    // Reopened: the three purchases, the tab where it was, the repeat still recognised.
    let journal = AgentJournal::open(&path).await.expect("reopen");
    let rows = journal.purchases(t).await.expect("rows");
    assert_eq!(
        rows.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(rows[0].1, purchase(1, 20).bytes);
    let again = journal.submit(t, buy(3, 20)).await.expect("repeat");
    assert!(again.repeat);
    assert_eq!((again.count, again.spent, again.list), (3, 60, list.list));
    let fourth = journal.submit(t, buy(4, 40)).await.expect("taken");
    assert_eq!((fourth.count, fourth.remaining), (4, 0));
    let close = |mac| AgentOp::Close { mac };
    assert!(matches!(
        journal
            .submit(t, close(close_mac(&[9; 32], transaction())))
            .await,
        Err(AgentError::Purchase(PurchaseError::BadSignature))
    ));
    journal
        .submit(t, close(close_mac(&KEY, transaction())))
        .await
        .expect("closed");
    assert!(matches!(
        journal.submit(t, buy(5, 1)).await,
        Err(AgentError::Purchase(PurchaseError::Closed))
    ));
    assert_eq!(journal.purchases(t).await.expect("rows").len(), 4);
}

/// What the agent owes its operator comes from the journal: an open tab past its session's
/// end is to be ended, an ended tab's record is to be sent until it is marked taken, and the
/// earliest end of the open tabs is when to look again; all of it survives a reopen.
#[tokio::test]
async fn ended_tabs_are_reported_until_taken() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("agent.db");
    let t = transaction();
    let journal = AgentJournal::open(&path).await.expect("open");
    journal
        .submit(t, AgentOp::Open(Box::new(tab().until(1_000))))
        .await
        .expect("tab");
    let c = journal.chores(999).await.expect("chores");
    assert!(c.to_end.is_empty() && c.to_report.is_empty());
    assert_eq!(c.next_end, Some(1_000));
    let c = journal.chores(1_000).await.expect("chores");
    assert_eq!((c.to_end, c.to_report.len()), (vec![t], 0));
    // Ended: no more purchases; its record is owed, across a reopen.
    let v = journal
        .submit(t, AgentOp::Terminate)
        .await
        .expect("terminate");
    assert!(v.closed);
    journal.close().await;
    let journal = AgentJournal::open(&path).await.expect("reopen");
    let c = journal.chores(1_001).await.expect("chores");
    assert!(c.to_end.is_empty() && c.next_end.is_none());
    assert_eq!(c.to_report.len(), 1);
    assert_eq!(c.to_report[0].transaction, t);
    // Taken by the operator: owed no more.
    journal
        .submit(t, AgentOp::Reported)
        .await
        .expect("reported");
    let c = journal.chores(1_002).await.expect("chores");
    assert!(c.to_end.is_empty() && c.to_report.is_empty() && c.next_end.is_none());
    // The purchase that uses a deposit up ends its tab too.
    let other = tempfile::tempdir().expect("dir");
    let journal = AgentJournal::open(&other.path().join("agent.db"))
        .await
        .expect("open");
    journal
        .submit(t, AgentOp::Open(Box::new(tab())))
        .await
        .expect("tab");
    let v = journal.submit(t, buy(1, 100)).await.expect("all of it");
    assert!(v.closed && v.remaining == 0);
    assert_eq!(journal.chores(0).await.expect("chores").to_report.len(), 1);
}

/// A commit that fails (here a trigger refuses every purchase row) fails its batch and any
/// batch decided on top of it while it was committing, and keeps none of them, in memory or
/// on disk: once the file takes writes again, the same first purchase is taken as new and the
/// tab is still open, also after a reopen.
#[tokio::test]
async fn a_failed_commit_keeps_nothing_of_its_batch_or_the_next() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("agent.db");
    let t = transaction();
    let journal = AgentJournal::open(&path).await.expect("open");
    journal
        .submit(t, AgentOp::Open(Box::new(tab())))
        .await
        .expect("tab");
    sqlx::any::install_default_drivers();
    let side = sqlx::AnyPool::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("side connection");
    let refuse = "CREATE TRIGGER refuse BEFORE INSERT ON segments \
                  BEGIN SELECT RAISE(ABORT, 'the disk is full'); END";
    sqlx::query(refuse).execute(&side).await.expect("trigger");
    // Queued together: in one batch, or the terminate decided on top of the failing buy
    // (both refused), or, if the buy's commit failed before the terminate arrived, the
    // terminate decided on what is on disk: a tab with no purchase.
    let first = journal.enqueue(t, buy(1, 20)).await.expect("queued");
    let end = journal
        .enqueue(t, AgentOp::Terminate)
        .await
        .expect("queued");
    assert!(matches!(
        first.await.expect("answer"),
        Err(AgentError::Store(_))
    ));
    let ended = match end.await.expect("answer") {
        Err(AgentError::Store(_)) => false,
        Ok(v) => {
            assert_eq!((v.count, v.spent, v.closed), (0, 0, true));
            true
        }
        Err(e) => panic!("terminate: {e}"),
    };
    sqlx::query("DROP TRIGGER refuse")
        .execute(&side)
        .await
        .expect("drop");
    side.close().await;
    if ended {
        assert!(matches!(
            journal.submit(t, buy(1, 20)).await,
            Err(AgentError::Purchase(PurchaseError::Closed))
        ));
        assert!(journal.purchases(t).await.expect("rows").is_empty());
        return;
    }
    let v = journal.submit(t, buy(1, 20)).await.expect("taken now");
    assert_eq!(
        (v.count, v.spent, v.repeat, v.closed),
        (1, 20, false, false)
    );
    journal.close().await;
    let journal = AgentJournal::open(&path).await.expect("reopen");
    assert_eq!(journal.purchases(t).await.expect("rows").len(), 1);
    let v = journal.submit(t, buy(2, 20)).await.expect("still open");
    assert_eq!((v.count, v.spent), (2, 40));
}

/// Purchases of several tabs interleaved in one batch, with a repeat and one out of order
/// among them: each tab's taken purchases are on disk in its order, one after another, and
/// the refused ones are not (the batch gathers each tab's purchases as it decides them).
#[tokio::test]
async fn interleaved_tabs_keep_their_own_order_on_disk() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("agent.db");
    let customer = SigningKey::from_seed(&[2; 32]);
    let am = NodeId::of(&SigningKey::from_seed(&[1; 32]).verifying_key());
    let of = |n: u64| SessionId::new(am, n).expect("id").first_transaction();
    let journal = AgentJournal::open(&path).await.expect("open");
    for n in [7, 8] {
        let signed = new_tab(&customer, of(n), KEY, Timestamp::now()).expect("tab");
        let tab = Tab::open(&signed, &customer.verifying_key(), of(n), eur(100)).expect("open");
        journal
            .submit(of(n), AgentOp::Open(Box::new(tab)))
            .await
            .expect("tab");
    }
    let buy_on = |n: u64, seq: u64| {
        AgentOp::Buy(
            Purchase {
                transaction: of(n),
                seq,
                price: eur(1),
                item: format!("item {seq} of {n}"),
                at: 1,
            }
            .mac(&KEY)
            .expect("mac"),
        )
    };
    // (tab, seq, taken?): 8's second purchase again is a repeat, 7's fourth comes too early.
    let plan = [
        (7, 1, true),
        (8, 1, true),
        (7, 2, true),
        (8, 2, true),
        (8, 2, true),
        (7, 4, false),
        (7, 3, true),
        (8, 3, true),
    ];
    let mut answers = Vec::new();
    for (n, seq, _) in plan {
        let rx = journal
            .enqueue(of(n), buy_on(n, seq))
            .await
            .expect("queued");
        answers.push(rx);
    }
    for ((n, seq, taken), rx) in plan.into_iter().zip(answers) {
        let answer = rx.await.expect("answer");
        assert_eq!(answer.is_ok(), taken, "{n}.{seq}: {answer:?}");
    }
    journal.close().await;
    let journal = AgentJournal::open(&path).await.expect("reopen");
    for n in [7, 8] {
        let rows = journal.purchases(of(n)).await.expect("rows");
        let seqs: Vec<u64> = rows.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![1, 2, 3], "tab {n}");
        for (seq, bytes) in rows {
            let AgentOp::Buy(p) = buy_on(n, seq) else {
                unreachable!("a purchase")
            };
            assert_eq!(bytes, p.bytes, "tab {n}, purchase {seq}");
        }
    }
}
