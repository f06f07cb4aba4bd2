//! Abuse of one node by strangers, on the real binary over loopback:
//!
//! * a login flood from 1,200 source addresses (127.1.1-5.x, each address
//!   under any per-address limit) must not lock honest users out: challenges
//!   cost the node no state and the limit is per /24;
//! * a burst of op submissions beyond `--ops-rate` gets 429 with a reason
//!   and `Retry-After`, and every op accepted before survives a SIGKILL;
//! * a damaged sled folder (a truncated file) is refused at start with the
//!   same clear message as a tampered one, not a panic.
//!
//! Each source address is a reqwest client bound to it (`local_address`):
//! Linux routes all of 127.0.0.0/8 to the loopback interface.

use did_core::keys::public_of;
use didmesh_tests::cluster::metric;
use didmesh_tests::login::login;
use didmesh_tests::ops::{create_op, key};
use didmesh_tests::{start_node, NodeCommand};
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The flood runs until it has sent this many challenge requests (more
/// than the 100,000 challenges the node used to keep before it answered
/// 503 to everyone)…
const FLOOD_REQUESTS: u64 = 120_000;
/// …or for this long at most.
const FLOOD: Duration = Duration::from_secs(40);
/// Flood source networks 127.1.1.0/24 … 127.1.5.0/24, 240 addresses each.
const FLOOD_NETS: u8 = 5;
const PER_NET: u8 = 240;
/// Flood requests in flight at once.
const FLOOD_WORKERS: usize = 64;

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    limited: AtomicU64,
    unavailable: AtomicU64,
    other: AtomicU64,
    failed: AtomicU64,
}

impl Tally {
    fn count(&self, status: Option<u16>) {
        let slot = match status {
            Some(200) => &self.ok,
            Some(429) => &self.limited,
            Some(503) => &self.unavailable,
            Some(_) => &self.other,
            None => &self.failed,
        };
        slot.fetch_add(1, Ordering::Relaxed);
    }
    fn total(&self) -> u64 {
        self.get().iter().sum()
    }
    fn get(&self) -> [u64; 5] {
        [
            &self.ok,
            &self.limited,
            &self.unavailable,
            &self.other,
            &self.failed,
        ]
        .map(|c| c.load(Ordering::Relaxed))
    }
}

