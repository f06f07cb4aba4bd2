//! A seeded, deterministic discrete-event simulation of replication (in the
//! spirit of iroh-gossip's `proto/sim.rs`): replicas holding real ledgers
//! receive real signed ops (creates, update chains, forks by keys of both
//! priorities, deactivations) at random places, push them by lossy gossip,
//! and repair with anti-entropy sessions against random peers — every sync
//! message through the binary codec, then fetch and `Ledger::apply`, so
//! children often arrive before their parents. A fifth of all messages is
//! lost, and for a while the network is cut in two. Once the partition heals
//! and writes stop, every replica must hold the same ops and resolve every
//! DID to the same head.
//!
//! Every op a replica receives goes through did-core's [`did_core::ingest`]
//! verdicts, as on a node: `judge` for gossip, `judge_fetched` for fetches.
//! A hostile network also tampers with some messages (a non-canonical
//! encoding, a forged signature, truncated or oversized bytes): each must
//! be refused (or, for a forged signature over a body already held, found
//! known and not stored again), no honest op may be refused, and in the
//! end every replica holds exactly the bytes that were written.

use did_core::ingest::{judge, judge_fetched, Fetched, Verdict};
use did_core::keys::public_of;
use did_core::ledger::Ledger;
use did_core::op::{did_from_genesis, DidState, Operation};
use did_core::sync::{Message, Seen, Session, SyncConfig, SyncIndex};
use did_core::{Cid, Limits};
use ed25519_dalek::SigningKey;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

const REPLICAS: usize = 10;
/// Ops are written during ticks `0..WRITES_UNTIL`.
const WRITES_UNTIL: u64 = 40;
/// The network is split in two during these ticks.
const PARTITION: std::ops::Range<u64> = 8..45;
const DROP_RATE: f64 = 0.2;
/// Gossip forwards a new valid op to this many random peers.
const FANOUT: usize = 2;
/// Chance per tick that a replica starts anti-entropy with a random peer.
const SYNC_RATE: f64 = 0.3;
/// A session with no progress for this long is abandoned (lost messages).
const SESSION_TIMEOUT: u64 = 10;
const MAX_TICKS: u64 = 2_000;
/// Unix time of tick 0: ops carry real times, so the clock check of
/// `did_core::ingest` applies to them as on a node.
const EPOCH: u64 = 1_800_000_000;
/// Chance that the network adds a tampered copy of a gossip message, or
/// swaps one op of a fetch response for a tampered copy.
const TAMPER_RATE: f64 = 0.05;

#[derive(Debug, Clone)]
enum Payload {
    Sync {
        session: u64,
        initiator: usize,
        bytes: Vec<u8>,
    },
    FetchRequest(Vec<Cid>),
    FetchResponse {
        /// The requester's own record of what it asked for (a node keeps
        /// it with the request).
        asked: Vec<Cid>,
        ops: Vec<Wire>,
    },
    Gossip(Wire),
}

/// Op bytes on the wire, and whether the network tampered with them
/// (ground truth for the assertions; replicas never look at it).
#[derive(Debug, Clone)]
struct Wire {
    bytes: Vec<u8>,
    tampered: bool,
}

#[derive(Debug, Clone)]
struct Envelope {
    from: usize,
    to: usize,
    payload: Payload,
}

struct Replica {
    ledger: Ledger,
    index: SyncIndex,
    seen: Seen,
    /// Open sessions by id: (session, last activity tick).
    sessions: BTreeMap<u64, (Session, u64)>,
}

