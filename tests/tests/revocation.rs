//! Sign-out everywhere and revocation on three real nodes (issue 13): a
//! login at node 1 works at home-api, which follows node 3's revocation
//! feed (`--revocations`); the owner signs out everywhere at node 2 with
//! `didmesh sign-out` and home-api refuses the same token within a bound
//! this test prints; a new login afterwards works; a single `jti`; a key
//! removed from the DID takes its tokens with it; OpenID refresh tokens
//! rotate, die when used twice, revoked (RFC 7009) or signed out; and
//! nobody but the owner can revoke, or lower `before`.
//!
//! Needs the binaries: `cargo build -p didmesh-node -p didmesh-client -p
//! home-api --bins`, then `cargo test -p didmesh-tests --test revocation`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use did_core::keys::public_of;
use did_core::{DidState, Operation, Relationship, VerificationMethod};
use didmesh_tests::cluster::Cluster;
use didmesh_tests::http::{blocking_client, BlockingClient};
use didmesh_tests::oidc::{code_for, redeem, register_client, Pkce, Rp};
use didmesh_tests::ops::{cid, create, key};
use didmesh_tests::{bin, now, poll, HomeApi};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long home-api may take to refuse a revoked token: gossip to node
/// 3, then node 3's feed long-poll to home-api (the propagation bound of
/// the cluster plus one poll round trip).
const BOUND: Duration = Duration::from_secs(15);

fn didmesh(wallet: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin("didmesh"))
        .arg("--wallet")
        .arg(wallet)
        .args(args)
        .env("DIDMESH_PASSPHRASE", "correct horse battery staple")
        .output()
        .unwrap_or_else(|e| panic!("didmesh: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

fn didmesh_ok(wallet: &Path, args: &[&str]) -> String {
    let (ok, out, err) = didmesh(wallet, args);
    assert!(ok, "didmesh {args:?} failed: {err}");
    out
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap_or_default();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// Polls home-api until it refuses `token`; how long that took.
fn refused_within(home: &HomeApi, token: &str, what: &str) -> Duration {
    let started = Instant::now();
    let refused = poll(BOUND, Duration::from_millis(50), || {
        let (status, _) = home.home(Some(token));
        (status == 401).then_some(())
    });
    let took = started.elapsed();
    assert!(
        refused.is_some(),
        "home-api still accepts the token {what} after {BOUND:?}"
    );
    println!("home-api refused the token {what} {took:?} after the revocation was accepted");
    took
}

fn start(out: &Path) -> (Cluster, HomeApi) {
    let cluster = Cluster::start(out, 3, &[]);
    let defaults = didmesh_tests::node_defaults();
    let node3 = cluster.url(2).to_string();
    let home = HomeApi::start_with(&[
        "--jwks-url",
        &format!("{node3}/.well-known/jwks.json"),
        "--issuer",
        &defaults.issuer,
        "--audience",
        &defaults.audience,
        "--revocations",
        &format!("{node3}/v1/revocations"),
    ]);
    (cluster, home)
}

#[test]
fn sign_out_everywhere_jti_and_removed_keys_reach_home_api() {
    let out = tempfile::tempdir().unwrap();
    let (cluster, home) = start(out.path());
    let c = blocking_client();
    let wallet = out.path().join("alice.wallet");
    didmesh_ok(&wallet, &["wallet", "init", "--seed-hex", &"71".repeat(32)]);
    let did = didmesh_ok(&wallet, &["did", "create", "--node", cluster.url(0)]);
    cluster.wait_converged(Duration::from_secs(30)).unwrap();

    // Log in at node 1; home-api (node 3's JWKS and feed) accepts it.
    let token = didmesh_ok(&wallet, &["login", "--node", cluster.url(0)]);
    let (status, body) = home.home(Some(&token));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], did.as_str());
    let t = claims(&token);
    assert_eq!(t["exp"].as_u64().unwrap() - t["iat"].as_u64().unwrap(), 900);
    assert!(t["key"].as_str().is_some_and(|k| k.starts_with('z')), "{t}");

    // Sign out everywhere at node 2.
    std::thread::sleep(Duration::from_millis(1100));
    didmesh_ok(
        &wallet,
        &["sign-out", "--everywhere", "--node", cluster.url(1)],
    );
    refused_within(&home, &token, "after sign-out everywhere");

    // A new login afterwards works (from the second after `before`).
    std::thread::sleep(Duration::from_millis(1100));
    let fresh = poll(Duration::from_secs(10), Duration::from_millis(200), || {
        let (ok, out, _) = didmesh(&wallet, &["login", "--node", cluster.url(0)]);
        ok.then_some(out)
    })
    .expect("a login after the sign-out");
    let accepted = poll(Duration::from_secs(10), Duration::from_millis(100), || {
        (home.home(Some(&fresh)).0 == 200).then_some(())
    });
    assert!(
        accepted.is_some(),
        "home-api refuses a login made after the sign-out"
    );

    // One token by jti, at node 3; another token stays good.
    let other = didmesh_ok(&wallet, &["login", "--node", cluster.url(1)]);
    let jti = claims(&fresh)["jti"].as_str().unwrap().to_string();
    didmesh_ok(
        &wallet,
        &["sign-out", "--jti", &jti, "--node", cluster.url(2)],
    );
    refused_within(&home, &fresh, "after its jti was revoked");
    assert_eq!(
        home.home(Some(&other)).0,
        200,
        "a token not revoked stays good"
    );

    // A key removed from a DID revokes the tokens it proved.
    removed_key_revokes_its_tokens(&cluster, &home, &c);
}

fn removed_key_revokes_its_tokens(cluster: &Cluster, home: &HomeApi, c: &BlockingClient) {
    let main = key(72, 0);
    let phone = key(72, 1);
    let mut state = DidState::single_key(public_of(&main));
    state.verification_methods.push(VerificationMethod {
        id: "phone".into(),
        public_key_multibase: public_of(&phone),
        relationships: vec![Relationship::Authentication],
        device: None,
    });
    let (op, did) = create(state.clone(), &main);
    assert!(c.submit(cluster.url(0), &op).is_success());
    cluster.wait_converged(Duration::from_secs(30)).unwrap();
    let by_phone = c.login(cluster.url(0), &did, &phone).unwrap();
    let by_main = c.login(cluster.url(0), &did, &main).unwrap();
    assert_eq!(claims(&by_phone)["key"], public_of(&phone).to_string());
    assert_eq!(home.home(Some(&by_phone)).0, 200);
    std::thread::sleep(Duration::from_millis(1100));
    let mut without = state;
    without.verification_methods.retain(|vm| vm.id != "phone");
    let update = Operation::update(&did, cid(&op), without, now(), &main).unwrap();
    let a = c.submit(cluster.url(1), &update);
    assert!(a.is_success(), "{a:?}");
    refused_within(home, &by_phone, "of a key removed from the DID");
    assert_eq!(
        home.home(Some(&by_main)).0,
        200,
        "the kept key's token stays good"
    );
}

fn refresh(c: &BlockingClient, node: &str, rp: &Rp, token: &str) -> didmesh_tests::http::Answer {
    c.post_form(
        &format!("{node}/oidc/token"),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", token),
            ("client_id", &rp.client_id),
        ],
    )
    .unwrap()
}

