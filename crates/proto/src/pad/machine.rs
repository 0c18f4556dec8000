//! The pad as a state machine (SPEC P2–P4; `docs/protocols/pads.md`, The frame and Money): it
//! decides where each frame goes in the pad, what it costs, what the node answers and what
//! becomes of the pad, and says what to commit.
//!
//! The node takes an up frame in four moves, the first three outside the machine's step:
//! [`Pad::place`] reads the header against the cursors (nothing is looked at before); a frame
//! behind `up_next` is compared with the one taken there ([`Pad::behind`]: replayed or
//! offset used); a frame in place or ahead has its tag checked under the range's pad bytes
//! (`frame::open`; a frame ahead is then refused, authentic or not); and an authentic frame in
//! place goes to [`Pad::handle`] with its decoded request and the [`Facts`] the node read in
//! the same transaction (the value available, the provider's terms, …). That step either
//! takes the frame (the reply's range, the debit) or burns it (its bytes are spent, its
//! refusal answered in clear); both move `up_next` and append a record line, and the step's
//! [`Pad::last`] is what the node keeps to answer a replay.
//!
//! Invariants the step keeps (proptest below): `64 ≤ up_next ≤ down_low ≤ size`; up ranges
//! are taken gapless from 64 upwards and down ranges from `size` downwards, so no pad byte is
//! handed out twice; a pad never pays more than its available value; byte debits total
//! `⌊charged · p / 1024⌋`.

use serde::{Deserialize, Serialize};
use tally_kernel::{Amount, Currency, Id, Timestamp};
use tally_ledger::Command;

use super::file::TRAFFIC_START;
use super::frame::{Direction, Header, KEY_LEN};
use super::ids::{AccountId, MessageId, PadId, RequestId};
use super::plain::{
    CLASS_MIN, Delivered, Kind, PlainError, ProviderName, ReplyBody, Request, Shown, ShownState,
};
use super::record::{Chain, Line, Outcome};
use super::tariff::Tariff;
use crate::effects::{Blame, Effects, Fault};

/// Most providers on a pad's allow-list.
pub const ALLOW_MAX: usize = 32;

/// Free traffic bytes below which a pad is exhausted: a padded `show` and its reply.
pub const BYTES_LOW: u64 = 2 * (CLASS_MIN as u64 + KEY_LEN);

/// Where a pad is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Retail stock without value: frames refused.
    Blank,
    /// Frames taken.
    Active,
    /// Out of value or bytes: charged frames refused, free ones taken while bytes last.
    Exhausted,
    /// Its twin is gone; terminal.
    Cancelled,
}

stored_names!(State {
    Blank => "blank",
    Active => "active",
    Exhausted => "exhausted",
    Cancelled => "cancelled",
});

/// Why a pad refused an input. Nothing changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PadError {
    /// The pad is blank or cancelled.
    #[error("the pad is not active")]
    NotActive,
    /// The frame is the one taken at its offset: answer it with the kept reply.
    #[error("the frame was taken before; its reply is kept")]
    Replayed,
    /// Another frame was taken at this offset.
    #[error("pad bytes at this offset are used; the next free offset is {up_next}")]
    OffsetUsed {
        /// The first unused up byte.
        up_next: u64,
    },
    /// The frame is ahead of the next free offset: send the ones before it first.
    #[error("the frame is ahead of the next free offset {up_next}")]
    OffsetAhead {
        /// The first unused up byte.
        up_next: u64,
    },
    /// The frame's range crosses the bytes the node's replies used.
    #[error("the pad's bytes are used up (up {up_next}, down {down_low})")]
    BytesExhausted {
        /// The first unused up byte.
        up_next: u64,
        /// The lowest down byte used.
        down_low: u64,
    },
    /// The input does not fit the pad's state (a second activation, a cancelled pad's cancel).
    #[error("{0}")]
    WrongState(&'static str),
    /// A caller bug: facts that do not fit the request, a frame of another pad.
    #[error("API misuse: {0}")]
    ApiMisuse(&'static str),
}

impl Blame for PadError {
    fn fault(&self) -> Fault {
        match self {
            PadError::ApiMisuse(_) => Fault::Node,
            _ => Fault::Caller,
        }
    }
}

/// Where an up frame falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// At `up_next`, below `down_low`: check its tag and hand it to [`Pad::handle`].
    Fresh,
    /// Behind `up_next`: compare it with the frame taken there ([`Pad::behind`]).
    Behind,
    /// Ahead of `up_next`: check its tag, then refuse it ([`PadError::OffsetAhead`]).
    Ahead,
}

