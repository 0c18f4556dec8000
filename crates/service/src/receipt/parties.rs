//! Parties, tokens and warrants: who may be party to a receipt (certified by the node CA),
//! the tokens receipts are written to, the warrants that let the node sign for a party, and
//! the certificate and warrant checks (with their signature checks remembered).

use super::{
    CHECKED_MAX, IssuedToken, NewToken, OfferWarrant, PARTY_ROLES, ReceiptServiceError, Receipts,
    TokenView, WarrantView, counterparties_text, rerr, wrong_state,
};
use crate::Missing;
use crate::access::{check_name, invalid, namespaced, parse_hex, require_admin};
use crate::identity::{getrandom_fill, setup};
use crate::{Principal, Result, ServiceError};
use tally_kernel::crypto::bls::{BlsPublicKey, BlsSignature};
use tally_kernel::crypto::kdf::sha256;
use tally_kernel::crypto::warrant::{self as kwarrant, WarrantTerms};
use tally_kernel::crypto::{Certificate, Signature, VerifyingKey};
use tally_kernel::{Secret, Timestamp};
use tally_proto::effects::Effects;
use tally_proto::receipt::request::CertificationRequest;
use tally_proto::receipt::token::{self as ptoken, SERIAL_LEN};
use tally_proto::receipt::{self as proto, ReceiptError};
use tally_store::receipts::{
    PartyRow, TokenRow, WarrantRow, insert_warrant, issue_token, revoke_warrant,
};

/// What a token request asks for, as compared with an earlier one under the same key.
struct TokenAsked<'a> {
    holder: &'a str,
    role: &'a str,
    fingerprint: String,
    bls_key: Option<Vec<u8>>,
    slots: i64,
}

impl Receipts {
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
        let public = VerifyingKey::from_hex(req.public_key.trim())
            .map_err(|e| invalid("public_key", e.to_string()))?;
        let bls = match &req.bls_key {
            Some(hex) => Some(
                BlsPublicKey::from_hex(hex.trim())
                    .map_err(|e| invalid("bls_key", e.to_string()))?,
            ),
            None => None,
        };
        // Proof of possession: the holder signed this request with the keys to certify.
        let ed25519 = Signature::from_hex(req.proof.ed25519.trim())
            .map_err(|e| invalid("proof", format!("ed25519: {e}")))?;
        let bls_proof = match &req.proof.bls {
            Some(hex) => Some(
                BlsSignature::from_hex(hex.trim())
                    .map_err(|e| invalid("proof", format!("bls: {e}")))?,
            ),
            None => None,
        };
        CertificationRequest {
            holder: &req.holder,
            role: &req.role,
            public_key: &public,
            bls_key: bls.as_ref(),
        }
        .check(&ed25519, bls_proof.as_ref())
        .map_err(|e| invalid("proof", e.to_string()))?;
        let slots = req.slots.unwrap_or(16);
        if slots == 0 || slots > ptoken::SLOTS_MAX {
            return Err(invalid("slots", "must be 1..=1024"));
        }
        let asked = TokenAsked {
            holder: &req.holder,
            role: &req.role,
            fingerprint: public.fingerprint(),
            bls_key: bls.map(|b| b.to_bytes().to_vec()),
            slots: i64::from(slots),
        };
        if let Some(replay) = self.token_replay(&key, &asked).await? {
            return Ok((replay, true));
        }
        let mut serial = [0u8; SERIAL_LEN];
        getrandom_fill(&mut serial)?;
        let now = self.core.now();
        let days = i64::from(req.days.unwrap_or(365).clamp(1, 3650));
        let not_after = now
            .plus_seconds(days * 86_400)
            .min(self.core.ca().certificate().not_after());
        let ext = match &bls {
            Some(b) => Some(kwarrant::bls_key_extension(&b.to_bytes()).map_err(setup)?),
            None => None,
        };
        let extra: Vec<(&str, &[u8], bool)> = ext
            .as_deref()
            .map(|e| vec![(kwarrant::OID_BLS_KEY, e, false)])
            .unwrap_or_default();
        let cert = self
            .core
            .ca()
            .issue(
                &req.holder,
                &public,
                &req.role,
                now.max(self.core.ca().certificate().not_before()),
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
            .core
            .commit(
                key.clone(),
                Effects::record(
                    "receipt_token_issued",
                    serde_json::json!({
                        "serial": token.serial, "holder": req.holder, "role": req.role,
                        "slots": slots, "fingerprint": party.fingerprint,
                        "certificate_serial": cert.serial_hex(),
                    }),
                ),
                issue_token(&token, &party).into(),
            )
            .await;
        let outcome = match outcome {
            Ok(o) => o,
            Err(ServiceError::Conflict(tally_store::Conflict::Taken(why))) => {
                return Err(invalid("public_key", why));
            }
            // A retry that raced the first request: the first one's token, if it asked the same.
            Err(ServiceError::Ledger(tally_ledger::LedgerError::IdempotencyConflict)) => {
                return match self.token_replay(&key, &asked).await? {
                    Some(replay) => Ok((replay, true)),
                    None => Err(ServiceError::IdempotencyKeyReused),
                };
            }
            Err(e) => return Err(e),
        };
        let token = if outcome.replayed {
            self.core
                .store()
                .receipt_token_by_key(&key)
                .await?
                .ok_or(ServiceError::IdempotencyKeyReused)?
        } else {
            token
        };
        Ok((self.issued(&token).await?, outcome.replayed))
    }

