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
//! Security: every string that reaches HTML goes through [`escape`]; the number the page embeds
//! in its forms is the node's own hex, never the raw path. Each response carries a CSP that
//! allows no scripts, no external resources, no framing and forms to this origin only;
//! `Cache-Control: no-store` (a login page shows an access token once) and
//! `Referrer-Policy: no-referrer` (the URL holds the session number).
//!
//! Rejected: a template engine (one more dependency for five small pages) and JavaScript
//! (nothing here needs it, and a CSP without scripts is the strongest XSS defence).

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
    title: &'static str,
    /// Already-escaped HTML of `<main>`.
    main: String,
}

impl Page {
    fn coded(mut self, code: ErrorCode) -> Page {
        self.code = Some(code);
        self
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let html = format!(
            "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{main}\n\
             </main>\n</body>\n</html>\n",
            title = escape(self.title),
            main = self.main,
        );
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
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

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1b1d21}\
main{max-width:34rem;margin:2rem auto;padding:1.5rem 2rem;background:#fff;border-radius:8px;\
box-shadow:0 1px 3px rgba(0,0,0,.12)}h1{font-size:1.4rem;margin-top:0}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.35rem 1rem}dt{color:#5b616b}\
dd{margin:0;overflow-wrap:anywhere}.amount{font-size:1.3rem;font-weight:600}\
label{display:block;margin:1rem 0 .3rem}\
input{font-size:1.2rem;padding:.4rem .6rem;width:100%;box-sizing:border-box}\
button{font-size:1rem;padding:.5rem 1.2rem;margin-top:.8rem;cursor:pointer}\
form.inline{display:inline}.result{padding:.6rem .8rem;border-radius:6px;background:#e7f5ea}\
.result.error{background:#fdecea}code{overflow-wrap:anywhere}.muted{color:#5b616b}";

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

fn error_page(status: StatusCode, message: &str) -> Page {
    Page {
        status,
        code: None,
        title: "Tally — error",
        main: format!(
            "<h1>Something is not right</h1>\n<p id=\"result\" class=\"result error\" \
             role=\"alert\">{}</p>\n<p><a href=\"/\">Back to sign-in</a></p>",
            escape(message)
        ),
    }
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

fn login_form(user: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/web/login\">\n<label for=\"user\">User name</label>\n\
         <input name=\"user\" id=\"user\" value=\"{}\" autocomplete=\"username\" \
         autocapitalize=\"none\" spellcheck=\"false\" maxlength=\"200\" required autofocus>\n\
         <button type=\"submit\" id=\"open\">Send me a code</button>\n</form>",
        escape(user)
    )
}

fn home_page(status: StatusCode, user: &str, error: Option<&str>) -> Page {
    let error = error.map_or_else(String::new, |m| {
        format!(
            "<p id=\"result\" class=\"result error\" role=\"alert\">{}</p>\n",
            escape(m)
        )
    });
    Page {
        status,
        code: None,
        title: "Tally — confirm with a code",
        main: format!(
            "<h1>Tally — confirm with a code</h1>\n{error}<p>Sign in: we send a one-time code to \
             the second channel you registered (e-mail, SMS, …). Type it on the next page.</p>\n{}",
            login_form(user)
        ),
    }
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

fn dl_row(term: &str, id: &str, value_html: &str) -> String {
    format!("<dt>{term}</dt><dd id=\"{id}\">{value_html}</dd>\n")
}

/// What is being authorised, in clear, and the session's facts.
fn session_details(v: &SessionView) -> String {
    let mut dl = String::from("<dl>\n");
    dl.push_str(&dl_row(
        "Application",
        "application",
        &escape(&v.application),
    ));
    dl.push_str(&dl_row("User", "session-user", &escape(&v.user)));
    match &v.purpose {
        Purpose::Login => dl.push_str(&dl_row("What", "what", "sign in")),
        Purpose::Message(m) => {
            dl.push_str(&dl_row("Title", "title", &escape(&m.title)));
            dl.push_str(&dl_row(
                "Content SHA-256",
                "sha256",
                &format!("<code>{}</code>", escape(&m.sha256)),
            ));
        }
        Purpose::Transaction(t) => {
            dl.push_str(&format!(
                "<dt>Amount</dt><dd id=\"amount\" class=\"amount\">{}</dd>\n",
                escape(&t.amount.to_string())
            ));
            dl.push_str(&dl_row("Payee", "payee", &escape(&t.payee)));
            if let Some(a) = t.payee_account {
                dl.push_str(&dl_row(
                    "Payee account",
                    "payee-account",
                    &format!("<code>{}</code>", escape(&a.to_string())),
                ));
            }
            if let Some(a) = t.payer_account {
                dl.push_str(&dl_row(
                    "From account",
                    "payer-account",
                    &format!("<code>{}</code>", escape(&a.to_string())),
                ));
            }
            dl.push_str(&dl_row(
                "Description",
                "description",
                &escape(&t.description),
            ));
        }
    }
    dl.push_str(&dl_row(
        "Code sent to",
        "address",
        &format!("{} ({})", escape(&v.address), escape(&v.channel)),
    ));
    let delivery = match (v.delivery.as_str(), &v.delivery_error) {
        ("sent", _) => "sent".to_string(),
        ("failed", _) => "could not be delivered; cancel and start again".to_string(),
        (_, Some(why)) => format!("not delivered yet, retrying ({why})"),
        (other, None) => other.to_string(),
    };
    dl.push_str(&dl_row("Delivery", "delivery", &escape(&delivery)));
    dl.push_str(&dl_row(
        "Expires",
        "expires",
        &escape(&v.expires_at.to_rfc3339()),
    ));
    dl.push_str(&dl_row(
        "Attempts left",
        "attempts-left",
        &v.attempts_left.to_string(),
    ));
    dl.push_str(&dl_row("State", "state", v.state.as_str()));
    dl.push_str("</dl>\n");
    dl
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

/// The session page: details, then (while open) the code form and the cancel form. `result`
/// is already-escaped HTML of the outcome paragraph, if any.
fn session_page(status: StatusCode, v: &SessionView, result: &str) -> Page {
    // The node's own hex, not the path as typed: only [0-9a-f] reaches the URLs below.
    let number = escape(&v.session);
    let open = v.state == tally_proto::oob::State::Open;
    let intro = if open {
        "Check that this is what you want to authorise, then type the code we sent you."
    } else {
        "This session takes no more codes."
    };
    let forms = if open {
        format!(
            "<form method=\"post\" action=\"/s/{number}\">\n<label for=\"code\">Code from your \
             {channel}</label>\n<input name=\"code\" id=\"code\" inputmode=\"numeric\" \
             autocomplete=\"one-time-code\" maxlength=\"{CODE_LEN_MAX}\" required autofocus>\n\
             <button type=\"submit\" id=\"confirm\">Confirm</button>\n</form>\n\
             <form class=\"inline\" method=\"post\" action=\"/s/{number}/cancel\">\n\
             <button type=\"submit\" id=\"cancel\">Cancel</button>\n</form>",
            channel = channel_words(&v.channel),
        )
    } else {
        String::new()
    };
    Page {
        status,
        code: None,
        title: "Tally — confirm with a code",
        main: format!(
            "<h1>Confirm with a code</h1>\n{result}<p class=\"muted\">{intro}</p>\n{}{forms}",
            session_details(v)
        ),
    }
}

fn result_html(ok: bool, text_html: &str) -> String {
    let class = if ok { "result" } else { "result error" };
    let role = if ok { "status" } else { "alert" };
    format!("<p id=\"result\" class=\"{class}\" role=\"{role}\">{text_html}</p>\n")
}

/// `GET /s/{session}`: what the code authorises.
pub async fn show(State(state): State<AppState>, SessionPath(number): SessionPath) -> Response {
    match state.node.oob().session(&number).await {
        Ok(v) => session_page(StatusCode::OK, &v, "").into_response(),
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
                Purpose::Message(m) => format!("{} — authorized.", escape(&m.title)),
                Purpose::Transaction(t) => format!(
                    "{} to {} — authorized.",
                    escape(&t.amount.to_string()),
                    escape(&t.payee)
                ),
            };
            let mut result = result_html(true, &what);
            if let Some(token) = &verified.token {
                result.push_str(&format!(
                    "<p>Your access token (shown once; it expires soon):<br>\
                     <code id=\"token\">{}</code></p>\n",
                    escape(token.expose())
                ));
            }
            session_page(StatusCode::OK, &verified.session, &result).into_response()
        }
        Err(e) => {
            let r = refusal(e);
            let result = result_html(false, &escape(&r.message));
            // Show the session as it is now (attempts left, locked, …).
            match state.node.oob().session(&number).await {
                Ok(v) => session_page(r.status, &v, &result)
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
            let result = result_html(true, "Cancelled: nothing was authorised.");
            session_page(StatusCode::OK, &v, &result).into_response()
        }
        Err(e) => {
            let r = refusal(e);
            let result = result_html(false, &escape(&r.message));
            match state.node.oob().session(&number).await {
                Ok(v) => session_page(r.status, &v, &result)
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
