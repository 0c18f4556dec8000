//! The subscriber directory: users, their second-channel addresses, certificates naming an
//! address (instead of the directory), and the payees' thresholds above which a code is
//! needed.
//!
//! Key decision: `tally subscriber certificate` writes the certificate and its private key to
//! two new files (the key with mode 0600) and refuses to overwrite either: the node returns the
//! key once, and a key that replaced another file silently could not be recovered.

use super::args::{account_arg, amount_arg_nonneg, with_extension};
use super::print::{address_line, rows, session_summary};
use super::{AddressAddArgs, CertificateArgs, RuleSetArgs, SubscriberAddArgs, UserArgs};
use crate::client::Client;
use anyhow::{Context, bail};
use std::process::ExitCode;
use tally_client::wire::oob::{
    AddressRequest, CertificateRequest, RuleRequest, RuleSide, SubscriberRequest,
};
use tally_kernel::Secret;

/// `tally subscriber add`: adds the user, or sets its stored account.
pub(super) async fn add(a: SubscriberAddArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let contract = a
        .contract_account
        .as_deref()
        .map(|t| account_arg("--contract-account", t))
        .transpose()?;
    let req = SubscriberRequest {
        contract_account: contract.map(|id| id.0),
    };
    c.api.subscriber_set(&a.user, &req).await?;
    match contract {
        Some(acc) => println!("subscriber {} (stored account {acc})", a.user),
        None => println!("subscriber {}", a.user),
    }
    Ok(ExitCode::SUCCESS)
}

/// `tally subscriber address add`: a code goes to the new address, in a session confirmed
/// like any other.
pub(super) async fn address_add(a: AddressAddArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let req = AddressRequest {
        channel: a.channel.clone(),
        address: a.address.clone(),
    };
    let session = c.api.address_add(&a.user, &req).await?;
    c.show(&session, |v| {
        format!(
            "{}\na code was sent to the new address; confirm with `tally auth confirm {}`",
            session_summary(v),
            v.session
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// `tally subscriber address list`.
pub(super) async fn addresses(a: UserArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let addresses = c.api.addresses(&a.user).await?;
    c.show(&addresses, |v| rows(v, "(no addresses)", address_line));
    Ok(ExitCode::SUCCESS)
}

/// `tally subscriber certificate`: issues the certificate and writes it and its key.
pub(super) async fn certificate(a: CertificateArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let pem_path = with_extension(&a.out, "pem");
    let key_path = with_extension(&a.out, "key");
    for p in [&pem_path, &key_path] {
        if p.exists() {
            bail!("{} exists; choose another --out", p.display());
        }
    }
    let req = CertificateRequest {
        channel: a.channel.clone(),
        address: a.address.clone(),
        days: Some(a.days),
    };
    let issued = c.api.certificate_issue(&a.user, &req).await?;
    let key = Secret::new(issued.private_key);
    tally_service::identity::write_private_file(&key_path, key.expose().as_bytes())?;
    std::fs::write(&pem_path, &issued.certificate)
        .with_context(|| format!("writing {}", pem_path.display()))?;
    println!(
        "certificate  {}\nprivate key  {} (mode 0600)\nnames        {}:{} for {}\nuse it with  tally auth … --certificate {}",
        pem_path.display(),
        key_path.display(),
        a.channel,
        a.address,
        a.user,
        pem_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `tally rule set`: a payee's or a payer's threshold (one per currency and side).
pub(super) async fn rule_set(a: RuleSetArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let amount = amount_arg_nonneg("--secured-above", &a.secured_above)?;
    let side = if a.payer {
        RuleSide::Payer
    } else {
        RuleSide::Payee
    };
    let req = RuleRequest {
        secured_above: amount,
        side,
    };
    c.api.rule_set(&a.owner, &req).await?;
    let whose = match side {
        RuleSide::Payee => "payments and transfers to",
        RuleSide::Payer => "payments and transfers by",
    };
    println!(
        "{whose} {}: above {amount} they need a code on the payer's second channel; at or below, they execute at once",
        a.owner
    );
    Ok(ExitCode::SUCCESS)
}
