use super::*;
use proptest::prelude::*;
use tally_kernel::Currency;

const KEY: &[u8] = b"tally-oob-test-key-0123456789abc";
const T0: Timestamp = Timestamp(1_767_225_600_000_000); // 2026-01-01T00:00:00Z

fn payment(minor: i64) -> Transaction {
    Transaction {
        amount: Amount::new(minor, Currency::from_code("EUR").expect("EUR")),
        payer_account: Some(Id(uuid_from(1))),
        payee: "Corner Shop".into(),
        payee_account: Some(Id(uuid_from(2))),
        description: "2 concert tickets".into(),
    }
}

fn uuid_from(n: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(n)
}

fn open(purpose: Purpose) -> (Session, Notice) {
    Session::open("alice", purpose, Policy::default(), [7; 16], T0, KEY).expect("open")
}

#[test]
fn the_right_code_verifies_once() {
    let (s, notice) = open(Purpose::Login);
    let code = notice.code.expose().clone();
    assert_eq!(code.len(), 8);
    let (s, r) = s.verify(T0.plus_seconds(10), &code, None, KEY);
    assert_eq!(r, Ok(()));
    assert_eq!(s.state, State::Verified);
    let (_, again) = s.verify(T0.plus_seconds(11), &code, None, KEY);
    assert_eq!(again, Err(OobError::SessionClosed), "single use");
}

#[test]
fn wrong_codes_count_and_lock_the_session() {
    let (mut s, notice) = open(Purpose::Login);
    let right = notice.code.expose().clone();
    let wrong = if right == "00000000" {
        "00000001"
    } else {
        "00000000"
    };
    for left in (1..5).rev() {
        let (next, r) = s.verify(T0, wrong, None, KEY);
        assert_eq!(
            r,
            Err(OobError::WrongCode {
                attempts_left: left
            })
        );
        s = next;
    }
    let (s, r) = s.verify(T0, wrong, None, KEY);
    assert_eq!(r, Err(OobError::TooManyAttempts));
    let (s, r) = s.verify(T0, &right, None, KEY);
    assert_eq!(
        r,
        Err(OobError::TooManyAttempts),
        "even the right code is refused once locked"
    );
    assert_eq!(s.state, State::Locked);
}

#[test]
fn codes_expire() {
    let (s, notice) = open(Purpose::Login);
    let code = notice.code.expose().clone();
    let (s, r) = s.verify(T0.plus_seconds(300), &code, None, KEY);
    assert_eq!(
        r,
        Err(OobError::Expired {
            expires_at: T0.plus_seconds(300)
        })
    );
    assert_eq!(s.state, State::Open, "expiry is not an attempt");
}

#[test]
fn a_code_is_bound_to_its_session_user_time_and_transaction() {
    let (s, notice) = open(Purpose::Transaction(payment(1250)));
    let code = notice.code.expose().clone();
    let variants = [
        Session::open(
            "alice",
            Purpose::Transaction(payment(1250)),
            Policy::default(),
            [8; 16],
            T0,
            KEY,
        ),
        Session::open(
            "bob",
            Purpose::Transaction(payment(1250)),
            Policy::default(),
            [7; 16],
            T0,
            KEY,
        ),
        Session::open(
            "alice",
            Purpose::Transaction(payment(1250)),
            Policy::default(),
            [7; 16],
            T0.plus_micros(1),
            KEY,
        ),
        Session::open(
            "alice",
            Purpose::Transaction(payment(1251)),
            Policy::default(),
            [7; 16],
            T0,
            KEY,
        ),
        Session::open("alice", Purpose::Login, Policy::default(), [7; 16], T0, KEY),
        Session::open(
            "alice",
            Purpose::Transaction(payment(1250)),
            Policy::default(),
            [7; 16],
            T0,
            b"another key",
        ),
    ];
    for v in variants {
        let (other, other_notice) = v.expect("open");
        assert_ne!(other_notice.code.expose(), &code, "{other:?}");
    }
    // The confirming client must show the transaction the code was sent for.
    let (s, r) = s.verify(T0, &code, Some(&payment(9_999)), KEY);
    assert_eq!(r, Err(OobError::TransactionMismatch));
    let (_, r) = s.verify(T0, &code, Some(&payment(1250)), KEY);
    assert_eq!(r, Ok(()));
}