/// Why an authentic frame was burned: answered in clear, its bytes spent, nothing else done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Refusal {
    /// The plaintext did not decode.
    MalformedRequest,
    /// The reply would not fit the bytes left.
    PadBytesExhausted {
        /// The first unused up byte, after this frame.
        up_next: u64,
        /// The lowest down byte used.
        down_low: u64,
    },
    /// The value does not cover the debit.
    PadValueExhausted {
        /// Minor units available.
        available_minor: i64,
        /// Minor units the request needs.
        needed_minor: i64,
    },
    /// The provider is not registered or not on the pad's allow-list.
    ProviderNotAllowed,
    /// A wrong PIN; `attempts_left` 0 means the account is locked.
    PinWrong {
        /// Tries left before the account locks.
        attempts_left: u32,
    },
    /// No pad has this mailbox address.
    UnknownMailbox,
    /// This pad has no escrow of this request.
    UnknownRequest,
}

impl Refusal {
    /// The record's outcome for it.
    pub fn outcome(&self) -> Outcome {
        match self {
            Refusal::MalformedRequest => Outcome::MalformedRequest,
            Refusal::PadBytesExhausted { .. } => Outcome::PadBytesExhausted,
            Refusal::PadValueExhausted { .. } => Outcome::PadValueExhausted,
            Refusal::ProviderNotAllowed => Outcome::ProviderNotAllowed,
            Refusal::PinWrong { .. } => Outcome::PinWrong,
            Refusal::UnknownMailbox => Outcome::UnknownMailbox,
            Refusal::UnknownRequest => Outcome::UnknownRequest,
        }
    }
}

/// The node's answer to the last frame taken or burned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Taken: the reply's plaintext fields, to seal at `down_offset` with `len` bytes.
    Reply {
        /// The first pad byte of the reply frame.
        down_offset: u64,
        /// The reply's plaintext length (its size class).
        len: usize,
        /// What it says.
        body: ReplyBody,
    },
    /// Burned.
    Refused(Refusal),
}

/// The last frame and its answer: what the node keeps to answer the same frame again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Last {
    /// Its record line.
    pub line: Line,
    /// The answer.
    pub answer: Answer,
    /// How its debit splits in clearing (a taken frame that paid something).
    pub charge: Option<Charge>,
}

/// How a taken frame's debit into clearing splits between the operator and a provider: the
/// node's charge line, from which settlements pay each share once. The shares add up to the
/// debit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// The operator's: the byte debit, a `post`'s price, the commission on a provider's price.
    pub operator_minor: i64,
    /// The provider with a share (a `forward`'s).
    pub provider: Option<ProviderName>,
    /// The provider's: its price less the commission.
    pub provider_minor: i64,
    /// The debit is an escrow's hold, not in clearing until the escrow resolves.
    pub held: bool,
}

/// A provider's terms, as registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    /// Its price per request, in the pad's currency.
    pub price_minor: i64,
    /// Whether its requests are held in escrow until it performed.
    pub escrow: bool,
}

/// What a PIN check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinCheck {
    /// The PIN is the account's.
    Right,
    /// Wrong; `attempts_left` before the account locks (0: locked now or before).
    Wrong {
        /// Tries left.
        attempts_left: u32,
    },
}

/// What the node read in the step's transaction for an up frame. Only the fields of the
/// request's kind are looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The operator's prices in the pad's currency.
    pub tariff: Tariff,
    /// The pad value account's available balance, minor units.
    pub available_minor: i64,
    /// The pad's value account.
    pub value_account: Id,
    /// The pad clearing account of the currency.
    pub clearing_account: Id,
    /// Seconds an escrowed forward's hold lasts.
    pub escrow_hold_s: i64,
    /// `forward`: the provider's terms, if it is registered.
    pub provider: Option<Terms>,
    /// `forward` and `post`: the id the new request or message gets.
    pub new_id: [u8; 16],
    /// `post`: whether a pad has the address.
    pub mailbox_known: bool,
    /// `collect`: the messages the node picked (they fit the reply) and how many more wait.
    pub collected: Vec<Delivered>,
    /// `collect`: messages still waiting after these.
    pub waiting: u32,
    /// `release`, `dispute`: whether this pad has an escrow of the request.
    pub escrow_known: bool,
    /// `join`: the PIN check.
    pub pin: Option<PinCheck>,
    /// `records`: the lines asked for.
    pub lines: Vec<Line>,
}

