//! Webhooks, the SMS gateway and `ChannelSet` over real HTTP on loopback (axum receivers).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, State};
use axum::http::{HeaderMap, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tally_channels::{
    Channel, ChannelKind, ChannelSet, ChannelsConfig, HttpConfig, Message, SmsFormat,
    SmsGatewayChannel, SmsGatewayConfig, WebhookChannel, WebhookConfig, verify_webhook_signature,
};
use tally_kernel::{Secret, Timestamp};

// ---------------------------------------------------------------------------------------------
// A recording receiver

/// What the receiver answers, in order; once the script is empty it answers 200 `{}`.
#[derive(Clone)]
struct Reply {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Reply {
    fn status(code: u16) -> Reply {
        Reply {
            status: StatusCode::from_u16(code).expect("valid status"),
            headers: Vec::new(),
            body: String::new(),
        }
    }
}

#[derive(Clone, Debug)]
struct Recorded {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Default)]
struct Receiver {
    hits: AtomicUsize,
    requests: Mutex<Vec<Recorded>>,
    script: Mutex<VecDeque<Reply>>,
}

impl Receiver {
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }
}

async fn record(
    State(receiver): State<Arc<Receiver>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    receiver.hits.fetch_add(1, Ordering::SeqCst);
    if uri.path() == "/hang" {
        // Never answers: the client's timeout has to end the request.
        std::future::pending::<()>().await;
    }
    receiver.requests.lock().expect("lock").push(Recorded {
        path: uri.path().to_owned(),
        headers,
        body,
    });
    let reply = receiver
        .script
        .lock()
        .expect("lock")
        .pop_front()
        .unwrap_or(Reply {
            status: StatusCode::OK,
            headers: Vec::new(),
            body: "{}".to_owned(),
        });
    let mut response = (reply.status, reply.body).into_response();
    for (name, value) in reply.headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("header value"));
    }
    response
}

/// Serves a fresh receiver on `127.0.0.1:<free port>` with `script` as its answers.
async fn start_receiver(script: Vec<Reply>) -> (SocketAddr, Arc<Receiver>) {
    let receiver = Arc::new(Receiver {
        script: Mutex::new(script.into()),
        ..Receiver::default()
    });
    let app = Router::new().fallback(record).with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, receiver)
}

// ---------------------------------------------------------------------------------------------
// Helpers

const SECRET: &str = "whsec_0123456789";

/// Loopback receivers need the SSRF guard off; retries are fast.
fn test_http() -> HttpConfig {
    HttpConfig {
        max_attempts: 3,
        backoff_base_ms: 1,
        timeout_ms: 5_000,
        allow_private_addresses: true,
        ..HttpConfig::default()
    }
}

fn webhook_channel(http: HttpConfig) -> WebhookChannel {
    WebhookChannel::new(WebhookConfig {
        secret: Secret::new(SECRET.to_owned()),
        http,
    })
    .expect("webhook channel")
}

fn webhook(id: &str, url: &str) -> Message {
    Message {
        id: id.to_owned(),
        kind: ChannelKind::Webhook,
        address: url.to_owned(),
        subject: "Payment received".to_owned(),
        body: "Alice paid 12.50 EUR".to_owned(),
        data: serde_json::json!({"amount_minor": 1250, "currency": "EUR", "payee": "Corner Shop"}),
    }
}

fn header<'a>(recorded: &'a Recorded, name: &str) -> &'a str {
    recorded
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("missing header {name}"))
}

fn now_s() -> i64 {
    Timestamp::now().as_micros() / 1_000_000
}

// ---------------------------------------------------------------------------------------------
// Webhooks

