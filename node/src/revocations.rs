//! The revocation feed (issue 13, "sign-out everywhere"; PROTOCOL.md,
//! "Revocation"): what verifiers follow so that a revoked token stops
//! working without a call to a node per request.
//!
//! Revocations ride the ledger: a DID owner's signed update raising
//! `revocations.before` or listing a `jti`, an update that removes a key or
//! passkey, a deactivation, a member quorum's `member-revoke`, a membership
//! removal or key rotation. Every node derives the same facts from the ops
//! it commits (the diff of an op's parent state and its new state) and
//! numbers them in a sled tree of its own (`revocations`): the sequence is
//! node-local, so a cursor is only good for one feed id (random per data
//! folder). Derivation is idempotent: an op whose entries are in the tree
//! is marked by its CID. The tree also keeps how many ops of the ledger,
//! in commit order, have been derived (`Mupto`); a start, or a follower
//! that fell behind the writer, derives the ops after that mark (an empty
//! tree fills up from the first op). Before, a start and every lag of the
//! follower re-derived the whole ledger, decoding every op from disk: at
//! a sustained 1,000 ops/s that was a fifth of the node's CPU.
//!
//! ```text
//! writer ── committed op ──► Feed::apply: entries of the op ─► sled (E seq → entry, S cid)
//!                                          └─► in-memory index (node's own checks), Notify
//! GET /v1/revocations?since=n&wait=s ──► entries after n (≤ 1000), or wait ≤ 30 s for one
//!                                      ──► compact JWS signed by this member's Ed25519 key
//! ```
//!
//! The node applies the same facts where it checks or issues tokens
//! ([`Feed::refuses`]): `/oidc/userinfo`, the refresh grant, and every mint.

use crate::NodeState;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use did_core::op::{DidState, OpKind, Operation};
use did_core::{Cid, Ledger, Validated};
use ed25519_dalek::Signer as _;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// The sled tree of the feed.
pub const TREE: &str = "revocations";
/// Most entries one page carries.
pub const MAX_PAGE: usize = 1000;
/// Longest long-poll, seconds.
pub const MAX_WAIT: u64 = 30;
/// JWS `typ` of a feed page.
pub const JWS_TYP: &str = "didmesh-revocations+jwt";
/// `before` of a member entry that refuses at once (a removal).
pub const AT_ONCE: u64 = u64::MAX;

const ENTRY_PREFIX: u8 = b'E';
const SEEN_PREFIX: u8 = b'S';
const FEED_ID_KEY: &[u8] = b"Mfeed";
/// Ops of the ledger, in commit order, whose entries are derived (u64 BE).
const UPTO_KEY: &[u8] = b"Mupto";

/// One revocation fact (PROTOCOL.md, "Revocation").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Entry {
    /// Every token of `did` with `iat < before`.
    Did { did: String, before: u64 },
    /// The token with this `jti` (a DID's own list, so `did` names it).
    Jti { did: String, jti: String, exp: u64 },
    /// Tokens of `did` whose `key` claim is `key`, with `iat < before`.
    Key {
        did: String,
        key: String,
        before: u64,
    },
    /// Tokens signed with one of `kids` once `before` has passed (a
    /// rotation's overlap end; [`AT_ONCE`] for a removal).
    Member { kids: Vec<String>, before: u64 },
}

/// Clock skew verifiers tolerate on `exp` (what [`Entry::matters`] adds
/// to a token's lifetime; the verifiers use 30 s).
const PRUNE_LEEWAY: u64 = 60;

impl Entry {
    /// Whether the entry can still refuse a live token at `now`, when no
    /// token lives longer than `max_ttl` seconds: a `did` or `key` entry
    /// refuses tokens issued before `before`, all expired by `before +
    /// max_ttl`; a `jti` entry's token expires at `exp`; a rotation's
    /// `member` entry names kids that signed nothing after `before`. A
    /// removal (`before` = [`AT_ONCE`]) always matters (a network has a
    /// handful). Pages from seq 0 leave out the rest (issue 13: "entries
    /// older than any token lifetime may be dropped from page 0 replays").
    pub fn matters(&self, now: u64, max_ttl: u64) -> bool {
        let horizon = max_ttl.saturating_add(PRUNE_LEEWAY);
        match self {
            Entry::Did { before, .. } | Entry::Key { before, .. } => {
                before.saturating_add(horizon) > now
            }
            Entry::Jti { exp, .. } => exp.saturating_add(PRUNE_LEEWAY) > now,
            Entry::Member { before, .. } => {
                *before == AT_ONCE || before.saturating_add(horizon) > now
            }
        }
    }
}

