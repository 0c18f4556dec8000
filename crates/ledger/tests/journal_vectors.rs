//! Golden vectors for the journal: the exact JSON of events, the entry hash chain and a
//! signed checkpoint, pinned in `docs/protocols/vectors/journal.json` (format:
//! `docs/protocols/ledger.md`). Regenerate deliberately with `UPDATE_EXPECT=1`.

use serde_json::{Value, json};
use tally_kernel::crypto::{Signature, SigningKey};
use tally_kernel::{Currency, Id, Timestamp};
use tally_ledger::journal::{CHECKPOINT_DOMAIN, GENESIS, checkpoint_message, next_entry};
use tally_ledger::{
    Account, AccountFlags, AccountKind, Event, Transfer, TransferFlags, TransferKind, TransferState,
};

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/protocols/vectors/journal.json"
);

fn id(n: u128) -> Id {
    Id(uuid::Uuid::from_u128(n))
}

fn events() -> Vec<(&'static str, Event)> {
    let eur = Currency::from_code("EUR").expect("EUR");
    let t0 = Timestamp(1_767_225_600_000_000); // 2026-01-01T00:00:00Z
    let account = |n, kind, bounded| Account {
        id: id(n),
        owner: "alice".into(),
        currency: eur,
        kind,
        flags: AccountFlags {
            debits_must_not_exceed_credits: bounded,
            credits_must_not_exceed_debits: false,
            ..Default::default()
        },
        limit_minor: 0,
        debits_pending: 0,
        debits_posted: 0,
        credits_pending: 0,
        credits_posted: 0,
        created_at: t0,
        user_data_128: 0,
        user_data_64: 0,
        user_data_32: 0,
        code: 0,
    };
    let transfer = Transfer {
        id: id(3),
        kind: TransferKind::Pending,
        state: TransferState::Pending,
        debit_account: id(2),
        credit_account: id(1),
        amount_minor: 1250,
        currency: eur,
        pending_id: None,
        pending_amount_minor: None,
        expires_at: Some(t0.plus_seconds(900)),
        link_id: None,
        rate: None,
        memo: "order 42".into(),
        created_at: t0,
        flags: TransferFlags::default(),
        user_data_128: 0,
        user_data_64: 0,
        user_data_32: 0,
        code: 0,
    };
    vec![
        (
            "account_opened",
            Event::AccountOpened {
                account: account(1, AccountKind::Settlement, false),
            },
        ),
        (
            "account_opened",
            Event::AccountOpened {
                account: account(2, AccountKind::Customer, true),
            },
        ),
        (
            "transfers",
            Event::Transfers {
                transfers: vec![transfer],
            },
        ),
        (
            "limit_set",
            Event::LimitSet {
                account: id(2),
                previous_minor: 0,
                limit_minor: 5_000,
            },
        ),
    ]
}

/// Transfers bodies in the binary layout (`tally_ledger::body`): a plain transfer, and one
/// with every optional field present.
fn binary_transfers() -> Vec<Event> {
    let Event::Transfers { transfers } = &events()[2].1 else {
        unreachable!("the third event holds a transfer")
    };
    let plain = Transfer {
        kind: TransferKind::Single,
        state: TransferState::Posted,
        expires_at: None,
        memo: String::new(),
        ..transfers[0].clone()
    };
    let full = Transfer {
        id: id(4),
        kind: TransferKind::PostPending,
        state: TransferState::Posted,
        pending_id: Some(id(3)),
        pending_amount_minor: Some(1250),
        link_id: Some(id(5)),
        rate: Some(tally_kernel::Rate {
            numerator: 108,
            denominator: 100,
        }),
        flags: TransferFlags {
            linked: true,
            imported: true,
            ..TransferFlags::default()
        },
        user_data_128: u128::MAX - 1,
        user_data_64: 64,
        user_data_32: 32,
        code: 7,
        memo: "crème".into(),
        ..transfers[0].clone()
    };
    vec![
        Event::Transfers {
            transfers: vec![plain.clone()],
        },
        Event::Transfers {
            transfers: vec![plain, full],
        },
    ]
}

