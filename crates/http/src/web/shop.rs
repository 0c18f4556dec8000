//! The merchant's pages (issue [9] part 3): products (a new draft, its files uploaded with a
//! progress bar, published, withdrawn) and sales (filters, a chart per day, CSV, payments held
//! in suspense with their refund, overdue sales).
//!
//! A web session is a sign-in's token, a customer principal; [`tally_service::Node::as_merchant`]
//! lets it act as the merchant when its user holds a live merchant key, so the pages manage
//! exactly what the user's API keys do. Everything else is the same calls as the API's.
//!
//! Uploads: a `multipart/form-data` form (so it works without script) read field by field
//! with `multer`: the CSRF token is checked before the file's bytes are read, and the file
//! streams into the sealing upload (constant memory, the node's size limit). With script, the
//! page's own `/assets/upload-1.js` sends the file in parts of 1 MiB to the resumable upload
//! (`/shop/products/{id}/parts`, `tally_service::delivery::staging`: parts sealed at rest, a
//! broken upload goes on from the node's offset), with a progress bar.

use askama::Template;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use futures::TryStreamExt;
use serde::Deserialize;
use tally_kernel::{Amount, Currency, Id, Timestamp};
use tally_proto::delivery::sale::{PaymentStatus, ProductState, SaleState};
use tally_service::delivery::{NewProduct, ReportRow, report_csv};
use tally_service::{Principal, ServiceError};
use tally_store::delivery::SalesFilter;

use super::me::day_time;
use super::{
    CsrfForm, Frame, Page, Refusal, Visitor, WebForm, WebPath, check_nonce, crumb, form_signer,
    nonce, path_id, refusal, refused_page, sign_in_first,
};
use crate::AppState;
use crate::error::ApiError;

/// The signed-in visitor as a merchant, or the page that says why not.
async fn merchant(state: &AppState, visitor: &Visitor, next: &str) -> Result<Principal, Response> {
    let Some(signed) = visitor.signed_in() else {
        return Err(sign_in_first(next));
    };
    match &signed.merchant {
        Some(by) => Ok(by.clone()),
        // Asked again only to say why not.
        None => state
            .node
            .as_merchant(&signed.by)
            .await
            .map_err(|e| refused_page(state, visitor, &refusal(e)).into_response()),
    }
}

fn state_words(state: ProductState) -> &'static str {
    match state {
        ProductState::Active => "on sale",
        ProductState::Draft => "draft",
        ProductState::Withdrawn => "withdrawn",
    }
}

// ---------------------------------------------------------------------------------------------
// Products.

struct ProductLine {
    id: String,
    title: String,
    price: String,
    state: &'static str,
    sold: usize,
}

struct PayTo {
    id: String,
    currency: &'static str,
}

/// `templates/web/shop.html`.
#[derive(Template)]
#[template(path = "web/shop.html")]
struct ShopTemplate {
    frame: Frame,
    products: Vec<ProductLine>,
    accounts: Vec<PayTo>,
    csrf: String,
    nonce: String,
    error: Option<String>,
}

async fn shop_page(
    state: &AppState,
    visitor: &Visitor,
    by: &Principal,
    error: Option<Refusal>,
) -> Response {
    let loaded = async {
        let products = state.node.delivery().products().await?;
        let sales = state
            .node
            .delivery()
            .sales_report(
                by,
                SalesFilter {
                    merchant: Some(by.owner.clone()),
                    ..SalesFilter::default()
                },
            )
            .await?;
        let accounts = state.node.accounts(by, None).await?;
        Ok::<_, ServiceError>((products, sales, accounts))
    };
    let (products, sales, accounts) = match loaded.await {
        Ok(all) => all,
        Err(e) => return refused_page(state, visitor, &refusal(e)).into_response(),
    };
    let products = products
        .into_iter()
        .filter(|p| p.merchant == by.owner)
        .map(|p| ProductLine {
            sold: sales
                .iter()
                .filter(|s| s.product == p.id && s.state == SaleState::Released)
                .count(),
            id: p.id.to_string(),
            title: p.title,
            price: p.price.to_string(),
            state: state_words(p.state),
        })
        .collect();
    let status = error.as_ref().map_or(StatusCode::OK, |r| r.status);
    Page::of(
        status,
        &ShopTemplate {
            frame: Frame::new(state, visitor, vec![crumb("My shop", "")]),
            products,
            accounts: accounts
                .iter()
                .map(|a| PayTo {
                    id: a.id.to_string(),
                    currency: a.currency.code(),
                })
                .collect(),
            csrf: visitor.csrf("/shop/products"),
            nonce: nonce(),
            error: error.as_ref().map(Refusal::sentence),
        },
    )
    .into_response()
}

