//! Federated links (issue 10, `did_core::federation`) against an
//! adversary: copied link entries, forged or foreign attestations, and the
//! commitment → DID index under every way a DID's head can move (update,
//! fork-rule switch in either arrival order, dispute, deactivation, orphan
//! release). The property test at the end checks the index against a
//! brute-force scan of every DID's head state after random op sequences.

use did_core::document::did_document;
use did_core::federation::{
    attestation_bytes, commitment, find_linked, sign_attestation, verify_attestation, FedLink,
    LinkLookup, COMMITMENT_CONTEXT,
};
use did_core::keys::public_of;
use did_core::ledger::Ledger;
use did_core::op::{did_from_genesis, DidState, OpError, Operation};
use did_core::{Cid, PublicKey};
use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};

const NET: &str = "mesh-fedtestaaaaaaaaa";
const ISS: &str = "https://accounts.example";
const T0: u64 = 1_790_000_000;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// The network member that attests (a node's key).
fn member() -> SigningKey {
    key(100)
}

fn members() -> Vec<PublicKey> {
    vec![public_of(&key(101)), public_of(&member())]
}

fn state(rot: &[&SigningKey], links: Vec<FedLink>) -> DidState {
    let mut s = DidState::single_key(public_of(rot[0]));
    s.rotation_keys = rot.iter().map(|k| public_of(k)).collect();
    s.links = links;
    s
}

/// A link for `did` to the account `sub`, attested by the member.
fn link(id: &str, did: &str, sub: &str) -> FedLink {
    let c = commitment(NET, ISS, sub);
    sign_attestation(&member(), NET, did, "acme", &c, T0).into_link(id)
}

/// A DID with rotation keys `rot`, created without links.
fn create(rot: &[&SigningKey], t: u64) -> (Operation, String) {
    let op = Operation::create(state(rot, vec![]), t, rot[0]).unwrap();
    let did = did_from_genesis(&op.cid().unwrap());
    (op, did)
}

fn cid(op: &Operation) -> Cid {
    op.cid().unwrap()
}

fn apply_all<'a>(ops: impl IntoIterator<Item = &'a Operation>) -> Ledger {
    let mut l = Ledger::default();
    for op in ops {
        l.apply(op.clone()).unwrap();
    }
    l
}

fn lookup(l: &Ledger, sub: &str) -> LinkLookup {
    find_linked(l, NET, "acme", &commitment(NET, ISS, sub), &members())
}

#[test]
fn the_commitment_is_deterministic_and_network_separated() {
    let c = commitment(NET, ISS, "alice");
    assert_eq!(
        c,
        commitment(NET, ISS, "alice"),
        "a node must find it again"
    );
    // exactly the spec's preimage (PROTOCOL.md): context ‖ net ‖ 0 ‖ iss ‖ 0 ‖ sub
    let mut pre = COMMITMENT_CONTEXT.to_vec();
    pre.extend_from_slice(format!("{NET}\0{ISS}\0alice").as_bytes());
    assert_eq!(
        c,
        base64_url(blake3::hash(&pre).as_bytes()),
        "blake3 of the documented preimage"
    );
    assert_eq!(c.len(), 43, "base64url of 32 bytes");
    assert!(!c.contains("alice"), "no subject in the clear");
    // Another network: unlinkable (a different value for the same account).
    assert_ne!(c, commitment("mesh-otheraaaaaaaaaaa", ISS, "alice"));
    assert_ne!(c, commitment(NET, "https://other.example", "alice"));
    assert_ne!(c, commitment(NET, ISS, "alice2"));
    assert_ne!(c, commitment(NET, ISS, "Alice"));
}

