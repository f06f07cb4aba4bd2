//! Network membership across real processes: `init-network` writes a
//! 3-member genesis; every node's JWKS holds all members; `member-add` with a
//! quorum of signatures adds a fourth key to the JWKS, with fewer it is
//! refused; a node that is not a member issues no tokens.

use didmesh_tests::reqwest::blocking_client;
use didmesh_tests::{bin, start_node};
use std::process::Command;

fn node_cmd(args: &[&str]) -> (bool, String) {
    let out = Command::new(bin("didmesh-node"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn member_add_needs_a_quorum_and_reaches_the_jwks() {
    let tmp = tempfile::tempdir().unwrap();
    let net = tmp.path().join("net");
    let (ok, text) = node_cmd(&[
        "init-network",
        "--nodes",
        "3",
        "--out",
        net.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("quorum 2"), "{text}");

    let node = start_node(&net.join("node1"), &["--no-p2p"]);
    let c = blocking_client();
    let jwks = c
        .get_json(&format!("{}/.well-known/jwks.json", node.url))
        .unwrap()
        .body;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 3);

    // a fourth node: its own key, not yet a member
    let newcomer = tmp.path().join("node4");
    let (ok, text) = node_cmd(&[
        "init-network",
        "--nodes",
        "1",
        "--out",
        newcomer.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let newcomer_dir = newcomer.join("node1");

    let n1 = net.join("node1");
    let n2 = net.join("node2");
    let (ok, text) = node_cmd(&[
        "member-add",
        "--node",
        &node.url,
        "--member",
        newcomer_dir.to_str().unwrap(),
        "--name",
        "node4",
        "--sign-with",
        n1.to_str().unwrap(),
    ]);
    assert!(!ok, "one signature is below the quorum: {text}");
    assert!(text.contains("quorum"), "{text}");
    let jwks = c
        .get_json(&format!("{}/.well-known/jwks.json", node.url))
        .unwrap()
        .body;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 3);

    let (ok, text) = node_cmd(&[
        "member-add",
        "--node",
        &node.url,
        "--member",
        newcomer_dir.to_str().unwrap(),
        "--name",
        "node4",
        "--sign-with",
        n1.to_str().unwrap(),
        "--sign-with",
        n2.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let jwks = c
        .get_json(&format!("{}/.well-known/jwks.json", node.url))
        .unwrap()
        .body;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 4);
    let network = c
        .get_json(&format!("{}/v1/network", node.url))
        .unwrap()
        .body;
    assert!(network["members"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "node4"));

    // an observer (its key is no member) replicates but refuses to issue tokens
    let observer_dir = tmp.path().join("observer");
    let genesis = net.join("genesis.json");
    let observer = start_node(
        &observer_dir,
        &["--no-p2p", "--genesis", genesis.to_str().unwrap()],
    );
    let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let did = did_core::keys::public_of(&key).did_key();
    let a = c
        .post_json(
            &format!("{}/v1/auth/challenge", observer.url),
            &serde_json::json!({"did": did}),
        )
        .unwrap();
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(a.body["error"], "not_a_member");
    let status = c
        .get_json(&format!("{}/v1/status", observer.url))
        .unwrap()
        .body;
    assert_eq!(status["member"], false);
}