/// `GET /shop`: the merchant's products and the new-product form.
pub async fn shop(State(state): State<AppState>, visitor: Visitor) -> Response {
    match merchant(&state, &visitor, "/shop").await {
        Ok(by) => shop_page(&state, &visitor, &by, None).await,
        Err(page) => page,
    }
}

/// `POST /shop/products`.
#[derive(Debug, Deserialize)]
pub struct NewProductForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    nonce: String,
    title: String,
    /// The price as typed (`9.90`), in the currency of `pay_to`.
    price: String,
    pay_to: String,
    licence: String,
    #[serde(default)]
    instructions: String,
}

fn invalid(field: &'static str, reason: &str) -> Refusal {
    refusal(ServiceError::Invalid {
        field,
        reason: reason.to_string(),
    })
}

/// `POST /shop/products`: a draft product; then its page, to upload the files.
pub async fn create(
    State(state): State<AppState>,
    visitor: Visitor,
    WebForm(form): WebForm<NewProductForm>,
) -> Response {
    let by = match merchant(&state, &visitor, "/shop").await {
        Ok(by) => by,
        Err(page) => return page,
    };
    if let Err(page) = form_signer(&state, &visitor, "/shop/products", &form.csrf) {
        return page.into_response();
    }
    let nonce = match check_nonce(&form.nonce) {
        Ok(n) => n.to_string(),
        Err(r) => return refused_page(&state, &visitor, &r).into_response(),
    };
    let Ok(pay_to) = uuid::Uuid::parse_str(form.pay_to.trim()).map(Id) else {
        return shop_page(
            &state,
            &visitor,
            &by,
            Some(invalid("pay_to", "pick one of your accounts")),
        )
        .await;
    };
    let currency = match state.node.account(&by, pay_to).await {
        Ok(a) => a.currency,
        Err(e) => return shop_page(&state, &visitor, &by, Some(refusal(e))).await,
    };
    let price = match Amount::parse_decimal(form.price.trim(), currency) {
        Ok(p) => p,
        Err(e) => {
            return shop_page(&state, &visitor, &by, Some(refusal(ServiceError::Money(e)))).await;
        }
    };
    let request = NewProduct {
        title: form.title.trim().to_string(),
        price,
        pay_to,
        producer: None,
        licence: form.licence.trim().to_string(),
        instructions: form.instructions.trim().to_string(),
        registration_template: None,
    };
    match state
        .node
        .delivery()
        .product_create(&by, &format!("web-product-{nonce}"), request)
        .await
    {
        Ok((p, _)) => Redirect::to(&format!("/shop/products/{}", p.id)).into_response(),
        Err(e) => shop_page(&state, &visitor, &by, Some(refusal(e))).await,
    }
}

struct EntryLine {
    name: String,
    kind: String,
    size: String,
    sha256: String,
}

/// `templates/web/shop_product.html`.
#[derive(Template)]
#[template(path = "web/shop_product.html")]
struct ProductTemplate {
    frame: Frame,
    id: String,
    title: String,
    price: String,
    state: &'static str,
    draft: bool,
    active: bool,
    entries: Vec<EntryLine>,
    upload_csrf: String,
    parts_csrf: String,
    publish_csrf: String,
    withdraw_csrf: String,
    notice: Option<String>,
    error: Option<String>,
}

