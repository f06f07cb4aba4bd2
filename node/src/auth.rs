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
//!
//! ## Several factors (issue 11)
//!
//! A redemption may carry several proofs over the same message: Ed25519
//! signatures (each distinct `authentication` key that signed is one
//! factor), a passkey assertion (one) and an SMS code for a committed phone
//! (one). [`Authenticator::verify_all`] checks every proof, then counts the
//! distinct factors that the DID's login policy counts
//! ([`did_core::DidState::login_requirement`], resolved *now*, so a key
//! removed by a rotation no longer verifies and a policy change applies to
//! the next redemption). A bad proof is its own error; proofs that all
//! verify but are too few are [`AuthError::MoreFactorsNeeded`], and then the
//! nonce is *not* used up, so the wallet can add a factor and send again
//! until the challenge expires. Only a redemption that issues a token uses
//! the nonce up. An SMS code is checked last, and only when it would
//! complete the count, so a code is never spent on a refusal.

use crate::didkey;
use did_core::keys::signature_from_b64;
use did_core::login::{verify_passkey_login, LoginChallenge, LoginError};
use did_core::passkey::{Assertion, AssertionError};
use did_core::policy::{Factor, FactorKind};
use did_core::proto::{
    ChallengeResponse, PolicyAnswer, TokenResponse, ACR_1FA, ACR_MFA, AMR_FEDERATED,
    AMR_HARDWARE_KEY, AMR_MFA, AMR_SMS, AMR_SOFTWARE_KEY, AMR_USER, TOKEN_TYPE,
};
use did_core::{Claims, Ledger, PublicKey, Relationship};
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
/// Most Ed25519 signatures one redemption may carry: a policy needs at
/// most [`did_core::policy::MAX_REQUIRED`] factors, and each signature
/// costs up to one verification per authentication key.
pub const MAX_SIGNATURES: usize = did_core::policy::MAX_REQUIRED as usize;
/// The factor id of a `did:key`'s one key.
pub const DID_KEY_FACTOR: &str = "key";

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
    #[error("{0}")]
    Sms(SmsCheckError),
    /// Every proof verified, but they are fewer distinct counted factors
    /// than the policy (or the request) needs. The nonce is still good.
    #[error("{reason}")]
    MoreFactorsNeeded {
        required: u8,
        /// Ids of the counted factors that were presented.
        presented: Vec<String>,
        reason: String,
    },
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

/// Why an SMS code did not count (the SMS module's verdict).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmsCheckError {
    /// This node has no SMS provider configured.
    #[error("SMS codes are not enabled on this node")]
    Disabled,
    /// Wrong, used, expired or locked code (the sentence says which).
    #[error("{0}")]
    Invalid(String),
}

/// Checks an SMS code: `(nonce id, phone entry id, code)`, single use
/// ([`crate::sms`] binds it; the nonce id is [`LiveNonce::id`]).
pub type SmsCheck<'a> = &'a (dyn Fn(u64, &str, &str) -> Result<(), SmsCheckError> + Sync);

/// A passkey assertion, and what it must have been made for.
#[derive(Debug, Clone, Copy)]
pub struct PasskeyProof<'a> {
    pub assertion: &'a Assertion,
    /// Origins the page may run on.
    pub origins: &'a [String],
    pub rp_id: &'a str,
}

/// An SMS code presented with the proofs, and how to check it.
#[derive(Clone, Copy)]
pub struct SmsProof<'a> {
    /// The phone's entry id in the DID state.
    pub phone: &'a str,
    pub code: &'a str,
    pub check: SmsCheck<'a>,
}

/// Every proof one redemption carries ([`Authenticator::verify_all`]).
#[derive(Clone, Copy, Default)]
pub struct Proofs<'a> {
    /// Base64url Ed25519 signatures over the message.
    pub signatures: &'a [&'a str],
    pub passkey: Option<PasskeyProof<'a>>,
    pub sms: Option<SmsProof<'a>>,
}

