//! Sign-ins approved from the CLI wallet (`didmesh approve CODE --node URL`).
//!
//! A person whose DID lives in the CLI wallet cannot sign in the browser.
//! The sign-in page asks this node for a pending login instead
//! (`POST /oidc/signin/pending {request, did}`), shows the short code it gets
//! and polls `GET /oidc/signin/pending/{pending_id}`. The wallet reads the
//! pending login by its code (`GET /v1/approvals/{code}`: client, redirect
//! target, and a normal login challenge for the DID with audience =
//! client_id), shows it, signs the challenge and posts the signature
//! (`POST /v1/approvals/{code}`). The signature is checked exactly like a
//! login ([`crate::auth::Authenticator`]: nonce single use, disputed or
//! deactivated DIDs refused, this node must be a member); then an
//! authorization code is issued for the page's authorization request and
//! the page's next poll gets the redirect.
//!
//! ```text
//!  page ── POST pending {request, did} ──► node: {code "ABCD-EFGH", pending_id}
//!  wallet ── GET approvals/ABCD-EFGH ──► {did, client…, message, nonce}
//!  wallet ── POST approvals/ABCD-EFGH {signature} ──► code issued
//!  page ── GET pending/{pending_id} ──► {"status":"approved","redirect"}
//! ```
//!
//! State is in memory at the node that created it (the page talks to its
//! own node_url, and so does `--node`), bounded by [`MAX_PENDING`] and
//! [`LIFE`] (5 minutes). The code is 8 Crockford base32 characters (40
//! random bits), shown `XXXX-XXXX`; lower case, the look-alikes `O`, `I`,
//! `L` and a missing dash are accepted (Crockford's decoding rules). The
//! pending id the page polls with is 128 random bits: whoever holds it gets
//! the authorization code, so it is never shown to the wallet.
//!
//! Guessing a code: every approval call is rate-limited by the auth limiter
//! per client network, and lookups of codes that do not exist are limited
//! further ([`MISS_QUOTA`] per network per minute) and counted. A guessed
//! code shows a client and a DID but cannot be approved without that DID's
//! key; [`MAX_BAD_SIGNATURES`] bad signatures void a pending login.
//! Approving a stranger's code is the device-code phishing risk of
//! SECURITY.md: the wallet shows the client and redirect target first.
//!
//! ## Co-sign slots (issue 11)
//!
//! The same store holds a second kind of approval: a wallet whose DID's
//! login policy needs another device asks for a slot for its live
//! challenge (`POST /v1/auth/cosign {did, nonce}` → `{code, expires_at}`),
//! prints the code, and polls `GET /v1/auth/cosign/{code}`. The other
//! wallet (`didmesh approve CODE`) reads it like a login approval (`GET
//! /v1/approvals/{code}` answers `kind: "cosign"` with the DID, the
//! message, the nonce and the audience) and posts its signature, which
//! the node keeps only if it is by an authentication key of that DID over
//! that message, while the nonce is live; nothing is used up. The first
//! wallet then sends every signature in one token request, where the
//! policy is counted ([`crate::auth`]). A slot lives as long as its
//! challenge, at most [`LIFE`]; the poll answers `waiting`, `signed` (the
//! signatures and the key ids that made them) or `expired`. Its lookups of
//! unknown codes count against the same miss quota as approvals.
//!
//! ```text
//!  wallet A ── POST /v1/auth/cosign {did, nonce} ──► {code "ABCD-EFGH"}
//!  wallet B ── GET approvals/ABCD-EFGH ──► {kind: cosign, did, message, nonce}
//!  wallet B ── POST approvals/ABCD-EFGH {signature} ──► {approved, key}
//!  wallet A ── GET /v1/auth/cosign/ABCD-EFGH ──► {status: signed, signatures, keys}
//!  wallet A ── POST /v1/auth/token {did, nonce, signatures: [A, B]} ──► token (amr mfa)
//! ```

