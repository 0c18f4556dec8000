//! Acceptance delivery (SPEC M9, claims 24–27; issue [7] step 7): a digital product bought
//! inside a trading session, paid only when the customer accepts what arrived, with the means
//! for an arbiter to settle a dispute.
//!
//! ```text
//! merchant agent: offer   = sign(description)^M   {product, description, price, digest, size}
//! customer:       order   = sign(order)^C         {transaction, order, product, price, offer, at}
//! customer → AM → MTA: K1; the MTA signs it:  sign(K1)^MTA {transaction, order, k1}
//! merchant agent: package = sign([prod]^K2, prodID)^M {transaction, order, product, attempt,
//!                                                       sealed, size}; K2 escrowed at the MTA
//! customer:       checks signatures, product id, integrity → answer = sign(accept|reject,
//!                 unique)^C {transaction, order, package, accept, id, at}
//! merchant agent: accept → the purchase is booked on the tab, then [K2]^K1;
//!                 reject → sent again (a new K2), once; rejected again → the order is aborted
//! arbiter:        K2 from the MTA; opens the product; compares it with the signed offer
//! ```
//!
//! * `digest` is the SHA-256 of the product's bytes, so "the product against its description"
//!   is a check a program can make: the description says what it is in words, the digest
//!   binds the words to the bytes. `sealed` is the SHA-256 of `[prod]^K2`, so the customer
//!   detects a damaged transfer before accepting, and cannot decrypt before accepting.
//! * `[x]^K` is [`tally_kernel::crypto::seal`] (XChaCha20-Poly1305, random nonce) with
//!   associated data naming the purpose and the order, so a sealed product or key of one
//!   order never opens as another's. Products are at most 64 KiB sealed this way (files of
//!   any size are locked delivery's, `tally_proto::delivery`).
//! * The customer's answer carries a UUIDv7 `id` (unique, its first 48 bits the time in ms):
//!   the merchant takes each id once and only within [`ANSWER_WINDOW_S`] of its time, so an
//!   answer cannot be replayed for another purchase. "Without the accept the merchant can
//!   not claim payment": the accept is what books the purchase on the tab.
//!
//! Vectors: `docs/protocols/vectors/acceptance.json`.

use super::ids::TransactionId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tally_kernel::crypto::canonical::SignedRecord;
use tally_kernel::crypto::kdf::sha256;
use tally_kernel::crypto::{SigningKey, VerifyingKey, seal};
use tally_kernel::{Amount, Id};

/// The merchant's signed product description.
pub const OFFER_DOMAIN: &str = "tally/offer/v1";
/// The customer's signed order.
pub const ORDER_DOMAIN: &str = "tally/order/v1";
/// K1 as the MTA vouches for it.
pub const KEY_DOMAIN: &str = "tally/order-key/v1";
/// The merchant's signed package.
pub const PACKAGE_DOMAIN: &str = "tally/package/v1";
/// The customer's signed answer.
pub const ANSWER_DOMAIN: &str = "tally/answer/v1";
/// Associated data of a sealed product (then the order id).
pub const PRODUCT_AAD: &[u8] = b"tally/m9-product/v1\0";
/// Associated data of a sealed K2 (then the order id).
pub const KEY_AAD: &[u8] = b"tally/m9-key/v1\0";
/// Largest product, bytes.
pub const PRODUCT_LEN_MAX: usize = seal::MESSAGE_LEN_MAX;
/// Longest product id and description, bytes.
pub const TEXT_LEN_MAX: usize = 1024;
/// Sendings of one order: the first and one automatic re-send.
pub const ATTEMPTS_MAX: u32 = 2;
/// How far an answer's time may be from the merchant's, seconds.
pub const ANSWER_WINDOW_S: i64 = 300;

/// The merchant's description of a product (`sign(prod.desc)^M`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    /// The product id.
    pub product: String,
    /// What it is, in the merchant's words.
    pub description: String,
    /// Its price, in the merchant's currency.
    pub price: Amount,
    /// SHA-256 of the product's bytes, hex.
    pub digest: String,
    /// The product's size, bytes.
    pub size: u64,
}

