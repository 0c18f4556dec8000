//! The customer's half of a pad, as a file (`docs/protocols/pads.md`, Pad material and files).
//!
//! ```text
//! offset  size  field
//! 0       8     magic "TALLYPAD"
//! 8       1     version = 0x01
//! 9       1     mode: 0x01 one-time pad, 0x02 session key
//! 10      16    pad id
//! 26      8     size, u64 big-endian
//! 34      3     currency, ISO-4217 alphabetic, ASCII
//! 37      8     face value, minor units, i64 big-endian (informative; the node's account decides)
//! 45      32    the node key's fingerprint (SHA-256 of its Ed25519 public key)
//! 77      1     url_len, 1 ..= 255
//! 78      …     node URL, ASCII
//! …       …     pad bytes (mode 0x01: size bytes) or the seed (mode 0x02: 32 bytes)
//! …       32    SHA-256 of everything before it: a damage check, not authenticity
//! ```
//!
//! Pad bytes: `0..32` seed the mailbox address, `32..64` the pad's key pair (a kept seed
//! option), `64..size` is the traffic area, spent upwards by the holder and downwards by the
//! node.

use std::ops::Range;

use tally_kernel::crypto::kdf::sha256;
use tally_kernel::crypto::pad::keystream;
use tally_kernel::{Amount, Currency};
use zeroize::Zeroizing;

use super::frame::Material;
use super::ids::{MailboxAddress, PadId};

/// The file's first bytes.
pub const MAGIC: &[u8; 8] = b"TALLYPAD";
/// The only version.
pub const VERSION: u8 = 0x01;
/// The first byte of the traffic area.
pub const TRAFFIC_START: u64 = 64;
/// The smallest pad.
pub const SIZE_MIN: u64 = 4096;
/// The largest pad the format takes (a node sells smaller ones: `--pad-size-max`).
pub const SIZE_MAX: u64 = 1 << 30;

/// Why bytes are not a pad file, or a range not in the pad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// Not the format.
    #[error("not a pad file: {0}")]
    Malformed(&'static str),
    /// The check sum does not match: the file is damaged.
    #[error("the pad file is damaged (its check sum does not match)")]
    Damaged,
    /// A range outside the pad.
    #[error("a range outside the pad")]
    OutOfRange,
}

/// How the pad's bytes are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// `size` bytes from the OS's CSPRNG, kept whole.
    OneTime,
    /// Byte `i` of the ChaCha20 keystream of a 32-byte seed (SPEC P1's alternative):
    /// computationally secure only.
    SessionKey,
}

stored_names!(Mode {
    OneTime => "one_time",
    SessionKey => "session_key",
});

impl Mode {
    fn byte(self) -> u8 {
        match self {
            Mode::OneTime => 0x01,
            Mode::SessionKey => 0x02,
        }
    }
}

/// A pad's bytes: kept whole, or computed from a seed. Wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub enum PadBytes {
    /// The bytes themselves.
    OneTime(Zeroizing<Vec<u8>>),
    /// The seed of the keystream, and the pad's size.
    SessionKey {
        /// The seed.
        seed: Zeroizing<[u8; 32]>,
        /// The pad's size.
        size: u64,
    },
}

impl std::fmt::Debug for PadBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PadBytes({:?}, {} bytes)", self.mode(), self.size())
    }
}

impl PadBytes {
    /// How they are made.
    pub fn mode(&self) -> Mode {
        match self {
            PadBytes::OneTime(_) => Mode::OneTime,
            PadBytes::SessionKey { .. } => Mode::SessionKey,
        }
    }

    /// The pad's size.
    pub fn size(&self) -> u64 {
        match self {
            PadBytes::OneTime(b) => b.len() as u64,
            PadBytes::SessionKey { size, .. } => *size,
        }
    }

    /// The bytes of `range`, which must lie in the pad.
    pub fn read(&self, range: Range<u64>) -> Result<Material, FileError> {
        if range.start > range.end || range.end > self.size() {
            return Err(FileError::OutOfRange);
        }
        match self {
            PadBytes::OneTime(b) => Ok(Zeroizing::new(
                b[range.start as usize..range.end as usize].to_vec(),
            )),
            PadBytes::SessionKey { seed, .. } => {
                let mut out = Zeroizing::new(vec![0u8; (range.end - range.start) as usize]);
                keystream(seed, range.start, &mut out).map_err(|_| FileError::OutOfRange)?;
                Ok(out)
            }
        }
    }

