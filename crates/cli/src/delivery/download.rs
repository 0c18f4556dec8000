//! A sale's package, downloaded in constant memory and resumably: the bytes go to `FILE.part`,
//! which becomes `FILE` only once it holds the whole package.
//!
//! An interrupted attempt (the connection broke, the node failed, or nothing came for
//! [`tally_client::CALL_TIMEOUT`]) is retried up to [`ATTEMPTS_MAX`] times from what
//! `FILE.part` holds, with the package's digest as `If-Range`: had the node another package,
//! it sends it whole and the download starts over. A refusal ends the download at once;
//! `FILE.part` is kept for the next run to resume.

use anyhow::{Context, anyhow, bail};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tally_client::wire::delivery::SaleView;
use tally_client::{ATTEMPTS_MAX, Download, Package};
use tally_kernel::Id;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::CHUNK_LEN;
use super::common::bytes_bar;
use crate::client::Client;

/// The outcome of one download attempt.
enum Attempt {
    /// FILE.part holds this many bytes: the whole package.
    Complete(u64),
    /// Interrupted (the network, the node): try again from what FILE.part holds.
    Interrupted(anyhow::Error),
}

/// What is downloaded, and where to.
struct Target<'a> {
    /// The sale.
    sale: Id,
    /// The package's entity tag (its digest, quoted), for `If-Range`.
    etag: String,
    /// `FILE.part`.
    part: &'a Path,
    /// The package's length, as the sale says.
    expected: Option<u64>,
}

/// Downloads `sale`'s package to `out` through `out.part`, resuming from what `out.part`
/// already holds; renames it to `out` once its length is the package's.
pub(super) async fn download_package(
    c: &Client,
    sale: &SaleView,
    out: &Path,
) -> anyhow::Result<u64> {
    let expected = u64::try_from(sale.package_len).ok();
    if let Ok(meta) = tokio::fs::metadata(out).await {
        if expected == Some(meta.len()) {
            eprintln!("{} is already downloaded", out.display());
            return Ok(meta.len());
        }
        bail!(
            "{} already exists and is not this sale's package: remove it or choose --out",
            out.display()
        );
    }
    let part = part_path(out);
    // The package's ETag is its digest: a resumed download asks for the rest of this
    // package only (`If-Range`); had the node another package, it sends it whole.
    let target = Target {
        sale: sale.id,
        etag: format!("\"{}\"", sale.package_sha256),
        part: &part,
        expected,
    };
    let bar = bytes_bar(expected.unwrap_or(0), "downloading".to_string());
    let mut last = None;
    for attempt in 0..ATTEMPTS_MAX {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        match fetch_once(c, &target, &bar).await {
            Ok(Attempt::Complete(len)) => {
                bar.finish_and_clear();
                tokio::fs::rename(&part, out)
                    .await
                    .with_context(|| format!("renaming {} to {}", part.display(), out.display()))?;
                return Ok(len);
            }
            Ok(Attempt::Interrupted(e)) => {
                eprintln!("download interrupted: {e:#}");
                last = Some(e);
            }
            Err(e) => {
                bar.finish_and_clear();
                return Err(e);
            }
        }
    }
    bar.finish_and_clear();
    Err(last
        .unwrap_or_else(|| anyhow!("download failed"))
        .context(format!(
            "{} is kept: run the same command again to resume",
            part.display()
        )))
}

/// One request for the package into `FILE.part`: from its length when it is not empty. An
/// answer from that offset continues the file; one from the start (the whole package)
/// replaces it.
async fn fetch_once(
    c: &Client,
    t: &Target<'_>,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Attempt> {
    let offset = resume_offset(t).await;
    if offset > 0 && t.expected == Some(offset) {
        return Ok(Attempt::Complete(offset));
    }
    if offset > 0 {
        eprintln!("resuming at {offset} bytes");
    }
    let mut download = match c.api.sale_package(t.sale, offset, Some(&t.etag)).await {
        Ok(Package::Body(d)) => d,
        Ok(Package::NotSatisfiable) => {
            tokio::fs::remove_file(t.part).await.ok();
            return Ok(Attempt::Interrupted(anyhow!(
                "{} does not fit the package: starting over",
                t.part.display()
            )));
        }
        Err(e) if e.is_transient() => return Ok(Attempt::Interrupted(e.into())),
        Err(e) => return Err(e.into()),
    };
    let start = download.start;
    if start == 0 {
        if offset > 0 {
            eprintln!("the node sent the whole package: starting over");
        }
    } else if start != offset {
        bail!("asked for the package from byte {offset}, the node sent it from {start}");
    }
    let total = download.total.or(t.expected);
    if let (Some(total), Some(expected)) = (total, t.expected)
        && total != expected
    {
        bail!("the node sends a package of {total} bytes, but the sale's package has {expected}");
    }
    receive(&mut download, t.part, start, total, bar).await
}

/// Where to resume: the length of `FILE.part`, or 0 when there is none or it is longer than
/// the package.
async fn resume_offset(t: &Target<'_>) -> u64 {
    let offset = match tokio::fs::metadata(t.part).await {
        Ok(m) => m.len(),
        Err(_) => 0,
    };
    if t.expected.is_some_and(|e| offset > e) {
        eprintln!(
            "{} is longer than the package: starting over",
            t.part.display()
        );
        return 0;
    }
    offset
}

/// Writes what `download` brings into `part` from byte `start`, moving `bar`; complete when
/// the stream ends at `total` (or ends, when the length is unknown).
async fn receive(
    download: &mut Download,
    part: &Path,
    start: u64,
    total: Option<u64>,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Attempt> {
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(part)
        .await
        .with_context(|| format!("opening {}", part.display()))?;
    file.set_len(start).await?;
    file.seek(std::io::SeekFrom::Start(start)).await?;
    let mut file = tokio::io::BufWriter::with_capacity(CHUNK_LEN, file);
    if let Some(t) = total {
        bar.set_length(t);
    }
    bar.set_position(start);
    let mut written = start;
    loop {
        let chunk = match download.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                file.flush().await?;
                return Ok(Attempt::Interrupted(anyhow!(
                    "at {written} bytes: {}",
                    broken(&e)
                )));
            }
        };
        written += chunk.len() as u64;
        if let Some(t) = total
            && written > t
        {
            bail!("the node sent more than the package's {t} bytes");
        }
        file.write_all(&chunk)
            .await
            .with_context(|| format!("writing {}", part.display()))?;
        bar.set_position(written);
    }
    file.flush().await?;
    file.get_ref().sync_all().await?;
    match total {
        Some(t) if written != t => Ok(Attempt::Interrupted(anyhow!(
            "the download stopped at {written} of {t} bytes"
        ))),
        _ => Ok(Attempt::Complete(written)),
    }
}

/// What broke a stream: the transport's cause (the node's URL is known), or the error.
fn broken(e: &tally_client::Error) -> String {
    match e {
        tally_client::Error::Transport { cause, .. } => cause.clone(),
        other => other.to_string(),
    }
}

/// `FILE.part` for `FILE`.
fn part_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_os_string();
    name.push(".part");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_file_sits_next_to_the_target() {
        assert_eq!(
            part_path(Path::new("dir/A.tallypkg")),
            PathBuf::from("dir/A.tallypkg.part")
        );
    }

    #[test]
    fn a_broken_stream_names_its_cause() {
        let e = tally_client::Error::Transport {
            base: "http://127.0.0.1:8640".into(),
            cause: format!(
                "nothing received for {} s",
                tally_client::CALL_TIMEOUT.as_secs()
            ),
        };
        assert_eq!(broken(&e), "nothing received for 60 s");
    }
}
