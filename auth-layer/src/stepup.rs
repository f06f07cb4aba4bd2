//! Step-up: a route that needs more than "some valid token" — a login with
//! several factors, a given authentication context, or a recent sign-in —
//! and the answer that tells the client how to get there (RFC 9470, OAuth
//! 2.0 Step Up Authentication Challenge Protocol).
//!
//! A node writes what a login used into the token: `amr` (RFC 8176: `swk`,
//! `hwk`, `user`, `sms`, `fed`, and `mfa` when two or more distinct factors
//! were presented), `acr` ([`ACR_1FA`] or [`ACR_MFA`]) and `auth_time`
//! (OpenID Connect Core §2). [`RequireAuthn`] states what a route needs of
//! them; put it on the route, *inside* an [`crate::AuthLayer`] or
//! [`crate::TrustedHeaderLayer`] that verified the token:
//!
//! ```no_run
//! # use auth_layer::{AuthLayer, RequireAuthn, VerifiedClaims};
//! # use axum::{routing::get, Router};
//! # fn app(auth: AuthLayer) -> Router {
//! async fn private(claims: VerifiedClaims) -> String { claims.sub.clone() }
//! async fn public() -> &'static str { "hello" }
//! Router::new()
//!     .route("/private", get(private).route_layer(RequireAuthn::mfa()))
//!     .route("/public", get(public))
//!     .layer(auth)
//! # }
//! ```
//!
//! or take the [`Mfa`] extractor instead of `VerifiedClaims` in a handler.
//!
//! | request | answer |
//! | --- | --- |
//! | no verified claims (no token, or no auth layer in front) | 401 `missing_token`, `WWW-Authenticate: Bearer` (RFC 6750 §3.1) |
//! | claims that meet the requirement | passes to the handler |
//! | claims that do not | 401, `WWW-Authenticate: Bearer error="insufficient_user_authentication", error_description="…", acr_values="…"` (and `max_age="N"` when the sign-in is too old), RFC 9470 §3; body `{"error":"insufficient_user_authentication","reason":…}` |
//!
//! A client that gets the 401 signs in again asking for the context named
//! in `acr_values` (`/oidc/authorize?acr_values=urn:didmesh:acr:mfa`, or a
//! login with more factors at `/v1/auth/token`) and retries with the new
//! token (RFC 9470 §4).
//!
//! Rules, each checked only when set:
//! * **amr**: every listed method is in the token's `amr` (RFC 8176 values
//!   are compared exactly).
//! * **acr**: the token's `acr` is one of the listed values — or, for
//!   didmesh's own levels, a higher one ([`ACR_MFA`] meets a requirement of
//!   [`ACR_1FA`]). A token without `acr` (nodes before issue 11) counts as
//!   [`ACR_1FA`]: it was one factor.
//! * **max_age**: `auth_time` is at most this many seconds ago (RFC 9470
//!   §3 `max_age`; a small clock skew is tolerated, as for `exp`).

use std::ops::Deref;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::future::{ready, Either, Ready};
use serde::Serialize;
use tower::{Layer, Service};

use crate::claims::VerifiedClaims;
use crate::error::AuthError;
use crate::{now_secs, Claims};

pub use did_core::proto::{ACR_1FA, ACR_MFA, AMR_MFA};

/// The `error` code of RFC 9470 §3.
pub const INSUFFICIENT_USER_AUTHENTICATION: &str = "insufficient_user_authentication";

/// Clock skew tolerated on `auth_time` for [`RequireAuthn::max_age`]: the
/// verifier's default leeway on `exp` and `nbf`.
const MAX_AGE_LEEWAY_SECS: u64 = 30;

/// didmesh's own `acr` values, weakest first: a token at a later level
/// meets a requirement of an earlier one.
const ACR_LEVELS: [&str; 2] = [ACR_1FA, ACR_MFA];

/// What a route needs of a verified token beyond its validity. Build it
/// with [`RequireAuthn::mfa`], [`RequireAuthn::amr`] or
/// [`RequireAuthn::acr`], add rules with the `and_*` methods; it is itself
/// the tower [`Layer`] that enforces it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequireAuthn {
    /// Methods that must all be in `amr`.
    amr: Vec<String>,
    /// `acr` values of which the token's must meet one.
    acr: Vec<String>,
    /// Seconds since `auth_time` at most.
    max_age: Option<u64>,
    /// `acr_values` of the challenge, in order of preference.
    hint: Vec<String>,
}

impl RequireAuthn {
    /// A login with two or more distinct factors: `amr` contains `mfa`. The
    /// challenge names `acr_values="urn:didmesh:acr:mfa"`, what a client asks
    /// the node for.
    pub fn mfa() -> Self {
        Self::default().and_amr(AMR_MFA)
    }

