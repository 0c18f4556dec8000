//! How messages reach people: e-mail over SMTP, signed HTTP webhooks and an HTTP SMS gateway,
//! behind one [`Channel`] trait and routed by a [`ChannelSet`].
//!
//! The outbox worker (in the service crate) hands each [`Message`] to [`ChannelSet::deliver`]
//! and acts on the answer: [`Delivery`] marks it sent; [`ChannelError::Transient`] means try
//! again later with backoff; [`ChannelError::Permanent`] means give up. Every channel makes
//! that classification itself, because only it knows whether an SMTP `452` or an HTTP `429`
//! is worth waiting for. The message `id` is the deduplication key and reaches the receiver
//! unchanged on every retry (e-mail `Message-ID`, `Tally-Message-Id` header), since
//! at-least-once delivery is all any of these transports offers.
//!
//! * [`message`]: [`Message`], [`ChannelKind`], [`Delivery`], [`validate_address`].
//! * [`smtp`]: [`SmtpChannel`] on lettre's pooled async transport.
//! * [`webhook`]: [`WebhookChannel`], Stripe-style `Tally-Signature`, and
//!   [`verify_webhook_signature`] for receivers.
//! * [`sms`]: [`SmsGatewayChannel`], a generic bearer-token HTTP gateway.
//! * [`peer`]: [`PeerChannel`], sealed messages to other operators' nodes.
//! * [`http`]: the outgoing-HTTP core both HTTP channels share: bounded retries, no redirects,
//!   capped responses, error classification.
//! * [`guard`]: the SSRF guard (a filtering DNS resolver plus a literal-IP check).
//! * [`config`]: [`ChannelsConfig`], deserialised from the server configuration.
//!
//! Key decision: the trait returns a boxed future (`Pin<Box<dyn Future + Send>>`) rather than
//! using `async fn` in the trait, so `Arc<dyn Channel>` works without the `async-trait` macro.
//! Rejected: a development inbox here (it lives in the database, so the service crate owns it
//! and registers it with [`ChannelSet::insert`]), and depending on the kernel's crypto module
//! for HMAC (webhook signing is three calls into `hmac` + `sha2`).
//!
//! Secrets (SMTP password, webhook secret, gateway token) stay in
//! [`Secret`](tally_kernel::Secret) and are never logged; error texts never contain URLs
//! (which may carry tokens) and log lines name messages by id only, never by address.

pub mod config;
mod error;
pub mod guard;
pub mod http;
pub mod message;
pub mod peer;
mod set;
pub mod sms;
pub mod smtp;
pub mod webhook;

use std::future::Future;
use std::pin::Pin;

pub use config::ChannelsConfig;
pub use error::ChannelError;
pub use guard::{GuardedResolver, is_public_ip};
pub use http::HttpConfig;
pub use message::{ChannelKind, Delivery, Message, validate_address};
pub use peer::PeerChannel;
pub use set::ChannelSet;
pub use sms::{SmsFormat, SmsGatewayChannel, SmsGatewayConfig, sms_text};
pub use smtp::{SmtpChannel, SmtpConfig, SmtpTls, email_message_id};
pub use webhook::{WebhookChannel, WebhookConfig, sign_webhook, verify_webhook_signature};

/// The future [`Channel::deliver`] returns.
pub type DeliveryFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Delivery, ChannelError>> + Send + 'a>>;

/// A way to deliver messages of one [`ChannelKind`]. Object-safe: use as `Arc<dyn Channel>`.
pub trait Channel: Send + Sync {
    /// The kind of message this channel delivers.
    fn kind(&self) -> ChannelKind;

    /// Delivers one message. Implementations check `msg.kind` and the address first and fail
    /// permanently on a mismatch, before any I/O. A call may retry internally a bounded number
    /// of times; the caller owns long-term retries.
    fn deliver<'a>(&'a self, msg: &'a Message) -> DeliveryFuture<'a>;

    /// Delivers one message signed with `secret` instead of the channel's own, where the
    /// channel signs (webhooks: a receiver with a secret of its own, such as a pad provider).
    /// Channels that sign nothing deliver it as [`Channel::deliver`] does.
    fn deliver_signed<'a>(
        &'a self,
        msg: &'a Message,
        secret: &'a tally_kernel::Secret<String>,
    ) -> DeliveryFuture<'a> {
        let _ = secret;
        self.deliver(msg)
    }
}
