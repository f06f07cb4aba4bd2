//! Command-line flags of `didmesh-node`.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A didmesh identity node: replicated DID ledger, wallet login, EdDSA tokens.
///
/// A first start with no --genesis creates a one-member development network
/// in --data-dir, so `didmesh-node --data-dir ./data` is enough to begin.
#[derive(Debug, Clone, Parser)]
#[command(name = "didmesh-node", version, about, long_about)]
pub struct Config {
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
    /// Default: http://<http-addr>.
    #[arg(long, env = "DIDMESH_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Lifetime of access tokens, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub token_ttl: u64,

    /// Lifetime of login challenges, in seconds.
    #[arg(long, default_value_t = 120)]
    pub challenge_ttl: u64,

    /// Login requests per second allowed per client address (bursts of
    /// twice that); 0 turns the limit off (load tests only).
    #[arg(long, env = "DIDMESH_AUTH_RATE", default_value_t = 50)]
    pub auth_rate: u32,
}
