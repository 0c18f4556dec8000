//! The arbiter of fair exchange (SPEC R5; blocks 307, 310, 314): abort by the originator,
//! resolve by B (its signature for A's, opened from the node's escrow) or by the originator
//! (B's verifiable escrow opened). One decision per transaction, taken by the receipt
//! machine's step and stored with it, never undone; every later request is answered from it.

use super::{ArbiterView, ESCROW_AAD, ReceiptServiceError, Receipts, rerr, wrong_state};
use crate::access::invalid;
use crate::identity::setup;
use crate::{Principal, Result, ServiceError};
use tally_kernel::crypto::Certificate;
use tally_kernel::crypto::bls::EncryptedSignature;
use tally_kernel::crypto::seal;
use tally_proto::receipt::exchange::{Answer, Decision, Request};
use tally_proto::receipt::flow::{Ask, FlowInput};
use tally_proto::receipt::{self as proto, Fields, PartyKey, PartySignature};
use tally_store::Attachment;
use tally_store::receipts::{DecisionRow, ReceiptRow, insert_decision, step_receipt};

impl Receipts {
    /// Aborts, at the arbiter, every fair exchange B left unanswered past the exchange timeout
    /// (its flow's `poll_timeout`): A's escrowed signature then never reaches anyone, and the
    /// originator is no longer bound. Returns how many were aborted.
    pub async fn sweep_timeouts(&self, limit: i64) -> Result<usize> {
        let now = self.core.now();
        let before = now.plus_seconds(-self.exchange_timeout_s);
        let mut aborted = 0;
        for r in self
            .core
            .store()
            .unanswered_exchanges(before, limit)
            .await?
        {
            let flow = self.flow(&r).await?;
            if flow.poll_timeout().is_none_or(|t| t > now) {
                continue;
            }
            match self.decide(&r, Request::Abort, "exchange timeout").await {
                Ok(_) => aborted += 1,
                // Answered or decided by a party meanwhile.
                Err(ServiceError::Conflict(_)) | Err(ServiceError::Receipt(_)) => {}
                // The arbiter node is down or refused this one: the others still time out.
                Err(
                    e @ (ServiceError::ArbiterUnreachable(_) | ServiceError::ArbiterRefused(_)),
                ) => {
                    tracing::warn!(error = %e, transaction = r.transaction_id, "exchange timeout not decided");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(aborted)
    }

    /// Abort (block 307; the originator only): the arbiter will resolve nothing afterwards. If
    /// B resolved first, the originator gets B's signature instead.
    pub async fn abort(&self, by: &Principal, transaction: u64) -> Result<ArbiterView> {
        let r = self.receipt_row(transaction).await?;
        self.may_see(by, &r)?;
        if !by.is_admin() && by.owner != r.created_by && by.owner != r.party_a {
            return Err(ServiceError::Forbidden(
                "only the originator aborts an exchange",
            ));
        }
        let answer = self.decide(&r, Request::Abort, &by.owner).await?;
        self.arbiter_view(transaction, answer).await
    }

    /// Resolve: by B (block 310), depositing its signature for A's from the node's escrow; or
    /// by the originator (block 314), opening B's verifiable escrow.
    pub async fn resolve(
        &self,
        by: &Principal,
        transaction: u64,
        signature_b: Option<&str>,
    ) -> Result<ArbiterView> {
        let r = self.receipt_row(transaction).await?;
        self.may_see(by, &r)?;
        let flow = self.flow(&r).await?;
        if by.owner == r.party_b {
            // Where the exchange stands decides first (a resolve before the escrow, after
            // completion); then B's signature must verify.
            flow.may_ask(Ask::ResolveByClient).map_err(rerr)?;
            let (_, cert_b) = self.parties_of(&r)?;
            let fields = self.fields(&r)?;
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
            let request = Request::ResolveByClient {
                signature_b: sig_b,
                escrowed_a,
            };
            let answer = self.decide(&r, request, &by.owner).await?;
            return self.arbiter_view(transaction, answer).await;
        }
        if !by.is_admin() && by.owner != r.created_by && by.owner != r.party_a {
            return Err(ServiceError::Forbidden(
                "only the exchange's parties resolve it",
            ));
        }
        flow.may_ask(Ask::ResolveByNode).map_err(rerr)?;
        let (_, cert_b) = self.parties_of(&r)?;
        let fields = self.fields(&r)?;
        // A standing decision answers first (an aborted or failed exchange stays so).
        let answer = match flow.decision {
            Decision::Open => self.resolve_by_node(&r, &fields, &cert_b).await?,
            _ => flow
                .answer(self.node_request(&r, &fields, None)?)
                .map_err(rerr)?,
        };
        self.arbiter_view(transaction, answer).await
    }

    /// The node's resolve request: its own signature for A and, when given, B's signature
    /// from the adjudicated escrow (a placeholder of the right kind otherwise, for a decision
    /// that stands).
    fn node_request(
        &self,
        r: &ReceiptRow,
        fields: &Fields,
        escrowed_b: Option<PartySignature>,
    ) -> Result<Request> {
        let signature_a = r
            .signature_a
            .as_deref()
            .ok_or_else(|| setup("a fair exchange without A's signature"))
            .and_then(|s| PartySignature::from_slice(fields.version, s).map_err(rerr))?;
        Ok(Request::ResolveByNode {
            signature_a,
            escrowed_b: escrowed_b.unwrap_or(signature_a),
        })
    }

    /// Block 314: the node opens B's verifiable escrow at the arbiter.
    pub(crate) async fn resolve_by_node(
        &self,
        r: &ReceiptRow,
        fields: &Fields,
        cert_b: &Certificate,
    ) -> Result<Answer> {
        // Where the exchange stands decides before the escrow is opened.
        self.flow(r)
            .await?
            .may_ask(Ask::ResolveByNode)
            .map_err(rerr)?;
        let ves = r
            .ves_b
            .as_deref()
            .ok_or_else(|| wrong_state("B has sent no verifiable escrow; abort instead"))?;
        if self.arbiter_link.is_some() {
            // The arbiter node opens B's escrow; `decide` asks it.
            let request = self.node_request(r, fields, None)?;
            return self.decide(r, request, "node").await;
        }
        let ves = EncryptedSignature::from_bytes(ves).map_err(setup)?;
        let key = super::package::b_bls_key(cert_b)?;
        // The arbiter re-checks the escrow's condition before opening it.
        let sig_b = self
            .arbiter
            .adjudicate_verified(&key, proto::PARTY_DOMAIN, &fields.party_part(), &ves)
            .map_err(|e| rerr(ReceiptServiceError::BadEscrow(e.to_string())))?;
        let request = self.node_request(r, fields, Some(PartySignature::Bls(sig_b)))?;
        self.decide(r, request, "node").await
    }

    /// Opens the node's non-verifiable escrow and checks A's signature in it (under the
    /// node's proxy BLS key, the one A's warrant names).
    fn open_escrow(&self, fields: &Fields, escrow: &[u8]) -> Option<PartySignature> {
        let aad = [ESCROW_AAD, &fields.party_part()].concat();
        let plain = seal::open(self.escrow_key.expose(), &aad, escrow).ok()?;
        let sig = PartySignature::from_slice(fields.version, plain.expose()).ok()?;
        let key = PartyKey::Bls(self.proxy_bls.public_key());
        key.verify(fields, &sig, "party A").ok().map(|()| sig)
    }

    /// The arbiter's step: the machine applies the rules to the standing decision; a new
    /// decision is stored with the receipt's new state in one journaled write (a resolve with
    /// both signatures and the server's). Another request deciding first wins: this one is
    /// answered from that decision, never applied on top of it.
    pub(crate) async fn decide(
        &self,
        r: &ReceiptRow,
        request: Request,
        by: &str,
    ) -> Result<Answer> {
        let flow = self.flow(r).await?;
        // With an arbiter node, its ruling is what the machine records.
        let request = match flow.decision {
            Decision::Open => self.ruled(r, request).await?,
            _ => request,
        };
        let answer = flow.answer(request);
        let (moved, effects) = flow.handle(FlowInput::Arbiter(request)).map_err(rerr)?;
        if effects.is_none() {
            return answer.map_err(rerr);
        }
        let (sa, sb) = match moved.decision {
            Decision::Resolved {
                signature_a,
                signature_b,
            } => (Some(signature_a), Some(signature_b)),
            _ => (None, None),
        };
        let kind = moved
            .decision
            .kind()
            .ok_or_else(|| setup("bug: an arbiter step without a decision"))?;
        let row = DecisionRow {
            transaction_id: r.transaction_id,
            decision: kind,
            signature_a: sa.map(|s| s.to_vec()),
            signature_b: sb.map(|s| s.to_vec()),
            requested_by: by.into(),
            decided_at: self.core.now(),
        };
        let key = format!(":arbiter:{}", r.transaction_id);
        let mut next = match (sa, sb) {
            (Some(sig_a), Some(sig_b)) => {
                let fields = self.fields(r)?;
                self.signed(r, &fields, sig_a, sig_b, moved.state).0
            }
            _ => ReceiptRow {
                state: moved.state,
                updated_at: self.core.now(),
                ..r.clone()
            },
        };
        if sa.is_some() {
            next.journal_key = Some(key.clone());
        }
        let effects = effects.renamed(
            &format!("arbiter_{}", kind),
            serde_json::json!({
                "requested_by": by, "receipt_digest": next.digest,
                "party_a": r.party_a, "party_b": r.party_b, "warrant_a": r.warrant_a,
            }),
        );
        let mut rows: Vec<Attachment> = vec![insert_decision(&row)];
        rows.extend(step_receipt(&next, r.state));
        match self.core.commit(key, effects, rows).await {
            Ok(_) => answer.map_err(rerr),
            Err(ServiceError::Conflict(_)) => {
                // Another request moved first. If it was a decision, answer from it (without
                // writing); if the receipt moved on otherwise, this request's premise is gone:
                // the caller looks again.
                let fresh = self.receipt_row(r.transaction_id as u64).await?;
                let flow = self.flow(&fresh).await?;
                if flow.decision == Decision::Open {
                    Err(wrong_state(
                        "the exchange moved on meanwhile; fetch the receipt again",
                    ))
                } else {
                    flow.answer(request).map_err(rerr)
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn arbiter_view(&self, transaction: u64, answer: Answer) -> Result<ArbiterView> {
        let r = self.receipt_row(transaction).await?;
        let flow = self.flow(&r).await?;
        Ok(ArbiterView {
            transaction,
            decision: flow.decision.standing(),
            signature: match answer {
                Answer::Signature(s) => Some(s.to_hex()),
                Answer::Aborted => None,
            },
            receipt: self.receipt_view(&r),
        })
    }
}
