//! The crypto kit: thin, documented wrappers over RustCrypto and dalek crates.
//!
//! Every primitive comes from an audited or widely reviewed crate; this module only fixes the
//! choices (algorithms, encodings, domain separation, file formats) so the rest of Tally cannot
//! get them wrong. The submodules:
//!
//! * [`keys`]: Ed25519 signing and verifying keys; every signature covers `domain || message`.
//! * [`canonical`]: RFC 8785 canonical JSON and [`canonical::SignedRecord`], which stores the
//!   exact signed bytes next to the signature.
//! * [`ca`]: a node certificate authority issuing Ed25519 X.509 v3 certificates, and the matching
//!   certificate check.
//! * [`stream`]: XChaCha20-Poly1305 STREAM file encryption with truncation detection.
//! * [`kdf`]: SHA-256, HMAC-SHA256, HKDF-SHA256 and Argon2id password hashing.
//! * [`otp`]: RFC 4226 / 6238 one-time codes and message-bound codes.
//! * [`pad`]: the one-time pad and its one-time authenticator (Poly1305 keyed by fresh pad
//!   bytes), for issue [8]'s pads.
//!
//! Key decision: one error enum, [`CryptoError`], whose variants say what went wrong and, by
//! their name, whose fault it is (`ApiMisuse` is a caller bug; `BadSignature`, `Tampered`,
//! `Truncated`, `Malformed` come from untrusted input). Rejected: a per-submodule error type,
//! which would make every caller write the same `From` glue six times.
//!
//! Byte-exact formats are described in `docs/protocols/crypto.md`; golden vectors that pin them
//! live in `docs/protocols/vectors/crypto.json` and are checked by the `vectors` tests
//! (regenerate deliberately with `UPDATE_EXPECT=1 cargo test -p tally-kernel`).

pub mod bls;
pub mod ca;
pub mod canonical;
pub mod kdf;
pub mod keys;
mod memo;
pub mod otp;
pub mod pad;
pub mod seal;
pub mod stream;
pub mod warrant;

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly by design.
mod vectors;

pub use ca::{Certificate, CertificateAuthority};
pub use canonical::{SignedRecord, canonical_json};
pub use keys::{Signature, SigningKey, VerifyingKey};
pub use warrant::{Counterparties, WarrantTerms, check_warrant, issue_warrant};

use crate::time::Timestamp;

/// Everything that can go wrong in the crypto kit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The caller broke a documented precondition (bad digit count, chunk size, output length,
    /// validity window, domain tag ...). Never caused by untrusted input alone.
    #[error("API misuse: {0}")]
    ApiMisuse(&'static str),

    /// An Ed25519 signature did not verify (strict verification).
    #[error("signature verification failed")]
    BadSignature,

    /// The certificate is past its `notAfter`.
    #[error("certificate expired at {not_after} (now {now})")]
    Expired {
        /// End of the validity window (inclusive).
        not_after: Timestamp,
        /// The instant the check was made for.
        now: Timestamp,
    },

    /// Filesystem or stream I/O failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// The issuer certificate is not a CA (no `basicConstraints` with `cA = TRUE`, or a
    /// `keyUsage` without `keyCertSign`).
    #[error("issuer certificate is not a certificate authority")]
    IssuerNotCa,

    /// Input could not be decoded or breaks the format (PEM, DER, PKCS#8, hex, base64, JSON,
    /// stream header, PHC string ...). The text names the part and the reason.
    #[error("malformed input: {0}")]
    Malformed(String),

    /// Bytes that must be RFC 8785 canonical JSON under our profile are not (or a value cannot be
    /// represented canonically, e.g. a float or an integer beyond ±(2^53 − 1)).
    #[error("not canonical JSON: {0}")]
    NonCanonical(&'static str),

    /// The certificate's `notBefore` is still in the future.
    #[error("certificate not valid before {not_before} (now {now})")]
    NotYetValid {
        /// Start of the validity window (inclusive).
        not_before: Timestamp,
        /// The instant the check was made for.
        now: Timestamp,
    },

    /// An encrypted chunk failed authentication: the data was modified, reordered, spliced
    /// from another file, or the key is wrong (the two cases are indistinguishable by design).
    #[error("ciphertext failed authentication (wrong key or tampered data)")]
    Tampered,

    /// The encrypted stream ended before its final chunk: the file was cut short.
    #[error("encrypted stream is truncated")]
    Truncated,

    /// The certificate's issuer name is not the subject of the CA it was checked against.
    #[error("certificate was not issued by this CA")]
    UnknownIssuer,

    /// A record or key belongs to a different key than the one supplied (fingerprint mismatch,
    /// or a CA key that does not match the CA certificate).
    #[error("wrong key: {0}")]
    WrongKey(&'static str),
}

/// Result type of the crypto kit.
pub type Result<T, E = CryptoError> = std::result::Result<T, E>;

impl CryptoError {
    /// A [`CryptoError::Malformed`] naming `what` failed and the decoder's reason.
    pub(crate) fn malformed(what: &str, reason: impl std::fmt::Display) -> CryptoError {
        CryptoError::Malformed(format!("{what}: {reason}"))
    }
}
