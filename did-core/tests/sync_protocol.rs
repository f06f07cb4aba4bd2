//! The reconciliation protocol: exactness on random sets under any tuning,
//! the index against a naive model, and the decoder against hostile bytes.

use did_core::sync::{
    Bound, Fingerprint, Message, Payload, Reconciler, Session, SyncConfig, SyncError, SyncIndex,
    MAX_CIDS, MAX_MESSAGE_BYTES,
};
use did_core::Cid;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;

/// Runs a session to its end; returns both sessions and every message sent.
fn reconcile(a: &SyncIndex, b: &SyncIndex, config: SyncConfig) -> (Session, Session, Vec<Vec<u8>>) {
    let (mut sa, mut sb) = (Session::new(config), Session::new(config));
    let mut msg = sa.initiate(a);
    let mut wire = vec![msg.clone()];
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
        wire.push(msg.clone());
        to_b = !to_b;
    }
    (sa, sb, wire)
}

/// What each side was told, step by step, without a [`Session`]'s dedupe.
#[derive(Default)]
struct Told {
    need_a: Vec<Cid>,
    have_a: Vec<Cid>,
    need_b: Vec<Cid>,
    have_b: Vec<Cid>,
    wire: Vec<Vec<u8>>,
}

fn drive(a: &SyncIndex, b: &SyncIndex, config: SyncConfig) -> Told {
    let r = Reconciler::new(config);
    let mut told = Told::default();
    let mut bytes = r.initiate(a).encode();
    let mut to_b = true;
    loop {
        told.wire.push(bytes.clone());
        let m = Message::decode(&bytes).expect("honest messages decode");
        let (index, need, have) = if to_b {
            (b, &mut told.need_b, &mut told.have_b)
        } else {
            (a, &mut told.need_a, &mut told.have_a)
        };
        let step = r.respond(index, &m).expect("valid");
        need.extend(step.need);
        have.extend(step.have);
        match step.reply {
            Some(reply) => bytes = reply.encode(),
            None => break,
        }
        to_b = !to_b;
    }
    told
}

fn sorted(mut v: Vec<Cid>) -> Vec<Cid> {
    v.sort();
    v
}

/// CIDs from a tiny alphabet share long prefixes and contain zero bytes,
/// which exercises separators and the trailing-zero rule of bounds.
fn cid_strategy() -> impl Strategy<Value = Cid> {
    prop_oneof![
        any::<[u8; 32]>().prop_map(Cid),
        prop::array::uniform32(prop::sample::select(vec![0u8, 1, 2, 0x80, 0xff])).prop_map(Cid),
    ]
}

