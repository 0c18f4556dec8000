//! Locked delivery (WO 98/30964, SPEC D2–D4): reference codes, unlock keys and the package
//! format. The node and the CLI drive this; nothing here touches files, sockets or the clock
//! (the caller passes `Read`/`Write` streams, times and random bytes in).
//!
//! * A **reference code** (D2) commits to the sale: the product, the buyer, the time and a
//!   random nonce, hashed into 100 bits written as 20 Crockford base-32 characters plus a
//!   Luhn mod 32 check character, so a typo is caught before anything is looked up.
//! * The **unlock key** is HKDF-SHA256 of a node secret and the code: never stored, re-derived
//!   for complaints (D11).
//! * The **package** (D3, D4) is a signed container: a canonical-JSON header holding the
//!   plaintext instruction file, then the sealed entries (product, registration file,
//!   documents; each a `TALLYSTR` stream under the product's content key), then a trailer
//!   with the SHA-256 of the header bytes (which list every entry's length and SHA-256) and the node's Ed25519 signature over that.
//! * **Version 2** (written since issue [11]) lists only the SHA-256 of each entry's *sealed*
//!   bytes, not of its plaintext: the signature pins the sealed bytes through that hash, and
//!   the AEAD of the `TALLYSTR` stream (under the content key the signed header wraps)
//!   authenticates every plaintext byte against them, so a second hash over the plaintext
//!   proved nothing more and cost a SHA-256 pass over the whole product on every seal and
//!   open. Version 1 packages (with `plain_sha256`) are still read and checked as before.
//!   [`seal_entry`] still reports the plaintext's hash (a product's record keeps it, and the
//!   merchant's upload is checked against it); [`EntryMeta::for_version`] drops it for a
//!   version 2 or 3 header.
//! * **Version 3** (written since, also issue [11]) lists the BLAKE3 of each entry's sealed
//!   bytes instead of their SHA-256: the hash is the one cost a package has over plain
//!   encryption, and BLAKE3 costs about a third of SHA-256 here, little enough to share the
//!   stream's helper thread with the AEAD while the calling thread does the I/O. A node sells a
//!   product sealed before version 3 (no BLAKE3 on record) as version 2.
//!   The content key travels wrapped under the sale's unlock key, so a product is sealed once
//!   and every sale copies the sealed bytes (pre-sealing). [`inspect`] reads the whole
//!   package in constant memory and returns the header (with the instruction file) only when
//!   every byte verified; it names what is wrong otherwise.
//!
//! Byte layout and vectors: `docs/protocols/delivery.md`, `docs/protocols/vectors/delivery.json`.
//!
//! Rejected: the instruction file outside the signed container (it could be shown for a
//! damaged package); per-entry signatures only (a reordered or spliced package would verify
//! entry by entry); re-encrypting the product per sale (a 4 GB product per sale).

use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::mpsc;
use std::thread::Scope;
use tally_kernel::crypto::canonical::canonical_json;
use tally_kernel::crypto::kdf::{Sha256Stream, hkdf_sha256};
use tally_kernel::crypto::{CryptoError, Signature, SigningKey, VerifyingKey, seal, stream};
use tally_kernel::{Amount, Id, Secret, Timestamp};

/// Package magic.
pub const MAGIC: &[u8; 8] = b"TALLYPKG";
/// Trailer magic.
pub const TRAILER_MAGIC: &[u8; 8] = b"TALLYSIG";
/// The newest format version: the sealed bytes' hash is BLAKE3 (versions 1 and 2 are still
/// read, and written for a header with `v: 1` or `v: 2`).
pub const VERSION: u8 = 3;
/// Format version 2: SHA-256 of the sealed bytes, no plaintext hash.
pub const VERSION_2: u8 = 2;
/// The first format version, with a plaintext hash per entry.
pub const VERSION_1: u8 = 1;
/// Largest header accepted (bounds what a hostile file makes us allocate).
pub const HEADER_LEN_MAX: u32 = 1 << 20;
/// Trailer length: magic, SHA-256, Ed25519 signature.
pub const TRAILER_LEN: usize = 8 + 32 + 64;
/// Domain of the package signature.
pub const SIGNATURE_DOMAIN: &[u8] = b"tally/delivery-package/v1\0";
/// Associated data of the wrapped content key (followed by the reference code).
pub const WRAP_AAD: &[u8] = b"tally/delivery-wrap/v1\0";
/// HKDF salt of the unlock key.
pub const UNLOCK_SALT: &[u8] = b"tally/delivery-unlock/v1";
/// Domain of the reference code's hash.
pub const REFERENCE_DOMAIN: &[u8] = b"tally/delivery-reference/v1\0";

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Characters of a reference code without separators (20 + check).
pub const REFERENCE_LEN: usize = 21;

/// Why a package, a code or a key was refused. Each says exactly what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// Not a Tally package (wrong magic).
    #[error("not a Tally package")]
    NotAPackage,
    /// A package version this code does not read.
    #[error("package version {0} is not supported (this reader knows versions 1 and 2)")]
    UnsupportedVersion(u8),
    /// The header is malformed, oversize or not canonical.
    #[error("the package header is malformed: {0}")]
    BadHeader(String),
    /// The file ends early.
    #[error("the package is truncated: {0}")]
    Truncated(String),
    /// An entry's bytes are not the ones the header lists.
    #[error("entry `{0}` is damaged (its bytes do not match the header)")]
    EntryDamaged(String),
    /// The header or the framing changed after signing (all entries matched).
    #[error("the package was altered after it was signed (header or layout changed)")]
    Altered,
    /// The trailer's signature is not the node's.
    #[error("the package signature does not verify")]
    BadSignature,
    /// Signed by another key than the one trusted.
    #[error("the package is signed by {found}, not by the trusted node key {expected}")]
    UntrustedSigner {
        /// Fingerprint expected.
        expected: String,
        /// Fingerprint found.
        found: String,
    },
    /// Bytes after the trailer.
    #[error("the package has {0} unexpected bytes after its end")]
    TrailingBytes(u64),
    /// The unlock key does not open this package (another sale's key, or a wrong one).
    #[error("this unlock key does not belong to this package")]
    WrongKey,
    /// A reference code with a typo or the wrong shape.
    #[error("reference code: {0}")]
    BadReference(&'static str),
    /// Reading or writing failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A primitive failed (e.g. a stream entry that does not decrypt).
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// Result of this module.
pub type Result<T, E = PackageError> = std::result::Result<T, E>;

// ----- reference codes ---------------------------------------------------------------------

/// What a reference code commits to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReferenceBinding<'a> {
    /// Format version.
    pub v: u32,
    /// The product.
    pub product: Id,
    /// The buyer's identity as recorded.
    pub buyer: &'a str,
    /// When the sale was made, µs.
    pub issued_at: i64,
    /// 16 random bytes, hex.
    pub nonce: String,
}

/// A printable reference code (`ABCDE-FGHJK-MNPQR-STVWX-Y`), checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReferenceCode(String);

impl ReferenceCode {
    /// Makes the code of a sale; `nonce` must come from a CSPRNG.
    pub fn new(product: Id, buyer: &str, issued_at: Timestamp, nonce: [u8; 16]) -> ReferenceCode {
        let binding = ReferenceBinding {
            v: 1,
            product,
            buyer,
            issued_at: issued_at.as_micros(),
            nonce: hex::encode(nonce),
        };
        let mut message = REFERENCE_DOMAIN.to_vec();
        // Invariant: the binding has only strings and integers, which always canonicalize.
        message.extend(canonical_json(&binding).unwrap_or_default());
        let digest = tally_kernel::crypto::kdf::sha256(&message);
        // 100 bits: the first 20 five-bit groups of the digest.
        let mut chars = String::with_capacity(REFERENCE_LEN);
        for i in 0..20 {
            let bit = i * 5;
            let word = u16::from_be_bytes([digest[bit / 8], digest[bit / 8 + 1]]);
            let value = (word >> (11 - bit % 8)) & 0x1f;
            chars.push(ALPHABET[usize::from(value)] as char);
        }
        chars.push(luhn32_check(&chars));
        ReferenceCode(chars)
    }

