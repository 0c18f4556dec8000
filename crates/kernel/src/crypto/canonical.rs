//! RFC 8785 (JCS) canonical JSON and signed records that keep their exact signed bytes.
//!
//! [`canonical_json`] serializes a value to RFC 8785 bytes through `serde_jcs` (keys sorted by
//! UTF-16 code units, no whitespace, minimal string escapes). [`SignedRecord`] signs
//! `domain || 0x00 || bytes` and stores `bytes` next to the signature; a verifier checks the
//! signature over the stored bytes and never re-serializes to verify.
//!
//! Key decisions:
//! * **Our profile of JCS is integers only, |n| ≤ 2^53 − 1.** Floats and larger integers are
//!   rejected with [`CryptoError::NonCanonical`]: JCS formats numbers as ECMAScript doubles,
//!   so a money amount or a 64-bit id beyond 2^53 would be silently rounded in the signed
//!   bytes. Put such values in strings.
//! * **The stored bytes are the truth.** Re-canonicalising is only a consistency check
//!   ([`SignedRecord::is_canonical`], also enforced by [`SignedRecord::open`]), so a future
//!   serde or `serde_jcs` change can never invalidate old signatures.
//! * In JSON a record is `{"domain", "bytes", "signature", "signer"}` where `bytes` is the
//!   canonical JSON text as a string (exact: a JSON string round-trips to the same UTF-8),
//!   `signature` is hex and `signer` the signer's key fingerprint.
//!
//! Rejected: CBOR/COSE (not deterministic without extra discipline and unreadable in logs);
//! signing the serde struct again at verification time (ties signatures to today's struct
//! definition); accepting floats (the JCS number rules are the part implementations get wrong).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::keys::{Signature, SigningKey, VerifyingKey};
use super::{CryptoError, Result};

/// Largest integer magnitude our JCS profile accepts: 2^53 − 1 (I-JSON, RFC 7493 §2.2).
pub const SAFE_INTEGER_MAX: u64 = (1 << 53) - 1;

/// Rejects floats and integers beyond ±[`SAFE_INTEGER_MAX`] anywhere inside `value`.
fn check_numbers(value: &Value) -> Result<()> {
    match value {
        Value::Number(n) => {
            let safe = if let Some(u) = n.as_u64() {
                u <= SAFE_INTEGER_MAX
            } else if let Some(i) = n.as_i64() {
                i.unsigned_abs() <= SAFE_INTEGER_MAX
            } else {
                return Err(CryptoError::NonCanonical(
                    "floating-point numbers are not allowed",
                ));
            };
            if safe {
                Ok(())
            } else {
                Err(CryptoError::NonCanonical(
                    "integer magnitude exceeds 2^53 - 1",
                ))
            }
        }
        Value::Array(items) => items.iter().try_for_each(check_numbers),
        Value::Object(map) => map.values().try_for_each(check_numbers),
        Value::Null | Value::Bool(_) | Value::String(_) => Ok(()),
    }
}

fn jcs(value: &Value) -> Result<Vec<u8>> {
    check_numbers(value)?;
    serde_jcs::to_vec(value).map_err(|e| CryptoError::malformed("JCS serialization", e))
}

/// RFC 8785 canonical JSON of `value` under our integer-only profile.
pub fn canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let tree = serde_json::to_value(value).map_err(|e| CryptoError::malformed("JSON value", e))?;
    jcs(&tree)
}

/// Parses JSON text and returns its canonical form (duplicate keys: the last one wins, which
/// then makes [`is_canonical`] false for the original text).
pub fn canonicalize(json: &[u8]) -> Result<Vec<u8>> {
    let tree: Value =
        serde_json::from_slice(json).map_err(|e| CryptoError::malformed("JSON text", e))?;
    jcs(&tree)
}

/// Whether `json` is exactly its own canonical form.
pub fn is_canonical(json: &[u8]) -> bool {
    canonicalize(json).is_ok_and(|c| c == json)
}

