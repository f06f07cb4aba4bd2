//! Clusters of real nodes on loopback: a network genesis for N founders
//! (`didmesh-node init-network`), nodes wired to each other with
//! `--bootstrap`, concurrent op submission, and polling for peers and
//! convergence.

use crate::http::{blocking_client, BlockingClient};
use crate::ops::{cid, create_op, key, update_op};
use crate::spawn::{node_admin, Node, NodeCommand};
use crate::{poll, start_node};
use did_core::{Cid, Operation};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Runs `didmesh-node init-network --nodes n --out out`; returns the data
/// folders `out/node1..n`.
pub fn init_network(out: &Path, n: usize) -> Vec<PathBuf> {
    let nodes = n.to_string();
    let args = [
        "init-network".as_ref(),
        "--nodes".as_ref(),
        nodes.as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ];
    let (ok, text) = node_admin(&args);
    assert!(ok, "init-network failed: {text}");
    (1..=n).map(|i| out.join(format!("node{i}"))).collect()
}

/// `GET /v1/status` (Null if the node does not answer).
pub fn status(c: &BlockingClient, url: &str) -> Value {
    c.status(url)
}

/// The node's first p2p listen address with its peer id (what another node
/// passes to `--bootstrap`).
pub fn p2p_addr(node: &Node) -> String {
    let c = blocking_client();
    poll(Duration::from_secs(10), Duration::from_millis(50), || {
        c.status(&node.url)["listen_addrs"][0]
            .as_str()
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("{} reports no p2p listen address", node.url))
}

/// Starts a node in `dir` that bootstraps from `peers`.
pub fn start_peer(dir: &Path, peers: &[String], extra: &[&str]) -> Node {
    NodeCommand::new(dir).bootstrap(peers).args(extra).start()
}

/// `(ledger_digest, state_digest, op_count)` of a node.
pub fn digests(c: &BlockingClient, url: &str) -> Option<(String, String, u64)> {
    let s = c.status(url);
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
    got.map(|n| (start.elapsed(), n)).ok_or_else(|| {
        // What each node saw of the others, for the failure message.
        let peers: Vec<String> = urls
            .iter()
            .map(|u| {
                let s = c.status(u);
                format!(
                    "{u}: {} peers, {} banned, catch-up {}",
                    s["peers"].as_array().map_or(0, Vec::len),
                    s["banned_peers"].as_array().map_or(0, Vec::len),
                    s["catch_up"]
                )
            })
            .collect();
        format!("no convergence within {within:?}: {last}; {peers:?}")
    })
}

/// Waits until every node has at least `n` connected peers.
pub fn wait_peers(urls: &[&str], n: usize, within: Duration) -> bool {
    let c = blocking_client();
    poll(within, Duration::from_millis(100), || {
        urls.iter()
            .all(|u| {
                c.status(u)["peers"]
                    .as_array()
                    .is_some_and(|p| p.len() >= n)
            })
            .then_some(())
    })
    .is_some()
}

/// The founders of a fresh `init-network`, running: node 1 alone, the
/// others bootstrapping from it. Killed on drop.
pub struct Cluster {
    /// The founders' data folders, `out/node1..n`.
    pub dirs: Vec<PathBuf>,
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// `init-network --nodes n --out out`, every founder started with
    /// `extra`, and each connected to all the others (Kademlia introduces
    /// the later ones to each other) within 60 s, or a panic.
    ///
    /// A cluster that does not form is reported on stderr with what each
    /// node saw and started once more, in a new network under `out`: in
    /// about one CI run of three in sessions 15 and 16, two fresh founders
    /// on loopback stayed unconnected for 60 s (both answering, neither
    /// with a peer; never reproduced outside CI, cause unknown). A second
    /// failure panics.
    pub fn start(out: &Path, n: usize, extra: &[&str]) -> Cluster {
        let within = Duration::from_secs(60);
        match Self::try_start(out, n, extra, within) {
            Ok(cluster) => cluster,
            Err(first) => {
                eprintln!("Cluster::start: starting again after {first}");
                Self::try_start(&out.join("again"), n, extra, within)
                    .unwrap_or_else(|second| panic!("{first}\nand again: {second}"))
            }
        }
    }

    fn try_start(
        out: &Path,
        n: usize,
        extra: &[&str],
        within: Duration,
    ) -> Result<Cluster, String> {
        let dirs = init_network(out, n);
        let nodes = start_cluster(&dirs, extra);
        let cluster = Cluster { dirs, nodes };
        if wait_peers(&cluster.urls(), n - 1, within) {
            return Ok(cluster);
        }
        // What each node saw, so a failure explains itself.
        let c = blocking_client();
        let seen: Vec<String> = cluster
            .urls()
            .iter()
            .map(|u| {
                let s = c.status(u);
                format!(
                    "{u}: peer {} listening on {} connected to {}",
                    s["peer_id"], s["listen_addrs"], s["peers"]
                )
            })
            .collect();
        Err(format!(
            "the {n} founders did not all connect to each other within {within:?}:\n{}",
            seen.join("\n")
        ))
    }

    pub fn urls(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.url.as_str()).collect()
    }

    /// Node `i`'s URL (0-based).
    pub fn url(&self, i: usize) -> &str {
        &self.nodes[i].url
    }

    /// Node 1's p2p address, to bootstrap another node from.
    pub fn seed(&self) -> String {
        p2p_addr(&self.nodes[0])
    }

    /// [`wait_converged`] over every node.
    pub fn wait_converged(&self, within: Duration) -> Result<(Duration, u64), String> {
        wait_converged(&self.urls(), within)
    }
}

