#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

/// An exported log entry as the CLI holds it: seq, at, prev_hash, hash, body.
type Owned = (i64, i64, [u8; 32], [u8; 32], Vec<u8>);

use super::exchange::{Answer, Decision, Refusal, Request, decide};
use super::token::{self, SecureWrite, Stored, Token, TokenError, TokenRecord, WriteContent};
use super::*;
use tally_kernel::crypto::bls::BlsSecretKey;
use tally_kernel::crypto::warrant::{
    Counterparties, OID_BLS_KEY, bls_key_extension, issue_warrant,
};
use tally_kernel::crypto::{CertificateAuthority, SigningKey};

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/protocols/vectors/receipts.json"
);

fn fields(version: u8, server: &SigningKey, a: &VerifyingKey, b: &VerifyingKey) -> Fields {
    Fields {
        version,
        server_id: sha256(&server.verifying_key().to_bytes()),
        transaction: 0x0012_3456_789a_bcde,
        time: 1_764_000_000,
        content_hash: content_hash("Order 1042\n2 x Blue album\nTotal 19.80 EUR\n"),
        party_a: sha256(&a.to_bytes()),
        party_b: sha256(&b.to_bytes()),
    }
}

fn keys() -> (SigningKey, SigningKey, SigningKey) {
    (
        SigningKey::from_seed(&[1; 32]),
        SigningKey::from_seed(&[2; 32]),
        SigningKey::from_seed(&[3; 32]),
    )
}

fn ed_receipt() -> Receipt {
    let (server, a, b) = keys();
    let f = fields(
        VERSION_ED25519,
        &server,
        &a.verifying_key(),
        &b.verifying_key(),
    );
    Receipt {
        fields: f,
        signature_a: PartySignature::Ed25519(a.sign(PARTY_DOMAIN, &f.party_part())),
        signature_b: PartySignature::Ed25519(b.sign(PARTY_DOMAIN, &f.party_part())),
        signature_server: server.sign(SERVER_DOMAIN, &f.server_part()),
    }
}

fn bls_receipt() -> Receipt {
    let (server, a, b) = keys();
    let f = fields(VERSION_BLS, &server, &a.verifying_key(), &b.verifying_key());
    let (ba, bb) = (
        BlsSecretKey::from_seed(&[4; 32]),
        BlsSecretKey::from_seed(&[5; 32]),
    );
    Receipt {
        fields: f,
        signature_a: PartySignature::Bls(ba.sign(PARTY_DOMAIN, &f.party_part())),
        signature_b: PartySignature::Bls(bb.sign(PARTY_DOMAIN, &f.party_part())),
        signature_server: server.sign(SERVER_DOMAIN, &f.server_part()),
    }
}

fn vector_package() -> Package {
    let mut p = Package::new(ed_receipt());
    p.record = Some("Order 1042\n2 x Blue album\nTotal 19.80 EUR\n".into());
    p.journal = Some(JournalProof {
        seq: 7,
        at: 1_764_000_000_000_000,
        prev_hash: [9; 32],
        body: format!(
            "{{\"receipt_digest\":\"{}\"}}",
            hex::encode(ed_receipt().digest())
        )
        .into_bytes(),
    });
    p
}

fn secure_write() -> (SecureWrite, [u8; 32]) {
    let (server, _, _) = keys();
    let r = ed_receipt();
    let serial = [0x5a; token::SERIAL_LEN];
    let app = token::application_key(&[0x11; 32], &serial);
    let content = WriteContent::new(
        &r.fields,
        42,
        server.sign(SERVER_DOMAIN, &r.fields.server_part()),
    );
    (
        token::seal_write(app.expose(), &serial, &[0x22; 32], 3, &content),
        *app.expose(),
    )
}

/// The holder `alice` (customer) asks to certify party B's keys (seeds 3 and 5).
fn token_request_vector() -> serde_json::Value {
    let key = SigningKey::from_seed(&[3; 32]);
    let bls = BlsSecretKey::from_seed(&[5; 32]);
    let (public, bls_public) = (key.verifying_key(), bls.public_key());
    let req = request::CertificationRequest {
        holder: "alice",
        role: "customer",
        public_key: &public,
        bls_key: Some(&bls_public),
    };
    let (ed, b) = req.prove(&key, Some(&bls));
    assert_eq!(req.check(&ed, b.as_ref()), Ok(()));
    serde_json::json!({
        "statement": String::from_utf8(req.message()).unwrap(),
        "ed25519": ed.to_hex(),
        "bls": b.map(|s| s.to_hex()),
    })
}

