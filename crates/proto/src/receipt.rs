//! Two-party signed receipts (WO 01/22373, SPEC R1–R6): the receipt core, the receipt
//! package file, offline verification, the token's secure write and the arbiter's decisions
//! for fair exchange. Nothing here touches files, sockets, the clock or an RNG.
//!
//! * The **core** (R2) follows the seed's layout field for field with modern keys: version,
//!   receipt-server id (SHA-256 of the node's Ed25519 key), transaction id, time, SHA-256 of
//!   the record, the fingerprints of party A and party B, A's and B's signatures over fields
//!   1–7 and the server's signature over fields 1–5. Version 1 carries Ed25519 party
//!   signatures; version 2 carries BLS12-381 party signatures (fair exchange: only a BLS
//!   signature can be verifiably encrypted).
//! * The **package file** is `TALLYRCP || len || core` followed by tagged sections: the
//!   record itself, the certificates of A, B and the server, the warrants of proxy signatures
//!   and the receipt's journal entry. [`verify_package`] checks all of it offline against the
//!   node CA's certificate.
//! * The **token** ([`token`]) is the customer's store of short receipts, written only by the
//!   holder of the token's application key and bound to a fresh challenge of the token.
//! * [`exchange`] holds the arbiter's rules for abort and resolve.
//!
//! Byte layout and vectors: `docs/protocols/receipts.md`, `docs/protocols/vectors/receipts.json`.
//!
//! Rejected: signing the record text directly (the signatures would grow with the record and
//! a token could not hold them; the seed's claim 4 signs the hash); JSON for the core (the
//! seed's fixed binary layout is what a smart card can hold and check); one signature scheme
//! for both versions (Ed25519 is four times faster to verify, BLS is needed only for fair
//! exchange).

pub mod exchange;
pub mod flow;
pub mod request;
pub mod token;

#[cfg(test)]
mod tests;

use tally_kernel::Timestamp;
use tally_kernel::crypto::bls::{BlsPublicKey, BlsSignature};
use tally_kernel::crypto::kdf::sha256;
use tally_kernel::crypto::warrant::{self, WarrantTerms};
use tally_kernel::crypto::{Certificate, Signature, VerifyingKey};

/// Core version with Ed25519 party signatures.
pub const VERSION_ED25519: u8 = 1;
/// Core version with BLS12-381 party signatures (fair exchange).
pub const VERSION_BLS: u8 = 2;
/// Domain of party signatures (over fields 1–7).
pub const PARTY_DOMAIN: &[u8] = b"tally/receipt-party/v1\0";
/// Domain of the server's signature (over fields 1–5).
pub const SERVER_DOMAIN: &[u8] = b"tally/receipt-server/v1\0";
/// Fields 1–5: version, server id, transaction id, time, content hash.
pub const SERVER_PART_LEN: usize = 1 + 32 + 8 + 8 + 32;
/// Fields 1–7: fields 1–5 and the two party fingerprints.
pub const PARTY_PART_LEN: usize = SERVER_PART_LEN + 32 + 32;
/// Package file magic.
pub const MAGIC: &[u8; 8] = b"TALLYRCP";
/// The roles a party's certificate may carry (its subject's `OU`).
pub const PARTY_ROLES: [&str; 3] = ["customer", "merchant", "manager"];
/// The receipt server's certificate: subject `OU=node, CN=Tally receipt server`. A party's
/// certificate cannot stand in for it, nor it for a party.
pub const SERVER_ROLE: &str = "node";
/// The common name of the receipt server's certificate.
pub const SERVER_NAME: &str = "Tally receipt server";
/// Largest package file accepted.
pub const PACKAGE_LEN_MAX: usize = 1 << 20;
/// Largest record (plain UTF-8 text).
pub const RECORD_LEN_MAX: usize = 64 * 1024;

