//! No op is verified twice on one node (issue 12, item 1): a burst of ops
//! submitted to the writer (the HTTP path) costs one signature check per
//! op, spread over all cores, and submitting held ops again costs none.
//! Its own test binary: the count (`did_core::verify::verified_ops`, what
//! `/metrics` shows as `didmesh_sig_verifications_total`) is per process.

use did_core::keys::public_of;
use did_core::verify::verified_ops;
use did_core::{DidState, Ledger, Operation};
use didmesh_node::storage::Store;
use didmesh_node::writer::{Submitted, Writer};
use ed25519_dalek::SigningKey;
use std::sync::{Arc, RwLock};

fn create(i: u32) -> Operation {
    let mut seed = [5u8; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    let k = SigningKey::from_bytes(&seed);
    Operation::create(DidState::single_key(public_of(&k)), 1_800_000_000, &k).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_ops_is_verified_once_each() {
    const N: u32 = 300;
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::default();
    let store = Store::open(dir.path(), &mut ledger).unwrap();
    let ledger = Arc::new(RwLock::new(ledger));
    let (writer, _store) = Writer::start(store, ledger.clone()).unwrap();
    let ops: Vec<Operation> = (0..N).map(create).collect();

    let before = verified_ops();
    let submit_all = |ops: Vec<Operation>| {
        let writer = writer.clone();
        async move {
            let all = ops.into_iter().map(|op| {
                let w = writer.clone();
                async move { w.submit(op, false).await }
            });
            futures::future::join_all(all).await
        }
    };
    let results = submit_all(ops.clone()).await;
    assert!(results
        .iter()
        .all(|r| matches!(r, Ok(Submitted::Created(_)))));
    assert_eq!(ledger.read().unwrap().len(), N as usize);
    assert_eq!(verified_ops() - before, u64::from(N), "one check per op");

    // The same ops again: known, no check.
    let again = submit_all(ops).await;
    assert!(again
        .iter()
        .all(|r| matches!(r, Ok(Submitted::Existing(_)))));
    assert_eq!(
        verified_ops() - before,
        u64::from(N),
        "held ops are not checked again"
    );
}
