//! The node: its data directory, keys, store, and the operations behind the API.
//!
//! First start (`Node::open` on an empty `--data` directory) creates the directory (mode
//! 0700), the node's Ed25519 key (`node.key`), the node CA (`ca.pem`, `ca.key`) and, when the
//! database has no API key yet, an admin API key written once to `admin.key` (mode 0600). Later
//! starts load them. With PostgreSQL, several nodes may share one database; each has its own
//! data directory and key, and only the first creates the admin key.

use crate::{Principal, Result, Role, ServiceError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tally_kernel::crypto::kdf::sha256;
use tally_kernel::crypto::{CertificateAuthority, SigningKey};
use tally_kernel::{Amount, Currency, Id, Rate, Secret, Timestamp};
use tally_ledger::{Account, AccountFlags, AccountKind, Command, Request, Transfer};
use tally_store::keys::ApiKeyRecord;
use tally_store::outbox::{NewMessage, StoredMessage};
use tally_store::{Checkpointer, Outcome, Store, WriteOptions};

/// Longest client idempotency key, in bytes (the ledger key adds the owner's namespace).
pub const CLIENT_KEY_LEN_MAX: usize = 128;

/// How a node starts.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Data directory (keys, the SQLite database by default).
    pub data_dir: PathBuf,
    /// `postgres://…` to use PostgreSQL; `None` for `DATA/tally.db`.
    pub database_url: Option<String>,
    /// Development mode: the dev inbox is readable over the API.
    pub dev: bool,
    /// Sign a journal checkpoint every this many entries.
    pub checkpoint_every: i64,
    /// Most ledger commands per write transaction.
    pub batch_max: usize,
    /// Out-of-band authentication settings.
    pub oob: crate::oob::OobSettings,
    /// Locked delivery settings.
    pub delivery: crate::delivery::DeliverySettings,
    /// Where the node reads the time (tests move it by hand); the wall clock by default.
    pub clock: NodeClock,
}

/// The node's time source: the wall clock unless a test sets one.
#[derive(Clone, Default)]
pub struct NodeClock(pub Option<tally_store::Clock>);

impl NodeClock {
    /// The time now.
    pub fn now(&self) -> Timestamp {
        self.0.as_ref().map_or_else(Timestamp::now, |c| c())
    }
}

impl std::fmt::Debug for NodeClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "NodeClock(test)"
        } else {
            "NodeClock(wall)"
        })
    }
}

impl NodeConfig {
    /// Defaults for `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> NodeConfig {
        NodeConfig {
            data_dir: data_dir.into(),
            database_url: None,
            dev: false,
            checkpoint_every: 10_000,
            batch_max: 2048,
            oob: crate::oob::OobSettings::default(),
            delivery: crate::delivery::DeliverySettings::default(),
            clock: NodeClock::default(),
        }
    }

    /// The database URL this config resolves to.
    pub fn resolved_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("tally.db").display()),
        }
    }
}

/// Paths inside a data directory.
#[derive(Debug, Clone)]
pub struct NodeFiles {
    /// The directory.
    pub dir: PathBuf,
}

impl NodeFiles {
    /// The node's Ed25519 key (PKCS#8 PEM).
    pub fn node_key(&self) -> PathBuf {
        self.dir.join("node.key")
    }
    /// The CA certificate (PEM).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    /// The CA key (PKCS#8 PEM).
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    /// The first admin API key, written once.
    pub fn admin_key(&self) -> PathBuf {
        self.dir.join("admin.key")
    }
}

/// A node key as the journal's checkpoint signer.
pub struct NodeSigner(pub Arc<SigningKey>);

impl Checkpointer for NodeSigner {
    fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.0
            .sign(tally_ledger::journal::CHECKPOINT_DOMAIN, message)
            .to_bytes()
            .to_vec()
    }
}

