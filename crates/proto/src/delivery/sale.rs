//! The states of locked delivery on the node (SPEC D1, D5–D9, D11) as machines of the crate's
//! one shape ([`crate::effects`]): a [`Product`] is a draft, on sale or withdrawn; a [`Sale`]
//! (the reference file) is open until the price is paid and then released, once; a
//! [`Payment`] quoting a reference is matched, or held in suspense and refundable once.
//!
//! The money rule lives here: a payment of exactly the price, for an open sale, moves to the
//! product's account and releases the sale in the same step, with the key-release message
//! (the key by reference, derived at delivery); any other payment (another amount or currency,
//! a sale already released, an unknown reference) moves to the operator's suspense account.
//! The caller commits each step under a guard on the previous state, so of two payments racing
//! for one sale only one can release it.

use super::ReferenceCode;
use crate::effects::{Blame, Effects, Fault, Outgoing, SecretRef};
use serde::{Deserialize, Serialize};
use tally_kernel::{Amount, Id, Timestamp};
use tally_ledger::Command;

/// Why a delivery step was refused; nothing changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaleError {
    /// The product is not in a state that allows this.
    #[error("{0}")]
    ProductState(String),
    /// A product goes on sale with exactly one product entry.
    #[error("a product needs exactly one `product` entry")]
    ProductEntries,
    /// The sale is not paid yet, so its key is not released.
    #[error("the sale is not paid yet; its key is released on payment")]
    NotReleased,
    /// The payment released a key, or was refunded already.
    #[error("this payment cannot be refunded: {0}")]
    NotRefundable(&'static str),
    /// The sale is not open any more (paid, expired or cancelled).
    #[error("the sale is {0}, not open")]
    NotOpen(SaleState),
    /// A step the caller should not have asked for (a bug of the node).
    #[error("API misuse: {0}")]
    ApiMisuse(&'static str),
}

impl Blame for SaleError {
    fn fault(&self) -> Fault {
        match self {
            SaleError::ApiMisuse(_) => Fault::Node,
            SaleError::ProductState(_)
            | SaleError::ProductEntries
            | SaleError::NotReleased
            | SaleError::NotOpen(_)
            | SaleError::NotRefundable(_) => Fault::Caller,
        }
    }
}

/// Where a product stands. Variants are alphabetical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProductState {
    /// On sale.
    Active,
    /// Being put together: entries may be uploaded.
    Draft,
    /// Off sale; sold packages stay downloadable.
    Withdrawn,
}
stored_names!(ProductState { Active => "active", Draft => "draft", Withdrawn => "withdrawn" });

/// Where a sale stands. Variants are alphabetical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaleState {
    /// The buyer cancelled it unpaid: its key is never released.
    Cancelled,
    /// Unpaid for the node's expiry period: its key is never released.
    Expired,
    /// Waiting for the price.
    Open,
    /// Paid and refunded afterwards (the key had been released).
    Refunded,
    /// Paid; the key was released.
    Released,
}
stored_names!(SaleState {
    Cancelled => "cancelled",
    Expired => "expired",
    Open => "open",
    Refunded => "refunded",
    Released => "released",
});

/// What became of a payment quoting a reference. Variants are alphabetical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// The sale expired or was cancelled unpaid: held in suspense, refundable.
    Closed,
    /// The sale was already paid: held in suspense, refundable.
    Duplicate,
    /// The price for an open sale: released it.
    Matched,
    /// Another amount or currency for an open sale: held in suspense, refundable.
    Mismatch,
    /// Given back to where it came from.
    Refunded,
    /// No sale has the reference: held in suspense, refundable.
    Unmatched,
}
stored_names!(PaymentStatus {
    Closed => "closed",
    Duplicate => "duplicate",
    Matched => "matched",
    Mismatch => "mismatch",
    Refunded => "refunded",
    Unmatched => "unmatched",
});

/// How a payment arrived. Variants are alphabetical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentPath {
    /// The buyer's acknowledgement authorised a debit (D7).
    Debit,
    /// From an account on the node's own ledger (D6 a).
    Ledger,
    /// A receiver's signed notification (D6 b).
    Receiver,
}
stored_names!(PaymentPath { Debit => "debit", Ledger => "ledger", Receiver => "receiver" });

/// A product's life: what may be done to it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Product {
    /// Its id.
    pub id: Id,
    /// Where it stands.
    pub state: ProductState,
}

