//! # didmesh-client
//!
//! `didmesh`, the wallet CLI of didmesh: it keeps a user's Ed25519 keys in an
//! encrypted file, signs DID operations (`create`, `update`, `deactivate`)
//! and login challenges, and sends them to a node. It also carries the
//! project's load generator (`didmesh bench`).
//!
//! ## Layout
//!
//! * [`cli`] — the command line (clap derive): every flag and its help.
//! * [`commands`] — what each command does; stdout gets the one value a
//!   script wants, stderr the rest.
//! * [`wallet`] — the wallet file: argon2id + XChaCha20-Poly1305, atomic
//!   writes, mode 0600, zeroized secrets. The file format is in its doc.
//! * [`words`] — recovery words (PGP word list) of a key made on the
//!   browser sign-in page, for `wallet init --recovery-words`.
//! * [`node`] — a typed client of the node's HTTP API; verifies the head op
//!   it builds updates on.
//! * [`login`] — the checks made before signing a challenge (domain, DID,
//!   nonce, audience: EIP-4361-style phishing protection).
//! * [`oidc`] — the OpenID Connect pieces: the sign-in endpoints as a
//!   browser calls them, PKCE, the redirect and ID-token checks, and what
//!   `didmesh approve` checks before it signs.
//! * [`federation`] — `login --via`, `link --via`, `unlink`: sign-in
//!   through an external OpenID provider and the DID's links to accounts
//!   there.
//! * [`mfa`] — multi-factor logins: `did add-key --public-key`, `did
//!   policy`, `mfa add-phone|remove-phone|show`, the factors `login`
//!   collects (a second device's `approve`, an SMS code) and `approve` of a
//!   second factor.
//! * [`rp`] — `didmesh client …` (relying parties on the ledger) and
//!   `didmesh approve`.
//! * [`bench`](mod@bench) — the load generator: one keep-alive hyper connection per
//!   worker, exact percentiles.
//! * [`error`] — the one error type; node errors read
//!   `error: <reason> (<code>, HTTP <status>)`.
//!
//! ## Examples
//!
//! ```text
//! export DIDMESH_NODE=http://127.0.0.1:7001
//! didmesh wallet init                    # asks for a passphrase, prints did:key:z6Mk…
//! didmesh did create                     # prints did:mesh:…
//! didmesh did show                       # W3C resolution result
//! didmesh did add-key --relationship assertion
//! didmesh did rotate                     # new main key; the old one is retired
//! didmesh did add-key --public-key z6Mk… --device phone   # another wallet's key
//! didmesh did policy --factors 2         # then `login` prints `approve: CODE`
//! didmesh mfa add-phone +15550100134     # an SMS factor (number kept in the wallet)
//! TOKEN=$(didmesh login --audience home-api)
//! didmesh get http://127.0.0.1:8080/api/activities/home
//! didmesh did deactivate --yes
//! didmesh bench login --concurrency 32 --duration 10   # node with --auth-rate 0 --ops-rate 0
//! didmesh client register --name "My app" --redirect-uri http://localhost:5000/cb
//! didmesh approve ABCD-EFGH              # a browser sign-in waiting for this wallet
//! didmesh link --via acme                # prints `open: URL`; then `linked: acme`
//! didmesh login --via acme               # prints `open: URL`; then the token
//! didmesh unlink acme
//! ```
//!
//! The passphrase comes from `DIDMESH_PASSPHRASE` or a terminal prompt. Key
//! derivation takes ~100-300 ms by design; `DIDMESH_KDF_FAST=1` makes new
//! wallets cheap to open, for tests only: every use warns on stderr, and the
//! wallet is marked weak (`wallet show` says so).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod bench;
pub mod cli;
pub mod commands;
pub mod error;
pub mod federation;
pub mod login;
pub mod mfa;
pub mod node;
pub mod oidc;
pub mod rp;
pub mod wallet;
pub mod words;

pub use error::ClientError;

/// Unix seconds now (op `created_at`, wallet timestamps).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
