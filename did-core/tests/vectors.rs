//! Canonical-encoding test vectors. `vectors.json` holds, for fixed seeds,
//! the op, the hex of its signing and signed bytes, the signature, the CID
//! and the DID; a genesis with the bytes its network id hashes and the id;
//! a login challenge and its message text; a member entry with RS256 and
//! ES256 ID-token keys and their RFC 7638 JWK thumbprints; a federated
//! link (account commitment and member attestation) and an update op whose
//! state carries it; an update op whose state revokes sessions; a
//! `member-rotate` op (new keys under the member's unchanged `node_did`), a
//! `member-revoke` op, and a genesis with a non-default `key_overlap_secs`.
//! `scripts/check_vectors.py`
//! recomputes every field with Python's json, blake3 and cryptography
//! packages, independently of this code.
//! Regenerate with `UPDATE_VECTORS=1 cargo test -p did-core --test vectors`.

use did_core::keys::public_of;
use did_core::login::LoginChallenge;
use did_core::member::{p256_jwk, Member, RsaPublicJwk};
use did_core::network::{id_preimage, Genesis};
use did_core::op::{
    did_from_genesis, DidState, Operation, Relationship, Service, VerificationMethod,
};
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};

fn vectors() -> Value {
    let seed_a = [7u8; 32];
    let seed_b: [u8; 32] = core::array::from_fn(|i| i as u8);
    let a = SigningKey::from_bytes(&seed_a);
    let b = SigningKey::from_bytes(&seed_b);
    let mut state = DidState::single_key(public_of(&a));
    state.rotation_keys.push(public_of(&b));
    state.services.push(Service {
        id: "home".into(),
        kind: "HomeActivities".into(),
        endpoint: "https://home.example/api/ünïcode?q=\"x\"".into(),
    });
    state.also_known_as.push("at://alice.example".into());
    let create = Operation::create(state.clone(), 1_790_000_000, &a).unwrap();
    let genesis = create.cid().unwrap();
    let did = did_from_genesis(&genesis);
    let mut next = state;
    next.verification_methods.push(VerificationMethod {
        id: "phone".into(),
        public_key_multibase: public_of(&b),
        relationships: vec![Relationship::Authentication],
        device: None,
    });
    let update = Operation::update(&did, genesis, next.clone(), 1_790_000_060, &b).unwrap();
    let deactivate = Operation::deactivate(&did, update.cid().unwrap(), 1_790_000_120, &a).unwrap();
    // A link to an external account, attested by a member (seed 5).
    let link = link_vector(&did);
    let mut linked = next.clone();
    linked.links.push(
        serde_json::from_value::<did_core::federation::FedLink>(link["link"].clone()).unwrap(),
    );
    let update_link =
        Operation::update(&did, update.cid().unwrap(), linked, 1_790_000_090, &a).unwrap();
    // A login policy: 2 of {key-1, the phone key (tagged), a committed phone}.
    let phone = phone_vector();
    let mut guarded = next.clone();
    guarded.verification_methods[1].device = Some("phone".into());
    guarded.phones.push(did_core::policy::Phone {
        id: "mobile".into(),
        commitment: phone["commitment"].as_str().unwrap().to_string(),
    });
    guarded.login_policy = Some(did_core::policy::LoginPolicy {
        required: 2,
        factors: vec!["key-1".into(), "phone".into(), "mobile".into()],
    });
    let update_policy =
        Operation::update(&did, update.cid().unwrap(), guarded, 1_790_000_095, &a).unwrap();
    // Sign-out everywhere at 1_790_000_100 plus one revoked token id
    // (PROTOCOL.md, "Revocation"); states without revocations carry no
    // `revocations` member at all, so their bytes did not change.
    let mut revoked = next.clone();
    revoked.revocations = did_core::op::Revocations {
        before: 1_790_000_100,
        jti: vec![did_core::op::RevokedJti {
            jti: "00112233445566778899aabbccddeeff".into(),
            exp: 1_790_000_900,
        }],
    };
    let update_revocations =
        Operation::update(&did, update.cid().unwrap(), revoked, 1_790_000_100, &a).unwrap();
    // A membership change by two members (author a, co-signer b): the
    // co-signature is outside the signed body and outside the CID.
    let member_add = Operation::membership(
        did_core::op::OpKind::MemberAdd,
        "mesh-vectors",
        None,
        did_core::member::Member::from_key("node3", public_of(&SigningKey::from_bytes(&[3u8; 32]))),
        1_790_000_200,
        &[&a, &b],
    )
    .unwrap();
    // The same change for a member carrying ID-token keys: the RSA modulus
    // of RFC 7517 Appendix A.1 (RFC 7638 §3.1 gives its thumbprint) and a
    // P-256 key from a fixed scalar.
    let token_member = Member::from_key("node4", public_of(&SigningKey::from_bytes(&[4u8; 32])))
        .with_token_keys(
            RsaPublicJwk::new(RFC7517_N, "AQAB").unwrap(),
            p256_of(&P256_SEED),
        );
    let member_add_token_keys = Operation::membership(
        did_core::op::OpKind::MemberAdd,
        "mesh-vectors",
        None,
        token_member.clone(),
        1_790_000_300,
        &[&a, &b],
    )
    .unwrap();
    // The same member rotates its three token keys (PROTOCOL.md, "Member
    // key rotation"): new Ed25519 key (seed 6), new P-256 key (scalar 6),
    // the same RSA key, its node_did unchanged. The parent is the add.
    let mut rotated = Member::from_key("node4", public_of(&SigningKey::from_bytes(&[6u8; 32])))
        .with_token_keys(
            RsaPublicJwk::new(RFC7517_N, "AQAB").unwrap(),
            p256_of(&[6u8; 32]),
        );
    rotated.node_did = token_member.node_did.clone();
    let member_rotate = Operation::membership(
        did_core::op::OpKind::MemberRotate,
        "mesh-vectors",
        Some(member_add_token_keys.cid().unwrap()),
        rotated,
        1_790_000_400,
        &[&a, &b],
    )
    .unwrap();
    // A member quorum revokes the sessions of a compromised DID.
    let member_revoke = Operation::member_revoke(
        "mesh-vectors",
        Some(member_rotate.cid().unwrap()),
        did_core::member::MemberRevocation {
            did: did.clone(),
            before: 1_790_000_500,
        },
        1_790_000_500,
        &[&a, &b],
    )
    .unwrap();
    let entry = |name: &str, seed: &[u8; 32], op: &Operation| {
        json!({
            "name": name,
            "signer_seed_hex": hex::encode(seed),
            "op": serde_json::to_value(op).unwrap(),
            "signing_bytes_hex": hex::encode(op.signing_bytes().unwrap()),
            "op_bytes_hex": hex::encode(op.canonical_bytes().unwrap()),
            "signature_b64url": op.sig,
            "cid": op.cid().unwrap().to_string(),
            "did": did,
        })
    };
    json!({
        "description": "didmesh canonical encoding vectors (protocol v2): RFC 8785 JSON; signing bytes = the op without sig and cosigs; Ed25519 over the signing bytes; CID = CIDv1 raw blake3 of the signing bytes; did:mesh = base32(blake3(signing bytes of create)[..20])",
        "vectors": [
            entry("create", &seed_a, &create),
            entry("update-by-second-rotation-key", &seed_b, &update),
            entry("deactivate", &seed_a, &deactivate),
            entry("update-with-federated-link", &seed_a, &update_link),
            entry("update-with-login-policy", &seed_a, &update_policy),
            entry("update-with-revocations", &seed_a, &update_revocations),
            entry("member-add-with-cosignature", &seed_a, &member_add),
            entry("member-add-with-token-keys", &seed_a, &member_add_token_keys),
            entry("member-rotate-keeps-node-did", &seed_a, &member_rotate),
            entry("member-revoke", &seed_a, &member_revoke),
        ],
        "member_token_keys": [token_keys_vector(&token_member)],
        "networks": [network_vector(None), network_vector(Some(600))],
        "login_messages": [login_vector()],
        "federated_links": [link],
        "phone_commitments": [phone],
    })
}

