//! `tally provider …`: service providers of pads (issue [8], SPEC P3, P4, P7;
//! `docs/protocols/pads.md`, Money and Forwarding). A provider registers its price and its
//! webhook; holders' requests arrive there as signed webhooks (`Tally-Signature`, the node's
//! webhook secret) carrying a request id, never a pad; the provider answers with `reply`, and
//! the operator's settlement pays it out of the pads' clearing account.

use crate::client::{Client, Conn, answered, idempotency_key, money, parse_id};
use base64::Engine as _;
use clap::{Args, Subcommand};
use std::process::ExitCode;
use tally_client::wire::pads::{
    PadForwardView, PadPayRequest, PadPayoutRequest, PadProviderRequest, PadProviderView,
    PadReplyRequest, PadVerdict,
};

#[derive(Subcommand)]
pub enum ProviderCommand {
    /// Register as a provider of pad holders, or change your terms (the owner of the merchant
    /// account you are paid into): your price per request and the webhook requests go to.
    Register(RegisterArgs),
    /// A provider's terms.
    Show(NameArgs),
    /// A request forwarded to your provider, and its state (escrowed: its deadline).
    Request(RequestArgs),
    /// Answer a request (the provider): the reply goes into the asking pad's mailbox through
    /// the relay; an escrowed request is marked performed unless `--not-performed`.
    Reply(ReplyArgs),
    /// Pay out of the pads' clearing accounts what they owe now (the operator): the
    /// operator's fees and each provider's prices. The node also does it on its own.
    Settle(SettleArgs),
    /// Decide a disputed escrow (the operator): `--pay` the provider, or `--refuse` (the price
    /// goes back to the pad).
    Verdict(VerdictArgs),
    /// Pay the holder of the pad that sent a request (the provider; the seed's reverse flow):
    /// from your account, without learning which pad it is.
    Pay(PayArgs),
    /// Be paid out in a new pad (the provider): its value from your account, its file into
    /// your wallet.
    Payout(PayoutArgs),
}

#[derive(Args)]
pub struct PayArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The provider's name.
    pub name: String,
    /// The request (`req-…`) whose pad is paid.
    #[arg(long)]
    pub request: String,
    /// The amount, e.g. "0.20 EUR".
    #[arg(long)]
    pub amount: String,
    /// Idempotency key (generated and printed when absent): re-run with it after a lost
    /// answer to pay once.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

#[derive(Args)]
pub struct PayoutArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The provider's name.
    pub name: String,
    #[command(flatten)]
    pub pad: crate::pads::NewPadArgs,
}

#[derive(Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The provider's name (1 to 64 of a-z, 0-9 and -).
    pub name: String,
    /// Your merchant account, credited at settlement; its currency is the price's.
    #[arg(long)]
    pub account: String,
    /// Your price per request, e.g. "0.25 EUR".
    #[arg(long)]
    pub price: String,
    /// Where requests are posted (http:// or https://).
    #[arg(long)]
    pub webhook: String,
    /// Hold each request's price in escrow until you performed.
    #[arg(long)]
    pub escrow: bool,
}

#[derive(Args)]
pub struct NameArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The provider's name.
    pub name: String,
}

#[derive(Args)]
pub struct RequestArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The provider's name.
    pub name: String,
    /// The request (`req-…`).
    pub request: String,
}

#[derive(Args)]
pub struct ReplyArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The provider's name.
    pub name: String,
    /// The request (`req-…`).
    #[arg(long)]
    pub request: String,
    #[command(flatten)]
    pub body: crate::pads::BodyArgs,
    /// For an escrowed request: you could not perform (its price goes back to the pad).
    #[arg(long)]
    pub not_performed: bool,
    /// For an escrowed request you performed: what it cost (time or resources used), at most
    /// the price held, e.g. "0.30 EUR"; the rest goes back to the pad.
    #[arg(long, conflicts_with = "not_performed")]
    pub charge: Option<String>,
}

#[derive(Args)]
pub struct SettleArgs {
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Args)]
pub struct VerdictArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The disputed request (`req-…`).
    pub request: String,
    /// Pay the provider.
    #[arg(long, conflicts_with = "refuse", required_unless_present = "refuse")]
    pub pay: bool,
    /// Refuse: the price goes back to the pad.
    #[arg(long)]
    pub refuse: bool,
}

