//! `tally session agent`: the merchant agent (SPEC M4), run by the merchant, beside (not in)
//! its operator's node. Customers open a tab with a record signed by their session key and
//! send their purchases to it directly; it keeps the purchases in its own journal
//! (`tally_store::agent`), so the operators never see what was bought.
//!
//! Routes (JSON; errors as `{"error": {"code", "message", "details"?}}`):
//! * `POST /v1/tabs` `{session, tab}`: the session must be open at the merchant's operator
//!   (read with the merchant's API key: its customer key and the deposit in the merchant's
//!   currency); `tab` is the customer's signed tab record.
//! * `POST /v1/tabs/{transaction}/purchases` (a maced purchase) → the tab after it.
//! * `POST /v1/tabs/{transaction}/close` `{mac}` (HMAC under the tab's key) → no more
//!   purchases; the merchant's record goes to its operator.

use crate::client::Conn;
use anyhow::Context;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clap::Args;
use serde::Deserialize;
use std::path::PathBuf;
use std::process::ExitCode;
use tally_kernel::crypto::{SigningKey, VerifyingKey};
use tally_kernel::{Amount, Currency};
use tally_proto::session::conclusion::{Record, Side};
use tally_proto::session::ids::{SessionId, TransactionId};
use tally_proto::session::purchase::{MacedPurchase, PurchaseError, Tab};
use tally_store::agent::{AgentError, AgentJournal, AgentOp};

#[derive(Args)]
pub struct AgentArgs {
    /// The agent's own directory (its journal, `agent.db`).
    #[arg(long, default_value = "./tally-agent")]
    pub data: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8650")]
    pub listen: std::net::SocketAddr,
    /// The merchant's name at its operator (`tally session merchant NAME …`): the agent
    /// registers its signing key there at start.
    #[arg(long)]
    pub merchant: String,
    /// The merchant's operator's node and the merchant's API key there.
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Clone)]
struct Agent {
    journal: AgentJournal,
    node: tally_client::Client,
    /// Signs the merchant's session records (`DATA/agent.key`).
    key: std::sync::Arc<SigningKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenTab {
    session: String,
    tab: serde_json::Value,
}

fn refusal(
    status: StatusCode,
    code: &str,
    message: String,
    details: Option<serde_json::Value>,
) -> Response {
    let mut error = serde_json::json!({"code": code, "message": message});
    if let Some(d) = details {
        error["details"] = d;
    }
    (status, Json(serde_json::json!({ "error": error }))).into_response()
}

fn refused(e: AgentError) -> Response {
    let message = e.to_string();
    match e {
        AgentError::Purchase(p) => {
            let (status, code, details) = match p {
                PurchaseError::Malformed => (StatusCode::BAD_REQUEST, "malformed", None),
                PurchaseError::BadSignature => (StatusCode::UNAUTHORIZED, "bad_signature", None),
                PurchaseError::WrongTransaction => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "wrong_transaction", None)
                }
                PurchaseError::OutOfOrder { expected } => (
                    StatusCode::CONFLICT,
                    "out_of_order",
                    Some(serde_json::json!({"expected": expected})),
                ),
                PurchaseError::BadPrice => (StatusCode::UNPROCESSABLE_ENTITY, "bad_price", None),
                PurchaseError::Exhausted { remaining } => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "deposit_exhausted",
                    Some(serde_json::json!({"remaining_minor": remaining})),
                ),
                PurchaseError::Closed => (StatusCode::CONFLICT, "closed", None),
            };
            refusal(status, code, message, details)
        }
        AgentError::UnknownTab => refusal(StatusCode::NOT_FOUND, "unknown_tab", message, None),
        AgentError::TabExists => refusal(StatusCode::CONFLICT, "tab_exists", message, None),
        AgentError::Store(_) => refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the journal could not be written; nothing was taken".into(),
            None,
        ),
    }
}

