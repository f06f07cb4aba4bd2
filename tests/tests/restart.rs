//! Restarts (issue 12, items 2 and 4): a node answers from the first
//! moment of its start (`/healthz` 503 with progress, `/v1/status` with
//! `"starting": true`, other routes 503 `{"error":"starting"}`), then
//! serves the same ledger as before; a clean stop writes a checkpoint that
//! the next start loads; a tampered checkpoint is refused.

use didmesh_tests::cluster::post_ops;
use didmesh_tests::http::blocking_client;
use didmesh_tests::ops::{create_op, key};
use didmesh_tests::{start_node, Node, NodeCommand};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// `n` creates of stream `seed`, posted 8 at a time.
/// Posts `n` creates; returns their DIDs. (A create's DID depends on its
/// `created_at`, so a DID is taken from the op that was posted, never from
/// a second `create_op` call, which may land in the next second.)
fn fill(node: &Node, seed: u8, n: u32) -> Vec<String> {
    let (ops, dids): (Vec<_>, Vec<_>) = (0..n).map(|i| create_op(&key(seed, i))).unzip();
    let acked = post_ops(&[node.url.as_str()], &ops, 8);
    assert_eq!(acked, n as usize);
    dids
}

/// The fields of `/v1/status` that name the ledger.
fn ledger_of(status: &Value) -> (Value, Value, Value, Value) {
    (
        status["op_count"].clone(),
        status["ledger_digest"].clone(),
        status["state_digest"].clone(),
        status["log_head"].clone(),
    )
}

/// SIGTERM (a clean stop) and wait for the exit.
fn sigterm(node: &mut Node) {
    let pid = node.proc.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = node.proc.child.try_wait() {
            assert!(status.success(), "the node exited with {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the node did not stop within 30 s of SIGTERM");
}

/// What polling a starting node saw.
struct Watched {
    /// `/healthz` answers before the first 200: (status, body).
    starting: Vec<(u16, Value)>,
    /// A `/v1/status` and a `/v1/dids/...` answer while starting, if any.
    status_while_starting: Option<Value>,
    other_while_starting: Option<(u16, Value)>,
    /// From spawn to the first HTTP answer, and to the first 200.
    first_answer: Duration,
    ready: Duration,
}

/// Spawns a node on `dir` and polls it from the first moment until
/// `/healthz` answers 200.
fn watch_start(dir: &Path, args: &[&str]) -> (Node, Watched) {
    let c = blocking_client();
    let spawned = Instant::now();
    let node = NodeCommand::new(dir).args(args).spawn();
    let mut w = Watched {
        starting: vec![],
        status_while_starting: None,
        other_while_starting: None,
        first_answer: Duration::ZERO,
        ready: Duration::ZERO,
    };
    let health = format!("{}/healthz", node.url);
    loop {
        assert!(
            spawned.elapsed() < Duration::from_secs(60),
            "not ready within 60 s"
        );
        let Ok(a) = c.get_json(&health) else {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        };
        if w.first_answer.is_zero() {
            w.first_answer = spawned.elapsed();
        }
        if a.status == 200 {
            w.ready = spawned.elapsed();
            return (node, w);
        }
        w.starting.push((a.status, a.body));
        if w.status_while_starting.is_none() {
            if let Ok(s) = c.get_json(&format!("{}/v1/status", node.url)) {
                if s.body["starting"] == true {
                    w.status_while_starting = Some(s.body);
                }
            }
        }
        if w.other_while_starting.is_none() {
            if let Ok(s) = c.get_json(&format!("{}/v1/network", node.url)) {
                if s.status == 503 {
                    w.other_while_starting = Some((s.status, s.body));
                }
            }
        }
    }
}

/// A node restarted without a checkpoint (killed, `--checkpoint-every 0`)
/// replays its whole log: meanwhile it answers `/healthz` 503 with the
/// progress and `/v1/status` with `"starting": true`, then 200 and the
/// same ledger as before.
#[test]
fn a_restarting_node_answers_from_the_first_moment_and_keeps_its_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--no-p2p", "--checkpoint-every", "0"];
    let mut node = start_node(dir.path(), &args);
    fill(&node, 90, 4000);
    let c = blocking_client();
    let before = c.status(&node.url);
    node.kill9(); // no checkpoint at a crash

    let (node, w) = watch_start(dir.path(), &args);
    println!(
        "first answer after {:?}, ready after {:?}, {} starting answers",
        w.first_answer,
        w.ready,
        w.starting.len()
    );
    assert!(
        !w.starting.is_empty(),
        "never saw the node starting (ready after {:?})",
        w.ready
    );
    for (status, body) in &w.starting {
        assert_eq!(*status, 503, "{body}");
        assert_eq!(body["status"], "starting", "{body}");
        let p = &body["progress"];
        assert!(p["ops_loaded"].as_u64().is_some(), "{body}");
        assert!(
            p["ops_loaded"].as_u64() <= p["ops_total"].as_u64(),
            "{body}"
        );
        assert!(p["phase"].as_str().is_some(), "{body}");
    }
    // Once the database is open, the progress counts the log's entries.
    assert!(
        w.starting
            .iter()
            .any(|(_, b)| b["progress"]["ops_total"] == before["log_entries"]),
        "no progress over the {} log entries: {:?}",
        before["log_entries"],
        w.starting.last()
    );
    if let Some(s) = &w.status_while_starting {
        assert!(s["progress"]["ops_total"].as_u64().is_some(), "{s}");
    }
    if let Some((status, body)) = &w.other_while_starting {
        assert_eq!(*status, 503);
        assert_eq!(body["error"], "starting", "{body}");
        assert!(body["reason"].as_str().is_some(), "{body}");
    }
    let after = c.status(&node.url);
    assert_eq!(ledger_of(&after), ledger_of(&before));
    assert!(after["op_count"].as_u64().unwrap() >= 4000, "{after}");
}

