//! The revocation feed of one node (`GET /v1/revocations`, PROTOCOL.md
//! "Revocation"): entries derived from committed ops, pages of at most
//! 1,000 with a cursor, the long-poll, the JWS signature by the member's
//! Ed25519 key, and the node's own refusals (userinfo, new logins).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use did_core::keys::public_of;
use did_core::op::{Revocations, RevokedJti};
use did_core::{Cid, DidState, Operation, Relationship, VerificationMethod};
use didmesh_tests::router::RouterNode;
use ed25519_dalek::SigningKey;
use serde_json::Value;
use std::time::{Duration, Instant};

fn now() -> u64 {
    didmesh_tests::now()
}

/// Verifies the compact JWS against the node's JWKS (the Ed25519 key
/// named by `kid`) and returns (header, payload).
async fn page(node: &RouterNode, query: &str) -> (Value, Value) {
    let (status, body) = node.get(&format!("/v1/revocations{query}")).await;
    assert_eq!(status, 200, "{body}");
    let jws = body.as_str().unwrap_or_else(|| panic!("not a JWS: {body}"));
    let parts: Vec<&str> = jws.split('.').collect();
    assert_eq!(parts.len(), 3, "compact JWS: {jws}");
    let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).unwrap();
    let header: Value = serde_json::from_slice(&decode(parts[0])).unwrap();
    let payload: Value = serde_json::from_slice(&decode(parts[1])).unwrap();
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "didmesh-revocations+jwt");
    let (_, jwks) = node.get("/.well-known/jwks.json").await;
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .unwrap_or_else(|| panic!("kid {} not in the JWKS", header["kid"]))
        .clone();
    assert_eq!(jwk["kty"], "OKP");
    let x: [u8; 32] = decode(jwk["x"].as_str().unwrap()).try_into().unwrap();
    let key = ed25519_dalek::VerifyingKey::from_bytes(&x).unwrap();
    let sig = ed25519_dalek::Signature::from_slice(&decode(parts[2])).unwrap();
    key.verify_strict(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
        .expect("the page's signature verifies with the member's JWKS key");
    // A page altered in transit does not verify.
    let mut forged = payload.clone();
    forged["entries"] = serde_json::json!([]);
    let forged_b64 = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
    if forged_b64 != parts[1] {
        assert!(key
            .verify_strict(format!("{}.{forged_b64}", parts[0]).as_bytes(), &sig)
            .is_err());
    }
    (header, payload)
}

