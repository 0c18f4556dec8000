//! Resumable uploads: a product file sent in parts (each with its offset), kept between parts
//! sealed at rest, and sealed into the product as usual once its last byte arrived. A broken
//! upload goes on from what the node has (`upload_status`), never from the start.
//!
//! Decisions:
//! * Plaintext is never at rest, as with the one-shot upload: each part is sealed on arrival
//!   (XChaCha20-Poly1305, frames of at most 64 KiB) under a staging key derived from the
//!   product's content key, with the upload's id and the frame's number as associated data, so
//!   frames cannot be reordered, swapped between uploads or changed. The staging file sits in
//!   the product's directory (`DATA/products/{id}/`, the storage every node must share).
//! * An upload is named by who sends it, the product, the file's name, kind and total size: the
//!   same file sent again after a break continues; another file starts its own.
//! * A part must start where the staged bytes end; anything else is refused with the offset to
//!   send from, and changes nothing. Parts of one upload are appended one at a time in a node
//!   (a lock); a client sends them one after another.
//! * The last part runs the sealing upload from the staged frames (opened as they are read)
//!   and removes the staging file.

use super::Delivery;
use crate::access::{corrupt, invalid};
use crate::identity::setup;
use crate::{Principal, Result};
use std::io::{Read, Seek, Write};
use std::path::PathBuf;
use tally_kernel::crypto::kdf::{hkdf_sha256, sha256};
use tally_kernel::crypto::seal;
use tally_kernel::{Id, Secret};
use tally_wire::delivery::EntryView;

/// Most bytes of one part.
pub const PART_MAX: usize = 4 << 20;

/// Domain of the staging key and the frames' associated data.
const STAGING_DOMAIN: &[u8] = b"tally/upload-staging/v1\0";

/// Appends to staging files one at a time in this process.
static APPENDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where an upload stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadProgress {
    /// Bytes the node has.
    pub received: u64,
    /// The file's size.
    pub total: u64,
    /// The sealed entry, once the last byte arrived.
    pub entry: Option<EntryView>,
}

/// One upload: its staging file, id and key.
struct Staging {
    path: PathBuf,
    id: [u8; 32],
    key: Secret<[u8; 32]>,
}

impl Staging {
    fn aad(&self, frame: u64) -> Vec<u8> {
        [STAGING_DOMAIN, &self.id, &frame.to_be_bytes()].concat()
    }

    /// Appends `part` as sealed frames numbered from `frames`, durably; the file's new length.
    fn append(&self, frames: u64, part: &[u8]) -> Result<u64> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(setup)?;
        let mut out = Vec::with_capacity(part.len() + 64 * ((part.len() >> 16) + 1));
        for (n, chunk) in part.chunks(seal::MESSAGE_LEN_MAX).enumerate() {
            let sealed = seal::seal(self.key.expose(), &self.aad(frames + n as u64), chunk)
                .map_err(corrupt)?;
            let len = u32::try_from(sealed.len()).map_err(corrupt)?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&sealed);
        }
        file.write_all(&out).map_err(setup)?;
        file.sync_all().map_err(setup)?;
        Ok(file.metadata().map_err(setup)?.len())
    }

    /// The sidecar that remembers how far the staging file is known good, so a part costs a
    /// constant amount of reading, not a walk over everything staged before it.
    fn mark_path(&self) -> PathBuf {
        self.path.with_extension("mark")
    }

    /// `(file bytes, plaintext bytes, frames)` known good, from the sidecar (zeros without one).
    fn mark(&self) -> (u64, u64, u64) {
        let Ok(text) = std::fs::read_to_string(self.mark_path()) else {
            return (0, 0, 0);
        };
        let mut n = text
            .split_whitespace()
            .filter_map(|w| w.parse::<u64>().ok());
        match (n.next(), n.next(), n.next()) {
            (Some(at), Some(plain), Some(frames)) => (at, plain, frames),
            _ => (0, 0, 0),
        }
    }

    fn set_mark(&self, at: u64, plain: u64, frames: u64) -> Result<()> {
        std::fs::write(self.mark_path(), format!("{at} {plain} {frames}\n")).map_err(setup)
    }

    /// Bytes staged and frames written so far. The walk starts where the sidecar says the file
    /// is known good (a crash between a part's append and its mark leaves frames after it to
    /// count again); a frame cut short by a crash is dropped.
    fn received(&self) -> Result<(u64, u64)> {
        let file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
            Err(e) => return Err(setup(e)),
        };
        let len = file.metadata().map_err(setup)?.len();
        let (mut at, mut plain, mut frames) = match self.mark() {
            mark @ (at, _, _) if at <= len => mark,
            _ => (0, 0, 0),
        };
        let mut reader = std::io::BufReader::new(file);
        reader.seek(std::io::SeekFrom::Start(at)).map_err(setup)?;
        let mut header = [0_u8; 4];
        while at + 4 <= len {
            reader.read_exact(&mut header).map_err(setup)?;
            let sealed = u64::from(u32::from_be_bytes(header));
            if at + 4 + sealed > len {
                break;
            }
            reader
                .seek_relative(i64::try_from(sealed).map_err(corrupt)?)
                .map_err(setup)?;
            at += 4 + sealed;
            plain += sealed.saturating_sub((seal::NONCE_LEN + seal::TAG_LEN) as u64);
            frames += 1;
        }
        if at < len {
            // A torn last frame: cut it off, so the next part appends after whole frames.
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&self.path)
                .map_err(setup)?;
            f.set_len(at).map_err(setup)?;
        }
        self.set_mark(at, plain, frames)?;
        Ok((plain, frames))
    }
}

