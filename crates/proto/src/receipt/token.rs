//! The token and its secure write (SPEC R3): a customer's store of short receipts that only
//! the holder of the token's application key can write, each write bound to a fresh
//! challenge of the token so that it is stored once.
//!
//! * The node derives a token's application key from its master key and the token's serial
//!   ([`application_key`]); the token was personalised with the same key when it was issued.
//! * Before signing, the token draws a 32-byte challenge and picks a slot
//!   ([`Token::begin`]): the first free one, else the one with the lowest priority and, among
//!   those, the oldest receipt (the caller exports it first). The client sends the challenge,
//!   the slot and the token serial with its signature.
//! * The node seals the [`WriteContent`] (short token form, receipt number, server id and the
//!   server's signature over fields 1–5) under a key derived from the application key and the
//!   challenge ([`seal_write`]); that is the seed's "exclusive-or with the random number":
//!   only the token that drew the challenge can open it, and once the token has used a
//!   challenge it forgets it, so the same write cannot be stored twice.
//! * [`Token::store`] opens the write, checks the server's signature and the record hash,
//!   stores it and returns the receipt number, which the client sends back as the ack. A
//!   write the token already holds is recognised (the ack was lost) and acknowledged again.

use serde::{Deserialize, Serialize};
use tally_kernel::crypto::kdf::{hkdf_sha256, sha256};
use tally_kernel::crypto::{Signature, VerifyingKey, seal};

use super::{Fields, SERVER_DOMAIN};

/// Short token form: version, transaction id, time, content hash.
pub const TOKEN_RECORD_LEN: usize = 1 + 8 + 8 + 32;
/// What a secure write carries: the token form, receipt number, server id, server signature.
pub const WRITE_CONTENT_LEN: usize = TOKEN_RECORD_LEN + 8 + 32 + 64;
/// Sealed write on the wire: slot, receipt number, challenge id, nonce, content, tag.
pub const SECURE_WRITE_LEN: usize = 2 + 8 + 8 + seal::NONCE_LEN + WRITE_CONTENT_LEN + seal::TAG_LEN;
/// Token serial length.
pub const SERIAL_LEN: usize = 16;
/// Challenge length.
pub const CHALLENGE_LEN: usize = 32;
/// Most slots a token may have.
pub const SLOTS_MAX: u16 = 1024;
/// HKDF salt of the application key (the serial is the info).
pub const APP_KEY_SALT: &[u8] = b"tally/token-app-key/v1";
/// HKDF info prefix of a write's key and nonce (the challenge is the salt).
pub const WRITE_INFO: &[u8] = b"tally/secure-write/v1\0";

/// Why a token refused a write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The write is not well formed.
    #[error("malformed secure write: {0}")]
    Malformed(String),
    /// The write's challenge is not one this token is waiting on: replayed, or for another
    /// token.
    #[error(
        "replayed write: this token is not waiting on that challenge (already used or never drawn)"
    )]
    Replayed,
    /// The write does not open under this token's key (another token, or altered).
    #[error("the write does not open with this token's key (another token's write, or altered)")]
    WrongKey,
    /// The write opened but is not the receipt this token asked for.
    #[error("the write does not match the receipt: {0}")]
    Mismatch(String),
    /// The server's signature does not verify.
    #[error("the server's signature on the written receipt does not verify")]
    BadSignature,
    /// A slot number outside the token.
    #[error("slot {0} does not exist on this token")]
    NoSuchSlot(u16),
}

type Result<T> = std::result::Result<T, TokenError>;

/// The short token form (the seed's 29-byte secure write file, with 8-byte ids and time and
/// SHA-256).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRecord {
    /// Receipt version.
    pub version: u8,
    /// Transaction id.
    pub transaction: u64,
    /// Seconds since the epoch.
    pub time: i64,
    /// SHA-256 of the record.
    pub content_hash: [u8; 32],
}

impl TokenRecord {
    /// `version || transaction BE || time BE || content_hash`.
    pub fn to_bytes(&self) -> [u8; TOKEN_RECORD_LEN] {
        let mut out = [0u8; TOKEN_RECORD_LEN];
        out[0] = self.version;
        out[1..9].copy_from_slice(&self.transaction.to_be_bytes());
        out[9..17].copy_from_slice(&self.time.to_be_bytes());
        out[17..49].copy_from_slice(&self.content_hash);
        out
    }