/// Why a receipt, a package or a write was refused. Each names exactly what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// The bytes are not a receipt (wrong magic, length or framing).
    #[error("malformed receipt: {0}")]
    Malformed(String),
    /// A version this code does not read.
    #[error("receipt version {0} is not supported (this reader knows versions 1 and 2)")]
    UnsupportedVersion(u8),
    /// The record does not hash to the receipt's content hash.
    #[error("the record does not match the receipt's content hash (record altered)")]
    RecordAltered,
    /// The record is not plain text.
    #[error("the record is not plain text: {0}")]
    NotPlainText(String),
    /// A signature does not verify; the text names whose.
    #[error("the signature of {0} does not verify")]
    BadSignature(&'static str),
    /// A certificate is missing, not from this CA, expired, or for another key.
    #[error("certificate of {who}: {why}")]
    BadCertificate {
        /// Whose certificate.
        who: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A proxy signature's warrant does not allow it.
    #[error("warrant of {who}: {why}")]
    BadWarrant {
        /// Whose warrant.
        who: &'static str,
        /// What is wrong.
        why: String,
    },
    /// The package's journal entry does not name this receipt or does not hash right.
    #[error("journal entry: {0}")]
    BadJournalEntry(String),
}

type Result<T> = std::result::Result<T, ReceiptError>;

fn malformed(why: impl Into<String>) -> ReceiptError {
    ReceiptError::Malformed(why.into())
}

/// Fields 1–7 of the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields {
    /// 1: [`VERSION_ED25519`] or [`VERSION_BLS`].
    pub version: u8,
    /// 2: SHA-256 of the receipt server's Ed25519 public key.
    pub server_id: [u8; 32],
    /// 3: transaction id, unique per server.
    pub transaction: u64,
    /// 4: seconds since 1970-01-01T00:00:00Z.
    pub time: i64,
    /// 5: SHA-256 of the record's UTF-8 bytes.
    pub content_hash: [u8; 32],
    /// 6: SHA-256 of party A's Ed25519 public key.
    pub party_a: [u8; 32],
    /// 7: SHA-256 of party B's Ed25519 public key.
    pub party_b: [u8; 32],
}

impl Fields {
    /// Fields 1–5 as signed by the server.
    pub fn server_part(&self) -> [u8; SERVER_PART_LEN] {
        let mut out = [0u8; SERVER_PART_LEN];
        out[0] = self.version;
        out[1..33].copy_from_slice(&self.server_id);
        out[33..41].copy_from_slice(&self.transaction.to_be_bytes());
        out[41..49].copy_from_slice(&self.time.to_be_bytes());
        out[49..81].copy_from_slice(&self.content_hash);
        out
    }

    /// Fields 1–7 as signed by both parties.
    pub fn party_part(&self) -> [u8; PARTY_PART_LEN] {
        let mut out = [0u8; PARTY_PART_LEN];
        out[..SERVER_PART_LEN].copy_from_slice(&self.server_part());
        out[81..113].copy_from_slice(&self.party_a);
        out[113..145].copy_from_slice(&self.party_b);
        out
    }

    /// Fields 1–7 from the parties' signed part (what an arbiter node is shown).
    pub fn from_party_part(bytes: &[u8]) -> Result<Fields> {
        if bytes.len() != PARTY_PART_LEN {
            return Err(malformed(format!(
                "fields 1-7 are {PARTY_PART_LEN} bytes, these are {}",
                bytes.len()
            )));
        }
        let b = |r: std::ops::Range<usize>| -> [u8; 32] {
            let mut out = [0u8; 32];
            out.copy_from_slice(&bytes[r]);
            out
        };
        let version = bytes[0];
        if version != VERSION_ED25519 && version != VERSION_BLS {
            return Err(ReceiptError::UnsupportedVersion(version));
        }
        let mut tx = [0u8; 8];
        tx.copy_from_slice(&bytes[33..41]);
        let mut time = [0u8; 8];
        time.copy_from_slice(&bytes[41..49]);
        Ok(Fields {
            version,
            server_id: b(1..33),
            transaction: u64::from_be_bytes(tx),
            time: i64::from_be_bytes(time),
            content_hash: b(49..81),
            party_a: b(81..113),
            party_b: b(113..145),
        })
    }

