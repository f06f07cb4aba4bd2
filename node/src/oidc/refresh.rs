//! OpenID refresh tokens (RFC 6749 §6; rotation per RFC 9700 §4.14.2).
//!
//! A refresh token is signed by the member that issued it, like an
//! authorization code ([`super::code`]), so any node can check it; its
//! single use is decided by that issuer through the same libp2p consume
//! exchange as codes ([`super::consume`]). Unlike a code it lives for
//! [`REFRESH_TTL`] (30 days), so the issuer records used ids in a sled
//! tree (`oidc-refresh-used`) that survives restarts, flushed before the
//! answer: a restart cannot bring a used refresh token back.
//!
//! ```text
//! drt1.<base64url(JSON facts)>.<base64url(Ed25519 over "didmesh oidc refresh token v1\0" ‖ JSON)>
//! ```
//!
//! Each use returns a new refresh token (rotation); presenting a used one
//! again is `invalid_grant`. A refresh token is dead once its DID is
//! deactivated or disputed, or its DID's revocations cover its `iat` or
//! the `auth_time` of the sign-in it descends from (PROTOCOL.md,
//! "Revocation"); `/oidc/revoke` consumes it at its issuer (RFC 7009).

use crate::NodeState;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use did_core::sync_frame::ConsumeVerdict;
use did_core::PublicKey;
use serde::{Deserialize, Serialize};

/// Text prefix of a refresh token (never the start of a code: codes are
/// plain base64url, which has no `.`).
pub const PREFIX: &str = "drt1.";
const CONTEXT: &[u8] = b"didmesh oidc refresh token v1\0";
/// Lifetime of a refresh token, seconds (30 days).
pub const REFRESH_TTL: u64 = 30 * 24 * 3600;
/// The issuer's sled tree of used refresh token ids.
pub const USED_TREE: &str = "oidc-refresh-used";
/// Longest refresh token: it must fit a consume frame.
const MAX_TEXT: usize = did_core::sync_frame::MAX_CODE_BYTES;

/// What a refresh token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshFacts {
    /// 32 hex digits; what the issuer records as used.
    pub id: String,
    pub iat: u64,
    pub exp: u64,
    /// When the user signed in (the first token of the chain).
    pub auth_time: u64,
    /// The member that signed it.
    pub member: PublicKey,
    /// Its libp2p peer id; `None` for a node running without p2p.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    pub client_id: String,
    pub sub: String,
    pub amr: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp: Option<String>,
    /// The DID key (multibase) or passkey id that proved the sign-in the
    /// chain descends from: every token minted from it carries it as its
    /// `key` claim, so removing that key revokes the chain (PROTOCOL.md,
    /// "Revocation").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Why a refresh token cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    #[error("malformed refresh token")]
    Malformed,
    #[error("refresh token not signed by a current member")]
    UnknownIssuer,
    #[error("refresh token signature does not verify")]
    BadSignature,
}

/// Issues a refresh token of this node for the sign-in `signin` (a code's
/// or the previous refresh token's facts: its `sub`, `auth_time`, `amr`,
/// `idp` and `key`) at `client_id`. `None` when the facts do not fit a
/// consume frame (the client then signs in again when its access token
/// expires).
pub fn issue(
    state: &NodeState,
    client_id: &str,
    signin: &super::code::CodeFacts,
    now: u64,
) -> Option<String> {
    use rand::RngCore as _;
    let mut id = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut id);
    let facts = RefreshFacts {
        id: data_encoding::HEXLOWER.encode(&id),
        iat: now,
        exp: now.saturating_add(REFRESH_TTL),
        auth_time: signin.auth_time,
        member: state.token_keys.ed25519_public(),
        peer: state.p2p.get().map(|p| p.peer_id().to_string()),
        client_id: client_id.to_string(),
        sub: signin.sub.clone(),
        amr: signin.amr.clone(),
        idp: signin.idp.clone(),
        key: signin.key.clone(),
    };
    let payload = serde_json::to_vec(&facts).ok()?;
    let (signer, sig) = state
        .token_keys
        .ed25519_sign(&super::code::signing_input(CONTEXT, &payload));
    if signer != facts.member {
        // A rotation landed between the two reads; the caller's next
        // refresh gets a token from the new key.
        return None;
    }
    let text = format!(
        "{PREFIX}{}.{}",
        URL_SAFE_NO_PAD.encode(&payload),
        URL_SAFE_NO_PAD.encode(sig.to_bytes())
    );
    (text.len() <= MAX_TEXT).then_some(text)
}

