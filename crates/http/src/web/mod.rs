//! The node's web face (issue [9], `docs/web.md`): server-rendered pages for people, served by
//! `tally serve` beside the JSON API, usable without JavaScript.
//!
//! ```text
//! GET  /                      the shop: products on sale; sign-in by user name or address
//! POST /web/login             oob_open(login)                 → 303 /s/{session}
//! POST /web/guest             sign-in by e-mail/phone ([2])   → 303 /s/{session}
//! GET  /s/{session}           what is being authorised, in clear; code form, cancel form
//! POST /s/{session}           oob_verify; a sign-in sets the session cookie → 303 next
//! POST /s/{session}/cancel    oob_cancel
//! POST /web/logout            the session cookie's token revoked
//! GET  /me                    who is signed in, accounts, waiting confirmations, purchases
//! GET  /me/accounts/{id}      the statement: transfers, balance after each, chart; `.csv`
//! GET  /me/receipts/{tx}      a receipt, verified; `/receipt.tally` the package file
//! GET  /dev/inbox/{address}   a dev node's inbox (`--dev` only), to read codes in a browser
//! GET  /p/{product}           product page; POST /p/{product}/buy → 303 /checkout/{sale}
//! GET  /checkout/{sale}       download, payment instructions (QR), pay, status, key
//! GET  /shop                  a merchant's products; new product; POST …/entries uploads
//! GET  /shop/sales            sales (filters, chart per day, CSV), held payments, overdue
//! GET  /console               the operator's console (admin key sign-in at POST /console/login)
//! ```
//!
//! * [`signin`]: the out-of-band pages (sign-in, a session's code form), sign-out.
//! * [`me`]: the customer's pages (`/me`, statements).
//! * [`shop`]: the merchant's pages (products, uploads, sales, refunds).
//! * [`console`]: the operator's console.
//! * [`chart`]: balance-over-time charts as inline SVG.
//! * [`checkout`]: the public purchase of a locked package (SPEC D1–D10).
//! * [`messages`]: what to try next, for every API error code.
//! * [`qr`]: payment instructions as an SVG QR code.
//!
//! Key decisions:
//! * **One transport over the same calls.** Pages call the node as the JSON API does, with the
//!   same principal; refusals go through [`ApiError::from`], so a page says what the API says
//!   (`wrong code (4 attempts left)`) with the same status, plus what to try.
//! * **The web session is a sign-in's access token** (`tally_session_…`, SPEC A1 login), kept in
//!   an `HttpOnly; SameSite=Strict` cookie. The node stores only its hash, in the database, so
//!   every `tally serve` of one database accepts it, a restart keeps it, sign-out revokes it
//!   everywhere, and a cookie of another node's database is simply unknown. No second session
//!   table, no cookie signing key.
//! * **CSRF**: every form of a signed-in page carries `csrf = HMAC-SHA256(token, action)`, checked
//!   in constant time; without the token's secret nobody can make one, and one form's token does
//!   not work for another action. `SameSite=Strict` is the second wall; a `POST` whose browser
//!   says `Sec-Fetch-Site: cross-site` is refused before anything runs (the third, and the only
//!   one for the anonymous sign-in forms).
//! * **Retries are idempotent**: forms that move money or make a sale carry a random `nonce`
//!   made when the page was rendered, which becomes the request's idempotency key; the same
//!   form sent twice (a double click, a reload) is the same request.
//!
//! Security: every value that reaches HTML is escaped by its template (askama); ids in URLs are
//! the node's own rendering, never the raw path. Each response carries a CSP that allows no
//! scripts, no external resources, no framing and forms to this origin only;
//! `Cache-Control: no-store`, `Referrer-Policy: no-referrer` (URLs hold session numbers).

mod chart;
mod checkout;
mod console;
mod me;
mod messages;
mod qr;
mod shop;
mod signin;

pub(crate) use checkout::package;
pub use messages::advice;
pub(crate) use shop::{part_status, put_part, upload};
pub use signin::{CodeForm, LoginForm, typed_code};

use askama::Template;
use axum::Router;
use axum::extract::FromRequestParts;
use axum::extract::rejection::{FormRejection, PathRejection};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tally_kernel::crypto::kdf::{hmac_sha256, hmac_sha256_verify};
use tally_service::{Principal, ServiceError};

use crate::AppState;
use crate::error::{ApiError, ErrorCode};

