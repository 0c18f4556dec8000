//! Raw command-line text checked and turned into what the wire types take, before any
//! request: a typo names its flag instead of coming back as the node's refusal.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use tally_kernel::{Amount, Id, Timestamp};

/// A positive amount with its currency (`"12.50 EUR"`).
pub(super) fn amount_arg(flag: &str, text: &str) -> anyhow::Result<Amount> {
    let amount: Amount = text
        .parse()
        .with_context(|| format!("{flag} {text:?}: expected e.g. \"12.50 EUR\""))?;
    if amount.minor <= 0 {
        bail!("{flag} {text:?}: must be positive");
    }
    Ok(amount)
}

/// Like [`amount_arg`], but zero is allowed (a threshold of zero secures everything).
pub(super) fn amount_arg_nonneg(flag: &str, text: &str) -> anyhow::Result<Amount> {
    let amount: Amount = text
        .parse()
        .with_context(|| format!("{flag} {text:?}: expected e.g. \"50.00 EUR\""))?;
    if amount.minor < 0 {
        bail!("{flag} {text:?}: must not be negative");
    }
    Ok(amount)
}

/// An account id (a UUID).
pub(super) fn account_arg(flag: &str, text: &str) -> anyhow::Result<Id> {
    uuid::Uuid::parse_str(text)
        .map(Id)
        .with_context(|| format!("{flag} {text:?}: expected an account id (a UUID)"))
}

/// A time in RFC 3339, checked here and sent as given.
pub(super) fn time_arg(flag: &str, text: &str) -> anyhow::Result<String> {
    Timestamp::parse_rfc3339(text)
        .map(|_| text.to_string())
        .with_context(|| format!("{flag} {text:?}: expected RFC 3339, e.g. 2026-11-01T00:00:00Z"))
}

/// An optional time flag, checked like [`time_arg`].
pub(super) fn time_opt(flag: &str, text: &Option<String>) -> anyhow::Result<Option<String>> {
    text.as_deref().map(|t| time_arg(flag, t)).transpose()
}

/// A session number: 32 hex digits, lower-cased.
pub(super) fn session_arg(text: &str) -> anyhow::Result<String> {
    let t = text.trim().to_ascii_lowercase();
    if t.len() != 32 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("session {text:?}: expected the 32 hex digits printed when it was opened");
    }
    Ok(t)
}

/// A text file named by `flag` (a form, a mail's body, a certificate).
pub(super) fn read_text(flag: &str, path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{flag} {}", path.display()))
}

/// `PREFIX` + `.ext` (never replacing a dot already in the prefix).
pub(super) fn with_extension(prefix: &Path, ext: &str) -> PathBuf {
    let mut p = prefix.as_os_str().to_owned();
    p.push(".");
    p.push(ext);
    PathBuf::from(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_checked_before_any_request() {
        let amount = amount_arg("--amount", "12.5 EUR").expect("ok");
        assert_eq!(amount.to_string(), "12.50 EUR");
        assert!(amount_arg("--amount", "0.00 EUR").is_err());
        assert!(amount_arg("--amount", "12.50").is_err());
        let zero = amount_arg_nonneg("--secured-above", "0 EUR").expect("ok");
        assert_eq!(zero.to_string(), "0.00 EUR");
        assert!(amount_arg_nonneg("--secured-above", "-1.00 EUR").is_err());
        assert!(account_arg("--from", "alice").is_err());
        let id = "0190f6b2-7c1e-7000-8000-000000000001";
        assert_eq!(
            account_arg("--from", id).expect("ok").to_string(),
            id.to_string()
        );
        assert!(time_arg("--from", "yesterday").is_err());
        assert!(time_arg("--from", "2026-11-01T00:00:00Z").is_ok());
        assert_eq!(time_opt("--to", &None).expect("ok"), None);
        assert!(session_arg("00").is_err());
        assert_eq!(
            session_arg(" 0123456789ABCDEF0123456789abcdef\n").expect("ok"),
            "0123456789abcdef0123456789abcdef"
        );
    }

    #[test]
    fn output_paths_keep_the_prefix() {
        assert_eq!(
            with_extension(Path::new("out/alice.v1"), "pem"),
            PathBuf::from("out/alice.v1.pem")
        );
    }
}