    /// The pad's mailbox address (from bytes `0..32`).
    pub fn mailbox(&self) -> MailboxAddress {
        let head = self.read(0..32).expect("a pad has at least 4096 bytes");
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&head);
        MailboxAddress::of(&seed)
    }
}

/// A pad file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PadFile {
    /// The pad.
    pub pad: PadId,
    /// Its face value (informative).
    pub face: Amount,
    /// SHA-256 of the issuing node's Ed25519 public key.
    pub node: [u8; 32],
    /// Where the node takes frames.
    pub url: String,
    /// The bytes.
    pub bytes: PadBytes,
}

impl PadFile {
    /// The file's bytes.
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, FileError> {
        check_size(self.bytes.size())?;
        if self.url.is_empty() || self.url.len() > 255 || !self.url.is_ascii() {
            return Err(FileError::Malformed("the node URL is 1 to 255 ASCII bytes"));
        }
        let mut out = Zeroizing::new(Vec::new());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(self.bytes.mode().byte());
        out.extend_from_slice(self.pad.as_bytes());
        out.extend_from_slice(&self.bytes.size().to_be_bytes());
        out.extend_from_slice(self.face.currency.code().as_bytes());
        out.extend_from_slice(&self.face.minor.to_be_bytes());
        out.extend_from_slice(&self.node);
        out.push(self.url.len() as u8);
        out.extend_from_slice(self.url.as_bytes());
        match &self.bytes {
            PadBytes::OneTime(b) => out.extend_from_slice(b),
            PadBytes::SessionKey { seed, .. } => out.extend_from_slice(&**seed),
        }
        let sum = sha256(&out);
        out.extend_from_slice(&sum);
        Ok(out)
    }

    /// Reads a file strictly; a damaged one is refused before anything else is read.
    pub fn decode(bytes: &[u8]) -> Result<PadFile, FileError> {
        if bytes.len() < 78 + 1 + 32 + 32 {
            return Err(FileError::Malformed("too short"));
        }
        if &bytes[..8] != MAGIC {
            return Err(FileError::Malformed("the magic is not TALLYPAD"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if sha256(body) != sum {
            return Err(FileError::Damaged);
        }
        if body[8] != VERSION {
            return Err(FileError::Malformed("unknown version"));
        }
        let mut pad = [0u8; 16];
        pad.copy_from_slice(&body[10..26]);
        let size = u64::from_be_bytes(body[26..34].try_into().expect("8"));
        check_size(size)?;
        let code = std::str::from_utf8(&body[34..37])
            .map_err(|_| FileError::Malformed("the currency is ASCII"))?;
        let currency =
            Currency::from_code(code).map_err(|_| FileError::Malformed("unknown currency"))?;
        let minor = i64::from_be_bytes(body[37..45].try_into().expect("8"));
        let mut node = [0u8; 32];
        node.copy_from_slice(&body[45..77]);
        let url_len = usize::from(body[77]);
        let rest = &body[78..];
        if url_len == 0 || rest.len() < url_len {
            return Err(FileError::Malformed("the node URL is 1 to 255 ASCII bytes"));
        }
        let url = std::str::from_utf8(&rest[..url_len])
            .ok()
            .filter(|u| u.is_ascii())
            .ok_or(FileError::Malformed("the node URL is ASCII"))?
            .to_string();
        let material = &rest[url_len..];
        let bytes = match body[9] {
            0x01 => {
                if material.len() as u64 != size {
                    return Err(FileError::Malformed("the pad bytes are not `size` long"));
                }
                PadBytes::OneTime(Zeroizing::new(material.to_vec()))
            }
            0x02 => {
                let mut seed = Zeroizing::new([0u8; 32]);
                if material.len() != 32 {
                    return Err(FileError::Malformed(
                        "a session-key pad holds a 32-byte seed",
                    ));
                }
                seed.copy_from_slice(material);
                PadBytes::SessionKey { seed, size }
            }
            _ => return Err(FileError::Malformed("the mode is 1 or 2")),
        };
        Ok(PadFile {
            pad: PadId(pad),
            face: Amount::new(minor, currency),
            node,
            url,
            bytes,
        })
    }
}

fn check_size(size: u64) -> Result<(), FileError> {
    if !(SIZE_MIN..=SIZE_MAX).contains(&size) {
        return Err(FileError::Malformed("a pad is 4 KiB to 1 GiB"));
    }
    Ok(())
}