async fn product_page(
    state: &AppState,
    visitor: &Visitor,
    by: &Principal,
    text: &str,
    notice: Option<String>,
    error: Option<Refusal>,
) -> Response {
    let id = match path_id(text, "product") {
        Ok(id) => id,
        Err(r) => return refused_page(state, visitor, &r).into_response(),
    };
    let p = match state.node.delivery().product(id).await {
        Ok(p) if by.is_admin() || p.merchant == by.owner => p,
        // Another merchant's product is not found here.
        Ok(_) => {
            return refused_page(
                state,
                visitor,
                &refusal(ServiceError::NotFound {
                    what: tally_service::Missing::Product,
                    id: id.to_string(),
                }),
            )
            .into_response();
        }
        Err(e) => return refused_page(state, visitor, &refusal(e)).into_response(),
    };
    let id = p.id.to_string();
    let status = error.as_ref().map_or(StatusCode::OK, |r| r.status);
    Page::of(
        status,
        &ProductTemplate {
            frame: Frame::new(
                state,
                visitor,
                vec![crumb("My shop", "/shop"), crumb(p.title.clone(), "")],
            ),
            upload_csrf: visitor.csrf(&format!("/shop/products/{id}/entries")),
            parts_csrf: visitor.csrf(&format!("/shop/products/{id}/parts")),
            publish_csrf: visitor.csrf(&format!("/shop/products/{id}/publish")),
            withdraw_csrf: visitor.csrf(&format!("/shop/products/{id}/withdraw")),
            title: p.title,
            price: p.price.to_string(),
            state: state_words(p.state),
            draft: p.state == ProductState::Draft,
            active: p.state == ProductState::Active,
            entries: p
                .entries
                .iter()
                .map(|e| EntryLine {
                    name: e.name.clone(),
                    kind: e.kind.clone(),
                    size: super::checkout::size(e.plain_len),
                    sha256: e.plain_sha256.clone(),
                })
                .collect(),
            notice,
            error: error.as_ref().map(Refusal::sentence),
            id,
        },
    )
    .scripted(true)
    .into_response()
}

/// `?sealed=` of the product page: the file the page's script just finished uploading.
#[derive(Debug, Default, Deserialize)]
pub struct SealedQuery {
    #[serde(default)]
    sealed: Option<String>,
}

/// `GET /shop/products/{id}`: a product of the merchant: files, upload, publish, withdraw.
pub async fn product(
    State(state): State<AppState>,
    visitor: Visitor,
    WebPath(text): WebPath,
    Query(q): Query<SealedQuery>,
) -> Response {
    let by = match merchant(&state, &visitor, "/shop").await {
        Ok(by) => by,
        Err(page) => return page,
    };
    // Only a file the product has: a link cannot make the page say anything else.
    let mut notice = None;
    if let (Some(name), Ok(id)) = (q.sealed, path_id(&text, "product"))
        && let Ok(p) = state.node.delivery().product(id).await
        && let Some(e) = p.entries.iter().find(|e| e.name == name)
    {
        notice = Some(format!(
            "Sealed {} ({}).",
            e.name,
            super::checkout::size(e.plain_len)
        ));
    }
    product_page(&state, &visitor, &by, &text, notice, None).await
}

async fn product_step(
    state: AppState,
    visitor: Visitor,
    text: String,
    form: CsrfForm,
    publish: bool,
) -> Response {
    let by = match merchant(&state, &visitor, "/shop").await {
        Ok(by) => by,
        Err(page) => return page,
    };
    let id = match path_id(&text, "product") {
        Ok(id) => id,
        Err(r) => return refused_page(&state, &visitor, &r).into_response(),
    };
    let action = format!(
        "/shop/products/{id}/{}",
        if publish { "publish" } else { "withdraw" }
    );
    if let Err(page) = form_signer(&state, &visitor, &action, &form.csrf) {
        return page.into_response();
    }
    let delivery = state.node.delivery();
    let done = if publish {
        delivery.product_publish(&by, id).await
    } else {
        delivery.product_withdraw(&by, id).await
    };
    match done {
        Ok(p) => {
            let notice = if publish {
                format!("On sale: share its page, /p/{}", p.id)
            } else {
                "Withdrawn: no new sales; packages sold stay downloadable for their buyers.".into()
            };
            product_page(&state, &visitor, &by, &text, Some(notice), None).await
        }
        Err(e) => product_page(&state, &visitor, &by, &text, None, Some(refusal(e))).await,
    }
}

