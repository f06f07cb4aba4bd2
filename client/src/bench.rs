//! The load generator: `didmesh bench login`, `didmesh bench oidc` and
//! `didmesh bench home`.
//!
//! Each worker owns one keep-alive HTTP/1.1 connection (hyper's `conn`
//! API, `TCP_NODELAY`) and runs a closed loop: the next request leaves when
//! the previous answer is in. With N workers that is what a pooled client
//! sized to N converges to, minus the pool's bookkeeping and locking. A
//! broken connection is re-opened on the next request.
//!
//! A login is the whole wallet flow: `POST /v1/auth/challenge`, the same
//! phishing checks the CLI makes ([`crate::login::check_challenge`]), an
//! Ed25519 signature, `POST /v1/auth/token`. Its latency is measured from
//! the first byte sent to the token received.
//!
//! An OIDC flow is the whole authorization code flow with PKCE as a browser
//! and a relying party make it (the browser's part simulated with a
//! software key, see [`crate::oidc`]): authorize, the sign-in page's
//! request, challenge, sign, complete, the redirect's checks, the token
//! request, the ID token's signature and claims. Its latency runs from the
//! authorize request to the verified ID token.
//!
//! All three share one closed loop ([`Flow`], `closed_loop`); a failed
//! iteration is counted by kind (`challenge`, `token`, `connection`, …) and
//! the first message of each run is kept. Latencies are kept as
//! microseconds in a per-worker `Vec<u32>` and sorted once at the end, so
//! the percentiles are exact.

use crate::error::ClientError;
use crate::login::{check_challenge, Authority};
use crate::oidc::{self, Jwks, Pkce};
use did_core::proto::{
    ChallengeRequest, ChallengeResponse, TokenRequest, TokenResponse, CHALLENGE_PATH, OPS_PATH,
    TOKEN_PATH,
};
use did_core::{DidState, Operation};
use ed25519_dalek::SigningKey;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Create ops in flight at once while registering the bench DIDs.
const SETUP_PARALLELISM: usize = 32;
/// Latency samples reserved per worker up front (grows if needed).
const SAMPLES_PER_WORKER: usize = 16 * 1024;
/// Pause after a connection failure, so a dead node is not hammered.
const RECONNECT_PAUSE: Duration = Duration::from_millis(20);

/// Where the generator sends requests.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given (for the report).
    pub url: String,
    pub authority: Authority,
    pub addr: SocketAddr,
    /// `Host` header value.
    host: HeaderValue,
}

impl Target {
    /// Resolves the URL's host once, before the clock starts.
    pub async fn resolve(url: &str) -> Result<Target, ClientError> {
        if !url.starts_with("http://") {
            return Err(ClientError::usage(format!(
                "{url:?}: only http:// URLs can be benchmarked"
            )));
        }
        let authority = Authority::of_url(url).map_err(ClientError::Usage)?;
        // A name may resolve to several addresses (`localhost`: ::1 and
        // 127.0.0.1); keep the first that accepts a connection.
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(authority.to_string())
            .await
            .map_err(|e| ClientError::Transport(format!("cannot resolve {authority}: {e}")))?
            .collect();
        let mut reachable = None;
        for a in &addrs {
            if tokio::net::TcpStream::connect(a).await.is_ok() {
                reachable = Some(*a);
                break;
            }
        }
        let addr = reachable.ok_or_else(|| {
            ClientError::Transport(format!("cannot connect to {authority} ({addrs:?})"))
        })?;
        let parsed = reqwest::Url::parse(url).map_err(|e| ClientError::usage(e.to_string()))?;
        let host_text = match parsed.port() {
            Some(p) => format!("{}:{p}", authority.host),
            None => authority.host.clone(),
        };
        let host =
            HeaderValue::from_str(&host_text).map_err(|e| ClientError::usage(e.to_string()))?;
        Ok(Target {
            url: url.trim_end_matches('/').to_string(),
            authority,
            addr,
            host,
        })
    }
}

/// One keep-alive connection, re-opened when it breaks.
struct Conn {
    addr: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        Conn { addr, sender: None }
    }

    async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the peer closes.
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Sends `req` and reads the whole answer.
    async fn call(&mut self, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String> {
        let sender = match &mut self.sender {
            Some(s) if !s.is_closed() => s,
            slot => slot.insert(Conn::connect(self.addr).await?),
        };
        let result = async {
            sender.ready().await.map_err(|e| e.to_string())?;
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, body))
        }
        .await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }
}

