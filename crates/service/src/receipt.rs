//! Two-party signed receipts on the node (SPEC R1–R6): parties and their tokens, warrants for
//! proxy signing, the receipt protocol with an optional fair exchange, the token's secure
//! write with acknowledgement and retry, the arbiter, and the receipt package. The formats
//! and the arbiter's rules are `tally_proto::receipt`; this module adds the keys, the rows
//! and who may do what.
//!
//! * **Keys.** `DATA/receipt.key` (32 bytes, the same on every node of a database, checked
//!   like `delivery.key`) derives, by HKDF: the receipt server's Ed25519 key (its fingerprint
//!   is field 2 of every receipt, and a node CA certificate with role `node` vouches for it),
//!   the node's BLS key for proxy signatures in fair exchange, the arbiter's key (it opens
//!   verifiably encrypted signatures), the arbiter's escrow key (it seals the node's
//!   non-verifiable escrow) and the tokens' master key.
//! * **Parties.** A token issue (admin) certifies a holder's Ed25519 key (and BLS key) with
//!   the node CA, role `customer`, `merchant` or `manager`, and personalises the token with
//!   its application key. A party's name is the API-key owner it acts as.
//! * **Proxy signing.** Party A's signature is made by the node under a warrant A issued
//!   (an X.509 certificate signed by A's key for the node's key, naming B or any); without a
//!   valid unrevoked warrant naming B the node refuses. B may warrant the node too, and then
//!   the node signs both sides at once. Every proxy signature names its warrant.
//! * **Steps.** `offered` → (fair: `escrowed` after B's verifiable escrow) → `signed` (B's
//!   signature verified, A's and the server's made, the secure write sealed) → `acked`. Fair
//!   exchanges may end `aborted` or `resolved` by the arbiter. Each step is a state move
//!   under a guard, journaled.

use crate::delivery::invalid;
use crate::node::{check_name, getrandom_fill, namespaced, require_admin, setup};
use crate::{Node, Principal, Result, ServiceError};
use serde::{Deserialize, Serialize};
use tally_kernel::crypto::bls::{
    ArbiterKey, BlsPublicKey, BlsSecretKey, EncryptedSignature, verify_encrypted,
};
use tally_kernel::crypto::kdf::{hkdf_sha256, sha256};
use tally_kernel::crypto::warrant::{self as kwarrant, Counterparties, WarrantTerms};
use tally_kernel::crypto::{Certificate, SigningKey, VerifyingKey, seal};
use tally_kernel::{Secret, Timestamp};
use tally_ledger::Command;
use tally_proto::receipt::exchange::{self, Answer, Decision, Refusal, Request};
use tally_proto::receipt::token::{self as ptoken, CHALLENGE_LEN, SERIAL_LEN, WriteContent};
use tally_proto::receipt::{
    self as proto, Fields, JournalProof, Package, PartyKey, PartySignature, Receipt, ReceiptError,
    VERSION_BLS, VERSION_ED25519,
};
use tally_store::receipts::{
    DecisionRow, PartyRow, ReceiptRow, TokenRow, WarrantRow, insert_decision, insert_receipt,
    insert_warrant, issue_token, revoke_warrant, step_receipt, warrant_unrevoked,
};
use tally_store::{Attachment, StoreError};

/// The roles a party may have.
pub const PARTY_ROLES: [&str; 3] = ["customer", "merchant", "manager"];
/// Associated data of the node's non-verifiable escrow (followed by fields 1–7).
const ESCROW_AAD: &[u8] = b"tally/arbiter-escrow/v1\0";
/// The receipt server certificate's common name.
const SERVER_NAME: &str = "Tally receipt server";

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

fn rerr(e: impl Into<ReceiptServiceError>) -> ServiceError {
    ServiceError::Receipt(e.into())
}

fn wrong_state(why: impl Into<String>) -> ServiceError {
    rerr(ReceiptServiceError::WrongState(why.into()))
}

/// The node's receipt keys, all derived from `receipt.key`.
pub(crate) struct ReceiptState {
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
}

/// Seconds between two counted retries of one token write.
const RETRY_COUNT_S: i64 = 30;

/// Most remembered signature checks (the cache is emptied when full).
const CHECKED_MAX: usize = 100_000;

fn derive32(key: &[u8], what: &str) -> Result<Secret<[u8; 32]>> {
    let okm = hkdf_sha256(key, b"tally/receipt-keys/v1", what.as_bytes(), 32).map_err(setup)?;
    let mut out = [0u8; 32];
    out.copy_from_slice(okm.expose());
    Ok(Secret::new(out))
}

impl ReceiptState {
    /// Loads `receipt.key` (creating it on first start), checks it against the database and
    /// certifies the receipt server's key with the node CA.
    pub(crate) async fn load(
        files: &crate::NodeFiles,
        store: &tally_store::Store,
        ca: &tally_kernel::crypto::CertificateAuthority,
        now: Timestamp,
    ) -> Result<ReceiptState> {
        let key =
            crate::node::load_node_secret(files, store, "receipt.key", "receipt_key_id").await?;
        let k = key.expose();
        let server = SigningKey::from_seed(derive32(k, "server")?.expose());
        let proxy_bls = BlsSecretKey::from_seed(derive32(k, "proxy-bls")?.expose());
        let arbiter = ArbiterKey::from_seed(derive32(k, "arbiter")?.expose());
        let not_after = ca.certificate().not_after();
        let not_before = now.max(ca.certificate().not_before());
        let server_cert = ca
            .issue(
                SERVER_NAME,
                &server.verifying_key(),
                "node",
                not_before,
                not_after,
                &[],
            )
            .map_err(setup)?;
        Ok(ReceiptState {
            server,
            server_cert,
            proxy_bls,
            arbiter,
            escrow_key: derive32(k, "arbiter-escrow")?,
            master: derive32(k, "token-master")?,
            checked: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }
}

// ----- views and requests ------------------------------------------------------------------

/// What a client needs to know about the node's receipt service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceiptNodeView {
    /// Field 2 of every receipt: hex SHA-256 of the server key.
    pub server_id: String,
    /// The receipt server's Ed25519 key, hex.
    pub server_key: String,
    /// Its certificate from the node CA, PEM.
    pub server_certificate: String,
    /// The node CA's certificate, PEM (the trust anchor of `tally receipt verify`).
    pub ca_certificate: String,
    /// The node's BLS key for proxy signatures in fair exchange (put it in warrants), hex.
    pub proxy_bls_key: String,
    /// The arbiter's public key (verifiable escrows are encrypted to it), hex.
    pub arbiter_key: String,
}

/// A token issue as requested (admin).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewToken {
    /// The holder's name (a party; the API-key owner it acts as).
    pub holder: String,
    /// `customer`, `merchant` or `manager`.
    pub role: String,
    /// The holder's Ed25519 public key, hex.
    pub public_key: String,
    /// The holder's BLS public key for fair exchange, hex.
    pub bls_key: Option<String>,
    /// Number of receipt slots (1..=1024, default 16).
    pub slots: Option<u16>,
    /// Certificate validity in days (default 365).
    pub days: Option<u32>,
}

/// An issued token: everything to personalise it. `app_key` is secret (and left out of
/// `Debug`).
#[derive(Clone, Serialize, Deserialize)]
pub struct IssuedToken {
    /// Hex serial.
    pub serial: String,
    /// Holder.
    pub holder: String,
    /// Slots.
    pub slots: i64,
    /// The token's application key, hex (derived from the master key and the serial).
    pub app_key: String,
    /// The holder's certificate, PEM.
    pub certificate: String,
    /// Issued.
    pub created_at: Timestamp,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("serial", &self.serial)
            .field("holder", &self.holder)
            .field("slots", &self.slots)
            .field("app_key", &"<secret>")
            .finish_non_exhaustive()
    }
}

/// A token as listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenView {
    /// Hex serial.
    pub serial: String,
    /// Holder.
    pub holder: String,
    /// Slots.
    pub slots: i64,
    /// Signed receipts written to it and not acknowledged yet.
    pub unacked: usize,
    /// Issued.
    pub created_at: Timestamp,
}

