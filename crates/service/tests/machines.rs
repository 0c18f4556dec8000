//! The node's executor and timers, through `Node` on a real SQLite store: a session whose code
//! expires is closed by the timer sweeper with its payment hold released; a commit with an
//! e-mail wakes the outbox worker (its timer is an hour, so only the wake-up can deliver); a
//! data directory whose identity differs from the database's is refused, naming the files.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tally_kernel::{Amount, Currency, Timestamp};
use tally_ledger::{AccountKind, TransferState};
use tally_proto::oob::State;
use tally_service::ledger_ops::{OpenAccount, TransferOrder};
use tally_service::oob::{AppRequest, OpenSession, Opened};
use tally_service::{Node, NodeClock, NodeConfig, Principal, ServiceError};

struct Clocked {
    node: Node,
    admin: Principal,
    now: Arc<AtomicI64>,
    _dir: tempfile::TempDir,
}

async fn node() -> Clocked {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = Arc::new(AtomicI64::new(Timestamp::now().as_micros()));
    let c = now.clone();
    let config = NodeConfig {
        dev: true,
        clock: NodeClock(Some(Arc::new(move || Timestamp(c.load(Ordering::SeqCst))))),
        ..NodeConfig::new(dir.path().join("node"))
    };
    let (node, admin) = Node::open(&config).await.expect("open");
    let admin = node
        .authenticate(admin.expect("admin").expose())
        .await
        .expect("admin");
    Clocked {
        node,
        admin,
        now,
        _dir: dir,
    }
}

fn eur(minor: i64) -> Amount {
    Amount::new(minor, Currency::from_code("EUR").expect("EUR"))
}

async fn account(n: &Clocked, owner: &str, kind: AccountKind) -> tally_kernel::Id {
    let (a, _) = n
        .node
        .open_account(
            &n.admin,
            None,
            OpenAccount {
                owner: Some(owner.into()),
                currency: "EUR".into(),
                kind: Some(kind),
                debits_must_not_exceed_credits: Some(kind != AccountKind::Settlement),
                ..OpenAccount::default()
            },
        )
        .await
        .expect("account");
    a.id
}

