//! `tally bench seal`: locked delivery (issue [3]) file → file, next to `age` on the same file
//! in the same run, with `openssl speed -evp chacha20-poly1305` as the in-memory ceiling.
//!
//! What is measured, on one pseudo-random input file (written first, not timed):
//!
//! * **Tally seal**: `delivery::seal_package`, which seals the file (a `TALLYSTR` stream
//!   under a random content key) straight into a signed package for a sale (reference code,
//!   unlock key, wrapped content key) in one pass: what selling a product the first time
//!   costs.
//! * **Tally open**: `delivery::open_package` with the sale's unlock key: every byte of the
//!   package verified as `delivery::inspect` verifies it (entry hashes, signature against the
//!   node key) and the entry decrypted to an output file, in one pass. The output's SHA-256
//!   must equal the input's, or the benchmark fails.
//! * **two steps**, for comparison: `seal_entry` to a sealed file, then `write_package`
//!   copying it into the package (how a node pre-seals a product once and sells it many
//!   times); `inspect`, then `unlock_entry` (how the CLI opens a package). Each step is timed
//!   on its own, after its own warm-up, and the two are added.
//! * **age**: `age -r RECIPIENT` (an X25519 identity from `age-keygen`) and `age -d` of the
//!   same file, run as child processes; its output is checked the same way.
//!
//! Rates are plaintext MiB (2^20 bytes) per second. Tally's file I/O goes through buffers of
//! one stream chunk (see `STREAM_BUF_LEN`);
//! nothing is fsynced inside a timed step (age does not fsync either), but every file a timed
//! step wrote is fsynced before the next step starts, so one step's write-back does not land
//! in the next one's time, and every timed step starts from the same warm-up (`warm_up`).
//! Peak memory is the process's `VmHWM`, read after a run on a file a quarter of the size
//! and again after the full run: with fixed-size buffers the two match.
//!
//! What bounds Tally here: a package pins its sealed bytes with a hash in the signed header,
//! which age does not have to do. Version 3 of the format (issue [11]) hashes them with BLAKE3
//! (about 0.2 ns/byte with AVX-512 on this machine, against 0.75 for SHA-256 with SHA-NI),
//! and the stream's helper thread runs the AEAD (about 0.6 ns/byte) on two chunks in three and
//! the hash on all of them while the calling thread reads, writes and seals the third chunk:
//! two threads with about equal work on 2 cores. The two-step seal (`seal_entry`) also
//! hashes the plaintext with SHA-256 (the product's record keeps it, to check the merchant's
//! upload against) and `write_package` copies the sealed product once more, so it stays
//! slower than the one-pass seal.

use anyhow::Context;
use clap::Args;
use rand::Rng as _;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;
use tally_kernel::crypto::kdf::Sha256Stream;
use tally_kernel::crypto::{SigningKey, seal};
use tally_kernel::{Amount, Currency, Id, Timestamp};
use tally_proto::delivery::{
    EntryKind, EntryMeta, Header, Instruction, PlainEntry, ReferenceCode, TRAILER_LEN, inspect,
    open_package, seal_entry, seal_package, unlock_entry, write_package,
};

use crate::bench_kit::{fmt_rate, fmt_ratio, print_rows};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// The buffers of the input's generation and of the output checks.
const BUF_LEN: usize = 1 << 20;
/// The buffers around the files Tally reads and writes: one stream chunk (64 KiB), so that
/// whole chunks (what the stream reads and writes) bypass the buffer (`BufReader` and
/// `BufWriter` pass a request at least their size straight through) instead of being copied
/// once more on the thread that also hashes; the header and trailer are still buffered.
const STREAM_BUF_LEN: usize = tally_kernel::crypto::stream::CHUNK_SIZE_DEFAULT as usize;
/// Smallest `--size`: below this the rates say more about process start-up than throughput.
const SIZE_MIN_BYTES: u64 = MIB;