#[test]
fn formats_match_the_pinned_vectors() {
    let ed = ed_receipt();
    let bls = bls_receipt();
    let (write, app_key) = secure_write();
    let record = ed.fields.token_record();
    let content = WriteContent::new(&ed.fields, 42, ed.signature_server);
    let computed = serde_json::json!({
        "inputs": {
            "server_seed": hex::encode([1u8; 32]), "party_a_seed": hex::encode([2u8; 32]),
            "party_b_seed": hex::encode([3u8; 32]), "party_a_bls_seed": hex::encode([4u8; 32]),
            "party_b_bls_seed": hex::encode([5u8; 32]),
            "record": "Order 1042\n2 x Blue album\nTotal 19.80 EUR\n",
            "transaction": ed.fields.transaction, "time": ed.fields.time,
            "token_master": hex::encode([0x11u8; 32]), "token_serial": hex::encode([0x5au8; 16]),
            "challenge": hex::encode([0x22u8; 32]), "slot": 3, "receipt_number": 42,
        },
        "server_part_v1": hex::encode(ed.fields.server_part()),
        "party_part_v1": hex::encode(ed.fields.party_part()),
        "core_v1": hex::encode(ed.to_bytes()),
        "core_v2": hex::encode(bls.to_bytes()),
        "package_v1": hex::encode(vector_package().to_bytes()),
        "token_record": hex::encode(record.to_bytes()),
        "write_content": hex::encode(content.to_bytes()),
        "app_key": hex::encode(app_key),
        "secure_write": hex::encode(write.to_bytes()),
        "token_request": token_request_vector(),
    });
    crate::pinned::check(VECTORS, &computed);
    assert_eq!(
        ed.to_bytes().len(),
        337,
        "the seed's 473 bytes with Ed25519 and SHA-256"
    );
    assert_eq!(bls.to_bytes().len(), 305);
    assert_eq!(record.to_bytes().len(), 49);
}

#[test]
fn cores_and_packages_round_trip() {
    for r in [ed_receipt(), bls_receipt()] {
        assert_eq!(Receipt::from_bytes(&r.to_bytes()), Ok(r));
    }
    let p = vector_package();
    assert_eq!(Package::from_bytes(&p.to_bytes()), Ok(p));
    let (w, _) = secure_write();
    assert_eq!(SecureWrite::from_bytes(&w.to_bytes()), Ok(w));
    let rec = ed_receipt().fields.token_record();
    assert_eq!(TokenRecord::from_bytes(&rec.to_bytes()), Ok(rec));
}

#[test]
fn malformed_cores_and_packages_are_refused_with_a_reason() {
    let core = ed_receipt().to_bytes();
    for n in 0..core.len() {
        assert!(Receipt::from_bytes(&core[..n]).is_err(), "truncated to {n}");
    }
    let mut v = core.clone();
    v[0] = 9;
    assert_eq!(
        Receipt::from_bytes(&v),
        Err(ReceiptError::UnsupportedVersion(9))
    );
    // A version 1 core read as version 2 has the wrong length.
    v[0] = VERSION_BLS;
    assert!(matches!(
        Receipt::from_bytes(&v),
        Err(ReceiptError::Malformed(_))
    ));

    let file = vector_package().to_bytes();
    // A cut inside anything is refused; a cut between sections is a shorter package (the
    // verifier then misses what was cut).
    for n in 0..file.len() {
        if let Ok(p) = Package::from_bytes(&file[..n]) {
            assert_eq!(p.to_bytes(), &file[..n], "truncated to {n}");
            assert!(p.journal.is_none());
        }
    }
    let mut junk = file.clone();
    junk.push(0);
    assert!(
        matches!(Package::from_bytes(&junk), Err(ReceiptError::Malformed(m)) if m.contains("truncated"))
    );
    let mut bad = file.clone();
    bad[0] = b'X';
    assert!(
        matches!(Package::from_bytes(&bad), Err(ReceiptError::Malformed(m)) if m.contains("magic"))
    );
    // Sections out of order, repeated, unknown.
    let mut p = Package::new(ed_receipt()).to_bytes();
    p.extend_from_slice(&[tag::CERT_A, 0, 0, 0, 0, tag::RECORD, 0, 0, 0, 1, b'x']);
    assert!(
        matches!(Package::from_bytes(&p), Err(ReceiptError::Malformed(m)) if m.contains("order"))
    );
    let mut p = Package::new(ed_receipt()).to_bytes();
    p.extend_from_slice(&[200, 0, 0, 0, 0]);
    assert!(
        matches!(Package::from_bytes(&p), Err(ReceiptError::Malformed(m)) if m.contains("unknown"))
    );
    let mut p = Package::new(ed_receipt()).to_bytes();
    p.extend_from_slice(&[tag::RECORD, 0xff, 0xff, 0xff, 0xff]);
    assert!(Package::from_bytes(&p).is_err());
    let mut p = Package::new(ed_receipt()).to_bytes();
    p.extend_from_slice(&[tag::RECORD, 0, 0, 0, 2, 0xc3, 0x28]);
    assert!(matches!(
        Package::from_bytes(&p),
        Err(ReceiptError::NotPlainText(_))
    ));
}

