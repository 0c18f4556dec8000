//! The arbiter as its own node (issue [6] item 14), both sides.
//!
//! **Arbiter role.** A node started as an arbiter (`tally serve --role arbiter --trust-ca
//! CA.pem`) holds its own arbiter key (from its own `receipt.key`) and keeps, in its own
//! database, one decision per (receipt server, transaction). [`Receipts::arbitrate`] checks
//! everything it is shown against the receipt node's CA it trusts — A's certificate and the
//! warrant naming the proxy key A's signature is made with, B's certificate and BLS key, both
//! signatures — opens the escrows with its own key, and applies the arbiter's rules
//! (`tally_proto::receipt::exchange::decide`) to its stored decision.
//!
//! **Receipt node with an arbiter.** A receipt node given an [`ArbiterLink`] (`tally serve
//! --arbiter URL`) holds no arbiter secret: A's escrow is a verifiable encryption to the
//! arbiter node's key, B's escrow is encrypted to it too (the node view publishes that key),
//! and every abort, resolve and timeout asks the arbiter node first; the receipt's machine
//! then records the arbiter's ruling. So fairness no longer rests on the node that signs for
//! A: it cannot open B's escrow, and B's resolve is decided where A's node cannot overrule.
//!
//! Rejected: running the arbiter's rules on the receipt node with a key fetched from the
//! arbiter (the node could then open B's escrow itself), and a shared database (the arbiter's
//! decisions must not be writable by the node it judges).

use super::{Receipts, rerr, wrong_state};
use crate::access::invalid;
use crate::identity::setup;
use crate::{Result, ServiceError};
use futures::future::BoxFuture;
use tally_kernel::crypto::Certificate;
use tally_kernel::crypto::bls::{ArbiterPublicKey, BlsPublicKey, EncryptedSignature};
use tally_proto::effects::Effects;
use tally_proto::receipt::exchange::{self, Decision, Request, Standing};
use tally_proto::receipt::{self as proto, Fields, PartyKey, PartySignature, ReceiptError};
use tally_store::receipts::{ArbitrationRow, ReceiptRow, insert_arbitration};
use tally_wire::receipts::{ArbiterAsk, ArbiterCase, ArbiterRuling};

/// Why the arbiter node gave no ruling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// It could not be reached or failed (retry later).
    Unreachable(String),
    /// It refused the case (its error code and message): asking again changes nothing.
    Refused(String),
}

/// How a receipt node reaches its arbiter node (the edge implements it over HTTP).
pub trait ArbiterLink: Send + Sync {
    /// The arbiter's public key, fetched when the node started.
    fn key(&self) -> ArbiterPublicKey;
    /// Asks the arbiter.
    fn decide(
        &self,
        case: ArbiterCase,
    ) -> BoxFuture<'_, std::result::Result<ArbiterRuling, LinkError>>;
}

impl std::fmt::Debug for dyn ArbiterLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ArbiterLink({})", self.key().fingerprint())
    }
}

/// Arbiter role: what this node trusts.
#[derive(Debug, Clone)]
pub struct ArbiterRole {
    /// The receipt node's CA certificate: parties and warrants must chain to it.
    pub trusts: Certificate,
}

fn hex_bytes(field: &'static str, text: &str) -> Result<Vec<u8>> {
    hex::decode(text.trim()).map_err(|_| invalid(field, "not hex"))
}

fn der_cert(field: &'static str, text: &str) -> Result<Certificate> {
    Certificate::from_der(&hex_bytes(field, text)?).map_err(|e| invalid(field, e.to_string()))
}