    /// Parses a code as typed: case, spaces and dashes do not matter; `O` reads as `0` and
    /// `I`/`L` as `1` (Crockford); the check character must match.
    pub fn parse(text: &str) -> Result<ReferenceCode> {
        let mut chars = String::with_capacity(REFERENCE_LEN);
        for c in text.chars() {
            let c = match c.to_ascii_uppercase() {
                ' ' | '-' => continue,
                'O' => '0',
                'I' | 'L' => '1',
                c if c.is_ascii() && ALPHABET.contains(&(c as u8)) => c,
                _ => {
                    return Err(PackageError::BadReference(
                        "a character that is not in the code alphabet",
                    ));
                }
            };
            if chars.len() == REFERENCE_LEN {
                return Err(PackageError::BadReference(
                    "too long (21 characters expected)",
                ));
            }
            chars.push(c);
        }
        if chars.len() != REFERENCE_LEN {
            return Err(PackageError::BadReference(
                "too short (21 characters expected)",
            ));
        }
        let (body, check) = chars.split_at(REFERENCE_LEN - 1);
        if !check.starts_with(luhn32_check(body)) {
            return Err(PackageError::BadReference(
                "the check character does not match: a character was mistyped",
            ));
        }
        Ok(ReferenceCode(chars))
    }

    /// The 21 characters without separators.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For people: groups of five.
    pub fn display(&self) -> String {
        self.0
            .as_bytes()
            .chunks(5)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("-")
    }

    /// The sale's unlock key: HKDF-SHA256(node secret, salt, info = code). Never stored.
    pub fn unlock_key(&self, node_secret: &[u8]) -> Result<Secret<[u8; 32]>> {
        let okm = hkdf_sha256(node_secret, UNLOCK_SALT, self.0.as_bytes(), 32)?;
        let mut key = [0_u8; 32];
        key.copy_from_slice(okm.expose());
        Ok(Secret::new(key))
    }
}

impl TryFrom<String> for ReferenceCode {
    type Error = PackageError;
    fn try_from(s: String) -> Result<Self> {
        ReferenceCode::parse(&s)
    }
}

impl From<ReferenceCode> for String {
    fn from(c: ReferenceCode) -> String {
        c.display()
    }
}

impl std::fmt::Display for ReferenceCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

/// Luhn mod N (N = 32) check character over Crockford base-32: catches every single-character
/// error and every transposition of adjacent characters but one pair.
fn luhn32_check(body: &str) -> char {
    let n = 32_u32;
    let mut factor = 2;
    let mut sum = 0_u32;
    for c in body.bytes().rev() {
        let value = ALPHABET.iter().position(|a| *a == c).unwrap_or(0) as u32;
        let addend = factor * value;
        factor = if factor == 2 { 1 } else { 2 };
        sum += addend / n + addend % n;
    }
    ALPHABET[((n - sum % n) % n) as usize] as char
}

// ----- the package -------------------------------------------------------------------------

/// What is in an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Instruction documents (sealed).
    Document,
    /// The product itself.
    Product,
    /// The registration file for the producer, with its authenticity code.
    Registration,
}

/// One sealed entry as the header lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryMeta {
    /// File name to unpack to (no path separators).
    pub name: String,
    /// What it is.
    pub kind: EntryKind,
    /// Bytes of the sealed `TALLYSTR` stream in the package.
    pub sealed_len: u64,
    /// SHA-256 of the sealed bytes, hex: in version 1 and 2 headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_sha256: Option<String>,
    /// BLAKE3 of the sealed bytes, hex: in version 3 headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_blake3: Option<String>,
    /// Bytes once unlocked.
    pub plain_len: u64,
    /// SHA-256 once unlocked, hex: in version 1 headers only (version 2 relies on the stream's
    /// AEAD for the plaintext; see the module documentation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain_sha256: Option<String>,
}

impl EntryMeta {
    /// This entry as a header of format `v` lists it: the plaintext hash only in version 1,
    /// the sealed bytes' SHA-256 in versions 1 and 2, their BLAKE3 in version 3. The hash a
    /// version needs must be there ([`seal_entry`] for that version reports it).
    pub fn for_version(mut self, v: u32) -> EntryMeta {
        if v != u32::from(VERSION_1) {
            self.plain_sha256 = None;
        }
        if v == u32::from(VERSION) {
            self.sealed_sha256 = None;
        } else {
            self.sealed_blake3 = None;
        }
        self
    }

    /// The hash of the sealed bytes this entry's header lists: which one depends on the
    /// format (`check` made sure exactly one is there).
    fn sealed_digest(&self) -> (SealedHash, &str) {
        match (&self.sealed_sha256, &self.sealed_blake3) {
            (_, Some(blake3)) => (SealedHash::Blake3, blake3),
            (Some(sha256), None) => (SealedHash::Sha256, sha256),
            (None, None) => (SealedHash::Blake3, ""),
        }
    }
}

/// Which hash pins an entry's sealed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SealedHash {
    /// Versions 1 and 2.
    Sha256,
    /// Version 3.
    Blake3,
}

impl SealedHash {
    fn of_version(v: u32) -> SealedHash {
        if v == u32::from(VERSION) {
            SealedHash::Blake3
        } else {
            SealedHash::Sha256
        }
    }
}

/// The plaintext instruction file (D4): shown only for a package that verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instruction {
    /// The product's name.
    pub title: String,
    /// How to pay and unlock, in words.
    pub text: String,
    /// The price.
    pub amount: Amount,
    /// Where to send payment (an account, a bank reference).
    pub pay_to: String,
    /// The licence terms.
    pub licence: String,
}

/// The package header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Format version of the header: [`VERSION`] (3), or 1 or 2 for packages made before it.
    /// The package's version byte is the same number.
    pub v: u32,
    /// The sale.
    pub sale: Id,
    /// The product.
    pub product: Id,
    /// The sale's reference code (quote it when paying).
    pub reference: ReferenceCode,
    /// The instruction file.
    pub instruction: Instruction,
    /// The sealed entries, in file order.
    pub entries: Vec<EntryMeta>,
    /// The content key sealed under the unlock key (`seal` layout), hex.
    pub content_key_wrap: String,
    /// The signing node's Ed25519 public key, hex.
    pub node_key: String,
}

impl Header {
    /// The content key wrapped for `reference` under `unlock_key` (with a caller's nonce).
    pub fn wrap_content_key(
        content_key: &[u8; 32],
        unlock_key: &[u8; 32],
        reference: &ReferenceCode,
        nonce: &[u8; seal::NONCE_LEN],
    ) -> Result<String> {
        let aad = [WRAP_AAD, reference.as_str().as_bytes()].concat();
        Ok(hex::encode(seal::seal_with_nonce(
            unlock_key,
            nonce,
            &aad,
            content_key,
        )?))
    }

    /// The content key, if `unlock_key` is this package's.
    pub fn content_key(&self, unlock_key: &[u8; 32]) -> Result<Secret<[u8; 32]>> {
        let sealed = hex::decode(&self.content_key_wrap)
            .map_err(|_| PackageError::BadHeader("content_key_wrap is not hex".into()))?;
        let aad = [WRAP_AAD, self.reference.as_str().as_bytes()].concat();
        let key = seal::open(unlock_key, &aad, &sealed).map_err(|_| PackageError::WrongKey)?;
        let key: [u8; 32] = key
            .expose()
            .as_slice()
            .try_into()
            .map_err(|_| PackageError::WrongKey)?;
        Ok(Secret::new(key))
    }