    /// `amr` contains `method` (an RFC 8176 value, e.g. `"mfa"`, `"hwk"`).
    pub fn amr(method: impl Into<String>) -> Self {
        Self::default().and_amr(method)
    }

    /// `acr` is `value` or, for didmesh's levels, a higher one.
    pub fn acr(value: impl Into<String>) -> Self {
        Self::default().or_acr(value)
    }

    /// Also requires `method` in `amr`. Requiring [`AMR_MFA`] makes the
    /// challenge name [`ACR_MFA`] unless acr values were given.
    pub fn and_amr(mut self, method: impl Into<String>) -> Self {
        let method = method.into();
        if method == AMR_MFA && self.acr.is_empty() && !self.hint.iter().any(|h| h == ACR_MFA) {
            self.hint.push(ACR_MFA.to_owned());
        }
        if !self.amr.contains(&method) {
            self.amr.push(method);
        }
        self
    }

    /// Also accepts `acr` `value` (the acr rule is "one of"); the challenge
    /// names the accepted values in the order given.
    pub fn or_acr(mut self, value: impl Into<String>) -> Self {
        let value = value.into();
        if self.acr.is_empty() {
            // Explicit acr values replace the hint derived from `mfa`.
            self.hint.clear();
        }
        if !self.acr.contains(&value) {
            self.hint.push(value.clone());
            self.acr.push(value);
        }
        self
    }

    /// Also requires a sign-in at most `age` ago (`auth_time`), whole
    /// seconds.
    pub fn and_max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age.as_secs());
        self
    }

    /// Whether `claims` meet this requirement at `now` (Unix seconds); the
    /// 401 to answer if not.
    pub fn check(&self, claims: &Claims, now: u64) -> Result<(), StepUpRequired> {
        let failure = if let Some(missing) = self
            .amr
            .iter()
            .find(|m| !claims.amr.iter().any(|have| have == *m))
        {
            Some(if missing == AMR_MFA {
                StepUpReason::MfaRequired
            } else {
                StepUpReason::AmrRequired
            })
        } else if !self.acr.is_empty() && !self.acr.iter().any(|want| acr_meets(claims, want)) {
            Some(StepUpReason::AcrRequired)
        } else if self.max_age.is_some_and(|max| {
            claims
                .auth_time
                .saturating_add(max)
                .saturating_add(MAX_AGE_LEEWAY_SECS)
                < now
        }) {
            Some(StepUpReason::AuthTooOld)
        } else {
            None
        };
        match failure {
            None => Ok(()),
            Some(reason) => Err(StepUpRequired {
                reason,
                acr_values: self.acr_values(),
                max_age: self.max_age,
            }),
        }
    }

    /// The challenge's `acr_values`: the hint values that fit in an HTTP
    /// quoted-string and an RFC 6749 space-separated list (printable ASCII,
    /// no space, `"` or `\`), joined by spaces; `None` when there are none.
    fn acr_values(&self) -> Option<Arc<str>> {
        let values: Vec<&str> = self
            .hint
            .iter()
            .map(String::as_str)
            .filter(|v| is_nqchar_token(v))
            .collect();
        (!values.is_empty()).then(|| Arc::from(values.join(" ")))
    }
}

/// `acr` of `claims` (absent = one factor) meets `want`: equal, or both are
/// didmesh levels and the token's is at least as high.
fn acr_meets(claims: &Claims, want: &str) -> bool {
    let have = claims.acr.as_deref().unwrap_or(ACR_1FA);
    if have == want {
        return true;
    }
    let level = |v: &str| ACR_LEVELS.iter().position(|l| *l == v);
    matches!((level(have), level(want)), (Some(h), Some(w)) if h >= w)
}

/// RFC 6749 §A.4 scope-token characters (NQCHAR without space): what may
/// stand between the quotes of a challenge parameter untouched.
fn is_nqchar_token(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
}

/// Which rule a token failed; sent as `reason` in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StepUpReason {
    /// `amr` lacks `mfa`: the login used one factor.
    MfaRequired,
    /// `amr` lacks another required method.
    AmrRequired,
    /// `acr` is not one the route accepts.
    AcrRequired,
    /// `auth_time` is older than the route's `max_age`.
    AuthTooOld,
}

