//! Purchases inside an open trading session (SPEC M4; issue [7] step 4): the customer opens
//! a tab at the merchant agent with a message signed by its session key, which hands the
//! merchant a fresh MAC key; each purchase is then authenticated with that key, so the agent
//! checks one HMAC per purchase, not a signature. The operators never see a purchase: at the
//! conclusion (M5) both sides sign the total, the count and the hash of the list, which is
//! all the nodes compare.
//!
//! ```text
//! tab      = SignedRecord {domain "tally/tab/v1", bytes: RFC 8785 JSON of
//!            {transaction, mac_key: 64 hex, at}, signature by the customer's session key}
//! purchase = {"bytes": RFC 8785 JSON of {transaction, seq, price: {minor, currency}, item, at},
//!             "mac": hex HMAC-SHA256(mac_key, "tally/purchase/v1" 0x00 ‖ bytes)}
//! list_0   = 32 zero bytes
//! list_n   = SHA-256("tally/purchase-list/v1" 0x00 ‖ list_{n-1} ‖ SHA-256(bytes of purchase n))
//! ```
//!
//! A tab takes purchase `seq = count + 1` only, in the merchant's currency, while the deposit
//! covers it; the last purchase again is a repeat (answered, not counted); a purchase the
//! deposit does not cover is refused (`Exhausted`): the customer starts the next transaction
//! with a new deposit. Vectors: `vectors/purchase.json`.
//!
//! Rejected: a signature per purchase (an Ed25519 check costs ~50 µs, which caps a merchant
//! at a few ten thousand purchases a second on two cores; the HMAC costs ~1 µs), and the
//! nodes seeing purchases (M5: they must not).

use super::ids::TransactionId;
use serde::{Deserialize, Serialize};
use tally_kernel::crypto::canonical::SignedRecord;
use tally_kernel::crypto::kdf::{HmacSha256Key, hmac_sha256, hmac_sha256_verify, sha256};
use tally_kernel::crypto::{SigningKey, VerifyingKey};
use tally_kernel::{Amount, Timestamp};

/// The tab-opening record's domain.
pub const TAB_DOMAIN: &str = "tally/tab/v1";
/// The purchase MAC's domain.
pub const PURCHASE_DOMAIN: &[u8] = b"tally/purchase/v1\0";
/// The list hash's domain.
pub const LIST_DOMAIN: &[u8] = b"tally/purchase-list/v1\0";
/// The close MAC's domain.
pub const CLOSE_DOMAIN: &[u8] = b"tally/tab-close/v1\0";
/// Longest item text, bytes.
pub const ITEM_LEN_MAX: usize = 512;
/// Largest purchase message, bytes.
pub const PURCHASE_LEN_MAX: usize = 2048;

/// What the customer signs to open a tab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TabOpen {
    /// The transaction.
    pub transaction: TransactionId,
    /// The purchases' MAC key, 64 hex (fresh per transaction; only customer and merchant
    /// hold it).
    pub mac_key: String,
    /// When (µs).
    pub at: i64,
}

/// One purchase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Purchase {
    /// The transaction it belongs to.
    pub transaction: TransactionId,
    /// Its number in the transaction, from 1.
    pub seq: u64,
    /// Its price, in the merchant's currency.
    pub price: Amount,
    /// What was bought, in the merchant's words (never leaves customer and merchant).
    pub item: String,
    /// When the customer made it (µs).
    pub at: i64,
}

/// A purchase on the wire: its canonical bytes and their MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MacedPurchase {
    /// RFC 8785 JSON of the [`Purchase`].
    pub bytes: String,
    /// HMAC-SHA256 of the tab's key over the domain and `bytes`, hex.
    pub mac: String,
}

/// Why a tab or a purchase was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PurchaseError {
    /// Not a tab or a purchase, too large, or an item that is empty, too long or not text.
    #[error("not a well-formed purchase")]
    Malformed,
    /// The tab is not signed by the session's customer key, or a purchase's MAC is wrong.
    #[error("not from the session's customer")]
    BadSignature,
    /// For another transaction.
    #[error("a purchase of another transaction")]
    WrongTransaction,
    /// Not the next number (`expected`).
    #[error("purchase {expected} is the next one")]
    OutOfOrder {
        /// The number the tab takes next.
        expected: u64,
    },
    /// Not in the merchant's currency, or not positive.
    #[error("the price must be positive, in the deposit's currency")]
    BadPrice,
    /// The deposit does not cover it (`remaining` minor units are left): start the next
    /// transaction.
    #[error("the deposit does not cover it ({remaining} minor units left)")]
    Exhausted {
        /// What the deposit still covers.
        remaining: i64,
    },
    /// The tab is closed (the session was terminated, its deposit used up, or concluded).
    #[error("the session takes no more purchases")]
    Closed,
    /// The session's agreed time is over.
    #[error("the session's time is over")]
    Expired,
}

