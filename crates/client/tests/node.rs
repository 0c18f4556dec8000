//! The typed client against a real node: `tally_http::router` served on a loopback socket, the
//! node on SQLite in a temporary directory. Every call goes over TCP as the CLI's do; answers
//! arrive as wire types and refusals as typed codes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tally_client::wire::error::ErrorCode;
use tally_client::wire::ledger::{
    AccountKindDto, HoldRequest, NewApiKeyRequest, OpenAccountRequest, PostHoldRequest, RoleDto,
    TransferRequest,
};
use tally_client::wire::oob::{AddressRequest, AppRequest, OpenSession, Opened, VerifyRequest};
use tally_client::{Client, Error};
use tally_proto::oob::State;

/// A node serving HTTP on 127.0.0.1, and a client with its admin key.
struct Served {
    admin: Client,
    _dir: tempfile::TempDir,
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    base
}

impl Served {
    async fn start() -> Served {
        let dir = tempfile::tempdir().expect("tempdir");
        // The dev channel keeps the second channel's messages in an inbox the test reads.
        let config = tally_service::NodeConfig {
            dev: true,
            ..tally_service::NodeConfig::new(dir.path().join("data"))
        };
        let (node, admin) = tally_service::Node::open(&config).await.expect("node");
        let admin = admin.expect("admin key").expose().clone();
        let base = serve(tally_http::router(node, tally_http::HttpOptions::default())).await;
        Served {
            admin: Client::builder(&base)
                .api_key(admin)
                .build()
                .expect("client"),
            _dir: dir,
        }
    }

    async fn key(&self, role: RoleDto, owner: &str) -> Client {
        let k = self
            .admin
            .api_key_create(&NewApiKeyRequest {
                role,
                owner: owner.to_string(),
                label: None,
            })
            .await
            .expect("key");
        self.admin.with_key(k.key)
    }
}

fn open(currency: &str) -> OpenAccountRequest {
    OpenAccountRequest {
        currency: currency.to_string(),
        ..OpenAccountRequest::default()
    }
}

fn pay(from: uuid::Uuid, to: uuid::Uuid, amount: &str) -> TransferRequest {
    TransferRequest {
        debit_account: from,
        credit_account: to,
        amount: Some(amount.to_string()),
        amount_minor: None,
        currency: None,
        memo: None,
        notify: None,
    }
}