fn revoke(c: &BlockingClient, node: &str, rp: &Rp, token: &str) -> u16 {
    c.post_form(
        &format!("{node}/oidc/revoke"),
        &[
            ("token", token),
            ("token_type_hint", "refresh_token"),
            ("client_id", &rp.client_id),
        ],
    )
    .unwrap()
    .status
}

#[test]
fn refresh_tokens_rotate_and_die_when_reused_revoked_or_signed_out() {
    let out = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(out.path(), 3, &[]);
    let c = blocking_client();
    let rp = register_client(
        &c,
        cluster.url(0),
        &key(73, 0),
        "Refresh App",
        "http://localhost:9/callback",
    );
    let user = key(73, 1);
    let (op, did) = create(DidState::single_key(public_of(&user)), &user);
    assert!(c.submit(cluster.url(0), &op).is_success());
    cluster.wait_converged(Duration::from_secs(30)).unwrap();
    let d = c
        .get_json(&format!(
            "{}/.well-known/openid-configuration",
            cluster.url(0)
        ))
        .unwrap();
    assert!(d.body["grant_types_supported"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g == "refresh_token"));
    assert!(d.body["revocation_endpoint"]
        .as_str()
        .is_some_and(|u| u.ends_with("/oidc/revoke")));

    // Code at node 1, redeemed at node 2: a refresh token issued by node 2.
    let pkce = Pkce::new(3);
    let code = code_for(&c, cluster.url(0), &rp, &pkce, &did, &user);
    let first = redeem(&c, cluster.url(1), &rp, &code, &pkce.verifier);
    assert_eq!(first.status, 200, "{:?}", first.body);
    let rt1 = first.body["refresh_token"].as_str().unwrap().to_string();

    // Used at node 3 (node 2 consumes it over libp2p): new tokens and a
    // new refresh token.
    let second = refresh(&c, cluster.url(2), &rp, &rt1);
    assert_eq!(second.status, 200, "{:?}", second.body);
    assert!(second.body["access_token"].as_str().is_some());
    assert!(second.body["id_token"].as_str().is_some());
    let rt2 = second.body["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt1, rt2);
    // The used one again, anywhere: invalid_grant.
    for i in [0, 1, 2] {
        let again = refresh(&c, cluster.url(i), &rp, &rt1);
        assert_eq!(again.status, 400, "reuse at node {}", i + 1);
        assert_eq!(again.body["error"], "invalid_grant");
    }
    // Revoked at node 1 (RFC 7009: 200), then dead; unknown tokens: 200.
    assert_eq!(revoke(&c, cluster.url(0), &rp, &rt2), 200);
    let dead = refresh(&c, cluster.url(2), &rp, &rt2);
    assert_eq!(dead.body["error"], "invalid_grant", "{:?}", dead.body);
    assert_eq!(revoke(&c, cluster.url(1), &rp, "not-a-token"), 200);

    // Sign-out everywhere kills refresh tokens issued before it.
    let code = code_for(&c, cluster.url(1), &rp, &pkce, &did, &user);
    let fresh = redeem(&c, cluster.url(1), &rp, &code, &pkce.verifier);
    let rt3 = fresh.body["refresh_token"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(1100));
    let head = did_core::Cid::parse(&c.head(cluster.url(0), &did).unwrap()).unwrap();
    let mut s = DidState::single_key(public_of(&user));
    s.revocations.before = now();
    let signout = Operation::update(&did, head, s, now(), &user).unwrap();
    assert!(c.submit(cluster.url(0), &signout).is_success());
    cluster.wait_converged(Duration::from_secs(30)).unwrap();
    let killed = refresh(&c, cluster.url(2), &rp, &rt3);
    assert_eq!(killed.status, 400, "{:?}", killed.body);
    assert_eq!(killed.body["error"], "invalid_grant");
}

#[test]
fn only_the_owner_revokes_and_before_never_goes_down() {
    let out = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(out.path(), 3, &[]);
    let c = blocking_client();
    let owner = key(74, 0);
    let (op, did) = create(DidState::single_key(public_of(&owner)), &owner);
    assert!(c.submit(cluster.url(0), &op).is_success());
    let mut s = DidState::single_key(public_of(&owner));
    s.revocations.before = now();
    let signout = Operation::update(&did, cid(&op), s.clone(), now(), &owner).unwrap();
    assert!(c.submit(cluster.url(0), &signout).is_success());
    cluster.wait_converged(Duration::from_secs(30)).unwrap();

    // An attacker's key, and an unsigned op: refused at every node.
    let mallory = key(74, 9);
    let mut raised = s.clone();
    raised.revocations.before += 100;
    let forged = Operation::update(&did, cid(&signout), raised, now(), &mallory).unwrap();
    let mut unsigned = Operation::update(&did, cid(&signout), s.clone(), now(), &owner).unwrap();
    unsigned.sig = String::new();
    for i in 0..3 {
        for (what, op) in [("wrong key", &forged), ("unsigned", &unsigned)] {
            let a = c.submit(cluster.url(i), op);
            assert!(
                (400..500).contains(&a.status),
                "{what} op at node {}: {a:?}",
                i + 1
            );
        }
    }
    // The owner cannot lower `before` either (it would revive sessions).
    let mut lower = s;
    lower.revocations.before -= 60;
    let down = Operation::update(&did, cid(&signout), lower, now(), &owner).unwrap();
    let a = c.submit(cluster.url(1), &down);
    assert_eq!(a.status, 400, "{a:?}");
    assert!(
        a.body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("revocations.before")),
        "{a:?}"
    );
    // Every node still holds the owner's `before`.
    let feed_has_did = |i: usize| {
        let a = c
            .get_text(&format!("{}/v1/revocations?since=0", cluster.url(i)))
            .unwrap();
        let payload = a.1.split('.').nth(1).unwrap_or_default().to_string();
        let p: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap_or_default())
            .unwrap_or(Value::Null);
        p["entries"].as_array().is_some_and(|e| {
            e.iter()
                .any(|e| e["kind"] == "did" && e["did"] == did.as_str())
        })
    };
    for i in 0..3 {
        assert!(
            poll(Duration::from_secs(10), Duration::from_millis(100), || {
                feed_has_did(i).then_some(())
            })
            .is_some(),
            "node {} has no did entry",
            i + 1
        );
    }
}
