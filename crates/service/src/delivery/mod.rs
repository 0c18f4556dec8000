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

pub mod parts;
pub mod payments;
pub mod products;
pub mod sales;
pub mod staging;

use crate::Missing;
use crate::access::{corrupt, invalid};
use crate::core::Core;
use crate::identity::{Made, node_secret, setup};
use crate::{Principal, Result, ServiceError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tally_kernel::crypto::kdf::sha256;
use tally_kernel::{Amount, Currency, Id, Secret};
use tally_proto::delivery::notification::NotificationError;
use tally_proto::delivery::sale::{Product, Sale, SaleError, SaleState};
use tally_proto::delivery::{EntryKind, EntryMeta, ReferenceCode};
use tally_store::delivery::{EntryRow, PaymentRow, ProductRow, SaleRow};

pub use parts::{PackageParts, Segment};
pub use tally_wire::delivery::*;

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
    /// Seconds after a sale without payment before it expires: its key is never released and
    /// the buyer's credit slot is free again.
    pub expire_after_s: i64,
    /// Accepted age of a receiver's notification, seconds (either way).
    pub notification_window_s: i64,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            upload_max_bytes: 16 << 30,
            open_orders_max: 5,
            overdue_after_s: 7 * 86_400,
            expire_after_s: 14 * 86_400,
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
    /// The sale expired or was cancelled (or is paid): nothing more can happen to it.
    #[error("the sale is {0}, not open")]
    SaleClosed(SaleState),
    /// The sealed files of a product are missing from this node's data directory.
    #[error("the product's sealed files are missing on this node: {0}")]
    FilesMissing(String),
}

/// Locked delivery on this node: the delivery key and settings.
pub struct Delivery {
    core: Core,
    key: Secret<Vec<u8>>,
    settings: DeliverySettings,
}

