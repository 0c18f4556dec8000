//! Hashes, MACs, key derivation and password hashing.
//!
//! SHA-256 (`sha2`), HMAC-SHA256 (`hmac`), HKDF-SHA256 (`hkdf`, RFC 5869) and Argon2id
//! (`argon2`, RFC 9106) with PHC-string storage. Nothing here is implemented by hand.
//!
//! Key decisions: MAC tags are checked only through `hmac`'s constant-time `verify_slice`,
//! never with `==`; derived key material comes back inside a [`Secret`]; password hashes are
//! self-describing PHC strings, so [`verify_password`] uses the parameters stored in the hash
//! and the cost can be raised later without breaking old hashes ([`needs_rehash`] tells when to
//! re-hash at the next login). Default password cost is the argon2 crate's default, which is
//! OWASP's minimum (m = 19 MiB, t = 2, p = 1).
//!
//! Rejected: bcrypt/scrypt/PBKDF2 (Argon2id is the RFC 9106 recommendation and is memory
//! hard); a pepper baked into this module (it is a deployment decision and `argon2` supports
//! it if one is ever wanted); returning `false` for an unparsable PHC string (a corrupt stored
//! hash is an incident, not a wrong password, so it is an error).

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::{CryptoError, Result};
use crate::secret::Secret;

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// SHA-256 over data that arrives in pieces (files, streams), in constant memory.
#[derive(Clone, Default)]
pub struct Sha256Stream(Sha256);

impl Sha256Stream {
    /// An empty hash.
    pub fn new() -> Sha256Stream {
        Sha256Stream(Sha256::new())
    }

    /// Adds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything added.
    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

fn hmac_sha256_instance(key: &[u8]) -> Hmac<Sha256> {
    // Invariant: HMAC accepts keys of every length (RFC 2104 hashes long keys and pads short
    // ones), so `new_from_slice` cannot fail for `Hmac<Sha256>`.
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// HMAC-SHA256 (RFC 2104) of `msg` under `key`.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac = hmac_sha256_instance(key);
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// Whether `tag` is the full 32-byte HMAC-SHA256 of `msg` under `key`, compared in constant
/// time. A truncated or over-long tag is rejected.
pub fn hmac_sha256_verify(key: &[u8], msg: &[u8], tag: &[u8]) -> bool {
    let mut mac = hmac_sha256_instance(key);
    mac.update(msg);
    mac.verify_slice(tag).is_ok()
}

/// An HMAC-SHA256 key made ready once, for a key that checks many messages: the keyed state
/// (the key's inner and outer blocks, hashed) is kept, so a check costs the message's blocks
/// and one more instead of three more. It is as secret as the key: zeroized when dropped
/// (`sha2`'s and `hmac`'s `zeroize` features), never printed.
#[derive(Clone)]
pub struct HmacSha256Key(Hmac<Sha256>);

impl HmacSha256Key {
    /// The state for `key`.
    pub fn new(key: &[u8]) -> HmacSha256Key {
        HmacSha256Key(hmac_sha256_instance(key))
    }

    /// The HMAC of the concatenation of `parts` under this key.
    pub fn mac_parts(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.0.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// [`hmac_sha256_verify`] of the concatenation of `parts` under this key, without making
    /// it.
    pub fn verify_parts(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let mut mac = self.0.clone();
        for part in parts {
            mac.update(part);
        }
        mac.verify_slice(tag).is_ok()
    }
}

impl std::fmt::Debug for HmacSha256Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacSha256Key(<secret>)")
    }
}

/// HKDF-SHA256 (RFC 5869) extract-then-expand. An empty `salt` is the RFC's "not provided"
/// (HMAC pads it to 32 zero bytes). `out_len` must be 1..=8160 (255 × 32).
pub fn hkdf_sha256(
    ikm: &[u8],
    salt: &[u8],
    info: &[u8],
    out_len: usize,
) -> Result<Secret<Vec<u8>>> {
    if out_len == 0 {
        return Err(CryptoError::ApiMisuse(
            "HKDF output length must be at least 1",
        ));
    }
    // The buffer moves into the `Secret` without copying; on failure it still holds zeros.
    let mut okm = vec![0u8; out_len];
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, &mut okm)
        .map_err(|_| CryptoError::ApiMisuse("HKDF-SHA256 output is at most 8160 bytes"))?;
    Ok(Secret::new(okm))
}

