//! BLS12-381 signatures and verifiably encrypted signatures for optimistic fair exchange.
//!
//! Two constructions over the pairing-friendly curve BLS12-381, both built on `blst` through
//! the `tally-pairing` crate (constant-time scalar multiplication, subgroup-checked point
//! decoding; the workspace's only `unsafe` code lives there, in one module):
//!
//! * **BLS signatures**, the minimal-signature-size variant of
//!   draft-irtf-cfrg-bls-signature: a signature is the G1 point `σ = sk·H(domain || msg)`
//!   (48 bytes compressed), a public key is the G2 point `pk = sk·g2` (96 bytes compressed),
//!   and `σ` is valid when `e(σ, g2) = e(H(domain || msg), pk)`. BLS signatures are unique:
//!   one key and one message have exactly one valid signature.
//! * **Verifiably encrypted signatures** (VES) of Boneh, Gentry, Lynn and Shacham, "Aggregate
//!   and Verifiably Encrypted Signatures from Bilinear Maps", Eurocrypt 2003, §5. A signer
//!   hands over `(ω, μ) = (σ + r·X₁, r·g1)` for a fresh random `r`, where `X₁ = x·g1` belongs
//!   to an arbiter holding `x`. Anyone can check that the pair hides a valid signature,
//!   `e(ω, g2) = e(H(domain || msg), pk) · e(μ, X₂)` with `X₂ = x·g2`, without learning `σ`;
//!   the arbiter (and only the arbiter) can open it, `σ = ω − x·μ`. That is the optimistic
//!   fair exchange: party A gives B a VES, B gives A its own signature, A gives B its plain
//!   signature; if A walks away at the last step, B takes the VES to the arbiter.
//!
//! The message is always `domain || msg`, with `domain` a NUL-terminated tag checked by
//! [`check_domain`] exactly as for Ed25519 in [`super::keys`]; hashing uses hash-to-curve
//! (RFC 9380, `BLS12381G1_XMD:SHA-256_SSWU_RO_`) with our own [`HASH_DST`], so the points
//! we sign are never points anyone else's BLS deployment signs.
//!
//! Byte layouts (all compressed points use the ZCash/IETF serialization, big-endian with the
//! three flag bits in the first byte):
//!
//! | value                 | bytes | layout                                        |
//! |-----------------------|-------|-----------------------------------------------|
//! | [`BlsSecretKey`]      | 32    | scalar `sk`, **big-endian**, `0 < sk < r`     |
//! | [`BlsPublicKey`]      | 96    | `sk·g2`, G2 compressed                        |
//! | [`BlsSignature`]      | 48    | `σ`, G1 compressed                            |
//! | [`ArbiterKey`]        | 32    | scalar `x`, big-endian, `0 < x < r`           |
//! | [`ArbiterPublicKey`]  | 144   | `X₁ = x·g1` (G1, 48) `‖` `X₂ = x·g2` (G2, 96) |
//! | [`EncryptedSignature`]| 96    | `ω` (G1, 48) `‖` `μ` (G1, 48)                 |
//!
//! Key decisions:
//! * **Every decoded point is in its prime-order subgroup and is not the identity.** An
//!   identity public key would accept the identity signature for every message; an identity
//!   `μ` turns a VES into a plain signature (`ω = σ`), which is no longer *encrypted* and is
//!   refused as malformed; an identity `ω` is refused too. Verification re-checks the identity
//!   cases so that values built in-process cannot slip through either.
//! * **The arbiter publishes its key in both groups.** BGLS use an efficient isomorphism
//!   `ψ: G2 → G1` that BLS12-381 (a type-3 pairing) does not have, so the signer needs `X₁`
//!   and the verifier `X₂`; [`ArbiterPublicKey::from_bytes`] checks `e(X₁, g2) = e(g1, X₂)`,
//!   i.e. both halves carry the same `x`. Without that check a VES could verify against `X₂`
//!   while being built with an unrelated `X₁`, and adjudication would not open it.
//! * **Secret scalars are big-endian on the wire** (I2OSP, as in the IETF draft, EIP-2333 and
//!   `blst`); only canonical values `< r` are read.
//! * **Deterministic keys**: [`BlsSecretKey::from_seed`] is
//!   `HKDF-SHA256(ikm = seed, salt = "tally/bls12-381/keygen/v1", info = label || counter,
//!   L = 64)` read as a little-endian 512-bit integer and reduced mod `r` (bias `< 2⁻²⁵⁶`);
//!   `label` is `"signing-key"` or `"arbiter-key"` so one seed never gives a signer and an
//!   arbiter the same scalar, and the one-byte counter (from 0) only moves on if the result is
//!   zero. Fresh keys and VES nonces are 64 bytes from the OS (`getrandom`), reduced the same way.
//! * **The arbiter opens only what it checked**: [`ArbiterKey::adjudicate_verified`] verifies
//!   the VES against the disputed key and message first. Raw [`ArbiterKey::adjudicate`] is a
//!   "multiply by `x`" oracle: fed a blinded `(ω + s·g1, μ + t·g1)` of someone else's VES it
//!   returns something the attacker unblinds into that signature.
//! * **A VES is malleable**: `(ω + t·X₁, μ + t·g1)` is another valid VES of the same `σ`
//!   (rerandomization). Protocols must key disputes and deduplication on
//!   `(public key, domain, message)`, never on the VES bytes.
//!
//! Rejected: the minimal-public-key variant (keys in G1, signatures in G2): signatures travel
//! in every receipt, keys are certified once, so small signatures win. Replaced: the pure-Rust
//! `bls12_381` (zkcrypto), which this module used first: a product of pairings took about
//! 3 ms there, which held fair exchange to ~140 receipts/s; `blst` gives the same bytes (the
//! golden vector below is unchanged, and `tally-pairing`'s differential test compares the two
//! libraries on random inputs). Rejected: `blst`'s own `min_sig` API alone (no point
//! arithmetic, which the VES needs) and `bls-signatures` (min-pk only, no VES). Rejected: the
//! IETF `KeyGen` (HKDF with an iterated salt, 48 bytes): only useful to match other libraries'
//! key vectors, which our own DST makes moot anyway. Rejected: proofs of possession: we never
//! aggregate signatures of different signers over one message, so rogue-key attacks do not
//! apply; the arbiter's key, however, must be agreed by both parties out of band (a counter-
//! party that chose or knows `x` can open every VES addressed to it).

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use tally_pairing::{G1, G2, Scalar, pairing_product_is_one};
use zeroize::{Zeroize as _, Zeroizing};

use super::keys::check_domain;
use super::memo::Memo;
use super::{CryptoError, Result};
use crate::secret::Secret;

/// Length of a serialized secret scalar ([`BlsSecretKey`], [`ArbiterKey`]).
pub const SECRET_KEY_LEN: usize = 32;
/// Length of a [`BlsPublicKey`] (compressed G2 point).
pub const PUBLIC_KEY_LEN: usize = 96;
/// Length of a [`BlsSignature`] (compressed G1 point).
pub const SIGNATURE_LEN: usize = 48;
/// Length of an [`ArbiterPublicKey`] (compressed G1 point, then compressed G2 point).
pub const ARBITER_PUBLIC_KEY_LEN: usize = 144;
/// Length of an [`EncryptedSignature`] (two compressed G1 points).
pub const ENCRYPTED_SIGNATURE_LEN: usize = 96;

/// Domain separation tag for hash-to-curve: the draft-irtf-cfrg-bls-signature ciphersuite
/// `BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_` (basic scheme, signatures in G1) followed by
/// our application tag, so no other deployment hashes a message to the same point.
pub const HASH_DST: &[u8] = b"BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_TALLY_V1_";

/// HKDF salt of [`BlsSecretKey::from_seed`] and [`ArbiterKey::from_seed`].
const KEYGEN_SALT: &[u8] = b"tally/bls12-381/keygen/v1";