fn request(method: Method, path: Uri, host: &HeaderValue, body: Bytes) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = method;
    *req.uri_mut() = path;
    req.headers_mut().insert(HOST, host.clone());
    if req.method() == Method::POST {
        req.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    req
}

/// Why one iteration failed: a short kind the report counts, and a message
/// (the first one of a run is shown).
#[derive(Debug)]
struct FlowError {
    kind: &'static str,
    msg: String,
}

impl FlowError {
    fn new(kind: &'static str, msg: impl std::fmt::Display) -> FlowError {
        FlowError {
            kind,
            msg: format!("{kind}: {msg}"),
        }
    }

    /// A 4xx/5xx answer, with the node's `{"error","reason"}`.
    fn status(kind: &'static str, status: StatusCode, body: &[u8]) -> FlowError {
        FlowError::new(kind, crate::node::node_error(status.as_u16(), body))
    }
}

/// One request on the worker's connection; a broken connection is its own
/// kind of error.
async fn call(
    conn: &mut Conn,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), FlowError> {
    conn.call(req)
        .await
        .map_err(|e| FlowError::new("connection", e))
}

/// A 2xx JSON answer as `T`, or a [`FlowError`] of `kind`.
fn json_answer<T: serde::de::DeserializeOwned>(
    kind: &'static str,
    (status, body): (StatusCode, Bytes),
) -> Result<T, FlowError> {
    if !status.is_success() {
        return Err(FlowError::status(kind, status, &body));
    }
    serde_json::from_slice(&body).map_err(|e| FlowError::new(kind, e))
}

/// What one iteration of a benchmark does, on the worker's connection.
/// `worker` picks the worker's identity.
trait Flow: Send + Sync + 'static {
    fn run<'a>(
        &'a self,
        conn: &'a mut Conn,
        worker: usize,
    ) -> impl Future<Output = Result<(), FlowError>> + Send + 'a;
}

/// `concurrency` workers run `flow` back to back until `duration` is over,
/// each on its own keep-alive connection; returns their stats and the
/// elapsed time.
async fn closed_loop<F: Flow>(
    flow: Arc<F>,
    addr: SocketAddr,
    concurrency: usize,
    duration: Duration,
) -> Result<(Vec<WorkerStats>, Duration), ClientError> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let flow = flow.clone();
        tasks.spawn(async move {
            let mut conn = Conn::new(addr);
            let mut stats = WorkerStats {
                latencies_us: Vec::with_capacity(SAMPLES_PER_WORKER),
                ..Default::default()
            };
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match flow.run(&mut conn, worker).await {
                    Ok(()) => stats.latencies_us.push(micros(t0.elapsed())),
                    Err(e) => {
                        stats.error(e);
                        // A dead node is not hammered.
                        if conn.sender.is_none() {
                            tokio::time::sleep(RECONNECT_PAUSE).await;
                        }
                    }
                }
            }
            stats
        });
    }
    let stats = join_all(tasks).await?;
    Ok((stats, start.elapsed()))
}

/// A DID made for the benchmark, with its key held in memory only.
struct BenchIdentity {
    did: String,
    key: SigningKey,
    /// `{"did":"…"}`, built once.
    challenge_body: Bytes,
}

/// What one worker saw.
#[derive(Default)]
struct WorkerStats {
    latencies_us: Vec<u32>,
    errors: u64,
    by_kind: BTreeMap<&'static str, u64>,
    first_error: Option<String>,
}

impl WorkerStats {
    fn error(&mut self, e: FlowError) {
        self.errors += 1;
        *self.by_kind.entry(e.kind).or_default() += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.msg);
        }
    }
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// The outcome of a run; printed as a table and as one JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub bench: &'static str,
    pub url: String,
    pub concurrency: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dids: Option<usize>,
    pub threads: usize,
    pub duration_s: f64,
    /// Successful iterations (full logins, or 2xx GETs).
    pub ok: u64,
    pub per_sec: f64,
    pub errors: u64,
    /// Failed iterations by the step that failed.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub errors_by_kind: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    pub latency_ms: Latency,
}