/// The customer's order (`sign(order)^C`, under the session key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Order {
    /// The transaction it is bought in.
    pub transaction: TransactionId,
    /// The order's id (a UUID the customer makes).
    pub order: Id,
    /// The product id.
    pub product: String,
    /// The price the customer agrees to.
    pub price: Amount,
    /// SHA-256 of the signed offer the customer read, hex.
    pub offer: String,
    /// When (µs).
    pub at: i64,
}

/// K1 as the MTA passes it to the merchant (`sign(K1)^MTA`, under the MTA's node key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderKey {
    /// The transaction.
    pub transaction: TransactionId,
    /// The order.
    pub order: Id,
    /// K1, 64 hex.
    pub k1: String,
}

/// The merchant's package (`sign([prod]^K2, prodID)^M`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    /// The transaction.
    pub transaction: TransactionId,
    /// The order.
    pub order: Id,
    /// The product id.
    pub product: String,
    /// Which sending (1, then 2 after a reject).
    pub attempt: u32,
    /// SHA-256 of the sealed product, hex.
    pub sealed: String,
    /// The sealed product's size, bytes.
    pub size: u64,
}

/// The customer's answer (`sign(accept, unique)^C`, under the session key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// The transaction.
    pub transaction: TransactionId,
    /// The order.
    pub order: Id,
    /// SHA-256 of the signed package answered, hex.
    pub package: String,
    /// Accepted, or not (a re-send is asked).
    pub accept: bool,
    /// A UUIDv7: unique, time-stamped.
    pub id: Id,
}

/// Why a step of the delivery was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AcceptanceError {
    /// Not a signed record of its kind, too large, or a field out of shape.
    #[error("not a well-formed {0}")]
    Malformed(&'static str),
    /// Not signed by the key it must be signed by.
    #[error("the {0} is not signed by its party")]
    BadSignature(&'static str),
    /// About another transaction, order, product, price or package.
    #[error("the {0} does not match")]
    Mismatch(&'static str),
    /// The bytes received are not the ones the package names (a damaged transfer).
    #[error("the product arrived damaged")]
    Damaged,
    /// A sealed product or key does not open under the key given.
    #[error("the {0} does not open with its key")]
    Sealed(&'static str),
    /// An answer id used before, not a UUIDv7, or too far from now.
    #[error("the answer is replayed or stale")]
    Replayed,
    /// The order is over (accepted, or aborted after its last sending).
    #[error("the order is {0}")]
    Over(&'static str),
}

fn sign<T: Serialize>(domain: &str, value: &T, key: &SigningKey) -> Vec<u8> {
    // Plain fields always canonicalize and serialize; an empty result would fail every check.
    SignedRecord::sign(domain, value, key)
        .ok()
        .and_then(|r| serde_json::to_vec(&r).ok())
        .unwrap_or_default()
}

/// Opens a signed record of `domain` under `key`.
fn open<T: DeserializeOwned>(
    bytes: &[u8],
    domain: &str,
    key: &VerifyingKey,
    what: &'static str,
) -> Result<T, AcceptanceError> {
    if bytes.len() > 16 * 1024 {
        return Err(AcceptanceError::Malformed(what));
    }
    let record: SignedRecord =
        serde_json::from_slice(bytes).map_err(|_| AcceptanceError::Malformed(what))?;
    if record.domain != domain {
        return Err(AcceptanceError::Malformed(what));
    }
    record
        .verify(key)
        .map_err(|_| AcceptanceError::BadSignature(what))?;
    if !record.is_canonical() {
        return Err(AcceptanceError::Malformed(what));
    }
    serde_json::from_slice(&record.bytes).map_err(|_| AcceptanceError::Malformed(what))
}

/// SHA-256 of `bytes`, hex.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(sha256(bytes))
}

fn text_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= TEXT_LEN_MAX && tally_kernel::text::plain(s, false)
}

impl Offer {
    /// The merchant's offer of `product` (its bytes) at `price`.
    pub fn of(
        product: &str,
        description: &str,
        price: Amount,
        bytes: &[u8],
    ) -> Result<Offer, AcceptanceError> {
        if !text_ok(product) || !text_ok(description) || bytes.len() > PRODUCT_LEN_MAX {
            return Err(AcceptanceError::Malformed("offer"));
        }
        if price.minor <= 0 {
            return Err(AcceptanceError::Malformed("offer"));
        }
        Ok(Offer {
            product: product.into(),
            description: description.into(),
            price,
            digest: digest(bytes),
            size: bytes.len() as u64,
        })
    }

    /// Signed by the merchant agent's key.
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        sign(OFFER_DOMAIN, self, key)
    }

    /// Opens a signed offer under the merchant's key.
    pub fn open(bytes: &[u8], merchant: &VerifyingKey) -> Result<Offer, AcceptanceError> {
        let offer: Offer = open(bytes, OFFER_DOMAIN, merchant, "offer")?;
        if !text_ok(&offer.product) || !text_ok(&offer.description) || offer.price.minor <= 0 {
            return Err(AcceptanceError::Malformed("offer"));
        }
        Ok(offer)
    }
}

impl Order {
    /// Signed by the customer's session key.
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        sign(ORDER_DOMAIN, self, key)
    }

    /// Opens the customer's order (under `customer`, the session key) for `transaction`; it
    /// must name `offer` (the merchant's signed offer) at its price.
    pub fn open(
        bytes: &[u8],
        customer: &VerifyingKey,
        transaction: TransactionId,
        offer_signed: &[u8],
        offer: &Offer,
    ) -> Result<Order, AcceptanceError> {
        let order: Order = open(bytes, ORDER_DOMAIN, customer, "order")?;
        if order.transaction != transaction {
            return Err(AcceptanceError::Mismatch("order's transaction"));
        }
        if order.product != offer.product
            || order.price != offer.price
            || order.offer != digest(offer_signed)
        {
            return Err(AcceptanceError::Mismatch("order's product, price or offer"));
        }
        Ok(order)
    }
}