/// `POST /shop/products/{id}/publish`.
pub async fn publish(
    State(state): State<AppState>,
    visitor: Visitor,
    WebPath(text): WebPath,
    WebForm(form): WebForm<CsrfForm>,
) -> Response {
    product_step(state, visitor, text, form, true).await
}

/// `POST /shop/products/{id}/withdraw`.
pub async fn withdraw(
    State(state): State<AppState>,
    visitor: Visitor,
    WebPath(text): WebPath,
    WebForm(form): WebForm<CsrfForm>,
) -> Response {
    product_step(state, visitor, text, form, false).await
}

/// `POST /shop/products/{id}/entries` (`multipart/form-data`: `csrf`, `kind`, then `file`):
/// the file sealed into the draft as it arrives.
pub async fn upload(
    State(state): State<AppState>,
    visitor: Visitor,
    WebPath(text): WebPath,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(page) = super::same_site(&state, &visitor, &headers) {
        return page.into_response();
    }
    let by = match merchant(&state, &visitor, "/shop").await {
        Ok(by) => by,
        Err(page) => return page,
    };
    let id = match path_id(&text, "product") {
        Ok(id) => id,
        Err(r) => return refused_page(&state, &visitor, &r).into_response(),
    };
    let again = |error: Refusal| {
        let (state, visitor, by, text) = (&state, &visitor, &by, &text);
        async move { product_page(state, visitor, by, text, None, Some(error)).await }
    };
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok());
    let Some(boundary) = boundary else {
        return again(invalid("file", "send the form as multipart/form-data")).await;
    };
    // Only the form's three fields; the small ones are read into memory, so they are capped.
    let constraints = multer::Constraints::new()
        .allowed_fields(vec!["csrf", "kind", "file"])
        .size_limit(
            multer::SizeLimit::new()
                .for_field("csrf", 256)
                .for_field("kind", 64),
        );
    let mut parts =
        multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let mut csrf = String::new();
    let mut kind = String::from("product");
    let action = format!("/shop/products/{id}/entries");
    loop {
        let field = match parts.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => return again(invalid("file", "choose a file to upload")).await,
            Err(e) => return again(invalid("file", &format!("a broken form: {e}"))).await,
        };
        match field.name().unwrap_or_default() {
            "csrf" => csrf = field.text().await.unwrap_or_default(),
            "kind" => kind = field.text().await.unwrap_or_default(),
            "file" => {
                // The token is checked before a byte of the file is read.
                if let Err(page) = form_signer(&state, &visitor, &action, &csrf) {
                    return page.into_response();
                }
                let name = field
                    .file_name()
                    .map(|n| n.rsplit(['/', '\\']).next().unwrap_or(n).to_string())
                    .unwrap_or_default();
                let reader = tokio_util::io::StreamReader::new(
                    field.map_err(|e| std::io::Error::other(e.to_string())),
                );
                return match state
                    .node
                    .delivery()
                    .product_upload(&by, id, &name, &kind, reader)
                    .await
                {
                    Ok(entry) => {
                        product_page(
                            &state,
                            &visitor,
                            &by,
                            &text,
                            Some(format!(
                                "Sealed {} ({}).",
                                entry.name,
                                super::checkout::size(entry.plain_len)
                            )),
                            None,
                        )
                        .await
                    }
                    Err(e) => again(refusal(e)).await,
                };
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Resumable uploads (the page's script): JSON in and out.

/// `GET|PUT /shop/products/{id}/parts?name=&kind=&total=[&offset=]`.
#[derive(Debug, Deserialize)]
pub struct PartQuery {
    name: String,
    #[serde(default = "product_kind")]
    kind: String,
    total: u64,
    #[serde(default)]
    offset: u64,
}

fn product_kind() -> String {
    "product".into()
}

/// The merchant behind a script's request, or the API's refusal as JSON.
async fn part_merchant(state: &AppState, visitor: &Visitor) -> Result<Principal, ApiError> {
    let signed = visitor.signed_in().ok_or(ServiceError::Unauthorized)?;
    match &signed.merchant {
        Some(by) => Ok(by.clone()),
        None => Ok(state.node.as_merchant(&signed.by).await?),
    }
}

/// `GET /shop/products/{id}/parts`: `{received, total}` of an upload (0 for a new one).
pub async fn part_status(
    State(state): State<AppState>,
    visitor: Visitor,
    WebPath(text): WebPath,
    Query(q): Query<PartQuery>,
) -> Response {
    let run = async {
        let by = part_merchant(&state, &visitor).await?;
        let id = path_id(&text, "product").map_err(|r| ApiError::new(r.code, r.message))?;
        let received = state
            .node
            .delivery()
            .upload_status(&by, id, &q.name, &q.kind, q.total)
            .await?;
        Ok::<_, ApiError>(axum::Json(
            serde_json::json!({"received": received, "total": q.total}),
        ))
    };
    match run.await {
        Ok(json) => json.into_response(),
        Err(e) => e.into_response(),
    }
}

/// `PUT /shop/products/{id}/parts?…&offset=N` (`X-CSRF-Token`): one part of a resumable
/// upload; `{received, total, sealed}` (`sealed` the entry's name once the file is complete).
pub async fn put_part(
    State(state): State<AppState>,
    visitor: Visitor,
    WebPath(text): WebPath,
    Query(q): Query<PartQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let run = async {
        if super::same_site(&state, &visitor, &headers).is_err() {
            return Err(ApiError::from(ServiceError::Forbidden(
                "a request sent from another site; nothing was done",
            )));
        }
        let by = part_merchant(&state, &visitor).await?;
        let id = path_id(&text, "product").map_err(|r| ApiError::new(r.code, r.message))?;
        let csrf = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if form_signer(
            &state,
            &visitor,
            &format!("/shop/products/{id}/parts"),
            csrf,
        )
        .is_err()
        {
            return Err(ApiError::from(ServiceError::Forbidden(
                "this upload is not from your current sign-in; reload the page",
            )));
        }
        let part = axum::body::to_bytes(body, tally_service::delivery::staging::PART_MAX)
            .await
            .map_err(|_| {
                ApiError::from(ServiceError::Invalid {
                    field: "part",
                    reason: format!(
                        "at most {} bytes per part",
                        tally_service::delivery::staging::PART_MAX
                    ),
                })
                .with_status(StatusCode::PAYLOAD_TOO_LARGE)
            })?;
        let progress = state
            .node
            .delivery()
            .upload_part(&by, id, &q.name, &q.kind, q.total, q.offset, &part)
            .await?;
        Ok::<_, ApiError>(axum::Json(serde_json::json!({
            "received": progress.received,
            "total": progress.total,
            "sealed": progress.entry.map(|e| e.name),
        })))
    };
    match run.await {
        Ok(json) => json.into_response(),
        Err(e) => e.into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Sales.

/// `GET /shop/sales?product=&from=&to=` (dates `YYYY-MM-DD`, UTC).
#[derive(Debug, Default, Deserialize)]
pub struct SalesQuery {
    #[serde(default)]
    product: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
}

struct SaleLine {
    title: String,
    buyer: String,
    reference: String,
    price: String,
    paid: String,
    state: &'static str,
    date: String,
}

struct HeldPayment {
    id: String,
    reference: String,
    amount: String,
    status: &'static str,
    csrf: String,
}

struct Choice {
    id: String,
    title: String,
    selected: bool,
}

/// `templates/web/shop_sales.html`.
#[derive(Template)]
#[template(path = "web/shop_sales.html")]
struct SalesTemplate {
    frame: Frame,
    products: Vec<Choice>,
    from: String,
    to: String,
    query: String,
    sales: Vec<SaleLine>,
    chart: Option<String>,
    held: Vec<HeldPayment>,
    overdue: Vec<SaleLine>,
    totals: String,
    notice: Option<String>,
    error: Option<String>,
}

/// A `YYYY-MM-DD` date as the start of that UTC day.
fn day(field: &'static str, text: Option<&str>) -> Result<Option<Timestamp>, Refusal> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => Timestamp::parse_rfc3339(&format!("{t}T00:00:00Z"))
            .map(Some)
            .ok_or_else(|| invalid(field, "a date like 2026-12-01")),
    }
}

fn filter_of(by: &Principal, q: &SalesQuery) -> Result<SalesFilter, Refusal> {
    let product = match q
        .product
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        None => None,
        Some(t) => Some(path_id(t, "product")?),
    };
    Ok(SalesFilter {
        merchant: (!by.is_admin()).then(|| by.owner.clone()),
        product,
        from: day("from", q.from.as_deref())?,
        // `to` names the last day shown: up to the start of the next one.
        to: day("to", q.to.as_deref())?.map(|t| t.plus_seconds(86_400)),
        ..SalesFilter::default()
    })
}

fn sale_words(state: SaleState) -> &'static str {
    match state {
        SaleState::Open => "waiting for payment",
        SaleState::Released => "paid",
        SaleState::Cancelled => "cancelled",
        SaleState::Expired => "expired",
        SaleState::Refunded => "refunded",
    }
}

fn sale_line(r: &ReportRow) -> SaleLine {
    SaleLine {
        title: r.title.clone(),
        buyer: r.buyer.clone(),
        reference: r.reference.clone(),
        price: r.price.clone(),
        paid: r.paid.clone(),
        state: sale_words(r.state),
        date: day_time(r.created_at),
    }
}

/// Paid sales per UTC day, oldest first, as `(YYYY-MM-DD, count)`.
fn per_day(rows: &[ReportRow]) -> Vec<(String, i64)> {
    let mut days: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    for r in rows.iter().filter(|r| r.state == SaleState::Released) {
        *days
            .entry(r.created_at.to_rfc3339()[..10].to_string())
            .or_default() += 1;
    }
    days.into_iter().collect()
}

/// Sums of the paid sales per currency (`19.80 EUR · 5.00 USD`).
fn totals(rows: &[ReportRow]) -> String {
    let mut sums: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    for r in rows.iter().filter(|r| r.state == SaleState::Released) {
        if let Ok(a) = r.price.parse::<Amount>() {
            *sums.entry(a.currency.code().to_string()).or_default() += a.minor;
        }
    }
    if sums.is_empty() {
        return "nothing paid yet".into();
    }
    sums.into_iter()
        .filter_map(|(c, m)| {
            Currency::from_code(&c)
                .ok()
                .map(|c| Amount::new(m, c).to_string())
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

async fn sales_page(
    state: &AppState,
    visitor: &Visitor,
    by: &Principal,
    q: &SalesQuery,
    notice: Option<String>,
    error: Option<Refusal>,
) -> Response {
    let filter = match filter_of(by, q) {
        Ok(f) => f,
        Err(r) => return refused_page(state, visitor, &r).into_response(),
    };
    let delivery = state.node.delivery();
    let loaded = async {
        let overdue = delivery
            .sales_report(
                by,
                SalesFilter {
                    overdue_only: true,
                    ..filter.clone()
                },
            )
            .await?;
        let rows = delivery.sales_report(by, filter).await?;
        let products = delivery.products().await?;
        let mut held = Vec::new();
        for r in rows.iter().filter(|r| r.mismatched_payments > 0) {
            for p in delivery.sale(by, r.sale).await?.payments {
                if matches!(
                    p.status,
                    PaymentStatus::Closed | PaymentStatus::Duplicate | PaymentStatus::Mismatch
                ) {
                    held.push(p);
                }
            }
        }
        Ok::<_, ServiceError>((rows, overdue, products, held))
    };
    let (rows, overdue, products, held) = match loaded.await {
        Ok(all) => all,
        Err(e) => return refused_page(state, visitor, &refusal(e)).into_response(),
    };
    let chosen = q.product.clone().unwrap_or_default();
    let days = per_day(&rows);
    let chart = super::chart::bars(&days, "Paid sales per day");
    let overdue = overdue.iter().map(sale_line).collect();
    let query = format!(
        "product={}&from={}&to={}",
        super::qr::encode(&chosen),
        super::qr::encode(q.from.as_deref().unwrap_or_default()),
        super::qr::encode(q.to.as_deref().unwrap_or_default())
    );
    let status = error.as_ref().map_or(StatusCode::OK, |r| r.status);
    Page::of(
        status,
        &SalesTemplate {
            frame: Frame::new(
                state,
                visitor,
                vec![crumb("My shop", "/shop"), crumb("Sales", "")],
            ),
            products: products
                .into_iter()
                .filter(|p| by.is_admin() || p.merchant == by.owner)
                .map(|p| Choice {
                    selected: p.id.to_string() == chosen,
                    id: p.id.to_string(),
                    title: p.title,
                })
                .collect(),
            from: q.from.clone().unwrap_or_default(),
            to: q.to.clone().unwrap_or_default(),
            query,
            totals: totals(&rows),
            sales: rows.iter().rev().map(sale_line).collect(),
            chart,
            held: held
                .into_iter()
                .map(|p| HeldPayment {
                    csrf: visitor.csrf(&format!("/shop/payments/{}/refund", p.id)),
                    id: p.id.to_string(),
                    reference: p.reference,
                    amount: p.amount.to_string(),
                    status: p.status.as_str(),
                })
                .collect(),
            overdue,
            notice,
            error: error.as_ref().map(Refusal::sentence),
        },
    )
    .into_response()
}

/// `GET /shop/sales`.
pub async fn sales(
    State(state): State<AppState>,
    visitor: Visitor,
    Query(q): Query<SalesQuery>,
) -> Response {
    match merchant(&state, &visitor, "/shop/sales").await {
        Ok(by) => sales_page(&state, &visitor, &by, &q, None, None).await,
        Err(page) => page,
    }
}

/// `GET /shop/sales.csv` (the same filters): the producer's report's CSV.
pub async fn sales_csv(
    State(state): State<AppState>,
    visitor: Visitor,
    Query(q): Query<SalesQuery>,
) -> Response {
    let by = match merchant(&state, &visitor, "/shop/sales").await {
        Ok(by) => by,
        Err(page) => return page,
    };
    let filter = match filter_of(&by, &q) {
        Ok(f) => f,
        Err(r) => return refused_page(&state, &visitor, &r).into_response(),
    };
    match state.node.delivery().sales_report(&by, filter).await {
        Ok(rows) => {
            let mut response = (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"sales.csv\"",
                    ),
                ],
                report_csv(&rows),
            )
                .into_response();
            super::secure_headers(response.headers_mut());
            response
        }
        Err(e) => refused_page(&state, &visitor, &refusal(e)).into_response(),
    }
}

/// `POST /shop/payments/{id}/refund`: a payment held in suspense goes back to its payer.
pub async fn refund(
    State(state): State<AppState>,
    visitor: Visitor,
    WebPath(text): WebPath,
    WebForm(form): WebForm<CsrfForm>,
) -> Response {
    let by = match merchant(&state, &visitor, "/shop/sales").await {
        Ok(by) => by,
        Err(page) => return page,
    };
    let id = match path_id(&text, "payment") {
        Ok(id) => id,
        Err(r) => return refused_page(&state, &visitor, &r).into_response(),
    };
    if let Err(page) = form_signer(
        &state,
        &visitor,
        &format!("/shop/payments/{id}/refund"),
        &form.csrf,
    ) {
        return page.into_response();
    }
    let q = SalesQuery::default();
    match state.node.delivery().refund(&by, id).await {
        Ok(p) => {
            let notice = format!("Refunded {} (reference {}).", p.amount, p.reference);
            sales_page(&state, &visitor, &by, &q, Some(notice), None).await
        }
        Err(e) => sales_page(&state, &visitor, &by, &q, None, Some(refusal(e))).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_dates_and_bad_ones_are_refused() {
        assert_eq!(day("from", None).ok(), Some(None));
        assert_eq!(day("from", Some(" ")).ok(), Some(None));
        assert_eq!(
            day("from", Some("2026-12-01")).ok().flatten(),
            Timestamp::parse_rfc3339("2026-12-01T00:00:00Z")
        );
        for bad in ["2026-13-01", "01.12.2026", "2026-12-01T00:00:00Z"] {
            assert!(day("from", Some(bad)).is_err(), "{bad}");
        }
    }
}
