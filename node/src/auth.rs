//! Login: stateless one-time challenges and EdDSA access tokens.
//!
//! Issuing a challenge costs the node no memory, so a stranger cannot fill
//! a store of pending challenges and lock honest users out. The nonce
//! carries the challenge's own facts and a MAC over all of them:
//!
//! ```text
//! nonce = hex( version ‖ issued_at ‖ expires_at ‖ random[16] ‖ tag[16] ‖ audience? )
//! tag   = blake3_keyed(node secret, "didmesh login challenge v1" ‖ domain ‖
//!                      network ‖ did ‖ audience ‖ issued_at ‖ expires_at ‖ random)
//! ```
//!
//! (integers big-endian, strings length-prefixed; the audience is in the
//! nonce only when it differs from the node's default). The secret is 32
//! random bytes made at start and kept in memory only: a restart voids the
//! challenges outstanding (at most `--challenge-ttl` of them, 120 s), which
//! also means the set of redeemed nonces, in memory too, never has to
//! survive a restart for single use to hold. Another node has another
//! secret, so it refuses this node's challenges.
//!
//! `token` rebuilds the challenge from the request's DID and the nonce,
//! checks the MAC, re-resolves the DID (it may have rotated or been
//! deactivated since), checks the signature over the rebuilt message
//! against the `authentication` keys, and only then records the nonce as
//! redeemed, until it expires: a nonce yields at most one token, and only
//! someone holding a key of the DID can use one up (a stranger sending
//! garbage signatures adds nothing to the store). A correctly signed nonce
//! is consumed even when it has expired or cannot be honoured. The store is
//! bounded by [`AuthSettings::max_redeemed`], far above what the node can
//! sign in a challenge lifetime, and pruned by [`Authenticator::prune`].
//!
//! The OpenID provider ([`crate::oidc`]) signs people in through the same
//! challenges and the same redeemed set ([`Authenticator::verify`]), with
//! two more proofs: a WebAuthn assertion by one of the DID's passkeys, and
//! a usernameless passkey sign-in, whose challenge names no DID (the MAC
//! covers the empty string in its place, which no DID is) and whose DID
//! comes from the assertion's user handle. Such a challenge can only be
//! redeemed with a passkey assertion.

use crate::didkey;
use did_core::login::{
    verify_did_key_login, verify_login, verify_passkey_login, LoginChallenge, LoginError,
};
use did_core::passkey::{Assertion, AssertionError};
use did_core::proto::{ChallengeResponse, TokenResponse, TOKEN_TYPE};
use did_core::{Claims, Ledger, PublicKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore as _;
use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

/// Shards of the redeemed-nonce map, so concurrent logins rarely contend.
const SHARDS: usize = 32;
/// First byte of every nonce: the layout above.
const NONCE_VERSION: u8 = 1;
/// version, issued_at, expires_at, random, tag.
const NONCE_FIXED: usize = 1 + 8 + 8 + 16 + 16;
/// Longest audience a challenge may name.
const MAX_AUDIENCE: usize = 128;
/// Domain separation of the MAC.
const MAC_CONTEXT: &[u8] = b"didmesh login challenge v1";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("DID {0} is not known to this network")]
    UnknownDid(String),
    #[error("DID is deactivated")]
    Deactivated,
    #[error("DID is disputed: a rotation key signed conflicting operations; its owner must settle it with a higher-priority rotation key")]
    Disputed,
    #[error("nonce is unknown or was already used")]
    UnknownNonce,
    #[error("challenge expired")]
    Expired,
    #[error("{0}")]
    Signature(LoginError),
    #[error("{0}")]
    Passkey(AssertionError),
    #[error("too many logins in flight; try again shortly")]
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
    /// Redeemed nonces remembered at most (memory bound, ~40 bytes each).
    /// Each one took a verified signature and a token; the default,
    /// 1,000,000, is twice what the node signs in 120 s at full speed.
    pub max_redeemed: usize,
}

/// Nonces already exchanged for a token, by the first 8 bytes of their
/// MAC tag, with their expiry (after which the MAC check refuses them
/// anyway and the entry can go).
struct Redeemed {
    shards: Vec<Mutex<HashMap<u64, u64>>>,
    per_shard: usize,
}

