//! Command-line flags of `didmesh` (`didmesh --help`, `didmesh <cmd> --help`).

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

const EXAMPLES: &str = "\
Examples:
  export DIDMESH_NODE=http://127.0.0.1:7001
  didmesh wallet init                      # new wallet, prints its did:key
  didmesh did create                       # registers a did:mesh, prints it
  didmesh did show                         # resolution result of your DID
  didmesh login --audience home-api        # prints an access token
  didmesh get http://127.0.0.1:8080/api/activities/home
  didmesh did add-key --relationship assertion
  didmesh did rotate                       # new main key, old one retired
  didmesh bench login --concurrency 32 --duration 10

Environment:
  DIDMESH_WALLET       wallet file (default ~/.didmesh/wallet.json)
  DIDMESH_PASSPHRASE   wallet passphrase (otherwise asked on the terminal)
  DIDMESH_NODE         node URL (otherwise the node the wallet used last)";

/// didmesh wallet: your keys, your DID on a didmesh network, logins.
///
/// Keys stay in an encrypted wallet file (argon2id + XChaCha20-Poly1305).
/// DID operations are signed here and sent to a node; a login signs the
/// node's challenge after checking it names that node, your DID and the
/// nonce (EIP-4361-style phishing protection).
#[derive(Debug, Parser)]
#[command(name = "didmesh", version, about, long_about, after_help = EXAMPLES)]
pub struct Cli {
    /// Wallet file.
    #[arg(long, global = true, env = "DIDMESH_WALLET", value_name = "FILE")]
    pub wallet: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and inspect the wallet.
    #[command(subcommand)]
    Wallet(WalletCmd),
    /// Register, show, change and deactivate your DID.
    #[command(subcommand)]
    Did(DidCmd),
    /// Log in to a node and print the access token (alone, on stdout).
    Login(LoginArgs),
    /// Log in, then GET a URL with `Authorization: Bearer`.
    ///
    /// The status line goes to stderr, the body to stdout; the exit code is
    /// non-zero unless the status is 2xx.
    Get(GetArgs),
    /// Load generators (not the wallet's keys: fresh in-memory ones).
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Debug, Subcommand)]
pub enum WalletCmd {
    /// Create a wallet with one key and print its did:key.
    Init {
        /// Restore from a 32-byte Ed25519 seed (64 hex digits) instead of
        /// generating a key. It ends up in shell history: prefer a fresh key.
        #[arg(long, value_name = "HEX")]
        seed_hex: Option<String>,
        /// Replace an existing wallet (the old file is renamed to
        /// `<file>.bak-<unix time>`, not deleted).
        #[arg(long)]
        force: bool,
    },
    /// Print the wallet's public keys, did:keys and DID (no passphrase needed).
    Show {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// The node to talk to.
#[derive(Debug, Clone, Args)]
pub struct NodeArg {
    /// Node base URL, e.g. http://127.0.0.1:7001 [default: the node the
    /// wallet used last].
    #[arg(long, env = "DIDMESH_NODE", value_name = "URL")]
    pub node: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RelationshipArg {
    /// Can log in.
    Authentication,
    /// Can sign assertions (credentials).
    Assertion,
    // No `mfa`: nothing enforces a second factor at login yet, so the CLI
    // does not offer a relationship that would only look like protection.
}

impl From<RelationshipArg> for did_core::Relationship {
    fn from(r: RelationshipArg) -> Self {
        match r {
            RelationshipArg::Authentication => did_core::Relationship::Authentication,
            RelationshipArg::Assertion => did_core::Relationship::Assertion,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum DidCmd {
    /// Register a did:mesh whose rotation and authentication key is the
    /// wallet's main key; print the DID (alone, on stdout).
    ///
    /// With --recovery-key, that key (kept in another wallet, offline) is
    /// the highest-priority rotation key and the wallet's main key comes
    /// second: a thief of this wallet can then be locked out for good with
    /// `did recover` (SECURITY.md). Without it, the main key is the only
    /// rotation key.
    Create {
        #[command(flatten)]
        node: NodeArg,
        /// Register a new DID even though the wallet already has a live one
        /// (the old one is forgotten by the wallet, not deactivated).
        #[arg(long)]
        force: bool,
        /// Public key (multibase `z6Mk…`, as `wallet show` prints it) of a
        /// recovery key held in another wallet.
        #[arg(long, value_name = "MULTIBASE")]
        recovery_key: Option<String>,
    },
    /// Settle a DID with its recovery key: run with the wallet that holds
    /// the DID's priority-0 rotation key. Signs, on the DID's genesis, a
    /// state whose rotation keys are [recovery key, NEW_KEY] and whose login
    /// key is NEW_KEY. It outranks everything any lower key ever signed, so
    /// it ends a takeover or a dispute on every node.
    Recover {
        #[command(flatten)]
        node: NodeArg,
        /// The DID to recover.
        #[arg(long)]
        did: String,
        /// The new daily key (multibase), e.g. of a fresh wallet.
        #[arg(long, value_name = "MULTIBASE")]
        new_key: String,
    },
    /// Print a DID's resolution result (pretty JSON).
    Show {
        #[command(flatten)]
        node: NodeArg,
        /// The DID to resolve [default: the wallet's DID].
        did: Option<String>,
    },
    /// Generate a key in the wallet and add it to the DID document.
    AddKey {
        #[command(flatten)]
        node: NodeArg,
        /// Name of the key, also its verification method id (`did#name`)
        /// [default: the next free key-N].
        #[arg(long)]
        name: Option<String>,
        /// Verification relationship(s) of the new key (repeatable).
        #[arg(long, value_enum, default_values_t = [RelationshipArg::Authentication])]
        relationship: Vec<RelationshipArg>,
    },
    /// Replace the main key: a new key takes its place among the rotation
    /// keys (a recovery key above it stays) and becomes the login key; the
    /// old main key leaves the document and is kept in the wallet as
    /// `retired`. Keys added with add-key stay.
    Rotate {
        #[command(flatten)]
        node: NodeArg,
    },
    /// Deactivate the DID for good (no further logins or updates).
    ///
    /// On a terminal it asks for confirmation first, unless --yes.
    Deactivate {
        #[command(flatten)]
        node: NodeArg,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub struct LoginArgs {
    #[command(flatten)]
    pub node: NodeArg,
    /// The relying party the token is for (`aud`) [default: the node's].
    #[arg(long)]
    pub audience: Option<String>,
    /// Log in as this DID [default: the wallet's DID, or the main key's
    /// did:key when the wallet has none]. Must list a wallet key.
    #[arg(long, conflicts_with = "did_key")]
    pub did: Option<String>,
    /// Log in as the main key's did:key even if the wallet has a DID.
    #[arg(long)]
    pub did_key: bool,
}

#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// The URL to GET.
    pub url: String,
    #[command(flatten)]
    pub login: LoginArgs,
}

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Full logins per second (challenge, checks, sign, token).
    ///
    /// Registers --dids DIDs with fresh in-memory keys, then --concurrency
    /// workers, each on its own keep-alive connection, log in back to back
    /// for --duration seconds. Prints a table and, last, one JSON line.
    /// Start the node with `--auth-rate 0 --ops-rate 0`, or its rate limits are measured.
    Login {
        /// Node base URL, e.g. http://127.0.0.1:7001.
        #[arg(long, env = "DIDMESH_NODE", value_name = "URL")]
        node: String,
        /// Workers (and connections).
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// DIDs to register [default: --concurrency].
        #[arg(long)]
        dids: Option<usize>,
        /// Runtime threads [default: number of CPUs].
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Plain GETs per second against one URL (e.g. the home API).
    Home {
        /// The URL to GET.
        #[arg(long)]
        url: String,
        /// Bearer token to send (from `didmesh login`).
        #[arg(long, env = "DIDMESH_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        #[arg(long)]
        threads: Option<usize>,
    },
}
