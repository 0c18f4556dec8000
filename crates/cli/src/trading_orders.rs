//! `tally session order` (the customer) and `tally session arbitrate` (the merchant's
//! operator, for an arbiter): acceptance delivery inside a trading session (SPEC M9;
//! `tally_proto::session::acceptance`).

use crate::agent_orders::order_item;
use crate::client::{Client, Conn};
use crate::trading::{agent_refusal, ensure_tab, pending_or_new, post_agent, record_purchase};
use crate::wallet::{Wallet, WalletOrder};
use anyhow::Context;
use clap::Args;
use std::process::ExitCode;
use tally_kernel::Id;
use tally_kernel::crypto::VerifyingKey;
use tally_proto::session::acceptance::{
    Answer, Offer, Order, Sending, Verdict, arbitrate, check, digest, key_bytes, unlock,
};
use tally_proto::session::certs::{Role as CertRole, SessionCert};

#[derive(Args)]
pub struct OrderArgs {
    /// The session id.
    pub session: String,
    /// The product id, as the merchant's agent offers it.
    #[arg(long)]
    pub product: String,
    /// Where to write the product once it is unlocked.
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// The merchant agent's URL (remembered after the first purchase).
    #[arg(long)]
    pub agent: Option<String>,
    /// Your wallet directory.
    #[arg(long, default_value = "./tally-wallet")]
    pub wallet: std::path::PathBuf,
    /// Your operator and your API key there (K1 goes through it).
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Args)]
pub struct ArbitrateArgs {
    /// The customer's evidence file (written by `tally session order` when the product does
    /// not match its description).
    pub evidence: std::path::PathBuf,
    /// The merchant's operator (where K2 is escrowed) and its operator key.
    #[command(flatten)]
    pub conn: Conn,
}

/// The merchant agent's key as the customer's own operator certifies it for the session
/// (M7: checked under that operator's node key, the one the customer trusts).
async fn merchant_key(
    c: &Client,
    view: &tally_client::wire::federation::TradingSessionView,
) -> anyhow::Result<VerifyingKey> {
    let text = view.merchant_cert.as_deref().context(
        "your operator holds no certificate of the merchant agent's key: it delivers nothing with acceptance",
    )?;
    let node = c.api.node().await?;
    let operator = VerifyingKey::from_hex(&node.node_key)?;
    let session = view
        .session
        .parse()
        .map_err(|e| anyhow::anyhow!("session: {e}"))?;
    let cert = SessionCert::open(
        text,
        &operator,
        session,
        CertRole::Merchant,
        tally_kernel::Timestamp::now().as_micros(),
    )
    .map_err(|e| anyhow::anyhow!("the merchant agent's certificate: {e}"))?;
    cert.verifying_key()
        .map_err(|e| anyhow::anyhow!("the merchant agent's certificate: {e}"))
}

/// What the customer brings to an arbiter.
#[derive(serde::Serialize, serde::Deserialize)]
struct Evidence {
    session: String,
    order: String,
    offer: String,
    package: String,
    sealed_hex: String,
}

fn sending_of(v: &serde_json::Value) -> anyhow::Result<Sending> {
    Ok(Sending {
        package: v["package"]
            .as_str()
            .context("the agent sent no package")?
            .as_bytes()
            .to_vec(),
        sealed: hex::decode(
            v["sealed_hex"]
                .as_str()
                .context("the agent sent no product")?,
        )?,
    })
}

