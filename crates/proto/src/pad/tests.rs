//! The pad's codecs and machine: golden vectors, every single-byte change of a frame, the
//! bad-input table of `docs/protocols/pads.md` row by row, and properties over random traffic.

use proptest::prelude::*;
use tally_kernel::crypto::pad::keystream;
use tally_kernel::{Amount, Currency, Id, Timestamp};
use zeroize::Zeroizing;

use super::file::{FileError, PadBytes, PadFile, TRAFFIC_START};
use super::frame::{self, Direction, FrameError, Header};
use super::ids::{AccountId, MailboxAddress, MessageId, PadId, RequestId, VoucherCode};
use super::machine::{
    Answer, BYTES_LOW, Facts, Input, Pad, PadError, PinCheck, Place, Refusal, State, Terms,
};
use super::plain::{
    Delivered, Pin, PlainError, ProviderName, Reply, ReplyBody, Request, Sender, class_of,
};
use super::record::{Chain, Line, Outcome};
use super::tariff::Tariff;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/protocols/vectors/pads.json"
);
const SIZE: u64 = 4096;
const NOW: Timestamp = Timestamp(1_796_601_600_000_000);

fn eur() -> Currency {
    Currency::from_code("EUR").expect("EUR")
}

fn pad_id() -> PadId {
    PadId(*b"vector pad id 01")
}

/// The vector's pad: 4 KiB of the ChaCha20 keystream of the seed `07` × 32, kept whole.
fn bytes() -> PadBytes {
    let mut b = Zeroizing::new(vec![0u8; SIZE as usize]);
    keystream(&Zeroizing::new([7u8; 32]), 0, &mut b).expect("in range");
    PadBytes::OneTime(b)
}

fn tariff() -> Tariff {
    Tariff {
        currency: eur(),
        byte_price_minor_per_kib: 2,
        post_price_minor: 5,
        commission_bps: 1000,
    }
}

fn facts(available: i64) -> Facts {
    Facts::new(
        tariff(),
        available,
        Id(uuid::Uuid::from_u128(1)),
        Id(uuid::Uuid::from_u128(2)),
    )
}

/// Seals `request` as the next up frame of `pad`.
fn up(pad: &Pad, material: &PadBytes, request: &Request) -> Vec<u8> {
    let plain = request.encode(true).expect("encodes");
    up_raw(pad, material, &plain)
}

fn up_raw(pad: &Pad, material: &PadBytes, plain: &[u8]) -> Vec<u8> {
    let range = pad.up_next..pad.up_next + plain.len() as u64 + 32;
    let m = material.read(range).expect("in the pad");
    frame::seal(Direction::Up, pad.id, pad.up_next, plain, &m).expect("seals")
}

/// The node's moves for one up frame: place, open, decode, handle. A refusal before the
/// step returns the error and the pad unchanged.
fn take(
    pad: Pad,
    material: &PadBytes,
    wire: &[u8],
    f: Facts,
) -> Result<(Pad, proto_effects::Effects), TakeError> {
    let fr = frame::parse(wire).map_err(TakeError::Frame)?;
    match pad.place(&fr.header).map_err(TakeError::Pad)? {
        Place::Behind => return Err(TakeError::Pad(pad.behind(&fr.digest(), None))),
        Place::Ahead => {
            let m = material
                .read(fr.header.range())
                .map_err(|_| TakeError::Frame(FrameError::NotAuthentic))?;
            fr.open(&m).map_err(TakeError::Frame)?;
            return Err(TakeError::Pad(PadError::OffsetAhead {
                up_next: pad.up_next,
            }));
        }
        Place::Fresh => {}
    }
    let m = material.read(fr.header.range()).expect("in the pad");
    let plain = fr.open(&m).map_err(TakeError::Frame)?;
    let input = Input::Frame {
        header: fr.header,
        digest: fr.digest(),
        request: Request::decode(&plain),
        facts: Box::new(f),
    };
    pad.handle(NOW, input).map_err(TakeError::Pad)
}

use crate::effects as proto_effects;

#[derive(Debug, PartialEq)]
enum TakeError {
    Frame(FrameError),
    Pad(PadError),
}

/// Seals the answer of the pad's last frame as the node does.
fn reply_frame(pad: &Pad, material: &PadBytes) -> (Vec<u8>, Reply) {
    let last = pad.last.as_ref().expect("a frame");
    let Answer::Reply {
        down_offset,
        len,
        body,
    } = &last.answer
    else {
        panic!("taken")
    };
    let reply = Reply {
        in_reply_to: last.line.up_offset,
        debit_minor: last.line.debit_minor,
        body: body.clone(),
    };
    let plain = reply.encode(*len).expect("fits");
    let m = material
        .read(*down_offset..*down_offset + *len as u64 + 32)
        .expect("in the pad");
    let wire = frame::seal(Direction::Down, pad.id, *down_offset, &plain, &m).expect("seals");
    (wire, reply)
}

