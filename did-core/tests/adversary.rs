//! The ledger against a thief: stolen keys, replays, CID grinding.
//!
//! Each attack below was reproduced against the protocol before the
//! equivocation rule (PROTOCOL.md, "Fork rule"): with "same priority, lower
//! CID wins", a thief holding a rotated-out key ground `created_at` until
//! its op sorted first and took the DID over, replaced its history from the
//! genesis, or revived a deactivated DID. The property test at the end
//! plays random histories with an attacker holding some keys.

use did_core::keys::public_of;
use did_core::ledger::Ledger;
use did_core::op::{did_from_genesis, DidState, Operation};
use did_core::{Cid, PublicKey};
use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// A state whose rotation keys are `rot` (priority order) and whose one
/// authentication key is `auth`.
fn state(rot: &[&SigningKey], auth: &SigningKey) -> DidState {
    let mut s = DidState::single_key(public_of(auth));
    s.rotation_keys = rot.iter().map(|k| public_of(k)).collect();
    s
}

/// Thief's ops on `prev` signed by `stolen`, one per `created_at` in
/// `times` (grinding: each has another CID; the old rule let the lowest win).
fn ground(
    did: &str,
    prev: Cid,
    stolen: &SigningKey,
    thief: &SigningKey,
    times: std::ops::Range<u64>,
) -> Vec<Operation> {
    times
        .map(|t| Operation::update(did, prev, state(&[thief], thief), t, stolen).unwrap())
        .collect()
}

fn ledger(ops: &[&Operation]) -> Ledger {
    let mut l = Ledger::default();
    for op in ops {
        l.apply((*op).clone()).unwrap();
    }
    l
}