#[test]
fn records_must_be_flat_text() {
    assert_eq!(check_record("Order 1\n\tTotal 2.00 EUR\n"), Ok(()));
    for bad in [
        "",
        "  \n",
        "a\u{202e}b",
        "a\u{200b}b",
        "a\u{7}b",
        "a\rb",
        "\u{feff}x",
    ] {
        assert!(
            matches!(check_record(bad), Err(ReceiptError::NotPlainText(_))),
            "{bad:?}"
        );
    }
    assert!(check_record(&"x".repeat(RECORD_LEN_MAX + 1)).is_err());
}

/// A CA, party certificates (with BLS keys) and a full package signed for real.
struct Pki {
    ca: CertificateAuthority,
    server: SigningKey,
    a: SigningKey,
    b: SigningKey,
    a_bls: BlsSecretKey,
    b_bls: BlsSecretKey,
    cert_server: Certificate,
    cert_a: Certificate,
    cert_b: Certificate,
}

fn now() -> Timestamp {
    Timestamp(1_764_000_000_000_000)
}

fn pki() -> Pki {
    let ca = CertificateAuthority::generate("Test CA", now().plus_seconds(-86_400), 365).unwrap();
    let (server, a, b) = keys();
    let (a_bls, b_bls) = (
        BlsSecretKey::from_seed(&[4; 32]),
        BlsSecretKey::from_seed(&[5; 32]),
    );
    let end = now().plus_seconds(30 * 86_400);
    let start = now().plus_seconds(-3600);
    let issue = |name: &str, key: &SigningKey, role: &str, bls: Option<&BlsSecretKey>| {
        let ext = bls.map(|k| bls_key_extension(&k.public_key().to_bytes()).unwrap());
        let extra: Vec<(&str, &[u8], bool)> = ext
            .as_deref()
            .map(|e| vec![(OID_BLS_KEY, e, false)])
            .unwrap_or_default();
        ca.issue(name, &key.verifying_key(), role, start, end, &extra)
            .unwrap()
    };
    Pki {
        cert_server: issue(SERVER_NAME, &server, SERVER_ROLE, None),
        cert_a: issue("bob", &a, "manager", Some(&a_bls)),
        cert_b: issue("alice", &b, "customer", Some(&b_bls)),
        ca,
        server,
        a,
        b,
        a_bls,
        b_bls,
    }
}

fn signed_package(p: &Pki, version: u8) -> Package {
    let f = fields(
        version,
        &p.server,
        &p.a.verifying_key(),
        &p.b.verifying_key(),
    );
    let msg = f.party_part();
    let (sa, sb) = if version == VERSION_BLS {
        (
            PartySignature::Bls(p.a_bls.sign(PARTY_DOMAIN, &msg)),
            PartySignature::Bls(p.b_bls.sign(PARTY_DOMAIN, &msg)),
        )
    } else {
        (
            PartySignature::Ed25519(p.a.sign(PARTY_DOMAIN, &msg)),
            PartySignature::Ed25519(p.b.sign(PARTY_DOMAIN, &msg)),
        )
    };
    let mut pkg = Package::new(Receipt {
        fields: f,
        signature_a: sa,
        signature_b: sb,
        signature_server: p.server.sign(SERVER_DOMAIN, &f.server_part()),
    });
    pkg.record = Some("Order 1042\n2 x Blue album\nTotal 19.80 EUR\n".into());
    pkg.cert_a = Some(p.cert_a.to_der());
    pkg.cert_b = Some(p.cert_b.to_der());
    pkg.cert_server = Some(p.cert_server.to_der());
    pkg
}