fn config_strategy() -> impl Strategy<Value = SyncConfig> {
    (2usize..10, 1usize..10, 200usize..4000).prop_map(
        |(branching, items_threshold, max_message_bytes)| SyncConfig {
            branching,
            items_threshold,
            max_message_bytes,
            max_rounds: 1_000_000,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the sets and the tuning (including budgets so small that
    /// every answer is cut), both sides learn exactly the difference, and
    /// every message is canonical on the wire. A cut answer may make a CID
    /// be reported twice; with room to spare, each is reported once.
    #[test]
    fn both_sides_learn_exactly_the_difference(
        shared in prop::collection::vec(cid_strategy(), 0..300),
        a_only in prop::collection::vec(cid_strategy(), 0..60),
        b_only in prop::collection::vec(cid_strategy(), 0..60),
        config in config_strategy(),
    ) {
        let a_set: BTreeSet<Cid> = shared.iter().chain(&a_only).copied().collect();
        let b_set: BTreeSet<Cid> = shared.iter().chain(&b_only).copied().collect();
        let a: SyncIndex = a_set.iter().copied().collect();
        let b: SyncIndex = b_set.iter().copied().collect();
        let a_minus_b: Vec<Cid> = a_set.difference(&b_set).copied().collect();
        let b_minus_a: Vec<Cid> = b_set.difference(&a_set).copied().collect();
        let roomy = SyncConfig { max_message_bytes: usize::MAX, ..config };
        let told = drive(&a, &b, roomy);
        prop_assert_eq!(sorted(told.need_a), b_minus_a.clone());
        prop_assert_eq!(sorted(told.have_a), a_minus_b.clone());
        prop_assert_eq!(sorted(told.need_b), a_minus_b.clone());
        prop_assert_eq!(sorted(told.have_b), b_minus_a.clone());

        let told = drive(&a, &b, config);
        let dedup = |v: Vec<Cid>| v.into_iter().collect::<BTreeSet<_>>().into_iter().collect::<Vec<_>>();
        prop_assert_eq!(dedup(told.need_a), b_minus_a.clone());
        prop_assert_eq!(dedup(told.have_a), a_minus_b.clone());
        prop_assert_eq!(dedup(told.need_b), a_minus_b);
        prop_assert_eq!(dedup(told.have_b), b_minus_a);
        for bytes in &told.wire {
            let m = Message::decode(bytes).expect("decodes");
            prop_assert_eq!(&m.encode(), bytes);
            prop_assert_eq!(m.encoded_len(), bytes.len());
            // Cut answers stay near the budget (the first open range is
            // always answered, so a tiny budget can be exceeded by one).
            prop_assert!(bytes.len() <= config.max_message_bytes.max(600) + 64 * config.branching, "{} bytes", bytes.len());
        }
    }

    /// The chunked index answers like a plain sorted set.
    #[test]
    fn index_matches_a_sorted_set(
        cids in prop::collection::vec(cid_strategy(), 0..1500),
        probes in prop::collection::vec((cid_strategy(), cid_strategy()), 1..20),
    ) {
        let mut index = SyncIndex::new();
        let mut model = BTreeSet::new();
        for c in &cids {
            prop_assert_eq!(index.insert(*c), model.insert(*c));
        }
        let bulk: SyncIndex = cids.iter().copied().collect();
        prop_assert_eq!(index.len(), model.len());
        prop_assert!(index.iter().eq(model.iter()));
        prop_assert!(bulk.iter().eq(model.iter()));
        for (x, y) in probes {
            let (lo, hi) = (Bound::at(&x.min(y)), if x == y { Bound::End } else { Bound::at(&x.max(y)) });
            let naive: Vec<&Cid> = model.iter().filter(|c| !lo.is_above(c) && hi.is_above(c)).collect();
            prop_assert_eq!(index.count(&lo, &hi), naive.len());
            prop_assert_eq!(bulk.count(&lo, &hi), naive.len());
            prop_assert!(index.range(&lo, &hi).eq(naive.iter().copied()));
            prop_assert_eq!(index.fingerprint(&lo, &hi), Fingerprint::of(naive.iter().copied()));
            prop_assert_eq!(bulk.fingerprint(&lo, &hi), Fingerprint::of(naive.iter().copied()));
            prop_assert_eq!(index.contains(&x), model.contains(&x));
        }
    }

    /// Random bytes never panic the decoder; whatever it accepts is
    /// canonical and can be answered.
    #[test]
    fn decoding_random_bytes_never_panics(
        mut bytes in prop::collection::vec(any::<u8>(), 0..2000),
        versioned in any::<bool>(),
    ) {
        if versioned && !bytes.is_empty() {
            bytes[0] = 1;
        }
        check_hostile(&bytes)?;
    }

    /// Mutated honest messages never panic the decoder or the responder.
    #[test]
    fn decoding_mutated_messages_never_panics(
        seed in any::<u64>(),
        mutations in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..5), 1..6),
    ) {
        for mut bytes in sample_messages(seed) {
            for (at, value, how) in &mutations {
                let at = at % (bytes.len() + 1);
                match how {
                    0 if at < bytes.len() => bytes[at] = *value,
                    1 if at < bytes.len() => bytes[at] ^= 1 << (value % 8),
                    2 => bytes.truncate(at),
                    3 => bytes.insert(at, *value),
                    _ => {
                        let tail = bytes[at..].to_vec();
                        bytes.extend_from_slice(&tail[..tail.len().min(40)]);
                    }
                }
            }
            check_hostile(&bytes)?;
        }
    }
}

/// Decodes untrusted bytes; anything accepted must re-encode to the same
/// bytes and be answerable by a responder without error.
fn check_hostile(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(m) = Message::decode(bytes) {
        prop_assert_eq!(m.encode(), bytes);
        let mut rng = StdRng::seed_from_u64(bytes.len() as u64);
        let index: SyncIndex = (0..200).map(|_| Cid(rng.gen())).collect();
        let step = Reconciler::default()
            .respond(&index, &m)
            .expect("a decoded message is valid");
        if let Some(reply) = step.reply {
            prop_assert!(Message::decode(&reply.encode()).is_ok());
        }
    }
    Ok(())
}

/// Honest messages of a session between two random sets.
fn sample_messages(seed: u64) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let shared: Vec<Cid> = (0..rng.gen_range(0..400)).map(|_| Cid(rng.gen())).collect();
    let mut a: SyncIndex = shared.iter().copied().collect();
    let mut b = a.clone();
    for _ in 0..rng.gen_range(0..30) {
        a.insert(Cid(rng.gen()));
        b.insert(Cid(rng.gen()));
    }
    let config = SyncConfig {
        branching: 4,
        items_threshold: 3,
        ..SyncConfig::default()
    };
    reconcile(&a, &b, config).2
}

