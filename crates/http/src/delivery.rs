//! Locked delivery over HTTP (SPEC D1–D11): products, sales, the package download with
//! `Range`, acknowledgements, payments by reference, receivers' signed notifications, keys,
//! complaints, refunds and the producer's report. Shapes: `docs/protocols/delivery-api.md`;
//! bodies are the service's own types (`tally_service::delivery`).
//!
//! Key decisions: uploads and downloads stream (an upload is sealed as it arrives, a download
//! is read from the stored pieces as it is sent), so neither is held in memory; both routes sit
//! outside the 64 KiB body limit and the request timeout (the service enforces its own upload
//! limit). A receiver's notification needs no API key: its signature is the credential.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use tally_kernel::{Id, Timestamp};
use tally_service::delivery::{
    Acknowledge, Complaint, NewProduct, NewSale, PackageParts, PayReference, ReceiverConfig,
    Segment, report_csv,
};
use tally_store::delivery::SalesFilter;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use uuid::Uuid;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Caller, IdempotencyKey};
use crate::handlers::written;
use tally_wire::delivery::{KindQuery, ReportQuery};

fn time(name: &str, v: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    v.map(|v| {
        Timestamp::parse_rfc3339(v).ok_or_else(|| {
            ApiError::bad_parameter(name, "an RFC 3339 time, e.g. 2026-11-01T00:00:00Z")
        })
    })
    .transpose()
}

/// Add a draft product.
#[utoipa::path(
    post, path = "/v1/products", tag = "delivery",
    params(("Idempotency-Key" = String, Header, description = "Required; a retry returns the same product")),
    request_body(content = NewProduct, description = "`{title, price: \"9.90 EUR\", pay_to, producer?, licence, instructions, registration_template?}`"),
    responses((status = 201, description = "The draft product", body = Object), (status = 403, description = "forbidden", body = ErrorBody), (status = 422, description = "invalid_request", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn create_product(
    State(state): State<AppState>,
    Caller(by): Caller,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<NewProduct>,
) -> Result<Response, ApiError> {
    let (p, replayed) = state
        .node
        .delivery()
        .product_create(&by, &key.0, body)
        .await?;
    let location = format!("/v1/products/{}", p.id);
    Ok(written(p, replayed, Some(location)))
}

/// Products, newest first.
#[utoipa::path(
    get, path = "/v1/products", tag = "delivery",
    responses((status = 200, description = "Products", body = Vec<Object>)),
    security(("api_key" = []))
)]
pub async fn products(
    State(state): State<AppState>,
    Caller(_by): Caller,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.delivery().products().await?).into_response())
}

/// A product.
#[utoipa::path(
    get, path = "/v1/products/{id}", tag = "delivery",
    params(("id" = Uuid, Path, description = "The product")),
    responses((status = 200, description = "The product", body = Object), (status = 404, description = "not_found", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn product(
    State(state): State<AppState>,
    Caller(_by): Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.delivery().product(Id(id)).await?).into_response())
}

/// Upload an entry of a draft product: the body is sealed as it arrives.
#[utoipa::path(
    put, path = "/v1/products/{id}/entries/{name}", tag = "delivery",
    params(("id" = Uuid, Path, description = "The product"), ("name" = String, Path, description = "File name in the package"), ("kind" = Option<String>, Query, description = "`product` (default) or `document`")),
    request_body(content = Vec<u8>, description = "The file's bytes", content_type = "application/octet-stream"),
    responses((status = 200, description = "`{name, kind, plain_len, plain_sha256, sealed_len}`", body = Object), (status = 409, description = "product_state: not a draft", body = ErrorBody), (status = 413, description = "payload_too_large", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn upload_entry(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath((id, name)): ApiPath<(Uuid, String)>,
    ApiQuery(q): ApiQuery<KindQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    let reader = tokio_util::io::StreamReader::new(
        body.into_data_stream()
            .map_err(|e| std::io::Error::other(e.to_string())),
    );
    let kind = q.kind.as_deref().unwrap_or("product");
    let entry = state
        .node
        .delivery()
        .product_upload(&by, Id(id), &name, kind, reader)
        .await?;
    Ok(Json(entry).into_response())
}

/// Put a draft product on sale.
#[utoipa::path(
    post, path = "/v1/products/{id}/publish", tag = "delivery",
    params(("id" = Uuid, Path, description = "The product")),
    responses((status = 200, description = "The product, active", body = Object), (status = 422, description = "invalid_request: no product entry", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn publish_product(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.delivery().product_publish(&by, Id(id)).await?).into_response())
}

/// Take a product off sale (sold packages stay downloadable).
#[utoipa::path(
    delete, path = "/v1/products/{id}", tag = "delivery",
    params(("id" = Uuid, Path, description = "The product")),
    responses((status = 200, description = "The product, withdrawn", body = Object)),
    security(("api_key" = []))
)]
pub async fn withdraw_product(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.delivery().product_withdraw(&by, Id(id)).await?).into_response())
}

