//! Command-line flags of `didmesh-node`.

use clap::Parser;
use libp2p::Multiaddr;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A didmesh identity node: replicated DID ledger, wallet login, EdDSA tokens.
///
/// A first start with no --genesis creates a one-member development network
/// in --data-dir, so `didmesh-node --data-dir ./data` is enough to begin.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "didmesh-node",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true,
    // A flag given twice takes its last value, so a wrapper (a test
    // harness, a compose file) can override a default it passes itself.
    args_override_self = true
)]
pub struct Config {
    /// Administration commands; without one the node runs.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Folder for the sled ledger, the member key and the genesis.
    #[arg(long, env = "DIDMESH_DATA_DIR", default_value = "./didmesh-data")]
    pub data_dir: PathBuf,

    /// Address the HTTP API listens on.
    #[arg(long, env = "DIDMESH_HTTP_ADDR", default_value = "127.0.0.1:7001")]
    pub http_addr: SocketAddr,

    /// Network genesis file (network id, issuer, members, quorum). Without
    /// it the node uses or creates a development network in --data-dir.
    #[arg(long, env = "DIDMESH_GENESIS")]
    pub genesis: Option<PathBuf>,

    /// Token issuer (`iss`) of a development network this node creates.
    /// With --genesis the genesis's issuer is used.
    #[arg(long, env = "DIDMESH_ISSUER", default_value = "https://didmesh.local")]
    pub issuer: String,

    /// Audience (`aud`) of tokens when the login does not ask for one.
    #[arg(long, env = "DIDMESH_AUDIENCE", default_value = "home-api")]
    pub audience: String,

    /// Public base URL of this node (discovery document, login domain).
    /// Default: http://<http-addr>, or https://<http-addr> with --tls-cert.
    #[arg(long, env = "DIDMESH_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// External OpenID providers users may sign in through ("Continue with
    /// NAME"): a TOML file of `[[provider]]` tables (name, display_name,
    /// issuer, client_id, client_secret or client_secret_file, optional
    /// scopes and algs). Each provider must allow this node's callback URL
    /// PUBLIC/federation/NAME/callback as a redirect URI, where PUBLIC is
    /// --public-url (each node has its own: a flow's state stays at the
    /// node that started it). A bad file stops the node at start; SIGHUP
    /// reloads it (a bad reload keeps the providers in force).
    #[arg(long, env = "DIDMESH_PROVIDERS", value_name = "FILE")]
    pub providers: Option<PathBuf>,

    /// Lifetime of access tokens (DID logins and OpenID), in seconds.
    /// Short (15 minutes) because a revocation reaches verifiers that do
    /// not follow the feed only when the token expires (issue 13).
    #[arg(long, default_value_t = 900)]
    pub token_ttl: u64,

    /// Lifetime of login challenges, in seconds.
    #[arg(long, default_value_t = 120)]
    pub challenge_ttl: u64,

    /// SMS one-time codes, a login factor for DIDs that commit to a phone:
    /// a TOML file with the Twilio account (api_base, account_sid,
    /// auth_token or auth_token_file, from), monthly_budget, allow_prefixes,
    /// a [prices] table (prefix = price per message) and the caps (README,
    /// "SMS codes"). SMS costs money: the node refuses to send beyond the
    /// budget and the caps. Without it the SMS factor is off.
    #[arg(long, env = "DIDMESH_SMS", value_name = "FILE")]
    pub sms: Option<PathBuf>,

    /// Lifetime of OpenID authorization codes, in seconds (RFC 6749
    /// §4.1.2: short; single use is enforced by the issuing node).
    #[arg(long, env = "DIDMESH_CODE_TTL", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub code_ttl: u64,

    /// WebAuthn relying-party id passkeys are bound to (a host name, never
    /// an IP address). Default: the host of the network's issuer.
    #[arg(long, env = "DIDMESH_RP_ID")]
    pub rp_id: Option<String>,