#[test]
fn hostile_inputs_get_specific_errors() {
    use SyncError::*;
    let cases: Vec<(&str, Vec<u8>, SyncError)> = vec![
        ("empty", vec![], Truncated),
        ("version", vec![2], Version(2)),
        (
            "count 8192 without the bytes",
            vec![1, 0xff, 2, 0x80, 0x40],
            Truncated,
        ),
        (
            "count above the limit",
            vec![1, 0xff, 2, 0x81, 0x40],
            Limit("count above MAX_CIDS"),
        ),
        (
            "four-byte varint",
            vec![1, 0xff, 2, 0x80, 0x80, 0x80, 0x01],
            Limit("count above MAX_CIDS"),
        ),
        (
            "non-minimal varint",
            vec![1, 0xff, 2, 0x80, 0x00],
            Malformed("varint is not minimal"),
        ),
        (
            "bound too long",
            vec![1, 33],
            Malformed("bound longer than 32 bytes"),
        ),
        (
            "bound with trailing zero",
            vec![1, 2, 7, 0, 0],
            Malformed("bound has a trailing zero byte"),
        ),
        (
            "unknown mode",
            vec![1, 0xff, 9],
            Malformed("unknown range mode"),
        ),
        (
            "range ends at zero",
            vec![1, 0, 1].into_iter().chain([0u8; 16]).collect(),
            Malformed("range bounds must increase"),
        ),
        (
            "bounds decrease",
            vec![1, 1, 9, 1]
                .into_iter()
                .chain([0u8; 16])
                .chain([1, 3, 1])
                .chain([0u8; 16])
                .collect(),
            Malformed("range bounds must increase"),
        ),
        (
            "trailing skip",
            vec![1, 0xff, 0],
            Malformed("message ends with a skip"),
        ),
        (
            "two skips",
            vec![1, 1, 5, 0, 1, 6, 0, 0xff, 2, 0],
            Malformed("two skips in a row"),
        ),
        (
            "padding bits",
            vec![1, 0xff, 3, 0, 3, 0b1111_0000],
            Malformed("reply bitmap has padding bits set"),
        ),
        ("fingerprint cut short", vec![1, 0xff, 1, 0, 0], Truncated),
        (
            "item above its range",
            vec![1, 1, 0x10, 2, 1]
                .into_iter()
                .chain([0x20u8; 32])
                .collect(),
            Malformed("CID outside its range"),
        ),
        (
            "items out of order",
            vec![1, 0xff, 2, 2]
                .into_iter()
                .chain([2u8; 32])
                .chain([1u8; 32])
                .collect(),
            Malformed("CIDs must strictly increase"),
        ),
    ];
    for (what, bytes, want) in cases {
        assert_eq!(Message::decode(&bytes), Err(want), "{what}");
    }
    let big = vec![1u8; MAX_MESSAGE_BYTES + 1];
    assert_eq!(Message::decode(&big), Err(TooLarge(MAX_MESSAGE_BYTES + 1)));
    // Lists and bitmaps together may not exceed MAX_CIDS either.
    let mut many = vec![1u8];
    for i in 1..=2u8 {
        many.extend([1, i, 3, 0, 0x80, 0x20]); // a reply of 4096 bits
        many.extend(std::iter::repeat_n(0u8, 4096 / 8));
    }
    many.extend([0xff, 2, 1]);
    many.extend([7u8; 32]);
    assert_eq!(MAX_CIDS, 8192);
    assert_eq!(Message::decode(&many), Err(Limit("too many CIDs")));
    assert_eq!(
        Message::decode(&[1]),
        Ok(Message::default()),
        "an empty message means done"
    );
}

