//! Network membership across real processes: `init-network` writes a
//! 3-member genesis; every node's JWKS holds all members; `member-add` with a
//! quorum of signatures adds a fourth key to the JWKS, with fewer it is
//! refused; a node that is not a member issues no tokens.

use didmesh_tests::http::blocking_client;
use didmesh_tests::{node_admin, start_node};
use std::path::Path;

#[test]
fn member_add_needs_a_quorum_and_reaches_the_jwks() {
    let tmp = tempfile::tempdir().unwrap();
    let net = tmp.path().join("net");
    let init = |nodes: &str, out: &Path| {
        let (ok, text) = node_admin(&[
            "init-network",
            "--nodes",
            nodes,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(ok, "{text}");
        text
    };
    let text = init("3", &net);
    assert!(text.contains("quorum 2"), "{text}");

    let node = start_node(&net.join("node1"), &["--no-p2p"]);
    let c = blocking_client();
    assert_eq!(c.jwks_len(&node.url), 3);

    // a fourth node: its own key, not yet a member
    let newcomer = tmp.path().join("node4");
    init("1", &newcomer);
    let newcomer_dir = newcomer.join("node1");
    let add_node4 = |signers: &[&str]| {
        let mut args = vec!["member-add", "--node", &node.url];
        args.extend([
            "--member",
            newcomer_dir.to_str().unwrap(),
            "--name",
            "node4",
        ]);
        for s in signers {
            args.extend(["--sign-with", s]);
        }
        node_admin(&args)
    };
    let (n1, n2) = (net.join("node1"), net.join("node2"));
    let (n1, n2) = (n1.to_str().unwrap(), n2.to_str().unwrap());

    let (ok, text) = add_node4(&[n1]);
    assert!(!ok, "one signature is below the quorum: {text}");
    assert!(text.contains("quorum"), "{text}");
    assert_eq!(c.jwks_len(&node.url), 3);

    let (ok, text) = add_node4(&[n1, n2]);
    assert!(ok, "{text}");
    assert_eq!(c.jwks_len(&node.url), 4);
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
    let refused = c.login(&observer.url, &did, &key).unwrap_err();
    assert_eq!(refused.status(), Some(503), "{refused}");
    assert_eq!(refused.error(), Some("not_a_member"), "{refused}");
    assert_eq!(c.status(&observer.url)["member"], false);
}
