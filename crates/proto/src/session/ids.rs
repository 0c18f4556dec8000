//! The identities of the seed (SPEC M1): a session is named by its customer account manager
//! (AM) and a sequence number, `AM-id.seq`; a transaction by its session and a sequence
//! number, `session-id.seq`.
//!
//! ```text
//! node id        = 64 lowercase hex: SHA-256 of the node's Ed25519 public key
//! session id     = node id "." seq            (seq: decimal u64 >= 1, no leading zero)
//! transaction id = session id "." seq
//! ```
//!
//! Parsing is strict — one spelling per id, so an id can key a table and a signed record —
//! and refuses anything else with a typed [`IdError`]. Vectors: `vectors/sessions.json`.
//!
//! Rejected: UUIDs (the seed names the AM in the id, so a message can be routed to the
//! session's AM from the id alone), and a short node id (a prefix could be made to collide).

use serde::{Deserialize, Serialize};
use tally_kernel::crypto::VerifyingKey;
use tally_kernel::crypto::kdf::sha256;

/// Longest text of a transaction id: 64 hex, two dots, two u64s.
pub const TRANSACTION_ID_LEN_MAX: usize = 64 + 2 + 2 * 20;

/// Why a text is not an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not 64 lowercase hex digits.
    #[error("a node id is 64 lowercase hex digits")]
    NodeId,
    /// A sequence number that is empty, zero, has a leading zero, a sign or too many digits.
    #[error("a sequence number is a decimal from 1 to 18446744073709551615, without leading zeros")]
    Seq,
    /// The wrong number of `.`-separated parts, or too long.
    #[error("expected {0}")]
    Shape(&'static str),
    /// A sequence that would pass the largest number.
    #[error("the sequence is exhausted")]
    Exhausted,
}

/// An operator's node: the SHA-256 of its Ed25519 key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId([u8; 32]);

impl NodeId {
    /// The id of the node holding `key`.
    pub fn of(key: &VerifyingKey) -> NodeId {
        NodeId(sha256(&key.to_bytes()))
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// For people: `op-` and the first 16 hex digits (never for keys or routing).
    pub fn short(&self) -> String {
        format!("op-{}", &hex::encode(self.0)[..16])
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // On the stack: `hex::encode` builds its String a char at a time, and ids are written
        // once per purchase at the merchant agent.
        let mut out = [0u8; 64];
        hex::encode_to_slice(self.0, &mut out).map_err(|_| std::fmt::Error)?;
        f.write_str(std::str::from_utf8(&out).map_err(|_| std::fmt::Error)?)
    }
}

impl std::fmt::Debug for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

impl std::str::FromStr for NodeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<NodeId, IdError> {
        let lower = s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if s.len() != 64 || !lower {
            return Err(IdError::NodeId);
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| IdError::NodeId)?;
        Ok(NodeId(out))
    }
}

fn seq(s: &str) -> Result<u64, IdError> {
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || s.starts_with('0') || s.len() > 20 {
        return Err(IdError::Seq);
    }
    s.parse().map_err(|_| IdError::Seq)
}

/// A trading session: its customer AM and the AM's sequence number (>= 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId {
    /// The customer's account manager.
    pub am: NodeId,
    /// Its number at that AM.
    pub seq: u64,
}

impl SessionId {
    /// Session `seq` (>= 1) of `am`.
    pub fn new(am: NodeId, seq: u64) -> Result<SessionId, IdError> {
        if seq == 0 {
            return Err(IdError::Seq);
        }
        Ok(SessionId { am, seq })
    }

    /// The first transaction of the session.
    pub fn first_transaction(self) -> TransactionId {
        TransactionId {
            session: self,
            seq: 1,
        }
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.am, self.seq)
    }
}

impl std::str::FromStr for SessionId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<SessionId, IdError> {
        let shape = IdError::Shape("a session id: <node id>.<seq>");
        let (am, n) = s.split_once('.').ok_or(shape)?;
        if n.contains('.') {
            return Err(shape);
        }
        SessionId::new(am.parse()?, seq(n)?)
    }
}

/// A transaction of a session (a purchase beyond the deposit starts the next one, M4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId {
    /// The session.
    pub session: SessionId,
    /// Its number in the session (>= 1).
    pub seq: u64,
}