#[tokio::test]
async fn money_moves_once_per_key_and_refusals_carry_their_code() {
    let s = Served::start().await;
    let world = s
        .admin
        .account_open(
            None,
            &OpenAccountRequest {
                kind: Some(AccountKindDto::Settlement),
                debits_must_not_exceed_credits: Some(false),
                ..open("EUR")
            },
        )
        .await
        .expect("settlement")
        .value;
    let alice = s.key(RoleDto::Customer, "alice").await;
    let a = alice
        .account_open(Some("open-a"), &open("EUR"))
        .await
        .expect("open");
    assert!(!a.replayed);
    let again = alice
        .account_open(Some("open-a"), &open("EUR"))
        .await
        .expect("again");
    assert!(
        again.replayed,
        "a retried open with its key is the first answer"
    );
    assert_eq!(again.value.id, a.value.id);
    let a = a.value;

    let first = s
        .admin
        .transfer("fund-1", &pay(world.id, a.id, "10.00 EUR"))
        .await
        .expect("fund");
    let retry = s
        .admin
        .transfer("fund-1", &pay(world.id, a.id, "10.00 EUR"))
        .await
        .expect("retry");
    assert_eq!((first.replayed, retry.replayed), (false, true));
    assert_eq!(first.value.id, retry.value.id);
    let shown = alice.account(a.id).await.expect("account");
    assert_eq!(shown.balance.minor, 1000, "moved once: {shown:?}");

    // The same key for another body is refused, by code.
    let e = s
        .admin
        .transfer("fund-1", &pay(world.id, a.id, "11.00 EUR"))
        .await
        .expect_err("reused key");
    assert_eq!(e.code(), Some(ErrorCode::IdempotencyKeyReused), "{e}");

    // Too much: insufficient funds, with what is available, and nothing moved.
    let e = alice
        .transfer("too-much", &pay(a.id, world.id, "10.01 EUR"))
        .await
        .expect_err("overdraft");
    assert_eq!(e.code(), Some(ErrorCode::InsufficientFunds), "{e}");
    assert_eq!(e.status(), Some(422));
    assert_eq!(
        e.refusal().and_then(|r| r.detail_i64("available_minor")),
        Some(1000)
    );
    assert_eq!(alice.account(a.id).await.expect("a").balance.minor, 1000);

    // A hold, part of it posted; the rest released.
    let hold = alice
        .hold(
            "hold-1",
            &HoldRequest {
                debit_account: a.id,
                credit_account: world.id,
                amount: Some("4.00 EUR".to_string()),
                amount_minor: None,
                currency: None,
                timeout_s: 600,
                memo: None,
                notify: None,
            },
        )
        .await
        .expect("hold")
        .value;
    assert_eq!(hold.state, "pending");
    let posted = s
        .admin
        .hold_post(
            "post-1",
            hold.id,
            &PostHoldRequest {
                amount: Some("1.50 EUR".to_string()),
                ..PostHoldRequest::default()
            },
        )
        .await
        .expect("post")
        .value;
    assert_eq!(posted.amount.minor, 150);
    let e = s
        .admin
        .hold_void("void-1", hold.id)
        .await
        .expect_err("posted holds stay");
    assert!(e.code().is_some(), "{e}");
    assert_eq!(alice.account(a.id).await.expect("a").balance.minor, 850);
    let history = alice
        .account_transfers(a.id, Some(10))
        .await
        .expect("history");
    assert_eq!(history.len(), 3, "{history:?}");

    // Unknown ids and other people's accounts.
    let e = alice
        .account(uuid::Uuid::now_v7())
        .await
        .expect_err("unknown");
    assert_eq!(
        (e.status(), e.code()),
        (Some(404), Some(ErrorCode::AccountNotFound))
    );
    let e = alice.audit().await.expect_err("operator only");
    assert_eq!(e.code(), Some(ErrorCode::Forbidden));
    let audit = s.admin.audit().await.expect("audit");
    assert!(audit.ok, "{audit:?}");

    // A revoked key is refused as unauthorized.
    let keys = s.admin.api_keys().await.expect("keys");
    let alice_key = keys
        .iter()
        .find(|k| k.owner == "alice")
        .expect("alice's key");
    s.admin.api_key_revoke(alice_key.id).await.expect("revoke");
    let e = alice.account(a.id).await.expect_err("revoked");
    assert_eq!(e.code(), Some(ErrorCode::Unauthorized));
}

#[tokio::test]
async fn a_login_is_confirmed_with_the_code_from_the_second_channel() {
    let s = Served::start().await;
    let alice = s.key(RoleDto::Customer, "alice").await;
    let code_of = |session: String| {
        let admin = s.admin.clone();
        async move {
            let inbox = admin.dev_inbox("alice", Some(20)).await.expect("inbox");
            let m = inbox
                .iter()
                .find(|m| m.data.get("session").and_then(|v| v.as_str()) == Some(&session))
                .expect("the session's message");
            m.body
                .split(|c: char| !c.is_ascii_digit())
                .find(|w| w.len() >= 6)
                .expect("a code")
                .to_string()
        }
    };
    let verify = |code: &str| VerifyRequest {
        code: code.to_string(),
        confirm: None,
    };

    let adding = alice
        .address_add(
            "alice",
            &AddressRequest {
                channel: "dev".to_string(),
                address: "alice".to_string(),
            },
        )
        .await
        .expect("address");
    assert_eq!(adding.state, State::Open);
    let code = code_of(adding.session.clone()).await;
    alice
        .session_verify(&adding.session, &verify(&code))
        .await
        .expect("address verified");
    let addresses = alice.addresses("alice").await.expect("addresses");
    assert!(addresses[0].verified_at.is_some(), "{addresses:?}");

    let login = OpenSession {
        user: "alice".to_string(),
        app: AppRequest::Login,
        channel: None,
        certificate: None,
    };
    let Opened::Secured { session, .. } = alice.session_open(None, &login).await.expect("open")
    else {
        panic!("a login always waits for its code");
    };
    // A wrong code: typed, with the attempts left; the session stays open.
    let e = alice
        .session_verify(&session.session, &verify("000000x"))
        .await
        .expect_err("wrong code");
    assert_eq!(e.code(), Some(ErrorCode::WrongCode), "{e}");
    assert_eq!(
        e.refusal().and_then(|r| r.detail_i64("attempts_left")),
        Some(i64::from(session.attempts_left) - 1)
    );
    let code = code_of(session.session.clone()).await;
    let done = alice
        .session_verify(&session.session, &verify(&code))
        .await
        .expect("verified");
    assert_eq!(done.session.state, State::Verified);
    let token = done.access_token.expect("a login's access token");
    let me = alice.whoami(&token).await.expect("whoami");
    assert_eq!(me.user, "alice");
    // Used once: a second confirmation is refused, by code.
    let e = alice
        .session_verify(&session.session, &verify(&code))
        .await
        .expect_err("closed");
    assert_eq!(e.code(), Some(ErrorCode::SessionClosed), "{e}");
    let e = alice
        .whoami("tally_session_forged")
        .await
        .expect_err("forged");
    assert_eq!(e.code(), Some(ErrorCode::Unauthorized));
}

