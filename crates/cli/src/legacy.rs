//! TEMPORARY: the untyped JSON client the CLI used before `tally-client`. Removed once every
//! command module is converted; nothing new may use it.
#![allow(dead_code)]

use crate::client::Conn;
use anyhow::Context;
use serde_json::Value;
use std::process::ExitCode;
use std::time::Duration;

/// Retries for transport errors and 5xx.
pub(crate) const ATTEMPTS_MAX: u32 = 4;

/// Time limit of a JSON call, and of a download that receives nothing.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) struct LegacyClient {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
    pub(crate) json: bool,
}

impl LegacyClient {
    pub(crate) fn new(conn: &Conn) -> anyhow::Result<LegacyClient> {
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
        Ok(LegacyClient {
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

    /// [`LegacyClient::call`], then [`LegacyClient::show`] of the answer.
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

/// The node's refusal in a non-success answer to a [`LegacyClient::streaming`] request, as an
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
