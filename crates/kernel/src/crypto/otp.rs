//! Short numeric one-time codes: HOTP (RFC 4226), TOTP (RFC 6238) and message-bound codes.
//!
//! All codes come from one step, RFC 4226 §5.3 dynamic truncation of an HMAC: take the low
//! nibble of the last MAC byte as an offset, read 31 bits big-endian from there, reduce modulo
//! 10^digits and zero-pad. [`code_hmac_sha256`] applies the same truncation to HMAC-SHA256 of an
//! arbitrary message, which lets a later protocol bind a code to a session and an amount (the
//! message) rather than to a counter.
//!
//! Key decisions: `digits` is 6..=10 everywhere (fewer than 6 is guessable within common
//! attempt limits; more than 10 exceeds the 31 bits the truncation yields). Time comes in as a
//! [`Timestamp`] argument; nothing here reads the clock. Codes are compared with
//! [`codes_match`], in constant time. SHA-1 is used only where RFC 4226/6238 require it.
//!
//! Rejected: the `totp-rs` crate (TOTP only, no message-bound codes, and the RFC algorithms are
//! a dozen lines over `hmac`); OCRA (RFC 6287) until a protocol actually needs it.

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;

use super::{CryptoError, Result};
use crate::time::Timestamp;

/// Fewest digits a code may have.
pub const DIGITS_MIN: u32 = 6;
/// Most digits a code may have.
pub const DIGITS_MAX: u32 = 10;

/// The HMAC hash for HOTP/TOTP (RFC 6238 allows all three).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OtpHash {
    /// HMAC-SHA-1: RFC 4226 HOTP and the TOTP default of every authenticator app.
    Sha1,
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-512.
    Sha512,
}

fn check_digits(digits: u32) -> Result<()> {
    if (DIGITS_MIN..=DIGITS_MAX).contains(&digits) {
        Ok(())
    } else {
        Err(CryptoError::ApiMisuse("one-time codes have 6 to 10 digits"))
    }
}

/// RFC 4226 §5.3 dynamic truncation of `mac` (at least 20 bytes), reduced modulo 10^digits.
pub fn dynamic_truncate(mac: &[u8], digits: u32) -> Result<u32> {
    check_digits(digits)?;
    let (last, _) = mac
        .split_last()
        .filter(|_| mac.len() >= 20)
        .ok_or(CryptoError::ApiMisuse(
            "dynamic truncation needs a MAC of at least 20 bytes",
        ))?;
    let offset = usize::from(last & 0x0f);
    let window: [u8; 4] = mac[offset..offset + 4]
        .try_into()
        .map_err(|_| CryptoError::ApiMisuse("truncation window out of range"))?;
    let bin_code = u32::from_be_bytes(window) & 0x7fff_ffff;
    let modulus = 10u64.pow(digits);
    // bin_code < 2^31 and modulus >= 10^6, so the remainder fits in u32.
    u32::try_from(u64::from(bin_code) % modulus)
        .map_err(|_| CryptoError::ApiMisuse("code does not fit in 32 bits"))
}

/// `value` as exactly `digits` decimal digits, zero-padded on the left.
pub fn format_code(value: u32, digits: u32) -> Result<String> {
    check_digits(digits)?;
    if u64::from(value) >= 10u64.pow(digits) {
        return Err(CryptoError::ApiMisuse(
            "code value has more digits than requested",
        ));
    }
    let width = usize::try_from(digits).map_err(|_| CryptoError::ApiMisuse("digits"))?;
    Ok(format!("{value:0width$}"))
}