impl Report {
    fn new(
        bench: &'static str,
        url: &str,
        concurrency: usize,
        threads: usize,
        elapsed: Duration,
        stats: Vec<WorkerStats>,
    ) -> Report {
        let errors = stats.iter().map(|s| s.errors).sum();
        let mut errors_by_kind: BTreeMap<String, u64> = BTreeMap::new();
        for (kind, n) in stats.iter().flat_map(|s| s.by_kind.iter()) {
            *errors_by_kind.entry((*kind).to_string()).or_default() += n;
        }
        let first_error = stats.iter().find_map(|s| s.first_error.clone());
        let mut all: Vec<u32> =
            Vec::with_capacity(stats.iter().map(|s| s.latencies_us.len()).sum());
        for s in stats {
            all.extend_from_slice(&s.latencies_us);
        }
        all.sort_unstable();
        let secs = elapsed.as_secs_f64();
        Report {
            bench,
            url: url.to_string(),
            concurrency,
            dids: None,
            threads,
            duration_s: round(secs, 3),
            ok: all.len() as u64,
            per_sec: round(
                if secs > 0.0 {
                    all.len() as f64 / secs
                } else {
                    0.0
                },
                1,
            ),
            errors,
            errors_by_kind,
            first_error,
            latency_ms: Latency {
                p50: percentile_ms(&all, 50.0),
                p90: percentile_ms(&all, 90.0),
                p99: percentile_ms(&all, 99.0),
                max: all
                    .last()
                    .map(|&us| round(f64::from(us) / 1000.0, 3))
                    .unwrap_or(0.0),
            },
        }
    }

    /// The human table (without the JSON line).
    pub fn table(&self) -> String {
        let what = match self.bench {
            "login" => "logins",
            "oidc" => "flows",
            _ => "requests",
        };
        let dids = self.dids.map(|d| format!(", {d} DIDs")).unwrap_or_default();
        let mut out = format!(
            "bench {}: {}, {} workers{dids}, {} threads, {:.1} s\n",
            self.bench, self.url, self.concurrency, self.threads, self.duration_s
        );
        let rows: [(String, String); 7] = [
            (what.to_string(), self.ok.to_string()),
            (format!("{what}/s"), format!("{:.1}", self.per_sec)),
            ("errors".into(), self.errors.to_string()),
            (
                "latency p50".into(),
                format!("{:.3} ms", self.latency_ms.p50),
            ),
            (
                "latency p90".into(),
                format!("{:.3} ms", self.latency_ms.p90),
            ),
            (
                "latency p99".into(),
                format!("{:.3} ms", self.latency_ms.p99),
            ),
            (
                "latency max".into(),
                format!("{:.3} ms", self.latency_ms.max),
            ),
        ];
        for (k, v) in rows {
            out.push_str(&format!("  {k:<14}{v:>14}\n"));
        }
        for (kind, n) in &self.errors_by_kind {
            out.push_str(&format!("  {:<14}{n:>14}\n", format!("  {kind}")));
        }
        if let Some(e) = &self.first_error {
            out.push_str(&format!("  first error: {e}\n"));
        }
        out
    }
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
pub fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted_us.len()) - 1;
    round(f64::from(sorted_us[idx]) / 1000.0, 3)
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// Registers `count` DIDs, each with a fresh in-memory key.
async fn register_dids(
    target: &Arc<Target>,
    count: usize,
) -> Result<Vec<BenchIdentity>, ClientError> {
    let now = crate::now();
    let mut tasks = tokio::task::JoinSet::new();
    let lanes = SETUP_PARALLELISM.min(count.max(1));
    for lane in 0..lanes {
        let target = target.clone();
        tasks.spawn(async move {
            let mut conn = Conn::new(target.addr);
            let mut made = Vec::new();
            for _ in (lane..count).step_by(lanes) {
                let key = SigningKey::generate(&mut rand::rngs::OsRng);
                let state = DidState::single_key(did_core::keys::public_of(&key));
                let op = Operation::create(state, now, &key)?;
                let did = did_core::op::did_from_genesis(&op.cid()?);
                let body =
                    serde_json::to_vec(&op).map_err(|e| ClientError::protocol(e.to_string()))?;
                let req = request(
                    Method::POST,
                    Uri::from_static(OPS_PATH),
                    &target.host,
                    body.into(),
                );
                let (status, body) = conn.call(req).await.map_err(|e| {
                    ClientError::Transport(format!("registering bench DIDs at {}: {e}", target.url))
                })?;
                if !status.is_success() {
                    return Err(crate::node::node_error(status.as_u16(), &body));
                }
                let challenge_body = serde_json::to_vec(&ChallengeRequest {
                    did: did.clone(),
                    audience: None,
                })
                .map_err(|e| ClientError::protocol(e.to_string()))?;
                made.push(BenchIdentity {
                    did,
                    key,
                    challenge_body: challenge_body.into(),
                });
            }
            Ok::<_, ClientError>(made)
        });
    }
    let mut all = Vec::with_capacity(count);
    while let Some(joined) = tasks.join_next().await {
        let made =
            joined.map_err(|e| ClientError::protocol(format!("setup task failed: {e}")))??;
        all.extend(made);
    }
    Ok(all)
}

