//! The holder's certification request (issue [6] item 13): proof of possession of the keys a
//! holder asks the node to certify for a token.
//!
//! ```text
//! statement = RFC 8785 JSON {"bls_key": hex | null, "holder", "public_key": hex, "role"}
//! ed25519   = Ed25519 over "tally/token-request/v1" 0x00 ‖ statement, by `public_key`
//! bls       = BLS12-381 over the same, by `bls_key` (when one is asked for)
//! ```
//!
//! The node certifies a key only with its signature over the statement naming it, the holder
//! and the role: a key copied from somewhere (another party's certificate) cannot be
//! certified for someone else, and a BLS key's signature rules out a rogue key made from
//! others' (the attack that makes aggregate BLS unsafe without proof of possession).
//!
//! Rejected: PKCS#10 (an X.509 request carries one key; the BLS key has no algorithm
//! identifier a CSR parser would accept, so it would need the signed statement anyway, and
//! one format for both keys is one thing to check).

use serde::Serialize;
use tally_kernel::crypto::bls::{BlsPublicKey, BlsSecretKey, BlsSignature};
use tally_kernel::crypto::canonical::canonical_json;
use tally_kernel::crypto::{Signature, SigningKey, VerifyingKey};

/// Domain tag of both proofs.
pub const REQUEST_DOMAIN: &[u8] = b"tally/token-request/v1\0";

/// What a holder asks the node to certify.
#[derive(Debug, Clone, Copy)]
pub struct CertificationRequest<'a> {
    /// The holder (the certificate's CN).
    pub holder: &'a str,
    /// Its role (`customer`, `merchant`, `manager`).
    pub role: &'a str,
    /// The Ed25519 key to certify.
    pub public_key: &'a VerifyingKey,
    /// The BLS key to certify beside it, if any.
    pub bls_key: Option<&'a BlsPublicKey>,
}

/// Why a proof of possession was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The Ed25519 signature does not verify under the key asked for.
    #[error("the Ed25519 proof does not verify under public_key over this request")]
    Ed25519,
    /// A BLS key is asked for without its signature.
    #[error("a BLS key needs its proof (proof.bls)")]
    BlsMissing,
    /// The BLS signature does not verify under the BLS key asked for.
    #[error("the BLS proof does not verify under bls_key over this request")]
    Bls,
    /// A BLS proof without a BLS key.
    #[error("a BLS proof without a bls_key")]
    BlsUnasked,
}

#[derive(Serialize)]
struct Statement<'a> {
    bls_key: Option<String>,
    holder: &'a str,
    public_key: String,
    role: &'a str,
}

impl CertificationRequest<'_> {
    /// The signed statement (canonical JSON).
    pub fn message(&self) -> Vec<u8> {
        canonical_json(&Statement {
            bls_key: self.bls_key.map(BlsPublicKey::to_hex),
            holder: self.holder,
            public_key: self.public_key.to_hex(),
            role: self.role,
        })
        // A struct of strings always serialises.
        .unwrap_or_default()
    }

    /// The holder's proofs, made with the keys it asks to certify.
    pub fn prove(
        &self,
        key: &SigningKey,
        bls: Option<&BlsSecretKey>,
    ) -> (Signature, Option<BlsSignature>) {
        let msg = self.message();
        (
            key.sign(REQUEST_DOMAIN, &msg),
            bls.map(|b| b.sign(REQUEST_DOMAIN, &msg)),
        )
    }

    /// Checks the proofs: the Ed25519 one always, the BLS one exactly when a BLS key is asked
    /// for.
    pub fn check(&self, ed25519: &Signature, bls: Option<&BlsSignature>) -> Result<(), ProofError> {
        let msg = self.message();
        self.public_key
            .verify(REQUEST_DOMAIN, &msg, ed25519)
            .map_err(|_| ProofError::Ed25519)?;
        match (self.bls_key, bls) {
            (None, None) => Ok(()),
            (None, Some(_)) => Err(ProofError::BlsUnasked),
            (Some(_), None) => Err(ProofError::BlsMissing),
            (Some(k), Some(s)) => k
                .verify(REQUEST_DOMAIN, &msg, s)
                .map_err(|_| ProofError::Bls),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(seed: u8) -> (SigningKey, BlsSecretKey) {
        (
            SigningKey::from_seed(&[seed; 32]),
            BlsSecretKey::from_seed(&[seed; 32]),
        )
    }

    #[test]
    fn a_proof_binds_the_keys_the_holder_and_the_role() {
        let (key, bls) = keys(7);
        let (public, bls_public) = (key.verifying_key(), bls.public_key());
        let req = CertificationRequest {
            holder: "alice",
            role: "customer",
            public_key: &public,
            bls_key: Some(&bls_public),
        };
        let (ed, b) = req.prove(&key, Some(&bls));
        assert_eq!(req.check(&ed, b.as_ref()), Ok(()));
        assert_eq!(req.check(&ed, None), Err(ProofError::BlsMissing));
        for other in [
            CertificationRequest {
                holder: "mallory",
                ..req
            },
            CertificationRequest {
                role: "manager",
                ..req
            },
        ] {
            assert_eq!(other.check(&ed, b.as_ref()), Err(ProofError::Ed25519));
        }
        // Someone else's key, certified for me: I cannot sign for it.
        let (thief, thief_bls) = keys(8);
        let (ed_thief, b_thief) = req.prove(&thief, Some(&thief_bls));
        assert_eq!(req.check(&ed_thief, b.as_ref()), Err(ProofError::Ed25519));
        assert_eq!(req.check(&ed, b_thief.as_ref()), Err(ProofError::Bls));
        let no_bls = CertificationRequest {
            bls_key: None,
            ..req
        };
        let (ed2, _) = no_bls.prove(&key, None);
        assert_eq!(no_bls.check(&ed2, None), Ok(()));
        assert_eq!(no_bls.check(&ed2, b.as_ref()), Err(ProofError::BlsUnasked));
    }
}
