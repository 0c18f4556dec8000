//! The invariants checked after every step, read from the store as it is (no model of what
//! should have happened: with dropped answers and crashes the simulator cannot know which
//! requests took effect, but the data must be consistent whatever did):
//!
//! * the ledger balances: per currency, debits equal credits, posted and pending;
//! * locked delivery: a sale is released at most once and only by its price (exactly one
//!   matched payment, of the price, for a released sale; none for an open, cancelled or
//!   expired one; a refunded sale's price went back once); a store account holds exactly its
//!   matched payments not refunded; the suspense account holds exactly the payments
//!   waiting there (not refunded);
//! * out-of-band: a session is verified at most once, and its money moved accordingly (a
//!   payment or trustee session's hold is posted once verified, released once locked, closed
//!   or expired); no user owes more than its trustee limit, and the trustee book never pays
//!   merchants more than verified trustee payments brought in;
//! * receipts: a complete receipt carries every signature and its package verifies offline
//!   against the node CA; a fair exchange ends in exactly one of completed, aborted, resolved
//!   (or failed), with the arbiter's decision matching it.

use sqlx::Row;
use std::collections::HashMap;
use tally_kernel::Id;
use tally_proto::receipt::flow::ReceiptState;
use tally_service::Node;

/// A broken invariant, in words.
pub type Broken = String;

pub(crate) async fn rows(node: &Node, sql: &str) -> Result<Vec<sqlx::any::AnyRow>, Broken> {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_all(node.store().pool())
        .await
        .map_err(|e| format!("query failed: {e}"))
}

fn id(r: &sqlx::any::AnyRow, column: &str) -> Result<Id, Broken> {
    let bytes: Vec<u8> = r.try_get(column).map_err(|e| e.to_string())?;
    Id::from_slice(&bytes).ok_or_else(|| format!("bad id in {column}"))
}

pub(crate) fn int(r: &sqlx::any::AnyRow, column: &str) -> Result<i64, Broken> {
    r.try_get(column).map_err(|e| e.to_string())
}

pub(crate) fn text(r: &sqlx::any::AnyRow, column: &str) -> Result<String, Broken> {
    r.try_get(column).map_err(|e| e.to_string())
}

/// Every invariant; the first broken one.
pub async fn all(
    node: &Node,
    store_accounts: &[Id],
    suspense: &[Id],
    checked: &mut std::collections::HashSet<i64>,
) -> Result<(), Broken> {
    ledger_balances(node).await?;
    sales(node, store_accounts, suspense).await?;
    sessions(node).await?;
    trustee(node).await?;
    receipts(node, checked).await
}

pub(crate) async fn ledger_balances(node: &Node) -> Result<(), Broken> {
    for r in rows(
        node,
        "SELECT currency, CAST(SUM(debits_posted) AS BIGINT) AS dp, \
         CAST(SUM(credits_posted) AS BIGINT) AS cp, CAST(SUM(debits_pending) AS BIGINT) AS dq, \
         CAST(SUM(credits_pending) AS BIGINT) AS cq FROM accounts GROUP BY currency",
    )
    .await?
    {
        let (dp, cp, dq, cq) = (
            int(&r, "dp")?,
            int(&r, "cp")?,
            int(&r, "dq")?,
            int(&r, "cq")?,
        );
        if dp != cp || dq != cq {
            return Err(format!(
                "the ledger does not balance in {}: posted {dp}/{cp}, pending {dq}/{cq}",
                text(&r, "currency")?
            ));
        }
    }
    Ok(())
}

async fn balance(node: &Node, account: Id) -> Result<i64, Broken> {
    let a = node
        .store()
        .account(account)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("account vanished")?;
    Ok(a.credits_posted - a.debits_posted)
}

