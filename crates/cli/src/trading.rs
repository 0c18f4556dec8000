//! `tally session …`: trading sessions across operators (issue [7]; so far their opening).

use crate::client::{Client, Conn, answered, idempotency_key, parse_id};
use crate::wallet::Wallet;
use anyhow::Context;
use clap::{Args, Subcommand};
use std::process::ExitCode;
use tally_client::wire::federation::{
    OpenTradingSession, SessionMerchantRequest, TradingSessionView,
};
use tally_kernel::Amount;
use tally_proto::session::purchase::{MacedPurchase, Purchase, list_next, new_tab};
use tally_proto::session::receipt::SessionReceipt;

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
    /// Buy within an open session at the merchant's agent (a customer): the first purchase
    /// opens a tab there with your session key; each purchase is kept in your wallet until
    /// the agent confirms it, so running the command again after a lost answer is safe.
    Buy(BuyArgs),
    /// Run the merchant agent (a merchant): customers' purchases are journaled here, on the
    /// merchant's side, never at the operators.
    Agent(crate::agent::AgentArgs),
    /// End the session (a customer): close your tab at the merchant's agent (which sends the
    /// merchant's record), sign your record (total, count, list hash) and send it to your
    /// operator; `--wait` until the merchant's operator has compared both (cleared or
    /// disputed).
    Close(CloseArgs),
    /// Start the session's next transaction (a customer; M4): once the deposit is used up, or
    /// a purchase does not fit what is left of it, the transaction so far is concluded (your
    /// tab closed, your record sent, `--wait` until it is cleared) and a new deposit is held
    /// in the same session; buy on with `tally session buy`.
    Next(NextArgs),
    /// The receipts of the session's cleared transactions, each signed by the merchant's
    /// operator (the customer at its operator, the merchant at its own); `--out DIR` keeps
    /// each as `DIR/<transaction>.receipt.json`.
    Receipts(ReceiptsArgs),
    /// Check a transaction's receipt offline: the merchant's operator's signature, both
    /// parties' signed records and the clearing; `--issuer` the operator you trust,
    /// `--wallet` your own copy of the purchases.
    VerifyReceipt(VerifyReceiptArgs),
    /// End a customer's tab at your merchant agent (a merchant): it takes no more purchases
    /// and sends your record to your operator. The customer then sends theirs.
    Terminate(TerminateArgs),
    /// Buy a product delivered with acceptance (a customer): it arrives sealed, is checked
    /// (a damaged delivery is asked for again, once), paid when you accept it, then
    /// unlocked and compared with the merchant's signed description.
    Order(crate::trading_orders::OrderArgs),
    /// Settle a customer's complaint about a delivery (the merchant's operator, for an
    /// arbiter): K2 from the escrow here, the product compared with its signed description.
    Arbitrate(crate::trading_orders::ArbitrateArgs),
}

#[derive(Args)]
pub struct NextArgs {
    /// The session id.
    pub session: String,
    /// The next transaction's deposit, e.g. "10.00 EUR" (default: the deposit of the one
    /// before).
    #[arg(long)]
    pub deposit: Option<String>,
    /// Your wallet directory.
    #[arg(long, default_value = "./tally-wallet")]
    pub wallet: std::path::PathBuf,
    /// Wait up to this many seconds for each answer: the clearing of the transaction
    /// before, then the merchant's operator's (0: do not wait).
    #[arg(long, default_value_t = 30)]
    pub wait: u64,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Args)]
