//! The public checkout (issue [9] part 1) end to end in Debian's Chromium: a product published
//! through the API, then a member of the public with only a browser: the shop, the product
//! page, a sign-in by address with the code from the (dev) inbox, the sale, the locked package
//! downloaded (whole and resumed), the payment instructions with their QR code, a bank
//! transfer quoting the reference arriving as the receiver's signed notification, the page
//! following the sale to "paid", the key shown, and the file unlocked and compared byte for
//! byte. A customer with a funded account pays from it, confirmed by a code (a wrong one
//! first). Screenshots of each page; axe-core on each.

mod browser;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use browser::*;
use fantoccini::Locator;
use serde_json::{Value, json};
use tally_kernel::crypto::kdf::hmac_sha256;

/// The bank's shared secret for its payment notifications.
const BANK_SECRET: &[u8] = b"bank-secret-bank-secret-32-bytes";

/// The product's one file.
fn album() -> Vec<u8> {
    (0..200_000_u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect()
}

/// A merchant `shop` selling "Blue album" (published), paid to its EUR account; a bank
/// receiver. Returns the product id.
async fn published_album(t: &Tally, shop: &str, shop_eur: &str) -> String {
    let created = Tally::expect(
        StatusCode::CREATED,
        raw_json(
            t,
            "POST",
            "/v1/products",
            shop,
            Some("album-1"),
            json!({"title": "Blue album", "price": "9.90 EUR", "pay_to": shop_eur,
                   "producer": "studio", "licence": "Personal use only.",
                   "instructions": "Thank you for buying."}),
        )
        .await,
    );
    let product = created["id"].as_str().expect("id").to_string();
    let request = Request::builder()
        .method("PUT")
        .uri(format!(
            "/v1/products/{product}/entries/album.flac?kind=product"
        ))
        .header(header::AUTHORIZATION, format!("Bearer {shop}"))
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from(album()))
        .expect("request");
    let (status, _, body) = t.raw(request).await;
    assert!(
        status.is_success(),
        "{status} {}",
        String::from_utf8_lossy(&body)
    );
    let (status, body) = t
        .call(
            "POST",
            &format!("/v1/products/{product}/publish"),
            Some(shop),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let bank = t
        .admin_post(
            "/v1/accounts",
            json!({"currency": "EUR", "kind": "settlement",
                   "debits_must_not_exceed_credits": false}),
        )
        .await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let admin = t.admin.clone();
    let (status, body) = t
        .call(
            "PUT",
            "/v1/receivers/bank",
            Some(&admin),
            Some(json!({"account": bank, "hmac_secret": hex::encode(BANK_SECRET)})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    product
}

/// A JSON request with an idempotency key.
async fn raw_json(
    t: &Tally,
    method: &str,
    uri: &str,
    key: &str,
    idem: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(idem) = idem {
        builder = builder.header("idempotency-key", idem);
    }
    let (status, _, bytes) = t
        .raw(builder.body(Body::from(body.to_string())).expect("request"))
        .await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The bank tells the node a transfer quoting `reference` arrived.
async fn bank_transfer(t: &Tally, reference: &str, amount: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let body = json!({"id": format!("bank-{reference}"), "reference": reference,
                      "amount": amount, "paid_at": now, "payer": "A. Buyer"})
    .to_string();
    let ts = now.to_string();
    let signed = [
        tally_proto::delivery::notification::DOMAIN,
        ts.as_bytes(),
        b".",
        body.as_bytes(),
    ]
    .concat();
    let request = Request::builder()
        .method("POST")
        .uri("/v1/receivers/bank/notifications")
        .header(header::CONTENT_TYPE, "application/json")
        .header("tally-timestamp", &ts)
        .header(
            "tally-signature",
            format!(
                "hmac-sha256={}",
                hex::encode(hmac_sha256(BANK_SECRET, &signed))
            ),
        )
        .body(Body::from(body))
        .expect("request");
    let (status, _, bytes) = t.raw(request).await;
    let reply: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["status"], "matched", "{reply}");
}

/// Unlocks the package's first entry with the key: the plaintext.
fn unlock(package: &[u8], key_hex: &str) -> Vec<u8> {
    let inspected = tally_proto::delivery::inspect(package, None).expect("the package verifies");
    let key: [u8; 32] = hex::decode(key_hex)
        .expect("hex key")
        .try_into()
        .expect("32 bytes");
    let mut out = Vec::new();
    tally_proto::delivery::unlock_entry(
        &mut std::io::Cursor::new(package),
        &inspected,
        &key,
        0,
        &mut out,
    )
    .expect("the key unlocks the package");
    out
}

/// Reads the code sent for the session of the code form on the page (`/s/{session}`).
async fn sign_in_by_address(t: &Tally, browser: &fantoccini::Client, address: &str) {
    let channel = browser
        .find(Locator::Css("#guest-channel"))
        .await
        .expect("the channel choice");
    channel
        .select_by_value("dev")
        .await
        .expect("the dev inbox on a dev node");
    type_into(browser, "#guest-address", address).await;
    click(browser, "#guest-open").await;
    let path = path_of(browser, "/s/").await;
    let session = path.trim_start_matches("/s/").to_string();
    text_of(browser, "#what", "sign in").await;
    shot(browser, "sign-in-code").await;
    axe(browser, "the code page").await;
    let code = t.code_for(address, &session).await;
    type_into(browser, "#code", &code).await;
    click(browser, "#confirm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_the_public_buys_a_locked_album_in_chromium() {
    if !browser_available() {
        return;
    }
    let t = Tally::start().await;
    t.enrol_alice().await;
    let (shop, alice_eur, shop_eur) = shop_and_accounts(&t).await;
    let product = published_album(&t, &shop, &shop_eur).await;
    let scratch = tempfile::tempdir().expect("tempdir");
    let driver = Chromedriver::start(scratch.path()).await;
    let browser = driver.browser(&scratch.path().join("profile")).await;

    // The shop lists the product; its page says what is sold, by whom, for how much.
    browser.goto(&format!("{}/", t.base)).await.expect("open /");
    text_of(&browser, "#products", "Blue album").await;
    shot(&browser, "shop").await;
    axe(&browser, "the shop").await;
    click(&browser, "#products a").await;
    path_of(&browser, &format!("/p/{product}")).await;
    for (css, text) in [
        ("#product-title", "Blue album"),
        ("#price", "9.90 EUR"),
        ("#producer", "studio"),
        ("#licence", "Personal use only."),
        ("#files", "album.flac"),
    ] {
        text_of(&browser, css, text).await;
    }
    shot(&browser, "product").await;
    axe(&browser, "the product page").await;

    // A buyer without a user: the address, its code, back on the product page signed in.
    sign_in_by_address(&t, &browser, "ana").await;
    path_of(&browser, &format!("/p/{product}")).await;
    // The page names the buyer by the address, not the guest user behind it.
    text_of(&browser, "#signed-in-as", "ana").await;
    text_of(&browser, "#key-to", "ana").await;
    click(&browser, "#buy").await;
    let path = path_of(&browser, "/checkout/").await;
    let sale = path.trim_start_matches("/checkout/").to_string();
    text_of(&browser, "#sale-state", "Waiting for your payment").await;
    let reference = text_of(&browser, "#reference", "").await;
    text_of(&browser, "#amount", "9.90 EUR").await;
    text_of(&browser, "#pay-to", &shop_eur).await;
    text_of(&browser, "#no-account", "bank transfer").await;
    let qr = browser
        .find(Locator::Css("#qr svg"))
        .await
        .expect("the payment QR code");
    assert_eq!(
        qr.attr("aria-label").await.expect("label").as_deref(),
        Some(format!("Payment instructions: 9.90 EUR, reference {reference}").as_str())
    );
    shot(&browser, "checkout").await;
    axe(&browser, "the checkout page").await;

    // The locked package, with the browser's cookie: whole, and resumed from a Range.
    let cookie = session_cookie(&browser).await;
    let download = format!("/checkout/{sale}/package");
    let (status, headers, package) = with_cookie(&t, &download, &cookie, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers
            .get(header::CONTENT_DISPOSITION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains(".tallypkg")),
        "{headers:?}"
    );
    let (status, _, tail) = with_cookie(&t, &download, &cookie, Some("bytes=1000-")).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&package[1000..], &tail[..], "a resumed download continues");
    let (status, _, refused) = with_cookie(&t, &download, "tally_session_forged", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no cookie, no package");
    assert!(String::from_utf8_lossy(&refused).contains("Sign in again"));
    let (status, _, _) = with_cookie(&t, &format!("/checkout/{sale}/key"), &cookie, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "no key before the payment");

    // The bank transfer quoting the reference arrives; the page follows it to "paid".
    // No reload by the test: the page's script sees the state change and reloads itself.
    bank_transfer(&t, &reference, "9.90 EUR").await;
    text_of(&browser, "#sale-state", "Paid").await;
    shot(&browser, "checkout-paid").await;
    axe(&browser, "the paid checkout page").await;
    click(&browser, "#show-key").await;
    path_of(&browser, &format!("/checkout/{sale}/key")).await;
    let key = text_of(&browser, "#unlock-key", "").await;
    let command = text_of(&browser, "#unlock-command", "tally package unlock").await;
    assert!(command.ends_with(&format!("--key {key}")), "{command}");
    shot(&browser, "unlock").await;
    axe(&browser, "the key page").await;
    assert_eq!(unlock(&package, &key), album(), "the key unlocks the album");
    click(&browser, "#resend-key").await;
    text_of(&browser, "#notice", "sent again to dev ana").await;

    // Signing out ends the token everywhere: the old cookie opens nothing.
    click(&browser, "#sign-out").await;
    // Only a signed-out page offers to sign in (every path starts with "/").
    text_of(&browser, "#nav-sign-in", "Sign in").await;
    let (status, _, _) = with_cookie(&t, &download, &cookie, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "signed out");

    // A customer with an account pays from it, confirmed by a code (a wrong one first).
    browser
        .goto(&format!("{}/p/{product}", t.base))
        .await
        .expect("product page");
    click(&browser, "#sign-in-instead").await;
    type_into(&browser, "#user", "alice").await;
    click(&browser, "#open").await;
    let path = path_of(&browser, "/s/").await;
    let session = path.trim_start_matches("/s/").to_string();
    let code = t.code_for("alice", &session).await;
    type_into(&browser, "#code", &code).await;
    click(&browser, "#confirm").await;
    path_of(&browser, &format!("/p/{product}")).await;
    text_of(&browser, "#signed-in-as", "alice").await;
    click(&browser, "#buy").await;
    let path = path_of(&browser, "/checkout/").await;
    let sale = path.trim_start_matches("/checkout/").to_string();
    let before = t.account(&alice_eur).await["balance"]["minor"]
        .as_i64()
        .expect("balance");
    browser
        .find(Locator::Css("#account"))
        .await
        .expect("the account choice")
        .select_by_value(&alice_eur)
        .await
        .expect("alice's account");
    click(&browser, "#pay").await;
    text_of(&browser, "#confirm-amount", "9.90 EUR").await;
    text_of(&browser, "#confirm-payee", "shop").await;
    shot(&browser, "pay-confirm").await;
    axe(&browser, "the payment confirmation").await;
    let inbox = t.inbox("alice").await;
    let confirm_session = inbox
        .iter()
        .find_map(|m| {
            let s = m["data"]["session"].as_str()?;
            (s != session).then(|| s.to_string())
        })
        .expect("a confirmation code was sent");
    let code = t.code_for("alice", &confirm_session).await;
    type_into(&browser, "#code", &wrong(&code)).await;
    click(&browser, "#confirm-payment").await;
    text_of(&browser, "#result", "wrong code (4 attempts left)").await;
    assert_eq!(
        t.account(&alice_eur).await["balance"]["minor"].as_i64(),
        Some(before),
        "a wrong code moves nothing"
    );
    type_into(&browser, "#code", &code).await;
    click(&browser, "#confirm-payment").await;
    path_of(&browser, &format!("/checkout/{sale}")).await;
    text_of(&browser, "#sale-state", "Paid").await;
    assert_eq!(
        t.account(&alice_eur).await["balance"]["minor"].as_i64(),
        Some(before - 990),
        "paid once"
    );
    // Her page lists the purchase, newest first, with a link back to its checkout.
    click(&browser, "#nav-me").await;
    let purchases = text_of(&browser, "#purchases", "Blue album").await;
    assert!(purchases.contains("paid, key released"), "{purchases}");
    click(&browser, "#purchases a").await;
    path_of(&browser, &format!("/checkout/{sale}")).await;
    let (_, audit) = t
        .call("GET", "/v1/ledger/audit", Some(&t.admin.clone()), None)
        .await;
    assert_eq!(audit["ok"], true, "{audit}");
}

// ---------------------------------------------------------------------------------------------
// Bad input through the router (no browser): forged, replayed and cross-site forms, another
// buyer's pages, open redirects. Each refusal is checked to have changed nothing.

async fn sales_count(t: &Tally) -> usize {
    let (status, report) = t
        .call("GET", "/v1/reports/sales", Some(&t.admin.clone()), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    report
        .as_array()
        .or_else(|| report["rows"].as_array())
        .map_or(0, Vec::len)
}

#[tokio::test]
async fn forged_replayed_and_cross_site_forms_change_nothing() {
    let t = Tally::start().await;
    let (shop, alice_eur, shop_eur) = shop_and_accounts(&t).await;
    let product = published_album(&t, &shop, &shop_eur).await;
    let ana = router_sign_in(&t, "ana").await;
    let bob = router_sign_in(&t, "bob").await;
    assert_ne!(ana, bob);

    let page = with_cookie(&t, &format!("/p/{product}"), &ana, None).await;
    assert_eq!(page.0, StatusCode::OK);
    let html = String::from_utf8_lossy(&page.2).into_owned();
    let action = format!("/p/{product}/buy");
    let csrf = hidden(&html, &action, "csrf");
    let nonce = hidden(&html, &action, "nonce");
    let logout_csrf = hidden(&html, "/web/logout", "csrf");
    assert_eq!((csrf.len(), nonce.len()), (64, 32));
    assert_eq!(
        csrf,
        csrf_for(&ana, &action),
        "the token is the documented HMAC"
    );

    let form = format!("csrf={csrf}&nonce={nonce}");
    let refusals = [
        // No token, a wrong one, another action's, and the right one for another session.
        (
            Some(ana.as_str()),
            format!("nonce={nonce}"),
            vec![],
            StatusCode::FORBIDDEN,
        ),
        (
            Some(&ana),
            format!("csrf={}&nonce={nonce}", "0".repeat(64)),
            vec![],
            StatusCode::FORBIDDEN,
        ),
        (
            Some(&ana),
            format!("csrf={logout_csrf}&nonce={nonce}"),
            vec![],
            StatusCode::FORBIDDEN,
        ),
        (Some(&bob), form.clone(), vec![], StatusCode::FORBIDDEN),
        // Not signed in, or a cookie no node knows.
        (None, form.clone(), vec![], StatusCode::UNAUTHORIZED),
        (
            Some("tally_session_0000"),
            form.clone(),
            vec![],
            StatusCode::UNAUTHORIZED,
        ),
        // The right form, sent from another site by the browser.
        (
            Some(&ana),
            form.clone(),
            vec![("sec-fetch-site", "cross-site")],
            StatusCode::FORBIDDEN,
        ),
        // A malformed nonce.
        (
            Some(&ana),
            format!("csrf={csrf}&nonce=xyz"),
            vec![],
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (cookie, body, extra, status) in refusals {
        let (got, _, html) = post_form(&t, &action, cookie, &body, &extra).await;
        assert_eq!(got, status, "{body} {extra:?}: {html}");
        assert!(
            html.contains("id=\"advice\""),
            "the page says what to try: {html}"
        );
    }
    assert_eq!(sales_count(&t).await, 0, "no refused form made a sale");

    // The form as rendered: one sale, and the same form again is the same sale.
    let (status, first, _) = post_form(&t, &action, Some(&ana), &form, &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(first.starts_with("/checkout/"), "{first}");
    let (_, again, _) = post_form(&t, &action, Some(&ana), &form, &[]).await;
    assert_eq!(again, first, "a double submit buys once");
    assert_eq!(sales_count(&t).await, 1);

    // Another buyer's checkout, package, key and state: the API's 404, as a page.
    for suffix in ["", "/package", "/key", "/state"] {
        let (status, _, _) = with_cookie(&t, &format!("{first}{suffix}"), &bob, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{first}{suffix}");
    }
    // Paying from someone else's account: refused, nothing moved.
    let checkout = with_cookie(&t, &first, &ana, None).await;
    let html = String::from_utf8_lossy(&checkout.2).into_owned();
    assert!(
        html.contains("id=\"no-account\""),
        "ana has no account: {html}"
    );
    // The token as the page would make it (ana has no account, so the page has no pay form).
    let pay_csrf = csrf_for(&ana, &format!("{first}/pay"));
    let before = t.account(&alice_eur).await["balance"]["minor"].as_i64();
    let (status, _, html) = post_form(
        &t,
        &format!("{first}/pay"),
        Some(&ana),
        &format!(
            "csrf={pay_csrf}&nonce={}&account={alice_eur}",
            "1".repeat(32)
        ),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{html}");
    assert_eq!(
        t.account(&alice_eur).await["balance"]["minor"].as_i64(),
        before
    );

    // A draft product is not public; `next` never leaves the node.
    let (status, draft) = raw_json(
        &t,
        "POST",
        "/v1/products",
        &shop,
        Some("draft-1"),
        json!({"title": "Unreleased", "price": "1.00 EUR", "pay_to": shop_eur,
               "licence": "l", "instructions": ""}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{draft}");
    let draft_id = draft["id"].as_str().expect("id");
    let (status, _, _) = with_cookie(&t, &format!("/p/{draft_id}"), &ana, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, location, _) = post_form(
        &t,
        "/web/guest",
        None,
        "channel=dev&address=carol&next=//evil.example/x",
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(
        location.starts_with("/s/") && !location.contains("evil"),
        "{location}"
    );

    // Sign-out needs its token too; with it, the cookie stops working on every page.
    let (status, _, _) = post_form(&t, "/web/logout", Some(&ana), "csrf=", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(with_cookie(&t, "/me", &ana, None).await.0, StatusCode::OK);
    let (status, location, _) = post_form(
        &t,
        "/web/logout",
        Some(&ana),
        &format!("csrf={logout_csrf}"),
        &[],
    )
    .await;
    assert_eq!((status, location.as_str()), (StatusCode::SEE_OTHER, "/"));
    let (status, headers, _) = with_cookie(&t, "/me", &ana, None).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "signed out: sent to sign in");
    assert_eq!(
        headers.get(header::LOCATION).and_then(|v| v.to_str().ok()),
        Some("/?next=/me")
    );
}

// ---------------------------------------------------------------------------------------------
// A dev node and a browser alone (the README's promise): the demo data set, the code read from
// the dev inbox page in a second tab, the purchase paid from the demo customer's account.

/// The code in the newest message of `address`'s dev inbox page, read in a second tab as a
/// person would; the first tab stays where it was (a POST's answer cannot be gone back to).
async fn code_from_inbox_tab(browser: &fantoccini::Client, base: &str, address: &str) -> String {
    let first = browser.window().await.expect("this tab");
    let tab = browser.new_window(true).await.expect("a second tab");
    browser
        .switch_to_window(tab.handle)
        .await
        .expect("to the second tab");
    browser
        .goto(&format!("{base}/dev/inbox/{address}"))
        .await
        .expect("the dev inbox page");
    let body = text_of(browser, "article pre", "code").await;
    shot(browser, "dev-inbox").await;
    axe(browser, "the dev inbox").await;
    browser.close_window().await.expect("close the tab");
    browser
        .switch_to_window(first)
        .await
        .expect("back to the first tab");
    code_in(&body).unwrap_or_else(|| panic!("no code in {body:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dev_node_and_a_browser_are_enough_to_buy() {
    if !browser_available() {
        return;
    }
    let t = Tally::start().await;
    let demo = t.node.seed_demo().await.expect("the demo data set");
    let again = t.node.seed_demo().await.expect("seeding again");
    assert_eq!(again.product.id, demo.product.id, "seeding is idempotent");
    let before = t.account(&demo.customer_account.to_string()).await["balance"]["minor"]
        .as_i64()
        .expect("balance");
    assert_eq!(before, 50_00, "the customer starts with 50.00 EUR once");
    let scratch = tempfile::tempdir().expect("tempdir");
    let driver = Chromedriver::start(scratch.path()).await;
    let browser = driver.browser(&scratch.path().join("profile")).await;

    browser.goto(&format!("{}/", t.base)).await.expect("open /");
    click(&browser, "#products a").await;
    path_of(&browser, &format!("/p/{}", demo.product.id)).await;
    click(&browser, "#sign-in-instead").await;
    type_into(&browser, "#user", tally_service::demo::CUSTOMER).await;
    click(&browser, "#open").await;
    path_of(&browser, "/s/").await;
    text_of(&browser, ".dev", "dev inbox").await;
    let code = code_from_inbox_tab(&browser, &t.base, tally_service::demo::CUSTOMER).await;
    type_into(&browser, "#code", &code).await;
    click(&browser, "#confirm").await;
    path_of(&browser, &format!("/p/{}", demo.product.id)).await;
    click(&browser, "#buy").await;
    let path = path_of(&browser, "/checkout/").await;
    browser
        .find(Locator::Css("#account"))
        .await
        .expect("the customer's accounts")
        .select_by_value(&demo.customer_account.to_string())
        .await
        .expect("the demo account");
    click(&browser, "#pay").await;
    text_of(&browser, "#confirm-amount", "4.90 EUR").await;
    let code = code_from_inbox_tab(&browser, &t.base, tally_service::demo::CUSTOMER).await;
    type_into(&browser, "#code", &code).await;
    click(&browser, "#confirm-payment").await;
    path_of(&browser, &path).await;
    text_of(&browser, "#sale-state", "Paid").await;
    click(&browser, "#show-key").await;
    text_of(&browser, "#unlock-command", "tally package unlock").await;
    let after = t.account(&demo.customer_account.to_string()).await["balance"]["minor"].as_i64();
    assert_eq!(after, Some(50_00 - 4_90));
}

/// Sign-in by address cannot be turned against the address's holder: a guest who registered
/// someone else's address on itself (never proved) does not get that person signed in as the
/// guest — the code claims the address for its own guest; and a user's second verified
/// address does not sign that user in (only the address its codes go to does).
#[tokio::test]
async fn a_sign_in_by_address_signs_in_the_addresses_holder_only() {
    let t = Tally::start().await;
    let evil = router_sign_in(&t, "evil").await;
    let (_, who) = t.call("GET", "/v1/oob/whoami", Some(&evil), None).await;
    let evil_user = who["user"].as_str().expect("user").to_string();
    let (status, body) = t
        .call(
            "POST",
            &format!("/v1/subscribers/{evil_user}/addresses"),
            Some(&evil),
            Some(json!({"channel": "dev", "address": "victim"})),
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    let victim = router_sign_in(&t, "victim").await;
    let (_, who) = t.call("GET", "/v1/oob/whoami", Some(&victim), None).await;
    assert_eq!(
        who["user"].as_str(),
        Some(tally_service::oob::guest::guest_name("dev", "victim").as_str()),
        "the victim is their own guest, not the one who registered the address: {who}"
    );
    let (_, addresses) = t
        .call(
            "GET",
            &format!("/v1/subscribers/{evil_user}/addresses"),
            Some(&evil),
            None,
        )
        .await;
    assert!(
        !addresses.to_string().contains("victim"),
        "the code moved the address to its holder: {addresses}"
    );

    // alice's codes go to `alice`; her second verified address does not sign her in.
    t.enrol_alice().await;
    let opened = t
        .admin_post(
            "/v1/subscribers/alice/addresses",
            json!({"channel": "dev", "address": "alice-old"}),
        )
        .await;
    let session = opened["session"].as_str().expect("session").to_string();
    let code = t.code_for("alice-old", &session).await;
    let (status, _) = t
        .call(
            "POST",
            &format!("/v1/oob/sessions/{session}/verify"),
            None,
            Some(json!({ "code": code })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, html) =
        post_form(&t, "/web/guest", None, "channel=dev&address=alice-old", &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("sign in with your user name"), "{html}");
    let alice = router_sign_in(&t, "alice").await;
    let (_, who) = t.call("GET", "/v1/oob/whoami", Some(&alice), None).await;
    assert_eq!(who["user"], "alice", "{who}");
}
