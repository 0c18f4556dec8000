//! Tables of locked delivery (SPEC D1–D11): products and their sealed entries, sales (the
//! reference file of D5), payments quoting a reference code, and external payment receivers.
//!
//! As in [`crate::oob`], writes are [`Attachment`]s of a ledger command: a sale commits with
//! its journal entry, a release with the transfer that paid for it. What decides (a sale still
//! open, the buyer's open orders under the credit limit, a payment not yet refunded) is a
//! [`crate::Guard`] evaluated inside the writer's transaction, so several nodes sharing one
//! database cannot release a sale twice or refund a payment twice.

use crate::guarded::{Conflict, RowWrite};
use crate::oob::{blob, count_below, insert, opt_id, row, row_is};
use crate::rows::{Value, id as decode_id, state};
use crate::{Attachment, Store, StoreError};
use sqlx::Row;
use sqlx::any::AnyRow;
use tally_kernel::{Id, Timestamp};
use tally_proto::delivery::sale::{PaymentPath, PaymentStatus, ProductState, SaleState};

// ----- products ----------------------------------------------------------------------------

/// A product on sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductRow {
    /// Its id.
    pub id: Id,
    /// Who sells it (the distributor; owns `pay_to`).
    pub merchant: String,
    /// Who made it: the sales report goes to the producer.
    pub producer: String,
    /// Shown in the instruction file.
    pub title: String,
    /// The price in minor units.
    pub price_minor: i64,
    /// ISO-4217 code.
    pub currency: String,
    /// The merchant account credited.
    pub pay_to: Id,
    /// Licence text.
    pub licence: String,
    /// How to pay and unlock, in the merchant's words.
    pub instructions: String,
    /// The registration file's template (`{{sale}}`, `{{reference}}`, `{{buyer}}`, …).
    pub registration_template: String,
    /// Where it stands.
    pub state: ProductState,
    /// The content key sealed under the node's delivery key.
    pub content_key_wrap: Vec<u8>,
    /// The (namespaced) idempotency key that created it.
    pub client_key: Option<String>,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
}

/// A sealed entry of a product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRow {
    /// The product.
    pub product_id: Id,
    /// File name in the package.
    pub name: String,
    /// `product` or `document`.
    pub kind: String,
    /// Sealed bytes.
    pub sealed_len: i64,
    /// SHA-256 of the sealed bytes, hex (what a version 2 package lists): entries sealed
    /// before package format 3 have it.
    pub sealed_sha256: Option<String>,
    /// BLAKE3 of the sealed bytes, hex (what a version 3 package lists): entries sealed since
    /// package format 3 have it. The table refuses an entry with neither.
    pub sealed_blake3: Option<String>,
    /// Plain bytes.
    pub plain_len: i64,
    /// SHA-256 of the plain bytes, hex.
    pub plain_sha256: String,
    /// The sealed file, relative to the node's data directory.
    pub file: String,
    /// Uploaded.
    pub created_at: Timestamp,
}

/// Adds a draft product.
pub fn insert_product(p: &ProductRow) -> Attachment {
    row(
        "INSERT INTO products (id, merchant, producer, title, price_minor, currency, pay_to, \
         licence, instructions, registration_template, state, content_key_wrap, client_key, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        vec![
            blob(&p.id),
            Value::Text(p.merchant.clone()),
            Value::Text(p.producer.clone()),
            Value::Text(p.title.clone()),
            Value::Int(p.price_minor),
            Value::Text(p.currency.clone()),
            blob(&p.pay_to),
            Value::Text(p.licence.clone()),
            Value::Text(p.instructions.clone()),
            Value::Text(p.registration_template.clone()),
            Value::Text(p.state.as_str().into()),
            Value::Blob(p.content_key_wrap.clone()),
            Value::opt_text(p.client_key.clone()),
            Value::Int(p.created_at.as_micros()),
            Value::Int(p.updated_at.as_micros()),
        ],
    )
}

