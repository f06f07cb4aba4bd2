//! A ledger restored from its checkpoint is the ledger a full replay
//! builds (issue 12, item 2): same digests, same resolution of every DID,
//! and it goes on accepting ops the same way. A damaged or inconsistent
//! checkpoint is refused with an error, never a panic.

mod support;

use did_core::ledger::Ledger;
use did_core::store::{MemoryBodies, OpBodies};
use did_core::Limits;
use proptest::prelude::*;
use std::sync::Arc;
use support::histories::{apply_shuffled, dids_of, first_difference, history, observe, rules};

fn restore(bytes: &[u8], bodies: &Arc<MemoryBodies>) -> Result<Ledger, did_core::OpError> {
    let bodies: Arc<dyn OpBodies> = bodies.clone();
    Ledger::restore(bytes, Limits::default(), Some(rules()), bodies)
}

/// A ledger of `seed`'s history and its checkpoint.
fn sample(seed: u64) -> (Ledger, Arc<MemoryBodies>, Vec<u8>) {
    let ops = history(seed, 5, 6);
    let bodies = Arc::new(MemoryBodies::new());
    let mut l = Ledger::default()
        .with_network(rules())
        .with_bodies(bodies.clone());
    apply_shuffled(&mut l, &ops, seed);
    let ck = l.checkpoint();
    (l, bodies, ck)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn restore_equals_a_full_replay(seed in any::<u64>(), split in 0usize..100) {
        let ops = history(seed, 6, 8);
        let dids = dids_of(&ops);
        let cut = ops.len() * split / 100;
        // Full replay of every op.
        let mut full = Ledger::default().with_network(rules());
        apply_shuffled(&mut full, &ops, seed);
        // A node that held the first ops, checkpointed, restarted from the
        // checkpoint and then received the rest.
        let bodies = Arc::new(MemoryBodies::new());
        let mut before = Ledger::default().with_network(rules()).with_bodies(bodies.clone());
        for op in &ops[..cut] {
            before.apply(op.clone()).unwrap();
        }
        let ck = before.checkpoint();
        prop_assert_eq!(Ledger::checkpoint_header(&ck).unwrap(), (before.len() as u64, before.op_set_digest()));
        let mut restored = restore(&ck, &bodies).unwrap();
        prop_assert_eq!(restored.op_set_digest(), before.op_set_digest());
        prop_assert_eq!(restored.state_digest(), before.state_digest());
        prop_assert_eq!(first_difference(&observe(&restored, &dids_of(&ops[..cut])), &observe(&before, &dids_of(&ops[..cut]))), None);
        prop_assert_eq!(restored.checkpoint(), ck, "a checkpoint of the restored ledger is the same bytes");
        apply_shuffled(&mut restored, &ops[cut..], seed ^ 1);
        prop_assert_eq!(first_difference(&observe(&restored, &dids), &observe(&full, &dids)), None);
        prop_assert_eq!(restored.body_errors(), 0);
    }
}

#[test]
fn replay_trusted_builds_the_same_ledger() {
    let ops = history(11, 6, 8);
    let dids = dids_of(&ops);
    let mut checked = Ledger::default().with_network(rules());
    let mut trusted = Ledger::default().with_network(rules());
    for op in &ops {
        checked.apply(op.clone()).unwrap();
        let (cid, bytes) = op.check_self(&Limits::default()).unwrap();
        trusted.replay_trusted(op.clone(), cid, bytes).unwrap();
    }
    assert_eq!(observe(&trusted, &dids), observe(&checked, &dids));
    // A log entry whose CID or bytes are not the op's is refused.
    let op = &ops[3];
    let (cid, mut bytes) = op.check_self(&Limits::default()).unwrap();
    bytes.push(b' ');
    let mut fresh = Ledger::default().with_network(rules());
    assert!(fresh.replay_trusted(op.clone(), cid, bytes).is_err());
    // Signatures are not checked, everything else is: a forged signature
    // passes, a signer that is no rotation key of prev does not.
    let mut forged = ops[1].clone();
    forged.sig = ops[2].sig.clone();
    let (cid, bytes) = (forged.cid().unwrap(), forged.canonical_bytes().unwrap());
    let mut l = Ledger::default().with_network(rules());
    assert!(l.replay_trusted(forged, cid, bytes).is_ok());
}

#[test]
fn every_flipped_byte_is_refused() {
    let (_, bodies, ck) = sample(3);
    assert!(restore(&ck, &bodies).is_ok());
    for i in 0..ck.len() {
        let mut bad = ck.clone();
        bad[i] ^= 0x01;
        assert!(
            restore(&bad, &bodies).is_err(),
            "flipped byte {i} of {}",
            ck.len()
        );
    }
}

#[test]
fn a_truncated_or_extended_checkpoint_is_refused() {
    let (_, bodies, ck) = sample(4);
    for len in 0..ck.len() {
        assert!(restore(&ck[..len], &bodies).is_err(), "truncated to {len}");
    }
    let mut longer = ck.clone();
    longer.push(0);
    assert!(restore(&longer, &bodies).is_err());
}

/// Re-seals a tampered body so that only the structural checks can catch it.
fn reseal(mut body: Vec<u8>) -> Vec<u8> {
    let sum = *blake3::hash(&body).as_bytes();
    body.extend_from_slice(&sum);
    body
}

const HEADER: usize = 8 + 8 + 32 + 32 + 8;
const REC: usize = 52;

#[test]
fn reordered_records_are_refused() {
    let (l, bodies, ck) = sample(5);
    let body = ck[..ck.len() - 32].to_vec();
    assert!(restore(&reseal(body.clone()), &bodies).is_ok());
    let n = l.len();
    // Swap every pair of adjacent records. The checksum refuses each one;
    // with the checksum forged too (the node's MAC is what stops that),
    // the structural checks still refuse most: a parent after its child,
    // a DID's genesis or head moved, a digest that no longer matches.
    let mut refused = 0;
    for i in 0..n - 1 {
        let mut b = body.clone();
        let (a, c) = (HEADER + i * REC, HEADER + (i + 1) * REC);
        let first = b[a..a + REC].to_vec();
        b.copy_within(c..c + REC, a);
        b[c..c + REC].copy_from_slice(&first);
        let mut unsealed = b.clone();
        unsealed.extend_from_slice(&ck[ck.len() - 32..]);
        assert!(
            restore(&unsealed, &bodies).is_err(),
            "records {i} and {} swapped",
            i + 1
        );
        refused += usize::from(restore(&reseal(b), &bodies).is_err());
    }
    assert!(refused > n / 2, "{refused} of {n} swaps refused");
    // A record's CID replaced: the op-set digest no longer matches.
    let mut b = body.clone();
    b[HEADER + REC] ^= 0xff;
    assert!(restore(&reseal(b), &bodies).is_err());
    // The header's counts and digests.
    for i in 8..HEADER {
        let mut b = body.clone();
        b[i] ^= 0x10;
        assert!(restore(&reseal(b), &bodies).is_err(), "header byte {i}");
    }
}

#[test]
fn a_checkpoint_needs_its_bodies() {
    let (_, _, ck) = sample(6);
    let empty = Arc::new(MemoryBodies::new());
    // Restoring reads no DID body; resolving then finds none and says so.
    let l = restore(&ck, &empty).unwrap();
    let dids = dids_of(&history(6, 5, 6));
    assert!(dids.iter().any(|d| l.resolve(d).is_none()));
    assert!(l.body_errors() > 0);
}