/// A warrant as listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WarrantView {
    /// Certificate serial, hex.
    pub serial: String,
    /// Who signed it.
    pub issuer: String,
    /// `*` (any) or the names.
    pub counterparties: String,
    /// Valid from.
    pub not_before: Timestamp,
    /// Valid until.
    pub not_after: Timestamp,
    /// Revoked at.
    pub revoked_at: Option<Timestamp>,
    /// The warrant, PEM.
    pub certificate: String,
}

/// A receipt offer as requested.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewReceipt {
    /// The record: plain text, shown to the signer as it is.
    pub record: String,
    /// Party A (the node signs for it under its warrant).
    pub party_a: String,
    /// Party B (the client who signs).
    pub party_b: String,
    /// Fair exchange through the arbiter (BLS signatures, version 2).
    #[serde(default)]
    pub fair: bool,
    /// B has warranted the node too: sign both sides now.
    #[serde(default)]
    pub proxy_b: bool,
}

/// A receipt at any step, as its parties see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceiptView {
    /// Transaction id (field 3).
    pub transaction: u64,
    /// Version (1 Ed25519, 2 BLS).
    pub version: u8,
    /// Field 2, hex.
    pub server_id: String,
    /// Field 4, seconds since the epoch.
    pub time: i64,
    /// Field 5, hex.
    pub content_hash: String,
    /// Party A's name.
    pub party_a: String,
    /// Party B's name.
    pub party_b: String,
    /// Field 6, hex.
    pub party_a_fingerprint: String,
    /// Field 7, hex.
    pub party_b_fingerprint: String,
    /// The record.
    pub record: String,
    /// Fair exchange.
    pub fair: bool,
    /// `offered`, `escrowed`, `signed`, `acked`, `aborted` or `resolved`.
    pub state: String,
    /// Warrant of A's proxy signature.
    pub warrant_a: Option<String>,
    /// Warrant of B's proxy signature.
    pub warrant_b: Option<String>,
    /// The node's non-verifiable escrow of A's signature, hex (fair exchange).
    pub escrow_a: Option<String>,
    /// A's signature over fields 1–7, hex, once released to B (after B's escrow in a fair
    /// exchange, with the complete receipt otherwise).
    pub signature_a: Option<String>,
    /// B's signature, hex, once received.
    pub signature_b: Option<String>,
    /// The server's signature over fields 1–5, hex, once complete.
    pub signature_server: Option<String>,
    /// The complete core, hex (once signed).
    pub core: Option<String>,
    /// Hex SHA-256 of the core.
    pub digest: Option<String>,
    /// The receipt number to ack (once written).
    pub receipt_number: Option<u64>,
    /// The sealed secure write, hex (until acked).
    pub write: Option<String>,
    /// How often the write was sent (the first time and counted retries).
    pub write_attempts: i64,
    /// When the write was acked.
    pub acked_at: Option<Timestamp>,
}

/// B's token write request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteRequest {
    /// Token serial, hex.
    pub serial: String,
    /// The token's fresh challenge, hex (32 bytes).
    pub challenge: String,
    /// The slot the token reserved.
    pub slot: u16,
}

/// B's signature (and token write request).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignReceipt {
    /// B's signature over fields 1–7, hex.
    pub signature_b: String,
    /// Where to write the short receipt.
    pub token: Option<WriteRequest>,
}

/// What the arbiter answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArbiterView {
    /// The transaction.
    pub transaction: u64,
    /// `aborted`, `resolved` or `failed`.
    pub decision: String,
    /// The other party's signature, hex, when the decision gives one.
    pub signature: Option<String>,
    /// The receipt after the decision.
    pub receipt: ReceiptView,
}

fn parse_hex<const N: usize>(field: &'static str, text: &str) -> Result<[u8; N]> {
    let bytes = hex::decode(text.trim()).map_err(|_| invalid(field, "not hex"))?;
    bytes
        .try_into()
        .map_err(|_| invalid(field, format!("must be {N} bytes")))
}

