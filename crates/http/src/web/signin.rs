//! Signing in and out, the out-of-band session page (SPEC A1–A7: channel A for people without
//! the CLI or a merchant's terminal), and `/me`.
//!
//! The session number in `/s/{session}` is channel A's capability and the code is channel B's
//! proof, so confirming a payment or a message needs no cookie. A verified sign-in (by user
//! name, or by address for a buyer without a user) sets the session cookie and goes on to the
//! page the visitor came from (`next`).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tally_proto::delivery::sale::ProductState;
use tally_proto::oob::Purpose;
use tally_service::oob::{AppRequest, OpenSession, Opened, SessionView};

use super::{
    CsrfForm, Frame, Page, Refusal, Visitor, WebForm, WebPath, cleared_cookie, crumb, form_signer,
    refusal, refused_page, safe_next, same_site, session_cookie_header,
};
use crate::AppState;
use crate::error::ApiError;
use crate::middleware::ClientAddress;

/// Most characters of a typed code the page passes on (the service refuses more than 32).
const CODE_LEN_MAX: usize = 64;

/// `?next=` of a page that leads to a sign-in.
#[derive(Debug, Default, Deserialize)]
pub struct NextQuery {
    /// Where to go once signed in.
    #[serde(default)]
    pub next: Option<String>,
}

/// `POST /web/login`.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    /// Who signs in.
    pub user: String,
    /// Where to go once signed in.
    #[serde(default)]
    pub next: Option<String>,
}

/// `POST /web/guest`: a sign-in by address.
#[derive(Debug, Deserialize)]
pub struct GuestForm {
    /// `email` or `sms` (`dev` on a dev node).
    pub channel: String,
    /// The address on it.
    pub address: String,
    /// Where to go once signed in.
    #[serde(default)]
    pub next: Option<String>,
}

/// `POST /s/{session}`.
#[derive(Debug, Deserialize)]
pub struct CodeForm {
    /// The code from channel B, as typed.
    pub code: String,
    /// Where a sign-in goes once verified.
    #[serde(default)]
    pub next: Option<String>,
}

/// The code as the service expects it: spaces and dashes people type or paste between digit
/// groups (`1234 5678`, `1234-5678`) are dropped; everything else is left for the service to
/// judge, so a typo is a wrong code, never silently "corrected" into another one.
pub fn typed_code(input: &str) -> String {
    input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .take(CODE_LEN_MAX)
        .collect()
}

/// A product in the shop's list.
pub(crate) struct ShopItem {
    pub(crate) id: String,
    pub(crate) title: String,
    pub(crate) price: String,
    pub(crate) producer: String,
}

/// `templates/web/home.html`: what the node sells, and the sign-in forms.
#[derive(Template)]
#[template(path = "web/home.html")]
struct HomeTemplate<'a> {
    frame: Frame,
    products: Vec<ShopItem>,
    user: &'a str,
    address: &'a str,
    channel: &'a str,
    next: String,
    error: Option<String>,
}

struct HomeForm<'a> {
    user: &'a str,
    channel: &'a str,
    address: &'a str,
    next: Option<String>,
    error: Option<Refusal>,
}

async fn home_page(state: &AppState, visitor: &Visitor, form: HomeForm<'_>) -> Page {
    let products = match state.node.delivery().products().await {
        Ok(all) => all
            .into_iter()
            .filter(|p| p.state == ProductState::Active)
            .map(|p| ShopItem {
                id: p.id.to_string(),
                title: p.title,
                price: p.price.to_string(),
                producer: p.producer,
            })
            .collect(),
        Err(e) => return refused_page(state, visitor, &refusal(e)),
    };
    let status = form.error.as_ref().map_or(StatusCode::OK, |r| r.status);
    let code = form.error.as_ref().map(|r| r.code);
    let page = Page::of(
        status,
        &HomeTemplate {
            frame: Frame::new(state, visitor, Vec::new()),
            products,
            user: form.user,
            address: form.address,
            channel: form.channel,
            next: form.next.unwrap_or_default(),
            error: form.error.as_ref().map(Refusal::sentence),
        },
    );
    match code {
        Some(code) => page.coded(code),
        None => page,
    }
}

/// `GET /`: the shop and the sign-in forms.
pub async fn home(
    State(state): State<AppState>,
    visitor: Visitor,
    Query(q): Query<NextQuery>,
) -> Response {
    home_page(
        &state,
        &visitor,
        HomeForm {
            user: "",
            channel: "email",
            address: "",
            next: safe_next(q.next.as_deref()),
            error: None,
        },
    )
    .await
    .into_response()
}

