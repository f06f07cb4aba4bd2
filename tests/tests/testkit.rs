//! The testkit's own promise: its [`TokenIssuer`] mints what a node mints
//! (same header, same claim names and values but for time, randomness and
//! the signing key), so a test that trusts the kit's tokens trusts the
//! node's shape, not a copy that can drift.

use did_core::keys::public_of;
use didmesh_tests::issuer::{self, TokenIssuer};
use didmesh_tests::router::RouterNode;
use ed25519_dalek::SigningKey;
use serde_json::Value;

fn names(v: &Value) -> Vec<&String> {
    let mut k: Vec<_> = v
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    k.sort();
    k
}

#[tokio::test]
async fn the_test_issuer_mints_what_a_node_mints() {
    let node = RouterNode::start().await;
    let user = SigningKey::from_bytes(&[5; 32]);
    let did = public_of(&user).did_key();
    let from_node = node.login(&did, &user).await.unwrap();
    let kit = TokenIssuer::new([9; 32]);
    let from_kit = kit.mint(&user, None);

    let (head_node, head_kit) = (issuer::header(&from_node), issuer::header(&from_kit));
    assert_eq!(
        names(&head_node),
        names(&head_kit),
        "{head_node} vs {head_kit}"
    );
    assert_eq!(head_node["alg"], head_kit["alg"]);
    assert_eq!(head_node["typ"], head_kit["typ"]);
    assert_eq!(head_kit["kid"], kit.jwks()["keys"][0]["kid"]);

    let (node_claims, kit_claims) = (issuer::claims(&from_node), issuer::claims(&from_kit));
    assert_eq!(
        names(&node_claims),
        names(&kit_claims),
        "{node_claims} vs {kit_claims}"
    );
    for same in ["iss", "aud", "sub", "amr"] {
        assert_eq!(node_claims[same], kit_claims[same], "{same}");
    }
    let lifetime = |c: &Value| c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap();
    assert_eq!(lifetime(&node_claims), lifetime(&kit_claims));

    // Each verifies against its own issuer's JWKS, as a relying party would.
    let (_, node_jwks) = node.get("/.well-known/jwks.json").await;
    let (iss, aud) = (
        node_claims["iss"].as_str().unwrap(),
        node_claims["aud"].as_str().unwrap(),
    );
    issuer::verify(&from_node, &node_jwks, iss, aud).unwrap();
    issuer::verify(&from_kit, &kit.jwks(), iss, aud).unwrap();
    assert!(issuer::verify(&from_kit, &node_jwks, iss, aud).is_err());
}

/// `mint_mfa` is the node's own multi-factor token: the same claim names as
/// a one-factor token, `amr` with `mfa`, `acr` `urn:didmesh:acr:mfa`, a
/// did:mesh subject.
#[tokio::test]
async fn the_test_issuer_mints_mfa_tokens_with_the_nodes_code() {
    let kit = TokenIssuer::new([9; 32]);
    let (laptop, phone) = (
        SigningKey::from_bytes(&[6; 32]),
        SigningKey::from_bytes(&[7; 32]),
    );
    let one = issuer::claims(&kit.mint(&laptop, None));
    let (did, token) = kit.mint_mfa(&laptop, &phone, None);
    let two = issuer::claims(&token);
    assert_eq!(names(&one), names(&two), "{one} vs {two}");
    assert_eq!(one["acr"], "urn:didmesh:acr:1fa");
    assert_eq!(one["amr"], serde_json::json!(["swk"]));
    assert_eq!(two["acr"], "urn:didmesh:acr:mfa");
    assert_eq!(two["amr"], serde_json::json!(["swk", "mfa"]));
    assert_eq!(two["sub"], did.as_str());
    assert!(did.starts_with("did:mesh:"));
    let (iss, aud) = (two["iss"].as_str().unwrap(), two["aud"].as_str().unwrap());
    issuer::verify(&token, &kit.jwks(), iss, aud).unwrap();
    // Twice for the same keys: the DID is already in the ledger, fine.
    assert_eq!(kit.mint_mfa(&laptop, &phone, None).0, did);
}

/// `stepup::login_with_keys` at a node: one key of a "2 of 2" DID is
/// refused with `more_factors_needed`, both keys get an MFA token, and a
/// did:key's one key a one-factor token.
#[tokio::test]
async fn login_with_keys_presents_every_key() {
    use didmesh_tests::stepup;
    let node = RouterNode::start().await;
    let (laptop, phone) = (
        SigningKey::from_bytes(&[6; 32]),
        SigningKey::from_bytes(&[7; 32]),
    );
    let (op, did) = stepup::create_multi_key(&[(&laptop, "laptop"), (&phone, "phone")], 2);
    let (status, body) = node.submit(&op).await;
    assert!(status.is_success(), "{body}");

    let refused = stepup::login_with_keys(&node.url, &did, &[&laptop], None)
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(401), "{refused}");
    assert_eq!(refused.error(), Some("more_factors_needed"), "{refused}");

    let token = stepup::login_with_keys(&node.url, &did, &[&laptop, &phone], None)
        .await
        .unwrap();
    let claims = issuer::claims(&token);
    assert_eq!(claims["sub"], did.as_str());
    assert_eq!(claims["acr"], "urn:didmesh:acr:mfa");
    assert!(
        claims["amr"].as_array().unwrap().contains(&"mfa".into()),
        "{claims}"
    );

    let user = SigningKey::from_bytes(&[5; 32]);
    let single = stepup::login_with_keys(&node.url, &public_of(&user).did_key(), &[&user], None)
        .await
        .unwrap();
    assert_eq!(issuer::claims(&single)["acr"], "urn:didmesh:acr:1fa");
}