/// Buys a product delivered with acceptance: the order signed with the session key, K1
/// through this operator to the merchant's, the delivery checked (a damaged one asked for
/// again, once), accepted (which books it on the tab), unlocked and compared with the offer.
pub async fn order(a: OrderArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let path = Wallet::path(&a.wallet, &a.session)?;
    let mut w = Wallet::load(&path)?;
    let view = c.api.trading_session(&a.session).await?;
    let merchant = merchant_key(&c, &view).await?;
    let agent = match (&a.agent, &w.agent) {
        (Some(url), _) => url.trim_end_matches('/').to_string(),
        (None, Some(url)) => url.clone(),
        (None, None) => anyhow::bail!("--agent URL: where the merchant's agent listens"),
    };
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    ensure_tab(&mut w, &path, &agent, &http).await?;
    // The offer, checked under the key the merchant's operator vouched for.
    let offers: serde_json::Value = http
        .get(format!("{agent}/v1/offers"))
        .send()
        .await
        .with_context(|| format!("reaching the merchant agent at {agent}"))?
        .json()
        .await?;
    let offer_signed = offers
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["product"] == a.product.as_str())
        .and_then(|o| o["offer"].as_str())
        .with_context(|| format!("the merchant offers no product {}", a.product))?
        .to_string();
    let offer = Offer::open(offer_signed.as_bytes(), &merchant)
        .map_err(|e| anyhow::anyhow!("the merchant's offer: {e}"))?;
    println!(
        "offer: {} for {}: {}",
        offer.product, offer.price, offer.description
    );
    // The order and K1, kept before either is sent.
    let mut pending = match w.order.clone().filter(|o| o.product == a.product) {
        Some(o) => o,
        None => {
            let mut k1 = [0u8; 32];
            getrandom::fill(&mut k1).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            let order = Order {
                transaction: w
                    .transaction
                    .parse()
                    .map_err(|e| anyhow::anyhow!("the wallet's transaction: {e}"))?,
                order: Id::new(),
                product: offer.product.clone(),
                price: offer.price,
                offer: digest(offer_signed.as_bytes()),
                at: tally_kernel::Timestamp::now().as_micros(),
            };
            let o = WalletOrder {
                order: order.order.to_string(),
                product: a.product.clone(),
                k1: hex::encode(k1),
                signed: String::from_utf8(order.sign(&w.key()?))?,
                accept: None,
            };
            w.order = Some(o.clone());
            w.save(&path)?;
            o
        }
    };
    let order: Order = serde_json::from_slice(
        &serde_json::from_str::<tally_kernel::crypto::SignedRecord>(&pending.signed)?.bytes,
    )?;
    c.api
        .order_key_send(&a.session, &pending.order, &pending.k1)
        .await
        .context("sending K1 through your operator")?;
    // The merchant's agent takes the order once K1 reached its operator.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut v = loop {
        let (status, v) = post_agent(
            &http,
            &format!("{agent}/v1/orders"),
            &serde_json::json!({"session": a.session, "order": pending.signed}),
        )
        .await?;
        if status.is_success() {
            break v;
        }
        if v["error"]["code"] == "key_pending" && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            continue;
        }
        return Err(agent_refusal(status, &v));
    };
    let k1 = key_bytes(&pending.k1).map_err(|e| anyhow::anyhow!("{e}"))?;
    loop {
        let sending = sending_of(&v)?;
        match check(&order, &sending, &merchant) {
            Ok(_) => {
                let maced = pending_or_new(&mut w, &path, offer.price, &order_item(&order))?;
                // The accept is kept before it is sent: after a lost answer the same one goes.
                let package = digest(&sending.package);
                let answer = match pending.accept.clone().filter(|(p, _)| *p == package) {
                    Some((_, signed)) => signed.into_bytes(),
                    None => {
                        let signed = String::from_utf8(
                            Answer::to(&order, &sending.package, true, Id::new()).sign(&w.key()?),
                        )?;
                        pending.accept = Some((package, signed.clone()));
                        w.order = Some(pending.clone());
                        w.save(&path)?;
                        signed.into_bytes()
                    }
                };
                let (status, reply) = post_agent(
                    &http,
                    &format!("{agent}/v1/orders/{}/answer", pending.order),
                    &serde_json::json!({"answer": String::from_utf8(answer)?, "purchase": maced}),
                )
                .await?;
                if !status.is_success() {
                    // Refused (4xx): nothing was booked. Unavailable (5xx): it may have been
                    // booked before the answer failed, so the same purchase goes again.
                    if status.is_client_error() {
                        w.pending = None;
                        pending.accept = None;
                        w.order = Some(pending);
                        w.save(&path)?;
                    }
                    return Err(agent_refusal(status, &reply));
                }
                let wrapped = hex::decode(reply["wrapped_hex"].as_str().context("no key")?)?;
                let code =
                    record_purchase(&mut w, &path, &maced, reply["tab"].clone(), &a.session)?;
                let product = unlock(&k1, order.order, &wrapped, &sending.sealed)
                    .map_err(|e| anyhow::anyhow!("the key the merchant released: {e}"))?;
                w.order = None;
                w.save(&path)?;
                if digest(&product) != offer.digest || product.len() as u64 != offer.size {
                    let evidence = a
                        .wallet
                        .join(format!("{}.{}.evidence.json", a.session, pending.order));
                    std::fs::write(
                        &evidence,
                        serde_json::to_vec_pretty(&Evidence {
                            session: a.session.clone(),
                            order: pending.order.clone(),
                            offer: offer_signed.clone(),
                            package: String::from_utf8(sending.package.clone())?,
                            sealed_hex: hex::encode(&sending.sealed),
                        })?,
                    )?;
                    std::fs::write(&a.out, &product)?;
                    eprintln!(
                        "the product does not match the merchant's description (its digest differs); \
                         evidence kept in {}: the merchant's operator settles it with \
                         `tally session arbitrate {}`",
                        evidence.display(),
                        evidence.display()
                    );
                    return Ok(ExitCode::from(4));
                }
                std::fs::write(&a.out, &product)
                    .with_context(|| format!("writing {}", a.out.display()))?;
                println!(
                    "accepted: {} ({} bytes) written to {}",
                    offer.product,
                    product.len(),
                    a.out.display()
                );
                return Ok(code);
            }
            Err(e) => {
                eprintln!("the delivery failed its check ({e}): asking for it again");
                let answer = Answer::to(&order, &sending.package, false, Id::new()).sign(&w.key()?);
                let (status, reply) = post_agent(
                    &http,
                    &format!("{agent}/v1/orders/{}/answer", pending.order),
                    &serde_json::json!({"answer": String::from_utf8(answer)?}),
                )
                .await?;
                if !status.is_success() {
                    return Err(agent_refusal(status, &reply));
                }
                if reply["aborted"] == true {
                    w.order = None;
                    w.save(&path)?;
                    eprintln!("the delivery failed again: the order is aborted, nothing was paid");
                    return Ok(ExitCode::from(1));
                }
                v = reply;
            }
        }
    }
}

