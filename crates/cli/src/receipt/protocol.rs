//! The receipt protocol from the command line (seed blocks 301–317): party A's side offers a
//! record (`receipt offer`); party B checks the offer, escrows its signature first in a fair
//! exchange and checks A's released one, signs with its token, has the node write the short
//! receipt onto the token, acknowledges it and saves the package, verified (`receipt sign`).
//!
//! The order of the steps is what makes a crash harmless: the challenge and slot are saved in
//! the token file before B's signature leaves, and the node's write is stored and saved before
//! it is acknowledged (the node forgets a write once acked). `receipt export` fetches a
//! package the same way `sign` does, without verifying it. Each request goes once: a
//! signature or escrow that may have arrived is finished by running the command again (it
//! picks up from where the receipt stands) or settled by the arbiter, never re-sent blindly.

use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tally_client::wire::receipts::{
    AckBody, EscrowBody, NewReceipt, ReceiptView, SignReceipt, WriteRequest,
};
use tally_kernel::crypto::Certificate;
use tally_kernel::crypto::bls::{self, BlsSignature};
use tally_kernel::crypto::kdf::sha256;
use tally_proto::receipt::flow::ReceiptState;
use tally_proto::receipt::token::{CHALLENGE_LEN, SecureWrite, Slot, Stored};
use tally_proto::receipt::{
    self as proto, Fields, PARTY_DOMAIN, Package, VERSION_BLS, VERSION_ED25519, Verified,
};

use super::files::{default_package_path, write_public_file};
use super::show::{offer_text, receipt_text, rfc3339_s};
use super::token_file::TokenFile;
use super::{ExportArgs, OfferArgs, RecordArgs, SignArgs};
use crate::client::{Client, answered, idempotency_key};

/// The format tag of a short receipt exported from a token slot.
const SLOT_EXPORT_FORMAT: &str = "tally-token-receipt/v1";

