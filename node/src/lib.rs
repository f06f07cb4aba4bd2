//! # didmesh-node
//!
//! An identity node: it keeps the DID ledger in sled, answers the HTTP API
//! of DESIGN.md, checks logins on its own and signs EdDSA access tokens with
//! its member key.
//!
//! ## Layout
//!
//! * [`config`] — command-line flags (`didmesh-node --help`).
//! * [`identity`] — the member key (`member-key.pem`), JWK/`kid`, the
//!   network genesis (`genesis.json`).
//! * [`storage`] — the hash-chained op log in sled, verified on start.
//! * [`writer`] — the single writer thread: validation, group commit, fsync.
//! * [`auth`] — stateless challenges and tokens.
//! * [`limits`] — per-network rate limits (IPv4 /24, IPv6 /64), pruned.
//! * [`server`] — the HTTP/1 accept loop: header timeout, connection cap.
//! * [`didkey`] — `did:key` resolution through ssi.
//! * [`admin`] — `init-network`, `member-add`, `member-remove`.
//! * [`api`] — the axum router and its one error type.
//! * [`p2p`] — libp2p: gossipsub push, anti-entropy pull, discovery.
//!
//! ## Run
//!
//! ```text
//! didmesh-node --data-dir ./data --http-addr 127.0.0.1:7001
//! ```
//! With no `--genesis`, a first start creates a one-member development
//! network of its own in the data folder.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod admin;
pub mod api;
pub mod auth;
pub mod config;
pub mod didkey;
pub mod identity;
pub mod limits;
pub mod p2p;
pub mod server;
pub mod storage;
pub mod tls;
pub mod writer;

use auth::{AuthSettings, Authenticator};
use config::Config;
use did_core::{Ledger, Limits};
use identity::{Genesis, Member};
use limits::PrefixLimiter;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use storage::Store;
use writer::Writer;

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error("{0}")]
    Config(String),
}

/// A monotonically increasing Prometheus counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters exported at `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub ops_accepted: Counter,
    pub ops_rejected: Counter,
    pub challenges_issued: Counter,
    pub tokens_issued: Counter,
    pub logins_failed: Counter,
    pub rate_limited: Counter,
    pub ops_rate_limited: Counter,
    pub panics: Counter,
}

/// Everything the handlers share.
pub struct NodeState {
    pub genesis: Genesis,
    /// This node's member entry (its token key).
    pub me: Member,
    pub ledger: Arc<RwLock<Ledger>>,
    pub store: Arc<RwLock<Store>>,
    pub writer: Writer,
    pub auth: Authenticator,
    pub limits: Limits,
    pub metrics: Metrics,
    /// Base URL this node is reached at (discovery, challenge domain).
    pub public_url: String,
    /// Login requests per client network; `None` when `--auth-rate 0`.
    pub auth_limiter: Option<PrefixLimiter>,
    /// `POST /v1/ops` per client network; `None` when `--ops-rate 0`.
    pub ops_limiter: Option<PrefixLimiter>,
    /// `Cache-Control: max-age` of the JWKS (`--jwks-max-age`).
    pub jwks_max_age: u64,
    /// Header timeout and connection cap of the accept loop.
    pub serve_options: server::ServeOptions,
    /// The peer-to-peer layer, once started (`main` starts it after
    /// `open`; in-process tests run without it).
    pub p2p: std::sync::OnceLock<p2p::Client>,
}

