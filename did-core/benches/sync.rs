//! Reconciliation cost in CPU time: whole sessions between two 100k-CID
//! replicas (every message encoded and decoded), index maintenance, and a
//! range fingerprint from the index against a naive scan of a sorted set
//! (why the index keeps running sums).

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use did_core::sync::{Bound, Fingerprint, Session, SyncConfig, SyncIndex};
use did_core::Cid;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;

const SHARED: usize = 100_000;

fn random_cids(rng: &mut StdRng, n: usize) -> Vec<Cid> {
    (0..n).map(|_| Cid(rng.gen())).collect()
}

fn pair(diff: usize) -> (SyncIndex, SyncIndex) {
    let mut rng = StdRng::seed_from_u64(diff as u64);
    let shared: SyncIndex = random_cids(&mut rng, SHARED).into_iter().collect();
    let (mut a, mut b) = (shared.clone(), shared);
    a.extend(random_cids(&mut rng, diff / 2));
    b.extend(random_cids(&mut rng, diff - diff / 2));
    (a, b)
}

/// A full session; returns the number of CIDs a learned it needs.
fn reconcile(a: &SyncIndex, b: &SyncIndex) -> usize {
    let config = SyncConfig::default();
    let (mut sa, mut sb) = (Session::new(config), Session::new(config));
    let mut msg = sa.initiate(a);
    let mut to_b = true;
    while let Ok(Some(next)) = if to_b {
        sb.handle(b, &msg)
    } else {
        sa.handle(a, &msg)
    } {
        msg = next;
        to_b = !to_b;
    }
    sa.need().len()
}

fn bench_reconcile(c: &mut Criterion) {
    let mut group = c.benchmark_group("reconcile_100k");
    for diff in [0usize, 10, 1000] {
        let (a, b) = pair(diff);
        group.bench_function(format!("diff_{diff}"), |bench| {
            bench.iter(|| black_box(reconcile(&a, &b)))
        });
    }
    group.finish();
}

fn bench_index(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(1);
    let cids = random_cids(&mut rng, SHARED);
    let mut group = c.benchmark_group("index_100k");
    group.bench_function("insert_one_by_one", |bench| {
        bench.iter_batched(
            || cids.clone(),
            |cids| {
                let mut index = SyncIndex::new();
                for cid in cids {
                    index.insert(cid);
                }
                index
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("build_from_iter", |bench| {
        bench.iter_batched(
            || cids.clone(),
            |cids| cids.into_iter().collect::<SyncIndex>(),
            BatchSize::LargeInput,
        )
    });
    let index: SyncIndex = cids.iter().copied().collect();
    group.bench_function("insert_into_full", |bench| {
        bench.iter_batched(
            || (index.clone(), Cid(rng.gen())),
            // Returned, so dropping the clone is not timed.
            |(mut index, cid)| {
                let new = index.insert(cid);
                (index, new)
            },
            BatchSize::LargeInput,
        )
    });
    // A range holding about half the CIDs: the worst case for a scan.
    let (lo, hi) = (Bound::Below([0x20; 32]), Bound::Below([0xa0; 32]));
    group.bench_function("fingerprint_half_range_index", |bench| {
        bench.iter(|| index.fingerprint(black_box(&lo), black_box(&hi)))
    });
    let set: BTreeSet<Cid> = cids.iter().copied().collect();
    let (Bound::Below(l), Bound::Below(h)) = (lo, hi) else {
        unreachable!()
    };
    group.bench_function("fingerprint_half_range_btreeset_scan", |bench| {
        bench.iter(|| Fingerprint::of(set.range(Cid(l)..Cid(h))))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench_reconcile, bench_index
}
criterion_main!(benches);