/// One full login.
async fn one_login(conn: &mut Conn, target: &Target, id: &BenchIdentity) -> Result<(), FlowError> {
    let req = request(
        Method::POST,
        Uri::from_static(CHALLENGE_PATH),
        &target.host,
        id.challenge_body.clone(),
    );
    let ch: ChallengeResponse = json_answer("challenge", call(conn, req).await?)?;
    check_challenge(&ch.message, &target.authority, &id.did, &ch.nonce, None)
        .map_err(|e| FlowError::new("check", e))?;
    let signature = did_core::keys::sign_b64(&id.key, ch.message.as_bytes());
    let token_body = serde_json::to_vec(&TokenRequest::signed(&id.did, &ch.nonce, &signature))
        .map_err(|e| FlowError::new("token", e))?;
    let req = request(
        Method::POST,
        Uri::from_static(TOKEN_PATH),
        &target.host,
        token_body.into(),
    );
    let token: TokenResponse = json_answer("token", call(conn, req).await?)?;
    if token.access_token.is_empty() {
        return Err(FlowError::new("token", "empty access_token"));
    }
    Ok(())
}

/// `bench login`'s iteration: worker `w` logs in as DID `w mod dids`.
struct LoginFlow {
    target: Arc<Target>,
    ids: Vec<BenchIdentity>,
}

impl Flow for LoginFlow {
    fn run<'a>(
        &'a self,
        conn: &'a mut Conn,
        worker: usize,
    ) -> impl Future<Output = Result<(), FlowError>> + Send + 'a {
        one_login(conn, &self.target, &self.ids[worker % self.ids.len()])
    }
}

/// Runs `flow` in the closed loop against `target` and reports it as
/// `bench`, with the number of DIDs it signs in as (what every `bench`
/// subcommand ends with).
async fn run_flow<F: Flow>(
    bench: &'static str,
    flow: Arc<F>,
    target: &Target,
    concurrency: usize,
    threads: usize,
    duration: Duration,
    dids: Option<usize>,
) -> Result<Report, ClientError> {
    let (stats, elapsed) = closed_loop(flow, target.addr, concurrency, duration).await?;
    let mut report = Report::new(bench, &target.url, concurrency, threads, elapsed, stats);
    report.dids = dids;
    Ok(report)
}

/// Options of `bench login`.
#[derive(Debug, Clone)]
pub struct LoginOptions {
    pub node: String,
    pub concurrency: usize,
    pub duration: Duration,
    pub dids: usize,
    pub threads: usize,
}

/// Registers `dids` bench DIDs at `target`, saying how long it took.
async fn setup_dids(target: &Arc<Target>, dids: usize) -> Result<Vec<BenchIdentity>, ClientError> {
    let setup = Instant::now();
    let ids = register_dids(target, dids).await?;
    eprintln!(
        "registered {} DIDs in {:.2} s",
        ids.len(),
        setup.elapsed().as_secs_f64()
    );
    Ok(ids)
}

