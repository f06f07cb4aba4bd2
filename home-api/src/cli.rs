//! Command-line flags (each also read from a `HOME_API_*` environment
//! variable), the start-up checks, and turning them into an [`Auth`].

use std::net::SocketAddr;
use std::time::Duration;

use auth_layer::{
    AuthLayer, AuthMode, JwksCache, JwksConfig, JwksError, TokenVerifier, TrustedHeaderLayer,
    VerifierConfig, DEFAULT_TRUSTED_HEADER,
};
use axum::http::HeaderName;
use clap::{Parser, ValueEnum};

use crate::{AppOptions, Auth};

/// How `home-api` authenticates requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthKind {
    /// Verify `Authorization: Bearer` JWTs in-process against the JWKS.
    Jwt,
    /// Trust the claims header set by a verifying sidecar (Envoy jwt_authn
    /// `forward_payload_header`). Requires a loopback --listen.
    Sidecar,
    /// No authentication (benchmark baseline only; never in production).
    Off,
}

const AFTER_HELP: &str = "\
Examples:
  home-api --listen 127.0.0.1:8080 \\
      --jwks-url http://127.0.0.1:7001/.well-known/jwks.json \\
      --issuer https://didmesh.local --audience home-api
  home-api --auth sidecar --listen 127.0.0.1:8081   # behind Envoy

Revocation: in jwt mode home-api follows the JWKS node's /v1/revocations
(signed long-poll feed) unless --no-revocations; --revocations URL picks
another node.

Endpoints: GET /api/activities/home, GET /healthz.
Logs: RUST_LOG (default info), to stderr.";

/// home-api: the didmesh example application ("home activities").
///
/// Serves GET /api/activities/home: public activities for everyone, plus the
/// caller's private activity and DID when the request carries a valid didmesh
/// token. An invalid, expired, forged or wrong-audience token gets a 401 with
/// `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750).
#[derive(Debug, Clone, Parser)]
#[command(name = "home-api", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Address to listen on (IP:port). With --auth sidecar it must be a
    /// loopback address, so that only the sidecar can reach the app.
    #[arg(long, env = "HOME_API_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// How requests are authenticated.
    #[arg(long, env = "HOME_API_AUTH", value_enum, default_value_t = AuthKind::Jwt)]
    pub auth: AuthKind,

    /// JWKS URL of the didmesh network (any node's /.well-known/jwks.json).
    /// Required with --auth jwt.
    #[arg(long, env = "HOME_API_JWKS_URL")]
    pub jwks_url: Option<String>,

    /// Expected token issuer (`iss`), the network's issuer string. Required
    /// with --auth jwt.
    #[arg(long, env = "HOME_API_ISSUER")]
    pub issuer: Option<String>,

    /// Expected token audience (`aud`): this application's name. Required
    /// with --auth jwt.
    #[arg(long, env = "HOME_API_AUDIENCE")]
    pub audience: Option<String>,

    /// Header holding the sidecar-verified JWT payload (base64url JSON), with
    /// --auth sidecar.
    #[arg(long, env = "HOME_API_TRUSTED_HEADER", default_value = DEFAULT_TRUSTED_HEADER)]
    pub trusted_header: HeaderName,

    /// Clock skew tolerated on `exp`/`nbf`, in seconds.
    #[arg(long, env = "HOME_API_LEEWAY_SECS", default_value_t = 30)]
    pub leeway_secs: u64,

    /// How long a fetched JWKS is used when the node's answer has no
    /// `Cache-Control: max-age`, in seconds (capped by --jwks-max-cache-secs;
    /// an unknown `kid` also refetches, at most once a second).
    #[arg(long, env = "HOME_API_JWKS_REFRESH_SECS", default_value_t = 60)]
    pub jwks_refresh_secs: u64,

    /// Longest a fetched JWKS is used, whatever its `max-age` says, in
    /// seconds: a removed member's tokens are refused at most this long
    /// after the removal reaches the node.
    #[arg(long, env = "HOME_API_JWKS_MAX_CACHE_SECS", default_value_t = 60)]
    pub jwks_max_cache_secs: u64,

    /// The network's revocation feed to follow (a node's `/v1/revocations`,
    /// long-poll, signed with a JWKS key): revoked tokens are refused from
    /// the moment the entry arrives. Default: the JWKS node's
    /// `/v1/revocations`.
    #[arg(long, env = "HOME_API_REVOCATIONS", conflicts_with = "no_revocations")]
    pub revocations: Option<String>,

    /// Do not follow a revocation feed: a revoked token is then accepted
    /// until it expires (900 s for a node's default access token).
    #[arg(long, env = "HOME_API_NO_REVOCATIONS")]
    pub no_revocations: bool,

    /// Verified-token cache size, in tokens (0: verify every request).
    #[arg(long, env = "HOME_API_TOKEN_CACHE", default_value_t = 100_000)]
    pub token_cache: usize,

    /// Whole-request timeout, in seconds (answered with 503).
    #[arg(long, env = "HOME_API_REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    pub request_timeout_secs: u64,
}