/// Checks a checkpoint signature with the kernel's Ed25519 (strict verification).
pub fn verify_checkpoint(public_key: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = tally_kernel::crypto::VerifyingKey::from_bytes(public_key) else {
        return false;
    };
    let Ok(sig) = tally_kernel::crypto::Signature::from_slice(signature) else {
        return false;
    };
    key.verify(tally_ledger::journal::CHECKPOINT_DOMAIN, message, &sig)
        .is_ok()
}

/// A running node.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) files: NodeFiles,
    pub(crate) node_key: Arc<SigningKey>,
    pub(crate) ca: CertificateAuthority,
    pub(crate) dev: bool,
    pub(crate) clock: NodeClock,
    /// The out-of-band code key (the same on every node of one database) and settings.
    pub(crate) oob: crate::oob::OobState,
    pub(crate) delivery: crate::delivery::DeliveryState,
    /// The receipt keys (derived from `receipt.key`, the same on every node of one database).
    pub(crate) receipts: crate::receipt::ReceiptState,
    /// `checkpoint_every + batch_max`: the most entries a signed checkpoint can lag.
    checkpoint_gap_max: i64,
}

/// A new account as requested.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
pub struct OpenAccount {
    /// Owner name; admins choose, others get their own.
    pub owner: Option<String>,
    /// ISO-4217 code.
    pub currency: String,
    /// Kind; admins choose, others get `customer`/`merchant` by role.
    pub kind: Option<AccountKind>,
    /// Overdraft allowed (admins only).
    pub limit_minor: Option<i64>,
    /// Bound debits by credits (default true for customer and merchant accounts).
    pub debits_must_not_exceed_credits: Option<bool>,
    /// Bound credits by debits (default false).
    pub credits_must_not_exceed_debits: Option<bool>,
}

/// A message to send to someone when the change commits (same transaction).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct Notify {
    /// `email`, `sms`, `webhook` or `dev`.
    pub channel: String,
    /// Where to.
    pub address: String,
}

/// A transfer or hold as requested.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct TransferOrder {
    /// Account debited.
    pub debit_account: Id,
    /// Account credited.
    pub credit_account: Id,
    /// The amount.
    pub amount: Amount,
    /// For a hold: seconds until it expires.
    pub timeout_s: Option<i64>,
    /// Free text.
    pub memo: Option<String>,
    /// Tell someone when it commits.
    pub notify: Option<Notify>,
}

/// An exchange as requested.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct ExchangeOrder {
    /// Source account.
    pub debit_account: Id,
    /// Target account (another currency).
    pub credit_account: Id,
    /// Amount in the source currency's minor units.
    pub amount_minor: i64,
    /// The source currency, if the client states it: must be the debited account's.
    pub currency: Option<Currency>,
    /// Target units per source unit, as a decimal string (`1.0834`).
    pub rate: String,
    /// Free text.
    pub memo: Option<String>,
}

impl Node {
    /// Opens (creating on first start) the node in `config.data_dir`. Returns the node and,
    /// on first start, the admin API key (also written to `admin.key`).
    pub async fn open(config: &NodeConfig) -> Result<(Node, Option<Secret<String>>)> {
        let files = NodeFiles {
            dir: config.data_dir.clone(),
        };
        create_private_dir(&files.dir)?;
        let node_key = Arc::new(load_or_create_key(&files.node_key())?);
        let ca = if files.ca_cert().exists() {
            CertificateAuthority::load(&files.ca_cert(), &files.ca_key()).map_err(setup)?
        } else {
            // Valid from an hour ago: certificates issued "now" by a node whose clock is a
            // little behind the machine's (or a test clock) must not predate their issuer.
            let since = config.clock.now().min(Timestamp::now()).plus_seconds(-3600);
            let ca = CertificateAuthority::generate("Tally node CA", since, 3650)
                .map_err(setup)?;
            ca.save(&files.ca_cert(), &files.ca_key()).map_err(setup)?;
            ca
        };
        let options = WriteOptions {
            batch_max: config.batch_max,
            checkpoint_every: config.checkpoint_every,
            checkpointer: Some(Arc::new(NodeSigner(node_key.clone()))),
            ..WriteOptions::default()
        };
        let options = match &config.clock.0 {
            Some(clock) => WriteOptions {
                clock: clock.clone(),
                ..options
            },
            None => options,
        };
        let store = Store::open(&config.resolved_database_url(), options).await?;
        let oob = crate::oob::OobState::load(&files, &store, config.oob.clone()).await?;
        let delivery =
            crate::delivery::DeliveryState::load(&files, &store, config.delivery.clone()).await?;
        let receipts =
            crate::receipt::ReceiptState::load(&files, &store, &ca, config.clock.now()).await?;
        let node = Node {
            inner: Arc::new(Inner {
                store,
                files,
                node_key,
                ca,
                dev: config.dev,
                clock: config.clock.clone(),
                oob,
                delivery,
                receipts,
                checkpoint_gap_max: config.checkpoint_every + config.batch_max as i64,
            }),
        };
        let admin = node.ensure_admin_key().await?;
        Ok((node, admin))
    }

