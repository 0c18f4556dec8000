//! Local files written crash-safe: the token file (private, replaced by rename), a new token
//! file (private, never replacing an existing one) and public files (packages, exported
//! receipts). Each is written whole to a temporary file in the same directory, synced, and
//! only then given its name, so a crash leaves the old file or the new one, never a torn one.

use anyhow::{Context, bail};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// A sibling temporary path of `path` (same directory, so a rename is atomic).
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Flushes a directory entry change (a rename or a link) to disk, best effort.
fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = std::fs::File::open(parent) {
        let _ = dir.sync_all();
    }
}

/// Replaces `path` with `bytes` (mode 0600): a fresh temporary file, synced, renamed over it.
pub(super) fn replace_private_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = temp_path(path);
    let _ = std::fs::remove_file(&tmp);
    tally_service::identity::write_private_file(&tmp, bytes)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("renaming onto {}", path.display()));
    }
    sync_parent(path);
    Ok(())
}

/// Creates `path` with `bytes` (mode 0600) all at once, never replacing an existing file: a
/// temporary file, synced, then hard-linked to its name (which fails if the name exists).
pub(super) fn create_private_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = temp_path(path);
    let _ = std::fs::remove_file(&tmp);
    tally_service::identity::write_private_file(&tmp, bytes)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_parent(path);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("{} exists; it was not replaced", path.display())
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// Writes a public file (a receipt package, an exported receipt): temporary file, synced,
/// renamed to `path`.
pub(super) fn write_public_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = temp_path(path);
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    sync_parent(path);
    Ok(())
}

/// Where a receipt package is saved when the user names no file: `receipt-TRANSACTION.tally`
/// in the current directory.
pub(super) fn default_package_path(transaction: u64) -> PathBuf {
    PathBuf::from(format!("receipt-{transaction}.tally"))
}
