//! The receipt protocol on the node as a machine of the crate's one shape
//! ([`crate::effects`]): which step a receipt may take from where it stands (seed blocks
//! 301–317).
//!
//! `offered` → (fair exchange: `escrowed`, once B's verifiable escrow verified) → `signed`
//! (B's signature verified; the node's proxy signature for A and its own made) → `acked` (B's
//! token acknowledged the write). A fair exchange may instead end at the arbiter: `aborted`,
//! `resolved` (each side gets the other's signature) or `failed` (neither does). The arbiter's
//! standing decision ([`Decision`]) is part of the state, so every later request is answered
//! from it.
//!
//! The caller does the cryptography (signatures, escrows, warrants) and tells the machine what
//! verified; the machine decides what may happen. A repeated request (the same escrow or
//! signature again, a second ack) is no step: the effects are empty and the state is the
//! answer.

use super::exchange::{self, Answer, Decision, Refusal, Request};
use crate::effects::{Blame, Effects, Fault};
use serde::{Deserialize, Serialize};

/// Where a receipt stands. Variants are alphabetical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptState {
    /// The originator aborted the fair exchange at the arbiter; nobody got a signature.
    Aborted,
    /// Complete, and B's token acknowledged the write.
    Acked,
    /// Fair exchange: B's verifiable escrow verified and A's signature went to B.
    Escrowed,
    /// Fair exchange: a resolve found no good signature in the originator's escrow.
    Failed,
    /// Offered for signing.
    Offered,
    /// Fair exchange completed by the arbiter.
    Resolved,
    /// Complete: both parties' signatures and the server's.
    Signed,
}
stored_names!(ReceiptState {
    Aborted => "aborted",
    Acked => "acked",
    Escrowed => "escrowed",
    Failed => "failed",
    Offered => "offered",
    Resolved => "resolved",
    Signed => "signed",
});

impl ReceiptState {
    /// True once both signatures and the server's are in (the receipt has a package).
    pub fn is_complete(self) -> bool {
        matches!(
            self,
            ReceiptState::Acked | ReceiptState::Resolved | ReceiptState::Signed
        )
    }

    /// True once A's signature may be shown to B.
    pub fn releases_a(self) -> bool {
        self.is_complete() || self == ReceiptState::Escrowed
    }
}

/// Why a receipt step was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// The request does not fit where the receipt stands.
    #[error("{0}")]
    WrongState(String),
    /// The arbiter refused (the exchange was aborted, or a resolve failed).
    #[error(transparent)]
    Arbiter(#[from] Refusal),
}

impl Blame for FlowError {
    fn fault(&self) -> Fault {
        Fault::Caller
    }
}

/// What a receipt step gets.
// An arbiter request carries two signatures inline (about 200 bytes, `Copy`), like the
// arbiter's own `Request`: not worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowInput {
    /// B's verifiable escrow (fair exchange), checked by the caller.
    Escrow {
        /// It verified under B's certified BLS key and the arbiter's key.
        verified: bool,
        /// It is the escrow already stored (a retry).
        same_as_stored: bool,
    },
    /// B's signature, which the caller verifies before committing the step.
    Sign {
        /// It is the signature already stored (a retry).
        same_as_stored: bool,
    },
    /// B's token acknowledged the write.
    Ack,
    /// The write was sent again (counted).
    RetryWrite,
    /// A request to the arbiter with what the caller verified.
    Arbiter(Request),
}

/// What a request asks the arbiter, without its signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Abort.
    Abort,
    /// Resolve, by the client.
    ResolveByClient,
    /// Resolve, by the node.
    ResolveByNode,
}

impl Ask {
    /// What `request` asks.
    pub fn of(request: &Request) -> Ask {
        match request {
            Request::Abort => Ask::Abort,
            Request::ResolveByClient { .. } => Ask::ResolveByClient,
            Request::ResolveByNode { .. } => Ask::ResolveByNode,
        }
    }
}

/// A receipt as the machine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// The transaction id (field 3).
    pub transaction: u64,
    /// A fair exchange (BLS signatures, the arbiter).
    pub fair: bool,
    /// Where it stands.
    pub state: ReceiptState,
    /// The arbiter's standing decision ([`Decision::Open`] while none).
    pub decision: Decision,
    /// A write to B's token was sealed (it has a receipt number).
    pub written: bool,
    /// B's token acknowledged the write.
    pub acked: bool,
    /// Times the write was sent.
    pub write_attempts: i64,
    /// A fair exchange B leaves unanswered (still offered, nothing decided) is aborted at the
    /// arbiter at this time; set by the node from its exchange timeout.
    pub abort_at: Option<tally_kernel::Timestamp>,
}