/// Buy a product: the reference file is stored and the package made ready.
#[utoipa::path(
    post, path = "/v1/sales", tag = "delivery",
    params(("Idempotency-Key" = String, Header, description = "Required; a retry returns the same sale")),
    request_body(content = NewSale, description = "`{product, channel, address, name?}`"),
    responses((status = 201, description = "The sale", body = Object), (status = 409, description = "product_state: not on sale", body = ErrorBody), (status = 422, description = "credit_refused, invalid_request", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn buy(
    State(state): State<AppState>,
    Caller(by): Caller,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<NewSale>,
) -> Result<Response, ApiError> {
    let (sale, replayed) = state.node.delivery().buy(&by, &key.0, body).await?;
    let location = format!("/v1/sales/{}", sale.id);
    Ok(written(sale, replayed, Some(location)))
}

/// A sale (its buyer, merchant, producer or the operator).
#[utoipa::path(
    get, path = "/v1/sales/{id}", tag = "delivery",
    params(("id" = Uuid, Path, description = "The sale")),
    responses((status = 200, description = "The sale with its payments", body = Object), (status = 404, description = "not_found", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn sale(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.delivery().sale(&by, Id(id)).await?).into_response())
}

/// A sale by its reference code.
#[utoipa::path(
    get, path = "/v1/sales/by-reference/{code}", tag = "delivery",
    params(("code" = String, Path, description = "The reference code (dashes and case ignored)")),
    responses((status = 200, description = "The sale", body = Object), (status = 422, description = "bad_reference", body = ErrorBody), (status = 404, description = "not_found", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn sale_by_reference(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(code): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.delivery().sale_by_reference(&by, &code).await?).into_response())
}

/// Download a sale's package; `Range: bytes=N-` resumes.
#[utoipa::path(
    get, path = "/v1/sales/{id}/package", tag = "delivery",
    params(("id" = Uuid, Path, description = "The sale"), ("Range" = Option<String>, Header, description = "`bytes=N-` or `bytes=N-M`")),
    responses((status = 200, description = "The package", body = Vec<u8>, content_type = "application/octet-stream"), (status = 206, description = "Part of the package", body = Vec<u8>, content_type = "application/octet-stream"), (status = 416, description = "Range not satisfiable")),
    security(("api_key" = []))
)]
pub async fn package(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(id): ApiPath<Uuid>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    package_response(&state, &by, Id(id), &headers).await
}

