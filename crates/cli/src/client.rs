//! Client commands: speak the node's HTTP API.
//!
//! Every money-moving command sends an `Idempotency-Key`. When the user gives none, one is
//! generated and printed first, so an interrupted command can be re-run with the same key
//! without moving money twice. Transport failures and 5xx answers are retried (bounded, with
//! backoff) with the same key: a retry can never double a transfer.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tally_kernel::Amount;

/// How to reach the node.
#[derive(Args, Clone)]
pub struct Conn {
    /// Node URL.
    #[arg(long, env = "TALLY_SERVER", default_value = concat!("http://", "127.0.0.1:8640"))]
    server: String,
    /// API key. Default: TALLY_API_KEY, else (for a node on this machine only) the admin key
    /// in ./tally-data/admin.key.
    #[arg(long, env = "TALLY_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// CA certificate to trust for https:// servers (the node's DATA/ca.pem).
    #[arg(long, env = "TALLY_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Print the server's JSON instead of a summary.
    #[arg(long)]
    json: bool,
}

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
    #[command(flatten)]
    mv: MoveArgs,
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

/// Retries for transport errors and 5xx.
pub(crate) const ATTEMPTS_MAX: u32 = 4;

/// Time limit of a JSON call, and of a download that receives nothing.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
    pub(crate) json: bool,
}

impl Client {
    pub(crate) fn new(conn: &Conn) -> anyhow::Result<Client> {
        // No overall time limit on the client: a streamed upload or download of a large
        // package takes what it takes. JSON calls set [`CALL_TIMEOUT`] per request.
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .tcp_keepalive(Duration::from_secs(30))
            .user_agent("tally-cli");
        if let Some(path) = &conn.ca_cert {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        // The local admin key is a convenience for a node on this machine only: it is never
        // sent to another host.
        let loopback = reqwest::Url::parse(&conn.server).ok().is_some_and(|u| {
            matches!(
                u.host_str(),
                Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
            )
        });
        let key = conn.api_key.clone().or_else(|| {
            loopback
                .then(|| std::fs::read_to_string("tally-data/admin.key").ok())
                .flatten()
                .map(|k| k.trim().to_string())
        });
        Ok(Client {
            http: builder.build()?,
            base: conn.server.trim_end_matches('/').to_string(),
            key,
            json: conn.json,
        })
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        idem: Option<&str>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{}", self.base, path);
        let mut last_err = None;
        // Only a request that cannot take effect twice is retried: a read, or a write that
        // carries an idempotency key. Anything else is tried once and its error shown.
        let retry_safe = method == reqwest::Method::GET || idem.is_some();
        let attempts = if retry_safe { ATTEMPTS_MAX } else { 1 };
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let mut req = self
                .http
                .request(method.clone(), &url)
                .timeout(CALL_TIMEOUT);
            if let Some(k) = &self.key {
                req = req.bearer_auth(k);
            }
            if let Some(i) = idem {
                req = req.header("Idempotency-Key", i);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    // `{:#}` keeps the cause (refused, timed out, certificate not trusted …).
                    let e = anyhow::Error::from(e);
                    last_err = Some(anyhow::anyhow!("cannot reach {}: {e:#}", self.base));
                    continue;
                }
            };
            let status = resp.status();
            let replayed = resp.headers().get("idempotency-replayed").is_some();
            let text = resp.text().await.unwrap_or_default();
            let value: Value = if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            };
            if status.is_server_error() {
                last_err = Some(api_error(status, &value));
                continue;
            }
            if !status.is_success() {
                return Err(api_error(status, &value));
            }
            if replayed {
                eprintln!(
                    "note: this key was used before; showing the original result (nothing moved again)"
                );
            }
            return Ok(value);
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("request failed")))
    }

    pub(crate) fn show(&self, v: &Value, summary: impl FnOnce(&Value) -> String) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            println!("{}", summary(v));
        }
    }

    /// The node's URL, without a trailing slash.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// A request whose body is streamed (an upload or a download of any size) or read as
    /// text: the API key is set, there is no overall time limit, and nothing is retried here
    /// (the caller knows whether and where a stream can resume). Turn a non-success answer
    /// into an error with [`refusal`].
    pub(crate) fn streaming(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        req
    }

    /// [`Client::call`], then [`Client::show`] of the answer.
    pub(crate) async fn call_show(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        idem: Option<&str>,
        summary: impl FnOnce(&Value) -> String,
    ) -> anyhow::Result<ExitCode> {
        let v = self.call(method, path, body, idem).await?;
        self.show(&v, summary);
        Ok(ExitCode::SUCCESS)
    }

    /// `GET path`, shown with `summary` (or as JSON with `--json`).
    pub(crate) async fn get_show(
        &self,
        path: &str,
        summary: impl FnOnce(&Value) -> String,
    ) -> anyhow::Result<ExitCode> {
        self.call_show(reqwest::Method::GET, path, None, None, summary)
            .await
    }
}

