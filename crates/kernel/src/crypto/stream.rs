//! Streaming file encryption: XChaCha20-Poly1305 in the STREAM construction.
//!
//! A file is a 64-byte header followed by chunks, each sealed with XChaCha20-Poly1305 under a
//! per-file key. The nonce of chunk *i* is `nonce_prefix(19) || i as u32 BE || last_flag(1)`
//! (`aead_stream::StreamBE32`), so chunks cannot be reordered, dropped or duplicated, and only
//! the chunk sealed with `last_flag = 1` may end the stream: truncation at a chunk boundary is
//! detected ([`CryptoError::Truncated`]). The whole header is the associated data of every
//! chunk, so a changed header fails authentication too. The byte layout is in
//! `docs/protocols/crypto.md`:
//!
//! ```text
//! header = "TALLYSTR" || version u8 (=1) || chunk_size u32 BE || salt[32] || nonce_prefix[19]
//! file_key = HKDF-SHA256(ikm = key, salt = salt, info = "tally/stream/v1")
//! chunks = seal(chunk_0) || … || seal(chunk_n)        each seal adds a 16-byte tag
//! ```
//!
//! Key decisions:
//! * **A full-size chunk is never the last one.** Every chunk except the last carries exactly
//!   `chunk_size` plaintext bytes; the last carries `0..chunk_size` (an empty last chunk when the
//!   plaintext is a multiple of `chunk_size`, including empty input). The reader therefore needs
//!   no look-ahead: it reads `chunk_size + 16` bytes; a full read is a middle chunk, a short read
//!   is the last chunk, and nothing may follow it (appended bytes change the short read and
//!   fail authentication).
//! * **Per-file keys.** The random 32-byte salt gives every file its own key, so the random
//!   19-byte prefix only has to be unique per file, and one long-term key can encrypt any
//!   number of files.
//! * **Constant memory.** One buffer of `chunk_size + 16` bytes, wiped when done.
//! * **Release only authenticated plaintext.** A chunk is written only after its tag verified.
//!   Earlier chunks of a stream that later turns out truncated or tampered *have* been written
//!   by [`decrypt_stream`]; callers must treat the output as untrusted until it returns `Ok`.
//!   [`decrypt_file`] does that for files: it writes a temporary sibling and renames it into
//!   place only on success.
//!
//! Rejected: the `age` format (its recipient layer is more than we need, and its crate still
//! pulls the older dalek generation); one-shot AEAD over the whole file (unbounded memory);
//! AES-GCM (96-bit nonces are too short for random nonces at volume, and XChaCha needs no
//! hardware support to be constant-time); a look-ahead reader that lets the last chunk be full
//! (saves 16 bytes on some files, costs a subtle state machine).

use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use std::collections::VecDeque;
use std::sync::mpsc;

use aead_stream::{NewStream as _, StreamBE32, StreamPrimitive as _};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use rand::Rng as _;
use zeroize::Zeroizing;

use super::{CryptoError, Result};

/// File magic.
pub const MAGIC: &[u8; 8] = b"TALLYSTR";
/// Format version written by this code.
pub const VERSION: u8 = 1;
/// Length of the salt for the per-file key.
pub const SALT_LEN: usize = 32;
/// Length of the STREAM nonce prefix (24-byte XChaCha nonce − 4-byte counter − 1-byte flag).
pub const NONCE_PREFIX_LEN: usize = 19;
/// Length of the header in bytes.
pub const HEADER_LEN: usize = 8 + 1 + 4 + SALT_LEN + NONCE_PREFIX_LEN;
/// Poly1305 tag length added to every chunk.
pub const TAG_LEN: usize = 16;
/// Smallest accepted chunk size.
pub const CHUNK_SIZE_MIN: u32 = 16;
/// Largest accepted chunk size (bounds the memory a hostile header can make us allocate).
pub const CHUNK_SIZE_MAX: u32 = 16 * 1024 * 1024;
/// A sensible default chunk size: 64 KiB.
pub const CHUNK_SIZE_DEFAULT: u32 = 64 * 1024;
/// HKDF `info` for the per-file key.
pub const KDF_INFO: &[u8] = b"tally/stream/v1";

const _: () = assert!(HEADER_LEN == 64);

/// The parsed stream header. Unauthenticated until the first chunk verifies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamHeader {
    /// Plaintext bytes per chunk (all but the last chunk).
    pub chunk_size: u32,
    /// Salt of the per-file key.
    pub salt: [u8; SALT_LEN],
    /// STREAM nonce prefix.
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

