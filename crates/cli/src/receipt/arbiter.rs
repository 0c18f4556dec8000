//! `tally arbiter …`: ends a fair exchange that stopped half way. The originator aborts it
//! (block 313) or has the arbiter open B's verifiable escrow (block 314); party B deposits its
//! signature and receives A's from the node's escrow (block 310), checked here before the
//! package is saved.

use anyhow::bail;
use serde::Serialize;
use std::process::ExitCode;
use tally_client::wire::receipts::{
    ArbiterAsk, ArbiterCase, ArbiterView, ReceiptView, ResolveBody,
};
use tally_kernel::crypto::Certificate;
use tally_proto::receipt::Fields;
use tally_proto::receipt::flow::ReceiptState;

use super::files::{default_package_path, write_public_file};
use super::protocol::{check_offer, released_a_verifies, verified_package};
use super::show::arbiter_text;
use super::token_file::TokenFile;
use super::{ResolveArgs, TransactionArgs};
use crate::client::Client;

/// `tally arbiter abort` (the originator).
pub(super) async fn abort(a: TransactionArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let view = c.api.arbiter_abort(a.transaction).await?;
    c.show(&view, |view| {
        let mut out = arbiter_text(view);
        if view.signature.is_some() {
            out.push_str(
                "\nparty B resolved first: the arbiter gave you B's signature instead of aborting",
            );
        }
        out
    });
    Ok(ExitCode::SUCCESS)
}

/// `tally arbiter resolve`: by the originator without `--token`, by party B with it.
pub(super) async fn resolve(a: ResolveArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let Some(token) = &a.token else {
        let view = c
            .api
            .arbiter_resolve(a.transaction, &ResolveBody::default())
            .await?;
        c.show(&view, arbiter_text);
        return Ok(ExitCode::SUCCESS);
    };
    let tf = TokenFile::load(token)?;
    resolve_as_b(&c, &tf, &a).await
}

/// Block 310 at the arbiter node itself: the case is built from what the receipt node showed
/// (fields, A's escrow, A's certificate and warrant) and B's own certificate; A's signature is
/// checked under the node's proxy key before it is believed. The receipt node completes the
/// package later; B holds A's signature now.
async fn resolve_at_arbiter(
    c: &Client,
    tf: &TokenFile,
    receipt: &ReceiptView,
    fields: &Fields,
    signature_b: &str,
    url: &str,
) -> anyhow::Result<ExitCode> {
    let arbiter = crate::client::anonymous(url)?;
    let key = arbiter.arbiter_key().await?;
    if key.arbiter_key != tf.data.node.arbiter_key {
        bail!(
            "the arbiter node at {url} has key {}, but your escrow was made for {}: not asked",
            key.arbiter_key,
            tf.data.node.arbiter_key
        );
    }
    let warrant = c.api.receipt_warrant(receipt.transaction).await?;
    let der = |pem: &str, what: &str| -> anyhow::Result<String> {
        Certificate::from_pem(pem)
            .map(|c| hex::encode(c.as_der()))
            .map_err(|e| anyhow::anyhow!("{what}: {e}"))
    };
    let case = ArbiterCase {
        fields: hex::encode(fields.party_part()),
        certificate_a: der(&warrant.party_certificate, "A's certificate")?,
        warrant_a: der(&warrant.warrant.certificate, "A's warrant")?,
        certificate_b: der(&tf.data.certificate, "your certificate")?,
        ask: ArbiterAsk::ResolveByClient {
            signature_b: signature_b.into(),
            escrow_a: receipt
                .escrow_a
                .clone()
                .ok_or_else(|| anyhow::anyhow!("the offer carries no escrow of A's signature"))?,
        },
    };
    let ruling = arbiter.arbiter_resolve_for_b(&case).await?;
    let verified = released_a_verifies(tf, fields, ruling.signature.as_deref());
    c.show(&ruling, |r| {
        format!(
            "decision      {} (the arbiter node at {url})\n{}",
            r.decision.as_str(),
            if verified {
                "party A's signature verified under the node's proxy key"
            } else {
                "party A's signature: none released, or it does NOT verify"
            }
        )
    });
    Ok(if verified {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `arbiter resolve --token … --json`: the arbiter's answer, whether A's signature in it
/// verified, and where the package was saved.
#[derive(Serialize)]
struct ResolvedByB<'a> {
    #[serde(flatten)]
    answer: &'a ArbiterView,
    signature_a_verified: bool,
    package: Option<String>,
}

/// Block 310: B deposits its signature and receives A's; with A's verified and the receipt
/// complete, the package is downloaded, verified and saved. Exit 1 unless A's verified.
async fn resolve_as_b(c: &Client, tf: &TokenFile, a: &ResolveArgs) -> anyhow::Result<ExitCode> {
    let tx = a.transaction;
    let receipt = c.api.receipt(tx).await?;
    let fields = check_offer(&receipt, tf)?;
    if !receipt.fair {
        bail!("transaction {tx} is not a fair exchange; there is nothing to resolve");
    }
    if matches!(receipt.state, ReceiptState::Signed | ReceiptState::Acked) {
        bail!(
            "transaction {tx} completed ({}); there is nothing to resolve (`tally receipt sign \
             {tx} --token {}` fetches its package)",
            receipt.state,
            tf.path.display()
        );
    }
    let signature_b = tf.sign(&fields, None)?;
    if let Some(url) = &a.at {
        return resolve_at_arbiter(c, tf, &receipt, &fields, &signature_b.to_hex(), url).await;
    }
    let req = ResolveBody {
        signature_b: Some(signature_b.to_hex()),
    };
    let answer = c.api.arbiter_resolve(tx, &req).await?;
    let verified = released_a_verifies(tf, &fields, answer.signature.as_deref());
    let mut lines = vec![arbiter_text(&answer)];
    lines.push(if verified {
        "party A's signature verified under the node's proxy key".to_string()
    } else {
        "party A's signature: none released, or it does NOT verify".to_string()
    });
    let mut package = None;
    let complete = matches!(
        answer.receipt.state,
        ReceiptState::Resolved | ReceiptState::Signed | ReceiptState::Acked
    );
    if verified && complete {
        let (bytes, pkg, _) = verified_package(c, tf, tx).await?;
        let out = a.out.clone().unwrap_or_else(|| default_package_path(tx));
        write_public_file(&out, &bytes)?;
        lines.push(format!(
            "package       {} (digest {}, verified)",
            out.display(),
            hex::encode(pkg.receipt.digest())
        ));
        package = Some(out.display().to_string());
    }
    let shown = ResolvedByB {
        answer: &answer,
        signature_a_verified: verified,
        package,
    };
    c.show(&shown, |_| lines.join("\n"));
    Ok(if verified {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
