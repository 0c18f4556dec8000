//! `tally warrant …`: party A warrants the node's receipt key to sign on its behalf with named
//! counterparties (or anyone), lists its warrants, revokes one.
//!
//! The warrant is a certificate signed here with the token's software key, for the receipt key
//! of the node the token belongs to (checked against the node's answer first), valid within the
//! holder's own certificate. With the node's BLS key in it, it also covers fair exchanges.

use anyhow::{anyhow, bail};
use std::process::ExitCode;
use tally_client::wire::receipts::{ReceiptNodeView, WarrantBody};
use tally_kernel::Timestamp;
use tally_kernel::crypto::bls::BlsPublicKey;
use tally_kernel::crypto::warrant::{Counterparties, WarrantTerms, issue_warrant};
use tally_kernel::crypto::{Certificate, SigningKey};

use super::show::{warrant_table, warrant_text};
use super::token_file::{HolderKey, TokenFile};
use super::{CLOCK_SKEW_S, ConnArgs, WarrantIssueArgs, WarrantRevokeArgs};
use crate::client::Client;

/// The subject name of warrants for the node's receipt key.
const WARRANT_SUBJECT: &str = "tally receipt service";

/// `tally warrant list`.
pub(super) async fn list(a: ConnArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let list = c.api.warrants().await?;
    c.show(&list, |list| warrant_table(list));
    Ok(ExitCode::SUCCESS)
}

/// `tally warrant revoke`.
pub(super) async fn revoke(a: WarrantRevokeArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let serial = a.serial.trim().to_ascii_lowercase();
    if serial.is_empty() || !serial.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("warrant serial {:?}: expected hex digits", a.serial);
    }
    let w = c.api.warrant_revoke(&serial).await?;
    c.show(&w, warrant_text);
    Ok(ExitCode::SUCCESS)
}

/// `tally warrant issue`.
pub(super) async fn issue(a: WarrantIssueArgs) -> anyhow::Result<ExitCode> {
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
    let c = Client::new(&a.conn)?;
    let node = c.api.receipt_node().await?;
    if node.server_key.trim() != tf.data.node.server_key.trim() {
        bail!(
            "the node's receipt key ({}) is not the one in your token file ({}): this token \
             belongs to another node",
            node.server_id,
            tf.data.node.server_id
        );
    }
    let terms = terms(&a, &node)?;
    let certificate = make_warrant(&a, &tf, key, &terms)?;
    let req = WarrantBody {
        certificate: certificate.to_pem(),
    };
    let view = c.api.warrant_add(&req).await?;
    c.show(&view, |view| {
        format!(
            "{}\nfair exchange  {}",
            warrant_text(view),
            if terms.bls_key.is_some() {
                "yes (carries the node's BLS key)"
            } else {
                "no (plain receipts only)"
            }
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// Whom the warrant covers, and whether fair exchanges (the node's BLS key in it).
fn terms(a: &WarrantIssueArgs, node: &ReceiptNodeView) -> anyhow::Result<WarrantTerms> {
    let counterparties = if a.who.any {
        Counterparties::Any
    } else {
        Counterparties::Names(a.who.counterparties.clone())
    };
    let bls_key = if a.no_fair {
        None
    } else {
        Some(
            BlsPublicKey::from_hex(node.proxy_bls_key.trim())
                .map_err(|e| anyhow!("the node's proxy BLS key: {e}"))?
                .to_bytes(),
        )
    };
    Ok(WarrantTerms {
        counterparties,
        bls_key,
    })
}

/// The warrant certificate for the token's node, signed with `key`: valid from a minute ago
/// (clock skew) for `--days`, within the holder's own certificate.
fn make_warrant(
    a: &WarrantIssueArgs,
    tf: &TokenFile,
    key: &SigningKey,
    terms: &WarrantTerms,
) -> anyhow::Result<Certificate> {
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
    issue_warrant(
        &certificate,
        key,
        &tf.server_key,
        WARRANT_SUBJECT,
        terms,
        not_before,
        not_after,
    )
    .map_err(|e| anyhow!("cannot issue the warrant: {e}"))
}
