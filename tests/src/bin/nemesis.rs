//! `nemesis`: a Jepsen-style run (issue 13). Five `didmesh-node`s in network
//! namespaces ([`didmesh_tests::netns::Lab`]), found by name, under a
//! steady load of DID creates, updates and logins, while a seeded nemesis
//! cuts random partitions (silent drops), heals them, SIGKILLs and restarts
//! nodes and skews their clocks (libfaketime, within ±`--max-skew`, below the
//! ledger's 300 s bound). Then it heals everything, restarts every node,
//! waits for convergence and checks:
//!
//! 1. every acknowledged op (POST answered 2xx) is on every node;
//! 2. one ledger digest and one state digest everywhere (`/v1/status`);
//! 3. every DID resolves to the same head everywhere, and each fork the
//!    nemesis made (two updates of one DID, by its high- and low-priority
//!    rotation keys, on the two sides of a cut) is won by the high one;
//! 4. logins worked on every side of every cut, at every node that was up;
//! 5. no token accepted after its revocation reached the verifier: a
//!    revoker thread logs a DID in at one node, signs it out (the wallet's
//!    own `signed_out_state`: `--everywhere` or `--jti`) at another, and asks
//!    every node's `/oidc/userinfo` with the token; a node whose ledger holds
//!    the sign-out (the DID's head is the sign-out op) must refuse it. After
//!    convergence every node must refuse every revoked token.
//!
//! The seed fixes the nemesis schedule and every key and op; the exact
//! interleaving with the load threads depends on timing, as in any such
//! run. `SEED=n scripts/nemesis.sh` replays a seed.
//!
//! Run through `scripts/nemesis.sh` (needs root, iproute2, faketime).
//! Exit status 0 when every check passed, 1 otherwise; the data folders and
//! node logs are kept on failure and their path printed.

use did_core::{Cid, Operation};
use didmesh_tests::cluster::{init_network, wait_converged};
use didmesh_tests::http::blocking_client;
use didmesh_tests::netns::Lab;
use didmesh_tests::ops::{cid, create, create_op, state};
use didmesh_tests::{now, Node, NodeCommand};
use ed25519_dalek::SigningKey;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HTTP_PORT: u16 = 7001;
const P2P_PORT: u16 = 7101;
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// Load threads (each a writer of its own DIDs, and a login client).
const LOAD_THREADS: u64 = 2;
/// Convergence after the final heal must come within this.
const CONVERGE_WITHIN: Duration = Duration::from_secs(180);

struct Opts {
    seed: u64,
    secs: u64,
    nodes: usize,
    max_skew: i64,
}