/// HKDF-SHA256 into a fixed 32-byte key (the common case: one AEAD or MAC key).
pub(crate) fn hkdf_sha256_32(ikm: &[u8], salt: &[u8], info: &[u8]) -> zeroize::Zeroizing<[u8; 32]> {
    let mut okm = zeroize::Zeroizing::new([0u8; 32]);
    // Invariant: 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, okm.as_mut_slice())
        .expect("32 <= 255 * 32");
    okm
}

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasswordParams {
    /// Memory in KiB (argon2 `m`).
    pub memory_kib: u32,
    /// Passes over memory (argon2 `t`).
    pub iterations: u32,
    /// Lanes (argon2 `p`).
    pub parallelism: u32,
}

impl Default for PasswordParams {
    /// The argon2 crate's default: m = 19456 KiB, t = 2, p = 1 (OWASP's minimum for Argon2id).
    fn default() -> Self {
        PasswordParams {
            memory_kib: Params::DEFAULT_M_COST,
            iterations: Params::DEFAULT_T_COST,
            parallelism: Params::DEFAULT_P_COST,
        }
    }
}

impl PasswordParams {
    /// Deliberately weak parameters (m = 64 KiB, t = 1, p = 1) so tests on a 2-core CI machine
    /// stay fast. Never use outside tests.
    pub fn for_tests() -> Self {
        PasswordParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    fn to_argon2(self) -> Result<Argon2<'static>> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|_| CryptoError::ApiMisuse("Argon2 parameters out of range"))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// Hashes `password` with Argon2id v1.3 and a fresh random 16-byte salt; returns the PHC string
/// (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
pub fn hash_password(password: &[u8], params: &PasswordParams) -> Result<String> {
    let hash = params
        .to_argon2()?
        .hash_password(password)
        .map_err(|e| CryptoError::malformed("Argon2 hashing", e))?;
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string `phc`, using the algorithm and cost recorded in
/// `phc`. A wrong password is `Ok(false)`; an unparsable or non-Argon2 PHC string is an error.
pub fn verify_password(phc: &str, password: &[u8]) -> Result<bool> {
    let parsed = PasswordHash::new(phc).map_err(|e| CryptoError::malformed("PHC string", e))?;
    match Argon2::default().verify_password(password, &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
        Err(e) => Err(CryptoError::malformed("PHC string", e)),
    }
}

/// Whether the hash in `phc` was made with weaker or different settings than `params` (or not
/// with Argon2id), so it should be replaced after the next successful login.
pub fn needs_rehash(phc: &str, params: &PasswordParams) -> Result<bool> {
    let parsed = PasswordHash::new(phc).map_err(|e| CryptoError::malformed("PHC string", e))?;
    if parsed.algorithm != argon2::ARGON2ID_IDENT {
        return Ok(true);
    }
    let stored =
        Params::try_from(&parsed).map_err(|e| CryptoError::malformed("PHC parameters", e))?;
    Ok(stored.m_cost() != params.memory_kib
        || stored.t_cost() != params.iterations
        || stored.p_cost() != params.parallelism)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly by design.
mod tests {
    use super::*;

    /// RFC 4231 §4.3, test case 2.
    #[test]
    fn streamed_sha256_equals_one_shot() {
        let data: Vec<u8> = (0..10_000_u32).map(|i| (i % 251) as u8).collect();
        let mut h = Sha256Stream::new();
        for piece in data.chunks(777) {
            h.update(piece);
        }
        assert_eq!(h.finish(), sha256(&data));
        // FIPS 180-2 "abc".
        let mut h = Sha256Stream::new();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(
            hex::encode(h.finish()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn rfc4231_test_case_2() {
        let tag = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(hmac_sha256_verify(
            b"Jefe",
            b"what do ya want for nothing?",
            &tag
        ));
        assert!(!hmac_sha256_verify(
            b"Jefe",
            b"what do ya want for nothing!",
            &tag
        ));
        assert!(!hmac_sha256_verify(
            b"jefe",
            b"what do ya want for nothing?",
            &tag
        ));
        assert!(!hmac_sha256_verify(
            b"Jefe",
            b"what do ya want for nothing?",
            &tag[..16]
        ));
        let mut flipped = tag;
        flipped[31] ^= 0x80;
        assert!(!hmac_sha256_verify(
            b"Jefe",
            b"what do ya want for nothing?",
            &flipped
        ));
    }

    /// A key made ready once checks RFC 4231's test case 2 in pieces, again and again (each
    /// check starts from the keyed state), and refuses what the one-shot check refuses.
    #[test]
    fn a_ready_key_checks_like_the_one_shot() {
        let tag = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let key = HmacSha256Key::new(b"Jefe");
        for _ in 0..2 {
            assert!(key.verify_parts(&[b"what do ya ", b"want for nothing?"], &tag));
        }
        assert!(!key.verify_parts(&[b"what do ya want for nothing!"], &tag));
        assert!(!key.verify_parts(&[b"what do ya want for nothing?"], &tag[..16]));
        assert!(
            !HmacSha256Key::new(b"jefe").verify_parts(&[b"what do ya want for nothing?"], &tag)
        );
        assert_eq!(format!("{key:?}"), "HmacSha256Key(<secret>)");
    }

    /// RFC 5869 Appendix A.1, test case 1.
    #[test]
    fn rfc5869_test_case_1() {
        let ikm = [0x0b; 22];
        let salt = hex::decode("000102030405060708090a0b0c").unwrap();
        let info = hex::decode("f0f1f2f3f4f5f6f7f8f9").unwrap();
        let okm = hkdf_sha256(&ikm, &salt, &info, 42).unwrap();
        assert_eq!(
            hex::encode(okm.expose()),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
        assert_eq!(hkdf_sha256_32(&ikm, &salt, &info)[..], okm.expose()[..32]);
    }

    #[test]
    fn hkdf_rejects_impossible_lengths() {
        assert!(matches!(
            hkdf_sha256(b"k", b"", b"", 0),
            Err(CryptoError::ApiMisuse(_))
        ));
        assert!(matches!(
            hkdf_sha256(b"k", b"", b"", 8161),
            Err(CryptoError::ApiMisuse(_))
        ));
        assert_eq!(
            hkdf_sha256(b"k", b"", b"", 8160).unwrap().expose().len(),
            8160
        );
    }

    #[test]
    fn sha256_of_abc() {
        // FIPS 180-2 Appendix B.1.
        assert_eq!(
            hex::encode(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn default_password_params_are_the_argon2_default() {
        assert_eq!(
            PasswordParams::default(),
            PasswordParams {
                memory_kib: 19456,
                iterations: 2,
                parallelism: 1
            }
        );
    }

    #[test]
    fn password_hash_round_trip() {
        let params = PasswordParams::for_tests();
        let phc = hash_password(b"correct horse", &params).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        assert!(verify_password(&phc, b"correct horse").unwrap());
        assert!(!verify_password(&phc, b"correct horsE").unwrap());
        // Salted: the same password hashes differently each time.
        assert_ne!(hash_password(b"correct horse", &params).unwrap(), phc);
        assert!(matches!(
            verify_password("$argon2id$garbage", b"x"),
            Err(CryptoError::Malformed(_))
        ));
        assert!(matches!(
            verify_password("", b"x"),
            Err(CryptoError::Malformed(_))
        ));
    }

    #[test]
    fn rehash_is_needed_when_cost_changes() {
        let params = PasswordParams::for_tests();
        let phc = hash_password(b"pw", &params).unwrap();
        assert!(!needs_rehash(&phc, &params).unwrap());
        let stronger = PasswordParams {
            iterations: 2,
            ..params
        };
        assert!(needs_rehash(&phc, &stronger).unwrap());
    }

    #[test]
    fn bad_params_are_api_misuse() {
        let bad = PasswordParams {
            memory_kib: 1,
            iterations: 1,
            parallelism: 1,
        };
        assert!(matches!(
            hash_password(b"pw", &bad),
            Err(CryptoError::ApiMisuse(_))
        ));
    }
}