/// A refusal from the node: its status, stable code and message (shown as
/// `422 wrong_code: wrong code (2 attempts left)`). Commands that explain a refusal in their
/// own words find it with `downcast_ref`.
#[derive(Debug)]
pub(crate) struct ApiFailure {
    pub(crate) status: u16,
    pub(crate) code: String,
    pub(crate) message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiFailure {}

/// The node's refusal in a non-success answer to a [`Client::streaming`] request, as an
/// [`ApiFailure`].
pub(crate) async fn refusal(resp: reqwest::Response) -> anyhow::Error {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    api_error(status, &value)
}

fn api_error(status: reqwest::StatusCode, v: &Value) -> anyhow::Error {
    let code = v
        .pointer("/error/code")
        .and_then(Value::as_str)
        .unwrap_or("http_error");
    let message = v
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("");
    anyhow::Error::new(ApiFailure {
        status: status.as_u16(),
        code: code.to_string(),
        message: message.to_string(),
    })
}

pub(crate) fn idempotency_key(given: &Option<String>) -> String {
    match given {
        Some(k) => k.clone(),
        None => {
            let k = uuid::Uuid::now_v7().to_string();
            eprintln!("idempotency key: {k}  (re-run with --idempotency-key {k} to retry safely)");
            k
        }
    }
}

pub(crate) fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("-")
}

pub(crate) fn account_summary(v: &Value) -> String {
    let available = match v.get("available_minor") {
        Some(Value::Number(n)) => format!("{n} minor units"),
        _ => "unbounded".to_string(),
    };
    format!(
        "account   {}\nowner     {}\nkind      {}\nbalance   {}\navailable {}\npending   debits {} / credits {}",
        s(v, "/id"),
        s(v, "/owner"),
        s(v, "/kind"),
        s(v, "/balance_display"),
        available,
        v.get("debits_pending").unwrap_or(&Value::Null),
        v.get("credits_pending").unwrap_or(&Value::Null),
    )
}

pub(crate) fn transfer_summary(v: &Value) -> String {
    let mut out = format!(
        "transfer  {}\nkind      {}\nstate     {}\namount    {}\nfrom      {}\nto        {}",
        s(v, "/id"),
        s(v, "/kind"),
        s(v, "/state"),
        s(v, "/amount_display"),
        s(v, "/debit_account"),
        s(v, "/credit_account"),
    );
    if let Some(e) = v.get("expires_at").and_then(Value::as_str) {
        out.push_str(&format!("\nexpires   {e}"));
    }
    if let Some(p) = v.get("pending_id").and_then(Value::as_str) {
        out.push_str(&format!("\nhold      {p}"));
    }
    out
}

pub(crate) fn parse_amount(text: &str) -> anyhow::Result<Amount> {
    text.parse::<Amount>()
        .with_context(|| format!("--amount {text:?}"))
}

