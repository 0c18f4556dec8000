//! Signed receipts: tokens, warrants, the receipt protocol and the arbiter.

use crate::{Answer, CALL_TIMEOUT, Call, Client, Error, seg};
use reqwest::Method;
use std::time::Duration;
use tally_wire::receipts::{
    AckBody, ArbiterCase, ArbiterIdentity, ArbiterRuling, ArbiterView, EscrowBody, IssuedToken,
    NewReceipt, NewToken, OfferWarrant, OnlineVerification, PartyRevocation, ReceiptNodeView,
    ReceiptView, ResolveBody, SignReceipt, TokenView, WarrantBody, WarrantView,
};

impl Client {
    /// `GET /v1/receipts/node`: the receipt server's identity and keys.
    pub async fn receipt_node(&self) -> Result<ReceiptNodeView, Error> {
        self.get("/v1/receipts/node".to_string()).await
    }

    /// `POST /v1/tokens` (operator): a token for a holder; its application key is secret.
    pub async fn token_issue(
        &self,
        key: &str,
        req: &NewToken,
    ) -> Result<Answer<IssuedToken>, Error> {
        self.send(Method::POST, "/v1/tokens".to_string(), req, Some(key))
            .await
    }

    /// `GET /v1/tokens`.
    pub async fn tokens(&self) -> Result<Vec<TokenView>, Error> {
        self.get("/v1/tokens".to_string()).await
    }

    /// `GET /v1/tokens/{serial}/writes`: signed receipts not yet acknowledged by the token.
    pub async fn token_writes(&self, serial: &str) -> Result<Vec<ReceiptView>, Error> {
        self.get(format!("/v1/tokens/{}/writes", seg(serial))).await
    }

    /// `POST /v1/warrants`: a warrant (PEM) for the node to sign by proxy.
    pub async fn warrant_add(&self, req: &WarrantBody) -> Result<WarrantView, Error> {
        Ok(self
            .send(Method::POST, "/v1/warrants".to_string(), req, None)
            .await?
            .value)
    }

    /// `GET /v1/warrants`.
    pub async fn warrants(&self) -> Result<Vec<WarrantView>, Error> {
        self.get("/v1/warrants".to_string()).await
    }

    /// `POST /v1/warrants/{serial}/revoke`.
    pub async fn warrant_revoke(&self, serial: &str) -> Result<WarrantView, Error> {
        let path = format!("/v1/warrants/{}/revoke", seg(serial));
        let empty = serde_json::Map::new();
        Ok(self.send(Method::POST, path, &empty, None).await?.value)
    }

    /// `POST /v1/parties/{name}/revoke` (operator): the party's certificate signs nothing more.
    pub async fn party_revoke(&self, name: &str) -> Result<PartyRevocation, Error> {
        let path = format!("/v1/parties/{}/revoke", seg(name));
        let empty = serde_json::Map::new();
        Ok(self.send(Method::POST, path, &empty, None).await?.value)
    }

    /// `POST /v1/receipts/verify`: the node checks a package against its CA and its
    /// revocations (a read: safe to retry).
    pub async fn receipt_verify_online(
        &self,
        package: Vec<u8>,
    ) -> Result<OnlineVerification, Error> {
        let call = Call::new(Method::POST, "/v1/receipts/verify".to_string())
            .raw("application/octet-stream", package.into())
            .once_only();
        Ok(self.call(call).await?.value)
    }

    /// `GET /v1/arbiter/key`: an arbiter node's key.
    pub async fn arbiter_key(&self) -> Result<ArbiterIdentity, Error> {
        self.get("/v1/arbiter/key".to_string()).await
    }

    /// `POST /v1/arbiter/decide` on an arbiter node. The arbiter applies a ruling once and
    /// answers every repeat from it, so a retry is safe.
    pub async fn arbiter_decide(&self, case: &ArbiterCase) -> Result<ArbiterRuling, Error> {
        let call = Call::new(Method::POST, "/v1/arbiter/decide".to_string())
            .json(case)?
            .once_only();
        Ok(self.call(call).await?.value)
    }

    /// `POST /v1/arbiter/resolve` on an arbiter node, as party B (no key needed). A repeat is
    /// answered from the stored decision, so a retry is safe.
    pub async fn arbiter_resolve_for_b(&self, case: &ArbiterCase) -> Result<ArbiterRuling, Error> {
        let call = Call::new(Method::POST, "/v1/arbiter/resolve".to_string())
            .json(case)?
            .once_only();
        Ok(self.call(call).await?.value)
    }

    /// `POST /v1/receipts`: offer a record for signing.
    pub async fn receipt_offer(
        &self,
        key: &str,
        req: &NewReceipt,
    ) -> Result<Answer<ReceiptView>, Error> {
        self.send(Method::POST, "/v1/receipts".to_string(), req, Some(key))
            .await
    }

    /// `GET /v1/receipts`: the caller's receipts.
    pub async fn receipts(&self) -> Result<Vec<ReceiptView>, Error> {
        self.get("/v1/receipts".to_string()).await
    }

    /// `GET /v1/receipts/{transaction}/warrant`: A's certificate and warrant, for B to check.
    pub async fn receipt_warrant(&self, transaction: u64) -> Result<OfferWarrant, Error> {
        self.get(format!("/v1/receipts/{transaction}/warrant"))
            .await
    }

    /// `GET /v1/receipts/{transaction}`.
    pub async fn receipt(&self, transaction: u64) -> Result<ReceiptView, Error> {
        self.get(format!("/v1/receipts/{transaction}")).await
    }

