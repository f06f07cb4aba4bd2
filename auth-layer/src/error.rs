//! Errors: why a request is refused ([`AuthError`], always a 401) and why a
//! JWKS fetch failed ([`JwksError`], logged, never sent to a client).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Why a request carries no acceptable token. Every variant answers 401.
///
/// The response follows RFC 6750 §3: `WWW-Authenticate: Bearer` alone when
/// no credentials were sent, `Bearer error="invalid_token",
/// error_description="..."` when they were sent and refused. The body is
/// JSON `{"error": "...", "reason": "..."}` as everywhere in didmesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token at all, where one is required (RFC 6750 §3.1: no error code
    /// in the challenge).
    #[error("no bearer token")]
    MissingToken,
    /// A token (or trusted claims header) was presented and refused.
    #[error("invalid token: {}", .0.description())]
    InvalidToken(Reason),
}

/// The short, stable reason a token was refused; sent as `reason` in the
/// body. Deliberately coarse: it tells a client developer what to fix
/// without helping an attacker probe the verifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The `Authorization` header is not a single `Bearer <token>`.
    BadAuthorizationHeader,
    /// Not three base64url segments, bad JSON, or claims of the wrong shape.
    Malformed,
    /// `alg` is not `EdDSA` (this includes `none` and every HMAC variant).
    UnsupportedAlgorithm,
    /// `typ` other than `JWT`, or a `crit` header we cannot honour
    /// (RFC 7515 §4.1.11).
    UnsupportedHeader,
    /// The header has no `kid`.
    MissingKid,
    /// No key with this `kid` in the JWKS, even after a refetch.
    UnknownKid,
    /// The JWKS key cannot be used to verify.
    UnusableKey,
    /// The signature does not verify.
    BadSignature,
    /// `iss` is not the configured issuer.
    WrongIssuer,
    /// `aud` is not the configured audience.
    WrongAudience,
    /// `exp` is past (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// A required claim (`exp`, `nbf`, `iss`, `aud`, `sub`) is missing.
    MissingClaim,
    /// `sub` is not a DID (W3C DID Core §3.1), e.g. empty.
    InvalidSubject,
    /// `iat` is in the future (beyond the leeway).
    IssuedInFuture,
    /// `exp` is further after `iat` or now than the maximum token lifetime.
    LifetimeTooLong,
    /// Sidecar mode: the trusted claims header is not base64url JSON claims.
    BadTrustedHeader,
    /// The network's revocation feed revoked the token: its `jti`, its
    /// subject's sessions before a time, the key that proved the login, or
    /// the member key that signed it.
    Revoked,
}

impl Reason {
    /// The machine-readable code sent as `reason` in the JSON body.
    pub fn code(self) -> &'static str {
        match self {
            Reason::BadAuthorizationHeader => "bad_authorization_header",
            Reason::Malformed => "malformed",
            Reason::UnsupportedAlgorithm => "unsupported_alg",
            Reason::UnsupportedHeader => "unsupported_header",
            Reason::MissingKid => "missing_kid",
            Reason::UnknownKid => "unknown_kid",
            Reason::UnusableKey => "unusable_key",
            Reason::BadSignature => "bad_signature",
            Reason::WrongIssuer => "wrong_issuer",
            Reason::WrongAudience => "wrong_audience",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::MissingClaim => "missing_claim",
            Reason::InvalidSubject => "invalid_sub",
            Reason::IssuedInFuture => "iat_in_future",
            Reason::LifetimeTooLong => "lifetime_too_long",
            Reason::BadTrustedHeader => "bad_trusted_header",
            Reason::Revoked => "revoked",
        }
    }

    /// A human sentence for `error_description` (RFC 6750 §3). It must stay
    /// within the quoted-string charset: no `"` and no `\`.
    pub fn description(self) -> &'static str {
        match self {
            Reason::BadAuthorizationHeader => "expected a single Authorization: Bearer header",
            Reason::Malformed => "the token is malformed",
            Reason::UnsupportedAlgorithm => "only EdDSA tokens are accepted",
            Reason::UnsupportedHeader => "unsupported token header",
            Reason::MissingKid => "the token header has no kid",
            Reason::UnknownKid => "the token was signed by an unknown key",
            Reason::UnusableKey => "the signing key cannot be used",
            Reason::BadSignature => "the token signature is invalid",
            Reason::WrongIssuer => "the token was issued by another issuer",
            Reason::WrongAudience => "the token is for another audience",
            Reason::Expired => "the token has expired",
            Reason::NotYetValid => "the token is not valid yet",
            Reason::MissingClaim => "the token lacks a required claim",
            Reason::InvalidSubject => "the token subject is not a DID",
            Reason::IssuedInFuture => "the token was issued in the future",
            Reason::LifetimeTooLong => "the token lifetime is too long",
            Reason::BadTrustedHeader => "the trusted claims header is malformed",
            Reason::Revoked => "the token was revoked",
        }
    }
}

/// The JSON body of a 401.
#[derive(Serialize)]
struct ErrorBody {
    error: &'static str,
    reason: &'static str,
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let (challenge, body) = match self {
            AuthError::MissingToken => (
                HeaderValue::from_static("Bearer"),
                ErrorBody {
                    error: "missing_token",
                    reason: "no_token",
                },
            ),
            AuthError::InvalidToken(reason) => {
                let value = format!(
                    "Bearer error=\"invalid_token\", error_description=\"{}\"",
                    reason.description()
                );
                (
                    // The descriptions are static ASCII without quotes, so
                    // this cannot fail; fall back to the bare scheme anyway.
                    HeaderValue::from_str(&value)
                        .unwrap_or_else(|_| HeaderValue::from_static("Bearer")),
                    ErrorBody {
                        error: "invalid_token",
                        reason: reason.code(),
                    },
                )
            }
        };
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, challenge)],
            axum::Json(body),
        )
            .into_response()
    }
}

/// Why the JWKS could not be fetched or read. The cache keeps its previous
/// keys when this happens.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The request failed or the server answered an error status.
    #[error("fetching the JWKS: {0}")]
    Fetch(#[source] reqwest::Error),
    /// The body is larger than we accept.
    #[error("the JWKS is larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body is not a JWKS document.
    #[error("the JWKS is not valid JSON: {0}")]
    Parse(#[source] serde_json::Error),
    /// This cache was built from fixed keys and has no URL to fetch.
    #[error("this JWKS cache has no URL")]
    NoSource,
}
