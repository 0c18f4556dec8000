//! Two-party signed receipts from the command line (SPEC R1–R6; the seed's blocks 301–317;
//! formats in `tally_proto::receipt`, the node side in `tally_service::receipt`).
//!
//! The operator issues each party a software token (`tally token init`): the keys are made
//! here and never leave the token file; the node certifies the public halves and returns the
//! token's application key. Party A (a merchant's manager) warrants the node to sign on its
//! behalf (`tally warrant issue`) and offers a record (`tally receipt offer`); party B (the
//! customer) sees the record exactly as it will be signed and signs it (`tally receipt sign`),
//! after a fair exchange of escrows when the offer asks for one; the node writes the short
//! receipt onto B's token; anyone checks the package offline (`tally receipt verify`).
//!
//! Key decisions:
//! * **The token file is the token.** One JSON file, mode 0600: the token state of
//!   `tally_proto::receipt::token` (serial, application key, slots, pending challenges), the
//!   holder's Ed25519 and BLS keys, its certificate and the node's public receipt keys (the
//!   Ed25519 key may instead live in a PKCS#11 token, `crate::pkcs11`: the file says where).
//!   Every change is written to a temporary file and renamed over it, so a crash leaves the
//!   old or the new state, never half of one.
//! * **Crash-safe writes.** The challenge is saved in the token file *before* the signature
//!   goes to the node, so a write that arrives later (re-run, or `tally token sync` after a
//!   lost ack) still opens; the write is stored and saved *before* the ack, so an ack never
//!   names a receipt the token does not hold.
//! * **Check before signing.** `receipt sign` refuses a record that is not plain text or does
//!   not hash to the offer's content hash, an offer from another receipt server than the
//!   token's, and an offer whose party B is not the token's key. In a fair exchange A's
//!   released signature is verified before B's own signature leaves the machine; when it
//!   does not verify, B goes to the arbiter instead (block 310).
//! * **Verification needs no network.** `receipt verify` checks a package against a CA
//!   certificate the user brings (`--ca`); without one it uses the CA certificate inside the
//!   package and says so, with its fingerprint to compare.
//!
//! Rejected: keeping the keys in the node (a receipt the node can sign for B proves nothing
//! about B); acking before the token file is saved (a crash would lose an acked receipt);
//! trusting the package's own CA silently.

use crate::client::{Conn, idempotency_key};
use crate::legacy::{ATTEMPTS_MAX, CALL_TIMEOUT, LegacyClient as Client, refusal};
use crate::pkcs11::{self, Pkcs11Ref};
use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tally_kernel::crypto::bls::{self, ArbiterPublicKey, BlsPublicKey, BlsSecretKey, BlsSignature};
use tally_kernel::crypto::kdf::sha256;
use tally_kernel::crypto::warrant::{
    Counterparties, WarrantTerms, certificate_bls_key, issue_warrant,
};
use tally_kernel::crypto::{Certificate, SigningKey, VerifyingKey};
use tally_kernel::{Secret, Timestamp};
use tally_proto::receipt::token::{CHALLENGE_LEN, SERIAL_LEN, SecureWrite, Slot, Stored, Token};
use tally_proto::receipt::{
    self as proto, Fields, PARTY_DOMAIN, Package, PartySignature, VERSION_BLS, VERSION_ED25519,
};
use tally_service::receipt::{
    ArbiterView, IssuedToken, ReceiptNodeView, ReceiptView, TokenView, WarrantView,
};

/// The token file's format tag.
const TOKEN_FORMAT: &str = "tally-token/v1";
/// The format tag of a short receipt exported from a token slot.
const SLOT_EXPORT_FORMAT: &str = "tally-token-receipt/v1";
/// The subject name of warrants for the node's receipt key.
const WARRANT_SUBJECT: &str = "tally receipt service";
/// How far back a warrant's validity starts, for clocks that differ a little.
const CLOCK_SKEW_S: i64 = 60;

// ----- clap: raw arguments -----------------------------------------------------------------

/// `tally token …`
#[derive(Subcommand)]
pub enum TokenCommand {
    /// Issue a software token to a party (operator API key): makes the party's signing keys
    /// here, has the node certify them, and writes the token file (mode 0600; an existing
    /// file is never replaced). The file holds private keys: keep it like a password.
    ///
    /// With --pkcs11-module the party's Ed25519 signing key is made inside a PKCS#11 token
    /// (e.g. SoftHSM2) instead, cannot leave it, and the file records only where it is; the
    /// PIN is never saved. The BLS key (fair exchange), the application key and the slots
    /// still live in the file: PKCS#11 tokens do not do BLS. Such a token signs receipts
    /// (`tally receipt sign`); warrants need a software key.
    Init(TokenInitArgs),
    /// With --file: the receipts stored on your token, slot by slot, and the signatures
    /// still waiting for their receipt. Without: the tokens the node has issued (all for the
    /// operator, yours otherwise).
    List(TokenListArgs),
    /// Fetch receipts the node wrote for your token but never heard back about (the
    /// connection dropped before the acknowledgement), store them on the token and
    /// acknowledge them. Safe to run any time.
    Sync(TokenFileArgs),
}

/// A party's role in its certificate.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PartyRole {
    /// A customer: signs receipts as party B.
    Customer,
    /// A merchant.
    Merchant,
    /// A merchant's manager: warrants the node to sign receipts as party A.
    Manager,
}

impl PartyRole {
    fn as_str(self) -> &'static str {
        match self {
            PartyRole::Customer => "customer",
            PartyRole::Merchant => "merchant",
            PartyRole::Manager => "manager",
        }
    }
}

#[derive(Args)]
pub struct TokenInitArgs {
    /// The holder's name, as receipts name the party: the owner of the holder's API key.
    #[arg(long)]
    holder: String,
    /// The holder's role in its certificate.
    #[arg(long, value_enum, default_value_t = PartyRole::Customer)]
    role: PartyRole,
    /// How many short receipts the token keeps (1..=1024); when full, the one with the lowest
    /// priority (then the oldest) is exported to a file and replaced.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    slots: u16,
    /// Days the holder's certificate is valid (capped at the node CA's own validity).
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    days: u32,
    /// Where to write the token file.
    #[arg(long, value_name = "PATH")]
    file: PathBuf,
    #[command(flatten)]
    pkcs11: Pkcs11InitArgs,
    #[command(flatten)]
    conn: Conn,
}