impl NodeState {
    /// Opens (or creates) the data folder, verifies and replays the log.
    pub fn open(config: &Config) -> Result<Arc<NodeState>, NodeError> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| NodeError::Config(format!("{}: {e}", dir.display())))?;
        let key = identity::load_or_create_member_key(dir)?;
        let public = did_core::keys::public_of(&key);
        let genesis = match &config.genesis {
            Some(path) => Genesis::load(path)?,
            None => {
                let path = dir.join(identity::GENESIS_FILE);
                if path.exists() {
                    Genesis::load(&path)?
                } else {
                    let me = Member::from_key("dev", public);
                    let g = Genesis::new(&config.issuer, vec![me], 1, now());
                    g.save(&path)?;
                    tracing::info!(network = %g.network_id, "created a one-member development network");
                    g
                }
            }
        };
        let me = genesis
            .members
            .iter()
            .find(|m| m.key == public)
            .cloned()
            .unwrap_or_else(|| Member::from_key("observer", public));
        let limits = Limits::default();
        let mut ledger = Ledger::new(limits).with_network(genesis.rules());
        let started = std::time::Instant::now();
        let store = Store::open(dir, &mut ledger)?;
        tracing::info!(
            ops = ledger.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "op log verified"
        );
        let ledger = Arc::new(RwLock::new(ledger));
        let (writer, store) = Writer::start(store, ledger.clone());
        let public_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{}://{}", config.url_scheme(), config.http_addr))
            .trim_end_matches('/')
            .to_string();
        let domain = public_url
            .split("://")
            .nth(1)
            .unwrap_or(&public_url)
            .to_string();
        let auth = Authenticator::new(
            AuthSettings {
                domain,
                network_id: genesis.network_id.clone(),
                issuer: genesis.issuer.clone(),
                default_audience: config.audience.clone(),
                challenge_ttl: config.challenge_ttl,
                token_ttl: config.token_ttl,
                max_redeemed: 1_000_000,
            },
            &identity::pkcs8_der(&key),
            identity::kid(&public),
        );
        let state = Arc::new(NodeState {
            genesis,
            me,
            ledger,
            store,
            writer,
            auth,
            limits,
            metrics: Metrics::default(),
            public_url,
            auth_limiter: PrefixLimiter::new(config.auth_rate, 2),
            ops_limiter: PrefixLimiter::new(config.ops_rate, 5),
            jwks_max_age: config.jwks_max_age,
            serve_options: server::ServeOptions {
                header_read_timeout: std::time::Duration::from_secs(config.header_read_timeout),
                max_connections: config.max_connections,
                max_connections_per_network: config.max_connections_per_network,
            },
            p2p: std::sync::OnceLock::new(),
        });
        state.spawn_housekeeping();
        Ok(state)
    }

    /// Starts the timer that bounds the node's per-client memory: rate
    /// limiter entries of quiet networks and expired redeemed nonces are
    /// dropped every [`limits::HOUSEKEEPING_INTERVAL`]. Needs a tokio
    /// runtime (none: nothing is started, e.g. a synchronous tool). The
    /// task ends once the state is dropped.
    fn spawn_housekeeping(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(limits::HOUSEKEEPING_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(state) = weak.upgrade() else { return };
                state.housekeeping();
            }
        });
    }

    /// One round of [`Self::spawn_housekeeping`] (public for tests).
    pub fn housekeeping(&self) {
        for limiter in [&self.auth_limiter, &self.ops_limiter]
            .into_iter()
            .flatten()
        {
            limiter.prune();
        }
        self.auth.prune(now());
    }

    /// Whether `key` is the token key of a current member.
    pub fn is_member_key(&self, key: &did_core::PublicKey) -> bool {
        self.ledger
            .read()
            .map(|l| l.members().iter().any(|m| &m.key == key))
            .unwrap_or(false)
    }

    /// Whether this node's key is a current member's (only members issue
    /// tokens that verifiers accept).
    pub fn is_member(&self) -> bool {
        self.is_member_key(&self.me.key)
    }

    /// The JWKS: every current member's token key.
    pub fn jwks_json(&self) -> serde_json::Value {
        let keys: Vec<_> = self
            .ledger
            .read()
            .map(|l| l.members().iter().map(|m| identity::jwk(&m.key)).collect())
            .unwrap_or_default();
        serde_json::json!({ "keys": keys })
    }

    /// `/v1/network`: the genesis rules and the current member set.
    pub fn network_json(&self) -> serde_json::Value {
        let (members, head) = self
            .ledger
            .read()
            .map(|l| {
                (
                    l.members().to_vec(),
                    l.membership_head().map(|c| c.to_string()),
                )
            })
            .unwrap_or_default();
        serde_json::json!({
            "network_id": self.genesis.network_id,
            "issuer": self.genesis.issuer,
            "quorum": self.genesis.quorum,
            "founders": self.genesis.members,
            "members": members,
            "membership_head": head,
        })
    }

    pub fn status_json(&self) -> serde_json::Value {
        let (ops, dids, orphans, op_digest, state_digest) = match self.ledger.read() {
            Ok(l) => (
                l.len(),
                l.did_count(),
                l.orphan_count(),
                hex(&l.op_set_digest()),
                hex(&l.state_digest()),
            ),
            Err(_) => (0, 0, 0, String::new(), String::new()),
        };
        let (log_entries, log_head) = match self.store.read() {
            Ok(s) => (s.count(), s.head_hex()),
            Err(_) => (0, String::new()),
        };
        let p2p = match self.p2p.get() {
            Some(c) => c.status_json(),
            None => {
                serde_json::json!({"peer_id": null, "listen_addrs": [], "peers": [], "banned_peers": [],
                "replication": "no peers: this node runs alone"})
            }
        };
        let mut status = serde_json::json!({
            "node_did": self.me.node_did,
            "member": self.is_member(),
            "network_id": self.genesis.network_id,
            "issuer": self.genesis.issuer,
            "op_count": ops,
            "did_count": dids,
            "orphans": orphans,
            "log_entries": log_entries,
            "log_head": log_head,
            "ledger_digest": op_digest,
            "state_digest": state_digest,
        });
        if let (Some(status), serde_json::Value::Object(p2p)) = (status.as_object_mut(), p2p) {
            status.extend(p2p);
        }
        status
    }

    pub fn metrics_text(&self) -> String {
        let m = &self.metrics;
        let (ops, dids) = self
            .ledger
            .read()
            .map(|l| (l.len(), l.did_count()))
            .unwrap_or((0, 0));
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            ));
        };
        counter(
            "didmesh_ops_accepted_total",
            "Ops accepted through the API.",
            m.ops_accepted.get(),
        );
        counter(
            "didmesh_ops_rejected_total",
            "Ops refused through the API.",
            m.ops_rejected.get(),
        );
        counter(
            "didmesh_challenges_issued_total",
            "Login challenges issued.",
            m.challenges_issued.get(),
        );
        counter(
            "didmesh_tokens_issued_total",
            "Access tokens issued.",
            m.tokens_issued.get(),
        );
        counter(
            "didmesh_logins_failed_total",
            "Login steps refused.",
            m.logins_failed.get(),
        );
        counter(
            "didmesh_rate_limited_total",
            "Auth requests refused by the rate limit.",
            m.rate_limited.get(),
        );
        counter(
            "didmesh_ops_rate_limited_total",
            "Op submissions refused by the rate limit.",
            m.ops_rate_limited.get(),
        );
        counter(
            "didmesh_handler_panics_total",
            "Requests answered 500 because a handler panicked.",
            m.panics.get(),
        );
        let mut gauge = |name: &str, help: &str, v: u64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
            ));
        };
        gauge("didmesh_ledger_ops", "Ops held in the ledger.", ops as u64);
        gauge(
            "didmesh_ledger_dids",
            "DIDs held in the ledger.",
            dids as u64,
        );
        gauge(
            "didmesh_nonces_redeemed",
            "Redeemed login nonces remembered until they expire.",
            self.auth.redeemed_nonces() as u64,
        );
        let limiter_keys = [&self.auth_limiter, &self.ops_limiter]
            .into_iter()
            .flatten()
            .map(|l| l.len() as u64)
            .sum();
        gauge(
            "didmesh_rate_limiter_keys",
            "Client networks tracked by the rate limiters.",
            limiter_keys,
        );
        if let Some(p2p) = self.p2p.get() {
            out.push_str(&p2p.metrics_text());
        }
        out
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Serves the API on `listener` until `shutdown` completes, with the
/// header timeout and connection cap of [`server`].
pub async fn serve(
    state: Arc<NodeState>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    let options = state.serve_options;
    // Small JSON answers: without nodelay, Nagle plus delayed ACKs can add
    // tens of milliseconds to a response written in two parts.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    server::serve_on(listener, api::router(state), options, shutdown).await
}
