//! The customer's pages after sign-in (issue [9] part 2): `/me` (where codes go, accounts with
//! balances and available amounts, confirmations waiting for a code, purchases, receipts,
//! trading sessions), an account's statement (`/me/accounts/{id}`: the transfers with the
//! balance after each, a balance-over-time chart, the same as CSV) and a receipt
//! (`/me/receipts/{tx}`: its record, whether its package verifies, the `.tally` file).
//!
//! Pads are not listed: a pad account is anonymous by design (SPEC P1, P6), and a page that showed
//! a signed-in customer's pads would link the two.
//!
//! Every figure comes from the same node calls as the API's (`accounts`, `account_transfers`,
//! `oob.sessions`, `delivery.purchases`) with the visitor's principal, so another customer's
//! account is the API's 404 here too.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tally_kernel::{Amount, Id, Timestamp};
use tally_ledger::{Transfer, TransferKind};
use tally_service::ServiceError;
use tally_service::delivery::ReportRow;

use super::chart::{Point, step_line};
use super::signin::{channel_words, money};
use super::{Frame, Page, Visitor, WebPath, crumb, path_id, refusal, refused_page, sign_in_first};
use crate::AppState;

/// Transfers a statement shows (the newest).
const STATEMENT_LEN: i64 = 200;

/// An account as `/me` lists it.
struct AccountLine {
    id: String,
    currency: String,
    balance: String,
    available: String,
}

/// A confirmation waiting for its code.
struct PendingLine {
    session: String,
    what: String,
    expires: String,
}

/// A purchase.
struct PurchaseLine {
    sale: String,
    title: String,
    price: String,
    state: &'static str,
    date: String,
}

/// A receipt the visitor is a party to.
struct ReceiptLine {
    transaction: u64,
    other: String,
    state: &'static str,
    date: String,
}

/// A trading session of the visitor's.
struct SessionLine {
    session: String,
    merchant: String,
    state: String,
    deposit: String,
    spent: String,
}

/// `templates/web/me.html`.
#[derive(Template)]
#[template(path = "web/me.html")]
struct MeTemplate<'a> {
    frame: Frame,
    user: &'a str,
    address: String,
    accounts: Vec<AccountLine>,
    pending: Vec<PendingLine>,
    purchases: Vec<PurchaseLine>,
    receipts: Vec<ReceiptLine>,
    sessions: Vec<SessionLine>,
}

/// A date as the pages show it (UTC, to the minute).
pub(crate) fn day_time(t: Timestamp) -> String {
    let text = t.to_rfc3339();
    format!("{} {} UTC", &text[..10], &text[11..16.min(text.len())])
}

fn sale_words(state: tally_proto::delivery::sale::SaleState) -> &'static str {
    use tally_proto::delivery::sale::SaleState as S;
    match state {
        S::Open => "waiting for payment",
        S::Released => "paid, key released",
        S::Cancelled => "cancelled",
        S::Expired => "expired unpaid",
        S::Refunded => "refunded",
    }
}