/// `tally bench seal`.
#[derive(Args)]
pub struct SealBench {
    /// Size of the input file: bytes, or a number with B, KiB, MiB, GiB (or KB, MB, GB:
    /// powers of 1000), e.g. 256MiB.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    size: u64,
    /// Directory for the files (a temporary directory is made in it and removed at the end)
    /// [default: the system's temporary directory, $TMPDIR or /tmp].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Skip age (only Tally and the openssl ceiling).
    #[arg(long)]
    no_age: bool,
    /// Skip the page-cache warm-up before each timed step (see the module docs).
    #[arg(long)]
    cold: bool,
}

/// Parses `--size`: `1073741824`, `256MiB`, `1GiB`, `500MB`, `64k` (case does not matter; a
/// bare K/M/G is binary).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a whole number with a unit, e.g. 256MiB"))?;
    let unit_bytes = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => KIB,
        "m" | "mib" => MIB,
        "g" | "gib" => GIB,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit (use B, KiB, MiB, GiB, KB, MB or GB)"
            ));
        }
    };
    let bytes = number
        .checked_mul(unit_bytes)
        .ok_or_else(|| format!("`{text}` is too large"))?;
    if bytes < SIZE_MIN_BYTES {
        return Err(format!("`{text}`: the benchmark needs at least 1 MiB"));
    }
    Ok(bytes)
}

/// A size for people: `1.0 GiB`, `256 MiB`, `1.5 MiB`, `4096 bytes`.
fn fmt_size(bytes: u64) -> String {
    if bytes >= GIB {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    } else if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else {
        format!("{bytes} bytes")
    }
}

/// MiB per second for `bytes` processed in `seconds`.
fn mib_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / MIB as f64 / seconds
}

/// The peak resident set (`VmHWM`) in a `/proc/PID/status` text, in KiB.
fn vm_hwm_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut words = line["VmHWM:".len()..].split_whitespace();
    let kib = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(kib)
}

/// This process's peak resident set so far, in KiB.
fn peak_rss_kib() -> anyhow::Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    vm_hwm_kib(&status).context("no VmHWM line in /proc/self/status")
}

/// The recipient in an `age-keygen` key file (its `# public key: age1…` line).
fn age_recipient(key_file: &str) -> Option<&str> {
    key_file
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .map(str::trim)
        .filter(|r| r.starts_with("age1"))
}

/// The 16384-byte-block rate in the output of `openssl speed -evp chacha20-poly1305 -bytes
/// 16384`, in bytes per second: the last word of its last line, in units of 1000 bytes/s
/// (`ChaCha20-Poly1305  3754087.43k`).
fn openssl_bytes_per_s(output: &str) -> Option<f64> {
    let line = output.lines().rev().find(|l| !l.trim().is_empty())?;
    if !line.to_ascii_lowercase().starts_with("chacha20-poly1305") {
        return None;
    }
    let thousands: f64 = line
        .split_whitespace()
        .last()?
        .strip_suffix('k')?
        .parse()
        .ok()?;
    Some(thousands * 1000.0)
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0_u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// Is `program` on the PATH?
fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Writes `size_bytes` pseudo-random bytes to `path` (xorshift64*, refilled per 1 MiB block,
/// so no block repeats) and fsyncs it. Returns the content's SHA-256.
fn write_input(path: &Path, size_bytes: u64, seed: u64) -> anyhow::Result<[u8; 32]> {
    let mut file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut buf = vec![0_u8; BUF_LEN];
    let mut state = seed | 1;
    let mut hash = Sha256Stream::new();
    let mut left = size_bytes;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            word.copy_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        let n = left.min(BUF_LEN as u64) as usize;
        hash.update(&buf[..n]);
        file.write_all(&buf[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    Ok(hash.finish())
}

/// SHA-256 of a file (read through a 1 MiB buffer).
fn file_sha256(path: &Path) -> anyhow::Result<[u8; 32]> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0_u8; BUF_LEN];
    let mut hash = Sha256Stream::new();
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hash.finish());
        }
        hash.update(&buf[..n]);
    }
}

