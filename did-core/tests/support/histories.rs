//! Random ledger histories for the state-cache and checkpoint tests: a few
//! DIDs, each with updates on random earlier ops (forks), the same key
//! signing two children (disputes, settled or not by a higher key),
//! deactivations, federation links shared between DIDs, and a membership
//! change; plus a comparison of everything a reader can see of a ledger.

#![allow(dead_code)]

use did_core::federation::{commitment, sign_attestation};
use did_core::keys::public_of;
use did_core::ledger::Ledger;
use did_core::member::{Member, NetworkRules};
use did_core::op::{did_from_genesis, DidState, OpKind, Operation};
use did_core::Cid;
use ed25519_dalek::SigningKey;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const NET: &str = "net-test";
const ISS: &str = "https://idp.example";
const T0: u64 = 1_750_000_000;

pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub fn rules() -> NetworkRules {
    NetworkRules {
        network_id: NET.into(),
        founders: vec![Member::from_key("m1", public_of(&key(201)))],
        quorum: 1,
        key_overlap_secs: 3600,
    }
}

fn state(rot: &[u8], auth: u8, links: &[(u8, &str)], did: &str) -> DidState {
    let mut s = DidState::single_key(public_of(&key(auth)));
    s.rotation_keys = rot.iter().map(|k| public_of(&key(*k))).collect();
    s.links = links
        .iter()
        .map(|(sub, id)| {
            let c = commitment(NET, ISS, &format!("sub-{sub}"));
            sign_attestation(&key(201), NET, did, "acme", &c, T0).into_link(*id)
        })
        .collect();
    s
}

/// Ops of `dids` random DIDs (parents always before children in the
/// returned order) and one membership op.
pub fn history(seed: u64, dids: usize, updates: usize) -> Vec<Operation> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ops = vec![Operation::membership(
        OpKind::MemberAdd,
        NET,
        None,
        Member::from_key("m2", public_of(&key(202))),
        T0,
        &[&key(201)],
    )
    .unwrap()];
    for d in 0..dids {
        let rot: Vec<u8> = vec![1 + rng.gen_range(0..4u8), 5 + rng.gen_range(0..4u8)];
        let create =
            Operation::create(state(&rot, rot[1], &[], ""), T0 + d as u64, &key(rot[0])).unwrap();
        let did = did_from_genesis(&create.cid().unwrap());
        // (cid, rotation keys, created_at) of ops that carry a state
        let mut live = vec![(create.cid().unwrap(), rot, create.created_at)];
        ops.push(create);
        for _ in 0..rng.gen_range(0..=updates) {
            let (prev, rot, t) = live[rng.gen_range(0..live.len())].clone();
            let signer = rot[usize::from(rng.gen_bool(0.6))];
            let t = t + rng.gen_range(0..3);
            if rng.gen_bool(0.15) {
                ops.push(Operation::deactivate(&did, prev, t, &key(signer)).unwrap());
                continue;
            }
            let next = vec![1 + rng.gen_range(0..4u8), 5 + rng.gen_range(0..4u8)];
            let links: Vec<(u8, &str)> = match rng.gen_range(0..3) {
                0 => vec![],
                1 => vec![(rng.gen_range(0..3), "a")],
                _ => vec![(rng.gen_range(0..3), "a"), (3 + rng.gen_range(0..2), "b")],
            };
            let op = Operation::update(
                &did,
                prev,
                state(&next, next[1], &links, &did),
                t,
                &key(signer),
            )
            .unwrap();
            live.push((op.cid().unwrap(), next, t));
            ops.push(op);
        }
    }
    ops
}

/// The DIDs the ops create.
pub fn dids_of(ops: &[Operation]) -> Vec<String> {
    ops.iter()
        .filter(|o| o.kind == OpKind::Create)
        .map(|o| did_from_genesis(&o.cid().unwrap()))
        .collect()
}

/// Everything a reader sees of `l` for these DIDs, as one comparable text.
pub fn observe(l: &Ledger, dids: &[String]) -> String {
    let mut out = format!(
        "len {} dids {} op {:?} state {:?} members {:?} links {}\n",
        l.len(),
        l.did_count(),
        l.op_set_digest(),
        l.state_digest(),
        l.members(),
        l.link_index_len()
    );
    for did in dids {
        let v = l.resolve(did).expect("every DID resolves");
        out += &format!(
            "{} g {} h {} v {} c {} u {} state {:?} disputed {:?}\n",
            v.did,
            v.genesis,
            v.head,
            v.version,
            v.created_at,
            v.updated_at,
            v.state.as_deref(),
            v.disputed
        );
        for e in l.did_log(did).expect("log") {
            // Children in CID order: their stored order is arrival order.
            let mut children = e.stored.children.clone();
            children.sort();
            out += &format!(
                "  {} {} {} {:?} {:?}\n",
                e.stored.cid, e.stored.priority, e.winning, children, e.stored.op
            );
        }
        if let Some(state) = v.state.as_deref() {
            for link in &state.links {
                out += &format!("  linked {:?}\n", l.linked_dids(&link.commitment));
            }
        }
    }
    for sub in 0..5u8 {
        let c = commitment(NET, ISS, &format!("sub-{sub}"));
        out += &format!("commitment {sub}: {:?}\n", l.linked_dids(&c));
    }
    out
}

/// Applies `ops` in a random order (orphans wait for their parent).
pub fn apply_shuffled(l: &mut Ledger, ops: &[Operation], seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order = ops.to_vec();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.gen_range(0..=i));
    }
    for op in order {
        let _ = l.apply(op);
    }
}

pub fn cid(op: &Operation) -> Cid {
    op.cid().unwrap()
}

/// The first line where two observations differ (for short failures).
pub fn first_difference(a: &str, b: &str) -> Option<(String, String)> {
    a.lines()
        .map(Some)
        .chain(std::iter::repeat(None))
        .zip(b.lines().map(Some).chain(std::iter::repeat(None)))
        .take_while(|(x, y)| x.is_some() || y.is_some())
        .find(|(x, y)| x != y)
        .map(|(x, y)| {
            (
                x.unwrap_or("<end>").to_string(),
                y.unwrap_or("<end>").to_string(),
            )
        })
}
