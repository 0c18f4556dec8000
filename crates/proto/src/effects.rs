//! What a protocol step asks its caller to do: the shape every machine of this crate shares.
//!
//! A machine's step is `handle(self, now, input, …) -> Result<(Self, Effects), Error>`: it
//! consumes the state, and either refuses (nothing changes: the error says whose fault it is,
//! see [`Fault`]) or returns the next state with its [`Effects`]. The caller (the node's one
//! executor) commits the new state, the ledger command and the outgoing messages in one
//! database transaction under a guard on the previous state, so a step happens once or not at
//! all. A machine with a deadline says when with `poll_timeout(&self) -> Option<Timestamp>`;
//! the caller feeds it a timeout input once that time has passed.
//!
//! Decisions:
//! * **One ledger command per step.** Every step of today's protocols moves money at most once
//!   (a hold, its post or void, a payment) or only records what happened; the command and the
//!   step's state change commit as one journal entry. Steps that need several linked ledger
//!   commands come with the ledger's linked chains.
//! * **Secrets by reference.** A message that carries a one-time code or an unlock key holds a
//!   [`SecretRef`], never the secret: the text keeps a placeholder and the secret is derived
//!   from the node's keys only when the message is handed to its channel (or read from the
//!   development inbox), so no stored row holds a live secret.
//! * **Messages to other nodes** ([`PeerMessage`]) are part of the shape so that protocols
//!   spanning two operators (trading sessions) fit it: they commit with the step, like
//!   messages to people.
//!
//! Rejected: returning closures or trait objects to run (effects must be data the executor can
//! store, retry and check); letting a machine read the clock or the database.

use serde::{Deserialize, Serialize};
use tally_kernel::Id;
use tally_ledger::Command;

/// Whose fault a refusal is. Every machine's error says it, so callers decide what to do (and
/// what to tell whom) without reading error texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The request does not fit the state (too late, twice, in the wrong order) or is
    /// malformed: the caller can do something about it.
    Caller,
    /// A bug of the node that called the machine (bad policy, impossible input): nothing a
    /// user did.
    Node,
    /// The other party or an untrusted input misbehaved (a wrong code, a signature that does
    /// not verify, a forged escrow).
    Peer,
}

/// An error that says whose fault it is.
pub trait Blame {
    /// Whose fault it is.
    fn fault(&self) -> Fault;
}

/// A secret put into a message only at delivery.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "secret", rename_all = "snake_case")]
pub enum SecretRef {
    /// The one-time code of an out-of-band session (recomputed from the session and the
    /// node's code key).
    OobCode {
        /// The session number, hex.
        session: String,
    },
    /// The unlock key of a released sale (re-derived from its reference code and the node's
    /// delivery key).
    UnlockKey {
        /// The sale.
        sale: Id,
    },
    /// Not in the text: the secret a pad provider's webhook is signed with (re-derived from
    /// the provider and the node's pad key).
    PadProviderWebhook {
        /// The provider.
        provider: String,
    },
}

impl SecretRef {
    /// What stands for the secret in the stored text.
    pub fn placeholder(&self) -> &'static str {
        match self {
            SecretRef::OobCode { .. } => "{{code}}",
            SecretRef::UnlockKey { .. } => "{{unlock_key}}",
            SecretRef::PadProviderWebhook { .. } => "{{webhook_secret}}",
        }
    }
}

/// A message to a person, sent through one of the node's channels after the step commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outgoing {
    /// Stable across retries: the same key is sent once.
    pub dedup_key: String,
    /// `email`, `sms`, `webhook` or `dev`.
    pub channel: String,
    /// Where to on that channel.
    pub address: String,
    /// Subject line.
    pub subject: String,
    /// Plain text; holds [`SecretRef::placeholder`] where the secret goes.
    pub body: String,
    /// The secret the text needs, if any.
    pub secret: Option<SecretRef>,
    /// Structured payload (webhooks).
    pub data: serde_json::Value,
}

