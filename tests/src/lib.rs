//! # didmesh-tests: the testkit
//!
//! The one harness every Rust test of didmesh starts nodes with, and the
//! home of the multi-process tests (`tests/`) that need several real
//! processes. What it offers:
//!
//! | need | here |
//! | --- | --- |
//! | a node in process: the node's own axum router driven with `oneshot`, also served on a loopback port | [`router::RouterNode`] |
//! | the real `didmesh-node` binary, on a free port, killed on drop | [`spawn::NodeCommand`], [`start_node`] |
//! | the real `home-api` binary | [`spawn::HomeApi`] |
//! | `didmesh-node init-network` and its admin commands | [`cluster::init_network`], [`spawn::node_admin`] |
//! | a cluster of founders bootstrapping from node 1, convergence and peer polling | [`cluster::Cluster`] |
//! | login through the real client library (`NodeClient::login`, phishing checks included) | [`login`] |
//! | a token issuer that mints with the node's own code | [`issuer::TokenIssuer`] |
//! | signed ops: deterministic keys, creates, updates, rotation keys | [`ops`] |
//! | the OpenID code flow as the sign-in page drives it (client registration, authorize, sign-in, token) | [`oidc`] |
//! | a blocking HTTP client for plain `#[test]` functions | [`http`] |
//! | a local server of Twilio's Messages API that records SMS and fails on demand | [`twilio`] |
//! | hosts in network namespaces on a bridge, named in /etc/netns hosts files; partitions and re-addressing | [`netns::Lab`] |
//! | step-up (issue 11): a DID whose login needs several keys, a login presenting them all, home-api's private route | [`stepup`] |
//!
//! Users: `node/tests/*.rs` (in-process), `client/tests/end_to_end.rs` and
//! `tests/tests/*.rs` (spawned binaries). The kit depends on the node and
//! client libraries; those crates dev-depend on the kit, a cycle cargo
//! accepts because it runs only through dev-dependencies.
//!
//! Binaries are taken from `$DIDMESH_BIN_DIR`, else `$CARGO_TARGET_DIR/debug`,
//! else the workspace's `target/debug` (`cargo build --workspace --bins`
//! builds them; `cargo test` alone does not build other crates' binaries).
//! A missing binary fails the test with that hint: no test passes by
//! skipping.

pub mod cluster;
pub mod http;
pub mod issuer;
pub mod login;
pub mod netns;
pub mod oidc;
pub mod ops;
pub mod router;
pub mod spawn;
pub mod stepup;
pub mod twilio;

pub use spawn::{node_admin, start_node, HomeApi, Node, NodeCommand, Proc};

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Unix seconds now: the node's own clock helper, so ops made by tests and
/// by the node agree on what "now" means.
pub use didmesh_node::now;

/// The node's configuration with no flags: its defaults (issuer,
/// audience, token lifetime, …), read from the node's own `Config`.
pub fn node_defaults() -> didmesh_node::config::Config {
    use clap::Parser as _;
    didmesh_node::config::Config::parse_from(["didmesh-node"])
}

/// Where the workspace's binaries are (module doc).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DIDMESH_BIN_DIR") {
        return PathBuf::from(dir);
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("debug")
}

/// Path of a workspace binary; panics with the command to build it when it
/// is missing.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (or set DIDMESH_BIN_DIR)",
        p.display()
    );
    p
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Polls `f` every `every` until it returns `Some`, for at most `within`.
pub fn poll<T>(within: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Polls `f` every 50 ms until it holds; panics naming `what` after
/// `within`. Returns how long it took.
pub fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    if poll(within, Duration::from_millis(50), || f().then_some(())).is_none() {
        panic!("timed out after {within:?} waiting for {what}");
    }
    start.elapsed()
}

/// Polls `GET {url}/healthz` until it answers 200; panics after `within`.
pub fn wait_healthy(url: &str, within: Duration) {
    let c = http::blocking_client();
    let healthy = poll(within, Duration::from_millis(50), || {
        c.get_json(&format!("{url}/healthz"))
            .ok()
            .filter(|a| a.status == 200)
    });
    assert!(
        healthy.is_some(),
        "{url} did not become healthy within {within:?}"
    );
}
