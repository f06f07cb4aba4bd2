//! Replication between real nodes on loopback: gossip push, anti-entropy
//! pull, discovery, a crash in the middle of a write stream, and a fresh
//! node joining a cluster that already holds 10,000 ops.
//!
//! Each test starts its own cluster (`didmesh-node init-network`, the first
//! node alone, the others `--bootstrap` from it) and kills it on drop.

use didmesh_tests::cluster::{
    digests, metric, p2p_addr, post_ops, start_peer, status, wait_converged, wait_peers,
    write_stream, Cluster,
};
use didmesh_tests::http::blocking_client;
use didmesh_tests::ops::{cid, create_and_update_ops, create_op, key, update_op};
use didmesh_tests::{poll, HomeApi};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn post(url: &str, op: &did_core::Operation) -> u16 {
    blocking_client().submit(url, op).status
}

#[test]
fn three_nodes_replicate_and_converge() {
    let tmp = tempfile::tempdir().unwrap();
    // Nodes 2 and 3 only know node 1; Kademlia introduces them.
    let cluster = Cluster::start(tmp.path(), 3, &[]);
    let (nodes, all) = (&cluster.nodes, cluster.urls());

    // Push: a DID created at node 1 resolves at node 3.
    let k = key(7, 0);
    let (op, did) = create_op(&k);
    let started = Instant::now();
    assert_eq!(post(&nodes[0].url, &op), 201);
    let c = blocking_client();
    let resolved = poll(Duration::from_secs(10), Duration::from_millis(10), || {
        (c.resolve(&nodes[2].url, &did).status == 200).then_some(started.elapsed())
    });
    let latency = resolved.expect("the DID created at node 1 should resolve at node 3 within 10 s");
    println!("node 1 -> node 3: resolvable after {latency:?}");

    // Ops written at nodes 2 and 3 at the same time, including a fork: two
    // conflicting updates of one DID on the same prev, one per node.
    let (c2, u2) = create_and_update_ops(2, 60);
    let (c3, u3) = create_and_update_ops(3, 60);
    let fork_a = update_op(&k, &did, cid(&op), "at://fork-a.example");
    let fork_b = update_op(&k, &did, cid(&op), "at://fork-b.example");
    let (n2, n3) = (nodes[1].url.clone(), nodes[2].url.clone());
    let w2 = std::thread::spawn(move || {
        let ok = post_ops(&[&n2], &c2, 16) + post_ops(&[&n2], &u2, 16);
        ok + usize::from(post(&n2, &fork_a) == 201)
    });
    let w3 = std::thread::spawn(move || {
        let ok = post_ops(&[&n3], &c3, 16) + post_ops(&[&n3], &u3, 16);
        ok + usize::from(post(&n3, &fork_b) == 201)
    });
    let written = w2.join().unwrap() + w3.join().unwrap();
    assert!(written >= 241, "acknowledged {written} of 242 ops");

    let (took, ops) = wait_converged(&all, Duration::from_secs(30)).unwrap();
    println!("3 nodes converged on {ops} ops {took:?} after the last write");
    assert_eq!(ops, 1 + 240 + 2);
    // Gossip carried node 2's burst in bundles: each op published once,
    // several to a message (a commit round, or what waited for the pace).
    let published = |name| metric(&nodes[1].url, name).unwrap_or(0.0);
    let (bundles, sent) = (
        published("didmesh_p2p_published_total"),
        published("didmesh_p2p_published_ops_total"),
    );
    println!("node 2 published {sent} ops in {bundles} gossip messages");
    assert!(
        (120.0..=121.0).contains(&sent),
        "node 2 published {sent} ops"
    );
    assert!(bundles < sent / 2.0, "{sent} ops in {bundles} messages");
    // The fork resolves the same way everywhere.
    let heads: Vec<_> = all
        .iter()
        .map(|u| c.resolve(u, &did).body["didDocumentMetadata"].clone())
        .collect();
    assert!(heads.iter().all(|h| *h == heads[0]), "{heads:?}");
    let s = status(&c, &nodes[0].url);
    assert_eq!(s["peers"].as_array().map(Vec::len), Some(2), "{s}");
    assert!(
        s["peer_id"]
            .as_str()
            .is_some_and(|p| p.starts_with("12D3Koo")),
        "{s}"
    );
}