/// A message to another node (an operator's peer), delivered durably and deduplicated by id
/// on arrival. The executor stores it in the outbox with the step; the outbox worker seals it
/// into a [`crate::session::envelope::Envelope`] under the node key when it sends it (so its
/// `sent_at` is fresh on every retry) and the receiver applies its `id` once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerMessage {
    /// The receiving node.
    pub to: crate::session::ids::NodeId,
    /// Unique id (UUIDv7): the receiver applies it once.
    pub id: Id,
    /// What it is (`snake_case`).
    pub kind: String,
    /// Its content.
    pub body: serde_json::Value,
}

/// What one step needs done, all of it in one transaction with the new state. Empty effects
/// ([`Effects::none`]) mean the input repeated a step already taken: nothing to commit, and the
/// state is the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Effects {
    /// The step's ledger command: money moved (a transfer, a hold, its post or void), or a
    /// record of the change when no money moves. It becomes the step's journal entry; every
    /// step that changes anything has one.
    pub ledger: Option<Command>,
    /// Messages to people.
    pub messages: Vec<Outgoing>,
    /// Messages to other nodes.
    pub peers: Vec<PeerMessage>,
}

impl Effects {
    /// A step that moves no money: a journal record of `kind` with `data` (never secrets).
    pub fn record(kind: &str, data: serde_json::Value) -> Effects {
        Effects::ledger(Command::Record {
            kind: kind.to_string(),
            data,
        })
    }

    /// A step whose journal entry is `command`.
    pub fn ledger(command: Command) -> Effects {
        Effects {
            ledger: Some(command),
            messages: Vec::new(),
            peers: Vec::new(),
        }
    }

    /// Nothing to commit: the input repeated a step already taken.
    pub fn none() -> Effects {
        Effects {
            ledger: None,
            messages: Vec::new(),
            peers: Vec::new(),
        }
    }

    /// True when there is nothing to commit.
    pub fn is_none(&self) -> bool {
        self.ledger.is_none() && self.messages.is_empty() && self.peers.is_empty()
    }

    /// Adds a message.
    pub fn send(mut self, message: Outgoing) -> Effects {
        self.messages.push(message);
        self
    }

    /// True when the step moves money (its command is not a record).
    pub fn moves_money(&self) -> bool {
        self.ledger
            .as_ref()
            .is_some_and(|c| !matches!(c, Command::Record { .. }))
    }

    /// Lets an application name a step that moves no money in its own words: the record's
    /// kind becomes `kind` and `extra`'s fields join its data (the machine's fields win). A
    /// step that moves money keeps its command.
    pub fn renamed(mut self, kind: &str, extra: serde_json::Value) -> Effects {
        if let Some(Command::Record { kind: k, data }) = &mut self.ledger {
            *k = kind.to_string();
            if let (Some(into), serde_json::Value::Object(from)) = (data.as_object_mut(), extra) {
                for (name, value) in from {
                    into.entry(name).or_insert(value);
                }
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_distinct_and_stable() {
        let code = SecretRef::OobCode {
            session: "00".into(),
        };
        let key = SecretRef::UnlockKey {
            sale: Id(uuid::Uuid::nil()),
        };
        assert_eq!(code.placeholder(), "{{code}}");
        assert_eq!(key.placeholder(), "{{unlock_key}}");
        // The stored form is tagged, so a renderer can never mistake one kind for the other.
        assert_eq!(
            serde_json::to_value(&code).expect("json"),
            serde_json::json!({"secret": "oob_code", "session": "00"})
        );
    }

    #[test]
    fn renaming_keeps_the_machines_fields_and_never_touches_money() {
        let e = Effects::record("oob_session_verified", serde_json::json!({"session": "ab"}))
            .renamed(
                "oob_login",
                serde_json::json!({"session": "forged", "user": "alice"}),
            );
        assert_eq!(
            e.ledger,
            Some(Command::Record {
                kind: "oob_login".into(),
                data: serde_json::json!({"session": "ab", "user": "alice"}),
            })
        );
        let money = Effects::ledger(Command::Void {
            pending_id: Id(uuid::Uuid::nil()),
        });
        assert!(money.moves_money());
        assert_eq!(money.clone().renamed("x", serde_json::json!({})), money);
    }
}