impl TabOpen {
    /// Signs the tab with the customer's session key.
    pub fn sign(&self, key: &SigningKey) -> Result<Vec<u8>, PurchaseError> {
        let record =
            SignedRecord::sign(TAB_DOMAIN, self, key).map_err(|_| PurchaseError::Malformed)?;
        serde_json::to_vec(&record).map_err(|_| PurchaseError::Malformed)
    }
}

/// A purchase's fields in RFC 8785 order (keys sorted), borrowed, for [`Purchase::canonical`].
#[derive(Serialize)]
struct CanonicalPurchase<'a> {
    at: i64,
    item: &'a str,
    price: CanonicalPrice,
    seq: u64,
    transaction: &'a str,
}

impl<'a> CanonicalPurchase<'a> {
    /// The fields, if their integers are within our JCS profile's ±2^53 − 1.
    fn new(
        transaction: &'a str,
        seq: u64,
        price: Amount,
        item: &'a str,
        at: i64,
    ) -> Option<CanonicalPurchase<'a>> {
        use tally_kernel::crypto::canonical::SAFE_INTEGER_MAX;
        let safe = |n: u64| n <= SAFE_INTEGER_MAX;
        (safe(at.unsigned_abs()) && safe(seq) && safe(price.minor.unsigned_abs())).then_some(
            CanonicalPurchase {
                at,
                item,
                price: CanonicalPrice {
                    currency: price.currency,
                    minor: price.minor,
                },
                seq,
                transaction,
            },
        )
    }
}

/// A purchase as its bytes spell it, borrowed where it can be: what the merchant agent's
/// check reads, with no copy of the purchase's text and no parse of its transaction id (it
/// is compared, as text, with the tab's).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurchaseText<'a> {
    #[serde(borrow)]
    transaction: std::borrow::Cow<'a, str>,
    seq: u64,
    price: Amount,
    #[serde(borrow)]
    item: std::borrow::Cow<'a, str>,
    at: i64,
}

/// The RFC 8785 bytes of a purchase's fields (see [`Purchase::canonical`]).
fn canonical_fields(
    transaction: &str,
    seq: u64,
    price: Amount,
    item: &str,
    at: i64,
) -> Result<String, PurchaseError> {
    let fields = CanonicalPurchase::new(transaction, seq, price, item, at)
        .ok_or(PurchaseError::Malformed)?;
    serde_json::to_string(&fields).map_err(|_| PurchaseError::Malformed)
}

/// Whether `expected` is exactly the RFC 8785 bytes of a purchase's fields (see
/// [`canonical_fields`]), found without writing them anywhere: the merchant agent asks this of
/// every purchase, and a copy of its text each time was a tenth of its allocations.
fn spelled_canonically(
    expected: &str,
    transaction: &str,
    seq: u64,
    price: Amount,
    item: &str,
    at: i64,
) -> bool {
    /// Compares what is written with what it should be, as it is written.
    struct Same<'a> {
        rest: &'a [u8],
        same: bool,
    }
    impl std::io::Write for Same<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            match self.rest.strip_prefix(buf) {
                Some(rest) if self.same => self.rest = rest,
                _ => self.same = false,
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let Some(fields) = CanonicalPurchase::new(transaction, seq, price, item, at) else {
        return false;
    };
    let mut same = Same {
        rest: expected.as_bytes(),
        same: true,
    };
    let written = serde_json::to_writer(&mut same, &fields);
    written.is_ok() && same.same && same.rest.is_empty()
}

/// An [`Amount`]'s fields in RFC 8785 order.
#[derive(Serialize)]
struct CanonicalPrice {
    currency: tally_kernel::Currency,
    minor: i64,
}