impl OrderKey {
    /// Signed by the MTA's node key.
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        sign(KEY_DOMAIN, self, key)
    }

    /// Opens K1 as the MTA vouched for it, for `order`.
    pub fn open(
        bytes: &[u8],
        mta: &VerifyingKey,
        order: &Order,
    ) -> Result<[u8; 32], AcceptanceError> {
        let key: OrderKey = open(bytes, KEY_DOMAIN, mta, "order key")?;
        if key.transaction != order.transaction || key.order != order.order {
            return Err(AcceptanceError::Mismatch("order key"));
        }
        key_bytes(&key.k1)
    }
}

/// A 32-byte key from 64 hex.
pub fn key_bytes(hex_key: &str) -> Result<[u8; 32], AcceptanceError> {
    let mut k = [0u8; 32];
    hex::decode_to_slice(hex_key, &mut k).map_err(|_| AcceptanceError::Malformed("key"))?;
    Ok(k)
}

fn aad(prefix: &[u8], order: Id) -> Vec<u8> {
    [prefix, order.to_string().as_bytes()].concat()
}

/// The associated data of `order`'s sealed product.
pub fn product_aad(order: Id) -> Vec<u8> {
    aad(PRODUCT_AAD, order)
}

/// `[prod]^K2` for `order` (random nonce).
pub fn seal_product(k2: &[u8; 32], order: Id, product: &[u8]) -> Result<Vec<u8>, AcceptanceError> {
    seal::seal(k2, &product_aad(order), product).map_err(|_| AcceptanceError::Malformed("product"))
}

/// What the merchant agent sends for one sending of an order: the signed package and the
/// sealed product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sending {
    /// The signed package (JSON).
    pub package: Vec<u8>,
    /// `[prod]^K2`.
    pub sealed: Vec<u8>,
}

/// The merchant agent's package of `sealed` (`[prod]^K2`, [`seal_product`]) for `order`,
/// signed.
pub fn send(order: &Order, attempt: u32, sealed: Vec<u8>, merchant: &SigningKey) -> Sending {
    let package = Package {
        transaction: order.transaction,
        order: order.order,
        product: order.product.clone(),
        attempt,
        sealed: digest(&sealed),
        size: sealed.len() as u64,
    };
    Sending {
        package: sign(PACKAGE_DOMAIN, &package, merchant),
        sealed,
    }
}