use super::code;
use super::request::AuthRequest;
use super::signin::{no_store, require_member};
use crate::api::ApiError;
use crate::auth::{AuthError, Demand, Proofs};
use crate::NodeState;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use did_core::login::LoginChallenge;
use did_core::proto::{ChallengeResponse, CosignSlot, CosignStatus};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Life of a pending login, in seconds.
pub const LIFE: u64 = 300;
/// Pending logins held at most (a few hundred bytes each). When full of
/// live ones, new ones are refused (503) rather than a live one dropped.
pub const MAX_PENDING: usize = 10_000;
/// Bad signatures after which a pending login is void.
pub const MAX_BAD_SIGNATURES: u32 = 5;
/// Lookups of unknown approval codes allowed per client network per minute
/// (the burst is the same): 40 bits of code space against ten guesses a
/// minute per network.
pub const MISS_QUOTA: u32 = 10;
/// A challenge handed to the wallet is reused while it has at least this
/// many seconds left; else a fresh one is issued.
const CHALLENGE_MARGIN: u64 = 30;
/// Client networks whose misses are counted at most; beyond, the counts of
/// past minutes are dropped first, then (under a flood from more networks
/// than this in one minute) all of them.
const MAX_MISS_NETWORKS: usize = 100_000;
/// Crockford's base32 alphabet (no I, L, O, U).
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// An approval code in its canonical form: 8 upper-case Crockford
/// characters, no dash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApprovalCode(String);

impl ApprovalCode {
    fn random() -> ApprovalCode {
        let mut b = [0u8; 5];
        rand::rngs::OsRng.fill_bytes(&mut b);
        let mut bits = b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x));
        let mut s = [0u8; 8];
        for c in s.iter_mut().rev() {
            *c = CROCKFORD[(bits & 31) as usize];
            bits >>= 5;
        }
        ApprovalCode(s.iter().map(|&c| char::from(c)).collect())
    }

    /// Reads a code as a person may type it: any case, with or without the
    /// dash after the fourth character, `O` for `0` and `I`/`L` for `1`.
    pub fn parse(text: &str) -> Option<ApprovalCode> {
        let text = match text.len() {
            8 => text.to_string(),
            9 if text.as_bytes()[4] == b'-' => text.replacen('-', "", 1),
            _ => return None,
        };
        let mut out = String::with_capacity(8);
        for c in text.chars() {
            let c = match c.to_ascii_uppercase() {
                'O' => '0',
                'I' | 'L' => '1',
                c => c,
            };
            if !c.is_ascii() || !CROCKFORD.contains(&(c as u8)) {
                return None;
            }
            out.push(c);
        }
        Some(ApprovalCode(out))
    }

    /// `XXXX-XXXX`.
    pub fn display(&self) -> String {
        format!("{}-{}", &self.0[..4], &self.0[4..])
    }
}

/// Where a pending login stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Waiting,
    Approved { redirect: String },
    Expired,
}

/// Co-signatures one slot keeps at most (with the asking wallet's own,
/// [`crate::auth::MAX_SIGNATURES`] in one token request).
pub const MAX_COSIGNATURES: usize = crate::auth::MAX_SIGNATURES - 1;

/// What an approval code is for (module doc).
enum Kind {
    /// A sign-in page's login, approved from the CLI wallet.
    Login {
        /// What the page polls with.
        pending_id: String,
        /// The page's authorization request ([`super::request`]).
        request: AuthRequest,
        /// The challenge last handed to the wallet.
        challenge: Option<ChallengeResponse>,
        redirect: Option<String>,
    },
    /// Another wallet's challenge, waiting for a second device.
    Cosign {
        challenge: LoginChallenge,
        /// `(key entry id, signature)`, one per key.
        signed: Vec<(String, String)>,
    },
}

struct Entry {
    did: String,
    expires_at: u64,
    bad_signatures: u32,
    kind: Kind,
}

impl Entry {
    /// Neither expired nor voided by bad signatures.
    fn live(&self, now: u64) -> bool {
        self.expires_at > now && self.bad_signatures < MAX_BAD_SIGNATURES
    }

    fn status(&self, now: u64) -> Status {
        match &self.kind {
            Kind::Login {
                redirect: Some(r), ..
            } => Status::Approved {
                redirect: r.clone(),
            },
            _ if !self.live(now) => Status::Expired,
            _ => Status::Waiting,
        }
    }

