//! Ed25519 keys: signing, strict verification, fingerprints and encodings.
//!
//! [`SigningKey`] and [`VerifyingKey`] wrap `ed25519-dalek` 3. Every signature covers
//! `domain || message`, where `domain` is a NUL-terminated ASCII tag such as
//! `b"tally/ledger-checkpoint/v1\0"`. The tag makes a signature made for one purpose useless
//! for every other purpose, and the terminating NUL (which may not appear inside a tag) makes
//! the set of tags prefix-free, so `tag1 || msg1` can never equal `tag2 || msg2` by sliding
//! bytes between tag and message.
//!
//! Key decisions:
//! * verification is always `verify_strict` (rejects small-order keys and non-canonical `R`,
//!   so a signature cannot be malleated into a second valid one); [`VerifyingKey`] construction
//!   also rejects weak (small-order) points up front.
//! * a key's public identity is its fingerprint: lowercase hex of SHA-256 over the 32 raw
//!   public-key bytes (64 characters).
//! * private keys leave memory only as PKCS#8 (RFC 8410, the v1 seed-only form that OpenSSL
//!   and every TLS stack read) inside a [`Secret`]; dalek wipes the key on drop.
//!
//! Rejected: Ed25519ctx / Ed25519ph (RFC 8032 contexts). They would give domain separation
//! natively, but X.509, rustls and most foreign verifiers only speak pure Ed25519, and one
//! signature scheme everywhere is easier to audit. Rejected also: binary encodings of
//! signatures in JSON — signatures and keys serialize as lowercase hex strings.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize as _;

use super::memo::Memo;
use super::{CryptoError, Result};
use crate::secret::Secret;

/// Length of an Ed25519 public key in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;
/// Longest accepted domain tag, terminating NUL included.
pub const DOMAIN_LEN_MAX: usize = 256;

/// Checks that `domain` is a valid tag: 2..=[`DOMAIN_LEN_MAX`] bytes, printable ASCII
/// (0x21..=0x7e) followed by exactly one terminating NUL.
pub fn check_domain(domain: &[u8]) -> Result<()> {
    match domain.split_last() {
        Some((0, body))
            if !body.is_empty()
                && domain.len() <= DOMAIN_LEN_MAX
                && body.iter().all(|b| (0x21..=0x7e).contains(b)) =>
        {
            Ok(())
        }
        _ => Err(CryptoError::ApiMisuse(
            "domain tag must be printable ASCII ending in a single NUL, at most 256 bytes",
        )),
    }
}

/// An Ed25519 private key. Wiped from memory on drop; `Debug` shows only the fingerprint.
pub struct SigningKey {
    inner: ed25519_dalek::SigningKey,
}

impl SigningKey {
    /// A fresh key from the thread-local CSPRNG (ChaCha seeded from the OS).
    pub fn generate() -> SigningKey {
        SigningKey {
            inner: ed25519_dalek::SigningKey::generate(&mut rand::rng()),
        }
    }

    /// The key whose RFC 8032 32-byte secret ("seed") is `seed`. For tests, vectors and keys
    /// derived elsewhere; fresh keys should come from [`SigningKey::generate`].
    pub fn from_seed(seed: &[u8; 32]) -> SigningKey {
        SigningKey {
            inner: ed25519_dalek::SigningKey::from_bytes(seed),
        }
    }

    /// PKCS#8 PEM (label `PRIVATE KEY`, LF line endings) in the v1 form of RFC 8410 §7: the
    /// 32-byte seed only, exactly what `openssl genpkey -algorithm ed25519` writes.
    pub fn to_pkcs8_pem(&self) -> Result<Secret<String>> {
        let mut pem = self
            .with_pkcs8_v1(|k| k.to_pkcs8_pem(x509_cert::der::pem::LineEnding::LF))
            .map_err(|e| CryptoError::malformed("PKCS#8 encoding", e))?;
        // Move the text out; the emptied `Zeroizing` wrapper wipes nothing left behind.
        Ok(Secret::new(std::mem::take(&mut *pem)))
    }

