//! A pad holder in tests: seals frames with the pad file's bytes, checks the node's replies
//! as a wallet does, and keeps the same record chain as the node.

use base64::Engine as _;
use tally_proto::pad::file::{PadFile, TRAFFIC_START};
use tally_proto::pad::frame::{self, Direction};
use tally_proto::pad::plain::{Reply, Request};
use tally_proto::pad::record::{Chain, Line, Outcome};

pub struct Holder {
    pub file: PadFile,
    pub up_next: u64,
    pub down_low: u64,
    pub chain: Chain,
    /// Every pad range the holder saw used (up and down), to check none overlap.
    pub ranges: Vec<std::ops::Range<u64>>,
}

impl Holder {
    /// The holder of a pad sold by `POST /v1/pads` (its JSON answer).
    pub fn from_sale(sold: &serde_json::Value) -> Holder {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sold["file"].as_str().expect("file"))
            .expect("base64");
        Holder::from_file(PadFile::decode(&bytes).expect("a pad file"))
    }

    pub fn from_file(file: PadFile) -> Holder {
        Holder {
            up_next: TRAFFIC_START,
            down_low: file.bytes.size(),
            chain: Chain::new(file.pad),
            file,
            ranges: Vec::new(),
        }
    }

    /// `request` sealed at the next free offset (the holder does not move on until answered).
    pub fn seal(&self, request: &Request) -> Vec<u8> {
        self.seal_at(self.up_next, request)
    }

    pub fn seal_at(&self, offset: u64, request: &Request) -> Vec<u8> {
        let plain = request.encode(true).expect("encodes");
        let m = self
            .file
            .bytes
            .read(offset..offset + plain.len() as u64 + 32)
            .expect("in the pad");
        frame::seal(Direction::Up, self.file.pad, offset, &plain, &m).expect("seals")
    }

    /// Takes the node's `down` answer to `up`: checks it uses only bytes below the holder's
    /// `down_low` and above its own frame, opens it, and appends the record line.
    pub fn answered(&mut self, up: &[u8], down: &[u8]) -> Reply {
        let u = frame::parse(up).expect("up frame");
        let d = frame::parse(down).expect("down frame");
        assert_eq!(d.header.direction, Direction::Down);
        assert_eq!(
            u.header.offset, self.up_next,
            "answers the holder's next frame"
        );
        let (ur, dr) = (u.header.range(), d.header.range());
        assert!(
            dr.end <= self.down_low && dr.start >= ur.end,
            "{dr:?} within the free bytes"
        );
        for r in &self.ranges {
            assert!(
                ur.end <= r.start || r.end <= ur.start,
                "{ur:?} overlaps {r:?}"
            );
            assert!(
                dr.end <= r.start || r.end <= dr.start,
                "{dr:?} overlaps {r:?}"
            );
        }
        let m = self.file.bytes.read(dr.clone()).expect("in the pad");
        let plain = d.open(&m).expect("the reply is authentic");
        let reply = Reply::decode(&plain).expect("the reply decodes");
        assert_eq!(reply.in_reply_to, u.header.offset);
        self.chain = self.chain.push(&Line {
            up_offset: u.header.offset,
            up_len: u.header.len,
            up_digest: u.digest(),
            outcome: Outcome::Taken,
            down_offset: d.header.offset,
            down_len: d.header.len,
            debit_minor: reply.debit_minor,
        });
        self.ranges.push(ur.clone());
        self.ranges.push(dr.clone());
        self.up_next = ur.end;
        self.down_low = dr.start;
        reply
    }
}

/// `POST {url}/v1/pad-frames`: (status, replayed, body).
pub async fn post_frame(
    http: &reqwest::Client,
    url: &str,
    frame: Vec<u8>,
) -> reqwest::Result<(u16, bool, Vec<u8>)> {
    let resp = http
        .post(format!("{url}/v1/pad-frames"))
        .header("content-type", "application/octet-stream")
        .body(frame)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let replayed = resp.headers().contains_key("idempotency-replayed");
    Ok((status, replayed, resp.bytes().await?.to_vec()))
}