/// A DID the workload writes to, with both of its rotation keys.
struct Writer {
    did: String,
    high: SigningKey,
    low: SigningKey,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Stats {
    ops_written: u64,
    messages: u64,
    dropped: u64,
    sync_bytes: u64,
    fetch_bytes: u64,
    gossip_bytes: u64,
    sessions: u64,
    sessions_finished: u64,
    /// Ops that arrived before their parent and waited in the orphan pool.
    parked: u64,
    forks: u64,
    /// Tampered messages (gossip or fetched ops) that reached a replica's
    /// checks, and how many of those were refused as invalid.
    tampered_judged: u64,
    tampered_refused: u64,
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    converged_at: u64,
    stats: Stats,
    op_digest: [u8; 32],
    state_digest: [u8; 32],
    ops: usize,
    dids: usize,
}

struct Sim {
    rng: StdRng,
    now: u64,
    seq: u64,
    config: SyncConfig,
    replicas: Vec<Replica>,
    /// Pending deliveries by (tick, sequence number): deterministic order.
    queue: BTreeMap<(u64, u64), Envelope>,
    writers: Vec<Writer>,
    next_session: u64,
    stats: Stats,
    limits: Limits,
    /// The canonical bytes of every op written, by CID.
    written: BTreeMap<Cid, Vec<u8>>,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        // Odd seeds use a small tuning so that recursion, listing and
        // budget cuts all happen on a ledger of a few hundred ops.
        let config = if seed % 2 == 1 {
            SyncConfig {
                branching: 3,
                items_threshold: 2,
                max_message_bytes: 600,
                ..SyncConfig::default()
            }
        } else {
            SyncConfig::default()
        };
        let replicas = (0..REPLICAS)
            .map(|_| Replica {
                ledger: Ledger::default().with_orphan_capacity(1_000),
                index: SyncIndex::new(),
                seen: Seen::new(64),
                sessions: BTreeMap::new(),
            })
            .collect();
        Sim {
            rng: StdRng::seed_from_u64(seed),
            now: 0,
            seq: 0,
            config,
            replicas,
            queue: BTreeMap::new(),
            writers: vec![],
            next_session: 0,
            stats: Stats::default(),
            limits: Limits::default(),
            written: BTreeMap::new(),
        }
    }

    /// What a replica's clock says now.
    fn clock(&self) -> u64 {
        EPOCH + self.now
    }

    /// A tampered copy of an op's bytes: each kind breaks one rule that
    /// `did_core::ingest` or the ledger enforces.
    fn tamper(&mut self, bytes: &[u8]) -> Vec<u8> {
        match self.rng.gen_range(0..4) {
            // Another encoding of the same op (another gossip message id).
            0 => {
                let v: serde_json::Value = serde_json::from_slice(bytes).expect("json");
                serde_json::to_vec_pretty(&v).expect("json")
            }
            // A forged signature over the same body (so the same CID).
            1 => {
                let mut v: serde_json::Value = serde_json::from_slice(bytes).expect("json");
                let sig = v["sig"].as_str().expect("sig").to_string();
                let first = if sig.starts_with('A') { "B" } else { "A" };
                v["sig"] = serde_json::Value::String(format!("{first}{}", &sig[1..]));
                did_core::encoding::canonical_value(&v).expect("canonical")
            }
            2 => bytes[..bytes.len() / 2].to_vec(),
            _ => [bytes, &vec![b' '; self.limits.max_op_bytes][..]].concat(),
        }
    }

    fn side(replica: usize) -> usize {
        usize::from(replica >= REPLICAS / 2)
    }

    fn partitioned(&self, a: usize, b: usize) -> bool {
        PARTITION.contains(&self.now) && Sim::side(a) != Sim::side(b)
    }

    fn send(&mut self, from: usize, to: usize, payload: Payload) {
        let size = match &payload {
            Payload::Sync { bytes, .. } => bytes.len(),
            Payload::FetchRequest(cids) => 32 * cids.len(),
            Payload::FetchResponse { ops, .. } => ops.iter().map(|w| w.bytes.len()).sum(),
            Payload::Gossip(op) => op.bytes.len(),
        } as u64;
        match &payload {
            Payload::Sync { .. } => self.stats.sync_bytes += size,
            Payload::FetchRequest(_) | Payload::FetchResponse { .. } => {
                self.stats.fetch_bytes += size
            }
            Payload::Gossip(_) => self.stats.gossip_bytes += size,
        }
        self.stats.messages += 1;
        if self.rng.gen_bool(DROP_RATE) || self.partitioned(from, to) {
            self.stats.dropped += 1;
            return;
        }
        let latency = self.rng.gen_range(1..=3);
        self.seq += 1;
        self.queue.insert(
            (self.now + latency, self.seq),
            Envelope { from, to, payload },
        );
    }

    fn random_peer(&mut self, me: usize) -> usize {
        let p = self.rng.gen_range(0..REPLICAS - 1);
        if p >= me {
            p + 1
        } else {
            p
        }
    }

    /// Applies an op at a replica; returns the CIDs committed.
    fn ingest(&mut self, at: usize, op: Operation) -> Vec<Cid> {
        let cid = op.cid().expect("encodable");
        let r = &mut self.replicas[at];
        let had = r.ledger.contains(&cid);
        let committed = r
            .ledger
            .apply(op)
            .expect("the workload writes valid ops only");
        if !had && committed.is_empty() {
            self.stats.parked += 1;
        }
        for c in &committed {
            r.index.insert(*c);
        }
        committed
    }

