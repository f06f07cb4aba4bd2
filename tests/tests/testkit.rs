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
