//! The OpenID provider of a node (OpenID Connect Core 1.0, authorization
//! code flow; RFC 6749, RFC 7636 PKCE, RFC 9207 `iss`). Every member node
//! is a provider for the network's one issuer: clients are registered on
//! the ledger (a DID's `clients`, [`did_core::client`]), so any node knows
//! every client, and no node keeps a session.
//!
//! ```text
//!  RP ── GET /oidc/authorize ──► node: checks, sign-in page + request handle
//!  page ── POST /oidc/signin/challenge {request, did | passkey} ──► login challenge
//!  page ── POST /oidc/signin/complete {request, nonce, signature | assertion}
//!       ──► {redirect: redirect_uri?code&state&iss}
//!  RP ── POST /oidc/token (code, PKCE verifier, client auth) ──► any node:
//!       id_token + access_token, after the issuing node consumed the code
//!  RP ── GET /oidc/userinfo (Bearer) ──► {sub}
//! ```
//!
//! * [`request`] — the authorization request handle (MAC under a node secret).
//! * [`authorize`] — `GET /oidc/authorize`: validation, error redirects, the page.
//! * [`signin`] — the page's challenge/complete calls (browser key, passkeys).
//! * [`counters`] — passkey sign counters, durable in the node's sled.
//! * [`code`] — authorization codes signed by the member key.
//! * [`consume`] — single use of codes across nodes (libp2p).
//! * [`pending`] — sign-ins approved from the CLI wallet.
//! * [`token`] — `POST /oidc/token` (codes and refresh tokens), the ID
//!   token, and `POST /oidc/revoke` (RFC 7009).
//! * [`refresh`] — refresh tokens signed by the member key, rotated on use.
//! * [`userinfo`] — `GET|POST /oidc/userinfo`.

pub mod authorize;
pub mod code;
pub mod consume;
pub mod counters;
pub mod pending;
pub mod refresh;
pub mod request;
pub mod signin;
pub mod token;
pub mod userinfo;

use crate::NodeState;
use axum::http::{header, HeaderValue, Method};
use axum::routing::{get, post};
use axum::Router;
use did_core::client::ClientReg;
use std::sync::Arc;
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Lifetime of an authorization request handle (the sign-in page), seconds.
pub const REQUEST_TTL: u64 = 600;

/// Fixed settings of the provider, from the flags.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// The network's issuer (`iss`), the same on every node.
    pub issuer: String,
    /// This node's own base URL (`node_url` of the page).
    pub node_url: String,
    /// WebAuthn RP ID (`--rp-id`, default the issuer's host).
    pub rp_id: String,
    /// Origins the page may run on: the issuer's, this node's own and every
    /// `--webauthn-origin`. WebAuthn assertions must come from one of them,
    /// and only they get CORS answers.
    pub origins: Vec<String>,
    /// Life of an authorization code, seconds (`--code-ttl`).
    pub code_ttl: u64,
    /// Life of access and ID tokens, seconds (`--token-ttl`).
    pub token_ttl: u64,
    /// This node's member name (shown on the page).
    pub node_name: String,
}

/// The provider's state in [`NodeState::oidc`].
pub struct Oidc {
    pub settings: OidcSettings,
    /// This node's used codes ([`consume`]).
    pub used_codes: consume::UsedCodes,
    /// Sign-ins waiting for `didmesh approve` ([`pending`]).
    pub pending: pending::PendingLogins,
    pub counters: counters::SignCounters,
    /// The revocation feed ([`crate::revocations`]), started with the
    /// router. Kept here so the token endpoints reach it.
    pub revocations: std::sync::OnceLock<Arc<crate::revocations::Feed>>,
}

impl Oidc {
    pub fn new(settings: OidcSettings, counters: counters::SignCounters, started_at: u64) -> Oidc {
        Oidc {
            settings,
            used_codes: consume::UsedCodes::new(started_at),
            pending: pending::PendingLogins::default(),
            counters,
            revocations: std::sync::OnceLock::new(),
        }
    }

    /// Drops expired used codes (the node's housekeeping timer; pending
    /// sign-ins prune themselves as new ones arrive).
    pub fn prune(&self, now: u64) {
        self.used_codes.prune(now);
        self.pending.prune(now);
    }
}

/// `scheme://host[:port]` of an absolute URL, lower-cased scheme and host
/// (RFC 6454 serialization; default ports are kept as written).
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if scheme.is_empty() || authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(format!(
        "{}://{}",
        scheme.to_ascii_lowercase(),
        authority.to_ascii_lowercase()
    ))
}

/// The host of an absolute URL, without port or IPv6 brackets.
pub fn host_of(url: &str) -> Option<String> {
    let origin = origin_of(url)?;
    let authority = origin.split_once("://")?.1;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    Some(host.to_string())
}

/// Why a client id names no usable client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("client_id is not a didmesh client id")]
    Malformed,
    #[error("no client with this client_id is registered")]
    Unknown,
    #[error("the DID that registered this client is deactivated or disputed")]
    OwnerUnavailable,
    #[error("ledger busy")]
    Busy,
}

/// The registered client `client_id` names, as the ledger says now. A
/// client of a deactivated or disputed DID is refused: its owner's keys
/// are not trusted, so neither are its redirect URIs.
pub fn find_client(state: &NodeState, client_id: &str) -> Result<ClientReg, ClientError> {
    let (did, entry) =
        did_core::client::parse_client_id(client_id).ok_or(ClientError::Malformed)?;
    let ledger = state.ledger.read().map_err(|_| ClientError::Busy)?;
    let view = ledger.resolve(&did).ok_or(ClientError::Unknown)?;
    if view.disputed.is_some() {
        return Err(ClientError::OwnerUnavailable);
    }
    let owner = view.state.ok_or(ClientError::OwnerUnavailable)?;
    owner.client(entry).cloned().ok_or(ClientError::Unknown)
}

/// The provider's routes (merged by [`crate::api::router`]); `limited`
/// wraps the browser-facing ones in the per-network login limiter.
///
/// CORS of the routes the sign-in page calls ([`page_cors`]).
pub fn routes(
    state: &Arc<NodeState>,
    limited: impl Fn(Router<Arc<NodeState>>) -> Router<Arc<NodeState>>,
) -> Router<Arc<NodeState>> {
    let cors = page_cors(state);
    let signin = Router::new()
        .route("/oidc/signin/challenge", post(signin::challenge))
        .route("/oidc/signin/complete", post(signin::complete));
    let browser =
        limited(signin.merge(Router::new().route("/oidc/authorize", get(authorize::authorize))))
            .merge(pending::routes())
            .layer(cors);
    Router::new()
        .route("/oidc/token", post(token::token))
        .route("/oidc/revoke", post(token::revoke))
        .route(
            "/oidc/userinfo",
            get(userinfo::userinfo).post(userinfo::userinfo),
        )
        .route("/oidc/static/signin.js", get(authorize::script))
        .route("/oidc/static/signin.css", get(authorize::style))
        .merge(browser)
}

/// CORS for the routes the sign-in page calls. The page's JSON calls go to
/// `node_url`, which differs from the page's origin behind a front door, so
/// those routes answer the accepted origins (the issuer's, this node's,
/// `--webauthn-origin`) and no other: another site's script cannot drive a
/// sign-in from a visitor's browser.
pub fn page_cors(state: &NodeState) -> CorsLayer {
    let origins: Vec<HeaderValue> = state
        .oidc
        .settings
        .origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600))
}
