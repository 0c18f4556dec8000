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
//! * `POST /v1/tabs/{transaction}/terminate` (the merchant: `Authorization: Bearer` the token
//!   in `DATA/agent.token`) → no more purchases; the merchant's record goes to its operator.
//!
//! A tab also ends by itself: with the purchase that uses its deposit up (the merchant starts
//! the clearing), and at the session's agreed end. A task sends the record of every ended tab
//! to the operator until the operator has it (again after a restart, from the journal).

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
use tally_client::wire::federation::TradingSessionView;
use tally_kernel::crypto::{SigningKey, VerifyingKey};
use tally_kernel::{Amount, Secret, Timestamp};
use tally_proto::session::certs::{Role as CertRole, SessionCert};
use tally_proto::session::conclusion::{Record, Side};
use tally_proto::session::ids::{SessionId, TransactionId};
use tally_proto::session::purchase::{MacedPurchase, PurchaseError, Tab};
use tally_store::agent::{AgentError, AgentJournal, AgentOp, TabView};

/// How long the agent waits before sending again a record its operator did not take.
const REPORT_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

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
    /// Products delivered with acceptance (M9): a JSON file, an array of `{product, file,
    /// price, description}` (files relative to it). Each is offered signed by the agent's key.
    #[arg(long)]
    pub catalogue: Option<PathBuf>,
    /// The merchant's operator's node and the merchant's API key there.
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Clone)]
pub(crate) struct Agent {
    pub(crate) journal: AgentJournal,
    pub(crate) node: tally_client::Client,
    /// Signs the merchant's session records, offers and packages (`DATA/agent.key`).
    pub(crate) key: std::sync::Arc<SigningKey>,
    /// The merchant's own token for `terminate` (`DATA/agent.token`).
    token: std::sync::Arc<Secret<String>>,
    /// Wakes the task that ends tabs and sends their records.
    pub(crate) wake: std::sync::Arc<tokio::sync::Notify>,
    /// The products delivered with acceptance.
    pub(crate) catalogue: std::sync::Arc<crate::agent_orders::Catalogue>,
    /// The operator's node key (it signs K1), read once.
    pub(crate) operator_key: std::sync::Arc<tokio::sync::OnceCell<VerifyingKey>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenTab {
    session: String,
    tab: serde_json::Value,
}

pub(crate) fn refusal(
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

pub(crate) fn refused(e: AgentError) -> Response {
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
                PurchaseError::Expired => (StatusCode::CONFLICT, "session_expired", None),
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

/// The session as the merchant's operator shows it to the merchant: it must be open there;
/// with the customer's session key.
pub(crate) async fn open_session(
    a: &Agent,
    session: &str,
) -> Result<(TradingSessionView, VerifyingKey), Response> {
    let view = match a.node.trading_session(session).await {
        Ok(v) => v,
        Err(e) if e.status() == Some(404) => {
            return Err(refusal(
                StatusCode::NOT_FOUND,
                "unknown_session",
                "the operator knows no such session of this merchant".into(),
                None,
            ));
        }
        Err(e) => {
            tracing::warn!(error = %e, "merchant agent: the operator did not answer");
            return Err(refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the operator did not answer".into(),
                None,
            ));
        }
    };
    if view.role != "mta" || view.state != "open" {
        return Err(refusal(
            StatusCode::CONFLICT,
            "session_not_open",
            format!("the session is {}", view.state),
            None,
        ));
    }
    let Some(key) = view
        .customer_key
        .as_deref()
        .and_then(|k| VerifyingKey::from_hex(k).ok())
    else {
        return Err(refusal(
            StatusCode::CONFLICT,
            "session_not_open",
            "the session has no customer key".into(),
            None,
        ));
    };
    // M7: the customer's key as the merchant's own operator certifies it, for this session.
    if let Some(text) = &view.customer_cert {
        let operator = crate::agent_orders::operator_key(a).await?;
        let id: SessionId = session.parse().map_err(malformed_session)?;
        let cert = SessionCert::open(
            text,
            &operator,
            id,
            CertRole::Customer,
            Timestamp::now().as_micros(),
        )
        .map_err(|e| {
            refusal(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_certificate",
                format!("the customer's certificate: {e}"),
                None,
            )
        })?;
        if cert.verifying_key().ok() != Some(key) {
            return Err(refusal(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_certificate",
                "the certificate is for another key".into(),
                None,
            ));
        }
    }
    Ok((view, key))
}

/// The session's current transaction as its operator names it (M4: the next once one is
/// cleared): the tab and the orders are of that one.
pub(crate) fn current_transaction(
    view: &TradingSessionView,
    session: SessionId,
) -> Option<TransactionId> {
    view.transaction
        .parse::<TransactionId>()
        .ok()
        .filter(|t| t.session == session)
}

/// The refusal when the operator names no transaction of the session.
pub(crate) fn no_transaction() -> Response {
    refusal(
        StatusCode::CONFLICT,
        "session_not_open",
        "the operator names no transaction of this session".into(),
        None,
    )
}

/// The refusal of a request whose session id is not one.
pub(crate) fn malformed_session(e: impl std::fmt::Display) -> Response {
    refusal(
        StatusCode::BAD_REQUEST,
        "malformed",
        format!("session: {e}"),
        None,
    )
}

async fn open_tab(State(a): State<Agent>, Json(req): Json<OpenTab>) -> Response {
    let session: SessionId = match req.session.parse() {
        Ok(s) => s,
        Err(e) => return malformed_session(e),
    };
    let (view, key) = match open_session(&a, &req.session).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(deposit) = view
        .merchant_deposit
        .as_deref()
        .and_then(|d| d.parse::<Amount>().ok())
    else {
        return refusal(
            StatusCode::CONFLICT,
            "session_not_open",
            "the session has no deposit in the merchant's currency".into(),
            None,
        );
    };
    let Some(transaction) = current_transaction(&view, session) else {
        return no_transaction();
    };
    let bytes = req.tab.to_string().into_bytes();
    let tab = match Tab::open(&bytes, &key, transaction, deposit) {
        Ok(t) => t.until(view.expires_at.as_micros()),
        Err(e) => return refused(e.into()),
    };
    match a
        .journal
        .submit(transaction, AgentOp::Open(Box::new(tab)))
        .await
    {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(e) => refused(e),
    }
}

/// The tab a path names: a text that is no transaction id names no tab.
fn tab_named(text: &str) -> Result<TransactionId, AgentError> {
    text.parse().map_err(|_| AgentError::UnknownTab)
}

async fn purchase(
    State(a): State<Agent>,
    Path(transaction): Path<String>,
    Json(p): Json<MacedPurchase>,
) -> Response {
    let transaction = match tab_named(&transaction) {
        Ok(t) => t,
        Err(e) => return refused(e),
    };
    match a.journal.submit(transaction, AgentOp::Buy(p)).await {
        Ok(v) => {
            if v.closed {
                // The deposit is used up: the merchant's record goes now.
                a.wake.notify_one();
            }
            Json(v).into_response()
        }
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
    let transaction = match tab_named(&transaction) {
        Ok(t) => t,
        Err(e) => return refused(e),
    };
    let tab = match a
        .journal
        .submit(transaction, AgentOp::Close { mac: req.mac })
        .await
    {
        Ok(v) => v,
        Err(e) => return refused(e),
    };
    match report(&a, &tab, false).await {
        Ok(session) => Json(serde_json::json!({"tab": tab, "session": session})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "merchant agent: the operator did not take the record");
            refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!(
                    "the tab is closed, but the operator did not take the record: {e}; it is sent again"
                ),
                None,
            )
        }
    }
}

/// The merchant ends a tab (its token as the bearer): no more purchases, its record goes to
/// the operator.
async fn terminate(
    State(a): State<Agent>,
    Path(transaction): Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if given.is_empty() || !a.token.ct_eq(given.as_bytes()) {
        return refusal(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "only the merchant ends a tab: send the agent's token (DATA/agent.token)".into(),
            None,
        );
    }
    let transaction = match tab_named(&transaction) {
        Ok(t) => t,
        Err(e) => return refused(e),
    };
    let tab = match a.journal.submit(transaction, AgentOp::Terminate).await {
        Ok(v) => v,
        Err(e) => return refused(e),
    };
    match report(&a, &tab, true).await {
        Ok(session) => Json(serde_json::json!({"tab": tab, "session": session})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "merchant agent: the operator did not take the record");
            a.wake.notify_one();
            Json(serde_json::json!({"tab": tab, "session": null})).into_response()
        }
    }
}