fn forward(provider: &str, body: &[u8]) -> Request {
    Request::Forward {
        provider: ProviderName::new(provider).expect("name"),
        escrow: false,
        body: body.to_vec(),
    }
}

/// The vector's transfer receipt: pad `vector pad id 01` from account `01…` to `02…`.
fn transfer_receipt() -> tally_kernel::crypto::canonical::SignedRecord {
    use super::receipt::TransferReceipt;
    let r = TransferReceipt {
        pad: pad_id(),
        from: AccountId([1; 16]),
        to: AccountId([2; 16]),
        value: Amount::new(459, eur()),
        up_next: 640,
        down_low: 3520,
        at: Timestamp(1_796_601_600_000_000),
    };
    r.sign(&tally_kernel::crypto::SigningKey::from_seed(&[3; 32]))
        .expect("signs")
}

/// The receipt opens under the node key only, and only as a pad transfer.
#[test]
fn transfer_receipts_open_under_the_node_key_only() {
    use super::receipt::TransferReceipt;
    let signed = transfer_receipt();
    let node = tally_kernel::crypto::SigningKey::from_seed(&[3; 32]).verifying_key();
    let r = TransferReceipt::open(&signed, &node).expect("opens");
    assert_eq!(
        (r.from, r.to, r.value.minor),
        (AccountId([1; 16]), AccountId([2; 16]), 459)
    );
    let other = tally_kernel::crypto::SigningKey::from_seed(&[4; 32]).verifying_key();
    assert!(TransferReceipt::open(&signed, &other).is_err());
    let mut changed = signed.clone();
    changed.bytes = String::from_utf8(changed.bytes.clone())
        .expect("utf-8")
        .replace("459", "999")
        .into_bytes();
    assert!(TransferReceipt::open(&changed, &node).is_err());
    let mut domain = signed;
    domain.domain = "tally/fx-table/v1".into();
    assert!(TransferReceipt::open(&domain, &node).is_err());
}

#[test]
fn vectors() {
    let material = bytes();
    let file = PadFile {
        pad: pad_id(),
        face: Amount::new(500, eur()),
        node: [0xAB; 32],
        url: "https://pads.example".into(),
        bytes: PadBytes::SessionKey {
            seed: Zeroizing::new([7u8; 32]),
            size: SIZE,
        },
    };
    let session_file = file.encode().expect("encodes");
    let one_time_file = PadFile {
        bytes: material.clone(),
        ..file.clone()
    }
    .encode()
    .expect("encodes");
    assert_eq!(PadFile::decode(&session_file).expect("decodes"), file);
    // Both modes give the same bytes from the same seed.
    let from_seed = PadFile::decode(&session_file).expect("decodes").bytes;
    assert_eq!(from_seed.read(100..200), material.read(100..200));

    let pad = Pad::new(pad_id(), SIZE, eur(), false).expect("pad");
    let show = up(&pad, &material, &Request::Show);
    let (pad, effects) = take(pad, &material, &show, facts(500)).expect("taken");
    assert!(!effects.moves_money(), "show is free");
    let (show_reply, reply) = reply_frame(&pad, &material);
    let line_show = pad.last.as_ref().expect("line").line;

    let mut f = facts(500);
    f.provider = Some(Terms {
        price_minor: 40,
        escrow: false,
    });
    f.new_id = [0x11; 16];
    let fwd = up(&pad, &material, &forward("weather", b"tomorrow in Bern?"));
    let (pad, effects) = take(pad, &material, &fwd, f).expect("taken");
    let line_fwd = pad.last.as_ref().expect("line").line;
    // 288 up and 288 down bytes at 2 per KiB: 1 minor unit, and the price.
    assert_eq!(line_fwd.debit_minor, 41);
    assert!(effects.moves_money());
    let (fwd_reply, _) = reply_frame(&pad, &material);

    let chain0 = Chain::new(pad_id());
    let chain1 = chain0.push(&line_show);
    let chain2 = chain1.push(&line_fwd);
    assert_eq!(pad.records, chain2);
    let ReplyBody::Show(shown) = reply.body else {
        panic!("show")
    };
    assert_eq!(shown.records, 1);
    assert_eq!(shown.record_hash, chain1.hash);

    // The pad's key, and its claim that its messages go to the pad's own mailbox.
    let pad_key = super::keys::pad_key(&material).expect("key");
    let alias = super::keys::AliasClaim {
        mailbox: material.mailbox(),
        at: 1_796_601_600_000_000,
    };
    let computed = serde_json::json!({
        "pad_seed": hex::encode([7u8; 32]),
        "pad_size": SIZE,
        "pad_id": pad_id().to_string(),
        "file_session_key": hex::encode(&*session_file),
        "file_one_time_sha256": hex::encode(tally_kernel::crypto::kdf::sha256(&one_time_file)),
        "mailbox": material.mailbox().to_string(),
        "show_up_frame": hex::encode(&show),
        "show_down_frame": hex::encode(&show_reply),
        "forward_up_frame": hex::encode(&fwd),
        "forward_down_frame": hex::encode(&fwd_reply),
        "record_0": hex::encode(chain0.hash),
        "record_line_1": hex::encode(line_show.to_bytes()),
        "record_1": hex::encode(chain1.hash),
        "record_line_2": hex::encode(line_fwd.to_bytes()),
        "record_2": hex::encode(chain2.hash),
        "voucher_random": hex::encode([0x5A; 16]),
        "transfer_node_seed": hex::encode([3u8; 32]),
        "transfer_receipt": serde_json::to_value(transfer_receipt()).expect("json"),
        "voucher_code": VoucherCode::from_random([0x5A; 16]).text(),
        "pad_public_key": super::keys::key_text(&pad_key.verifying_key()),
        "pad_key_address": super::keys::key_address(&pad_key.verifying_key()).to_string(),
        "alias_claim_at": 1_796_601_600_000_000i64,
        "alias_claim_signature": alias.sign(&pad_key).to_hex(),
    });
    crate::pinned::check(VECTORS, &computed);
    assert_eq!(show.len(), 50 + 256);
    assert_eq!(line_show.down_offset, SIZE - 288);
    assert_eq!(line_fwd.up_offset, TRAFFIC_START + 288);
}

