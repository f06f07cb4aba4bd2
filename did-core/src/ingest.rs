//! Whether bytes from a peer are an acceptable op: the verdict logic of
//! replication, with no network, clock or disk (`now` is passed in), so the
//! node's gossip validator, its anti-entropy fetches and the replication
//! simulation (`tests/sync_simulation.rs`) all judge with the same code.
//!
//! A peer sends an op as its canonical bytes (PROTOCOL.md, "Sync wire
//! format"). Checks run cheapest first:
//!
//! 1. **size** — at most [`Limits::max_op_bytes`], before parsing;
//! 2. **canonical parse** — the bytes must be the op's canonical encoding
//!    ([`Operation::from_canonical_json`]): another encoding of a valid op
//!    would be a second gossip message (another message id) for one op;
//! 3. **clock** — [`crate::op::check_clock`]: an op from the future may be
//!    valid by the sender's clock, so it is left for later, not refused;
//! 4. **ledger** — held already (*known*), valid against its parent
//!    (*new*), parent unknown (*orphan*: self-consistent, waits for its
//!    parent), or refused for good (*invalid*).
//!
//! What a node does with a verdict (accept, ignore, reject, score the
//! sender) is the caller's policy; [`judge`] only says what the op is.
//! Fetched ops ([`judge_fetched`]) are screened the same way but not
//! validated here: a fetch brings parents and children in one batch, so
//! the writer validates them in parent order.

use crate::encoding::Cid;
use crate::ledger::{Check, Ledger, Validated};
use crate::op::{check_clock, Form, Limits, OpError, Operation};

/// Ops older than this many seconds (by `created_at`) are repair, not news:
/// they are not gossiped when they commit, and a held one arriving by
/// gossip is not forwarded again.
pub const GOSSIP_MAX_AGE: u64 = 120;

/// An op that passed the checks that need no ledger.
#[derive(Debug, Clone)]
pub struct Received {
    pub op: Operation,
    /// Its CID (of the signed body).
    pub cid: Cid,
    /// Its canonical encodings, derived from `op` by the parse (so a
    /// caller need not encode it again: [`Operation::check_formed`],
    /// [`Ledger::validate_formed`]).
    pub form: Form,
}

/// Why [`screen`] refused bytes.
#[derive(Debug)]
pub enum Refusal {
    /// Cannot be judged now: its clock is ahead of ours.
    Later(OpError),
    /// Invalid, whatever else arrives.
    Invalid(OpError),
}

/// What an op from a peer is, judged against a ledger.
#[derive(Debug)]
pub enum Verdict {
    /// Valid and not held yet.
    New(Box<Validated>),
    /// Held already; `fresh` when younger than [`GOSSIP_MAX_AGE`].
    Known { fresh: bool },
    /// Self-consistent (shape, limits, signature) but its parent is unknown.
    Orphan(Box<Operation>, Cid),
    /// Cannot be judged now (its clock is ahead of ours).
    Later(OpError),
    /// Invalid, whatever else arrives.
    Invalid(OpError),
}

impl From<Refusal> for Verdict {
    fn from(r: Refusal) -> Verdict {
        match r {
            Refusal::Later(e) => Verdict::Later(e),
            Refusal::Invalid(e) => Verdict::Invalid(e),
        }
    }
}

/// What a fetched op is (see [`judge_fetched`]).
#[derive(Debug)]
pub enum Fetched {
    /// Screened: hand it to the writer (which validates it).
    Take(Box<Received>),
    /// Held already (gossip may have brought it while the fetch was on the
    /// wire): nothing to do.
    Known,
    /// From the future: dropped for now; a later session fetches it again.
    Later(OpError),
    /// Not an op that was asked for, or not an acceptable op: the serving
    /// peer answers for it.
    Invalid(OpError),
}

/// Steps 1 and 2: size and canonical parse.
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Received, Refusal> {
    if bytes.len() > limits.max_op_bytes {
        return Err(Refusal::Invalid(OpError::Limit(format!(
            "operation is {} bytes",
            bytes.len()
        ))));
    }
    let (op, form) = Operation::from_canonical_json_form(bytes).map_err(Refusal::Invalid)?;
    Ok(Received {
        op,
        cid: form.cid,
        form,
    })
}

/// Steps 1 to 3: everything that needs no ledger. `now` is unix seconds.
pub fn screen(bytes: &[u8], limits: &Limits, now: u64) -> Result<Received, Refusal> {
    let received = parse(bytes, limits)?;
    check_clock(&received.op, now, limits).map_err(Refusal::Later)?;
    Ok(received)
}