impl Purchase {
    /// Its RFC 8785 bytes, written straight from the fields: keys in sorted order, integers
    /// within our JCS profile's ±2^53 − 1 (else `Malformed`), strings with `serde_json`'s
    /// escapes, which are JCS's (`\"`, `\\`, `\b \t \n \f \r`, other controls as
    /// `\u00xx`, nothing else). The same bytes as
    /// [`canonical_json`](tally_kernel::crypto::canonical_json) (a property test holds
    /// them equal) without the detour through a `serde_json::Value` tree, which cost the
    /// merchant agent a third of its time per purchase.
    pub fn canonical(&self) -> Result<String, PurchaseError> {
        canonical_fields(
            &self.transaction.to_string(),
            self.seq,
            self.price,
            &self.item,
            self.at,
        )
    }

    /// The purchase with its MAC under the tab's key.
    pub fn mac(&self, mac_key: &[u8; 32]) -> Result<MacedPurchase, PurchaseError> {
        let bytes = self.canonical()?;
        let mac = hmac_sha256(mac_key, &[PURCHASE_DOMAIN, bytes.as_bytes()].concat());
        Ok(MacedPurchase {
            bytes,
            mac: hex::encode(mac),
        })
    }
}

/// A merchant agent's tab for one transaction. It holds the MAC key: the agent stores it
/// with the tab and never logs it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tab {
    /// The transaction.
    pub transaction: TransactionId,
    /// The purchases' MAC key (hex).
    mac_key: String,
    /// The deposit, in the merchant's currency.
    pub deposit: Amount,
    /// What the purchases so far cost (minor units).
    pub spent: i64,
    /// How many purchases.
    pub count: u64,
    /// The list hash so far (hex in JSON).
    #[serde(with = "hex32")]
    pub list: [u8; 32],
    /// The MAC of the last purchase, to recognise its repeat.
    pub last: Option<String>,
    /// No more purchases.
    pub closed: bool,
    /// The session's agreed end (µs): no purchase at or after it (`None`: no end).
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// The merchant's record of the closed tab was taken by its operator (the agent's own
    /// bookkeeping: it sends the record until then).
    #[serde(default)]
    pub reported: bool,
    /// The merchant ended it (its terminate, or the session's time over): the session ends
    /// with it, and the agent tells the operator so with the record.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminated: bool,
}

impl std::fmt::Debug for Tab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tab")
            .field("transaction", &self.transaction)
            .field("mac_key", &"<secret>")
            .field("deposit", &self.deposit)
            .field("spent", &self.spent)
            .field("count", &self.count)
            .field("list", &hex::encode(self.list))
            .field("closed", &self.closed)
            .field("expires_at", &self.expires_at)
            .field("reported", &self.reported)
            .field("terminated", &self.terminated)
            .finish()
    }
}

/// What taking a purchase did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// A new purchase.
    New {
        /// Its number on the tab.
        seq: u64,
        /// What it cost.
        price: Amount,
    },
    /// The last purchase again (the customer's retry): nothing changed.
    Repeat,
}

impl Tab {
    /// Opens a tab from the customer's signed `tab` record: it must be signed by
    /// `customer_key` (the session's key, as the merchant's operator told the agent) and name
    /// `transaction`.
    pub fn open(
        signed: &[u8],
        customer_key: &VerifyingKey,
        transaction: TransactionId,
        deposit: Amount,
    ) -> Result<Tab, PurchaseError> {
        if signed.len() > PURCHASE_LEN_MAX {
            return Err(PurchaseError::Malformed);
        }
        let record: SignedRecord =
            serde_json::from_slice(signed).map_err(|_| PurchaseError::Malformed)?;
        if record.domain != TAB_DOMAIN {
            return Err(PurchaseError::Malformed);
        }
        if record.signer != customer_key.fingerprint()
            || record.verify(customer_key).is_err()
            || !record.is_canonical()
        {
            return Err(PurchaseError::BadSignature);
        }
        let open: TabOpen =
            serde_json::from_slice(&record.bytes).map_err(|_| PurchaseError::Malformed)?;
        if open.transaction != transaction {
            return Err(PurchaseError::WrongTransaction);
        }
        let mut key = [0u8; 32];
        hex::decode_to_slice(&open.mac_key, &mut key).map_err(|_| PurchaseError::Malformed)?;
        Ok(Tab {
            transaction,
            mac_key: open.mac_key,
            deposit,
            spent: 0,
            count: 0,
            list: [0u8; 32],
            last: None,
            closed: false,
            expires_at: None,
            reported: false,
            terminated: false,
        })
    }

    /// The same tab ending with its session at `expires_at` (µs).
    pub fn until(self, expires_at: i64) -> Tab {
        Tab {
            expires_at: Some(expires_at),
            ..self
        }
    }