/// Every single-byte change of the vector frame is refused: by the parser, as out of
/// place, or by the tag; never taken.
#[test]
fn every_single_byte_change_of_a_frame_is_refused() {
    let material = bytes();
    let pad = Pad::new(pad_id(), SIZE, eur(), false).expect("pad");
    let wire = up(&pad, &material, &Request::Show);
    for i in 0..wire.len() {
        for flip in [0x01u8, 0x80, 0xFF] {
            let mut bad = wire.clone();
            bad[i] ^= flip;
            let got = take(pad.clone(), &material, &bad, facts(500));
            assert!(got.is_err(), "byte {i} ^ {flip:#x} was taken");
        }
    }
    // One byte fewer or more.
    assert!(frame::parse(&wire[..wire.len() - 1]).is_err());
    let mut longer = wire.clone();
    longer.push(0);
    assert!(frame::parse(&longer).is_err());
    take(pad, &material, &wire, facts(500)).expect("the frame itself is taken");
}

#[test]
fn headers_parse_strictly() {
    let material = bytes();
    let pad = Pad::new(pad_id(), SIZE, eur(), false).expect("pad");
    let wire = up(&pad, &material, &Request::Noop);
    let f = frame::parse(&wire).expect("parses");
    assert_eq!(
        f.header,
        Header {
            direction: Direction::Up,
            pad: pad_id(),
            offset: 64,
            len: 256
        }
    );
    assert_eq!(f.header.range(), 64..352);
    let malformed = |b: &[u8]| matches!(frame::parse(b), Err(FrameError::Malformed(_)));
    assert!(malformed(b""));
    assert!(malformed(&wire[..50]));
    // A length of zero, of more than 65536, a range past u64.
    for (at, value) in [(30usize, 0u32), (30, 65_537)] {
        let mut bad = wire.clone();
        bad[at..at + 4].copy_from_slice(&value.to_be_bytes());
        assert!(malformed(&bad));
    }
    let mut past = wire.clone();
    past[22..30].copy_from_slice(&(u64::MAX - 100).to_be_bytes());
    assert!(malformed(&past));
    // Pad bytes of the wrong length are the caller's bug, not the frame's.
    assert_eq!(
        f.open(&[0u8; 10]),
        Err(FrameError::ApiMisuse(
            "pad bytes of another length than the range"
        ))
    );
    assert!(frame::seal(Direction::Up, pad_id(), 64, &[], &[0u8; 32]).is_err());
}

