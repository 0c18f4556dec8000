//! `tally package …`: a package checked offline (`inspect`: every entry, the digest and the
//! node's signature, through `tally_proto::delivery`) and unlocked (`unlock`: every entry
//! decrypted, every chunk authenticated, and in version 1 packages checked against the
//! plaintext SHA-256 in the signed header). The node is asked only
//! for what it alone can give: the acknowledgement (`inspect --ack`) and the released unlock
//! key (`unlock --fetch`).
//!
//! Nothing from a package that did not verify is shown: its instruction file could name
//! another account to pay.

use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tally_client::wire::delivery::{ACK_DOMAIN, Acknowledge, SaleView};
use tally_client::wire::error::ErrorCode;
use tally_kernel::crypto::VerifyingKey;
use tally_kernel::crypto::kdf::{Sha256Stream, sha256};
use tally_kernel::{Id, Secret};
use tally_proto::delivery::sale::SaleState;
use tally_proto::delivery::{self, EntryKind, Header, Inspected, PackageError, ReferenceCode};

use super::common::{
    ProgressReader, ProgressWriter, bytes_bar, hex, id_arg, key_arg, trust_arg, when,
};
use super::{CHUNK_LEN, InspectArgs, PackageCommand, UnlockArgs, sales};
use crate::client::{Client, refused_with};

/// What `package inspect --json` prints: the verified package, and the sale after `--ack`.
#[derive(Serialize)]
struct InspectedJson<'a> {
    verified: bool,
    package_sha256: String,
    signer: String,
    signer_fingerprint: String,
    trusted: bool,
    header: &'a Header,
    #[serde(skip_serializing_if = "Option::is_none")]
    sale: Option<&'a SaleView>,
}

/// Exit status of `package inspect` when the package is intact but its signer could not be
/// checked against a key the user trusts.
const UNVERIFIED_SIGNER: u8 = 2;

/// How the package's signer was checked.
enum Signer {
    /// Against `--trust`.
    Given,
    /// Against the key the node at this URL publishes (`GET /v1/node`).
    Published(String),
    /// Not at all (why the node's key could not be fetched).
    Unverified(String),
}

/// What `package unlock --json` prints.
#[derive(Serialize)]
struct UnlockedJson<'a> {
    sale: Id,
    reference: &'a ReferenceCode,
    entries: Vec<UnlockedEntry<'a>>,
}

/// One unlocked entry, checked against the signed header.
#[derive(Serialize)]
struct UnlockedEntry<'a> {
    name: &'a str,
    kind: EntryKind,
    bytes: u64,
    /// SHA-256 of the file written (hashed as it was unlocked; a version 1 header's
    /// `plain_sha256` was checked against it too).
    sha256: String,
    path: PathBuf,
    verified: bool,
}

/// `tally package download|inspect|unlock`.
pub async fn package(cmd: PackageCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PackageCommand::Download(a) => sales::download(a).await,
        PackageCommand::Inspect(a) => inspect(a).await,
        PackageCommand::Unlock(a) => unlock(a).await,
    }
}

