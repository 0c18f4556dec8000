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

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tally_http::{HttpOptions, router};
use tally_kernel::Timestamp;
use tally_service::{Node, NodeConfig};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Longest wait for chromedriver to start, a page to load or an element to show.
const DEADLINE: Duration = Duration::from_secs(30);
/// Interval between two polls while waiting under [`DEADLINE`].
const POLL: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------------------------
// The node, served on a socket for the browser and called with `oneshot` for setup.

struct Tally {
    app: Router,
    node: Node,
    admin: String,
    base: String,
    server: tokio::task::JoinHandle<()>,
    _dir: TempDir,
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Tally {
    async fn start() -> Tally {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = NodeConfig {
            dev: true,
            ..NodeConfig::new(dir.path().join("data"))
        };
        let (node, admin) = Node::open(&config).await.expect("node opens");
        let admin = admin
            .expect("first start makes an admin key")
            .expose()
            .clone();
        let app = router(node.clone(), HttpOptions::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let served = app
            .clone()
            .into_make_service_with_connect_info::<SocketAddr>();
        let server = tokio::spawn(async move {
            axum::serve(listener, served).await.expect("serves");
        });
        Tally {
            app,
            node,
            admin,
            base: format!("http://{addr}"),
            server,
            _dir: dir,
        }
    }

    /// One request through the router; the body as JSON (or as a string when it is not JSON).
    async fn call(
        &self,
        method: &str,
        uri: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(key) = key {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let body = match body {
            Some(json) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        let (status, _, bytes) = self.raw(builder.body(body).expect("request")).await;
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, value)
    }

    async fn raw(&self, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let response = self
            .app
            .clone()
            .oneshot(request)
            .await
            .expect("router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 4 << 20)
            .await
            .expect("body");
        (status, headers, bytes.to_vec())
    }

    #[track_caller]
    fn expect(status: StatusCode, (got, body): (StatusCode, Value)) -> Value {
        assert_eq!(got, status, "body: {body}");
        body
    }

    async fn admin_post(&self, uri: &str, body: Value) -> Value {
        let admin = self.admin.clone();
        let reply = self.call("POST", uri, Some(&admin), Some(body)).await;
        assert!(reply.0.is_success(), "POST {uri}: {} {}", reply.0, reply.1);
        reply.1
    }

    async fn account(&self, id: &str) -> Value {
        let admin = self.admin.clone();
        Tally::expect(
            StatusCode::OK,
            self.call("GET", &format!("/v1/accounts/{id}"), Some(&admin), None)
                .await,
        )
    }

    /// Delivers the outbox (the dev channel's delivery is the inbox row) and returns the code
    /// sent for `session` to `address`'s dev inbox.
    async fn code_for(&self, address: &str, session: &str) -> String {
        tally_service::workers::deliver_due(
            &self.node,
            &tally_channels::ChannelSet::new(),
            Timestamp::now(),
        )
        .await
        .expect("delivery pass");
        let admin = self.admin.clone();
        let inbox = Tally::expect(
            StatusCode::OK,
            self.call(
                "GET",
                &format!("/v1/dev/inbox/{address}?limit=50"),
                Some(&admin),
                None,
            )
            .await,
        );
        let messages = inbox.as_array().expect("inbox is a list");
        // Newest first: the first message for this session carries its code.
        let message = messages
            .iter()
            .find(|m| m["data"]["session"] == json!(session))
            .unwrap_or_else(|| panic!("no message for session {session} in {inbox}"));
        let body = message["body"].as_str().expect("message body");
        code_in(body).unwrap_or_else(|| panic!("no code in {body:?}"))
    }

    /// alice with a verified dev address, through the API as the operator.
    async fn enrol_alice(&self) {
        let opened = self
            .admin_post(
                "/v1/subscribers/alice/addresses",
                json!({"channel": "dev", "address": "alice"}),
            )
            .await;
        let session = opened["session"]
            .as_str()
            .expect("session number")
            .to_string();
        let code = self.code_for("alice", &session).await;
        let verified = Tally::expect(
            StatusCode::OK,
            self.call(
                "POST",
                &format!("/v1/oob/sessions/{session}/verify"),
                None,
                Some(json!({ "code": code })),
            )
            .await,
        );
        assert_eq!(verified["session"]["state"], "verified", "{verified}");
    }
}

/// The code in a channel-B message: the first run of digits after the word "code"
/// (`Your Tally sign-in code: 12345678`, `Confirm with code 12345678:`).
fn code_in(body: &str) -> Option<String> {
    let after = &body[body.find("code")? + "code".len()..];
    let start = after.find(|c: char| c.is_ascii_digit())?;
    let code: String = after[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (code.len() >= 6).then_some(code)
}

/// `code` with its last digit changed: a wrong code of the right shape.
fn wrong(code: &str) -> String {
    let mut digits: Vec<char> = code.chars().collect();
    let last = digits.pop().and_then(|c| c.to_digit(10)).expect("a digit");
    let flipped = char::from_digit((last + 1) % 10, 10).expect("a digit");
    digits.push(flipped);
    digits.into_iter().collect()
}

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

// ---------------------------------------------------------------------------------------------
// The page through the router (no browser): statuses, headers, escaping.

async fn form_post(
    t: &Tally,
    uri: &str,
    form: &str,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let request = Request::builder()
        .method("POST")
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form.to_string()))
        .expect("request");
    let (status, headers, bytes) = t.raw(request).await;
    (status, headers, String::from_utf8(bytes).expect("utf-8"))
}

async fn page(t: &Tally, uri: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let request = Request::builder()
        .uri(uri)
        .body(Body::empty())
        .expect("request");
    let (status, headers, bytes) = t.raw(request).await;
    (status, headers, String::from_utf8(bytes).expect("utf-8"))
}

#[track_caller]
fn assert_html(headers: &axum::http::HeaderMap) {
    let h = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(h(header::CONTENT_TYPE), Some("text/html; charset=utf-8"));
    assert_eq!(
        h(header::CONTENT_SECURITY_POLICY),
        Some(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
        )
    );
    assert_eq!(h(header::CACHE_CONTROL), Some("no-store"));
    assert_eq!(h(header::X_CONTENT_TYPE_OPTIONS), Some("nosniff"));
    assert_eq!(h(header::REFERRER_POLICY), Some("no-referrer"));
}

/// A merchant `shop` with an EUR account, alice with a funded EUR account; returns
/// (shop's key, alice's account, shop's account).
async fn shop_and_accounts(t: &Tally) -> (String, String, String) {
    let settlement = t
        .admin_post(
            "/v1/accounts",
            json!({"currency": "EUR", "kind": "settlement", "limit_minor": 1_000_000,
                   "debits_must_not_exceed_credits": true}),
        )
        .await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let alice_eur = t
        .admin_post(
            "/v1/accounts",
            json!({"owner": "alice", "currency": "EUR", "kind": "customer"}),
        )
        .await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let admin = t.admin.clone();
    let request = Request::builder()
        .method("POST")
        .uri("/v1/transfers")
        .header(header::AUTHORIZATION, format!("Bearer {admin}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", format!("fund-{alice_eur}"))
        .body(Body::from(
            json!({"debit_account": settlement, "credit_account": alice_eur, "amount": "100.00 EUR"})
                .to_string(),
        ))
        .expect("request");
    let (status, _, body) = t.raw(request).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let shop = t
        .admin_post(
            "/v1/api-keys",
            json!({"role": "merchant", "owner": "shop", "label": "web test"}),
        )
        .await["key"]
        .as_str()
        .expect("key")
        .to_string();
    let shop_eur = Tally::expect(
        StatusCode::CREATED,
        t.call(
            "POST",
            "/v1/accounts",
            Some(&shop),
            Some(json!({"currency": "EUR"})),
        )
        .await,
    )["id"]
        .as_str()
        .expect("id")
        .to_string();
    (shop, alice_eur, shop_eur)
}

/// The merchant asks alice to pay; returns the session number.
async fn payment_session(
    t: &Tally,
    shop: &str,
    alice_eur: &str,
    shop_eur: &str,
    description: &str,
) -> String {
    let opened = Tally::expect(
        StatusCode::CREATED,
        t.call(
            "POST",
            "/v1/oob/sessions",
            Some(shop),
            Some(
                json!({"user": "alice", "application": "payment", "payer_account": alice_eur,
                        "merchant_account": shop_eur, "amount": "12.50 EUR",
                        "description": description}),
            ),
        )
        .await,
    );
    assert_eq!(opened["outcome"], "secured", "{opened}");
    opened["session"]["session"]
        .as_str()
        .expect("session number")
        .to_string()
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

// ---------------------------------------------------------------------------------------------
// chromedriver and Chromium.

/// chromedriver as a child process in its own process group; stopped (with the browsers it
/// started) on drop, also when the test panics.
struct Chromedriver {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Chromedriver {
    async fn start(dir: &Path) -> Chromedriver {
        use std::os::unix::process::CommandExt;
        // A free port: bind, read, release. chromedriver binds it right after.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = dir.join("chromedriver.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let driver = Chromedriver { child, port, log };
        let started = Instant::now();
        while !driver.ready().await {
            assert!(
                started.elapsed() < DEADLINE,
                "chromedriver not ready after {DEADLINE:?}; log:\n{}",
                driver.log_text()
            );
            tokio::time::sleep(POLL).await;
        }
        driver
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /status` says `"ready": true`. (chromedriver keeps the connection open despite
    /// `Connection: close`, so this reads until it has seen the answer, not until EOF.)
    async fn ready(&self) -> bool {
        let ask = async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
            stream
                .write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .await?;
            let mut answer = Vec::new();
            let mut chunk = [0_u8; 4096];
            while answer.len() < 64 * 1024 {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                answer.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&answer).replace([' ', '\n', '\r'], "");
                if text.contains("\"ready\":true") {
                    return Ok(true);
                }
            }
            Ok::<_, std::io::Error>(false)
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), ask).await,
            Ok(Ok(true))
        )
    }

    async fn browser(&self, profile: &Path) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--window-size=1024,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        ClientBuilder::rustls()
            .expect("TLS roots")
            .capabilities(caps)
            .connect(&self.url())
            .await
            .unwrap_or_else(|e| panic!("new browser session: {e}; log:\n{}", self.log_text()))
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // Ask it to quit its browsers and itself, then make sure: the whole process group
        // (chromedriver and the Chromium it started), by id. The leader is reaped only after
        // the group kill, so its id cannot have been reused.
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
            use std::io::{Read, Write};
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.write_all(
                b"GET /shutdown HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            );
            let _ = s.read_to_end(&mut Vec::new());
        }
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Chromium and chromedriver are there, or the test is skipped (failed under CI).
fn browser_available() -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("TALLY_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
        "TALLY_REQUIRE_CHROMIUM=1 but {missing:?} missing (apt-get install chromium chromium-driver)"
    );
    eprintln!("skipped: {missing:?} missing (apt-get install chromium chromium-driver)");
    false
}

/// Waits until the element matching `css` has text containing `needle`; returns the text.
async fn text_of(browser: &Client, css: &str, needle: &str) -> String {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        if let Ok(element) = browser.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
        {
            if text.contains(needle) {
                return text;
            }
            last = text;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{css} never contained {needle:?}; last text {last:?}; page:\n{}",
            browser.source().await.unwrap_or_default()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the browser is on a path starting with `prefix`; returns the path.
async fn path_of(browser: &Client, prefix: &str) -> String {
    let started = Instant::now();
    loop {
        let url = browser.current_url().await.expect("current url");
        if url.path().starts_with(prefix) {
            return url.path().to_string();
        }
        assert!(
            started.elapsed() < DEADLINE,
            "never reached {prefix}…; at {url}"
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn type_into(browser: &Client, css: &str, text: &str) {
    let input = browser
        .wait()
        .at_most(DEADLINE)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    input.clear().await.expect("clear");
    input.send_keys(text).await.expect("type");
}

async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
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
