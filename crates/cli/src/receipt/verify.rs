//! `tally receipt verify`: checks a receipt package offline, with no network at all: the
//! record, every signature and certificate, the warrants of proxy signatures, and on request
//! that its journal entry is in a log export.
//!
//! The trust anchor is a CA certificate the user brings (`--ca`); without one, the package's
//! own CA certificate is used to check that the package is consistent, the output says so with
//! its fingerprint to compare, and the exit status is 2: a package anyone could have made with
//! their own CA is not a verified receipt. A package that is not valid is not an error of the
//! command: it prints why and exits 1.

use anyhow::{Context, anyhow};
use serde::Serialize;
use std::path::Path;
use std::process::ExitCode;
use tally_kernel::crypto::Certificate;
use tally_proto::receipt::{self as proto, Package, Verified};

use super::VerifyArgs;
use super::show::{record_block, version_text};
use crate::log_export::Included;

/// Why a package is not valid: printed, and the exit status is 1 (any other error is the
/// command's own failure).
#[derive(Debug)]
struct NotValid(String);

impl std::fmt::Display for NotValid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotValid {}

/// A [`NotValid`] for `why`.
fn invalid(why: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(NotValid(why.to_string()))
}

/// Exit status of a package that is consistent under its own CA, which nobody vouched for.
const UNTRUSTED_CA: u8 = 2;

/// `tally receipt verify`.
pub(super) async fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let checked = match (check(&a), &a.online) {
        (Ok(()), Some(url)) => online(&a, url).await,
        (other, _) => other,
    };
    match checked {
        Ok(()) if a.ca.is_none() => {
            eprintln!(
                "receipt NOT verified: it is consistent, but under the CA certificate it carries \
                 itself, which anyone can make; pass --ca with your operator's CA certificate"
            );
            Ok(ExitCode::from(UNTRUSTED_CA))
        }
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => match e.downcast::<NotValid>() {
            Ok(NotValid(why)) => {
                eprintln!("receipt NOT valid: {why}");
                Ok(ExitCode::FAILURE)
            }
            Err(e) => Err(e),
        },
    }
}

/// `--online URL`: the node checks the package against its CA and says which of its
/// certificates and warrants were revoked since (printed; the receipt stands) or before the
/// receipt's time (not valid).
async fn online(a: &VerifyArgs, url: &str) -> anyhow::Result<()> {
    let bytes = read_package(&a.file)?.to_bytes();
    let node = crate::client::anonymous(url)?;
    let answer = node
        .receipt_verify_online(bytes)
        .await
        .with_context(|| format!("asking {url} to verify the package"))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        for r in &answer.revoked {
            let when = if r.before_receipt {
                "before the receipt"
            } else {
                "after the receipt: it stands, but signs nothing more"
            };
            println!(
                "revoked       {} {} at {} ({when})",
                r.what,
                r.serial,
                r.revoked_at.to_rfc3339()
            );
        }
        if answer.valid {
            println!("online        {url} checked it: valid");
        }
    }
    if answer.valid {
        return Ok(());
    }
    Err(invalid(match answer.problem {
        Some(p) => format!("the node at {url} says: {p}"),
        None => format!("the node at {url} says a certificate or warrant was revoked before it"),
    }))
}

/// Checks the package and prints what verified.
fn check(a: &VerifyArgs) -> anyhow::Result<()> {
    let pkg = read_package(&a.file)?;
    let (ca, anchor) = trust_anchor(a.ca.as_deref(), &pkg)?;
    let v = proto::verify_package(&pkg, &ca).map_err(|e| {
        eprintln!("trust anchor: {anchor}");
        invalid(e)
    })?;
    let included = match (&a.log, &pkg.journal) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(invalid(
                "the package carries no journal entry to look up in the log",
            ));
        }
        (Some(path), Some(entry)) => Some(
            crate::log_export::check(entry, path, a.node_key.as_deref())
                .map_err(|e| invalid(format!("not in the log {}: {e:#}", path.display())))?,
        ),
    };
    let checked = Checked {
        pkg: &pkg,
        ca: &ca,
        anchor: &anchor,
        v: &v,
        included: included.as_ref(),
    };
    if a.json {
        print_json(a, &checked)
    } else {
        print_text(a, &checked);
        Ok(())
    }
}

/// The package file, at most [`proto::PACKAGE_LEN_MAX`] bytes, parsed.
fn read_package(file: &Path) -> anyhow::Result<Package> {
    let len = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    if len > proto::PACKAGE_LEN_MAX as u64 {
        return Err(invalid(format!(
            "the file is {len} bytes, a receipt package is at most {}",
            proto::PACKAGE_LEN_MAX
        )));
    }
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    Package::from_bytes(&bytes).map_err(invalid)
}