/// `GET /me`: who is signed in, where codes go, accounts, confirmations, purchases.
pub async fn me(State(state): State<AppState>, visitor: Visitor) -> Response {
    let Some(signed) = visitor.signed_in() else {
        return sign_in_first("/me");
    };
    let by = &signed.by;
    let node = &state.node;
    let loaded = async {
        let accounts = node.accounts(by, None).await?;
        let address = match node.oob().verified_address(&by.owner).await {
            Ok((channel, address)) => format!("{address} ({})", channel_words(&channel)),
            Err(ServiceError::NoChannel | ServiceError::NotFound { .. }) => "none".into(),
            Err(e) => return Err(e),
        };
        let sessions = node.oob().sessions(by, &by.owner).await?;
        let purchases = node.delivery().purchases(by, 50).await?;
        let receipts = node.receipts().list(by).await?;
        let trading = node.sessions().list(by, None).await?;
        Ok((accounts, address, sessions, purchases, receipts, trading))
    };
    let (accounts, address, sessions, purchases, receipts, trading) = match loaded.await {
        Ok(all) => all,
        Err(e) => return refused_page(&state, &visitor, &refusal(e)).into_response(),
    };
    let accounts = accounts
        .iter()
        .map(|a| AccountLine {
            id: a.id.to_string(),
            currency: a.currency.code().to_string(),
            balance: money(a.balance_minor(), a.currency),
            available: a
                .available_minor()
                .map_or_else(|| "no bound".into(), |m| money(m, a.currency)),
        })
        .collect();
    let pending = sessions
        .iter()
        .filter(|s| s.state == tally_proto::oob::State::Open)
        .map(|s| PendingLine {
            session: s.session.clone(),
            what: match &s.purpose {
                tally_proto::oob::Purpose::Login => "sign in".into(),
                tally_proto::oob::Purpose::Message(m) => m.title.clone(),
                tally_proto::oob::Purpose::Transaction(t) => {
                    format!("{} to {}: {}", t.amount, t.payee, t.description)
                }
            },
            expires: day_time(s.expires_at),
        })
        .collect();
    let purchases = purchases.into_iter().map(purchase_line).collect();
    let receipts = receipts
        .into_iter()
        .take(50)
        .map(|r| ReceiptLine {
            transaction: r.transaction,
            other: if r.party_a == by.owner {
                r.party_b
            } else {
                r.party_a
            },
            state: r.state.as_str(),
            date: day_time(Timestamp(r.time.saturating_mul(1_000_000))),
        })
        .collect();
    let sessions = trading
        .into_iter()
        .take(50)
        .map(|t| SessionLine {
            session: t.session,
            merchant: t.merchant,
            state: t.state,
            deposit: t.deposit.to_string(),
            spent: t.customer_total.or(t.total).unwrap_or_else(|| "-".into()),
        })
        .collect();
    Page::of(
        StatusCode::OK,
        &MeTemplate {
            frame: Frame::new(&state, &visitor, vec![crumb("My page", "")]),
            user: &signed.display,
            address,
            accounts,
            pending,
            purchases,
            receipts,
            sessions,
        },
    )
    .into_response()
}

fn purchase_line(r: ReportRow) -> PurchaseLine {
    PurchaseLine {
        sale: r.sale.to_string(),
        title: r.title,
        price: r.price,
        state: sale_words(r.state),
        date: day_time(r.created_at),
    }
}

/// A statement line: a transfer as the account saw it, and the balance after it.
struct StatementLine {
    date: String,
    what: String,
    other: String,
    amount: String,
    /// Money came in.
    credit: bool,
    /// Held, not moved (a pending transfer): no effect on the balance yet.
    held: bool,
    balance: String,
}

/// `templates/web/statement.html`.
#[derive(Template)]
#[template(path = "web/statement.html")]
struct StatementTemplate {
    frame: Frame,
    id: String,
    currency: &'static str,
    balance: String,
    available: String,
    chart: Option<String>,
    lines: Vec<StatementLine>,
    total_in: String,
    total_out: String,
}

/// A transfer without a memo, in words.
fn kind_words(kind: TransferKind) -> &'static str {
    match kind {
        TransferKind::Single => "transfer",
        TransferKind::Pending => "hold",
        TransferKind::PostPending => "hold paid",
        TransferKind::VoidPending => "hold released",
        TransferKind::ExpirePending => "hold expired",
    }
}

/// What a transfer did to `account`'s posted balance (held money changes nothing yet).
fn effect(t: &Transfer, account: Id) -> i64 {
    let moves = matches!(t.kind, TransferKind::Single | TransferKind::PostPending);
    if !moves {
        return 0;
    }
    if t.credit_account == account {
        t.amount_minor
    } else if t.debit_account == account {
        -t.amount_minor
    } else {
        0
    }
}

