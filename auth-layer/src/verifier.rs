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
//!    shape (`iat`, `nbf`, `exp` are integers in `0..2^64`);
//! 5. our own claim checks, which `jsonwebtoken` does not make: `sub` is a
//!    DID (W3C DID Core §3.1), `iat` is not in the future beyond the leeway,
//!    and `exp` is at most [`VerifierConfig::max_token_lifetime`] after `iat`
//!    and after now (so `exp = 2^64-1` is refused, and a leaked signing key
//!    cannot mint tokens that outlive its removal by years).
//!
//! [`TokenVerifier::verify_offline`] runs steps 2, 4 and 5 against the keys
//! already held, synchronously: the entry point for fuzzing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use crate::error::{AuthError, Reason};
use crate::jwks::{JwksCache, KeySet};
use crate::token_cache::{Digest, VerifiedTokenCache};
use crate::{now_secs, Claims};

/// Tokens longer than this are refused before any work. A didmesh token is
/// well under 1 KiB.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Largest leeway used, whatever the configuration says: `jsonwebtoken`
/// computes `now - leeway` in `u64`, so an absurd leeway must not reach it.
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
    /// The leeway, in seconds (capped at [`MAX_LEEWAY_SECS`]).
    leeway: u64,
    /// [`VerifierConfig::max_token_lifetime`], in seconds.
    max_lifetime: u64,
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
        let leeway = config.leeway.as_secs().min(MAX_LEEWAY_SECS);
        validation.leeway = leeway;
        Self {
            inner: Arc::new(Inner {
                jwks,
                validation,
                cache: VerifiedTokenCache::new(config.cache_capacity),
                leeway,
                max_lifetime: config.max_token_lifetime.as_secs(),
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
        // A stale key set is refetched in the background even when every
        // request is a cache hit, so that a removed key's cached tokens are
        // dropped (their generation moves) within the JWKS freshness.
        self.inner.jwks.revalidate_if_stale();
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

    /// Verifies `token` (the part after `Bearer `) against the keys this
    /// verifier already holds: synchronous, no JWKS fetch, no verified-token
    /// cache. This is the parsing entry point for fuzzing: any input yields
    /// claims or an error, never a panic.
    pub fn verify_offline(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        let kid = check_header(token).map_err(AuthError::InvalidToken)?;
        self.verify_with(token, &kid, &self.inner.jwks.snapshot())
            .map(Arc::new)
    }

    /// The full check. Never logs the token.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn verify_uncached(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        let kid = check_header(token).map_err(AuthError::InvalidToken)?;
        let keys = self.inner.jwks.key_set_for(&kid).await;
        let claims = Arc::new(self.verify_with(token, &kid, &keys)?);
        self.inner.cache.insert(
            Digest::of(token),
            claims.clone(),
            claims.exp,
            keys.generation,
            now_secs(),
        );
        Ok(claims)
    }

    /// Signature and claims of a token whose header named `kid`, against
    /// `keys`.
    fn verify_with(&self, token: &str, kid: &str, keys: &KeySet) -> Result<Claims, AuthError> {
        let key = keys
            .get(kid)
            .ok_or(AuthError::InvalidToken(Reason::UnknownKid))?;
        self.inner
            .signature_verifications
            .fetch_add(1, Ordering::Relaxed);
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.inner.validation)
            .map_err(|e| AuthError::InvalidToken(Reason::from_jwt(&e)))?;
        check_claims(
            &data.claims,
            now_secs(),
            self.inner.leeway,
            self.inner.max_lifetime,
        )
        .map_err(AuthError::InvalidToken)?;
        Ok(data.claims)
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

/// Checks the size and the protected header and returns its `kid`.
fn check_header(token: &str) -> Result<String, Reason> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Reason::Malformed);
    }
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