#[test]
fn the_notice_shows_the_transaction_in_clear() {
    let (_, notice) = open(Purpose::Transaction(payment(1250)));
    let text = notice.text.expose();
    assert!(text.contains(notice.code.expose().as_str()));
    assert!(
        text.contains("12.50 EUR")
            && text.contains("Corner Shop")
            && text.contains("2 concert tickets"),
        "{text}"
    );
    assert_eq!(format!("{:?}", notice.code), "Secret(***)");
}

#[test]
fn bad_policies_and_bindings_are_caller_bugs() {
    for policy in [
        Policy {
            digits: 5,
            ..Policy::default()
        },
        Policy {
            digits: 11,
            ..Policy::default()
        },
        Policy {
            ttl_s: 1,
            ..Policy::default()
        },
        Policy {
            attempts_max: 0,
            ..Policy::default()
        },
    ] {
        assert!(matches!(
            Session::open("a", Purpose::Login, policy, [1; 16], T0, KEY),
            Err(OobError::ApiMisuse(_))
        ));
    }
    assert!(Session::open("", Purpose::Login, Policy::default(), [1; 16], T0, KEY).is_err());
    assert!(
        Session::open(
            "a",
            Purpose::Transaction(payment(0)),
            Policy::default(),
            [1; 16],
            T0,
            KEY
        )
        .is_err()
    );
}

#[test]
fn closed_sessions_refuse_codes() {
    let (s, notice) = open(Purpose::Login);
    let (_, r) = s.close().verify(T0, notice.code.expose(), None, KEY);
    assert_eq!(r, Err(OobError::SessionClosed));
}

/// Golden vector, pinned in `docs/protocols/vectors/oob.json` (UPDATE_EXPECT=1 rewrites it).
#[test]
fn code_vector_matches_the_pinned_file() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/protocols/vectors/oob.json"
    );
    let vector = |name: &str, purpose: Purpose| {
        let (s, notice) = open(purpose);
        let binding = String::from_utf8(canonical_json(&s.binding()).expect("jcs")).expect("utf-8");
        serde_json::json!({
            "name": name,
            "hmac_input_hex": hex::encode([CODE_DOMAIN, binding.as_bytes()].concat()),
            "binding_jcs": binding,
            "digits": 8,
            "code": notice.code.expose(),
        })
    };
    let computed = serde_json::json!({
        "about": "Out-of-band code vectors; see docs/protocols/oob.md. code = RFC 4226 dynamic truncation of HMAC-SHA256(key, hmac_input) mod 10^digits. Regenerate with UPDATE_EXPECT=1 cargo test -p tally-proto.",
        "key_hex": hex::encode(KEY),
        "vectors": [
            vector("transaction", Purpose::Transaction(payment(1250))),
            vector("login", Purpose::Login),
            vector("message", Purpose::Message(Certified {
                title: "Registered mail to bob: Contract".into(),
                sha256: hex::encode([0x5a; 32]),
            })),
        ],
    });
    crate::pinned::check(path, &computed);
}

proptest! {
    /// Whatever is typed, only the one right code verifies, and never more than once.
    #[test]
    fn only_the_right_code_verifies(tries in proptest::collection::vec("[0-9]{8}", 1..8)) {
        let (mut s, notice) = open(Purpose::Login);
        let right = notice.code.expose().clone();
        let mut verified = 0;
        for t in tries.iter().chain(std::iter::once(&right)) {
            let (next, r) = s.verify(T0, t, None, KEY);
            if r.is_ok() {
                verified += 1;
                prop_assert_eq!(t, &right);
            }
            s = next;
        }
        prop_assert!(verified <= 1);
        // It verifies exactly when fewer than `attempts_max` wrong codes came before it.
        let wrong_before = tries.iter().chain(std::iter::once(&right)).take_while(|t| **t != right).count();
        prop_assert_eq!(verified == 1, wrong_before < 5);
    }
}
