//! [`JwksCache`]: the network's token-signing keys, fetched over HTTP and
//! kept by `kid`.
//!
//! * Only Ed25519 keys are kept (`kty: OKP`, `crv: Ed25519`, `alg` absent or
//!   `EdDSA`, `use` absent or `sig`; RFC 8037 §2). Others are ignored.
//! * **Freshness.** A fetched key set is used for as long as the answer's
//!   `Cache-Control: max-age` allows (minus its `Age`, RFC 9111 §4.2.1 and
//!   §4.2.3), bounded below by [`JwksConfig::min_cache_age`] and above by
//!   [`JwksConfig::max_cache_age`] (default 60 s); an answer without
//!   `max-age` is used for [`JwksConfig::refresh_interval`], also capped by
//!   the ceiling. So a member removed from the network stops verifying
//!   within the ceiling, whatever the node or a proxy in between says.
//! * **Refetching when stale.** [`JwksCache::spawn_periodic_refresh`]
//!   refetches as the set goes stale. As a safety net, a request that finds
//!   the set stale starts one background refetch and goes on with the
//!   current keys (stale-while-revalidate, RFC 5861 §3), so a slow or
//!   unreachable node never stalls requests.
//! * A token that names an unknown `kid` triggers a refetch, because a new
//!   member node may just have joined. To keep a flood of made-up `kid`s from
//!   turning into a flood of requests on the node, refetches are
//!   single-flight (one in flight; waiters reuse its result) and at most one
//!   per [`JwksConfig::min_refetch_interval`].
//! * A failed fetch keeps the previous keys and is retried after
//!   [`JwksConfig::min_cache_age`].
//! * Each key set carries a generation that changes when a key is removed or
//!   replaced; the verified-token cache compares it, so a token signed by a
//!   removed key stops being accepted as soon as the refetch lands, even if
//!   cached.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use serde::Deserialize;

use crate::error::JwksError;

/// Largest JWKS body we read. A network has a handful of members; this is
/// generous and still stops a hostile or broken endpoint from exhausting
/// memory.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// The shortest freshness ever used, whatever the configuration says: keeps a
/// zero in the configuration from turning the periodic refresh into a busy
/// loop.
const MIN_FRESHNESS: Duration = Duration::from_millis(100);

/// RFC 9111 §1.2.2: a `delta-seconds` too large to represent is taken as
/// 2^31 seconds.
const DELTA_SECONDS_OVERFLOW: u64 = 1 << 31;

/// How to fetch and refresh a JWKS. Build with [`JwksConfig::new`] and adjust
/// the public fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JwksConfig {
    /// The JWKS URL, e.g. `http://node:7000/.well-known/jwks.json`.
    pub url: String,
    /// How long a fetched JWKS is used when the answer carries no
    /// `Cache-Control: max-age`. Capped by [`max_cache_age`](Self::max_cache_age).
    /// Default 60 seconds.
    pub refresh_interval: Duration,
    /// Ceiling on how long a fetched JWKS is used, whatever its `max-age`
    /// says: the longest a removed member's key keeps verifying while the
    /// node is reachable. Default 60 seconds.
    pub max_cache_age: Duration,
    /// Floor on the answer's `max-age`, and the wait before retrying a failed
    /// fetch, so that `max-age=0` or `no-store` cannot make every relying
    /// party refetch on every request. Default 5 seconds.
    pub min_cache_age: Duration,
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
            refresh_interval: Duration::from_secs(60),
            max_cache_age: Duration::from_secs(60),
            min_cache_age: Duration::from_secs(5),
            min_refetch_interval: Duration::from_secs(1),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

/// How long a fetched key set stays fresh (see the module doc).
#[derive(Debug, Clone, Copy)]
struct Freshness {
    /// Without `max-age`.
    default: Duration,
    /// Floor on `max-age`.
    floor: Duration,
    /// Ceiling on everything.
    ceiling: Duration,
}

impl Freshness {
    fn from_config(config: &JwksConfig) -> Self {
        Self {
            default: config.refresh_interval,
            floor: config.min_cache_age,
            ceiling: config.max_cache_age,
        }
    }

