//! The records of a pad (SPEC P8; `docs/protocols/pads.md`, Records): holder and node keep the
//! same chain, one line per up frame taken or burned, so either can show the other where they
//! part.
//!
//! ```text
//! line     = up_offset:u64 ‖ up_len:u32 ‖ SHA-256(up frame) ‖ outcome:u8
//!            ‖ down_offset:u64 ‖ down_len:u32 ‖ debit_minor:i64              -- 65 bytes
//! record_0 = SHA-256("tally/pad-record/v1" 0x00 ‖ pad id)
//! record_k = SHA-256("tally/pad-record/v1" 0x00 ‖ record_{k−1} ‖ line_k)
//! ```
//!
//! A burned frame has no reply: its `down_offset` and `down_len` are 0.

use serde::{Deserialize, Serialize};
use tally_kernel::crypto::kdf::Sha256Stream;

use super::ids::PadId;
use crate::session::purchase::hex32;

/// Domain of the chain's hashes.
pub const DOMAIN: &[u8] = b"tally/pad-record/v1\0";
/// Bytes of a line.
pub const LINE_LEN: usize = 65;

/// What became of an up frame that was authentic and in its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acted on and answered.
    Taken,
    /// Burned: its plaintext did not decode.
    MalformedRequest,
    /// Burned: its reply would not fit the bytes left.
    PadBytesExhausted,
    /// Burned: the value does not cover its debit.
    PadValueExhausted,
    /// Burned: the provider is not on the pad's allow-list (or not registered).
    ProviderNotAllowed,
    /// Burned: a `join` with a wrong PIN.
    PinWrong,
    /// Burned: a `post` to an address no pad has.
    UnknownMailbox,
    /// Burned: a `release` or `dispute` of a request this pad has no escrow for.
    UnknownRequest,
}

stored_names!(Outcome {
    Taken => "taken",
    MalformedRequest => "malformed_request",
    PadBytesExhausted => "pad_bytes_exhausted",
    PadValueExhausted => "pad_value_exhausted",
    ProviderNotAllowed => "provider_not_allowed",
    PinWrong => "pin_wrong",
    UnknownMailbox => "unknown_mailbox",
    UnknownRequest => "unknown_request",
});

impl Outcome {
    /// The byte a line holds.
    pub fn byte(self) -> u8 {
        match self {
            Outcome::Taken => 0,
            Outcome::MalformedRequest => 1,
            Outcome::PadBytesExhausted => 2,
            Outcome::PadValueExhausted => 3,
            Outcome::ProviderNotAllowed => 4,
            Outcome::PinWrong => 5,
            Outcome::UnknownMailbox => 6,
            Outcome::UnknownRequest => 7,
        }
    }

    /// From a line's byte.
    pub fn from_byte(b: u8) -> Option<Outcome> {
        Some(match b {
            0 => Outcome::Taken,
            1 => Outcome::MalformedRequest,
            2 => Outcome::PadBytesExhausted,
            3 => Outcome::PadValueExhausted,
            4 => Outcome::ProviderNotAllowed,
            5 => Outcome::PinWrong,
            6 => Outcome::UnknownMailbox,
            7 => Outcome::UnknownRequest,
            _ => return None,
        })
    }
}

/// One line of the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// The up frame's offset.
    pub up_offset: u64,
    /// Its ciphertext's length.
    pub up_len: u32,
    /// SHA-256 of the whole up frame.
    #[serde(with = "hex32")]
    pub up_digest: [u8; 32],
    /// What became of it.
    pub outcome: Outcome,
    /// The reply's offset (0 when burned).
    pub down_offset: u64,
    /// The reply's ciphertext length (0 when burned).
    pub down_len: u32,
    /// Minor units debited from the pad's value for it.
    pub debit_minor: i64,
}

impl Line {
    /// The 65 bytes.
    pub fn to_bytes(&self) -> [u8; LINE_LEN] {
        let mut out = [0u8; LINE_LEN];
        out[0..8].copy_from_slice(&self.up_offset.to_be_bytes());
        out[8..12].copy_from_slice(&self.up_len.to_be_bytes());
        out[12..44].copy_from_slice(&self.up_digest);
        out[44] = self.outcome.byte();
        out[45..53].copy_from_slice(&self.down_offset.to_be_bytes());
        out[53..57].copy_from_slice(&self.down_len.to_be_bytes());
        out[57..65].copy_from_slice(&self.debit_minor.to_be_bytes());
        out
    }

    /// From 65 bytes; `None` for an unknown outcome.
    pub fn from_bytes(b: &[u8; LINE_LEN]) -> Option<Line> {
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8"));
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().expect("4"));
        let mut up_digest = [0u8; 32];
        up_digest.copy_from_slice(&b[12..44]);
        Some(Line {
            up_offset: u64_at(0),
            up_len: u32_at(8),
            up_digest,
            outcome: Outcome::from_byte(b[44])?,
            down_offset: u64_at(45),
            down_len: u32_at(53),
            debit_minor: i64::from_be_bytes(b[57..65].try_into().expect("8")),
        })
    }
}

/// The chain's head: how many lines and the hash after the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    /// Lines so far.
    pub count: u64,
    /// `record_count`.
    #[serde(with = "hex32")]
    pub hash: [u8; 32],
}

impl Chain {
    /// The empty chain of `pad`.
    pub fn new(pad: PadId) -> Chain {
        let mut h = Sha256Stream::new();
        h.update(DOMAIN);
        h.update(pad.as_bytes());
        Chain {
            count: 0,
            hash: h.finish(),
        }
    }

    /// The chain with `line` appended.
    pub fn push(self, line: &Line) -> Chain {
        let mut h = Sha256Stream::new();
        h.update(DOMAIN);
        h.update(&self.hash);
        h.update(&line.to_bytes());
        Chain {
            count: self.count + 1,
            hash: h.finish(),
        }
    }
}
