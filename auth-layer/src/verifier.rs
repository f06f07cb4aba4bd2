//! [`TokenVerifier`]: turns a bearer token into verified [`Claims`].
//!
//! Order of checks, cheapest first:
//! 1. the verified-token cache (a hit ends here);
//! 2. the header, parsed by us: `alg` must be `EdDSA` (RFC 8725 §3.1: the
//!    verifier, not the token, picks the algorithm), `typ` absent or `JWT`,
//!    no `crit` (RFC 7515 §4.1.11), a `kid`;
//! 3. the key for `kid` from the [`JwksCache`] (may refetch);
//! 4. `jsonwebtoken::decode` with `Validation::new(Algorithm::EdDSA)`:
//!    signature, `iss`, `aud`, `exp`, `nbf` (with leeway), and the claim
//!    shape.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use crate::error::{AuthError, Reason};
use crate::jwks::JwksCache;
use crate::token_cache::{Digest, VerifiedTokenCache};
use crate::{now_secs, Claims};

/// Tokens longer than this are refused before any work. A didmesh token is
/// well under 1 KiB.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

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
}

impl VerifierConfig {
    /// A configuration for `issuer` and `audience` with the defaults above.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            leeway: Duration::from_secs(30),
            cache_capacity: 100_000,
        }
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
}

struct Inner {
    jwks: JwksCache,
    /// Fixed to EdDSA, `iss`, `aud`, leeway; built once.
    validation: Validation,
    cache: VerifiedTokenCache,
    signature_verifications: AtomicU64,
    cache_hits: AtomicU64,
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

/// The header members we check. Parsed by us, not by `jsonwebtoken`, so that
/// `alg: none` or an unknown `alg` gets a precise reason.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    kid: Option<String>,
    typ: Option<String>,
    crit: Option<serde_json::Value>,
}

impl TokenVerifier {
    /// A verifier that checks tokens against `jwks` and `config`.
    pub fn new(jwks: JwksCache, config: VerifierConfig) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = config.leeway.as_secs();
        Self {
            inner: Arc::new(Inner {
                jwks,
                validation,
                cache: VerifiedTokenCache::new(config.cache_capacity),
                signature_verifications: AtomicU64::new(0),
                cache_hits: AtomicU64::new(0),
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
        }
    }

    /// Verifies `token` (the part after `Bearer `).
    pub async fn verify(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        if let Some(claims) = self.cached(token) {
            return Ok(claims);
        }
        self.verify_uncached(token).await
    }

    /// The claims of `token` if it is in the verified-token cache and still
    /// live. Synchronous, so the layer can skip boxing a future on a hit.
    pub(crate) fn cached(&self, token: &str) -> Option<Arc<Claims>> {
        if token.len() > MAX_TOKEN_BYTES {
            return None;
        }
        let hit =
            self.inner
                .cache
                .get(&Digest::of(token), now_secs(), self.inner.jwks.generation())?;
        self.inner.cache_hits.fetch_add(1, Ordering::Relaxed);
        Some(hit)
    }

    /// The full check. Never logs the token.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn verify_uncached(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::InvalidToken(Reason::Malformed));
        }
        let kid = check_header(token).map_err(AuthError::InvalidToken)?;
        let keys = self.inner.jwks.key_set_for(&kid).await;
        let key = keys
            .get(&kid)
            .ok_or(AuthError::InvalidToken(Reason::UnknownKid))?;

        self.inner
            .signature_verifications
            .fetch_add(1, Ordering::Relaxed);
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.inner.validation)
            .map_err(|e| AuthError::InvalidToken(Reason::from_jwt(&e)))?;

        let claims = Arc::new(data.claims);
        self.inner.cache.insert(
            Digest::of(token),
            claims.clone(),
            claims.exp,
            keys.generation,
            now_secs(),
        );
        Ok(claims)
    }
}

/// Checks the protected header and returns its `kid`.
fn check_header(token: &str) -> Result<String, Reason> {
    let mut parts = token.split('.');
    let (Some(header), Some(_payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reason::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| Reason::Malformed)?;
    let header: RawHeader = serde_json::from_slice(&bytes).map_err(|_| Reason::Malformed)?;
    if header.alg != "EdDSA" {
        return Err(Reason::UnsupportedAlgorithm);
    }
    if header
        .typ
        .as_deref()
        .is_some_and(|t| !t.eq_ignore_ascii_case("JWT"))
        || header.crit.is_some()
    {
        return Err(Reason::UnsupportedHeader);
    }
    header.kid.ok_or(Reason::MissingKid)
}
