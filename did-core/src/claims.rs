//! Access-token claims (RFC 7519 §4.1 registered claims plus OpenID Connect
//! `auth_time` and RFC 8176 `amr`).

use serde::{Deserialize, Serialize};

/// What a didmesh access token says about its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The network's issuer string (same on every node).
    pub iss: String,
    /// The DID that logged in.
    pub sub: String,
    /// The relying party the token is for.
    pub aud: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    /// Unique token id (RFC 7519 §4.1.7).
    pub jti: String,
    /// When the user proved possession of the key.
    pub auth_time: u64,
    /// Authentication methods (RFC 8176): `swk` for a software-held key.
    pub amr: Vec<String>,
}
