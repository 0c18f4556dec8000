use super::*;
use proptest::prelude::*;
use std::io::Cursor;
use tally_kernel::Currency;

const NODE_SECRET: &[u8] = b"tally-delivery-test-secret-0123456789";

fn node() -> SigningKey {
    SigningKey::from_seed(&[9; 32])
}

fn product() -> Id {
    Id(uuid::Uuid::from_u128(
        0x0190_0000_0000_7000_8000_0000_0000_0001,
    ))
}

fn reference(nonce: u8) -> ReferenceCode {
    ReferenceCode::new(
        product(),
        "Ada Buyer <ada@example.com>",
        Timestamp(1_767_225_600_000_000),
        [nonce; 16],
    )
}

/// A small version 1 package with fixed randomness: (bytes, header, unlock key).
fn package(nonce: u8, product_bytes: &[u8]) -> (Vec<u8>, Header, [u8; 32]) {
    package_v(nonce, product_bytes, u32::from(VERSION_1))
}

/// The formats this code reads (and writes, for a header that asks for an older one).
const VERSIONS: [u32; 3] = [VERSION_1 as u32, VERSION_2 as u32, VERSION as u32];

/// [`package`] in format `v`.
fn package_v(nonce: u8, product_bytes: &[u8], v: u32) -> (Vec<u8>, Header, [u8; 32]) {
    let code = reference(nonce);
    let unlock = *code.unlock_key(NODE_SECRET).expect("key").expose();
    let content_key = [0x42_u8; 32];
    let mut sealed_product = Vec::new();
    let p = seal_entry(
        v,
        &content_key,
        "song.flac",
        EntryKind::Product,
        product_bytes,
        &mut sealed_product,
        [1; stream::SALT_LEN],
        [2; stream::NONCE_PREFIX_LEN],
    )
    .expect("seal product");
    let registration = format!("registration for {}; authenticity A7Q2", code.display());
    let mut sealed_registration = Vec::new();
    let r = seal_entry(
        v,
        &content_key,
        "registration.txt",
        EntryKind::Registration,
        registration.as_bytes(),
        &mut sealed_registration,
        [3; stream::SALT_LEN],
        [4; stream::NONCE_PREFIX_LEN],
    )
    .expect("seal registration");
    let header = Header {
        v,
        sale: Id(uuid::Uuid::from_u128(
            0x0190_0000_0000_7000_8000_0000_0000_0100 + u128::from(nonce),
        )),
        product: product(),
        reference: code.clone(),
        instruction: Instruction {
            title: "Song".into(),
            text: format!("Pay 9.90 EUR quoting {code}; the unlock key comes to you."),
            amount: Amount::new(990, Currency::from_code("EUR").expect("EUR")),
            pay_to: "account 0190…".into(),
            licence: "Personal use.".into(),
        },
        entries: vec![p.for_version(v), r.for_version(v)],
        content_key_wrap: Header::wrap_content_key(&content_key, &unlock, &code, &[5; 24])
            .expect("wrap"),
        node_key: node().verifying_key().to_hex(),
    };
    let mut out = Vec::new();
    write_package(
        &mut out,
        &header,
        &mut [
            &mut sealed_product.as_slice(),
            &mut sealed_registration.as_slice(),
        ],
        &node(),
    )
    .expect("write");
    (out, header, unlock)
}