impl StepUpReason {
    /// The machine-readable code sent as `reason`.
    pub fn code(self) -> &'static str {
        match self {
            StepUpReason::MfaRequired => "mfa_required",
            StepUpReason::AmrRequired => "amr_required",
            StepUpReason::AcrRequired => "acr_required",
            StepUpReason::AuthTooOld => "auth_too_old",
        }
    }

    /// The `error_description` (quoted-string safe: no `"`, no `\`).
    pub fn description(self) -> &'static str {
        match self {
            StepUpReason::MfaRequired => {
                "this resource requires a sign-in with two or more factors"
            }
            StepUpReason::AmrRequired => "this resource requires another authentication method",
            StepUpReason::AcrRequired => "this resource requires a stronger authentication context",
            StepUpReason::AuthTooOld => "this resource requires a more recent sign-in",
        }
    }
}

/// A token that is valid but not enough for the route: the RFC 9470 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepUpRequired {
    reason: StepUpReason,
    acr_values: Option<Arc<str>>,
    max_age: Option<u64>,
}

impl StepUpRequired {
    /// Which rule failed.
    pub fn reason(&self) -> StepUpReason {
        self.reason
    }

    /// The `acr_values` the challenge names (space-separated), if any.
    pub fn acr_values(&self) -> Option<&str> {
        self.acr_values.as_deref()
    }

    /// The `WWW-Authenticate` value (RFC 9470 §3, RFC 6750 §3 syntax).
    pub fn challenge(&self) -> String {
        let mut value = format!(
            "Bearer error=\"{INSUFFICIENT_USER_AUTHENTICATION}\", error_description=\"{}\"",
            self.reason.description()
        );
        if let Some(acr) = &self.acr_values {
            value.push_str(&format!(", acr_values=\"{acr}\""));
        }
        if let Some(max_age) = self.max_age {
            value.push_str(&format!(", max_age=\"{max_age}\""));
        }
        value
    }
}

impl std::fmt::Display for StepUpRequired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason.description())
    }
}

impl std::error::Error for StepUpRequired {}

/// The JSON body of the 401.
#[derive(Serialize)]
struct StepUpBody<'a> {
    error: &'static str,
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    acr_values: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_age: Option<u64>,
}

impl IntoResponse for StepUpRequired {
    fn into_response(self) -> Response {
        // Every part is static text or NQCHAR-checked acr values and digits,
        // so this cannot fail; fall back to the bare scheme anyway.
        let challenge = HeaderValue::from_str(&self.challenge())
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
        let body = StepUpBody {
            error: INSUFFICIENT_USER_AUTHENTICATION,
            reason: self.reason.code(),
            acr_values: self.acr_values.as_deref(),
            max_age: self.max_age,
        };
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, challenge)],
            axum::Json(body),
        )
            .into_response()
    }
}

/// Why a step-up route refused a request: no verified claims at all, or
/// claims that are not enough. Both are 401s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepUpRejection {
    /// No verified claims (RFC 6750 §3.1).
    Unauthenticated(AuthError),
    /// Claims that do not meet the requirement (RFC 9470 §3).
    Insufficient(StepUpRequired),
}

impl IntoResponse for StepUpRejection {
    fn into_response(self) -> Response {
        match self {
            StepUpRejection::Unauthenticated(e) => e.into_response(),
            StepUpRejection::Insufficient(e) => e.into_response(),
        }
    }
}

impl RequireAuthn {
    /// The claims a layer verified for this request, if they meet this
    /// requirement now.
    fn admit(&self, extensions: &axum::http::Extensions) -> Result<(), StepUpRejection> {
        let claims = VerifiedClaims::from_extensions(extensions)
            .ok_or(StepUpRejection::Unauthenticated(AuthError::MissingToken))?;
        self.check(claims, now_secs())
            .map_err(StepUpRejection::Insufficient)
    }
}

impl<S> Layer<S> for RequireAuthn {
    type Service = RequireAuthnService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireAuthnService {
            inner,
            rule: Arc::new(self.clone()),
        }
    }
}

/// The service made by [`RequireAuthn`].
#[derive(Debug, Clone)]
pub struct RequireAuthnService<S> {
    inner: S,
    rule: Arc<RequireAuthn>,
}

impl<S, B> Service<Request<B>> for RequireAuthnService<S>
where
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match self.rule.admit(request.extensions()) {
            Ok(()) => Either::Left(self.inner.call(request)),
            Err(rejection) => Either::Right(ready(Ok(rejection.into_response()))),
        }
    }
}

/// Extractor: verified claims of a login with two or more factors
/// ([`RequireAuthn::mfa`]). Dereferences to [`Claims`].
#[derive(Debug, Clone)]
pub struct Mfa(pub VerifiedClaims);

impl Deref for Mfa {
    type Target = Claims;