impl StreamHeader {
    /// The 64 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..8].copy_from_slice(MAGIC);
        out[8] = VERSION;
        out[9..13].copy_from_slice(&self.chunk_size.to_be_bytes());
        out[13..13 + SALT_LEN].copy_from_slice(&self.salt);
        out[13 + SALT_LEN..].copy_from_slice(&self.nonce_prefix);
        out
    }

    /// Parses and range-checks the 64 header bytes.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Result<StreamHeader> {
        if &bytes[..8] != MAGIC {
            return Err(CryptoError::Malformed(
                "not a Tally encrypted stream (bad magic)".into(),
            ));
        }
        if bytes[8] != VERSION {
            return Err(CryptoError::Malformed(format!(
                "unsupported stream version {}",
                bytes[8]
            )));
        }
        let chunk_size = u32::from_be_bytes([bytes[9], bytes[10], bytes[11], bytes[12]]);
        check_chunk_size(chunk_size).map_err(|_| {
            CryptoError::Malformed(format!("stream chunk size {chunk_size} out of range"))
        })?;
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&bytes[13..13 + SALT_LEN]);
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        nonce_prefix.copy_from_slice(&bytes[13 + SALT_LEN..]);
        Ok(StreamHeader {
            chunk_size,
            salt,
            nonce_prefix,
        })
    }

    fn cipher(&self, key: &[u8; 32]) -> XChaCha20Poly1305 {
        let file_key = super::kdf::hkdf_sha256_32(key, &self.salt, KDF_INFO);
        XChaCha20Poly1305::new(&chacha20poly1305::Key::from(*file_key))
    }
}

fn check_chunk_size(chunk_size: u32) -> Result<()> {
    if (CHUNK_SIZE_MIN..=CHUNK_SIZE_MAX).contains(&chunk_size) {
        Ok(())
    } else {
        Err(CryptoError::ApiMisuse("chunk size must be 16 B ..= 16 MiB"))
    }
}

/// Reads until `buf` is full or the reader is exhausted; returns the number of bytes read.
fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(filled)
}

fn as_usize(n: u32) -> usize {
    // u32 → usize is lossless on the 32- and 64-bit targets we build for.
    n as usize
}

/// Encrypts everything `reader` yields to `writer` with a fresh random salt and nonce prefix.
/// Returns the number of plaintext bytes encrypted.
pub fn encrypt_stream<R: Read, W: Write>(
    key: &[u8; 32],
    reader: R,
    writer: W,
    chunk_size: u32,
) -> Result<u64> {
    let mut salt = [0u8; SALT_LEN];
    let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
    let mut rng = rand::rng();
    rng.fill_bytes(&mut salt);
    rng.fill_bytes(&mut nonce_prefix);
    encrypt_stream_with(key, &salt, &nonce_prefix, reader, writer, chunk_size)
}

/// [`encrypt_stream`] with a caller-chosen salt and nonce prefix, for golden vectors and tests.
/// Never reuse a `(key, salt, nonce_prefix)` triple for two different plaintexts: that reuses
/// the keystream.
pub fn encrypt_stream_with<R: Read, W: Write>(
    key: &[u8; 32],
    salt: &[u8; SALT_LEN],
    nonce_prefix: &[u8; NONCE_PREFIX_LEN],
    reader: R,
    writer: W,
    chunk_size: u32,
) -> Result<u64> {
    encrypt_stream_hashing(key, salt, nonce_prefix, reader, writer, chunk_size, None)
}

/// [`encrypt_stream_with`] that also writes every sealed byte (the stream header, then each
/// sealed chunk, in order) to `sealed`, for a hash over the stream: on the helper thread of a
/// long stream, while the chunk is still in its cache, and the calling thread then seals one
/// chunk in `CALLER_SHARE` itself so that the two threads stay about equally busy.
pub fn encrypt_stream_hashing<R: Read, W: Write>(
    key: &[u8; 32],
    salt: &[u8; SALT_LEN],
    nonce_prefix: &[u8; NONCE_PREFIX_LEN],
    reader: R,
    mut writer: W,
    chunk_size: u32,
    mut sealed: Option<&mut (dyn Write + Send)>,
) -> Result<u64> {
    check_chunk_size(chunk_size)?;
    let header = StreamHeader {
        chunk_size,
        salt: *salt,
        nonce_prefix: *nonce_prefix,
    };
    let aad = header.encode();
    writer.write_all(&aad)?;
    feed(&mut sealed, &aad)?;
    let chunks = Chunks {
        stream: StreamBE32::from_aead(header.cipher(key), &(*nonce_prefix).into()),
        aad,
        step: Step::Seal,
        read_len: as_usize(chunk_size),
    };
    chunks.run(reader, writer, sealed)
}

/// Decrypts a stream made by [`encrypt_stream`], writing plaintext chunk by chunk as each one
/// authenticates. Returns the number of plaintext bytes written. The output is complete and
/// authentic only if this returns `Ok`.
pub fn decrypt_stream<R: Read, W: Write>(key: &[u8; 32], reader: R, writer: W) -> Result<u64> {
    decrypt_stream_hashing(key, reader, writer, None)
}

/// [`decrypt_stream`] that also writes every sealed byte it reads (the stream header, then
/// each chunk before it is opened, in order) to `sealed`, for a hash over the stream, as
/// [`encrypt_stream_hashing`] does.
pub fn decrypt_stream_hashing<R: Read, W: Write>(
    key: &[u8; 32],
    mut reader: R,
    writer: W,
    mut sealed: Option<&mut (dyn Write + Send)>,
) -> Result<u64> {
    let mut aad = [0u8; HEADER_LEN];
    let got = read_full(&mut reader, &mut aad)?;
    feed(&mut sealed, &aad[..got])?;
    if got < HEADER_LEN {
        return Err(CryptoError::Truncated);
    }
    let header = StreamHeader::parse(&aad)?;
    let chunks = Chunks {
        stream: StreamBE32::from_aead(header.cipher(key), &header.nonce_prefix.into()),
        aad,
        step: Step::Open,
        read_len: as_usize(header.chunk_size) + TAG_LEN,
    };
    chunks.run(reader, writer, sealed)
}

