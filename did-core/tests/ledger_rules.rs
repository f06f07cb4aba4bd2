//! Ledger rules: fork resolution, order independence, refusals.

use did_core::keys::public_of;
use did_core::ledger::Ledger;
use did_core::op::{DidState, OpError, Operation};
use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn two_key_state(high: &SigningKey, low: &SigningKey) -> DidState {
    let mut s = DidState::single_key(public_of(high));
    s.rotation_keys.push(public_of(low));
    s
}

#[test]
fn higher_priority_key_wins_a_fork_in_any_order() {
    let (high, low) = (key(1), key(2));
    let create = Operation::create(two_key_state(&high, &low), 100, &high).unwrap();
    let genesis = create.cid().unwrap();
    let did = did_core::op::did_from_genesis(&genesis);
    // low-priority key rotates first, high-priority key recovers later
    let by_low = Operation::update(
        &did,
        genesis,
        DidState::single_key(public_of(&key(3))),
        110,
        &low,
    )
    .unwrap();
    let by_high = Operation::update(
        &did,
        genesis,
        DidState::single_key(public_of(&key(4))),
        120,
        &high,
    )
    .unwrap();
    for order in [[&create, &by_low, &by_high], [&create, &by_high, &by_low]] {
        let mut ledger = Ledger::default();
        for op in order {
            ledger.apply(op.clone()).unwrap();
        }
        let view = ledger.resolve(&did).unwrap();
        assert_eq!(view.head, by_high.cid().unwrap());
        assert_eq!(view.state.unwrap().rotation_keys[0], public_of(&key(4)));
        let log = ledger.did_log(&did).unwrap();
        assert_eq!(log.len(), 3, "losing branch stays stored for audit");
        assert_eq!(log.iter().filter(|e| e.winning).count(), 2);
    }
}

#[test]
fn equal_priority_fork_is_a_dispute_not_a_cid_race() {
    let k = key(1);
    let create = Operation::create(DidState::single_key(public_of(&k)), 100, &k).unwrap();
    let g = create.cid().unwrap();
    let did = did_core::op::did_from_genesis(&g);
    let a = Operation::update(&did, g, DidState::single_key(public_of(&key(5))), 101, &k).unwrap();
    let b = Operation::update(&did, g, DidState::single_key(public_of(&key(6))), 101, &k).unwrap();
    for order in [[&create, &b, &a], [&create, &a, &b]] {
        let mut l = Ledger::default();
        for op in order {
            l.apply(op.clone()).unwrap();
        }
        let view = l.resolve(&did).unwrap();
        assert_eq!(view.head, g, "frozen at the parent of the equivocation");
        let dispute = view
            .disputed
            .as_ref()
            .expect("key 1 signed two children of the genesis");
        assert_eq!(dispute.key, public_of(&k));
        assert_eq!(dispute.ops.len(), 2);
        assert!(view.usable_state().is_none(), "no login on a disputed DID");
    }
}

#[test]
fn refusals_carry_reasons_and_store_nothing() {
    let k = key(1);
    let create = Operation::create(DidState::single_key(public_of(&k)), 100, &k).unwrap();
    let g = create.cid().unwrap();
    let did = did_core::op::did_from_genesis(&g);
    let mut l = Ledger::default();
    l.apply(create).unwrap();
    let before = l.op_set_digest();

    // signed by a key that is not a rotation key at prev
    let stranger = Operation::update(
        &did,
        g,
        DidState::single_key(public_of(&key(9))),
        101,
        &key(9),
    )
    .unwrap();
    assert!(matches!(
        l.validate(&stranger),
        Err(OpError::BadSignature(_))
    ));
    // forged: signature by one key, signer field claims another
    let mut forged = Operation::update(
        &did,
        g,
        DidState::single_key(public_of(&key(9))),
        101,
        &key(9),
    )
    .unwrap();
    forged.signer = public_of(&k);
    assert!(matches!(l.validate(&forged), Err(OpError::BadSignature(_))));
    // prev that does not exist
    let ghost = did_core::Cid::of(b"nothing");
    let orphan =
        Operation::update(&did, ghost, DidState::single_key(public_of(&k)), 101, &k).unwrap();
    assert!(matches!(l.validate(&orphan), Err(OpError::UnknownPrev(_))));
    // too many rotation keys
    let mut big = DidState::single_key(public_of(&k));
    big.rotation_keys = (10..20).map(|i| public_of(&key(i))).collect();
    let too_big = Operation::update(&did, g, big, 101, &k).unwrap();
    assert!(matches!(l.validate(&too_big), Err(OpError::Limit(_))));
    // children of a deactivated DID
    let deact = Operation::deactivate(&did, g, 102, &k).unwrap();
    l.apply(deact.clone()).unwrap();
    assert!(l.resolve(&did).unwrap().deactivated());
    let after = Operation::update(
        &did,
        deact.cid().unwrap(),
        DidState::single_key(public_of(&k)),
        103,
        &k,
    )
    .unwrap();
    assert_eq!(l.validate(&after).unwrap_err(), OpError::Deactivated);
    assert_eq!(l.len(), 2);
    assert_ne!(l.op_set_digest(), before, "only the deactivation was added");
}