/// What a product step gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductInput {
    /// Put a draft on sale; it must hold exactly one product entry.
    Publish {
        /// Its entries of kind `product`.
        product_entries: usize,
    },
    /// Take it off sale.
    Withdraw,
}

impl Product {
    /// Entries may be added to a draft only (a sold package must never change).
    pub fn check_upload(&self) -> Result<(), SaleError> {
        match self.state {
            ProductState::Draft => Ok(()),
            other => Err(SaleError::ProductState(format!(
                "the product is {other}; entries can only be added to a draft"
            ))),
        }
    }

    /// Only a product on sale is sold.
    pub fn check_sale(&self) -> Result<(), SaleError> {
        match self.state {
            ProductState::Active => Ok(()),
            other => Err(SaleError::ProductState(format!(
                "product {} is not on sale ({other})",
                self.id
            ))),
        }
    }

    /// One step. Publishing an active product or withdrawing a withdrawn one repeats a step
    /// already taken (no effects).
    pub fn handle(self, input: ProductInput) -> Result<(Product, Effects), SaleError> {
        let next = match (self.state, input) {
            (ProductState::Active, ProductInput::Publish { .. })
            | (ProductState::Withdrawn, ProductInput::Withdraw) => {
                return Ok((self, Effects::none()));
            }
            (ProductState::Draft, ProductInput::Publish { product_entries: 1 }) => {
                ProductState::Active
            }
            (ProductState::Draft, ProductInput::Publish { .. }) => {
                return Err(SaleError::ProductEntries);
            }
            (ProductState::Withdrawn, ProductInput::Publish { .. }) => {
                return Err(SaleError::ProductState(
                    "a withdrawn product cannot be put on sale again".into(),
                ));
            }
            (ProductState::Active | ProductState::Draft, ProductInput::Withdraw) => {
                ProductState::Withdrawn
            }
        };
        let effects = Effects::record(
            &format!("product_{next}"),
            serde_json::json!({ "product": self.id }),
        );
        Ok((
            Product {
                id: self.id,
                state: next,
            },
            effects,
        ))
    }
}

/// A sale: the reference file (D5) as the machine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sale {
    /// Its id.
    pub id: Id,
    /// Where it stands.
    pub state: SaleState,
    /// The price.
    pub price: Amount,
    /// The account the price goes to.
    pub pay_to: Id,
    /// The product's title (for messages).
    pub title: String,
    /// The reference code.
    pub reference: ReferenceCode,
    /// The buyer's name (API-key owner).
    pub buyer: String,
    /// Where the key goes: channel kind.
    pub channel: String,
    /// Where the key goes: address.
    pub address: String,
    /// Sold.
    pub created_at: Timestamp,
    /// The buyer acknowledged an intact package.
    pub delivered_at: Option<Timestamp>,
    /// When the overdue alert (D9) is due, while one is: fixed when the sale is made (the
    /// node's overdue period after it), cleared once the alert went out or the sale was paid.
    pub alert_at: Option<Timestamp>,
    /// When an unpaid sale expires (the node's expiry period after it was made).
    pub expires_at: Option<Timestamp>,
}

/// A payment arriving by any path, before it is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// How it came.
    pub path: PaymentPath,
    /// What was paid.
    pub amount: Amount,
    /// The account it comes from.
    pub from: Id,
    /// The operator's suspense account in its currency (where anything but the price goes).
    pub suspense: Id,
}

/// What a sale step gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaleInput {
    /// The buyer acknowledged an intact package (D4), optionally signed.
    Acknowledged {
        /// The package digest acknowledged, hex.
        package_sha256: String,
        /// The fingerprint of the buyer's key, when signed.
        signed_by: Option<String>,
    },
    /// A payment quoting the sale's reference (D6, D7).
    Payment(Incoming),
    /// The buyer lost the key (D11): send it again, the `nth` time.
    KeyLost {
        /// Makes each re-send its own message.
        nth: i64,
    },
    /// [`Sale::poll_timeout`] passed: the overdue alert (D9), to the buyer and to the
    /// merchant's address if it has one.
    Overdue {
        /// The merchant's verified address (channel, address), if it has one.
        merchant_address: Option<(String, String)>,
    },
    /// [`Sale::poll_timeout`] passed its expiry: the unpaid sale ends, its key is never
    /// released, later payments quoting it wait in suspense.
    Expire,
    /// The buyer cancels the unpaid sale (same end as expiry).
    Cancel,
}

