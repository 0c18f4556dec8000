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
//!
//! Layout: this file holds the command-line arguments and the entry points; `token`,
//! `warrant`, `protocol` (offer, sign, the fair exchange, the token write), `arbiter` and
//! `show` (lists, one receipt, export) talk to the node through the typed client
//! (`tally_client`, reached via `crate::client`); `verify` needs no network; `token_file` and
//! `files` keep the local files (the token file, packages, exported receipts) crash-safe.

mod arbiter;
mod files;
mod protocol;
mod show;
mod token;
mod token_file;
mod token_request;
mod verify;
mod warrant;

use crate::client::{Client, Conn};
use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

pub(crate) use protocol::fields_of;

/// How far back a certificate's or warrant's validity may start, for clocks that differ a
/// little.
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
    /// As the holder, with no key and no node: make your keys and a certification request
    /// signed with them (proof of possession). The keys stay in --keys (mode 0600); give the
    /// request (--out, no secret) to the operator, then run `tally token accept`.
    Request(TokenRequestArgs),
    /// As the operator: have the node certify a holder's request (`tally token request`) and
    /// write the answer (mode 0600: it carries the token's application key) for the holder.
    /// The same request file issues one token, however often it is run.
    Issue(TokenIssueArgs),
    /// As the holder: check the operator's answer against your keys and the node's CA, and
    /// write your token file.
    Accept(TokenAcceptArgs),
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
    /// The role as the node and the certificate name it.
    fn as_str(self) -> &'static str {
        match self {
            PartyRole::Customer => "customer",
            PartyRole::Merchant => "merchant",
            PartyRole::Manager => "manager",
        }
    }
}

/// `tally token init`.
#[derive(Args)]
pub struct TokenInitArgs {
    #[command(flatten)]
    ask: TokenAsk,
    /// Where to write the token file.
    #[arg(long, value_name = "PATH")]
    file: PathBuf,
    /// The arbiter node fair exchanges go to (its URL, learnt from its operator, not from the
    /// receipt node): its key is fetched from it and must be the one the receipt node gives
    /// the token, so your escrows are made for the arbiter you chose to trust.
    #[arg(long, value_name = "URL")]
    arbiter: Option<String>,
    #[command(flatten)]
    pkcs11: Pkcs11InitArgs,
    #[command(flatten)]
    conn: Conn,
}

/// What a token is asked for (`token init`, `token request`).
#[derive(Args)]
pub struct TokenAsk {
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
}

/// `tally token request`.
#[derive(Args)]
pub struct TokenRequestArgs {
    #[command(flatten)]
    ask: TokenAsk,
    /// Where to write your keys (mode 0600).
    #[arg(long, value_name = "PATH")]
    keys: PathBuf,
    /// Where to write the request for the operator.
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
}

/// `tally token issue`.
#[derive(Args)]
pub struct TokenIssueArgs {
    /// The holder's request (`tally token request --out`).
    request: PathBuf,
    /// Where to write the answer for the holder (mode 0600).
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
    #[command(flatten)]
    conn: Conn,
}