/// Most entries each memo below keeps (public keys, signature points, hashed messages); a
/// full memo is emptied. About 300 bytes per key and 150 per point at most.
pub const MEMO_MAX: usize = 4096;

/// Public keys that decoded and passed every check, by their encoding.
static DECODED_KEYS: Memo<[u8; PUBLIC_KEY_LEN], G2> = Memo::new(MEMO_MAX);

/// G1 points (signatures, VES halves, arbiter keys) that decoded and passed every check.
static DECODED_POINTS: Memo<[u8; 48], G1> = Memo::new(MEMO_MAX);

/// `H(domain || msg)` by the SHA-256 of `domain || msg` (the domain tag ends at its only NUL,
/// so the concatenation is unambiguous).
static HASHED: Memo<[u8; 32], G1> = Memo::new(MEMO_MAX);

/// `−g2` (every check moves `e(·, g2)` to the other side).
static NEG_G2: LazyLock<G2> = LazyLock::new(|| G2::generator().neg());

// ---------------------------------------------------------------------------------------------
// Scalars and points
// ---------------------------------------------------------------------------------------------

/// A uniformly random nonzero scalar from 64 bytes of OS randomness.
///
/// # Panics
/// If the operating system's random number generator fails (nothing sane can continue).
fn random_scalar() -> Scalar {
    loop {
        let mut wide = Zeroizing::new([0_u8; 64]);
        getrandom::fill(wide.as_mut_slice()).expect("the OS random number generator failed");
        if let Some(scalar) = Scalar::from_wide_le(&wide) {
            return scalar;
        }
    }
}

/// The nonzero scalar derived from `seed` for `label` (see the module documentation).
fn seeded_scalar(seed: &[u8; 32], label: &[u8]) -> Scalar {
    let mut counter: u8 = 0;
    loop {
        let info = [label, &[counter]].concat();
        // Invariant: 64 bytes is far below HKDF-SHA256's 8160-byte limit.
        let okm = super::kdf::hkdf_sha256(seed, KEYGEN_SALT, &info, 64).expect("64 <= 255 * 32");
        let mut wide = Zeroizing::new([0_u8; 64]);
        wide.copy_from_slice(okm.expose());
        if let Some(scalar) = Scalar::from_wide_le(&wide) {
            return scalar;
        }
        // Unreachable in practice (probability 2⁻²⁵⁵ per round), but total and deterministic.
        counter = counter.wrapping_add(1);
    }
}

/// A nonzero canonical scalar from 32 big-endian bytes.
fn scalar_from_be(bytes: &[u8], what: &str) -> Result<Scalar> {
    let array: &[u8; SECRET_KEY_LEN] = bytes
        .try_into()
        .map_err(|_| CryptoError::Malformed(format!("{what} must be 32 bytes")))?;
    if array.iter().all(|b| *b == 0) {
        return Err(CryptoError::malformed(what, "the zero scalar is not a key"));
    }
    Scalar::from_be(array)
        .ok_or_else(|| CryptoError::malformed(what, "not a canonical scalar (must be < r)"))
}

/// The 32 big-endian bytes of `scalar`, in a [`Secret`].
fn scalar_to_be(scalar: &Scalar) -> Secret<Vec<u8>> {
    let be = Zeroizing::new(scalar.to_be());
    Secret::new(be.to_vec())
}

/// A compressed G1 point: in the subgroup (checked by `from_compressed`) and not the identity.
/// Remembered in [`DECODED_POINTS`] (a signature is decoded at each step that handles it).
fn g1_from_bytes(bytes: &[u8], what: &str) -> Result<G1> {
    let array: &[u8; 48] = bytes
        .try_into()
        .map_err(|_| CryptoError::Malformed(format!("{what} must be 48 bytes")))?;
    DECODED_POINTS.get_or(*array, || {
        let point = G1::from_compressed(array).ok_or_else(|| {
            CryptoError::malformed(what, "not a compressed point of the G1 subgroup")
        })?;
        if point.is_identity() {
            return Err(CryptoError::malformed(
                what,
                "the identity point is not allowed",
            ));
        }
        Ok(point)
    })
}

/// A compressed G2 point: in the subgroup (checked by `from_compressed`) and not the identity.
fn g2_from_bytes(bytes: &[u8], what: &str) -> Result<G2> {
    let array: &[u8; 96] = bytes
        .try_into()
        .map_err(|_| CryptoError::Malformed(format!("{what} must be 96 bytes")))?;
    let point = G2::from_compressed(array)
        .ok_or_else(|| CryptoError::malformed(what, "not a compressed point of the G2 subgroup"))?;
    if point.is_identity() {
        return Err(CryptoError::malformed(
            what,
            "the identity point is not allowed",
        ));
    }
    Ok(point)
}

/// `H(domain || msg)` in G1 (RFC 9380 hash_to_curve, random-oracle variant, [`HASH_DST`]).
/// The caller has checked `domain`. Remembered in [`HASHED`]: each party hashes a receipt's
/// message at every step that signs or checks it (about 70 µs each time).
fn hash_to_g1(domain: &[u8], msg: &[u8]) -> G1 {
    let joined = [domain, msg].concat();
    HASHED.get(super::kdf::sha256(&joined), || G1::hash(&joined, HASH_DST))
}

/// Hex, `Debug`, `Hash` and string serde for a public value with `from_bytes`/`to_bytes`.
macro_rules! public_encodings {
    ($ty:ident, $what:literal) => {
        impl $ty {
            /// Lowercase hex of [`Self::to_bytes`].
            pub fn to_hex(&self) -> String {
                hex::encode(self.to_bytes())
            }

            /// From hex (either case), then as [`Self::from_bytes`].
            pub fn from_hex(text: &str) -> Result<$ty> {
                let bytes = hex::decode(text)
                    .map_err(|e| CryptoError::malformed(concat!($what, " hex"), e))?;
                $ty::from_bytes(&bytes)
            }
        }

        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($ty), "({})"), self.to_hex())
            }
        }

        impl std::hash::Hash for $ty {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                // Compressed encodings are canonical, so equal values hash equally.
                self.to_bytes().hash(state);
            }
        }

        impl TryFrom<String> for $ty {
            type Error = CryptoError;
            fn try_from(text: String) -> Result<$ty> {
                $ty::from_hex(&text)
            }
        }

        impl From<$ty> for String {
            fn from(value: $ty) -> String {
                value.to_hex()
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Signer keys and signatures
// ---------------------------------------------------------------------------------------------

/// A BLS secret key `sk` (a nonzero scalar). Wiped on drop; `Debug` shows only the public
/// key's fingerprint.
pub struct BlsSecretKey {
    /// Wiped on drop by the scalar type itself.
    scalar: Scalar,
    public: BlsPublicKey,
}

impl BlsSecretKey {
    fn from_scalar(scalar: Scalar) -> BlsSecretKey {
        let public = BlsPublicKey(G2::generator().mul(&scalar));
        BlsSecretKey { scalar, public }
    }

    /// A fresh key from 64 bytes of OS randomness.
    ///
    /// # Panics
    /// If the OS random number generator fails.
    pub fn generate() -> BlsSecretKey {
        BlsSecretKey::from_scalar(random_scalar())
    }

    /// The key derived from `seed` (HKDF-SHA256 with label `"signing-key"`, see the module
    /// documentation). For tests, vectors and keys derived elsewhere; `seed` must be secret
    /// and uniformly random for the key to be.
    pub fn from_seed(seed: &[u8; 32]) -> BlsSecretKey {
        BlsSecretKey::from_scalar(seeded_scalar(seed, b"signing-key"))
    }

    /// From 32 big-endian bytes: a canonical (`< r`), nonzero scalar.
    pub fn from_bytes(bytes: &[u8]) -> Result<BlsSecretKey> {
        scalar_from_be(bytes, "BLS secret key").map(BlsSecretKey::from_scalar)
    }

    /// The 32 big-endian scalar bytes.
    pub fn to_bytes(&self) -> Secret<Vec<u8>> {
        scalar_to_be(&self.scalar)
    }

    /// The public key `sk·g2`.
    pub fn public_key(&self) -> BlsPublicKey {
        self.public
    }

    /// `sk·H(domain || msg)` (shared with the VES).
    fn sign_point(&self, domain: &[u8], msg: &[u8]) -> G1 {
        if let Err(e) = check_domain(domain) {
            panic!("{e}");
        }
        hash_to_g1(domain, msg).mul(&self.scalar)
    }

    /// Signs `domain || msg`. Deterministic: BLS signatures are unique.
    ///
    /// # Panics
    /// If `domain` is not a valid tag (see [`check_domain`]); domain tags are constants, so a
    /// bad one is a programming error caught by the first test that signs.
    pub fn sign(&self, domain: &[u8], msg: &[u8]) -> BlsSignature {
        BlsSignature(self.sign_point(domain, msg))
    }
}

impl std::fmt::Debug for BlsSecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlsSecretKey(public {})", self.public.fingerprint())
    }
}

