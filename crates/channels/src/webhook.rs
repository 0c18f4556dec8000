//! Webhooks: a signed JSON POST to the URL the recipient registered.
//!
//! The body is `{id, kind, address, subject, body, data, sent_at}` (`sent_at` in RFC 3339).
//! Two headers go with it:
//!
//! * `Tally-Message-Id: <id>`: the deduplication key, identical on every retry.
//! * `Tally-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`, the
//!   scheme Stripe uses. The timestamp is inside the MAC so a captured request cannot be replayed
//!   outside the receiver's tolerance window, and the receiver verifies the raw bytes it got, so
//!   no JSON canonicalisation is involved. The signature is recomputed on every attempt.
//!   [`verify_webhook_signature`] is the receiver's side (constant-time, accepts several `v1`
//!   values so a secret can be rotated).
//!
//! A message may be signed with its receiver's own secret instead of the channel's
//! ([`crate::Channel::deliver_signed`]; pad providers each have one), so one receiver cannot
//! forge what the node sends another.
//!
//! Transport, retries, the SSRF guard and error classification are [`crate::http`]'s.
//! Rejected: asymmetric signatures (Ed25519) — receivers then need our public key and a
//! less common library, for no gain while every receiver already holds a shared secret; and
//! signing only the body (replayable forever).

use hmac::{KeyInit, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use tally_kernel::{Secret, Timestamp};

use crate::http::{HttpConfig, HttpSender, Post};
use crate::message::parse_http_url;
use crate::{Channel, ChannelError, ChannelKind, Delivery, DeliveryFuture, Message};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The header carrying [`Message::id`].
pub const MESSAGE_ID_HEADER: &str = "Tally-Message-Id";
/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "Tally-Signature";
/// A reasonable `tolerance_s` for [`verify_webhook_signature`]: five minutes, as Stripe.
pub const SIGNATURE_TOLERANCE_S_DEFAULT: i64 = 300;

/// Configuration of [`WebhookChannel`].
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The shared signing secret receivers verify with.
    #[serde(deserialize_with = "crate::config::secret_string")]
    pub secret: Secret<String>,
    /// Timeouts, retries, limits, SSRF guard.
    #[serde(default)]
    pub http: HttpConfig,
}

/// Delivers [`ChannelKind::Webhook`] messages.
#[derive(Debug)]
pub struct WebhookChannel {
    sender: HttpSender,
    secret: Secret<String>,
}

/// The JSON body. Field order is fixed by the struct; receivers must not rely on it anyway.
#[derive(Serialize)]
struct Payload<'a> {
    id: &'a str,
    kind: ChannelKind,
    address: &'a str,
    subject: &'a str,
    body: &'a str,
    data: &'a serde_json::Value,
    sent_at: String,
}

impl WebhookChannel {
    /// Builds the channel and its HTTP client. Fails (permanently) on an empty secret.
    pub fn new(config: WebhookConfig) -> Result<Self, ChannelError> {
        if config.secret.expose().is_empty() {
            return Err(ChannelError::permanent("webhook signing secret is empty"));
        }
        Ok(WebhookChannel {
            sender: HttpSender::new(config.http)?,
            secret: config.secret,
        })
    }

    /// The HTTP settings in force.
    pub fn http_config(&self) -> &HttpConfig {
        self.sender.config()
    }

    async fn send(&self, msg: &Message) -> Result<Delivery, ChannelError> {
        self.send_with(msg, &self.secret).await
    }