#[test]
fn a_login_flood_from_1200_addresses_does_not_lock_honest_users_out() {
    let dir = tempfile::tempdir().unwrap();
    // The node's own rate limits (--auth-rate 50, bursts of 100), said out loud.
    let node = NodeCommand::new(dir.path())
        .node_rate_limits()
        .args(["--auth-rate", "50", "--no-p2p"])
        .start();
    let url = node.url.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let flooders: Vec<reqwest::Client> = (1..=FLOOD_NETS)
        .flat_map(|net| (1..=PER_NET).map(move |host| Ipv4Addr::new(127, 1, net, host)))
        .map(|ip| {
            let _guard = rt.enter();
            reqwest::Client::builder()
                .local_address(IpAddr::V4(ip))
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap()
        })
        .collect();
    let addresses = flooders.len();
    assert!(addresses >= 1000);
    let flooders = Arc::new(flooders);
    let tally = Arc::new(Tally::default());
    let victim = public_of(&key(200, 1)).did_key();

    let (honest_ok, honest_errors, honest_worst, flood_time) = rt.block_on(async {
        let started = Instant::now();
        let mut workers = vec![];
        for w in 0..FLOOD_WORKERS {
            let (flooders, tally, url, victim) =
                (flooders.clone(), tally.clone(), url.clone(), victim.clone());
            workers.push(tokio::spawn(async move {
                let mut i = w;
                while started.elapsed() < FLOOD && tally.total() < FLOOD_REQUESTS {
                    let client = &flooders[i % flooders.len()];
                    i += FLOOD_WORKERS;
                    let status = client
                        .post(format!("{url}/v1/auth/challenge"))
                        .json(&json!({ "did": victim }))
                        .send()
                        .await
                        .ok()
                        .map(|r| r.status().as_u16());
                    tally.count(status);
                }
            }));
        }
        // The honest user, from 127.0.0.1, logs in every 100 ms meanwhile,
        // through the client library as `didmesh login` does.
        let me = SigningKey::from_bytes(&[42; 32]);
        let my_did = public_of(&me).did_key();
        let (mut ok, mut errors, mut worst) = (0u32, vec![], Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(500)).await;
        while started.elapsed() < FLOOD && tally.total() < FLOOD_REQUESTS {
            let t = Instant::now();
            match login(&url, &my_did, &me, None).await {
                Ok(_) => ok += 1,
                Err(e) => errors.push(e.to_string()),
            }
            worst = worst.max(t.elapsed());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for w in workers {
            w.await.unwrap();
        }
        let flood_time = started.elapsed();
        // And right after the flood.
        for _ in 0..5 {
            match login(&url, &my_did, &me, None).await {
                Ok(_) => ok += 1,
                Err(e) => errors.push(e.to_string()),
            }
        }
        (ok, errors, worst, flood_time)
    });

    let [flood_ok, flood_limited, flood_503, flood_other, flood_failed] = tally.get();
    let total = flood_ok + flood_limited + flood_503 + flood_other + flood_failed;
    let secs = flood_time.as_secs_f64();
    let keys = metric(&url, "didmesh_rate_limiter_keys");
    println!(
        "flood: {total} challenge requests in {secs:.0} s ({:.0}/s) from {addresses} addresses in \
         {FLOOD_NETS} /24s: {flood_ok} issued, {flood_limited} refused 429, {flood_503} 503, \
         {flood_other} other, {flood_failed} connections closed by the node",
        total as f64 / secs
    );
    println!(
        "honest logins from 127.0.0.1 during and after it: {honest_ok} ok, {} failed, worst {honest_worst:?}; \
         rate-limiter keys {keys:?}",
        honest_errors.len()
    );
    assert!(
        total >= FLOOD_REQUESTS,
        "the flood hardly ran: {total} requests"
    );
    assert!(flood_limited > 0, "the per-/24 limit never applied");
    assert!(
        honest_errors.is_empty(),
        "honest logins failed: {:?}",
        &honest_errors[..honest_errors.len().min(5)]
    );
    assert!(honest_ok >= 30, "too few honest logins: {honest_ok}");
    assert_eq!(flood_503, 0, "the node ran out of something");
    // Keyed per network: 5 flood /24s and 127.0.0.0/24, not 1,201 addresses.
    assert!(keys.is_some_and(|k| k <= 6.0), "{keys:?}");
}

#[test]
fn an_op_burst_beyond_the_limit_gets_429_and_accepted_ops_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    // --ops-rate 2: bursts of 10 per network.
    let mut node = start_node(dir.path(), &["--ops-rate", "2", "--no-p2p"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = {
        let _guard = rt.enter();
        reqwest::Client::new()
    };
    let mut accepted = vec![];
    let mut refused = 0;
    for i in 0..30 {
        let (op, did) = create_op(&key(201, i));
        let (status, retry, body) = rt.block_on(async {
            let r = client
                .post(format!("{}/v1/ops", node.url))
                .json(&op)
                .send()
                .await
                .unwrap();
            let retry = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            (r.status().as_u16(), retry, r.json::<Value>().await.unwrap())
        });
        match status {
            201 => accepted.push((did, op.cid().unwrap().to_string())),
            429 => {
                refused += 1;
                assert_eq!(body["error"], "rate_limited", "{body}");
                assert!(body["reason"].is_string(), "{body}");
                assert!(retry.is_some_and(|s| (1..=2).contains(&s)), "{retry:?}");
            }
            other => panic!("{other}: {body}"),
        }
    }
    println!(
        "30 creates at once with --ops-rate 2: {} accepted, {refused} refused with 429",
        accepted.len()
    );
    assert!((10..=12).contains(&accepted.len()), "{}", accepted.len());

    node.kill9();
    let node = start_node(dir.path(), &["--no-p2p"]);
    let c = didmesh_tests::http::blocking_client();
    for (did, cid) in &accepted {
        let log = c
            .get_json(&format!("{}/v1/dids/{did}/log", node.url))
            .unwrap();
        assert!(
            log.body["ops"]
                .as_array()
                .is_some_and(|ops| ops.iter().any(|o| o["cid"] == cid.as_str())),
            "{did} lost after SIGKILL: {}",
            log.body
        );
    }
}

#[test]
fn a_truncated_sled_file_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    {
        let node = start_node(dir.path(), &["--no-p2p"]);
        let c = didmesh_tests::http::blocking_client();
        for i in 0..5 {
            let a = c.submit(&node.url, &create_op(&key(202, i)).0);
            assert_eq!(a.status, 201, "{}", a.body);
        }
    } // SIGKILL
    let sled_dir = dir.path().join("ledger.sled");
    let files: Vec<_> = std::fs::read_dir(&sled_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        // The config and any snapshot: sled detects their damage. (A torn
        // tail of `db` is what a crash leaves; sled recovers from it.)
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name == "conf" || name.starts_with("snap.")
        })
        .collect();
    assert!(!files.is_empty());
    let mut refused = 0;
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        // The config file, truncated mid-line: sled cannot read it. Other
        // files, truncated to a torn header.
        let len = if name == "conf" { 20 } else { 16 };
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), copy.path());
        let target = copy.path().join("ledger.sled").join(&name);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&target)
            .unwrap()
            .set_len(len)
            .unwrap();
        let log = copy.path().join("stderr.log");
        let mut node = NodeCommand::new(copy.path())
            .arg("--no-p2p")
            .env("RUST_BACKTRACE", "1")
            .stderr_to(&log)
            .spawn();
        let status =
            didmesh_tests::poll(Duration::from_secs(15), Duration::from_millis(50), || {
                node.proc.child.try_wait().unwrap()
            });
        drop(node); // SIGKILL, if it did start
        let stderr = std::fs::read_to_string(&log).unwrap();
        println!("{name} truncated to {len} bytes: {status:?}\n{stderr}");
        let status = status.unwrap_or_else(|| panic!("{name}: the node started: {stderr}"));
        assert!(!status.success(), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert!(!stderr.contains("backtrace"), "{name}: {stderr}");
        assert!(stderr.contains("damaged"), "{name}: {stderr}");
        assert!(stderr.contains("refusing to start"), "{name}: {stderr}");
        assert!(stderr.contains("altered or corrupted"), "{name}: {stderr}");
        refused += 1;
    }
    assert!(refused >= 1);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}