impl TransactionId {
    /// The transaction after this one in the same session.
    pub fn next(self) -> Result<TransactionId, IdError> {
        Ok(TransactionId {
            session: self.session,
            seq: self.seq.checked_add(1).ok_or(IdError::Exhausted)?,
        })
    }
}

impl std::fmt::Display for TransactionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.session, self.seq)
    }
}

impl std::str::FromStr for TransactionId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<TransactionId, IdError> {
        if s.len() > TRANSACTION_ID_LEN_MAX {
            return Err(IdError::Shape("a transaction id of at most 106 bytes"));
        }
        let (session, n) = s
            .rsplit_once('.')
            .ok_or(IdError::Shape("a transaction id: <node id>.<seq>.<seq>"))?;
        Ok(TransactionId {
            session: session.parse()?,
            seq: seq(n)?,
        })
    }
}

macro_rules! as_text {
    ($ty:ident) => {
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                String::deserialize(d)?
                    .parse()
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}
as_text!(NodeId);
as_text!(SessionId);
as_text!(TransactionId);

#[cfg(test)]
mod tests {
    use super::*;
    use tally_kernel::crypto::SigningKey;

    const VECTORS: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/protocols/vectors/sessions.json"
    );

    fn am() -> NodeId {
        NodeId::of(&SigningKey::from_seed(&[1; 32]).verifying_key())
    }

    #[test]
    fn ids_match_the_pinned_vectors_and_read_back() {
        let session = SessionId::new(am(), 42).unwrap();
        let tx = session.first_transaction().next().unwrap();
        let computed = serde_json::json!({
            "inputs": {"am_seed": hex::encode([1u8; 32]), "session_seq": 42, "transaction_seq": 2},
            "node_id": am().to_string(),
            "node_short": am().short(),
            "session_id": session.to_string(),
            "transaction_id": tx.to_string(),
        });
        crate::pinned::check(VECTORS, &computed);
        assert_eq!(session.to_string().parse::<SessionId>(), Ok(session));
        assert_eq!(tx.to_string().parse::<TransactionId>(), Ok(tx));
        let json = serde_json::to_string(&tx).unwrap();
        assert_eq!(serde_json::from_str::<TransactionId>(&json).unwrap(), tx);
        let max = TransactionId {
            session: SessionId::new(am(), u64::MAX).unwrap(),
            seq: u64::MAX,
        };
        assert_eq!(max.to_string().len(), TRANSACTION_ID_LEN_MAX);
        assert_eq!(max.to_string().parse::<TransactionId>(), Ok(max));
        assert_eq!(max.next(), Err(IdError::Exhausted));
    }

    #[test]
    fn every_other_spelling_is_refused_with_its_reason() {
        let node = am().to_string();
        let s = |t: &str| t.parse::<SessionId>();
        let t = |t: &str| t.parse::<TransactionId>();
        assert_eq!(s(&format!("{node}.0")), Err(IdError::Seq));
        assert_eq!(s(&format!("{node}.007")), Err(IdError::Seq));
        assert_eq!(s(&format!("{node}.+7")), Err(IdError::Seq));
        assert_eq!(s(&format!("{node}.")), Err(IdError::Seq));
        assert_eq!(
            s(&format!("{node}.18446744073709551616")),
            Err(IdError::Seq)
        );
        assert_eq!(
            s(&format!("{}.1", node.to_uppercase())),
            Err(IdError::NodeId)
        );
        assert_eq!(s(&format!("{}.1", &node[..63])), Err(IdError::NodeId));
        assert!(matches!(s(&node), Err(IdError::Shape(_))));
        assert!(matches!(s(&format!("{node}.1.1")), Err(IdError::Shape(_))));
        assert!(matches!(t(&format!("{node}.1")), Err(IdError::Shape(_))));
        assert!(matches!(
            t(&format!("{node}.1.1.1")),
            Err(IdError::Shape(_))
        ));
        assert!(matches!(
            t(&format!("{node}.1.1{}", "1".repeat(100))),
            Err(IdError::Shape(_))
        ));
        assert_eq!(t(&format!("{node}.1.0")), Err(IdError::Seq));
        assert!(serde_json::from_str::<SessionId>("\"x.1\"").is_err());
    }
}