/// Why `home-api` refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Sidecar mode trusts a header, so the app must not be reachable
    /// except through the sidecar.
    #[error(
        "--auth sidecar trusts the {header} header, so home-api must only be reachable \
         through its sidecar: --listen must be a loopback address (127.0.0.1 or ::1), not {addr}"
    )]
    SidecarNotLoopback {
        /// The refused address.
        addr: SocketAddr,
        /// The trusted header.
        header: HeaderName,
    },
    /// A flag required by the chosen mode is absent.
    #[error("--auth jwt requires {0}")]
    Missing(&'static str),
    /// The JWKS cache could not be set up.
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

impl Cli {
    /// Checks that the flags make sense together, before anything starts.
    pub fn check(&self) -> Result<(), StartupError> {
        match self.auth {
            AuthKind::Sidecar if !self.listen.ip().is_loopback() => {
                Err(StartupError::SidecarNotLoopback {
                    addr: self.listen,
                    header: self.trusted_header.clone(),
                })
            }
            AuthKind::Jwt => {
                self.jwt_settings()?;
                Ok(())
            }
            AuthKind::Sidecar | AuthKind::Off => Ok(()),
        }
    }

    fn jwt_settings(&self) -> Result<(&str, &str, &str), StartupError> {
        Ok((
            self.jwks_url
                .as_deref()
                .ok_or(StartupError::Missing("--jwks-url"))?,
            self.issuer
                .as_deref()
                .ok_or(StartupError::Missing("--issuer"))?,
            self.audience
                .as_deref()
                .ok_or(StartupError::Missing("--audience"))?,
        ))
    }

    /// The revocation feed URL home-api follows in jwt mode: `--revocations`,
    /// else the JWKS URL's origin + `/v1/revocations`; `None` with
    /// `--no-revocations`.
    pub fn revocations_url(&self) -> Option<String> {
        if self.no_revocations {
            return None;
        }
        if let Some(url) = &self.revocations {
            return Some(url.clone());
        }
        self.jwks_url.as_deref().map(default_feed_url)
    }

    /// Limits for [`crate::app`].
    pub fn app_options(&self) -> AppOptions {
        AppOptions {
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            ..AppOptions::default()
        }
    }

    /// Checks the flags and builds the auth layer. In jwt mode this loads the
    /// JWKS once (a failure is only a warning: keys are fetched again when a
    /// token arrives) and starts the periodic refresh, so it must run inside
    /// a tokio runtime.
    pub async fn build_auth(&self) -> Result<Auth, StartupError> {
        self.check()?;
        match self.auth {
            AuthKind::Off => Ok(Auth::Off),
            AuthKind::Sidecar => Ok(Auth::Sidecar(TrustedHeaderLayer::new(
                self.trusted_header.clone(),
                AuthMode::Optional,
            ))),
            AuthKind::Jwt => {
                let (url, issuer, audience) = self.jwt_settings()?;
                let mut jwks_config = JwksConfig::new(url);
                jwks_config.refresh_interval = Duration::from_secs(self.jwks_refresh_secs.max(1));
                jwks_config.max_cache_age = Duration::from_secs(self.jwks_max_cache_secs.max(1));
                let jwks = JwksCache::new(jwks_config)?;
                match jwks.refresh().await {
                    Ok(keys) => tracing::info!(keys, url, "JWKS loaded"),
                    Err(error) => tracing::warn!(
                        %error,
                        url,
                        "JWKS not reachable yet; it will be fetched when a token arrives"
                    ),
                }
                // Ends by itself when the verifier (and its cache) is dropped.
                drop(jwks.spawn_periodic_refresh());
                let mut config = VerifierConfig::new(issuer, audience);
                config.leeway = Duration::from_secs(self.leeway_secs);
                config.cache_capacity = self.token_cache;
                match self.revocations_url() {
                    Some(feed) => config = config.revocations(feed),
                    None => tracing::warn!(
                        "not following a revocation feed (--no-revocations): revoked tokens \
                         are accepted until they expire"
                    ),
                }
                Ok(Auth::Jwt(AuthLayer::new(
                    TokenVerifier::new(jwks, config),
                    AuthMode::Optional,
                )))
            }
        }
    }
}

/// A node's feed next to its JWKS: the origin of `jwks_url` (scheme, host,
/// port) + `/v1/revocations` (scale-spec.md, "Feed").
pub fn default_feed_url(jwks_url: &str) -> String {
    let origin_end = jwks_url
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| jwks_url[start..].find('/').map(|j| start + j))
        .unwrap_or(jwks_url.len());
    format!("{}/v1/revocations", &jwks_url[..origin_end])
}
