//! Small messages sealed with XChaCha20-Poly1305 (a wrapped key, a token): one call, random
//! 24-byte nonce, associated data naming the purpose.
//!
//! Layout: `nonce[24] || ciphertext || tag[16]`. Random nonces are safe at any volume with
//! XChaCha's 192-bit nonce. For files use [`super::stream`].

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use rand::Rng as _;

use super::{CryptoError, Result};
use crate::secret::Secret;

/// Nonce length.
pub const NONCE_LEN: usize = 24;
/// Tag length.
pub const TAG_LEN: usize = 16;
/// Largest message (this is for keys and tokens, not files).
pub const MESSAGE_LEN_MAX: usize = 64 * 1024;

/// Seals `plaintext` under `key`, binding `aad`.
pub fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    if plaintext.len() > MESSAGE_LEN_MAX {
        return Err(CryptoError::ApiMisuse(
            "seal is for small messages; use stream",
        ));
    }
    let mut nonce = [0_u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    seal_with_nonce(key, &nonce, aad, plaintext)
}

/// [`seal`] with a given nonce: for test vectors only (a repeated nonce breaks the AEAD).
pub fn seal_with_nonce(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let sealed = cipher
        .encrypt(
            &XNonce::from(*nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| CryptoError::ApiMisuse("message too long for the AEAD"))?;
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens what [`seal`] made; a wrong key, wrong `aad` or any changed byte is
/// [`CryptoError::Tampered`].
pub fn open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Result<Secret<Vec<u8>>> {
    if sealed.len() < NONCE_LEN + TAG_LEN || sealed.len() > NONCE_LEN + TAG_LEN + MESSAGE_LEN_MAX {
        return Err(CryptoError::Malformed(
            "sealed message has a wrong length".into(),
        ));
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce
        .try_into()
        .map_err(|_| CryptoError::Malformed("nonce".into()))?;
    let cipher = XChaCha20Poly1305::new(key.into());
    cipher
        .decrypt(&XNonce::from(nonce), Payload { msg: body, aad })
        .map(Secret::new)
        .map_err(|_| CryptoError::Tampered)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_change_is_refused() {
        let key = [7_u8; 32];
        let sealed = seal(&key, b"purpose", b"secret key bytes").unwrap();
        assert_eq!(
            open(&key, b"purpose", &sealed).unwrap().expose(),
            b"secret key bytes"
        );
        assert!(matches!(
            open(&[8; 32], b"purpose", &sealed),
            Err(CryptoError::Tampered)
        ));
        assert!(matches!(
            open(&key, b"other", &sealed),
            Err(CryptoError::Tampered)
        ));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(
                matches!(open(&key, b"purpose", &bad), Err(CryptoError::Tampered)),
                "byte {i}"
            );
        }
        assert!(open(&key, b"purpose", &sealed[..20]).is_err());
        assert_ne!(
            seal(&key, b"p", b"m").unwrap(),
            seal(&key, b"p", b"m").unwrap(),
            "random nonces"
        );
    }
}
