//! [`JwksCache`]: the network's token-signing keys, fetched over HTTP and
//! kept by `kid`.
//!
//! * Only Ed25519 keys are kept (`kty: OKP`, `crv: Ed25519`, `alg` absent or
//!   `EdDSA`, `use` absent or `sig`; RFC 8037 §2). Others are ignored.
//! * A token that names an unknown `kid` triggers a refetch, because a new
//!   member node may just have joined. To keep a flood of made-up `kid`s from
//!   turning into a flood of requests on the node, refetches are
//!   single-flight (one in flight; waiters reuse its result) and at most one
//!   per [`JwksConfig::min_refetch_interval`].
//! * [`JwksCache::spawn_periodic_refresh`] refetches every
//!   [`JwksConfig::refresh_interval`], so removed keys also disappear when no
//!   unknown `kid` shows up.
//! * A failed fetch keeps the previous keys.
//! * Each key set carries a generation that changes when a key is removed or
//!   replaced; the verified-token cache compares it, so a token signed by a
//!   removed key stops being accepted after the next refetch even if cached.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::DecodingKey;
use serde::Deserialize;

use crate::error::JwksError;

/// Largest JWKS body we read. A network has a handful of members; this is
/// generous and still stops a hostile or broken endpoint from exhausting
/// memory.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// How to fetch and refresh a JWKS. Build with [`JwksConfig::new`] and adjust
/// the public fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JwksConfig {
    /// The JWKS URL, e.g. `http://node:7000/.well-known/jwks.json`.
    pub url: String,
    /// Periodic refresh interval. Default 5 minutes.
    pub refresh_interval: Duration,
    /// Minimum time between two refetches caused by unknown `kid`s.
    /// Default 1 second.
    pub min_refetch_interval: Duration,
    /// Timeout of one fetch (connect + body). Default 5 seconds.
    pub fetch_timeout: Duration,
}

impl JwksConfig {
    /// A configuration for `url` with the defaults above.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            refresh_interval: Duration::from_secs(300),
            min_refetch_interval: Duration::from_secs(1),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

/// One usable verification key.
struct KeyEntry {
    /// Ready for `jsonwebtoken::decode`.
    decoding: DecodingKey,
    /// The raw public key, to notice a `kid` whose key was replaced.
    raw: [u8; 32],
}

/// An immutable snapshot of the keys, swapped whole on every fetch so that
/// readers never wait for a fetch.
pub(crate) struct KeySet {
    /// Changes when a key is removed or replaced (not when one is added).
    pub(crate) generation: u64,
    /// Keys by `kid`.
    keys: HashMap<String, KeyEntry>,
}

impl KeySet {
    /// The decoding key for `kid`, if the JWKS has it.
    pub(crate) fn get(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys.get(kid).map(|k| &k.decoding)
    }
}

/// Where keys come from when the cache fetches.
struct Source {
    /// The JWKS URL.
    url: String,
    /// Reused so connections are kept alive between fetches.
    client: reqwest::Client,
}

struct Inner {
    /// `None` for a cache built from fixed keys.
    source: Option<Source>,
    /// The current keys. Readers clone the `Arc` and release the lock at once.
    keys: RwLock<Arc<KeySet>>,
    /// Copy of `keys.generation`, readable without the lock on the hot path.
    generation: AtomicU64,
    /// Held for the whole of a fetch (single flight); holds when the last
    /// fetch started, to rate-limit unknown-`kid` refetches.
    fetch_gate: tokio::sync::Mutex<Option<Instant>>,
    /// Completed fetch attempts (success or failure). Lets a waiter see that
    /// a fetch happened while it queued, and is exported as a metric.
    fetches: AtomicU64,
    /// See [`JwksConfig::min_refetch_interval`].
    min_refetch_interval: Duration,
    /// See [`JwksConfig::refresh_interval`].
    refresh_interval: Duration,
}

/// The JWKS of a didmesh network, cached by `kid`. Cheap to clone; clones
/// share the keys.
#[derive(Clone)]
pub struct JwksCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("url", &self.inner.source.as_ref().map(|s| s.url.as_str()))
            .field("kids", &self.kids())
            .finish()
    }
}

impl JwksCache {
    /// A cache that fetches from `config.url`. It starts empty and fetches
    /// nothing yet: call [`refresh`](Self::refresh) to load the keys now, or
    /// let the first token's unknown `kid` do it.
    pub fn new(config: JwksConfig) -> Result<Self, JwksError> {
        let client = reqwest::Client::builder()
            .timeout(config.fetch_timeout)
            .connect_timeout(config.fetch_timeout)
            .build()
            .map_err(JwksError::Client)?;
        Ok(Self::build(
            Some(Source {
                url: config.url,
                client,
            }),
            HashMap::new(),
            config.min_refetch_interval,
            config.refresh_interval,
        ))
    }