    /// `POST /v1/receipts/{transaction}/escrow`: B's verifiably encrypted signature.
    pub async fn receipt_escrow(
        &self,
        transaction: u64,
        req: &EscrowBody,
    ) -> Result<ReceiptView, Error> {
        let path = format!("/v1/receipts/{transaction}/escrow");
        Ok(self.send(Method::POST, path, req, None).await?.value)
    }

    /// `POST /v1/receipts/{transaction}/sign`: B's signature (and where to write it).
    pub async fn receipt_sign(
        &self,
        transaction: u64,
        req: &SignReceipt,
    ) -> Result<ReceiptView, Error> {
        let path = format!("/v1/receipts/{transaction}/sign");
        Ok(self.send(Method::POST, path, req, None).await?.value)
    }

    /// `POST /v1/receipts/{transaction}/ack`: the token stored the write.
    pub async fn receipt_ack(&self, transaction: u64, req: &AckBody) -> Result<ReceiptView, Error> {
        let path = format!("/v1/receipts/{transaction}/ack");
        Ok(self.send(Method::POST, path, req, None).await?.value)
    }

    /// `GET /v1/receipts/{transaction}/package`: the package file (verify it offline).
    pub async fn receipt_package(&self, transaction: u64) -> Result<Vec<u8>, Error> {
        let call = Call::new(Method::GET, format!("/v1/receipts/{transaction}/package"));
        Ok(self.call_bytes(call).await?.to_vec())
    }

    /// `GET /v1/receipts/{transaction}/package` of at most `len_max` bytes: an answer that
    /// announces or sends more is refused as soon as it does ([`Error::Decode`]), without
    /// reading on, so a wrong node cannot fill the memory. Retried like every read.
    pub async fn receipt_package_at_most(
        &self,
        transaction: u64,
        len_max: usize,
    ) -> Result<Vec<u8>, Error> {
        let path = format!("/v1/receipts/{transaction}/package");
        let mut last = None;
        for attempt in 0..self.attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            match self.bounded_get(&path, len_max).await {
                Ok(bytes) => return Ok(bytes),
                Err(e) if e.is_transient() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Setup("no attempt was made".to_string())))
    }

    /// One `GET path` whose body may not exceed `len_max` bytes.
    async fn bounded_get(&self, path: &str, len_max: usize) -> Result<Vec<u8>, Error> {
        let too_long = || Error::Decode {
            what: format!("GET {path}"),
            cause: format!("the answer is longer than {len_max} bytes"),
        };
        let mut resp = self
            .streaming(Method::GET, path)
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.transport(&e))?;
        if !resp.status().is_success() {
            return Err(Client::refused(resp).await);
        }
        if resp.content_length().is_some_and(|n| n > len_max as u64) {
            return Err(too_long());
        }
        let mut body = Vec::new();
        while let Some(piece) = resp.chunk().await.map_err(|e| self.transport(&e))? {
            if body.len() + piece.len() > len_max {
                return Err(too_long());
            }
            body.extend_from_slice(&piece);
        }
        Ok(body)
    }

    /// `POST /v1/arbiter/{transaction}/abort` (the originator).
    pub async fn arbiter_abort(&self, transaction: u64) -> Result<ArbiterView, Error> {
        let path = format!("/v1/arbiter/{transaction}/abort");
        let empty = serde_json::Map::new();
        Ok(self.send(Method::POST, path, &empty, None).await?.value)
    }

    /// `POST /v1/arbiter/{transaction}/resolve`.
    pub async fn arbiter_resolve(
        &self,
        transaction: u64,
        req: &ResolveBody,
    ) -> Result<ArbiterView, Error> {
        let path = format!("/v1/arbiter/{transaction}/resolve");
        Ok(self.send(Method::POST, path, req, None).await?.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_wire::error::ErrorCode;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A node that answers every request with `answer` (raw HTTP/1.1); its URL.
    async fn node_answering(answer: &'static [u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                let _ = conn.read(&mut request).await;
                let _ = conn.write_all(answer).await;
                let _ = conn.shutdown().await;
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_package_longer_than_allowed_is_refused_whether_announced_or_not() {
        let small = node_answering(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nTLLY").await;
        let c = Client::builder(&small).build().expect("client");
        assert_eq!(
            c.receipt_package_at_most(1, 4).await.expect("4 bytes"),
            b"TLLY"
        );
        let e = c
            .receipt_package_at_most(1, 3)
            .await
            .expect_err("announced");
        assert!(
            matches!(e, Error::Decode { .. }) && !e.is_transient(),
            "{e}"
        );
        let chunked = node_answering(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n",
        )
        .await;
        let c = Client::builder(&chunked).build().expect("client");
        let e = c.receipt_package_at_most(1, 5).await.expect_err("sent");
        assert!(matches!(e, Error::Decode { .. }), "{e}");
        assert_eq!(
            c.receipt_package_at_most(1, 6).await.expect("6 bytes"),
            b"abcdef"
        );
        let refused = node_answering(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 47\r\n\r\n{\"error\":{\"code\":\"not_found\",\"message\":\"no\"}}  ",
        )
        .await;
        let c = Client::builder(&refused).build().expect("client");
        let e = c.receipt_package_at_most(1, 100).await.expect_err("404");
        assert_eq!(e.code(), Some(ErrorCode::NotFound), "{e}");
    }
}
