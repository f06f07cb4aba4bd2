//! Step-up end to end (issue 11, RFC 9470), on real processes: a DID whose
//! login policy needs two keys logs in at a spawned node with both and
//! reads home-api's private route; one key gets no token; a one-factor
//! token (a did:key login) gets home-api's 401
//! `insufficient_user_authentication`, while the personalized `/home`
//! keeps working with it.

use didmesh_tests::{http, ops, start_node, stepup, HomeApi};

#[test]
fn a_two_key_login_reads_the_private_route_and_one_key_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path(), &["--no-p2p"]);
    let home = HomeApi::start(&format!("{}/.well-known/jwks.json", node.url));
    let (laptop, phone) = (ops::key(7, 0), ops::key(7, 1));
    let (op, did) = stepup::create_multi_key(&[(&laptop, "laptop"), (&phone, "phone")], 2);
    assert!(http::blocking_client().submit(&node.url, &op).is_success());

    // One of the two keys: the node issues nothing.
    let one = stepup::login_with_keys_blocking(&node.url, &did, &[&laptop], None);
    assert_eq!(one.unwrap_err().error(), Some("more_factors_needed"));

    // Both: an MFA token, and home-api's private route answers.
    let token =
        stepup::login_with_keys_blocking(&node.url, &did, &[&laptop, &phone], None).unwrap();
    let claims = didmesh_tests::issuer::claims(&token);
    assert_eq!(claims["acr"], "urn:didmesh:acr:mfa", "{claims}");
    assert!(
        claims["amr"].as_array().unwrap().iter().any(|m| m == "mfa"),
        "{claims}"
    );
    let private = stepup::private(&home, Some(&token));
    assert_eq!(private.status, 200, "{}", private.body);

    // A one-factor token: the RFC 9470 answer, not a plain 401.
    let user = ops::key(8, 0);
    let did_key = did_core::keys::public_of(&user).did_key();
    let single = stepup::login_with_keys_blocking(&node.url, &did_key, &[&user], None).unwrap();
    let refused = stepup::private(&home, Some(&single));
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(refused.asks_for_mfa(), "{refused:?}");
}
