//! Federation: the operator's peer nodes, and the route other nodes send sealed messages to.

use crate::{Call, Client, Error, seg};
use bytes::Bytes;
use reqwest::Method;
use tally_wire::federation::{AddPeerRequest, PeerMessageTaken, PeerView, PingQueued};

impl Client {
    /// `POST /v1/peers` (operator): add a peer node, or change its name or URL.
    pub async fn peer_add(&self, req: &AddPeerRequest) -> Result<PeerView, Error> {
        Ok(self
            .send(Method::POST, "/v1/peers".to_string(), req, None)
            .await?
            .value)
    }

    /// `GET /v1/peers` (operator): the peers and the traffic with each.
    pub async fn peers(&self) -> Result<Vec<PeerView>, Error> {
        self.get("/v1/peers".to_string()).await
    }

    /// `GET /v1/peers/{peer}` (operator): one peer, by node id or name.
    pub async fn peer(&self, peer: &str) -> Result<PeerView, Error> {
        self.get(format!("/v1/peers/{}", seg(peer))).await
    }

    /// `POST /v1/peers/{peer}/ping` (operator): a `ping` queued for the peer.
    pub async fn peer_ping(&self, peer: &str) -> Result<PingQueued, Error> {
        let call = Call::new(Method::POST, format!("/v1/peers/{}/ping", seg(peer)));
        Ok(self.call(call).await?.value)
    }

    /// `POST /v1/peer/messages`: a sealed message, as a peer node sends it (`sealed` exactly
    /// as signed). Taking an id twice applies it once, so it is safe to retry.
    pub async fn peer_message(&self, sealed: Vec<u8>) -> Result<PeerMessageTaken, Error> {
        let mut call = Call::new(Method::POST, "/v1/peer/messages".to_string())
            .raw("application/json", Bytes::from(sealed));
        call.once_only = true;
        Ok(self.call(call).await?.value)
    }
}