/// Moves a product from state `from` to `to`; fails if another request moved it first.
pub fn set_product_state(
    id: Id,
    from: ProductState,
    to: ProductState,
    now: Timestamp,
) -> [Attachment; 2] {
    [
        row_is(
            "products",
            "id",
            blob(&id),
            vec![("state", Value::Text(from.as_str().into()))],
            Conflict::Moved("the product changed meanwhile"),
        ),
        Attachment::Row(RowWrite::Statement {
            sql: "UPDATE products SET state = $1, updated_at = $2 WHERE id = $3",
            params: vec![
                Value::Text(to.as_str().into()),
                Value::Int(now.as_micros()),
                blob(&id),
            ],
            touches: Some(("products", blob(&id))),
        }),
    ]
}

/// Adds or replaces an entry of a draft product.
pub fn upsert_entry(e: &EntryRow) -> [Attachment; 2] {
    [
        row_is(
            "products",
            "id",
            blob(&e.product_id),
            vec![("state", Value::Text(ProductState::Draft.as_str().into()))],
            Conflict::Moved("the product is no longer a draft"),
        ),
        row(
            "INSERT INTO product_entries (product_id, name, kind, sealed_len, sealed_sha256, \
             plain_len, plain_sha256, file, created_at, sealed_blake3) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (product_id, name) DO UPDATE SET kind = excluded.kind, \
             sealed_len = excluded.sealed_len, sealed_sha256 = excluded.sealed_sha256, \
             sealed_blake3 = excluded.sealed_blake3, plain_len = excluded.plain_len, plain_sha256 = excluded.plain_sha256, \
             file = excluded.file, created_at = excluded.created_at",
            vec![
                blob(&e.product_id),
                Value::Text(e.name.clone()),
                Value::Text(e.kind.clone()),
                Value::Int(e.sealed_len),
                Value::opt_text(e.sealed_sha256.clone()),
                Value::Int(e.plain_len),
                Value::Text(e.plain_sha256.clone()),
                Value::Text(e.file.clone()),
                Value::Int(e.created_at.as_micros()),
                Value::opt_text(e.sealed_blake3.clone()),
            ],
        ),
    ]
}

const PRODUCT_SELECT: &str = "SELECT id, merchant, producer, title, price_minor, currency, pay_to, \
     licence, instructions, registration_template, state, content_key_wrap, client_key, created_at, \
     updated_at FROM products";

fn product(r: &AnyRow) -> Result<ProductRow, StoreError> {
    Ok(ProductRow {
        id: decode_id(&r.try_get::<Vec<u8>, _>("id")?)?,
        merchant: r.try_get("merchant")?,
        producer: r.try_get("producer")?,
        title: r.try_get("title")?,
        price_minor: r.try_get("price_minor")?,
        currency: r.try_get("currency")?,
        pay_to: decode_id(&r.try_get::<Vec<u8>, _>("pay_to")?)?,
        licence: r.try_get("licence")?,
        instructions: r.try_get("instructions")?,
        registration_template: r.try_get("registration_template")?,
        state: state(r, "state", ProductState::parse)?,
        content_key_wrap: r.try_get("content_key_wrap")?,
        client_key: r.try_get("client_key")?,
        created_at: Timestamp(r.try_get("created_at")?),
        updated_at: Timestamp(r.try_get("updated_at")?),
    })
}

fn entry(r: &AnyRow) -> Result<EntryRow, StoreError> {
    Ok(EntryRow {
        product_id: decode_id(&r.try_get::<Vec<u8>, _>("product_id")?)?,
        name: r.try_get("name")?,
        kind: r.try_get("kind")?,
        sealed_len: r.try_get("sealed_len")?,
        sealed_sha256: r.try_get("sealed_sha256")?,
        sealed_blake3: r.try_get("sealed_blake3")?,
        plain_len: r.try_get("plain_len")?,
        plain_sha256: r.try_get("plain_sha256")?,
        file: r.try_get("file")?,
        created_at: Timestamp(r.try_get("created_at")?),
    })
}

