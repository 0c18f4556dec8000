//! Ledger commands: accounts, transfers, holds, exchanges, API keys, the dev inbox.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::process::ExitCode;
use tally_client::wire::ledger::{
    AccountDto, AccountKindDto, ExchangeRequest, HoldRequest, NewApiKeyRequest, NotifyDto,
    OpenAccountRequest, PostHoldRequest, RoleDto, TransferDto, TransferRequest,
};
use tally_kernel::Amount;

use crate::client::{Client, Conn, answered, idempotency_key, parse_id};
use crate::oob::confirming;

/// `tally account …`
#[derive(Subcommand)]
pub enum AccountCommand {
    /// Open an account.
    Open(OpenArgs),
    /// Show one account and its balance.
    Show(ShowArgs),
    /// List accounts (yours; the operator may name an owner).
    List(ListArgs),
    /// Recent transfers of an account, newest first.
    History(HistoryArgs),
    /// The account's balance after each transfer (accounts opened with --history), a page at a
    /// time.
    Balances(BalancesArgs),
}

#[derive(Args)]
pub struct BalancesArgs {
    /// Account id.
    id: String,
    #[command(flatten)]
    page: PageArgs,
    #[command(flatten)]
    conn: Conn,
}

/// A time window and a page of a query's rows.
#[derive(Args)]
pub struct PageArgs {
    /// At or after (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// At or before (RFC 3339).
    #[arg(long)]
    until: Option<String>,
    /// Newest first.
    #[arg(long)]
    reversed: bool,
    /// Most rows (1 to 1000).
    #[arg(long, default_value_t = 100)]
    limit: i64,
    /// Continue after this cursor (printed as `next:` under a full page).
    #[arg(long)]
    after: Option<String>,
}

/// `tally transfers`: find transfers.
#[derive(Args)]
pub struct QueryArgs {
    /// Only transfers on this account (required unless you are the operator).
    #[arg(long)]
    account: Option<String>,
    /// With --account: debit, credit or both.
    #[arg(long, default_value = "both")]
    side: String,
    /// The client's 128-bit reference (decimal).
    #[arg(long)]
    user_data_128: Option<String>,
    /// The client's 64-bit reference.
    #[arg(long)]
    user_data_64: Option<u64>,
    /// The client's 32-bit reference.
    #[arg(long)]
    user_data_32: Option<u32>,
    /// The client's reason code.
    #[arg(long)]
    code: Option<u16>,
    #[command(flatten)]
    page: PageArgs,
    #[command(flatten)]
    conn: Conn,
}

