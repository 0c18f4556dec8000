//! What a receipt looks like to its parties: the view at any step, the core of a complete
//! receipt, and the package file (the core with everything needed to verify it offline).

use super::{ReceiptView, Receipts, rerr, wrong_state};
use crate::identity::setup;
use crate::{Principal, Result};
use tally_kernel::crypto::Certificate;
use tally_kernel::crypto::bls::BlsPublicKey;
use tally_kernel::crypto::warrant as kwarrant;
use tally_proto::receipt::{JournalProof, Package, Receipt, ReceiptError};
use tally_store::receipts::ReceiptRow;

impl Receipts {
    /// The receipt package file of a complete receipt: the core, the record, the parties'
    /// and the server's certificates, the warrants of proxy signatures, the node CA's
    /// certificate and the receipt's journal entry.
    pub async fn package(&self, by: &Principal, transaction: u64) -> Result<Vec<u8>> {
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
                *slot = self.core.store().warrant(s).await?.map(|w| w.certificate);
            }
        }
        // The certificate the receipt was signed under (receipts from before it was stored
        // with them were signed under the node's one receipt server key).
        pkg.cert_server = Some(
            r.certificate_server
                .clone()
                .unwrap_or_else(|| self.server_cert.to_der()),
        );
        pkg.cert_ca = Some(self.core.ca().certificate().to_der());
        if let Some(k) = &r.journal_key
            && let Some(j) = self.core.store().journal_entry_by_key(k).await?
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
        if !r.state.is_complete() {
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

    pub(crate) fn receipt_view(&self, r: &ReceiptRow) -> ReceiptView {
        let core = self.core_bytes(r).ok().flatten();
        ReceiptView {
            transaction: r.transaction_id as u64,
            version: r.version as u8,
            server_id: self.server.verifying_key().fingerprint(),
            time: r.time,
            content_hash: hex::encode(&r.content_hash),
            party_a: r.party_a.clone(),
            party_b: r.party_b.clone(),
            party_a_fingerprint: hex::encode(&r.fingerprint_a),
            party_b_fingerprint: hex::encode(&r.fingerprint_b),
            record: r.record.clone(),
            fair: r.fair,
            state: r.state,
            warrant_a: r.warrant_a.clone(),
            warrant_b: r.warrant_b.clone(),
            escrow_a: r.escrow_a.as_deref().map(hex::encode),
            signature_a: if r.state.releases_a() {
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

/// B's certified BLS key (fair exchange).
pub(crate) fn b_bls_key(cert_b: &Certificate) -> Result<BlsPublicKey> {
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
