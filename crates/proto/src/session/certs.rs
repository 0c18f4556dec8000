//! Temporary certificates (SPEC M7; issue [7] step 6): a party's key for one session, vouched
//! for by an operator, naming nothing else. The customer's operator (AM) certifies the
//! customer's session key, the merchant's operator (MTA) checks that under the AM's node key
//! and certifies the same key again under its own for the merchant; the reverse for the
//! merchant agent's key. Each party checks the other's certificate under its *own* operator's
//! node key, and neither learns who the other is from the payment system.
//!
//! ```text
//! cert = SignedRecord {domain "tally/session-cert/v1",
//!        bytes: RFC 8785 JSON of {session, role: "customer" | "merchant", key (Ed25519, hex),
//!                                  issuer (node id), not_after (µs)},
//!        signature by the issuer's node key}
//! ```
//!
//! Vector: `docs/protocols/vectors/session_cert.json`.

use super::ids::{NodeId, SessionId};
use serde::{Deserialize, Serialize};
use tally_kernel::crypto::canonical::SignedRecord;
use tally_kernel::crypto::{SigningKey, VerifyingKey};

/// The certificates' domain.
pub const CERT_DOMAIN: &str = "tally/session-cert/v1";
/// Largest certificate, bytes.
pub const CERT_LEN_MAX: usize = 2048;

/// Whose key a certificate vouches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The customer's session key.
    Customer,
    /// The merchant agent's key.
    Merchant,
}

/// What a certificate says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionCert {
    /// The one session it is good for.
    pub session: SessionId,
    /// Whose key.
    pub role: Role,
    /// The key (Ed25519, hex).
    pub key: String,
    /// The operator node that vouches for it.
    pub issuer: NodeId,
    /// Good until then (µs).
    pub not_after: i64,
}

/// Why a certificate was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// Not a certificate, too large, or a key that is not one.
    #[error("not a session certificate")]
    Malformed,
    /// Not signed by the operator it must come from.
    #[error("the certificate is not signed by the operator that must vouch for it")]
    BadSignature,
    /// For another session or role.
    #[error("a certificate for another session or party")]
    Mismatch,
    /// Past its time.
    #[error("the certificate has expired")]
    Expired,
}

impl SessionCert {
    /// The certificate signed by `issuer` (its node key), as JSON text.
    pub fn issue(&self, issuer: &SigningKey) -> Result<String, CertError> {
        if NodeId::of(&issuer.verifying_key()) != self.issuer {
            return Err(CertError::Mismatch);
        }
        let record =
            SignedRecord::sign(CERT_DOMAIN, self, issuer).map_err(|_| CertError::Malformed)?;
        serde_json::to_string(&record).map_err(|_| CertError::Malformed)
    }

    /// Opens a certificate for `session` and `role` under the node key of the operator that
    /// must have issued it, at `now` (µs).
    pub fn open(
        text: &str,
        issuer: &VerifyingKey,
        session: SessionId,
        role: Role,
        now: i64,
    ) -> Result<SessionCert, CertError> {
        if text.len() > CERT_LEN_MAX {
            return Err(CertError::Malformed);
        }
        let record: SignedRecord = serde_json::from_str(text).map_err(|_| CertError::Malformed)?;
        if record.domain != CERT_DOMAIN {
            return Err(CertError::Malformed);
        }
        record.verify(issuer).map_err(|_| CertError::BadSignature)?;
        if !record.is_canonical() {
            return Err(CertError::Malformed);
        }
        let cert: SessionCert =
            serde_json::from_slice(&record.bytes).map_err(|_| CertError::Malformed)?;
        if cert.issuer != NodeId::of(issuer) {
            return Err(CertError::BadSignature);
        }
        if cert.session != session || cert.role != role {
            return Err(CertError::Mismatch);
        }
        if now >= cert.not_after {
            return Err(CertError::Expired);
        }
        cert.verifying_key()?;
        Ok(cert)
    }

    /// The key it vouches for.
    pub fn verifying_key(&self) -> Result<VerifyingKey, CertError> {
        VerifyingKey::from_hex(&self.key).map_err(|_| CertError::Malformed)
    }