    /// Parses exactly [`TOKEN_RECORD_LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<TokenRecord> {
        if bytes.len() != TOKEN_RECORD_LEN {
            return Err(TokenError::Malformed(format!(
                "a token record is {TOKEN_RECORD_LEN} bytes, this is {}",
                bytes.len()
            )));
        }
        Ok(TokenRecord {
            version: bytes[0],
            transaction: u64::from_be_bytes(arr(&bytes[1..9])),
            time: i64::from_be_bytes(arr(&bytes[9..17])),
            content_hash: arr(&bytes[17..49]),
        })
    }
}

fn arr<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    out
}

/// What the node writes into a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteContent {
    /// The short token form.
    pub record: TokenRecord,
    /// The unique receipt number the client acks with.
    pub receipt_number: u64,
    /// The receipt server's id (SHA-256 of its key).
    pub server_id: [u8; 32],
    /// The server's signature over fields 1–5.
    pub server_signature: Signature,
}

impl WriteContent {
    /// The content for a receipt's fields.
    pub fn new(fields: &Fields, receipt_number: u64, server_signature: Signature) -> WriteContent {
        WriteContent {
            record: fields.token_record(),
            receipt_number,
            server_id: fields.server_id,
            server_signature,
        }
    }

    /// `record || receipt_number BE || server_id || server_signature`.
    pub fn to_bytes(&self) -> [u8; WRITE_CONTENT_LEN] {
        let mut out = [0u8; WRITE_CONTENT_LEN];
        out[..49].copy_from_slice(&self.record.to_bytes());
        out[49..57].copy_from_slice(&self.receipt_number.to_be_bytes());
        out[57..89].copy_from_slice(&self.server_id);
        out[89..].copy_from_slice(&self.server_signature.to_bytes());
        out
    }

    /// Parses exactly [`WRITE_CONTENT_LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<WriteContent> {
        if bytes.len() != WRITE_CONTENT_LEN {
            return Err(TokenError::Malformed(
                "write content has a wrong length".into(),
            ));
        }
        Ok(WriteContent {
            record: TokenRecord::from_bytes(&bytes[..49])?,
            receipt_number: u64::from_be_bytes(arr(&bytes[49..57])),
            server_id: arr(&bytes[57..89]),
            server_signature: Signature::from_bytes(arr(&bytes[89..])),
        })
    }

    /// Fields 1–5 as the server signed them.
    pub fn server_part(&self) -> [u8; super::SERVER_PART_LEN] {
        Fields {
            version: self.record.version,
            server_id: self.server_id,
            transaction: self.record.transaction,
            time: self.record.time,
            content_hash: self.record.content_hash,
            party_a: [0; 32],
            party_b: [0; 32],
        }
        .server_part()
    }

    /// Checks the server's signature with its key (and that the id is that key's).
    pub fn verify(&self, server_key: &VerifyingKey) -> Result<()> {
        if sha256(&server_key.to_bytes()) != self.server_id {
            return Err(TokenError::Mismatch(
                "written by another receipt server".into(),
            ));
        }
        server_key
            .verify(SERVER_DOMAIN, &self.server_part(), &self.server_signature)
            .map_err(|_| TokenError::BadSignature)
    }
}

/// A sealed write as it travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecureWrite {
    /// The slot the token asked for.
    pub slot: u16,
    /// The receipt number (also inside, authenticated).
    pub receipt_number: u64,
    /// First 8 bytes of SHA-256 of the challenge: which challenge opens it.
    pub challenge_id: [u8; 8],
    /// Nonce, sealed content and tag.
    pub sealed: Vec<u8>,
}

impl SecureWrite {
    /// Wire bytes: `slot BE || receipt_number BE || challenge_id || sealed`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SECURE_WRITE_LEN);
        out.extend_from_slice(&self.slot.to_be_bytes());
        out.extend_from_slice(&self.receipt_number.to_be_bytes());
        out.extend_from_slice(&self.challenge_id);
        out.extend_from_slice(&self.sealed);
        out
    }

    /// Parses exactly [`SECURE_WRITE_LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<SecureWrite> {
        if bytes.len() != SECURE_WRITE_LEN {
            return Err(TokenError::Malformed(format!(
                "a secure write is {SECURE_WRITE_LEN} bytes, this is {}",
                bytes.len()
            )));
        }
        Ok(SecureWrite {
            slot: u16::from_be_bytes(arr(&bytes[..2])),
            receipt_number: u64::from_be_bytes(arr(&bytes[2..10])),
            challenge_id: arr(&bytes[10..18]),
            sealed: bytes[18..].to_vec(),
        })
    }
}