fn product_bytes() -> Vec<u8> {
    (0..200_000_u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

#[test]
fn a_package_round_trips_and_yields_the_product() {
    for v in VERSIONS {
        round_trip(v);
    }
}

fn round_trip(v: u32) {
    let data = product_bytes();
    let (bytes, header, unlock) = package_v(1, &data, v);
    assert_eq!(u32::from(bytes[8]), v);
    let trusted = node().verifying_key();
    let inspected = inspect(bytes.as_slice(), Some(&trusted)).expect("verifies");
    assert_eq!(inspected.header, header);
    assert_eq!(inspected.header.instruction.amount.minor, 990);
    let mut out = Vec::new();
    let n =
        unlock_entry(&mut Cursor::new(&bytes), &inspected, &unlock, 0, &mut out).expect("unlock");
    assert_eq!((n as usize, out == data), (data.len(), true));
    let mut reg = Vec::new();
    unlock_entry(&mut Cursor::new(&bytes), &inspected, &unlock, 1, &mut reg).expect("registration");
    assert!(String::from_utf8(reg).expect("utf-8").contains("A7Q2"));
    let ack = inspected.acknowledgement();
    assert_eq!(ack.package_sha256, hex::encode(inspected.package_sha256));
}

#[test]
fn reference_codes_catch_typos_and_read_loosely() {
    let code = reference(1);
    assert_eq!(code.as_str().len(), REFERENCE_LEN);
    let shown = code.display();
    assert_eq!(ReferenceCode::parse(&shown).expect("as shown"), code);
    assert_eq!(
        ReferenceCode::parse(&shown.to_lowercase().replace('-', " ")).expect("loose"),
        code
    );
    // Every single-character substitution and every adjacent transposition of distinct
    // characters is caught (Luhn mod 32 misses none at these positions in this code).
    let chars: Vec<char> = code.as_str().chars().collect();
    for i in 0..chars.len() {
        for a in ALPHABET
            .iter()
            .map(|b| *b as char)
            .filter(|c| *c != chars[i])
        {
            let mut typo = chars.clone();
            typo[i] = a;
            let typo: String = typo.into_iter().collect();
            assert!(ReferenceCode::parse(&typo).is_err(), "{typo}");
        }
    }
    for i in 0..chars.len() - 1 {
        if chars[i] != chars[i + 1] {
            let mut swapped = chars.clone();
            swapped.swap(i, i + 1);
            let swapped: String = swapped.into_iter().collect();
            // Luhn mod N misses exactly one transposition pair; tolerate only that.
            if ReferenceCode::parse(&swapped).is_ok() {
                let pair = [chars[i], chars[i + 1]];
                assert!(pair.contains(&'0') || pair.contains(&'Z'), "{swapped}");
            }
        }
    }
    assert!(matches!(
        ReferenceCode::parse("ABC"),
        Err(PackageError::BadReference(_))
    ));
    assert!(matches!(
        ReferenceCode::parse(&format!("{shown}7")),
        Err(PackageError::BadReference(_))
    ));
    assert!(matches!(
        ReferenceCode::parse("ABCDE-FGHJK-MNPQR-STVWX-U"),
        Err(PackageError::BadReference(_))
    ));
    // Different sales, different codes and keys.
    assert_ne!(reference(1), reference(2));
    assert_ne!(
        reference(1).unlock_key(NODE_SECRET).expect("k").expose(),
        reference(2).unlock_key(NODE_SECRET).expect("k").expose()
    );
}

#[test]
fn bad_packages_are_refused_precisely_and_never_show_the_instruction() {
    for v in VERSIONS {
        bad_packages_are_refused(v);
    }
}

fn bad_packages_are_refused(v: u32) {
    let (bytes, header, unlock) = package_v(1, &product_bytes(), v);
    let entry0 = 13
        + bytes[9..13]
            .iter()
            .fold(0_usize, |a, b| a * 256 + usize::from(*b));
    // Truncated anywhere.
    for cut in [
        0,
        5,
        12,
        40,
        entry0 + 10,
        bytes.len() - 200,
        bytes.len() - 1,
    ] {
        let r = inspect(&bytes[..cut], None);
        assert!(
            matches!(r, Err(PackageError::Truncated(_))),
            "cut {cut}: {r:?}"
        );
    }
    // A flipped bit in the header, an entry, the trailer.
    let flip = |at: usize| {
        let mut b = bytes.clone();
        b[at] ^= 0x01;
        inspect(b.as_slice(), None)
    };
    assert!(matches!(flip(0), Err(PackageError::NotAPackage)));
    let with_version_byte = |byte: u8| {
        let mut b = bytes.clone();
        b[8] = byte;
        inspect(b.as_slice(), None)
    };
    assert!(matches!(
        with_version_byte(0),
        Err(PackageError::UnsupportedVersion(0))
    ));
    assert!(
        matches!(with_version_byte(VERSION + 1), Err(PackageError::UnsupportedVersion(n)) if n == VERSION + 1)
    );
    for other in VERSIONS.into_iter().filter(|o| *o != v) {
        // Another version this code reads: the header, which says `v`, disagrees.
        let other = u8::try_from(other).expect("a version byte");
        assert!(
            matches!(with_version_byte(other), Err(PackageError::BadHeader(_))),
            "{v} as {other}"
        );
    }
    assert!(flip(entry0 - 30).is_err(), "a header byte");
    assert!(matches!(flip(entry0 + 100), Err(PackageError::EntryDamaged(n)) if n == "song.flac"));
    assert!(
        matches!(flip(bytes.len() - 90), Err(PackageError::Altered)),
        "the digest"
    );
    assert!(matches!(
        flip(bytes.len() - 10),
        Err(PackageError::BadSignature)
    ));
    // Appended bytes; another signer; another node trusted.
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"junk");
    assert!(matches!(
        inspect(longer.as_slice(), None),
        Err(PackageError::TrailingBytes(4))
    ));
    let other = SigningKey::from_seed(&[10; 32]).verifying_key();
    assert!(matches!(
        inspect(bytes.as_slice(), Some(&other)),
        Err(PackageError::UntrustedSigner { .. })
    ));
    // Entries reordered or spliced from another sale's package.
    let (other_pkg, other_header, _) = package_v(2, &product_bytes(), v);
    let mut spliced = bytes.clone();
    let reg_at = entry0 + header.entries[0].sealed_len as usize;
    let other_entry0 = 13
        + other_pkg[9..13]
            .iter()
            .fold(0_usize, |a, b| a * 256 + usize::from(*b));
    let other_reg_at = other_entry0 + other_header.entries[0].sealed_len as usize;
    let other_reg =
        &other_pkg[other_reg_at..other_reg_at + other_header.entries[1].sealed_len as usize];
    spliced.splice(
        reg_at..reg_at + header.entries[1].sealed_len as usize,
        other_reg.iter().copied(),
    );
    assert!(
        inspect(spliced.as_slice(), None).is_err(),
        "spliced registration"
    );
    // Another sale's key does not unlock this package.
    let inspected = inspect(bytes.as_slice(), None).expect("verifies");
    let (_, _, other_unlock) = package_v(2, b"x", v);
    let r = unlock_entry(
        &mut Cursor::new(&bytes),
        &inspected,
        &other_unlock,
        0,
        Vec::new(),
    );
    assert!(matches!(r, Err(PackageError::WrongKey)));
    assert!(
        unlock_entry(
            &mut Cursor::new(&bytes),
            &inspected,
            &unlock,
            0,
            std::io::sink()
        )
        .is_ok()
    );
}

#[test]
fn the_writer_refuses_entries_that_differ_from_the_header() {
    let (_, header, _) = package(1, b"abc");
    let mut out = Vec::new();
    let r = write_package(
        &mut out,
        &header,
        &mut [&mut &b"wrong"[..], &mut &b"bytes"[..]],
        &node(),
    );
    assert!(matches!(r, Err(PackageError::EntryDamaged(_))));
    let r = write_package(&mut out, &header, &mut [&mut &b""[..]], &node());
    assert!(matches!(r, Err(PackageError::BadHeader(_))));
    let r = write_package(&mut out, &header, &mut [], &SigningKey::from_seed(&[1; 32]));
    assert!(matches!(r, Err(PackageError::BadHeader(_))));
}

/// Golden vector, pinned in `docs/protocols/vectors/delivery.json` (UPDATE_EXPECT=1 rewrites it).
#[test]
fn package_vector_matches_the_pinned_file() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/protocols/vectors/delivery.json"
    );
    let (bytes, header, unlock) = package(1, b"The product: 32 bytes of content");
    let code = reference(1);
    let computed = serde_json::json!({
        "about": "Locked-delivery vectors; see docs/protocols/delivery.md. Regenerate with UPDATE_EXPECT=1 cargo test -p tally-proto.",
        "node_secret_hex": hex::encode(NODE_SECRET),
        "node_signing_seed_hex": hex::encode([9_u8; 32]),
        "reference": {
            "binding_jcs": String::from_utf8(canonical_json(&ReferenceBinding {
                v: 1, product: product(), buyer: "Ada Buyer <ada@example.com>",
                issued_at: 1_767_225_600_000_000, nonce: hex::encode([1_u8; 16]),
            }).expect("jcs")).expect("utf-8"),
            "code": code.display(),
            "unlock_key_hex": hex::encode(unlock),
        },
        "content_key_hex": hex::encode([0x42_u8; 32]),
    });
    crate::pinned::check(path, &with_package(computed, &bytes, &header));
}

