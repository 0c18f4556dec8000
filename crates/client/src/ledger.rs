//! Accounts, transfers, holds, exchanges, API keys, the dev inbox, the audit, and the
//! operational routes.

use crate::{Answer, Call, Client, Error, query, seg};
use reqwest::Method;
use tally_wire::ledger::{
    AccountDto, ApiKeyDto, AuditDto, ExchangeRequest, ExchangeResponse, Health, HistoryPage,
    HistoryQuery, HoldRequest, MessageDto, NewApiKeyRequest, NewApiKeyResponse, OpenAccountRequest,
    PostHoldRequest, TransferBatchRequest, TransferBatchResponse, TransferDto, TransferPage,
    TransferQuery, TransferRequest,
};
use uuid::Uuid;

impl Client {
    /// `GET /healthz`: whether the node can reach its store.
    pub async fn health(&self) -> Result<Health, Error> {
        self.get("/healthz".to_string()).await
    }

    /// `GET /v1/node`: the node's public key and CA certificate (no API key needed).
    pub async fn node(&self) -> Result<tally_wire::ledger::NodeView, Error> {
        self.get("/v1/node".to_string()).await
    }

    /// `GET /openapi.json`: the API document.
    pub async fn openapi(&self) -> Result<serde_json::Value, Error> {
        self.get("/openapi.json".to_string()).await
    }

    /// `GET /metrics`: Prometheus text.
    pub async fn metrics(&self) -> Result<String, Error> {
        self.call_text(Call::new(Method::GET, "/metrics".to_string()))
            .await
    }

    /// `POST /v1/accounts`. With a key, a retry returns the first account.
    pub async fn account_open(
        &self,
        key: Option<&str>,
        req: &OpenAccountRequest,
    ) -> Result<Answer<AccountDto>, Error> {
        self.send(Method::POST, "/v1/accounts".to_string(), req, key)
            .await
    }

    /// `GET /v1/accounts`: the caller's accounts (the operator may name an owner).
    pub async fn accounts(&self, owner: Option<&str>) -> Result<Vec<AccountDto>, Error> {
        let q = query(&[("owner", owner.map(str::to_string))]);
        self.get(format!("/v1/accounts{q}")).await
    }

    /// `GET /v1/accounts/{id}`.
    pub async fn account(&self, id: Uuid) -> Result<AccountDto, Error> {
        self.get(format!("/v1/accounts/{id}")).await
    }

    /// `GET /v1/accounts/{id}/transfers`: newest first.
    pub async fn account_transfers(
        &self,
        id: Uuid,
        limit: Option<u32>,
    ) -> Result<Vec<TransferDto>, Error> {
        let q = query(&[("limit", limit.map(|l| l.to_string()))]);
        self.get(format!("/v1/accounts/{id}/transfers{q}")).await
    }

    /// `POST /v1/transfers`.
    pub async fn transfer(
        &self,
        key: &str,
        req: &TransferRequest,
    ) -> Result<Answer<TransferDto>, Error> {
        self.send(Method::POST, "/v1/transfers".to_string(), req, Some(key))
            .await
    }

    /// `POST /v1/transfers/batch` (operator): up to 8,189 events, one result each, in order.
    /// Sending the same batch again is harmless: each event's id is its idempotency key.
    pub async fn transfer_batch(
        &self,
        req: &TransferBatchRequest,
    ) -> Result<TransferBatchResponse, Error> {
        self.send(Method::POST, "/v1/transfers/batch".to_string(), req, None)
            .await
            .map(|a| a.value)
    }

    /// `GET /v1/transfers?…`: a page of transfers matching the query.
    pub async fn transfers(&self, q: &TransferQuery) -> Result<TransferPage, Error> {
        let qs = query(&[
            ("account", q.account.map(|a| a.to_string())),
            ("side", q.side.clone()),
            ("since", q.since.clone()),
            ("until", q.until.clone()),
            ("user_data_128", q.user_data_128.clone()),
            ("user_data_64", q.user_data_64.map(|v| v.to_string())),
            ("user_data_32", q.user_data_32.map(|v| v.to_string())),
            ("code", q.code.map(|v| v.to_string())),
            ("reversed", q.reversed.map(|v| v.to_string())),
            ("limit", q.limit.map(|v| v.to_string())),
            ("after", q.after.clone()),
        ]);
        self.get(format!("/v1/transfers{qs}")).await
    }