    /// A cache with fixed keys from a JWKS document and no URL: for tests and
    /// for applications that pin keys. It never refetches.
    pub fn from_json(jwks: &str) -> Result<Self, JwksError> {
        let keys = parse_jwks(jwks.as_bytes())?;
        Ok(Self::build(
            None,
            keys,
            Duration::from_secs(1),
            Duration::from_secs(300),
        ))
    }

    fn build(
        source: Option<Source>,
        keys: HashMap<String, KeyEntry>,
        min_refetch_interval: Duration,
        refresh_interval: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                source,
                keys: RwLock::new(Arc::new(KeySet {
                    generation: 0,
                    keys,
                })),
                generation: AtomicU64::new(0),
                fetch_gate: tokio::sync::Mutex::new(None),
                fetches: AtomicU64::new(0),
                min_refetch_interval,
                refresh_interval,
            }),
        }
    }

    /// Fetches the JWKS now (waiting for a fetch already in flight first) and
    /// returns how many usable keys it holds. On error the old keys stay.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let source = self.inner.source.as_ref().ok_or(JwksError::NoSource)?;
        let mut last = self.inner.fetch_gate.lock().await;
        *last = Some(Instant::now());
        self.fetch_and_install(source).await
    }

    /// Starts a task that refreshes every [`JwksConfig::refresh_interval`].
    /// The task holds only a weak reference: it ends when every clone of the
    /// cache is dropped. Must be called inside a tokio runtime.
    pub fn spawn_periodic_refresh(&self) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let every = self.inner.refresh_interval;
        let has_source = self.inner.source.is_some();
        tokio::spawn(async move {
            if !has_source {
                return;
            }
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = weak.upgrade() else { break };
                let cache = JwksCache { inner };
                if let Err(error) = cache.refresh().await {
                    tracing::warn!(%error, "periodic JWKS refresh failed; keeping the old keys");
                }
            }
        })
    }

    /// The `kid`s currently held, sorted.
    pub fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.snapshot().keys.keys().cloned().collect();
        kids.sort();
        kids
    }

    /// How many fetches were attempted since start (a metric; a test uses it
    /// to check that a burst of unknown `kid`s costs one fetch).
    pub fn fetch_count(&self) -> u64 {
        self.inner.fetches.load(Ordering::Acquire)
    }

    /// The current key set.
    pub(crate) fn snapshot(&self) -> Arc<KeySet> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The current generation, without taking the lock (hot path).
    pub(crate) fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// A key set that holds `kid` if the JWKS has it: the current one, or a
    /// freshly fetched one when `kid` is unknown and a refetch is allowed.
    pub(crate) async fn key_set_for(&self, kid: &str) -> Arc<KeySet> {
        let keys = self.snapshot();
        if keys.get(kid).is_some() {
            return keys;
        }
        self.refetch_for_unknown_kid().await;
        self.snapshot()
    }

    /// Single-flight, rate-limited refetch.
    async fn refetch_for_unknown_kid(&self) {
        let Some(source) = self.inner.source.as_ref() else {
            return;
        };
        let seen = self.inner.fetches.load(Ordering::Acquire);
        let mut last = self.inner.fetch_gate.lock().await;
        if self.inner.fetches.load(Ordering::Acquire) != seen {
            // Someone fetched while we queued: their keys are as fresh as ours
            // would be.
            return;
        }
        if let Some(at) = *last {
            if at.elapsed() < self.inner.min_refetch_interval {
                tracing::debug!("unknown kid, but the JWKS was fetched very recently");
                return;
            }
        }
        *last = Some(Instant::now());
        if let Err(error) = self.fetch_and_install(source).await {
            tracing::warn!(%error, "JWKS refetch for an unknown kid failed; keeping the old keys");
        }
    }

    /// Fetches, parses and swaps in the new keys. Caller holds `fetch_gate`.
    #[tracing::instrument(skip_all, fields(url = %source.url))]
    async fn fetch_and_install(&self, source: &Source) -> Result<usize, JwksError> {
        let result = fetch(source).await.and_then(|body| parse_jwks(&body));
        self.inner.fetches.fetch_add(1, Ordering::AcqRel);
        let keys = result?;
        let count = keys.len();
        self.install(keys);
        tracing::debug!(keys = count, "JWKS fetched");
        Ok(count)
    }

    /// Swaps in a new key set, bumping the generation if any old key is gone
    /// or changed.
    fn install(&self, keys: HashMap<String, KeyEntry>) {
        let mut current = self
            .inner
            .keys
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let revoked = current
            .keys
            .iter()
            .any(|(kid, old)| keys.get(kid).is_none_or(|new| new.raw != old.raw));
        let generation = current.generation + u64::from(revoked);
        if revoked {
            tracing::info!("a JWKS key was removed or replaced; cached tokens are re-verified");
        }
        *current = Arc::new(KeySet { generation, keys });
        self.inner.generation.store(generation, Ordering::Release);
    }
}

