//! The receipt protocol (seed blocks 301–316): the offer, B's verifiable escrow (fair
//! exchange), B's signature with the node's signatures for A and itself and the secure write,
//! B's acknowledgement, and the write's counted retries. Each is a step of the receipt's
//! machine; the cryptography is done here and the machine told what verified.

use super::{
    ESCROW_AAD, NewReceipt, RETRY_COUNT_S, ReceiptServiceError, ReceiptView, Receipts, SignReceipt,
    WriteRequest, fp_bytes, random_id, rerr, revoked_meanwhile,
};
use crate::Missing;
use crate::access::{check_name, invalid, namespaced, parse_hex};
use crate::identity::setup;
use crate::{Principal, Result, ServiceError};
use tally_kernel::Timestamp;
use tally_kernel::crypto::bls::{Check, EncryptedSignature, encrypt_signature};
use tally_kernel::crypto::{Certificate, seal};
use tally_proto::effects::Effects;
use tally_proto::receipt::exchange::Request;
use tally_proto::receipt::flow::{Flow, FlowInput, ReceiptState};
use tally_proto::receipt::token::{self as ptoken, CHALLENGE_LEN, SERIAL_LEN, WriteContent};
use tally_proto::receipt::{
    self as proto, Fields, PartyKey, PartySignature, Receipt, ReceiptError, VERSION_BLS,
    VERSION_ED25519,
};
use tally_store::Attachment;
use tally_store::receipts::{
    ReceiptRow, insert_receipt, party_unrevoked, step_receipt, warrant_unrevoked,
};

/// Where B's token write goes: serial, challenge, slot.
type WriteTarget = ([u8; SERIAL_LEN], [u8; CHALLENGE_LEN], u16);

impl Receipts {
    /// Offers a record for signing (blocks 301–303): both parties must trace to the node CA and
    /// A must have warranted the node to sign with B. For a fair exchange the node signs for A
    /// now and keeps the signature back, sending only an escrow of it. With `proxy_b` the node
    /// signs for both under their warrants and the receipt is complete at once.
    pub async fn offer(
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
        if let Some(replay) = self.offer_replay(&key, &req).await? {
            return Ok((replay, true));
        }
        let [a, b] = self.parties([&req.party_a, &req.party_b]).await?;
        let cert_a = self.party_cert(&a, "party A")?;
        let cert_b = self.party_cert(&b, "party B")?;
        self.unrevoked_both([(&cert_a, "party A"), (&cert_b, "party B")])
            .await?;
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
        let now = self.core.now();
        let fields = Fields {
            version,
            server_id: fp_bytes(&self.server.verifying_key()),
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
            state: ReceiptState::Offered,
            signature_a: None,
            signature_b: None,
            signature_server: None,
            certificate_server: None,
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
                .proxy_bls
                .sign(proto::PARTY_DOMAIN, &fields.party_part());
            row.escrow_a = Some(match &self.arbiter_link {
                // For an arbiter node: a verifiable encryption only that node opens.
                Some(link) => encrypt_signature(
                    &self.proxy_bls,
                    &link.key(),
                    proto::PARTY_DOMAIN,
                    &fields.party_part(),
                )
                .to_bytes()
                .to_vec(),
                None => {
                    let aad = [ESCROW_AAD, &fields.party_part()].concat();
                    seal::seal(self.escrow_key.expose(), &aad, &sig_a.to_bytes()).map_err(setup)?
                }
            });
            row.signature_a = Some(sig_a.to_bytes().to_vec());
        }
        let mut attachments = vec![insert_receipt(&row), warrant_unrevoked(&warrant_a.serial)];
        if let Some(w) = &warrant_b {
            attachments.push(warrant_unrevoked(&w.serial));
        }
        let outcome = self
            .core
            .commit(
                key.clone(),
                Effects::record(
                    "receipt_offered",
                    serde_json::json!({
                        "transaction": fields.transaction, "party_a": a.name, "party_b": b.name,
                        "content_hash": hex::encode(fields.content_hash), "fair": req.fair,
                        "warrant_a": warrant_a.serial,
                    }),
                ),
                attachments,
            )
            .await
            .map_err(revoked_meanwhile);
        let outcome = match outcome {
            Ok(o) => o,
            // A retry that raced the first request: the first one's receipt, if it offered
            // the same.
            Err(ServiceError::Ledger(tally_ledger::LedgerError::IdempotencyConflict)) => {
                return match self.offer_replay(&key, &req).await? {
                    Some(replay) => Ok((replay, true)),
                    None => Err(ServiceError::IdempotencyKeyReused),
                };
            }
            Err(e) => return Err(e),
        };
        let row = if outcome.replayed {
            self.core
                .store()
                .receipt_by_key(&key)
                .await?
                .ok_or(ServiceError::IdempotencyKeyReused)?
        } else {
            row
        };
        if req.proxy_b && row.state == ReceiptState::Offered {
            let sig_b = self.proxy_sign(&fields)?;
            let flow = self.flow(&row).await?;
            let done = self.complete(row, flow, &fields, sig_b, None).await?;
            return Ok((self.receipt_view(&done), outcome.replayed));
        }
        Ok((self.receipt_view(&row), outcome.replayed))
    }