/// An entry with its place in this feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Numbered {
    pub seq: u64,
    #[serde(flatten)]
    pub entry: Entry,
}

/// The payload of a feed page.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page {
    pub iss: String,
    pub feed: String,
    pub since: u64,
    pub cursor: u64,
    pub iat: u64,
    pub entries: Vec<Numbered>,
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("revocation store: {0}")]
    Store(String),
}

impl From<sled::Error> for FeedError {
    fn from(e: sled::Error) -> Self {
        FeedError::Store(e.to_string())
    }
}

/// What the node's own checks look up (every entry, folded).
#[derive(Default)]
struct Index {
    did_before: HashMap<String, u64>,
    jti: HashSet<String>,
    keys: HashMap<(String, String), u64>,
    kids: HashMap<String, u64>,
}

impl Index {
    fn add(&mut self, e: &Entry) {
        match e {
            Entry::Did { did, before } => {
                let b = self.did_before.entry(did.clone()).or_insert(0);
                *b = (*b).max(*before);
            }
            Entry::Jti { jti, .. } => {
                self.jti.insert(jti.clone());
            }
            Entry::Key { did, key, before } => {
                let b = self.keys.entry((did.clone(), key.clone())).or_insert(0);
                *b = (*b).max(*before);
            }
            Entry::Member { kids, before } => {
                for k in kids {
                    let b = self.kids.entry(k.clone()).or_insert(*before);
                    *b = (*b).min(*before);
                }
            }
        }
    }
}

/// What a token says about itself, for [`Feed::refuses`].
#[derive(Debug, Clone, Copy)]
pub struct TokenFacts<'a> {
    pub sub: &'a str,
    pub iat: u64,
    /// The token's revocation watermark (`rev`; `iat` for a token without
    /// one): what a `did` entry's `before` is compared with.
    pub rev: u64,
    pub jti: &'a str,
    pub key: Option<&'a str>,
    pub kid: Option<&'a str>,
}

/// The feed of this node (module doc).
pub struct Feed {
    id: String,
    issuer: String,
    tree: sled::Tree,
    /// Next seq; held while an op's entries are written, so seqs are
    /// dense and in order.
    next: Mutex<u64>,
    index: RwLock<Index>,
    notify: tokio::sync::Notify,
    signer: FeedSigner,
}

/// What signs feed pages: the node's live key set, so a committed
/// `member-rotate` moves the page `kid` to the new key at once (a page
/// signed with a retired key would stop verifying when the overlap ends),
/// or one fixed key (tests, tools).
enum FeedSigner {
    Live(crate::token_keys::TokenKeys),
    Fixed {
        key: ed25519_dalek::SigningKey,
        kid: String,
    },
}

