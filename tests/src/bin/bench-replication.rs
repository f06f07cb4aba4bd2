//! `bench-replication`: replication figures of a loopback cluster of real
//! `didmesh-node` processes. Not a test: it prints numbers.
//!
//! 1. Propagation latency: one op at a time to a random node of 5; time
//!    from the POST until it resolves on all 5 (p50, p90, p99, max).
//! 2. Sustained replication: N creates POSTed concurrently over the 5 nodes;
//!    ops/s until all 5 hold all of them.
//! 3. Convergence after a 10,000-op divergence (`DIVERGENCE`): node 5 runs
//!    alone (`--no-p2p`) and takes half of them while nodes 1-4 take the
//!    other half; then node 5 rejoins; time until all 5 agree.
//! 4. Reconciliation cost: two nodes share 10,000 ops; node B misses d ops
//!    (it ran `--no-p2p` while they were written); bytes of reconciliation
//!    frames and of op fetches until B agrees again, for several d.
//!
//! Run: `scripts/bench.sh` (release build), or
//! `DIDMESH_BIN_DIR=target/release target/release/bench-replication`.
//! Knobs: `LATENCY_SAMPLES` (300), `SUSTAINED_OPS` (20000), `CONCURRENCY` (64),
//! `DIVERGENCE` (10000: ops written on both sides of the cut, half each),
//! `ONLY` (e.g. `ONLY=34`: run parts 3 and 4 only).

