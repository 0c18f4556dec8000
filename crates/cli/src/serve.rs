//! `tally serve`: open the node, start its workers, serve the HTTP API until SIGINT/SIGTERM.
//!
//! TLS: `--tls` serves HTTPS with a certificate issued by the node CA for the listen address
//! (issued at every start into DATA/tls.pem and DATA/tls.key; clients trust DATA/ca.pem), or
//! with the operator's own `--tls-cert`/`--tls-key`. Plain HTTP otherwise (for loopback, or
//! behind a TLS-terminating proxy).

use anyhow::Context;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tally_proto::oob::Policy;
use tally_service::delivery::DeliverySettings;
use tally_service::oob::OobSettings;
use tally_service::session::SessionSettings;
use tally_service::{Node, NodeConfig};

#[derive(Args)]
pub struct ServeArgs {
    /// Data directory: keys, CA, admin key and (by default) the SQLite database.
    #[arg(long, default_value = "./tally-data", env = "TALLY_DATA")]
    data: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = crate::DEFAULT_LISTEN, env = "TALLY_LISTEN")]
    listen: SocketAddr,
    /// PostgreSQL URL (postgres://…) for scale-out; several nodes may share one database.
    #[arg(long, env = "TALLY_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Development mode: messages to the `dev` channel go to the dev inbox, readable at
    /// /v1/dev/inbox/{address} and, in a browser, /dev/inbox/{address}. Never with real money.
    #[arg(long)]
    dev: bool,
    /// Development mode (as --dev) with the demo data set: a shop selling one product, and a
    /// customer `ana` with 50.00 EUR whose codes go to the dev inbox `ana`. Open
    /// http://127.0.0.1:8640/ to buy. Seeding again on the next start changes nothing.
    #[arg(long)]
    demo: bool,
    /// Serve HTTPS with a certificate from the node CA for the listen address (DATA/tls.pem).
    #[arg(long)]
    tls: bool,
    /// Serve HTTPS with this certificate chain (PEM) instead.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Channels configuration (JSON: smtp, webhook, sms sections).
    #[arg(long)]
    channels: Option<PathBuf>,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    body_limit: usize,
    /// Requests per second allowed per API key (or per IP without one).
    #[arg(long, default_value_t = 1000)]
    rate_limit: u32,
    /// A reverse proxy (its IP address; repeat for several) whose `X-Forwarded-For` names the
    /// client. Without it the TCP peer is the client, so behind a proxy every client shares one
    /// rate limit and one failed-authentication count.
    #[arg(long, value_name = "IP")]
    trusted_proxy: Vec<std::net::IpAddr>,
    /// Seconds a client has to send a request's headers; a connection whose headers trickle
    /// in slower is closed (slowloris).
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    header_timeout: u64,
    /// Most connections open at once; more are closed as they arrive (counted in
    /// `tally_http_connections_refused_total`). Kept below the open-file limit, which the
    /// node raises to its hard maximum at start.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Log format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Locked delivery: largest upload of one product file or document, in bytes.
    #[arg(long, default_value_t = DeliverySettings::default().upload_max_bytes)]
    upload_max_bytes: u64,
    /// Locked delivery, the credit rule: most unpaid sales one buyer may have open.
    #[arg(long, default_value_t = DeliverySettings::default().open_orders_max)]
    open_orders_max: i64,
    /// Locked delivery: hours without payment before the buyer is reminded and the merchant
    /// alerted (once per sale).
    #[arg(long, default_value_t = DeliverySettings::default().overdue_after_s / 3600)]
    overdue_after_hours: i64,
    /// Locked delivery: hours without payment before a sale expires (its key is never
    /// released, the buyer's credit slot is free again, later payments wait for a refund).
    #[arg(long, default_value_t = DeliverySettings::default().expire_after_s / 3600)]
    expire_after_hours: i64,
    /// Locked delivery: accepted age of a payment receiver's signed notification, seconds.
    #[arg(long, default_value_t = DeliverySettings::default().notification_window_s)]
    notification_window: i64,
    /// Out-of-band codes: digits (6 to 10).
    #[arg(long, default_value_t = OobSettings::default().policy.digits)]
    code_digits: u32,
    /// Out-of-band codes: seconds a code stays valid.
    #[arg(long, default_value_t = OobSettings::default().policy.ttl_s, value_name = "SECONDS")]
    code_ttl: i64,
    /// Out-of-band codes: wrong codes before a session locks.
    #[arg(long, default_value_t = OobSettings::default().policy.attempts_max)]
    code_attempts: u32,
    /// Seconds a sign-in's access token works.
    #[arg(long, default_value_t = OobSettings::default().token_ttl_s, value_name = "SECONDS")]
    token_ttl: i64,
    /// Most codes one second-channel address receives per --quota-window.
    #[arg(long, default_value_t = OobSettings::default().address_quota)]
    address_quota: i64,
    /// Most anonymous sign-ins and address verifications one client address may ask for per
    /// --quota-window.
    #[arg(long, default_value_t = OobSettings::default().client_quota)]
    client_quota: i64,
    /// Most anonymous sign-ins and address verifications the node sends per --quota-window
    /// (all clients together; decided in the database, so shared by every node on it).
    #[arg(long, default_value_t = OobSettings::default().node_quota)]
    node_quota: i64,
    /// The window of the address, client and node quotas, seconds.
    #[arg(long, default_value_t = OobSettings::default().quota_window_s, value_name = "SECONDS")]
    quota_window: i64,
    /// Most codes one user is sent per day.
    #[arg(long, default_value_t = OobSettings::default().user_daily_quota)]
    user_daily_quota: i64,
    /// Receipts: hours a fair exchange may stay unanswered by party B before the arbiter
    /// aborts it for the originator.
    #[arg(long, default_value_t = 24)]
    exchange_timeout_hours: i64,
    /// Trading sessions: seconds the customer's operator waits for the merchant's operator
    /// to answer an initiation, and the merchant's operator for the merchant.
    #[arg(long, default_value_t = SessionSettings::default().ack_window_s, value_name = "SECONDS")]
    session_ack_window: i64,
    /// Trading sessions: seconds after a session's end the merchant's operator waits for the
    /// records. Then the customer's record alone clears, the merchant's alone is disputed,
    /// and with none the session expires and the deposit is released.
    #[arg(long, default_value_t = SessionSettings::default().conclusion_window_s, value_name = "SECONDS")]
    session_conclusion_window: i64,
    /// Trading sessions: seconds after a session's end the customer's operator keeps the
    /// deposit held for the conclusion; longer than --session-conclusion-window by more than
    /// 600 s (the clearing must reach it while it holds the deposit).
    #[arg(long, default_value_t = SessionSettings::default().clearing_grace_s, value_name = "SECONDS")]
    session_clearing_grace: i64,
    /// Trading sessions: send every billing record (a customer's withdrawal, a merchant's
    /// deposit) to this URL as a signed webhook too (needs the webhook channel in --channels;
    /// the export is `tally billing export`).
    #[arg(long, value_name = "URL")]
    billing_webhook: Option<String>,
    /// Pads: seconds of a relay window; messages posted to mailboxes in one window are
    /// released together after it closes.
    #[arg(long, default_value_t = tally_proto::pad::relay::WINDOW_S, value_name = "SECONDS")]
    pad_relay_window: i64,
    /// Pads: the largest delay, seconds, after a window closes before its messages are
    /// released (drawn once per window).
    #[arg(long, default_value_t = tally_proto::pad::relay::DELAY_MAX_S, value_name = "SECONDS")]
    pad_relay_delay: i64,
    /// Pads: seconds an escrowed request to a provider waits for it to perform and for the
    /// holder to dispute, before it is paid or refused.
    #[arg(long, default_value_t = 7 * 86_400, value_name = "SECONDS")]
    pad_escrow: i64,
    /// Pads: seconds between settlements of the clearing accounts (providers' prices and the
    /// operator's fees paid out).
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pad_settle_every: i64,
    /// Trustee payments: the operator's fee, basis points (150 = 1.5 %).
    #[arg(long, default_value_t = OobSettings::default().trustee_fee_bps)]
    trustee_fee_bps: i64,
    /// `arbiter`: run as an arbiter node for receipt nodes under --trust-ca — its own data
    /// directory, database and arbiter key; it serves only /healthz, /metrics and
    /// /v1/arbiter/{key,decide}.
    #[arg(long, value_parser = ["node", "arbiter"], default_value = "node")]
    role: String,
    /// With --role arbiter: the CA certificate (PEM) of the receipt node(s) it judges.
    #[arg(long, value_name = "PEM", required_if_eq("role", "arbiter"))]
    trust_ca: Option<PathBuf>,
    /// Receipts: decide fair exchanges at this arbiter node (its URL) instead of this node's
    /// own arbiter, so fairness does not rest on the node that signs for party A. Its key is
    /// fetched at start and published in GET /v1/receipts/node.
    #[arg(long, value_name = "URL", conflicts_with = "trust_ca")]
    arbiter: Option<String>,
    /// The API key this node presents to the arbiter node (issued by its operator).
    #[arg(
        long,
        env = "TALLY_ARBITER_API_KEY",
        hide_env_values = true,
        requires = "arbiter"
    )]
    arbiter_api_key: Option<String>,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_tracing(&args.log_format);
    let config = NodeConfig {
        database_url: args.database_url.clone(),
        dev: args.dev || args.demo,
        delivery: DeliverySettings {
            upload_max_bytes: args.upload_max_bytes,
            open_orders_max: args.open_orders_max.max(1),
            overdue_after_s: args.overdue_after_hours.max(1) * 3600,
            expire_after_s: args.expire_after_hours.max(1) * 3600,
            notification_window_s: args.notification_window.max(1),
        },
        exchange_timeout_s: args.exchange_timeout_hours.max(1) * 3600,
        pads: tally_service::pad::PadSettings {
            relay: tally_proto::pad::relay::Schedule {
                window_s: args.pad_relay_window.max(1),
                delay_max_s: args.pad_relay_delay.max(1),
            },
            escrow_s: args.pad_escrow.max(1),
            settle_every_s: args.pad_settle_every.max(1),
            ..tally_service::pad::PadSettings::default()
        },
        sessions: SessionSettings {
            ack_window_s: args.session_ack_window,
            conclusion_window_s: args.session_conclusion_window,
            clearing_grace_s: args.session_clearing_grace,
            billing_webhook: args.billing_webhook.clone(),
            ..SessionSettings::default()
        },
        oob: OobSettings {
            policy: Policy {
                digits: args.code_digits,
                ttl_s: args.code_ttl,
                attempts_max: args.code_attempts,
            },
            token_ttl_s: args.token_ttl.max(1),
            address_quota: args.address_quota.max(1),
            quota_window_s: args.quota_window.max(1),
            user_daily_quota: args.user_daily_quota.max(1),
            client_quota: args.client_quota.max(1),
            node_quota: args.node_quota.max(1),
            trustee_fee_bps: args.trustee_fee_bps.clamp(0, 10_000),
            ..OobSettings::default()
        },
        arbiter: match &args.arbiter {
            Some(url) => {
                Some(crate::arbiter_link::connect(url, args.arbiter_api_key.clone()).await?)
            }
            None => None,
        },
        arbiter_role: match &args.trust_ca {
            Some(path) if args.role == "arbiter" => {
                let pem = std::fs::read_to_string(path)
                    .with_context(|| format!("--trust-ca {}", path.display()))?;
                let trusts = tally_kernel::crypto::Certificate::from_pem(&pem)
                    .map_err(|e| anyhow::anyhow!("--trust-ca {}: {e}", path.display()))?;
                Some(tally_service::receipt::remote::ArbiterRole { trusts })
            }
            _ => None,
        },
        ..NodeConfig::new(&args.data)
    };
    config
        .sessions
        .check()
        .map_err(|e| anyhow::anyhow!("--session-*: {e}"))?;
    config
        .oob
        .policy
        .check()
        .map_err(|e| anyhow::anyhow!("--code-digits/--code-ttl/--code-attempts: {e}"))?;
    let (node, admin) = Node::open(&config)
        .await
        .with_context(|| format!("opening the node in {}", args.data.display()))?;
    if admin.is_some() {
        eprintln!(
            "created the first admin API key: {}",
            node.files().admin_key().display()
        );
    }
    let demo = if args.demo {
        Some(
            node.seed_demo()
                .await
                .context("seeding the demo data set (--demo)")?,
        )
    } else {
        None
    };
    let channels = match &args.channels {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let cfg: tally_channels::ChannelsConfig = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            cfg.build().map_err(|e| anyhow::anyhow!("channels: {e}"))?
        }
        None => tally_channels::ChannelSet::new(),
    };
    let workers = tally_service::workers::start(node.clone(), channels, Duration::from_millis(500));
    let options = tally_http::HttpOptions {
        body_limit_bytes: args.body_limit,
        rate_limit_per_second: args.rate_limit,
        rate_limit_burst: args.rate_limit.saturating_mul(2),
        trusted_proxies: args.trusted_proxy.clone(),
        arbiter_only: args.role == "arbiter",
        secure_cookies: args.tls,
        ..tally_http::HttpOptions::default()
    };
    let app = tally_http::router(node.clone(), options)
        .into_make_service_with_connect_info::<SocketAddr>();
    let tls = tls_config(&args, &node).await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let handle = axum_server::Handle::new();
    let shutdown = handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing requests in flight");
        shutdown.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("binding {}", args.listen))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    eprintln!(
        "tally {} listening on {scheme}://{local} (data {}, {}{})",
        env!("CARGO_PKG_VERSION"),
        args.data.display(),
        match &args.database_url {
            Some(u) => format!("PostgreSQL {}", crate::redact_url(u)),
            None => "SQLite".to_string(),
        },
        if args.dev || args.demo {
            ", dev mode"
        } else {
            ""
        }
    );
    if let Some(demo) = &demo {
        eprintln!(
            "demo: open {scheme}://{local}/ — \"{}\" ({}) is on sale at {scheme}://{local}/p/{}; \
             sign in as `{}` (50.00 EUR; codes in the dev inbox {scheme}://{local}/dev/inbox/{}) \
             or with any dev-inbox name",
            demo.product.title,
            demo.product.price,
            demo.product.id,
            tally_service::demo::CUSTOMER,
            tally_service::demo::CUSTOMER,
        );
    }
    let open_files = crate::conn_cap::raise_open_files();
    // Room for the database, sealed files and outgoing connections beside the clients.
    let max_connections = match open_files {
        Some(limit) => args
            .max_connections
            .min(usize::try_from(limit.saturating_sub(256)).unwrap_or(usize::MAX))
            .max(16),
        None => args.max_connections,
    };
    if max_connections < args.max_connections {
        tracing::warn!(
            max_connections,
            open_files = open_files.unwrap_or(0),
            "--max-connections lowered to fit the open-file limit"
        );
    }
    let header_timeout = Duration::from_secs(args.header_timeout.max(1));
    // hyper reads more headers than the API accepts, so clients meet the API's limits, answered
    // in JSON (414/431), not hyper's empty answers.
    let tune = |b: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>| {
        b.http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_headers(tally_http::middleware::HEADER_COUNT_MAX * 4);
    };
    let served = match tls {
        Some(cfg) => {
            let mut server = axum_server::from_tcp_rustls(listener, cfg)?
                .map(|a| crate::conn_cap::Capped::new(a, max_connections))
                .handle(handle);
            tune(server.http_builder());
            server.serve(app).await
        }
        None => {
            let mut server = axum_server::from_tcp(listener)?
                .map(|a| crate::conn_cap::Capped::new(a, max_connections))
                .handle(handle);
            tune(server.http_builder());
            server.serve(app).await
        }
    };
    workers.stop();
    node.store().close().await;
    served.context("serving HTTP")?;
    Ok(ExitCode::SUCCESS)
}