    /// The store (for the audit and the benchmark).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The data directory's files.
    pub fn files(&self) -> &NodeFiles {
        &self.inner.files
    }

    /// The node CA.
    pub fn ca(&self) -> &CertificateAuthority {
        &self.inner.ca
    }

    /// The node's public key, hex.
    pub fn node_public_key(&self) -> String {
        self.inner.node_key.verifying_key().to_hex()
    }

    /// The node's time (the wall clock unless a test set one).
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// True in development mode.
    pub fn is_dev(&self) -> bool {
        self.inner.dev
    }

    /// On first start: a new admin key, on disk before it exists in the database, so a crash
    /// at any point leaves either no key or a usable `admin.key`, never a key nobody has.
    async fn ensure_admin_key(&self) -> Result<Option<Secret<String>>> {
        let path = self.inner.files.admin_key();
        let pending = path.with_extension("key.pending");
        if !self.inner.store.api_keys().await?.is_empty() {
            // A crash between commit and rename left the key in `pending`: finish the rename
            // if the database has it, else drop it.
            if pending.exists() && !path.exists() {
                let key = std::fs::read_to_string(&pending).map_err(setup)?;
                if self.authenticate(key.trim()).await.is_ok() {
                    std::fs::rename(&pending, &path).map_err(setup)?;
                } else {
                    std::fs::remove_file(&pending).map_err(setup)?;
                }
            }
            return Ok(None);
        }
        if path.exists() {
            return Err(ServiceError::Setup(format!(
                "{} exists but the database has no API key: it belongs to another database \
                 (move it away to make a new admin key for this one)",
                path.display()
            )));
        }
        let key = new_api_key(Role::Admin)?;
        if pending.exists() {
            std::fs::remove_file(&pending).map_err(setup)?;
        }
        write_private_file(&pending, format!("{}\n", key.expose()).as_bytes())?;
        self.store_key(&key, Role::Admin, "operator", "first admin key")
            .await?;
        std::fs::rename(&pending, &path).map_err(setup)?;
        Ok(Some(key))
    }

    async fn create_key(
        &self,
        role: Role,
        owner: &str,
        label: &str,
    ) -> Result<(ApiKeyRecord, Secret<String>)> {
        let key = new_api_key(role)?;
        let record = self.store_key(&key, role, owner, label).await?;
        Ok((record, key))
    }

    async fn store_key(
        &self,
        key: &Secret<String>,
        role: Role,
        owner: &str,
        label: &str,
    ) -> Result<ApiKeyRecord> {
        let record = ApiKeyRecord {
            id: Id::new(),
            role: role.as_str().to_string(),
            owner: owner.to_string(),
            label: label.to_string(),
            created_at: Timestamp::now(),
            revoked_at: None,
        };
        // Journaled like every state change; the key row commits with its journal entry.
        let command = Command::Record {
            kind: "api_key_created".into(),
            data: serde_json::json!({
                "id": record.id, "role": record.role, "owner": record.owner, "label": record.label,
            }),
        };
        let attachment = tally_store::Attachment::ApiKeyCreated {
            key_hash: sha256(key.expose().as_bytes()),
            record: record.clone(),
        };
        let request = Request {
            idempotency_key: format!(":api_key_created:{}", record.id),
            command,
        };
        self.inner
            .store
            .execute_with(request, vec![attachment])
            .await?;
        Ok(record)
    }