/// Puts the machine in the same state before every timed step, Tally's and age's alike: the
/// files the step reads are read once (so they come from the page cache, not the disk), and
/// as many bytes as the step writes are written to a scratch file in `dir` and deleted (so the
/// step writes into memory the kernel has just freed). On the 2-core virtual machine this was
/// measured on, file pages left untouched are paged out within seconds (DAMON proactive
/// reclaim), and writing 1 GiB into memory not used lately took 1 to 4 s against 0.35 s into
/// memory just freed: without this, a step's time said more about how long ago the step
/// before it ran than about its own code. `--cold` skips it.
fn warm_up(dir: &Path, reads: &[&Path], write_bytes: u64, cold: bool) -> anyhow::Result<()> {
    if cold {
        return Ok(());
    }
    let path = dir.join("warm-up.scratch");
    let mut file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut buf = vec![0_u8; BUF_LEN];
    let mut left = write_bytes;
    while left > 0 {
        let n = left.min(BUF_LEN as u64) as usize;
        file.write_all(&buf[..n])?;
        left -= n as u64;
    }
    drop(file);
    std::fs::remove_file(&path)?;
    for read in reads {
        let mut file = File::open(read).with_context(|| format!("opening {}", read.display()))?;
        while file.read(&mut buf)? > 0 {}
    }
    Ok(())
}

/// Fsyncs files a timed step wrote, so their write-back is not charged to the next step.
fn settle(paths: &[&Path]) -> anyhow::Result<()> {
    for path in paths {
        File::open(path)?.sync_all()?;
    }
    Ok(())
}

fn file_len(path: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading the size of {}", path.display()))?
        .len())
}

/// Fails unless `path` holds exactly the input (same SHA-256).
fn check_output(what: &str, path: &Path, input_sha256: &[u8; 32]) -> anyhow::Result<()> {
    let output_sha256 = file_sha256(path)?;
    anyhow::ensure!(
        output_sha256 == *input_sha256,
        "{what}: the output's SHA-256 differs from the input's: the round trip is broken"
    );
    Ok(())
}

/// The figures of one Tally round trip, each way done twice: in one pass, and in the two
/// steps a node and a buyer take when the product is sealed before it is sold.
struct TallyRun {
    /// `seal_package`: plaintext → signed package in one pass.
    seal_s: f64,
    /// `open_package`: package → verified plaintext in one pass.
    open_s: f64,
    /// `seal_entry` to a sealed file, then `write_package` copying it into the package (each
    /// timed on its own; this is the sum).
    seal_two_step_s: f64,
    /// Of `seal_two_step_s`: `seal_entry` alone.
    seal_entry_s: f64,
    /// `inspect`, then `unlock_entry` (each timed on its own; this is the sum).
    open_two_step_s: f64,
    /// Of `open_two_step_s`: `inspect` alone.
    inspect_s: f64,
    package_bytes: u64,
    header_bytes: u64,
    /// The sealed entry's bytes beyond the plaintext: stream header and one tag per chunk.
    stream_overhead_bytes: u64,
    peak_rss_kib: u64,
}

/// The sale's header without its entries, and the sale's unlock key.
fn sale_header(
    content_key: &[u8; 32],
    node_secret: &[u8; 32],
    node_key: &SigningKey,
) -> anyhow::Result<(Header, [u8; 32])> {
    let eur = Currency::from_code("EUR")?;
    let product = Id::new();
    let reference = ReferenceCode::new(product, "bench@example.org", Timestamp::now(), random());
    let unlock_key = reference.unlock_key(node_secret)?;
    let header = Header {
        v: u32::from(tally_proto::delivery::VERSION),
        sale: Id::new(),
        product,
        instruction: Instruction {
            title: "Benchmark product".into(),
            text: format!("Pay 9.90 EUR quoting {reference}; the unlock key comes to you."),
            amount: Amount::new(990, eur),
            pay_to: "account bench".into(),
            licence: "Benchmark use.".into(),
        },
        content_key_wrap: Header::wrap_content_key(
            content_key,
            unlock_key.expose(),
            &reference,
            &random::<{ seal::NONCE_LEN }>(),
        )?,
        reference,
        entries: Vec::new(),
        node_key: node_key.verifying_key().to_hex(),
    };
    Ok((header, *unlock_key.expose()))
}

