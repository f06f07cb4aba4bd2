//! [`AuthLayer`]: verifies the `Authorization: Bearer` token (RFC 6750 §2.1)
//! and puts the claims in the request extensions for the
//! [`VerifiedClaims`] extractor.
//!
//! | request | `Optional` | `Required` |
//! | --- | --- | --- |
//! | no `Authorization` header | passes, no claims | 401 `missing_token` |
//! | valid token | passes, with claims | passes, with claims |
//! | anything else in `Authorization` | 401 `invalid_token` | 401 `invalid_token` |
//!
//! A token in the verified-token cache (or refused outright) is handled
//! synchronously in `call`: the inner service's future is returned as is,
//! with no boxed future and no copy of the token. A never-seen token waits
//! for the signature batcher, and one naming an unknown `kid` for a JWKS
//! refetch, on a boxed future.

use std::task::{Context, Poll};

use axum::http::{header, HeaderMap, Request};
use axum::response::{IntoResponse, Response};
use futures::future::{BoxFuture, Either};
use tower::{Layer, Service};

use crate::claims::VerifiedClaims;
use crate::error::{AuthError, Reason};
use crate::verifier::{Attempt, TokenVerifier};

/// Whether a request without credentials may pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// No credentials: pass without claims (handlers take
    /// `Option<VerifiedClaims>`).
    /// Credentials that fail verification are still refused.
    #[default]
    Optional,
    /// No credentials: 401.
    Required,
}

/// A tower layer that authenticates requests with a [`TokenVerifier`].
#[derive(Debug, Clone)]
pub struct AuthLayer {
    verifier: TokenVerifier,
    mode: AuthMode,
}

impl AuthLayer {
    /// A layer using `verifier` in `mode`.
    pub fn new(verifier: TokenVerifier, mode: AuthMode) -> Self {
        Self { verifier, mode }
    }

    /// The verifier, e.g. to read its [`stats`](TokenVerifier::stats).
    pub fn verifier(&self) -> &TokenVerifier {
        &self.verifier
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            verifier: self.verifier.clone(),
            mode: self.mode,
        }
    }
}

/// The service made by [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    verifier: TokenVerifier,
    mode: AuthMode,
}

/// What the `Authorization` header holds.
enum Credentials<'a> {
    Absent,
    Bearer(&'a str),
    Unusable,
}

/// Reads a single `Authorization: Bearer <token>` (RFC 6750 §2.1; the scheme
/// is case-insensitive, RFC 9110 §11.1). Several `Authorization` headers are
/// ambiguous and refused.
fn credentials(headers: &HeaderMap) -> Credentials<'_> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Credentials::Absent;
    };
    if values.next().is_some() {
        return Credentials::Unusable;
    }
    let Ok(value) = value.to_str() else {
        return Credentials::Unusable;
    };
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            let token = token.trim();
            if token.is_empty() {
                Credentials::Unusable
            } else {
                Credentials::Bearer(token)
            }
        }
        _ => Credentials::Unusable,
    }
}

impl<S, B> Service<Request<B>> for AuthService<S>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let token = match credentials(request.headers()) {
            Credentials::Absent => {
                return match self.mode {
                    AuthMode::Optional => Either::Left(self.inner.call(request)),
                    AuthMode::Required => reject(AuthError::MissingToken),
                };
            }
            Credentials::Unusable => {
                return reject(AuthError::InvalidToken(Reason::BadAuthorizationHeader));
            }
            Credentials::Bearer(token) => token,
        };

        let batch = match self.verifier.try_verify(token) {
            Attempt::Done(Ok(claims)) => {
                request.extensions_mut().insert(VerifiedClaims::new(claims));
                return Either::Left(self.inner.call(request));
            }
            Attempt::Done(Err(error)) => return reject(error),
            Attempt::Batch => true,
            Attempt::UnknownKid => false,
        };

        // Slow path: the verification awaits the signature batcher or a JWKS
        // fetch. Take the
        // service that `poll_ready` readied and leave a fresh clone behind.
        let token = token.to_owned();
        let verifier = self.verifier.clone();
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Either::Right(Box::pin(async move {
            let verified = if batch {
                verifier.verify_batched(&token).await
            } else {
                verifier.verify_after_refetch(&token).await
            };
            match verified {
                Ok(claims) => {
                    request.extensions_mut().insert(VerifiedClaims::new(claims));
                    inner.call(request).await
                }
                Err(error) => Ok(error.into_response()),
            }
        }))
    }
}

/// A ready 401.
fn reject<F, E>(error: AuthError) -> Either<F, BoxFuture<'static, Result<Response, E>>>
where
    E: Send + 'static,
{
    let response = error.into_response();
    Either::Right(Box::pin(async move { Ok(response) }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn parses_bearer() {
        assert!(matches!(credentials(&headers(&[])), Credentials::Absent));
        assert!(matches!(
            credentials(&headers(&["Bearer abc"])),
            Credentials::Bearer("abc")
        ));
        assert!(matches!(
            credentials(&headers(&["bearer  abc "])),
            Credentials::Bearer("abc")
        ));
        for bad in ["Basic dXNlcg==", "Bearer", "Bearer ", "abc"] {
            assert!(
                matches!(credentials(&headers(&[bad])), Credentials::Unusable),
                "{bad}"
            );
        }
        assert!(matches!(
            credentials(&headers(&["Bearer a", "Bearer b"])),
            Credentials::Unusable
        ));
    }
}