/// The arbiter's check of a customer's complaint: K2 from the escrow here, the product
/// compared with the merchant's signed description.
pub async fn arbitrate_cmd(a: ArbitrateArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let e: Evidence = serde_json::from_slice(
        &std::fs::read(&a.evidence).with_context(|| format!("reading {}", a.evidence.display()))?,
    )
    .with_context(|| format!("{}: not an evidence file", a.evidence.display()))?;
    let view = c.api.trading_session(&e.session).await?;
    let merchant = view
        .merchant_key
        .as_deref()
        .and_then(|k| VerifyingKey::from_hex(k).ok())
        .context("this node knows no key of the session's merchant agent")?;
    let escrow = c.api.order_escrowed(&e.session, &e.order).await?;
    if escrow.package != digest(e.package.as_bytes()) {
        anyhow::bail!("the evidence's package is not the one whose K2 is escrowed here");
    }
    let k2 = key_bytes(&escrow.k2).map_err(|e| anyhow::anyhow!("{e}"))?;
    let sending = Sending {
        package: e.package.into_bytes(),
        sealed: hex::decode(&e.sealed_hex)?,
    };
    match arbitrate(e.offer.as_bytes(), &sending, &k2, &merchant) {
        Ok(Verdict::Matches) => {
            println!(
                "verdict: the product matches the merchant's signed description (the complaint fails)"
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(Verdict::DoesNotMatch) => {
            println!(
                "verdict: the product does not match the merchant's signed description (the customer is right)"
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            println!("verdict: the evidence does not hold ({err})");
            Ok(ExitCode::from(1))
        }
    }
}
