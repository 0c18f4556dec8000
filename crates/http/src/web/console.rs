//! The operator's console (issue [9] part 4), for admin keys only: the node (its key and
//! version), the ledger (counts, journal head, last signed checkpoint, the audit on request),
//! the outbox by state with its failures, API keys (revoke), the operator's accounts, payment
//! receivers (never their keys) and threshold rules, exchange tables, and the `/metrics`
//! figures.
//!
//! Sign-in: an admin API key pasted once on the console's sign-in form is exchanged for a
//! console token ([`tally_service::Node::console_sign_in`]) kept in the same `HttpOnly;
//! SameSite=Strict` cookie as a customer's sign-in; the key itself is never stored. A customer's
//! session is refused every console page and form (403), and sees the sign-in form instead.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tally_service::{Principal, ServiceError};

use super::chart::bars;
use super::me::day_time;
use super::signin::money;
use super::{
    CsrfForm, Frame, Page, Refusal, Visitor, WebForm, WebPath, crumb, form_signer, path_id,
    refusal, refused_page, session_cookie_header,
};
use crate::AppState;

/// Metrics the console lists, by name prefix.
const METRICS: &[&str] = &[
    "tally_http_requests_total",
    "tally_http_errors_total",
    "tally_oob_sends_refused_total",
    "tally_outbox_",
    "tally_ledger_",
    "tally_http_connections_refused_total",
];

/// `templates/web/console_login.html`.
#[derive(Template)]
#[template(path = "web/console_login.html")]
struct LoginTemplate {
    frame: Frame,
    error: Option<String>,
}

fn login_page(state: &AppState, visitor: &Visitor, error: Option<Refusal>) -> Page {
    let status = error.as_ref().map_or(StatusCode::OK, |r| r.status);
    Page::of(
        status,
        &LoginTemplate {
            frame: Frame::new(state, visitor, vec![crumb("Operator console", "")]),
            error: error.as_ref().map(Refusal::sentence),
        },
    )
}

/// The operator behind the visitor's session, or the console's sign-in page.
fn operator<'a>(state: &AppState, visitor: &'a Visitor) -> Result<&'a Principal, Page> {
    match visitor.signed_in() {
        Some(s) if s.by.is_admin() => Ok(&s.by),
        Some(_) => Err(login_page(
            state,
            visitor,
            Some(refusal(ServiceError::Forbidden(
                "operator only: sign in with an admin key",
            ))),
        )),
        None => Err(login_page(state, visitor, None)),
    }
}

/// `POST /console/login`.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    key: String,
}

/// `POST /console/login`: the admin key exchanged for a console session.
pub async fn login(
    State(state): State<AppState>,
    visitor: Visitor,
    WebForm(form): WebForm<LoginForm>,
) -> Response {
    match state.node.console_sign_in(&form.key).await {
        Ok((token, _)) => {
            let mut response = Redirect::to("/console").into_response();
            let cookie = session_cookie_header(
                token.expose(),
                state.node.oob().settings().token_ttl_s,
                state.secure_cookies,
            );
            if let Ok(v) = HeaderValue::try_from(cookie) {
                response.headers_mut().insert(header::SET_COOKIE, v);
            }
            response
        }
        Err(e) => login_page(&state, &visitor, Some(refusal(e))).into_response(),
    }
}

struct Figure {
    name: String,
    value: String,
}

struct KeyLine {
    id: String,
    role: String,
    owner: String,
    label: String,
    created: String,
    revoked: Option<String>,
    csrf: String,
}

struct FailureLine {
    kind: String,
    address: String,
    attempts: i64,
    state: String,
    error: String,
}

struct AccountLine {
    id: String,
    owner: String,
    kind: &'static str,
    balance: String,
}

struct ReceiverLine {
    name: String,
    account: String,
    kind: String,
    updated: String,
}

struct RuleLine {
    side: &'static str,
    owner: String,
    above: String,
}

struct RateLine {
    pair: String,
    rate: String,
    until: String,
}

