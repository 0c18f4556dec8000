//! Two-party signed receipts on the node (SPEC R1–R6): parties and their tokens, warrants for
//! proxy signing, the receipt protocol with an optional fair exchange, the token's secure
//! write with acknowledgement and retry, the arbiter, and the receipt package. The formats,
//! the arbiter's rules and the receipt's machine ([`tally_proto::receipt::flow`]) are in
//! `tally_proto::receipt`; this module adds the keys, the rows and who may do what.
//!
//! * **Keys.** `DATA/receipt.key` (32 bytes, the same on every node of a database, checked
//!   like `delivery.key`) derives, by HKDF: the receipt server's Ed25519 key (its fingerprint
//!   is field 2 of every receipt), the node's BLS key for proxy signatures in fair exchange,
//!   the arbiter's key (it opens verifiably encrypted signatures), the arbiter's escrow key
//!   (it seals the node's non-verifiable escrow) and the tokens' master key.
//! * **The server certificate.** The node CA certifies the receipt server's key once, valid
//!   for the CA's life; the first node of a database stores it there and every node uses that
//!   one. Each complete receipt stores the certificate it was signed under and its package
//!   carries it, so a receipt verifies after restarts and whichever node serves it.
//! * **Parties.** A token issue (admin) certifies a holder's Ed25519 key (and BLS key) with
//!   the node CA, role `customer`, `merchant` or `manager`, and personalises the token with
//!   its application key. A party's name is the API-key owner it acts as.
//! * **Proxy signing.** Party A's signature is made by the node under a warrant A issued
//!   (an X.509 certificate signed by A's key for the node's key, naming B or any); without a
//!   valid unrevoked warrant naming B the node refuses. B may warrant the node too, and then
//!   the node signs both sides at once. Every proxy signature names its warrant.
//! * **Steps.** Every step is a step of the receipt's machine, committed with the receipt row
//!   under a guard on the state it was decided from (and on its warrants being unrevoked), so
//!   two nodes cannot take one step twice and a revocation that commits first wins.
//!
//! [`parties`] holds tokens, warrants and certificate checks; [`protocol`] the offer, escrow,
//! signature, acknowledgement and write retries; [`arbiter`] abort and resolve; [`package`]
//! the views and the package file; [`batch`] verifies B's BLS signatures and escrows of
//! concurrent requests together.

pub mod arbiter;
pub mod batch;
pub mod package;
pub mod parties;
pub mod protocol;
pub mod remote;
pub mod revocation;

use crate::access::corrupt;
use crate::core::Core;
use crate::identity::{Made, node_secret, setup};
use crate::{Result, ServiceError};
use tally_kernel::Secret;
use tally_kernel::crypto::bls::{ArbiterKey, ArbiterPublicKey, BlsSecretKey};
use tally_kernel::crypto::kdf::{hkdf_sha256, sha256};
use tally_kernel::crypto::warrant::{Counterparties, WarrantTerms};
use tally_kernel::crypto::{Certificate, SigningKey, VerifyingKey};
use tally_proto::receipt::PartySignature;
use tally_proto::receipt::ReceiptError;
use tally_proto::receipt::exchange::{Decision, DecisionKind, Refusal};
use tally_proto::receipt::flow::{Flow, FlowError};
use tally_store::receipts::{DecisionRow, ReceiptRow};

pub use tally_wire::receipts::*;

/// The roles a party may have.
pub use tally_proto::receipt::PARTY_ROLES;
use tally_proto::receipt::{SERVER_NAME, SERVER_ROLE};
/// Associated data of the node's non-verifiable escrow (followed by fields 1–7).
const ESCROW_AAD: &[u8] = b"tally/arbiter-escrow/v1\0";
/// Where the database keeps the receipt server certificate every node uses.
const SERVER_CERT_SETTING: &str = "receipt_server_certificate";
/// Seconds between two counted retries of one token write.
const RETRY_COUNT_S: i64 = 30;
/// Most remembered signature checks (the cache is emptied when full).
const CHECKED_MAX: usize = 100_000;

