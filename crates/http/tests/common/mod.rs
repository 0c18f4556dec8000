//! The shared harness of the HTTP tests: a real node on SQLite in a temporary directory and
//! `router(node, options).oneshot(request)`. No sockets, no sleeps.
#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use serde_json::{Value, json};
use tally_http::{HttpOptions, router};
use tally_service::{Node, NodeConfig};
use tempfile::TempDir;
use tower::ServiceExt;

pub mod peers;
pub mod world;

pub struct Api {
    pub app: Router,
    pub node: Node,
    pub admin: String,
    pub _dir: TempDir,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    /// The body's bytes (for binary answers such as packages).
    pub raw: Vec<u8>,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body
            .pointer("/error/code")
            .and_then(Value::as_str)
            .unwrap_or("<no error code>")
    }
    pub fn str(&self, pointer: &str) -> &str {
        self.body
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no string at {pointer}: {}", self.body))
    }
    pub fn i64(&self, pointer: &str) -> i64 {
        self.body
            .pointer(pointer)
            .and_then(Value::as_i64)
            .unwrap_or_else(|| panic!("no integer at {pointer}: {}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    #[track_caller]
    pub fn expect(self, status: StatusCode) -> Reply {
        assert_eq!(self.status, status, "body: {}", self.body);
        self
    }
    #[track_caller]
    pub fn expect_error(self, status: StatusCode, code: &str) -> Reply {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "body: {}",
            self.body
        );
        assert!(
            self.body
                .pointer("/error/message")
                .and_then(Value::as_str)
                .is_some_and(|m| !m.is_empty())
        );
        self
    }
}

/// A request under construction.
pub struct Call<'a> {
    api: &'a Api,
    builder: axum::http::request::Builder,
    body: Body,
}

impl Call<'_> {
    pub fn key(mut self, key: &str) -> Self {
        self.builder = self
            .builder
            .header(header::AUTHORIZATION, format!("Bearer {key}"));
        self
    }
    pub fn idem(mut self, key: &str) -> Self {
        self.builder = self.builder.header("idempotency-key", key);
        self
    }
    /// The request as if from TCP peer `addr` (what `into_make_service_with_connect_info`
    /// gives a served router).
    pub fn peer(mut self, addr: std::net::SocketAddr) -> Self {
        self.builder = self.builder.extension(axum::extract::ConnectInfo(addr));
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.builder = self.builder.header(name, value);
        self
    }
    pub fn json(mut self, body: Value) -> Self {
        self.builder = self
            .builder
            .header(header::CONTENT_TYPE, "application/json");
        self.body = Body::from(body.to_string());
        self
    }
    pub fn raw(mut self, content_type: &str, body: impl Into<Body>) -> Self {
        self.builder = self.builder.header(header::CONTENT_TYPE, content_type);
        self.body = body.into();
        self
    }
    pub async fn send(self) -> Reply {
        let request = self.builder.body(self.body).expect("valid request");
        let response = self
            .api
            .app
            .clone()
            .oneshot(request)
            .await
            .expect("router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
            .await
            .expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Reply {
            status,
            headers,
            body,
            raw: bytes.to_vec(),
        }
    }
}

impl Api {
    pub async fn start() -> Api {
        Api::with(|c| c, HttpOptions::default()).await
    }

    pub async fn with(config: impl FnOnce(NodeConfig) -> NodeConfig, options: HttpOptions) -> Api {
        let dir = tempfile::tempdir().expect("tempdir");
        let (node, admin) = Node::open(&config(NodeConfig::new(dir.path().join("data"))))
            .await
            .expect("node opens");
        let admin = admin
            .expect("first start makes an admin key")
            .expose()
            .clone();
        Api {
            app: router(node.clone(), options),
            node,
            admin,
            _dir: dir,
        }
    }

    pub fn call(&self, method: &str, uri: &str) -> Call<'_> {
        Call {
            api: self,
            builder: Request::builder().method(method).uri(uri),
            body: Body::empty(),
        }
    }

    pub fn get(&self, uri: &str) -> Call<'_> {
        self.call("GET", uri)
    }

    pub fn post(&self, uri: &str) -> Call<'_> {
        self.call("POST", uri)
    }

    /// Issues a key through the API.
    pub async fn issue_key(&self, role: &str, owner: &str) -> String {
        let r = self
            .post("/v1/api-keys")
            .key(&self.admin)
            .json(json!({"role": role, "owner": owner, "label": "test"}))
            .send()
            .await
            .expect(StatusCode::CREATED);
        assert_eq!(r.header("cache-control"), Some("no-store"));
        r.str("/key").to_string()
    }

    /// Opens an account with `key`; returns its id.
    pub async fn open(&self, key: &str, body: Value) -> String {
        let r = self
            .post("/v1/accounts")
            .key(key)
            .json(body)
            .send()
            .await
            .expect(StatusCode::CREATED);
        r.str("/id").to_string()
    }

    pub async fn account(&self, key: &str, id: &str) -> Reply {
        self.get(&format!("/v1/accounts/{id}"))
            .key(key)
            .send()
            .await
            .expect(StatusCode::OK)
    }

    pub async fn balance(&self, id: &str) -> i64 {
        self.account(&self.admin, id).await.i64("/balance/minor")
    }
}