pub async fn provider(c: ProviderCommand) -> anyhow::Result<ExitCode> {
    match c {
        ProviderCommand::Register(a) => {
            let client = Client::new(&a.conn)?;
            let price = crate::accounts::parse_amount(&a.price)?;
            let req = PadProviderRequest {
                account: tally_kernel::Id(parse_id("--account", &a.account)?),
                price_minor: price.minor,
                currency: price.currency.code().into(),
                webhook: a.webhook.clone(),
                escrow: a.escrow,
            };
            let v = client.api.pad_provider_register(&a.name, &req).await?;
            client.show(&v, provider_summary);
        }
        ProviderCommand::Show(a) => {
            let client = Client::new(&a.conn)?;
            let v = client.api.pad_provider(&a.name).await?;
            client.show(&v, provider_summary);
        }
        ProviderCommand::Request(a) => {
            let client = Client::new(&a.conn)?;
            let v = client.api.pad_provider_request(&a.name, &a.request).await?;
            client.show(&v, forward_summary);
        }
        ProviderCommand::Reply(a) => {
            let client = Client::new(&a.conn)?;
            let body = a.body.read()?;
            let charge = a
                .charge
                .as_deref()
                .map(crate::accounts::parse_amount)
                .transpose()?;
            let req = PadReplyRequest {
                request: a.request.clone(),
                body: base64::engine::general_purpose::STANDARD.encode(&body),
                performed: !a.not_performed,
                charge_minor: charge.map(|c| c.minor),
            };
            let answer = client.api.pad_provider_reply(&a.name, &req).await?;
            if answer.replayed {
                eprintln!("note: the request was answered before; nothing more was sent");
            }
            client.show(&answer.value, forward_summary);
        }
        ProviderCommand::Settle(a) => {
            let client = Client::new(&a.conn)?;
            let s = client.api.pad_settle().await?;
            client.show(&s, |s| {
                if s.payouts.is_empty() {
                    return "nothing to settle".to_string();
                }
                s.payouts
                    .iter()
                    .map(|p| {
                        format!(
                            "paid      {:<12} {} for {} line(s) into {}",
                            p.provider.as_deref().unwrap_or("fees"),
                            money(p.amount_minor, &p.currency),
                            p.lines,
                            p.account
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        ProviderCommand::Verdict(a) => {
            let client = Client::new(&a.conn)?;
            let v = client
                .api
                .pad_escrow_verdict(&a.request, &PadVerdict { pay: a.pay })
                .await?;
            client.show(&v, forward_summary);
        }
        ProviderCommand::Pay(a) => {
            let client = Client::new(&a.conn)?;
            let amount = crate::accounts::parse_amount(&a.amount)?;
            let key = idempotency_key(&a.idempotency_key);
            let req = PadPayRequest {
                request: a.request.clone(),
                amount_minor: amount.minor,
            };
            let paid = answered(client.api.pad_provider_pay(&a.name, &req, &key).await?);
            client.show(&paid, |p| {
                format!(
                    "paid      {} to the holder of {}\ntransfer  {}",
                    money(p.amount_minor, &p.currency),
                    p.request,
                    p.transfer
                )
            });
        }
        ProviderCommand::Payout(a) => {
            let client = Client::new(&a.conn)?;
            let (value, key) = a.pad.value_and_key()?;
            let req = PadPayoutRequest {
                value_minor: value.minor,
                size: a.pad.size,
                mode: Some(a.pad.mode.clone()),
                node_url: client.base().to_string(),
            };
            let sold = answered(client.api.pad_provider_payout(&a.name, &req, &key).await?);
            crate::pads::keep(&sold, &a.pad.wallet, true)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn provider_summary(v: &PadProviderView) -> String {
    let mut out = format!(
        "provider  {}\nowner     {}\nprice     {} per request{}\naccount   {}\nwebhook   {}",
        v.name,
        v.owner,
        money(v.price_minor, &v.currency),
        if v.escrow { ", held in escrow" } else { "" },
        v.account,
        v.webhook
    );
    if let Some(secret) = &v.webhook_secret {
        out.push_str(&format!(
            "\nsecret    {secret}\n          (check each webhook's Tally-Signature with it; keep it secret)"
        ));
    }
    out
}

fn forward_summary(v: &PadForwardView) -> String {
    let mut out = format!(
        "request   {}\nprovider  {}\nstate     {}",
        v.request, v.provider, v.state
    );
    if let Some(d) = &v.deadline {
        out.push_str(&format!("\ndeadline  {d}"));
    }
    out
}