    /// The same key vouched for by another operator (the re-signing of M7).
    pub fn reissued_by(&self, issuer: &SigningKey) -> Result<String, CertError> {
        SessionCert {
            issuer: NodeId::of(&issuer.verifying_key()),
            ..self.clone()
        }
        .issue(issuer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_767_225_600_000_000;

    fn am() -> SigningKey {
        SigningKey::from_seed(&[51; 32])
    }

    fn mta() -> SigningKey {
        SigningKey::from_seed(&[52; 32])
    }

    fn session() -> SessionId {
        SessionId::new(NodeId::of(&am().verifying_key()), 7).expect("id")
    }

    fn customer_cert() -> SessionCert {
        SessionCert {
            session: session(),
            role: Role::Customer,
            key: SigningKey::from_seed(&[53; 32]).verifying_key().to_hex(),
            issuer: NodeId::of(&am().verifying_key()),
            not_after: T0 + 3_600_000_000,
        }
    }

    #[test]
    fn the_merchants_operator_checks_and_vouches_again_for_the_customers_key() {
        let text = customer_cert().issue(&am()).expect("issue");
        // Only the AM may issue a certificate naming itself.
        assert_eq!(customer_cert().issue(&mta()), Err(CertError::Mismatch));
        let at_mta = SessionCert::open(&text, &am().verifying_key(), session(), Role::Customer, T0)
            .expect("the AM's");
        let again = at_mta.reissued_by(&mta()).expect("reissue");
        // The merchant checks it under its own operator's key.
        let seen = SessionCert::open(
            &again,
            &mta().verifying_key(),
            session(),
            Role::Customer,
            T0,
        )
        .expect("the MTA's");
        assert_eq!(seen.key, customer_cert().key);
        // Not under another key, not for another session or party, not after its time.
        assert_eq!(
            SessionCert::open(&again, &am().verifying_key(), session(), Role::Customer, T0),
            Err(CertError::BadSignature)
        );
        let other = SessionId::new(NodeId::of(&am().verifying_key()), 8).expect("id");
        assert_eq!(
            SessionCert::open(&again, &mta().verifying_key(), other, Role::Customer, T0),
            Err(CertError::Mismatch)
        );
        assert_eq!(
            SessionCert::open(
                &again,
                &mta().verifying_key(),
                session(),
                Role::Merchant,
                T0
            ),
            Err(CertError::Mismatch)
        );
        assert_eq!(
            SessionCert::open(
                &again,
                &mta().verifying_key(),
                session(),
                Role::Customer,
                T0 + 3_600_000_000
            ),
            Err(CertError::Expired)
        );
        // Every changed byte is refused or opens to the same certificate.
        for i in 0..again.len() {
            let mut bytes = again.clone().into_bytes();
            bytes[i] ^= 1;
            let Ok(text) = String::from_utf8(bytes) else {
                continue;
            };
            if let Ok(c) =
                SessionCert::open(&text, &mta().verifying_key(), session(), Role::Customer, T0)
            {
                assert_eq!(c, seen, "byte {i}");
            }
        }
        // It names the key and the session only: nothing of who the customer is.
        let v: serde_json::Value = serde_json::from_str(&again).expect("json");
        let body: serde_json::Value =
            serde_json::from_str(v["bytes"].as_str().expect("bytes")).expect("json");
        let mut fields: Vec<_> = body.as_object().expect("object").keys().cloned().collect();
        fields.sort();
        assert_eq!(fields, ["issuer", "key", "not_after", "role", "session"]);
    }

    #[test]
    fn the_golden_vector_holds() {
        let text = customer_cert().issue(&am()).expect("issue");
        let again = SessionCert::open(&text, &am().verifying_key(), session(), Role::Customer, T0)
            .expect("open")
            .reissued_by(&mta())
            .expect("reissue");
        let computed = serde_json::json!({
            "am_key": am().verifying_key().to_hex(),
            "mta_key": mta().verifying_key().to_hex(),
            "customer_cert": text,
            "customer_cert_by_mta": again,
        });
        crate::pinned::check(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../docs/protocols/vectors/session_cert.json"
            ),
            &computed,
        );
    }
}
