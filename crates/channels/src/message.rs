//! The message every channel delivers, and address validation per channel kind.
//!
//! A [`Message`] is transport-neutral: a plain-text `subject` and `body` for humans plus a
//! structured `data` payload for machines (webhook receivers). Its `id` is the deduplication
//! key: it is stable across retries and every channel puts it where the receiver can see it
//! (the e-mail `Message-ID`, the `Tally-Message-Id` header), so a receiver can drop a
//! re-delivery.
//!
//! Addresses are validated up front ([`validate_address`]) so the service can refuse a bad
//! address when a user enters it, and so a channel fails a bad address as `Permanent` before any
//! network traffic. Rejected: per-kind address newtypes. Addresses arrive as strings from the
//! database and the API; a newtype would only move the same check to a `TryFrom` while making
//! [`Message`] generic or an enum of four shapes.

use serde::{Deserialize, Serialize};

use crate::ChannelError;

/// Which way a message reaches its recipient. Variants are alphabetical.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// The development inbox, stored in the database by the service crate.
    Dev,
    /// E-mail over SMTP.
    Email,
    /// A sealed message to another operator's node (`POST <peer>/v1/peer/messages`).
    Peer,
    /// Text message through an HTTP SMS gateway.
    Sms,
    /// A signed JSON POST to a URL the recipient registered.
    Webhook,
}

impl ChannelKind {
    /// Every kind, in declaration order.
    pub const ALL: [ChannelKind; 5] = [
        ChannelKind::Dev,
        ChannelKind::Email,
        ChannelKind::Peer,
        ChannelKind::Sms,
        ChannelKind::Webhook,
    ];

    /// The lowercase name used in JSON and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Dev => "dev",
            ChannelKind::Email => "email",
            ChannelKind::Peer => "peer",
            ChannelKind::Sms => "sms",
            ChannelKind::Webhook => "webhook",
        }
    }
}

impl std::fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message to one recipient over one channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Deduplication key, stable across retries (typically the outbox row id). 1 to
    /// [`MESSAGE_ID_LEN_MAX`] printable ASCII characters, no spaces.
    pub id: String,
    /// The channel that must deliver it.
    pub kind: ChannelKind,
    /// E-mail address, E.164 phone number, webhook URL or dev inbox name; see
    /// [`validate_address`].
    pub address: String,
    /// One line for humans (e-mail subject, first line of an SMS).
    pub subject: String,
    /// Plain text for humans.
    pub body: String,
    /// Structured payload for machines, e.g. `{"amount_minor": 1250, "payee": "…"}`.
    #[serde(default)]
    pub data: serde_json::Value,
}

/// The longest accepted [`Message::id`], in bytes.
pub const MESSAGE_ID_LEN_MAX: usize = 256;
/// The longest accepted dev inbox name, in characters.
pub const DEV_ADDRESS_LEN_MAX: usize = 256;
/// The longest accepted webhook URL, in bytes.
pub const WEBHOOK_URL_LEN_MAX: usize = 2048;
/// The longest accepted e-mail address, in bytes (RFC 5321 path limit minus the brackets).
pub const EMAIL_ADDRESS_LEN_MAX: usize = 254;

impl Message {
    /// Checks the id and the address for `kind`; every channel calls this before any I/O.
    pub fn validate(&self) -> Result<(), ChannelError> {
        validate_message_id(&self.id)?;
        validate_address(self.kind, &self.address)
    }
}

/// What the channel learned from the receiver on success.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The receiver's own id for the message when it gave one (SMTP queue reply, SMS gateway
    /// message id).
    pub provider_id: Option<String>,
}

/// The id goes into HTTP headers and e-mail headers verbatim, so it must be header-safe.
pub(crate) fn validate_message_id(id: &str) -> Result<(), ChannelError> {
    if id.is_empty() || id.len() > MESSAGE_ID_LEN_MAX {
        return Err(ChannelError::permanent(format!(
            "message id must be 1 to {MESSAGE_ID_LEN_MAX} bytes"
        )));
    }
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ChannelError::permanent(
            "message id must be printable ASCII without spaces",
        ));
    }
    Ok(())
}

