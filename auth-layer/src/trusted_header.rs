//! Sidecar mode: [`TrustedHeaderLayer`] reads claims that a sidecar already
//! verified.
//!
//! Envoy's `jwt_authn` filter with `forward_payload_header: <name>` verifies
//! the token and forwards its payload as base64url JSON in that header. This
//! layer decodes it (with or without `=` padding) into [`Claims`] and puts
//! them in the request extensions, exactly where [`crate::AuthLayer`] would,
//! so handlers are the same in both modes.
//!
//! It trusts the header blindly, so:
//! * the application must be reachable only through the sidecar (listen on
//!   loopback), and the sidecar must drop a client-sent copy of the header;
//! * the layer removes any incoming `Authorization` header: checking it is the
//!   sidecar's job, and nothing behind this layer should act on it;
//! * signature, `iss`, `aud`, `exp` and `nbf` are the sidecar's to check
//!   (Envoy `issuer`, `audiences`, `remote_jwks`); this layer only parses.
//!
//! | request | `Optional` | `Required` |
//! | --- | --- | --- |
//! | header absent | passes, no claims | 401 `missing_token` |
//! | header holds claims | passes, with claims | passes, with claims |
//! | header malformed | 401 `invalid_token` | 401 `invalid_token` |

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{header, HeaderName, Request};
use axum::response::{IntoResponse, Response};
use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use futures::future::{ready, Either, Ready};
use tower::{Layer, Service};

use crate::claims::VerifiedClaims;
use crate::error::{AuthError, Reason};
use crate::{AuthMode, Claims};

/// The header name Envoy examples use for `forward_payload_header`.
pub const DEFAULT_TRUSTED_HEADER: &str = "x-jwt-payload";

/// base64url, padding optional: Envoy omits it, other proxies may not.
const PAYLOAD_ENCODING: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Larger headers are refused before decoding.
const MAX_PAYLOAD_BYTES: usize = 8 * 1024;

/// A tower layer that takes verified claims from a trusted header.
#[derive(Debug, Clone)]
pub struct TrustedHeaderLayer {
    header: HeaderName,
    mode: AuthMode,
}

impl TrustedHeaderLayer {
    /// A layer reading `header` in `mode`.
    pub fn new(header: HeaderName, mode: AuthMode) -> Self {
        Self { header, mode }
    }

    /// The header this layer reads.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }
}

impl<S> Layer<S> for TrustedHeaderLayer {
    type Service = TrustedHeaderService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TrustedHeaderService {
            inner,
            header: self.header.clone(),
            mode: self.mode,
        }
    }
}

/// The service made by [`TrustedHeaderLayer`].
#[derive(Debug, Clone)]
pub struct TrustedHeaderService<S> {
    inner: S,
    header: HeaderName,
    mode: AuthMode,
}

/// Decodes a forwarded payload.
fn decode_payload(value: &[u8]) -> Result<Claims, Reason> {
    if value.len() > MAX_PAYLOAD_BYTES {
        return Err(Reason::BadTrustedHeader);
    }
    let json = PAYLOAD_ENCODING
        .decode(value)
        .map_err(|_| Reason::BadTrustedHeader)?;
    let claims: Claims = serde_json::from_slice(&json).map_err(|_| Reason::BadTrustedHeader)?;
    // The sidecar checked signature, issuer, audience and expiry; the
    // claim checks jsonwebtoken does not make (a DID subject, no `iat` in
    // the future, a bounded lifetime) are made here too, with the
    // verifier's defaults, so a sidecar without them (Envoy, aws-jwt-verify)
    // cannot let an absurd token through.
    let defaults = crate::VerifierConfig::new("", "");
    crate::verifier::check_claims(
        &claims,
        crate::now_secs(),
        defaults.leeway.as_secs(),
        defaults.max_token_lifetime.as_secs(),
    )?;
    Ok(claims)
}

impl<S, B> Service<Request<B>> for TrustedHeaderService<S>
where
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let headers = request.headers_mut();
        headers.remove(header::AUTHORIZATION);
        let mut values = headers.get_all(&self.header).iter();
        let claims = match (values.next(), values.next()) {
            (None, _) => None,
            (Some(value), None) => match decode_payload(value.as_bytes()) {
                Ok(claims) => Some(claims),
                Err(reason) => return reject(AuthError::InvalidToken(reason)),
            },
            (Some(_), Some(_)) => return reject(AuthError::InvalidToken(Reason::BadTrustedHeader)),
        };
        // Nothing downstream needs the raw header once it is parsed.
        headers.remove(&self.header);
        match claims {
            Some(claims) => {
                request
                    .extensions_mut()
                    .insert(VerifiedClaims::new(Arc::new(claims)));
            }
            None if self.mode == AuthMode::Required => {
                return reject(AuthError::MissingToken);
            }
            None => {}
        }
        Either::Left(self.inner.call(request))
    }
}

fn reject<F, E>(error: AuthError) -> Either<F, Ready<Result<Response, E>>> {
    Either::Right(ready(Ok(error.into_response())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{URL_SAFE as PADDED, URL_SAFE_NO_PAD};

    const JSON: &str = r#"{"iss":"i","sub":"did:mesh:abc","aud":"a","iat":1,"nbf":1,"exp":2,"jti":"j","auth_time":1,"amr":["swk"]}"#;

    #[test]
    fn decodes_with_and_without_padding() {
        for encoded in [PADDED.encode(JSON), URL_SAFE_NO_PAD.encode(JSON)] {
            assert_eq!(
                decode_payload(encoded.as_bytes()).unwrap().sub,
                "did:mesh:abc"
            );
        }
    }

    /// What Envoy or aws-jwt-verify would forward for a token they do not
    /// check: an empty or non-DID subject, an endless lifetime.
    #[test]
    fn refuses_claims_the_verifier_would_refuse() {
        let far = u64::MAX;
        for (json, want) in [
            (JSON.replace("did:mesh:abc", ""), Reason::InvalidSubject),
            (
                JSON.replace("did:mesh:abc", "alice"),
                Reason::InvalidSubject,
            ),
            (
                JSON.replace("\"exp\":2", &format!("\"exp\":{far}")),
                Reason::LifetimeTooLong,
            ),
        ] {
            assert_eq!(
                decode_payload(URL_SAFE_NO_PAD.encode(&json).as_bytes()),
                Err(want),
                "{json}"
            );
        }
    }

    #[test]
    fn refuses_garbage() {
        for bad in ["", "!!!", "e30", &URL_SAFE_NO_PAD.encode("not json")] {
            assert_eq!(
                decode_payload(bad.as_bytes()),
                Err(Reason::BadTrustedHeader),
                "{bad}"
            );
        }
    }
}