    /// The receipt time as a [`Timestamp`].
    pub fn timestamp(&self) -> Timestamp {
        Timestamp(self.time.saturating_mul(1_000_000))
    }

    /// The short token form of these fields.
    pub fn token_record(&self) -> token::TokenRecord {
        token::TokenRecord {
            version: self.version,
            transaction: self.transaction,
            time: self.time,
            content_hash: self.content_hash,
        }
    }

    /// Length of a party signature in this version.
    pub fn party_signature_len(&self) -> usize {
        party_signature_len(self.version)
    }
}

fn party_signature_len(version: u8) -> usize {
    if version == VERSION_BLS { 48 } else { 64 }
}

/// Length of a whole core of `version`.
pub fn core_len(version: u8) -> usize {
    PARTY_PART_LEN + 2 * party_signature_len(version) + 64
}

/// A party's signature over fields 1–7.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartySignature {
    /// Version 1.
    Ed25519(Signature),
    /// Version 2.
    Bls(BlsSignature),
}

impl PartySignature {
    /// The raw bytes (64 or 48).
    pub fn to_vec(&self) -> Vec<u8> {
        match self {
            PartySignature::Ed25519(s) => s.to_bytes().to_vec(),
            PartySignature::Bls(s) => s.to_bytes().to_vec(),
        }
    }

    /// Parses a signature of the scheme `version` uses.
    pub fn from_slice(version: u8, bytes: &[u8]) -> Result<PartySignature> {
        if version == VERSION_BLS {
            BlsSignature::from_bytes(bytes)
                .map(PartySignature::Bls)
                .map_err(|e| malformed(format!("BLS signature: {e}")))
        } else {
            Signature::from_slice(bytes)
                .map(PartySignature::Ed25519)
                .map_err(|e| malformed(format!("Ed25519 signature: {e}")))
        }
    }

    /// Lowercase hex of the raw bytes.
    pub fn to_hex(&self) -> String {
        hex::encode(self.to_vec())
    }

    /// From hex, for `version`.
    pub fn from_hex(version: u8, text: &str) -> Result<PartySignature> {
        let bytes = hex::decode(text).map_err(|_| malformed("signature is not hex"))?;
        PartySignature::from_slice(version, &bytes)
    }
}

/// The key a party signature verifies under: the party's own or its proxy's.
#[derive(Debug, Clone, Copy)]
pub enum PartyKey {
    /// Ed25519 (version 1).
    Ed25519(VerifyingKey),
    /// BLS12-381 (version 2).
    Bls(BlsPublicKey),
}

impl PartyKey {
    /// Verifies `sig` over `fields` 1–7.
    pub fn verify(&self, fields: &Fields, sig: &PartySignature, who: &'static str) -> Result<()> {
        let msg = fields.party_part();
        let ok = match (self, sig) {
            (PartyKey::Ed25519(k), PartySignature::Ed25519(s)) => {
                k.verify(PARTY_DOMAIN, &msg, s).is_ok()
            }
            (PartyKey::Bls(k), PartySignature::Bls(s)) => k.verify(PARTY_DOMAIN, &msg, s).is_ok(),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(ReceiptError::BadSignature(who))
        }
    }
}

/// A complete receipt core (fields 1–10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// Fields 1–7.
    pub fields: Fields,
    /// 8: party A over 1–7.
    pub signature_a: PartySignature,
    /// 9: party B over 1–7.
    pub signature_b: PartySignature,
    /// 10: the server over 1–5.
    pub signature_server: Signature,
}