// ----- sales -------------------------------------------------------------------------------

/// A sale: the reference file (D5) and the pieces of its package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleRow {
    /// Its id.
    pub id: Id,
    /// The product.
    pub product_id: Id,
    /// Who bought (the API key's owner).
    pub buyer: String,
    /// The name the buyer gave.
    pub name: String,
    /// The buyer's delivery channel.
    pub channel: String,
    /// The buyer's address on that channel.
    pub address: String,
    /// The reference code, 21 characters without separators.
    pub reference: String,
    /// The price at the time of sale.
    pub price_minor: i64,
    /// Its currency.
    pub currency: String,
    /// Where it stands.
    pub state: SaleState,
    /// The package's header bytes.
    pub header: Vec<u8>,
    /// The sale's sealed registration file.
    pub registration: Vec<u8>,
    /// The package trailer.
    pub trailer: Vec<u8>,
    /// Total package length.
    pub package_len: i64,
    /// The package digest (what the trailer signs), hex.
    pub package_digest: String,
    /// First 16 hex digits of SHA-256 of the unlock key.
    pub key_fingerprint: String,
    /// The (namespaced) idempotency key of the purchase.
    pub client_key: Option<String>,
    /// When sold.
    pub created_at: Timestamp,
    /// When the buyer acknowledged an intact package.
    pub delivered_at: Option<Timestamp>,
    /// When paid.
    pub paid_at: Option<Timestamp>,
    /// When the key was released.
    pub released_at: Option<Timestamp>,
    /// When the overdue alert went out.
    pub overdue_at: Option<Timestamp>,
    /// When the sale next needs a step without input (its machine's `poll_timeout`).
    pub wake_at: Option<Timestamp>,
}

/// Stores a sale, if the buyer has fewer than `open_max` unpaid sales (the credit rule, D1).
pub fn insert_sale(s: &SaleRow, open_max: i64) -> [Attachment; 2] {
    [
        count_below(
            "SELECT COUNT(*) FROM sales WHERE buyer = $1 AND state = $2",
            vec![
                Value::Text(s.buyer.clone()),
                Value::Text(SaleState::Open.as_str().into()),
            ],
            format!("sales-open:{}", s.buyer),
            open_max,
            Conflict::Limit("the buyer has too many unpaid orders"),
        ),
        row(
            "INSERT INTO sales (id, product_id, buyer, name, channel, address, reference, \
             price_minor, currency, state, header, registration, trailer, package_len, \
             package_digest, key_fingerprint, client_key, created_at, wake_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
            vec![
                blob(&s.id),
                blob(&s.product_id),
                Value::Text(s.buyer.clone()),
                Value::Text(s.name.clone()),
                Value::Text(s.channel.clone()),
                Value::Text(s.address.clone()),
                Value::Text(s.reference.clone()),
                Value::Int(s.price_minor),
                Value::Text(s.currency.clone()),
                Value::Text(s.state.as_str().into()),
                Value::Blob(s.header.clone()),
                Value::Blob(s.registration.clone()),
                Value::Blob(s.trailer.clone()),
                Value::Int(s.package_len),
                Value::Text(s.package_digest.clone()),
                Value::Text(s.key_fingerprint.clone()),
                Value::opt_text(s.client_key.clone()),
                Value::Int(s.created_at.as_micros()),
                Value::opt_int(s.wake_at.map(|t| t.as_micros())),
            ],
        ),
    ]
}