impl Facts {
    /// Facts with nothing found, for a pad whose accounts are `value` and `clearing`.
    pub fn new(tariff: Tariff, available_minor: i64, value: Id, clearing: Id) -> Facts {
        Facts {
            tariff,
            available_minor,
            value_account: value,
            clearing_account: clearing,
            escrow_hold_s: 8 * 86_400,
            provider: None,
            new_id: [0; 16],
            mailbox_known: false,
            collected: Vec::new(),
            waiting: 0,
            escrow_known: false,
            pin: None,
            lines: Vec::new(),
        }
    }
}

/// What the machine is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// An authentic up frame in its place ([`Place::Fresh`]), its plaintext decoded or not.
    Frame {
        /// Its header.
        header: Header,
        /// SHA-256 of the whole frame.
        digest: [u8; 32],
        /// Its request.
        request: Result<Request, PlainError>,
        /// What the node read for it.
        facts: Box<Facts>,
    },
    /// A retailer activates blank stock at the till: `value` from `from` into `into` (the
    /// pad's value account).
    Activate {
        /// The retailer's account.
        from: Id,
        /// The pad's value account.
        into: Id,
        /// The value sold.
        value: Amount,
    },
    /// The pad is cancelled (reported stolen while blank, or lost by its account): the
    /// available value moves from `from` (the pad's value account) to `to` (its account's).
    Cancel {
        /// The pad's value account.
        from: Id,
        /// Where the rest goes (none for blank stock).
        to: Option<Id>,
        /// The available value.
        available: Amount,
    },
    /// The pad moves to another PIN account.
    Transfer {
        /// The new owner.
        to: AccountId,
    },
    /// The providers the pad may pay are set (by its account, or at the sale); empty: any.
    Restrict {
        /// Provider names.
        allow: Vec<ProviderName>,
    },
    /// Value was credited (a provider paid the holder, an escrow came back): an exhausted pad
    /// with bytes left becomes active.
    Credited {
        /// The available value now, minor units.
        available_minor: i64,
    },
}

/// A pad at the node. Stored as JSON without [`Pad::last`] (the node keeps answers with the
/// records).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pad {
    /// Its id.
    pub id: PadId,
    /// Its state.
    pub state: State,
    /// Its size in bytes.
    pub size: u64,
    /// The currency of its value.
    pub currency: Currency,
    /// The first unused up byte.
    pub up_next: u64,
    /// The lowest down byte used (`size` before the first reply).
    pub down_low: u64,
    /// Pad bytes of charged frames so far, up and down.
    pub charged: u64,
    /// The records' head.
    pub records: Chain,
    /// Providers it may pay; empty: any.
    pub allow: Vec<ProviderName>,
    /// Its PIN account, if it joined one.
    pub account: Option<AccountId>,
    /// The last frame taken or burned (in this step's result only).
    #[serde(skip)]
    pub last: Option<Last>,
}

impl Pad {
    /// A new pad of `size` bytes, `Active` or (retail stock) `Blank`.
    pub fn new(id: PadId, size: u64, currency: Currency, blank: bool) -> Result<Pad, PadError> {
        if !(super::file::SIZE_MIN..=super::file::SIZE_MAX).contains(&size) {
            return Err(PadError::ApiMisuse("a pad is 4 KiB to 1 GiB"));
        }
        Ok(Pad {
            id,
            state: if blank { State::Blank } else { State::Active },
            size,
            currency,
            up_next: TRAFFIC_START,
            down_low: size,
            charged: 0,
            records: Chain::new(id),
            allow: Vec::new(),
            account: None,
            last: None,
        })
    }

    /// Free traffic bytes between the cursors.
    pub fn free(&self) -> u64 {
        self.down_low - self.up_next
    }

