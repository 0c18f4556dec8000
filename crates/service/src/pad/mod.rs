//! Anonymous prepaid pads at this node (issue [8], SPEC P1–P8; `docs/protocols/pads.md`): the
//! operator's counter sale, the twin kept sealed in the database, the tariff, and (in
//! [`frames`]) the frames holders send.
//!
//! Built so far: the counter sale (both modes), the operator's view, the tariff, and frames
//! with `show`, `records`, `noop`, and `post` and `collect` between holders' mailboxes through
//! the relay; requests to providers and accounts are refused as the machine refuses them when
//! the node knows no such thing (burned, no money moved) until their steps land.
//!
//! The twin: chunks of 4 KiB of the pad's bytes (or, for a session-key pad, its 32-byte seed)
//! sealed with XChaCha20-Poly1305 under `HKDF-SHA256(pad.key, salt = pad id,
//! info = "tally/pad-twin/v1")`, associated data `pad id ‖ chunk index`. `DATA/pad.key` is one
//! of the identity files every node of a database shares.

mod accounts;
mod aliases;
mod escrow;
mod frames;
mod providers;
mod recovery;
mod stock;
mod vouchers;

pub use escrow::DISPUTE_GRACE_S;
pub use frames::FrameAnswer;
pub use vouchers::VoucherError;

/// A pad to make: under which key, paid from where (none: blank retail stock), how big, which
/// mode, for which URL.
struct Issue {
    key: String,
    from: Option<Id>,
    /// The PIN account it belongs to from the start (bought from that account).
    account: Option<tally_proto::pad::ids::AccountId>,
    value: Amount,
    size: u64,
    mode: Mode,
    url: String,
    memo: String,
    /// The providers it may pay; empty: any.
    allow: Vec<tally_proto::pad::plain::ProviderName>,
}

use crate::access::{invalid, namespaced, require_admin};
use crate::core::Core;
use crate::exec::retrying;
use crate::{Principal, Result, ServiceError};
use tally_kernel::crypto::kdf::HmacSha256Key;
use tally_kernel::crypto::kdf::hkdf_sha256;
use tally_kernel::crypto::seal;
use tally_kernel::{Amount, Currency, Id, Secret};
use tally_ledger::{AccountFlags, AccountKind, Command, LedgerError};
use tally_proto::effects::Effects;
use tally_proto::pad::file::{Mode, PadBytes, PadFile, SIZE_MIN};
use tally_proto::pad::frame::Material;
use tally_proto::pad::ids::PadId;
use tally_proto::pad::machine::{Pad, Refusal};
use tally_proto::pad::relay::Schedule;
use tally_proto::pad::tariff::Tariff;
use tally_store::pads::{
    PadCurrency, PadRow, insert, insert_chunk, insert_currency, insert_mailbox, set_tariff,
};
use tally_wire::pads::{PadSaleRequest, PadSold, PadTariff, PadView};
use zeroize::Zeroizing;

/// Bytes of a twin chunk: a frame's range opens one to three of them (a 1 KiB request and its
/// reply, about 12 KiB to decipher), where 64 KiB chunks cost 128 KiB a frame.
pub const CHUNK_LEN: u64 = 4 * 1024;
/// Domain of the twin's key.
const TWIN_INFO: &[u8] = b"tally/pad-twin/v1";

/// How pads are sold and relayed here.
#[derive(Debug, Clone)]
pub struct PadSettings {
    /// The largest pad sold, bytes (64 MiB by default).
    pub size_max: u64,
    /// The relay's windows and delays.
    pub relay: Schedule,
    /// Seconds an escrowed request waits for the provider to perform and the holder to
    /// dispute (7 days by default); the ledger's hold lasts a day longer, a backstop.
    pub escrow_s: i64,
    /// Seconds between settlements of the pad clearing accounts by the sweeper (60).
    pub settle_every_s: i64,
}

impl Default for PadSettings {
    fn default() -> Self {
        PadSettings {
            size_max: 64 * 1024 * 1024,
            relay: Schedule::default(),
            escrow_s: 7 * 86_400,
            settle_every_s: 60,
        }
    }
}

