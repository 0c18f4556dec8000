//! `tally bench pads`: encrypted requests per second through the relay (issue [8]), on SQLite
//! and on PostgreSQL. Each request is a `post` of a 1 KiB plaintext (the 22 bytes of its
//! fields and a 1,002-byte message, exactly one size class) from one pad holder into the
//! mailbox of another bench pad, enciphered with pad bytes and tagged with a one-time Poly1305
//! key. The node takes it (the tag checked under the twin's bytes, the pad's cursors moved
//! under their guard, the byte price and the post price debited into the clearing account,
//! the message sealed at rest into the recipient's mailbox, the record line written) and
//! answers with a sealed reply, all in one transaction committed before the answer
//! (`synchronous=FULL`, `fsync=on`). The holder checks every reply (`Holder::answered`).
//!
//! Per store: posts per second over HTTP on loopback (the path holders take) and in process,
//! the pad bytes per second they consume (up frame, its key, the reply and its key, read from
//! the holders' cursors), and beside them, on the same node in the same run, durable transfers
//! per second over HTTP with as many clients: the ledger's figure of issue [1] on the same
//! path. Each node is a `tally serve` node (HTTP, workers) on its own store; PostgreSQL is a
//! throwaway cluster from Debian's binaries, or `--database-url`. After each store: every
//! post's debit and stored message are counted, and the node's full audit must pass.

use crate::bench_kit::{fmt_rate, fmt_ratio, print_rows};
use base64::Engine as _;
use clap::Args;
use std::process::ExitCode;
use std::time::Instant;
use tally_proto::pad::file::{PadFile, TRAFFIC_START};
use tally_proto::pad::frame::KEY_LEN;
use tally_proto::pad::holder::Holder;
use tally_proto::pad::ids::MailboxAddress;
use tally_proto::pad::plain::{ReplyBody, Request};

#[derive(Args)]
pub struct PadsBench {
    /// Posts over HTTP per store, split over the holders.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Holders sending at once (each waits for its answer before its next frame).
    #[arg(long, default_value_t = 16)]
    holders: usize,
    /// Posts in process per store (0: skip that row).
    #[arg(long, default_value_t = 5_000)]
    in_process: usize,
    /// Transfers over HTTP per store for the reference, split over the same number of clients.
    #[arg(long, default_value_t = 4_000)]
    transfers: usize,
    /// Use this PostgreSQL instead of starting a throwaway cluster (a database no other node
    /// used; its data is kept).
    #[arg(long, env = "TALLY_BENCH_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Skip PostgreSQL.
    #[arg(long)]
    no_postgres: bool,
}

/// Plaintext bytes of one request: one size class, filled.
const REQUEST_LEN: usize = 1024;

/// A `post` of `to` whose plaintext is exactly [`REQUEST_LEN`] bytes, padded or not: its
/// fields (kind, address, flag, body length) and the longest body that still fits the class.
fn post(to: MailboxAddress) -> anyhow::Result<Request> {
    let with = |body| Request::Post {
        to,
        show_from: false,
        body,
    };
    let fields = with(Vec::new()).encode(false)?.len();
    let body = (0..REQUEST_LEN - fields).map(|i| i as u8).collect();
    let request = with(body);
    let (padded, bare) = (request.encode(true)?.len(), request.encode(false)?.len());
    anyhow::ensure!(
        padded == REQUEST_LEN && bare == REQUEST_LEN,
        "a post encodes to {padded} bytes ({bare} unpadded), not {REQUEST_LEN}"
    );
    Ok(request)
}

/// A bench pad: its file, its holder, its mailbox.
struct Pad {
    file: PadFile,
    holder: Holder,
    mailbox: MailboxAddress,
}

impl Pad {
    /// Pad bytes its answered frames used, up and down.
    fn used(&self) -> u64 {
        (self.holder.up_next - TRAFFIC_START) + (self.file.bytes.size() - self.holder.down_low)
    }
}

