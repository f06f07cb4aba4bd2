//! ID-token keys (RS256, ES256, EdDSA) of every member: the JWKS serves
//! three keys per member with RFC 7638 kids (recomputed here from the key
//! material alone), a token the node signs with each alg verifies with the
//! key the JWKS gives for its kid, a genesis with a bad RSA modulus or
//! P-256 point is refused, an old genesis still loads under its id, and a
//! new member's keys reach the JWKS through `member-entry` → `member-add
//! --member-entry`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use did_core::client::IdTokenAlg;
use didmesh_node::admin;
use didmesh_node::config::MemberChange;
use didmesh_node::identity::{Genesis, GenesisFile as _};
use didmesh_node::token_keys::{TokenKeys, P256_KEY_FILE, RSA_KEY_FILE};
use didmesh_tests::router::RouterNode;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::path::Path;

const ALGS: [IdTokenAlg; 3] = [IdTokenAlg::RS256, IdTokenAlg::ES256, IdTokenAlg::EdDSA];

/// RFC 7638 §3: SHA-256 over the JSON of the required members, sorted,
/// without whitespace, base64url. Built here from a BTreeMap, apart from
/// the node's own format strings.
fn thumbprint(jwk: &Value) -> String {
    let required: &[&str] = match jwk["kty"].as_str().unwrap() {
        "RSA" => &["e", "kty", "n"],
        "EC" => &["crv", "kty", "x", "y"],
        "OKP" => &["crv", "kty", "x"],
        other => panic!("unexpected kty {other}"),
    };
    let members: BTreeMap<&str, &str> = required
        .iter()
        .map(|k| (*k, jwk[*k].as_str().unwrap()))
        .collect();
    let text = serde_json::to_string(&members).unwrap();
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(text.as_bytes()))
}

async fn jwks(node: &RouterNode) -> Vec<Value> {
    let (status, body) = node.get("/.well-known/jwks.json").await;
    assert!(status.is_success(), "{body}");
    body["keys"].as_array().unwrap().clone()
}

/// Checks every key of a JWKS: a well-formed JWK of its kind whose kid is
/// its thumbprint, kids unique.
fn check_jwks(keys: &[Value]) {
    let mut kids: Vec<&str> = vec![];
    for k in keys {
        assert_eq!(k["use"], "sig", "{k}");
        assert_eq!(k["kid"].as_str().unwrap(), thumbprint(k), "{k}");
        match k["kty"].as_str().unwrap() {
            "RSA" => {
                assert_eq!(k["alg"], "RS256");
                assert_eq!(k["e"], "AQAB");
                let n = URL_SAFE_NO_PAD.decode(k["n"].as_str().unwrap()).unwrap();
                assert_eq!(n.len(), 256);
                assert!(n[0] & 0x80 != 0, "a 2048-bit modulus");
            }
            "EC" => {
                assert_eq!(k["alg"], "ES256");
                assert_eq!(k["crv"], "P-256");
                for c in ["x", "y"] {
                    let b = URL_SAFE_NO_PAD.decode(k[c].as_str().unwrap()).unwrap();
                    assert_eq!(b.len(), 32, "RFC 7518 §6.2.1.2: full-length coordinates");
                }
            }
            "OKP" => assert_eq!(k["alg"], "EdDSA"),
            other => panic!("kty {other}"),
        }
        kids.push(k["kid"].as_str().unwrap());
    }
    let n = kids.len();
    kids.sort();
    kids.dedup();
    assert_eq!(kids.len(), n, "kids are unique");
}

fn jwt_alg(alg: IdTokenAlg) -> Algorithm {
    match alg {
        IdTokenAlg::RS256 => Algorithm::RS256,
        IdTokenAlg::ES256 => Algorithm::ES256,
        IdTokenAlg::EdDSA => Algorithm::EdDSA,
    }
}

/// Verifies `token` the way a relying party does: pick the JWKS key by the
/// header's kid, build the key from the JWK, check alg and signature.
fn verify(token: &str, keys: &[Value], alg: IdTokenAlg) -> Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    assert_eq!(header.alg, jwt_alg(alg));
    let kid = header.kid.expect("a kid in the header");
    let jwk = keys
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} not in the JWKS"));
    let jwk: Jwk = serde_json::from_value(jwk.clone()).unwrap();
    let key = DecodingKey::from_jwk(&jwk).unwrap();
    let mut v = Validation::new(jwt_alg(alg));
    v.set_audience(&["rp.example"]);
    v.set_issuer(&["https://didmesh.local"]);
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .unwrap_or_else(|e| panic!("{alg:?} token does not verify: {e}"))
        .claims
}