impl Receipt {
    /// The core bytes: fields 1–7, then A's, B's and the server's signatures.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(core_len(self.fields.version));
        out.extend_from_slice(&self.fields.party_part());
        out.extend_from_slice(&self.signature_a.to_vec());
        out.extend_from_slice(&self.signature_b.to_vec());
        out.extend_from_slice(&self.signature_server.to_bytes());
        out
    }

    /// Parses a core; the length must be exactly that of its version.
    pub fn from_bytes(bytes: &[u8]) -> Result<Receipt> {
        let version = *bytes.first().ok_or_else(|| malformed("empty receipt"))?;
        if version != VERSION_ED25519 && version != VERSION_BLS {
            return Err(ReceiptError::UnsupportedVersion(version));
        }
        if bytes.len() != core_len(version) {
            return Err(malformed(format!(
                "a version {version} receipt is {} bytes, this is {}",
                core_len(version),
                bytes.len()
            )));
        }
        let fields = Fields::from_party_part(&bytes[..PARTY_PART_LEN])?;
        let n = party_signature_len(version);
        let (a, rest) = bytes[PARTY_PART_LEN..].split_at(n);
        let (b, s) = rest.split_at(n);
        Ok(Receipt {
            fields,
            signature_a: PartySignature::from_slice(version, a)?,
            signature_b: PartySignature::from_slice(version, b)?,
            signature_server: Signature::from_slice(s)
                .map_err(|e| malformed(format!("server signature: {e}")))?,
        })
    }

    /// SHA-256 of the core bytes: the receipt's identity in the journal.
    pub fn digest(&self) -> [u8; 32] {
        sha256(&self.to_bytes())
    }
}

/// Checks that a record is plain text: UTF-8 (by type), at most [`RECORD_LEN_MAX`] bytes, no
/// control characters but newline and tab, no bidirectional overrides or invisible format
/// characters (what a signer is shown must be what is signed), not empty.
pub fn check_record(record: &str) -> Result<()> {
    if record.trim().is_empty() {
        return Err(ReceiptError::NotPlainText("the record is empty".into()));
    }
    if record.len() > RECORD_LEN_MAX {
        return Err(ReceiptError::NotPlainText(format!(
            "the record is {} bytes, at most {RECORD_LEN_MAX}",
            record.len()
        )));
    }
    for (i, c) in record.chars().enumerate() {
        let bad = (c.is_control() && c != '\n' && c != '\t')
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}');
        if bad {
            return Err(ReceiptError::NotPlainText(format!(
                "character {i} is U+{:04X}, which is not shown as flat text",
                c as u32
            )));
        }
    }
    Ok(())
}

/// SHA-256 of the record's UTF-8 bytes (field 5).
pub fn content_hash(record: &str) -> [u8; 32] {
    sha256(record.as_bytes())
}

// ---------------------------------------------------------------------------------------------
// The package file
// ---------------------------------------------------------------------------------------------

/// Section tags of the package file, in the order they must appear.
pub mod tag {
    /// The record (UTF-8 text).
    pub const RECORD: u8 = 1;
    /// Party A's certificate (DER).
    pub const CERT_A: u8 = 2;
    /// Party B's certificate (DER).
    pub const CERT_B: u8 = 3;
    /// The warrant under which the node signed for A (DER).
    pub const WARRANT_A: u8 = 4;
    /// The warrant under which the node signed for B (DER).
    pub const WARRANT_B: u8 = 5;
    /// The receipt server's certificate (DER), issued by the node CA.
    pub const CERT_SERVER: u8 = 6;
    /// The node CA's certificate (DER): informative only, the verifier brings its own.
    pub const CERT_CA: u8 = 7;
    /// The receipt's journal entry: seq (8) at (8) prev_hash (32) body.
    pub const JOURNAL: u8 = 8;
}

/// The receipt's entry in the node's hash-chained journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalProof {
    /// Entry position.
    pub seq: i64,
    /// Entry time (µs).
    pub at: i64,
    /// Hash of the entry before.
    pub prev_hash: [u8; 32],
    /// The entry's exact body.
    pub body: Vec<u8>,
}

