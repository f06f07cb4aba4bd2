//! Signature checks of ops, one at a time or in batches.
//!
//! A [`SigVerified`] is proof that an op's signatures were checked on this
//! node: only this module makes one, and [`crate::Ledger::validate_verified`]
//! skips the signature check when given one that names the same op (CID and
//! signature bytes). So an op checked once at the door (gossip, a fetch, an
//! HTTP burst) is not checked again by the writer; the node spreads a
//! burst's [`verify_batch`] over all cores.
//!
//! **Batches (issue 12, item 1).** An op's signature rule is ZIP-215
//! ([`crate::PublicKey::verify_op`]), which has a batch form that accepts
//! exactly what single checks accept ([`crate::keys::verify_op_batch`]).
//! [`verify_batch`] checks a burst with one equation and, only when that
//! fails, each op alone to find the culprits: a batch with one forged op
//! refuses exactly that op. Until step 9 the rule was dalek's
//! `verify_strict`, whose cofactorless equation has no sound batch form: a
//! signature with a small-order component could pass a batch (1 time in 2
//! for order 2, and two of them can cancel out) while failing alone, so
//! nodes batching differently would disagree on the op set.
//! `tests/verify_op.rs` checks the rule and the batch against
//! ed25519-consensus on honest, forged and torsion-crafted signatures.

use crate::encoding::Cid;
use crate::keys::{signature_from_b64, verify_op_batch, PublicKey};
use crate::op::{Form, OpError, Operation};
use ed25519_dalek::Signature;
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

    /// The proof for `op`, whose signatures the caller just checked.
    fn of(op: &Operation, form: &Form) -> SigVerified {
        SigVerified {
            cid: form.cid,
            sigs: sig_digest(op),
        }
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
    Ok(SigVerified::of(op, form))
}

/// Checks many ops' signatures; one result per item, in order, each
/// exactly what [`verify_one`] gives. The single-signature ops are checked
/// together in one batch equation ([`verify_op_batch`]); membership ops
/// (several signatures, and rules on who signed) and any op whose
/// signature does not parse are checked alone, and so is every op of a
/// batch that fails. Each op counts once in [`verified_ops`].
pub fn verify_batch(items: &[(&Operation, &Form)]) -> Vec<Result<SigVerified, OpError>> {
    VERIFIED_OPS.fetch_add(items.len() as u64, Ordering::Relaxed);
    let mut batched = Vec::with_capacity(items.len());
    let mut batch: Vec<(&PublicKey, Signature, &[u8])> = Vec::with_capacity(items.len());
    for (i, (op, form)) in items.iter().enumerate() {
        if op.kind.is_membership() {
            continue;
        }
        if let Ok(sig) = signature_from_b64(&op.sig) {
            batched.push(i);
            batch.push((&op.signer, sig, form.signing_bytes.as_slice()));
        }
    }
    let all_good = batch.len() > 1 && verify_op_batch(&batch);
    let mut proven = batched.into_iter().peekable();
    items
        .iter()
        .enumerate()
        .map(|(i, (op, form))| {
            let in_batch = proven.next_if_eq(&i).is_some();
            if !(all_good && in_batch) {
                op.check_signature(&form.signing_bytes)?;
            }
            Ok(SigVerified::of(op, form))
        })
        .collect()
}