/// The challenge's id: the first 8 bytes of its SHA-256.
pub fn challenge_id(challenge: &[u8; CHALLENGE_LEN]) -> [u8; 8] {
    arr(&sha256(challenge)[..8])
}

/// The token's application key: HKDF-SHA256(master, salt [`APP_KEY_SALT`], info serial).
pub fn application_key(master: &[u8], serial: &[u8; SERIAL_LEN]) -> tally_kernel::Secret<[u8; 32]> {
    let okm = hkdf_sha256(master, APP_KEY_SALT, serial, 32).expect("32 bytes is a valid length");
    tally_kernel::Secret::new(arr(okm.expose()))
}

fn write_key(
    app_key: &[u8; 32],
    serial: &[u8; SERIAL_LEN],
    challenge: &[u8; CHALLENGE_LEN],
    slot: u16,
    receipt_number: u64,
) -> (
    tally_kernel::Secret<[u8; 32]>,
    [u8; seal::NONCE_LEN],
    Vec<u8>,
) {
    let mut info = Vec::with_capacity(WRITE_INFO.len() + 26);
    info.extend_from_slice(WRITE_INFO);
    info.extend_from_slice(serial);
    info.extend_from_slice(&slot.to_be_bytes());
    info.extend_from_slice(&receipt_number.to_be_bytes());
    let okm = hkdf_sha256(app_key, challenge, &info, 32 + seal::NONCE_LEN)
        .expect("56 bytes is a valid length");
    let key = tally_kernel::Secret::new(arr(&okm.expose()[..32]));
    let nonce = arr(&okm.expose()[32..]);
    let mut aad = info[WRITE_INFO.len()..].to_vec();
    aad.extend_from_slice(&challenge_id(challenge));
    (key, nonce, aad)
}

/// Seals a write for the token `serial` that drew `challenge` (node side). The key and nonce
/// are derived from the challenge, so a retry of the same write is the same bytes.
pub fn seal_write(
    app_key: &[u8; 32],
    serial: &[u8; SERIAL_LEN],
    challenge: &[u8; CHALLENGE_LEN],
    slot: u16,
    content: &WriteContent,
) -> SecureWrite {
    let (key, nonce, aad) = write_key(app_key, serial, challenge, slot, content.receipt_number);
    let sealed = seal::seal_with_nonce(key.expose(), &nonce, &aad, &content.to_bytes())
        .expect("a write is far below the AEAD's limit");
    SecureWrite {
        slot,
        receipt_number: content.receipt_number,
        challenge_id: challenge_id(challenge),
        sealed,
    }
}

mod hex_array {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let text = String::deserialize(d)?;
        let bytes = hex::decode(&text).map_err(serde::de::Error::custom)?;
        bytes
            .try_into()
            .map_err(|_| serde::de::Error::custom(format!("expected {N} bytes")))
    }
}

/// A stored receipt in a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// The receipt number.
    pub receipt_number: u64,
    /// Replacement priority given when the slot was asked for (lowest goes first).
    pub priority: u8,
    /// The written content (hex of [`WriteContent::to_bytes`]).
    #[serde(with = "hex_content")]
    pub content: WriteContent,
}

mod hex_content {
    use super::WriteContent;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &WriteContent, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v.to_bytes()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<WriteContent, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = hex::decode(&text).map_err(serde::de::Error::custom)?;
        WriteContent::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

/// A challenge the token drew and waits to see used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The challenge.
    #[serde(with = "hex_array")]
    pub challenge: [u8; CHALLENGE_LEN],
    /// The slot it reserved.
    pub slot: u16,
    /// The transaction it is for.
    pub transaction: u64,
    /// The record hash the write must carry.
    #[serde(with = "hex_array")]
    pub content_hash: [u8; 32],
    /// Replacement priority of the receipt to come.
    pub priority: u8,
}