#[test]
fn unknown_fields_and_kinds_are_malformed() {
    assert!(matches!(
        Operation::from_json(br#"{"type":"explode"}"#),
        Err(OpError::Malformed(_))
    ));
    let k = key(1);
    let op = Operation::create(DidState::single_key(public_of(&k)), 100, &k).unwrap();
    let mut v = serde_json::to_value(&op).unwrap();
    v["extra"] = serde_json::json!(1);
    assert!(matches!(
        Operation::from_json(v.to_string().as_bytes()),
        Err(OpError::Malformed(_))
    ));
}

/// Builds a random op set with forks, deactivations and invalid ops.
fn random_op_set(seed: u64) -> Vec<Operation> {
    let mut rng = StdRng::seed_from_u64(seed);
    let keys: Vec<SigningKey> = (0..6).map(|_| SigningKey::generate(&mut rng)).collect();
    let mut ops = vec![];
    for d in 0..4 {
        let k0 = &keys[d % keys.len()];
        let k1 = &keys[(d + 1) % keys.len()];
        let create = Operation::create(two_key_state(k0, k1), 1_000 + d as u64, k0).unwrap();
        let did = did_core::op::did_from_genesis(&create.cid().unwrap());
        // (cid, rotation keys of its state) of every op that has a state
        let mut tips = vec![(
            create.cid().unwrap(),
            vec![k0.clone(), k1.clone()],
            1_000 + d as u64,
        )];
        ops.push(create);
        for step in 0..rng.gen_range(2..7) {
            let (prev, rot, t) = tips[rng.gen_range(0..tips.len())].clone();
            let signer = &rot[rng.gen_range(0..rot.len())];
            let t = t + rng.gen_range(0..3);
            match rng.gen_range(0..10) {
                0 => ops.push(Operation::deactivate(&did, prev, t, signer).unwrap()),
                1 => {
                    // invalid: signed by a key that is not a rotation key
                    let outsider = SigningKey::generate(&mut rng);
                    ops.push(
                        Operation::update(
                            &did,
                            prev,
                            DidState::single_key(public_of(&outsider)),
                            t,
                            &outsider,
                        )
                        .unwrap(),
                    );
                }
                2 => {
                    // invalid: tampered signature
                    let mut op = Operation::update(
                        &did,
                        prev,
                        DidState::single_key(public_of(signer)),
                        t,
                        signer,
                    )
                    .unwrap();
                    op.created_at += 1;
                    ops.push(op);
                }
                _ => {
                    let a = keys[rng.gen_range(0..keys.len())].clone();
                    let b = keys[rng.gen_range(0..keys.len())].clone();
                    let rot = if a == b {
                        vec![a.clone()]
                    } else {
                        vec![a.clone(), b.clone()]
                    };
                    let mut state = two_key_state(&a, &b);
                    state.rotation_keys.truncate(rot.len());
                    state.also_known_as = vec![format!("at://step{step}")];
                    let op = Operation::update(&did, prev, state, t, signer).unwrap();
                    tips.push((op.cid().unwrap(), rot, t));
                    ops.push(op);
                }
            }
        }
    }
    ops
}

/// What two ledgers must agree on: op-set digest, state digest, and every
/// DID's (did, head, deactivated, disputed).
type Outcome = ([u8; 32], [u8; 32], Vec<(String, String, bool, bool)>);

fn outcome(ops: &[Operation]) -> Outcome {
    let mut l = Ledger::default();
    for op in ops {
        let _ = l.apply(op.clone());
    }
    let mut dids: Vec<(String, String, bool, bool)> = ops
        .iter()
        .filter_map(|op| op.did.clone())
        .filter_map(|d| {
            l.resolve(&d).map(|v| {
                (
                    d.clone(),
                    v.head.to_string(),
                    v.deactivated(),
                    v.disputed.is_some(),
                )
            })
        })
        .collect();
    dids.sort();
    dids.dedup();
    (l.op_set_digest(), l.state_digest(), dids)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn any_permutation_gives_the_same_state(seed in any::<u64>(), perm_seed in any::<u64>()) {
        let ops = random_op_set(seed);
        let reference = outcome(&ops);
        let mut rng = StdRng::seed_from_u64(perm_seed);
        for _ in 0..8 {
            let mut shuffled = ops.clone();
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, rng.gen_range(0..=i));
            }
            prop_assert_eq!(&outcome(&shuffled), &reference);
        }
    }
}