#[test]
fn plaintexts_round_trip_and_refuse_other_spellings() {
    let requests = [
        Request::Show,
        forward("weather", b"body"),
        Request::Post {
            to: MailboxAddress([3; 16]),
            show_from: true,
            body: vec![9; 1000],
        },
        Request::Collect { max_len: 4096 },
        Request::Release {
            request: RequestId([4; 16]),
        },
        Request::Dispute {
            request: RequestId([5; 16]),
        },
        Request::Join {
            account: AccountId([6; 16]),
            pin: Pin::new("123456").expect("pin"),
        },
        Request::Records { from: 3, max: 10 },
        Request::Noop,
    ];
    for r in &requests {
        for padded in [true, false] {
            let bytes = r.encode(padded).expect("encodes");
            assert_eq!(&Request::decode(&bytes).expect("decodes"), r);
            if padded {
                assert_eq!(bytes.len(), class_of(bytes.len()));
                let mut dirty = bytes.to_vec();
                *dirty.last_mut().expect("byte") = 1;
                assert!(Request::decode(&dirty).is_err(), "{r:?}: non-zero padding");
            }
        }
    }
    assert!(
        format!("{:?}", requests[6]).contains("Pin(…)"),
        "the PIN is never shown"
    );
    for bad in [
        &[0u8][..],
        &[0x0A],
        &[0x04, 0, 0, 0, 1],
        &[0x02, 0],
        &[0x02, 1, b'A', 0, 0, 0, 0, 0],
    ] {
        assert!(Request::decode(bad).is_err(), "{bad:?}");
    }
    assert!(forward("w", &vec![0; 32 * 1024 + 1]).encode(true).is_err());
    assert!(Pin::new("12345").is_err() && Pin::new("12345a").is_err());

    let replies = [
        ReplyBody::Collect {
            messages: vec![
                Delivered {
                    id: MessageId([1; 16]),
                    from: Sender::Provider(ProviderName::new("weather").expect("name")),
                    in_reply_to: Some(RequestId([2; 16])),
                    body: b"sunny".to_vec(),
                },
                Delivered {
                    id: MessageId([3; 16]),
                    from: Sender::Mailbox(MailboxAddress([4; 16])),
                    in_reply_to: None,
                    body: vec![],
                },
                Delivered {
                    id: MessageId([5; 16]),
                    from: Sender::None,
                    in_reply_to: None,
                    body: vec![1, 2],
                },
            ],
            waiting: 7,
        },
        ReplyBody::Records {
            lines: vec![Line {
                up_offset: 64,
                up_len: 256,
                up_digest: [8; 32],
                outcome: Outcome::PinWrong,
                down_offset: 0,
                down_len: 0,
                debit_minor: -0,
            }],
        },
        ReplyBody::Forward {
            request: RequestId([9; 16]),
        },
        ReplyBody::Noop,
    ];
    for body in replies {
        let reply = Reply {
            in_reply_to: 352,
            debit_minor: 41,
            body,
        };
        let bytes = reply.encode(1024).expect("fits");
        assert_eq!(bytes.len(), 1024);
        assert_eq!(Reply::decode(&bytes).expect("decodes"), reply);
        assert!(
            reply.encode(8).is_none(),
            "a reply that does not fit is refused"
        );
    }
}

#[test]
fn files_round_trip_and_damage_is_found() {
    let file = PadFile {
        pad: pad_id(),
        face: Amount::new(500, eur()),
        node: [1; 32],
        url: "http://127.0.0.1:8080".into(),
        bytes: bytes(),
    };
    let encoded = file.encode().expect("encodes");
    assert_eq!(PadFile::decode(&encoded).expect("decodes"), file);
    for i in [0usize, 9, 40, 200, encoded.len() - 1] {
        let mut bad = encoded.to_vec();
        bad[i] ^= 1;
        assert!(PadFile::decode(&bad).is_err(), "byte {i}");
    }
    let mut body = encoded.to_vec();
    body[100] ^= 1;
    assert_eq!(PadFile::decode(&body), Err(FileError::Damaged));
    assert_eq!(file.bytes.read(4000..4097), Err(FileError::OutOfRange));
    assert!(format!("{:?}", file).contains("PadBytes(OneTime, 4096 bytes)"));
}

/// A row of the bad-input table: the pad and facts before, the request, the refusal.
struct Burn {
    name: &'static str,
    request: Result<Request, Vec<u8>>,
    facts: Facts,
    allow: Vec<&'static str>,
    refusal: Refusal,
}

