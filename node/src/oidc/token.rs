//! `POST /oidc/token` (RFC 6749 §4.1.3, §5; RFC 7636 §4.5-4.6; OpenID
//! Connect Core §3.1.3): an authorization code for an ID token and an
//! access token.
//!
//! Client authentication (RFC 6749 §2.3.1): `client_secret_basic` (HTTP
//! Basic with the form-encoded id and secret) or `client_secret_post`; a
//! public client authenticates with nothing (`none`) and must prove PKCE.
//! Using two methods at once is `invalid_request` (§2.3). Errors are §5.2's,
//! 400 except `invalid_client`, which is 401 and, when Basic was tried,
//! carries `WWW-Authenticate: Basic`. Every answer is `no-store`.
//!
//! The code is checked in full (signature by a current member, expiry,
//! client, redirect URI, PKCE, the DID still in good standing) before its
//! issuer is asked to consume it ([`super::consume`]), so a request that
//! would fail anyway does not use it up; only a confirmed first use yields
//! tokens.
//!
//! `grant_type=refresh_token` (RFC 6749 §6) takes a refresh token of
//! [`super::refresh`]: checked in full (signature by a current member,
//! expiry, client, the DID in good standing and not revoked since), then
//! consumed at its issuer like a code, then answered with new tokens and
//! a new refresh token (rotation, RFC 9700 §4.14.2). `POST /oidc/revoke`
//! (RFC 7009) consumes a refresh token at its issuer; it answers 200 for
//! any token, known or not (§2.2), after the same client authentication.

use super::code::{self, redirect_uri_hash, CodeFacts};
use super::{find_client, ClientError};
use crate::NodeState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use did_core::client::{ClientReg, IdTokenAlg};
use did_core::proto::{Claims, TOKEN_TYPE};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

/// `acr` of a one-factor sign-in; [`ACR_MFA`] for two or more distinct
/// factors (the code's `amr` has `mfa`).
pub use did_core::proto::{ACR_1FA, ACR_MFA};

/// A §5.2 error answer.
#[derive(Debug)]
pub struct TokenError {
    status: StatusCode,
    error: &'static str,
    description: String,
    /// The client tried HTTP Basic: a 401 names that scheme.
    basic: bool,
}

impl TokenError {
    fn new(error: &'static str, description: impl Into<String>) -> TokenError {
        let status = match error {
            "invalid_client" => StatusCode::UNAUTHORIZED,
            "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        TokenError {
            status,
            error,
            description: description.into(),
            basic: false,
        }
    }

    fn grant(description: impl Into<String>) -> TokenError {
        TokenError::new("invalid_grant", description)
    }
}

impl IntoResponse for TokenError {
    fn into_response(self) -> Response {
        // `reason` too: every error of the node's API carries one.
        let body = serde_json::json!({
            "error": self.error,
            "error_description": self.description,
            "reason": self.description,
        });
        let mut r = (self.status, Json(body)).into_response();
        let h = r.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if self.status == StatusCode::UNAUTHORIZED && self.basic {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"didmesh\""),
            );
        }
        r
    }
}

/// Answer of a successful token request (RFC 6749 §5.1, OIDC Core §3.1.3.3).
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenAnswer {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    pub id_token: String,
    pub scope: String,
    /// A new refresh token ([`super::refresh`]), on every answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// The claims of an ID token (OIDC Core §2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub azp: String,
    pub exp: u64,
    pub iat: u64,
    pub auth_time: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    pub amr: Vec<String>,
    pub acr: String,
    /// The external provider of a federated sign-in (`amr` has `fed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp: Option<String>,
    /// The DID key (multibase) or passkey id that proved the sign-in
    /// (`did_core::proto::Claims::key`; PROTOCOL.md, "Revocation").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A didmesh access token's claims, with the external provider of a
/// federated sign-in when there was one (federation/routes.rs mints the
/// CLI's token with it too).
#[derive(Debug, Clone, Serialize)]
pub struct AccessClaims<'a> {
    #[serde(flatten)]
    pub claims: &'a Claims,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idp: Option<&'a str>,
}

