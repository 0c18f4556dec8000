//! The customer's pages (issue [9] part 2) in Debian's Chromium: after an out-of-band sign-in,
//! `/me` shows the accounts with balances and available amounts, a payment waiting for its
//! code and the purchases; the statement shows every transfer with the balance after it, a
//! balance-over-time chart and the same figures as CSV. Another customer's account is the
//! API's 404. Screenshots; axe-core on each page.

mod browser;

use axum::http::StatusCode;
use browser::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_reads_balances_statements_and_waiting_payments_in_chromium() {
    if !browser_available() {
        return;
    }
    let t = Tally::start().await;
    t.enrol_alice().await;
    let (shop, alice_eur, shop_eur) = shop_and_accounts(&t).await;
    // A purchase of 12.50 EUR, a refund of 2.00, and a payment request still waiting.
    for (key, from, to, amount, memo) in [
        ("buy-mug", &alice_eur, &shop_eur, "12.50 EUR", "Blue mug"),
        (
            "refund-mug",
            &shop_eur,
            &alice_eur,
            "2.00 EUR",
            "Chipped: partial refund",
        ),
    ] {
        t.admin_transfer(key, from, to, amount, memo).await;
    }
    let waiting = payment_session(&t, &shop, &alice_eur, &shop_eur, "Green mug").await;

    let scratch = tempfile::tempdir().expect("tempdir");
    let driver = Chromedriver::start(scratch.path()).await;
    let browser = driver.browser(&scratch.path().join("profile")).await;
    sign_in_through_me(&t, &browser, "alice").await;
    text_of(&browser, "#my-address", "alice (dev inbox)").await;
    // 100.00 − 12.50 + 2.00, and 12.50 more held by the waiting payment.
    let row = text_of(&browser, "#accounts", &alice_eur).await;
    assert!(
        row.contains("89.50 EUR") && row.contains("77.00 EUR"),
        "{row}"
    );
    let pending = text_of(&browser, "#pending", "12.50 EUR to shop: Green mug").await;
    assert!(!pending.is_empty());
    text_of(&browser, "#no-purchases", "No purchases yet").await;
    shot(&browser, "me").await;
    axe(&browser, "/me").await;

    // The statement: newest first, the balance after each, the chart, the CSV.
    click(&browser, "#accounts a").await;
    path_of(&browser, &format!("/me/accounts/{alice_eur}")).await;
    text_of(&browser, "#balance", "89.50 EUR").await;
    let table = text_of(&browser, "#statement", "Blue mug").await;
    for expected in [
        "Chipped: partial refund",
        "+2.00 EUR",
        "−12.50 EUR",
        "89.50 EUR",
        "87.50 EUR",
        "100.00 EUR",
        "in 102.00 EUR",
        "out 12.50 EUR",
        "(held)",
    ] {
        assert!(table.contains(expected), "{expected:?} in {table}");
    }
    let chart = browser
        .find(fantoccini::Locator::Css("#chart svg title"))
        .await
        .expect("the chart has a title");
    let title = chart.html(true).await.expect("title");
    assert!(title.contains(&alice_eur), "{title}");
    shot(&browser, "statement").await;
    axe(&browser, "the statement").await;
    let cookie = session_cookie(&browser).await;
    let (status, _, csv) = with_cookie(
        &t,
        &format!("/me/accounts/{alice_eur}/statement.csv"),
        &cookie,
        None,
    )
    .await;
    let csv = String::from_utf8_lossy(&csv);
    assert_eq!(status, StatusCode::OK, "{csv}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "date,transfer,kind,state,memo,other_account,amount_minor,currency,balance_after_minor"
    );
    let last_columns = |line: &str| -> (i64, i64) {
        let f: Vec<&str> = line.rsplitn(3, ',').collect();
        (
            f[2].rsplit(',')
                .next()
                .expect("amount")
                .parse()
                .expect("amount"),
            f[0].parse().expect("balance"),
        )
    };
    // Newest first: the hold (no effect), the refund, the purchase, the deposit.
    let figures: Vec<(i64, i64)> = lines[1..].iter().map(|l| last_columns(l)).collect();
    assert_eq!(
        figures,
        vec![(-1250, 8950), (200, 8950), (-1250, 8750), (10_000, 10_000)],
        "{csv}"
    );

    // The waiting payment's link opens its code page.
    browser.goto(&format!("{}/me", t.base)).await.expect("/me");
    click(&browser, "#pending a").await;
    path_of(&browser, &format!("/s/{waiting}")).await;
    text_of(&browser, "#amount", "12.50 EUR").await;

    // Another customer's statement is not found; so is a made-up account.
    let (status, _, _) = with_cookie(&t, "/me", "tally_session_nobody", None).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "signed out: to the sign-in");
    let (status, _, html) =
        with_cookie(&t, &format!("/me/accounts/{shop_eur}"), &cookie, None).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "{}",
        String::from_utf8_lossy(&html)
    );
    let (status, _, _) = with_cookie(
        &t,
        &format!("/me/accounts/{shop_eur}/statement.csv"),
        &cookie,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = with_cookie(&t, "/me/accounts/not-an-id", &cookie, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