/// The balance after each transfer (newest first, as given) and the points of the chart
/// (oldest first), walking back from the balance now.
fn balances(
    transfers: &[Transfer],
    account: Id,
    now_minor: i64,
    now: Timestamp,
) -> (Vec<i64>, Vec<Point>) {
    let mut after = Vec::with_capacity(transfers.len());
    let mut balance = now_minor;
    for t in transfers {
        after.push(balance);
        balance -= effect(t, account);
    }
    let mut points: Vec<Point> = transfers
        .iter()
        .zip(&after)
        .filter(|(t, _)| effect(t, account) != 0)
        .map(|(t, b)| Point {
            at_micros: t.created_at.as_micros(),
            value: *b,
        })
        .collect();
    points.reverse();
    if let Some(first) = transfers.iter().rev().find(|t| effect(t, account) != 0) {
        // The balance before the oldest transfer shown, just before it.
        points.insert(
            0,
            Point {
                at_micros: first.created_at.as_micros() - 1,
                value: balance,
            },
        );
    }
    points.push(Point {
        at_micros: now.as_micros(),
        value: now_minor,
    });
    (after, points)
}

async fn statement_data(
    state: &AppState,
    visitor: &Visitor,
    text: &str,
) -> Result<(tally_ledger::Account, Vec<Transfer>), super::Refusal> {
    let id = path_id(text, "account")?;
    let Some(signed) = visitor.signed_in() else {
        return Err(refusal(ServiceError::Unauthorized));
    };
    let account = state.node.account(&signed.by, id).await.map_err(refusal)?;
    let transfers = state
        .node
        .account_transfers(&signed.by, id, STATEMENT_LEN)
        .await
        .map_err(refusal)?;
    Ok((account, transfers))
}

/// `GET /me/accounts/{id}`: the statement.
pub async fn statement(
    State(state): State<AppState>,
    visitor: Visitor,
    WebPath(text): WebPath,
) -> Response {
    if visitor.signed_in().is_none() {
        return sign_in_first(&format!("/me/accounts/{}", super::path_text(&text)));
    }
    let (account, transfers) = match statement_data(&state, &visitor, &text).await {
        Ok(found) => found,
        Err(r) => return refused_page(&state, &visitor, &r).into_response(),
    };
    let currency = account.currency;
    let (after, points) = balances(
        &transfers,
        account.id,
        account.balance_minor(),
        Timestamp::now(),
    );
    let mut total_in = 0_i64;
    let mut total_out = 0_i64;
    let lines = transfers
        .iter()
        .zip(&after)
        .map(|(t, balance)| {
            let credit = t.credit_account == account.id;
            let e = effect(t, account.id);
            if e > 0 {
                total_in += e;
            } else {
                total_out -= e;
            }
            StatementLine {
                date: day_time(t.created_at),
                what: if t.memo.is_empty() {
                    kind_words(t.kind).to_string()
                } else {
                    t.memo.clone()
                },
                other: if credit {
                    t.debit_account
                } else {
                    t.credit_account
                }
                .to_string(),
                amount: Amount::new(t.amount_minor, currency).to_string(),
                credit,
                held: e == 0,
                balance: money(*balance, currency),
            }
        })
        .collect();
    let chart = step_line(
        &points,
        &format!("Balance of account {} over time", account.id),
        |v| money(v, currency),
        |t| day_time(Timestamp(t)),
    );
    let id = account.id.to_string();
    Page::of(
        StatusCode::OK,
        &StatementTemplate {
            frame: Frame::new(
                &state,
                &visitor,
                vec![
                    crumb("My page", "/me"),
                    crumb(format!("Account {}", &id[..8]), ""),
                ],
            ),
            currency: currency.code(),
            balance: money(account.balance_minor(), currency),
            available: account
                .available_minor()
                .map_or_else(|| "no bound".into(), |m| money(m, currency)),
            chart,
            lines,
            total_in: money(total_in, currency),
            total_out: money(total_out, currency),
            id,
        },
    )
    .into_response()
}