fn is_fresh(op: &Operation, now: u64) -> bool {
    op.created_at.saturating_add(GOSSIP_MAX_AGE) >= now
}

/// Step 4: a screened op against `ledger`.
pub fn judge_received(received: Received, ledger: &Ledger, now: u64) -> Verdict {
    let Received { op, cid, form } = received;
    // A CID we hold names a body we hold with a valid signature: known, no
    // signature check needed. Only the very bytes we hold count as worth
    // forwarding (`fresh`): another signature over the same body (a forged
    // one, or another co-signer subset) adds nothing, and forwarding it
    // would let anyone multiply a held op into endless "new" gossip
    // messages by rewriting `sig`. It is ignored, without penalty (an
    // honest node may hold another valid co-signer set).
    if let Some(same) = ledger.same_signatures(&cid, &op) {
        return Verdict::Known {
            fresh: same && is_fresh(&op, now),
        };
    }
    // `cid` was derived from these very bytes by `parse` (which also
    // refused any non-canonical encoding), so the ledger names the op the
    // same way, and a held op was answered above.
    match ledger.validate_formed(&op, form, None) {
        Ok(Check::New(v)) => Verdict::New(v),
        Ok(Check::Known(_)) => Verdict::Known { fresh: false },
        Err(OpError::UnknownPrev(_)) => Verdict::Orphan(Box::new(op), cid),
        Err(e) => Verdict::Invalid(e),
    }
}

/// The whole verdict on an op's bytes as received from a peer (gossip).
pub fn judge(bytes: &[u8], ledger: &Ledger, limits: &Limits, now: u64) -> Verdict {
    match screen(bytes, limits, now) {
        Ok(received) => judge_received(received, ledger, now),
        Err(refusal) => refusal.into(),
    }
}

