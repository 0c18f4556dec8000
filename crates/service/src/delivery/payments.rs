//! Payments quoting a reference code (D6, D7): from an account on this ledger, from an
//! external receiver's signed notification, or debited on acknowledgement; each decided by the
//! sale machine (the price releases the sale, anything else waits in suspense) and
//! committed in one step; refunds by the payment machine.

use super::{
    Arrival, Delivery, DeliveryError, PayReference, PaymentView, RECEIVER_KEY_AAD, ReceiverConfig,
    ReceiverView, parse_reference, same_payment,
};
use crate::Missing;
use crate::access::{corrupt, invalid, namespaced, require_admin};
use crate::core::{Gate, Outflow};
use crate::exec::retrying;
use crate::identity::{getrandom_fill, setup};
use crate::{Principal, Result, ServiceError};
use tally_kernel::crypto::{VerifyingKey, seal};
use tally_kernel::{Amount, Currency, Id, Secret, Timestamp};
use tally_ledger::{AccountFlags, AccountKind, Command};
use tally_proto::delivery::notification::{self, ReceiverKey};
use tally_proto::delivery::sale::{
    Incoming, Payment, PaymentPath, PaymentStatus, SaleInput, payment_command, payment_status,
};
use tally_proto::effects::Effects;
use tally_store::delivery::{
    PaymentRow, ReceiverRow, insert_payment, refund_payment, refund_sale, release_sale,
    upsert_receiver,
};
use tally_store::{Attachment, Conflict};

