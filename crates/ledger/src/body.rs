//! The bytes of a journal entry's body: what the hash covers and what the audit replays.
//!
//! Decision: transfers, which are nearly every entry and every byte of a batch's entry, are
//! written in a fixed binary layout (71 bytes for a plain transfer, plus 8 per entry, against
//! about 400 as JSON, and no text to format or parse); every other event stays JSON. Entries
//! written before this layout are JSON too and stay readable: a decoder tells the two apart by
//! the first byte (`{` opens JSON; a binary body opens with [`MAGIC`], whose first byte is 0,
//! which no JSON text starts with). Rejected: a general binary serde format (postcard,
//! bincode) — the transfer's optional fields are skipped when empty, which those formats
//! cannot read back, and the layout would be whatever the derive produced rather than one
//! written down in `docs/protocols/ledger.md` and checked by golden vectors.
//!
//! Layout (integers big-endian, ids 16 bytes):
//!
//! ```text
//! MAGIC "\0TX1" ‖ count u32 ‖ count × transfer
//! transfer = id ‖ kind u8 ‖ state u8 ‖ debit_account ‖ credit_account ‖ amount_minor i64
//!          ‖ currency [3] ASCII ‖ created_at i64 ‖ present u16
//!          ‖ the present fields, in bit order:
//!            bit 0 pending_id [16]      bit 1 pending_amount_minor i64   bit 2 expires_at i64
//!            bit 3 link_id [16]         bit 4 rate (numerator i64 ‖ denominator i64)
//!            bit 5 flags u16            bit 6 user_data_128 u128         bit 7 user_data_64 u64
//!            bit 8 user_data_32 u32     bit 9 code u16                   bit 10 memo (len u32 ‖ UTF-8)
//! ```
//!
//! A field is present exactly when it is not empty (`None`, zero, no flag, empty memo), so
//! each event has one encoding; the decoder refuses anything else (an unknown bit, an empty
//! field marked present, trailing bytes), so two different bodies never decode to one event.

use crate::{Event, Transfer, TransferFlags, TransferKind, TransferState};
use tally_kernel::{Currency, Id, Rate, Timestamp};

/// The first bytes of a binary transfers body (version 1 of the layout).
pub const MAGIC: [u8; 4] = *b"\0TX1";

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not JSON of an event.
    #[error("journal body is not an event: {0}")]
    Json(String),
    /// A binary body that breaks the layout.
    #[error("journal body: {0}")]
    Binary(&'static str),
}

/// The body for `event`.
pub fn encode(event: &Event) -> Vec<u8> {
    match event {
        Event::Transfers { transfers } => encode_transfers(transfers),
        Event::AccountOpened { .. } | Event::Recorded { .. } | Event::LimitSet { .. } => {
            // Serialising these types cannot fail: no maps with non-string keys, no
            // fallible serializers.
            serde_json::to_vec(event).unwrap_or_default()
        }
    }
}

/// The event a stored body holds, in either layout.
pub fn decode(body: &[u8]) -> Result<Event, BodyError> {
    if body.starts_with(&MAGIC) {
        let mut r = Reader(&body[MAGIC.len()..]);
        let count = r.u32()? as usize;
        // Each transfer takes at least FIXED bytes: never allocate past what the body holds.
        if count > r.0.len() / FIXED {
            return Err(BodyError::Binary("count larger than the body"));
        }
        let mut transfers = Vec::with_capacity(count);
        for _ in 0..count {
            transfers.push(r.transfer()?);
        }
        if !r.0.is_empty() {
            return Err(BodyError::Binary("trailing bytes"));
        }
        Ok(Event::Transfers { transfers })
    } else {
        serde_json::from_slice(body).map_err(|e| BodyError::Json(e.to_string()))
    }
}

/// Bytes of a transfer with no optional field.
const FIXED: usize = 16 + 1 + 1 + 16 + 16 + 8 + 3 + 8 + 2;

const KINDS: [TransferKind; 5] = [
    TransferKind::Single,
    TransferKind::Pending,
    TransferKind::PostPending,
    TransferKind::VoidPending,
    TransferKind::ExpirePending,
];
const STATES: [TransferState; 4] = [
    TransferState::Posted,
    TransferState::Pending,
    TransferState::Voided,
    TransferState::Expired,
];

mod bit {
    pub const PENDING_ID: u16 = 1;
    pub const PENDING_AMOUNT: u16 = 1 << 1;
    pub const EXPIRES_AT: u16 = 1 << 2;
    pub const LINK_ID: u16 = 1 << 3;
    pub const RATE: u16 = 1 << 4;
    pub const FLAGS: u16 = 1 << 5;
    pub const USER_DATA_128: u16 = 1 << 6;
    pub const USER_DATA_64: u16 = 1 << 7;
    pub const USER_DATA_32: u16 = 1 << 8;
    pub const CODE: u16 = 1 << 9;
    pub const MEMO: u16 = 1 << 10;
    pub const ALL: u16 = (1 << 11) - 1;
}

