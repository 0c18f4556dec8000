//! The web page (channel A for people) at its boundary: a real node in dev mode served on
//! 127.0.0.1, driven by a real headless Chromium through chromedriver (fantoccini), with the
//! one-time code read from the node's dev inbox as the user's second channel.
//!
//! Setup and checks of the ledger go through the JSON API with `oneshot` on the same router
//! (no HTTP client needed). No sleeps for timing: where something must be waited for
//! (chromedriver starting, a page loading after a click), it is polled under a deadline.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`); without them the browser test prints a notice and passes, unless
//! `TALLY_REQUIRE_CHROMIUM=1` (CI) makes it fail.

mod browser;

use axum::http::{StatusCode, header};
use browser::*;

#[test]
fn codes_are_read_from_either_message_shape() {
    let cases = [
        (
            "Your Tally sign-in code: 12345678\nValid until 2026-01-01T00:00:00Z.",
            Some("12345678"),
        ),
        (
            "Confirm with code 00420042:\n12.50 EUR to shop\nFor: Blue mug",
            Some("00420042"),
        ),
        ("Valid until 2026-01-01. Your code: 123456", Some("123456")),
        ("no code here", None),
        ("code: 12", None),
    ];
    for (body, expected) in cases {
        assert_eq!(code_in(body).as_deref(), expected, "{body:?}");
    }
    assert_eq!(wrong("12345678"), "12345679");
    assert_eq!(wrong("12345679"), "12345670");
}