/// Where `token init` makes the Ed25519 key when it is not made in software.
#[derive(Args)]
pub struct Pkcs11InitArgs {
    /// Make the Ed25519 signing key inside this PKCS#11 module's token (a shared library,
    /// e.g. /usr/lib/softhsm/libsofthsm2.so) instead of in the token file.
    #[arg(long, value_name = "PATH")]
    pkcs11_module: Option<PathBuf>,
    /// The PKCS#11 slot id of the token (default: the only initialised token).
    #[arg(
        long,
        value_name = "N",
        requires = "pkcs11_module",
        conflicts_with = "pkcs11_token_label"
    )]
    pkcs11_slot: Option<u64>,
    /// The label of the PKCS#11 token (instead of --pkcs11-slot).
    #[arg(long, value_name = "LABEL", requires = "pkcs11_module")]
    pkcs11_token_label: Option<String>,
    /// A file holding the token's user PIN (else TALLY_PKCS11_PIN). Never saved.
    #[arg(long, value_name = "FILE", requires = "pkcs11_module")]
    pkcs11_pin_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct TokenListArgs {
    /// Your token file: show what it holds (no network).
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct TokenFileArgs {
    /// Your token file.
    #[arg(long, value_name = "PATH")]
    file: PathBuf,
    #[command(flatten)]
    conn: Conn,
}

/// `tally warrant …`
#[derive(Subcommand)]
pub enum WarrantCommand {
    /// Authorise the node to sign receipts on your behalf (as party A) with the named
    /// counterparties, or with anyone: signs a warrant certificate with your token's key for
    /// the node's receipt key and hands it to the node. Revoke it at any time.
    Issue(WarrantIssueArgs),
    /// The warrants you issued (all, for the operator).
    List(ConnArgs),
    /// Revoke a warrant: the node signs nothing more under it; receipts signed before stay
    /// valid.
    Revoke(WarrantRevokeArgs),
}

#[derive(Args)]
pub struct WarrantIssueArgs {
    /// Your token file: its certificate and key sign the warrant.
    #[arg(long, value_name = "PATH")]
    token: PathBuf,
    #[command(flatten)]
    who: CounterpartyArgs,
    /// Days the warrant is valid (capped at your certificate's validity).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
    days: u32,
    /// Leave the node's BLS key out of the warrant: it then covers plain receipts only, not
    /// fair exchanges.
    #[arg(long)]
    no_fair: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct CounterpartyArgs {
    /// A party the node may sign with on your behalf; repeat for several (at most 64).
    #[arg(long = "counterparty", value_name = "NAME")]
    counterparties: Vec<String>,
    /// Any counterparty at all.
    #[arg(long)]
    any: bool,
}

#[derive(Args)]
pub struct WarrantRevokeArgs {
    /// The warrant's serial (hex, as `tally warrant list` shows it).
    serial: String,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct ConnArgs {
    #[command(flatten)]
    conn: Conn,
}

/// `tally receipt …`
#[derive(Subcommand)]
pub enum ReceiptCommand {
    /// Offer a record for signing (party A's side): the node checks both parties and A's
    /// warrant, fixes the receipt's transaction id and time, and waits for B's signature.
    Offer(OfferArgs),
    /// Sign a receipt offered to you (party B): shows the record exactly as it will be
    /// signed, asks, signs with your token, has the node write the short receipt onto your
    /// token, and saves the complete receipt package, verified.
    Sign(SignArgs),
    /// Check a receipt package offline: the record, every signature and certificate, the
    /// warrants of proxy signatures and the journal entry. Exits 1 unless it is valid.
    Verify(VerifyArgs),
    /// Receipts you are a party to (all, for the operator), newest first.
    List(ConnArgs),
    /// One receipt: its state, parties and record.
    Show(TransactionArgs),
    /// Download a complete receipt's package file.
    Export(ExportArgs),
}

#[derive(Args)]
pub struct OfferArgs {
    /// Party A: the side the node signs for, under A's warrant.
    #[arg(long, value_name = "NAME")]
    party_a: String,
    /// Party B: the party who signs with `tally receipt sign`.
    #[arg(long, value_name = "NAME")]
    party_b: String,
    #[command(flatten)]
    record: RecordArgs,
    /// Fair exchange: neither side gets the other's signature unless both sign (B escrows
    /// first; the arbiter settles a failed exchange). Needs BLS keys on both sides.
    #[arg(long)]
    fair: bool,
    /// B has warranted the node too: the node signs both sides now and the receipt is
    /// complete at once.
    #[arg(long, conflicts_with = "fair")]
    proxy_b: bool,
    /// Retry-safe key; generated and printed when absent.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

/// The record: from a file or as text. Plain UTF-8, shown to the signer as it is.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct RecordArgs {
    /// The record, read from a UTF-8 text file (byte for byte: what is in the file is signed).
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// The record as text.
    #[arg(long, value_name = "TEXT")]
    text: Option<String>,
}

#[derive(Args)]
pub struct SignArgs {
    /// The transaction id of the offer.
    transaction: u64,
    /// Your token file.
    #[arg(long, value_name = "PATH")]
    token: PathBuf,
    /// Sign without asking (you have read the record another way).
    #[arg(long)]
    yes: bool,
    /// How much this receipt matters on the token (0..=255): when the token is full, the one
    /// with the lowest priority, then the oldest, is exported and replaced.
    #[arg(long, default_value_t = 128)]
    priority: u8,
    /// Where to save the receipt package. Default: receipt-TRANSACTION.tally here.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Where a receipt pushed off a full token is exported. Default: TOKEN_FILE.receipts/.
    #[arg(long, value_name = "DIR")]
    export_dir: Option<PathBuf>,
    /// When your signing key is in a PKCS#11 token: a file holding its user PIN (else
    /// TALLY_PKCS11_PIN).
    #[arg(long, value_name = "FILE")]
    pkcs11_pin_file: Option<PathBuf>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The receipt package file.
    file: PathBuf,
    /// The node CA's certificate (PEM), obtained from your operator in a way you trust.
    /// Without it, the CA certificate inside the package is the trust anchor, which proves
    /// only that the package is consistent.
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
    /// Also print the record (only after the package verified).
    #[arg(long)]
    show_record: bool,
    /// Also check that the receipt's journal entry is in this log export (`tally ledger
    /// export`), chained to the checkpoint the node signed for it.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// The node key (hex) that must have signed the log's checkpoint. Without it, the key the
    /// export names is used and reported as such.
    #[arg(long, value_name = "HEX", requires = "log")]
    node_key: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct TransactionArgs {
    /// The transaction id.
    transaction: u64,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct ExportArgs {
    /// The transaction id.
    transaction: u64,
    /// Where to save it. Default: receipt-TRANSACTION.tally here.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(flatten)]
    conn: Conn,
}

/// `tally arbiter …`
#[derive(Subcommand)]
pub enum ArbiterCommand {
    /// Abort a fair exchange (its originator, party A's side): the arbiter will resolve it
    /// for nobody. If party B resolved first, you get B's signature instead.
    Abort(TransactionArgs),
    /// Resolve a fair exchange that stopped half way. With --token (party B): deposit your
    /// signature and receive A's from the node's escrow (block 310). Without (the
    /// originator): have the arbiter open B's verifiable escrow (block 314).
    Resolve(ResolveArgs),
}

#[derive(Args)]
pub struct ResolveArgs {
    /// The transaction id.
    transaction: u64,
    /// Your token file (party B).
    #[arg(long, value_name = "PATH")]
    token: Option<PathBuf>,
    /// With --token: where to save the receipt package once resolved. Default:
    /// receipt-TRANSACTION.tally here.
    #[arg(long, value_name = "FILE", requires = "token")]
    out: Option<PathBuf>,
    #[command(flatten)]
    conn: Conn,
}

// ----- the token file ----------------------------------------------------------------------

/// The token file as stored (JSON). The private keys are wiped when it is dropped.
#[derive(Serialize, Deserialize)]
struct TokenFileData {
    format: String,
    holder: String,
    role: String,
    token: Token,
    /// The holder's Ed25519 key, PKCS#8 PEM (secret). Exactly one of this and `pkcs11`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signing_key: Option<String>,
    /// Where the holder's Ed25519 key is when a PKCS#11 token holds it (no secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pkcs11: Option<Pkcs11Ref>,
    /// The holder's BLS secret key, hex (secret).
    bls_key: String,
    /// The holder's certificate from the node CA, PEM.
    certificate: String,
    node: ReceiptNodeView,
}

impl Drop for TokenFileData {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.signing_key);
        zeroize::Zeroize::zeroize(&mut self.bls_key);
    }
}

/// The holder's Ed25519 key: in the token file, or in a PKCS#11 token (with the certified
/// public key its signatures must verify under).
enum HolderKey {
    Software(SigningKey),
    Pkcs11(Pkcs11Ref, VerifyingKey),
}

impl HolderKey {
    fn verifying_key(&self) -> VerifyingKey {
        match self {
            HolderKey::Software(k) => k.verifying_key(),
            HolderKey::Pkcs11(_, k) => *k,
        }
    }
}

/// A loaded, checked token file.
struct TokenFile {
    path: PathBuf,
    data: TokenFileData,
    key: HolderKey,
    bls: BlsSecretKey,
    server_key: VerifyingKey,
    ca: Certificate,
}

impl TokenFile {
    fn load(path: &Path) -> anyhow::Result<TokenFile> {
        let text = Secret::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the token file {}", path.display()))?,
        );
        let data: TokenFileData = serde_json::from_str(text.expose())
            .with_context(|| format!("{}: not a Tally token file", path.display()))?;
        let bad =
            |what: &str, e: &dyn std::fmt::Display| anyhow!("{}: {what}: {e}", path.display());
        if data.format != TOKEN_FORMAT {
            bail!(
                "{}: token file format {:?}, this tally reads {TOKEN_FORMAT:?}",
                path.display(),
                data.format
            );
        }
        let bls_bytes =
            Secret::new(hex::decode(data.bls_key.trim()).map_err(|e| bad("bls_key", &e))?);
        let bls = BlsSecretKey::from_bytes(bls_bytes.expose()).map_err(|e| bad("bls_key", &e))?;
        let certificate =
            Certificate::from_pem(&data.certificate).map_err(|e| bad("certificate", &e))?;
        let certified = certificate
            .public_key()
            .map_err(|e| bad("certificate", &e))?;
        let key = match (&data.signing_key, &data.pkcs11) {
            (Some(pem), None) => HolderKey::Software(
                SigningKey::from_pkcs8_pem(pem).map_err(|e| bad("signing_key", &e))?,
            ),
            (None, Some(r)) => HolderKey::Pkcs11(r.clone(), certified),
            _ => bail!(
                "{}: a token file holds exactly one of signing_key and pkcs11",
                path.display()
            ),
        };
        if certified != key.verifying_key() {
            bail!(
                "{}: the certificate is not for the token's signing key",
                path.display()
            );
        }
        let server_key = VerifyingKey::from_hex(data.node.server_key.trim())
            .map_err(|e| bad("node.server_key", &e))?;
        if server_key.fingerprint() != data.node.server_id {
            bail!(
                "{}: node.server_id is not the fingerprint of node.server_key",
                path.display()
            );
        }
        let ca = Certificate::from_pem(&data.node.ca_certificate)
            .map_err(|e| bad("node.ca_certificate", &e))?;
        Ok(TokenFile {
            path: path.to_path_buf(),
            data,
            key,
            bls,
            server_key,
            ca,
        })
    }

    /// Writes the token state back (temporary file, then rename).
    fn save(&self) -> anyhow::Result<()> {
        let text = Secret::new(serde_json::to_string_pretty(&self.data)? + "\n");
        replace_private_file(&self.path, text.expose().as_bytes())
            .with_context(|| format!("saving the token file {}", self.path.display()))
    }

    /// Field 6/7 value of this token's holder: SHA-256 of its Ed25519 key.
    fn fingerprint(&self) -> [u8; 32] {
        sha256(&self.key.verifying_key().to_bytes())
    }

    fn serial_hex(&self) -> String {
        hex::encode(self.data.token.serial)
    }

    fn proxy_bls_key(&self) -> anyhow::Result<BlsPublicKey> {
        BlsPublicKey::from_hex(self.data.node.proxy_bls_key.trim())
            .map_err(|e| anyhow!("the token file's node.proxy_bls_key: {e}"))
    }

    fn arbiter_key(&self) -> anyhow::Result<ArbiterPublicKey> {
        ArbiterPublicKey::from_hex(self.data.node.arbiter_key.trim())
            .map_err(|e| anyhow!("the token file's node.arbiter_key: {e}"))
    }

    /// Signs fields 1–7 with the key the receipt's version uses. A key in a PKCS#11 token
    /// signs there (PIN from `pin_file`, else `TALLY_PKCS11_PIN`), checked before it is used.
    fn sign(&self, fields: &Fields, pin_file: Option<&Path>) -> anyhow::Result<PartySignature> {
        let msg = fields.party_part();
        if fields.version == VERSION_BLS {
            return Ok(PartySignature::Bls(self.bls.sign(PARTY_DOMAIN, &msg)));
        }
        Ok(PartySignature::Ed25519(match &self.key {
            HolderKey::Software(k) => k.sign(PARTY_DOMAIN, &msg),
            HolderKey::Pkcs11(r, public) => {
                let pin = pkcs11::read_pin(pin_file)?;
                pkcs11::Token::open_ref(r, &pin)?.sign(r, public, PARTY_DOMAIN, &msg)?
            }
        }))
    }

    /// Where receipts pushed off the token go by default: `TOKEN_FILE.receipts/`.
    fn default_export_dir(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_os_string();
        name.push(".receipts");
        PathBuf::from(name)
    }
}

/// A sibling temporary path of `path` (same directory, so a rename is atomic).
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Flushes a directory entry change (a rename or a link) to disk, best effort.
fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = std::fs::File::open(parent) {
        let _ = dir.sync_all();
    }
}

/// Replaces `path` with `bytes` (mode 0600): a fresh temporary file, synced, renamed over it.
fn replace_private_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = temp_path(path);
    let _ = std::fs::remove_file(&tmp);
    tally_service::identity::write_private_file(&tmp, bytes)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("renaming onto {}", path.display()));
    }
    sync_parent(path);
    Ok(())
}

