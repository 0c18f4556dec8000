//! A pad holder in tests: the proto crate's holder (which checks every reply as the wallet
//! does and keeps the node's record chain), plus every range it saw used, to check that none
//! overlap.

use tally_proto::pad::file::PadFile;
use tally_proto::pad::holder::Holder as Cursors;
use tally_proto::pad::plain::{Reply, Request};
use tally_proto::pad::record::Chain;

pub struct Holder {
    pub file: PadFile,
    pub cursors: Cursors,
    /// Every pad range the holder saw used (up and down).
    pub ranges: Vec<std::ops::Range<u64>>,
}

impl Holder {
    pub fn from_file(file: PadFile) -> Holder {
        Holder {
            cursors: Cursors::new(file.pad, file.bytes.size()),
            file,
            ranges: Vec::new(),
        }
    }

    pub fn up_next(&self) -> u64 {
        self.cursors.up_next
    }

    pub fn down_low(&self) -> u64 {
        self.cursors.down_low
    }

    pub fn chain(&self) -> Chain {
        self.cursors.records
    }

    /// `request` sealed at the next free offset.
    pub fn seal(&self, request: &Request) -> Vec<u8> {
        self.cursors
            .seal(&self.file.bytes, request, true)
            .expect("seals")
    }

    /// Takes the node's `down` answer to `up` (it must be one the holder takes), and checks
    /// that neither range overlaps one used before.
    pub fn answered(&mut self, up: &[u8], down: &[u8]) -> Reply {
        let (reply, line) = self
            .cursors
            .answered(&self.file.bytes, up, down)
            .expect("the node's reply is one the holder takes");
        let ur = line.up_offset..self.cursors.up_next;
        let dr = line.down_offset..line.down_offset + u64::from(line.down_len) + 32;
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
        self.ranges.push(ur);
        self.ranges.push(dr);
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
