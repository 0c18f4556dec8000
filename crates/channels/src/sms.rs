//! SMS through a generic HTTP gateway: POST `{to, from, text}` with a bearer token.
//!
//! Most SMS providers (and self-hosted gateways such as an Android phone running a gateway app)
//! accept "POST these three fields with an API token"; the differences are the URL, the
//! encoding (JSON or form) and the name of the id in the response. So one adapter with a
//! [`SmsFormat`] switch covers them, and the provider's id is read from the first of `id`,
//! `message_id`, `messageId`, `sid` in a JSON response.
//!
//! The text is `subject + "\n" + body`, cut to `max_text_chars` characters (default 612 = four
//! concatenated 153-character GSM-7 segments); cutting counts `char`s, so it never splits a
//! UTF-8 sequence. Transport, retries, the SSRF guard and error classification are
//! [`crate::http`]'s, exactly as for webhooks.
//!
//! Rejected: one adapter per provider (Twilio, Vonage, …): each is a vendor SDK's worth of
//! quirks; an operator who needs one puts a small translating proxy behind this adapter.

use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use tally_kernel::Secret;

use crate::http::{HttpConfig, HttpSender, Post};
use crate::message::parse_http_url;
use crate::webhook::wrong_kind;
use crate::{Channel, ChannelError, ChannelKind, Delivery, DeliveryFuture, Message};

/// Default [`SmsGatewayConfig::max_text_chars`]: four concatenated GSM-7 segments.
pub const SMS_TEXT_CHARS_MAX_DEFAULT: usize = 612;

/// How the three fields are encoded. Variants are alphabetical.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmsFormat {
    /// `application/x-www-form-urlencoded`.
    Form,
    /// `application/json` (the default).
    #[default]
    Json,
}

/// Configuration of [`SmsGatewayChannel`].
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsGatewayConfig {
    /// The gateway's send endpoint.
    pub url: String,
    /// Sent as `Authorization: Bearer <token>`.
    #[serde(deserialize_with = "crate::config::secret_string")]
    pub token: Secret<String>,
    /// Sender id or number, as the gateway expects it.
    pub from: String,
    /// Body encoding; default JSON.
    #[serde(default)]
    pub format: SmsFormat,
    /// Longest text sent, in characters; default [`SMS_TEXT_CHARS_MAX_DEFAULT`].
    #[serde(default = "default_max_text_chars")]
    pub max_text_chars: usize,
    /// Timeouts, retries, limits, SSRF guard.
    #[serde(default)]
    pub http: HttpConfig,
}

fn default_max_text_chars() -> usize {
    SMS_TEXT_CHARS_MAX_DEFAULT
}

/// Delivers [`ChannelKind::Sms`] messages through the configured gateway.
#[derive(Debug)]
pub struct SmsGatewayChannel {
    sender: HttpSender,
    url: Url,
    token: Secret<String>,
    from: String,
    format: SmsFormat,
    max_text_chars: usize,
}

#[derive(Serialize)]
struct Fields<'a> {
    to: &'a str,
    from: &'a str,
    text: &'a str,
}

impl SmsGatewayChannel {
    /// Builds the channel; fails (permanently) on a bad URL, an empty token or a zero limit.
    pub fn new(config: SmsGatewayConfig) -> Result<Self, ChannelError> {
        let url = parse_http_url(&config.url)
            .map_err(|e| ChannelError::permanent(format!("SMS gateway URL: {}", e.reason())))?;
        if config.token.expose().is_empty() {
            return Err(ChannelError::permanent("SMS gateway token is empty"));
        }
        // Checked here so a token with a newline fails at startup, not on every message.
        bearer(&config.token)?;
        if config.max_text_chars == 0 {
            return Err(ChannelError::permanent(
                "SMS max_text_chars must be positive",
            ));
        }
        Ok(SmsGatewayChannel {
            sender: HttpSender::new(config.http)?,
            url,
            token: config.token,
            from: config.from,
            format: config.format,
            max_text_chars: config.max_text_chars,
        })
    }

    /// The HTTP settings in force.
    pub fn http_config(&self) -> &HttpConfig {
        self.sender.config()
    }