/// Creates `path` with `bytes` (mode 0600) all at once, never replacing an existing file: a
/// temporary file, synced, then hard-linked to its name (which fails if the name exists).
fn create_private_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = temp_path(path);
    let _ = std::fs::remove_file(&tmp);
    tally_service::identity::write_private_file(&tmp, bytes)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_parent(path);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("{} exists; it was not replaced", path.display())
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// Writes a public file (a receipt package, an exported receipt): temporary file, synced,
/// renamed to `path`.
fn write_public_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = temp_path(path);
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    sync_parent(path);
    Ok(())
}

// ----- small helpers -------------------------------------------------------------------------

fn parse<T: DeserializeOwned>(v: &Value, what: &str) -> anyhow::Result<T> {
    serde_json::from_value(v.clone())
        .with_context(|| format!("the node's answer is not {what}: {v}"))
}

fn hex_array<const N: usize>(what: &str, text: &str) -> anyhow::Result<[u8; N]> {
    let bytes = hex::decode(text.trim()).map_err(|_| anyhow!("{what}: not hex"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow!("{what}: expected {N} bytes"))
}

fn rfc3339_s(seconds: i64) -> String {
    Timestamp(seconds.saturating_mul(1_000_000)).to_rfc3339()
}

fn version_text(version: u8) -> &'static str {
    match version {
        VERSION_ED25519 => "1 (Ed25519 party signatures)",
        VERSION_BLS => "2 (BLS party signatures, fair exchange)",
        _ => "unknown",
    }
}

async fn node_view(c: &Client) -> anyhow::Result<ReceiptNodeView> {
    let v = c.call(Method::GET, "/v1/receipts/node", None, None).await?;
    parse(&v, "the node's receipt service")
}

async fn receipt_view(c: &Client, transaction: u64) -> anyhow::Result<ReceiptView> {
    let v = c
        .call(
            Method::GET,
            &format!("/v1/receipts/{transaction}"),
            None,
            None,
        )
        .await?;
    parse(&v, "a receipt")
}

/// `GET path` as raw bytes (a package of at most [`proto::PACKAGE_LEN_MAX`]), retried on
/// transport errors and 5xx like every read.
async fn fetch_bytes(c: &Client, path: &str) -> anyhow::Result<Vec<u8>> {
    let mut last_err = None;
    for attempt in 0..ATTEMPTS_MAX {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        let resp = match c
            .streaming(Method::GET, path)
            .timeout(CALL_TIMEOUT)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                let e = anyhow::Error::from(e);
                last_err = Some(anyhow!("cannot reach {}: {e:#}", c.base()));
                continue;
            }
        };
        let status = resp.status();
        if status.is_server_error() {
            last_err = Some(refusal(resp).await);
            continue;
        }
        if !status.is_success() {
            return Err(refusal(resp).await);
        }
        if resp
            .content_length()
            .is_some_and(|n| n > proto::PACKAGE_LEN_MAX as u64)
        {
            bail!(
                "the node's package is larger than {} bytes",
                proto::PACKAGE_LEN_MAX
            );
        }
        match resp.bytes().await {
            Ok(b) if b.len() <= proto::PACKAGE_LEN_MAX => return Ok(b.to_vec()),
            Ok(_) => bail!(
                "the node's package is larger than {} bytes",
                proto::PACKAGE_LEN_MAX
            ),
            Err(e) => {
                let e = anyhow::Error::from(e);
                last_err = Some(anyhow!("download from {} broke off: {e:#}", c.base()));
            }
        }
    }
    Err(last_err.unwrap_or_else(|| anyhow!("request failed")))
}

async fn ack(c: &Client, transaction: u64, receipt_number: u64) -> anyhow::Result<ReceiptView> {
    let v = c
        .call(
            Method::POST,
            &format!("/v1/receipts/{transaction}/ack"),
            Some(&json!({ "receipt_number": receipt_number })),
            None,
        )
        .await?;
    parse(&v, "a receipt")
}