    /// Where an up frame falls; refuses frames of a pad not active and frames that cross the
    /// node's bytes. Looks at nothing but the header.
    pub fn place(&self, header: &Header) -> Result<Place, PadError> {
        if header.pad != self.id || header.direction != Direction::Up {
            return Err(PadError::ApiMisuse("an up frame of this pad"));
        }
        if matches!(self.state, State::Blank | State::Cancelled) {
            return Err(PadError::NotActive);
        }
        let range = header.range();
        if range.start < self.up_next {
            return Ok(Place::Behind);
        }
        if range.start > self.up_next {
            return Ok(Place::Ahead);
        }
        if range.end > self.down_low {
            return Err(PadError::BytesExhausted {
                up_next: self.up_next,
                down_low: self.down_low,
            });
        }
        Ok(Place::Fresh)
    }

    /// The refusal of a frame behind `up_next`, given the digest of the frame taken at its
    /// offset (`None`: no frame starts there).
    pub fn behind(&self, digest: &[u8; 32], taken: Option<&[u8; 32]>) -> PadError {
        if taken == Some(digest) {
            PadError::Replayed
        } else {
            PadError::OffsetUsed {
                up_next: self.up_next,
            }
        }
    }

    /// When the pad needs a timeout: never (escrows have their own deadlines).
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        None
    }

    /// One step. A refusal changes nothing.
    pub fn handle(self, now: Timestamp, input: Input) -> Result<(Pad, Effects), PadError> {
        let _ = now;
        match input {
            Input::Frame {
                header,
                digest,
                request,
                facts,
            } => self.frame(header, digest, request, &facts),
            Input::Activate { from, into, value } => {
                if self.state != State::Blank {
                    return Err(PadError::WrongState("only blank stock is activated"));
                }
                if value.minor <= 0 {
                    return Err(PadError::ApiMisuse(
                        "a pad is activated with a positive value",
                    ));
                }
                let memo = format!("{} activated", self.id);
                let pad = Pad {
                    state: State::Active,
                    ..self
                };
                Ok((pad, transfer(from, into, value, None, memo)))
            }
            Input::Cancel {
                from,
                to,
                available,
            } => {
                if self.state == State::Cancelled {
                    return Err(PadError::WrongState("the pad is cancelled already"));
                }
                let id = self.id;
                let pad = Pad {
                    state: State::Cancelled,
                    last: None,
                    ..self
                };
                let effects = match to {
                    Some(to) if available.minor > 0 => {
                        transfer(from, to, available, None, format!("{id} cancelled"))
                    }
                    _ => Effects::record("pad_cancelled", serde_json::json!({ "pad": id })),
                };
                Ok((pad, effects))
            }
            Input::Transfer { to } => {
                if matches!(self.state, State::Blank | State::Cancelled) {
                    return Err(PadError::NotActive);
                }
                let Some(from) = self.account else {
                    return Err(PadError::WrongState(
                        "a pad outside an account is not transferred",
                    ));
                };
                if from == to {
                    return Ok((self, Effects::none()));
                }
                let effects = Effects::record(
                    "pad_transferred",
                    serde_json::json!({ "pad": self.id, "from": from, "to": to }),
                );
                Ok((
                    Pad {
                        account: Some(to),
                        ..self
                    },
                    effects,
                ))
            }
            Input::Restrict { mut allow } => {
                if self.state == State::Cancelled {
                    return Err(PadError::NotActive);
                }
                if allow.len() > ALLOW_MAX {
                    return Err(PadError::WrongState("a pad allows at most 32 providers"));
                }
                allow.sort();
                allow.dedup();
                if allow == self.allow {
                    return Ok((self, Effects::none()));
                }
                let effects = Effects::record(
                    "pad_restricted",
                    serde_json::json!({ "pad": self.id, "allow": allow }),
                );
                Ok((Pad { allow, ..self }, effects))
            }
            Input::Credited { available_minor } => {
                let revives = self.state == State::Exhausted
                    && available_minor > 0
                    && self.free() >= BYTES_LOW;
                if !revives {
                    return Ok((self, Effects::none()));
                }
                let effects = Effects::record("pad_active", serde_json::json!({ "pad": self.id }));
                Ok((
                    Pad {
                        state: State::Active,
                        ..self
                    },
                    effects,
                ))
            }
        }
    }

    fn frame(
        mut self,
        header: Header,
        digest: [u8; 32],
        request: Result<Request, PlainError>,
        facts: &Facts,
    ) -> Result<(Pad, Effects), PadError> {
        if self.place(&header)? != Place::Fresh {
            return Err(PadError::ApiMisuse("only a frame in its place is handled"));
        }
        if facts.tariff.currency != self.currency {
            return Err(PadError::ApiMisuse("the tariff of the pad's currency"));
        }
        let up_end = header.range().end;
        let verdict = match request {
            Err(_) => Err(Refusal::MalformedRequest),
            Ok(request) => self.decide(&request, up_end, header.consumed(), facts),
        };
        let id = self.id;
        let line_up = |outcome, down_offset, down_len, debit_minor| Line {
            up_offset: header.offset,
            up_len: header.len,
            up_digest: digest,
            outcome,
            down_offset,
            down_len,
            debit_minor,
        };
        self.up_next = up_end;
        match verdict {
            Err(refusal) => {
                let line = line_up(refusal.outcome(), 0, 0, 0);
                self.records = self.records.push(&line);
                self.settle_state(facts.available_minor);
                let effects = Effects::record(
                    "pad_frame_burned",
                    serde_json::json!({
                        "pad": id, "offset": header.offset, "outcome": refusal.outcome(),
                    }),
                );
                self.last = Some(Last {
                    line,
                    answer: Answer::Refused(refusal),
                    charge: None,
                });
                Ok((self, effects))
            }
            Ok(Taken {
                request,
                reply_len,
                debit,
                price,
                charged,
            }) => {
                let down_len = reply_len as u64 + KEY_LEN;
                let down_offset = self.down_low - down_len;
                self.down_low = down_offset;
                self.charged += charged;
                let line = line_up(Outcome::Taken, down_offset, reply_len as u32, debit);
                self.records = self.records.push(&line);
                let available = facts.available_minor - debit;
                self.settle_state(available);
                let body = self.reply(&request, &header, available, facts)?;
                let escrow = match &request {
                    Request::Forward { escrow, .. } => {
                        *escrow || facts.provider.is_some_and(|t| t.escrow)
                    }
                    _ => false,
                };
                let effects = if debit > 0 {
                    let memo = format!(
                        "{id} frame {} {} byte debit {} price {price}",
                        header.offset,
                        kind_name(request.kind()),
                        debit - price
                    );
                    let hold = escrow.then_some(facts.escrow_hold_s);
                    transfer(
                        facts.value_account,
                        facts.clearing_account,
                        Amount::new(debit, facts.tariff.currency),
                        hold,
                        memo,
                    )
                } else {
                    Effects::record(
                        "pad_frame",
                        serde_json::json!({
                            "pad": id, "offset": header.offset, "kind": kind_name(request.kind()),
                        }),
                    )
                };
                if let Request::Join { account, .. } = &request {
                    self.account = Some(*account);
                }
                let charge = (debit > 0).then(|| {
                    let (provider, provider_minor) = match &request {
                        Request::Forward { provider, .. } => (
                            Some(provider.clone()),
                            price - facts.tariff.commission(price),
                        ),
                        _ => (None, 0),
                    };
                    Charge {
                        operator_minor: debit - provider_minor,
                        provider,
                        provider_minor,
                        held: escrow,
                    }
                });
                self.last = Some(Last {
                    line,
                    answer: Answer::Reply {
                        down_offset,
                        len: reply_len,
                        body,
                    },
                    charge,
                });
                Ok((self, effects))
            }
        }
    }

    /// Whether a decoded request is taken, and at what cost.
    fn decide(
        &self,
        request: &Request,
        up_end: u64,
        up_len: u64,
        facts: &Facts,
    ) -> Result<Taken, Refusal> {
        let reply_len = request.reply_len();
        let down_len = reply_len as u64 + KEY_LEN;
        if up_end + down_len > self.down_low {
            return Err(Refusal::PadBytesExhausted {
                up_next: up_end,
                down_low: self.down_low,
            });
        }
        let price = match request {
            Request::Forward { provider, .. } => {
                let listed = self.allow.is_empty() || self.allow.contains(provider);
                match facts.provider {
                    Some(terms) if listed => terms.price_minor,
                    _ => return Err(Refusal::ProviderNotAllowed),
                }
            }
            Request::Post { .. } if !facts.mailbox_known => return Err(Refusal::UnknownMailbox),
            Request::Post { .. } => facts.tariff.post_price_minor,
            Request::Release { .. } | Request::Dispute { .. } if !facts.escrow_known => {
                return Err(Refusal::UnknownRequest);
            }
            Request::Join { .. } => match facts.pin {
                Some(PinCheck::Right) => 0,
                Some(PinCheck::Wrong { attempts_left }) => {
                    return Err(Refusal::PinWrong { attempts_left });
                }
                None => return Err(Refusal::PinWrong { attempts_left: 0 }),
            },
            _ => 0,
        };
        let charged = if request.kind().charged() {
            up_len + down_len
        } else {
            0
        };
        let byte_debit = facts
            .tariff
            .byte_debit(self.charged, self.charged + charged);
        let debit = byte_debit + price;
        if debit > facts.available_minor {
            return Err(Refusal::PadValueExhausted {
                available_minor: facts.available_minor,
                needed_minor: debit,
            });
        }
        Ok(Taken {
            request: request.clone(),
            reply_len,
            debit,
            price,
            charged,
        })
    }

    /// `Active` ↔ `Exhausted` after a frame, by the value and bytes left.
    fn settle_state(&mut self, available_minor: i64) {
        let out = available_minor <= 0 || self.free() < BYTES_LOW;
        self.state = if out { State::Exhausted } else { State::Active };
    }

    fn reply(
        &self,
        request: &Request,
        header: &Header,
        available_minor: i64,
        facts: &Facts,
    ) -> Result<ReplyBody, PadError> {
        Ok(match request {
            Request::Show => ReplyBody::Show(Shown {
                state: if self.state == State::Active {
                    ShownState::Active
                } else {
                    ShownState::Exhausted
                },
                value_minor: available_minor,
                currency: facts.tariff.currency,
                up_next: self.up_next,
                down_low: self.down_low,
                records: self.records.count,
                record_hash: self.records.hash,
            }),
            Request::Forward { .. } => ReplyBody::Forward {
                request: RequestId(facts.new_id),
            },
            Request::Post { .. } => ReplyBody::Post {
                message: MessageId(facts.new_id),
            },
            Request::Collect { .. } => ReplyBody::Collect {
                messages: facts.collected.clone(),
                waiting: facts.waiting,
            },
            Request::Release { .. } => ReplyBody::Release,
            Request::Dispute { .. } => ReplyBody::Dispute,
            Request::Join { .. } => ReplyBody::Join,
            Request::Records { max, .. } => {
                if facts.lines.len() > usize::from(*max) {
                    return Err(PadError::ApiMisuse("more record lines than asked for"));
                }
                ReplyBody::Records {
                    lines: facts.lines.clone(),
                }
            }
            Request::Noop => ReplyBody::Noop,
        })
        .and_then(|body| {
            let reply = super::plain::Reply {
                in_reply_to: header.offset,
                debit_minor: 0,
                body,
            };
            if reply.encode(request.reply_len()).is_none() {
                return Err(PadError::ApiMisuse(
                    "the collected messages do not fit the reply",
                ));
            }
            Ok(reply.body)
        })
    }
}

/// A request the machine takes, with its cost.
struct Taken {
    request: Request,
    reply_len: usize,
    debit: i64,
    price: i64,
    charged: u64,
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Show => "show",
        Kind::Forward => "forward",
        Kind::Post => "post",
        Kind::Collect => "collect",
        Kind::Release => "release",
        Kind::Dispute => "dispute",
        Kind::Join => "join",
        Kind::Records => "records",
        Kind::Noop => "noop",
    }
}

fn transfer(from: Id, to: Id, amount: Amount, hold_s: Option<i64>, memo: String) -> Effects {
    Effects::ledger(Command::Transfer {
        debit_account: from,
        credit_account: to,
        amount_minor: amount.minor,
        currency: amount.currency,
        timeout_s: hold_s,
        memo,
    })
}
