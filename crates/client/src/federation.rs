//! Federation: the operator's peer nodes, and the route other nodes send sealed messages to.

use crate::{Answer, query};
use crate::{Call, Client, Error, seg};
use bytes::Bytes;
use reqwest::Method;
use tally_wire::federation::{
    AddPeerRequest, AgentKeyRequest, BillingRecordView, ClearingLine, FxPublishRequest,
    FxTableView, MerchantAnswer, OpenTradingSession, PeerMessageTaken, PeerView, PingQueued,
    SessionMerchantRequest, SessionMerchantView, TradingSessionView,
};

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

    /// `POST /v1/trading-sessions`: open a trading session (held until the merchant's
    /// operator answers). A retry with the same key is the same session.
    pub async fn trading_session_open(
        &self,
        req: &OpenTradingSession,
        key: &str,
    ) -> Result<Answer<TradingSessionView>, Error> {
        self.send(
            Method::POST,
            "/v1/trading-sessions".to_string(),
            req,
            Some(key),
        )
        .await
    }

    /// `GET /v1/trading-sessions/{session}`.
    pub async fn trading_session(&self, session: &str) -> Result<TradingSessionView, Error> {
        self.get(format!("/v1/trading-sessions/{}", seg(session)))
            .await
    }

    /// `GET /v1/trading-sessions[?owner=]`: the caller's sessions, newest first.
    pub async fn trading_sessions(
        &self,
        owner: Option<&str>,
    ) -> Result<Vec<TradingSessionView>, Error> {
        let q = query(&[("owner", owner.map(str::to_string))]);
        self.get(format!("/v1/trading-sessions{q}")).await
    }

    /// `POST /v1/trading-sessions/{session}/answer` (the merchant): take or decline it.
    pub async fn trading_session_answer(
        &self,
        session: &str,
        accept: bool,
    ) -> Result<TradingSessionView, Error> {
        let path = format!("/v1/trading-sessions/{}/answer", seg(session));
        Ok(self
            .send(Method::POST, path, &MerchantAnswer { accept }, None)
            .await?
            .value)
    }

    /// `PUT /v1/session-merchants/{name}`: a merchant that takes trading sessions here.
    pub async fn session_merchant_set(
        &self,
        name: &str,
        req: &SessionMerchantRequest,
    ) -> Result<SessionMerchantView, Error> {
        let path = format!("/v1/session-merchants/{}", seg(name));
        Ok(self.send(Method::PUT, path, req, None).await?.value)
    }

    /// `POST /v1/trading-sessions/{session}/record`: a party's signed record (exactly as
    /// signed). Taking the same record twice applies it once, so it is safe to retry.
    pub async fn trading_session_record(
        &self,
        session: &str,
        signed: Vec<u8>,
    ) -> Result<TradingSessionView, Error> {
        let mut call = Call::new(
            Method::POST,
            format!("/v1/trading-sessions/{}/record", seg(session)),
        )
        .raw("application/json", Bytes::from(signed));
        call.once_only = true;
        Ok(self.call(call).await?.value)
    }

    /// `POST /v1/trading-sessions/{session}/end`: the merchant ends the session (no next
    /// transaction). Taken once, so it is safe to retry.
    pub async fn trading_session_end(&self, session: &str) -> Result<TradingSessionView, Error> {
        let call = Call::new(
            Method::POST,
            format!("/v1/trading-sessions/{}/end", seg(session)),
        );
        Ok(self.call(call).await?.value)
    }

    /// `POST /v1/trading-sessions/{session}/verdict`: the merchant's operator settles a
    /// disputed session. A session is settled once (the same verdict again answers the
    /// same), so it is safe to retry.
    pub async fn trading_session_verdict(
        &self,
        session: &str,
        total: tally_kernel::Amount,
    ) -> Result<TradingSessionView, Error> {
        let path = format!("/v1/trading-sessions/{}/verdict", seg(session));
        let req = tally_wire::federation::VerdictRequest {
            total_minor: total.minor,
            currency: total.currency.code().to_string(),
        };
        Ok(self.send(Method::POST, path, &req, None).await?.value)
    }

    /// `POST /v1/trading-sessions/{session}/transactions`: the session's next transaction
    /// (M4), once the one before is cleared. The request names it, so it is safe to retry
    /// (a repeat answers the session as it is).
    pub async fn trading_session_next(
        &self,
        session: &str,
        transaction: &str,
        deposit: tally_kernel::Amount,
    ) -> Result<TradingSessionView, Error> {
        let path = format!("/v1/trading-sessions/{}/transactions", seg(session));
        let req = tally_wire::federation::NextTransaction {
            transaction: transaction.to_string(),
            deposit,
        };
        Ok(self.send(Method::POST, path, &req, None).await?.value)
    }

    /// `GET /v1/trading-sessions/{session}/receipts`: the receipts of the session's cleared
    /// transactions.
    pub async fn trading_session_receipts(
        &self,
        session: &str,
    ) -> Result<Vec<tally_wire::federation::SessionReceiptView>, Error> {
        self.get(format!("/v1/trading-sessions/{}/receipts", seg(session)))
            .await
    }

    /// `POST /v1/trading-sessions/{session}/order-keys`: the customer's K1 of an order (M9),
    /// through its own operator to the merchant's.
    pub async fn order_key_send(
        &self,
        session: &str,
        order: &str,
        k1: &str,
    ) -> Result<tally_wire::federation::OrderKeyQueued, Error> {
        let call = Call::new(
            Method::POST,
            format!("/v1/trading-sessions/{}/order-keys", seg(session)),
        )
        .json(&tally_wire::federation::OrderKeyRequest {
            order: order.into(),
            k1: k1.into(),
        })?;
        Ok(self.call(call).await?.value)
    }

    /// `GET /v1/trading-sessions/{session}/order-keys/{order}`: K1 as the merchant's operator
    /// signed it (the merchant; `404` until it arrived).
    pub async fn order_key(
        &self,
        session: &str,
        order: &str,
    ) -> Result<tally_wire::federation::SignedOrderKey, Error> {
        self.get(format!(
            "/v1/trading-sessions/{}/order-keys/{}",
            seg(session),
            seg(order)
        ))
        .await
    }

    /// `PUT /v1/trading-sessions/{session}/order-keys/{order}/escrow`: the merchant's agent
    /// escrows K2 of the package it sent.
    pub async fn order_escrow(
        &self,
        session: &str,
        order: &str,
        k2: &str,
        package: &str,
    ) -> Result<(), Error> {
        let call = Call::new(
            Method::PUT,
            format!(
                "/v1/trading-sessions/{}/order-keys/{}/escrow",
                seg(session),
                seg(order)
            ),
        )
        .json(&tally_wire::federation::EscrowRequest {
            k2: k2.into(),
            package: package.into(),
        })?;
        self.call_empty(call).await
    }

    /// `GET /v1/trading-sessions/{session}/order-keys/{order}/escrow`: an escrowed K2, for an
    /// arbiter (the operator).
    pub async fn order_escrowed(
        &self,
        session: &str,
        order: &str,
    ) -> Result<tally_wire::federation::EscrowView, Error> {
        self.get(format!(
            "/v1/trading-sessions/{}/order-keys/{}/escrow",
            seg(session),
            seg(order)
        ))
        .await
    }

    /// `PUT /v1/session-merchants/{name}/agent-key`: the key the merchant's agent signs with.
    pub async fn session_agent_key(&self, name: &str, public_key: &str) -> Result<(), Error> {
        let call = Call::new(
            Method::PUT,
            format!("/v1/session-merchants/{}/agent-key", seg(name)),
        )
        .json(&AgentKeyRequest {
            public_key: public_key.to_string(),
        })?;
        self.call_empty(call).await
    }

    /// `GET /v1/billing/records` (operator) as JSON.
    pub async fn billing_records(
        &self,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<Vec<BillingRecordView>, Error> {
        let q = query(&[
            ("from", from.map(str::to_string)),
            ("to", to.map(str::to_string)),
        ]);
        self.get(format!("/v1/billing/records{q}")).await
    }

    /// `GET /v1/billing/records?format=csv` (operator).
    pub async fn billing_csv(&self, from: Option<&str>, to: Option<&str>) -> Result<String, Error> {
        let q = query(&[
            ("from", from.map(str::to_string)),
            ("to", to.map(str::to_string)),
            ("format", Some("csv".to_string())),
        ]);
        self.call_text(Call::new(Method::GET, format!("/v1/billing/records{q}")))
            .await
    }

    /// `GET /v1/clearing` (operator): what this operator and each peer owe each other.
    pub async fn clearing(&self) -> Result<Vec<ClearingLine>, Error> {
        self.get("/v1/clearing".to_string()).await
    }

    /// `PUT /v1/fx/{from}/{to}` (operator): publish a rate with a lifespan.
    pub async fn fx_publish(
        &self,
        from: &str,
        to: &str,
        req: &FxPublishRequest,
    ) -> Result<FxTableView, Error> {
        let path = format!("/v1/fx/{}/{}", seg(from), seg(to));
        Ok(self.send(Method::PUT, path, req, None).await?.value)
    }

    /// `GET /v1/fx`: the exchange tables valid now.
    pub async fn fx_tables(&self) -> Result<Vec<FxTableView>, Error> {
        self.get("/v1/fx".to_string()).await
    }
}