/// The pages' Content-Security-Policy: inline CSS only, forms to this origin, no framing.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";

/// The policy of a page with one of the node's own scripts (`/assets/…`, no inline script),
/// which may call back to this origin only.
pub const SCRIPTED_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
     script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'";

/// The checkout page's script: reloads the page when the sale's state changes.
const CHECKOUT_JS: &str = include_str!("../../assets/checkout.js");

/// The upload form's script: sends the form with a progress bar.
const UPLOAD_JS: &str = include_str!("../../assets/upload.js");

/// The session cookie: a sign-in's access token.
pub const SESSION_COOKIE: &str = "tally_web";

/// The session cookie's name on a node serving HTTPS: the `__Host-` prefix makes the browser
/// refuse one set by another host (a sibling subdomain) or for a narrower path.
pub const SECURE_SESSION_COOKIE: &str = "__Host-tally_web";

/// The session cookie's name on this node.
pub(crate) fn cookie_name(secure: bool) -> &'static str {
    if secure {
        SECURE_SESSION_COOKIE
    } else {
        SESSION_COOKIE
    }
}

/// Domain of the forms' CSRF tokens.
const CSRF_DOMAIN: &[u8] = b"tally/web-form/v1\0";

/// The web face's routes (HTML; not part of the JSON API or its OpenAPI document).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(signin::home))
        .route("/web/login", post(signin::login))
        .route("/web/guest", post(signin::guest))
        .route("/web/logout", post(signin::logout))
        .route("/s/{session}", get(signin::show).post(signin::confirm))
        .route("/s/{session}/cancel", post(signin::cancel))
        .route("/me", get(me::me))
        .route("/me/accounts/{id}", get(me::statement))
        .route("/me/accounts/{id}/statement.csv", get(me::statement_csv))
        .route("/me/receipts/{tx}", get(me::receipt))
        .route("/me/receipts/{tx}/receipt.tally", get(me::receipt_file))
        .route("/shop", get(shop::shop))
        .route("/shop/products", post(shop::create))
        .route("/shop/products/{id}", get(shop::product))
        .route("/shop/products/{id}/publish", post(shop::publish))
        .route("/shop/products/{id}/withdraw", post(shop::withdraw))
        .route("/shop/sales", get(shop::sales))
        .route("/shop/sales.csv", get(shop::sales_csv))
        .route("/shop/payments/{id}/refund", post(shop::refund))
        .route("/assets/upload-1.js", get(upload_js))
        .route("/console", get(console::console))
        .route("/console/login", post(console::login))
        .route("/console/audit", post(console::audit))
        .route("/console/keys/{id}/revoke", post(console::revoke_key))
        .route("/dev/inbox/{address}", get(signin::dev_inbox))
        .route("/p/{product}", get(checkout::product))
        .route("/p/{product}/buy", post(checkout::buy))
        .route("/checkout/{sale}", get(checkout::checkout))
        .route("/checkout/{sale}/state", get(checkout::state))
        .route("/assets/checkout-1.js", get(checkout_js))
        .route("/checkout/{sale}/pay", post(checkout::pay))
        .route(
            "/checkout/{sale}/key",
            get(checkout::key).post(checkout::resend_key),
        )
}

// ---------------------------------------------------------------------------------------------
// Pages.

/// An HTML page on its way out.
pub(crate) struct Page {
    status: StatusCode,
    /// For refusals: the API's code, so the metrics count web refusals like API ones.
    code: Option<ErrorCode>,
    /// The whole document, rendered from its template (`templates/web/`).
    html: String,
    /// A `Set-Cookie` to send with it.
    cookie: Option<String>,
    /// The page loads one of the node's scripts ([`SCRIPTED_POLICY`]).
    scripted: bool,
}

impl Page {
    /// `template` rendered as the page (a template that cannot render is a bug: an internal
    /// error page, logged).
    pub(crate) fn of(status: StatusCode, template: &impl Template) -> Page {
        match template.render() {
            Ok(html) => Page {
                status,
                code: None,
                html,
                cookie: None,
                scripted: false,
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
                    cookie: None,
                    scripted: false,
                }
            }
        }
    }

    pub(crate) fn coded(mut self, code: ErrorCode) -> Page {
        self.code = Some(code);
        self
    }

    /// The page loads one of the node's own scripts.
    pub(crate) fn scripted(mut self, scripted: bool) -> Page {
        self.scripted = scripted;
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
        if self.scripted {
            response.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(SCRIPTED_POLICY),
            );
        }
        if let Some(cookie) = self.cookie.and_then(|c| HeaderValue::try_from(c).ok()) {
            response.headers_mut().insert(header::SET_COOKIE, cookie);
        }
        if let Some(code) = self.code {
            response.extensions_mut().insert(code);
        }
        response
    }
}

