//! Locked delivery: products, sales, payments, receivers, keys, complaints, reports.

use crate::{Answer, CALL_TIMEOUT, Call, Client, Error, query, seg};
use bytes::Bytes;
use reqwest::Method;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_RANGE, RANGE};
use tally_kernel::Id;
use tally_wire::delivery::{
    Acknowledge, Complaint, ComplaintOutcome, EntryView, NewProduct, NewSale, PayReference,
    PaymentView, ProductView, ReceiverConfig, ReceiverView, ReleasedKey, ReportQuery, ReportRow,
    SaleView,
};

/// The answer to a package request.
#[derive(Debug)]
pub enum Package {
    /// The package, whole (`start == 0`) or from the offset asked for.
    Body(Box<Download>),
    /// The offset asked for is not within the package (`416`): start over.
    NotSatisfiable,
}

/// A package being received.
#[derive(Debug)]
pub struct Download {
    response: reqwest::Response,
    base: String,
    /// Where this answer starts in the package: the offset asked for, or 0 when the node sends
    /// the whole package (no range asked, or a stale `If-Range`).
    pub start: u64,
    /// The whole package's length, when the node says.
    pub total: Option<u64>,
    /// The package's entity tag, to resume with `If-Range`.
    pub etag: Option<String>,
}

impl Download {
    /// The next piece; `None` at the end. A piece that does not come within [`CALL_TIMEOUT`]
    /// is a transport error.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        match tokio::time::timeout(CALL_TIMEOUT, self.response.chunk()).await {
            Ok(Ok(piece)) => Ok(piece),
            Ok(Err(e)) => Err(Error::Transport {
                base: self.base.clone(),
                cause: crate::chain(&e),
            }),
            Err(_) => Err(Error::Transport {
                base: self.base.clone(),
                cause: format!("nothing received for {} s", CALL_TIMEOUT.as_secs()),
            }),
        }
    }
}

impl Client {
    /// `POST /v1/products` (merchant): a draft product; a retry with the key returns it.
    pub async fn product_create(
        &self,
        key: &str,
        req: &NewProduct,
    ) -> Result<Answer<ProductView>, Error> {
        self.send(Method::POST, "/v1/products".to_string(), req, Some(key))
            .await
    }

    /// `GET /v1/products`.
    pub async fn products(&self) -> Result<Vec<ProductView>, Error> {
        self.get("/v1/products".to_string()).await
    }

    /// `GET /v1/products/{id}`.
    pub async fn product(&self, id: Id) -> Result<ProductView, Error> {
        self.get(format!("/v1/products/{id}")).await
    }

    /// `POST /v1/products/{id}/publish`: a draft goes on sale.
    pub async fn product_publish(&self, id: Id) -> Result<ProductView, Error> {
        let empty = serde_json::Map::new();
        let call = Call::new(Method::POST, format!("/v1/products/{id}/publish"))
            .json(&empty)?
            .once_only();
        Ok(self.call(call).await?.value)
    }

    /// `DELETE /v1/products/{id}`: no new sales; sold copies stay deliverable.
    pub async fn product_withdraw(&self, id: Id) -> Result<ProductView, Error> {
        let call = Call::new(Method::DELETE, format!("/v1/products/{id}"));
        Ok(self.call(call).await?.value)
    }