/// `tally package inspect FILE`: the verdict, the instruction file of a package that
/// verified, and with `--ack` the acknowledgement (and payment) sent to the node.
async fn inspect(a: InspectArgs) -> anyhow::Result<ExitCode> {
    let trusted = trust_arg(&a.trust)?;
    let debit = match &a.debit_account {
        Some(d) => Some(id_arg("--debit-account", d)?),
        None => None,
    };
    if a.idempotency_key.is_some() {
        eprintln!(
            "note: --idempotency-key is not needed: the node records an acknowledgement once"
        );
    }
    let c = Client::new(&a.conn)?;
    let given = trusted.is_some();
    let inspected = match inspect_file(&a.file, trusted).await? {
        Ok(i) => i,
        Err(e) => return Ok(refused(&e)),
    };
    // Without --trust, the signer is compared with the key the selling node publishes.
    let signer = if given {
        Signer::Given
    } else {
        match c.api.node().await {
            Ok(n) if n.node_key == inspected.signer.to_hex() => Signer::Published(c.base().into()),
            Ok(n) => {
                eprintln!(
                    "package NOT trusted: it is signed by {} (fingerprint {}), but the node at {} \
                     publishes {} (fingerprint {}); do not pay it",
                    inspected.signer.to_hex(),
                    inspected.signer.fingerprint(),
                    c.base(),
                    n.node_key,
                    n.node_key_fingerprint
                );
                return Ok(ExitCode::FAILURE);
            }
            Err(e) => Signer::Unverified(format!("{e}")),
        }
    };
    let trusted = !matches!(signer, Signer::Unverified(_));
    if !c.json {
        println!("{}", inspected_text(&a.file, &inspected, &signer));
    }
    if let Signer::Unverified(why) = &signer {
        if c.json {
            c.show(&inspected_json(&inspected, false, None), |_| String::new());
        }
        eprintln!(
            "signer NOT verified: the key of the node at {} could not be fetched ({why}); \
             compare the signer with your operator's node key, or pass --trust NODE_KEY_HEX \
             (or --server with the selling node)",
            c.base()
        );
        return Ok(ExitCode::from(UNVERIFIED_SIGNER));
    }
    if !a.ack {
        if c.json {
            c.show(&inspected_json(&inspected, trusted, None), |_| {
                String::new()
            });
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
    let request = acknowledgement(&inspected, debit, a.sign_key.as_deref())?;
    // The acknowledgement is kept by the node; only the debit may wait for a code.
    let sale = crate::oob::confirming(&c, "(it acknowledges again and pays)", || {
        c.api.sale_acknowledge(inspected.header.sale, &request)
    })
    .await?;
    if c.json {
        let shown = inspected_json(&inspected, trusted, Some(&sale));
        c.show(&shown, |_| String::new());
        return Ok(ExitCode::SUCCESS);
    }
    println!("\nacknowledged: delivered {}", when(sale.delivered_at));
    if let Some(d) = &debit {
        println!("paid      {} from {d}", when(sale.paid_at));
    }
    println!("state     {}", sale.state);
    if sale.state == SaleState::Released {
        println!(
            "next      tally package unlock {} --fetch",
            a.file.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The acknowledgement of a verified package, paying from `debit` when given, signed with the
/// buyer's key in `sign_key` (PKCS#8 PEM) when given.
fn acknowledgement(
    inspected: &Inspected,
    debit: Option<Id>,
    sign_key: Option<&Path>,
) -> anyhow::Result<Acknowledge> {
    let ack = inspected.acknowledgement();
    let mut request = Acknowledge {
        acknowledgement: ack,
        debit_account: debit,
        public_key: None,
        signature: None,
    };
    if let Some(path) = sign_key {
        let pem = Secret::new(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        );
        let key = tally_kernel::crypto::SigningKey::from_pkcs8_pem(pem.expose())
            .map_err(|e| anyhow!("{}: not an Ed25519 PKCS#8 key: {e}", path.display()))?;
        let signed = tally_kernel::crypto::canonical::canonical_json(&request.acknowledgement)?;
        request.public_key = Some(key.verifying_key().to_hex());
        request.signature = Some(key.sign(ACK_DOMAIN, &signed).to_hex());
    }
    Ok(request)
}

/// `tally package unlock FILE`: verified, then every entry decrypted into a directory with
/// the key given or fetched; exits non-zero (and writes nothing) when the key does not fit.
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
    let key = match given_key {
        Some(k) => k,
        None => match fetch_key(&c, &inspected).await? {
            Some(k) => k,
            None => return Ok(ExitCode::FAILURE),
        },
    };
    if let Err(e) = inspected.header.content_key(key.expose()) {
        eprintln!("{e}");
        return Ok(ExitCode::FAILURE);
    }
    let reference = inspected.header.reference.clone();
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
    let digests = match unlocked {
        Ok(digests) => digests,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    show_unlocked(&c, &header, &digests, &dir);
    Ok(ExitCode::SUCCESS)
}

/// The sale's released unlock key, checked against the fingerprint the node reports; `None`
/// (and why, on stderr) while the sale is not paid.
async fn fetch_key(c: &Client, inspected: &Inspected) -> anyhow::Result<Option<Secret<[u8; 32]>>> {
    let released = match c.api.sale_key(inspected.header.sale).await {
        Ok(k) => k,
        Err(e) => return not_released(e.into(), &inspected.header.reference),
    };
    let key = key_arg(&released.unlock_key).context("the node's unlock key")?;
    // Pair check: the fingerprint the node reports is the one of the key it sent.
    let fingerprint = hex(&sha256(key.expose()))[..16].to_string();
    let reported = &released.fingerprint;
    if !reported.eq_ignore_ascii_case(&fingerprint) {
        bail!("the node's key has fingerprint {fingerprint}, not the {reported} it reports");
    }
    Ok(Some(key))
}

/// `Ok(None)`, said on stderr with how to pay, when `e` is the node's `not_released` (the
/// sale is not paid yet); `e` otherwise.
fn not_released<T>(e: anyhow::Error, reference: &ReferenceCode) -> anyhow::Result<Option<T>> {
    if refused_with(&e) != Some(ErrorCode::NotReleased) {
        return Err(e);
    }
    eprintln!(
        "the sale is not paid yet, so its key is not released: pay with \
         `tally pay --reference {reference} --from ACCOUNT` ({e})"
    );
    Ok(None)
}

/// Prints the entries unlocked into `dir`, with the SHA-256 of each file written.
fn show_unlocked(c: &Client, header: &Header, digests: &[[u8; 32]], dir: &Path) {
    if c.json {
        let entries = header
            .entries
            .iter()
            .zip(digests)
            .map(|(e, digest)| UnlockedEntry {
                name: &e.name,
                kind: e.kind,
                bytes: e.plain_len,
                sha256: hex(digest),
                path: dir.join(&e.name),
                verified: true,
            })
            .collect();
        let shown = UnlockedJson {
            sale: header.sale,
            reference: &header.reference,
            entries,
        };
        c.show(&shown, |_| String::new());
        return;
    }
    println!("unlocked  {} into {}", header.reference, dir.display());
    for (e, digest) in header.entries.iter().zip(digests) {
        println!(
            "  {:30} {:12} {:>12} bytes  sha256 {}  verified",
            printable(&e.name),
            kind_word(e.kind),
            e.plain_len,
            hex(digest)
        );
    }
}

/// Decrypts every entry of a verified package into `dir`: each through a temporary file in
/// `dir`, renamed to its name only once `unlock_entry` authenticated it (and, in version 1,
/// checked its SHA-256). Returns the SHA-256 of each file written, hashed on the way, for
/// the buyer to compare with the merchant's.
fn unlock_all(
    file: &Path,
    inspected: &Inspected,
    key: &Secret<[u8; 32]>,
    dir: &Path,
) -> anyhow::Result<Result<Vec<[u8; 32]>, PackageError>> {
    let mut package = BufReader::with_capacity(
        CHUNK_LEN,
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
    );
    let mut digests = Vec::with_capacity(inspected.header.entries.len());
    for (index, meta) in inspected.header.entries.iter().enumerate() {
        let tmp = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("creating a file in {}", dir.display()))?;
        let bar = bytes_bar(meta.plain_len, format!("unlocking {}", meta.name));
        let digest = {
            let mut out = Sha256Writer {
                inner: std::io::BufWriter::with_capacity(
                    CHUNK_LEN,
                    ProgressWriter {
                        inner: tmp.as_file(),
                        bar: bar.clone(),
                    },
                ),
                hash: Sha256Stream::new(),
            };
            let result =
                delivery::unlock_entry(&mut package, inspected, key.expose(), index, &mut out);
            bar.finish_and_clear();
            if let Err(e) = result {
                return Ok(Err(e));
            }
            out.flush()?;
            out.hash.finish()
        };
        digests.push(digest);
        tmp.as_file().sync_all()?;
        let target = dir.join(&meta.name);
        tmp.persist(&target)
            .map_err(|e| anyhow!("writing {}: {}", target.display(), e.error))?;
    }
    Ok(Ok(digests))
}

/// A writer that hashes what it passes on.
struct Sha256Writer<W> {
    inner: W,
    hash: Sha256Stream,
}

impl<W: Write> Write for Sha256Writer<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
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

/// The instruction file and the entries of a verified package, and who signed it.
fn inspected_text(file: &Path, i: &Inspected, trust: &Signer) -> String {
    let h = &i.header;
    let signer = match trust {
        Signer::Given => format!("{} (the key you trust)", i.signer.to_hex()),
        Signer::Published(url) => format!(
            "{} (the key the node at {url} publishes)",
            i.signer.to_hex()
        ),
        Signer::Unverified(_) => format!(
            "{}\n          fingerprint {}\n          UNVERIFIED: not compared with a key you trust; pass --trust NODE_KEY_HEX",
            i.signer.to_hex(),
            i.signer.fingerprint()
        ),
    };
    // Whoever made an untrusted package chose its "pay to": never show it as the seller's.
    let pay_to = match trust {
        Signer::Unverified(_) => format!(
            "{}  (UNVERIFIED signer: do not pay before the signer is checked)",
            printable(&h.instruction.pay_to)
        ),
        Signer::Given | Signer::Published(_) => printable(&h.instruction.pay_to),
    };
    let mut out = format!(
        "package   {}\nverified  every entry, the digest and the signature\nsigned by {signer}\n\
         sale      {}\nproduct   {}\n\ntitle     {}\namount    {}\npay to    {}\nreference {}\n",
        file.display(),
        h.sale,
        h.product,
        printable(&h.instruction.title),
        h.instruction.amount,
        pay_to,
        h.reference.display(),
    );
    out.push_str(&format!("licence   {}\n", indented(&h.instruction.licence)));
    out.push_str(&format!("text      {}\n", indented(&h.instruction.text)));
    out.push_str("\nentries (locked)\n");
    for e in &h.entries {
        out.push_str(&format!(
            "  {:30} {:12} {:>12} bytes  {}\n",
            printable(&e.name),
            kind_word(e.kind),
            e.plain_len,
            match (&e.plain_sha256, &e.sealed_sha256, &e.sealed_blake3) {
                (Some(sha256), _, _) => format!("sha256 {sha256}"),
                (None, Some(sha256), _) => format!("sealed sha256 {sha256}"),
                (None, None, Some(blake3)) => format!("sealed blake3 {blake3}"),
                (None, None, None) => String::new(),
            }
        ));
    }
    out.push_str(&format!("package digest {}", hex(&i.package_sha256)));
    out
}

/// The verified package as `--json` shows it.
fn inspected_json<'a>(
    i: &'a Inspected,
    trusted: bool,
    sale: Option<&'a SaleView>,
) -> InspectedJson<'a> {
    InspectedJson {
        verified: true,
        package_sha256: hex(&i.package_sha256),
        signer: i.signer.to_hex(),
        signer_fingerprint: i.signer.fingerprint(),
        trusted,
        header: &i.header,
        sale,
    }
}

/// An entry's kind, as a word for the table.
fn kind_word(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Document => "document",
        EntryKind::Product => "product",
        EntryKind::Registration => "registration",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merchant_text_cannot_drive_the_terminal() {
        assert_eq!(printable("pay\u{1b}[2J to"), "pay\\u{1b}[2J to");
        assert_eq!(indented(""), "-");
        assert_eq!(indented("one\n\ntwo"), "one\n\n          two");
    }

    #[test]
    fn only_an_unpaid_sale_is_explained_instead_of_failing() {
        let refusal = |code: ErrorCode, text: &str| {
            anyhow::Error::from(tally_client::Error::Refused(tally_client::Refusal {
                status: 409,
                code: Some(code),
                code_text: text.to_string(),
                message: String::new(),
                details: None,
            }))
        };
        let reference = ReferenceCode::new(Id::new(), "alice", tally_kernel::Timestamp(0), [7; 16]);
        let unpaid =
            not_released::<()>(refusal(ErrorCode::NotReleased, "not_released"), &reference);
        assert!(matches!(unpaid, Ok(None)));
        let other = not_released::<()>(refusal(ErrorCode::NotFound, "not_found"), &reference);
        assert!(other.is_err());
    }
}