/// Why a frame or a pad request was refused. Frames refused before the machine's step change
/// nothing; [`PadServiceError::Refused`] is the answer to an authentic frame that was burned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PadServiceError {
    /// Not a pad frame.
    #[error("not a pad frame: {0}")]
    MalformedFrame(&'static str),
    /// The tag does not verify, or the pad is unknown.
    #[error("the frame is not authentic (or the pad is unknown)")]
    NotAuthentic,
    /// Another frame was taken at this offset.
    #[error("pad bytes at this offset are used; the next free offset is {up_next}")]
    OffsetUsed {
        /// The first unused up byte.
        up_next: u64,
    },
    /// The frame is ahead of the next free offset.
    #[error("the frame is ahead of the next free offset {up_next}: send the frames before it")]
    OffsetAhead {
        /// The first unused up byte.
        up_next: u64,
    },
    /// The frame crosses the bytes the node's replies used.
    #[error("the pad's bytes are used up (up {up_next}, down {down_low}); buy a new pad")]
    BytesExhausted {
        /// The first unused up byte.
        up_next: u64,
        /// The lowest down byte used.
        down_low: u64,
    },
    /// The pad is blank or cancelled.
    #[error("the pad is not active (blank or cancelled)")]
    NotActive,
    /// The frame was authentic and is burned: its bytes are spent, nothing else changed.
    #[error("the frame was refused: {0:?}")]
    Refused(Refusal),
    /// A wrong PIN for a pad account; the account's tries are counted.
    #[error("wrong PIN ({attempts_left} attempts left)")]
    PinWrong {
        /// Tries left before the account locks.
        attempts_left: u32,
    },
    /// Too many wrong PINs: the account is locked for a while.
    #[error("the account is locked after too many wrong PINs; try again in {retry_after_s} s")]
    PinLocked {
        /// Seconds until it unlocks.
        retry_after_s: i64,
    },
}

impl From<tally_proto::pad::machine::PadError> for ServiceError {
    fn from(e: tally_proto::pad::machine::PadError) -> Self {
        use tally_proto::pad::machine::PadError as E;
        ServiceError::Pad(match e {
            E::NotActive => PadServiceError::NotActive,
            E::OffsetUsed { up_next } => PadServiceError::OffsetUsed { up_next },
            E::OffsetAhead { up_next } => PadServiceError::OffsetAhead { up_next },
            E::BytesExhausted { up_next, down_low } => {
                PadServiceError::BytesExhausted { up_next, down_low }
            }
            E::Replayed => return ServiceError::Setup("bug: a replay answered as an error".into()),
            E::WrongState(why) => return invalid("pad", why),
            E::ApiMisuse(why) => return ServiceError::Setup(format!("bug: {why}")),
        })
    }
}

/// Pads at this node.
#[derive(Clone)]
pub struct Pads {
    core: Core,
    key: Secret<Vec<u8>>,
    settings: PadSettings,
    /// Seals mailbox messages at rest: `HKDF(pad.key, info = "tally/pad-mailbox-at-rest/v1")`.
    mailbox_key: Secret<Vec<u8>>,
    /// Draws the relay's delays: `HKDF(pad.key, info = "tally/pad-relay/v1")`.
    relay_key: std::sync::Arc<HmacSha256Key>,
    /// Derives each provider's webhook secret: `HKDF(pad.key, info =
    /// "tally/pad-provider-webhook/v1")`.
    webhook_key: std::sync::Arc<HmacSha256Key>,
    /// When this process last settled (µs): only paces the sweeper; what is paid is decided
    /// in the database.
    settled_at: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

/// The rows that move pad `row` to the machine `after` (its state and machine; cursors are
/// the frames' own), under the pad row's guard.
fn moved(
    row: &PadRow,
    after: &Pad,
    now: tally_kernel::Timestamp,
) -> Result<[tally_store::Attachment; 2]> {
    let after_row = PadRow {
        state: after.state.as_str().into(),
        machine: serde_json::to_string(after).map_err(corrupt)?,
        updated_at: now,
        ..row.clone()
    };
    Ok(tally_store::pads::update(row, &after_row))
}

fn corrupt(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Setup(format!("a stored pad does not decode: {e}"))
}

impl Pads {
    /// Loads `pad.key` (creating it on first start) and checks it against the database.
    pub(crate) async fn load(
        core: Core,
        settings: PadSettings,
        made: &mut crate::identity::Made,
    ) -> Result<Pads> {
        let key =
            crate::identity::node_secret(core.files(), core.store(), "pad.key", "pad_key_id", made)
                .await?;
        let derive = |info: &[u8]| {
            hkdf_sha256(key.expose(), b"", info, 32).map_err(|e| ServiceError::Setup(e.to_string()))
        };
        let mailbox_key = derive(b"tally/pad-mailbox-at-rest/v1")?;
        // The first settlement comes one period after the start.
        let core_now_micros = core.now().as_micros();
        let relay_key =
            std::sync::Arc::new(HmacSha256Key::new(derive(b"tally/pad-relay/v1")?.expose()));
        let webhook_key = std::sync::Arc::new(HmacSha256Key::new(
            derive(b"tally/pad-provider-webhook/v1")?.expose(),
        ));
        Ok(Pads {
            core,
            key,
            settings,
            mailbox_key,
            relay_key,
            webhook_key,
            settled_at: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(core_now_micros)),
        })
    }

