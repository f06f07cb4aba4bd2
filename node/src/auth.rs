//! Login: one-time challenges and EdDSA access tokens.
//!
//! `challenge` looks the DID up (ledger or did:key), stores a single-use
//! nonce with its expiry, and returns the message to sign. `token` takes the
//! nonce out of the store (so it can never be used twice, whatever the
//! outcome), re-resolves the DID (it may have rotated or been deactivated
//! since), checks the signature against the `authentication` keys, and
//! signs a JWT with the node's member key.

use crate::didkey;
use did_core::login::{verify_did_key_login, verify_login, LoginChallenge, LoginError};
use did_core::{Claims, Ledger, PublicKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore as _;
use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

/// Shards of the challenge map, so concurrent logins rarely contend.
const CHALLENGE_SHARDS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("DID {0} is not known to this network")]
    UnknownDid(String),
    #[error("DID is deactivated")]
    Deactivated,
    #[error("nonce is unknown or was already used")]
    UnknownNonce,
    #[error("challenge expired")]
    Expired,
    #[error("the challenge was issued for another DID")]
    DidMismatch,
    #[error("{0}")]
    Signature(LoginError),
    #[error("too many outstanding challenges; try again shortly")]
    Busy,
    #[error("token signing failed")]
    Signing,
}

/// Fixed facts of this node that go into challenges and tokens.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Authority users sign in to (shown in the message).
    pub domain: String,
    pub network_id: String,
    pub issuer: String,
    pub default_audience: String,
    pub challenge_ttl: u64,
    pub token_ttl: u64,
    /// Outstanding challenges kept at most (memory bound).
    pub max_challenges: usize,
}

struct Pending {
    challenge: LoginChallenge,
    /// The rendered text that was signed (rendered once, at issue time).
    message: String,
}

/// Outstanding challenges by nonce.
pub struct ChallengeStore {
    shards: Vec<Mutex<HashMap<String, Pending>>>,
    per_shard: usize,
}