    fn check(&self) -> Result<()> {
        let bad = |why: &str| Err(PackageError::BadHeader(why.into()));
        if !(u32::from(VERSION_1)..=u32::from(VERSION)).contains(&self.v) {
            return bad("header version is not 1, 2 or 3");
        }
        if self.entries.is_empty() || self.entries.len() > 64 {
            return bad("1 to 64 entries");
        }
        for e in &self.entries {
            let name_ok = !e.name.is_empty()
                && e.name.len() <= 200
                && !e.name.contains(['/', '\\', '\0'])
                && e.name != "."
                && e.name != "..";
            if !name_ok {
                return bad("an entry name is not a plain file name");
            }
            if e.sealed_len < stream::HEADER_LEN as u64 {
                return bad("an entry is shorter than a stream header");
            }
            // Version 1 lists the plaintext's hash for every entry, versions 2 and 3 for none.
            if e.plain_sha256.is_some() != (self.v == u32::from(VERSION_1)) {
                return bad("plain_sha256 is listed in version 1 headers only, for every entry");
            }
            let blake3 = self.v == u32::from(VERSION);
            if e.sealed_sha256.is_some() == blake3 || e.sealed_blake3.is_some() != blake3 {
                return bad(
                    "every entry lists sealed_sha256 in version 1 and 2 headers, sealed_blake3 \
                     in version 3 headers, and not the other",
                );
            }
        }
        Ok(())
    }
}

/// A verified package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    /// The header (instruction file included).
    pub header: Header,
    /// The package digest: SHA-256 of the header bytes (magic to header JSON), as signed.
    pub package_sha256: [u8; 32],
    /// The node key that signed it.
    pub signer: VerifyingKey,
    /// Offset of each entry in the file.
    pub offsets: Vec<u64>,
}

/// The package's opening bytes for `header`: magic, version, header length and the header's
/// canonical JSON. The signature covers exactly these bytes (the header lists every entry's
/// length and SHA-256, so it pins the entries too).
pub fn header_bytes(header: &Header) -> Result<Vec<u8>> {
    header.check()?;
    let json = canonical_json(header).map_err(|e| PackageError::BadHeader(e.to_string()))?;
    let len = u32::try_from(json.len())
        .ok()
        .filter(|l| *l <= HEADER_LEN_MAX)
        .ok_or_else(|| PackageError::BadHeader("header larger than 1 MiB".into()))?;
    let mut out = Vec::with_capacity(13 + json.len());
    out.extend_from_slice(MAGIC);
    // `check` allowed only versions 1 to 3.
    out.push(u8::try_from(header.v).unwrap_or(VERSION));
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

/// The trailer closing a package that opens with `header_bytes`: magic, the SHA-256 of those
/// bytes, and the node's signature over that digest. A node serving many sales of one
/// pre-sealed product makes each package from these two pieces and the shared sealed files,
/// without reading the product again.
pub fn trailer(header_bytes: &[u8], signer: &SigningKey) -> [u8; TRAILER_LEN] {
    let digest = tally_kernel::crypto::kdf::sha256(header_bytes);
    let signature = signer.sign(SIGNATURE_DOMAIN, &digest);
    let mut out = [0_u8; TRAILER_LEN];
    out[..8].copy_from_slice(TRAILER_MAGIC);
    out[8..40].copy_from_slice(&digest);
    out[40..].copy_from_slice(&signature.to_bytes());
    out
}

/// Total length of the package of `header` (header bytes, entries, trailer).
pub fn package_len(header_bytes: &[u8], header: &Header) -> u64 {
    header_bytes.len() as u64
        + header.entries.iter().map(|e| e.sealed_len).sum::<u64>()
        + TRAILER_LEN as u64
}

/// Writes a package: `entries` yields each entry's sealed bytes in the header's order. The
/// bytes are checked against the header as they pass (a wrong length or hash is refused).
/// Returns the package digest (the SHA-256 of the header bytes, which the trailer signs).
pub fn write_package<W: Write>(
    mut out: W,
    header: &Header,
    entries: &mut [&mut dyn Read],
    signer: &SigningKey,
) -> Result<[u8; 32]> {
    if entries.len() != header.entries.len() {
        return Err(PackageError::BadHeader(
            "entry count differs from the header".into(),
        ));
    }
    if header.node_key != signer.verifying_key().to_hex() {
        return Err(PackageError::BadHeader(
            "node_key is not the signer's".into(),
        ));
    }
    let head = header_bytes(header)?;
    out.write_all(&head)?;
    let mut buf = vec![0_u8; 256 * 1024];
    for (meta, source) in header.entries.iter().zip(entries.iter_mut()) {
        let (kind, listed) = meta.sealed_digest();
        let mut entry_hash = InlineHash::new(kind);
        let mut copied = 0_u64;
        loop {
            let n = source.read(&mut buf)?;
            if n == 0 {
                break;
            }
            entry_hash.update(&buf[..n]);
            out.write_all(&buf[..n])?;
            copied += n as u64;
        }
        if copied != meta.sealed_len || hex::encode(entry_hash.finish()) != listed {
            return Err(PackageError::EntryDamaged(meta.name.clone()));
        }
    }
    let trailer = trailer(&head, signer);
    out.write_all(&trailer)?;
    out.flush()?;
    Ok(trailer[8..40].try_into().expect("32 bytes"))
}

/// One entry for [`seal_package`]: its name and kind, and a plaintext source that yields
/// exactly `plain_len` bytes (the length fixes the header's length, which precedes the
/// entries in the file).
pub struct PlainEntry<'a> {
    /// File name to unpack to (no path separators).
    pub name: String,
    /// What it is.
    pub kind: EntryKind,
    /// Bytes `plain` yields; a source that yields more or fewer is refused.
    pub plain_len: u64,
    /// The plaintext.
    pub plain: &'a mut dyn Read,
    /// The stream's salt: fresh random bytes (fixed ones only for vectors).
    pub salt: [u8; stream::SALT_LEN],
    /// The stream's nonce prefix: fresh random bytes (fixed ones only for vectors).
    pub nonce_prefix: [u8; stream::NONCE_PREFIX_LEN],
}

