//! Frames from pad holders (`POST /v1/pad-frames`; `docs/protocols/pads.md`, The frame): the
//! node's four moves — place the header, compare a frame behind with the one taken there,
//! check the tag under the twin's bytes, and hand an authentic frame in place to the machine —
//! then the step's new pad row (guarded on the cursors it was decided from), its record line
//! and its answer commit with its ledger command in one transaction.
//!
//! A frame sent again byte for byte is answered as the first time (its kept reply, or its
//! refusal), and changes nothing: the frame is its own idempotency key. The step's key names
//! the pad, the offset and the frame's digest, so two nodes taking the same frame at once
//! commit it once, and two different frames at one offset cannot both pass the pad's guard.

use super::{PadServiceError, Pads, corrupt};
use crate::exec::retrying;
use crate::{Result, ServiceError};
use tally_kernel::crypto::seal;
use tally_proto::pad::frame::{self, Direction, Frame};
use tally_proto::pad::ids::{MailboxAddress, MessageId, RequestId};
use tally_proto::pad::machine::{Answer, Facts, Input, PadError, Place, Refusal};
use tally_proto::pad::plain::{Delivered, ProviderName, Reply, Request, Sender};
use tally_proto::pad::record::Line;
use tally_store::pads::{
    PadMessage, PadRecord, PadRow, delete_message, delete_used_chunks, insert_message,
    insert_record, update,
};

/// The node's answer to an up frame that was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameAnswer {
    /// The down frame.
    pub reply: Vec<u8>,
    /// True when the frame had been taken before and this is its kept reply.
    pub replayed: bool,
}

impl Pads {
    /// Takes an up frame. Refusals before the machine's step change nothing; an authentic
    /// frame that is refused is burned ([`PadServiceError::Refused`]).
    pub async fn frame(&self, bytes: &[u8]) -> Result<FrameAnswer> {
        let f = frame::parse(bytes).map_err(|e| match e {
            frame::FrameError::Malformed(why) => {
                ServiceError::Pad(PadServiceError::MalformedFrame(why))
            }
            other => ServiceError::Setup(format!("bug: {other}")),
        })?;
        if f.header.direction != Direction::Up {
            return Err(ServiceError::Pad(PadServiceError::MalformedFrame(
                "the node takes up frames only",
            )));
        }
        retrying(|| self.frame_once(&f)).await
    }