#[tokio::test]
async fn the_page_answers_html_with_the_api_statuses_and_escapes_what_it_shows() {
    let t = Tally::start().await;
    let (status, headers, html) = page(&t, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_html(&headers);
    assert!(html.contains("<title>Tally — shop</title>"), "{html}");
    assert!(
        html.contains("Nothing is on sale yet"),
        "an empty shop says what to do: {html}"
    );
    assert!(html.contains(r#"name="user" id="user""#) && html.contains(r#"id="open""#));
    assert!(html.contains(r#"id="guest-address""#), "{html}");
    assert!(!html.contains("<script"), "no JavaScript: {html}");

    // Unknown and malformed sessions: the API's 404, as a page (not rewritten to JSON).
    for uri in ["/s/00000000000000000000000000000000", "/s/not-hex"] {
        let (status, headers, html) = page(&t, uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {html}");
        assert_html(&headers);
        assert!(
            html.contains(r#"id="result""#) && html.contains("not found"),
            "{html}"
        );
    }
    // Unknown user, or one without a verified address: refused in the same words (the page
    // does not tell which users exist), the form kept with the name escaped.
    let (status, headers, html) = form_post(&t, "/web/login", "user=mallory").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert_html(&headers);
    assert!(html.contains("no code can be sent for this user"), "{html}");
    t.admin_post(
        "/v1/subscribers/carol/addresses",
        serde_json::json!({"channel": "dev", "address": "carol"}),
    )
    .await;
    let (status, _, html_known) = form_post(&t, "/web/login", "user=carol").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html_known}");
    assert_eq!(
        html_known.replace("carol", "mallory"),
        html,
        "the same answer for a user without a verified address"
    );
    let (status, _, html) = form_post(&t, "/web/login", "user=%3Cb%3E%22").await;
    assert!(status.is_client_error(), "{status}: {html}");
    assert!(html.contains(r#"value="&#60;b&#62;&#34;""#), "{html}");
    assert!(!html.contains("<b>"), "{html}");
    let (status, _, html) = form_post(&t, "/web/login", "nobody=1").await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "missing field: {html}"
    );
    assert!(html.contains("bad form"), "{html}");

    t.enrol_alice().await;
    let (status, headers, _) = form_post(&t, "/web/login", "user=alice").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let location = headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .expect("redirect")
        .to_string();
    assert!(
        location.starts_with("/s/") && location.len() == 3 + 32,
        "{location}"
    );

    // A payment whose description tries to inject markup is shown as text.
    let (shop, alice_eur, shop_eur) = shop_and_accounts(&t).await;
    let session = payment_session(
        &t,
        &shop,
        &alice_eur,
        &shop_eur,
        "<script>alert(1)</script> \"mug\" & 'cup'",
    )
    .await;
    let uri = format!("/s/{session}");
    let (status, _, html) = page(&t, &uri).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!html.contains("<script"), "{html}");
    assert!(
        html.contains(
            "&#60;script&#62;alert(1)&#60;/script&#62; &#34;mug&#34; &#38; &#39;cup&#39;"
        ),
        "{html}"
    );
    assert!(
        html.contains("12.50 EUR") && html.contains(&shop_eur),
        "{html}"
    );

    // Wrong codes: 422 with attempts left, then 423 once locked; afterwards the session is over.
    let code = t.code_for("alice", &session).await;
    let bad = wrong(&code);
    for left in (1..5).rev() {
        let (status, headers, html) = form_post(&t, &uri, &format!("code={bad}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
        assert_html(&headers);
        assert!(
            html.contains(&format!("wrong code ({left} attempts left)")),
            "{html}"
        );
        assert!(
            html.contains(r#"id="code""#),
            "the form stays while the session is open"
        );
    }
    let (status, _, html) = form_post(&t, &uri, &format!("code={bad}")).await;
    assert_eq!(status, StatusCode::LOCKED, "{html}");
    assert!(
        html.contains("too many wrong codes; the session is locked"),
        "{html}"
    );
    assert!(
        !html.contains(r#"id="code""#),
        "no form on a locked session"
    );
    let (status, _, html) = form_post(&t, &uri, &format!("code={code}")).await;
    assert_eq!(
        status,
        StatusCode::LOCKED,
        "the right code is too late: {html}"
    );
    let (status, _, html) = form_post(&t, &format!("{uri}/cancel"), "").await;
    assert_eq!(status, StatusCode::CONFLICT, "{html}");
    assert!(html.contains("the session is closed"), "{html}");
    let alice = t.account(&alice_eur).await;
    assert_eq!(
        (
            alice["debits_pending"].as_i64(),
            alice["debits_posted"].as_i64()
        ),
        (Some(0), Some(0)),
        "the lock released the hold: {alice}"
    );

    // Cancel: nothing authorised, the hold released; a second cancel is 409.
    let session = payment_session(&t, &shop, &alice_eur, &shop_eur, "Green mug").await;
    let uri = format!("/s/{session}");
    let (status, _, html) = form_post(&t, &format!("{uri}/cancel"), "").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("Cancelled") && html.contains(r#"id="state">closed<"#),
        "{html}"
    );
    let (status, _, _) = form_post(&t, &format!("{uri}/cancel"), "").await;
    assert_eq!(status, StatusCode::CONFLICT);
    let alice = t.account(&alice_eur).await;
    assert_eq!(alice["debits_pending"].as_i64(), Some(0), "{alice}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_and_pays_in_chromium() {
    if !browser_available() {
        return;
    }
    let t = Tally::start().await;
    t.enrol_alice().await;
    let scratch = tempfile::tempdir().expect("tempdir");
    let driver = Chromedriver::start(scratch.path()).await;
    let browser = driver.browser(&scratch.path().join("profile")).await;

    // Flow 1: sign in with the code from the second channel: the session cookie is the
    // sign-in's access token (HttpOnly, SameSite=Strict), and it opens whoami.
    browser.goto(&format!("{}/", t.base)).await.expect("open /");
    let title = browser.title().await.expect("title");
    assert_eq!(title, "Tally — shop");
    type_into(&browser, "#user", "alice").await;
    click(&browser, "#open").await;
    let path = path_of(&browser, "/s/").await;
    let session = path.trim_start_matches("/s/").to_string();
    assert_eq!(session.len(), 32, "{path}");
    text_of(&browser, "#what", "sign in").await;
    let code = t.code_for("alice", &session).await;
    type_into(&browser, "#code", &code).await;
    click(&browser, "#confirm").await;
    path_of(&browser, "/me").await;
    text_of(&browser, "#signed-in-as", "alice").await;
    let cookie = browser
        .get_named_cookie("tally_web")
        .await
        .expect("the session cookie is set");
    assert_eq!(cookie.http_only(), Some(true), "{cookie:?}");
    assert_eq!(
        format!("{:?}", cookie.same_site()),
        "Some(Strict)",
        "{cookie:?}"
    );
    let token = cookie.value().to_string();
    assert!(token.starts_with("tally_session_"), "{token}");
    let who = Tally::expect(
        StatusCode::OK,
        t.call("GET", "/v1/oob/whoami", Some(&token), None).await,
    );
    assert_eq!(who["user"], "alice", "{who}");

    // Flow 2: a merchant's payment request, shown in clear; a wrong code moves nothing.
    let (shop, alice_eur, shop_eur) = shop_and_accounts(&t).await;
    let before = t.account(&alice_eur).await["balance"]["minor"]
        .as_i64()
        .expect("balance");
    let session = payment_session(&t, &shop, &alice_eur, &shop_eur, "Blue mug").await;
    browser
        .goto(&format!("{}/s/{session}", t.base))
        .await
        .expect("open the session");
    let shown = text_of(&browser, "main", "12.50 EUR").await;
    for expected in [
        "12.50 EUR",
        "shop",
        "Blue mug",
        shop_eur.as_str(),
        "payment",
        "open",
    ] {
        assert!(
            shown.contains(expected),
            "{expected:?} not shown in:\n{shown}"
        );
    }
    let code = t.code_for("alice", &session).await;
    type_into(&browser, "#code", &wrong(&code)).await;
    click(&browser, "#confirm").await;
    text_of(&browser, "#result", "wrong code").await;
    text_of(&browser, "#attempts-left", "4").await;
    let alice = t.account(&alice_eur).await;
    let shop_account = t.account(&shop_eur).await;
    assert_eq!(
        (
            alice["debits_pending"].as_i64(),
            alice["debits_posted"].as_i64(),
            shop_account["credits_posted"].as_i64()
        ),
        (Some(1250), Some(0), Some(0)),
        "only the hold: {alice} {shop_account}"
    );

    type_into(&browser, "#code", &code).await;
    click(&browser, "#confirm").await;
    text_of(&browser, "#result", "authorized").await;
    text_of(&browser, "#state", "verified").await;
    let alice = t.account(&alice_eur).await;
    let shop_account = t.account(&shop_eur).await;
    assert_eq!(
        shop_account["credits_posted"].as_i64(),
        Some(1250),
        "{shop_account}"
    );
    assert_eq!(
        alice["balance"]["minor"].as_i64(),
        Some(before - 1250),
        "{alice}"
    );
    assert_eq!(
        alice["debits_pending"].as_i64(),
        Some(0),
        "the hold was posted: {alice}"
    );

    browser.close().await.expect("close the browser session");
    drop(driver);
}

/// Code sends from the web are capped per client address (`client_quota`, 30 per window by
/// default) whoever they are for: the 31st sign-in by address from one client is a 429 page
/// and sends nothing; another client is not held up by it.
#[tokio::test]
async fn sign_ins_by_address_are_capped_per_client() {
    let t = Tally::start().await;
    let send = |n: u32, peer: [u8; 4]| {
        let request = axum::http::Request::builder()
            .method("POST")
            .uri("/web/guest")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .extension(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                peer, 40_000,
            ))))
            .body(axum::body::Body::from(format!(
                "channel=dev&address=buyer-{n}"
            )))
            .expect("request");
        t.raw(request)
    };
    let quota = t.node.oob().settings().client_quota;
    for n in 0..quota {
        let (status, _, body) = send(u32::try_from(n).expect("small"), [10, 0, 0, 1]).await;
        assert_eq!(
            status,
            StatusCode::SEE_OTHER,
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
    let before = t.node.store().outbox_len().await.expect("outbox");
    let (status, _, body) = send(9_999, [10, 0, 0, 1]).await;
    let html = String::from_utf8_lossy(&body);
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{html}");
    assert!(
        html.contains("wait a few minutes"),
        "the page says what to try: {html}"
    );
    assert_eq!(
        t.node.store().outbox_len().await.expect("outbox"),
        before,
        "the refused sign-in sent nothing"
    );
    let (status, _, _) = send(10_000, [10, 0, 0, 2]).await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "another client is not held up"
    );
}