// ----- the chunks, on one thread or two -----------------------------------------------------
//
// STREAM's chunks are independent once their position is known (`StreamBE32` is stateless:
// the nonce is the prefix, the position and the last flag), so a long stream is sealed or
// opened on a helper thread while the calling thread reads the next chunks and writes the
// finished ones, in order. On 2 cores that puts the AEAD (the most work per byte) on one
// core and the I/O (and whatever the caller's reader and writer do on the way) on the other;
// a caller that hashes the sealed bytes hands the hash to the helper and takes a share of the
// chunks back (`CALLER_SHARE`). The reader and writer never leave the calling
// thread (they need not be `Send`); chunk buffers move between the threads, so nothing is
// copied, memory is bounded by `IN_FLIGHT` buffers, and each one is wiped when dropped.
// Rejected: a pool of workers (the order of the output needs a reorder buffer, and 2 cores
// have no third to give); one thread for everything (what this replaced: 0.65 ns/byte of
// AEAD and the I/O in series on one core while the other idled).

/// Bytes handled on the calling thread before the helper starts: starting a thread costs tens
/// of µs, which small streams (keys, registration files, vectors) should not pay. The tests
/// use a lower bound, so that most of their streams take the threaded path.
const INLINE_BYTES: usize = if cfg!(test) { 1024 } else { 1 << 20 };
/// Chunks between the two threads at once (2 MiB with the default 64 KiB chunks): enough
/// that neither thread waits for the other through the other's hiccups (page-cache
/// allocation, a syscall). Measured with `tally bench seal` on 1 GiB: 8 in flight sealed at
/// 971 MiB/s, 32 at 1,158–1,388 MiB/s (single runs; this machine's noise is ±15%).
const IN_FLIGHT: usize = 32;
/// When the helper also hashes the sealed bytes, the calling thread seals (before handing it
/// over) or opens (after it comes back hashed) one chunk in this many itself: hashing moves
/// about 0.26 ns/byte to the helper, and a third of the AEAD (about 0.6 ns/byte) moves back.
/// Profiled on a 1 GiB seal with one in four: the helper was busy 98% of the time, the
/// calling thread 82%.
const CALLER_SHARE: u32 = 3;

#[derive(Clone, Copy)]
enum Step {
    Seal,
    Open,
}

/// One stream's chunks: the STREAM primitive, the associated data (the stream header) and
/// how many bytes one chunk reads (a chunk of plaintext to seal, one with its tag to open).
struct Chunks {
    stream: StreamBE32<XChaCha20Poly1305>,
    aad: [u8; HEADER_LEN],
    step: Step,
    read_len: usize,
}

/// A chunk on its way: its position, whether it ends the stream, its bytes, and whether the
/// calling thread seals or opens it (see `CALLER_SHARE`).
struct Chunk {
    position: u32,
    last: bool,
    buf: Zeroizing<Vec<u8>>,
    by_caller: bool,
}

/// Writes `bytes` to the sink of sealed bytes, if there is one.
fn feed(sealed: &mut Option<&mut (dyn Write + Send)>, bytes: &[u8]) -> Result<()> {
    if let Some(sealed) = sealed.as_mut() {
        sealed.write_all(bytes)?;
    }
    Ok(())
}

impl Chunks {
    /// Seals or opens `chunk` in place (sealing appends the tag, opening removes it).
    fn process(&self, chunk: &mut Chunk) -> Result<()> {
        let buf: &mut Vec<u8> = &mut chunk.buf;
        match self.step {
            Step::Seal => self
                .stream
                .encrypt_in_place(chunk.position, chunk.last, &self.aad, buf)
                .map_err(|_| CryptoError::ApiMisuse("the AEAD refused a chunk")),
            Step::Open => self
                .stream
                .decrypt_in_place(chunk.position, chunk.last, &self.aad, buf)
                .map_err(|_| CryptoError::Tampered),
        }
    }

    /// Reads the chunk at `position` into `buf`; a short read is the last chunk.
    fn read<R: Read>(
        &self,
        reader: &mut R,
        position: u32,
        mut buf: Zeroizing<Vec<u8>>,
    ) -> Result<Chunk> {
        // A reused buffer is only shortened or lengthened here: the read overwrites it.
        buf.resize(self.read_len, 0);
        let n = read_full(reader, &mut buf)?;
        buf.truncate(n);
        let last = n < self.read_len;
        if last && matches!(self.step, Step::Open) && n < TAG_LEN {
            // The stream stopped at (or just after) a chunk boundary without a last chunk.
            return Err(CryptoError::Truncated);
        }
        if !last && position == u32::MAX {
            // The last position is kept for a last chunk, as `aead_stream`'s encryptor does.
            return Err(match self.step {
                Step::Seal => CryptoError::ApiMisuse("stream longer than 2^32 - 1 chunks"),
                Step::Open => CryptoError::Tampered,
            });
        }
        Ok(Chunk {
            position,
            last,
            buf,
            by_caller: false,
        })
    }