/// `N` bytes from hex the node sent (`what` names the field in errors).
pub(super) fn hex_array<const N: usize>(what: &str, text: &str) -> anyhow::Result<[u8; N]> {
    let bytes = hex::decode(text.trim()).map_err(|_| anyhow!("{what}: not hex"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow!("{what}: expected {N} bytes"))
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
pub(super) fn check_offer(v: &ReceiptView, tf: &TokenFile) -> anyhow::Result<Fields> {
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

/// Whether `released` (hex) is A's signature over fields 1–7 under the node's proxy BLS key.
pub(super) fn released_a_verifies(tf: &TokenFile, fields: &Fields, released: Option<&str>) -> bool {
    released
        .and_then(|h| BlsSignature::from_hex(h.trim()).ok())
        .is_some_and(|sig| {
            tf.proxy_bls_key()
                .is_ok_and(|k| k.verify(PARTY_DOMAIN, &fields.party_part(), &sig).is_ok())
        })
}

/// The package of `transaction`, at most [`proto::PACKAGE_LEN_MAX`] bytes, and parsed.
pub(super) async fn download_package(
    c: &Client,
    transaction: u64,
) -> anyhow::Result<(Vec<u8>, Package)> {
    let bytes = c
        .api
        .receipt_package_at_most(transaction, proto::PACKAGE_LEN_MAX)
        .await?;
    let pkg = Package::from_bytes(&bytes)
        .map_err(|e| anyhow!("the node's receipt package does not parse: {e}"))?;
    Ok((bytes, pkg))
}

/// The package of `transaction`, verified against the node CA in the token file.
pub(super) async fn verified_package(
    c: &Client,
    tf: &TokenFile,
    transaction: u64,
) -> anyhow::Result<(Vec<u8>, Package, Verified)> {
    let (bytes, pkg) = download_package(c, transaction).await?;
    let verified = proto::verify_package(&pkg, &tf.ca)
        .map_err(|e| anyhow!("the node's receipt package does NOT verify: {e}"))?;
    Ok((bytes, pkg, verified))
}

/// Asks `question` on the terminal; only `y` or `yes` is a yes.
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

/// The record from `--record FILE` (byte for byte) or `--text`.
fn read_record(r: &RecordArgs) -> anyhow::Result<String> {
    match (&r.record, &r.text) {
        (Some(path), _) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("--record {}", path.display()))?;
            String::from_utf8(bytes)
                .map_err(|_| anyhow!("--record {}: not UTF-8 text", path.display()))
        }
        (None, Some(text)) => Ok(text.clone()),
        (None, None) => bail!("give the record with --record FILE or --text TEXT"),
    }
}

/// `tally receipt offer` (party A's side).
pub(super) async fn offer(a: OfferArgs) -> anyhow::Result<ExitCode> {
    let record = read_record(&a.record)?;
    proto::check_record(&record).map_err(|e| anyhow!("the record cannot be signed: {e}"))?;
    let c = Client::new(&a.conn)?;
    let req = NewReceipt {
        record,
        party_a: a.party_a.clone(),
        party_b: a.party_b.clone(),
        fair: a.fair,
        proxy_b: a.proxy_b,
    };
    let key = idempotency_key(&a.idempotency_key);
    let view = answered(c.api.receipt_offer(&key, &req).await?);
    c.show(&view, |view| {
        let next = match view.state {
            ReceiptState::Offered => format!(
                "\nnext          {} signs: tally receipt sign {} --token TOKEN_FILE",
                view.party_b, view.transaction
            ),
            ReceiptState::Signed | ReceiptState::Acked => {
                format!("\nnext          tally receipt export {}", view.transaction)
            }
            _ => String::new(),
        };
        format!("{}{next}", receipt_text(view))
    });
    Ok(ExitCode::SUCCESS)
}

/// What party B does when a fair exchange stops half way.
fn resolve_hint(tf: &TokenFile, transaction: u64) -> String {
    format!(
        "run `tally arbiter resolve {transaction} --token {}` to have the arbiter settle the exchange",
        tf.path.display()
    )
}

/// `tally receipt sign` (party B).
pub(super) async fn sign(a: SignArgs) -> anyhow::Result<ExitCode> {
    let mut tf = TokenFile::load(&a.token)?;
    let c = Client::new(&a.conn)?;
    let tx = a.transaction;
    let view = c.api.receipt(tx).await?;
    let fields = check_offer(&view, &tf)?;
    match view.state {
        ReceiptState::Offered | ReceiptState::Escrowed => {}
        ReceiptState::Signed | ReceiptState::Acked | ReceiptState::Resolved => {
            eprintln!(
                "note: transaction {tx} is already {}; finishing it (token write, package)",
                view.state
            );
            return finish(&c, &mut tf, &view, &fields, &a).await;
        }
        other => bail!("transaction {tx} is {other}; there is nothing to sign"),
    }
    // Before B's signature leaves: the node may sign for A only under A's warrant naming B,
    // unrevoked, checked here against the CA this token trusts (not the node's word).
    if let Err(e) = check_warrant_a(&c, &tf, &view, &fields).await {
        eprintln!("refusing to sign transaction {tx}: {e:#}");
        return Ok(ExitCode::FAILURE);
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
    if view.fair && !fair_exchange(&c, &tf, &view, &fields).await? {
        return Ok(ExitCode::FAILURE);
    }
    let signature_b = tf.sign(&fields, a.pkcs11_pin_file.as_deref())?;
    let token = reserve_slot(&mut tf, &fields, &a)?;
    let req = SignReceipt {
        signature_b: signature_b.to_hex(),
        token: Some(token),
    };
    let signed = match c.api.receipt_sign(tx, &req).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: signing failed: {e}");
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

/// A's warrant, when the node signs for A: A's certificate from the token's CA with the key the
/// offer names, the warrant signed by A, valid now, naming this token's holder, not revoked.
async fn check_warrant_a(
    c: &Client,
    tf: &TokenFile,
    view: &ReceiptView,
    fields: &Fields,
) -> anyhow::Result<()> {
    if view.warrant_a.is_none() {
        return Ok(());
    }
    let w = c.api.receipt_warrant(view.transaction).await?;
    if let Some(at) = w.warrant.revoked_at {
        bail!(
            "party A's warrant {} was revoked at {}: the node may no longer sign for {}",
            w.warrant.serial,
            at.to_rfc3339(),
            view.party_a
        );
    }
    let now = tally_kernel::Timestamp::now();
    let party = Certificate::from_pem(&w.party_certificate)
        .map_err(|e| anyhow!("party A's certificate: {e}"))?;
    party
        .verify_issued_by(&tf.ca, now)
        .map_err(|e| anyhow!("party A's certificate is not from your CA: {e}"))?;
    let key = party
        .public_key()
        .map_err(|e| anyhow!("party A's certificate: {e}"))?;
    if sha256(&key.to_bytes()) != fields.party_a {
        bail!("party A's certificate is not for the key the offer names");
    }
    let warrant = Certificate::from_pem(&w.warrant.certificate)
        .map_err(|e| anyhow!("party A's warrant: {e}"))?;
    proto::check_proxy(
        "party A",
        &warrant.to_der(),
        &party,
        &tf.data.holder,
        &tf.ca,
        now,
    )?;
    Ok(())
}

/// Blocks 305–309: B's signature is escrowed for the arbiter (unless an earlier run did), the
/// node releases A's, and it is checked before B signs. `false` (said why, and what to do)
/// when B must not sign.
async fn fair_exchange(
    c: &Client,
    tf: &TokenFile,
    view: &ReceiptView,
    fields: &Fields,
) -> anyhow::Result<bool> {
    let tx = view.transaction;
    let released = if view.state == ReceiptState::Escrowed {
        // An earlier run escrowed already (a VES is randomised: it cannot be re-sent).
        Ok(view.signature_a.clone())
    } else {
        let ves = bls::encrypt_signature(
            &tf.bls,
            &tf.arbiter_key()?,
            PARTY_DOMAIN,
            &fields.party_part(),
        );
        let req = EscrowBody { ves: ves.to_hex() };
        c.api.receipt_escrow(tx, &req).await.map(|v| v.signature_a)
    };
    let released = match released {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: the escrow step failed: {e}");
            eprintln!("{}", resolve_hint(tf, tx));
            return Ok(false);
        }
    };
    if !released_a_verifies(tf, fields, released.as_deref()) {
        eprintln!(
            "error: the node did not release a valid signature of party A; your signature was not sent"
        );
        eprintln!("{}", resolve_hint(tf, tx));
        return Ok(false);
    }
    eprintln!("party A's signature verified (fair exchange); signing");
    Ok(true)
}

/// Block 311: a fresh challenge and a slot, saved in the token file before the signature
/// leaves (so a write that arrives later still opens). A receipt pushed off a full token is
/// exported first. Returns where the node is to write.
fn reserve_slot(tf: &mut TokenFile, fields: &Fields, a: &SignArgs) -> anyhow::Result<WriteRequest> {
    let mut challenge = [0u8; CHALLENGE_LEN];
    getrandom::fill(&mut challenge).map_err(|e| anyhow!("the OS random generator: {e}"))?;
    let (slot, displaced) =
        tf.data
            .token
            .begin(challenge, a.transaction, fields.content_hash, a.priority);
    if let Some(old) = displaced {
        let dir = a
            .export_dir
            .clone()
            .unwrap_or_else(|| tf.default_export_dir());
        let path = export_slot(&dir, tf, slot, &old)?;
        eprintln!(
            "the token is full: receipt {} (transaction {}) in slot {slot} was exported to {}",
            old.receipt_number,
            old.content.record.transaction,
            path.display()
        );
    }
    tf.save()?;
    Ok(WriteRequest {
        serial: tf.serial_hex(),
        challenge: hex::encode(challenge),
        slot,
    })
}

/// `receipt sign --json`. Fields in alphabetical order: the output as it has always been.
#[derive(Serialize)]
struct SignedSummary {
    digest: String,
    package: String,
    receipt_number: Option<u64>,
    slot: Option<u16>,
    transaction: u64,
    verified: bool,
}

/// Blocks 315–317 and the package: stores the node's write on the token and acks it, then
/// downloads the package, verifies it against the token's CA and saves it.
async fn finish(
    c: &Client,
    tf: &mut TokenFile,
    view: &ReceiptView,
    fields: &Fields,
    a: &SignArgs,
) -> anyhow::Result<ExitCode> {
    let tx = view.transaction;
    let (slot, number) = match &view.write {
        Some(write) => match store_and_ack(c, tf, tx, write).await? {
            Some((slot, n)) => (Some(slot), Some(n)),
            None => return Ok(ExitCode::FAILURE),
        },
        None => (
            view.receipt_number.and_then(|n| slot_holding(tf, n)),
            view.receipt_number,
        ),
    };
    let (bytes, pkg, verified) = verified_package(c, tf, tx).await?;
    if verified.fields != *fields {
        bail!("the node's package is for other fields than the offer you signed");
    }
    if pkg.record.as_deref() != Some(view.record.as_str()) {
        bail!("the node's package carries another record than the one you signed");
    }
    let out = a.out.clone().unwrap_or_else(|| default_package_path(tx));
    write_public_file(&out, &bytes)?;
    let summary = SignedSummary {
        digest: hex::encode(pkg.receipt.digest()),
        package: out.display().to_string(),
        receipt_number: number,
        slot,
        transaction: tx,
        verified: true,
    };
    c.show(&summary, |s| {
        format!(
            "transaction   {tx}\ndigest        {}\nreceipt no.   {}\nslot          {}\npackage       {}\nreceipt verified (against the node CA in your token file, {})",
            s.digest,
            number.map_or_else(|| "- (not written to the token)".to_string(), |n| n.to_string()),
            slot.map_or_else(|| "-".to_string(), |s| s.to_string()),
            s.package,
            tf.ca.fingerprint()
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// The slot that holds receipt `number`, when the token has it.
fn slot_holding(tf: &TokenFile, number: u64) -> Option<u16> {
    tf.data
        .token
        .slots
        .iter()
        .position(|s| s.as_ref().is_some_and(|s| s.receipt_number == number))
        .and_then(|i| u16::try_from(i).ok())
}

/// Stores the node's secure write (hex) on the token, saves the token file, then acks: the
/// slot and the receipt number. `None` when the token refused the write (said why; the node
/// offers it again to `tally token sync`).
async fn store_and_ack(
    c: &Client,
    tf: &mut TokenFile,
    tx: u64,
    write: &str,
) -> anyhow::Result<Option<(u16, u64)>> {
    let write = SecureWrite::from_bytes(
        &hex::decode(write.trim()).map_err(|_| anyhow!("the node's write is not hex"))?,
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
            return Ok(None);
        }
    };
    tf.save()?;
    let ack = AckBody { receipt_number: n };
    c.api.receipt_ack(tx, &ack).await.with_context(|| {
        format!(
            "the receipt is on your token but the acknowledgement failed; run `tally token \
             sync --file {}`",
            tf.path.display()
        )
    })?;
    Ok(Some((write.slot, n)))
}

/// A receipt pushed off the token, as exported (`tally-token-receipt/v1`). Fields in
/// alphabetical order and the slot as a sorted map: the bytes this file has always had.
#[derive(Serialize)]
struct SlotExport<'a> {
    content_hash: String,
    format: &'static str,
    holder: &'a str,
    receipt_number: u64,
    server_id: String,
    server_signature: String,
    slot: serde_json::Value,
    slot_index: u16,
    time: String,
    token_serial: String,
    transaction: u64,
    version: u8,
}

impl SlotExport<'_> {
    fn new<'a>(tf: &'a TokenFile, slot: u16, s: &Slot) -> anyhow::Result<SlotExport<'a>> {
        let r = &s.content.record;
        Ok(SlotExport {
            content_hash: hex::encode(r.content_hash),
            format: SLOT_EXPORT_FORMAT,
            holder: &tf.data.holder,
            receipt_number: s.receipt_number,
            server_id: hex::encode(s.content.server_id),
            server_signature: s.content.server_signature.to_hex(),
            // The slot's own serialization, as a (sorted) map.
            slot: serde_json::to_value(s)?,
            slot_index: slot,
            time: rfc3339_s(r.time),
            token_serial: tf.serial_hex(),
            transaction: r.transaction,
            version: r.version,
        })
    }
}

/// Writes a receipt pushed off the token to `dir/receipt-TX-NUMBER.token.json`.
fn export_slot(dir: &Path, tf: &TokenFile, slot: u16, s: &Slot) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!(
        "receipt-{}-{}.token.json",
        s.content.record.transaction, s.receipt_number
    ));
    let body = SlotExport::new(tf, slot, s)?;
    write_public_file(
        &path,
        (serde_json::to_string_pretty(&body)? + "\n").as_bytes(),
    )?;
    Ok(path)
}

