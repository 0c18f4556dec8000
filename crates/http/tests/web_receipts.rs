//! The customer's signed receipts in Debian's Chromium: bob (a merchant) offers a record to
//! alice through the API, alice signs it with her token, and the complete receipt shows on
//! `/me`; its page says it is verified and offers the `.tally` package for download, which
//! parses as the same receipt. Another customer gets 404 for both. Screenshot; axe-core.

mod browser;

use axum::http::StatusCode;
use browser::*;
use serde_json::{Value, json};
use tally_kernel::Timestamp;
use tally_kernel::crypto::bls::{BlsPublicKey, BlsSecretKey};
use tally_kernel::crypto::warrant::{Counterparties, WarrantTerms, issue_warrant};
use tally_kernel::crypto::{Certificate, SigningKey, VerifyingKey};
use tally_proto::receipt::token::Token;
use tally_proto::receipt::{self, Fields, Package};
use tally_wire::receipts::NewToken;

struct Party {
    api_key: String,
    key: SigningKey,
    cert: Certificate,
    token: Token,
}

fn hex32(text: &Value) -> [u8; 32] {
    hex::decode(text.as_str().expect("hex string"))
        .expect("hex")
        .try_into()
        .expect("32 bytes")
}

/// An API key for `name` and a token (Ed25519 + BLS keys, certificate with `role`).
async fn party(t: &Tally, name: &str, api_role: &str, role: &str) -> Party {
    let api_key = t
        .admin_post(
            "/v1/api-keys",
            json!({"role": api_role, "owner": name, "label": "test"}),
        )
        .await["key"]
        .as_str()
        .expect("key")
        .to_string();
    let key = SigningKey::generate();
    let bls = BlsSecretKey::generate();
    let new = NewToken::signed(name, role, &key, Some(&bls), Some(2), None);
    let r = Tally::expect(
        StatusCode::CREATED,
        post_json(
            t,
            "/v1/tokens",
            &t.admin,
            &format!("token-{name}"),
            serde_json::to_value(new).expect("json"),
        )
        .await,
    );
    let cert = Certificate::from_pem(r["certificate"].as_str().expect("pem")).expect("cert");
    let serial: [u8; 16] = hex::decode(r["serial"].as_str().expect("serial"))
        .expect("hex")
        .try_into()
        .expect("16 bytes");
    let token = Token::new(serial, hex32(&r["app_key"]), 2);
    Party {
        api_key,
        key,
        cert,
        token,
    }
}