    /// The freshness of an answer with this `max-age` (already less its
    /// `Age`). The node's own `max-age` is bounded both ways; the configured
    /// interval only by the ceiling. The ceiling wins over the floor.
    fn lifetime(self, max_age: Option<Duration>) -> Duration {
        let lifetime = match max_age {
            Some(max_age) => max_age.max(self.floor),
            None => self.default,
        };
        lifetime.min(self.ceiling).max(MIN_FRESHNESS)
    }

    /// The wait before retrying after a failed fetch.
    fn retry(self) -> Duration {
        self.floor.min(self.ceiling).max(MIN_FRESHNESS)
    }
}

/// One verification key, parsed once when the JWKS is fetched.
pub(crate) struct KeyEntry {
    /// The `kid`, shared with the verified-token cache entries it signed
    /// (the revocation feed's `member` entries name kids).
    pub(crate) kid: Arc<str>,
    /// The decompressed Ed25519 point (RFC 8032 §5.1.3), ready to verify:
    /// decompressing costs a field inversion and a square root, so it is done
    /// once per key, not once per token. `None` when the 32 bytes are not a
    /// point on the curve: such a `kid` answers `unusable_key`.
    pub(crate) verifying: Option<VerifyingKey>,
    /// The raw public key, to notice a `kid` whose key was replaced.
    raw: [u8; 32],
}

/// An immutable snapshot of the keys, swapped whole on every fetch so that
/// readers never wait for a fetch.
pub(crate) struct KeySet {
    /// Changes when a key is removed or replaced (not when one is added).
    pub(crate) generation: u64,
    /// Keys by `kid`.
    keys: HashMap<Arc<str>, KeyEntry>,
}

impl KeySet {
    /// The key for `kid`, if the JWKS has it.
    pub(crate) fn get(&self, kid: &str) -> Option<&KeyEntry> {
        self.keys.get(kid)
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
    /// See [`Freshness`].
    freshness: Freshness,
    /// Time origin of `refresh_due_ms`.
    epoch: Instant,
    /// When the current keys go stale, in milliseconds since `epoch`
    /// (`u64::MAX`: never, for fixed keys). An atomic so that the hot path
    /// checks it without a lock.
    refresh_due_ms: AtomicU64,
    /// A background refetch is under way (so a burst of requests on a stale
    /// set starts one, not one each).
    revalidating: AtomicBool,
    /// Kids the revocation feed removed for cause: never installed again,
    /// even if a lagging node still lists them.
    blocked: RwLock<Vec<String>>,
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
        let freshness = Freshness::from_config(&config);
        Ok(Self::build(
            Some(Source {
                url: config.url,
                client,
            }),
            HashMap::new(),
            config.min_refetch_interval,
            freshness,
        ))
    }

    /// A cache with fixed keys from a JWKS document and no URL: for tests and
    /// for applications that pin keys. It never refetches.
    pub fn from_json(jwks: &str) -> Result<Self, JwksError> {
        let keys = parse_jwks(jwks.as_bytes())?;
        let config = JwksConfig::new("");
        Ok(Self::build(
            None,
            keys,
            config.min_refetch_interval,
            Freshness::from_config(&config),
        ))
    }

    fn build(
        source: Option<Source>,
        keys: HashMap<Arc<str>, KeyEntry>,
        min_refetch_interval: Duration,
        freshness: Freshness,
    ) -> Self {
        // A fetching cache starts stale (it holds nothing yet); fixed keys
        // never go stale.
        let refresh_due_ms = if source.is_some() { 0 } else { u64::MAX };
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
                freshness,
                epoch: Instant::now(),
                refresh_due_ms: AtomicU64::new(refresh_due_ms),
                revalidating: AtomicBool::new(false),
                blocked: RwLock::new(Vec::new()),
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

    /// Starts a task that refetches the JWKS each time it goes stale (see
    /// the module doc for how long a set stays fresh). The task holds only a
    /// weak reference: it ends when every clone of the cache is dropped.
    /// Must be called inside a tokio runtime.
    pub fn spawn_periodic_refresh(&self) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let has_source = self.inner.source.is_some();
        tokio::spawn(async move {
            if !has_source {
                return;
            }
            loop {
                // Hold the cache only to read the deadline, not while asleep.
                let wait = match weak.upgrade() {
                    Some(inner) => JwksCache { inner }.time_to_stale(),
                    None => break,
                };
                tokio::time::sleep(wait.max(MIN_FRESHNESS)).await;
                let Some(inner) = weak.upgrade() else { break };
                JwksCache { inner }.refresh_if_stale().await;
            }
        })
    }