/// `templates/web/receipt.html`.
#[derive(Template)]
#[template(path = "web/receipt.html")]
struct ReceiptTemplate {
    frame: Frame,
    transaction: u64,
    state: &'static str,
    party_a: String,
    party_b: String,
    date: String,
    record: String,
    fair: bool,
    digest: String,
    /// `Some(true)` verified, `Some(false)` with the problem, `None` not complete yet.
    verified: Option<bool>,
    problem: String,
}

/// The receipt of the path, for a party to it (anyone else: the API's 404).
fn receipt_of(
    visitor: &Visitor,
    text: &str,
) -> Result<(tally_service::Principal, u64), super::Refusal> {
    let Some(signed) = visitor.signed_in() else {
        return Err(refusal(ServiceError::Unauthorized));
    };
    let tx: u64 = text.parse().map_err(|_| {
        refusal(ServiceError::NotFound {
            what: tally_service::Missing::Receipt,
            id: text.chars().take(24).collect(),
        })
    })?;
    Ok((signed.by.clone(), tx))
}

/// `GET /me/receipts/{tx}`: a receipt, its record, and whether its package verifies (against
/// this node's CA and revocations, as `tally receipt verify` does).
pub async fn receipt(
    State(state): State<AppState>,
    visitor: Visitor,
    WebPath(text): WebPath,
) -> Response {
    if visitor.signed_in().is_none() {
        return sign_in_first("/me");
    }
    let (by, tx) = match receipt_of(&visitor, &text) {
        Ok(found) => found,
        Err(r) => return refused_page(&state, &visitor, &r).into_response(),
    };
    let receipts = state.node.receipts();
    let view = match receipts.receipt(&by, tx).await {
        Ok(v) => v,
        Err(e) => return refused_page(&state, &visitor, &refusal(e)).into_response(),
    };
    // Only a complete receipt has a package to check.
    let (verified, problem) = match receipts.package(&by, tx).await {
        Ok(bytes) => match receipts.verify_online(&bytes).await {
            Ok(v) => (Some(v.valid), v.problem.unwrap_or_default()),
            Err(e) => (Some(false), refusal(e).message),
        },
        Err(_) => (None, String::new()),
    };
    Page::of(
        StatusCode::OK,
        &ReceiptTemplate {
            frame: Frame::new(
                &state,
                &visitor,
                vec![crumb("My page", "/me"), crumb(format!("Receipt {tx}"), "")],
            ),
            transaction: tx,
            state: view.state.as_str(),
            party_a: view.party_a,
            party_b: view.party_b,
            date: day_time(Timestamp(view.time.saturating_mul(1_000_000))),
            record: view.record,
            fair: view.fair,
            digest: view.digest.unwrap_or_default(),
            verified,
            problem,
        },
    )
    .into_response()
}

/// `GET /me/receipts/{tx}/receipt.tally`: the receipt package file (`tally receipt verify`).
pub async fn receipt_file(
    State(state): State<AppState>,
    visitor: Visitor,
    WebPath(text): WebPath,
) -> Response {
    let (by, tx) = match receipt_of(&visitor, &text) {
        Ok(found) => found,
        Err(r) => return refused_page(&state, &visitor, &r).into_response(),
    };
    match state.node.receipts().package(&by, tx).await {
        Ok(bytes) => {
            let mut response =
                ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response();
            super::secure_headers(response.headers_mut());
            if let Ok(v) =
                HeaderValue::try_from(format!("attachment; filename=\"receipt-{tx}.tally\""))
            {
                response
                    .headers_mut()
                    .insert(header::CONTENT_DISPOSITION, v);
            }
            response
        }
        Err(e) => refused_page(&state, &visitor, &refusal(e)).into_response(),
    }
}

