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
  didmesh did add-key --public-key z6Mk… --device phone   # another wallet's key
  didmesh did policy --factors 2           # logins need two factors from now on
  didmesh mfa add-phone +15550100134       # commit a number for SMS codes
  didmesh bench login --concurrency 32 --duration 10
  didmesh client register --name 'My app' --redirect-uri https://app.example/cb --confidential
  didmesh approve ABCD-EFGH                # sign a browser sign-in waiting for this wallet
  didmesh link --via acme                  # link your account at provider acme (prints `open: URL`)
  didmesh login --via acme                 # sign in through acme: no wallet needed
  didmesh unlink acme                      # remove that link again

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
    /// Second factors: phone numbers for SMS codes, and what a login of
    /// your DID needs.
    #[command(subcommand)]
    Mfa(MfaCmd),
    /// Log in to a node and print the access token (alone, on stdout).
    ///
    /// When the DID's login policy needs more than this wallet's key: a
    /// second device prints `approve: CODE` on stdout and waits (up to the
    /// challenge's life, 2 minutes) for `didmesh --wallet OTHER approve
    /// CODE --node URL`; an SMS code prints `sms code sent to +1******34`
    /// on stderr and reads the 6-digit code from one line of stdin.
    Login(LoginArgs),
    /// Log in, then GET a URL with `Authorization: Bearer`.
    ///
    /// The status line goes to stderr, the body to stdout; the exit code is
    /// non-zero unless the status is 2xx.
    Get(GetArgs),
    /// OpenID relying parties ("clients") owned by your DID.
    #[command(subcommand)]
    Client(ClientCmd),
    /// Approve a browser sign-in that waits for this wallet: the sign-in
    /// page shows a code, this command shows which app and redirect target
    /// it is for, asks, and signs. Also approves a second factor: the code
    /// `didmesh login` prints (`approve: CODE`) when the DID's login policy
    /// needs another key, held by this wallet.
    ///
    /// Only approve a code you asked for yourself, on a page you opened:
    /// someone who sends you a code is asking you to sign in to THEIR
    /// browser session as you (device-code phishing).
    Approve(ApproveArgs),
    /// Link your DID to your account at an external OpenID provider the
    /// nodes are configured with, so that `login --via NAME` signs in as it.
    ///
    /// Prints `open: URL` on a line of its own: open it in your browser and
    /// sign in at the provider. The node verifies that sign-in and attests
    /// the link; this command checks the attestation (a current member's
    /// signature over your DID) and adds the link with an update signed by
    /// your main key, then prints `linked: NAME`. The ledger holds only a
    /// commitment to your account, never its identifier (README.md).
    Link(LinkArgs),
    /// Remove a link made with `link --via` (an update signed by your main
    /// key); every node that holds the op refuses that account at once.
    /// Prints `unlinked: ID`.
    Unlink(UnlinkArgs),
    /// Revoke your DID's sessions with an update signed by your main key:
    /// `--everywhere` revokes every token issued until now (at every node
    /// and every verifier that follows a revocation feed), `--jti ID` one
    /// token (an access token's `jti`, or a refresh token's id). Prints the
    /// op's CID. A login after `--everywhere` works from the next second.
    SignOut(SignOutArgs),
    /// Load generators (not the wallet's keys: fresh in-memory ones).
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Debug, Clone, Args)]
pub struct SignOutArgs {
    #[command(flatten)]
    pub node: NodeArg,
    /// Revoke every token of the DID issued before the next second.
    #[arg(long)]
    pub everywhere: bool,
    /// Revoke the token with this id (repeatable).
    #[arg(long, value_name = "ID")]
    pub jti: Vec<String>,
    /// Expiry of the `--jti` tokens (unix seconds), after which the entry
    /// is dropped [default: 30 days from now, the longest token life].
    #[arg(long, value_name = "UNIX")]
    pub exp: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum WalletCmd {
    /// Create a wallet with one key and print its did:key.
    Init {
        /// Restore from a 32-byte Ed25519 seed (64 hex digits) instead of
        /// generating a key. It ends up in shell history: prefer a fresh key.
        #[arg(long, value_name = "HEX")]
        seed_hex: Option<String>,
        /// Restore the recovery key of a DID made on the browser sign-in
        /// page from its 32 recovery words, in order (any spacing or case).
        /// `-` reads them from stdin, which keeps them out of shell
        /// history; prefer it. Prints the key to compare with the DID's
        /// rotation_keys[0].
        #[arg(long, value_name = "WORDS", conflicts_with = "seed_hex")]
        recovery_words: Option<String>,
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
    // No `mfa` relationship: what a login needs is the DID's login policy
    // (`did policy`), which counts authentication keys; a relationship
    // nothing enforces would only look like protection.
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
    /// Generate a key in the wallet and add it to the DID document; with
    /// --public-key, add another wallet's key instead (`didmesh wallet
    /// show` there prints it), e.g. your phone's, as a second factor for
    /// `did policy`.
    AddKey {
        #[command(flatten)]
        node: NodeArg,
        /// Add this public key (multibase `z6Mk…`) held by another wallet
        /// instead of generating one here.
        #[arg(long, value_name = "MULTIBASE")]
        public_key: Option<String>,
        /// The device that holds the key (`laptop`, `phone`; 1-32 bytes),
        /// shown when a login asks for that key.
        #[arg(long, value_name = "NAME")]
        device: Option<String>,
        /// Name of the key, also its verification method id (`did#name`)
        /// [default: the next free key-N].
        #[arg(long)]
        name: Option<String>,
        /// Verification relationship(s) of the new key (repeatable).
        #[arg(long, value_enum, default_values_t = [RelationshipArg::Authentication])]
        relationship: Vec<RelationshipArg>,
    },
    /// Set what a login of your DID needs: N distinct factors out of the
    /// listed ones (entry ids: authentication keys, passkeys, phones,
    /// linked accounts; all of them when none is listed). Every node
    /// checks it at login. `--factors 1` without --factor removes the
    /// policy: any one key signs in, as before.
    ///
    /// A policy must count a key or passkey, may not need more factors
    /// than it counts, and a one-factor policy cannot count a phone.
    /// Prints the resulting requirement as JSON.
    Policy {
        #[command(flatten)]
        node: NodeArg,
        /// Distinct factors a login needs (1-5).
        #[arg(long, value_name = "N")]
        factors: u8,
        /// An entry id that counts (repeatable) [default: all].
        #[arg(long = "factor", value_name = "ID")]
        factor: Vec<String>,
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
    /// Sign in through the external OpenID provider NAME (as the node's
    /// operator names it) instead of with a wallet key: prints `open: URL`
    /// for your browser, waits up to 10 minutes for the sign-in there, then
    /// prints the token. The account must be linked to a DID (`didmesh link
    /// --via NAME`). Needs no wallet.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["audience", "did", "did_key"])]
    pub via: Option<String>,
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
    /// When the login policy counts both another device's key and a phone
    /// this wallet knows, use the SMS code [default: the other device,
    /// which cannot be phished by a SIM swap and costs the node nothing].
    #[arg(long)]
    pub sms: bool,
}

#[derive(Debug, Subcommand)]
pub enum MfaCmd {
    /// Commit a phone number for SMS codes: the DID gets only a salted
    /// hash of it (a signed update); the number and the salt stay in the
    /// wallet, encrypted. Prints the phone's entry id. Count it with `did
    /// policy` (e.g. `--factors 2 --factor key-1 --factor phone-1`).
    AddPhone {
        /// E.164 number: `+`, country code, number (spaces and dashes are
        /// dropped).
        number: String,
        #[command(flatten)]
        node: NodeArg,
        /// Entry id within your DID [default: phone-1, phone-2, …].
        #[arg(long, value_name = "ENTRY")]
        id: Option<String>,
    },
    /// Remove a committed phone from the DID and the wallet.
    RemovePhone {
        /// The phone's entry id.
        id: String,
        #[command(flatten)]
        node: NodeArg,
    },
    /// Show the DID's login policy and its phones (numbers masked, from
    /// this wallet).
    Show {
        #[command(flatten)]
        node: NodeArg,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub struct LinkArgs {
    /// The provider's name, as the node's operator configured it.
    #[arg(long, value_name = "NAME")]
    pub via: String,
    #[command(flatten)]
    pub node: NodeArg,
    /// Entry id of the link within your DID ([A-Za-z0-9_-], 1-32)
    /// [default: the provider's name, or NAME-2, …].
    #[arg(long, value_name = "ENTRY")]
    pub id: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct UnlinkArgs {
    /// The link's entry id, or the provider's name when your DID has one
    /// link there.
    pub name: String,
    #[command(flatten)]
    pub node: NodeArg,
}

#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// The URL to GET.
    pub url: String,
    #[command(flatten)]
    pub login: LoginArgs,
}

/// `--id-token-alg` values (OpenID Connect `id_token_signed_response_alg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IdTokenAlgArg {
    /// RSA PKCS#1 v1.5 + SHA-256: the OpenID Connect default, accepted by
    /// every relying-party library.
    #[value(name = "RS256")]
    Rs256,
    /// ECDSA P-256 + SHA-256 (AWS Cognito, Auth0).
    #[value(name = "ES256")]
    Es256,
    /// Ed25519.
    #[value(name = "EdDSA")]
    EdDsa,
}

impl From<IdTokenAlgArg> for did_core::client::IdTokenAlg {
    fn from(a: IdTokenAlgArg) -> Self {
        match a {
            IdTokenAlgArg::Rs256 => did_core::client::IdTokenAlg::RS256,
            IdTokenAlgArg::Es256 => did_core::client::IdTokenAlg::ES256,
            IdTokenAlgArg::EdDsa => did_core::client::IdTokenAlg::EdDSA,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ClientCmd {
    /// Register a relying party under your DID (a signed update of the DID)
    /// and print `client_id: ID` and, with --confidential,
    /// `client_secret: SECRET`, each on a line of its own.
    ///
    /// The secret is printed once and kept nowhere: the ledger holds only
    /// its hash. Lose it and `client update ID --rotate-secret` makes a new
    /// one.
    Register {
        #[command(flatten)]
        node: NodeArg,
        /// Name shown on the sign-in page (1-64 bytes).
        #[arg(long)]
        name: String,
        /// Exact redirect URI (repeatable, at most 5): https, or http on
        /// localhost, 127.0.0.1 or [::1].
        #[arg(long = "redirect-uri", value_name = "URI", required = true)]
        redirect_uris: Vec<String>,
        /// A confidential client (a server that keeps a secret); without
        /// it the client is public and must use PKCE.
        #[arg(long)]
        confidential: bool,
        /// ID-token signing algorithm.
        #[arg(long, value_enum, default_value = "RS256")]
        id_token_alg: IdTokenAlgArg,
        /// Entry id within your DID ([A-Za-z0-9_-], 1-32) [default: from
        /// the name, or c1, c2, …].
        #[arg(long, value_name = "ENTRY")]
        id: Option<String>,
    },
    /// Print registered clients as JSON: all of your DID's, or one by id
    /// (anyone's).
    Show {
        #[command(flatten)]
        node: NodeArg,
        /// A client id (`<DID suffix>.<entry>`).
        client_id: Option<String>,
    },
    /// Change one of your clients; options left out stay as they are.
    Update {
        /// The client id.
        client_id: String,
        #[command(flatten)]
        node: NodeArg,
        /// New display name.
        #[arg(long)]
        name: Option<String>,
        /// Replace the redirect URIs with these (repeatable).
        #[arg(long = "redirect-uri", value_name = "URI")]
        redirect_uris: Vec<String>,
        /// New ID-token signing algorithm.
        #[arg(long, value_enum)]
        id_token_alg: Option<IdTokenAlgArg>,
        /// Draw a new secret and print it (`client_secret: SECRET`); the
        /// old one stops working. Makes a public client confidential.
        #[arg(long)]
        rotate_secret: bool,
    },
    /// Remove one of your clients (sign-ins to it stop at once).
    Delete {
        /// The client id.
        client_id: String,
        #[command(flatten)]
        node: NodeArg,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ApproveArgs {
    /// The code the sign-in page shows (`XXXX-XXXX`).
    pub code: String,
    #[command(flatten)]
    pub node: NodeArg,
    /// Do not ask `approve? [y/N]` (scripts; you still must have asked for
    /// the code yourself).
    #[arg(long)]
    pub yes: bool,
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
    /// Full OpenID Connect code flows per second against one node.
    ///
    /// Each flow: GET /oidc/authorize (PKCE S256, state, nonce), read the
    /// sign-in page's request, POST /oidc/signin/challenge, sign with a
    /// fresh in-memory DID key (the browser's part), POST
    /// /oidc/signin/complete, check the redirect's state and iss, POST
    /// /oidc/token, verify the ID token against the node's JWKS (signature,
    /// iss, aud, nonce). Registers --dids DIDs first. The client must be
    /// registered (`didmesh client register`) with --redirect-uri among its
    /// redirect URIs. Start the node with `--auth-rate 0 --ops-rate 0`.
    Oidc {
        /// Node base URL, e.g. http://127.0.0.1:7001.
        #[arg(long, env = "DIDMESH_NODE", value_name = "URL")]
        node: String,
        /// The client id (`didmesh client register` printed it).
        #[arg(long)]
        client_id: String,
        /// One of the client's registered redirect URIs.
        #[arg(long)]
        redirect_uri: String,
        /// The client's secret (confidential clients; sent with HTTP Basic).
        /// Without it the flow is a public client's (PKCE only).
        #[arg(long, env = "DIDMESH_CLIENT_SECRET", hide_env_values = true)]
        client_secret: Option<String>,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// DIDs to register [default: --concurrency].
        #[arg(long)]
        dids: Option<usize>,
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