/// Seals `input` into a package in `dir` and opens it again, in one pass and in two steps,
/// checks every output and removes everything it wrote.
fn tally_round_trip(
    dir: &Path,
    input: &Path,
    input_sha256: &[u8; 32],
    size_bytes: u64,
    cold: bool,
) -> anyhow::Result<TallyRun> {
    let entry_path = dir.join("product.sealed");
    let package_path = dir.join("product.tpkg");
    let output_path = dir.join("product.out");
    let node_secret: [u8; 32] = random();
    let node_key = SigningKey::generate();
    let trusted = node_key.verifying_key();
    let plain_sha256 = hex_lower(input_sha256);

    // One pass: the sealed entry goes straight into the package.
    warm_up(dir, &[input], size_bytes, cold)?;
    eprintln!("Tally seal {} (one pass) …", fmt_size(size_bytes));
    let started = Instant::now();
    let content_key: [u8; 32] = random();
    let (header, unlock_key) = sale_header(&content_key, &node_secret, &node_key)?;
    let mut plain = BufReader::with_capacity(STREAM_BUF_LEN, File::open(input)?);
    let mut package = BufWriter::with_capacity(STREAM_BUF_LEN, File::create(&package_path)?);
    let (header, _) = seal_package(
        &mut package,
        &header,
        &content_key,
        &mut [PlainEntry {
            name: "product.bin".into(),
            kind: EntryKind::Product,
            plain_len: size_bytes,
            plain: &mut plain,
            salt: random(),
            nonce_prefix: random(),
        }],
        &node_key,
    )?;
    package.into_inner().map_err(|e| e.into_error())?;
    let seal_s = started.elapsed().as_secs_f64();
    settle(&[&package_path])?;
    let meta = header.entries[0].clone();
    anyhow::ensure!(
        meta.plain_len == size_bytes && meta.plain_sha256.is_none() && meta.sealed_blake3.is_some(),
        "Tally seal: the entry's plaintext length is not the input's, or the version 3 header \
         lists another hash than the sealed bytes' BLAKE3"
    );

    warm_up(dir, &[&package_path], size_bytes, cold)?;
    eprintln!("Tally open {} (one pass) …", fmt_size(size_bytes));
    let started = Instant::now();
    // The buyer received the unlock key once the payment arrived.
    let mut output = BufWriter::with_capacity(STREAM_BUF_LEN, File::create(&output_path)?);
    let (inspected, written) = open_package(
        BufReader::with_capacity(STREAM_BUF_LEN, File::open(&package_path)?),
        Some(&trusted),
        &unlock_key,
        0,
        &mut output,
    )?;
    output.into_inner().map_err(|e| e.into_error())?;
    let open_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        written == size_bytes && inspected.header == header,
        "Tally open: {written} bytes unlocked, {size_bytes} sealed"
    );
    settle(&[&output_path])?;
    check_output("Tally open", &output_path, input_sha256)?;
    let package_bytes = file_len(&package_path)?;
    // Layout: magic, version and header length (13 bytes), the header, the entry, trailer.
    let header_bytes = inspected.offsets[0] - 13;
    let stream_overhead_bytes = meta.sealed_len - meta.plain_len;
    std::fs::remove_file(&output_path)?;
    std::fs::remove_file(&package_path)?;

    // Two steps: the product sealed once to its own file, then copied into a sale's package.
    // Each step is timed on its own, after its own warm-up: in use they run at different
    // times (a product is sealed once, then sold; a package is inspected when it arrives and
    // unlocked once paid).
    warm_up(dir, &[input], size_bytes, cold)?;
    eprintln!(
        "Tally seal {} (seal_entry, write_package) …",
        fmt_size(size_bytes)
    );
    let started = Instant::now();
    let content_key: [u8; 32] = random();
    let mut sealed = BufWriter::with_capacity(STREAM_BUF_LEN, File::create(&entry_path)?);
    let meta: EntryMeta = seal_entry(
        u32::from(tally_proto::delivery::VERSION),
        &content_key,
        "product.bin",
        EntryKind::Product,
        BufReader::with_capacity(STREAM_BUF_LEN, File::open(input)?),
        &mut sealed,
        random(),
        random(),
    )?;
    sealed.into_inner().map_err(|e| e.into_error())?;
    let seal_entry_s = started.elapsed().as_secs_f64();
    settle(&[&entry_path])?;
    anyhow::ensure!(
        meta.plain_len == size_bytes && meta.plain_sha256.as_ref() == Some(&plain_sha256),
        "Tally seal_entry: the entry's plaintext length or SHA-256 is not the input's"
    );
    warm_up(dir, &[&entry_path], size_bytes, cold)?;
    let started = Instant::now();
    let (mut header, _) = sale_header(&content_key, &node_secret, &node_key)?;
    header.entries.push(meta.clone().for_version(header.v));
    let mut entry = BufReader::with_capacity(STREAM_BUF_LEN, File::open(&entry_path)?);
    let mut package = BufWriter::with_capacity(STREAM_BUF_LEN, File::create(&package_path)?);
    write_package(&mut package, &header, &mut [&mut entry], &node_key)?;
    package.into_inner().map_err(|e| e.into_error())?;
    let seal_two_step_s = seal_entry_s + started.elapsed().as_secs_f64();
    drop(entry);
    settle(&[&package_path])?;
    std::fs::remove_file(&entry_path)?;

    warm_up(dir, &[&package_path], 0, cold)?;
    eprintln!(
        "Tally open {} (inspect, unlock_entry) …",
        fmt_size(size_bytes)
    );
    let started = Instant::now();
    let inspected = inspect(
        BufReader::with_capacity(STREAM_BUF_LEN, File::open(&package_path)?),
        Some(&trusted),
    )?;
    let inspect_s = started.elapsed().as_secs_f64();
    warm_up(dir, &[&package_path], size_bytes, cold)?;
    let started = Instant::now();
    // The node re-derives the sale's unlock key from the code; the buyer receives it.
    let unlock_key = inspected.header.reference.unlock_key(&node_secret)?;
    let mut package = BufReader::with_capacity(STREAM_BUF_LEN, File::open(&package_path)?);
    let mut output = BufWriter::with_capacity(STREAM_BUF_LEN, File::create(&output_path)?);
    let written = unlock_entry(
        &mut package,
        &inspected,
        unlock_key.expose(),
        0,
        &mut output,
    )?;
    output.into_inner().map_err(|e| e.into_error())?;
    let open_two_step_s = inspect_s + started.elapsed().as_secs_f64();
    let peak_rss_kib = peak_rss_kib()?;
    anyhow::ensure!(
        written == size_bytes,
        "Tally unlock_entry: {written} bytes unlocked, {size_bytes} sealed"
    );
    settle(&[&output_path])?;
    check_output("Tally unlock_entry", &output_path, input_sha256)?;
    std::fs::remove_file(&output_path)?;
    std::fs::remove_file(&package_path)?;
    Ok(TallyRun {
        seal_s,
        open_s,
        seal_two_step_s,
        seal_entry_s,
        open_two_step_s,
        inspect_s,
        package_bytes,
        header_bytes,
        stream_overhead_bytes,
        peak_rss_kib,
    })
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// age's encrypt and decrypt times of `input`, in seconds; `None` when age is not installed.
fn age_round_trip(
    dir: &Path,
    input: &Path,
    input_sha256: &[u8; 32],
    size_bytes: u64,
    cold: bool,
) -> anyhow::Result<Option<(f64, f64, String)>> {
    if !installed("age") || !installed("age-keygen") {
        println!("age: not installed (Debian: `apt-get install age`); its rows are skipped");
        return Ok(None);
    }
    let version = Command::new("age")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let key_path = dir.join("age.key");
    let sealed_path = dir.join("product.age");
    let output_path = dir.join("product.age.out");
    let keygen = Command::new("age-keygen")
        .arg("-o")
        .arg(&key_path)
        .stderr(Stdio::null())
        .status()
        .context("running age-keygen")?;
    anyhow::ensure!(keygen.success(), "age-keygen failed: {keygen}");
    let key_file = std::fs::read_to_string(&key_path)?;
    let recipient = age_recipient(&key_file)
        .context("no `# public key: age1…` line in the age-keygen key file")?
        .to_string();

    let run = |what: &str, command: &mut Command| -> anyhow::Result<f64> {
        let started = Instant::now();
        let status = command
            .status()
            .with_context(|| format!("running {what}"))?;
        let seconds = started.elapsed().as_secs_f64();
        anyhow::ensure!(status.success(), "{what} failed: {status}");
        Ok(seconds)
    };
    warm_up(dir, &[input], size_bytes, cold)?;
    eprintln!("age encrypt {} …", fmt_size(size_bytes));
    let encrypt_s = run(
        "age -r",
        Command::new("age")
            .arg("-r")
            .arg(&recipient)
            .arg("-o")
            .arg(&sealed_path)
            .arg(input),
    )?;
    settle(&[&sealed_path])?;
    warm_up(dir, &[&sealed_path], size_bytes, cold)?;
    eprintln!("age decrypt {} …", fmt_size(size_bytes));
    let decrypt_s = run(
        "age -d",
        Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(&key_path)
            .arg("-o")
            .arg(&output_path)
            .arg(&sealed_path),
    )?;
    check_output("age -d", &output_path, input_sha256)?;
    for path in [&key_path, &sealed_path, &output_path] {
        std::fs::remove_file(path)?;
    }
    Ok(Some((encrypt_s, decrypt_s, version)))
}

