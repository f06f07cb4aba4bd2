//! # didmesh-tests
//!
//! Multi-process tests: they start the real `didmesh-node`, `home-api` and
//! `didmesh` binaries on loopback, talk to them over HTTP and kill them with
//! SIGKILL where a test needs a crash. This crate is the harness; the tests
//! are in `tests/`.
//!
//! Binaries are taken from `$DIDMESH_BIN_DIR`, else from the workspace's
//! `target/debug` (which `cargo test --workspace` builds first).

pub mod cluster;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the workspace's binaries are.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DIDMESH_BIN_DIR") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug")
}

/// Path of a workspace binary; panics with a hint if it was not built.
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

/// A running process, killed (SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A node started on a free port with its data in `dir`.
pub struct Node {
    pub proc: Proc,
    pub url: String,
    pub port: u16,
    pub dir: PathBuf,
}

/// Starts `didmesh-node` and waits for `/healthz`. Unless `extra` says
/// otherwise, the p2p layer listens on a free loopback port, and the
/// per-network rate limits are off (`--auth-rate 0 --ops-rate 0`: the tests
/// submit from one address; a flag in `extra` overrides them). With
/// `DIDMESH_TEST_LOG=<filter>` set, each node's log goes to `<dir>.log`, or
/// to `$DIDMESH_TEST_LOG_DIR/<http-port>.log` when that is set too.
pub fn start_node(dir: &Path, extra: &[&str]) -> Node {
    let port = free_port();
    let mut cmd = Command::new(bin("didmesh-node"));
    cmd.arg("--data-dir")
        .arg(dir)
        .arg("--http-addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--auth-rate")
        .arg("0")
        .arg("--ops-rate")
        .arg("0");
    if !extra.contains(&"--p2p-addr") && !extra.contains(&"--no-p2p") {
        cmd.arg("--p2p-addr").arg("/ip4/127.0.0.1/tcp/0");
    }
    cmd.args(extra);
    match std::env::var("DIDMESH_TEST_LOG") {
        Ok(filter) => {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(match std::env::var_os("DIDMESH_TEST_LOG_DIR") {
                    Some(d) => PathBuf::from(d).join(format!("{port}.log")),
                    None => dir.with_extension("log"),
                })
                .unwrap_or_else(|e| panic!("log file: {e}"));
            let out = log.try_clone().unwrap_or_else(|e| panic!("log file: {e}"));
            cmd.env("RUST_LOG", filter).stdout(out).stderr(log);
        }
        Err(_) => {
            cmd.env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        }
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start didmesh-node: {e}"));
    let url = format!("http://127.0.0.1:{port}");
    let node = Node {
        proc: Proc {
            child,
            name: "didmesh-node".into(),
        },
        url,
        port,
        dir: dir.to_path_buf(),
    };
    wait_healthy(&node.url, Duration::from_secs(20));
    node
}

/// Polls `GET {url}/healthz` until it answers 200.
pub fn wait_healthy(url: &str, within: Duration) {
    let deadline = Instant::now() + within;
    let client = reqwest::blocking_client();
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{url}/healthz")).send() {
            if r.status().is_success() {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{url} did not become healthy within {within:?}");
}

/// A tiny blocking HTTP helper on top of reqwest's async client, so tests
/// stay plain `#[test]` functions.
pub mod reqwest {
    pub use ::reqwest::Response;

    pub struct BlockingClient {
        rt: tokio::runtime::Runtime,
        client: ::reqwest::Client,
    }

    pub struct Answer {
        pub status: u16,
        pub body: serde_json::Value,
    }

    impl Answer {
        pub fn is_success(&self) -> bool {
            (200..300).contains(&self.status)
        }
    }

    pub struct Pending<'a> {
        c: &'a BlockingClient,
        req: ::reqwest::RequestBuilder,
    }

    impl Pending<'_> {
        pub fn send(self) -> Result<Response, ::reqwest::Error> {
            let req = self.req;
            self.c.rt.block_on(async move { req.send().await })
        }
    }

    impl BlockingClient {
        pub fn get(&self, url: String) -> Pending<'_> {
            Pending {
                c: self,
                req: self.client.get(url),
            }
        }

        pub fn get_json(&self, url: &str) -> Result<Answer, ::reqwest::Error> {
            self.rt.block_on(async {
                let r = self.client.get(url).send().await?;
                let status = r.status().as_u16();
                let body = r.json().await.unwrap_or(serde_json::Value::Null);
                Ok(Answer { status, body })
            })
        }

        /// `GET url` with `Authorization: Bearer token`.
        pub fn get_bearer(&self, url: &str, token: &str) -> Result<Answer, ::reqwest::Error> {
            self.rt.block_on(async {
                let r = self.client.get(url).bearer_auth(token).send().await?;
                let status = r.status().as_u16();
                let body = r.json().await.unwrap_or(serde_json::Value::Null);
                Ok(Answer { status, body })
            })
        }

        pub fn post_json(
            &self,
            url: &str,
            body: &serde_json::Value,
        ) -> Result<Answer, ::reqwest::Error> {
            self.rt.block_on(async {
                let r = self.client.post(url).json(body).send().await?;
                let status = r.status().as_u16();
                let body = r.json().await.unwrap_or(serde_json::Value::Null);
                Ok(Answer { status, body })
            })
        }
    }

    pub fn blocking_client() -> BlockingClient {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
        let _entered = rt.enter();
        let client = ::reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap_or_else(|e| panic!("http client: {e}"));
        drop(_entered);
        BlockingClient { rt, client }
    }
}