/// The CA to verify against, and how to describe it: `--ca`, else the package's own.
fn trust_anchor(ca: Option<&Path>, pkg: &Package) -> anyhow::Result<(Certificate, String)> {
    if let Some(path) = ca {
        let pem =
            std::fs::read_to_string(path).with_context(|| format!("--ca {}", path.display()))?;
        let ca = Certificate::from_pem(&pem)
            .map_err(|e| anyhow!("--ca {}: not a PEM certificate: {e}", path.display()))?;
        let anchor = format!(
            "CA certificate {} (fingerprint {})",
            path.display(),
            ca.fingerprint()
        );
        return Ok((ca, anchor));
    }
    let Some(der) = &pkg.cert_ca else {
        return Err(invalid(
            "the package carries no CA certificate; pass --ca with your operator's",
        ));
    };
    let ca = Certificate::from_der(der)
        .map_err(|e| invalid(format!("the package's CA certificate: {e}")))?;
    let anchor = format!(
        "CA certificate from the package itself, fingerprint {} — compare it with your \
         operator's; pass --ca to check against a known CA",
        ca.fingerprint()
    );
    Ok((ca, anchor))
}

/// What verified, for printing.
struct Checked<'a> {
    pkg: &'a Package,
    ca: &'a Certificate,
    anchor: &'a str,
    v: &'a Verified,
    included: Option<&'a Included>,
}

/// `receipt verify --json`. Fields in alphabetical order: the output as it has always been.
#[derive(Serialize)]
struct VerifiedJson<'a> {
    ca_fingerprint: String,
    ca_from_package: bool,
    ca_trusted: bool,
    content_hash: String,
    digest: String,
    journal_hash: Option<String>,
    journal_seq: Option<i64>,
    log_checkpoint_seq: Option<i64>,
    log_node_key: Option<String>,
    party_a: &'a str,
    party_a_fingerprint: String,
    party_b: &'a str,
    party_b_fingerprint: String,
    record: Option<&'a str>,
    record_included: bool,
    server_id: String,
    time: String,
    transaction: u64,
    trust_anchor: &'a str,
    valid: bool,
    version: u8,
    warrant_a: Option<&'a str>,
    warrant_b: Option<&'a str>,
}

/// The record, when `--show-record` asks for it and the package has it.
fn record_shown<'a>(a: &VerifyArgs, pkg: &'a Package) -> Option<&'a str> {
    a.show_record.then_some(pkg.record.as_deref()).flatten()
}

fn print_json(a: &VerifyArgs, c: &Checked) -> anyhow::Result<()> {
    let (v, f) = (c.v, &c.v.fields);
    let out = VerifiedJson {
        ca_fingerprint: c.ca.fingerprint(),
        ca_from_package: a.ca.is_none(),
        ca_trusted: a.ca.is_some(),
        content_hash: hex::encode(f.content_hash),
        digest: hex::encode(c.pkg.receipt.digest()),
        journal_hash: v.journal_hash.map(hex::encode),
        journal_seq: v.journal_seq,
        log_checkpoint_seq: c.included.map(|i| i.checkpoint_seq),
        log_node_key: c.included.map(|i| i.node_key.clone()),
        party_a: &v.party_a,
        party_a_fingerprint: hex::encode(f.party_a),
        party_b: &v.party_b,
        party_b_fingerprint: hex::encode(f.party_b),
        record: record_shown(a, c.pkg),
        record_included: c.pkg.record.is_some(),
        server_id: hex::encode(f.server_id),
        time: f.timestamp().to_rfc3339(),
        transaction: f.transaction,
        trust_anchor: c.anchor,
        valid: a.ca.is_some(),
        version: f.version,
        warrant_a: v.warrant_a.as_deref(),
        warrant_b: v.warrant_b.as_deref(),
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn print_text(a: &VerifyArgs, c: &Checked) {
    let (v, f) = (c.v, &c.v.fields);
    println!("trust anchor  {}", c.anchor);
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
    if let Some(i) = c.included {
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
    println!("digest        {}", hex::encode(c.pkg.receipt.digest()));
    match (&c.pkg.record, record_shown(a, c.pkg)) {
        (None, _) => println!("record        (not in the package; only its hash is signed)"),
        (Some(_), Some(r)) => println!("{}", record_block(r)),
        (Some(r), None) => println!(
            "record        {} bytes, matches the content hash (--show-record prints it)",
            r.len()
        ),
    }
    if a.ca.is_some() {
        println!("receipt verified");
    } else {
        println!("receipt consistent (CA not trusted: pass --ca)");
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::sorted_like_before;
    use super::*;

    #[test]
    fn the_json_keeps_its_key_order() {
        sorted_like_before(&VerifiedJson {
            ca_fingerprint: "c".into(),
            ca_from_package: false,
            ca_trusted: true,
            content_hash: "h".into(),
            digest: "d".into(),
            journal_hash: Some("j".into()),
            journal_seq: Some(1),
            log_checkpoint_seq: None,
            log_node_key: None,
            party_a: "bob",
            party_a_fingerprint: "a".into(),
            party_b: "alice",
            party_b_fingerprint: "b".into(),
            record: Some("r"),
            record_included: true,
            server_id: "s".into(),
            time: "t".into(),
            transaction: 1,
            trust_anchor: "anchor",
            valid: true,
            version: 1,
            warrant_a: Some("w"),
            warrant_b: None,
        });
    }

    #[test]
    fn a_file_that_is_no_package_is_not_valid_rather_than_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("junk.tally");
        std::fs::write(&file, b"not a package").expect("write");
        let e = read_package(&file).expect_err("junk");
        assert!(e.downcast_ref::<NotValid>().is_some(), "{e:#}");
        let e = read_package(&dir.path().join("missing")).expect_err("missing");
        assert!(e.downcast_ref::<NotValid>().is_none(), "{e:#}");
    }
}
