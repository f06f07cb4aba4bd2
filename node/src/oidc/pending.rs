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

use super::code;
use super::request::AuthRequest;
use crate::api::ApiError;
use crate::auth::{AuthError, Proof};
use crate::NodeState;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use did_core::proto::ChallengeResponse;
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

struct Entry {
    pending_id: String,
    did: String,
    /// The page's authorization request ([`super::request`]).
    request: AuthRequest,
    expires_at: u64,
    /// The challenge last handed to the wallet.
    challenge: Option<ChallengeResponse>,
    redirect: Option<String>,
    bad_signatures: u32,
}

impl Entry {
    fn status(&self, now: u64) -> Status {
        match &self.redirect {
            Some(r) => Status::Approved {
                redirect: r.clone(),
            },
            None if self.expires_at <= now || self.bad_signatures >= MAX_BAD_SIGNATURES => {
                Status::Expired
            }
            None => Status::Waiting,
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
                by_id.remove(&e.pending_id);
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

/// What `GET /v1/approvals/{code}` answers (the CLI reads it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approval {
    pub did: String,
    pub client_id: String,
    pub client_name: String,
    pub redirect_uri: String,
    pub message: String,
    pub nonce: String,
    pub expires_at: u64,
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
        if inner.by_code.len() >= self.max {
            inner.prune(now);
            if inner.by_code.len() >= self.max {
                return Err(PendingError::Full);
            }
        }
        let mut code = ApprovalCode::random();
        while inner.by_code.contains_key(&code) {
            code = ApprovalCode::random();
        }
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
                pending_id: pending_id.clone(),
                did: did.to_string(),
                request,
                expires_at,
                challenge: Some(challenge),
                redirect: None,
                bad_signatures: 0,
            },
        );
        Ok(Created {
            code: code.display(),
            pending_id,
            expires_at,
        })
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

fn no_store(body: impl Serialize) -> Response {
    let mut r = Json(body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn require_member(state: &NodeState) -> Result<(), ApiError> {
    if state.is_member() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_a_member",
        "this node is not a member of the network and cannot sign anyone in",
    ))
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
        let current = e
            .challenge
            .clone()
            .filter(|c| c.expires_at >= now.saturating_add(CHALLENGE_MARGIN));
        (e.did.clone(), e.request.clone(), current)
    };
    let challenge = match current {
        Some(c) => c,
        None => {
            let fresh = state
                .auth
                .challenge(&state.ledger, &did, Some(&request.client_id), now)?;
            let mut inner = pending.lock()?;
            if let Some(e) = inner.by_code.get_mut(&code) {
                e.challenge = Some(fresh.clone());
            }
            fresh
        }
    };
    Ok(no_store(Approval {
        did,
        client_id: request.client_id.clone(),
        client_name: super::find_client(state, &request.client_id)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_client", e.to_string()))?
            .name,
        redirect_uri: request.redirect_uri.clone(),
        message: challenge.message,
        nonce: challenge.nonce,
        expires_at: challenge.expires_at,
    }))
}

#[derive(Deserialize)]
struct ApproveBody {
    signature: String,
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
    let (did, request, nonce) = {
        let inner = pending.lock()?;
        let e = inner.by_code.get(&code).ok_or(PendingError::UnknownCode)?;
        match e.status(now) {
            Status::Waiting => {}
            Status::Approved { .. } => return Err(PendingError::AlreadyApproved.into()),
            Status::Expired => return Err(PendingError::Expired.into()),
        }
        let nonce = e
            .challenge
            .as_ref()
            .map(|c| c.nonce.clone())
            .ok_or(PendingError::Auth(AuthError::UnknownNonce))?;
        (e.did.clone(), e.request.clone(), nonce)
    };
    // Exactly a login: MAC of the nonce, DID resolved now (disputed or
    // deactivated refused), signature by an authentication key, nonce
    // single use.
    let verified = state.auth.verify(
        &state.ledger,
        &did,
        &nonce,
        Proof::Signature(&body.signature),
        false,
        now,
    );
    if let Err(e) = verified {
        if matches!(e, AuthError::Signature(_)) {
            pending.failures.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut inner) = pending.lock() {
                if let Some(entry) = inner.by_code.get_mut(&code) {
                    entry.bad_signatures += 1;
                }
            }
        }
        state.metrics.logins_failed.inc();
        return Err(PendingError::Auth(e).into());
    }
    let code_text = code::issue(state, &request, &did, &["swk"])
        .map_err(|e| PendingError::Code(e.to_string()))?;
    let redirect = code::success_redirect(state, &request, &code_text);
    {
        let mut inner = pending.lock()?;
        if let Some(e) = inner.by_code.get_mut(&code) {
            e.redirect = Some(redirect);
        }
    }
    Ok(no_store(serde_json::json!({"approved": true})))
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