    /// Sells a pad at the operator's counter: opens its value account, pays `from` into it,
    /// and keeps the twin. A retry with the same key answers the same pad.
    pub async fn sell(
        &self,
        by: &Principal,
        idempotency_key: &str,
        req: &PadSaleRequest,
    ) -> Result<(PadSold, bool)> {
        require_admin(by)?;
        let key = namespaced(by, idempotency_key)?;
        if let Some(row) = self.core.store().pad_by_issue_key(&key).await? {
            return Ok((self.sold(&row, &req.node_url).await?, true));
        }
        let (currency, mode) = self.check_sale(
            &req.currency,
            req.value_minor,
            req.size,
            req.mode.as_deref(),
            &req.node_url,
        )?;
        self.check_payer(req.from, Amount::new(req.value_minor, currency))
            .await?;
        let mut id = [0u8; 16];
        crate::identity::getrandom_fill(&mut id)?;
        let issue = Issue {
            key,
            from: Some(req.from),
            account: None,
            value: Amount::new(req.value_minor, currency),
            size: req.size,
            mode,
            url: req.node_url.clone(),
            memo: format!("{} sold", PadId(id)),
            allow: allow_list(&req.allow)?,
        };
        self.issue(issue, id, Vec::new()).await
    }

    /// Checks that `from` can pay `value` before anything is opened, so a sale refused for it
    /// leaves no trace (the ledger checks it again when the value moves).
    async fn check_payer(&self, from: Id, value: Amount) -> Result<()> {
        let payer = self.core.existing_account(from).await?;
        if payer.currency != value.currency {
            return Err(ServiceError::Ledger(LedgerError::CurrencyMismatch {
                account: payer.id,
                account_currency: payer.currency,
                currency: value.currency,
            }));
        }
        if let Some(available) = payer.available_minor()
            && available < value.minor
        {
            return Err(ServiceError::Ledger(LedgerError::ExceedsCredits {
                account: payer.id,
                currency: value.currency,
                needed_minor: value.minor,
                available_minor: available,
            }));
        }
        Ok(())
    }

    /// The currency, value, size, mode and URL of a pad to sell, checked.
    fn check_sale(
        &self,
        currency: &str,
        value_minor: i64,
        size: u64,
        mode: Option<&str>,
        url: &str,
    ) -> Result<(Currency, Mode)> {
        let currency = Currency::from_code(currency)?;
        if value_minor <= 0 {
            return Err(invalid(
                "value_minor",
                "a pad is sold with a positive value",
            ));
        }
        Ok((currency, self.check_pad(size, mode, url)?))
    }