/// Checks that `address` is usable for `kind`; failures are [`ChannelError::Permanent`].
///
/// * `Email`: an address as lettre parses it (`user@domain`, no display name), ≤ 254 bytes.
/// * `Sms`: E.164: `+`, then 8 to 15 digits, the first not `0`.
/// * `Webhook` and `Peer`: an absolute `http` or `https` URL with a host and no user/password, ≤ 2048
///   bytes. Whether the host is public is checked at delivery time by the SSRF guard.
/// * `Dev`: any non-empty string of at most 256 characters.
pub fn validate_address(kind: ChannelKind, address: &str) -> Result<(), ChannelError> {
    match kind {
        ChannelKind::Dev => {
            let chars = address.chars().count();
            if chars == 0 || chars > DEV_ADDRESS_LEN_MAX {
                return Err(ChannelError::permanent(format!(
                    "dev inbox name must be 1 to {DEV_ADDRESS_LEN_MAX} characters"
                )));
            }
            Ok(())
        }
        ChannelKind::Email => {
            if address.len() > EMAIL_ADDRESS_LEN_MAX {
                return Err(ChannelError::permanent("e-mail address too long"));
            }
            address
                .parse::<lettre::Address>()
                .map(|_| ())
                .map_err(|e| ChannelError::permanent(format!("invalid e-mail address: {e}")))
        }
        ChannelKind::Sms => {
            let digits = address
                .strip_prefix('+')
                .ok_or_else(|| ChannelError::permanent("phone number must start with +"))?;
            let ok = (8..=15).contains(&digits.len())
                && digits.bytes().all(|b| b.is_ascii_digit())
                && !digits.starts_with('0');
            if !ok {
                return Err(ChannelError::permanent(
                    "phone number must be E.164: + then 8 to 15 digits, not starting with 0",
                ));
            }
            Ok(())
        }
        ChannelKind::Peer | ChannelKind::Webhook => parse_http_url(address).map(|_| ()),
    }
}

/// Parses an absolute http(s) URL with a host and no credentials.
pub(crate) fn parse_http_url(text: &str) -> Result<reqwest::Url, ChannelError> {
    if text.len() > WEBHOOK_URL_LEN_MAX {
        return Err(ChannelError::permanent("URL too long"));
    }
    let url = reqwest::Url::parse(text)
        .map_err(|e| ChannelError::permanent(format!("invalid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ChannelError::permanent("URL scheme must be http or https"));
    }
    if url.host().is_none() {
        return Err(ChannelError::permanent("URL has no host"));
    }
    // Credentials in a URL end up in logs and proxies; the receiver authenticates us by the
    // signature instead.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ChannelError::permanent(
            "URL must not contain a user name or password",
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_table() {
        use ChannelKind::*;
        let long_dev = "d".repeat(257);
        let max_dev = "ü".repeat(256);
        let cases: &[(ChannelKind, &str, bool)] = &[
            (Email, "alice@example.com", true),
            (Email, "a.b+tag@sub.example.co.uk", true),
            (Email, "Alice <alice@example.com>", false),
            (Email, "alice@", false),
            (Email, "@example.com", false),
            (Email, "alice example.com", false),
            (Email, "", false),
            (Sms, "+4915112345678", true),
            (Sms, "+12025550123", true),
            (Sms, "+12345678", true),
            (Sms, "+123456789012345", true),
            (Sms, "+1234567", false),
            (Sms, "+1234567890123456", false),
            (Sms, "4915112345678", false),
            (Sms, "+49 151 1234567", false),
            (Sms, "+0123456789", false),
            (Sms, "+", false),
            (Webhook, "https://hooks.example.com/tally?x=1", true),
            (Webhook, "http://127.0.0.1:8080/hook", true),
            (Webhook, "ftp://example.com/", false),
            (Webhook, "https://user:pw@example.com/", false),
            (Webhook, "/relative", false),
            (Webhook, "not a url", false),
            (Webhook, "file:///etc/passwd", false),
            (Dev, "alice", true),
            (Dev, &max_dev, true),
            (Dev, "", false),
            (Dev, &long_dev, false),
        ];
        for (kind, address, ok) in cases {
            let got = validate_address(*kind, address);
            assert_eq!(got.is_ok(), *ok, "{kind} {address:?}: {got:?}");
            if let Err(e) = got {
                assert!(e.is_permanent());
            }
        }
    }

    #[test]
    fn message_ids_must_be_header_safe() {
        assert!(validate_message_id("0190f3a2-7c1e-7000-8000-000000000001").is_ok());
        assert!(validate_message_id("").is_err());
        assert!(validate_message_id("a b").is_err());
        assert!(validate_message_id("a\r\nX-Evil: 1").is_err());
        assert!(validate_message_id("ünicode").is_err());
        assert!(validate_message_id(&"x".repeat(257)).is_err());
    }

    #[test]
    fn message_json_round_trip() {
        let msg = Message {
            id: "m1".into(),
            kind: ChannelKind::Webhook,
            address: "https://example.com/h".into(),
            subject: "Paid".into(),
            body: "You paid 12.50 EUR".into(),
            data: serde_json::json!({"amount_minor": 1250}),
        };
        let json = serde_json::to_value(&msg).expect("serialize");
        assert_eq!(json["kind"], "webhook");
        let back: Message = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, msg);
    }
}