#[test]
fn a_set_that_grows_mid_session_still_converges_soundly() {
    let mut rng = StdRng::seed_from_u64(9);
    let shared: Vec<Cid> = (0..5000).map(|_| Cid(rng.gen())).collect();
    let mut a: SyncIndex = shared.iter().copied().collect();
    let mut b = a.clone();
    for _ in 0..40 {
        a.insert(Cid(rng.gen()));
        b.insert(Cid(rng.gen()));
    }
    let config = SyncConfig {
        branching: 4,
        items_threshold: 4,
        ..SyncConfig::default()
    };
    let (mut sa, mut sb) = (Session::new(config), Session::new(config));
    let mut msg = sa.initiate(&a);
    let mut to_b = true;
    let mut rounds = 0;
    loop {
        // Gossip keeps delivering while the session runs.
        a.insert(Cid(rng.gen()));
        b.insert(Cid(rng.gen()));
        let next = if to_b {
            sb.handle(&b, &msg)
        } else {
            sa.handle(&a, &msg)
        };
        match next.expect("valid") {
            Some(m) => msg = m,
            None => break,
        }
        to_b = !to_b;
        rounds += 1;
        assert!(rounds < 200, "terminates");
    }
    // Claims are facts: a needs only what b holds and lacks nothing it claims to have.
    assert!(sa.need().iter().all(|c| b.contains(c) && !a.contains(c)));
    assert!(sa.have().iter().all(|c| a.contains(c)));
    assert!(sb.need().iter().all(|c| a.contains(c) && !b.contains(c)));
    // A quiet second session finds exactly what is left.
    let (sa2, sb2, _) = reconcile(&a, &b, config);
    let a_set: BTreeSet<Cid> = a.iter().copied().collect();
    let b_set: BTreeSet<Cid> = b.iter().copied().collect();
    assert_eq!(sa2.need(), &b_set.difference(&a_set).copied().collect());
    assert_eq!(sb2.need(), &a_set.difference(&b_set).copied().collect());
}

#[test]
fn stale_reply_reopens_its_range() {
    let mut rng = StdRng::seed_from_u64(4);
    let mut a: SyncIndex = (0..5).map(|_| Cid(rng.gen())).collect();
    let b: SyncIndex = (0..5).map(|_| Cid(rng.gen())).collect();
    let r = Reconciler::default();
    let opening = r.initiate(&a); // Items: a holds few CIDs
    assert!(matches!(opening.entries[0].payload, Payload::Items(_)));
    let reply = r.respond(&b, &opening).unwrap().reply.unwrap();
    a.insert(Cid(rng.gen())); // a changes before the reply arrives
    let step = r.respond(&a, &reply).unwrap();
    assert!(
        step.need.is_empty() && step.have.is_empty(),
        "stale bitmap is not trusted"
    );
    let again = step.reply.expect("range re-opened");
    assert!(matches!(again.entries[0].payload, Payload::Fingerprint(_)));
}

#[test]
fn sessions_stop_after_max_rounds_and_drain_outcomes() {
    let mut rng = StdRng::seed_from_u64(5);
    let a: SyncIndex = (0..3000).map(|_| Cid(rng.gen())).collect();
    let b = SyncIndex::new();
    let config = SyncConfig {
        max_message_bytes: 1024,
        max_rounds: 3,
        ..SyncConfig::default()
    };
    let (mut sa, mut sb) = (Session::new(config), Session::new(config));
    let mut msg = sb.initiate(&b);
    let mut got = Err(SyncError::Truncated);
    for i in 0..10 {
        got = if i % 2 == 0 {
            sa.handle(&a, &msg)
        } else {
            sb.handle(&b, &msg)
        };
        match &got {
            Ok(Some(m)) => msg = m.clone(),
            _ => break,
        }
    }
    assert_eq!(got, Err(SyncError::TooManyRounds(3)));
    assert!(sa.is_finished());
    let (need, have) = sb.take_outcome();
    assert!(
        need.len() > 10 && have.is_empty(),
        "learned some before stopping: {}",
        need.len()
    );
    assert!(sb.need().is_empty(), "drained");
}
