//! Replication between real nodes on loopback: gossip push, anti-entropy
//! pull, discovery, a crash in the middle of a write stream, and a fresh
//! node joining a cluster that already holds 10,000 ops.
//!
//! Each test starts its own cluster (`didmesh-node init-network`, the first
//! node alone, the others `--bootstrap` from it) and kills it on drop.

use did_core::keys::public_of;
use did_core::{DidState, Operation};
use didmesh_tests::cluster::{
    cid, create_and_update_ops, create_op, digests, init_network, key, now, p2p_addr, poll,
    post_ops, start_cluster, start_peer, status, update_op, wait_converged, wait_peers,
};
use didmesh_tests::reqwest::blocking_client;
use didmesh_tests::Node;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn urls(nodes: &[Node]) -> Vec<&str> {
    nodes.iter().map(|n| n.url.as_str()).collect()
}

fn post(url: &str, op: &Operation) -> u16 {
    let c = blocking_client();
    c.post_json(&format!("{url}/v1/ops"), &serde_json::to_value(op).unwrap())
        .unwrap()
        .status
}

#[test]
fn three_nodes_replicate_and_converge() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = init_network(tmp.path(), 3);
    let nodes = start_cluster(&dirs, &[]);
    let all = urls(&nodes);
    // Nodes 2 and 3 only know node 1; Kademlia introduces them.
    assert!(
        wait_peers(&all, 2, Duration::from_secs(20)),
        "every node should find both others"
    );

    // Push: a DID created at node 1 resolves at node 3.
    let k = key(7, 0);
    let (op, did) = create_op(&k);
    let started = Instant::now();
    assert_eq!(post(&nodes[0].url, &op), 201);
    let c = blocking_client();
    let resolved = poll(Duration::from_secs(10), Duration::from_millis(10), || {
        let a = c
            .get_json(&format!("{}/1.0/identifiers/{did}", nodes[2].url))
            .ok()?;
        (a.status == 200).then_some(started.elapsed())
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
    // The fork resolves the same way everywhere.
    let heads: Vec<_> = all
        .iter()
        .map(|u| {
            c.get_json(&format!("{u}/1.0/identifiers/{did}"))
                .unwrap()
                .body["didDocumentMetadata"]
                .clone()
        })
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

/// Writers create DIDs and update them against `url` until `stop`.
fn write_stream(url: String, stop: Arc<AtomicBool>, acked: Arc<AtomicUsize>, seed: u8) {
    let c = blocking_client();
    let mut i = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let k = key(seed, i);
        i += 1;
        let (create, did) = create_op(&k);
        let Ok(a) = c.post_json(
            &format!("{url}/v1/ops"),
            &serde_json::to_value(&create).unwrap(),
        ) else {
            return;
        };
        if a.status != 201 {
            return;
        }
        let up = update_op(&k, &did, cid(&create), "at://crash.example");
        let Ok(a) = c.post_json(
            &format!("{url}/v1/ops"),
            &serde_json::to_value(&up).unwrap(),
        ) else {
            return;
        };
        if a.status != 201 {
            return;
        }
        acked.fetch_add(2, Ordering::Relaxed);
    }
}

#[test]
fn killed_node_restarts_verifies_and_catches_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = init_network(tmp.path(), 3);
    let mut nodes = start_cluster(&dirs, &[]);
    let seed = p2p_addr(&nodes[0]);
    assert!(wait_peers(&urls(&nodes), 2, Duration::from_secs(20)));

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..4u8)
        .map(|w| {
            let (url, stop, acked) = (nodes[0].url.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || write_stream(url, stop, acked, 20 + w))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    // SIGKILL node 2 while it is receiving and writing the stream.
    nodes[1].proc.kill9();
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
    nodes[1] = start_peer(&dirs[1], std::slice::from_ref(&seed), &[]);
    let c = blocking_client();
    let after = status(&c, &nodes[1].url);
    let (took, ops) = wait_converged(&urls(&nodes), Duration::from_secs(60)).unwrap();
    let end = status(&c, &nodes[1].url);
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
    let dirs = init_network(tmp.path(), 2);
    let nodes = start_cluster(&dirs, &[]);
    let all = urls(&nodes);
    assert!(wait_peers(&all, 1, Duration::from_secs(20)));

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
    let genesis = dirs[0].join("genesis.json");
    let t = Instant::now();
    let joiner = start_peer(
        &fresh,
        &[p2p_addr(&nodes[0])],
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
    assert!(wait_peers(&[&n1.url, &n2.url], 1, Duration::from_secs(20)));
    let k = ed25519_dalek::SigningKey::from_bytes(&[77; 32]);
    let op = Operation::create(DidState::single_key(public_of(&k)), now(), &k).unwrap();
    assert_eq!(post(&n2.url, &op), 201);
    wait_converged(&[&n1.url, &n2.url], Duration::from_secs(15)).unwrap();
}

/// Any member node logs a user in, and an application trusting another
/// node's JWKS accepts the token: a DID created at node 1, a login at node
/// 2, home-api pointed at node 3's JWKS.
#[test]
fn login_at_node_2_is_accepted_by_home_api_on_node_3s_jwks() {
    use did_core::keys::sign_b64;
    let tmp = tempfile::tempdir().unwrap();
    let dirs = init_network(tmp.path(), 3);
    let nodes = start_cluster(&dirs, &[]);
    assert!(wait_peers(&urls(&nodes), 2, Duration::from_secs(20)));
    let k = key(9, 0);
    let (op, did) = create_op(&k);
    assert_eq!(post(&nodes[0].url, &op), 201);
    let c = blocking_client();
    let at_node2 = poll(Duration::from_secs(10), Duration::from_millis(20), || {
        let a = c
            .get_json(&format!("{}/1.0/identifiers/{did}", nodes[1].url))
            .ok()?;
        (a.status == 200).then_some(())
    });
    assert!(at_node2.is_some(), "the DID should reach node 2");

    let ch = c
        .post_json(
            &format!("{}/v1/auth/challenge", nodes[1].url),
            &serde_json::json!({"did": did}),
        )
        .unwrap();
    assert_eq!(ch.status, 200, "{}", ch.body);
    let message = ch.body["message"].as_str().unwrap();
    let body = serde_json::json!({"did": did, "nonce": ch.body["nonce"], "signature": sign_b64(&k, message.as_bytes())});
    let tok = c
        .post_json(&format!("{}/v1/auth/token", nodes[1].url), &body)
        .unwrap();
    assert_eq!(tok.status, 200, "{}", tok.body);
    let token = tok.body["access_token"].as_str().unwrap().to_string();

    let port = didmesh_tests::free_port();
    let child = std::process::Command::new(didmesh_tests::bin("home-api"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--jwks-url",
            &format!("{}/.well-known/jwks.json", nodes[2].url),
        ])
        .args([
            "--issuer",
            "https://didmesh.local",
            "--audience",
            "home-api",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _app = didmesh_tests::Proc {
        child,
        name: "home-api".into(),
    };
    let app = format!("http://127.0.0.1:{port}");
    didmesh_tests::wait_healthy(&app, Duration::from_secs(10));
    let a = c
        .get_bearer(&format!("{app}/api/activities/home"), &token)
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["user"], did.as_str());
    let forged = format!("{}x", token);
    assert_eq!(
        c.get_bearer(&format!("{app}/api/activities/home"), &forged)
            .unwrap()
            .status,
        401
    );
}