/// A receipt package: the core and what a verifier needs to check it offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// The core.
    pub receipt: Receipt,
    /// The record text.
    pub record: Option<String>,
    /// Certificate of A (DER).
    pub cert_a: Option<Vec<u8>>,
    /// Certificate of B (DER).
    pub cert_b: Option<Vec<u8>>,
    /// Warrant of a proxy signature for A (DER).
    pub warrant_a: Option<Vec<u8>>,
    /// Warrant of a proxy signature for B (DER).
    pub warrant_b: Option<Vec<u8>>,
    /// The receipt server's certificate (DER).
    pub cert_server: Option<Vec<u8>>,
    /// The node CA's certificate (DER), informative.
    pub cert_ca: Option<Vec<u8>>,
    /// The journal entry.
    pub journal: Option<JournalProof>,
}

impl Package {
    /// A package holding only the core.
    pub fn new(receipt: Receipt) -> Package {
        Package {
            receipt,
            record: None,
            cert_a: None,
            cert_b: None,
            warrant_a: None,
            warrant_b: None,
            cert_server: None,
            cert_ca: None,
            journal: None,
        }
    }

    /// The file bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let core = self.receipt.to_bytes();
        let mut out = Vec::with_capacity(1024);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(core.len() as u16).to_be_bytes());
        out.extend_from_slice(&core);
        let mut section = |tag: u8, value: &[u8]| {
            out.push(tag);
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(value);
        };
        if let Some(r) = &self.record {
            section(tag::RECORD, r.as_bytes());
        }
        for (t, v) in [
            (tag::CERT_A, &self.cert_a),
            (tag::CERT_B, &self.cert_b),
            (tag::WARRANT_A, &self.warrant_a),
            (tag::WARRANT_B, &self.warrant_b),
            (tag::CERT_SERVER, &self.cert_server),
            (tag::CERT_CA, &self.cert_ca),
        ] {
            if let Some(v) = v {
                section(t, v);
            }
        }
        if let Some(j) = &self.journal {
            let mut v = Vec::with_capacity(48 + j.body.len());
            v.extend_from_slice(&j.seq.to_be_bytes());
            v.extend_from_slice(&j.at.to_be_bytes());
            v.extend_from_slice(&j.prev_hash);
            v.extend_from_slice(&j.body);
            section(tag::JOURNAL, &v);
        }
        out
    }

    /// Parses a package file: magic, core, then sections in increasing tag order, each at most
    /// once, nothing after the last.
    pub fn from_bytes(bytes: &[u8]) -> Result<Package> {
        if bytes.len() > PACKAGE_LEN_MAX {
            return Err(malformed(format!(
                "the file is {} bytes, at most {PACKAGE_LEN_MAX}",
                bytes.len()
            )));
        }
        let rest = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| malformed("not a Tally receipt (magic TALLYRCP missing)"))?;
        if rest.len() < 2 {
            return Err(malformed("truncated before the core length"));
        }
        let core_len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let rest = &rest[2..];
        if rest.len() < core_len {
            return Err(malformed("truncated inside the core"));
        }
        let (core, mut rest) = rest.split_at(core_len);
        let mut pkg = Package::new(Receipt::from_bytes(core)?);
        let mut last = 0u8;
        while !rest.is_empty() {
            if rest.len() < 5 {
                return Err(malformed("truncated section header"));
            }
            let t = rest[0];
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            if t <= last {
                return Err(malformed(format!(
                    "section {t} is out of order or repeated"
                )));
            }
            last = t;
            let body = rest
                .get(5..5 + len)
                .ok_or_else(|| malformed(format!("section {t} is truncated")))?;
            rest = &rest[5 + len..];
            match t {
                tag::RECORD => {
                    let text = std::str::from_utf8(body).map_err(|_| {
                        ReceiptError::NotPlainText("the record is not UTF-8".into())
                    })?;
                    pkg.record = Some(text.to_string());
                }
                tag::CERT_A => pkg.cert_a = Some(body.to_vec()),
                tag::CERT_B => pkg.cert_b = Some(body.to_vec()),
                tag::WARRANT_A => pkg.warrant_a = Some(body.to_vec()),
                tag::WARRANT_B => pkg.warrant_b = Some(body.to_vec()),
                tag::CERT_SERVER => pkg.cert_server = Some(body.to_vec()),
                tag::CERT_CA => pkg.cert_ca = Some(body.to_vec()),
                tag::JOURNAL => {
                    if body.len() < 48 {
                        return Err(malformed("journal section is shorter than 48 bytes"));
                    }
                    let mut prev_hash = [0u8; 32];
                    prev_hash.copy_from_slice(&body[16..48]);
                    let mut seq = [0u8; 8];
                    seq.copy_from_slice(&body[..8]);
                    let mut at = [0u8; 8];
                    at.copy_from_slice(&body[8..16]);
                    pkg.journal = Some(JournalProof {
                        seq: i64::from_be_bytes(seq),
                        at: i64::from_be_bytes(at),
                        prev_hash,
                        body: body[48..].to_vec(),
                    });
                }
                other => return Err(malformed(format!("unknown section {other}"))),
            }
        }
        Ok(pkg)
    }
}