/// Seals `entries` under `content_key` straight into a signed package in one pass: the bytes
/// are [`seal_entry`] of each entry, then [`write_package`] with `header` completed by their
/// [`EntryMeta`]s, without the sealed entries ever being written elsewhere and read back.
///
/// `header` carries everything but the entries (its `entries` must be empty) and the format
/// (`v`: 2, or 1 to write the old format with plaintext hashes). Since the
/// header precedes the entries and lists their hashes, `out` must be seekable: the header's
/// length is known from the plaintext lengths alone (hashes are fixed-length hex), so its
/// place is reserved (zeros, which no reader accepts as a header), the entries are sealed
/// after it, the trailer appended, and the header written into its place last. On return
/// `out` is positioned at the end of the package; after an error, what was written is not a
/// package (the header's place still holds zeros) and should be deleted. Returns the
/// completed header and the package digest.
pub fn seal_package<W: Write + Seek>(
    mut out: W,
    header: &Header,
    content_key: &[u8; 32],
    entries: &mut [PlainEntry<'_>],
    signer: &SigningKey,
) -> Result<(Header, [u8; 32])> {
    if !header.entries.is_empty() {
        return Err(PackageError::BadHeader(
            "seal_package lists the entries itself: pass a header without entries".into(),
        ));
    }
    if header.node_key != signer.verifying_key().to_hex() {
        return Err(PackageError::BadHeader(
            "node_key is not the signer's".into(),
        ));
    }
    // The header with every number final and every hash a placeholder of the final length.
    let mut reserved = header.clone();
    let hash_plain = header.v == u32::from(VERSION_1);
    let sealed_hash = SealedHash::of_version(header.v);
    for e in entries.iter() {
        reserved.entries.push(EntryMeta {
            name: e.name.clone(),
            kind: e.kind,
            sealed_len: sealed_len(e.plain_len).ok_or_else(|| {
                PackageError::BadHeader(format!("entry `{}` is too large", e.name))
            })?,
            sealed_sha256: (sealed_hash == SealedHash::Sha256).then(|| "0".repeat(64)),
            sealed_blake3: (sealed_hash == SealedHash::Blake3).then(|| "0".repeat(64)),
            plain_len: e.plain_len,
            plain_sha256: hash_plain.then(|| "0".repeat(64)),
        });
    }
    let reserved_len = header_bytes(&reserved)?.len();
    let start = out.stream_position()?;
    out.write_all(&vec![0_u8; reserved_len])?;
    let mut sealed = header.clone();
    std::thread::scope(|scope| -> Result<()> {
        let hashes = HashWorker::new(scope);
        for (e, expected) in entries.iter_mut().zip(&reserved.entries) {
            let mut plain = (&mut *e.plain).take(e.plain_len);
            let meta = seal_in(
                &hashes,
                content_key,
                Entry {
                    name: &e.name,
                    kind: e.kind,
                    salt: e.salt,
                    nonce_prefix: e.nonce_prefix,
                    hash_plain,
                    sealed_sha256: sealed_hash == SealedHash::Sha256,
                    sealed_blake3: sealed_hash == SealedHash::Blake3,
                },
                &mut plain,
                &mut out,
            )?;
            let mut more = [0_u8; 1];
            if meta.plain_len != e.plain_len || read_full(plain.get_mut(), &mut more)? > 0 {
                return Err(PackageError::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "entry `{}`: the plaintext is not the {} bytes declared",
                        e.name, e.plain_len
                    ),
                )));
            }
            assert_eq!(meta.sealed_len, expected.sealed_len, "the TALLYSTR layout");
            sealed.entries.push(meta);
        }
        Ok(())
    })?;
    let head = header_bytes(&sealed)?;
    assert_eq!(head.len(), reserved_len, "hashes are fixed-length hex");
    let trailer = trailer(&head, signer);
    out.write_all(&trailer)?;
    let end = out.stream_position()?;
    out.seek(SeekFrom::Start(start))?;
    out.write_all(&head)?;
    out.seek(SeekFrom::Start(end))?;
    out.flush()?;
    Ok((sealed, trailer[8..40].try_into().expect("32 bytes")))
}

/// Bytes of the `TALLYSTR` stream of `plain_len` bytes sealed by [`seal_entry`]: the header,
/// the plaintext, and one tag per chunk, the last one short or empty (`crypto.md`).
fn sealed_len(plain_len: u64) -> Option<u64> {
    let chunk = u64::from(stream::CHUNK_SIZE_DEFAULT);
    let tags = (plain_len / chunk + 1).checked_mul(stream::TAG_LEN as u64)?;
    plain_len
        .checked_add(stream::HEADER_LEN as u64)?
        .checked_add(tags)
}

/// Reads exactly `buf.len()` bytes or says how many were there.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(filled)
}

/// Verifies a whole package in constant memory and returns its header only if every byte is
/// as signed. With `trusted`, the signer must be that key.
pub fn inspect<R: Read>(r: R, trusted: Option<&VerifyingKey>) -> Result<Inspected> {
    std::thread::scope(|scope| verify_in(&HashWorker::new(scope), r, trusted, None))
        .map(|(inspected, _)| inspected)
}

/// [`inspect`] and [`unlock_entry`] in one pass over the package: verifies every byte as
/// [`inspect`] does and, as entry `index` passes, decrypts it to `out` and checks its plaintext
/// length and SHA-256. Returns what [`inspect`] returns and the bytes written.
///
/// The package is read once, so this needs no `Seek`; the price is that plaintext reaches
/// `out` before the end of the package has been verified. Like
/// [`stream::decrypt_stream`], the output is complete and authentic only if this returns
/// `Ok`: write it somewhere temporary and publish it only then. Errors come in [`inspect`]'s
/// order (a damaged, altered or untrusted package is reported as such even when decryption
/// also failed), then [`unlock_entry`]'s.
pub fn open_package<R: Read, W: Write>(
    r: R,
    trusted: Option<&VerifyingKey>,
    unlock_key: &[u8; 32],
    index: usize,
    mut out: W,
) -> Result<(Inspected, u64)> {
    std::thread::scope(|scope| {
        let unlock = Some((unlock_key, index, &mut out as &mut dyn Write));
        verify_in(&HashWorker::new(scope), r, trusted, unlock)
    })
}

/// What [`verify_in`] decrypts on the way: the unlock key, the entry and where it goes.
type UnlockOnTheWay<'a> = Option<(&'a [u8; 32], usize, &'a mut dyn Write)>;