    async fn frame_once(&self, f: &Frame<'_>) -> Result<FrameAnswer> {
        let store = self.core.store();
        let not_authentic = || ServiceError::Pad(PadServiceError::NotAuthentic);
        let row = store
            .pad(&f.header.pad.0)
            .await?
            .ok_or_else(not_authentic)?;
        let pad = self.machine(&row)?;
        let digest = f.digest();
        match pad.place(&f.header)? {
            Place::Behind => {
                let taken = store.pad_record_at(&row.id, f.header.offset).await?;
                match pad.behind(&digest, taken.as_ref().map(|r| &r.digest)) {
                    PadError::Replayed => {
                        return answered(taken.ok_or_else(not_authentic)?, pad.up_next);
                    }
                    other => return Err(other.into()),
                }
            }
            Place::Ahead => {
                let material = self.material(&row, pad.size, f.header.range()).await?;
                f.open(&material).map_err(|_| not_authentic())?;
                return Err(PadError::OffsetAhead {
                    up_next: pad.up_next,
                }
                .into());
            }
            Place::Fresh => {}
        }
        let material = self.material(&row, pad.size, f.header.range()).await?;
        let plain = f.open(&material).map_err(|_| not_authentic())?;
        let request = Request::decode(&plain);
        let decoded = request.clone().ok();
        let Read {
            facts,
            picked,
            pin_rows,
            provider,
            escrow,
            delivered_to,
        } = self.facts(&row, request.as_ref().ok()).await?;
        let new_id = facts.new_id;
        let commission_bps = facts.tariff.commission_bps;
        let now = self.core.now();
        let (after, effects) = pad.clone().handle(
            self.core.now(),
            Input::Frame {
                header: f.header,
                digest,
                request,
                facts: Box::new(facts),
            },
        )?;
        let last = after
            .last
            .clone()
            .ok_or_else(|| ServiceError::Setup("bug: a frame step without its answer".into()))?;
        let (reply, refusal) = match &last.answer {
            Answer::Reply {
                down_offset,
                len,
                body,
            } => {
                let reply = Reply {
                    in_reply_to: f.header.offset,
                    debit_minor: last.line.debit_minor,
                    body: body.clone(),
                };
                let plain = reply
                    .encode(*len)
                    .ok_or_else(|| ServiceError::Setup("bug: a reply that does not fit".into()))?;
                let range = *down_offset..*down_offset + *len as u64 + frame::KEY_LEN;
                let m = self.material(&row, pad.size, range).await?;
                let sealed = frame::seal(Direction::Down, pad.id, *down_offset, &plain, &m)
                    .map_err(|e| ServiceError::Setup(format!("bug: {e}")))?;
                (Some(sealed), None)
            }
            Answer::Refused(r) => (None, Some(r.clone())),
        };
        let after_row = PadRow {
            state: after.state.as_str().into(),
            up_next: after.up_next,
            down_low: after.down_low,
            machine: serde_json::to_string(&after).map_err(corrupt)?,
            updated_at: now,
            ..row.clone()
        };
        let record = PadRecord {
            n: pad.records.count,
            up_offset: f.header.offset,
            digest,
            line: last.line.to_bytes().to_vec(),
            reply: reply.clone(),
            refusal: refusal
                .as_ref()
                .map(|r| serde_json::to_string(r).map_err(corrupt))
                .transpose()?,
        };
        let mut rows = update(&row, &after_row).to_vec();
        rows.extend(insert_record(&row.id, &record));
        // A `join`'s PIN check counts, taken or burned.
        rows.extend(pin_rows);
        // The twin's bytes used up by this step go (a one-time pad's; a session-key pad's twin
        // is its seed).
        if row.mode == tally_proto::pad::file::Mode::OneTime.as_str() {
            rows.push(delete_used_chunks(
                &row.id,
                super::CHUNK_LEN,
                after.up_next,
                after.down_low,
            ));
        }
        let key = format!(
            ":pad_frame:{}:{}:{}",
            pad.id,
            f.header.offset,
            hex::encode(digest)
        );
        // A debit into clearing gets its charge line: how settlements split it.
        if let Some(charge) = &last.charge {
            rows.push(super::providers::charge_row(new_id, &row, charge, now));
        }
        // What a taken request does beyond the pad: a post waits in its mailbox, a collect's
        // messages leave theirs, a forward goes to its provider.
        if let (Answer::Reply { .. }, Some(req)) = (&last.answer, &decoded) {
            match req {
                Request::Forward { body, .. } => {
                    let p = provider.as_ref().ok_or_else(|| {
                        ServiceError::Setup("bug: a forward taken without its provider".into())
                    })?;
                    // Escrowed when the machine held its debit (asked for, by the holder or
                    // the provider, and something to hold).
                    let held = last.charge.as_ref().is_some_and(|c| c.held);
                    rows.extend(self.forward_rows(
                        &row,
                        new_id,
                        p,
                        held,
                        body,
                        &key,
                        now,
                        commission_bps,
                    ));
                }
                Request::Post {
                    show_from, body, ..
                } => {
                    let to = delivered_to.as_ref().ok_or_else(|| {
                        ServiceError::Setup("bug: a post taken without its mailbox".into())
                    })?;
                    rows.push(
                        self.message_row(&row, new_id, to, *show_from, body, now)
                            .await?,
                    )
                }
                Request::Collect { .. } => rows.extend(picked.iter().map(delete_message)),
                Request::Release { .. } | Request::Dispute { .. } => {
                    let (f, to) = escrow.as_ref().ok_or_else(|| {
                        ServiceError::Setup("bug: an escrow step without its escrow".into())
                    })?;
                    rows.extend(tally_store::pad_providers::move_forward(
                        &f.request, &f.state, to, now,
                    ));
                }
                _ => {}
            }
        }
        let outcome = self.core.commit(key, effects, rows).await?;
        if outcome.replayed {
            let taken = store
                .pad_record_at(&row.id, f.header.offset)
                .await?
                .ok_or_else(|| {
                    ServiceError::Setup("bug: a replayed frame without its record".into())
                })?;
            return answered(taken, after.up_next);
        }
        match (reply, refusal) {
            (Some(reply), _) => Ok(FrameAnswer {
                reply,
                replayed: false,
            }),
            (None, Some(r)) => Err(ServiceError::Pad(PadServiceError::Refused(r))),
            (None, None) => Err(ServiceError::Setup("bug: a frame without an answer".into())),
        }
    }