/// Form parameters: single values; a repeated one is an error (§3.2).
fn form(headers: &HeaderMap, body: &[u8]) -> Result<HashMap<String, String>, TokenError> {
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_type {
        return Err(TokenError::new(
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        if v.is_empty() {
            continue;
        }
        if out.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(TokenError::new(
                "invalid_request",
                format!("{k} is repeated"),
            ));
        }
    }
    Ok(out)
}

/// The credentials of an `Authorization: Basic` header (RFC 6749 §2.3.1:
/// id and secret form-encoded, then RFC 7617).
fn basic(headers: &HeaderMap) -> Result<Option<(String, String)>, TokenError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || TokenError {
        basic: true,
        ..TokenError::new("invalid_client", "malformed Basic credentials")
    };
    let text = value.to_str().map_err(|_| bad())?;
    let Some((scheme, creds)) = text.split_once(' ') else {
        return Err(bad());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = STANDARD.decode(creds.trim()).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    let unform = |s: &str| -> String {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Ok(Some((unform(id), unform(secret))))
}

/// Authenticates the client (module doc).
fn authenticate(
    state: &NodeState,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<(ClientReg, String), TokenError> {
    let basic = basic(headers)?;
    let used_basic = basic.is_some();
    let fail = |why: &str| TokenError {
        basic: used_basic,
        ..TokenError::new("invalid_client", why)
    };
    let body_id = params.get("client_id");
    let body_secret = params.get("client_secret");
    let (client_id, secret) = match (&basic, body_secret) {
        (Some(_), Some(_)) => {
            return Err(TokenError::new(
                "invalid_request",
                "use one client authentication method, not Basic and client_secret both",
            ))
        }
        (Some((id, secret)), None) => {
            if body_id.is_some_and(|b| b != id) {
                return Err(TokenError::new(
                    "invalid_request",
                    "client_id differs from the Basic credentials",
                ));
            }
            (id.clone(), Some(secret.clone()))
        }
        (None, secret) => (
            body_id
                .cloned()
                .ok_or_else(|| fail("no client_id and no client authentication"))?,
            secret.cloned(),
        ),
    };
    let client = find_client(state, &client_id).map_err(|e| match e {
        ClientError::Busy => TokenError::new("temporarily_unavailable", "ledger busy"),
        e => fail(&e.to_string()),
    })?;
    match (client.confidential(), secret) {
        (true, Some(s)) if client.secret_matches(&s) => Ok((client, client_id)),
        (true, Some(_)) => Err(fail("wrong client secret")),
        (true, None) => Err(fail("a confidential client must authenticate")),
        (false, None) => Ok((client, client_id)),
        (false, Some(_)) => Err(fail("a public client has no secret")),
    }
}

/// RFC 7636 §4.1: 43-128 characters of `[A-Za-z0-9-._~]`.
fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Every check of the code except single use.
fn check_code(
    state: &NodeState,
    client: &ClientReg,
    client_id: &str,
    params: &HashMap<String, String>,
    now: u64,
) -> Result<(String, CodeFacts), TokenError> {
    let code_text = params
        .get("code")
        .ok_or_else(|| TokenError::new("invalid_request", "code is missing"))?;
    let redirect_uri = params
        .get("redirect_uri")
        .ok_or_else(|| TokenError::new("invalid_request", "redirect_uri is missing"))?;
    let facts = code::facts(state, code_text).map_err(|e| TokenError::grant(e.to_string()))?;
    if facts.expires_at <= now {
        return Err(TokenError::grant("authorization code expired"));
    }
    if facts.client_id != client_id {
        return Err(TokenError::grant(
            "authorization code issued to another client",
        ));
    }
    if facts.redirect_uri_hash != redirect_uri_hash(redirect_uri) {
        return Err(TokenError::grant(
            "redirect_uri differs from the authorization request's",
        ));
    }
    match (&facts.code_challenge, params.get("code_verifier")) {
        (Some(challenge), Some(v)) => {
            if !valid_verifier(v) {
                return Err(TokenError::new(
                    "invalid_request",
                    "code_verifier must be 43-128 characters of [A-Za-z0-9-._~]",
                ));
            }
            let got: [u8; 32] = Sha256::digest(v.as_bytes()).into();
            if got != *challenge {
                return Err(TokenError::grant(
                    "code_verifier does not match the code_challenge",
                ));
            }
        }
        (Some(_), None) => return Err(TokenError::grant("code_verifier is missing")),
        // RFC 9700 §2.1.1: a verifier without a challenge is refused.
        (None, Some(_)) => {
            return Err(TokenError::grant(
                "code_verifier sent for a code issued without code_challenge",
            ))
        }
        (None, None) if !client.confidential() => {
            return Err(TokenError::grant("a public client's code needs PKCE"))
        }
        (None, None) => {}
    }
    // The DID may have been deactivated or disputed since the code.
    let ledger = state
        .ledger
        .read()
        .map_err(|_| TokenError::new("temporarily_unavailable", "ledger busy"))?;
    if facts.sub.starts_with("did:mesh:") {
        match ledger.resolve(&facts.sub) {
            Some(view) if view.disputed.is_none() && view.state.is_some() => {}
            _ => return Err(TokenError::grant("the DID is deactivated or disputed")),
        }
    }
    Ok((code_text.clone(), facts))
}

/// `POST /oidc/token`.
pub async fn token(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, TokenError> {
    let body = body.map_err(|r| TokenError::new("invalid_request", r.body_text()))?;
    let params = form(&headers, &body)?;
    let refresh = match params.get("grant_type").map(String::as_str) {
        None => return Err(TokenError::new("invalid_request", "grant_type is missing")),
        Some("authorization_code") => false,
        Some("refresh_token") => true,
        Some(_) => {
            return Err(TokenError::new(
                "unsupported_grant_type",
                "only authorization_code and refresh_token are supported",
            ))
        }
    };
    let (client, client_id) = authenticate(&state, &headers, &params)?;
    let now = crate::now();
    let result = if refresh {
        check_refresh(&state, &client_id, &params, now)
    } else {
        check_code(&state, &client, &client_id, &params, now)
    };
    let (code_text, facts) = result.inspect_err(|_| state.metrics.logins_failed.inc())?;
    if !state.is_member() {
        return Err(TokenError::new(
            "temporarily_unavailable",
            "this node is not a member of the network; try another node",
        ));
    }
    let alg = client.id_token_alg;
    let listed = state
        .ledger
        .read()
        .map(|l| state.token_keys.listed(alg, l.members()))
        .unwrap_or(false);
    if !listed {
        return Err(TokenError::new(
            "temporarily_unavailable",
            format!(
                "this node's {} key is not on the ledger yet; try another node",
                alg.as_str()
            ),
        ));
    }
    super::consume::consume_code(&state, &facts.member_key, facts.peer.as_deref(), &code_text)
        .await
        .map_err(|e| {
            state.metrics.logins_failed.inc();
            tracing::info!(reason = %e, "authorization code or refresh token refused");
            TokenError::grant(e.to_string())
        })?;
    let answer = mint(&state, alg, &client_id, &facts, now)?;
    state.metrics.tokens_issued.inc();
    let mut r = Json(answer).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(r)
}

/// The ID token (signed with the client's alg) and the access token (the
/// node's usual EdDSA token, audience = the client).
fn mint(
    state: &NodeState,
    alg: IdTokenAlg,
    client_id: &str,
    facts: &CodeFacts,
    now: u64,
) -> Result<TokenAnswer, TokenError> {
    let settings = &state.oidc.settings;
    let ttl = settings.token_ttl;
    let id_claims = IdTokenClaims {
        iss: settings.issuer.clone(),
        sub: facts.sub.clone(),
        aud: client_id.to_string(),
        azp: client_id.to_string(),
        exp: now.saturating_add(ttl),
        iat: now,
        auth_time: facts.auth_time,
        nonce: facts.nonce.clone(),
        amr: facts.amr.clone(),
        acr: crate::auth::acr_of_amr(&facts.amr).to_string(),
        idp: facts.idp.clone(),
        key: facts.key.clone(),
    };
    let failed = |e: crate::token_keys::SignError| {
        tracing::error!(error = %e, "token not signed");
        TokenError::new("server_error", "token signing failed")
    };
    let id_token = state.token_keys.sign(alg, &id_claims).map_err(failed)?;
    let mut jti = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut jti);
    let mut access = Claims::for_login(&settings.issuer, &facts.sub, client_id, now, ttl, jti);
    access.auth_time = facts.auth_time;
    access.amr = facts.amr.clone();
    access.acr = Some(crate::auth::acr_of_amr(&facts.amr).to_string());
    // A token obtained with a key dies with it (the feed's `key` entry).
    access.key = facts.key.clone();
    // Never hand out a token that is revoked already (the DID signed out
    // everywhere after this sign-in started, or this member's key left).
    let kid = state.token_keys.kid(IdTokenAlg::EdDSA);
    if let Some(why) = crate::revocations::refused(state, &access, Some(&kid), now) {
        return Err(TokenError::grant(why));
    }
    // Not revoked by what this node holds: stamp the watermark, so a later
    // sign-out revokes the token whatever the clocks say (Claims::rev).
    access.rev = Some(crate::revocations::watermark(state, &facts.sub));
    let access_token = state
        .token_keys
        .sign(
            IdTokenAlg::EdDSA,
            &AccessClaims {
                claims: &access,
                idp: facts.idp.as_deref(),
            },
        )
        .map_err(failed)?;
    Ok(TokenAnswer {
        access_token,
        token_type: TOKEN_TYPE.to_string(),
        expires_in: ttl,
        id_token,
        scope: "openid".to_string(),
        refresh_token: super::refresh::issue(state, client_id, facts, now),
    })
}

/// Every check of a refresh token except single use (module doc). The
/// answer has the shape of a code's: the token text for the issuer's
/// consume, and the facts the new tokens are minted from.
fn check_refresh(
    state: &NodeState,
    client_id: &str,
    params: &HashMap<String, String>,
    now: u64,
) -> Result<(String, CodeFacts), TokenError> {
    let text = params
        .get("refresh_token")
        .ok_or_else(|| TokenError::new("invalid_request", "refresh_token is missing"))?;
    let facts = super::refresh::read(state, text).map_err(|e| TokenError::grant(e.to_string()))?;
    if facts.exp <= now {
        return Err(TokenError::grant("refresh token expired"));
    }
    if facts.client_id != client_id {
        return Err(TokenError::grant("refresh token issued to another client"));
    }
    // Revoked since it was issued, or since the sign-in it descends from
    // (a refresh that raced the sign-out must not keep the session alive).
    let mut probe = Claims::for_login(
        &state.oidc.settings.issuer,
        &facts.sub,
        client_id,
        facts.iat.min(facts.auth_time),
        0,
        [0; 16],
    );
    probe.jti = facts.id.clone();
    if let Some(why) = crate::revocations::refused(state, &probe, None, now) {
        return Err(TokenError::grant(format!("refresh token revoked: {why}")));
    }
    let code_facts = CodeFacts {
        id: [0; 16],
        issued_at: facts.iat,
        expires_at: facts.exp,
        auth_time: facts.auth_time,
        member_key: facts.member,
        peer: facts.peer,
        client_id: facts.client_id,
        redirect_uri_hash: [0; 32],
        code_challenge: None,
        nonce: None,
        sub: facts.sub,
        amr: facts.amr,
        idp: facts.idp,
        key: facts.key,
    };
    Ok((text.clone(), code_facts))
}

/// `POST /oidc/revoke` (RFC 7009 §2): the client authenticates as at the
/// token endpoint; a refresh token of this client is consumed at its
/// issuer. 200 for every token, even an unknown or foreign one (§2.2:
/// "invalid tokens do not cause an error"). Access tokens are short-lived
/// JWTs a node cannot recall on its own (the DID owner's sign-out does):
/// `unsupported_token_type` (§2.2.1) when the hint or shape says so.
pub async fn revoke(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, TokenError> {
    let body = body.map_err(|r| TokenError::new("invalid_request", r.body_text()))?;
    let params = form(&headers, &body)?;
    let (_, client_id) = authenticate(&state, &headers, &params)?;
    let text = params
        .get("token")
        .ok_or_else(|| TokenError::new("invalid_request", "token is missing"))?;
    if super::refresh::is_refresh_token(text) {
        if let Ok(facts) = super::refresh::read(&state, text) {
            if facts.client_id == client_id {
                let result = super::consume::consume_code(
                    &state,
                    &facts.member,
                    facts.peer.as_deref(),
                    text,
                )
                .await;
                match result {
                    Ok(()) | Err(super::consume::ConsumeError::AlreadyUsed) => {}
                    // The issuer could not be reached: the client must
                    // retry (§2.2.1, 503), or the token would live on.
                    Err(super::consume::ConsumeError::Unreachable(e)) => {
                        return Err(TokenError::new(
                            "temporarily_unavailable",
                            format!("the refresh token's issuer did not answer: {e}"),
                        ))
                    }
                    Err(e) => tracing::info!(reason = %e, "revoked refresh token not consumed"),
                }
            }
        }
    } else if text.matches('.').count() == 2
        || params.get("token_type_hint").map(String::as_str) == Some("access_token")
    {
        return Err(TokenError::new(
            "unsupported_token_type",
            "access tokens expire on their own (15 minutes); sign out with the DID to revoke them",
        ));
    }
    let mut r = StatusCode::OK.into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifiers_follow_rfc_7636() {
        assert!(valid_verifier(&"a".repeat(43)));
        assert!(valid_verifier(&"-._~".repeat(11)));
        assert!(!valid_verifier(&"a".repeat(42)));
        assert!(!valid_verifier(&"a".repeat(129)));
        assert!(!valid_verifier(&format!("{}+", "a".repeat(43))));
    }
}
