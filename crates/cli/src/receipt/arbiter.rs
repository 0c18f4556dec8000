//! `tally arbiter …`: ends a fair exchange that stopped half way. The originator aborts it
//! (block 313) or has the arbiter open B's verifiable escrow (block 314); party B deposits its
//! signature and receives A's from the node's escrow (block 310), checked here before the
//! package is saved.

use anyhow::bail;
use serde::Serialize;
use std::process::ExitCode;
use tally_client::wire::receipts::{ArbiterView, ResolveBody};
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
