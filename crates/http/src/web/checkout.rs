//! The public purchase of a locked package (SPEC D1–D10) for a member of the public: a
//! shareable product page, a sign-in by e-mail or phone with a code ([2]), the sale, the
//! package download (resumable), payment instructions with the reference code and a QR code,
//! payment from a Tally account confirmed by a code on the payer's second channel, or by bank
//! transfer quoting the reference; the page follows the sale to "paid" and shows the key.
//!
//! Decisions:
//! * The buyer is whoever signed in: a customer by user name, or a buyer by address (a guest
//!   user, see `tally_service::oob::guest`). The key goes to that user's verified address,
//!   the address the sign-in code went to, so the channel that proved the buyer is the one
//!   that receives the key.
//! * Paying from an account always asks for a code ([`Confirming`]), whatever the threshold
//!   rules: on the web the page is channel A and the code is what authorises money. The form's
//!   nonce is the payment's idempotency key, so "confirm, then send the same request again"
//!   (the API's rule) is the page's second submit, and a double submit pays once.
//! * While the sale waits for money, a small script of the node's own (`/assets/checkout-1.js`,
//!   allowed by the page's CSP, no inline script) asks `/checkout/{sale}/state` every 5 s and
//!   reloads the page when the state changes, so a bank transfer that arrives shows; without
//!   script, a "Check again" link does it. (A `<meta http-equiv="refresh">` would need no
//!   script, but reloading under a screen reader's feet fails WCAG 2.2.1; axe refuses it.)

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tally_kernel::Id;
use tally_proto::delivery::sale::{ProductState, SaleState};
use tally_proto::oob::Purpose;
use tally_service::ServiceError;
use tally_service::delivery::{Complaint, NewSale, PayReference, ProductView, SaleView};
use tally_service::oob::SessionView;
use tally_service::oob::gate::Confirming;

use super::signin::{Row, channel_words, money, session_details, typed_code};
use super::{
    CsrfForm, Frame, Page, Refusal, Visitor, WebForm, WebPath, check_nonce, crumb, form_signer,
    nonce, path_id, path_text, qr, refusal, refused_page, sign_in_first,
};
use crate::AppState;

/// `POST /p/{product}/buy`.
#[derive(Debug, Deserialize)]
pub struct BuyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    nonce: String,
}

/// `POST /checkout/{sale}/pay`: first the account, then (when a code was sent) the code.
#[derive(Debug, Deserialize)]
pub struct PayForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    nonce: String,
    account: String,
    /// The confirmation session the code was sent for.
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

