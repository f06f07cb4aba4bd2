//! Membership ops: strict-majority signatures of the members at the parent,
//! no malleable twins, forks that can only shrink the set, evidence of
//! equivocation, order independence. Each attack here worked against the
//! fixed-quorum, lower-CID-wins rules this protocol had before.

use did_core::keys::public_of;
use did_core::ledger::Ledger;
use did_core::member::{Member, NetworkRules, RsaPublicJwk};
use did_core::op::{OpError, OpKind, Operation};
use did_core::passkey::P256Key;
use did_core::Cid;
use ed25519_dalek::SigningKey;

fn k(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}

fn m(i: u8) -> Member {
    Member::from_key(&format!("node{i}"), public_of(&k(i)))
}

fn rules(founders: u8, quorum: usize) -> NetworkRules {
    NetworkRules {
        network_id: "mesh-test".into(),
        founders: (1..=founders).map(m).collect(),
        quorum,
    }
}

fn change(kind: OpKind, prev: Option<Cid>, who: u8, t: u64, signers: &[u8]) -> Operation {
    let keys: Vec<SigningKey> = signers.iter().map(|i| k(*i)).collect();
    let refs: Vec<&SigningKey> = keys.iter().collect();
    Operation::membership(kind, "mesh-test", prev, m(who), t, &refs).unwrap()
}

fn keys_of(l: &Ledger) -> Vec<u8> {
    let mut out: Vec<u8> = (1..=20u8)
        .filter(|i| l.members().iter().any(|x| x.key == public_of(&k(*i))))
        .collect();
    out.sort();
    out
}

#[test]
fn a_change_needs_a_strict_majority_of_the_members_at_its_parent() {
    // The genesis asks for 1 of 3: the ledger still wants 2.
    let mut l = Ledger::default().with_network(rules(3, 1));
    let one = change(OpKind::MemberAdd, None, 4, 10, &[1]);
    let err = l.validate(&one).unwrap_err();
    assert!(matches!(err, OpError::BadSignature(_)));
    assert!(err.to_string().contains("strict majority"), "{err}");
    let outsider = change(OpKind::MemberAdd, None, 4, 10, &[1, 9]);
    assert!(matches!(
        l.validate(&outsider),
        Err(OpError::BadSignature(_))
    ));
    let twice = change(OpKind::MemberAdd, None, 4, 10, &[1, 1]);
    assert!(l.validate(&twice).is_err());
    let other_net = Operation::membership(
        OpKind::MemberAdd,
        "mesh-else",
        None,
        m(4),
        10,
        &[&k(1), &k(2)],
    )
    .unwrap();
    assert!(l.validate(&other_net).is_err());

    let add = change(OpKind::MemberAdd, None, 4, 10, &[1, 2]);
    l.apply(add.clone()).unwrap();
    assert_eq!(keys_of(&l), vec![1, 2, 3, 4]);
    // Four members now: two signatures are no longer a majority.
    let rm2 = change(OpKind::MemberRemove, add.cid().ok(), 1, 11, &[4, 3]);
    assert!(matches!(l.validate(&rm2), Err(OpError::BadSignature(_))));
    let rm3 = change(OpKind::MemberRemove, add.cid().ok(), 1, 11, &[4, 3, 2]);
    l.apply(rm3).unwrap();
    assert_eq!(keys_of(&l), vec![2, 3, 4]);
}

#[test]
fn a_genesis_may_ask_for_more_than_a_majority() {
    let l = Ledger::default().with_network(rules(3, 3));
    let two = change(OpKind::MemberAdd, None, 4, 10, &[1, 2]);
    assert!(matches!(l.validate(&two), Err(OpError::BadSignature(_))));
    let three = change(OpKind::MemberAdd, None, 4, 10, &[1, 2, 3]);
    assert!(l.validate(&three).is_ok());
}

#[test]
fn reordered_or_dropped_cosignatures_are_the_same_op() {
    let mut l = Ledger::default().with_network(rules(5, 3));
    let add = change(OpKind::MemberAdd, None, 6, 10, &[1, 2, 3, 4]);
    l.apply(add.clone()).unwrap();
    let digest = (l.op_set_digest(), l.state_digest());
    let mut reordered = add.clone();
    reordered.cosigs.reverse();
    let mut dropped = add.clone();
    dropped.cosigs.pop();
    for twin in [reordered, dropped] {
        assert_eq!(
            twin.cid().unwrap(),
            add.cid().unwrap(),
            "cosigs are not in the CID"
        );
        assert!(l.apply(twin).unwrap().is_empty(), "nothing new");
    }
    assert_eq!((l.op_set_digest(), l.state_digest()), digest);
    assert_eq!(keys_of(&l), vec![1, 2, 3, 4, 5, 6]);
}

