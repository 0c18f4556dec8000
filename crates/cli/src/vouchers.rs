//! `tally voucher …` (the operator and retailers): voucher cards sold for cash, redeemed
//! anonymously for a pad with `tally pad redeem` (issue [8], SPEC P1).

use crate::client::{Client, Conn, answered, idempotency_key, money, parse_id};
use clap::{Args, Subcommand};
use std::process::ExitCode;
use tally_client::wire::pads::{VoucherIssueRequest, VoucherSellRequest, VoucherView};

#[derive(Subcommand)]
pub enum VoucherCommand {
    /// Issue blank cards of one value for a retailer (the operator): prints each serial and
    /// code once, for the printer; the node keeps only a keyed hash of each code.
    Issue(IssueArgs),
    /// A card's state (the operator or its retailer).
    Show(SerialArgs),
    /// Sell a card at the till (its retailer): its value moves from your account to the
    /// operator's voucher float.
    Sell(SellArgs),
    /// Cancel a card (the operator): a stolen blank one never sells or redeems; a sold one is
    /// refunded to the retailer.
    Cancel(SerialArgs),
}

#[derive(Args)]
pub struct IssueArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The retailer that sells them (its API key's owner).
    #[arg(long)]
    pub retailer: String,
    /// Each card's value, e.g. "10.00 EUR".
    #[arg(long)]
    pub value: String,
    /// How many cards (1 to 100).
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// Idempotency key (generated and printed when absent): the same key prints the same
    /// cards again.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

#[derive(Args)]
pub struct SerialArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The card's serial (`vs-…`).
    pub serial: String,
}

#[derive(Args)]
pub struct SellArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The card's serial (`vs-…`).
    pub serial: String,
    /// Your account that pays the card's value.
    #[arg(long)]
    pub from: String,
}

pub async fn voucher(c: VoucherCommand) -> anyhow::Result<ExitCode> {
    match c {
        VoucherCommand::Issue(a) => {
            let client = Client::new(&a.conn)?;
            let value = crate::accounts::parse_amount(&a.value)?;
            let key = idempotency_key(&a.idempotency_key);
            let req = VoucherIssueRequest {
                retailer: a.retailer.clone(),
                value_minor: value.minor,
                currency: value.currency.code().into(),
                count: a.count,
            };
            let issued = answered(client.api.vouchers_issue(&req, &key).await?);
            client.show(&issued, |i| {
                let mut out = format!(
                    "{} card(s) of {} for {}",
                    i.vouchers.len(),
                    value,
                    a.retailer
                );
                for v in &i.vouchers {
                    out.push_str(&format!("\nvoucher   {}  code {}", v.serial, v.code));
                }
                out
            });
        }
        VoucherCommand::Show(a) => {
            let client = Client::new(&a.conn)?;
            let v = client.api.voucher(&a.serial).await?;
            client.show(&v, summary);
        }
        VoucherCommand::Sell(a) => {
            let client = Client::new(&a.conn)?;
            let from = parse_id("--from", &a.from)?;
            let v = answered(
                client
                    .api
                    .voucher_sell(
                        &a.serial,
                        &VoucherSellRequest {
                            from: tally_kernel::Id(from),
                        },
                    )
                    .await?,
            );
            client.show(&v, summary);
        }
        VoucherCommand::Cancel(a) => {
            let client = Client::new(&a.conn)?;
            let v = client.api.voucher_cancel(&a.serial).await?;
            client.show(&v, summary);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn summary(v: &VoucherView) -> String {
    format!(
        "voucher   {}\nstate     {}\nvalue     {}\nretailer  {}",
        v.serial,
        v.state,
        money(v.value_minor, &v.currency),
        v.retailer
    )
}