fn parse_notify(n: &Option<String>) -> anyhow::Result<Option<Value>> {
    let Some(n) = n else { return Ok(None) };
    let Some((channel, address)) = n.split_once(':') else {
        bail!("--notify takes CHANNEL:ADDRESS, e.g. dev:alice or email:alice@example.com");
    };
    Ok(Some(json!({"channel": channel, "address": address})))
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

fn move_body(mv: &MoveArgs) -> anyhow::Result<Value> {
    let amount = parse_amount(&mv.amount)?;
    Ok(json!({
        "debit_account": mv.from,
        "credit_account": mv.to,
        "amount": amount.to_string(),
        "memo": mv.memo,
        "notify": parse_notify(&mv.notify)?,
    }))
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
            let body = json!({
                "currency": currency.code(),
                "owner": a.owner,
                "kind": a.kind,
                "limit_minor": limit_minor,
                "debits_must_not_exceed_credits": if a.unbounded { Some(false) } else { None },
            });
            // A key makes a retried open return the first account instead of a second one.
            let key = idempotency_key(&a.idempotency_key);
            let v = c
                .call(
                    reqwest::Method::POST,
                    "/v1/accounts",
                    Some(&body),
                    Some(&key),
                )
                .await?;
            c.show(&v, account_summary);
        }
        AccountCommand::Show(a) => {
            let c = Client::new(&a.conn)?;
            let v = c
                .call(
                    reqwest::Method::GET,
                    &format!("/v1/accounts/{}", a.id),
                    None,
                    None,
                )
                .await?;
            c.show(&v, account_summary);
        }
        AccountCommand::List(a) => {
            let c = Client::new(&a.conn)?;
            let path = match &a.owner {
                Some(o) => format!("/v1/accounts?owner={}", urlencode(o)),
                None => "/v1/accounts".to_string(),
            };
            let v = c.call(reqwest::Method::GET, &path, None, None).await?;
            c.show(&v, |v| {
                let rows = v.as_array().cloned().unwrap_or_default();
                let mut out = String::new();
                for r in rows {
                    out.push_str(&format!(
                        "{}  {:10} {:>18}  {}\n",
                        s(&r, "/id"),
                        s(&r, "/kind"),
                        s(&r, "/balance_display"),
                        s(&r, "/owner")
                    ));
                }
                out.trim_end().to_string()
            });
        }
        AccountCommand::History(a) => {
            let c = Client::new(&a.conn)?;
            let v = c
                .call(
                    reqwest::Method::GET,
                    &format!("/v1/accounts/{}/transfers?limit={}", a.id, a.limit),
                    None,
                    None,
                )
                .await?;
            c.show(&v, |v| {
                let rows = v.as_array().cloned().unwrap_or_default();
                let mut out = String::new();
                for r in rows {
                    let dir = if s(&r, "/debit_account") == a.id {
                        "out"
                    } else {
                        "in "
                    };
                    out.push_str(&format!(
                        "{}  {dir} {:>16}  {:13} {:8} {}\n",
                        s(&r, "/created_at"),
                        s(&r, "/amount_display"),
                        s(&r, "/kind"),
                        s(&r, "/state"),
                        s(&r, "/id")
                    ));
                }
                out.trim_end().to_string()
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub async fn transfer(a: TransferArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let body = move_body(&a.mv)?;
    let key = idempotency_key(&a.mv.idempotency_key);
    let v = c
        .call(
            reqwest::Method::POST,
            "/v1/transfers",
            Some(&body),
            Some(&key),
        )
        .await?;
    c.show(&v, transfer_summary);
    Ok(ExitCode::SUCCESS)
}

pub async fn hold(a: HoldArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let mut body = move_body(&a.mv)?;
    body["timeout_s"] = json!(parse_duration_s(&a.timeout)?);
    let key = idempotency_key(&a.mv.idempotency_key);
    let v = c
        .call(reqwest::Method::POST, "/v1/holds", Some(&body), Some(&key))
        .await?;
    c.show(&v, transfer_summary);
    Ok(ExitCode::SUCCESS)
}

pub async fn post(a: PostArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let body = match &a.amount {
        // The currency goes along: the node refuses it if it is not the hold's.
        Some(text) => json!({"amount": parse_amount(text)?.to_string()}),
        None => json!({}),
    };
    let key = idempotency_key(&a.idempotency_key);
    let v = c
        .call(
            reqwest::Method::POST,
            &format!("/v1/holds/{}/post", a.hold),
            Some(&body),
            Some(&key),
        )
        .await?;
    c.show(&v, transfer_summary);
    Ok(ExitCode::SUCCESS)
}

pub async fn void(a: VoidArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let key = idempotency_key(&a.idempotency_key);
    let v = c
        .call(
            reqwest::Method::POST,
            &format!("/v1/holds/{}/void", a.hold),
            Some(&json!({})),
            Some(&key),
        )
        .await?;
    c.show(&v, transfer_summary);
    Ok(ExitCode::SUCCESS)
}

pub async fn exchange(a: ExchangeArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let amount = parse_amount(&a.amount)?;
    let body = json!({"debit_account": a.from, "credit_account": a.to, "amount_minor": amount.minor,
                      "currency": amount.currency.code(), "rate": a.rate});
    let key = idempotency_key(&a.idempotency_key);
    let v = c
        .call(
            reqwest::Method::POST,
            "/v1/exchanges",
            Some(&body),
            Some(&key),
        )
        .await?;
    c.show(&v, |v| {
        let legs = v
            .get("transfers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        legs.iter()
            .map(transfer_summary)
            .collect::<Vec<_>>()
            .join("\n\n")
    });
    Ok(ExitCode::SUCCESS)
}

pub async fn api_key(cmd: ApiKeyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ApiKeyCommand::Create(a) => {
            let c = Client::new(&a.conn)?;
            let body = json!({"role": a.role, "owner": a.owner, "label": a.label});
            let v = c
                .call(reqwest::Method::POST, "/v1/api-keys", Some(&body), None)
                .await?;
            c.show(&v, |v| {
                format!(
                    "id    {}\nrole  {}\nowner {}\nkey   {}\n(the key is shown once; store it now)",
                    s(v, "/id"),
                    s(v, "/role"),
                    s(v, "/owner"),
                    s(v, "/key")
                )
            });
        }
        ApiKeyCommand::List(a) => {
            let c = Client::new(&a.conn)?;
            let v = c
                .call(reqwest::Method::GET, "/v1/api-keys", None, None)
                .await?;
            c.show(&v, |v| {
                let rows = v.as_array().cloned().unwrap_or_default();
                rows.iter()
                    .map(|r| {
                        let revoked = if r.get("revoked_at").is_some_and(|x| !x.is_null()) {
                            " (revoked)"
                        } else {
                            ""
                        };
                        format!(
                            "{}  {:8} {}{revoked}",
                            s(r, "/id"),
                            s(r, "/role"),
                            s(r, "/owner")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        ApiKeyCommand::Revoke(a) => {
            let c = Client::new(&a.conn)?;
            c.call(
                reqwest::Method::DELETE,
                &format!("/v1/api-keys/{}", a.id),
                None,
                None,
            )
            .await?;
            println!("revoked {}", a.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn inbox(a: InboxArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let v = c
        .call(
            reqwest::Method::GET,
            &format!("/v1/dev/inbox/{}", urlencode(&a.address)),
            None,
            None,
        )
        .await?;
    c.show(&v, |v| {
        let rows = v.as_array().cloned().unwrap_or_default();
        if rows.is_empty() {
            return "(empty)".to_string();
        }
        rows.iter()
            .map(|r| {
                format!(
                    "--- {}\nSubject: {}\n\n{}",
                    s(r, "/created_at"),
                    s(r, "/subject"),
                    s(r, "/body")
                )
            })
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
        assert_eq!(
            parse_notify(&Some("dev:alice".into())).expect("ok"),
            Some(json!({"channel":"dev","address":"alice"}))
        );
        assert!(parse_notify(&Some("alice".into())).is_err());
    }
}