impl Redeemed {
    fn new(max: usize) -> Redeemed {
        Redeemed {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: (max / SHARDS).max(1),
        }
    }

    fn shard(&self, id: u64) -> &Mutex<HashMap<u64, u64>> {
        // The id is MAC output: uniformly spread already.
        &self.shards[(id % SHARDS as u64) as usize]
    }

    fn contains(&self, id: u64) -> Result<bool, AuthError> {
        Ok(self
            .shard(id)
            .lock()
            .map_err(|_| AuthError::Busy)?
            .contains_key(&id))
    }

    /// Records `id`; `false` if it was there already (a replay that raced
    /// the first use).
    fn insert(&self, id: u64, expires_at: u64, now: u64) -> Result<bool, AuthError> {
        let mut map = self.shard(id).lock().map_err(|_| AuthError::Busy)?;
        if map.contains_key(&id) {
            return Ok(false);
        }
        if map.len() >= self.per_shard {
            map.retain(|_, exp| *exp > now);
            if map.len() >= self.per_shard {
                // Never evict a live entry: that would re-open its nonce.
                return Err(AuthError::Busy);
            }
        }
        map.insert(id, expires_at);
        Ok(true)
    }

    fn prune(&self, now: u64) {
        for shard in &self.shards {
            if let Ok(mut map) = shard.lock() {
                map.retain(|_, exp| *exp > now);
                map.shrink_to_fit();
            }
        }
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .filter_map(|s| s.lock().ok())
            .map(|m| m.len())
            .sum()
    }
}

/// The login service.
pub struct Authenticator {
    settings: AuthSettings,
    /// MAC key of challenges; never leaves memory, never logged.
    secret: [u8; 32],
    redeemed: Redeemed,
    key: EncodingKey,
    kid: String,
}

/// The key a DID logs in with, as resolved now.
enum LoginKeys {
    Mesh(did_core::DidState),
    DidKey(PublicKey),
}

/// What a nonce says about itself, once its MAC checked out.
struct Opened {
    challenge: LoginChallenge,
    /// First 8 bytes of the tag: the nonce's id in [`Redeemed`].
    id: u64,
}

/// How a DID proves possession of a key when it redeems a challenge.
#[derive(Debug, Clone, Copy)]
pub enum Proof<'a> {
    /// Base64url Ed25519 signature over the message by an `authentication`
    /// key (wallet, browser key).
    Signature(&'a str),
    /// A WebAuthn assertion over SHA-256 of the message by one of the DID's
    /// passkeys, made on one of `origins` for `rp_id`.
    Passkey {
        assertion: &'a Assertion,
        origins: &'a [String],
        rp_id: &'a str,
    },
}

/// What a passkey sign-in proved, besides the DID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyUse {
    /// The credential id (base64url), for the sign-counter check.
    pub credential_id: String,
    pub sign_count: u32,
    /// The authenticator verified the user (PIN, biometric: flag UV).
    pub user_verified: bool,
}

/// A redeemed challenge: who signed in, to whom, and how.
#[derive(Debug, Clone)]
pub struct Verified {
    pub challenge: LoginChallenge,
    /// `None`: an Ed25519 signature; `Some`: a passkey.
    pub passkey: Option<PasskeyUse>,
}

impl Authenticator {
    pub fn new(settings: AuthSettings, member_key_pkcs8: &[u8], kid: String) -> Authenticator {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Authenticator {
            redeemed: Redeemed::new(settings.max_redeemed),
            settings,
            secret,
            key: EncodingKey::from_ed_der(member_key_pkcs8),
            kid,
        }
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// Redeemed nonces still remembered (for metrics).
    pub fn redeemed_nonces(&self) -> usize {
        self.redeemed.len()
    }

    /// Forgets redeemed nonces that have expired (a timer calls this).
    pub fn prune(&self, now: u64) {
        self.redeemed.prune(now);
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
        if view.disputed.is_some() {
            return Err(AuthError::Disputed);
        }
        let state = view.state.ok_or(AuthError::Deactivated)?;
        Ok(LoginKeys::Mesh(state.clone()))
    }

    /// A keyed hash under this node's secret, for other node-local handles
    /// (the OpenID authorization request, [`crate::oidc::request`]):
    /// `context` separates them from challenges and from each other.
    pub fn mac(&self, context: &[u8], data: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.secret);
        h.update(&(context.len() as u64).to_be_bytes());
        h.update(context);
        h.update(data);
        *h.finalize().as_bytes()
    }

