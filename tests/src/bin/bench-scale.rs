//! `bench-scale`: one node holding many DIDs (issue 12). Not a test: it
//! prints numbers, then one JSON line.
//!
//! 1. Pushes `DIDS` creates to one node over HTTP (`CONCURRENCY` in
//!    flight; the signed ops are made on another thread meanwhile).
//! 2. Resident memory of the node (`VmRSS`) and bytes of its data folder.
//! 3. Restart to serving: SIGTERM (a clean stop), start again, poll
//!    `/healthz` until 200.
//! 4. Resolve latency for random DIDs (`RESOLVES` sequential GETs of
//!    `/1.0/identifiers/{did}` on one keep-alive connection).
//! 5. Late join: a fresh second node bootstraps from the first; time until
//!    its op count equals the first's.
//!
//! Run: `scripts/bench-scale.sh` (release build, and `BASE=<rev>` for the
//! same figures of an older commit), or
//! `DIDMESH_BIN_DIR=target/release DIDS=100000 target/release/bench-scale`.
//! Only flags every version of the node knows are passed, so the driver
//! also measures older builds (`DIDMESH_BIN_DIR` names their binaries).

use didmesh_tests::cluster::{init_network, p2p_addr, post_ops, start_peer};
use didmesh_tests::http::blocking_client;
use didmesh_tests::ops::{create_op, key};
use didmesh_tests::{Node, NodeCommand};
use std::path::Path;
use std::time::{Duration, Instant};

/// The stream of the bench DIDs (`key(SEED, i)`).
const SEED: u8 = 77;
/// Creates per batch handed to the HTTP pusher.
const CHUNK: u32 = 10_000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// `VmRSS` of a process, bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Bytes a folder takes on disk (allocated blocks, as `du`).
fn disk(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += disk(&e.path()),
                Ok(m) => total += m.blocks() * 512,
                Err(_) => {}
            }
        }
    }
    total
}

