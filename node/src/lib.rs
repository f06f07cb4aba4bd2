//! # didmesh-node
//!
//! An identity node: it keeps the DID ledger in sled, answers the HTTP API
//! (README.md, "HTTP API of a node"; PROTOCOL.md), checks logins on its own
//! and signs EdDSA access tokens with its member key. ARCHITECTURE.md shows
//! how the pieces below fit together.
//!
//! ## Layout
//!
//! * [`config`] — command-line flags (`didmesh-node --help`).
//! * [`config_file`] — what the providers and SMS files share: size-capped
//!   reads, TOML errors by line, secrets inline or in a file.
//! * [`identity`] — the member key (`member-key.pem`), JWK/`kid`, the
//!   network genesis (`genesis.json`).
//! * [`token_keys`] — the RS256/ES256/EdDSA ID-token keys and signing.
//! * [`storage`] — the hash-chained op log in sled, verified on start.
//! * [`writer`] — the single writer thread: validation, group commit, fsync.
//! * [`auth`] — stateless challenges and tokens.
//! * [`limits`] — per-network rate limits (IPv4 /24, IPv6 /64), pruned.
//! * [`server`] — the HTTP/1 accept loop: header timeout, connection cap.
//! * [`didkey`] — `did:key` resolution through ssi.
//! * [`admin`] — `init-network`, `member-add`, `member-remove`.
//! * [`oidc`] — the OpenID provider: authorize, sign-in, codes, token.
//! * [`federation`] — sign-in through external OpenID providers
//!   (`--providers`): the node as their relying party.
//! * [`sms`] — SMS one-time codes (`--sms`): Twilio, the spend guard.
//! * [`api`] — the axum router and its one error type.
//! * [`views`] — the typed JSON views (status, network, JWKS) and the
//!   gauges of `/metrics`.
//! * [`metrics`] — counters and the Prometheus text renderer.
//! * [`p2p`] — libp2p: gossipsub push, anti-entropy pull, discovery.
//!
//! This file is the composition root: [`NodeState::open`] wires storage,
//! the writer, the authenticator and the limiters together; `main` adds
//! the p2p layer and [`serve`]. Behaviour lives in the modules above.
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
pub mod config_file;
pub mod didkey;
pub mod federation;
pub mod identity;
pub mod limits;
pub mod metrics;
pub mod oidc;
pub mod p2p;
pub mod revocations;
pub mod server;
pub mod sms;
pub mod storage;
pub mod tls;
pub mod token_keys;
pub mod views;
pub mod writer;