/// The customer's check of what arrived (claim 24, "point 4"): the package is the merchant's,
/// for this order and product, and the sealed bytes are the ones it names. Any failure is a
/// reason to ask for a re-send.
pub fn check(
    order: &Order,
    sending: &Sending,
    merchant: &VerifyingKey,
) -> Result<Package, AcceptanceError> {
    let package: Package = open(&sending.package, PACKAGE_DOMAIN, merchant, "package")?;
    if package.transaction != order.transaction
        || package.order != order.order
        || package.product != order.product
    {
        return Err(AcceptanceError::Mismatch("package"));
    }
    if package.sealed != digest(&sending.sealed) || package.size != sending.sealed.len() as u64 {
        return Err(AcceptanceError::Damaged);
    }
    Ok(package)
}

impl Answer {
    /// The customer's answer to a package (`accept` or ask for a re-send), under a fresh
    /// UUIDv7 `id`.
    pub fn to(order: &Order, package_signed: &[u8], accept: bool, id: Id) -> Answer {
        Answer {
            transaction: order.transaction,
            order: order.order,
            package: digest(package_signed),
            accept,
            id,
        }
    }

    /// Signed by the customer's session key.
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        sign(ANSWER_DOMAIN, self, key)
    }

    /// Opens the customer's answer (under the session key).
    pub fn open(bytes: &[u8], customer: &VerifyingKey) -> Result<Answer, AcceptanceError> {
        open(bytes, ANSWER_DOMAIN, customer, "answer")
    }
}

/// The time in a UUIDv7, µs (`None`: not a UUIDv7).
fn uuid7_micros(id: Id) -> Option<i64> {
    let b = id.as_bytes();
    if b[6] >> 4 != 7 {
        return None;
    }
    let ms = b[..6]
        .iter()
        .fold(0i64, |acc, byte| (acc << 8) | i64::from(*byte));
    ms.checked_mul(1000)
}

/// `[K2]^K1`: the merchant releases K2 to the customer only.
pub fn wrap_key(k1: &[u8; 32], order: Id, k2: &[u8; 32]) -> Result<Vec<u8>, AcceptanceError> {
    seal::seal(k1, &aad(KEY_AAD, order), k2).map_err(|_| AcceptanceError::Sealed("key"))
}

/// The customer opens `[K2]^K1`, then the product with K2.
pub fn unlock(
    k1: &[u8; 32],
    order: Id,
    wrapped: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, AcceptanceError> {
    let k2 = seal::open(k1, &aad(KEY_AAD, order), wrapped)
        .map_err(|_| AcceptanceError::Sealed("key"))?;
    let k2: [u8; 32] = k2
        .expose()
        .as_slice()
        .try_into()
        .map_err(|_| AcceptanceError::Sealed("key"))?;
    open_product(&k2, order, sealed)
}

/// Opens a sealed product with K2.
pub fn open_product(k2: &[u8; 32], order: Id, sealed: &[u8]) -> Result<Vec<u8>, AcceptanceError> {
    seal::open(k2, &aad(PRODUCT_AAD, order), sealed)
        .map(|p| p.expose().clone())
        .map_err(|_| AcceptanceError::Sealed("product"))
}

/// What an arbiter finds (the dispute of claim 24's seed text: the customer brings the package
/// and the signed offer, the arbiter obtains K2 from the MTA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The product is the one the merchant described: the customer's complaint fails.
    Matches,
    /// The merchant delivered something else than it described: the customer is right.
    DoesNotMatch,
}

/// Decides a dispute: both records must be the merchant's and name the same product; the
/// package must be for the bytes brought and open with K2; then the product is compared with
/// the offer's digest and size. An error means the evidence is not good (the customer's
/// fault: it cannot bring false evidence, the signatures tie offer and package together).
pub fn arbitrate(
    offer_signed: &[u8],
    sending: &Sending,
    k2: &[u8; 32],
    merchant: &VerifyingKey,
) -> Result<Verdict, AcceptanceError> {
    let offer = Offer::open(offer_signed, merchant)?;
    let package: Package = open(&sending.package, PACKAGE_DOMAIN, merchant, "package")?;
    if package.product != offer.product {
        return Err(AcceptanceError::Mismatch("package and offer"));
    }
    if package.sealed != digest(&sending.sealed) {
        return Err(AcceptanceError::Damaged);
    }
    let product = open_product(k2, package.order, &sending.sealed)?;
    Ok(
        if digest(&product) == offer.digest && product.len() as u64 == offer.size {
            Verdict::Matches
        } else {
            Verdict::DoesNotMatch
        },
    )
}