impl Flow {
    /// When a fair exchange left unanswered is aborted (it is still offered and the arbiter
    /// decided nothing); otherwise a receipt waits for its parties.
    pub fn poll_timeout(&self) -> Option<tally_kernel::Timestamp> {
        let waiting = self.fair
            && self.state == ReceiptState::Offered
            && matches!(self.decision, Decision::Open);
        self.abort_at.filter(|_| waiting)
    }

    /// What the arbiter answers `request` from the decision as it stands now (after a step,
    /// or when the request repeats one).
    pub fn answer(&self, request: Request) -> Result<Answer, Refusal> {
        exchange::decide(self.decision, request).1
    }

    fn not_fair(&self, what: &str) -> Result<(), FlowError> {
        if self.fair {
            Ok(())
        } else {
            Err(FlowError::WrongState(format!(
                "this receipt is not a fair exchange{what}"
            )))
        }
    }

    /// A fair exchange the arbiter decided is over for the parties' own steps.
    fn undecided(&self) -> Result<(), FlowError> {
        match self.decision {
            Decision::Open => Ok(()),
            Decision::Aborted => Err(Refusal::Aborted.into()),
            Decision::Failed => Err(Refusal::Failed.into()),
            Decision::Resolved { .. } => Err(FlowError::WrongState(
                "the arbiter resolved this exchange; fetch the receipt".into(),
            )),
        }
    }

    /// Whether the arbiter may be asked `ask` where the receipt stands (before the caller does
    /// the cryptography the request needs).
    pub fn may_ask(&self, ask: Ask) -> Result<(), FlowError> {
        self.not_fair("")?;
        let wrong = |why: &str| Err(FlowError::WrongState(why.into()));
        if matches!(self.state, ReceiptState::Signed | ReceiptState::Acked) {
            return wrong(match ask {
                Ask::Abort => "the exchange completed; there is nothing to abort",
                Ask::ResolveByClient | Ask::ResolveByNode => {
                    "the exchange completed without the arbiter; fetch the receipt"
                }
            });
        }
        match (ask, self.state) {
            // A's signature went to B against B's verifiable escrow: only a resolve is fair now.
            (Ask::Abort, ReceiptState::Escrowed) => {
                wrong("A's signature was released against B's verifiable escrow; resolve instead")
            }
            (Ask::ResolveByClient, ReceiptState::Offered) => wrong(
                "send your verifiable escrow first; resolve only if no good signature of A comes back",
            ),
            _ => Ok(()),
        }
    }