    fn deref(&self) -> &Claims {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Mfa {
    type Rejection = StepUpRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let claims = parts
            .extensions
            .get::<VerifiedClaims>()
            .cloned()
            .ok_or(StepUpRejection::Unauthenticated(AuthError::MissingToken))?;
        RequireAuthn::mfa()
            .check(&claims, now_secs())
            .map_err(StepUpRejection::Insufficient)?;
        Ok(Mfa(claims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(amr: &[&str], acr: Option<&str>, auth_time: u64) -> Claims {
        Claims {
            iss: "i".into(),
            sub: "did:mesh:x".into(),
            aud: "a".into(),
            iat: auth_time,
            nbf: auth_time,
            exp: auth_time.saturating_add(600),
            jti: "j".into(),
            auth_time,
            amr: amr.iter().map(|s| s.to_string()).collect(),
            acr: acr.map(str::to_owned),
            key: None,
            rev: None,
        }
    }

    #[test]
    fn mfa_needs_the_mfa_method() {
        let rule = RequireAuthn::mfa();
        assert_eq!(
            rule.check(&claims(&["swk"], Some(ACR_1FA), 100), 100)
                .map_err(|e| e.reason()),
            Err(StepUpReason::MfaRequired)
        );
        assert_eq!(
            rule.check(&claims(&["swk", "mfa"], Some(ACR_MFA), 100), 100),
            Ok(())
        );
        // An acr alone does not stand in for the method the rule names.
        assert!(rule
            .check(&claims(&["swk"], Some(ACR_MFA), 100), 100)
            .is_err());
        assert_eq!(
            rule.check(&claims(&[], None, 0), 0)
                .unwrap_err()
                .challenge(),
            "Bearer error=\"insufficient_user_authentication\", error_description=\"this resource \
             requires a sign-in with two or more factors\", acr_values=\"urn:didmesh:acr:mfa\""
        );
    }

    #[test]
    fn acr_levels_are_ordered_and_absent_is_one_factor() {
        let mfa = RequireAuthn::acr(ACR_MFA);
        let one = RequireAuthn::acr(ACR_1FA);
        assert!(mfa
            .check(&claims(&["swk", "mfa"], Some(ACR_MFA), 1), 1)
            .is_ok());
        assert!(mfa.check(&claims(&["swk"], Some(ACR_1FA), 1), 1).is_err());
        assert!(mfa.check(&claims(&["swk"], None, 1), 1).is_err());
        assert!(mfa
            .check(&claims(&["swk"], Some("urn:other"), 1), 1)
            .is_err());
        assert!(one.check(&claims(&["swk"], None, 1), 1).is_ok());
        assert!(one
            .check(&claims(&["swk", "mfa"], Some(ACR_MFA), 1), 1)
            .is_ok());
        let foreign = RequireAuthn::acr("urn:other:gold");
        assert!(foreign.check(&claims(&[], Some(ACR_MFA), 1), 1).is_err());
        assert!(foreign
            .check(&claims(&[], Some("urn:other:gold"), 1), 1)
            .is_ok());
        assert_eq!(
            mfa.check(&claims(&[], None, 1), 1)
                .unwrap_err()
                .acr_values(),
            Some(ACR_MFA)
        );
    }

    #[test]
    fn max_age_counts_from_auth_time() {
        let rule = RequireAuthn::mfa().and_max_age(Duration::from_secs(300));
        let c = claims(&["mfa"], Some(ACR_MFA), 1000);
        assert!(rule.check(&c, 1300 + MAX_AGE_LEEWAY_SECS).is_ok());
        let late = rule.check(&c, 1301 + MAX_AGE_LEEWAY_SECS).unwrap_err();
        assert_eq!(late.reason(), StepUpReason::AuthTooOld);
        assert!(
            late.challenge().ends_with(", max_age=\"300\""),
            "{}",
            late.challenge()
        );
        // Saturating: a huge auth_time does not panic.
        assert!(rule.check(&claims(&["mfa"], None, u64::MAX), 5).is_ok());
    }

    #[test]
    fn unsafe_hint_values_stay_out_of_the_header_but_are_still_required() {
        let rule = RequireAuthn::acr("bad \"value\"").or_acr(ACR_MFA);
        let err = rule.check(&claims(&[], Some(ACR_1FA), 1), 1).unwrap_err();
        assert_eq!(err.acr_values(), Some(ACR_MFA));
        assert!(HeaderValue::from_str(&err.challenge()).is_ok());
        assert!(rule
            .check(&claims(&[], Some("bad \"value\""), 1), 1)
            .is_ok());
        assert_eq!(RequireAuthn::amr("hwk").acr_values(), None);
    }
}