    /// Resolves an API key to its principal. Lookup is by SHA-256 of the key, so no key is
    /// compared byte by byte in a way that leaks timing.
    pub async fn authenticate(&self, api_key: &str) -> Result<Principal> {
        if api_key.is_empty() || api_key.len() > 200 {
            return Err(ServiceError::Unauthorized);
        }
        let record = self
            .inner
            .store
            .api_key_by_hash(&sha256(api_key.as_bytes()))
            .await?
            .ok_or(ServiceError::Unauthorized)?;
        let role = Role::parse(&record.role).ok_or(ServiceError::Unauthorized)?;
        Ok(Principal {
            key_id: record.id,
            role,
            owner: record.owner,
        })
    }

    /// Makes an API key (admins only). The clear key is returned once.
    pub async fn issue_api_key(
        &self,
        by: &Principal,
        role: Role,
        owner: &str,
        label: &str,
    ) -> Result<(ApiKeyRecord, Secret<String>)> {
        require_admin(by)?;
        check_name("owner", owner)?;
        if role != Role::Admin && owner == "operator" {
            // The operator's accounts (settlement, liquidity) must not be reachable by a
            // customer or merchant key.
            return Err(ServiceError::Invalid {
                field: "owner",
                reason: "`operator` is reserved for admin keys".into(),
            });
        }
        if label.len() > 200 || label.chars().any(char::is_control) {
            return Err(ServiceError::Invalid {
                field: "label",
                reason: "at most 200 bytes".into(),
            });
        }
        let owner = if role == Role::Admin {
            "operator"
        } else {
            owner
        };
        self.create_key(role, owner, label).await
    }

    /// All API keys (admins only).
    pub async fn api_keys(&self, by: &Principal) -> Result<Vec<ApiKeyRecord>> {
        require_admin(by)?;
        Ok(self.inner.store.api_keys().await?)
    }

    /// Revokes an API key (admins only).
    pub async fn revoke_api_key(&self, by: &Principal, id: Id) -> Result<()> {
        require_admin(by)?;
        let live = self.inner.store.api_keys().await?;
        if !live.iter().any(|k| k.id == id && k.revoked_at.is_none()) {
            return Err(ServiceError::NotFound {
                what: "api key",
                id: id.to_string(),
            });
        }
        // A concurrent second revoke is a replay of the first (same key, same request).
        let request = Request {
            idempotency_key: format!(":api_key_revoked:{id}"),
            command: Command::Record {
                kind: "api_key_revoked".into(),
                data: serde_json::json!({ "id": id, "by": by.key_id }),
            },
        };
        let attachment = tally_store::Attachment::ApiKeyRevoked { id };
        self.inner
            .store
            .execute_with(request, vec![attachment])
            .await?;
        Ok(())
    }

