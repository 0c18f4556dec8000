//! The customer agent's wallet (issue [7], M4): one file per trading session in the customer's
//! own directory (default `./tally-wallet`, mode 0600), holding the session key, the tab's MAC
//! key, the customer's copy of the purchase list's hash and the purchase in flight, so a
//! command that lost its answer sends the same purchase again (a repeat, taken once).
//!
//! Each change is written to a new file and renamed over the old one: a crash leaves the old
//! wallet or the new, never half of one.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tally_kernel::crypto::SigningKey;
use tally_proto::session::purchase::MacedPurchase;

/// What the customer keeps of one session.
#[derive(Serialize, Deserialize)]
pub struct Wallet {
    /// The session (empty while its opening waits for an answer).
    pub session: String,
    /// Its current transaction (the first, then the next once one is cleared, M4).
    pub transaction: String,
    /// The session key (PKCS#8 PEM).
    pub key_pem: String,
    /// The merchant agent's URL, once a tab is open there.
    pub agent: Option<String>,
    /// The tab's MAC key (hex), made before the tab is opened.
    pub mac_key: Option<String>,
    /// The tab is open at the agent.
    pub tab_open: bool,
    /// The next purchase's number.
    pub next_seq: u64,
    /// What the purchases so far cost, minor units.
    pub spent: i64,
    /// The list hash so far (hex).
    pub list: String,
    /// A purchase sent whose answer has not come back.
    pub pending: Option<MacedPurchase>,
    /// The order delivered with acceptance in flight (M9), kept before anything is sent.
    #[serde(default)]
    pub order: Option<WalletOrder>,
    /// The customer's own currency (the deposit's), to show prices in (M6).
    #[serde(default)]
    pub currency: Option<String>,
}

/// An order in flight: its id, K1 and what was signed, so a command run again after a lost
/// answer continues it.
#[derive(Serialize, Deserialize, Clone)]
pub struct WalletOrder {
    /// The order's id.
    pub order: String,
    /// The product.
    pub product: String,
    /// K1 (hex): it unlocks K2.
    pub k1: String,
    /// The signed order (JSON text).
    pub signed: String,
    /// The accept sent, with the digest of the package it answers: sent again as it was
    /// after a lost answer (the merchant takes each answer id once).
    #[serde(default)]
    pub accept: Option<(String, String)>,
}

impl Wallet {
    /// A new wallet with a fresh session key.
    pub fn new() -> anyhow::Result<Wallet> {
        let mut w = Wallet {
            session: String::new(),
            transaction: String::new(),
            key_pem: SigningKey::generate().to_pkcs8_pem()?.expose().clone(),
            agent: None,
            mac_key: None,
            tab_open: false,
            next_seq: 1,
            spent: 0,
            list: String::new(),
            pending: None,
            order: None,
            currency: None,
        };
        w.begin(String::new());
        Ok(w)
    }

    /// The wallet at the start of `transaction`: no tab, no purchase, no order yet (the
    /// session, its key, the agent and the currency stay).
    pub fn begin(&mut self, transaction: String) {
        self.transaction = transaction;
        self.mac_key = None;
        self.tab_open = false;
        self.next_seq = 1;
        self.spent = 0;
        self.list = hex::encode([0u8; 32]);
        self.pending = None;
        self.order = None;
    }

    /// The session key.
    pub fn key(&self) -> anyhow::Result<SigningKey> {
        Ok(SigningKey::from_pkcs8_pem(&self.key_pem)?)
    }

    /// The wallet file of `name` (a session id, or `pending-<key>` while it opens).
    pub fn path(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            bail!("{name:?} is not a session id");
        }
        Ok(dir.join(format!("{name}.json")))
    }

    /// Loads the wallet at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Wallet> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("no wallet for this session at {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a wallet", path.display()))
    }

    /// Writes the wallet to `path` (a new file renamed over the old).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        replace_file(path, serde_json::to_string_pretty(self)?.as_bytes())
    }
}

/// Writes `bytes` to a new file (mode 0600, synced) renamed over `path`: a crash leaves the old
/// file or the new, never half of one.
pub fn replace_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("a wallet path has a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    tally_service::identity::write_private_file(&tmp, bytes)?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