/// What [`verify_package`] established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Fields 1–7.
    pub fields: Fields,
    /// Party A's name (certificate CN).
    pub party_a: String,
    /// Party B's name.
    pub party_b: String,
    /// Serial of the warrant A's signature was made under, if by proxy.
    pub warrant_a: Option<String>,
    /// Serial of the warrant B's signature was made under, if by proxy.
    pub warrant_b: Option<String>,
    /// Journal position, when the package carries its entry.
    pub journal_seq: Option<i64>,
    /// The journal entry's hash, when the package carries its entry.
    pub journal_hash: Option<[u8; 32]>,
}

fn cert(who: &'static str, der: &Option<Vec<u8>>) -> Result<Certificate> {
    let der = der.as_ref().ok_or_else(|| ReceiptError::BadCertificate {
        who,
        why: "missing from the package".into(),
    })?;
    Certificate::from_der(der).map_err(|e| ReceiptError::BadCertificate {
        who,
        why: e.to_string(),
    })
}

fn fingerprint_bytes(key: &VerifyingKey) -> [u8; 32] {
    sha256(&key.to_bytes())
}

/// Checks a party certificate against the CA at the receipt's time and its fingerprint field.
fn party_cert(
    who: &'static str,
    der: &Option<Vec<u8>>,
    fingerprint: &[u8; 32],
    ca: &Certificate,
    at: Timestamp,
) -> Result<(Certificate, VerifyingKey)> {
    let c = cert(who, der)?;
    let bad = |why: String| ReceiptError::BadCertificate { who, why };
    c.verify_issued_by(ca, at)
        .map_err(|e| bad(format!("not valid from this CA at the receipt's time: {e}")))?;
    let key = c.public_key().map_err(|e| bad(e.to_string()))?;
    if &fingerprint_bytes(&key) != fingerprint {
        return Err(bad("its key is not the one the receipt names".into()));
    }
    Ok((c, key))
}

