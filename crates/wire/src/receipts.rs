//! Signed receipts (`docs/protocols/receipts.md`): tokens, warrants, the receipt protocol, the
//! arbiter.

use serde::{Deserialize, Serialize};
use tally_kernel::Timestamp;
use tally_proto::receipt::exchange::Standing;
use tally_proto::receipt::flow::ReceiptState;
use utoipa::ToSchema;

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
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NewToken {
    /// The holder's name (a party; the API-key owner it acts as).
    pub holder: String,
    /// `customer`, `merchant` or `manager`.
    pub role: String,
    /// The holder's Ed25519 public key, hex.
    pub public_key: String,
    /// The holder's BLS public key for fair exchange, hex.
    pub bls_key: Option<String>,
    /// Proof that the holder has the keys: their signatures over this request.
    pub proof: TokenProof,
    /// Number of receipt slots (1..=1024, default 16).
    pub slots: Option<u16>,
    /// Certificate validity in days (default 365).
    pub days: Option<u32>,
}

impl NewToken {
    /// A request for software keys, with their proofs of possession.
    pub fn signed(
        holder: &str,
        role: &str,
        key: &tally_kernel::crypto::SigningKey,
        bls: Option<&tally_kernel::crypto::bls::BlsSecretKey>,
        slots: Option<u16>,
        days: Option<u32>,
    ) -> NewToken {
        let public = key.verifying_key();
        let bls_public = bls.map(|b| b.public_key());
        let (ed25519, bls_proof) = tally_proto::receipt::request::CertificationRequest {
            holder,
            role,
            public_key: &public,
            bls_key: bls_public.as_ref(),
        }
        .prove(key, bls);
        NewToken {
            holder: holder.into(),
            role: role.into(),
            public_key: public.to_hex(),
            bls_key: bls_public.map(|b| b.to_hex()),
            proof: TokenProof {
                ed25519: ed25519.to_hex(),
                bls: bls_proof.map(|s| s.to_hex()),
            },
            slots,
            days,
        }
    }
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

/// `GET /v1/receipts/{transaction}/warrant`: what party B needs to check, before its
/// signature leaves, that the node may sign for A: A's certificate and A's warrant (both
/// verifiable offline against the node CA) and the warrant's revocation state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OfferWarrant {
    /// A's certificate (PEM), from the node CA.
    pub party_certificate: String,
    /// A's warrant, as stored (its certificate PEM and whether it is revoked).
    pub warrant: WarrantView,
}

/// A receipt offer as requested.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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
    /// Where it stands.
    pub state: ReceiptState,
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
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WriteRequest {
    /// Token serial, hex.
    pub serial: String,
    /// The token's fresh challenge, hex (32 bytes).
    pub challenge: String,
    /// The slot the token reserved.
    pub slot: u16,
}

/// B's signature (and token write request).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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
    /// Where the exchange stands at the arbiter.
    pub decision: Standing,
    /// The other party's signature, hex, when the decision gives one.
    pub signature: Option<String>,
    /// The receipt after the decision.
    pub receipt: ReceiptView,
}

/// `{certificate}`: a warrant, PEM.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WarrantBody {
    /// The warrant certificate.
    pub certificate: String,
}

/// `{ves}`: B's verifiably encrypted signature, hex.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EscrowBody {
    /// 96 bytes, hex.
    pub ves: String,
}

/// `{receipt_number}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AckBody {
    /// The number in the secure write.
    pub receipt_number: u64,
}

/// `{signature_b?}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ResolveBody {
    /// B's signature (B resolving).
    pub signature_b: Option<String>,
}

/// The holder's proofs of possession (`tally_proto::receipt::request`): signatures over the
/// request by the keys it asks to certify.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenProof {
    /// Ed25519 signature by `public_key`, hex.
    pub ed25519: String,
    /// BLS signature by `bls_key`, hex (exactly when `bls_key` is given).
    #[serde(default)]
    pub bls: Option<String>,
}

/// `POST /v1/parties/{name}/revoke`: what was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PartyRevocation {
    /// The party.
    pub party: String,
    /// The revoked certificate's serial, hex.
    pub certificate_serial: String,
    /// When.
    #[schema(value_type = i64)]
    pub revoked_at: Timestamp,
}

/// A certificate or warrant of a package found revoked by the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevokedInPackage {
    /// `party A`, `party B`, `warrant of party A`, `warrant of party B`.
    pub what: String,
    /// Its serial, hex.
    pub serial: String,
    /// When it was revoked.
    #[schema(value_type = i64)]
    pub revoked_at: Timestamp,
    /// Revoked at or before the receipt's time: the receipt does not stand.
    pub before_receipt: bool,
}

/// `POST /v1/receipts/verify`: a package checked by the node against its CA and its
/// revocations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OnlineVerification {
    /// The package verified and nothing in it was revoked at or before the receipt's time.
    pub valid: bool,
    /// Why not, when it did not verify offline.
    #[serde(default)]
    pub problem: Option<String>,
    /// The transaction id.
    #[serde(default)]
    pub transaction: Option<u64>,
    /// Party A (certificate CN).
    #[serde(default)]
    pub party_a: Option<String>,
    /// Party B.
    #[serde(default)]
    pub party_b: Option<String>,
    /// Revoked certificates and warrants (also those revoked after the receipt: it stands,
    /// but the party's key no longer signs).
    pub revoked: Vec<RevokedInPackage>,
}

/// `GET /v1/arbiter/key` on an arbiter node: the key escrows are encrypted to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ArbiterIdentity {
    /// The arbiter's BLS public key (`x·g1, x·g2`), hex.
    pub arbiter_key: String,
}

/// `POST /v1/arbiter/decide` on an arbiter node: one fair exchange of a receipt node, shown
/// with everything the arbiter checks itself (against the receipt node's CA it trusts).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArbiterCase {
    /// Fields 1–7 of the receipt (what both parties sign), hex.
    pub fields: String,
    /// Party A's certificate, DER hex.
    pub certificate_a: String,
    /// The warrant A's signature is made under (naming the receipt node's proxy BLS key),
    /// DER hex.
    pub warrant_a: String,
    /// Party B's certificate (with its BLS key), DER hex.
    pub certificate_b: String,
    /// What is asked.
    pub ask: ArbiterAsk,
}

/// What a receipt node asks its arbiter.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ArbiterAsk {
    /// The originator aborts (also the exchange timeout).
    Abort,
    /// B resolves: its signature, and A's escrow (a verifiable encryption to the arbiter).
    ResolveByClient {
        /// B's signature, hex.
        signature_b: String,
        /// A's escrowed signature, hex.
        escrow_a: String,
    },
    /// The originator resolves: A's signature, and B's verifiable escrow.
    ResolveByNode {
        /// A's signature, hex.
        signature_a: String,
        /// B's verifiably encrypted signature, hex.
        ves_b: String,
    },
}

/// The arbiter's ruling on one exchange: its standing decision and, when it hands one out,
/// the other party's signature; or why it refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ArbiterRuling {
    /// The standing decision after this request.
    #[schema(value_type = String)]
    pub decision: Standing,
    /// The signature handed out (A's to B, B's to the originator), hex.
    #[serde(default)]
    pub signature: Option<String>,
    /// Why the request was refused (`aborted`, `failed`, `bad_escrow`).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub refused: Option<tally_proto::receipt::exchange::Refusal>,
}