pub struct ReceiptsArgs {
    /// The session id.
    pub session: String,
    /// Keep each receipt in this directory, as `<transaction>.receipt.json`.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Args)]
pub struct VerifyReceiptArgs {
    /// The receipt file (`tally session receipts --out`).
    pub file: std::path::PathBuf,
    /// The merchant's operator's node id (64 hex, as `tally federation id` prints it there):
    /// the receipt must be signed by that node.
    #[arg(long)]
    pub issuer: Option<String>,
    /// Your wallet directory: the receipt's customer record must be your own (your session
    /// key, your list of purchases).
    #[arg(long)]
    pub wallet: Option<std::path::PathBuf>,
}

#[derive(Args)]
pub struct TerminateArgs {
    /// The session id, or one of its transactions (`<session>.<n>`; a session id names its
    /// first).
    pub session: String,
    /// Your agent's URL.
    #[arg(long, default_value = "http://127.0.0.1:8650")]
    pub agent: String,
    /// Your agent's directory (its token, `agent.token`, proves it is you).
    #[arg(long, default_value = "./tally-agent")]
    pub data: std::path::PathBuf,
}

/// `tally billing …`.
#[derive(Subcommand)]
pub enum BillingCommand {
    /// Billing records of cleared trading sessions (operator): withdrawals (customers here)
    /// and deposits (merchants here), as CSV or JSON, for the billing systems.
    Export(BillingArgs),
}

/// `tally clearing …`.
#[derive(Subcommand)]
pub enum ClearingCommand {
    /// What this operator and each peer owe each other from cleared trading sessions, per
    /// currency (operator): the settlement report between operators.
    List(ClearingArgs),
    /// Settle a disputed trading session (the merchant's operator): the customer's operator
    /// posts the amount given at the session's rate from the deposit and releases the rest,
    /// then the merchant is paid it; if that operator no longer holds the deposit, nothing is
    /// paid. Once per session; the same verdict again is a no-op.
    Resolve(ResolveArgs),
}

#[derive(Args)]
pub struct ResolveArgs {
    /// The disputed session's id.
    pub session: String,
    /// What the merchant is paid, in its currency, e.g. "2.50 EUR" (from "0.00" up to the
    /// deposit in the merchant's currency).
    #[arg(long)]
    pub pay: String,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Args)]
pub struct CloseArgs {
    /// The session id.
    pub session: String,
    /// Your wallet directory.
    #[arg(long, default_value = "./tally-wallet")]
    pub wallet: std::path::PathBuf,
    /// Wait up to this many seconds for the comparison (0: do not wait).
    #[arg(long, default_value_t = 0)]
    pub wait: u64,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Args)]
pub struct BillingArgs {
    /// From (RFC 3339, inclusive; default 31 days ago).
    #[arg(long)]
    pub from: Option<String>,
    /// To (RFC 3339, exclusive; default now).
    #[arg(long)]
    pub to: Option<String>,
    /// `csv` (default) or `json`.
    #[arg(long, default_value = "csv")]
    pub format: String,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Args)]