impl Delivery {
    /// The staging of `by`'s upload of `name` into draft product `id`, after the checks every
    /// part passes (the merchant's draft, a valid name and kind, a size within the limit).
    async fn staging(
        &self,
        by: &Principal,
        id: Id,
        name: &str,
        kind: &str,
        total: u64,
    ) -> Result<Staging> {
        super::check_entry_name(name)?;
        if !matches!(kind, "product" | "document") {
            return Err(invalid("kind", "product or document"));
        }
        let limit = self.settings().upload_max_bytes;
        if total == 0 || total > limit {
            return Err(invalid(
                "total",
                format!("1 to {limit} bytes (the node's upload limit)"),
            ));
        }
        let product = self.product_row(id).await?;
        Self::require_merchant_of(by, &product)?;
        super::product_machine(&product).check_upload()?;
        let upload = sha256(format!("{}\0{id}\0{name}\0{kind}\0{total}", by.owner).as_bytes());
        let content = self.content_key(&product)?;
        let key = hkdf_sha256(content.expose(), &upload, STAGING_DOMAIN, 32).map_err(corrupt)?;
        let key: [u8; 32] = key.expose().as_slice().try_into().map_err(corrupt)?;
        let dir = self.product_dir(id);
        crate::identity::create_private_dir(&self.core.files().dir.join("products"))?;
        crate::identity::create_private_dir(&dir)?;
        Ok(Staging {
            path: dir.join(format!("staging-{}.parts", hex::encode(&upload[..16]))),
            id: upload,
            key: Secret::new(key),
        })
    }

    /// How many bytes of this upload the node has (0 for a new one).
    pub async fn upload_status(
        &self,
        by: &Principal,
        id: Id,
        name: &str,
        kind: &str,
        total: u64,
    ) -> Result<u64> {
        let staging = self.staging(by, id, name, kind, total).await?;
        let _appending = APPENDING.lock().await;
        Ok(staging.received()?.0)
    }

    /// Adds a part at `offset` (which must be where the staged bytes end); the part that
    /// completes the file seals it into the product, as [`Delivery::product_upload`] does.
    #[allow(clippy::too_many_arguments)]
    pub async fn upload_part(
        &self,
        by: &Principal,
        id: Id,
        name: &str,
        kind: &str,
        total: u64,
        offset: u64,
        part: &[u8],
    ) -> Result<UploadProgress> {
        if part.is_empty() || part.len() > PART_MAX {
            return Err(invalid("part", format!("1 to {PART_MAX} bytes")));
        }
        let staging = self.staging(by, id, name, kind, total).await?;
        let guard = APPENDING.lock().await;
        let (received, frames) = staging.received()?;
        if offset != received {
            return Err(invalid(
                "offset",
                format!("the node has {received} bytes of this file: send from there"),
            ));
        }
        if received + part.len() as u64 > total {
            return Err(invalid("part", "more bytes than the file's size"));
        }
        let at = staging.append(frames, part)?;
        let received = received + part.len() as u64;
        staging.set_mark(
            at,
            received,
            frames + part.chunks(seal::MESSAGE_LEN_MAX).count() as u64,
        )?;
        drop(guard);
        if received < total {
            return Ok(UploadProgress {
                received,
                total,
                entry: None,
            });
        }
        let entry = self.seal_staged(by, id, name, kind, staging).await?;
        Ok(UploadProgress {
            received,
            total,
            entry: Some(entry),
        })
    }