/// The scenario: node4 and node5 were added, then removed; they
/// sign "remove node1" on the op that added them.
fn added_then_removed() -> (Ledger, Cid, Vec<Operation>) {
    let mut l = Ledger::default().with_network(rules(3, 2));
    let add4 = change(OpKind::MemberAdd, None, 4, 10, &[1, 2]);
    let add5 = change(OpKind::MemberAdd, add4.cid().ok(), 5, 11, &[1, 2, 3]);
    let x = add5.cid().unwrap();
    let rm4 = change(OpKind::MemberRemove, Some(x), 4, 12, &[1, 2, 3]);
    let rm5 = change(OpKind::MemberRemove, rm4.cid().ok(), 5, 13, &[1, 2, 3]);
    let ops = vec![add4, add5, rm4, rm5];
    for op in &ops {
        l.apply(op.clone()).unwrap();
    }
    assert_eq!(keys_of(&l), vec![1, 2, 3]);
    (l, x, ops)
}

#[test]
fn removed_members_cannot_vote_themselves_back() {
    let (l, x, _) = added_then_removed();
    // Five members at X: two removed members are not a majority.
    for t in 12..40 {
        let attack = change(OpKind::MemberRemove, Some(x), 1, t, &[4, 5]);
        assert!(matches!(l.validate(&attack), Err(OpError::BadSignature(_))));
    }
}

#[test]
fn a_change_built_on_an_old_op_cannot_undo_what_came_after() {
    // Now they also hold node3's stolen key: a majority of the old set X.
    let (_, x, honest) = added_then_removed();
    let attacks: Vec<Operation> = (12..30)
        .map(|t| change(OpKind::MemberRemove, Some(x), 1, t, &[4, 5, 3]))
        .collect();
    let mut all = honest.clone();
    all.extend(attacks.iter().cloned());
    let mut outcomes = vec![];
    for order in [all.clone(), all.iter().rev().cloned().collect()] {
        let mut l = Ledger::default().with_network(rules(3, 2));
        let mut pending = order;
        // apply until nothing more commits (parents may come later)
        for _ in 0..3 {
            pending.retain(|op| l.apply(op.clone()).is_err());
        }
        assert!(l.membership_forked());
        let members = keys_of(&l);
        assert!(
            !members.contains(&4) && !members.contains(&5),
            "removed stay removed"
        );
        assert!(
            !members.contains(&3),
            "node3 signed both branches: evidence against it"
        );
        assert!(l
            .membership_evidence()
            .iter()
            .any(|e| e.member == public_of(&k(3))));
        assert!(!l
            .membership_evidence()
            .iter()
            .any(|e| e.member == public_of(&k(1))));
        outcomes.push((members, l.state_digest(), l.membership_head()));
    }
    assert_eq!(outcomes[0], outcomes[1]);
}

#[test]
fn shrinking_to_a_fragile_size_needs_force() {
    let mut l = Ledger::default().with_network(rules(3, 2));
    // 3 -> 2 members: with one key lost, 1 of 2 can never reach 2.
    let rm = change(OpKind::MemberRemove, None, 3, 10, &[1, 2]);
    let err = l.validate(&rm).unwrap_err();
    assert!(err.to_string().contains("force"), "{err}");
    let forced = Operation::membership_forced(
        OpKind::MemberRemove,
        "mesh-test",
        None,
        m(3),
        10,
        true,
        &[&k(1), &k(2)],
    )
    .unwrap();
    l.apply(forced.clone()).unwrap();
    assert_eq!(keys_of(&l), vec![1, 2]);
    // force is signed: stripping it gives another op that is refused
    let mut stripped = forced;
    stripped.force = false;
    assert!(l.validate(&stripped).is_err());
    // the last member can never be removed
    let mut l1 = Ledger::default().with_network(rules(1, 1));
    let last = Operation::membership_forced(
        OpKind::MemberRemove,
        "mesh-test",
        None,
        m(1),
        10,
        true,
        &[&k(1)],
    )
    .unwrap();
    assert!(l1.apply(last).is_err());
}