/// Longest accepted record domain name in bytes.
pub const RECORD_DOMAIN_LEN_MAX: usize = 128;

/// A record domain is printable ASCII without spaces, e.g. `tally/ledger-checkpoint/v1`; the
/// signature covers it followed by one NUL byte.
fn domain_tag(domain: &str) -> Result<Vec<u8>> {
    let ok = !domain.is_empty()
        && domain.len() <= RECORD_DOMAIN_LEN_MAX
        && domain.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if !ok {
        return Err(CryptoError::Malformed(format!(
            "record domain must be 1..={RECORD_DOMAIN_LEN_MAX} printable ASCII characters"
        )));
    }
    let mut tag = Vec::with_capacity(domain.len() + 1);
    tag.extend_from_slice(domain.as_bytes());
    tag.push(0);
    Ok(tag)
}

/// A canonical-JSON payload with its Ed25519 signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRecord {
    /// What the record is, e.g. `tally/ledger-checkpoint/v1` (no trailing NUL here).
    pub domain: String,
    /// The exact canonical JSON bytes that were signed.
    #[serde(with = "utf8_bytes")]
    pub bytes: Vec<u8>,
    /// Ed25519 signature over `domain || 0x00 || bytes`.
    pub signature: Signature,
    /// Fingerprint ([`VerifyingKey::fingerprint`]) of the signing key.
    pub signer: String,
}

impl SignedRecord {
    /// Canonicalizes `value` and signs it for `domain`.
    pub fn sign<T: Serialize + ?Sized>(
        domain: &str,
        value: &T,
        key: &SigningKey,
    ) -> Result<SignedRecord> {
        let tag = domain_tag(domain)?;
        let bytes = canonical_json(value)?;
        let signature = key.sign(&tag, &bytes);
        Ok(SignedRecord {
            domain: domain.to_owned(),
            bytes,
            signature,
            signer: key.verifying_key().fingerprint(),
        })
    }

    /// Checks that `key` is the recorded signer and that the signature covers the stored bytes.
    pub fn verify(&self, key: &VerifyingKey) -> Result<()> {
        if self.signer != key.fingerprint() {
            return Err(CryptoError::WrongKey(
                "record was signed by a different key",
            ));
        }
        key.verify(&domain_tag(&self.domain)?, &self.bytes, &self.signature)
    }

    /// Whether the stored bytes are canonical JSON (always true for records made by
    /// [`SignedRecord::sign`]).
    pub fn is_canonical(&self) -> bool {
        is_canonical(&self.bytes)
    }

    /// Verifies, checks the bytes are canonical, then deserializes the payload.
    pub fn open<T: DeserializeOwned>(&self, key: &VerifyingKey) -> Result<T> {
        self.verify(key)?;
        if !self.is_canonical() {
            return Err(CryptoError::NonCanonical(
                "signed bytes are not canonical JSON",
            ));
        }
        serde_json::from_slice(&self.bytes).map_err(|e| CryptoError::malformed("record payload", e))
    }
}

