//! [`TokenVerifier`]: turns a bearer token into verified [`Claims`].
//!
//! Order of checks, cheapest first:
//! 1. the verified-token cache (a hit ends here, after the revocation
//!    rules);
//! 2. the header, parsed by us into borrowed strings: `alg` must be `EdDSA`
//!    (RFC 8725 §3.1: the verifier, not the token, picks the algorithm),
//!    `typ` absent or `JWT`, no `crit` (RFC 7515 §4.1.11), a `kid`;
//! 3. the key for `kid` from the [`JwksCache`] (may refetch), already
//!    decompressed when the JWKS was parsed;
//! 4. the Ed25519 signature over the JWS signing input `header.payload`
//!    (RFC 7515 §5.2, RFC 8037 §3.1), checked with ed25519-dalek directly;
//! 5. the payload, parsed with serde straight into [`Claims`] (every
//!    registered claim present, `iat`, `nbf`, `exp` integers in `0..2^64`),
//!    then `exp` and `nbf` against now with the leeway, `iss`, `aud`;
//! 6. our own claim checks: `sub` is a DID (W3C DID Core §3.1), `iat` is not
//!    in the future beyond the leeway, and `exp` is at most
//!    [`VerifierConfig::max_token_lifetime`] after `iat` and after now (so
//!    `exp = 2^64-1` is refused, and a leaked signing key cannot mint tokens
//!    that outlive its removal by years);
//! 7. the revocation feed's rules, when the verifier follows one (see
//!    [`crate::revocations`]).
//!
//! Until step 9 steps 4–5 went through `jsonwebtoken::decode`, which
//! decompresses the Ed25519 key, boxes a verifier and base64-decodes into
//! fresh vectors for every token; the same checks in the same order (so the
//! same refusal reasons) now cost the signature check and one allocation
//! for the claims. Steps 1–7 run synchronously in the layer's `call` when
//! the key is held; only an unknown `kid` (a JWKS refetch) goes async.
//!
//! [`TokenVerifier::verify_offline`] runs steps 2–6 against the keys
//! already held, synchronously: the entry point for fuzzing.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use serde::de::IgnoredAny;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use crate::error::{AuthError, Reason};
use crate::jwks::{JwksCache, KeyEntry, KeySet};
use crate::revocations::{self, FollowConfig, RevocationStatus, Revocations};
use crate::token_cache::{Digest, TokenMeta, VerifiedTokenCache};
use crate::{now_secs, Claims};

/// Tokens longer than this are refused before any work. A didmesh token is
/// well under 1 KiB.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Decoded header or payload bytes fit on the stack: base64 of at most
/// [`MAX_TOKEN_BYTES`] is at most 3/4 of it.
const DECODE_BUF: usize = MAX_TOKEN_BYTES / 4 * 3;

/// Largest leeway used, whatever the configuration says.
const MAX_LEEWAY_SECS: u64 = 24 * 3600;

/// What a token must say to be accepted. Build with [`VerifierConfig::new`]
/// and adjust the public fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VerifierConfig {
    /// The expected `iss`: the network's issuer string.
    pub issuer: String,
    /// The expected `aud`: this application.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`. Default 30 seconds.
    pub leeway: Duration,
    /// Size of the verified-token cache, in tokens; 0 disables it.
    /// Default 100 000.
    pub cache_capacity: usize,
    /// Longest accepted token lifetime: `exp` may be at most this after
    /// `iat`, and after now (plus the leeway). Default 24 hours; didmesh
    /// nodes issue tokens for far less.
    pub max_token_lifetime: Duration,
    /// The revocation feed to follow (`http://node:7000/v1/revocations`),
    /// if any. [`TokenVerifier::new`] then starts the follower task, so it
    /// must run inside a tokio runtime. Default: none.
    pub revocations: Option<String>,
    /// How long the node may hold one poll of the feed (its `wait`, at most
    /// 30 s). Default 30 seconds.
    pub revocations_wait: Duration,
    /// Check the signatures of never-seen tokens that arrive together in
    /// one Ed25519 batch (ed25519-dalek `verify_batch`, about half the cost
    /// per signature at 16–64; a failed batch is re-checked one by one, so
    /// each token gets its own answer). Only on the async path
    /// ([`TokenVerifier::verify`] and the layer), inside a tokio runtime.
    /// Default true.
    pub batch_signatures: bool,
}

