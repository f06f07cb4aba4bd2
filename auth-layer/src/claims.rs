//! The verified token payload and the axum extractor that hands it to
//! handlers.
//!
//! [`Claims`] is `did_core::Claims`, the very type the node mints tokens
//! from, so the two cannot drift apart. A foreign type cannot implement
//! axum's extractor traits here (the orphan rule), and it should not: the
//! extractor must prove that a layer of *this* crate verified the claims.
//! So a layer ([`crate::AuthLayer`] or [`crate::TrustedHeaderLayer`]) puts a
//! [`VerifiedClaims`] in the request extensions — a type nothing outside
//! this crate can construct — and handlers take `VerifiedClaims` (401 when
//! absent) or `Option<VerifiedClaims>`. It dereferences to [`Claims`], so a
//! handler reads `claims.sub` as before.

use std::convert::Infallible;
use std::ops::Deref;
use std::sync::Arc;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::Extensions;

use crate::AuthError;

pub use did_core::Claims;

/// Claims that a layer of this crate verified for this request: the axum
/// extractor. Only this crate can make one, so finding it in the request
/// extensions proves the verification happened.
#[derive(Debug, Clone)]
pub struct VerifiedClaims(Arc<Claims>);

impl VerifiedClaims {
    /// Wraps claims a layer of this crate has just verified.
    pub(crate) fn new(claims: Arc<Claims>) -> Self {
        Self(claims)
    }

    /// The verified claims in `extensions`, for plain tower services that
    /// do not use axum extractors.
    pub fn from_extensions(extensions: &Extensions) -> Option<&Claims> {
        extensions.get::<VerifiedClaims>().map(|v| v.0.as_ref())
    }

    /// The claims themselves (cloned only if the verified-token cache still
    /// shares them).
    pub fn into_inner(self) -> Claims {
        Arc::unwrap_or_clone(self.0)
    }
}

impl Deref for VerifiedClaims {
    type Target = Claims;

    fn deref(&self) -> &Claims {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for VerifiedClaims {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<VerifiedClaims>()
            .cloned()
            .ok_or(AuthError::MissingToken)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for VerifiedClaims {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<VerifiedClaims>().cloned())
    }
}
