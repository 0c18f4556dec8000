//! Golden vectors pinned in `docs/protocols/vectors/crypto.json`.
//!
//! The test recomputes every vector from fixed inputs and compares with the file; with
//! `UPDATE_EXPECT=1` it rewrites the file instead. It also checks the file on its own terms
//! (the pinned record verifies, the pinned ciphertext decrypts), so a hand-edited file that
//! merely matches itself cannot pass. Rejected: inline `expect![]` snapshots, because other
//! implementations (clients in other languages) need the vectors as plain data.

use serde_json::{Value, json};

use super::canonical::SignedRecord;
use super::keys::{SigningKey, VerifyingKey};
use super::stream::{decrypt_stream, encrypt_stream_with};
use super::{kdf, otp};

const VECTORS_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/protocols/vectors/crypto.json"
);

const SEED: [u8; 32] = [0x5e; 32];
const RECORD_DOMAIN: &str = "tally/vector-record/v1";
const STREAM_KEY: [u8; 32] = [0x42; 32];
const STREAM_SALT: [u8; 32] = [0x53; 32];
const STREAM_NONCE_PREFIX: [u8; 19] = [0x4e; 19];
const STREAM_CHUNK: u32 = 16;
const STREAM_PLAINTEXT: &[u8] = b"Tally stream vector: two full chunks + tail";

fn record_payload() -> Value {
    json!({
        "amount_minor": 12_500,
        "currency": "EUR",
        "memo": "caf\u{e9} \u{20ac}",
        "seq": 1,
        "zeta": [true, null],
        "alpha": {"b": 2, "a": 1}
    })
}

fn compute() -> Value {
    let key = SigningKey::from_seed(&SEED);
    let vk = key.verifying_key();
    let record = SignedRecord::sign(RECORD_DOMAIN, &record_payload(), &key).unwrap();
    let signed_message = [RECORD_DOMAIN.as_bytes(), b"\0", &record.bytes].concat();

    let mut ciphertext = Vec::new();
    encrypt_stream_with(
        &STREAM_KEY,
        &STREAM_SALT,
        &STREAM_NONCE_PREFIX,
        STREAM_PLAINTEXT,
        &mut ciphertext,
        STREAM_CHUNK,
    )
    .unwrap();
    let file_key = kdf::hkdf_sha256(&STREAM_KEY, &STREAM_SALT, b"tally/stream/v1", 32).unwrap();

    let code_key = b"tally-otp-vector-key";
    let code_message = br#"{"amount_minor":500,"session":"s-1"}"#;

    json!({
        "about": "Tally crypto golden vectors. Regenerate deliberately with \
                  UPDATE_EXPECT=1 cargo test -p tally-kernel; formats in docs/protocols/crypto.md.",
        "ed25519_key": {
            "seed_hex": hex::encode(SEED),
            "public_key_hex": vk.to_hex(),
            "public_key_base64url": vk.to_base64(),
            "fingerprint": vk.fingerprint(),
        },
        "signed_record": {
            "note": "signature = Ed25519(seed, domain || 0x00 || bytes); \
                     bytes = RFC 8785 JCS of value",
            "value": record_payload(),
            "signed_message_hex": hex::encode(signed_message),
            "record": record,
        },
        "stream": {
            "key_hex": hex::encode(STREAM_KEY),
            "salt_hex": hex::encode(STREAM_SALT),
            "nonce_prefix_hex": hex::encode(STREAM_NONCE_PREFIX),
            "chunk_size": STREAM_CHUNK,
            "file_key_hex": hex::encode(file_key.expose()),
            "plaintext_hex": hex::encode(STREAM_PLAINTEXT),
            "ciphertext_hex": hex::encode(&ciphertext),
        },
        "code_hmac_sha256": {
            "key_hex": hex::encode(code_key),
            "message_hex": hex::encode(code_message),
            "digits": 8,
            "code": otp::code_hmac_sha256(code_key, code_message, 8).unwrap(),
        },
    })
}

/// Checks the pinned file on its own: the record verifies and opens to the pinned value, the
/// ciphertext decrypts to the pinned plaintext, the public key matches the seed.
fn check_self_consistent(pinned: &Value) {
    let key = SigningKey::from_seed(&SEED);
    let vk =
        VerifyingKey::from_hex(pinned["ed25519_key"]["public_key_hex"].as_str().unwrap()).unwrap();
    assert_eq!(vk, key.verifying_key());
    let record: SignedRecord =
        serde_json::from_value(pinned["signed_record"]["record"].clone()).unwrap();
    let opened: Value = record.open(&vk).unwrap();
    assert_eq!(opened, pinned["signed_record"]["value"]);

    let stream = &pinned["stream"];
    let bytes = |field: &str| hex::decode(stream[field].as_str().unwrap()).unwrap();
    let key: [u8; 32] = bytes("key_hex").try_into().unwrap();
    let mut plaintext = Vec::new();
    decrypt_stream(&key, &bytes("ciphertext_hex")[..], &mut plaintext).unwrap();
    assert_eq!(plaintext, bytes("plaintext_hex"));
}

#[test]
fn golden_vectors_match_the_pinned_file() {
    let actual = compute();
    if std::env::var_os("UPDATE_EXPECT").is_some_and(|v| v == "1") {
        let dir = std::path::Path::new(VECTORS_PATH).parent().unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let text = serde_json::to_string_pretty(&actual).unwrap() + "\n";
        std::fs::write(VECTORS_PATH, text).unwrap();
    }
    let pinned_text = std::fs::read_to_string(VECTORS_PATH)
        .unwrap_or_else(|e| panic!("{VECTORS_PATH}: {e}; run with UPDATE_EXPECT=1 to create it"));
    let pinned: Value = serde_json::from_str(&pinned_text).unwrap();
    check_self_consistent(&pinned);
    assert_eq!(
        actual, pinned,
        "crypto output changed; if deliberate, rerun with UPDATE_EXPECT=1 and review the diff"
    );
}