/// The rows of the table whose frames are authentic and in place: burned, no money moved,
/// `up_next` past the frame, a record line with the outcome, nothing else changed.
#[test]
fn authentic_refusals_burn_their_bytes_and_move_no_money() {
    let material = bytes();
    let mut provider = facts(500);
    provider.provider = Some(Terms {
        price_minor: 40,
        escrow: false,
    });
    let mut pin = facts(500);
    pin.pin = Some(PinCheck::Wrong { attempts_left: 3 });
    let mut short = facts(40);
    short.provider = provider.provider;
    let rows = vec![
        Burn {
            name: "undecodable plaintext",
            request: Err(vec![0x0A; 256]),
            facts: facts(500),
            allow: vec![],
            refusal: Refusal::MalformedRequest,
        },
        Burn {
            name: "reply does not fit",
            request: Ok(Request::Collect { max_len: 65_536 }),
            facts: facts(500),
            allow: vec![],
            refusal: Refusal::PadBytesExhausted {
                up_next: 352,
                down_low: SIZE,
            },
        },
        Burn {
            name: "value short of the debit",
            request: Ok(forward("weather", b"q")),
            facts: short,
            allow: vec![],
            refusal: Refusal::PadValueExhausted {
                available_minor: 40,
                needed_minor: 41,
            },
        },
        Burn {
            name: "provider not on the allow-list",
            request: Ok(forward("weather", b"q")),
            facts: provider.clone(),
            allow: vec!["news"],
            refusal: Refusal::ProviderNotAllowed,
        },
        Burn {
            name: "provider not registered",
            request: Ok(forward("weather", b"q")),
            facts: facts(500),
            allow: vec![],
            refusal: Refusal::ProviderNotAllowed,
        },
        Burn {
            name: "post to an unknown mailbox",
            request: Ok(Request::Post {
                to: MailboxAddress([1; 16]),
                show_from: false,
                body: b"hi".to_vec(),
            }),
            facts: facts(500),
            allow: vec![],
            refusal: Refusal::UnknownMailbox,
        },
        Burn {
            name: "join with a wrong PIN",
            request: Ok(Request::Join {
                account: AccountId([2; 16]),
                pin: Pin::new("000000").expect("pin"),
            }),
            facts: pin,
            allow: vec![],
            refusal: Refusal::PinWrong { attempts_left: 3 },
        },
        Burn {
            name: "release of an unknown escrow",
            request: Ok(Request::Release {
                request: RequestId([3; 16]),
            }),
            facts: facts(500),
            allow: vec![],
            refusal: Refusal::UnknownRequest,
        },
    ];
    for row in rows {
        let mut pad = Pad::new(pad_id(), SIZE, eur(), false).expect("pad");
        pad.allow = row
            .allow
            .iter()
            .map(|p| ProviderName::new(p).expect("name"))
            .collect();
        let wire = match &row.request {
            Ok(r) => up(&pad, &material, r),
            Err(raw) => up_raw(&pad, &material, raw),
        };
        let before = pad.clone();
        let (after, effects) = take(pad, &material, &wire, row.facts).expect(row.name);
        assert!(!effects.moves_money(), "{}: no money", row.name);
        let last = after.last.clone().expect("kept");
        assert_eq!(
            last.answer,
            Answer::Refused(row.refusal.clone()),
            "{}",
            row.name
        );
        assert_eq!(last.line.outcome, row.refusal.outcome());
        assert_eq!((last.line.down_len, last.line.debit_minor), (0, 0));
        assert_eq!(
            after.up_next,
            before.up_next + wire.len() as u64 - 50 + 32,
            "{}",
            row.name
        );
        assert_eq!(after.down_low, before.down_low, "{}", row.name);
        assert_eq!(after.charged, before.charged, "{}", row.name);
        assert_eq!(after.records.count, 1);
        assert_eq!(after.account, None);
        // The same frame again is a replay, changing nothing.
        let again = take(after.clone(), &material, &wire, facts(500));
        assert!(matches!(
            again,
            Err(TakeError::Pad(PadError::OffsetUsed { .. }))
        ));
        let fr = frame::parse(&wire).expect("frame");
        assert_eq!(
            after.behind(&fr.digest(), Some(&last.line.up_digest)),
            PadError::Replayed
        );
    }
}

/// The rows refused before the step: nothing changes, no line is written.
#[test]
fn frames_out_of_place_or_not_authentic_change_nothing() {
    let material = bytes();
    let pad = Pad::new(pad_id(), SIZE, eur(), false).expect("pad");
    let first = up(&pad, &material, &Request::Show);
    let (taken, _) = take(pad.clone(), &material, &first, facts(500)).expect("taken");

    // Another frame at a used offset.
    let other = up(&pad, &material, &Request::Noop);
    assert_eq!(
        take(taken.clone(), &material, &other, facts(500)).unwrap_err(),
        TakeError::Pad(PadError::OffsetUsed { up_next: 352 })
    );
    // Ahead, authentic.
    let mut ahead_pad = taken.clone();
    ahead_pad.up_next += 288;
    let ahead = up(&ahead_pad, &material, &Request::Show);
    assert_eq!(
        take(taken.clone(), &material, &ahead, facts(500)).unwrap_err(),
        TakeError::Pad(PadError::OffsetAhead { up_next: 352 })
    );
    // A forged tag (the bytes of another pad).
    let mut other_bytes = Zeroizing::new(vec![0u8; SIZE as usize]);
    keystream(&Zeroizing::new([8u8; 32]), 0, &mut other_bytes).expect("in range");
    let forged = up(&taken, &PadBytes::OneTime(other_bytes), &Request::Show);
    assert_eq!(
        take(taken.clone(), &material, &forged, facts(500)).unwrap_err(),
        TakeError::Frame(FrameError::NotAuthentic)
    );
    // Blank and cancelled pads.
    for state in [State::Blank, State::Cancelled] {
        let p = Pad {
            state,
            ..taken.clone()
        };
        let next = up(&p, &material, &Request::Show);
        assert_eq!(
            take(p, &material, &next, facts(500)).unwrap_err(),
            TakeError::Pad(PadError::NotActive)
        );
    }
    // A frame that reaches into the node's bytes.
    let mut full = taken.clone();
    full.down_low = full.up_next + 100;
    let wide = up(&full, &material, &Request::Show);
    assert!(matches!(
        take(full, &material, &wide, facts(500)).unwrap_err(),
        TakeError::Pad(PadError::BytesExhausted { .. })
    ));
    // The machine refuses a frame that is not in its place even if a caller skips `place`.
    let fr = frame::parse(&first).expect("frame");
    let input = Input::Frame {
        header: fr.header,
        digest: fr.digest(),
        request: Ok(Request::Show),
        facts: Box::new(facts(500)),
    };
    assert!(matches!(
        taken.clone().handle(NOW, input),
        Err(PadError::ApiMisuse(_))
    ));
}