fn claims() -> Value {
    json!({
        "iss": "https://didmesh.local",
        "sub": "did:mesh:fejkf6myyqkxiwhzrjucnlnezrgippxw",
        "aud": "rp.example",
        "exp": didmesh_node::now() + 300,
        "iat": didmesh_node::now(),
    })
}

#[tokio::test]
async fn a_dev_node_serves_three_keys_and_its_tokens_of_each_alg_verify() {
    let node = RouterNode::start().await;
    let keys = jwks(&node).await;
    assert_eq!(keys.len(), 3, "{keys:?}");
    let kinds: Vec<&str> = keys.iter().map(|k| k["kty"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["OKP", "RSA", "EC"]);
    check_jwks(&keys);
    // The Ed25519 kid is the one access tokens carry (unchanged).
    assert_eq!(
        keys[0]["kid"].as_str().unwrap(),
        didmesh_node::identity::kid(&node.state.me.key)
    );
    for alg in ALGS {
        let token = node.state.token_keys.sign(alg, &claims()).unwrap();
        let got = verify(&token, &keys, alg);
        assert_eq!(got["aud"], "rp.example");
        assert!(node
            .state
            .token_keys
            .listed(alg, std::slice::from_ref(&node.state.me)));
    }
    // A token of one alg does not verify under another member key: the
    // RS256 token's signature checked against the EC key fails.
    let rs = node
        .state
        .token_keys
        .sign(IdTokenAlg::RS256, &claims())
        .unwrap();
    let ec: Jwk = serde_json::from_value(keys[2].clone()).unwrap();
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&["rp.example"]);
    assert!(jsonwebtoken::decode::<Value>(&rs, &DecodingKey::from_jwk(&ec).unwrap(), &v).is_err());
}

#[tokio::test]
async fn init_network_puts_every_founders_keys_in_the_genesis_and_the_jwks() {
    let tmp = tempfile::tempdir().unwrap();
    let genesis = admin::init_network(3, tmp.path(), "https://didmesh.local", None).unwrap();
    for m in &genesis.members {
        assert!(m.rsa.is_some() && m.p256.is_some(), "{m:?}");
    }
    let node = RouterNode::open(&tmp.path().join("node2"), &[]).await;
    let keys = jwks(&node).await;
    assert_eq!(keys.len(), 9);
    check_jwks(&keys);
    // Each founder's own files make the kids the JWKS serves.
    for i in 1..=3 {
        let tk = TokenKeys::load_or_create(&tmp.path().join(format!("node{i}"))).unwrap();
        for alg in ALGS {
            let kid = tk.kid(alg);
            assert!(
                keys.iter().any(|k| k["kid"] == kid.as_str()),
                "node{i} {alg:?}"
            );
            verify(&tk.sign(alg, &claims()).unwrap(), &keys, alg);
        }
    }
}

/// A genesis file whose first member carries `edit`ed keys.
fn genesis_with(dir: &Path, edit: impl Fn(&mut Value)) -> std::path::PathBuf {
    let tk = TokenKeys::load_or_create(dir).unwrap();
    let g = Genesis::new(
        "https://didmesh.local",
        vec![tk.member_entry("node1")],
        1,
        1_790_000_000,
    )
    .unwrap();
    let mut v = serde_json::to_value(&g).unwrap();
    edit(&mut v);
    // Keep the id derived from the (edited) content, so only the key can
    // be what is refused.
    let body = json!({
        "created_at": v["created_at"], "issuer": v["issuer"],
        "members": v["members"], "quorum": v["quorum"],
    });
    let bytes = did_core::encoding::canonical_value(&body).unwrap();
    let digest = did_core::encoding::base32_lower(blake3::hash(&bytes).as_bytes());
    v["network_id"] = format!("mesh-{}", &digest[..16]).into();
    let path = dir.join("edited-genesis.json");
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    path
}

