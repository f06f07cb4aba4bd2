//! The login challenge: a plain-text message in the spirit of Sign-In with
//! Ethereum (EIP-4361), naming the node's domain, the DID, a one-time nonce,
//! when it was issued and when it expires, and the network. The wallet signs
//! the message bytes with an `authentication` key of the DID.

use crate::keys::{signature_from_b64, PublicKey};
use crate::op::{DidState, Relationship};
use crate::time::rfc3339;

/// The fields of a challenge; [`LoginChallenge::message`] renders the text
/// that is signed. Nodes keep the struct, wallets only see the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginChallenge {
    /// The RFC 3986 authority the user signs in to (e.g. `127.0.0.1:7001`).
    pub domain: String,
    pub did: String,
    pub network_id: String,
    pub nonce: String,
    /// The relying party the token will be for (RFC 7519 `aud`).
    pub audience: String,
    pub issued_at: u64,
    pub expires_at: u64,
}

impl LoginChallenge {
    /// The exact bytes to sign, EIP-4361 layout adapted to DIDs.
    pub fn message(&self) -> String {
        format!(
            "{domain} wants you to sign in with your DID:\n{did}\n\n\
             Sign in to didmesh. This request will not trigger any transaction.\n\n\
             URI: didmesh://{domain}\n\
             Version: 1\n\
             Network ID: {network}\n\
             Audience: {aud}\n\
             Nonce: {nonce}\n\
             Issued At: {iat}\n\
             Expiration Time: {exp}",
            domain = self.domain,
            did = self.did,
            network = self.network_id,
            nonce = self.nonce,
            aud = self.audience,
            iat = rfc3339(self.issued_at),
            exp = rfc3339(self.expires_at),
        )
    }
}

/// Why a login signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("signature must be base64url of 64 bytes")]
    BadEncoding,
    #[error("signature does not verify with any authentication key of the DID")]
    NoMatchingKey,
    #[error("DID is deactivated")]
    Deactivated,
}

/// Finds the `authentication` key of `state` that signed `message`.
pub fn verify_login<'a>(
    state: &'a DidState,
    message: &[u8],
    signature_b64: &str,
) -> Result<&'a PublicKey, LoginError> {
    let sig = signature_from_b64(signature_b64).map_err(|_| LoginError::BadEncoding)?;
    state
        .keys_for(Relationship::Authentication)
        .map(|vm| &vm.public_key_multibase)
        .find(|k| k.verify(message, &sig))
        .ok_or(LoginError::NoMatchingKey)
}

/// Verifies a login signed by the key a `did:key` names.
pub fn verify_did_key_login(
    key: &PublicKey,
    message: &[u8],
    signature_b64: &str,
) -> Result<(), LoginError> {
    let sig = signature_from_b64(signature_b64).map_err(|_| LoginError::BadEncoding)?;
    if key.verify(message, &sig) {
        Ok(())
    } else {
        Err(LoginError::NoMatchingKey)
    }
}
