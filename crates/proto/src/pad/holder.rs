//! The holder's side of a pad (SPEC P3, P8): seals its requests at the next free offset and
//! takes the node's answers, checking that a reply uses only bytes the node may use (below
//! every reply before it, above the request it answers), that it is authentic and answers that
//! request; it keeps the same record chain as the node, line by line.
//!
//! One frame is in flight at a time: the holder moves on only when its frame is answered (a
//! reply or a refusal of an authentic frame). A frame whose answer was lost is sent again byte
//! for byte; the node answers it the same. The wallet (`tally pad`), the tests and the
//! simulator all hold pads through this type.

use serde::{Deserialize, Serialize};

use super::file::{PadBytes, TRAFFIC_START};
use super::frame::{self, Direction, FrameError, KEY_LEN};
use super::ids::PadId;
use super::machine::Refusal;
use super::plain::{PlainError, Reply, Request};
use super::record::{Chain, Line, Outcome};

/// Why the holder did not send, or did not take an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HolderError {
    /// The request and its largest reply do not fit the bytes left: nothing was sent.
    #[error(
        "the pad's bytes are used up ({left} left, this request and its reply need {needed}): buy a new pad"
    )]
    BytesUsedUp {
        /// Free bytes.
        left: u64,
        /// Bytes the request and its reply need.
        needed: u64,
    },
    /// The request does not encode (a body over 32 KiB).
    #[error(transparent)]
    Request(#[from] PlainError),
    /// The node's answer is not one the holder takes: nothing changed on the holder's side.
    #[error("the node's reply is refused: {0}")]
    Reply(&'static str),
    /// A frame or pad-byte misuse (a bug of the caller).
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// A pad as its holder keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The pad.
    pub pad: PadId,
    /// The first up byte not used by an answered frame.
    pub up_next: u64,
    /// The lowest down byte the node's replies used.
    pub down_low: u64,
    /// The records' head.
    pub records: Chain,
}

impl Holder {
    /// A pad of `size` bytes not used yet.
    pub fn new(pad: PadId, size: u64) -> Holder {
        Holder {
            pad,
            up_next: TRAFFIC_START,
            down_low: size,
            records: Chain::new(pad),
        }
    }

    /// `request` sealed at the next free offset (padded to its size class when `padded`).
    /// Refused when it and its largest reply do not fit: the node would burn it.
    pub fn seal(
        &self,
        bytes: &PadBytes,
        request: &Request,
        padded: bool,
    ) -> Result<Vec<u8>, HolderError> {
        let plain = request.encode(padded)?;
        self.seal_plain(bytes, &plain, request.reply_len())
    }

    /// Raw plaintext sealed at the next free offset (a test's malformed request), with room
    /// for a reply of `reply_len`.
    pub fn seal_plain(
        &self,
        bytes: &PadBytes,
        plain: &[u8],
        reply_len: usize,
    ) -> Result<Vec<u8>, HolderError> {
        let offset = self.up_next;
        let needed = plain.len() as u64 + KEY_LEN + reply_len as u64 + KEY_LEN;
        let left = self.down_low.saturating_sub(offset);
        if needed > left {
            return Err(HolderError::BytesUsedUp { left, needed });
        }
        let m = bytes
            .read(offset..offset + plain.len() as u64 + KEY_LEN)
            .map_err(|_| HolderError::Reply("pad bytes out of range"))?;
        Ok(frame::seal(Direction::Up, self.pad, offset, plain, &m)?)
    }

    /// Takes the node's `down` reply to the holder's frame `up`: checks and opens it, moves the
    /// cursors past both, and appends the record line.
    pub fn answered(
        &mut self,
        bytes: &PadBytes,
        up: &[u8],
        down: &[u8],
    ) -> Result<(Reply, Line), HolderError> {
        let u = self.own(up)?;
        let d = frame::parse(down).map_err(|_| HolderError::Reply("not a frame"))?;
        let (ur, dr) = (u.header.range(), d.header.range());
        if d.header.direction != Direction::Down || d.header.pad != self.pad {
            return Err(HolderError::Reply("not a reply of this pad"));
        }
        if dr.start < ur.end || dr.end > self.down_low {
            return Err(HolderError::Reply("it uses pad bytes the node may not"));
        }
        let m = bytes
            .read(dr.clone())
            .map_err(|_| HolderError::Reply("out of the pad"))?;
        let plain = d
            .open(&m)
            .map_err(|_| HolderError::Reply("not authentic"))?;
        let reply = Reply::decode(&plain).map_err(|_| HolderError::Reply("it does not decode"))?;
        if reply.in_reply_to != u.header.offset {
            return Err(HolderError::Reply("it answers another frame"));
        }
        let line = Line {
            up_offset: u.header.offset,
            up_len: u.header.len,
            up_digest: u.digest(),
            outcome: Outcome::Taken,
            down_offset: d.header.offset,
            down_len: d.header.len,
            debit_minor: reply.debit_minor,
        };
        self.up_next = ur.end;
        self.down_low = dr.start;
        self.records = self.records.push(&line);
        Ok((reply, line))
    }

    /// Takes the node's refusal of the holder's frame `up` (an authentic frame it burned): the
    /// frame's bytes are spent, and a line records why. The refusal comes in clear: a check of
    /// the records (`show`) tells a forged one.
    pub fn burned(&mut self, up: &[u8], refusal: &Refusal) -> Result<Line, HolderError> {
        let u = self.own(up)?;
        let line = Line {
            up_offset: u.header.offset,
            up_len: u.header.len,
            up_digest: u.digest(),
            outcome: refusal.outcome(),
            down_offset: 0,
            down_len: 0,
            debit_minor: 0,
        };
        self.up_next = u.header.range().end;
        self.records = self.records.push(&line);
        Ok(line)
    }

    /// `up` parsed, if it is this holder's frame at its next offset.
    fn own<'a>(&self, up: &'a [u8]) -> Result<frame::Frame<'a>, HolderError> {
        let u = frame::parse(up)?;
        if u.header.pad != self.pad || u.header.offset != self.up_next {
            return Err(HolderError::Reply(
                "an answer to another frame than the one in flight",
            ));
        }
        Ok(u)
    }
}