/// `n` pads of `size` bytes, sold from a till at the tariff of 1 minor unit per KiB of pad
/// bytes and 1 per post.
async fn pads(
    op: &crate::bench_sessions::Operator,
    n: usize,
    size: u64,
) -> anyhow::Result<Vec<Pad>> {
    use tally_client::wire::ledger::{AccountKindDto, OpenAccountRequest};
    use tally_client::wire::pads::{PadSaleRequest, PadTariff};
    let till = op
        .admin
        .account_open(
            None,
            &OpenAccountRequest {
                owner: None,
                currency: "EUR".into(),
                kind: Some(AccountKindDto::Settlement),
                debits_must_not_exceed_credits: Some(false),
                ..Default::default()
            },
        )
        .await?
        .value
        .id;
    op.admin
        .pad_tariff(
            "EUR",
            &PadTariff {
                byte_price_minor_per_kib: 1,
                post_price_minor: 1,
                commission_bps: 0,
            },
        )
        .await?;
    let mut out = Vec::new();
    for _ in 0..n {
        let sold = op
            .admin
            .pad_sell(
                &PadSaleRequest {
                    from: tally_kernel::Id(till),
                    value_minor: 1_000_000_000,
                    currency: "EUR".into(),
                    size,
                    mode: Some("one_time".into()),
                    node_url: op.url.clone(),
                    allow: Vec::new(),
                },
                &uuid::Uuid::now_v7().to_string(),
            )
            .await?
            .value;
        let bytes = base64::engine::general_purpose::STANDARD.decode(&sold.file)?;
        let file = PadFile::decode(&bytes)?;
        let holder = Holder::new(file.pad, file.bytes.size());
        let mailbox = sold
            .mailbox
            .parse()
            .map_err(|e| anyhow::anyhow!("the sale's mailbox {}: {e}", sold.mailbox))?;
        out.push(Pad {
            file,
            holder,
            mailbox,
        });
    }
    Ok(out)
}

/// Where the frames go: the node over HTTP (a connection of each holder's own), or its frame
/// step in process.
#[derive(Clone)]
enum Path {
    Http(String),
    InProcess(tally_service::Node),
}

/// One holder's way to the node.
enum Link {
    Http(tally_client::Client),
    InProcess(tally_service::Node),
}

impl Path {
    fn link(&self) -> anyhow::Result<Link> {
        Ok(match self {
            Path::Http(url) => Link::Http(crate::client::anonymous(url)?),
            Path::InProcess(node) => Link::InProcess(node.clone()),
        })
    }
}

impl Link {
    /// The node's reply to the up frame `up`.
    async fn frame(&self, up: &[u8]) -> anyhow::Result<Vec<u8>> {
        Ok(match self {
            Link::Http(client) => client.pad_frame(up.to_vec()).await?.value.to_vec(),
            Link::InProcess(node) => node.pads().frame(up).await?.reply,
        })
    }
}

/// Each sender posts its request `per_pad` times, one frame in flight, checking every reply;
/// all senders at once. The senders back, the seconds taken and the minor units debited.
async fn posts(
    path: &Path,
    senders: Vec<(Pad, Request)>,
    per_pad: usize,
) -> anyhow::Result<(Vec<(Pad, Request)>, f64, i64)> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (mut pad, request) in senders {
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            let link = path.link()?;
            let mut debited = 0;
            for _ in 0..per_pad {
                let up = pad.holder.seal(&pad.file.bytes, &request, true)?;
                let down = link.frame(&up).await?;
                let (reply, _) = pad.holder.answered(&pad.file.bytes, &up, &down)?;
                anyhow::ensure!(
                    matches!(reply.body, ReplyBody::Post { .. }) && reply.debit_minor > 0,
                    "a post answered with {:?}, {} debited",
                    reply.body.kind(),
                    reply.debit_minor
                );
                debited += reply.debit_minor;
            }
            Ok::<_, anyhow::Error>((pad, request, debited))
        }));
    }
    let mut back = Vec::new();
    let mut debited = 0;
    for t in tasks {
        let (pad, request, d) = t.await??;
        back.push((pad, request));
        debited += d;
    }
    Ok((back, started.elapsed().as_secs_f64(), debited))
}