    fn pending_id(&self) -> Option<&str> {
        match &self.kind {
            Kind::Login { pending_id, .. } => Some(pending_id),
            Kind::Cosign { .. } => None,
        }
    }
}

#[derive(Default)]
struct Inner {
    by_code: HashMap<ApprovalCode, Entry>,
    /// pending id → code.
    by_id: HashMap<String, ApprovalCode>,
}

impl Inner {
    fn prune(&mut self, now: u64) {
        let Inner { by_code, by_id } = self;
        by_code.retain(|_, e| {
            // An approved entry stays until its own expiry, so the page can
            // still read its redirect; the code inside lives 60 s anyway.
            let keep = e.expires_at > now;
            if !keep {
                if let Some(id) = e.pending_id() {
                    by_id.remove(id);
                }
            }
            keep
        });
    }
}

/// What `POST /oidc/signin/pending` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Created {
    pub code: String,
    pub pending_id: String,
    pub expires_at: u64,
}

/// The two kinds of approval code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalKind {
    /// A sign-in page's login (client fields present).
    Login,
    /// A second device's signature over another wallet's challenge.
    Cosign,
}

/// What `GET /v1/approvals/{code}` answers (the CLI reads it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approval {
    pub kind: ApprovalKind,
    pub did: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
    pub message: String,
    pub nonce: String,
    pub expires_at: u64,
    pub audience: String,
}

/// Why an approval call failed (mapped to `{"error","reason"}`).
#[derive(Debug, thiserror::Error)]
pub enum PendingError {
    #[error("no pending sign-in has this code (it may have expired)")]
    UnknownCode,
    #[error("this sign-in request expired; start again on the sign-in page")]
    Expired,
    #[error("this sign-in was already approved")]
    AlreadyApproved,
    #[error("this co-sign slot holds as many signatures as a login can use")]
    CosignFull,
    #[error("too many sign-ins waiting for approval; try again shortly")]
    Full,
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("the authorization code could not be issued: {0}")]
    Code(String),
}

impl From<PendingError> for ApiError {
    fn from(e: PendingError) -> ApiError {
        let reason = e.to_string();
        match e {
            PendingError::UnknownCode => ApiError::new(StatusCode::NOT_FOUND, "not_found", reason),
            PendingError::Expired => ApiError::new(StatusCode::GONE, "expired", reason),
            PendingError::AlreadyApproved => {
                ApiError::new(StatusCode::CONFLICT, "already_approved", reason)
            }
            PendingError::CosignFull => ApiError::new(StatusCode::CONFLICT, "cosign_full", reason),
            PendingError::Full => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", reason)
            }
            PendingError::Auth(a) => a.into(),
            PendingError::Code(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", reason)
            }
        }
    }
}

/// The pending logins of this node, and the guessing counters.
pub struct PendingLogins {
    inner: Mutex<Inner>,
    /// Unknown-code lookups per client network in the current minute:
    /// `(minute, count)`.
    misses: Mutex<HashMap<IpAddr, (u64, u32)>>,
    /// Unknown-code lookups and bad signatures since start (logged).
    failures: AtomicU64,
    max: usize,
}

impl Default for PendingLogins {
    fn default() -> Self {
        Self::with_capacity(MAX_PENDING)
    }
}

impl PendingLogins {
    pub fn with_capacity(max: usize) -> PendingLogins {
        PendingLogins {
            inner: Mutex::new(Inner::default()),
            misses: Mutex::new(HashMap::new()),
            failures: AtomicU64::new(0),
            max,
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, PendingError> {
        self.inner.lock().map_err(|_| PendingError::Full)
    }

    /// Forgets expired pending logins (the node's housekeeping timer).
    pub fn prune(&self, now: u64) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.prune(now);
        }
    }

