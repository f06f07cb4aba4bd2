//! `cargo bench -p did-core --bench ledger`: op verification and ledger
//! apply, per op.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use did_core::keys::public_of;
use did_core::{DidState, Ledger, Limits, Operation};
use ed25519_dalek::SigningKey;

fn ops(n: u32) -> Vec<Operation> {
    (0..n)
        .map(|i| {
            let mut seed = [7u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            let key = SigningKey::from_bytes(&seed);
            let mut state = DidState::single_key(public_of(&key));
            state.also_known_as.push(format!("at://user{i}.example"));
            Operation::create(state, 1_790_000_000, &key).unwrap()
        })
        .collect()
}

/// A fresh ledger with `ops` applied in order.
fn apply_all(limits: Limits, ops: Vec<Operation>) -> Ledger {
    let mut ledger = Ledger::new(limits);
    for op in ops {
        ledger.apply(op).unwrap();
    }
    ledger
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let sample = ops(1000);
    let json: Vec<Vec<u8>> = sample
        .iter()
        .map(|o| serde_json::to_vec(o).unwrap())
        .collect();

    let mut g = c.benchmark_group("op");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse (JSON -> Operation)", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % json.len();
            Operation::from_json(&json[i]).unwrap()
        })
    });
    g.bench_function("verify (shape, limits, canonical bytes, signature)", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % sample.len();
            sample[i].check_self(&limits).unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("ledger");
    g.throughput(Throughput::Elements(sample.len() as u64));
    g.bench_function("apply 1000 creates (validate + commit)", |b| {
        b.iter_batched(
            || sample.clone(),
            |ops| apply_all(limits, ops),
            BatchSize::LargeInput,
        )
    });
    // An update chain of one DID: the fork rule's chain walk per op.
    let key = SigningKey::from_bytes(&[1; 32]);
    let create = Operation::create(DidState::single_key(public_of(&key)), 1, &key).unwrap();
    let did = did_core::op::did_from_genesis(&create.cid().unwrap());
    let mut chain = vec![create.clone()];
    let mut prev = create.cid().unwrap();
    for i in 0..999u64 {
        let mut s = DidState::single_key(public_of(&key));
        s.also_known_as.push(format!("at://v{i}.example"));
        let up = Operation::update(&did, prev, s, 2 + i, &key).unwrap();
        prev = up.cid().unwrap();
        chain.push(up);
    }
    g.bench_function("apply a 1000-op update chain of one DID", |b| {
        b.iter_batched(
            || chain.clone(),
            |ops| apply_all(limits, ops),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