/// Fields 1–7 as the node's view states them.
pub(crate) fn fields_of(v: &ReceiptView) -> anyhow::Result<Fields> {
    Ok(Fields {
        version: v.version,
        server_id: hex_array("server_id", &v.server_id)?,
        transaction: v.transaction,
        time: v.time,
        content_hash: hex_array("content_hash", &v.content_hash)?,
        party_a: hex_array("party_a_fingerprint", &v.party_a_fingerprint)?,
        party_b: hex_array("party_b_fingerprint", &v.party_b_fingerprint)?,
    })
}

/// What party B checks before it signs anything: the record is plain text and hashes to the
/// content hash, the receipt server is the token's, party B is this token's key, and the
/// version fits the exchange. Returns fields 1–7.
fn check_offer(v: &ReceiptView, tf: &TokenFile) -> anyhow::Result<Fields> {
    let fields = fields_of(v)?;
    proto::check_record(&v.record)
        .map_err(|e| anyhow!("refusing to sign transaction {}: {e}", v.transaction))?;
    if proto::content_hash(&v.record) != fields.content_hash {
        bail!(
            "refusing to sign transaction {}: the record does not hash to the offer's content hash",
            v.transaction
        );
    }
    if fields.server_id != sha256(&tf.server_key.to_bytes()) {
        bail!(
            "refusing to sign transaction {}: it is from receipt server {}, your token belongs to {}",
            v.transaction,
            v.server_id,
            tf.data.node.server_id
        );
    }
    if fields.party_b != tf.fingerprint() {
        bail!(
            "refusing to sign transaction {}: party B is {} (key {}), not this token's key {} ({})",
            v.transaction,
            v.party_b,
            v.party_b_fingerprint,
            hex::encode(tf.fingerprint()),
            tf.data.holder
        );
    }
    let expected = if v.fair { VERSION_BLS } else { VERSION_ED25519 };
    if fields.version != expected {
        bail!(
            "transaction {}: version {} does not fit a {} exchange",
            v.transaction,
            fields.version,
            if v.fair { "fair" } else { "plain" }
        );
    }
    Ok(fields)
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// The record between clear markers, exactly as it is (checked plain text beforehand).
fn record_block(record: &str) -> String {
    let mut out = format!(
        "----- record: {} bytes, sha256 {} -----\n{record}",
        record.len(),
        hex::encode(proto::content_hash(record))
    );
    if record.ends_with('\n') {
        out.push_str("----- end of record -----");
    } else {
        out.push_str("\n----- end of record (no newline at its end) -----");
    }
    out
}

fn offer_text(v: &ReceiptView, own: &str) -> String {
    format!(
        "transaction   {}\nversion       {}\ntime          {}\nparty A       {}  key {}\nparty B       {}  key {}{own}\nfair exchange {}\n{}",
        v.transaction,
        version_text(v.version),
        rfc3339_s(v.time),
        v.party_a,
        v.party_a_fingerprint,
        v.party_b,
        v.party_b_fingerprint,
        if v.fair { "yes" } else { "no" },
        record_block(&v.record)
    )
}

fn receipt_text(v: &ReceiptView) -> String {
    let mut out = format!(
        "transaction   {}\nstate         {}\nversion       {}\ntime          {}\ncontent hash  {}\nparty A       {}  key {}\nparty B       {}  key {}\nfair exchange {}",
        v.transaction,
        v.state,
        version_text(v.version),
        rfc3339_s(v.time),
        v.content_hash,
        v.party_a,
        v.party_a_fingerprint,
        v.party_b,
        v.party_b_fingerprint,
        if v.fair { "yes" } else { "no" },
    );
    for (name, value) in [
        ("warrant A", &v.warrant_a),
        ("warrant B", &v.warrant_b),
        ("digest", &v.digest),
    ] {
        if let Some(x) = value {
            out.push_str(&format!("\n{name:13} {x}"));
        }
    }
    if let Some(n) = v.receipt_number {
        out.push_str(&format!("\nreceipt no.   {n}"));
    }
    if let Some(t) = v.acked_at {
        out.push_str(&format!("\nacked         {}", t.to_rfc3339()));
    }
    out
}

fn receipt_row(v: &ReceiptView) -> String {
    format!(
        "{:>16}  {:9} {:4} {:16} {:16} {}",
        v.transaction,
        v.state,
        if v.fair { "fair" } else { "-" },
        v.party_a,
        v.party_b,
        rfc3339_s(v.time)
    )
}

fn warrant_text(w: &WarrantView) -> String {
    let mut out = format!(
        "warrant        {}\nissuer         {}\ncounterparties {}\nvalid          {} to {}",
        w.serial,
        w.issuer,
        if w.counterparties == "*" {
            "any"
        } else {
            w.counterparties.as_str()
        },
        w.not_before.to_rfc3339(),
        w.not_after.to_rfc3339()
    );
    if let Some(r) = w.revoked_at {
        out.push_str(&format!("\nrevoked        {}", r.to_rfc3339()));
    }
    out
}

// ----- tally token …  --------------------------------------------------------------------------

pub async fn token(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Init(a) => token_init(a).await,
        TokenCommand::List(a) => token_list(a).await,
        TokenCommand::Sync(a) => token_sync(a).await,
    }
}

async fn token_init(a: TokenInitArgs) -> anyhow::Result<ExitCode> {
    if a.file.exists() {
        bail!(
            "{} exists; a token file is never replaced",
            a.file.display()
        );
    }
    if let Some(dir) = a
        .file
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.is_dir())
    {
        bail!("{}: no such directory", dir.display());
    }
    let c = Client::new(&a.conn)?;
    let node = node_view(&c).await?;
    // The holder's Ed25519 key: made here, or inside the PKCS#11 token (removed again from
    // it if the token is not issued).
    let key = match &a.pkcs11.pkcs11_module {
        None => NewKey::Software(SigningKey::generate()),
        Some(module) => {
            let pin = pkcs11::read_pin(a.pkcs11.pkcs11_pin_file.as_deref())?;
            let p = &a.pkcs11;
            let t =
                pkcs11::Token::open(module, p.pkcs11_slot, p.pkcs11_token_label.as_deref(), &pin)?;
            let g = t.generate(module, p.pkcs11_token_label.as_deref())?;
            NewKey::Pkcs11(t, g)
        }
    };
    let issued = token_issue(&a, &c, node, &key).await;
    if let (Err(_), NewKey::Pkcs11(t, g)) = (&issued, &key) {
        t.destroy(g);
    }
    issued
}

/// The holder's new Ed25519 key (see `token init`).
enum NewKey {
    Software(SigningKey),
    Pkcs11(pkcs11::Token, pkcs11::Generated),
}

impl NewKey {
    fn verifying_key(&self) -> VerifyingKey {
        match self {
            NewKey::Software(k) => k.verifying_key(),
            NewKey::Pkcs11(_, g) => g.key,
        }
    }
}

