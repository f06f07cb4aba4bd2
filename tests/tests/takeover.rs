//! Takeover attempts against real nodes, with nothing but HTTP, as an
//! attacker would try them (SECURITY.md, "Key compromise" and
//! "Membership"). Each one worked against protocol v1:
//!
//! * a thief holding a rotated-out key grinds `created_at` until its update
//!   on the rotation's parent has the lower CID and takes the DID over;
//! * re-submitting a membership op with its co-signatures reordered makes a
//!   "twin" with another CID that undoes later membership changes;
//! * removed members sign a change on top of the op that added them.

use did_core::keys::public_of;
use did_core::member::Member;
use did_core::op::{OpKind, Operation};
use didmesh_tests::cluster::{init_network, Cluster};
use didmesh_tests::http::{blocking_client, Answer, BlockingClient};
use didmesh_tests::login::LoginError;
use didmesh_tests::ops::state;
use didmesh_tests::{node_admin, now, poll, start_node};
use ed25519_dalek::SigningKey;
use serde_json::Value;
use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

fn submit(c: &BlockingClient, url: &str, op: &Operation) -> (u16, Value) {
    let Answer { status, body } = c.submit(url, op);
    (status, body)
}

/// A login through the client library: the status, and the node's error
/// code when it refused.
fn login(c: &BlockingClient, url: &str, did: &str, key: &SigningKey) -> (u16, Option<String>) {
    match c.login(url, did, key) {
        Ok(_) => (200, None),
        Err(LoginError::Refused { status, error, .. }) => (status, Some(error)),
        Err(e) => panic!("login at {url}: {e}"),
    }
}

#[test]
fn a_thief_with_a_rotated_out_key_cannot_take_the_did_on_any_node() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(&tmp.path().join("net"), 2, &[]);
    let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let urls = cluster.urls();
    let c = blocking_client();

    // Recovery key R (priority 0, offline) and daily key K (priority 1).
    let (r, k, n, thief) = (
        SigningKey::from_bytes(&[41; 32]),
        SigningKey::from_bytes(&[42; 32]),
        SigningKey::from_bytes(&[43; 32]),
        SigningKey::from_bytes(&[66; 32]),
    );
    let t0 = now();
    let create = Operation::create(state(&[&r, &k], &k), t0, &k).unwrap();
    let g = create.cid().unwrap();
    let did = did_core::op::did_from_genesis(&g);
    assert_eq!(submit(&c, &n1.url, &create).0, 201);
    // The owner rotates K -> N with K, as `didmesh did rotate` does.
    let rotate = Operation::update(&did, g, state(&[&r, &n], &n), t0 + 1, &k).unwrap();
    assert_eq!(submit(&c, &n1.url, &rotate).0, 201);
    cluster.wait_converged(Duration::from_secs(20)).unwrap();
    assert_eq!(login(&c, &n2.url, &did, &n).0, 200, "owner logs in with N");

    // The thief, holding the old K, grinds updates on the same parent at
    // the other node.
    for i in 0..20 {
        let attack = Operation::update(&did, g, state(&[&thief], &thief), t0 + 1 + i, &k).unwrap();
        let (status, body) = submit(&c, &n2.url, &attack);
        assert!(status == 201 || status == 200, "{status} {body}");
    }
    cluster.wait_converged(Duration::from_secs(20)).unwrap();
    for &url in &urls {
        let (status, error) = login(&c, url, &did, &thief);
        assert_eq!(status, 403, "thief at {url}: {error:?}");
        assert_eq!(error.as_deref(), Some("did_disputed"));
        let res = c.resolve(url, &did);
        assert_eq!(res.status, 409, "{}", res.body);
        assert!(
            res.body["didDocumentMetadata"]["disputed"]["conflictingOps"]
                .as_array()
                .is_some_and(|a| a.len() == 21)
        );
        assert!(
            res.body["didDocument"]["authentication"].is_null(),
            "no keys while disputed"
        );
    }

    // The owner reacts with R on the genesis: settled everywhere.
    let fresh = SigningKey::from_bytes(&[44; 32]);
    let reaction = Operation::update(&did, g, state(&[&r, &fresh], &fresh), t0 + 30, &r).unwrap();
    assert_eq!(submit(&c, &n1.url, &reaction).0, 201);
    // and the thief keeps trying afterwards
    let late = Operation::update(&did, g, state(&[&thief], &thief), t0 + 31, &k).unwrap();
    submit(&c, &n2.url, &late);
    cluster.wait_converged(Duration::from_secs(20)).unwrap();
    for &url in &urls {
        assert_eq!(login(&c, url, &did, &fresh).0, 200, "owner at {url}");
        assert_eq!(login(&c, url, &did, &thief).0, 401, "thief at {url}");
        assert_eq!(login(&c, url, &did, &n).0, 401, "N was rotated away by R");
    }
}

fn member_key(dir: &Path) -> SigningKey {
    didmesh_node::identity::load_or_create_member_key(dir).unwrap()
}