#[test]
fn killed_node_restarts_verifies_and_catches_up() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(tmp.path(), 3, &[]);
    let seed = cluster.seed();

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..4u8)
        .map(|w| {
            let (url, stop, acked) = (cluster.url(0).to_string(), stop.clone(), acked.clone());
            std::thread::spawn(move || {
                write_stream(&url, 20 + w, &stop, |_, _| {
                    acked.fetch_add(1, Ordering::Relaxed);
                })
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    // SIGKILL node 2 while it is receiving and writing the stream.
    cluster.nodes[1].kill9();
    let at_kill = acked.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let total = acked.load(Ordering::Relaxed);
    assert!(
        total > at_kill,
        "writes continued after the kill ({at_kill} -> {total})"
    );

    // Restart on the same data folder: the log is verified on start (the
    // node refuses to start otherwise), then it catches up.
    let restarted = Instant::now();
    cluster.nodes[1] = start_peer(&cluster.dirs[1], std::slice::from_ref(&seed), &[]);
    let c = blocking_client();
    let after = status(&c, cluster.url(1));
    let (took, ops) = cluster.wait_converged(Duration::from_secs(60)).unwrap();
    let end = status(&c, cluster.url(1));
    assert_eq!(end["log_entries"], end["op_count"], "{end}");
    println!(
        "{total} ops acknowledged ({at_kill} before the SIGKILL); node 2 restarted with {} ops and caught up to {ops} in {:?} (converged {took:?} after the restart began)",
        after["op_count"],
        restarted.elapsed(),
    );
    assert!(ops as usize >= total);
}

#[test]
fn fresh_node_joins_a_cluster_of_10000_ops() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(tmp.path(), 2, &[]);
    let (nodes, all) = (&cluster.nodes, cluster.urls());

    let (creates, updates) = create_and_update_ops(50, 5000);
    let t = Instant::now();
    let ok = post_ops(&all, &creates, 64) + post_ops(&all, &updates, 64);
    assert_eq!(ok, 10_000);
    println!(
        "10,000 ops written over HTTP (concurrency 64, 2 nodes) in {:?}",
        t.elapsed()
    );
    let (took, ops) = wait_converged(&all, Duration::from_secs(120)).unwrap();
    assert_eq!(ops, 10_000);
    println!("the 2 founders converged {took:?} after the last write");

    // A fresh node: empty data folder, the genesis file, one bootstrap peer.
    let fresh = tmp.path().join("fresh");
    let genesis = cluster.dirs[0].join("genesis.json");
    let t = Instant::now();
    let joiner = start_peer(
        &fresh,
        &[cluster.seed()],
        &["--genesis", genesis.to_str().unwrap()],
    );
    let (_, ops) = wait_converged(&[&nodes[0].url, &joiner.url], Duration::from_secs(180)).unwrap();
    let elapsed = t.elapsed();
    assert_eq!(ops, 10_000);
    println!("a fresh node caught up with 10,000 ops in {elapsed:?} (start included)");
    let c = blocking_client();
    let s = status(&c, &joiner.url);
    assert_eq!(s["member"], false, "{s}");
    assert_eq!(digests(&c, &joiner.url), digests(&c, &nodes[1].url));
}

#[test]
fn a_dev_network_shared_by_genesis_file_replicates() {
    // The simplest setup: node 1 makes a development network; the others
    // join with its genesis file.
    let tmp = tempfile::tempdir().unwrap();
    let d1 = tmp.path().join("n1");
    let n1 = didmesh_tests::start_node(&d1, &[]);
    let genesis = d1.join("genesis.json");
    let seed = p2p_addr(&n1);
    let n2 = start_peer(
        &tmp.path().join("n2"),
        std::slice::from_ref(&seed),
        &["--genesis", genesis.to_str().unwrap()],
    );
    assert!(wait_peers(&[&n1.url, &n2.url], 1, Duration::from_secs(45)));
    assert_eq!(post(&n2.url, &create_op(&key(77, 0)).0), 201);
    wait_converged(&[&n1.url, &n2.url], Duration::from_secs(15)).unwrap();
}

/// Any member node logs a user in, and an application trusting another
/// node's JWKS accepts the token: a DID created at node 1, a login at node
/// 2, home-api pointed at node 3's JWKS.
#[test]
fn login_at_node_2_is_accepted_by_home_api_on_node_3s_jwks() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(tmp.path(), 3, &[]);
    let k = key(9, 0);
    let (op, did) = create_op(&k);
    assert_eq!(post(cluster.url(0), &op), 201);
    let c = blocking_client();
    let at_node2 = poll(Duration::from_secs(10), Duration::from_millis(20), || {
        (c.resolve(cluster.url(1), &did).status == 200).then_some(())
    });
    assert!(at_node2.is_some(), "the DID should reach node 2");

    // Through the client library, as `didmesh login` does.
    let token = c.login(cluster.url(1), &did, &k).unwrap();
    let app = HomeApi::start(&format!("{}/.well-known/jwks.json", cluster.url(2)));
    let (status, body) = app.home(Some(&token));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], did.as_str());
    let forged = format!("{token}x");
    assert_eq!(app.home(Some(&forged)).0, 401);
}