    async fn send(&self, msg: &Message) -> Result<Delivery, ChannelError> {
        if msg.kind != ChannelKind::Sms {
            return Err(wrong_kind(ChannelKind::Sms, msg.kind));
        }
        msg.validate()?;
        let text = sms_text(&msg.subject, &msg.body, self.max_text_chars);
        let fields = Fields {
            to: &msg.address,
            from: &self.from,
            text: &text,
        };
        let (content_type, body) = match self.format {
            SmsFormat::Json => (
                "application/json",
                serde_json::to_vec(&fields)
                    .map_err(|e| ChannelError::permanent(format!("cannot encode SMS: {e}")))?,
            ),
            SmsFormat::Form => (
                "application/x-www-form-urlencoded",
                form_encode(&[
                    ("to", fields.to),
                    ("from", fields.from),
                    ("text", fields.text),
                ])
                .into_bytes(),
            ),
        };
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, bearer(&self.token)?);
        let post = Post {
            url: &self.url,
            content_type,
            body,
            headers,
            message_id: &msg.id,
        };
        let reply = self.sender.post(post, |_| Ok(HeaderMap::new())).await?;
        Ok(Delivery {
            provider_id: provider_id(&reply.body),
        })
    }
}

impl Channel for SmsGatewayChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Sms
    }

    fn deliver<'a>(&'a self, msg: &'a Message) -> DeliveryFuture<'a> {
        Box::pin(self.send(msg))
    }
}

/// `Bearer <token>`, marked sensitive so hyper neither logs nor HPACK-indexes it.
fn bearer(token: &Secret<String>) -> Result<HeaderValue, ChannelError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
        .map_err(|_| ChannelError::permanent("SMS gateway token is not a valid header value"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// `subject + "\n" + body` (just `body` when the subject is empty), cut to at most `max_chars`
/// characters.
pub fn sms_text(subject: &str, body: &str, max_chars: usize) -> String {
    let full = if subject.is_empty() {
        body.to_owned()
    } else {
        format!("{subject}\n{body}")
    };
    match full.char_indices().nth(max_chars) {
        Some((cut, _)) => full[..cut].to_owned(),
        None => full,
    }
}

/// `application/x-www-form-urlencoded` per the WHATWG URL standard: `*-._` and alphanumerics
/// stay, space becomes `+`, every other byte of the UTF-8 encoding becomes `%XX`.
fn form_encode(pairs: &[(&str, &str)]) -> String {
    fn push_encoded(out: &mut String, text: &str) {
        for byte in text.bytes() {
            match byte {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                    out.push(char::from(byte));
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{byte:02X}")),
            }
        }
    }
    let mut out = String::new();
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        push_encoded(&mut out, key);
        out.push('=');
        push_encoded(&mut out, value);
    }
    out
}

/// The gateway's message id, when the (capped) response is JSON with a known id field.
fn provider_id(body: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    ["id", "message_id", "messageId", "sid"]
        .iter()
        .find_map(|key| match json.get(key)? {
            serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .map(|id| id.chars().take(256).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_subject_newline_body_cut_on_char_boundaries() {
        assert_eq!(sms_text("Code", "123456", 612), "Code\n123456");
        assert_eq!(sms_text("", "only body", 612), "only body");
        assert_eq!(sms_text("abc", "def", 5), "abc\nd");
        assert_eq!(sms_text("abc", "def", 7), "abc\ndef");
        // Multi-byte characters: cut after 3 characters, never inside one.
        assert_eq!(sms_text("€€", "€€", 3), "€€\n");
        assert_eq!(sms_text("😀😀😀", "", 2), "😀😀");
        let long = "ü".repeat(1000);
        let cut = sms_text("", &long, SMS_TEXT_CHARS_MAX_DEFAULT);
        assert_eq!(cut.chars().count(), 612);
        assert_eq!(cut.len(), 1224);
    }

    #[test]
    fn form_encoding() {
        assert_eq!(
            form_encode(&[("to", "+4915112345678"), ("text", "Hi there\nü&=")]),
            "to=%2B4915112345678&text=Hi+there%0A%C3%BC%26%3D"
        );
    }

    #[test]
    fn provider_id_fields() {
        assert_eq!(provider_id(br#"{"id":"abc"}"#).as_deref(), Some("abc"));
        assert_eq!(provider_id(br#"{"message_id":42}"#).as_deref(), Some("42"));
        assert_eq!(
            provider_id(br#"{"messageId":"x","sid":"y"}"#).as_deref(),
            Some("x")
        );
        assert_eq!(provider_id(br#"{"sid":"SM1"}"#).as_deref(), Some("SM1"));
        assert_eq!(provider_id(br#"{"status":"queued"}"#), None);
        assert_eq!(provider_id(b"OK"), None);
        assert_eq!(provider_id(b""), None);
    }
}