    /// The same tab closed (it stays closed; a closed tab's record is sent until taken).
    pub fn ended(self) -> Tab {
        Tab {
            closed: true,
            ..self
        }
    }

    /// The same tab closed by the merchant (or the session's time): the session ends too.
    pub fn terminated(self) -> Tab {
        Tab {
            closed: true,
            terminated: true,
            ..self
        }
    }

    /// The session's time is over at `now` (µs).
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|end| now >= end)
    }

    /// The list hash so far, as 64 lowercase hex digits.
    pub fn list_hex(&self) -> String {
        hex32::text(&self.list).to_string()
    }

    /// What the deposit still covers (minor units).
    pub fn remaining(&self) -> i64 {
        self.deposit.minor - self.spent
    }

    /// The tab's key, to check purchases away from the tab ([`TabKey::check`]): the merchant
    /// agent checks MACs and spellings on its callers' threads and leaves only the tab's
    /// state to its one writer.
    pub fn key(&self) -> Result<TabKey, PurchaseError> {
        let mut key = tally_kernel::Secret::new([0u8; 32]);
        hex::decode_to_slice(&self.mac_key, key.expose_mut())
            .map_err(|_| PurchaseError::Malformed)?;
        Ok(TabKey {
            transaction: self.transaction,
            transaction_text: self.transaction.to_string(),
            key: std::sync::Arc::new(KeyState {
                text: tally_kernel::Secret::new(self.mac_key.clone()),
                mac: HmacSha256Key::new(key.expose()),
            }),
        })
    }

    /// Takes a purchase at `now` (µs), or says why not (the tab is unchanged then). The
    /// purchase that uses the deposit up closes the tab: the merchant starts the clearing
    /// (the seed: "when the value of at least one purchase amounts to the value of the
    /// deposit, a clearing procedure is initiated by the merchant").
    pub fn take(&mut self, wire: &MacedPurchase, now: i64) -> Result<Taken, PurchaseError> {
        let checked = self.key()?.check(wire.clone())?;
        self.take_checked(&checked, now)
    }

    /// [`Tab::take`] for a purchase already checked under this tab's key. A purchase checked
    /// under another tab's key is refused (`WrongTransaction`).
    pub fn take_checked(&mut self, checked: &Checked, now: i64) -> Result<Taken, PurchaseError> {
        let wire = &checked.wire;
        if checked.transaction != self.transaction {
            return Err(PurchaseError::WrongTransaction);
        }
        // Checked under this tab's key, not a key once cached for the same transaction (the
        // key's text as the tab holds it: no decoding a purchase).
        if !checked.key.text.ct_eq(self.mac_key.as_bytes()) {
            return Err(PurchaseError::BadSignature);
        }
        if self.last.as_deref() == Some(wire.mac.as_str()) {
            return Ok(Taken::Repeat);
        }
        if self.closed {
            return Err(PurchaseError::Closed);
        }
        if self.is_expired(now) {
            return Err(PurchaseError::Expired);
        }
        let expected = self.count + 1;
        let price = checked.price;
        if checked.seq != expected {
            return Err(PurchaseError::OutOfOrder { expected });
        }
        if price.currency != self.deposit.currency || price.minor <= 0 {
            return Err(PurchaseError::BadPrice);
        }
        if price.minor > self.remaining() {
            return Err(PurchaseError::Exhausted {
                remaining: self.remaining(),
            });
        }
        self.list = list_next(&self.list, wire.bytes.as_bytes());
        self.spent += price.minor;
        self.count = expected;
        // The last MAC's room is used again (this is the agent's hot path).
        self.last
            .get_or_insert_with(String::new)
            .clone_from(&wire.mac);
        if self.remaining() == 0 {
            self.closed = true;
        }
        Ok(Taken::New {
            seq: checked.seq,
            price,
        })
    }
}

/// A tab's MAC key with its transaction ([`Tab::key`]); zeroized when dropped, never printed.
pub struct TabKey {
    transaction: TransactionId,
    /// The transaction as purchases spell it (its one spelling).
    transaction_text: String,
    key: std::sync::Arc<KeyState>,
}

/// A tab's key as a check uses it: its text as the tab holds it (to tell it is the tab's own)
/// and the HMAC state it keys, made once per tab (each purchase's MAC then costs its own
/// blocks and one more). Both are zeroized when dropped.
struct KeyState {
    text: tally_kernel::Secret<String>,
    mac: HmacSha256Key,
}

impl std::fmt::Debug for TabKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TabKey")
            .field("transaction", &self.transaction)
            .field("key", &"<secret>")
            .finish()
    }
}