fn entry_key(seq: u64) -> [u8; 9] {
    let mut k = [ENTRY_PREFIX; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn seen_key(cid: &Cid) -> Vec<u8> {
    let mut k = vec![SEEN_PREFIX];
    k.extend_from_slice(&cid.0);
    k
}

/// The entries an op adds (module doc): `parent` is the DID's state at the
/// op's `prev` (None for a create, or a parent that was deactivated).
pub fn entries_of(op: &Operation, did: &str, parent: Option<&DidState>) -> Vec<Entry> {
    let mut out = vec![];
    match op.kind {
        OpKind::Create | OpKind::Update => {
            let Some(next) = op.state.as_ref() else {
                return out;
            };
            let empty = DidState::single_key(op.signer);
            let old = parent.unwrap_or(&empty);
            if next.revocations.before > old.revocations.before {
                out.push(Entry::Did {
                    did: did.to_string(),
                    before: next.revocations.before,
                });
            }
            for r in &next.revocations.jti {
                if !old.revocations.jti.iter().any(|o| o.jti == r.jti) {
                    out.push(Entry::Jti {
                        did: did.to_string(),
                        jti: r.jti.clone(),
                        exp: r.exp,
                    });
                }
            }
            if let Some(old) = parent {
                // A key that leaves the DID takes its tokens with it
                // (issue 13: "rotating or removing a key revokes the tokens
                // obtained with it"). A token names its key by multibase
                // (Ed25519) or passkey id.
                for vm in &old.verification_methods {
                    let kept = next
                        .verification_methods
                        .iter()
                        .any(|n| n.public_key_multibase == vm.public_key_multibase);
                    if !kept {
                        out.push(Entry::Key {
                            did: did.to_string(),
                            key: vm.public_key_multibase.to_string(),
                            before: key_cut(op),
                        });
                    }
                }
                for p in &old.passkeys {
                    let kept = next
                        .passkeys
                        .iter()
                        .any(|n| n.id == p.id && n.credential_id == p.credential_id);
                    if !kept {
                        out.push(Entry::Key {
                            did: did.to_string(),
                            key: p.id.clone(),
                            before: key_cut(op),
                        });
                    }
                }
            }
        }
        // A deactivated DID has no sessions left, whatever their `rev`.
        OpKind::Deactivate => out.push(Entry::Did {
            did: did.to_string(),
            before: AT_ONCE,
        }),
        OpKind::MemberRemove => {
            if let Some(m) = &op.member {
                out.push(Entry::Member {
                    kids: member_kids(m),
                    before: AT_ONCE,
                });
            }
        }
        // A member quorum revokes a compromised DID's sessions.
        OpKind::MemberRevoke => {
            if let Some(r) = &op.revoke {
                out.push(Entry::Did {
                    did: r.did.clone(),
                    before: r.before,
                });
            }
        }
        // Needs the ledger (the retired entry): [`derive`].
        OpKind::MemberRotate | OpKind::MemberAdd => {}
    }
    out
}

/// `before` of a `key` entry: the removal's `created_at` plus the ledger's
/// clock bound. A node whose clock runs ahead (within the bound) may have
/// issued a token proved by the key, stamped after `created_at`, before it
/// held the removal; once it holds it, no honest node issues such a token,
/// so the margin refuses nothing it should accept.
fn key_cut(op: &did_core::Operation) -> u64 {
    op.created_at
        .saturating_add(did_core::op::Limits::default().max_clock_skew_secs)
}

/// The entries of a committed op (`entries_of`, plus what needs the
/// ledger: a `member-rotate`'s retired kids, refused from the end of the
/// overlap window, `retired_at + key_overlap_secs`).
fn derive(l: &Ledger, op: &Operation, did: &str) -> Vec<Entry> {
    let parent = parent_state(l, op);
    let mut out = entries_of(op, did, parent.as_ref());
    if op.kind == OpKind::MemberRotate {
        if let Some(current) = &op.member {
            let overlap = l.key_overlap_secs();
            for r in l.retired_member_keys() {
                if r.node_did != current.node_did || r.retired_at != op.created_at {
                    continue;
                }
                let live = member_kids(current);
                let kids: Vec<String> = member_kids(&r.replaced(current))
                    .into_iter()
                    .filter(|k| !live.contains(k))
                    .collect();
                if !kids.is_empty() {
                    out.push(Entry::Member {
                        kids,
                        before: r.retires(overlap),
                    });
                }
            }
        }
    }
    out
}

/// Every JWKS `kid` of a member (views.rs lists the same keys): Ed25519,
/// and the RSA and P-256 ID-token keys when the entry has them.
pub fn member_kids(m: &did_core::member::Member) -> Vec<String> {
    let mut kids = vec![crate::identity::kid(&m.key)];
    kids.extend(m.rsa.as_ref().map(|k| k.thumbprint()));
    kids.extend(m.p256.as_ref().map(did_core::member::p256_thumbprint));
    kids
}

/// The parent state of `op` in `ledger` (None for a create).
fn parent_state(ledger: &Ledger, op: &Operation) -> Option<DidState> {
    let prev = op.prev?;
    ledger.get(&prev).and_then(|p| p.op.state.clone())
}

impl Feed {
    /// Opens the feed on `tree` (its id is made on first use), signing
    /// pages with one fixed key.
    pub fn open(
        tree: sled::Tree,
        issuer: &str,
        key: ed25519_dalek::SigningKey,
    ) -> Result<Feed, FeedError> {
        let kid = crate::identity::kid(&did_core::keys::public_of(&key));
        Self::open_with(tree, issuer, FeedSigner::Fixed { key, kid })
    }

    /// Opens the feed on `tree`, signing pages with the node's Ed25519
    /// key in force ([`crate::token_keys`]).
    pub fn open_live(
        tree: sled::Tree,
        issuer: &str,
        keys: crate::token_keys::TokenKeys,
    ) -> Result<Feed, FeedError> {
        Self::open_with(tree, issuer, FeedSigner::Live(keys))
    }

    fn open_with(tree: sled::Tree, issuer: &str, signer: FeedSigner) -> Result<Feed, FeedError> {
        let id = match tree.get(FEED_ID_KEY)? {
            Some(v) => String::from_utf8_lossy(&v).into_owned(),
            None => {
                use rand::RngCore as _;
                let mut raw = [0u8; 12];
                rand::rngs::OsRng.fill_bytes(&mut raw);
                let id = URL_SAFE_NO_PAD.encode(raw);
                tree.insert(FEED_ID_KEY, id.as_bytes())?;
                id
            }
        };
        let mut index = Index::default();
        let mut next = 1;
        for item in tree.scan_prefix([ENTRY_PREFIX]) {
            let (k, v) = item?;
            if let Ok(n) = serde_json::from_slice::<Numbered>(&v) {
                index.add(&n.entry);
                next = next.max(n.seq + 1);
            } else {
                tracing::warn!(key = ?k, "unreadable revocation entry skipped");
            }
        }
        Ok(Feed {
            id,
            issuer: issuer.to_string(),
            tree,
            next: Mutex::new(next),
            index: RwLock::new(index),
            notify: tokio::sync::Notify::new(),
            signer,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The seq of the latest entry (0 = none).
    pub fn cursor(&self) -> u64 {
        self.next.lock().map(|n| *n - 1).unwrap_or(0)
    }

    /// Records the entries of committed op `cid` once (idempotent).
    pub fn apply(&self, cid: &Cid, entries: Vec<Entry>) -> Result<(), FeedError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut next = self
            .next
            .lock()
            .map_err(|_| FeedError::Store("poisoned".into()))?;
        if self.tree.contains_key(seen_key(cid))? {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        let mut seq = *next;
        for e in &entries {
            let n = Numbered {
                seq,
                entry: e.clone(),
            };
            let v = serde_json::to_vec(&n).map_err(|e| FeedError::Store(e.to_string()))?;
            batch.insert(&entry_key(seq), v);
            seq += 1;
        }
        batch.insert(seen_key(cid), &seq.to_be_bytes());
        crate::storage::gated(|| self.tree.apply_batch(batch))?;
        // Served seqs must not come back with other entries after a
        // crash: the batch is on disk before anyone sees it.
        crate::storage::gated(|| self.tree.flush())?;
        *next = seq;
        drop(next);
        if let Ok(mut index) = self.index.write() {
            for e in &entries {
                index.add(e);
            }
        }
        self.notify.notify_waiters();
        Ok(())
    }

    /// Derives and records the entries of one committed op.
    pub fn apply_op(&self, ledger: &RwLock<Ledger>, v: &Validated) -> Result<(), FeedError> {
        let entries = match ledger.read() {
            Ok(l) => derive(&l, &v.op, &v.did),
            Err(_) => return Err(FeedError::Store("ledger lock poisoned".into())),
        };
        self.apply(&v.cid, entries)
    }

    /// How many ops of the ledger, in commit order, are derived (module
    /// doc); 0 for a new tree.
    pub fn upto(&self) -> Result<u64, FeedError> {
        Ok(self
            .tree
            .get(UPTO_KEY)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    fn set_upto(&self, n: u64) -> Result<(), FeedError> {
        self.tree.insert(UPTO_KEY, &n.to_be_bytes())?;
        Ok(())
    }

    /// Derives the ops of the ledger after the [`Feed::upto`] mark (module
    /// doc), reading the read lock per chunk so the writer is never held
    /// up for long. Returns the entries added.
    pub fn catch_up(&self, ledger: &RwLock<Ledger>) -> Result<usize, FeedError> {
        let poisoned = || FeedError::Store("ledger lock poisoned".into());
        let mut from = self.upto()? as usize;
        let len = ledger.read().map_err(|_| poisoned())?.len();
        if from > len {
            // A ledger shorter than the mark (the folder was rebuilt):
            // derive it all again; marked ops are skipped.
            from = 0;
        }
        let mut added = 0;
        while from < len {
            let end = (from + 1000).min(len);
            let mut found = vec![];
            {
                let l = ledger.read().map_err(|_| poisoned())?;
                for cid in l.cids().skip(from).take(end - from) {
                    let Some(stored) = l.get(cid) else { continue };
                    let entries = derive(&l, &stored.op, &stored.did);
                    if !entries.is_empty() {
                        found.push((*cid, entries));
                    }
                }
            }
            // Commit order already: a parent before its children.
            for (cid, entries) in found {
                if !self.tree.contains_key(seen_key(&cid))? {
                    added += entries.len();
                    self.apply(&cid, entries)?;
                }
            }
            self.set_upto(end as u64)?;
            from = end;
        }
        Ok(added)
    }

    /// Derives committed ops the follower received, in commit order, and
    /// moves the mark over them; an op past a gap in the order (the
    /// follower fell behind) makes it catch up from the mark instead.
    pub fn apply_committed(
        &self,
        ledger: &RwLock<Ledger>,
        ops: &[Arc<Validated>],
    ) -> Result<(), FeedError> {
        let mut upto = self.upto()? as usize;
        for v in ops {
            let pos = match ledger.read() {
                Ok(l) => l.position(&v.cid),
                Err(_) => return Err(FeedError::Store("ledger lock poisoned".into())),
            };
            match pos {
                Some(p) if p < upto => {}
                Some(p) if p == upto => {
                    self.apply_op(ledger, v)?;
                    upto += 1;
                }
                _ => {
                    self.set_upto(upto as u64)?;
                    self.catch_up(ledger)?;
                    upto = self.upto()? as usize;
                }
            }
        }
        self.set_upto(upto as u64)
    }

    /// Entries after `since`, at most [`MAX_PAGE`].
    pub fn page(&self, since: u64) -> Result<Vec<Numbered>, FeedError> {
        let mut out = vec![];
        let start = entry_key(since.saturating_add(1));
        for item in self.tree.range(start..=entry_key(u64::MAX)) {
            let (_, v) = item?;
            if let Ok(n) = serde_json::from_slice::<Numbered>(&v) {
                out.push(n);
            }
            if out.len() >= MAX_PAGE {
                break;
            }
        }
        Ok(out)
    }

    /// A replay from seq 0 without the entries that no longer matter
    /// ([`Entry::matters`]): up to [`MAX_PAGE`] kept entries, and the
    /// last seq read (the page's cursor; `None` when the feed is empty).
    pub fn page_pruned(
        &self,
        keep: impl Fn(&Entry) -> bool,
    ) -> Result<(Vec<Numbered>, Option<u64>), FeedError> {
        let mut out = vec![];
        let mut last = None;
        for item in self.tree.range(entry_key(1)..=entry_key(u64::MAX)) {
            let (_, v) = item?;
            let Ok(n) = serde_json::from_slice::<Numbered>(&v) else {
                continue;
            };
            last = Some(n.seq);
            if keep(&n.entry) {
                out.push(n);
                if out.len() >= MAX_PAGE {
                    break;
                }
            }
        }
        Ok((out, last))
    }

    /// Entries after `since`, waiting up to `wait` for the first one.
    pub async fn wait_page(&self, since: u64, wait: Duration) -> Result<Vec<Numbered>, FeedError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the read, so an entry written between the
            // read and the wait still wakes us.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let page = self.page(since)?;
            if !page.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(page);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.page(since);
            }
        }
    }

    /// The compact JWS of a page (module doc; PROTOCOL.md "Revocation").
    pub fn sign_page(&self, page: &Page) -> Result<String, FeedError> {
        let enc = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        let p = serde_json::to_vec(page).map_err(|e| FeedError::Store(e.to_string()))?;
        match &self.signer {
            FeedSigner::Fixed { key, kid } => {
                let input = format!("{}.{}", enc(&header_of(kid)?), enc(&p));
                let sig = key.sign(input.as_bytes());
                Ok(format!("{input}.{}", enc(&sig.to_bytes())))
            }
            FeedSigner::Live(keys) => {
                // The header names the key that signs: sign, then check
                // no rotation landed in between (retry once if it did).
                for _ in 0..2 {
                    let public = keys.ed25519_public();
                    let kid = crate::identity::kid(&public);
                    let input = format!("{}.{}", enc(&header_of(&kid)?), enc(&p));
                    let (signer, sig) = keys.ed25519_sign(input.as_bytes());
                    if signer == public {
                        return Ok(format!("{input}.{}", enc(&sig.to_bytes())));
                    }
                }
                Err(FeedError::Store(
                    "the member key changed while signing".into(),
                ))
            }
        }
    }

    /// Why a token with these facts is revoked by the feed's entries, if
    /// it is (the verifier's rules of PROTOCOL.md, "Revocation").
    pub fn refuses(&self, t: TokenFacts<'_>, now: u64) -> Option<&'static str> {
        let index = self.index.read().ok()?;
        if index.did_before.get(t.sub).is_some_and(|b| t.rev < *b) {
            return Some("the DID revoked its sessions issued before this token");
        }
        if index.jti.contains(t.jti) {
            return Some("this token was revoked");
        }
        if let Some(k) = t.key {
            if index
                .keys
                .get(&(t.sub.to_string(), k.to_string()))
                .is_some_and(|b| t.iat < *b)
            {
                return Some("the key that proved this login was removed from the DID");
            }
        }
        if let Some(kid) = t.kid {
            if index.kids.get(kid).is_some_and(|b| now >= *b) {
                return Some("the member that issued this token was removed or rotated its key");
            }
        }
        None
    }
}

/// The JWS header of a page signed by `kid`.
fn header_of(kid: &str) -> Result<Vec<u8>, FeedError> {
    let header = serde_json::json!({"alg": "EdDSA", "kid": kid, "typ": JWS_TYP});
    serde_json::to_vec(&header).map_err(|e| FeedError::Store(e.to_string()))
}

/// Starts the feed of `state` (once): opens the tree, follows the
/// writer's committed ops, fills from the ledger. Errors are logged; the
/// feed endpoint then answers 503.
pub fn start(state: &Arc<NodeState>) -> Option<Arc<Feed>> {
    if let Some(f) = state.oidc.revocations.get() {
        return Some(f.clone());
    }
    let tree = match state.store.read() {
        Ok(s) => s.side_tree(TREE),
        Err(_) => return None,
    };
    let feed = match tree
        .map_err(|e| FeedError::Store(e.to_string()))
        .and_then(|t| Feed::open_live(t, &state.genesis.issuer, state.token_keys.clone()))
    {
        Ok(f) => Arc::new(f),
        Err(e) => {
            tracing::error!(error = %e, "revocation feed not started");
            return None;
        }
    };
    if state.oidc.revocations.set(feed.clone()).is_err() {
        return state.oidc.revocations.get().cloned();
    }
    // Subscribe before the catch-up: an op committed during it comes
    // through the channel too, and is skipped as behind the mark.
    let committed = state.writer.subscribe();
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let (f, ledger) = (feed.clone(), state.ledger.clone());
        rt.spawn(follow(f, ledger, committed));
        rt.spawn(prune_used_refresh_ids(Arc::downgrade(state)));
    } else if let Err(e) = feed.catch_up(&state.ledger) {
        tracing::error!(error = %e, "revocation feed catch-up failed");
    }
    Some(feed)
}

/// Drops the used-refresh-token ids whose tokens expired
/// ([`crate::oidc::refresh::prune`]) every
/// [`crate::limits::HOUSEKEEPING_INTERVAL`], so the durable used set stays
/// the size of the live refresh tokens. Ends with the node.
async fn prune_used_refresh_ids(state: std::sync::Weak<NodeState>) {
    let mut tick = tokio::time::interval(crate::limits::HOUSEKEEPING_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else { return };
        let _ = tokio::task::spawn_blocking(move || {
            crate::oidc::refresh::prune(&state, crate::now());
        })
        .await;
    }
}

/// Applies committed ops as they come (like `p2p::publish`).
async fn follow(
    feed: Arc<Feed>,
    ledger: Arc<RwLock<Ledger>>,
    mut committed: tokio::sync::broadcast::Receiver<Arc<Validated>>,
) {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    let (f, l) = (feed.clone(), ledger.clone());
    match tokio::task::spawn_blocking(move || f.catch_up(&l)).await {
        Ok(Ok(n)) => tracing::info!(entries = n, "revocation feed caught up with the ledger"),
        Ok(Err(e)) => tracing::error!(error = %e, "revocation feed catch-up failed"),
        Err(_) => tracing::error!("revocation feed catch-up failed"),
    }
    loop {
        // What the writer committed since the last round, in one blocking
        // task (not one per op).
        let mut batch = vec![];
        let mut lagged = false;
        match committed.recv().await {
            Ok(v) => batch.push(v),
            Err(RecvError::Lagged(_)) => lagged = true,
            Err(RecvError::Closed) => return,
        }
        while batch.len() < 4096 {
            match committed.try_recv() {
                Ok(v) => batch.push(v),
                Err(TryRecvError::Lagged(_)) => lagged = true,
                Err(_) => break,
            }
        }
        if lagged {
            tracing::warn!("revocation feed lagged; deriving the ops after its mark");
        }
        let (f, l) = (feed.clone(), ledger.clone());
        let done = tokio::task::spawn_blocking(move || {
            f.apply_committed(&l, &batch)?;
            if lagged {
                f.catch_up(&l)?;
            }
            Ok::<(), FeedError>(())
        })
        .await;
        if let Ok(Err(e)) = done {
            tracing::error!(error = %e, "revocation entry not recorded");
        }
    }
}

/// The DID's revocation watermark this node holds: the largest `before` of
/// its own sign-outs and of member revocations (0 = none). Tokens carry it
/// as `rev` (did_core::Claims::rev).
pub fn watermark(state: &NodeState, did: &str) -> u64 {
    let Ok(l) = state.ledger.read() else {
        return 0;
    };
    let own = l
        .resolve(did)
        .and_then(|v| v.state.map(|s| s.revocations.before))
        .unwrap_or(0);
    own.max(l.member_revocation(did).unwrap_or(0))
}

/// Why `claims` (signed with `kid`) must not be accepted or issued now,
/// from the ledger (DID revocations, deactivation, dispute) and the feed
/// (removed keys, members).
pub fn refused(
    state: &NodeState,
    claims: &did_core::Claims,
    kid: Option<&str>,
    now: u64,
) -> Option<&'static str> {
    if claims.sub.starts_with("did:mesh:") {
        let Ok(l) = state.ledger.read() else {
            return Some("ledger busy");
        };
        match l.resolve(&claims.sub) {
            Some(view) if view.disputed.is_none() => match view.state.as_ref() {
                Some(s)
                    if s.revocations
                        .covers(&claims.jti, claims.rev.unwrap_or(claims.iat)) =>
                {
                    return Some("the DID revoked this token")
                }
                Some(_) => {}
                None => return Some("the DID is deactivated"),
            },
            Some(_) => return Some("the DID is disputed"),
            None => return Some("unknown DID"),
        }
    }
    let feed = state.oidc.revocations.get()?;
    feed.refuses(
        TokenFacts {
            sub: &claims.sub,
            iat: claims.iat,
            rev: claims.rev.unwrap_or(claims.iat),
            jti: &claims.jti,
            key: claims.key.as_deref(),
            kid,
        },
        now,
    )
}

#[derive(Debug, Deserialize)]
pub struct FeedQuery {
    since: Option<u64>,
    wait: Option<u64>,
}

fn error(status: StatusCode, error: &str, reason: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"error": error, "reason": reason})),
    )
        .into_response()
}

