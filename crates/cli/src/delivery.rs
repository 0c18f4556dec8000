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
//! * **Retry-safe money.** Every call that creates a sale or a product or moves money carries
//!   an `Idempotency-Key` (generated and printed unless `--idempotency-key` is given).
//!
//! Rejected: buffering an upload to learn its hash first (a second pass over a 4 GB file);
//! decrypting in place (a half-written product would look like a product); trusting the
//! node's key by default without saying so (without `--trust`, the signer is printed for the
//! user to compare).

use crate::client::{Conn, idempotency_key};
use crate::legacy::{
    ATTEMPTS_MAX, ApiFailure, CALL_TIMEOUT, LegacyClient as Client, refusal, s, urlencode,
};
use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, IF_RANGE, RANGE};
use serde_json::{Value, json};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tally_kernel::crypto::VerifyingKey;
use tally_kernel::crypto::kdf::{Sha256Stream, sha256};
use tally_kernel::{Amount, Secret, Timestamp};
use tally_proto::delivery::{self, Inspected, PackageError, ReferenceCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

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

#[derive(Args)]
pub struct ProductIdArgs {
    /// The product id.
    id: String,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct ConnArgs {
    #[command(flatten)]
    conn: Conn,
}

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
    /// Unlock a package: verify it, then decrypt every entry into a directory, each checked
    /// against the SHA-256 in the signed header.
    Unlock(UnlockArgs),
}

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
    /// Retry-safe key for --ack; generated and printed when absent.
    #[arg(long, requires = "ack")]
    idempotency_key: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

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

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Aligned columns and totals.
    Table,
    /// The node's CSV, verbatim.
    Csv,
    /// The node's JSON, verbatim.
    Json,
}

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
}