/// A BLS public key `sk·g2`: a G2 subgroup point, never the identity. Serializes as hex.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BlsPublicKey(G2);

impl BlsPublicKey {
    /// From the 96-byte compressed encoding; rejects non-points, points outside the subgroup
    /// and the identity.
    ///
    /// Keys that decoded before are taken from a small process-wide memo: decompressing a G2
    /// point and checking its subgroup costs ~0.1 ms, and a fair exchange decodes the same
    /// parties' certified keys at every step. Only keys that passed every check are kept (they
    /// are public values), at most [`MEMO_MAX`]; the memo is emptied when full.
    pub fn from_bytes(bytes: &[u8]) -> Result<BlsPublicKey> {
        let Ok(array) = <[u8; PUBLIC_KEY_LEN]>::try_from(bytes) else {
            return g2_from_bytes(bytes, "BLS public key").map(BlsPublicKey);
        };
        DECODED_KEYS
            .get_or(array, || g2_from_bytes(bytes, "BLS public key"))
            .map(BlsPublicKey)
    }

    /// The 96-byte compressed encoding.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.0.to_compressed()
    }

    /// Lowercase hex of SHA-256 over the 96 compressed bytes.
    pub fn fingerprint(&self) -> String {
        hex::encode(super::kdf::sha256(&self.to_bytes()))
    }

    /// Verifies `sig` over `domain || msg`: `e(σ, −g2) · e(H(domain || msg), pk) = 1`.
    ///
    /// Errors: [`CryptoError::ApiMisuse`] for an invalid domain tag, otherwise
    /// [`CryptoError::BadSignature`].
    pub fn verify(&self, domain: &[u8], msg: &[u8], sig: &BlsSignature) -> Result<()> {
        check_domain(domain)?;
        if sig.0.is_identity() {
            return Err(CryptoError::BadSignature);
        }
        let h = hash_to_g1(domain, msg);
        if pairing_product_is_one(&[(&sig.0, &NEG_G2), (&h, &self.0)]) {
            Ok(())
        } else {
            Err(CryptoError::BadSignature)
        }
    }
}

public_encodings!(BlsPublicKey, "BLS public key");

/// A BLS signature: a G1 subgroup point (48 bytes compressed). Serializes as hex.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BlsSignature(G1);

impl BlsSignature {
    /// From the 48-byte compressed encoding; rejects non-points, points outside the subgroup
    /// and the identity.
    pub fn from_bytes(bytes: &[u8]) -> Result<BlsSignature> {
        g1_from_bytes(bytes, "BLS signature").map(BlsSignature)
    }

    /// The 48-byte compressed encoding.
    pub fn to_bytes(&self) -> [u8; SIGNATURE_LEN] {
        self.0.to_compressed()
    }
}

public_encodings!(BlsSignature, "BLS signature");

// ---------------------------------------------------------------------------------------------
// Arbiter keys and verifiably encrypted signatures
// ---------------------------------------------------------------------------------------------

/// The arbiter's secret `x` (a nonzero scalar). Wiped on drop; `Debug` shows only the public
/// key's fingerprint.
pub struct ArbiterKey {
    /// Wiped on drop by the scalar type itself.
    scalar: Scalar,
    public: ArbiterPublicKey,
}

impl ArbiterKey {
    fn from_scalar(scalar: Scalar) -> ArbiterKey {
        let public = ArbiterPublicKey {
            x1: G1::generator().mul(&scalar),
            x2: G2::generator().mul(&scalar),
        };
        ArbiterKey { scalar, public }
    }

    /// A fresh key from 64 bytes of OS randomness.
    ///
    /// # Panics
    /// If the OS random number generator fails.
    pub fn generate() -> ArbiterKey {
        ArbiterKey::from_scalar(random_scalar())
    }

    /// The key derived from `seed` (HKDF-SHA256 with label `"arbiter-key"`: the same seed
    /// gives a different scalar than [`BlsSecretKey::from_seed`]).
    pub fn from_seed(seed: &[u8; 32]) -> ArbiterKey {
        ArbiterKey::from_scalar(seeded_scalar(seed, b"arbiter-key"))
    }

    /// From 32 big-endian bytes: a canonical (`< r`), nonzero scalar.
    pub fn from_bytes(bytes: &[u8]) -> Result<ArbiterKey> {
        scalar_from_be(bytes, "arbiter secret key").map(ArbiterKey::from_scalar)
    }

    /// The 32 big-endian scalar bytes.
    pub fn to_bytes(&self) -> Secret<Vec<u8>> {
        scalar_to_be(&self.scalar)
    }

    /// The public key `(x·g1, x·g2)`.
    pub fn public_key(&self) -> ArbiterPublicKey {
        self.public
    }

    /// Opens a VES: `σ = ω − x·μ`, without any check.
    ///
    /// The result is the signer's signature only if `ves` verifies (see [`verify_encrypted`]);
    /// for anything else it is garbage (possibly even the identity point, which then fails
    /// every verification). Because this is an oracle for `x·μ` on arbitrary `μ`, call it only
    /// after checking the VES against the disputed key and message; prefer
    /// [`ArbiterKey::adjudicate_verified`], which does exactly that.
    pub fn adjudicate(&self, ves: &EncryptedSignature) -> BlsSignature {
        BlsSignature(ves.omega.sub(&ves.mu.mul(&self.scalar)))
    }

    /// Checks that `ves` hides `signer`'s signature over `domain || msg` under this arbiter's
    /// key, then opens it. The result verifies under `signer` (this follows from the pairing
    /// equation, so it is not checked a second time).
    pub fn adjudicate_verified(
        &self,
        signer: &BlsPublicKey,
        domain: &[u8],
        msg: &[u8],
        ves: &EncryptedSignature,
    ) -> Result<BlsSignature> {
        verify_encrypted(signer, &self.public, domain, msg, ves)?;
        Ok(self.adjudicate(ves))
    }
}

impl std::fmt::Debug for ArbiterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ArbiterKey(public {})", self.public.fingerprint())
    }
}

/// An arbiter's public key `(X₁, X₂) = (x·g1, x·g2)`: both halves in their subgroups, neither
/// the identity, and provably the same `x` (`e(X₁, g2) = e(g1, X₂)`). Serializes as hex.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ArbiterPublicKey {
    x1: G1,
    x2: G2,
}