/// `openssl speed -evp chacha20-poly1305` on 16 KiB blocks, in bytes/s; `None` (and a line
/// saying why) when openssl is missing or its output is not understood.
fn openssl_ceiling() -> anyhow::Result<Option<f64>> {
    if !installed("openssl") {
        println!("openssl: not installed (Debian: `apt-get install openssl`); its row is skipped");
        return Ok(None);
    }
    eprintln!("openssl speed -evp chacha20-poly1305 -seconds 3 -bytes 16384 …");
    let output = Command::new("openssl")
        .args([
            "speed",
            "-evp",
            "chacha20-poly1305",
            "-seconds",
            "3",
            "-bytes",
            "16384",
        ])
        .stderr(Stdio::null())
        .output()
        .context("running openssl speed")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    match openssl_bytes_per_s(&stdout).filter(|_| output.status.success()) {
        Some(rate) => Ok(Some(rate)),
        None => {
            println!("openssl speed: no ChaCha20-Poly1305 figure in its output; row skipped");
            Ok(None)
        }
    }
}

pub fn run(args: SealBench) -> anyhow::Result<ExitCode> {
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("tally-bench-seal-")
        .tempdir_in(&base)
        .with_context(|| format!("making a temporary directory in {}", base.display()))?;
    let size = args.size;
    let quarter = size / 4;
    println!(
        "tally bench seal: {} file → file in {} (rates in MiB/s, 1 MiB = 2^20 bytes; 1 MiB I/O \
         buffers, 64 KiB stream chunks)",
        fmt_size(size),
        dir.path().display()
    );

    // A quarter-size run first: the peak RSS after it and after the full run should match.
    let input_path = dir.path().join("product.bin");
    eprintln!("writing {} input …", fmt_size(quarter));
    let input_sha256 = write_input(&input_path, quarter, u64::from_le_bytes(random()))?;
    let small = tally_round_trip(dir.path(), &input_path, &input_sha256, quarter, args.cold)?;
    println!(
        "Tally, {} (a quarter, for memory): seal {:.2} s = {} MiB/s, open {:.2} s = {} MiB/s, \
         peak RSS {:.1} MiB",
        fmt_size(quarter),
        small.seal_s,
        fmt_rate(mib_per_s(quarter, small.seal_s)),
        small.open_s,
        fmt_rate(mib_per_s(quarter, small.open_s)),
        small.peak_rss_kib as f64 / KIB as f64,
    );
    std::fs::remove_file(&input_path)?;

    eprintln!("writing {} input …", fmt_size(size));
    let input_sha256 = write_input(&input_path, size, u64::from_le_bytes(random()))?;
    let full = tally_round_trip(dir.path(), &input_path, &input_sha256, size, args.cold)?;
    println!(
        "Tally, {}: one pass: seal {:.2} s, open {:.2} s; two steps: seal {:.2} s (seal_entry \
         {:.2} s, header + write_package {:.2} s), open {:.2} s (inspect {:.2} s, unlock_entry \
         {:.2} s); package {} bytes = plaintext + {} (signed header {}, stream header and tags \
         {}, framing and trailer {}); every output's SHA-256 = input's",
        fmt_size(size),
        full.seal_s,
        full.open_s,
        full.seal_two_step_s,
        full.seal_entry_s,
        full.seal_two_step_s - full.seal_entry_s,
        full.open_two_step_s,
        full.inspect_s,
        full.open_two_step_s - full.inspect_s,
        full.package_bytes,
        full.package_bytes.saturating_sub(size),
        full.header_bytes,
        full.stream_overhead_bytes,
        13 + TRAILER_LEN,
    );

    let age = if args.no_age {
        None
    } else {
        age_round_trip(dir.path(), &input_path, &input_sha256, size, args.cold)?
    };
    if let Some((encrypt_s, decrypt_s, version)) = &age {
        println!(
            "age {version}, {}: encrypt {encrypt_s:.2} s, decrypt {decrypt_s:.2} s; output \
             SHA-256 = input's",
            fmt_size(size)
        );
    }
    std::fs::remove_file(&input_path)?;
    let openssl = openssl_ceiling()?;

    let seal_rate = mib_per_s(size, full.seal_s);
    let open_rate = mib_per_s(size, full.open_s);
    let age_rates = age
        .as_ref()
        .map(|(e, d, _)| (mib_per_s(size, *e), mib_per_s(size, *d)));
    let row = |label: &str, rate: f64, versus: Option<f64>| {
        [
            label.to_string(),
            fmt_rate(rate),
            fmt_ratio(rate, versus, 2),
        ]
    };
    let mut rows = Vec::new();
    if let Some((encrypt, decrypt)) = age_rates {
        rows.push(row("age encrypt (X25519)", encrypt, Some(encrypt)));
        rows.push(row("age decrypt", decrypt, Some(decrypt)));
    }
    rows.push(row(
        "Tally seal (seal_package, one pass)",
        seal_rate,
        age_rates.map(|r| r.0),
    ));
    rows.push(row(
        "Tally open (open_package: verify + unlock)",
        open_rate,
        age_rates.map(|r| r.1),
    ));
    rows.push(row(
        "Tally seal, two steps (entry, package)",
        mib_per_s(size, full.seal_two_step_s),
        age_rates.map(|r| r.0),
    ));
    rows.push(row(
        "Tally open, two steps (inspect, unlock)",
        mib_per_s(size, full.open_two_step_s),
        age_rates.map(|r| r.1),
    ));
    if let Some(bytes_per_s) = openssl {
        rows.push(row(
            "openssl chacha20-poly1305 (memory)",
            bytes_per_s / MIB as f64,
            None,
        ));
    }
    print_rows(["measurement", "MiB/s", "vs age"], &rows);
    if let Some(bytes_per_s) = openssl {
        let ceiling = bytes_per_s / MIB as f64;
        println!(
            "of the in-memory ceiling: Tally seal {:.0}%, Tally open {:.0}%",
            100.0 * seal_rate / ceiling,
            100.0 * open_rate / ceiling
        );
    }
    println!(
        "peak memory (VmHWM): {:.1} MiB after the {} run, {:.1} MiB after the {} run ({})",
        small.peak_rss_kib as f64 / KIB as f64,
        fmt_size(quarter),
        full.peak_rss_kib as f64 / KIB as f64,
        fmt_size(size),
        if full.peak_rss_kib <= small.peak_rss_kib + KIB {
            "no growth with size: buffers are fixed-size".to_string()
        } else {
            format!(
                "GREW by {:.1} MiB",
                (full.peak_rss_kib - small.peak_rss_kib) as f64 / KIB as f64
            )
        }
    );
    println!(
        "target: ≥ 1.5x age for seal and open; peak memory independent of file size; every \
         output matched the input's SHA-256"
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("256MiB"), Ok(256 * MIB));
        assert_eq!(parse_size("1GiB"), Ok(GIB));
        assert_eq!(parse_size("1gib"), Ok(GIB));
        assert_eq!(parse_size("2G"), Ok(2 * GIB));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("1048576"), Ok(MIB));
        assert_eq!(parse_size("4096 KiB"), Ok(4 * MIB));
        assert!(parse_size("1KiB").is_err(), "below the minimum");
        assert!(parse_size("1.5GiB").is_err(), "whole numbers only");
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999999GiB").is_err(), "overflow");
    }

    #[test]
    fn sizes_print_for_people() {
        assert_eq!(fmt_size(GIB), "1.0 GiB");
        assert_eq!(fmt_size(256 * MIB), "256 MiB");
        assert_eq!(fmt_size(3 * MIB / 2), "1.5 MiB");
        assert_eq!(fmt_size(4096), "4096 bytes");
    }

    #[test]
    fn the_openssl_figure_is_the_last_line_in_thousands_of_bytes() {
        let output = "version: 3.0.19\n\
            The 'numbers' are in 1000s of bytes per second processed.\n\
            type          16384 bytes\n\
            ChaCha20-Poly1305  3754087.43k\n";
        assert_eq!(openssl_bytes_per_s(output), Some(3_754_087_430.0));
        assert_eq!(
            openssl_bytes_per_s("ChaCha20-Poly1305 12.5k\n\n"),
            Some(12_500.0)
        );
        assert_eq!(openssl_bytes_per_s("Error setting cipher\n"), None);
        assert_eq!(openssl_bytes_per_s("ChaCha20-Poly1305 n/a\n"), None);
        assert_eq!(openssl_bytes_per_s(""), None);
    }

    #[test]
    fn the_peak_rss_is_the_vmhwm_line_in_kib() {
        let status = "Name:\ttally\nVmPeak:\t  400000 kB\nVmHWM:\t   14520 kB\nVmRSS:\t 9000 kB\n";
        assert_eq!(vm_hwm_kib(status), Some(14_520));
        assert_eq!(vm_hwm_kib("VmRSS:\t 9000 kB\n"), None);
        assert_eq!(vm_hwm_kib("VmHWM:\t 9000 MB\n"), None);
    }

    #[test]
    fn the_age_recipient_is_the_public_key_comment() {
        let key_file = "# created: 2026-11-22T10:00:00Z\n\
            # public key: age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\n\
            AGE-SECRET-KEY-1QQQ\n";
        assert_eq!(
            age_recipient(key_file),
            Some("age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p")
        );
        assert_eq!(age_recipient("AGE-SECRET-KEY-1QQQ\n"), None);
    }

    #[test]
    fn a_small_tally_round_trip_verifies() {
        let dir = tempfile::tempdir().expect("temp dir");
        let input = dir.path().join("in.bin");
        let size = 3 * MIB + 17;
        let sha256 = write_input(&input, size, 7).expect("input");
        assert_eq!(sha256, file_sha256(&input).expect("hash"));
        let run = tally_round_trip(dir.path(), &input, &sha256, size, false).expect("round trip");
        assert_eq!(
            run.package_bytes,
            size + run.stream_overhead_bytes + run.header_bytes + 13 + TRAILER_LEN as u64
        );
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("in.bin")]);
    }
}