/// A token's state: what a smart card or a token file holds. `Debug` leaves the application
/// key out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// The serial.
    #[serde(with = "hex_array")]
    pub serial: [u8; SERIAL_LEN],
    /// The application key (secret: the token file is 0600; a card never lets it out).
    #[serde(with = "hex_array")]
    pub app_key: [u8; 32],
    /// The slots, `None` when free.
    pub slots: Vec<Option<Slot>>,
    /// Challenges drawn and not yet used.
    pub pending: Vec<Pending>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("serial", &hex::encode(self.serial))
            .field("app_key", &"<secret>")
            .field("slots", &self.slots)
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.app_key);
    }
}

/// What [`Token::store`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Stored now; ack with this number.
    New(u64),
    /// The token already held it (the ack was lost); ack again.
    Already(u64),
}

impl Token {
    /// A new empty token.
    pub fn new(serial: [u8; SERIAL_LEN], app_key: [u8; 32], slots: u16) -> Token {
        Token {
            serial,
            app_key,
            slots: vec![None; usize::from(slots.clamp(1, SLOTS_MAX))],
            pending: Vec::new(),
        }
    }

    /// The slot the next receipt goes to: the first free one not reserved by a pending
    /// challenge, else the lowest priority and, among equals, the oldest receipt.
    pub fn choose_slot(&self) -> u16 {
        let reserved = |i: usize| self.pending.iter().any(|p| usize::from(p.slot) == i);
        if let Some(i) = (0..self.slots.len()).find(|&i| self.slots[i].is_none() && !reserved(i)) {
            return i as u16;
        }
        let victim = self
            .slots
            .iter()
            .enumerate()
            .filter(|(i, _)| !reserved(*i))
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
            .min_by_key(|(_, s)| (s.priority, s.content.record.time, s.receipt_number));
        victim.map_or(0, |(i, _)| i as u16)
    }

    /// Reserves a slot for `transaction` with a fresh `challenge` (drawn by the caller from
    /// the OS). Returns the slot and the receipt it will replace, which the caller exports
    /// first.
    pub fn begin(
        &mut self,
        challenge: [u8; CHALLENGE_LEN],
        transaction: u64,
        content_hash: [u8; 32],
        priority: u8,
    ) -> (u16, Option<Slot>) {
        let slot = self.choose_slot();
        self.pending.retain(|p| p.transaction != transaction);
        self.pending.push(Pending {
            challenge,
            slot,
            transaction,
            content_hash,
            priority,
        });
        (slot, self.slots[usize::from(slot)].clone())
    }

    /// Opens, checks and stores a write. Consumes the challenge, so the same write stored
    /// again is refused, unless the token already holds that receipt (then it says so and
    /// the caller acks again).
    pub fn store(&mut self, write: &SecureWrite, server_key: &VerifyingKey) -> Result<Stored> {
        let slot = usize::from(write.slot);
        if slot >= self.slots.len() {
            return Err(TokenError::NoSuchSlot(write.slot));
        }
        let Some(at) = self
            .pending
            .iter()
            .position(|p| challenge_id(&p.challenge) == write.challenge_id)
        else {
            return match &self.slots[slot] {
                Some(s) if s.receipt_number == write.receipt_number => {
                    Ok(Stored::Already(s.receipt_number))
                }
                _ => Err(TokenError::Replayed),
            };
        };
        let pending = self.pending[at].clone();
        if pending.slot != write.slot {
            return Err(TokenError::Mismatch(format!(
                "written to slot {}, the token asked for slot {}",
                write.slot, pending.slot
            )));
        }
        let (key, _, aad) = write_key(
            &self.app_key,
            &self.serial,
            &pending.challenge,
            write.slot,
            write.receipt_number,
        );
        let plain =
            seal::open(key.expose(), &aad, &write.sealed).map_err(|_| TokenError::WrongKey)?;
        let content = WriteContent::from_bytes(plain.expose())?;
        if content.receipt_number != write.receipt_number {
            return Err(TokenError::Mismatch("receipt number".into()));
        }
        if content.record.transaction != pending.transaction {
            return Err(TokenError::Mismatch(format!(
                "transaction {}, the token asked for {}",
                content.record.transaction, pending.transaction
            )));
        }
        if content.record.content_hash != pending.content_hash {
            return Err(TokenError::Mismatch(
                "the record hash is not the signed record's".into(),
            ));
        }
        content.verify(server_key)?;
        self.pending.remove(at);
        self.slots[slot] = Some(Slot {
            receipt_number: content.receipt_number,
            priority: pending.priority,
            content,
        });
        Ok(Stored::New(content.receipt_number))
    }
}
