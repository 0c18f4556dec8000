//! The names of pads and of what hangs off them (`docs/protocols/pads.md`, Roles and objects).
//!
//! ```text
//! pad id           pad-  32 lowercase hex (16 random bytes)
//! mailbox address  mbx-  32 hex: SHA-256("tally/pad-mailbox/v1" 0x00 ‖ pad[0..32])[0..16]
//! PIN account      pa-   32 hex
//! request          req-  32 hex  (a forward to a provider)
//! message          msg-  32 hex  (a message in a mailbox)
//! voucher code     25 Crockford base32 symbols (125 random bits) in five groups, and a
//!                  check symbol: the number mod 37 (Crockford's check alphabet)
//! ```
//!
//! Parsing is strict for ids (one spelling each, so an id can key a table) and forgiving for
//! voucher codes, which people type: case, `I`/`L` for `1`, `O` for `0`, spaces and dashes are
//! taken, and the check symbol catches one wrong or two swapped symbols.
//!
//! Rejected: the pad id as the mailbox address (a correspondent who has the address could pick
//! the pad's frames out of the traffic); UUIDs (nothing to gain from their version bits).

use serde::{Deserialize, Serialize};
use tally_kernel::crypto::kdf::Sha256Stream;

/// Why a text is not a pad-related id or voucher code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not the prefix followed by 32 lowercase hex digits.
    #[error("expected `{0}` and 32 lowercase hex digits")]
    Hex(&'static str),
    /// Not 26 symbols of Crockford's base32 (25 and a check symbol).
    #[error("a voucher code is 25 symbols of 0-9 and A-Z (no U) and a check symbol")]
    VoucherShape,
    /// The check symbol does not match: a symbol mistyped or two swapped.
    #[error("the voucher code's check symbol does not match: a symbol is mistyped")]
    VoucherCheck,
}

macro_rules! hex_id {
    ($(#[$doc:meta])* $ty:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $ty(pub [u8; 16]);

        impl $ty {
            /// The text before the hex digits.
            pub const PREFIX: &'static str = $prefix;

            /// The 16 bytes.
            pub fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut out = [0u8; 32];
                hex::encode_to_slice(self.0, &mut out).map_err(|_| std::fmt::Error)?;
                f.write_str($prefix)?;
                f.write_str(std::str::from_utf8(&out).map_err(|_| std::fmt::Error)?)
            }
        }

        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Display::fmt(self, f)
            }
        }

        impl std::str::FromStr for $ty {
            type Err = IdError;
            fn from_str(s: &str) -> Result<$ty, IdError> {
                let digits = s.strip_prefix($prefix).ok_or(IdError::Hex($prefix))?;
                let lower = digits
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if digits.len() != 32 || !lower {
                    return Err(IdError::Hex($prefix));
                }
                let mut out = [0u8; 16];
                hex::decode_to_slice(digits, &mut out).map_err(|_| IdError::Hex($prefix))?;
                Ok($ty(out))
            }
        }

        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_id!(
    /// A pad: 16 random bytes, never printed on retail media (the serial is).
    PadId,
    "pad-"
);
hex_id!(
    /// Where a pad's holder collects messages; derived from the pad's first 32 bytes.
    MailboxAddress,
    "mbx-"
);
hex_id!(
    /// An anonymous PIN-controlled account of pads.
    AccountId,
    "pa-"
);
hex_id!(
    /// A request forwarded to a provider; its reply and any escrow name it.
    RequestId,
    "req-"
);
hex_id!(
    /// A message in a mailbox.
    MessageId,
    "msg-"
);

/// Domain of the mailbox address.
pub const MAILBOX_DOMAIN: &[u8] = b"tally/pad-mailbox/v1\0";

impl MailboxAddress {
    /// The address of the pad whose bytes `0..32` are `seed`.
    pub fn of(seed: &[u8; 32]) -> MailboxAddress {
        let mut h = Sha256Stream::new();
        h.update(MAILBOX_DOMAIN);
        h.update(seed);
        let digest = h.finish();
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        MailboxAddress(out)
    }
}

/// Where a voucher card is in its life: printed (`blank`) → sold at a till → redeemed for a
/// pad; `blank` or `sold` → `cancelled` (stolen stock; a sold card is refunded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoucherState {
    /// Printed, not sold: it cannot be redeemed.
    Blank,
    /// Sold at a till: redeemable once.
    Sold,
    /// Redeemed for a pad.
    Redeemed,
    /// Cancelled: it never sells or redeems.
    Cancelled,
}

stored_names!(VoucherState {
    Blank => "blank",
    Sold => "sold",
    Redeemed => "redeemed",
    Cancelled => "cancelled",
});

/// Crockford's base32 symbols, value order.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Crockford's check symbols for the values 32 to 36.
const CHECK_EXTRA: &[u8; 5] = b"*~$=U";

