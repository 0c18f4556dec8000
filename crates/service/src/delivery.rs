//! Locked delivery on the node (SPEC D1–D11): products sealed once as they are uploaded, sales
//! with a reference code and a signed package each, payment by three paths, key release,
//! overdue alerts, the producer's report and complaints. The package format and the codes are
//! `tally_proto::delivery`; this module adds the files, the rows and the money.
//!
//! * **Keys.** `DATA/delivery.key` (32 bytes, the same on every node of a database, checked
//!   like `oob.key`) wraps each product's content key and derives each sale's unlock key from
//!   its reference code (HKDF). Unlock keys are never stored; the outbox keeps
//!   `{{unlock_key}}` and the key is put in at delivery.
//! * **Packages.** A product's entries are sealed under its content key as they are uploaded
//!   (`DATA/products/<id>/<entry>.sealed`). A sale stores its header bytes, its sealed
//!   registration file and its trailer; its package is those plus the shared sealed files,
//!   served as one byte range (see [`PackageParts`]).
//! * **Money.** A payment whose amount and currency are the price moves from the payer to the
//!   product's `pay_to` account in the same transaction that marks the sale released (under a
//!   guard: a sale is released once). Any other payment — wrong amount, wrong currency, a sale
//!   already paid, an unknown reference from a receiver — moves to the operator's suspense
//!   account for its currency and is recorded with its status, refundable to where it came
//!   from. Every path has an idempotency key: the client's, the receiver's notification id, or
//!   the sale's own for the auto-debit.

use crate::node::{check_name, namespaced, require_admin, setup};
use crate::oob::amount_text;
use crate::{Node, Principal, Result, ServiceError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tally_kernel::crypto::canonical::canonical_json;
use tally_kernel::crypto::kdf::sha256;
use tally_kernel::crypto::{VerifyingKey, seal, stream};
use tally_kernel::{Amount, Currency, Id, Secret, Timestamp};
use tally_ledger::{AccountFlags, AccountKind, Command};
use tally_proto::delivery::notification::{self, NotificationError, ReceiverKey};
use tally_proto::delivery::{
    self as proto, Acknowledgement, EntryKind, EntryMeta, Header, Instruction, ReferenceCode,
};
use tally_store::delivery::{
    EntryRow, PaymentRow, ProductRow, ReceiverRow, SaleRow, SalesFilter, insert_payment,
    insert_product, insert_sale, mark_delivered, mark_overdue, refund_payment, release_sale,
    set_product_state, upsert_entry, upsert_receiver,
};
use tally_store::outbox::NewMessage;
use tally_store::{Attachment, StoreError};

/// Stands for the unlock key in a stored key-release message (put in at delivery).
pub const KEY_PLACEHOLDER: &str = "{{unlock_key}}";
/// Domain of the registration file's authenticity signature.
pub const REGISTRATION_DOMAIN: &[u8] = b"tally/delivery-registration/v1\0";
/// Associated data of a content key wrapped for storage (followed by the product id).
const CONTENT_KEY_AAD: &[u8] = b"tally/delivery-content-key/v1\0";
/// Associated data of a receiver's HMAC secret sealed for storage (followed by its name).
const RECEIVER_KEY_AAD: &[u8] = b"tally/delivery-receiver-key/v1\0";
/// The registration entry's file name.
pub const REGISTRATION_NAME: &str = "registration.txt";
/// Longest text field of a product (licence, instructions, template), bytes.
const TEXT_LEN_MAX: usize = 16 * 1024;

/// How locked delivery behaves on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverySettings {
    /// Largest upload of one entry, bytes.
    pub upload_max_bytes: u64,
    /// The credit rule (D1): most unpaid sales one buyer may have.
    pub open_orders_max: i64,
    /// Seconds after a sale without payment before the overdue alert (D9).
    pub overdue_after_s: i64,
    /// Accepted age of a receiver's notification, seconds (either way).
    pub notification_window_s: i64,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            upload_max_bytes: 16 << 30,
            open_orders_max: 5,
            overdue_after_s: 7 * 86_400,
            notification_window_s: 300,
        }
    }
}

/// Why a delivery request was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The credit rule refused the purchase.
    #[error("purchase refused by the credit rule: {0}")]
    CreditRefused(String),
    /// The product is not on sale (a draft, or withdrawn), or no longer a draft.
    #[error("{0}")]
    WrongProductState(String),
    /// An upload is larger than the node accepts.
    #[error("the upload exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// A reference code with a typo or the wrong shape.
    #[error("{0}")]
    BadReference(String),
    /// The sale is not paid yet, so its key is not released.
    #[error("the sale is not paid yet; its key is released on payment")]
    NotReleased,
    /// The acknowledgement is not of this sale's package.
    #[error("the acknowledgement does not match this sale's package: {0}")]
    WrongPackage(&'static str),
    /// A receiver's notification was refused.
    #[error(transparent)]
    Notification(#[from] NotificationError),
    /// Only a payment that released no key and is not refunded yet can be refunded.
    #[error("this payment cannot be refunded: {0}")]
    NotRefundable(String),
    /// The sealed files of a product are missing from this node's data directory.
    #[error("the product's sealed files are missing on this node: {0}")]
    FilesMissing(String),
}

/// The node's delivery key and settings.
pub(crate) struct DeliveryState {
    key: Secret<Vec<u8>>,
    settings: DeliverySettings,
}

impl DeliveryState {
    /// Loads `delivery.key` (creating it on first start) and checks it against the database.
    pub(crate) async fn load(
        files: &crate::NodeFiles,
        store: &tally_store::Store,
        settings: DeliverySettings,
    ) -> Result<DeliveryState> {
        let key =
            crate::node::load_node_secret(files, store, "delivery.key", "delivery_key_id").await?;
        Ok(DeliveryState { key, settings })
    }

    fn key32(&self) -> &[u8; 32] {
        self.key
            .expose()
            .as_slice()
            .try_into()
            .expect("the delivery key is 32 bytes")
    }
}

// ----- requests and views ------------------------------------------------------------------

/// A new product.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    /// Its name.
    pub title: String,
    /// The price.
    #[serde(with = "amount_text")]
    pub price: Amount,
    /// The merchant account paid (the caller's).
    pub pay_to: Id,
    /// Who made it (default: the merchant).
    #[serde(default)]
    pub producer: Option<String>,
    /// Licence text.
    pub licence: String,
    /// How to pay and unlock, in the merchant's words.
    pub instructions: String,
    /// The registration file's template; `{{sale}}`, `{{reference}}`, `{{buyer}}`,
    /// `{{product}}`, `{{title}}` and `{{date}}` are filled in per sale.
    #[serde(default)]
    pub registration_template: Option<String>,
}

/// An entry as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryView {
    /// File name.
    pub name: String,
    /// `product` or `document`.
    pub kind: String,
    /// Bytes.
    pub plain_len: i64,
    /// SHA-256, hex.
    pub plain_sha256: String,
    /// Sealed bytes.
    pub sealed_len: i64,
}

/// A product as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductView {
    /// Its id.
    pub id: Id,
    /// The merchant (seller).
    pub merchant: String,
    /// The producer.
    pub producer: String,
    /// Name.
    pub title: String,
    /// Price.
    #[serde(with = "amount_text")]
    pub price: Amount,
    /// The account paid.
    pub pay_to: Id,
    /// Licence.
    pub licence: String,
    /// Instructions.
    pub instructions: String,
    /// Registration template.
    pub registration_template: String,
    /// `draft`, `active` or `withdrawn`.
    pub state: String,
    /// Sealed entries.
    pub entries: Vec<EntryView>,
    /// Created.
    pub created_at: Timestamp,
}

/// A purchase request (D1).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSale {
    /// The product.
    pub product: Id,
    /// Where the key goes: `email`, `sms`, `webhook` or `dev`.
    pub channel: String,
    /// The address on that channel.
    pub address: String,
    /// The buyer's name as it should appear (default: the key's owner).
    #[serde(default)]
    pub name: Option<String>,
}