    /// The `kid`s currently held, sorted.
    pub fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.snapshot().keys.keys().map(|k| k.to_string()).collect();
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
        self.revalidate_if_stale();
        let keys = self.snapshot();
        if keys.get(kid).is_some() {
            return keys;
        }
        self.refetch_for_unknown_kid().await;
        self.snapshot()
    }

    /// Whether the revocation feed removed `kid` for cause.
    pub(crate) fn is_blocked(&self, kid: &str) -> bool {
        self.inner
            .blocked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|b| b == kid)
    }

    /// Milliseconds since `epoch`.
    fn now_ms(&self) -> u64 {
        millis(self.inner.epoch.elapsed())
    }

    /// Whether the current set is past its freshness lifetime.
    fn is_stale(&self) -> bool {
        self.now_ms() >= self.inner.refresh_due_ms.load(Ordering::Acquire)
    }

    /// How long until the current set goes stale (zero if it is).
    fn time_to_stale(&self) -> Duration {
        let due = self.inner.refresh_due_ms.load(Ordering::Acquire);
        Duration::from_millis(due.saturating_sub(self.now_ms()))
    }

    /// Called on every request, cheap (one atomic load and a clock read):
    /// when the set is stale, starts one background refetch and returns at
    /// once; the request goes on with the current keys. The periodic task
    /// normally refetches before a request notices; this covers an
    /// application that never started it.
    pub(crate) fn revalidate_if_stale(&self) {
        if self.inner.source.is_none() || !self.is_stale() {
            return;
        }
        if self.inner.revalidating.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.inner.revalidating.store(false, Ordering::Release);
            return;
        };
        let cache = self.clone();
        runtime.spawn(async move {
            cache.refresh_if_stale().await;
            cache.inner.revalidating.store(false, Ordering::Release);
        });
    }

    /// Single-flight refetch of a stale set: whoever queued behind a fetch
    /// finds the set fresh and does nothing.
    async fn refresh_if_stale(&self) {
        let Some(source) = self.inner.source.as_ref() else {
            return;
        };
        let mut last = self.inner.fetch_gate.lock().await;
        if !self.is_stale() {
            return;
        }
        *last = Some(Instant::now());
        if let Err(error) = self.fetch_and_install(source).await {
            tracing::warn!(%error, "JWKS refresh failed; keeping the old keys");
        }
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
        // Freshness counts from the request, not the answer (RFC 9111 §4.2.3
        // `request_time`): the conservative end.
        let requested_at = self.now_ms();
        let result = fetch(source)
            .await
            .and_then(|(body, max_age)| Ok((parse_jwks(&body)?, max_age)));
        self.inner.fetches.fetch_add(1, Ordering::AcqRel);
        let (keys, max_age) = match result {
            Ok(fetched) => fetched,
            Err(error) => {
                // Retry after the floor, but never make fresh keys stale
                // earlier than they were.
                let retry_at = self
                    .now_ms()
                    .saturating_add(millis(self.inner.freshness.retry()));
                self.inner
                    .refresh_due_ms
                    .fetch_max(retry_at, Ordering::AcqRel);
                return Err(error);
            }
        };
        let count = keys.len();
        let lifetime = self.inner.freshness.lifetime(max_age);
        self.install(keys);
        self.inner.refresh_due_ms.store(
            requested_at.saturating_add(millis(lifetime)),
            Ordering::Release,
        );
        tracing::debug!(
            keys = count,
            fresh_for_ms = millis(lifetime),
            "JWKS fetched"
        );
        Ok(count)
    }

    /// Swaps in a new key set, bumping the generation if any old key is gone
    /// or changed.
    fn install(&self, mut keys: HashMap<Arc<str>, KeyEntry>) {
        {
            let blocked = self
                .inner
                .blocked
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            keys.retain(|kid, _| !blocked.iter().any(|b| b.as_str() == &**kid));
        }
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

    /// Drops `kids` from the held keys at once, without waiting for the next
    /// fetch: the revocation feed's `member` entry for a member removed for
    /// cause (issue 13: "auth-layer's cache honours a removal without
    /// waiting for its refresh interval"). The generation moves, so tokens
    /// those keys signed leave the verified-token cache too, and later
    /// fetches never install them again (a lagging node may still list
    /// them). Returns how many keys were dropped.
    pub(crate) fn remove_kids(&self, kids: &[String]) -> usize {
        {
            let mut blocked = self
                .inner
                .blocked
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            for kid in kids {
                if !blocked.contains(kid) {
                    blocked.push(kid.clone());
                }
            }
        }
        let mut current = self
            .inner
            .keys
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let gone = kids
            .iter()
            .filter(|kid| current.keys.contains_key(kid.as_str()))
            .count();
        if gone == 0 {
            return 0;
        }
        let keys = current
            .keys
            .iter()
            .filter(|(kid, _)| !kids.iter().any(|k| k.as_str() == &***kid))
            .map(|(kid, entry)| {
                (
                    kid.clone(),
                    KeyEntry {
                        kid: entry.kid.clone(),
                        verifying: entry.verifying,
                        raw: entry.raw,
                    },
                )
            })
            .collect();
        let generation = current.generation + 1;
        *current = Arc::new(KeySet { generation, keys });
        self.inner.generation.store(generation, Ordering::Release);
        gone
    }
}

