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
        key_overlap_secs: did_core::member::DEFAULT_KEY_OVERLAP_SECS,
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

/// The issue's scenario: node4 and node5 were added, then removed; they
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

// ---- member-rotate and member-revoke (step 10) ----

/// Founders 1..=3 with ID-token keys, overlap `overlap` seconds.
fn keyed_rules(overlap: u64) -> NetworkRules {
    NetworkRules {
        network_id: "mesh-test".into(),
        founders: (1..=3).map(with_token_keys).collect(),
        quorum: 2,
        key_overlap_secs: overlap,
    }
}

/// Another RSA-2048-shaped modulus (the ledger checks shape, not primes).
fn other_rsa(seed: u8) -> RsaPublicJwk {
    let mut n = vec![0xc5u8; 256];
    n[100] = seed;
    n[255] = 0x01;
    RsaPublicJwk::from_modulus(&n).unwrap()
}

fn p256_of(seed: u8) -> P256Key {
    let key = p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap();
    P256Key::from_sec1(key.verifying_key().to_encoded_point(true).as_bytes()).unwrap()
}

/// Member `who`'s entry with all three keys replaced by those of `seed`,
/// keeping its node_did.
fn rotated(who: u8, seed: u8) -> Member {
    Member {
        name: format!("node{who}"),
        node_did: public_of(&k(who)).did_key(),
        key: public_of(&k(seed)),
        rsa: Some(other_rsa(seed)),
        p256: Some(p256_of(seed)),
    }
}

fn rotate(prev: Option<Cid>, entry: Member, t: u64, signers: &[u8]) -> Operation {
    let keys: Vec<SigningKey> = signers.iter().map(|i| k(*i)).collect();
    let refs: Vec<&SigningKey> = keys.iter().collect();
    Operation::membership(OpKind::MemberRotate, "mesh-test", prev, entry, t, &refs).unwrap()
}

fn entry_of(l: &Ledger, who: u8) -> Option<&Member> {
    let id = public_of(&k(who)).did_key();
    l.members().iter().find(|m| m.node_did == id)
}

#[test]
fn a_rotation_needs_a_quorum_and_keeps_the_member_id() {
    let mut l = Ledger::default().with_network(keyed_rules(3600));
    // A lone member (or one stolen member key) rotates neither its own
    // keys nor another member's.
    for signers in [&[1u8][..], &[2], &[11]] {
        let err = l.validate(&rotate(None, rotated(1, 11), 100, signers));
        assert!(matches!(err, Err(OpError::BadSignature(_))), "{err:?}");
    }
    // A key that is no member's cannot stand in for a cosigner either.
    let err = l.validate(&rotate(None, rotated(1, 11), 100, &[1, 11]));
    assert!(matches!(err, Err(OpError::BadSignature(_))), "{err:?}");
    let op = rotate(None, rotated(1, 11), 100, &[1, 2]);
    l.apply(op.clone()).unwrap();
    let now = entry_of(&l, 1).expect("node1 is still a member, by its node_did");
    assert_eq!(now, &rotated(1, 11));
    assert_eq!(l.members().len(), 3);
    assert!(!l.members().iter().any(|m| m.key == public_of(&k(1))));
    let retired = l.retired_member_keys();
    assert_eq!(retired.len(), 1);
    assert_eq!(retired[0].entry, with_token_keys(1));
    assert_eq!(retired[0].retired_at, 100);
    // The retired key signs nothing any more, even with a quorum partner.
    let head = op.cid().ok();
    let add = change(OpKind::MemberAdd, head, 4, 101, &[1, 2]);
    let err = l.validate(&add).unwrap_err().to_string();
    assert!(err.contains("retired"), "{err}");
    // The new key does.
    l.apply(change(OpKind::MemberAdd, head, 4, 101, &[11, 2]))
        .unwrap();
    assert_eq!(l.members().len(), 4);
}