pub(crate) fn secure_headers(headers: &mut HeaderMap) {
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

/// A script of the node's own (the version is in its name: a change is a new name).
fn script(source: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400, immutable"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        source,
    )
        .into_response()
}

/// `GET /assets/checkout-1.js`.
async fn checkout_js() -> Response {
    script(CHECKOUT_JS)
}

/// `GET /assets/upload-1.js`.
async fn upload_js() -> Response {
    script(UPLOAD_JS)
}

/// Escapes text for HTML element content and quoted attribute values (the one page built
/// without a template: the error page when a template fails).
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

/// A link in the breadcrumbs.
pub(crate) struct Crumb {
    pub(crate) label: String,
    pub(crate) href: String,
}

pub(crate) fn crumb(label: impl Into<String>, href: impl Into<String>) -> Crumb {
    Crumb {
        label: label.into(),
        href: href.into(),
    }
}

/// What the layout shows around every page: who is signed in (with the sign-out form's
/// token), the breadcrumbs, and whether this is a dev node.
pub(crate) struct Frame {
    pub(crate) user: Option<String>,
    /// The visitor may use the merchant's pages.
    pub(crate) merchant: bool,
    /// The visitor is the operator (a console session).
    pub(crate) operator: bool,
    pub(crate) logout_csrf: String,
    pub(crate) crumbs: Vec<Crumb>,
    pub(crate) dev: bool,
}

impl Frame {
    pub(crate) fn new(state: &AppState, visitor: &Visitor, crumbs: Vec<Crumb>) -> Frame {
        Frame {
            user: visitor.signed_in().map(|s| s.display.clone()),
            merchant: visitor.signed_in().is_some_and(|s| s.merchant.is_some()),
            operator: visitor.signed_in().is_some_and(|s| s.by.is_admin()),
            logout_csrf: visitor.csrf("/web/logout"),
            crumbs,
            dev: state.node.is_dev(),
        }
    }
}

/// `templates/web/error.html`: what happened, what to try.
#[derive(Template)]
#[template(path = "web/error.html")]
struct ErrorTemplate<'a> {
    frame: Frame,
    message: &'a str,
    advice: &'static str,
}

/// A refusal as the API gives it: status, code and the message for people (internal causes
/// are logged by [`ApiError::from`] and read "internal error" here).
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl Refusal {
    /// The sentence a page shows: what happened, then what to try.
    pub(crate) fn sentence(&self) -> String {
        format!("{} — {}", self.message, advice(self.code))
    }
}

pub(crate) fn refusal(e: ServiceError) -> Refusal {
    api_refusal(&ApiError::from(e))
}

pub(crate) fn api_refusal(e: &ApiError) -> Refusal {
    Refusal {
        status: e.status(),
        code: e.code(),
        message: e.body().error.message,
    }
}

/// The error page for `r`, in the visitor's frame.
pub(crate) fn refused_page(state: &AppState, visitor: &Visitor, r: &Refusal) -> Page {
    let frame = Frame::new(state, visitor, Vec::new());
    Page::of(
        r.status,
        &ErrorTemplate {
            frame,
            message: &r.message,
            advice: advice(r.code),
        },
    )
    .coded(r.code)
}

fn plain_refusal(status: StatusCode, code: ErrorCode, message: String) -> Refusal {
    Refusal {
        status,
        code,
        message,
    }
}

pub(crate) fn bad_path(e: &PathRejection) -> Refusal {
    plain_refusal(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidRequest,
        format!("bad address: {}", e.body_text()),
    )
}

pub(crate) fn bad_form(e: &FormRejection) -> Refusal {
    // Form rejections say which field is missing or malformed; never an internal cause.
    let status = match e.status() {
        s if s.is_client_error() => s,
        _ => StatusCode::BAD_REQUEST,
    };
    plain_refusal(
        status,
        ErrorCode::InvalidRequest,
        format!("bad form: {}", e.body_text()),
    )
}

fn forbidden(message: &str) -> Refusal {
    plain_refusal(
        StatusCode::FORBIDDEN,
        ErrorCode::Forbidden,
        message.to_string(),
    )
}