use auth::{AuthSettings, Authenticator};
use config::Config;
use did_core::{Ledger, Limits};
use identity::{Genesis, GenesisFile as _, Member};
use limits::PrefixLimiter;
use metrics::Metrics;
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
    #[error(transparent)]
    Providers(#[from] federation::config::ConfigError),
    #[error(transparent)]
    Sms(#[from] sms::config::SmsConfigError),
    #[error("cannot start the ledger writer thread: {0}")]
    Writer(#[source] std::io::Error),
}

/// Everything the handlers share.
pub struct NodeState {
    pub genesis: Genesis,
    /// This node's member entry (its token key).
    pub me: Member,
    /// The node's ID-token keys (RS256, ES256, EdDSA).
    pub token_keys: token_keys::TokenKeys,
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
    /// Proxies whose `X-Forwarded-For` names the client (`--trusted-proxy`).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Header timeout and connection cap of the accept loop.
    pub serve_options: server::ServeOptions,
    /// The OpenID provider's settings and state ([`oidc`]).
    pub oidc: oidc::Oidc,
    /// External providers and federated sign-ins in progress
    /// ([`federation`]).
    pub federation: federation::Federation,
    /// SMS one-time codes and their spend guard ([`sms`]); `None` without
    /// `--sms`.
    pub sms: Option<sms::Sms>,
    /// The peer-to-peer layer, once started (`main` starts it after
    /// `open`; in-process tests run without it).
    pub p2p: std::sync::OnceLock<p2p::Client>,
    /// The data folder's ledger checkpoint ([`storage`]).
    pub checkpoints: storage::Checkpoints,
    /// Ops covered by the newest checkpoint.
    pub checkpointed: std::sync::atomic::AtomicU64,
    /// One checkpoint written at a time.
    checkpoint_lock: std::sync::Mutex<()>,
}

impl NodeState {
    /// Opens (or creates) the data folder, verifies and replays the log.
    pub fn open(config: &Config) -> Result<Arc<NodeState>, NodeError> {
        Self::open_with(config, &storage::Progress::default())
    }

    /// [`Self::open`], reporting how far the ledger has loaded to
    /// `progress` (what `/healthz` shows while the node starts).
    pub fn open_with(
        config: &Config,
        progress: &storage::Progress,
    ) -> Result<Arc<NodeState>, NodeError> {
        // First: a bad providers file stops the node before anything else.
        let federation = federation::Federation::load(config.providers.as_deref())?;
        let sms_config = config.sms.as_deref().map(sms::config::load).transpose()?;
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| NodeError::Config(format!("{}: {e}", dir.display())))?;
        let key = identity::load_or_create_member_key(dir)?;
        let public = did_core::keys::public_of(&key);
        let token_keys = token_keys::TokenKeys::load_or_create(dir)?;
        let genesis = match &config.genesis {
            Some(path) => Genesis::load(path)?,
            None => {
                let path = dir.join(identity::GENESIS_FILE);
                if path.exists() {
                    Genesis::load(&path)?
                } else {
                    let me = token_keys.member_entry("dev");
                    let g = Genesis::new(&config.issuer, vec![me], 1, now())
                        .map_err(identity::IdentityError::from)?;
                    g.save(&path)?;
                    tracing::info!(network = %g.network_id, "created a one-member development network");
                    g
                }
            }
        };
        // By the stable member id: a rotated member's key file holds its
        // new key, which no genesis entry names.
        let me = genesis
            .members
            .iter()
            .find(|m| m.key == public || m.node_did == token_keys.node_did())
            .cloned()
            .unwrap_or_else(|| Member::from_key("observer", public));
        let limits = Limits::default();
        let started = std::time::Instant::now();
        let checkpoints = storage::Checkpoints::open(dir)?;
        let (store, ledger, loaded) = storage::load(
            dir,
            storage::StoreOptions {
                cache_bytes: config.sled_cache_mb.max(1) << 20,
            },
            storage::LedgerBase {
                limits,
                network: Some(genesis.rules()),
            },
            &checkpoints,
            progress,
        )?;
        let counters = oidc::counters::SignCounters::open(&store)?;
        let sms = sms::Sms::open(sms_config, &store)?;
        tracing::info!(
            ops = ledger.len(),
            from_checkpoint = loaded.from_checkpoint,
            replayed = loaded.replayed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "op log verified, ledger loaded"
        );
        let ledger = Arc::new(RwLock::new(ledger));
        let (writer, store) = Writer::start(store, ledger.clone()).map_err(NodeError::Writer)?;
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
        let auth = Authenticator::with_token_keys(
            AuthSettings {
                domain,
                network_id: genesis.network_id.clone(),
                issuer: genesis.issuer.clone(),
                default_audience: config.audience.clone(),
                challenge_ttl: config.challenge_ttl,
                token_ttl: config.token_ttl,
                max_redeemed: 1_000_000,
            },
            token_keys.clone(),
        );
        let oidc = oidc::Oidc::new(
            oidc_settings(config, &genesis.issuer, &public_url, &me.name)?,
            counters,
            now(),
        );
        let state = Arc::new(NodeState {
            genesis,
            me,
            token_keys,
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
            trusted_proxies: config.trusted_proxies.clone(),
            serve_options: serve_options(config),
            oidc,
            federation,
            sms,
            p2p: std::sync::OnceLock::new(),
            checkpoints,
            checkpointed: std::sync::atomic::AtomicU64::new(loaded.from_checkpoint),
            checkpoint_lock: std::sync::Mutex::new(()),
        });
        state.spawn_housekeeping();
        state.spawn_checkpointer(config.checkpoint_every);
        Ok(state)
    }

    /// Writes a checkpoint of the ledger if it grew since the last one
    /// (storage module doc); whether one was written. Blocks while the
    /// ledger state is serialized and written: call it off the async
    /// workers.
    pub fn write_checkpoint(&self) -> Result<bool, storage::StorageError> {
        use std::sync::atomic::Ordering;
        let _one = self
            .checkpoint_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(cp) = storage::take_checkpoint(&self.ledger, &self.store)? else {
            return Ok(false);
        };
        if cp.count == self.checkpointed.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let started = std::time::Instant::now();
        self.checkpoints.write(&cp)?;
        self.checkpointed.store(cp.count, Ordering::Relaxed);
        tracing::info!(
            ops = cp.count,
            bytes = cp.state.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "ledger checkpoint written"
        );
        Ok(true)
    }

    /// Starts the thread that writes a checkpoint every `every` committed
    /// ops (`--checkpoint-every`; 0: only at a clean shutdown). It runs
    /// beside the writer, which waits only while the ledger is serialized.
    /// The thread ends once the state is dropped.
    fn spawn_checkpointer(self: &Arc<Self>, every: u64) {
        if every == 0 {
            return;
        }
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("checkpointer".into())
            .spawn(move || loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
                let Some(state) = weak.upgrade() else { return };
                let count = state.store.read().map(|s| s.count()).unwrap_or(0);
                let last = state
                    .checkpointed
                    .load(std::sync::atomic::Ordering::Relaxed);
                if count >= last.saturating_add(every) {
                    if let Err(e) = state.write_checkpoint() {
                        tracing::warn!(error = %e, "no checkpoint written; the next start replays more of the log");
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the checkpoint thread; checkpoints at shutdown only");
        }
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
        self.oidc.prune(now());
        self.federation.prune(now());
        if let Some(sms) = &self.sms {
            sms.prune(now());
        }
    }

    /// Whether `key` is the token key of a current member.
    pub fn is_member_key(&self, key: &did_core::PublicKey) -> bool {
        self.ledger
            .read()
            .map(|l| l.members().iter().any(|m| &m.key == key))
            .unwrap_or(false)
    }

    /// Whether `key` is a current member's token key, or one a rotation
    /// retired inside the overlap window ([`views::live_member_key`]): what
    /// signs a code or refresh token this node still redeems.
    pub fn is_live_member_key(&self, key: &did_core::PublicKey) -> bool {
        self.ledger
            .read()
            .map(|l| views::live_member_key(&l, key, now()))
            .unwrap_or(false)
    }

    /// Whether this node's Ed25519 key in force is a current member's
    /// (only members issue tokens that verifiers accept; a committed
    /// rotation switches the key at once, [`token_keys`]).
    pub fn is_member(&self) -> bool {
        self.is_member_key(&self.token_keys.ed25519_public())
    }
}

/// The OpenID provider's settings from the flags: the RP ID and the
/// accepted origins (module doc of [`oidc`]).
fn oidc_settings(
    config: &Config,
    issuer: &str,
    public_url: &str,
    node_name: &str,
) -> Result<oidc::OidcSettings, NodeError> {
    let rp_id = match &config.rp_id {
        Some(r) => r.clone(),
        None => oidc::host_of(issuer).ok_or_else(|| {
            NodeError::Config(format!("the issuer {issuer:?} has no host; set --rp-id"))
        })?,
    };
    let mut origins: Vec<String> = vec![];
    for o in oidc::origin_of(issuer)
        .into_iter()
        .chain(oidc::origin_of(public_url))
    {
        if !origins.contains(&o) {
            origins.push(o);
        }
    }
    for o in &config.webauthn_origins {
        // An origin is exactly scheme://host[:port] (RFC 6454 §6.1).
        match oidc::origin_of(o) {
            Some(norm) if norm == o.trim_end_matches('/') => {
                if !origins.contains(&norm) {
                    origins.push(norm);
                }
            }
            _ => {
                return Err(NodeError::Config(format!(
                    "--webauthn-origin {o:?} must be scheme://host[:port], lower case, no path"
                )))
            }
        }
    }
    Ok(oidc::OidcSettings {
        issuer: issuer.to_string(),
        node_url: public_url.to_string(),
        rp_id,
        origins,
        code_ttl: config.code_ttl,
        token_ttl: config.token_ttl,
        node_name: node_name.to_string(),
    })
}

/// The accept loop's limits from the flags.
pub fn serve_options(config: &Config) -> server::ServeOptions {
    server::ServeOptions {
        header_read_timeout: std::time::Duration::from_secs(config.header_read_timeout),
        max_connections: config.max_connections,
        max_connections_per_network: config.max_connections_per_network,
    }
}

/// Serves `routes` on a plain TCP `listener` until `shutdown` completes,
/// with the header timeout and connection cap of [`server`].
pub async fn serve_routes(
    listener: tokio::net::TcpListener,
    routes: server::Routes,
    options: server::ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    // Small JSON answers: without nodelay, Nagle plus delayed ACKs can add
    // tens of milliseconds to a response written in two parts.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    server::serve_on(listener, routes, options, shutdown).await
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