impl VerifierConfig {
    /// A configuration for `issuer` and `audience` with the defaults above.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            leeway: Duration::from_secs(30),
            cache_capacity: 100_000,
            max_token_lifetime: Duration::from_secs(24 * 3600),
            revocations: None,
            revocations_wait: Duration::from_secs(30),
            batch_signatures: true,
        }
    }

    /// Follows the revocation feed at `url` (a node's
    /// `/v1/revocations`): tokens it revokes are refused from the moment
    /// the entry arrives (see [`crate::revocations`]).
    #[must_use]
    pub fn revocations(mut self, url: impl Into<String>) -> Self {
        self.revocations = Some(url.into());
        self
    }
}

/// Counters, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifierStats {
    /// Ed25519 signature checks performed (cache misses that got that far).
    pub signature_verifications: u64,
    /// Requests answered from the verified-token cache.
    pub cache_hits: u64,
    /// JWKS fetches attempted.
    pub jwks_fetches: u64,
    /// Tokens refused by the revocation feed's rules.
    pub revoked: u64,
}

struct Inner {
    jwks: JwksCache,
    issuer: String,
    audience: String,
    cache: VerifiedTokenCache,
    /// The leeway, in seconds (capped at [`MAX_LEEWAY_SECS`]).
    leeway: u64,
    /// [`VerifierConfig::max_token_lifetime`], in seconds.
    max_lifetime: u64,
    /// What the revocation feed revoked (empty when not following).
    revocations: Arc<Revocations>,
    signature_verifications: AtomicU64,
    cache_hits: AtomicU64,
    revoked: AtomicU64,
    /// [`VerifierConfig::batch_signatures`].
    batch: bool,
    /// The batcher's queue, started on first use (inside a runtime).
    batcher: OnceLock<mpsc::UnboundedSender<SigJob>>,
}

/// One signature for the batcher: the token (owned: the request's header
/// may not outlive the wait), where its signing input ends, the signature
/// and the key; the answer goes back on `reply`.
struct SigJob {
    token: Box<str>,
    input_len: usize,
    signature: Signature,
    key: VerifyingKey,
    reply: oneshot::Sender<bool>,
}

/// Largest batch: past 64 the per-signature gain flattens while the wait of
/// the first job in it grows.
const MAX_BATCH: usize = 64;

/// The batcher task: takes whatever is queued after one yield (never waits
/// on a timer, so a lone token costs one single check and a channel hop),
/// checks it as one
/// batch, and falls back to single checks to find the culprit when the
/// batch fails. Ends when the verifier is dropped.
async fn run_batcher(mut rx: mpsc::UnboundedReceiver<SigJob>) {
    let mut jobs: Vec<SigJob> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        jobs.push(first);
        // Let the other request tasks that are ready run first: under load
        // they queue their signatures now, and the batch grows from 1 to
        // tens for the cost of one yield. Idle, this returns at once.
        tokio::task::yield_now().await;
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let single = |job: &SigJob| {
            job.key
                .verify(
                    job.token
                        .as_bytes()
                        .get(..job.input_len)
                        .unwrap_or_default(),
                    &job.signature,
                )
                .is_ok()
        };
        let batch_ok = jobs.len() > 1 && {
            let messages: Vec<&[u8]> = jobs
                .iter()
                .map(|j| j.token.as_bytes().get(..j.input_len).unwrap_or_default())
                .collect();
            let signatures: Vec<Signature> = jobs.iter().map(|j| j.signature).collect();
            let keys: Vec<VerifyingKey> = jobs.iter().map(|j| j.key).collect();
            ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
        };
        for job in jobs.drain(..) {
            let ok = batch_ok || single(&job);
            // The request may have gone (client hung up): nothing to tell.
            let _ = job.reply.send(ok);
        }
    }
}