/// Whole milliseconds of `d`, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The freshness lifetime an answer asks for: `max-age` minus its `Age`
/// (RFC 9111 §4.2.1, §4.2.3); zero for `no-store`, `no-cache`, an unreadable
/// `max-age` or conflicting ones (§4.2.1 allows treating those as stale);
/// `None` when no `max-age` is given. `s-maxage` is for shared caches only
/// (§5.2.2.10) and ignored: this cache is private.
fn max_age(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let mut found: Option<u64> = None;
    let mut stale = false;
    for value in headers.get_all(reqwest::header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else {
            stale = true;
            continue;
        };
        for directive in value.split(',') {
            let (name, arg) = match directive.split_once('=') {
                Some((name, arg)) => (name.trim(), Some(arg.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
                stale = true;
            } else if name.eq_ignore_ascii_case("max-age") {
                match arg.and_then(delta_seconds) {
                    Some(secs) if found.is_none_or(|f| f == secs) => found = Some(secs),
                    _ => stale = true,
                }
            }
        }
    }
    if stale {
        return Some(Duration::ZERO);
    }
    let age = headers
        .get(reqwest::header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| delta_seconds(v.trim()))
        .unwrap_or(0);
    found.map(|max_age| Duration::from_secs(max_age.saturating_sub(age)))
}

/// RFC 9111 §1.2.2 `delta-seconds`: one or more digits, nothing else.
fn delta_seconds(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().unwrap_or(DELTA_SECONDS_OVERFLOW))
}

/// GET the JWKS, reading at most [`MAX_JWKS_BYTES`]; with the answer's
/// [`max_age`].
async fn fetch(source: &Source) -> Result<(Vec<u8>, Option<Duration>), JwksError> {
    let mut response = source
        .client
        .get(&source.url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(JwksError::Fetch)?;
    let max_age = max_age(response.headers());
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
    Ok((body, max_age))
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
fn parse_jwks(body: &[u8]) -> Result<HashMap<Arc<str>, KeyEntry>, JwksError> {
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
        if keys.contains_key(kid.as_ref()) {
            // Ambiguous: keep the first, as most JWKS consumers do.
            tracing::warn!(%kid, "duplicate kid in the JWKS; keeping the first key");
            continue;
        }
        keys.insert(kid, entry);
    }
    Ok(keys)
}

/// An Ed25519 signing key with a `kid`, or `None`.
fn usable_key(jwk: RawJwk) -> Option<(Arc<str>, KeyEntry)> {
    if jwk.kty != "OKP"
        || jwk.crv.as_deref() != Some("Ed25519")
        || jwk.alg.as_deref().is_some_and(|a| a != "EdDSA")
        || jwk.use_.as_deref().is_some_and(|u| u != "sig")
    {
        return None;
    }
    let kid: Arc<str> = Arc::from(jwk.kid?);
    // RFC 7518 §2 says base64url without padding; accept padding anyway.
    let x = jwk.x?;
    let bytes = URL_SAFE_NO_PAD.decode(x.trim_end_matches('=')).ok()?;
    // Anything but 32 bytes is not an Ed25519 public key (RFC 8032 §5.1.5).
    let raw: [u8; 32] = bytes.try_into().ok()?;
    let verifying = VerifyingKey::from_bytes(&raw).ok();
    Some((
        kid.clone(),
        KeyEntry {
            kid,
            verifying,
            raw,
        },
    ))
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
        let mut kids: Vec<_> = keys.keys().map(|k| k.to_string()).collect();
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

    fn headers(pairs: &[(&str, &str)]) -> reqwest::header::HeaderMap {
        let mut map = reqwest::header::HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                reqwest::header::HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn reads_max_age_like_rfc_9111() {
        let secs = |s| Some(Duration::from_secs(s));
        let cc = |v: &str| max_age(&headers(&[("cache-control", v)]));
        assert_eq!(max_age(&headers(&[])), None);
        assert_eq!(cc("public"), None);
        assert_eq!(cc("public, max-age=30"), secs(30));
        assert_eq!(cc("Max-Age = 30"), secs(30));
        assert_eq!(cc("max-age=\"30\""), secs(30));
        assert_eq!(cc("s-maxage=600"), None, "shared caches only");
        assert_eq!(cc("max-age=30, s-maxage=600"), secs(30));
        assert_eq!(cc("max-age=99999999999999999999999"), secs(1 << 31));
        // Stale: no-store, no-cache, unreadable or conflicting max-age.
        assert_eq!(cc("no-store"), secs(0));
        assert_eq!(cc("no-cache, max-age=30"), secs(0));
        assert_eq!(cc("max-age=-1"), secs(0));
        assert_eq!(cc("max-age=3.5"), secs(0));
        assert_eq!(cc("max-age"), secs(0));
        assert_eq!(
            max_age(&headers(&[
                ("cache-control", "max-age=30"),
                ("cache-control", "max-age=60")
            ])),
            secs(0)
        );
        assert_eq!(
            max_age(&headers(&[
                ("cache-control", "max-age=30"),
                ("cache-control", "public")
            ])),
            secs(30)
        );
        // Age: what a cache in between already used up.
        assert_eq!(
            max_age(&headers(&[("cache-control", "max-age=30"), ("age", "25")])),
            secs(5)
        );
        assert_eq!(
            max_age(&headers(&[("cache-control", "max-age=30"), ("age", "99")])),
            secs(0)
        );
        assert_eq!(
            max_age(&headers(&[("cache-control", "max-age=30"), ("age", "x")])),
            secs(30)
        );
    }

    #[test]
    fn freshness_is_bounded_both_ways() {
        let f = Freshness::from_config(&JwksConfig::new("http://x"));
        let secs = Duration::from_secs;
        assert_eq!(
            f.lifetime(None),
            secs(60),
            "no max-age: the refresh interval"
        );
        assert_eq!(f.lifetime(Some(secs(30))), secs(30));
        assert_eq!(f.lifetime(Some(secs(0))), secs(5), "the floor");
        assert_eq!(f.lifetime(Some(secs(86_400))), secs(60), "the ceiling");
        assert_eq!(f.retry(), secs(5));

        let mut config = JwksConfig::new("http://x");
        config.refresh_interval = secs(300);
        config.min_cache_age = secs(90);
        let f = Freshness::from_config(&config);
        assert_eq!(
            f.lifetime(None),
            secs(60),
            "the ceiling caps the interval too"
        );
        assert_eq!(
            f.lifetime(Some(secs(1))),
            secs(60),
            "the ceiling wins over the floor"
        );

        config.refresh_interval = Duration::ZERO;
        config.max_cache_age = Duration::ZERO;
        let f = Freshness::from_config(&config);
        assert_eq!(f.lifetime(None), MIN_FRESHNESS, "never a busy loop");
        assert_eq!(f.retry(), MIN_FRESHNESS);
    }
}