#[tokio::test]
async fn webhook_is_signed_json() {
    let (addr, receiver) = start_receiver(vec![]).await;
    let channel: Arc<dyn Channel> = Arc::new(webhook_channel(test_http()));
    assert_eq!(channel.kind(), ChannelKind::Webhook);
    let url = format!("http://{addr}/hooks/tally?shop=7");
    let msg = webhook("0190f3a2-7c1e-7000-8000-00000000000a", &url);

    let delivery = channel.deliver(&msg).await.expect("delivered");
    assert_eq!(delivery.provider_id, None);

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let got = &requests[0];
    assert_eq!(got.path, "/hooks/tally");
    assert_eq!(header(got, "tally-message-id"), msg.id);
    assert_eq!(header(got, "content-type"), "application/json");
    assert!(header(got, "user-agent").starts_with("tally/"));

    let signature = header(got, "tally-signature");
    verify_webhook_signature(SECRET.as_bytes(), signature, &got.body, now_s(), 300)
        .expect("signature verifies");
    let err = verify_webhook_signature(b"wrong secret", signature, &got.body, now_s(), 300)
        .expect_err("other secret");
    assert!(err.is_permanent());
    let mut tampered = got.body.to_vec();
    tampered.push(b' ');
    assert!(
        verify_webhook_signature(SECRET.as_bytes(), signature, &tampered, now_s(), 300).is_err()
    );

    let json: serde_json::Value = serde_json::from_slice(&got.body).expect("json body");
    assert_eq!(json["id"], msg.id.as_str());
    assert_eq!(json["kind"], "webhook");
    assert_eq!(json["address"], url.as_str());
    assert_eq!(json["subject"], "Payment received");
    assert_eq!(json["body"], "Alice paid 12.50 EUR");
    assert_eq!(json["data"], msg.data);
    let sent_at = json["sent_at"].as_str().expect("sent_at is a string");
    assert!(sent_at.ends_with('Z') && sent_at.contains('T'), "{sent_at}");
    assert_eq!(json.as_object().map(|o| o.len()), Some(7));
}

/// A message signed with its receiver's own secret: that secret verifies it, the channel's
/// does not (one receiver cannot forge what the node sends another); an empty one is refused
/// before any request.
#[tokio::test]
async fn webhook_signed_with_a_receivers_own_secret() {
    let (addr, receiver) = start_receiver(vec![]).await;
    let channel: Arc<dyn Channel> = Arc::new(webhook_channel(test_http()));
    let msg = webhook(
        "0190f3a2-7c1e-7000-8000-00000000000b",
        &format!("http://{addr}/hooks/provider"),
    );
    let own = Secret::new("whsec_receiver".to_owned());
    channel.deliver_signed(&msg, &own).await.expect("delivered");
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let signature = header(&requests[0], "tally-signature");
    let body = &requests[0].body;
    verify_webhook_signature(b"whsec_receiver", signature, body, now_s(), 300)
        .expect("the receiver's secret verifies");
    assert!(verify_webhook_signature(SECRET.as_bytes(), signature, body, now_s(), 300).is_err());
    let err = channel
        .deliver_signed(&msg, &Secret::new(String::new()))
        .await
        .expect_err("an empty secret");
    assert!(err.is_permanent());
    assert_eq!(receiver.requests().len(), 1, "nothing sent");
}

#[tokio::test]
async fn webhook_retries_5xx_then_succeeds() {
    let (addr, receiver) = start_receiver(vec![Reply::status(500), Reply::status(503)]).await;
    let channel = webhook_channel(test_http());
    let msg = webhook("m-retry", &format!("http://{addr}/hook"));

    channel.deliver(&msg).await.expect("third attempt succeeds");
    assert_eq!(receiver.hits(), 3);
    let requests = receiver.requests();
    // Same message, same dedup key and body on every attempt; each attempt is signed.
    for got in &requests {
        assert_eq!(header(got, "tally-message-id"), "m-retry");
        assert_eq!(got.body, requests[0].body);
        verify_webhook_signature(
            SECRET.as_bytes(),
            header(got, "tally-signature"),
            &got.body,
            now_s(),
            300,
        )
        .expect("each attempt verifies");
    }
}

#[tokio::test]
async fn webhook_gives_up_after_max_attempts_with_a_transient_error() {
    for code in [500, 502, 408, 429] {
        let script = vec![Reply::status(code); 3];
        let (addr, receiver) = start_receiver(script).await;
        let channel = webhook_channel(test_http());
        let err = channel
            .deliver(&webhook("m-down", &format!("http://{addr}/hook")))
            .await
            .expect_err("always failing");
        assert!(err.is_transient(), "{code}: {err}");
        assert!(err.reason().contains(&code.to_string()), "{err}");
        assert_eq!(receiver.hits(), 3, "{code}");
    }
}