    /// Pending logins held now.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.by_code.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Unknown-code lookups and bad signatures since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Records a new pending login for `did` (already checked to be able to
    /// log in: its challenge is `challenge`).
    pub fn create(
        &self,
        did: &str,
        request: AuthRequest,
        challenge: ChallengeResponse,
        now: u64,
    ) -> Result<Created, PendingError> {
        let mut inner = self.lock()?;
        let code = Self::free_code(&mut inner, self.max, now)?;
        let mut id = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut id);
        let pending_id = data_encoding::BASE64URL_NOPAD.encode(&id);
        // Not beyond the authorization request's own life: the code is
        // issued for that request.
        let expires_at = now.saturating_add(LIFE).min(request.expires_at);
        inner.by_id.insert(pending_id.clone(), code.clone());
        inner.by_code.insert(
            code.clone(),
            Entry {
                did: did.to_string(),
                expires_at,
                bad_signatures: 0,
                kind: Kind::Login {
                    pending_id: pending_id.clone(),
                    request,
                    challenge: Some(challenge),
                    redirect: None,
                },
            },
        );
        Ok(Created {
            code: code.display(),
            pending_id,
            expires_at,
        })
    }

    /// A code not in use, after pruning when the store is full.
    fn free_code(inner: &mut Inner, max: usize, now: u64) -> Result<ApprovalCode, PendingError> {
        if inner.by_code.len() >= max {
            inner.prune(now);
            if inner.by_code.len() >= max {
                return Err(PendingError::Full);
            }
        }
        let mut code = ApprovalCode::random();
        while inner.by_code.contains_key(&code) {
            code = ApprovalCode::random();
        }
        Ok(code)
    }

    /// Records a co-sign slot for `did`'s live `challenge` (already
    /// checked: [`crate::auth::Authenticator::live_challenge`]). It lives
    /// as long as the challenge, at most [`LIFE`].
    pub fn create_cosign(
        &self,
        did: &str,
        challenge: LoginChallenge,
        now: u64,
    ) -> Result<CosignSlot, PendingError> {
        let mut inner = self.lock()?;
        let code = Self::free_code(&mut inner, self.max, now)?;
        let expires_at = now.saturating_add(LIFE).min(challenge.expires_at);
        inner.by_code.insert(
            code.clone(),
            Entry {
                did: did.to_string(),
                expires_at,
                bad_signatures: 0,
                kind: Kind::Cosign {
                    challenge,
                    signed: vec![],
                },
            },
        );
        Ok(CosignSlot {
            code: code.display(),
            expires_at,
        })
    }

    /// What the asking wallet's poll reads.
    fn cosign_status(&self, code: &ApprovalCode, now: u64) -> Option<CosignStatus> {
        let inner = self.inner.lock().ok()?;
        let e = inner.by_code.get(code)?;
        let Kind::Cosign { signed, .. } = &e.kind else {
            return None;
        };
        Some(if !e.live(now) {
            CosignStatus::Expired
        } else if signed.is_empty() {
            CosignStatus::Waiting
        } else {
            CosignStatus::Signed {
                keys: signed.iter().map(|(k, _)| k.clone()).collect(),
                signatures: signed.iter().map(|(_, s)| s.clone()).collect(),
            }
        })
    }

    /// Counts a bad signature against the entry of `code`.
    fn bad_signature(&self, code: &ApprovalCode) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut inner) = self.lock() {
            if let Some(entry) = inner.by_code.get_mut(code) {
                entry.bad_signatures += 1;
            }
        }
    }

    /// The status the page polls for. An id never issued, or forgotten
    /// after its expiry, is [`Status::Expired`] as well: the page's answer
    /// is the same (start again).
    pub fn status(&self, pending_id: &str, now: u64) -> Status {
        let Ok(inner) = self.inner.lock() else {
            return Status::Expired;
        };
        inner
            .by_id
            .get(pending_id)
            .and_then(|c| inner.by_code.get(c))
            .map_or(Status::Expired, |e| e.status(now))
    }

    /// Counts a lookup of a code that does not exist, against the client
    /// network's [`MISS_QUOTA`] of this minute.
    fn miss(&self, client: IpAddr, now: u64) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() || n % 4096 == 0 {
            tracing::warn!(
                failures = n,
                "unknown approval codes looked up or bad approval signatures"
            );
        }
        let Ok(mut misses) = self.misses.lock() else {
            return;
        };
        let minute = now / 60;
        if misses.len() >= MAX_MISS_NETWORKS {
            misses.retain(|_, (m, _)| *m == minute);
            if misses.len() >= MAX_MISS_NETWORKS {
                misses.clear();
            }
        }
        let entry = misses
            .entry(crate::limits::client_prefix(client))
            .or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    /// Whether this client network may look codes up now: it has not used
    /// up its misses of this minute.
    fn may_look_up(&self, client: IpAddr, now: u64) -> bool {
        let Ok(misses) = self.misses.lock() else {
            return false;
        };
        match misses.get(&crate::limits::client_prefix(client)) {
            Some((minute, count)) => *minute != now / 60 || *count < MISS_QUOTA,
            None => true,
        }
    }
}