/// The version 2 golden vector, pinned in `docs/protocols/vectors/delivery_v2.json`
/// (UPDATE_EXPECT=1 rewrites it) and re-checked outside Rust by
/// `docs/protocols/vectors/check_delivery_v2.py` (which also decrypts the product).
#[test]
fn package_v2_vector_matches_the_pinned_file() {
    check_vector(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/protocols/vectors/delivery_v2.json"
        ),
        VERSION_2,
        "Locked-delivery package, format version 2; see docs/protocols/delivery.md. Regenerate with UPDATE_EXPECT=1 cargo test -p tally-proto; check with python3 docs/protocols/vectors/check_delivery_v2.py.",
    );
}

/// The version 3 golden vector, pinned in `docs/protocols/vectors/delivery_v3.json`
/// (UPDATE_EXPECT=1 rewrites it) and re-checked outside Rust by the same
/// `docs/protocols/vectors/check_delivery_v2.py`, which reads both versions (BLAKE3 through
/// Debian's `b3sum`).
#[test]
fn package_v3_vector_matches_the_pinned_file() {
    check_vector(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/protocols/vectors/delivery_v3.json"
        ),
        VERSION,
        "Locked-delivery package, format version 3; see docs/protocols/delivery.md. Regenerate with UPDATE_EXPECT=1 cargo test -p tally-proto; check with python3 docs/protocols/vectors/check_delivery_v2.py docs/protocols/vectors/delivery_v3.json.",
    );
}