    /// The MAC of a challenge's fields (module doc).
    fn tag(&self, did: &str, audience: &str, iat: u64, exp: u64, random: &[u8]) -> [u8; 16] {
        let mut h = blake3::Hasher::new_keyed(&self.secret);
        h.update(MAC_CONTEXT);
        for field in [
            self.settings.domain.as_bytes(),
            self.settings.network_id.as_bytes(),
            did.as_bytes(),
            audience.as_bytes(),
        ] {
            h.update(&(field.len() as u64).to_be_bytes());
            h.update(field);
        }
        h.update(&iat.to_be_bytes());
        h.update(&exp.to_be_bytes());
        h.update(random);
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&h.finalize().as_bytes()[..16]);
        tag
    }

    /// Step 1: a one-time challenge for `did`. Nothing is stored.
    pub fn challenge(
        &self,
        ledger: &RwLock<Ledger>,
        did: &str,
        audience: Option<&str>,
        now: u64,
    ) -> Result<ChallengeResponse, AuthError> {
        self.resolve(ledger, did)?;
        self.issue(did, audience, now)
    }

    /// A challenge bound to no DID, for a usernameless passkey sign-in
    /// (module doc). Its message has an empty DID line.
    pub fn passkey_challenge(
        &self,
        audience: Option<&str>,
        now: u64,
    ) -> Result<ChallengeResponse, AuthError> {
        self.issue("", audience, now)
    }

    fn issue(
        &self,
        did: &str,
        audience: Option<&str>,
        now: u64,
    ) -> Result<ChallengeResponse, AuthError> {
        let audience = match audience {
            None => self.settings.default_audience.clone(),
            Some(a) if valid_audience(a) => a.to_string(),
            Some(_) => {
                return Err(AuthError::InvalidRequest(
                    "audience must be 1-128 printable ASCII characters".into(),
                ))
            }
        };
        let expires_at = now.saturating_add(self.settings.challenge_ttl);
        let mut random = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut random);
        let tag = self.tag(did, &audience, now, expires_at, &random);
        let mut raw = Vec::with_capacity(NONCE_FIXED + MAX_AUDIENCE);
        raw.push(NONCE_VERSION);
        raw.extend_from_slice(&now.to_be_bytes());
        raw.extend_from_slice(&expires_at.to_be_bytes());
        raw.extend_from_slice(&random);
        raw.extend_from_slice(&tag);
        if audience != self.settings.default_audience {
            raw.extend_from_slice(audience.as_bytes());
        }
        let challenge = LoginChallenge {
            domain: self.settings.domain.clone(),
            did: did.to_string(),
            network_id: self.settings.network_id.clone(),
            nonce: hex(&raw),
            audience,
            issued_at: now,
            expires_at,
        };
        Ok(ChallengeResponse {
            message: challenge.message(),
            nonce: challenge.nonce,
            issued_at: challenge.issued_at,
            expires_at: challenge.expires_at,
            audience: challenge.audience,
        })
    }

    /// Checks a nonce's MAC for `did` and rebuilds its challenge. A nonce
    /// this node did not issue, or issued for another DID, fails here.
    fn open(&self, did: &str, nonce: &str) -> Result<Opened, AuthError> {
        if nonce.len() > 2 * (NONCE_FIXED + MAX_AUDIENCE) {
            return Err(AuthError::UnknownNonce);
        }
        let raw = unhex(nonce).ok_or(AuthError::UnknownNonce)?;
        if raw.len() < NONCE_FIXED || raw[0] != NONCE_VERSION {
            return Err(AuthError::UnknownNonce);
        }
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&raw[i..i + 8]);
            u64::from_be_bytes(b)
        };
        let (issued_at, expires_at) = (u64_at(1), u64_at(9));
        let random = &raw[17..33];
        let tag = &raw[33..49];
        let audience = match &raw[NONCE_FIXED..] {
            [] => self.settings.default_audience.clone(),
            a => String::from_utf8(a.to_vec()).map_err(|_| AuthError::UnknownNonce)?,
        };
        let want = self.tag(did, &audience, issued_at, expires_at, random);
        // Constant time: the comparison must not tell how many bytes matched.
        if want.iter().zip(tag).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0 {
            return Err(AuthError::UnknownNonce);
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&tag[..8]);
        Ok(Opened {
            challenge: LoginChallenge {
                domain: self.settings.domain.clone(),
                did: did.to_string(),
                network_id: self.settings.network_id.clone(),
                nonce: nonce.to_string(),
                audience,
                issued_at,
                expires_at,
            },
            id: u64::from_be_bytes(id),
        })
    }

    /// Redeems a challenge: checks the nonce's MAC for `did` (or, when
    /// `usernameless`, for no DID), re-resolves the DID (deactivated and
    /// disputed DIDs refused), checks `proof` over the rebuilt message and
    /// records the nonce as used. Nothing is signed here.
    pub fn verify(
        &self,
        ledger: &RwLock<Ledger>,
        did: &str,
        nonce: &str,
        proof: Proof<'_>,
        usernameless: bool,
        now: u64,
    ) -> Result<Verified, AuthError> {
        if usernameless && matches!(proof, Proof::Signature(_)) {
            return Err(AuthError::InvalidRequest(
                "a challenge for no DID is redeemed with a passkey assertion only".into(),
            ));
        }
        let opened = self.open(if usernameless { "" } else { did }, nonce)?;
        // Cheap refusal of a replay before any signature work.
        if self.redeemed.contains(opened.id)? {
            return Err(AuthError::UnknownNonce);
        }
        let challenge = opened.challenge;
        let message = challenge.message();
        let keys = self.resolve(ledger, did)?;
        let passkey = match (proof, keys) {
            (Proof::Signature(sig), LoginKeys::Mesh(state)) => {
                verify_login(&state, message.as_bytes(), sig).map_err(AuthError::Signature)?;
                None
            }
            (Proof::Signature(sig), LoginKeys::DidKey(key)) => {
                verify_did_key_login(&key, message.as_bytes(), sig)
                    .map_err(AuthError::Signature)?;
                None
            }
            (
                Proof::Passkey {
                    assertion,
                    origins,
                    rp_id,
                },
                LoginKeys::Mesh(state),
            ) => {
                let v = verify_passkey_login(&state, message.as_bytes(), assertion, origins, rp_id)
                    .map_err(AuthError::Passkey)?;
                Some(PasskeyUse {
                    credential_id: v.passkey.credential_id.clone(),
                    sign_count: v.sign_count,
                    user_verified: v.user_verified,
                })
            }
            (Proof::Passkey { .. }, LoginKeys::DidKey(_)) => {
                return Err(AuthError::Passkey(AssertionError(
                    "a did:key has no passkeys",
                )))
            }
        };
        // Signed by the DID: the nonce is used up, whatever follows. Kept
        // at least until it expires (or now, for a late one), after which
        // the expiry check refuses it on its own.
        if !self
            .redeemed
            .insert(opened.id, challenge.expires_at.max(now), now)?
        {
            return Err(AuthError::UnknownNonce);
        }
        if challenge.expires_at <= now {
            return Err(AuthError::Expired);
        }
        Ok(Verified { challenge, passkey })
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
        let challenge = self
            .verify(ledger, did, nonce, Proof::Signature(signature), false, now)?
            .challenge;
        let mut jti = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut jti);
        let claims = Claims::for_login(
            &self.settings.issuer,
            did,
            &challenge.audience,
            now,
            self.settings.token_ttl,
            jti,
        );
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        let access_token =
            jsonwebtoken::encode(&header, &claims, &self.key).map_err(|_| AuthError::Signing)?;
        Ok((
            TokenResponse {
                access_token,
                token_type: TOKEN_TYPE.to_string(),
                expires_in: self.settings.token_ttl,
            },
            claims,
        ))
    }
}