    /// Parses a PKCS#8 PEM private key, v1 or v2. If the document carries the public key (v2),
    /// it must match the private key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<SigningKey> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map(|inner| SigningKey { inner })
            .map_err(|e| CryptoError::malformed("PKCS#8 private key", e))
    }

    /// PKCS#8 v1 DER (see [`SigningKey::to_pkcs8_pem`]).
    pub fn to_pkcs8_der(&self) -> Result<Secret<Vec<u8>>> {
        let doc = self
            .with_pkcs8_v1(EncodePrivateKey::to_pkcs8_der)
            .map_err(|e| CryptoError::malformed("PKCS#8 encoding", e))?;
        Ok(Secret::new(doc.as_bytes().to_vec()))
    }

    /// The seed without the public key: PKCS#8 v2 with the public key (what dalek writes by
    /// default) is refused by OpenSSL 3.0's `pkey` and by pyca/cryptography, v1 is read by
    /// everything (rustls via aws-lc-rs or ring, OpenSSL, Python, dalek).
    fn with_pkcs8_v1<T>(&self, encode: impl FnOnce(&ed25519_dalek::pkcs8::KeypairBytes) -> T) -> T {
        let mut seed_only = ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.inner.to_bytes(),
            public_key: None,
        };
        let encoded = encode(&seed_only);
        // `KeypairBytes` wipes itself only with the `ed25519/zeroize` feature, which dalek does
        // not turn on; wipe the seed copy by hand.
        seed_only.secret_key.zeroize();
        encoded
    }

    /// Parses a PKCS#8 DER private key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<SigningKey> {
        ed25519_dalek::SigningKey::from_pkcs8_der(der)
            .map(|inner| SigningKey { inner })
            .map_err(|e| CryptoError::malformed("PKCS#8 private key", e))
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey {
            inner: self.inner.verifying_key(),
        }
    }

    /// Signs `domain || msg`.
    ///
    /// # Panics
    /// If `domain` is not a valid tag (see [`check_domain`]). Domain tags are constants in the
    /// calling code, so a bad one is a programming error caught by the first test that signs.
    pub fn sign(&self, domain: &[u8], msg: &[u8]) -> Signature {
        if let Err(e) = check_domain(domain) {
            panic!("{e}");
        }
        let signed = [domain, msg].concat();
        Signature(ed25519_dalek::Signer::sign(&self.inner, &signed).to_bytes())
    }

    /// The dalek key, for the X.509 builder (which needs a `signature::Signer`).
    pub(crate) fn dalek(&self) -> &ed25519_dalek::SigningKey {
        &self.inner
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SigningKey(public {})",
            self.verifying_key().fingerprint()
        )
    }
}

/// Most Ed25519 public keys [`VerifyingKey::from_bytes`] keeps decoded.
pub const DECODED_MAX: usize = 4096;

/// Public keys that decoded and passed every check, by their encoding.
static DECODED: Memo<[u8; PUBLIC_KEY_LEN], VerifyingKey> = Memo::new(DECODED_MAX);

/// An Ed25519 public key (never a weak, small-order point).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VerifyingKey {
    inner: ed25519_dalek::VerifyingKey,
}

impl VerifyingKey {
    /// Strictly verifies `sig` over `domain || msg`.
    pub fn verify(&self, domain: &[u8], msg: &[u8], sig: &Signature) -> Result<()> {
        check_domain(domain)?;
        let signed = [domain, msg].concat();
        self.inner
            .verify_strict(&signed, &ed25519_dalek::Signature::from_bytes(&sig.0))
            .map_err(|_| CryptoError::BadSignature)
    }

    /// Lowercase hex of SHA-256 over the 32 public-key bytes.
    pub fn fingerprint(&self) -> String {
        hex::encode(super::kdf::sha256(self.inner.as_bytes()))
    }

