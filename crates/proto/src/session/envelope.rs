//! Messages between operators' nodes (issue [7], step 2a: the format, no transport yet).
//!
//! ```text
//! envelope = {"id": UUID, "from": node id, "to": node id, "sent_at": µs, "kind": word, "body": JSON}
//! sealed   = SignedRecord {"domain": "tally/peer-message/v1", "bytes": RFC 8785 JSON of the
//!            envelope, "signature": Ed25519 by the sender's node key, "signer": its node id}
//! ```
//!
//! [`open`] checks, in this order, and names the first failure ([`EnvelopeError`]): size,
//! shape, domain, a known peer (looked up by the signer), the signature and canonical bytes,
//! that the signer is the envelope's `from`, that it is addressed to this node, its age
//! within the window, and the kind. A replayed id is the receiver's to refuse (its inbox keeps
//! the ids it accepted), since only the receiver knows what it has seen.

use super::ids::NodeId;
use serde::{Deserialize, Serialize};
use tally_kernel::crypto::canonical::SignedRecord;
use tally_kernel::crypto::{SigningKey, VerifyingKey};
use tally_kernel::{Id, Timestamp};

/// The signed record's domain.
pub const PEER_DOMAIN: &str = "tally/peer-message/v1";
/// Largest sealed message, in bytes.
pub const MESSAGE_LEN_MAX: usize = 64 * 1024;

/// A message between nodes, before sealing and after opening.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Unique per message (UUIDv7): the receiver applies an id once.
    pub id: Id,
    /// The sending node.
    pub from: NodeId,
    /// The receiving node.
    pub to: NodeId,
    /// When it was sent, µs since the epoch.
    pub sent_at: i64,
    /// What it is (`snake_case`, 1..=64 bytes), e.g. `session_initiation`.
    pub kind: String,
    /// Its content, per kind.
    pub body: serde_json::Value,
}

/// Why a message was refused. Whose fault: always the sender's (or an attacker's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Larger than [`MESSAGE_LEN_MAX`].
    #[error("the message is larger than 64 KiB")]
    TooLarge,
    /// Not a signed record, or its payload is not an envelope.
    #[error("not a sealed peer message")]
    Malformed,
    /// A signed record of another kind.
    #[error("a signed record of another domain")]
    WrongDomain,
    /// Signed by a node that is not a peer of this one.
    #[error("signed by a node that is not a peer")]
    UnknownPeer,
    /// The signature does not verify, or the bytes are not canonical.
    #[error("the signature does not verify")]
    BadSignature,
    /// The signer is not the node the envelope says it is from.
    #[error("signed by another node than its sender")]
    NotFromSigner,
    /// Addressed to another node.
    #[error("addressed to another node")]
    NotForMe,
    /// Sent too long ago, or in the future, beyond the window.
    #[error("sent outside the accepted window")]
    Stale,
    /// A kind that is not a snake_case word of 1 to 64 bytes.
    #[error("the kind is not a snake_case word of 1 to 64 bytes")]
    BadKind,
    /// The sender's key is not the envelope's `from` (when sealing).
    #[error("the sealing key is not the sender's")]
    WrongKey,
}

impl EnvelopeError {
    /// Its stable snake_case name (the `reason` of a refusal on the wire).
    pub fn as_str(self) -> &'static str {
        match self {
            EnvelopeError::TooLarge => "too_large",
            EnvelopeError::Malformed => "malformed",
            EnvelopeError::WrongDomain => "wrong_domain",
            EnvelopeError::UnknownPeer => "unknown_peer",
            EnvelopeError::BadSignature => "bad_signature",
            EnvelopeError::NotFromSigner => "not_from_signer",
            EnvelopeError::NotForMe => "not_for_me",
            EnvelopeError::Stale => "stale",
            EnvelopeError::BadKind => "bad_kind",
            EnvelopeError::WrongKey => "wrong_key",
        }
    }
}

fn word(kind: &str) -> bool {
    (1..=64).contains(&kind.len()) && kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

impl Envelope {
    /// Seals the envelope with the sender's node key.
    pub fn seal(&self, key: &SigningKey) -> Result<Vec<u8>, EnvelopeError> {
        if NodeId::of(&key.verifying_key()) != self.from {
            return Err(EnvelopeError::WrongKey);
        }
        if !word(&self.kind) {
            return Err(EnvelopeError::BadKind);
        }
        let record =
            SignedRecord::sign(PEER_DOMAIN, self, key).map_err(|_| EnvelopeError::Malformed)?;
        let bytes = serde_json::to_vec(&record).map_err(|_| EnvelopeError::Malformed)?;
        if bytes.len() > MESSAGE_LEN_MAX {
            return Err(EnvelopeError::TooLarge);
        }
        Ok(bytes)
    }
}

/// What the receiving node knows when it opens a message.
pub struct Receiver<'a> {
    /// This node.
    pub me: NodeId,
    /// Its peers' keys, by node id.
    pub peer: &'a dyn Fn(&NodeId) -> Option<VerifyingKey>,
    /// Now.
    pub now: Timestamp,
    /// Accepted age (and clock skew), seconds.
    pub window_s: i64,
}

