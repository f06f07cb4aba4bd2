//! In-process tests of the node's HTTP API: the testkit's [`RouterNode`]
//! (the node's router driven with `oneshot`, storage in a temporary
//! folder); logins go through the client library over its loopback socket.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use did_core::keys::{public_of, sign_b64};
use did_core::op::did_from_genesis;
use did_core::{DidState, Operation};
use didmesh_node::api;
use didmesh_tests::issuer;
use didmesh_tests::now;
use didmesh_tests::router::{self, RouterNode};
use ed25519_dalek::SigningKey;
use http_body_util::BodyExt as _;
use serde_json::{json, Value};
use std::net::SocketAddr;

#[tokio::test]
async fn register_resolve_and_login() {
    let n = RouterNode::start().await;
    let key = SigningKey::from_bytes(&[1; 32]);
    let (did, cid) = n.register(&key).await;

    let (status, res) = n.get(&format!("/1.0/identifiers/{did}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(res["didDocument"]["id"], did);
    assert_eq!(
        res["didDocument"]["authentication"][0]["publicKeyMultibase"],
        public_of(&key).to_multibase()
    );
    assert_eq!(res["didDocumentMetadata"]["versionId"], cid.to_string());

    let token = n.login(&did, &key).await.unwrap();
    // verify with the JWKS the node serves
    let (_, jwks) = n.get("/.well-known/jwks.json").await;
    assert_eq!(
        issuer::header(&token)["kid"],
        jwks["keys"][0]["kid"],
        "{jwks}"
    );
    let claims = issuer::verify(&token, &jwks, "https://didmesh.local", "home-api").unwrap();
    assert_eq!(claims["sub"], did.as_str());
    assert_eq!(claims["amr"], json!(["swk"]));
}

#[tokio::test]
async fn did_key_logs_in_without_registering() {
    let n = RouterNode::start().await;
    let key = SigningKey::from_bytes(&[2; 32]);
    let did = public_of(&key).did_key();
    n.login(&did, &key).await.unwrap();
    let (status, res) = n.get(&format!("/1.0/identifiers/{did}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(res["didDocument"]["id"], did);
}

#[tokio::test]
async fn login_refusals_have_reasons_and_no_token() {
    let n = RouterNode::start().await;
    let key = SigningKey::from_bytes(&[3; 32]);
    let (did, genesis) = n.register(&key).await;

    // replayed nonce
    let (nonce, message) = n.challenge(&did).await;
    let sig = sign_b64(&key, message.as_bytes());
    assert_eq!(n.redeem(&did, &nonce, &sig).await.0, StatusCode::OK);
    let (status, err) = n.redeem(&did, &nonce, &sig).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "invalid_challenge");
    assert!(err.get("access_token").is_none());

    // key not in authentication
    let stranger = SigningKey::from_bytes(&[4; 32]);
    let err = n.login(&did, &stranger).await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    assert_eq!(err.error(), Some("invalid_signature"), "{err}");

    // signature over another message
    let (nonce, _) = n.challenge(&did).await;
    let sig = sign_b64(&key, b"something else");
    let (status, err) = n.redeem(&did, &nonce, &sig).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{err}");

    // nonce issued to another DID
    let other = SigningKey::from_bytes(&[5; 32]);
    let (other_did, _) = n.register(&other).await;
    let (nonce, message) = n.challenge(&other_did).await;
    let sig = sign_b64(&key, message.as_bytes());
    let (status, err) = n.redeem(&did, &nonce, &sig).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "invalid_challenge");

    // unknown DID
    let unknown = did_from_genesis(&did_core::Cid::of(b"nobody"));
    let (status, err) = n
        .post("/v1/auth/challenge", json!({ "did": unknown }))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["error"], "unknown_did");

    // a key removed by rotation: the challenge was issued before the rotation
    let (nonce, message) = n.challenge(&did).await;
    let new_key = SigningKey::from_bytes(&[6; 32]);
    let rotate = Operation::update(
        &did,
        genesis,
        DidState::single_key(public_of(&new_key)),
        now(),
        &key,
    )
    .unwrap();
    assert_eq!(n.submit(&rotate).await.0, StatusCode::CREATED);
    let sig = sign_b64(&key, message.as_bytes());
    let (status, err) = n.redeem(&did, &nonce, &sig).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{err}");
    n.login(&did, &new_key).await.unwrap();

    // deactivated DID: no challenge, and an outstanding one is refused
    let (nonce, message) = n.challenge(&did).await;
    let deact = Operation::deactivate(&did, rotate.cid().unwrap(), now(), &new_key).unwrap();
    assert_eq!(n.submit(&deact).await.0, StatusCode::CREATED);
    let sig = sign_b64(&new_key, message.as_bytes());
    let (status, err) = n.redeem(&did, &nonce, &sig).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(err["error"], "did_deactivated");
    let (status, _) = n.post("/v1/auth/challenge", json!({ "did": did })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, res) = n.get(&format!("/1.0/identifiers/{did}")).await;
    assert_eq!(status, StatusCode::GONE);
    assert_eq!(res["didDocumentMetadata"]["deactivated"], true);
}

#[tokio::test]
async fn expired_challenge_is_refused() {
    let n = RouterNode::start().await;
    let key = SigningKey::from_bytes(&[7; 32]);
    let (did, _) = n.register(&key).await;
    let t = now();
    let ch = n
        .state
        .auth
        .challenge(&n.state.ledger, &did, None, t)
        .unwrap();
    let sig = sign_b64(&key, ch.message.as_bytes());
    let late = ch.expires_at + 1;
    let err = n
        .state
        .auth
        .token(&n.state.ledger, &did, &ch.nonce, &sig, late)
        .unwrap_err();
    assert!(
        matches!(err, didmesh_node::auth::AuthError::Expired),
        "{err}"
    );
    // and it is gone: the same nonce is unknown afterwards
    let err = n
        .state
        .auth
        .token(&n.state.ledger, &did, &ch.nonce, &sig, t)
        .unwrap_err();
    assert!(
        matches!(err, didmesh_node::auth::AuthError::UnknownNonce),
        "{err}"
    );
}

#[tokio::test]
async fn served_documents_parse_with_ssi() {
    let n = RouterNode::start().await;
    let key = SigningKey::from_bytes(&[8; 32]);
    let (did, genesis) = n.register(&key).await;
    let mut state = DidState::single_key(public_of(&key));
    state
        .verification_methods
        .push(did_core::VerificationMethod {
            id: "phone".into(),
            public_key_multibase: public_of(&SigningKey::from_bytes(&[9; 32])),
            relationships: vec![
                did_core::Relationship::Authentication,
                did_core::Relationship::Assertion,
            ],
            device: None,
        });
    state.services.push(did_core::Service {
        id: "home".into(),
        kind: "HomeActivities".into(),
        endpoint: "https://home.example/api".into(),
    });
    state.also_known_as.push("at://alice.example".into());
    let up = Operation::update(&did, genesis, state, now(), &key).unwrap();
    assert_eq!(n.submit(&up).await.0, StatusCode::CREATED);
    let did_key = public_of(&key).did_key();
    for id in [did.clone(), did_key] {
        let (status, res) = n.get(&format!("/1.0/identifiers/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        let doc = serde_json::to_vec(&res["didDocument"]).unwrap();
        let parsed = ssi_dids_core::Document::from_json_bytes(&doc)
            .unwrap_or_else(|e| panic!("ssi refuses the document of {id}: {e}"));
        assert_eq!(parsed.id.as_str(), id);
    }
}

#[tokio::test]
async fn bad_bodies_get_reasons_and_change_nothing() {
    let n = RouterNode::start().await;
    let key = SigningKey::from_bytes(&[10; 32]);
    let (did, genesis) = n.register(&key).await;
    let digest = n.status().await["ledger_digest"].clone();
    let good = serde_json::to_value(
        Operation::update(
            &did,
            genesis,
            DidState::single_key(public_of(&key)),
            now(),
            &key,
        )
        .unwrap(),
    )
    .unwrap();
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("malformed json", b"{not json".to_vec()),
        ("wrong types", br#"{"type":"update","did":5}"#.to_vec()),
        ("unknown kind", br#"{"type":"merge"}"#.to_vec()),
        ("oversize", vec![b' '; 70 * 1024]),
    ];
    let variant = |field: &[&str], value: Value| {
        let mut v = good.clone();
        let (last, path) = field.split_last().unwrap();
        let mut at = &mut v;
        for f in path {
            at = &mut at[*f];
        }
        at[*last] = value;
        v.to_string().into_bytes()
    };
    cases.extend([
        ("invalid base64", variant(&["sig"], json!("!!!notbase64"))),
        (
            "invalid multibase",
            variant(&["signer"], json!("z6MkNOTAKEY")),
        ),
        (
            "forged signature",
            variant(&["state", "also_known_as"], json!(["at://mallory.example"])),
        ),
        (
            "prev that does not exist",
            variant(&["prev"], json!(did_core::Cid::of(b"ghost").to_string())),
        ),
        (
            "clock skew",
            variant(&["created_at"], json!(now() + 10_000)),
        ),
    ]);
    for (name, body) in cases {
        let (status, err) = n.call("POST", "/v1/ops", Some(body)).await;
        assert!(status.is_client_error(), "{name}: {status}");
        assert!(
            err["error"].is_string() && err["reason"].is_string(),
            "{name}: {err}"
        );
    }
    assert_eq!(n.status().await["ledger_digest"], digest);
    assert_eq!(n.get("/healthz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn malformed_did_keys_are_400_with_a_reason_not_a_panic() {
    let n = RouterNode::start().await;
    // Both made ssi's did:key method panic (an unwrap) before validation.
    let (status, res) = n.get("/1.0/identifiers/did:key:a%20b").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{res}");
    assert_eq!(res["didResolutionMetadata"]["error"], "invalidDid", "{res}");
    let (status, err) = n
        .post("/v1/auth/challenge", json!({"did": "did:key:z6Mk\u{0}"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"], "invalid_request");
    assert!(err["reason"].as_str().unwrap().contains("did:key"), "{err}");
    for did in [
        "did:key:z",
        "did:key:zzzz",
        "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK%00",
        "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK#frag",
    ] {
        let uri = format!("/1.0/identifiers/{}", did.replace('#', "%23"));
        let (status, res) = n.get(&uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{did}: {res}");
    }
    assert_eq!(n.get("/healthz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_json_and_the_node_carries_on() {
    use axum::routing::get;
    let app = api::guard(
        Router::new()
            .route(
                "/boom",
                get(|| async {
                    let v: Vec<u8> = std::hint::black_box(vec![]);
                    v[1].to_string()
                }),
            )
            .route("/ok", get(|| async { "ok" })),
        None,
    );
    let (status, err) = router::call(&app, "GET", "/boom", None).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(err["error"], "internal", "{err}");
    assert!(err["reason"].is_string(), "{err}");
    assert_eq!(
        router::call(&app, "GET", "/ok", None).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn jwks_is_cached_briefly() {
    for (extra, want) in [
        (&[][..], "public, max-age=30"),
        (&["--jwks-max-age", "5"][..], "public, max-age=5"),
    ] {
        let n = RouterNode::start_with(extra).await;
        let resp = n
            .send(
                Request::builder()
                    .uri("/.well-known/jwks.json")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["cache-control"], want);
    }
}

#[tokio::test]
async fn a_node_removed_from_membership_issues_no_token_for_an_earlier_challenge() {
    use didmesh_node::identity::{self, Genesis, GenesisFile as _, Member};
    let dir = tempfile::tempdir().unwrap();
    // A five-member network (quorum 3): this node and four others; three
    // sign the removal, which leaves four members (able to lose one more).
    let mine = identity::load_or_create_member_key(dir.path()).unwrap();
    let others: Vec<SigningKey> = (0..4)
        .map(|i| SigningKey::from_bytes(&[77 + i; 32]))
        .collect();
    let mut members = vec![Member::from_key("me", public_of(&mine))];
    members.extend(
        others
            .iter()
            .enumerate()
            .map(|(i, k)| Member::from_key(&format!("other{i}"), public_of(k))),
    );
    let genesis = Genesis::new("https://didmesh.local", members, 3, now()).unwrap();
    let genesis_path = dir.path().join("net-genesis.json");
    genesis.save(&genesis_path).unwrap();
    let n = RouterNode::open(dir.path(), &["--genesis", genesis_path.to_str().unwrap()]).await;
    assert_eq!(n.status().await["member"], true);

    let user = SigningKey::from_bytes(&[78; 32]);
    let did = public_of(&user).did_key();
    let (nonce, message) = n.challenge(&did).await;

    let remove = Operation::membership(
        did_core::OpKind::MemberRemove,
        &genesis.network_id,
        None,
        Member::from_key("me", public_of(&mine)),
        now(),
        &[&mine, &others[0], &others[1]],
    )
    .unwrap();
    let (status, body) = n.submit(&remove).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(n.status().await["member"], false);

    let (status, err) = n
        .redeem(&did, &nonce, &sign_b64(&user, message.as_bytes()))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert_eq!(err["error"], "not_a_member");
    assert!(err.get("access_token").is_none());
    // nor through the client library
    let err = n.login(&did, &user).await.unwrap_err();
    assert_eq!(err.status(), Some(503), "{err}");
    // and its JWKS no longer names it
    let (_, jwks) = n.get("/.well-known/jwks.json").await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 4, "{jwks}");
}

#[tokio::test]
async fn op_bursts_beyond_the_limit_get_429_with_retry_after() {
    // --ops-rate 1: bursts of 5 per network, then one a second.
    let n = RouterNode::start_with(&["--ops-rate", "1"]).await;
    let mut accepted = vec![];
    let mut refused = 0;
    for i in 0..12u8 {
        let key = SigningKey::from_bytes(&[100 + i; 32]);
        let op = Operation::create(DidState::single_key(public_of(&key)), now(), &key).unwrap();
        let resp = n
            .send(
                Request::builder()
                    .method("POST")
                    .uri("/v1/ops")
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&op).unwrap()))
                    .unwrap(),
            )
            .await;
        let status = resp.status();
        let retry = resp.headers().get("retry-after").cloned();
        let body: Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        match status {
            StatusCode::CREATED => accepted.push(op.cid().unwrap()),
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                assert_eq!(body["error"], "rate_limited", "{body}");
                assert!(body["reason"].as_str().unwrap().contains("ops"), "{body}");
                let secs: u64 = retry.unwrap().to_str().unwrap().parse().unwrap();
                assert!((1..=2).contains(&secs), "{secs}");
            }
            other => panic!("{other}: {body}"),
        }
    }
    println!(
        "12 ops at once with --ops-rate 1: {} accepted, {refused} refused",
        accepted.len()
    );
    assert!((5..=6).contains(&accepted.len()), "{}", accepted.len());
    assert_eq!(accepted.len() + refused, 12);
    // Another network is not affected.
    let other = n.from_client(SocketAddr::from(([127, 0, 1, 1], 4000)));
    router::register(&other, &SigningKey::from_bytes(&[99; 32])).await;
    // Every accepted op is held.
    for cid in &accepted {
        let (status, _) = n
            .get(&format!("/v1/dids/{}/log", did_from_genesis(cid)))
            .await;
        assert_eq!(status, StatusCode::OK, "{cid}");
    }
}

/// Sends `n` creates through `app`, each with the `X-Forwarded-For` that
/// `xff(i)` gives; how many were accepted.
async fn creates_with_xff(app: &Router, n: u8, seed: u8, xff: impl Fn(u8) -> String) -> usize {
    let mut accepted = 0;
    for i in 0..n {
        let key = SigningKey::from_bytes(&[seed.wrapping_add(i); 32]);
        let op = Operation::create(DidState::single_key(public_of(&key)), now(), &key).unwrap();
        let resp = router::send(
            app,
            Request::builder()
                .method("POST")
                .uri("/v1/ops")
                .header("content-type", "application/json")
                .header("x-forwarded-for", xff(i))
                .body(Body::from(serde_json::to_vec(&op).unwrap()))
                .unwrap(),
        )
        .await;
        match resp.status() {
            StatusCode::CREATED => accepted += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("{other}"),
        }
    }
    accepted
}

#[tokio::test]
async fn only_a_trusted_proxy_can_name_the_client_for_rate_limits() {
    // --ops-rate 1: bursts of 5 per network. The front door is 127.0.9.9.
    let n = RouterNode::start_with(&["--ops-rate", "1", "--trusted-proxy", "127.0.9.9"]).await;
    let door = n.from_client(SocketAddr::from(([127, 0, 9, 9], 40000)));
    // Twelve browsers in twelve networks behind the door: each has its own
    // budget (the door appends the address it saw, last).
    let through_door =
        creates_with_xff(&door, 12, 10, |i| format!("203.0.113.1, 198.51.{i}.7")).await;
    assert_eq!(through_door, 12, "clients behind the door share one budget");
    // One client behind the door lying in the entries before the door's:
    // still one network.
    let liar = creates_with_xff(&door, 12, 40, |i| format!("198.51.{i}.7, 192.0.2.55")).await;
    assert!((5..=6).contains(&liar), "{liar}");
    // A client that is not the door claims other addresses: ignored.
    let direct = n.from_client(SocketAddr::from(([10, 1, 2, 3], 5000)));
    let spoofer = creates_with_xff(&direct, 12, 70, |i| format!("198.51.{i}.7")).await;
    assert!((5..=6).contains(&spoofer), "{spoofer}");
}
