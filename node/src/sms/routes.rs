//! `POST /v1/auth/sms {did, nonce, phone, number, salt}` → 202
//! `{"sent_to": "+1********34", "expires_in": 300}`.
//!
//! In this order, so that nothing is spent on a request that could not
//! lead to a login:
//!
//! 1. SMS configured, else 501 `sms_disabled`; this node a member (only
//!    members issue tokens), else 503 `not_a_member`;
//! 2. the nonce is a live challenge of this node for `did` (MAC, not used,
//!    not expired; [`crate::auth::Authenticator::live_nonce`]), else 400;
//! 3. `did` resolves (active, not disputed) and holds phone `phone`, which
//!    its login policy counts (a code for a phone that does not count
//!    would buy nothing), and `number` is E.164 and
//!    `phone_commitment(salt, number)` equals the phone's commitment, else
//!    403 `phone_mismatch` / `phone_not_counted`: nothing sent, nothing
//!    spent;
//! 4. the code slot is not used up or locked ([`super::codes`]), else 429;
//! 5. the spend guard ([`super::guard`]) reserves the price, else 429
//!    `sms_limited` with the limit as `reason` and `Retry-After`;
//! 6. the reservation is flushed, the code sent; a provider failure is 502
//!    `sms_provider_error` and refunds what was certainly not sent.
//!
//! The route is rate-limited per client network like the other login
//! endpoints (`--auth-rate`). Numbers appear in logs masked only; codes
//! and the Twilio token never.

use super::guard::{Attempt, Reason};
use super::{codes, mask, SmsError};
use crate::api::ApiError;
use crate::NodeState;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use did_core::policy::FactorKind;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;

/// The endpoint.
pub const SMS_PATH: &str = "/v1/auth/sms";
/// Salt lengths accepted (the wallet makes 16 bytes).
const SALT_LEN: std::ops::RangeInclusive<usize> = 16..=64;

/// Body of `POST /v1/auth/sms`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsRequest {
    pub did: String,
    pub nonce: String,
    /// The phone's entry id in the DID state.
    pub phone: String,
    /// E.164.
    pub number: String,
    /// base64url (no padding) of the commitment's salt.
    pub salt: String,
}

// By hand: the number and salt never reach a debug print.
impl std::fmt::Debug for SmsRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsRequest")
            .field("did", &self.did)
            .field("phone", &self.phone)
            .field("number", &mask(&self.number))
            .finish_non_exhaustive()
    }
}

/// Answer 202 of `POST /v1/auth/sms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsSent {
    /// The number, masked.
    pub sent_to: String,
    /// Seconds the code is accepted.
    pub expires_in: u64,
}

/// The route; `limited` puts the login rate limit around it.
pub fn routes(
    limited: impl Fn(Router<Arc<NodeState>>) -> Router<Arc<NodeState>>,
) -> Router<Arc<NodeState>> {
    limited(Router::new().route(SMS_PATH, post(send)))
}

