//! `tally session …`: trading sessions across operators (issue [7]; so far their opening).

use crate::client::{Client, Conn, answered, idempotency_key, parse_id};
use anyhow::Context;
use clap::{Args, Subcommand};
use std::process::ExitCode;
use tally_client::wire::federation::{
    OpenTradingSession, SessionMerchantRequest, TradingSessionView,
};
use tally_kernel::Amount;

#[derive(Subcommand)]
pub enum SessionCommand {
    /// Open a trading session (a customer, at its own operator): the deposit is held on your
    /// account and the merchant's operator is asked; `--wait` until it answers.
    Open(OpenArgs),
    /// One session, as this node sees it.
    Show(ShowArgs),
    /// Your sessions (a customer's, or a merchant's at its operator), newest first.
    List(ListArgs),
    /// Take (or `--decline`) a session you were informed of (a merchant, at its operator).
    Answer(AnswerArgs),
    /// Let a merchant take trading sessions at this node (the operator, or the merchant with
    /// its own account); `--auto-ack` takes every session at once (agent mode).
    Merchant(MerchantArgs),
}

#[derive(Args)]
pub struct OpenArgs {
    /// Your account the deposit is held on.
    #[arg(long)]
    pub account: String,
    /// The deposit, e.g. "10.00 EUR" (the account's currency).
    #[arg(long)]
    pub deposit: String,
    /// The merchant, as its operator names it.
    #[arg(long)]
    pub merchant: String,
    /// The merchant's operator: a peer's name or node id (this node's id when it is the same).
    #[arg(long)]
    pub operator: String,
    /// How long the session may last, seconds (default 3600).
    #[arg(long)]
    pub lifetime: Option<i64>,
    /// Wait up to this many seconds for the merchant's operator to answer (0: do not wait).
    #[arg(long, default_value_t = 0)]
    pub wait: u64,
    /// Retry safely with the key printed by the first attempt.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Args)]
pub struct ShowArgs {
    /// The session id (`<node id>.<n>`).
    pub session: String,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Args)]
pub struct ListArgs {
    /// Whose sessions (the operator only; default: yours).
    #[arg(long)]
    pub owner: Option<String>,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Args)]
pub struct AnswerArgs {
    /// The session id.
    pub session: String,
    /// Decline it instead.
    #[arg(long)]
    pub decline: bool,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Args)]
pub struct MerchantArgs {
    /// The merchant's name, as customers' operators will send it.
    pub name: String,
    /// Where it is paid (its currency is the merchant's).
    #[arg(long)]
    pub account: String,
    /// Agent mode: take every session at once.
    #[arg(long)]
    pub auto_ack: bool,
    #[command(flatten)]
    pub conn: Conn,
}

pub async fn session(cmd: SessionCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SessionCommand::Open(a) => open(a).await,
        SessionCommand::Show(a) => {
            let c = Client::new(&a.conn)?;
            let s = c.api.trading_session(&a.session).await?;
            c.show(&s, session_text);
            Ok(ExitCode::SUCCESS)
        }
        SessionCommand::List(a) => {
            let c = Client::new(&a.conn)?;
            let list = c.api.trading_sessions(a.owner.as_deref()).await?;
            c.show(&list, |l| {
                if l.is_empty() {
                    return "no trading sessions".to_string();
                }
                l.iter()
                    .map(|s| {
                        format!(
                            "{}  {} {}  {}  {}",
                            s.session, s.role, s.state, s.deposit, s.merchant
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(ExitCode::SUCCESS)
        }
        SessionCommand::Answer(a) => {
            let c = Client::new(&a.conn)?;
            let s = c.api.trading_session_answer(&a.session, !a.decline).await?;
            c.show(&s, session_text);
            Ok(ExitCode::SUCCESS)
        }
        SessionCommand::Merchant(a) => {
            let c = Client::new(&a.conn)?;
            let account = parse_id("--account", &a.account)?;
            let m = c
                .api
                .session_merchant_set(
                    &a.name,
                    &SessionMerchantRequest {
                        account: tally_kernel::Id(account),
                        auto_ack: a.auto_ack,
                    },
                )
                .await?;
            c.show(&m, |m| {
                format!(
                    "merchant {} takes trading sessions, paid in {} to {}{}",
                    m.name,
                    m.currency,
                    m.account,
                    if m.auto_ack {
                        " (agent mode: every session taken at once)"
                    } else {
                        ""
                    }
                )
            });
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn open(a: OpenArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let deposit: Amount = a.deposit.parse().with_context(|| {
        format!(
            "--deposit {:?}: expected an amount like \"10.00 EUR\"",
            a.deposit
        )
    })?;
    let key = idempotency_key(&a.idempotency_key);
    let req = OpenTradingSession {
        account: tally_kernel::Id(parse_id("--account", &a.account)?),
        deposit,
        merchant: a.merchant,
        operator: a.operator,
        lifetime_s: a.lifetime,
    };
    let mut s = answered(c.api.trading_session_open(&req, &key).await?);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(a.wait);
    while s.state == "held" && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        s = c.api.trading_session(&s.session).await?;
    }
    c.show(&s, session_text);
    Ok(match s.state.as_str() {
        "aborted" => ExitCode::from(1),
        "held" if a.wait > 0 => ExitCode::from(2),
        _ => ExitCode::SUCCESS,
    })
}

fn session_text(s: &TradingSessionView) -> String {
    let mut out = format!(
        "session     {}\nrole        {}\nstate       {}\nmerchant    {}\ndeposit     {}\ncustomer    {}\npeer        {}\nexpires     {}",
        s.session,
        s.role,
        s.state,
        s.merchant,
        s.deposit,
        s.customer,
        s.peer,
        s.expires_at.to_rfc3339()
    );
    if let (Some(d), Some(r)) = (&s.merchant_deposit, &s.rate) {
        out.push_str(&format!("\nmerchant's  {d} (rate {r} minor units)"));
    }
    if let Some(r) = &s.refusal {
        out.push_str(&format!("\nrefused     {r}"));
    }
    if let Some(t) = s.answer_by {
        out.push_str(&format!("\nanswer by   {}", t.to_rfc3339()));
    }
    out
}