    /// What the helper does to a chunk: seals it and feeds the sink, or feeds the sink and
    /// opens it, leaving a chunk the calling thread takes care of to that thread.
    fn helper_step(
        &self,
        chunk: &mut Chunk,
        sealed: &mut Option<&mut (dyn Write + Send)>,
    ) -> Result<()> {
        match self.step {
            Step::Seal => {
                if !chunk.by_caller {
                    self.process(chunk)?;
                }
                feed(sealed, &chunk.buf)
            }
            Step::Open => {
                feed(sealed, &chunk.buf)?;
                if chunk.by_caller {
                    Ok(())
                } else {
                    self.process(chunk)
                }
            }
        }
    }

    /// What the calling thread does to a chunk back from the helper: opens it if it is one of
    /// its share (sealing, it sealed it before handing it over).
    fn caller_step(&self, mut chunk: Chunk) -> Result<Chunk> {
        if chunk.by_caller && matches!(self.step, Step::Open) {
            self.process(&mut chunk)?;
        }
        Ok(chunk)
    }

    /// Plaintext bytes of a processed chunk that read `before` bytes.
    fn plain_len(&self, chunk: &Chunk, before: usize) -> u64 {
        match self.step {
            Step::Seal => before as u64,
            Step::Open => chunk.buf.len() as u64,
        }
    }

    /// Writes a finished chunk, returns its buffer to `free` and its plaintext bytes (the
    /// oldest length `in_flight` recorded is the one this chunk read).
    fn deliver<W: Write>(
        &self,
        chunk: Chunk,
        writer: &mut W,
        in_flight: &mut VecDeque<usize>,
        free: &mut Vec<Zeroizing<Vec<u8>>>,
    ) -> Result<u64> {
        writer.write_all(&chunk.buf)?;
        let plain = self.plain_len(&chunk, in_flight.pop_front().unwrap_or(0));
        free.push(chunk.buf);
        Ok(plain)
    }

    fn new_buffer(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(Vec::with_capacity(self.read_len + TAG_LEN))
    }

    /// Every chunk from `reader` to `writer`; returns the plaintext bytes. A chunk reaches
    /// `writer` only once processed (opened: authenticated), and only after every chunk
    /// before it.
    fn run<R: Read, W: Write>(
        &self,
        mut reader: R,
        mut writer: W,
        mut sealed: Option<&mut (dyn Write + Send)>,
    ) -> Result<u64> {
        let mut plain: u64 = 0;
        let mut buf = self.new_buffer();
        let mut position = 0_u32;
        let mut inline_bytes = 0_usize;
        loop {
            let mut chunk = self.read(&mut reader, position, buf)?;
            let before = chunk.buf.len();
            self.helper_step(&mut chunk, &mut sealed)?;
            writer.write_all(&chunk.buf)?;
            plain += self.plain_len(&chunk, before);
            if chunk.last {
                writer.flush()?;
                return Ok(plain);
            }
            buf = chunk.buf;
            position += 1;
            inline_bytes += before;
            if inline_bytes >= INLINE_BYTES {
                break;
            }
        }
        std::thread::scope(|scope| {
            let (jobs, for_helper) = mpsc::sync_channel::<Chunk>(IN_FLIGHT);
            let (to_caller, done) = mpsc::channel::<Result<Chunk>>();
            let helper = std::thread::Builder::new().name("tally-stream".into());
            let share = sealed.is_some();
            let spawned = helper.spawn_scoped(scope, move || {
                for mut chunk in for_helper {
                    let outcome = self.helper_step(&mut chunk, &mut sealed).map(|()| chunk);
                    let failed = outcome.is_err();
                    if to_caller.send(outcome).is_err() || failed {
                        break;
                    }
                }
            });
            spawned?;
            // Every buffer in flight, allocated and touched now: the memory a long stream
            // takes is the same whatever the threads' timing (no pool growing on demand).
            let mut free: Vec<Zeroizing<Vec<u8>>> = std::iter::once(buf)
                .chain((1..IN_FLIGHT).map(|_| {
                    let mut b = self.new_buffer();
                    b.resize(self.read_len + TAG_LEN, 0);
                    b
                }))
                .collect();
            let mut in_flight: VecDeque<usize> = VecDeque::with_capacity(IN_FLIGHT);
            let mut reading = true;
            // A read that failed (a truncated stream) is reported after the chunks before it,
            // so the errors come in the stream's order, as on one thread.
            let mut read_failed = None;
            while reading || !in_flight.is_empty() {
                if reading && in_flight.len() < IN_FLIGHT {
                    let buf = free.pop().unwrap_or_else(|| self.new_buffer());
                    let mut chunk = match self.read(&mut reader, position, buf) {
                        Ok(chunk) => chunk,
                        Err(e) => {
                            read_failed = Some(e);
                            reading = false;
                            continue;
                        }
                    };
                    reading = !chunk.last;
                    in_flight.push_back(chunk.buf.len());
                    chunk.by_caller = share && position % CALLER_SHARE == CALLER_SHARE - 1;
                    if chunk.by_caller && matches!(self.step, Step::Seal) {
                        self.process(&mut chunk)?;
                    }
                    position = position.wrapping_add(1);
                    if jobs.send(chunk).is_err() {
                        // The helper stopped at a chunk it refused: the chunks it finished
                        // before that one are written, then that chunk's error is returned.
                        for outcome in done.try_iter() {
                            writer.write_all(&self.caller_step(outcome?)?.buf)?;
                        }
                        return Err(helper_stopped());
                    }
                    // Write what is finished, without waiting for what is not.
                    while let Ok(outcome) = done.try_recv() {
                        let chunk = self.caller_step(outcome?)?;
                        plain += self.deliver(chunk, &mut writer, &mut in_flight, &mut free)?;
                    }
                } else {
                    let chunk = self.caller_step(done.recv().map_err(|_| helper_stopped())??)?;
                    plain += self.deliver(chunk, &mut writer, &mut in_flight, &mut free)?;
                }
            }
            if let Some(e) = read_failed {
                return Err(e);
            }
            writer.flush()?;
            Ok(plain)
        })
    }
}

