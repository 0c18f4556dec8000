//! `tally bench web`: how long the web pages take on a seeded node, over HTTP on loopback (the
//! path a browser takes), next to the JSON API's answer for the same data measured in the same
//! run. Each page is fetched one request at a time (p50, p99 and the slowest), signed in where
//! it needs a session; the issue's budget is 100 ms of server time per page, and a loopback
//! request's time is an upper bound of its server time.
//!
//! The data set: the `--demo` shop and customer, then `--products` more products, `--transfers`
//! transfers in and out of the customer's account (its statement shows the newest 200), and
//! `--purchases` purchases by the customer, all but the last three paid.

use crate::bench_kit::print_rows;
use clap::Args;
use std::process::ExitCode;
use std::time::Instant;
use tally_kernel::{Amount, Currency, Id};
use tally_service::delivery::{NewProduct, NewSale, PayReference};
use tally_service::ledger_ops::{OpenAccount, TransferOrder};
use tally_service::oob::{AppRequest, OpenSession, Opened};
use tally_service::{Node, Principal, Role};

#[derive(Args)]
pub struct WebBench {
    /// Requests per page (and per API equivalent), one at a time.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Products on sale besides the demo's.
    #[arg(long, default_value_t = 50)]
    products: usize,
    /// Transfers in and out of the customer's account.
    #[arg(long, default_value_t = 500)]
    transfers: usize,
    /// Purchases by the customer (all but the last three paid).
    #[arg(long, default_value_t = 40)]
    purchases: usize,
}

/// The budget per page.
const BUDGET_MS: f64 = 100.0;

/// A request's credential header (a cookie or a bearer key), if it needs one.
type Auth<'a> = Option<(&'a str, String)>;

/// Latencies of one measured path, in milliseconds, sorted.
struct Latencies(Vec<f64>);

impl Latencies {
    fn quantile(&self, q: f64) -> f64 {
        let i = ((self.0.len() as f64 - 1.0) * q).round() as usize;
        self.0.get(i).copied().unwrap_or(f64::NAN)
    }
    fn max(&self) -> f64 {
        self.0.last().copied().unwrap_or(f64::NAN)
    }
}

/// `n` GETs of `url`, one at a time, with `header` (a cookie or a bearer key); each must answer
/// 200.
async fn time_gets(
    http: &reqwest::Client,
    url: &str,
    header: Auth<'_>,
    n: usize,
) -> anyhow::Result<Latencies> {
    let get = || {
        let mut r = http.get(url);
        if let Some((name, value)) = &header {
            r = r.header(*name, value);
        }
        r
    };
    for _ in 0..5 {
        get().send().await?.bytes().await?;
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let response = get().send().await?;
        let status = response.status();
        response.bytes().await?;
        out.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(status.is_success(), "GET {url}: {status}");
    }
    out.sort_by(f64::total_cmp);
    Ok(Latencies(out))
}

/// A sign-in's token for `user` (its code read from the dev inbox), as a browser gets it.
async fn sign_in(node: &Node, user: &str) -> anyhow::Result<String> {
    let request = OpenSession {
        user: user.to_string(),
        app: AppRequest::Login,
        channel: None,
        certificate: None,
    };
    let Opened::Secured { session, .. } = node.oob().open(None, None, request, None).await? else {
        anyhow::bail!("a login opened no session");
    };
    let inbox = node.any_dev_inbox(user, 5).await?;
    let code = inbox
        .iter()
        .find_map(|m| crate::bench_kit::code_in(&m.message.body).map(str::to_string))
        .ok_or_else(|| anyhow::anyhow!("no code in {user}'s dev inbox"))?;
    let verified = node.oob().verify(&session.session, &code, None).await?;
    let token = verified
        .token
        .ok_or_else(|| anyhow::anyhow!("a verified login without a token"))?;
    Ok(token.expose().clone())
}

