//! Clusters of real nodes on loopback: a network genesis for N founders
//! (`didmesh-node init-network`), nodes wired to each other with
//! `--bootstrap`, op generation, concurrent submission, and polling for
//! convergence.

use crate::reqwest::{blocking_client, BlockingClient};
use crate::{bin, start_node, Node};
use did_core::keys::public_of;
use did_core::{Cid, DidState, Operation};
use ed25519_dalek::SigningKey;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs `didmesh-node init-network --nodes n --out out`; returns the data
/// folders `out/node1..n`.
pub fn init_network(out: &Path, n: usize) -> Vec<PathBuf> {
    let status = Command::new(bin("didmesh-node"))
        .arg("init-network")
        .arg("--nodes")
        .arg(n.to_string())
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("init-network: {e}"));
    assert!(status.success(), "init-network failed");
    (1..=n).map(|i| out.join(format!("node{i}"))).collect()
}

/// `GET /v1/status` (Null if the node does not answer).
pub fn status(c: &BlockingClient, url: &str) -> Value {
    c.get_json(&format!("{url}/v1/status"))
        .map(|a| a.body)
        .unwrap_or(Value::Null)
}

/// Polls `f` every `every` until it returns `Some`, for at most `within`.
pub fn poll<T>(within: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// The node's first p2p listen address with its peer id (what another node
/// passes to `--bootstrap`).
pub fn p2p_addr(node: &Node) -> String {
    let c = blocking_client();
    poll(Duration::from_secs(10), Duration::from_millis(50), || {
        status(&c, &node.url)["listen_addrs"][0]
            .as_str()
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("{} reports no p2p listen address", node.url))
}

/// Starts a node in `dir` that bootstraps from `peers`.
pub fn start_peer(dir: &Path, peers: &[String], extra: &[&str]) -> Node {
    let mut args: Vec<&str> = vec![];
    for p in peers {
        args.push("--bootstrap");
        args.push(p);
    }
    args.extend_from_slice(extra);
    start_node(dir, &args)
}

/// Starts the founders in `dirs`: the first alone, the others
/// bootstrapping from it.
pub fn start_cluster(dirs: &[PathBuf], extra: &[&str]) -> Vec<Node> {
    let mut nodes = vec![];
    let Some(first) = dirs.first() else {
        return nodes;
    };
    nodes.push(start_node(first, extra));
    let seed = p2p_addr(&nodes[0]);
    for d in &dirs[1..] {
        nodes.push(start_peer(d, std::slice::from_ref(&seed), extra));
    }
    nodes
}

/// `(ledger_digest, state_digest, op_count)` of a node.
pub fn digests(c: &BlockingClient, url: &str) -> Option<(String, String, u64)> {
    let s = status(c, url);
    Some((
        s["ledger_digest"].as_str()?.to_string(),
        s["state_digest"].as_str()?.to_string(),
        s["op_count"].as_u64()?,
    ))
}

/// Waits until every node reports the same digests; returns how long it
/// took and the common op count, or a description of the last disagreement.
pub fn wait_converged(urls: &[&str], within: Duration) -> Result<(Duration, u64), String> {
    let c = blocking_client();
    let start = Instant::now();
    let mut last = String::new();
    let got = poll(within, Duration::from_millis(50), || {
        let all: Vec<_> = urls.iter().map(|u| digests(&c, u)).collect();
        last = format!("{all:?}");
        let first = all.first()?.clone()?;
        all.iter()
            .all(|d| d.as_ref() == Some(&first))
            .then_some(first.2)
    });
    got.map(|n| (start.elapsed(), n))
        .ok_or_else(|| format!("no convergence within {within:?}: {last}"))
}

/// Waits until every node has at least `n` connected peers.
pub fn wait_peers(urls: &[&str], n: usize, within: Duration) -> bool {
    let c = blocking_client();
    poll(within, Duration::from_millis(100), || {
        urls.iter()
            .all(|u| {
                status(&c, u)["peers"]
                    .as_array()
                    .is_some_and(|p| p.len() >= n)
            })
            .then_some(())
    })
    .is_some()
}

/// A deterministic key for DID number `i` of stream `seed`.
pub fn key(seed: u8, i: u32) -> SigningKey {
    let mut s = [seed; 32];
    s[..4].copy_from_slice(&i.to_le_bytes());
    SigningKey::from_bytes(&s)
}

/// A signed `create` for `key`, with its DID.
pub fn create_op(key: &SigningKey) -> (Operation, String) {
    let op = Operation::create(DidState::single_key(public_of(key)), now(), key)
        .unwrap_or_else(|e| panic!("{e}"));
    let did = did_core::op::did_from_genesis(&cid(&op));
    (op, did)
}

/// A signed `update` of `did` on `prev`, adding an alias.
pub fn update_op(key: &SigningKey, did: &str, prev: Cid, alias: &str) -> Operation {
    let mut state = DidState::single_key(public_of(key));
    state.also_known_as.push(alias.to_string());
    Operation::update(did, prev, state, now(), key).unwrap_or_else(|e| panic!("{e}"))
}

pub fn cid(op: &Operation) -> Cid {
    op.cid().unwrap_or_else(|e| panic!("{e}"))
}

/// `count` creates then one update each (2 * count ops) for stream `seed`.
pub fn create_and_update_ops(seed: u8, count: u32) -> (Vec<Operation>, Vec<Operation>) {
    let mut creates = vec![];
    let mut updates = vec![];
    for i in 0..count {
        let k = key(seed, i);
        let (c, did) = create_op(&k);
        updates.push(update_op(
            &k,
            &did,
            cid(&c),
            &format!("at://s{seed}-u{i}.example"),
        ));
        creates.push(c);
    }
    (creates, updates)
}

/// POSTs ops to `/v1/ops`, `concurrency` at a time, spreading them over
/// `urls` round-robin. Returns how many were acknowledged (200/201).
/// Transient 503s (writer queue full) are retried.
pub fn post_ops(urls: &[&str], ops: &[Operation], concurrency: usize) -> usize {
    use futures::StreamExt;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.block_on(async {
        let client = ::reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let bodies: Vec<(String, Value)> = ops
            .iter()
            .enumerate()
            .map(|(i, op)| {
                (
                    format!("{}/v1/ops", urls[i % urls.len()]),
                    serde_json::to_value(op).unwrap_or_default(),
                )
            })
            .collect();
        futures::stream::iter(bodies)
            .map(|(url, body)| {
                let client = client.clone();
                async move {
                    for _ in 0..50 {
                        match client.post(&url).json(&body).send().await {
                            Ok(r) if r.status().is_success() => return true,
                            Ok(r) if r.status().as_u16() == 503 => {}
                            Ok(_) => return false,
                            Err(_) => {}
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    false
                }
            })
            .buffer_unordered(concurrency)
            .filter(|ok| futures::future::ready(*ok))
            .count()
            .await
    })
}

/// Reads a counter from `/metrics`.
pub fn metric(url: &str, name: &str) -> Option<f64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let text = rt.block_on(async {
        ::reqwest::get(format!("{url}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()
    })?;
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}