/// Marks an open sale paid and its key released; fails if it was released meanwhile.
pub fn release_sale(id: Id, now: Timestamp) -> [Attachment; 2] {
    [
        row_is(
            "sales",
            "id",
            blob(&id),
            vec![("state", Value::Text(SaleState::Open.as_str().into()))],
            Conflict::Moved("the sale was paid meanwhile"),
        ),
        Attachment::Row(RowWrite::Statement {
            sql: "UPDATE sales SET state = $1, paid_at = $2, released_at = $2, wake_at = NULL \
                  WHERE id = $3",
            params: vec![
                Value::Text(SaleState::Released.as_str().into()),
                Value::Int(now.as_micros()),
                blob(&id),
            ],
            touches: Some(("sales", blob(&id))),
        }),
    ]
}

/// Records the buyer's acknowledgement of an intact package (the first one counts).
pub fn mark_delivered(id: Id, now: Timestamp) -> Attachment {
    row(
        "UPDATE sales SET delivered_at = COALESCE(delivered_at, $1) WHERE id = $2",
        vec![Value::Int(now.as_micros()), blob(&id)],
    )
}

/// Records that the overdue alert went out; fails if another node sent it first.
pub fn mark_overdue(id: Id, now: Timestamp, next_wake: Option<Timestamp>) -> [Attachment; 2] {
    [
        row_is(
            "sales",
            "id",
            blob(&id),
            vec![
                ("overdue_at", Value::NullInt),
                ("state", Value::Text(SaleState::Open.as_str().into())),
            ],
            Conflict::Moved("the alert went out meanwhile"),
        ),
        Attachment::Row(RowWrite::Statement {
            sql: "UPDATE sales SET overdue_at = $1, wake_at = $3 WHERE id = $2",
            params: vec![
                Value::Int(now.as_micros()),
                blob(&id),
                Value::opt_int(next_wake.map(|t| t.as_micros())),
            ],
            touches: Some(("sales", blob(&id))),
        }),
    ]
}

