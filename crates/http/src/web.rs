//! The node's own web page for out-of-band authentication (SPEC A1–A7): channel A for people
//! without the CLI or a merchant's terminal. Plain server-rendered HTML with a little inline CSS,
//! no JavaScript.
//!
//! ```text
//! GET  /                    sign-in form (user)          → POST /web/login
//! POST /web/login           oob_open(login)              → 303 /s/{session}
//! GET  /s/{session}         what is being authorised, in clear; code form, cancel form
//! POST /s/{session}         oob_verify(code, the shown transaction) → result page
//! POST /s/{session}/cancel  oob_cancel                   → result page
//! ```
//!
//! Key decision: the page is another transport over the same node calls as the JSON API
//! (`crate::oob`), with the same capability model: the 128-bit session number in the URL is
//! channel A's capability and the code is channel B's proof, so the page needs no cookies and no
//! API key (and there is no ambient authority for a cross-site request to ride on). Refusals go
//! through [`ApiError::from`], so the page says what the API says (`wrong code (4 attempts
//! left)`) with the same status (422/410/423/409) and internal causes stay in the log.
//!
//! Security: every value that reaches HTML is escaped by its template; the number the page
//! embeds in its forms is the node's own hex, never the raw path. Each response carries a CSP that
//! allows no scripts, no external resources, no framing and forms to this origin only;
//! `Cache-Control: no-store` (a login page shows an access token once) and
//! `Referrer-Policy: no-referrer` (the URL holds the session number).
//!
//! The pages are askama templates (`crates/http/templates/web/`: one layout, then a template
//! per page), escaping every value by default; the web face of issue [9] grows on the same
//! layout (`docs/web.md`). Rejected: JavaScript (nothing here needs it, and a CSP without
//! scripts is the strongest XSS defence).

use askama::Template;
use axum::Router;
use axum::extract::rejection::{FormRejection, PathRejection};
use axum::extract::{Form, Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tally_proto::oob::Purpose;
use tally_service::ServiceError;
use tally_service::oob::{AppRequest, OpenSession, Opened, SessionView};

use crate::AppState;
use crate::error::{ApiError, ErrorCode};

/// The page's Content-Security-Policy: inline CSS only, forms to this origin, no framing.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";

/// Most characters of a typed code the page passes on (the service refuses more than 32).
const CODE_LEN_MAX: usize = 64;

/// The web page's routes (HTML; not part of the JSON API or its OpenAPI document).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/web/login", post(login))
        .route("/s/{session}", get(show).post(confirm))
        .route("/s/{session}/cancel", post(cancel))
}

/// `POST /web/login`.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    /// Who signs in.
    pub user: String,
}

/// `POST /s/{session}`.
#[derive(Debug, Deserialize)]
pub struct CodeForm {
    /// The code from channel B, as typed.
    pub code: String,
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
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

/// An HTML page on its way out.
struct Page {
    status: StatusCode,
    /// For refusals: the API's code, so the metrics count web refusals like API ones.
    code: Option<ErrorCode>,
    /// The whole document, rendered from its template (`templates/web/`).
    html: String,
}

impl Page {
    /// `template` rendered as the page (a template that cannot render is a bug: an internal
    /// error page, logged).
    fn of(status: StatusCode, template: &impl Template) -> Page {
        match template.render() {
            Ok(html) => Page {
                status,
                code: None,
                html,
            },
            Err(e) => {
                let e = ApiError::internal(&e);
                Page {
                    status: e.status(),
                    code: Some(e.code()),
                    html: format!(
                        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
                         <title>Tally — error</title></head><body><main><h1>Something is not \
                         right</h1><p id=\"result\" role=\"alert\">{}</p></main></body></html>\n",
                        escape(&e.body().error.message)
                    ),
                }
            }
        }
    }

    fn coded(mut self, code: ErrorCode) -> Page {
        self.code = Some(code);
        self
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            self.html,
        )
            .into_response();
        secure_headers(response.headers_mut());
        if let Some(code) = self.code {
            response.extensions_mut().insert(code);
        }
        response
    }
}

fn secure_headers(headers: &mut axum::http::HeaderMap) {
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (
            HeaderName::from_static("x-frame-options"),
            HeaderValue::from_static("DENY"),
        ),
    ];
    for (name, value) in set {
        headers.insert(name, value);
    }
}