/// `templates/web/console.html`.
#[derive(Template)]
#[template(path = "web/console.html")]
struct ConsoleTemplate {
    frame: Frame,
    node_key: String,
    version: &'static str,
    accounts_count: i64,
    transfers_count: i64,
    journal_seq: i64,
    checkpoint: Option<String>,
    outbox: Vec<Figure>,
    outbox_chart: Option<String>,
    failures: Vec<FailureLine>,
    keys: Vec<KeyLine>,
    accounts: Vec<AccountLine>,
    rates: Vec<RateLine>,
    receivers: Vec<ReceiverLine>,
    rules: Vec<RuleLine>,
    metrics: Vec<Figure>,
    audit_csrf: String,
    audit: Option<AuditOutcome>,
    notice: Option<String>,
    error: Option<String>,
}

/// The result of an audit run from the console.
struct AuditOutcome {
    ok: bool,
    summary: String,
    problems: Vec<String>,
}

/// The `/metrics` lines the console lists (comments and other series left out).
fn metric_lines(text: &str) -> Vec<Figure> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| METRICS.iter().any(|m| l.starts_with(m)))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some(Figure {
                name: name.to_string(),
                value: value.to_string(),
            })
        })
        .take(60)
        .collect()
}

async fn console_page(
    state: &AppState,
    visitor: &Visitor,
    by: &Principal,
    audit: Option<AuditOutcome>,
    notice: Option<String>,
    error: Option<Refusal>,
) -> Response {
    let node = &state.node;
    let loaded = async {
        let overview = node.overview(by, 20).await?;
        let keys = node.api_keys(by).await?;
        let accounts = node.accounts(by, None).await?;
        let rates = node.sessions().fx_tables().await?;
        Ok::<_, ServiceError>((overview, keys, accounts, rates))
    };
    let (overview, keys, accounts, rates) = match loaded.await {
        Ok(all) => all,
        Err(e) => return refused_page(state, visitor, &refusal(e)).into_response(),
    };
    let key = node.core().node_key().verifying_key();
    crate::ops::store_gauges(&overview.counts);
    let handle = crate::telemetry::prometheus();
    handle.run_upkeep();
    let outbox_days: Vec<(String, i64)> = overview.outbox.clone();
    let status = error.as_ref().map_or(StatusCode::OK, |r| r.status);
    Page::of(
        status,
        &ConsoleTemplate {
            frame: Frame::new(state, visitor, vec![crumb("Operator console", "")]),
            node_key: format!("{} ({})", key.fingerprint(), key.to_hex()),
            version: env!("CARGO_PKG_VERSION"),
            accounts_count: overview.counts.accounts,
            transfers_count: overview.counts.transfers,
            journal_seq: overview.counts.journal_seq,
            checkpoint: overview.last_checkpoint.map(|c| {
                format!(
                    "entry {} at {}, hash {}…, signed by {}…",
                    c.seq,
                    day_time(c.at),
                    &hex::encode(c.hash)[..16],
                    &hex::encode(c.signer)[..16]
                )
            }),
            outbox_chart: bars(&outbox_days, "Outbox messages by state"),
            outbox: overview
                .outbox
                .into_iter()
                .map(|(name, n)| Figure {
                    name,
                    value: n.to_string(),
                })
                .collect(),
            failures: overview
                .failures
                .into_iter()
                .map(|m| FailureLine {
                    kind: m.message.kind,
                    address: m.message.address,
                    attempts: m.attempts,
                    state: m.state,
                    error: m.last_error.unwrap_or_default(),
                })
                .collect(),
            keys: keys
                .into_iter()
                .map(|k| KeyLine {
                    csrf: visitor.csrf(&format!("/console/keys/{}/revoke", k.id)),
                    id: k.id.to_string(),
                    role: k.role,
                    owner: k.owner,
                    label: k.label,
                    created: day_time(k.created_at),
                    revoked: k.revoked_at.map(day_time),
                })
                .collect(),
            accounts: accounts
                .into_iter()
                .map(|a| AccountLine {
                    id: a.id.to_string(),
                    owner: a.owner.clone(),
                    kind: a.kind.as_str(),
                    balance: money(a.balance_minor(), a.currency),
                })
                .collect(),
            receivers: overview
                .receivers
                .into_iter()
                .map(|(name, account, kind, updated)| ReceiverLine {
                    name,
                    account: account.to_string(),
                    kind,
                    updated: day_time(updated),
                })
                .collect(),
            rules: overview
                .rules
                .into_iter()
                .map(|(payer, owner, currency, minor)| RuleLine {
                    side: if payer { "as payer" } else { "as payee" },
                    above: tally_kernel::Currency::from_code(&currency)
                        .map(|c| money(minor, c))
                        .unwrap_or_else(|_| format!("{minor} {currency}")),
                    owner,
                })
                .collect(),
            rates: rates
                .into_iter()
                .map(|r| RateLine {
                    pair: format!("{} → {}", r.from, r.to),
                    rate: r.rate,
                    until: day_time(r.valid_until),
                })
                .collect(),
            metrics: metric_lines(&handle.render()),
            audit_csrf: visitor.csrf("/console/audit"),
            audit,
            notice,
            error: error.as_ref().map(Refusal::sentence),
        },
    )
    .into_response()
}

