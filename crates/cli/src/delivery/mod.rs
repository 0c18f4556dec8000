//! Locked delivery from the command line (SPEC D1–D11; the API is
//! `docs/protocols/delivery-api.md`, the package format `docs/protocols/delivery.md`).
//!
//! A merchant adds a product (`tally product add`: create, upload each file, publish); a buyer
//! buys it (`tally buy`), which downloads the sale's locked package; the buyer checks it
//! offline (`tally package inspect`), pays by the reference code (`tally pay --reference`, a
//! signed notification from a payment receiver, or `package inspect --ack --debit-account`),
//! and unlocks it (`tally package unlock --fetch`). Reports, complaints, receivers and refunds
//! complete the set.
//!
//! Key decisions:
//! * **Files of any size in constant memory.** Uploads stream from disk into the request body
//!   (hashed on the way, so the node's `plain_sha256` is checked against the file); downloads
//!   stream into `FILE.part`, resume with `Range` after an interruption, and become `FILE` only
//!   when complete. Inspecting and unlocking read the package once, as a stream, through
//!   `tally_proto::delivery` (no network: a package is checked before anyone is paid).
//! * **Nothing from a package that did not verify is shown.** `package inspect` prints the
//!   instruction file only when `inspect` accepted every byte and the signature; otherwise it
//!   prints the refusal alone (the instruction of a tampered package could name another
//!   account to pay).
//! * **Typos fail before any request.** Reference codes carry a check character and are parsed
//!   locally; ids, amounts, times and keys are checked before the first request.
//! * **Retry-safe money.** Every call that creates a sale or a product or pays by a reference
//!   code carries an `Idempotency-Key` (generated and printed unless `--idempotency-key` is
//!   given). The acknowledgement's debit, a refund and a complaint need none: the node debits a
//!   sale once and refunds a payment once, and a repeated complaint only repeats its message.
//! * **Typed answers.** Requests are built from, and answers read as, the wire types of
//!   `tally_client::wire::delivery`; `--json` prints the answer as that type serializes it,
//!   which is the node's JSON. Refusals are told apart by their stable code, never by text.
//!
//! Rejected: buffering an upload to learn its hash first (a second pass over a 4 GB file);
//! decrypting in place (a half-written product would look like a product); trusting the
//! node's key by default without saying so (without `--trust`, the signer is printed for the
//! user to compare).
//!
//! Layout: this file holds the arguments (clap) and the entry points; [`products`] adds and
//! shows products, [`sales`] buys and downloads through [`download`] (resumable), [`offline`]
//! inspects and unlocks packages, [`payments`] pays, refunds, sets receivers and files
//! complaints, [`report`] prints the sales report, and [`common`] checks arguments and draws
//! progress bars.

mod common;
mod download;
mod offline;
mod payments;
mod products;
mod report;
mod sales;

pub use offline::package;
pub use payments::{complaint, pay, payment, receiver};
pub use products::product;
pub use report::report;
pub use sales::buy;

use crate::client::Conn;
use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Bytes read or written per step when streaming files.
const CHUNK_LEN: usize = 256 * 1024;

// ----- clap: raw arguments -----------------------------------------------------------------

/// `tally product …`
// Parsed once per run: the size of the `add` variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum ProductCommand {
    /// Add a product: create it, upload the product file and the documents (streamed from
    /// disk, sealed by the node as they arrive), then publish it for sale. Prints the product
    /// id and its entries with their SHA-256. Re-running with the same --idempotency-key
    /// resumes: files already uploaded are not sent again.
    Add(ProductAddArgs),
    /// List the products you can see.
    List(ConnArgs),
    /// Show one product and its entries.
    Show(ProductIdArgs),
    /// Withdraw a product: no new sales; packages already sold stay downloadable.
    Withdraw(ProductIdArgs),
}

/// `tally product add`: the product, its files, and the node.
#[derive(Args)]
pub struct ProductAddArgs {
    /// The product's name, shown in the instruction file.
    #[arg(long)]
    title: String,
    /// The price with currency, e.g. "9.90 EUR".
    #[arg(long)]
    price: String,
    /// The account credited by payments (your merchant account id).
    #[arg(long, value_name = "ACCOUNT_ID")]
    pay_to: String,
    /// The product file (the entry of kind `product`); its file name is the entry's name.
    #[arg(long, value_name = "PRODUCT_FILE")]
    file: PathBuf,
    /// A document shipped with the product (kind `document`, locked like the product);
    /// repeat for several.
    #[arg(long = "doc", value_name = "FILE")]
    docs: Vec<PathBuf>,
    #[command(flatten)]
    licence: LicenceArgs,
    /// How to pay and unlock, in your words (the instruction file's text).
    #[arg(long, value_name = "TEXT")]
    instructions: Option<String>,
    /// Template of the registration file each sale carries for the producer (UTF-8).
    #[arg(long, value_name = "FILE")]
    registration_template_file: Option<PathBuf>,
    /// The producer, when it is not you (it sees the sales in its reports).
    #[arg(long, value_name = "NAME")]
    producer: Option<String>,
    /// Retry-safe key for creating the product; generated and printed when absent.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

/// The licence is required (it is part of every instruction file): as text or from a file.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct LicenceArgs {
    /// The licence terms, as text (shown in the instruction file).
    #[arg(long, value_name = "TEXT")]
    licence: Option<String>,
    /// The licence terms, read from a UTF-8 file.
    #[arg(long, value_name = "FILE")]
    licence_file: Option<PathBuf>,
}