    /// Opens an account. Customers and merchants open accounts for themselves only, bounded
    /// by their credits and without overdraft; the operator chooses everything.
    pub async fn open_account(
        &self,
        by: &Principal,
        idempotency_key: Option<&str>,
        req: OpenAccount,
    ) -> Result<(Account, bool)> {
        let currency = Currency::from_code(&req.currency)?;
        let (owner, kind, limit_minor) = if by.is_admin() {
            let owner = req.owner.unwrap_or_else(|| "operator".to_string());
            (
                owner,
                req.kind.unwrap_or(AccountKind::Operator),
                req.limit_minor.unwrap_or(0),
            )
        } else {
            if req.owner.as_ref().is_some_and(|o| *o != by.owner) {
                return Err(ServiceError::Forbidden(
                    "accounts can only be opened for yourself",
                ));
            }
            if req.limit_minor.is_some_and(|l| l != 0) {
                return Err(ServiceError::Forbidden(
                    "only the operator grants credit limits",
                ));
            }
            let kind = if by.role == Role::Merchant {
                AccountKind::Merchant
            } else {
                AccountKind::Customer
            };
            if req.kind.is_some_and(|k| k != kind) {
                return Err(ServiceError::Forbidden(
                    "this role cannot open that kind of account",
                ));
            }
            (by.owner.clone(), kind, 0)
        };
        check_name("owner", &owner)?;
        let bounded_default = matches!(kind, AccountKind::Customer | AccountKind::Merchant);
        let dmnec = req
            .debits_must_not_exceed_credits
            .unwrap_or(bounded_default);
        if !by.is_admin() && !dmnec {
            return Err(ServiceError::Forbidden(
                "only the operator opens unbounded accounts",
            ));
        }
        let flags = AccountFlags {
            debits_must_not_exceed_credits: dmnec,
            credits_must_not_exceed_debits: req.credits_must_not_exceed_debits.unwrap_or(false),
        };
        let key = match idempotency_key {
            Some(k) => namespaced(by, k)?,
            None => format!("{}:open:{}", by.owner, Id::new()),
        };
        let command = Command::OpenAccount {
            owner,
            currency,
            kind,
            flags,
            limit_minor,
        };
        let outcome = self.execute(key, command, Vec::new()).await?;
        let account = outcome
            .account()
            .cloned()
            .ok_or(ServiceError::IdempotencyKeyReused)?;
        Ok((account, outcome.replayed))
    }

    /// One account, if the caller may see it.
    pub async fn account(&self, by: &Principal, id: Id) -> Result<Account> {
        let account = self.inner.store.account(id).await?;
        match account {
            Some(a) if by.is_admin() || a.owner == by.owner => Ok(a),
            _ => Err(ServiceError::NotFound {
                what: "account",
                id: id.to_string(),
            }),
        }
    }

    /// Accounts of the caller (admins: of `owner`, default all of the operator's).
    pub async fn accounts(&self, by: &Principal, owner: Option<&str>) -> Result<Vec<Account>> {
        let owner = match owner {
            Some(o) if by.is_admin() || o == by.owner => o.to_string(),
            Some(_) => {
                return Err(ServiceError::Forbidden(
                    "you can list only your own accounts",
                ));
            }
            None => by.owner.clone(),
        };
        Ok(self.inner.store.accounts_of(&owner).await?)
    }

    /// Recent transfers of an account the caller may see, newest first.
    pub async fn account_transfers(
        &self,
        by: &Principal,
        id: Id,
        limit: i64,
    ) -> Result<Vec<Transfer>> {
        self.account(by, id).await?;
        Ok(self
            .inner
            .store
            .transfers_of(id, limit.clamp(1, 1000))
            .await?)
    }

    /// One transfer, if the caller owns one of its accounts.
    pub async fn transfer(&self, by: &Principal, id: Id) -> Result<Transfer> {
        let not_found = || ServiceError::NotFound {
            what: "transfer",
            id: id.to_string(),
        };
        let t = self.inner.store.transfer(id).await?.ok_or_else(not_found)?;
        if by.is_admin()
            || self.owns(by, t.debit_account).await?
            || self.owns(by, t.credit_account).await?
        {
            Ok(t)
        } else {
            Err(not_found())
        }
    }

    async fn owns(&self, by: &Principal, account: Id) -> Result<bool> {
        Ok(self
            .inner
            .store
            .account(account)
            .await?
            .is_some_and(|a| a.owner == by.owner))
    }