/// The `{…}` of a page's path, as text; a malformed path is answered with an HTML page.
pub(crate) struct WebPath(pub(crate) String);

impl FromRequestParts<AppState> for WebPath {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(text)) => Ok(WebPath(text)),
            Err(e) => {
                let visitor = Visitor::from_request_parts(parts, state).await?;
                Err(refused_page(state, &visitor, &bad_path(&e)).into_response())
            }
        }
    }
}

/// A path segment to send a visitor back to (an id's characters only).
pub(crate) fn path_text(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect()
}

/// A form whose only field is its CSRF token (sign-out, publish, withdraw, refund, the key
/// sent again, the console's audit and revocations).
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    /// The form's CSRF token.
    #[serde(default)]
    pub csrf: String,
}

/// A 32-hex-digit id of a path, or the API's 404 for it.
pub(crate) fn path_id(text: &str, what: &'static str) -> Result<tally_kernel::Id, Refusal> {
    uuid::Uuid::parse_str(text)
        .map(tally_kernel::Id)
        .map_err(|_| {
            plain_refusal(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                format!("{what} not found"),
            )
        })
}

// ---------------------------------------------------------------------------------------------
// Who is visiting: the session cookie, CSRF, cross-site posts.

/// A signed-in visitor: the principal its token acts as, and the token (the CSRF key).
pub(crate) struct SignedIn {
    pub(crate) by: Principal,
    /// How the page names the visitor: the user name, or for a buyer signed in by address
    /// (a `guest-…` user) the address.
    pub(crate) display: String,
    /// The visitor as the merchant ([`tally_service::Node::as_merchant`], decided once per
    /// request), when its user holds a live merchant key.
    pub(crate) merchant: Option<Principal>,
    token: String,
}

/// Who is asking for a page: signed in (a live token in the session cookie) or not.
pub(crate) struct Visitor(Option<SignedIn>);

impl Visitor {
    pub(crate) fn signed_in(&self) -> Option<&SignedIn> {
        self.0.as_ref()
    }

    /// The CSRF token of a form posting to `action` (empty when nobody is signed in: the
    /// anonymous forms need none).
    pub(crate) fn csrf(&self, action: &str) -> String {
        self.0
            .as_ref()
            .map(|s| csrf_token(&s.token, action))
            .unwrap_or_default()
    }
}

fn csrf_token(token: &str, action: &str) -> String {
    hex::encode(hmac_sha256(
        token.as_bytes(),
        &[CSRF_DOMAIN, action.as_bytes()].concat(),
    ))
}

fn csrf_ok(token: &str, action: &str, presented: &str) -> bool {
    let Ok(tag) = hex::decode(presented.trim()) else {
        return false;
    };
    hmac_sha256_verify(
        token.as_bytes(),
        &[CSRF_DOMAIN, action.as_bytes()].concat(),
        &tag,
    )
}

/// The session cookie's value in `headers`, if any.
fn session_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(cookie, _)| *cookie == name)
        .map(|(_, value)| value)
}

impl FromRequestParts<AppState> for Visitor {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Some(token) = session_cookie(&parts.headers, cookie_name(state.secure_cookies)) else {
            return Ok(Visitor(None));
        };
        // Only a sign-in's or the console's token is taken from a cookie (never an API key
        // someone set there).
        if !token.starts_with(tally_service::oob::SESSION_TOKEN_PREFIX)
            && !token.starts_with(tally_service::node::CONSOLE_TOKEN_PREFIX)
        {
            return Ok(Visitor(None));
        }
        match state.node.authenticate(token).await {
            Ok(by) => {
                let display = if by
                    .owner
                    .starts_with(tally_service::oob::guest::GUEST_PREFIX)
                {
                    match state.node.oob().verified_address(&by.owner).await {
                        Ok((_, address)) => address,
                        Err(_) => by.owner.clone(),
                    }
                } else {
                    by.owner.clone()
                };
                let merchant = state.node.as_merchant(&by).await.ok();
                Ok(Visitor(Some(SignedIn {
                    by,
                    display,
                    merchant,
                    token: token.to_string(),
                })))
            }
            // Expired, signed out, or another node's: simply not signed in.
            Err(ServiceError::Unauthorized) => Ok(Visitor(None)),
            Err(e) => Err(refused_page(state, &Visitor(None), &refusal(e)).into_response()),
        }
    }
}