impl ArbiterPublicKey {
    /// From `X₁ (48) || X₂ (96)`; checks subgroups, identity and that the halves match.
    pub fn from_bytes(bytes: &[u8]) -> Result<ArbiterPublicKey> {
        if bytes.len() != ARBITER_PUBLIC_KEY_LEN {
            return Err(CryptoError::Malformed(
                "arbiter public key must be 144 bytes".into(),
            ));
        }
        let (first, second) = bytes.split_at(48);
        let x1 = g1_from_bytes(first, "arbiter public key (G1 half)")?;
        let x2 = g2_from_bytes(second, "arbiter public key (G2 half)")?;
        // e(X₁, −g2) · e(g1, X₂) = 1  ⇔  e(X₁, g2) = e(g1, X₂).
        if !pairing_product_is_one(&[(&x1, &NEG_G2), (&G1::generator(), &x2)]) {
            return Err(CryptoError::Malformed(
                "arbiter public key: the G1 and G2 halves are not the same scalar".into(),
            ));
        }
        Ok(ArbiterPublicKey { x1, x2 })
    }

    /// `X₁ (48, G1 compressed) || X₂ (96, G2 compressed)`.
    pub fn to_bytes(&self) -> [u8; ARBITER_PUBLIC_KEY_LEN] {
        let mut out = [0_u8; ARBITER_PUBLIC_KEY_LEN];
        out[..48].copy_from_slice(&self.x1.to_compressed());
        out[48..].copy_from_slice(&self.x2.to_compressed());
        out
    }

    /// Lowercase hex of SHA-256 over the 144 bytes.
    pub fn fingerprint(&self) -> String {
        hex::encode(super::kdf::sha256(&self.to_bytes()))
    }
}

public_encodings!(ArbiterPublicKey, "arbiter public key");

/// A verifiably encrypted signature `(ω, μ) = (σ + r·X₁, r·g1)`: two G1 subgroup points,
/// neither the identity. Serializes as hex. Malleable: see the module documentation.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EncryptedSignature {
    omega: G1,
    mu: G1,
}

impl EncryptedSignature {
    /// From `ω (48) || μ (48)`, both compressed G1; rejects the identity in either place.
    pub fn from_bytes(bytes: &[u8]) -> Result<EncryptedSignature> {
        if bytes.len() != ENCRYPTED_SIGNATURE_LEN {
            return Err(CryptoError::Malformed(
                "encrypted signature must be 96 bytes".into(),
            ));
        }
        let (first, second) = bytes.split_at(48);
        Ok(EncryptedSignature {
            omega: g1_from_bytes(first, "encrypted signature (omega)")?,
            mu: g1_from_bytes(second, "encrypted signature (mu)")?,
        })
    }

    /// `ω (48, G1 compressed) || μ (48, G1 compressed)`.
    pub fn to_bytes(&self) -> [u8; ENCRYPTED_SIGNATURE_LEN] {
        let mut out = [0_u8; ENCRYPTED_SIGNATURE_LEN];
        out[..48].copy_from_slice(&self.omega.to_compressed());
        out[48..].copy_from_slice(&self.mu.to_compressed());
        out
    }
}

public_encodings!(EncryptedSignature, "encrypted signature");

/// Signs `domain || msg` and encrypts the signature to `arbiter`, with a fresh random `r`.
///
/// # Panics
/// If `domain` is not a valid tag, or the OS random number generator fails.
pub fn encrypt_signature(
    sk: &BlsSecretKey,
    arbiter: &ArbiterPublicKey,
    domain: &[u8],
    msg: &[u8],
) -> EncryptedSignature {
    // `r` is wiped when dropped.
    encrypt_with_scalar(sk, arbiter, domain, msg, &random_scalar())
}

/// [`encrypt_signature`] with `r = nonce` read as a little-endian 512-bit integer mod `r`.
/// For golden vectors only: anyone who learns a nonce opens that VES, and two VES with the
/// same nonce give away `σ₁ − σ₂` (so one opened signature opens the other). A nonce must be
/// secret, uniformly random and never repeat.
///
/// # Panics
/// If `domain` is not a valid tag, or `nonce` reduces to zero (e.g. all zero bytes).
pub fn encrypt_signature_with_nonce(
    sk: &BlsSecretKey,
    arbiter: &ArbiterPublicKey,
    domain: &[u8],
    msg: &[u8],
    nonce: &[u8; 64],
) -> EncryptedSignature {
    let r =
        Scalar::from_wide_le(nonce).expect("VES nonce reduces to zero: it must be 64 random bytes");
    encrypt_with_scalar(sk, arbiter, domain, msg, &r)
}

/// `(σ + r·X₁, r·g1)` for a nonzero `r`.
fn encrypt_with_scalar(
    sk: &BlsSecretKey,
    arbiter: &ArbiterPublicKey,
    domain: &[u8],
    msg: &[u8],
    r: &Scalar,
) -> EncryptedSignature {
    // σ is the secret being protected until the exchange completes: wipe the copy.
    let mut sigma = sk.sign_point(domain, msg);
    let omega = sigma.add(&arbiter.x1.mul(r));
    sigma.zeroize();
    EncryptedSignature {
        omega,
        mu: G1::generator().mul(r),
    }
}

/// Checks that `ves` hides `pk`'s signature over `domain || msg`, encrypted to `arbiter`:
/// `e(ω, −g2) · e(H(domain || msg), pk) · e(μ, X₂) = 1` (one three-term Miller loop).
///
/// Errors: [`CryptoError::ApiMisuse`] for an invalid domain tag, otherwise
/// [`CryptoError::BadSignature`] (including an identity `ω` or `μ`).
pub fn verify_encrypted(
    pk: &BlsPublicKey,
    arbiter: &ArbiterPublicKey,
    domain: &[u8],
    msg: &[u8],
    ves: &EncryptedSignature,
) -> Result<()> {
    check_domain(domain)?;
    if ves.omega.is_identity() || ves.mu.is_identity() {
        return Err(CryptoError::BadSignature);
    }
    let h = hash_to_g1(domain, msg);
    if pairing_product_is_one(&[(&ves.omega, &NEG_G2), (&h, &pk.0), (&ves.mu, &arbiter.x2)]) {
        Ok(())
    } else {
        Err(CryptoError::BadSignature)
    }
}

// ---------------------------------------------------------------------------------------------
// Batches of checks
// ---------------------------------------------------------------------------------------------

/// One check of [`verify_batch`]: what [`BlsPublicKey::verify`] or [`verify_encrypted`]
/// checks alone.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // Checks live briefly in one queue; boxing would allocate.
pub enum Check {
    /// `sig` is `key`'s signature over `domain || msg`.
    Signature {
        /// The signer's key.
        key: BlsPublicKey,
        /// The domain tag (see [`check_domain`]).
        domain: &'static [u8],
        /// The message.
        msg: Vec<u8>,
        /// The signature.
        sig: BlsSignature,
    },
    /// `ves` hides `key`'s signature over `domain || msg`, encrypted to `arbiter`.
    Encrypted {
        /// The signer's key.
        key: BlsPublicKey,
        /// The arbiter it is encrypted to.
        arbiter: ArbiterPublicKey,
        /// The domain tag (see [`check_domain`]).
        domain: &'static [u8],
        /// The message.
        msg: Vec<u8>,
        /// The verifiably encrypted signature.
        ves: EncryptedSignature,
    },
}

impl Check {
    /// This check alone: exactly [`BlsPublicKey::verify`] or [`verify_encrypted`].
    pub fn verify(&self) -> Result<()> {
        match self {
            Check::Signature {
                key,
                domain,
                msg,
                sig,
            } => key.verify(domain, msg, sig),
            Check::Encrypted {
                key,
                arbiter,
                domain,
                msg,
                ves,
            } => verify_encrypted(key, arbiter, domain, msg, ves),
        }
    }

