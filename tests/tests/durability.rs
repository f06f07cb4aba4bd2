//! Durability: an op is acknowledged only once it is flushed. A node killed
//! with SIGKILL in the middle of a stream of writes must, after restart,
//! hold every acknowledged op; its log is verified on start, and a tampered
//! data folder is refused with a clear message.

use didmesh_tests::cluster::write_stream;
use didmesh_tests::http::blocking_client;
use didmesh_tests::ops::{create_op, key};
use didmesh_tests::{start_node, NodeCommand};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A node in `dir` that acknowledges five creates of stream `seed`, then
/// is killed.
fn node_with_five_ops(dir: &Path, seed: u8) {
    let node = start_node(dir, &[]);
    let c = blocking_client();
    for i in 0..5 {
        let a = c.submit(&node.url, &create_op(&key(seed, i)).0);
        assert_eq!(a.status, 201, "{}", a.body);
    }
} // SIGKILL on drop

/// The op log tree of the (stopped) node in `dir`, and its database to flush.
fn oplog(dir: &Path) -> (sled::Db, sled::Tree) {
    let db = sled::open(dir.join("ledger.sled")).unwrap();
    let log = db.open_tree("oplog").unwrap();
    (db, log)
}

/// Starts a node on `dir` that must refuse to start; its stderr.
fn refused_start(dir: &Path) -> String {
    let out = NodeCommand::new(dir)
        .command()
        .output()
        .unwrap_or_else(|e| panic!("didmesh-node: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the node started: {stderr}");
    assert!(stderr.contains("refusing to start"), "{stderr}");
    stderr
}

#[test]
fn sigkill_loses_no_acknowledged_op() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_node(dir.path(), &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(vec![]));
    let writers: Vec<_> = (0..4u8)
        .map(|w| {
            let (url, stop, acked) = (node.url.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || {
                write_stream(&url, w + 1, &stop, |did, cid| {
                    acked
                        .lock()
                        .unwrap()
                        .push((did.to_string(), cid.to_string()))
                })
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    node.proc.kill9(); // while writes are in flight
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "too few writes before the kill: {}",
        acked.len()
    );

    let node = start_node(dir.path(), &[]);
    let c = blocking_client();
    let status = c.status(&node.url);
    let held = status["op_count"].as_u64().unwrap() as usize;
    assert!(
        held >= acked.len(),
        "node holds {held} ops, {} were acknowledged",
        acked.len()
    );
    let mut missing = 0;
    for (did, cid) in &acked {
        let log = c
            .get_json(&format!("{}/v1/dids/{did}/log", node.url))
            .unwrap();
        let found = log.body["ops"]
            .as_array()
            .is_some_and(|ops| ops.iter().any(|o| o["cid"] == cid.as_str()));
        missing += usize::from(!found);
    }
    println!("acknowledged {} ops before SIGKILL; after restart the node holds {held}; missing {missing}", acked.len());
    assert_eq!(missing, 0);
}

#[test]
fn tampered_data_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    node_with_five_ops(dir.path(), 40);
    {
        // Alter one op inside the log, keeping sled itself consistent:
        // an attacker with write access to the folder.
        let (db, log) = oplog(dir.path());
        let (k, v) = log.scan_prefix(b"L").nth(2).unwrap().unwrap();
        let mut v = v.to_vec();
        let at = v.windows(4).position(|w| w == b"z6Mk").unwrap() + 10;
        v[at] = if v[at] == b'A' { b'B' } else { b'A' };
        log.insert(k, v).unwrap();
        db.flush().unwrap();
    }
    let stderr = refused_start(dir.path());
    assert!(
        stderr.contains("failed verification at log entry 2"),
        "{stderr}"
    );
}

/// The encoding vectors (non-ASCII service endpoint, a co-signed membership
/// op) go through a node and survive its restart: what the writer stores is
/// exactly what replay re-derives the CID from. (Found while protocol v2 was
/// being written: a node whose storage named ops differently from the
/// ledger refused to restart after one such op.)
#[test]
fn vector_ops_survive_a_restart_with_their_cids() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = didmesh_tests::cluster::init_network(&tmp.path().join("net"), 1);
    let vectors: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../did-core/tests/vectors.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let c = blocking_client();
    let mut node = start_node(&dirs[0], &["--no-p2p"]);
    let mut held = 0;
    for v in vectors["vectors"].as_array().unwrap() {
        if v["op"]["type"] == "member-add" {
            continue; // another network's membership op
        }
        let a = c
            .post_json(&format!("{}/v1/ops", node.url), &v["op"])
            .unwrap();
        assert_eq!(a.status, 201, "{}", a.body);
        assert_eq!(a.body["cid"], v["cid"]);
        held += 1;
    }
    let before = c.status(&node.url);
    node.proc.kill9();
    let node = start_node(&dirs[0], &["--no-p2p"]);
    let after = c.status(&node.url);
    assert_eq!(after["log_entries"], held);
    assert_eq!(after["ledger_digest"], before["ledger_digest"]);
    assert_eq!(after["state_digest"], before["state_digest"]);
}

/// sled can come back shorter without an error (a `db` file cut short with
/// no snapshot is recovered as an older log). Simulated here by dropping the
/// last two entries and rewriting the head record consistently: the node
/// must refuse, because it acknowledged those ops.
#[test]
fn a_log_shorter_than_what_was_acknowledged_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    node_with_five_ops(dir.path(), 60);
    {
        let (db, log) = oplog(dir.path());
        let entries: Vec<_> = log.scan_prefix(b"L").map(|e| e.unwrap()).collect();
        assert_eq!(entries.len(), 5);
        for (k, _) in &entries[3..] {
            log.remove(k).unwrap();
        }
        // head = count 3 and the chain hash after entry 2 (entry 3's "prev")
        let mut head = 3u64.to_be_bytes().to_vec();
        head.extend_from_slice(&entries[3].1[..32]);
        log.insert(b"H", head).unwrap();
        db.flush().unwrap();
    }
    let stderr = refused_start(dir.path());
    assert!(stderr.contains("acknowledged 5"), "{stderr}");
}
