//! # home-api
//!
//! The example didmesh application: a "home activities" API. It knows
//! nothing of DIDs beyond the verified claims that
//! [`auth_layer`] puts in each request.
//!
//! ## Layout
//!
//! | module | what lives there |
//! | --- | --- |
//! | this file | [`app`]: the router and its layers, [`Auth`]: how requests are authenticated |
//! | [`activities`] | the `GET /api/activities/home` and `/api/activities/private` handlers and their JSON types |
//! | [`cli`] | command-line flags, start-up checks (sidecar mode only on loopback), building the auth layer |
//! | `main.rs` | tracing, bind, serve, graceful shutdown |
//!
//! ## Endpoints
//!
//! | method and path | answer |
//! | --- | --- |
//! | `GET /api/activities/home` | 200 `{"activities":[...]}`; with a valid token also the caller's private activity and `"user": "<did>"`; a bad token → 401 (RFC 6750) |
//! | `GET /api/activities/private` | 200 `{"user": "<did>", "activities": [...]}` (the caller's private activities) with a token of a multi-factor login (`amr` has `mfa`); a one-factor token → 401 `insufficient_user_authentication` with `WWW-Authenticate: Bearer error="insufficient_user_authentication", error_description="…", acr_values="urn:didmesh:acr:mfa"` (RFC 9470); no token → 401 `missing_token`; a bad token → 401 `invalid_token` |
//! | `GET /healthz` | 200 `ok`, never authenticated |
//!
//! ## Running
//!
//! ```text
//! home-api --listen 127.0.0.1:8080 \
//!     --jwks-url http://127.0.0.1:7001/.well-known/jwks.json \
//!     --issuer https://didmesh.local --audience home-api
//! # behind an Envoy sidecar that verified the token already:
//! home-api --auth sidecar --listen 127.0.0.1:8081 --trusted-header x-jwt-payload
//! ```
//!
//! `--auth off` disables authentication entirely; it exists only as the
//! baseline of `scripts/bench-home.sh`.

pub mod activities;
pub mod cli;

use std::time::Duration;

use auth_layer::{AuthLayer, RequireAuthn, TrustedHeaderLayer};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};

/// How requests to the API are authenticated.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Verify `Authorization: Bearer` JWTs against the network's JWKS.
    Jwt(AuthLayer),
    /// Trust claims a sidecar (Envoy `jwt_authn`) verified and forwarded in a
    /// header. Only safe when the sidecar is the sole way in.
    Sidecar(TrustedHeaderLayer),
    /// No authentication at all: benchmark baseline only.
    Off,
}

/// Limits applied to every request.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// Whole-request deadline; past it the answer is 503. Covers a slow JWKS
    /// refetch as well as the handler.
    pub request_timeout: Duration,
    /// Largest accepted request body. The API takes no bodies; this only
    /// bounds what a client can make us buffer.
    pub body_limit: usize,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            body_limit: 16 * 1024,
        }
    }
}

/// The application router. The same handlers serve every [`Auth`] mode;
/// only the layer in front of `/api` changes. The step-up rule of the
/// private route sits inside that layer, so it sees the claims the layer
/// verified (or, in sidecar mode, the ones Envoy forwarded).
pub fn app(auth: Auth, options: &AppOptions) -> Router {
    let api = Router::new()
        .route("/api/activities/home", get(activities::home))
        .route(
            "/api/activities/private",
            get(activities::private).route_layer(RequireAuthn::mfa()),
        );
    let api = match auth {
        Auth::Jwt(layer) => api.layer(layer),
        Auth::Sidecar(layer) => api.layer(layer),
        Auth::Off => api,
    };
    Router::new()
        .route("/healthz", get(healthz))
        .merge(api)
        .layer(
            ServiceBuilder::new()
                // Headers carry tokens: never put them in spans or events.
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(DefaultMakeSpan::new().include_headers(false))
                        .on_response(DefaultOnResponse::new().include_headers(false)),
                )
                .layer(RequestBodyLimitLayer::new(options.body_limit))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    options.request_timeout,
                )),
        )
}

/// `GET /healthz`.
async fn healthz() -> &'static str {
    "ok"
}