#[test]
fn retail_activation_cancel_and_transfer() {
    let blank = Pad::new(pad_id(), SIZE, eur(), true).expect("pad");
    let retailer = Id(uuid::Uuid::from_u128(7));
    let value = Id(uuid::Uuid::from_u128(1));
    let activate = Input::Activate {
        from: retailer,
        into: value,
        value: Amount::new(2000, eur()),
    };
    let (active, effects) = blank
        .clone()
        .handle(NOW, activate.clone())
        .expect("activates");
    assert_eq!(active.state, State::Active);
    assert!(effects.moves_money());
    assert!(matches!(
        active.clone().handle(NOW, activate),
        Err(PadError::WrongState(_))
    ));
    // Stolen blank stock is cancelled without money.
    let (gone, effects) = blank
        .handle(
            NOW,
            Input::Cancel {
                from: value,
                to: None,
                available: Amount::new(0, eur()),
            },
        )
        .expect("cancels");
    assert_eq!(gone.state, State::Cancelled);
    assert!(!effects.moves_money());
    // A pad outside an account is not transferred; one inside is, once.
    let to = AccountId([9; 16]);
    assert!(matches!(
        active.clone().handle(NOW, Input::Transfer { to }),
        Err(PadError::WrongState(_))
    ));
    let owned = Pad {
        account: Some(AccountId([8; 16])),
        ..active
    };
    let (moved, effects) = owned.handle(NOW, Input::Transfer { to }).expect("moves");
    assert_eq!(moved.account, Some(to));
    assert!(!effects.is_none());
    let (same, effects) = moved
        .clone()
        .handle(NOW, Input::Transfer { to })
        .expect("again");
    assert!(effects.is_none());
    assert_eq!(same, moved);
    // Cancelling a pad of an account moves its rest there.
    let (cancelled, effects) = moved
        .handle(
            NOW,
            Input::Cancel {
                from: value,
                to: Some(Id(uuid::Uuid::from_u128(9))),
                available: Amount::new(1500, eur()),
            },
        )
        .expect("cancels");
    assert_eq!(cancelled.state, State::Cancelled);
    assert!(effects.moves_money());
}

#[test]
fn exhausted_pads_still_show_and_come_back_when_credited() {
    let material = bytes();
    let pad = Pad::new(pad_id(), SIZE, eur(), false).expect("pad");
    let mut f = facts(41);
    f.provider = Some(Terms {
        price_minor: 40,
        escrow: true,
    });
    let wire = up(&pad, &material, &forward("weather", b"q"));
    let (pad, effects) = take(pad, &material, &wire, f).expect("taken");
    assert_eq!(pad.state, State::Exhausted, "value 0 left");
    let Some(tally_ledger::Command::Transfer { timeout_s, .. }) = effects.ledger else {
        panic!("a hold")
    };
    assert!(timeout_s.is_some(), "an escrow provider's request is held");
    let charge = pad.last.clone().expect("last").charge.expect("charged");
    assert!(charge.held, "its charge line waits for the escrow");
    assert_eq!(charge.provider_minor, 36, "40 less the 10 % commission");
    // Free frames are still taken; charged ones are refused for value.
    let show = up(&pad, &material, &Request::Show);
    let (pad, effects) = take(pad, &material, &show, facts(0)).expect("free");
    assert!(!effects.moves_money());
    let post = up(&pad, &material, &Request::Noop);
    let (pad, _) = take(pad, &material, &post, facts(0)).expect("free");
    let (pad, _) = pad
        .handle(
            NOW,
            Input::Credited {
                available_minor: 10,
            },
        )
        .expect("credited");
    assert_eq!(pad.state, State::Active);
    assert!(pad.free() >= BYTES_LOW);
}