fn open_err(dir: &Path, genesis: &Path) -> String {
    use clap::Parser as _;
    let config = didmesh_node::config::Config::try_parse_from([
        "didmesh-node".as_ref(),
        "--data-dir".as_ref(),
        dir.as_os_str(),
        "--genesis".as_ref(),
        genesis.as_os_str(),
        "--no-p2p".as_ref(),
    ])
    .unwrap();
    match didmesh_node::NodeState::open(&config) {
        Ok(_) => panic!("a genesis with a bad key was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_genesis_with_a_bad_rsa_modulus_or_p256_point_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    // Control: the unedited genesis opens.
    let fine = genesis_with(tmp.path(), |_| {});
    assert!(Genesis::load(&fine).is_ok());

    // RSA-1024: half the modulus.
    let short = genesis_with(tmp.path(), |v| {
        let n = v["members"][0]["rsa"]["n"].as_str().unwrap().to_string();
        let bytes = URL_SAFE_NO_PAD.decode(&n).unwrap();
        v["members"][0]["rsa"]["n"] = URL_SAFE_NO_PAD.encode(&bytes[..128]).into();
    });
    let err = open_err(tmp.path(), &short);
    assert!(
        err.contains("not a valid genesis") && err.contains("n must be 256 bytes"),
        "{err}"
    );

    let e3 = genesis_with(tmp.path(), |v| v["members"][0]["rsa"]["e"] = "Aw".into());
    let err = open_err(tmp.path(), &e3);
    assert!(err.contains("e must be AQAB"), "{err}");

    // A "compressed point" whose x is not even a field element (2²⁵⁶-1
    // is above the P-256 prime).
    let off_curve = genesis_with(tmp.path(), |v| {
        let mut raw = did_core::passkey::P256_PUB_MULTICODEC.to_vec();
        raw.push(0x02);
        raw.extend([0xff; 32]);
        v["members"][0]["p256"] = format!("z{}", bs58_encode(&raw)).into();
    });
    let err = open_err(tmp.path(), &off_curve);
    assert!(err.contains("not a point on P-256"), "{err}");
}

/// Base58btc (Bitcoin alphabet), written out so the test does not lean on
/// the node's encoder.
fn bs58_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut digits: Vec<u8> = vec![];
    for &byte in data {
        let mut carry = byte as u32;
        for d in digits.iter_mut() {
            carry += (*d as u32) << 8;
            *d = (carry % 58) as u8;
            carry /= 58;
        }
        while carry > 0 {
            digits.push((carry % 58) as u8);
            carry /= 58;
        }
    }
    let zeros = data.iter().take_while(|b| **b == 0).count();
    std::iter::repeat_n('1', zeros)
        .chain(digits.iter().rev().map(|d| ALPHABET[*d as usize] as char))
        .collect()
}

/// The genesis of did-core's test vectors, written before members had
/// ID-token keys.
const OLD_GENESIS: &str = r#"{
  "created_at": 1790000000,
  "issuer": "https://didmesh.local",
  "members": [
    {"key": "z6Mkon3Necd6NkkyfoGoHxid2znGc59LU3K7mubaRcFbLfLX", "name": "node1",
     "node_did": "did:key:z6Mkon3Necd6NkkyfoGoHxid2znGc59LU3K7mubaRcFbLfLX"},
    {"key": "z6Mko9hTggMwjSTEaJaPUfE6tqcy2xvU6BnNq3e3o8qVBiyH", "name": "node2",
     "node_did": "did:key:z6Mko9hTggMwjSTEaJaPUfE6tqcy2xvU6BnNq3e3o8qVBiyH"},
    {"key": "z6MkvRXNYcE7MMduynWTgeKbDaT1iijDSC8pZqXZc8rHPrf2", "name": "node3",
     "node_did": "did:key:z6MkvRXNYcE7MMduynWTgeKbDaT1iijDSC8pZqXZc8rHPrf2"}
  ],
  "network_id": "mesh-uqkvgiey7mcsz3gj",
  "quorum": 2
}"#;

