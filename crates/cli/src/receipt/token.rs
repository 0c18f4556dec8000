//! `tally token …`: issue a token to a party (`init`), show what a token file holds or what
//! tokens the node issued (`list`), and store writes whose acknowledgement was lost (`sync`).
//!
//! `init` makes the party's keys here (or the Ed25519 key inside a PKCS#11 token), has the node
//! certify the public halves, checks the certificate before anything is saved, and writes the
//! token file once, never over an existing one. The application key the node returns is a
//! secret: it goes into the file and nowhere else.

use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use std::process::ExitCode;
use tally_client::wire::receipts::{
    AckBody, IssuedToken, NewToken, ReceiptNodeView, ReceiptView, TokenProof,
};
use tally_kernel::crypto::bls::BlsSecretKey;
use tally_kernel::crypto::warrant::certificate_bls_key;
use tally_kernel::crypto::{Certificate, SigningKey, VerifyingKey};
use tally_kernel::{Secret, Timestamp};
use tally_proto::receipt::request::{CertificationRequest, REQUEST_DOMAIN};
use tally_proto::receipt::token::{SERIAL_LEN, SecureWrite, Stored, Token};

use super::files::create_private_file;
use super::protocol::hex_array;
use super::show::{rfc3339_s, token_table};
use super::token_file::{TOKEN_FORMAT, TokenFile, TokenFileData};
use super::{CLOCK_SKEW_S, TokenFileArgs, TokenInitArgs, TokenListArgs};
use crate::client::{Client, answered};
use crate::pkcs11;

