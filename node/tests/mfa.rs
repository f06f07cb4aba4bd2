//! Multi-factor sign-in (issue 11), node side, through the in-process
//! router: a DID's login policy enforced at token time on every path (the
//! wallet's `/v1/auth/token`, the co-sign slot a second device signs
//! through, the OpenID sign-in page, `acr_values`, a federated sign-in),
//! and what the tokens say (`amr`, `acr`).
//!
//! Every refusal asserts what the wallet or the page sees (`error`,
//! `required`, `presented`, the reason) and that no token or redirect came
//! out. Run: `cargo test -p didmesh-node --test mfa`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Request, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use did_core::client::{client_id, ClientReg, IdTokenAlg};
use did_core::federation::Attestation;
use did_core::keys::{public_of, sign_b64};
use did_core::passkey::{Assertion, P256Key, Passkey};
use did_core::policy::{phone_commitment, LoginPolicy, Phone};
use did_core::{Cid, DidState, Operation, Relationship, VerificationMethod};
use didmesh_tests::now;
use didmesh_tests::router::RouterNode;
use ed25519_dalek::SigningKey;
use http_body_util::BodyExt as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::ecdsa::signature::Signer as _;
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::pkcs8::EncodePrivateKey as _;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ISSUER: &str = "https://didmesh.local";
const REDIRECT: &str = "https://app.example/callback";
const MFA: &str = "urn:didmesh:acr:mfa";
const ONE: &str = "urn:didmesh:acr:1fa";

// ---------------------------------------------------------------- helpers