/// `tally token accept`.
#[derive(Args)]
pub struct TokenAcceptArgs {
    /// Your keys (`tally token request --keys`).
    #[arg(long, value_name = "PATH")]
    keys: PathBuf,
    /// The operator's answer (`tally token issue --out`).
    #[arg(long, value_name = "PATH")]
    issued: PathBuf,
    /// Where to write your token file.
    #[arg(long, value_name = "PATH")]
    file: PathBuf,
    /// The arbiter node fair exchanges go to (its URL, learnt from its operator, not from the
    /// receipt node): its key is fetched from it and must be the one the receipt node gives
    /// the token, so your escrows are made for the arbiter you chose to trust.
    #[arg(long, value_name = "URL")]
    arbiter: Option<String>,
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

/// `tally token list`.
#[derive(Args)]
pub struct TokenListArgs {
    /// Your token file: show what it holds (no network).
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    #[command(flatten)]
    conn: Conn,
}

/// `tally token sync`: a token file and the node.
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

/// `tally warrant issue`.
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

/// Whom a warrant lets the node sign with: named parties, or anyone.
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

/// `tally warrant revoke`.
#[derive(Args)]
pub struct WarrantRevokeArgs {
    /// The warrant's serial (hex, as `tally warrant list` shows it).
    serial: String,
    #[command(flatten)]
    conn: Conn,
}

/// `tally party …`
#[derive(Subcommand)]
pub enum PartyCommand {
    /// Revoke a party's certificate (operator only): it signs no new receipt (its pending
    /// offers cannot be signed, new offers naming it are refused); receipts completed before
    /// stand, and `tally receipt verify --online` reports the revocation. Issue the party a
    /// new token to let it sign again.
    Revoke(PartyRevokeArgs),
}

/// `tally party revoke`.
#[derive(Args)]
pub struct PartyRevokeArgs {
    /// The party (its certificate's CN, the token's holder).
    name: String,
    #[command(flatten)]
    conn: Conn,
}

/// A command that needs only the node (`warrant list`, `receipt list`).
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

/// `tally receipt offer`.
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

/// `tally receipt sign`.
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

/// `tally receipt verify` (no network).
#[derive(Args)]
pub struct VerifyArgs {
    /// The receipt package file.
    file: PathBuf,
    /// The node CA's certificate (PEM), obtained from your operator in a way you trust.
    /// Without it, the package is checked against the CA certificate inside it, which proves
    /// only that it is consistent: the command says so and exits 2, never 0.
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
    /// Also ask the node at this URL (no key needed) whether a certificate or warrant in the
    /// package was revoked: revoked after the receipt's time it stands (printed), before it
    /// the receipt is not valid (exit 1). With --json its answer follows as a second document.
    #[arg(long, value_name = "URL")]
    online: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// A command about one transaction (`receipt show`, `arbiter abort`).
#[derive(Args)]
pub struct TransactionArgs {
    /// The transaction id.
    transaction: u64,
    #[command(flatten)]
    conn: Conn,
}

/// `tally receipt export`.
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

/// `tally arbiter resolve`.
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
    /// With --token: resolve directly at the arbiter node at this URL (no key: your signature
    /// authenticates you), with what the receipt node showed you — for when the receipt node
    /// does not forward your resolve. Its key must be the one your escrow was made for.
    #[arg(long, value_name = "URL", requires = "token")]
    at: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

// ----- entry points ------------------------------------------------------------------------

/// `tally token …`: issue a token, list it or the node's, sync unacknowledged writes.
pub async fn token(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Init(a) => token::init(a).await,
        TokenCommand::Request(a) => token_request::request(a),
        TokenCommand::Issue(a) => token_request::issue(a).await,
        TokenCommand::Accept(a) => token_request::accept(a).await,
        TokenCommand::List(a) => token::list(a).await,
        TokenCommand::Sync(a) => token::sync(a).await,
    }
}

/// `tally party revoke`: the operator revokes a party's certificate.
pub async fn party(cmd: PartyCommand) -> anyhow::Result<ExitCode> {
    let PartyCommand::Revoke(a) = cmd;
    let c = Client::new(&a.conn)?;
    let r = c.api.party_revoke(&a.name).await?;
    c.show(&r, |r| {
        format!(
            "party {}: certificate {} revoked at {}; it signs no new receipt",
            r.party,
            r.certificate_serial,
            r.revoked_at.to_rfc3339()
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// `tally warrant …`: warrant the node to sign as party A, list, revoke.
pub async fn warrant(cmd: WarrantCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        WarrantCommand::Issue(a) => warrant::issue(a).await,
        WarrantCommand::List(a) => warrant::list(a).await,
        WarrantCommand::Revoke(a) => warrant::revoke(a).await,
    }
}

/// `tally receipt …`: offer, sign, verify offline, list, show, export.
pub async fn receipt(cmd: ReceiptCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ReceiptCommand::Offer(a) => protocol::offer(a).await,
        ReceiptCommand::Sign(a) => protocol::sign(a).await,
        ReceiptCommand::Verify(a) => verify::verify(a).await,
        ReceiptCommand::List(a) => show::list(a).await,
        ReceiptCommand::Show(a) => show::show(a).await,
        ReceiptCommand::Export(a) => protocol::export(a).await,
    }
}

/// `tally arbiter …`: abort or resolve a fair exchange.
pub async fn arbiter(cmd: ArbiterCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ArbiterCommand::Abort(a) => arbiter::abort(a).await,
        ArbiterCommand::Resolve(a) => arbiter::resolve(a).await,
    }
}

#[cfg(test)]
mod tests {
    /// Checks that `value` prints as the `json!` map it replaced did: keys in alphabetical
    /// order at every level, so the `--json` output of a summary made here stays byte for byte.
    pub(super) fn sorted_like_before<T: serde::Serialize>(value: &T) {
        let typed = serde_json::to_string_pretty(value).expect("serialize");
        let map = serde_json::to_value(value).expect("to a map");
        let sorted = serde_json::to_string_pretty(&map).expect("serialize");
        assert_eq!(typed, sorted);
    }
}