    /// Seals a complete staging file into the product (its frames opened as they are read),
    /// then removes it.
    async fn seal_staged(
        &self,
        by: &Principal,
        id: Id,
        name: &str,
        kind: &str,
        staging: Staging,
    ) -> Result<EntryView> {
        let (reader, writer) = tokio::io::duplex(1 << 20);
        let bridge = tokio_util::io::SyncIoBridge::new(writer);
        let path = staging.path.clone();
        let opener = tokio::task::spawn_blocking(move || -> Result<()> {
            let mut out = bridge;
            let file = std::fs::File::open(&staging.path).map_err(setup)?;
            let mut input = std::io::BufReader::new(file);
            let mut header = [0_u8; 4];
            let mut frame = 0_u64;
            loop {
                match input.read_exact(&mut header) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(setup(e)),
                }
                let mut sealed = vec![0_u8; u32::from_be_bytes(header) as usize];
                input.read_exact(&mut sealed).map_err(setup)?;
                let plain = seal::open(staging.key.expose(), &staging.aad(frame), &sealed)
                    .map_err(|_| corrupt("a staged upload frame does not open"))?;
                // The sealing side may stop reading early (a refusal): not this side's error.
                if out.write_all(plain.expose()).is_err() {
                    return Ok(());
                }
                frame += 1;
            }
            out.shutdown().map_err(setup)?;
            Ok(())
        });
        let sealed = self.product_upload(by, id, name, kind, reader).await;
        opener.await.map_err(corrupt)??;
        let entry = sealed?;
        std::fs::remove_file(&path).map_err(setup)?;
        let _ = std::fs::remove_file(path.with_extension("mark"));
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staging(dir: &std::path::Path) -> Staging {
        Staging {
            path: dir.join("staging-test.parts"),
            id: [9; 32],
            key: Secret::new([3; 32]),
        }
    }

    #[test]
    fn what_is_staged_is_counted_after_a_crash_at_any_point() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = staging(dir.path());
        assert_eq!(s.received().expect("empty"), (0, 0));
        // A part of 100 KiB: two frames, marked.
        let part = vec![5_u8; 100 * 1024];
        let at = s.append(0, &part).expect("append");
        s.set_mark(at, part.len() as u64, 2).expect("mark");
        assert_eq!(s.received().expect("read"), (100 * 1024, 2));
        // A crash after the next append but before its mark: the walk counts it.
        s.append(2, b"tail").expect("append");
        assert_eq!(s.received().expect("read"), (100 * 1024 + 4, 3));
        // A crash in the middle of a frame: the torn bytes are cut off, the rest stays.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&s.path)
            .expect("open");
        f.write_all(&[0, 0, 1, 0, 7, 7]).expect("torn frame");
        drop(f);
        assert_eq!(s.received().expect("read"), (100 * 1024 + 4, 3));
        let len = std::fs::metadata(&s.path).expect("meta").len();
        assert_eq!(
            s.mark().0,
            len,
            "the mark covers the whole file after the cut"
        );
        // A mark beyond the file (the file replaced) is not trusted.
        s.set_mark(len + 100, 1, 1).expect("mark");
        assert_eq!(s.received().expect("read"), (100 * 1024 + 4, 3));
        // The staged bytes are sealed: no run of the plaintext is in the file.
        let bytes = std::fs::read(&s.path).expect("read");
        assert!(!bytes.windows(64).any(|w| w.iter().all(|b| *b == 5)));
    }
}