impl Delivery {
    /// Pays a sale from an account on this ledger, quoting its reference code (D6 a).
    /// Above the payer's or the merchant's threshold, `gate` asks for confirmation first.
    pub async fn pay_reference(
        &self,
        by: &Principal,
        idempotency_key: &str,
        req: PayReference,
        gate: &impl Gate,
    ) -> Result<PaymentView> {
        let key = namespaced(by, idempotency_key)?;
        let code = parse_reference(&req.reference)?;
        self.core
            .require_owner(
                by,
                req.from_account,
                "you can only pay from your own accounts",
            )
            .await?;
        // A payment in another currency than the account's is refused before anything is
        // opened for it (the operator's suspense account in that currency, say).
        if let Some(from) = self.core.store().account(req.from_account).await?
            && from.currency != req.amount.currency
        {
            return Err(ServiceError::Ledger(
                tally_ledger::LedgerError::CurrencyMismatch {
                    account: from.id,
                    account_currency: from.currency,
                    currency: req.amount.currency,
                },
            ));
        }
        let sale = self.sale_of(&code).await?;
        let product = self.product_row(sale.product_id).await?;
        let confirmation = gate
            .gate(
                by,
                &key,
                Outflow {
                    operation: "sale_payment",
                    payer_account: req.from_account,
                    payee_account: product.pay_to,
                    amount: req.amount,
                    description: format!("Payment of {} for {}", code.as_str(), product.title),
                },
            )
            .await?;
        self.take_payment(Arrival {
            confirmation,
            key,
            path: PaymentPath::Ledger,
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
        let account = self.core.existing_account(req.account).await?;
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
            updated_at: self.core.now(),
        };
        let mut change = [0_u8; 16];
        getrandom_fill(&mut change)?;
        self.core
            .commit(
                format!(":receiver:{name}:set:{}", hex::encode(change)),
                Effects::record(
                    "receiver_set",
                    serde_json::json!({ "receiver": name, "account": req.account, "kind": kind }),
                ),
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
            self.core
                .store()
                .receiver(name)
                .await?
                .ok_or_else(|| ServiceError::NotFound {
                    what: Missing::Receiver,
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
            self.core.now(),
            self.settings().notification_window_s,
        )
        .map_err(DeliveryError::from)?;
        if n.id.is_empty() || n.id.len() > 128 || !n.id.chars().all(|c| c.is_ascii_graphic()) {
            return Err(invalid("id", "1 to 128 printable ASCII characters"));
        }
        let ledger_key = format!(":receiver:{name}:{}", n.id);
        if let Some(p) = self
            .core
            .store()
            .delivery_payment_by_key(&ledger_key)
            .await?
        {
            same_payment(&p, n.reference.as_str(), n.amount)?;
            let mut view = self.payment_view(&p).await?;
            view.replayed = true;
            return Ok(view);
        }
        // A reference with a typo (or no code at all) matches no sale: the money waits in
        // suspense with the text as quoted, refundable, instead of being refused and lost.
        let sale = match n.reference.code() {
            Some(code) => self.core.store().sale_by_reference(code.as_str()).await?,
            None => None,
        };
        // A bank's notification is money already received: no one's threshold applies.
        self.take_payment(Arrival {
            confirmation: Vec::new(),
            key: ledger_key,
            path: PaymentPath::Receiver,
            reference: n.reference.as_str().to_string(),
            sale,
            amount: n.amount,
            from: receiver.account,
            payer: format!("{} via {name}", n.payer),
        })
        .await
    }

    /// Decides and books a payment: the price for an open sale releases it (the sale
    /// machine's step, guarded on the sale still open); anything else goes to suspense,
    /// recorded and refundable. A payment that loses the race for a sale to another one is
    /// decided again on the sale as it is then (a duplicate).
    pub(crate) async fn take_payment(&self, p: Arrival) -> Result<PaymentView> {
        if let Some(done) = self.core.store().delivery_payment_by_key(&p.key).await? {
            same_payment(&done, &p.reference, p.amount)?;
            return self.booked(&p, true).await;
        }
        let suspense = self.suspense_account(p.amount.currency).await?;
        let incoming = Incoming {
            path: p.path,
            amount: p.amount,
            from: p.from,
            suspense,
        };
        let replayed = retrying(|| async {
            let now = self.core.now();
            let sale = match &p.sale {
                Some(s) => Some(self.sale_row(s.id).await?),
                None => None,
            };
            let (effects, status, holder, mut rows) = match &sale {
                Some(s) => {
                    let product = self.product_row(s.product_id).await?;
                    let machine = self.machine(s, &product)?;
                    let status = payment_status(Some(&machine), p.amount);
                    let (_, effects) = machine.handle(now, SaleInput::Payment(incoming.clone()))?;
                    let (holder, rows): (Id, Vec<Attachment>) = match status {
                        PaymentStatus::Matched => (product.pay_to, release_sale(s.id, now).into()),
                        _ => (suspense, Vec::new()),
                    };
                    (effects, status, holder, rows)
                }
                None => {
                    let status = PaymentStatus::Unmatched;
                    let command = payment_command(status, &incoming, suspense, &p.reference, None);
                    (Effects::ledger(command), status, suspense, Vec::new())
                }
            };
            rows.push(insert_payment(&self.payment_row(&p, status, holder, now)));
            rows.extend(p.confirmation.iter().cloned());
            let outcome = self.core.commit(p.key.clone(), effects, rows).await?;
            Ok(outcome.replayed)
        })
        .await?;
        self.booked(&p, replayed).await
    }

    fn payment_row(
        &self,
        p: &Arrival,
        status: PaymentStatus,
        holder: Id,
        now: Timestamp,
    ) -> PaymentRow {
        PaymentRow {
            id: Id::new(),
            sale_id: p.sale.as_ref().map(|s| s.id),
            reference: p.reference.clone(),
            path: p.path,
            amount_minor: p.amount.minor,
            currency: p.amount.currency.code().to_string(),
            status,
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
    async fn booked(&self, p: &Arrival, replayed_flag: bool) -> Result<PaymentView> {
        let row = self
            .core
            .store()
            .delivery_payment_by_key(&p.key)
            .await?
            .ok_or(ServiceError::IdempotencyKeyReused)?;
        let mut view = self.payment_view(&row).await?;
        view.replayed = replayed_flag;
        Ok(view)
    }

    /// The operator's suspense account for a currency (opened on first use).
    async fn suspense_account(&self, currency: Currency) -> Result<Id> {
        let outcome = self
            .core
            .commit(
                format!(":delivery:suspense:{}", currency.code()),
                Effects::ledger(Command::OpenAccount {
                    owner: "operator".into(),
                    currency,
                    kind: AccountKind::Operator,
                    flags: AccountFlags::default(),
                    limit_minor: 0,
                    imported_at: None,
                    references: Default::default(),
                }),
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
            .core
            .store()
            .delivery_payment(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: Missing::Payment,
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
        if p.status == PaymentStatus::Refunded {
            return self.payment_view(&p).await;
        }
        let payment = Payment {
            id,
            status: p.status,
            amount: Amount::new(p.amount_minor, Currency::from_code(&p.currency)?),
            holder: p.holder,
            refund_to: p.refund_to,
            reference: p.reference.clone(),
        };
        let (_, effects) = payment.refund()?;
        let mut rows: Vec<Attachment> = refund_payment(id, p.status).into();
        if p.status == PaymentStatus::Matched
            && let Some(sale) = p.sale_id
        {
            rows.extend(refund_sale(sale));
        }
        self.core
            .commit(format!(":refund:{id}"), effects, rows)
            .await
            .map_err(|e| match e {
                ServiceError::Conflict(Conflict::Moved(why)) => {
                    DeliveryError::NotRefundable(why.to_string()).into()
                }
                other => other,
            })?;
        let p = self
            .core
            .store()
            .delivery_payment(id)
            .await?
            .ok_or_else(|| corrupt("payment vanished"))?;
        self.payment_view(&p).await
    }
}
