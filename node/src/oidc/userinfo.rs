//! `GET|POST /oidc/userinfo` (OpenID Connect Core §5.3): the claims of the
//! user an access token was issued for. didmesh knows nothing about a user
//! but the DID, so the answer is `{"sub": DID}`.
//!
//! The access token is a node's EdDSA token: its `kid` must name a current
//! member's Ed25519 key or one a rotation replaced less than
//! `key_overlap_secs` ago ([`crate::views::access_token_key`]), the
//! signature must verify, `iss` be the network's
//! and `exp` in the future (RFC 7519; 30 s of leeway like the verifiers),
//! and the token not revoked ([`crate::revocations::refused`]).
//! Errors follow RFC 6750 §3: no token is a bare 401 with
//! `WWW-Authenticate: Bearer realm="didmesh"`; a bad one adds
//! `error="invalid_token"`.

use crate::NodeState;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use did_core::proto::Claims;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::sync::Arc;

/// Leeway on `exp`, seconds (clock skew between nodes).
const LEEWAY: u64 = 30;

/// An RFC 6750 §3 refusal.
struct Unauthorized {
    /// `None`: no token was sent (no error code, §3.1).
    error: Option<&'static str>,
    description: &'static str,
}

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        let challenge = match self.error {
            Some(e) => format!(
                "Bearer realm=\"didmesh\", error=\"{e}\", error_description=\"{}\"",
                self.description
            ),
            None => "Bearer realm=\"didmesh\"".to_string(),
        };
        let status = match self.error {
            Some("invalid_request") => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNAUTHORIZED,
        };
        let body = serde_json::json!({
            "error": self.error.unwrap_or("invalid_token"),
            "error_description": self.description,
            "reason": self.description,
        });
        let mut r = (status, Json(body)).into_response();
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        r
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, Unauthorized> {
    let missing = Unauthorized {
        error: None,
        description: "an access token is required (Authorization: Bearer)",
    };
    let value = headers.get(header::AUTHORIZATION).ok_or(missing)?;
    let text = value.to_str().map_err(|_| Unauthorized {
        error: Some("invalid_request"),
        description: "malformed Authorization header",
    })?;
    match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() => {
            Ok(token.trim())
        }
        _ => Err(Unauthorized {
            error: None,
            description: "an access token is required (Authorization: Bearer)",
        }),
    }
}

/// The claims of a valid access token (module doc).
fn verify(state: &NodeState, token: &str) -> Result<Claims, Unauthorized> {
    let invalid = |description| Unauthorized {
        error: Some("invalid_token"),
        description,
    };
    let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed token"))?;
    if header.alg != Algorithm::EdDSA {
        return Err(invalid("not a didmesh access token"));
    }
    let kid = header.kid.ok_or_else(|| invalid("token without kid"))?;
    // A current member's key, or one a rotation replaced less than
    // key_overlap_secs ago (PROTOCOL.md, "Member key rotation").
    let key = state
        .ledger
        .read()
        .ok()
        .and_then(|l| crate::views::access_token_key(&l, &kid, crate::now()))
        .ok_or_else(|| invalid("not signed by a current member"))?;
    let decoding = DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(key.as_bytes()))
        .map_err(|_| invalid("not signed by a current member"))?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[&state.oidc.settings.issuer]);
    // Any client's token: userinfo tells its bearer only the subject.
    validation.validate_aud = false;
    validation.leeway = LEEWAY;
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    let claims = jsonwebtoken::decode::<Claims>(token, &decoding, &validation)
        .map(|d| d.claims)
        .map_err(|_| invalid("the access token is invalid or expired"))?;
    // A revoked token is refused here as at every verifier that follows
    // the revocation feed (PROTOCOL.md, "Revocation").
    match crate::revocations::refused(state, &claims, Some(&kid), crate::now()) {
        Some(why) => Err(invalid(why)),
        None => Ok(claims),
    }
}

/// `GET|POST /oidc/userinfo`.
pub async fn userinfo(State(state): State<Arc<NodeState>>, headers: HeaderMap) -> Response {
    match bearer(&headers).and_then(|t| verify(&state, t)) {
        Ok(claims) => {
            let mut r = Json(serde_json::json!({ "sub": claims.sub })).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => e.into_response(),
    }
}
