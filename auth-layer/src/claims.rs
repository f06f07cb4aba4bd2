//! The verified token payload and the axum extractors that hand it to
//! handlers.
//!
//! A layer ([`crate::AuthLayer`] or [`crate::TrustedHeaderLayer`]) stores the
//! claims in the request extensions under a private type, so only a layer of
//! this crate can vouch for a caller; handlers take `Claims` (401 when absent)
//! or `Option<Claims>`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::Extensions;
use serde::{Deserialize, Serialize};

use crate::AuthError;

/// The claims of a didmesh access token (DESIGN.md "Login and tokens";
/// registered names from RFC 7519 §4.1, `auth_time` from OpenID Connect Core
/// §2, `amr` from RFC 8176).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer: the network's issuer string.
    pub iss: String,
    /// Subject: the caller's DID.
    pub sub: String,
    /// Audience: the relying party this token is for. didmesh issues one
    /// audience per token, so this is a string; a token with an array `aud`
    /// is refused as malformed.
    pub aud: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Not before, seconds since the epoch.
    pub nbf: u64,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Unique token id.
    pub jti: String,
    /// When the user signed the login challenge, seconds since the epoch.
    pub auth_time: u64,
    /// Authentication methods, e.g. `["did-sig"]`.
    pub amr: Vec<String>,
}

/// What a layer puts in the request extensions. Private, so that nothing but
/// this crate's layers can mark a request as authenticated.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedClaims(pub(crate) Arc<Claims>);

impl Claims {
    /// The claims a layer of this crate verified for this request, for
    /// plain tower services that do not use axum extractors.
    pub fn from_extensions(extensions: &Extensions) -> Option<&Claims> {
        extensions.get::<VerifiedClaims>().map(|v| v.0.as_ref())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Claims {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Claims::from_extensions(&parts.extensions)
            .cloned()
            .ok_or(AuthError::MissingToken)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Claims {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(Claims::from_extensions(&parts.extensions).cloned())
    }
}