/// The bench data set on top of the demo's; returns (the customer's account, a sale of hers).
async fn seed(node: &Node, admin: &Principal, args: &WebBench) -> anyhow::Result<(Id, Id)> {
    let demo = node.seed_demo().await?;
    let eur = Currency::from_code("EUR")?;
    let (_, key) = node
        .issue_api_key(
            admin,
            Role::Merchant,
            tally_service::demo::SHOP,
            "bench web",
        )
        .await?;
    let shop = node.authenticate(key.expose()).await?;
    let delivery = node.delivery();
    let mut products = vec![demo.product.id];
    let bar = crate::progress_bar(args.products as u64, "products");
    for i in 0..args.products {
        let (p, _) = delivery
            .product_create(
                &shop,
                &format!("bench-product-{i}"),
                NewProduct {
                    title: format!("Bench album {i}"),
                    price: Amount::new(100 + i as i64, eur),
                    pay_to: demo.shop_account,
                    producer: Some("bench-studio".into()),
                    licence: "Personal use only.".into(),
                    instructions: String::new(),
                    registration_template: None,
                },
            )
            .await?;
        delivery
            .product_upload(
                &shop,
                p.id,
                "track.flac",
                "product",
                std::io::Cursor::new(vec![i as u8; 4096]),
            )
            .await?;
        delivery.product_publish(&shop, p.id).await?;
        products.push(p.id);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let (world, _) = node
        .open_account(
            admin,
            Some("bench-web-world"),
            OpenAccount {
                owner: None,
                currency: "EUR".into(),
                kind: Some(tally_ledger::AccountKind::Settlement),
                limit_minor: None,
                debits_must_not_exceed_credits: Some(false),
                credits_must_not_exceed_debits: None,
                imported_at: None,
                history: None,
                references: Default::default(),
            },
        )
        .await?;
    let customer = demo.customer_account;
    let bar = crate::progress_bar(args.transfers as u64, "transfers");
    for i in 0..args.transfers {
        let (debit, credit) = if i % 2 == 0 {
            (world.id, customer)
        } else {
            (customer, world.id)
        };
        node.transfer_money(
            admin,
            &format!("bench-web-transfer-{i}"),
            TransferOrder {
                debit_account: debit,
                credit_account: credit,
                amount: Amount::new(if i % 2 == 0 { 300 } else { 100 }, eur),
                timeout_s: None,
                memo: Some(format!("bench {i}")),
                notify: None,
            },
        )
        .await?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let buyer_token = sign_in(node, tally_service::demo::CUSTOMER).await?;
    let buyer = node.authenticate(&buyer_token).await?;
    let mut first_sale = None;
    for (i, product) in products
        .iter()
        .cycle()
        .take(args.purchases.max(1))
        .enumerate()
    {
        let (sale, _) = delivery
            .buy(
                &buyer,
                &format!("bench-web-sale-{i}"),
                NewSale {
                    product: *product,
                    channel: "dev".into(),
                    address: tally_service::demo::CUSTOMER.into(),
                    name: None,
                },
            )
            .await?;
        // All but the last three are paid (the credit rule allows a few unpaid orders).
        if i + 3 < args.purchases {
            delivery
                .pay_reference(
                    &buyer,
                    &format!("bench-web-pay-{i}"),
                    PayReference {
                        reference: sale.reference.clone(),
                        from_account: customer,
                        amount: sale.price,
                    },
                    node.oob(),
                )
                .await?;
        }
        first_sale.get_or_insert(sale.id);
    }
    Ok((
        customer,
        first_sale.ok_or_else(|| anyhow::anyhow!("no sale"))?,
    ))
}

pub async fn run(args: WebBench) -> anyhow::Result<ExitCode> {
    println!(
        "tally bench web: each page {} times over HTTP on loopback, one request at a time, \
         beside the JSON API's answer for the same data",
        args.requests
    );
    let op = crate::bench_sessions::operator_with("SQLite", None, true).await?;
    let admin = op.node.authenticate(&op.admin_key).await?;
    eprintln!(
        "seeding: {} products, {} transfers, {} purchases …",
        args.products + 1,
        args.transfers,
        args.purchases
    );
    let (account, sale) = seed(&op.node, &admin, &args).await?;
    let customer = sign_in(&op.node, tally_service::demo::CUSTOMER).await?;
    let (console, _) = op.node.console_sign_in(&op.admin_key).await?;
    let console = console.expose().clone();
    let product = op.node.seed_demo().await?.product.id;
    let http = reqwest::Client::new();
    let base = &op.url;
    let cookie = |token: &str| Some(("cookie", format!("tally_web={token}")));
    let bearer = |key: &str| Some(("authorization", format!("Bearer {key}")));
    let pages: Vec<(&str, String, Auth, String, Auth)> = vec![
        (
            "shop (/) vs GET /v1/products",
            "/".into(),
            None,
            "/v1/products".into(),
            bearer(&op.admin_key),
        ),
        (
            "product page vs GET /v1/products/{id}",
            format!("/p/{product}"),
            None,
            format!("/v1/products/{product}"),
            bearer(&op.admin_key),
        ),
        (
            "/me vs GET /v1/accounts",
            "/me".into(),
            cookie(&customer),
            "/v1/accounts".into(),
            bearer(&customer),
        ),
        (
            "statement vs GET …/transfers?limit=200",
            format!("/me/accounts/{account}"),
            cookie(&customer),
            format!("/v1/accounts/{account}/transfers?limit=200"),
            bearer(&customer),
        ),
        (
            "checkout vs GET /v1/sales/{id}",
            format!("/checkout/{sale}"),
            cookie(&customer),
            format!("/v1/sales/{sale}"),
            bearer(&customer),
        ),
        (
            "shop sales vs GET /v1/reports/sales",
            "/shop/sales".into(),
            cookie(&console),
            "/v1/reports/sales".into(),
            bearer(&op.admin_key),
        ),
        (
            "console vs GET /metrics",
            "/console".into(),
            cookie(&console),
            "/metrics".into(),
            None,
        ),
    ];
    let mut rows = Vec::new();
    let mut over = Vec::new();
    for (label, page, page_auth, api, api_auth) in pages {
        eprintln!("{label} …");
        let p = time_gets(&http, &format!("{base}{page}"), page_auth, args.requests).await?;
        let a = time_gets(&http, &format!("{base}{api}"), api_auth, args.requests).await?;
        if p.quantile(0.99) > BUDGET_MS {
            over.push(label);
        }
        rows.push([
            label.to_string(),
            format!(
                "{:.1} / {:.1} / {:.1}",
                p.quantile(0.5),
                p.quantile(0.99),
                p.max()
            ),
            format!(
                "{:.1} ms, {:.2}x",
                a.quantile(0.5),
                p.quantile(0.5) / a.quantile(0.5)
            ),
        ]);
    }
    print_rows(
        ["page vs the API", "p50/p99/max ms", "API p50, ratio"],
        &rows,
    );
    if over.is_empty() {
        println!("\nevery page's p99 is within the {BUDGET_MS} ms budget");
    } else {
        println!(
            "\nover the {BUDGET_MS} ms budget at p99: {}",
            over.join(", ")
        );
    }
    op.stop().await;
    Ok(if over.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
