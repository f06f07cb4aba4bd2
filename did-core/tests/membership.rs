//! Membership ops: quorum signatures of current members, order independence.

use did_core::keys::public_of;
use did_core::ledger::Ledger;
use did_core::member::{Member, NetworkRules};
use did_core::op::{OpError, OpKind, Operation};
use ed25519_dalek::SigningKey;

fn k(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}

fn rules() -> NetworkRules {
    NetworkRules {
        network_id: "mesh-test".into(),
        founders: (1..=3)
            .map(|i| Member::from_key(&format!("node{i}"), public_of(&k(i))))
            .collect(),
        quorum: 2,
    }
}

#[test]
fn quorum_of_current_members_is_required() {
    let mut l = Ledger::default().with_network(rules());
    let newcomer = Member::from_key("node4", public_of(&k(4)));
    let one = Operation::membership(
        OpKind::MemberAdd,
        "mesh-test",
        None,
        newcomer.clone(),
        10,
        &[&k(1)],
    )
    .unwrap();
    assert!(matches!(l.validate(&one), Err(OpError::BadSignature(_))));
    let outsider = Operation::membership(
        OpKind::MemberAdd,
        "mesh-test",
        None,
        newcomer.clone(),
        10,
        &[&k(1), &k(9)],
    )
    .unwrap();
    assert!(matches!(
        l.validate(&outsider),
        Err(OpError::BadSignature(_))
    ));
    let twice = Operation::membership(
        OpKind::MemberAdd,
        "mesh-test",
        None,
        newcomer.clone(),
        10,
        &[&k(1), &k(1)],
    )
    .unwrap();
    assert!(l.validate(&twice).is_err());
    let other_net = Operation::membership(
        OpKind::MemberAdd,
        "mesh-else",
        None,
        newcomer.clone(),
        10,
        &[&k(1), &k(2)],
    )
    .unwrap();
    assert!(l.validate(&other_net).is_err());

    let add = Operation::membership(
        OpKind::MemberAdd,
        "mesh-test",
        None,
        newcomer.clone(),
        10,
        &[&k(1), &k(2)],
    )
    .unwrap();
    l.apply(add.clone()).unwrap();
    assert_eq!(l.members().len(), 4);
    assert!(l.members().contains(&newcomer));

    // the new member now counts towards the quorum
    let removed = Member::from_key("node1", public_of(&k(1)));
    let rm = Operation::membership(
        OpKind::MemberRemove,
        "mesh-test",
        add.cid().ok(),
        removed.clone(),
        11,
        &[&k(4), &k(3)],
    )
    .unwrap();
    l.apply(rm).unwrap();
    assert_eq!(l.members().len(), 3);
    assert!(!l.members().contains(&removed));
}

#[test]
fn membership_forks_resolve_the_same_in_any_order() {
    let a = Operation::membership(
        OpKind::MemberAdd,
        "mesh-test",
        None,
        Member::from_key("a", public_of(&k(5))),
        10,
        &[&k(1), &k(2)],
    )
    .unwrap();
    let b = Operation::membership(
        OpKind::MemberAdd,
        "mesh-test",
        None,
        Member::from_key("b", public_of(&k(6))),
        10,
        &[&k(2), &k(3)],
    )
    .unwrap();
    let winner = a.cid().unwrap().min(b.cid().unwrap());
    let mut digests = vec![];
    for order in [[&a, &b], [&b, &a]] {
        let mut l = Ledger::default().with_network(rules());
        for op in order {
            l.apply(op.clone()).unwrap();
        }
        assert_eq!(l.membership_head(), Some(winner));
        assert_eq!(l.members().len(), 4);
        digests.push((l.op_set_digest(), l.state_digest()));
    }
    assert_eq!(digests[0], digests[1]);
}
