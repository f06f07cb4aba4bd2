//! What reconciliation costs on the wire: bytes and messages as a function
//! of the size of the difference, on 100,000 shared CIDs.

use did_core::sync::{Session, SyncConfig, SyncIndex};
use did_core::Cid;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;

const SHARED: usize = 100_000;

struct Run {
    messages: u32,
    /// The longest single message.
    largest: usize,
    bytes: u64,
    a: Session,
    b: Session,
}

/// Runs a whole session between two in-memory replicas, every message
/// going through encode/decode.
fn reconcile(a: &SyncIndex, b: &SyncIndex, config: SyncConfig) -> Run {
    let (mut sa, mut sb) = (Session::new(config), Session::new(config));
    let mut msg = sa.initiate(a);
    let mut largest = msg.len();
    let mut to_b = true;
    loop {
        let next = if to_b {
            sb.handle(b, &msg)
        } else {
            sa.handle(a, &msg)
        };
        match next.expect("honest messages are valid") {
            Some(m) => msg = m,
            None => break,
        }
        largest = largest.max(msg.len());
        to_b = !to_b;
    }
    let (sta, stb) = (sa.stats(), sb.stats());
    Run {
        largest,
        messages: sta.messages_sent + stb.messages_sent,
        bytes: sta.bytes_sent + stb.bytes_sent,
        a: sa,
        b: sb,
    }
}

fn random_cids(rng: &mut StdRng, n: usize) -> Vec<Cid> {
    (0..n).map(|_| Cid(rng.gen())).collect()
}

/// Builds the two sides; returns (index a, index b, a-only, b-only).
fn pair(seed: u64, diff: usize) -> (SyncIndex, SyncIndex, BTreeSet<Cid>, BTreeSet<Cid>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let shared: SyncIndex = random_cids(&mut rng, SHARED).into_iter().collect();
    let a_only: BTreeSet<Cid> = random_cids(&mut rng, diff / 2).into_iter().collect();
    let b_only: BTreeSet<Cid> = random_cids(&mut rng, diff - diff / 2).into_iter().collect();
    let (mut a, mut b) = (shared.clone(), shared);
    a.extend(a_only.iter().copied());
    b.extend(b_only.iter().copied());
    (a, b, a_only, b_only)
}

fn assert_exact(run: &Run, a_only: &BTreeSet<Cid>, b_only: &BTreeSet<Cid>) {
    assert_eq!(run.a.need(), b_only, "a needs exactly what only b holds");
    assert_eq!(run.a.have(), a_only, "a offers exactly what only a holds");
    assert_eq!(run.b.need(), a_only);
    assert_eq!(run.b.have(), b_only);
}

#[test]
fn ten_differences_in_100k_cost_a_few_kib() {
    let (a, b, a_only, b_only) = pair(1, 10);
    assert_eq!((a_only.len(), b_only.len()), (5, 5));
    let run = reconcile(&a, &b, SyncConfig::default());
    assert_exact(&run, &a_only, &b_only);
    println!(
        "100k shared, 10 different: {} messages ({} round trips), {} bytes (a full CID list is {} bytes)",
        run.messages,
        run.messages.div_ceil(2),
        run.bytes,
        SHARED * 32
    );
    assert!(run.bytes < 16 * 1024, "{} bytes", run.bytes);
}

#[test]
fn identical_sets_settle_in_one_round_trip() {
    let (a, b, _, _) = pair(2, 0);
    let run = reconcile(&a, &b, SyncConfig::default());
    assert_eq!(
        run.messages, 1,
        "the responder sees equal fingerprints and is done"
    );
    assert!(run.bytes < 32, "{}", run.bytes);
    assert!(run.a.need().is_empty() && run.b.need().is_empty());
}

#[test]
fn cost_table_by_difference() {
    println!(
        "{:>8} {:>10} {:>12} {:>10} {:>14} {:>10}",
        "diff", "messages", "round trips", "bytes", "bytes/diff", "largest"
    );
    for (i, diff) in [0usize, 1, 10, 100, 1000, 10_000].into_iter().enumerate() {
        let (a, b, a_only, b_only) = pair(100 + i as u64, diff);
        let run = reconcile(&a, &b, SyncConfig::default());
        assert_exact(&run, &a_only, &b_only);
        println!(
            "{:>8} {:>10} {:>12} {:>10} {:>14.1} {:>10}",
            diff,
            run.messages,
            run.messages.div_ceil(2),
            run.bytes,
            run.bytes as f64 / diff.max(1) as f64,
            run.largest
        );
        assert!(
            run.largest <= 128 * 1024 + 64,
            "messages stay within the budget"
        );
        // Cost follows the difference (32 bytes per differing CID is the
        // floor; splitting adds fingerprints per level), and never exceeds
        // what listing one side's CIDs would cost.
        let bound = (1500 + 800 * diff).min(32 * SHARED);
        assert!(
            run.bytes as usize <= bound,
            "diff {diff}: {} bytes > {bound}",
            run.bytes
        );
    }
}

#[test]
fn a_fresh_replica_learns_everything_in_bounded_messages() {
    let mut rng = StdRng::seed_from_u64(3);
    let full: SyncIndex = random_cids(&mut rng, 20_000).into_iter().collect();
    let empty = SyncIndex::new();
    let config = SyncConfig {
        max_message_bytes: 16 * 1024,
        ..SyncConfig::default()
    };
    let run = reconcile(&empty, &full, config);
    assert_eq!(run.a.need().len(), 20_000);
    assert_eq!(run.b.have().len(), 20_000);
    println!(
        "empty vs 20k, 16 KiB budget: {} messages, {} bytes, largest message {} bytes",
        run.messages, run.bytes, run.largest
    );
    assert!(run.largest <= 16 * 1024, "{}", run.largest);
    assert!(
        run.bytes <= 20_000 * 34,
        "about one CID per CID held: {}",
        run.bytes
    );
}