/// Refuses a `POST` its browser marks as cross-site (`Sec-Fetch-Site`), before anything runs.
pub(crate) fn same_site(
    state: &AppState,
    visitor: &Visitor,
    headers: &HeaderMap,
) -> Result<(), Page> {
    if cross_site(headers) {
        return Err(refused_page(state, visitor, &cross_site_refusal()));
    }
    Ok(())
}

/// A form posted to a page, refused as a page before anything runs when its browser says it
/// came from another site (`Sec-Fetch-Site: cross-site`) or when it does not parse.
pub(crate) struct WebForm<T>(pub(crate) T);

impl<T: serde::de::DeserializeOwned + Send> axum::extract::FromRequest<AppState> for WebForm<T> {
    type Rejection = Response;

    async fn from_request(
        request: axum::extract::Request,
        state: &AppState,
    ) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        // The visitor is looked up only to frame a refusal.
        let refuse = |parts: &mut Parts, refusal: Refusal| {
            let mut parts = parts.clone();
            async move {
                let visitor = Visitor::from_request_parts(&mut parts, state).await?;
                Err(refused_page(state, &visitor, &refusal).into_response())
            }
        };
        if cross_site(&parts.headers) {
            return refuse(&mut parts, cross_site_refusal()).await;
        }
        let request = axum::extract::Request::from_parts(parts.clone(), body);
        match axum::extract::Form::<T>::from_request(request, state).await {
            Ok(axum::extract::Form(form)) => Ok(WebForm(form)),
            Err(e) => refuse(&mut parts, bad_form(&e)).await,
        }
    }
}

fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get(HeaderName::from_static("sec-fetch-site"))
        .and_then(|v| v.to_str().ok())
        == Some("cross-site")
}

fn cross_site_refusal() -> Refusal {
    forbidden("a form sent from another site; nothing was done")
}

/// The signed-in visitor of a form posting to `action` with a valid CSRF token; otherwise the
/// refusal page (sign in first, or a forged or stale form). Nothing has run yet either way.
pub(crate) fn form_signer<'a>(
    state: &AppState,
    visitor: &'a Visitor,
    action: &str,
    csrf: &str,
) -> Result<&'a SignedIn, Page> {
    let Some(signed) = visitor.signed_in() else {
        return Err(refused_page(
            state,
            visitor,
            &plain_refusal(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "you are not signed in (or your sign-in expired)".into(),
            ),
        ));
    };
    if !csrf_ok(&signed.token, action, csrf) {
        return Err(refused_page(
            state,
            visitor,
            &forbidden(
                "this form is not from your current sign-in (forged, or from an older session); nothing was done",
            ),
        ));
    }
    Ok(signed)
}

/// The page a signed-out visitor is sent to: sign in, then come back to `next`.
pub(crate) fn sign_in_first(next: &str) -> Response {
    Redirect::to(&format!("/?next={}", url_path(next))).into_response()
}

/// A path to return to after signing in: this node's own page (`/p/…`, `/checkout/…`, `/me`),
/// never another site (`//host`, `https:`) nor anything but path characters.
pub(crate) fn safe_next(next: Option<&str>) -> Option<String> {
    let next = next?.trim();
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && next.len() <= 200
        && next
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_".contains(&b));
    ok.then(|| next.to_string())
}

/// `path` for a query value (it holds only characters [`safe_next`] allows, and `/`).
fn url_path(path: &str) -> String {
    safe_next(Some(path)).unwrap_or_else(|| "/me".into())
}

