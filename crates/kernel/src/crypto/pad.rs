//! The one-time pad and its one-time authenticator, for issue [8]'s pads
//! (`docs/protocols/pads.md`, step 1; the frame that uses them is not built yet).
//!
//! * [`xor`]: a message enciphered (or deciphered) with pad bytes of its own length. With
//!   bytes that are truly random and never used again, that is Vernam's one-time pad: the
//!   ciphertext says nothing of the message but its length.
//! * [`one_time_tag`] / [`one_time_verify`]: Poly1305 (RFC 8439 §2.5, the `poly1305` crate)
//!   keyed by 32 further pad bytes, used for one message only. Poly1305 with a fresh
//!   uniformly random key is an ε-almost-Δ-universal hash with a one-time pad on top, so a
//!   forgery succeeds with probability at most `8⌈L/16⌉ / 2^106` for a message of `L` bytes
//!   (Bernstein, "The Poly1305-AES message-authentication code", 2005), whatever the
//!   forger's computing power: no computational assumption.
//!
//! Nothing here keeps state: which pad bytes are fresh is the pad's own bookkeeping, kept in
//! the database so that no byte is handed out twice. A key used for two messages gives its
//! security up; that is why the key is taken by value and the functions name it one-time.
//!
//! Rejected: a hand-written Poly1305 (never a primitive of our own); an HMAC keyed by pad
//! bytes (its security rests on SHA-256, a computational assumption the seed's pads avoid).

use poly1305::Poly1305;
use poly1305::universal_hash::KeyInit;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{CryptoError, Result};

/// Pad bytes a one-time key takes.
pub const ONE_TIME_KEY_LEN: usize = 32;
/// Bytes of a one-time tag.
pub const TAG_LEN: usize = 16;

/// `data` XOR `pad`, in place: enciphers a message or deciphers a ciphertext. The pad slice
/// must be exactly as long as the data (`ApiMisuse` otherwise, and nothing is changed).
pub fn xor(data: &mut [u8], pad: &[u8]) -> Result<()> {
    if data.len() != pad.len() {
        return Err(CryptoError::ApiMisuse(
            "the pad bytes must be as many as the message's",
        ));
    }
    for (d, p) in data.iter_mut().zip(pad) {
        *d ^= p;
    }
    Ok(())
}

/// The Poly1305 tag of `message` under a one-time `key` (32 pad bytes never used before, and
/// never used again). The key is wiped when the tag is made.
pub fn one_time_tag(key: Zeroizing<[u8; ONE_TIME_KEY_LEN]>, message: &[u8]) -> [u8; TAG_LEN] {
    let mac = Poly1305::new((&*key).into());
    mac.compute_unpadded(message).into()
}

/// Whether `tag` is the one-time tag of `message` under `key`, compared in constant time. A
/// tag of another length is refused.
pub fn one_time_verify(key: Zeroizing<[u8; ONE_TIME_KEY_LEN]>, message: &[u8], tag: &[u8]) -> bool {
    if tag.len() != TAG_LEN {
        return false;
    }
    let expected = one_time_tag(key, message);
    bool::from(expected.ct_eq(tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(hex_key: &str) -> Zeroizing<[u8; 32]> {
        let mut k = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex_key, &mut *k).expect("hex");
        k
    }

    const RFC8439_KEY: &str = "85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b";

    /// RFC 8439 §2.5.2: the tag of "Cryptographic Forum Research Group".
    #[test]
    fn rfc8439_test_vector() {
        let message = b"Cryptographic Forum Research Group";
        let tag = one_time_tag(key(RFC8439_KEY), message);
        assert_eq!(hex::encode(tag), "a8061dc1305136c6c22b8baf0c0127a9");
        assert!(one_time_verify(key(RFC8439_KEY), message, &tag));
        // Another message, a flipped bit, a short tag, another key: refused.
        assert!(!one_time_verify(
            key(RFC8439_KEY),
            b"Cryptographic Forum Research Groups",
            &tag
        ));
        let mut flipped = tag;
        flipped[0] ^= 1;
        assert!(!one_time_verify(key(RFC8439_KEY), message, &flipped));
        assert!(!one_time_verify(key(RFC8439_KEY), message, &tag[..15]));
        let mut other = key(RFC8439_KEY);
        other[31] ^= 1;
        assert!(!one_time_verify(other, message, &tag));
    }

    /// XOR with the same pad bytes twice gives the message back; the ciphertext is the
    /// message XOR the pad; a pad of another length is refused and changes nothing.
    #[test]
    fn xor_enciphers_and_deciphers() {
        let message = b"pay 1.00 EUR to shop".to_vec();
        let pad: Vec<u8> = (0..message.len() as u8)
            .map(|i| i.wrapping_mul(37) ^ 0xA5)
            .collect();
        let mut text = message.clone();
        xor(&mut text, &pad).expect("same length");
        assert_eq!(text[0], message[0] ^ pad[0]);
        assert_ne!(text, message);
        xor(&mut text, &pad).expect("same length");
        assert_eq!(text, message);
        let mut short = message.clone();
        assert!(matches!(
            xor(&mut short, &pad[1..]),
            Err(CryptoError::ApiMisuse(_))
        ));
        assert_eq!(short, message);
    }
}