    pub(crate) async fn require_owner(
        &self,
        by: &Principal,
        account: Id,
        why: &'static str,
    ) -> Result<()> {
        if by.is_admin() || self.owns(by, account).await? {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(why))
        }
    }

    /// Moves money at once, or holds it when `timeout_s` is set. The caller must own the
    /// debited account (the operator may move any). Returns the transfer and whether this was
    /// a replay of an earlier request with the same key.
    pub async fn transfer_money(
        &self,
        by: &Principal,
        idempotency_key: &str,
        order: TransferOrder,
    ) -> Result<(Transfer, bool)> {
        self.require_owner(
            by,
            order.debit_account,
            "you can only move money out of your own accounts",
        )
        .await?;
        let messages = self.notification(&order, idempotency_key, by)?;
        let command = Command::Transfer {
            debit_account: order.debit_account,
            credit_account: order.credit_account,
            amount_minor: order.amount.minor,
            currency: order.amount.currency,
            timeout_s: order.timeout_s,
            memo: order.memo.unwrap_or_default(),
        };
        let key = namespaced(by, idempotency_key)?;
        let outcome = self
            .execute(key, command, messages.into_iter().map(Into::into).collect())
            .await?;
        first_transfer(outcome)
    }

    fn notification(
        &self,
        order: &TransferOrder,
        idempotency_key: &str,
        by: &Principal,
    ) -> Result<Vec<NewMessage>> {
        let Some(n) = &order.notify else {
            return Ok(Vec::new());
        };
        if !matches!(n.channel.as_str(), "email" | "sms" | "webhook" | "dev") {
            return Err(ServiceError::Invalid {
                field: "notify.channel",
                reason: "email, sms, webhook or dev".into(),
            });
        }
        if n.address.is_empty() || n.address.len() > 256 {
            return Err(ServiceError::Invalid {
                field: "notify.address",
                reason: "1 to 256 bytes".into(),
            });
        }
        let what = if order.timeout_s.is_some() {
            "Hold"
        } else {
            "Transfer"
        };
        Ok(vec![NewMessage {
            dedup_key: format!("notify:{}:{}", by.owner, idempotency_key),
            kind: n.channel.clone(),
            address: n.address.clone(),
            subject: format!("{what} of {}", order.amount),
            body: format!(
                "{what} of {} from account {} to account {}.{}",
                order.amount,
                order.debit_account,
                order.credit_account,
                order
                    .memo
                    .as_ref()
                    .map(|m| format!("\nMemo: {m}"))
                    .unwrap_or_default()
            ),
            data: serde_json::json!({
                "amount_minor": order.amount.minor,
                "currency": order.amount.currency.code(),
                "debit_account": order.debit_account,
                "credit_account": order.credit_account,
            }),
        }])
    }

    /// Posts a pending transfer (all of it by default). The credited account's owner captures.
    pub async fn post(
        &self,
        by: &Principal,
        idempotency_key: &str,
        pending_id: Id,
        amount_minor: Option<i64>,
        currency: Option<Currency>,
    ) -> Result<(Transfer, bool)> {
        let pending = self.transfer(by, pending_id).await?;
        self.require_owner(
            by,
            pending.credit_account,
            "only the beneficiary of a hold can post it",
        )
        .await?;
        // An amount typed as "5.00 EUR" against a hold in JPY is refused, never reinterpreted.
        if let Some(c) = currency
            && c != pending.currency
        {
            return Err(ServiceError::Ledger(
                tally_ledger::LedgerError::CurrencyMismatch {
                    account: pending.debit_account,
                    account_currency: pending.currency,
                    currency: c,
                },
            ));
        }
        let key = namespaced(by, idempotency_key)?;
        let outcome = self
            .execute(
                key,
                Command::Post {
                    pending_id,
                    amount_minor,
                },
                Vec::new(),
            )
            .await?;
        first_transfer(outcome)
    }

    /// Voids a pending transfer. The credited account's owner releases.
    pub async fn void(
        &self,
        by: &Principal,
        idempotency_key: &str,
        pending_id: Id,
    ) -> Result<(Transfer, bool)> {
        let pending = self.transfer(by, pending_id).await?;
        self.require_owner(
            by,
            pending.credit_account,
            "only the beneficiary of a hold can void it",
        )
        .await?;
        let key = namespaced(by, idempotency_key)?;
        let outcome = self
            .execute(key, Command::Void { pending_id }, Vec::new())
            .await?;
        first_transfer(outcome)
    }

    /// Exchanges between two currencies through the operator's liquidity accounts.
    pub async fn exchange(
        &self,
        by: &Principal,
        idempotency_key: &str,
        order: ExchangeOrder,
    ) -> Result<(Vec<Transfer>, bool)> {
        // The rate decides how much money the operator's liquidity hands out: only the operator
        // may state one. (Published rate tables for everyone come with trading sessions, M6.)
        if !by.is_admin() {
            return Err(ServiceError::Forbidden(
                "only the operator sets exchange rates",
            ));
        }
        let from =
            self.inner
                .store
                .account(order.debit_account)
                .await?
                .ok_or(ServiceError::NotFound {
                    what: "account",
                    id: order.debit_account.to_string(),
                })?;
        let to = self
            .inner
            .store
            .account(order.credit_account)
            .await?
            .ok_or(ServiceError::NotFound {
                what: "account",
                id: order.credit_account.to_string(),
            })?;
        if let Some(c) = order.currency
            && c != from.currency
        {
            return Err(ServiceError::Ledger(
                tally_ledger::LedgerError::CurrencyMismatch {
                    account: from.id,
                    account_currency: from.currency,
                    currency: c,
                },
            ));
        }
        let rate = Rate::parse(&order.rate, from.currency, to.currency)?;
        let liquidity_from = self.liquidity(from.currency).await?;
        let liquidity_to = self.liquidity(to.currency).await?;
        let command = Command::Exchange {
            debit_account: order.debit_account,
            liquidity_from,
            liquidity_to,
            credit_account: order.credit_account,
            amount_minor: order.amount_minor,
            rate,
            memo: order.memo.unwrap_or_default(),
        };
        let key = namespaced(by, idempotency_key)?;
        let outcome = self.execute(key, command, Vec::new()).await?;
        match outcome.event {
            tally_ledger::Event::Transfers { transfers } => Ok((transfers, outcome.replayed)),
            tally_ledger::Event::AccountOpened { .. } | tally_ledger::Event::Recorded { .. } => {
                Err(ServiceError::IdempotencyKeyReused)
            }
        }
    }

    async fn liquidity(&self, currency: Currency) -> Result<Id> {
        let accounts = self.inner.store.accounts_of("operator").await?;
        accounts
            .iter()
            .find(|a| a.kind == AccountKind::Liquidity && a.currency == currency)
            .map(|a| a.id)
            .ok_or(ServiceError::NoLiquidity(currency))
    }

    /// The development inbox of `address` (only with `--dev`). The operator reads any inbox;
    /// a customer or merchant only the one named after itself.
    pub async fn dev_inbox(
        &self,
        by: &Principal,
        address: &str,
        limit: i64,
    ) -> Result<Vec<StoredMessage>> {
        if !self.inner.dev {
            return Err(ServiceError::Disabled(
                "the dev inbox needs `tally serve --dev`",
            ));
        }
        if !by.is_admin() && address != by.owner {
            return Err(ServiceError::Forbidden(
                "you can read only the dev inbox named after you",
            ));
        }
        let mut messages = self
            .inner
            .store
            .dev_inbox(address, limit.clamp(1, 500))
            .await?;
        for m in &mut messages {
            m.message.body = self.render_code(&m.message).await?.expose().clone();
        }
        Ok(messages)
    }

    /// Runs the full ledger audit (admins only).
    pub async fn audit(&self, by: &Principal) -> Result<tally_store::audit::StoreAudit> {
        require_admin(by)?;
        // Several nodes may share the database, each signing with its own key: every signer
        // is reported; the gap check proves no stretch of history went unsigned.
        let policy = tally_store::audit::AuditPolicy {
            trusted_signers: Vec::new(),
            checkpoint_gap_max: Some(self.inner.checkpoint_gap_max),
        };
        Ok(self
            .inner
            .store
            .audit(&verify_checkpoint, &policy, &|_| {})
            .await?)
    }
}