/// `GET /v1/revocations?since=&wait=`.
pub async fn feed_page(
    State(state): State<Arc<NodeState>>,
    query: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "since and wait are unsigned integers",
        );
    };
    let Some(feed) = start(&state) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the revocation feed is not running on this node",
        );
    };
    let since = q.since.unwrap_or(0);
    let wait = Duration::from_secs(q.wait.unwrap_or(0).min(MAX_WAIT));
    // A replay from 0 (a new verifier) skips what can no longer refuse a
    // live token; no token outlives the overlap window (network rule:
    // key_overlap_secs >= the longest access-token lifetime).
    let read = if since == 0 && feed.cursor() > 0 {
        let max_ttl = state
            .ledger
            .read()
            .map(|l| l.key_overlap_secs())
            .unwrap_or(u64::MAX);
        let ttl = max_ttl
            .max(state.auth.settings().token_ttl)
            .max(state.oidc.settings.token_ttl);
        let now = crate::now();
        feed.page_pruned(|e| e.matters(now, ttl))
    } else {
        feed.wait_page(since, wait).await.map(|e| {
            let last = e.last().map(|n| n.seq);
            (e, last)
        })
    };
    let (entries, last) = match read {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "revocation page not read");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "revocation store",
            );
        }
    };
    let cursor = last.unwrap_or(since.min(feed.cursor()));
    let page = Page {
        iss: feed.issuer.clone(),
        feed: feed.id.clone(),
        since,
        cursor,
        iat: crate::now(),
        entries,
    };
    match feed.sign_page(&page) {
        Ok(jws) => {
            let mut r = jws.into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/jwt"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "revocation page not signed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "signing failed",
            )
        }
    }
}

