//! Background work of a node: delivering the outbox, expiring overdue holds and alerting on
//! unpaid sales (D9).
//!
//! Both loops are safe to run in every `tally serve` process sharing a database: the outbox
//! leases rows before delivering (no two processes deliver the same row at once), and expiry
//! goes through the ledger writer, where a pending transfer can be resolved only once.
//! Each pass is bounded (`BATCH`), and a failed pass is logged and retried on the next tick.

use crate::Node;
use std::sync::Arc;
use std::time::Duration;
use tally_channels::{ChannelKind, ChannelSet, Message};
use tally_kernel::Timestamp;
use tally_store::outbox::StoredMessage;
use tokio::sync::Notify;

/// Most holds expired per pass.
const BATCH: i64 = 256;
/// Messages leased per pass: few enough that slow deliveries (each bounded by its channel's
/// timeouts and retries, well under a minute) finish inside the lease.
const OUTBOX_CLAIM: i64 = 8;
/// How long a leased message is withheld from other workers.
const LEASE_S: i64 = 300;

/// Handles to stop the workers.
pub struct Workers {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Wake the outbox worker now (after enqueueing).
    pub outbox_wakeup: Arc<Notify>,
}

impl Workers {
    /// Stops both loops.
    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Starts the outbox delivery loop and the expiry sweeper.
pub fn start(node: Node, channels: ChannelSet, tick: Duration) -> Workers {
    let outbox_wakeup = Arc::new(Notify::new());
    let outbox = {
        let node = node.clone();
        let wake = outbox_wakeup.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = deliver_due(&node, &channels, Timestamp::now()).await {
                    tracing::warn!(error = %e, "outbox pass failed");
                }
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(tick) => {}
                }
            }
        })
    };
    let sweeper = tokio::spawn(async move {
        loop {
            match node.store().expire_due(Timestamp::now(), BATCH).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "expired overdue holds"),
                Err(e) => tracing::warn!(error = %e, "expiry pass failed"),
            }
            match node.sweep_overdue(BATCH).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(alerts = n, "sent overdue alerts for unpaid sales"),
                Err(e) => tracing::warn!(error = %e, "overdue pass failed"),
            }
            tokio::time::sleep(tick).await;
        }
    });
    Workers {
        tasks: vec![outbox, sweeper],
        outbox_wakeup,
    }
}

/// One delivery pass: lease due messages, deliver each, record the result. Returns how many
/// were delivered.
pub async fn deliver_due(
    node: &Node,
    channels: &ChannelSet,
    now: Timestamp,
) -> Result<usize, tally_store::StoreError> {
    let store = node.store();
    let due = store.claim_due(now, OUTBOX_CLAIM, LEASE_S).await?;
    let mut delivered = 0;
    for m in due {
        // Out-of-band codes are not stored: they are put into the text only now.
        let result = match node
            .render_code(&m.message)
            .await
        {
            Ok(body) => deliver_one(channels, &m, body.expose()).await,
            Err(e) => Err(tally_channels::ChannelError::Transient(format!(
                "cannot render the message: {e}"
            ))),
        };
        match result {
            Ok(()) => {
                store.mark_sent(m.id, Timestamp::now()).await?;
                metrics::counter!("tally_outbox_delivered_total", "kind" => m.message.kind.clone())
                    .increment(1);
                delivered += 1;
            }
            Err(e) => {
                let state = store
                    .mark_attempt_failed(m.id, Timestamp::now(), e.reason(), e.is_permanent())
                    .await?;
                metrics::counter!("tally_outbox_failed_attempts_total", "kind" => m.message.kind.clone()).increment(1);
                // Log the message id only: addresses and bodies may be personal data.
                tracing::warn!(message = %m.id, kind = %m.message.kind, state, error = e.reason(), "delivery failed");
            }
        }
    }
    Ok(delivered)
}

async fn deliver_one(
    channels: &ChannelSet,
    m: &StoredMessage,
    body: &str,
) -> Result<(), tally_channels::ChannelError> {
    let kind = match m.message.kind.as_str() {
        // The row is the dev inbox: marking it sent is the delivery.
        "dev" => return Ok(()),
        "email" => ChannelKind::Email,
        "sms" => ChannelKind::Sms,
        "webhook" => ChannelKind::Webhook,
        other => {
            return Err(tally_channels::ChannelError::Permanent(format!(
                "unknown channel kind {other}"
            )));
        }
    };
    let message = Message {
        id: m.message.dedup_key.clone(),
        kind,
        address: m.message.address.clone(),
        subject: m.message.subject.clone(),
        body: body.to_string(),
        data: m.message.data.clone(),
    };
    channels.deliver(&message).await.map(|_| ())
}
