//! The merchant agent's acceptance delivery (SPEC M9; `tally_proto::session::acceptance`):
//! offers signed by the agent's key, orders delivered sealed under a fresh K2 (escrowed at the
//! merchant's operator), booked on the customer's tab only when the customer accepts, and
//! sent once more when the customer rejects a damaged delivery.
//!
//! Routes (JSON; signed records travel as JSON text, so their digests are over the bytes
//! received):
//! * `GET /v1/offers` → `[{product, offer}]`.
//! * `POST /v1/orders` `{session, order}` → `201 {package, sealed_hex}`; `409 key_pending`
//!   while K1 has not reached the merchant's operator (send again).
//! * `POST /v1/orders/{order}/answer` `{answer, purchase?}` → accept: `{wrapped_hex, tab}`
//!   (`purchase` is the tab purchase of the order, booked here); reject: the next sending
//!   `{package, sealed_hex}`, or `{aborted: true}` after the last one.

use crate::agent::{Agent, refusal, refused};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tally_kernel::crypto::VerifyingKey;
use tally_kernel::{Amount, Timestamp};
use tally_proto::session::acceptance::{
    AcceptanceError, Answer, Delivery, Next, Offer, Order, OrderKey, seal_product, send,
};
use tally_proto::session::purchase::{MacedPurchase, Purchase};
use tally_store::agent::{AgentOp, StoredDelivery};

/// One product of the catalogue file (`--catalogue FILE`, a JSON array of these).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueEntry {
    /// The product id.
    pub product: String,
    /// The file holding it (read again at every sending).
    pub file: std::path::PathBuf,
    /// Its price, e.g. "2.50 EUR".
    pub price: String,
    /// What it is.
    pub description: String,
}

/// The agent's offers: each signed once at start, with the file it delivers.
#[derive(Default)]
pub struct Catalogue {
    offers: Vec<(Offer, String, std::path::PathBuf)>,
}

impl Catalogue {
    /// Reads the catalogue file and signs an offer of each product under `key`.
    pub fn load(
        path: &std::path::Path,
        key: &tally_kernel::crypto::SigningKey,
    ) -> anyhow::Result<Catalogue> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the catalogue {}", path.display()))?;
        let entries: Vec<CatalogueEntry> = serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: a JSON array of {{product, file, price, description}}",
                path.display()
            )
        })?;
        let base = path.parent().unwrap_or(std::path::Path::new("."));
        let mut offers = Vec::new();
        for e in entries {
            let file = base.join(&e.file);
            let bytes = std::fs::read(&file)
                .with_context(|| format!("product {}: reading {}", e.product, file.display()))?;
            let price: Amount = e
                .price
                .parse()
                .with_context(|| format!("product {}: price {:?}", e.product, e.price))?;
            let offer = Offer::of(&e.product, &e.description, price, &bytes)
                .map_err(|err| anyhow::anyhow!("product {}: {err}", e.product))?;
            let signed = String::from_utf8(offer.sign(key))?;
            offers.push((offer, signed, file));
        }
        Ok(Catalogue { offers })
    }

    fn find(&self, product: &str) -> Option<&(Offer, String, std::path::PathBuf)> {
        self.offers.iter().find(|(o, _, _)| o.product == product)
    }
}

fn acceptance_refusal(e: AcceptanceError) -> Response {
    let message = e.to_string();
    let (status, code) = match e {
        AcceptanceError::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed"),
        AcceptanceError::BadSignature(_) => (StatusCode::UNAUTHORIZED, "bad_signature"),
        AcceptanceError::Mismatch(_) => (StatusCode::UNPROCESSABLE_ENTITY, "mismatch"),
        AcceptanceError::Damaged | AcceptanceError::Sealed(_) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "damaged")
        }
        AcceptanceError::Replayed => (StatusCode::CONFLICT, "replayed"),
        AcceptanceError::Over(_) => (StatusCode::CONFLICT, "order_over"),
    };
    refusal(status, code, message, None)
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "merchant agent: {what}");
    refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("{what}; nothing was delivered or booked, send again"),
        None,
    )
}

/// `GET /v1/offers`.
pub async fn offers(State(a): State<Agent>) -> Response {
    let list: Vec<_> = a
        .catalogue
        .offers
        .iter()
        .map(|(o, signed, _)| serde_json::json!({"product": o.product, "offer": signed}))
        .collect();
    Json(list).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    session: String,
    order: String,
}

