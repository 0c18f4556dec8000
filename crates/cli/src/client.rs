//! How client commands reach a node: the connection flags, the typed client
//! (`tally-client`), and how answers are shown.
//!
//! Every money-moving command sends an `Idempotency-Key`. When the user gives none, one is
//! generated and printed first, so an interrupted command can be re-run with the same key
//! without moving money twice. `tally-client` retries transport failures and 5xx answers
//! (bounded, with backoff) only for reads and keyed writes: a retry can never double a
//! transfer.

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use tally_client::wire::error::ErrorCode;
use tally_client::{Answer, Error as ApiError};

/// How to reach the node.
#[derive(Args, Clone)]
pub struct Conn {
    /// Node URL.
    #[arg(long, env = "TALLY_SERVER", default_value = concat!("http://", "127.0.0.1:8640"))]
    pub(crate) server: String,
    /// API key. Default: TALLY_API_KEY, else (for a node on this machine only) the admin key
    /// in ./tally-data/admin.key.
    #[arg(long, env = "TALLY_API_KEY", hide_env_values = true)]
    pub(crate) api_key: Option<String>,
    /// CA certificate to trust for https:// servers (the node's DATA/ca.pem).
    #[arg(long, env = "TALLY_CA_CERT")]
    pub(crate) ca_cert: Option<PathBuf>,
    /// Print the server's JSON instead of a summary.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The node as a client command sees it: the typed API and how to print answers.
pub(crate) struct Client {
    /// The node's API.
    pub(crate) api: tally_client::Client,
    /// `--json`: print the answer as the node sent it.
    pub(crate) json: bool,
}

/// A client of the node at `url` with no API key (an arbiter node, online verification).
pub(crate) fn anonymous(url: &str) -> anyhow::Result<tally_client::Client> {
    anonymous_trusting(url, None)
}

/// [`anonymous`], trusting the CA certificate at `ca` for an https:// node (a pad holder's,
/// whose credential is the pad).
pub(crate) fn anonymous_trusting(
    url: &str,
    ca: Option<&std::path::Path>,
) -> anyhow::Result<tally_client::Client> {
    let mut builder = tally_client::Client::builder(url).user_agent("tally-cli");
    if let Some(path) = ca {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        builder = builder.ca_pem(&pem);
    }
    Ok(builder.build()?)
}

impl Client {
    pub(crate) fn new(conn: &Conn) -> anyhow::Result<Client> {
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
        let mut builder = tally_client::Client::builder(&conn.server)
            .user_agent("tally-cli")
            .api_key_opt(key);
        if let Some(path) = &conn.ca_cert {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            builder = builder.ca_pem(&pem);
        }
        Ok(Client {
            api: builder.build()?,
            json: conn.json,
        })
    }

    /// Prints `value`: as JSON with `--json`, else as `summary` writes it.
    pub(crate) fn show<T: Serialize>(&self, value: &T, summary: impl FnOnce(&T) -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            println!("{}", summary(value));
        }
    }

    /// The node's URL, without a trailing slash.
    pub(crate) fn base(&self) -> &str {
        self.api.base()
    }
}

/// Minor units and a currency code as `12.50 EUR` (a code this build does not know is shown
/// with its minor units, plainly).
pub(crate) fn money(minor: i64, code: &str) -> String {
    match tally_kernel::Currency::from_code(code) {
        Ok(c) => tally_kernel::Amount::new(minor, c).to_string(),
        Err(_) => format!("{minor} {code} (minor units)"),
    }
}

/// The value of a keyed write's answer; says so when the key was used before.
pub(crate) fn answered<T>(answer: Answer<T>) -> T {
    if answer.replayed {
        eprintln!(
            "note: this key was used before; showing the original result (nothing moved again)"
        );
    }
    answer.value
}

/// The node's stable code, when `e` is the node's refusal.
pub(crate) fn refused_with(e: &anyhow::Error) -> Option<ErrorCode> {
    e.downcast_ref::<ApiError>().and_then(ApiError::code)
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

/// An id given on the command line.
pub(crate) fn parse_id(what: &str, text: &str) -> anyhow::Result<uuid::Uuid> {
    text.trim()
        .parse()
        .with_context(|| format!("{what} {text:?} is not an id (a UUID)"))
}