fn op_count(url: &str) -> u64 {
    blocking_client()
        .get_json(&format!("{url}/v1/status"))
        .ok()
        .and_then(|a| a.body["op_count"].as_u64())
        .unwrap_or(0)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// SIGTERM and wait for the exit; how long the stop took.
fn stop(node: &mut Node) -> Duration {
    let t = Instant::now();
    let pid = node.proc.child.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    while t.elapsed() < Duration::from_secs(600) {
        if let Ok(Some(_)) = node.proc.child.try_wait() {
            return t.elapsed();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    node.kill9();
    t.elapsed()
}

/// Spawns a node and polls `/healthz` from the first moment: (time to the
/// first answer of any kind, time to 200).
fn start_timed(dir: &Path, args: &[&str]) -> (Node, Option<Duration>, Duration) {
    let c = blocking_client();
    let t = Instant::now();
    let node = NodeCommand::new(dir).args(args).spawn();
    let url = format!("{}/healthz", node.url);
    let mut first = None;
    loop {
        if let Ok(a) = c.get_json(&url) {
            first.get_or_insert(t.elapsed());
            if a.status == 200 {
                return (node, first, t.elapsed());
            }
        }
        if t.elapsed() > Duration::from_secs(1800) {
            panic!("the node did not serve within 30 minutes");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn main() {
    let dids = env_u64("DIDS", 1_000_000) as u32;
    let concurrency = env_u64("CONCURRENCY", 64) as usize;
    let resolves = env_u64("RESOLVES", 5000) as u32;
    let label = std::env::var("LABEL").unwrap_or_else(|_| "this build".into());
    let work = match std::env::var_os("BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .unwrap_or_else(|e| panic!("temporary folder: {e}"));
    println!("bench-scale ({label}): {dids} DIDs, {concurrency} in flight");
    let dirs = init_network(&work.path().join("net"), 2);

    // 1. Push.
    let mut node = NodeCommand::new(&dirs[0]).start();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<did_core::Operation>>(2);
    // The DIDs resolved in step 4: a random sample, kept as they are made
    // (a DID names its create op, which carries its creation time).
    let sample: std::collections::HashSet<u32> = (0..resolves)
        .map(|_| rand::random::<u32>() % dids.max(1))
        .collect();
    let maker = std::thread::spawn(move || {
        let mut kept = vec![];
        let mut i = 0;
        while i < dids {
            let end = (i + CHUNK).min(dids);
            let chunk = (i..end)
                .map(|i| {
                    let (op, did) = create_op(&key(SEED, i));
                    if sample.contains(&i) {
                        kept.push(did);
                    }
                    op
                })
                .collect();
            if tx.send(chunk).is_err() {
                break;
            }
            i = end;
        }
        kept
    });
    let t = Instant::now();
    let mut pushed = 0u64;
    let mut next_report = 100_000u64;
    for chunk in rx {
        let acked = post_ops(&[node.url.as_str()], &chunk, concurrency) as u64;
        assert_eq!(acked, chunk.len() as u64, "creates refused");
        pushed += acked;
        if pushed >= next_report || pushed == u64::from(dids) {
            println!(
                "  pushed {pushed} creates in {:.1} s ({:.0} ops/s)",
                t.elapsed().as_secs_f64(),
                pushed as f64 / t.elapsed().as_secs_f64()
            );
            next_report += 100_000;
        }
    }
    let sample = maker.join().unwrap_or_default();
    let push_s = t.elapsed().as_secs_f64();
    let ops = op_count(&node.url);
    println!(
        "push: {pushed} creates in {push_s:.1} s ({:.0} ops/s); node holds {ops} ops",
        pushed as f64 / push_s
    );

    // 2. Memory and disk.
    std::thread::sleep(Duration::from_secs(2));
    let rss_bytes = rss(node.proc.child.id());
    let disk_bytes = disk(&dirs[0]);
    println!(
        "rss: {} ({:.0} bytes per DID)",
        mib(rss_bytes),
        rss_bytes as f64 / f64::from(dids.max(1))
    );
    println!(
        "disk: {} ({:.0} bytes per DID)",
        mib(disk_bytes),
        disk_bytes as f64 / f64::from(dids.max(1))
    );

    // 3. Restart.
    let stopped = stop(&mut node);
    println!(
        "clean stop (SIGTERM to exit): {:.2} s",
        stopped.as_secs_f64()
    );
    let (node, first, ready) = start_timed(&dirs[0], &[]);
    let restart_s = ready.as_secs_f64();
    match first {
        Some(f) => println!(
            "restart to serving: {restart_s:.2} s (first HTTP answer after {:.3} s)",
            f.as_secs_f64()
        ),
        None => println!("restart to serving: {restart_s:.2} s"),
    }
    assert_eq!(op_count(&node.url), ops, "the restarted node lost ops");
    println!("rss after restart: {}", mib(rss(node.proc.child.id())));

    // 4. Resolve.
    let c = blocking_client();
    let mut lat = Vec::with_capacity(sample.len());
    for did in &sample {
        let url = format!("{}/1.0/identifiers/{did}", node.url);
        let t = Instant::now();
        let a = c
            .get_json(&url)
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        lat.push(t.elapsed());
        assert_eq!(a.status, 200, "{did}: {}", a.body);
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3;
    let resolve_p99_ms = pct(0.99);
    println!(
        "resolve ({} random DIDs after the restart): p50 {:.2} ms, p99 {resolve_p99_ms:.2} ms, max {:.2} ms",
        sample.len(),
        pct(0.5),
        pct(1.0)
    );
    println!("rss after resolving: {}", mib(rss(node.proc.child.id())));

    // 5. Late join.
    let seed_addr = p2p_addr(&node);
    let t = Instant::now();
    let late = start_peer(&dirs[1], &[seed_addr], &[]);
    let mut last_print = Instant::now();
    loop {
        let held = op_count(&late.url);
        if held >= ops {
            break;
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            println!(
                "  late joiner: {held} of {ops} ops after {:.0} s",
                t.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        if t.elapsed() > Duration::from_secs(3600) {
            println!("  late joiner: stuck at {held} of {ops} after an hour");
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let late_join_s = t.elapsed().as_secs_f64();
    println!(
        "late join: {ops} ops in {late_join_s:.1} s ({:.0} ops/s)",
        ops as f64 / late_join_s
    );
    drop(late);
    drop(node);

    println!(
        "{}",
        serde_json::json!({
            "dids": dids,
            "rss_bytes": rss_bytes,
            "disk_bytes": disk_bytes,
            "restart_s": (restart_s * 1000.0).round() / 1000.0,
            "resolve_p99_ms": (resolve_p99_ms * 1000.0).round() / 1000.0,
            "late_join_s": (late_join_s * 10.0).round() / 10.0,
        })
    );
}