impl Receipts {
    /// Arbiter role: rules on one fair exchange of a receipt node this node trusts.
    pub async fn arbitrate(&self, case: &ArbiterCase) -> Result<ArbiterRuling> {
        let Some(role) = &self.arbiter_role else {
            return Err(ServiceError::Disabled(
                "this node is not an arbiter (tally serve --role arbiter)",
            ));
        };
        let fields = Fields::from_party_part(&hex_bytes("fields", &case.fields)?).map_err(rerr)?;
        if fields.version != proto::VERSION_BLS {
            return Err(invalid(
                "fields",
                "only BLS receipts (version 2) are exchanged fairly",
            ));
        }
        let at = fields.timestamp();
        let ca = &role.trusts;
        let cert_a = der_cert("certificate_a", &case.certificate_a)?;
        let cert_b = der_cert("certificate_b", &case.certificate_b)?;
        for (who, cert, fp) in [
            ("party A", &cert_a, &fields.party_a),
            ("party B", &cert_b, &fields.party_b),
        ] {
            cert.verify_issued_by(ca, at).map_err(|e| {
                rerr(ReceiptError::BadCertificate {
                    who,
                    why: e.to_string(),
                })
            })?;
            let key = cert.public_key().map_err(setup)?;
            if tally_kernel::crypto::kdf::sha256(&key.to_bytes()) != *fp {
                return Err(rerr(ReceiptError::BadCertificate {
                    who,
                    why: "not the key the receipt names".into(),
                }));
            }
        }
        let b_name = cert_b.subject_common_name().unwrap_or_default();
        let (_, terms) = proto::check_proxy(
            "party A",
            &hex_bytes("warrant_a", &case.warrant_a)?,
            &cert_a,
            &b_name,
            ca,
            at,
        )
        .map_err(rerr)?;
        let key_a = terms
            .bls_key
            .ok_or_else(|| invalid("warrant_a", "names no BLS key"))
            .and_then(|k| {
                BlsPublicKey::from_bytes(&k).map_err(|e| invalid("warrant_a", e.to_string()))
            })?;
        let key_b = super::package::b_bls_key(&cert_b)?;
        let msg = fields.party_part();
        let verified =
            |who: &'static str, key: BlsPublicKey, hex: &str| -> Result<PartySignature> {
                let s = PartySignature::from_hex(fields.version, hex).map_err(rerr)?;
                PartyKey::Bls(key).verify(&fields, &s, who).map_err(rerr)?;
                Ok(s)
            };
        let opened = |key: &BlsPublicKey, hex: &str| -> Option<PartySignature> {
            let ves = EncryptedSignature::from_bytes(&hex::decode(hex.trim()).ok()?).ok()?;
            self.arbiter
                .adjudicate_verified(key, proto::PARTY_DOMAIN, &msg, &ves)
                .ok()
                .map(PartySignature::Bls)
        };
        let request = match &case.ask {
            ArbiterAsk::Abort => Request::Abort,
            ArbiterAsk::ResolveByClient {
                signature_b,
                escrow_a,
            } => Request::ResolveByClient {
                signature_b: verified("party B", key_b, signature_b)?,
                escrowed_a: opened(&key_a, escrow_a),
            },
            ArbiterAsk::ResolveByNode { signature_a, ves_b } => Request::ResolveByNode {
                signature_a: verified("party A", key_a, signature_a)?,
                escrowed_b: opened(&key_b, ves_b).ok_or_else(|| {
                    rerr(super::ReceiptServiceError::BadEscrow(
                        "B's escrow does not open to B's signature".into(),
                    ))
                })?,
            },
        };
        let node = hex::encode(fields.server_id);
        let transaction = i64::try_from(fields.transaction)
            .map_err(|_| invalid("fields", "transaction out of range"))?;
        // The first decision stored wins; a request that lost the race is answered from it.
        let case_hash = tally_kernel::crypto::kdf::sha256(&msg).to_vec();
        for _ in 0..3 {
            let stored = self.core.store().arbitration(&node, transaction).await?;
            if let Some(row) = &stored
                && row
                    .case_hash
                    .as_deref()
                    .is_some_and(|h| h != case_hash.as_slice())
            {
                return Err(wrong_state(
                    "the arbiter decided another exchange under this transaction id",
                ));
            }
            let standing = match &stored {
                Some(row) => super::decision_from(
                    row.decision,
                    &row.signature_a,
                    &row.signature_b,
                    fields.version,
                )?,
                None => Decision::Open,
            };
            let (decided, answer) = exchange::decide(standing, request);
            if decided != standing {
                let kind = decided
                    .kind()
                    .ok_or_else(|| setup("bug: a ruling without a decision"))?;
                let (sa, sb) = match decided {
                    Decision::Resolved {
                        signature_a,
                        signature_b,
                    } => (Some(signature_a.to_vec()), Some(signature_b.to_vec())),
                    _ => (None, None),
                };
                let row = ArbitrationRow {
                    node: node.clone(),
                    case_hash: Some(case_hash.clone()),
                    transaction_id: transaction,
                    decision: kind,
                    signature_a: sa,
                    signature_b: sb,
                    decided_at: self.core.now(),
                };
                let written = self
                    .core
                    .commit(
                        format!(":arbitration:{node}:{transaction}"),
                        Effects::record(
                            "arbitration",
                            serde_json::json!({ "node": node, "transaction": transaction, "decision": kind }),
                        ),
                        vec![insert_arbitration(&row)],
                    )
                    .await;
                match written {
                    Ok(o) if !o.replayed => {}
                    // Decided by another request meanwhile: read it again.
                    Ok(_) | Err(ServiceError::Conflict(_)) => continue,
                    Err(ServiceError::Ledger(tally_ledger::LedgerError::IdempotencyConflict)) => {
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            return Ok(ruling(decided.standing(), answer));
        }
        Err(wrong_state("the exchange is being decided; ask again"))
    }

    /// Arbiter role, asked by party B itself (no API key): only a resolve, which B's signature
    /// over the fields authenticates — so B does not depend on the receipt node forwarding it.
    pub async fn arbitrate_for_b(&self, case: &ArbiterCase) -> Result<ArbiterRuling> {
        if !matches!(case.ask, ArbiterAsk::ResolveByClient { .. }) {
            return Err(ServiceError::Forbidden(
                "without a key of this arbiter node only party B's resolve is taken",
            ));
        }
        self.arbitrate(case).await
    }

    /// With an arbiter node: asks it about `r` and turns its ruling into the request the
    /// receipt's machine records (the same decision the arbiter took). Without one: `request`.
    pub(crate) async fn ruled(&self, r: &ReceiptRow, request: Request) -> Result<Request> {
        let Some(link) = &self.arbiter_link else {
            return Ok(request);
        };
        let fields = self.fields(r)?;
        let warrant = match &r.warrant_a {
            Some(serial) => self
                .core
                .store()
                .warrant(serial)
                .await?
                .map(|w| w.certificate),
            None => None,
        }
        .ok_or_else(|| setup("a fair exchange without A's warrant"))?;
        let signature_a = || -> Result<PartySignature> {
            r.signature_a
                .as_deref()
                .ok_or_else(|| setup("a fair exchange without A's signature"))
                .and_then(|s| PartySignature::from_slice(fields.version, s).map_err(rerr))
        };
        let ask = match request {
            Request::Abort => ArbiterAsk::Abort,
            Request::ResolveByClient { signature_b, .. } => ArbiterAsk::ResolveByClient {
                signature_b: signature_b.to_hex(),
                escrow_a: hex::encode(r.escrow_a.clone().unwrap_or_default()),
            },
            Request::ResolveByNode { signature_a, .. } => ArbiterAsk::ResolveByNode {
                signature_a: signature_a.to_hex(),
                ves_b: hex::encode(r.ves_b.as_deref().ok_or_else(|| {
                    wrong_state("B has sent no verifiable escrow; abort instead")
                })?),
            },
        };
        let case = ArbiterCase {
            fields: hex::encode(fields.party_part()),
            certificate_a: hex::encode(&r.certificate_a),
            warrant_a: hex::encode(warrant),
            certificate_b: hex::encode(&r.certificate_b),
            ask,
        };
        let ruling = link.decide(case).await.map_err(|e| {
            tracing::warn!(error = ?e, transaction = r.transaction_id, "the arbiter node gave no ruling");
            match e {
                LinkError::Unreachable(why) => ServiceError::ArbiterUnreachable(why),
                LinkError::Refused(why) => ServiceError::ArbiterRefused(why),
            }
        })?;
        let signature = ruling
            .signature
            .as_deref()
            .map(|s| PartySignature::from_hex(fields.version, s).map_err(rerr))
            .transpose()?;
        // What the arbiter hands over is checked before it completes anything: A's signature
        // under the node's proxy key A's warrant names, B's under B's certified BLS key.
        if let (Standing::Resolved, Some(sig)) = (ruling.decision, signature) {
            let (who, key) = match request {
                Request::ResolveByClient { .. } => {
                    ("party A", PartyKey::Bls(self.proxy_bls.public_key()))
                }
                _ => {
                    let (_, cert_b) = self.parties_of(r)?;
                    (
                        "party B",
                        PartyKey::Bls(super::package::b_bls_key(&cert_b)?),
                    )
                }
            };
            key.verify(&fields, &sig, who).map_err(|e| {
                ServiceError::ArbiterRefused(format!(
                    "the arbiter node handed over a bad signature: {e}"
                ))
            })?;
        }
        Ok(match (ruling.decision, signature, request) {
            (Standing::Aborted, _, _) => Request::Abort,
            (Standing::Resolved, Some(sig_a), Request::ResolveByClient { signature_b, .. }) => {
                Request::ResolveByClient {
                    signature_b,
                    escrowed_a: Some(sig_a),
                }
            }
            (Standing::Resolved, Some(sig_b), _) => Request::ResolveByNode {
                signature_a: signature_a()?,
                escrowed_b: sig_b,
            },
            (Standing::Failed, _, _) => {
                let placeholder = signature_a()?;
                Request::ResolveByClient {
                    signature_b: placeholder,
                    escrowed_a: None,
                }
            }
            (standing, _, _) => {
                return Err(wrong_state(format!(
                    "the arbiter node answered {} without what it decided",
                    standing.as_str()
                )));
            }
        })
    }
}

fn ruling(
    decision: Standing,
    answer: std::result::Result<exchange::Answer, exchange::Refusal>,
) -> ArbiterRuling {
    match answer {
        Ok(exchange::Answer::Signature(s)) => ArbiterRuling {
            decision,
            signature: Some(s.to_hex()),
            refused: None,
        },
        Ok(exchange::Answer::Aborted) => ArbiterRuling {
            decision,
            signature: None,
            refused: None,
        },
        Err(r) => ArbiterRuling {
            decision,
            signature: None,
            refused: Some(r),
        },
    }
}