/// `Vec<u8>` holding UTF-8 JSON text, serialized as a JSON string.
mod utf8_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        let text = std::str::from_utf8(bytes).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        String::deserialize(deserializer).map(String::into_bytes)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly by design.
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// RFC 8785 §3.2.2 example. The full RFC (with its floats) goes through `serde_jcs`
    /// itself; our profile must refuse it because of the floats.
    #[test]
    fn rfc8785_example_object() {
        let input = r#"{
            "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
            "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
            "literals": [null, true, false]
        }"#;
        let expected = "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,\
                        0.002,1e-27],\"string\":\"\u{20ac}$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}";
        let tree: Value = serde_json::from_str(input).unwrap();
        assert_eq!(
            String::from_utf8(serde_jcs::to_vec(&tree).unwrap()).unwrap(),
            expected
        );
        assert!(matches!(
            canonicalize(input.as_bytes()),
            Err(CryptoError::NonCanonical(_))
        ));
    }

    /// RFC 8785 §3.2.3 sorting example: keys ordered by UTF-16 code units, not UTF-8 bytes
    /// (the emoji U+1F600 is the surrogate pair D83D DE00, which sorts before U+FB33).
    #[test]
    fn rfc8785_property_sorting() {
        let input = r#"{
            "\u20ac": "Euro Sign",
            "\r": "Carriage Return",
            "\ufb33": "Hebrew Letter Dalet With Dagesh",
            "1": "One",
            "\ud83d\ude00": "Emoji: Grinning Face",
            "\u0080": "Control",
            "\u00f6": "Latin Small Letter O With Diaeresis"
        }"#;
        let expected = "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\
                        \"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\
                        \"\u{20ac}\":\"Euro Sign\",\
                        \"\u{1f600}\":\"Emoji: Grinning Face\",\
                        \"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}";
        let canonical = canonicalize(input.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(canonical.clone()).unwrap(), expected);
        assert!(is_canonical(&canonical));
        assert!(!is_canonical(input.as_bytes()));
    }

    #[test]
    fn profile_rejects_floats_and_unsafe_integers() {
        assert!(canonical_json(&serde_json::json!({"a": SAFE_INTEGER_MAX})).is_ok());
        assert!(canonical_json(&serde_json::json!({"a": -(SAFE_INTEGER_MAX as i64)})).is_ok());
        for bad in [
            serde_json::json!({"a": SAFE_INTEGER_MAX + 1}),
            serde_json::json!({"a": -(SAFE_INTEGER_MAX as i64) - 1}),
            serde_json::json!([1.5]),
            serde_json::json!({"deep": [{"x": u64::MAX}]}),
        ] {
            assert!(
                matches!(canonical_json(&bad), Err(CryptoError::NonCanonical(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn non_canonical_text_is_detected() {
        assert!(is_canonical(br#"{"a":1,"b":[true,null]}"#));
        assert!(!is_canonical(br#"{"b":1,"a":2}"#)); // order
        assert!(!is_canonical(br#"{"a": 1}"#)); // whitespace
        assert!(!is_canonical(br#"{"a":1,"a":1}"#)); // duplicate key
        assert!(!is_canonical(br#"{"a":"\u0041"}"#)); // needless escape
        assert!(!is_canonical(b"not json"));
        assert!(!is_canonical(br#"{"a":1} "#)); // trailing space
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Checkpoint {
        seq: u64,
        root: String,
        amount_minor: i64,
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            seq: 7,
            root: "abc".into(),
            amount_minor: -1250,
        }
    }

    #[test]
    fn signed_record_round_trip() {
        let key = SigningKey::from_seed(&[9; 32]);
        let vk = key.verifying_key();
        let rec = SignedRecord::sign("tally/test-checkpoint/v1", &checkpoint(), &key).unwrap();
        assert_eq!(rec.bytes, br#"{"amount_minor":-1250,"root":"abc","seq":7}"#);
        assert_eq!(rec.signer, vk.fingerprint());
        assert!(rec.is_canonical());
        rec.verify(&vk).unwrap();
        assert_eq!(rec.open::<Checkpoint>(&vk).unwrap(), checkpoint());
        // The signature is over domain || NUL || bytes, checked with the raw key API.
        vk.verify(b"tally/test-checkpoint/v1\0", &rec.bytes, &rec.signature)
            .unwrap();

        // Survives a JSON round trip byte for byte.
        let stored = serde_json::to_string(&rec).unwrap();
        let back: SignedRecord = serde_json::from_str(&stored).unwrap();
        assert_eq!(back, rec);
        back.verify(&vk).unwrap();
    }

    #[test]
    fn signed_record_rejects_tampering_and_wrong_keys() {
        let key = SigningKey::from_seed(&[9; 32]);
        let vk = key.verifying_key();
        let rec = SignedRecord::sign("tally/test-checkpoint/v1", &checkpoint(), &key).unwrap();

        let mut body = rec.clone();
        body.bytes = br#"{"amount_minor":-1251,"root":"abc","seq":7}"#.to_vec();
        assert!(matches!(body.verify(&vk), Err(CryptoError::BadSignature)));

        let mut domain = rec.clone();
        domain.domain = "tally/other/v1".into();
        assert!(matches!(domain.verify(&vk), Err(CryptoError::BadSignature)));

        let mut bad_domain = rec.clone();
        bad_domain.domain = "has space".into();
        assert!(matches!(
            bad_domain.verify(&vk),
            Err(CryptoError::Malformed(_))
        ));

        let other = SigningKey::from_seed(&[10; 32]).verifying_key();
        assert!(matches!(rec.verify(&other), Err(CryptoError::WrongKey(_))));
        // Lying about the signer does not help: the signature still fails.
        let mut forged = rec.clone();
        forged.signer = other.fingerprint();
        assert!(matches!(
            forged.verify(&other),
            Err(CryptoError::BadSignature)
        ));
    }

    #[test]
    fn open_refuses_signed_but_non_canonical_bytes() {
        let key = SigningKey::from_seed(&[9; 32]);
        let vk = key.verifying_key();
        let bytes = br#"{"seq":7,"root":"abc","amount_minor":-1250}"#.to_vec();
        let rec = SignedRecord {
            domain: "tally/test-checkpoint/v1".into(),
            signature: key.sign(b"tally/test-checkpoint/v1\0", &bytes),
            bytes,
            signer: vk.fingerprint(),
        };
        rec.verify(&vk).unwrap();
        assert!(!rec.is_canonical());
        assert!(matches!(
            rec.open::<Checkpoint>(&vk),
            Err(CryptoError::NonCanonical(_))
        ));
    }

    #[test]
    fn sign_rejects_bad_domains_and_values() {
        let key = SigningKey::from_seed(&[9; 32]);
        assert!(SignedRecord::sign("", &1, &key).is_err());
        assert!(SignedRecord::sign("a\0b", &1, &key).is_err());
        assert!(SignedRecord::sign(&"x".repeat(129), &1, &key).is_err());
        assert!(matches!(
            SignedRecord::sign("tally/x/v1", &0.5, &key),
            Err(CryptoError::NonCanonical(_))
        ));
    }

    /// Arbitrary JSON within our profile: integers in the safe range, strings, nesting.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-(SAFE_INTEGER_MAX as i64)..=SAFE_INTEGER_MAX as i64).prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((any::<String>(), inner), 0..6)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Canonical output does not depend on the order keys were inserted in.
        #[test]
        fn canonical_output_ignores_key_order(
            entries in prop::collection::vec((any::<String>(), json_value()), 0..8),
        ) {
            let forward: BTreeMap<String, Value> = entries.iter().cloned().collect();
            let mut reversed_text = String::from("{");
            for (i, (k, v)) in forward.iter().rev().enumerate() {
                if i > 0 { reversed_text.push(','); }
                reversed_text.push_str(&serde_json::to_string(k).unwrap());
                reversed_text.push(':');
                reversed_text.push_str(&serde_json::to_string_pretty(v).unwrap());
            }
            reversed_text.push('}');
            let a = canonical_json(&forward).unwrap();
            let b = canonicalize(reversed_text.as_bytes()).unwrap();
            prop_assert_eq!(a, b);
        }

        /// parse → canonicalise is a fixed point, and the value survives unchanged.
        #[test]
        fn canonical_round_trip(value in json_value()) {
            let bytes = canonical_json(&value).unwrap();
            prop_assert!(is_canonical(&bytes));
            prop_assert_eq!(canonicalize(&bytes).unwrap(), bytes.clone());
            let parsed: Value = serde_json::from_slice(&bytes).unwrap();
            prop_assert_eq!(parsed, value);
        }
    }
}
