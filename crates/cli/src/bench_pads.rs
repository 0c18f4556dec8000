//! `tally bench pads`: encrypted requests per second from pad holders (issue [8]), each a 1 KiB
//! plaintext enciphered with pad bytes and tagged with a one-time Poly1305 key, taken by the
//! node (the tag checked under the twin's bytes, the pad's cursors moved under their guard,
//! the byte debit posted to the clearing account, the record line written) and answered with
//! a sealed reply, each durable before its answer; over HTTP on loopback (the path holders
//! take) and in process; and the pad bytes per second that consumes. Next to it, in the same
//! run, durable transfers per second over HTTP with as many clients: the ledger's figure of
//! issue [1] on the same path.
//!
//! The requests are `collect`s of an empty mailbox padded to 1 KiB (charged, taken, each
//! debited). Not yet: the relay's `post` (step 6 of `docs/protocols/pads.md`), PostgreSQL.

use crate::bench_kit::{fmt_rate, fmt_ratio, print_rows};
use crate::bench_sessions::{Operator, operator};
use base64::Engine as _;
use clap::Args;
use std::process::ExitCode;
use std::time::Instant;
use tally_proto::pad::file::PadFile;
use tally_proto::pad::holder::Holder;
use tally_proto::pad::plain::Request;

#[derive(Args)]
pub struct PadsBench {
    /// Requests over HTTP, split over the holders.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Holders sending at once (each waits for its answer before its next frame).
    #[arg(long, default_value_t = 16)]
    holders: usize,
    /// Requests in process (0: skip that row).
    #[arg(long, default_value_t = 20_000)]
    in_process: usize,
    /// Transfers over HTTP for the reference, split over the same number of clients.
    #[arg(long, default_value_t = 4_000)]
    transfers: usize,
}

/// Plaintext bytes of one request.
const REQUEST_LEN: usize = 1024;
/// Pad bytes one request and its reply take: 1 KiB and a key up, 256 bytes and a key down.
const BYTES_PER_REQUEST: u64 = REQUEST_LEN as u64 + 32 + 256 + 32;

/// A 1 KiB `collect` plaintext (its fields, then zero padding).
fn request() -> anyhow::Result<Vec<u8>> {
    let mut plain = Request::Collect { max_len: 256 }.encode(false)?.to_vec();
    plain.resize(REQUEST_LEN, 0);
    Ok(plain)
}

/// `n` pads, each with room for `per_pad` requests: (file, holder).
async fn pads(op: &Operator, n: usize, per_pad: usize) -> anyhow::Result<Vec<(PadFile, Holder)>> {
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
                limit_minor: None,
                debits_must_not_exceed_credits: Some(false),
                credits_must_not_exceed_debits: None,
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
                post_price_minor: 0,
                commission_bps: 0,
            },
        )
        .await?;
    let size = (per_pad as u64 * BYTES_PER_REQUEST + 8192).max(4096);
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
        out.push((file, holder));
    }
    Ok(out)
}

pub async fn run(args: PadsBench) -> anyhow::Result<ExitCode> {
    let holders = args.holders.max(1);
    let op = operator().await?;
    let plain = request()?;
    let per_holder = args.requests.div_ceil(holders);
    let per_in_process = args.in_process.div_ceil(holders);
    eprintln!(
        "selling {holders} pads of {} KiB ...",
        (per_holder + per_in_process) as u64 * BYTES_PER_REQUEST / 1024
    );
    let sold = pads(&op, holders, per_holder + per_in_process).await?;

    // Over HTTP: each holder seals its next frame, sends it, checks the reply, goes on.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (file, holder) in sold {
        let url = op.url.clone();
        let plain = plain.clone();
        tasks.push(tokio::spawn(async move {
            let client = crate::client::anonymous(&url)?;
            let mut holder = holder;
            for _ in 0..per_holder {
                let up = holder.seal_plain(&file.bytes, &plain, 256)?;
                let down = client.pad_frame(up.clone()).await?.value;
                holder.answered(&file.bytes, &up, &down)?;
            }
            Ok::<_, anyhow::Error>((file, holder))
        }));
    }
    let mut after_http = Vec::new();
    for t in tasks {
        after_http.push(t.await??);
    }
    let http_secs = started.elapsed().as_secs_f64();
    let http_rate = (per_holder * holders) as f64 / http_secs;

    // In process: the node's frame step without HTTP (same pads, further on).
    let mut in_process_rate = None;
    if args.in_process > 0 {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for (file, holder) in after_http {
            let node = op.node.clone();
            let plain = plain.clone();
            tasks.push(tokio::spawn(async move {
                let mut holder = holder;
                for _ in 0..per_in_process {
                    let up = holder.seal_plain(&file.bytes, &plain, 256)?;
                    let down = node.pads().frame(&up).await?.reply;
                    holder.answered(&file.bytes, &up, &down)?;
                }
                Ok::<_, anyhow::Error>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        in_process_rate = Some((per_in_process * holders) as f64 / started.elapsed().as_secs_f64());
    }

    // The reference: durable transfers over HTTP, as many clients, each waiting for its answer.
    let transfers = transfers_over_http(&op, holders, args.transfers.div_ceil(holders)).await?;

    // Every request was debited: 1,344 charged bytes at 1 minor unit per KiB.
    let audit = op.admin.audit().await?;
    if !audit.ok {
        anyhow::bail!("the audit after the benchmark found problems");
    }
    let mut rows = vec![[
        format!("1 KiB requests over HTTP ({holders} holders)"),
        fmt_rate(http_rate),
        fmt_ratio(http_rate, Some(transfers), 3),
    ]];
    rows.push([
        "pad bytes over HTTP".into(),
        format!("{:.2} MB", http_rate * BYTES_PER_REQUEST as f64 / 1e6),
        String::new(),
    ]);
    if let Some(r) = in_process_rate {
        rows.push([
            "1 KiB requests in process".into(),
            fmt_rate(r),
            fmt_ratio(r, Some(transfers), 3),
        ]);
        rows.push([
            "pad bytes in process".into(),
            format!("{:.2} MB", r * BYTES_PER_REQUEST as f64 / 1e6),
            String::new(),
        ]);
    }
    rows.push([
        format!("transfers over HTTP ({holders} clients)"),
        fmt_rate(transfers),
        "1.00x".into(),
    ]);
    print_rows(["measurement", "per second", "of transfers/s"], &rows);
    Ok(ExitCode::SUCCESS)
}

/// Durable transfers per second over HTTP, `clients` at once, `per_client` each.
async fn transfers_over_http(
    op: &Operator,
    clients: usize,
    per_client: usize,
) -> anyhow::Result<f64> {
    use tally_client::wire::ledger::{AccountKindDto, OpenAccountRequest};
    let open = |kind, bounded| OpenAccountRequest {
        owner: None,
        currency: "EUR".into(),
        kind: Some(kind),
        limit_minor: None,
        debits_must_not_exceed_credits: Some(bounded),
        credits_must_not_exceed_debits: None,
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
