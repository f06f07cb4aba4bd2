//! In-process tests of the node's HTTP API: the router driven with
//! `oneshot`, storage in a temporary folder.

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode};
use axum::Router;
use did_core::keys::{public_of, sign_b64};
use did_core::op::did_from_genesis;
use did_core::{DidState, Operation};
use didmesh_node::config::Config;
use didmesh_node::{api, NodeState};
use ed25519_dalek::SigningKey;
use http_body_util::BodyExt as _;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use tower::ServiceExt as _;

struct TestNode {
    _dir: tempfile::TempDir,
    state: Arc<NodeState>,
    app: Router,
}

fn config(dir: &std::path::Path, extra: &[&str]) -> Config {
    use clap::Parser as _;
    let mut args = vec![
        "didmesh-node",
        "--data-dir",
        dir.to_str().unwrap(),
        "--http-addr",
        "127.0.0.1:7001",
        "--auth-rate",
        "0",
        "--ops-rate",
        "0",
    ];
    args.extend(extra);
    Config::parse_from(args)
}

fn node() -> TestNode {
    node_with(&[])
}

fn node_with(extra: &[&str]) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let state = NodeState::open(&config(dir.path(), extra)).unwrap();
    let app =
        api::router(state.clone()).layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 4000))));
    TestNode {
        _dir: dir,
        state,
        app,
    }
}

async fn call(app: &Router, method: &str, uri: &str, body: Option<Vec<u8>>) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(body.map(Body::from).unwrap_or_else(Body::empty))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, v)
}

async fn post(app: &Router, uri: &str, body: Value) -> (StatusCode, Value) {
    call(app, "POST", uri, Some(body.to_string().into_bytes())).await
}

fn now() -> u64 {
    didmesh_node::now()
}