/// A payment as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentView {
    /// Its id.
    pub id: Id,
    /// The sale, when the reference was known.
    pub sale: Option<Id>,
    /// The reference quoted.
    pub reference: String,
    /// `ledger`, `receiver` or `debit`.
    pub path: String,
    /// What was paid.
    #[serde(with = "amount_text")]
    pub amount: Amount,
    /// `matched`, `mismatch`, `duplicate`, `unmatched` or `refunded`.
    pub status: String,
    /// The transfer that brought the money in.
    pub transfer: Id,
    /// Who paid.
    pub payer: String,
    /// When.
    pub created_at: Timestamp,
    /// True when this answer repeats an earlier request's.
    #[serde(default)]
    pub replayed: bool,
}

/// A sale as shown (the reference file, D5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleView {
    /// Its id.
    pub id: Id,
    /// The product.
    pub product: Id,
    /// The product's title.
    pub title: String,
    /// The buyer (API key owner).
    pub buyer: String,
    /// The name given.
    pub name: String,
    /// Delivery channel.
    pub channel: String,
    /// Delivery address.
    pub address: String,
    /// The reference code, grouped.
    pub reference: String,
    /// The price.
    #[serde(with = "amount_text")]
    pub price: Amount,
    /// `open` or `released`.
    pub state: String,
    /// Package bytes.
    pub package_len: i64,
    /// The package digest (hex), as in the acknowledgement.
    pub package_sha256: String,
    /// Where to download it.
    pub download: String,
    /// Sold.
    pub created_at: Timestamp,
    /// Acknowledged intact.
    pub delivered_at: Option<Timestamp>,
    /// Paid.
    pub paid_at: Option<Timestamp>,
    /// Key released.
    pub released_at: Option<Timestamp>,
    /// Overdue alert sent.
    pub overdue_at: Option<Timestamp>,
    /// Payments quoting its reference.
    pub payments: Vec<PaymentView>,
}

/// An acknowledgement of an intact package, optionally authorising the auto-debit (D6 c).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acknowledge {
    /// What `tally package inspect` produced.
    pub acknowledgement: Acknowledgement,
    /// Debit the price from this account (the caller's) and release the key at once.
    #[serde(default)]
    pub debit_account: Option<Id>,
    /// The buyer's Ed25519 public key (hex), when the buyer signs the acknowledgement.
    #[serde(default)]
    pub public_key: Option<String>,
    /// The buyer's signature (hex) over the acknowledgement's RFC 8785 JSON, domain
    /// [`ACK_DOMAIN`].
    #[serde(default)]
    pub signature: Option<String>,
}

/// Domain of a buyer's signature over a delivery acknowledgement.
pub const ACK_DOMAIN: &[u8] = b"tally/delivery-ack/v1\0";

/// A payment on the node's own ledger quoting a reference code (D6 a).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayReference {
    /// The sale's reference code (dashes and case ignored).
    pub reference: String,
    /// The caller's account debited.
    pub from_account: Id,
    /// The amount paid.
    #[serde(with = "amount_text")]
    pub amount: Amount,
}

/// A receiver's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// The operator's settlement account standing for the receiver.
    pub account: Id,
    /// A shared HMAC-SHA256 secret, hex (16 to 64 bytes).
    #[serde(default)]
    pub hmac_secret: Option<String>,
    /// The receiver's Ed25519 public key, hex.
    #[serde(default)]
    pub ed25519_public: Option<String>,
}

/// A receiver as shown (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiverView {
    /// Its name.
    pub name: String,
    /// Its settlement account.
    pub account: Id,
    /// `hmac` or `ed25519`.
    pub kind: String,
    /// Where it posts.
    pub endpoint: String,
}

/// A complaint (D11).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Complaint {
    /// The sale's reference code.
    pub reference: String,
    /// `key_lost`, `package_broken` or `product_deleted`.
    pub kind: String,
}

/// What a complaint did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComplaintOutcome {
    /// The sale.
    pub sale: Id,
    /// The complaint.
    pub kind: String,
    /// What the node did, in words.
    pub action: String,
    /// Where to download the package again.
    pub download: String,
}

/// The released key of a sale.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleasedKey {
    /// The unlock key, hex.
    pub unlock_key: String,
    /// Its fingerprint (as in the producer's report).
    pub fingerprint: String,
}

/// One line of the producer's sales report (D10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportRow {
    /// The sale.
    pub sale: Id,
    /// The product.
    pub product: Id,
    /// Its title.
    pub title: String,
    /// Its producer.
    pub producer: String,
    /// Its merchant.
    pub merchant: String,
    /// The buyer.
    pub buyer: String,
    /// The reference code, grouped.
    pub reference: String,
    /// Sold.
    pub created_at: Timestamp,
    /// `open` or `released`.
    pub state: String,
    /// The price.
    pub price: String,
    /// Paid and matched (the price, or nothing).
    pub paid: String,
    /// When paid.
    pub paid_at: Option<Timestamp>,
    /// Payments not matching the price (wrong amount or currency, or after release).
    pub mismatched_payments: i64,
    /// The fingerprint of the unlock key issued.
    pub key_fingerprint: String,
}

/// The byte pieces of a sale's package, in order.
#[derive(Debug, Clone)]
pub struct PackageParts {
    /// Total length.
    pub len: u64,
    /// The package digest, hex (an `ETag`).
    pub digest: String,
    /// The pieces.
    pub segments: Vec<Segment>,
}

/// A piece of a package.
#[derive(Debug, Clone)]
pub enum Segment {
    /// Bytes from the sale's row.
    Bytes(Vec<u8>),
    /// A sealed file of the product.
    File {
        /// Where.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
}

impl Segment {
    /// Its length.
    pub fn len(&self) -> u64 {
        match self {
            Segment::Bytes(b) => b.len() as u64,
            Segment::File { len, .. } => *len,
        }
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A payment arriving by any path, before it is decided.
struct Incoming {
    key: String,
    path: &'static str,
    reference: String,
    sale: Option<SaleRow>,
    amount: Amount,
    from: Id,
    payer: String,
}

pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> ServiceError {
    ServiceError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn corrupt(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Store(StoreError::Corrupt(e.to_string()))
}

fn text(field: &'static str, value: &str, min: usize) -> Result<()> {
    if value.len() < min || value.len() > TEXT_LEN_MAX || value.contains('\0') {
        return Err(invalid(
            field,
            format!("{min} to {TEXT_LEN_MAX} bytes of text"),
        ));
    }
    Ok(())
}

/// A plain file name for an entry.
fn check_entry_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.contains(['/', '\\', '\0'])
        && !name.chars().any(char::is_control)
        && name != "."
        && name != ".."
        && name != REGISTRATION_NAME;
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "name",
            format!("a plain file name of 1 to 200 bytes, not {REGISTRATION_NAME}"),
        ))
    }
}

fn parse_reference(text: &str) -> Result<ReferenceCode> {
    ReferenceCode::parse(text)
        .map_err(|e| ServiceError::Delivery(DeliveryError::BadReference(e.to_string())))
}

fn fingerprint(unlock_key: &[u8; 32]) -> String {
    hex::encode(&sha256(unlock_key)[..8])
}

fn payment_view(p: &PaymentRow) -> Result<PaymentView> {
    Ok(PaymentView {
        id: p.id,
        sale: p.sale_id,
        reference: p.reference.clone(),
        path: p.path.clone(),
        amount: Amount::new(p.amount_minor, Currency::from_code(&p.currency)?),
        status: p.status.clone(),
        transfer: p.transfer_id,
        payer: p.payer.clone(),
        created_at: p.created_at,
        replayed: false,
    })
}

fn entry_view(e: &EntryRow) -> EntryView {
    EntryView {
        name: e.name.clone(),
        kind: e.kind.clone(),
        plain_len: e.plain_len,
        plain_sha256: e.plain_sha256.clone(),
        sealed_len: e.sealed_len,
    }
}