/// `GET /console`: the operator's console (or its sign-in form).
pub async fn console(State(state): State<AppState>, visitor: Visitor) -> Response {
    match operator(&state, &visitor) {
        Ok(by) => console_page(&state, &visitor, by, None, None, None).await,
        Err(page) => page.into_response(),
    }
}

/// `POST /console/audit`: replays the journal and checks every balance and signature.
pub async fn audit(
    State(state): State<AppState>,
    visitor: Visitor,
    WebForm(form): WebForm<CsrfForm>,
) -> Response {
    let by = match operator(&state, &visitor) {
        Ok(by) => by,
        Err(page) => return page.into_response(),
    };
    if let Err(page) = form_signer(&state, &visitor, "/console/audit", &form.csrf) {
        return page.into_response();
    }
    match state.node.audit(by).await {
        Ok(report) => {
            let outcome = AuditOutcome {
                ok: report.ok(),
                summary: format!(
                    "{} journal entries, {} accounts, {} transfers; {} checkpoints matched, {} \
                     signatures verified",
                    report.ledger.entries,
                    report.ledger.accounts,
                    report.ledger.transfers,
                    report.ledger.checkpoints_matched,
                    report.signatures_verified
                ),
                problems: report.ledger.problems.clone(),
            };
            console_page(&state, &visitor, by, Some(outcome), None, None).await
        }
        Err(e) => console_page(&state, &visitor, by, None, None, Some(refusal(e))).await,
    }
}

/// `POST /console/keys/{id}/revoke`: the key stops working at once (the last admin key cannot
/// be revoked).
pub async fn revoke_key(
    State(state): State<AppState>,
    visitor: Visitor,
    WebPath(text): WebPath,
    WebForm(form): WebForm<CsrfForm>,
) -> Response {
    let by = match operator(&state, &visitor) {
        Ok(by) => by,
        Err(page) => return page.into_response(),
    };
    let id = match path_id(&text, "API key") {
        Ok(id) => id,
        Err(r) => return refused_page(&state, &visitor, &r).into_response(),
    };
    if let Err(page) = form_signer(
        &state,
        &visitor,
        &format!("/console/keys/{id}/revoke"),
        &form.csrf,
    ) {
        return page.into_response();
    }
    match state.node.revoke_api_key(by, id).await {
        Ok(()) => {
            let notice = format!("Revoked key {id}.");
            console_page(&state, &visitor, by, None, Some(notice), None).await
        }
        Err(e) => console_page(&state, &visitor, by, None, None, Some(refusal(e))).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_lists_only_its_metrics() {
        let text = "# HELP tally_http_requests_total x\n# TYPE tally_http_requests_total counter\n\
                    tally_http_requests_total{status=\"200\"} 12\n\
                    process_cpu_seconds_total 3\n\
                    tally_ledger_accounts 4\n";
        let lines = metric_lines(text);
        let got: Vec<(String, String)> = lines.into_iter().map(|f| (f.name, f.value)).collect();
        assert_eq!(
            got,
            vec![
                (
                    "tally_http_requests_total{status=\"200\"}".to_string(),
                    "12".to_string()
                ),
                ("tally_ledger_accounts".to_string(), "4".to_string()),
            ]
        );
    }
}