fn state_of(state: &NodeState) -> &PendingLogins {
    &state.oidc.pending
}

/// The routes of this module, merged into the node's router by
/// [`crate::api::router`].
///
/// Creating a pending login and every approval call are limited by the
/// auth limiter ([`rate_limit`]); the page's polling is not (its id is
/// unguessable, and a page polls every few seconds).
pub fn routes() -> Router<Arc<NodeState>> {
    Router::new()
        .route("/oidc/signin/pending", post(create))
        .route("/oidc/signin/pending/{pending_id}", get(status))
        .route("/v1/approvals/{code}", get(show).post(approve))
        .route("/v1/auth/cosign/{code}", get(cosign_poll))
}

/// The auth limiter (`--auth-rate`) per client network, as for logins;
/// `Err` is the seconds to wait ([`too_many`]).
fn rate_limit(state: &NodeState, client: SocketAddr) -> Result<(), u64> {
    if let Some(limiter) = &state.auth_limiter {
        if let Err(wait) = limiter.check(client.ip()) {
            state.metrics.rate_limited.inc();
            return Err(wait);
        }
    }
    Ok(())
}

/// A 429 with `Retry-After` (RFC 6585 §4).
fn too_many(retry_after: u64) -> Response {
    let mut resp = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many approval requests from your network; retry in {retry_after} s"),
    )
    .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    resp
}

#[derive(Deserialize)]
struct CreateBody {
    request: String,
    did: String,
}

async fn create(
    State(state): State<Arc<NodeState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> Response {
    if let Err(wait) = rate_limit(&state, addr) {
        return too_many(wait);
    }
    create_inner(&state, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn create_inner(
    state: &Arc<NodeState>,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    require_member(state)?;
    let now = crate::now();
    let request = super::request::open(state, &body.request, now)?;
    let challenge =
        state
            .auth
            .challenge(&state.ledger, &body.did, Some(&request.client_id), now)?;
    let created = state_of(state).create(&body.did, request, challenge, now)?;
    Ok(no_store(created))
}

async fn status(State(state): State<Arc<NodeState>>, Path(pending_id): Path<String>) -> Response {
    let body = match state_of(&state).status(&pending_id, crate::now()) {
        Status::Waiting => serde_json::json!({"status": "waiting"}),
        Status::Approved { redirect } => {
            serde_json::json!({"status": "approved", "redirect": redirect})
        }
        Status::Expired => serde_json::json!({"status": "expired"}),
    };
    no_store(body)
}

/// Looks up an approval code for `client`, counting a miss.
fn lookup(
    pending: &PendingLogins,
    client: IpAddr,
    text: &str,
    now: u64,
) -> Result<ApprovalCode, ApiError> {
    if !pending.may_look_up(client, now) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many unknown approval codes from your network; wait a minute",
        ));
    }
    let known = ApprovalCode::parse(text).filter(|c| {
        pending
            .inner
            .lock()
            .is_ok_and(|i| i.by_code.contains_key(c))
    });
    match known {
        Some(c) => Ok(c),
        None => {
            pending.miss(client, now);
            Err(PendingError::UnknownCode.into())
        }
    }
}

async fn show(
    State(state): State<Arc<NodeState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(text): Path<String>,
) -> Response {
    if let Err(wait) = rate_limit(&state, addr) {
        return too_many(wait);
    }
    show_inner(&state, addr, &text).unwrap_or_else(IntoResponse::into_response)
}