fn helper_stopped() -> CryptoError {
    CryptoError::Io(std::io::Error::other("the stream's helper thread stopped"))
}

/// A temporary sibling of `path`: same directory, so the final rename is atomic.
fn partial_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    path.with_file_name(name)
}

fn via_partial_file(
    dst: &Path,
    work: impl FnOnce(&mut std::fs::File) -> Result<u64>,
) -> Result<u64> {
    let partial = partial_path(dst);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)?;
    let outcome = work(&mut file).and_then(|n| {
        file.sync_all()?;
        Ok(n)
    });
    drop(file);
    match outcome {
        Ok(n) => {
            std::fs::rename(&partial, dst)?;
            Ok(n)
        }
        Err(e) => {
            // Best effort: the error that matters is `e`, not a failed cleanup.
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

/// Encrypts file `src` into `dst` (written as `dst.partial`, then renamed).
pub fn encrypt_file(key: &[u8; 32], src: &Path, dst: &Path, chunk_size: u32) -> Result<u64> {
    let input = std::io::BufReader::new(std::fs::File::open(src)?);
    via_partial_file(dst, |out| {
        encrypt_stream(key, input, std::io::BufWriter::new(out), chunk_size)
    })
}

/// Decrypts file `src` into `dst`. Plaintext goes to `dst.partial` and is renamed to `dst` only
/// after the whole stream authenticated; on any error the partial file is removed, so `dst`
/// never holds unauthenticated or incomplete plaintext.
pub fn decrypt_file(key: &[u8; 32], src: &Path, dst: &Path) -> Result<u64> {
    let input = std::io::BufReader::new(std::fs::File::open(src)?);
    via_partial_file(dst, |out| {
        decrypt_stream(key, input, std::io::BufWriter::new(out))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly by design.
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 32] = [0x11; 32];
    const CHUNK: u32 = 64;
    const C: usize = CHUNK as usize;

    fn plaintext(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    fn encrypt(key: &[u8; 32], data: &[u8], chunk: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let n = encrypt_stream(key, data, &mut out, chunk).unwrap();
        assert_eq!(n, data.len() as u64);
        out
    }

    fn decrypt(key: &[u8; 32], sealed: &[u8]) -> (Result<u64>, Vec<u8>) {
        let mut out = Vec::new();
        let r = decrypt_stream(key, sealed, &mut out);
        (r, out)
    }

    /// Sealed size: header + one tag per chunk, with a (possibly empty) short last chunk.
    fn sealed_len(len: usize, chunk: usize) -> usize {
        HEADER_LEN + len + (len / chunk + 1) * TAG_LEN
    }

    #[test]
    fn round_trip_at_the_edges() {
        for len in [0, 1, C - 1, C, C + 1, 3 * C + 7, 4 * C] {
            let data = plaintext(len);
            let sealed = encrypt(&KEY, &data, CHUNK);
            assert_eq!(sealed.len(), sealed_len(len, C), "len {len}");
            assert_eq!(&sealed[..8], MAGIC);
            let (r, out) = decrypt(&KEY, &sealed);
            assert_eq!(r.unwrap(), len as u64);
            assert_eq!(out, data, "len {len}");
        }
    }

    #[test]
    fn fresh_salt_and_nonce_per_encryption() {
        let data = plaintext(10);
        let a = encrypt(&KEY, &data, CHUNK);
        let b = encrypt(&KEY, &data, CHUNK);
        assert_ne!(a[13..HEADER_LEN], b[13..HEADER_LEN]);
        assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
    }

    #[test]
    fn header_layout_is_as_documented() {
        let mut out = Vec::new();
        encrypt_stream_with(
            &KEY,
            &[0xaa; 32],
            &[0xbb; 19],
            &b"hi"[..],
            &mut out,
            0x0102_0304 & 0xffff,
        )
        .unwrap();
        assert_eq!(&out[..8], b"TALLYSTR");
        assert_eq!(out[8], 1);
        assert_eq!(out[9..13], [0x00, 0x00, 0x03, 0x04]);
        assert_eq!(out[13..45], [0xaa; 32]);
        assert_eq!(out[45..64], [0xbb; 19]);
        let header = StreamHeader::parse(out[..HEADER_LEN].try_into().unwrap()).unwrap();
        assert_eq!(header.encode()[..], out[..HEADER_LEN]);
    }

    #[test]
    fn truncation_at_every_chunk_boundary_is_detected() {
        let data = plaintext(3 * C + 7);
        let sealed = encrypt(&KEY, &data, CHUNK);
        // Cut after the header and after each of the three full chunks.
        for chunks in 0..=3 {
            let cut = HEADER_LEN + chunks * (C + TAG_LEN);
            let (r, out) = decrypt(&KEY, &sealed[..cut]);
            assert!(
                matches!(r, Err(CryptoError::Truncated)),
                "cut after {chunks} chunks: {r:?}"
            );
            // Whatever was released is an authentic prefix, never more.
            assert_eq!(out, data[..chunks * C]);
        }
        // A multiple of the chunk size ends with an empty last chunk; dropping it is caught too.
        let even = encrypt(&KEY, &plaintext(2 * C), CHUNK);
        let (r, _) = decrypt(&KEY, &even[..even.len() - TAG_LEN]);
        assert!(matches!(r, Err(CryptoError::Truncated)), "{r:?}");
        // Cut inside the header.
        for cut in [0, 1, HEADER_LEN - 1] {
            assert!(matches!(
                decrypt(&KEY, &sealed[..cut]).0,
                Err(CryptoError::Truncated)
            ));
        }
    }

    #[test]
    fn truncation_inside_a_chunk_is_detected() {
        let data = plaintext(3 * C + 7);
        let sealed = encrypt(&KEY, &data, CHUNK);
        for cut in (HEADER_LEN + 1..sealed.len()).step_by(5) {
            let (r, _) = decrypt(&KEY, &sealed[..cut]);
            assert!(
                matches!(r, Err(CryptoError::Truncated | CryptoError::Tampered)),
                "cut at {cut}: {r:?}"
            );
        }
    }

    #[test]
    fn every_body_bit_flip_is_tampering_and_releases_nothing_of_that_chunk() {
        let data = plaintext(2 * C + 5);
        let sealed = encrypt(&KEY, &data, CHUNK);
        for i in HEADER_LEN..sealed.len() {
            for bit in [0x01, 0x80] {
                let mut bad = sealed.clone();
                bad[i] ^= bit;
                let (r, out) = decrypt(&KEY, &bad);
                assert!(matches!(r, Err(CryptoError::Tampered)), "byte {i}: {r:?}");
                // Only chunks before the damaged one may have been released.
                let damaged_chunk = (i - HEADER_LEN) / (C + TAG_LEN);
                assert_eq!(out, data[..damaged_chunk * C], "byte {i}");
            }
        }
    }

    #[test]
    fn every_header_bit_flip_is_rejected_before_any_output() {
        let data = plaintext(C + 5);
        let sealed = encrypt(&KEY, &data, CHUNK);
        for i in 0..HEADER_LEN {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            let (r, out) = decrypt(&KEY, &bad);
            match i {
                0..=8 => assert!(
                    matches!(r, Err(CryptoError::Malformed(_))),
                    "byte {i}: {r:?}"
                ),
                // Chunk size: out of range, or a different split that fails authentication.
                9..=12 => assert!(
                    matches!(r, Err(CryptoError::Malformed(_) | CryptoError::Tampered)),
                    "byte {i}: {r:?}"
                ),
                // Salt and nonce prefix: a different key or nonce, and the header is the AAD.
                _ => assert!(matches!(r, Err(CryptoError::Tampered)), "byte {i}: {r:?}"),
            }
            assert!(out.is_empty(), "byte {i} released plaintext");
        }
    }

    #[test]
    fn reordered_duplicated_or_dropped_chunks_fail() {
        let data = plaintext(3 * C + 7);
        let sealed = encrypt(&KEY, &data, CHUNK);
        let body = &sealed[HEADER_LEN..];
        let chunks: Vec<&[u8]> = body.chunks(C + TAG_LEN).collect();
        assert_eq!(chunks.len(), 4);
        let assemble = |order: &[usize]| {
            let mut v = sealed[..HEADER_LEN].to_vec();
            for &i in order {
                v.extend_from_slice(chunks[i]);
            }
            v
        };
        for order in [
            &[1, 0, 2, 3][..],
            &[0, 2, 1, 3],
            &[0, 0, 1, 2, 3],
            &[0, 2, 3],
            &[0, 1, 3],
        ] {
            let (r, _) = decrypt(&KEY, &assemble(order));
            assert!(matches!(r, Err(CryptoError::Tampered)), "{order:?}: {r:?}");
        }
        assert_eq!(decrypt(&KEY, &assemble(&[0, 1, 2, 3])).1, data);
    }

    #[test]
    fn chunks_from_another_file_are_rejected() {
        let a = encrypt_with_fixed(&plaintext(2 * C), [1; 32]);
        let b = encrypt_with_fixed(&plaintext(2 * C), [2; 32]);
        // Same key and nonce prefix, different salt → different file key.
        let mut spliced = a[..HEADER_LEN + C + TAG_LEN].to_vec();
        spliced.extend_from_slice(&b[HEADER_LEN + C + TAG_LEN..]);
        assert!(matches!(
            decrypt(&KEY, &spliced).0,
            Err(CryptoError::Tampered)
        ));
    }

    fn encrypt_with_fixed(data: &[u8], salt: [u8; 32]) -> Vec<u8> {
        let mut out = Vec::new();
        encrypt_stream_with(&KEY, &salt, &[7; 19], data, &mut out, CHUNK).unwrap();
        out
    }

    #[test]
    fn appended_data_is_rejected() {
        for len in [0, 5, C, 2 * C + 3] {
            let sealed = encrypt(&KEY, &plaintext(len), CHUNK);
            for extra in [1, TAG_LEN, C + TAG_LEN, 3 * C] {
                let mut longer = sealed.clone();
                longer.extend(std::iter::repeat_n(0u8, extra));
                let (r, _) = decrypt(&KEY, &longer);
                assert!(
                    matches!(r, Err(CryptoError::Tampered)),
                    "len {len} + {extra}: {r:?}"
                );
            }
        }
    }

    #[test]
    fn wrong_key_fails_without_output() {
        let sealed = encrypt(&KEY, &plaintext(100), CHUNK);
        let (r, out) = decrypt(&[0x12; 32], &sealed);
        assert!(matches!(r, Err(CryptoError::Tampered)));
        assert!(out.is_empty());
    }

    #[test]
    fn chunk_size_bounds() {
        let mut sink = Vec::new();
        assert!(matches!(
            encrypt_stream(&KEY, &b""[..], &mut sink, CHUNK_SIZE_MIN - 1),
            Err(CryptoError::ApiMisuse(_))
        ));
        assert!(matches!(
            encrypt_stream(&KEY, &b""[..], &mut sink, CHUNK_SIZE_MAX + 1),
            Err(CryptoError::ApiMisuse(_))
        ));
        // A hostile header asking for a 4 GiB buffer is refused before allocating.
        let mut sealed = encrypt(&KEY, b"x", CHUNK);
        sealed[9..13].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decrypt(&KEY, &sealed).0,
            Err(CryptoError::Malformed(_))
        ));
    }

    /// A reader that returns one byte at a time and is sometimes interrupted.
    struct Dribble<'a> {
        data: &'a [u8],
        calls: usize,
    }

    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(3) {
                return Err(std::io::Error::from(ErrorKind::Interrupted));
            }
            let n = buf.len().min(1).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn short_and_interrupted_reads_are_handled() {
        let data = plaintext(3 * C + 7);
        let mut sealed = Vec::new();
        encrypt_stream(
            &KEY,
            Dribble {
                data: &data,
                calls: 0,
            },
            &mut sealed,
            CHUNK,
        )
        .unwrap();
        let mut out = Vec::new();
        decrypt_stream(
            &KEY,
            Dribble {
                data: &sealed,
                calls: 0,
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn decrypt_file_publishes_only_authentic_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let (src, enc, dst) = (
            dir.path().join("a"),
            dir.path().join("a.enc"),
            dir.path().join("a.out"),
        );
        let data = plaintext(5 * C + 1);
        std::fs::write(&src, &data).unwrap();
        assert_eq!(
            encrypt_file(&KEY, &src, &enc, CHUNK).unwrap(),
            data.len() as u64
        );
        assert_eq!(decrypt_file(&KEY, &enc, &dst).unwrap(), data.len() as u64);
        assert_eq!(std::fs::read(&dst).unwrap(), data);

        let mut sealed = std::fs::read(&enc).unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        std::fs::write(&enc, &sealed).unwrap();
        let dst2 = dir.path().join("b.out");
        assert!(matches!(
            decrypt_file(&KEY, &enc, &dst2),
            Err(CryptoError::Tampered)
        ));
        assert!(!dst2.exists());
        assert!(!partial_path(&dst2).exists());
    }

    /// Chunks past `INLINE_BYTES` are sealed on the helper thread.
    const LONG: usize = 3 * INLINE_BYTES / C + 5;

    #[test]
    fn the_helper_thread_seals_what_aead_stream_seals() {
        // The reference: `aead_stream`'s own encryptor, one chunk after another.
        let data = plaintext(LONG * C + 9);
        let header = StreamHeader {
            chunk_size: CHUNK,
            salt: [7; SALT_LEN],
            nonce_prefix: [9; NONCE_PREFIX_LEN],
        };
        let aad = header.encode();
        let mut expected = aad.to_vec();
        let mut encryptor =
            aead_stream::EncryptorBE32::from_aead(header.cipher(&KEY), &header.nonce_prefix.into());
        let mut pieces = data.chunks(C).peekable();
        while let Some(piece) = pieces.next() {
            let mut buf = piece.to_vec();
            if pieces.peek().is_some() || piece.len() == C {
                encryptor.encrypt_next_in_place(&aad, &mut buf).unwrap();
            } else {
                encryptor.encrypt_last_in_place(&aad, &mut buf).unwrap();
                expected.extend_from_slice(&buf);
                break;
            }
            expected.extend_from_slice(&buf);
        }
        let mut sealed = Vec::new();
        let n = encrypt_stream_with(
            &KEY,
            &[7; SALT_LEN],
            &[9; NONCE_PREFIX_LEN],
            &data[..],
            &mut sealed,
            CHUNK,
        )
        .unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(sealed.len(), expected.len());
        assert!(sealed == expected, "the threaded path sealed other bytes");
        let (r, out) = decrypt(&KEY, &sealed);
        assert_eq!(r.unwrap(), data.len() as u64);
        assert!(out == data);
    }

    #[test]
    fn damage_past_the_inline_part_releases_only_the_chunks_before_it() {
        let data = plaintext(LONG * C);
        let sealed = encrypt(&KEY, &data, CHUNK);
        for damaged in [LONG / 2, LONG - 1] {
            let mut bad = sealed.clone();
            bad[HEADER_LEN + damaged * (C + TAG_LEN) + 3] ^= 0x40;
            let (r, out) = decrypt(&KEY, &bad);
            assert_tampered_at(&r, &out, &data, damaged);
            // Cut at that chunk's start: truncated, and the same prefix released.
            let (r, out) = decrypt(&KEY, &sealed[..HEADER_LEN + damaged * (C + TAG_LEN)]);
            assert!(
                matches!(r, Err(CryptoError::Truncated)),
                "cut at {damaged}: {r:?}"
            );
            assert!(out == data[..damaged * C]);
        }
    }

    #[test]
    fn the_sealed_bytes_reach_the_sink_in_order_and_either_thread_refuses_damage() {
        let data = plaintext(LONG * C + 5);
        let (salt, prefix) = ([7; SALT_LEN], [9; NONCE_PREFIX_LEN]);
        let mut sealed = Vec::new();
        let mut seen = Vec::new();
        let n = encrypt_stream_hashing(
            &KEY,
            &salt,
            &prefix,
            &data[..],
            &mut sealed,
            CHUNK,
            Some(&mut seen),
        )
        .unwrap();
        assert_eq!(n, data.len() as u64);
        assert!(seen == sealed, "the sink saw other bytes than the output");
        let mut without = Vec::new();
        encrypt_stream_with(&KEY, &salt, &prefix, &data[..], &mut without, CHUNK).unwrap();
        assert!(without == sealed, "sharing the chunks changed the stream");
        let mut seen = Vec::new();
        let mut out = Vec::new();
        let n = decrypt_stream_hashing(&KEY, &sealed[..], &mut out, Some(&mut seen)).unwrap();
        assert_eq!(n, data.len() as u64);
        assert!(seen == sealed && out == data);
        // Past the inline part, one position in CALLER_SHARE is opened by the calling thread,
        // the others by the helper: damage in either is refused, and only the chunks before
        // it released.
        let inline_chunks = INLINE_BYTES / C;
        let share = CALLER_SHARE as usize;
        let by_caller = (inline_chunks..LONG)
            .find(|p| p % share == share - 1)
            .unwrap();
        for damaged in [by_caller, by_caller + 1] {
            let mut bad = sealed.clone();
            bad[HEADER_LEN + damaged * (C + TAG_LEN) + 1] ^= 0x08;
            let mut out = Vec::new();
            let mut seen = Vec::new();
            let r = decrypt_stream_hashing(&KEY, &bad[..], &mut out, Some(&mut seen));
            assert_tampered_at(&r, &out, &data, damaged);
        }
    }

    /// `r` refused chunk `damaged` as tampered, and `out` holds exactly the chunks before it.
    fn assert_tampered_at(r: &Result<u64>, out: &[u8], data: &[u8], damaged: usize) {
        assert!(
            matches!(r, Err(CryptoError::Tampered)),
            "chunk {damaged}: {r:?}"
        );
        assert!(
            out == &data[..damaged * C],
            "chunk {damaged}: released {} bytes",
            out.len()
        );
    }

    /// A writer that fails after `left` bytes.
    struct FailingWriter {
        left: usize,
    }

    impl Write for FailingWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.left < buf.len() {
                return Err(std::io::Error::other("disk full"));
            }
            self.left -= buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_writer_past_the_inline_part_is_reported_as_io() {
        let data = plaintext(LONG * C);
        let sealed = encrypt(&KEY, &data, CHUNK);
        let r = encrypt_stream(
            &KEY,
            &data[..],
            FailingWriter {
                left: sealed.len() / 2,
            },
            CHUNK,
        );
        assert!(matches!(r, Err(CryptoError::Io(_))), "{r:?}");
        let r = decrypt_stream(
            &KEY,
            &sealed[..],
            FailingWriter {
                left: data.len() / 2,
            },
        );
        assert!(matches!(r, Err(CryptoError::Io(_))), "{r:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn round_trip_any_length_and_chunk_size(
            data in prop::collection::vec(any::<u8>(), 0..4000),
            chunk in CHUNK_SIZE_MIN..300u32,
            key in any::<[u8; 32]>(),
        ) {
            let mut sealed = Vec::new();
            encrypt_stream(&key, &data[..], &mut sealed, chunk).unwrap();
            prop_assert_eq!(sealed.len(), sealed_len(data.len(), chunk as usize));
            let mut out = Vec::new();
            let written = decrypt_stream(&key, &sealed[..], &mut out).unwrap();
            prop_assert_eq!(written, data.len() as u64);
            prop_assert_eq!(out, data);
        }
    }
}
