//! Following a node's revocation feed (issue 13, step 10: "auth-layer
//! follows it, and refuses revoked tokens from the moment it has the
//! entry").
//!
//! The feed is `GET /v1/revocations?since=CURSOR&wait=SECONDS` on any
//! member node (format: `notes/scale-spec.md`, "Revocation on the ledger").
//! Each answer is a compact JWS (`typ: didmesh-revocations+jwt`, `alg:
//! EdDSA`) signed by a member key of the JWKS the verifier already holds,
//! whose payload is `{"iss", "feed", "since", "cursor", "iat", "entries"}`.
//! The follower long-polls it, checks the signature (an unknown `kid`
//! refetches the JWKS, as for tokens), and swaps in a new [`RevocationSet`]
//! that every token check reads, cached tokens included.
//!
//! The rules (scale-spec.md) — a token is refused when:
//! * `did` entry: `sub == did` and `rev < before` (`iat` for a token
//!   without `rev`: [`did_core::Claims::revoked_by`]);
//! * `jti` entry: the token's `jti` is the entry's;
//! * `key` entry: `sub == did`, the token's `key` claim is the entry's
//!   `key`, and `iat < before`;
//! * `member` entry: the token's header `kid` is in `kids` and either
//!   `before == u64::MAX` (a member removed for cause: at once) or `now >=
//!   before` (keys rotated away: `before` is the end of the overlap window,
//!   tokens signed with the old key verify until then). A removal also drops
//!   the keys from the held JWKS at once.
//!
//! Robustness: a page whose signature, `typ`, `iss` or `since` does not
//! check out is ignored (the cursor stays, the next poll retries after a
//! back-off); another `feed` id means the node's data folder changed, so the
//! follower restarts from cursor 0 (entries already held stay: they are
//! signed facts, and page 0 of the new feed replays the live ones); a lost
//! connection is retried with a back-off capped at [`MAX_BACKOFF`]. Entries
//! are dropped once no token they could refuse is still alive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};

use crate::jwks::JwksCache;
use crate::now_secs;
use crate::Claims;

/// The JWS `typ` of a feed page. A token check refuses any `typ` but `JWT`,
/// so a page can never pass as a token, and the follower refuses anything
/// else, so a token can never pass as a page.
pub const FEED_TYP: &str = "didmesh-revocations+jwt";

/// Largest feed page read. A page carries at most what the node holds
/// since the cursor; this bounds a hostile or broken endpoint.
const MAX_PAGE_BYTES: usize = 8 * 1024 * 1024;

/// Longest wait between two attempts after failures.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// First wait after a failure.
const MIN_BACKOFF: Duration = Duration::from_millis(200);

/// Longest `wait` the feed honours (scale-spec.md: `wait ≤ 30`).
const MAX_WAIT_SECS: u64 = 30;

/// What the verifier knows of revoked tokens: the entries of the feed,
/// indexed for the checks a token needs.
#[derive(Debug, Default, Clone)]
pub(crate) struct RevocationSet {
    /// `jti` → the token's `exp` (the entry is dead after it).
    jti: HashMap<String, u64>,
    /// DID → sessions issued before this are revoked (the largest seen).
    did: HashMap<String, u64>,
    /// DID → (key, before) pairs.
    key: HashMap<String, Vec<(String, u64)>>,
    /// Member `kid` → refused from this time on (`u64::MAX`: at once).
    member: HashMap<String, u64>,
}

impl RevocationSet {
    fn is_empty(&self) -> bool {
        self.jti.is_empty() && self.did.is_empty() && self.key.is_empty() && self.member.is_empty()
    }

    fn len(&self) -> usize {
        self.jti.len()
            + self.did.len()
            + self.key.values().map(Vec::len).sum::<usize>()
            + self.member.len()
    }

    /// Whether the token (its claims and header `kid`) is revoked at `now`.
    pub(crate) fn revokes(&self, claims: &Claims, kid: &str, now: u64) -> bool {
        if let Some(&before) = self.member.get(kid) {
            if before == u64::MAX || now >= before {
                return true;
            }
        }
        if self.jti.contains_key(&claims.jti) {
            return true;
        }
        if self
            .did
            .get(&claims.sub)
            .is_some_and(|&before| claims.revoked_by(before))
        {
            return true;
        }
        if let (Some(key), Some(pairs)) = (claims.key.as_deref(), self.key.get(&claims.sub)) {
            if pairs
                .iter()
                .any(|(k, before)| k == key && claims.iat < *before)
            {
                return true;
            }
        }
        false
    }