/// Where a sign-in goes once its code is typed: `/s/{session}`, carrying `next`.
fn to_session(session: &str, next: Option<&str>) -> Response {
    match safe_next(next) {
        Some(next) => Redirect::to(&format!("/s/{session}?next={next}")).into_response(),
        None => Redirect::to(&format!("/s/{session}")).into_response(),
    }
}

/// `POST /web/login`: opens a login session and sends the code to channel B.
pub async fn login(
    State(state): State<AppState>,
    visitor: Visitor,
    client: Option<axum::Extension<ClientAddress>>,
    WebForm(form): WebForm<LoginForm>,
) -> Response {
    let client = client.and_then(|c| c.0.0);
    let user = form.user.trim().to_string();
    let request = OpenSession {
        user: user.clone(),
        app: AppRequest::Login,
        channel: None,
        certificate: None,
    };
    match state.node.oob().open(None, None, request, client).await {
        Ok(Opened::Secured { session, .. }) => to_session(&session.session, form.next.as_deref()),
        Ok(Opened::Normal { .. }) => {
            // A login always waits for a code; a "normal" outcome would be a service bug.
            let e = ApiError::internal(&"a web login was executed without a code");
            refused_page(&state, &visitor, &super::api_refusal(&e)).into_response()
        }
        Err(e) => home_page(
            &state,
            &visitor,
            HomeForm {
                user: &user,
                channel: "email",
                address: "",
                next: safe_next(form.next.as_deref()),
                error: Some(refusal(e)),
            },
        )
        .await
        .into_response(),
    }
}

/// `POST /web/guest`: a sign-in by e-mail address or phone number (the checkout's buyer).
pub async fn guest(
    State(state): State<AppState>,
    visitor: Visitor,
    client: Option<axum::Extension<ClientAddress>>,
    WebForm(form): WebForm<GuestForm>,
) -> Response {
    let client = client.and_then(|c| c.0.0);
    let opened = state
        .node
        .oob()
        .guest_sign_in(&form.channel, &form.address, client)
        .await;
    match opened {
        Ok(session) => to_session(&session.session, form.next.as_deref()),
        Err(e) => home_page(
            &state,
            &visitor,
            HomeForm {
                user: "",
                channel: &form.channel,
                address: form.address.trim(),
                next: safe_next(form.next.as_deref()),
                error: Some(refusal(e)),
            },
        )
        .await
        .into_response(),
    }
}

/// `POST /web/logout`: the token stops working everywhere; the cookie is cleared.
pub async fn logout(
    State(state): State<AppState>,
    visitor: Visitor,
    WebForm(form): WebForm<CsrfForm>,
) -> Response {
    let signed = match form_signer(&state, &visitor, "/web/logout", &form.csrf) {
        Ok(s) => s,
        Err(page) => return page.into_response(),
    };
    if let Err(e) = state.node.oob().sign_out(&signed.token).await {
        return refused_page(&state, &visitor, &refusal(e)).into_response();
    }
    let mut response = Redirect::to("/").into_response();
    if let Ok(v) = header::HeaderValue::try_from(cleared_cookie(state.secure_cookies)) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// One line of a session's details.
pub(crate) struct Row {
    pub(crate) term: &'static str,
    pub(crate) id: &'static str,
    pub(crate) value: String,
    /// Shown as code (ids, digests).
    pub(crate) code: bool,
    /// Shown large (the amount).
    pub(crate) amount: bool,
}

fn row(term: &'static str, id: &'static str, value: impl Into<String>) -> Row {
    Row {
        term,
        id,
        value: value.into(),
        code: false,
        amount: false,
    }
}

fn code_row(term: &'static str, id: &'static str, value: impl Into<String>) -> Row {
    Row {
        code: true,
        ..row(term, id, value)
    }
}

/// What is being authorised, in clear, and the session's facts.
pub(crate) fn session_details(v: &SessionView) -> Vec<Row> {
    let mut rows = vec![
        row("Application", "application", &v.application),
        row("User", "session-user", &v.user),
    ];
    match &v.purpose {
        Purpose::Login => rows.push(row("What", "what", "sign in")),
        Purpose::Message(m) => {
            rows.push(row("Title", "title", &m.title));
            rows.push(code_row("Content SHA-256", "sha256", &m.sha256));
        }
        Purpose::Transaction(t) => {
            rows.push(Row {
                amount: true,
                ..row("Amount", "amount", t.amount.to_string())
            });
            rows.push(row("Payee", "payee", &t.payee));
            if let Some(a) = t.payee_account {
                rows.push(code_row("Payee account", "payee-account", a.to_string()));
            }
            if let Some(a) = t.payer_account {
                rows.push(code_row("From account", "payer-account", a.to_string()));
            }
            rows.push(row("Description", "description", &t.description));
        }
    }
    rows.push(row(
        "Code sent to",
        "address",
        format!("{} ({})", v.address, v.channel),
    ));
    let delivery = match (v.delivery.as_str(), &v.delivery_error) {
        ("sent", _) => "sent".to_string(),
        ("failed", _) => "could not be delivered; cancel and start again".to_string(),
        (_, Some(why)) => format!("not delivered yet, retrying ({why})"),
        (other, None) => other.to_string(),
    };
    rows.push(row("Delivery", "delivery", delivery));
    rows.push(row("Expires", "expires", v.expires_at.to_rfc3339()));
    rows.push(row(
        "Attempts left",
        "attempts-left",
        v.attempts_left.to_string(),
    ));
    rows.push(row("State", "state", v.state.as_str()));
    rows
}

/// Where the code went, in words (`Code from your …`).
pub(crate) fn channel_words(channel: &str) -> &'static str {
    match channel {
        "email" => "e-mail",
        "sms" => "phone (SMS)",
        "webhook" => "app",
        "dev" => "dev inbox",
        _ => "second channel",
    }
}