/// A sale's package for `by`, whole or the `Range` asked for (the API's download and the
/// checkout page's).
pub(crate) async fn package_response(
    state: &AppState,
    by: &tally_service::Principal,
    id: Id,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let parts = state.node.delivery().package(by, id).await?;
    let etag = format!("\"{}\"", parts.digest);
    let range = match headers.get(header::RANGE) {
        None => None,
        Some(value) => {
            // A stale `If-Range` (another package) means: send the whole thing.
            let fresh = headers
                .get(header::IF_RANGE)
                .is_none_or(|v| v.to_str().is_ok_and(|v| v == etag));
            if fresh {
                match parse_range(value.to_str().unwrap_or(""), parts.len) {
                    Ok(r) => Some(r),
                    Err(()) => {
                        let mut res = ApiError::bad_parameter(
                            "Range",
                            format!(
                                "bytes=N- or bytes=N-M within the package's {} bytes",
                                parts.len
                            ),
                        )
                        .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
                        .into_response();
                        res.headers_mut().insert(
                            header::CONTENT_RANGE,
                            HeaderValue::try_from(format!("bytes */{}", parts.len)).expect("ascii"),
                        );
                        return Ok(res);
                    }
                }
            } else {
                None
            }
        }
    };
    let (start, end) = range.unwrap_or((0, parts.len.saturating_sub(1)));
    let len = if parts.len == 0 { 0 } else { end - start + 1 };
    let stream =
        futures::stream::try_unfold(Reader::new(parts.clone(), start, len), |mut r| async move {
            Ok::<_, std::io::Error>(r.next().await?.map(|b| (b, r)))
        });
    let mut res = Response::new(Body::from_stream(stream));
    *res.status_mut() = if range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, HeaderValue::try_from(etag).expect("hex"));
    if range.is_some() {
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::try_from(format!("bytes {start}-{end}/{}", parts.len)).expect("ascii"),
        );
    }
    Ok(res)
}

/// `bytes=N-`, `bytes=N-M` or `bytes=-N` within `len` → inclusive `(start, end)`.
fn parse_range(value: &str, len: u64) -> Result<(u64, u64), ()> {
    let spec = value.trim().strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') || len == 0 {
        return Err(());
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (len.saturating_sub(n), len - 1)
        }
        (s, "") => (s.parse().map_err(|_| ())?, len - 1),
        (s, e) => {
            let e: u64 = e.parse().map_err(|_| ())?;
            (s.parse().map_err(|_| ())?, e.min(len - 1))
        }
    };
    if start > end || start >= len {
        return Err(());
    }
    Ok((start, end))
}

/// Reads `len` bytes of a package from `start`, piece by piece, in 256 KiB chunks.
struct Reader {
    segments: Vec<Segment>,
    index: usize,
    offset: u64,
    left: u64,
    file: Option<tokio::fs::File>,
}

impl Reader {
    fn new(parts: PackageParts, start: u64, len: u64) -> Reader {
        let mut index = 0;
        let mut offset = start;
        while index < parts.segments.len() && offset >= parts.segments[index].len() {
            offset -= parts.segments[index].len();
            index += 1;
        }
        Reader {
            segments: parts.segments,
            index,
            offset,
            left: len,
            file: None,
        }
    }

    async fn next(&mut self) -> std::io::Result<Option<Bytes>> {
        while self.left > 0 {
            let Some(segment) = self.segments.get(self.index) else {
                return Err(std::io::Error::other("the package ended early"));
            };
            let remaining = segment.len() - self.offset;
            if remaining == 0 {
                self.index += 1;
                self.offset = 0;
                self.file = None;
                continue;
            }
            let want = remaining.min(self.left).min(256 * 1024) as usize;
            let chunk = match segment {
                Segment::Bytes(b) => {
                    let at = self.offset as usize;
                    Bytes::copy_from_slice(&b[at..at + want])
                }
                Segment::File { path, .. } => {
                    if self.file.is_none() {
                        let mut f = tokio::fs::File::open(path).await?;
                        f.seek(std::io::SeekFrom::Start(self.offset)).await?;
                        self.file = Some(f);
                    }
                    let f = self.file.as_mut().expect("opened");
                    let mut buf = vec![0_u8; want];
                    f.read_exact(&mut buf).await?;
                    Bytes::from(buf)
                }
            };
            self.offset += want as u64;
            self.left -= want as u64;
            return Ok(Some(chunk));
        }
        Ok(None)
    }
}