async fn tls_config(
    args: &ServeArgs,
    node: &Node,
) -> anyhow::Result<Option<axum_server::tls_rustls::RustlsConfig>> {
    use axum_server::tls_rustls::RustlsConfig;
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        return Ok(Some(
            RustlsConfig::from_pem_file(cert, key)
                .await
                .context("loading --tls-cert/--tls-key")?,
        ));
    }
    if !args.tls {
        return Ok(None);
    }
    // Issued afresh at every start from the node CA (clients trust the CA, not the leaf), so
    // the names always match the address the node listens on now.
    let cert_path = args.data.join("tls.pem");
    let key_path = args.data.join("tls.key");
    let ip = args.listen.ip();
    let ips: Vec<std::net::IpAddr> = if ip.is_unspecified() {
        eprintln!(
            "note: --tls on {ip} certifies only localhost, 127.0.0.1 and ::1; remote clients \
             need a certificate for the node's public name (--tls-cert/--tls-key)"
        );
        vec![[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()]
    } else {
        vec![ip]
    };
    let now = tally_kernel::Timestamp::now();
    let ca_end = node.ca().certificate().not_after();
    let not_after = now.plus_seconds(397 * 86_400).min(ca_end);
    let id = node
        .ca()
        .issue_tls("tally node", &["localhost"], &ips, now, not_after)
        .map_err(|e| anyhow::anyhow!("issuing the TLS certificate: {e}"))?;
    let key_pem = id.key_pem().map_err(|e| anyhow::anyhow!("{e}"))?;
    for old in [&cert_path, &key_path] {
        if old.exists() {
            std::fs::remove_file(old).with_context(|| format!("replacing {}", old.display()))?;
        }
    }
    tally_service::identity::write_private_file(&key_path, key_pem.expose().as_bytes())?;
    std::fs::write(&cert_path, id.certificate.to_pem())?;
    Ok(Some(
        RustlsConfig::from_pem_file(&cert_path, &key_path)
            .await
            .context("loading the node TLS certificate")?,
    ))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

pub(crate) fn init_tracing(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TALLY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