    async fn send_with(
        &self,
        msg: &Message,
        secret: &Secret<String>,
    ) -> Result<Delivery, ChannelError> {
        if secret.expose().is_empty() {
            return Err(ChannelError::permanent("webhook signing secret is empty"));
        }
        if msg.kind != ChannelKind::Webhook {
            return Err(wrong_kind(ChannelKind::Webhook, msg.kind));
        }
        msg.validate()?;
        let url = parse_http_url(&msg.address)?;
        let payload = Payload {
            id: &msg.id,
            kind: msg.kind,
            address: &msg.address,
            subject: &msg.subject,
            body: &msg.body,
            data: &msg.data,
            sent_at: Timestamp::now().to_rfc3339(),
        };
        let body = serde_json::to_vec(&payload)
            .map_err(|e| ChannelError::permanent(format!("cannot encode webhook body: {e}")))?;
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("tally-message-id"),
            // `validate` has checked the id is printable ASCII, which is always a valid value.
            HeaderValue::from_str(&msg.id)
                .map_err(|_| ChannelError::permanent("message id is not a valid header value"))?,
        );
        let secret = secret.expose().as_bytes();
        let post = Post {
            url: &url,
            content_type: "application/json",
            body,
            headers,
            message_id: &msg.id,
        };
        self.sender
            .post(post, |body| {
                let now_s = Timestamp::now().as_micros().div_euclid(1_000_000);
                let value = sign_webhook(secret, now_s, body)?;
                let mut headers = HeaderMap::new();
                headers.insert(
                    HeaderName::from_static("tally-signature"),
                    HeaderValue::from_str(&value).map_err(|_| {
                        ChannelError::permanent("signature is not a valid header value")
                    })?,
                );
                Ok(headers)
            })
            .await?;
        Ok(Delivery { provider_id: None })
    }
}

impl Channel for WebhookChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Webhook
    }

    fn deliver<'a>(&'a self, msg: &'a Message) -> DeliveryFuture<'a> {
        Box::pin(self.send(msg))
    }

    fn deliver_signed<'a>(
        &'a self,
        msg: &'a Message,
        secret: &'a Secret<String>,
    ) -> DeliveryFuture<'a> {
        Box::pin(self.send_with(msg, secret))
    }
}

pub(crate) fn wrong_kind(channel: ChannelKind, message: ChannelKind) -> ChannelError {
    ChannelError::permanent(format!("{message} message handed to the {channel} channel"))
}