/// A CSV field: quoted when it holds a separator, a quote or a line break; a leading `=`, `+`,
/// `-` or `@` is prefixed with `'` so a spreadsheet does not run it as a formula.
fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@']) {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// `GET /me/accounts/{id}/statement.csv`: the statement as CSV (amounts in minor units, signed
/// for the account; the balance after each posted transfer).
pub async fn statement_csv(
    State(state): State<AppState>,
    visitor: Visitor,
    WebPath(text): WebPath,
) -> Response {
    let (account, transfers) = match statement_data(&state, &visitor, &text).await {
        Ok(found) => found,
        Err(r) => return refused_page(&state, &visitor, &r).into_response(),
    };
    let (after, _) = balances(
        &transfers,
        account.id,
        account.balance_minor(),
        Timestamp::now(),
    );
    let mut out = String::from(
        "date,transfer,kind,state,memo,other_account,amount_minor,currency,balance_after_minor\n",
    );
    for (t, balance) in transfers.iter().zip(&after) {
        let credit = t.credit_account == account.id;
        let signed_minor = if credit {
            t.amount_minor
        } else {
            -t.amount_minor
        };
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            t.created_at.to_rfc3339(),
            t.id,
            t.kind.as_str(),
            t.state.as_str(),
            csv_field(&t.memo),
            if credit {
                t.debit_account
            } else {
                t.credit_account
            },
            signed_minor,
            account.currency.code(),
            balance,
        ));
    }
    let mut response = ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response();
    super::secure_headers(response.headers_mut());
    if let Ok(v) = HeaderValue::try_from(format!(
        "attachment; filename=\"statement-{}.csv\"",
        account.id
    )) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, v);
    }
    response
}

/// For tests: the currency of an amount text (`9.90 EUR` → EUR).
#[cfg(test)]
fn currency_of(text: &str) -> Option<tally_kernel::Currency> {
    tally_kernel::Currency::from_code(text.rsplit(' ').next()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_ledger::TransferState;

    fn transfer(kind: TransferKind, debit: Id, credit: Id, amount: i64, at: i64) -> Transfer {
        Transfer {
            id: Id::new(),
            kind,
            state: TransferState::Posted,
            debit_account: debit,
            credit_account: credit,
            amount_minor: amount,
            currency: currency_of("1.00 EUR").expect("EUR"),
            pending_id: None,
            pending_amount_minor: None,
            expires_at: None,
            link_id: None,
            rate: None,
            memo: String::new(),
            created_at: Timestamp(at),
            flags: Default::default(),
            user_data_128: 0,
            user_data_64: 0,
            user_data_32: 0,
            code: 0,
        }
    }

    #[test]
    fn balances_walk_back_from_now_and_skip_holds() {
        let me = Id::new();
        let other = Id::new();
        // Newest first: a payment out of 300, a hold of 999 (no effect), a deposit of 1000.
        let list = [
            transfer(TransferKind::Single, me, other, 300, 30),
            transfer(TransferKind::Pending, me, other, 999, 20),
            transfer(TransferKind::Single, other, me, 1000, 10),
        ];
        let (after, points) = balances(&list, me, 700, Timestamp(40));
        assert_eq!(after, vec![700, 1000, 1000]);
        let values: Vec<(i64, i64)> = points.iter().map(|p| (p.at_micros, p.value)).collect();
        assert_eq!(values, vec![(9, 0), (10, 1000), (30, 700), (40, 700)]);
    }

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        let cases = [
            ("rent", "rent"),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("=HYPERLINK(\"x\")", "\"'=HYPERLINK(\"\"x\"\")\""),
            ("-5", "'-5"),
            ("line\nbreak", "\"line\nbreak\""),
        ];
        for (input, expected) in cases {
            assert_eq!(csv_field(input), expected, "{input:?}");
        }
    }

    #[test]
    fn dates_read_to_the_minute() {
        assert_eq!(day_time(Timestamp(0)), "1970-01-01 00:00 UTC");
    }
}
