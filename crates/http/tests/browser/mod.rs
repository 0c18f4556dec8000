//! The browser tests' harness: a real node in dev mode served on 127.0.0.1 (and called with
//! `oneshot` for setup), chromedriver driving Debian's headless Chromium, screenshots and the
//! axe-core accessibility check. No sleeps for timing: waits poll under a deadline.
#![allow(dead_code)]

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

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Longest wait for chromedriver to start, a page to load or an element to show.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// Interval between two polls while waiting under [`DEADLINE`].
pub const POLL: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------------------------
// The node, served on a socket for the browser and called with `oneshot` for setup.

pub struct Tally {
    pub app: Router,
    pub node: Node,
    pub admin: String,
    pub base: String,
    pub server: tokio::task::JoinHandle<()>,
    pub _dir: TempDir,
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Tally {
    pub async fn start() -> Tally {
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
    pub async fn call(
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

    pub async fn raw(
        &self,
        request: Request<Body>,
    ) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
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
    pub fn expect(status: StatusCode, (got, body): (StatusCode, Value)) -> Value {
        assert_eq!(got, status, "body: {body}");
        body
    }

    pub async fn admin_post(&self, uri: &str, body: Value) -> Value {
        let admin = self.admin.clone();
        let reply = self.call("POST", uri, Some(&admin), Some(body)).await;
        assert!(reply.0.is_success(), "POST {uri}: {} {}", reply.0, reply.1);
        reply.1
    }

    pub async fn account(&self, id: &str) -> Value {
        let admin = self.admin.clone();
        Tally::expect(
            StatusCode::OK,
            self.call("GET", &format!("/v1/accounts/{id}"), Some(&admin), None)
                .await,
        )
    }

    /// Delivers the outbox (the dev channel's delivery is the inbox row) and returns the code
    /// sent for `session` to `address`'s dev inbox.
    pub async fn code_for(&self, address: &str, session: &str) -> String {
        let messages = self.inbox(address).await;
        let inbox = Value::Array(messages.clone());
        // Newest first: the first message for this session carries its code.
        let message = messages
            .iter()
            .find(|m| m["data"]["session"] == json!(session))
            .unwrap_or_else(|| panic!("no message for session {session} in {inbox}"));
        let body = message["body"].as_str().expect("message body");
        code_in(body).unwrap_or_else(|| panic!("no code in {body:?}"))
    }

    /// The operator moves `amount` from `from` to `to` under idempotency key `key`.
    pub async fn admin_transfer(&self, key: &str, from: &str, to: &str, amount: &str, memo: &str) {
        let request = Request::builder()
            .method("POST")
            .uri("/v1/transfers")
            .header(header::AUTHORIZATION, format!("Bearer {}", self.admin))
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", key)
            .body(Body::from(
                json!({"debit_account": from, "credit_account": to, "amount": amount, "memo": memo})
                    .to_string(),
            ))
            .expect("request");
        let (status, _, body) = self.raw(request).await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&body)
        );
    }

    /// The dev inbox of `address`, newest first, after a delivery pass.
    pub async fn inbox(&self, address: &str) -> Vec<Value> {
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
        inbox.as_array().expect("inbox is a list").clone()
    }

    /// `user` with a verified dev address of its own name, through the API as the operator.
    pub async fn enrol(&self, user: &str) {
        let opened = self
            .admin_post(
                &format!("/v1/subscribers/{user}/addresses"),
                json!({"channel": "dev", "address": user}),
            )
            .await;
        let session = opened["session"]
            .as_str()
            .expect("session number")
            .to_string();
        let code = self.code_for(user, &session).await;
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

    /// alice with a verified dev address, through the API as the operator.
    pub async fn enrol_alice(&self) {
        self.enrol("alice").await;
    }
}

/// The code in a channel-B message: the first run of digits after the word "code"
/// (`Your Tally sign-in code: 12345678`, `Confirm with code 12345678:`).
pub fn code_in(body: &str) -> Option<String> {
    let after = &body[body.find("code")? + "code".len()..];
    let start = after.find(|c: char| c.is_ascii_digit())?;
    let code: String = after[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (code.len() >= 6).then_some(code)
}

/// `code` with its last digit changed: a wrong code of the right shape.
pub fn wrong(code: &str) -> String {
    let mut digits: Vec<char> = code.chars().collect();
    let last = digits.pop().and_then(|c| c.to_digit(10)).expect("a digit");
    let flipped = char::from_digit((last + 1) % 10, 10).expect("a digit");
    digits.push(flipped);
    digits.into_iter().collect()
}

// ---------------------------------------------------------------------------------------------
// The page through the router (no browser): statuses, headers, escaping.

pub async fn form_post(
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

pub async fn page(t: &Tally, uri: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let request = Request::builder()
        .uri(uri)
        .body(Body::empty())
        .expect("request");
    let (status, headers, bytes) = t.raw(request).await;
    (status, headers, String::from_utf8(bytes).expect("utf-8"))
}

#[track_caller]
pub fn assert_html(headers: &axum::http::HeaderMap) {
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
pub async fn shop_and_accounts(t: &Tally) -> (String, String, String) {
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
    t.admin_transfer(
        &format!("fund-{alice_eur}"),
        &settlement,
        &alice_eur,
        "100.00 EUR",
        "",
    )
    .await;
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
pub async fn payment_session(
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

// ---------------------------------------------------------------------------------------------
// chromedriver and Chromium.

/// chromedriver as a child process in its own process group; stopped (with the browsers it
/// started) on drop, also when the test panics.
pub struct Chromedriver {
    pub child: Child,
    pub port: u16,
    pub log: std::path::PathBuf,
}

impl Chromedriver {
    pub async fn start(dir: &Path) -> Chromedriver {
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

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /status` says `"ready": true`. (chromedriver keeps the connection open despite
    /// `Connection: close`, so this reads until it has seen the answer, not until EOF.)
    pub async fn ready(&self) -> bool {
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

    pub async fn browser(&self, profile: &Path) -> Client {
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
pub fn browser_available() -> bool {
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
pub async fn text_of(browser: &Client, css: &str, needle: &str) -> String {
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
pub async fn path_of(browser: &Client, prefix: &str) -> String {
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

pub async fn type_into(browser: &Client, css: &str, text: &str) {
    let input = browser
        .wait()
        .at_most(DEADLINE)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    input.clear().await.expect("clear");
    input.send_keys(text).await.expect("type");
}

pub async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

// ---------------------------------------------------------------------------------------------
// Screenshots and the accessibility check.

/// Saves a screenshot of the whole page as `NAME.png` in the build's test directory, and in
/// `$TALLY_SCREENS` too when set (relative to the workspace root; `docs/screens` refreshes the
/// README's pictures). Returns the file written in the build directory.
pub async fn shot(browser: &Client, name: &str) -> std::path::PathBuf {
    let height = browser
        .execute("return document.documentElement.scrollHeight;", vec![])
        .await
        .ok()
        .and_then(|v| v.as_u64())
        .unwrap_or(900)
        .clamp(600, 3000);
    browser
        .set_window_size(1024, u32::try_from(height).unwrap_or(900) + 120)
        .await
        .expect("resize for the screenshot");
    let png = browser.screenshot().await.expect("screenshot");
    browser
        .set_window_size(1024, 900)
        .await
        .expect("resize back");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screens");
    std::fs::create_dir_all(&dir).expect("screens directory");
    let file = dir.join(format!("{name}.png"));
    std::fs::write(&file, &png).expect("write the screenshot");
    if let Ok(docs) = std::env::var("TALLY_SCREENS") {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let dir = root.join(docs);
        std::fs::create_dir_all(&dir).expect("TALLY_SCREENS directory");
        std::fs::write(dir.join(format!("{name}.png")), &png).expect("write the screenshot");
    }
    file
}

/// axe-core's source (`$TALLY_AXE_JS`, installed by `.ci/run`), or `None` when it is not there
/// (the check is then skipped with a notice, or fails under `TALLY_REQUIRE_AXE=1`).
fn axe_source() -> Option<String> {
    let path = std::env::var("TALLY_AXE_JS").ok();
    let source = path
        .as_deref()
        .and_then(|p| std::fs::read_to_string(p).ok());
    if source.is_none() {
        assert!(
            std::env::var("TALLY_REQUIRE_AXE").as_deref() != Ok("1"),
            "TALLY_REQUIRE_AXE=1 but no axe-core at TALLY_AXE_JS={path:?} \
             (npm install --prefix target/axe axe-core)"
        );
        eprintln!("accessibility check skipped: set TALLY_AXE_JS to axe-core's axe.min.js");
    }
    source
}

/// Runs axe-core (WCAG 2 A/AA rules) on the page in `browser` and fails on any serious or
/// critical violation, naming the rule, its help text and the elements. Returns how many
/// rules passed (0 when axe-core is not installed), so a caller can see the check ran.
pub async fn axe(browser: &Client, page: &str) -> usize {
    let Some(source) = axe_source() else {
        return 0;
    };
    // WebDriver scripts are not subject to the page's CSP, so the page needs no script-src.
    browser
        .execute(&format!("{source}\nreturn true;"), vec![])
        .await
        .expect("inject axe-core");
    let result = browser
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa']}})
               .then(r => done({
                 passes: r.passes.length,
                 violations: r.violations
                   .filter(v => v.impact === 'serious' || v.impact === 'critical')
                   .map(v => ({id: v.id, impact: v.impact, help: v.help,
                               nodes: v.nodes.slice(0, 5).map(n => n.target.join(' '))}))
               }))
               .catch(e => done({error: String(e)}));",
            vec![],
        )
        .await
        .expect("run axe-core");
    assert!(
        result.get("error").is_none(),
        "axe-core failed on {page}: {result}"
    );
    let violations = result["violations"].as_array().cloned().unwrap_or_default();
    assert!(
        violations.is_empty(),
        "{page}: serious accessibility violations: {}",
        serde_json::to_string_pretty(&violations).unwrap_or_default()
    );
    let passes = result["passes"].as_u64().unwrap_or(0);
    assert!(passes > 0, "{page}: axe-core checked nothing: {result}");
    usize::try_from(passes).unwrap_or(usize::MAX)
}

// ---------------------------------------------------------------------------------------------
// Pages through the router with a session cookie (no browser).

/// `GET uri` with the browser's session cookie (and a `Range`), through the router.
pub async fn with_cookie(
    t: &Tally,
    uri: &str,
    cookie: &str,
    range: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut builder = Request::builder()
        .uri(uri)
        .header(header::COOKIE, format!("tally_web={cookie}"));
    if let Some(range) = range {
        builder = builder.header(header::RANGE, range);
    }
    t.raw(builder.body(Body::empty()).expect("request")).await
}

/// A form POST with an optional session cookie and extra headers; (status, Location, body).
pub async fn post_form(
    t: &Tally,
    uri: &str,
    cookie: Option<&str>,
    form: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, String, String) {
    let mut builder = Request::builder()
        .method("POST")
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(cookie) = cookie {
        builder = builder.header(header::COOKIE, format!("tally_web={cookie}"));
    }
    for (name, value) in extra {
        builder = builder.header(*name, *value);
    }
    let (status, headers, body) = t
        .raw(builder.body(Body::from(form.to_string())).expect("request"))
        .await;
    let location = headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (
        status,
        location,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// Signs `address` in by the router as a buyer would: returns the session cookie's token.
pub async fn router_sign_in(t: &Tally, address: &str) -> String {
    let (status, location, body) = post_form(
        t,
        "/web/guest",
        None,
        &format!("channel=dev&address={address}&next=/me"),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let session = location
        .trim_start_matches("/s/")
        .split('?')
        .next()
        .expect("session")
        .to_string();
    let code = t.code_for(address, &session).await;
    let request = Request::builder()
        .method("POST")
        .uri(format!("/s/{session}"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("code={code}&next=/me")))
        .expect("request");
    let (status, headers, _) = t.raw(request).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = headers
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("a sign-in sets the cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    cookie
        .trim_start_matches("tally_web=")
        .split(';')
        .next()
        .expect("token")
        .to_string()
}

/// The value of hidden input `name` in the first form posting to `action` in `html`.
pub fn hidden(html: &str, action: &str, name: &str) -> String {
    let form = &html[html
        .find(&format!("action=\"{action}\""))
        .unwrap_or_else(|| panic!("no form to {action} in {html}"))..];
    let needle = format!("name=\"{name}\" value=\"");
    let start = form.find(&needle).expect("the hidden field") + needle.len();
    form[start..].split('"').next().expect("value").to_string()
}

/// A form's CSRF token: HMAC-SHA256 under the session's token of the domain and the action.
pub fn csrf_for(token: &str, action: &str) -> String {
    hex::encode(tally_kernel::crypto::kdf::hmac_sha256(
        token.as_bytes(),
        &[b"tally/web-form/v1\0".as_slice(), action.as_bytes()].concat(),
    ))
}

/// POST `body` as JSON with an API key and an idempotency key, through the router; the
/// answer's status and JSON (its text as a JSON string when it is not JSON).
pub async fn post_json(
    t: &Tally,
    uri: &str,
    key: &str,
    idem: &str,
    body: Value,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method("POST")
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", idem)
        .body(Body::from(body.to_string()))
        .expect("request");
    let (status, _, bytes) = t.raw(request).await;
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

/// Opens `/me` signed out, signs `user` in by name through the sign-in page it is sent to
/// (the code from its dev inbox), and waits to be back on `/me`.
pub async fn sign_in_through_me(t: &Tally, browser: &Client, user: &str) {
    browser
        .goto(&format!("{}/me", t.base))
        .await
        .expect("open /me");
    // Not signed in: sent to sign in, then back to /me.
    text_of(browser, "#nav-sign-in", "Sign in").await;
    type_into(browser, "#user", user).await;
    click(browser, "#open").await;
    let path = path_of(browser, "/s/").await;
    let code = t.code_for(user, path.trim_start_matches("/s/")).await;
    type_into(browser, "#code", &code).await;
    click(browser, "#confirm").await;
    path_of(browser, "/me").await;
}

/// The browser's session cookie's value (the sign-in's token).
pub async fn session_cookie(browser: &Client) -> String {
    browser
        .get_named_cookie("tally_web")
        .await
        .expect("signed in: the session cookie is set")
        .value()
        .to_string()
}