/// A refusal as the API gives it: status, code and the message for people (internal causes
/// are logged by [`ApiError::from`] and read "internal error" here).
struct Refusal {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

fn refusal(e: ServiceError) -> Refusal {
    let e = ApiError::from(e);
    Refusal {
        status: e.status(),
        code: e.code(),
        message: e.body().error.message,
    }
}

/// `templates/web/error.html`.
#[derive(Template)]
#[template(path = "web/error.html")]
struct ErrorTemplate<'a> {
    message: &'a str,
}

fn error_page(status: StatusCode, message: &str) -> Page {
    Page::of(status, &ErrorTemplate { message })
}

fn refused_page(r: &Refusal) -> Page {
    error_page(r.status, &r.message).coded(r.code)
}

/// The `{session}` of a page's path; a malformed path is answered with an HTML page.
pub struct SessionPath(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for SessionPath {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(number)) => Ok(SessionPath(number)),
            Err(e) => Err(bad_path(&e).into_response()),
        }
    }
}

fn bad_path(e: &PathRejection) -> Page {
    error_page(
        StatusCode::BAD_REQUEST,
        &format!("bad address: {}", e.body_text()),
    )
}

fn bad_form(e: &FormRejection) -> Page {
    // Form rejections say which field is missing or malformed; never an internal cause.
    let status = match e.status() {
        s if s.is_client_error() => s,
        _ => StatusCode::BAD_REQUEST,
    };
    error_page(status, &format!("bad form: {}", e.body_text()))
}

/// `templates/web/home.html`: the sign-in form.
#[derive(Template)]
#[template(path = "web/home.html")]
struct HomeTemplate<'a> {
    user: &'a str,
    error: Option<&'a str>,
}

fn home_page(status: StatusCode, user: &str, error: Option<&str>) -> Page {
    Page::of(status, &HomeTemplate { user, error })
}

/// `GET /`: the sign-in form.
pub async fn home() -> Response {
    home_page(StatusCode::OK, "", None).into_response()
}

/// `POST /web/login`: opens a login session and sends the code to channel B.
pub async fn login(
    State(state): State<AppState>,
    client: Option<axum::Extension<crate::middleware::ClientAddress>>,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let client = client.and_then(|c| c.0.0);
    let Form(form) = match form {
        Ok(f) => f,
        Err(e) => return bad_form(&e).into_response(),
    };
    let user = form.user.trim().to_string();
    let request = OpenSession {
        user: user.clone(),
        app: AppRequest::Login,
        channel: None,
        certificate: None,
    };
    match state.node.oob().open(None, None, request, client).await {
        Ok(Opened::Secured { session, .. }) => {
            Redirect::to(&format!("/s/{}", session.session)).into_response()
        }
        Ok(Opened::Normal { .. }) => {
            // A login always waits for a code; a "normal" outcome would be a service bug.
            let e = ApiError::internal(&"a web login was executed without a code");
            error_page(e.status(), &e.body().error.message)
                .coded(e.code())
                .into_response()
        }
        Err(e) => {
            let r = refusal(e);
            home_page(r.status, &user, Some(&r.message))
                .coded(r.code)
                .into_response()
        }
    }
}

/// One line of a session's details.
struct Row {
    term: &'static str,
    id: &'static str,
    value: String,
    /// Shown as code (ids, digests).
    code: bool,
    /// Shown large (the amount).
    amount: bool,
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
fn session_details(v: &SessionView) -> Vec<Row> {
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
fn channel_words(channel: &str) -> &'static str {
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
    /// A login's access token, shown once.
    token: Option<String>,
}

fn outcome(ok: bool, text: impl Into<String>) -> Option<Outcome> {
    Some(Outcome {
        ok,
        text: text.into(),
        token: None,
    })
}

/// `templates/web/session.html`: details, then (while open) the code form and the cancel form.
#[derive(Template)]
#[template(path = "web/session.html")]
struct SessionTemplate<'a> {
    /// The node's own hex, not the path as typed: only [0-9a-f] reaches the form URLs.
    number: &'a str,
    open: bool,
    channel: &'static str,
    code_len_max: usize,
    rows: Vec<Row>,
    result: Option<Outcome>,
}

fn session_page(status: StatusCode, v: &SessionView, result: Option<Outcome>) -> Page {
    Page::of(
        status,
        &SessionTemplate {
            number: &v.session,
            open: v.state == tally_proto::oob::State::Open,
            channel: channel_words(&v.channel),
            code_len_max: CODE_LEN_MAX,
            rows: session_details(v),
            result,
        },
    )
}

/// `GET /s/{session}`: what the code authorises.
pub async fn show(State(state): State<AppState>, SessionPath(number): SessionPath) -> Response {
    match state.node.oob().session(&number).await {
        Ok(v) => session_page(StatusCode::OK, &v, None).into_response(),
        Err(e) => refused_page(&refusal(e)).into_response(),
    }
}