use did_core::Operation;
use didmesh_tests::cluster::{
    digests, init_network, metric, p2p_addr, post_ops, start_cluster, start_peer, wait_converged,
    wait_peers,
};
use didmesh_tests::http::blocking_client;
use didmesh_tests::ops::{create_and_update_ops, create_op, key};
use didmesh_tests::{poll, start_node, Node};
use std::path::Path;
use std::time::{Duration, Instant};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn urls(nodes: &[Node]) -> Vec<&str> {
    nodes.iter().map(|n| n.url.as_str()).collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Creates `n` DIDs of stream `seed` (one op each).
fn creates(seed: u8, n: u32) -> Vec<Operation> {
    (0..n).map(|i| create_op(&key(seed, i)).0).collect()
}

fn latency(nodes: &[Node], samples: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let http = rt.block_on(async { reqwest::Client::new() });
    let mut lat = vec![];
    for i in 0..samples {
        let (op, did) = create_op(&key(200, i as u32));
        let origin = &nodes[i % nodes.len()].url;
        let body = serde_json::to_value(&op).unwrap();
        let all: Vec<String> = nodes
            .iter()
            .map(|n| format!("{}/1.0/identifiers/{did}", n.url))
            .collect();
        let took = rt.block_on(async {
            let t0 = Instant::now();
            let r = http
                .post(format!("{origin}/v1/ops"))
                .json(&body)
                .send()
                .await
                .ok()?;
            if r.status().as_u16() != 201 {
                return None;
            }
            let waits = all.iter().map(|u| {
                let http = http.clone();
                async move {
                    let deadline = t0 + Duration::from_secs(10);
                    while Instant::now() < deadline {
                        if let Ok(r) = http.get(u).send().await {
                            if r.status().as_u16() == 200 {
                                return Some(t0.elapsed());
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    None
                }
            });
            let each = futures::future::join_all(waits).await;
            each.into_iter()
                .collect::<Option<Vec<_>>>()?
                .into_iter()
                .max()
        });
        match took {
            Some(d) => lat.push(d),
            None => println!("  sample {i}: not everywhere within 10 s"),
        }
    }
    lat.sort();
    println!(
        "1. propagation of one op to all {} nodes (POST start -> resolvable everywhere, {} samples, 1 ms polling):\n   p50 {}  p90 {}  p99 {}  max {}",
        nodes.len(),
        lat.len(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.9)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default()),
    );
}

/// CPU time (user + system) the process `pid` has used, from
/// `/proc/<pid>/stat` (clock ticks of 10 ms); zero where that is not
/// readable.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces), from field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn nodes_cpu(nodes: &[Node]) -> Duration {
    nodes.iter().map(|n| cpu_time(n.proc.child.id())).sum()
}

fn sustained(nodes: &[Node], n: usize, concurrency: usize) {
    let all = urls(nodes);
    let c = blocking_client();
    let base = digests(&c, all[0]).map(|d| d.2).unwrap_or(0);
    let ops = creates(201, n as u32);
    let cpu0 = nodes_cpu(nodes);
    let own0 = cpu_time(std::process::id());
    let t0 = Instant::now();
    let ok = post_ops(&all, &ops, concurrency);
    let written = t0.elapsed();
    let (_, held) = wait_converged(&all, Duration::from_secs(600)).unwrap();
    let replicated = t0.elapsed();
    assert_eq!(held as usize, base as usize + ok);
    println!(
        "2. sustained: {ok} creates POSTed over {} nodes (concurrency {concurrency}) in {:.2} s ({:.0} ops/s accepted);\n   all {} nodes held all of them after {:.2} s: {:.0} ops/s replicated to every node",
        nodes.len(),
        written.as_secs_f64(),
        ok as f64 / written.as_secs_f64(),
        nodes.len(),
        replicated.as_secs_f64(),
        ok as f64 / replicated.as_secs_f64(),
    );
    // CPU per op is what a throughput on a shared machine is made of, and
    // it is far less noisy than the rate: compare builds by it.
    let cpu = nodes_cpu(nodes).saturating_sub(cpu0);
    let own = cpu_time(std::process::id()).saturating_sub(own0);
    println!(
        "   CPU: the {} nodes used {:.2} s ({:.0} µs per op, {:.0} µs per op and node), this load generator {:.2} s",
        nodes.len(),
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / ok.max(1) as f64,
        cpu.as_secs_f64() * 1e6 / (ok.max(1) * nodes.len()) as f64,
        own.as_secs_f64(),
    );
}

fn divergence(
    dirs: &[std::path::PathBuf],
    nodes: &mut Vec<Node>,
    concurrency: usize,
    total: usize,
) {
    // Node 5 alone takes half of `total`; the others take as many others.
    let half = u32::try_from(total / 2).expect("DIVERGENCE fits in u32");
    let last = nodes.len() - 1;
    nodes.pop();
    let alone = start_node(&dirs[last], &["--no-p2p"]);
    let (a, b) = (creates(202, half), creates(203, half));
    let others: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let t = std::thread::spawn(move || {
        let refs: Vec<&str> = others.iter().map(String::as_str).collect();
        post_ops(&refs, &a, concurrency)
    });
    let ok_b = post_ops(&[&alone.url], &b, concurrency);
    let ok_a = t.join().unwrap();
    wait_converged(&urls(nodes), Duration::from_secs(1800)).unwrap();
    drop(alone);
    let seed = p2p_addr(&nodes[0]);
    let t0 = Instant::now();
    nodes.push(start_peer(&dirs[last], &[seed], &[]));
    let (_, held) = wait_converged(&urls(nodes), Duration::from_secs(1800)).unwrap();
    println!(
        "3. divergence: node 5 alone took {ok_b} ops while nodes 1-4 took {ok_a} others; after node 5 rejoined, all 5 agreed on {held} ops in {:.2} s (restart included)",
        t0.elapsed().as_secs_f64()
    );
}

fn reconcile_cost(dir: &Path, concurrency: usize) {
    let dirs = init_network(dir, 2);
    let nodes = start_cluster(&dirs, &[]);
    assert!(wait_peers(&urls(&nodes), 1, Duration::from_secs(20)));
    let (c, u) = create_and_update_ops(210, 5000);
    post_ops(&urls(&nodes), &c, concurrency);
    post_ops(&urls(&nodes), &u, concurrency);
    wait_converged(&urls(&nodes), Duration::from_secs(300)).unwrap();
    let a = nodes.into_iter().next().unwrap();
    let seed = p2p_addr(&a);
    println!("4. reconciliation cost, 2 nodes sharing 10,000 ops, node B missing d ops (B dials A and reconciles; A's own 2 s rounds count too; time includes B's start):");
    println!(
        "   {:>6} {:>16} {:>14} {:>14} {:>10}",
        "d", "reconcile bytes", "bytes per op", "fetch bytes", "time"
    );
    for (stream, d) in [0usize, 1, 10, 100, 1000, 10_000].into_iter().enumerate() {
        {
            // B is down while A takes d ops.
            let ops = creates(220 + stream as u8, d as u32);
            if d > 0 {
                assert_eq!(post_ops(&[&a.url], &ops, concurrency), d);
            }
        }
        let t0 = Instant::now();
        let b = start_peer(
            &dirs[1],
            std::slice::from_ref(&seed),
            &["--sync-interval-ms", "600000"],
        );
        wait_converged(&[&a.url, &b.url], Duration::from_secs(300)).unwrap();
        let took = t0.elapsed();
        // Let the sessions opened on connect finish (with d = 0 the digests
        // agree before any message is sent).
        poll(Duration::from_secs(10), Duration::from_millis(20), || {
            (metric(&b.url, "didmesh_p2p_sync_sessions_total").unwrap_or(0.0) >= 1.0).then_some(())
        });
        std::thread::sleep(Duration::from_millis(200));
        // B counts what it sent and received: with two nodes, all of it.
        let rec = metric(&b.url, "didmesh_p2p_sync_reconcile_bytes_total").unwrap_or(0.0);
        let fetch = metric(&b.url, "didmesh_p2p_sync_fetch_bytes_total").unwrap_or(0.0);
        let per = if d == 0 {
            "-".to_string()
        } else {
            format!("{:.1}", rec / d as f64)
        };
        println!(
            "   {d:>6} {rec:>16.0} {per:>14} {fetch:>14.0} {:>10}",
            format!("{:.2} s", took.as_secs_f64())
        );
        drop(b);
    }
}

fn main() {
    let samples = env_usize("LATENCY_SAMPLES", 300);
    let sustained_ops = env_usize("SUSTAINED_OPS", 20_000);
    let concurrency = env_usize("CONCURRENCY", 64);
    let tmp = tempfile::tempdir().unwrap();
    println!(
        "bench-replication: 5 didmesh-node processes on loopback, {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );

    let only = std::env::var("ONLY").unwrap_or_else(|_| "1234".into());
    let dirs = init_network(&tmp.path().join("five"), 5);
    let mut nodes = start_cluster(&dirs, &[]);
    assert!(
        wait_peers(&urls(&nodes), 4, Duration::from_secs(30)),
        "5 nodes did not all meet"
    );
    if only.contains('1') {
        latency(&nodes, samples);
    }
    if only.contains('2') {
        sustained(&nodes, sustained_ops, concurrency);
    }
    if only.contains('3') {
        divergence(
            &dirs,
            &mut nodes,
            concurrency,
            env_usize("DIVERGENCE", 10_000),
        );
    }
    drop(nodes);
    if only.contains('4') {
        reconcile_cost(&tmp.path().join("two"), concurrency);
    }
}
