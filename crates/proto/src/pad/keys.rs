//! Key pairs and mailbox aliases (the seed's pad-derived key pairs; `docs/protocols/pads.md`,
//! Kept seed options): each pad has an Ed25519 key pair derived from its bytes `32..64`, and a
//! mailbox can be addressed by a public key instead of by its `mbx-` address — the pad's own,
//! or a long-term key a seller keeps while its pads come and go ("a seller may use a single
//! public-private key pair on a permanent basis").
//!
//! ```text
//! pad key seed  = SHA-256("tally/pad-key/v1" 0x00 ‖ pad[32..64])          -- an Ed25519 seed
//! key address   = SHA-256("tally/pad-mailbox-key/v1" 0x00 ‖ public key)[0..16]
//! alias claim   = Ed25519(key, "tally/pad-alias/v1" 0x00 ‖ public key ‖ mailbox:16 ‖ at:i64 BE)
//! ```
//!
//! A `post` to a key is a `post` to its key address (no new wire format): the node keeps, per
//! key address, the mailbox it stands for — the pad's own at the sale, a long-term key's by
//! its latest claim, signed by the key over the mailbox and a time (a later claim moves it; an
//! older one is refused). What the key signs binds only where messages go: anyone may point a
//! key they hold at any mailbox, and the node, which holds every pad's twin, can derive every
//! pad's key (not a long-term key). No message is enciphered to a key (no X25519 here).

use tally_kernel::crypto::kdf::Sha256Stream;
use tally_kernel::crypto::{CryptoError, Signature, SigningKey, VerifyingKey};

use super::file::{FileError, PadBytes};
use super::ids::MailboxAddress;

/// Domain of the pad key's seed.
pub const KEY_DOMAIN: &[u8] = b"tally/pad-key/v1\0";
/// Domain of a key's mailbox address.
pub const KEY_MAILBOX_DOMAIN: &[u8] = b"tally/pad-mailbox-key/v1\0";
/// Domain of an alias claim's signature.
pub const ALIAS_DOMAIN: &[u8] = b"tally/pad-alias/v1\0";

/// The pad's key pair, from its bytes `32..64`.
pub fn pad_key(bytes: &PadBytes) -> Result<SigningKey, FileError> {
    let seed_bytes = bytes.read(32..64)?;
    let mut h = Sha256Stream::new();
    h.update(KEY_DOMAIN);
    h.update(&seed_bytes);
    let mut seed = zeroize::Zeroizing::new(h.finish());
    let key = SigningKey::from_seed(&seed);
    zeroize::Zeroize::zeroize(&mut *seed);
    Ok(key)
}

/// The mailbox address a public key stands for.
pub fn key_address(key: &VerifyingKey) -> MailboxAddress {
    let mut h = Sha256Stream::new();
    h.update(KEY_MAILBOX_DOMAIN);
    h.update(&key.to_bytes());
    let digest = h.finish();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    MailboxAddress(out)
}

/// A key's claim that its messages go to `mailbox`, made at `at` (Unix microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AliasClaim {
    /// The mailbox its messages go to.
    pub mailbox: MailboxAddress,
    /// When it was made: a later claim replaces an earlier one.
    pub at: i64,
}

impl AliasClaim {
    fn message(&self, key: &VerifyingKey) -> Vec<u8> {
        let mut m = Vec::with_capacity(32 + 16 + 8);
        m.extend_from_slice(&key.to_bytes());
        m.extend_from_slice(&self.mailbox.0);
        m.extend_from_slice(&self.at.to_be_bytes());
        m
    }

    /// Signed by `key`.
    pub fn sign(&self, key: &SigningKey) -> Signature {
        key.sign(ALIAS_DOMAIN, &self.message(&key.verifying_key()))
    }

    /// Whether `key` signed it.
    pub fn verify(&self, key: &VerifyingKey, signature: &Signature) -> Result<(), CryptoError> {
        key.verify(ALIAS_DOMAIN, &self.message(key), signature)
    }
}

/// A public key as printed and typed: `pk-` and 64 hex digits.
pub fn key_text(key: &VerifyingKey) -> String {
    format!("pk-{}", key.to_hex())
}

/// Parses `pk-` and 64 hex digits.
pub fn parse_key(text: &str) -> Result<VerifyingKey, CryptoError> {
    let hex = text
        .strip_prefix("pk-")
        .ok_or_else(|| CryptoError::Malformed("a public key is pk- and 64 hex digits".into()))?;
    VerifyingKey::from_hex(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pad() -> PadBytes {
        PadBytes::SessionKey {
            seed: zeroize::Zeroizing::new([7; 32]),
            size: 4096,
        }
    }

    #[test]
    fn claims_verify_only_under_their_key_and_for_what_they_say() {
        let key = pad_key(&pad()).expect("key");
        let vk = key.verifying_key();
        assert_eq!(
            pad_key(&pad()).expect("key").verifying_key(),
            vk,
            "derived, not drawn"
        );
        let claim = AliasClaim {
            mailbox: MailboxAddress([1; 16]),
            at: 1_700_000_000_000_000,
        };
        let sig = claim.sign(&key);
        claim.verify(&vk, &sig).expect("verifies");
        let moved = AliasClaim {
            mailbox: MailboxAddress([2; 16]),
            ..claim
        };
        assert!(moved.verify(&vk, &sig).is_err(), "another mailbox");
        let later = AliasClaim {
            at: claim.at + 1,
            ..claim
        };
        assert!(later.verify(&vk, &sig).is_err(), "another time");
        let other = SigningKey::from_seed(&[9; 32]).verifying_key();
        assert!(claim.verify(&other, &sig).is_err(), "another key");
        assert_eq!(parse_key(&key_text(&vk)).expect("parses"), vk);
        assert!(parse_key(&vk.to_hex()).is_err(), "the prefix is required");
        assert_ne!(key_address(&vk), key_address(&other));
    }
}