    fn gossip(&mut self, from: usize, except: usize, bytes: &[u8]) {
        for _ in 0..FANOUT {
            let to = self.random_peer(from);
            if to != except {
                let honest = Wire {
                    bytes: bytes.to_vec(),
                    tampered: false,
                };
                self.send(from, to, Payload::Gossip(honest));
                if self.rng.gen_bool(TAMPER_RATE) {
                    let bytes = self.tamper(bytes);
                    let bad = Wire {
                        bytes,
                        tampered: true,
                    };
                    self.send(from, to, Payload::Gossip(bad));
                }
            }
        }
    }

    /// Writes one op at a random replica: a new DID, or an update or
    /// deactivation of a DID that replica knows, usually on its head and
    /// sometimes on an older op (a fork).
    fn write(&mut self) {
        let at = self.rng.gen_range(0..REPLICAS);
        let created_at = self.clock();
        let known: Vec<usize> = (0..self.writers.len())
            .filter(|i| {
                self.replicas[at]
                    .ledger
                    .resolve(&self.writers[*i].did)
                    .is_some()
            })
            .collect();
        let op = if known.is_empty() || self.rng.gen_bool(0.2) {
            let high = SigningKey::from_bytes(&self.rng.gen());
            let low = SigningKey::from_bytes(&self.rng.gen());
            let mut state = DidState::single_key(public_of(&high));
            state.rotation_keys.push(public_of(&low));
            let op = Operation::create(state, created_at, &high).expect("sign");
            let did = did_from_genesis(&op.cid().expect("cid"));
            self.writers.push(Writer { did, high, low });
            op
        } else {
            let w = &self.writers[known[self.rng.gen_range(0..known.len())]];
            let ledger = &self.replicas[at].ledger;
            let head = ledger.resolve(&w.did).expect("known");
            // Ops that still have a state can be built on.
            let live: Vec<(Cid, DidState)> = ledger
                .did_log(&w.did)
                .expect("known")
                .iter()
                .filter_map(|e| e.stored.op.state.clone().map(|s| (e.stored.cid, s)))
                .collect();
            let (prev, base) = match head.state {
                Some(s) if self.rng.gen_bool(0.75) => (head.head, (*s).clone()),
                _ => {
                    self.stats.forks += 1;
                    live[self.rng.gen_range(0..live.len())].clone()
                }
            };
            let key = if self.rng.gen_bool(0.5) {
                &w.high
            } else {
                &w.low
            };
            if self.rng.gen_bool(0.05) {
                Operation::deactivate(&w.did, prev, created_at, key).expect("sign")
            } else {
                let mut state = base;
                state.also_known_as = vec![format!("at://write-{}", self.stats.ops_written)];
                Operation::update(&w.did, prev, state, created_at, key).expect("sign")
            }
        };
        let cid = op.cid().expect("cid");
        if self.replicas[at].ledger.contains(&cid) {
            return; // the same deactivation drawn twice in one tick
        }
        self.stats.ops_written += 1;
        let bytes = op.canonical_bytes().expect("bytes");
        self.written.insert(cid, bytes.clone());
        // Gossip message ids are the hash of the message bytes (as on a
        // node), not the op's CID, which covers the signed body only.
        self.replicas[at].seen.insert(Cid::of(&bytes));
        let committed = self.ingest(at, op);
        assert_eq!(committed, vec![cid], "the writer holds the parent");
        self.gossip(at, at, &bytes);
    }

    fn start_session(&mut self, me: usize) {
        let peer = self.random_peer(me);
        let id = self.next_session;
        self.next_session += 1;
        self.stats.sessions += 1;
        let r = &mut self.replicas[me];
        let mut session = Session::new(self.config);
        let bytes = session.initiate(&r.index);
        r.sessions.insert(id, (session, self.now));
        self.send(
            me,
            peer,
            Payload::Sync {
                session: id,
                initiator: me,
                bytes,
            },
        );
    }