/// What a redemption must reach besides the DID's own policy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Demand {
    /// The challenge names no DID (usernameless passkey sign-in).
    pub usernameless: bool,
    /// At least this many distinct factors, whatever the policy says
    /// (`acr_values=urn:didmesh:acr:mfa` asks for 2).
    pub min_factors: u8,
}

/// A live nonce of this node for a DID: its MAC checks out, it is not used
/// and not expired ([`Authenticator::live_nonce`]).
#[derive(Debug, Clone)]
pub struct LiveNonce {
    /// The nonce's id (first 8 bytes of its MAC): what a one-time SMS code
    /// is bound to.
    pub id: u64,
    pub challenge: LoginChallenge,
}

/// The login service.
pub struct Authenticator {
    settings: AuthSettings,
    /// MAC key of challenges; never leaves memory, never logged.
    secret: [u8; 32],
    redeemed: Redeemed,
    signer: AccessSigner,
}

/// What signs access tokens: the node's live key set (swapped when a
/// `member-rotate` op commits, [`crate::token_keys`]), or one fixed key
/// (tools and tests).
enum AccessSigner {
    Live(crate::token_keys::TokenKeys),
    Fixed { key: EncodingKey, kid: String },
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

/// How a DID proves possession of a key when it redeems a challenge with
/// one proof ([`Authenticator::verify`]).
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
    /// The passkey, when an assertion was among the proofs.
    pub passkey: Option<PasskeyUse>,
    /// The distinct factors that counted, in the order of the DID's
    /// factors.
    pub factors: Vec<Factor>,
    /// The key that proved the login, for the token's `key` claim: the
    /// multibase of the first Ed25519 key that signed, else the passkey id
    /// (PROTOCOL.md, "Revocation": removing it revokes the token).
    pub key: Option<String>,
    /// The DID's revocation watermark at the login: the largest `before`
    /// of its own sign-outs and of member revocations (0 = none); the
    /// token's `rev` claim.
    pub revoked_before: u64,
}

impl Verified {
    /// RFC 8176 methods of the factors that counted: `swk` (Ed25519 key),
    /// `hwk` (+ `user` when the authenticator verified the user), `sms`,
    /// `fed`, and `mfa` when two or more distinct factors counted.
    pub fn amr(&self) -> Vec<String> {
        amr_of(
            &self.factors,
            self.passkey.as_ref().is_some_and(|p| p.user_verified),
        )
    }

    /// [`ACR_MFA`] for two or more distinct factors, else [`ACR_1FA`].
    pub fn acr(&self) -> &'static str {
        acr_of_count(self.factors.len())
    }
}

/// `amr` for a set of distinct counted factors (see [`Verified::amr`]).
pub fn amr_of(factors: &[Factor], user_verified: bool) -> Vec<String> {
    let has = |k: FactorKind| factors.iter().any(|f| f.kind == k);
    let mut amr = vec![];
    if has(FactorKind::Key) {
        amr.push(AMR_SOFTWARE_KEY);
    }
    if has(FactorKind::Passkey) {
        amr.push(AMR_HARDWARE_KEY);
        if user_verified {
            amr.push(AMR_USER);
        }
    }
    if has(FactorKind::Phone) {
        amr.push(AMR_SMS);
    }
    if has(FactorKind::Link) {
        amr.push(AMR_FEDERATED);
    }
    if factors.len() >= 2 {
        amr.push(AMR_MFA);
    }
    amr.into_iter().map(str::to_string).collect()
}

/// `acr` for `n` distinct factors.
pub fn acr_of_count(n: usize) -> &'static str {
    if n >= 2 {
        ACR_MFA
    } else {
        ACR_1FA
    }
}

/// `acr` of a token or code whose `amr` is `amr`.
pub fn acr_of_amr(amr: &[String]) -> &'static str {
    if amr.iter().any(|m| m == AMR_MFA) {
        ACR_MFA
    } else {
        ACR_1FA
    }
}