/// What one store measured, per second.
struct Measured {
    http: f64,
    http_bytes: f64,
    in_process: Option<(f64, f64)>,
    transfers: f64,
}

/// The rows on one store: posts over HTTP, in process, then transfers over HTTP; the counts
/// and the audit checked.
async fn measure(
    label: &str,
    database_url: Option<String>,
    args: &PadsBench,
) -> anyhow::Result<Measured> {
    let holders = args.holders.max(1);
    let per_http = args.requests.div_ceil(holders);
    let per_in_process = args.in_process.div_ceil(holders);
    let op = crate::bench_sessions::operator_on(label, database_url).await?;
    // A post and its reply take the up frame and its key, 256 bytes and a key down.
    let per_post = REQUEST_LEN as u64 + KEY_LEN + 256 + KEY_LEN;
    let size = ((per_http + per_in_process) as u64 * per_post + 8192).max(4096);
    eprintln!(
        "{label}: selling {} of {} KiB …",
        count(holders, "pad"),
        size.div_ceil(1024)
    );
    // Each pad posts into the next one's mailbox (a lone sender into one more pad).
    let mut sold = pads(&op, holders, size).await?;
    if holders == 1 {
        sold.extend(pads(&op, 1, 4096).await?);
    }
    let mailboxes: Vec<MailboxAddress> = sold.iter().map(|p| p.mailbox).collect();
    let mut senders = Vec::new();
    for (i, pad) in sold.into_iter().take(holders).enumerate() {
        let request = post(mailboxes[(i + 1) % mailboxes.len()])?;
        senders.push((pad, request));
    }
    let waiting_before = op.node.store().pad_messages_waiting().await?;

    eprintln!("{label}: {} posts over HTTP …", per_http * holders);
    let (senders, http_secs, mut debited) =
        posts(&Path::Http(op.url.clone()), senders, per_http).await?;
    let http_used: u64 = senders.iter().map(|(p, _)| p.used()).sum();
    let mut answered = per_http * holders;
    let http_rate = answered as f64 / http_secs;

    let mut in_process = None;
    if per_in_process > 0 {
        eprintln!("{label}: {} posts in process …", per_in_process * holders);
        let (senders, secs, d) =
            posts(&Path::InProcess(op.node.clone()), senders, per_in_process).await?;
        let used: u64 = senders.iter().map(|(p, _)| p.used()).sum::<u64>() - http_used;
        let n = per_in_process * holders;
        answered += n;
        debited += d;
        in_process = Some((n as f64 / secs, used as f64 / secs));
    }

    eprintln!(
        "{label}: {} transfers over HTTP …",
        args.transfers.div_ceil(holders) * holders
    );
    let transfers = transfers_over_http(&op, holders, args.transfers.div_ceil(holders)).await?;

    // Every post was debited (checked per reply) and left its message in a mailbox.
    let stored = op.node.store().pad_messages_waiting().await? - waiting_before;
    anyhow::ensure!(
        stored == answered as u64,
        "{label}: {answered} posts answered but {stored} messages stored"
    );
    let audit = op.admin.audit().await?;
    println!(
        "{label}: {answered} posts answered, {debited} minor units debited, {stored} messages in \
         mailboxes; audit {} ({} journal entries)",
        if audit.ok { "passed" } else { "FAILED" },
        audit.entries
    );
    for p in audit.problems.iter().take(10) {
        println!("  problem: {p}");
    }
    anyhow::ensure!(
        audit.ok,
        "{label}: the audit after the benchmark found problems"
    );
    op.stop().await;
    Ok(Measured {
        http: http_rate,
        http_bytes: http_used as f64 / http_secs,
        in_process,
        transfers,
    })
}

