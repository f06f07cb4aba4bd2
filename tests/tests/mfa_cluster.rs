//! A DID's login policy on a cluster of real nodes (issue 11): the owner
//! sets "2 of my keys" through one node, and the next login at another
//! node is held to it, because every node enforces the policy of the DID
//! state it holds at token time and the update reaches it by gossip.
//!
//! Needs the binaries: `cargo build -p didmesh-node --bins`, then `cargo
//! test -p didmesh-tests --test mfa_cluster`. Prints how long the policy
//! took to reach the other node.

use did_core::keys::{public_of, sign_b64};
use did_core::policy::LoginPolicy;
use did_core::{DidState, Operation, Relationship, VerificationMethod};
use didmesh_tests::cluster::Cluster;
use didmesh_tests::http::{blocking_client, BlockingClient};
use didmesh_tests::ops::{cid, create, key};
use didmesh_tests::{now, poll};
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Keys `key-1` (laptop) and `key-2` (phone), `required` of them.
fn state(laptop: &SigningKey, phone: &SigningKey, required: Option<u8>) -> DidState {
    let mut s = DidState::single_key(public_of(laptop));
    s.verification_methods.push(VerificationMethod {
        id: "key-2".into(),
        public_key_multibase: public_of(phone),
        relationships: vec![Relationship::Authentication],
        device: Some("phone".into()),
    });
    s.login_policy = required.map(|required| LoginPolicy {
        required,
        factors: vec![],
    });
    s
}

/// A challenge at `node` and a token request signed by `keys`.
fn login(c: &BlockingClient, node: &str, did: &str, keys: &[&SigningKey]) -> (Value, (u16, Value)) {
    let ch = c
        .post_json(&format!("{node}/v1/auth/challenge"), &json!({ "did": did }))
        .unwrap();
    assert_eq!(ch.status, 200, "{:?}", ch.body);
    let message = ch.body["message"].as_str().unwrap().as_bytes();
    let sigs: Vec<String> = keys.iter().map(|k| sign_b64(k, message)).collect();
    let t = c
        .post_json(
            &format!("{node}/v1/auth/token"),
            &json!({"did": did, "nonce": ch.body["nonce"], "signatures": sigs}),
        )
        .unwrap();
    (ch.body, (t.status, t.body))
}

#[test]
fn a_policy_set_at_one_node_holds_at_the_next_login_at_another() {
    let out = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(out.path(), 2, &[]);
    let c = blocking_client();
    let (laptop, phone) = (key(71, 0), key(71, 1));
    let (genesis, did) = create(state(&laptop, &phone, None), &laptop);
    assert!(c.submit(cluster.url(0), &genesis).is_success());
    cluster
        .wait_converged(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));

    // no policy: the laptop alone signs in at node 2
    let (_, (status, body)) = login(&c, cluster.url(1), &did, &[&laptop]);
    assert_eq!(status, 200, "{body}");

    // the owner sets "2 of my keys" through node 1
    let update = Operation::update(
        &did,
        cid(&genesis),
        state(&laptop, &phone, Some(2)),
        now(),
        &laptop,
    )
    .unwrap();
    assert!(c.submit(cluster.url(0), &update).is_success());
    let acked = Instant::now();
    // node 2's next challenge states it as soon as the update arrived…
    let reached = poll(Duration::from_secs(30), Duration::from_millis(20), || {
        let ch = c
            .post_json(
                &format!("{}/v1/auth/challenge", cluster.url(1)),
                &json!({ "did": did }),
            )
            .ok()?;
        (ch.body["policy"]["required"] == 2).then(|| acked.elapsed())
    })
    .expect("the policy did not reach node 2 within 30 s");
    println!("policy change reached node 2 in {reached:?}");

    // …and its token path holds the laptop alone to it
    let (ch, (status, body)) = login(&c, cluster.url(1), &did, &[&laptop]);
    assert_eq!(ch["policy"]["required"], 2);
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "more_factors_needed");
    assert!(body.get("access_token").is_none());
    let (_, (status, body)) = login(&c, cluster.url(1), &did, &[&laptop, &phone]);
    assert_eq!(status, 200, "{body}");
    let claims = didmesh_tests::issuer::claims(body["access_token"].as_str().unwrap());
    assert_eq!(claims["acr"], "urn:didmesh:acr:mfa");
    assert_eq!(claims["amr"], json!(["swk", "mfa"]));
}