/// `tally token init`.
pub(super) async fn init(a: TokenInitArgs) -> anyhow::Result<ExitCode> {
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
    let node = c.api.receipt_node().await?;
    if let Some(url) = &a.arbiter {
        super::token_request::pin_arbiter(url, &node).await?;
    }
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
    let issued = issue(&a, &c, node, &key).await;
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

/// `token init --json`. Fields in alphabetical order: the output as it has always been.
#[derive(Serialize)]
struct InitSummary {
    certificate_fingerprint: String,
    certificate_not_after: Timestamp,
    file: String,
    holder: String,
    key_fingerprint: String,
    key_store: &'static str,
    role: &'static str,
    serial: String,
    slots: u16,
}

/// `token init` once the key is made: the node certifies it, the file is written.
async fn issue(
    a: &TokenInitArgs,
    c: &Client,
    node: ReceiptNodeView,
    key: &NewKey,
) -> anyhow::Result<ExitCode> {
    let bls = BlsSecretKey::generate();
    let (issued, certificate) = certify(a, c, &node, key, &bls).await?;
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
        role: a.ask.role.as_str().into(),
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
    let summary = InitSummary {
        certificate_fingerprint: certificate.fingerprint(),
        certificate_not_after: certificate.not_after(),
        file: a.file.display().to_string(),
        holder: issued.holder.clone(),
        key_fingerprint: key.verifying_key().fingerprint(),
        key_store: if data.pkcs11.is_some() {
            "pkcs11"
        } else {
            "file"
        },
        role: a.ask.role.as_str(),
        serial: issued.serial.clone(),
        slots,
    };
    c.show(&summary, |s| {
        format!(
            "token         {}\nholder        {} ({})\nslots         {slots}\ncertificate   {} (valid until {})\nkey           {}\nfile          {} (mode 0600: {kept})",
            s.serial,
            s.holder,
            s.role,
            s.certificate_fingerprint,
            s.certificate_not_after.to_rfc3339(),
            s.key_fingerprint,
            s.file
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// Has the node issue the token for `key` and `bls`, and checks its certificate: for these
/// keys, and from the node's CA. The answer's application key is wiped once read.
async fn certify(
    a: &TokenInitArgs,
    c: &Client,
    node: &ReceiptNodeView,
    key: &NewKey,
    bls: &BlsSecretKey,
) -> anyhow::Result<(Issued, Certificate)> {
    let ca = Certificate::from_pem(&node.ca_certificate)
        .map_err(|e| anyhow!("the node's CA certificate: {e}"))?;
    let public = key.verifying_key();
    let bls_public = bls.public_key();
    let request = CertificationRequest {
        holder: &a.ask.holder,
        role: a.ask.role.as_str(),
        public_key: &public,
        bls_key: Some(&bls_public),
    };
    // Proof of possession: the new keys sign the request (the PKCS#11 key inside its token).
    let msg = request.message();
    let ed25519 = match key {
        NewKey::Software(k) => k.sign(REQUEST_DOMAIN, &msg),
        NewKey::Pkcs11(t, g) => t.sign(&g.r, &g.key, REQUEST_DOMAIN, &msg)?,
    };
    let req = NewToken {
        holder: a.ask.holder.clone(),
        role: a.ask.role.as_str().to_string(),
        public_key: public.to_hex(),
        bls_key: Some(bls_public.to_hex()),
        proof: TokenProof {
            ed25519: ed25519.to_hex(),
            bls: Some(bls.sign(REQUEST_DOMAIN, &msg).to_hex()),
        },
        slots: Some(a.ask.slots),
        days: Some(a.ask.days),
    };
    // The keys of this run exist only here: a retry within the run reuses the key, a re-run
    // issues a new token (for new keys).
    let idem = uuid::Uuid::now_v7().to_string();
    let issued = Issued(answered(c.api.token_issue(&idem, &req).await?));
    let certificate = Certificate::from_pem(&issued.certificate)
        .map_err(|e| anyhow!("the node's certificate for {}: {e}", a.ask.holder))?;
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
    Ok((issued, certificate))
}

/// An issued token whose application key is wiped when it is dropped.
struct Issued(IssuedToken);

impl std::ops::Deref for Issued {
    type Target = IssuedToken;
    fn deref(&self) -> &IssuedToken {
        &self.0
    }
}

impl Drop for Issued {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0.app_key);
    }
}

/// `tally token list`: the token file's slots (no network), or the node's tokens.
pub(super) async fn list(a: TokenListArgs) -> anyhow::Result<ExitCode> {
    let Some(path) = &a.file else {
        let c = Client::new(&a.conn)?;
        let tokens = c.api.tokens().await?;
        c.show(&tokens, |tokens| token_table(tokens));
        return Ok(ExitCode::SUCCESS);
    };
    let tf = TokenFile::load(path)?;
    if a.conn.json {
        println!("{}", serde_json::to_string_pretty(&FileListing::of(&tf))?);
    } else {
        print_file_listing(&tf);
    }
    Ok(ExitCode::SUCCESS)
}

/// `token list --file … --json`. Fields in alphabetical order: the output as it has always
/// been.
#[derive(Serialize)]
struct FileListing<'a> {
    holder: &'a str,
    pending: Vec<PendingRow>,
    role: &'a str,
    serial: String,
    slots: Vec<SlotRow>,
}

/// A slot of the token: only its index when it is free.
#[derive(Serialize)]
struct SlotRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    content_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    receipt_number: Option<u64>,
    slot: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction: Option<u64>,
}

/// A signature waiting for the node's write.
#[derive(Serialize)]
struct PendingRow {
    priority: u8,
    slot: u16,
    transaction: u64,
}

impl FileListing<'_> {
    fn of(tf: &TokenFile) -> FileListing<'_> {
        let t = &tf.data.token;
        let slots = t
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let r = s.as_ref().map(|s| &s.content.record);
                SlotRow {
                    content_hash: r.map(|r| hex::encode(r.content_hash)),
                    priority: s.as_ref().map(|s| s.priority),
                    receipt_number: s.as_ref().map(|s| s.receipt_number),
                    slot: i,
                    time: r.map(|r| r.time),
                    transaction: r.map(|r| r.transaction),
                }
            })
            .collect();
        let pending = t
            .pending
            .iter()
            .map(|p| PendingRow {
                priority: p.priority,
                slot: p.slot,
                transaction: p.transaction,
            })
            .collect();
        FileListing {
            holder: &tf.data.holder,
            pending,
            role: &tf.data.role,
            serial: tf.serial_hex(),
            slots,
        }
    }
}

/// The token file's slots and pending signatures as a table.
fn print_file_listing(tf: &TokenFile) {
    let t = &tf.data.token;
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
}