/// Whether `text` is shaped like a refresh token (not a code, not a JWT).
pub fn is_refresh_token(text: &str) -> bool {
    text.starts_with(PREFIX)
}

/// Reads and verifies a refresh token: well formed, signed by the member
/// it names, a current member. Expiry, revocation and single use are the
/// caller's.
pub fn read(state: &NodeState, text: &str) -> Result<RefreshFacts, RefreshError> {
    if text.len() > MAX_TEXT {
        return Err(RefreshError::Malformed);
    }
    let rest = text.strip_prefix(PREFIX).ok_or(RefreshError::Malformed)?;
    let (payload, sig) = rest.split_once('.').ok_or(RefreshError::Malformed)?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| RefreshError::Malformed)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| RefreshError::Malformed)?;
    let facts: RefreshFacts =
        serde_json::from_slice(&payload).map_err(|_| RefreshError::Malformed)?;
    // A current member's key, or one rotated away inside the overlap
    // window: a rotation does not sign everyone out at once.
    if !state.is_live_member_key(&facts.member) {
        return Err(RefreshError::UnknownIssuer);
    }
    let sig = ed25519_dalek::Signature::from_slice(&sig).map_err(|_| RefreshError::Malformed)?;
    if !facts
        .member
        .verify(&super::code::signing_input(CONTEXT, &payload), &sig)
    {
        return Err(RefreshError::BadSignature);
    }
    Ok(facts)
}

/// The issuer's side: `text` must be this node's own refresh token, not
/// expired; its id is recorded as used (compare-and-swap, flushed).
pub fn consume_own(state: &NodeState, text: &str, now: u64) -> ConsumeVerdict {
    let Ok(facts) = read(state, text) else {
        return ConsumeVerdict::Refused;
    };
    if !crate::views::own_key(state, &facts.member, now) || facts.exp <= now {
        return ConsumeVerdict::Refused;
    }
    if let (Some(mine), Some(named)) = (state.p2p.get(), facts.peer.as_deref()) {
        if mine.peer_id().to_string() != named {
            return ConsumeVerdict::Refused;
        }
    }
    let tree = match state.store.read().map(|s| s.side_tree(USED_TREE)) {
        Ok(Ok(t)) => t,
        _ => return ConsumeVerdict::Refused,
    };
    let swapped = tree.compare_and_swap(
        facts.id.as_bytes(),
        None::<&[u8]>,
        Some(&facts.exp.to_be_bytes()[..]),
    );
    match swapped {
        Ok(Ok(())) => {
            // On disk before the answer (module doc).
            if crate::storage::gated(|| tree.flush()).is_err() {
                return ConsumeVerdict::Refused;
            }
            ConsumeVerdict::FirstUse
        }
        Ok(Err(_)) => ConsumeVerdict::AlreadyUsed,
        Err(_) => ConsumeVerdict::Refused,
    }
}

/// Drops used ids whose tokens expired (their tokens are refused as
/// expired anyway).
pub fn prune(state: &NodeState, now: u64) {
    let Ok(Ok(tree)) = state.store.read().map(|s| s.side_tree(USED_TREE)) else {
        return;
    };
    let expired: Vec<sled::IVec> = tree
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, v)| {
            <[u8; 8]>::try_from(v.as_ref()).is_ok_and(|b| u64::from_be_bytes(b) <= now)
        })
        .map(|(k, _)| k)
        .collect();
    for k in expired {
        let _ = tree.remove(k);
    }
}