/// Verifies didmesh access tokens. Cheap to clone; clones share the JWKS, the
/// cache and the counters.
#[derive(Clone)]
pub struct TokenVerifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("jwks", &self.inner.jwks)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The header members we check, borrowed from the decoded header where the
/// JSON has no escapes.
#[derive(Deserialize)]
struct RawHeader<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    typ: Option<Cow<'a, str>>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

/// A token split at its dots, header checked.
struct Parts<'t> {
    /// `header.payload`, the signing input.
    signing_input: &'t str,
    payload: &'t str,
    signature: &'t str,
}

/// The synchronous part of a verification.
pub(crate) enum Attempt {
    /// Verified (or refused) with what is held.
    Done(Result<Arc<Claims>, AuthError>),
    /// The header names a `kid` the JWKS does not hold: a refetch may find
    /// it (async).
    UnknownKid,
    /// A never-seen token whose key is held: its signature goes to the
    /// batcher (async).
    Batch,
}

impl TokenVerifier {
    /// A verifier that checks tokens against `jwks` and `config`. With
    /// [`VerifierConfig::revocations`] set it starts the feed follower, which
    /// needs a tokio runtime (without one it logs an error and follows
    /// nothing).
    pub fn new(jwks: JwksCache, config: VerifierConfig) -> Self {
        let leeway = config.leeway.as_secs().min(MAX_LEEWAY_SECS);
        let max_lifetime = config.max_token_lifetime.as_secs();
        let revocations = Arc::new(Revocations::default());
        if let Some(url) = config.revocations.clone() {
            let follow = FollowConfig {
                url,
                issuer: config.issuer.clone(),
                wait: config.revocations_wait,
                horizon: max_lifetime.saturating_add(leeway),
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    drop(runtime.spawn(revocations::follow(
                        Arc::downgrade(&revocations),
                        jwks.clone(),
                        follow,
                    )));
                }
                Err(_) => tracing::error!(
                    url = %follow.url,
                    "no tokio runtime: the revocation feed is NOT followed"
                ),
            }
        }
        Self {
            inner: Arc::new(Inner {
                jwks,
                issuer: config.issuer,
                audience: config.audience,
                cache: VerifiedTokenCache::new(config.cache_capacity),
                leeway,
                max_lifetime,
                revocations,
                signature_verifications: AtomicU64::new(0),
                cache_hits: AtomicU64::new(0),
                revoked: AtomicU64::new(0),
                batch: config.batch_signatures,
                batcher: OnceLock::new(),
            }),
        }
    }

    /// The JWKS this verifier uses.
    pub fn jwks(&self) -> &JwksCache {
        &self.inner.jwks
    }

    /// Counters since start.
    pub fn stats(&self) -> VerifierStats {
        VerifierStats {
            signature_verifications: self.inner.signature_verifications.load(Ordering::Relaxed),
            cache_hits: self.inner.cache_hits.load(Ordering::Relaxed),
            jwks_fetches: self.inner.jwks.fetch_count(),
            revoked: self.inner.revoked.load(Ordering::Relaxed),
        }
    }

    /// Where the revocation feed follower stands (`following` is false when
    /// no feed is configured).
    pub fn revocation_status(&self) -> RevocationStatus {
        self.inner.revocations.status()
    }

    /// Verifies `token` (the part after `Bearer `).
    pub async fn verify(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        match self.try_verify(token) {
            Attempt::Done(result) => result,
            Attempt::UnknownKid => self.verify_after_refetch(token).await,
            Attempt::Batch => self.verify_batched(token).await,
        }
    }

    /// The batcher's queue, started now if need be; `None` outside a
    /// runtime or with batching off.
    fn batcher(&self) -> Option<&mpsc::UnboundedSender<SigJob>> {
        if !self.inner.batch {
            return None;
        }
        if let Some(tx) = self.inner.batcher.get() {
            return Some(tx);
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        Some(self.inner.batcher.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            drop(runtime.spawn(run_batcher(rx)));
            tx
        }))
    }

    /// A never-seen token whose key is held, its signature checked in a
    /// batch with the others waiting (then the same claim checks).
    pub(crate) async fn verify_batched(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        let keys = self.inner.jwks.snapshot();
        let (parts, key) =
            split_and_check_header(token, |kid| keys.get(kid)).map_err(AuthError::InvalidToken)?;
        let key = key.ok_or(AuthError::InvalidToken(Reason::UnknownKid))?;
        let digest = Digest::of(token);
        let signed = match (key.verifying, decode_signature(parts.signature)) {
            (Some(verifying), Ok(Some(signature))) => {
                let (reply, answer) = oneshot::channel();
                let job = SigJob {
                    token: token.into(),
                    input_len: parts.signing_input.len(),
                    signature,
                    key: verifying,
                    reply,
                };
                let sent = self.batcher().is_some_and(|tx| tx.send(job).is_ok());
                if sent {
                    self.inner
                        .signature_verifications
                        .fetch_add(1, Ordering::Relaxed);
                    Some(answer.await.unwrap_or(false))
                } else {
                    None
                }
            }
            // Unusable key, malformed or wrong-length signature: the
            // synchronous path gives the precise reason.
            _ => None,
        };
        let now = now_secs();
        match signed {
            Some(true) => {
                let (claims, meta) = self
                    .claims_after_signature(&parts, key, now)
                    .map_err(AuthError::InvalidToken)?;
                self.check_revoked(&claims, &meta, now)?;
                let claims = Arc::new(claims);
                let exp = claims.exp;
                self.inner
                    .cache
                    .insert(digest, claims.clone(), meta, exp, keys.generation, now);
                Ok(claims)
            }
            Some(false) => Err(AuthError::InvalidToken(Reason::BadSignature)),
            None => self.verify_and_cache(&parts, key, &keys, digest, now),
        }
    }

    /// Everything that needs no JWKS fetch: the cache, and the full check
    /// when the key is held. Synchronous, so the layer boxes a future only
    /// for an unknown `kid`.
    pub(crate) fn try_verify(&self, token: &str) -> Attempt {
        // A stale key set is refetched in the background even when every
        // request is a cache hit, so that a removed key's cached tokens are
        // dropped (their generation moves) within the JWKS freshness.
        self.inner.jwks.revalidate_if_stale();
        if token.len() > MAX_TOKEN_BYTES {
            return Attempt::Done(Err(AuthError::InvalidToken(Reason::Malformed)));
        }
        let digest = Digest::of(token);
        let now = now_secs();
        if let Some(hit) = self.cache_get(&digest, now) {
            return Attempt::Done(hit);
        }
        let keys = self.inner.jwks.snapshot();
        let (parts, key) = match split_and_check_header(token, |kid| {
            keys.get(kid).ok_or_else(|| self.inner.jwks.is_blocked(kid))
        }) {
            Ok(found) => found,
            Err(reason) => return Attempt::Done(Err(AuthError::InvalidToken(reason))),
        };
        let key = match key {
            Ok(key) => key,
            // A member removed for cause: no refetch, it will not be back.
            Err(true) => {
                self.inner.revoked.fetch_add(1, Ordering::Relaxed);
                return Attempt::Done(Err(AuthError::InvalidToken(Reason::Revoked)));
            }
            Err(false) => return Attempt::UnknownKid,
        };
        if self.inner.batch && tokio::runtime::Handle::try_current().is_ok() {
            return Attempt::Batch;
        }
        Attempt::Done(self.verify_and_cache(&parts, key, &keys, digest, now))
    }

    /// A cache lookup with the revocation rules.
    fn cache_get(&self, digest: &Digest, now: u64) -> Option<Result<Arc<Claims>, AuthError>> {
        let generation = self.inner.jwks.generation();
        let hit = if self.inner.revocations.active() {
            let set = self.inner.revocations.snapshot();
            self.inner
                .cache
                .get(digest, now, generation, |claims, meta| {
                    if set.revokes(claims, &meta.kid, now) {
                        Err(AuthError::InvalidToken(Reason::Revoked))
                    } else {
                        Ok(())
                    }
                })?
        } else {
            self.inner
                .cache
                .get(digest, now, generation, |_, _| Ok::<(), AuthError>(()))?
        };
        match &hit {
            Ok(_) => self.inner.cache_hits.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.inner.revoked.fetch_add(1, Ordering::Relaxed),
        };
        Some(hit)
    }

    /// The slow path: the header named a `kid` we do not hold.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    pub(crate) async fn verify_after_refetch(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        let (parts, kid) =
            split_and_check_header(token, str::to_owned).map_err(AuthError::InvalidToken)?;
        let keys = self.inner.jwks.key_set_for(&kid).await;
        let key = keys
            .get(&kid)
            .ok_or(AuthError::InvalidToken(Reason::UnknownKid))?;
        self.verify_and_cache(&parts, key, &keys, Digest::of(token), now_secs())
    }

    /// Verifies `token` (the part after `Bearer `) against the keys this
    /// verifier already holds: synchronous, no JWKS fetch, no verified-token
    /// cache. This is the parsing entry point for fuzzing: any input yields
    /// claims or an error, never a panic.
    pub fn verify_offline(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        let keys = self.inner.jwks.snapshot();
        let (parts, key) =
            split_and_check_header(token, |kid| keys.get(kid)).map_err(AuthError::InvalidToken)?;
        let key = key.ok_or(AuthError::InvalidToken(Reason::UnknownKid))?;
        let (claims, meta) = self
            .verify_with(&parts, key, now_secs())
            .map_err(AuthError::InvalidToken)?;
        self.check_revoked(&claims, &meta, now_secs())?;
        Ok(Arc::new(claims))
    }

    /// [`Self::verify_with`], the revocation rules, then the cache.
    fn verify_and_cache(
        &self,
        parts: &Parts<'_>,
        key: &KeyEntry,
        keys: &KeySet,
        digest: Digest,
        now: u64,
    ) -> Result<Arc<Claims>, AuthError> {
        let (claims, meta) = self
            .verify_with(parts, key, now)
            .map_err(AuthError::InvalidToken)?;
        self.check_revoked(&claims, &meta, now)?;
        let claims = Arc::new(claims);
        let exp = claims.exp;
        self.inner
            .cache
            .insert(digest, claims.clone(), meta, exp, keys.generation, now);
        Ok(claims)
    }

    fn check_revoked(&self, claims: &Claims, meta: &TokenMeta, now: u64) -> Result<(), AuthError> {
        if self.inner.revocations.active()
            && self
                .inner
                .revocations
                .snapshot()
                .revokes(claims, &meta.kid, now)
        {
            self.inner.revoked.fetch_add(1, Ordering::Relaxed);
            return Err(AuthError::InvalidToken(Reason::Revoked));
        }
        Ok(())
    }

    /// Signature and claims of a token whose header named `key`'s kid:
    /// steps 4–6 of the module doc, in the order `jsonwebtoken` made them
    /// before (so the reasons are unchanged).
    fn verify_with(
        &self,
        parts: &Parts<'_>,
        key: &KeyEntry,
        now: u64,
    ) -> Result<(Claims, TokenMeta), Reason> {
        let verifying = key.verifying.as_ref().ok_or(Reason::UnusableKey)?;
        let signature = decode_signature(parts.signature)?;
        self.inner
            .signature_verifications
            .fetch_add(1, Ordering::Relaxed);
        // `verify`, not `verify_strict`: what jsonwebtoken's rust_crypto
        // backend accepted, so no token that verified before is refused now.
        let signature = signature.ok_or(Reason::BadSignature)?;
        verifying
            .verify(parts.signing_input.as_bytes(), &signature)
            .map_err(|_| Reason::BadSignature)?;
        self.claims_after_signature(parts, key, now)
    }

    /// Step 5–6 of the module doc, once the signature checked out.
    fn claims_after_signature(
        &self,
        parts: &Parts<'_>,
        key: &KeyEntry,
        now: u64,
    ) -> Result<(Claims, TokenMeta), Reason> {
        let mut buf = [0u8; DECODE_BUF];
        let len = URL_SAFE_NO_PAD
            .decode_slice(parts.payload, &mut buf)
            .map_err(|_| Reason::Malformed)?;
        let payload = buf.get(..len).ok_or(Reason::Malformed)?;
        let claims: Claims = serde_json::from_slice(payload).map_err(|_| Reason::Malformed)?;
        // RFC 7519 §4.1.4, §4.1.5 with the leeway, as jsonwebtoken did
        // (exp < now - leeway; nbf > now + leeway).
        if claims.exp < now.saturating_sub(self.inner.leeway) {
            return Err(Reason::Expired);
        }
        if claims.nbf > now.saturating_add(self.inner.leeway) {
            return Err(Reason::NotYetValid);
        }
        if claims.iss != self.inner.issuer {
            return Err(Reason::WrongIssuer);
        }
        if claims.aud != self.inner.audience {
            return Err(Reason::WrongAudience);
        }
        check_claims(&claims, now, self.inner.leeway, self.inner.max_lifetime)?;
        Ok((
            claims,
            TokenMeta {
                kid: key.kid.clone(),
            },
        ))
    }
}