/// What a payment quoting a reference becomes: the price for an open sale is matched; any
/// other payment waits in suspense.
pub fn payment_status(sale: Option<&Sale>, amount: Amount) -> PaymentStatus {
    match sale {
        None => PaymentStatus::Unmatched,
        Some(s) if s.state == SaleState::Released => PaymentStatus::Duplicate,
        Some(s)
            if matches!(
                s.state,
                SaleState::Expired | SaleState::Cancelled | SaleState::Refunded
            ) =>
        {
            PaymentStatus::Closed
        }
        Some(s) if amount == s.price => PaymentStatus::Matched,
        Some(_) => PaymentStatus::Mismatch,
    }
}

/// The ledger command booking a payment of `status`: to the product's account when matched,
/// to suspense otherwise.
pub fn payment_command(
    status: PaymentStatus,
    incoming: &Incoming,
    pay_to: Id,
    reference: &str,
    sale: Option<Id>,
) -> Command {
    let (credit_account, memo) = match (status, sale) {
        (PaymentStatus::Matched, Some(sale)) => {
            (pay_to, format!("sale {sale} reference {reference}"))
        }
        _ => (
            incoming.suspense,
            format!("{status} payment quoting {reference}"),
        ),
    };
    Command::Transfer {
        debit_account: incoming.from,
        credit_account,
        amount_minor: incoming.amount.minor,
        currency: incoming.amount.currency,
        timeout_s: None,
        memo,
    }
}