/// `token init` once the key is made: the node certifies it, the file is written.
async fn token_issue(
    a: &TokenInitArgs,
    c: &Client,
    node: ReceiptNodeView,
    key: &NewKey,
) -> anyhow::Result<ExitCode> {
    let ca = Certificate::from_pem(&node.ca_certificate)
        .map_err(|e| anyhow!("the node's CA certificate: {e}"))?;
    let bls = BlsSecretKey::generate();
    let body = json!({
        "holder": a.holder,
        "role": a.role.as_str(),
        "public_key": key.verifying_key().to_hex(),
        "bls_key": bls.public_key().to_hex(),
        "slots": a.slots,
        "days": a.days,
    });
    // The keys of this run exist only here: a retry within the run reuses the key, a re-run
    // issues a new token (for new keys).
    let idem = uuid::Uuid::now_v7().to_string();
    let v = c
        .call(Method::POST, "/v1/tokens", Some(&body), Some(&idem))
        .await?;
    let issued: IssuedToken = parse(&v, "an issued token")?;
    let certificate = Certificate::from_pem(&issued.certificate)
        .map_err(|e| anyhow!("the node's certificate for {}: {e}", a.holder))?;
    if certificate.public_key().ok() != Some(key.verifying_key()) {
        bail!("the node certified another key than the one made here; nothing was saved");
    }
    if certificate_bls_key(&certificate).ok().flatten() != Some(bls.public_key().to_bytes()) {
        bail!("the node's certificate does not carry the BLS key made here; nothing was saved");
    }
    certificate
        .verify_issued_by(&ca, Timestamp::now().plus_seconds(CLOCK_SKEW_S))
        .or_else(|_| certificate.verify_issued_by(&ca, issued.created_at))
        .map_err(|e| anyhow!("the node's certificate does not trace to its CA: {e}"))?;
    let serial: [u8; SERIAL_LEN] = hex_array("serial", &issued.serial)?;
    let app_key = Secret::new(hex_array::<32>("app_key", &issued.app_key)?);
    let slots = u16::try_from(issued.slots)
        .map_err(|_| anyhow!("the node issued {} slots", issued.slots))?;
    let (signing_key, pkcs11) = match key {
        NewKey::Software(k) => (Some(k.to_pkcs8_pem()?.expose().clone()), None),
        NewKey::Pkcs11(t, g) => (
            None,
            Some(t.relabel(g, &format!("tally-token-{}", issued.serial))?),
        ),
    };
    let kept = match &pkcs11 {
        None => "it holds the private keys".to_string(),
        Some(r) => format!(
            "it holds the BLS and application keys; the Ed25519 key is {} in PKCS#11 token {}",
            r.key_label, r.token_serial
        ),
    };
    let data = TokenFileData {
        format: TOKEN_FORMAT.into(),
        holder: issued.holder.clone(),
        role: a.role.as_str().into(),
        token: Token::new(serial, *app_key.expose(), slots),
        signing_key,
        pkcs11,
        bls_key: hex::encode(bls.to_bytes().expose()),
        certificate: certificate.to_pem(),
        node,
    };
    let text = Secret::new(serde_json::to_string_pretty(&data)? + "\n");
    create_private_file(&a.file, text.expose().as_bytes()).with_context(|| {
        format!(
            "token {} was issued but its file could not be written (its keys are lost; issue \
             a new token)",
            issued.serial
        )
    })?;
    let summary = json!({
        "serial": issued.serial, "holder": issued.holder, "role": a.role.as_str(),
        "slots": slots, "certificate_fingerprint": certificate.fingerprint(),
        "key_fingerprint": key.verifying_key().fingerprint(),
        "certificate_not_after": certificate.not_after(),
        "file": a.file.display().to_string(),
        "key_store": if data.pkcs11.is_some() { "pkcs11" } else { "file" },
    });
    c.show(&summary, |_| {
        format!(
            "token         {}\nholder        {} ({})\nslots         {slots}\ncertificate   {} (valid until {})\nkey           {}\nfile          {} (mode 0600: {kept})",
            issued.serial,
            issued.holder,
            a.role.as_str(),
            certificate.fingerprint(),
            certificate.not_after().to_rfc3339(),
            key.verifying_key().fingerprint(),
            a.file.display()
        )
    });
    Ok(ExitCode::SUCCESS)
}