/// Acknowledge an intact package; with `debit_account`, pay and release at once.
#[utoipa::path(
    post, path = "/v1/sales/{id}/acknowledge", tag = "delivery",
    params(("id" = Uuid, Path, description = "The sale"), ("Idempotency-Key" = Option<String>, Header, description = "Optional: names the debit (after a failed confirmation, acknowledge again with a new key); without it the sale has one debit")),
    request_body(content = Acknowledge, description = "`{acknowledgement: {v, sale, reference, package_sha256}, debit_account?}`"),
    responses((status = 200, description = "The sale", body = Object), (status = 202, description = "confirmation_required: the debit is above a threshold; the acknowledgement is kept; `details.session` is the session to verify, then acknowledge again", body = ErrorBody), (status = 409, description = "confirmation_failed", body = ErrorBody), (status = 422, description = "wrong_package, insufficient_funds", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn acknowledge(
    State(state): State<AppState>,
    Caller(by): Caller,
    key: Option<IdempotencyKey>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<Acknowledge>,
) -> Result<Response, ApiError> {
    Ok(Json(
        state
            .node
            .delivery()
            .acknowledge(
                &by,
                Id(id),
                body,
                state.node.oob(),
                key.as_ref().map(|k| k.0.as_str()),
            )
            .await?,
    )
    .into_response())
}

/// Cancel an unpaid sale (its buyer, or the operator): its key is never released, the buyer's
/// credit slot is free, and a later payment quoting its reference waits for a refund.
#[utoipa::path(
    post, path = "/v1/sales/{id}/cancel", tag = "delivery",
    params(("id" = Uuid, Path, description = "The sale")),
    responses((status = 200, description = "The sale, `state: cancelled`", body = Object), (status = 404, description = "not_found", body = ErrorBody), (status = 409, description = "sale_closed: paid or expired", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.delivery().cancel(&by, Id(id)).await?).into_response())
}

/// Pay a sale from an account on this ledger, quoting its reference code.
#[utoipa::path(
    post, path = "/v1/sales/pay", tag = "delivery",
    params(("Idempotency-Key" = String, Header, description = "Required")),
    request_body(content = PayReference, description = "`{reference, from_account, amount: \"9.90 EUR\"}`"),
    responses((status = 201, description = "The payment: `status` matched (key released) or mismatch/duplicate (kept, refundable)", body = Object), (status = 202, description = "confirmation_required: above a threshold; nothing moved; `details.session` is the session to verify, then repeat with the same Idempotency-Key", body = ErrorBody), (status = 409, description = "confirmation_failed", body = ErrorBody), (status = 422, description = "bad_reference, insufficient_funds", body = ErrorBody), (status = 404, description = "not_found", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn pay(
    State(state): State<AppState>,
    Caller(by): Caller,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<PayReference>,
) -> Result<Response, ApiError> {
    let p = state
        .node
        .delivery()
        .pay_reference(&by, &key.0, body, state.node.oob())
        .await?;
    let replayed = p.replayed;
    let location = format!("/v1/payments/{}", p.id);
    Ok(written(p, replayed, Some(location)))
}

/// Set up an external payment receiver (operator only).
#[utoipa::path(
    put, path = "/v1/receivers/{name}", tag = "delivery",
    params(("name" = String, Path, description = "The receiver")),
    request_body(content = ReceiverConfig, description = "`{account, hmac_secret?: hex, ed25519_public?: hex}`"),
    responses((status = 200, description = "The receiver", body = Object), (status = 403, description = "forbidden", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn set_receiver(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<ReceiverConfig>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.delivery().receiver_set(&by, &name, body).await?).into_response())
}

/// A receiver's signed payment notification (no API key: the signature is the credential).
#[utoipa::path(
    post, path = "/v1/receivers/{name}/notifications", tag = "delivery",
    params(("name" = String, Path, description = "The receiver"), ("Tally-Timestamp" = String, Header, description = "Unix seconds"), ("Tally-Signature" = String, Header, description = "`hmac-sha256=<hex>` or `ed25519=<hex>`")),
    request_body(content = tally_wire::delivery::NotificationDoc, description = "The bank's notification, signed over `\"tally/payment-notification/v1\" 0x00 timestamp \".\" body` (docs/protocols/delivery.md)"),
    responses((status = 200, description = "The payment (a replay gives the first answer)", body = Object), (status = 401, description = "bad_signature, stale_notification", body = ErrorBody), (status = 409, description = "idempotency_key_reused: the id was used for another payment", body = ErrorBody)),
)]
pub async fn notification(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let p = state
        .node
        .delivery()
        .receive_notification(
            &name,
            &body,
            &header("tally-timestamp"),
            &header("tally-signature"),
        )
        .await?;
    Ok(Json(p).into_response())
}

/// The released unlock key of a sale (its buyer).
#[utoipa::path(
    get, path = "/v1/sales/{id}/key", tag = "delivery",
    params(("id" = Uuid, Path, description = "The sale")),
    responses((status = 200, description = "`{unlock_key, fingerprint}`", body = Object), (status = 409, description = "not_released", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn sale_key(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let key = state.node.delivery().sale_key(&by, Id(id)).await?;
    let mut res = Json(key).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// A complaint: key lost, package broken, product deleted.
#[utoipa::path(
    post, path = "/v1/complaints", tag = "delivery",
    request_body(content = Complaint, description = "`{reference, kind: \"key_lost\"|\"package_broken\"|\"product_deleted\"}`"),
    responses((status = 200, description = "`{sale, kind, action, download}`", body = Object), (status = 409, description = "not_released", body = ErrorBody), (status = 422, description = "bad_reference", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn complaint(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiJson(body): ApiJson<Complaint>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.delivery().complain(&by, body).await?).into_response())
}

/// Refund a payment that released no key (operator or the merchant).
#[utoipa::path(
    post, path = "/v1/payments/{id}/refund", tag = "delivery",
    params(("id" = Uuid, Path, description = "The payment")),
    responses((status = 200, description = "The payment, refunded", body = Object), (status = 409, description = "not_refundable", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn refund(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    Ok(Json(state.node.delivery().refund(&by, Id(id)).await?).into_response())
}

/// The producer's sales report, JSON or CSV.
#[utoipa::path(
    get, path = "/v1/reports/sales", tag = "delivery",
    params(("producer" = Option<String>, Query, description = "Producer"), ("product" = Option<Uuid>, Query, description = "Product"), ("from" = Option<String>, Query, description = "RFC 3339"), ("to" = Option<String>, Query, description = "RFC 3339"), ("format" = Option<String>, Query, description = "`json` (default) or `csv`")),
    responses((status = 200, description = "Rows: sale, product, title, producer, merchant, buyer, reference, created_at, state, price, paid, paid_at, mismatched_payments, key_fingerprint", body = Vec<Object>)),
    security(("api_key" = []))
)]
pub async fn report(
    State(state): State<AppState>,
    Caller(by): Caller,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    let filter = SalesFilter {
        producer: q.producer.clone(),
        merchant: None,
        product: q.product.map(Id),
        from: time("from", q.from.as_deref())?,
        to: time("to", q.to.as_deref())?,
        ..SalesFilter::default()
    };
    let rows = state.node.delivery().sales_report(&by, filter).await?;
    match q.format.as_deref() {
        None | Some("json") => Ok(Json(rows).into_response()),
        Some("csv") => Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            report_csv(&rows),
        )
            .into_response()),
        Some(_) => Err(ApiError::bad_parameter("format", "json or csv")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_parse_within_the_length() {
        assert_eq!(parse_range("bytes=0-", 10), Ok((0, 9)));
        assert_eq!(parse_range("bytes=4-", 10), Ok((4, 9)));
        assert_eq!(parse_range("bytes=2-5", 10), Ok((2, 5)));
        assert_eq!(parse_range("bytes=2-500", 10), Ok((2, 9)));
        assert_eq!(parse_range("bytes=-3", 10), Ok((7, 9)));
        assert_eq!(parse_range("bytes=10-", 10), Err(()));
        assert_eq!(parse_range("bytes=5-2", 10), Err(()));
        assert_eq!(parse_range("bytes=0-1,4-5", 10), Err(()));
        assert_eq!(parse_range("items=0-1", 10), Err(()));
        assert_eq!(parse_range("bytes=-0", 10), Err(()));
    }
}