pub(crate) fn first_transfer(outcome: Outcome) -> Result<(Transfer, bool)> {
    let replayed = outcome.replayed;
    outcome
        .transfer()
        .cloned()
        .map(|t| (t, replayed))
        .ok_or(ServiceError::IdempotencyKeyReused)
}

pub(crate) fn require_admin(by: &Principal) -> Result<()> {
    if by.is_admin() {
        Ok(())
    } else {
        Err(ServiceError::Forbidden("operator only"))
    }
}

/// Owner names: 1 to 200 printable bytes without ':' (the separator of namespaced
/// idempotency keys `{owner}:{key}`, so two owners' keys can never collide).
pub(crate) fn check_name(field: &'static str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 200
        && !value.chars().any(char::is_control)
        && !value.contains(':');
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Invalid {
            field,
            reason: "1 to 200 printable bytes, no ':'".into(),
        })
    }
}

/// The ledger-wide key: the caller's owner, then the client's key.
pub(crate) fn namespaced(by: &Principal, key: &str) -> Result<String> {
    let printable = key.chars().all(|c| c.is_ascii_graphic());
    if key.is_empty() || key.len() > CLIENT_KEY_LEN_MAX || !printable {
        return Err(ServiceError::Invalid {
            field: "idempotency_key",
            reason: format!("1 to {CLIENT_KEY_LEN_MAX} printable ASCII characters"),
        });
    }
    Ok(format!("{}:{}", by.owner, key))
}