fn show_inner(state: &NodeState, addr: SocketAddr, text: &str) -> Result<Response, ApiError> {
    let pending = state_of(state);
    let now = crate::now();
    let code = lookup(pending, addr.ip(), text, now)?;
    // The challenge, reissued when it is about to expire (a challenge lives
    // --challenge-ttl, a pending login longer).
    let (did, request, current) = {
        let inner = pending.lock()?;
        let e = inner.by_code.get(&code).ok_or(PendingError::UnknownCode)?;
        match e.status(now) {
            Status::Waiting => {}
            Status::Approved { .. } => return Err(PendingError::AlreadyApproved.into()),
            Status::Expired => return Err(PendingError::Expired.into()),
        }
        match &e.kind {
            Kind::Cosign { challenge, .. } => {
                // Another wallet's challenge: shown as it is (it cannot be
                // reissued: the asking wallet holds its nonce).
                return Ok(no_store(Approval {
                    kind: ApprovalKind::Cosign,
                    did: e.did.clone(),
                    client_id: None,
                    client_name: None,
                    redirect_uri: None,
                    message: challenge.message(),
                    nonce: challenge.nonce.clone(),
                    expires_at: challenge.expires_at,
                    audience: challenge.audience.clone(),
                }));
            }
            Kind::Login {
                request, challenge, ..
            } => {
                let current = challenge
                    .clone()
                    .filter(|c| c.expires_at >= now.saturating_add(CHALLENGE_MARGIN));
                (e.did.clone(), request.clone(), current)
            }
        }
    };
    let challenge = match current {
        Some(c) => c,
        None => {
            let fresh = state
                .auth
                .challenge(&state.ledger, &did, Some(&request.client_id), now)?;
            let mut inner = pending.lock()?;
            if let Some(Entry {
                kind: Kind::Login { challenge, .. },
                ..
            }) = inner.by_code.get_mut(&code)
            {
                *challenge = Some(fresh.clone());
            }
            fresh
        }
    };
    Ok(no_store(Approval {
        kind: ApprovalKind::Login,
        did,
        client_id: Some(request.client_id.clone()),
        client_name: Some(
            super::find_client(state, &request.client_id)
                .map_err(|e| {
                    ApiError::new(StatusCode::BAD_REQUEST, "invalid_client", e.to_string())
                })?
                .name,
        ),
        redirect_uri: Some(request.redirect_uri.clone()),
        message: challenge.message,
        nonce: challenge.nonce,
        expires_at: challenge.expires_at,
        audience: challenge.audience,
    }))
}

/// Body of `POST /v1/approvals/{code}`: the approving wallet's signature
/// (a login approval may carry more, for a DID whose policy needs them).
#[derive(Deserialize)]
struct ApproveBody {
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    signatures: Vec<String>,
}

async fn approve(
    State(state): State<Arc<NodeState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(text): Path<String>,
    body: Result<Json<ApproveBody>, JsonRejection>,
) -> Response {
    if let Err(wait) = rate_limit(&state, addr) {
        return too_many(wait);
    }
    approve_inner(&state, addr, &text, body).unwrap_or_else(IntoResponse::into_response)
}

/// What an approval code holds, for its POST.
enum Target {
    Login { request: AuthRequest, nonce: String },
    Cosign { nonce: String },
}