    /// What the check pairs (see [`Equation`]).
    fn equation(&self) -> Equation<'_> {
        match self {
            Check::Signature {
                key,
                domain,
                msg,
                sig,
            } => Equation {
                key,
                domain,
                msg,
                on_neg_g2: sig.0,
                on_arbiter: None,
            },
            Check::Encrypted {
                key,
                arbiter,
                domain,
                msg,
                ves,
            } => Equation {
                key,
                domain,
                msg,
                on_neg_g2: ves.omega,
                on_arbiter: Some((arbiter.x2, ves.mu)),
            },
        }
    }

    /// The refusals that need no pairing: a bad domain tag, an identity point.
    fn precheck(&self) -> Result<()> {
        let e = self.equation();
        check_domain(e.domain)?;
        if e.on_neg_g2.is_identity() || e.on_arbiter.is_some_and(|(_, mu)| mu.is_identity()) {
            return Err(CryptoError::BadSignature);
        }
        Ok(())
    }
}

/// A check as the product of pairings it is: `e(on_neg_g2, −g2) · e(H(domain ‖ msg), key)`,
/// times `e(μ, X₂)` for a VES (`on_arbiter`).
struct Equation<'a> {
    key: &'a BlsPublicKey,
    domain: &'a [u8],
    msg: &'a [u8],
    /// `σ`, or the VES's `ω`.
    on_neg_g2: G1,
    /// The arbiter's `X₂` and the VES's `μ`.
    on_arbiter: Option<(G2, G1)>,
}

/// Runs `checks` together, with one result per check, in order: each result is what
/// [`Check::verify`] would say for that check alone.
///
/// How: every check is an equation `∏ e(Pⱼ, Qⱼ) = 1`. Raised to a random 64-bit weight `wᵢ`
/// each (the first weight is 1) and multiplied together, the points paired with the same G2
/// point add up: `Σ wᵢ·σᵢ` (or `ωᵢ`) against `−g2`, `Σ wᵢ·μᵢ` against each arbiter's `X₂`,
/// `Σ wᵢ·H(mᵢ)` against each signer's key. So a batch costs one final exponentiation and
/// one Miller loop per distinct key instead of one of each per check (a check alone costs
/// about 0.9–1 ms here, most of it the final exponentiation). If every check holds, so does
/// the product. If one does not, the product is one only with probability 2⁻⁶⁴: all points
/// are in the prime-order subgroups (decoding checks it, arithmetic keeps it), so a failing
/// check's factor has order `r` and exactly one weight in `r` would cancel it. The weights
/// come from the OS generator after the checks are fixed, so no submitter can aim at them.
///
/// When the product is not one, every check runs alone, so a batch with a bad signature
/// refuses exactly that one and never accepts it with the others.
///
/// # Panics
/// If the operating system's random number generator fails.
pub fn verify_batch(checks: &[Check]) -> Vec<Result<()>> {
    let mut results: Vec<Option<Result<()>>> =
        checks.iter().map(|c| c.precheck().err().map(Err)).collect();
    let pending: Vec<&Check> = checks
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_none())
        .map(|(c, _)| c)
        .collect();
    if pending.len() >= 2 && weighted_product_is_one(&pending) {
        for r in results.iter_mut().filter(|r| r.is_none()) {
            *r = Some(Ok(()));
        }
    }
    results
        .into_iter()
        .zip(checks)
        .map(|(r, c)| r.unwrap_or_else(|| c.verify()))
        .collect()
}