/// A phone commitment (PROTOCOL.md, "Login policy"): base64url(blake3(
/// "didmesh phone v1\0" ‖ len(salt) as u64 big-endian ‖ salt ‖ number)).
fn phone_vector() -> Value {
    let salt: [u8; 16] = core::array::from_fn(|i| (0xa0 + i) as u8);
    let number = "+14155550100";
    json!({
        "name": "us-number",
        "salt_hex": hex::encode(salt),
        "number": number,
        "commitment": did_core::policy::phone_commitment(&salt, number),
    })
}

/// A federated link (PROTOCOL.md, "Federated links"): commitment =
/// base64url(blake3("didmesh federated account v1\0" ‖ network_id ‖ "\0" ‖
/// iss ‖ "\0" ‖ sub)); the member signs canonical JSON of {attested_at,
/// commitment, did, network_id, provider, type}.
fn link_vector(did: &str) -> Value {
    use did_core::federation::{attestation_bytes, commitment, sign_attestation};
    let member_seed = [5u8; 32];
    let (network_id, iss, sub) = (
        "mesh-abcdefghijklmnop",
        "https://accounts.example",
        "248289761001",
    );
    let (provider, attested_at) = ("acme", 1_790_000_080);
    let c = commitment(network_id, iss, sub);
    let att = sign_attestation(
        &SigningKey::from_bytes(&member_seed),
        network_id,
        did,
        provider,
        &c,
        attested_at,
    );
    json!({
        "name": "acme-account",
        "member_seed_hex": hex::encode(member_seed),
        "network_id": network_id,
        "iss": iss,
        "sub": sub,
        "did": did,
        "commitment": c,
        "attestation_bytes_hex": hex::encode(attestation_bytes(network_id, did, provider, &c, attested_at)),
        "link": att.into_link("acme-1"),
    })
}

