//! A ledger with a tiny cache of decoded ops (or none) resolves every DID
//! exactly as one that keeps everything decoded (issue 12, item 3): op
//! bodies are read back from the body store whenever the cache misses.

mod support;

use did_core::ledger::Ledger;
use proptest::prelude::*;
use support::histories::{apply_shuffled, dids_of, first_difference, history, observe, rules};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn a_tiny_cache_resolves_like_a_large_one(seed in any::<u64>(), order in any::<u64>()) {
        let ops = history(seed, 6, 8);
        let dids = dids_of(&ops);
        let mut big = Ledger::default().with_network(rules()).with_state_cache(1_000_000);
        apply_shuffled(&mut big, &ops, order);
        let expected = observe(&big, &dids);
        for capacity in [0, 1, 2] {
            let mut small = Ledger::default().with_network(rules()).with_state_cache(capacity);
            // Another arrival order too: the outcome is order-independent.
            apply_shuffled(&mut small, &ops, order ^ capacity as u64);
            prop_assert!(small.cached_ops() <= capacity.max(2));
            prop_assert_eq!(first_difference(&observe(&small, &dids), &expected), None);
            prop_assert_eq!(small.body_errors(), 0);
        }
    }
}

#[test]
fn histories_have_forks_disputes_and_deactivations() {
    // The generator must produce what the property is about.
    let (mut disputed, mut deactivated, mut forked, mut linked) = (0, 0, 0, 0);
    for seed in 0..24 {
        let ops = history(seed, 6, 8);
        let mut l = Ledger::default().with_network(rules()).with_state_cache(2);
        apply_shuffled(&mut l, &ops, seed);
        for did in dids_of(&ops) {
            let v = l.resolve(&did).unwrap();
            disputed += usize::from(v.disputed.is_some());
            deactivated += usize::from(v.deactivated());
            linked += usize::from(v.state.as_ref().is_some_and(|s| !s.links.is_empty()));
            let log = l.did_log(&did).unwrap();
            forked += usize::from(log.iter().any(|e| !e.winning));
        }
    }
    assert!(
        disputed > 3 && deactivated > 3 && forked > 10 && linked > 3,
        "disputed {disputed} deactivated {deactivated} forked {forked} linked {linked}"
    );
}

#[test]
fn a_cold_did_is_read_from_the_store() {
    let ops = history(7, 40, 3);
    let dids = dids_of(&ops);
    let mut l = Ledger::default().with_network(rules()).with_state_cache(2);
    for op in ops {
        l.apply(op).unwrap();
    }
    // Only 2 decoded ops stay in memory, yet every DID resolves with its state.
    assert!(l.cached_ops() <= 2);
    for did in &dids {
        let v = l.resolve(did).unwrap();
        assert!(v.deactivated() || v.state.is_some());
    }
    assert_eq!(l.body_errors(), 0);
}