    /// The 32 raw bytes (RFC 8032 encoding).
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.inner.to_bytes()
    }

    /// From the 32 raw bytes; rejects encodings that are not curve points and weak keys.
    ///
    /// Keys that decoded before come from a small process-wide memo (see [`DECODED_MAX`]):
    /// decompressing the point costs more than a hash lookup, and the node reads the same
    /// parties' keys from their certificates at every step.
    pub fn from_bytes(bytes: &[u8; PUBLIC_KEY_LEN]) -> Result<VerifyingKey> {
        DECODED.get_or(*bytes, || {
            let inner = ed25519_dalek::VerifyingKey::from_bytes(bytes)
                .map_err(|_| CryptoError::Malformed("public key is not a curve point".into()))?;
            if inner.is_weak() {
                return Err(CryptoError::Malformed(
                    "public key is a small-order point".into(),
                ));
            }
            Ok(VerifyingKey { inner })
        })
    }

    /// From a byte slice that must be exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<VerifyingKey> {
        let array: &[u8; PUBLIC_KEY_LEN] = bytes
            .try_into()
            .map_err(|_| CryptoError::Malformed("public key must be 32 bytes".into()))?;
        VerifyingKey::from_bytes(array)
    }

    /// Lowercase hex (64 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.to_bytes())
    }

    /// From hex (either case).
    pub fn from_hex(text: &str) -> Result<VerifyingKey> {
        let bytes = hex::decode(text).map_err(|e| CryptoError::malformed("public key hex", e))?;
        VerifyingKey::from_slice(&bytes)
    }

    /// Unpadded base64url (RFC 4648 §5), 43 characters.
    pub fn to_base64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.to_bytes())
    }

    /// From unpadded base64url.
    pub fn from_base64(text: &str) -> Result<VerifyingKey> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|e| CryptoError::malformed("public key base64", e))?;
        VerifyingKey::from_slice(&bytes)
    }

    /// The dalek key, for SPKI encoding in certificates.
    pub(crate) fn dalek(&self) -> &ed25519_dalek::VerifyingKey {
        &self.inner
    }
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyingKey({})", self.to_hex())
    }
}

impl TryFrom<String> for VerifyingKey {
    type Error = CryptoError;
    fn try_from(text: String) -> Result<VerifyingKey> {
        VerifyingKey::from_hex(&text)
    }
}

impl From<VerifyingKey> for String {
    fn from(key: VerifyingKey) -> String {
        key.to_hex()
    }
}

/// An Ed25519 signature (64 bytes). Serializes as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Signature([u8; SIGNATURE_LEN]);

impl Signature {
    /// From the 64 raw bytes (R || S). Not checked until verified.
    pub fn from_bytes(bytes: [u8; SIGNATURE_LEN]) -> Signature {
        Signature(bytes)
    }

    /// From a slice that must be exactly 64 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Signature> {
        bytes
            .try_into()
            .map(Signature)
            .map_err(|_| CryptoError::Malformed("signature must be 64 bytes".into()))
    }

    /// The 64 raw bytes.
    pub fn to_bytes(&self) -> [u8; SIGNATURE_LEN] {
        self.0
    }

    /// Lowercase hex (128 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// From hex (either case).
    pub fn from_hex(text: &str) -> Result<Signature> {
        let bytes = hex::decode(text).map_err(|e| CryptoError::malformed("signature hex", e))?;
        Signature::from_slice(&bytes)
    }

    /// Unpadded base64url (86 characters).
    pub fn to_base64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// From unpadded base64url.
    pub fn from_base64(text: &str) -> Result<Signature> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|e| CryptoError::malformed("signature base64", e))?;
        Signature::from_slice(&bytes)
    }
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({})", self.to_hex())
    }
}

impl TryFrom<String> for Signature {
    type Error = CryptoError;
    fn try_from(text: String) -> Result<Signature> {
        Signature::from_hex(&text)
    }
}