/// The package of format `v` for the pinned vectors of versions 2 and 3, against the file at
/// `path`.
fn check_vector(path: &str, v: u8, about: &str) {
    let product = b"The product: 32 bytes of content";
    let (bytes, header, unlock) = package_v(1, product, u32::from(v));
    let computed = serde_json::json!({
        "about": about,
        "node_signing_seed_hex": hex::encode([9_u8; 32]),
        "node_public_key_hex": node().verifying_key().to_hex(),
        "unlock_key_hex": hex::encode(unlock),
        "reference": reference(1).as_str(),
        "product_hex": hex::encode(product),
    });
    crate::pinned::check(path, &with_package(computed, &bytes, &header));
}

/// A vector's fields with the package appended (last, in both vector files): the header's
/// canonical JSON, the package bytes and the digest the trailer signs.
fn with_package(mut fields: serde_json::Value, bytes: &[u8], header: &Header) -> serde_json::Value {
    let map = fields
        .as_object_mut()
        .expect("the vector's fields are an object");
    map.insert(
        "header_jcs".into(),
        String::from_utf8(canonical_json(header).expect("jcs"))
            .expect("utf-8")
            .into(),
    );
    map.insert("package_hex".into(), hex::encode(bytes).into());
    map.insert(
        "package_digest".into(),
        hex::encode(tally_kernel::crypto::kdf::sha256(
            &header_bytes(header).expect("header bytes"),
        ))
        .into(),
    );
    fields
}

