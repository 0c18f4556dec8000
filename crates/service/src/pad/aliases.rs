//! Mailboxes addressed by a public key (the seed's pad-derived key pairs; `pad::keys` in
//! proto): a key's signed claim points its address at a pad's mailbox — a seller keeps one
//! long-term key while its pads come and go. A pad's own key points at its own mailbox from
//! its sale. No API key: the key's signature over the mailbox and a fresh time is the
//! credential; a claim no later than the one in place is refused.

use super::Pads;
use crate::access::invalid;
use crate::{Missing, Result, ServiceError};
use tally_proto::effects::Effects;
use tally_proto::pad::ids::MailboxAddress;
use tally_proto::pad::keys::{AliasClaim, key_address, key_text, parse_key};
use tally_store::pads::claim_alias;
use tally_wire::pads::{PadAlias, PadAliasRequest};

/// How far a claim's time may be from the node's clock, microseconds (10 minutes).
const CLAIM_SKEW_US: i64 = 600_000_000;

impl Pads {
    /// Points `key`'s address at `req.mailbox`.
    pub async fn claim_alias(&self, key: &str, req: &PadAliasRequest) -> Result<PadAlias> {
        let vk = parse_key(key).map_err(|e| invalid("key", e.to_string()))?;
        let mailbox: MailboxAddress = req
            .mailbox
            .parse()
            .map_err(|e| invalid("mailbox", format!("{e}")))?;
        let signature = tally_kernel::crypto::Signature::from_hex(&req.signature)
            .map_err(|_| invalid("signature", "128 hex digits"))?;
        let now = self.core.now().as_micros();
        if (req.at - now).abs() > CLAIM_SKEW_US {
            return Err(invalid(
                "at",
                format!("Unix microseconds within 10 minutes of the node's clock ({now})"),
            ));
        }
        let claim = AliasClaim {
            mailbox,
            at: req.at,
        };
        claim
            .verify(&vk, &signature)
            .map_err(|_| invalid("signature", "not the key's signature of this claim"))?;
        let store = self.core.store();
        if store.pad_of_mailbox(&mailbox.0).await?.is_none() {
            return Err(ServiceError::NotFound {
                what: Missing::Pad,
                id: mailbox.to_string(),
            });
        }
        let address = key_address(&vk);
        let view = PadAlias {
            key: key_text(&vk),
            address: address.to_string(),
            mailbox: mailbox.to_string(),
            at: req.at,
        };
        if let Some((current, at)) = store.pad_alias(&address.0).await? {
            if current == mailbox.0 && at == req.at {
                return Ok(view);
            }
            if at >= req.at {
                return Err(invalid(
                    "at",
                    "a later claim of this key is in place: sign a newer one",
                ));
            }
        }
        self.core
            .commit(
                format!(":pad_alias:{address}:{}", req.at),
                Effects::record(
                    "pad_alias",
                    serde_json::json!({"address": address, "at": req.at}),
                ),
                vec![claim_alias(&address.0, &vk.to_bytes(), &mailbox.0, req.at)],
            )
            .await?;
        // Two claims at once: the later one is in place whichever committed last.
        match store.pad_alias(&address.0).await? {
            Some((m, at)) if m == mailbox.0 && at == req.at => Ok(view),
            _ => Err(invalid(
                "at",
                "a later claim of this key is in place: sign a newer one",
            )),
        }
    }
}
