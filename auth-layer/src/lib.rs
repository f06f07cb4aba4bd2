//! # auth-layer
//!
//! A tower/axum layer and extractors that verify didmesh access tokens, for
//! any Rust application that sits behind a didmesh network.
//!
//! A didmesh node issues JWTs (`alg: EdDSA`, header `kid` = the signing
//! member key) and every node serves the same JWKS. A relying party therefore
//! needs one issuer string, one audience and one JWKS URL; it never calls an
//! identity server per request.
//!
//! ## Layout
//!
//! | module | what lives there |
//! | --- | --- |
//! | [`claims`] | [`Claims`] (the token payload, `did_core::Claims`, the type the node mints from) and [`VerifiedClaims`], the axum extractor (`VerifiedClaims`, `Option<VerifiedClaims>`) |
//! | [`jwks`] | [`JwksCache`]: fetches the JWKS over HTTP, keeps the Ed25519 keys by `kid`, refetches on an unknown `kid` (rate-limited, single-flight) and when the set goes stale (`Cache-Control: max-age`, bounded; at most 60 s by default) |
//! | `token_cache` | the bounded, sharded cache of already-verified tokens (blake3 of the token → claims), so a repeated token costs no signature check |
//! | [`verifier`] | [`TokenVerifier`]: header checks, key lookup, signature and claim validation (`sub` a DID, bounded `exp`, no future `iat`), the cache, counters; `verify_offline`, the synchronous parsing entry point |
//! | [`revocations`] | following a node's signed revocation feed (`/v1/revocations`, long-poll): the rules that refuse revoked tokens, cached ones included, and [`RevocationStatus`] |
//! | [`layer`] | [`AuthLayer`]: takes the `Authorization: Bearer` token, verifies it, puts the claims in the request extensions; [`AuthMode`] `Optional` or `Required` |
//! | [`trusted_header`] | [`TrustedHeaderLayer`]: sidecar mode, reads claims that Envoy `jwt_authn` already verified (`forward_payload_header`) |
//! | [`stepup`] | [`RequireAuthn`]: a per-route requirement on `amr`, `acr` and `auth_time` (a layer), the [`Mfa`] extractor, and their 401 (RFC 9470 `insufficient_user_authentication`) |
//! | [`error`] | [`AuthError`]: the 401 answer (RFC 6750 §3 `WWW-Authenticate` + JSON body) |
//! | `testkit` | (feature `testkit`) an in-memory issuer that mints tokens for tests |
//!
//! ## Usage
//!
//! ```no_run
//! use std::time::Duration;
//! use auth_layer::{AuthLayer, AuthMode, JwksCache, JwksConfig, TokenVerifier, VerifiedClaims, VerifierConfig};
//! use axum::{routing::get, Json, Router};
//!
//! async fn whoami(claims: VerifiedClaims) -> Json<String> {
//!     Json(claims.sub.clone())
//! }
//!
//! async fn greet(claims: Option<VerifiedClaims>) -> String {
//!     match claims {
//!         Some(c) => format!("hello {}", c.sub),
//!         None => "hello stranger".to_owned(),
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let jwks = JwksCache::new(JwksConfig::new("http://127.0.0.1:7000/.well-known/jwks.json"))?;
//! // A node that is down at start is not fatal: an unknown `kid` refetches later.
//! if let Err(e) = jwks.refresh().await {
//!     tracing::warn!(error = %e, "JWKS not reachable yet");
//! }
//! let _refresher = jwks.spawn_periodic_refresh();
//!
//! let mut config = VerifierConfig::new("didmesh:example", "home-api");
//! config.leeway = Duration::from_secs(30);
//! let verifier = TokenVerifier::new(jwks, config);
//!
//! let app: Router = Router::new()
//!     .route("/me", get(whoami))
//!     .route("/", get(greet))
//!     .layer(AuthLayer::new(verifier, AuthMode::Optional));
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! Handlers never read headers: `VerifiedClaims` answers 401 when the request
//! carries no verified claims, `Option<VerifiedClaims>` is `None` then. It
//! dereferences to [`Claims`] (`claims.sub`, `claims.aud`, …).
//!
//! A route that needs a multi-factor login gets
//! `get(handler).route_layer(RequireAuthn::mfa())` (or its handler takes
//! [`Mfa`]); a token of a one-factor login then gets the RFC 9470 401 with
//! `acr_values="urn:didmesh:acr:mfa"` (see [`stepup`]).
//!
//! ## Security notes
//!
//! * Only `EdDSA` is accepted; the algorithm is fixed by the verifier, never
//!   taken from the token (so `alg: none` and HS256-with-the-public-key fail).
//! * Tokens never reach a log line: instrumented functions use `skip_all`.
//! * A key removed from the JWKS stops verifying once the cached set goes
//!   stale and is refetched (the answer's `max-age`, at most
//!   [`JwksConfig::max_cache_age`], 60 s by default), also for tokens already
//!   in the verified-token cache. While the node is unreachable the old keys
//!   stay in use.
//! * `exp` is at most [`VerifierConfig::max_token_lifetime`] (24 h) after
//!   `iat` and now, `iat` is not in the future, `sub` is a DID.
//! * With [`VerifierConfig::revocations`] the verifier follows a node's
//!   signed revocation feed and refuses revoked tokens (401, reason
//!   `revoked`), cached ones included, from the moment it holds the entry;
//!   a member removed for cause loses its keys at once (see
//!   [`revocations`]). Without it a revoked token passes until it expires.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![deny(clippy::await_holding_lock, missing_docs)]

pub mod claims;
pub mod error;
pub mod jwks;
pub mod layer;
pub mod revocations;
pub mod stepup;
#[cfg(feature = "testkit")]
pub mod testkit;
mod token_cache;
pub mod trusted_header;
pub mod verifier;

pub use claims::{Claims, VerifiedClaims};
pub use error::{AuthError, JwksError, Reason};
pub use jwks::{JwksCache, JwksConfig};
pub use layer::{AuthLayer, AuthMode, AuthService};
pub use revocations::RevocationStatus;
pub use stepup::{
    Mfa, RequireAuthn, RequireAuthnService, StepUpReason, StepUpRejection, StepUpRequired, ACR_1FA,
    ACR_MFA, AMR_MFA,
};
pub use trusted_header::{TrustedHeaderLayer, TrustedHeaderService, DEFAULT_TRUSTED_HEADER};
pub use verifier::{TokenVerifier, VerifierConfig, VerifierStats};

/// Seconds since the Unix epoch, the unit of JWT `NumericDate` (RFC 7519 §2).
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
