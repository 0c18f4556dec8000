//! Background work of a node: delivering the outbox, and feeding machines their timeouts
//! (expired holds, expired out-of-band sessions, overdue sales).
//!
//! * **Outbox.** The worker sleeps until a commit enqueues a message (the executor signals
//!   it) or a retry falls due, leases what is due, and delivers up to [`DELIVERY_CONCURRENCY`]
//!   messages at once, leasing more as deliveries finish, so a code goes out as soon as its
//!   session commits and a slow channel does not hold up the others. Secrets carried by
//!   reference are rendered into the text only here. A failed delivery is retried with
//!   backoff (decided in the database); only failures wait.
//! * **Timers.** One sweeper asks each protocol for the rows whose `poll_timeout` has passed
//!   and feeds them their timeout, a bounded number per pass.
//!
//! Both are safe to run in every `tally serve` process sharing a database: the outbox leases
//! rows before delivering (no two processes deliver the same row at once), and every timeout
//! is a step guarded on the state it was decided from. A failed pass is logged and retried.
//!
//! Rejected: a fixed sleep after every pass (it held a flow of e-mail codes to ~9/s), and
//! delivering one message after another (one slow SMTP server stalled every channel).

use crate::Node;
use std::sync::Arc;
use std::time::Duration;
use tally_channels::{ChannelKind, ChannelSet, Message};
use tally_kernel::Timestamp;
use tally_store::outbox::StoredMessage;
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// Most timeouts fed per protocol and pass.
const BATCH: i64 = 256;
/// Most deliveries in flight at once (each bounded by its channel's timeouts and retries).
pub const DELIVERY_CONCURRENCY: usize = 32;
/// How long a leased message is withheld from other workers.
const LEASE_S: i64 = 300;

/// Handles to stop the workers.
pub struct Workers {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Wake the outbox worker now (the executor does after every commit with messages).
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

/// Starts the outbox worker and the timer sweeper. `tick` bounds how long either waits when
/// nothing wakes it (retries falling due, timeouts).
pub fn start(node: Node, mut channels: ChannelSet, tick: Duration) -> Workers {
    if channels.channel(ChannelKind::Peer).is_none() {
        match tally_channels::PeerChannel::new() {
            Ok(peer) => {
                channels.insert(Arc::new(peer));
            }
            Err(e) => tracing::error!(error = %e, "no channel to peer nodes"),
        }
    }
    let outbox_wakeup = node.core().outbox_signal();
    let outbox = tokio::spawn(outbox_loop(
        node.clone(),
        Arc::new(channels),
        outbox_wakeup.clone(),
        tick,
    ));
    let sweeper = tokio::spawn(async move {
        loop {
            sweep(&node).await;
            tokio::time::sleep(tick).await;
        }
    });
    Workers {
        tasks: vec![outbox, sweeper],
        outbox_wakeup,
    }
}

/// One pass of every timer: expired holds, out-of-band sessions, overdue sales.
pub async fn sweep(node: &Node) {
    match node.store().expire_due(node.now(), BATCH).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(expired = n, "expired overdue holds"),
        Err(e) => tracing::warn!(error = %e, "hold expiry pass failed"),
    }
    match node.oob().sweep_timeouts(BATCH).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(expired = n, "expired out-of-band sessions"),
        Err(e) => tracing::warn!(error = %e, "session expiry pass failed"),
    }
    match node.delivery().sweep_timeouts(BATCH).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(steps = n, "overdue alerts and expiries of unpaid sales"),
        Err(e) => tracing::warn!(error = %e, "overdue pass failed"),
    }
    match node.sessions().sweep_timeouts(BATCH).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(steps = n, "trading sessions left unanswered"),
        Err(e) => tracing::warn!(error = %e, "trading session timeout pass failed"),
    }
    match node.pads().sweep(BATCH).await {
        Ok((0, 0)) => {}
        Ok((escrows, payouts)) => {
            tracing::info!(
                escrows,
                payouts,
                "pad escrows resolved and clearing settled"
            )
        }
        Err(e) => tracing::warn!(error = %e, "pad escrow and settlement pass failed"),
    }
    match node.receipts().sweep_timeouts(BATCH).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(aborted = n, "aborted fair exchanges left unanswered"),
        Err(e) => tracing::warn!(error = %e, "exchange timeout pass failed"),
    }
}

