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
    let url = browser.current_url().await.expect("url");
    assert_eq!(
        url.query(),
        Some("sealed=green.flac"),
        "the page's script sent the file in parts"
    );
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
    let cookie = session_cookie(&browser).await;
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

/// A draft product of the shop's, paid into `shop_eur`, made through the API; its id.
async fn draft(t: &Tally, shop_key: &str, shop_eur: &str, title: &str) -> String {
    let (status, product) = post_json(
        t,
        "/v1/products",
        shop_key,
        &format!("draft-{}", title.replace(' ', "-")),
        json!({"title": title, "price": "3.00 EUR", "pay_to": shop_eur,
               "licence": "Personal use only.", "instructions": ""}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{product}");
    product["id"].as_str().expect("id").to_string()
}

/// A PUT of one part of a resumable upload, with the session cookie and a CSRF header.
async fn put_part(
    t: &Tally,
    uri: &str,
    cookie: &str,
    csrf: Option<&str>,
    part: &[u8],
) -> (StatusCode, serde_json::Value) {
    let mut builder = axum::http::Request::builder()
        .method("PUT")
        .uri(uri)
        .header(axum::http::header::COOKIE, format!("tally_web={cookie}"))
        .header(axum::http::header::CONTENT_TYPE, "application/octet-stream");
    if let Some(csrf) = csrf {
        builder = builder.header("x-csrf-token", csrf);
    }
    let (status, _, bytes) = t
        .raw(
            builder
                .body(axum::body::Body::from(part.to_vec()))
                .expect("request"),
        )
        .await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

/// The resumable upload behind the page's script: parts at the node's offset, a part at a
/// wrong offset or without the form's token refused with nothing staged, the staged parts
/// sealed at rest (no plaintext on disk), the file sealed into the product on its last part.
#[tokio::test]
async fn a_broken_upload_goes_on_where_it_stopped_and_is_never_plaintext_on_disk() {
    let t = Tally::start().await;
    let (shop_key, _alice_eur, shop_eur) = shop_and_accounts(&t).await;
    t.enrol("shop").await;
    let id = draft(&t, &shop_key, &shop_eur, "Long album").await;
    let cookie = router_sign_in(&t, "shop").await;
    let marker = b"PLAINTEXT-MARKER-";
    let bytes: Vec<u8> = marker
        .iter()
        .copied()
        .cycle()
        .take(2 * 1024 * 1024 + 512 * 1024)
        .collect();
    let total = bytes.len();
    let mib = 1024 * 1024;
    let base = format!("/shop/products/{id}/parts?name=long.flac&kind=product&total={total}");
    let csrf = csrf_for(&cookie, &format!("/shop/products/{id}/parts"));
    let received = || {
        let (t, base, cookie) = (&t, base.clone(), cookie.clone());
        async move {
            let (status, _, body) = with_cookie(t, &base, &cookie, None).await;
            assert_eq!(status, StatusCode::OK);
            let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
            v["received"].as_u64().expect("received")
        }
    };
    assert_eq!(received().await, 0);
    let (status, v) = put_part(
        &t,
        &format!("{base}&offset=0"),
        &cookie,
        Some(&csrf),
        &bytes[..mib],
    )
    .await;
    assert_eq!(
        (status, v["received"].as_u64()),
        (StatusCode::OK, Some(mib as u64)),
        "{v}"
    );

    // Refused, nothing staged: the same part again (a wrong offset), no token, another's token.
    let (status, v) = put_part(
        &t,
        &format!("{base}&offset=0"),
        &cookie,
        Some(&csrf),
        &bytes[..mib],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["details"]["field"], "offset", "{v}");
    let other = csrf_for(&cookie, "/web/logout");
    for token in [None, Some(other.as_str())] {
        let (status, _) = put_part(
            &t,
            &format!("{base}&offset={mib}"),
            &cookie,
            token,
            &bytes[mib..2 * mib],
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    // The connection "broke": the client asks where to go on from.
    assert_eq!(received().await, mib as u64);
    let (status, v) = put_part(
        &t,
        &format!("{base}&offset={mib}"),
        &cookie,
        Some(&csrf),
        &bytes[mib..2 * mib],
    )
    .await;
    assert_eq!(
        (status, v["received"].as_u64()),
        (StatusCode::OK, Some(2 * mib as u64)),
        "{v}"
    );

    // What is staged is sealed: no run of the plaintext anywhere in the product's directory.
    let dir = t._dir.path().join("data/products").join(&id);
    let mut staged = 0;
    for entry in std::fs::read_dir(&dir).expect("the product's directory") {
        let file = std::fs::read(entry.expect("entry").path()).expect("read");
        staged += file.len();
        assert!(
            !file.windows(marker.len()).any(|w| w == marker),
            "plaintext at rest"
        );
    }
    assert!(staged > 2 * mib, "both parts are staged ({staged} bytes)");

    let (status, v) = put_part(
        &t,
        &format!("{base}&offset={}", 2 * mib),
        &cookie,
        Some(&csrf),
        &bytes[2 * mib..],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["sealed"], "long.flac", "{v}");
    let (_, view) = t
        .call("GET", &format!("/v1/products/{id}"), Some(&shop_key), None)
        .await;
    let entry = &view["entries"][0];
    assert_eq!(entry["plain_len"].as_u64(), Some(total as u64), "{view}");
    assert_eq!(
        entry["plain_sha256"].as_str(),
        Some(hex::encode(tally_kernel::crypto::kdf::sha256(&bytes)).as_str())
    );
    let left: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("staging-"))
        .collect();
    assert!(left.is_empty(), "the staging file is gone once sealed");
}

/// Without script the upload form is posted as `multipart/form-data`: the token field is read
/// first (a wrong one refuses before the file is read), then the file is sealed as it arrives.
#[tokio::test]
async fn the_upload_form_works_without_script() {
    let t = Tally::start().await;
    let (shop_key, _alice_eur, shop_eur) = shop_and_accounts(&t).await;
    t.enrol("shop").await;
    let id = draft(&t, &shop_key, &shop_eur, "Short album").await;
    let cookie = router_sign_in(&t, "shop").await;
    let action = format!("/shop/products/{id}/entries");
    let form = |csrf: &str| {
        let mut body = Vec::new();
        for (name, value) in [("csrf", csrf), ("kind", "product")] {
            body.extend_from_slice(
                format!(
                    "--XB\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                )
                .as_bytes(),
            );
        }
        body.extend_from_slice(
            b"--XB\r\nContent-Disposition: form-data; name=\"file\"; filename=\"short.flac\"\r\n\
              Content-Type: application/octet-stream\r\n\r\n",
        );
        body.extend_from_slice(&[7_u8; 5000]);
        body.extend_from_slice(b"\r\n--XB--\r\n");
        axum::http::Request::builder()
            .method("POST")
            .uri(&action)
            .header(axum::http::header::COOKIE, format!("tally_web={cookie}"))
            .header(
                axum::http::header::CONTENT_TYPE,
                "multipart/form-data; boundary=XB",
            )
            .body(axum::body::Body::from(body))
            .expect("request")
    };
    let (status, _, _) = t.raw(form(&"0".repeat(64))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a wrong token");
    let (_, view) = t
        .call("GET", &format!("/v1/products/{id}"), Some(&shop_key), None)
        .await;
    assert_eq!(
        view["entries"].as_array().map(Vec::len),
        Some(0),
        "nothing sealed"
    );
    let (status, _, html) = t.raw(form(&csrf_for(&cookie, &action))).await;
    let html = String::from_utf8_lossy(&html);
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Sealed short.flac"), "{html}");
    let (_, view) = t
        .call("GET", &format!("/v1/products/{id}"), Some(&shop_key), None)
        .await;
    assert_eq!(view["entries"][0]["plain_len"], 5000, "{view}");
}