fn sending_body(d: &StoredDelivery) -> serde_json::Value {
    serde_json::json!({
        "order": d.delivery.order.order,
        "attempt": d.delivery.attempt,
        "package": d.package,
        "sealed_hex": hex::encode(&d.sealed),
    })
}

/// The operator's node key, read once (it signs K1).
pub(crate) async fn operator_key(a: &Agent) -> Result<VerifyingKey, Response> {
    let key = a
        .operator_key
        .get_or_try_init(|| async {
            let node = a.node.node().await.map_err(|e| e.to_string())?;
            VerifyingKey::from_hex(&node.node_key).map_err(|e| e.to_string())
        })
        .await;
    key.copied()
        .map_err(|e| unavailable("the operator did not say its key", e))
}

/// Seals the product of `order` under a fresh K2, escrows K2 at the operator, and signs the
/// package: the `attempt`-th sending.
async fn sending(
    a: &Agent,
    session: &str,
    order: &Order,
    attempt: u32,
) -> Result<(tally_proto::session::acceptance::Sending, [u8; 32]), Response> {
    let Some((_, _, file)) = a.catalogue.find(&order.product) else {
        return Err(refusal(
            StatusCode::NOT_FOUND,
            "unknown_product",
            format!("no product {}", order.product),
            None,
        ));
    };
    let bytes = std::fs::read(file).map_err(|e| unavailable("the product could not be read", e))?;
    let mut k2 = [0u8; 32];
    getrandom::fill(&mut k2).map_err(|e| unavailable("no randomness", e))?;
    let sealed = seal_product(&k2, order.order, &bytes).map_err(acceptance_refusal)?;
    let s = send(order, attempt, sealed, &a.key);
    let package = tally_proto::session::acceptance::digest(&s.package);
    // Without K2 at the operator no arbiter could ever open it: escrow first.
    a.node
        .order_escrow(
            session,
            &order.order.to_string(),
            &hex::encode(k2),
            &package,
        )
        .await
        .map_err(|e| unavailable("the operator did not take K2 in escrow", e))?;
    Ok((s, k2))
}