/// `receipt export --json`. Fields in alphabetical order: the output as it has always been.
#[derive(Serialize)]
struct Exported {
    bytes: usize,
    digest: String,
    file: String,
}

/// `tally receipt export`: the package as the node has it, parsed (not verified: that is
/// `receipt verify`, against a CA the user trusts).
pub(super) async fn export(a: ExportArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let (bytes, pkg) = download_package(&c, a.transaction).await?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| default_package_path(a.transaction));
    write_public_file(&out, &bytes)?;
    let shown = Exported {
        bytes: bytes.len(),
        digest: hex::encode(pkg.receipt.digest()),
        file: out.display().to_string(),
    };
    c.show(&shown, |e| {
        format!(
            "package       {} ({} bytes)\ndigest        {}\ncheck it      tally receipt verify {} --ca CA.pem",
            e.file, e.bytes, e.digest, e.file
        )
    });
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_export_summary_keeps_its_key_order() {
        let e = Exported {
            bytes: 1,
            digest: "d".into(),
            file: "f".into(),
        };
        super::super::tests::sorted_like_before(&e);
    }

    use super::super::tests::sorted_like_before;
    use super::*;

    #[test]
    fn the_sign_summary_keeps_its_key_order() {
        sorted_like_before(&SignedSummary {
            digest: "d".into(),
            package: "p".into(),
            receipt_number: Some(1),
            slot: None,
            transaction: 7,
            verified: true,
        });
    }

    #[test]
    fn hex_fields_need_their_length() {
        assert_eq!(hex_array::<2>("x", " 0a0b ").expect("two bytes"), [10, 11]);
        assert!(hex_array::<2>("x", "0a").is_err());
        assert!(hex_array::<2>("x", "zz").is_err());
    }
}
