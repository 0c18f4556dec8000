//! The node: the shared core and one driver per protocol, opened from a data directory; API
//! keys; and the one renderer of secrets that messages carry by reference.
//!
//! First start (`Node::open` on an empty `--data` directory) creates the directory (mode
//! 0700), the node's identity ([`crate::identity`]) and, when the database has no API key yet,
//! an admin API key written once to `admin.key` (mode 0600). Later starts load them. With
//! PostgreSQL, several nodes may share one database: they share the identity files (checked
//! at start), and only the first creates the admin key.

use crate::Missing;
use crate::access::{check_name, require_admin};
use crate::core::{Core, NodeClock};
use crate::delivery::Delivery;
use crate::federation::Federation;
use crate::identity::{Identity, Made, NodeFiles, getrandom_fill, setup, write_private_file};
use crate::oob::Oob;
use crate::pad::Pads;
use crate::receipt::Receipts;
use crate::session::Sessions;
use crate::{Principal, Result, Role, ServiceError};
use std::path::PathBuf;
use std::sync::Arc;
use tally_kernel::crypto::kdf::sha256;
use tally_kernel::crypto::{CertificateAuthority, SigningKey};
use tally_kernel::{Id, Secret, Timestamp};
use tally_ledger::{Command, Request};
use tally_proto::effects::SecretRef;
use tally_store::keys::ApiKeyRecord;
use tally_store::outbox::NewMessage;
use tally_store::{Checkpointer, Store, WriteOptions};

/// How a web console sign-in's token begins (the rest is 32 random bytes, hex).
pub const CONSOLE_TOKEN_PREFIX: &str = "tally_console_";

/// The token table's user of a console token: this, then the admin key's id (hex). A user name
/// cannot hold a ':', so no sign-in of a user ever makes one.
const CONSOLE_USER: &str = ":console:";

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
    /// Receipts: seconds a fair exchange may stay unanswered by B before the arbiter aborts it.
    pub exchange_timeout_s: i64,
    /// Where the node reads the time (tests move it by hand); the wall clock by default.
    pub clock: NodeClock,
    /// Receipts: the arbiter node fair exchanges are decided by (`None`: this node's own).
    pub arbiter: Option<std::sync::Arc<dyn crate::receipt::remote::ArbiterLink>>,
    /// This node is an arbiter node for receipt nodes under this CA.
    pub arbiter_role: Option<crate::receipt::remote::ArbiterRole>,
    /// Trading sessions' timing.
    pub sessions: crate::session::SessionSettings,
    /// Pads: the largest sold.
    pub pads: crate::pad::PadSettings,
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
            exchange_timeout_s: 86_400,
            clock: NodeClock::default(),
            arbiter: None,
            arbiter_role: None,
            sessions: crate::session::SessionSettings::default(),
            pads: crate::pad::PadSettings::default(),
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
    inner: Arc<Inner>,
}

struct Inner {
    core: Core,
    federation: Federation,
    oob: Oob,
    delivery: Delivery,
    receipts: Receipts,
    sessions: Sessions,
    pads: Pads,
}

impl Node {
    /// Opens (creating on first start) the node in `config.data_dir`. Returns the node and,
    /// on first start, the admin API key (also written to `admin.key`). A start refused
    /// because the data directory's identity differs from the database's removes the files it
    /// made, and says which to copy.
    pub async fn open(config: &NodeConfig) -> Result<(Node, Option<Secret<String>>)> {
        let mut made = Made::default();
        match Node::open_with(config, &mut made).await {
            Ok(opened) => Ok(opened),
            Err(e) => {
                made.undo();
                Err(e)
            }
        }
    }