impl Sale {
    /// When the sale next needs a step without input: the overdue alert, while it is open and
    /// not alerted yet.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match self.state {
            SaleState::Open => match (self.alert_at, self.expires_at) {
                (Some(a), Some(e)) => Some(a.min(e)),
                (a, e) => a.or(e),
            },
            SaleState::Released
            | SaleState::Refunded
            | SaleState::Expired
            | SaleState::Cancelled => None,
        }
    }

    /// True when the step due at `now` is the expiry (it wins over an alert due as well).
    pub fn expiry_due(&self, now: Timestamp) -> bool {
        self.state == SaleState::Open && self.expires_at.is_some_and(|e| e <= now)
    }

    /// One step at `now`.
    pub fn handle(self, now: Timestamp, input: SaleInput) -> Result<(Sale, Effects), SaleError> {
        match input {
            SaleInput::Acknowledged {
                package_sha256,
                signed_by,
            } => {
                if self.delivered_at.is_some() {
                    return Err(SaleError::ApiMisuse("the sale is acknowledged already"));
                }
                let effects = Effects::record(
                    "sale_delivered",
                    serde_json::json!({
                        "sale": self.id, "package_sha256": package_sha256, "signed_by": signed_by,
                    }),
                );
                let mut next = self;
                next.delivered_at = Some(now);
                Ok((next, effects))
            }
            SaleInput::Payment(incoming) => {
                let status = payment_status(Some(&self), incoming.amount);
                let command = payment_command(
                    status,
                    &incoming,
                    self.pay_to,
                    self.reference.as_str(),
                    Some(self.id),
                );
                let mut effects = Effects::ledger(command);
                let mut next = self;
                if status == PaymentStatus::Matched {
                    next.state = SaleState::Released;
                    next.alert_at = None;
                    effects = effects.send(next.key_message(0));
                }
                Ok((next, effects))
            }
            SaleInput::KeyLost { nth } => {
                if self.state != SaleState::Released {
                    return Err(SaleError::NotReleased);
                }
                let effects = Effects::record(
                    "sale_key_resent",
                    serde_json::json!({ "sale": self.id, "nth": nth }),
                )
                .send(self.key_message(nth));
                Ok((self, effects))
            }
            SaleInput::Expire | SaleInput::Cancel => {
                if self.state != SaleState::Open {
                    return Err(SaleError::NotOpen(self.state));
                }
                let expire = matches!(input, SaleInput::Expire);
                if expire && !self.expiry_due(now) {
                    return Err(SaleError::ApiMisuse("the sale is not due to expire"));
                }
                let (next_state, kind, why) = if expire {
                    (SaleState::Expired, "sale_expired", "was not paid in time")
                } else {
                    (SaleState::Cancelled, "sale_cancelled", "was cancelled")
                };
                let reference = self.reference.display();
                let effects = Effects::record(
                    kind,
                    serde_json::json!({ "sale": self.id, "buyer": self.buyer }),
                );
                // The buyer is told of an expiry; a cancel is the buyer's own (and telling
                // would let buy-and-cancel send mail to any address without end).
                if !expire {
                    let mut next = self;
                    next.state = next_state;
                    next.alert_at = None;
                    next.expires_at = None;
                    return Ok((next, effects));
                }
                let effects = effects.send(Outgoing {
                    dedup_key: format!(":sale:{}:{}", self.id, next_state.as_str()),
                    channel: self.channel.clone(),
                    address: self.address.clone(),
                    subject: format!("Your order of {} is closed", self.title),
                    body: format!(
                        "Your order of {} ({}, reference {reference}) {why}: its key will not \
                         be released. A payment quoting this reference is held for refund.",
                        self.title, self.price
                    ),
                    secret: None,
                    data: serde_json::json!({ "sale": self.id, "reference": reference }),
                });
                let mut next = self;
                next.state = next_state;
                next.alert_at = None;
                next.expires_at = None;
                Ok((next, effects))
            }
            SaleInput::Overdue { merchant_address } => {
                if self.state != SaleState::Open || self.alert_at.is_none_or(|t| now < t) {
                    return Err(SaleError::ApiMisuse("no overdue alert is due"));
                }
                let reference = self.reference.display();
                let mut effects = Effects::record(
                    "sale_overdue",
                    serde_json::json!({ "sale": self.id, "buyer": self.buyer }),
                )
                .send(Outgoing {
                    dedup_key: format!(":sale:{}:reminder", self.id),
                    channel: self.channel.clone(),
                    address: self.address.clone(),
                    subject: format!("Reminder: {} is waiting for payment", self.title),
                    body: format!(
                        "Your order of {} ({}) is not paid yet. Pay quoting reference \
                         {reference} to receive the unlock key.",
                        self.title, self.price
                    ),
                    secret: None,
                    data: serde_json::json!({ "sale": self.id, "reference": reference }),
                });
                if let Some((channel, address)) = merchant_address {
                    effects = effects.send(Outgoing {
                        dedup_key: format!(":sale:{}:overdue", self.id),
                        channel,
                        address,
                        subject: format!("Overdue: {} sold to {}", self.title, self.buyer),
                        body: format!(
                            "Sale {} of {} to {} ({}, reference {reference}) is unpaid since {}.",
                            self.id, self.title, self.buyer, self.price, self.created_at
                        ),
                        secret: None,
                        data: serde_json::json!({ "sale": self.id, "reference": reference }),
                    });
                }
                let mut next = self;
                next.alert_at = None;
                Ok((next, effects))
            }
        }
    }

    /// The message releasing the key; the key itself is put in at delivery.
    fn key_message(&self, nth: i64) -> Outgoing {
        let secret = SecretRef::UnlockKey { sale: self.id };
        let reference = self.reference.display();
        Outgoing {
            dedup_key: format!(":sale:{}:key:{nth}", self.id),
            channel: self.channel.clone(),
            address: self.address.clone(),
            subject: format!("Your unlock key for {}", self.title),
            body: format!(
                "Payment received for {} (reference {reference}).\nUnlock key: {}\nOpen the \
                 package with: tally package unlock FILE --key <the key>\n",
                self.title,
                secret.placeholder()
            ),
            secret: Some(secret),
            data: serde_json::json!({ "sale": self.id, "reference": reference }),
        }
    }
}

/// A payment held by the node, as the refund machine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    /// Its id.
    pub id: Id,
    /// What became of it.
    pub status: PaymentStatus,
    /// What was paid.
    pub amount: Amount,
    /// The account holding it (the product's, or suspense).
    pub holder: Id,
    /// Where it came from.
    pub refund_to: Id,
    /// The reference it quoted.
    pub reference: String,
}

