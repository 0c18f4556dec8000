//! `ChannelError`: every delivery failure is either worth retrying later or not.
//!
//! The outbox worker needs exactly one decision from a failed delivery: retry with backoff, or
//! give up and mark the message dead. So the error has two variants and each carries a
//! human-readable reason (already stripped of URLs and secrets, safe to log and to store).
//!
//! Rejected: a fine-grained enum (`Connect`, `Timeout`, `Status(u16)`, `Smtp(..)`, …). Callers
//! would have to re-derive the retry decision from it, and every new transport would add
//! variants the worker must learn about; the classification belongs next to the transport that
//! understands its own failure modes.

/// Why a message was not delivered, split by what the caller should do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// Retrying cannot help: bad address, 4xx from the receiver, refused by the SSRF guard,
    /// message too large, invalid configuration, wrong channel kind. Give up.
    #[error("permanent delivery failure: {0}")]
    Permanent(String),
    /// The receiver or the network is unwell: connection refused, timeout, 5xx, 408, 429, SMTP
    /// 4xx. Retry later with backoff.
    #[error("transient delivery failure: {0}")]
    Transient(String),
}

impl ChannelError {
    /// `true` when the outbox should try again later.
    pub fn is_transient(&self) -> bool {
        matches!(self, ChannelError::Transient(_))
    }

    /// `true` when the outbox should give up on the message.
    pub fn is_permanent(&self) -> bool {
        matches!(self, ChannelError::Permanent(_))
    }

    /// The reason, without the "transient/permanent" prefix.
    pub fn reason(&self) -> &str {
        match self {
            ChannelError::Permanent(reason) | ChannelError::Transient(reason) => reason,
        }
    }

    pub(crate) fn permanent(reason: impl Into<String>) -> Self {
        ChannelError::Permanent(reason.into())
    }
}

/// `err` and all its sources joined with ": ", the way `anyhow` prints `{:#}`.
///
/// Library errors often say only "error sending request" at the top and put the useful part
/// ("connection refused") several sources down.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let part = inner.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_what_to_do() {
        let t = ChannelError::Transient("connection refused".into());
        let p = ChannelError::permanent("bad address");
        assert!(t.is_transient() && !t.is_permanent());
        assert!(p.is_permanent() && !p.is_transient());
        assert_eq!(t.reason(), "connection refused");
        assert_eq!(p.to_string(), "permanent delivery failure: bad address");
    }

    #[test]
    fn error_chain_includes_sources_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        #[derive(Debug, thiserror::Error)]
        #[error("connect failed")]
        struct Outer(#[source] std::io::Error);
        assert_eq!(error_chain(&Outer(io)), "connect failed: refused");
    }
}