fn mac_for(secret: &[u8], timestamp_s: i64, body: &[u8]) -> Result<HmacSha256, ChannelError> {
    let mut mac = HmacSha256::new_from_slice(secret)
        .map_err(|_| ChannelError::permanent("unusable webhook secret"))?;
    mac.update(timestamp_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(mac)
}

/// The `Tally-Signature` value for `body` sent at `timestamp_s`:
/// `t=<timestamp_s>,v1=<hex HMAC-SHA256(secret, "<timestamp_s>.<body>")>`.
pub fn sign_webhook(secret: &[u8], timestamp_s: i64, body: &[u8]) -> Result<String, ChannelError> {
    let tag = mac_for(secret, timestamp_s, body)?.finalize().into_bytes();
    Ok(format!("t={timestamp_s},v1={}", hex::encode(tag)))
}

/// Checks a `Tally-Signature` header against the raw request body, for webhook receivers.
///
/// Accepts when the header has exactly one `t`, `|now_unix_s - t| <= tolerance_s`, and at least
/// one `v1` equals the HMAC (compared in constant time). Unknown `key=value` parts are ignored
/// so a future scheme can be added alongside `v1`. Every failure is
/// [`ChannelError::Permanent`]; the reason says which check failed but never echoes a MAC.
pub fn verify_webhook_signature(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now_unix_s: i64,
    tolerance_s: i64,
) -> Result<(), ChannelError> {
    let mut timestamp_s: Option<i64> = None;
    let mut candidates: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            return Err(ChannelError::permanent("malformed signature header"));
        };
        match key {
            "t" => {
                if timestamp_s.is_some() {
                    return Err(ChannelError::permanent(
                        "signature header has two timestamps",
                    ));
                }
                let t = value
                    .parse::<i64>()
                    .map_err(|_| ChannelError::permanent("signature timestamp is not a number"))?;
                timestamp_s = Some(t);
            }
            "v1" => {
                // A malformed candidate is skipped, not fatal: another v1 may be the good one.
                if let Ok(tag) = hex::decode(value) {
                    candidates.push(tag);
                }
            }
            _ => {}
        }
    }
    let timestamp_s =
        timestamp_s.ok_or_else(|| ChannelError::permanent("signature header has no timestamp"))?;
    if candidates.is_empty() {
        return Err(ChannelError::permanent(
            "signature header has no v1 signature",
        ));
    }
    if now_unix_s.abs_diff(timestamp_s) > tolerance_s.max(0).unsigned_abs() {
        return Err(ChannelError::permanent(
            "signature timestamp outside the tolerance",
        ));
    }
    let mac = mac_for(secret, timestamp_s, body)?;
    // Every candidate is checked (no early exit on the first match) so the timing does not
    // reveal which one matched.
    let matched = candidates.iter().fold(false, |found, tag| {
        mac.clone().verify_slice(tag).is_ok() | found
    });
    if matched {
        Ok(())
    } else {
        Err(ChannelError::permanent("signature mismatch"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_test";

    #[test]
    fn sign_then_verify() {
        let body = br#"{"id":"m1"}"#;
        let header = sign_webhook(SECRET, 1_700_000_000, body).expect("sign");
        assert!(header.starts_with("t=1700000000,v1="));
        assert_eq!(header.len(), "t=1700000000,v1=".len() + 64);
        verify_webhook_signature(SECRET, &header, body, 1_700_000_000, 300).expect("fresh");
        verify_webhook_signature(SECRET, &header, body, 1_700_000_300, 300).expect("at edge");
        verify_webhook_signature(SECRET, &header, body, 1_699_999_700, 300).expect("clock skew");
    }

    #[test]
    fn known_vector() {
        // HMAC-SHA256(key="key", "1.x"), computed independently with Python's hmac module:
        // hmac.new(b"key", b"1.x", hashlib.sha256).hexdigest()
        let header = sign_webhook(b"key", 1, b"x").expect("sign");
        assert_eq!(
            header,
            "t=1,v1=fc4913c41a7bf793267e2a384f3261c9436ec2cd097bd745e7b0d99113f510ec"
        );
    }

    #[test]
    fn rejections() {
        let body = br#"{"id":"m1"}"#;
        let good = sign_webhook(SECRET, 1000, body).expect("sign");
        let v1 = good.split_once(",v1=").map(|(_, v)| v).expect("v1");
        let cases: Vec<(String, &[u8], i64, &str)> = vec![
            (good.clone(), b"{\"id\":\"m2\"}", 1000, "mismatch"),
            (good.clone(), body, 1301, "tolerance"),
            (good.clone(), body, 699, "tolerance"),
            (format!("v1={v1}"), body, 1000, "no timestamp"),
            ("t=1000".to_owned(), body, 1000, "no v1"),
            (
                format!("t=1000,t=1000,v1={v1}"),
                body,
                1000,
                "two timestamps",
            ),
            (format!("t=abc,v1={v1}"), body, 1000, "not a number"),
            ("t=1000,v1=zz".to_owned(), body, 1000, "no v1"),
            ("garbage".to_owned(), body, 1000, "malformed"),
            (format!("t=1001,v1={v1}"), body, 1000, "mismatch"),
        ];
        for (header, body, now, want) in cases {
            let err = verify_webhook_signature(SECRET, &header, body, now, 300).expect_err(&header);
            assert!(err.is_permanent());
            assert!(err.reason().contains(want), "{header}: {err}");
        }
        let err = verify_webhook_signature(b"other", &good, body, 1000, 300).expect_err("key");
        assert!(err.reason().contains("mismatch"));
    }

    #[test]
    fn accepts_any_of_several_v1_for_rotation() {
        let body = b"payload";
        let old = sign_webhook(b"old-secret", 5, body).expect("sign");
        let new = sign_webhook(b"new-secret", 5, body).expect("sign");
        let new_v1 = new.split_once(",v1=").map(|(_, v)| v).expect("v1");
        let both = format!("{old},v1={new_v1},v0=ignored");
        verify_webhook_signature(b"old-secret", &both, body, 5, 300).expect("old");
        verify_webhook_signature(b"new-secret", &both, body, 5, 300).expect("new");
        assert!(verify_webhook_signature(b"third", &both, body, 5, 300).is_err());
    }
}