/// Starts the nodes in `dirs`: the first alone, the others bootstrapping
/// from it.
pub fn start_cluster(dirs: &[PathBuf], extra: &[&str]) -> Vec<Node> {
    let Some((first, rest)) = dirs.split_first() else {
        return vec![];
    };
    let mut nodes = vec![start_node(first, extra)];
    let seed = p2p_addr(&nodes[0]);
    for d in rest {
        nodes.push(start_peer(d, std::slice::from_ref(&seed), extra));
    }
    nodes
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
        // Serialized before the first request: the load generator shares
        // the nodes' cores, and what it spends is not theirs to use.
        let bodies: Vec<(String, Vec<u8>)> = ops
            .iter()
            .enumerate()
            .map(|(i, op)| {
                (
                    format!("{}/v1/ops", urls[i % urls.len()]),
                    serde_json::to_vec(op).unwrap_or_default(),
                )
            })
            .collect();
        futures::stream::iter(bodies)
            .map(|(url, body)| {
                let client = client.clone();
                async move {
                    for _ in 0..50 {
                        let post = client
                            .post(&url)
                            .header(::reqwest::header::CONTENT_TYPE, "application/json")
                            .body(body.clone());
                        match post.send().await {
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

/// Creates DIDs of stream `seed` at `url` and updates each once, one op at
/// a time, until `stop` is set or the node stops acknowledging (it was
/// killed); each acknowledged op is passed to `acked` with its DID.
pub fn write_stream(url: &str, seed: u8, stop: &AtomicBool, mut acked: impl FnMut(&str, Cid)) {
    let c = blocking_client();
    let acknowledged = |op: &Operation| {
        c.try_submit(url, op)
            .is_ok_and(|a| a.status == 201)
            .then(|| cid(op))
    };
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let k = key(seed, i);
        let (create, did) = create_op(&k);
        let Some(genesis) = acknowledged(&create) else {
            return;
        };
        acked(&did, genesis);
        let update = update_op(&k, &did, genesis, &format!("at://s{seed}-u{i}.example"));
        let Some(head) = acknowledged(&update) else {
            return;
        };
        acked(&did, head);
    }
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