/// The outcome of the last action on a session page.
struct Outcome {
    ok: bool,
    text: String,
}

fn outcome(ok: bool, text: impl Into<String>) -> Option<Outcome> {
    Some(Outcome {
        ok,
        text: text.into(),
    })
}

/// `templates/web/session.html`: details, then (while open) the code form and the cancel form.
#[derive(Template)]
#[template(path = "web/session.html")]
struct SessionTemplate<'a> {
    frame: Frame,
    /// The node's own hex, not the path as typed: only [0-9a-f] reaches the form URLs.
    number: &'a str,
    open: bool,
    channel: &'static str,
    /// The dev inbox holding the code, on a dev node.
    dev_inbox: Option<String>,
    code_len_max: usize,
    rows: Vec<Row>,
    result: Option<Outcome>,
    next: String,
}

fn session_page(
    state: &AppState,
    visitor: &Visitor,
    status: StatusCode,
    v: &SessionView,
    result: Option<Outcome>,
    next: Option<&str>,
) -> Page {
    let dev_inbox = (state.node.is_dev() && v.channel == "dev").then(|| v.address.clone());
    Page::of(
        status,
        &SessionTemplate {
            frame: Frame::new(state, visitor, vec![crumb("Confirm with a code", "")]),
            number: &v.session,
            open: v.state == tally_proto::oob::State::Open,
            channel: channel_words(&v.channel),
            dev_inbox,
            code_len_max: CODE_LEN_MAX,
            rows: session_details(v),
            result,
            next: safe_next(next).unwrap_or_default(),
        },
    )
}

/// `GET /s/{session}`: what the code authorises.
pub async fn show(
    State(state): State<AppState>,
    visitor: Visitor,
    WebPath(number): WebPath,
    Query(q): Query<NextQuery>,
) -> Response {
    match state.node.oob().session(&number).await {
        Ok(v) => session_page(
            &state,
            &visitor,
            StatusCode::OK,
            &v,
            None,
            q.next.as_deref(),
        )
        .into_response(),
        Err(e) => refused_page(&state, &visitor, &refusal(e)).into_response(),
    }
}

/// `POST /s/{session}`: the code typed back. A verified sign-in sets the session cookie and
/// goes on to `next` (default `/me`).
pub async fn confirm(
    State(state): State<AppState>,
    visitor: Visitor,
    WebPath(number): WebPath,
    WebForm(form): WebForm<CodeForm>,
) -> Response {
    // The session's transaction, read again, is passed back (a session's purpose never
    // changes, so this is what the page showed); the code itself is bound to it (SPEC A4).
    let shown = match state.node.oob().session(&number).await {
        Ok(v) => v,
        Err(e) => return refused_page(&state, &visitor, &refusal(e)).into_response(),
    };
    let confirm = match &shown.purpose {
        Purpose::Transaction(t) => Some(t),
        Purpose::Login | Purpose::Message(_) => None,
    };
    match state
        .node
        .oob()
        .verify(&number, &typed_code(&form.code), confirm)
        .await
    {
        Ok(verified) => {
            if let Some(token) = &verified.token {
                let next = safe_next(form.next.as_deref()).unwrap_or_else(|| "/me".into());
                let mut response = Redirect::to(&next).into_response();
                let cookie = session_cookie_header(
                    token.expose(),
                    state.node.oob().settings().token_ttl_s,
                    state.secure_cookies,
                );
                if let Ok(v) = header::HeaderValue::try_from(cookie) {
                    response.headers_mut().insert(header::SET_COOKIE, v);
                }
                return response;
            }
            let what = match &verified.session.purpose {
                Purpose::Login => "Sign-in authorized.".to_string(),
                Purpose::Message(m) => format!("{} — authorized.", m.title),
                Purpose::Transaction(t) => format!("{} to {} — authorized.", t.amount, t.payee),
            };
            session_page(
                &state,
                &visitor,
                StatusCode::OK,
                &verified.session,
                outcome(true, what),
                None,
            )
            .into_response()
        }
        Err(e) => {
            let r = refusal(e);
            // Show the session as it is now (attempts left, locked, …).
            match state.node.oob().session(&number).await {
                Ok(v) => session_page(
                    &state,
                    &visitor,
                    r.status,
                    &v,
                    outcome(false, r.sentence()),
                    form.next.as_deref(),
                )
                .coded(r.code)
                .into_response(),
                Err(_) => refused_page(&state, &visitor, &r).into_response(),
            }
        }
    }
}

