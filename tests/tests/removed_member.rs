//! A removed member's tokens stop working fast, with the shipped defaults:
//! the removed node refuses to issue at once (also for a challenge it
//! handed out before), and home-api — following the JWKS `max-age` — refuses
//! tokens that node signed before its removal within 60 s. Before protocol
//! v2's fixes home-api kept accepting them for its 300 s refresh interval.

use did_core::keys::sign_b64;
use didmesh_tests::cluster::{init_network, p2p_addr, start_peer, wait_converged};
use didmesh_tests::http::{blocking_client, BlockingClient};
use didmesh_tests::{node_admin, start_node, HomeApi};
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn challenge(c: &BlockingClient, url: &str, did: &str) -> Value {
    let a = c
        .post_json(
            &format!("{url}/v1/auth/challenge"),
            &json!({ "did": did, "audience": "home-api" }),
        )
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    a.body
}

/// `POST /v1/auth/token` for a challenge taken earlier.
fn redeem(c: &BlockingClient, url: &str, did: &str, ch: &Value, key: &SigningKey) -> (u16, Value) {
    let sig = sign_b64(key, ch["message"].as_str().unwrap().as_bytes());
    let a = c
        .post_json(
            &format!("{url}/v1/auth/token"),
            &json!({ "did": did, "nonce": ch["nonce"], "signature": sig }),
        )
        .unwrap();
    (a.status, a.body)
}

#[test]
fn a_removed_members_tokens_are_refused_within_a_minute() {
    let tmp = tempfile::tempdir().unwrap();
    let net = tmp.path().join("net");
    let dirs = init_network(&net, 4);
    let n1 = start_node(&dirs[0], &[]);
    let n4 = start_peer(&dirs[3], &[p2p_addr(&n1)], &[]);
    let c = blocking_client();
    let genesis: Value =
        serde_json::from_str(&std::fs::read_to_string(net.join("genesis.json")).unwrap()).unwrap();
    let app = HomeApi::start_with(&[
        "--jwks-url",
        &format!("{}/.well-known/jwks.json", n1.url),
        "--issuer",
        genesis["issuer"].as_str().unwrap(),
        "--audience",
        "home-api",
    ]);

    // A did:key user logs in at node 4 through the client library: one
    // token now, and one challenge kept for later.
    let user = SigningKey::from_bytes(&[77; 32]);
    let did = did_core::keys::public_of(&user).did_key();
    let token = c.login(&n4.url, &did, &user).unwrap();
    let earlier = challenge(&c, &n4.url, &did);
    let home = |t: &str| app.home(Some(t)).0;
    assert_eq!(home(&token), 200);

    // Members 1-3 remove node 4.
    let dir = |i: usize| dirs[i].to_str().unwrap();
    let (ok, text) = node_admin(&[
        "member-remove",
        "--node",
        &n1.url,
        "--member",
        dir(3),
        "--name",
        "node4",
        "--sign-with",
        dir(0),
        "--sign-with",
        dir(1),
        "--sign-with",
        dir(2),
    ]);
    assert!(ok, "{text}");
    let removed_at = Instant::now();
    wait_converged(&[&n1.url, &n4.url], Duration::from_secs(20)).unwrap();

    // The removed node issues nothing, not even for its earlier challenge.
    let (status, body) = redeem(&c, &n4.url, &did, &earlier, &user);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "not_a_member");

    // home-api drops node 4's key when its cached JWKS expires.
    let refused_after = loop {
        if home(&token) == 401 {
            break removed_at.elapsed();
        }
        assert!(
            removed_at.elapsed() < Duration::from_secs(70),
            "still accepted after 70 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!(
        "removed member's token refused by home-api {:.1} s after the removal",
        refused_after.as_secs_f64()
    );
    assert!(
        refused_after <= Duration::from_secs(61),
        "{refused_after:?}"
    );
}