/// The key a party's signature must verify under, from its certificate or its warrant.
pub fn signing_key(
    who: &'static str,
    version: u8,
    party: &Certificate,
    warrant: Option<(&Certificate, &WarrantTerms)>,
) -> Result<PartyKey> {
    let bls = |bytes: Option<[u8; 96]>, whose: &str| -> Result<PartyKey> {
        let bytes = bytes.ok_or_else(|| ReceiptError::BadCertificate {
            who,
            why: format!("{whose} carries no BLS key, needed for a version 2 receipt"),
        })?;
        BlsPublicKey::from_bytes(&bytes)
            .map(PartyKey::Bls)
            .map_err(|e| ReceiptError::BadCertificate {
                who,
                why: format!("{whose}'s BLS key: {e}"),
            })
    };
    match (version, warrant) {
        (VERSION_BLS, Some((_, terms))) => bls(terms.bls_key, "the warrant"),
        (VERSION_BLS, None) => bls(
            warrant::certificate_bls_key(party).map_err(|e| ReceiptError::BadCertificate {
                who,
                why: e.to_string(),
            })?,
            "the certificate",
        ),
        (_, Some((w, _))) => {
            w.public_key()
                .map(PartyKey::Ed25519)
                .map_err(|e| ReceiptError::BadWarrant {
                    who,
                    why: e.to_string(),
                })
        }
        (_, None) => {
            party
                .public_key()
                .map(PartyKey::Ed25519)
                .map_err(|e| ReceiptError::BadCertificate {
                    who,
                    why: e.to_string(),
                })
        }
    }
}

/// Checks a warrant for `who` naming `counterparty`, at the receipt's time.
pub fn check_proxy(
    who: &'static str,
    warrant_der: &[u8],
    party: &Certificate,
    counterparty: &str,
    ca: &Certificate,
    at: Timestamp,
) -> Result<(Certificate, WarrantTerms)> {
    let bad = |why: String| ReceiptError::BadWarrant { who, why };
    let w = Certificate::from_der(warrant_der).map_err(|e| bad(e.to_string()))?;
    let terms = warrant::check_warrant(&w, party, ca, at).map_err(|e| bad(e.to_string()))?;
    if !terms.allows(counterparty) {
        return Err(bad(format!(
            "does not name {counterparty} as a counterparty"
        )));
    }
    Ok((w, terms))
}

/// Verifies a package offline against the node CA's certificate: the record's hash, the
/// server certificate and signature, both parties' certificates (at the receipt's time),
/// their signatures, directly or under a warrant that names the other party, and the
/// journal entry when present. Revocation cannot be checked offline (ask the node).
pub fn verify_package(pkg: &Package, ca: &Certificate) -> Result<Verified> {
    let r = &pkg.receipt;
    let f = &r.fields;
    let at = f.timestamp();
    if let Some(record) = &pkg.record
        && content_hash(record) != f.content_hash
    {
        return Err(ReceiptError::RecordAltered);
    }
    let (server_cert, server_key) =
        party_cert("the server", &pkg.cert_server, &f.server_id, ca, at)?;
    if server_cert.role().as_deref() != Some(SERVER_ROLE)
        || server_cert.subject_common_name().as_deref() != Some(SERVER_NAME)
    {
        return Err(ReceiptError::BadCertificate {
            who: "the server",
            why: format!(
                "not a receipt server's certificate (subject OU={}, CN={}; expected OU={SERVER_ROLE}, CN={SERVER_NAME})",
                server_cert.role().unwrap_or_default(),
                server_cert.subject_common_name().unwrap_or_default()
            ),
        });
    }
    server_key
        .verify(SERVER_DOMAIN, &f.server_part(), &r.signature_server)
        .map_err(|_| ReceiptError::BadSignature("the server"))?;
    let (cert_a, _) = party_cert("party A", &pkg.cert_a, &f.party_a, ca, at)?;
    let (cert_b, _) = party_cert("party B", &pkg.cert_b, &f.party_b, ca, at)?;
    for (who, c) in [("party A", &cert_a), ("party B", &cert_b)] {
        let role = c.role().unwrap_or_default();
        if !PARTY_ROLES.contains(&role.as_str()) {
            return Err(ReceiptError::BadCertificate {
                who,
                why: format!("not a party's certificate (role {role:?})"),
            });
        }
    }
    let name = |c: &Certificate| c.subject_common_name().unwrap_or_default();
    let (name_a, name_b) = (name(&cert_a), name(&cert_b));
    let mut serials = [None, None];
    for (i, (who, party, warrant, other, sig)) in [
        ("party A", &cert_a, &pkg.warrant_a, &name_b, &r.signature_a),
        ("party B", &cert_b, &pkg.warrant_b, &name_a, &r.signature_b),
    ]
    .into_iter()
    .enumerate()
    {
        let proxy = match warrant {
            Some(der) => Some(check_proxy(who, der, party, other, ca, at)?),
            None => None,
        };
        let key = signing_key(who, f.version, party, proxy.as_ref().map(|(w, t)| (w, t)))?;
        key.verify(f, sig, who)?;
        serials[i] = proxy.map(|(w, _)| w.serial_hex());
    }
    let [warrant_a, warrant_b] = serials;
    let (journal_seq, journal_hash) = match &pkg.journal {
        Some(j) => {
            let digest = hex::encode(r.digest());
            let body = std::str::from_utf8(&j.body)
                .map_err(|_| ReceiptError::BadJournalEntry("body is not UTF-8".into()))?;
            if !body.contains(&digest) {
                return Err(ReceiptError::BadJournalEntry(
                    "the entry does not name this receipt".into(),
                ));
            }
            (Some(j.seq), Some(journal_entry_hash(j)))
        }
        None => (None, None),
    };
    Ok(Verified {
        fields: *f,
        party_a: name_a,
        party_b: name_b,
        warrant_a,
        warrant_b,
        journal_seq,
        journal_hash,
    })
}