/// `POST /s/{session}/cancel`: nothing is authorised; a payment's hold is released.
pub async fn cancel(
    State(state): State<AppState>,
    visitor: Visitor,
    WebPath(number): WebPath,
    headers: HeaderMap,
) -> Response {
    if let Err(page) = same_site(&state, &visitor, &headers) {
        return page.into_response();
    }
    match state.node.oob().cancel(&number).await {
        Ok(v) => {
            let result = outcome(true, "Cancelled: nothing was authorised.");
            session_page(&state, &visitor, StatusCode::OK, &v, result, None).into_response()
        }
        Err(e) => {
            let r = refusal(e);
            match state.node.oob().session(&number).await {
                Ok(v) => session_page(
                    &state,
                    &visitor,
                    r.status,
                    &v,
                    outcome(false, r.sentence()),
                    None,
                )
                .coded(r.code)
                .into_response(),
                Err(_) => refused_page(&state, &visitor, &r).into_response(),
            }
        }
    }
}

/// Money of `minor` units in `currency`, as people read it.
pub(crate) fn money(minor: i64, currency: tally_kernel::Currency) -> String {
    tally_kernel::Amount::new(minor, currency).to_string()
}

/// A message in a dev inbox, as the page shows it.
pub(crate) struct InboxLine {
    pub(crate) subject: String,
    pub(crate) body: String,
}

/// `templates/web/inbox.html`.
#[derive(Template)]
#[template(path = "web/inbox.html")]
struct InboxTemplate<'a> {
    frame: Frame,
    address: &'a str,
    messages: Vec<InboxLine>,
}

/// `GET /dev/inbox/{address}`: a dev node's inbox (newest first), for a visitor with only a
/// browser. Refused (the API's `disabled`) on a node without `--dev`.
pub async fn dev_inbox(
    State(state): State<AppState>,
    visitor: Visitor,
    WebPath(address): WebPath,
) -> Response {
    match state.node.any_dev_inbox(&address, 20).await {
        Ok(messages) => Page::of(
            StatusCode::OK,
            &InboxTemplate {
                frame: Frame::new(&state, &visitor, vec![crumb("Dev inbox", "")]),
                address: &address,
                messages: messages
                    .into_iter()
                    .map(|m| InboxLine {
                        subject: m.message.subject,
                        body: m.message.body,
                    })
                    .collect(),
            },
        )
        .into_response(),
        Err(e) => refused_page(&state, &visitor, &refusal(e)).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_code_drops_only_group_separators() {
        let cases = [
            ("12345678", "12345678"),
            (" 1234 5678 ", "12345678"),
            ("1234-5678", "12345678"),
            ("1234\t5678\n", "12345678"),
            ("12a45678", "12a45678"),
            ("", ""),
        ];
        for (input, expected) in cases {
            assert_eq!(typed_code(input), expected, "{input:?}");
        }
        assert_eq!(typed_code(&"1".repeat(1000)).len(), CODE_LEN_MAX);
    }

    #[test]
    fn refusals_read_like_the_api_and_say_what_to_try() {
        use tally_proto::oob::OobError;
        use tally_service::ServiceError;
        let cases = [
            (
                OobError::WrongCode { attempts_left: 4 },
                StatusCode::UNPROCESSABLE_ENTITY,
                "wrong code (4 attempts left)",
            ),
            (
                OobError::TooManyAttempts,
                StatusCode::LOCKED,
                "too many wrong codes; the session is locked",
            ),
            (
                OobError::SessionClosed,
                StatusCode::CONFLICT,
                "the session is closed",
            ),
        ];
        for (e, status, message) in cases {
            let r = refusal(ServiceError::Oob(e));
            assert_eq!((r.status, r.message.as_str()), (status, message));
            assert_eq!(
                r.sentence(),
                format!("{message} — {}", super::super::advice(r.code))
            );
        }
        let r = refusal(ServiceError::Oob(OobError::ApiMisuse("secret detail")));
        assert_eq!(
            (r.status, r.code, r.message.as_str()),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                crate::error::ErrorCode::Internal,
                "internal error"
            )
        );
    }
}
