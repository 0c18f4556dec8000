//! `ChannelsConfig`: the `[channels]` section of the server configuration, turned into a
//! [`ChannelSet`].
//!
//! Every section is optional and absent means "this kind is not configured": messages of that
//! kind then fail permanently in [`ChannelSet::deliver`], which the outbox records, instead of
//! the server refusing to start. Unknown keys are rejected so a typo (`webook`) is an error at
//! startup, not a silently missing channel. Secrets are read straight into
//! [`Secret`], which has no `Deserialize` of its own on purpose; the two
//! `deserialize_with` helpers below are the only way in.
//!
//! Rejected: configuring the dev inbox here. It is stored in the database, so the service crate
//! builds it and adds it with [`ChannelSet::insert`].

use serde::{Deserialize, Deserializer};
use tally_kernel::Secret;

use crate::{
    ChannelError, ChannelSet, SmsGatewayChannel, SmsGatewayConfig, SmtpChannel, SmtpConfig,
    WebhookChannel, WebhookConfig,
};
use std::sync::Arc;

/// Which channels exist and how they reach the outside world. All sections are optional.
///
/// ```json
/// {
///   "smtp": {"host": "smtp.example", "tls": "start_tls", "username": "tally",
///            "password": "…", "from": "Tally <noreply@shop.example>"},
///   "webhook": {"secret": "…", "http": {"timeout_ms": 5000}},
///   "sms": {"url": "https://sms.example/send", "token": "…", "from": "Tally", "format": "form"}
/// }
/// ```
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelsConfig {
    /// E-mail over SMTP.
    pub smtp: Option<SmtpConfig>,
    /// Signed webhooks.
    pub webhook: Option<WebhookConfig>,
    /// The HTTP SMS gateway.
    pub sms: Option<SmsGatewayConfig>,
}

impl ChannelsConfig {
    /// Builds a [`ChannelSet`] with one channel per configured section. Must be called inside a
    /// Tokio runtime when SMTP is configured (see [`SmtpChannel::new`]). A bad section fails the
    /// whole build ([`ChannelError::Permanent`] naming the section).
    pub fn build(&self) -> Result<ChannelSet, ChannelError> {
        let mut set = ChannelSet::new();
        if let Some(smtp) = &self.smtp {
            let channel = SmtpChannel::new(smtp.clone()).map_err(|e| section("smtp", &e))?;
            set.insert(Arc::new(channel));
        }
        if let Some(webhook) = &self.webhook {
            let channel =
                WebhookChannel::new(webhook.clone()).map_err(|e| section("webhook", &e))?;
            set.insert(Arc::new(channel));
        }
        if let Some(sms) = &self.sms {
            let channel = SmsGatewayChannel::new(sms.clone()).map_err(|e| section("sms", &e))?;
            set.insert(Arc::new(channel));
        }
        Ok(set)
    }
}

fn section(name: &str, err: &ChannelError) -> ChannelError {
    ChannelError::Permanent(format!("channels.{name}: {}", err.reason()))
}

/// `deserialize_with` for `Secret<String>` fields.
pub(crate) fn secret_string<'de, D: Deserializer<'de>>(d: D) -> Result<Secret<String>, D::Error> {
    String::deserialize(d).map(Secret::new)
}

/// `deserialize_with` for `Option<Secret<String>>` fields.
pub(crate) fn optional_secret_string<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Secret<String>>, D::Error> {
    Option::<String>::deserialize(d).map(|s| s.map(Secret::new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChannelKind, HttpConfig, SmsFormat, SmtpTls};

    #[test]
    fn empty_config_is_valid_and_builds_nothing() {
        let config: ChannelsConfig = serde_json::from_str("{}").expect("parse");
        assert!(config.smtp.is_none() && config.webhook.is_none() && config.sms.is_none());
        let set = config.build().expect("build");
        assert_eq!(set.kinds().count(), 0);
    }

    #[tokio::test]
    async fn full_config_with_defaults() {
        let json = r#"{
            "smtp": {"host": "smtp.example", "username": "u", "password": "smtp-pw",
                     "from": "Tally <noreply@shop.example>"},
            "webhook": {"secret": "whsec", "http": {"max_attempts": 5}},
            "sms": {"url": "https://sms.example/send", "token": "tok", "from": "Tally",
                    "format": "form"}
        }"#;
        let config: ChannelsConfig = serde_json::from_str(json).expect("parse");
        let smtp = config.smtp.as_ref().expect("smtp");
        assert_eq!(smtp.tls, SmtpTls::StartTls);
        assert_eq!(smtp.port, None);
        assert_eq!(smtp.timeout_ms, 10_000);
        assert_eq!(
            smtp.password.as_ref().map(|p| p.expose().as_str()),
            Some("smtp-pw")
        );
        let webhook = config.webhook.as_ref().expect("webhook");
        assert_eq!(webhook.http.max_attempts, 5);
        assert_eq!(webhook.http.timeout_ms, HttpConfig::default().timeout_ms);
        assert!(!webhook.http.allow_private_addresses);
        let sms = config.sms.as_ref().expect("sms");
        assert_eq!(sms.format, SmsFormat::Form);
        assert_eq!(sms.max_text_chars, 612);

        let printed = format!("{config:?}");
        for secret in ["smtp-pw", "whsec", "\"tok\""] {
            assert!(!printed.contains(secret), "{secret} leaked into {printed}");
        }

        let set = config.build().expect("build");
        assert_eq!(
            set.kinds().collect::<Vec<_>>(),
            vec![ChannelKind::Email, ChannelKind::Sms, ChannelKind::Webhook]
        );
    }

    #[test]
    fn typos_and_bad_sections_are_errors() {
        assert!(serde_json::from_str::<ChannelsConfig>(r#"{"webook": {}}"#).is_err());
        assert!(
            serde_json::from_str::<ChannelsConfig>(r#"{"webhook": {"secret": "s", "htp": {}}}"#)
                .is_err()
        );
        let config: ChannelsConfig =
            serde_json::from_str(r#"{"sms": {"url": "ftp://x", "token": "t", "from": "f"}}"#)
                .expect("parse");
        let err = config.build().expect_err("bad url");
        assert!(err.is_permanent());
        assert!(err.reason().starts_with("channels.sms: "), "{err}");
        let config: ChannelsConfig =
            serde_json::from_str(r#"{"webhook": {"secret": ""}}"#).expect("parse");
        assert!(config.build().is_err());
    }
}
