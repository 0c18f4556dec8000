//! `ChannelSet`: the one object the outbox worker holds, routing each message by its kind.
//!
//! A plain map from [`ChannelKind`] to `Arc<dyn Channel>`, at most one channel per kind. The set
//! is cheap to clone (it clones `Arc`s) and is built once at startup, by
//! [`ChannelsConfig::build`](crate::ChannelsConfig::build) plus whatever the service adds (the
//! dev inbox). Rejected: several channels per kind with fail-over. Nothing needs it yet, and it
//! would make "which SMTP relay sent this?" a question.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{Channel, ChannelError, ChannelKind, Delivery, Message};

/// Kind → channel. See the module docs.
#[derive(Clone, Default)]
pub struct ChannelSet {
    channels: BTreeMap<ChannelKind, Arc<dyn Channel>>,
}

impl std::fmt::Debug for ChannelSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.channels.keys()).finish()
    }
}

impl ChannelSet {
    /// An empty set: every delivery fails permanently.
    pub fn new() -> Self {
        ChannelSet::default()
    }

    /// Adds `channel` under its own [`Channel::kind`], returning the one it replaces.
    pub fn insert(&mut self, channel: Arc<dyn Channel>) -> Option<Arc<dyn Channel>> {
        self.channels.insert(channel.kind(), channel)
    }

    /// Builder-style [`ChannelSet::insert`].
    pub fn with(mut self, channel: Arc<dyn Channel>) -> Self {
        self.insert(channel);
        self
    }

    /// The channel for `kind`, if configured.
    pub fn channel(&self, kind: ChannelKind) -> Option<&Arc<dyn Channel>> {
        self.channels.get(&kind)
    }

    /// The configured kinds, in [`ChannelKind`] order.
    pub fn kinds(&self) -> impl Iterator<Item = ChannelKind> + '_ {
        self.channels.keys().copied()
    }

    /// Delivers `msg` through the channel for `msg.kind`. A bad id or address, or a kind with
    /// no channel, fails permanently before any I/O.
    pub async fn deliver(&self, msg: &Message) -> Result<Delivery, ChannelError> {
        self.channel_for(msg)?.deliver(msg).await
    }

    /// Delivers `msg` signed with `secret` (a receiver's own) where its channel signs.
    pub async fn deliver_signed(
        &self,
        msg: &Message,
        secret: &tally_kernel::Secret<String>,
    ) -> Result<Delivery, ChannelError> {
        self.channel_for(msg)?.deliver_signed(msg, secret).await
    }

    fn channel_for(&self, msg: &Message) -> Result<&std::sync::Arc<dyn Channel>, ChannelError> {
        msg.validate()?;
        self.channels.get(&msg.kind).ok_or_else(|| {
            ChannelError::Permanent(format!("no channel configured for kind {}", msg.kind))
        })
    }
}