/// A header of one version in a package of another, and hashes in the wrong version, are
/// refused even when signed.
#[test]
fn versions_do_not_mix() {
    let (bytes, header, _) = package_v(1, b"abc", u32::from(VERSION_2));
    // The version byte changed to 1: the header still says 2.
    let mut old_byte = bytes.clone();
    old_byte[8] = VERSION_1;
    assert!(matches!(
        inspect(old_byte.as_slice(), None),
        Err(PackageError::BadHeader(_))
    ));
    // A version 2 header listing a plaintext hash, or a version 1 header without one, does
    // not even encode.
    let mut listed = header.clone();
    listed.entries[0].plain_sha256 = Some("00".repeat(32));
    assert!(matches!(
        header_bytes(&listed),
        Err(PackageError::BadHeader(_))
    ));
    let mut v1_without = header.clone();
    v1_without.v = u32::from(VERSION_1);
    assert!(matches!(
        header_bytes(&v1_without),
        Err(PackageError::BadHeader(_))
    ));
    // A version 2 header marked version 3 lists SHA-256 where version 3 wants BLAKE3; the
    // other way round too; and a header listing both is refused in either version.
    let mut v3 = header.clone();
    v3.v = u32::from(VERSION);
    assert!(matches!(header_bytes(&v3), Err(PackageError::BadHeader(_))));
    let (_, header3, _) = package_v(1, b"abc", u32::from(VERSION));
    let mut v2 = header3.clone();
    v2.v = u32::from(VERSION_2);
    assert!(matches!(header_bytes(&v2), Err(PackageError::BadHeader(_))));
    let mut both = header3.clone();
    both.entries[0].sealed_sha256 = header.entries[0].sealed_sha256.clone();
    assert!(matches!(
        header_bytes(&both),
        Err(PackageError::BadHeader(_))
    ));
    both.v = u32::from(VERSION_2);
    assert!(matches!(
        header_bytes(&both),
        Err(PackageError::BadHeader(_))
    ));
    let mut v4 = header3;
    v4.v = u32::from(VERSION) + 1;
    assert!(matches!(header_bytes(&v4), Err(PackageError::BadHeader(_))));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whatever single byte is changed, the package does not verify (every version).
    #[test]
    fn any_changed_byte_is_caught(at in 0_usize..10_000, bit in 0_u8..8, v in 1_u32..=3) {
        let (mut bytes, _, _) = package_v(1, b"short product for the property test", v);
        let at = at % bytes.len();
        bytes[at] ^= 1 << bit;
        prop_assert!(inspect(bytes.as_slice(), None).is_err());
    }
}

mod notifications {
    use super::super::notification::*;
    use super::*;

    const SECRET: &[u8] = b"bank-shared-secret-for-tests";
    const NOW: Timestamp = Timestamp(1_767_225_600_000_000);