#[test]
fn genuine_packages_verify_and_every_tampering_is_named() {
    let p = pki();
    for version in [VERSION_ED25519, VERSION_BLS] {
        let pkg = signed_package(&p, version);
        let v = verify_package(&pkg, p.ca.certificate()).unwrap();
        assert_eq!((v.party_a.as_str(), v.party_b.as_str()), ("bob", "alice"));

        let mut t = pkg.clone();
        t.record = Some("Order 1042\n2 x Blue album\nTotal 1.98 EUR\n".into());
        assert_eq!(
            verify_package(&t, p.ca.certificate()),
            Err(ReceiptError::RecordAltered)
        );
        let mut t = pkg.clone();
        t.receipt.fields.time += 1;
        assert_eq!(
            verify_package(&t, p.ca.certificate()),
            Err(ReceiptError::BadSignature("the server"))
        );
        let mut t = pkg.clone();
        t.receipt.signature_a = t.receipt.signature_b;
        assert_eq!(
            verify_package(&t, p.ca.certificate()),
            Err(ReceiptError::BadSignature("party A"))
        );
        let mut t = pkg.clone();
        t.receipt.signature_b = t.receipt.signature_a;
        assert_eq!(
            verify_package(&t, p.ca.certificate()),
            Err(ReceiptError::BadSignature("party B"))
        );
        let mut t = pkg.clone();
        t.cert_a = t.cert_b.clone();
        assert!(matches!(
            verify_package(&t, p.ca.certificate()),
            Err(ReceiptError::BadCertificate { who: "party A", .. })
        ));
        // A party's certificate for the server's key cannot stand in for the server's.
        let end = now().plus_seconds(30 * 86_400);
        let start = now().plus_seconds(-3600);
        for (name, role) in [(SERVER_NAME, "customer"), ("mallory", SERVER_ROLE)] {
            let mut t = pkg.clone();
            let forged =
                p.ca.issue(name, &p.server.verifying_key(), role, start, end, &[])
                    .unwrap();
            t.cert_server = Some(forged.to_der());
            assert!(
                matches!(
                    verify_package(&t, p.ca.certificate()),
                    Err(ReceiptError::BadCertificate { who: "the server", ref why })
                        if why.contains("not a receipt server's certificate")
                ),
                "{name} {role}"
            );
        }
        // Nor the server's for a party.
        let mut t = pkg.clone();
        t.cert_b = Some(
            p.ca.issue("alice", &p.b.verifying_key(), SERVER_ROLE, start, end, &[])
                .unwrap()
                .to_der(),
        );
        assert!(matches!(
            verify_package(&t, p.ca.certificate()),
            Err(ReceiptError::BadCertificate { who: "party B", .. })
        ));
        let mut t = pkg.clone();
        t.cert_server = None;
        assert!(matches!(
            verify_package(&t, p.ca.certificate()),
            Err(ReceiptError::BadCertificate {
                who: "the server",
                ..
            })
        ));
        let other =
            CertificateAuthority::generate("Other CA", now().plus_seconds(-86_400), 365).unwrap();
        assert!(matches!(
            verify_package(&pkg, other.certificate()),
            Err(ReceiptError::BadCertificate { .. })
        ));
        // Every single-bit change of the file is refused.
        let bytes = pkg.to_bytes();
        for i in (0..bytes.len()).step_by(7) {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            let ok = Package::from_bytes(&b)
                .ok()
                .and_then(|x| verify_package(&x, p.ca.certificate()).ok());
            assert!(ok.is_none(), "byte {i} flipped and still valid");
        }
    }
}