/// A 32-byte node secret in `DATA/<file>` (made on first start), checked against the
/// database: every node sharing it must hold the same secret, so its id (an HMAC of a fixed
/// string) is stored in `node_settings` under `setting` on first use and compared after.
pub(crate) async fn load_node_secret(
    files: &NodeFiles,
    store: &Store,
    file: &str,
    setting: &str,
) -> Result<Secret<Vec<u8>>> {
    let path = files.dir.join(file);
    let key = if path.exists() {
        let text = Secret::new(std::fs::read_to_string(&path).map_err(setup)?);
        Secret::new(
            hex::decode(text.expose().trim())
                .ok()
                .filter(|k| k.len() == 32)
                .ok_or_else(|| setup(format!("{} is not 64 hex digits", path.display())))?,
        )
    } else {
        let mut raw = vec![0_u8; 32];
        getrandom_fill(&mut raw)?;
        let text = Secret::new(format!("{}\n", hex::encode(&raw)));
        write_private_file(&path, text.expose().as_bytes())?;
        Secret::new(raw)
    };
    let domain = format!("tally/{}/v1", setting.replace('_', "-"));
    let id = tally_kernel::crypto::kdf::hmac_sha256(key.expose(), domain.as_bytes());
    let stored = store.setting_or_insert(setting, &id).await?;
    if stored != id {
        return Err(setup(format!(
            "{} differs from the one of the other nodes on this database: copy {file} from the \
             first node's data directory",
            path.display()
        )));
    }
    Ok(key)
}

pub(crate) fn setup(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Setup(e.to_string())
}

pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| ServiceError::Setup(format!("cannot create {}: {e}", dir.display())))
}

/// Creates `path` (never overwriting), mode 0600, with `bytes`, synced to disk: for keys.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| ServiceError::Setup(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| ServiceError::Setup(format!("{}: {e}", path.display())))
}

fn load_or_create_key(path: &Path) -> Result<SigningKey> {
    if path.exists() {
        let pem = Secret::new(
            std::fs::read_to_string(path).map_err(|e| setup(format!("{}: {e}", path.display())))?,
        );
        return SigningKey::from_pkcs8_pem(pem.expose()).map_err(setup);
    }
    let key = SigningKey::generate();
    let pem = key.to_pkcs8_pem().map_err(setup)?;
    write_private_file(path, pem.expose().as_bytes())?;
    Ok(key)
}

/// A fresh 256-bit API key, e.g. `tally_customer_<64 hex digits>`.
fn new_api_key(role: Role) -> Result<Secret<String>> {
    let mut raw = [0_u8; 32];
    getrandom_fill(&mut raw)?;
    let key = Secret::new(format!("tally_{}_{}", role.as_str(), hex::encode(raw)));
    raw.fill(0);
    Ok(key)
}

pub(crate) fn getrandom_fill(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(setup)
}