/// The checks `jsonwebtoken` does not make (see the module doc). `exp`,
/// `nbf`, `iss` and `aud` were checked by it already.
pub(crate) fn check_claims(
    claims: &Claims,
    now: u64,
    leeway: u64,
    max_lifetime: u64,
) -> Result<(), Reason> {
    if !is_did(&claims.sub) {
        return Err(Reason::InvalidSubject);
    }
    if claims.iat > now.saturating_add(leeway) {
        return Err(Reason::IssuedInFuture);
    }
    if claims.exp.saturating_sub(claims.iat) > max_lifetime
        || claims.exp > now.saturating_add(max_lifetime).saturating_add(leeway)
    {
        return Err(Reason::LifetimeTooLong);
    }
    Ok(())
}

/// W3C DID Core §3.1 syntax: `did:` method-name `:` method-specific-id, where
/// method-name is `1*(%x61-7A / DIGIT)` and method-specific-id is
/// `*( *idchar ":" ) 1*idchar`, idchar being ALPHA / DIGIT / `.` / `-` /
/// `_` / pct-encoded.
fn is_did(sub: &str) -> bool {
    let Some((method, id)) = sub
        .strip_prefix("did:")
        .and_then(|rest| rest.split_once(':'))
    else {
        return false;
    };
    if method.is_empty()
        || !method
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        || id.is_empty()
        || id.ends_with(':')
    {
        return false;
    }
    let id = id.as_bytes();
    let mut i = 0;
    while let Some(&b) = id.get(i) {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':') {
            i += 1;
        } else if b == b'%'
            && id.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && id.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
        {
            i += 3;
        } else {
            return false;
        }
    }
    true
}