    /// Cancels `pad` (read as `row`) in one step under `key`: the machine's cancel moves the
    /// `available` value to `to` (none: blank stock, nothing to move), and the twin is deleted.
    async fn cancel_pad(
        &self,
        key: String,
        row: &PadRow,
        pad: Pad,
        to: Option<Id>,
        available: i64,
        extra: Vec<tally_store::Attachment>,
    ) -> Result<()> {
        let (after, effects) = pad.handle(
            self.core.now(),
            tally_proto::pad::machine::Input::Cancel {
                from: row.value_account,
                to,
                available: Amount::new(available, row.currency),
            },
        )?;
        let mut rows = moved(row, &after, self.core.now())?.to_vec();
        rows.push(tally_store::pads::delete_chunks(&row.id));
        rows.extend(extra);
        self.core.commit(key, effects, rows).await.map(drop)
    }

    /// The size, mode and URL of a pad to make, checked.
    fn check_pad(&self, size: u64, mode: Option<&str>, url: &str) -> Result<Mode> {
        if !(SIZE_MIN..=self.settings.size_max).contains(&size) {
            return Err(invalid(
                "size",
                format!("{SIZE_MIN} to {} bytes", self.settings.size_max),
            ));
        }
        let mode = match mode {
            None | Some("one_time") => Mode::OneTime,
            Some("session_key") => Mode::SessionKey,
            Some(_) => return Err(invalid("mode", "one_time or session_key")),
        };
        check_url(url)?;
        Ok(mode)
    }

    /// Makes pad `id` and pays its value from `i.from` into its new value account, with
    /// `extra` rows, in one step under `i.key`; the key again answers the same pad (its file
    /// rebuilt from the twin).
    async fn issue(
        &self,
        i: Issue,
        id: [u8; 16],
        extra: Vec<tally_store::Attachment>,
    ) -> Result<(PadSold, bool)> {
        if let Some(row) = self.core.store().pad_by_issue_key(&i.key).await? {
            return Ok((self.sold(&row, &i.url).await?, true));
        }
        let currency = i.value.currency;
        self.currency(currency).await?;
        let account = self
            .open_bounded(
                format!("{}:value-account", i.key),
                "pads",
                currency,
                AccountKind::Customer,
            )
            .await?;
        let pad_id = PadId(id);
        let bytes = match i.mode {
            Mode::OneTime => {
                let mut b = Zeroizing::new(vec![0u8; i.size as usize]);
                crate::identity::getrandom_fill(&mut b)?;
                PadBytes::OneTime(b)
            }
            Mode::SessionKey => {
                let mut seed = Zeroizing::new([0u8; 32]);
                crate::identity::getrandom_fill(&mut *seed)?;
                PadBytes::SessionKey { seed, size: i.size }
            }
        };
        let mut pad = Pad::new(pad_id, i.size, currency, i.from.is_none())?;
        pad.account = i.account;
        pad.allow = i.allow;
        let now = self.core.now();
        let row = PadRow {
            id,
            state: pad.state.as_str().into(),
            up_next: pad.up_next,
            down_low: pad.down_low,
            mode: i.mode.as_str().into(),
            currency,
            value_account: account.id,
            face_minor: i.value.minor,
            issue_key: i.key.clone(),
            machine: serde_json::to_string(&pad).map_err(corrupt)?,
            created_at: now,
            updated_at: now,
        };
        // Its mailbox, by its address and by its own key (the seed's pad-derived key pair).
        let mailbox = bytes.mailbox();
        let key = tally_proto::pad::keys::pad_key(&bytes)
            .map_err(|e| ServiceError::Setup(e.to_string()))?
            .verifying_key();
        let mut rows = vec![
            insert(&row),
            insert_mailbox(&mailbox.0, &id),
            tally_store::pads::claim_alias(
                &tally_proto::pad::keys::key_address(&key).0,
                &key.to_bytes(),
                &mailbox.0,
                0,
            ),
        ];
        let twin: &[u8] = match &bytes {
            PadBytes::OneTime(b) => b,
            PadBytes::SessionKey { seed, .. } => &seed[..],
        };
        let twin_key = self.twin_key(&pad_id)?;
        for (n, chunk) in twin.chunks(CHUNK_LEN as usize).enumerate() {
            let sealed = seal::seal(&twin_key, &chunk_aad(&pad_id, n as u64), chunk)
                .map_err(|e| ServiceError::Setup(e.to_string()))?;
            rows.push(insert_chunk(&id, n as u64, sealed));
        }
        rows.extend(extra);
        let effects = match i.from {
            Some(from) => Effects::ledger(Command::Transfer {
                debit_account: from,
                credit_account: account.id,
                amount_minor: i.value.minor,
                currency,
                timeout_s: None,
                memo: i.memo,
            }),
            None => Effects::record(
                "pad_stocked",
                serde_json::json!({"pad": pad_id, "memo": i.memo}),
            ),
        };
        let outcome = self.core.commit(i.key.clone(), effects, rows).await?;
        if outcome.replayed {
            let row = self
                .core
                .store()
                .pad_by_issue_key(&i.key)
                .await?
                .ok_or(ServiceError::IdempotencyKeyReused)?;
            return Ok((self.sold(&row, &i.url).await?, true));
        }
        let file = PadFile {
            pad: pad_id,
            face: i.value,
            node: tally_kernel::crypto::kdf::sha256(
                &self.core.node_key().verifying_key().to_bytes(),
            ),
            url: i.url,
            bytes,
        };
        Ok((sold_view(&file)?, false))
    }

