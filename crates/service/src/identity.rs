//! A node's identity on disk, and the rule that every node of one database shares it.
//!
//! A data directory holds the node's Ed25519 key (`node.key`), the node CA (`ca.pem`,
//! `ca.key`) and one 32-byte secret per protocol (`oob.key`, `delivery.key`, `receipt.key`,
//! `escrow.key`, `pad.key`).
//! The first start on an empty directory makes them (keys mode 0600, the directory 0700).
//!
//! Several `tally serve` processes may share one PostgreSQL database; to the outside they are
//! one node: a certificate issued by one is recognised by all, a code sent by one is checked
//! by another, a package or receipt signed on one verifies against the same keys. So the
//! database keeps a fingerprint of each identity file (in `node_settings`; never the secret
//! itself, so a database leak leaks no key), written by the first process to start. A process
//! whose files differ refuses to start and names the files to copy from a running node. A
//! file made during a start that is then refused is removed again, so copying the files in
//! and starting again just works.
//!
//! Rejected: keeping the CA key or the protocol secrets in the database (one leak would give
//! away every key); one identity per process (a second node would not recognise the
//! certificates of the first, and receipts signed on one would not verify on another).

use crate::{Result, ServiceError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tally_kernel::crypto::kdf::{hmac_sha256, sha256};
use tally_kernel::crypto::{CertificateAuthority, SigningKey};
use tally_kernel::{Secret, Timestamp};
use tally_store::Store;

/// The files every node of one database must hold the same copy of.
pub const SHARED_FILES: [&str; 8] = [
    "node.key",
    "ca.pem",
    "ca.key",
    "oob.key",
    "delivery.key",
    "receipt.key",
    "escrow.key",
    "pad.key",
];

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

/// The node key and CA, loaded or made.
pub(crate) struct Identity {
    pub(crate) node_key: Arc<SigningKey>,
    pub(crate) ca: CertificateAuthority,
}

/// Files made during this start: removed again if the start is refused.
#[derive(Default)]
pub(crate) struct Made(Vec<PathBuf>);

impl Made {
    /// Removes every file made during this start (the start was refused).
    pub(crate) fn undo(&mut self) {
        for path in self.0.drain(..) {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Identity {
    /// Loads the node key and CA from `files`, making them when absent. `now` dates a new CA.
    pub(crate) fn load_or_create(
        files: &NodeFiles,
        now: Timestamp,
        made: &mut Made,
    ) -> Result<Identity> {
        create_private_dir(&files.dir)?;
        let node_key = Arc::new(load_or_create_key(&files.node_key(), made)?);
        let ca = if files.ca_cert().exists() {
            CertificateAuthority::load(&files.ca_cert(), &files.ca_key()).map_err(setup)?
        } else {
            // Valid from an hour ago: certificates issued "now" by a node whose clock is a
            // little behind the machine's (or a test clock) must not predate their issuer.
            let since = now.min(Timestamp::now()).plus_seconds(-3600);
            let ca = CertificateAuthority::generate("Tally node CA", since, 3650).map_err(setup)?;
            ca.save(&files.ca_cert(), &files.ca_key()).map_err(setup)?;
            made.0.push(files.ca_cert());
            made.0.push(files.ca_key());
            ca
        };
        Ok(Identity { node_key, ca })
    }

    /// Checks the node key and CA against the ones the database was first started with.
    pub(crate) async fn check(&self, files: &NodeFiles, store: &Store) -> Result<()> {
        let key_id = sha256(&self.node_key.verifying_key().to_bytes());
        agree(store, files, "node_key_id", &key_id, "node.key").await?;
        let ca_id = sha256(self.ca.certificate().as_der());
        agree(store, files, "ca_id", &ca_id, "ca.pem and ca.key").await
    }
}

/// Stores `id` under `setting` unless another process did first; refuses when they differ.
async fn agree(
    store: &Store,
    files: &NodeFiles,
    setting: &str,
    id: &[u8],
    what: &str,
) -> Result<()> {
    let stored = store.setting_or_insert(setting, id).await?;
    if stored != id {
        return Err(setup(format!(
            "{what} in {} differ from those of the other nodes on this database. Every node of \
             one database is the same node to the outside: copy {} from a running node's data \
             directory into {} and start again",
            files.dir.display(),
            SHARED_FILES.join(", "),
            files.dir.display()
        )));
    }
    Ok(())
}

/// A 32-byte node secret in `DATA/<file>` (made on first start), checked against the
/// database: every node sharing it must hold the same secret, so its id (an HMAC of a fixed
/// string) is stored in `node_settings` under `setting` on first use and compared after.
pub(crate) async fn node_secret(
    files: &NodeFiles,
    store: &Store,
    file: &str,
    setting: &str,
    made: &mut Made,
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
        made.0.push(path.clone());
        Secret::new(raw)
    };
    let domain = format!("tally/{}/v1", setting.replace('_', "-"));
    let id = hmac_sha256(key.expose(), domain.as_bytes());
    agree(store, files, setting, &id, file).await?;
    Ok(key)
}

pub(crate) fn setup(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Setup(e.to_string())
}

/// Creates `dir` (and its parents) with mode 0700, if it does not exist.
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

fn load_or_create_key(path: &Path, made: &mut Made) -> Result<SigningKey> {
    if path.exists() {
        let pem = Secret::new(
            std::fs::read_to_string(path).map_err(|e| setup(format!("{}: {e}", path.display())))?,
        );
        return SigningKey::from_pkcs8_pem(pem.expose()).map_err(setup);
    }
    let key = SigningKey::generate();
    let pem = key.to_pkcs8_pem().map_err(setup)?;
    write_private_file(path, pem.expose().as_bytes())?;
    made.0.push(path.to_path_buf());
    Ok(key)
}

/// Fills `buf` from the operating system's CSPRNG.
pub(crate) fn getrandom_fill(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(setup)
}