/// `POST /s/{session}`: the code typed back.
pub async fn confirm(
    State(state): State<AppState>,
    SessionPath(number): SessionPath,
    form: Result<Form<CodeForm>, FormRejection>,
) -> Response {
    let Form(form) = match form {
        Ok(f) => f,
        Err(e) => return bad_form(&e).into_response(),
    };
    // The transaction this page showed is passed back, so the node checks that the code is
    // confirmed for exactly that transaction (integrity, SPEC A4).
    let shown = match state.node.oob().session(&number).await {
        Ok(v) => v,
        Err(e) => return refused_page(&refusal(e)).into_response(),
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
            let what = match &verified.session.purpose {
                Purpose::Login => "Sign-in authorized.".to_string(),
                Purpose::Message(m) => format!("{} — authorized.", m.title),
                Purpose::Transaction(t) => format!("{} to {} — authorized.", t.amount, t.payee),
            };
            let result = Outcome {
                ok: true,
                text: what,
                token: verified.token.as_ref().map(|t| t.expose().clone()),
            };
            session_page(StatusCode::OK, &verified.session, Some(result)).into_response()
        }
        Err(e) => {
            let r = refusal(e);
            let result = outcome(false, r.message.clone());
            // Show the session as it is now (attempts left, locked, …).
            match state.node.oob().session(&number).await {
                Ok(v) => session_page(r.status, &v, result)
                    .coded(r.code)
                    .into_response(),
                Err(_) => refused_page(&r).into_response(),
            }
        }
    }
}

/// `POST /s/{session}/cancel`: nothing is authorised; a payment's hold is released.
pub async fn cancel(State(state): State<AppState>, SessionPath(number): SessionPath) -> Response {
    match state.node.oob().cancel(&number).await {
        Ok(v) => {
            let result = outcome(true, "Cancelled: nothing was authorised.");
            session_page(StatusCode::OK, &v, result).into_response()
        }
        Err(e) => {
            let r = refusal(e);
            let result = outcome(false, r.message.clone());
            match state.node.oob().session(&number).await {
                Ok(v) => session_page(r.status, &v, result)
                    .coded(r.code)
                    .into_response(),
                Err(_) => refused_page(&r).into_response(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_the_five_characters_and_leaves_the_rest() {
        let cases = [
            ("", ""),
            ("alice", "alice"),
            (
                "<script>alert('x')</script>",
                "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;",
            ),
            ("a & b", "a &amp; b"),
            ("\"quoted\"", "&quot;quoted&quot;"),
            ("&amp;", "&amp;amp;"),
            ("Blåbær-Tasse 12,50 €", "Blåbær-Tasse 12,50 €"),
            ("\" onmouseover=\"x", "&quot; onmouseover=&quot;x"),
        ];
        for (input, expected) in cases {
            assert_eq!(escape(input), expected, "{input:?}");
        }
    }

    #[test]
    fn escaped_text_has_no_markup_left() {
        let nasty = "<>&\"'`=/\u{0}\n";
        let out = escape(nasty);
        assert!(!out.contains(['<', '>', '"', '\'']), "{out}");
        assert_eq!(
            out.matches('&').count(),
            5,
            "each escape starts one entity: {out}"
        );
    }

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
    fn pages_carry_the_security_headers_and_their_status() {
        let response = error_page(StatusCode::LOCKED, "<b>locked</b>").into_response();
        assert_eq!(response.status(), StatusCode::LOCKED);
        let h = response.headers();
        assert_eq!(
            h.get(header::CONTENT_SECURITY_POLICY)
                .and_then(|v| v.to_str().ok()),
            Some(CONTENT_SECURITY_POLICY)
        );
        assert_eq!(
            h.get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()),
            Some("no-store")
        );
        assert_eq!(
            h.get(header::X_CONTENT_TYPE_OPTIONS)
                .and_then(|v| v.to_str().ok()),
            Some("nosniff")
        );
        assert_eq!(
            h.get(header::REFERRER_POLICY).and_then(|v| v.to_str().ok()),
            Some("no-referrer")
        );
        assert_eq!(
            h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            Some("text/html; charset=utf-8")
        );
    }

    #[test]
    fn refusals_read_like_the_api() {
        use tally_proto::oob::OobError;
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
        }
        let r = refusal(ServiceError::Oob(OobError::ApiMisuse("secret detail")));
        assert_eq!(
            (r.status, r.code, r.message.as_str()),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "internal error"
            )
        );
    }
}