    /// A sale answered again: the file rebuilt from the twin.
    async fn sold(&self, row: &PadRow, url: &str) -> Result<PadSold> {
        check_url(url)?;
        let pad = self.machine(row)?;
        if pad.up_next > tally_proto::pad::file::TRAFFIC_START || pad.down_low < pad.size {
            // Its used bytes are destroyed at the node: the file is not given out again.
            return Err(invalid(
                "idempotency_key",
                "the pad this request made is in use; its file is not given out again",
            ));
        }
        let bytes = self.bytes(row, &pad).await?;
        let file = PadFile {
            pad: pad.id,
            face: Amount::new(row.face_minor, row.currency),
            node: tally_kernel::crypto::kdf::sha256(
                &self.core.node_key().verifying_key().to_bytes(),
            ),
            url: url.to_string(),
            bytes,
        };
        sold_view(&file)
    }

    /// A pad, for the operator.
    pub async fn view(&self, by: &Principal, pad: &str) -> Result<PadView> {
        require_admin(by)?;
        let id: PadId = pad.parse().map_err(|e| invalid("pad", format!("{e}")))?;
        let row = self
            .core
            .store()
            .pad(&id.0)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: crate::Missing::Pad,
                id: pad.to_string(),
            })?;
        let machine = self.machine(&row)?;
        Ok(PadView {
            pad: id.to_string(),
            state: row.state.clone(),
            mode: row.mode.clone(),
            size: machine.size,
            up_next: row.up_next,
            down_low: row.down_low,
            available_minor: self.available(row.value_account).await?,
            face_minor: row.face_minor,
            currency: row.currency.code().into(),
            records: machine.records.count,
            record_hash: hex::encode(machine.records.hash),
            value_account: row.value_account,
        })
    }

    /// Sets what pads pay in `currency` (opening its clearing account if need be).
    pub async fn set_tariff(
        &self,
        by: &Principal,
        currency: &str,
        t: &PadTariff,
    ) -> Result<PadTariff> {
        require_admin(by)?;
        let currency = Currency::from_code(currency)?;
        let tariff = Tariff {
            currency,
            byte_price_minor_per_kib: t.byte_price_minor_per_kib,
            post_price_minor: t.post_price_minor,
            commission_bps: t.commission_bps,
        };
        tariff
            .check()
            .map_err(|e| invalid("tariff", e.0.to_string()))?;
        let mut c = self.currency(currency).await?;
        c.byte_price_minor_per_kib = t.byte_price_minor_per_kib;
        c.post_price_minor = t.post_price_minor;
        c.commission_bps = i64::from(t.commission_bps);
        self.core
            .commit(
                format!(":pad_tariff:{}", Id::new()),
                Effects::record(
                    "pad_tariff",
                    serde_json::json!({"currency": currency.code(), "tariff": t}),
                ),
                vec![set_tariff(&c)],
            )
            .await?;
        Ok(*t)
    }

    /// A currency's clearing account and tariff, opened on first use (free until the
    /// operator sets a tariff). Two nodes opening it at once share one account: the opening's
    /// key names the currency.
    async fn currency(&self, currency: Currency) -> Result<PadCurrency> {
        if let Some(c) = self.core.store().pad_currency(currency).await? {
            return Ok(c);
        }
        retrying(|| async {
            let account = self
                .open_bounded(
                    format!(":pad_clearing:{}", currency.code()),
                    "operator",
                    currency,
                    AccountKind::Operator,
                )
                .await?;
            let c = PadCurrency {
                currency,
                clearing_account: account.id,
                byte_price_minor_per_kib: 0,
                post_price_minor: 0,
                commission_bps: 0,
            };
            self.core
                .commit(
                    format!(":pad_currency:{}", currency.code()),
                    Effects::record(
                        "pad_currency",
                        serde_json::json!({"currency": currency.code(), "clearing": account.id}),
                    ),
                    vec![insert_currency(&c)],
                )
                .await?;
            self.core
                .store()
                .pad_currency(currency)
                .await?
                .ok_or_else(|| ServiceError::Setup("bug: the pad currency was not kept".into()))
        })
        .await
    }

    /// The tariff of pads in `currency` now.
    async fn tariff(&self, currency: Currency) -> Result<Tariff> {
        tariff_of(&self.currency(currency).await?)
    }

    /// Opens an account whose debits may not exceed its credits, under `key` (the same key
    /// again answers the same account).
    async fn open_bounded(
        &self,
        key: String,
        owner: &str,
        currency: Currency,
        kind: AccountKind,
    ) -> Result<tally_ledger::Account> {
        let command = Command::OpenAccount {
            owner: owner.into(),
            currency,
            kind,
            flags: AccountFlags {
                debits_must_not_exceed_credits: true,
                credits_must_not_exceed_debits: false,
                ..Default::default()
            },
            limit_minor: 0,
            imported_at: None,
            references: Default::default(),
        };
        let outcome = self
            .core
            .commit(key, Effects::ledger(command), Vec::new())
            .await?;
        outcome
            .account()
            .cloned()
            .ok_or(ServiceError::IdempotencyKeyReused)
    }

    fn machine(&self, row: &PadRow) -> Result<Pad> {
        let pad: Pad = serde_json::from_str(&row.machine).map_err(corrupt)?;
        if pad.id.0 != row.id || pad.up_next != row.up_next || pad.down_low != row.down_low {
            return Err(corrupt("the machine differs from its row"));
        }
        Ok(pad)
    }

    async fn available(&self, account: Id) -> Result<i64> {
        let a = self
            .core
            .store()
            .account(account)
            .await?
            .ok_or_else(|| ServiceError::Setup("a pad's value account is missing".into()))?;
        Ok(a.available_minor().unwrap_or(0))
    }

    fn twin_key(&self, pad: &PadId) -> Result<[u8; 32]> {
        let okm = hkdf_sha256(self.key.expose(), pad.as_bytes(), TWIN_INFO, 32)
            .map_err(|e| ServiceError::Setup(e.to_string()))?;
        let mut k = [0u8; 32];
        k.copy_from_slice(okm.expose());
        Ok(k)
    }

    /// The pad's bytes from its twin (all of them: for a sale answered again).
    async fn bytes(&self, row: &PadRow, pad: &Pad) -> Result<PadBytes> {
        let last = if row.mode == Mode::SessionKey.as_str() {
            0
        } else {
            (pad.size - 1) / CHUNK_LEN
        };
        let twin = self.twin(row, 0, last).await?;
        if row.mode == Mode::SessionKey.as_str() {
            let seed: [u8; 32] = twin[..]
                .try_into()
                .map_err(|_| corrupt("a session-key twin is not 32 bytes"))?;
            return Ok(PadBytes::SessionKey {
                seed: Zeroizing::new(seed),
                size: pad.size,
            });
        }
        if twin.len() as u64 != pad.size {
            return Err(corrupt("the twin is not the pad's size"));
        }
        Ok(PadBytes::OneTime(twin))
    }

    /// Chunks `first ..= last` of the twin, opened and joined.
    async fn twin(&self, row: &PadRow, first: u64, last: u64) -> Result<Material> {
        let pad = PadId(row.id);
        let key = Zeroizing::new(self.twin_key(&pad)?);
        let chunks = self.core.store().pad_chunks(&row.id, first, last).await?;
        if chunks.len() as u64 != last - first + 1 {
            return Err(ServiceError::Pad(PadServiceError::NotActive));
        }
        let mut out = Zeroizing::new(Vec::with_capacity(chunks.len() * CHUNK_LEN as usize));
        for (idx, sealed) in chunks {
            let plain = seal::open(&key, &chunk_aad(&pad, idx), &sealed).map_err(corrupt)?;
            out.extend_from_slice(plain.expose());
        }
        Ok(out)
    }

    /// The pad bytes of `range` from the twin.
    async fn material(
        &self,
        row: &PadRow,
        size: u64,
        range: std::ops::Range<u64>,
    ) -> Result<Material> {
        if range.end > size || range.start >= range.end {
            return Err(ServiceError::Pad(PadServiceError::NotAuthentic));
        }
        if row.mode == Mode::SessionKey.as_str() {
            let seed = self.twin(row, 0, 0).await?;
            let seed: [u8; 32] = seed[..]
                .try_into()
                .map_err(|_| corrupt("a session-key twin is not 32 bytes"))?;
            let bytes = PadBytes::SessionKey {
                seed: Zeroizing::new(seed),
                size,
            };
            return bytes.read(range).map_err(corrupt);
        }
        let (first, last) = (range.start / CHUNK_LEN, (range.end - 1) / CHUNK_LEN);
        let joined = self.twin(row, first, last).await?;
        let from = (range.start - first * CHUNK_LEN) as usize;
        let to = from + (range.end - range.start) as usize;
        Ok(Zeroizing::new(joined[from..to].to_vec()))
    }
}