#[tokio::test]
async fn an_old_genesis_and_data_folder_still_open_under_the_same_id() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("genesis.json");
    std::fs::write(&path, OLD_GENESIS).unwrap();
    let g = Genesis::load(&path).unwrap();
    assert_eq!(g.network_id, "mesh-uqkvgiey7mcsz3gj");
    // Saved again, it has the same content (no new fields appear).
    g.save(&path).unwrap();
    let again: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(again, serde_json::from_str::<Value>(OLD_GENESIS).unwrap());

    // A data folder from before: member-key.pem (node1's seed) only.
    let dir = tmp.path().join("node1");
    std::fs::create_dir(&dir).unwrap();
    let seed = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
    let der = didmesh_node::identity::pkcs8_der(&seed);
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    );
    std::fs::write(dir.join("member-key.pem"), pem).unwrap();
    let genesis = path.to_string_lossy().into_owned();
    let node = RouterNode::open(&dir, &["--genesis", &genesis]).await;
    assert_eq!(node.state.genesis.network_id, "mesh-uqkvgiey7mcsz3gj");
    assert!(node.state.is_member());
    // The folder gained the two ID-token key files …
    assert!(dir.join(RSA_KEY_FILE).exists() && dir.join(P256_KEY_FILE).exists());
    // … but the ledger has no public halves for them yet: the JWKS serves
    // the three Ed25519 keys it always did, and the node knows its RS256
    // and ES256 tokens would not verify.
    let keys = jwks(&node).await;
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| k["kty"] == "OKP"));
    check_jwks(&keys);
    let members = node.state.ledger.read().unwrap().members().to_vec();
    assert!(node.state.token_keys.listed(IdTokenAlg::EdDSA, &members));
    assert!(!node.state.token_keys.listed(IdTokenAlg::RS256, &members));
    assert!(!node.state.token_keys.listed(IdTokenAlg::ES256, &members));
}

#[tokio::test]
async fn member_entry_then_member_add_brings_the_new_members_keys_to_the_jwks() {
    let tmp = tempfile::tempdir().unwrap();
    admin::init_network(3, tmp.path(), "https://didmesh.local", None).unwrap();
    let node = RouterNode::open(&tmp.path().join("node1"), &[]).await;
    let newcomer = tmp.path().join("node4");
    std::fs::create_dir(&newcomer).unwrap();
    let line = admin::member_entry(&newcomer, "node4").unwrap();
    assert!(!line.contains('\n'), "one line");
    let entry: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["name"], "node4");
    assert!(
        entry["rsa"]["n"].is_string() && entry["p256"].is_string(),
        "{entry}"
    );

    let change = |member_entry: Option<String>, member: Option<String>| MemberChange {
        node: node.url.clone(),
        member,
        member_entry,
        name: None,
        sign_with: vec![tmp.path().join("node1"), tmp.path().join("node2")],
        force: false,
    };
    // A tampered entry (RSA modulus one byte short) is refused before any
    // op is sent.
    let mut bad = entry.clone();
    let n = URL_SAFE_NO_PAD
        .decode(bad["rsa"]["n"].as_str().unwrap())
        .unwrap();
    bad["rsa"]["n"] = URL_SAFE_NO_PAD.encode(&n[1..]).into();
    let err = admin::member_change(
        did_core::OpKind::MemberAdd,
        &change(Some(bad.to_string()), None),
    )
    .await
    .unwrap_err();
    assert!(err.contains("n must be 256 bytes"), "{err}");

    // From a file, as an operator would pass it.
    let file = tmp.path().join("node4.json");
    std::fs::write(&file, &line).unwrap();
    let file = file.to_string_lossy().into_owned();
    admin::member_change(did_core::OpKind::MemberAdd, &change(Some(file), None))
        .await
        .unwrap();
    let keys = jwks(&node).await;
    assert_eq!(keys.len(), 12);
    check_jwks(&keys);
    let tk = TokenKeys::load_or_create(&newcomer).unwrap();
    for alg in ALGS {
        verify(&tk.sign(alg, &claims()).unwrap(), &keys, alg);
    }

    // The old --member flag still works: a z6Mk… key adds an Ed25519-only
    // entry, under --name.
    std::fs::create_dir(tmp.path().join("node5")).unwrap();
    let fifth = TokenKeys::load_or_create(&tmp.path().join("node5")).unwrap();
    let mut args = change(None, Some(fifth.ed25519_public().to_string()));
    args.name = Some("node5".into());
    args.sign_with.push(tmp.path().join("node3"));
    admin::member_change(did_core::OpKind::MemberAdd, &args)
        .await
        .unwrap();
    let (_, network) = node.get("/v1/network").await;
    let five = &network["members"][4];
    assert_eq!(five["name"], "node5");
    assert!(five.get("rsa").is_none(), "{five}");
    assert_eq!(jwks(&node).await.len(), 13);
}