/// Why a receipt request was refused; nothing changed unless the text says so.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptServiceError {
    /// A receipt, a signature, a certificate or a package did not check.
    #[error(transparent)]
    Receipt(#[from] ReceiptError),
    /// No valid, unrevoked warrant lets the node sign for a party with the other.
    #[error("no warrant: {0}")]
    NoWarrant(String),
    /// A warrant was refused.
    #[error("warrant refused: {0}")]
    BadWarrant(String),
    /// The client's verifiable escrow does not verify.
    #[error("the escrow does not verify: {0}")]
    BadEscrow(String),
    /// The request does not fit the receipt's current step.
    #[error("{0}")]
    WrongState(String),
    /// The arbiter refused.
    #[error(transparent)]
    Arbiter(#[from] Refusal),
    /// The secure write request is unusable.
    #[error("secure write: {0}")]
    BadWrite(String),
}

impl From<FlowError> for ReceiptServiceError {
    fn from(e: FlowError) -> Self {
        match e {
            FlowError::WrongState(why) => ReceiptServiceError::WrongState(why),
            FlowError::Arbiter(r) => ReceiptServiceError::Arbiter(r),
        }
    }
}

pub(crate) fn rerr(e: impl Into<ReceiptServiceError>) -> ServiceError {
    ServiceError::Receipt(e.into())
}

pub(crate) fn wrong_state(why: impl Into<String>) -> ServiceError {
    rerr(ReceiptServiceError::WrongState(why.into()))
}

/// Signed receipts on this node: the receipt keys, all derived from `receipt.key`.
pub struct Receipts {
    core: Core,
    server: SigningKey,
    server_cert: Certificate,
    proxy_bls: BlsSecretKey,
    arbiter: ArbiterKey,
    escrow_key: Secret<[u8; 32]>,
    master: Secret<[u8; 32]>,
    /// Signature checks already passed, by SHA-256 of the certificate (and warrant) and CA
    /// bytes: a certificate's signature does not change, so only its validity window is
    /// checked again. A cache of pure checks, never of state (revocation is read each time).
    checked: std::sync::Mutex<std::collections::HashMap<[u8; 32], Option<WarrantTerms>>>,
    /// Seconds a fair exchange may stay offered without B's answer before the arbiter aborts
    /// it.
    exchange_timeout_s: i64,
    /// The arbiter node this receipt node asks (then it holds no arbiter secret it uses).
    arbiter_link: Option<std::sync::Arc<dyn remote::ArbiterLink>>,
    /// Set when this node is an arbiter node: the receipt node CA it trusts.
    arbiter_role: Option<remote::ArbiterRole>,
    /// B's BLS signatures and escrows, verified in batches across requests.
    batcher: std::sync::Arc<batch::Batcher>,
}

fn derive32(key: &[u8], what: &str) -> Result<Secret<[u8; 32]>> {
    let okm = hkdf_sha256(key, b"tally/receipt-keys/v1", what.as_bytes(), 32).map_err(setup)?;
    let mut out = [0u8; 32];
    out.copy_from_slice(okm.expose());
    Ok(Secret::new(out))
}

impl Receipts {
    /// Loads `receipt.key` (creating it on first start), checks it against the database and
    /// takes the receipt server certificate the database holds (the first node issues it).
    pub(crate) async fn load(
        core: Core,
        made: &mut Made,
        exchange_timeout_s: i64,
        arbiter_link: Option<std::sync::Arc<dyn remote::ArbiterLink>>,
        arbiter_role: Option<remote::ArbiterRole>,
    ) -> Result<Receipts> {
        let key = node_secret(
            core.files(),
            core.store(),
            "receipt.key",
            "receipt_key_id",
            made,
        )
        .await?;
        let k = key.expose();
        let server = SigningKey::from_seed(derive32(k, "server")?.expose());
        let ca = core.ca();
        // Valid for the CA's whole life, so every receipt the key signs verifies under it.
        let issued = ca
            .issue(
                SERVER_NAME,
                &server.verifying_key(),
                SERVER_ROLE,
                ca.certificate().not_before(),
                ca.certificate().not_after(),
                &[],
            )
            .map_err(setup)?;
        let stored = core
            .store()
            .setting_or_insert(SERVER_CERT_SETTING, issued.as_der())
            .await?;
        let server_cert = Certificate::from_der(&stored).map_err(corrupt)?;
        if server_cert.public_key().map_err(corrupt)? != server.verifying_key() {
            return Err(setup(
                "the database's receipt server certificate is for another receipt.key",
            ));
        }
        let arbiter = ArbiterKey::from_seed(derive32(k, "arbiter")?.expose());
        if arbiter_link
            .as_ref()
            .is_some_and(|l| l.key() == arbiter.public_key())
        {
            return Err(setup(
                "--arbiter names this node's own arbiter: fairness would rest on this node again",
            ));
        }
        Ok(Receipts {
            proxy_bls: BlsSecretKey::from_seed(derive32(k, "proxy-bls")?.expose()),
            arbiter,
            escrow_key: derive32(k, "arbiter-escrow")?,
            master: derive32(k, "token-master")?,
            checked: std::sync::Mutex::new(std::collections::HashMap::new()),
            exchange_timeout_s: exchange_timeout_s.max(1),
            arbiter_link,
            arbiter_role,
            batcher: std::sync::Arc::default(),
            core,
            server,
            server_cert,
        })
    }

    /// The receipt service's public keys and certificates.
    pub fn node_view(&self) -> ReceiptNodeView {
        let key = self.server.verifying_key();
        ReceiptNodeView {
            server_id: key.fingerprint(),
            server_key: key.to_hex(),
            server_certificate: self.server_cert.to_pem(),
            ca_certificate: self.core.ca().certificate().to_pem(),
            proxy_bls_key: self.proxy_bls.public_key().to_hex(),
            arbiter_key: self.arbiter_public().to_hex(),
        }
    }

    /// The key escrows are encrypted to: the arbiter node's, or this node's own arbiter's.
    pub(crate) fn arbiter_public(&self) -> ArbiterPublicKey {
        match &self.arbiter_link {
            Some(link) => link.key(),
            None => self.arbiter.public_key(),
        }
    }

    /// An arbiter node's key (only an arbiter node publishes its own: a receipt node's
    /// parties escrow to the key in `GET /v1/receipts/node`).
    pub fn arbiter_identity(&self) -> Result<ArbiterIdentity> {
        if self.arbiter_role.is_none() {
            return Err(ServiceError::Disabled(
                "this node is not an arbiter (tally serve --role arbiter)",
            ));
        }
        Ok(ArbiterIdentity {
            arbiter_key: self.arbiter.public_key().to_hex(),
        })
    }

    /// The receipt's machine: its row and, for a fair exchange, the arbiter's standing
    /// decision.
    pub(crate) async fn flow(&self, r: &ReceiptRow) -> Result<Flow> {
        let decision = if r.fair {
            match self.core.store().arbiter_decision(r.transaction_id).await? {
                Some(d) => decision_of(&d, r.version as u8)?,
                None => Decision::Open,
            }
        } else {
            Decision::Open
        };
        Ok(Flow {
            transaction: r.transaction_id as u64,
            fair: r.fair,
            state: r.state,
            decision,
            written: r.receipt_number.is_some(),
            acked: r.acked_at.is_some(),
            write_attempts: r.write_attempts,
            abort_at: Some(r.created_at.plus_seconds(self.exchange_timeout_s)),
        })
    }
}

fn random_id() -> Result<i64> {
    let mut b = [0u8; 8];
    crate::identity::getrandom_fill(&mut b)?;
    // Below 2^53 so that JSON readers keep every digit; never 0.
    Ok((u64::from_be_bytes(b) % ((1 << 53) - 1)) as i64 + 1)
}

fn fp_bytes(key: &VerifyingKey) -> [u8; 32] {
    sha256(&key.to_bytes())
}

fn counterparties_text(c: &Counterparties) -> String {
    match c {
        Counterparties::Any => "*".into(),
        Counterparties::Names(n) => n.join(","),
    }
}

/// The arbiter's stored decision.
pub(crate) fn decision_of(d: &DecisionRow, version: u8) -> Result<Decision> {
    decision_from(d.decision, &d.signature_a, &d.signature_b, version)
}

/// A stored decision from its kind and signatures.
pub(crate) fn decision_from(
    kind: DecisionKind,
    signature_a: &Option<Vec<u8>>,
    signature_b: &Option<Vec<u8>>,
    version: u8,
) -> Result<Decision> {
    let sig = |s: &Option<Vec<u8>>| -> Result<PartySignature> {
        let bytes = s
            .as_deref()
            .ok_or_else(|| setup("resolved decision without signatures"))?;
        PartySignature::from_slice(version, bytes).map_err(rerr)
    };
    Ok(match kind {
        DecisionKind::Aborted => Decision::Aborted,
        DecisionKind::Failed => Decision::Failed,
        DecisionKind::Resolved => Decision::Resolved {
            signature_a: sig(signature_a)?,
            signature_b: sig(signature_b)?,
        },
    })
}

/// A step refused by a guard: a warrant revoked meanwhile, or the receipt moved on.
pub(crate) fn revoked_meanwhile(e: ServiceError) -> ServiceError {
    match e {
        ServiceError::Conflict(tally_store::Conflict::Revoked(why)) => rerr(
            ReceiptServiceError::NoWarrant(format!("{why}; nothing was signed")),
        ),
        ServiceError::Conflict(_) => wrong_state("the receipt moved on meanwhile; fetch it again"),
        other => other,
    }
}
