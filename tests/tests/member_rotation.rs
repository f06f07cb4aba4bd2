//! Member key rotation and removal for cause with real nodes (issue 13,
//! step 10, item 2): a member rotates its three token keys with a
//! quorum-signed `member-rotate` op. A token signed with the old key keeps
//! verifying at home-api (auth-layer against a node's JWKS) during the
//! overlap window (8 s in this genesis); the node signs nothing more with
//! the old key from the commit on and, without a restart, mints with the
//! new kid at once; after the window the old token is refused. A member
//! removed for cause leaves the JWKS at once and its token is refused
//! within the JWKS max-age, and at once by a home-api whose JWKS cache is
//! long but which follows the revocation feed (the feed's `member` entry,
//! PROTOCOL.md "Revocation").

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use didmesh_tests::cluster::{p2p_addr, start_peer, wait_converged};
use didmesh_tests::http::blocking_client;
use didmesh_tests::spawn::NodeCommand;
use didmesh_tests::{node_admin, poll, HomeApi};
use ed25519_dalek::SigningKey;
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const OVERLAP: u64 = 8;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_string()
}

fn jwks(url: &str) -> Vec<Value> {
    let a = blocking_client()
        .get_json(&format!("{url}/.well-known/jwks.json"))
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    a.body["keys"].as_array().unwrap().clone()
}