    /// What the machine needs for one request, read now (the step's guard makes it current),
    /// the ids of the messages a `collect` hands over, the rows a `join`'s PIN check writes,
    /// and a `forward`'s provider.
    async fn facts(&self, row: &PadRow, request: Option<&Request>) -> Result<Read> {
        let c = self.currency(row.currency).await?;
        let tariff = super::tariff_of(&c)?;
        let available = self.available(row.value_account).await?;
        let mut facts = Facts::new(tariff, available, row.value_account, c.clearing_account);
        crate::identity::getrandom_fill(&mut facts.new_id)?;
        if let Some(Request::Records { from, max }) = request {
            let records = self
                .core
                .store()
                .pad_records(&row.id, *from, u64::from(*max))
                .await?;
            for r in records {
                let bytes: [u8; 65] = r.line[..]
                    .try_into()
                    .map_err(|_| corrupt("a record line is not 65 bytes"))?;
                facts
                    .lines
                    .push(Line::from_bytes(&bytes).ok_or_else(|| corrupt("a record line"))?);
            }
        }
        facts.escrow_hold_s = self.settings.escrow_s + 86_400;
        let mut picked = Vec::new();
        let mut pin_rows = Vec::new();
        let mut provider = None;
        let mut escrow = None;
        let mut delivered_to = None;
        match request {
            Some(r @ (Request::Release { request } | Request::Dispute { request })) => {
                let release = matches!(r, Request::Release { .. });
                let f = self.core.store().pad_forward(&request.0).await?;
                if let Some(f) = f.filter(|f| f.pad == row.id)
                    && let Some(to) = super::escrow::by_holder(&f, release)
                {
                    facts.escrow_known = true;
                    escrow = Some((f, to));
                }
            }
            Some(Request::Forward { provider: name, .. }) => {
                if let Some((terms, p)) = self.terms(name, row.currency).await? {
                    facts.provider = Some(terms);
                    provider = Some(p);
                }
            }
            Some(Request::Join { account, pin }) => {
                facts.pin = Some(match self.core.store().pad_account(&account.0).await? {
                    Some(a) => {
                        let v = self.check_pin(&a, pin).await?;
                        pin_rows = v.rows;
                        v.check
                    }
                    None => tally_proto::pad::machine::PinCheck::Wrong { attempts_left: 0 },
                });
            }
            Some(Request::Post { to, .. }) => {
                // A pad's mailbox address, or a key's (its alias' mailbox).
                let store = self.core.store();
                let mailbox = match store.pad_of_mailbox(&to.0).await? {
                    Some(_) => Some(to.0),
                    None => match store.pad_alias(&to.0).await? {
                        Some((m, _)) if store.pad_of_mailbox(&m).await?.is_some() => Some(m),
                        _ => None,
                    },
                };
                facts.mailbox_known = mailbox.is_some();
                delivered_to = mailbox.map(MailboxAddress);
            }
            Some(r @ Request::Collect { .. }) => {
                let store = self.core.store();
                if let Some(mailbox) = store.mailbox_of_pad(&row.id).await? {
                    let (messages, released) = store
                        .released_messages(&mailbox, self.core.now(), 64)
                        .await?;
                    // What fits the reply: its head, the count and `waiting` aside.
                    let mut budget = r.reply_len().saturating_sub(17 + 2 + 4);
                    for m in messages {
                        let d = Delivered {
                            id: MessageId(m.id),
                            from: sender(m.sender_kind, &m.sender)?,
                            in_reply_to: m.in_reply_to.map(RequestId),
                            body: self.open_message(&m)?,
                        };
                        if d.encoded_len() > budget {
                            break;
                        }
                        budget -= d.encoded_len();
                        picked.push(m.id);
                        facts.collected.push(d);
                    }
                    facts.waiting =
                        u32::try_from(released - picked.len() as u64).unwrap_or(u32::MAX);
                }
            }
            _ => {}
        }
        Ok(Read {
            facts,
            picked,
            pin_rows,
            provider,
            escrow,
            delivered_to,
        })
    }

