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
//! * [`keystream`]: the session-key alternative of SPEC P1: pad byte `i` is byte `i` of the
//!   ChaCha20 keystream (RFC 8439, the `chacha20` crate) under a 32-byte seed, with a nonce of
//!   12 zero bytes. Computationally secure only; each seed serves one pad.
//!
//! Nothing here keeps state: which pad bytes are fresh is the pad's own bookkeeping, kept in
//! the database so that no byte is handed out twice. A key used for two messages gives its
//! security up; that is why the key is taken by value and the functions name it one-time.
//!
//! Rejected: a hand-written Poly1305 (never a primitive of our own); an HMAC keyed by pad
//! bytes (its security rests on SHA-256, a computational assumption the seed's pads avoid).

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
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

/// The most keystream bytes one seed gives here: ChaCha20's 32-bit block counter times 64,
/// less the last block (the `chacha20` crate will not seek into it).
pub const KEYSTREAM_LEN_MAX: u64 = ((1 << 32) - 1) * 64;

/// Fills `out` with keystream bytes `offset .. offset + out.len()` of the pad whose seed is
/// `seed` (ChaCha20 of RFC 8439, nonce 12 zero bytes, block counter `offset / 64`). A range past
/// [`KEYSTREAM_LEN_MAX`] is refused (`ApiMisuse`) and `out` is left as it was.
pub fn keystream(seed: &Zeroizing<[u8; 32]>, offset: u64, out: &mut [u8]) -> Result<()> {
    let end = offset
        .checked_add(out.len() as u64)
        .filter(|end| *end <= KEYSTREAM_LEN_MAX)
        .ok_or(CryptoError::ApiMisuse(
            "a keystream range past 256 GiB less a block",
        ))?;
    debug_assert!(end >= offset);
    let mut cipher = ChaCha20::new((&**seed).into(), (&[0u8; 12]).into());
    let past = |_| CryptoError::ApiMisuse("a keystream range past the counter");
    cipher.try_seek(offset).map_err(past)?;
    cipher.check_remaining(out.len()).map_err(past)?;
    out.fill(0);
    cipher.apply_keystream(out);
    Ok(())
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

    /// RFC 8439 §2.4.2 enciphers its "sunscreen" text with block counter 1 and a nonce that is
    /// not ours; §A.1 test vector #1 is the keystream of the zero key and zero nonce, block 0,
    /// and test vector #2 the same key's block 1: both are checked, and a range read from the
    /// middle equals the same bytes read from the start.
    #[test]
    fn keystream_is_chacha20_of_rfc8439() {
        let zero = Zeroizing::new([0u8; 32]);
        let mut block = [0u8; 128];
        keystream(&zero, 0, &mut block).expect("in range");
        assert_eq!(
            hex::encode(&block[..64]),
            "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7\
             da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"
        );
        assert_eq!(
            hex::encode(&block[64..]),
            "9f07e7be5551387a98ba977c732d080dcb0f29a048e3656912c6533e32ee7aed\
             29b721769ce64e43d57133b074d839d531ed1f28510afb45ace10a1f4b794d6f"
        );
        let mut middle = [0u8; 37];
        keystream(&zero, 50, &mut middle).expect("in range");
        assert_eq!(middle, block[50..87]);
        let mut past = [7u8; 2];
        assert!(keystream(&zero, KEYSTREAM_LEN_MAX - 1, &mut past).is_err());
        assert_eq!(past, [7, 7]);
        let mut last = [0u8; 1];
        keystream(&zero, KEYSTREAM_LEN_MAX - 1, &mut last).expect("the last byte");
    }
}
