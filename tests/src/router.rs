//! A node in process: the node's own state ([`NodeState::open`]) and axum
//! router ([`api::router`]) on a temporary data folder, driven with
//! `oneshot` (no socket, one client address), and also served on a free
//! loopback port by the node's own accept loop ([`didmesh_node::serve`]),
//! so the client library can log in against it and socket-level tests
//! (header timeouts, connection caps) see the real server.
//!
//! p2p is not started: this is one node, for API tests.

use crate::login::{self, LoginError};
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, Response, StatusCode};
use axum::Router;
use did_core::keys::public_of;
use did_core::op::did_from_genesis;
use did_core::{Cid, DidState, Operation};
use didmesh_node::config::Config;
use didmesh_node::{api, NodeState};
use ed25519_dalek::SigningKey;
use http_body_util::BodyExt as _;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use tower::ServiceExt as _;

/// The client address `oneshot` requests come from (one network for the
/// rate limiters).
pub const CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4000);

/// A node in process (module doc). Its server task ends when it is dropped.
pub struct RouterNode {
    pub state: Arc<NodeState>,
    /// The router, as seen from [`CLIENT`].
    pub app: Router,
    /// Where the node's own accept loop serves it: `http://127.0.0.1:<port>`.
    pub url: String,
    pub addr: SocketAddr,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for RouterNode {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl RouterNode {
    /// A node on a fresh folder with the rate limits off.
    pub async fn start() -> RouterNode {
        Self::start_with(&[]).await
    }

    /// A node on a fresh folder with the rate limits off
    /// (`--auth-rate 0 --ops-rate 0`) and `extra` flags, which override.
    pub async fn start_with(extra: &[&str]) -> RouterNode {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let mut node = Self::open(dir.path(), extra).await;
        node._dir = Some(dir);
        node
    }

    /// A node on the data folder `dir` (prepared by the test: a genesis, a
    /// member key), with `extra` flags as in [`Self::start_with`].
    pub async fn open(dir: &std::path::Path, extra: &[&str]) -> RouterNode {
        use clap::Parser as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local addr: {e}"));
        let data_dir = dir.to_string_lossy().into_owned();
        let http_addr = addr.to_string();
        let mut args = vec![
            "didmesh-node",
            "--data-dir",
            &data_dir,
            "--http-addr",
            &http_addr,
            "--no-p2p",
            "--auth-rate",
            "0",
            "--ops-rate",
            "0",
        ];
        args.extend(extra);
        let config = Config::try_parse_from(args).unwrap_or_else(|e| panic!("flags: {e}"));
        let state = NodeState::open(&config).unwrap_or_else(|e| panic!("open: {e}"));
        let server = tokio::spawn(didmesh_node::serve(
            state.clone(),
            listener,
            std::future::pending(),
        ));
        RouterNode {
            app: Self::router_from(&state, CLIENT),
            state,
            url: format!("http://{addr}"),
            addr,
            server,
            _dir: None,
        }
    }

    /// The node's router as seen from another client address (another
    /// network for the rate limiters).
    pub fn from_client(&self, client: SocketAddr) -> Router {
        Self::router_from(&self.state, client)
    }

    fn router_from(state: &Arc<NodeState>, client: SocketAddr) -> Router {
        api::router(state.clone()).layer(MockConnectInfo(client))
    }

    /// One request through the router; the whole response.
    pub async fn send(&self, req: Request<Body>) -> Response<Body> {
        send(&self.app, req).await
    }

    /// `method uri` with an optional JSON body; the status and the body
    /// as JSON (a JSON string holding the text when it is not JSON).
    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        body: Option<Vec<u8>>,
    ) -> (StatusCode, Value) {
        call(&self.app, method, uri, body).await
    }

    pub async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call("GET", uri, None).await
    }

    pub async fn post(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", uri, Some(body.to_string().into_bytes()))
            .await
    }

    /// `POST /v1/ops`.
    pub async fn submit(&self, op: &Operation) -> (StatusCode, Value) {
        let body = serde_json::to_value(op).unwrap_or_else(|e| panic!("op to JSON: {e}"));
        self.post("/v1/ops", body).await
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Value {
        self.get("/v1/status").await.1
    }

    /// Registers a DID whose only key is `key`; its DID and genesis CID.
    pub async fn register(&self, key: &SigningKey) -> (String, Cid) {
        register(&self.app, key).await
    }

    /// `POST /v1/auth/challenge` for `did`, which must succeed: the nonce
    /// and the message to sign.
    pub async fn challenge(&self, did: &str) -> (String, String) {
        let (status, body) = self.post("/v1/auth/challenge", json!({ "did": did })).await;
        assert_eq!(status, StatusCode::OK, "challenge for {did}: {body}");
        let field = |f: &str| {
            body[f]
                .as_str()
                .unwrap_or_else(|| panic!("challenge without {f}: {body}"))
                .to_string()
        };
        (field("nonce"), field("message"))
    }

    /// `POST /v1/auth/token` with exactly these fields, for tests of what
    /// the node refuses.
    pub async fn redeem(&self, did: &str, nonce: &str, signature: &str) -> (StatusCode, Value) {
        self.post(
            "/v1/auth/token",
            json!({"did": did, "nonce": nonce, "signature": signature}),
        )
        .await
    }

    /// A login through the client library over the served socket
    /// ([`login::login`]): the access token, or the node's refusal.
    pub async fn login(&self, did: &str, key: &SigningKey) -> Result<String, LoginError> {
        login::login(&self.url, did, key, None).await
    }
}

/// One request through `app`.
pub async fn send(app: &Router, req: Request<Body>) -> Response<Body> {
    app.clone()
        .oneshot(req)
        .await
        .unwrap_or_else(|e| match e {})
}

/// [`RouterNode::call`] on any router (e.g. [`api::guard`] around test
/// routes).
pub async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    body: Option<Vec<u8>>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(body.map(Body::from).unwrap_or_else(Body::empty))
        .unwrap_or_else(|e| panic!("request: {e}"));
    let resp = send(app, req).await;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("body: {e}"))
        .to_bytes();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, v)
}

/// Registers a DID whose only key is `key` through `app`; its DID and
/// genesis CID.
pub async fn register(app: &Router, key: &SigningKey) -> (String, Cid) {
    let op = Operation::create(DidState::single_key(public_of(key)), crate::now(), key)
        .unwrap_or_else(|e| panic!("{e}"));
    let body = serde_json::to_vec(&op).unwrap_or_else(|e| panic!("{e}"));
    let (status, answer) = call(app, "POST", "/v1/ops", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let cid = op.cid().unwrap_or_else(|e| panic!("{e}"));
    let did = did_from_genesis(&cid);
    assert_eq!(answer["did"], did.as_str());
    (did, cid)
}
