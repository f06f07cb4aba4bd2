//! Real binaries as child processes: `didmesh-node` ([`NodeCommand`],
//! [`start_node`]), its admin commands ([`node_admin`]) and `home-api`
//! ([`HomeApi`]). Every process is killed with SIGKILL when its handle is
//! dropped, as a crash would.
//!
//! Logs: quiet (`RUST_LOG=warn`, discarded) unless `DIDMESH_TEST_LOG=<filter>`
//! is set; then each node's log goes to `<data dir>.log`, or to
//! `$DIDMESH_TEST_LOG_DIR/<http-port>.log` when that is set too.

use crate::{bin, free_port, wait_healthy};
use serde_json::Value;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a node or home-api may take to answer `/healthz`.
const START_TIMEOUT: Duration = Duration::from_secs(20);

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

/// A spawned `didmesh-node`.
pub struct Node {
    pub proc: Proc,
    /// `http://<http-addr>`.
    pub url: String,
    pub port: u16,
    pub dir: PathBuf,
}

impl Node {
    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        self.proc.kill9();
    }
}

/// How to start one `didmesh-node`. By default the HTTP API listens on a
/// free loopback port, libp2p on another (`--p2p-addr /ip4/127.0.0.1/tcp/0`
/// unless the arguments name `--p2p-addr` or `--no-p2p`), and the
/// per-network rate limits are off (`--auth-rate 0 --ops-rate 0`: tests
/// submit from one address). The node takes the last of a repeated flag, so
/// arguments override these defaults.
pub struct NodeCommand {
    dir: PathBuf,
    args: Vec<OsString>,
    http_addr: Option<String>,
    wrapper: Vec<OsString>,
    rate_limits_off: bool,
    env: Vec<(String, String)>,
    stderr: Option<PathBuf>,
}