    /// The token issued earlier under `key`, if any; refused when it was issued for another
    /// request (the same key cannot mean two tokens).
    async fn token_replay(&self, key: &str, asked: &TokenAsked<'_>) -> Result<Option<IssuedToken>> {
        let Some(t) = self.core.store().receipt_token_by_key(key).await? else {
            return Ok(None);
        };
        let party = self.party(&t.holder).await?;
        let same = t.holder == asked.holder
            && t.slots == asked.slots
            && party.role == asked.role
            && party.fingerprint == asked.fingerprint
            && party.bls_key == asked.bls_key;
        if !same {
            return Err(ServiceError::IdempotencyKeyReused);
        }
        Ok(Some(self.issued(&t).await?))
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

    pub(crate) fn app_key(&self, serial: &[u8; SERIAL_LEN]) -> Secret<[u8; 32]> {
        ptoken::application_key(self.master.expose(), serial)
    }

    /// Tokens issued: all (admin) or the caller's.
    pub async fn tokens(&self, by: &Principal) -> Result<Vec<TokenView>> {
        let holder = (!by.is_admin()).then_some(by.owner.as_str());
        let mut out = Vec::new();
        for t in self.core.store().receipt_tokens(holder).await? {
            let unacked = self.core.store().unacked_writes(&t.serial).await?.len();
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

    pub(crate) async fn party(&self, name: &str) -> Result<PartyRow> {
        found(self.core.store().receipt_party(name).await?, name)
    }

    /// Two parties by name, read together (the offer names both).
    pub(crate) async fn parties(&self, names: [&str; 2]) -> Result<[PartyRow; 2]> {
        let [a, b] = self.core.store().receipt_parties(names).await?;
        Ok([found(a, names[0])?, found(b, names[1])?])
    }

    /// A party's certificate, checked against the node CA now (block 303).
    pub(crate) fn party_cert(&self, p: &PartyRow, who: &'static str) -> Result<Certificate> {
        let bad = |why: String| rerr(ReceiptError::BadCertificate { who, why });
        let cert = Certificate::from_der(&p.certificate).map_err(|e| bad(e.to_string()))?;
        self.cert_checked(&cert, self.core.now()).map_err(|e| {
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
        let terms = kwarrant::check_warrant(
            &w,
            &party_cert,
            self.core.ca().certificate(),
            self.core.now(),
        )
        .map_err(|e| bad(e.to_string()))?;
        let subject = w.public_key().map_err(|e| bad(e.to_string()))?;
        if subject != self.server.verifying_key() {
            return Err(bad(
                "it is for another key than this node's receipt server key".into(),
            ));
        }
        if let Some(b) = terms.bls_key
            && b != self.proxy_bls.public_key().to_bytes()
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
            created_at: self.core.now(),
        };
        if let Some(existing) = self.core.store().warrant(&row.serial).await? {
            // The issuer picks the serial: only the very same warrant is a retry.
            if existing.certificate != row.certificate {
                return Err(bad(format!(
                    "another warrant with serial {} is already stored; issue it again",
                    row.serial
                )));
            }
            return Ok(warrant_view(&existing));
        }
        self.core
            .commit(
                format!(":warrant:{}", row.serial),
                Effects::record(
                    "warrant_added",
                    serde_json::json!({
                        "serial": row.serial, "issuer": issuer,
                        "counterparties": row.counterparties,
                        "not_before": row.not_before, "not_after": row.not_after,
                    }),
                ),
                vec![insert_warrant(&row)],
            )
            .await?;
        Ok(warrant_view(&row))
    }

    /// Revokes a warrant (its issuer or the operator). Proxy signatures made before stay.
    pub async fn warrant_revoke(&self, by: &Principal, serial: &str) -> Result<WarrantView> {
        let serial = serial.trim().to_ascii_lowercase();
        let w = self.warrant_row(&serial).await?;
        if !by.is_admin() && by.owner != w.issuer {
            return Err(ServiceError::Forbidden("only its issuer revokes a warrant"));
        }
        if w.revoked_at.is_some() {
            return Ok(warrant_view(&w));
        }
        let now = self.core.now();
        let result = self
            .core
            .commit(
                format!(":warrant:{serial}:revoked"),
                Effects::record(
                    "warrant_revoked",
                    serde_json::json!({ "serial": serial, "by": by.owner }),
                ),
                revoke_warrant(&serial, now).into(),
            )
            .await;
        match result {
            Ok(_) | Err(ServiceError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        let w = self.warrant_row(&serial).await?;
        Ok(warrant_view(&w))
    }

    /// The stored warrant with this (lower-case hex) serial.
    async fn warrant_row(&self, serial: &str) -> Result<WarrantRow> {
        self.core
            .store()
            .warrant(serial)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: Missing::Warrant,
                id: serial.to_string(),
            })
    }

    /// What party B checks before its signature leaves: A's certificate and the warrant the
    /// node signs for A under, with its revocation state (the parties of the receipt only).
    pub async fn offer_warrant(&self, by: &Principal, transaction: u64) -> Result<OfferWarrant> {
        let r = self.receipt_row(transaction).await?;
        self.may_see(by, &r)?;
        let serial = r.warrant_a.clone().ok_or_else(|| {
            invalid(
                "transaction",
                "party A signs this receipt itself: no warrant",
            )
        })?;
        let w = self.warrant_row(&serial).await?;
        let cert = Certificate::from_der(&r.certificate_a).map_err(setup)?;
        Ok(OfferWarrant {
            party_certificate: cert.to_pem(),
            warrant: warrant_view(&w),
        })
    }

    /// Warrants: all (admin) or the caller's.
    pub async fn warrants(&self, by: &Principal) -> Result<Vec<WarrantView>> {
        let issuer = (!by.is_admin()).then_some(by.owner.as_str());
        Ok(self
            .core
            .store()
            .warrants(issuer)
            .await?
            .iter()
            .map(warrant_view)
            .collect())
    }

    fn remembered(&self, key: &[u8; 32]) -> Option<Option<WarrantTerms>> {
        let map = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).cloned()
    }

    fn remember(&self, key: [u8; 32], terms: Option<WarrantTerms>) {
        let mut map = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CHECKED_MAX {
            map.clear();
        }
        map.insert(key, terms);
    }

    /// `verify_issued_by` against the node CA, with the signature check remembered.
    pub(crate) fn cert_checked(
        &self,
        cert: &Certificate,
        now: Timestamp,
    ) -> std::result::Result<(), tally_kernel::crypto::CryptoError> {
        let ca = self.core.ca().certificate();
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
        let ca = self.core.ca().certificate();
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
    pub(crate) async fn find_warrant(
        &self,
        who: &'static str,
        party: &PartyRow,
        party_cert: &Certificate,
        counterparty: &str,
        bls: bool,
    ) -> Result<WarrantRow> {
        let now = self.core.now();
        let mut last_reason = None;
        for w in self.core.store().warrants(Some(&party.name)).await? {
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

    pub(crate) async fn recheck_warrant(
        &self,
        who: &'static str,
        serial: &str,
        cert_der: &[u8],
        other: &str,
    ) -> Result<()> {
        let refused = |why: String| rerr(ReceiptServiceError::NoWarrant(why));
        let w = self
            .core
            .store()
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
        self.cert_checked(&cert, self.core.now()).map_err(|e| {
            refused(format!(
                "{who}'s certificate is not valid now: {e}; nothing was signed"
            ))
        })?;
        self.proxy_checked(who, &w.certificate, &cert, other, self.core.now())
            .map_err(|e| refused(format!("{e}; nothing was signed")))?;
        Ok(())
    }
}

pub(crate) fn warrant_view(w: &WarrantRow) -> WarrantView {
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

/// The party `name` read, or `NotFound` naming it.
fn found(row: Option<PartyRow>, name: &str) -> Result<PartyRow> {
    row.ok_or_else(|| ServiceError::NotFound {
        what: Missing::Party,
        id: name.to_string(),
    })
}