/// RFC 7517 Appendix A.1's RSA modulus (RFC 7638 §3.1 thumbprints it).
const RFC7517_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
/// The P-256 private scalar of the vector member's ES256 key.
const P256_SEED: [u8; 32] = [4u8; 32];

fn p256_of(scalar: &[u8; 32]) -> did_core::passkey::P256Key {
    let sk = p256::ecdsa::SigningKey::from_slice(scalar).unwrap();
    did_core::passkey::P256Key::from_sec1(sk.verifying_key().to_encoded_point(true).as_bytes())
        .unwrap()
}

/// A member entry's ID-token keys as a JWKS serves them, with their RFC
/// 7638 thumbprints as `kid` (RSA: SHA-256 of {"e","kty","n"}; EC: of
/// {"crv","kty","x","y"}).
fn token_keys_vector(member: &Member) -> Value {
    let rsa = member.rsa.as_ref().unwrap();
    let p256 = member.p256.as_ref().unwrap();
    json!({
        "name": "rfc7517-rsa-and-p256-scalar-04",
        "member": member,
        "p256_seed_hex": hex::encode(P256_SEED),
        "jwks": [rsa.jwk(), p256_jwk(p256)],
    })
}

/// A three-member genesis: network_id = "mesh-" + base32_lower(blake3(
/// canonical JSON of {created_at, issuer, members, quorum}))[..16]; with a
/// non-default `key_overlap_secs` rule, that member joins the hashed
/// object (absent at the default 3600, so older ids are unchanged).
fn network_vector(overlap: Option<u64>) -> Value {
    let seeds: Vec<[u8; 32]> = (1..=3u8).map(|i| [i; 32]).collect();
    let members: Vec<Member> = seeds
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Member::from_key(
                &format!("node{}", i + 1),
                public_of(&SigningKey::from_bytes(s)),
            )
        })
        .collect();
    let (genesis, preimage) = match overlap {
        None => {
            let g = Genesis::new("https://didmesh.local", members, 2, 1_790_000_000).unwrap();
            let p = id_preimage(&g.issuer, &g.members, g.quorum, g.created_at).unwrap();
            (g, p)
        }
        Some(secs) => {
            let g = Genesis::with_overlap("https://didmesh.local", members, 2, 1_790_000_000, secs)
                .unwrap();
            let p = did_core::network::id_preimage_with_overlap(
                &g.issuer,
                &g.members,
                g.quorum,
                g.created_at,
                secs,
            )
            .unwrap();
            (g, p)
        }
    };
    let name = match overlap {
        None => "three-founders-quorum-2".to_string(),
        Some(secs) => format!("three-founders-quorum-2-key-overlap-{secs}"),
    };
    json!({
        "name": name,
        "member_seeds_hex": seeds.iter().map(hex::encode).collect::<Vec<_>>(),
        "genesis": genesis,
        "id_preimage_hex": hex::encode(preimage),
        "network_id": genesis.network_id,
    })
}

