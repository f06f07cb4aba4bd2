//! Login through the real client library: `NodeClient::login` of
//! `didmesh-client`, the code the `didmesh login` command runs (challenge,
//! the wallet's phishing checks, signature, token). Tests that log in this
//! way fail when the client and the node stop agreeing, not only when the
//! node changes.
//!
//! A refusal by the node comes back as [`LoginError::Refused`] with the
//! node's status and `{"error","reason"}`, what a user would see.

use didmesh_client::node::NodeClient;
use didmesh_client::ClientError;
use ed25519_dalek::SigningKey;

/// Why a login gave no token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    /// The node answered 4xx/5xx with this `{"error","reason"}`.
    Refused {
        status: u16,
        error: String,
        reason: String,
    },
    /// The client gave up before the node refused: the node could not be
    /// reached, or the wallet refused to sign (phishing checks).
    Client(String),
}

impl LoginError {
    /// The node's HTTP status, when the node refused.
    pub fn status(&self) -> Option<u16> {
        match self {
            LoginError::Refused { status, .. } => Some(*status),
            LoginError::Client(_) => None,
        }
    }

    /// The node's error code (`"invalid_signature"`, …), when it refused.
    pub fn error(&self) -> Option<&str> {
        match self {
            LoginError::Refused { error, .. } => Some(error),
            LoginError::Client(_) => None,
        }
    }
}

impl std::fmt::Display for LoginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginError::Refused {
                status,
                error,
                reason,
            } => write!(f, "HTTP {status} {error}: {reason}"),
            LoginError::Client(e) => write!(f, "{e}"),
        }
    }
}

/// Logs `did` in at the node at `url` with `key`; the access token.
pub async fn login(
    url: &str,
    did: &str,
    key: &SigningKey,
    audience: Option<&str>,
) -> Result<String, LoginError> {
    let client = NodeClient::new(url).map_err(|e| LoginError::Client(e.to_string()))?;
    match client.login(did, key, audience).await {
        Ok(token) => Ok(token.access_token),
        Err(ClientError::Node {
            status,
            code,
            reason,
        }) => Err(LoginError::Refused {
            status,
            error: code,
            reason,
        }),
        Err(e) => Err(LoginError::Client(e.to_string())),
    }
}
