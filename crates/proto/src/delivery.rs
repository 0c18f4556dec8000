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
use tally_kernel::crypto::canonical::canonical_json;
use tally_kernel::crypto::kdf::{Sha256Stream, hkdf_sha256};
use tally_kernel::crypto::{CryptoError, Signature, SigningKey, VerifyingKey, seal, stream};
use tally_kernel::{Amount, Id, Secret, Timestamp};

/// Package magic.
pub const MAGIC: &[u8; 8] = b"TALLYPKG";
/// Trailer magic.
pub const TRAILER_MAGIC: &[u8; 8] = b"TALLYSIG";
/// Format version written by this code.
pub const VERSION: u8 = 1;
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
    #[error("package version {0} is not supported (this reader knows version 1)")]
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
    /// SHA-256 of the sealed bytes, hex.
    pub sealed_sha256: String,
    /// Bytes once unlocked.
    pub plain_len: u64,
    /// SHA-256 once unlocked, hex: the buyer checks the product against it.
    pub plain_sha256: String,
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
    /// Format version of the header (1).
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
        if self.v != 1 {
            return bad("header version is not 1");
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
    out.push(VERSION);
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
        let mut entry_hash = Sha256Stream::new();
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
        if copied != meta.sealed_len || hex::encode(entry_hash.finish()) != meta.sealed_sha256 {
            return Err(PackageError::EntryDamaged(meta.name.clone()));
        }
    }
    let trailer = trailer(&head, signer);
    out.write_all(&trailer)?;
    out.flush()?;
    Ok(trailer[8..40].try_into().expect("32 bytes"))
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
pub fn inspect<R: Read>(mut r: R, trusted: Option<&VerifyingKey>) -> Result<Inspected> {
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
    if fixed[8] != VERSION {
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
    let mut offset = 13 + u64::from(len);
    let mut offsets = Vec::with_capacity(header.entries.len());
    let digest = hash.finish();
    let mut buf = vec![0_u8; 256 * 1024];
    for e in &header.entries {
        offsets.push(offset);
        let mut entry_hash = Sha256Stream::new();
        let mut left = e.sealed_len;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let got = read_full(&mut r, &mut buf[..want])?;
            entry_hash.update(&buf[..got]);
            if got < want {
                return Err(PackageError::Truncated(format!(
                    "entry `{}` has {} of {} bytes",
                    e.name,
                    e.sealed_len - left + got as u64,
                    e.sealed_len
                )));
            }
            left -= want as u64;
        }
        if hex::encode(entry_hash.finish()) != e.sealed_sha256 {
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
    Ok(Inspected {
        header,
        package_sha256: digest,
        signer,
        offsets,
    })
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
    let mut hashing = HashingWriter {
        inner: out,
        hash: Sha256Stream::new(),
        written: 0,
    };
    stream::decrypt_stream(content_key.expose(), r.take(meta.sealed_len), &mut hashing)?;
    let written = hashing.written;
    if written != meta.plain_len || hex::encode(hashing.hash.finish()) != meta.plain_sha256 {
        return Err(PackageError::EntryDamaged(meta.name.clone()));
    }
    Ok(written)
}

/// Seals one entry's plaintext under the content key (caller's salt and nonce prefix, so
/// vectors are reproducible; use fresh random ones otherwise) and returns its [`EntryMeta`].
pub fn seal_entry<R: Read, W: Write>(
    content_key: &[u8; 32],
    name: &str,
    kind: EntryKind,
    plain: R,
    out: W,
    salt: [u8; stream::SALT_LEN],
    nonce_prefix: [u8; stream::NONCE_PREFIX_LEN],
) -> Result<EntryMeta> {
    let mut plain = HashingReader {
        inner: plain,
        hash: Sha256Stream::new(),
        read: 0,
    };
    let mut sealed = HashingWriter {
        inner: out,
        hash: Sha256Stream::new(),
        written: 0,
    };
    stream::encrypt_stream_with(
        content_key,
        &salt,
        &nonce_prefix,
        &mut plain,
        &mut sealed,
        stream::CHUNK_SIZE_DEFAULT,
    )?;
    Ok(EntryMeta {
        name: name.to_string(),
        kind,
        sealed_len: sealed.written,
        sealed_sha256: hex::encode(sealed.hash.finish()),
        plain_len: plain.read,
        plain_sha256: hex::encode(plain.hash.finish()),
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

struct HashingWriter<W> {
    inner: W,
    hash: Sha256Stream,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct HashingReader<R> {
    inner: R,
    hash: Sha256Stream,
    read: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

pub mod notification;

#[cfg(test)]
mod tests;