/// A purchase whose size, MAC, spelling and item were checked under its tab's key
/// ([`TabKey::check`]); only what depends on the tab's state is left
/// ([`Tab::take_checked`]). Made only by the check; it keeps the key it was checked under
/// (never printed).
#[derive(Clone)]
pub struct Checked {
    wire: MacedPurchase,
    transaction: TransactionId,
    seq: u64,
    price: Amount,
    key: std::sync::Arc<KeyState>,
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked")
            .field("wire", &self.wire)
            .field("key", &"<secret>")
            .finish()
    }
}

impl Checked {
    /// The purchase as it came.
    pub fn wire(&self) -> &MacedPurchase {
        &self.wire
    }

    /// The purchase as it came, by value (once it is taken, to be written).
    pub fn into_wire(self) -> MacedPurchase {
        self.wire
    }
}

impl TabKey {
    /// Checks what needs no tab state: the size, the MAC, the one canonical spelling, the
    /// item, and that the purchase names this tab's transaction. It keeps the purchase (taken
    /// by value: the check is on the merchant agent's hot path, no copy).
    pub fn check(&self, wire: MacedPurchase) -> Result<Checked, PurchaseError> {
        if wire.bytes.len() > PURCHASE_LEN_MAX {
            return Err(PurchaseError::Malformed);
        }
        let mac = hex32::decode_public(wire.mac.as_bytes()).ok_or(PurchaseError::Malformed)?;
        let message = [PURCHASE_DOMAIN, wire.bytes.as_bytes()];
        if !self.key.mac.verify_parts(&message, &mac) {
            return Err(PurchaseError::BadSignature);
        }
        let p: PurchaseText =
            serde_json::from_str(&wire.bytes).map_err(|_| PurchaseError::Malformed)?;
        // One spelling: the MAC covers exactly the canonical bytes.
        if !spelled_canonically(&wire.bytes, &p.transaction, p.seq, p.price, &p.item, p.at) {
            return Err(PurchaseError::Malformed);
        }
        if p.item.is_empty()
            || p.item.len() > ITEM_LEN_MAX
            || !tally_kernel::text::plain(&p.item, false)
        {
            return Err(PurchaseError::Malformed);
        }
        // Ids have one spelling: the tab's transaction, or another (or none).
        if *p.transaction != *self.transaction_text {
            return Err(PurchaseError::WrongTransaction);
        }
        let (seq, price) = (p.seq, p.price);
        Ok(Checked {
            wire,
            transaction: self.transaction,
            seq,
            price,
            key: self.key.clone(),
        })
    }
}

/// The MAC that asks the agent to close the tab of `transaction` (hex): only the holder of
/// the tab's key can end it.
pub fn close_mac(mac_key: &[u8; 32], transaction: TransactionId) -> String {
    let message = [CLOSE_DOMAIN, transaction.to_string().as_bytes()].concat();
    hex::encode(hmac_sha256(mac_key, &message))
}

impl Tab {
    /// Checks a request to close the tab ([`close_mac`]).
    pub fn check_close(&self, mac: &str) -> Result<(), PurchaseError> {
        let mut key = [0u8; 32];
        hex::decode_to_slice(&self.mac_key, &mut key).map_err(|_| PurchaseError::Malformed)?;
        let mac = hex::decode(mac).map_err(|_| PurchaseError::BadSignature)?;
        let message = [CLOSE_DOMAIN, self.transaction.to_string().as_bytes()].concat();
        if hmac_sha256_verify(&key, &message, &mac) {
            Ok(())
        } else {
            Err(PurchaseError::BadSignature)
        }
    }
}

/// The list hash after one more purchase (its canonical bytes).
pub fn list_next(list: &[u8; 32], purchase_bytes: &[u8]) -> [u8; 32] {
    let mut input = [0u8; LIST_DOMAIN.len() + 64];
    let (domain, rest) = input.split_at_mut(LIST_DOMAIN.len());
    domain.copy_from_slice(LIST_DOMAIN);
    rest[..32].copy_from_slice(list);
    rest[32..].copy_from_slice(&sha256(purchase_bytes));
    sha256(&input)
}