/// The PostgreSQL to run on: its URL and the throwaway cluster (stopped on drop) when one was
/// started; `None`, and a line saying why, when there is none.
fn postgres(
    args: &PadsBench,
) -> anyhow::Result<Option<(String, Option<tally_testkit::PgCluster>)>> {
    if args.no_postgres {
        println!("PostgreSQL: skipped (--no-postgres)");
        return Ok(None);
    }
    if let Some(url) = &args.database_url {
        return Ok(Some((url.clone(), None)));
    }
    if tally_testkit::postgres_bin_dir().is_none() {
        println!("PostgreSQL: no server binaries found (install Debian's postgresql); skipped");
        return Ok(None);
    }
    eprintln!("starting a throwaway PostgreSQL cluster …");
    let cluster = tally_testkit::PgCluster::start().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Some((cluster.url(), Some(cluster))))
}

/// `n` and `what`, plural unless one.
fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn mb(bytes_per_s: f64) -> String {
    format!("{:.2} MB", bytes_per_s / 1e6)
}

/// One store's table: each figure beside durable transfers/s over HTTP of the same node.
fn print_store(label: &str, holders: usize, m: &Measured) {
    let mut rows = vec![
        [
            format!("1 KiB posts over HTTP ({})", count(holders, "holder")),
            fmt_rate(m.http),
            fmt_ratio(m.http, Some(m.transfers), 3),
        ],
        [
            "pad bytes over HTTP".into(),
            mb(m.http_bytes),
            String::new(),
        ],
    ];
    if let Some((rate, bytes)) = m.in_process {
        rows.push([
            "1 KiB posts in process".into(),
            fmt_rate(rate),
            fmt_ratio(rate, Some(m.transfers), 3),
        ]);
        rows.push(["pad bytes in process".into(), mb(bytes), String::new()]);
    }
    rows.push([
        format!("transfers over HTTP ({})", count(holders, "client")),
        fmt_rate(m.transfers),
        "1.00x".into(),
    ]);
    print_rows([label, "per second", "of transfers/s"], &rows);
}

pub async fn run(args: PadsBench) -> anyhow::Result<ExitCode> {
    let holders = args.holders.max(1);
    println!(
        "tally bench pads: 1 KiB posts through the relay from {} (each \
         debited, stored in a mailbox, durable before its answer), beside durable transfers \
         over HTTP on the same node",
        count(holders, "pad holder")
    );
    let sqlite = measure("SQLite", None, &args).await?;
    let mut pg = None;
    if let Some((url, cluster)) = postgres(&args)? {
        pg = Some(measure("PostgreSQL", Some(url), &args).await?);
        drop(cluster);
    }
    print_store("SQLite", holders, &sqlite);
    if let Some(pg) = &pg {
        print_store("PostgreSQL", holders, pg);
    }
    Ok(ExitCode::SUCCESS)
}

/// Durable transfers per second over HTTP, `clients` at once, `per_client` each.
async fn transfers_over_http(
    op: &crate::bench_sessions::Operator,
    clients: usize,
    per_client: usize,
) -> anyhow::Result<f64> {
    use tally_client::wire::ledger::{AccountKindDto, OpenAccountRequest};
    let open = |kind, bounded| OpenAccountRequest {
        owner: None,
        currency: "EUR".into(),
        kind: Some(kind),
        debits_must_not_exceed_credits: Some(bounded),
        ..Default::default()
    };
    let world = op
        .admin
        .account_open(None, &open(AccountKindDto::Settlement, false))
        .await?
        .value
        .id;
    let mut accounts = Vec::new();
    for _ in 0..clients.max(2) {
        accounts.push(
            op.admin
                .account_open(None, &open(AccountKindDto::Customer, true))
                .await?
                .value
                .id,
        );
    }
    let lanes = (0..clients)
        .map(|c| (op.admin.clone(), world, accounts[(c + 1) % accounts.len()]))
        .collect();
    crate::bench_kit::transfer_rate(lanes, per_client).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_fills_one_kib_exactly() {
        let request = post(MailboxAddress([7; 16])).expect("a post");
        let Request::Post { body, .. } = &request else {
            panic!("not a post");
        };
        // kind 1, address 16, flag 1, body length 4.
        assert_eq!(body.len(), REQUEST_LEN - 22);
        assert_eq!(request.encode(true).expect("encodes").len(), REQUEST_LEN);
        assert_eq!(request.reply_len(), 256);
    }
}
