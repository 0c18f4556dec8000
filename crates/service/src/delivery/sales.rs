//! Sales (D1–D5, D8–D11): the purchase (reference code, registration file, signed header,
//! stored before anything is served), the package served from its pieces, the buyer's
//! acknowledgement, the released key, complaints, overdue alerts and the producer's report.
//! Every step of a sale is a step of its machine, committed under a guard on its state.

use super::{
    ACK_DOMAIN, Acknowledge, Arrival, Complaint, ComplaintOutcome, Delivery, DeliveryError,
    NewSale, PackageParts, REGISTRATION_DOMAIN, REGISTRATION_NAME, ReleasedKey, ReportRow,
    SaleView, Segment, entry_meta, fill, fingerprint, parse_reference, product_machine,
    sale_version,
};
use crate::Missing;
use crate::access::{check_address, check_name, corrupt, invalid, namespaced, text_field};
use crate::core::{Gate, Outflow};
use crate::exec::retrying;
use crate::identity::getrandom_fill;
use crate::{Principal, Result, ServiceError};
use tally_kernel::crypto::canonical::canonical_json;
use tally_kernel::crypto::{VerifyingKey, seal, stream};
use tally_kernel::{Amount, Currency, Id, Secret};
use tally_proto::delivery::sale::{PaymentPath, PaymentStatus, SaleInput, SaleState};
use tally_proto::delivery::{self as proto, EntryKind, Header, Instruction, ReferenceCode};
use tally_proto::effects::{Effects, Outgoing};
use tally_store::Conflict;
use tally_store::delivery::{
    ProductRow, SaleRow, SalesFilter, close_sale, insert_sale, mark_delivered, mark_overdue,
};