/// The weighted product of [`verify_batch`], with the G1 points summed per G2 point.
fn weighted_product_is_one(checks: &[&Check]) -> bool {
    let mut bytes = vec![0_u8; 8 * checks.len()];
    getrandom::fill(&mut bytes).expect("the OS random number generator failed");
    let weights = bytes.chunks_exact(8).enumerate().map(|(i, w)| match i {
        0 => 1,
        // Invariant: `chunks_exact(8)` yields 8-byte chunks.
        _ => u64::from_le_bytes(w.try_into().expect("8 bytes")).max(1),
    });
    // Points paired with −g2, and with each other G2 point (arbiters' X₂, signers' keys).
    let mut on_neg_g2: Vec<(G1, u64)> = Vec::with_capacity(checks.len());
    let mut on: Vec<(G2, Vec<(G1, u64)>)> = Vec::new();
    let mut add = |q: G2, p: G1, w: u64| match on.iter_mut().find(|(known, _)| *known == q) {
        Some((_, terms)) => terms.push((p, w)),
        None => on.push((q, vec![(p, w)])),
    };
    for (check, w) in checks.iter().zip(weights) {
        let e = check.equation();
        on_neg_g2.push((e.on_neg_g2, w));
        if let Some((x2, mu)) = e.on_arbiter {
            add(x2, mu, w);
        }
        add(e.key.0, hash_to_g1(e.domain, e.msg), w);
    }
    let sum = |terms: &[(G1, u64)]| {
        G1::linear_combination(&terms.iter().map(|(p, w)| (p, *w)).collect::<Vec<_>>())
    };
    let sums: Vec<(G1, G2)> = std::iter::once((sum(&on_neg_g2), *NEG_G2))
        .chain(on.iter().map(|(q, terms)| (sum(terms), *q)))
        .collect();
    pairing_product_is_one(&sums.iter().map(|(p, q)| (p, q)).collect::<Vec<_>>())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly by design.
mod tests {
    use super::*;

    const DOMAIN: &[u8] = b"tally/test/v1\0";

    /// The compressed encoding of the identity (infinity and compression flags set).
    fn identity_g1() -> [u8; 48] {
        let mut bytes = [0_u8; 48];
        bytes[0] = 0xc0;
        bytes
    }

    fn identity_g2() -> [u8; 96] {
        let mut bytes = [0_u8; 96];
        bytes[0] = 0xc0;
        bytes
    }

    fn bad_sig<T: std::fmt::Debug>(result: Result<T>) -> bool {
        matches!(result, Err(CryptoError::BadSignature))
    }

    #[test]
    fn sign_verify_round_trip_and_failures() {
        let sk = BlsSecretKey::from_seed(&[1; 32]);
        let pk = sk.public_key();
        let sig = sk.sign(DOMAIN, b"hello");
        pk.verify(DOMAIN, b"hello", &sig).unwrap();
        // Unique signatures: signing again gives the same bytes.
        assert_eq!(sk.sign(DOMAIN, b"hello"), sig);
        assert!(bad_sig(pk.verify(DOMAIN, b"hellO", &sig)));
        assert!(bad_sig(pk.verify(b"tally/other/v1\0", b"hello", &sig)));
        // Bytes cannot slide between domain and message: the tag must end at its only NUL.
        assert!(matches!(
            pk.verify(b"tally/test/v1\0h", b"ello", &sig),
            Err(CryptoError::ApiMisuse(_))
        ));
        let other = BlsSecretKey::from_seed(&[2; 32]).public_key();
        assert!(bad_sig(other.verify(DOMAIN, b"hello", &sig)));
        assert!(matches!(
            pk.verify(b"no-nul", b"hello", &sig),
            Err(CryptoError::ApiMisuse(_))
        ));
        // A generated key works too, and two generated keys differ.
        let fresh = BlsSecretKey::generate();
        fresh
            .public_key()
            .verify(DOMAIN, b"x", &fresh.sign(DOMAIN, b"x"))
            .unwrap();
        assert_ne!(BlsSecretKey::generate().public_key(), fresh.public_key());
    }

    #[test]
    #[should_panic(expected = "domain tag")]
    fn signing_with_a_bad_domain_panics() {
        BlsSecretKey::from_seed(&[1; 32]).sign(b"missing-nul", b"x");
    }

    #[test]
    fn identity_and_off_curve_encodings_are_rejected() {
        assert!(matches!(
            BlsSignature::from_bytes(&identity_g1()),
            Err(CryptoError::Malformed(_))
        ));
        assert!(BlsPublicKey::from_bytes(&identity_g2()).is_err());
        assert!(BlsSignature::from_bytes(&[0; 48]).is_err());
        assert!(BlsSignature::from_bytes(&[0; 47]).is_err());
        assert!(BlsPublicKey::from_bytes(&[0; 95]).is_err());
        assert!(BlsPublicKey::from_hex("zz").is_err());
        // The identity signature never verifies, even if built in-process.
        let pk = BlsSecretKey::from_seed(&[1; 32]).public_key();
        let identity = BlsSignature(G1::identity());
        assert!(bad_sig(pk.verify(DOMAIN, b"m", &identity)));
    }

    #[test]
    fn tampered_bytes_fail_at_parsing_or_verification() {
        let sk = BlsSecretKey::from_seed(&[3; 32]);
        let pk = sk.public_key();
        let arbiter = ArbiterKey::from_seed(&[4; 32]).public_key();
        let sig = sk.sign(DOMAIN, b"m").to_bytes();
        let ves = encrypt_signature(&sk, &arbiter, DOMAIN, b"m").to_bytes();
        for i in 0..SIGNATURE_LEN {
            for bit in [0x01, 0x20, 0x80] {
                let mut bad = sig;
                bad[i] ^= bit;
                if let Ok(parsed) = BlsSignature::from_bytes(&bad) {
                    assert!(bad_sig(pk.verify(DOMAIN, b"m", &parsed)), "byte {i}");
                }
            }
        }
        for i in 0..ENCRYPTED_SIGNATURE_LEN {
            for bit in [0x01, 0x20, 0x80] {
                let mut bad = ves;
                bad[i] ^= bit;
                if let Ok(parsed) = EncryptedSignature::from_bytes(&bad) {
                    assert!(
                        bad_sig(verify_encrypted(&pk, &arbiter, DOMAIN, b"m", &parsed)),
                        "byte {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn ves_verifies_and_adjudicates_to_the_plain_signature() {
        let sk = BlsSecretKey::from_seed(&[5; 32]);
        let pk = sk.public_key();
        let arbiter = ArbiterKey::from_seed(&[6; 32]);
        let apk = arbiter.public_key();
        let ves = encrypt_signature(&sk, &apk, DOMAIN, b"deal");
        verify_encrypted(&pk, &apk, DOMAIN, b"deal", &ves).unwrap();
        // ω itself is not the signature.
        assert!(bad_sig(pk.verify(
            DOMAIN,
            b"deal",
            &BlsSignature(ves.omega)
        )));

        let opened = arbiter.adjudicate(&ves);
        pk.verify(DOMAIN, b"deal", &opened).unwrap();
        assert_eq!(opened, sk.sign(DOMAIN, b"deal"));
        assert_eq!(
            arbiter
                .adjudicate_verified(&pk, DOMAIN, b"deal", &ves)
                .unwrap(),
            opened
        );
        // Two encryptions of one signature differ (fresh r) but open to the same σ.
        let again = encrypt_signature(&sk, &apk, DOMAIN, b"deal");
        assert_ne!(again, ves);
        assert_eq!(arbiter.adjudicate(&again), opened);
        // Round trips through bytes, hex and JSON.
        assert_eq!(
            EncryptedSignature::from_bytes(&ves.to_bytes()).unwrap(),
            ves
        );
        assert_eq!(EncryptedSignature::from_hex(&ves.to_hex()).unwrap(), ves);
        let json = serde_json::to_string(&ves).unwrap();
        assert_eq!(
            serde_json::from_str::<EncryptedSignature>(&json).unwrap(),
            ves
        );
    }

    #[test]
    fn ves_for_another_message_key_or_arbiter_fails() {
        let sk = BlsSecretKey::from_seed(&[7; 32]);
        let pk = sk.public_key();
        let arbiter = ArbiterKey::from_seed(&[8; 32]);
        let apk = arbiter.public_key();
        let ves = encrypt_signature(&sk, &apk, DOMAIN, b"deal");
        assert!(bad_sig(verify_encrypted(&pk, &apk, DOMAIN, b"other", &ves)));
        assert!(bad_sig(verify_encrypted(
            &pk,
            &apk,
            b"tally/other/v1\0",
            b"deal",
            &ves
        )));
        let other_pk = BlsSecretKey::from_seed(&[9; 32]).public_key();
        assert!(bad_sig(verify_encrypted(
            &other_pk, &apk, DOMAIN, b"deal", &ves
        )));
        let other_arbiter = ArbiterKey::from_seed(&[10; 32]);
        assert!(bad_sig(verify_encrypted(
            &pk,
            &other_arbiter.public_key(),
            DOMAIN,
            b"deal",
            &ves
        )));
        // The wrong arbiter cannot open it, and the checked path refuses.
        assert!(bad_sig(pk.verify(
            DOMAIN,
            b"deal",
            &other_arbiter.adjudicate(&ves)
        )));
        assert!(bad_sig(
            other_arbiter.adjudicate_verified(&pk, DOMAIN, b"deal", &ves)
        ));
        assert!(bad_sig(
            arbiter.adjudicate_verified(&pk, DOMAIN, b"other", &ves)
        ));
        assert!(matches!(
            verify_encrypted(&pk, &apk, b"bad", b"deal", &ves),
            Err(CryptoError::ApiMisuse(_))
        ));
    }

    /// With μ = identity the pairing equation degenerates to plain verification of ω; such a
    /// "VES" reveals σ and is refused both at parsing and (if built in-process) at verification.
    #[test]
    fn plain_signature_posing_as_ves_is_refused() {
        let sk = BlsSecretKey::from_seed(&[11; 32]);
        let pk = sk.public_key();
        let apk = ArbiterKey::from_seed(&[12; 32]).public_key();
        let sig = sk.sign(DOMAIN, b"deal");
        let mut bytes = [0_u8; ENCRYPTED_SIGNATURE_LEN];
        bytes[..48].copy_from_slice(&sig.to_bytes());
        bytes[48..].copy_from_slice(&identity_g1());
        assert!(matches!(
            EncryptedSignature::from_bytes(&bytes),
            Err(CryptoError::Malformed(_))
        ));
        let forged = EncryptedSignature {
            omega: sig.0,
            mu: G1::identity(),
        };
        assert!(bad_sig(verify_encrypted(
            &pk, &apk, DOMAIN, b"deal", &forged
        )));
        // Identity ω is refused at parsing too.
        let ves = encrypt_signature(&sk, &apk, DOMAIN, b"deal").to_bytes();
        let mut bytes = ves;
        bytes[..48].copy_from_slice(&identity_g1());
        assert!(EncryptedSignature::from_bytes(&bytes).is_err());
        assert!(EncryptedSignature::from_bytes(&ves[..95]).is_err());
    }

    /// Documents the malleability: anyone can rerandomize a VES with t; it still verifies
    /// and opens to the same σ, so VES bytes are no identifier.
    #[test]
    fn ves_is_rerandomizable() {
        let sk = BlsSecretKey::from_seed(&[13; 32]);
        let arbiter = ArbiterKey::from_seed(&[14; 32]);
        let apk = arbiter.public_key();
        let ves = encrypt_signature(&sk, &apk, DOMAIN, b"deal");
        let t = Scalar::from_u64(12_345);
        let rerandomized = EncryptedSignature {
            omega: ves.omega.add(&apk.x1.mul(&t)),
            mu: ves.mu.add(&G1::generator().mul(&t)),
        };
        assert_ne!(rerandomized, ves);
        verify_encrypted(&sk.public_key(), &apk, DOMAIN, b"deal", &rerandomized).unwrap();
        assert_eq!(arbiter.adjudicate(&rerandomized), arbiter.adjudicate(&ves));
    }

    /// The memo of decoded keys hands back the same key, and never keeps a refused one.
    #[test]
    fn decoded_keys_are_remembered_only_when_valid() {
        let pk = BlsSecretKey::from_seed(&[22; 32]).public_key();
        for _ in 0..2 {
            assert_eq!(BlsPublicKey::from_bytes(&pk.to_bytes()).unwrap(), pk);
        }
        let mut bad = pk.to_bytes();
        bad[95] ^= 1;
        for _ in 0..2 {
            assert!(matches!(
                BlsPublicKey::from_bytes(&bad),
                Err(CryptoError::Malformed(_))
            ));
        }
        assert!(BlsPublicKey::from_bytes(&identity_g2()).is_err());
        assert!(BlsPublicKey::from_bytes(&identity_g2()).is_err());
    }

    /// A batch of every kind: two signers (one of them twice), VES to two arbiters.
    fn good_batch() -> Vec<Check> {
        let (s1, s2) = (
            BlsSecretKey::from_seed(&[31; 32]),
            BlsSecretKey::from_seed(&[32; 32]),
        );
        let (a1, a2) = (
            ArbiterKey::from_seed(&[33; 32]).public_key(),
            ArbiterKey::from_seed(&[34; 32]).public_key(),
        );
        let sig = |sk: &BlsSecretKey, msg: &[u8]| Check::Signature {
            key: sk.public_key(),
            domain: DOMAIN,
            msg: msg.to_vec(),
            sig: sk.sign(DOMAIN, msg),
        };
        let ves = |sk: &BlsSecretKey, arbiter: &ArbiterPublicKey, msg: &[u8]| Check::Encrypted {
            key: sk.public_key(),
            arbiter: *arbiter,
            domain: DOMAIN,
            msg: msg.to_vec(),
            ves: encrypt_signature(sk, arbiter, DOMAIN, msg),
        };
        vec![
            sig(&s1, b"one"),
            ves(&s2, &a1, b"two"),
            sig(&s2, b"three"),
            ves(&s1, &a2, b"four"),
            sig(&s1, b"five"),
            ves(&s1, &a1, b"six"),
        ]
    }

    /// Each way a check can be wrong, applied to `c`.
    fn spoiled(c: &Check, how: usize) -> Check {
        let mut c = c.clone();
        let other = BlsSecretKey::from_seed(&[35; 32]);
        match (&mut c, how) {
            (Check::Signature { msg, .. } | Check::Encrypted { msg, .. }, 0) => msg.push(b'!'),
            (Check::Signature { key, .. } | Check::Encrypted { key, .. }, 1) => {
                *key = other.public_key();
            }
            (Check::Signature { sig, .. }, 2) => sig.0 = sig.0.add(&G1::generator()),
            (Check::Encrypted { ves, .. }, 2) => ves.mu = ves.mu.add(&G1::generator()),
            (Check::Signature { sig, .. }, 3) => sig.0 = G1::identity(),
            (Check::Encrypted { ves, .. }, 3) => ves.omega = G1::identity(),
            (Check::Signature { domain, .. } | Check::Encrypted { domain, .. }, _) => {
                *domain = b"no-nul";
            }
        }
        c
    }

    #[test]
    fn a_batch_says_what_each_check_says_alone() {
        let good = good_batch();
        assert!(verify_batch(&good).iter().all(Result::is_ok));
        assert!(weighted_product_is_one(&good.iter().collect::<Vec<_>>()));
        assert!(verify_batch(&[]).is_empty());
        for at in 0..good.len() {
            for how in 0..5 {
                let mut batch = good.clone();
                batch[at] = spoiled(&good[at], how);
                let alone = batch[at].verify();
                assert!(alone.is_err(), "spoiled {how} at {at} must fail alone");
                let results = verify_batch(&batch);
                for (i, r) in results.iter().enumerate() {
                    if i == at {
                        assert_eq!(
                            std::mem::discriminant(r),
                            std::mem::discriminant(&alone),
                            "{how} at {at}"
                        );
                        assert!(matches!(
                            (r, &alone),
                            (
                                Err(CryptoError::BadSignature),
                                Err(CryptoError::BadSignature)
                            ) | (
                                Err(CryptoError::ApiMisuse(_)),
                                Err(CryptoError::ApiMisuse(_))
                            )
                        ));
                    } else {
                        assert!(r.is_ok(), "the good check {i} beside {how} at {at}");
                    }
                }
                // Alone in a batch, too.
                assert_eq!(verify_batch(&batch[at..=at]).len(), 1);
                assert!(verify_batch(&batch[at..=at])[0].is_err());
            }
        }
    }

    #[test]
    fn two_wrong_signatures_that_cancel_are_not_accepted_together() {
        // σ₁ + T and σ₂ − T: an unweighted sum would equal the sum of the two true signatures.
        let mut batch = good_batch();
        let t = G1::generator().mul(&Scalar::from_u64(7));
        let (Check::Signature { sig: first, .. }, Check::Signature { sig: third, .. }) =
            (batch[0].clone(), batch[2].clone())
        else {
            unreachable!("positions 0 and 2 are signatures")
        };
        if let Check::Signature { sig, .. } = &mut batch[0] {
            sig.0 = first.0.add(&t);
        }
        if let Check::Signature { sig, .. } = &mut batch[2] {
            sig.0 = third.0.sub(&t);
        }
        let refs: Vec<&Check> = batch.iter().collect();
        assert!(!weighted_product_is_one(&refs));
        let results = verify_batch(&batch);
        assert!(matches!(results[0], Err(CryptoError::BadSignature)));
        assert!(matches!(results[2], Err(CryptoError::BadSignature)));
        assert!(
            results
                .iter()
                .enumerate()
                .all(|(i, r)| i == 0 || i == 2 || r.is_ok())
        );
    }

    #[test]
    fn memos_give_what_computing_again_gives() {
        // A hashed message: the same point from the memo as from blst, and another message
        // (or the same bytes split differently between domain and message) another point.
        let first = hash_to_g1(DOMAIN, b"memo");
        assert_eq!(hash_to_g1(DOMAIN, b"memo"), first);
        assert_eq!(first, G1::hash(&[DOMAIN, b"memo"].concat(), HASH_DST));
        assert_ne!(hash_to_g1(DOMAIN, b"memO"), first);
        // A decoded signature: the same point twice; a bad encoding refused twice.
        let sig = BlsSecretKey::from_seed(&[36; 32]).sign(DOMAIN, b"memo");
        for _ in 0..2 {
            assert_eq!(BlsSignature::from_bytes(&sig.to_bytes()).unwrap(), sig);
            assert!(BlsSignature::from_bytes(&identity_g1()).is_err());
        }
        let mut bad = sig.to_bytes();
        bad[47] ^= 1;
        let first_try = BlsSignature::from_bytes(&bad).is_err();
        assert_eq!(BlsSignature::from_bytes(&bad).is_err(), first_try);
    }

    #[test]
    fn arbiter_public_key_halves_must_match() {
        let a = ArbiterKey::from_seed(&[15; 32]).public_key();
        let b = ArbiterKey::from_seed(&[16; 32]).public_key();
        assert_eq!(ArbiterPublicKey::from_bytes(&a.to_bytes()).unwrap(), a);
        let mut mixed = a.to_bytes();
        mixed[48..].copy_from_slice(&b.to_bytes()[48..]);
        assert!(matches!(
            ArbiterPublicKey::from_bytes(&mixed),
            Err(CryptoError::Malformed(_))
        ));
        let mut no_g1 = a.to_bytes();
        no_g1[..48].copy_from_slice(&identity_g1());
        assert!(ArbiterPublicKey::from_bytes(&no_g1).is_err());
        let mut no_g2 = a.to_bytes();
        no_g2[48..].copy_from_slice(&identity_g2());
        assert!(ArbiterPublicKey::from_bytes(&no_g2).is_err());
        assert!(ArbiterPublicKey::from_bytes(&a.to_bytes()[..143]).is_err());
        assert_eq!(ArbiterPublicKey::from_hex(&a.to_hex()).unwrap(), a);
        assert_eq!(
            a.fingerprint(),
            hex::encode(super::super::kdf::sha256(&a.to_bytes()))
        );
    }

    #[test]
    fn secret_key_encoding_is_canonical_big_endian() {
        let sk = BlsSecretKey::from_seed(&[17; 32]);
        let bytes = sk.to_bytes();
        let back = BlsSecretKey::from_bytes(bytes.expose()).unwrap();
        assert_eq!(back.public_key(), sk.public_key());
        // Big-endian: the scalar 1 is 31 zero bytes then 0x01, and its public key is g2.
        let mut one = [0_u8; 32];
        one[31] = 1;
        let one = BlsSecretKey::from_bytes(&one).unwrap();
        assert_eq!(one.public_key().to_bytes(), G2::generator().to_compressed());
        assert_eq!(
            ArbiterKey::from_bytes(one.to_bytes().expose())
                .unwrap()
                .public_key()
                .x1,
            G1::generator()
        );
        // Zero, r itself (non-canonical) and wrong lengths are refused.
        assert!(BlsSecretKey::from_bytes(&[0; 32]).is_err());
        let r = hex::decode("73eda753299d7d483339d80809a1d80553bda402fffe5bfeffffffff00000001")
            .unwrap();
        assert!(BlsSecretKey::from_bytes(&r).is_err());
        assert!(ArbiterKey::from_bytes(&[0xff; 32]).is_err());
        assert!(BlsSecretKey::from_bytes(&[1; 31]).is_err());
        let arbiter = ArbiterKey::from_seed(&[18; 32]);
        let back = ArbiterKey::from_bytes(arbiter.to_bytes().expose()).unwrap();
        assert_eq!(back.public_key(), arbiter.public_key());
        // One seed, two roles, two different scalars.
        assert_ne!(
            ArbiterKey::from_seed(&[19; 32]).to_bytes().expose(),
            BlsSecretKey::from_seed(&[19; 32]).to_bytes().expose()
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let sk = BlsSecretKey::from_seed(&[20; 32]);
        let shown = format!("{sk:?}");
        assert!(shown.contains(&sk.public_key().fingerprint()));
        assert!(!shown.contains(&hex::encode(sk.to_bytes().expose())));
        let arbiter = ArbiterKey::from_seed(&[21; 32]);
        let shown = format!("{arbiter:?}");
        assert!(shown.contains(&arbiter.public_key().fingerprint()));
        assert!(!shown.contains(&hex::encode(arbiter.to_bytes().expose())));
    }

    #[test]
    fn public_encodings_round_trip() {
        let sk = BlsSecretKey::from_seed(&[22; 32]);
        let pk = sk.public_key();
        assert_eq!(BlsPublicKey::from_hex(&pk.to_hex()).unwrap(), pk);
        assert_eq!(
            pk.fingerprint(),
            hex::encode(super::super::kdf::sha256(&pk.to_bytes()))
        );
        let json = serde_json::to_string(&pk).unwrap();
        assert_eq!(json, format!("\"{}\"", pk.to_hex()));
        assert_eq!(serde_json::from_str::<BlsPublicKey>(&json).unwrap(), pk);
        let sig = sk.sign(DOMAIN, b"m");
        assert_eq!(BlsSignature::from_hex(&sig.to_hex()).unwrap(), sig);
        assert_eq!(BlsSignature::from_bytes(&sig.to_bytes()).unwrap(), sig);
        assert_eq!(sig.to_hex().len(), 2 * SIGNATURE_LEN);
    }

    #[test]
    #[should_panic(expected = "nonce reduces to zero")]
    fn zero_nonce_panics() {
        let sk = BlsSecretKey::from_seed(&[1; 32]);
        let apk = ArbiterKey::from_seed(&[2; 32]).public_key();
        encrypt_signature_with_nonce(&sk, &apk, DOMAIN, b"m", &[0; 64]);
    }

    const GOLDEN_PUBLIC_KEY: &str = concat!(
        "8b26bbd1ec7430fa692639ea786fcc08ce1e95743c8e2c6e48e885ee23aa210d",
        "f64e6b5fd1e093c0c97a5f68ea37f1830066ecce0b58c378941f762a74d804b0",
        "3e6c80cdfd8787b8183891a1035c78f81a5af4eeb6249abd26440ede4a0a1cce",
    );
    const GOLDEN_SIGNATURE: &str = concat!(
        "a854dfdce06db617453f62b9da4ca8b5fd1585df704b3d261f8b9e56f21a8eac",
        "31654df22cac3b1aaedc8729d5eee851",
    );
    const GOLDEN_ARBITER_PUBLIC_KEY: &str = concat!(
        "8a875d99d67d79addab9f124d8f4401060e76be17e96659a0b0a0e006ec2e7d7",
        "0115576d919394b0ec1ec26823513027976212ed2d3a94932e656aa4cef04445",
        "a2877741a34218e36c9674667ad712b612ed9d5cf95fc90184b52797f99175a2",
        "022ff28ea80336e34af86e6a90ec2612214810f6f5517f64a5703a007745bd7d",
        "e53e132bae7c97d0153bca3c299e010a",
    );
    const GOLDEN_VES: &str = concat!(
        "8436c7b38c6cbcf79ab3ea2865cae8cac24e8926fd4d5a54c684d5043fdfee79",
        "c0471699cde0ba9ac2dfcb12585dfe51ab3a4e5a5feb1c35b4c2f86b51c9eb77",
        "a5c6b647652e4560525a5cf6bf6c8698ee88ddce007e030b481f6a530d7b8db5",
    );

    /// Pins keygen, hashing, signing and VES byte for byte. Keys from seed [7; 32] (the signer)
    /// and [7; 32] (the arbiter, label "arbiter-key"), nonce [9; 64].
    #[test]
    fn golden_vector() {
        let sk = BlsSecretKey::from_seed(&[7; 32]);
        let arbiter = ArbiterKey::from_seed(&[7; 32]);
        let pk = sk.public_key();
        let apk = arbiter.public_key();
        let sig = sk.sign(DOMAIN, b"abc");
        let ves = encrypt_signature_with_nonce(&sk, &apk, DOMAIN, b"abc", &[9; 64]);
        assert_eq!(pk.to_hex(), GOLDEN_PUBLIC_KEY);
        assert_eq!(sig.to_hex(), GOLDEN_SIGNATURE);
        assert_eq!(apk.to_hex(), GOLDEN_ARBITER_PUBLIC_KEY);
        assert_eq!(ves.to_hex(), GOLDEN_VES);
        verify_encrypted(&pk, &apk, DOMAIN, b"abc", &ves).unwrap();
        assert_eq!(arbiter.adjudicate(&ves), sig);
    }

    /// `cargo test --release -p tally-kernel bls_timing -- --ignored --nocapture`
    #[test]
    #[ignore = "timing, run by hand in release mode"]
    fn bls_timing() {
        let sk = BlsSecretKey::from_seed(&[1; 32]);
        let pk = sk.public_key();
        let apk = ArbiterKey::from_seed(&[2; 32]).public_key();
        let n = 50_u32;
        let start = std::time::Instant::now();
        let mut sig = sk.sign(DOMAIN, b"timing");
        for i in 0..n {
            sig = sk.sign(DOMAIN, &i.to_le_bytes());
        }
        let sign = start.elapsed() / n;
        let start = std::time::Instant::now();
        for _ in 0..n {
            pk.verify(DOMAIN, &(n - 1).to_le_bytes(), &sig).unwrap();
        }
        let verify = start.elapsed() / n;
        let ves = encrypt_signature(&sk, &apk, DOMAIN, b"timing");
        let start = std::time::Instant::now();
        for _ in 0..n {
            encrypt_signature(&sk, &apk, DOMAIN, b"timing");
        }
        let encrypt = start.elapsed() / n;
        let start = std::time::Instant::now();
        for _ in 0..n {
            verify_encrypted(&pk, &apk, DOMAIN, b"timing", &ves).unwrap();
        }
        let verify_ves = start.elapsed() / n;
        println!("sign {sign:?}, verify {verify:?}");
        println!("encrypt_signature {encrypt:?}, verify_encrypted {verify_ves:?}");
    }
}