fn wallet(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// An authentication key `id` on the device `device`.
fn auth_key(id: &str, key: &SigningKey, device: &str) -> VerificationMethod {
    VerificationMethod {
        id: id.into(),
        public_key_multibase: public_of(key),
        relationships: vec![Relationship::Authentication],
        device: Some(device.into()),
    }
}

/// A state whose rotation key is `keys[0]` and whose authentication keys
/// are `key-1..n` (laptop, phone, tablet…), with `required` of `factors`.
fn state_with(keys: &[&SigningKey], policy: Option<(u8, &[&str])>) -> DidState {
    let devices = ["laptop", "phone", "tablet", "desk"];
    let mut s = DidState::single_key(public_of(keys[0]));
    s.verification_methods = keys
        .iter()
        .enumerate()
        .map(|(i, k)| auth_key(&format!("key-{}", i + 1), k, devices[i % 4]))
        .collect();
    s.login_policy = policy.map(|(required, factors)| LoginPolicy {
        required,
        factors: factors.iter().map(|f| f.to_string()).collect(),
    });
    s
}

/// A node whose OpenID codes can be consumed (not in its start second).
async fn node(extra: &[&str]) -> RouterNode {
    let n = RouterNode::start_with(extra).await;
    let started = n.state.oidc.used_codes.started_at();
    while now() <= started {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    n
}

async fn submit(n: &RouterNode, op: &Operation) -> Cid {
    let (status, body) = n.submit(op).await;
    assert!(status.is_success(), "{body}");
    op.cid().unwrap()
}

/// Creates a DID with `state`, signed by its rotation key `owner`.
async fn create(n: &RouterNode, state: DidState, owner: &SigningKey) -> (String, Cid) {
    let (op, did) = didmesh_tests::ops::create(state, owner);
    (did, submit(n, &op).await)
}

async fn update(n: &RouterNode, did: &str, prev: Cid, s: DidState, owner: &SigningKey) -> Cid {
    submit(n, &Operation::update(did, prev, s, now(), owner).unwrap()).await
}

/// `POST /v1/auth/challenge`: the whole answer.
async fn challenge(n: &RouterNode, did: &str) -> Value {
    let (status, ch) = n.post("/v1/auth/challenge", json!({ "did": did })).await;
    assert_eq!(status, StatusCode::OK, "{ch}");
    ch
}

fn sign(key: &SigningKey, ch: &Value) -> String {
    sign_b64(key, ch["message"].as_str().unwrap().as_bytes())
}

/// `POST /v1/auth/token` with `proofs` merged into `{did, nonce}`.
async fn redeem(n: &RouterNode, did: &str, ch: &Value, proofs: Value) -> (StatusCode, Value) {
    let mut body = json!({"did": did, "nonce": ch["nonce"]});
    for (k, v) in proofs.as_object().unwrap() {
        body[k] = v.clone();
    }
    n.post("/v1/auth/token", body).await
}

/// The claims of a JWT (its signature is the node's; checked elsewhere).
fn claims(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// A verified access token's claims (EdDSA, the node's JWKS).
async fn verified(n: &RouterNode, token: &Value) -> Value {
    let (_, jwks) = n.get("/.well-known/jwks.json").await;
    let jwt = token["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {token}"));
    didmesh_tests::issuer::verify(jwt, &jwks, ISSUER, "home-api").unwrap()
}

/// Asserts a `more_factors_needed` refusal: 401, no token, the nonce
/// still usable (checked by the caller); the presented ids.
fn assert_more(status: StatusCode, body: &Value, required: u64, presented: &[&str]) {
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "more_factors_needed", "{body}");
    assert_eq!(body["required"], required, "{body}");
    assert_eq!(body["presented"], json!(presented), "{body}");
    assert!(body.get("access_token").is_none());
    assert!(!body["reason"].as_str().unwrap().is_empty());
}

// ------------------------------------------------------ 2 of 3 keys, wallet

#[tokio::test]
async fn two_of_three_keys_one_is_not_enough_the_same_nonce_then_takes_two() {
    let n = node(&[]).await;
    let (laptop, phone, tablet) = (wallet(1), wallet(2), wallet(3));
    let (did, _) = create(
        &n,
        state_with(&[&laptop, &phone, &tablet], Some((2, &[]))),
        &laptop,
    )
    .await;

    // the challenge says what is needed
    let ch = challenge(&n, &did).await;
    assert_eq!(ch["policy"]["required"], 2, "{ch}");
    assert_eq!(
        ch["policy"]["factors"],
        json!([{"id": "key-1", "kind": "key"}, {"id": "key-2", "kind": "key"},
               {"id": "key-3", "kind": "key"}])
    );

    // one key (the old body, `signature` alone): no token, nonce kept
    let s1 = sign(&laptop, &ch);
    let (status, body) = redeem(&n, &did, &ch, json!({"signature": s1})).await;
    assert_more(status, &body, 2, &["key-1"]);
    assert!(body["reason"]
        .as_str()
        .unwrap()
        .contains("2 distinct factors"));
    // the same key twice counts once
    let (status, body) = redeem(&n, &did, &ch, json!({"signatures": [s1, s1]})).await;
    assert_more(status, &body, 2, &["key-1"]);
    // a bad signature is its own error, not "more factors"
    let stranger = sign(&wallet(9), &ch);
    let (status, body) = redeem(
        &n,
        &did,
        &ch,
        json!({"signature": s1, "signatures": [stranger]}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_signature");

    // two keys on two wallets, the same nonce: a token that says mfa
    let s2 = sign(&phone, &ch);
    let (status, tok) = redeem(&n, &did, &ch, json!({"signature": s1, "signatures": [s2]})).await;
    assert_eq!(status, StatusCode::OK, "{tok}");
    let c = verified(&n, &tok).await;
    assert_eq!(c["sub"], did.as_str());
    assert_eq!(c["amr"], json!(["swk", "mfa"]));
    assert_eq!(c["acr"], MFA);

    // replayed after success: the nonce is used up
    let (status, body) = redeem(&n, &did, &ch, json!({"signature": s1, "signatures": [s2]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_challenge");
    assert!(body.get("access_token").is_none());
}

#[tokio::test]
async fn a_key_outside_the_policy_list_does_not_count() {
    let n = node(&[]).await;
    let (laptop, phone, tablet) = (wallet(1), wallet(2), wallet(3));
    let (did, _) = create(
        &n,
        state_with(&[&laptop, &phone, &tablet], Some((2, &["key-1", "key-2"]))),
        &laptop,
    )
    .await;
    let ch = challenge(&n, &did).await;
    assert_eq!(
        ch["policy"]["factors"],
        json!([{"id": "key-1", "kind": "key"}, {"id": "key-2", "kind": "key"}])
    );
    // key-3 is an authentication key of the DID, but the policy does not
    // list it: laptop + tablet is one factor
    let (status, body) = redeem(
        &n,
        &did,
        &ch,
        json!({"signatures": [sign(&laptop, &ch), sign(&tablet, &ch)]}),
    )
    .await;
    assert_more(status, &body, 2, &["key-1"]);
    let (status, tok) = redeem(
        &n,
        &did,
        &ch,
        json!({"signatures": [sign(&tablet, &ch), sign(&phone, &ch), sign(&laptop, &ch)]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tok}");
    assert_eq!(verified(&n, &tok).await["acr"], MFA);
}

#[tokio::test]
async fn a_key_removed_by_rotation_no_longer_counts() {
    let n = node(&[]).await;
    let (laptop, phone, tablet) = (wallet(1), wallet(2), wallet(3));
    let (did, genesis) = create(
        &n,
        state_with(&[&laptop, &phone, &tablet], Some((2, &[]))),
        &laptop,
    )
    .await;
    // a challenge taken before the rotation, and one after
    let before = challenge(&n, &did).await;
    // the tablet is lost: a rotation drops key-3 (2 of the 2 left)
    update(
        &n,
        &did,
        genesis,
        state_with(&[&laptop, &phone], Some((2, &[]))),
        &laptop,
    )
    .await;
    for ch in [&before, &challenge(&n, &did).await] {
        let (status, body) = redeem(
            &n,
            &did,
            ch,
            json!({"signatures": [sign(&laptop, ch), sign(&tablet, ch)]}),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"], "invalid_signature", "{body}");
        assert!(body.get("access_token").is_none());
        let (status, tok) = redeem(
            &n,
            &did,
            ch,
            json!({"signatures": [sign(&laptop, ch), sign(&phone, ch)]}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{tok}");
    }
}

#[tokio::test]
async fn a_policy_change_is_enforced_on_the_next_login() {
    let n = node(&[]).await;
    let (laptop, phone) = (wallet(1), wallet(2));
    let (did, genesis) = create(&n, state_with(&[&laptop, &phone], None), &laptop).await;
    // no policy: any one key, a one-factor token
    let ch = challenge(&n, &did).await;
    assert_eq!(ch["policy"]["required"], 1);
    let (status, tok) = redeem(&n, &did, &ch, json!({"signature": sign(&laptop, &ch)})).await;
    assert_eq!(status, StatusCode::OK, "{tok}");
    let c = verified(&n, &tok).await;
    assert_eq!(c["amr"], json!(["swk"]));
    assert_eq!(c["acr"], ONE);

    // a challenge taken before the owner sets "2 of my keys"…
    let early = challenge(&n, &did).await;
    let head = update(
        &n,
        &did,
        genesis,
        state_with(&[&laptop, &phone], Some((2, &[]))),
        &laptop,
    )
    .await;
    // …is held to the policy at token time, like a fresh one
    let fresh = challenge(&n, &did).await;
    assert_eq!(fresh["policy"]["required"], 2);
    for ch in [&early, &fresh] {
        let (status, body) = redeem(&n, &did, ch, json!({"signature": sign(&laptop, ch)})).await;
        assert_more(status, &body, 2, &["key-1"]);
    }
    // back to one factor
    update(
        &n,
        &did,
        head,
        state_with(&[&laptop, &phone], Some((1, &[]))),
        &laptop,
    )
    .await;
    let ch = challenge(&n, &did).await;
    let (status, tok) = redeem(&n, &did, &ch, json!({"signature": sign(&phone, &ch)})).await;
    assert_eq!(status, StatusCode::OK, "{tok}");
}

#[tokio::test]
async fn a_did_key_challenge_states_its_one_factor() {
    let n = node(&[]).await;
    let key = wallet(4);
    let did = public_of(&key).did_key();
    let ch = challenge(&n, &did).await;
    assert_eq!(
        ch["policy"],
        json!({"required": 1, "factors": [{"id": "key", "kind": "key"}]})
    );
    let (status, tok) = redeem(&n, &did, &ch, json!({"signature": sign(&key, &ch)})).await;
    assert_eq!(status, StatusCode::OK, "{tok}");
    assert_eq!(verified(&n, &tok).await["acr"], ONE);
}

#[tokio::test]
async fn an_sms_code_without_an_sms_provider_is_refused_and_the_nonce_survives() {
    let n = node(&[]).await;
    let (laptop, phone) = (wallet(1), wallet(2));
    let mut s = state_with(&[&laptop, &phone], Some((2, &["key-1", "phone-1"])));
    s.phones.push(Phone {
        id: "phone-1".into(),
        commitment: phone_commitment(&[7; 16], "+15555550123"),
    });
    let (did, _) = create(&n, s, &laptop).await;
    let ch = challenge(&n, &did).await;
    assert_eq!(
        ch["policy"]["factors"],
        json!([{"id": "key-1", "kind": "key"}, {"id": "phone-1", "kind": "phone"}])
    );
    let s1 = sign(&laptop, &ch);
    // a phone the DID does not have
    let (status, body) = redeem(
        &n,
        &did,
        &ch,
        json!({"signature": s1, "sms": {"phone": "phone-9", "code": "123456"}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_sms_code");
    // an SMS code alone is never a login
    let (status, body) = redeem(
        &n,
        &did,
        &ch,
        json!({"sms": {"phone": "phone-1", "code": "123456"}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // this node has no SMS provider: the factor says so
    let (status, body) = redeem(
        &n,
        &did,
        &ch,
        json!({"signature": s1, "sms": {"phone": "phone-1", "code": "123456"}}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{body}");
    assert_eq!(body["error"], "sms_disabled");
    // the nonce was not used up by any of that
    let (status, body) = redeem(&n, &did, &ch, json!({"signature": s1})).await;
    assert_more(status, &body, 2, &["key-1"]);
}

// ------------------------------------------------------ second device

/// `GET /v1/auth/cosign/{code}`.
async fn cosign_poll(n: &RouterNode, code: &str) -> Value {
    let (status, v) = n.get(&format!("/v1/auth/cosign/{code}")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

#[tokio::test]
async fn a_second_device_cosigns_through_an_approval_code() {
    let n = node(&[]).await;
    let (laptop, phone, tablet) = (wallet(1), wallet(2), wallet(3));
    let (did, _) = create(
        &n,
        state_with(&[&laptop, &phone, &tablet], Some((2, &[]))),
        &laptop,
    )
    .await;
    let other = wallet(8);
    let (other_did, _) = create(&n, state_with(&[&other], None), &other).await;

    // the laptop's wallet: one factor is not enough
    let ch = challenge(&n, &did).await;
    let s1 = sign(&laptop, &ch);
    let (status, body) = redeem(&n, &did, &ch, json!({"signature": s1})).await;
    assert_more(status, &body, 2, &["key-1"]);
    // a slot for a nonce this node never issued is refused
    let (status, body) = n
        .post("/v1/auth/cosign", json!({"did": did, "nonce": "00"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_challenge");
    // …nor one issued for another DID
    let theirs = challenge(&n, &other_did).await;
    let (status, _) = n
        .post(
            "/v1/auth/cosign",
            json!({"did": did, "nonce": theirs["nonce"]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, slot) = n
        .post("/v1/auth/cosign", json!({"did": did, "nonce": ch["nonce"]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{slot}");
    let code = slot["code"].as_str().unwrap().to_string();
    assert_eq!(code.len(), 9);
    assert_eq!(&code[4..5], "-");
    assert!(slot["expires_at"].as_u64().unwrap() <= ch["expires_at"].as_u64().unwrap());
    assert_eq!(cosign_poll(&n, &code).await, json!({"status": "waiting"}));

    // the phone's wallet (`didmesh approve CODE`) reads what it signs
    let (status, shown) = n.get(&format!("/v1/approvals/{code}")).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["kind"], "cosign");
    assert_eq!(shown["did"], did.as_str());
    assert_eq!(shown["message"], ch["message"]);
    assert_eq!(shown["nonce"], ch["nonce"]);
    assert_eq!(shown["audience"], ch["audience"]);
    assert!(shown.get("client_id").is_none());

    // a key of another DID: refused, nothing stored
    let (status, body) = n
        .post(
            &format!("/v1/approvals/{code}"),
            json!({"signature": sign(&other, &ch)}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_signature");
    assert_eq!(cosign_poll(&n, &code).await, json!({"status": "waiting"}));

    // the phone signs
    let s2 = sign(&phone, &ch);
    let (status, body) = n
        .post(
            &format!("/v1/approvals/{}", code.to_lowercase()),
            json!({"signature": s2}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["key"], "key-2");
    let polled = cosign_poll(&n, &code).await;
    assert_eq!(
        polled,
        json!({"status": "signed", "signatures": [s2], "keys": ["key-2"]})
    );

    // the laptop sends both: a token with both keys
    let (status, tok) = redeem(
        &n,
        &did,
        &ch,
        json!({"signature": s1, "signatures": polled["signatures"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tok}");
    let c = verified(&n, &tok).await;
    assert_eq!(c["amr"], json!(["swk", "mfa"]));
    assert_eq!(c["acr"], MFA);
    // and the same again is a replay
    let (status, body) = redeem(
        &n,
        &did,
        &ch,
        json!({"signature": s1, "signatures": polled["signatures"]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_challenge");
    // once used, the slot takes no more signatures
    let (status, body) = n
        .post(
            &format!("/v1/approvals/{code}"),
            json!({"signature": sign(&tablet, &ch)}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_challenge");
    // an unknown code
    let (status, _) = n.get("/v1/auth/cosign/ZZZZ-ZZZZ").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

// ------------------------------------------------------ the sign-in page

/// Registers a public client; its client_id.
async fn register_rp(n: &RouterNode) -> String {
    let owner = wallet(70);
    let (did, genesis) = n.register(&owner).await;
    let mut s = DidState::single_key(public_of(&owner));
    s.clients.push(ClientReg {
        id: "app".into(),
        name: "App".into(),
        redirect_uris: vec![REDIRECT.into()],
        secret_hash: None,
        id_token_alg: IdTokenAlg::ES256,
    });
    submit(
        n,
        &Operation::update(&did, genesis, s, now(), &owner).unwrap(),
    )
    .await;
    client_id(&did, "app").unwrap()
}

fn query(params: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}

async fn get_text(n: &RouterNode, uri: &str) -> (StatusCode, String) {
    let resp = n.send(Request::get(uri).body(Body::empty()).unwrap()).await;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// A PKCE verifier and the authorize query for `rp` (plus `extra`).
fn authorize_query(rp: &str, extra: &[(&str, &str)]) -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let mut p = vec![
        ("response_type", "code"),
        ("client_id", rp),
        ("redirect_uri", REDIRECT),
        ("scope", "openid"),
        ("state", "st"),
        ("nonce", "n-1"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    p.extend_from_slice(extra);
    (verifier, query(&p))
}

/// `GET /oidc/authorize`: the page's request JSON.
async fn page(n: &RouterNode, q: &str) -> Value {
    let (status, html) = get_text(n, &format!("/oidc/authorize?{q}")).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    didmesh_tests::oidc::page_request(&html).unwrap()
}

/// A software WebAuthn authenticator's assertion (UP | UV).
fn assertion(
    pk: &p256::ecdsa::SigningKey,
    cred: &[u8],
    challenge_b64: &str,
    count: u32,
) -> Assertion {
    let cd = format!(
        r#"{{"type":"webauthn.get","challenge":"{challenge_b64}","origin":"{ISSUER}","crossOrigin":false}}"#
    );
    let mut ad = Sha256::digest(b"didmesh.local").to_vec();
    ad.push(0x05);
    ad.extend_from_slice(&count.to_be_bytes());
    let mut signed = ad.clone();
    signed.extend_from_slice(&Sha256::digest(cd.as_bytes()));
    let sig: p256::ecdsa::Signature = pk.sign(&signed);
    Assertion {
        credential_id: URL_SAFE_NO_PAD.encode(cred),
        authenticator_data: URL_SAFE_NO_PAD.encode(&ad),
        client_data_json: URL_SAFE_NO_PAD.encode(cd.as_bytes()),
        signature: URL_SAFE_NO_PAD.encode(sig.to_der().as_bytes()),
        user_handle: None,
    }
}

/// A DID with a browser key (key-1) and a passkey (passkey-1), with
/// `policy`.
async fn browser_did(
    n: &RouterNode,
    seed: u8,
    policy: Option<u8>,
) -> (String, SigningKey, p256::ecdsa::SigningKey, Vec<u8>) {
    let key = wallet(seed);
    let pk = p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap();
    let cred = vec![seed; 16];
    let mut s = DidState::single_key(public_of(&key));
    s.passkeys.push(Passkey {
        id: "passkey-1".into(),
        credential_id: URL_SAFE_NO_PAD.encode(&cred),
        public_key_multibase: P256Key::from_sec1(
            pk.verifying_key().to_encoded_point(true).as_bytes(),
        )
        .unwrap(),
    });
    s.login_policy = policy.map(|required| LoginPolicy {
        required,
        factors: vec![],
    });
    let (did, _) = create(n, s, &key).await;
    (did, key, pk, cred)
}

/// The token endpoint for a public client; the answer.
async fn oidc_token(n: &RouterNode, rp: &str, code: &str, verifier: &str) -> (StatusCode, Value) {
    let form = query(&[
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("client_id", rp),
        ("code_verifier", verifier),
    ]);
    let resp = n
        .send(
            Request::post("/oidc/token")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(form))
                .unwrap(),
        )
        .await;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn code_of(redirect: &Value) -> String {
    let url = redirect["redirect"]
        .as_str()
        .unwrap_or_else(|| panic!("no redirect: {redirect}"));
    assert!(url.starts_with(REDIRECT), "{url}");
    didmesh_tests::oidc::query_param(url, "code").unwrap()
}

#[tokio::test]
async fn passkey_and_browser_key_together_are_mfa_at_the_page() {
    let n = node(&[]).await;
    let rp = register_rp(&n).await;
    let (did, key, pk, cred) = browser_did(&n, 20, Some(2)).await;
    let (verifier, q) = authorize_query(&rp, &[]);
    let data = page(&n, &q).await;
    let handle = data["request"].clone();
    let (status, ch) = n
        .post(
            "/oidc/signin/challenge",
            json!({"request": handle, "did": did}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ch}");
    assert_eq!(ch["policy"]["required"], 2, "{ch}");
    let sig = sign(&key, &ch);
    let webauthn = ch["webauthn_challenge"].as_str().unwrap();

    // the browser key alone: the page shows why, no redirect
    let (status, body) = n
        .post(
            "/oidc/signin/complete",
            json!({"request": handle, "nonce": ch["nonce"], "did": did, "signature": sig}),
        )
        .await;
    assert_more(status, &body, 2, &["key-1"]);
    assert!(body.get("redirect").is_none());
    // the passkey alone: the same
    let (status, body) = n
        .post(
            "/oidc/signin/complete",
            json!({"request": handle, "nonce": ch["nonce"], "did": did,
                   "assertion": assertion(&pk, &cred, webauthn, 1)}),
        )
        .await;
    assert_more(status, &body, 2, &["passkey-1"]);
    // both, same nonce: a code
    let (status, done) = n
        .post(
            "/oidc/signin/complete",
            json!({"request": handle, "nonce": ch["nonce"], "did": did, "signature": sig,
                   "assertion": assertion(&pk, &cred, webauthn, 2)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let (status, tok) = oidc_token(&n, &rp, &code_of(&done), &verifier).await;
    assert_eq!(status, StatusCode::OK, "{tok}");
    let id = claims(tok["id_token"].as_str().unwrap());
    assert_eq!(id["sub"], did.as_str());
    assert_eq!(id["amr"], json!(["swk", "hwk", "user", "mfa"]));
    assert_eq!(id["acr"], MFA);
    let access = claims(tok["access_token"].as_str().unwrap());
    assert_eq!(access["amr"], id["amr"]);
    assert_eq!(access["acr"], MFA);
}

#[tokio::test]
async fn acr_values_mfa_refuses_a_single_factor_with_a_clear_error() {
    let n = node(&[]).await;
    let rp = register_rp(&n).await;
    // no policy: one factor is a login…
    let (did, key, pk, cred) = browser_did(&n, 21, None).await;
    let (verifier, q) = authorize_query(&rp, &[]);
    let data = page(&n, &q).await;
    assert_eq!(data["mfa_required"], false);
    let handle = data["request"].clone();
    let (_, ch) = n
        .post(
            "/oidc/signin/challenge",
            json!({"request": handle, "did": did}),
        )
        .await;
    assert_eq!(ch["policy"]["required"], 1);
    let (status, done) = n
        .post(
            "/oidc/signin/complete",
            json!({"request": handle, "nonce": ch["nonce"], "did": did, "signature": sign(&key, &ch)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let (_, tok) = oidc_token(&n, &rp, &code_of(&done), &verifier).await;
    assert_eq!(claims(tok["id_token"].as_str().unwrap())["acr"], ONE);

    // …unless the app asks for MFA
    let (verifier, q) = authorize_query(&rp, &[("acr_values", MFA)]);
    let data = page(&n, &q).await;
    assert_eq!(data["mfa_required"], true);
    let handle = data["request"].clone();
    let (_, ch) = n
        .post(
            "/oidc/signin/challenge",
            json!({"request": handle, "did": did}),
        )
        .await;
    assert_eq!(ch["policy"]["required"], 2, "{ch}");
    let sig = sign(&key, &ch);
    let (status, body) = n
        .post(
            "/oidc/signin/complete",
            json!({"request": handle, "nonce": ch["nonce"], "did": did, "signature": sig}),
        )
        .await;
    assert_more(status, &body, 2, &["key-1"]);
    let reason = body["reason"].as_str().unwrap();
    assert!(reason.contains("asks for 2"), "{reason}");
    assert!(body.get("redirect").is_none());
    // the CLI approval path holds to it as well
    let (status, pending) = n
        .post(
            "/oidc/signin/pending",
            json!({"request": handle, "did": did}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{pending}");
    let code = pending["code"].as_str().unwrap();
    let (_, shown) = n.get(&format!("/v1/approvals/{code}")).await;
    assert_eq!(shown["kind"], "login");
    let msg = shown["message"].as_str().unwrap();
    let (status, body) = n
        .post(
            &format!("/v1/approvals/{code}"),
            json!({"signature": sign_b64(&key, msg.as_bytes())}),
        )
        .await;
    assert_more(status, &body, 2, &["key-1"]);
    // with the passkey too, the same nonce: mfa
    let webauthn = ch["webauthn_challenge"].as_str().unwrap();
    let (status, done) = n
        .post(
            "/oidc/signin/complete",
            json!({"request": handle, "nonce": ch["nonce"], "did": did, "signature": sig,
                   "assertion": assertion(&pk, &cred, webauthn, 1)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let (_, tok) = oidc_token(&n, &rp, &code_of(&done), &verifier).await;
    assert_eq!(claims(tok["id_token"].as_str().unwrap())["acr"], MFA);
    // discovery lists both classes
    let (_, d) = n.get("/.well-known/openid-configuration").await;
    assert_eq!(d["acr_values_supported"], json!([ONE, MFA]));
}

// ------------------------------------------------------ federation

/// A minimal OpenID provider: discovery, a JWKS with one P-256 key, and a
/// token endpoint that answers an ID token for `sub` with the nonce the
/// test registered for the code.
struct Provider {
    issuer: String,
    codes: Arc<Mutex<HashMap<String, String>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Clone)]
struct ProviderState {
    issuer: String,
    sub: String,
    codes: Arc<Mutex<HashMap<String, String>>>,
}

fn provider_key() -> p256::SecretKey {
    p256::SecretKey::from_slice(&[11; 32]).unwrap()
}

async fn provider_token(State(p): State<ProviderState>, body: String) -> Json<Value> {
    let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let nonce = form
        .get("code")
        .and_then(|c| p.codes.lock().unwrap().remove(c))
        .unwrap_or_default();
    let t = now();
    let claims = json!({"iss": p.issuer, "sub": p.sub, "aud": "didmesh-node", "exp": t + 300,
                        "iat": t, "nonce": nonce});
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("k1".into());
    let der = provider_key().to_pkcs8_der().unwrap();
    let id_token =
        jsonwebtoken::encode(&h, &claims, &EncodingKey::from_ec_der(der.as_bytes())).unwrap();
    Json(json!({"access_token": "at", "token_type": "Bearer", "id_token": id_token}))
}

impl Provider {
    async fn start(sub: &str) -> Provider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let codes = Arc::new(Mutex::new(HashMap::new()));
        let st = ProviderState {
            issuer: issuer.clone(),
            sub: sub.into(),
            codes: codes.clone(),
        };
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(|State(p): State<ProviderState>| async move {
                    let b = p.issuer;
                    Json(json!({
                        "issuer": b, "authorization_endpoint": format!("{b}/authorize"),
                        "token_endpoint": format!("{b}/token"), "jwks_uri": format!("{b}/jwks"),
                        "response_types_supported": ["code"], "subject_types_supported": ["public"],
                        "id_token_signing_alg_values_supported": ["ES256"],
                    }))
                }),
            )
            .route(
                "/jwks",
                get(|| async {
                    let point = provider_key().public_key().to_encoded_point(false);
                    Json(
                        json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
                        "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
                        "y": URL_SAFE_NO_PAD.encode(point.y().unwrap())}]}),
                    )
                }),
            )
            .route("/token", post(provider_token))
            .with_state(st);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Provider {
            issuer,
            codes,
            server,
        }
    }

    /// The provider's authorization step for the URL the node sent the
    /// browser to; the callback query.
    fn authorize(&self, open: &str) -> String {
        let q: HashMap<String, String> = form_urlencoded::parse(
            open.split_once('?')
                .map(|(_, q)| q)
                .unwrap_or_default()
                .as_bytes(),
        )
        .into_owned()
        .collect();
        let code = format!("code-{}", rand::random::<u64>());
        self.codes
            .lock()
            .unwrap()
            .insert(code.clone(), q["nonce"].clone());
        query(&[("code", &code), ("state", &q["state"])])
    }
}

/// A CLI federation flow (`purpose` login or link); the poll's answer and
/// the callback page.
async fn federate(n: &RouterNode, p: &Provider, body: Value) -> (Value, String) {
    let (status, v) = n.post("/federation/acme/cli", body).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let q = p.authorize(v["open"].as_str().unwrap());
    let (_, page) = get_text(n, &format!("/federation/acme/callback?{q}")).await;
    let poll = v["poll"].as_str().unwrap();
    (n.get(&format!("/federation/cli/{poll}")).await.1, page)
}

#[tokio::test]
async fn a_federated_sign_in_of_a_two_factor_did_needs_more_factors() {
    let p = Provider::start("dana@acme").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("acme.secret"),
        "provider-secret-0123456789\n",
    )
    .unwrap();
    let providers = dir.path().join("providers.toml");
    std::fs::write(
        &providers,
        format!(
            "[[provider]]\nname = \"acme\"\ndisplay_name = \"Acme\"\nissuer = \"{}\"\n\
             client_id = \"didmesh-node\"\nclient_secret_file = \"acme.secret\"\n",
            p.issuer
        ),
    )
    .unwrap();
    let n = node(&["--providers", providers.to_str().unwrap()]).await;
    let (laptop, phone) = (wallet(1), wallet(2));
    let (did, genesis) = create(&n, state_with(&[&laptop, &phone], None), &laptop).await;
    // link the account
    let (polled, _) = federate(&n, &p, json!({"purpose": "link", "did": did})).await;
    assert_eq!(polled["status"], "done", "{polled}");
    let att: Attestation = serde_json::from_value(polled["link"].clone()).unwrap();
    let mut s = state_with(&[&laptop, &phone], None);
    s.links.push(att.into_link("acme1"));
    let head = update(&n, &did, genesis, s.clone(), &laptop).await;
    // no policy: the linked account is a login (one factor)
    let (polled, _) = federate(&n, &p, json!({"purpose": "login"})).await;
    assert_eq!(polled["status"], "done", "{polled}");
    let c = claims(polled["token"].as_str().unwrap());
    assert_eq!(c["amr"], json!(["fed"]));
    assert_eq!(c["acr"], ONE);

    // "2 of: laptop key, linked account": the provider alone is refused,
    // in the poll and on the page, with what to do instead
    s.login_policy = Some(LoginPolicy {
        required: 2,
        factors: vec!["key-1".into(), "acme1".into()],
    });
    update(&n, &did, head, s, &laptop).await;
    let (polled, page) = federate(&n, &p, json!({"purpose": "login"})).await;
    assert_eq!(polled["status"], "refused", "{polled}");
    assert_eq!(polled["error"], "more_factors_needed");
    assert!(polled.get("token").is_none());
    let reason = polled["reason"].as_str().unwrap();
    assert!(reason.contains("needs 2 distinct factors"), "{reason}");
    assert!(
        page.contains("data-error=\"more_factors_needed\""),
        "{page}"
    );
}
