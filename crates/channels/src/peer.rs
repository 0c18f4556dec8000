//! Messages to other operators' nodes: the body is a sealed envelope (signed by the service
//! with the node key before it gets here), POSTed as it is to the peer's
//! `/v1/peer/messages`. The receiver authenticates it by its signature, so nothing is added
//! here but the `Tally-Message-Id` header.
//!
//! Peer URLs are set by the operator (`tally federation add-peer`), never by a user, so the
//! SSRF guard is off: operators often peer over private networks. One attempt per call: the
//! outbox worker retries a peer for up to a week, and wakes its messages when it is heard
//! from again.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::http::{HttpConfig, HttpSender, Post};
use crate::message::parse_http_url;
use crate::webhook::wrong_kind;
use crate::{Channel, ChannelError, ChannelKind, Delivery, DeliveryFuture, Message};

/// The path a peer receives messages on, under its base URL.
pub const PEER_MESSAGES_PATH: &str = "/v1/peer/messages";

/// Delivers [`ChannelKind::Peer`] messages; the address is the peer's message URL.
#[derive(Clone, Debug)]
pub struct PeerChannel {
    sender: HttpSender,
}

impl PeerChannel {
    /// A channel with the default timeouts, one attempt per call, private addresses allowed.
    pub fn new() -> Result<Self, ChannelError> {
        Ok(PeerChannel {
            sender: HttpSender::new(HttpConfig {
                max_attempts: 1,
                allow_private_addresses: true,
                ..HttpConfig::default()
            })?,
        })
    }

    async fn send(&self, msg: &Message) -> Result<Delivery, ChannelError> {
        if msg.kind != ChannelKind::Peer {
            return Err(wrong_kind(ChannelKind::Peer, msg.kind));
        }
        msg.validate()?;
        let url = parse_http_url(&msg.address)?;
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("tally-message-id"),
            HeaderValue::from_str(&msg.id)
                .map_err(|_| ChannelError::permanent("message id is not a valid header value"))?,
        );
        let post = Post {
            url: &url,
            content_type: "application/json",
            body: msg.body.as_bytes().to_vec(),
            headers,
            message_id: &msg.id,
        };
        self.sender.post(post, |_| Ok(HeaderMap::new())).await?;
        Ok(Delivery { provider_id: None })
    }
}

impl Channel for PeerChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Peer
    }

    fn deliver<'a>(&'a self, msg: &'a Message) -> DeliveryFuture<'a> {
        Box::pin(self.send(msg))
    }
}
