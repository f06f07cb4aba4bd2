//! The sign-in page's JSON calls: a login challenge for the authorization
//! request, and its completion into an authorization code.
//!
//! `POST /oidc/signin/challenge {request, did}` is a login challenge exactly
//! like `POST /v1/auth/challenge`, with audience = the client's id;
//! `{request, passkey: true}` (no DID) is one bound to no DID, for a
//! usernameless passkey sign-in ([`crate::auth`]). Both answers carry
//! `webauthn_challenge` = base64url(SHA-256(message)), what a passkey signs.
//!
//! `POST /oidc/signin/complete {request, nonce, did?, signature?, assertion?}`
//! redeems the challenge through the same [`crate::auth::Authenticator`]
//! (nonce MAC and single use, the DID resolved now: deactivated and
//! disputed DIDs refused, this node a member), checks a passkey's sign
//! counter ([`super::counters`]) and answers `{redirect}`: the client's
//! redirect URI with `code`, `state` and `iss`. Without `did` the DID is
//! the passkey's user handle (UTF-8, as the page registers it).
//!
//! Issue 11: a browser key's `signature` and a passkey `assertion` sent
//! together are two factors. The DID's login policy applies, and so does
//! the request's `acr_values=urn:didmesh:acr:mfa` (at least two); too few
//! is a 401 `more_factors_needed` (`required`, `presented`) that leaves
//! the nonce usable, so the page can add the other factor and complete
//! again. The code's `amr` lists what counted (`mfa` for two or more),
//! and the ID token's `acr` follows from it. The challenge answer carries
//! the policy (`required` raised to 2 when the request demands MFA).

use super::code;
use super::request::AuthRequest;
use crate::api::ApiError;
use crate::auth::{AuthError, Demand, PasskeyProof, Proofs};
use crate::NodeState;
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use did_core::passkey::{challenge_for, Assertion};
use did_core::proto::PolicyAnswer;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Body of `POST /oidc/signin/challenge`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeBody {
    pub request: String,
    #[serde(default)]
    pub did: Option<String>,
    /// A usernameless passkey sign-in (no `did`).
    #[serde(default)]
    pub passkey: bool,
}

/// Answer of `POST /oidc/signin/challenge`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChallengeAnswer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub did: Option<String>,
    pub message: String,
    pub nonce: String,
    pub expires_at: u64,
    /// base64url(SHA-256(message)): the WebAuthn `challenge`.
    pub webauthn_challenge: String,
    /// What this sign-in needs (absent for a usernameless challenge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyAnswer>,
}

/// Body of `POST /oidc/signin/complete`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    pub request: String,
    pub nonce: String,
    #[serde(default)]
    pub did: Option<String>,
    #[serde(default)]
    pub signature: Option<String>,
    #[serde(default)]
    pub assertion: Option<Assertion>,
}

fn bad(reason: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", reason)
}

/// A JSON answer that no cache keeps (it carries codes and challenges).
pub(super) fn no_store(body: impl Serialize) -> Response {
    let mut r = Json(body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Only a current member signs anyone in (the sign-in and the approval
/// routes alike).
pub(super) fn require_member(state: &NodeState) -> Result<(), ApiError> {
    if state.is_member() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_a_member",
        "this node is not a member of the network and cannot sign anyone in",
    ))
}

/// The request's client must still be registered with this redirect URI
/// (it may have been changed or deleted since the page loaded).
fn check_client(state: &NodeState, req: &AuthRequest) -> Result<(), ApiError> {
    let client = super::find_client(state, &req.client_id)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_client", e.to_string()))?;
    if !client.redirect_uris.contains(&req.redirect_uri) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            "the client no longer has this redirect URI",
        ));
    }
    Ok(())
}

