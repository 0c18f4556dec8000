//! Locked delivery (`docs/protocols/delivery-api.md`): products, sales, payments by reference,
//! receivers, keys, complaints and the producer's report.

use crate::amount_text;
use serde::{Deserialize, Serialize};
use tally_kernel::{Amount, Id, Timestamp};
use tally_proto::delivery::Acknowledgement;
use tally_proto::delivery::sale::{PaymentPath, PaymentStatus, ProductState, SaleState};
use utoipa::ToSchema;
use uuid::Uuid;

/// A new product.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    /// Its name.
    pub title: String,
    /// The price.
    #[serde(with = "amount_text")]
    #[schema(value_type = String, example = "9.90 EUR")]
    pub price: Amount,
    /// The merchant account paid (the caller's).
    #[schema(value_type = uuid::Uuid)]
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
    /// Where it stands.
    pub state: ProductState,
    /// Sealed entries.
    pub entries: Vec<EntryView>,
    /// Created.
    pub created_at: Timestamp,
}

/// A purchase request (D1).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSale {
    /// The product.
    #[schema(value_type = uuid::Uuid)]
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
    /// How it came.
    pub path: PaymentPath,
    /// What was paid.
    #[serde(with = "amount_text")]
    pub amount: Amount,
    /// What became of it.
    pub status: PaymentStatus,
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
    /// Where it stands.
    pub state: SaleState,
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
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Acknowledge {
    /// What `tally package inspect` produced.
    #[schema(value_type = AcknowledgementDoc)]
    pub acknowledgement: Acknowledgement,
    /// Debit the price from this account (the caller's) and release the key at once.
    #[serde(default)]
    #[schema(value_type = Option<uuid::Uuid>)]
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
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayReference {
    /// The sale's reference code (dashes and case ignored).
    pub reference: String,
    /// The caller's account debited.
    #[schema(value_type = uuid::Uuid)]
    pub from_account: Id,
    /// The amount paid.
    #[serde(with = "amount_text")]
    #[schema(value_type = String, example = "9.90 EUR")]
    pub amount: Amount,
}

/// A receiver's configuration.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// The operator's settlement account standing for the receiver.
    #[schema(value_type = uuid::Uuid)]
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
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Complaint {
    /// The sale's reference code.
    pub reference: String,
    /// `key_lost`, `package_broken`, `product_deleted`, `refund` (a refund claim sent to the
    /// merchant) or `check_copy` (is my copy the package the node signed? with
    /// `package_sha256`).
    pub kind: String,
    /// `refund`: why (shown to the merchant).
    #[serde(default)]
    pub reason: Option<String>,
    /// `check_copy`: the SHA-256 of the buyer's copy's signed header (`tally package inspect`
    /// prints it as the package digest).
    #[serde(default)]
    pub package_sha256: Option<String>,
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
    /// `check_copy`: whether the copy is the package the node signed for this sale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<bool>,
}

/// The released key of a sale.
#[derive(Clone, Serialize, Deserialize)]
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
    /// Where it stands.
    pub state: SaleState,
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
            r.state.to_string(),
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

/// `?kind=product|document`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KindQuery {
    /// What the upload is (default `product`).
    #[serde(default)]
    pub kind: Option<String>,
}

/// `?producer=&product=&from=&to=&format=`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportQuery {
    /// Only this producer's products.
    pub producer: Option<String>,
    /// Only this product.
    pub product: Option<Uuid>,
    /// Sold at or after (RFC 3339).
    pub from: Option<String>,
    /// Sold before (RFC 3339).
    pub to: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

debug_hiding!(ReleasedKey { fingerprint } hides { unlock_key });

debug_hiding!(ReceiverConfig { account, ed25519_public } hides { hmac_secret });

/// The schema of [`Acknowledgement`] (a `proto` type, which does not depend on utoipa); a test
/// checks the two have the same fields.
#[derive(ToSchema)]
#[allow(dead_code)] // a schema only
pub struct AcknowledgementDoc {
    /// Format version (1).
    v: u32,
    /// The sale.
    sale: Uuid,
    /// Its reference code, as printed in the package.
    reference: String,
    /// SHA-256 of the package's signed header, hex.
    package_sha256: String,
}

/// The schema of a bank's signed payment notification (`POST
/// /v1/receivers/{name}/notifications`; `tally_proto::delivery::notification` reads it from the
/// signed bytes). Unknown fields are refused.
#[derive(ToSchema)]
#[allow(dead_code)] // a schema only
pub struct NotificationDoc {
    /// The bank's id of the payment; a repeat with the same id is a replay.
    id: String,
    /// The reference code the payer quoted, as typed.
    reference: String,
    /// What was paid.
    #[schema(example = "9.90 EUR")]
    amount: String,
    /// When the bank booked it, Unix seconds.
    paid_at: i64,
    /// Who paid, in the bank's words.
    payer: String,
}