/// A 32-byte value as 64 lowercase hex digits in JSON (`#[serde(with = "hex32")]`).
pub mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    /// The 64 hex digits, written in one pass (`hex::encode` goes a char at a time, and
    /// the merchant agent answers every purchase with its tab's list hash).
    pub struct Text([u8; 64]);

    impl std::ops::Deref for Text {
        type Target = str;
        fn deref(&self) -> &str {
            // Hex digits are ASCII.
            std::str::from_utf8(&self.0).unwrap_or_default()
        }
    }

    /// Each byte's value as a hex digit (either case), or 0xFF.
    const NIBBLES: [u8; 256] = {
        let mut t = [0xFFu8; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            t[b'A' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    };

    /// 64 hex digits (either case, as `hex::decode_to_slice` takes them) as 32 bytes; `None`
    /// for anything else. One table lookup a digit (the `hex` crate's decoding was a
    /// twentieth of the merchant agent's time per purchase) — indexed by the digits, so for
    /// public values only (a MAC as it came), never a key.
    pub fn decode_public(text: &[u8]) -> Option<[u8; 32]> {
        if text.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        let mut bad = 0u8;
        for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
            let (high, low) = (NIBBLES[usize::from(pair[0])], NIBBLES[usize::from(pair[1])]);
            bad |= high | low;
            *byte = (high << 4) | (low & 0x0F);
        }
        (bad & 0xF0 == 0).then_some(out)
    }

    /// The 64 lowercase hex digits of `v`.
    pub fn text(v: &[u8; 32]) -> Text {
        let mut out = [0u8; 64];
        // 64 bytes is exactly the room 32 bytes need.
        let _ = hex::encode_to_slice(v, &mut out);
        Text(out)
    }

    /// Writes the 64 hex digits.
    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&text(v))
    }

    /// Reads 64 hex digits (either case).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(text.as_bytes(), &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

