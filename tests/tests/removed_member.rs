//! A removed member's tokens stop working fast, with the shipped defaults:
//! the removed node refuses to issue at once (also for a challenge it
//! handed out before), and home-api — following the JWKS `max-age` — refuses
//! tokens that node signed before its removal within 60 s. Before protocol
//! v2's fixes home-api kept accepting them for its 300 s refresh interval.

use base64::Engine as _;
use didmesh_tests::cluster::{init_network, p2p_addr, start_peer, wait_converged};
use didmesh_tests::reqwest::{blocking_client, BlockingClient};
use didmesh_tests::{bin, free_port, start_node, wait_healthy, Proc};
use ed25519_dalek::{Signer as _, SigningKey};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn challenge(c: &BlockingClient, url: &str, did: &str) -> serde_json::Value {
    let a = c
        .post_json(
            &format!("{url}/v1/auth/challenge"),
            &json!({ "did": did, "audience": "home-api" }),
        )
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    a.body
}

fn redeem(
    c: &BlockingClient,
    url: &str,
    did: &str,
    ch: &serde_json::Value,
    key: &SigningKey,
) -> (u16, serde_json::Value) {
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        key.sign(ch["message"].as_str().unwrap().as_bytes())
            .to_bytes(),
    );
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
    let port = free_port();
    let genesis: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(net.join("genesis.json")).unwrap()).unwrap();
    let child = Command::new(bin("home-api"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--jwks-url", &format!("{}/.well-known/jwks.json", n1.url)])
        .args([
            "--issuer",
            genesis["issuer"].as_str().unwrap(),
            "--audience",
            "home-api",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _app = Proc {
        child,
        name: "home-api".into(),
    };
    let app = format!("http://127.0.0.1:{port}");
    wait_healthy(&app, Duration::from_secs(20));

    // A did:key user logs in at node 4: one token now, one challenge kept.
    let user = SigningKey::from_bytes(&[77; 32]);
    let did = did_core::keys::public_of(&user).did_key();
    let (status, body) = redeem(&c, &n4.url, &did, &challenge(&c, &n4.url, &did), &user);
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_string();
    let earlier = challenge(&c, &n4.url, &did);
    let home = |t: &str| {
        c.get_bearer(&format!("{app}/api/activities/home"), t)
            .unwrap()
            .status
    };
    assert_eq!(home(&token), 200);

    // Members 1-3 remove node 4.
    let out = Command::new(bin("didmesh-node"))
        .args(["member-remove", "--node", &n1.url, "--member"])
        .arg(&dirs[3])
        .args(["--name", "node4"])
        .args(["--sign-with"])
        .arg(&dirs[0])
        .args(["--sign-with"])
        .arg(&dirs[1])
        .args(["--sign-with"])
        .arg(&dirs[2])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