pub struct ClearingArgs {
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Args)]
pub struct BuyArgs {
    /// The session id.
    pub session: String,
    /// The merchant agent's URL (remembered after the first purchase).
    #[arg(long)]
    pub agent: Option<String>,
    /// The price, in the merchant's currency, e.g. "0.30 EUR".
    #[arg(long)]
    pub price: String,
    /// What is bought, in the merchant's words (stays between you and the merchant).
    #[arg(long)]
    pub item: String,
    /// Your wallet directory (the session key and your copy of the purchases).
    #[arg(long, default_value = "./tally-wallet")]
    pub wallet: std::path::PathBuf,
    /// When the deposit does not cover the purchase (or is used up), start the session's
    /// next transaction with the same deposit (`tally session next`) and buy there.
    #[arg(long)]
    pub next: bool,
    #[command(flatten)]
    pub conn: Conn,
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
    /// Your wallet directory: the session key made here is kept there, to buy with.
    #[arg(long, default_value = "./tally-wallet")]
    pub wallet: std::path::PathBuf,
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
        SessionCommand::Buy(a) => buy(a).await,
        SessionCommand::Agent(a) => crate::agent::serve(a).await,
        SessionCommand::Close(a) => close(a).await,
        SessionCommand::Next(a) => next(a).await,
        SessionCommand::Receipts(a) => receipts(a).await,
        SessionCommand::VerifyReceipt(a) => verify_receipt(a),
        SessionCommand::Terminate(a) => terminate(a).await,
        SessionCommand::Order(a) => crate::trading_orders::order(a).await,
        SessionCommand::Arbitrate(a) => crate::trading_orders::arbitrate_cmd(a).await,

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
    // The session key is on disk before the request: a lost answer loses no key.
    let pending = Wallet::path(&a.wallet, &format!("pending-{key}"))?;
    let mut wallet = match Wallet::load(&pending) {
        Ok(w) => w,
        Err(_) => {
            let w = Wallet::new()?;
            w.save(&pending)?;
            w
        }
    };
    let req = OpenTradingSession {
        account: tally_kernel::Id(parse_id("--account", &a.account)?),
        deposit,
        merchant: a.merchant,
        operator: a.operator,
        lifetime_s: a.lifetime,
        customer_key: Some(wallet.key()?.verifying_key().to_hex()),
    };
    let mut s = match c.api.trading_session_open(&req, &key).await {
        Ok(answer) => answered(answer),
        // Refused: no session, so no key to keep. A lost answer keeps it for the retry.
        Err(e @ tally_client::Error::Refused(_)) => {
            std::fs::remove_file(&pending).ok();
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    wallet.session = s.session.clone();
    wallet.transaction = s.transaction.clone();
    wallet.currency = Some(deposit.currency.code().to_string());
    wallet.save(&Wallet::path(&a.wallet, &s.session)?)?;
    std::fs::remove_file(&pending).with_context(|| format!("removing {}", pending.display()))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(a.wait);
    while s.state == "held" && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        s = c.api.trading_session(&s.session).await?;
    }
    c.show(&s, session_text);
    // M6: the customer keeps its own operator's exchange tables, to see prices in its currency.
    if let Err(e) = crate::fx_cache::refresh(&c, &a.wallet).await {
        eprintln!("warning: your operator's exchange tables were not kept ({e})");
    }
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
    if let (Some(t), Some(c), Some(n)) = (&s.total, &s.customer_total, s.count) {
        out.push_str(&format!(
            "\ncleared     {n} purchases: {t} to the merchant, {c} from the customer"
        ));
    }
    if let Some(t) = s.answer_by {
        out.push_str(&format!("\nanswer by   {}", t.to_rfc3339()));
    }
    out
}

/// The agent's answer: the tab after the purchase, or its refusal.
#[derive(serde::Deserialize)]
struct TabAnswer {
    count: u64,
    spent: i64,
    remaining: i64,
    currency: String,
    list: String,
    repeat: bool,
    #[serde(default)]
    closed: bool,
}

pub(crate) async fn post_agent<T: serde::Serialize>(
    http: &reqwest::Client,
    url: &str,
    body: &T,
) -> anyhow::Result<(reqwest::StatusCode, serde_json::Value)> {
    let r = http
        .post(url)
        .json(body)
        .send()
        .await
        .with_context(|| format!("reaching the merchant agent at {url}"))?;
    let status = r.status();
    let value = r.json().await.unwrap_or(serde_json::Value::Null);
    Ok((status, value))
}

pub(crate) fn agent_refusal(status: reqwest::StatusCode, v: &serde_json::Value) -> anyhow::Error {
    anyhow::anyhow!(
        "the merchant agent refused ({status}): {} ({})",
        v["error"]["message"].as_str().unwrap_or("no reason"),
        v["error"]["code"].as_str().unwrap_or("?")
    )
}

async fn buy(a: BuyArgs) -> anyhow::Result<ExitCode> {
    let path = Wallet::path(&a.wallet, &a.session)?;
    let mut w = Wallet::load(&path)?;
    let price: Amount = a.price.parse().with_context(|| {
        format!(
            "--price {:?}: expected an amount like \"0.30 EUR\"",
            a.price
        )
    })?;
    let agent = match (&a.agent, &w.agent) {
        (Some(url), _) => url.trim_end_matches('/').to_string(),
        (None, Some(url)) => url.clone(),
        (None, None) => anyhow::bail!("--agent URL: where the merchant's agent listens"),
    };
    if w.agent.as_deref() != Some(agent.as_str()) && w.mac_key.is_some() {
        // The agent moved (restarted elsewhere): remember where it is now.
        w.agent = Some(agent.clone());
        w.save(&path)?;
    }
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let mut next = a.next;
    loop {
        ensure_tab(&mut w, &path, &agent, &http).await?;
        let maced = pending_or_new(&mut w, &path, price, &a.item)?;
        let (status, v) = post_agent(
            &http,
            &format!("{agent}/v1/tabs/{}/purchases", w.transaction),
            &maced,
        )
        .await?;
        if status.is_success() {
            return record_purchase(&mut w, &path, &maced, v, &a.session);
        }
        // Refused: not taken, so not pending any more.
        w.pending = None;
        w.save(&path)?;
        let code = v["error"]["code"].as_str();
        // M4: a purchase beyond the deposit is the first of the session's next transaction.
        if next && matches!(code, Some("deposit_exhausted" | "closed")) {
            next = false;
            let c = Client::new(&a.conn)?;
            let view = start_next(&c, &a.wallet, &a.session, None, 30).await?;
            if view.state != "open" {
                let why = match view.refusal.as_deref() {
                    Some("ended") => {
                        "the merchant ended the session; open a new one to buy again".to_string()
                    }
                    Some(r) => format!("the merchant's operator refused it ({r})"),
                    None => "buy again once it is open".to_string(),
                };
                anyhow::bail!(
                    "the next transaction {} is {}: {why}",
                    view.transaction,
                    view.state
                );
            }
            eprintln!(
                "the deposit did not cover it: transaction {} started with a new deposit of {}",
                view.transaction, view.deposit
            );
            w = Wallet::load(&path)?;
            continue;
        }
        match code {
            Some(code @ ("deposit_exhausted" | "closed")) => eprintln!(
                "{}: start the session's next transaction with `tally session next {}` (or buy \
                 with --next), or send your record with `tally session close {}`.",
                if code == "closed" {
                    "the merchant ended the tab"
                } else {
                    "what is left of the deposit does not cover it"
                },
                a.session,
                a.session
            ),
            Some("session_expired") => eprintln!(
                "the session's time is over: nothing more can be bought in it. Send your record \
                 with `tally session close {}`; open a new session to buy more.",
                a.session
            ),
            _ => {}
        }
        return Err(agent_refusal(status, &v));
    }
}

async fn receipts(a: ReceiptsArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let list = c.api.trading_session_receipts(&a.session).await?;
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for r in &list {
            let path = dir.join(format!(
                "{}.receipt.json",
                r.transaction
                    .parse::<tally_proto::session::ids::TransactionId>()
                    .map_err(|e| anyhow::anyhow!("the node's transaction id: {e}"))?
            ));
            std::fs::write(&path, &r.receipt)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    c.show(&list, |l| {
        if l.is_empty() {
            return "no receipts yet: no transaction of the session is cleared".to_string();
        }
        l.iter()
            .map(|r| match SessionReceipt::open(&r.receipt) {
                Ok(receipt) => receipt_line(&receipt),
                Err(e) => format!("{}: not a receipt that checks ({e})", r.transaction),
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(ExitCode::SUCCESS)
}

fn receipt_line(r: &SessionReceipt) -> String {
    let c = &r.clearing;
    format!(
        "{}: {} purchases, {} to the merchant, {} from the customer{}, signed by {} ({})",
        c.transaction,
        c.count,
        c.total,
        c.customer_total,
        if c.verdict {
            " (the operator's verdict)"
        } else {
            ""
        },
        r.issuer.short(),
        r.issuer
    )
}

fn verify_receipt(a: VerifyReceiptArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let r = SessionReceipt::open(text.trim())
        .map_err(|e| anyhow::anyhow!("{}: the receipt does not check: {e}", a.file.display()))?;
    if let Some(issuer) = &a.issuer
        && r.issuer.to_string() != issuer.trim()
    {
        anyhow::bail!(
            "the receipt is signed by {}, not by the operator you named ({issuer})",
            r.issuer
        );
    }
    println!("valid receipt\n{}", receipt_line(&r));
    if let Some(dir) = &a.wallet {
        let t = r.clearing.transaction;
        // The wallet's copy of the transaction: kept aside once the next one started, else
        // the session's own.
        let w = [t.to_string(), t.session.to_string()]
            .iter()
            .filter_map(|name| Wallet::path(dir, name).ok())
            .filter_map(|p| Wallet::load(&p).ok())
            .find(|w| w.transaction == t.to_string())
            .with_context(|| {
                format!("no copy of transaction {t} in the wallet {}", dir.display())
            })?;
        let mine = w.key()?.verifying_key().to_hex();
        let Some(customer) = &r.customer else {
            anyhow::bail!("the receipt holds no record of yours (cleared on the merchant's alone)");
        };
        if customer.key != mine {
            anyhow::bail!("the receipt's customer record is not signed with your session key");
        }
        if w.list != r.clearing.list || w.next_seq - 1 != r.clearing.count {
            anyhow::bail!(
                "your wallet's purchases ({}, list {}) are not the receipt's ({}, list {})",
                w.next_seq - 1,
                w.list,
                r.clearing.count,
                r.clearing.list
            );
        }
        println!(
            "your wallet agrees: {} purchases, list {}",
            r.clearing.count, r.clearing.list
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn next(a: NextArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let deposit =
        match &a.deposit {
            Some(d) => Some(d.parse::<Amount>().with_context(|| {
                format!("--deposit {d:?}: expected an amount like \"10.00 EUR\"")
            })?),
            None => None,
        };
    let s = start_next(&c, &a.wallet, &a.session, deposit, a.wait).await?;
    c.show(&s, session_text);
    Ok(match s.state.as_str() {
        "open" => ExitCode::SUCCESS,
        "held" => ExitCode::from(2),
        _ => ExitCode::from(1),
    })
}

/// Concludes the wallet's transaction (when it is still open) and starts the session's next
/// one with `deposit` (default: the one before's), waiting up to `wait` seconds for each
/// answer. Safe to run again: a transaction already concluded or started is not again, and
/// the wallet follows the session (its copy of each earlier transaction stays beside it, as
/// `<transaction>.json`).
async fn start_next(
    c: &Client,
    dir: &std::path::Path,
    session: &str,
    deposit: Option<Amount>,
    wait: u64,
) -> anyhow::Result<TradingSessionView> {
    let path = Wallet::path(dir, session)?;
    let mut w = Wallet::load(&path)?;
    let mine: tally_proto::session::ids::TransactionId = w
        .transaction
        .parse()
        .map_err(|e| anyhow::anyhow!("the wallet's transaction: {e}"))?;
    let mut view = c.api.trading_session(session).await?;
    if view.transaction == mine.to_string() {
        if view.state == "open" {
            view = conclude(c, &w, session, wait).await?;
        }
        view = until(c, session, view, "concluding", wait).await?;
        if view.state != "cleared" {
            anyhow::bail!(
                "transaction {mine} is {}: {}",
                view.state,
                match view.state.as_str() {
                    "concluding" => "not cleared yet; run this again to wait longer",
                    "held" => "the merchant's operator has not answered it yet",
                    _ => "the session takes no next transaction",
                }
            );
        }
        let deposit = match deposit {
            Some(d) => d,
            None => view.deposit,
        };
        let then = mine.next().map_err(|e| anyhow::anyhow!("{e}"))?;
        view = c
            .api
            .trading_session_next(session, &then.to_string(), deposit)
            .await?;
    }
    let next = mine.next().map_err(|e| anyhow::anyhow!("{e}"))?;
    if view.transaction != next.to_string() {
        anyhow::bail!(
            "the session is at transaction {}, your wallet at {mine}",
            view.transaction
        );
    }
    // The transaction before stays in the wallet's directory; the wallet starts afresh.
    w.save(&Wallet::path(dir, &mine.to_string())?)?;
    w.begin(next.to_string());
    w.save(&path)?;
    until(c, session, view, "held", wait).await
}

/// The session once it left `state`, or as it is after `wait` seconds.
async fn until(
    c: &Client,
    session: &str,
    mut view: TradingSessionView,
    state: &str,
    wait: u64,
) -> anyhow::Result<TradingSessionView> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait);
    while view.state == state && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        view = c.api.trading_session(session).await?;
    }
    Ok(view)
}

/// Opens the session's tab at the merchant agent, once (the MAC key is kept first).
pub(crate) async fn ensure_tab(
    w: &mut Wallet,
    path: &std::path::Path,
    agent: &str,
    http: &reqwest::Client,
) -> anyhow::Result<()> {
    let transaction = w
        .transaction
        .parse()
        .map_err(|e| anyhow::anyhow!("the wallet's transaction: {e}"))?;
    if !w.tab_open {
        // The MAC key is kept before the tab is opened with it.
        let mac_key = match &w.mac_key {
            Some(k) => k.clone(),
            None => {
                let mut k = [0u8; 32];
                getrandom::fill(&mut k).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
                w.mac_key = Some(hex::encode(k));
                w.agent = Some(agent.to_string());
                w.save(path)?;
                hex::encode(k)
            }
        };
        let mut key = [0u8; 32];
        hex::decode_to_slice(&mac_key, &mut key)?;
        let tab = new_tab(&w.key()?, transaction, key, tally_kernel::Timestamp::now())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let tab: serde_json::Value = serde_json::from_slice(&tab)?;
        let (status, v) = post_agent(
            http,
            &format!("{agent}/v1/tabs"),
            &serde_json::json!({"session": w.session, "tab": tab}),
        )
        .await?;
        if !(status.is_success() || v["error"]["code"] == "tab_exists") {
            return Err(agent_refusal(status, &v));
        }
        w.tab_open = true;
        w.save(path)?;
    }
    Ok(())
}

/// The purchase in flight (its answer was lost: sent again as it was), or a new one kept in
/// the wallet before it is sent.
pub(crate) fn pending_or_new(
    w: &mut Wallet,
    path: &std::path::Path,
    price: Amount,
    item: &str,
) -> anyhow::Result<MacedPurchase> {
    if let Some(p) = &w.pending {
        eprintln!("sending again the purchase whose answer was lost");
        return Ok(p.clone());
    }
    let transaction = w
        .transaction
        .parse()
        .map_err(|e| anyhow::anyhow!("the wallet's transaction: {e}"))?;
    let mut key = [0u8; 32];
    hex::decode_to_slice(w.mac_key.as_deref().unwrap_or_default(), &mut key)?;
    let p = Purchase {
        transaction,
        seq: w.next_seq,
        price,
        item: item.to_string(),
        at: tally_kernel::Timestamp::now().as_micros(),
    }
    .mac(&key)
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    w.pending = Some(p.clone());
    w.save(path)?;
    Ok(p)
}

/// Keeps a purchase the agent took (`v`, its answer: the tab after it) in the wallet, prints
/// it, and checks the agent's list hash against the wallet's (exit 3 when they differ).
pub(crate) fn record_purchase(
    w: &mut Wallet,
    path: &std::path::Path,
    maced: &MacedPurchase,
    v: serde_json::Value,
    session: &str,
) -> anyhow::Result<ExitCode> {
    let tab: TabAnswer = serde_json::from_value(v)?;
    let mut list = [0u8; 32];
    hex::decode_to_slice(&w.list, &mut list)?;
    let mine = hex::encode(list_next(&list, maced.bytes.as_bytes()));
    let bought: Purchase = serde_json::from_str(&maced.bytes)?;
    w.list = mine.clone();
    w.spent += bought.price.minor;
    w.next_seq = bought.seq + 1;
    w.pending = None;
    w.save(path)?;
    let money = |minor| crate::client::money(minor, &tab.currency);
    println!(
        "purchase {}{}: {} for {}\nspent {} in {} purchases, {} left\nlist {}",
        bought.seq,
        if tab.repeat { " (taken before)" } else { "" },
        bought.item,
        bought.price,
        money(tab.spent),
        tab.count,
        money(tab.remaining),
        tab.list
    );
    // M6: the price in the customer's own currency, at its own operator's kept table.
    if let Some(home) = w
        .currency
        .as_deref()
        .and_then(|c| tally_kernel::Currency::from_code(c).ok())
        .filter(|home| *home != bought.price.currency)
    {
        let wallet_dir = path.parent().unwrap_or(std::path::Path::new("."));
        match crate::fx_cache::in_home_currency(
            crate::fx_cache::load(wallet_dir).as_ref(),
            bought.price,
            home,
            tally_kernel::Timestamp::now(),
        ) {
            Ok(line) => println!("in {}: {line}", home.code()),
            Err(warning) => eprintln!(
                "warning: prices are shown in {} only: {warning}",
                bought.price.currency.code()
            ),
        }
    }
    if tab.closed {
        println!(
            "the deposit is used up: the merchant's agent ended the tab and sent its record; \
             send yours with `tally session close {}`",
            session
        );
    }
    if tab.list != mine || tab.count != bought.seq {
        eprintln!(
            "warning: the merchant's list ({}, {} purchases) is not yours ({mine}, {})",
            tab.list, tab.count, bought.seq
        );
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

async fn close(a: CloseArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let path = Wallet::path(&a.wallet, &a.session)?;
    let w = Wallet::load(&path)?;
    let s = conclude(&c, &w, &a.session, 0).await?;
    let s = until(&c, &a.session, s, "concluding", a.wait).await?;
    c.show(&s, session_text);
    Ok(match s.state.as_str() {
        "cleared" => ExitCode::SUCCESS,
        "disputed" => ExitCode::from(1),
        _ if a.wait > 0 => ExitCode::from(2),
        _ => ExitCode::SUCCESS,
    })
}

/// Concludes the wallet's transaction: closes the tab at the merchant agent (which sends the
/// merchant's record), then signs and sends the customer's record; the session as the
/// operator answers, waited for up to `wait` seconds while it is concluding.
async fn conclude(
    c: &Client,
    w: &Wallet,
    session: &str,
    wait: u64,
) -> anyhow::Result<TradingSessionView> {
    let view = c.api.trading_session(session).await?;
    let currency = view
        .merchant_deposit
        .as_deref()
        .and_then(|d| d.parse::<Amount>().ok())
        .map(|d| d.currency)
        .context("the session has no deposit in the merchant's currency: it never opened")?;
    if w.pending.is_some() {
        anyhow::bail!("a purchase is still unanswered: run `tally session buy` again first");
    }
    if let (true, Some(agent)) = (w.tab_open, &w.agent) {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        let url = format!("{agent}/v1/tabs/{}/close", w.transaction);
        let mut key = [0u8; 32];
        hex::decode_to_slice(w.mac_key.as_deref().unwrap_or_default(), &mut key)?;
        let transaction = w
            .transaction
            .parse()
            .map_err(|e| anyhow::anyhow!("the wallet's transaction: {e}"))?;
        let mac = tally_proto::session::purchase::close_mac(&key, transaction);
        match http
            .post(&url)
            .json(&serde_json::json!({"mac": mac}))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => eprintln!(
                "warning: the merchant agent did not close the tab ({}); sending your record anyway",
                r.status()
            ),
            Err(e) => eprintln!(
                "warning: the merchant agent is unreachable ({e}); sending your record anyway"
            ),
        }
    }
    let record = tally_proto::session::conclusion::Record {
        transaction: w
            .transaction
            .parse()
            .map_err(|e| anyhow::anyhow!("the wallet's transaction: {e}"))?,
        side: tally_proto::session::conclusion::Side::Customer,
        total: Amount::new(w.spent, currency),
        count: w.next_seq - 1,
        list: w.list.clone(),
    };
    let signed = record.sign(&w.key()?).map_err(|e| anyhow::anyhow!("{e}"))?;
    let s = c.api.trading_session_record(session, signed).await?;
    until(c, session, s, "concluding", wait).await
}

async fn terminate(a: TerminateArgs) -> anyhow::Result<ExitCode> {
    let transaction = match a.session.parse::<tally_proto::session::ids::SessionId>() {
        Ok(s) => s.first_transaction(),
        Err(_) => a
            .session
            .parse::<tally_proto::session::ids::TransactionId>()
            .map_err(|e| anyhow::anyhow!("{}: not a session or transaction id: {e}", a.session))?,
    };
    let path = a.data.join("agent.token");
    let token = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the agent's token {}", path.display()))?;
    let url = format!(
        "{}/v1/tabs/{}/terminate",
        a.agent.trim_end_matches('/'),
        transaction
    );
    let r = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?
        .post(&url)
        .bearer_auth(token.trim())
        .send()
        .await
        .with_context(|| format!("reaching the merchant agent at {url}"))?;
    let status = r.status();
    let v: serde_json::Value = r.json().await.unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        return Err(agent_refusal(status, &v));
    }
    let tab = &v["tab"];
    println!(
        "ended the tab of {}: {} purchases, {} spent; {}",
        a.session,
        tab["count"],
        crate::client::money(
            tab["spent"].as_i64().unwrap_or(0),
            tab["currency"].as_str().unwrap_or("")
        ),
        match v["session"]["state"].as_str() {
            Some(state) => format!("your record is at your operator (session {state})"),
            None => "your operator did not answer yet: the agent sends your record again".into(),
        }
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn billing(cmd: BillingCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BillingCommand::Export(a) => {
            let c = Client::new(&a.conn)?;
            match a.format.as_str() {
                "csv" => print!(
                    "{}",
                    c.api
                        .billing_csv(a.from.as_deref(), a.to.as_deref())
                        .await?
                ),
                "json" => {
                    let records = c
                        .api
                        .billing_records(a.from.as_deref(), a.to.as_deref())
                        .await?;
                    println!("{}", serde_json::to_string_pretty(&records)?);
                }
                other => anyhow::bail!("--format {other:?}: csv or json"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn clearing(cmd: ClearingCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ClearingCommand::Resolve(a) => {
            let pay = crate::accounts::parse_amount(&a.pay)?;
            let c = Client::new(&a.conn)?;
            let v = c.api.trading_session_verdict(&a.session, pay).await?;
            c.show(&v, |v| {
                let amount = crate::client::money(pay.minor, pay.currency.code());
                match v.state.as_str() {
                    "clearing" => format!(
                        "session {} clearing: the merchant is paid {amount} once the customer's \
                         operator posts it (`tally session show` says cleared then)",
                        v.session
                    ),
                    state => format!("session {} {state}: the verdict was {amount}", v.session),
                }
            });
            Ok(ExitCode::SUCCESS)
        }
        ClearingCommand::List(a) => {
            let c = Client::new(&a.conn)?;
            let lines = c.api.clearing().await?;
            c.show(&lines, |l| {
                if l.is_empty() {
                    return "nothing cleared with any peer".to_string();
                }
                l.iter()
                    .map(|x| {
                        let m = |minor| crate::client::money(minor, &x.currency);
                        format!(
                            "{}  {}: we owe {}, it owes us {}, net {}",
                            x.name.as_deref().unwrap_or(&x.peer),
                            x.currency,
                            m(x.owed_to_minor),
                            m(x.owed_by_minor),
                            m(x.net_minor)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `tally fx …`.
#[derive(Subcommand)]
pub enum FxCommand {
    /// Publish a rate with a lifespan (operator): sessions whose merchant is paid in `to` and
    /// whose deposit is in `from` are converted at it while it holds.
    Publish(FxPublishArgs),
    /// The exchange tables valid now, signed by the operator (any key).
    Show(ClearingArgs),
    /// Keep your operator's valid exchange tables in your wallet (a customer), checked under
    /// its node key: purchases then show prices in your currency too (`tally session open`
    /// does this by itself).
    Fetch(FxFetchArgs),
}

#[derive(Args)]
pub struct FxFetchArgs {
    /// Your wallet directory.
    #[arg(long, default_value = "./tally-wallet")]
    pub wallet: std::path::PathBuf,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Args)]
pub struct FxPublishArgs {
    /// Source currency, e.g. EUR.
    pub from: String,
    /// Target currency, e.g. USD.
    pub to: String,
    /// Units of `to` per unit of `from`, e.g. 1.0842.
    pub rate: String,
    /// How long it holds, seconds (default one day).
    #[arg(long)]
    pub valid_for: Option<i64>,
    #[command(flatten)]
    pub conn: Conn,
}

fn fx_line(t: &tally_client::wire::federation::FxTableView) -> String {
    format!(
        "1 {} = {} {}  (valid until {})",
        t.from,
        t.rate,
        t.to,
        t.valid_until.to_rfc3339()
    )
}

pub async fn fx(cmd: FxCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        FxCommand::Fetch(a) => {
            let c = Client::new(&a.conn)?;
            let cache = crate::fx_cache::refresh(&c, &a.wallet).await?;
            println!(
                "kept {} exchange tables of your operator in {}",
                cache.tables.len(),
                a.wallet.join("fx.json").display()
            );
        }
        FxCommand::Publish(a) => {
            let c = Client::new(&a.conn)?;
            let t = c
                .api
                .fx_publish(
                    &a.from,
                    &a.to,
                    &tally_client::wire::federation::FxPublishRequest {
                        rate: a.rate.clone(),
                        valid_for_s: a.valid_for,
                    },
                )
                .await?;
            c.show(&t, |t| format!("published: {}", fx_line(t)));
        }
        FxCommand::Show(a) => {
            let c = Client::new(&a.conn)?;
            let tables = c.api.fx_tables().await?;
            c.show(&tables, |l| {
                if l.is_empty() {
                    "no exchange table holds now".to_string()
                } else {
                    l.iter().map(fx_line).collect::<Vec<_>>().join("\n")
                }
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}