/// The feed's route; starts the feed (merged by [`crate::api::router`]).
pub fn routes(state: &Arc<NodeState>) -> Router<Arc<NodeState>> {
    start(state);
    Router::new().route("/v1/revocations", get(feed_page))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed() -> (tempfile::TempDir, Feed) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree(TREE).unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
        (dir, Feed::open(tree, "https://didmesh.local", key).unwrap())
    }

    #[test]
    fn a_replay_from_zero_drops_only_what_no_live_token_can_hit() {
        let (now, ttl) = (1_000_000, 900);
        let did = |before| Entry::Did {
            did: "did:mesh:a".into(),
            before,
        };
        let member = |before| Entry::Member {
            kids: vec!["k".into()],
            before,
        };
        let jti = |exp| Entry::Jti {
            did: "did:mesh:a".into(),
            jti: "j".into(),
            exp,
        };
        // Every token issued before `before` expired `ttl` (+ leeway) ago.
        assert!(!did(now - ttl - PRUNE_LEEWAY).matters(now, ttl));
        assert!(did(now - ttl).matters(now, ttl));
        assert!(!jti(now - PRUNE_LEEWAY).matters(now, ttl));
        assert!(jti(now - 1).matters(now, ttl));
        assert!(!member(now - ttl - PRUNE_LEEWAY).matters(now, ttl));
        assert!(member(AT_ONCE).matters(now, ttl), "a removal stays");

        let (_dir, f) = feed();
        let cid = |i: u8| Cid([i; 32]);
        f.apply(&cid(1), vec![did(10), jti(20)]).unwrap();
        f.apply(&cid(2), vec![member(AT_ONCE), did(now)]).unwrap();
        f.apply(&cid(3), vec![jti(30)]).unwrap();
        let (kept, last) = f.page_pruned(|e| e.matters(now, ttl)).unwrap();
        let seqs: Vec<u64> = kept.iter().map(|n| n.seq).collect();
        assert_eq!(seqs, [3, 4]);
        // The cursor covers what was skipped, so the follower does not
        // read it again.
        assert_eq!(last, Some(5));
        // A follower past seq 0 still gets every entry after its cursor,
        // and the node's own index keeps refusing with all of them.
        assert_eq!(f.page(0).unwrap().len(), 5);
        let (_dir, empty) = feed();
        assert_eq!(empty.page_pruned(|_| true).unwrap(), (vec![], None));
    }

    /// The feed derives each op once: a second catch-up adds nothing and
    /// reads nothing before its mark; a follower that skipped ops (a lag)
    /// fills the gap from the mark when the next op comes after it.
    #[test]
    fn the_mark_keeps_catch_up_to_what_is_new() {
        use did_core::keys::public_of;
        let (_dir, f) = feed();
        let ledger = RwLock::new(Ledger::default());
        let now = 1_800_000_000;
        // `n` DIDs, each created then signed out everywhere (one entry).
        let sign_outs = |seed: u8, n: u8| -> Vec<(Operation, Operation)> {
            (0..n)
                .map(|i| {
                    let k = ed25519_dalek::SigningKey::from_bytes(&[
                        seed, i, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                        1, 1, 1, 1, 1, 1, 1, 1,
                    ]);
                    let state = DidState::single_key(public_of(&k));
                    let create = Operation::create(state.clone(), now, &k).unwrap();
                    let did = did_core::op::did_from_genesis(&create.cid().unwrap());
                    let mut out = state;
                    out.revocations.before = now + 1;
                    let update =
                        Operation::update(&did, create.cid().unwrap(), out, now + 1, &k).unwrap();
                    (create, update)
                })
                .collect()
        };
        let commit = |ops: &[(Operation, Operation)]| -> Vec<Arc<Validated>> {
            let mut l = ledger.write().unwrap();
            let mut done = vec![];
            for (c, u) in ops {
                for op in [c, u] {
                    let did_core::Check::New(v) = l.validate(op).unwrap() else {
                        panic!("not new")
                    };
                    done.push(Arc::new((*v).clone()));
                    l.commit(*v);
                }
            }
            done
        };
        commit(&sign_outs(1, 3));
        assert_eq!(f.catch_up(&ledger).unwrap(), 3);
        assert_eq!(f.upto().unwrap(), 6);
        assert_eq!(f.catch_up(&ledger).unwrap(), 0);
        // In order, as the writer sends them: derived, the mark follows.
        let next = commit(&sign_outs(2, 2));
        f.apply_committed(&ledger, &next).unwrap();
        assert_eq!(f.upto().unwrap(), 10);
        assert_eq!(f.page(0).unwrap().len(), 5);
        // Three ops lost to a lag, then one received: the gap is derived.
        let lost = commit(&sign_outs(3, 2));
        f.apply_committed(&ledger, &lost[3..]).unwrap();
        assert_eq!(f.upto().unwrap(), 14);
        assert_eq!(f.page(0).unwrap().len(), 7);
        // Ops already behind the mark are skipped.
        f.apply_committed(&ledger, &next).unwrap();
        assert_eq!(f.page(0).unwrap().len(), 7);
    }
}