impl NodeCommand {
    /// A node with its data in `dir`.
    pub fn new(dir: &Path) -> NodeCommand {
        NodeCommand {
            dir: dir.to_path_buf(),
            args: vec![],
            http_addr: None,
            wrapper: vec![],
            rate_limits_off: true,
            env: vec![],
            stderr: None,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> NodeCommand {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> NodeCommand
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// `--bootstrap` to each of `peers`.
    pub fn bootstrap(mut self, peers: &[String]) -> NodeCommand {
        for p in peers {
            self = self.arg("--bootstrap").arg(p);
        }
        self
    }

    /// Keeps the node's own rate limits instead of turning them off.
    pub fn node_rate_limits(mut self) -> NodeCommand {
        self.rate_limits_off = false;
        self
    }

    /// A fixed `--http-addr` (`host:port`) instead of a free loopback port.
    pub fn http_addr(mut self, addr: &str) -> NodeCommand {
        self.http_addr = Some(addr.to_string());
        self
    }

    /// Runs the node through `wrapper` (e.g. `ip netns exec <ns>`).
    pub fn wrapped_in(mut self, wrapper: &[&str]) -> NodeCommand {
        self.wrapper = wrapper.iter().map(OsString::from).collect();
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> NodeCommand {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Writes the node's stderr (its log) to `path`.
    pub fn stderr_to(mut self, path: &Path) -> NodeCommand {
        self.stderr = Some(path.to_path_buf());
        self
    }

    fn addr(&mut self) -> String {
        self.http_addr
            .get_or_insert_with(|| format!("127.0.0.1:{}", free_port()))
            .clone()
    }

    /// The command line, for a test that expects the node to refuse to
    /// start and reads its output (`Command::output` captures stdout and
    /// stderr unless `DIDMESH_TEST_LOG` or [`Self::stderr_to`] sends them
    /// to a file).
    pub fn command(&mut self) -> Command {
        let addr = self.addr();
        let mut cmd = match self.wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(bin("didmesh-node"));
                c
            }
            None => Command::new(bin("didmesh-node")),
        };
        cmd.arg("--data-dir")
            .arg(&self.dir)
            .arg("--http-addr")
            .arg(&addr);
        if self.rate_limits_off {
            cmd.args(["--auth-rate", "0", "--ops-rate", "0"]);
        }
        let names_p2p = self
            .args
            .iter()
            .any(|a| a == "--p2p-addr" || a == "--no-p2p");
        if !names_p2p {
            cmd.args(["--p2p-addr", "/ip4/127.0.0.1/tcp/0"]);
        }
        cmd.args(&self.args).env("RUST_LOG", "warn");
        if let Ok(filter) = std::env::var("DIDMESH_TEST_LOG") {
            let port = addr.rsplit(':').next().unwrap_or("node");
            let path = match std::env::var_os("DIDMESH_TEST_LOG_DIR") {
                Some(d) => PathBuf::from(d).join(format!("{port}.log")),
                None => self.dir.with_extension("log"),
            };
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let out = log
                .try_clone()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            cmd.env("RUST_LOG", filter).stdout(out).stderr(log);
        }
        if let Some(path) = &self.stderr {
            let log =
                std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            cmd.stderr(log);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Spawns the node without waiting for it (a test that watches it
    /// start, or fail to, by itself).
    pub fn spawn(mut self) -> Node {
        let mut cmd = self.command();
        // Quiet unless the output goes to a log file (module doc).
        if std::env::var_os("DIDMESH_TEST_LOG").is_none() {
            cmd.stdout(Stdio::null());
            if self.stderr.is_none() {
                cmd.stderr(Stdio::null());
            }
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start didmesh-node: {e}"));
        let addr = self.addr();
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        Node {
            proc: Proc {
                child,
                name: "didmesh-node".into(),
            },
            url: format!("http://{addr}"),
            port,
            dir: self.dir,
        }
    }

    /// Spawns the node and waits until `/healthz` answers.
    pub fn start(self) -> Node {
        let node = self.spawn();
        wait_healthy(&node.url, START_TIMEOUT);
        node
    }
}

/// Starts `didmesh-node` in `dir` with `extra` arguments ([`NodeCommand`]'s
/// defaults) and waits until it serves.
pub fn start_node(dir: &Path, extra: &[&str]) -> Node {
    NodeCommand::new(dir).args(extra).start()
}

/// Runs a `didmesh-node` admin command (`init-network`, `member-add`, …);
/// whether it succeeded, and its stdout and stderr.
pub fn node_admin<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (bool, String) {
    let out = Command::new(bin("didmesh-node"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("didmesh-node: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A spawned `home-api`.
pub struct HomeApi {
    pub proc: Proc,
    pub url: String,
}

impl HomeApi {
    /// home-api on a free loopback port, checking tokens against the JWKS
    /// at `jwks_url` with the issuer and audience a node uses by default.
    pub fn start(jwks_url: &str) -> HomeApi {
        let node = crate::node_defaults();
        Self::start_with(&[
            "--jwks-url",
            jwks_url,
            "--issuer",
            &node.issuer,
            "--audience",
            &node.audience,
        ])
    }

    /// home-api on a free loopback port with `args`.
    pub fn start_with(args: &[&str]) -> HomeApi {
        let port = free_port();
        let child = Command::new(bin("home-api"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start home-api: {e}"));
        let app = HomeApi {
            proc: Proc {
                child,
                name: "home-api".into(),
            },
            url: format!("http://127.0.0.1:{port}"),
        };
        wait_healthy(&app.url, START_TIMEOUT);
        app
    }

    /// `GET /api/activities/home`, with `token` as the bearer when given.
    pub fn home(&self, token: Option<&str>) -> (u16, Value) {
        let c = crate::http::blocking_client();
        let url = format!("{}/api/activities/home", self.url);
        let a = match token {
            Some(t) => c.get_bearer(&url, t),
            None => c.get_json(&url),
        }
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        (a.status, a.body)
    }
}