impl Store {
    /// Sets when an open sale's machine is next due: a timer hint, not state (nothing the
    /// sale's machine decides from), so it is written directly, not journaled.
    pub async fn set_sale_wake(
        &self,
        id: Id,
        wake_at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        crate::rows::bind_all(
            sqlx::query("UPDATE sales SET wake_at = $1 WHERE id = $2 AND state = 'open'"),
            vec![Value::opt_int(wake_at.map(|t| t.as_micros())), blob(&id)],
        )
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

/// Marks a released sale refunded (its price went back to the buyer).
pub fn refund_sale(id: Id) -> [Attachment; 2] {
    [
        row_is(
            "sales",
            "id",
            blob(&id),
            vec![("state", Value::Text(SaleState::Released.as_str().into()))],
            Conflict::Moved("the sale was refunded meanwhile"),
        ),
        Attachment::Row(RowWrite::Statement {
            sql: "UPDATE sales SET state = $1 WHERE id = $2",
            params: vec![Value::Text(SaleState::Refunded.as_str().into()), blob(&id)],
            touches: Some(("sales", blob(&id))),
        }),
    ]
}

/// Ends an unpaid sale (expired or cancelled), if it is still open: its key is never released
/// and it no longer counts against the buyer's open orders.
pub fn close_sale(id: Id, state: SaleState) -> [Attachment; 2] {
    [
        row_is(
            "sales",
            "id",
            blob(&id),
            vec![("state", Value::Text(SaleState::Open.as_str().into()))],
            Conflict::Moved("the sale was paid or closed meanwhile"),
        ),
        Attachment::Row(RowWrite::Statement {
            sql: "UPDATE sales SET state = $1, wake_at = NULL WHERE id = $2",
            params: vec![Value::Text(state.as_str().into()), blob(&id)],
            touches: Some(("sales", blob(&id))),
        }),
    ]
}

const SALE_SELECT: &str = "SELECT id, product_id, buyer, name, channel, address, reference, \
     price_minor, currency, state, header, registration, trailer, package_len, package_digest, \
     key_fingerprint, client_key, created_at, delivered_at, paid_at, released_at, overdue_at, \
     wake_at FROM sales";

fn opt_time(r: &AnyRow, name: &str) -> Result<Option<Timestamp>, StoreError> {
    Ok(r.try_get::<Option<i64>, _>(name)?.map(Timestamp))
}

fn sale(r: &AnyRow) -> Result<SaleRow, StoreError> {
    Ok(SaleRow {
        id: decode_id(&r.try_get::<Vec<u8>, _>("id")?)?,
        product_id: decode_id(&r.try_get::<Vec<u8>, _>("product_id")?)?,
        buyer: r.try_get("buyer")?,
        name: r.try_get("name")?,
        channel: r.try_get("channel")?,
        address: r.try_get("address")?,
        reference: r.try_get("reference")?,
        price_minor: r.try_get("price_minor")?,
        currency: r.try_get("currency")?,
        state: state(r, "state", SaleState::parse)?,
        header: r.try_get("header")?,
        registration: r.try_get("registration")?,
        trailer: r.try_get("trailer")?,
        package_len: r.try_get("package_len")?,
        package_digest: r.try_get("package_digest")?,
        key_fingerprint: r.try_get("key_fingerprint")?,
        client_key: r.try_get("client_key")?,
        created_at: Timestamp(r.try_get("created_at")?),
        delivered_at: opt_time(r, "delivered_at")?,
        paid_at: opt_time(r, "paid_at")?,
        released_at: opt_time(r, "released_at")?,
        overdue_at: opt_time(r, "overdue_at")?,
        wake_at: opt_time(r, "wake_at")?,
    })
}

// ----- payments ----------------------------------------------------------------------------

/// A payment quoting a reference code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRow {
    /// Its id.
    pub id: Id,
    /// The sale, when the reference is known.
    pub sale_id: Option<Id>,
    /// The reference quoted (as given, normalised when it parsed).
    pub reference: String,
    /// How it came.
    pub path: PaymentPath,
    /// Amount paid.
    pub amount_minor: i64,
    /// Its currency.
    pub currency: String,
    /// What became of it.
    pub status: PaymentStatus,
    /// The ledger transfer that moved the money in.
    pub transfer_id: Id,
    /// Who paid: an account owner, or `receiver:<name>:<payer>`.
    pub payer: String,
    /// The account a refund goes back to (the payer's, or the receiver's settlement account).
    pub refund_to: Id,
    /// The account holding the money now (the merchant's, or the operator's suspense).
    pub holder: Id,
    /// The ledger idempotency key of the payment.
    pub client_key: String,
    /// When.
    pub created_at: Timestamp,
    /// Reserved for the refund transfer (the refund is found by its key `:refund:<id>`).
    pub refund_id: Option<Id>,
}

/// Records a payment.
pub fn insert_payment(p: &PaymentRow) -> Attachment {
    insert(
        "delivery_payments",
        "id, sale_id, reference, path, amount_minor, currency, status, transfer_id, payer, \
         refund_to, holder, client_key, created_at, refund_id",
        vec![
            blob(&p.id),
            Value::opt_id(p.sale_id),
            Value::Text(p.reference.clone()),
            Value::Text(p.path.as_str().into()),
            Value::Int(p.amount_minor),
            Value::Text(p.currency.clone()),
            Value::Text(p.status.as_str().into()),
            blob(&p.transfer_id),
            Value::Text(p.payer.clone()),
            blob(&p.refund_to),
            blob(&p.holder),
            Value::Text(p.client_key.clone()),
            Value::Int(p.created_at.as_micros()),
            Value::NullBlob,
        ],
    )
}

/// Marks a payment with `status` refunded; the guard makes a second refund fail.
pub fn refund_payment(id: Id, status: PaymentStatus) -> [Attachment; 2] {
    [
        row_is(
            "delivery_payments",
            "id",
            blob(&id),
            vec![("status", Value::Text(status.as_str().into()))],
            Conflict::Moved("the payment was refunded meanwhile"),
        ),
        Attachment::Row(RowWrite::Statement {
            sql: "UPDATE delivery_payments SET status = $1 WHERE id = $2",
            params: vec![
                Value::Text(PaymentStatus::Refunded.as_str().into()),
                blob(&id),
            ],
            touches: Some(("delivery_payments", blob(&id))),
        }),
    ]
}

const PAYMENT_SELECT: &str = "SELECT id, sale_id, reference, path, amount_minor, currency, status, \
     transfer_id, payer, refund_to, holder, client_key, created_at, refund_id FROM delivery_payments";

fn payment(r: &AnyRow) -> Result<PaymentRow, StoreError> {
    Ok(PaymentRow {
        id: decode_id(&r.try_get::<Vec<u8>, _>("id")?)?,
        sale_id: opt_id(r, "sale_id")?,
        reference: r.try_get("reference")?,
        path: state(r, "path", PaymentPath::parse)?,
        amount_minor: r.try_get("amount_minor")?,
        currency: r.try_get("currency")?,
        status: state(r, "status", PaymentStatus::parse)?,
        transfer_id: decode_id(&r.try_get::<Vec<u8>, _>("transfer_id")?)?,
        payer: r.try_get("payer")?,
        refund_to: decode_id(&r.try_get::<Vec<u8>, _>("refund_to")?)?,
        holder: decode_id(&r.try_get::<Vec<u8>, _>("holder")?)?,
        client_key: r.try_get("client_key")?,
        created_at: Timestamp(r.try_get("created_at")?),
        refund_id: opt_id(r, "refund_id")?,
    })
}

// ----- receivers ---------------------------------------------------------------------------

/// An external payment receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverRow {
    /// Its name (in the webhook path).
    pub name: String,
    /// The operator's settlement account standing for the receiver.
    pub account: Id,
    /// `hmac` or `ed25519`.
    pub kind: String,
    /// The Ed25519 public key, or the HMAC secret sealed under the node's delivery key.
    pub key: Vec<u8>,
    /// Last changed.
    pub updated_at: Timestamp,
}

