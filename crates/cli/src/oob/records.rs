//! What verified sessions leave behind, read and written directly (no code needed): the
//! mailbox, merchants' offers, statements, kept certificates, and the trustee settlement that
//! pays merchants for the trustee payments of a period.

use super::args::{amount_arg_nonneg, time_opt};
use super::print::{
    certificate_line, collection_line, credit_line, mail_line, payout_line, rows, statement_text,
};
use super::{
    OfferSendArgs, SettleArgs, StatementArgs, TrusteeCreditArgs, TrusteeLimitArgs, UserArgs,
};
use crate::client::Client;
use std::process::ExitCode;
use tally_client::wire::oob::{OfferRequest, SettleRequest, TrusteeLimitRequest};

/// `tally mail list`: mail for and from the user ([`mail`](super::mail) sends and retrieves it through
/// sessions).
pub(super) async fn mail_list(a: UserArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let mail = c.api.mail(&a.user).await?;
    c.show(&mail, |v| rows(v, "(no mail)", mail_line));
    Ok(ExitCode::SUCCESS)
}

/// `tally offer send`: an offer in the user's mailbox, read with `tally auth offers`.
pub(super) async fn offer_send(a: OfferSendArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let req = OfferRequest {
        recipient: a.to.clone(),
        subject: a.subject.clone(),
        body: a.body.clone(),
    };
    let deposited = c.api.offer_deposit(&req).await?;
    c.show(&deposited, |v| {
        format!(
            "offer {} left for {}; they read it with `tally auth offers {}`",
            v.id, a.to, a.to
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// `tally statement`: the period is checked here, the node's default applies when absent.
pub(super) async fn statement(a: StatementArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let from = time_opt("--from", &a.from)?;
    let to = time_opt("--to", &a.to)?;
    let statement = c
        .api
        .statement(&a.user, from.as_deref(), to.as_deref())
        .await?;
    c.show(&statement, statement_text);
    Ok(ExitCode::SUCCESS)
}

/// `tally certificates`: the node-signed records kept for the user.
pub(super) async fn certificates(a: UserArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let certificates = c.api.certificates(&a.user).await?;
    c.show(&certificates, |v| {
        rows(v, "(no certificates)", certificate_line)
    });
    Ok(ExitCode::SUCCESS)
}

/// `tally trustee settle`: the payouts made and the debts collected (none when run again
/// for the same period).
pub(super) async fn settle(a: SettleArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let req = SettleRequest {
        until: time_opt("--until", &a.until)?,
    };
    let settlement = c.api.trustee_settle(&req).await?;
    c.show(&settlement, |s| {
        format!(
            "{}\n{}",
            rows(&s.payouts, "no merchant to pay", payout_line),
            rows(&s.collections, "no debt to collect", collection_line)
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// `tally trustee limit USER AMOUNT`.
pub(super) async fn trustee_limit(a: TrusteeLimitArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let limit = amount_arg_nonneg("limit", &a.limit)?;
    let credit = c
        .api
        .trustee_set_limit(&a.user, &TrusteeLimitRequest { limit })
        .await?;
    c.show(&credit, credit_line);
    Ok(ExitCode::SUCCESS)
}

/// `tally trustee credit USER`.
pub(super) async fn trustee_credit(a: TrusteeCreditArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let credit = c.api.trustee_credit(&a.user).await?;
    c.show(&credit, |v| rows(v, "no trustee credit", credit_line));
    Ok(ExitCode::SUCCESS)
}