async fn outbox_loop(node: Node, channels: Arc<ChannelSet>, wake: Arc<Notify>, tick: Duration) {
    let marks = marker(node.clone());
    let mut in_flight: JoinSet<()> = JoinSet::new();
    loop {
        // Finished deliveries free their slots (a JoinSet counts a task until it is reaped).
        while in_flight.try_join_next().is_some() {}
        let free = DELIVERY_CONCURRENCY - in_flight.len();
        let mut claimed = 0;
        if free > 0 {
            match node
                .store()
                .claim_due(Timestamp::now(), free as i64, LEASE_S)
                .await
            {
                Ok(due) => {
                    claimed = due.len();
                    for m in due {
                        let (node, channels, marks) =
                            (node.clone(), channels.clone(), marks.clone());
                        in_flight.spawn(async move {
                            let id = m.id;
                            if deliver_counted(&node, &channels, m, false).await {
                                // Marked with others in one commit: the slot frees now.
                                let _ = marks.send(id);
                            }
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "outbox lease failed"),
            }
        }
        // More may be due already: lease again at once while slots are free.
        if claimed == free && free > 0 {
            continue;
        }
        tokio::select! {
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            _ = wake.notified() => {}
            _ = tokio::time::sleep(tick) => {}
        }
    }
}

/// One delivery pass, in the caller's task: lease what is due and deliver it (concurrently,
/// bounded). Returns how many were delivered. For tests and tools; the worker runs its own
/// loop.
pub async fn deliver_due(
    node: &Node,
    channels: &ChannelSet,
    now: Timestamp,
) -> Result<usize, tally_store::StoreError> {
    let due = node
        .store()
        .claim_due(now, DELIVERY_CONCURRENCY as i64, LEASE_S)
        .await?;
    let results = futures::future::join_all(
        due.into_iter()
            .map(|m| deliver_counted(node, channels, m, true)),
    )
    .await;
    Ok(results.into_iter().filter(|ok| *ok).count())
}

/// Records deliveries as they finish, many in one commit: under load a message costs a
/// fraction of a commit instead of one. A mark lost to a crash means the lease runs out and
/// the message goes out once more (at least once, deduplicated by its key).
fn marker(node: Node) -> tokio::sync::mpsc::UnboundedSender<tally_kernel::Id> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut ids = Vec::new();
        while rx.recv_many(&mut ids, 1024).await > 0 {
            match node.store().mark_sent_many(&ids, Timestamp::now()).await {
                Ok(()) => {
                    metrics::counter!("tally_outbox_delivered_total").increment(ids.len() as u64);
                }
                Err(e) => tracing::warn!(error = %e, "cannot record deliveries"),
            }
            ids.clear();
        }
    });
    tx
}

/// Delivers one leased message and records the result (a success only when `mark_sent`; the
/// worker's marker records its successes in batches); true when it was delivered.
async fn deliver_counted(
    node: &Node,
    channels: &ChannelSet,
    m: StoredMessage,
    mark_sent: bool,
) -> bool {
    let store = node.store();
    let result = if m.message.kind == tally_store::federation::PEER_KIND {
        // Sealed under the node key only now, so its time is fresh on every retry.
        match node.federation().outgoing(&m).await {
            Ok((Some(url), sealed)) => deliver_peer(channels, &m, url, sealed).await,
            // To this node itself (it plays both roles): through its own inbox.
            Ok((None, sealed)) => match node.receive_peer_message(sealed.as_bytes()).await {
                Ok(_) => Ok(()),
                Err(e @ crate::ServiceError::PeerRefused(_)) => Err(
                    tally_channels::ChannelError::Permanent(format!("refused: {e}")),
                ),
                Err(e) => Err(tally_channels::ChannelError::Transient(e.to_string())),
            },
            Err(e @ crate::ServiceError::NotFound { .. }) => Err(
                tally_channels::ChannelError::Permanent(format!("cannot send: {e}")),
            ),
            Err(e) => Err(tally_channels::ChannelError::Transient(format!(
                "cannot seal the message: {e}"
            ))),
        }
    } else {
        // Secrets are not stored: they are put into the text (or the signature) only now.
        match (
            node.render(&m.message).await,
            node.signing_secret(&m.message).await,
        ) {
            (Ok(body), Ok(signing)) => {
                deliver_one(channels, &m, body.expose(), signing.as_ref()).await
            }
            (Err(e), _) | (_, Err(e)) => Err(tally_channels::ChannelError::Transient(format!(
                "cannot render the message: {e}"
            ))),
        }
    };
    let recorded = match &result {
        Ok(()) if !mark_sent => Ok(()),
        Ok(()) => store.mark_sent(m.id, Timestamp::now()).await.map(|_| {
            metrics::counter!("tally_outbox_delivered_total").increment(1);
        }),
        Err(e) => store
            .mark_attempt_failed(m.id, Timestamp::now(), e.reason(), e.is_permanent())
            .await
            .map(|state| {
                metrics::counter!("tally_outbox_failed_attempts_total", "kind" => m.message.kind.clone())
                    .increment(1);
                // Log the message id only: addresses and bodies may be personal data.
                tracing::warn!(message = %m.id, kind = %m.message.kind, state, error = e.reason(), "delivery failed");
            }),
    };
    if let Err(e) = recorded {
        // The lease runs out and the message is delivered again: at least once.
        tracing::warn!(message = %m.id, error = %e, "cannot record a delivery result");
    }
    result.is_ok()
}

async fn deliver_peer(
    channels: &ChannelSet,
    m: &StoredMessage,
    url: String,
    sealed: String,
) -> Result<(), tally_channels::ChannelError> {
    let message = Message {
        id: m.message.dedup_key.clone(),
        kind: ChannelKind::Peer,
        address: url,
        subject: m.message.subject.clone(),
        body: sealed,
        data: serde_json::Value::Null,
    };
    channels.deliver(&message).await.map(|_| ())
}

async fn deliver_one(
    channels: &ChannelSet,
    m: &StoredMessage,
    body: &str,
    signing: Option<&tally_kernel::Secret<String>>,
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
    match signing {
        Some(secret) => channels.deliver_signed(&message, secret).await.map(|_| ()),
        None => channels.deliver(&message).await.map(|_| ()),
    }
}