/// bob offers `record` to alice (bob's warrant first), alice signs with her token's write;
/// returns the transaction of the complete receipt.
async fn signed_receipt(t: &Tally, record: &str) -> u64 {
    let node = Tally::expect(
        StatusCode::OK,
        t.call("GET", "/v1/receipts/node", Some(&t.admin), None)
            .await,
    );
    let server_key =
        VerifyingKey::from_hex(node["server_key"].as_str().expect("key")).expect("server key");
    let proxy_bls =
        BlsPublicKey::from_hex(node["proxy_bls_key"].as_str().expect("bls")).expect("bls key");
    let mut alice = party(t, "alice", "customer", "customer").await;
    let bob = party(t, "bob", "merchant", "manager").await;

    // bob warrants the node's receipt key to sign for him with alice.
    let terms = WarrantTerms {
        counterparties: Counterparties::Names(vec!["alice".into()]),
        bls_key: Some(proxy_bls.to_bytes()),
    };
    let now = Timestamp::now();
    let warrant = issue_warrant(
        &bob.cert,
        &bob.key,
        &server_key,
        "tally receipt service",
        &terms,
        now,
        now.plus_seconds(30 * 86_400),
    )
    .expect("warrant");
    Tally::expect(
        StatusCode::OK,
        t.call(
            "POST",
            "/v1/warrants",
            Some(&bob.api_key),
            Some(json!({"certificate": warrant.to_pem()})),
        )
        .await,
    );

    // The offer, then alice's signature over fields 1–7 with her token's secure write.
    let offer = Tally::expect(
        StatusCode::CREATED,
        post_json(
            t,
            "/v1/receipts",
            &bob.api_key,
            "offer-1",
            json!({"record": record, "party_a": "bob", "party_b": "alice", "fair": false}),
        )
        .await,
    );
    let tx = offer["transaction"].as_u64().expect("transaction");
    let view = Tally::expect(
        StatusCode::OK,
        t.call(
            "GET",
            &format!("/v1/receipts/{tx}"),
            Some(&alice.api_key),
            None,
        )
        .await,
    );
    assert_eq!(view["record"], record, "{view}");
    let f = Fields {
        version: u8::try_from(view["version"].as_u64().expect("version")).expect("u8"),
        server_id: hex32(&view["server_id"]),
        transaction: tx,
        time: view["time"].as_i64().expect("time"),
        content_hash: hex32(&view["content_hash"]),
        party_a: hex32(&view["party_a_fingerprint"]),
        party_b: hex32(&view["party_b_fingerprint"]),
    };
    let challenge = [7_u8; 32];
    let (slot, _) = alice.token.begin(challenge, tx, f.content_hash, 0);
    let signature_b = alice
        .key
        .sign(receipt::PARTY_DOMAIN, &f.party_part())
        .to_hex();
    let signed = Tally::expect(
        StatusCode::OK,
        t.call(
            "POST",
            &format!("/v1/receipts/{tx}/sign"),
            Some(&alice.api_key),
            Some(json!({"signature_b": signature_b, "token": {
                "serial": hex::encode(alice.token.serial),
                "challenge": hex::encode(challenge),
                "slot": slot,
            }})),
        )
        .await,
    );
    assert_eq!(signed["state"], "signed", "{signed}");
    let view = Tally::expect(
        StatusCode::OK,
        t.call(
            "GET",
            &format!("/v1/receipts/{tx}"),
            Some(&alice.api_key),
            None,
        )
        .await,
    );
    assert_eq!(view["state"], "signed", "{view}");
    tx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_sees_and_downloads_a_verified_receipt_in_chromium() {
    if !browser_available() {
        return;
    }
    let t = Tally::start().await;
    let record = "Order 1042\n2 x Blue album\nTotal 19.80 EUR\n";
    let tx = signed_receipt(&t, record).await;
    t.enrol("alice").await;

    // alice signs in on the web.
    let scratch = tempfile::tempdir().expect("tempdir");
    let driver = Chromedriver::start(scratch.path()).await;
    let browser = driver.browser(&scratch.path().join("profile")).await;
    sign_in_through_me(&t, &browser, "alice").await;

    // /me lists the receipt: its number, the other party, its state; the link opens it.
    let row = text_of(&browser, "#receipts", &tx.to_string()).await;
    assert!(row.contains("bob") && row.contains("signed"), "{row}");
    let link = browser
        .find(fantoccini::Locator::Css("#receipts a"))
        .await
        .expect("a link to the receipt");
    let text = link.text().await.expect("link text");
    assert!(text.contains(&tx.to_string()), "{text}");
    link.click().await.expect("click the receipt");
    path_of(&browser, &format!("/me/receipts/{tx}")).await;
    text_of(&browser, "#receipt-state", "signed").await;
    for line in record.lines() {
        text_of(&browser, "#receipt-record", line).await;
    }
    text_of(&browser, "#verified", "Verified").await;
    let href = browser
        .find(fantoccini::Locator::Css("#download-receipt"))
        .await
        .expect("the download link")
        .attr("href")
        .await
        .expect("href")
        .expect("the link has an href");
    let download = format!("/me/receipts/{tx}/receipt.tally");
    assert!(href.ends_with(&download), "{href}");
    shot(&browser, "receipt").await;
    axe(&browser, "the receipt page").await;

    // The package, with the browser's session: the same receipt.
    let cookie = session_cookie(&browser).await;
    let (status, _, bytes) = with_cookie(&t, &download, &cookie, None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let package = Package::from_bytes(&bytes).expect("the package parses");
    assert_eq!(package.receipt.fields.transaction, tx);

    // Someone else's receipt is not found, nor its package.
    let other = router_sign_in(&t, "mallory").await;
    for uri in [format!("/me/receipts/{tx}"), download] {
        let (status, _, body) = with_cookie(&t, &uri, &other, None).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "{uri}: {}",
            String::from_utf8_lossy(&body)
        );
    }
}