#[tokio::test]
async fn webhook_4xx_is_permanent_after_one_attempt() {
    for code in [400, 401, 404, 410, 422] {
        let mut reply = Reply::status(code);
        reply.body = "no such hook\r\n".to_owned();
        let (addr, receiver) = start_receiver(vec![reply]).await;
        let err = webhook_channel(test_http())
            .deliver(&webhook("m-bad", &format!("http://{addr}/hook")))
            .await
            .expect_err("4xx");
        assert!(err.is_permanent(), "{code}: {err}");
        assert!(err.reason().ends_with("no such hook"), "{err}");
        assert_eq!(receiver.hits(), 1, "{code}");
    }
}

#[tokio::test]
async fn webhook_does_not_follow_redirects() {
    let (addr, receiver) = start_receiver(vec![]).await;
    let mut redirect = Reply::status(307);
    redirect
        .headers
        .push(("location", format!("http://{addr}/elsewhere")));
    receiver.script.lock().expect("lock").push_back(redirect);

    let err = webhook_channel(test_http())
        .deliver(&webhook("m-redirect", &format!("http://{addr}/hook")))
        .await
        .expect_err("3xx");
    assert!(err.is_permanent(), "{err}");
    assert!(err.reason().contains("redirects are not followed"), "{err}");
    assert_eq!(receiver.hits(), 1);
    assert_eq!(receiver.requests()[0].path, "/hook");
}

#[tokio::test]
async fn webhook_to_a_closed_port_is_transient() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let http = HttpConfig {
        max_attempts: 2,
        ..test_http()
    };
    let err = webhook_channel(http)
        .deliver(&webhook(
            "m-closed",
            &format!("http://127.0.0.1:{port}/hook"),
        ))
        .await
        .expect_err("connection refused");
    assert!(err.is_transient(), "{err}");
    assert!(!err.reason().contains("127.0.0.1"), "URL leaked into {err}");
}

#[tokio::test]
async fn webhook_timeout_is_transient() {
    let (addr, receiver) = start_receiver(vec![]).await;
    let http = HttpConfig {
        max_attempts: 1,
        // Long enough that a loaded machine still gets the request to the receiver.
        timeout_ms: 1_500,
        ..test_http()
    };
    let err = webhook_channel(http)
        .deliver(&webhook("m-slow", &format!("http://{addr}/hang")))
        .await
        .expect_err("timeout");
    assert!(err.is_transient(), "{err}");
    assert!(err.reason().contains("timed out"), "{err}");
    assert_eq!(receiver.hits(), 1);
}

#[tokio::test]
async fn ssrf_guard_refuses_loopback_before_any_request() {
    let (addr, receiver) = start_receiver(vec![]).await;
    let guarded = webhook_channel(HttpConfig {
        allow_private_addresses: false,
        ..test_http()
    });
    let port = addr.port();
    let urls = [
        // Literal IPs: refused by the URL check.
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        format!("http://0x7f000001:{port}/hook"),
        // A name: refused by the resolver, after DNS, before connecting.
        format!("http://localhost:{port}/hook"),
    ];
    for url in &urls {
        let err = guarded
            .deliver(&webhook("m-ssrf", url))
            .await
            .expect_err("guarded");
        assert!(err.is_permanent(), "{url}: {err}");
        assert!(err.reason().contains("SSRF"), "{url}: {err}");
    }
    assert_eq!(receiver.hits(), 0, "a request reached the receiver");

    // The same receiver is reachable once the guard is off, so the refusals above were the
    // guard's doing.
    webhook_channel(test_http())
        .deliver(&webhook("m-open", &format!("http://localhost:{port}/hook")))
        .await
        .expect("guard off");
    assert_eq!(receiver.hits(), 1);
}

#[tokio::test]
async fn ssrf_guard_refuses_private_ip_literals() {
    let guarded = webhook_channel(HttpConfig {
        allow_private_addresses: false,
        connect_timeout_ms: 500,
        max_attempts: 1,
        ..test_http()
    });
    for url in [
        "http://10.0.0.1/hook",
        "http://172.16.5.4/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/hook",
        "http://0.0.0.0/hook",
        "http://[fd00::1]/hook",
        "http://[fe80::1]/hook",
        "http://[::1]/hook",
    ] {
        let err = guarded
            .deliver(&webhook("m-private", url))
            .await
            .expect_err("guarded");
        assert!(err.is_permanent(), "{url}: {err}");
        assert!(err.reason().contains("SSRF"), "{url}: {err}");
    }
}

