//! `tally federation …`: this node's peers (other operators' nodes) and the link to each.

use crate::client::{Client, Conn, anonymous};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::process::ExitCode;
use tally_client::wire::federation::{AddPeerRequest, PeerView};

#[derive(Subcommand)]
pub enum FederationCommand {
    /// This node's id: the fingerprint of its node key, to give other operators out of band
    /// (they pass it to `add-peer --fingerprint`).
    Id(PeersArgs),
    /// Add another operator's node as a peer (operator): fetch its key from its `GET
    /// /v1/node`, check it against the fingerprint its operator gave you out of band, and
    /// store it. Run again to change its name or URL. The peer must add this node too.
    AddPeer(AddPeerArgs),
    /// The peers, with the messages pending, sent, failed and received for each.
    Peers(PeersArgs),
    /// One peer by node id or name.
    Show(PeerArgs),
    /// Send the peer a `ping`; it answers with a `pong`. `--wait` until the pong arrives.
    Ping(PingArgs),
}

#[derive(Args)]
pub struct AddPeerArgs {
    /// The peer's base URL, e.g. https://tally.other-operator.example
    pub url: String,
    /// The peer's node key fingerprint (`node_key_fingerprint` of its `GET /v1/node`, 64
    /// hex), as its operator told you — never taken from the peer itself.
    #[arg(long)]
    pub fingerprint: String,
    /// The name to call it by here. Default: `op-` and the first 16 hex of its node id.
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Args)]
pub struct PeersArgs {
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Args)]
pub struct PeerArgs {
    /// Node id or name.
    pub peer: String,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Args)]
pub struct PingArgs {
    /// Node id or name.
    pub peer: String,
    /// Wait up to this many seconds for the pong (0: do not wait).
    #[arg(long, default_value_t = 0)]
    pub wait: u64,
    #[command(flatten)]
    pub conn: Conn,
}

pub async fn federation(cmd: FederationCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        FederationCommand::AddPeer(a) => add_peer(a).await,
        FederationCommand::Id(a) => {
            let c = Client::new(&a.conn)?;
            let node = c.api.node().await?;
            c.show(&node, |n| {
                format!(
                    "node id     {}\nnode key    {}\nurl         {}",
                    n.node_key_fingerprint,
                    n.node_key,
                    c.base()
                )
            });
            Ok(ExitCode::SUCCESS)
        }
        FederationCommand::Peers(a) => {
            let c = Client::new(&a.conn)?;
            let peers = c.api.peers().await?;
            c.show(&peers, |v| {
                if v.is_empty() {
                    "no peers".to_string()
                } else {
                    v.iter().map(peer_line).collect::<Vec<_>>().join("\n")
                }
            });
            Ok(ExitCode::SUCCESS)
        }
        FederationCommand::Show(a) => {
            let c = Client::new(&a.conn)?;
            let peer = c.api.peer(&a.peer).await?;
            c.show(&peer, peer_line);
            Ok(ExitCode::SUCCESS)
        }
        FederationCommand::Ping(a) => ping(a).await,
    }
}

async fn add_peer(a: AddPeerArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let wanted = a.fingerprint.trim().to_ascii_lowercase();
    if wanted.len() != 64 || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("--fingerprint: 64 hex digits (the peer's node_key_fingerprint)");
    }
    let url = a.url.trim().trim_end_matches('/').to_string();
    let node = anonymous(&url)?
        .node()
        .await
        .with_context(|| format!("fetching the peer's key from {url}/v1/node"))?;
    if node.node_key_fingerprint != wanted {
        bail!(
            "the node at {url} has key fingerprint {}, not the {wanted} you were given: not added \
             (check the URL and the fingerprint with its operator)",
            node.node_key_fingerprint
        );
    }
    let name = a
        .name
        .unwrap_or_else(|| format!("op-{}", &node.node_key_fingerprint[..16]));
    let peer = c
        .api
        .peer_add(&AddPeerRequest {
            name,
            url,
            public_key: node.node_key,
            fingerprint: wanted,
        })
        .await?;
    c.show(&peer, |p| format!("peer added: {}", peer_line(p)));
    Ok(ExitCode::SUCCESS)
}

async fn ping(a: PingArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let before = c.api.peer(&a.peer).await?.received;
    let queued = c.api.peer_ping(&a.peer).await?;
    if a.wait == 0 {
        c.show(&queued, |q| format!("ping {} queued for {}", q.id, q.to));
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(a.wait);
    loop {
        let peer = c.api.peer(&a.peer).await?;
        if peer.received > before {
            c.show(&peer, |p| format!("pong from {}", peer_line(p)));
            return Ok(ExitCode::SUCCESS);
        }
        if std::time::Instant::now() >= deadline {
            eprintln!(
                "no answer from {} within {} s (ping {} stays queued: {} pending, {} failed)",
                peer.name, a.wait, queued.id, peer.pending, peer.failed
            );
            return Ok(ExitCode::from(1));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn peer_line(p: &PeerView) -> String {
    let last = p
        .last_received_at
        .map_or_else(|| "never".to_string(), |t| t.to_rfc3339());
    format!(
        "{}  {}  {}\n  node id {}\n  to it: {} pending, {} sent, {} failed; from it: {} received (last {last})",
        p.name,
        p.url,
        p.added_at.to_rfc3339(),
        p.node_id,
        p.pending,
        p.sent,
        p.failed,
        p.received
    )
}