async fn sales(node: &Node, store_accounts: &[Id], suspense: &[Id]) -> Result<(), Broken> {
    let payments = rows(
        node,
        "SELECT p.sale_id, p.status, p.amount_minor, p.holder FROM delivery_payments p",
    )
    .await?;
    let mut matched: HashMap<Id, Vec<i64>> = HashMap::new();
    let mut refunded: HashMap<Id, Vec<i64>> = HashMap::new();
    let mut held: HashMap<Id, i64> = HashMap::new();
    for p in &payments {
        let status = text(p, "status")?;
        let amount = int(p, "amount_minor")?;
        let sale: Option<Vec<u8>> = p.try_get("sale_id").map_err(|e| e.to_string())?;
        let sale = sale.and_then(|b| Id::from_slice(&b));
        if status == "matched" {
            let sale = sale.ok_or("a matched payment without a sale")?;
            matched.entry(sale).or_default().push(amount);
        }
        if status == "refunded"
            && let Some(sale) = sale
        {
            refunded.entry(sale).or_default().push(amount);
        }
        if status != "refunded" {
            *held.entry(id(p, "holder")?).or_default() += amount;
        }
    }
    for s in rows(node, "SELECT id, state, price_minor FROM sales").await? {
        let sale = id(&s, "id")?;
        let state = text(&s, "state")?;
        let price = int(&s, "price_minor")?;
        let paid = matched.get(&sale).cloned().unwrap_or_default();
        let refunds = refunded.get(&sale).cloned().unwrap_or_default();
        match state.as_str() {
            "released" if paid == [price] => {}
            // Unpaid sales, open or ended: nothing ever matched them.
            "open" | "cancelled" | "expired" if paid.is_empty() => {}
            // A paid sale refunded: its price went back, once.
            "refunded" if paid.is_empty() && refunds.contains(&price) => {}
            _ => {
                return Err(format!(
                    "sale {sale} is {state} with matched payments {paid:?} (price {price}): \
                     a sale is released once, by its price"
                ));
            }
        }
    }
    for account in store_accounts.iter().chain(suspense) {
        let expected = held.get(account).copied().unwrap_or(0);
        let actual = balance(node, *account).await?;
        if actual != expected {
            return Err(format!(
                "account {account} holds {actual} but its payments say {expected}: money \
                 created or lost"
            ));
        }
    }
    Ok(())
}

/// Trustee credit: no user owes and holds more than the operator's limit, and the trustee
/// book never pays merchants more than verified trustee payments brought in.
async fn trustee(node: &Node) -> Result<(), Broken> {
    for r in rows(
        node,
        "SELECT t.user_id, a.limit_minor, a.debits_posted, a.debits_pending, a.credits_posted \
         FROM trustee_credit t JOIN accounts a ON a.id = t.account",
    )
    .await?
    {
        let used = int(&r, "debits_posted")? + int(&r, "debits_pending")?;
        let cap = int(&r, "credits_posted")? + int(&r, "limit_minor")?;
        if used > cap {
            return Err(format!(
                "{} owes and holds {used} on trustee credit of {cap}",
                text(&r, "user_id")?
            ));
        }
    }
    if let Some(tally_ledger::Event::AccountOpened { account }) = node
        .store()
        .journal_event(&tally_service::oob::trustee::payable_key(
            tally_kernel::Currency::from_code("EUR").map_err(|e| e.to_string())?,
        ))
        .await
        .map_err(|e| e.to_string())?
    {
        let book = balance(node, account.id).await?;
        if book < 0 {
            return Err(format!(
                "the trustee book paid out {} more than it took in",
                -book
            ));
        }
    }
    Ok(())
}