/// A clean stop (SIGTERM) writes a checkpoint; the next start loads it and
/// serves the same ledger; ops added after a checkpoint (periodic, then a
/// crash) are replayed on top of it.
#[test]
fn a_checkpoint_restores_the_same_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--no-p2p", "--checkpoint-every", "500"];
    let mut node = start_node(dir.path(), &args);
    fill(&node, 91, 1200);
    let c = blocking_client();
    let checkpoint = dir.path().join("checkpoint");
    // The periodic checkpoint (every 500 ops; the thread looks each second).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !checkpoint.exists() {
        assert!(Instant::now() < deadline, "no periodic checkpoint written");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    fill(&node, 92, 200); // after the checkpoint
    let before = c.status(&node.url);
    node.kill9(); // the tail after the checkpoint is replayed
    let mut node = start_node(dir.path(), &args);
    assert_eq!(ledger_of(&c.status(&node.url)), ledger_of(&before));

    let dids = fill(&node, 93, 100);
    let before = c.status(&node.url);
    let stamp = std::fs::metadata(&checkpoint).unwrap().modified().unwrap();
    let did = dids[7].clone();
    let resolved = c.resolve(&node.url, &did);
    assert_eq!(resolved.status, 200, "{}", resolved.body);
    sigterm(&mut node);
    assert!(
        std::fs::metadata(&checkpoint).unwrap().modified().unwrap() > stamp,
        "no checkpoint at the clean stop"
    );
    let node = start_node(dir.path(), &args);
    assert_eq!(ledger_of(&c.status(&node.url)), ledger_of(&before));
    let again = c.resolve(&node.url, &did);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body, resolved.body);
}

/// A checkpoint with one bit flipped is refused with a message that says
/// what to do; without it the node rebuilds the same ledger from its log.
#[test]
fn a_tampered_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--no-p2p"];
    let mut node = start_node(dir.path(), &args);
    fill(&node, 94, 300);
    let c = blocking_client();
    let before = c.status(&node.url);
    sigterm(&mut node);
    let checkpoint = dir.path().join("checkpoint");
    let mut bytes = std::fs::read(&checkpoint).expect("a checkpoint at the clean stop");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(&checkpoint, &bytes).unwrap();

    let out = NodeCommand::new(dir.path())
        .args(args)
        .command()
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the node started: {stderr}");
    assert!(stderr.contains("refusing to start"), "{stderr}");
    assert!(stderr.contains("checkpoint"), "{stderr}");
    assert!(stderr.contains("Delete it"), "{stderr}");

    std::fs::remove_file(&checkpoint).unwrap();
    let node = start_node(dir.path(), &args);
    assert_eq!(ledger_of(&c.status(&node.url)), ledger_of(&before));
}