/// Where an order stands at the merchant agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// A package is out; the customer's answer is awaited.
    Sent,
    /// Accepted: booked on the tab, K2 released under K1.
    Accepted,
    /// Rejected at its last sending: nothing booked.
    Aborted,
}

stored_names!(DeliveryState {
    Aborted => "aborted",
    Accepted => "accepted",
    Sent => "sent",
});

/// An order at the merchant agent. It holds K1 and K2: never logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The order, as the customer signed it.
    pub order: Order,
    /// Where it stands.
    pub state: DeliveryState,
    /// The current sending.
    pub attempt: u32,
    /// SHA-256 of the current signed package, hex.
    pub package: String,
    k1: String,
    k2: String,
    /// The answer ids taken (each once).
    pub answers: Vec<Id>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("order", &self.order)
            .field("state", &self.state)
            .field("attempt", &self.attempt)
            .field("package", &self.package)
            .field("keys", &"<secret>")
            .finish()
    }
}

/// What the merchant agent does with an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Accepted: book the purchase, then send `[K2]^K1`.
    Release {
        /// `[K2]^K1`.
        wrapped: Vec<u8>,
    },
    /// Rejected, a sending is left: send again with a new K2 ([`Delivery::resent`]).
    Resend,
    /// Rejected at the last sending: the order is over, nothing is owed.
    Abort,
}

impl Delivery {
    /// The first sending of `order`, sealed under `k2`, with K1 as the MTA passed it.
    pub fn start(order: Order, k1: [u8; 32], k2: [u8; 32], package_signed: &[u8]) -> Delivery {
        Delivery {
            order,
            state: DeliveryState::Sent,
            attempt: 1,
            package: digest(package_signed),
            k1: hex::encode(k1),
            k2: hex::encode(k2),
            answers: Vec::new(),
        }
    }

    /// K2 of the current sending (for the escrow at the MTA).
    pub fn k2(&self) -> Result<[u8; 32], AcceptanceError> {
        key_bytes(&self.k2)
    }

    /// The customer's answer at `now` (µs). The same accept again answers the same release
    /// (a lost answer); any other answer to an order that is over is refused.
    pub fn answer(mut self, a: &Answer, now: i64) -> Result<(Delivery, Next), AcceptanceError> {
        if a.transaction != self.order.transaction || a.order != self.order.order {
            return Err(AcceptanceError::Mismatch("answer's order"));
        }
        if self.answers.contains(&a.id) {
            return match (self.state, a.accept) {
                (DeliveryState::Accepted, true) => {
                    let wrapped = self.wrapped()?;
                    Ok((self, Next::Release { wrapped }))
                }
                _ => Err(AcceptanceError::Replayed),
            };
        }
        match self.state {
            DeliveryState::Sent => {}
            other => return Err(AcceptanceError::Over(other.as_str())),
        }
        if a.package != self.package {
            return Err(AcceptanceError::Mismatch("answer's package"));
        }
        let fresh =
            uuid7_micros(a.id).is_some_and(|t| (t - now).abs() <= ANSWER_WINDOW_S * 1_000_000);
        if !fresh {
            return Err(AcceptanceError::Replayed);
        }
        self.answers.push(a.id);
        if a.accept {
            self.state = DeliveryState::Accepted;
            let wrapped = self.wrapped()?;
            Ok((self, Next::Release { wrapped }))
        } else if self.attempt < ATTEMPTS_MAX {
            Ok((self, Next::Resend))
        } else {
            self.state = DeliveryState::Aborted;
            Ok((self, Next::Abort))
        }
    }

    /// The next sending, after [`Next::Resend`], sealed under a new `k2`.
    pub fn resent(self, k2: [u8; 32], package_signed: &[u8]) -> Delivery {
        Delivery {
            attempt: self.attempt + 1,
            package: digest(package_signed),
            k2: hex::encode(k2),
            ..self
        }
    }

    fn wrapped(&self) -> Result<Vec<u8>, AcceptanceError> {
        wrap_key(
            &key_bytes(&self.k1)?,
            self.order.order,
            &key_bytes(&self.k2)?,
        )
    }
}

#[cfg(test)]
mod tests;