#[test]
fn removed_members_and_cosignature_twins_cannot_undo_membership() {
    let tmp = tempfile::tempdir().unwrap();
    let net = tmp.path().join("net");
    let dirs = init_network(&net, 3);
    let node = start_node(&dirs[0], &["--no-p2p"]);
    let c = blocking_client();
    let extra: Vec<_> = (4..=5)
        .map(|i| {
            let out = tmp.path().join(format!("extra{i}"));
            init_network(&out, 1);
            out.join("node1")
        })
        .collect();
    let change = |kind: &str, member: &Path, name: &str, signers: &[&Path]| {
        let os = OsStr::new;
        let mut args = vec![os(kind), os("--node"), os(&node.url)];
        args.extend([os("--member"), member.as_os_str(), os("--name"), os(name)]);
        for s in signers {
            args.extend([os("--sign-with"), s.as_os_str()]);
        }
        node_admin(&args)
    };
    let (n1, n2, n3) = (&dirs[0], &dirs[1], &dirs[2]);
    assert!(change("member-add", &extra[0], "node4", &[n1, n2]).0);
    // four members now: two signatures are not a majority
    let (ok, text) = change("member-add", &extra[1], "node5", &[n1, n2]);
    assert!(!ok && text.contains("strict majority"), "{text}");
    let (ok, text) = change("member-add", &extra[1], "node5", &[n1, n2, n3]);
    assert!(ok, "{text}");
    let network = c
        .get_json(&format!("{}/v1/network", node.url))
        .unwrap()
        .body;
    let x: did_core::Cid =
        did_core::Cid::parse(network["membership_head"].as_str().unwrap()).unwrap();
    assert!(change("member-remove", &extra[0], "node4", &[n1, n2, n3]).0);
    assert!(change("member-remove", &extra[1], "node5", &[n1, n2, n3]).0);
    assert_eq!(c.jwks_len(&node.url), 3);
    let before = c.status(&node.url);

    // Removed node4 and node5 sign "remove node1" on the op that added
    // node5, grinding created_at: never a majority of the 5 members there.
    let (k4, k5) = (member_key(&extra[0]), member_key(&extra[1]));
    let node1 = Member::from_key("node1", public_of(&member_key(n1)));
    for t in 0..10 {
        let attack = Operation::membership(
            OpKind::MemberRemove,
            network["network_id"].as_str().unwrap(),
            Some(x),
            node1.clone(),
            now() + t,
            &[&k4, &k5],
        )
        .unwrap();
        let (status, body) = submit(&c, &node.url, &attack);
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "bad_signature", "{body}");
    }

    // Twins: the last removal re-submitted with its co-signatures reordered
    // or one dropped is the same op (same CID), not a new branch.
    let log_head = c
        .get_json(&format!("{}/v1/network", node.url))
        .unwrap()
        .body["membership_head"]
        .clone();
    let removal = Operation::membership(
        OpKind::MemberRemove,
        network["network_id"].as_str().unwrap(),
        did_core::Cid::parse(log_head.as_str().unwrap()).ok(),
        Member::from_key("nodeX", public_of(&member_key(n3))),
        now(),
        &[&member_key(n1), &member_key(n2), &member_key(n3)],
    );
    // (refused: 3 -> 2 members would freeze membership on one lost key)
    let (status, body) = submit(&c, &node.url, &removal.unwrap());
    assert!(
        status >= 400 && body["reason"].as_str().unwrap_or("").contains("force"),
        "{status} {body}"
    );
    let add6_dir = {
        let out = tmp.path().join("extra6");
        init_network(&out, 1);
        out.join("node1")
    };
    let mut add6 = Operation::membership(
        OpKind::MemberAdd,
        network["network_id"].as_str().unwrap(),
        did_core::Cid::parse(log_head.as_str().unwrap()).ok(),
        Member::from_key("node6", public_of(&member_key(&add6_dir))),
        now(),
        &[&member_key(n1), &member_key(n2), &member_key(n3)],
    )
    .unwrap();
    assert_eq!(submit(&c, &node.url, &add6).0, 201);
    add6.cosigs.reverse();
    assert_eq!(
        submit(&c, &node.url, &add6).0,
        200,
        "the same op, already held"
    );
    add6.cosigs.pop();
    assert_eq!(
        submit(&c, &node.url, &add6).0,
        200,
        "the same op, already held"
    );
    let after = poll(Duration::from_secs(5), Duration::from_millis(100), || {
        let s = c.status(&node.url);
        (s["op_count"] != before["op_count"]).then_some(s)
    })
    .unwrap();
    assert_eq!(
        after["op_count"].as_u64(),
        before["op_count"].as_u64().map(|n| n + 1)
    );
    assert_eq!(
        c.jwks_len(&node.url),
        4,
        "node1..3 and node6, never node4/node5"
    );

    // Now they also hold node3's key (stolen): with it they are a majority
    // of the five members at X, and their change on X is valid — a fork.
    // It cannot bring node4/node5 back, and node3 signed both sides.
    let k3 = member_key(n3);
    let attack = Operation::membership(
        OpKind::MemberRemove,
        network["network_id"].as_str().unwrap(),
        Some(x),
        node1,
        now(),
        &[&k4, &k5, &k3],
    )
    .unwrap();
    assert_eq!(submit(&c, &node.url, &attack).0, 201);
    let forked = c
        .get_json(&format!("{}/v1/network", node.url))
        .unwrap()
        .body;
    assert_eq!(forked["membership_forked"], true, "{forked}");
    let member_keys: Vec<&str> = forked["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].as_str().unwrap())
        .collect();
    for (who, key) in [("node4", &k4), ("node5", &k5), ("node3", &k3)] {
        let key = public_of(key).to_string();
        assert!(
            !member_keys.contains(&key.as_str()),
            "{who} is no member: {forked}"
        );
    }
    let node3_key = public_of(&k3).to_string();
    assert!(
        forked["equivocations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["member"] == node3_key.as_str()),
        "evidence against node3: {forked}"
    );
    assert_eq!(c.jwks_len(&node.url), member_keys.len());
}
