//! Products (D1): a draft, its entries sealed under the product's content key as they are
//! uploaded (constant memory, over the size limit nothing is kept), put on sale and
//! withdrawn by the product machine's steps.

use super::{
    CONTENT_KEY_AAD, DEFAULT_REGISTRATION, Delivery, EntryView, NewProduct, ProductView,
    check_entry_name, entry_view, product_machine, text,
};
use crate::access::{check_name, corrupt, invalid, namespaced};
use crate::identity::{create_private_dir, getrandom_fill, setup};
use crate::{Principal, Result, ServiceError};
use tally_kernel::crypto::{seal, stream};
use tally_kernel::{Id, Secret};
use tally_proto::delivery::sale::{ProductInput, ProductState};
use tally_proto::delivery::{self as proto, EntryKind, EntryMeta};
use tally_proto::effects::Effects;
use tally_store::Conflict;
use tally_store::delivery::{
    EntryRow, ProductRow, insert_product, set_product_state, upsert_entry,
};

impl Delivery {
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
        let account = self.core.existing_account(req.pay_to).await?;
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
        if let Some(p) = self.core.store().product_by_key(&key).await? {
            let same = p.title == req.title
                && p.price_minor == req.price.minor
                && p.currency == req.price.currency.code()
                && p.pay_to == req.pay_to
                && p.producer == producer
                && p.licence == req.licence
                && p.instructions == req.instructions
                && p.registration_template == template;
            if !same {
                return Err(ServiceError::IdempotencyKeyReused);
            }
            return Ok((self.product_view(&p).await?, true));
        }
        let id = Id::new();
        let mut content_key = Secret::new([0_u8; 32]);
        getrandom_fill(content_key.expose_mut())?;
        let aad = [CONTENT_KEY_AAD, id.to_string().as_bytes()].concat();
        let wrap = seal::seal(self.delivery_key(), &aad, content_key.expose()).map_err(setup)?;
        let now = self.core.now();
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
            state: ProductState::Draft,
            content_key_wrap: wrap,
            client_key: Some(key.clone()),
            created_at: now,
            updated_at: now,
        };
        let outcome = self
            .core
            .commit(
                key.clone(),
                Effects::record(
                    "product_created",
                    serde_json::json!({
                        "product": id, "merchant": by.owner, "producer": producer,
                        "title": req.title, "price": req.price.to_string(),
                    }),
                ),
                vec![insert_product(&row)],
            )
            .await?;
        let row = if outcome.replayed {
            self.core
                .store()
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
        for p in self.core.store().products(1000).await? {
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
        product_machine(&product).check_upload()?;
        let content_key = self.content_key(&product)?;
        let product_entries_before = self.core.store().product_entries(id).await?;
        let dir = self.product_dir(id);
        create_private_dir(&self.core.files().dir.join("products"))?;
        create_private_dir(&dir)?;
        let file_id = Id::new();
        let final_path = dir.join(format!("{file_id}.sealed"));
        let part = dir.join(format!("{file_id}.part"));
        let limit = self.settings().upload_max_bytes;
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
            // One stream chunk: whole sealed chunks pass straight through, uncopied.
            let mut out =
                std::io::BufWriter::with_capacity(stream::CHUNK_SIZE_DEFAULT as usize, file);
            let mut salt = [0_u8; stream::SALT_LEN];
            let mut prefix = [0_u8; stream::NONCE_PREFIX_LEN];
            getrandom_fill(&mut salt)?;
            getrandom_fill(&mut prefix)?;
            let meta = proto::seal_entry(
                u32::from(proto::VERSION),
                content_key.expose(),
                &entry_name,
                kind_tag,
                &mut limited,
                &mut out,
                salt,
                prefix,
            );
            if limited.over {
                return Err(super::DeliveryError::TooLarge { limit }.into());
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
            sealed_blake3: meta.sealed_blake3.clone(),
            plain_len: i64::try_from(meta.plain_len).map_err(corrupt)?,
            plain_sha256: meta
                .plain_sha256
                .clone()
                .ok_or_else(|| corrupt("seal_entry did not report the plaintext's hash"))?,
            file: format!("products/{id}/{file_id}.sealed"),
            created_at: self.core.now(),
        };
        let done = self
            .core
            .commit(
                format!(":product:{id}:entry:{file_id}"),
                Effects::record(
                    "product_entry_added",
                    serde_json::json!({
                        "product": id, "name": name, "kind": kind,
                        "plain_len": meta.plain_len, "plain_sha256": meta.plain_sha256,
                    }),
                ),
                upsert_entry(&row).into(),
            )
            .await;
        if done.is_ok() {
            // A replaced entry's sealed file is no longer named by any row.
            let replaced = product_entries_before
                .iter()
                .find(|e| e.name == name && e.file != row.file);
            if let Some(old) = replaced {
                let _ = std::fs::remove_file(self.core.files().dir.join(&old.file));
            }
        }
        if let Err(e) = done {
            let _ = std::fs::remove_file(&final_path);
            return Err(match e {
                ServiceError::Conflict(Conflict::Moved(why)) => {
                    super::DeliveryError::WrongProductState(why.to_string()).into()
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
        let entries = self.core.store().product_entries(id).await?;
        let product_entries = entries.iter().filter(|e| e.kind == "product").count();
        self.product_step(&p, ProductInput::Publish { product_entries })
            .await
    }

    /// Takes a product off sale; sold packages stay downloadable.
    pub async fn product_withdraw(&self, by: &Principal, id: Id) -> Result<ProductView> {
        let p = self.product_row(id).await?;
        Self::require_merchant_of(by, &p)?;
        self.product_step(&p, ProductInput::Withdraw).await
    }

    async fn product_step(&self, p: &ProductRow, input: ProductInput) -> Result<ProductView> {
        let (next, effects) = product_machine(p).handle(input)?;
        if effects.is_none() {
            return self.product_view(p).await;
        }
        let now = self.core.now();
        self.core
            .commit(
                format!(":product:{}:{}", p.id, next.state),
                effects,
                set_product_state(p.id, p.state, next.state, now).into(),
            )
            .await
            .map_err(|e| match e {
                ServiceError::Conflict(Conflict::Moved(why)) => {
                    super::DeliveryError::WrongProductState(why.to_string()).into()
                }
                other => other,
            })?;
        let p = self.product_row(p.id).await?;
        self.product_view(&p).await
    }

    pub(crate) fn content_key(&self, p: &ProductRow) -> Result<Secret<[u8; 32]>> {
        let aad = [CONTENT_KEY_AAD, p.id.to_string().as_bytes()].concat();
        let key = seal::open(self.delivery_key(), &aad, &p.content_key_wrap)
            .map_err(|_| setup("a product's content key does not open with delivery.key"))?;
        let key: [u8; 32] = key.expose().as_slice().try_into().map_err(corrupt)?;
        Ok(Secret::new(key))
    }
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