impl LoginKeys {
    /// What a login needs: (required, counted factors).
    fn requirement(&self) -> (u8, Vec<Factor>) {
        match self {
            LoginKeys::Mesh(state) => state.login_requirement(),
            LoginKeys::DidKey(_) => (
                1,
                vec![Factor {
                    id: DID_KEY_FACTOR.to_string(),
                    kind: FactorKind::Key,
                }],
            ),
        }
    }

    /// The entry id of the authentication key that made `signature` over
    /// `message` (a `did:key`'s one key is [`DID_KEY_FACTOR`]).
    fn signer(&self, message: &[u8], signature: &str) -> Result<String, LoginError> {
        let sig = signature_from_b64(signature).map_err(|_| LoginError::BadEncoding)?;
        match self {
            LoginKeys::Mesh(state) => state
                .keys_for(Relationship::Authentication)
                .find(|vm| vm.public_key_multibase.verify(message, &sig))
                .map(|vm| vm.id.clone())
                .ok_or(LoginError::NoMatchingKey),
            LoginKeys::DidKey(key) if key.verify(message, &sig) => Ok(DID_KEY_FACTOR.to_string()),
            LoginKeys::DidKey(_) => Err(LoginError::NoMatchingKey),
        }
    }

    /// The multibase of the key with entry id `id` (the token's `key`).
    fn multibase_of(&self, id: &str) -> Option<String> {
        match self {
            LoginKeys::Mesh(state) => state
                .verification_methods
                .iter()
                .find(|vm| vm.id == id)
                .map(|vm| vm.public_key_multibase.to_string()),
            LoginKeys::DidKey(key) => Some(key.to_string()),
        }
    }

    fn revoked_before(&self) -> u64 {
        match self {
            LoginKeys::Mesh(state) => state.revocations.before,
            LoginKeys::DidKey(_) => 0,
        }
    }
}

/// The policy part of a challenge answer.
fn policy_answer((required, factors): (u8, Vec<Factor>)) -> PolicyAnswer {
    PolicyAnswer { required, factors }
}

impl Authenticator {
    /// A login service signing with one fixed Ed25519 key (PKCS#8 DER)
    /// named `kid`.
    pub fn new(settings: AuthSettings, member_key_pkcs8: &[u8], kid: String) -> Authenticator {
        Self::with_signer(
            settings,
            AccessSigner::Fixed {
                key: EncodingKey::from_ed_der(member_key_pkcs8),
                kid,
            },
        )
    }

    /// A login service signing with the node's Ed25519 key in force: a
    /// committed rotation moves it to the new key (and `kid`) at once.
    pub fn with_token_keys(
        settings: AuthSettings,
        keys: crate::token_keys::TokenKeys,
    ) -> Authenticator {
        Self::with_signer(settings, AccessSigner::Live(keys))
    }