#[tokio::test]
async fn webhook_refuses_bad_input_without_a_request() {
    let (addr, receiver) = start_receiver(vec![]).await;
    let http = HttpConfig {
        max_request_bytes: 1_000,
        ..test_http()
    };
    let channel = webhook_channel(http);
    let url = format!("http://{addr}/hook");

    let mut big = webhook("m-big", &url);
    big.body = "x".repeat(2_000);
    let err = channel.deliver(&big).await.expect_err("too large");
    assert!(
        err.is_permanent() && err.reason().contains("too large"),
        "{err}"
    );

    let mut wrong = webhook("m-kind", &url);
    wrong.kind = ChannelKind::Email;
    assert!(
        channel
            .deliver(&wrong)
            .await
            .expect_err("kind")
            .is_permanent()
    );

    let bad_url = webhook("m-url", "ftp://example.com/hook");
    assert!(
        channel
            .deliver(&bad_url)
            .await
            .expect_err("scheme")
            .is_permanent()
    );

    let bad_id = webhook("m id\r\nX-Evil: 1", &url);
    assert!(
        channel
            .deliver(&bad_id)
            .await
            .expect_err("id")
            .is_permanent()
    );

    assert_eq!(receiver.hits(), 0);
}

// ---------------------------------------------------------------------------------------------
// SMS gateway

fn sms_channel(url: &str, format: SmsFormat, http: HttpConfig) -> SmsGatewayChannel {
    SmsGatewayChannel::new(SmsGatewayConfig {
        url: url.to_owned(),
        token: Secret::new("gw-token-123".to_owned()),
        from: "Tally".to_owned(),
        format,
        max_text_chars: 612,
        http,
    })
    .expect("sms channel")
}

fn sms(id: &str, body: &str) -> Message {
    Message {
        id: id.to_owned(),
        kind: ChannelKind::Sms,
        address: "+4915112345678".to_owned(),
        subject: "Tally code".to_owned(),
        body: body.to_owned(),
        data: serde_json::Value::Null,
    }
}

#[tokio::test]
async fn sms_json_carries_bearer_token_and_fields() {
    let mut ok = Reply::status(202);
    ok.body = r#"{"id":"gw-msg-42","status":"queued"}"#.to_owned();
    let (addr, receiver) = start_receiver(vec![ok]).await;
    let channel = sms_channel(
        &format!("http://{addr}/v1/send"),
        SmsFormat::Json,
        test_http(),
    );
    assert_eq!(channel.kind(), ChannelKind::Sms);

    let delivery = channel
        .deliver(&sms("m-sms-1", "Your code is 123456"))
        .await
        .expect("sent");
    assert_eq!(delivery.provider_id.as_deref(), Some("gw-msg-42"));

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let got = &requests[0];
    assert_eq!(got.path, "/v1/send");
    assert_eq!(header(got, "authorization"), "Bearer gw-token-123");
    assert_eq!(header(got, "content-type"), "application/json");
    let json: serde_json::Value = serde_json::from_slice(&got.body).expect("json");
    assert_eq!(
        json,
        serde_json::json!({"to": "+4915112345678", "from": "Tally",
                           "text": "Tally code\nYour code is 123456"})
    );
    assert!(!format!("{channel:?}").contains("gw-token-123"));
}

#[tokio::test]
async fn sms_form_is_decoded_by_a_real_form_parser_and_text_is_capped() {
    let (addr, receiver) = start_receiver(vec![]).await;
    let channel = sms_channel(&format!("http://{addr}/send"), SmsFormat::Form, test_http());
    let long_body = format!("Grüße & 100% = {}", "€".repeat(700));

    channel
        .deliver(&sms("m-sms-2", &long_body))
        .await
        .expect("sent");

    let got = &receiver.requests()[0];
    assert_eq!(header(got, "authorization"), "Bearer gw-token-123");
    assert_eq!(
        header(got, "content-type"),
        "application/x-www-form-urlencoded"
    );
    let request = Request::builder()
        .method("POST")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(axum::body::Body::from(got.body.clone()))
        .expect("request");
    let axum::extract::Form(fields): axum::extract::Form<HashMap<String, String>> =
        axum::extract::Form::from_request(request, &())
            .await
            .expect("form decodes");
    assert_eq!(fields["to"], "+4915112345678");
    assert_eq!(fields["from"], "Tally");
    let text = &fields["text"];
    assert_eq!(text.chars().count(), 612);
    let expected: String = format!("Tally code\n{long_body}")
        .chars()
        .take(612)
        .collect();
    assert_eq!(text, &expected);
    assert!(text.ends_with('€'));
}