/// Opens a sealed message (see the module docs for the order of the checks).
pub fn open(bytes: &[u8], r: &Receiver<'_>) -> Result<Envelope, EnvelopeError> {
    if bytes.len() > MESSAGE_LEN_MAX {
        return Err(EnvelopeError::TooLarge);
    }
    let record: SignedRecord =
        serde_json::from_slice(bytes).map_err(|_| EnvelopeError::Malformed)?;
    if record.domain != PEER_DOMAIN {
        return Err(EnvelopeError::WrongDomain);
    }
    let signer: NodeId = record
        .signer
        .parse()
        .map_err(|_| EnvelopeError::Malformed)?;
    let key = (r.peer)(&signer).ok_or(EnvelopeError::UnknownPeer)?;
    record
        .verify(&key)
        .map_err(|_| EnvelopeError::BadSignature)?;
    if !record.is_canonical() {
        return Err(EnvelopeError::BadSignature);
    }
    let envelope: Envelope =
        serde_json::from_slice(&record.bytes).map_err(|_| EnvelopeError::Malformed)?;
    if envelope.from != signer {
        return Err(EnvelopeError::NotFromSigner);
    }
    if envelope.to != r.me {
        return Err(EnvelopeError::NotForMe);
    }
    let age = r.now.as_micros().saturating_sub(envelope.sent_at);
    let window = r.window_s.saturating_mul(1_000_000);
    if age.abs() > window {
        return Err(EnvelopeError::Stale);
    }
    if !word(&envelope.kind) {
        return Err(EnvelopeError::BadKind);
    }
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTORS: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/protocols/vectors/peer_message.json"
    );
    const T0: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_seed(&[seed; 32])
    }

    fn node(seed: u8) -> NodeId {
        NodeId::of(&key(seed).verifying_key())
    }

    fn envelope() -> Envelope {
        Envelope {
            id: Id(uuid::Uuid::from_u128(
                0x0190_b0a4_0000_7000_8000_0000_0000_0001,
            )),
            from: node(1),
            to: node(2),
            sent_at: T0,
            kind: "session_initiation".into(),
            body: serde_json::json!({"deposit": "10.00 EUR", "merchant": "shop"}),
        }
    }

    /// Node 2, knowing node 1 (and node 3), at T0 + 5 s with a 300 s window.
    fn open_at_2(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        let peers = |n: &NodeId| {
            [1u8, 3]
                .into_iter()
                .find(|s| node(*s) == *n)
                .map(|s| key(s).verifying_key())
        };
        open(
            bytes,
            &Receiver {
                me: node(2),
                peer: &peers,
                now: Timestamp(T0 + 5_000_000),
                window_s: 300,
            },
        )
    }

    #[test]
    fn the_sealed_format_matches_the_pinned_vector_and_opens() {
        let sealed = envelope().seal(&key(1)).unwrap();
        let computed = serde_json::json!({
            "inputs": {"from_seed": hex::encode([1u8; 32]), "to_seed": hex::encode([2u8; 32])},
            "sealed": String::from_utf8(sealed.clone()).unwrap(),
        });
        crate::pinned::check(VECTORS, &computed);
        assert_eq!(open_at_2(&sealed), Ok(envelope()));
    }

    #[test]
    fn every_bad_message_is_refused_with_its_reason() {
        let e = envelope();
        assert_eq!(e.seal(&key(3)), Err(EnvelopeError::WrongKey));
        assert_eq!(
            Envelope {
                kind: "Bad-Kind".into(),
                ..e.clone()
            }
            .seal(&key(1)),
            Err(EnvelopeError::BadKind)
        );
        let sealed = |env: &Envelope, k: u8| env.seal(&key(k)).unwrap();
        // Not for node 2; from a stranger; signed by another peer than it claims.
        assert_eq!(
            open_at_2(&sealed(
                &Envelope {
                    to: node(3),
                    ..e.clone()
                },
                1
            )),
            Err(EnvelopeError::NotForMe)
        );
        assert_eq!(
            open_at_2(&sealed(
                &Envelope {
                    from: node(4),
                    ..e.clone()
                },
                4
            )),
            Err(EnvelopeError::UnknownPeer)
        );
        let mut record: SignedRecord = serde_json::from_slice(&sealed(
            &Envelope {
                from: node(3),
                ..e.clone()
            },
            3,
        ))
        .unwrap();
        let forged = SignedRecord::sign(PEER_DOMAIN, &e, &key(3)).unwrap();
        record.bytes = forged.bytes;
        record.signature = forged.signature;
        assert_eq!(
            open_at_2(&serde_json::to_vec(&record).unwrap()),
            Err(EnvelopeError::NotFromSigner),
            "node 3 cannot speak for node 1"
        );
        // Too old, from the future.
        for sent_at in [T0 - 400_000_000, T0 + 400_000_000] {
            assert_eq!(
                open_at_2(&sealed(
                    &Envelope {
                        sent_at,
                        ..e.clone()
                    },
                    1
                )),
                Err(EnvelopeError::Stale)
            );
        }
        // Another domain; altered bytes; not a record; too large.
        let other = SignedRecord::sign("tally/other/v1", &e, &key(1)).unwrap();
        assert_eq!(
            open_at_2(&serde_json::to_vec(&other).unwrap()),
            Err(EnvelopeError::WrongDomain)
        );
        let text = String::from_utf8(sealed(&e, 1))
            .unwrap()
            .replace("10.00 EUR", "99.00 EUR");
        assert_eq!(open_at_2(text.as_bytes()), Err(EnvelopeError::BadSignature));
        assert_eq!(open_at_2(b"{}"), Err(EnvelopeError::Malformed));
        assert_eq!(
            open_at_2(&vec![b' '; MESSAGE_LEN_MAX + 1]),
            Err(EnvelopeError::TooLarge)
        );
    }

    #[test]
    fn no_single_byte_change_panics_or_changes_what_opens() {
        let sealed = envelope().seal(&key(1)).unwrap();
        for i in 0..sealed.len() {
            for delta in [1u8, 0x20, 0x80] {
                let mut m = sealed.clone();
                m[i] = m[i].wrapping_add(delta);
                // Refused, or (a change the format ignores) the same envelope.
                if let Ok(opened) = open_at_2(&m) {
                    assert_eq!(opened, envelope(), "byte {i} changed what opens");
                }
            }
        }
    }
}