#[test]
fn an_old_rotation_replayed_or_rebuilt_never_brings_an_old_key_back() {
    let mut l = Ledger::default().with_network(keyed_rules(3600));
    let first = rotate(None, rotated(1, 11), 100, &[1, 2]);
    l.apply(first.clone()).unwrap();
    let second = rotate(first.cid().ok(), rotated(1, 12), 200, &[11, 2]);
    l.apply(second.clone()).unwrap();
    let digest = l.state_digest();
    // The same op again is the same CID: already held, nothing changes.
    l.apply(first.clone()).unwrap();
    assert_eq!(l.state_digest(), digest);
    assert_eq!(entry_of(&l, 1).unwrap().key, public_of(&k(12)));
    // Rotating back to a retired key is refused, even by a full quorum.
    let mut back = with_token_keys(1);
    back.key = public_of(&k(11));
    let err = l
        .validate(&rotate(second.cid().ok(), back, 300, &[12, 2, 3]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("held or was held"), "{err}");
    let back_rsa = Member {
        rsa: Some(other_rsa(11)),
        ..rotated(1, 13)
    };
    let err = l
        .validate(&rotate(second.cid().ok(), back_rsa, 300, &[12, 2]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("RSA"), "{err}");
    // The first rotation re-signed on the genesis by the old keys (a
    // thief holding keys 1 and 2 from before): a fork, which only shrinks
    // the set; key 1 never counts again.
    let rebuilt = rotate(None, rotated(1, 14), 150, &[1, 2]);
    l.apply(rebuilt).unwrap();
    assert!(l.membership_forked());
    assert!(!l
        .members()
        .iter()
        .any(|m| m.key == public_of(&k(1)) || m.key == public_of(&k(14))));
    // No rotation applies to a member that is not there.
    let err = l
        .validate(&rotate(second.cid().ok(), rotated(9, 15), 300, &[12, 2]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a member"), "{err}");
    // Nor one that changes nothing, nor one that drops a key kind.
    let err = l
        .validate(&rotate(second.cid().ok(), rotated(1, 12), 300, &[12, 2]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nothing to rotate"), "{err}");
    let dropped = Member {
        rsa: None,
        ..rotated(1, 16)
    };
    let err = l
        .validate(&rotate(second.cid().ok(), dropped, 300, &[12, 2]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("never drops"), "{err}");
}

#[test]
fn retired_keys_are_listed_until_the_window_ends_and_leave_with_a_removal() {
    let mut l = Ledger::default().with_network(keyed_rules(5));
    assert_eq!(l.key_overlap_secs(), 5);
    let op = rotate(None, rotated(2, 12), 1_000, &[1, 2]);
    l.apply(op.clone()).unwrap();
    let retired = l.retired_member_keys().to_vec();
    assert_eq!(retired.len(), 1);
    assert_eq!(retired[0].retires(l.key_overlap_secs()), 1_005);
    assert_eq!(retired[0].node_did, public_of(&k(2)).did_key());
    // Removal for cause: the member and its retired keys leave at once.
    let rm = Operation::membership_forced(
        OpKind::MemberRemove,
        "mesh-test",
        op.cid().ok(),
        rotated(2, 12),
        1_001,
        true,
        &[&k(1), &k(3)],
    )
    .unwrap();
    l.apply(rm).unwrap();
    assert!(entry_of(&l, 2).is_none());
    assert!(l.retired_member_keys().is_empty());
}

#[test]
fn a_pre_id_token_member_puts_rsa_and_p256_keys_on_the_ledger_by_rotation() {
    let mut l = Ledger::default().with_network(rules(3, 2));
    let full = with_token_keys(1);
    let op = rotate(None, full.clone(), 50, &[1, 2]);
    l.apply(op).unwrap();
    assert_eq!(entry_of(&l, 1), Some(&full));
    // The Ed25519 key stayed: the retired entry replaced nothing a
    // verifier would drop.
    let r = &l.retired_member_keys()[0];
    let replaced = r.replaced(&full);
    assert!(replaced.rsa.is_none() && replaced.p256.is_none());
    assert_eq!(replaced.key, full.key);
}

#[test]
fn member_revoke_needs_a_quorum_keeps_the_latest_before_and_forks_nothing() {
    use did_core::member::MemberRevocation;
    let mut l = Ledger::default().with_network(keyed_rules(3600));
    let did = "did:mesh:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_string();
    let revoke = |before: u64, t: u64, signers: &[u8]| {
        let keys: Vec<SigningKey> = signers.iter().map(|i| k(*i)).collect();
        let refs: Vec<&SigningKey> = keys.iter().collect();
        Operation::member_revoke(
            "mesh-test",
            None,
            MemberRevocation {
                did: did.clone(),
                before,
            },
            t,
            &refs,
        )
        .unwrap()
    };
    let lone = l.validate(&revoke(90, 100, &[1]));
    assert!(matches!(lone, Err(OpError::BadSignature(_))), "{lone:?}");
    let outsider = l.validate(&revoke(90, 100, &[1, 9]));
    assert!(matches!(outsider, Err(OpError::BadSignature(_))));
    let future = l.validate(&revoke(101, 100, &[1, 2])).unwrap_err();
    assert!(future.to_string().contains("before"), "{future}");
    assert_eq!(l.member_revocation(&did), None);
    l.apply(revoke(90, 100, &[1, 2])).unwrap();
    // A second one on the same parent, with overlapping signers: no
    // equivocation (a revocation changes no member set) and the max wins.
    l.apply(revoke(80, 110, &[2, 3])).unwrap();
    l.apply(revoke(95, 120, &[1, 3])).unwrap();
    assert_eq!(l.member_revocation(&did), Some(95));
    assert!(l.membership_evidence().is_empty());
    assert!(!l.membership_forked());
    assert_eq!(l.members().len(), 3);
    // It is no node of the membership tree.
    let on_revoke = change(
        OpKind::MemberAdd,
        revoke(95, 120, &[1, 3]).cid().ok(),
        4,
        130,
        &[1, 2],
    );
    assert!(l.validate(&on_revoke).is_err());
    // member-revoke carries a revoke and nothing else; other kinds never do.
    let mut v = serde_json::to_value(revoke(95, 120, &[1, 3])).unwrap();
    v["type"] = "member-add".into();
    let bytes = did_core::encoding::canonical_value(&v).unwrap();
    let (op, _) = Operation::from_canonical_json(&bytes).unwrap();
    let err = l.validate(&op).unwrap_err();
    assert!(matches!(err, OpError::Invalid(_)), "{err:?}");
}

#[test]
fn rotations_and_revocations_resolve_the_same_in_any_order() {
    use did_core::member::MemberRevocation;
    let a = rotate(None, rotated(1, 11), 100, &[1, 2]);
    let b = rotate(a.cid().ok(), rotated(3, 13), 110, &[11, 3]);
    let c = Operation::member_revoke(
        "mesh-test",
        b.cid().ok(),
        MemberRevocation {
            did: "did:mesh:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".into(),
            before: 115,
        },
        120,
        &[&k(11), &k(13)],
    )
    .unwrap();
    let d = change(OpKind::MemberAdd, b.cid().ok(), 4, 130, &[11, 13]);
    let ops = [a, b, c, d];
    let mut outcomes = vec![];
    for order in [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]] {
        let mut l = Ledger::default().with_network(keyed_rules(3600));
        for i in order {
            l.apply(ops[i].clone()).unwrap();
        }
        assert_eq!(l.members().len(), 4);
        outcomes.push((
            l.state_digest(),
            l.members().to_vec(),
            l.retired_member_keys().to_vec(),
            l.member_revocation("did:mesh:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
        ));
    }
    assert!(outcomes.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn the_overlap_rule_keeps_old_genesis_bytes_and_is_covered_by_the_id() {
    use did_core::network::Genesis;
    let founders: Vec<Member> = (1..=3).map(m).collect();
    let plain = Genesis::new("https://i", founders.clone(), 2, 7).unwrap();
    let text = serde_json::to_string(&plain).unwrap();
    assert!(!text.contains("key_overlap_secs"), "{text}");
    assert_eq!(plain.rules().key_overlap_secs, 3600);
    let short = Genesis::with_overlap("https://i", founders, 2, 7, 5).unwrap();
    assert_ne!(short.network_id, plain.network_id);
    let text = serde_json::to_string(&short).unwrap();
    let back: Genesis = serde_json::from_str(&text).unwrap();
    assert_eq!(back, short);
    assert_eq!(back.check(), Ok(()));
    assert_eq!(back.rules().key_overlap_secs, 5);
    let mut tampered = short.clone();
    tampered.key_overlap_secs = 1_000_000;
    assert!(tampered.check().is_err());
}

/// The wire shape of the two new kinds, pinned (other implementations
/// build these bytes): canonical JSON, `revoke` only on member-revoke, and
/// the CIDs of fixed ops. Ops of the older kinds carry no new field.
#[test]
fn rotate_and_revoke_ops_have_a_fixed_canonical_form() {
    use did_core::member::MemberRevocation;
    let rot = Operation::membership(
        OpKind::MemberRotate,
        "mesh-test",
        None,
        rotated(1, 11),
        1_790_000_000,
        &[&k(1), &k(2)],
    )
    .unwrap();
    let text = String::from_utf8(rot.canonical_bytes().unwrap()).unwrap();
    assert!(text.contains(r#""type":"member-rotate""#), "{text}");
    assert!(!text.contains("revoke"), "{text}");
    let rev = Operation::member_revoke(
        "mesh-test",
        None,
        MemberRevocation {
            did: "did:mesh:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into(),
            before: 1_789_999_000,
        },
        1_790_000_000,
        &[&k(1), &k(2)],
    )
    .unwrap();
    let text = String::from_utf8(rev.canonical_bytes().unwrap()).unwrap();
    assert!(
        text.contains(
            r#""revoke":{"before":1789999000,"did":"did:mesh:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#
        ),
        "{text}"
    );
    assert!(text.contains(r#""type":"member-revoke""#) && !text.contains(r#""member""#));
    let add = change(OpKind::MemberAdd, None, 4, 10, &[1, 2]);
    assert!(!String::from_utf8(add.canonical_bytes().unwrap())
        .unwrap()
        .contains("revoke"));
    assert_eq!(rot.cid().unwrap().to_string(), ROTATE_CID);
    assert_eq!(rev.cid().unwrap().to_string(), REVOKE_CID);
}

const ROTATE_CID: &str = "bafkr4idku273tbgwt6tygpixysxu4x3uskbk35tl4cd2q23nna7gtn46pu";
const REVOKE_CID: &str = "bafkr4ih2o7tzyzxoqrcgkbfjh6pzzfeimfufvjurcq44cirsjewaalk2j4";