/// The body of [`inspect`] and [`open_package`].
fn verify_in<R: Read>(
    hashes: &HashWorker<'_, '_>,
    mut r: R,
    trusted: Option<&VerifyingKey>,
    mut unlock: UnlockOnTheWay<'_>,
) -> Result<(Inspected, u64)> {
    let mut hash = Sha256Stream::new();
    let mut fixed = [0_u8; 13];
    let got = read_full(&mut r, &mut fixed)?;
    if got < 8 || &fixed[..8] != MAGIC {
        return Err(if got < 8 && MAGIC.starts_with(&fixed[..got]) {
            PackageError::Truncated(format!("{got} bytes, not even the magic"))
        } else {
            PackageError::NotAPackage
        });
    }
    if got < 13 {
        return Err(PackageError::Truncated(
            "the header length is missing".into(),
        ));
    }
    if !(VERSION_1..=VERSION).contains(&fixed[8]) {
        return Err(PackageError::UnsupportedVersion(fixed[8]));
    }
    let len = u32::from_be_bytes([fixed[9], fixed[10], fixed[11], fixed[12]]);
    if len == 0 || len > HEADER_LEN_MAX {
        return Err(PackageError::BadHeader(format!(
            "header length {len} is out of range"
        )));
    }
    hash.update(&fixed);
    let mut json = vec![0_u8; len as usize];
    let got = read_full(&mut r, &mut json)?;
    if got < json.len() {
        return Err(PackageError::Truncated(format!(
            "the header has {got} of {len} bytes"
        )));
    }
    hash.update(&json);
    let header: Header =
        serde_json::from_slice(&json).map_err(|e| PackageError::BadHeader(e.to_string()))?;
    if !tally_kernel::crypto::canonical::is_canonical(&json) {
        return Err(PackageError::BadHeader("not canonical JSON".into()));
    }
    header.check()?;
    if header.v != u32::from(fixed[8]) {
        return Err(PackageError::BadHeader(format!(
            "header version {} in a version {} package",
            header.v, fixed[8]
        )));
    }
    // What to unlock on the way, checked before any entry byte is read.
    let mut unlock = match unlock.take() {
        Some((unlock_key, index, out)) => {
            let meta = header
                .entries
                .get(index)
                .ok_or_else(|| PackageError::BadHeader(format!("no entry {index}")))?;
            Some((header.content_key(unlock_key)?, index, meta, out))
        }
        None => None,
    };
    let mut offset = 13 + u64::from(len);
    let mut offsets = Vec::with_capacity(header.entries.len());
    let digest = hash.finish();
    let mut buf = vec![0_u8; COPY_BUF_BYTES];
    // The unlocked entry's outcome, reported once the package itself verified.
    let mut unlocked: Option<Result<u64>> = None;
    for (i, e) in header.entries.iter().enumerate() {
        offsets.push(offset);
        let unlocking = matches!(&unlock, Some((_, index, _, _)) if *index == i);
        let (kind, listed) = e.sealed_digest();
        // SHA-256 of bytes this thread also decrypts goes to the hashing thread; BLAKE3 of the
        // entry being unlocked goes to the stream's helper thread (below), and of the others
        // (only hashed) stays here.
        let mut entry = HashingReader {
            inner: (&mut r).take(e.sealed_len),
            sha256: (kind == SealedHash::Sha256).then(|| {
                if unlocking {
                    hashes.hash()
                } else {
                    hashes.inline()
                }
            }),
            blake3: (kind == SealedHash::Blake3).then(Box::default),
            read: 0,
        };
        match &mut unlock {
            Some((content_key, index, meta, out)) if *index == i => {
                let mut plain = HashingWriter {
                    inner: &mut **out,
                    sha256: meta.plain_sha256.as_ref().map(|_| hashes.hash()),
                    written: 0,
                };
                // BLAKE3 goes with the stream, which hashes on its helper thread; SHA-256
                // stays with the reader (it has a thread of its own).
                let mut blake3 = entry.blake3.take();
                let decrypted = stream::decrypt_stream_hashing(
                    content_key.expose(),
                    &mut entry,
                    &mut plain,
                    blake3.as_deref_mut().map(|h| h as &mut (dyn Write + Send)),
                );
                entry.blake3 = blake3;
                let outcome = match decrypted {
                    // Reading the package or writing the output failed: nothing more to learn.
                    Err(CryptoError::Io(e)) => return Err(e.into()),
                    Err(e) => Err(e.into()),
                    Ok(_) => plain.check(meta),
                };
                unlocked = Some(outcome);
                // Whatever the stream left (a damaged entry may end early) is hashed too.
                std::io::copy(&mut entry, &mut std::io::sink())?;
            }
            _ => loop {
                let got = read_full(&mut entry, &mut buf)?;
                if got < buf.len() {
                    break;
                }
            },
        }
        if entry.read < e.sealed_len {
            return Err(PackageError::Truncated(format!(
                "entry `{}` has {} of {} bytes",
                e.name, entry.read, e.sealed_len
            )));
        }
        if hex::encode(entry.finish()?) != listed {
            return Err(PackageError::EntryDamaged(e.name.clone()));
        }
        offset += e.sealed_len;
    }
    let mut trailer = [0_u8; TRAILER_LEN];
    let got = read_full(&mut r, &mut trailer)?;
    if got < TRAILER_LEN {
        return Err(PackageError::Truncated(format!(
            "the signature trailer has {got} of {TRAILER_LEN} bytes"
        )));
    }
    if &trailer[..8] != TRAILER_MAGIC {
        return Err(PackageError::Altered);
    }
    if trailer[8..40] != digest {
        return Err(PackageError::Altered);
    }
    let signer = VerifyingKey::from_hex(&header.node_key)
        .map_err(|_| PackageError::BadHeader("node_key is not an Ed25519 key".into()))?;
    let signature =
        Signature::from_slice(&trailer[40..]).map_err(|_| PackageError::BadSignature)?;
    signer
        .verify(SIGNATURE_DOMAIN, &digest, &signature)
        .map_err(|_| PackageError::BadSignature)?;
    if let Some(t) = trusted
        && *t != signer
    {
        return Err(PackageError::UntrustedSigner {
            expected: t.fingerprint(),
            found: signer.fingerprint(),
        });
    }
    let mut extra = [0_u8; 4096];
    let mut trailing = 0_u64;
    loop {
        let n = read_full(&mut r, &mut extra)?;
        trailing += n as u64;
        if n < extra.len() {
            break;
        }
    }
    if trailing > 0 {
        return Err(PackageError::TrailingBytes(trailing));
    }
    let written = unlocked.transpose()?.unwrap_or(0);
    Ok((
        Inspected {
            header,
            package_sha256: digest,
            signer,
            offsets,
        },
        written,
    ))
}

/// Decrypts entry `index` of a package that [`inspect`] verified, to `out`, and checks its
/// plaintext SHA-256. Returns the bytes written.
pub fn unlock_entry<R: Read + Seek, W: Write>(
    r: &mut R,
    inspected: &Inspected,
    unlock_key: &[u8; 32],
    index: usize,
    out: W,
) -> Result<u64> {
    let meta = inspected
        .header
        .entries
        .get(index)
        .ok_or_else(|| PackageError::BadHeader(format!("no entry {index}")))?;
    let content_key = inspected.header.content_key(unlock_key)?;
    r.seek(SeekFrom::Start(inspected.offsets[index]))?;
    std::thread::scope(|scope| {
        let hashes = HashWorker::new(scope);
        let mut hashing = HashingWriter {
            inner: out,
            sha256: meta.plain_sha256.as_ref().map(|_| hashes.hash()),
            written: 0,
        };
        stream::decrypt_stream(content_key.expose(), r.take(meta.sealed_len), &mut hashing)?;
        hashing.check(meta)
    })
}

/// Seals one entry's plaintext under the content key (caller's salt and nonce prefix, so
/// vectors are reproducible; use fresh random ones otherwise) for a package of format `v`,
/// and returns its [`EntryMeta`] with the hash of the sealed bytes that format lists
/// (BLAKE3 in version 3, SHA-256 before) and the plaintext's SHA-256 (for the product's
/// record; [`EntryMeta::for_version`] drops it for a version 2 or 3 header).
#[allow(clippy::too_many_arguments)] // the format, the key, the listing, both streams, the randomness
pub fn seal_entry<R: Read, W: Write>(
    v: u32,
    content_key: &[u8; 32],
    name: &str,
    kind: EntryKind,
    plain: R,
    out: W,
    salt: [u8; stream::SALT_LEN],
    nonce_prefix: [u8; stream::NONCE_PREFIX_LEN],
) -> Result<EntryMeta> {
    if !(u32::from(VERSION_1)..=u32::from(VERSION)).contains(&v) {
        return Err(PackageError::BadHeader(format!("no package format {v}")));
    }
    let sealed_hash = SealedHash::of_version(v);
    std::thread::scope(|scope| {
        seal_in(
            &HashWorker::new(scope),
            content_key,
            Entry {
                name,
                kind,
                salt,
                nonce_prefix,
                hash_plain: true,
                sealed_sha256: sealed_hash == SealedHash::Sha256,
                sealed_blake3: sealed_hash == SealedHash::Blake3,
            },
            plain,
            out,
        )
    })
}

/// One entry to seal: its listing, its stream's randomness, and which hashes to compute.
struct Entry<'a> {
    name: &'a str,
    kind: EntryKind,
    salt: [u8; stream::SALT_LEN],
    nonce_prefix: [u8; stream::NONCE_PREFIX_LEN],
    hash_plain: bool,
    sealed_sha256: bool,
    sealed_blake3: bool,
}

/// The body of [`seal_entry`] and [`seal_package`]: the stream encrypts (and hashes the sealed
/// bytes with BLAKE3, where asked) on its own helper thread while this one reads and writes;
/// SHA-256 (of the plaintext or the sealed bytes, where asked) goes to the hashing thread.
fn seal_in<R: Read, W: Write>(
    hashes: &HashWorker<'_, '_>,
    content_key: &[u8; 32],
    entry: Entry<'_>,
    plain: R,
    out: W,
) -> Result<EntryMeta> {
    let mut plain = HashingReader {
        inner: plain,
        sha256: entry.hash_plain.then(|| hashes.hash()),
        blake3: None,
        read: 0,
    };
    let mut sealed = HashingWriter {
        inner: out,
        sha256: entry.sealed_sha256.then(|| hashes.hash()),
        written: 0,
    };
    // BLAKE3 goes with the stream, which hashes on its helper thread.
    let mut blake3: Option<Box<blake3::Hasher>> = entry.sealed_blake3.then(Box::default);
    stream::encrypt_stream_hashing(
        content_key,
        &entry.salt,
        &entry.nonce_prefix,
        &mut plain,
        &mut sealed,
        stream::CHUNK_SIZE_DEFAULT,
        blake3.as_deref_mut().map(|h| h as &mut (dyn Write + Send)),
    )?;
    let sealed_sha256 = sealed.sha256.map(PipedSha256::finish).transpose()?;
    let sealed_blake3 = blake3.map(|h| *h.finalize().as_bytes());
    let plain_sha256 = plain.sha256.map(PipedSha256::finish).transpose()?;
    Ok(EntryMeta {
        name: entry.name.to_string(),
        kind: entry.kind,
        sealed_len: sealed.written,
        sealed_sha256: sealed_sha256.map(hex::encode),
        sealed_blake3: sealed_blake3.map(hex::encode),
        plain_len: plain.read,
        plain_sha256: plain_sha256.map(hex::encode),
    })
}

