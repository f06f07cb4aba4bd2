//! Signature checks of ops, one at a time or in batches.
//!
//! A [`SigVerified`] is proof that an op's signatures were checked on this
//! node: only this module makes one, and [`crate::Ledger::validate_verified`]
//! skips the signature check when given one that names the same op (CID and
//! signature bytes). So an op checked once at the door (gossip, a fetch, an
//! HTTP burst) is not checked again by the writer; the node spreads a
//! burst's [`verify_batch`] over all cores.
//!
//! **Why [`verify_batch`] does not use ed25519-dalek's `verify_batch`
//! (issue 12, item 1).** The decisive rule for an op's signature is dalek's
//! `verify_strict` ([`crate::PublicKey::verify`]): it refuses small-order
//! keys and R, a non-canonical s, and checks the cofactorless equation
//! `R = [s]B - [H]A` byte for byte. dalek's batch equation is cofactorless
//! too, but its weights are derived from the batch itself (no secret
//! randomness). A signature whose key or R carries a small-order
//! component fails `verify_strict`, yet passes a batch whenever its weight
//! is a multiple of that component's order (1 time in 2 for order 2, and
//! the weight can be ground offline), and two such signatures in one batch
//! can cancel each other out. A node batching would then accept ops that
//! every other node refuses: a ledger split, and honest forwarders
//! penalized for ops they passed on. Ruling that out needs a per-signature
//! subgroup check of R and of a new key, each costing about one
//! verification, which eats the batch's gain: measured here (release,
//! 2 cores shared) raw `verify_batch` costs 19–33 us per signature against
//! 57–66 us single (2.2–3.5x), but with the checks that make it agree with
//! `verify_strict` 74–130 us (0.5–0.9x). `tests/verify_batch.rs`
//! (`--ignored`) prints these figures. Batching becomes sound and free
//! once ops are valid under the cofactored equation (ZIP-215): then a
//! batch that passes implies every op passes, and a batch that fails is
//! checked one by one. That is a protocol change (every node must move at
//! once) left to a decision; until then a batch is checked op by op, and
//! the gain comes from checking each op once, on all cores.

use crate::encoding::Cid;
use crate::op::{Form, OpError, Operation};
use std::sync::atomic::{AtomicU64, Ordering};

/// Ops whose signatures this process checked, for the node's
/// `didmesh_sig_verifications_total`, so a test can assert that no op is
/// verified twice.
static VERIFIED_OPS: AtomicU64 = AtomicU64::new(0);

/// How many ops' signatures this process has checked.
pub fn verified_ops() -> u64 {
    VERIFIED_OPS.load(Ordering::Relaxed)
}

/// Proof that `op`'s signatures verified (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigVerified {
    cid: Cid,
    /// blake3 of `sig` and every co-signature: a different signature over
    /// the same body is a different op for this proof.
    sigs: [u8; 32],
}

impl SigVerified {
    pub fn cid(&self) -> Cid {
        self.cid
    }

    /// Whether this proof is for `op` with canonical form `form`.
    pub fn covers(&self, op: &Operation, form: &Form) -> bool {
        self.cid == form.cid && self.sigs == sig_digest(op)
    }
}

fn sig_digest(op: &Operation) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(op.sig.as_bytes());
    for c in &op.cosigs {
        h.update(&[0]);
        h.update(c.signer.to_string().as_bytes());
        h.update(&[0]);
        h.update(c.sig.as_bytes());
    }
    *h.finalize().as_bytes()
}

/// Checks one op's signatures.
pub fn verify_one(op: &Operation, form: &Form) -> Result<SigVerified, OpError> {
    VERIFIED_OPS.fetch_add(1, Ordering::Relaxed);
    op.check_signature(&form.signing_bytes)?;
    Ok(SigVerified {
        cid: form.cid,
        sigs: sig_digest(op),
    })
}

/// Checks many ops' signatures; one result per item, in order, each
/// exactly what [`verify_one`] gives (see the module doc for why this is
/// not dalek's batch equation yet).
pub fn verify_batch(items: &[(&Operation, &Form)]) -> Vec<Result<SigVerified, OpError>> {
    items
        .iter()
        .map(|(op, form)| verify_one(op, form))
        .collect()
}