#[test]
fn proxy_signatures_verify_only_under_a_warrant_naming_the_counterparty() {
    let p = pki();
    let mut pkg = signed_package(&p, VERSION_ED25519);
    let f = pkg.receipt.fields;
    // The server signs for A under A's warrant.
    pkg.receipt.signature_a = PartySignature::Ed25519(p.server.sign(PARTY_DOMAIN, &f.party_part()));
    assert_eq!(
        verify_package(&pkg, p.ca.certificate()),
        Err(ReceiptError::BadSignature("party A"))
    );
    let warrant = |names: Counterparties, days: i64| {
        issue_warrant(
            &p.cert_a,
            &p.a,
            &p.server.verifying_key(),
            "tally receipt service",
            &WarrantTerms {
                counterparties: names,
                bls_key: None,
            },
            now().plus_seconds(-60),
            now().plus_seconds(days * 86_400),
        )
        .unwrap()
    };
    pkg.warrant_a = Some(warrant(Counterparties::Names(vec!["alice".into()]), 2).to_der());
    let v = verify_package(&pkg, p.ca.certificate()).unwrap();
    assert!(v.warrant_a.is_some());
    pkg.warrant_a = Some(warrant(Counterparties::Names(vec!["carol".into()]), 2).to_der());
    assert!(
        matches!(verify_package(&pkg, p.ca.certificate()), Err(ReceiptError::BadWarrant { why, .. }) if why.contains("alice"))
    );
    pkg.warrant_a = Some(warrant(Counterparties::Any, 2).to_der());
    assert!(verify_package(&pkg, p.ca.certificate()).is_ok());
}

#[test]
fn journal_sections_must_name_the_receipt() {
    let p = pki();
    let mut pkg = signed_package(&p, VERSION_ED25519);
    let digest = hex::encode(pkg.receipt.digest());
    pkg.journal = Some(JournalProof {
        seq: 3,
        at: 5,
        prev_hash: [1; 32],
        body: format!("{{\"receipt_digest\":\"{digest}\"}}").into_bytes(),
    });
    let v = verify_package(&pkg, p.ca.certificate()).unwrap();
    assert_eq!(v.journal_seq, Some(3));
    assert_eq!(
        v.journal_hash,
        Some(tally_ledger::journal::entry_hash(
            3,
            Timestamp(5),
            &[1; 32],
            pkg.journal.as_ref().unwrap().body.as_slice()
        ))
    );
    pkg.journal = Some(JournalProof {
        seq: 3,
        at: 5,
        prev_hash: [1; 32],
        body: b"{}".to_vec(),
    });
    assert!(matches!(
        verify_package(&pkg, p.ca.certificate()),
        Err(ReceiptError::BadJournalEntry(_))
    ));
}

#[test]
fn a_token_stores_a_write_once_and_only_its_own() {
    let (server, _, _) = keys();
    let r = ed_receipt();
    let serial = [0x5a; token::SERIAL_LEN];
    let app = token::application_key(&[0x11; 32], &serial);
    let mut t = Token::new(serial, *app.expose(), 2);
    let (slot, displaced) = t.begin([0x22; 32], r.fields.transaction, r.fields.content_hash, 0);
    assert_eq!((slot, displaced), (0, None));
    let content = WriteContent::new(
        &r.fields,
        42,
        server.sign(SERVER_DOMAIN, &r.fields.server_part()),
    );
    let w = token::seal_write(app.expose(), &serial, &[0x22; 32], slot, &content);
    // Another server's key, a changed byte, another slot: refused, challenge kept.
    let other = SigningKey::from_seed(&[8; 32]).verifying_key();
    assert!(matches!(t.store(&w, &other), Err(TokenError::Mismatch(_))));
    let mut bad = w.clone();
    bad.sealed[30] ^= 1;
    assert_eq!(
        t.store(&bad, &server.verifying_key()),
        Err(TokenError::WrongKey)
    );
    let mut bad = w.clone();
    bad.slot = 1;
    assert!(matches!(
        t.store(&bad, &server.verifying_key()),
        Err(TokenError::Mismatch(_))
    ));
    // The genuine write stores once; again it is recognised; the challenge is gone.
    assert_eq!(t.store(&w, &server.verifying_key()), Ok(Stored::New(42)));
    assert_eq!(
        t.store(&w, &server.verifying_key()),
        Ok(Stored::Already(42))
    );
    assert!(t.pending.is_empty());
    // A write for a record the token did not ask for.
    let mut f2 = r.fields;
    f2.transaction += 1;
    t.begin([0x33; 32], f2.transaction, [0; 32], 0);
    let c2 = WriteContent::new(&f2, 43, server.sign(SERVER_DOMAIN, &f2.server_part()));
    let w2 = token::seal_write(app.expose(), &serial, &[0x33; 32], 1, &c2);
    assert!(
        matches!(t.store(&w2, &server.verifying_key()), Err(TokenError::Mismatch(m)) if m.contains("hash"))
    );
    // A write sealed with a server's wrong signature is refused.
    let c3 = WriteContent::new(&r.fields, 44, server.sign(SERVER_DOMAIN, b"something else"));
    let mut t3 = Token::new(serial, *app.expose(), 1);
    t3.begin([0x44; 32], r.fields.transaction, r.fields.content_hash, 0);
    let w3 = token::seal_write(app.expose(), &serial, &[0x44; 32], 0, &c3);
    assert_eq!(
        t3.store(&w3, &server.verifying_key()),
        Err(TokenError::BadSignature)
    );
    // Debug never shows the application key.
    assert!(!format!("{t:?}").contains(&hex::encode(app.expose())));
    // The token file round-trips through JSON.
    let json = serde_json::to_string(&t).unwrap();
    assert_eq!(serde_json::from_str::<Token>(&json).unwrap(), t);
}