/// The delivery acknowledgement (D4): what the buyer sends back after the package opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledgement {
    /// Format version.
    pub v: u32,
    /// The sale.
    pub sale: Id,
    /// Its reference code.
    pub reference: ReferenceCode,
    /// SHA-256 of the package that verified, hex.
    pub package_sha256: String,
}

impl Inspected {
    /// The acknowledgement of this package (sign it with the buyer's key when there is one).
    pub fn acknowledgement(&self) -> Acknowledgement {
        Acknowledgement {
            v: 1,
            sale: self.header.sale,
            reference: self.header.reference.clone(),
            package_sha256: hex::encode(self.package_sha256),
        }
    }
}

// ----- hashing beside the I/O --------------------------------------------------------------
//
// Versions 1 and 2 hash an entry's sealed bytes with SHA-256 (and version 1 its plaintext
// too), and a SHA-256 pass costs more CPU than the encryption. So those hashes of a large
// entry run on one helper thread (version 3's BLAKE3 runs on the stream's own helper, see
// `stream::encrypt_stream_hashing`), fed batches through a small pool of buffers per hash, while
// the calling thread reads, encrypts or decrypts, and writes: two threads with about equal
// work, which is what a 2-core machine can use. The caller's `Read` and `Write` never leave
// its thread (they need not be `Send`); memory is bounded by the pools, whatever the size of
// the entry. Rejected, measured on 2 cores: a thread per hash (three busy threads on two cores
// take turns, and the calling thread, which has the most work, got two thirds of a core);
// hashing in larger blocks (SHA-NI runs at the same rate from 64 KiB up); hashing bytes that
// are only hashed (`inspect`, `write_package`) on the helper thread (moving them to the other
// core cost more than it saved); a thread pool crate (a new dependency).

/// Bytes hashed inline before the helper thread takes over: starting one costs tens of µs,
/// which small packages (registration files, vectors, the fuzzer's inputs) should not pay.
/// The tests use a lower bound, so that most of their packages take the threaded path.
const HASH_INLINE_BYTES: u64 = if cfg!(test) { 64 * 1024 } else { 4 << 20 };
/// Bytes handed to the hashing thread at a time. Small batches keep the bytes in flight
/// within the cores' caches: measured on 2 cores, a thread hashing what another one copied
/// in ran at about 1,550 MiB/s with 64 KiB batches and 1,150 MiB/s with 1 MiB ones.
const HASH_BATCH_BYTES: usize = 64 * 1024;
/// Buffers per hash (the one being filled, the ones queued or being hashed): at most 1 MiB
/// per hash. With 4 (256 KiB) the two threads of a version 2 seal waited on each other: a
/// profile of a 512 MiB seal showed neither busy all the time; 16 gave 798 → 825–847 MiB/s
/// (single runs, ±10% noise on this machine).
const HASH_BATCHES: usize = 16;
/// The buffer for copying and checking sealed bytes.
const COPY_BUF_BYTES: usize = 256 * 1024;

/// A batch of bytes on its way to the hashing thread; it may hold plaintext, so it is wiped
/// when dropped.
type Batch = Secret<Vec<u8>>;

/// What the hashing thread is asked to do, for the hash numbered `id`.
enum HashJob {
    /// Go on from `hash` (the bytes hashed inline so far); return batches through `free`.
    Start {
        id: usize,
        hash: Sha256Stream,
        free: mpsc::Sender<Batch>,
    },
    Update {
        id: usize,
        batch: Batch,
    },
    /// Send the digest through `digest` and forget the hash.
    Finish {
        id: usize,
        digest: mpsc::Sender<[u8; 32]>,
    },
}

/// The hashing thread of one operation, started when a hash first outgrows
/// `HASH_INLINE_BYTES`; it ends when this is dropped (the scope then joins it).
struct HashWorker<'scope, 'env> {
    scope: &'scope Scope<'scope, 'env>,
    jobs: std::cell::OnceCell<mpsc::Sender<HashJob>>,
    hashes: std::cell::Cell<usize>,
}

fn hash_thread_stopped() -> std::io::Error {
    std::io::Error::other("the hashing thread stopped")
}

impl<'scope, 'env> HashWorker<'scope, 'env> {
    fn new(scope: &'scope Scope<'scope, 'env>) -> Self {
        HashWorker {
            scope,
            jobs: std::cell::OnceCell::new(),
            hashes: std::cell::Cell::new(0),
        }
    }

    /// A new hash, handed to this worker's thread once it outgrows `HASH_INLINE_BYTES`: for
    /// bytes this thread also encrypts or decrypts.
    fn hash(&self) -> PipedSha256<'_, 'scope, 'env> {
        self.new_hash(HASH_INLINE_BYTES)
    }

    /// A new hash that stays on this thread: for bytes that are only hashed, where moving them
    /// to the other core costs more than it saves (measured: `inspect` and `write_package` of
    /// 1 GiB were no faster, or slower, with the hash on a helper thread).
    fn inline(&self) -> PipedSha256<'_, 'scope, 'env> {
        self.new_hash(u64::MAX)
    }

    fn new_hash(&self, inline_bytes_max: u64) -> PipedSha256<'_, 'scope, 'env> {
        let id = self.hashes.get();
        self.hashes.set(id + 1);
        PipedSha256 {
            worker: self,
            id,
            inline_bytes_max,
            seen: 0,
            state: PipeState::Inline(Sha256Stream::new()),
        }
    }

    fn send(&self, job: HashJob) -> std::io::Result<()> {
        if self.jobs.get().is_none() {
            let (jobs, queue) = mpsc::channel::<HashJob>();
            std::thread::Builder::new()
                .name("tally-sha256".into())
                .spawn_scoped(self.scope, move || hash_jobs(queue))?;
            // Only this thread fills the cell, and it was empty just above.
            let _ = self.jobs.set(jobs);
        }
        match self.jobs.get() {
            Some(jobs) => jobs.send(job).map_err(|_| hash_thread_stopped()),
            None => Err(hash_thread_stopped()),
        }
    }
}

/// The hashing thread: runs `queue`'s jobs until every sender is gone.
fn hash_jobs(queue: mpsc::Receiver<HashJob>) {
    let mut hashes: Vec<Option<(Sha256Stream, mpsc::Sender<Batch>)>> = Vec::new();
    for job in queue {
        match job {
            HashJob::Start { id, hash, free } => {
                if hashes.len() <= id {
                    hashes.resize_with(id + 1, || None);
                }
                hashes[id] = Some((hash, free));
            }
            HashJob::Update { id, mut batch } => {
                if let Some(Some((hash, free))) = hashes.get_mut(id) {
                    hash.update(batch.expose());
                    batch.expose_mut().clear();
                    // The hash's owner may be gone (an error on its side).
                    let _ = free.send(batch);
                }
            }
            HashJob::Finish { id, digest } => {
                if let Some((hash, _)) = hashes.get_mut(id).and_then(Option::take) {
                    let _ = digest.send(hash.finish());
                }
            }
        }
    }
}

/// SHA-256 of bytes that arrive in pieces: inline up to `HASH_INLINE_BYTES`, on the worker's
/// thread beyond.
struct PipedSha256<'w, 'scope, 'env> {
    worker: &'w HashWorker<'scope, 'env>,
    id: usize,
    /// Bytes hashed on this thread before the worker's thread takes over.
    inline_bytes_max: u64,
    seen: u64,
    state: PipeState,
}