/// A voucher's secret code: 125 random bits, printed once under the scratch layer. The node
/// stores only a keyed hash of it.
#[derive(Clone, PartialEq, Eq)]
pub struct VoucherCode(u128);

impl VoucherCode {
    /// Bits in a code.
    pub const BITS: u32 = 125;

    /// The code of 16 random bytes (the top three bits are dropped).
    pub fn from_random(bytes: [u8; 16]) -> VoucherCode {
        VoucherCode(u128::from_be_bytes(bytes) >> 3)
    }

    /// The canonical text, `XXXXX-XXXXX-XXXXX-XXXXX-XXXXX-C`: what the node hashes and the
    /// card shows.
    pub fn text(&self) -> String {
        let mut out = String::with_capacity(31);
        for i in 0..25 {
            if i > 0 && i % 5 == 0 {
                out.push('-');
            }
            let shift = 5 * (24 - i);
            out.push(CROCKFORD[((self.0 >> shift) & 31) as usize] as char);
        }
        out.push('-');
        out.push(check_symbol(self.0) as char);
        out
    }

    /// A typed code: case, spaces and dashes ignored, `I`/`L` read as `1` and `O` as `0`.
    pub fn parse(typed: &str) -> Result<VoucherCode, IdError> {
        let symbols: Vec<u8> = typed
            .bytes()
            .filter(|b| !matches!(b, b'-' | b' '))
            .map(|b| b.to_ascii_uppercase())
            .collect();
        if symbols.len() != 26 {
            return Err(IdError::VoucherShape);
        }
        let mut value: u128 = 0;
        for &b in &symbols[..25] {
            let b = match b {
                b'I' | b'L' => b'1',
                b'O' => b'0',
                other => other,
            };
            let v = CROCKFORD
                .iter()
                .position(|c| *c == b)
                .ok_or(IdError::VoucherShape)?;
            value = (value << 5) | v as u128;
        }
        let check = symbols[25];
        let known = CROCKFORD.contains(&check) || CHECK_EXTRA.contains(&check);
        if !known {
            return Err(IdError::VoucherShape);
        }
        if check != check_symbol(value) {
            return Err(IdError::VoucherCheck);
        }
        Ok(VoucherCode(value))
    }
}

impl std::fmt::Debug for VoucherCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VoucherCode(…)")
    }
}

impl Drop for VoucherCode {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

fn check_symbol(value: u128) -> u8 {
    let v = (value % 37) as usize;
    if v < 32 {
        CROCKFORD[v]
    } else {
        CHECK_EXTRA[v - 32]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_one_spelling() {
        let id: PadId = "pad-000102030405060708090a0b0c0d0e0f".parse().expect("id");
        assert_eq!(id.0[15], 15);
        assert_eq!(id.to_string(), "pad-000102030405060708090a0b0c0d0e0f");
        for bad in [
            "pad-000102030405060708090A0B0C0D0E0F",
            "pad-000102030405060708090a0b0c0d0e0",
            "pad-000102030405060708090a0b0c0d0e0f0",
            "mbx-000102030405060708090a0b0c0d0e0f",
            "000102030405060708090a0b0c0d0e0f",
            "pad-+00102030405060708090a0b0c0d0e0f",
        ] {
            assert_eq!(bad.parse::<PadId>(), Err(IdError::Hex("pad-")), "{bad}");
        }
        let json = serde_json::to_string(&id).expect("json");
        assert_eq!(json, "\"pad-000102030405060708090a0b0c0d0e0f\"");
        assert_eq!(serde_json::from_str::<PadId>(&json).expect("back"), id);
        assert!(serde_json::from_str::<AccountId>(&json).is_err());
    }

    #[test]
    fn voucher_codes_survive_typing_and_catch_typos() {
        let code = VoucherCode::from_random([0xA5; 16]);
        let text = code.text();
        assert_eq!(text.len(), 31);
        assert_eq!(VoucherCode::parse(&text).expect("own text"), code);
        let typed = text.to_lowercase().replace('-', " ").replace('1', "l");
        assert_eq!(VoucherCode::parse(&typed).expect("typed"), code);
        // Every single-symbol change of the 25 is caught (37 is prime and above 32).
        let symbols: Vec<u8> = text.bytes().filter(|b| *b != b'-').collect();
        for i in 0..25 {
            for &c in CROCKFORD {
                if c == symbols[i] {
                    continue;
                }
                let mut changed = symbols.clone();
                changed[i] = c;
                let changed = String::from_utf8(changed).expect("ascii");
                assert_eq!(VoucherCode::parse(&changed), Err(IdError::VoucherCheck));
            }
        }
        assert_eq!(VoucherCode::parse("ABC"), Err(IdError::VoucherShape));
        let mut u = symbols.clone();
        u[3] = b'U';
        assert_eq!(
            VoucherCode::parse(std::str::from_utf8(&u).expect("ascii")),
            Err(IdError::VoucherShape)
        );
    }
}