fn hmac_bytes<M: Mac + KeyInit>(key: &[u8], msg: &[u8]) -> Vec<u8> {
    // Invariant: HMAC accepts keys of every length, so `new_from_slice` cannot fail.
    let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

fn hmac_with(hash: OtpHash, key: &[u8], msg: &[u8]) -> Vec<u8> {
    match hash {
        OtpHash::Sha1 => hmac_bytes::<Hmac<Sha1>>(key, msg),
        OtpHash::Sha256 => hmac_bytes::<Hmac<Sha256>>(key, msg),
        OtpHash::Sha512 => hmac_bytes::<Hmac<Sha512>>(key, msg),
    }
}

/// HOTP (RFC 4226) with the given HMAC hash: truncate(HMAC(secret, counter as 8 bytes BE)).
pub fn hotp(secret: &[u8], hash: OtpHash, counter: u64, digits: u32) -> Result<String> {
    let mac = hmac_with(hash, secret, &counter.to_be_bytes());
    format_code(dynamic_truncate(&mac, digits)?, digits)
}

/// HOTP with HMAC-SHA-1, exactly RFC 4226.
pub fn hotp_sha1(secret: &[u8], counter: u64, digits: u32) -> Result<String> {
    hotp(secret, OtpHash::Sha1, counter, digits)
}

/// The RFC 6238 time-step counter `floor(now_s / step_s)` with T0 = 0.
pub fn totp_counter(now: Timestamp, step_s: u64) -> Result<u64> {
    if step_s == 0 {
        return Err(CryptoError::ApiMisuse(
            "TOTP step must be at least one second",
        ));
    }
    let now_s = u64::try_from(now.as_micros().div_euclid(1_000_000))
        .map_err(|_| CryptoError::ApiMisuse("TOTP time before 1970"))?;
    Ok(now_s / step_s)
}

/// TOTP (RFC 6238) at `now` with time step `step_s` (usually 30) and T0 = 0.
pub fn totp(
    secret: &[u8],
    hash: OtpHash,
    now: Timestamp,
    step_s: u64,
    digits: u32,
) -> Result<String> {
    hotp(secret, hash, totp_counter(now, step_s)?, digits)
}

/// A code bound to `message`: dynamic truncation of HMAC-SHA256(key, message). The caller
/// defines the message encoding (e.g. canonical JSON of session id, amount and expiry).
pub fn code_hmac_sha256(key: &[u8], message: &[u8], digits: u32) -> Result<String> {
    let mac = super::kdf::hmac_sha256(key, message);
    format_code(dynamic_truncate(&mac, digits)?, digits)
}

/// Constant-time comparison of an expected and a submitted code (the length is not secret).
pub fn codes_match(expected: &str, submitted: &str) -> bool {
    expected.len() == submitted.len() && bool::from(expected.as_bytes().ct_eq(submitted.as_bytes()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly by design.
mod tests {
    use super::*;

    const SECRET_20: &[u8] = b"12345678901234567890";
    const SECRET_32: &[u8] = b"12345678901234567890123456789012";
    const SECRET_64: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

    /// RFC 4226 Appendix D, counters 0..=9.
    #[test]
    fn rfc4226_appendix_d() {
        let expected = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        for (counter, want) in expected.iter().enumerate() {
            assert_eq!(
                hotp_sha1(SECRET_20, counter as u64, 6).unwrap(),
                *want,
                "counter {counter}"
            );
        }
    }

    /// RFC 4226 Appendix D also lists the intermediate HMAC and truncated values for count 0.
    #[test]
    fn rfc4226_truncation_intermediate() {
        let mac = hex::decode("cc93cf18508d94934c64b65d8ba7667fb7cde4b0").unwrap();
        // Offset = 0 (last nibble), DBC1 = 0x4c93cf18 → 1284755224.
        assert_eq!(dynamic_truncate(&mac, 10).unwrap(), 1_284_755_224);
        assert_eq!(dynamic_truncate(&mac, 6).unwrap(), 755_224);
    }

    /// RFC 6238 Appendix B: every listed time, all three hashes, 8 digits.
    #[test]
    fn rfc6238_appendix_b() {
        let table: [(i64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1_111_111_109, "07081804", "68084774", "25091201"),
            (1_111_111_111, "14050471", "67062674", "99943326"),
            (1_234_567_890, "89005924", "91819424", "93441116"),
            (2_000_000_000, "69279037", "90698825", "38618901"),
            (20_000_000_000, "65353130", "77737706", "47863826"),
        ];
        for (t, sha1, sha256, sha512) in table {
            let now = Timestamp(t * 1_000_000);
            assert_eq!(
                totp(SECRET_20, OtpHash::Sha1, now, 30, 8).unwrap(),
                sha1,
                "t={t}"
            );
            assert_eq!(
                totp(SECRET_32, OtpHash::Sha256, now, 30, 8).unwrap(),
                sha256,
                "t={t}"
            );
            assert_eq!(
                totp(SECRET_64, OtpHash::Sha512, now, 30, 8).unwrap(),
                sha512,
                "t={t}"
            );
        }
    }

    #[test]
    fn totp_counter_floors_and_rejects_bad_input() {
        assert_eq!(totp_counter(Timestamp(59_999_999), 30).unwrap(), 1);
        assert_eq!(totp_counter(Timestamp(60_000_000), 30).unwrap(), 2);
        assert_eq!(totp_counter(Timestamp(0), 30).unwrap(), 0);
        assert!(matches!(
            totp_counter(Timestamp(-1), 30),
            Err(CryptoError::ApiMisuse(_))
        ));
        assert!(matches!(
            totp_counter(Timestamp(0), 0),
            Err(CryptoError::ApiMisuse(_))
        ));
    }

    #[test]
    fn digits_outside_6_to_10_are_rejected() {
        let mac = [0u8; 20];
        for bad in [0, 5, 11, 32] {
            assert!(matches!(
                dynamic_truncate(&mac, bad),
                Err(CryptoError::ApiMisuse(_))
            ));
            assert!(matches!(
                format_code(1, bad),
                Err(CryptoError::ApiMisuse(_))
            ));
            assert!(matches!(
                hotp_sha1(SECRET_20, 0, bad),
                Err(CryptoError::ApiMisuse(_))
            ));
        }
        assert!(matches!(
            dynamic_truncate(&[0u8; 19], 6),
            Err(CryptoError::ApiMisuse(_))
        ));
    }

    #[test]
    fn codes_are_zero_padded() {
        assert_eq!(format_code(42, 6).unwrap(), "000042");
        assert_eq!(format_code(0, 10).unwrap(), "0000000000");
        assert_eq!(format_code(999_999, 6).unwrap(), "999999");
        assert!(format_code(1_000_000, 6).is_err());
        // A MAC whose window reads zero gives an all-zero code, not a short one.
        let zero_window = dynamic_truncate(&[0u8; 20], 6).unwrap();
        assert_eq!(format_code(zero_window, 6).unwrap(), "000000");
    }

    #[test]
    fn message_bound_codes_depend_on_key_and_message() {
        let code = code_hmac_sha256(b"key", b"session=1;amount=500", 8).unwrap();
        assert_eq!(code.len(), 8);
        // Same as truncating our HMAC-SHA256 by hand.
        let mac = super::super::kdf::hmac_sha256(b"key", b"session=1;amount=500");
        assert_eq!(
            code,
            format_code(dynamic_truncate(&mac, 8).unwrap(), 8).unwrap()
        );
        assert_eq!(
            code_hmac_sha256(b"key", b"session=1;amount=500", 8).unwrap(),
            code
        );
        assert_ne!(
            code_hmac_sha256(b"key", b"session=1;amount=501", 8).unwrap(),
            code
        );
        assert_ne!(
            code_hmac_sha256(b"kez", b"session=1;amount=500", 8).unwrap(),
            code
        );
    }

    #[test]
    fn code_comparison() {
        assert!(codes_match("123456", "123456"));
        assert!(!codes_match("123456", "123457"));
        assert!(!codes_match("123456", "12345"));
        assert!(!codes_match("123456", "1234567"));
    }
}