fn encode_transfers(transfers: &[Transfer]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + transfers.len() * (FIXED + 24));
    out.extend_from_slice(&MAGIC);
    // A journal entry never holds 2^32 transfers (a batch holds at most 8,189).
    out.extend_from_slice(
        &u32::try_from(transfers.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    for t in transfers {
        let kind = KINDS.iter().position(|k| *k == t.kind).unwrap_or(0);
        let state = STATES.iter().position(|s| *s == t.state).unwrap_or(0);
        out.extend_from_slice(t.id.as_bytes());
        out.push(kind as u8);
        out.push(state as u8);
        out.extend_from_slice(t.debit_account.as_bytes());
        out.extend_from_slice(t.credit_account.as_bytes());
        out.extend_from_slice(&t.amount_minor.to_be_bytes());
        out.extend_from_slice(t.currency.code().as_bytes());
        out.extend_from_slice(&t.created_at.as_micros().to_be_bytes());
        let flags = t.flags.bits();
        let present = [
            (t.pending_id.is_some(), bit::PENDING_ID),
            (t.pending_amount_minor.is_some(), bit::PENDING_AMOUNT),
            (t.expires_at.is_some(), bit::EXPIRES_AT),
            (t.link_id.is_some(), bit::LINK_ID),
            (t.rate.is_some(), bit::RATE),
            (flags != 0, bit::FLAGS),
            (t.user_data_128 != 0, bit::USER_DATA_128),
            (t.user_data_64 != 0, bit::USER_DATA_64),
            (t.user_data_32 != 0, bit::USER_DATA_32),
            (t.code != 0, bit::CODE),
            (!t.memo.is_empty(), bit::MEMO),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0_u16, |bits, (_, b)| bits | b);
        out.extend_from_slice(&present.to_be_bytes());
        if let Some(id) = t.pending_id {
            out.extend_from_slice(id.as_bytes());
        }
        if let Some(a) = t.pending_amount_minor {
            out.extend_from_slice(&a.to_be_bytes());
        }
        if let Some(at) = t.expires_at {
            out.extend_from_slice(&at.as_micros().to_be_bytes());
        }
        if let Some(id) = t.link_id {
            out.extend_from_slice(id.as_bytes());
        }
        if let Some(rate) = t.rate {
            out.extend_from_slice(&rate.numerator.to_be_bytes());
            out.extend_from_slice(&rate.denominator.to_be_bytes());
        }
        if flags != 0 {
            // Six flag bits: `bits()` never exceeds u16.
            out.extend_from_slice(&(flags as u16).to_be_bytes());
        }
        if t.user_data_128 != 0 {
            out.extend_from_slice(&t.user_data_128.to_be_bytes());
        }
        if t.user_data_64 != 0 {
            out.extend_from_slice(&t.user_data_64.to_be_bytes());
        }
        if t.user_data_32 != 0 {
            out.extend_from_slice(&t.user_data_32.to_be_bytes());
        }
        if t.code != 0 {
            out.extend_from_slice(&t.code.to_be_bytes());
        }
        if !t.memo.is_empty() {
            let len = u32::try_from(t.memo.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(t.memo.as_bytes());
        }
    }
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], BodyError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(BodyError::Binary("body ends inside a transfer"))?;
        self.0 = rest;
        Ok(*head)
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], BodyError> {
        if self.0.len() < n {
            return Err(BodyError::Binary("body ends inside a memo"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, BodyError> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, BodyError> {
        Ok(u16::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, BodyError> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn i64(&mut self) -> Result<i64, BodyError> {
        Ok(i64::from_be_bytes(self.take()?))
    }
    fn id(&mut self) -> Result<Id, BodyError> {
        Id::from_slice(&self.take::<16>()?).ok_or(BodyError::Binary("id"))
    }

    /// A present field must not be empty: the encoder leaves empty ones out.
    fn nonzero<T: PartialEq + Default>(v: T) -> Result<T, BodyError> {
        if v == T::default() {
            Err(BodyError::Binary("a field marked present is empty"))
        } else {
            Ok(v)
        }
    }

    fn transfer(&mut self) -> Result<Transfer, BodyError> {
        let id = self.id()?;
        let kind = *KINDS
            .get(usize::from(self.u8()?))
            .ok_or(BodyError::Binary("transfer kind"))?;
        let state = *STATES
            .get(usize::from(self.u8()?))
            .ok_or(BodyError::Binary("transfer state"))?;
        let debit_account = self.id()?;
        let credit_account = self.id()?;
        let amount_minor = self.i64()?;
        let code = self.take::<3>()?;
        let currency = std::str::from_utf8(&code)
            .ok()
            .and_then(|c| Currency::from_code(c).ok())
            .ok_or(BodyError::Binary("currency"))?;
        let created_at = Timestamp(self.i64()?);
        let present = self.u16()?;
        if present & !bit::ALL != 0 {
            return Err(BodyError::Binary("unknown field bit"));
        }
        let has = |b: u16| present & b != 0;
        let pending_id = has(bit::PENDING_ID).then(|| self.id()).transpose()?;
        let pending_amount_minor = has(bit::PENDING_AMOUNT).then(|| self.i64()).transpose()?;
        let expires_at = has(bit::EXPIRES_AT)
            .then(|| self.i64().map(Timestamp))
            .transpose()?;
        let link_id = has(bit::LINK_ID).then(|| self.id()).transpose()?;
        let rate = has(bit::RATE)
            .then(|| {
                Ok::<_, BodyError>(Rate {
                    numerator: self.i64()?,
                    denominator: self.i64()?,
                })
            })
            .transpose()?;
        let flags = if has(bit::FLAGS) {
            let bits = Self::nonzero(self.u16()?)?;
            let flags = TransferFlags::from_bits(i64::from(bits));
            if flags.bits() != i64::from(bits) {
                return Err(BodyError::Binary("unknown transfer flag"));
            }
            flags
        } else {
            TransferFlags::default()
        };
        let user_data_128 = if has(bit::USER_DATA_128) {
            Self::nonzero(u128::from_be_bytes(self.take()?))?
        } else {
            0
        };
        let user_data_64 = if has(bit::USER_DATA_64) {
            Self::nonzero(u64::from_be_bytes(self.take()?))?
        } else {
            0
        };
        let user_data_32 = if has(bit::USER_DATA_32) {
            Self::nonzero(self.u32()?)?
        } else {
            0
        };
        let code = if has(bit::CODE) {
            Self::nonzero(self.u16()?)?
        } else {
            0
        };
        let memo = if has(bit::MEMO) {
            let len = Self::nonzero(self.u32()?)? as usize;
            std::str::from_utf8(self.bytes(len)?)
                .map_err(|_| BodyError::Binary("memo is not UTF-8"))?
                .to_string()
        } else {
            String::new()
        };
        Ok(Transfer {
            id,
            kind,
            state,
            debit_account,
            credit_account,
            amount_minor,
            currency,
            pending_id,
            pending_amount_minor,
            expires_at,
            link_id,
            rate,
            memo,
            created_at,
            flags,
            user_data_128,
            user_data_64,
            user_data_32,
            code,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u128) -> Id {
        Id(uuid::Uuid::from_u128(n))
    }

    fn plain() -> Transfer {
        Transfer {
            id: id(3),
            kind: TransferKind::Single,
            state: TransferState::Posted,
            debit_account: id(1),
            credit_account: id(2),
            amount_minor: 1250,
            currency: Currency::from_code("EUR").expect("EUR"),
            pending_id: None,
            pending_amount_minor: None,
            expires_at: None,
            link_id: None,
            rate: None,
            memo: String::new(),
            created_at: Timestamp(1_767_225_600_000_000),
            flags: TransferFlags::default(),
            user_data_128: 0,
            user_data_64: 0,
            user_data_32: 0,
            code: 0,
        }
    }

    fn body(transfers: Vec<Transfer>) -> Vec<u8> {
        encode(&Event::Transfers { transfers })
    }

    #[test]
    fn a_plain_transfer_takes_the_fixed_bytes_and_reads_back() {
        let b = body(vec![plain()]);
        assert_eq!(b.len(), MAGIC.len() + 4 + FIXED);
        assert_eq!(
            decode(&b),
            Ok(Event::Transfers {
                transfers: vec![plain()]
            })
        );
    }

    #[test]
    fn other_events_and_older_transfer_bodies_are_json() {
        let limit = Event::LimitSet {
            account: id(1),
            previous_minor: 0,
            limit_minor: 5,
        };
        assert_eq!(encode(&limit), serde_json::to_vec(&limit).expect("json"));
        let old = Event::Transfers {
            transfers: vec![plain()],
        };
        assert_eq!(decode(&serde_json::to_vec(&old).expect("json")), Ok(old));
        assert!(matches!(decode(b"not json"), Err(BodyError::Json(_))));
    }

    #[test]
    fn every_break_of_the_layout_is_refused() {
        let good = body(vec![plain()]);
        let with = |at: usize, bytes: &[u8]| {
            let mut b = good.clone();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            b
        };
        let after_magic = MAGIC.len() + 4;
        let present_at = after_magic + FIXED - 2;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("count past the body", with(MAGIC.len(), &[0, 0, 0, 2])),
            ("huge count", with(MAGIC.len(), &[0xff; 4])),
            ("truncated", good[..good.len() - 1].to_vec()),
            ("trailing", [good.clone(), vec![0]].concat()),
            ("kind", with(after_magic + 16, &[9])),
            ("state", with(after_magic + 17, &[9])),
            ("currency", with(after_magic + 16 + 2 + 32 + 8, b"XXX")),
            ("unknown bit", with(present_at, &[0x80, 0])),
            // Marked present but ends the body (the field is missing).
            ("missing field", with(present_at, &[0, 1])),
        ];
        for (what, bad) in cases {
            assert!(
                matches!(decode(&bad), Err(BodyError::Binary(_))),
                "{what}: {:?}",
                decode(&bad)
            );
        }
        // A field marked present with an empty value has another encoding: refused.
        let mut empty_code = good.clone();
        empty_code[present_at..present_at + 2].copy_from_slice(&bit::CODE.to_be_bytes());
        empty_code.extend_from_slice(&[0, 0]);
        assert_eq!(
            decode(&empty_code),
            Err(BodyError::Binary("a field marked present is empty"))
        );
        let mut bad_flag = good.clone();
        bad_flag[present_at..present_at + 2].copy_from_slice(&bit::FLAGS.to_be_bytes());
        bad_flag.extend_from_slice(&[0x80, 0]);
        assert_eq!(
            decode(&bad_flag),
            Err(BodyError::Binary("unknown transfer flag"))
        );
    }

    fn any_transfer() -> impl Strategy<Value = Transfer> {
        (
            (
                any::<u128>(),
                0..5_usize,
                0..4_usize,
                any::<u128>(),
                any::<u128>(),
            ),
            (
                any::<i64>(),
                any::<i64>(),
                proptest::option::of(any::<u128>()),
            ),
            (
                proptest::option::of(any::<i64>()),
                proptest::option::of(any::<i64>()),
                proptest::option::of(any::<u128>()),
                proptest::option::of((any::<i64>(), any::<i64>())),
            ),
            (
                0..64_i64,
                any::<u128>(),
                any::<u64>(),
                any::<u32>(),
                any::<u16>(),
            ),
            ".{0,40}",
        )
            .prop_map(
                |(
                    (i, k, s, d, c),
                    (amount, at, pid),
                    (pam, exp, link, rate),
                    (f, u128_, u64_, u32_, code),
                    memo,
                )| {
                    Transfer {
                        id: id(i),
                        kind: KINDS[k],
                        state: STATES[s],
                        debit_account: id(d),
                        credit_account: id(c),
                        amount_minor: amount,
                        currency: Currency::from_code("JPY").expect("JPY"),
                        pending_id: pid.map(id),
                        pending_amount_minor: pam,
                        expires_at: exp.map(Timestamp),
                        link_id: link.map(id),
                        rate: rate.map(|(numerator, denominator)| Rate {
                            numerator,
                            denominator,
                        }),
                        memo,
                        created_at: Timestamp(at),
                        flags: TransferFlags::from_bits(f),
                        user_data_128: u128_,
                        user_data_64: u64_,
                        user_data_32: u32_,
                        code,
                    }
                },
            )
    }

    proptest! {
        /// Any transfers read back as written, and one event has one body.
        #[test]
        fn transfers_read_back_exactly(ts in proptest::collection::vec(any_transfer(), 0..6)) {
            let b = body(ts.clone());
            let event = decode(&b).expect("decodes");
            prop_assert_eq!(&event, &Event::Transfers { transfers: ts });
            prop_assert_eq!(encode(&event), b);
        }

        /// Any bytes after the magic are read without a panic or an allocation past the body:
        /// refused, or an event whose body is exactly those bytes.
        #[test]
        fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..400)) {
            let b = [&MAGIC[..], &tail].concat();
            if let Ok(event) = decode(&b) {
                prop_assert_eq!(encode(&event), b);
            }
        }

        /// Any byte changed or cut is refused or reads as a different event (never the same).
        #[test]
        fn a_changed_body_never_reads_as_the_same_event(
            ts in proptest::collection::vec(any_transfer(), 1..3),
            at in any::<prop::sample::Index>(),
            x in 1..=255_u8,
        ) {
            let b = body(ts.clone());
            let mut bad = b.clone();
            let i = at.index(b.len());
            bad[i] ^= x;
            if let Ok(e) = decode(&bad) {
                prop_assert_ne!(e, Event::Transfers { transfers: ts.clone() });
            }
            prop_assert!(decode(&b[..i]).is_err());
        }
    }
}
