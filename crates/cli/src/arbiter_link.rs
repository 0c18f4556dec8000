//! `tally serve --arbiter URL`: the receipt node's link to its arbiter node, over HTTP with
//! the typed client (the service sees only `ArbiterLink`).

use anyhow::Context;
use futures::future::BoxFuture;
use std::sync::Arc;
use tally_kernel::crypto::bls::ArbiterPublicKey;
use tally_service::receipt::remote::{ArbiterLink, LinkError};
use tally_service::receipt::{ArbiterCase, ArbiterRuling};

struct HttpArbiter {
    api: tally_client::Client,
    key: ArbiterPublicKey,
}

impl ArbiterLink for HttpArbiter {
    fn key(&self) -> ArbiterPublicKey {
        self.key
    }

    fn decide(&self, case: ArbiterCase) -> BoxFuture<'_, Result<ArbiterRuling, LinkError>> {
        Box::pin(async move {
            self.api.arbiter_decide(&case).await.map_err(|e| match e {
                // A refusal in the arbiter's own words (4xx): asking again changes nothing.
                tally_client::Error::Refused(r) if (400..500).contains(&r.status) => {
                    LinkError::Refused(format!("{}: {}", r.code_text, r.message))
                }
                other => LinkError::Unreachable(other.to_string()),
            })
        })
    }
}

/// Reaches the arbiter node at `url` and takes its key (the node does not start without it:
/// escrows made under another key could not be opened).
pub async fn connect(url: &str, api_key: Option<String>) -> anyhow::Result<Arc<dyn ArbiterLink>> {
    let api = tally_client::Client::builder(url)
        .user_agent("tally-node")
        .api_key_opt(api_key)
        .build()?;
    let identity = api
        .arbiter_key()
        .await
        .with_context(|| format!("--arbiter {url}: fetching the arbiter node's key"))?;
    let key = ArbiterPublicKey::from_hex(&identity.arbiter_key)
        .map_err(|e| anyhow::anyhow!("--arbiter {url}: its key: {e}"))?;
    Ok(Arc::new(HttpArbiter { api, key }))
}