/// `POST /v1/orders`: the customer's signed order. K1 must have reached the operator; the
/// first sending goes back (the same one again for a repeat of the order).
pub async fn order(State(a): State<Agent>, Json(req): Json<NewOrder>) -> Response {
    let session = match req.session.parse::<tally_proto::session::ids::SessionId>() {
        Ok(s) => s,
        Err(e) => return crate::agent::malformed_session(e),
    };
    let (view, customer) = match crate::agent::open_session(&a, &req.session).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    // The session's current transaction (M4).
    let Some(transaction) = crate::agent::current_transaction(&view, session) else {
        return crate::agent::no_transaction();
    };
    // Which product: read the order's claim, then open it against that offer.
    let product = serde_json::from_str::<tally_kernel::crypto::SignedRecord>(&req.order)
        .ok()
        .and_then(|r| serde_json::from_slice::<Order>(&r.bytes).ok())
        .map(|o| o.product);
    let Some((offer, offer_signed, _)) = product.as_deref().and_then(|p| a.catalogue.find(p))
    else {
        return refusal(
            StatusCode::NOT_FOUND,
            "unknown_product",
            "the order names no product of this merchant".into(),
            None,
        );
    };
    let order = match Order::open(
        req.order.as_bytes(),
        &customer,
        transaction,
        offer_signed.as_bytes(),
        offer,
    ) {
        Ok(o) => o,
        Err(e) => return acceptance_refusal(e),
    };
    match a.journal.delivery(&order.order.to_string()).await {
        Ok(Some(d)) if d.delivery.order == order => {
            return (StatusCode::CREATED, Json(sending_body(&d))).into_response();
        }
        Ok(Some(_)) => {
            return refusal(
                StatusCode::CONFLICT,
                "order_exists",
                "another order under that id".into(),
                None,
            );
        }
        Ok(None) => {}
        Err(e) => return unavailable("the journal could not be read", e),
    }
    // K1, as the operator vouches for it.
    let mta = match operator_key(&a).await {
        Ok(k) => k,
        Err(r) => return r,
    };
    let signed = match a
        .node
        .order_key(&req.session, &order.order.to_string())
        .await
    {
        Ok(k) => k.signed,
        Err(e) if e.status() == Some(404) => {
            return refusal(
                StatusCode::CONFLICT,
                "key_pending",
                "K1 of this order has not reached the merchant's operator yet: send again".into(),
                None,
            );
        }
        Err(e) => return unavailable("the operator did not answer", e),
    };
    let k1 = match OrderKey::open(signed.as_bytes(), &mta, &order) {
        Ok(k) => k,
        Err(e) => return acceptance_refusal(e),
    };
    let (s, k2) = match sending(&a, &req.session, &order, 1).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let stored = StoredDelivery {
        session: req.session.clone(),
        customer_key: customer.to_hex(),
        delivery: Delivery::start(order, k1, k2, &s.package),
        package: String::from_utf8_lossy(&s.package).into_owned(),
        sealed: s.sealed,
    };
    if let Err(e) = a.journal.put_delivery(&stored).await {
        return unavailable("the journal could not be written", e);
    }
    (StatusCode::CREATED, Json(sending_body(&stored))).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderAnswer {
    answer: String,
    #[serde(default)]
    purchase: Option<MacedPurchase>,
}

/// `POST /v1/orders/{order}/answer`: the customer's signed accept (with the order's tab
/// purchase, booked here before K2 goes) or reject (sent again once, then aborted).
pub async fn answer(
    State(a): State<Agent>,
    Path(order_id): Path<String>,
    Json(req): Json<OrderAnswer>,
) -> Response {
    let mut stored = match a.journal.delivery(&order_id).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return refusal(
                StatusCode::NOT_FOUND,
                "unknown_order",
                "no such order".into(),
                None,
            );
        }
        Err(e) => return unavailable("the journal could not be read", e),
    };
    let Ok(customer) = VerifyingKey::from_hex(&stored.customer_key) else {
        return unavailable("a corrupt order", "customer key");
    };
    let answer = match Answer::open(req.answer.as_bytes(), &customer) {
        Ok(x) => x,
        Err(e) => return acceptance_refusal(e),
    };
    let (after, next) = match stored
        .delivery
        .clone()
        .answer(&answer, Timestamp::now().as_micros())
    {
        Ok(x) => x,
        Err(e) => return acceptance_refusal(e),
    };
    match next {
        Next::Release { wrapped } => {
            // "Without the accept the merchant can not claim payment": the accept books it.
            let Some(p) = req.purchase else {
                return refusal(
                    StatusCode::BAD_REQUEST,
                    "malformed",
                    "an accept carries the order's tab purchase".into(),
                    None,
                );
            };
            let fits = serde_json::from_str::<Purchase>(&p.bytes).is_ok_and(|bought| {
                bought.transaction == after.order.transaction
                    && bought.price == after.order.price
                    && bought.item == order_item(&after.order)
            });
            if !fits {
                return refusal(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "mismatch",
                    format!(
                        "the purchase must be the order's: item {:?} at {}",
                        order_item(&after.order),
                        after.order.price
                    ),
                    None,
                );
            }
            let tab = match a
                .journal
                .submit(after.order.transaction, AgentOp::Buy(p))
                .await
            {
                Ok(t) => t,
                Err(e) => return refused(e),
            };
            if tab.closed {
                a.wake.notify_one();
            }
            stored.delivery = after;
            if let Err(e) = a.journal.put_delivery(&stored).await {
                return unavailable("the journal could not be written", e);
            }
            Json(serde_json::json!({"wrapped_hex": hex::encode(wrapped), "tab": tab}))
                .into_response()
        }
        Next::Resend => {
            let session = stored.session.clone();
            let (s, k2) = match sending(&a, &session, &after.order, after.attempt + 1).await {
                Ok(s) => s,
                Err(r) => return r,
            };
            stored.delivery = after.resent(k2, &s.package);
            stored.package = String::from_utf8_lossy(&s.package).into_owned();
            stored.sealed = s.sealed;
            if let Err(e) = a.journal.put_delivery(&stored).await {
                return unavailable("the journal could not be written", e);
            }
            Json(sending_body(&stored)).into_response()
        }
        Next::Abort => {
            stored.delivery = after;
            if let Err(e) = a.journal.put_delivery(&stored).await {
                return unavailable("the journal could not be written", e);
            }
            Json(serde_json::json!({"aborted": true})).into_response()
        }
    }
}

/// The tab purchase an order books: its item names the order (the purchase list, and so the
/// records both sides sign, cover the delivery).
pub fn order_item(order: &Order) -> String {
    format!("order {} {}", order.order, order.product)
}