    /// An origin (scheme://host[:port]) the sign-in page may run on, for
    /// WebAuthn and CORS, besides the issuer's origin and this node's own,
    /// which are always accepted (repeatable; the env variable takes a
    /// comma-separated list).
    #[arg(
        long = "webauthn-origin",
        env = "DIDMESH_WEBAUTHN_ORIGINS",
        value_delimiter = ','
    )]
    pub webauthn_origins: Vec<String>,

    /// Login requests (challenge and token together) per second allowed
    /// per client network (an IPv4 /24 or an IPv6 /64; bursts of twice
    /// that); 0 turns the limit off (load tests only).
    #[arg(long, env = "DIDMESH_AUTH_RATE", default_value_t = 50)]
    pub auth_rate: u32,

    /// `POST /v1/ops` requests per second allowed per client network (an
    /// IPv4 /24 or an IPv6 /64; bursts of five times that). Every accepted
    /// op is kept by every node forever, so this bounds how fast a stranger
    /// can grow the ledger. 0 turns the limit off (benchmarks, bulk loads).
    #[arg(long, env = "DIDMESH_OPS_RATE", default_value_t = 10)]
    pub ops_rate: u32,

    /// `Cache-Control: max-age` of the JWKS, in seconds: how long a relying
    /// party may keep using the key of a member that has been removed.
    #[arg(long, env = "DIDMESH_JWKS_MAX_AGE", default_value_t = 30)]
    pub jwks_max_age: u64,

    /// Seconds a client has to send a request's headers (also how long an
    /// idle keep-alive connection is kept); a slower connection is closed.
    #[arg(long, env = "DIDMESH_HEADER_READ_TIMEOUT", default_value_t = 10)]
    pub header_read_timeout: u64,

    /// HTTP connections served at once; further connections wait in the
    /// kernel's accept queue until one closes.
    #[arg(long, env = "DIDMESH_MAX_CONNECTIONS", default_value_t = 512)]
    pub max_connections: usize,

    /// HTTP connections one client network (IPv4 /24, IPv6 /64) may hold
    /// open at once; a connection beyond that is closed at once, so a few
    /// networks cannot take every --max-connections slot.
    #[arg(
        long,
        env = "DIDMESH_MAX_CONNECTIONS_PER_NETWORK",
        default_value_t = 64
    )]
    pub max_connections_per_network: usize,

    /// Address of a reverse proxy or front door in front of this node
    /// (repeatable; env comma-separated). For requests from these addresses
    /// only, the last `X-Forwarded-For` entry (the address the proxy saw,
    /// which it appends) is the client for rate limits; everyone else's
    /// `X-Forwarded-For` is ignored, so it cannot be spoofed. List only
    /// proxies that append the real peer (Envoy `use_remote_address`).
    #[arg(
        long = "trusted-proxy",
        env = "DIDMESH_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<std::net::IpAddr>,

    /// Address the peer-to-peer layer (libp2p: TCP, noise, yamux) listens
    /// on. Loopback by default, like --http-addr; use /ip4/0.0.0.0/tcp/7101
    /// to accept peers from other hosts. Port 0 picks a free port; the
    /// addresses actually used are in /v1/status `listen_addrs`.
    #[arg(
        long,
        env = "DIDMESH_P2P_ADDR",
        default_value = "/ip4/127.0.0.1/tcp/7101"
    )]
    pub p2p_addr: Multiaddr,

    /// A peer to connect to at start, by address or by name:
    /// /ip4/192.0.2.7/tcp/7101/p2p/12D3KooW… or /dns4/node1/tcp/7101 (the
    /// /p2p/<peer id> part is optional; repeatable; the env variable takes
    /// a comma-separated list). More peers are learned from them. A name is
    /// resolved again (hosts file, then DNS) each time the peer is redialed,
    /// so a peer that comes back at a new address is found again.
    #[arg(long = "bootstrap", env = "DIDMESH_BOOTSTRAP", value_delimiter = ',')]
    pub bootstrap: Vec<Multiaddr>,

    /// An address other nodes should dial to reach this one, e.g.
    /// /dns4/node1/tcp/7101 or /ip4/203.0.113.5/tcp/7101 behind NAT or in a
    /// container (repeatable; env comma-separated). When given, peers are
    /// told these addresses (identify, hence Kademlia) instead of the
    /// --p2p-addr interfaces.
    #[arg(long = "announce", env = "DIDMESH_ANNOUNCE", value_delimiter = ',')]
    pub announce: Vec<Multiaddr>,

    /// Milliseconds between anti-entropy rounds with a random peer.
    #[arg(long, env = "DIDMESH_SYNC_INTERVAL_MS", default_value_t = 2000)]
    pub sync_interval_ms: u64,

    /// sled's page cache for the op log and op bodies, in MiB: bounds
    /// what the database holds in memory (op bodies are read from disk
    /// beyond it).
    #[arg(long, env = "DIDMESH_SLED_CACHE_MB", default_value_t = crate::storage::DEFAULT_CACHE_MB)]
    pub sled_cache_mb: u64,

    /// Write a ledger checkpoint every this many committed ops (and at a
    /// clean shutdown), so a restart replays only the log after it; 0:
    /// only at shutdown.
    #[arg(long, env = "DIDMESH_CHECKPOINT_EVERY", default_value_t = 50_000)]
    pub checkpoint_every: u64,

    /// Run without the peer-to-peer layer (a lone node; nothing replicates).
    #[arg(long)]
    pub no_p2p: bool,

    /// Serve the HTTP API over HTTPS with this PEM certificate chain (leaf
    /// first); needs --tls-key. The default --public-url becomes
    /// https://<http-addr>.
    #[arg(
        long,
        env = "DIDMESH_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "DIDMESH_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
}