fn valid_audience(a: &str) -> bool {
    !a.is_empty() && a.len() <= MAX_AUDIENCE && a.bytes().all(|b| b.is_ascii_graphic())
}

fn hex(b: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(b)
}

/// Lower-case hex only (what [`hex`] writes), so each nonce has one spelling.
fn unhex(s: &str) -> Option<Vec<u8>> {
    data_encoding::HEXLOWER.decode(s.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use did_core::keys::{public_of, sign_b64};

    fn auth(ttl: u64) -> Authenticator {
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        Authenticator::new(
            AuthSettings {
                domain: "127.0.0.1:7001".into(),
                network_id: "mesh-test".into(),
                issuer: "https://didmesh.local".into(),
                default_audience: "home-api".into(),
                challenge_ttl: ttl,
                token_ttl: 60,
                max_redeemed: 64,
            },
            &crate::identity::pkcs8_der(&key),
            "kid".into(),
        )
    }

    fn ledger() -> RwLock<Ledger> {
        RwLock::new(Ledger::new(did_core::Limits::default()))
    }

    #[test]
    fn a_challenge_keeps_no_state_and_redeems_once() {
        let (a, l) = (auth(120), ledger());
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let did = public_of(&key).did_key();
        let ch = a.challenge(&l, &did, Some("bank"), 1000).unwrap();
        assert_eq!(a.redeemed_nonces(), 0);
        assert!(ch.message.contains(&format!("Nonce: {}\n", ch.nonce)));
        let sig = sign_b64(&key, ch.message.as_bytes());
        let (_, claims) = a.token(&l, &did, &ch.nonce, &sig, 1001).unwrap();
        assert_eq!(claims.aud, "bank");
        assert!(matches!(
            a.token(&l, &did, &ch.nonce, &sig, 1002),
            Err(AuthError::UnknownNonce)
        ));
        assert_eq!(a.redeemed_nonces(), 1);
        a.prune(1000 + 121);
        assert_eq!(a.redeemed_nonces(), 0);
    }

    #[test]
    fn altered_foreign_or_bad_signature_nonces_are_refused_and_cost_nothing() {
        let (a, l) = (auth(120), ledger());
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let did = public_of(&key).did_key();
        let ch = a.challenge(&l, &did, None, 1000).unwrap();
        let sig = sign_b64(&key, ch.message.as_bytes());
        // a later expiry written into the nonce
        let mut raw = unhex(&ch.nonce).unwrap();
        raw[16] ^= 1;
        assert!(matches!(
            a.token(&l, &did, &hex(&raw), &sig, 1001),
            Err(AuthError::UnknownNonce)
        ));
        // another node (another secret)
        assert!(matches!(
            auth(120).token(&l, &did, &ch.nonce, &sig, 1001),
            Err(AuthError::UnknownNonce)
        ));
        // garbage, upper-case, too long
        for n in ["", "zz", &ch.nonce.to_uppercase(), &"ab".repeat(400)] {
            assert!(a.token(&l, &did, n, &sig, 1001).is_err(), "{n}");
        }
        // a wrong signature leaves the nonce usable by its owner
        let other = ed25519_dalek::SigningKey::from_bytes(&[2; 32]);
        let bad = sign_b64(&other, ch.message.as_bytes());
        assert!(matches!(
            a.token(&l, &did, &ch.nonce, &bad, 1001),
            Err(AuthError::Signature(_))
        ));
        assert_eq!(a.redeemed_nonces(), 0);
        assert!(a.token(&l, &did, &ch.nonce, &sig, 1001).is_ok());
    }

    #[test]
    fn the_redeemed_store_is_bounded_and_never_evicts_a_live_nonce() {
        let (a, l) = (auth(120), ledger());
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let did = public_of(&key).did_key();
        let mut busy = 0;
        for _ in 0..200 {
            let ch = a.challenge(&l, &did, None, 1000).unwrap();
            let sig = sign_b64(&key, ch.message.as_bytes());
            if let Err(e) = a.token(&l, &did, &ch.nonce, &sig, 1000) {
                assert!(matches!(e, AuthError::Busy), "{e}");
                busy += 1;
            }
        }
        assert!(
            a.redeemed_nonces() <= 64 + SHARDS,
            "{}",
            a.redeemed_nonces()
        );
        assert!(busy > 0);
        // once they expire, room again
        let ch = a.challenge(&l, &did, None, 2000).unwrap();
        let sig = sign_b64(&key, ch.message.as_bytes());
        assert!(a.token(&l, &did, &ch.nonce, &sig, 2000).is_ok());
    }
}