impl From<Signature> for String {
    fn from(sig: Signature) -> String {
        sig.to_hex()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly by design.
mod tests {
    use super::*;

    const DOMAIN: &[u8] = b"tally/test/v1\0";

    fn hex32(text: &str) -> [u8; 32] {
        hex::decode(text).unwrap().try_into().unwrap()
    }

    /// RFC 8032 §7.1 TEST 1: empty message. Our `sign` always prefixes a domain, so the raw
    /// primitive is exercised through the wrapped dalek key; `from_seed` and `verifying_key`
    /// are ours.
    #[test]
    fn rfc8032_test_1() {
        let key = SigningKey::from_seed(&hex32(
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        ));
        assert_eq!(
            key.verifying_key().to_hex(),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        let sig = ed25519_dalek::Signer::sign(key.dalek(), b"");
        assert_eq!(
            hex::encode(sig.to_bytes()),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bac\
             c61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
        key.verifying_key()
            .dalek()
            .verify_strict(b"", &sig)
            .unwrap();
    }

    #[test]
    fn signature_covers_domain_then_message() {
        let key = SigningKey::from_seed(&[7; 32]);
        let sig = key.sign(DOMAIN, b"hello");
        // The signed bytes are exactly domain || msg: raw dalek agrees.
        let raw = ed25519_dalek::Signature::from_bytes(&sig.to_bytes());
        key.verifying_key()
            .dalek()
            .verify_strict(b"tally/test/v1\0hello", &raw)
            .unwrap();

        let vk = key.verifying_key();
        vk.verify(DOMAIN, b"hello", &sig).unwrap();
        assert!(matches!(
            vk.verify(DOMAIN, b"hellO", &sig),
            Err(CryptoError::BadSignature)
        ));
        assert!(matches!(
            vk.verify(b"tally/other/v1\0", b"hello", &sig),
            Err(CryptoError::BadSignature)
        ));
        let other = SigningKey::from_seed(&[8; 32]).verifying_key();
        assert!(matches!(
            other.verify(DOMAIN, b"hello", &sig),
            Err(CryptoError::BadSignature)
        ));
        let mut flipped = sig.to_bytes();
        flipped[10] ^= 1;
        assert!(matches!(
            vk.verify(DOMAIN, b"hello", &Signature::from_bytes(flipped)),
            Err(CryptoError::BadSignature)
        ));
    }

    #[test]
    fn domain_tags_must_be_nul_terminated_printable_ascii() {
        assert!(check_domain(b"tally/x/v1\0").is_ok());
        for bad in [
            &b""[..],
            b"\0",
            b"tally/x/v1",
            b"tal\0ly\0",
            b"tally x\0",
            b"tally/\xff\0",
        ] {
            assert!(check_domain(bad).is_err(), "{bad:?}");
        }
        assert!(check_domain(&[b'a'; DOMAIN_LEN_MAX]).is_err());
        let mut longest = vec![b'a'; DOMAIN_LEN_MAX - 1];
        longest.push(0);
        assert!(check_domain(&longest).is_ok());
        let vk = SigningKey::from_seed(&[1; 32]).verifying_key();
        let sig = Signature::from_bytes([0; 64]);
        assert!(matches!(
            vk.verify(b"no-nul", b"", &sig),
            Err(CryptoError::ApiMisuse(_))
        ));
    }

    #[test]
    #[should_panic(expected = "domain tag")]
    fn signing_with_a_bad_domain_panics() {
        SigningKey::from_seed(&[1; 32]).sign(b"missing-nul", b"x");
    }

    #[test]
    fn pkcs8_pem_round_trip() {
        let key = SigningKey::generate();
        let pem = key.to_pkcs8_pem().unwrap();
        assert!(pem.expose().starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let back = SigningKey::from_pkcs8_pem(pem.expose()).unwrap();
        let seed_only = SigningKey::from_seed(&[0x21; 32]).to_pkcs8_der().unwrap();
        assert_eq!(
            hex::encode(seed_only.expose()),
            format!(
                "302e020100300506032b657004220420{}",
                hex::encode([0x21u8; 32])
            )
        );
        // v2 documents (with the public key) are read too, and the public key is checked.
        let v2 = ed25519_dalek::pkcs8::KeypairBytes::from(key.dalek())
            .to_pkcs8_der()
            .unwrap();
        assert_eq!(
            SigningKey::from_pkcs8_der(v2.as_bytes())
                .unwrap()
                .verifying_key(),
            key.verifying_key()
        );
        let mut mismatched = ed25519_dalek::pkcs8::KeypairBytes::from(key.dalek());
        mismatched.public_key = Some(ed25519_dalek::pkcs8::PublicKeyBytes(
            SigningKey::from_seed(&[1; 32]).verifying_key().to_bytes(),
        ));
        let mismatched = mismatched.to_pkcs8_der().unwrap();
        assert!(SigningKey::from_pkcs8_der(mismatched.as_bytes()).is_err());
        assert_eq!(back.verifying_key(), key.verifying_key());
        let der = key.to_pkcs8_der().unwrap();
        assert_eq!(
            SigningKey::from_pkcs8_der(der.expose())
                .unwrap()
                .verifying_key(),
            key.verifying_key()
        );
        assert!(matches!(
            SigningKey::from_pkcs8_pem("junk"),
            Err(CryptoError::Malformed(_))
        ));
        // Two generated keys differ (the RNG is wired up).
        assert_ne!(SigningKey::generate().verifying_key(), key.verifying_key());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = SigningKey::from_seed(&[0x42; 32]);
        let shown = format!("{key:?}");
        assert!(shown.contains(&key.verifying_key().fingerprint()));
        assert!(!shown.contains(&hex::encode([0x42u8; 32])));
    }

    #[test]
    fn fingerprint_is_sha256_of_raw_key() {
        let vk = SigningKey::from_seed(&[3; 32]).verifying_key();
        let fp = vk.fingerprint();
        assert_eq!(fp.len(), 64);
        assert_eq!(fp, hex::encode(super::super::kdf::sha256(&vk.to_bytes())));
    }

    #[test]
    fn public_key_and_signature_encodings_round_trip() {
        let key = SigningKey::from_seed(&[5; 32]);
        let vk = key.verifying_key();
        assert_eq!(VerifyingKey::from_hex(&vk.to_hex()).unwrap(), vk);
        assert_eq!(VerifyingKey::from_base64(&vk.to_base64()).unwrap(), vk);
        assert_eq!(vk.to_base64().len(), 43);
        assert_eq!(VerifyingKey::from_bytes(&vk.to_bytes()).unwrap(), vk);
        let json = serde_json::to_string(&vk).unwrap();
        assert_eq!(json, format!("\"{}\"", vk.to_hex()));
        assert_eq!(serde_json::from_str::<VerifyingKey>(&json).unwrap(), vk);

        let sig = key.sign(DOMAIN, b"m");
        assert_eq!(Signature::from_hex(&sig.to_hex()).unwrap(), sig);
        assert_eq!(Signature::from_base64(&sig.to_base64()).unwrap(), sig);
        let json = serde_json::to_string(&sig).unwrap();
        assert_eq!(serde_json::from_str::<Signature>(&json).unwrap(), sig);

        assert!(VerifyingKey::from_slice(&[0; 31]).is_err());
        assert!(Signature::from_slice(&[0; 63]).is_err());
        assert!(VerifyingKey::from_hex("zz").is_err());
    }

    #[test]
    fn weak_public_keys_are_rejected() {
        // The identity point (y = 1) has small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(matches!(
            VerifyingKey::from_bytes(&identity),
            Err(CryptoError::Malformed(_))
        ));
    }
}