    /// `GET /v1/accounts/{id}/history?…`: the account's counters after each transfer.
    pub async fn account_balances(&self, id: Uuid, q: &HistoryQuery) -> Result<HistoryPage, Error> {
        let qs = query(&[
            ("since", q.since.clone()),
            ("until", q.until.clone()),
            ("reversed", q.reversed.map(|v| v.to_string())),
            ("limit", q.limit.map(|v| v.to_string())),
            ("after", q.after.clone()),
        ]);
        self.get(format!("/v1/accounts/{id}/history{qs}")).await
    }

    /// `GET /v1/transfers/{id}`.
    pub async fn transfer_get(&self, id: Uuid) -> Result<TransferDto, Error> {
        self.get(format!("/v1/transfers/{id}")).await
    }

    /// `POST /v1/holds`: a pending transfer.
    pub async fn hold(&self, key: &str, req: &HoldRequest) -> Result<Answer<TransferDto>, Error> {
        self.send(Method::POST, "/v1/holds".to_string(), req, Some(key))
            .await
    }

    /// `POST /v1/holds/{id}/post`: all of the hold, or part.
    pub async fn hold_post(
        &self,
        key: &str,
        hold: Uuid,
        req: &PostHoldRequest,
    ) -> Result<Answer<TransferDto>, Error> {
        self.send(
            Method::POST,
            format!("/v1/holds/{hold}/post"),
            req,
            Some(key),
        )
        .await
    }

    /// `POST /v1/holds/{id}/void`.
    pub async fn hold_void(&self, key: &str, hold: Uuid) -> Result<Answer<TransferDto>, Error> {
        let empty = serde_json::Map::new();
        self.send(
            Method::POST,
            format!("/v1/holds/{hold}/void"),
            &empty,
            Some(key),
        )
        .await
    }

    /// `POST /v1/exchanges`: two linked legs through the liquidity accounts.
    pub async fn exchange(
        &self,
        key: &str,
        req: &ExchangeRequest,
    ) -> Result<Answer<ExchangeResponse>, Error> {
        self.send(Method::POST, "/v1/exchanges".to_string(), req, Some(key))
            .await
    }

    /// `POST /v1/api-keys` (operator): the key is in the answer, once.
    pub async fn api_key_create(&self, req: &NewApiKeyRequest) -> Result<NewApiKeyResponse, Error> {
        Ok(self
            .send(Method::POST, "/v1/api-keys".to_string(), req, None)
            .await?
            .value)
    }

    /// `GET /v1/api-keys` (without the secrets).
    pub async fn api_keys(&self) -> Result<Vec<ApiKeyDto>, Error> {
        self.get("/v1/api-keys".to_string()).await
    }

    /// `DELETE /v1/api-keys/{id}`.
    pub async fn api_key_revoke(&self, id: Uuid) -> Result<(), Error> {
        self.call_empty(Call::new(Method::DELETE, format!("/v1/api-keys/{id}")))
            .await
    }

    /// `GET /v1/dev/inbox/{address}`: what the dev channel delivered there, newest first.
    pub async fn dev_inbox(
        &self,
        address: &str,
        limit: Option<u32>,
    ) -> Result<Vec<MessageDto>, Error> {
        let q = query(&[("limit", limit.map(|l| l.to_string()))]);
        self.get(format!("/v1/dev/inbox/{}{q}", seg(address))).await
    }

    /// `GET /v1/ledger/audit` (operator): balances, journal chain and signatures checked.
    pub async fn audit(&self) -> Result<AuditDto, Error> {
        self.get("/v1/ledger/audit".to_string()).await
    }
}