impl Config {
    /// `https` when the API is served over TLS (--tls-cert), else `http`.
    pub fn url_scheme(&self) -> &'static str {
        if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// Network administration.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Write a network genesis and one data folder per founding node.
    ///
    /// DIR/genesis.json names the network (id, issuer, members, quorum);
    /// DIR/node1 … DIR/nodeN each hold a member key and a copy of the
    /// genesis: start node i with `--data-dir DIR/nodei`.
    InitNetwork {
        /// Number of founding member nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Output folder (must not hold a genesis already).
        #[arg(long)]
        out: PathBuf,
        /// Token issuer (`iss`) of the network.
        #[arg(long, default_value = "https://didmesh.local")]
        issuer: String,
        /// Member signatures needed to add or remove a member
        /// (default: a majority of the founders).
        #[arg(long)]
        quorum: Option<usize>,
        /// Seconds a member key replaced by member-rotate stays in the
        /// JWKS (at least the longest token lifetime).
        #[arg(long, default_value_t = did_core::member::DEFAULT_KEY_OVERLAP_SECS)]
        key_overlap_secs: u64,
    },
    /// Print a node's member entry (name, Ed25519 key, RS256 and ES256
    /// ID-token keys) as one line of JSON, for `member-add --member-entry`.
    /// Keys missing from the folder are created, as the node's first start
    /// would.
    MemberEntry {
        /// The node's data folder (must exist).
        #[arg(long)]
        data_dir: PathBuf,
        /// Label of the member.
        #[arg(long, default_value = "member")]
        name: String,
    },
    /// Add a member: builds a member-add op on the current membership head,
    /// signs it with the member keys of the given data folders (a quorum)
    /// and submits it to a node.
    MemberAdd(MemberChange),
    /// Remove a member, the same way.
    MemberRemove(MemberChange),
    /// Prepare a rotation of this node's three token keys: makes new keys
    /// in DATA_DIR/pending-keys/ and prints the entry (same node_did) for
    /// `member-rotate --member-entry`. The node switches to them once the
    /// member-rotate op commits.
    MemberRotateKeys {
        /// The node's data folder.
        #[arg(long)]
        data_dir: PathBuf,
        /// Label of the member.
        #[arg(long, default_value = "member")]
        name: String,
    },
    /// Rotate a member's token keys: a member-rotate op carrying the entry
    /// `member-rotate-keys` printed (or `--member DATA_DIR` of the rotating
    /// node), signed by a quorum.
    MemberRotate(MemberChange),
    /// Revoke every session of a DID issued before a time, by a member
    /// quorum (a member-revoke op).
    MemberRevoke(MemberRevokeArgs),
}

/// Arguments of `member-revoke`.
#[derive(Debug, Clone, clap::Args)]
pub struct MemberRevokeArgs {
    /// A node of the network (its HTTP base URL).
    #[arg(long)]
    pub node: String,
    /// The DID whose sessions are revoked (`did:mesh:…`).
    #[arg(long)]
    pub did: String,
    /// Revoke sessions issued before this unix time (default: now).
    #[arg(long)]
    pub before: Option<u64>,
    /// Data folder of a current member whose key signs (repeat until the
    /// quorum is reached).
    #[arg(long = "sign-with", required = true)]
    pub sign_with: Vec<PathBuf>,
}

/// Arguments of a membership change.
#[derive(Debug, Clone, clap::Args)]
pub struct MemberChange {
    /// A node of the network (its HTTP base URL).
    #[arg(long)]
    pub node: String,
    /// The member's token-signing key, multibase (`z6Mk…`; no ID-token
    /// keys then), or its data folder (member-add: with the RS256/ES256
    /// keys there, created if missing).
    #[arg(
        long,
        required_unless_present = "member_entry",
        conflicts_with = "member_entry"
    )]
    pub member: Option<String>,
    /// The member entry `didmesh-node member-entry` printed: the JSON
    /// itself or a file holding it.
    #[arg(long, value_name = "FILE_OR_JSON")]
    pub member_entry: Option<String>,
    /// Label of the member (default: the entry's name, else `member`).
    #[arg(long)]
    pub name: Option<String>,
    /// Data folder of a current member whose key signs (repeat until the
    /// quorum is reached).
    #[arg(long = "sign-with", required = true)]
    pub sign_with: Vec<PathBuf>,
    /// member-remove only: allow shrinking the network to a size where
    /// losing one more member key would freeze membership (signed into
    /// the op; every node checks it).
    #[arg(long)]
    pub force: bool,
}