    /// A posted message's row: its body sealed at rest, released by the relay's schedule.
    async fn message_row(
        &self,
        row: &PadRow,
        id: [u8; 16],
        to: &MailboxAddress,
        show_from: bool,
        body: &[u8],
        now: tally_kernel::Timestamp,
    ) -> Result<tally_store::Attachment> {
        let sender = match show_from {
            true => self
                .core
                .store()
                .mailbox_of_pad(&row.id)
                .await?
                .map(|a| MailboxAddress(a).to_string()),
            false => None,
        };
        let sealed = seal::seal(&self.mailbox_key()?, &id, body)
            .map_err(|e| ServiceError::Setup(e.to_string()))?;
        Ok(insert_message(&PadMessage {
            id,
            mailbox: to.0,
            sender_kind: if sender.is_some() { 2 } else { 0 },
            sender: sender.unwrap_or_default(),
            in_reply_to: None,
            body: sealed,
            release_at: self.settings.relay.release_at(&self.relay_key, now),
            created_at: now,
        }))
    }

    pub(super) fn mailbox_key(&self) -> Result<[u8; 32]> {
        self.mailbox_key
            .expose()
            .as_slice()
            .try_into()
            .map_err(|_| ServiceError::Setup("the mailbox key is not 32 bytes".into()))
    }

    fn open_message(&self, m: &PadMessage) -> Result<Vec<u8>> {
        let plain = seal::open(&self.mailbox_key()?, &m.id, &m.body).map_err(corrupt)?;
        Ok(plain.expose().clone())
    }
}

/// What the node read for one frame.
struct Read {
    facts: Facts,
    /// The messages a `collect` hands over.
    picked: Vec<[u8; 16]>,
    /// A `join`'s PIN check.
    pin_rows: Vec<tally_store::Attachment>,
    /// A `forward`'s provider.
    provider: Option<tally_store::pad_providers::ProviderRow>,
    /// A `release`'s or `dispute`'s escrow, and the state it moves to.
    escrow: Option<(tally_store::pad_providers::ForwardRow, &'static str)>,
    /// A `post`'s mailbox (its address, or the mailbox of the key it names).
    delivered_to: Option<MailboxAddress>,
}

/// A stored sender as a reply shows it.
fn sender(kind: u8, text: &str) -> Result<Sender> {
    Ok(match kind {
        1 => Sender::Provider(ProviderName::new(text).map_err(corrupt)?),
        2 => Sender::Mailbox(text.parse().map_err(corrupt)?),
        _ => Sender::None,
    })
}

/// The answer kept for a frame taken before.
fn answered(taken: PadRecord, up_next: u64) -> Result<FrameAnswer> {
    if let Some(reply) = taken.reply {
        return Ok(FrameAnswer {
            reply,
            replayed: true,
        });
    }
    match taken.refusal {
        Some(text) => {
            let r: Refusal = serde_json::from_str(&text).map_err(corrupt)?;
            Err(ServiceError::Pad(PadServiceError::Refused(r)))
        }
        // Taken long ago: its reply is no longer kept.
        None => Err(ServiceError::Pad(PadServiceError::OffsetUsed { up_next })),
    }
}