/// Adds or replaces a receiver.
pub fn upsert_receiver(r: &ReceiverRow) -> Attachment {
    row(
        "INSERT INTO payment_receivers (name, account, kind, key, updated_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (name) DO UPDATE SET account = excluded.account, kind = excluded.kind, \
         key = excluded.key, updated_at = excluded.updated_at",
        vec![
            Value::Text(r.name.clone()),
            blob(&r.account),
            Value::Text(r.kind.clone()),
            Value::Blob(r.key.clone()),
            Value::Int(r.updated_at.as_micros()),
        ],
    )
}

/// Filters of the producer's sales report.
#[derive(Debug, Clone, Default)]
pub struct SalesFilter {
    /// Only this producer's products.
    pub producer: Option<String>,
    /// Only this merchant's products.
    pub merchant: Option<String>,
    /// Only this product.
    pub product: Option<Id>,
    /// Sold at or after.
    pub from: Option<Timestamp>,
    /// Sold before.
    pub to: Option<Timestamp>,
    /// Only this buyer's purchases.
    pub buyer: Option<String>,
    /// Newest first (the default is oldest first, as a report reads).
    pub newest_first: bool,
    /// Only open sales past their overdue alert (D9).
    pub overdue_only: bool,
}

// ----- reads -------------------------------------------------------------------------------

impl Store {
    /// A product.
    pub async fn product(&self, id: Id) -> Result<Option<ProductRow>, StoreError> {
        let rows = self
            .fetch_all(format!("{PRODUCT_SELECT} WHERE id = $1"), vec![blob(&id)])
            .await?;
        rows.first().map(product).transpose()
    }