async fn open_tab(State(a): State<Agent>, Json(req): Json<OpenTab>) -> Response {
    let session: SessionId = match req.session.parse() {
        Ok(s) => s,
        Err(e) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                "malformed",
                format!("session: {e}"),
                None,
            );
        }
    };
    let view = match a.node.trading_session(&req.session).await {
        Ok(v) => v,
        Err(e) if e.status() == Some(404) => {
            return refusal(
                StatusCode::NOT_FOUND,
                "unknown_session",
                "the operator knows no such session of this merchant".into(),
                None,
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "merchant agent: the operator did not answer");
            return refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the operator did not answer".into(),
                None,
            );
        }
    };
    if view.role != "mta" || view.state != "open" {
        return refusal(
            StatusCode::CONFLICT,
            "session_not_open",
            format!("the session is {}", view.state),
            None,
        );
    }
    let key = view
        .customer_key
        .as_deref()
        .and_then(|k| VerifyingKey::from_hex(k).ok());
    let deposit = view
        .merchant_deposit
        .as_deref()
        .and_then(|d| d.parse::<Amount>().ok());
    let (Some(key), Some(deposit)) = (key, deposit) else {
        return refusal(
            StatusCode::CONFLICT,
            "session_not_open",
            "the session has no customer key".into(),
            None,
        );
    };
    let transaction = session.first_transaction();
    let bytes = req.tab.to_string().into_bytes();
    let tab = match Tab::open(&bytes, &key, transaction, deposit) {
        Ok(t) => t,
        Err(e) => return refused(e.into()),
    };
    match a
        .journal
        .submit(&transaction.to_string(), AgentOp::Open(Box::new(tab)))
        .await
    {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(e) => refused(e),
    }
}

async fn purchase(
    State(a): State<Agent>,
    Path(transaction): Path<String>,
    Json(p): Json<MacedPurchase>,
) -> Response {
    match a.journal.submit(&transaction, AgentOp::Buy(p)).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => refused(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseTab {
    /// `purchase::close_mac` under the tab's key.
    mac: String,
}

/// Closes the tab (the customer, with the close MAC) and sends the merchant's signed record to
/// its operator (again on a repeat: the operator takes the same record once).
async fn close(
    State(a): State<Agent>,
    Path(transaction): Path<String>,
    Json(req): Json<CloseTab>,
) -> Response {
    let tab = match a
        .journal
        .submit(&transaction, AgentOp::Close { mac: req.mac })
        .await
    {
        Ok(v) => v,
        Err(e) => return refused(e),
    };
    let (Ok(t), Ok(currency)) = (
        transaction.parse::<TransactionId>(),
        Currency::from_code(&tab.currency),
    ) else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "malformed",
            "not a transaction id".into(),
            None,
        );
    };
    let record = Record {
        transaction: t,
        side: Side::Merchant,
        total: Amount::new(tab.spent, currency),
        count: tab.count,
        list: tab.list.clone(),
    };
    let signed = match record.sign(&a.key) {
        Ok(s) => s,
        Err(e) => {
            return refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                e.to_string(),
                None,
            );
        }
    };
    match a
        .node
        .trading_session_record(&t.session.to_string(), signed)
        .await
    {
        Ok(session) => Json(serde_json::json!({"tab": tab, "session": session})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "merchant agent: the operator did not take the record");
            refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!(
                    "the tab is closed, but the operator did not take the record: {e}; close again to retry"
                ),
                None,
            )
        }
    }
}

/// The agent's routes over `journal`, reading sessions from `node` and signing records with
/// `key`.
pub fn routes(journal: AgentJournal, node: tally_client::Client, key: SigningKey) -> axum::Router {
    axum::Router::new()
        .route("/v1/tabs", post(open_tab))
        .route("/v1/tabs/{transaction}/purchases", post(purchase))
        .route("/v1/tabs/{transaction}/close", post(close))
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024))
        .with_state(Agent {
            journal,
            node,
            key: std::sync::Arc::new(key),
        })
}

pub async fn serve(a: AgentArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&a.data).with_context(|| format!("creating {}", a.data.display()))?;
    let journal = AgentJournal::open(&a.data.join("agent.db")).await?;
    let node = crate::client::Client::new(&a.conn)?.api;
    let key_path = a.data.join("agent.key");
    let key = if key_path.exists() {
        SigningKey::from_pkcs8_pem(&std::fs::read_to_string(&key_path)?)?
    } else {
        let key = SigningKey::generate();
        tally_service::identity::write_private_file(
            &key_path,
            key.to_pkcs8_pem()?.expose().as_bytes(),
        )?;
        key
    };
    node.session_agent_key(&a.merchant, &key.verifying_key().to_hex())
        .await
        .with_context(|| {
            format!(
                "registering the agent's key for merchant {} at {}",
                a.merchant,
                node.base()
            )
        })?;
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("binding {}", a.listen))?;
    eprintln!(
        "tally merchant agent listening on http://{} (journal {}, operator {})",
        listener.local_addr()?,
        a.data.join("agent.db").display(),
        node.base()
    );
    axum::serve(listener, routes(journal, node, key))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving")?;
    Ok(ExitCode::SUCCESS)
}