fn opts() -> Result<Opts, String> {
    let mut o = Opts {
        seed: std::env::var("SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random),
        secs: 90,
        nodes: 5,
        max_skew: 120,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{name} needs a number"))
        };
        match a.as_str() {
            "--seed" => o.seed = val("--seed")?,
            "--duration" => o.secs = val("--duration")?,
            "--nodes" => o.nodes = val("--nodes")? as usize,
            "--max-skew" => o.max_skew = val("--max-skew")? as i64,
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    if o.nodes < 2 || o.nodes > 20 || o.max_skew >= 300 {
        return Err("need 2..=20 nodes and --max-skew below 300".into());
    }
    Ok(o)
}

/// What the run saw, for the final checks.
#[derive(Default)]
struct History {
    /// Acknowledged ops: (DID, CID, node).
    acked: Vec<(String, Cid, usize)>,
    /// Forks made across a cut: (DID, the high-priority update's CID).
    forks: Vec<(String, Cid)>,
    /// Logins checked on the sides of cuts: (cut, node, outcome).
    cut_logins: Vec<(usize, usize, Result<(), String>)>,
    /// Logins of the load: total and refused by a node that was up.
    logins: u64,
    logins_failed: Vec<String>,
    /// Revoked tokens: (DID, token, sign-out op, kind).
    revoked: Vec<(String, String, Cid, &'static str)>,
    /// Token checks at verifiers that held the revocation: total, and
    /// those that accepted the token anyway.
    revoked_checks: u64,
    revoked_accepted: Vec<String>,
    timeline: Vec<String>,
}

struct Shared {
    urls: Vec<String>,
    up: Vec<AtomicBool>,
    stop: AtomicBool,
    history: Mutex<History>,
    start: Instant,
    /// A DID every node holds from the start, for logins: (DID, key).
    login_did: (String, SigningKey),
}

impl Shared {
    fn log(&self, what: String) {
        let line = format!("{:7.1}s {what}", self.start.elapsed().as_secs_f64());
        println!("{line}");
        if let Ok(mut h) = self.history.lock() {
            h.timeline.push(line);
        }
    }
    fn is_up(&self, i: usize) -> bool {
        self.up[i - 1].load(Ordering::SeqCst)
    }
}

fn key_from(rng: &mut StdRng) -> SigningKey {
    SigningKey::from_bytes(&rng.gen())
}

/// Whether `url` answers `/healthz` 200 now.
fn healthy(c: &didmesh_tests::http::BlockingClient, url: &str) -> bool {
    c.get_json(&format!("{url}/healthz"))
        .is_ok_and(|a| a.status == 200)
}

/// A login at `url`; `Err` with what went wrong.
fn login(
    c: &didmesh_tests::http::BlockingClient,
    url: &str,
    did: &str,
    key: &SigningKey,
) -> Result<(), String> {
    c.login(url, did, key)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// One load thread: creates DIDs, updates its own, logs in.
fn load(shared: Arc<Shared>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let c = blocking_client();
    let mut mine: Vec<(String, SigningKey, Cid)> = vec![];
    let n = shared.urls.len();
    while !shared.stop.load(Ordering::SeqCst) {
        let i = rng.gen_range(1..=n);
        std::thread::sleep(Duration::from_millis(rng.gen_range(50..250)));
        if !shared.is_up(i) {
            continue;
        }
        let url = &shared.urls[i - 1];
        let roll: f64 = rng.gen();
        if roll < 0.45 || mine.is_empty() {
            let k = key_from(&mut rng);
            let (op, did) = create_op(&k);
            if c.try_submit(url, &op).is_ok_and(|a| a.is_success()) {
                let cid = cid(&op);
                if let Ok(mut h) = shared.history.lock() {
                    h.acked.push((did.clone(), cid, i));
                }
                mine.push((did, k, cid));
            }
        } else if roll < 0.8 {
            let j = rng.gen_range(0..mine.len());
            let (did, k, prev) = &mine[j];
            let alias = format!("at://u{}.example", rng.gen::<u32>());
            let mut s = state(&[k], k);
            s.also_known_as.push(alias);
            let Ok(op) = Operation::update(did, *prev, s, now(), k) else {
                continue;
            };
            if c.try_submit(url, &op).is_ok_and(|a| a.is_success()) {
                let cid = cid(&op);
                if let Ok(mut h) = shared.history.lock() {
                    h.acked.push((did.clone(), cid, i));
                }
                mine[j].2 = cid;
            }
        } else {
            let (did, k) = &shared.login_did;
            let r = login(&c, url, did, k);
            if let Ok(mut h) = shared.history.lock() {
                h.logins += 1;
                // A refusal counts only from a node that still answers (a
                // node killed mid-login is the nemesis, not a failure).
                if let Err(e) = r {
                    if shared.is_up(i) && healthy(&c, url) {
                        h.logins_failed.push(format!("node {i}: {e}"));
                    }
                }
            }
        }
    }
}

/// `iat`, `exp` and `jti` of a token (its payload, unverified: the driver
/// only needs to know what it asked to revoke).
fn token_facts(token: &str) -> Option<(u64, u64, String)> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some((
        v["iat"].as_u64()?,
        v["exp"].as_u64()?,
        v["jti"].as_str()?.to_string(),
    ))
}

/// The revoker: a DID logs in at one node, signs out at another, and every
/// node holding the sign-out must refuse the token (module doc, check 5).
fn revoker(shared: Arc<Shared>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let c = blocking_client();
    let n = shared.urls.len();
    let pick_up = |rng: &mut StdRng| -> Option<usize> {
        let up: Vec<usize> = (1..=n).filter(|i| shared.is_up(*i)).collect();
        (!up.is_empty()).then(|| up[rng.gen_range(0..up.len())])
    };
    while !shared.stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(rng.gen_range(300..900)));
        let k = key_from(&mut rng);
        let (Some(a), Some(b)) = (pick_up(&mut rng), pick_up(&mut rng)) else {
            continue;
        };
        let (create, did) = create_op(&k);
        if !c
            .try_submit(&shared.urls[a - 1], &create)
            .is_ok_and(|r| r.is_success())
        {
            continue;
        }
        if let Ok(mut h) = shared.history.lock() {
            h.acked.push((did.clone(), cid(&create), a));
        }
        let Ok(token) = c.login(&shared.urls[a - 1], &did, &k) else {
            continue;
        };
        let Some((_iat, exp, jti)) = token_facts(&token) else {
            continue;
        };
        let Some(first) = create.state.as_ref() else {
            continue;
        };
        // The wallet's own sign-out (`didmesh sign-out`).
        let everywhere = rng.gen_bool(0.5);
        let jtis = if everywhere { vec![] } else { vec![jti] };
        let t = now().max(create.created_at);
        let Ok(next) = didmesh_client::commands::signed_out_state(first, everywhere, &jtis, exp, t)
        else {
            continue;
        };
        let Ok(op) = Operation::update(&did, cid(&create), next, t, &k) else {
            continue;
        };
        // At the node that issued the token, or at another (which may not
        // have the DID yet: then it is refused and nothing is recorded).
        if !c
            .try_submit(&shared.urls[b - 1], &op)
            .is_ok_and(|r| r.is_success())
        {
            continue;
        }
        let signout = cid(&op);
        let kind = match (everywhere, _iat > t) {
            (false, _) => "jti",
            (true, false) => "everywhere",
            (true, true) => "everywhere, token iat after the wallet's clock",
        };
        if let Ok(mut h) = shared.history.lock() {
            h.acked.push((did.clone(), signout, b));
            h.revoked.push((did.clone(), token.clone(), signout, kind));
        }
        // Ask the verifiers for a while as the sign-out spreads.
        let want = signout.to_string();
        for _ in 0..4 {
            for v in 1..=n {
                if !shared.is_up(v) {
                    continue;
                }
                let url = &shared.urls[v - 1];
                if c.head(url, &did).as_deref() != Some(want.as_str()) {
                    continue; // not reached this verifier yet
                }
                let Ok(answer) = c.get_bearer(&format!("{url}/oidc/userinfo"), &token) else {
                    continue;
                };
                if let Ok(mut h) = shared.history.lock() {
                    h.revoked_checks += 1;
                    if answer.status == 200 {
                        h.revoked_accepted.push(format!(
                            "node {v} accepted a token of {did} revoked ({kind}) by {want}"
                        ));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

struct Run {
    lab: Lab,
    dirs: Vec<PathBuf>,
    nodes: Vec<Option<Node>>,
    skew_files: Vec<PathBuf>,
    shared: Arc<Shared>,
}

impl Run {
    fn start_node(&mut self, i: usize) {
        let wrapper = self.lab.wrapper(i);
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let boot: Vec<String> = (1..=self.nodes.len())
            .filter(|j| *j != i)
            .map(|j| format!("/dns4/{}/tcp/{P2P_PORT}", Lab::name(j)))
            .collect();
        let skew = self.skew_files[i - 1].to_string_lossy().to_string();
        let node = NodeCommand::new(&self.dirs[i - 1])
            .wrapped_in(&wrapper)
            .http_addr(&format!("{}:{HTTP_PORT}", self.lab.ip(i)))
            .args(["--p2p-addr", &format!("/ip4/0.0.0.0/tcp/{P2P_PORT}")])
            .args([
                "--announce",
                &format!("/dns4/{}/tcp/{P2P_PORT}", Lab::name(i)),
            ])
            .args(["--sync-interval-ms", "1000"])
            .bootstrap(&boot)
            .env("LD_PRELOAD", LIBFAKETIME)
            .env("FAKETIME_TIMESTAMP_FILE", &skew)
            .env("FAKETIME_CACHE_DURATION", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .spawn();
        self.nodes[i - 1] = Some(node);
        self.shared.up[i - 1].store(true, Ordering::SeqCst);
    }

    fn kill(&mut self, i: usize) {
        self.shared.up[i - 1].store(false, Ordering::SeqCst);
        self.nodes[i - 1] = None; // SIGKILL on drop
    }

    fn set_skew(&self, i: usize, secs: i64) -> Result<(), String> {
        let path = &self.skew_files[i - 1];
        std::fs::write(path, format!("{secs:+}\n")).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Splits nodes 1..=n into 2 or 3 non-empty groups.
fn random_groups(rng: &mut StdRng, n: usize) -> Vec<Vec<usize>> {
    let k = if n >= 4 && rng.gen_bool(0.3) { 3 } else { 2 };
    loop {
        let mut groups = vec![vec![]; k];
        for i in 1..=n {
            groups[rng.gen_range(0..k)].push(i);
        }
        if groups.iter().all(|g| !g.is_empty()) {
            return groups;
        }
    }
}

/// Logs in at every node of every group that is up (after a moment for
/// the cut to take effect) and records the outcome.
fn check_logins_on_every_side(run: &Run, cut: usize, groups: &[Vec<usize>]) {
    let c = blocking_client();
    let (did, key) = &run.shared.login_did;
    for g in groups {
        for &i in g {
            let url = &run.shared.urls[i - 1];
            if !run.shared.is_up(i) || !healthy(&c, url) {
                continue; // down (or restarting): nothing to ask of it
            }
            let r = login(&c, url, did, key);
            if let Ok(mut h) = run.shared.history.lock() {
                h.cut_logins.push((cut, i, r));
            }
        }
    }
}

/// A DID with a high- and a low-priority rotation key, for a fork.
struct ForkDid {
    did: String,
    genesis: Cid,
    high: SigningKey,
    low: SigningKey,
}

/// Updates `f` with its low key at a node of one side and its high key at
/// a node of the other; records the fork when both are acknowledged.
fn fork_across(run: &Run, f: &ForkDid, a: usize, b: usize, rng: &mut StdRng) {
    let c = blocking_client();
    let rotation = [&f.high, &f.low];
    let low = Operation::update(
        &f.did,
        f.genesis,
        state(&rotation, &key_from(rng)),
        now(),
        &f.low,
    );
    let high = Operation::update(
        &f.did,
        f.genesis,
        state(&rotation, &key_from(rng)),
        now(),
        &f.high,
    );
    let (Ok(low), Ok(high)) = (low, high) else {
        return;
    };
    let ok_low = c
        .try_submit(&run.shared.urls[a - 1], &low)
        .is_ok_and(|r| r.is_success());
    let ok_high = c
        .try_submit(&run.shared.urls[b - 1], &high)
        .is_ok_and(|r| r.is_success());
    let mut h = match run.shared.history.lock() {
        Ok(h) => h,
        Err(_) => return,
    };
    if ok_low {
        h.acked.push((f.did.clone(), cid(&low), a));
    }
    if ok_high {
        h.acked.push((f.did.clone(), cid(&high), b));
    }
    if ok_low && ok_high {
        h.forks.push((f.did.clone(), cid(&high)));
    }
    drop(h);
    run.shared.log(format!(
        "fork of {}: low-key update at node {a} ({}), high-key update at node {b} ({})",
        &f.did[..24.min(f.did.len())],
        if ok_low { "acked" } else { "refused" },
        if ok_high { "acked" } else { "refused" }
    ));
}

fn main() {
    let o = match opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("nemesis: {e}\nusage: nemesis [--seed N] [--duration SECS] [--nodes N] [--max-skew SECS]");
            std::process::exit(2);
        }
    };
    if !Path::new(LIBFAKETIME).exists() {
        eprintln!("nemesis: {LIBFAKETIME} is missing: apt-get install faketime");
        std::process::exit(2);
    }
    println!(
        "nemesis: SEED={} nodes={} duration={}s clock skew within ±{}s",
        o.seed, o.nodes, o.secs, o.max_skew
    );
    let ok = run(&o);
    println!(
        "nemesis: {} (reproduce: SEED={} scripts/nemesis.sh --duration {})",
        if ok { "PASS" } else { "FAIL" },
        o.seed,
        o.secs
    );
    std::process::exit(if ok { 0 } else { 1 });
}

fn run(o: &Opts) -> bool {
    let mut rng = StdRng::seed_from_u64(o.seed);
    let lab = match Lab::create(o.nodes) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("nemesis: cannot build the lab: {e}");
            return false;
        }
    };
    let tmp = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("nemesis: temp dir: {e}");
            return false;
        }
    };
    // Node logs (warnings and p2p events) next to the data folders.
    std::env::set_var("DIDMESH_TEST_LOG", "warn,didmesh_node::p2p=info");
    let dirs = init_network(&tmp.path().join("net"), o.nodes);
    let skew_files: Vec<PathBuf> = (1..=o.nodes)
        .map(|i| tmp.path().join(format!("skew{i}")))
        .collect();
    let login_key = key_from(&mut rng);
    let (login_op, login_did) = create_op(&login_key);
    let urls: Vec<String> = (1..=o.nodes)
        .map(|i| format!("http://{}:{HTTP_PORT}", lab.ip(i)))
        .collect();
    let shared = Arc::new(Shared {
        urls: urls.clone(),
        up: (0..o.nodes).map(|_| AtomicBool::new(false)).collect(),
        stop: AtomicBool::new(false),
        history: Mutex::new(History::default()),
        start: Instant::now(),
        login_did: (login_did.clone(), login_key),
    });
    let mut run = Run {
        lab,
        dirs,
        nodes: (0..o.nodes).map(|_| None).collect(),
        skew_files,
        shared: shared.clone(),
    };
    for i in 1..=o.nodes {
        if let Err(e) = run.set_skew(i, 0) {
            eprintln!("nemesis: {e}");
            return false;
        }
        run.start_node(i);
    }
    let c = blocking_client();
    let url_refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    let all_healthy =
        didmesh_tests::poll(Duration::from_secs(30), Duration::from_millis(100), || {
            url_refs.iter().all(|u| healthy(&c, u)).then_some(())
        });
    if all_healthy.is_none() {
        eprintln!("nemesis: the nodes did not start");
        return finish(run, tmp, false);
    }
    // The login DID and the fork DIDs, on every node before the faults.
    let mut forks: Vec<ForkDid> = vec![];
    let mut setup_ok = c
        .try_submit(&urls[0], &login_op)
        .is_ok_and(|a| a.is_success());
    for _ in 0..12 {
        let (high, low) = (key_from(&mut rng), key_from(&mut rng));
        let (op, did) = create(state(&[&high, &low], &key_from(&mut rng)), &high);
        setup_ok &= c.try_submit(&urls[0], &op).is_ok_and(|a| a.is_success());
        forks.push(ForkDid {
            did,
            genesis: cid(&op),
            high,
            low,
        });
    }
    if let Ok(mut h) = shared.history.lock() {
        h.acked.push((login_did.clone(), cid(&login_op), 1));
        for f in &forks {
            h.acked.push((f.did.clone(), f.genesis, 1));
        }
    }
    if !setup_ok || wait_converged(&url_refs, Duration::from_secs(60)).is_err() {
        eprintln!("nemesis: the cluster did not form");
        return finish(run, tmp, false);
    }
    shared.log(format!(
        "cluster of {} formed; load and nemesis start",
        o.nodes
    ));

    let mut loaders: Vec<_> = (0..LOAD_THREADS)
        .map(|t| {
            let s = shared.clone();
            let seed = o.seed.wrapping_mul(31).wrapping_add(t + 1);
            std::thread::spawn(move || load(s, seed))
        })
        .collect();
    {
        let s = shared.clone();
        let seed = o.seed.wrapping_mul(37).wrapping_add(1);
        loaders.push(std::thread::spawn(move || revoker(s, seed)));
    }

    // --- the nemesis ---
    let end = Instant::now() + Duration::from_secs(o.secs);
    let mut restart_at: Vec<Option<Instant>> = vec![None; o.nodes];
    let mut cuts = 0usize;
    let mut forks_left = forks.iter();
    let restart_due = |run: &mut Run, restart_at: &mut Vec<Option<Instant>>| {
        for i in 1..=o.nodes {
            if restart_at[i - 1].is_some_and(|t| t <= Instant::now()) {
                restart_at[i - 1] = None;
                run.start_node(i);
                run.shared.log(format!("restart node {i}"));
            }
        }
    };
    while Instant::now() < end {
        restart_due(&mut run, &mut restart_at);
        let roll: f64 = rng.gen();
        if roll < 0.4 {
            let groups = random_groups(&mut rng, o.nodes);
            cuts += 1;
            if let Err(e) = run.lab.partition(&groups) {
                shared.log(format!("cannot cut: {e}"));
                return stop_and_finish(run, tmp, loaders, false);
            }
            shared.log(format!("cut #{cuts}: {groups:?}"));
            let hold = Duration::from_millis(rng.gen_range(4000..12000));
            let cut_at = Instant::now();
            std::thread::sleep(Duration::from_millis(500));
            // A fork across the cut, between up nodes of two sides.
            let sides: Vec<usize> = groups
                .iter()
                .filter_map(|g| g.iter().copied().find(|i| shared.is_up(*i)))
                .collect();
            if sides.len() >= 2 && rng.gen_bool(0.6) {
                if let Some(f) = forks_left.next() {
                    fork_across(&run, f, sides[0], sides[1], &mut rng);
                }
            }
            check_logins_on_every_side(&run, cuts, &groups);
            while cut_at.elapsed() < hold {
                std::thread::sleep(Duration::from_millis(200));
                restart_due(&mut run, &mut restart_at);
            }
            if let Err(e) = run.lab.heal() {
                shared.log(format!("cannot heal: {e}"));
                return stop_and_finish(run, tmp, loaders, false);
            }
            shared.log(format!("heal #{cuts}"));
        } else if roll < 0.65 {
            let i = rng.gen_range(1..=o.nodes);
            let wait = Duration::from_millis(rng.gen_range(2000..8000));
            if restart_at[i - 1].is_none() {
                run.kill(i);
                restart_at[i - 1] = Some(Instant::now() + wait);
                shared.log(format!("SIGKILL node {i} (back in {wait:?})"));
            }
            std::thread::sleep(Duration::from_millis(rng.gen_range(500..2000)));
        } else if roll < 0.85 {
            let i = rng.gen_range(1..=o.nodes);
            let skew = rng.gen_range(-o.max_skew..=o.max_skew);
            if let Err(e) = run.set_skew(i, skew) {
                shared.log(format!("cannot skew: {e}"));
            } else {
                shared.log(format!("clock of node {i} skewed {skew:+}s"));
            }
            std::thread::sleep(Duration::from_millis(rng.gen_range(500..2000)));
        } else {
            std::thread::sleep(Duration::from_millis(rng.gen_range(1000..4000)));
        }
    }
    // --- the end: stop the load, heal, bring every node back ---
    shared.stop.store(true, Ordering::SeqCst);
    for l in loaders {
        let _ = l.join();
    }
    let healed = run.lab.heal();
    for i in 1..=o.nodes {
        if run.nodes[i - 1].is_none() {
            run.start_node(i);
            shared.log(format!("restart node {i} (final)"));
        }
    }
    shared.log("load stopped, network healed, every node up; waiting for convergence".into());
    let ok = healed.is_ok() && check(&run, &url_refs, cuts);
    finish(run, tmp, ok)
}

fn stop_and_finish(
    run: Run,
    tmp: tempfile::TempDir,
    loaders: Vec<std::thread::JoinHandle<()>>,
    ok: bool,
) -> bool {
    run.shared.stop.store(true, Ordering::SeqCst);
    for l in loaders {
        let _ = l.join();
    }
    finish(run, tmp, ok)
}

/// Stops the nodes, then removes the lab; keeps the data on failure.
fn finish(mut run: Run, tmp: tempfile::TempDir, ok: bool) -> bool {
    run.nodes.clear();
    drop(run);
    if !ok {
        let kept = tmp.keep();
        println!(
            "nemesis: data folders and node logs kept in {}",
            kept.display()
        );
    }
    ok
}

/// The final checks (module doc); prints each and answers whether all held.
fn check(run: &Run, urls: &[&str], cuts: usize) -> bool {
    let c = blocking_client();
    let mut ok = true;
    let mut verdict = |name: &str, pass: bool, detail: String| {
        println!(
            "CHECK {:<44} {}  {detail}",
            name,
            if pass { "ok  " } else { "FAIL" }
        );
        ok &= pass;
    };
    let converged = wait_converged(urls, CONVERGE_WITHIN);
    let h = match run.shared.history.lock() {
        Ok(h) => h,
        Err(_) => return false,
    };
    match &converged {
        Ok((took, n)) => verdict(
            "one digest everywhere",
            true,
            format!(
                "{n} ops on {} nodes, converged {took:.1?} after the final heal",
                urls.len()
            ),
        ),
        Err(e) => verdict("one digest everywhere", false, e.clone()),
    }
    // 1. every acknowledged op everywhere.
    let mut logs: HashMap<(usize, String), Vec<String>> = HashMap::new();
    let mut missing = vec![];
    for (did, cid, at) in &h.acked {
        for (n, url) in urls.iter().enumerate() {
            let cids = logs.entry((n, did.clone())).or_insert_with(|| {
                c.get_json(&format!("{url}/v1/dids/{did}/log"))
                    .ok()
                    .and_then(|a| {
                        a.body["ops"].as_array().map(|ops| {
                            ops.iter()
                                .filter_map(|o| o["cid"].as_str().map(str::to_string))
                                .collect()
                        })
                    })
                    .unwrap_or_default()
            });
            if !cids.contains(&cid.to_string()) {
                missing.push(format!(
                    "{cid} (acked by node {at}) missing at node {}",
                    n + 1
                ));
            }
        }
    }
    verdict(
        "every acknowledged op on every node",
        missing.is_empty(),
        format!(
            "{} acked ops × {} nodes{}",
            h.acked.len(),
            urls.len(),
            missing
                .first()
                .map(|m| format!("; e.g. {m} ({} missing)", missing.len()))
                .unwrap_or_default()
        ),
    );
    // 3. one head per DID everywhere; forks won by the high key.
    let mut dids: Vec<&String> = h.acked.iter().map(|(d, _, _)| d).collect();
    dids.sort();
    dids.dedup();
    let mut differ = vec![];
    for did in &dids {
        let heads: Vec<Option<String>> = urls.iter().map(|u| c.head(u, did)).collect();
        if heads.iter().any(|x| x != &heads[0] || x.is_none()) {
            differ.push(format!("{did}: {heads:?}"));
        }
    }
    verdict(
        "same head for every DID on every node",
        differ.is_empty(),
        format!(
            "{} DIDs{}",
            dids.len(),
            differ
                .first()
                .map(|d| format!("; e.g. {d}"))
                .unwrap_or_default()
        ),
    );
    let mut lost = vec![];
    for (did, high) in &h.forks {
        let want = high.to_string();
        for (n, u) in urls.iter().enumerate() {
            if c.head(u, did).as_deref() != Some(want.as_str()) {
                lost.push(format!("{did} at node {}", n + 1));
            }
        }
    }
    verdict(
        "fork rule: the high-priority key's update wins",
        lost.is_empty(),
        format!(
            "{} forks across cuts{}",
            h.forks.len(),
            lost.first()
                .map(|d| format!("; e.g. {d}"))
                .unwrap_or_default()
        ),
    );
    // 4. logins on every side of every cut.
    let failed: Vec<String> = h
        .cut_logins
        .iter()
        .filter_map(|(cut, n, r)| {
            r.as_ref()
                .err()
                .map(|e| format!("cut #{cut} node {n}: {e}"))
        })
        .collect();
    verdict(
        "logins on every side of every cut",
        failed.is_empty() && (cuts == 0 || !h.cut_logins.is_empty()),
        format!(
            "{} logins over {cuts} cuts{}",
            h.cut_logins.len(),
            failed
                .first()
                .map(|d| format!("; e.g. {d}"))
                .unwrap_or_default()
        ),
    );
    verdict(
        "logins under load at up nodes",
        h.logins_failed.is_empty(),
        format!(
            "{} logins, {} refused{}",
            h.logins,
            h.logins_failed.len(),
            h.logins_failed
                .first()
                .map(|d| format!("; e.g. {d}"))
                .unwrap_or_default()
        ),
    );
    // The skew is real: each node's tokens carry its skewed clock.
    let (did, key) = &run.shared.login_did;
    let mut offsets = vec![];
    let mut skew_ok = true;
    for (n, u) in urls.iter().enumerate() {
        let set: i64 = std::fs::read_to_string(&run.skew_files[n])
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        let seen = c
            .login(u, did, key)
            .ok()
            .and_then(|t| token_facts(&t))
            .map(|(iat, _, _)| iat as i64 - now() as i64);
        skew_ok &= seen.is_some_and(|x| (x - set).abs() <= 3);
        offsets.push(format!(
            "{set:+}/{}",
            seen.map_or("?".into(), |x| format!("{x:+}"))
        ));
    }
    verdict(
        "clock skews in effect (set/seen in tokens)",
        skew_ok,
        offsets.join(" "),
    );
    // 5. revocations: during the run, and every node after convergence.
    let mut after = vec![];
    for (did, token, _, kind) in &h.revoked {
        for (n, u) in urls.iter().enumerate() {
            let status = c
                .get_bearer(&format!("{u}/oidc/userinfo"), token)
                .map(|a| a.status)
                .unwrap_or(0);
            if status != 401 {
                after.push(format!(
                    "node {} answered {status} to a token of {did} revoked ({kind})",
                    n + 1
                ));
            }
        }
    }
    for line in h.revoked_accepted.iter().chain(after.iter()).take(10) {
        println!("      {line}");
    }
    verdict(
        "no token accepted after its revocation reached",
        h.revoked_accepted.is_empty() && after.is_empty() && !h.revoked.is_empty(),
        format!(
            "{} tokens revoked, {} checks at verifiers holding the sign-out during the run, {} after{}",
            h.revoked.len(),
            h.revoked_checks,
            h.revoked.len() * urls.len(),
            h.revoked_accepted
                .first()
                .or(after.first())
                .map(|d| format!("; e.g. {d} ({} + {} accepted)", h.revoked_accepted.len(), after.len()))
                .unwrap_or_default()
        ),
    );
    ok
}