/// The code of a session, read from the dev inbox as the API reads it.
async fn code(n: &Clocked, address: &str, session: &str) -> String {
    let inbox = n
        .node
        .dev_inbox(&n.admin, address, 50)
        .await
        .expect("inbox");
    let m = inbox
        .iter()
        .find(|m| m.message.data["session"] == session)
        .expect("the session's message");
    let body = &m.message.body;
    let at = body.find("code").expect("code") + 4;
    body[at..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect()
}

#[tokio::test]
async fn an_expired_payment_session_is_closed_by_the_sweeper_and_its_hold_released() {
    let n = node().await;
    let bank = account(&n, "operator", AccountKind::Settlement).await;
    let alice = account(&n, "alice", AccountKind::Customer).await;
    let shop = account(&n, "shop", AccountKind::Merchant).await;
    n.node
        .transfer_money(
            &n.admin,
            "fund",
            TransferOrder {
                debit_account: bank,
                credit_account: alice,
                amount: eur(5_000),
                timeout_s: None,
                memo: None,
                notify: None,
            },
        )
        .await
        .expect("fund");
    let view = n
        .node
        .oob()
        .address_add(&n.admin, "alice", "dev", "alice", None)
        .await
        .expect("address");
    let c = code(&n, "alice", &view.session).await;
    n.node
        .oob()
        .verify(&view.session, &c, None)
        .await
        .expect("verify address");
    let opened = n
        .node
        .oob()
        .open(
            Some(&n.admin),
            None,
            OpenSession {
                user: "alice".into(),
                app: AppRequest::Payment {
                    payer_account: Some(alice),
                    merchant_account: shop,
                    amount: eur(1_250),
                    description: "Blue mug".into(),
                    terminal: None,
                },
                channel: None,
                certificate: None,
            },
            None,
        )
        .await
        .expect("open");
    let Opened::Secured { session, .. } = opened else {
        panic!("a payment above the threshold needs a code")
    };
    let hold = session.hold_id.expect("a hold");
    let available =
        |a: tally_ledger::Account| a.credits_posted - a.debits_posted - a.debits_pending;
    assert_eq!(
        available(n.node.account(&n.admin, alice).await.expect("a")),
        3_750
    );

    // Nothing is due before the code expires.
    assert_eq!(n.node.oob().sweep_timeouts(10).await.expect("sweep"), 0);
    n.now.fetch_add(301 * 1_000_000, Ordering::SeqCst);
    assert_eq!(n.node.oob().sweep_timeouts(10).await.expect("sweep"), 1);
    let after = n.node.oob().session(&session.session).await.expect("view");
    assert_eq!(after.state, State::Expired);
    let t = n.node.transfer(&n.admin, hold).await.expect("hold");
    assert_eq!(t.state, TransferState::Voided, "the hold was released");
    assert_eq!(
        available(n.node.account(&n.admin, alice).await.expect("a")),
        5_000
    );
    // A second sweep finds nothing, and the code is refused as expired.
    assert_eq!(n.node.oob().sweep_timeouts(10).await.expect("sweep"), 0);
    let r = n
        .node
        .oob()
        .verify(&session.session, "00000000", None)
        .await;
    assert!(
        matches!(
            r,
            Err(ServiceError::Oob(
                tally_proto::oob::OobError::Expired { .. }
            ))
        ),
        "{r:?}"
    );
    assert!(n.node.audit(&n.admin).await.expect("audit").ok());
}

#[tokio::test]
async fn a_commit_with_an_email_wakes_the_outbox_worker() {
    let (port, mail) = tally_testkit::smtp_sink();
    let n = node().await;
    let smtp = tally_channels::SmtpConfig {
        port: Some(port),
        tls: tally_channels::SmtpTls::None,
        ..tally_channels::SmtpConfig::new("127.0.0.1", "Tally <tally@test.example>")
    };
    let channels = tally_channels::ChannelSet::new().with(Arc::new(
        tally_channels::SmtpChannel::new(smtp).expect("smtp"),
    ));
    // The timer alone would first look after an hour: only the commit's wake-up delivers.
    let workers =
        tally_service::workers::start(n.node.clone(), channels, Duration::from_secs(3600));
    // Let the worker reach its wait (its first pass finds nothing).
    tokio::task::yield_now().await;
    let view = n
        .node
        .oob()
        .address_add(&n.admin, "bob", "email", "bob@test.example", None)
        .await
        .expect("address");
    let raw = tokio::task::spawn_blocking(move || mail.recv_timeout(Duration::from_secs(30)))
        .await
        .expect("join")
        .expect("the code e-mail arrived without waiting for the timer");
    assert!(raw.contains("bob@test.example"), "{raw}");
    assert!(
        !raw.contains("{{code}}"),
        "the code is put in at delivery: {raw}"
    );
    let session = n.node.oob().session(&view.session).await.expect("view");
    assert_eq!(session.state, State::Open);
    workers.stop();
}

#[tokio::test]
async fn a_data_directory_with_another_identity_is_refused_and_left_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("shared.db");
    let url = format!("sqlite://{}", db.display());
    let first = NodeConfig {
        database_url: Some(url.clone()),
        ..NodeConfig::new(dir.path().join("a"))
    };
    let (node, _) = Node::open(&first).await.expect("first node");
    node.store().close().await;
    // A second data directory made fresh for the same database has another node key and CA.
    let second = NodeConfig {
        database_url: Some(url),
        ..NodeConfig::new(dir.path().join("b"))
    };
    match Node::open(&second).await {
        Err(ServiceError::Setup(why)) => {
            for file in tally_service::identity::SHARED_FILES {
                assert!(why.contains(file), "{why}");
            }
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a node with another identity must not start on this database"),
    }
    // The files it made are gone again: copying the first node's in is all it takes.
    let b = dir.path().join("b");
    let left: Vec<_> = std::fs::read_dir(&b)
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    for file in tally_service::identity::SHARED_FILES {
        std::fs::copy(dir.path().join("a").join(file), b.join(file)).expect("copy");
    }
    let (node, admin) = Node::open(&second).await.expect("same identity starts");
    assert!(admin.is_none(), "the database has its admin key already");
    assert_eq!(
        node.ca().certificate().as_der(),
        tally_kernel::crypto::Certificate::from_pem(
            &std::fs::read_to_string(dir.path().join("a/ca.pem")).expect("ca")
        )
        .expect("pem")
        .as_der()
    );
}

/// Wrong PINs sent to a pad account at once are each counted (a request that finds the tries
/// moved counts again), so concurrent guesses are not free: five at once lock the account,
/// and the right PIN is then refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_pins_all_count_and_lock_the_account() {
    use tally_service::pad::PadServiceError;
    use tally_wire::pads::PadAccountOpenRequest;
    let c = node().await;
    let pads = c.node.pads();
    let account = pads
        .open_pad_account(&PadAccountOpenRequest {
            pin: "482913".into(),
        })
        .await
        .expect("opened")
        .account;
    let guesses = (0..5).map(|i| {
        let account = account.clone();
        async move { pads.pad_account(&account, &format!("00000{i}")).await }
    });
    let answers = futures::future::join_all(guesses).await;
    let mut locked = 0;
    for a in &answers {
        match a {
            Err(ServiceError::Pad(PadServiceError::PinWrong { .. })) => {}
            Err(ServiceError::Pad(PadServiceError::PinLocked { .. })) => locked += 1,
            other => panic!("a wrong PIN answered {other:?}"),
        }
    }
    assert_eq!(locked, 1, "the fifth counted try locks: {answers:?}");
    assert!(matches!(
        pads.pad_account(&account, "482913").await,
        Err(ServiceError::Pad(PadServiceError::PinLocked { .. }))
    ));
}