async fn token_list(a: TokenListArgs) -> anyhow::Result<ExitCode> {
    let Some(path) = &a.file else {
        let c = Client::new(&a.conn)?;
        let v = c.call(Method::GET, "/v1/tokens", None, None).await?;
        let tokens: Vec<TokenView> = parse(&v, "a list of tokens")?;
        c.show(&v, |_| {
            if tokens.is_empty() {
                return "(no tokens)".into();
            }
            tokens
                .iter()
                .map(|t| {
                    format!(
                        "{}  {:16} {:>4} slots  {} unacknowledged  issued {}",
                        t.serial,
                        t.holder,
                        t.slots,
                        t.unacked,
                        t.created_at.to_rfc3339()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        });
        return Ok(ExitCode::SUCCESS);
    };
    let tf = TokenFile::load(path)?;
    let t = &tf.data.token;
    let json = a_json(&a.conn);
    if json {
        let slots: Vec<Value> = t
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| match s {
                Some(s) => json!({
                    "slot": i, "receipt_number": s.receipt_number, "priority": s.priority,
                    "transaction": s.content.record.transaction, "time": s.content.record.time,
                    "content_hash": hex::encode(s.content.record.content_hash),
                }),
                None => json!({ "slot": i }),
            })
            .collect();
        let pending: Vec<Value> = t
            .pending
            .iter()
            .map(|p| json!({"slot": p.slot, "transaction": p.transaction, "priority": p.priority}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "serial": tf.serial_hex(), "holder": tf.data.holder, "role": tf.data.role,
                "slots": slots, "pending": pending,
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let used = t.slots.iter().filter(|s| s.is_some()).count();
    println!(
        "token {}  holder {} ({})  {used} of {} slots used",
        tf.serial_hex(),
        tf.data.holder,
        tf.data.role,
        t.slots.len()
    );
    println!(
        "{:>4}  {:>16}  {:>16}  {:20}  {:>8}",
        "slot", "receipt no.", "transaction", "time", "priority"
    );
    for (i, s) in t.slots.iter().enumerate() {
        match s {
            Some(s) => println!(
                "{i:>4}  {:>16}  {:>16}  {:20}  {:>8}",
                s.receipt_number,
                s.content.record.transaction,
                rfc3339_s(s.content.record.time),
                s.priority
            ),
            None => println!("{i:>4}  {:>16}", "(free)"),
        }
    }
    if t.pending.is_empty() {
        println!("no signature is waiting for its receipt");
    } else {
        println!(
            "waiting for the node's write (run `tally token sync` if a signing was interrupted):"
        );
        for p in &t.pending {
            println!(
                "  transaction {}  slot {}  priority {}",
                p.transaction, p.slot, p.priority
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether `--json` was given (the flag lives in [`Conn`]; a client without network is cheap).
fn a_json(conn: &Conn) -> bool {
    Client::new(conn).map(|c| c.json).unwrap_or(false)
}

async fn token_sync(a: TokenFileArgs) -> anyhow::Result<ExitCode> {
    let mut tf = TokenFile::load(&a.file)?;
    let c = Client::new(&a.conn)?;
    let serial = tf.serial_hex();
    let v = c
        .call(
            Method::GET,
            &format!("/v1/tokens/{serial}/writes"),
            None,
            None,
        )
        .await?;
    let writes: Vec<ReceiptView> = parse(&v, "a list of receipts")?;
    let mut acks = Vec::new();
    let mut lines = Vec::new();
    let (mut stored, mut refused) = (0usize, 0usize);
    for w in &writes {
        let Some(text) = &w.write else { continue };
        let outcome = hex::decode(text.trim())
            .map_err(|_| "the write is not hex".to_string())
            .and_then(|b| SecureWrite::from_bytes(&b).map_err(|e| e.to_string()))
            .and_then(|sw| {
                tf.data
                    .token
                    .store(&sw, &tf.server_key)
                    .map(|s| (sw.slot, s))
                    .map_err(|e| e.to_string())
            });
        let tx = w.transaction;
        match outcome {
            Ok((slot, Stored::New(n))) => {
                stored += 1;
                acks.push((tx, n));
                lines.push(format!(
                    "transaction {tx}  receipt {n}  slot {slot}  stored"
                ));
            }
            Ok((slot, Stored::Already(n))) => {
                acks.push((tx, n));
                lines.push(format!(
                    "transaction {tx}  receipt {n}  slot {slot}  already held (the ack was lost); acknowledging again"
                ));
            }
            Err(why) => {
                refused += 1;
                lines.push(format!("transaction {tx}  refused: {why}"));
            }
        }
    }
    // Saved before any ack: the node forgets a write once acked.
    if stored > 0 {
        tf.save()?;
    }
    let mut acked = 0usize;
    for (tx, n) in &acks {
        ack(&c, *tx, *n).await.with_context(|| {
            format!("acknowledging transaction {tx} (it is stored on the token; run sync again)")
        })?;
        acked += 1;
    }
    let summary = json!({
        "serial": serial, "writes": writes.len(), "stored": stored, "acknowledged": acked,
        "refused": refused, "lines": lines,
    });
    c.show(&summary, |_| {
        let mut out = lines.join("\n");
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!(
            "token {serial}: {} write(s) waiting, {stored} stored, {acked} acknowledged, {refused} refused",
            writes.len()
        ));
        out
    });
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

// ----- tally warrant … -------------------------------------------------------------------------

pub async fn warrant(cmd: WarrantCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        WarrantCommand::Issue(a) => warrant_issue(a).await,
        WarrantCommand::List(a) => {
            let c = Client::new(&a.conn)?;
            let v = c.call(Method::GET, "/v1/warrants", None, None).await?;
            let list: Vec<WarrantView> = parse(&v, "a list of warrants")?;
            c.show(&v, |_| {
                if list.is_empty() {
                    return "(no warrants)".into();
                }
                list.iter()
                    .map(|w| {
                        format!(
                            "{}  {:16} {:24} until {}{}",
                            w.serial,
                            w.issuer,
                            if w.counterparties == "*" {
                                "any"
                            } else {
                                &w.counterparties
                            },
                            w.not_after.to_rfc3339(),
                            if w.revoked_at.is_some() {
                                "  (revoked)"
                            } else {
                                ""
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(ExitCode::SUCCESS)
        }
        WarrantCommand::Revoke(a) => {
            let c = Client::new(&a.conn)?;
            let serial = a.serial.trim().to_ascii_lowercase();
            if serial.is_empty() || !serial.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("warrant serial {:?}: expected hex digits", a.serial);
            }
            let v = c
                .call(
                    Method::POST,
                    &format!("/v1/warrants/{serial}/revoke"),
                    Some(&json!({})),
                    None,
                )
                .await?;
            let w: WarrantView = parse(&v, "a warrant")?;
            c.show(&v, |_| warrant_text(&w));
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn warrant_issue(a: WarrantIssueArgs) -> anyhow::Result<ExitCode> {
    let tf = TokenFile::load(&a.token)?;
    let key = match &tf.key {
        HolderKey::Software(k) => k,
        HolderKey::Pkcs11(r, _) => bail!(
            "{}: the signing key is in a PKCS#11 token ({}); `tally warrant issue` needs a \
             software token key (the warrant certificate is built by a signer that takes a \
             software key only)",
            a.token.display(),
            r.key_label
        ),
    };
    let counterparties = if a.who.any {
        Counterparties::Any
    } else {
        Counterparties::Names(a.who.counterparties.clone())
    };
    let c = Client::new(&a.conn)?;
    let node = node_view(&c).await?;
    if node.server_key.trim() != tf.data.node.server_key.trim() {
        bail!(
            "the node's receipt key ({}) is not the one in your token file ({}): this token \
             belongs to another node",
            node.server_id,
            tf.data.node.server_id
        );
    }
    let bls_key = if a.no_fair {
        None
    } else {
        Some(
            BlsPublicKey::from_hex(node.proxy_bls_key.trim())
                .map_err(|e| anyhow!("the node's proxy BLS key: {e}"))?
                .to_bytes(),
        )
    };
    let terms = WarrantTerms {
        counterparties,
        bls_key,
    };
    let certificate = Certificate::from_pem(&tf.data.certificate)?;
    let now = Timestamp::now();
    let not_before = now
        .plus_seconds(-CLOCK_SKEW_S)
        .max(certificate.not_before());
    let not_after = now
        .plus_seconds(i64::from(a.days) * 86_400)
        .min(certificate.not_after());
    if not_after <= not_before {
        bail!(
            "your certificate expired ({}); ask the operator for a new token",
            certificate.not_after().to_rfc3339()
        );
    }
    let w = issue_warrant(
        &certificate,
        key,
        &tf.server_key,
        WARRANT_SUBJECT,
        &terms,
        not_before,
        not_after,
    )
    .map_err(|e| anyhow!("cannot issue the warrant: {e}"))?;
    let v = c
        .call(
            Method::POST,
            "/v1/warrants",
            Some(&json!({ "certificate": w.to_pem() })),
            None,
        )
        .await?;
    let view: WarrantView = parse(&v, "a warrant")?;
    c.show(&v, |_| {
        format!(
            "{}\nfair exchange  {}",
            warrant_text(&view),
            if terms.bls_key.is_some() {
                "yes (carries the node's BLS key)"
            } else {
                "no (plain receipts only)"
            }
        )
    });
    Ok(ExitCode::SUCCESS)
}

// ----- tally receipt … -------------------------------------------------------------------------

pub async fn receipt(cmd: ReceiptCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ReceiptCommand::Offer(a) => offer(a).await,
        ReceiptCommand::Sign(a) => sign(a).await,
        ReceiptCommand::Verify(a) => verify(a),
        ReceiptCommand::List(a) => {
            let c = Client::new(&a.conn)?;
            let v = c.call(Method::GET, "/v1/receipts", None, None).await?;
            let list: Vec<ReceiptView> = parse(&v, "a list of receipts")?;
            c.show(&v, |_| {
                if list.is_empty() {
                    return "(no receipts)".into();
                }
                let mut out = format!(
                    "{:>16}  {:9} {:4} {:16} {:16} {}\n",
                    "transaction", "state", "fair", "party A", "party B", "time"
                );
                out.push_str(&list.iter().map(receipt_row).collect::<Vec<_>>().join("\n"));
                out
            });
            Ok(ExitCode::SUCCESS)
        }
        ReceiptCommand::Show(a) => {
            let c = Client::new(&a.conn)?;
            let v = receipt_view(&c, a.transaction).await?;
            c.show(&serde_json::to_value(&v)?, |_| {
                format!("{}\n{}", receipt_text(&v), record_block(&v.record))
            });
            Ok(ExitCode::SUCCESS)
        }
        ReceiptCommand::Export(a) => {
            let c = Client::new(&a.conn)?;
            let bytes = fetch_bytes(&c, &format!("/v1/receipts/{}/package", a.transaction)).await?;
            let pkg = Package::from_bytes(&bytes)
                .map_err(|e| anyhow!("the node's package does not parse: {e}"))?;
            let out = a
                .out
                .clone()
                .unwrap_or_else(|| default_package_path(a.transaction));
            write_public_file(&out, &bytes)?;
            let digest = hex::encode(pkg.receipt.digest());
            c.show(
                &json!({"file": out.display().to_string(), "digest": digest, "bytes": bytes.len()}),
                |_| {
                    format!(
                        "package       {} ({} bytes)\ndigest        {digest}\ncheck it      tally receipt verify {} --ca CA.pem",
                        out.display(),
                        bytes.len(),
                        out.display()
                    )
                },
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn default_package_path(transaction: u64) -> PathBuf {
    PathBuf::from(format!("receipt-{transaction}.tally"))
}

async fn offer(a: OfferArgs) -> anyhow::Result<ExitCode> {
    let record = match (&a.record.record, &a.record.text) {
        (Some(path), _) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("--record {}", path.display()))?;
            String::from_utf8(bytes)
                .map_err(|_| anyhow!("--record {}: not UTF-8 text", path.display()))?
        }
        (None, Some(text)) => text.clone(),
        (None, None) => bail!("give the record with --record FILE or --text TEXT"),
    };
    proto::check_record(&record).map_err(|e| anyhow!("the record cannot be signed: {e}"))?;
    let c = Client::new(&a.conn)?;
    let body = json!({
        "record": record, "party_a": a.party_a, "party_b": a.party_b,
        "fair": a.fair, "proxy_b": a.proxy_b,
    });
    let key = idempotency_key(&a.idempotency_key);
    let v = c
        .call(Method::POST, "/v1/receipts", Some(&body), Some(&key))
        .await?;
    let view: ReceiptView = parse(&v, "a receipt")?;
    c.show(&v, |_| {
        let next = match view.state.as_str() {
            "offered" => format!(
                "\nnext          {} signs: tally receipt sign {} --token TOKEN_FILE",
                view.party_b, view.transaction
            ),
            "signed" | "acked" => {
                format!("\nnext          tally receipt export {}", view.transaction)
            }
            _ => String::new(),
        };
        format!("{}{next}", receipt_text(&view))
    });
    Ok(ExitCode::SUCCESS)
}

fn resolve_hint(tf: &TokenFile, transaction: u64) -> String {
    format!(
        "run `tally arbiter resolve {transaction} --token {}` to have the arbiter settle the exchange",
        tf.path.display()
    )
}

async fn sign(a: SignArgs) -> anyhow::Result<ExitCode> {
    let mut tf = TokenFile::load(&a.token)?;
    let c = Client::new(&a.conn)?;
    let tx = a.transaction;
    let view = receipt_view(&c, tx).await?;
    let fields = check_offer(&view, &tf)?;
    match view.state.as_str() {
        "offered" | "escrowed" => {}
        "signed" | "acked" | "resolved" => {
            eprintln!(
                "note: transaction {tx} is already {}; finishing it (token write, package)",
                view.state
            );
            return finish(&c, &mut tf, &view, &fields, &a).await;
        }
        other => bail!("transaction {tx} is {other}; there is nothing to sign"),
    }
    let shown = offer_text(&view, "  (you)");
    if c.json {
        eprintln!("{shown}");
    } else {
        println!("{shown}");
    }
    if !a.yes && !confirm("Sign?")? {
        eprintln!("not signed");
        return Ok(ExitCode::FAILURE);
    }
    if view.fair {
        // Blocks 305–309: escrow B's signature for the arbiter, receive A's, check it.
        let released = if view.state == tally_proto::receipt::flow::ReceiptState::Escrowed {
            // An earlier run escrowed already (a VES is randomised: it cannot be re-sent).
            Ok(view.signature_a.clone())
        } else {
            let ves = bls::encrypt_signature(
                &tf.bls,
                &tf.arbiter_key()?,
                PARTY_DOMAIN,
                &fields.party_part(),
            );
            c.call(
                Method::POST,
                &format!("/v1/receipts/{tx}/escrow"),
                Some(&json!({ "ves": ves.to_hex() })),
                None,
            )
            .await
            .and_then(|v| parse::<ReceiptView>(&v, "a receipt"))
            .map(|v| v.signature_a)
        };
        let released = match released {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: the escrow step failed: {e:#}");
                eprintln!("{}", resolve_hint(&tf, tx));
                return Ok(ExitCode::FAILURE);
            }
        };
        let good = released
            .as_deref()
            .and_then(|h| BlsSignature::from_hex(h.trim()).ok())
            .is_some_and(|sig| {
                tf.proxy_bls_key()
                    .is_ok_and(|k| k.verify(PARTY_DOMAIN, &fields.party_part(), &sig).is_ok())
            });
        if !good {
            eprintln!(
                "error: the node did not release a valid signature of party A; your signature was not sent"
            );
            eprintln!("{}", resolve_hint(&tf, tx));
            return Ok(ExitCode::FAILURE);
        }
        eprintln!("party A's signature verified (fair exchange); signing");
    }
    let signature_b = tf.sign(&fields, a.pkcs11_pin_file.as_deref())?;
    // Block 311: a fresh challenge and a slot, saved before the signature leaves.
    let mut challenge = [0u8; CHALLENGE_LEN];
    getrandom::fill(&mut challenge).map_err(|e| anyhow!("the OS random generator: {e}"))?;
    let (slot, displaced) = tf
        .data
        .token
        .begin(challenge, tx, fields.content_hash, a.priority);
    if let Some(old) = displaced {
        let dir = a
            .export_dir
            .clone()
            .unwrap_or_else(|| tf.default_export_dir());
        let path = export_slot(&dir, &tf, slot, &old)?;
        eprintln!(
            "the token is full: receipt {} (transaction {}) in slot {slot} was exported to {}",
            old.receipt_number,
            old.content.record.transaction,
            path.display()
        );
    }
    tf.save()?;
    let body = json!({
        "signature_b": signature_b.to_hex(),
        "token": { "serial": tf.serial_hex(), "challenge": hex::encode(challenge), "slot": slot },
    });
    let signed = match c
        .call(
            Method::POST,
            &format!("/v1/receipts/{tx}/sign"),
            Some(&body),
            None,
        )
        .await
        .and_then(|v| parse::<ReceiptView>(&v, "a receipt"))
    {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: signing failed: {e:#}");
            if view.fair {
                eprintln!("{}", resolve_hint(&tf, tx));
            } else {
                eprintln!(
                    "run this command again: if the node received your signature, it finishes \
                     the receipt; if not, it signs anew"
                );
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    finish(&c, &mut tf, &signed, &fields, &a).await
}

/// Blocks 315–317 and the package: stores the node's write on the token (saved before the
/// ack), acks it, downloads the package, verifies it against the token's CA and saves it.
async fn finish(
    c: &Client,
    tf: &mut TokenFile,
    view: &ReceiptView,
    fields: &Fields,
    a: &SignArgs,
) -> anyhow::Result<ExitCode> {
    let tx = view.transaction;
    let mut slot = None;
    let mut number = view.receipt_number;
    if let Some(text) = &view.write {
        let write = SecureWrite::from_bytes(
            &hex::decode(text.trim()).map_err(|_| anyhow!("the node's write is not hex"))?,
        )
        .map_err(|e| anyhow!("the node's write: {e}"))?;
        let n = match tf.data.token.store(&write, &tf.server_key) {
            Ok(Stored::New(n)) => n,
            Ok(Stored::Already(n)) => {
                eprintln!("note: the token already held this receipt; acknowledging again");
                n
            }
            Err(e) => {
                eprintln!(
                    "error: your token refused the node's write: {e}\nthe receipt is signed but \
                     not on your token and not acknowledged; the node offers it again to \
                     `tally token sync --file {}`",
                    tf.path.display()
                );
                return Ok(ExitCode::FAILURE);
            }
        };
        tf.save()?;
        ack(c, tx, n).await.with_context(|| {
            format!(
                "the receipt is on your token but the acknowledgement failed; run `tally token \
                 sync --file {}`",
                tf.path.display()
            )
        })?;
        slot = Some(write.slot);
        number = Some(n);
    } else if let Some(n) = number {
        slot = tf
            .data
            .token
            .slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.receipt_number == n))
            .and_then(|i| u16::try_from(i).ok());
    }
    let bytes = fetch_bytes(c, &format!("/v1/receipts/{tx}/package")).await?;
    let pkg = Package::from_bytes(&bytes)
        .map_err(|e| anyhow!("the node's receipt package does not parse: {e}"))?;
    let verified = proto::verify_package(&pkg, &tf.ca)
        .map_err(|e| anyhow!("the node's receipt package does NOT verify: {e}"))?;
    if verified.fields != *fields {
        bail!("the node's package is for other fields than the offer you signed");
    }
    if pkg.record.as_deref() != Some(view.record.as_str()) {
        bail!("the node's package carries another record than the one you signed");
    }
    let out = a.out.clone().unwrap_or_else(|| default_package_path(tx));
    write_public_file(&out, &bytes)?;
    let digest = hex::encode(pkg.receipt.digest());
    let summary = json!({
        "transaction": tx, "digest": digest, "receipt_number": number, "slot": slot,
        "package": out.display().to_string(), "verified": true,
    });
    c.show(&summary, |_| {
        format!(
            "transaction   {tx}\ndigest        {digest}\nreceipt no.   {}\nslot          {}\npackage       {}\nreceipt verified (against the node CA in your token file, {})",
            number.map_or_else(|| "- (not written to the token)".to_string(), |n| n.to_string()),
            slot.map_or_else(|| "-".to_string(), |s| s.to_string()),
            out.display(),
            tf.ca.fingerprint()
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// Writes a receipt pushed off the token to `dir/receipt-TX-NUMBER.token.json`.
fn export_slot(dir: &Path, tf: &TokenFile, slot: u16, s: &Slot) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let r = &s.content.record;
    let path = dir.join(format!(
        "receipt-{}-{}.token.json",
        r.transaction, s.receipt_number
    ));
    let body = json!({
        "format": SLOT_EXPORT_FORMAT,
        "token_serial": tf.serial_hex(),
        "holder": tf.data.holder,
        "slot_index": slot,
        "slot": s,
        "version": r.version,
        "transaction": r.transaction,
        "time": rfc3339_s(r.time),
        "content_hash": hex::encode(r.content_hash),
        "receipt_number": s.receipt_number,
        "server_id": hex::encode(s.content.server_id),
        "server_signature": s.content.server_signature.to_hex(),
    });
    write_public_file(
        &path,
        (serde_json::to_string_pretty(&body)? + "\n").as_bytes(),
    )?;
    Ok(path)
}

/// Prints why a package is not valid; exit status 1.
fn not_valid(why: impl std::fmt::Display) -> anyhow::Result<ExitCode> {
    eprintln!("receipt NOT valid: {why}");
    Ok(ExitCode::FAILURE)
}

fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let len = std::fs::metadata(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?
        .len();
    if len > proto::PACKAGE_LEN_MAX as u64 {
        return not_valid(format!(
            "the file is {len} bytes, a receipt package is at most {}",
            proto::PACKAGE_LEN_MAX
        ));
    }
    let bytes = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let pkg = match Package::from_bytes(&bytes) {
        Ok(p) => p,
        Err(e) => return not_valid(e),
    };
    let (ca, anchor) = match &a.ca {
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("--ca {}", path.display()))?;
            let ca = Certificate::from_pem(&pem)
                .map_err(|e| anyhow!("--ca {}: not a PEM certificate: {e}", path.display()))?;
            let anchor = format!(
                "CA certificate {} (fingerprint {})",
                path.display(),
                ca.fingerprint()
            );
            (ca, anchor)
        }
        None => {
            let Some(der) = &pkg.cert_ca else {
                return not_valid(
                    "the package carries no CA certificate; pass --ca with your operator's",
                );
            };
            let ca = match Certificate::from_der(der) {
                Ok(c) => c,
                Err(e) => return not_valid(format!("the package's CA certificate: {e}")),
            };
            let anchor = format!(
                "CA certificate from the package itself, fingerprint {} — compare it with your \
                 operator's; pass --ca to check against a known CA",
                ca.fingerprint()
            );
            (ca, anchor)
        }
    };
    let v = match proto::verify_package(&pkg, &ca) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("trust anchor: {anchor}");
            return not_valid(e);
        }
    };
    let included = match (&a.log, &pkg.journal) {
        (None, _) => None,
        (Some(_), None) => {
            return not_valid("the package carries no journal entry to look up in the log");
        }
        (Some(path), Some(entry)) => {
            match crate::log_export::check(entry, path, a.node_key.as_deref()) {
                Ok(i) => Some(i),
                Err(e) => return not_valid(format!("not in the log {}: {e:#}", path.display())),
            }
        }
    };
    let f = &v.fields;
    let digest = hex::encode(pkg.receipt.digest());
    let record_shown = a.show_record.then_some(pkg.record.as_deref()).flatten();
    if a.json {
        let out = json!({
            "valid": true, "trust_anchor": anchor, "ca_from_package": a.ca.is_none(),
            "ca_fingerprint": ca.fingerprint(),
            "version": f.version, "transaction": f.transaction,
            "time": f.timestamp().to_rfc3339(), "content_hash": hex::encode(f.content_hash),
            "server_id": hex::encode(f.server_id),
            "party_a": v.party_a, "party_a_fingerprint": hex::encode(f.party_a),
            "party_b": v.party_b, "party_b_fingerprint": hex::encode(f.party_b),
            "warrant_a": v.warrant_a, "warrant_b": v.warrant_b,
            "journal_seq": v.journal_seq, "journal_hash": v.journal_hash.map(hex::encode),
            "digest": digest, "record_included": pkg.record.is_some(), "record": record_shown,
            "log_checkpoint_seq": included.as_ref().map(|i| i.checkpoint_seq),
            "log_node_key": included.as_ref().map(|i| i.node_key.clone()),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("trust anchor  {anchor}");
    println!("version       {}", version_text(f.version));
    println!("transaction   {}", f.transaction);
    println!("time          {}", f.timestamp().to_rfc3339());
    println!("content hash  {}", hex::encode(f.content_hash));
    println!("server id     {}", hex::encode(f.server_id));
    for (who, name, fp, warrant) in [
        ("party A", &v.party_a, &f.party_a, &v.warrant_a),
        ("party B", &v.party_b, &f.party_b, &v.warrant_b),
    ] {
        let how = match warrant {
            Some(w) => format!("  signed by the node as proxy under warrant {w}"),
            None => "  signed by the party".to_string(),
        };
        println!("{who}       {name}  key {}{how}", hex::encode(fp));
    }
    match (v.journal_seq, v.journal_hash) {
        (Some(seq), Some(h)) => println!("journal       entry {seq}, hash {}", hex::encode(h)),
        _ => println!("journal       (no journal entry in the package)"),
    }
    if let Some(i) = &included {
        println!(
            "log           in the export, chained to the checkpoint at entry {} signed by node key {}{}",
            i.checkpoint_seq,
            i.node_key,
            if i.key_from_export {
                " (the key the export names: compare it; pass --node-key)"
            } else {
                ""
            }
        );
    }
    println!("digest        {digest}");
    match (&pkg.record, record_shown) {
        (None, _) => println!("record        (not in the package; only its hash is signed)"),
        (Some(_), Some(r)) => println!("{}", record_block(r)),
        (Some(r), None) => println!(
            "record        {} bytes, matches the content hash (--show-record prints it)",
            r.len()
        ),
    }
    println!("receipt verified");
    Ok(ExitCode::SUCCESS)
}

// ----- tally arbiter … -------------------------------------------------------------------------

fn arbiter_text(v: &ArbiterView) -> String {
    format!(
        "transaction   {}\ndecision      {}\nsignature     {}\nstate         {}",
        v.transaction,
        v.decision,
        v.signature.as_deref().unwrap_or("- (none released)"),
        v.receipt.state
    )
}

pub async fn arbiter(cmd: ArbiterCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ArbiterCommand::Abort(a) => {
            let c = Client::new(&a.conn)?;
            let v = c
                .call(
                    Method::POST,
                    &format!("/v1/arbiter/{}/abort", a.transaction),
                    Some(&json!({})),
                    None,
                )
                .await?;
            let view: ArbiterView = parse(&v, "an arbiter decision")?;
            c.show(&v, |_| {
                let mut out = arbiter_text(&view);
                if view.signature.is_some() {
                    out.push_str(
                        "\nparty B resolved first: the arbiter gave you B's signature instead of aborting",
                    );
                }
                out
            });
            Ok(ExitCode::SUCCESS)
        }
        ArbiterCommand::Resolve(a) => resolve(a).await,
    }
}

async fn resolve(a: ResolveArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let tx = a.transaction;
    let path = format!("/v1/arbiter/{tx}/resolve");
    let Some(token) = &a.token else {
        let v = c.call(Method::POST, &path, Some(&json!({})), None).await?;
        let view: ArbiterView = parse(&v, "an arbiter decision")?;
        c.show(&v, |_| arbiter_text(&view));
        return Ok(ExitCode::SUCCESS);
    };
    // Block 310: B deposits its signature and receives A's.
    let tf = TokenFile::load(token)?;
    let receipt = receipt_view(&c, tx).await?;
    let fields = check_offer(&receipt, &tf)?;
    if !receipt.fair {
        bail!("transaction {tx} is not a fair exchange; there is nothing to resolve");
    }
    if matches!(receipt.state.as_str(), "signed" | "acked") {
        bail!(
            "transaction {tx} completed ({}); there is nothing to resolve (`tally receipt sign \
             {tx} --token {}` fetches its package)",
            receipt.state,
            tf.path.display()
        );
    }
    let signature_b = tf.sign(&fields, None)?;
    let v = c
        .call(
            Method::POST,
            &path,
            Some(&json!({ "signature_b": signature_b.to_hex() })),
            None,
        )
        .await?;
    let view: ArbiterView = parse(&v, "an arbiter decision")?;
    let verified = view
        .signature
        .as_deref()
        .and_then(|h| BlsSignature::from_hex(h.trim()).ok())
        .is_some_and(|sig| {
            tf.proxy_bls_key()
                .is_ok_and(|k| k.verify(PARTY_DOMAIN, &fields.party_part(), &sig).is_ok())
        });
    let mut lines = vec![arbiter_text(&view)];
    lines.push(if verified {
        "party A's signature verified under the node's proxy key".to_string()
    } else {
        "party A's signature: none released, or it does NOT verify".to_string()
    });
    let mut package = None;
    if verified && matches!(view.receipt.state.as_str(), "resolved" | "signed" | "acked") {
        let bytes = fetch_bytes(&c, &format!("/v1/receipts/{tx}/package")).await?;
        let pkg = Package::from_bytes(&bytes)
            .map_err(|e| anyhow!("the node's receipt package does not parse: {e}"))?;
        proto::verify_package(&pkg, &tf.ca)
            .map_err(|e| anyhow!("the node's receipt package does NOT verify: {e}"))?;
        let out = a.out.clone().unwrap_or_else(|| default_package_path(tx));
        write_public_file(&out, &bytes)?;
        lines.push(format!(
            "package       {} (digest {}, verified)",
            out.display(),
            hex::encode(pkg.receipt.digest())
        ));
        package = Some(out.display().to_string());
    }
    let mut shown = v.clone();
    shown["signature_a_verified"] = json!(verified);
    shown["package"] = json!(package);
    c.show(&shown, |_| lines.join("\n"));
    Ok(if verified {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
