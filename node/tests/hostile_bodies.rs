//! Throws a few thousand random and mutated bodies at `/v1/ops` and the
//! auth endpoints: no answer may be a 5xx, every refusal is JSON with a
//! reason (a non-JSON refusal shows up as a JSON string, which fails the
//! check), and the ledger does not change. The node is the testkit's
//! in-process [`RouterNode`].

use did_core::keys::public_of;
use did_core::{DidState, Operation};
use didmesh_tests::router::RouterNode;
use ed25519_dalek::SigningKey;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn mutate(rng: &mut StdRng, base: &[u8]) -> Vec<u8> {
    let mut b = base.to_vec();
    match rng.gen_range(0..6) {
        0 => {
            // flip random bytes
            for _ in 0..rng.gen_range(1..8) {
                if b.is_empty() {
                    break;
                }
                let i = rng.gen_range(0..b.len());
                b[i] = rng.gen();
            }
            b
        }
        1 => {
            b.truncate(rng.gen_range(0..=b.len()));
            b
        }
        2 => {
            // splice a random JSON-ish token
            let tokens: [&[u8]; 10] = [
                b"null",
                b"[]",
                b"{}",
                b"\"\"",
                b"-1",
                b"1e999",
                b"\"\\u0000\"",
                b"18446744073709551616",
                b"true",
                b"\"z6Mk\"",
            ];
            let t = tokens[rng.gen_range(0..tokens.len())];
            let i = rng.gen_range(0..=b.len());
            b.splice(i..i, t.iter().copied());
            b
        }
        3 => (0..rng.gen_range(0..512)).map(|_| rng.gen()).collect(),
        4 => {
            // duplicate a slice
            if !b.is_empty() {
                let i = rng.gen_range(0..b.len());
                let j = rng.gen_range(i..b.len());
                let s = b[i..j].to_vec();
                b.extend_from_slice(&s);
            }
            b
        }
        _ => {
            // replace a value by one of another type
            let s = String::from_utf8_lossy(&b).into_owned();
            s.replacen("\"update\"", "7", 1)
                .replacen("1", "\"1\"", 1)
                .into_bytes()
        }
    }
}

#[tokio::test]
async fn thousands_of_hostile_bodies_change_nothing() {
    let n = RouterNode::start().await;
    let key = SigningKey::from_bytes(&[1; 32]);
    let now = didmesh_tests::now();
    let create = Operation::create(DidState::single_key(public_of(&key)), now, &key).unwrap();
    let did = did_core::op::did_from_genesis(&create.cid().unwrap());
    assert_eq!(n.submit(&create).await.0, 201);
    let update = Operation::update(
        &did,
        create.cid().unwrap(),
        DidState::single_key(public_of(&SigningKey::from_bytes(&[2; 32]))),
        now,
        &key,
    )
    .unwrap();
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("/v1/ops", serde_json::to_vec(&update).unwrap()),
        ("/v1/ops", serde_json::to_vec(&create).unwrap()),
        ("/v1/auth/challenge", serde_json::to_vec(&serde_json::json!({"did": did, "audience": "x"})).unwrap()),
        (
            "/v1/auth/token",
            serde_json::to_vec(&serde_json::json!({"did": did, "nonce": "00112233445566778899aabbccddeeff", "signature": update.sig})).unwrap(),
        ),
    ];
    let before = n.status().await;
    let mut rng = StdRng::seed_from_u64(0xd1d_3e5);
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..3000 {
        let (uri, base) = &seeds[i % seeds.len()];
        let body = mutate(&mut rng, base);
        // an unchanged update would be a legitimate write: skip it
        if body == seeds[0].1 {
            continue;
        }
        let (status, v) = n.call("POST", uri, Some(body.clone())).await;
        assert!(
            !status.is_server_error(),
            "{uri} answered {status} to {:?}",
            String::from_utf8_lossy(&body)
        );
        *statuses.entry(status.as_u16()).or_insert(0u32) += 1;
        if !status.is_success() {
            assert!(
                v["error"].is_string() && v["reason"].is_string(),
                "{uri} {status}: {v}"
            );
        }
    }
    let after = n.status().await;
    assert_eq!(before["ledger_digest"], after["ledger_digest"]);
    assert_eq!(before["log_entries"], after["log_entries"]);
    println!("statuses: {statuses:?}");
}
