//! The frame (SPEC P3; `docs/protocols/pads.md`, The frame): one message between a pad's
//! holder and the node, enciphered with pad bytes and authenticated with more of them.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "TPAD"
//! 4       1     version = 0x01
//! 5       1     direction: 0x01 holder → node ("up"), 0x02 node → holder ("down")
//! 6       16    pad id
//! 22      8     offset, u64 big-endian: the first pad byte of the frame's range
//! 30      4     n, u32 big-endian: ciphertext length, 1 ..= 65 536
//! 34      n     ciphertext = plaintext ⊕ pad[offset .. offset + n)
//! 34+n    16    tag = Poly1305(key = pad[offset + n .. offset + n + 32), frame[0 .. 34 + n))
//! ```
//!
//! A frame takes the pad range `[offset, offset + n + 32)` and is `50 + n` bytes long. The tag
//! covers the header too, so a frame cannot be moved to another pad, offset or direction.
//!
//! Everything here is pure: [`parse`] reads a header strictly (nothing else is looked at
//! before the pad's bytes are at hand), [`Frame::open`] checks the tag and deciphers with the
//! range's pad bytes the caller passes, [`seal`] makes a frame. Which bytes are fresh is the
//! `Pad` machine's business, decided in the database.

use std::ops::Range;

use tally_kernel::crypto::kdf::sha256;
use tally_kernel::crypto::pad::{ONE_TIME_KEY_LEN, TAG_LEN, one_time_tag, one_time_verify, xor};
use zeroize::Zeroizing;

use super::ids::PadId;
use crate::effects::{Blame, Fault};

/// The first four bytes of every frame.
pub const MAGIC: &[u8; 4] = b"TPAD";
/// The only version.
pub const VERSION: u8 = 0x01;
/// Bytes before the ciphertext.
pub const HEADER_LEN: usize = 34;
/// The largest ciphertext.
pub const LEN_MAX: u32 = 65_536;
/// Pad bytes a frame takes beyond its ciphertext: the one-time key.
pub const KEY_LEN: u64 = ONE_TIME_KEY_LEN as u64;
/// Wire bytes a frame takes beyond its ciphertext: header and tag.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// Which way a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Holder → node.
    Up,
    /// Node → holder.
    Down,
}

impl Direction {
    fn byte(self) -> u8 {
        match self {
            Direction::Up => 0x01,
            Direction::Down => 0x02,
        }
    }
}

/// Why a frame was not taken. Nothing is changed by any of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not a frame: wrong magic, version, direction, length, or a range past `u64`.
    #[error("not a pad frame: {0}")]
    Malformed(&'static str),
    /// The tag does not verify under the range's bytes (or, at the node, the pad is unknown:
    /// the same answer, so ids cannot be probed).
    #[error("the frame is not authentic")]
    NotAuthentic,
    /// A caller bug: pad bytes of the wrong length, a plaintext of a length no frame has.
    #[error("API misuse: {0}")]
    ApiMisuse(&'static str),
}

impl Blame for FrameError {
    fn fault(&self) -> Fault {
        match self {
            FrameError::Malformed(_) => Fault::Caller,
            FrameError::NotAuthentic => Fault::Peer,
            FrameError::ApiMisuse(_) => Fault::Node,
        }
    }
}

/// A frame's header, read before anything is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Which way it goes.
    pub direction: Direction,
    /// The pad whose bytes it takes.
    pub pad: PadId,
    /// The first pad byte of its range.
    pub offset: u64,
    /// Its ciphertext's length.
    pub len: u32,
}

impl Header {
    /// The pad bytes the frame takes: ciphertext's, then the one-time key's.
    pub fn range(&self) -> Range<u64> {
        // `parse` and `seal` refuse headers whose range passes `u64`.
        self.offset..self.offset + self.consumed()
    }

    /// How many pad bytes the frame takes.
    pub fn consumed(&self) -> u64 {
        u64::from(self.len) + KEY_LEN
    }

    /// Its length on the wire.
    pub fn wire_len(&self) -> usize {
        self.len as usize + OVERHEAD
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(self.direction.byte());
        out.extend_from_slice(self.pad.as_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.len.to_be_bytes());
    }

    fn check(&self) -> Result<(), FrameError> {
        if !(1..=LEN_MAX).contains(&self.len) {
            return Err(FrameError::Malformed("the length is 1 to 65536"));
        }
        if self.offset.checked_add(self.consumed()).is_none() {
            return Err(FrameError::Malformed("the range passes the largest offset"));
        }
        Ok(())
    }
}