impl Payment {
    /// Refunds it: the money goes back where it came from, once (for the price of a released
    /// sale, from the merchant's account: the key stays released, the sale is refunded).
    pub fn refund(self) -> Result<(Payment, Effects), SaleError> {
        match self.status {
            PaymentStatus::Refunded => Err(SaleError::NotRefundable("it was refunded already")),
            // The price of a released sale goes back from the merchant's account (the operator
            // or the merchant decided so); the sale is marked refunded by the caller.
            PaymentStatus::Matched
            | PaymentStatus::Closed
            | PaymentStatus::Duplicate
            | PaymentStatus::Mismatch
            | PaymentStatus::Unmatched => {
                let effects = Effects::ledger(Command::Transfer {
                    debit_account: self.holder,
                    credit_account: self.refund_to,
                    amount_minor: self.amount.minor,
                    currency: self.amount.currency,
                    timeout_s: None,
                    memo: format!(
                        "refund of {} payment quoting {}",
                        self.status, self.reference
                    ),
                });
                let mut next = self;
                next.status = PaymentStatus::Refunded;
                Ok((next, effects))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_kernel::Currency;

    fn eur(minor: i64) -> Amount {
        Amount::new(minor, Currency::from_code("EUR").expect("EUR"))
    }

    fn id(n: u8) -> Id {
        Id::from_slice(&[n; 16]).expect("16 bytes")
    }

    fn sale() -> Sale {
        Sale {
            id: id(1),
            state: SaleState::Open,
            price: eur(990),
            pay_to: id(2),
            title: "Blue album".into(),
            reference: ReferenceCode::new(id(3), "bob", Timestamp(1), [4; 16]),
            buyer: "bob".into(),
            channel: "dev".into(),
            address: "bob".into(),
            created_at: Timestamp(1_000_000),
            delivered_at: None,
            alert_at: Some(Timestamp(61_000_000)),
            expires_at: Some(Timestamp(121_000_000)),
        }
    }

    #[test]
    fn an_unpaid_sale_expires_or_is_cancelled_and_then_takes_no_price() {
        let s = sale();
        assert_eq!(
            s.poll_timeout(),
            Some(Timestamp(61_000_000)),
            "the alert first"
        );
        assert!(matches!(
            s.clone().handle(Timestamp(100_000_000), SaleInput::Expire),
            Err(SaleError::ApiMisuse(_))
        ));
        let (expired, effects) = s
            .clone()
            .handle(Timestamp(121_000_000), SaleInput::Expire)
            .expect("due");
        assert_eq!(expired.state, SaleState::Expired);
        assert_eq!(expired.poll_timeout(), None);
        assert_eq!(effects.messages.len(), 1, "the buyer is told");
        let (cancelled, effects) = s.handle(Timestamp(2), SaleInput::Cancel).expect("open");
        assert_eq!(cancelled.state, SaleState::Cancelled);
        assert!(effects.messages.is_empty(), "the buyer cancelled: no mail");
        for ended in [expired, cancelled] {
            assert_eq!(
                payment_status(Some(&ended), eur(990)),
                PaymentStatus::Closed
            );
            let (after, effects) = ended
                .clone()
                .handle(Timestamp(3), pay(eur(990)))
                .expect("kept");
            assert_eq!(after.state, ended.state, "the price releases nothing");
            assert!(effects.messages.is_empty(), "no key goes out");
            assert!(matches!(
                ended.handle(Timestamp(3), SaleInput::Cancel),
                Err(SaleError::NotOpen(_))
            ));
        }
    }

    fn pay(amount: Amount) -> SaleInput {
        SaleInput::Payment(Incoming {
            path: PaymentPath::Ledger,
            amount,
            from: id(5),
            suspense: id(6),
        })
    }

    fn credited(e: &Effects) -> Id {
        match &e.ledger {
            Some(Command::Transfer { credit_account, .. }) => *credit_account,
            other => panic!("not a transfer: {other:?}"),
        }
    }

    #[test]
    fn the_price_releases_once_and_everything_else_goes_to_suspense() {
        let now = Timestamp(2_000_000);
        let (released, e) = sale().handle(now, pay(eur(990))).expect("pay");
        assert_eq!(released.state, SaleState::Released);
        assert_eq!(
            credited(&e),
            id(2),
            "the price goes to the product's account"
        );
        assert_eq!(e.messages.len(), 1);
        assert_eq!(
            e.messages[0].secret,
            Some(SecretRef::UnlockKey { sale: id(1) }),
            "the key goes by reference"
        );
        assert!(e.messages[0].body.contains("{{unlock_key}}"));
        // The same price again is a duplicate: suspense, and no second key.
        let (again, e) = released.handle(now, pay(eur(990))).expect("pay twice");
        assert_eq!(again.state, SaleState::Released);
        assert_eq!(credited(&e), id(6));
        assert!(e.messages.is_empty());
        // Another amount leaves the sale open.
        let (open, e) = sale().handle(now, pay(eur(989))).expect("short");
        assert_eq!(open.state, SaleState::Open);
        assert_eq!(credited(&e), id(6));
        assert!(e.messages.is_empty());
        let usd = Amount::new(990, Currency::from_code("USD").expect("USD"));
        assert_eq!(payment_status(Some(&sale()), usd), PaymentStatus::Mismatch);
        assert_eq!(payment_status(None, eur(990)), PaymentStatus::Unmatched);
    }

    #[test]
    fn overdue_is_due_once_after_the_period_and_never_for_a_paid_sale() {
        let s = sale();
        let due = s.poll_timeout().expect("due");
        assert_eq!(due, Timestamp(61_000_000));
        let input = || SaleInput::Overdue {
            merchant_address: Some(("dev".into(), "shop".into())),
        };
        assert!(
            s.clone().handle(Timestamp(due.0 - 1), input()).is_err(),
            "not yet"
        );
        let (alerted, e) = s.handle(due, input()).expect("due");
        assert_eq!(e.messages.len(), 2, "buyer and merchant");
        assert_eq!(
            alerted.poll_timeout(),
            alerted.expires_at,
            "alerted once; the expiry is what stays due"
        );
        let (paid, _) = sale().handle(due, pay(eur(990))).expect("pay");
        assert_eq!(paid.poll_timeout(), None);
    }

    #[test]
    fn a_lost_key_is_resent_only_after_release() {
        assert_eq!(
            sale()
                .handle(Timestamp(0), SaleInput::KeyLost { nth: 1 })
                .err(),
            Some(SaleError::NotReleased)
        );
        let (paid, _) = sale().handle(Timestamp(0), pay(eur(990))).expect("pay");
        let (_, e) = paid
            .handle(Timestamp(0), SaleInput::KeyLost { nth: 7 })
            .expect("resend");
        assert_eq!(e.messages[0].dedup_key, format!(":sale:{}:key:7", id(1)));
    }

    #[test]
    fn products_move_draft_to_active_to_withdrawn_only() {
        let draft = Product {
            id: id(1),
            state: ProductState::Draft,
        };
        assert!(draft.check_upload().is_ok());
        assert!(draft.check_sale().is_err());
        assert!(
            draft
                .handle(ProductInput::Publish { product_entries: 0 })
                .is_err()
        );
        let (active, e) = draft
            .handle(ProductInput::Publish { product_entries: 1 })
            .expect("publish");
        assert_eq!(active.state, ProductState::Active);
        assert!(!e.is_none());
        assert!(
            active.check_upload().is_err(),
            "a product on sale never changes"
        );
        let (same, e) = active
            .handle(ProductInput::Publish { product_entries: 1 })
            .expect("again");
        assert_eq!((same, e.is_none()), (active, true));
        let (gone, _) = active.handle(ProductInput::Withdraw).expect("withdraw");
        assert!(
            gone.handle(ProductInput::Publish { product_entries: 1 })
                .is_err()
        );
        assert!(
            gone.handle(ProductInput::Withdraw)
                .expect("again")
                .1
                .is_none()
        );
    }

    #[test]
    fn a_payment_is_refunded_once_a_matched_one_from_the_merchant() {
        let p = Payment {
            id: id(1),
            status: PaymentStatus::Mismatch,
            amount: eur(500),
            holder: id(6),
            refund_to: id(5),
            reference: "X".into(),
        };
        let (refunded, e) = p.clone().refund().expect("refund");
        assert_eq!(credited(&e), id(5));
        assert!(matches!(
            refunded.clone().refund(),
            Err(SaleError::NotRefundable(_))
        ));
        // The price of a released sale goes back from its holder (the merchant's account).
        let matched = Payment {
            status: PaymentStatus::Matched,
            ..p
        };
        let (refunded, e) = matched
            .refund()
            .expect("the merchant or the operator decided");
        assert_eq!(credited(&e), id(5));
        assert_eq!(refunded.status, PaymentStatus::Refunded);
    }

    #[test]
    fn stored_names_round_trip() {
        for s in [
            PaymentStatus::Closed,
            PaymentStatus::Duplicate,
            PaymentStatus::Matched,
            PaymentStatus::Mismatch,
            PaymentStatus::Refunded,
            PaymentStatus::Unmatched,
        ] {
            assert_eq!(PaymentStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).expect("json"), s.as_str());
        }
        for s in [
            SaleState::Cancelled,
            SaleState::Expired,
            SaleState::Open,
            SaleState::Refunded,
            SaleState::Released,
        ] {
            assert_eq!(SaleState::parse(s.as_str()), Some(s));
        }
        for s in [
            ProductState::Active,
            ProductState::Draft,
            ProductState::Withdrawn,
        ] {
            assert_eq!(ProductState::parse(s.as_str()), Some(s));
        }
        assert_eq!(SaleState::parse("Open"), None);
    }
}