    /// The product created with a (namespaced) idempotency key.
    pub async fn product_by_key(&self, key: &str) -> Result<Option<ProductRow>, StoreError> {
        let rows = self
            .fetch_all(
                format!("{PRODUCT_SELECT} WHERE client_key = $1"),
                vec![Value::Text(key.into())],
            )
            .await?;
        rows.first().map(product).transpose()
    }

    /// Products, newest first (at most `limit`).
    pub async fn products(&self, limit: i64) -> Result<Vec<ProductRow>, StoreError> {
        let rows = self
            .fetch_all(
                format!("{PRODUCT_SELECT} ORDER BY created_at DESC LIMIT $1"),
                vec![Value::Int(limit)],
            )
            .await?;
        rows.iter().map(product).collect()
    }

    /// A product's entries in package order: the product file first, then documents by name.
    pub async fn product_entries(&self, id: Id) -> Result<Vec<EntryRow>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT product_id, name, kind, sealed_len, sealed_sha256, sealed_blake3, plain_len, \
                 plain_sha256, file, created_at FROM product_entries WHERE product_id = $1 \
                 ORDER BY CASE kind WHEN 'product' THEN 0 ELSE 1 END, name"
                    .into(),
                vec![blob(&id)],
            )
            .await?;
        rows.iter().map(entry).collect()
    }

    /// A sale.
    pub async fn sale(&self, id: Id) -> Result<Option<SaleRow>, StoreError> {
        let rows = self
            .fetch_all(format!("{SALE_SELECT} WHERE id = $1"), vec![blob(&id)])
            .await?;
        rows.first().map(sale).transpose()
    }

    /// The sale with this reference code (21 characters, no separators).
    pub async fn sale_by_reference(&self, reference: &str) -> Result<Option<SaleRow>, StoreError> {
        let rows = self
            .fetch_all(
                format!("{SALE_SELECT} WHERE reference = $1"),
                vec![Value::Text(reference.into())],
            )
            .await?;
        rows.first().map(sale).transpose()
    }

    /// The sale made with a (namespaced) idempotency key.
    pub async fn sale_by_key(&self, key: &str) -> Result<Option<SaleRow>, StoreError> {
        let rows = self
            .fetch_all(
                format!("{SALE_SELECT} WHERE client_key = $1"),
                vec![Value::Text(key.into())],
            )
            .await?;
        rows.first().map(sale).transpose()
    }

    /// Sales matching `filter`, oldest first, with their product (at most `limit`).
    pub async fn sales_report(
        &self,
        filter: &SalesFilter,
        limit: i64,
    ) -> Result<Vec<(SaleRow, ProductRow)>, StoreError> {
        let mut sql = "SELECT s.id FROM sales s JOIN products p ON p.id = s.product_id WHERE 1 = 1"
            .to_string();
        let mut params = Vec::new();
        let mut add = |clause: &str, v: Value, params: &mut Vec<Value>| {
            params.push(v);
            sql.push_str(&clause.replace('?', &format!("${}", params.len())));
        };
        if let Some(p) = &filter.producer {
            add(" AND p.producer = ?", Value::Text(p.clone()), &mut params);
        }
        if let Some(m) = &filter.merchant {
            add(" AND p.merchant = ?", Value::Text(m.clone()), &mut params);
        }
        if let Some(id) = &filter.product {
            add(" AND s.product_id = ?", blob(id), &mut params);
        }
        if let Some(b) = &filter.buyer {
            add(" AND s.buyer = ?", Value::Text(b.clone()), &mut params);
        }
        if filter.overdue_only {
            add(
                " AND s.overdue_at IS NOT NULL AND s.state = ?",
                Value::Text(SaleState::Open.as_str().into()),
                &mut params,
            );
        }
        if let Some(t) = filter.from {
            add(
                " AND s.created_at >= ?",
                Value::Int(t.as_micros()),
                &mut params,
            );
        }
        if let Some(t) = filter.to {
            add(
                " AND s.created_at < ?",
                Value::Int(t.as_micros()),
                &mut params,
            );
        }
        let order = if filter.newest_first {
            " ORDER BY s.created_at DESC, s.id DESC LIMIT ?"
        } else {
            " ORDER BY s.created_at, s.id LIMIT ?"
        };
        add(order, Value::Int(limit), &mut params);
        let ids = self.fetch_all(sql, params).await?;
        let mut out = Vec::with_capacity(ids.len());
        let mut products = std::collections::HashMap::new();
        for r in &ids {
            let id = decode_id(&r.try_get::<Vec<u8>, _>("id")?)?;
            let s = self
                .sale(id)
                .await?
                .ok_or_else(|| StoreError::Corrupt("sale vanished".into()))?;
            let p = match products.get(&s.product_id) {
                Some(p) => Clone::clone(p),
                None => {
                    let p = self
                        .product(s.product_id)
                        .await?
                        .ok_or_else(|| StoreError::Corrupt("sale without product".into()))?;
                    products.insert(s.product_id, p.clone());
                    p
                }
            };
            out.push((s, p));
        }
        Ok(out)
    }

    /// Sales whose machine is due for a step at `now` (`wake_at` passed), earliest first (at
    /// most `limit`).
    pub async fn due_sales(&self, now: Timestamp, limit: i64) -> Result<Vec<SaleRow>, StoreError> {
        let rows = self
            .fetch_all(
                format!(
                    "{SALE_SELECT} WHERE wake_at IS NOT NULL AND wake_at <= $1 \
                     ORDER BY wake_at LIMIT $2"
                ),
                vec![Value::Int(now.as_micros()), Value::Int(limit)],
            )
            .await?;
        rows.iter().map(sale).collect()
    }

    /// A payment.
    pub async fn delivery_payment(&self, id: Id) -> Result<Option<PaymentRow>, StoreError> {
        let rows = self
            .fetch_all(format!("{PAYMENT_SELECT} WHERE id = $1"), vec![blob(&id)])
            .await?;
        rows.first().map(payment).transpose()
    }

    /// The payment recorded under a ledger idempotency key.
    pub async fn delivery_payment_by_key(
        &self,
        key: &str,
    ) -> Result<Option<PaymentRow>, StoreError> {
        let rows = self
            .fetch_all(
                format!("{PAYMENT_SELECT} WHERE client_key = $1"),
                vec![Value::Text(key.into())],
            )
            .await?;
        rows.first().map(payment).transpose()
    }

    /// A sale's payments, oldest first.
    pub async fn payments_of_sale(&self, sale_id: Id) -> Result<Vec<PaymentRow>, StoreError> {
        let rows = self
            .fetch_all(
                format!("{PAYMENT_SELECT} WHERE sale_id = $1 ORDER BY created_at, id"),
                vec![blob(&sale_id)],
            )
            .await?;
        rows.iter().map(payment).collect()
    }

    /// A receiver.
    pub async fn receiver(&self, name: &str) -> Result<Option<ReceiverRow>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT name, account, kind, key, updated_at FROM payment_receivers WHERE name = $1"
                    .into(),
                vec![Value::Text(name.into())],
            )
            .await?;
        rows.first().map(receiver_row).transpose()
    }

    /// Every payment receiver, by name.
    pub async fn receivers(&self) -> Result<Vec<ReceiverRow>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT name, account, kind, key, updated_at FROM payment_receivers ORDER BY name"
                    .into(),
                Vec::new(),
            )
            .await?;
        rows.iter().map(receiver_row).collect()
    }
}

fn receiver_row(r: &AnyRow) -> Result<ReceiverRow, StoreError> {
    Ok(ReceiverRow {
        name: r.try_get("name")?,
        account: decode_id(&r.try_get::<Vec<u8>, _>("account")?)?,
        kind: r.try_get("kind")?,
        key: r.try_get("key")?,
        updated_at: Timestamp(r.try_get("updated_at")?),
    })
}