/// Runs `bench login`: registers the DIDs, then `concurrency` workers log
/// in for `duration`. Progress goes to stderr.
pub async fn login(opts: LoginOptions) -> Result<Report, ClientError> {
    if opts.concurrency == 0 || opts.dids == 0 {
        return Err(ClientError::usage(
            "--concurrency and --dids must be at least 1",
        ));
    }
    let target = Arc::new(Target::resolve(&opts.node).await?);
    let ids = setup_dids(&target, opts.dids).await?;
    let dids = ids.len();
    let flow = Arc::new(LoginFlow {
        target: target.clone(),
        ids,
    });
    run_flow(
        "login",
        flow,
        &target,
        opts.concurrency,
        opts.threads,
        opts.duration,
        Some(dids),
    )
    .await
}

/// Options of `bench oidc`.
#[derive(Debug, Clone)]
pub struct OidcOptions {
    pub node: String,
    pub client_id: String,
    pub redirect_uri: String,
    /// The confidential client's secret (`client_secret_basic`); `None`:
    /// a public client (PKCE only).
    pub client_secret: Option<Zeroizing<String>>,
    pub concurrency: usize,
    pub duration: Duration,
    pub dids: usize,
    pub threads: usize,
}

/// `bench oidc`'s iteration (module doc): worker `w` signs in as DID
/// `w mod dids`.
struct OidcFlow {
    target: Arc<Target>,
    ids: Vec<BenchIdentity>,
    client_id: String,
    redirect_uri: String,
    /// `Authorization: Basic …` for a confidential client (sensitive).
    basic: Option<HeaderValue>,
    issuer: String,
    network_id: String,
    jwks: Jwks,
}

impl Flow for OidcFlow {
    fn run<'a>(
        &'a self,
        conn: &'a mut Conn,
        worker: usize,
    ) -> impl Future<Output = Result<(), FlowError>> + Send + 'a {
        self.one_flow(conn, &self.ids[worker % self.ids.len()])
    }
}

impl OidcFlow {
    async fn one_flow(&self, conn: &mut Conn, id: &BenchIdentity) -> Result<(), FlowError> {
        let host = &self.target.host;
        let (state, nonce, pkce) = (oidc::random_b64(16), oidc::random_b64(16), Pkce::new());
        // 1. The authorization request; the answer is the sign-in page.
        let path = oidc::authorize_path(&self.client_id, &self.redirect_uri, &state, &nonce, &pkce);
        let uri: Uri = path.parse().map_err(|e| FlowError::new("authorize", e))?;
        let (status, page) = call(conn, request(Method::GET, uri, host, Bytes::new())).await?;
        if status != StatusCode::OK {
            return Err(FlowError::status("authorize", status, &page));
        }
        let html = std::str::from_utf8(&page).map_err(|e| FlowError::new("page", e))?;
        let req = oidc::signin_request_from_html(html).map_err(|e| FlowError::new("page", e))?;
        if req.client_id != self.client_id || req.redirect_uri != self.redirect_uri {
            return Err(FlowError::new(
                "page",
                "the page names another client or redirect URI",
            ));
        }
        // The page sends its calls to `node_url`, the node that issued the
        // request handle; this loop sends them on its one connection.
        if Authority::of_url(&req.node_url).as_ref() != Ok(&self.target.authority) {
            return Err(FlowError::new(
                "page",
                format!(
                    "the page's node_url {} is not --node (bench one node directly, at its --public-url)",
                    req.node_url
                ),
            ));
        }
        // 2. The browser's part: a challenge for the DID, checked and signed.
        let body = serde_json::to_vec(&oidc::SigninChallengeRequest {
            request: &req.request,
            did: &id.did,
        })
        .map_err(|e| FlowError::new("challenge", e))?;
        let uri = Uri::from_static(oidc::SIGNIN_CHALLENGE_PATH);
        let ch: oidc::SigninChallenge = json_answer(
            "challenge",
            call(conn, request(Method::POST, uri, host, body.into())).await?,
        )?;
        let checked = check_challenge(
            &ch.message,
            &self.target.authority,
            &id.did,
            &ch.nonce,
            Some(&self.client_id),
        )
        .map_err(|e| FlowError::new("check", e))?;
        if checked.network_id != self.network_id {
            return Err(FlowError::new("check", "challenge for another network"));
        }
        let signature = did_core::keys::sign_b64(&id.key, ch.message.as_bytes());
        let body = serde_json::to_vec(&oidc::SigninCompleteRequest {
            request: &req.request,
            nonce: &ch.nonce,
            did: &id.did,
            signature: &signature,
        })
        .map_err(|e| FlowError::new("complete", e))?;
        let uri = Uri::from_static(oidc::SIGNIN_COMPLETE_PATH);
        let done: oidc::SigninComplete = json_answer(
            "complete",
            call(conn, request(Method::POST, uri, host, body.into())).await?,
        )?;
        // 3. The relying party: the redirect, then the token request.
        let code =
            oidc::code_from_redirect(&done.redirect, &self.redirect_uri, &state, &self.issuer)
                .map_err(|e| FlowError::new("redirect", e))?;
        let mut pairs = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("code_verifier", pkce.verifier.as_str()),
        ];
        if self.basic.is_none() {
            // A public client names itself (RFC 6749 §4.1.3).
            pairs.push(("client_id", self.client_id.as_str()));
        }
        let uri = Uri::from_static(oidc::OIDC_TOKEN_PATH);
        let mut token_req = request(Method::POST, uri, host, oidc::form(&pairs).into());
        token_req.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        if let Some(b) = &self.basic {
            token_req.headers_mut().insert(AUTHORIZATION, b.clone());
        }
        let tokens: oidc::OidcTokens = json_answer("token", call(conn, token_req).await?)?;
        if !tokens.token_type.eq_ignore_ascii_case("Bearer") || tokens.access_token.is_empty() {
            return Err(FlowError::new("token", "not a Bearer access token"));
        }
        // 4. The ID token, as a relying party checks it.
        let claims = self
            .jwks
            .verify_id_token(&tokens.id_token, &self.issuer, &self.client_id, &nonce)
            .map_err(|e| FlowError::new("id_token", e))?;
        if claims.sub != id.did {
            return Err(FlowError::new(
                "id_token",
                "sub is not the DID that signed in",
            ));
        }
        Ok(())
    }
}