/// `token sync --json`. Fields in alphabetical order: the output as it has always been.
#[derive(Serialize)]
struct SyncSummary {
    acknowledged: usize,
    lines: Vec<String>,
    refused: usize,
    serial: String,
    stored: usize,
    writes: usize,
}

/// What storing the node's writes on the token came to.
#[derive(Default)]
struct Stores {
    /// (transaction, receipt number) to acknowledge.
    acks: Vec<(u64, u64)>,
    /// One line per write.
    lines: Vec<String>,
    /// Newly stored.
    stored: usize,
    /// Refused by the token.
    refused: usize,
}

/// Stores each write on the token (in memory; the caller saves).
fn store_writes(tf: &mut TokenFile, writes: &[ReceiptView]) -> Stores {
    let mut out = Stores::default();
    for w in writes {
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
                out.stored += 1;
                out.acks.push((tx, n));
                out.lines.push(format!(
                    "transaction {tx}  receipt {n}  slot {slot}  stored"
                ));
            }
            Ok((slot, Stored::Already(n))) => {
                out.acks.push((tx, n));
                out.lines.push(format!(
                    "transaction {tx}  receipt {n}  slot {slot}  already held (the ack was lost); acknowledging again"
                ));
            }
            Err(why) => {
                out.refused += 1;
                out.lines.push(format!("transaction {tx}  refused: {why}"));
            }
        }
    }
    out
}

/// `tally token sync`.
pub(super) async fn sync(a: TokenFileArgs) -> anyhow::Result<ExitCode> {
    let mut tf = TokenFile::load(&a.file)?;
    let c = Client::new(&a.conn)?;
    let serial = tf.serial_hex();
    let writes = c.api.token_writes(&serial).await?;
    let s = store_writes(&mut tf, &writes);
    // Saved before any ack: the node forgets a write once acked.
    if s.stored > 0 {
        tf.save()?;
    }
    let mut acked = 0usize;
    for &(tx, n) in &s.acks {
        let ack = AckBody { receipt_number: n };
        c.api.receipt_ack(tx, &ack).await.with_context(|| {
            format!("acknowledging transaction {tx} (it is stored on the token; run sync again)")
        })?;
        acked += 1;
    }
    let summary = SyncSummary {
        acknowledged: acked,
        lines: s.lines,
        refused: s.refused,
        serial,
        stored: s.stored,
        writes: writes.len(),
    };
    c.show(&summary, |s| {
        let mut out = s.lines.join("\n");
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!(
            "token {}: {} write(s) waiting, {} stored, {} acknowledged, {} refused",
            s.serial, s.writes, s.stored, s.acknowledged, s.refused
        ));
        out
    });
    Ok(if summary.refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::sorted_like_before;
    use super::*;

    #[test]
    fn summaries_keep_their_key_order() {
        sorted_like_before(&SyncSummary {
            acknowledged: 1,
            lines: vec!["l".into()],
            refused: 0,
            serial: "s".into(),
            stored: 1,
            writes: 1,
        });
        sorted_like_before(&InitSummary {
            certificate_fingerprint: "c".into(),
            certificate_not_after: Timestamp(0),
            file: "f".into(),
            holder: "h".into(),
            key_fingerprint: "k".into(),
            key_store: "file",
            role: "customer",
            serial: "s".into(),
            slots: 16,
        });
        sorted_like_before(&FileListing {
            holder: "h",
            pending: vec![PendingRow {
                priority: 1,
                slot: 0,
                transaction: 2,
            }],
            role: "customer",
            serial: "s".into(),
            slots: vec![SlotRow {
                content_hash: Some("c".into()),
                priority: Some(1),
                receipt_number: Some(3),
                slot: 0,
                time: Some(4),
                transaction: Some(2),
            }],
        });
    }

    #[test]
    fn a_free_slot_lists_as_its_index_only() {
        let free = SlotRow {
            content_hash: None,
            priority: None,
            receipt_number: None,
            slot: 3,
            time: None,
            transaction: None,
        };
        assert_eq!(serde_json::to_string(&free).expect("json"), r#"{"slot":3}"#);
    }
}