fn compute() -> Value {
    let at = Timestamp(1_767_225_600_000_000);
    let (mut seq, mut prev) = (0, GENESIS);
    let mut entries = Vec::new();
    for (kind, e) in events() {
        let body = serde_json::to_vec(&e).expect("json");
        let entry = next_entry(seq, prev, at, kind, body);
        (seq, prev) = (entry.seq, entry.hash);
        entries.push(json!({
            "seq": entry.seq,
            "at": entry.at.as_micros(),
            "kind": entry.kind,
            "prev_hash": hex::encode(entry.prev_hash),
            "body": String::from_utf8(entry.body).expect("utf-8"),
            "hash": hex::encode(entry.hash),
        }));
    }
    let binary: Vec<Value> = binary_transfers()
        .into_iter()
        .map(|e| {
            json!({
                "event": serde_json::to_value(&e).expect("json"),
                "body_hex": hex::encode(tally_ledger::body::encode(&e)),
            })
        })
        .collect();
    let key = SigningKey::from_seed(&[0x11; 32]);
    let message = checkpoint_message(seq, &prev);
    let signature = key.sign(CHECKPOINT_DOMAIN, &message);
    json!({
        "about": "Tally journal vectors; see docs/protocols/ledger.md. Regenerate with UPDATE_EXPECT=1 cargo test -p tally-ledger.",
        "entries": entries,
        "binary_transfers": binary,
        "checkpoint": {
            "seq": seq,
            "hash": hex::encode(prev),
            "signer_seed_hex": hex::encode([0x11_u8; 32]),
            "signer_public_key_hex": key.verifying_key().to_hex(),
            "signed_message_hex": hex::encode([CHECKPOINT_DOMAIN, &message].concat()),
            "signature_hex": signature.to_hex(),
        }
    })
}

#[test]
fn journal_vectors_match_the_pinned_file() {
    let computed = compute();
    if std::env::var("UPDATE_EXPECT").is_ok_and(|v| v == "1") {
        std::fs::write(
            PATH,
            serde_json::to_string_pretty(&computed).expect("json") + "\n",
        )
        .expect("write vectors");
        return;
    }
    let pinned: Value =
        serde_json::from_str(&std::fs::read_to_string(PATH).expect("vectors file")).expect("json");
    assert_eq!(
        computed, pinned,
        "journal format changed; if deliberate, regenerate with UPDATE_EXPECT=1"
    );
    // The file on its own terms: the pinned signature verifies under the pinned public key.
    let cp = &pinned["checkpoint"];
    let key = tally_kernel::crypto::VerifyingKey::from_hex(
        cp["signer_public_key_hex"].as_str().expect("pk"),
    )
    .expect("pk");
    let sig = Signature::from_hex(cp["signature_hex"].as_str().expect("sig")).expect("sig");
    let hash: [u8; 32] = hex::decode(cp["hash"].as_str().expect("hash"))
        .expect("hex")
        .try_into()
        .expect("32");
    key.verify(
        CHECKPOINT_DOMAIN,
        &checkpoint_message(cp["seq"].as_i64().expect("seq"), &hash),
        &sig,
    )
    .expect("verifies");
    // And each pinned body parses back to the same event.
    for ((_, e), entry) in events()
        .iter()
        .zip(pinned["entries"].as_array().expect("entries"))
    {
        let parsed: Event =
            serde_json::from_str(entry["body"].as_str().expect("body")).expect("event");
        assert_eq!(&parsed, e);
    }
    // And each pinned binary body decodes to its event.
    for v in pinned["binary_transfers"]
        .as_array()
        .expect("binary_transfers")
    {
        let body = hex::decode(v["body_hex"].as_str().expect("hex")).expect("hex");
        let event: Event = serde_json::from_value(v["event"].clone()).expect("event");
        assert_eq!(tally_ledger::body::decode(&body), Ok(event));
    }
}