/// Finds transfers by account and side, time, references and code; prints one page and, when
/// it is full, the cursor of the next.
pub async fn transfers(a: QueryArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let account = a
        .account
        .as_deref()
        .map(|id| parse_id("account", id))
        .transpose()?;
    let q = tally_client::wire::ledger::TransferQuery {
        account,
        side: account.map(|_| a.side.clone()),
        since: a.page.since.clone(),
        until: a.page.until.clone(),
        user_data_128: a.user_data_128.clone(),
        user_data_64: a.user_data_64,
        user_data_32: a.user_data_32,
        code: a.code,
        reversed: Some(a.page.reversed),
        limit: Some(a.page.limit),
        after: a.page.after.clone(),
    };
    let page = c.api.transfers(&q).await?;
    c.show(&page, |p| {
        let mut lines: Vec<String> = p
            .transfers
            .iter()
            .map(|r| {
                format!(
                    "{}  {:>16}  {:13} {:8} {} → {}  {}",
                    r.created_at,
                    r.amount_display,
                    r.kind,
                    r.state,
                    r.debit_account,
                    r.credit_account,
                    r.id
                )
            })
            .collect();
        if let Some(next) = &p.next {
            lines.push(format!("next: {next}"));
        }
        lines.join("\n")
    });
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct OpenArgs {
    /// ISO-4217 currency, e.g. EUR.
    #[arg(long)]
    currency: String,
    /// Owner (operator only; others always open for themselves).
    #[arg(long)]
    owner: Option<String>,
    /// customer, merchant, operator, liquidity, fee or settlement (operator only).
    #[arg(long)]
    kind: Option<String>,
    /// Overdraft allowed beyond the balance, e.g. "100.00" (operator only).
    #[arg(long)]
    limit: Option<String>,
    /// Let debits exceed credits without bound (settlement accounts; operator only).
    #[arg(long)]
    unbounded: bool,
    /// Keep the account's balance after each transfer (`tally account balances`).
    #[arg(long)]
    history: bool,
    /// Makes a retried open return the first account.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct ShowArgs {
    /// Account id.
    id: String,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct ListArgs {
    /// Owner to list (operator only).
    #[arg(long)]
    owner: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct HistoryArgs {
    /// Account id.
    id: String,
    /// How many transfers.
    #[arg(long, default_value_t = 20)]
    limit: u32,
    #[command(flatten)]
    conn: Conn,
}

/// Common to transfer and hold.
#[derive(Args)]
pub struct MoveArgs {
    /// Account debited.
    #[arg(long)]
    from: String,
    /// Account credited.
    #[arg(long)]
    to: String,
    /// Amount with currency, e.g. "12.50 EUR".
    #[arg(long)]
    amount: String,
    /// A note for both sides.
    #[arg(long)]
    memo: Option<String>,
    /// Tell someone when it commits: CHANNEL:ADDRESS (dev:alice, email:a@b.example, …).
    #[arg(long)]
    notify: Option<String>,
    /// Retry-safe key; generated and printed when absent.
    #[arg(long)]
    idempotency_key: Option<String>,
}

#[derive(Args)]
pub struct TransferArgs {
    /// Send the transfer events of a JSON Lines file instead (operator only): one event per
    /// line, as in `POST /v1/transfers/batch` (`{"id": "…", "debit_account": "…",
    /// "credit_account": "…", "amount_minor": 100, "currency": "EUR"}`, `"kind": "pending"`,
    /// `"flags": {"linked": true}` …). Sent in batches of at most 8,189 events, never cutting a
    /// linked chain; safe to run again: each event's id is its key, so nothing moves twice (a
    /// linked chain sent again answers `exists` for its first event and `linked_event_failed`
    /// for the others, as in TigerBeetle). Exits 1 when any event was refused, and lists those.
    #[arg(long, value_name = "FILE.jsonl", conflicts_with_all = ["from", "to", "amount", "memo", "notify", "idempotency_key"])]
    batch: Option<std::path::PathBuf>,
    #[command(flatten)]
    mv: Option<MoveArgs>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct HoldArgs {
    #[command(flatten)]
    mv: MoveArgs,
    /// How long the hold lasts: 90s, 15m, 2h, 7d.
    #[arg(long, default_value = "15m")]
    timeout: String,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct PostArgs {
    /// The hold's id.
    hold: String,
    /// Post only part, e.g. "5.00 EUR" (default: all of it).
    #[arg(long)]
    amount: Option<String>,
    /// Retry-safe key; generated and printed when absent.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct VoidArgs {
    /// The hold's id.
    hold: String,
    /// Retry-safe key; generated and printed when absent.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct ExchangeArgs {
    /// Source account.
    #[arg(long)]
    from: String,
    /// Target account (another currency).
    #[arg(long)]
    to: String,
    /// Amount in the source currency, e.g. "100.00 EUR".
    #[arg(long)]
    amount: String,
    /// Target units per source unit, e.g. 1.0834.
    #[arg(long)]
    rate: String,
    /// Retry-safe key; generated and printed when absent.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

/// `tally api-key …`
#[derive(Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key; it is printed once.
    Create(KeyCreateArgs),
    /// List keys (without the secrets).
    List(ConnOnly),
    /// Revoke a key by id.
    Revoke(KeyRevokeArgs),
}

#[derive(Args)]
pub struct KeyCreateArgs {
    /// admin, merchant or customer.
    #[arg(long)]
    role: String,
    /// Who the key acts for.
    #[arg(long)]
    owner: String,
    /// A note.
    #[arg(long, default_value = "")]
    label: String,
    /// Offline, on the node's machine: make the key in this data directory's database
    /// directly, without a running node or an API key (e.g. a new admin key when the last one
    /// is lost). With PostgreSQL, also give --database-url.
    #[arg(long, value_name = "DIR")]
    data: Option<std::path::PathBuf>,
    /// With --data: the node's PostgreSQL database.
    #[arg(
        long,
        env = "TALLY_DATABASE_URL",
        hide_env_values = true,
        requires = "data"
    )]
    database_url: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct KeyRevokeArgs {
    /// Key id.
    id: String,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct ConnOnly {
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct InboxArgs {
    /// Inbox address (as used in --notify dev:ADDRESS).
    address: String,
    #[command(flatten)]
    conn: Conn,
}

/// A choice flag (`--kind`, `--role`) as the wire's enum: `snake_case` names.
pub(crate) fn parse_choice<T: serde::de::DeserializeOwned>(
    flag: &str,
    text: &str,
    choices: &str,
) -> anyhow::Result<T> {
    serde_json::from_value(serde_json::Value::String(text.to_ascii_lowercase()))
        .map_err(|_| anyhow::anyhow!("{flag} {text:?}: expected one of {choices}"))
}

pub(crate) fn account_summary(a: &AccountDto) -> String {
    let available = match a.available_minor {
        Some(n) => crate::client::money(n, &a.currency),
        None => "unbounded".to_string(),
    };
    format!(
        "account   {}\nowner     {}\nkind      {}\nbalance   {}\navailable {}\npending   debits {} / credits {}",
        a.id,
        a.owner,
        a.kind,
        a.balance_display,
        available,
        crate::client::money(a.debits_pending, &a.currency),
        crate::client::money(a.credits_pending, &a.currency),
    )
}

pub(crate) fn transfer_summary(t: &TransferDto) -> String {
    let mut out = format!(
        "transfer  {}\nkind      {}\nstate     {}\namount    {}\nfrom      {}\nto        {}",
        t.id, t.kind, t.state, t.amount_display, t.debit_account, t.credit_account,
    );
    if let Some(e) = &t.expires_at {
        out.push_str(&format!("\nexpires   {e}"));
    }
    if let Some(p) = t.pending_id {
        out.push_str(&format!("\nhold      {p}"));
    }
    out
}

pub(crate) fn parse_amount(text: &str) -> anyhow::Result<Amount> {
    text.parse::<Amount>()
        .with_context(|| format!("--amount {text:?}"))
}

fn parse_notify(n: &Option<String>) -> anyhow::Result<Option<NotifyDto>> {
    let Some(n) = n else { return Ok(None) };
    let Some((channel, address)) = n.split_once(':') else {
        bail!("--notify takes CHANNEL:ADDRESS, e.g. dev:alice or email:alice@example.com");
    };
    Ok(Some(NotifyDto {
        channel: channel.to_string(),
        address: address.to_string(),
    }))
}

/// `90s`, `15m`, `2h`, `7d` or plain seconds.
pub fn parse_duration_s(text: &str) -> anyhow::Result<i64> {
    let (num, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: i64 = num
        .parse()
        .with_context(|| format!("duration {text:?}: expected e.g. 90s, 15m, 2h, 7d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("duration {text:?}: unit must be s, m, h or d"),
    };
    n.checked_mul(mult)
        .filter(|s| *s > 0)
        .with_context(|| format!("duration {text:?} out of range"))
}

/// What a transfer and a hold share: accounts, amount, memo, notification.
struct Move {
    debit_account: uuid::Uuid,
    credit_account: uuid::Uuid,
    amount: Amount,
    memo: Option<String>,
    notify: Option<NotifyDto>,
}

fn parse_move(mv: &MoveArgs) -> anyhow::Result<Move> {
    Ok(Move {
        debit_account: parse_id("--from", &mv.from)?,
        credit_account: parse_id("--to", &mv.to)?,
        amount: parse_amount(&mv.amount)?,
        memo: mv.memo.clone(),
        notify: parse_notify(&mv.notify)?,
    })
}

pub async fn account(cmd: AccountCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AccountCommand::Open(a) => {
            let c = Client::new(&a.conn)?;
            let currency = tally_kernel::Currency::from_code(&a.currency.to_ascii_uppercase())?;
            let limit_minor = match &a.limit {
                Some(l) => Some(Amount::parse_decimal(l, currency)?.minor),
                None => None,
            };
            let kind: Option<AccountKindDto> = match &a.kind {
                Some(k) => Some(parse_choice(
                    "--kind",
                    k,
                    "customer, merchant, operator, liquidity, fee, settlement",
                )?),
                None => None,
            };
            let req = OpenAccountRequest {
                currency: currency.code().to_string(),
                owner: a.owner.clone(),
                kind,
                limit_minor,
                debits_must_not_exceed_credits: a.unbounded.then_some(false),
                credits_must_not_exceed_debits: None,
                imported_at: None,
                history: a.history.then_some(true),
                user_data_128: None,
                user_data_64: None,
                user_data_32: None,
                code: None,
            };
            // A key makes a retried open return the first account instead of a second one.
            let key = idempotency_key(&a.idempotency_key);
            let account = answered(c.api.account_open(Some(&key), &req).await?);
            c.show(&account, account_summary);
        }
        AccountCommand::Show(a) => {
            let c = Client::new(&a.conn)?;
            let account = c.api.account(parse_id("account", &a.id)?).await?;
            c.show(&account, account_summary);
        }
        AccountCommand::List(a) => {
            let c = Client::new(&a.conn)?;
            let accounts = c.api.accounts(a.owner.as_deref()).await?;
            c.show(&accounts, |rows| {
                rows.iter()
                    .map(|r| {
                        format!(
                            "{}  {:10} {:>18}  {}",
                            r.id, r.kind, r.balance_display, r.owner
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        AccountCommand::Balances(a) => {
            let c = Client::new(&a.conn)?;
            let id = parse_id("account", &a.id)?;
            let q = tally_client::wire::ledger::HistoryQuery {
                since: a.page.since.clone(),
                until: a.page.until.clone(),
                reversed: Some(a.page.reversed),
                limit: Some(a.page.limit),
                after: a.page.after.clone(),
            };
            let page = c.api.account_balances(id, &q).await?;
            c.show(&page, |p| {
                let mut lines: Vec<String> = p
                    .balances
                    .iter()
                    .map(|b| {
                        format!(
                            "{}  balance {:>12}  debits {}+{} pending  credits {}+{} pending  {}",
                            b.at,
                            b.balance_minor,
                            b.debits_posted,
                            b.debits_pending,
                            b.credits_posted,
                            b.credits_pending,
                            b.transfer
                        )
                    })
                    .collect();
                if let Some(next) = &p.next {
                    lines.push(format!("next: {next}"));
                }
                lines.join("\n")
            });
        }
        AccountCommand::History(a) => {
            let c = Client::new(&a.conn)?;
            let id = parse_id("account", &a.id)?;
            let transfers = c.api.account_transfers(id, Some(a.limit)).await?;
            c.show(&transfers, |rows| {
                rows.iter()
                    .map(|r| {
                        let dir = if r.debit_account == id { "out" } else { "in " };
                        format!(
                            "{}  {dir} {:>16}  {:13} {:8} {}",
                            r.created_at, r.amount_display, r.kind, r.state, r.id
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn transfer(a: TransferArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    if let Some(file) = &a.batch {
        return crate::batch::send(&c, file).await;
    }
    let Some(args) = &a.mv else {
        anyhow::bail!("give --from, --to and --amount (or --batch FILE.jsonl)");
    };
    let mv = parse_move(args)?;
    let req = TransferRequest {
        debit_account: mv.debit_account,
        credit_account: mv.credit_account,
        amount: Some(mv.amount.to_string()),
        amount_minor: None,
        currency: None,
        memo: mv.memo,
        notify: mv.notify,
    };
    let key = idempotency_key(&args.idempotency_key);
    let t = answered(
        confirming(&c, &format!("with --idempotency-key {key}"), || {
            c.api.transfer(&key, &req)
        })
        .await?,
    );
    c.show(&t, transfer_summary);
    Ok(ExitCode::SUCCESS)
}

pub async fn hold(a: HoldArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let mv = parse_move(&a.mv)?;
    let req = HoldRequest {
        debit_account: mv.debit_account,
        credit_account: mv.credit_account,
        amount: Some(mv.amount.to_string()),
        amount_minor: None,
        currency: None,
        timeout_s: parse_duration_s(&a.timeout)?,
        memo: mv.memo,
        notify: mv.notify,
    };
    let key = idempotency_key(&a.mv.idempotency_key);
    let t = answered(
        confirming(&c, &format!("with --idempotency-key {key}"), || {
            c.api.hold(&key, &req)
        })
        .await?,
    );
    c.show(&t, transfer_summary);
    Ok(ExitCode::SUCCESS)
}

pub async fn post(a: PostArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let req = PostHoldRequest {
        // The currency goes along: the node refuses it if it is not the hold's.
        amount: match &a.amount {
            Some(text) => Some(parse_amount(text)?.to_string()),
            None => None,
        },
        ..PostHoldRequest::default()
    };
    let hold = parse_id("hold", &a.hold)?;
    let key = idempotency_key(&a.idempotency_key);
    let t = answered(c.api.hold_post(&key, hold, &req).await?);
    c.show(&t, transfer_summary);
    Ok(ExitCode::SUCCESS)
}

pub async fn void(a: VoidArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let hold = parse_id("hold", &a.hold)?;
    let key = idempotency_key(&a.idempotency_key);
    let t = answered(c.api.hold_void(&key, hold).await?);
    c.show(&t, transfer_summary);
    Ok(ExitCode::SUCCESS)
}

pub async fn exchange(a: ExchangeArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let amount = parse_amount(&a.amount)?;
    let req = ExchangeRequest {
        debit_account: parse_id("--from", &a.from)?,
        credit_account: parse_id("--to", &a.to)?,
        amount_minor: amount.minor,
        currency: Some(amount.currency.code().to_string()),
        rate: a.rate.clone(),
        memo: None,
    };
    let key = idempotency_key(&a.idempotency_key);
    let legs = answered(c.api.exchange(&key, &req).await?);
    c.show(&legs, |legs| {
        legs.transfers
            .iter()
            .map(transfer_summary)
            .collect::<Vec<_>>()
            .join("\n\n")
    });
    Ok(ExitCode::SUCCESS)
}

pub async fn api_key(cmd: ApiKeyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ApiKeyCommand::Create(a) => {
            let role = parse_choice::<RoleDto>("--role", &a.role, "admin, merchant, customer")?;
            if let Some(dir) = &a.data {
                return api_key_offline(dir, a.database_url.clone(), role, &a.owner, &a.label)
                    .await;
            }
            let c = Client::new(&a.conn)?;
            let req = NewApiKeyRequest {
                role,
                owner: a.owner.clone(),
                label: Some(a.label.clone()),
            };
            let k = c.api.api_key_create(&req).await?;
            c.show(&k, |k| {
                format!(
                    "id    {}\nrole  {}\nowner {}\nkey   {}\n(the key is shown once; store it now)",
                    k.id, k.role, k.owner, k.key
                )
            });
        }
        ApiKeyCommand::List(a) => {
            let c = Client::new(&a.conn)?;
            let keys = c.api.api_keys().await?;
            c.show(&keys, |rows| {
                rows.iter()
                    .map(|r| {
                        let revoked = if r.revoked_at.is_some() {
                            " (revoked)"
                        } else {
                            ""
                        };
                        format!("{}  {:8} {}{revoked}", r.id, r.role, r.owner)
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        ApiKeyCommand::Revoke(a) => {
            let c = Client::new(&a.conn)?;
            c.api.api_key_revoke(parse_id("key", &a.id)?).await?;
            println!("revoked {}", a.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `tally api-key create --data DIR`: the key made in the node's database directly, as the
/// operator (the data directory's files are the node's identity; whoever can read them is the
/// operator already).
async fn api_key_offline(
    dir: &std::path::Path,
    database_url: Option<String>,
    role: RoleDto,
    owner: &str,
    label: &str,
) -> anyhow::Result<ExitCode> {
    if !dir.join("node.key").exists() {
        bail!(
            "{} is not a node's data directory (no node.key): start `tally serve --data {}` once first",
            dir.display(),
            dir.display()
        );
    }
    let config = tally_service::NodeConfig {
        database_url,
        ..tally_service::NodeConfig::new(dir)
    };
    let (node, _) = tally_service::Node::open(&config)
        .await
        .with_context(|| format!("opening the node in {}", dir.display()))?;
    let operator = tally_service::Principal {
        key_id: tally_kernel::Id(uuid::Uuid::nil()),
        role: tally_service::Role::Admin,
        owner: "operator".into(),
    };
    let role = match role {
        RoleDto::Admin => tally_service::Role::Admin,
        RoleDto::Merchant => tally_service::Role::Merchant,
        RoleDto::Customer => tally_service::Role::Customer,
    };
    let label = if label.is_empty() {
        "made offline with --data"
    } else {
        label
    };
    let (record, key) = node.issue_api_key(&operator, role, owner, label).await?;
    node.store().close().await;
    println!(
        "id    {}\nrole  {}\nowner {}\nkey   {}\n(the key is shown once; store it now)",
        record.id,
        record.role,
        record.owner,
        key.expose()
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn inbox(a: InboxArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let messages = c.api.dev_inbox(&a.address, None).await?;
    c.show(&messages, |rows| {
        if rows.is_empty() {
            return "(empty)".to_string();
        }
        rows.iter()
            .map(|r| format!("--- {}\nSubject: {}\n\n{}", r.created_at, r.subject, r.body))
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration_s("90s").expect("s"), 90);
        assert_eq!(parse_duration_s("15m").expect("m"), 900);
        assert_eq!(parse_duration_s("2h").expect("h"), 7200);
        assert_eq!(parse_duration_s("7d").expect("d"), 604_800);
        assert_eq!(parse_duration_s("42").expect("plain"), 42);
        for bad in ["", "m", "0s", "5w", "-1s", "99999999999999999999d"] {
            assert!(parse_duration_s(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn notify_needs_channel_and_address() {
        let n = parse_notify(&Some("dev:alice".into()))
            .expect("ok")
            .expect("some");
        assert_eq!((n.channel.as_str(), n.address.as_str()), ("dev", "alice"));
        assert!(parse_notify(&Some("alice".into())).is_err());
    }

    #[test]
    fn choices_parse_to_the_wire_enums() {
        let k: AccountKindDto = parse_choice("--kind", "Settlement", "…").expect("kind");
        assert_eq!(k, AccountKindDto::Settlement);
        assert!(parse_choice::<RoleDto>("--role", "root", "admin, merchant, customer").is_err());
    }
}