fn approve_inner(
    state: &NodeState,
    addr: SocketAddr,
    text: &str,
    body: Result<Json<ApproveBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    require_member(state)?;
    let pending = state_of(state);
    let now = crate::now();
    let code = lookup(pending, addr.ip(), text, now)?;
    let (did, target) = {
        let inner = pending.lock()?;
        let e = inner.by_code.get(&code).ok_or(PendingError::UnknownCode)?;
        match e.status(now) {
            Status::Waiting => {}
            Status::Approved { .. } => return Err(PendingError::AlreadyApproved.into()),
            Status::Expired => return Err(PendingError::Expired.into()),
        }
        let target = match &e.kind {
            Kind::Login {
                request, challenge, ..
            } => Target::Login {
                request: request.clone(),
                nonce: challenge
                    .as_ref()
                    .map(|c| c.nonce.clone())
                    .ok_or(PendingError::Auth(AuthError::UnknownNonce))?,
            },
            Kind::Cosign { challenge, signed } => {
                if signed.len() >= MAX_COSIGNATURES {
                    return Err(PendingError::CosignFull.into());
                }
                Target::Cosign {
                    nonce: challenge.nonce.clone(),
                }
            }
        };
        (e.did.clone(), target)
    };
    let signatures: Vec<&str> = body
        .signature
        .iter()
        .chain(body.signatures.iter())
        .map(String::as_str)
        .collect();
    match target {
        Target::Cosign { nonce } => {
            let [signature] = signatures.as_slice() else {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "a co-sign approval carries exactly one signature",
                ));
            };
            // By an authentication key of this DID (resolved now), over
            // this challenge, while its nonce is live; nothing used up.
            let key = match state
                .auth
                .cosign(&state.ledger, &did, &nonce, signature, now)
            {
                Ok(key) => key,
                Err(e) => {
                    if matches!(e, AuthError::Signature(_)) {
                        pending.bad_signature(&code);
                    }
                    return Err(PendingError::Auth(e).into());
                }
            };
            let mut inner = pending.lock()?;
            if let Some(Entry {
                kind: Kind::Cosign { signed, .. },
                ..
            }) = inner.by_code.get_mut(&code)
            {
                if !signed.iter().any(|(k, _)| *k == key) {
                    signed.push((key.clone(), signature.to_string()));
                }
            }
            Ok(no_store(
                serde_json::json!({"approved": true, "kind": "cosign", "key": key}),
            ))
        }
        Target::Login { request, nonce } => {
            if signatures.is_empty() {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "send the signature",
                ));
            }
            // Exactly a login: MAC of the nonce, DID resolved now (disputed
            // or deactivated refused), signatures by authentication keys,
            // the DID's policy and the request's acr_values, nonce single
            // use.
            let proofs = Proofs {
                signatures: &signatures,
                ..Proofs::default()
            };
            let demand = Demand {
                usernameless: false,
                min_factors: if request.mfa { 2 } else { 0 },
            };
            let verified =
                match state
                    .auth
                    .verify_all(&state.ledger, &did, &nonce, &proofs, demand, now)
                {
                    Ok(v) => v,
                    Err(e) => {
                        if matches!(e, AuthError::Signature(_)) {
                            pending.bad_signature(&code);
                        }
                        state.metrics.logins_failed.inc();
                        return Err(PendingError::Auth(e).into());
                    }
                };
            let amr = verified.amr();
            let amr: Vec<&str> = amr.iter().map(String::as_str).collect();
            let code_text =
                code::issue_with_key(state, &request, &did, &amr, verified.key.as_deref())
                    .map_err(|e| PendingError::Code(e.to_string()))?;
            let redirect = code::success_redirect(state, &request, &code_text);
            let mut inner = pending.lock()?;
            if let Some(Entry {
                kind: Kind::Login { redirect: r, .. },
                ..
            }) = inner.by_code.get_mut(&code)
            {
                *r = Some(redirect);
            }
            Ok(no_store(serde_json::json!({"approved": true})))
        }
    }
}

/// Body of `POST /v1/auth/cosign`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosignBody {
    pub did: String,
    pub nonce: String,
}

/// `POST /v1/auth/cosign {did, nonce}`: a co-sign slot for a live
/// challenge of this node (module doc). Rate-limited with the login
/// endpoints.
pub async fn cosign_create(
    State(state): State<Arc<NodeState>>,
    body: Result<Json<CosignBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    require_member(&state)?;
    let now = crate::now();
    let challenge = state
        .auth
        .live_challenge(&state.ledger, &body.did, &body.nonce, now)?;
    let slot = state_of(&state).create_cosign(&body.did, challenge, now)?;
    Ok(no_store(slot))
}