/// The exact text a wallet signs for a login challenge.
fn login_vector() -> Value {
    let challenge = LoginChallenge {
        domain: "127.0.0.1:7001".into(),
        did: "did:mesh:fejkf6myyqkxiwhzrjucnlnezrgippxw".into(),
        network_id: "mesh-abcdefghijklmnop".into(),
        nonce: "00112233445566778899aabbccddeeff".into(),
        audience: "home-api".into(),
        issued_at: 1_790_000_000,
        expires_at: 1_790_000_120,
    };
    assert_eq!(
        LoginChallenge::parse(&challenge.message()).unwrap(),
        challenge
    );
    json!({
        "name": "challenge",
        "domain": challenge.domain,
        "did": challenge.did,
        "network_id": challenge.network_id,
        "nonce": challenge.nonce,
        "audience": challenge.audience,
        "issued_at": challenge.issued_at,
        "expires_at": challenge.expires_at,
        "message": challenge.message(),
    })
}

#[test]
fn vectors_file_matches_the_implementation() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors.json");
    let fresh = vectors();
    if std::env::var_os("UPDATE_VECTORS").is_some() {
        std::fs::write(path, serde_json::to_string_pretty(&fresh).unwrap() + "\n").unwrap();
    }
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(
        stored, fresh,
        "encoding changed: that breaks every stored ledger"
    );
    // the stored genesis checks, and the stored message parses back
    for n in stored["networks"].as_array().unwrap() {
        let genesis: Genesis = serde_json::from_value(n["genesis"].clone()).unwrap();
        genesis.check().unwrap();
        assert_eq!(genesis.network_id, n["network_id"]);
    }
    for m in stored["login_messages"].as_array().unwrap() {
        let parsed = LoginChallenge::parse(m["message"].as_str().unwrap()).unwrap();
        assert_eq!(parsed.nonce, m["nonce"]);
        assert_eq!(parsed.issued_at, m["issued_at"]);
    }
    // the stored member entry with token keys reads back, and the RSA
    // thumbprint is RFC 7638 §3.1's
    for t in stored["member_token_keys"].as_array().unwrap() {
        let m: Member = serde_json::from_value(t["member"].clone()).unwrap();
        assert_eq!(
            m.rsa.unwrap().thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }
    // and every stored op parses back to the same bytes
    for v in stored["vectors"].as_array().unwrap() {
        let op = Operation::from_json(v["op"].to_string().as_bytes()).unwrap();
        assert_eq!(
            hex::encode(op.canonical_bytes().unwrap()),
            v["op_bytes_hex"]
        );
    }
}