/// `tally product show|withdraw ID`.
#[derive(Args)]
pub struct ProductIdArgs {
    /// The product id.
    id: String,
    #[command(flatten)]
    conn: Conn,
}

/// A command that needs only the node.
#[derive(Args)]
pub struct ConnArgs {
    #[command(flatten)]
    conn: Conn,
}

/// `tally buy PRODUCT`: the sale asked for, and where its package goes.
#[derive(Args)]
pub struct BuyArgs {
    /// The product id.
    product: String,
    /// Where the node sends the unlock key once the sale is paid: email, sms, webhook or dev.
    #[arg(long)]
    channel: String,
    /// The address on that channel.
    #[arg(long)]
    address: String,
    /// The buyer's name, as the registration file should carry it.
    #[arg(long)]
    name: Option<String>,
    /// Where to save the package. Default: REFERENCE.tallypkg in the current directory.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Retry-safe key: the same key returns the first sale. Generated and printed when absent.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

/// `tally package …`
#[derive(Subcommand)]
pub enum PackageCommand {
    /// Download a sale's package into FILE.part, then rename it to FILE once complete. If
    /// FILE.part exists (an interrupted download), it resumes where it stopped.
    Download(DownloadArgs),
    /// Check a package offline: every entry, the digest and the node's signature. Only a
    /// package that verified shows its instruction file (title, price, where to pay, licence,
    /// reference code); any other is refused with what is wrong. With --ack, tell the node
    /// the package arrived intact (and with --debit-account, pay for it at once).
    Inspect(InspectArgs),
    /// Unlock a package: verify it, then decrypt every entry into a directory, every chunk
    /// authenticated (version 1 packages also check each file's SHA-256 in the signed header);
    /// prints each file's SHA-256.
    Unlock(UnlockArgs),
}

/// `tally package download SALE`.
#[derive(Args)]
pub struct DownloadArgs {
    /// The sale id (printed by `tally buy`).
    sale: String,
    /// Where to save the package. Default: REFERENCE.tallypkg in the current directory.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(flatten)]
    conn: Conn,
}

/// `tally package inspect FILE`, and the acknowledgement with `--ack`.
#[derive(Args)]
pub struct InspectArgs {
    /// The package file.
    file: PathBuf,
    /// The node key (Ed25519 public key, hex) the package must be signed by. Without it, the
    /// signer is printed for you to compare.
    #[arg(long, value_name = "NODE_KEY_HEX")]
    trust: Option<String>,
    /// Send the delivery acknowledgement (the package's digest) to the node.
    #[arg(long)]
    ack: bool,
    /// With --ack: pay the sale from this account now; the key is released at once.
    #[arg(long, value_name = "ACCOUNT_ID", requires = "ack")]
    debit_account: Option<String>,
    /// With --ack: sign the acknowledgement with this Ed25519 key (PKCS#8 PEM file), so the
    /// merchant holds proof that you received the package intact.
    #[arg(long, value_name = "PEM_FILE", requires = "ack")]
    sign_key: Option<PathBuf>,
    /// Not needed (accepted for older scripts): the node records an acknowledgement once and
    /// debits a sale once, so repeating --ack is safe.
    #[arg(long, requires = "ack")]
    idempotency_key: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

/// `tally package unlock FILE`.
#[derive(Args)]
pub struct UnlockArgs {
    /// The package file.
    file: PathBuf,
    #[command(flatten)]
    key: UnlockKeyArgs,
    /// The directory to unpack to. Default: a directory named after the reference code, next
    /// to the package.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The node key (hex) the package must be signed by.
    #[arg(long, value_name = "NODE_KEY_HEX")]
    trust: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

/// The unlock key: given, or fetched from the node.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct UnlockKeyArgs {
    /// The unlock key (64 hex digits), as received on your channel.
    #[arg(long, value_name = "HEX")]
    key: Option<String>,
    /// Fetch the unlock key from the node (the sale must be paid).
    #[arg(long)]
    fetch: bool,
}

/// `tally pay --reference CODE --from ACCOUNT`.
#[derive(Args)]
pub struct PayArgs {
    /// The sale's reference code, as printed or in the instruction file (case, spaces and
    /// dashes do not matter).
    #[arg(long, value_name = "CODE")]
    reference: String,
    /// The account debited.
    #[arg(long, value_name = "ACCOUNT_ID")]
    from: String,
    /// The amount, e.g. "9.90 EUR". Default: the sale's price.
    #[arg(long)]
    amount: Option<String>,
    /// Retry-safe key; generated and printed when absent.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

/// `tally report …`
#[derive(Subcommand)]
pub enum ReportCommand {
    /// Sales with what was paid and when, and the fingerprint of each unlock key (for
    /// matching registrations).
    Sales(ReportSalesArgs),
}

/// How `tally report sales` prints.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Aligned columns and totals.
    Table,
    /// The node's CSV, verbatim.
    Csv,
    /// The node's JSON, verbatim.
    Json,
}

/// `tally report sales`: the filter and the format.
#[derive(Args)]
pub struct ReportSalesArgs {
    /// Only this producer's products.
    #[arg(long)]
    producer: Option<String>,
    /// Only this product.
    #[arg(long, value_name = "ID")]
    product: Option<String>,
    /// Sales made at or after this time (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    from: Option<String>,
    /// Sales made before this time (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    to: Option<String>,
    /// Output format (--json is --format json).
    #[arg(long, value_enum)]
    format: Option<ReportFormat>,
    #[command(flatten)]
    conn: Conn,
}

/// `tally complaint …`
#[derive(Subcommand)]
pub enum ComplaintCommand {
    /// The unlock key was lost: the node sends it again (the sale must be paid).
    KeyLost(ComplaintArgs),
    /// The package does not verify: the node offers it again.
    PackageBroken(ComplaintArgs),
    /// The unlocked product was deleted: the node offers the package again.
    ProductDeleted(ComplaintArgs),
    /// Ask the merchant for a refund (--reason says why); the merchant or the operator
    /// refunds with `tally payment refund`.
    Refund(ComplaintArgs),
    /// Send your copy back for checking (the seed's step): is FILE the package the node signed
    /// for this sale? Exits 1 when it is not.
    CheckCopy(ComplaintArgs),
}

/// `tally complaint KIND --reference CODE`.
#[derive(Args)]
pub struct ComplaintArgs {
    /// The sale's reference code.
    #[arg(long, value_name = "CODE")]
    reference: String,
    /// refund: why you ask for it.
    #[arg(long)]
    reason: Option<String>,
    /// check-copy: your copy of the package.
    #[arg(long, value_name = "FILE")]
    file: Option<std::path::PathBuf>,
    /// Not needed (accepted for older scripts): a repeated complaint only repeats its message.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

/// `tally receiver …`
#[derive(Subcommand)]
pub enum ReceiverCommand {
    /// Configure a payment receiver (operator only): a bank or payment service that notifies
    /// the node of payments quoting a reference code, signed with an HMAC secret or an Ed25519
    /// key. Its notifications credit the merchant from --account.
    Set(ReceiverSetArgs),
}

/// `tally receiver set NAME`.
#[derive(Args)]
pub struct ReceiverSetArgs {
    /// The receiver's name (its notifications go to /v1/receivers/NAME/notifications).
    name: String,
    /// The operator's account debited by this receiver's payments (a settlement account).
    #[arg(long, value_name = "ID")]
    account: String,
    #[command(flatten)]
    key: ReceiverKeyArgs,
    #[command(flatten)]
    conn: Conn,
}

/// How the receiver signs: a shared HMAC secret or an Ed25519 key.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct ReceiverKeyArgs {
    /// A file holding the shared HMAC-SHA256 secret: its bytes, less one trailing newline.
    #[arg(long, value_name = "FILE")]
    hmac_secret_file: Option<PathBuf>,
    /// The receiver's Ed25519 public key (64 hex digits).
    #[arg(long, value_name = "HEX")]
    ed25519_public: Option<String>,
}

/// `tally payment …`
#[derive(Subcommand)]
pub enum PaymentCommand {
    /// Refund a payment that released nothing (wrong amount, duplicate, unknown reference),
    /// or any payment as the operator: the money goes back where it came from.
    Refund(RefundArgs),
}

/// `tally payment refund PAYMENT`.
#[derive(Args)]
pub struct RefundArgs {
    /// The payment id.
    payment: String,
    /// Not needed (accepted for older scripts): the node refunds a payment once.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    conn: Conn,
}