fn kids(url: &str) -> Vec<String> {
    jwks(url)
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn rotated_keys_overlap_then_retire_and_a_removed_member_is_refused_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let net = tmp.path().join("net");
    let overlap = OVERLAP.to_string();
    let (ok, text) = node_admin(&[
        "init-network".as_ref(),
        "--nodes".as_ref(),
        "3".as_ref(),
        "--out".as_ref(),
        net.as_os_str(),
        "--key-overlap-secs".as_ref(),
        overlap.as_ref(),
    ]);
    assert!(ok, "{text}");
    let dirs: Vec<PathBuf> = (1..=3).map(|i| net.join(format!("node{i}"))).collect();
    let dir = |i: usize| dirs[i].to_str().unwrap().to_string();
    let fast = ["--jwks-max-age", "1"];
    let n1 = NodeCommand::new(&dirs[0]).args(fast).start();
    let seed = p2p_addr(&n1);
    // Node 2 serves its JWKS with a long max-age: the feed follower below
    // keeps it cached, so only the feed can refuse a token early.
    let n2 = start_peer(
        &dirs[1],
        std::slice::from_ref(&seed),
        &["--jwks-max-age", "600"],
    );
    let n3 = start_peer(&dirs[2], std::slice::from_ref(&seed), &fast);
    let genesis: Value =
        serde_json::from_str(&std::fs::read_to_string(net.join("genesis.json")).unwrap()).unwrap();
    // home-api (auth-layer) follows node 3's JWKS, which serves max-age 1.
    let app = HomeApi::start_with(&[
        "--jwks-url",
        &format!("{}/.well-known/jwks.json", n3.url),
        "--issuer",
        genesis["issuer"].as_str().unwrap(),
        "--audience",
        "home-api",
    ]);
    // A second home-api: node 2's JWKS cached for 10 minutes, node 1's
    // revocation feed followed (the feed page is signed with node 1's
    // member key, rotated below).
    let cached = HomeApi::start_with(&[
        "--jwks-url",
        &format!("{}/.well-known/jwks.json", n2.url),
        "--jwks-max-cache-secs",
        "600",
        "--jwks-refresh-secs",
        "600",
        "--revocations",
        &format!("{}/v1/revocations", n1.url),
        "--issuer",
        genesis["issuer"].as_str().unwrap(),
        "--audience",
        "home-api",
    ]);
    let c = blocking_client();
    let user = SigningKey::from_bytes(&[91; 32]);
    let did = did_core::keys::public_of(&user).did_key();
    let home = |t: &str| app.home(Some(t)).0;

    // A token minted before the rotation, with node 1's first kid.
    let before = c.login(&n1.url, &did, &user).unwrap();
    let old_kid = kid_of(&before);
    assert_eq!(home(&before), 200);
    assert_eq!(cached.home(Some(&before)).0, 200);
    let status_before = c.get_json(&format!("{}/v1/status", n1.url)).unwrap();
    let old_kids = kids(&n1.url);

    // Node 1 makes its new keys; members 1 and 2 sign the rotation.
    let (ok, entry) = node_admin(&["member-rotate-keys", "--data-dir", &dir(0)]);
    assert!(ok, "{entry}");
    let entry: Value = serde_json::from_str(entry.trim()).unwrap();
    assert_eq!(
        entry["node_did"], genesis["members"][0]["node_did"],
        "the member id stays"
    );
    assert_ne!(entry["key"], genesis["members"][0]["key"]);
    let (ok, text) = node_admin(&[
        "member-rotate",
        "--node",
        &n1.url,
        "--member-entry",
        &entry.to_string(),
        "--sign-with",
        &dir(0),
        "--sign-with",
        &dir(1),
    ]);
    assert!(ok, "{text}");
    let rotated_at = now();
    wait_converged(&[&n1.url, &n2.url, &n3.url], Duration::from_secs(30)).unwrap();

    // Node 3's JWKS: the new keys, and the old ones marked with their end.
    let listed = jwks(&n3.url);
    let retiring: Vec<&Value> = listed
        .iter()
        .filter(|k| k.get("didmesh_retires").is_some())
        .collect();
    assert_eq!(retiring.len(), 3, "{listed:?}");
    let retires = retiring[0]["didmesh_retires"].as_u64().unwrap();
    assert!(
        (rotated_at.saturating_sub(2) + OVERLAP..=rotated_at + OVERLAP + 1).contains(&retires),
        "retires {retires}, rotated at {rotated_at}"
    );
    assert!(retiring.iter().any(|k| k["kid"] == old_kid.as_str()));
    // Every key listed before still is (3 members x 3 kinds), plus the
    // three new ones.
    for k in &old_kids {
        assert!(listed.iter().any(|l| &l["kid"] == k), "{k} dropped early");
    }
    assert_eq!(listed.len(), old_kids.len() + 3);
    // During the window the old token verifies.
    assert!(now() < retires);
    let (status, body) = app.home(Some(&before));
    assert_eq!(
        status, 200,
        "old-kid token refused inside the window: {body}"
    );
    // The node's own verifier (/oidc/userinfo) agrees: the retired kid
    // verifies during the overlap window.
    let userinfo = |t: &str| {
        c.get_bearer(&format!("{}/oidc/userinfo", n3.url), t)
            .unwrap()
            .status
    };
    assert_eq!(userinfo(&before), 200, "userinfo refused an old-kid token");

    // Node 1 signs nothing more with its old Ed25519 key and, without a
    // restart, mints access tokens with the new kid as soon as it has
    // switched its key files (it polls the ledger twice a second).
    let switched = poll(Duration::from_secs(5), Duration::from_millis(100), || {
        std::fs::read_dir(dirs[0].join("retired-keys"))
            .ok()
            .map(|_| ())
    });
    assert!(switched.is_some(), "node 1 did not switch its key files");
    let after = c
        .login(&n1.url, &did, &user)
        .expect("node 1 refused a login right after its rotation");
    let new_kid = kid_of(&after);
    assert_ne!(new_kid, old_kid, "node 1 still signs with its old key");
    assert!(kids(&n3.url).contains(&new_kid));
    // Its member id and membership are unchanged.
    let status = c.get_json(&format!("{}/v1/status", n1.url)).unwrap();
    assert_eq!(status.body["node_did"], status_before.body["node_did"]);
    assert_eq!(status.body["member"], true, "{}", status.body);
    // home-api learns the new kid at its next JWKS fetch (an unknown kid
    // triggers one, at most once a second).
    let t0 = Instant::now();
    let learned = poll(Duration::from_secs(5), Duration::from_millis(100), || {
        (home(&after) == 200).then(|| t0.elapsed())
    });
    let learned =
        learned.unwrap_or_else(|| panic!("new-kid token refused: {:?}", app.home(Some(&after))));
    eprintln!(
        "new-kid token accepted by home-api after {:.2}s",
        learned.as_secs_f64()
    );

    // After the window: the old key leaves the JWKS and its token is
    // refused (within home-api's 1 s JWKS max-age).
    let refused_at = poll(
        Duration::from_secs(OVERLAP + 15),
        Duration::from_millis(250),
        || (home(&before) == 401).then(now),
    )
    .expect("old-kid token still accepted after the window");
    eprintln!(
        "old-kid token accepted until {}s after the rotation, refused {}s after it (window {OVERLAP}s)",
        retires.saturating_sub(rotated_at),
        refused_at.saturating_sub(rotated_at)
    );
    assert!(refused_at >= retires, "refused before the window ended");
    assert!(
        refused_at <= retires + 3,
        "refused {refused_at}, window ended {retires}"
    );
    assert!(!kids(&n3.url).contains(&old_kid));
    assert_eq!(home(&after), 200);
    assert_eq!(userinfo(&before), 401, "userinfo accepted a retired kid");
    assert_eq!(userinfo(&after), 200);
    // The feed follower refuses it too (the rotation's `member` entry,
    // before = end of the window), though its JWKS cache still lists the
    // old kid.
    assert_eq!(cached.home(Some(&before)).0, 401);
    assert_eq!(cached.home(Some(&after)).0, 200);

    // Removal for cause: node 2's token, then members 1 (new key) and 3
    // remove node 2. Its kids leave the JWKS at once and home-api refuses
    // the token within its JWKS max-age.
    let theirs = c.login(&n2.url, &did, &user).unwrap();
    let their_kid = kid_of(&theirs);
    assert_eq!(home(&theirs), 200);
    assert_eq!(cached.home(Some(&theirs)).0, 200);
    let (ok, text) = node_admin(&[
        "member-remove",
        "--node",
        &n3.url,
        "--member",
        &dir(1),
        "--force",
        "--sign-with",
        &dir(0),
        "--sign-with",
        &dir(2),
    ]);
    assert!(ok, "{text}");
    let removed = Instant::now();
    assert!(
        !kids(&n3.url).contains(&their_kid),
        "the removed member's kid is still listed"
    );
    let gone = poll(Duration::from_secs(10), Duration::from_millis(100), || {
        (home(&theirs) == 401).then(|| removed.elapsed())
    })
    .expect("a removed member's token still verifies");
    eprintln!(
        "removed member's token refused {:.2}s after the removal",
        gone.as_secs_f64()
    );
    assert!(gone <= Duration::from_secs(3), "{gone:?}");
    assert_eq!(home(&after), 200);
    // The feed follower: node 2's kid is in its 10-minute JWKS cache, so
    // only the feed's `member` entry (before = at once) refuses it.
    let fed = poll(Duration::from_secs(10), Duration::from_millis(100), || {
        (cached.home(Some(&theirs)).0 == 401).then(|| removed.elapsed())
    })
    .expect("the feed follower still accepts a removed member's token");
    eprintln!(
        "feed follower refused the removed member's token {:.2}s after the removal",
        fed.as_secs_f64()
    );
    assert!(fed <= Duration::from_secs(3), "{fed:?}");
    assert_eq!(cached.home(Some(&after)).0, 200);
}