fn random_id() -> Result<i64> {
    let mut b = [0u8; 8];
    getrandom_fill(&mut b)?;
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

impl Node {
    fn receipts(&self) -> &ReceiptState {
        &self.inner.receipts
    }

    /// The receipt service's public keys and certificates.
    pub fn receipt_node(&self) -> ReceiptNodeView {
        let r = self.receipts();
        let key = r.server.verifying_key();
        ReceiptNodeView {
            server_id: key.fingerprint(),
            server_key: key.to_hex(),
            server_certificate: r.server_cert.to_pem(),
            ca_certificate: self.inner.ca.certificate().to_pem(),
            proxy_bls_key: r.proxy_bls.public_key().to_hex(),
            arbiter_key: r.arbiter.public_key().to_hex(),
        }
    }

    // ----- tokens and parties --------------------------------------------------------------

    /// Issues a token to a holder (admin): certifies the holder's keys with the node CA and
    /// returns the token's application key. A retry with the same idempotency key answers the
    /// same token (the application key is re-derived, never stored).
    pub async fn token_issue(
        &self,
        by: &Principal,
        idempotency_key: &str,
        req: NewToken,
    ) -> Result<(IssuedToken, bool)> {
        require_admin(by)?;
        check_name("holder", &req.holder)?;
        if !PARTY_ROLES.contains(&req.role.as_str()) {
            return Err(invalid("role", "must be customer, merchant or manager"));
        }
        let key = namespaced(by, idempotency_key)?;
        if let Some(t) = self.inner.store.receipt_token_by_key(&key).await? {
            return Ok((self.issued(&t).await?, true));
        }
        let public = VerifyingKey::from_hex(req.public_key.trim())
            .map_err(|e| invalid("public_key", e.to_string()))?;
        let bls = match &req.bls_key {
            Some(hex) => Some(
                BlsPublicKey::from_hex(hex.trim())
                    .map_err(|e| invalid("bls_key", e.to_string()))?,
            ),
            None => None,
        };
        let slots = req.slots.unwrap_or(16);
        if slots == 0 || slots > ptoken::SLOTS_MAX {
            return Err(invalid("slots", "must be 1..=1024"));
        }
        let mut serial = [0u8; SERIAL_LEN];
        getrandom_fill(&mut serial)?;
        let now = self.now();
        let days = i64::from(req.days.unwrap_or(365).clamp(1, 3650));
        let not_after = now
            .plus_seconds(days * 86_400)
            .min(self.inner.ca.certificate().not_after());
        let ext = match &bls {
            Some(b) => Some(kwarrant::bls_key_extension(&b.to_bytes()).map_err(setup)?),
            None => None,
        };
        let extra: Vec<(&str, &[u8], bool)> = ext
            .as_deref()
            .map(|e| vec![(kwarrant::OID_BLS_KEY, e, false)])
            .unwrap_or_default();
        let cert = self
            .inner
            .ca
            .issue(
                &req.holder,
                &public,
                &req.role,
                now.max(self.inner.ca.certificate().not_before()),
                not_after,
                &extra,
            )
            .map_err(|e| invalid("certificate", e.to_string()))?;
        let token = TokenRow {
            serial: hex::encode(serial),
            holder: req.holder.clone(),
            slots: i64::from(slots),
            client_key: Some(key.clone()),
            created_at: now,
        };
        let party = PartyRow {
            name: req.holder.clone(),
            role: req.role.clone(),
            certificate: cert.to_der(),
            fingerprint: public.fingerprint(),
            bls_key: bls.map(|b| b.to_bytes().to_vec()),
            token_serial: Some(token.serial.clone()),
            created_at: now,
        };
        let outcome = self
            .execute(
                key.clone(),
                Command::Record {
                    kind: "receipt_token_issued".into(),
                    data: serde_json::json!({
                        "serial": token.serial, "holder": req.holder, "role": req.role,
                        "slots": slots, "fingerprint": party.fingerprint,
                        "certificate_serial": cert.serial_hex(),
                    }),
                },
                issue_token(&token, &party).into(),
            )
            .await?;
        let token = if outcome.replayed {
            self.inner
                .store
                .receipt_token_by_key(&key)
                .await?
                .ok_or(ServiceError::IdempotencyKeyReused)?
        } else {
            token
        };
        Ok((self.issued(&token).await?, outcome.replayed))
    }

    async fn issued(&self, t: &TokenRow) -> Result<IssuedToken> {
        let serial: [u8; SERIAL_LEN] = parse_hex("serial", &t.serial)?;
        let party = self.party(&t.holder).await?;
        if party.token_serial.as_deref() != Some(t.serial.as_str()) {
            return Err(wrong_state(
                "the holder has been issued a newer token; this one's certificate is replaced",
            ));
        }
        let cert = Certificate::from_der(&party.certificate).map_err(setup)?;
        Ok(IssuedToken {
            serial: t.serial.clone(),
            holder: t.holder.clone(),
            slots: t.slots,
            app_key: hex::encode(self.app_key(&serial).expose()),
            certificate: cert.to_pem(),
            created_at: t.created_at,
        })
    }

    fn app_key(&self, serial: &[u8; SERIAL_LEN]) -> Secret<[u8; 32]> {
        ptoken::application_key(self.receipts().master.expose(), serial)
    }

    /// Tokens issued: all (admin) or the caller's.
    pub async fn tokens(&self, by: &Principal) -> Result<Vec<TokenView>> {
        let holder = (!by.is_admin()).then_some(by.owner.as_str());
        let mut out = Vec::new();
        for t in self.inner.store.receipt_tokens(holder).await? {
            let unacked = self.inner.store.unacked_writes(&t.serial).await?.len();
            out.push(TokenView {
                serial: t.serial,
                holder: t.holder,
                slots: t.slots,
                unacked,
                created_at: t.created_at,
            });
        }
        Ok(out)
    }

    async fn party(&self, name: &str) -> Result<PartyRow> {
        self.inner
            .store
            .receipt_party(name)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: "party",
                id: name.to_string(),
            })
    }

    /// A party's certificate, checked against the node CA now (block 303).
    fn party_cert(&self, p: &PartyRow, who: &'static str) -> Result<Certificate> {
        let bad = |why: String| rerr(ReceiptError::BadCertificate { who, why });
        let cert = Certificate::from_der(&p.certificate).map_err(|e| bad(e.to_string()))?;
        self.cert_checked(&cert, self.now()).map_err(|e| {
            bad(format!(
                "{} cannot be traced to this node's CA now: {e}",
                p.name
            ))
        })?;
        Ok(cert)
    }

    // ----- warrants ------------------------------------------------------------------------

    /// Stores a warrant (PEM) a party signed for the node's receipt key. The caller must be
    /// its issuer (or the operator).
    pub async fn warrant_add(&self, by: &Principal, pem: &str) -> Result<WarrantView> {
        let bad = |why: String| rerr(ReceiptServiceError::BadWarrant(why));
        let w =
            Certificate::from_pem(pem).map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
        let issuer = w
            .issuer_common_name()
            .ok_or_else(|| bad("names no issuer".into()))?;
        if !by.is_admin() && by.owner != issuer {
            return Err(ServiceError::Forbidden(
                "a warrant is stored by the party that signed it",
            ));
        }
        let party = self.party(&issuer).await?;
        let party_cert = self.party_cert(&party, "the warrant's issuer")?;
        let terms =
            kwarrant::check_warrant(&w, &party_cert, self.inner.ca.certificate(), self.now())
                .map_err(|e| bad(e.to_string()))?;
        let subject = w.public_key().map_err(|e| bad(e.to_string()))?;
        if subject != self.receipts().server.verifying_key() {
            return Err(bad(
                "it is for another key than this node's receipt server key".into(),
            ));
        }
        if let Some(b) = terms.bls_key
            && b != self.receipts().proxy_bls.public_key().to_bytes()
        {
            return Err(bad("its BLS key is not this node's proxy BLS key".into()));
        }
        let row = WarrantRow {
            serial: w.serial_hex(),
            issuer: issuer.clone(),
            certificate: w.to_der(),
            counterparties: counterparties_text(&terms.counterparties),
            not_before: w.not_before(),
            not_after: w.not_after(),
            revoked_at: None,
            created_at: self.now(),
        };
        if let Some(existing) = self.inner.store.warrant(&row.serial).await? {
            // The issuer picks the serial: only the very same warrant is a retry.
            if existing.certificate != row.certificate {
                return Err(bad(format!(
                    "another warrant with serial {} is already stored; issue it again",
                    row.serial
                )));
            }
            return Ok(warrant_view(&existing));
        }
        self.execute(
            format!(":warrant:{}", row.serial),
            Command::Record {
                kind: "warrant_added".into(),
                data: serde_json::json!({
                    "serial": row.serial, "issuer": issuer,
                    "counterparties": row.counterparties,
                    "not_before": row.not_before, "not_after": row.not_after,
                }),
            },
            vec![insert_warrant(&row)],
        )
        .await?;
        Ok(warrant_view(&row))
    }

    /// Revokes a warrant (its issuer or the operator). Proxy signatures made before stay.
    pub async fn warrant_revoke(&self, by: &Principal, serial: &str) -> Result<WarrantView> {
        let serial = serial.trim().to_ascii_lowercase();
        let w = self
            .inner
            .store
            .warrant(&serial)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: "warrant",
                id: serial.clone(),
            })?;
        if !by.is_admin() && by.owner != w.issuer {
            return Err(ServiceError::Forbidden("only its issuer revokes a warrant"));
        }
        if w.revoked_at.is_some() {
            return Ok(warrant_view(&w));
        }
        let now = self.now();
        let result = self
            .execute(
                format!(":warrant:{serial}:revoked"),
                Command::Record {
                    kind: "warrant_revoked".into(),
                    data: serde_json::json!({ "serial": serial, "by": by.owner }),
                },
                revoke_warrant(&serial, now).into(),
            )
            .await;
        match result {
            Ok(_) | Err(ServiceError::Store(StoreError::Conflict(_))) => {}
            Err(e) => return Err(e),
        }
        let w = self
            .inner
            .store
            .warrant(&serial)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: "warrant",
                id: serial.clone(),
            })?;
        Ok(warrant_view(&w))
    }

    /// Warrants: all (admin) or the caller's.
    pub async fn warrants(&self, by: &Principal) -> Result<Vec<WarrantView>> {
        let issuer = (!by.is_admin()).then_some(by.owner.as_str());
        Ok(self
            .inner
            .store
            .warrants(issuer)
            .await?
            .iter()
            .map(warrant_view)
            .collect())
    }

    fn remembered(&self, key: &[u8; 32]) -> Option<Option<WarrantTerms>> {
        let map = self
            .receipts()
            .checked
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.get(key).cloned()
    }

    fn remember(&self, key: [u8; 32], terms: Option<WarrantTerms>) {
        let mut map = self
            .receipts()
            .checked
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if map.len() >= CHECKED_MAX {
            map.clear();
        }
        map.insert(key, terms);
    }

    /// `verify_issued_by` against the node CA, with the signature check remembered.
    fn cert_checked(
        &self,
        cert: &Certificate,
        now: Timestamp,
    ) -> std::result::Result<(), tally_kernel::crypto::CryptoError> {
        let ca = self.inner.ca.certificate();
        let key = sha256(&[cert.as_der(), ca.as_der()].concat());
        let in_window = |c: &Certificate| c.not_before() <= now && now <= c.not_after();
        if self.remembered(&key).is_some() && in_window(cert) && in_window(ca) {
            return Ok(());
        }
        cert.verify_issued_by(ca, now)?;
        self.remember(key, None);
        Ok(())
    }

    /// `proto::check_proxy` with the signature checks remembered: a remembered warrant is
    /// checked again for its validity window, its issuer's and its counterparties.
    fn proxy_checked(
        &self,
        who: &'static str,
        warrant_der: &[u8],
        party_cert: &Certificate,
        counterparty: &str,
        now: Timestamp,
    ) -> std::result::Result<WarrantTerms, ReceiptError> {
        let ca = self.inner.ca.certificate();
        let key = sha256(&[warrant_der, b"\0", party_cert.as_der(), ca.as_der()].concat());
        if let Some(Some(terms)) = self.remembered(&key)
            && let Ok(w) = Certificate::from_der(warrant_der)
        {
            let in_window = |c: &Certificate| c.not_before() <= now && now <= c.not_after();
            if in_window(&w) && in_window(party_cert) && in_window(ca) && terms.allows(counterparty)
            {
                return Ok(terms);
            }
        }
        let (_, terms) = proto::check_proxy(who, warrant_der, party_cert, counterparty, ca, now)?;
        self.remember(key, Some(terms.clone()));
        Ok(terms)
    }

    /// The newest valid, unrevoked warrant of `party` naming `counterparty` (with the node's
    /// proxy BLS key when `bls`), checked now.
    async fn find_warrant(
        &self,
        who: &'static str,
        party: &PartyRow,
        party_cert: &Certificate,
        counterparty: &str,
        bls: bool,
    ) -> Result<WarrantRow> {
        let now = self.now();
        let mut last_reason = None;
        for w in self.inner.store.warrants(Some(&party.name)).await? {
            if w.revoked_at.is_some() {
                last_reason = Some(format!("warrant {} is revoked", w.serial));
                continue;
            }
            match self.proxy_checked(who, &w.certificate, party_cert, counterparty, now) {
                Ok(terms) if bls && terms.bls_key.is_none() => {
                    last_reason = Some(format!(
                        "warrant {} carries no BLS key, needed for a fair exchange",
                        w.serial
                    ));
                }
                Ok(_) => return Ok(w),
                Err(e) => last_reason = Some(e.to_string()),
            }
        }
        Err(rerr(ReceiptServiceError::NoWarrant(format!(
            "{} has not warranted this node to sign with {counterparty}{}",
            party.name,
            last_reason.map(|r| format!(" ({r})")).unwrap_or_default()
        ))))
    }

    // ----- the receipt protocol ------------------------------------------------------------

    /// Offers a record for signing (blocks 301–303): both parties must trace to the node CA and
    /// A must have warranted the node to sign with B. For a fair exchange the node signs for A
    /// now and keeps the signature back, sending only an escrow of it. With `proxy_b` the node
    /// signs for both under their warrants and the receipt is complete at once.
    pub async fn receipt_offer(
        &self,
        by: &Principal,
        idempotency_key: &str,
        req: NewReceipt,
    ) -> Result<(ReceiptView, bool)> {
        proto::check_record(&req.record).map_err(rerr)?;
        check_name("party_a", &req.party_a)?;
        check_name("party_b", &req.party_b)?;
        if req.party_a == req.party_b {
            return Err(invalid("party_b", "must differ from party_a"));
        }
        // The originator instructs the node to sign for A: only A itself (or the operator).
        if !by.is_admin() && by.owner != req.party_a {
            return Err(ServiceError::Forbidden(
                "only party A (or the operator) offers a receipt for A",
            ));
        }
        let key = namespaced(by, idempotency_key)?;
        if let Some(r) = self.inner.store.receipt_by_key(&key).await? {
            // A retry of a proxy_b offer whose completion did not happen finishes it now.
            if r.state == "offered" && r.warrant_b.is_some() {
                let fields = self.fields(&r)?;
                let sig_b = self.proxy_sign(&fields)?;
                let done = self
                    .complete(r, &fields, sig_b, None, "offered", "signed")
                    .await?;
                return Ok((self.receipt_view(&done), true));
            }
            return Ok((self.receipt_view(&r), true));
        }
        let a = self.party(&req.party_a).await?;
        let b = self.party(&req.party_b).await?;
        let cert_a = self.party_cert(&a, "party A")?;
        let cert_b = self.party_cert(&b, "party B")?;
        let version = if req.fair {
            VERSION_BLS
        } else {
            VERSION_ED25519
        };
        if req.fair && b.bls_key.is_none() {
            return Err(rerr(ReceiptError::BadCertificate {
                who: "party B",
                why: format!(
                    "{} has no certified BLS key, needed for a fair exchange",
                    b.name
                ),
            }));
        }
        if req.fair && req.proxy_b {
            return Err(invalid(
                "proxy_b",
                "a fair exchange needs B's own signature",
            ));
        }
        let warrant_a = self
            .find_warrant("party A", &a, &cert_a, &b.name, req.fair)
            .await?;
        let warrant_b = if req.proxy_b {
            Some(
                self.find_warrant("party B", &b, &cert_b, &a.name, false)
                    .await?,
            )
        } else {
            None
        };
        let now = self.now();
        let fields = Fields {
            version,
            server_id: fp_bytes(&self.receipts().server.verifying_key()),
            transaction: random_id()? as u64,
            time: now.as_micros().div_euclid(1_000_000),
            content_hash: proto::content_hash(&req.record),
            party_a: fp_bytes(&cert_a.public_key().map_err(setup)?),
            party_b: fp_bytes(&cert_b.public_key().map_err(setup)?),
        };
        let mut row = ReceiptRow {
            transaction_id: fields.transaction as i64,
            party_a: a.name.clone(),
            party_b: b.name.clone(),
            created_by: by.owner.clone(),
            version: i64::from(version),
            time: fields.time,
            record: req.record.clone(),
            content_hash: fields.content_hash.to_vec(),
            fingerprint_a: fields.party_a.to_vec(),
            fingerprint_b: fields.party_b.to_vec(),
            certificate_a: cert_a.to_der(),
            certificate_b: cert_b.to_der(),
            fair: req.fair,
            warrant_a: Some(warrant_a.serial.clone()),
            warrant_b: warrant_b.as_ref().map(|w| w.serial.clone()),
            escrow_a: None,
            state: "offered".into(),
            signature_a: None,
            signature_b: None,
            signature_server: None,
            ves_b: None,
            token_serial: None,
            challenge: None,
            slot: None,
            receipt_number: None,
            write: None,
            write_attempts: 0,
            digest: None,
            journal_key: None,
            acked_at: None,
            client_key: Some(key.clone()),
            created_at: now,
            updated_at: now,
        };
        if req.fair {
            // Block 303: the node signs for X now and escrows it for the arbiter only.
            let sig_a = self
                .receipts()
                .proxy_bls
                .sign(proto::PARTY_DOMAIN, &fields.party_part());
            let aad = [ESCROW_AAD, &fields.party_part()].concat();
            row.escrow_a = Some(
                seal::seal(self.receipts().escrow_key.expose(), &aad, &sig_a.to_bytes())
                    .map_err(setup)?,
            );
            row.signature_a = Some(sig_a.to_bytes().to_vec());
        }
        let mut attachments = vec![insert_receipt(&row), warrant_unrevoked(&warrant_a.serial)];
        if let Some(w) = &warrant_b {
            attachments.push(warrant_unrevoked(&w.serial));
        }
        let outcome = self
            .execute(
                key.clone(),
                Command::Record {
                    kind: "receipt_offered".into(),
                    data: serde_json::json!({
                        "transaction": fields.transaction, "party_a": a.name, "party_b": b.name,
                        "content_hash": hex::encode(fields.content_hash), "fair": req.fair,
                        "warrant_a": warrant_a.serial,
                    }),
                },
                attachments,
            )
            .await
            .map_err(revoked_meanwhile)?;
        let row = if outcome.replayed {
            self.inner
                .store
                .receipt_by_key(&key)
                .await?
                .ok_or(ServiceError::IdempotencyKeyReused)?
        } else {
            row
        };
        if req.proxy_b && row.state == "offered" {
            let sig_b = self.proxy_sign(&fields)?;
            let done = self
                .complete(row, &fields, sig_b, None, "offered", "signed")
                .await?;
            return Ok((self.receipt_view(&done), outcome.replayed));
        }
        Ok((self.receipt_view(&row), outcome.replayed))
    }

    fn proxy_sign(&self, fields: &Fields) -> Result<PartySignature> {
        let msg = fields.party_part();
        Ok(if fields.version == VERSION_BLS {
            PartySignature::Bls(self.receipts().proxy_bls.sign(proto::PARTY_DOMAIN, &msg))
        } else {
            PartySignature::Ed25519(self.receipts().server.sign(proto::PARTY_DOMAIN, &msg))
        })
    }

    /// The fields of a stored receipt (the fingerprints are the ones of the offer).
    fn fields(&self, r: &ReceiptRow) -> Result<Fields> {
        let b32 = |v: &[u8]| -> Result<[u8; 32]> {
            v.try_into()
                .map_err(|_| setup("a stored hash is not 32 bytes"))
        };
        Ok(Fields {
            version: r.version as u8,
            server_id: fp_bytes(&self.receipts().server.verifying_key()),
            transaction: r.transaction_id as u64,
            time: r.time,
            content_hash: b32(&r.content_hash)?,
            party_a: b32(&r.fingerprint_a)?,
            party_b: b32(&r.fingerprint_b)?,
        })
    }

    /// Both parties' certificates as the offer fixed them, checked against the CA at the
    /// receipt's time: a certificate that expires or is re-issued later does not strand an
    /// exchange half way.
    fn parties_of(&self, r: &ReceiptRow) -> Result<(Certificate, Certificate)> {
        let at = Timestamp(r.time.saturating_mul(1_000_000));
        let check = |der: &[u8], who: &'static str| -> Result<Certificate> {
            let bad = |why: String| rerr(ReceiptError::BadCertificate { who, why });
            let cert = Certificate::from_der(der).map_err(|e| bad(e.to_string()))?;
            self.cert_checked(&cert, at).map_err(|e| {
                bad(format!(
                    "not valid from this node's CA at the receipt's time: {e}"
                ))
            })?;
            Ok(cert)
        };
        Ok((
            check(&r.certificate_a, "party A")?,
            check(&r.certificate_b, "party B")?,
        ))
    }

    async fn receipt_row(&self, transaction: u64) -> Result<ReceiptRow> {
        let t = i64::try_from(transaction).map_err(|_| invalid("transaction", "out of range"))?;
        self.inner
            .store
            .receipt(t)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: "receipt",
                id: transaction.to_string(),
            })
    }

    /// A receipt the caller is a party to (or offered, or the operator).
    pub async fn receipt(&self, by: &Principal, transaction: u64) -> Result<ReceiptView> {
        let r = self.receipt_row(transaction).await?;
        self.may_see(by, &r)?;
        Ok(self.receipt_view(&r))
    }

    fn may_see(&self, by: &Principal, r: &ReceiptRow) -> Result<()> {
        if by.is_admin() || [&r.party_a, &r.party_b, &r.created_by].contains(&&by.owner) {
            Ok(())
        } else {
            Err(ServiceError::NotFound {
                what: "receipt",
                id: r.transaction_id.to_string(),
            })
        }
    }

    fn require_b(&self, by: &Principal, r: &ReceiptRow) -> Result<()> {
        self.may_see(by, r)?;
        if by.owner != r.party_b {
            return Err(ServiceError::Forbidden(
                "only party B signs, escrows and acks",
            ));
        }
        Ok(())
    }

    /// Receipts the caller is in (all for the operator), newest first.
    pub async fn receipt_list(&self, by: &Principal) -> Result<Vec<ReceiptView>> {
        let party = (!by.is_admin()).then_some(by.owner.as_str());
        Ok(self
            .inner
            .store
            .receipts(party, 1000)
            .await?
            .iter()
            .map(|r| self.receipt_view(r))
            .collect())
    }

    /// Block 305–308: B's verifiably encrypted signature. If it verifies under B's certified
    /// BLS key and the arbiter's key, the node releases A's signature; if not, the node asks
    /// the arbiter to abort (block 307) and the exchange is over.
    pub async fn receipt_escrow(
        &self,
        by: &Principal,
        transaction: u64,
        ves_hex: &str,
    ) -> Result<ReceiptView> {
        let r = self.receipt_row(transaction).await?;
        self.require_b(by, &r)?;
        if !r.fair {
            return Err(wrong_state(
                "this receipt is not a fair exchange; sign it directly",
            ));
        }
        if r.state == "escrowed"
            && r.ves_b.as_deref().map(hex::encode) == Some(ves_hex.trim().to_ascii_lowercase())
        {
            return Ok(self.receipt_view(&r));
        }
        self.check_open_exchange(&r).await?;
        if r.state != "offered" {
            return Err(wrong_state(format!(
                "the receipt is {}, not offered",
                r.state
            )));
        }
        let (_, cert_b) = self.parties_of(&r)?;
        let fields = self.fields(&r)?;
        let verdict = EncryptedSignature::from_hex(ves_hex.trim())
            .map_err(|e| e.to_string())
            .and_then(|ves| {
                let key = b_bls_key(&cert_b).map_err(|e| e.to_string())?;
                verify_encrypted(
                    &key,
                    &self.receipts().arbiter.public_key(),
                    proto::PARTY_DOMAIN,
                    &fields.party_part(),
                    &ves,
                )
                .map(|()| ves)
                .map_err(|e| e.to_string())
            });
        match verdict {
            Ok(ves) => {
                let mut next = r.clone();
                next.ves_b = Some(ves.to_bytes().to_vec());
                next.state = "escrowed".into();
                next.updated_at = self.now();
                self.step(
                    &next,
                    "offered",
                    "receipt_escrowed",
                    serde_json::json!({
                        "transaction": transaction, "ves_b": hex::encode(ves.to_bytes()),
                    }),
                )
                .await?;
                Ok(self.receipt_view(&next))
            }
            Err(why) => {
                // Block 307: the originator aborts at the arbiter.
                self.arbiter_decide(&r, Request::Abort, "node").await?;
                Err(rerr(ReceiptServiceError::BadEscrow(format!(
                    "{why}; the node asked the arbiter to abort the exchange"
                ))))
            }
        }
    }

    async fn check_open_exchange(&self, r: &ReceiptRow) -> Result<()> {
        if let Some(d) = self.inner.store.arbiter_decision(r.transaction_id).await? {
            return Err(match d.decision.as_str() {
                "aborted" => rerr(Refusal::Aborted),
                "failed" => rerr(Refusal::Failed),
                _ => wrong_state("the arbiter resolved this exchange; fetch the receipt"),
            });
        }
        Ok(())
    }

    /// Blocks 309–315: B's signature (and token write request). The node verifies it with B's
    /// certificate, signs for A under A's warrant (or releases A's escrowed signature), signs
    /// fields 1–5 itself, stores the receipt and seals the secure write. In a fair exchange a
    /// bad signature from B makes the node resolve at the arbiter with B's escrow (block 314).
    pub async fn receipt_sign(
        &self,
        by: &Principal,
        transaction: u64,
        req: SignReceipt,
    ) -> Result<ReceiptView> {
        let r = self.receipt_row(transaction).await?;
        self.require_b(by, &r)?;
        let expected = if r.fair { "escrowed" } else { "offered" };
        if matches!(r.state.as_str(), "signed" | "acked" | "resolved") {
            let same = r.signature_b.as_deref().map(hex::encode)
                == Some(req.signature_b.trim().to_ascii_lowercase());
            if same {
                return Ok(self.receipt_view(&r));
            }
            return Err(wrong_state(format!("the receipt is already {}", r.state)));
        }
        if r.fair {
            self.check_open_exchange(&r).await?;
        }
        if r.state != expected {
            return Err(wrong_state(if r.fair && r.state == "offered" {
                "send your verifiable escrow first (fair exchange)".to_string()
            } else {
                format!("the receipt is {}, not {expected}", r.state)
            }));
        }
        let (_, cert_b) = self.parties_of(&r)?;
        let fields = self.fields(&r)?;
        let write = match &req.token {
            Some(w) => Some(self.write_target(&r.party_b, w).await?),
            None => None,
        };
        let checked = PartySignature::from_hex(fields.version, &req.signature_b).and_then(|sig| {
            proto::signing_key("party B", fields.version, &cert_b, None)?
                .verify(&fields, &sig, "party B")
                .map(|()| sig)
        });
        match checked {
            Ok(sig_b) => {
                let done = self
                    .complete(r, &fields, sig_b, write, expected, "signed")
                    .await?;
                Ok(self.receipt_view(&done))
            }
            Err(e) if r.fair => {
                // Block 314: resolve with B's verifiable escrow.
                self.resolve_by_node(&r, &fields, &cert_b).await?;
                Err(rerr(e))
            }
            Err(e) => Err(rerr(e)),
        }
    }

    async fn write_target(
        &self,
        holder: &str,
        w: &WriteRequest,
    ) -> Result<([u8; SERIAL_LEN], [u8; CHALLENGE_LEN], u16)> {
        let bad = |why: &str| rerr(ReceiptServiceError::BadWrite(why.to_string()));
        let serial: [u8; SERIAL_LEN] = parse_hex("token.serial", &w.serial)?;
        let challenge: [u8; CHALLENGE_LEN] = parse_hex("token.challenge", &w.challenge)?;
        let t = self
            .inner
            .store
            .receipt_token(&hex::encode(serial))
            .await?
            .ok_or_else(|| bad("unknown token serial"))?;
        if t.holder != holder {
            return Err(bad("the token is not party B's"));
        }
        if i64::from(w.slot) >= t.slots {
            return Err(bad("the slot is beyond the token's slots"));
        }
        if challenge.iter().all(|&x| x == 0) {
            return Err(bad("the challenge is all zeros"));
        }
        Ok((serial, challenge, w.slot))
    }

    /// Signs and stores a complete receipt: A's signature (the escrowed one, or a proxy
    /// signature made now under A's warrant), the server's over fields 1–5, the core, and the
    /// secure write.
    async fn complete(
        &self,
        r: ReceiptRow,
        fields: &Fields,
        sig_b: PartySignature,
        write: Option<([u8; SERIAL_LEN], [u8; CHALLENGE_LEN], u16)>,
        from: &str,
        to: &str,
    ) -> Result<ReceiptRow> {
        // A proxy signature made now needs its warrant valid now (not only at the offer). In a
        // fair exchange A's was made, and released to B, at the offer: it stands.
        let made_now = [r.signature_a.is_none(), true];
        for ((who, serial, cert, other), now) in [
            ("party A", &r.warrant_a, &r.certificate_a, &r.party_b),
            ("party B", &r.warrant_b, &r.certificate_b, &r.party_a),
        ]
        .into_iter()
        .zip(made_now)
        {
            if let Some(serial) = serial
                && now
            {
                self.recheck_warrant(who, serial, cert, other).await?;
            }
        }
        let sig_a = match &r.signature_a {
            Some(bytes) => PartySignature::from_slice(fields.version, bytes).map_err(rerr)?,
            None => self.proxy_sign(fields)?,
        };
        let (mut next, receipt) = self.signed(&r, fields, sig_a, sig_b, to);
        let digest = next.digest.clone();
        if let Some((serial, challenge, slot)) = write {
            let number = random_id()?;
            let content = WriteContent::new(fields, number as u64, receipt.signature_server);
            let sealed = ptoken::seal_write(
                self.app_key(&serial).expose(),
                &serial,
                &challenge,
                slot,
                &content,
            );
            next.token_serial = Some(hex::encode(serial));
            next.challenge = Some(challenge.to_vec());
            next.slot = Some(i64::from(slot));
            next.receipt_number = Some(number);
            next.write = Some(sealed.to_bytes());
            next.write_attempts = 1;
        }
        let key = format!(":receipt:{}:{to}", r.transaction_id);
        next.journal_key = Some(key.clone());
        let mut attachments: Vec<Attachment> = step_receipt(&next, from).into();
        let proxied_now = [
            r.warrant_a.as_ref().filter(|_| r.signature_a.is_none()),
            r.warrant_b.as_ref(),
        ];
        for w in proxied_now.into_iter().flatten() {
            attachments.push(warrant_unrevoked(w));
        }
        self.execute(
            key,
            Command::Record {
                kind: format!("receipt_{to}"),
                data: serde_json::json!({
                    "transaction": r.transaction_id, "receipt_digest": digest,
                    "party_a": r.party_a, "party_b": r.party_b,
                    "warrant_a": r.warrant_a, "warrant_b": r.warrant_b,
                    "receipt_number": next.receipt_number,
                }),
            },
            attachments,
        )
        .await
        .map_err(revoked_meanwhile)?;
        Ok(next)
    }

    /// `r` completed: both parties' signatures and the server's over fields 1–5, moved to
    /// `state` with the core's digest (which the journal entry names); and the core.
    fn signed(
        &self,
        r: &ReceiptRow,
        fields: &Fields,
        sig_a: PartySignature,
        sig_b: PartySignature,
        state: &str,
    ) -> (ReceiptRow, Receipt) {
        let sig_server = self
            .receipts()
            .server
            .sign(proto::SERVER_DOMAIN, &fields.server_part());
        let receipt = Receipt {
            fields: *fields,
            signature_a: sig_a,
            signature_b: sig_b,
            signature_server: sig_server,
        };
        let digest = hex::encode(receipt.digest());
        let mut next = r.clone();
        next.signature_a = Some(sig_a.to_vec());
        next.signature_b = Some(sig_b.to_vec());
        next.signature_server = Some(sig_server.to_bytes().to_vec());
        next.state = state.into();
        next.digest = Some(digest);
        next.updated_at = self.now();
        (next, receipt)
    }

    async fn recheck_warrant(
        &self,
        who: &'static str,
        serial: &str,
        cert_der: &[u8],
        other: &str,
    ) -> Result<()> {
        let refused = |why: String| rerr(ReceiptServiceError::NoWarrant(why));
        let w = self
            .inner
            .store
            .warrant(serial)
            .await?
            .ok_or_else(|| refused(format!("warrant {serial} is gone")))?;
        if w.revoked_at.is_some() {
            return Err(refused(format!(
                "warrant {serial} was revoked; nothing was signed"
            )));
        }
        // The warrant must come from the certificate the offer fixed, valid now.
        let cert = Certificate::from_der(cert_der).map_err(setup)?;
        self.cert_checked(&cert, self.now()).map_err(|e| {
            refused(format!(
                "{who}'s certificate is not valid now: {e}; nothing was signed"
            ))
        })?;
        self.proxy_checked(who, &w.certificate, &cert, other, self.now())
            .map_err(|e| refused(format!("{e}; nothing was signed")))?;
        Ok(())
    }

    async fn step(
        &self,
        next: &ReceiptRow,
        from: &str,
        kind: &str,
        data: serde_json::Value,
    ) -> Result<()> {
        self.execute(
            format!(":receipt:{}:{}", next.transaction_id, next.state),
            Command::Record {
                kind: kind.into(),
                data,
            },
            step_receipt(next, from).into(),
        )
        .await
        .map_err(revoked_meanwhile)?;
        Ok(())
    }

    /// Block 316: B acks the write with its receipt number. Acking again is harmless.
    pub async fn receipt_ack(
        &self,
        by: &Principal,
        transaction: u64,
        receipt_number: u64,
    ) -> Result<ReceiptView> {
        let r = self.receipt_row(transaction).await?;
        self.require_b(by, &r)?;
        let Some(number) = r.receipt_number else {
            return Err(wrong_state(
                "nothing was written to a token for this receipt",
            ));
        };
        if number as u64 != receipt_number {
            return Err(invalid("receipt_number", "is not this receipt's number"));
        }
        if r.acked_at.is_some() {
            return Ok(self.receipt_view(&r));
        }
        let mut next = r.clone();
        next.acked_at = Some(self.now());
        next.state = if r.state == "signed" {
            "acked".into()
        } else {
            r.state.clone()
        };
        next.updated_at = self.now();
        self.execute(
            format!(":receipt:{}:acked", r.transaction_id),
            Command::Record {
                kind: "receipt_acked".into(),
                data: serde_json::json!({ "transaction": r.transaction_id, "receipt_number": number }),
            },
            step_receipt(&next, &r.state).into(),
        )
        .await?;
        Ok(self.receipt_view(&next))
    }

    /// The writes to a token still waiting for their ack (the node retries them each time the
    /// holder asks; each retry is counted).
    pub async fn token_writes(&self, by: &Principal, serial: &str) -> Result<Vec<ReceiptView>> {
        let serial = serial.trim().to_ascii_lowercase();
        let t = self
            .inner
            .store
            .receipt_token(&serial)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: "token",
                id: serial.clone(),
            })?;
        if !by.is_admin() && by.owner != t.holder {
            return Err(ServiceError::NotFound {
                what: "token",
                id: serial,
            });
        }
        let mut out = Vec::new();
        for r in self.inner.store.unacked_writes(&serial).await? {
            // A retry is journaled at most every RETRY_COUNT_S seconds per receipt, so a client
            // polling in a loop cannot grow the journal.
            if self.now().as_micros() - r.updated_at.as_micros() < RETRY_COUNT_S * 1_000_000 {
                out.push(self.receipt_view(&r));
                continue;
            }
            let mut next = r.clone();
            next.write_attempts += 1;
            next.updated_at = self.now();
            // Counting is best effort: a concurrent ack wins and the write is still shown.
            let _ = self
                .inner
                .store
                .execute_with(
                    tally_ledger::Request {
                        idempotency_key: format!(
                            ":receipt:{}:retry:{}",
                            r.transaction_id, next.write_attempts
                        ),
                        command: Command::Record {
                            kind: "receipt_write_retried".into(),
                            data: serde_json::json!({
                                "transaction": r.transaction_id, "attempt": next.write_attempts,
                            }),
                        },
                    },
                    step_receipt(&next, &r.state).into(),
                )
                .await;
            out.push(self.receipt_view(&next));
        }
        Ok(out)
    }

    // ----- the arbiter ---------------------------------------------------------------------

    /// Abort (block 307; the originator only): the arbiter will resolve nothing afterwards. If
    /// B resolved first, the originator gets B's signature instead.
    pub async fn arbiter_abort(&self, by: &Principal, transaction: u64) -> Result<ArbiterView> {
        let r = self.receipt_row(transaction).await?;
        self.may_see(by, &r)?;
        if !by.is_admin() && by.owner != r.created_by && by.owner != r.party_a {
            return Err(ServiceError::Forbidden(
                "only the originator aborts an exchange",
            ));
        }
        if !r.fair {
            return Err(wrong_state("this receipt is not a fair exchange"));
        }
        match r.state.as_str() {
            "signed" | "acked" => {
                return Err(wrong_state(
                    "the exchange completed; there is nothing to abort",
                ));
            }
            // A's signature went to B against B's verifiable escrow: only a resolve is fair now.
            "escrowed" => {
                return Err(wrong_state(
                    "A's signature was released against B's verifiable escrow; resolve instead",
                ));
            }
            _ => {}
        }
        let answer = self.arbiter_decide(&r, Request::Abort, &by.owner).await?;
        self.arbiter_view(transaction, answer).await
    }

    /// Resolve: by B (block 310), depositing its signature for A's from the node's escrow; or
    /// by the originator (block 314), opening B's verifiable escrow.
    pub async fn arbiter_resolve(
        &self,
        by: &Principal,
        transaction: u64,
        signature_b: Option<&str>,
    ) -> Result<ArbiterView> {
        let r = self.receipt_row(transaction).await?;
        self.may_see(by, &r)?;
        if !r.fair {
            return Err(wrong_state("this receipt is not a fair exchange"));
        }
        let (_, cert_b) = self.parties_of(&r)?;
        let fields = self.fields(&r)?;
        if matches!(r.state.as_str(), "signed" | "acked") {
            return Err(wrong_state(
                "the exchange completed without the arbiter; fetch the receipt",
            ));
        }
        if by.owner == r.party_b {
            // Block 310: B resolves after sending its verifiable escrow (before that, B just
            // sends the escrow again); a standing decision is answered as it stands.
            if r.state == "offered" {
                return Err(wrong_state(
                    "send your verifiable escrow first; resolve only if no good signature of A comes back",
                ));
            }
            let sig =
                signature_b.ok_or_else(|| invalid("signature_b", "B deposits its signature"))?;
            let sig_b = PartySignature::from_hex(fields.version, sig)
                .and_then(|s| {
                    proto::signing_key("party B", fields.version, &cert_b, None)?
                        .verify(&fields, &s, "party B")
                        .map(|()| s)
                })
                .map_err(rerr)?;
            // The arbiter opens the escrow the node recorded when it sent it, never one the
            // caller supplies: a caller could otherwise fail the exchange at will.
            let escrow = r.escrow_a.clone().unwrap_or_default();
            let escrowed_a = self.open_escrow(&fields, &escrow);
            let answer = self
                .arbiter_decide(
                    &r,
                    Request::ResolveByClient {
                        signature_b: sig_b,
                        escrowed_a,
                    },
                    &by.owner,
                )
                .await?;
            return self.arbiter_view(transaction, answer).await;
        }
        if !by.is_admin() && by.owner != r.created_by && by.owner != r.party_a {
            return Err(ServiceError::Forbidden(
                "only the exchange's parties resolve it",
            ));
        }
        // A standing decision answers first (an aborted or failed exchange stays so).
        let answer = match self.inner.store.arbiter_decision(r.transaction_id).await? {
            Some(d) => match decision_of(&d, fields.version)? {
                Decision::Resolved { signature_b, .. } => Answer::Signature(signature_b),
                Decision::Aborted => return Err(rerr(Refusal::Aborted)),
                Decision::Failed | Decision::Open => return Err(rerr(Refusal::Failed)),
            },
            None => self.resolve_by_node(&r, &fields, &cert_b).await?,
        };
        self.arbiter_view(transaction, answer).await
    }

    async fn resolve_by_node(
        &self,
        r: &ReceiptRow,
        fields: &Fields,
        cert_b: &Certificate,
    ) -> Result<Answer> {
        let ves = r
            .ves_b
            .as_deref()
            .ok_or_else(|| wrong_state("B has sent no verifiable escrow; abort instead"))?;
        let ves = EncryptedSignature::from_bytes(ves).map_err(setup)?;
        let key = b_bls_key(cert_b)?;
        // The arbiter re-checks the escrow's condition before opening it.
        let sig_b = self
            .receipts()
            .arbiter
            .adjudicate_verified(&key, proto::PARTY_DOMAIN, &fields.party_part(), &ves)
            .map_err(|e| rerr(ReceiptServiceError::BadEscrow(e.to_string())))?;
        let sig_a = r
            .signature_a
            .as_deref()
            .ok_or_else(|| setup("a fair exchange without A's signature"))
            .and_then(|s| PartySignature::from_slice(fields.version, s).map_err(rerr))?;
        self.arbiter_decide(
            r,
            Request::ResolveByNode {
                signature_a: sig_a,
                escrowed_b: PartySignature::Bls(sig_b),
            },
            "node",
        )
        .await
    }

    /// Opens the node's non-verifiable escrow and checks A's signature in it (under the
    /// node's proxy BLS key, the one A's warrant names).
    fn open_escrow(&self, fields: &Fields, escrow: &[u8]) -> Option<PartySignature> {
        let aad = [ESCROW_AAD, &fields.party_part()].concat();
        let plain = seal::open(self.receipts().escrow_key.expose(), &aad, escrow).ok()?;
        let sig = PartySignature::from_slice(fields.version, plain.expose()).ok()?;
        let key = PartyKey::Bls(self.receipts().proxy_bls.public_key());
        key.verify(fields, &sig, "party A").ok().map(|()| sig)
    }

    /// Applies the arbiter's rules to the stored decision and stores the new one with the
    /// receipt's new state, in one journaled write.
    async fn arbiter_decide(&self, r: &ReceiptRow, request: Request, by: &str) -> Result<Answer> {
        let stored = self.inner.store.arbiter_decision(r.transaction_id).await?;
        let version = r.version as u8;
        let current = match &stored {
            None => Decision::Open,
            Some(d) => decision_of(d, version)?,
        };
        let (next, answer) = exchange::decide(current, request);
        if stored.is_none() && next != Decision::Open {
            let (sa, sb) = match next {
                Decision::Resolved {
                    signature_a,
                    signature_b,
                } => (Some(signature_a.to_vec()), Some(signature_b.to_vec())),
                _ => (None, None),
            };
            let row = DecisionRow {
                transaction_id: r.transaction_id,
                decision: next.name().into(),
                signature_a: sa,
                signature_b: sb,
                requested_by: by.into(),
                decided_at: self.now(),
            };
            let fields = self.fields(r)?;
            let result = match next {
                Decision::Resolved { signature_b, .. } => {
                    self.complete_resolved(r.clone(), &fields, signature_b, &row)
                        .await
                }
                _ => {
                    let mut moved = r.clone();
                    moved.state = if next == Decision::Aborted {
                        "aborted"
                    } else {
                        "failed"
                    }
                    .into();
                    moved.updated_at = self.now();
                    let mut attachments: Vec<Attachment> = vec![insert_decision(&row)];
                    attachments.extend(step_receipt(&moved, &r.state));
                    self.execute(
                        format!(":arbiter:{}", r.transaction_id),
                        Command::Record {
                            kind: format!("arbiter_{}", next.name()),
                            data: serde_json::json!({
                                "transaction": r.transaction_id, "requested_by": by,
                            }),
                        },
                        attachments,
                    )
                    .await
                    .map(|_| ())
                }
            };
            if let Err(e) = result {
                if matches!(e, ServiceError::Store(StoreError::Conflict(_))) {
                    // Another request moved first. If it was a decision, answer from it
                    // (without writing); if the receipt moved on otherwise, this request's
                    // premise is gone: the caller looks again.
                    return match self.inner.store.arbiter_decision(r.transaction_id).await? {
                        Some(d) => exchange::decide(decision_of(&d, version)?, request)
                            .1
                            .map_err(rerr),
                        None => Err(wrong_state(
                            "the exchange moved on meanwhile; fetch the receipt again",
                        )),
                    };
                }
                return Err(e);
            }
        }
        answer.map_err(rerr)
    }

    async fn complete_resolved(
        &self,
        r: ReceiptRow,
        fields: &Fields,
        sig_b: PartySignature,
        decision: &DecisionRow,
    ) -> Result<()> {
        let sig_a = decision
            .signature_a
            .as_deref()
            .ok_or_else(|| setup("resolved without A's signature"))
            .and_then(|s| PartySignature::from_slice(fields.version, s).map_err(rerr))?;
        let (mut next, _) = self.signed(&r, fields, sig_a, sig_b, "resolved");
        let digest = next.digest.clone();
        let key = format!(":arbiter:{}", r.transaction_id);
        next.journal_key = Some(key.clone());
        let mut attachments: Vec<Attachment> = vec![insert_decision(decision)];
        attachments.extend(step_receipt(&next, &r.state));
        self.execute(
            key,
            Command::Record {
                kind: "arbiter_resolved".into(),
                data: serde_json::json!({
                    "transaction": r.transaction_id, "receipt_digest": digest,
                    "requested_by": decision.requested_by,
                    "party_a": r.party_a, "party_b": r.party_b, "warrant_a": r.warrant_a,
                }),
            },
            attachments,
        )
        .await?;
        Ok(())
    }

    async fn arbiter_view(&self, transaction: u64, answer: Answer) -> Result<ArbiterView> {
        let r = self.receipt_row(transaction).await?;
        let d = self.inner.store.arbiter_decision(r.transaction_id).await?;
        Ok(ArbiterView {
            transaction,
            decision: d.map_or_else(|| "open".to_string(), |d| d.decision),
            signature: match answer {
                Answer::Signature(s) => Some(s.to_hex()),
                Answer::Aborted => None,
            },
            receipt: self.receipt_view(&r),
        })
    }

    // ----- packages ------------------------------------------------------------------------

    /// The receipt package file of a complete receipt: the core, the record, the parties'
    /// and the server's certificates, the warrants of proxy signatures, the node CA's
    /// certificate and the receipt's journal entry.
    pub async fn receipt_package(&self, by: &Principal, transaction: u64) -> Result<Vec<u8>> {
        let r = self.receipt_row(transaction).await?;
        self.may_see(by, &r)?;
        let core = self.core(&r)?.ok_or_else(|| {
            wrong_state(format!("the receipt is {}; it has no package yet", r.state))
        })?;
        let mut pkg = Package::new(core);
        pkg.record = Some(r.record.clone());
        pkg.cert_a = Some(r.certificate_a.clone());
        pkg.cert_b = Some(r.certificate_b.clone());
        for (serial, slot) in [
            (&r.warrant_a, &mut pkg.warrant_a),
            (&r.warrant_b, &mut pkg.warrant_b),
        ] {
            if let Some(s) = serial {
                *slot = self.inner.store.warrant(s).await?.map(|w| w.certificate);
            }
        }
        pkg.cert_server = Some(self.receipts().server_cert.to_der());
        pkg.cert_ca = Some(self.inner.ca.certificate().to_der());
        if let Some(k) = &r.journal_key
            && let Some(j) = self.inner.store.journal_entry_by_key(k).await?
        {
            pkg.journal = Some(JournalProof {
                seq: j.seq,
                at: j.at,
                prev_hash: j.prev_hash.as_slice().try_into().map_err(setup)?,
                body: j.body,
            });
        }
        Ok(pkg.to_bytes())
    }

    /// The core bytes of a complete receipt: its fields and the stored (verified) signatures.
    fn core_bytes(&self, r: &ReceiptRow) -> Result<Option<Vec<u8>>> {
        let (Some(sa), Some(sb), Some(ss)) = (&r.signature_a, &r.signature_b, &r.signature_server)
        else {
            return Ok(None);
        };
        if !matches!(r.state.as_str(), "signed" | "acked" | "resolved") {
            return Ok(None);
        }
        Ok(Some(
            [&self.fields(r)?.party_part()[..], sa, sb, ss].concat(),
        ))
    }

    fn core(&self, r: &ReceiptRow) -> Result<Option<Receipt>> {
        self.core_bytes(r)?
            .map(|bytes| Receipt::from_bytes(&bytes).map_err(rerr))
            .transpose()
    }

    fn receipt_view(&self, r: &ReceiptRow) -> ReceiptView {
        let core = self.core_bytes(r).ok().flatten();
        ReceiptView {
            transaction: r.transaction_id as u64,
            version: r.version as u8,
            server_id: self.receipts().server.verifying_key().fingerprint(),
            time: r.time,
            content_hash: hex::encode(&r.content_hash),
            party_a: r.party_a.clone(),
            party_b: r.party_b.clone(),
            party_a_fingerprint: hex::encode(&r.fingerprint_a),
            party_b_fingerprint: hex::encode(&r.fingerprint_b),
            record: r.record.clone(),
            fair: r.fair,
            state: r.state.clone(),
            warrant_a: r.warrant_a.clone(),
            warrant_b: r.warrant_b.clone(),
            escrow_a: r.escrow_a.as_deref().map(hex::encode),
            signature_a: if matches!(
                r.state.as_str(),
                "escrowed" | "signed" | "acked" | "resolved"
            ) {
                r.signature_a.as_deref().map(hex::encode)
            } else {
                None
            },
            signature_b: r.signature_b.as_deref().map(hex::encode),
            signature_server: r.signature_server.as_deref().map(hex::encode),
            core: core.map(hex::encode),
            digest: r.digest.clone(),
            receipt_number: r.receipt_number.map(|n| n as u64),
            write: if r.acked_at.is_none() {
                r.write.as_deref().map(hex::encode)
            } else {
                None
            },
            write_attempts: r.write_attempts,
            acked_at: r.acked_at,
        }
    }
}