impl Delivery {
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
        let name = req.name.clone().unwrap_or_else(|| by.owner.clone());
        if let Some(s) = self.core.store().sale_by_key(&key).await? {
            let same = s.product_id == req.product
                && s.channel == req.channel
                && s.address == req.address
                && s.name == name;
            if !same {
                return Err(ServiceError::IdempotencyKeyReused);
            }
            return Ok((self.sale_view(&s).await?, true));
        }
        check_address(&req.channel, &req.address)?;
        check_name("name", &name)?;
        let product = self.product_row(req.product).await?;
        product_machine(&product).check_sale()?;
        let entries = self.core.store().product_entries(product.id).await?;
        let now = self.core.now();
        let sale_id = Id::new();
        let mut nonce = [0_u8; 16];
        getrandom_fill(&mut nonce)?;
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
        let authenticity = self.core.node_key().sign(REGISTRATION_DOMAIN, &signed);
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
            self.core.node_key().verifying_key().to_hex()
        ));
        let mut salt = [0_u8; stream::SALT_LEN];
        let mut prefix = [0_u8; stream::NONCE_PREFIX_LEN];
        getrandom_fill(&mut salt)?;
        getrandom_fill(&mut prefix)?;
        let mut registration = Vec::new();
        let v = sale_version(&product, &entries)?;
        let registration_meta = proto::seal_entry(
            v,
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
            metas.push(entry_meta(e, v)?);
        }
        metas.push(registration_meta.for_version(v));
        for e in entries.iter().filter(|e| e.kind != "product") {
            metas.push(entry_meta(e, v)?);
        }
        let mut wrap_nonce = [0_u8; seal::NONCE_LEN];
        getrandom_fill(&mut wrap_nonce)?;
        let pay_to = format!(
            "account {} ({}) on this node, or your bank quoting the reference",
            product.pay_to, product.merchant
        );
        let header = Header {
            v,
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
            node_key: self.core.node_key().verifying_key().to_hex(),
        };
        let header_bytes = proto::header_bytes(&header).map_err(corrupt)?;
        let trailer = proto::trailer(&header_bytes, self.core.node_key());
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
            state: SaleState::Open,
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
            wake_at: None,
        };
        // The overdue alert (D9) and the expiry are due the node's periods after the sale.
        let settings = self.settings();
        let row = SaleRow {
            wake_at: Some(now.plus_seconds(settings.overdue_after_s.min(settings.expire_after_s))),
            ..row
        };
        let outcome = self
            .core
            .commit(
                key.clone(),
                Effects::record(
                    "sale_opened",
                    serde_json::json!({
                        "sale": sale_id, "product": product.id, "buyer": by.owner,
                        "reference": reference.as_str(), "price": price.to_string(),
                        "key_fingerprint": row.key_fingerprint,
                    }),
                ),
                insert_sale(&row, self.settings().open_orders_max).into(),
            )
            .await
            .map_err(|e| match e {
                ServiceError::Conflict(Conflict::Limit(why)) => DeliveryError::CreditRefused(
                    format!("{why} (at most {} unpaid)", self.settings().open_orders_max),
                )
                .into(),
                other => other,
            })?;
        if outcome.replayed {
            let s = self
                .core
                .store()
                .sale_by_key(&key)
                .await?
                .ok_or(ServiceError::IdempotencyKeyReused)?;
            return Ok((self.sale_view(&s).await?, true));
        }
        Ok((self.sale_view(&row).await?, false))
    }

    pub(crate) async fn sale_row(&self, id: Id) -> Result<SaleRow> {
        self.core
            .store()
            .sale(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: Missing::Sale,
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
                what: Missing::Sale,
                id: s.id.to_string(),
            })
        }
    }

    fn require_buyer(by: &Principal, s: &SaleRow) -> Result<()> {
        if by.is_admin() || by.owner == s.buyer {
            Ok(())
        } else {
            Err(ServiceError::NotFound {
                what: Missing::Sale,
                id: s.id.to_string(),
            })
        }
    }

    async fn sale_view(&self, s: &SaleRow) -> Result<SaleView> {
        let p = self.product_row(s.product_id).await?;
        let payments = self.core.store().payments_of_sale(s.id).await?;
        let mut shown = Vec::with_capacity(payments.len());
        for payment in &payments {
            shown.push(self.payment_view(payment).await?);
        }
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
            state: s.state,
            package_len: s.package_len,
            package_sha256: s.package_digest.clone(),
            download: format!("/v1/sales/{}/package", s.id),
            created_at: s.created_at,
            delivered_at: s.delivered_at,
            paid_at: s.paid_at,
            released_at: s.released_at,
            overdue_at: s.overdue_at,
            payments: shown,
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
        let s = self.sale_of(&code).await?;
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
        let entries = self.core.store().product_entries(s.product_id).await?;
        let mut segments = vec![Segment::Bytes(s.header.clone())];
        for meta in &header.entries {
            if meta.kind == EntryKind::Registration {
                segments.push(Segment::Bytes(s.registration.clone()));
                continue;
            }
            let e = entries
                .iter()
                .find(|e| {
                    e.name == meta.name
                        && match (&meta.sealed_sha256, &meta.sealed_blake3) {
                            (Some(sha256), _) => Some(sha256) == e.sealed_sha256.as_ref(),
                            (None, blake3) => blake3.is_some() && *blake3 == e.sealed_blake3,
                        }
                })
                .ok_or_else(|| corrupt(format!("entry {} of sale {id} is gone", meta.name)))?;
            let path = self.core.files().dir.join(&e.file);
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
    /// Above the buyer's or the merchant's threshold, `gate` asks for confirmation of the debit
    /// first (the acknowledgement itself is kept; repeat it once the code is verified).
    /// With an `idempotency_key`, the debit is that request's (after a confirmation that
    /// failed, acknowledge again with a new key); without, the sale's one debit.
    pub async fn acknowledge(
        &self,
        by: &Principal,
        id: Id,
        req: Acknowledge,
        gate: &impl Gate,
        idempotency_key: Option<&str>,
    ) -> Result<SaleView> {
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
            let product = self.product_row(s.product_id).await?;
            let now = self.core.now();
            let (_, effects) = self.machine(&s, &product)?.handle(
                now,
                SaleInput::Acknowledged {
                    package_sha256: s.package_digest.clone(),
                    signed_by: signer,
                },
            )?;
            self.core
                .commit(
                    format!(":sale:{id}:delivered"),
                    effects,
                    vec![mark_delivered(id, now)],
                )
                .await?;
        }
        if let Some(account) = req.debit_account {
            self.core
                .require_owner(by, account, "you can only pay from your own accounts")
                .await?;
            let price = Amount::new(s.price_minor, Currency::from_code(&s.currency)?);
            let s = self.sale_row(id).await?;
            if s.state == SaleState::Open {
                let key = match idempotency_key {
                    Some(k) => format!("{}:debit:{id}", namespaced(by, k)?),
                    None => format!(":sale:{id}:debit"),
                };
                let product = self.product_row(s.product_id).await?;
                let confirmation = gate
                    .gate(
                        by,
                        &key,
                        Outflow {
                            operation: "auto_debit",
                            payer_account: account,
                            payee_account: product.pay_to,
                            amount: price,
                            description: format!(
                                "Payment of {} for {} (acknowledged package)",
                                s.reference, product.title
                            ),
                        },
                    )
                    .await?;
                self.take_payment(Arrival {
                    confirmation,
                    key,
                    path: PaymentPath::Debit,
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

    /// The released key of a sale (its buyer or the operator).
    pub async fn sale_key(&self, by: &Principal, id: Id) -> Result<ReleasedKey> {
        let s = self.sale_row(id).await?;
        Self::require_buyer(by, &s)?;
        if s.state != SaleState::Released {
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
        let s = self.sale_of(&code).await?;
        Self::require_buyer(by, &s)?;
        let product = self.product_row(s.product_id).await?;
        let now = self.core.now();
        let mut copy_matches = None;
        let (effects, action) = match req.kind.as_str() {
            "key_lost" => {
                let (_, effects) = self.machine(&s, &product)?.handle(
                    now,
                    SaleInput::KeyLost {
                        nth: now.as_micros(),
                    },
                )?;
                let action = format!(
                    "the unlock key was sent again to {} {}",
                    s.channel, s.address
                );
                (effects, action)
            }
            "package_broken" | "product_deleted" => {
                // The package is rebuilt from the stored pieces: check they are all there.
                self.package(by, s.id).await?;
                let action = format!(
                    "download the package again from /v1/sales/{}/package (digest {}){}",
                    s.id,
                    s.package_digest,
                    if s.state == SaleState::Released {
                        "; your key still opens it"
                    } else {
                        ""
                    }
                );
                (
                    Effects::record("sale_complaint", serde_json::json!({})),
                    action,
                )
            }
            "refund" => {
                let reason = req.reason.clone().unwrap_or_default();
                text_field("reason", &reason, 2_000)?;
                let to = self.merchant_or_operator(&product.merchant).await?;
                let mut effects = Effects::record("sale_complaint", serde_json::json!({}));
                let action = match to {
                    Some((channel, address)) => {
                        effects = effects.send(Outgoing {
                            dedup_key: format!(":sale:{}:refund-claim", s.id),
                            channel: channel.clone(),
                            address,
                            subject: format!(
                                "Refund claim: {} bought by {}",
                                product.title, s.buyer
                            ),
                            body: format!(
                                "{} asks for a refund of sale {} ({}, reference {}):\n{reason}\n\
                                 Refund a payment with `tally payment refund PAYMENT_ID`.",
                                s.buyer, s.id, product.title, s.reference
                            ),
                            secret: None,
                            data: serde_json::json!({ "sale": s.id, "kind": "refund" }),
                        });
                        format!("the refund claim was sent to the merchant ({channel})")
                    }
                    None => "the refund claim is recorded; the merchant and the operator have \
                             no verified address yet, the operator sees it in the journal"
                        .to_string(),
                };
                (effects, action)
            }
            "check_copy" => {
                let theirs = req.package_sha256.clone().ok_or_else(|| {
                    invalid(
                        "package_sha256",
                        "the digest of your copy, hex (64 characters)",
                    )
                })?;
                let matches = hex::decode(theirs.trim())
                    .ok()
                    .zip(hex::decode(&s.package_digest).ok())
                    .is_some_and(|(a, b)| Secret::new(a).ct_eq(&b));
                copy_matches = Some(matches);
                let action = if matches {
                    "your copy is the package the node signed for this sale".to_string()
                } else {
                    format!(
                        "your copy is NOT the package the node signed for this sale; download \
                         it again from /v1/sales/{}/package",
                        s.id
                    )
                };
                (
                    Effects::record("sale_complaint", serde_json::json!({})),
                    action,
                )
            }
            _ => {
                return Err(invalid(
                    "kind",
                    "key_lost, package_broken, product_deleted, refund or check_copy",
                ));
            }
        };
        let effects = effects.renamed(
            "sale_complaint",
            serde_json::json!({ "sale": s.id, "kind": req.kind, "action": action }),
        );
        let committed = self
            .core
            .commit(
                // Each complaint is its own record (two in one microsecond are two); a refund
                // claim is one per sale (its repeat is answered, not sent again).
                if req.kind == "refund" {
                    format!(":complaint:{}:refund", s.id)
                } else {
                    format!(":complaint:{}:{}:{}", s.id, req.kind, Id::new())
                },
                effects,
                Vec::new(),
            )
            .await;
        let action = match committed {
            Ok(o) if o.replayed && req.kind == "refund" => {
                "a refund claim was already sent for this sale".to_string()
            }
            Ok(_) => action,
            Err(ServiceError::Ledger(tally_ledger::LedgerError::IdempotencyConflict))
                if req.kind == "refund" =>
            {
                "a refund claim was already sent for this sale".to_string()
            }
            Err(e) => return Err(e),
        };
        Ok(ComplaintOutcome {
            sale: s.id,
            kind: req.kind,
            action,
            download: format!("/v1/sales/{}/package", s.id),
            matches: copy_matches,
        })
    }

    /// The producer's sales report (D10). The operator sees every sale; anyone else the
    /// sales of products they produce or sell.
    pub async fn sales_report(
        &self,
        by: &Principal,
        filter: SalesFilter,
    ) -> Result<Vec<ReportRow>> {
        self.report_rows(&filter, 100_000, |p| {
            by.is_admin() || p.producer == by.owner || p.merchant == by.owner
        })
        .await
    }

    /// The caller's own purchases, newest first (at most `limit`), as report lines.
    pub async fn purchases(&self, by: &Principal, limit: i64) -> Result<Vec<ReportRow>> {
        let filter = SalesFilter {
            buyer: Some(by.owner.clone()),
            newest_first: true,
            ..SalesFilter::default()
        };
        self.report_rows(&filter, limit.clamp(1, 1000), |_| true)
            .await
    }

    async fn report_rows(
        &self,
        filter: &SalesFilter,
        limit: i64,
        visible: impl Fn(&ProductRow) -> bool,
    ) -> Result<Vec<ReportRow>> {
        let rows = self.core.store().sales_report(filter, limit).await?;
        let mut out = Vec::new();
        for (s, p) in rows {
            if !visible(&p) {
                continue;
            }
            let currency = Currency::from_code(&s.currency)?;
            let payments = self.core.store().payments_of_sale(s.id).await?;
            let paid: i64 = payments
                .iter()
                .filter(|x| x.status == PaymentStatus::Matched)
                .map(|x| x.amount_minor)
                .sum();
            let mismatched = payments
                .iter()
                .filter(|x| x.status != PaymentStatus::Matched)
                .count();
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

    /// The buyer (or the operator) cancels an unpaid sale: its key is never released, the
    /// buyer's credit slot is free, and a payment quoting its reference later waits in
    /// suspense for a refund. Cancelling a cancelled sale answers it as it is.
    pub async fn cancel(&self, by: &Principal, id: Id) -> Result<SaleView> {
        let s = self.sale_row(id).await?;
        Self::require_buyer(by, &s)?;
        if s.state == SaleState::Cancelled {
            return self.sale_view(&s).await;
        }
        retrying(|| async {
            let s = self.sale_row(id).await?;
            let product = self.product_row(s.product_id).await?;
            let (next, effects) = self
                .machine(&s, &product)?
                .handle(self.core.now(), SaleInput::Cancel)?;
            self.core
                .commit(
                    format!(":sale:{id}:cancelled"),
                    effects,
                    close_sale(id, next.state).into(),
                )
                .await?;
            Ok(())
        })
        .await?;
        let s = self.sale_row(id).await?;
        self.sale_view(&s).await
    }

    /// Where a merchant is told about its sales: its first verified address, else the
    /// operator's (so an alert is never silently dropped), else nowhere.
    async fn merchant_or_operator(&self, merchant: &str) -> Result<Option<(String, String)>> {
        for who in [merchant, "operator"] {
            let found = self
                .core
                .store()
                .addresses_of(who)
                .await?
                .into_iter()
                .find(|a| a.verified_at.is_some())
                .map(|a| (a.channel, a.address));
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Feeds every sale whose machine is due its timeout: the overdue alert (D9) once — a
    /// reminder to the buyer, an alert to the merchant's first verified address — and the
    /// expiry of a sale still unpaid after the expiry period. Each happens once (decided in
    /// the database). Returns how many steps were taken.
    pub async fn sweep_timeouts(&self, limit: i64) -> Result<usize> {
        let now = self.core.now();
        let mut sent = 0;
        for s in self.core.store().due_sales(now, limit).await? {
            let product = self.product_row(s.product_id).await?;
            let machine = self.machine(&s, &product)?;
            let alert_due = machine.alert_at.is_some_and(|t| t <= now);
            if !machine.expiry_due(now) && !alert_due {
                // Woken early (the periods changed since the sale was made, or another node
                // runs other settings): sleep until what is due now.
                self.core
                    .store()
                    .set_sale_wake(s.id, machine.poll_timeout())
                    .await?;
                continue;
            }
            let done = if machine.expiry_due(now) {
                let (next, effects) = machine.handle(now, SaleInput::Expire)?;
                self.core
                    .commit(
                        format!(":sale:{}:expired", s.id),
                        effects,
                        close_sale(s.id, next.state).into(),
                    )
                    .await
            } else {
                let merchant_address = self.merchant_or_operator(&product.merchant).await?;
                if merchant_address.is_none() {
                    tracing::warn!(
                        sale = %s.id,
                        merchant = %product.merchant,
                        "overdue sale: neither the merchant nor the operator has a verified \
                         address; the alert is only in the journal"
                    );
                }
                let (next, effects) =
                    machine.handle(now, SaleInput::Overdue { merchant_address })?;
                self.core
                    .commit(
                        format!(":sale:{}:overdue", s.id),
                        effects,
                        mark_overdue(s.id, now, next.poll_timeout()).into(),
                    )
                    .await
            };
            match done {
                Ok(o) if !o.replayed => sent += 1,
                // Paid, alerted or closed by another request meanwhile.
                Ok(_) | Err(ServiceError::Conflict(Conflict::Moved(_))) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }
}
