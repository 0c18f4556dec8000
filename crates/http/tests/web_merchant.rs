//! The merchant's pages (issue [9] part 3) in Debian's Chromium: a merchant signs in out of
//! band, adds a product, uploads its file through the upload form (the page's script shows the
//! progress), publishes it; sales come in (one paid, one with the wrong amount); the sales page
//! shows the totals, the chart per day, the CSV and the wrong payment held in suspense, which
//! the merchant refunds. A customer reaching the merchant's pages is refused. Screenshots;
//! axe-core on each page.

mod browser;

use axum::http::StatusCode;
use browser::*;
use fantoccini::Locator;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_sells_a_product_from_the_web_pages_in_chromium() {
    if !browser_available() {
        return;
    }
    let t = Tally::start().await;
    let (_shop_key, alice_eur, shop_eur) = shop_and_accounts(&t).await;
    t.enrol("shop").await;
    let alice = t
        .admin_post(
            "/v1/api-keys",
            json!({"role": "customer", "owner": "alice", "label": "buyer"}),
        )
        .await["key"]
        .as_str()
        .expect("key")
        .to_string();
    let scratch = tempfile::tempdir().expect("tempdir");
    let file = scratch.path().join("green.flac");
    let bytes: Vec<u8> = (0..300_000_u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &bytes).expect("the file to upload");
    let driver = Chromedriver::start(scratch.path()).await;
    let browser = driver.browser(&scratch.path().join("profile")).await;

    // Sign in as the merchant; the navigation offers the shop.
    browser
        .goto(&format!("{}/shop", t.base))
        .await
        .expect("/shop");
    type_into(&browser, "#user", "shop").await;
    click(&browser, "#open").await;
    let path = path_of(&browser, "/s/").await;
    let code = t.code_for("shop", path.trim_start_matches("/s/")).await;
    type_into(&browser, "#code", &code).await;
    click(&browser, "#confirm").await;
    path_of(&browser, "/shop").await;
    text_of(&browser, "#no-products", "No products yet").await;
    text_of(&browser, "#nav-shop", "My shop").await;

    // A new product, as a draft.
    type_into(&browser, "#title", "Green album").await;
    browser
        .find(Locator::Css("#pay-to"))
        .await
        .expect("pay-to")
        .select_by_value(&shop_eur)
        .await
        .expect("the shop's account");
    type_into(&browser, "#price", "5.00").await;
    type_into(&browser, "#licence", "Personal use only.").await;
    click(&browser, "#create-product").await;
    let path = path_of(&browser, "/shop/products/").await;
    let product = path.trim_start_matches("/shop/products/").to_string();
    text_of(&browser, "#product-state", "draft").await;
    text_of(&browser, "#no-entries", "No files yet").await;

    // The upload, through the form and its script.
    browser
        .find(Locator::Css("#file"))
        .await
        .expect("file input")
        .send_keys(&file.display().to_string())
        .await
        .expect("choose the file");
    click(&browser, "#upload").await;
    text_of(&browser, "#notice", "Sealed green.flac").await;
    text_of(&browser, "#entries", "green.flac").await;
    shot(&browser, "shop-product").await;
    axe(&browser, "the merchant's product page").await;
    click(&browser, "#publish").await;
    text_of(&browser, "#notice", "On sale").await;
    text_of(&browser, "#product-state", "on sale").await;
    let (status, view) = t
        .call(
            "GET",
            &format!("/v1/products/{product}"),
            Some(&alice.clone()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["state"], "active");
    assert_eq!(view["entries"][0]["plain_len"], 300_000);

    // Two sales: one paid, one paid with the wrong amount (held in suspense).
    let mut references = Vec::new();
    for n in 0..2 {
        let (status, sale) = post_json(
            &t,
            "/v1/sales",
            &alice,
            &format!("sale-{n}"),
            json!({"product": product, "channel": "dev", "address": "alice"}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{sale}");
        references.push(sale["reference"].as_str().expect("reference").to_string());
    }
    for (n, amount) in [(0, "5.00 EUR"), (1, "4.00 EUR")] {
        let (status, paid) = post_json(
            &t,
            "/v1/sales/pay",
            &alice,
            &format!("pay-{n}"),
            json!({"reference": references[n], "from_account": alice_eur, "amount": amount}),
        )
        .await;
        assert!(status.is_success(), "{status} {paid}");
    }
    let after_payments = t.account(&alice_eur).await["balance"]["minor"].as_i64();
    assert_eq!(after_payments, Some(10_000 - 500 - 400));

    // The sales page: totals, chart, table, the held payment; the CSV with the same filters.
    click(&browser, "#nav-sales").await;
    path_of(&browser, "/shop/sales").await;
    text_of(&browser, "#totals", "5.00 EUR").await;
    let table = text_of(&browser, "#sales", "Green album").await;
    assert!(
        table.contains("paid") && table.contains("waiting for payment"),
        "{table}"
    );
    let held = text_of(&browser, "#held", "4.00 EUR").await;
    assert!(held.contains("mismatch"), "{held}");
    text_of(&browser, "#no-overdue", "No purchase is overdue").await;
    let bars = browser
        .find_all(Locator::Css("#chart rect"))
        .await
        .expect("bars");
    assert_eq!(bars.len(), 1, "one day with a paid sale");
    shot(&browser, "shop-sales").await;
    axe(&browser, "the sales page").await;
    let cookie = browser
        .get_named_cookie("tally_web")
        .await
        .expect("cookie")
        .value()
        .to_string();
    let (status, _, csv) = with_cookie(
        &t,
        &format!("/shop/sales.csv?product={product}"),
        &cookie,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let csv = String::from_utf8_lossy(&csv).into_owned();
    assert_eq!(csv.lines().count(), 3, "a header and two sales: {csv}");
    assert!(csv.starts_with("sale,product,title"), "{csv}");

    // The refund: the wrong payment goes back, once.
    click(&browser, "#held .refund").await;
    text_of(&browser, "#notice", "Refunded 4.00 EUR").await;
    text_of(&browser, "#no-held", "None").await;
    assert_eq!(
        t.account(&alice_eur).await["balance"]["minor"].as_i64(),
        Some(10_000 - 500),
        "the wrong payment is back with alice"
    );

    // A customer (signed in by address) is refused the merchant's pages; nothing there opens.
    let buyer = router_sign_in(&t, "ana").await;
    for uri in ["/shop", "/shop/sales", &format!("/shop/products/{product}")] {
        let (status, _, body) = with_cookie(&t, uri, &buyer, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}");
        assert!(
            String::from_utf8_lossy(&body).contains("these pages are for merchants"),
            "{uri}"
        );
    }
    let (status, _, _) = post_form(
        &t,
        &format!("/shop/products/{product}/withdraw"),
        Some(&buyer),
        &format!(
            "csrf={}",
            csrf_for(&buyer, &format!("/shop/products/{product}/withdraw"))
        ),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, view) = t
        .call(
            "GET",
            &format!("/v1/products/{product}"),
            Some(&alice.clone()),
            None,
        )
        .await;
    assert_eq!(view["state"], "active", "still on sale");
}