/// Bytes as people read them.
pub(crate) fn size(bytes: i64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

// ---------------------------------------------------------------------------------------------
// The product page.

/// A file of the package as the product page lists it.
struct FileLine {
    name: String,
    size: String,
}

/// `templates/web/product.html`.
#[derive(Template)]
#[template(path = "web/product.html")]
struct ProductTemplate {
    frame: Frame,
    id: String,
    title: String,
    price: String,
    licence: String,
    producer: String,
    merchant: String,
    instructions: String,
    files: Vec<FileLine>,
    total: String,
    on_sale: bool,
    /// Signed in: where the key will go; the buy form's token and nonce.
    buyer: Option<String>,
    buy_csrf: String,
    nonce: String,
    next: String,
}

/// A product on sale or withdrawn (a draft is not public: the API's 404).
async fn public_product(state: &AppState, text: &str) -> Result<ProductView, Refusal> {
    let id = path_id(text, "product")?;
    let not_found = || {
        refusal(ServiceError::NotFound {
            what: tally_service::Missing::Product,
            id: id.to_string(),
        })
    };
    match state.node.delivery().product(id).await {
        Ok(p) if p.state == ProductState::Draft => Err(not_found()),
        Ok(p) => Ok(p),
        Err(e) => Err(refusal(e)),
    }
}

/// Where the signed-in visitor's codes and keys go, in words, or `None` without one.
async fn key_address(state: &AppState, user: &str) -> Result<Option<String>, Refusal> {
    match state.node.oob().verified_address(user).await {
        Ok((channel, address)) => Ok(Some(format!("{address} ({})", channel_words(&channel)))),
        Err(ServiceError::NoChannel | ServiceError::NotFound { .. }) => Ok(None),
        Err(e) => Err(refusal(e)),
    }
}

/// `GET /p/{product}`: the product page, shareable.
pub async fn product(
    State(state): State<AppState>,
    visitor: Visitor,
    WebPath(text): WebPath,
) -> Response {
    let p = match public_product(&state, &text).await {
        Ok(p) => p,
        Err(r) => return refused_page(&state, &visitor, &r).into_response(),
    };
    let buyer = match visitor.signed_in() {
        Some(s) => match key_address(&state, &s.by.owner).await {
            Ok(a) => Some(a.unwrap_or_else(|| "no verified address yet".into())),
            Err(r) => return refused_page(&state, &visitor, &r).into_response(),
        },
        None => None,
    };
    let id = p.id.to_string();
    let total: i64 = p.entries.iter().map(|e| e.plain_len).sum();
    let files = p
        .entries
        .iter()
        .filter(|e| e.kind == "product")
        .map(|e| FileLine {
            name: e.name.clone(),
            size: size(e.plain_len),
        })
        .collect();
    let frame = Frame::new(&state, &visitor, vec![crumb(p.title.clone(), "")]);
    Page::of(
        StatusCode::OK,
        &ProductTemplate {
            frame,
            buy_csrf: visitor.csrf(&format!("/p/{id}/buy")),
            nonce: nonce(),
            next: format!("/p/{id}"),
            id,
            title: p.title,
            price: p.price.to_string(),
            licence: p.licence,
            producer: p.producer,
            merchant: p.merchant,
            instructions: p.instructions,
            files,
            total: size(total),
            on_sale: p.state == ProductState::Active,
            buyer,
        },
    )
    .into_response()
}

/// `POST /p/{product}/buy`: the sale, for the signed-in visitor; then its checkout page.
pub async fn buy(
    State(state): State<AppState>,
    visitor: Visitor,
    WebPath(text): WebPath,
    WebForm(form): WebForm<BuyForm>,
) -> Response {
    let p = match public_product(&state, &text).await {
        Ok(p) => p,
        Err(r) => return refused_page(&state, &visitor, &r).into_response(),
    };
    let action = format!("/p/{}/buy", p.id);
    let signed = match form_signer(&state, &visitor, &action, &form.csrf) {
        Ok(s) => s,
        Err(page) => return page.into_response(),
    };
    let nonce = match check_nonce(&form.nonce) {
        Ok(n) => n,
        Err(r) => return refused_page(&state, &visitor, &r).into_response(),
    };
    let (channel, address) = match state.node.oob().verified_address(&signed.by.owner).await {
        Ok(found) => found,
        Err(e) => return refused_page(&state, &visitor, &refusal(e)).into_response(),
    };
    let request = NewSale {
        product: p.id,
        channel,
        address,
        name: None,
    };
    match state
        .node
        .delivery()
        .buy(&signed.by, &format!("web-buy-{nonce}"), request)
        .await
    {
        Ok((sale, _)) => Redirect::to(&format!("/checkout/{}", sale.id)).into_response(),
        Err(e) => refused_page(&state, &visitor, &refusal(e)).into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// The checkout page.

/// An account the buyer may pay from.
struct PayAccount {
    id: String,
    available: String,
    enough: bool,
}

/// The code form of a payment waiting for confirmation.
struct ConfirmPanel {
    session: String,
    account: String,
    channel: &'static str,
    rows: Vec<Row>,
    dev_inbox: Option<String>,
}

/// `templates/web/checkout.html`.
#[derive(Template)]
#[template(path = "web/checkout.html")]
struct CheckoutTemplate {
    frame: Frame,
    id: String,
    title: String,
    state: &'static str,
    state_words: &'static str,
    open: bool,
    released: bool,
    price: String,
    currency: &'static str,
    reference: String,
    package: String,
    package_sha256: String,
    pay_to: String,
    merchant: String,
    instructions: String,
    qr: Option<String>,
    key_to: String,
    accounts: Vec<PayAccount>,
    pay_csrf: String,
    nonce: String,
    confirm: Option<ConfirmPanel>,
    error: Option<String>,
    notice: Option<String>,
    refresh: bool,
}

fn state_words(state: SaleState) -> &'static str {
    match state {
        SaleState::Open => "Waiting for your payment",
        SaleState::Released => "Paid: your key is released",
        SaleState::Cancelled => "Cancelled: nothing is owed, the key will not be released",
        SaleState::Expired => "Expired unpaid: the key will not be released",
        SaleState::Refunded => "Refunded",
    }
}

/// What the checkout page shows besides the sale.
#[derive(Default)]
struct Extra {
    confirm: Option<ConfirmPanel>,
    error: Option<Refusal>,
    notice: Option<String>,
    /// The nonce of the form being confirmed (kept so the second submit is the same payment).
    nonce: Option<String>,
}

/// The sale of `text` for the signed-in visitor (another buyer's sale is the API's 404).
async fn buyers_sale(
    state: &AppState,
    visitor: &Visitor,
    text: &str,
) -> Result<(SaleView, ProductView), Refusal> {
    let id = path_id(text, "sale")?;
    let Some(signed) = visitor.signed_in() else {
        return Err(refusal(ServiceError::Unauthorized));
    };
    let sale = state
        .node
        .delivery()
        .sale(&signed.by, id)
        .await
        .map_err(refusal)?;
    if sale.buyer != signed.by.owner {
        // The merchant or producer sees the sale in their own pages, not the buyer's.
        return Err(refusal(ServiceError::NotFound {
            what: tally_service::Missing::Sale,
            id: id.to_string(),
        }));
    }
    let product = state
        .node
        .delivery()
        .product(sale.product)
        .await
        .map_err(refusal)?;
    Ok((sale, product))
}

async fn checkout_page(
    state: &AppState,
    visitor: &Visitor,
    sale: &SaleView,
    product: &ProductView,
    extra: Extra,
) -> Page {
    let Some(signed) = visitor.signed_in() else {
        return refused_page(state, visitor, &refusal(ServiceError::Unauthorized));
    };
    let accounts = match state.node.accounts(&signed.by, None).await {
        Ok(all) => all
            .into_iter()
            .filter(|a| a.currency == sale.price.currency)
            .map(|a| {
                let available = a.available_minor();
                PayAccount {
                    id: a.id.to_string(),
                    available: available.map_or_else(
                        || money(a.balance_minor(), a.currency),
                        |m| money(m, a.currency),
                    ),
                    enough: available.is_none_or(|m| m >= sale.price.minor),
                }
            })
            .collect(),
        Err(e) => return refused_page(state, visitor, &refusal(e)),
    };
    let id = sale.id.to_string();
    let price = sale.price.to_string();
    let pay_to = product.pay_to.to_string();
    let open = sale.state == SaleState::Open;
    let status = extra.error.as_ref().map_or(StatusCode::OK, |r| r.status);
    let code = extra.error.as_ref().map(|r| r.code);
    let label = format!(
        "Payment instructions: {price}, reference {}",
        sale.reference
    );
    let refresh = open && extra.confirm.is_none() && extra.error.is_none();
    let page = Page::of(
        status,
        &CheckoutTemplate {
            frame: Frame::new(
                state,
                visitor,
                vec![
                    crumb(product.title.clone(), format!("/p/{}", product.id)),
                    crumb("Checkout", ""),
                ],
            ),
            title: sale.title.clone(),
            state: sale.state.as_str(),
            state_words: state_words(sale.state),
            open,
            released: sale.state == SaleState::Released,
            qr: qr::svg(&qr::payment_uri(&sale.reference, &price, &pay_to), &label),
            price,
            currency: sale.price.currency.code(),
            reference: sale.reference.clone(),
            package: size(sale.package_len),
            package_sha256: sale.package_sha256.clone(),
            merchant: product.merchant.clone(),
            pay_to,
            instructions: product.instructions.clone(),
            key_to: format!("{} ({})", sale.address, channel_words(&sale.channel)),
            accounts,
            pay_csrf: visitor.csrf(&format!("/checkout/{id}/pay")),
            nonce: extra.nonce.unwrap_or_else(nonce),
            refresh,
            confirm: extra.confirm,
            error: extra.error.as_ref().map(Refusal::sentence),
            notice: extra.notice,
            id,
        },
    );
    let page = page.scripted(refresh);
    match code {
        Some(code) => page.coded(code),
        None => page,
    }
}

/// `GET /checkout/{sale}/state`: `{"state": …}` of the buyer's sale, for the page's script.
pub async fn state(
    State(state): State<AppState>,
    visitor: Visitor,
    WebPath(text): WebPath,
) -> Response {
    match buyers_sale(&state, &visitor, &text).await {
        Ok((sale, _)) => {
            let mut response =
                axum::Json(serde_json::json!({ "state": sale.state.as_str() })).into_response();
            super::secure_headers(response.headers_mut());
            response
        }
        Err(r) => refused_page(&state, &visitor, &r).into_response(),
    }
}

/// `GET /checkout/{sale}`: the buyer's page of a sale.
pub async fn checkout(
    State(state): State<AppState>,
    visitor: Visitor,
    WebPath(text): WebPath,
) -> Response {
    if visitor.signed_in().is_none() {
        return sign_in_first(&format!("/checkout/{}", path_text(&text)));
    }
    match buyers_sale(&state, &visitor, &text).await {
        Ok((sale, product)) => checkout_page(&state, &visitor, &sale, &product, Extra::default())
            .await
            .into_response(),
        Err(r) => refused_page(&state, &visitor, &r).into_response(),
    }
}

fn confirm_panel(state: &AppState, session: &SessionView, account: &str) -> ConfirmPanel {
    ConfirmPanel {
        session: session.session.clone(),
        account: account.to_string(),
        channel: channel_words(&session.channel),
        rows: session_details(session)
            .into_iter()
            .filter(|r| {
                matches!(
                    r.id,
                    "amount" | "payee" | "description" | "address" | "expires" | "attempts-left"
                )
            })
            .collect(),
        dev_inbox: (state.node.is_dev() && session.channel == "dev")
            .then(|| session.address.clone()),
    }
}

/// `POST /checkout/{sale}/pay`: pays the sale from one of the buyer's accounts, confirmed by
/// a code on the buyer's second channel.
pub async fn pay(
    State(state): State<AppState>,
    visitor: Visitor,
    WebPath(text): WebPath,
    WebForm(form): WebForm<PayForm>,
) -> Response {
    let id = path_text(&text);
    let signed = match form_signer(&state, &visitor, &format!("/checkout/{id}/pay"), &form.csrf) {
        Ok(s) => s,
        Err(page) => return page.into_response(),
    };
    let (sale, product) = match buyers_sale(&state, &visitor, &text).await {
        Ok(found) => found,
        Err(r) => return refused_page(&state, &visitor, &r).into_response(),
    };
    let nonce = match check_nonce(&form.nonce) {
        Ok(n) => n.to_string(),
        Err(r) => return refused_page(&state, &visitor, &r).into_response(),
    };
    let again = |extra: Extra| checkout_page(&state, &visitor, &sale, &product, extra);
    let Ok(account) = uuid::Uuid::parse_str(form.account.trim()).map(Id) else {
        let r = refusal(ServiceError::Invalid {
            field: "account",
            reason: "pick one of your accounts".into(),
        });
        return again(Extra {
            error: Some(r),
            ..Extra::default()
        })
        .await
        .into_response();
    };
    let oob = state.node.oob();
    // The second submit: the code for the confirmation session this form showed.
    if let (Some(session), Some(code)) = (&form.session, &form.code) {
        let shown = match oob.session(session).await {
            Ok(v) if v.user == signed.by.owner => v,
            // Another user's session: not found, as the API says of what is not yours.
            Ok(_) => {
                return refused_page(
                    &state,
                    &visitor,
                    &refusal(ServiceError::NotFound {
                        what: tally_service::Missing::Session,
                        id: session.chars().take(32).collect(),
                    }),
                )
                .into_response();
            }
            Err(e) => return refused_page(&state, &visitor, &refusal(e)).into_response(),
        };
        let transaction = match &shown.purpose {
            Purpose::Transaction(t) => Some(t),
            Purpose::Login | Purpose::Message(_) => None,
        };
        if let Err(e) = oob.verify(session, &typed_code(code), transaction).await {
            let r = refusal(e);
            let now = oob.session(session).await.unwrap_or(shown);
            let open = now.state == tally_proto::oob::State::Open;
            return again(Extra {
                confirm: open.then(|| confirm_panel(&state, &now, &form.account)),
                error: Some(r),
                nonce: open.then_some(nonce),
                ..Extra::default()
            })
            .await
            .into_response();
        }
    }
    let request = PayReference {
        reference: sale.reference.clone(),
        from_account: account,
        amount: sale.price,
    };
    let paid = state
        .node
        .delivery()
        .pay_reference(
            &signed.by,
            &format!("web-pay-{nonce}"),
            request,
            &Confirming(oob),
        )
        .await;
    match paid {
        Ok(_) => Redirect::to(&format!("/checkout/{}", sale.id)).into_response(),
        Err(ServiceError::ConfirmationRequired(session)) => again(Extra {
            confirm: Some(confirm_panel(&state, &session, &form.account)),
            nonce: Some(nonce),
            ..Extra::default()
        })
        .await
        .into_response(),
        Err(e) => again(Extra {
            error: Some(refusal(e)),
            ..Extra::default()
        })
        .await
        .into_response(),
    }
}

/// `GET /checkout/{sale}/package`: the locked package, whole or from a `Range` (resumable).
pub(crate) async fn package(
    State(state): State<AppState>,
    visitor: Visitor,
    WebPath(text): WebPath,
    headers: HeaderMap,
) -> Response {
    let (sale, _) = match buyers_sale(&state, &visitor, &text).await {
        Ok(found) => found,
        Err(r) => return refused_page(&state, &visitor, &r).into_response(),
    };
    let Some(signed) = visitor.signed_in() else {
        return refused_page(&state, &visitor, &refusal(ServiceError::Unauthorized))
            .into_response();
    };
    match crate::delivery::package_response(&state, &signed.by, sale.id, &headers).await {
        Ok(mut response) => {
            let name = format!(
                "attachment; filename=\"{}.tallypkg\"",
                path_text(&sale.reference)
            );
            if let Ok(v) = axum::http::HeaderValue::try_from(name) {
                response
                    .headers_mut()
                    .insert(axum::http::header::CONTENT_DISPOSITION, v);
            }
            response
        }
        Err(e) => refused_page(&state, &visitor, &super::api_refusal(&e)).into_response(),
    }
}

/// `templates/web/key.html`.
#[derive(Template)]
#[template(path = "web/key.html")]
struct KeyTemplate {
    frame: Frame,
    id: String,
    reference: String,
    key: String,
    fingerprint: String,
    file: String,
    key_to: String,
    key_csrf: String,
    notice: Option<String>,
}

async fn key_page(
    state: &AppState,
    visitor: &Visitor,
    text: &str,
    notice: Option<String>,
) -> Response {
    let (sale, product) = match buyers_sale(state, visitor, text).await {
        Ok(found) => found,
        Err(r) => return refused_page(state, visitor, &r).into_response(),
    };
    let Some(signed) = visitor.signed_in() else {
        return refused_page(state, visitor, &refusal(ServiceError::Unauthorized)).into_response();
    };
    let key = match state.node.delivery().sale_key(&signed.by, sale.id).await {
        Ok(k) => k,
        Err(e) => return refused_page(state, visitor, &refusal(e)).into_response(),
    };
    let id = sale.id.to_string();
    Page::of(
        StatusCode::OK,
        &KeyTemplate {
            frame: Frame::new(
                state,
                visitor,
                vec![
                    crumb(product.title.clone(), format!("/p/{}", product.id)),
                    crumb("Checkout", format!("/checkout/{id}")),
                    crumb("Unlock", ""),
                ],
            ),
            key_csrf: visitor.csrf(&format!("/checkout/{id}/key")),
            file: format!("{}.tallypkg", path_text(&sale.reference)),
            reference: sale.reference.clone(),
            key: key.unlock_key,
            fingerprint: key.fingerprint,
            key_to: format!("{} ({})", sale.address, channel_words(&sale.channel)),
            notice,
            id,
        },
    )
    .into_response()
}

/// `GET /checkout/{sale}/key`: the released key and how to unlock with it.
pub async fn key(
    State(state): State<AppState>,
    visitor: Visitor,
    WebPath(text): WebPath,
) -> Response {
    if visitor.signed_in().is_none() {
        return sign_in_first(&format!("/checkout/{}/key", path_text(&text)));
    }
    key_page(&state, &visitor, &text, None).await
}

/// `POST /checkout/{sale}/key`: the key sent again to the buyer's verified address (D11).
pub async fn resend_key(
    State(state): State<AppState>,
    visitor: Visitor,
    WebPath(text): WebPath,
    WebForm(form): WebForm<CsrfForm>,
) -> Response {
    let action = format!("/checkout/{}/key", path_text(&text));
    let signed = match form_signer(&state, &visitor, &action, &form.csrf) {
        Ok(s) => s,
        Err(page) => return page.into_response(),
    };
    let (sale, _) = match buyers_sale(&state, &visitor, &text).await {
        Ok(found) => found,
        Err(r) => return refused_page(&state, &visitor, &r).into_response(),
    };
    let complaint = Complaint {
        reference: sale.reference.clone(),
        kind: "key_lost".into(),
        reason: None,
        package_sha256: None,
    };
    match state.node.delivery().complain(&signed.by, complaint).await {
        Ok(done) => {
            key_page(
                &state,
                &visitor,
                &text,
                Some(format!("Done: {}.", done.action)),
            )
            .await
        }
        Err(e) => refused_page(&state, &visitor, &refusal(e)).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        let cases = [
            (0, "0 bytes"),
            (1023, "1023 bytes"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (5 * 1024 * 1024, "5.0 MiB"),
            (3 * 1024 * 1024 * 1024, "3.0 GiB"),
        ];
        for (bytes, text) in cases {
            assert_eq!(size(bytes), text);
        }
    }
}