async fn sessions(node: &Node) -> Result<(), Broken> {
    let verified: HashMap<String, i64> = rows(
        node,
        "SELECT idempotency_key, CAST(COUNT(*) AS BIGINT) AS n FROM journal \
         WHERE idempotency_key LIKE ':oob:%:verified' GROUP BY idempotency_key",
    )
    .await?
    .iter()
    .map(|r| Ok((text(r, "idempotency_key")?, int(r, "n")?)))
    .collect::<Result<_, Broken>>()?;
    for s in rows(
        node,
        "SELECT id, state, application, client_key FROM oob_sessions",
    )
    .await?
    {
        let number = hex::encode(s.try_get::<Vec<u8>, _>("id").map_err(|e| e.to_string())?);
        let state = text(&s, "state")?;
        let entries = verified
            .get(&format!(":oob:{number}:verified"))
            .copied()
            .unwrap_or(0);
        if entries != i64::from(state == "verified") {
            return Err(format!(
                "session {number} is {state} with {entries} verification entries"
            ));
        }
        // Payments and trustee payments hold the amount when they open.
        if !["payment", "trustee"].contains(&text(&s, "application")?.as_str()) {
            continue;
        }
        let key: Option<String> = s.try_get("client_key").map_err(|e| e.to_string())?;
        let key = key.unwrap_or_else(|| format!(":oob_open:{number}"));
        let Some(tally_ledger::Event::Transfers { transfers }) = node
            .store()
            .journal_event(&key)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Err(format!("payment session {number} has no hold"));
        };
        let hold = transfers.first().ok_or("an empty hold")?.id;
        let t = node
            .store()
            .transfer(hold)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("hold vanished")?;
        let fits = matches!(
            (state.as_str(), t.state.as_str()),
            ("verified", "posted")
                | ("open", "pending" | "expired")
                | ("locked" | "closed" | "expired", "voided" | "expired")
        );
        if !fits {
            return Err(format!(
                "payment session {number} is {state} but its hold is {}",
                t.state.as_str()
            ));
        }
    }
    Ok(())
}

async fn receipts(node: &Node, checked: &mut std::collections::HashSet<i64>) -> Result<(), Broken> {
    let decisions: HashMap<i64, String> = rows(
        node,
        "SELECT transaction_id, decision FROM arbiter_decisions",
    )
    .await?
    .iter()
    .map(|r| Ok((int(r, "transaction_id")?, text(r, "decision")?)))
    .collect::<Result<_, Broken>>()?;
    let admin = node
        .store()
        .api_keys()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|k| k.role == "admin")
        .ok_or("no admin key")?;
    let operator = tally_service::Principal {
        key_id: admin.id,
        role: tally_service::Role::Admin,
        owner: "operator".into(),
    };
    for r in rows(node, "SELECT transaction_id, state, fair FROM receipts").await? {
        let tx = int(&r, "transaction_id")?;
        let state = text(&r, "state")?;
        let fair = int(&r, "fair")? != 0;
        let state = ReceiptState::parse(&state).ok_or("unknown receipt state")?;
        let decision = decisions.get(&tx).map(String::as_str);
        let consistent = match state {
            ReceiptState::Aborted => decision == Some("aborted"),
            ReceiptState::Failed => decision == Some("failed"),
            ReceiptState::Resolved => decision == Some("resolved"),
            ReceiptState::Offered
            | ReceiptState::Escrowed
            | ReceiptState::Signed
            | ReceiptState::Acked => decision.is_none(),
        };
        if !consistent || (!fair && decision.is_some()) {
            return Err(format!(
                "receipt {tx} is {state} (fair: {fair}) with arbiter decision {decision:?}: a fair \
                 exchange ends in exactly one of completed, aborted, resolved"
            ));
        }
        if state.is_complete() && checked.insert(tx) {
            let package = node
                .receipts()
                .package(&operator, tx as u64)
                .await
                .map_err(|e| format!("receipt {tx} is {state} but has no package: {e}"))?;
            let pkg = tally_proto::receipt::Package::from_bytes(&package)
                .map_err(|e| format!("receipt {tx}'s package does not parse: {e}"))?;
            tally_proto::receipt::verify_package(&pkg, node.ca().certificate())
                .map_err(|e| format!("complete receipt {tx} does not verify: {e}"))?;
        }
    }
    Ok(())
}