/// A fresh tab for a customer: its signed opening and the MAC key to keep.
pub fn new_tab(
    key: &SigningKey,
    transaction: TransactionId,
    mac_key: [u8; 32],
    now: Timestamp,
) -> Result<Vec<u8>, PurchaseError> {
    TabOpen {
        transaction,
        mac_key: hex::encode(mac_key),
        at: now.as_micros(),
    }
    .sign(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::ids::{NodeId, SessionId};
    use tally_kernel::Currency;

    const T0: i64 = 1_767_225_600_000_000;
    const MAC_KEY: [u8; 32] = [7; 32];

    fn customer() -> SigningKey {
        SigningKey::from_seed(&[9; 32])
    }

    fn transaction() -> TransactionId {
        let am = NodeId::of(&SigningKey::from_seed(&[1; 32]).verifying_key());
        SessionId::new(am, 3).expect("id").first_transaction()
    }

    fn eur(minor: i64) -> Amount {
        Amount::new(minor, Currency::from_code("EUR").expect("EUR"))
    }

    fn purchase(seq: u64, minor: i64, item: &str) -> Purchase {
        Purchase {
            transaction: transaction(),
            seq,
            price: eur(minor),
            item: item.into(),
            at: T0 + seq as i64,
        }
    }

    fn maced(seq: u64, minor: i64, item: &str) -> MacedPurchase {
        purchase(seq, minor, item).mac(&MAC_KEY).expect("mac")
    }

    fn tab() -> Tab {
        let signed = new_tab(&customer(), transaction(), MAC_KEY, Timestamp(T0)).expect("tab");
        Tab::open(
            &signed,
            &customer().verifying_key(),
            transaction(),
            eur(100),
        )
        .expect("open")
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// The direct writer and the general JCS serializer give the same bytes, for any item
        /// text (quotes, backslashes, controls, non-ASCII, U+2028) and numbers at the edges of
        /// the profile; beyond them both refuse.
        #[test]
        fn canonical_bytes_are_those_of_the_general_serializer(
            item in "(\\PC|[\u{0}-\u{1f}\"\\\u{7f}\u{2028}\u{fffd}])*",
            seq in proptest::prop_oneof![0u64..4, (1u64 << 53) - 2..(1u64 << 53) + 2, proptest::num::u64::ANY],
            minor in proptest::prop_oneof![-3i64..3, (1i64 << 53) - 2..(1i64 << 53) + 2, proptest::num::i64::ANY],
            at in proptest::num::i64::ANY,
        ) {
            let p = Purchase { transaction: transaction(), seq, price: eur(minor), item, at };
            let general = tally_kernel::crypto::canonical_json(&p).ok().map(|b| String::from_utf8(b).expect("utf-8"));
            proptest::prop_assert_eq!(p.canonical().ok(), general.clone());
            // The check without a copy agrees: the canonical bytes, and nothing else (a byte
            // more, a byte less, another byte).
            let fields = |text: &str| {
                spelled_canonically(text, &p.transaction.to_string(), p.seq, p.price, &p.item, p.at)
            };
            if let Some(text) = general {
                let longer = text.clone() + " ";
                let other = text.replacen("\"seq\"", "\"Seq\"", 1);
                proptest::prop_assert!(fields(&text));
                proptest::prop_assert!(!fields(&longer));
                proptest::prop_assert!(!fields(&text[..text.len() - 1]));
                proptest::prop_assert!(!fields(&other));
            } else {
                proptest::prop_assert!(!fields(""));
            }
        }

        /// The public hex decoder decodes what the `hex` crate decodes, and refuses what it
        /// refuses (64 digits exactly).
        #[test]
        fn the_public_hex_decoder_is_the_hex_crates(text in "[0-9a-fA-F]{64}|[0-9a-gA-G/:@`]{60,66}") {
            let mut theirs = [0u8; 32];
            let theirs = hex::decode_to_slice(&text, &mut theirs).ok().map(|()| theirs);
            proptest::prop_assert_eq!(hex32::decode_public(text.as_bytes()), theirs);
        }
    }

    /// A purchase checked away from the tab is taken only by the tab whose key checked it:
    /// a key cached for the same transaction but another tab (another MAC key) is refused.
    #[test]
    fn a_checked_purchase_is_taken_only_under_the_key_that_checked_it() {
        let mut t = tab();
        let checked = t
            .key()
            .expect("key")
            .check(maced(1, 10, "song"))
            .expect("checked");
        let signed = new_tab(&customer(), transaction(), [8; 32], Timestamp(T0)).expect("tab");
        let mut other = Tab::open(
            &signed,
            &customer().verifying_key(),
            transaction(),
            eur(100),
        )
        .expect("open");
        assert_eq!(
            other.take_checked(&checked, T0),
            Err(PurchaseError::BadSignature)
        );
        assert_eq!(other.count, 0);
        assert!(matches!(
            t.take_checked(&checked, T0),
            Ok(Taken::New { .. })
        ));
        assert_eq!(
            other.key().expect("key").check(maced(1, 10, "song")).err(),
            Some(PurchaseError::BadSignature)
        );
    }

    #[test]
    fn a_tab_opens_only_for_its_customer_and_transaction() {
        let signed = new_tab(&customer(), transaction(), MAC_KEY, Timestamp(T0)).expect("tab");
        let other = SigningKey::from_seed(&[8; 32]).verifying_key();
        assert_eq!(
            Tab::open(&signed, &other, transaction(), eur(100)).err(),
            Some(PurchaseError::BadSignature)
        );
        let next = transaction().next().expect("next");
        assert_eq!(
            Tab::open(&signed, &customer().verifying_key(), next, eur(100)).err(),
            Some(PurchaseError::WrongTransaction)
        );
        assert_eq!(
            Tab::open(b"{}", &customer().verifying_key(), transaction(), eur(100)).err(),
            Some(PurchaseError::Malformed)
        );
        assert!(!format!("{:?}", tab()).contains(&hex::encode(MAC_KEY)));
    }

    #[test]
    fn a_tab_keeps_its_list_hash_as_hex_in_its_json() {
        let mut t = tab();
        t.take(&maced(1, 30, "song 1"), T0).expect("taken");
        let json = serde_json::to_value(&t).expect("json");
        assert_eq!(json["list"], hex::encode(t.list));
        let back: Tab = serde_json::from_value(json.clone()).expect("back");
        assert_eq!(back, t);
        let mut bad = json;
        bad["list"] = serde_json::json!("ab");
        assert!(serde_json::from_value::<Tab>(bad).is_err());
    }

    #[test]
    fn purchases_are_taken_in_order_within_the_deposit() {
        let mut t = tab();
        let first = maced(1, 30, "song 1");
        assert_eq!(
            t.take(&first, T0),
            Ok(Taken::New {
                seq: 1,
                price: eur(30)
            })
        );
        // The customer's retry is a repeat: counted once.
        assert_eq!(t.take(&first, T0), Ok(Taken::Repeat));
        assert_eq!((t.spent, t.count, t.remaining()), (30, 1, 70));
        // Out of order, another transaction, another currency, another key: refused, unchanged.
        let before = t.clone();
        assert_eq!(
            t.take(&maced(3, 10, "song 3"), T0),
            Err(PurchaseError::OutOfOrder { expected: 2 })
        );
        let mut other = purchase(2, 10, "x");
        other.transaction = transaction().next().expect("next");
        assert_eq!(
            t.take(&other.mac(&MAC_KEY).expect("mac"), T0),
            Err(PurchaseError::WrongTransaction)
        );
        let mut usd = purchase(2, 10, "x");
        usd.price = Amount::new(10, Currency::from_code("USD").expect("USD"));
        assert_eq!(
            t.take(&usd.mac(&MAC_KEY).expect("mac"), T0),
            Err(PurchaseError::BadPrice)
        );
        let forged = purchase(2, 10, "x").mac(&[6; 32]).expect("mac");
        assert_eq!(t.take(&forged, T0), Err(PurchaseError::BadSignature));
        // Bytes that are not the canonical spelling, even under the right key.
        let loose = format!("{} ", maced(2, 10, "x").bytes);
        let mac = hex::encode(hmac_sha256(
            &MAC_KEY,
            &[PURCHASE_DOMAIN, loose.as_bytes()].concat(),
        ));
        assert_eq!(
            t.take(&MacedPurchase { bytes: loose, mac }, T0),
            Err(PurchaseError::Malformed)
        );
        assert_eq!(t, before);
        // Beyond the deposit: refused with what is left; exactly the rest is taken.
        assert_eq!(
            t.take(&maced(2, 71, "album"), T0),
            Err(PurchaseError::Exhausted { remaining: 70 })
        );
        assert!(!t.closed);
        assert!(matches!(
            t.take(&maced(2, 70, "album"), T0),
            Ok(Taken::New { .. })
        ));
        // The purchase that uses the deposit up closes the tab: the merchant clears.
        assert_eq!((t.remaining(), t.closed), (0, true));
        assert_eq!(t.take(&maced(3, 1, "more"), T0), Err(PurchaseError::Closed));
        // Only the key's holder may close the tab.
        assert_eq!(
            t.check_close(&close_mac(&[6; 32], transaction())),
            Err(PurchaseError::BadSignature)
        );
        assert_eq!(t.check_close("zz"), Err(PurchaseError::BadSignature));
        t.check_close(&close_mac(&MAC_KEY, transaction()))
            .expect("the customer's close");
        t.closed = true;
        assert_eq!(t.take(&maced(3, 1, "more"), T0), Err(PurchaseError::Closed));
    }

    #[test]
    fn a_tab_takes_nothing_once_its_session_is_over() {
        let mut t = tab().until(T0 + 10);
        assert!(matches!(
            t.take(&maced(1, 5, "a"), T0 + 9),
            Ok(Taken::New { .. })
        ));
        // The last purchase again is still answered (a lost answer), a new one is not.
        assert_eq!(t.take(&maced(1, 5, "a"), T0 + 10), Ok(Taken::Repeat));
        let before = t.clone();
        assert_eq!(
            t.take(&maced(2, 5, "b"), T0 + 10),
            Err(PurchaseError::Expired)
        );
        assert_eq!(t, before);
        assert!(t.is_expired(T0 + 10) && !t.is_expired(T0 + 9));
        assert!(!tab().is_expired(i64::MAX));
    }

    #[test]
    fn both_sides_compute_the_same_list_hash() {
        let mut t = tab();
        let mut list = [0u8; 32];
        for (seq, item) in [(1, "a"), (2, "b"), (3, "c")] {
            let m = maced(seq, 5, item);
            t.take(&m, T0).expect("taken");
            list = list_next(&list, m.bytes.as_bytes());
        }
        assert_eq!(t.list, list);
    }

    #[test]
    fn the_golden_vector_holds() {
        let v: serde_json::Value = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/protocols/vectors/purchase.json"
        )))
        .expect("vector");
        let tab_bytes = new_tab(&customer(), transaction(), MAC_KEY, Timestamp(T0)).expect("tab");
        assert_eq!(
            String::from_utf8(tab_bytes).expect("utf-8"),
            v["tab"].as_str().expect("tab")
        );
        let m = maced(1, 30, "song 1");
        assert_eq!(serde_json::to_value(&m).expect("json"), v["purchase"]);
        let mut t = tab();
        t.take(&m, T0).expect("taken");
        assert_eq!(
            hex::encode(t.list),
            v["list_after_1"].as_str().expect("list")
        );
        assert_eq!(
            close_mac(&MAC_KEY, transaction()),
            v["close_mac"].as_str().expect("close")
        );
    }
}