fn fill(template: &str, fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .fold(template.to_string(), |t, (name, value)| {
            t.replace(&format!("{{{{{name}}}}}"), value)
        })
}

const DEFAULT_REGISTRATION: &str = "Registration of {{title}}\n\
     Product: {{product}}\nSale: {{sale}}\nReference: {{reference}}\nBuyer: {{buyer}}\nDate: {{date}}\n";

impl Node {
    fn delivery_key(&self) -> &[u8; 32] {
        self.inner.delivery.key32()
    }

    /// This node's delivery settings.
    pub fn delivery_settings(&self) -> &DeliverySettings {
        &self.inner.delivery.settings
    }

    fn product_dir(&self, id: Id) -> PathBuf {
        self.inner.files.dir.join("products").join(id.to_string())
    }

    async fn product_row(&self, id: Id) -> Result<ProductRow> {
        self.inner
            .store
            .product(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: "product",
                id: id.to_string(),
            })
    }

    fn require_merchant_of(by: &Principal, p: &ProductRow) -> Result<()> {
        if by.is_admin() || by.owner == p.merchant {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(
                "only the product's merchant may change it",
            ))
        }
    }

    async fn product_view(&self, p: &ProductRow) -> Result<ProductView> {
        let entries = self.inner.store.product_entries(p.id).await?;
        Ok(ProductView {
            id: p.id,
            merchant: p.merchant.clone(),
            producer: p.producer.clone(),
            title: p.title.clone(),
            price: Amount::new(p.price_minor, Currency::from_code(&p.currency)?),
            pay_to: p.pay_to,
            licence: p.licence.clone(),
            instructions: p.instructions.clone(),
            registration_template: p.registration_template.clone(),
            state: p.state.clone(),
            entries: entries.iter().map(entry_view).collect(),
            created_at: p.created_at,
        })
    }

    /// Adds a draft product (merchant or operator). Entries are uploaded next, then it is
    /// published. Returns the product and whether this repeats an earlier request.
    pub async fn product_create(
        &self,
        by: &Principal,
        idempotency_key: &str,
        req: NewProduct,
    ) -> Result<(ProductView, bool)> {
        if by.role == crate::Role::Customer {
            return Err(ServiceError::Forbidden("only merchants sell products"));
        }
        text("title", &req.title, 1)?;
        if req.title.len() > 200 {
            return Err(invalid("title", "at most 200 bytes"));
        }
        text("licence", &req.licence, 1)?;
        text("instructions", &req.instructions, 0)?;
        let template = req
            .registration_template
            .clone()
            .unwrap_or_else(|| DEFAULT_REGISTRATION.to_string());
        text("registration_template", &template, 1)?;
        let producer = req.producer.clone().unwrap_or_else(|| by.owner.clone());
        check_name("producer", &producer)?;
        if req.price.minor <= 0 {
            return Err(invalid("price", "must be positive"));
        }
        let account =
            self.inner
                .store
                .account(req.pay_to)
                .await?
                .ok_or_else(|| ServiceError::NotFound {
                    what: "account",
                    id: req.pay_to.to_string(),
                })?;
        if !by.is_admin() && account.owner != by.owner {
            return Err(ServiceError::Forbidden("pay_to must be your own account"));
        }
        if account.currency != req.price.currency {
            return Err(invalid(
                "price",
                "currency differs from the pay_to account's",
            ));
        }
        let key = namespaced(by, idempotency_key)?;
        // A retry answers the first product (the new product's id is random, so the journal
        // would see a different request under the same key).
        if let Some(p) = self.inner.store.product_by_key(&key).await? {
            return Ok((self.product_view(&p).await?, true));
        }
        let id = Id::new();
        let mut content_key = Secret::new([0_u8; 32]);
        crate::node::getrandom_fill(content_key.expose_mut())?;
        let aad = [CONTENT_KEY_AAD, id.to_string().as_bytes()].concat();
        let wrap = seal::seal(self.delivery_key(), &aad, content_key.expose()).map_err(setup)?;
        let now = self.now();
        let row = ProductRow {
            id,
            merchant: by.owner.clone(),
            producer: producer.clone(),
            title: req.title.clone(),
            price_minor: req.price.minor,
            currency: req.price.currency.code().to_string(),
            pay_to: req.pay_to,
            licence: req.licence.clone(),
            instructions: req.instructions.clone(),
            registration_template: template,
            state: "draft".into(),
            content_key_wrap: wrap,
            client_key: Some(key.clone()),
            created_at: now,
            updated_at: now,
        };
        let outcome = self
            .execute(
                key.clone(),
                Command::Record {
                    kind: "product_created".into(),
                    data: serde_json::json!({
                        "product": id, "merchant": by.owner, "producer": producer,
                        "title": req.title, "price": req.price.to_string(),
                    }),
                },
                vec![insert_product(&row)],
            )
            .await?;
        let row = if outcome.replayed {
            self.inner
                .store
                .product_by_key(&key)
                .await?
                .ok_or(ServiceError::IdempotencyKeyReused)?
        } else {
            row
        };
        Ok((self.product_view(&row).await?, outcome.replayed))
    }

    /// A product.
    pub async fn product(&self, id: Id) -> Result<ProductView> {
        let p = self.product_row(id).await?;
        self.product_view(&p).await
    }

    /// Products, newest first.
    pub async fn products(&self) -> Result<Vec<ProductView>> {
        let mut out = Vec::new();
        for p in self.inner.store.products(1000).await? {
            out.push(self.product_view(&p).await?);
        }
        Ok(out)
    }

    /// Seals an uploaded entry of a draft product as it arrives (constant memory), then
    /// records it. Over the size limit nothing is kept. Uploading a name again replaces it.
    pub async fn product_upload<R>(
        &self,
        by: &Principal,
        id: Id,
        name: &str,
        kind: &str,
        body: R,
    ) -> Result<EntryView>
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
    {
        check_entry_name(name)?;
        let kind_tag = match kind {
            "product" => EntryKind::Product,
            "document" => EntryKind::Document,
            _ => return Err(invalid("kind", "product or document")),
        };
        let product = self.product_row(id).await?;
        Self::require_merchant_of(by, &product)?;
        if product.state != "draft" {
            return Err(DeliveryError::WrongProductState(format!(
                "the product is {}; entries can only be added to a draft",
                product.state
            ))
            .into());
        }
        let content_key = self.content_key(&product)?;
        let product_entries_before = self.inner.store.product_entries(id).await?;
        let dir = self.product_dir(id);
        crate::node::create_private_dir(&self.inner.files.dir.join("products"))?;
        crate::node::create_private_dir(&dir)?;
        let file_id = Id::new();
        let final_path = dir.join(format!("{file_id}.sealed"));
        let part = dir.join(format!("{file_id}.part"));
        let limit = self.delivery_settings().upload_max_bytes;
        let entry_name = name.to_string();
        let part_for_task = part.clone();
        let sealed = tokio::task::spawn_blocking(move || -> Result<EntryMeta> {
            let bridge = tokio_util::io::SyncIoBridge::new(body);
            let mut limited = LimitedReader {
                inner: bridge,
                left: limit,
                over: false,
            };
            let file = std::fs::File::create(&part_for_task).map_err(setup)?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            let mut salt = [0_u8; stream::SALT_LEN];
            let mut prefix = [0_u8; stream::NONCE_PREFIX_LEN];
            crate::node::getrandom_fill(&mut salt)?;
            crate::node::getrandom_fill(&mut prefix)?;
            let meta = proto::seal_entry(
                content_key.expose(),
                &entry_name,
                kind_tag,
                &mut limited,
                &mut out,
                salt,
                prefix,
            );
            if limited.over {
                return Err(DeliveryError::TooLarge { limit }.into());
            }
            let meta = meta.map_err(|e| invalid("body", format!("upload failed: {e}")))?;
            let file = out.into_inner().map_err(|e| setup(e.error()))?;
            file.sync_all().map_err(setup)?;
            Ok(meta)
        })
        .await
        .map_err(setup)
        .and_then(|r| r);
        let meta = match sealed {
            Ok(meta) => meta,
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                return Err(e);
            }
        };
        std::fs::rename(&part, &final_path).map_err(setup)?;
        let row = EntryRow {
            product_id: id,
            name: name.to_string(),
            kind: kind.to_string(),
            sealed_len: i64::try_from(meta.sealed_len).map_err(corrupt)?,
            sealed_sha256: meta.sealed_sha256.clone(),
            plain_len: i64::try_from(meta.plain_len).map_err(corrupt)?,
            plain_sha256: meta.plain_sha256.clone(),
            file: format!("products/{id}/{file_id}.sealed"),
            created_at: self.now(),
        };
        let done = self
            .execute(
                format!(":product:{id}:entry:{file_id}"),
                Command::Record {
                    kind: "product_entry_added".into(),
                    data: serde_json::json!({
                        "product": id, "name": name, "kind": kind,
                        "plain_len": meta.plain_len, "plain_sha256": meta.plain_sha256,
                    }),
                },
                upsert_entry(&row).into(),
            )
            .await;
        if done.is_ok() {
            // A replaced entry's sealed file is no longer named by any row.
            let replaced = product_entries_before
                .iter()
                .find(|e| e.name == name && e.file != row.file);
            if let Some(old) = replaced {
                let _ = std::fs::remove_file(self.inner.files.dir.join(&old.file));
            }
        }
        if let Err(e) = done {
            let _ = std::fs::remove_file(&final_path);
            return Err(match e {
                ServiceError::Store(StoreError::Conflict(why)) => {
                    DeliveryError::WrongProductState(why.to_string()).into()
                }
                other => other,
            });
        }
        Ok(entry_view(&row))
    }

    /// Puts a draft product on sale (it needs exactly one `product` entry).
    pub async fn product_publish(&self, by: &Principal, id: Id) -> Result<ProductView> {
        let p = self.product_row(id).await?;
        Self::require_merchant_of(by, &p)?;
        if p.state == "active" {
            return self.product_view(&p).await;
        }
        let entries = self.inner.store.product_entries(id).await?;
        if entries.iter().filter(|e| e.kind == "product").count() != 1 {
            return Err(invalid(
                "entries",
                "a product needs exactly one `product` entry",
            ));
        }
        self.move_product(&p, "draft", "active").await
    }

    /// Takes a product off sale; sold packages stay downloadable.
    pub async fn product_withdraw(&self, by: &Principal, id: Id) -> Result<ProductView> {
        let p = self.product_row(id).await?;
        Self::require_merchant_of(by, &p)?;
        if p.state == "withdrawn" {
            return self.product_view(&p).await;
        }
        let from = p.state.clone();
        self.move_product(&p, &from, "withdrawn").await
    }

    async fn move_product(&self, p: &ProductRow, from: &str, to: &str) -> Result<ProductView> {
        let now = self.now();
        self.execute(
            format!(":product:{}:{to}", p.id),
            Command::Record {
                kind: format!("product_{to}"),
                data: serde_json::json!({ "product": p.id }),
            },
            set_product_state(p.id, from, to, now).into(),
        )
        .await
        .map_err(|e| match e {
            ServiceError::Store(StoreError::Conflict(why)) => {
                DeliveryError::WrongProductState(why.to_string()).into()
            }
            other => other,
        })?;
        let p = self.product_row(p.id).await?;
        self.product_view(&p).await
    }

    fn content_key(&self, p: &ProductRow) -> Result<Secret<[u8; 32]>> {
        let aad = [CONTENT_KEY_AAD, p.id.to_string().as_bytes()].concat();
        let key = seal::open(self.delivery_key(), &aad, &p.content_key_wrap)
            .map_err(|_| setup("a product's content key does not open with delivery.key"))?;
        let key: [u8; 32] = key.expose().as_slice().try_into().map_err(corrupt)?;
        Ok(Secret::new(key))
    }

    fn unlock_key(&self, reference: &ReferenceCode) -> Result<Secret<[u8; 32]>> {
        reference.unlock_key(self.delivery_key()).map_err(setup)
    }

    // ----- sales -------------------------------------------------------------------------

    /// Buys a product (D1–D5): checks the credit rule, makes the reference code, the
    /// registration file and the signed package header, and stores the reference file before
    /// anything is served. Returns the sale and whether this repeats an earlier request.
    pub async fn buy(
        &self,
        by: &Principal,
        idempotency_key: &str,
        req: NewSale,
    ) -> Result<(SaleView, bool)> {
        let key = namespaced(by, idempotency_key)?;
        if let Some(s) = self.inner.store.sale_by_key(&key).await? {
            return Ok((self.sale_view(&s).await?, true));
        }
        crate::oob::check_address(&req.channel, &req.address)?;
        let name = req.name.clone().unwrap_or_else(|| by.owner.clone());
        check_name("name", &name)?;
        let product = self.product_row(req.product).await?;
        if product.state != "active" {
            return Err(DeliveryError::WrongProductState(format!(
                "product {} is not on sale ({})",
                product.id, product.state
            ))
            .into());
        }
        let entries = self.inner.store.product_entries(product.id).await?;
        let now = self.now();
        let sale_id = Id::new();
        let mut nonce = [0_u8; 16];
        crate::node::getrandom_fill(&mut nonce)?;
        let reference = ReferenceCode::new(product.id, &by.owner, now, nonce);
        let unlock = self.unlock_key(&reference)?;
        let content_key = self.content_key(&product)?;
        let price = Amount::new(product.price_minor, Currency::from_code(&product.currency)?);

        // The registration file, with the node's signature as its authenticity code.
        let binding = serde_json::json!({
            "v": 1, "sale": sale_id, "product": product.id, "reference": reference.as_str(),
            "buyer": by.owner, "issued_at": now.as_micros(),
        });
        let signed = canonical_json(&binding).map_err(corrupt)?;
        let authenticity = self.inner.node_key.sign(REGISTRATION_DOMAIN, &signed);
        let date = now.to_string();
        let mut registration_text = fill(
            &product.registration_template,
            &[
                ("sale", &sale_id.to_string()),
                ("reference", &reference.display()),
                ("buyer", &name),
                ("product", &product.id.to_string()),
                ("title", &product.title),
                ("date", &date),
            ],
        );
        registration_text.push_str(&format!(
            "\nAuthenticity: {}\nSigned: {}\nNode key: {}\n",
            authenticity.to_hex(),
            String::from_utf8(signed).map_err(corrupt)?,
            self.node_public_key()
        ));
        let mut salt = [0_u8; stream::SALT_LEN];
        let mut prefix = [0_u8; stream::NONCE_PREFIX_LEN];
        crate::node::getrandom_fill(&mut salt)?;
        crate::node::getrandom_fill(&mut prefix)?;
        let mut registration = Vec::new();
        let registration_meta = proto::seal_entry(
            content_key.expose(),
            REGISTRATION_NAME,
            EntryKind::Registration,
            registration_text.as_bytes(),
            &mut registration,
            salt,
            prefix,
        )
        .map_err(corrupt)?;

        let mut metas = Vec::new();
        for e in entries.iter().filter(|e| e.kind == "product") {
            metas.push(entry_meta(e)?);
        }
        metas.push(registration_meta);
        for e in entries.iter().filter(|e| e.kind != "product") {
            metas.push(entry_meta(e)?);
        }
        let mut wrap_nonce = [0_u8; seal::NONCE_LEN];
        crate::node::getrandom_fill(&mut wrap_nonce)?;
        let pay_to = format!(
            "account {} ({}) on this node, or your bank quoting the reference",
            product.pay_to, product.merchant
        );
        let header = Header {
            v: 1,
            sale: sale_id,
            product: product.id,
            reference: reference.clone(),
            instruction: Instruction {
                title: product.title.clone(),
                text: format!(
                    "{}{}Pay {price} quoting reference {} (`tally pay --reference {}`), or \
                     acknowledge this package with auto-debit (`tally package inspect --ack \
                     --debit-account …`). The unlock key is sent to you on payment.",
                    product.instructions,
                    if product.instructions.is_empty() {
                        ""
                    } else {
                        "\n\n"
                    },
                    reference.display(),
                    reference.display(),
                ),
                amount: price,
                pay_to,
                licence: product.licence.clone(),
            },
            entries: metas,
            content_key_wrap: Header::wrap_content_key(
                content_key.expose(),
                unlock.expose(),
                &reference,
                &wrap_nonce,
            )
            .map_err(corrupt)?,
            node_key: self.node_public_key(),
        };
        let header_bytes = proto::header_bytes(&header).map_err(corrupt)?;
        let trailer = proto::trailer(&header_bytes, &self.inner.node_key);
        let package_len = proto::package_len(&header_bytes, &header);
        let row = SaleRow {
            id: sale_id,
            product_id: product.id,
            buyer: by.owner.clone(),
            name: name.clone(),
            channel: req.channel.clone(),
            address: req.address.clone(),
            reference: reference.as_str().to_string(),
            price_minor: price.minor,
            currency: product.currency.clone(),
            state: "open".into(),
            package_digest: hex::encode(&trailer[8..40]),
            header: header_bytes,
            registration,
            trailer: trailer.to_vec(),
            package_len: i64::try_from(package_len).map_err(corrupt)?,
            key_fingerprint: fingerprint(unlock.expose()),
            client_key: Some(key.clone()),
            created_at: now,
            delivered_at: None,
            paid_at: None,
            released_at: None,
            overdue_at: None,
        };
        let outcome = self
            .execute(
                key.clone(),
                Command::Record {
                    kind: "sale_opened".into(),
                    data: serde_json::json!({
                        "sale": sale_id, "product": product.id, "buyer": by.owner,
                        "reference": reference.as_str(), "price": price.to_string(),
                        "key_fingerprint": row.key_fingerprint,
                    }),
                },
                insert_sale(&row, self.delivery_settings().open_orders_max).into(),
            )
            .await
            .map_err(|e| match e {
                ServiceError::Store(StoreError::Conflict(why)) => {
                    DeliveryError::CreditRefused(format!(
                        "{why} (at most {} unpaid)",
                        self.delivery_settings().open_orders_max
                    ))
                    .into()
                }
                other => other,
            })?;
        if outcome.replayed {
            let s = self
                .inner
                .store
                .sale_by_key(&key)
                .await?
                .ok_or(ServiceError::IdempotencyKeyReused)?;
            return Ok((self.sale_view(&s).await?, true));
        }
        Ok((self.sale_view(&row).await?, false))
    }

    async fn sale_row(&self, id: Id) -> Result<SaleRow> {
        self.inner
            .store
            .sale(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: "sale",
                id: id.to_string(),
            })
    }

    /// Who may see a sale: the buyer, the product's merchant and producer, the operator.
    async fn require_party(&self, by: &Principal, s: &SaleRow) -> Result<ProductRow> {
        let p = self.product_row(s.product_id).await?;
        if by.is_admin() || by.owner == s.buyer || by.owner == p.merchant || by.owner == p.producer
        {
            Ok(p)
        } else {
            Err(ServiceError::NotFound {
                what: "sale",
                id: s.id.to_string(),
            })
        }
    }

    fn require_buyer(by: &Principal, s: &SaleRow) -> Result<()> {
        if by.is_admin() || by.owner == s.buyer {
            Ok(())
        } else {
            Err(ServiceError::NotFound {
                what: "sale",
                id: s.id.to_string(),
            })
        }
    }

    async fn sale_view(&self, s: &SaleRow) -> Result<SaleView> {
        let p = self.product_row(s.product_id).await?;
        let payments = self.inner.store.payments_of_sale(s.id).await?;
        let reference = ReferenceCode::parse(&s.reference).map_err(corrupt)?;
        Ok(SaleView {
            id: s.id,
            product: s.product_id,
            title: p.title,
            buyer: s.buyer.clone(),
            name: s.name.clone(),
            channel: s.channel.clone(),
            address: s.address.clone(),
            reference: reference.display(),
            price: Amount::new(s.price_minor, Currency::from_code(&s.currency)?),
            state: s.state.clone(),
            package_len: s.package_len,
            package_sha256: s.package_digest.clone(),
            download: format!("/v1/sales/{}/package", s.id),
            created_at: s.created_at,
            delivered_at: s.delivered_at,
            paid_at: s.paid_at,
            released_at: s.released_at,
            overdue_at: s.overdue_at,
            payments: payments
                .iter()
                .map(payment_view)
                .collect::<Result<Vec<_>>>()?,
        })
    }

    /// A sale, for its buyer, merchant, producer or the operator.
    pub async fn sale(&self, by: &Principal, id: Id) -> Result<SaleView> {
        let s = self.sale_row(id).await?;
        self.require_party(by, &s).await?;
        self.sale_view(&s).await
    }

    /// A sale by its reference code (a typo is refused before the lookup).
    pub async fn sale_by_reference(&self, by: &Principal, reference: &str) -> Result<SaleView> {
        let code = parse_reference(reference)?;
        let s = self
            .inner
            .store
            .sale_by_reference(code.as_str())
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: "sale with reference",
                id: code.display(),
            })?;
        self.require_party(by, &s).await?;
        self.sale_view(&s).await
    }

    /// The pieces of a sale's package, for its buyer or the operator.
    pub async fn package(&self, by: &Principal, id: Id) -> Result<PackageParts> {
        let s = self.sale_row(id).await?;
        Self::require_buyer(by, &s)?;
        let header: Header = {
            let len = u32::from_be_bytes(s.header[9..13].try_into().map_err(corrupt)?) as usize;
            serde_json::from_slice(&s.header[13..13 + len]).map_err(corrupt)?
        };
        let entries = self.inner.store.product_entries(s.product_id).await?;
        let mut segments = vec![Segment::Bytes(s.header.clone())];
        for meta in &header.entries {
            if meta.kind == EntryKind::Registration {
                segments.push(Segment::Bytes(s.registration.clone()));
                continue;
            }
            let e = entries
                .iter()
                .find(|e| e.name == meta.name && e.sealed_sha256 == meta.sealed_sha256)
                .ok_or_else(|| corrupt(format!("entry {} of sale {id} is gone", meta.name)))?;
            let path = self.inner.files.dir.join(&e.file);
            let on_disk = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if on_disk != meta.sealed_len {
                return Err(DeliveryError::FilesMissing(e.file.clone()).into());
            }
            segments.push(Segment::File {
                path,
                len: meta.sealed_len,
            });
        }
        segments.push(Segment::Bytes(s.trailer.clone()));
        let len: u64 = segments.iter().map(Segment::len).sum();
        if len != s.package_len as u64 {
            return Err(corrupt(format!(
                "package of sale {id} has the wrong length"
            )));
        }
        Ok(PackageParts {
            len,
            digest: s.package_digest.clone(),
            segments,
        })
    }

    /// The buyer acknowledges an intact package (D4); with `debit_account`, the price is
    /// debited from it and the key released at once (D6 c).
    pub async fn acknowledge(&self, by: &Principal, id: Id, req: Acknowledge) -> Result<SaleView> {
        let s = self.sale_row(id).await?;
        Self::require_buyer(by, &s)?;
        let ack = &req.acknowledgement;
        if ack.v != 1 || ack.sale != s.id {
            return Err(DeliveryError::WrongPackage("another sale").into());
        }
        if ack.reference.as_str() != s.reference {
            return Err(DeliveryError::WrongPackage("another reference code").into());
        }
        let digest_ok = hex::decode(&ack.package_sha256)
            .ok()
            .zip(hex::decode(&s.package_digest).ok())
            .is_some_and(|(a, b)| Secret::new(a).ct_eq(&b));
        if !digest_ok {
            return Err(DeliveryError::WrongPackage("another package digest").into());
        }
        let signer = match (&req.public_key, &req.signature) {
            (None, None) => None,
            (Some(key), Some(sig)) => {
                let key = VerifyingKey::from_hex(key)
                    .map_err(|_| invalid("public_key", "an Ed25519 public key, hex"))?;
                let sig = tally_kernel::crypto::Signature::from_hex(sig)
                    .map_err(|_| invalid("signature", "an Ed25519 signature, hex"))?;
                let signed = canonical_json(ack).map_err(corrupt)?;
                key.verify(ACK_DOMAIN, &signed, &sig).map_err(|_| {
                    DeliveryError::WrongPackage("the buyer's signature does not verify")
                })?;
                Some(key.fingerprint())
            }
            _ => {
                return Err(invalid(
                    "signature",
                    "send public_key and signature together",
                ));
            }
        };
        if s.delivered_at.is_none() {
            self.execute(
                format!(":sale:{id}:delivered"),
                Command::Record {
                    kind: "sale_delivered".into(),
                    data: serde_json::json!({
                        "sale": id, "package_sha256": s.package_digest, "signed_by": signer,
                    }),
                },
                vec![mark_delivered(id, self.now())],
            )
            .await?;
        }
        if let Some(account) = req.debit_account {
            self.require_owner(by, account, "you can only pay from your own accounts")
                .await?;
            let price = Amount::new(s.price_minor, Currency::from_code(&s.currency)?);
            let s = self.sale_row(id).await?;
            if s.state == "open" {
                self.take_payment(Incoming {
                    key: format!(":sale:{id}:debit"),
                    path: "debit",
                    reference: s.reference.clone(),
                    amount: price,
                    from: account,
                    payer: by.owner.clone(),
                    sale: Some(s),
                })
                .await?;
            }
        }
        let s = self.sale_row(id).await?;
        self.sale_view(&s).await
    }

    /// Pays a sale from an account on this ledger, quoting its reference code (D6 a).
    pub async fn pay_reference(
        &self,
        by: &Principal,
        idempotency_key: &str,
        req: PayReference,
    ) -> Result<PaymentView> {
        let key = namespaced(by, idempotency_key)?;
        let code = parse_reference(&req.reference)?;
        self.require_owner(
            by,
            req.from_account,
            "you can only pay from your own accounts",
        )
        .await?;
        let sale = self
            .inner
            .store
            .sale_by_reference(code.as_str())
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: "sale with reference",
                id: code.display(),
            })?;
        self.take_payment(Incoming {
            key,
            path: "ledger",
            reference: code.as_str().to_string(),
            sale: Some(sale),
            amount: req.amount,
            from: req.from_account,
            payer: by.owner.clone(),
        })
        .await
    }

    /// Sets up an external payment receiver (operator only).
    pub async fn receiver_set(
        &self,
        by: &Principal,
        name: &str,
        req: ReceiverConfig,
    ) -> Result<ReceiverView> {
        require_admin(by)?;
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(invalid("name", "1 to 64 of a-z, A-Z, 0-9, - and _"));
        }
        let account = self
            .inner
            .store
            .account(req.account)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: "account",
                id: req.account.to_string(),
            })?;
        if account.owner != "operator" || account.kind != AccountKind::Settlement {
            return Err(invalid(
                "account",
                "a receiver's account is an operator settlement account",
            ));
        }
        let (kind, key) = match (&req.hmac_secret, &req.ed25519_public) {
            (Some(secret), None) => {
                let raw = Secret::new(
                    hex::decode(secret)
                        .ok()
                        .filter(|s| (16..=64).contains(&s.len()))
                        .ok_or_else(|| invalid("hmac_secret", "16 to 64 bytes, hex"))?,
                );
                let aad = [RECEIVER_KEY_AAD, name.as_bytes()].concat();
                let sealed = seal::seal(self.delivery_key(), &aad, raw.expose()).map_err(setup)?;
                ("hmac", sealed)
            }
            (None, Some(public)) => {
                let key = VerifyingKey::from_hex(public)
                    .map_err(|_| invalid("ed25519_public", "an Ed25519 public key, hex"))?;
                ("ed25519", key.to_bytes().to_vec())
            }
            _ => {
                return Err(invalid(
                    "key",
                    "exactly one of hmac_secret and ed25519_public",
                ));
            }
        };
        let row = ReceiverRow {
            name: name.to_string(),
            account: req.account,
            kind: kind.into(),
            key,
            updated_at: self.now(),
        };
        let mut change = [0_u8; 16];
        crate::node::getrandom_fill(&mut change)?;
        self.execute(
            format!(":receiver:{name}:set:{}", hex::encode(change)),
            Command::Record {
                kind: "receiver_set".into(),
                data: serde_json::json!({ "receiver": name, "account": req.account, "kind": kind }),
            },
            vec![upsert_receiver(&row)],
        )
        .await?;
        Ok(ReceiverView {
            name: name.to_string(),
            account: req.account,
            kind: kind.into(),
            endpoint: format!("/v1/receivers/{name}/notifications"),
        })
    }

    /// A receiver's signed payment notification (D6 b). The receiver's notification id is the
    /// idempotency key: a replay answers the first answer and moves nothing.
    pub async fn receive_notification(
        &self,
        name: &str,
        body: &[u8],
        timestamp: &str,
        signature: &str,
    ) -> Result<PaymentView> {
        let receiver =
            self.inner
                .store
                .receiver(name)
                .await?
                .ok_or_else(|| ServiceError::NotFound {
                    what: "receiver",
                    id: name.to_string(),
                })?;
        let key = match receiver.kind.as_str() {
            "hmac" => {
                let aad = [RECEIVER_KEY_AAD, name.as_bytes()].concat();
                let secret = seal::open(self.delivery_key(), &aad, &receiver.key)
                    .map_err(|_| setup("a receiver's secret does not open with delivery.key"))?;
                ReceiverKey::Hmac(secret)
            }
            _ => {
                let raw: [u8; 32] = receiver.key.as_slice().try_into().map_err(corrupt)?;
                ReceiverKey::Ed25519(VerifyingKey::from_bytes(&raw).map_err(corrupt)?)
            }
        };
        let n = notification::verify(
            body,
            timestamp,
            signature,
            &key,
            self.now(),
            self.delivery_settings().notification_window_s,
        )
        .map_err(DeliveryError::from)?;
        if n.id.is_empty() || n.id.len() > 128 || !n.id.chars().all(|c| c.is_ascii_graphic()) {
            return Err(invalid("id", "1 to 128 printable ASCII characters"));
        }
        let ledger_key = format!(":receiver:{name}:{}", n.id);
        if let Some(p) = self
            .inner
            .store
            .delivery_payment_by_key(&ledger_key)
            .await?
        {
            return replayed(&p, n.reference.as_str(), n.amount);
        }
        let sale = self
            .inner
            .store
            .sale_by_reference(n.reference.as_str())
            .await?;
        self.take_payment(Incoming {
            key: ledger_key,
            path: "receiver",
            reference: n.reference.as_str().to_string(),
            sale,
            amount: n.amount,
            from: receiver.account,
            payer: format!("{} via {name}", n.payer),
        })
        .await
    }

    /// Decides and books a payment: the price for an open sale releases it; anything else
    /// goes to suspense, recorded and refundable.
    async fn take_payment(&self, p: Incoming) -> Result<PaymentView> {
        if let Some(done) = self.inner.store.delivery_payment_by_key(&p.key).await? {
            return replayed(&done, &p.reference, p.amount);
        }
        let now = self.now();
        if let Some(sale) = &p.sale {
            let price = Amount::new(sale.price_minor, Currency::from_code(&sale.currency)?);
            if sale.state == "open" && p.amount == price {
                let product = self.product_row(sale.product_id).await?;
                let payment = self.payment_row(&p, "matched", product.pay_to, now);
                let mut attachments: Vec<Attachment> = release_sale(sale.id, now).into();
                attachments.push(insert_payment(&payment));
                attachments.push(Attachment::Message(key_message(sale, &product.title, 0)));
                let outcome = self
                    .execute(
                        p.key.clone(),
                        Command::Transfer {
                            debit_account: p.from,
                            credit_account: product.pay_to,
                            amount_minor: p.amount.minor,
                            currency: p.amount.currency,
                            timeout_s: None,
                            memo: format!("sale {} reference {}", sale.id, sale.reference),
                        },
                        attachments,
                    )
                    .await;
                match outcome {
                    Ok(o) => return self.booked(&p, o.replayed).await,
                    // Paid meanwhile by another path: this payment is a duplicate.
                    Err(ServiceError::Store(StoreError::Conflict(_))) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let current = match &p.sale {
            Some(s) => Some(self.sale_row(s.id).await?.state),
            None => None,
        };
        let status = match current.as_deref() {
            None => "unmatched",
            Some("open") => "mismatch",
            Some(_) => "duplicate",
        };
        let suspense = self.suspense_account(p.amount.currency).await?;
        let payment = self.payment_row(&p, status, suspense, now);
        let outcome = self
            .execute(
                p.key.clone(),
                Command::Transfer {
                    debit_account: p.from,
                    credit_account: suspense,
                    amount_minor: p.amount.minor,
                    currency: p.amount.currency,
                    timeout_s: None,
                    memo: format!("{status} payment quoting {}", p.reference),
                },
                vec![insert_payment(&payment)],
            )
            .await?;
        self.booked(&p, outcome.replayed).await
    }

    fn payment_row(&self, p: &Incoming, status: &str, holder: Id, now: Timestamp) -> PaymentRow {
        PaymentRow {
            id: Id::new(),
            sale_id: p.sale.as_ref().map(|s| s.id),
            reference: p.reference.clone(),
            path: p.path.into(),
            amount_minor: p.amount.minor,
            currency: p.amount.currency.code().to_string(),
            status: status.into(),
            transfer_id: Id::new(),
            payer: p.payer.clone(),
            refund_to: p.from,
            holder,
            client_key: p.key.clone(),
            created_at: now,
            refund_id: None,
        }
    }

    /// The payment as booked under its key (read back: the transfer id is the ledger's).
    async fn booked(&self, p: &Incoming, replayed_flag: bool) -> Result<PaymentView> {
        let row = self
            .inner
            .store
            .delivery_payment_by_key(&p.key)
            .await?
            .ok_or(ServiceError::IdempotencyKeyReused)?;
        let transfer = match self.inner.store.journal_event(&p.key).await? {
            Some(tally_ledger::Event::Transfers { transfers }) => transfers.first().map(|t| t.id),
            _ => None,
        };
        let mut view = payment_view(&row)?;
        view.transfer = transfer.unwrap_or(row.transfer_id);
        view.replayed = replayed_flag;
        Ok(view)
    }

    /// The operator's suspense account for a currency (opened on first use).
    async fn suspense_account(&self, currency: Currency) -> Result<Id> {
        let outcome = self
            .execute(
                format!(":delivery:suspense:{}", currency.code()),
                Command::OpenAccount {
                    owner: "operator".into(),
                    currency,
                    kind: AccountKind::Operator,
                    flags: AccountFlags::default(),
                    limit_minor: 0,
                },
                Vec::new(),
            )
            .await?;
        outcome
            .account()
            .map(|a| a.id)
            .ok_or_else(|| corrupt("the suspense account key names another command"))
    }

    /// Refunds a payment that released no key (operator or the product's merchant): the money
    /// goes back where it came from, once.
    pub async fn refund(&self, by: &Principal, id: Id) -> Result<PaymentView> {
        let p = self
            .inner
            .store
            .delivery_payment(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: "payment",
                id: id.to_string(),
            })?;
        if !by.is_admin() {
            let merchant = match p.sale_id {
                Some(sale) => Some(
                    self.product_row(self.sale_row(sale).await?.product_id)
                        .await?,
                ),
                None => None,
            };
            if merchant.is_none_or(|m| m.merchant != by.owner) {
                return Err(ServiceError::Forbidden(
                    "only the operator or the product's merchant refunds",
                ));
            }
        }
        let key = format!(":refund:{id}");
        if p.status == "refunded" {
            return payment_view(&p);
        }
        if p.status == "matched" {
            return Err(DeliveryError::NotRefundable(
                "it paid for a sale whose key was released".into(),
            )
            .into());
        }
        self.execute(
            key,
            Command::Transfer {
                debit_account: p.holder,
                credit_account: p.refund_to,
                amount_minor: p.amount_minor,
                currency: Currency::from_code(&p.currency)?,
                timeout_s: None,
                memo: format!("refund of {} payment quoting {}", p.status, p.reference),
            },
            refund_payment(id, &p.status).into(),
        )
        .await
        .map_err(|e| match e {
            ServiceError::Store(StoreError::Conflict(why)) => {
                DeliveryError::NotRefundable(why.to_string()).into()
            }
            other => other,
        })?;
        let p = self
            .inner
            .store
            .delivery_payment(id)
            .await?
            .ok_or_else(|| corrupt("payment vanished"))?;
        payment_view(&p)
    }

    /// The released key of a sale (its buyer or the operator).
    pub async fn sale_key(&self, by: &Principal, id: Id) -> Result<ReleasedKey> {
        let s = self.sale_row(id).await?;
        Self::require_buyer(by, &s)?;
        if s.state != "released" {
            return Err(DeliveryError::NotReleased.into());
        }
        let code = ReferenceCode::parse(&s.reference).map_err(corrupt)?;
        let key = self.unlock_key(&code)?;
        Ok(ReleasedKey {
            unlock_key: hex::encode(key.expose()),
            fingerprint: fingerprint(key.expose()),
        })
    }

    /// A complaint (D11): the reference code is checked, then the key is re-sent (key lost)
    /// or the package offered again (package broken, product deleted).
    pub async fn complain(&self, by: &Principal, req: Complaint) -> Result<ComplaintOutcome> {
        let code = parse_reference(&req.reference)?;
        let s = self
            .inner
            .store
            .sale_by_reference(code.as_str())
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: "sale with reference",
                id: code.display(),
            })?;
        Self::require_buyer(by, &s)?;
        let product = self.product_row(s.product_id).await?;
        let now = self.now();
        let mut attachments = Vec::new();
        let action = match req.kind.as_str() {
            "key_lost" => {
                if s.state != "released" {
                    return Err(DeliveryError::NotReleased.into());
                }
                attachments.push(Attachment::Message(key_message(
                    &s,
                    &product.title,
                    now.as_micros(),
                )));
                format!(
                    "the unlock key was sent again to {} {}",
                    s.channel, s.address
                )
            }
            "package_broken" | "product_deleted" => {
                // The package is rebuilt from the stored pieces: check they are all there.
                self.package(by, s.id).await?;
                format!(
                    "download the package again from /v1/sales/{}/package (digest {}){}",
                    s.id,
                    s.package_digest,
                    if s.state == "released" {
                        "; your key still opens it"
                    } else {
                        ""
                    }
                )
            }
            _ => {
                return Err(invalid(
                    "kind",
                    "key_lost, package_broken or product_deleted",
                ));
            }
        };
        self.execute(
            format!(":complaint:{}:{}:{}", s.id, req.kind, now.as_micros()),
            Command::Record {
                kind: "sale_complaint".into(),
                data: serde_json::json!({ "sale": s.id, "kind": req.kind, "action": action }),
            },
            attachments,
        )
        .await?;
        Ok(ComplaintOutcome {
            sale: s.id,
            kind: req.kind,
            action,
            download: format!("/v1/sales/{}/package", s.id),
        })
    }

    /// The producer's sales report (D10). The operator sees every sale; anyone else the
    /// sales of products they produce or sell.
    pub async fn sales_report(
        &self,
        by: &Principal,
        filter: SalesFilter,
    ) -> Result<Vec<ReportRow>> {
        let rows = self.inner.store.sales_report(&filter, 100_000).await?;
        let mut out = Vec::new();
        for (s, p) in rows {
            if !(by.is_admin() || p.producer == by.owner || p.merchant == by.owner) {
                continue;
            }
            let currency = Currency::from_code(&s.currency)?;
            let payments = self.inner.store.payments_of_sale(s.id).await?;
            let paid: i64 = payments
                .iter()
                .filter(|x| x.status == "matched")
                .map(|x| x.amount_minor)
                .sum();
            let mismatched = payments.iter().filter(|x| x.status != "matched").count();
            out.push(ReportRow {
                sale: s.id,
                product: p.id,
                title: p.title,
                producer: p.producer,
                merchant: p.merchant,
                buyer: s.buyer,
                reference: ReferenceCode::parse(&s.reference)
                    .map_err(corrupt)?
                    .display(),
                created_at: s.created_at,
                state: s.state,
                price: Amount::new(s.price_minor, currency).to_string(),
                paid: Amount::new(paid, currency).to_string(),
                paid_at: s.paid_at,
                mismatched_payments: mismatched as i64,
                key_fingerprint: s.key_fingerprint,
            });
        }
        Ok(out)
    }

    /// Sends overdue alerts (D9) for sales unpaid longer than the configured period: a
    /// reminder to the buyer and an alert to the merchant's first verified address. Each sale
    /// is alerted once (decided in the database). Returns how many went out.
    pub async fn sweep_overdue(&self, limit: i64) -> Result<usize> {
        let now = self.now();
        let before = now.plus_seconds(-self.delivery_settings().overdue_after_s);
        let due = self.inner.store.overdue_sales(before, limit).await?;
        let mut sent = 0;
        for s in due {
            let product = self.product_row(s.product_id).await?;
            let reference = ReferenceCode::parse(&s.reference)
                .map_err(corrupt)?
                .display();
            let price = Amount::new(s.price_minor, Currency::from_code(&s.currency)?);
            let mut attachments: Vec<Attachment> = mark_overdue(s.id, now).into();
            attachments.push(Attachment::Message(NewMessage {
                dedup_key: format!(":sale:{}:reminder", s.id),
                kind: s.channel.clone(),
                address: s.address.clone(),
                subject: format!("Reminder: {} is waiting for payment", product.title),
                body: format!(
                    "Your order of {} ({price}) is not paid yet. Pay quoting reference \
                     {reference} to receive the unlock key.",
                    product.title
                ),
                data: serde_json::json!({ "sale": s.id, "reference": reference }),
            }));
            let merchant_address = self
                .inner
                .store
                .addresses_of(&product.merchant)
                .await?
                .into_iter()
                .find(|a| a.verified_at.is_some());
            if let Some(a) = merchant_address {
                attachments.push(Attachment::Message(NewMessage {
                    dedup_key: format!(":sale:{}:overdue", s.id),
                    kind: a.channel,
                    address: a.address,
                    subject: format!("Overdue: {} sold to {}", product.title, s.buyer),
                    body: format!(
                        "Sale {} of {} to {} ({price}, reference {reference}) is unpaid since {}.",
                        s.id, product.title, s.buyer, s.created_at
                    ),
                    data: serde_json::json!({ "sale": s.id, "reference": reference }),
                }));
            }
            let done = self
                .execute(
                    format!(":sale:{}:overdue", s.id),
                    Command::Record {
                        kind: "sale_overdue".into(),
                        data: serde_json::json!({ "sale": s.id, "buyer": s.buyer }),
                    },
                    attachments,
                )
                .await;
            match done {
                Ok(o) if !o.replayed => sent += 1,
                Ok(_) | Err(ServiceError::Store(StoreError::Conflict(_))) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }

    /// Puts the unlock key into a key-release message about to be delivered (or read from the
    /// dev inbox); `None` if the message is not one.
    pub(crate) async fn render_unlock_key(&self, message: &NewMessage) -> Result<Option<String>> {
        let Some(rest) = message.dedup_key.strip_prefix(":sale:") else {
            return Ok(None);
        };
        let Some((sale, _)) = rest.split_once(":key:") else {
            return Ok(None);
        };
        if !message.body.contains(KEY_PLACEHOLDER) {
            return Ok(None);
        }
        let id: Id = sale.parse().map_err(corrupt)?;
        let s = self.sale_row(id).await?;
        let code = ReferenceCode::parse(&s.reference).map_err(corrupt)?;
        let key = self.unlock_key(&code)?;
        Ok(Some(
            message
                .body
                .replace(KEY_PLACEHOLDER, &hex::encode(key.expose())),
        ))
    }
}

/// The answer to a repeated payment: the first one's, if it is the same payment.
fn replayed(p: &PaymentRow, reference: &str, amount: Amount) -> Result<PaymentView> {
    if p.reference != reference
        || p.amount_minor != amount.minor
        || p.currency != amount.currency.code()
    {
        return Err(ServiceError::IdempotencyKeyReused);
    }
    let mut view = payment_view(p)?;
    view.replayed = true;
    Ok(view)
}

/// The message releasing a sale's key; the key itself is put in at delivery.
fn key_message(s: &SaleRow, title: &str, nth: i64) -> NewMessage {
    let reference =
        ReferenceCode::parse(&s.reference).map_or_else(|_| s.reference.clone(), |c| c.display());
    NewMessage {
        dedup_key: format!(":sale:{}:key:{nth}", s.id),
        kind: s.channel.clone(),
        address: s.address.clone(),
        subject: format!("Your unlock key for {title}"),
        body: format!(
            "Payment received for {title} (reference {reference}).\nUnlock key: \
             {KEY_PLACEHOLDER}\nOpen the package with: tally package unlock FILE --key <the key>\n"
        ),
        data: serde_json::json!({ "sale": s.id, "reference": reference }),
    }
}

fn entry_meta(e: &EntryRow) -> Result<EntryMeta> {
    Ok(EntryMeta {
        name: e.name.clone(),
        kind: if e.kind == "product" {
            EntryKind::Product
        } else {
            EntryKind::Document
        },
        sealed_len: u64::try_from(e.sealed_len).map_err(corrupt)?,
        sealed_sha256: e.sealed_sha256.clone(),
        plain_len: u64::try_from(e.plain_len).map_err(corrupt)?,
        plain_sha256: e.plain_sha256.clone(),
    })
}

/// Reads at most `left` bytes and notes whether the source had more.
struct LimitedReader<R> {
    inner: R,
    left: u64,
    over: bool,
}

impl<R: std::io::Read> std::io::Read for LimitedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            let mut probe = [0_u8; 1];
            if self.inner.read(&mut probe)? > 0 {
                self.over = true;
                return Err(std::io::Error::other("upload exceeds the size limit"));
            }
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Report rows as CSV (RFC 4180), with a header line.
pub fn report_csv(rows: &[ReportRow]) -> String {
    fn field(s: &str) -> String {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    }
    let mut out = String::from(
        "sale,product,title,producer,merchant,buyer,reference,created_at,state,price,paid,paid_at,mismatched_payments,key_fingerprint\r\n",
    );
    for r in rows {
        let cells = [
            r.sale.to_string(),
            r.product.to_string(),
            r.title.clone(),
            r.producer.clone(),
            r.merchant.clone(),
            r.buyer.clone(),
            r.reference.clone(),
            r.created_at.to_string(),
            r.state.clone(),
            r.price.clone(),
            r.paid.clone(),
            r.paid_at.map(|t| t.to_string()).unwrap_or_default(),
            r.mismatched_payments.to_string(),
            r.key_fingerprint.clone(),
        ];
        let line: Vec<String> = cells.iter().map(|c| field(c)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}
