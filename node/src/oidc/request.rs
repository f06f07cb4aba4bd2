//! The authorization request handle: the whole checked authorization
//! request, carried by the sign-in page instead of kept in the node.
//!
//! ```text
//! handle = base64url(JSON of AuthRequest) "." base64url(tag[16])
//! tag    = blake3_keyed(node secret, "didmesh oidc request v1" ‖ JSON)
//! ```
//!
//! The secret is the [`crate::auth::Authenticator`]'s (memory only, one per
//! node and per start), so only the node that checked the request accepts
//! its handle, for [`super::REQUEST_TTL`] seconds: the page sends every call
//! back to that node (`node_url`). Nothing is stored, so a flood of page
//! loads costs no memory. The handle is not secret (it is in the page);
//! what it guards is that the client, redirect URI, PKCE challenge, nonce
//! and state a code is later bound to are exactly those checked at
//! `/oidc/authorize`.

use crate::api::ApiError;
use crate::NodeState;
use axum::http::StatusCode;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// MAC context of handles.
const CONTEXT: &[u8] = b"didmesh oidc request v1";
/// Longest handle accepted (a request holds at most ~1.6 KB of fields).
const MAX_HANDLE: usize = 4096;

/// A checked authorization request (OIDC Core §3.1.2.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthRequest {
    pub client_id: String,
    /// Byte-equal to one of the client's registered redirect URIs.
    pub redirect_uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// RFC 7636 S256 challenge (43 base64url characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_challenge: Option<String>,
    /// The client asked for `acr_values=urn:didmesh:acr:mfa`: the sign-in
    /// must present two or more distinct factors, whatever the DID's
    /// policy says.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mfa: bool,
    /// Unix seconds after which the handle is refused.
    pub expires_at: u64,
}

/// Why a handle was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the sign-in request is not one this node issued (open the app's sign-in link again)")]
    Invalid,
    #[error("the sign-in request expired; start again from the app")]
    Expired,
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> ApiError {
        let code = match e {
            RequestError::Invalid => "invalid_request_handle",
            RequestError::Expired => "request_expired",
        };
        ApiError::new(StatusCode::BAD_REQUEST, code, e.to_string())
    }
}

/// The handle of `req` (module doc).
pub fn seal(state: &NodeState, req: &AuthRequest) -> String {
    // A struct of strings and integers always serializes.
    let json = serde_json::to_vec(req).unwrap_or_default();
    let tag = state.auth.mac(CONTEXT, &json);
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&json),
        URL_SAFE_NO_PAD.encode(&tag[..16])
    )
}

/// Checks a handle's MAC and expiry and returns its request.
pub fn open(state: &NodeState, handle: &str, now: u64) -> Result<AuthRequest, RequestError> {
    if handle.len() > MAX_HANDLE {
        return Err(RequestError::Invalid);
    }
    let (body, tag) = handle.split_once('.').ok_or(RequestError::Invalid)?;
    let json = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| RequestError::Invalid)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| RequestError::Invalid)?;
    let want = state.auth.mac(CONTEXT, &json);
    // Constant time: the comparison must not tell how many bytes matched.
    if tag.len() != 16
        || want[..16]
            .iter()
            .zip(&tag)
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            != 0
    {
        return Err(RequestError::Invalid);
    }
    let req: AuthRequest = serde_json::from_slice(&json).map_err(|_| RequestError::Invalid)?;
    if req.expires_at <= now {
        return Err(RequestError::Expired);
    }
    Ok(req)
}