/// The pad bytes one frame takes, in a buffer wiped on drop.
pub type Material = Zeroizing<Vec<u8>>;

/// A frame read strictly from the wire; its tag is not checked yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The header.
    pub header: Header,
    bytes: &'a [u8],
}

/// Reads a frame's header and checks its length; nothing else is checked.
pub fn parse(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
    if bytes.len() < OVERHEAD + 1 {
        return Err(FrameError::Malformed(
            "shorter than a header, a byte and a tag",
        ));
    }
    if &bytes[..4] != MAGIC {
        return Err(FrameError::Malformed("the magic is not TPAD"));
    }
    if bytes[4] != VERSION {
        return Err(FrameError::Malformed("unknown version"));
    }
    let direction = match bytes[5] {
        0x01 => Direction::Up,
        0x02 => Direction::Down,
        _ => return Err(FrameError::Malformed("the direction is 1 or 2")),
    };
    let mut pad = [0u8; 16];
    pad.copy_from_slice(&bytes[6..22]);
    let offset = u64::from_be_bytes(bytes[22..30].try_into().expect("8 bytes"));
    let len = u32::from_be_bytes(bytes[30..34].try_into().expect("4 bytes"));
    let header = Header {
        direction,
        pad: PadId(pad),
        offset,
        len,
    };
    header.check()?;
    if bytes.len() != header.wire_len() {
        return Err(FrameError::Malformed(
            "the length field does not match the frame",
        ));
    }
    Ok(Frame { header, bytes })
}

impl Frame<'_> {
    /// The frame's bytes as they came.
    pub fn bytes(&self) -> &[u8] {
        self.bytes
    }

    /// SHA-256 of the whole frame: what the records keep of it.
    pub fn digest(&self) -> [u8; 32] {
        sha256(self.bytes)
    }

    /// Checks the tag under `material` (the pad's bytes of [`Header::range`]) in constant time
    /// and returns the plaintext. Nothing is deciphered when the tag does not verify.
    pub fn open(&self, material: &[u8]) -> Result<Material, FrameError> {
        let n = self.header.len as usize;
        if material.len() as u64 != self.header.consumed() {
            return Err(FrameError::ApiMisuse(
                "pad bytes of another length than the range",
            ));
        }
        let body_end = HEADER_LEN + n;
        if !one_time_verify(
            key(&material[n..]),
            &self.bytes[..body_end],
            &self.bytes[body_end..],
        ) {
            return Err(FrameError::NotAuthentic);
        }
        let mut plain = Zeroizing::new(self.bytes[HEADER_LEN..body_end].to_vec());
        xor(&mut plain, &material[..n]).map_err(|_| FrameError::ApiMisuse("xor"))?;
        Ok(plain)
    }
}

fn key(bytes: &[u8]) -> Zeroizing<[u8; ONE_TIME_KEY_LEN]> {
    let mut k = Zeroizing::new([0u8; ONE_TIME_KEY_LEN]);
    k.copy_from_slice(bytes);
    k
}

/// Makes a frame of `plaintext` (1 to 65 536 bytes) at `offset`, with `material` the pad's
/// bytes of its range (`plaintext.len() + 32` of them).
pub fn seal(
    direction: Direction,
    pad: PadId,
    offset: u64,
    plaintext: &[u8],
    material: &[u8],
) -> Result<Vec<u8>, FrameError> {
    let len = u32::try_from(plaintext.len())
        .map_err(|_| FrameError::ApiMisuse("a plaintext of more than 65536 bytes"))?;
    let header = Header {
        direction,
        pad,
        offset,
        len,
    };
    header
        .check()
        .map_err(|_| FrameError::ApiMisuse("a plaintext of 1 to 65536 bytes, in range"))?;
    if material.len() as u64 != header.consumed() {
        return Err(FrameError::ApiMisuse(
            "pad bytes of another length than the range",
        ));
    }
    let n = plaintext.len();
    let mut out = Vec::with_capacity(header.wire_len());
    header.write(&mut out);
    out.extend_from_slice(plaintext);
    xor(&mut out[HEADER_LEN..], &material[..n]).map_err(|_| FrameError::ApiMisuse("xor"))?;
    let tag = one_time_tag(key(&material[n..]), &out);
    out.extend_from_slice(&tag);
    Ok(out)
}