enum PipeState {
    Inline(Sha256Stream),
    Threaded {
        /// The batch being filled.
        batch: Batch,
        free: mpsc::Receiver<Batch>,
        allocated: usize,
    },
}

impl PipedSha256<'_, '_, '_> {
    fn update(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        self.seen += bytes.len() as u64;
        if let PipeState::Inline(hash) = &mut self.state {
            if self.seen <= self.inline_bytes_max {
                hash.update(bytes);
                return Ok(());
            }
            let (returns, free) = mpsc::channel();
            self.worker.send(HashJob::Start {
                id: self.id,
                hash: std::mem::take(hash),
                free: returns,
            })?;
            self.state = PipeState::Threaded {
                batch: Secret::new(Vec::with_capacity(HASH_BATCH_BYTES)),
                free,
                allocated: 1,
            };
        }
        let PipeState::Threaded {
            batch,
            free,
            allocated,
        } = &mut self.state
        else {
            return Ok(());
        };
        while !bytes.is_empty() {
            let filling = batch.expose_mut();
            let n = (HASH_BATCH_BYTES - filling.len()).min(bytes.len());
            filling.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if filling.len() == HASH_BATCH_BYTES {
                let next = match free.try_recv() {
                    Ok(batch) => batch,
                    Err(_) if *allocated < HASH_BATCHES => {
                        *allocated += 1;
                        Secret::new(Vec::with_capacity(HASH_BATCH_BYTES))
                    }
                    Err(_) => free.recv().map_err(|_| hash_thread_stopped())?,
                };
                let full = std::mem::replace(batch, next);
                self.worker.send(HashJob::Update {
                    id: self.id,
                    batch: full,
                })?;
            }
        }
        Ok(())
    }

    fn finish(self) -> std::io::Result<[u8; 32]> {
        match self.state {
            PipeState::Inline(hash) => Ok(hash.finish()),
            PipeState::Threaded { batch, .. } => {
                if !batch.expose().is_empty() {
                    self.worker.send(HashJob::Update { id: self.id, batch })?;
                }
                let (digest, reply) = mpsc::channel();
                self.worker.send(HashJob::Finish {
                    id: self.id,
                    digest,
                })?;
                reply.recv().map_err(|_| hash_thread_stopped())
            }
        }
    }
}

/// A writer that counts, and hashes with SHA-256 when asked (a BLAKE3 of written bytes is the
/// stream's to compute: see `seal_in`).
struct HashingWriter<'w, 'scope, 'env, W> {
    inner: W,
    sha256: Option<PipedSha256<'w, 'scope, 'env>>,
    written: u64,
}

impl<W> HashingWriter<'_, '_, '_, W> {
    /// The bytes written, if they are `meta`'s plaintext: its length, and its hash where the
    /// header lists one (version 1).
    fn check(self, meta: &EntryMeta) -> Result<u64> {
        let digest = self.sha256.map(PipedSha256::finish).transpose()?;
        if self.written != meta.plain_len || digest.map(hex::encode) != meta.plain_sha256 {
            return Err(PackageError::EntryDamaged(meta.name.clone()));
        }
        Ok(self.written)
    }
}

impl<W: Write> Write for HashingWriter<'_, '_, '_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(hash) = &mut self.sha256 {
            hash.update(&buf[..n])?;
        }
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that counts, and hashes with what is there: SHA-256 (on the hashing thread or
/// inline) and BLAKE3 (inline: the bytes of an entry that is only verified, and what the
/// stream left of an unlocked one).
struct HashingReader<'w, 'scope, 'env, R> {
    inner: R,
    sha256: Option<PipedSha256<'w, 'scope, 'env>>,
    blake3: Option<Box<blake3::Hasher>>,
    read: u64,
}

impl<R> HashingReader<'_, '_, '_, R> {
    /// The digest of the bytes read: BLAKE3 if it hashed with it, else SHA-256 (an entry's
    /// sealed bytes are hashed with one of the two).
    fn finish(self) -> std::io::Result<[u8; 32]> {
        match (self.blake3, self.sha256) {
            (Some(hash), _) => Ok(*hash.finalize().as_bytes()),
            (None, Some(hash)) => hash.finish(),
            (None, None) => Ok([0; 32]),
        }
    }
}

impl<R: Read> Read for HashingReader<'_, '_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(hash) = &mut self.sha256 {
            hash.update(&buf[..n])?;
        }
        if let Some(hash) = &mut self.blake3 {
            hash.update(&buf[..n]);
        }
        self.read += n as u64;
        Ok(n)
    }
}

/// A hash over bytes this thread only copies ([`write_package`]).
enum InlineHash {
    Sha256(Sha256Stream),
    Blake3(Box<blake3::Hasher>),
}

impl InlineHash {
    fn new(kind: SealedHash) -> InlineHash {
        match kind {
            SealedHash::Sha256 => InlineHash::Sha256(Sha256Stream::new()),
            SealedHash::Blake3 => InlineHash::Blake3(Box::default()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            InlineHash::Sha256(hash) => hash.update(bytes),
            InlineHash::Blake3(hash) => {
                hash.update(bytes);
            }
        }
    }

    fn finish(self) -> [u8; 32] {
        match self {
            InlineHash::Sha256(hash) => hash.finish(),
            InlineHash::Blake3(hash) => *hash.finalize().as_bytes(),
        }
    }
}

pub mod notification;
pub mod sale;

#[cfg(test)]
mod tests;

/// The one-pass functions against the two-step ones, on entries small enough to hash inline
/// and large enough to hash on the helper thread.
#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly by design.
mod one_pass_tests {
    use super::*;
    use std::io::Cursor;

    const CONTENT_KEY: [u8; 32] = [0x42; 32];

    fn node() -> SigningKey {
        SigningKey::from_seed(&[9; 32])
    }

    fn bytes(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect()
    }

    /// A sale's header without entries, and its unlock key (format version 2).
    fn sale() -> (Header, [u8; 32]) {
        sale_v(u32::from(VERSION))
    }

    /// A sale's header of format `v` without entries, and its unlock key.
    fn sale_v(v: u32) -> (Header, [u8; 32]) {
        let code = ReferenceCode::new(
            Id::new(),
            "buyer",
            Timestamp(1_767_225_600_000_000),
            [7; 16],
        );
        let unlock = *code.unlock_key(b"node secret").unwrap().expose();
        let header = Header {
            v,
            sale: Id::new(),
            product: Id::new(),
            reference: code.clone(),
            instruction: Instruction {
                title: "Song".into(),
                text: "Pay.".into(),
                amount: Amount::new(990, tally_kernel::Currency::from_code("EUR").unwrap()),
                pay_to: "account".into(),
                licence: "Personal use.".into(),
            },
            entries: Vec::new(),
            content_key_wrap: Header::wrap_content_key(&CONTENT_KEY, &unlock, &code, &[5; 24])
                .unwrap(),
            node_key: node().verifying_key().to_hex(),
        };
        (header, unlock)
    }

    /// The package of `plains` in one pass, and the same package made in two steps (format
    /// version 2).
    fn both_ways(plains: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>, Header, [u8; 32]) {
        both_ways_v(plains, u32::from(VERSION))
    }