impl ChallengeStore {
    pub fn new(max: usize) -> ChallengeStore {
        ChallengeStore {
            shards: (0..CHALLENGE_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            per_shard: (max / CHALLENGE_SHARDS).max(1),
        }
    }

    fn shard(&self, nonce: &str) -> &Mutex<HashMap<String, Pending>> {
        let h = nonce
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        &self.shards[h % CHALLENGE_SHARDS]
    }

    fn insert(&self, p: Pending, now: u64) -> Result<(), AuthError> {
        let mut map = self
            .shard(&p.challenge.nonce)
            .lock()
            .map_err(|_| AuthError::Busy)?;
        if map.len() >= self.per_shard {
            map.retain(|_, v| v.challenge.expires_at > now);
            if map.len() >= self.per_shard {
                return Err(AuthError::Busy);
            }
        }
        map.insert(p.challenge.nonce.clone(), p);
        Ok(())
    }

    /// Removes and returns a challenge: a nonce works at most once.
    fn take(&self, nonce: &str) -> Option<Pending> {
        self.shard(nonce).lock().ok()?.remove(nonce)
    }

    /// Challenges currently held (for metrics).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .filter_map(|s| s.lock().ok())
            .map(|m| m.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A challenge as sent to the wallet.
#[derive(Debug, serde::Serialize)]
pub struct ChallengeResponse {
    pub nonce: String,
    pub message: String,
    pub issued_at: u64,
    pub expires_at: u64,
    pub audience: String,
}

/// A token as sent to the wallet (RFC 6749 §5.1 field names).
#[derive(Debug, serde::Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
}

/// The login service.
pub struct Authenticator {
    settings: AuthSettings,
    challenges: ChallengeStore,
    key: EncodingKey,
    kid: String,
}

/// The key a DID logs in with, as resolved now.
enum LoginKeys {
    Mesh(did_core::DidState),
    DidKey(PublicKey),
}

impl Authenticator {
    pub fn new(settings: AuthSettings, member_key_pkcs8: &[u8], kid: String) -> Authenticator {
        Authenticator {
            challenges: ChallengeStore::new(settings.max_challenges),
            settings,
            key: EncodingKey::from_ed_der(member_key_pkcs8),
            kid,
        }
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    pub fn outstanding_challenges(&self) -> usize {
        self.challenges.len()
    }

    fn resolve(&self, ledger: &RwLock<Ledger>, did: &str) -> Result<LoginKeys, AuthError> {
        if did.starts_with("did:key:") {
            let (_, key) =
                didkey::resolve(did).map_err(|e| AuthError::InvalidRequest(e.to_string()))?;
            return Ok(LoginKeys::DidKey(key));
        }
        did_core::op::parse_mesh_did(did).map_err(|e| AuthError::InvalidRequest(e.to_string()))?;
        let ledger = ledger.read().map_err(|_| AuthError::Busy)?;
        let view = ledger
            .resolve(did)
            .ok_or_else(|| AuthError::UnknownDid(did.to_string()))?;
        let state = view.state.ok_or(AuthError::Deactivated)?;
        Ok(LoginKeys::Mesh(state.clone()))
    }

    /// Step 1: a one-time challenge for `did`.
    pub fn challenge(
        &self,
        ledger: &RwLock<Ledger>,
        did: &str,
        audience: Option<&str>,
        now: u64,
    ) -> Result<ChallengeResponse, AuthError> {
        self.resolve(ledger, did)?;
        let audience = match audience {
            None => self.settings.default_audience.clone(),
            Some(a) if valid_audience(a) => a.to_string(),
            Some(_) => {
                return Err(AuthError::InvalidRequest(
                    "audience must be 1-128 printable ASCII characters".into(),
                ))
            }
        };
        let mut raw = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let nonce: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let challenge = LoginChallenge {
            domain: self.settings.domain.clone(),
            did: did.to_string(),
            network_id: self.settings.network_id.clone(),
            nonce: nonce.clone(),
            audience: audience.clone(),
            issued_at: now,
            expires_at: now + self.settings.challenge_ttl,
        };
        let message = challenge.message();
        let response = ChallengeResponse {
            nonce,
            message: message.clone(),
            issued_at: challenge.issued_at,
            expires_at: challenge.expires_at,
            audience,
        };
        self.challenges
            .insert(Pending { challenge, message }, now)?;
        Ok(response)
    }

    /// Step 2: exchanges a signed challenge for an access token.
    pub fn token(
        &self,
        ledger: &RwLock<Ledger>,
        did: &str,
        nonce: &str,
        signature: &str,
        now: u64,
    ) -> Result<(TokenResponse, Claims), AuthError> {
        let pending = self.challenges.take(nonce).ok_or(AuthError::UnknownNonce)?;
        if pending.challenge.expires_at <= now {
            return Err(AuthError::Expired);
        }
        if pending.challenge.did != did {
            return Err(AuthError::DidMismatch);
        }
        let message = &pending.message;
        match self.resolve(ledger, did)? {
            LoginKeys::Mesh(state) => {
                verify_login(&state, message.as_bytes(), signature)
                    .map_err(AuthError::Signature)?;
            }
            LoginKeys::DidKey(key) => {
                verify_did_key_login(&key, message.as_bytes(), signature)
                    .map_err(AuthError::Signature)?;
            }
        }
        let mut jti = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut jti);
        let claims = Claims {
            iss: self.settings.issuer.clone(),
            sub: did.to_string(),
            aud: pending.challenge.audience,
            iat: now,
            nbf: now,
            exp: now + self.settings.token_ttl,
            jti: jti.iter().map(|b| format!("{b:02x}")).collect(),
            auth_time: now,
            amr: vec!["swk".into()],
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        let access_token =
            jsonwebtoken::encode(&header, &claims, &self.key).map_err(|_| AuthError::Signing)?;
        Ok((
            TokenResponse {
                access_token,
                token_type: "Bearer",
                expires_in: self.settings.token_ttl,
            },
            claims,
        ))
    }
}

fn valid_audience(a: &str) -> bool {
    !a.is_empty() && a.len() <= 128 && a.bytes().all(|b| b.is_ascii_graphic())
}