#[derive(Args)]
pub struct ComplaintArgs {
    /// The sale's reference code.
    #[arg(long, value_name = "CODE")]
    reference: String,
    /// Retry-safe key; generated and printed when absent.
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

#[derive(Args)]
pub struct RefundArgs {
    /// The payment id.
    payment: String,
    /// Retry-safe key; generated and printed when absent.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

// ----- products ----------------------------------------------------------------------------

/// A file to upload, checked before the first request.
struct Upload {
    path: PathBuf,
    name: String,
    kind: &'static str,
    len: u64,
}

pub async fn product(cmd: ProductCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ProductCommand::Add(a) => product_add(a).await,
        ProductCommand::List(a) => {
            let c = Client::new(&a.conn)?;
            c.get_show("/v1/products", |v| {
                let rows = v.as_array().cloned().unwrap_or_default();
                if rows.is_empty() {
                    return "(no products)".to_string();
                }
                rows.iter()
                    .map(|p| {
                        format!(
                            "{}  {:9} {:>14}  {}",
                            s(p, "/id"),
                            s(p, "/state"),
                            money(p, "/price"),
                            s(p, "/title")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .await
        }
        ProductCommand::Show(a) => {
            let c = Client::new(&a.conn)?;
            let id = id_arg("product", &a.id)?;
            c.get_show(&format!("/v1/products/{id}"), product_summary)
                .await
        }
        ProductCommand::Withdraw(a) => {
            let c = Client::new(&a.conn)?;
            let id = id_arg("product", &a.id)?;
            let v = c
                .call(Method::DELETE, &format!("/v1/products/{id}"), None, None)
                .await?;
            c.show(&v, |v| {
                format!(
                    "{}\nwithdrawn: no new sales; packages already sold stay downloadable",
                    product_summary(v)
                )
            });
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn product_add(a: ProductAddArgs) -> anyhow::Result<ExitCode> {
    // Stage two: everything checked before the first request.
    let price = amount_arg("--price", &a.price)?;
    let pay_to = id_arg("--pay-to", &a.pay_to)?;
    let mut uploads = vec![upload_arg("--file", &a.file, "product")?];
    for d in &a.docs {
        uploads.push(upload_arg("--doc", d, "document")?);
    }
    for (i, u) in uploads.iter().enumerate() {
        if uploads[..i].iter().any(|o| o.name == u.name) {
            bail!("two files are named {:?}: entry names must differ", u.name);
        }
    }
    let licence = match (&a.licence.licence, &a.licence.licence_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => read_text("--licence-file", f)?,
        (None, None) => bail!("give --licence TEXT or --licence-file FILE"),
    };
    if licence.trim().is_empty() {
        bail!("the licence is empty");
    }
    let template = match &a.registration_template_file {
        Some(f) => Some(read_text("--registration-template-file", f)?),
        None => None,
    };
    let c = Client::new(&a.conn)?;
    let body = json!({
        "title": a.title,
        "price": price.to_string(),
        "pay_to": pay_to,
        "producer": a.producer,
        "licence": licence,
        "instructions": a.instructions.clone().unwrap_or_default(),
        "registration_template": template,
    });
    let key = idempotency_key(&a.idempotency_key);
    let mut product = c
        .call(Method::POST, "/v1/products", Some(&body), Some(&key))
        .await?;
    let id = s(&product, "/id").to_string();
    if id == "-" {
        bail!("the node's answer has no product id: {product}");
    }
    if !c.json {
        println!("draft     {id}");
    }
    for u in &uploads {
        if already_uploaded(&product, u).await? {
            eprintln!("{}: already uploaded", u.name);
            continue;
        }
        let entry = upload_entry(&c, &id, u).await?;
        if !c.json {
            println!("uploaded  {}", entry_line(&entry));
        }
    }
    if s(&product, "/state") != "active" {
        product = c
            .call(
                Method::POST,
                &format!("/v1/products/{id}/publish"),
                Some(&json!({})),
                Some(&format!("{key}/publish")),
            )
            .await?;
    }
    c.show(&product, product_summary);
    Ok(ExitCode::SUCCESS)
}

/// A file given with `flag`, readable, with a name usable as an entry name.
fn upload_arg(flag: &str, path: &Path, kind: &'static str) -> anyhow::Result<Upload> {
    let meta = std::fs::metadata(path).with_context(|| format!("{flag} {}", path.display()))?;
    if !meta.is_file() {
        bail!("{flag} {}: not a file", path.display());
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{flag} {}: the file name is not UTF-8", path.display()))?;
    // The package header's rule for entry names (tally_proto::delivery).
    if name.len() > 200 || name.contains(['/', '\\', '\0']) {
        bail!(
            "{flag} {}: the file name must be a plain name of at most 200 bytes",
            path.display()
        );
    }
    Ok(Upload {
        path: path.to_path_buf(),
        name: name.to_string(),
        kind,
        len: meta.len(),
    })
}

/// Whether `product` (as the node has it) already holds `u` byte for byte: a re-run of an
/// interrupted `product add` with the same key skips those files.
async fn already_uploaded(product: &Value, u: &Upload) -> anyhow::Result<bool> {
    let entries = product
        .get("entries")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(e) = entries.iter().find(|e| s(e, "/name") == u.name) else {
        return Ok(false);
    };
    if e.get("plain_len").and_then(Value::as_u64) != Some(u.len) || s(e, "/kind") != u.kind {
        return Ok(false);
    }
    let path = u.path.clone();
    let digest = tokio::task::spawn_blocking(move || -> anyhow::Result<[u8; 32]> {
        let mut f = std::fs::File::open(&path)?;
        let mut hash = Sha256Stream::new();
        let mut buf = vec![0_u8; CHUNK_LEN];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok(hash.finish());
            }
            hash.update(&buf[..n]);
        }
    })
    .await??;
    Ok(s(e, "/plain_sha256").eq_ignore_ascii_case(&hex(&digest)))
}

/// PUTs one file, streamed from disk in [`CHUNK_LEN`] pieces (constant memory for any size),
/// hashing it on the way; the node's `plain_len` and `plain_sha256` must match.
async fn upload_entry(c: &Client, product: &str, u: &Upload) -> anyhow::Result<Value> {
    let file = tokio::fs::File::open(&u.path)
        .await
        .with_context(|| format!("opening {}", u.path.display()))?;
    let bar = bytes_bar(u.len, format!("uploading {}", u.name));
    // The digest is complete when the last of the `len` bytes is read (the connection takes
    // exactly Content-Length bytes and may not poll the stream again for its end).
    let (digest_tx, digest_rx) = tokio::sync::oneshot::channel::<[u8; 32]>();
    let len = u.len;
    let hash = if len == 0 {
        let _ = digest_tx.send(Sha256Stream::new().finish());
        None
    } else {
        Some((Sha256Stream::new(), digest_tx))
    };
    let state = (file, bar.clone(), hash, 0_u64);
    let body =
        futures::stream::try_unfold(state, move |(mut file, bar, mut hash, read)| async move {
            let mut buf = vec![0_u8; CHUNK_LEN];
            let n = file.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(None);
            }
            buf.truncate(n);
            let read = read + n as u64;
            if let Some((h, _)) = hash.as_mut() {
                h.update(&buf);
            }
            if read == len
                && let Some((h, tx)) = hash.take()
            {
                let _ = tx.send(h.finish());
            }
            bar.inc(n as u64);
            Ok(Some((buf, (file, bar, hash, read))))
        });
    let path = format!(
        "/v1/products/{product}/entries/{}?kind={}",
        urlencode(&u.name),
        u.kind
    );
    let sent = c
        .streaming(Method::PUT, &path)
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(CONTENT_LENGTH, u.len)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await;
    bar.finish_and_clear();
    let resp = sent.with_context(|| format!("uploading {} to {}", u.path.display(), c.base()))?;
    if !resp.status().is_success() {
        return Err(refusal(resp)
            .await
            .context(format!("uploading {}", u.path.display())));
    }
    let entry: Value = resp
        .json()
        .await
        .with_context(|| format!("the node's answer to uploading {}", u.name))?;
    let digest = digest_rx.await.map_err(|_| {
        anyhow!(
            "{}: the file changed size during the upload",
            u.path.display()
        )
    })?;
    let stored_len = entry.get("plain_len").and_then(Value::as_u64);
    if stored_len != Some(u.len) || !s(&entry, "/plain_sha256").eq_ignore_ascii_case(&hex(&digest))
    {
        bail!(
            "{}: the node stored {} bytes with SHA-256 {}, but the file has {} bytes with SHA-256 {} \
             (did the file change during the upload?)",
            u.name,
            stored_len.map_or_else(|| "?".to_string(), |l| l.to_string()),
            s(&entry, "/plain_sha256"),
            u.len,
            hex(&digest)
        );
    }
    Ok(entry)
}

// ----- sales and packages ------------------------------------------------------------------

pub async fn buy(a: BuyArgs) -> anyhow::Result<ExitCode> {
    let product = id_arg("product", &a.product)?;
    let c = Client::new(&a.conn)?;
    let body = json!({"product": product, "channel": a.channel, "address": a.address,
                      "name": a.name});
    let key = idempotency_key(&a.idempotency_key);
    let sale = c
        .call(Method::POST, "/v1/sales", Some(&body), Some(&key))
        .await?;
    let reference = sale_reference(&sale)?;
    let out = a
        .out
        .unwrap_or_else(|| PathBuf::from(format!("{}.tallypkg", reference.display())));
    let len = download_package(&c, &sale, &out).await?;
    if c.json {
        c.show(&json!({"sale": sale, "file": out, "bytes": len}), |_| {
            String::new()
        });
    } else {
        println!("{}", sale_summary(&sale));
        println!("file      {} ({len} bytes)", out.display());
        println!(
            "next      check it with `tally package inspect {}`, pay with `tally pay --reference {} \
             --from ACCOUNT`, then `tally package unlock {} --fetch`",
            out.display(),
            reference,
            out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn package(cmd: PackageCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PackageCommand::Download(a) => download(a).await,
        PackageCommand::Inspect(a) => inspect(a).await,
        PackageCommand::Unlock(a) => unlock(a).await,
    }
}

async fn download(a: DownloadArgs) -> anyhow::Result<ExitCode> {
    let sale_id = id_arg("sale", &a.sale)?;
    let c = Client::new(&a.conn)?;
    let sale = c
        .call(Method::GET, &format!("/v1/sales/{sale_id}"), None, None)
        .await?;
    let out = match a.out {
        Some(o) => o,
        None => PathBuf::from(format!("{}.tallypkg", sale_reference(&sale)?.display())),
    };
    let len = download_package(&c, &sale, &out).await?;
    if c.json {
        c.show(&json!({"sale": sale_id, "file": out, "bytes": len}), |_| {
            String::new()
        });
    } else {
        println!("file      {} ({len} bytes)", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The outcome of one download attempt.
enum Attempt {
    /// FILE.part holds this many bytes: the whole package.
    Complete(u64),
    /// Interrupted (the network, the node): try again from what FILE.part holds.
    Interrupted(anyhow::Error),
}

/// Downloads `sale`'s package to `out` through `out.part`, resuming from what `out.part`
/// already holds; renames it to `out` once its length is the package's.
async fn download_package(c: &Client, sale: &Value, out: &Path) -> anyhow::Result<u64> {
    let sale_id = s(sale, "/id");
    let expected = sale.get("package_len").and_then(Value::as_u64);
    if let Ok(meta) = tokio::fs::metadata(out).await {
        if expected == Some(meta.len()) {
            eprintln!("{} is already downloaded", out.display());
            return Ok(meta.len());
        }
        bail!(
            "{} already exists and is not this sale's package: remove it or choose --out",
            out.display()
        );
    }
    let part = part_path(out);
    let path = format!("/v1/sales/{sale_id}/package");
    // The package's ETag is its digest: a resumed download asks for the rest of this
    // package only (`If-Range`); had the node another package, it sends it whole.
    let etag = sale
        .get("package_sha256")
        .and_then(Value::as_str)
        .map(|d| format!("\"{d}\""));
    let bar = bytes_bar(expected.unwrap_or(0), "downloading".to_string());
    let mut last = None;
    for attempt in 0..ATTEMPTS_MAX {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        match fetch_once(c, &path, etag.as_deref(), &part, expected, &bar).await {
            Ok(Attempt::Complete(len)) => {
                bar.finish_and_clear();
                tokio::fs::rename(&part, out)
                    .await
                    .with_context(|| format!("renaming {} to {}", part.display(), out.display()))?;
                return Ok(len);
            }
            Ok(Attempt::Interrupted(e)) => {
                eprintln!("download interrupted: {e:#}");
                last = Some(e);
            }
            Err(e) => {
                bar.finish_and_clear();
                return Err(e);
            }
        }
    }
    bar.finish_and_clear();
    Err(last
        .unwrap_or_else(|| anyhow!("download failed"))
        .context(format!(
            "{} is kept: run the same command again to resume",
            part.display()
        )))
}

/// One GET of the package into `part`: a `Range` request from its length when it is not
/// empty; a `206` must start there, a `200` starts over.
async fn fetch_once(
    c: &Client,
    path: &str,
    etag: Option<&str>,
    part: &Path,
    expected: Option<u64>,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Attempt> {
    let mut offset = match tokio::fs::metadata(part).await {
        Ok(m) => m.len(),
        Err(_) => 0,
    };
    if expected.is_some_and(|t| offset > t) {
        eprintln!(
            "{} is longer than the package: starting over",
            part.display()
        );
        offset = 0;
    }
    if offset > 0 && expected == Some(offset) {
        return Ok(Attempt::Complete(offset));
    }
    let mut req = c.streaming(Method::GET, path);
    if offset > 0 {
        eprintln!("resuming at {offset} bytes");
        req = req.header(RANGE, format!("bytes={offset}-"));
        if let Some(e) = etag {
            req = req.header(IF_RANGE, e);
        }
    }
    let mut resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            let e = anyhow::Error::from(e);
            return Ok(Attempt::Interrupted(anyhow!(
                "cannot reach {}: {e:#}",
                c.base()
            )));
        }
    };
    let status = resp.status();
    let (start, total) = match status {
        reqwest::StatusCode::PARTIAL_CONTENT => {
            let (start, total) = content_range(resp.headers())?;
            if start != offset {
                bail!("asked for the package from byte {offset}, the node sent it from {start}");
            }
            (start, total.or(expected))
        }
        reqwest::StatusCode::OK => {
            if offset > 0 {
                eprintln!("the node sent the whole package: starting over");
            }
            (0, resp.content_length().or(expected))
        }
        reqwest::StatusCode::RANGE_NOT_SATISFIABLE => {
            tokio::fs::remove_file(part).await.ok();
            return Ok(Attempt::Interrupted(anyhow!(
                "{} does not fit the package: starting over",
                part.display()
            )));
        }
        st if st.is_server_error() => return Ok(Attempt::Interrupted(refusal(resp).await)),
        _ => return Err(refusal(resp).await),
    };
    if let (Some(t), Some(e)) = (total, expected)
        && t != e
    {
        bail!("the node sends a package of {t} bytes, but the sale's package has {e}");
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(part)
        .await
        .with_context(|| format!("opening {}", part.display()))?;
    file.set_len(start).await?;
    file.seek(std::io::SeekFrom::Start(start)).await?;
    let mut file = tokio::io::BufWriter::with_capacity(CHUNK_LEN, file);
    if let Some(t) = total {
        bar.set_length(t);
    }
    bar.set_position(start);
    let mut written = start;
    loop {
        let chunk = match tokio::time::timeout(CALL_TIMEOUT, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                file.flush().await?;
                let e = anyhow::Error::from(e);
                return Ok(Attempt::Interrupted(anyhow!("at {written} bytes: {e:#}")));
            }
            Err(_) => {
                file.flush().await?;
                return Ok(Attempt::Interrupted(anyhow!(
                    "at {written} bytes: nothing received for {} s",
                    CALL_TIMEOUT.as_secs()
                )));
            }
        };
        written += chunk.len() as u64;
        if let Some(t) = total
            && written > t
        {
            bail!("the node sent more than the package's {t} bytes");
        }
        file.write_all(&chunk).await?;
        bar.set_position(written);
    }
    file.flush().await?;
    file.get_ref().sync_all().await?;
    match total {
        Some(t) if written != t => Ok(Attempt::Interrupted(anyhow!(
            "the download stopped at {written} of {t} bytes"
        ))),
        _ => Ok(Attempt::Complete(written)),
    }
}

/// `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`).
fn content_range(headers: &reqwest::header::HeaderMap) -> anyhow::Result<(u64, Option<u64>)> {
    let text = headers
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .context("a 206 answer without Content-Range")?;
    let parse = || -> Option<(u64, Option<u64>)> {
        let (range, total) = text.strip_prefix("bytes ")?.split_once('/')?;
        let (start, _end) = range.split_once('-')?;
        let total = match total {
            "*" => None,
            t => Some(t.parse().ok()?),
        };
        Some((start.parse().ok()?, total))
    };
    parse().with_context(|| format!("malformed Content-Range {text:?}"))
}

/// `FILE.part` for `FILE`.
fn part_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_os_string();
    name.push(".part");
    PathBuf::from(name)
}

async fn inspect(a: InspectArgs) -> anyhow::Result<ExitCode> {
    let trusted = trust_arg(&a.trust)?;
    let debit = match &a.debit_account {
        Some(d) => Some(id_arg("--debit-account", d)?),
        None => None,
    };
    let c = Client::new(&a.conn)?;
    let inspected = match inspect_file(&a.file, trusted).await? {
        Ok(i) => i,
        Err(e) => return Ok(refused(&e)),
    };
    let trusted = trusted.is_some();
    if !c.json {
        println!("{}", inspected_text(&a.file, &inspected, trusted));
    }
    if !a.ack {
        if c.json {
            c.show(&inspected_json(&inspected, trusted), |_| String::new());
        } else {
            println!(
                "\nlocked: pay with `tally pay --reference {} --from ACCOUNT`, then \
                 `tally package unlock {} --fetch`",
                inspected.header.reference,
                a.file.display()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let ack = inspected.acknowledgement();
    let mut body = json!({"acknowledgement": ack, "debit_account": debit});
    if let Some(path) = &a.sign_key {
        let pem = tally_kernel::Secret::new(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        );
        let key = tally_kernel::crypto::SigningKey::from_pkcs8_pem(pem.expose())
            .map_err(|e| anyhow::anyhow!("{}: not an Ed25519 PKCS#8 key: {e}", path.display()))?;
        let signed = tally_kernel::crypto::canonical::canonical_json(&ack)?;
        body["public_key"] = json!(key.verifying_key().to_hex());
        body["signature"] = json!(
            key.sign(tally_service::delivery::ACK_DOMAIN, &signed)
                .to_hex()
        );
    }
    let key = idempotency_key(&a.idempotency_key);
    let sale = c
        .call(
            Method::POST,
            &format!("/v1/sales/{}/acknowledge", inspected.header.sale),
            Some(&body),
            Some(&key),
        )
        .await?;
    if c.json {
        let mut v = inspected_json(&inspected, trusted);
        v["sale"] = sale;
        c.show(&v, |_| String::new());
        return Ok(ExitCode::SUCCESS);
    }
    println!("\nacknowledged: delivered {}", time(&sale, "/delivered_at"));
    if let Some(d) = &debit {
        println!("paid      {} from {d}", time(&sale, "/paid_at"));
    }
    println!("state     {}", s(&sale, "/state"));
    if s(&sale, "/state") == "released" {
        println!(
            "next      tally package unlock {} --fetch",
            a.file.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn unlock(a: UnlockArgs) -> anyhow::Result<ExitCode> {
    let trusted = trust_arg(&a.trust)?;
    let given_key = match &a.key.key {
        Some(k) => Some(key_arg(k)?),
        None => None,
    };
    let c = Client::new(&a.conn)?;
    let inspected = match inspect_file(&a.file, trusted).await? {
        Ok(i) => i,
        Err(e) => return Ok(refused(&e)),
    };
    let reference = inspected.header.reference.clone();
    let key = match given_key {
        Some(k) => k,
        None => {
            let path = format!("/v1/sales/{}/key", inspected.header.sale);
            let v = match c.call(Method::GET, &path, None, None).await {
                Ok(v) => v,
                Err(e) => {
                    if let Some(f) = e.downcast_ref::<ApiFailure>()
                        && f.code == "not_released"
                    {
                        eprintln!(
                            "the sale is not paid yet, so its key is not released: pay with \
                             `tally pay --reference {reference} --from ACCOUNT` ({f})"
                        );
                        return Ok(ExitCode::FAILURE);
                    }
                    return Err(e);
                }
            };
            let key = key_arg(s(&v, "/unlock_key")).context("the node's unlock key")?;
            // Pair check: the fingerprint the node reports is the one of the key it sent.
            let fingerprint = hex(&sha256(key.expose()))[..16].to_string();
            let reported = s(&v, "/fingerprint");
            if reported != "-" && !reported.eq_ignore_ascii_case(&fingerprint) {
                bail!(
                    "the node's key has fingerprint {fingerprint}, not the {reported} it reports"
                );
            }
            key
        }
    };
    if let Err(e) = inspected.header.content_key(key.expose()) {
        eprintln!("{e}");
        return Ok(ExitCode::FAILURE);
    }
    let dir = a.out.unwrap_or_else(|| {
        a.file
            .parent()
            .unwrap_or(Path::new(""))
            .join(reference.display())
    });
    tokio::fs::create_dir_all(&dir)
        .await
        .with_context(|| format!("creating {}", dir.display()))?;
    let file = a.file.clone();
    let out_dir = dir.clone();
    let header = inspected.header.clone();
    let unlocked =
        tokio::task::spawn_blocking(move || unlock_all(&file, &inspected, &key, &out_dir))
            .await??;
    if let Err(e) = unlocked {
        eprintln!("{e}");
        return Ok(ExitCode::FAILURE);
    }
    if c.json {
        let entries: Vec<Value> = header
            .entries
            .iter()
            .map(|e| {
                json!({"name": e.name, "kind": e.kind, "bytes": e.plain_len,
                       "sha256": e.plain_sha256, "path": dir.join(&e.name), "verified": true})
            })
            .collect();
        c.show(
            &json!({"sale": header.sale, "reference": reference, "entries": entries}),
            |_| String::new(),
        );
    } else {
        println!("unlocked  {} into {}", reference, dir.display());
        for e in &header.entries {
            println!(
                "  {:30} {:12} {:>12} bytes  sha256 {}  verified",
                printable(&e.name),
                kind_word(e.kind),
                e.plain_len,
                e.plain_sha256
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Decrypts every entry of a verified package into `dir`: each through a temporary file in
/// `dir`, renamed to its name only once `unlock_entry` checked its length and SHA-256.
fn unlock_all(
    file: &Path,
    inspected: &Inspected,
    key: &Secret<[u8; 32]>,
    dir: &Path,
) -> anyhow::Result<Result<(), PackageError>> {
    let mut package = BufReader::with_capacity(
        CHUNK_LEN,
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
    );
    for (index, meta) in inspected.header.entries.iter().enumerate() {
        let tmp = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("creating a file in {}", dir.display()))?;
        let bar = bytes_bar(meta.plain_len, format!("unlocking {}", meta.name));
        let mut out = std::io::BufWriter::with_capacity(
            CHUNK_LEN,
            ProgressWriter {
                inner: tmp.as_file(),
                bar: bar.clone(),
            },
        );
        let result = delivery::unlock_entry(&mut package, inspected, key.expose(), index, &mut out);
        bar.finish_and_clear();
        if let Err(e) = result {
            return Ok(Err(e));
        }
        out.flush()?;
        drop(out);
        tmp.as_file().sync_all()?;
        let target = dir.join(&meta.name);
        tmp.persist(&target)
            .map_err(|e| anyhow!("writing {}: {}", target.display(), e.error))?;
    }
    Ok(Ok(()))
}

/// Reads and verifies a package (off the async threads: it is one pass over the file). The
/// outer error is about opening the file; the inner result is the package's verdict.
async fn inspect_file(
    path: &Path,
    trusted: Option<VerifyingKey>,
) -> anyhow::Result<Result<Inspected, PackageError>> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let len = file.metadata()?.len();
        let bar = bytes_bar(len, "verifying".to_string());
        let reader = ProgressReader {
            inner: BufReader::with_capacity(CHUNK_LEN, file),
            bar: bar.clone(),
        };
        let verdict = delivery::inspect(reader, trusted.as_ref());
        bar.finish_and_clear();
        Ok(verdict)
    })
    .await?
}

/// Prints a refusal, and nothing from the package.
fn refused(e: &PackageError) -> ExitCode {
    eprintln!("package refused: {e}");
    ExitCode::FAILURE
}

fn inspected_text(file: &Path, i: &Inspected, trusted: bool) -> String {
    let h = &i.header;
    let signer = if trusted {
        format!("{} (the key you trust)", i.signer.to_hex())
    } else {
        format!(
            "{}\n          fingerprint {}\n          not compared with a key you trust: pass --trust NODE_KEY_HEX",
            i.signer.to_hex(),
            i.signer.fingerprint()
        )
    };
    let mut out = format!(
        "package   {}\nverified  every entry, the digest and the signature\nsigned by {signer}\n\
         sale      {}\nproduct   {}\n\ntitle     {}\namount    {}\npay to    {}\nreference {}\n",
        file.display(),
        h.sale,
        h.product,
        printable(&h.instruction.title),
        h.instruction.amount,
        printable(&h.instruction.pay_to),
        h.reference.display(),
    );
    out.push_str(&format!("licence   {}\n", indented(&h.instruction.licence)));
    out.push_str(&format!("text      {}\n", indented(&h.instruction.text)));
    out.push_str("\nentries (locked)\n");
    for e in &h.entries {
        out.push_str(&format!(
            "  {:30} {:12} {:>12} bytes  sha256 {}\n",
            printable(&e.name),
            kind_word(e.kind),
            e.plain_len,
            e.plain_sha256
        ));
    }
    out.push_str(&format!("package digest {}", hex(&i.package_sha256)));
    out
}

fn inspected_json(i: &Inspected, trusted: bool) -> Value {
    json!({
        "verified": true,
        "package_sha256": hex(&i.package_sha256),
        "signer": i.signer.to_hex(),
        "signer_fingerprint": i.signer.fingerprint(),
        "trusted": trusted,
        "header": i.header,
    })
}

fn kind_word(kind: delivery::EntryKind) -> &'static str {
    match kind {
        delivery::EntryKind::Document => "document",
        delivery::EntryKind::Product => "product",
        delivery::EntryKind::Registration => "registration",
    }
}

/// Multi-line text from a package under a 10-column label, made safe for a terminal.
fn indented(text: &str) -> String {
    if text.is_empty() {
        return "-".to_string();
    }
    text.lines()
        .map(|l| printable(l).trim_end().to_string())
        .map(|l| {
            if l.is_empty() {
                l
            } else {
                format!("          {l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        .trim_start()
        .to_string()
}

/// Text written by a merchant, for a terminal: control characters (escape sequences could
/// rewrite what is on the screen, e.g. the account to pay) are shown escaped.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

// ----- payments ----------------------------------------------------------------------------

pub async fn pay(a: PayArgs) -> anyhow::Result<ExitCode> {
    // The code is checked here first: a typo never reaches the node.
    let reference = match ReferenceCode::parse(&a.reference) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let from = id_arg("--from", &a.from)?;
    let given = match &a.amount {
        Some(t) => Some(amount_arg("--amount", t)?),
        None => None,
    };
    let c = Client::new(&a.conn)?;
    let amount = match given {
        Some(a) => a.to_string(),
        None => {
            let sale = c
                .call(
                    Method::GET,
                    &format!("/v1/sales/by-reference/{}", reference.display()),
                    None,
                    None,
                )
                .await
                .with_context(|| {
                    format!("looking up the price of {reference} (give --amount to pay without it)")
                })?;
            money(&sale, "/price")
        }
    };
    amount_arg("the sale's price", &amount)?;
    let body = json!({"reference": reference.display(), "from_account": from, "amount": amount});
    let key = idempotency_key(&a.idempotency_key);
    let payment = c
        .call(Method::POST, "/v1/sales/pay", Some(&body), Some(&key))
        .await?;
    // The sale after the payment, when the payer may see it.
    let sale = match payment.get("sale").and_then(Value::as_str) {
        Some(id) => c
            .call(Method::GET, &format!("/v1/sales/{id}"), None, None)
            .await
            .ok(),
        None => None,
    };
    if c.json {
        c.show(&json!({"payment": payment, "sale": sale}), |_| {
            String::new()
        });
    } else {
        println!("{}", payment_summary(&payment));
        if let Some(sale) = &sale {
            println!("sale      {} {}", s(sale, "/id"), s(sale, "/state"));
        }
    }
    Ok(if s(&payment, "/status") == "matched" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn payment(cmd: PaymentCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PaymentCommand::Refund(a) => {
            let id = id_arg("payment", &a.payment)?;
            let c = Client::new(&a.conn)?;
            let key = idempotency_key(&a.idempotency_key);
            c.call_show(
                Method::POST,
                &format!("/v1/payments/{id}/refund"),
                Some(&json!({})),
                Some(&key),
                payment_summary,
            )
            .await
        }
    }
}

pub async fn receiver(cmd: ReceiverCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ReceiverCommand::Set(a) => {
            let account = id_arg("--account", &a.account)?;
            if a.name.is_empty() || a.name.len() > 64 || a.name.contains('/') {
                bail!("receiver name {:?}: 1 to 64 characters, no `/`", a.name);
            }
            let (scheme, mut body) = match (&a.key.hmac_secret_file, &a.key.ed25519_public) {
                (Some(f), _) => {
                    let mut bytes = std::fs::read(f)
                        .with_context(|| format!("--hmac-secret-file {}", f.display()))?;
                    if bytes.ends_with(b"\n") {
                        bytes.pop();
                        if bytes.ends_with(b"\r") {
                            bytes.pop();
                        }
                    }
                    let secret = Secret::new(bytes);
                    if secret.expose().is_empty() {
                        bail!("--hmac-secret-file {}: the secret is empty", f.display());
                    }
                    ("hmac-sha256", json!({"hmac_secret": hex(secret.expose())}))
                }
                (None, Some(k)) => {
                    let key = VerifyingKey::from_hex(k.trim())
                        .map_err(|e| anyhow!("--ed25519-public: {e}"))?;
                    ("ed25519", json!({"ed25519_public": key.to_hex()}))
                }
                (None, None) => bail!("give --hmac-secret-file or --ed25519-public"),
            };
            body["account"] = json!(account);
            let c = Client::new(&a.conn)?;
            let v = c
                .call(
                    Method::PUT,
                    &format!("/v1/receivers/{}", urlencode(&a.name)),
                    Some(&body),
                    None,
                )
                .await?;
            let url = match v.get("endpoint").and_then(Value::as_str) {
                Some(e) if e.starts_with('/') => format!("{}{e}", c.base()),
                Some(e) => e.to_string(),
                None => format!(
                    "{}/v1/receivers/{}/notifications",
                    c.base(),
                    urlencode(&a.name)
                ),
            };
            c.show(&v, |v| {
                format!(
                    "receiver  {}\naccount   {}\nsigned    {scheme}\nposts to  {url}",
                    if s(v, "/name") == "-" {
                        &a.name
                    } else {
                        s(v, "/name")
                    },
                    if s(v, "/account") == "-" {
                        &account
                    } else {
                        s(v, "/account")
                    },
                )
            });
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn complaint(cmd: ComplaintCommand) -> anyhow::Result<ExitCode> {
    let (kind, a) = match cmd {
        ComplaintCommand::KeyLost(a) => ("key_lost", a),
        ComplaintCommand::PackageBroken(a) => ("package_broken", a),
        ComplaintCommand::ProductDeleted(a) => ("product_deleted", a),
    };
    let reference = match ReferenceCode::parse(&a.reference) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let c = Client::new(&a.conn)?;
    let key = idempotency_key(&a.idempotency_key);
    c.call_show(
        Method::POST,
        "/v1/complaints",
        Some(&json!({"reference": reference.display(), "kind": kind})),
        Some(&key),
        |v| {
            format!(
                "sale      {}\ncomplaint {}\naction    {}",
                s(v, "/sale"),
                s(v, "/kind"),
                s(v, "/action")
            )
        },
    )
    .await
}

// ----- reports -----------------------------------------------------------------------------

pub async fn report(cmd: ReportCommand) -> anyhow::Result<ExitCode> {
    let ReportCommand::Sales(a) = cmd;
    let mut query = Vec::new();
    if let Some(p) = &a.producer {
        query.push(format!("producer={}", urlencode(p)));
    }
    if let Some(p) = &a.product {
        query.push(format!("product={}", id_arg("--product", p)?));
    }
    for (flag, value, name) in [("--from", &a.from, "from"), ("--to", &a.to, "to")] {
        if let Some(t) = value {
            Timestamp::parse_rfc3339(t).with_context(|| {
                format!("{flag} {t:?}: expected RFC 3339, e.g. 2026-11-01T00:00:00Z")
            })?;
            query.push(format!("{name}={}", urlencode(t)));
        }
    }
    let c = Client::new(&a.conn)?;
    let format = a.format.unwrap_or(if c.json {
        ReportFormat::Json
    } else {
        ReportFormat::Table
    });
    query.push(
        match format {
            ReportFormat::Csv => "format=csv",
            ReportFormat::Json | ReportFormat::Table => "format=json",
        }
        .to_string(),
    );
    let path = format!("/v1/reports/sales?{}", query.join("&"));
    let resp = c
        .streaming(Method::GET, &path)
        .timeout(CALL_TIMEOUT)
        .send()
        .await
        .with_context(|| format!("cannot reach {}", c.base()))?;
    if !resp.status().is_success() {
        return Err(refusal(resp).await);
    }
    let body = resp.bytes().await?;
    if format != ReportFormat::Table {
        use std::io::IsTerminal;
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&body)?;
        // Verbatim for pipes; a terminal gets its prompt back on a line of its own.
        if stdout.is_terminal() && !body.ends_with(b"\n") {
            stdout.write_all(b"\n")?;
        }
        stdout.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Value> = serde_json::from_slice(&body).context("the node's report")?;
    println!("{}", report_table(&rows));
    Ok(ExitCode::SUCCESS)
}

fn report_table(rows: &[Value]) -> String {
    let mut out = format!(
        "{:25} {:27} {:9} {:>14} {:>14}  {:16}  {}\n",
        "REFERENCE", "CREATED", "STATE", "PRICE", "PAID", "KEY", "TITLE"
    );
    let mut totals: Vec<Amount> = Vec::new();
    for r in rows {
        let paid = money(r, "/paid");
        out.push_str(&format!(
            "{:25} {:27} {:9} {:>14} {:>14}  {:16}  {}\n",
            s(r, "/reference"),
            time(r, "/created_at"),
            s(r, "/state"),
            money(r, "/price"),
            paid,
            s(r, "/key_fingerprint"),
            s(r, "/title"),
        ));
        if let Ok(p) = paid.parse::<Amount>() {
            match totals.iter_mut().find(|t| t.currency == p.currency) {
                Some(t) => *t = t.checked_add(p).unwrap_or(*t),
                None => totals.push(p),
            }
        }
    }
    out.push_str(&format!(
        "{} sale{}",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    ));
    for t in totals {
        out.push_str(&format!(", paid {t}"));
    }
    out
}

// ----- arguments ---------------------------------------------------------------------------

/// An id (a UUID), checked locally.
fn id_arg(what: &str, text: &str) -> anyhow::Result<String> {
    uuid::Uuid::parse_str(text.trim())
        .map(|u| u.to_string())
        .with_context(|| format!("{what} {text:?}: expected an id (a UUID)"))
}

/// A positive amount with its currency.
fn amount_arg(flag: &str, text: &str) -> anyhow::Result<Amount> {
    let amount = text
        .parse::<Amount>()
        .with_context(|| format!("{flag} {text:?}: expected an amount like \"9.90 EUR\""))?;
    if amount.minor <= 0 {
        bail!("{flag} {text:?}: must be positive");
    }
    Ok(amount)
}

fn trust_arg(text: &Option<String>) -> anyhow::Result<Option<VerifyingKey>> {
    match text {
        Some(t) => Ok(Some(
            VerifyingKey::from_hex(t.trim()).map_err(|e| anyhow!("--trust {t:?}: {e}"))?,
        )),
        None => Ok(None),
    }
}

/// A 32-byte unlock key in hex.
fn key_arg(text: &str) -> anyhow::Result<Secret<[u8; 32]>> {
    let bytes = Secret::new(unhex(text.trim()).unwrap_or_default());
    let key: [u8; 32] = bytes
        .expose()
        .as_slice()
        .try_into()
        .map_err(|_| anyhow!("an unlock key is 64 hex digits"))?;
    Ok(Secret::new(key))
}

fn read_text(flag: &str, path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{flag} {}", path.display()))
}

/// The sale's reference code, checked.
fn sale_reference(sale: &Value) -> anyhow::Result<ReferenceCode> {
    ReferenceCode::parse(s(sale, "/reference"))
        .map_err(|e| anyhow!("the node's sale has no valid reference code ({e}): {sale}"))
}

// ----- presentation ------------------------------------------------------------------------

/// Money as the node sends it (`"9.90 EUR"`, or `{"minor", "currency"}`); `-` when absent.
fn money(v: &Value, pointer: &str) -> String {
    match v.pointer(pointer) {
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        Some(o @ Value::Object(_)) => serde_json::from_value::<Amount>(o.clone())
            .map(|a| a.to_string())
            .unwrap_or_else(|_| o.to_string()),
        _ => "-".to_string(),
    }
}

/// A time as the node sends it (RFC 3339, or µs since the epoch); `-` when absent.
fn time(v: &Value, pointer: &str) -> String {
    match v.pointer(pointer) {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Number(n)) => n
            .as_i64()
            .map_or_else(|| n.to_string(), |us| Timestamp(us).to_rfc3339()),
        _ => "-".to_string(),
    }
}

fn entry_line(e: &Value) -> String {
    format!(
        "{:30} {:9} {:>12} bytes  sha256 {}",
        s(e, "/name"),
        s(e, "/kind"),
        e.get("plain_len").and_then(Value::as_u64).unwrap_or(0),
        s(e, "/plain_sha256")
    )
}

fn product_summary(v: &Value) -> String {
    let mut out = format!(
        "product   {}\ntitle     {}\nprice     {}\npay to    {}\nmerchant  {}\nproducer  {}\nstate     {}\nentries",
        s(v, "/id"),
        s(v, "/title"),
        money(v, "/price"),
        s(v, "/pay_to"),
        s(v, "/merchant"),
        s(v, "/producer"),
        s(v, "/state"),
    );
    for e in v
        .get("entries")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        out.push_str(&format!("\n  {}", entry_line(&e)));
    }
    out
}

fn sale_summary(v: &Value) -> String {
    let mut out = format!(
        "sale      {}\nproduct   {} ({})\nreference {}\nprice     {}\nstate     {}",
        s(v, "/id"),
        s(v, "/product"),
        s(v, "/title"),
        s(v, "/reference"),
        money(v, "/price"),
        s(v, "/state"),
    );
    for (label, pointer) in [
        ("delivered", "/delivered_at"),
        ("paid     ", "/paid_at"),
        ("released ", "/released_at"),
    ] {
        if v.pointer(pointer).is_some_and(|t| !t.is_null()) {
            out.push_str(&format!("\n{label} {}", time(v, pointer)));
        }
    }
    out
}

fn payment_summary(v: &Value) -> String {
    let status = s(v, "/status");
    let refund = format!("`tally payment refund {}`", s(v, "/id"));
    let meaning = match status {
        "matched" => "the sale is paid; its key is released".to_string(),
        "mismatch" => format!(
            "wrong amount or currency: nothing released; the payment is kept, refundable with \
             {refund}"
        ),
        "duplicate" => {
            format!("the sale was already paid: nothing released; refundable with {refund}")
        }
        "unmatched" => format!("no sale has this reference; refundable with {refund}"),
        "refunded" => "the money went back".to_string(),
        _ => String::new(),
    };
    let reference = ReferenceCode::parse(s(v, "/reference"))
        .map_or_else(|_| s(v, "/reference").to_string(), |r| r.display());
    let mut out = format!(
        "payment   {}\nstatus    {status}{}\namount    {}\nreference {}\npath      {}\ntransfer  {}",
        s(v, "/id"),
        if meaning.is_empty() {
            String::new()
        } else {
            format!(" ({meaning})")
        },
        money(v, "/amount"),
        reference,
        s(v, "/path"),
        s(v, "/transfer"),
    );
    if let Some(r) = v.get("refunded_transfer").and_then(Value::as_str) {
        out.push_str(&format!("\nrefund    {r}"));
    }
    out
}

/// A byte-counting progress bar on stderr, hidden when stderr is not a terminal.
fn bytes_bar(len: u64, message: String) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    let target = if std::io::stderr().is_terminal() {
        indicatif::ProgressDrawTarget::stderr()
    } else {
        indicatif::ProgressDrawTarget::hidden()
    };
    let bar = indicatif::ProgressBar::with_draw_target(Some(len), target);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:24} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} ({eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message);
    bar
}

struct ProgressReader<R> {
    inner: R,
    bar: indicatif::ProgressBar,
}

impl<R: Read> Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

struct ProgressWriter<W> {
    inner: W,
    bar: indicatif::ProgressBar,
}

impl<W: Write> Write for ProgressWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_gives_start_and_total() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(CONTENT_RANGE, "bytes 100-199/200".parse().expect("header"));
        assert_eq!(content_range(&h).expect("ok"), (100, Some(200)));
        h.insert(CONTENT_RANGE, "bytes 5-9/*".parse().expect("header"));
        assert_eq!(content_range(&h).expect("ok"), (5, None));
        for bad in ["items 1-2/3", "bytes x-2/3", "bytes 1-2"] {
            h.insert(CONTENT_RANGE, bad.parse().expect("header"));
            assert!(content_range(&h).is_err(), "{bad}");
        }
    }

    #[test]
    fn part_file_sits_next_to_the_target() {
        assert_eq!(
            part_path(Path::new("dir/A.tallypkg")),
            PathBuf::from("dir/A.tallypkg.part")
        );
    }

    #[test]
    fn hex_round_trips_and_keys_need_32_bytes() {
        assert_eq!(hex(&[0, 171, 255]), "00abff");
        assert_eq!(unhex("00ABff"), Some(vec![0, 171, 255]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
        assert!(key_arg(&"11".repeat(32)).is_ok());
        assert!(key_arg(&"11".repeat(31)).is_err());
    }

    #[test]
    fn money_and_time_read_either_wire_form() {
        let v = json!({"a": "9.90 EUR", "b": {"minor": 990, "currency": "EUR"}, "t": 0,
                       "u": "2026-01-01T00:00:00Z"});
        assert_eq!(money(&v, "/a"), "9.90 EUR");
        assert_eq!(money(&v, "/b"), "9.90 EUR");
        assert_eq!(money(&v, "/missing"), "-");
        assert_eq!(time(&v, "/t"), Timestamp(0).to_rfc3339());
        assert_eq!(time(&v, "/u"), "2026-01-01T00:00:00Z");
    }

    #[test]
    fn amounts_must_be_positive_with_a_currency() {
        assert_eq!(amount_arg("--price", "9.90 EUR").expect("ok").minor, 990);
        for bad in ["9.90", "0.00 EUR", "-1.00 EUR", "9.999 EUR"] {
            assert!(amount_arg("--price", bad).is_err(), "{bad}");
        }
    }
}