#[test]
fn a_full_token_replaces_the_lowest_priority_then_the_oldest() {
    let (server, _, _) = keys();
    let serial = [1; token::SERIAL_LEN];
    let app = token::application_key(&[2; 32], &serial);
    let mut t = Token::new(serial, *app.expose(), 3);
    let base = ed_receipt().fields;
    for (i, (prio, time)) in [(5u8, 100i64), (1, 300), (1, 200)].into_iter().enumerate() {
        let mut f = base;
        f.transaction = i as u64 + 1;
        f.time = time;
        let ch = [i as u8 + 10; 32];
        let (slot, _) = t.begin(ch, f.transaction, f.content_hash, prio);
        assert_eq!(usize::from(slot), i);
        let c = WriteContent::new(
            &f,
            i as u64 + 100,
            server.sign(SERVER_DOMAIN, &f.server_part()),
        );
        t.store(
            &token::seal_write(app.expose(), &serial, &ch, slot, &c),
            &server.verifying_key(),
        )
        .unwrap();
    }
    let (slot, displaced) = t.begin([99; 32], 50, [0; 32], 9);
    assert_eq!(
        (slot, displaced.map(|s| s.receipt_number)),
        (2, Some(102)),
        "priority 1, older of the two"
    );
}

#[test]
fn the_arbiter_gives_both_signatures_or_neither() {
    let r = ed_receipt();
    let (a, b) = (r.signature_a, r.signature_b);
    let resolved = Decision::Resolved {
        signature_a: a,
        signature_b: b,
    };
    let by_client = Request::ResolveByClient {
        signature_b: b,
        escrowed_a: Some(a),
    };
    let by_client_bad = Request::ResolveByClient {
        signature_b: b,
        escrowed_a: None,
    };
    let by_node = Request::ResolveByNode {
        signature_a: a,
        escrowed_b: b,
    };
    let table = [
        (
            Decision::Open,
            Request::Abort,
            Decision::Aborted,
            Ok(Answer::Aborted),
        ),
        (
            Decision::Open,
            by_client,
            resolved,
            Ok(Answer::Signature(a)),
        ),
        (
            Decision::Open,
            by_client_bad,
            Decision::Failed,
            Err(Refusal::BadEscrow),
        ),
        (Decision::Open, by_node, resolved, Ok(Answer::Signature(b))),
        (
            Decision::Aborted,
            Request::Abort,
            Decision::Aborted,
            Ok(Answer::Aborted),
        ),
        (
            Decision::Aborted,
            by_client,
            Decision::Aborted,
            Err(Refusal::Aborted),
        ),
        (
            Decision::Aborted,
            by_node,
            Decision::Aborted,
            Err(Refusal::Aborted),
        ),
        (resolved, Request::Abort, resolved, Ok(Answer::Signature(b))),
        (resolved, by_client, resolved, Ok(Answer::Signature(a))),
        (resolved, by_node, resolved, Ok(Answer::Signature(b))),
        (
            Decision::Failed,
            by_node,
            Decision::Failed,
            Err(Refusal::Failed),
        ),
        (
            Decision::Failed,
            by_client,
            Decision::Failed,
            Err(Refusal::Failed),
        ),
        (
            Decision::Failed,
            Request::Abort,
            Decision::Failed,
            Ok(Answer::Aborted),
        ),
    ];
    for (from, req, to, answer) in table {
        assert_eq!(decide(from, req), (to, answer), "{from:?} + {req:?}");
    }
    // Fairness: along any sequence of requests, once one side got the other's signature the
    // decision is resolved (the other side can get its counterpart too), and an aborted or
    // failed exchange never hands out a signature.
    let requests = [Request::Abort, by_client, by_client_bad, by_node];
    for x in requests {
        for y in requests {
            for z in requests {
                let mut d = Decision::Open;
                let mut gave = false;
                for q in [x, y, z] {
                    let (next, ans) = decide(d, q);
                    if matches!(ans, Ok(Answer::Signature(_))) {
                        gave = true;
                        assert!(matches!(next, Decision::Resolved { .. }));
                    }
                    d = next;
                }
                if gave {
                    assert!(matches!(d, Decision::Resolved { .. }));
                }
            }
        }
    }
}