/// `POST /oidc/signin/challenge`.
pub async fn challenge(
    State(state): State<Arc<NodeState>>,
    body: Result<Json<ChallengeBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let req = code::open_request(&state, &body.request)?;
    require_member(&state)?;
    let now = crate::now();
    let audience = Some(req.client_id.as_str());
    let ch = match (&body.did, body.passkey) {
        (Some(did), _) => state.auth.challenge(&state.ledger, did, audience, now),
        (None, true) => state.auth.passkey_challenge(audience, now),
        (None, false) => return Err(bad("name a did, or ask for a passkey challenge")),
    }
    .inspect_err(|_| state.metrics.logins_failed.inc())?;
    state.metrics.challenges_issued.inc();
    let policy = ch.policy.map(|mut p| {
        if req.mfa {
            p.required = p.required.max(2);
        }
        p
    });
    Ok(no_store(ChallengeAnswer {
        policy,
        did: body.did,
        webauthn_challenge: URL_SAFE_NO_PAD.encode(challenge_for(ch.message.as_bytes())),
        message: ch.message,
        nonce: ch.nonce,
        expires_at: ch.expires_at,
    }))
}

/// The DID a completion is for: `did`, or the passkey's user handle.
fn did_of(body: &CompleteBody) -> Result<String, ApiError> {
    let handle = match body
        .assertion
        .as_ref()
        .and_then(|a| a.user_handle.as_deref())
    {
        Some(h) => {
            let bytes = URL_SAFE_NO_PAD
                .decode(h.trim_end_matches('='))
                .map_err(|_| bad("assertion.user_handle is not base64url"))?;
            Some(String::from_utf8(bytes).map_err(|_| bad("assertion.user_handle is not a DID"))?)
        }
        None => None,
    };
    match (&body.did, handle) {
        (Some(did), Some(h)) if *did != h => Err(bad("did and the passkey's user handle differ")),
        (Some(did), _) => Ok(did.clone()),
        (None, Some(h)) => Ok(h),
        (None, None) => Err(bad("name the did (or sign with a passkey that carries it)")),
    }
}

/// `POST /oidc/signin/complete`.
pub async fn complete(
    State(state): State<Arc<NodeState>>,
    body: Result<Json<CompleteBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let req = code::open_request(&state, &body.request)?;
    require_member(&state)?;
    check_client(&state, &req)?;
    let did = did_of(&body)?;
    let settings = &state.oidc.settings;
    if body.signature.is_none() && body.assertion.is_none() {
        return Err(bad("send a signature, an assertion, or both"));
    }
    let signatures: Vec<&str> = body.signature.as_deref().into_iter().collect();
    let proofs = Proofs {
        signatures: &signatures,
        passkey: body.assertion.as_ref().map(|assertion| PasskeyProof {
            assertion,
            origins: &settings.origins,
            rp_id: &settings.rp_id,
        }),
        sms: None,
    };
    let demand = Demand {
        usernameless: body.did.is_none(),
        min_factors: if req.mfa { 2 } else { 0 },
    };
    let now = crate::now();
    let verified =
        match state
            .auth
            .verify_all(&state.ledger, &did, &body.nonce, &proofs, demand, now)
        {
            Ok(v) => v,
            Err(e) => {
                state.metrics.logins_failed.inc();
                tracing::info!(reason = %e, "sign-in refused");
                return Err(e.into());
            }
        };
    if let Some(p) = &verified.passkey {
        if let Err(e) = state
            .oidc
            .counters
            .check_and_record(&did, &p.credential_id, p.sign_count)
            .await
        {
            state.metrics.logins_failed.inc();
            tracing::warn!(reason = %e, "passkey sign-in refused");
            return Err(counter_refusal(e));
        }
    }
    let amr = verified.amr();
    let amr: Vec<&str> = amr.iter().map(String::as_str).collect();
    let code =
        code::issue_with_key(&state, &req, &did, &amr, verified.key.as_deref()).map_err(|e| {
            tracing::error!(error = %e, "authorization code not issued");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })?;
    Ok(no_store(serde_json::json!({
        "redirect": code::success_redirect(&state, &req, &code),
    })))
}

/// The answer to a passkey whose sign counter went backwards (a clone) or
/// could not be checked.
pub fn counter_refusal(e: super::counters::CounterError) -> ApiError {
    match e {
        super::counters::CounterError::Cloned { .. } => {
            ApiError::new(StatusCode::FORBIDDEN, "passkey_cloned", e.to_string())
        }
        super::counters::CounterError::Store(_) => AuthError::Busy.into(),
    }
}