/// The `Set-Cookie` of a sign-in: the token, for this node's pages, for as long as it lives.
pub(crate) fn session_cookie_header(token: &str, max_age_s: i64, secure: bool) -> String {
    format!(
        "{}={token}; Path=/; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{}",
        cookie_name(secure),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` that ends the web session in the browser.
pub(crate) fn cleared_cookie(secure: bool) -> String {
    format!(
        "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{}",
        cookie_name(secure),
        if secure { "; Secure" } else { "" }
    )
}

/// A random form nonce (a v4 UUID's 32 hex digits): the idempotency key of what the form does.
pub(crate) fn nonce() -> String {
    tally_kernel::Id::new().0.simple().to_string()
}

/// A nonce as a form sent it back: 32 hex digits, or refused.
pub(crate) fn check_nonce(nonce: &str) -> Result<&str, Refusal> {
    if nonce.len() == 32 && nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(nonce)
    } else {
        Err(plain_refusal(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "bad form: the form's nonce is missing or malformed; reload the page".into(),
        ))
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
    fn pages_carry_the_security_headers_their_status_and_cookie() {
        let mut page = Page::of(
            StatusCode::LOCKED,
            &ErrorTemplate {
                frame: Frame {
                    user: None,
                    merchant: false,
                    operator: false,
                    logout_csrf: String::new(),
                    crumbs: Vec::new(),
                    dev: false,
                },
                message: "<b>locked</b>",
                advice: "wait",
            },
        );
        page.cookie = Some(session_cookie_header("tally_session_ab", 900, true));
        let response = page.into_response();
        assert_eq!(response.status(), StatusCode::LOCKED);
        let h = response.headers();
        let get = |name| h.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
        assert_eq!(
            get(header::CONTENT_SECURITY_POLICY),
            Some(CONTENT_SECURITY_POLICY)
        );
        assert_eq!(get(header::CACHE_CONTROL), Some("no-store"));
        assert_eq!(get(header::X_CONTENT_TYPE_OPTIONS), Some("nosniff"));
        assert_eq!(get(header::REFERRER_POLICY), Some("no-referrer"));
        assert_eq!(get(header::CONTENT_TYPE), Some("text/html; charset=utf-8"));
        assert_eq!(
            get(header::SET_COOKIE),
            Some(
                "__Host-tally_web=tally_session_ab; Path=/; Max-Age=900; HttpOnly; SameSite=Strict; Secure"
            )
        );
    }

    #[test]
    fn csrf_tokens_are_bound_to_the_session_and_the_action() {
        let token = "tally_session_0123";
        let t = csrf_token(token, "/p/x/buy");
        assert_eq!(t.len(), 64);
        assert!(csrf_ok(token, "/p/x/buy", &t));
        assert!(!csrf_ok(token, "/p/y/buy", &t), "another action");
        assert!(
            !csrf_ok("tally_session_0124", "/p/x/buy", &t),
            "another session"
        );
        assert!(!csrf_ok(token, "/p/x/buy", ""), "missing");
        assert!(!csrf_ok(token, "/p/x/buy", &t[..62]), "truncated");
        assert!(!csrf_ok(token, "/p/x/buy", "zz"), "not hex");
        // Golden value: HMAC-SHA256(token, "tally/web-form/v1\0" ‖ action).
        assert_eq!(
            csrf_token("k", "/a"),
            hex::encode(hmac_sha256(b"k", b"tally/web-form/v1\0/a"))
        );
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        assert_eq!(session_cookie(&h, SESSION_COOKIE), None);
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; tally_web=tally_session_x; b=2"),
        );
        assert_eq!(session_cookie(&h, SESSION_COOKIE), Some("tally_session_x"));
        assert_eq!(
            session_cookie(&h, SECURE_SESSION_COOKIE),
            None,
            "an HTTPS node reads only the __Host- cookie"
        );
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("tally_webx=1"));
        assert_eq!(session_cookie(&h, SESSION_COOKIE), None);
    }

    #[test]
    fn next_is_only_a_path_of_this_node() {
        let cases = [
            (Some("/p/abc"), Some("/p/abc")),
            (Some("/checkout/0a-b_c"), Some("/checkout/0a-b_c")),
            (Some("/me"), Some("/me")),
            (Some("//evil.example/x"), None),
            (Some("https://evil.example/"), None),
            (Some("/p/x?y=1"), None),
            (Some("/p/x\r\nSet-Cookie: a=b"), None),
            (Some("me"), None),
            (Some(""), None),
            (None, None),
        ];
        for (input, expected) in cases {
            assert_eq!(safe_next(input).as_deref(), expected, "{input:?}");
        }
    }

    #[test]
    fn path_text_keeps_only_id_characters() {
        assert_eq!(path_text("0195f3c2-7a10"), "0195f3c2-7a10");
        assert_eq!(path_text("x\"/><script>"), "xscript");
        assert_eq!(path_text(&"a".repeat(100)).len(), 40);
    }

    #[test]
    fn nonces_are_fresh_and_checked() {
        let (a, b) = (nonce(), nonce());
        assert_ne!(a, b);
        assert!(check_nonce(&a).is_ok());
        for bad in ["", "xyz", &a[..31], &format!("{a}0")] {
            assert!(check_nonce(bad).is_err(), "{bad:?}");
        }
    }
}