    /// The receipt offered earlier under `key`, if any (a `proxy_b` offer whose completion did
    /// not happen is finished now); refused when it offered something else.
    async fn offer_replay(&self, key: &str, req: &NewReceipt) -> Result<Option<ReceiptView>> {
        let Some(r) = self.core.store().receipt_by_key(key).await? else {
            return Ok(None);
        };
        let same = r.party_a == req.party_a
            && r.party_b == req.party_b
            && r.record == req.record
            && r.fair == req.fair
            && r.warrant_b.is_some() == req.proxy_b;
        if !same {
            return Err(ServiceError::IdempotencyKeyReused);
        }
        if r.state == ReceiptState::Offered && r.warrant_b.is_some() {
            let fields = self.fields(&r)?;
            let sig_b = self.proxy_sign(&fields)?;
            let flow = self.flow(&r).await?;
            let done = self.complete(r, flow, &fields, sig_b, None).await?;
            return Ok(Some(self.receipt_view(&done)));
        }
        Ok(Some(self.receipt_view(&r)))
    }

    fn proxy_sign(&self, fields: &Fields) -> Result<PartySignature> {
        let msg = fields.party_part();
        Ok(if fields.version == VERSION_BLS {
            PartySignature::Bls(self.proxy_bls.sign(proto::PARTY_DOMAIN, &msg))
        } else {
            PartySignature::Ed25519(self.server.sign(proto::PARTY_DOMAIN, &msg))
        })
    }