/// Registers a DID for `key`; returns (did, genesis cid).
async fn register(app: &Router, key: &SigningKey) -> (String, did_core::Cid) {
    let op = Operation::create(DidState::single_key(public_of(key)), now(), key).unwrap();
    let (status, body) = post(app, "/v1/ops", serde_json::to_value(&op).unwrap()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let cid = op.cid().unwrap();
    assert_eq!(body["did"], did_from_genesis(&cid));
    (did_from_genesis(&cid), cid)
}

async fn challenge(app: &Router, did: &str) -> (String, String) {
    let (status, body) = post(app, "/v1/auth/challenge", json!({ "did": did })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        body["nonce"].as_str().unwrap().to_string(),
        body["message"].as_str().unwrap().to_string(),
    )
}

async fn login(app: &Router, did: &str, key: &SigningKey) -> (StatusCode, Value) {
    let (nonce, message) = challenge(app, did).await;
    post(
        app,
        "/v1/auth/token",
        json!({"did": did, "nonce": nonce, "signature": sign_b64(key, message.as_bytes())}),
    )
    .await
}

#[tokio::test]
async fn register_resolve_and_login() {
    let n = node();
    let key = SigningKey::from_bytes(&[1; 32]);
    let (did, cid) = register(&n.app, &key).await;

    let (status, res) = call(&n.app, "GET", &format!("/1.0/identifiers/{did}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(res["didDocument"]["id"], did);
    assert_eq!(
        res["didDocument"]["authentication"][0]["publicKeyMultibase"],
        public_of(&key).to_multibase()
    );
    assert_eq!(res["didDocumentMetadata"]["versionId"], cid.to_string());

    let (status, tok) = login(&n.app, &did, &key).await;
    assert_eq!(status, StatusCode::OK, "{tok}");
    assert_eq!(tok["token_type"], "Bearer");
    let token = tok["access_token"].as_str().unwrap();
    // verify with the JWKS the node serves
    let (_, jwks) = call(&n.app, "GET", "/.well-known/jwks.json", None).await;
    let jwk = &jwks["keys"][0];
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.kid.as_deref(), jwk["kid"].as_str());
    let key = jsonwebtoken::DecodingKey::from_ed_components(jwk["x"].as_str().unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_audience(&["home-api"]);
    v.set_issuer(&["https://didmesh.local"]);
    let claims = jsonwebtoken::decode::<did_core::Claims>(token, &key, &v)
        .unwrap()
        .claims;
    assert_eq!(claims.sub, did);
    assert_eq!(claims.amr, vec!["swk"]);
}

#[tokio::test]
async fn did_key_logs_in_without_registering() {
    let n = node();
    let key = SigningKey::from_bytes(&[2; 32]);
    let did = public_of(&key).did_key();
    let (status, tok) = login(&n.app, &did, &key).await;
    assert_eq!(status, StatusCode::OK, "{tok}");
    let (status, res) = call(&n.app, "GET", &format!("/1.0/identifiers/{did}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(res["didDocument"]["id"], did);
}

#[tokio::test]
async fn login_refusals_have_reasons_and_no_token() {
    let n = node();
    let key = SigningKey::from_bytes(&[3; 32]);
    let (did, genesis) = register(&n.app, &key).await;

    // replayed nonce
    let (nonce, message) = challenge(&n.app, &did).await;
    let sig = sign_b64(&key, message.as_bytes());
    let body = json!({"did": did, "nonce": nonce, "signature": sig});
    assert_eq!(
        post(&n.app, "/v1/auth/token", body.clone()).await.0,
        StatusCode::OK
    );
    let (status, err) = post(&n.app, "/v1/auth/token", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "invalid_challenge");
    assert!(err.get("access_token").is_none());

    // key not in authentication
    let stranger = SigningKey::from_bytes(&[4; 32]);
    let (status, err) = login(&n.app, &did, &stranger).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(err["error"], "invalid_signature");

    // signature over another message
    let (nonce, _) = challenge(&n.app, &did).await;
    let sig = sign_b64(&key, b"something else");
    let (status, err) = post(
        &n.app,
        "/v1/auth/token",
        json!({"did": did, "nonce": nonce, "signature": sig}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{err}");

    // nonce issued to another DID
    let other = SigningKey::from_bytes(&[5; 32]);
    let (other_did, _) = register(&n.app, &other).await;
    let (nonce, message) = challenge(&n.app, &other_did).await;
    let sig = sign_b64(&key, message.as_bytes());
    let (status, err) = post(
        &n.app,
        "/v1/auth/token",
        json!({"did": did, "nonce": nonce, "signature": sig}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "invalid_challenge");

    // unknown DID
    let unknown = did_from_genesis(&did_core::Cid::of(b"nobody"));
    let (status, err) = post(&n.app, "/v1/auth/challenge", json!({ "did": unknown })).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["error"], "unknown_did");

    // a key removed by rotation: the challenge was issued before the rotation
    let (nonce, message) = challenge(&n.app, &did).await;
    let new_key = SigningKey::from_bytes(&[6; 32]);
    let rotate = Operation::update(
        &did,
        genesis,
        DidState::single_key(public_of(&new_key)),
        now(),
        &key,
    )
    .unwrap();
    assert_eq!(
        post(&n.app, "/v1/ops", serde_json::to_value(&rotate).unwrap())
            .await
            .0,
        StatusCode::CREATED
    );
    let sig = sign_b64(&key, message.as_bytes());
    let (status, err) = post(
        &n.app,
        "/v1/auth/token",
        json!({"did": did, "nonce": nonce, "signature": sig}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{err}");
    assert_eq!(login(&n.app, &did, &new_key).await.0, StatusCode::OK);

    // deactivated DID: no challenge, and an outstanding one is refused
    let (nonce, message) = challenge(&n.app, &did).await;
    let deact = Operation::deactivate(&did, rotate.cid().unwrap(), now(), &new_key).unwrap();
    assert_eq!(
        post(&n.app, "/v1/ops", serde_json::to_value(&deact).unwrap())
            .await
            .0,
        StatusCode::CREATED
    );
    let sig = sign_b64(&new_key, message.as_bytes());
    let (status, err) = post(
        &n.app,
        "/v1/auth/token",
        json!({"did": did, "nonce": nonce, "signature": sig}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(err["error"], "did_deactivated");
    let (status, _) = post(&n.app, "/v1/auth/challenge", json!({ "did": did })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, res) = call(&n.app, "GET", &format!("/1.0/identifiers/{did}"), None).await;
    assert_eq!(status, StatusCode::GONE);
    assert_eq!(res["didDocumentMetadata"]["deactivated"], true);
}

#[tokio::test]
async fn expired_challenge_is_refused() {
    let n = node();
    let key = SigningKey::from_bytes(&[7; 32]);
    let (did, _) = register(&n.app, &key).await;
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
    let n = node();
    let key = SigningKey::from_bytes(&[8; 32]);
    let (did, genesis) = register(&n.app, &key).await;
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
        });
    state.services.push(did_core::Service {
        id: "home".into(),
        kind: "HomeActivities".into(),
        endpoint: "https://home.example/api".into(),
    });
    state.also_known_as.push("at://alice.example".into());
    let up = Operation::update(&did, genesis, state, now(), &key).unwrap();
    assert_eq!(
        post(&n.app, "/v1/ops", serde_json::to_value(&up).unwrap())
            .await
            .0,
        StatusCode::CREATED
    );
    let did_key = public_of(&key).did_key();
    for id in [did.clone(), did_key] {
        let (status, res) = call(&n.app, "GET", &format!("/1.0/identifiers/{id}"), None).await;
        assert_eq!(status, StatusCode::OK);
        let doc = serde_json::to_vec(&res["didDocument"]).unwrap();
        let parsed = ssi_dids_core::Document::from_json_bytes(&doc)
            .unwrap_or_else(|e| panic!("ssi refuses the document of {id}: {e}"));
        assert_eq!(parsed.id.as_str(), id);
    }
}

#[tokio::test]
async fn bad_bodies_get_reasons_and_change_nothing() {
    let n = node();
    let key = SigningKey::from_bytes(&[10; 32]);
    let (did, genesis) = register(&n.app, &key).await;
    let digest = n.state.status_json()["ledger_digest"].clone();
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
    let mut variants = vec![];
    let mut bad_sig = good.clone();
    bad_sig["sig"] = json!("!!!notbase64");
    variants.push(("invalid base64", bad_sig));
    let mut bad_key = good.clone();
    bad_key["signer"] = json!("z6MkNOTAKEY");
    variants.push(("invalid multibase", bad_key));
    let mut forged = good.clone();
    forged["state"]["also_known_as"] = json!(["at://mallory.example"]);
    variants.push(("forged signature", forged));
    let mut ghost = good.clone();
    ghost["prev"] = json!(did_core::Cid::of(b"ghost").to_string());
    variants.push(("prev that does not exist", ghost));
    let mut future = good.clone();
    future["created_at"] = json!(now() + 10_000);
    variants.push(("clock skew", future));
    for (name, v) in &variants {
        cases.push((name, v.to_string().into_bytes()));
    }
    for (name, body) in cases {
        let (status, err) = call(&n.app, "POST", "/v1/ops", Some(body)).await;
        assert!(status.is_client_error(), "{name}: {status}");
        assert!(
            err["error"].is_string() && err["reason"].is_string(),
            "{name}: {err}"
        );
    }
    assert_eq!(n.state.status_json()["ledger_digest"], digest);
    assert_eq!(
        call(&n.app, "GET", "/healthz", None).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn malformed_did_keys_are_400_with_a_reason_not_a_panic() {
    let n = node();
    // Both made ssi's did:key method panic (an unwrap) before validation.
    let (status, res) = call(&n.app, "GET", "/1.0/identifiers/did:key:a%20b", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{res}");
    assert_eq!(res["didResolutionMetadata"]["error"], "invalidDid", "{res}");
    let (status, err) = post(
        &n.app,
        "/v1/auth/challenge",
        json!({"did": "did:key:z6Mk\u{0}"}),
    )
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
        let (status, res) = call(
            &n.app,
            "GET",
            &format!("/1.0/identifiers/{}", did.replace('#', "%23")),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{did}: {res}");
    }
    assert_eq!(
        call(&n.app, "GET", "/healthz", None).await.0,
        StatusCode::OK
    );
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
    let (status, err) = call(&app, "GET", "/boom", None).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(err["error"], "internal", "{err}");
    assert!(err["reason"].is_string(), "{err}");
    assert_eq!(call(&app, "GET", "/ok", None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn jwks_is_cached_briefly() {
    for (extra, want) in [
        (&[][..], "public, max-age=30"),
        (&["--jwks-max-age", "5"][..], "public, max-age=5"),
    ] {
        let n = node_with(extra);
        let resp = n
            .app
            .clone()
            .oneshot(
                Request::builder()
                    .uri("/.well-known/jwks.json")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["cache-control"], want);
    }
}

#[tokio::test]
async fn a_node_removed_from_membership_issues_no_token_for_an_earlier_challenge() {
    use didmesh_node::identity::{self, Genesis, Member};
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
    let genesis = Genesis::new("https://didmesh.local", members, 3, now());
    let genesis_path = dir.path().join("net-genesis.json");
    genesis.save(&genesis_path).unwrap();
    let state = NodeState::open(&config(
        dir.path(),
        &["--genesis", genesis_path.to_str().unwrap()],
    ))
    .unwrap();
    let app =
        api::router(state.clone()).layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 4000))));
    assert!(state.is_member());

    let user = SigningKey::from_bytes(&[78; 32]);
    let did = public_of(&user).did_key();
    let (nonce, message) = challenge(&app, &did).await;

    let remove = Operation::membership(
        did_core::OpKind::MemberRemove,
        &genesis.network_id,
        None,
        Member::from_key("me", public_of(&mine)),
        now(),
        &[&mine, &others[0], &others[1]],
    )
    .unwrap();
    let (status, body) = post(&app, "/v1/ops", serde_json::to_value(&remove).unwrap()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(!state.is_member());

    let (status, err) = post(
        &app,
        "/v1/auth/token",
        json!({"did": did, "nonce": nonce, "signature": sign_b64(&user, message.as_bytes())}),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert_eq!(err["error"], "not_a_member");
    assert!(err.get("access_token").is_none());
    // and its JWKS no longer names it
    let (_, jwks) = call(&app, "GET", "/.well-known/jwks.json", None).await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 4, "{jwks}");
}

#[tokio::test]
async fn op_bursts_beyond_the_limit_get_429_with_retry_after() {
    // --ops-rate 1: bursts of 5 per network, then one a second.
    let n = node_with(&["--ops-rate", "1"]);
    let mut accepted = vec![];
    let mut refused = 0;
    for i in 0..12u8 {
        let key = SigningKey::from_bytes(&[100 + i; 32]);
        let op = Operation::create(DidState::single_key(public_of(&key)), now(), &key).unwrap();
        let resp = n
            .app
            .clone()
            .oneshot(
                Request::builder()
                    .method("POST")
                    .uri("/v1/ops")
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&op).unwrap()))
                    .unwrap(),
            )
            .await
            .unwrap();
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
    let other = api::router(n.state.clone())
        .layer(MockConnectInfo(SocketAddr::from(([127, 0, 1, 1], 4000))));
    let key = SigningKey::from_bytes(&[99; 32]);
    register(&other, &key).await;
    // Every accepted op is held.
    let ledger = n.state.ledger.read().unwrap();
    for cid in &accepted {
        assert!(ledger.contains(cid), "{cid}");
    }
}