/// Why a record did not reach the operator.
#[derive(Debug, thiserror::Error)]
enum ReportError {
    /// Not a record the agent can make (a corrupt tab).
    #[error("{0}")]
    Bad(String),
    /// The operator refused it for good (the session is over there): not sent again.
    #[error("the operator refused the record: {0}")]
    Refused(tally_client::Error),
    /// The operator did not answer: sent again later.
    #[error("the operator did not take the record: {0}")]
    Unavailable(tally_client::Error),
}

/// Signs the merchant's record of a closed tab and sends it to the operator; once taken (or
/// refused for good) the journal marks it so it is not sent again. A tab the merchant ended
/// (`ends`) ends its session first: the operator takes no next transaction of it.
async fn report(a: &Agent, tab: &TabView, ends: bool) -> Result<TradingSessionView, ReportError> {
    let transaction = tab.transaction;
    let session = transaction.session.to_string();
    let sent = |e: tally_client::Error| match e.status() {
        Some(s) if (400..500).contains(&s) && s != 408 && s != 429 => ReportError::Refused(e),
        _ => ReportError::Unavailable(e),
    };
    if ends {
        match a.node.trading_session_end(&session).await.map_err(sent) {
            // Refused for good: the session is over there; the record says the rest.
            Ok(_) | Err(ReportError::Refused(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let record = Record {
        transaction,
        side: Side::Merchant,
        total: Amount::new(tab.spent, tab.currency),
        count: tab.count,
        list: hex::encode(tab.list),
    };
    let signed = record
        .sign(&a.key)
        .map_err(|e| ReportError::Bad(e.to_string()))?;
    let outcome = a
        .node
        .trading_session_record(&session, signed)
        .await
        .map_err(sent);
    if matches!(outcome, Ok(_) | Err(ReportError::Refused(_))) {
        let _ = a.journal.submit(transaction, AgentOp::Reported).await;
    }
    outcome
}

/// Ends the tabs whose session is over and sends every ended tab's record until the operator
/// has it; wakes at the next tab's end, when a tab closes, or to retry.
async fn chores(a: Agent) {
    loop {
        let now = Timestamp::now().as_micros();
        let mut wait = REPORT_RETRY;
        match a.journal.chores(now).await {
            Ok(c) => {
                let mut ended = 0;
                for transaction in &c.to_end {
                    match a.journal.submit(*transaction, AgentOp::Terminate).await {
                        Ok(_) => ended += 1,
                        Err(e) => {
                            tracing::warn!(%transaction, error = %e, "merchant agent: could not end a tab")
                        }
                    }
                }
                for tab in &c.to_report {
                    let view = TabView::of(tab, false);
                    match report(&a, &view, tab.terminated).await {
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(transaction = %view.transaction, error = %e, "merchant agent: record not taken")
                        }
                    }
                }
                if ended > 0 && ended == c.to_end.len() {
                    // The tabs just ended: their records go at once (after a failure, the
                    // next round waits like a retry).
                    continue;
                }
                if let Some(end) = c.next_end {
                    let until = u64::try_from(end.saturating_sub(now)).unwrap_or(0);
                    wait = wait.min(std::time::Duration::from_micros(until));
                }
            }
            Err(e) => tracing::warn!(error = %e, "merchant agent: could not read its journal"),
        }
        tokio::select! {
            _ = a.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The agent's routes over `journal`, reading sessions from `node` and signing records with
/// `key`.
/// `token` lets the merchant end a tab. Starts the task that ends tabs at their session's end
/// and sends the records of ended tabs.
pub fn routes(
    journal: AgentJournal,
    node: tally_client::Client,
    key: SigningKey,
    token: Secret<String>,
) -> axum::Router {
    routes_with(
        journal,
        node,
        key,
        token,
        crate::agent_orders::Catalogue::default(),
    )
}

/// [`routes`] with a catalogue of products delivered with acceptance (M9).
pub fn routes_with(
    journal: AgentJournal,
    node: tally_client::Client,
    key: SigningKey,
    token: Secret<String>,
    catalogue: crate::agent_orders::Catalogue,
) -> axum::Router {
    let agent = Agent {
        journal,
        node,
        key: std::sync::Arc::new(key),
        token: std::sync::Arc::new(token),
        wake: std::sync::Arc::new(tokio::sync::Notify::new()),
        catalogue: std::sync::Arc::new(catalogue),
        operator_key: std::sync::Arc::new(tokio::sync::OnceCell::new()),
    };
    tokio::spawn(chores(agent.clone()));
    axum::Router::new()
        .route("/v1/tabs", post(open_tab))
        .route("/v1/tabs/{transaction}/purchases", post(purchase))
        .route("/v1/tabs/{transaction}/close", post(close))
        .route("/v1/tabs/{transaction}/terminate", post(terminate))
        .route(
            "/v1/offers",
            axum::routing::get(crate::agent_orders::offers),
        )
        .route("/v1/orders", post(crate::agent_orders::order))
        .route(
            "/v1/orders/{order}/answer",
            post(crate::agent_orders::answer),
        )
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024))
        .with_state(agent)
}

/// The merchant's token for `terminate`, made at the agent's first start (`DATA/agent.token`,
/// mode 0600).
fn token(data: &std::path::Path) -> anyhow::Result<Secret<String>> {
    let path = data.join("agent.token");
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        return Ok(Secret::new(text.trim().to_string()));
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let text = hex::encode(bytes);
    tally_service::identity::write_private_file(&path, text.as_bytes())?;
    Ok(Secret::new(text))
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
    let token = token(&a.data)?;
    let catalogue = match &a.catalogue {
        Some(path) => crate::agent_orders::Catalogue::load(path, &key)?,
        None => crate::agent_orders::Catalogue::default(),
    };
    axum::serve(listener, routes_with(journal, node, key, token, catalogue))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving")?;
    Ok(ExitCode::SUCCESS)
}