/// Runs `bench oidc`: reads the node's discovery document and JWKS,
/// registers the DIDs, then `concurrency` workers run code flows for
/// `duration`.
pub async fn oidc(opts: OidcOptions) -> Result<Report, ClientError> {
    if opts.concurrency == 0 || opts.dids == 0 {
        return Err(ClientError::usage(
            "--concurrency and --dids must be at least 1",
        ));
    }
    did_core::client::check_redirect_uri(&opts.redirect_uri)
        .map_err(|why| ClientError::usage(format!("--redirect-uri: {why}")))?;
    let target = Arc::new(Target::resolve(&opts.node).await?);
    let node = crate::node::NodeClient::new(&target.url)?;
    let discovery: serde_json::Value = node.get_json(oidc::DISCOVERY_PATH).await?;
    let text = |k: &str| {
        discovery[k]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ClientError::protocol(format!("discovery has no {k}")))
    };
    let (issuer, network_id) = (text("issuer")?, text("didmesh_network_id")?);
    // The node's own JWKS (every node serves every member's keys): the
    // discovery document names the issuer's, which a bench against one node
    // behind no front door may not reach.
    let jwks_uri = format!("{}/.well-known/jwks.json", target.url.trim_end_matches('/'));
    if discovery["authorization_endpoint"].as_str().is_none() {
        return Err(ClientError::usage(format!(
            "{} is not an OpenID provider (no authorization_endpoint in its discovery document)",
            target.url
        )));
    }
    // The JWKS is read once: the keys of a running network's members do
    // not change during a run.
    let jwks_doc: serde_json::Value = reqwest::get(&jwks_uri)
        .await
        .map_err(|e| ClientError::Transport(format!("{jwks_uri}: {e}")))?
        .json()
        .await
        .map_err(|e| ClientError::protocol(format!("{jwks_uri}: {e}")))?;
    let jwks = Jwks::from_json(&jwks_doc);
    if jwks.is_empty() {
        return Err(ClientError::protocol(format!(
            "{jwks_uri} has no usable key"
        )));
    }
    let basic = match &opts.client_secret {
        Some(secret) => Some(sensitive_header(
            &oidc::basic_auth(&opts.client_id, secret),
            "--client-secret",
        )?),
        None => None,
    };
    let ids = setup_dids(&target, opts.dids).await?;
    let dids = ids.len();
    let flow = Arc::new(OidcFlow {
        target: target.clone(),
        ids,
        client_id: opts.client_id,
        redirect_uri: opts.redirect_uri,
        basic,
        issuer,
        network_id,
        jwks,
    });
    run_flow(
        "oidc",
        flow,
        &target,
        opts.concurrency,
        opts.threads,
        opts.duration,
        Some(dids),
    )
    .await
}

