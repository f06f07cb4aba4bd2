//! The load generator: `didmesh bench login` and `didmesh bench home`.
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
//! the first byte sent to the token received. Latencies are kept as
//! microseconds in a per-worker `Vec<u32>` and sorted once at the end, so
//! the percentiles are exact.

use crate::error::ClientError;
use crate::login::{check_challenge, Authority};
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
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    first_error: Option<String>,
}

impl WorkerStats {
    fn error(&mut self, msg: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(msg());
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
        let what = if self.bench == "login" {
            "logins"
        } else {
            "requests"
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

/// One full login; `Err` carries a short reason.
async fn one_login(conn: &mut Conn, target: &Target, id: &BenchIdentity) -> Result<(), String> {
    let req = request(
        Method::POST,
        Uri::from_static(CHALLENGE_PATH),
        &target.host,
        id.challenge_body.clone(),
    );
    let (status, body) = conn.call(req).await?;
    if !status.is_success() {
        return Err(format!(
            "challenge: {}",
            crate::node::node_error(status.as_u16(), &body)
        ));
    }
    let ch: ChallengeResponse =
        serde_json::from_slice(&body).map_err(|e| format!("challenge: {e}"))?;
    check_challenge(&ch.message, &target.authority, &id.did, &ch.nonce, None)
        .map_err(|e| e.to_string())?;
    let signature = did_core::keys::sign_b64(&id.key, ch.message.as_bytes());
    let token_body = serde_json::to_vec(&TokenRequest {
        did: id.did.clone(),
        nonce: ch.nonce,
        signature,
    })
    .map_err(|e| e.to_string())?;
    let req = request(
        Method::POST,
        Uri::from_static(TOKEN_PATH),
        &target.host,
        token_body.into(),
    );
    let (status, body) = conn.call(req).await?;
    if !status.is_success() {
        return Err(format!(
            "token: {}",
            crate::node::node_error(status.as_u16(), &body)
        ));
    }
    let token: TokenResponse = serde_json::from_slice(&body).map_err(|e| format!("token: {e}"))?;
    if token.access_token.is_empty() {
        return Err("token: empty access_token".into());
    }
    Ok(())
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

/// Runs `bench login`: registers the DIDs, then `concurrency` workers log
/// in for `duration`. Progress goes to stderr.
pub async fn login(opts: LoginOptions) -> Result<Report, ClientError> {
    if opts.concurrency == 0 || opts.dids == 0 {
        return Err(ClientError::usage(
            "--concurrency and --dids must be at least 1",
        ));
    }
    let target = Arc::new(Target::resolve(&opts.node).await?);
    let setup = Instant::now();
    let ids = register_dids(&target, opts.dids).await?;
    eprintln!(
        "registered {} DIDs in {:.2} s",
        ids.len(),
        setup.elapsed().as_secs_f64()
    );
    let ids: Arc<Vec<BenchIdentity>> = Arc::new(ids);
    let start = Instant::now();
    let deadline = start + opts.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..opts.concurrency {
        let (target, ids) = (target.clone(), ids.clone());
        tasks.spawn(async move {
            let id = &ids[worker % ids.len()];
            let mut conn = Conn::new(target.addr);
            let mut stats = WorkerStats {
                latencies_us: Vec::with_capacity(SAMPLES_PER_WORKER),
                ..Default::default()
            };
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match one_login(&mut conn, &target, id).await {
                    Ok(()) => stats.latencies_us.push(micros(t0.elapsed())),
                    Err(e) => {
                        let broken = conn.sender.is_none();
                        stats.error(|| e);
                        if broken {
                            tokio::time::sleep(RECONNECT_PAUSE).await;
                        }
                    }
                }
            }
            stats
        });
    }
    let stats = join_all(tasks).await?;
    let mut report = Report::new(
        "login",
        &target.url,
        opts.concurrency,
        opts.threads,
        start.elapsed(),
        stats,
    );
    report.dids = Some(ids.len());
    Ok(report)
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
        Some(t) => {
            let mut v = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                ClientError::usage("the token has characters a header cannot carry")
            })?;
            v.set_sensitive(true);
            Some(v)
        }
        None => None,
    };
    let start = Instant::now();
    let deadline = start + opts.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..opts.concurrency {
        let (target, path, auth) = (target.clone(), path.clone(), auth.clone());
        tasks.spawn(async move {
            let mut conn = Conn::new(target.addr);
            let mut stats = WorkerStats {
                latencies_us: Vec::with_capacity(SAMPLES_PER_WORKER),
                ..Default::default()
            };
            while Instant::now() < deadline {
                let mut req = request(Method::GET, path.clone(), &target.host, Bytes::new());
                if let Some(a) = &auth {
                    req.headers_mut().insert(AUTHORIZATION, a.clone());
                }
                let t0 = Instant::now();
                match conn.call(req).await {
                    Ok((status, _)) if status.is_success() => {
                        stats.latencies_us.push(micros(t0.elapsed()))
                    }
                    Ok((status, body)) => {
                        stats.error(|| crate::node::node_error(status.as_u16(), &body).to_string())
                    }
                    Err(e) => {
                        stats.error(|| e);
                        tokio::time::sleep(RECONNECT_PAUSE).await;
                    }
                }
            }
            stats
        });
    }
    let stats = join_all(tasks).await?;
    Ok(Report::new(
        "home",
        &target.url,
        opts.concurrency,
        opts.threads,
        start.elapsed(),
        stats,
    ))
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
                errors: 0,
                first_error: None,
            },
            WorkerStats {
                latencies_us: vec![2000],
                errors: 2,
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
        assert!(r.table().contains("logins/s"));
    }
}