#[test]
fn membership_forks_resolve_the_same_in_any_order() {
    let a = change(OpKind::MemberAdd, None, 5, 10, &[1, 2]);
    let b = change(OpKind::MemberAdd, None, 6, 10, &[2, 3]);
    let mut outcomes = vec![];
    for order in [[&a, &b], [&b, &a]] {
        let mut l = Ledger::default().with_network(rules(3, 2));
        for op in order {
            l.apply(op.clone()).unwrap();
        }
        // neither addition is agreed by both branches; node2 equivocated
        assert_eq!(keys_of(&l), vec![1, 3]);
        assert_eq!(
            l.membership_head(),
            Some(a.cid().unwrap().min(b.cid().unwrap()))
        );
        outcomes.push((l.op_set_digest(), l.state_digest()));
    }
    assert_eq!(outcomes[0], outcomes[1]);
}

/// A member entry with ID-token keys (an RSA-2048 modulus and a P-256
/// key), as `didmesh-node member-entry` prints it.
fn with_token_keys(i: u8) -> Member {
    use base64::Engine as _;
    // RFC 7517 Appendix A.1's modulus: a real RSA-2048 public key.
    let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(n)
        .unwrap();
    let p256 = p256::ecdsa::SigningKey::from_slice(&[i; 32]).unwrap();
    m(i).with_token_keys(
        RsaPublicJwk::from_modulus(&n).unwrap(),
        P256Key::from_sec1(p256.verifying_key().to_encoded_point(true).as_bytes()).unwrap(),
    )
}

#[test]
fn a_member_add_carries_id_token_keys_to_the_member_set() {
    let mut l = Ledger::default().with_network(rules(3, 2));
    let who = with_token_keys(4);
    let add = Operation::membership(
        OpKind::MemberAdd,
        "mesh-test",
        None,
        who.clone(),
        10,
        &[&k(1), &k(2)],
    )
    .unwrap();
    // It travels in its canonical bytes and reads back to the same op.
    let bytes = add.canonical_bytes().unwrap();
    let (back, cid) = Operation::from_canonical_json(&bytes).unwrap();
    assert_eq!(cid, add.cid().unwrap());
    l.apply(back).unwrap();
    let held = l.members().iter().find(|x| x.key == who.key).unwrap();
    assert_eq!(held, &who);
    assert!(held.rsa.is_some() && held.p256.is_some());
    // An old-style entry (Ed25519 only) still makes the same op as before:
    // no rsa/p256 field in its bytes.
    let plain = change(OpKind::MemberAdd, None, 5, 10, &[1, 2]);
    let text = String::from_utf8(plain.canonical_bytes().unwrap()).unwrap();
    assert!(!text.contains("rsa") && !text.contains("p256"), "{text}");
}

#[test]
fn a_member_add_with_a_bad_token_key_is_refused_with_the_reason() {
    let add = Operation::membership(
        OpKind::MemberAdd,
        "mesh-test",
        None,
        with_token_keys(4),
        10,
        &[&k(1), &k(2)],
    )
    .unwrap();
    let good = serde_json::to_value(&add).unwrap();
    let refuse = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v = good.clone();
        edit(&mut v);
        let bytes = did_core::encoding::canonical_value(&v).unwrap();
        match Operation::from_canonical_json(&bytes) {
            Err(OpError::Malformed(reason)) => reason,
            other => panic!("accepted or refused for another reason: {other:?}"),
        }
    };
    // A 2040-bit modulus (one byte short).
    let short = refuse(&|v| {
        let n = v["member"]["rsa"]["n"].as_str().unwrap().to_string();
        v["member"]["rsa"]["n"] = n[..n.len() - 4].into();
    });
    assert!(short.contains("n must be 256 bytes"), "{short}");
    let top = refuse(&|v| {
        let n = v["member"]["rsa"]["n"].as_str().unwrap().to_string();
        v["member"]["rsa"]["n"] = format!("A{}", &n[1..]).into();
    });
    assert!(top.contains("top bit"), "{top}");
    let e3 = refuse(&|v| v["member"]["rsa"]["e"] = "Aw".into());
    assert!(e3.contains("AQAB"), "{e3}");
    // A compressed "point" whose x is not a field element.
    let not_a_point = refuse(&|v| {
        let mut raw = did_core::passkey::P256_PUB_MULTICODEC.to_vec();
        raw.push(0x02);
        raw.extend([0xff; 32]);
        v["member"]["p256"] = format!("z{}", bs58::encode(raw).into_string()).into();
    });
    assert!(
        not_a_point.contains("not a point on P-256"),
        "{not_a_point}"
    );
    let ed_key = refuse(&|v| v["member"]["p256"] = v["member"]["key"].clone());
    assert!(ed_key.contains("p256-pub"), "{ed_key}");
}