impl From<SmsError> for ApiError {
    fn from(e: SmsError) -> ApiError {
        let (status, code) = match e {
            SmsError::Disabled => (StatusCode::NOT_IMPLEMENTED, "sms_disabled"),
            SmsError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            _ => (StatusCode::UNAUTHORIZED, "invalid_sms_code"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

fn forbidden(error: &'static str, reason: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, error, reason)
}

/// 429 `{"error":"sms_limited","reason":<limit>,"message":…}` with
/// `Retry-After` (RFC 6585 §4).
fn limited_response(reason: &str, message: &str, retry_after: u64) -> Response {
    let body = serde_json::json!({
        "error": "sms_limited",
        "reason": reason,
        "message": message,
    });
    let mut r = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
    r
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "SMS guard store failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the SMS guard's store failed; try again later",
    )
}

async fn send(
    State(state): State<Arc<NodeState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<SmsRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let sms = state.sms.as_ref().ok_or(SmsError::Disabled)?;
    let Json(req) = body?;
    if !state.is_member() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_a_member",
            "this node is not a member of the network and cannot issue tokens; log in at a member node",
        ));
    }
    let now = crate::now();
    let nonce = state.auth.live_nonce(&req.did, &req.nonce, now)?;
    // The DID's phone, its commitment, and whether it counts.
    let commitment = {
        let ledger = state.ledger.read().map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "ledger busy",
            )
        })?;
        let view = ledger.resolve(&req.did).ok_or_else(|| {
            forbidden(
                "phone_mismatch",
                "only a did:mesh DID on this network can commit to a phone",
            )
        })?;
        if view.disputed.is_some() {
            return Err(forbidden("did_disputed", "the DID is disputed"));
        }
        let did_state = view
            .state
            .ok_or_else(|| forbidden("did_deactivated", "the DID is deactivated"))?;
        let phone = did_state.phone(&req.phone).ok_or_else(|| {
            forbidden(
                "phone_mismatch",
                format!("the DID has no phone {:?}", req.phone),
            )
        })?;
        let (_, counted) = did_state.login_requirement();
        if !counted
            .iter()
            .any(|f| f.kind == FactorKind::Phone && f.id == req.phone)
        {
            return Err(forbidden(
                "phone_not_counted",
                format!(
                    "the DID's login policy does not count phone {:?}: a code would not help this login",
                    req.phone
                ),
            ));
        }
        phone.commitment.clone()
    };
    let salt = URL_SAFE_NO_PAD
        .decode(req.salt.as_bytes())
        .ok()
        .filter(|s| SALT_LEN.contains(&s.len()))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "salt must be base64url (no padding) of 16-64 bytes",
            )
        })?;
    if !did_core::policy::is_e164(&req.number)
        || did_core::policy::phone_commitment(&salt, &req.number) != commitment
    {
        state.metrics.logins_failed.inc();
        tracing::info!(did = %req.did, phone = %req.phone, "SMS refused: number does not match the commitment");
        return Err(forbidden(
            "phone_mismatch",
            "the number and salt do not match the DID's commitment for this phone",
        ));
    }
    if let Err(e) = sms.codes.may_send(nonce.id, &req.phone, now) {
        return Ok(match e {
            SmsError::Busy => ApiError::from(e).into_response(),
            other => limited_response("code_slot", &other.to_string(), 1),
        });
    }
    let attempt = Attempt {
        number: &req.number,
        did: &req.did,
        client: peer.ip(),
        now,
    };
    let reservation = match sms.guard.reserve(&attempt).map_err(unavailable)? {
        Ok(r) => r,
        Err(refusal) => {
            if refusal.reason == Reason::Velocity {
                // A new block: durable before the answer.
                sms.guard.flush().await.map_err(unavailable)?;
            }
            tracing::info!(
                to = %mask(&req.number),
                reason = refusal.reason.as_str(),
                "SMS refused by the spend guard"
            );
            return Ok(limited_response(
                refusal.reason.as_str(),
                refusal.reason.explain(),
                refusal.retry_after,
            ));
        }
    };
    // Durable before the money can go out (guard module doc).
    sms.guard.flush().await.map_err(unavailable)?;
    let code = codes::new_code();
    let text = format!(
        "{code} is your didmesh sign-in code for {}. It expires in {} minutes. Never share it.",
        state.auth.settings().domain,
        codes::CODE_TTL / 60
    );
    match sms.twilio.send(&req.number, &text).await {
        Ok(sent) => {
            sms.codes.put(nonce.id, &req.phone, &code, now)?;
            // The count of messages sent is money too: durable like the
            // reservation. A failure here loses a count, not the code.
            if let Err(e) = sms.guard.sent(&reservation) {
                tracing::error!(error = %e, "SMS sent but not counted");
            } else if let Err(e) = sms.guard.flush().await {
                tracing::error!(error = %e, "SMS count not flushed");
            }
            tracing::info!(
                to = %mask(&req.number),
                prefix = %reservation.prefix,
                price = %super::config::money(reservation.price),
                sid = %sent.sid,
                status = %sent.status,
                "SMS code sent"
            );
            Ok((
                StatusCode::ACCEPTED,
                Json(SmsSent {
                    sent_to: mask(&req.number),
                    expires_in: codes::CODE_TTL,
                }),
            )
                .into_response())
        }
        Err(e) => {
            let refund = e.nothing_sent();
            sms.guard
                .failed(&reservation, refund)
                .map_err(unavailable)?;
            sms.guard.flush().await.map_err(unavailable)?;
            tracing::warn!(
                to = %mask(&req.number),
                error = %e,
                refunded = refund,
                "SMS not sent"
            );
            Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "sms_provider_error",
                e.to_string(),
            ))
        }
    }
}