fn base64_url(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

#[test]
fn an_attestation_verifies_only_for_its_did_network_provider_commitment_and_a_member() {
    let (_, did) = create(&[&key(1)], T0);
    let (_, other_did) = create(&[&key(2)], T0);
    let good = link("main", &did, "alice");
    let m = members();
    assert!(verify_attestation(&good, &did, NET, &m));
    assert!(good.attestation_part().verify(&did, NET, &m));
    // the signed bytes are the documented canonical JSON
    assert_eq!(
        String::from_utf8(attestation_bytes(NET, &did, "acme", &good.commitment, T0)).unwrap(),
        format!(
            "{{\"attested_at\":{T0},\"commitment\":\"{}\",\"did\":\"{did}\",\"network_id\":\"{NET}\",\"provider\":\"acme\",\"type\":\"didmesh-link-attestation/1\"}}",
            good.commitment
        )
    );
    // Each bound field, changed: no longer valid.
    assert!(!verify_attestation(&good, &other_did, NET, &m), "other DID");
    assert!(
        !verify_attestation(&good, &did, "mesh-otheraaaaaaaaaaa", &m),
        "other network"
    );
    let with = |f: &dyn Fn(&mut FedLink)| {
        let mut l = good.clone();
        f(&mut l);
        verify_attestation(&l, &did, NET, &m)
    };
    assert!(!with(&|l| l.provider = "evil".into()), "other provider");
    assert!(
        !with(&|l| l.commitment = commitment(NET, ISS, "bob")),
        "other account"
    );
    assert!(!with(&|l| l.attested_at += 1), "other time");
    assert!(
        !with(&|l| l.attested_by = public_of(&key(101))),
        "another member's key did not sign it"
    );
    assert!(
        !with(&|l| l.attestation = "A".repeat(86)),
        "not a signature"
    );
    assert!(!with(&|l| l.attestation = "x".into()), "garbage");
    // The id is the owner's label, not attested.
    assert!(with(&|l| l.id = "renamed".into()));
    // A signer outside the member list: a removed member, or anyone who
    // signs for themselves.
    assert!(!verify_attestation(
        &good,
        &did,
        NET,
        &[public_of(&key(101))]
    ));
    assert!(!verify_attestation(&good, &did, NET, &[]));
    let c = commitment(NET, ISS, "alice");
    let self_made = sign_attestation(&key(1), NET, &did, "acme", &c, T0).into_link("main");
    assert!(!verify_attestation(&self_made, &did, NET, &m));
    assert!(verify_attestation(
        &self_made,
        &did,
        NET,
        &[public_of(&key(1))]
    ));
}

#[test]
fn a_copied_link_entry_does_not_verify_for_the_copier() {
    let (victim_key, thief_key) = (key(1), key(66));
    let (vc, victim) = create(&[&victim_key], T0);
    let (tc, thief) = create(&[&thief_key], T0);
    let victims_link = link("main", &victim, "alice");
    let vu = Operation::update(
        &victim,
        cid(&vc),
        state(&[&victim_key], vec![victims_link.clone()]),
        T0 + 1,
        &victim_key,
    )
    .unwrap();
    // The thief copies the entry byte for byte: the ledger takes it (it
    // checks shape only) ...
    let tu = Operation::update(
        &thief,
        cid(&tc),
        state(&[&thief_key], vec![victims_link.clone()]),
        T0 + 1,
        &thief_key,
    )
    .unwrap();
    let mut l = apply_all([&vc, &tc, &tu]);
    let c = victims_link.commitment.clone();
    assert_eq!(l.linked_dids(&c), vec![thief.as_str()]);
    // ... but the attestation names the victim's DID: nobody signs in as
    // the thief with the victim's account.
    assert!(!verify_attestation(&victims_link, &thief, NET, &members()));
    assert_eq!(lookup(&l, "alice"), LinkLookup::NotLinked);
    // With the victim's own link on the ledger, the victim alone is found,
    // not an ambiguity the thief could force.
    l.apply(vu).unwrap();
    let mut both = vec![victim.as_str(), thief.as_str()];
    both.sort();
    assert_eq!(l.linked_dids(&c), both, "the index lists both");
    assert_eq!(lookup(&l, "alice"), LinkLookup::One(victim.clone()));
    // Re-signing the copy with the thief's own key: not a member.
    let forged = sign_attestation(&thief_key, NET, &thief, "acme", &c, T0).into_link("main");
    assert!(!verify_attestation(&forged, &thief, NET, &members()));
}

#[test]
fn two_valid_links_to_one_account_are_ambiguous_and_a_wrong_provider_is_not_linked() {
    let (k1, k2) = (key(1), key(2));
    let (c1, d1) = create(&[&k1], T0);
    let (c2, d2) = create(&[&k2], T0);
    let u1 = Operation::update(
        &d1,
        cid(&c1),
        state(&[&k1], vec![link("a", &d1, "alice")]),
        T0 + 1,
        &k1,
    )
    .unwrap();
    let u2 = Operation::update(
        &d2,
        cid(&c2),
        state(&[&k2], vec![link("b", &d2, "alice")]),
        T0 + 1,
        &k2,
    )
    .unwrap();
    let l = apply_all([&c1, &c2, &u1, &u2]);
    let mut want = vec![d1.clone(), d2.clone()];
    want.sort();
    assert_eq!(lookup(&l, "alice"), LinkLookup::Ambiguous(want));
    let c = commitment(NET, ISS, "alice");
    assert_eq!(
        find_linked(&l, NET, "other", &c, &members()),
        LinkLookup::NotLinked,
        "the link names provider acme"
    );
    assert_eq!(
        find_linked(&l, NET, "acme", &c, &[public_of(&key(101))]),
        LinkLookup::NotLinked,
        "the attesting member was removed: its attestations stop counting"
    );
}

#[test]
fn an_update_removing_the_link_drops_the_did_from_the_index() {
    let k = key(1);
    let (c, did) = create(&[&k], T0);
    let add = Operation::update(
        &did,
        cid(&c),
        state(
            &[&k],
            vec![link("a", &did, "alice"), link("b", &did, "bob")],
        ),
        T0 + 1,
        &k,
    )
    .unwrap();
    let remove = Operation::update(
        &did,
        cid(&add),
        state(&[&k], vec![link("b", &did, "bob")]),
        T0 + 2,
        &k,
    )
    .unwrap();
    let mut l = apply_all([&c, &add]);
    assert_eq!(
        l.linked_dids(&commitment(NET, ISS, "alice")),
        vec![did.as_str()]
    );
    assert_eq!(lookup(&l, "alice"), LinkLookup::One(did.clone()));
    l.apply(remove).unwrap();
    assert!(l.linked_dids(&commitment(NET, ISS, "alice")).is_empty());
    assert_eq!(
        lookup(&l, "alice"),
        LinkLookup::NotLinked,
        "refused at once"
    );
    assert_eq!(lookup(&l, "bob"), LinkLookup::One(did.clone()));
    assert_eq!(l.link_index_len(), 1);
}

#[test]
fn the_index_follows_a_fork_rule_switch_in_either_arrival_order() {
    // Recovery key R (priority 0) and daily key D (priority 1). D links
    // "mallory" and builds on it; R's reaction at the genesis links
    // "alice". R's branch wins whatever arrives first.
    let (r, d) = (key(1), key(2));
    let (c, did) = create(&[&r, &d], T0);
    let by_d = Operation::update(
        &did,
        cid(&c),
        state(&[&r, &d], vec![link("m", &did, "mallory")]),
        T0 + 1,
        &d,
    )
    .unwrap();
    let by_d_child = Operation::update(
        &did,
        cid(&by_d),
        state(
            &[&r, &d],
            vec![link("m", &did, "mallory"), link("m2", &did, "mallory2")],
        ),
        T0 + 2,
        &d,
    )
    .unwrap();
    let by_r = Operation::update(
        &did,
        cid(&c),
        state(&[&r, &d], vec![link("a", &did, "alice")]),
        T0 + 3,
        &r,
    )
    .unwrap();
    let orders: [[&Operation; 4]; 4] = [
        [&c, &by_d, &by_d_child, &by_r],
        [&c, &by_r, &by_d, &by_d_child],
        // the child arrives before its parent: an orphan released later
        [&c, &by_d_child, &by_r, &by_d],
        [&by_d_child, &by_d, &by_r, &c],
    ];
    for order in orders {
        let l = apply_all(order);
        assert_eq!(l.resolve(&did).unwrap().head, cid(&by_r));
        assert_eq!(lookup(&l, "alice"), LinkLookup::One(did.clone()));
        assert!(l.linked_dids(&commitment(NET, ISS, "mallory")).is_empty());
        assert!(l.linked_dids(&commitment(NET, ISS, "mallory2")).is_empty());
        assert_eq!(lookup(&l, "mallory"), LinkLookup::NotLinked);
        assert_eq!(l.link_index_len(), 1);
    }
    // Before R's reaction arrives, D's branch is the head and is indexed.
    let l = apply_all([&c, &by_d, &by_d_child]);
    assert_eq!(lookup(&l, "mallory2"), LinkLookup::One(did.clone()));
}

#[test]
fn a_disputed_did_stays_listed_but_signs_nobody_in_until_settled() {
    let (r, d) = (key(1), key(2));
    let (c, did) = create(&[&r, &d], T0);
    let base = Operation::update(
        &did,
        cid(&c),
        state(&[&r, &d], vec![link("a", &did, "alice")]),
        T0 + 1,
        &d,
    )
    .unwrap();
    // D equivocates on `base`: one child drops alice and links bob, the
    // other keeps alice.
    let e1 = Operation::update(
        &did,
        cid(&base),
        state(&[&r, &d], vec![link("b", &did, "bob")]),
        T0 + 2,
        &d,
    )
    .unwrap();
    let e2 = Operation::update(
        &did,
        cid(&base),
        state(&[&r, &d], vec![link("a", &did, "alice")]),
        T0 + 2,
        &d,
    )
    .unwrap();
    for order in [[&c, &base, &e1, &e2], [&c, &base, &e2, &e1]] {
        let l = apply_all(order);
        let view = l.resolve(&did).unwrap();
        assert!(view.disputed.is_some());
        // The head state (at `base`) still lists alice: the index lists
        // the DID, the lookup refuses it (not usable).
        assert_eq!(
            l.linked_dids(&commitment(NET, ISS, "alice")),
            vec![did.as_str()]
        );
        assert!(l.linked_dids(&commitment(NET, ISS, "bob")).is_empty());
        assert_eq!(lookup(&l, "alice"), LinkLookup::NotLinked);
        assert_eq!(lookup(&l, "bob"), LinkLookup::NotLinked);
    }
    // R settles it below `base` with bob only.
    let settle = Operation::update(
        &did,
        cid(&base),
        state(&[&r, &d], vec![link("b", &did, "bob")]),
        T0 + 3,
        &r,
    )
    .unwrap();
    let l = apply_all([&c, &base, &e1, &e2, &settle]);
    assert!(l.resolve(&did).unwrap().disputed.is_none());
    assert!(l.linked_dids(&commitment(NET, ISS, "alice")).is_empty());
    assert_eq!(lookup(&l, "bob"), LinkLookup::One(did.clone()));
}

#[test]
fn a_deactivated_did_is_not_listed() {
    let k = key(1);
    let (c, did) = create(&[&k], T0);
    let add = Operation::update(
        &did,
        cid(&c),
        state(&[&k], vec![link("a", &did, "alice")]),
        T0 + 1,
        &k,
    )
    .unwrap();
    let kill = Operation::deactivate(&did, cid(&add), T0 + 2, &k).unwrap();
    let l = apply_all([&c, &add, &kill]);
    assert!(l.resolve(&did).unwrap().deactivated());
    assert!(l.linked_dids(&commitment(NET, ISS, "alice")).is_empty());
    assert_eq!(lookup(&l, "alice"), LinkLookup::NotLinked);
    assert_eq!(l.link_index_len(), 0);
    // A deactivation that is one side of an equivocation: disputed, the
    // state at the parent is still the head state, the DID stays listed
    // and usable by nobody.
    let other = Operation::update(&did, cid(&add), state(&[&k], vec![]), T0 + 2, &k).unwrap();
    let l = apply_all([&c, &add, &kill, &other]);
    assert!(l.resolve(&did).unwrap().disputed.is_some());
    assert_eq!(
        l.linked_dids(&commitment(NET, ISS, "alice")),
        vec![did.as_str()]
    );
    assert_eq!(lookup(&l, "alice"), LinkLookup::NotLinked);
}

#[test]
fn the_ledger_checks_the_shape_of_links() {
    let k = key(1);
    let (c, did) = create(&[&k], T0);
    let l = apply_all([&c]);
    let try_links = |links: Vec<FedLink>| {
        let op = Operation::update(&did, cid(&c), state(&[&k], links), T0 + 1, &k).unwrap();
        l.validate(&op).map(|_| ())
    };
    let ok: Vec<FedLink> = (0..5)
        .map(|i| link(&format!("l{i}"), &did, &format!("user{i}")))
        .collect();
    assert_eq!(try_links(ok.clone()), Ok(()));
    let mut six = ok.clone();
    six.push(link("l5", &did, "user5"));
    assert!(matches!(try_links(six), Err(OpError::Limit(_))));
    let dup_id = vec![link("x", &did, "a"), link("x", &did, "b")];
    assert!(matches!(try_links(dup_id), Err(OpError::Invalid(_))));
    let dup_account = vec![link("x", &did, "a"), link("y", &did, "a")];
    assert!(matches!(try_links(dup_account), Err(OpError::Invalid(_))));
    let mut bad_provider = link("x", &did, "a");
    bad_provider.provider = "Acme Corp".into();
    assert!(matches!(
        try_links(vec![bad_provider]),
        Err(OpError::Invalid(_))
    ));
    let mut raw_sub = link("x", &did, "a");
    raw_sub.commitment = "alice@example.com".into();
    assert!(matches!(try_links(vec![raw_sub]), Err(OpError::Invalid(_))));
    // Unknown fields inside a link are refused like anywhere in an op.
    let mut v = serde_json::to_value(link("x", &did, "a")).unwrap();
    v["sub"] = "alice".into();
    assert!(serde_json::from_value::<FedLink>(v).is_err());
}

#[test]
fn states_without_links_keep_their_bytes_and_documents_show_no_commitment() {
    let k = key(1);
    let (c, did) = create(&[&k], T0);
    let bytes = String::from_utf8(c.canonical_bytes().unwrap()).unwrap();
    assert!(!bytes.contains("links"), "absent when empty: {bytes}");
    let with = state(&[&k], vec![link("a", &did, "alice")]);
    let doc = did_document(&did, &with).to_string();
    let com = commitment(NET, ISS, "alice");
    assert!(
        !doc.contains(&com) && !doc.contains("acme"),
        "the DID document does not advertise linked accounts: {doc}"
    );
    assert_eq!(doc, did_document(&did, &state(&[&k], vec![])).to_string());
}

// ---- property: the index equals a scan of every DID's head state ----

/// Accounts the random histories link (a small universe, so links collide
/// across DIDs and branches).
const SUBS: [&str; 4] = ["alice", "bob", "carol", "dave"];

/// Random histories of three DIDs with rotation keys [R, D]: each op picks
/// a random earlier op of its DID as parent and a random signer among R
/// and D (so forks, switches and equivocations happen), links a random
/// subset of SUBS, and sometimes deactivates.
fn random_ops(seed: u64) -> (Vec<Operation>, Vec<String>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ops = vec![];
    let mut dids = vec![];
    for n in 0..3u8 {
        let (r, d) = (key(10 + n), key(20 + n));
        let (c, did) = create(&[&r, &d], T0);
        let mut parents = vec![(cid(&c), T0)];
        ops.push(c);
        for _ in 0..rng.gen_range(2..9) {
            let (prev, t_prev) = parents[rng.gen_range(0..parents.len())];
            let signer = if rng.gen_bool(0.5) { &r } else { &d };
            let t = t_prev + rng.gen_range(0..3);
            if rng.gen_bool(0.1) {
                ops.push(Operation::deactivate(&did, prev, t, signer).unwrap());
                continue;
            }
            let links = SUBS
                .iter()
                .enumerate()
                .filter(|_| rng.gen_bool(0.4))
                .map(|(i, s)| link(&format!("l{i}"), &did, s))
                .collect();
            let op = Operation::update(&did, prev, state(&[&r, &d], links), t, signer).unwrap();
            parents.push((cid(&op), t));
            ops.push(op);
        }
        dids.push(did);
    }
    (ops, dids)
}

/// commitment → DIDs, by resolving every DID.
fn scan(l: &Ledger, dids: &[String]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for did in dids {
        let Some(view) = l.resolve(did) else { continue };
        for link in view
            .state
            .as_deref()
            .map(|s| s.links.as_slice())
            .unwrap_or(&[])
        {
            out.entry(link.commitment.clone())
                .or_default()
                .insert(did.clone());
        }
    }
    out
}

fn index(l: &Ledger) -> BTreeMap<String, BTreeSet<String>> {
    SUBS.iter()
        .map(|s| commitment(NET, ISS, s))
        .map(|c| {
            let dids = l.linked_dids(&c).into_iter().map(String::from).collect();
            (c, dids)
        })
        .filter(|(_, d): &(String, BTreeSet<String>)| !d.is_empty())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn the_index_equals_a_scan_of_head_states(seed in any::<u64>(), perm in any::<u64>()) {
        let (ops, dids) = random_ops(seed);
        let mut rng = StdRng::seed_from_u64(perm);
        let mut reference = None;
        for _ in 0..3 {
            let mut order = ops.clone();
            for i in (1..order.len()).rev() {
                order.swap(i, rng.gen_range(0..=i));
            }
            let mut l = Ledger::default();
            for op in order {
                // children of a deactivation are refused; the rest apply
                // or wait as orphans
                let _ = l.apply(op);
                let want = scan(&l, &dids);
                prop_assert_eq!(&index(&l), &want);
                prop_assert_eq!(
                    l.link_index_len(),
                    want.values().map(BTreeSet::len).sum::<usize>()
                );
            }
            // Order never matters.
            let outcome = (index(&l), l.state_digest());
            if let Some(r) = &reference {
                prop_assert_eq!(r, &outcome);
            }
            reference = Some(outcome);
        }
    }
}