    /// Adds the entries of a page.
    fn apply(&mut self, entries: &[Entry]) {
        for entry in entries {
            match entry {
                Entry::Did { did, before, .. } => {
                    let slot = self.did.entry(did.clone()).or_insert(0);
                    *slot = (*slot).max(*before);
                }
                Entry::Jti { jti, exp, .. } => {
                    let slot = self.jti.entry(jti.clone()).or_insert(0);
                    *slot = (*slot).max(*exp);
                }
                Entry::Key {
                    did, key, before, ..
                } => {
                    let pairs = self.key.entry(did.clone()).or_default();
                    match pairs.iter_mut().find(|(k, _)| k == key) {
                        Some((_, b)) => *b = (*b).max(*before),
                        None => pairs.push((key.clone(), *before)),
                    }
                }
                Entry::Member { kids, before, .. } => {
                    for kid in kids {
                        // The earliest refusal wins, and a removal
                        // (`u64::MAX`, at once) is never postponed.
                        match self.member.get_mut(kid.as_str()) {
                            None => {
                                self.member.insert(kid.clone(), *before);
                            }
                            Some(slot) if *slot == u64::MAX || *before == u64::MAX => {
                                *slot = u64::MAX;
                            }
                            Some(slot) => *slot = (*slot).min(*before),
                        }
                    }
                }
                Entry::Unknown => {}
            }
        }
    }

    /// Drops entries no live token can match any more: a `jti` past its
    /// `exp`, a `did`/`key` cut-off older than the longest token lifetime
    /// (every token issued before it has expired). `member` entries stay:
    /// a network has a handful of kids.
    fn prune(&mut self, now: u64, horizon: u64) {
        self.jti.retain(|_, exp| exp.saturating_add(horizon) > now);
        self.did
            .retain(|_, before| before.saturating_add(horizon) > now);
        self.key.retain(|_, pairs| {
            pairs.retain(|(_, before)| before.saturating_add(horizon) > now);
            !pairs.is_empty()
        });
    }
}

/// One feed entry (scale-spec.md). Unknown kinds are skipped, so a newer
/// node can add kinds without breaking older verifiers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Entry {
    /// Every session of `did` issued before `before`.
    Did {
        /// Feed sequence number.
        seq: u64,
        /// The subject.
        did: String,
        /// Unix seconds.
        before: u64,
    },
    /// One token.
    Jti {
        /// Feed sequence number.
        seq: u64,
        /// The subject.
        did: String,
        /// The token id.
        jti: String,
        /// The token's expiry: the entry is needed until then.
        exp: u64,
    },
    /// The sessions of `did` that `key` proved, issued before `before`.
    Key {
        /// Feed sequence number.
        seq: u64,
        /// The subject.
        did: String,
        /// The DID key (multibase) or passkey id.
        key: String,
        /// Unix seconds.
        before: u64,
    },
    /// Tokens signed by member keys `kids`: from `before` on
    /// (`u64::MAX`: at once).
    Member {
        /// Feed sequence number.
        seq: u64,
        /// JWKS key ids.
        kids: Vec<String>,
        /// Unix seconds, or `u64::MAX`.
        before: u64,
    },
    /// A kind this verifier does not know.
    #[serde(other)]
    Unknown,
}

/// A feed page's payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page {
    /// The network's issuer string.
    pub iss: String,
    /// The feed id (random per node data folder).
    pub feed: String,
    /// The cursor the page starts after.
    pub since: u64,
    /// The cursor to ask from next.
    pub cursor: u64,
    /// When the node signed the page.
    pub iat: u64,
    /// The entries after `since`, up to `cursor`.
    pub entries: Vec<Entry>,
}

/// Where the follower stands; see [`crate::TokenVerifier::revocation_status`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RevocationStatus {
    /// A feed URL is configured and its task runs.
    pub following: bool,
    /// The feed id of the last page applied.
    pub feed: Option<String>,
    /// The cursor the next poll asks from.
    pub cursor: u64,
    /// Entries held.
    pub entries: usize,
    /// Pages applied since start.
    pub pages: u64,
    /// Pages refused (bad signature, wrong `typ`/`iss`/`since`, unreadable).
    pub bad_pages: u64,
    /// Unix seconds of the last good answer, 0 before the first. While the
    /// node answers, the verifier knows every revocation the node knew then.
    pub last_ok_unix: u64,
}