/// The journal's entry hash, as `ledger::journal` computes it.
pub fn journal_entry_hash(j: &JournalProof) -> [u8; 32] {
    tally_ledger::journal::entry_hash(j.seq, Timestamp(j.at), &j.prev_hash, &j.body)
}

/// A signed checkpoint of an exported log: the node signed `(seq, hash)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogCheckpoint {
    /// The last entry covered.
    pub seq: i64,
    /// Its hash.
    pub hash: [u8; 32],
    /// The node's Ed25519 signature over `CHECKPOINT_DOMAIN || seq || hash`.
    pub signature: Signature,
}

/// Checks that the receipt's journal entry is in an exported log: the entry's recomputed hash
/// is the export's entry at that position, every later entry chains to it, and the chain ends
/// at a checkpoint signed by `node_key` (trusted by the caller). `later` are the entries after
/// the receipt's, in order, as `(seq, at µs, prev_hash, hash, body)`.
pub fn check_inclusion<'a>(
    entry: &JournalProof,
    later: impl IntoIterator<Item = (i64, i64, [u8; 32], [u8; 32], &'a [u8])>,
    checkpoint: &LogCheckpoint,
    node_key: &VerifyingKey,
) -> Result<()> {
    let bad = |why: String| ReceiptError::BadJournalEntry(why);
    let mut hash = journal_entry_hash(entry);
    let mut seq = entry.seq;
    for (s, at, prev, claimed, body) in later {
        if s != seq + 1 || prev != hash {
            return Err(bad(format!(
                "the exported log breaks the chain at entry {s}"
            )));
        }
        let computed = tally_ledger::journal::entry_hash(s, Timestamp(at), &prev, body);
        if computed != claimed {
            return Err(bad(format!(
                "entry {s} of the exported log does not hash to its hash"
            )));
        }
        hash = computed;
        seq = s;
    }
    if checkpoint.seq != seq || checkpoint.hash != hash {
        return Err(bad(format!(
            "the log's chain ends at entry {seq}, the checkpoint covers entry {}",
            checkpoint.seq
        )));
    }
    node_key
        .verify(
            tally_ledger::journal::CHECKPOINT_DOMAIN,
            &tally_ledger::journal::checkpoint_message(seq, &hash),
            &checkpoint.signature,
        )
        .map_err(|_| bad("the checkpoint is not signed by the given node key".into()))
}
