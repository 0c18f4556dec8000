//! Party certificates revoked by the operator (issue [6] item 13), and online verification.
//!
//! A revoked certificate signs nothing more: an offer naming the party is refused, and a
//! signature step whose party certificate is revoked is refused — checked before it and
//! again by a guard inside its transaction, so a revocation that commits first wins. A
//! receipt completed before the revocation stands (its time is the journal's); online
//! verification (`POST /v1/receipts/verify`) checks a package against the node's CA like the
//! offline check and adds what only the node knows: which of its certificates and warrants
//! were revoked, and whether before the receipt's time.

use super::{Receipts, rerr};
use crate::access::{check_name, require_admin};
use crate::identity::setup;
use crate::{Principal, Result};
use tally_kernel::Timestamp;
use tally_kernel::crypto::Certificate;
use tally_proto::effects::Effects;
use tally_proto::receipt::{Package, ReceiptError, verify_package};
use tally_store::receipts::revoke_party_certificate;
use tally_wire::receipts::{OnlineVerification, PartyRevocation, RevokedInPackage};

impl Receipts {
    /// Revokes a party's current certificate (operator). Revoking it again answers the first
    /// revocation.
    pub async fn party_revoke(&self, by: &Principal, name: &str) -> Result<PartyRevocation> {
        require_admin(by)?;
        check_name("party", name)?;
        let party = self.party(name).await?;
        let serial = Certificate::from_der(&party.certificate)
            .map_err(setup)?
            .serial_hex();
        let store = self.core.store();
        if store.party_revoked_at(&serial).await?.is_none() {
            self.core
                .commit(
                    format!(":party_revoked:{serial}"),
                    Effects::record(
                        "party_certificate_revoked",
                        serde_json::json!({ "party": name, "certificate_serial": serial }),
                    ),
                    vec![revoke_party_certificate(&serial, name, self.core.now())],
                )
                .await?;
        }
        let revoked_at = store
            .party_revoked_at(&serial)
            .await?
            .unwrap_or_else(|| self.core.now());
        Ok(PartyRevocation {
            party: name.into(),
            certificate_serial: serial,
            revoked_at,
        })
    }

    /// Refuses a party certificate the operator revoked.
    pub(crate) async fn unrevoked(&self, cert: &Certificate, who: &'static str) -> Result<()> {
        let at = self
            .core
            .store()
            .party_revoked_at(&cert.serial_hex())
            .await?;
        not_revoked(cert, who, at)
    }

    /// [`Self::unrevoked`] for two certificates, read together; the first one revoked is
    /// named.
    pub(crate) async fn unrevoked_both(
        &self,
        certs: [(&Certificate, &'static str); 2],
    ) -> Result<()> {
        let serials = certs.map(|(cert, _)| cert.serial_hex());
        let at = self
            .core
            .store()
            .parties_revoked_at([&serials[0], &serials[1]])
            .await?;
        for ((cert, who), at) in certs.into_iter().zip(at) {
            not_revoked(cert, who, at)?;
        }
        Ok(())
    }

    /// Checks a package as `tally receipt verify` does, against this node's CA, and reports
    /// the revoked certificates and warrants in it. Bytes that are not a package are refused
    /// (`bad_receipt`); a package that does not verify is answered with `valid: false` and
    /// the first problem.
    pub async fn verify_online(&self, bytes: &[u8]) -> Result<OnlineVerification> {
        let pkg = Package::from_bytes(bytes).map_err(rerr)?;
        let mut out = OnlineVerification {
            valid: false,
            problem: None,
            transaction: Some(pkg.receipt.fields.transaction),
            party_a: None,
            party_b: None,
            revoked: Vec::new(),
        };
        let v = match verify_package(&pkg, self.core.ca().certificate()) {
            Ok(v) => v,
            Err(e) => {
                out.problem = Some(e.to_string());
                return Ok(out);
            }
        };
        // The receipt's time is when it completed: its journal entry's, when the package
        // carries it (a fair exchange may complete well after the offer of field 4).
        let at = pkg
            .journal
            .as_ref()
            .map_or(v.fields.timestamp(), |j| Timestamp(j.at));
        let mut found = |what: &str, serial: String, revoked_at: Option<Timestamp>| {
            if let Some(revoked_at) = revoked_at {
                out.revoked.push(RevokedInPackage {
                    what: what.into(),
                    serial,
                    revoked_at,
                    before_receipt: revoked_at <= at,
                });
            }
        };
        let store = self.core.store();
        for (what, der) in [("party A", &pkg.cert_a), ("party B", &pkg.cert_b)] {
            if let Some(der) = der {
                let serial = Certificate::from_der(der).map_err(setup)?.serial_hex();
                let revoked_at = store.party_revoked_at(&serial).await?;
                found(what, serial, revoked_at);
            }
        }
        for (what, serial) in [
            ("warrant of party A", &v.warrant_a),
            ("warrant of party B", &v.warrant_b),
        ] {
            if let Some(serial) = serial {
                let revoked_at = store.warrant(serial).await?.and_then(|w| w.revoked_at);
                found(what, serial.clone(), revoked_at);
            }
        }
        out.valid = out.revoked.iter().all(|r| !r.before_receipt);
        out.party_a = Some(v.party_a);
        out.party_b = Some(v.party_b);
        Ok(out)
    }
}

/// Refuses a certificate revoked at `at`.
fn not_revoked(cert: &Certificate, who: &'static str, at: Option<Timestamp>) -> Result<()> {
    match at {
        None => Ok(()),
        Some(at) => Err(rerr(ReceiptError::BadCertificate {
            who,
            why: format!(
                "its certificate {} was revoked at {}; nothing was signed",
                cert.serial_hex(),
                at.to_rfc3339()
            ),
        })),
    }
}