    /// One step. The record names what happened (the caller adds the receipt's details).
    pub fn handle(self, input: FlowInput) -> Result<(Flow, Effects), FlowError> {
        let tx = self.transaction;
        let record = |kind: &str| Effects::record(kind, serde_json::json!({ "transaction": tx }));
        let wrong = |why: String| Err(FlowError::WrongState(why));
        let mut next = self;
        match input {
            FlowInput::Escrow {
                verified,
                same_as_stored,
            } => {
                self.not_fair("; sign it directly")?;
                if self.state == ReceiptState::Escrowed && same_as_stored {
                    return Ok((self, Effects::none()));
                }
                self.undecided()?;
                if self.state != ReceiptState::Offered {
                    return wrong(format!("the receipt is {}, not offered", self.state));
                }
                if !verified {
                    // Block 307: a bad escrow makes the originator abort at the arbiter.
                    return self.handle(FlowInput::Arbiter(Request::Abort));
                }
                next.state = ReceiptState::Escrowed;
                Ok((next, record("receipt_escrowed")))
            }
            FlowInput::Sign { same_as_stored } => {
                if self.state.is_complete() {
                    return if same_as_stored {
                        Ok((self, Effects::none()))
                    } else {
                        wrong(format!("the receipt is already {}", self.state))
                    };
                }
                if self.fair {
                    self.undecided()?;
                }
                let expected = if self.fair {
                    ReceiptState::Escrowed
                } else {
                    ReceiptState::Offered
                };
                if self.state != expected {
                    return wrong(if self.fair && self.state == ReceiptState::Offered {
                        "send your verifiable escrow first (fair exchange)".to_string()
                    } else {
                        format!("the receipt is {}, not {expected}", self.state)
                    });
                }
                next.state = ReceiptState::Signed;
                Ok((next, record("receipt_signed")))
            }
            FlowInput::Ack => {
                if !self.written {
                    return wrong("nothing was written to a token for this receipt".into());
                }
                if self.acked {
                    return Ok((self, Effects::none()));
                }
                next.acked = true;
                if self.state == ReceiptState::Signed {
                    next.state = ReceiptState::Acked;
                }
                Ok((next, record("receipt_acked")))
            }
            FlowInput::RetryWrite => {
                if !self.written || self.acked {
                    return wrong("no write is waiting for its ack".into());
                }
                next.write_attempts += 1;
                let effects = Effects::record(
                    "receipt_write_retried",
                    serde_json::json!({ "transaction": tx, "attempt": next.write_attempts }),
                );
                Ok((next, effects))
            }
            FlowInput::Arbiter(request) => {
                self.may_ask(Ask::of(&request))?;
                let (decision, answer) = exchange::decide(self.decision, request);
                if self.decision != Decision::Open || decision == Decision::Open {
                    // A standing decision answers without a step.
                    answer?;
                    return Ok((self, Effects::none()));
                }
                next.decision = decision;
                next.state = match decision {
                    Decision::Aborted => ReceiptState::Aborted,
                    Decision::Failed => ReceiptState::Failed,
                    Decision::Resolved { .. } => ReceiptState::Resolved,
                    Decision::Open => self.state,
                };
                Ok((next, record(&format!("arbiter_{}", decision.name()))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipt::PartySignature;
    use tally_kernel::crypto::SigningKey;

    fn sig(n: u8) -> PartySignature {
        PartySignature::Ed25519(SigningKey::from_seed(&[n; 32]).sign(b"t\0", b"m"))
    }

    fn flow(fair: bool) -> Flow {
        Flow {
            transaction: 7,
            fair,
            state: ReceiptState::Offered,
            decision: Decision::Open,
            written: false,
            acked: false,
            write_attempts: 0,
            abort_at: Some(tally_kernel::Timestamp(1_000)),
        }
    }

    #[test]
    fn only_an_unanswered_fair_offer_times_out() {
        assert_eq!(
            flow(true).poll_timeout(),
            Some(tally_kernel::Timestamp(1_000))
        );
        assert_eq!(flow(false).poll_timeout(), None, "a plain receipt waits");
        let escrowed = Flow {
            state: ReceiptState::Escrowed,
            ..flow(true)
        };
        assert_eq!(escrowed.poll_timeout(), None, "B answered");
        let aborted = Flow {
            decision: Decision::Aborted,
            ..flow(true)
        };
        assert_eq!(aborted.poll_timeout(), None, "decided");
    }

    fn step(f: Flow, input: FlowInput) -> Flow {
        let (next, effects) = f.handle(input).expect("step");
        assert!(!effects.is_none(), "{input:?} from {:?} is a step", f.state);
        next
    }

    const SIGN: FlowInput = FlowInput::Sign {
        same_as_stored: false,
    };

    #[test]
    fn a_plain_receipt_is_signed_then_acked_and_retries_are_no_steps() {
        let signed = step(flow(false), SIGN);
        assert_eq!(signed.state, ReceiptState::Signed);
        let (same, e) = signed
            .handle(FlowInput::Sign {
                same_as_stored: true,
            })
            .expect("retry");
        assert!(e.is_none());
        assert_eq!(same, signed);
        assert!(
            matches!(signed.handle(SIGN), Err(FlowError::WrongState(_))),
            "another signature"
        );
        assert!(signed.handle(FlowInput::Ack).is_err(), "nothing written");
        let written = Flow {
            written: true,
            ..signed
        };
        let retried = step(written, FlowInput::RetryWrite);
        assert_eq!(retried.write_attempts, 1);
        let acked = step(retried, FlowInput::Ack);
        assert_eq!((acked.state, acked.acked), (ReceiptState::Acked, true));
        assert!(acked.handle(FlowInput::Ack).expect("again").1.is_none());
        assert!(acked.handle(FlowInput::RetryWrite).is_err());
        assert!(
            flow(false)
                .handle(FlowInput::Escrow {
                    verified: true,
                    same_as_stored: false
                })
                .is_err()
        );
        assert!(
            flow(false)
                .handle(FlowInput::Arbiter(Request::Abort))
                .is_err()
        );
    }

    #[test]
    fn a_fair_exchange_needs_the_escrow_before_the_signature() {
        let f = flow(true);
        assert!(f.handle(SIGN).is_err(), "escrow first");
        let escrowed = step(
            f,
            FlowInput::Escrow {
                verified: true,
                same_as_stored: false,
            },
        );
        assert_eq!(escrowed.state, ReceiptState::Escrowed);
        assert!(
            escrowed
                .handle(FlowInput::Escrow {
                    verified: true,
                    same_as_stored: true
                })
                .expect("retry")
                .1
                .is_none()
        );
        assert!(
            escrowed.handle(FlowInput::Arbiter(Request::Abort)).is_err(),
            "resolve instead"
        );
        assert_eq!(step(escrowed, SIGN).state, ReceiptState::Signed);
    }

    #[test]
    fn a_bad_escrow_aborts_and_nothing_moves_afterwards() {
        let aborted = step(
            flow(true),
            FlowInput::Escrow {
                verified: false,
                same_as_stored: false,
            },
        );
        assert_eq!(
            (aborted.state, aborted.decision),
            (ReceiptState::Aborted, Decision::Aborted)
        );
        assert_eq!(
            aborted.handle(SIGN),
            Err(FlowError::Arbiter(Refusal::Aborted))
        );
        let resolve = Request::ResolveByNode {
            signature_a: sig(1),
            escrowed_b: sig(2),
        };
        assert_eq!(
            aborted.handle(FlowInput::Arbiter(resolve)),
            Err(FlowError::Arbiter(Refusal::Aborted))
        );
        // Aborting again answers from the standing decision, without a step.
        let (same, e) = aborted
            .handle(FlowInput::Arbiter(Request::Abort))
            .expect("again");
        assert!(e.is_none());
        assert_eq!(same.answer(Request::Abort), Ok(Answer::Aborted));
    }

    #[test]
    fn the_arbiter_decides_once_and_answers_from_it() {
        let escrowed = step(
            flow(true),
            FlowInput::Escrow {
                verified: true,
                same_as_stored: false,
            },
        );
        let by_client = Request::ResolveByClient {
            signature_b: sig(2),
            escrowed_a: Some(sig(1)),
        };
        let resolved = step(escrowed, FlowInput::Arbiter(by_client));
        assert_eq!(resolved.state, ReceiptState::Resolved);
        assert_eq!(resolved.answer(by_client), Ok(Answer::Signature(sig(1))));
        let by_node = Request::ResolveByNode {
            signature_a: sig(1),
            escrowed_b: sig(3),
        };
        let (same, e) = resolved
            .handle(FlowInput::Arbiter(by_node))
            .expect("standing");
        assert!(e.is_none());
        assert_eq!(
            same.answer(by_node),
            Ok(Answer::Signature(sig(2))),
            "the first decision stands"
        );
        // A resolve with a bad escrow fails the exchange for good.
        let failed = step(
            escrowed,
            FlowInput::Arbiter(Request::ResolveByClient {
                signature_b: sig(2),
                escrowed_a: None,
            }),
        );
        assert_eq!(failed.state, ReceiptState::Failed);
        assert_eq!(
            failed.handle(FlowInput::Arbiter(by_node)),
            Err(FlowError::Arbiter(Refusal::Failed))
        );
    }

    #[test]
    fn every_sequence_of_requests_ends_in_at_most_one_decision() {
        // All sequences of three inputs from a fresh fair exchange: once decided, the
        // decision never changes, and a completed receipt never gets one.
        let inputs = [
            FlowInput::Escrow {
                verified: true,
                same_as_stored: false,
            },
            FlowInput::Escrow {
                verified: false,
                same_as_stored: false,
            },
            SIGN,
            FlowInput::Arbiter(Request::Abort),
            FlowInput::Arbiter(Request::ResolveByClient {
                signature_b: sig(2),
                escrowed_a: Some(sig(1)),
            }),
            FlowInput::Arbiter(Request::ResolveByClient {
                signature_b: sig(2),
                escrowed_a: None,
            }),
            FlowInput::Arbiter(Request::ResolveByNode {
                signature_a: sig(1),
                escrowed_b: sig(2),
            }),
        ];
        for a in inputs {
            for b in inputs {
                for c in inputs {
                    let mut f = flow(true);
                    let mut decided = None;
                    for i in [a, b, c] {
                        if let Ok((next, _)) = f.handle(i) {
                            f = next;
                        }
                        if f.decision != Decision::Open {
                            assert!(decided.is_none_or(|d| d == f.decision), "{a:?} {b:?} {c:?}");
                            decided = Some(f.decision);
                        }
                        if f.state.is_complete() && f.state != ReceiptState::Resolved {
                            assert_eq!(f.decision, Decision::Open);
                        }
                    }
                }
            }
        }
    }
}