/// `GET /v1/auth/cosign/{code}`: the asking wallet's poll.
async fn cosign_poll(
    State(state): State<Arc<NodeState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(text): Path<String>,
) -> Response {
    let pending = state_of(&state);
    let now = crate::now();
    let code = match lookup(pending, addr.ip(), &text, now) {
        Ok(code) => code,
        Err(e) => return e.into_response(),
    };
    match pending.cosign_status(&code, now) {
        Some(status) => no_store(status),
        // A login approval's code is not a co-sign slot.
        None => ApiError::from(PendingError::UnknownCode).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(expires_at: u64) -> AuthRequest {
        AuthRequest {
            client_id: "abc.app".into(),
            redirect_uri: "https://app.example/cb".into(),
            state: None,
            nonce: None,
            code_challenge: None,
            mfa: false,
            expires_at,
        }
    }

    fn challenge() -> ChallengeResponse {
        ChallengeResponse {
            message: "m".into(),
            nonce: "n".into(),
            issued_at: 1000,
            expires_at: 1120,
            audience: "abc.app".into(),
            policy: None,
        }
    }

    #[test]
    fn a_pending_login_expires_and_is_then_expired_for_the_page() {
        let p = PendingLogins::default();
        let c = p
            .create("did:mesh:x", request(5000), challenge(), 1000)
            .unwrap();
        assert_eq!(c.expires_at, 1000 + LIFE);
        assert_eq!(p.status(&c.pending_id, 1000), Status::Waiting);
        assert_eq!(p.status(&c.pending_id, 1000 + LIFE - 1), Status::Waiting);
        assert_eq!(p.status(&c.pending_id, 1000 + LIFE), Status::Expired);
        assert_eq!(p.status("never-issued", 1000), Status::Expired);
        // a request handle that ends sooner ends the pending login with it
        let short = p
            .create("did:mesh:x", request(1100), challenge(), 1000)
            .unwrap();
        assert_eq!(short.expires_at, 1100);
        assert_eq!(p.status(&short.pending_id, 1100), Status::Expired);
        // pruned after expiry, and the answer stays "expired"
        p.prune(1000 + LIFE);
        assert!(p.is_empty());
        assert_eq!(p.status(&c.pending_id, 1000 + LIFE), Status::Expired);
    }

    #[test]
    fn pending_logins_are_bounded_and_bad_signatures_void_one() {
        let p = PendingLogins::with_capacity(3);
        let ids: Vec<Created> = (0..3)
            .map(|_| {
                p.create("did:mesh:x", request(5000), challenge(), 1000)
                    .unwrap()
            })
            .collect();
        assert!(matches!(
            p.create("did:mesh:x", request(5000), challenge(), 1001),
            Err(PendingError::Full)
        ));
        let code = ApprovalCode::parse(&ids[0].code).unwrap();
        for _ in 0..MAX_BAD_SIGNATURES {
            if let Some(e) = p.inner.lock().unwrap().by_code.get_mut(&code) {
                e.bad_signatures += 1;
            }
        }
        assert_eq!(p.status(&ids[0].pending_id, 1001), Status::Expired);
        assert_eq!(p.status(&ids[1].pending_id, 1001), Status::Waiting);
        // room again once they expire
        assert!(p
            .create("did:mesh:x", request(5000), challenge(), 1000 + LIFE)
            .is_ok());
    }

    #[test]
    fn codes_read_as_people_type_them() {
        for _ in 0..100 {
            let c = ApprovalCode::random();
            let shown = c.display();
            assert_eq!(shown.len(), 9);
            assert_eq!(ApprovalCode::parse(&shown), Some(c.clone()));
            assert_eq!(ApprovalCode::parse(&shown.to_lowercase()), Some(c.clone()));
            assert_eq!(ApprovalCode::parse(&shown.replace('-', "")), Some(c));
        }
        let c = ApprovalCode::parse("ABCD-EFGH").unwrap();
        assert_eq!(ApprovalCode::parse("abcdefgh"), Some(c));
        assert_eq!(
            ApprovalCode::parse("o1il-0000"),
            ApprovalCode::parse("0111-0000")
        );
        for bad in [
            "",
            "ABCD-EFG",
            "ABCDEFGHJ",
            "ABCD_EFGH",
            "ABCD-EFGU",
            "ABCDÉFGH",
            "AB-CDEFGH",
        ] {
            assert_eq!(ApprovalCode::parse(bad), None, "{bad}");
        }
    }
}