#[tokio::test]
async fn sms_gateway_errors_are_classified_like_webhooks() {
    let (addr, receiver) = start_receiver(vec![Reply::status(401)]).await;
    let channel = sms_channel(&format!("http://{addr}/send"), SmsFormat::Json, test_http());
    let err = channel
        .deliver(&sms("m-sms-3", "x"))
        .await
        .expect_err("401");
    assert!(err.is_permanent(), "{err}");
    assert_eq!(receiver.hits(), 1);

    let (addr, receiver) = start_receiver(vec![Reply::status(503)]).await;
    let channel = sms_channel(&format!("http://{addr}/send"), SmsFormat::Json, test_http());
    channel
        .deliver(&sms("m-sms-4", "x"))
        .await
        .expect("retried after 503");
    assert_eq!(receiver.hits(), 2);

    let mut bad_number = sms("m-sms-5", "x");
    bad_number.address = "015112345678".to_owned();
    assert!(
        channel
            .deliver(&bad_number)
            .await
            .expect_err("not E.164")
            .is_permanent()
    );
    assert_eq!(receiver.hits(), 2);
}

#[tokio::test]
async fn sms_gateway_is_behind_the_ssrf_guard_too() {
    let (addr, receiver) = start_receiver(vec![]).await;
    let guarded = HttpConfig {
        allow_private_addresses: false,
        ..test_http()
    };
    for url in [
        format!("http://{addr}/send"),
        format!("http://localhost:{}/send", addr.port()),
    ] {
        let channel = sms_channel(&url, SmsFormat::Json, guarded.clone());
        let err = channel
            .deliver(&sms("m-sms-6", "x"))
            .await
            .expect_err("guarded");
        assert!(
            err.is_permanent() && err.reason().contains("SSRF"),
            "{url}: {err}"
        );
    }
    assert_eq!(receiver.hits(), 0);
}

// ---------------------------------------------------------------------------------------------
// ChannelSet and ChannelsConfig

#[tokio::test]
async fn channel_set_routes_by_kind() {
    let (addr, receiver) = start_receiver(vec![]).await;
    let config: ChannelsConfig = serde_json::from_value(serde_json::json!({
        "webhook": {"secret": SECRET, "http": {"allow_private_addresses": true}},
        "sms": {"url": format!("http://{addr}/sms"), "token": "tok", "from": "Tally",
                "http": {"allow_private_addresses": true}}
    }))
    .expect("config");
    let set: ChannelSet = config.build().expect("build");
    assert_eq!(
        set.kinds().collect::<Vec<_>>(),
        vec![ChannelKind::Sms, ChannelKind::Webhook]
    );

    set.deliver(&webhook("m-set-1", &format!("http://{addr}/hook")))
        .await
        .expect("webhook routed");
    set.deliver(&sms("m-set-2", "hello"))
        .await
        .expect("sms routed");
    let paths: Vec<String> = receiver.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, vec!["/hook".to_owned(), "/sms".to_owned()]);

    let email = Message {
        id: "m-set-3".to_owned(),
        kind: ChannelKind::Email,
        address: "alice@example.com".to_owned(),
        subject: "s".to_owned(),
        body: "b".to_owned(),
        data: serde_json::Value::Null,
    };
    let err = set.deliver(&email).await.expect_err("no smtp configured");
    assert!(err.is_permanent());
    assert_eq!(err.reason(), "no channel configured for kind email");

    let bad = webhook("m-set-4", "not a url");
    assert!(
        set.deliver(&bad)
            .await
            .expect_err("bad address")
            .is_permanent()
    );
    assert_eq!(receiver.hits(), 2);

    // A channel added by hand (as the service adds its dev inbox) replaces nothing else.
    let mut set = set;
    let replaced = set.insert(Arc::new(webhook_channel(test_http())));
    assert!(replaced.is_some());
    assert_eq!(set.kinds().count(), 2);
}