    fn deliver(&mut self, env: Envelope) {
        let Envelope { from, to, payload } = env;
        match payload {
            Payload::Gossip(Wire { bytes, tampered }) => {
                if !self.replicas[to].seen.insert(Cid::of(&bytes)) {
                    return; // duplicate: already handled
                }
                let verdict = judge(
                    &bytes,
                    &self.replicas[to].ledger,
                    &self.limits,
                    self.clock(),
                );
                if tampered {
                    self.stats.tampered_judged += 1;
                    match verdict {
                        Verdict::Invalid(_) => self.stats.tampered_refused += 1,
                        // A forged signature over a body held already: known,
                        // and the held bytes stay (checked at the end).
                        Verdict::Known { .. } => {}
                        other => panic!("a tampered op was not refused: {other:?}"),
                    }
                    return;
                }
                match verdict {
                    // Forward only what validated and committed; a node
                    // also forwards fresh known ones (gossipsub Accept),
                    // which this traffic model leaves out.
                    Verdict::New(v) => {
                        let cid = v.cid;
                        // Committed first, then the orphans it released.
                        assert_eq!(self.ingest(to, v.op).first(), Some(&cid));
                        self.gossip(to, from, &bytes);
                    }
                    // Parked in the orphan pool; anti-entropy brings the parent.
                    Verdict::Orphan(op, _) => {
                        self.ingest(to, *op);
                    }
                    Verdict::Known { .. } => {}
                    other => panic!("an honest op was refused: {other:?}"),
                }
            }
            Payload::Sync {
                session,
                initiator,
                bytes,
            } => {
                let now = self.now;
                let config = self.config;
                let r = &mut self.replicas[to];
                if initiator == to && !r.sessions.contains_key(&session) {
                    return; // an answer to a session we abandoned
                }
                let (s, last) = r
                    .sessions
                    .entry(session)
                    .or_insert_with(|| (Session::new(config), now));
                *last = now;
                let answer = s.handle(&r.index, &bytes);
                let (need, _have) = s.take_outcome();
                let need: Vec<Cid> = need.into_iter().filter(|c| !r.ledger.contains(c)).collect();
                let finished = !matches!(answer, Ok(Some(_)));
                if finished {
                    r.sessions.remove(&session);
                    if initiator == to {
                        self.stats.sessions_finished += 1;
                    }
                }
                match answer {
                    Ok(Some(reply)) => self.send(
                        to,
                        from,
                        Payload::Sync {
                            session,
                            initiator,
                            bytes: reply,
                        },
                    ),
                    // A request-response responder always answers: "done".
                    Ok(None) if initiator != to => self.send(
                        to,
                        from,
                        Payload::Sync {
                            session,
                            initiator,
                            bytes: Message::default().encode(),
                        },
                    ),
                    Ok(None) => {}
                    Err(e) => panic!("honest peers never send invalid sync messages: {e}"),
                }
                if !need.is_empty() {
                    self.send(to, from, Payload::FetchRequest(need));
                }
            }
            Payload::FetchRequest(cids) => {
                let ledger = &self.replicas[to].ledger;
                let ops: Vec<Vec<u8>> = cids.iter().filter_map(|c| ledger.get_bytes(c)).collect();
                let mut wire = Vec::with_capacity(ops.len());
                for bytes in ops {
                    if self.rng.gen_bool(TAMPER_RATE) {
                        let bytes = self.tamper(&bytes);
                        wire.push(Wire {
                            bytes,
                            tampered: true,
                        });
                    } else {
                        wire.push(Wire {
                            bytes,
                            tampered: false,
                        });
                    }
                }
                if !wire.is_empty() {
                    let asked = cids;
                    self.send(to, from, Payload::FetchResponse { asked, ops: wire });
                }
            }
            Payload::FetchResponse { asked, ops } => {
                // Sorted by CID, not by causality: children often come first.
                for Wire { bytes, tampered } in ops {
                    let ledger = &self.replicas[to].ledger;
                    let verdict = judge_fetched(
                        &bytes,
                        |c| asked.contains(c),
                        |c| ledger.contains(c),
                        &self.limits,
                        self.clock(),
                    );
                    if tampered {
                        self.stats.tampered_judged += 1;
                    }
                    match verdict {
                        Fetched::Take(r) if tampered => {
                            // Screened only: the signature is the ledger's
                            // (on a node, the writer's) to check.
                            assert!(self.replicas[to].ledger.apply(r.op).is_err());
                            self.stats.tampered_refused += 1;
                        }
                        Fetched::Take(r) => {
                            self.ingest(to, r.op);
                        }
                        Fetched::Invalid(_) if tampered => self.stats.tampered_refused += 1,
                        Fetched::Known => {}
                        other => panic!("fetched op (tampered: {tampered}): {other:?}"),
                    }
                }
            }
        }
    }