    /// `PUT /v1/products/{id}/entries/{name}?kind=`: one entry of a draft, streamed (`len`
    /// bytes). Not retried: send it again from the start.
    pub async fn entry_upload(
        &self,
        product: Id,
        name: &str,
        kind: &str,
        len: u64,
        body: reqwest::Body,
    ) -> Result<EntryView, Error> {
        let q = query(&[("kind", Some(kind.to_string()))]);
        let path = format!("/v1/products/{product}/entries/{}{q}", seg(name));
        crate::check_path(&path)?;
        let resp = self
            .streaming(Method::PUT, &path)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, len)
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport(&e))?;
        if !resp.status().is_success() {
            return Err(Client::refused(resp).await);
        }
        let bytes = resp.bytes().await.map_err(|e| self.transport(&e))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
            what: format!("PUT {path}"),
            cause: e.to_string(),
        })
    }

    /// `POST /v1/sales`: buy a product; the package is sealed to the buyer.
    pub async fn sale_buy(&self, key: &str, req: &NewSale) -> Result<Answer<SaleView>, Error> {
        self.send(Method::POST, "/v1/sales".to_string(), req, Some(key))
            .await
    }

    /// `POST /v1/sales/pay`: pay a sale by its reference from an account.
    pub async fn sale_pay(
        &self,
        key: &str,
        req: &PayReference,
    ) -> Result<Answer<PaymentView>, Error> {
        self.send(Method::POST, "/v1/sales/pay".to_string(), req, Some(key))
            .await
    }

    /// `GET /v1/sales/{id}`.
    pub async fn sale(&self, id: Id) -> Result<SaleView, Error> {
        self.get(format!("/v1/sales/{id}")).await
    }

    /// `GET /v1/sales/by-reference/{code}`.
    pub async fn sale_by_reference(&self, reference: &str) -> Result<SaleView, Error> {
        self.get(format!("/v1/sales/by-reference/{}", seg(reference)))
            .await
    }

    /// `POST /v1/sales/{id}/acknowledge`: the buyer took delivery.
    pub async fn sale_acknowledge(&self, id: Id, req: &Acknowledge) -> Result<SaleView, Error> {
        let call = Call::new(Method::POST, format!("/v1/sales/{id}/acknowledge"))
            .json(req)?
            .once_only();
        Ok(self.call(call).await?.value)
    }

    /// `POST /v1/sales/{id}/cancel`: the buyer cancels an unpaid sale (applied once).
    pub async fn sale_cancel(&self, id: Id) -> Result<SaleView, Error> {
        let call = Call::new(Method::POST, format!("/v1/sales/{id}/cancel")).once_only();
        Ok(self.call(call).await?.value)
    }

    /// `GET /v1/sales/{id}/key`: the released unlock key.
    pub async fn sale_key(&self, id: Id) -> Result<ReleasedKey, Error> {
        self.get(format!("/v1/sales/{id}/key")).await
    }

    /// `GET /v1/sales/{id}/package` from byte `from` (0: all of it). Give the `etag` of an
    /// earlier answer when resuming: if the package changed, the node sends it whole.
    pub async fn sale_package(
        &self,
        id: Id,
        from: u64,
        etag: Option<&str>,
    ) -> Result<Package, Error> {
        let mut req = self.streaming(Method::GET, &format!("/v1/sales/{id}/package"));
        if from > 0 {
            req = req.header(RANGE, format!("bytes={from}-"));
            if let Some(e) = etag {
                req = req.header(IF_RANGE, e);
            }
        }
        let resp = req.send().await.map_err(|e| self.transport(&e))?;
        let status = resp.status();
        let etag = resp
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let (start, total) = match status {
            reqwest::StatusCode::PARTIAL_CONTENT => {
                content_range(resp.headers()).ok_or_else(|| Error::Decode {
                    what: format!("GET /v1/sales/{id}/package"),
                    cause: "a 206 answer without a valid Content-Range".to_string(),
                })?
            }
            reqwest::StatusCode::OK => (0, resp.content_length()),
            reqwest::StatusCode::RANGE_NOT_SATISFIABLE => return Ok(Package::NotSatisfiable),
            _ => return Err(Client::refused(resp).await),
        };
        Ok(Package::Body(Box::new(Download {
            response: resp,
            base: self.base.clone(),
            start,
            total,
            etag,
        })))
    }

    /// `PUT /v1/receivers/{name}` (operator): where a payment provider's notifications land.
    pub async fn receiver_set(
        &self,
        name: &str,
        req: &ReceiverConfig,
    ) -> Result<ReceiverView, Error> {
        let path = format!("/v1/receivers/{}", seg(name));
        Ok(self.send(Method::PUT, path, req, None).await?.value)
    }

    /// `POST /v1/receivers/{name}/notifications`: a signed payment notification, as a
    /// provider sends it (`body` exactly as signed).
    pub async fn notification(
        &self,
        receiver: &str,
        body: Vec<u8>,
        timestamp: &str,
        signature: &str,
    ) -> Result<PaymentView, Error> {
        let path = format!("/v1/receivers/{}/notifications", seg(receiver));
        let call = Call::new(Method::POST, path)
            .raw("application/json", Bytes::from(body))
            .header("Tally-Timestamp", timestamp.to_string())
            .header("Tally-Signature", signature.to_string());
        Ok(self.call(call).await?.value)
    }

    /// `POST /v1/complaints`: a buyer's complaint about a sale.
    pub async fn complaint(&self, req: &Complaint) -> Result<ComplaintOutcome, Error> {
        Ok(self
            .send(Method::POST, "/v1/complaints".to_string(), req, None)
            .await?
            .value)
    }

    /// `POST /v1/payments/{id}/refund` (operator): a mismatched payment goes back.
    pub async fn refund(&self, payment: Id) -> Result<PaymentView, Error> {
        let empty = serde_json::Map::new();
        let call = Call::new(Method::POST, format!("/v1/payments/{payment}/refund"))
            .json(&empty)?
            .once_only();
        Ok(self.call(call).await?.value)
    }

    /// `GET /v1/reports/sales` as rows.
    pub async fn sales_report(&self, filter: &ReportQuery) -> Result<Vec<ReportRow>, Error> {
        self.get(format!("/v1/reports/sales{}", report_query(filter, None)))
            .await
    }

    /// `GET /v1/reports/sales?format=csv`, as the node writes it.
    pub async fn sales_report_csv(&self, filter: &ReportQuery) -> Result<String, Error> {
        let path = format!("/v1/reports/sales{}", report_query(filter, Some("csv")));
        self.call_text(Call::new(Method::GET, path)).await
    }
}

fn report_query(f: &ReportQuery, format: Option<&str>) -> String {
    query(&[
        ("producer", f.producer.clone()),
        ("product", f.product.map(|p| p.to_string())),
        ("from", f.from.clone()),
        ("to", f.to.clone()),
        ("format", format.map(str::to_string)),
    ])
}

/// `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`).
fn content_range(headers: &reqwest::header::HeaderMap) -> Option<(u64, Option<u64>)> {
    let text = headers.get(CONTENT_RANGE)?.to_str().ok()?;
    let (range, total) = text.strip_prefix("bytes ")?.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let total = match total {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start.parse().ok()?, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn content_ranges_parse() {
        let mut h = HeaderMap::new();
        assert_eq!(content_range(&h), None);
        h.insert(CONTENT_RANGE, HeaderValue::from_static("bytes 10-99/100"));
        assert_eq!(content_range(&h), Some((10, Some(100))));
        h.insert(CONTENT_RANGE, HeaderValue::from_static("bytes 10-99/*"));
        assert_eq!(content_range(&h), Some((10, None)));
        h.insert(CONTENT_RANGE, HeaderValue::from_static("items 1-2/3"));
        assert_eq!(content_range(&h), None);
    }
}