/// The verdict on one op of a fetch response: acceptable bytes (step 1
/// and 2), one of the CIDs `asked` for, not `held`, not from the future.
/// Its validity against its parent is left to the writer.
pub fn judge_fetched(
    bytes: &[u8],
    asked: impl Fn(&Cid) -> bool,
    held: impl Fn(&Cid) -> bool,
    limits: &Limits,
    now: u64,
) -> Fetched {
    let received = match parse(bytes, limits) {
        Ok(r) => r,
        Err(Refusal::Invalid(e) | Refusal::Later(e)) => return Fetched::Invalid(e),
    };
    if !asked(&received.cid) {
        return Fetched::Invalid(OpError::Invalid(format!(
            "op {} was not asked for",
            received.cid
        )));
    }
    if held(&received.cid) {
        return Fetched::Known;
    }
    match check_clock(&received.op, now, limits) {
        Ok(()) => Fetched::Take(Box::new(received)),
        Err(e) => Fetched::Later(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::public_of;
    use crate::op::{did_from_genesis, DidState};
    use ed25519_dalek::SigningKey;

    const NOW: u64 = 1_800_000_000;

    fn ledger_with(ops: &[&Operation]) -> Ledger {
        let mut l = Ledger::default();
        for op in ops {
            l.apply((*op).clone()).unwrap();
        }
        l
    }

    fn bytes(op: &Operation) -> Vec<u8> {
        op.canonical_bytes().unwrap()
    }

    fn ops() -> (Operation, Operation, SigningKey) {
        let k = SigningKey::from_bytes(&[1; 32]);
        let create = Operation::create(DidState::single_key(public_of(&k)), NOW, &k).unwrap();
        let did = did_from_genesis(&create.cid().unwrap());
        let update = Operation::update(
            &did,
            create.cid().unwrap(),
            DidState::single_key(public_of(&k)),
            NOW,
            &k,
        )
        .unwrap();
        (create, update, k)
    }

    /// A held op re-sent with a rewritten (forged) signature has the same
    /// CID: it must not count as worth forwarding, or anyone could flood
    /// the mesh with endless variants of one op.
    #[test]
    fn a_resigned_copy_of_a_held_op_is_not_forwarded() {
        let limits = Limits::default();
        let (create, _, _) = ops();
        let ledger = ledger_with(&[&create]);
        assert!(matches!(
            judge(&bytes(&create), &ledger, &limits, NOW),
            Verdict::Known { fresh: true }
        ));
        let mut forged = create.clone();
        forged.sig = crate::keys::sign_b64(&SigningKey::from_bytes(&[9; 32]), b"other");
        assert_eq!(forged.cid().unwrap(), create.cid().unwrap());
        assert!(matches!(
            judge(&bytes(&forged), &ledger, &limits, NOW),
            Verdict::Known { fresh: false }
        ));
    }

    #[test]
    fn verdicts() {
        let limits = Limits::default();
        let (create, update, k) = ops();
        let did = did_from_genesis(&create.cid().unwrap());
        let empty = ledger_with(&[]);
        let held = ledger_with(&[&create]);
        let judge = |b: &[u8], l: &Ledger, now| judge(b, l, &limits, now);

        assert!(matches!(
            judge(&bytes(&create), &empty, NOW),
            Verdict::New(_)
        ));
        assert!(matches!(
            judge(&bytes(&create), &held, NOW),
            Verdict::Known { fresh: true }
        ));
        assert!(matches!(
            judge(&bytes(&create), &held, NOW + 10 * GOSSIP_MAX_AGE),
            Verdict::Known { fresh: false }
        ));
        assert!(matches!(
            judge(&bytes(&update), &empty, NOW),
            Verdict::Orphan(..)
        ));
        assert!(matches!(
            judge(&bytes(&update), &held, NOW),
            Verdict::New(_)
        ));

        // The same op, not canonically encoded: another message id, refused.
        let pretty = serde_json::to_vec_pretty(&create).unwrap();
        assert!(matches!(judge(&pretty, &empty, NOW), Verdict::Invalid(_)));
        assert!(matches!(judge(&pretty, &held, NOW), Verdict::Invalid(_)));
        // Forged signature; garbage; too large.
        let mut forged = create.clone();
        forged.sig = update.sig.clone();
        assert!(matches!(
            judge(&bytes(&forged), &empty, NOW),
            Verdict::Invalid(_)
        ));
        assert!(matches!(
            judge(b"{not json", &empty, NOW),
            Verdict::Invalid(_)
        ));
        assert!(matches!(
            judge(&vec![b' '; limits.max_op_bytes + 1], &empty, NOW),
            Verdict::Invalid(_)
        ));
        // A hijack: an update signed by a key the DID never listed.
        let intruder = SigningKey::from_bytes(&[2; 32]);
        let hijack = Operation::update(
            &did,
            create.cid().unwrap(),
            DidState::single_key(public_of(&intruder)),
            NOW,
            &intruder,
        )
        .unwrap();
        assert!(matches!(
            judge(&bytes(&hijack), &held, NOW),
            Verdict::Invalid(_)
        ));
        // From the future: maybe our clock is wrong; not the sender's fault.
        let future =
            Operation::create(DidState::single_key(public_of(&k)), NOW + 3600, &k).unwrap();
        assert!(matches!(
            judge(&bytes(&future), &empty, NOW),
            Verdict::Later(_)
        ));
    }

    #[test]
    fn fetched_verdicts() {
        let limits = Limits::default();
        let (create, update, _) = ops();
        let (c, u) = (create.cid().unwrap(), update.cid().unwrap());
        let fetched = |b: &[u8], asked: &[Cid], held: &[Cid], now| {
            judge_fetched(b, |x| asked.contains(x), |x| held.contains(x), &limits, now)
        };
        // Screened only: a child whose parent is not held is taken (the
        // writer orders the batch).
        assert!(matches!(
            fetched(&bytes(&update), &[u], &[], NOW),
            Fetched::Take(r) if r.cid == u
        ));
        assert!(matches!(
            fetched(&bytes(&create), &[c], &[c], NOW),
            Fetched::Known
        ));
        // Not asked for, even if valid; not canonical; too large.
        assert!(matches!(
            fetched(&bytes(&create), &[u], &[], NOW),
            Fetched::Invalid(_)
        ));
        let pretty = serde_json::to_vec_pretty(&create).unwrap();
        assert!(matches!(
            fetched(&pretty, &[c], &[], NOW),
            Fetched::Invalid(_)
        ));
        assert!(matches!(
            fetched(&vec![b' '; limits.max_op_bytes + 1], &[c], &[], NOW),
            Fetched::Invalid(_)
        ));
        // From the future (by our clock): left for a later session.
        assert!(matches!(
            fetched(&bytes(&create), &[c], &[], NOW - 3600),
            Fetched::Later(_)
        ));
    }
}