    fn converged(&self) -> bool {
        let first = &self.replicas[0].ledger;
        self.replicas.iter().all(|r| {
            r.ledger.op_set_digest() == first.op_set_digest()
                && r.ledger.state_digest() == first.state_digest()
                && r.ledger.orphan_count() == 0
        })
    }

    fn run(mut self) -> Outcome {
        while self.now < MAX_TICKS {
            if self.now < WRITES_UNTIL {
                for _ in 0..self.rng.gen_range(0..=3) {
                    self.write();
                }
            }
            while let Some(entry) = self.queue.first_entry() {
                if entry.key().0 > self.now {
                    break;
                }
                let env = entry.remove();
                if self.partitioned(env.from, env.to) {
                    self.stats.dropped += 1;
                    continue;
                }
                self.deliver(env);
            }
            let now = self.now;
            for r in &mut self.replicas {
                r.sessions
                    .retain(|_, (_, last)| now - *last < SESSION_TIMEOUT);
            }
            for me in 0..REPLICAS {
                if self.rng.gen_bool(SYNC_RATE) {
                    self.start_session(me);
                }
            }
            if self.now >= WRITES_UNTIL.max(PARTITION.end) && self.converged() {
                break;
            }
            self.now += 1;
        }
        assert!(
            self.converged(),
            "no convergence within {MAX_TICKS} ticks: {:?}",
            self.stats
        );
        let first = &self.replicas[0];
        for w in &self.writers {
            let head = first
                .ledger
                .resolve(&w.did)
                .expect("every replica knows every DID")
                .head;
            for r in &self.replicas {
                assert_eq!(
                    r.ledger.resolve(&w.did).map(|v| v.head),
                    Some(head),
                    "{}",
                    w.did
                );
            }
        }
        for r in &self.replicas {
            assert_eq!(r.index.len(), r.ledger.len(), "the index tracks the ledger");
            assert!(r.index.iter().eq(first.index.iter()));
            for (cid, bytes) in &self.written {
                let held = r.ledger.get_bytes(cid);
                assert_eq!(
                    held.as_ref(),
                    Some(bytes),
                    "a replica holds other bytes for {cid}"
                );
            }
        }
        Outcome {
            converged_at: self.now,
            stats: self.stats,
            op_digest: first.ledger.op_set_digest(),
            state_digest: first.ledger.state_digest(),
            ops: first.ledger.len(),
            dids: first.ledger.did_count(),
        }
    }
}

#[test]
fn replicas_converge_despite_loss_and_partition() {
    let mut total = Stats::default();
    let mut worst = 0;
    for seed in 0..20 {
        let o = Sim::new(seed).run();
        let s = o.stats;
        println!(
            "seed {seed:>2}: {:>3} ops, {:>2} DIDs, {:>2} forks; converged {:>3} ticks after healing; \
             sync {:>6} B, fetch {:>7} B, gossip {:>6} B; {:>4}/{:>4} messages lost; \
             {:>3}/{:>4} sessions finished; {:>3} ops parked as orphans",
            o.ops,
            o.dids,
            s.forks,
            o.converged_at - PARTITION.end,
            s.sync_bytes,
            s.fetch_bytes,
            s.gossip_bytes,
            s.dropped,
            s.messages,
            s.sessions_finished,
            s.sessions,
            s.parked,
        );
        assert_eq!(o.ops as u64, s.ops_written, "no op is lost");
        worst = worst.max(o.converged_at - PARTITION.end);
        total.parked += s.parked;
        total.forks += s.forks;
        total.tampered_judged += s.tampered_judged;
        total.tampered_refused += s.tampered_refused;
    }
    println!("slowest convergence: {worst} ticks after healing");
    assert!(total.parked > 0, "orphans were exercised");
    assert!(total.forks > 0, "forks were exercised");
    println!(
        "tampered: {} judged, {} refused",
        total.tampered_judged, total.tampered_refused
    );
    assert!(
        total.tampered_refused > 0,
        "tampering was exercised and refused"
    );
}

#[test]
fn a_seed_replays_exactly() {
    assert_eq!(Sim::new(7).run(), Sim::new(7).run());
}