    /// The fields of a stored receipt (the fingerprints are the ones of the offer).
    pub(crate) fn fields(&self, r: &ReceiptRow) -> Result<Fields> {
        let b32 = |v: &[u8]| -> Result<[u8; 32]> {
            v.try_into()
                .map_err(|_| setup("a stored hash is not 32 bytes"))
        };
        Ok(Fields {
            version: r.version as u8,
            server_id: fp_bytes(&self.server.verifying_key()),
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
    pub(crate) fn parties_of(&self, r: &ReceiptRow) -> Result<(Certificate, Certificate)> {
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

    pub(crate) async fn receipt_row(&self, transaction: u64) -> Result<ReceiptRow> {
        let t = i64::try_from(transaction).map_err(|_| invalid("transaction", "out of range"))?;
        self.core
            .store()
            .receipt(t)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: Missing::Receipt,
                id: transaction.to_string(),
            })
    }

    /// A receipt the caller is a party to (or offered, or the operator).
    pub async fn receipt(&self, by: &Principal, transaction: u64) -> Result<ReceiptView> {
        let r = self.receipt_row(transaction).await?;
        self.may_see(by, &r)?;
        Ok(self.receipt_view(&r))
    }

    pub(crate) fn may_see(&self, by: &Principal, r: &ReceiptRow) -> Result<()> {
        if by.is_admin() || [&r.party_a, &r.party_b, &r.created_by].contains(&&by.owner) {
            Ok(())
        } else {
            Err(ServiceError::NotFound {
                what: Missing::Receipt,
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
    pub async fn list(&self, by: &Principal) -> Result<Vec<ReceiptView>> {
        let party = (!by.is_admin()).then_some(by.owner.as_str());
        Ok(self
            .core
            .store()
            .receipts(party, 1000)
            .await?
            .iter()
            .map(|r| self.receipt_view(r))
            .collect())
    }

    /// Block 305–308: B's verifiably encrypted signature. If it verifies under B's certified
    /// BLS key and the arbiter's key, the node releases A's signature; if not, the node asks
    /// the arbiter to abort (block 307) and the exchange is over.
    pub async fn escrow(
        &self,
        by: &Principal,
        transaction: u64,
        ves_hex: &str,
    ) -> Result<ReceiptView> {
        let r = self.receipt_row(transaction).await?;
        self.require_b(by, &r)?;
        let flow = self.flow(&r).await?;
        let same_as_stored =
            r.ves_b.as_deref().map(hex::encode) == Some(ves_hex.trim().to_ascii_lowercase());
        // Where the receipt stands decides first; the cryptography only for a real step.
        let (_, effects) = flow
            .handle(FlowInput::Escrow {
                verified: true,
                same_as_stored,
            })
            .map_err(rerr)?;
        if effects.is_none() {
            return Ok(self.receipt_view(&r));
        }
        let (_, cert_b) = self.parties_of(&r)?;
        // A revoked B escrows nothing: A's signature is not released to it.
        self.unrevoked(&cert_b, "party B").await?;
        let fields = self.fields(&r)?;
        let decoded = EncryptedSignature::from_hex(ves_hex.trim())
            .map_err(|e| e.to_string())
            .and_then(|ves| {
                let key = super::package::b_bls_key(&cert_b).map_err(|e| e.to_string())?;
                let check = Check::Encrypted {
                    key,
                    arbiter: self.arbiter_public(),
                    domain: proto::PARTY_DOMAIN,
                    msg: fields.party_part().to_vec(),
                    ves,
                };
                Ok((ves, check))
            });
        let verdict = match decoded {
            Ok((ves, check)) => self
                .batcher
                .verify(check)
                .await?
                .map(|()| ves)
                .map_err(|e| e.to_string()),
            Err(why) => Err(why),
        };
        match verdict {
            Ok(ves) => {
                let (moved, effects) = flow
                    .handle(FlowInput::Escrow {
                        verified: true,
                        same_as_stored,
                    })
                    .map_err(rerr)?;
                let mut next = r.clone();
                next.ves_b = Some(ves.to_bytes().to_vec());
                next.state = moved.state;
                next.updated_at = self.core.now();
                let effects = effects.renamed(
                    "receipt_escrowed",
                    serde_json::json!({ "ves_b": hex::encode(ves.to_bytes()) }),
                );
                self.step(&r, &next, effects).await?;
                Ok(self.receipt_view(&next))
            }
            Err(why) => {
                // Block 307: the originator aborts at the arbiter.
                self.decide(&r, Request::Abort, "node").await?;
                Err(rerr(ReceiptServiceError::BadEscrow(format!(
                    "{why}; the node asked the arbiter to abort the exchange"
                ))))
            }
        }
    }

    /// Blocks 309–315: B's signature (and token write request). The node verifies it with B's
    /// certificate, signs for A under A's warrant (or releases A's escrowed signature), signs
    /// fields 1–5 itself, stores the receipt and seals the secure write. In a fair exchange a
    /// bad signature from B makes the node resolve at the arbiter with B's escrow (block 314).
    pub async fn sign(
        &self,
        by: &Principal,
        transaction: u64,
        req: SignReceipt,
    ) -> Result<ReceiptView> {
        let r = self.receipt_row(transaction).await?;
        self.require_b(by, &r)?;
        let same_as_stored = r.signature_b.as_deref().map(hex::encode)
            == Some(req.signature_b.trim().to_ascii_lowercase());
        let flow = self.flow(&r).await?;
        let (_, effects) = flow
            .handle(FlowInput::Sign { same_as_stored })
            .map_err(rerr)?;
        if effects.is_none() {
            return Ok(self.receipt_view(&r));
        }
        let (_, cert_b) = self.parties_of(&r)?;
        let fields = self.fields(&r)?;
        let write = match &req.token {
            Some(w) => Some(self.write_target(&r.party_b, w).await?),
            None => None,
        };
        let checked =
            match PartySignature::from_hex(fields.version, &req.signature_b).and_then(|sig| {
                Ok((
                    proto::signing_key("party B", fields.version, &cert_b, None)?,
                    sig,
                ))
            }) {
                Ok((key, sig)) => self
                    .check_party(key, &fields, sig, "party B")
                    .await?
                    .map(|()| sig),
                Err(e) => Err(e),
            };
        match checked {
            Ok(sig_b) => {
                let done = self.complete(r, flow, &fields, sig_b, write).await?;
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

    /// [`PartyKey::verify`], with a BLS signature verified in a batch with other requests'
    /// (see [`super::batch`]). The outer error is the node's, the inner one the signature's.
    async fn check_party(
        &self,
        key: PartyKey,
        fields: &Fields,
        sig: PartySignature,
        who: &'static str,
    ) -> Result<std::result::Result<(), ReceiptError>> {
        Ok(match (key, sig) {
            (PartyKey::Bls(key), PartySignature::Bls(sig)) => self
                .batcher
                .verify(Check::Signature {
                    key,
                    domain: proto::PARTY_DOMAIN,
                    msg: fields.party_part().to_vec(),
                    sig,
                })
                .await?
                .map_err(|_| ReceiptError::BadSignature(who)),
            (key, sig) => key.verify(fields, &sig, who),
        })
    }

    async fn write_target(&self, holder: &str, w: &WriteRequest) -> Result<WriteTarget> {
        let bad = |why: &str| rerr(ReceiptServiceError::BadWrite(why.to_string()));
        let serial: [u8; SERIAL_LEN] = parse_hex("token.serial", &w.serial)?;
        let challenge: [u8; CHALLENGE_LEN] = parse_hex("token.challenge", &w.challenge)?;
        let t = self
            .core
            .store()
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
    /// secure write; the machine's signing step, under guards on the receipt's state and on
    /// the warrants of signatures made now.
    /// `flow` is `r`'s machine, as [`Receipts::flow`] read it for this request.
    async fn complete(
        &self,
        r: ReceiptRow,
        flow: Flow,
        fields: &Fields,
        sig_b: PartySignature,
        write: Option<WriteTarget>,
    ) -> Result<ReceiptRow> {
        let (moved, effects) = flow
            .handle(FlowInput::Sign {
                same_as_stored: false,
            })
            .map_err(rerr)?;
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
        let (mut next, receipt) = self.signed(&r, fields, sig_a, sig_b, moved.state);
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
        let effects = effects.renamed(
            "receipt_signed",
            serde_json::json!({
                "receipt_digest": next.digest, "party_a": r.party_a, "party_b": r.party_b,
                "warrant_a": r.warrant_a, "warrant_b": r.warrant_b,
                "receipt_number": next.receipt_number,
            }),
        );
        let key = format!(":receipt:{}:{}", r.transaction_id, next.state);
        next.journal_key = Some(key.clone());
        let mut rows: Vec<Attachment> = step_receipt(&next, r.state).into();
        let proxied_now = [
            r.warrant_a.as_ref().filter(|_| r.signature_a.is_none()),
            r.warrant_b.as_ref(),
        ];
        for w in proxied_now.into_iter().flatten() {
            rows.push(warrant_unrevoked(w));
        }
        // The certificates of the signatures made now must be unrevoked when this commits:
        // decided by a guard in the transaction (a refusal then says which was revoked).
        let signing_now = [
            ("party A", &r.certificate_a, r.signature_a.is_none()),
            ("party B", &r.certificate_b, true),
        ];
        let mut certs = Vec::new();
        for (who, der, now) in signing_now {
            if now {
                let cert = Certificate::from_der(der).map_err(setup)?;
                rows.push(party_unrevoked(&cert.serial_hex(), &key));
                certs.push((who, cert));
            }
        }
        match self.core.commit(key, effects, rows).await {
            Ok(_) => Ok(next),
            Err(e @ ServiceError::Conflict(tally_store::Conflict::Revoked(_))) => {
                // A warrant or a certificate was revoked meanwhile: say which.
                for (who, cert) in &certs {
                    self.unrevoked(cert, who).await?;
                }
                Err(revoked_meanwhile(e))
            }
            Err(e) => Err(revoked_meanwhile(e)),
        }
    }

    /// `r` completed: both parties' signatures and the server's over fields 1–5 (with the
    /// server certificate it signed under), moved to `state` with the core's digest (which
    /// the journal entry names); and the core.
    pub(crate) fn signed(
        &self,
        r: &ReceiptRow,
        fields: &Fields,
        sig_a: PartySignature,
        sig_b: PartySignature,
        state: ReceiptState,
    ) -> (ReceiptRow, Receipt) {
        let sig_server = self
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
        next.certificate_server = Some(self.server_cert.to_der());
        next.state = state;
        next.digest = Some(digest);
        next.updated_at = self.core.now();
        (next, receipt)
    }

    /// Commits a step of `r` to `next` with the machine's effects, guarded on `r`'s state.
    pub(crate) async fn step(
        &self,
        r: &ReceiptRow,
        next: &ReceiptRow,
        effects: Effects,
    ) -> Result<()> {
        let key = format!(":receipt:{}:{}", next.transaction_id, next.state);
        self.core
            .commit(key, effects, step_receipt(next, r.state).into())
            .await
            .map_err(revoked_meanwhile)?;
        Ok(())
    }

    /// Block 316: B acks the write with its receipt number. Acking again is harmless.
    pub async fn ack(
        &self,
        by: &Principal,
        transaction: u64,
        receipt_number: u64,
    ) -> Result<ReceiptView> {
        let r = self.receipt_row(transaction).await?;
        self.require_b(by, &r)?;
        if r.receipt_number.is_some_and(|n| n as u64 != receipt_number) {
            return Err(invalid("receipt_number", "is not this receipt's number"));
        }
        let (moved, effects) = self.flow(&r).await?.handle(FlowInput::Ack).map_err(rerr)?;
        if effects.is_none() {
            return Ok(self.receipt_view(&r));
        }
        let mut next = r.clone();
        next.acked_at = Some(self.core.now());
        next.state = moved.state;
        next.updated_at = self.core.now();
        let effects = effects.renamed(
            "receipt_acked",
            serde_json::json!({ "receipt_number": r.receipt_number }),
        );
        self.core
            .commit(
                format!(":receipt:{}:acked", r.transaction_id),
                effects,
                step_receipt(&next, r.state).into(),
            )
            .await?;
        Ok(self.receipt_view(&next))
    }

    /// The writes to a token still waiting for their ack (the node retries them each time the
    /// holder asks; each retry is counted).
    pub async fn token_writes(&self, by: &Principal, serial: &str) -> Result<Vec<ReceiptView>> {
        let serial = serial.trim().to_ascii_lowercase();
        let t = self
            .core
            .store()
            .receipt_token(&serial)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: Missing::Token,
                id: serial.clone(),
            })?;
        if !by.is_admin() && by.owner != t.holder {
            return Err(ServiceError::NotFound {
                what: Missing::Token,
                id: serial,
            });
        }
        let mut out = Vec::new();
        for r in self.core.store().unacked_writes(&serial).await? {
            // A retry is journaled at most every RETRY_COUNT_S seconds per receipt, so a client
            // polling in a loop cannot grow the journal.
            if self.core.now().as_micros() - r.updated_at.as_micros() < RETRY_COUNT_S * 1_000_000 {
                out.push(self.receipt_view(&r));
                continue;
            }
            let Ok((moved, effects)) = self.flow(&r).await?.handle(FlowInput::RetryWrite) else {
                out.push(self.receipt_view(&r));
                continue;
            };
            let mut next = r.clone();
            next.write_attempts = moved.write_attempts;
            next.updated_at = self.core.now();
            // Counting is best effort: a concurrent ack wins and the write is still shown.
            let _ = self
                .core
                .commit(
                    format!(
                        ":receipt:{}:retry:{}",
                        r.transaction_id, next.write_attempts
                    ),
                    effects,
                    step_receipt(&next, r.state).into(),
                )
                .await;
            out.push(self.receipt_view(&next));
        }
        Ok(out)
    }
}