#[derive(Debug, Clone)]
enum Step {
    Show,
    Noop,
    Forward { body: usize, price: i64 },
    Post { body: usize, known: bool },
    Collect { max_len: u32 },
    Garbage,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        Just(Step::Show),
        Just(Step::Noop),
        (0usize..3000, 0i64..50).prop_map(|(body, price)| Step::Forward { body, price }),
        (0usize..3000, any::<bool>()).prop_map(|(body, known)| Step::Post { body, known }),
        (256u32..5000).prop_map(|max_len| Step::Collect { max_len }),
        Just(Step::Garbage),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Over random traffic: up ranges taken gapless from 64, down ranges from the end, the
    /// two never overlap, the value never goes below zero, and byte debits total
    /// `⌊charged · p / 1024⌋`.
    #[test]
    fn no_byte_twice_no_value_below_zero(steps in prop::collection::vec(step(), 1..60), value in 0i64..400) {
        let size = 32 * 1024;
        let mut m = Zeroizing::new(vec![0u8; size as usize]);
        keystream(&Zeroizing::new([3u8; 32]), 0, &mut m).expect("in range");
        let material = PadBytes::OneTime(m);
        let mut pad = Pad::new(pad_id(), size, eur(), false).expect("pad");
        let mut available = value;
        let mut used: Vec<std::ops::Range<u64>> = Vec::new();
        let mut prices = 0;
        for s in steps {
            let mut f = facts(available);
            let request = match &s {
                Step::Show => Request::Show,
                Step::Noop => Request::Noop,
                Step::Forward { body, price } => {
                    f.provider = Some(Terms { price_minor: *price, escrow: false });
                    forward("p", &vec![1; *body])
                }
                Step::Post { body, known } => {
                    f.mailbox_known = *known;
                    Request::Post { to: MailboxAddress([1; 16]), show_from: false, body: vec![2; *body] }
                }
                Step::Collect { max_len } => Request::Collect { max_len: *max_len },
                Step::Garbage => Request::Noop,
            };
            let wire = if matches!(s, Step::Garbage) {
                if pad.up_next + 256 + 32 > pad.down_low { break; }
                up_raw(&pad, &material, &[0xEE; 256])
            } else {
                let plain = request.encode(true).expect("encodes");
                if pad.up_next + plain.len() as u64 + 32 > pad.down_low { break; }
                up(&pad, &material, &request)
            };
            let before = pad.clone();
            let (after, effects) = take(pad, &material, &wire, f).expect("in place, authentic");
            let line = after.last.as_ref().expect("line").line;
            prop_assert_eq!(line.up_offset, before.up_next, "gapless");
            let up_range = line.up_offset..after.up_next;
            prop_assert!(up_range.end <= after.down_low);
            prop_assert!(TRAFFIC_START <= after.up_next && after.up_next <= after.down_low && after.down_low <= size);
            let mut new = vec![up_range];
            if line.outcome == Outcome::Taken {
                prop_assert_eq!(line.down_offset + u64::from(line.down_len) + 32, before.down_low, "from the end");
                new.push(line.down_offset..before.down_low);
                if let Step::Forward { price, .. } = s { prices += price; }
                if let Step::Post { .. } = s { prices += tariff().post_price_minor; }
            } else {
                prop_assert_eq!(after.down_low, before.down_low);
            }
            for r in &new {
                for u in &used {
                    prop_assert!(r.end <= u.start || u.end <= r.start, "{:?} overlaps {:?}", r, u);
                }
            }
            used.extend(new);
            prop_assert_eq!(effects.moves_money(), line.debit_minor > 0);
            // The charge line splits the debit, whole, between the operator and a provider.
            let charge = after.last.as_ref().expect("last").charge.clone();
            prop_assert_eq!(charge.is_some(), line.debit_minor > 0);
            if let Some(c) = charge {
                prop_assert_eq!(c.operator_minor + c.provider_minor, line.debit_minor);
                let share = match &s {
                    Step::Forward { price, .. } => price - tariff().commission(*price),
                    _ => 0,
                };
                prop_assert_eq!(c.provider_minor, share);
                prop_assert_eq!(c.provider.is_some(), matches!(s, Step::Forward { .. }));
                prop_assert!(!c.held);
            }
            available -= line.debit_minor;
            prop_assert!(available >= 0, "value below zero");
            pad = after;
        }
        let byte_debits = value - available - prices;
        prop_assert_eq!(byte_debits, (pad.charged as i64) * 2 / 1024);
    }

    /// Seal and open are inverse on any plaintext and range; any other pad bytes refuse.
    #[test]
    fn seal_open_round_trip(plain in prop::collection::vec(any::<u8>(), 1..2000), offset in 64u64..1_000_000, seed in any::<[u8; 32]>()) {
        let mut m = Zeroizing::new(vec![0u8; plain.len() + 32]);
        keystream(&Zeroizing::new(seed), offset, &mut m).expect("in range");
        let wire = frame::seal(Direction::Down, pad_id(), offset, &plain, &m).expect("seals");
        let f = frame::parse(&wire).expect("parses");
        prop_assert_eq!(f.header.range(), offset..offset + plain.len() as u64 + 32);
        prop_assert_eq!(&f.open(&m).expect("opens")[..], &plain[..]);
        let mut other = m.clone();
        other[plain.len()] ^= 1;
        prop_assert_eq!(f.open(&other), Err(FrameError::NotAuthentic));
    }