    fn body(reference: &str, amount: &str) -> Vec<u8> {
        format!(r#"{{"id":"bank-tx-77","reference":"{reference}","amount":"{amount}","paid_at":1767225500,"payer":"Ada Buyer"}}"#)
            .into_bytes()
    }

    fn hmac_header(ts: &str, body: &[u8]) -> String {
        let tag = tally_kernel::crypto::kdf::hmac_sha256(
            SECRET,
            &[DOMAIN, ts.as_bytes(), b".", body].concat(),
        );
        format!("hmac-sha256={}", hex::encode(tag))
    }

    fn bank() -> SigningKey {
        SigningKey::from_seed(&[11; 32])
    }

    fn ed_header(ts: &str, body: &[u8]) -> String {
        let sig = bank().sign(DOMAIN, &[ts.as_bytes(), b".", body].concat());
        format!("ed25519={}", hex::encode(sig.to_bytes()))
    }

    fn hmac_key() -> ReceiverKey {
        ReceiverKey::Hmac(Secret::new(SECRET.to_vec()))
    }

    #[test]
    fn signed_notifications_verify_with_either_scheme() {
        let code = reference(1).display();
        let b = body(&code, "9.90 EUR");
        let n = verify(
            &b,
            "1767225590",
            &hmac_header("1767225590", &b),
            &hmac_key(),
            NOW,
            300,
        )
        .expect("hmac");
        assert_eq!(
            (
                n.id.as_str(),
                n.amount.minor,
                n.reference
                    .code()
                    .map(ReferenceCode::display)
                    .unwrap_or_default()
            ),
            ("bank-tx-77", 990, code.clone())
        );
        let key = ReceiverKey::Ed25519(bank().verifying_key());
        let n2 = verify(
            &b,
            "1767225590",
            &ed_header("1767225590", &b),
            &key,
            NOW,
            300,
        )
        .expect("ed25519");
        assert_eq!(n, n2);
    }

    #[test]
    fn forged_stale_replayed_or_malformed_notifications_are_refused() {
        let code = reference(1).display();
        let b = body(&code, "9.90 EUR");
        let good = hmac_header("1767225590", &b);
        let err = |body: &[u8], ts: &str, sig: &str| {
            verify(body, ts, sig, &hmac_key(), NOW, 300).expect_err("refused")
        };
        // Another body, another timestamp, another key, another scheme's key.
        assert_eq!(
            err(&body(&code, "99.00 EUR"), "1767225590", &good),
            NotificationError::BadSignature
        );
        assert_eq!(
            err(&b, "1767225591", &good),
            NotificationError::BadSignature
        );
        let other = ReceiverKey::Hmac(Secret::new(b"another bank".to_vec()));
        assert_eq!(
            verify(&b, "1767225590", &good, &other, NOW, 300),
            Err(NotificationError::BadSignature)
        );
        let ed = ReceiverKey::Ed25519(bank().verifying_key());
        assert_eq!(
            verify(&b, "1767225590", &good, &ed, NOW, 300),
            Err(NotificationError::BadSignature)
        );
        // Outside the window: an old capture replayed, or a clock in the future.
        let old = hmac_header("1767220000", &b);
        assert_eq!(
            err(&b, "1767220000", &old),
            NotificationError::Stale {
                age_s: 5600,
                window_s: 300
            }
        );
        let future = hmac_header("1767229999", &b);
        assert_eq!(
            err(&b, "1767229999", &future),
            NotificationError::FromTheFuture { ahead_s: 4399 }
        );
        // Headers and bodies that are not what they should be.
        assert!(matches!(
            err(&b, "soon", &good),
            NotificationError::BadHeader(_)
        ));
        assert!(matches!(
            err(&b, "1767225590", "sha1=00"),
            NotificationError::BadHeader(_)
        ));
        assert!(matches!(
            err(&b, "1767225590", "hmac-sha256=zz"),
            NotificationError::BadHeader(_)
        ));
        // A mistyped reference is no refusal: the money was received; it is kept as typed.
        let typo = code.replacen(&code[..1], if code.starts_with('A') { "B" } else { "A" }, 1);
        let bt = body(&typo, "9.90 EUR");
        let kept = verify(
            &bt,
            "1767225590",
            &hmac_header("1767225590", &bt),
            &hmac_key(),
            NOW,
            300,
        )
        .expect("kept");
        assert_eq!(kept.reference, Quoted::Text(typo.clone()));
        let control = body(r"ref\u0000x", "9.90 EUR");
        assert!(matches!(
            err(&control, "1767225590", &hmac_header("1767225590", &control)),
            NotificationError::BadBody(_)
        ));
        let neg = body(&code, "-1.00 EUR");
        assert!(matches!(
            err(&neg, "1767225590", &hmac_header("1767225590", &neg)),
            NotificationError::BadBody(_)
        ));
        let extra =
            br#"{"id":"x","reference":"r","amount":"1 EUR","paid_at":1,"payer":"p","more":1}"#;
        assert!(matches!(
            err(extra, "1767225590", &hmac_header("1767225590", extra)),
            NotificationError::BadBody(_)
        ));
    }

    /// Pinned in `docs/protocols/vectors/notification.json` (UPDATE_EXPECT=1 rewrites it).
    #[test]
    fn notification_vector_matches_the_pinned_file() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/protocols/vectors/notification.json"
        );
        let b = body(&reference(1).display(), "9.90 EUR");
        let computed = serde_json::json!({
            "about": "Payment-notification vectors; see crates/proto/src/delivery/notification.rs. signed = DOMAIN || timestamp || '.' || body.",
            "domain": String::from_utf8_lossy(DOMAIN).trim_end_matches('\0'),
            "timestamp": "1767225590",
            "body": String::from_utf8(b.clone()).expect("utf-8"),
            "hmac_secret_hex": hex::encode(SECRET),
            "hmac_signature_header": hmac_header("1767225590", &b),
            "ed25519_seed_hex": hex::encode([11_u8; 32]),
            "ed25519_signature_header": ed_header("1767225590", &b),
        });
        crate::pinned::check(path, &computed);
    }
}