    /// [`both_ways`] in format `v`.
    fn both_ways_v(plains: &[Vec<u8>], v: u32) -> (Vec<u8>, Vec<u8>, Header, [u8; 32]) {
        let (header, unlock) = sale_v(v);
        let mut sources: Vec<&[u8]> = plains.iter().map(Vec::as_slice).collect();
        let mut entries: Vec<PlainEntry<'_>> = sources
            .iter_mut()
            .enumerate()
            .map(|(i, plain)| PlainEntry {
                name: format!("entry{i}.bin"),
                kind: EntryKind::Product,
                plain_len: plain.len() as u64,
                plain,
                salt: [i as u8; stream::SALT_LEN],
                nonce_prefix: [i as u8 + 100; stream::NONCE_PREFIX_LEN],
            })
            .collect();
        let mut one_pass = Cursor::new(b"kept".to_vec());
        one_pass.set_position(4);
        let (sealed_header, digest) =
            seal_package(&mut one_pass, &header, &CONTENT_KEY, &mut entries, &node()).unwrap();
        assert_eq!(
            one_pass.position(),
            one_pass.get_ref().len() as u64,
            "left at the end"
        );
        let one_pass = one_pass.into_inner();
        assert_eq!(
            &one_pass[..4],
            b"kept",
            "what was before the package is left alone"
        );
        let one_pass = one_pass[4..].to_vec();

        let mut sealed = Vec::new();
        let mut two_step_header = header.clone();
        for (i, plain) in plains.iter().enumerate() {
            let mut entry = Vec::new();
            two_step_header.entries.push(
                seal_entry(
                    v,
                    &CONTENT_KEY,
                    &format!("entry{i}.bin"),
                    EntryKind::Product,
                    plain.as_slice(),
                    &mut entry,
                    [i as u8; stream::SALT_LEN],
                    [i as u8 + 100; stream::NONCE_PREFIX_LEN],
                )
                .unwrap()
                .for_version(v),
            );
            sealed.push(entry);
        }
        let mut readers: Vec<&[u8]> = sealed.iter().map(Vec::as_slice).collect();
        let mut readers: Vec<&mut dyn Read> =
            readers.iter_mut().map(|r| r as &mut dyn Read).collect();
        let mut two_step = Vec::new();
        let two_step_digest =
            write_package(&mut two_step, &two_step_header, &mut readers, &node()).unwrap();
        assert_eq!(sealed_header, two_step_header);
        assert_eq!(digest, two_step_digest);
        (one_pass, two_step, sealed_header, unlock)
    }

    #[test]
    fn one_pass_and_two_steps_make_and_open_the_same_package() {
        for v in [VERSION_1, VERSION_2, VERSION] {
            one_pass_and_two_steps_agree(u32::from(v));
        }
    }

    fn one_pass_and_two_steps_agree(v: u32) {
        // 300 kB crosses HASH_INLINE_BYTES, so its hashes run on the helper thread; 1.1 MiB
        // crosses the stream's inline part, so its chunks are sealed and opened on the
        // stream's helper thread; an exact multiple of the 64 KiB stream chunk ends with an
        // empty last chunk, and so does an empty entry.
        let plains = vec![
            bytes(300_017, 1),
            bytes((1 << 20) + 100_003, 6),
            bytes(1000, 2),
            bytes(256 << 10, 3),
            Vec::new(),
        ];
        let (one_pass, two_step, header, unlock) = both_ways_v(&plains, v);
        assert_eq!(one_pass, two_step);
        assert_eq!(
            u32::from(one_pass[8]),
            v,
            "the version byte is the header's"
        );
        let inspected = inspect(one_pass.as_slice(), Some(&node().verifying_key())).unwrap();
        assert_eq!(inspected.header, header);
        for (index, plain) in plains.iter().enumerate() {
            assert_eq!(
                header.entries[index].plain_sha256,
                (v == u32::from(VERSION_1)).then(|| hex::encode(kdf_sha256(plain)))
            );
            let mut out = Vec::new();
            let (opened, written) = open_package(
                one_pass.as_slice(),
                Some(&node().verifying_key()),
                &unlock,
                index,
                &mut out,
            )
            .unwrap();
            assert_eq!(
                (opened, written, &out),
                (inspected.clone(), plain.len() as u64, plain)
            );
            let mut out = Vec::new();
            unlock_entry(
                &mut Cursor::new(&one_pass),
                &inspected,
                &unlock,
                index,
                &mut out,
            )
            .unwrap();
            assert_eq!(&out, plain);
        }
    }

    fn kdf_sha256(bytes: &[u8]) -> [u8; 32] {
        tally_kernel::crypto::kdf::sha256(bytes)
    }

    #[test]
    fn open_package_refuses_what_inspect_refuses_first() {
        for v in [VERSION_1, VERSION_2, VERSION] {
            open_package_refuses_first_what_inspect_refuses(u32::from(v));
        }
    }

    fn open_package_refuses_first_what_inspect_refuses(v: u32) {
        let plains = vec![bytes(400_000, 4), bytes(300, 5)];
        let (package, _, header, unlock) = both_ways_v(&plains, v);
        let open = |bytes: &[u8], key: &[u8; 32], index: usize| {
            open_package(bytes, None, key, index, std::io::sink()).map(|(_, n)| n)
        };
        assert!(matches!(
            open(&package, &[1; 32], 0),
            Err(PackageError::WrongKey)
        ));
        assert!(matches!(
            open(&package, &unlock, 2),
            Err(PackageError::BadHeader(_))
        ));
        let entry0 = inspect(package.as_slice(), None).unwrap().offsets[0] as usize;
        // A flipped bit in the entry being unlocked: its stream fails to decrypt too, but the
        // package is reported damaged, as inspect reports it.
        for at in [entry0 + 5, entry0 + 300_000] {
            let mut bad = package.clone();
            bad[at] ^= 1;
            assert!(
                matches!(open(&bad, &unlock, 0), Err(PackageError::EntryDamaged(n)) if n == "entry0.bin"),
                "byte {at}"
            );
        }
        for cut in [entry0 + 10, entry0 + 200_000, package.len() - 1] {
            assert!(matches!(
                open(&package[..cut], &unlock, 0),
                Err(PackageError::Truncated(_))
            ));
        }
        let mut altered = package.clone();
        let digest_at = package.len() - TRAILER_LEN + 8;
        altered[digest_at] ^= 1;
        assert!(matches!(
            open(&altered, &unlock, 0),
            Err(PackageError::Altered)
        ));
        let other = SigningKey::from_seed(&[10; 32]).verifying_key();
        assert!(matches!(
            open_package(
                package.as_slice(),
                Some(&other),
                &unlock,
                1,
                std::io::sink()
            ),
            Err(PackageError::UntrustedSigner { .. })
        ));
        let mut longer = package.clone();
        longer.push(0);
        assert!(matches!(
            open(&longer, &unlock, 1),
            Err(PackageError::TrailingBytes(1))
        ));
        assert_eq!(open(&package, &unlock, 1).unwrap(), 300);
        assert_eq!(header.entries.len(), 2);
    }

    #[test]
    fn seal_package_refuses_a_plaintext_of_another_length_and_a_filled_header() {
        let (header, _) = sale();
        let seal = |header: &Header, declared: u64, plain: &[u8]| {
            let mut plain = plain;
            seal_package(
                Cursor::new(Vec::new()),
                header,
                &CONTENT_KEY,
                &mut [PlainEntry {
                    name: "p".into(),
                    kind: EntryKind::Product,
                    plain_len: declared,
                    plain: &mut plain,
                    salt: [1; stream::SALT_LEN],
                    nonce_prefix: [2; stream::NONCE_PREFIX_LEN],
                }],
                &node(),
            )
        };
        let data = bytes(200_000, 6);
        assert!(seal(&header, data.len() as u64, &data).is_ok());
        for declared in [data.len() as u64 - 1, data.len() as u64 + 1, 0] {
            assert!(
                matches!(seal(&header, declared, &data), Err(PackageError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidInput),
                "declared {declared}"
            );
        }
        let (filled, _) = {
            let (one_pass, _, filled, unlock) = both_ways(&[b"x".to_vec()]);
            assert!(!one_pass.is_empty());
            (filled, unlock)
        };
        assert!(matches!(
            seal(&filled, 1, b"x"),
            Err(PackageError::BadHeader(_))
        ));
        let mut foreign = header.clone();
        foreign.node_key = SigningKey::from_seed(&[1; 32]).verifying_key().to_hex();
        assert!(matches!(
            seal(&foreign, 1, b"x"),
            Err(PackageError::BadHeader(_))
        ));
    }
}