impl From<SaleError> for ServiceError {
    fn from(e: SaleError) -> Self {
        match e.clone() {
            SaleError::ProductState(why) => DeliveryError::WrongProductState(why).into(),
            SaleError::ProductEntries => invalid("entries", e.to_string()),
            SaleError::NotReleased => DeliveryError::NotReleased.into(),
            SaleError::NotRefundable(why) => DeliveryError::NotRefundable(why.into()).into(),
            SaleError::NotOpen(state) => DeliveryError::SaleClosed(state).into(),
            SaleError::ApiMisuse(why) => ServiceError::Setup(format!("bug: {why}")),
        }
    }
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

/// A payment row as shown, with the row's placeholder transfer id; [`Delivery::payment_view`]
/// puts in the ledger's.
fn payment_row_view(p: &PaymentRow) -> Result<PaymentView> {
    Ok(PaymentView {
        id: p.id,
        sale: p.sale_id,
        reference: p.reference.clone(),
        path: p.path,
        amount: Amount::new(p.amount_minor, Currency::from_code(&p.currency)?),
        status: p.status,
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

impl Delivery {
    /// Loads `delivery.key` (creating it on first start) and checks it against the database.
    pub(crate) async fn load(
        core: Core,
        settings: DeliverySettings,
        made: &mut Made,
    ) -> Result<Delivery> {
        let key = node_secret(
            core.files(),
            core.store(),
            "delivery.key",
            "delivery_key_id",
            made,
        )
        .await?;
        Ok(Delivery {
            core,
            key,
            settings,
        })
    }

    fn delivery_key(&self) -> &[u8; 32] {
        // `node_secret` accepts 32-byte secrets only.
        self.key
            .expose()
            .as_slice()
            .try_into()
            .expect("the delivery key is 32 bytes")
    }

    /// This node's delivery settings.
    pub fn settings(&self) -> &DeliverySettings {
        &self.settings
    }

    fn product_dir(&self, id: Id) -> PathBuf {
        self.core.files().dir.join("products").join(id.to_string())
    }

    async fn product_row(&self, id: Id) -> Result<ProductRow> {
        self.core
            .store()
            .product(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: Missing::Product,
                id: id.to_string(),
            })
    }

    /// The sale a reference code names (the code already checked by [`parse_reference`]).
    async fn sale_of(&self, code: &ReferenceCode) -> Result<SaleRow> {
        self.core
            .store()
            .sale_by_reference(code.as_str())
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: Missing::SaleReference,
                id: code.display(),
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
        let entries = self.core.store().product_entries(p.id).await?;
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
            state: p.state,
            entries: entries.iter().map(entry_view).collect(),
            created_at: p.created_at,
        })
    }

    fn unlock_key(&self, reference: &ReferenceCode) -> Result<Secret<[u8; 32]>> {
        reference.unlock_key(self.delivery_key()).map_err(setup)
    }

    /// The unlock key of a sale, hex, for a key-release message that carries it by reference
    /// (never stored: derived from the reference code and the delivery key).
    pub(crate) async fn unlock_key_hex(&self, sale: Id) -> Result<Secret<String>> {
        let s = self.sale_row(sale).await?;
        let code = ReferenceCode::parse(&s.reference).map_err(corrupt)?;
        let key = self.unlock_key(&code)?;
        Ok(Secret::new(hex::encode(key.expose())))
    }

    /// The sale machine of a stored sale.
    fn machine(&self, s: &SaleRow, p: &ProductRow) -> Result<Sale> {
        Ok(Sale {
            id: s.id,
            state: s.state,
            price: Amount::new(s.price_minor, Currency::from_code(&s.currency)?),
            pay_to: p.pay_to,
            title: p.title.clone(),
            reference: ReferenceCode::parse(&s.reference).map_err(corrupt)?,
            buyer: s.buyer.clone(),
            channel: s.channel.clone(),
            address: s.address.clone(),
            created_at: s.created_at,
            delivered_at: s.delivered_at,
            // Due from the node's current periods: the alert once, the expiry while unpaid.
            alert_at: (s.state == SaleState::Open && s.overdue_at.is_none())
                .then(|| s.created_at.plus_seconds(self.settings.overdue_after_s)),
            expires_at: (s.state == SaleState::Open)
                .then(|| s.created_at.plus_seconds(self.settings.expire_after_s)),
        })
    }
}

/// A payment arriving by any path, before it is decided.
pub(crate) struct Arrival {
    /// The ledger idempotency key of the payment.
    pub(crate) key: String,
    /// What the threshold rule needs committed with the payment (a confirmation it uses up).
    pub(crate) confirmation: Vec<tally_store::Attachment>,
    pub(crate) path: tally_proto::delivery::sale::PaymentPath,
    pub(crate) reference: String,
    pub(crate) sale: Option<SaleRow>,
    pub(crate) amount: Amount,
    pub(crate) from: Id,
    pub(crate) payer: String,
}

/// The product machine of a stored product.
fn product_machine(p: &ProductRow) -> Product {
    Product {
        id: p.id,
        state: p.state,
    }
}

/// Whether a payment repeated under a key is the same payment (else the key is reused).
fn same_payment(p: &PaymentRow, reference: &str, amount: Amount) -> Result<()> {
    if p.reference != reference
        || p.amount_minor != amount.minor
        || p.currency != amount.currency.code()
    {
        return Err(ServiceError::IdempotencyKeyReused);
    }
    Ok(())
}

impl Delivery {
    /// A payment as shown. Its transfer is the one the ledger booked under the payment's key,
    /// found through the journal (as an out-of-band session's hold is): the ledger assigns
    /// transfer ids as it applies the entry, after the row was decided.
    pub(crate) async fn payment_view(&self, p: &PaymentRow) -> Result<PaymentView> {
        let mut view = payment_row_view(p)?;
        if let Some(tally_ledger::Event::Transfers { transfers }) =
            self.core.store().journal_event(&p.client_key).await?
            && let Some(t) = transfers.first()
        {
            view.transfer = t.id;
        }
        Ok(view)
    }
}

/// A stored entry as a sale's header of format `v` lists it: without the plaintext's hash,
/// which the product's record keeps; with the sealed bytes' SHA-256 (version 2) or BLAKE3
/// (version 3, for entries that have one: see [`sale_version`]).
fn entry_meta(e: &EntryRow, v: u32) -> Result<EntryMeta> {
    let meta = EntryMeta {
        name: e.name.clone(),
        kind: if e.kind == "product" {
            EntryKind::Product
        } else {
            EntryKind::Document
        },
        sealed_len: u64::try_from(e.sealed_len).map_err(corrupt)?,
        sealed_sha256: e.sealed_sha256.clone(),
        sealed_blake3: e.sealed_blake3.clone(),
        plain_len: u64::try_from(e.plain_len).map_err(corrupt)?,
        plain_sha256: None,
    };
    Ok(meta.for_version(v))
}

/// The package format of a sale of `product` with `entries`: version 3 when every entry has
/// the BLAKE3 it lists (entries sealed since version 3), version 2 when every entry has the
/// SHA-256 (entries sealed before). A draft that got entries on both sides of the upgrade has
/// neither for all of them: its sales are refused until the older entries are uploaded again.
fn sale_version(product: &ProductRow, entries: &[EntryRow]) -> Result<u32> {
    if entries.iter().all(|e| e.sealed_blake3.is_some()) {
        return Ok(u32::from(tally_proto::delivery::VERSION));
    }
    if entries.iter().all(|e| e.sealed_sha256.is_some()) {
        return Ok(u32::from(tally_proto::delivery::VERSION_2));
    }
    let older: Vec<&str> = entries
        .iter()
        .filter(|e| e.sealed_blake3.is_none())
        .map(|e| e.name.as_str())
        .collect();
    Err(DeliveryError::WrongProductState(format!(
        "product {} has entries sealed before package format 3 and after; upload {} again",
        product.id,
        older.join(", ")
    ))
    .into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly by design.
mod format_tests {
    use super::*;

    fn row(name: &str, sha256: Option<&str>, blake3: Option<&str>) -> EntryRow {
        EntryRow {
            product_id: Id::new(),
            name: name.into(),
            kind: "product".into(),
            sealed_len: 100,
            sealed_sha256: sha256.map(str::to_string),
            sealed_blake3: blake3.map(str::to_string),
            plain_len: 20,
            plain_sha256: "cc".repeat(32),
            file: "products/x.sealed".into(),
            created_at: tally_kernel::Timestamp(0),
        }
    }

    fn product() -> ProductRow {
        ProductRow {
            id: Id::new(),
            merchant: "m".into(),
            producer: "p".into(),
            title: "t".into(),
            price_minor: 1,
            currency: "EUR".into(),
            pay_to: Id::new(),
            licence: String::new(),
            instructions: String::new(),
            registration_template: String::new(),
            state: tally_proto::delivery::sale::ProductState::Active,
            content_key_wrap: Vec::new(),
            client_key: None,
            created_at: tally_kernel::Timestamp(0),
            updated_at: tally_kernel::Timestamp(0),
        }
    }

    /// Entries sealed since format 3 sell as version 3 listing their BLAKE3, older ones as
    /// version 2 listing their SHA-256 (never both); a mix is refused, naming what to upload
    /// again.
    #[test]
    fn the_sale_format_follows_the_entries_records() {
        let b = Some("bb".repeat(32));
        let a = Some("aa".repeat(32));
        let new = [row("a", None, b.as_deref()), row("b", None, b.as_deref())];
        let v = sale_version(&product(), &new).unwrap();
        assert_eq!(v, u32::from(tally_proto::delivery::VERSION));
        let meta = entry_meta(&new[0], v).unwrap();
        assert_eq!(
            (meta.sealed_blake3, meta.sealed_sha256, meta.plain_sha256),
            (b.clone(), None, None)
        );
        let old = [row("a", a.as_deref(), None), row("b", a.as_deref(), None)];
        let v = sale_version(&product(), &old).unwrap();
        assert_eq!(v, u32::from(tally_proto::delivery::VERSION_2));
        let meta = entry_meta(&old[0], v).unwrap();
        assert_eq!((meta.sealed_blake3, meta.sealed_sha256), (None, a.clone()));
        let mixed = [
            row("new.bin", None, b.as_deref()),
            row("old.pdf", a.as_deref(), None),
        ];
        let refused = sale_version(&product(), &mixed).unwrap_err().to_string();
        assert!(refused.contains("upload old.pdf again"), "{refused}");
    }
}