#[test]
fn inclusion_in_an_exported_log_is_checked_up_to_the_signed_checkpoint() {
    use tally_ledger::journal::{CHECKPOINT_DOMAIN, checkpoint_message, next_entry};
    let node = SigningKey::from_seed(&[6; 32]);
    let digest = hex::encode(ed_receipt().digest());
    // Entries 5..=8; the receipt is entry 6.
    let mut entries = Vec::new();
    let mut prev = (4, [7u8; 32]);
    for i in 5..=8 {
        let body = if i == 6 {
            format!("{{\"receipt_digest\":\"{digest}\"}}")
        } else {
            format!("{{\"n\":{i}}}")
        };
        let e = next_entry(prev.0, prev.1, Timestamp(i * 1000), "k", body.into_bytes());
        prev = (e.seq, e.hash);
        entries.push(e);
    }
    let proof = JournalProof {
        seq: 6,
        at: 6000,
        prev_hash: entries[0].hash,
        body: entries[1].body.clone(),
    };
    let later = |es: &[tally_ledger::journal::JournalEntry]| -> Vec<Owned> {
        es.iter()
            .map(|e| (e.seq, e.at.as_micros(), e.prev_hash, e.hash, e.body.clone()))
            .collect()
    };
    let sign = |seq: i64, hash: [u8; 32], key: &SigningKey| LogCheckpoint {
        seq,
        hash,
        signature: key.sign(CHECKPOINT_DOMAIN, &checkpoint_message(seq, &hash)),
    };
    let check = |rest: &[Owned], cp: &LogCheckpoint, key: &VerifyingKey| {
        check_inclusion(
            &proof,
            rest.iter()
                .map(|(s, a, p, h, b)| (*s, *a, *p, *h, b.as_slice())),
            cp,
            key,
        )
    };
    let rest = later(&entries[2..]);
    let good = sign(8, entries[3].hash, &node);
    assert_eq!(check(&rest, &good, &node.verifying_key()), Ok(()));
    // The receipt's own entry as the checkpoint.
    assert_eq!(
        check(&[], &sign(6, entries[1].hash, &node), &node.verifying_key()),
        Ok(())
    );
    // Another key, a changed later body, a missing entry, a checkpoint elsewhere.
    let other = SigningKey::from_seed(&[7; 32]);
    assert!(check(&rest, &good, &other.verifying_key()).is_err());
    let mut bad = rest.clone();
    bad[0].4 = b"{\"n\":99}".to_vec();
    assert!(check(&bad, &good, &node.verifying_key()).is_err());
    assert!(check(&rest[1..], &good, &node.verifying_key()).is_err());
    assert!(check(&rest[..1], &good, &node.verifying_key()).is_err());
    // A receipt entry whose body was changed no longer chains.
    let mut p2 = proof.clone();
    p2.body.push(b' ');
    assert!(
        check_inclusion(
            &p2,
            rest.iter()
                .map(|(s, a, p, h, b)| (*s, *a, *p, *h, b.as_slice())),
            &good,
            &node.verifying_key()
        )
        .is_err()
    );
}