#[tokio::test]
async fn only_requests_that_cannot_apply_twice_are_retried() {
    // A node that always fails with 503, counting what reaches it.
    let hits = Arc::new(AtomicU32::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, "busy")
        }
    });
    let base = serve(app).await;
    let c = Client::builder(&base)
        .api_key("k")
        .attempts(2)
        .build()
        .expect("client");
    let some = uuid::Uuid::now_v7();

    let e = c.account(some).await.expect_err("503");
    assert!(e.is_transient(), "{e}");
    assert_eq!(hits.swap(0, Ordering::SeqCst), 2, "a read is retried");

    let e = c
        .transfer("k-1", &pay(some, some, "1.00 EUR"))
        .await
        .expect_err("503");
    assert_eq!(e.status(), Some(503));
    assert_eq!(
        hits.swap(0, Ordering::SeqCst),
        2,
        "a keyed write is retried"
    );

    let login = OpenSession {
        user: "alice".to_string(),
        app: AppRequest::Login,
        channel: None,
        certificate: None,
    };
    c.session_open(None, &login).await.expect_err("503");
    assert_eq!(
        hits.swap(0, Ordering::SeqCst),
        1,
        "an unkeyed write is sent once"
    );

    // Nobody listening: a transport error naming the node.
    let closed = Client::builder("http://127.0.0.1:9")
        .attempts(1)
        .build()
        .expect("client");
    match closed.health().await {
        Err(Error::Transport { base, .. }) => assert_eq!(base, "http://127.0.0.1:9"),
        other => panic!("expected a transport error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_accepted_request_whose_answer_broke_off_is_not_called_unreachable() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A node that accepts every request (201) and then drops the connection mid-answer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let accepted = Arc::new(AtomicU32::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let mut buf = vec![0_u8; 64 * 1024];
            let _ = socket.read(&mut buf).await;
            let _ = socket
                .write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 100\r\n\r\n{\"outcome\"")
                .await;
        }
    });
    let c = Client::builder(&base)
        .api_key("k")
        .attempts(2)
        .build()
        .expect("client");
    let login = OpenSession {
        user: "alice".to_string(),
        app: AppRequest::Login,
        channel: None,
        certificate: None,
    };
    match c.session_open(None, &login).await {
        Err(Error::AnswerLost { status, .. }) => assert_eq!(status, 201),
        other => panic!("expected AnswerLost, got {other:?}"),
    }
    assert_eq!(
        accepted.swap(0, Ordering::SeqCst),
        1,
        "sent once, not repeated"
    );
    // With a key the same failure is retried: the node answers a repeat with the first result.
    let e = c
        .session_open(Some("k-1"), &login)
        .await
        .expect_err("broken answers");
    assert!(e.is_transient(), "{e}");
    assert_eq!(
        accepted.swap(0, Ordering::SeqCst),
        2,
        "retried with its key"
    );
}
