//! What the delivery commands share: checks of their arguments (all made before the first
//! request, so a typo fails fast with the flag's name), hex, and progress bars for streams of
//! any size.

use anyhow::{Context, anyhow, bail};
use std::io::{Read, Write};
use std::path::Path;
use tally_kernel::crypto::VerifyingKey;
use tally_kernel::{Amount, Id, Secret, Timestamp};

use crate::client::parse_id;

/// An id (a UUID), checked locally.
pub(super) fn id_arg(what: &str, text: &str) -> anyhow::Result<Id> {
    parse_id(what, text).map(Id)
}

/// A positive amount with its currency.
pub(super) fn amount_arg(flag: &str, text: &str) -> anyhow::Result<Amount> {
    let amount = text
        .parse::<Amount>()
        .with_context(|| format!("{flag} {text:?}: expected an amount like \"9.90 EUR\""))?;
    if amount.minor <= 0 {
        bail!("{flag} {text:?}: must be positive");
    }
    Ok(amount)
}

/// `--trust NODE_KEY_HEX`: the node key a package must be signed by.
pub(super) fn trust_arg(text: &Option<String>) -> anyhow::Result<Option<VerifyingKey>> {
    match text {
        Some(t) => Ok(Some(
            VerifyingKey::from_hex(t.trim()).map_err(|e| anyhow!("--trust {t:?}: {e}"))?,
        )),
        None => Ok(None),
    }
}

/// A 32-byte unlock key in hex.
pub(super) fn key_arg(text: &str) -> anyhow::Result<Secret<[u8; 32]>> {
    let bytes = Secret::new(unhex(text.trim()).unwrap_or_default());
    let key: [u8; 32] = bytes
        .expose()
        .as_slice()
        .try_into()
        .map_err(|_| anyhow!("an unlock key is 64 hex digits"))?;
    Ok(Secret::new(key))
}

/// A UTF-8 file given with `flag`.
pub(super) fn read_text(flag: &str, path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{flag} {}", path.display()))
}

/// A time the node may not have set yet; `-` when it has not.
pub(super) fn when(t: Option<Timestamp>) -> String {
    t.map_or_else(|| "-".to_string(), |t| t.to_string())
}

/// Text the node may leave empty (an unpaid amount); `-` when it does.
pub(super) fn or_dash(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}

/// A byte-counting progress bar on stderr, hidden when stderr is not a terminal.
pub(super) fn bytes_bar(len: u64, message: String) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    let target = if std::io::stderr().is_terminal() {
        indicatif::ProgressDrawTarget::stderr()
    } else {
        indicatif::ProgressDrawTarget::hidden()
    };
    let bar = indicatif::ProgressBar::with_draw_target(Some(len), target);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:24} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} ({eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message);
    bar
}

/// A reader that moves a progress bar by what it reads.
pub(super) struct ProgressReader<R> {
    pub(super) inner: R,
    pub(super) bar: indicatif::ProgressBar,
}

impl<R: Read> Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// A writer that moves a progress bar by what it writes.
pub(super) struct ProgressWriter<W> {
    pub(super) inner: W,
    pub(super) bar: indicatif::ProgressBar,
}

impl<W: Write> Write for ProgressWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Lower-case hex.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_keys_need_32_bytes() {
        assert_eq!(hex(&[0, 171, 255]), "00abff");
        assert_eq!(unhex("00ABff"), Some(vec![0, 171, 255]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
        assert!(key_arg(&"11".repeat(32)).is_ok());
        assert!(key_arg(&"11".repeat(31)).is_err());
    }

    #[test]
    fn amounts_must_be_positive_with_a_currency() {
        assert_eq!(amount_arg("--price", "9.90 EUR").expect("ok").minor, 990);
        for bad in ["9.90", "0.00 EUR", "-1.00 EUR", "9.999 EUR"] {
            assert!(amount_arg("--price", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unset_times_and_empty_amounts_show_a_dash() {
        assert_eq!(when(None), "-");
        assert_eq!(when(Some(Timestamp(0))), Timestamp(0).to_rfc3339());
        assert_eq!(or_dash(""), "-");
        assert_eq!(or_dash("9.90 EUR"), "9.90 EUR");
    }

    #[test]
    fn ids_are_checked_locally() {
        let id = Id::new().to_string();
        assert_eq!(
            id_arg("sale", &format!(" {id} ")).expect("id").to_string(),
            id
        );
        assert!(id_arg("sale", "not-an-id").is_err());
    }
}