fn b_bls_key(cert_b: &Certificate) -> Result<BlsPublicKey> {
    let bad = |why: String| {
        rerr(ReceiptError::BadCertificate {
            who: "party B",
            why,
        })
    };
    let bytes = kwarrant::certificate_bls_key(cert_b)
        .map_err(|e| bad(e.to_string()))?
        .ok_or_else(|| bad("no certified BLS key".into()))?;
    BlsPublicKey::from_bytes(&bytes).map_err(|e| bad(e.to_string()))
}

fn decision_of(d: &DecisionRow, version: u8) -> Result<Decision> {
    let sig = |s: &Option<Vec<u8>>| -> Result<PartySignature> {
        let bytes = s
            .as_deref()
            .ok_or_else(|| setup("resolved decision without signatures"))?;
        PartySignature::from_slice(version, bytes).map_err(rerr)
    };
    Ok(match d.decision.as_str() {
        "aborted" => Decision::Aborted,
        "failed" => Decision::Failed,
        "resolved" => Decision::Resolved {
            signature_a: sig(&d.signature_a)?,
            signature_b: sig(&d.signature_b)?,
        },
        other => return Err(setup(format!("unknown arbiter decision {other}"))),
    })
}

fn revoked_meanwhile(e: ServiceError) -> ServiceError {
    match e {
        ServiceError::Store(StoreError::Conflict(why)) if why.contains("warrant") => rerr(
            ReceiptServiceError::NoWarrant(format!("{why}; nothing was signed")),
        ),
        ServiceError::Store(StoreError::Conflict(_)) => {
            wrong_state("the receipt moved on meanwhile; fetch it again")
        }
        other => other,
    }
}

fn warrant_view(w: &WarrantRow) -> WarrantView {
    WarrantView {
        serial: w.serial.clone(),
        issuer: w.issuer.clone(),
        counterparties: w.counterparties.clone(),
        not_before: w.not_before,
        not_after: w.not_after,
        revoked_at: w.revoked_at,
        certificate: Certificate::from_der(&w.certificate)
            .map(|c| c.to_pem())
            .unwrap_or_default(),
    }
}