/// The authentication keys a login may use now (none when disputed or
/// deactivated).
fn login_keys(l: &Ledger, did: &str) -> Vec<PublicKey> {
    l.resolve(did)
        .and_then(|v| v.usable_state().cloned())
        .map(|s| {
            s.keys_for(did_core::op::Relationship::Authentication)
                .map(|vm| vm.public_key_multibase)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_rotated_out_key_cannot_win_back_the_did_by_grinding() {
    let (k, n, thief) = (key(1), key(2), key(66));
    let create = Operation::create(state(&[&k], &k), 1_000, &k).unwrap();
    let g = create.cid().unwrap();
    let did = did_from_genesis(&g);
    // The owner rotates K -> N, signed by K (what `didmesh did rotate` does).
    let rotate = Operation::update(&did, g, state(&[&n], &n), 1_010, &k).unwrap();
    let attack = ground(&did, g, &k, &thief, 1_010..1_060);
    let mut all: Vec<&Operation> = vec![&create, &rotate];
    all.extend(attack.iter());
    for order in [all.clone(), all.iter().rev().copied().collect()] {
        let mut l = Ledger::default();
        for op in order {
            let _ = l.apply(op.clone());
        }
        let keys = login_keys(&l, &did);
        assert!(
            !keys.contains(&public_of(&thief)),
            "the thief must never log in"
        );
        let view = l.resolve(&did).unwrap();
        assert!(
            view.disputed.is_some(),
            "K equivocated: evidence, not a winner"
        );
        assert_eq!(view.disputed.unwrap().ops.len(), 51);
    }
}

#[test]
fn the_owners_reaction_with_a_higher_key_decides_whatever_the_thief_signs() {
    // Recovery key R (priority 0, kept offline), daily key D (priority 1).
    let (r, d, d2, thief) = (key(1), key(2), key(3), key(66));
    let create = Operation::create(state(&[&r, &d], &d), 1_000, &r).unwrap();
    let g = create.cid().unwrap();
    let did = did_from_genesis(&g);
    let daily = Operation::update(&did, g, state(&[&r, &d], &d), 1_005, &d).unwrap();
    // D is stolen: the thief signs at every position where D rotates.
    let mut thief_ops = ground(&did, g, &d, &thief, 1_006..1_030);
    thief_ops.extend(ground(&did, daily.cid().unwrap(), &d, &thief, 1_006..1_030));
    // and builds on its own branch with its own key
    let own = Operation::update(
        &did,
        thief_ops[0].cid().unwrap(),
        state(&[&thief], &thief),
        1_031,
        &thief,
    )
    .unwrap();
    // The owner reacts at the genesis with R, rotating D away.
    let reaction = Operation::update(&did, g, state(&[&r, &d2], &d2), 1_040, &r).unwrap();
    // Afterwards the thief keeps signing with D (old now) anywhere it was valid.
    let late = ground(&did, g, &d, &thief, 1_041..1_050);
    let mut all: Vec<&Operation> = vec![&create, &daily, &own, &reaction];
    all.extend(thief_ops.iter().chain(late.iter()));
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..10 {
        let mut order = all.clone();
        for i in (2..order.len()).rev() {
            order.swap(i, rng.gen_range(1..=i));
        }
        let mut l = Ledger::default();
        for op in order {
            let _ = l.apply(op.clone());
        }
        let view = l.resolve(&did).unwrap();
        assert_eq!(view.head, reaction.cid().unwrap());
        assert!(view.disputed.is_none());
        assert_eq!(login_keys(&l, &did), vec![public_of(&d2)]);
    }
}

#[test]
fn grinding_on_the_genesis_cannot_replace_the_history() {
    let (k, n, thief) = (key(1), key(2), key(66));
    let create = Operation::create(state(&[&k], &k), 1_000, &k).unwrap();
    let g = create.cid().unwrap();
    let did = did_from_genesis(&g);
    let u1 = Operation::update(&did, g, state(&[&k], &k), 1_001, &k).unwrap();
    let u2 = Operation::update(&did, u1.cid().unwrap(), state(&[&n], &n), 1_002, &k).unwrap();
    let attack = ground(&did, g, &k, &thief, 1_001..1_040);
    let mut all = vec![&create, &u1, &u2];
    all.extend(attack.iter());
    let l = ledger(&all);
    let view = l.resolve(&did).unwrap();
    assert_ne!(
        view.head,
        u2.cid().unwrap(),
        "K signed two children of the genesis"
    );
    assert!(attack.iter().all(|a| a.cid().unwrap() != view.head));
    assert!(login_keys(&l, &did).is_empty());
}

#[test]
fn a_deactivated_did_stays_dead() {
    let (k, thief) = (key(1), key(66));
    let create = Operation::create(state(&[&k], &k), 1_000, &k).unwrap();
    let g = create.cid().unwrap();
    let did = did_from_genesis(&g);
    let u1 = Operation::update(&did, g, state(&[&k], &k), 1_001, &k).unwrap();
    let p = u1.cid().unwrap();
    let deactivate = Operation::deactivate(&did, p, 1_002, &k).unwrap();
    // Thief signs on the parent of the deactivation, grinding.
    let attack = ground(&did, p, &k, &thief, 1_002..1_040);
    let mut all = vec![&create, &u1, &deactivate];
    all.extend(attack.iter());
    for order in [all.clone(), all.iter().rev().copied().collect()] {
        let mut l = Ledger::default();
        for op in order {
            let _ = l.apply(op.clone());
        }
        let view = l.resolve(&did).unwrap();
        assert!(view.disputed.is_some(), "K equivocated on the parent");
        assert!(view.usable_state().is_none(), "not revived");
        assert!(login_keys(&l, &did).is_empty());
    }
    // and further up (on the genesis): frozen, still no login
    let up = ground(&did, g, &k, &thief, 1_001..1_010);
    let mut all2 = all.clone();
    all2.extend(up.iter());
    let l = ledger(&all2);
    assert!(login_keys(&l, &did).is_empty());
}

#[test]
fn a_replayed_op_changes_nothing() {
    let (k, n) = (key(1), key(2));
    let create = Operation::create(state(&[&k], &k), 1_000, &k).unwrap();
    let g = create.cid().unwrap();
    let did = did_from_genesis(&g);
    let rotate = Operation::update(&did, g, state(&[&n], &n), 1_010, &k).unwrap();
    let mut l = ledger(&[&create, &rotate]);
    let digest = l.state_digest();
    // replayed as is, and with a second (valid) signature over the same body
    assert!(l.apply(rotate.clone()).unwrap().is_empty());
    let mut resigned = rotate.clone();
    resigned.sig = did_core::keys::sign_b64(&k, &rotate.signing_bytes().unwrap());
    assert_eq!(resigned.cid().unwrap(), rotate.cid().unwrap());
    assert!(l.apply(resigned).unwrap().is_empty());
    assert_eq!(l.state_digest(), digest);
    assert_eq!(login_keys(&l, &did), vec![public_of(&n)]);
}

/// A random owner history with a recovery key R (priority 0) and daily
/// keys D1, D2, … (priority 1) rotated now and then; the thief steals some
/// daily keys (`stolen_mask`) and signs, with grinding, at every position
/// where a stolen key is a rotation key, and the owner may react with R.
struct History {
    did: String,
    ops: Vec<Operation>,
    /// Daily key current at the owner's head.
    current: u8,
    thief_keys: Vec<PublicKey>,
    /// The state the owner's reaction set, if it reacted.
    reaction: Option<Cid>,
    stole_current: bool,
}

fn history(seed: u64, stolen_mask: u8, react: bool) -> History {
    let mut rng = StdRng::seed_from_u64(seed);
    let r = key(200);
    let daily = |i: u8| key(i + 1);
    let thief = key(66);
    let create = Operation::create(state(&[&r, &daily(0)], &daily(0)), 1_000, &r).unwrap();
    let g = create.cid().unwrap();
    let did = did_from_genesis(&g);
    // (position, daily key current there)
    let mut positions = vec![(g, 0u8)];
    let mut ops = vec![create];
    let mut current = 0u8;
    let mut t = 1_000;
    for _ in 0..rng.gen_range(1..6) {
        t += 1;
        let next = if rng.gen_bool(0.5) {
            current + 1
        } else {
            current
        };
        let head = positions.last().unwrap().0;
        let op = Operation::update(
            &did,
            head,
            state(&[&r, &daily(next)], &daily(next)),
            t,
            &daily(current),
        )
        .unwrap();
        positions.push((op.cid().unwrap(), next));
        ops.push(op);
        current = next;
    }
    let stolen = |i: u8| stolen_mask & (1 << i) != 0;
    for (pos, d) in positions.clone() {
        if stolen(d) {
            for grind in 0..rng.gen_range(1..4) {
                ops.push(
                    Operation::update(&did, pos, state(&[&thief], &thief), t + grind, &daily(d))
                        .unwrap(),
                );
            }
            if rng.gen_bool(0.3) {
                ops.push(Operation::deactivate(&did, pos, t + 9, &daily(d)).unwrap());
            }
        }
    }
    let mut reaction = None;
    if react {
        let op =
            Operation::update(&did, g, state(&[&r, &key(150)], &key(150)), t + 20, &r).unwrap();
        reaction = Some(op.cid().unwrap());
        ops.push(op);
        // after the reaction the thief keeps trying with every stolen key
        for d in 0..=current {
            if stolen(d) {
                ops.push(
                    Operation::update(&did, g, state(&[&thief], &thief), t + 21, &daily(d))
                        .unwrap(),
                );
            }
        }
    }
    History {
        did,
        ops,
        current,
        thief_keys: vec![public_of(&thief)],
        reaction,
        stole_current: stolen(current),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn the_owners_reaction_always_decides(seed in any::<u64>(), mask in any::<u8>(), react in any::<bool>(), perm in any::<u64>()) {
        let h = history(seed, mask, react);
        let mut rng = StdRng::seed_from_u64(perm);
        let mut reference = None;
        for _ in 0..4 {
            let mut order = h.ops.clone();
            for i in (1..order.len()).rev() {
                order.swap(i, rng.gen_range(0..=i));
            }
            let mut l = Ledger::default();
            for op in order {
                let _ = l.apply(op);
            }
            let view = l.resolve(&h.did).unwrap();
            let keys = login_keys(&l, &h.did);
            let outcome = (view.head, view.disputed.is_some(), view.deactivated(), l.state_digest());
            // Order never matters.
            if let Some(r) = &reference {
                prop_assert_eq!(r, &outcome);
            }
            reference = Some(outcome);
            match h.reaction {
                // The owner reacted with R: its state, exactly.
                Some(cid) => {
                    prop_assert_eq!(view.head, cid);
                    prop_assert_eq!(keys, vec![public_of(&key(150))]);
                }
                // No reaction, current key not stolen: the thief holds only
                // rotated-out keys and never gets a login.
                None if !h.stole_current => {
                    prop_assert!(!keys.iter().any(|k| h.thief_keys.contains(k)));
                    let owner_key = public_of(&key(h.current + 1));
                    prop_assert!(keys.is_empty() || keys == vec![owner_key]);
                }
                None => {}
            }
        }
    }
}