/// The shared revocation state of a verifier.
#[derive(Default)]
pub(crate) struct Revocations {
    /// The current set, swapped whole per page (readers never wait on the
    /// follower).
    set: RwLock<Arc<RevocationSet>>,
    /// Whether `set` holds anything: the hot path skips the lock when not.
    active: AtomicBool,
    /// Moves whenever `set` changes.
    version: AtomicU64,
    status: Mutex<RevocationStatus>,
}

impl Revocations {
    /// Whether any entry is held (one atomic load).
    pub(crate) fn active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// The current set.
    pub(crate) fn snapshot(&self) -> Arc<RevocationSet> {
        self.set
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn status(&self) -> RevocationStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn update_status(&self, f: impl FnOnce(&mut RevocationStatus)) {
        f(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Applies a page's entries and prunes dead ones.
    fn install(&self, entries: &[Entry], horizon: u64) -> usize {
        let mut guard = self.set.write().unwrap_or_else(PoisonError::into_inner);
        let mut next = RevocationSet::clone(&guard);
        next.apply(entries);
        next.prune(now_secs(), horizon);
        let len = next.len();
        self.active.store(!next.is_empty(), Ordering::Release);
        *guard = Arc::new(next);
        self.version.fetch_add(1, Ordering::AcqRel);
        len
    }
}

/// Settings of a follower.
#[derive(Debug, Clone)]
pub(crate) struct FollowConfig {
    /// The feed URL, e.g. `http://node:7000/v1/revocations`.
    pub(crate) url: String,
    /// The expected `iss` of pages.
    pub(crate) issuer: String,
    /// How long the node may hold a poll (`wait`, at most 30 s).
    pub(crate) wait: Duration,
    /// Entries are kept until this long after their cut-off or `exp`: the
    /// longest token lifetime plus the leeway.
    pub(crate) horizon: u64,
}

/// Why a page was refused.
#[derive(Debug, thiserror::Error)]
enum PageError {
    #[error("not a compact JWS")]
    Malformed,
    #[error("header: alg must be EdDSA and typ {FEED_TYP}, with a kid")]
    Header,
    #[error("signed by a key not in the JWKS")]
    UnknownKid,
    #[error("bad signature")]
    BadSignature,
    #[error("payload unreadable: {0}")]
    Payload(serde_json::Error),
    #[error("issued by {0:?}, not this network's issuer")]
    Issuer(String),
}

#[derive(Deserialize)]
struct PageHeader {
    alg: String,
    typ: Option<String>,
    kid: Option<String>,
}

/// Checks a page's JWS against the JWKS (refetching once for an unknown
/// `kid`, rate-limited like tokens) and returns its payload.
async fn verify_page(jwks: &JwksCache, jws: &str, issuer: &str) -> Result<Page, PageError> {
    let mut parts = jws.trim().split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(PageError::Malformed);
    };
    let header: PageHeader = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(PageError::Malformed)?;
    if header.alg != "EdDSA" || header.typ.as_deref() != Some(FEED_TYP) {
        return Err(PageError::Header);
    }
    let kid = header.kid.ok_or(PageError::Header)?;
    let keys = jwks.key_set_for(&kid).await;
    let key = keys
        .get(&kid)
        .and_then(|k| k.verifying)
        .ok_or(PageError::UnknownKid)?;
    let signature: [u8; 64] = URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(PageError::Malformed)?;
    // RFC 7515 §5.2: the signing input is `header '.' payload` as sent.
    let input = &jws.trim()[..h.len() + 1 + p.len()];
    key.verify_strict(input.as_bytes(), &Signature::from_bytes(&signature))
        .map_err(|_| PageError::BadSignature)?;
    let payload = URL_SAFE_NO_PAD
        .decode(p)
        .map_err(|_| PageError::Malformed)?;
    let page: Page = serde_json::from_slice(&payload).map_err(PageError::Payload)?;
    if page.iss != issuer {
        return Err(PageError::Issuer(page.iss));
    }
    Ok(page)
}

/// One long-poll: the body of a 2xx answer. An error status is an error,
/// retried after a back-off like a lost connection.
async fn poll(
    client: &reqwest::Client,
    url: &str,
    since: u64,
    wait: Duration,
) -> Result<String, String> {
    let mut response = client
        .get(url)
        .query(&[
            ("since", since),
            ("wait", wait.as_secs().min(MAX_WAIT_SECS)),
        ])
        .header(reqwest::header::ACCEPT, "application/jwt")
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_PAGE_BYTES {
            return Err(format!("page larger than {MAX_PAGE_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| "page is not UTF-8".to_owned())
}

/// The follower task: runs until the verifier is dropped.
pub(crate) async fn follow(revocations: Weak<Revocations>, jwks: JwksCache, config: FollowConfig) {
    let client = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        // The node holds a poll up to `wait`; allow for that and a slow body.
        .timeout(config.wait + Duration::from_secs(10))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build the revocation feed client; not following");
            return;
        }
    };
    if let Some(r) = revocations.upgrade() {
        r.update_status(|s| s.following = true);
    }
    tracing::info!(url = %config.url, "following the revocation feed");
    let mut feed: Option<String> = None;
    let mut cursor = 0u64;
    let mut backoff = MIN_BACKOFF;
    let mut failing = false;
    loop {
        let result = poll(&client, &config.url, cursor, config.wait).await;
        let Some(state) = revocations.upgrade() else {
            return;
        };
        let outcome = match result {
            Err(error) => Err(format!("fetch: {error}")),
            Ok(body) => match verify_page(&jwks, &body, &config.issuer).await {
                Err(error) => {
                    state.update_status(|s| s.bad_pages += 1);
                    Err(format!("page refused: {error}"))
                }
                Ok(page) => Ok(page),
            },
        };
        let page = match outcome {
            Ok(page) => page,
            Err(error) => {
                if !failing {
                    tracing::warn!(url = %config.url, %error, "revocation feed: retrying");
                } else {
                    tracing::debug!(url = %config.url, %error, "revocation feed: retrying");
                }
                failing = true;
                drop(state);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if failing {
            tracing::info!(url = %config.url, "revocation feed reachable again");
        }
        failing = false;
        backoff = MIN_BACKOFF;
        if feed.as_deref() != Some(page.feed.as_str()) {
            if feed.is_some() || cursor != 0 {
                tracing::info!(
                    old = ?feed,
                    new = %page.feed,
                    "revocation feed id changed (another node or data folder): restarting from 0"
                );
            }
            feed = Some(page.feed.clone());
            if page.since != 0 {
                cursor = 0;
                state.update_status(|s| {
                    s.feed = Some(page.feed.clone());
                    s.cursor = 0;
                });
                continue;
            }
        } else if page.since != cursor || page.cursor < page.since {
            state.update_status(|s| s.bad_pages += 1);
            tracing::warn!(
                asked = cursor,
                since = page.since,
                cursor = page.cursor,
                "revocation feed page does not continue the cursor; ignored"
            );
            drop(state);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        }
        // Removal for cause: drop the keys now, not at the next JWKS fetch.
        for entry in &page.entries {
            if let Entry::Member { kids, before, .. } = entry {
                if *before == u64::MAX || *before <= now_secs() {
                    let dropped = jwks.remove_kids(kids);
                    if dropped > 0 {
                        tracing::info!(
                            ?kids,
                            "member keys revoked by the feed; dropped from the JWKS"
                        );
                    }
                }
            }
        }
        let held = if page.entries.is_empty() {
            state.snapshot().len()
        } else {
            state.install(&page.entries, config.horizon)
        };
        cursor = page.cursor;
        let now = now_secs();
        if !page.entries.is_empty() {
            tracing::info!(
                feed = %page.feed,
                cursor,
                new = page.entries.len(),
                held,
                lag_s = now.saturating_sub(page.iat),
                "revocation entries applied"
            );
        }
        state.update_status(|s| {
            s.feed = Some(page.feed.clone());
            s.cursor = cursor;
            s.entries = held;
            s.pages += 1;
            s.last_ok_unix = now;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, jti: &str, iat: u64) -> Claims {
        let mut c = Claims::for_login("i", sub, "a", iat, 600, [0; 16]);
        c.jti = jti.to_owned();
        c
    }

    #[test]
    fn rules() {
        let mut set = RevocationSet::default();
        set.apply(&[
            Entry::Did {
                seq: 1,
                did: "did:x:a".into(),
                before: 100,
            },
            Entry::Jti {
                seq: 2,
                did: "did:x:b".into(),
                jti: "j1".into(),
                exp: 500,
            },
            Entry::Key {
                seq: 3,
                did: "did:x:c".into(),
                key: "zKey".into(),
                before: 200,
            },
            Entry::Member {
                seq: 4,
                kids: vec!["gone".into()],
                before: u64::MAX,
            },
            Entry::Member {
                seq: 5,
                kids: vec!["old".into()],
                before: 300,
            },
        ]);
        let ok = |c: &Claims, kid: &str, key: Option<&str>, now: u64| {
            let mut c = c.clone();
            c.key = key.map(str::to_owned);
            !set.revokes(&c, kid, now)
        };
        assert!(!ok(&claims("did:x:a", "j", 99), "k", None, 150));
        assert!(
            ok(&claims("did:x:a", "j", 100), "k", None, 150),
            "issued at the cut-off"
        );
        assert!(
            !ok(&claims("did:x:z", "j1", 400), "k", None, 150),
            "jti alone"
        );
        assert!(!ok(&claims("did:x:c", "j", 199), "k", Some("zKey"), 250));
        assert!(ok(&claims("did:x:c", "j", 199), "k", Some("zOther"), 250));
        assert!(ok(&claims("did:x:c", "j", 199), "k", None, 250));
        assert!(ok(&claims("did:x:c", "j", 200), "k", Some("zKey"), 250));
        assert!(
            !ok(&claims("did:x:q", "j", 1), "gone", None, 2),
            "removal: at once"
        );
        assert!(
            ok(&claims("did:x:q", "j", 1), "old", None, 299),
            "rotation: until the window ends"
        );
        assert!(!ok(&claims("did:x:q", "j", 1), "old", None, 300));
        // `rev`, the issuing node's watermark, decides over `iat`: a node
        // whose clock ran ahead issued iat 150 before it saw the sign-out
        // (rev 0): revoked; a login after it (rev 100) is good whatever iat.
        let mut ahead = claims("did:x:a", "j", 150);
        ahead.rev = Some(0);
        assert!(!ok(&ahead, "k", None, 150), "rev below before: revoked");
        let mut after = claims("did:x:a", "j", 90);
        after.rev = Some(100);
        assert!(ok(&after, "k", None, 150), "issued knowing the sign-out");
    }

    #[test]
    fn a_removal_after_a_rotation_is_at_once_and_cut_offs_only_grow() {
        let mut set = RevocationSet::default();
        let member = |before| Entry::Member {
            seq: 0,
            kids: vec!["k".into()],
            before,
        };
        set.apply(&[member(300)]);
        set.apply(&[member(u64::MAX)]);
        assert_eq!(set.member.get("k"), Some(&u64::MAX));
        set.apply(&[member(400)]);
        assert_eq!(set.member.get("k"), Some(&u64::MAX), "a removal stays");
        let mut set = RevocationSet::default();
        set.apply(&[member(300), member(250)]);
        assert_eq!(set.member.get("k"), Some(&250));
        let did = |before| Entry::Did {
            seq: 0,
            did: "d".into(),
            before,
        };
        set.apply(&[did(50), did(40)]);
        assert_eq!(set.did.get("d"), Some(&50));
    }

    #[test]
    fn prunes_what_no_live_token_can_match() {
        let mut set = RevocationSet::default();
        set.apply(&[
            Entry::Jti {
                seq: 1,
                did: "d".into(),
                jti: "j".into(),
                exp: 100,
            },
            Entry::Did {
                seq: 2,
                did: "d".into(),
                before: 100,
            },
        ]);
        set.prune(150, 60);
        assert_eq!(set.len(), 2);
        set.prune(160, 60);
        assert!(set.is_empty());
    }

    #[test]
    fn unknown_kinds_are_skipped() {
        let page: Page = serde_json::from_str(
            r#"{"iss":"i","feed":"f","since":0,"cursor":2,"iat":1,
                "entries":[{"seq":1,"kind":"future","x":1},{"seq":2,"kind":"jti","did":"d","jti":"j","exp":9}]}"#,
        )
        .unwrap();
        assert_eq!(page.entries.len(), 2);
        assert_eq!(page.entries[0], Entry::Unknown);
    }
}
