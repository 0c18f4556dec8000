//! `tally ledger export`: the node's hash-chained journal from a position to its head, closed
//! by a checkpoint the node signs for the export; and the check behind `tally receipt verify
//! --log`, that a receipt's journal entry is in such an export.
//!
//! Format (JSON lines, one object per line): a header `{"format": "tally-log/v1", "node_key":
//! HEX, "from": SEQ}`, then one `{"seq", "at", "prev_hash", "hash", "body"}` per entry (hashes
//! and the body in hex: the body is hashed byte for byte), then `{"checkpoint": {"seq",
//! "hash", "signature"}}`, the node's Ed25519 signature over `tally/journal-checkpoint/v1\0 ||
//! seq || hash` (`ledger::journal`). The export is the operator's: it holds every entry's
//! body, so it goes to auditors, not to customers.

use anyhow::{Context as _, anyhow, bail};
use clap::Args;
use serde_json::{Value, json};
use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tally_kernel::crypto::{Signature, SigningKey, VerifyingKey};
use tally_proto::receipt::{JournalProof, LogCheckpoint, check_inclusion};

/// An exported entry: seq, at, prev_hash, hash, body.
type Owned = (i64, i64, [u8; 32], [u8; 32], Vec<u8>);

/// Entries read per database query.
const PAGE: i64 = 5_000;

/// `tally ledger export`.
#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    store: crate::StoreLocation,
    /// First journal position to export (default 1: all).
    #[arg(long, default_value_t = 1)]
    from: i64,
    /// Where to write the export (JSON lines).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

pub async fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    if args.from < 1 {
        bail!("--from must be at least 1");
    }
    let key_path = args.store.data.join("node.key");
    let pem = std::fs::read_to_string(&key_path).with_context(|| {
        format!(
            "reading the node key {} (it signs the export)",
            key_path.display()
        )
    })?;
    let key =
        SigningKey::from_pkcs8_pem(&pem).map_err(|e| anyhow!("{}: {e}", key_path.display()))?;
    let store = crate::open_store(&args.store).await?;
    let tmp = args.out.with_extension("part");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
    );
    let header = json!({"format": "tally-log/v1", "node_key": key.verifying_key().to_hex(), "from": args.from});
    writeln!(out, "{header}")?;
    let mut next = args.from;
    let mut last: Option<(i64, [u8; 32])> = None;
    loop {
        let page = store.journal_range(next, PAGE).await?;
        let Some(end) = page.last() else { break };
        next = end.seq + 1;
        for e in &page {
            let line = json!({
                "seq": e.seq, "at": e.at, "prev_hash": hex::encode(&e.prev_hash),
                "hash": hex::encode(&e.hash), "body": hex::encode(&e.body),
            });
            writeln!(out, "{line}")?;
            let hash: [u8; 32] = e
                .hash
                .as_slice()
                .try_into()
                .context("a stored hash is not 32 bytes")?;
            last = Some((e.seq, hash));
        }
    }
    store.close().await;
    let Some((seq, hash)) = last else {
        bail!("the journal has no entry at or after {}", args.from);
    };
    let signature = key.sign(
        tally_ledger::journal::CHECKPOINT_DOMAIN,
        &tally_ledger::journal::checkpoint_message(seq, &hash),
    );
    let checkpoint = json!({"checkpoint": {"seq": seq, "hash": hex::encode(hash), "signature": signature.to_hex()}});
    writeln!(out, "{checkpoint}")?;
    out.into_inner()
        .map_err(|e| anyhow!("writing {}: {e}", tmp.display()))?
        .sync_all()?;
    std::fs::rename(&tmp, &args.out)?;
    println!(
        "exported      entries {} to {seq} of the journal",
        args.from
    );
    println!(
        "checkpoint    entry {seq}, hash {}, signed by node key {}",
        hex::encode(hash),
        key.verifying_key().to_hex()
    );
    println!("file          {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

fn field<'a>(v: &'a Value, name: &str, line: usize) -> anyhow::Result<&'a Value> {
    v.get(name)
        .ok_or_else(|| anyhow!("line {line}: no `{name}`"))
}

fn hex32(v: &Value, line: usize) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(
        v.as_str()
            .ok_or_else(|| anyhow!("line {line}: not a hex string"))?,
    )
    .map_err(|_| anyhow!("line {line}: not hex"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow!("line {line}: not 32 bytes"))
}

/// What `--log` established.
pub struct Included {
    /// The checkpoint's position.
    pub checkpoint_seq: i64,
    /// Whether the node key came from the export itself.
    pub key_from_export: bool,
    /// The key that signed the checkpoint.
    pub node_key: String,
}

/// Checks that `entry` is in the export at `path`, up to its checkpoint signed by `node_key`
/// (or, without one, by the key the export names — reported as such). `Err` says why not.
pub fn check(
    entry: &JournalProof,
    path: &Path,
    node_key: Option<&str>,
) -> anyhow::Result<Included> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = std::io::BufReader::new(file).lines();
    let header: Value = serde_json::from_str(&lines.next().context("the export is empty")??)
        .context("line 1: not JSON")?;
    if header.get("format").and_then(Value::as_str) != Some("tally-log/v1") {
        bail!("not a Tally log export (format tally-log/v1)");
    }
    let (key_hex, key_from_export) = match node_key {
        Some(k) => (k.to_string(), false),
        None => (
            field(&header, "node_key", 1)?
                .as_str()
                .unwrap_or_default()
                .to_string(),
            true,
        ),
    };
    let key = VerifyingKey::from_hex(&key_hex).map_err(|e| anyhow!("node key: {e}"))?;
    let mut later: Vec<Owned> = Vec::new();
    let mut found = false;
    let mut checkpoint = None;
    for (i, line) in lines.enumerate() {
        let n = i + 2;
        let v: Value =
            serde_json::from_str(&line?).with_context(|| format!("line {n}: not JSON"))?;
        if let Some(c) = v.get("checkpoint") {
            checkpoint = Some(LogCheckpoint {
                seq: field(c, "seq", n)?.as_i64().context("checkpoint seq")?,
                hash: hex32(field(c, "hash", n)?, n)?,
                signature: Signature::from_hex(
                    field(c, "signature", n)?.as_str().unwrap_or_default(),
                )
                .map_err(|e| anyhow!("line {n}: {e}"))?,
            });
            break;
        }
        let seq = field(&v, "seq", n)?.as_i64().context("seq")?;
        if seq == entry.seq {
            let body = hex::decode(field(&v, "body", n)?.as_str().unwrap_or_default())?;
            if body != entry.body {
                bail!("entry {seq} of the export is not the receipt's journal entry");
            }
            found = true;
            continue;
        }
        if found {
            later.push((
                seq,
                field(&v, "at", n)?.as_i64().context("at")?,
                hex32(field(&v, "prev_hash", n)?, n)?,
                hex32(field(&v, "hash", n)?, n)?,
                hex::decode(field(&v, "body", n)?.as_str().unwrap_or_default())?,
            ));
        }
    }
    if !found {
        bail!(
            "the export does not hold journal entry {} (export from an earlier position)",
            entry.seq
        );
    }
    let checkpoint = checkpoint.context("the export ends without its signed checkpoint")?;
    check_inclusion(
        entry,
        later
            .iter()
            .map(|(s, at, p, h, b)| (*s, *at, *p, *h, b.as_slice())),
        &checkpoint,
        &key,
    )?;
    Ok(Included {
        checkpoint_seq: checkpoint.seq,
        key_from_export,
        node_key: key_hex,
    })
}