    /// Decoders never panic, and what they take re-encodes to the same bytes.
    #[test]
    fn decoders_take_only_their_own_encoding(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(r) = Request::decode(&bytes) {
            let again = r.encode(false).expect("encodes");
            prop_assert_eq!(&bytes[..again.len()], &again[..]);
        }
        if let Ok(r) = Reply::decode(&bytes) {
            let again = r.encode(bytes.len());
            prop_assert_eq!(again.as_deref().map(|v| &v[..]), Some(&bytes[..]));
        }
        let _ = frame::parse(&bytes);
        let _ = PadFile::decode(&bytes);
        let _: Result<Request, PlainError> = Request::decode(&bytes);
    }
}

/// The holder keeps the node's record chain through taken and burned frames, and refuses a
/// reply that uses bytes the node may not, a forged one, and an answer to another frame.
#[test]
fn the_holder_keeps_the_nodes_records_and_refuses_replies_out_of_place() {
    use super::holder::{Holder, HolderError};
    let material = bytes();
    let mut holder = Holder::new(pad_id(), SIZE);
    let pad = Pad::new(pad_id(), SIZE, eur(), false).expect("pad");

    let up = holder.seal(&material, &Request::Show, true).expect("seals");
    let (pad, _) = take(pad, &material, &up, facts(500)).expect("taken");
    let (down, _) = reply_frame(&pad, &material);
    // A reply inside the request's own bytes, and a forged one: refused, nothing changes.
    let plain = Reply {
        in_reply_to: 64,
        debit_minor: 0,
        body: ReplyBody::Noop,
    }
    .encode(256)
    .expect("fits");
    let inside = frame::seal(
        Direction::Down,
        pad_id(),
        100,
        &plain,
        &material.read(100..388).expect("in the pad"),
    )
    .expect("seals");
    let before = holder;
    assert_eq!(
        holder.answered(&material, &up, &inside),
        Err(HolderError::Reply("it uses pad bytes the node may not"))
    );
    let mut forged = down.clone();
    forged[40] ^= 1;
    assert_eq!(
        holder.answered(&material, &up, &forged),
        Err(HolderError::Reply("not authentic"))
    );
    assert_eq!(holder, before);
    holder.answered(&material, &up, &down).expect("taken");
    assert_eq!(holder.records, pad.records);
    assert_eq!(
        (holder.up_next, holder.down_low),
        (pad.up_next, pad.down_low)
    );
    // The same answer again is not for the frame in flight now.
    assert!(holder.answered(&material, &up, &down).is_err());

    // A burned frame: both sides record it the same.
    let garbage = holder
        .seal_plain(&material, &[0x0A; 256], 256)
        .expect("seals");
    let (pad, _) = take(pad, &material, &garbage, facts(500)).expect("burned");
    let Some(Answer::Refused(refusal)) = pad.last.as_ref().map(|l| l.answer.clone()) else {
        panic!("burned")
    };
    holder.burned(&garbage, &refusal).expect("recorded");
    assert_eq!(holder.records, pad.records);
    assert_eq!(holder.up_next, pad.up_next);

    // A request whose reply does not fit is not sent at all.
    let tight = Holder {
        down_low: holder.up_next + 500,
        ..holder
    };
    assert!(matches!(
        tight.seal(&material, &Request::Show, true),
        Err(HolderError::BytesUsedUp {
            left: 500,
            needed: 576
        })
    ));
}

#[test]
fn allow_lists_are_sorted_bounded_and_kept_from_cancelled_pads() {
    let pad = Pad::new(pad_id(), SIZE, eur(), false).expect("pad");
    let name = |n: &str| ProviderName::new(n).expect("name");
    let (pad, effects) = pad
        .handle(
            NOW,
            Input::Restrict {
                allow: vec![name("b"), name("a"), name("b")],
            },
        )
        .expect("set");
    assert_eq!(pad.allow, vec![name("a"), name("b")]);
    assert!(!effects.is_none(), "journaled");
    let (pad, effects) = pad
        .handle(
            NOW,
            Input::Restrict {
                allow: vec![name("a"), name("b")],
            },
        )
        .expect("the same");
    assert!(effects.is_none(), "the same list again changes nothing");
    let many = (0..33).map(|i| name(&format!("p{i}"))).collect();
    assert!(matches!(
        pad.clone().handle(NOW, Input::Restrict { allow: many }),
        Err(PadError::WrongState(_))
    ));
    let (cancelled, _) = pad
        .handle(
            NOW,
            Input::Cancel {
                from: Id(uuid::Uuid::from_u128(1)),
                to: None,
                available: tally_kernel::Amount::new(0, eur()),
            },
        )
        .expect("cancelled");
    assert_eq!(
        cancelled.handle(NOW, Input::Restrict { allow: vec![] }),
        Err(PadError::NotActive)
    );
}
