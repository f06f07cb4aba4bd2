//! Partition test in real network namespaces (`ip netns`, veth, a bridge).
//!
//! Three member nodes, each in its own namespace with two links: a "mesh"
//! veth on a shared bridge (libp2p traffic) and a "management" veth to the
//! host (this test's HTTP calls). Cutting node 3 = taking its mesh link
//! down. During the cut, logins keep working on both sides, both sides
//! create DIDs, and both sides update one DID with different-priority
//! rotation keys. After healing, every node must hold the same op set and
//! state (ledger and state digests) and the fork must resolve by the rule
//! (the higher-priority key's update wins), within a bound the test prints.
//!
//! Needs root and iproute2; skipped with the reason otherwise.

use did_core::keys::{public_of, sign_b64};
use did_core::{DidState, Operation};
use didmesh_tests::bin;
use didmesh_tests::reqwest::{blocking_client, BlockingClient};
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Netns {
    tag: String,
    n: usize,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }
    fn mesh_if(&self, i: usize) -> String {
        format!("{}m{i}", self.tag)
    }
    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }
    fn mesh_ip(i: usize) -> String {
        format!("10.77.0.{i}")
    }
    fn mgmt_ip(i: usize) -> String {
        format!("10.78.{i}.1")
    }

    fn create(n: usize) -> Result<Netns, String> {
        let tag = format!("dm{}", std::process::id() % 10000);
        let net = Netns { tag, n };
        ip(&["link", "add", &net.bridge(), "type", "bridge"])?;
        ip(&["link", "set", &net.bridge(), "up"])?;
        for i in 1..=n {
            let ns = net.ns(i);
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            // mesh link: host side on the bridge
            let (m, mp) = (net.mesh_if(i), format!("{}mp{i}", net.tag));
            ip(&["link", "add", &m, "type", "veth", "peer", "name", &mp])?;
            ip(&["link", "set", &mp, "netns", &ns])?;
            ip(&["link", "set", &m, "master", &net.bridge()])?;
            ip(&["link", "set", &m, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", Self::mesh_ip(i)),
                "dev",
                &mp,
            ])?;
            ip(&["-n", &ns, "link", "set", &mp, "up"])?;
            // management link: a point-to-point veth to the host
            let (g, gp) = (format!("{}g{i}", net.tag), format!("{}gp{i}", net.tag));
            ip(&["link", "add", &g, "type", "veth", "peer", "name", &gp])?;
            ip(&["link", "set", &gp, "netns", &ns])?;
            ip(&["addr", "add", &format!("10.78.{i}.254/24"), "dev", &g])?;
            ip(&["link", "set", &g, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", Self::mgmt_ip(i)),
                "dev",
                &gp,
            ])?;
            ip(&["-n", &ns, "link", "set", &gp, "up"])?;
        }
        Ok(net)
    }

    fn set_mesh(&self, i: usize, up: bool) {
        ip(&[
            "link",
            "set",
            &self.mesh_if(i),
            if up { "up" } else { "down" },
        ])
        .unwrap();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for i in 1..=self.n {
            let _ = ip(&["link", "del", &self.mesh_if(i)]);
            let _ = ip(&["link", "del", &format!("{}g{i}", self.tag)]);
            let _ = ip(&["netns", "del", &self.ns(i)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

struct NsNode {
    child: Child,
    url: String,
}

impl Drop for NsNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_in_ns(net: &Netns, i: usize, dir: &std::path::Path, bootstrap: Option<&str>) -> NsNode {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &net.ns(i)])
        .arg(bin("didmesh-node"))
        .arg("--data-dir")
        .arg(dir)
        .args(["--http-addr", &format!("{}:7001", Netns::mgmt_ip(i))])
        .args([
            "--p2p-addr",
            &format!("/ip4/{}/tcp/7101", Netns::mesh_ip(i)),
        ])
        .args(["--auth-rate", "0", "--sync-interval-ms", "500"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(b) = bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    let child = cmd.spawn().unwrap();
    let url = format!("http://{}:7001", Netns::mgmt_ip(i));
    didmesh_tests::wait_healthy(&url, Duration::from_secs(20));
    NsNode { child, url }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn status(c: &BlockingClient, url: &str) -> Value {
    c.get_json(&format!("{url}/v1/status"))
        .map(|a| a.body)
        .unwrap_or(Value::Null)
}

fn submit(c: &BlockingClient, url: &str, op: &Operation) {
    let a = c
        .post_json(&format!("{url}/v1/ops"), &serde_json::to_value(op).unwrap())
        .unwrap();
    assert!(a.is_success(), "{url}: {}", a.body);
}

fn login(c: &BlockingClient, url: &str, did: &str, key: &SigningKey) -> u16 {
    let ch = c
        .post_json(&format!("{url}/v1/auth/challenge"), &json!({"did": did}))
        .unwrap();
    if !ch.is_success() {
        return ch.status;
    }
    let msg = ch.body["message"].as_str().unwrap();
    let body =
        json!({"did": did, "nonce": ch.body["nonce"], "signature": sign_b64(key, msg.as_bytes())});
    c.post_json(&format!("{url}/v1/auth/token"), &body)
        .unwrap()
        .status
}

fn head(c: &BlockingClient, url: &str, did: &str) -> Option<String> {
    let a = c.get_json(&format!("{url}/1.0/identifiers/{did}")).ok()?;
    a.body["didDocumentMetadata"]["versionId"]
        .as_str()
        .map(str::to_string)
}

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

fn create_did(seed: u8, rotation: &[&SigningKey]) -> (Operation, String) {
    let auth = SigningKey::from_bytes(&[seed; 32]);
    let mut state = DidState::single_key(public_of(&auth));
    state.rotation_keys = rotation.iter().map(|k| public_of(k)).collect();
    let op = Operation::create(state, now(), rotation[0]).unwrap();
    let did = did_core::op::did_from_genesis(&op.cid().unwrap());
    (op, did)
}

#[test]
fn partition_heals_to_one_state_and_the_fork_rule_decides() {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if !is_root || Command::new("ip").arg("-V").output().is_err() {
        eprintln!("SKIPPED partition test: needs root and iproute2 to create network namespaces");
        return;
    }
    let net = match Netns::create(3) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("SKIPPED partition test: cannot create network namespaces here: {e}");
            return;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(bin("didmesh-node"))
        .args(["init-network", "--nodes", "3", "--out"])
        .arg(tmp.path().join("net"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let dir = |i: usize| tmp.path().join("net").join(format!("node{i}"));
    let c = blocking_client();
    let n1 = start_in_ns(&net, 1, &dir(1), None);
    let peer1 = status(&c, &n1.url)["peer_id"].as_str().unwrap().to_string();
    let boot = format!("/ip4/{}/tcp/7101/p2p/{peer1}", Netns::mesh_ip(1));
    let n2 = start_in_ns(&net, 2, &dir(2), Some(&boot));
    let n3 = start_in_ns(&net, 3, &dir(3), Some(&boot));
    let nodes = [&n1, &n2, &n3];
    wait_for("the nodes to connect", Duration::from_secs(30), || {
        nodes.iter().all(|n| {
            status(&c, &n.url)["peers"]
                .as_array()
                .is_some_and(|p| p.len() >= 2)
        })
    });

    // A DID with two rotation keys: `high` (priority 0) and `low` (1).
    let (high, low) = (
        SigningKey::from_bytes(&[201; 32]),
        SigningKey::from_bytes(&[202; 32]),
    );
    let (shared_op, shared) = create_did(200, &[&high, &low]);
    submit(&c, &n1.url, &shared_op);
    let genesis = shared_op.cid().unwrap();
    wait_for("the shared DID on node 3", Duration::from_secs(10), || {
        head(&c, &n3.url, &shared).is_some()
    });

    // --- cut node 3 off ---
    net.set_mesh(3, false);
    let cut = Instant::now();
    let (a_op, a_did) = create_did(210, &[&SigningKey::from_bytes(&[211; 32])]);
    let (b_op, b_did) = create_did(220, &[&SigningKey::from_bytes(&[221; 32])]);
    submit(&c, &n2.url, &a_op);
    submit(&c, &n3.url, &b_op);
    // conflicting updates of the shared DID on the two sides
    let mut by_low = DidState::single_key(public_of(&SigningKey::from_bytes(&[230; 32])));
    by_low.rotation_keys = vec![public_of(&high), public_of(&low)];
    let low_op = Operation::update(&shared, genesis, by_low, now(), &low).unwrap();
    let mut by_high = DidState::single_key(public_of(&SigningKey::from_bytes(&[231; 32])));
    by_high.rotation_keys = vec![public_of(&high), public_of(&low)];
    let high_op = Operation::update(&shared, genesis, by_high, now(), &high).unwrap();
    submit(&c, &n1.url, &low_op);
    submit(&c, &n3.url, &high_op);
    // logins keep working on both sides for DIDs each side knows
    let a_key = SigningKey::from_bytes(&[210; 32]);
    let b_key = SigningKey::from_bytes(&[220; 32]);
    wait_for(
        "node 1 to learn the DID made on node 2",
        Duration::from_secs(10),
        || head(&c, &n1.url, &a_did).is_some(),
    );
    assert_eq!(
        login(&c, &n1.url, &a_did, &a_key),
        200,
        "login on the majority side"
    );
    assert_eq!(
        login(&c, &n3.url, &b_did, &b_key),
        200,
        "login on the cut-off side"
    );
    assert_eq!(
        login(&c, &n3.url, &a_did, &a_key),
        404,
        "node 3 cannot know the DID made during the cut"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_ne!(
        status(&c, &n1.url)["ledger_digest"],
        status(&c, &n3.url)["ledger_digest"],
        "the cut holds"
    );
    assert_eq!(
        head(&c, &n1.url, &shared),
        Some(low_op.cid().unwrap().to_string())
    );
    assert_eq!(
        head(&c, &n3.url, &shared),
        Some(high_op.cid().unwrap().to_string())
    );
    println!("partition lasted {:?}", cut.elapsed());

    // --- heal ---
    net.set_mesh(3, true);
    let took = wait_for("convergence after healing", Duration::from_secs(60), || {
        let s: Vec<Value> = nodes.iter().map(|n| status(&c, &n.url)).collect();
        s.iter().all(|x| {
            x["ledger_digest"] == s[0]["ledger_digest"] && x["state_digest"] == s[0]["state_digest"]
        }) && s[0]["op_count"].as_u64() == Some(5)
    });
    println!("converged {took:?} after healing (3 nodes, 5 ops: a DID and a conflicting update made on each side during the cut)");
    let winner = high_op.cid().unwrap().to_string();
    for n in nodes {
        assert_eq!(
            head(&c, &n.url, &shared).as_deref(),
            Some(winner.as_str()),
            "fork rule on {}",
            n.url
        );
        assert!(head(&c, &n.url, &a_did).is_some() && head(&c, &n.url, &b_did).is_some());
        let log = c
            .get_json(&format!("{}/v1/dids/{shared}/log", n.url))
            .unwrap()
            .body;
        assert_eq!(
            log["ops"].as_array().unwrap().len(),
            3,
            "the losing branch stays stored"
        );
    }
    assert_eq!(login(&c, &n3.url, &a_did, &a_key), 200);
}