    fn with_signer(settings: AuthSettings, signer: AccessSigner) -> Authenticator {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Authenticator {
            redeemed: Redeemed::new(settings.max_redeemed),
            settings,
            secret,
            signer,
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
        Ok(LoginKeys::Mesh(did_core::DidState::clone(&state)))
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
        let keys = self.resolve(ledger, did)?;
        let mut answer = self.issue(did, audience, now)?;
        answer.policy = Some(policy_answer(keys.requirement()));
        Ok(answer)
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
            policy: None,
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

    /// A nonce of this node for `did` that can still be redeemed: MAC,
    /// not used, not expired (the SMS endpoint checks this before it sends
    /// anything). The DID itself is not resolved here.
    pub fn live_nonce(&self, did: &str, nonce: &str, now: u64) -> Result<LiveNonce, AuthError> {
        let opened = self.open(did, nonce)?;
        if self.redeemed.contains(opened.id)? {
            return Err(AuthError::UnknownNonce);
        }
        if opened.challenge.expires_at <= now {
            return Err(AuthError::Expired);
        }
        Ok(LiveNonce {
            id: opened.id,
            challenge: opened.challenge,
        })
    }

    /// [`Self::live_nonce`], and the DID in good standing now: what a
    /// co-sign slot is made for.
    pub fn live_challenge(
        &self,
        ledger: &RwLock<Ledger>,
        did: &str,
        nonce: &str,
        now: u64,
    ) -> Result<LoginChallenge, AuthError> {
        let live = self.live_nonce(did, nonce, now)?;
        self.resolve(ledger, did)?;
        Ok(live.challenge)
    }

    /// A second device's signature for a co-sign slot: the nonce is live
    /// for `did`, the DID is in good standing now, and `signature` over the
    /// challenge message is by one of its authentication keys, whose entry
    /// id is returned. Nothing is used up.
    pub fn cosign(
        &self,
        ledger: &RwLock<Ledger>,
        did: &str,
        nonce: &str,
        signature: &str,
        now: u64,
    ) -> Result<String, AuthError> {
        let live = self.live_nonce(did, nonce, now)?;
        let keys = self.resolve(ledger, did)?;
        keys.signer(live.challenge.message().as_bytes(), signature)
            .map_err(AuthError::Signature)
    }

    /// Redeems a challenge with one proof ([`Self::verify_all`]); the
    /// DID's login policy applies all the same.
    pub fn verify(
        &self,
        ledger: &RwLock<Ledger>,
        did: &str,
        nonce: &str,
        proof: Proof<'_>,
        usernameless: bool,
        now: u64,
    ) -> Result<Verified, AuthError> {
        let signatures: Vec<&str> = match proof {
            Proof::Signature(s) => vec![s],
            Proof::Passkey { .. } => vec![],
        };
        let passkey = match proof {
            Proof::Signature(_) => None,
            Proof::Passkey {
                assertion,
                origins,
                rp_id,
            } => Some(PasskeyProof {
                assertion,
                origins,
                rp_id,
            }),
        };
        let proofs = Proofs {
            signatures: &signatures,
            passkey,
            sms: None,
        };
        let demand = Demand {
            usernameless,
            min_factors: 0,
        };
        self.verify_all(ledger, did, nonce, &proofs, demand, now)
    }

    /// Redeems a challenge (module doc, "Several factors"): checks the
    /// nonce's MAC for `did` (or, when `demand.usernameless`, for no DID),
    /// re-resolves the DID (deactivated and disputed DIDs refused), checks
    /// every proof over the rebuilt message, counts the distinct factors
    /// the DID's policy counts and, when they are enough, records the
    /// nonce as used. Nothing is signed here.
    pub fn verify_all(
        &self,
        ledger: &RwLock<Ledger>,
        did: &str,
        nonce: &str,
        proofs: &Proofs<'_>,
        demand: Demand,
        now: u64,
    ) -> Result<Verified, AuthError> {
        if proofs.signatures.is_empty() && proofs.passkey.is_none() {
            return Err(AuthError::InvalidRequest(
                "send a signature or a passkey assertion (an SMS code alone is never a login)"
                    .into(),
            ));
        }
        if proofs.signatures.len() > MAX_SIGNATURES {
            return Err(AuthError::InvalidRequest(format!(
                "at most {MAX_SIGNATURES} signatures"
            )));
        }
        if demand.usernameless && (!proofs.signatures.is_empty() || proofs.sms.is_some()) {
            return Err(AuthError::InvalidRequest(
                "a challenge for no DID is redeemed with a passkey assertion only".into(),
            ));
        }
        let opened = self.open(if demand.usernameless { "" } else { did }, nonce)?;
        // Cheap refusal of a replay before any signature work.
        if self.redeemed.contains(opened.id)? {
            return Err(AuthError::UnknownNonce);
        }
        let challenge = opened.challenge;
        let message = challenge.message();
        let keys = self.resolve(ledger, did)?;
        // Every proof must verify: a bad one is refused as such, never
        // silently dropped (the wallet learns which of its proofs is wrong).
        let mut presented: Vec<String> = vec![];
        for sig in proofs.signatures {
            let id = keys
                .signer(message.as_bytes(), sig)
                .map_err(AuthError::Signature)?;
            if !presented.contains(&id) {
                presented.push(id);
            }
        }
        let mut key = presented.first().and_then(|id| keys.multibase_of(id));
        let mut passkey = None;
        if let Some(p) = proofs.passkey {
            let LoginKeys::Mesh(state) = &keys else {
                return Err(AuthError::Passkey(AssertionError(
                    "a did:key has no passkeys",
                )));
            };
            let v =
                verify_passkey_login(state, message.as_bytes(), p.assertion, p.origins, p.rp_id)
                    .map_err(AuthError::Passkey)?;
            presented.push(v.passkey.id.clone());
            key = key.or_else(|| Some(v.passkey.id.clone()));
            passkey = Some(PasskeyUse {
                credential_id: v.passkey.credential_id.clone(),
                sign_count: v.sign_count,
                user_verified: v.user_verified,
            });
        }
        let (policy_required, counted) = keys.requirement();
        let required = policy_required.max(demand.min_factors);
        let counts = |id: &str| counted.iter().any(|f| f.id == id);
        let mut have: Vec<&str> = presented
            .iter()
            .map(String::as_str)
            .filter(|id| counts(id))
            .collect();
        let mut sms_note = "";
        if let Some(sms) = proofs.sms {
            let committed = match &keys {
                LoginKeys::Mesh(state) => state.phone(sms.phone).is_some(),
                LoginKeys::DidKey(_) => false,
            };
            if !committed {
                return Err(AuthError::Sms(SmsCheckError::Invalid(format!(
                    "the DID has no phone {:?}",
                    sms.phone.chars().take(64).collect::<String>()
                ))));
            }
            if !counts(sms.phone) {
                sms_note = " (the phone is not one of the factors the policy counts; its code was not checked)";
            } else if have.len() + 1 < usize::from(required) {
                // It would not be enough: keep the code for the retry.
                sms_note = " (the SMS code was not checked: it would not be enough on its own; it stays valid)";
            } else {
                (sms.check)(opened.id, sms.phone, sms.code).map_err(AuthError::Sms)?;
                have.push(sms.phone);
            }
        }
        if have.len() < usize::from(required) {
            if challenge.expires_at <= now {
                return Err(AuthError::Expired);
            }
            let why = if policy_required >= demand.min_factors {
                "this DID's login policy needs"
            } else {
                "this sign-in asks for"
            };
            return Err(AuthError::MoreFactorsNeeded {
                required,
                presented: have.iter().map(|s| s.to_string()).collect(),
                reason: format!(
                    "{why} {required} distinct factors; {} presented{}{sms_note}; add another \
                     factor and send the same nonce again before the challenge expires",
                    have.len(),
                    if have.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", have.join(", "))
                    },
                ),
            });
        }
        // Enough: the nonce is used up, whatever follows. Kept at least
        // until it expires (or now, for a late one), after which the expiry
        // check refuses it on its own.
        if !self
            .redeemed
            .insert(opened.id, challenge.expires_at.max(now), now)?
        {
            return Err(AuthError::UnknownNonce);
        }
        if challenge.expires_at <= now {
            return Err(AuthError::Expired);
        }
        let factors = counted
            .into_iter()
            .filter(|f| have.contains(&f.id.as_str()))
            .collect();
        Ok(Verified {
            challenge,
            passkey,
            factors,
            key,
            // The DID's watermark: its own sign-outs and member revocations.
            revoked_before: keys.revoked_before().max(
                ledger
                    .read()
                    .ok()
                    .and_then(|l| l.member_revocation(did))
                    .unwrap_or(0),
            ),
        })
    }

    /// Step 2: exchanges a signed challenge for an access token (one
    /// signature; [`Self::token_with`] for several proofs).
    pub fn token(
        &self,
        ledger: &RwLock<Ledger>,
        did: &str,
        nonce: &str,
        signature: &str,
        now: u64,
    ) -> Result<(TokenResponse, Claims), AuthError> {
        let verified = self.verify(ledger, did, nonce, Proof::Signature(signature), false, now)?;
        self.mint(did, &verified, now)
    }

    /// Step 2 with every proof of the request: the token is issued only
    /// when the DID's policy is met ([`Self::verify_all`]).
    pub fn token_with(
        &self,
        ledger: &RwLock<Ledger>,
        did: &str,
        nonce: &str,
        proofs: &Proofs<'_>,
        now: u64,
    ) -> Result<(TokenResponse, Claims, Verified), AuthError> {
        let verified = self.verify_all(ledger, did, nonce, proofs, Demand::default(), now)?;
        let (resp, claims) = self.mint(did, &verified, now)?;
        Ok((resp, claims, verified))
    }

    /// The access token for a verified redemption: `amr` and `acr` say
    /// which factors counted.
    fn mint(
        &self,
        did: &str,
        verified: &Verified,
        now: u64,
    ) -> Result<(TokenResponse, Claims), AuthError> {
        let mut jti = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut jti);
        let mut claims = Claims::for_login(
            &self.settings.issuer,
            did,
            &verified.challenge.audience,
            now,
            self.settings.token_ttl,
            jti,
        );
        claims.amr = verified.amr();
        claims.acr = Some(verified.acr().to_string());
        claims.key = verified.key.clone();
        // The watermark this node holds: the token is revoked by a later
        // sign-out (rev < its before) and by none it has seen, whatever the
        // clocks of the wallet and of this node say.
        claims.rev = Some(verified.revoked_before);
        let access_token = match &self.signer {
            AccessSigner::Live(keys) => keys
                .sign(did_core::client::IdTokenAlg::EdDSA, &claims)
                .map_err(|_| AuthError::Signing)?,
            AccessSigner::Fixed { key, kid } => {
                let mut header = Header::new(Algorithm::EdDSA);
                header.kid = Some(kid.clone());
                header.typ = Some("JWT".into());
                jsonwebtoken::encode(&header, &claims, key).map_err(|_| AuthError::Signing)?
            }
        };
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

    /// A ledger holding a DID with keys `keys` (key-1…), phone-1 (when
    /// `required` > 1: a one-factor policy cannot count a phone) and
    /// "`required` of every factor".
    fn mesh_did(keys: &[&ed25519_dalek::SigningKey], required: u8) -> (RwLock<Ledger>, String) {
        let mut state = did_core::DidState::single_key(public_of(keys[0]));
        for (i, k) in keys.iter().enumerate().skip(1) {
            state
                .verification_methods
                .push(did_core::VerificationMethod {
                    id: format!("key-{}", i + 1),
                    public_key_multibase: public_of(k),
                    relationships: vec![Relationship::Authentication],
                    device: None,
                });
        }
        if required > 1 {
            state.phones.push(did_core::policy::Phone {
                id: "phone-1".into(),
                commitment: did_core::policy::phone_commitment(&[1; 16], "+15555550100"),
            });
        }
        state.login_policy = Some(did_core::policy::LoginPolicy {
            required,
            factors: vec![],
        });
        let op = did_core::Operation::create(state, 1000, keys[0]).unwrap();
        let did = did_core::op::did_from_genesis(&op.cid().unwrap());
        let mut ledger = Ledger::new(did_core::Limits::default());
        ledger.apply(op).unwrap();
        (RwLock::new(ledger), did)
    }

    #[test]
    fn too_few_factors_keep_the_nonce_and_an_sms_code_is_checked_only_when_it_completes() {
        let a = auth(120);
        let (k1, k2) = (
            ed25519_dalek::SigningKey::from_bytes(&[1; 32]),
            ed25519_dalek::SigningKey::from_bytes(&[2; 32]),
        );
        // 3 of key-1, key-2, phone-1
        let (l, did) = mesh_did(&[&k1, &k2], 3);
        let ch = a.challenge(&l, &did, None, 1000).unwrap();
        assert_eq!(ch.policy.as_ref().map(|p| p.required), Some(3));
        let s1 = sign_b64(&k1, ch.message.as_bytes());
        let s2 = sign_b64(&k2, ch.message.as_bytes());
        let calls = std::sync::atomic::AtomicU32::new(0);
        let check = |_: u64, phone: &str, code: &str| {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            assert_eq!(phone, "phone-1");
            if code == "123456" {
                Ok(())
            } else {
                Err(SmsCheckError::Invalid("wrong".into()))
            }
        };
        let sms = |code| SmsProof {
            phone: "phone-1",
            code,
            check: &check,
        };
        let proofs = |sigs, code| Proofs {
            signatures: sigs,
            passkey: None,
            sms: Some(sms(code)),
        };
        // one key + a code: the code would not be enough, so it is not
        // checked (not spent), and the nonce stays good
        let one = [s1.as_str()];
        match a.verify_all(
            &l,
            &did,
            &ch.nonce,
            &proofs(&one, "123456"),
            Demand::default(),
            1001,
        ) {
            Err(AuthError::MoreFactorsNeeded {
                required: 3,
                presented,
                reason,
            }) => {
                assert_eq!(presented, ["key-1"]);
                assert!(reason.contains("stays valid"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(a.redeemed_nonces(), 0);
        // two keys + a wrong code: checked, refused as such
        let two = [s1.as_str(), s2.as_str()];
        assert!(matches!(
            a.verify_all(
                &l,
                &did,
                &ch.nonce,
                &proofs(&two, "000000"),
                Demand::default(),
                1001
            ),
            Err(AuthError::Sms(SmsCheckError::Invalid(_)))
        ));
        // two keys + the right code: three factors, sms and mfa
        let v = a
            .verify_all(
                &l,
                &did,
                &ch.nonce,
                &proofs(&two, "123456"),
                Demand::default(),
                1001,
            )
            .unwrap();
        assert_eq!(v.amr(), ["swk", "sms", "mfa"]);
        assert_eq!(v.acr(), ACR_MFA);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(a.redeemed_nonces(), 1);
        // and the nonce is gone
        assert!(matches!(
            a.verify_all(
                &l,
                &did,
                &ch.nonce,
                &proofs(&two, "123456"),
                Demand::default(),
                1002
            ),
            Err(AuthError::UnknownNonce)
        ));
    }

    #[test]
    fn a_demand_raises_the_policy_and_an_expired_challenge_is_expired_not_more() {
        let a = auth(120);
        let k1 = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let k2 = ed25519_dalek::SigningKey::from_bytes(&[2; 32]);
        let (l, did) = mesh_did(&[&k1, &k2], 1);
        let ch = a.challenge(&l, &did, None, 1000).unwrap();
        let s1 = sign_b64(&k1, ch.message.as_bytes());
        let one = [s1.as_str()];
        let proofs = Proofs {
            signatures: &one,
            ..Proofs::default()
        };
        let mfa = Demand {
            usernameless: false,
            min_factors: 2,
        };
        assert!(matches!(
            a.verify_all(&l, &did, &ch.nonce, &proofs, mfa, 1001),
            Err(AuthError::MoreFactorsNeeded { required: 2, .. })
        ));
        assert!(matches!(
            a.verify_all(&l, &did, &ch.nonce, &proofs, mfa, 1120),
            Err(AuthError::Expired)
        ));
        assert_eq!(a.redeemed_nonces(), 0);
        let v = a
            .verify_all(&l, &did, &ch.nonce, &proofs, Demand::default(), 1001)
            .unwrap();
        assert_eq!(v.amr(), ["swk"]);
        assert_eq!(v.acr(), ACR_1FA);
        // more signatures than any policy can use are refused up front
        let many = [s1.as_str(); MAX_SIGNATURES + 1];
        let ch = a.challenge(&l, &did, None, 1000).unwrap();
        let proofs = Proofs {
            signatures: &many,
            ..Proofs::default()
        };
        assert!(matches!(
            a.verify_all(&l, &did, &ch.nonce, &proofs, Demand::default(), 1001),
            Err(AuthError::InvalidRequest(_))
        ));
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