/// Options of `bench home`.
#[derive(Debug, Clone)]
pub struct HomeOptions {
    pub url: String,
    pub token: Option<String>,
    pub concurrency: usize,
    pub duration: Duration,
    pub threads: usize,
}

/// `bench home`'s iteration: one GET.
struct HomeFlow {
    host: HeaderValue,
    path: Uri,
    auth: Option<HeaderValue>,
}

impl Flow for HomeFlow {
    async fn run<'a>(&'a self, conn: &'a mut Conn, _worker: usize) -> Result<(), FlowError> {
        let mut req = request(Method::GET, self.path.clone(), &self.host, Bytes::new());
        if let Some(a) = &self.auth {
            req.headers_mut().insert(AUTHORIZATION, a.clone());
        }
        let (status, body) = call(conn, req).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(FlowError::status("status", status, &body))
        }
    }
}

/// Runs `bench home`: plain GETs of one URL, optionally with a bearer token.
pub async fn home(opts: HomeOptions) -> Result<Report, ClientError> {
    if opts.concurrency == 0 {
        return Err(ClientError::usage("--concurrency must be at least 1"));
    }
    let target = Arc::new(Target::resolve(&opts.url).await?);
    let parsed = reqwest::Url::parse(&opts.url).map_err(|e| ClientError::usage(e.to_string()))?;
    let path_and_query = match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_string(),
    };
    let path: Uri = path_and_query
        .parse()
        .map_err(|e| ClientError::usage(format!("{e}")))?;
    let auth = match &opts.token {
        Some(t) => Some(sensitive_header(&format!("Bearer {t}"), "the token")?),
        None => None,
    };
    let flow = Arc::new(HomeFlow {
        host: target.host.clone(),
        path,
        auth,
    });
    run_flow(
        "home",
        flow,
        &target,
        opts.concurrency,
        opts.threads,
        opts.duration,
        None,
    )
    .await
}

/// An `Authorization` value, marked sensitive (never in a debug print);
/// `what` names its source in the refusal, which never quotes it.
fn sensitive_header(value: &str, what: &str) -> Result<HeaderValue, ClientError> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| ClientError::usage(format!("{what} has characters a header cannot carry")))?;
    v.set_sensitive(true);
    Ok(v)
}

async fn join_all(
    mut tasks: tokio::task::JoinSet<WorkerStats>,
) -> Result<Vec<WorkerStats>, ClientError> {
    let mut stats = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        stats.push(joined.map_err(|e| ClientError::protocol(format!("worker failed: {e}")))?);
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&v, 50.0), 50.0);
        assert_eq!(percentile_ms(&v, 90.0), 90.0);
        assert_eq!(percentile_ms(&v, 99.0), 99.0);
        assert_eq!(percentile_ms(&v, 100.0), 100.0);
        assert_eq!(percentile_ms(&[], 50.0), 0.0);
        assert_eq!(percentile_ms(&[1500], 99.0), 1.5);
    }

    #[test]
    fn report_counts_and_json() {
        let stats = vec![
            WorkerStats {
                latencies_us: vec![3000, 1000],
                ..Default::default()
            },
            WorkerStats {
                latencies_us: vec![2000],
                errors: 2,
                by_kind: [("token", 2)].into_iter().collect(),
                first_error: Some("boom".into()),
            },
        ];
        let r = Report::new("login", "http://x", 2, 2, Duration::from_secs(1), stats);
        assert_eq!(r.ok, 3);
        assert_eq!(r.errors, 2);
        assert_eq!(r.per_sec, 3.0);
        assert_eq!(r.latency_ms.p50, 2.0);
        assert_eq!(r.latency_ms.max, 3.0);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["first_error"], "boom");
        assert_eq!(json["errors_by_kind"]["token"], 2);
        assert!(r.table().contains("logins/s"));
        assert!(r.table().contains("token"));
    }
}