/// GET the JWKS, reading at most [`MAX_JWKS_BYTES`].
async fn fetch(source: &Source) -> Result<Vec<u8>, JwksError> {
    let mut response = source
        .client
        .get(&source.url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(JwksError::Fetch)?;
    let too_large = JwksError::TooLarge {
        limit: MAX_JWKS_BYTES,
    };
    if response
        .content_length()
        .is_some_and(|len| len > MAX_JWKS_BYTES as u64)
    {
        return Err(too_large);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(JwksError::Fetch)? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(too_large);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The document; keys stay untyped so that one odd key (another `kty`, a
/// field of an unexpected type) does not make the whole set unreadable.
#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

/// The members of a JWK we look at (RFC 7517 §4, RFC 8037 §2).
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    crv: Option<String>,
    x: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
}

/// Keeps the usable Ed25519 keys of a JWKS document.
fn parse_jwks(body: &[u8]) -> Result<HashMap<String, KeyEntry>, JwksError> {
    let doc: RawJwks = serde_json::from_slice(body).map_err(JwksError::Parse)?;
    let mut keys = HashMap::new();
    for value in doc.keys {
        let Ok(jwk) = serde_json::from_value::<RawJwk>(value) else {
            tracing::debug!("ignoring an unreadable JWK");
            continue;
        };
        let Some((kid, entry)) = usable_key(jwk) else {
            continue;
        };
        if keys.contains_key(&kid) {
            // Ambiguous: keep the first, as most JWKS consumers do.
            tracing::warn!(%kid, "duplicate kid in the JWKS; keeping the first key");
            continue;
        }
        keys.insert(kid, entry);
    }
    Ok(keys)
}

/// An Ed25519 signing key with a `kid`, or `None`.
fn usable_key(jwk: RawJwk) -> Option<(String, KeyEntry)> {
    if jwk.kty != "OKP"
        || jwk.crv.as_deref() != Some("Ed25519")
        || jwk.alg.as_deref().is_some_and(|a| a != "EdDSA")
        || jwk.use_.as_deref().is_some_and(|u| u != "sig")
    {
        return None;
    }
    let kid = jwk.kid?;
    // RFC 7518 §2 says base64url without padding; accept padding anyway.
    let x = jwk.x?;
    let bytes = URL_SAFE_NO_PAD.decode(x.trim_end_matches('=')).ok()?;
    // Anything but 32 bytes is not an Ed25519 public key (RFC 8032 §5.1.5).
    let raw: [u8; 32] = bytes.try_into().ok()?;
    let decoding = DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(raw)).ok()?;
    Some((kid, KeyEntry { decoding, raw }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_ed25519_signing_keys() {
        let x = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let doc = serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "good", "alg": "EdDSA", "use": "sig"},
            {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "no-alg"},
            {"kty": "OKP", "crv": "X25519", "x": x, "kid": "ecdh"},
            {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "enc", "use": "enc"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "rsa"},
            {"kty": "oct", "k": x, "kid": "hmac"},
            {"kty": "OKP", "crv": "Ed25519", "x": "c2hvcnQ", "kid": "short"},
            {"kty": "OKP", "crv": "Ed25519", "x": x},
            {"kty": 5},
        ]});
        let keys = parse_jwks(doc.to_string().as_bytes()).unwrap();
        let mut kids: Vec<_> = keys.keys().cloned().collect();
        kids.sort();
        assert_eq!(kids, ["good", "no-alg"]);
    }

    #[test]
    fn generation_moves_only_when_a_key_goes_or_changes() {
        let doc = |keys: &[(&str, u8)]| {
            let keys: Vec<_> = keys
                .iter()
                .map(|(kid, b)| serde_json::json!({"kty":"OKP","crv":"Ed25519","kid":kid,"x":URL_SAFE_NO_PAD.encode([*b;32])}))
                .collect();
            parse_jwks(serde_json::json!({ "keys": keys }).to_string().as_bytes()).unwrap()
        };
        let cache = JwksCache::from_json(r#"{"keys":[]}"#).unwrap();
        cache.install(doc(&[("a", 1)]));
        assert_eq!(cache.generation(), 0, "adding a key keeps cached tokens");
        cache.install(doc(&[("a", 1), ("b", 2)]));
        assert_eq!(cache.generation(), 0);
        cache.install(doc(&[("a", 1), ("b", 3)]));
        assert_eq!(cache.generation(), 1, "a replaced key revokes");
        cache.install(doc(&[("b", 3)]));
        assert_eq!(cache.generation(), 2, "a removed key revokes");
        assert_eq!(cache.snapshot().generation, 2);
    }
}