/// A currency row's tariff.
fn tariff_of(c: &PadCurrency) -> Result<Tariff> {
    Ok(Tariff {
        currency: c.currency,
        byte_price_minor_per_kib: c.byte_price_minor_per_kib,
        post_price_minor: c.post_price_minor,
        commission_bps: u32::try_from(c.commission_bps)
            .map_err(|_| corrupt("a commission out of range"))?,
    })
}

/// An allow-list of provider names, checked and sorted.
fn allow_list(names: &[String]) -> Result<Vec<tally_proto::pad::plain::ProviderName>> {
    if names.len() > tally_proto::pad::machine::ALLOW_MAX {
        return Err(invalid("allow", "at most 32 providers"));
    }
    let mut allow = names
        .iter()
        .map(|n| tally_proto::pad::plain::ProviderName::new(n).map_err(|e| invalid("allow", e.0)))
        .collect::<Result<Vec<_>>>()?;
    allow.sort();
    allow.dedup();
    Ok(allow)
}

fn chunk_aad(pad: &PadId, idx: u64) -> Vec<u8> {
    let mut aad = pad.as_bytes().to_vec();
    aad.extend_from_slice(&idx.to_be_bytes());
    aad
}

fn check_url(url: &str) -> Result<()> {
    let ok = (1..=255).contains(&url.len())
        && url.is_ascii()
        && (url.starts_with("http://") || url.starts_with("https://"));
    if !ok {
        return Err(invalid(
            "node_url",
            "an http(s) URL of at most 255 ASCII bytes",
        ));
    }
    Ok(())
}

fn sold_view(file: &PadFile) -> Result<PadSold> {
    use base64::Engine as _;
    let encoded = file
        .encode()
        .map_err(|e| ServiceError::Setup(e.to_string()))?;
    Ok(PadSold {
        pad: file.pad.to_string(),
        mailbox: file.bytes.mailbox().to_string(),
        mode: file.bytes.mode().as_str().into(),
        size: file.bytes.size(),
        value_minor: file.face.minor,
        currency: file.face.currency.code().into(),
        file: base64::engine::general_purpose::STANDARD.encode(&encoded[..]),
    })
}