/// Waits (up to 10 s) until the feed's cursor reaches `n`.
async fn wait_cursor(node: &RouterNode, n: u64) {
    let feed = node.state.oidc.revocations.get().unwrap().clone();
    for _ in 0..100 {
        if feed.cursor() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the feed's cursor is {} after 10 s, not {n}", feed.cursor());
}

struct Did {
    did: String,
    head: Cid,
    state: DidState,
    key: SigningKey,
    at: u64,
}

impl Did {
    async fn register(node: &RouterNode, seed: u8) -> Did {
        let key = SigningKey::from_bytes(&[seed; 32]);
        let (did, head) = node.register(&key).await;
        Did {
            did,
            head,
            state: DidState::single_key(public_of(&key)),
            key,
            at: now(),
        }
    }

    async fn update(&mut self, node: &RouterNode, state: DidState) -> (u16, Value) {
        self.at = self.at.max(now());
        let op =
            Operation::update(&self.did, self.head, state.clone(), self.at, &self.key).unwrap();
        let (status, body) = node.submit(&op).await;
        if status.is_success() {
            self.head = op.cid().unwrap();
            self.state = state;
        }
        (status.as_u16(), body)
    }
}

fn revoked(before: u64, jti: &[&str]) -> Revocations {
    Revocations {
        before,
        jti: jti
            .iter()
            .map(|j| RevokedJti {
                jti: j.to_string(),
                exp: now() + 3600,
            })
            .collect(),
    }
}

#[tokio::test]
async fn entries_follow_the_ledger_with_a_cursor_and_a_signature() {
    let node = RouterNode::start().await;
    let (_, first) = page(&node, "").await;
    assert_eq!(first["entries"], serde_json::json!([]));
    assert_eq!(first["cursor"], 0);
    let feed_id = first["feed"].as_str().unwrap().to_string();
    assert!(!feed_id.is_empty());

    let mut alice = Did::register(&node, 11).await;
    // A second authentication key, then its removal: a "key" entry.
    let phone = SigningKey::from_bytes(&[12; 32]);
    let mut two = alice.state.clone();
    two.verification_methods.push(VerificationMethod {
        id: "phone".into(),
        public_key_multibase: public_of(&phone),
        relationships: vec![Relationship::Authentication],
        device: None,
    });
    assert_eq!(alice.update(&node, two).await.0, 201);
    let mut s = alice.state.clone();
    s.verification_methods.retain(|vm| vm.id != "phone");
    assert_eq!(alice.update(&node, s).await.0, 201);
    // Sign-out everywhere and one jti.
    let mut s = alice.state.clone();
    s.revocations = revoked(now(), &["00112233445566778899aabbccddeeff"]);
    assert_eq!(alice.update(&node, s).await.0, 201);

    // The feed follows commits asynchronously: poll until all three.
    let mut p = Value::Null;
    for _ in 0..50 {
        p = page(&node, "?since=0&wait=5").await.1;
        if p["entries"].as_array().unwrap().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let entries = p["entries"].as_array().unwrap();
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["key", "did", "jti"], "{p}");
    assert_eq!(entries[0]["key"], public_of(&phone).to_string());
    assert_eq!(entries[1]["did"], alice.did.as_str());
    assert_eq!(entries[2]["jti"], "00112233445566778899aabbccddeeff");
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(p["cursor"], 3);
    assert_eq!(p["feed"], feed_id.as_str());
    assert_eq!(p["iss"], node.state.genesis.issuer.as_str());

    // After the cursor: nothing; from the middle: the rest.
    let (_, p) = page(&node, "?since=3").await;
    assert_eq!(p["entries"], serde_json::json!([]));
    assert_eq!(p["cursor"], 3);
    let (_, p) = page(&node, "?since=2").await;
    assert_eq!(p["entries"].as_array().unwrap().len(), 1);

    // Idempotent: re-deriving from the ledger adds nothing.
    let feed = node.state.oidc.revocations.get().unwrap().clone();
    assert_eq!(feed.catch_up(&node.state.ledger).unwrap(), 0);
    assert_eq!(feed.cursor(), 3);

    // Bad query: a JSON 400.
    let (status, body) = node.get("/v1/revocations?since=-1").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_request");
}

#[tokio::test]
async fn pages_hold_at_most_1000_entries() {
    let node = RouterNode::start().await;
    let mut bob = Did::register(&node, 21).await;
    // 17 updates of 64 fresh jti each: 1,088 entries.
    for round in 0..17u32 {
        let mut s = bob.state.clone();
        let ids: Vec<String> = (0..64u32)
            .map(|i| format!("{round:016x}{i:016x}"))
            .collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        s.revocations = revoked(0, &refs);
        let (status, body) = bob.update(&node, s).await;
        assert_eq!(status, 201, "{body}");
    }
    wait_cursor(&node, 1088).await;
    let (_, p) = page(&node, "?since=0").await;
    assert_eq!(p["entries"].as_array().unwrap().len(), 1000);
    assert_eq!(p["cursor"], 1000);
    let (_, p) = page(&node, "?since=1000").await;
    assert_eq!(p["entries"].as_array().unwrap().len(), 88);
    assert_eq!(p["cursor"], 1088);
}

#[tokio::test]
async fn a_long_poll_answers_when_an_entry_arrives_and_empty_at_the_timeout() {
    let node = RouterNode::start().await;
    let mut carol = Did::register(&node, 31).await;
    // Empty at the timeout, after about `wait`.
    let started = Instant::now();
    let (_, p) = page(&node, "?since=0&wait=1").await;
    let waited = started.elapsed();
    assert_eq!(p["entries"], serde_json::json!([]));
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // An entry 300 ms into a 20 s wait ends it at once.
    let app = node.app.clone();
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let answer =
            didmesh_tests::router::call(&app, "GET", "/v1/revocations?since=0&wait=20", None).await;
        (answer, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut s = carol.state.clone();
    s.revocations = revoked(now(), &[]);
    assert_eq!(carol.update(&node, s).await.0, 201);
    let ((status, body), waited) = poll.await.unwrap();
    assert_eq!(status, 200);
    let payload: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(body.as_str().unwrap().split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(payload["entries"][0]["kind"], "did");
    assert!(
        waited < Duration::from_secs(5),
        "long-poll answered after {waited:?}"
    );
    println!("long-poll answered {waited:?} after it started (entry at 300 ms)");
    // wait is capped at 30 s: a larger value is not an error.
    let (_, p) = page(&node, "?since=1&wait=0").await;
    assert_eq!(p["entries"], serde_json::json!([]));
}

#[tokio::test]
async fn the_node_refuses_revoked_tokens_and_logins_its_owner_revoked() {
    let node = RouterNode::start().await;
    let mut dave = Did::register(&node, 41).await;
    let token = node.login(&dave.did, &dave.key).await.unwrap();
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    // The token names the key that proved the login, and lives 15 minutes.
    assert_eq!(claims["key"], public_of(&dave.key).to_string());
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        900
    );
    let userinfo = |t: String| {
        let app = node.app.clone();
        async move {
            let req = axum::http::Request::get("/oidc/userinfo")
                .header("authorization", format!("Bearer {t}"))
                .body(axum::body::Body::empty())
                .unwrap();
            didmesh_tests::router::send(&app, req)
                .await
                .status()
                .as_u16()
        }
    };
    assert_eq!(userinfo(token.clone()).await, 200);
    // Sign out everywhere with `before` 3 s ahead of this node's clock (a
    // wallet whose clock runs ahead): the old token is refused, and a login
    // right away is issued with the watermark `rev = before` and is good at
    // once - revocation compares watermarks, not clocks.
    let before = now() + 3;
    let mut s = dave.state.clone();
    s.revocations = revoked(before, &[]);
    assert_eq!(dave.update(&node, s).await.0, 201);
    assert_eq!(userinfo(token).await, 401);
    let fresh = node.login(&dave.did, &dave.key).await.unwrap();
    let fresh_claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(fresh.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(fresh_claims["rev"], before, "{fresh_claims}");
    assert!(fresh_claims["iat"].as_u64().unwrap() < before);
    assert_eq!(userinfo(fresh.clone()).await, 200);
    // One jti.
    let jti: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(fresh.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let mut s = dave.state.clone();
    s.revocations.jti.push(RevokedJti {
        jti: jti["jti"].as_str().unwrap().to_string(),
        exp: jti["exp"].as_u64().unwrap(),
    });
    assert_eq!(dave.update(&node, s).await.0, 201);
    assert_eq!(userinfo(fresh).await, 401);
}

#[tokio::test]
async fn the_owner_cannot_lower_before_and_others_cannot_revoke() {
    let node = RouterNode::start().await;
    let mut erin = Did::register(&node, 51).await;
    let mut s = erin.state.clone();
    s.revocations = revoked(now(), &[]);
    assert_eq!(erin.update(&node, s).await.0, 201);
    // Going down is refused (it would bring revoked sessions back).
    let mut lower = erin.state.clone();
    lower.revocations.before -= 100;
    let (status, body) = erin.update(&node, lower).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("revocations.before"),
        "{body}"
    );
    // Someone else's key cannot sign a revocation of erin's DID.
    let mallory = SigningKey::from_bytes(&[52; 32]);
    let mut s = erin.state.clone();
    s.revocations.before += 50;
    let op = Operation::update(&erin.did, erin.head, s, now(), &mallory).unwrap();
    let (status, body) = node.submit(&op).await;
    assert!(status.is_client_error(), "{status} {body}");
}