    async fn open_with(
        config: &NodeConfig,
        made: &mut Made,
    ) -> Result<(Node, Option<Secret<String>>)> {
        let files = NodeFiles {
            dir: config.data_dir.clone(),
        };
        let identity = Identity::load_or_create(&files, config.clock.now(), made)?;
        let options = WriteOptions {
            batch_max: config.batch_max,
            checkpoint_every: config.checkpoint_every,
            checkpointer: Some(Arc::new(NodeSigner(identity.node_key.clone()))),
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
        let core = Core::new(
            store,
            files,
            identity,
            config.dev,
            config.clock.clone(),
            config.checkpoint_every + config.batch_max as i64,
        );
        let loaded = async {
            core.check_identity().await?;
            let oob = Oob::load(core.clone(), config.oob.clone(), made).await?;
            let delivery = Delivery::load(core.clone(), config.delivery.clone(), made).await?;
            let receipts = Receipts::load(
                core.clone(),
                made,
                config.exchange_timeout_s,
                config.arbiter.clone(),
                config.arbiter_role.clone(),
            )
            .await?;
            let sessions = Sessions::load(
                core.clone(),
                Federation::new(core.clone()),
                config.sessions.clone(),
                made,
            )
            .await?;
            let pads = Pads::load(core.clone(), config.pads.clone(), made).await?;
            Ok::<_, ServiceError>((oob, delivery, receipts, sessions, pads))
        }
        .await;
        let (oob, delivery, receipts, sessions, pads) = match loaded {
            Ok(parts) => parts,
            Err(e) => {
                core.store().close().await;
                return Err(e);
            }
        };
        let node = Node {
            inner: Arc::new(Inner {
                sessions,
                federation: Federation::new(core.clone()),
                core,
                oob,
                delivery,
                receipts,
                pads,
            }),
        };
        let admin = node.ensure_admin_key().await?;
        Ok((node, admin))
    }

    /// The shared core.
    pub fn core(&self) -> &Core {
        &self.inner.core
    }

    /// Peers and the messages exchanged with them.
    pub fn federation(&self) -> &Federation {
        &self.inner.federation
    }

    /// Takes a sealed message from a peer node (`POST /v1/peer/messages`): checks it, and
    /// commits it with the step it causes, once. A kind no part of this node handles is
    /// refused, so its sender stops retrying it.
    pub async fn receive_peer_message(
        &self,
        bytes: &[u8],
    ) -> Result<tally_wire::federation::PeerMessageTaken> {
        let federation = self.federation();
        let message = federation.open(bytes).await?;
        match federation.link_step(&message) {
            Some(effects) => federation.take(&message, effects, Vec::new()).await,
            None if message.kind.starts_with("session_") => self.sessions().receive(&message).await,
            None => Err(ServiceError::PeerRefused(crate::PeerRefusal::UnknownKind)),
        }
    }

    /// Trading sessions, in either role.
    pub fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    /// Anonymous prepaid pads.
    pub fn pads(&self) -> &Pads {
        &self.inner.pads
    }

    /// Out-of-band authentication.
    pub fn oob(&self) -> &Oob {
        &self.inner.oob
    }

    /// Locked delivery.
    pub fn delivery(&self) -> &Delivery {
        &self.inner.delivery
    }

    /// Signed receipts and the arbiter.
    pub fn receipts(&self) -> &Receipts {
        &self.inner.receipts
    }

    /// The store (for the audit and the benchmark).
    pub fn store(&self) -> &Store {
        self.core().store()
    }

    /// The data directory's files.
    pub fn files(&self) -> &NodeFiles {
        self.core().files()
    }

    /// The node CA.
    pub fn ca(&self) -> &CertificateAuthority {
        self.core().ca()
    }

    /// The node's public key, hex.
    pub fn node_public_key(&self) -> String {
        self.core().node_key().verifying_key().to_hex()
    }

    /// The node's time (the wall clock unless a test set one).
    pub fn now(&self) -> Timestamp {
        self.core().now()
    }

    /// True in development mode.
    pub fn is_dev(&self) -> bool {
        self.core().is_dev()
    }

    /// Puts the secret a message carries by reference into its text, for delivery (or for
    /// reading the dev inbox). A message without one is returned as it is.
    pub async fn render(&self, message: &NewMessage) -> Result<Secret<String>> {
        let Some(secret) = &message.secret else {
            return Ok(Secret::new(message.body.clone()));
        };
        let value = match secret {
            SecretRef::OobCode { session } => self.oob().code_of(session).await?,
            SecretRef::UnlockKey { sale } => self.delivery().unlock_key_hex(*sale).await?,
            // Signs the message; never in its text.
            SecretRef::PadProviderWebhook { .. } => return Ok(Secret::new(message.body.clone())),
        };
        Ok(Secret::new(
            message.body.replace(secret.placeholder(), value.expose()),
        ))
    }

    /// The secret a message is signed with instead of its channel's own, if it names one (a
    /// pad provider's webhook).
    pub async fn signing_secret(&self, message: &NewMessage) -> Result<Option<Secret<String>>> {
        match &message.secret {
            Some(SecretRef::PadProviderWebhook { provider }) => {
                Ok(Some(self.pads().provider_webhook_secret(provider).await?))
            }
            _ => Ok(None),
        }
    }

    /// On first start: a new admin key, on disk before it exists in the database, so a crash
    /// at any point leaves either no key or a usable `admin.key`, never a key nobody has.
    async fn ensure_admin_key(&self) -> Result<Option<Secret<String>>> {
        let path = self.files().admin_key();
        let pending = path.with_extension("key.pending");
        if !self.store().api_keys().await?.is_empty() {
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
        self.store().execute_with(request, vec![attachment]).await?;
        Ok(record)
    }

    /// Resolves an API key to its principal. Lookup is by SHA-256 of the key, so no key is
    /// compared byte by byte in a way that leaks timing.
    ///
    /// A sign-in's access token (`tally_session_…`, from a verified login session) works too,
    /// as a customer key of the user who signed in, until it expires or is revoked
    /// ([`crate::oob::Oob::sign_out`]).
    pub async fn authenticate(&self, api_key: &str) -> Result<Principal> {
        if api_key.is_empty() || api_key.len() > 200 {
            return Err(ServiceError::Unauthorized);
        }
        if api_key.starts_with(CONSOLE_TOKEN_PREFIX) {
            return self.console_principal(api_key).await;
        }
        if api_key.starts_with(crate::oob::SESSION_TOKEN_PREFIX) {
            let (user, _) = self.oob().token_user(api_key).await?;
            let digest = sha256(api_key.as_bytes());
            let key_id = Id::from_slice(&digest[..16]).ok_or(ServiceError::Unauthorized)?;
            return Ok(Principal {
                key_id,
                role: Role::Customer,
                owner: user,
            });
        }
        let record = self
            .store()
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

    /// Signs the operator in on the web console with an admin API key, pasted once: a
    /// short-lived console token (`tally_console_…`, the sign-in token's lifetime) that acts as
    /// that key until it expires, is signed out, or the key is revoked. The node keeps only the
    /// token's hash, in the database (so every node of the database takes it); the key itself
    /// is never kept.
    pub async fn console_sign_in(&self, admin_key: &str) -> Result<(Secret<String>, Timestamp)> {
        if admin_key.trim().starts_with(CONSOLE_TOKEN_PREFIX)
            || admin_key
                .trim()
                .starts_with(crate::oob::SESSION_TOKEN_PREFIX)
        {
            return Err(ServiceError::Unauthorized);
        }
        let by = self.authenticate(admin_key.trim()).await?;
        require_admin(&by)?;
        let mut raw = [0_u8; 32];
        getrandom_fill(&mut raw)?;
        let token = Secret::new(format!("{CONSOLE_TOKEN_PREFIX}{}", hex::encode(raw)));
        raw.fill(0);
        let now = self.core().now();
        let expires_at = now.plus_seconds(self.oob().settings().token_ttl_s);
        let row = tally_store::oob::TokenRow {
            token_hash: sha256(token.expose().as_bytes()),
            user_id: format!("{CONSOLE_USER}{}", hex::encode(by.key_id.0.as_bytes())),
            session_id: by.key_id.0.into_bytes(),
            expires_at,
        };
        self.core()
            .commit(
                format!(":console:{}", Id::new()),
                tally_proto::effects::Effects::record(
                    "console_sign_in",
                    serde_json::json!({ "key": by.key_id, "expires_at": expires_at }),
                ),
                vec![tally_store::oob::insert_token(&row)],
            )
            .await?;
        Ok((token, expires_at))
    }

    /// The principal of a console token: the admin key it was made with, while that key lives.
    async fn console_principal(&self, token: &str) -> Result<Principal> {
        let (user, _) = self.oob().token_user(token).await?;
        let key_id = user
            .strip_prefix(CONSOLE_USER)
            .and_then(|hex_id| hex::decode(hex_id).ok())
            .and_then(|bytes| Id::from_slice(&bytes))
            .ok_or(ServiceError::Unauthorized)?;
        let record = self
            .store()
            .api_keys()
            .await?
            .into_iter()
            .find(|k| k.id == key_id && k.revoked_at.is_none() && k.role == Role::Admin.as_str())
            .ok_or(ServiceError::Unauthorized)?;
        Ok(Principal {
            key_id: record.id,
            role: Role::Admin,
            owner: record.owner,
        })
    }

    /// `by` acting as a merchant: a merchant's or the operator's key as it is; a sign-in's
    /// token (a customer principal) when its user holds a live merchant key, so a merchant
    /// who signed in on the web manages the same products its keys do. Anyone else is
    /// refused.
    pub async fn as_merchant(&self, by: &Principal) -> Result<Principal> {
        match by.role {
            Role::Merchant | Role::Admin => Ok(by.clone()),
            Role::Customer => {
                if self.store().has_live_key(&by.owner, "merchant").await? {
                    Ok(Principal {
                        role: Role::Merchant,
                        ..by.clone()
                    })
                } else {
                    Err(ServiceError::Forbidden(
                        "these pages are for merchants: ask the operator for a merchant key",
                    ))
                }
            }
        }
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
        let key = new_api_key(role)?;
        let record = self.store_key(&key, role, owner, label).await?;
        Ok((record, key))
    }

    /// All API keys (admins only).
    pub async fn api_keys(&self, by: &Principal) -> Result<Vec<ApiKeyRecord>> {
        require_admin(by)?;
        Ok(self.store().api_keys().await?)
    }

    /// Revokes an API key (admins only).
    pub async fn revoke_api_key(&self, by: &Principal, id: Id) -> Result<()> {
        require_admin(by)?;
        let live = self.store().api_keys().await?;
        let Some(key) = live.iter().find(|k| k.id == id && k.revoked_at.is_none()) else {
            return Err(ServiceError::NotFound {
                what: Missing::ApiKey,
                id: id.to_string(),
            });
        };
        let mut attachments = vec![tally_store::Attachment::ApiKeyRevoked { id }];
        if key.role == Role::Admin.as_str() {
            attachments.push(tally_store::keys::another_admin_remains());
        }
        // A concurrent second revoke is a replay of the first (same key, same request).
        let request = Request {
            idempotency_key: format!(":api_key_revoked:{id}"),
            command: Command::Record {
                kind: "api_key_revoked".into(),
                data: serde_json::json!({ "id": id, "by": by.key_id }),
            },
        };
        match self.store().execute_with(request, attachments).await {
            Ok(_) => Ok(()),
            Err(tally_store::StoreError::Conflict(tally_store::Conflict::Limit(_))) => {
                Err(ServiceError::LastAdminKey)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// A fresh 256-bit API key, e.g. `tally_customer_<64 hex digits>`.
fn new_api_key(role: Role) -> Result<Secret<String>> {
    let mut raw = [0_u8; 32];
    getrandom_fill(&mut raw)?;
    let key = Secret::new(format!("tally_{}_{}", role.as_str(), hex::encode(raw)));
    raw.fill(0);
    Ok(key)
}
