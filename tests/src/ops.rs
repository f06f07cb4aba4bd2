//! Signed ops for tests: deterministic keys, creates, updates, DIDs with
//! rotation keys. Built with did-core's own constructors, so they are
//! exactly what a wallet would sign.

use crate::now;
use did_core::keys::public_of;
use did_core::op::did_from_genesis;
use did_core::{Cid, DidState, Operation};
use ed25519_dalek::SigningKey;

/// A deterministic key for DID number `i` of stream `seed`.
pub fn key(seed: u8, i: u32) -> SigningKey {
    let mut s = [seed; 32];
    s[..4].copy_from_slice(&i.to_le_bytes());
    SigningKey::from_bytes(&s)
}

/// The CID of an op.
pub fn cid(op: &Operation) -> Cid {
    op.cid().unwrap_or_else(|e| panic!("{e}"))
}

/// A document whose authentication key is `auth` and whose rotation keys
/// are `rotation`, highest priority first.
pub fn state(rotation: &[&SigningKey], auth: &SigningKey) -> DidState {
    let mut s = DidState::single_key(public_of(auth));
    s.rotation_keys = rotation.iter().map(|k| public_of(k)).collect();
    s
}

/// A signed `create` for `key` (its only key), with its DID.
pub fn create_op(key: &SigningKey) -> (Operation, String) {
    create(DidState::single_key(public_of(key)), key)
}

/// A signed `create` of `state` by `signer`, with its DID.
pub fn create(state: DidState, signer: &SigningKey) -> (Operation, String) {
    let op = Operation::create(state, now(), signer).unwrap_or_else(|e| panic!("{e}"));
    let did = did_from_genesis(&cid(&op));
    (op, did)
}

/// A signed `update` of `did` on `prev` by `key`, the key's single-key
/// document plus an alias (so two updates with other aliases conflict).
pub fn update_op(key: &SigningKey, did: &str, prev: Cid, alias: &str) -> Operation {
    let mut state = DidState::single_key(public_of(key));
    state.also_known_as.push(alias.to_string());
    Operation::update(did, prev, state, now(), key).unwrap_or_else(|e| panic!("{e}"))
}

/// `count` creates then one update each (2 * count ops) for stream `seed`.
pub fn create_and_update_ops(seed: u8, count: u32) -> (Vec<Operation>, Vec<Operation>) {
    let mut creates = vec![];
    let mut updates = vec![];
    for i in 0..count {
        let k = key(seed, i);
        let (c, did) = create_op(&k);
        updates.push(update_op(
            &k,
            &did,
            cid(&c),
            &format!("at://s{seed}-u{i}.example"),
        ));
        creates.push(c);
    }
    (creates, updates)
}