/// The 64 signature bytes (RFC 8032 §5.1.6); `Ok(None)` for another
/// length (a bad signature), `Err` for undecodable base64 (malformed), as
/// jsonwebtoken answered.
fn decode_signature(text: &str) -> Result<Option<Signature>, Reason> {
    let mut sig = [0u8; 64];
    match URL_SAFE_NO_PAD.decode_slice(text, &mut sig) {
        Ok(64) => Ok(Some(Signature::from_bytes(&sig))),
        Ok(_) | Err(base64::DecodeSliceError::OutputSliceTooSmall) => Ok(None),
        Err(base64::DecodeSliceError::DecodeError(_)) => Err(Reason::Malformed),
    }
}

/// Splits a token at its dots, checks the size and the protected header,
/// and returns the parts and the header's `kid`.
/// The `kid` is handed to `with_kid` while it is still borrowed from the
/// decoded header, so the hot path looks the key up without allocating.
fn split_and_check_header<'t, R>(
    token: &'t str,
    with_kid: impl FnOnce(&str) -> R,
) -> Result<(Parts<'t>, R), Reason> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Reason::Malformed);
    }
    let mut dots = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (dots.next(), dots.next(), dots.next(), dots.next())
    else {
        return Err(Reason::Malformed);
    };
    let mut buf = [0u8; DECODE_BUF];
    let len = URL_SAFE_NO_PAD
        .decode_slice(header, &mut buf)
        .map_err(|_| Reason::Malformed)?;
    let bytes = buf.get(..len).ok_or(Reason::Malformed)?;
    let header_json: RawHeader<'_> =
        serde_json::from_slice(bytes).map_err(|_| Reason::Malformed)?;
    if header_json.alg != "EdDSA" {
        return Err(Reason::UnsupportedAlgorithm);
    }
    if header_json
        .typ
        .as_deref()
        .is_some_and(|t| !t.eq_ignore_ascii_case("JWT"))
        || header_json.crit.is_some()
    {
        return Err(Reason::UnsupportedHeader);
    }
    let kid = with_kid(&header_json.kid.ok_or(Reason::MissingKid)?);
    Ok((
        Parts {
            signing_input: &token[..header.len() + 1 + payload.len()],
            payload,
            signature,
        },
        kid,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_syntax() {
        for good in [
            "did:mesh:fejkf6myyqkxiwhzrjucnlnezrgippxw",
            "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK",
            "did:web:example.com%3A8443:u:alice",
            "did:example:a::b",
            "did:x1:A.b-c_d",
        ] {
            assert!(is_did(good), "{good}");
        }
        for bad in [
            "",
            "did",
            "did:",
            "did::x",
            "did:mesh",
            "did:mesh:",
            "did:mesh:a:",
            "did:MESH:x",
            "did:me-sh:x",
            "DID:mesh:x",
            "did:mesh:a b",
            "did:mesh:a/b",
            "did:mesh:%zz",
            "did:mesh:%4",
            "did:mesh:\u{e9}",
            "did:mesh:a\n",
            " did:mesh:a",
        ] {
            assert!(!is_did(bad), "{bad:?}");
        }
    }

    #[test]
    fn lifetime_and_iat_bounds() {
        let base = Claims {
            iss: "i".into(),
            sub: "did:mesh:x".into(),
            aud: "a".into(),
            iat: 1000,
            nbf: 1000,
            exp: 1600,
            jti: "j".into(),
            auth_time: 1000,
            amr: vec![],
            acr: None,
            key: None,
            rev: None,
        };
        let check = |f: &dyn Fn(&mut Claims)| {
            let mut c = base.clone();
            f(&mut c);
            check_claims(&c, 1000, 30, 3600)
        };
        assert_eq!(check(&|_| {}), Ok(()));
        assert_eq!(check(&|c| c.exp = 4600), Ok(()), "exactly the maximum");
        assert_eq!(check(&|c| c.exp = 4601), Err(Reason::LifetimeTooLong));
        assert_eq!(check(&|c| c.exp = u64::MAX), Err(Reason::LifetimeTooLong));
        assert_eq!(
            check(&|c| {
                c.iat = u64::MAX;
                c.exp = u64::MAX;
            }),
            Err(Reason::IssuedInFuture)
        );
        assert_eq!(check(&|c| c.iat = 1030), Ok(()), "within the leeway");
        assert_eq!(check(&|c| c.iat = 1031), Err(Reason::IssuedInFuture));
        // An old iat does not stretch exp past now + lifetime either way.
        assert_eq!(
            check(&|c| {
                c.iat = 0;
                c.exp = 3600;
            }),
            Ok(())
        );
        assert_eq!(check(&|c| c.iat = 0), Ok(()));
        assert_eq!(
            check(&|c| c.sub = String::new()),
            Err(Reason::InvalidSubject)
        );
    }
}
