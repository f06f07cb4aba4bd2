//! The OpenID provider on a cluster of real nodes: an authorization code
//! is single-use across nodes (the redeeming node has the issuing node
//! consume it over libp2p, and fails closed when it cannot), and a sign-in
//! can be approved from the CLI wallet (`didmesh approve`).
//!
//! The browser is simulated the way the sign-in page works: `GET
//! /oidc/authorize`, the page's `#didmesh-request` JSON, its JSON calls at
//! `node_url` ([`didmesh_tests::oidc`]). Needs the binaries: `cargo build
//! -p didmesh-node --bins`, then `cargo test -p didmesh-tests --test
//! oidc_cluster`.

use did_core::keys::sign_b64;
use didmesh_tests::cluster::{start_peer, wait_peers, Cluster};
use didmesh_tests::http::blocking_client;
use didmesh_tests::oidc::{
    authorize, code_for, node_url, query_param, redeem, register_client, Pkce, Rp,
};
use didmesh_tests::ops::{create_op, key};
use didmesh_tests::poll;
use serde_json::json;
use std::time::{Duration, Instant};

/// A cluster of three founders with a public client registered by one DID
/// and a user DID, both known to every node.
fn setup(out: &std::path::Path, seed: u8) -> (Cluster, Rp, String, ed25519_dalek::SigningKey) {
    let cluster = Cluster::start(out, 3, &[]);
    let c = blocking_client();
    let rp = register_client(
        &c,
        cluster.url(0),
        &key(seed, 0),
        "Cluster Test App",
        "http://localhost:9/callback",
    );
    let user = key(seed, 1);
    let (create, did) = create_op(&user);
    assert!(c.submit(cluster.url(0), &create).is_success());
    cluster
        .wait_converged(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    (cluster, rp, did, user)
}

fn error_of(a: &didmesh_tests::http::Answer) -> &str {
    a.body["error"].as_str().unwrap_or_default()
}

#[test]
fn a_code_redeems_once_at_any_node_and_never_when_its_issuer_is_down() {
    let out = tempfile::tempdir().unwrap();
    let (mut cluster, rp, did, user) = setup(out.path(), 61);
    let c = blocking_client();
    let pkce = Pkce::new(1);

    // Issued at node 1, redeemed at node 2: node 2 has node 1 consume it.
    let code = code_for(&c, cluster.url(0), &rp, &pkce, &did, &user);
    let first = redeem(&c, cluster.url(1), &rp, &code, &pkce.verifier);
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert!(first.body["id_token"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    assert!(first.body["access_token"].as_str().is_some());

    // The same code again, at a third node and at the issuer itself.
    for i in [2, 0, 1] {
        let again = redeem(&c, cluster.url(i), &rp, &code, &pkce.verifier);
        assert_eq!(
            again.status,
            400,
            "replay at node {}: {:?}",
            i + 1,
            again.body
        );
        assert_eq!(
            error_of(&again),
            "invalid_grant",
            "replay at node {}",
            i + 1
        );
        assert!(again.body.get("id_token").is_none());
    }

    // Issued and redeemed at the same node: the local check.
    let local = code_for(&c, cluster.url(1), &rp, &pkce, &did, &user);
    assert_eq!(
        redeem(&c, cluster.url(1), &rp, &local, &pkce.verifier).status,
        200
    );
    let again = redeem(&c, cluster.url(1), &rp, &local, &pkce.verifier);
    assert_eq!(error_of(&again), "invalid_grant");

    // The issuer restarts: its memory of used codes is gone, so it refuses
    // every code of its previous run, used (a replay) or not.
    let used = code_for(&c, cluster.url(1), &rp, &pkce, &did, &user);
    let unused = code_for(&c, cluster.url(1), &rp, &pkce, &did, &user);
    assert_eq!(
        redeem(&c, cluster.url(0), &rp, &used, &pkce.verifier).status,
        200
    );
    cluster.nodes[1].kill9();
    let seed = cluster.seed();
    cluster.nodes[1] = start_peer(&cluster.dirs[1], &[seed], &[]);
    assert!(
        wait_peers(&cluster.urls(), 2, Duration::from_secs(60)),
        "the restarted node did not reconnect"
    );
    for code in [&used, &unused] {
        for i in [0, 1] {
            let a = redeem(&c, cluster.url(i), &rp, code, &pkce.verifier);
            assert_eq!(
                a.status,
                400,
                "after the restart, at node {}: {:?}",
                i + 1,
                a.body
            );
            assert_eq!(error_of(&a), "invalid_grant");
        }
    }
    // ...and codes of its new run work.
    let fresh = code_for(&c, cluster.url(1), &rp, &pkce, &did, &user);
    assert_eq!(
        redeem(&c, cluster.url(2), &rp, &fresh, &pkce.verifier).status,
        200
    );

    // A code whose issuing node hangs (SIGSTOP: connected, never answers)
    // or is down cannot be redeemed anywhere, since no one can vouch for
    // its first use: invalid_grant within the consume timeout (3 s), not a
    // hang, and not a token.
    let hung = code_for(&c, cluster.url(2), &rp, &pkce, &did, &user);
    let down = code_for(&c, cluster.url(2), &rp, &pkce, &did, &user);
    let pid = cluster.nodes[2].proc.child.id().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    let started = Instant::now();
    let refused = redeem(&c, cluster.url(0), &rp, &hung, &pkce.verifier);
    let took_hung = started.elapsed();
    signal("-CONT");
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    assert_eq!(error_of(&refused), "invalid_grant");
    assert!(
        took_hung >= Duration::from_millis(2900) && took_hung < Duration::from_secs(6),
        "refusal with the issuer hung took {took_hung:?}"
    );
    cluster.nodes[2].kill9();
    let started = Instant::now();
    let refused = redeem(&c, cluster.url(0), &rp, &down, &pkce.verifier);
    let took_down = started.elapsed();
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    assert_eq!(error_of(&refused), "invalid_grant");
    assert!(
        took_down < Duration::from_secs(6),
        "refusal took {took_down:?}"
    );
    println!("issuer hung: invalid_grant in {took_hung:?}; issuer down: in {took_down:?}");
}

#[test]
fn a_sign_in_approved_from_the_wallet_redeems_at_another_node() {
    let out = tempfile::tempdir().unwrap();
    let (cluster, rp, did, user) = setup(out.path(), 62);
    let c = blocking_client();
    let pkce = Pkce::new(2);
    let request = authorize(&c, cluster.url(0), &rp, &pkce, "nonce-approve");
    let at = node_url(&request, cluster.url(0));

    // The page asks for a pending login and shows the code.
    let created = c
        .post_json(
            &format!("{at}/oidc/signin/pending"),
            &json!({"request": request["request"], "did": did}),
        )
        .unwrap();
    assert_eq!(created.status, 200, "{:?}", created.body);
    let code = created.body["code"].as_str().unwrap().to_string();
    let pending_id = created.body["pending_id"].as_str().unwrap().to_string();
    assert_eq!(code.len(), 9, "{code}");
    assert_eq!(&code[4..5], "-");
    let poll_status = || {
        c.get_json(&format!("{at}/oidc/signin/pending/{pending_id}"))
            .unwrap()
            .body
    };
    assert_eq!(poll_status()["status"], "waiting");

    // The wallet reads it as the person typed it: lower case, no dash.
    let typed = code.replace('-', "").to_lowercase();
    let shown = c.get_json(&format!("{at}/v1/approvals/{typed}")).unwrap();
    assert_eq!(shown.status, 200, "{:?}", shown.body);
    assert_eq!(shown.body["did"], did.as_str());
    assert_eq!(shown.body["client_id"], rp.client_id.as_str());
    assert_eq!(shown.body["client_name"], rp.name.as_str());
    assert_eq!(shown.body["redirect_uri"], rp.redirect_uri.as_str());
    let message = shown.body["message"].as_str().unwrap().to_string();
    assert!(message.contains(&did), "{message}");
    assert!(
        message.contains(&rp.client_id),
        "audience is the client: {message}"
    );

    // Someone else's key (another DID) signs: refused, still waiting.
    let other = key(62, 9);
    let wrong = c
        .post_json(
            &format!("{at}/v1/approvals/{code}"),
            &json!({"signature": sign_b64(&other, message.as_bytes())}),
        )
        .unwrap();
    assert_eq!(wrong.status, 401, "{:?}", wrong.body);
    assert_eq!(error_of(&wrong), "invalid_signature");
    assert_eq!(poll_status()["status"], "waiting");

    // The DID's own key approves.
    let ok = c
        .post_json(
            &format!("{at}/v1/approvals/{code}"),
            &json!({"signature": sign_b64(&user, message.as_bytes())}),
        )
        .unwrap();
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(ok.body["approved"], true);
    let again = c
        .post_json(
            &format!("{at}/v1/approvals/{code}"),
            &json!({"signature": sign_b64(&user, message.as_bytes())}),
        )
        .unwrap();
    assert_eq!(again.status, 409, "{:?}", again.body);

    // The page's next poll has the redirect; its code redeems at node 2.
    let status = poll(Duration::from_secs(5), Duration::from_millis(100), || {
        let s = poll_status();
        (s["status"] == "approved").then_some(s)
    })
    .expect("approved");
    let redirect = status["redirect"].as_str().unwrap();
    assert!(redirect.starts_with(&rp.redirect_uri), "{redirect}");
    assert_eq!(query_param(redirect, "state").as_deref(), Some("st-1"));
    let auth_code = query_param(redirect, "code").expect("code in the redirect");
    let token = redeem(&c, cluster.url(1), &rp, &auth_code, &pkce.verifier);
    assert_eq!(token.status, 200, "{:?}", token.body);
    assert!(token.body["id_token"].as_str().is_some());

    // Guessing codes: unknown ones are 404, and a network that keeps
    // guessing is cut off (429) before it can try many.
    let statuses: Vec<u16> = (0..12)
        .map(|i| {
            c.get_json(&format!("{at}/v1/approvals/ZZZZ-ZZ{i:02}"))
                .unwrap()
                .status
        })
        .collect();
    assert!(statuses[..10].iter().all(|s| *s == 404), "{statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");
}
