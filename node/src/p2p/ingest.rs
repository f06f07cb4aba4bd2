//! Where every op from a peer enters the node, by gossip or by an
//! anti-entropy fetch. The verdicts themselves (size, canonical parse,
//! clock, known / new / orphan / invalid) are did-core's
//! [`did_core::ingest`], shared with the replication simulation; this
//! module runs them off the event loop, turns them into gossipsub's
//! accept / ignore / reject, charges orphans to their sender's budget and
//! hands acceptable ops to the writer.
//!
//! Gossip ([`run_validator`]): a message is a bundle of ops
//! ([`did_core::sync_frame::decode_bundle`]; a broken one is rejected
//! whole). Each op gets a [`Verdict`], and the bundle the worst of its
//! ops' votes: forwarded only if every op votes Accept.
//!
//! * **New** — Accept (forward) and store; the writer skips a second
//!   signature check. The signature is checked once, on a blocking
//!   thread ([`judge`]), before the ledger is read, and only for ops the
//!   ledger does not hold.
//! * **Known**, younger than [`GOSSIP_MAX_AGE`](did_core::ingest::GOSSIP_MAX_AGE)
//!   — Accept; older — Ignore (repair, not news).
//! * **Orphan** (parent unknown) — Ignore, and park it in the ledger's
//!   orphan pool within the forwarding peer's orphan budget
//!   ([`super::budget`]); anti-entropy fills the gap. A peer at its budget
//!   gets its orphans ignored and not parked, and loses score. A child
//!   whose parent was accepted a moment ago and is still being written
//!   waits for it instead ([`Ingest::judge_waiting`]).
//! * **Later** (too far in the future: our clock may be the wrong one) —
//!   Ignore.
//! * **Invalid** — Reject, which costs the forwarding peer score (P4) until
//!   it is graylisted, then banned by the event loop.
//!
//! Before any of this, the event loop ignores a bundle beyond its
//! sender's gossip rate (charged per op it holds), unvalidated.
//!
//! Fetches ([`Ingest::judge_fetched`]): an op must be one that was asked
//! for, in canonical form, within the size limit; held ones are skipped
//! and ones from the future left for a later session. Anti-entropy then
//! hands the rest to the writer parents first ([`Ingest::store`]).

use super::event_loop::{Client, GossipMessage};
use crate::writer::{SubmitError, Submitted};
use crate::NodeState;
use did_core::ingest::{self as verdicts, Fetched, Received, Verdict};
use did_core::op::Form;
use did_core::sync_frame::{bundle_len_hint, decode_bundle, FrameError};
use did_core::verify::{verify_batch, SigVerified};
use did_core::{Check, Cid, Ledger, Limits, OpError, Operation};
use libp2p::gossipsub::MessageAcceptance;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};

/// Bursts of gossiped ops judged at once (each burst on a blocking
/// thread: one signature batch and two ledger reads).
pub const VALIDATION_CONCURRENCY: usize = 8;
/// Gossiped ops (of whole bundles) gathered into one blocking task before
/// it starts; a bundle holds at most 64.
pub const JUDGE_BATCH: usize = 256;
/// How long a child waits for its parent, accepted a moment ago and still
/// being written, before it is treated as an orphan.
const PARENT_WAIT: Duration = Duration::from_secs(5);

/// [`did_core::ingest::judge`] against the node's shared ledger: the checks
/// that need no ledger run before the read lock is taken, and so does the
/// signature check ([`verify_batch`], counted in
/// `didmesh_sig_verifications_total`), only for an op the ledger does not
/// hold; the ledger then validates the rest
/// ([`Ledger::validate_verified`]). The verdicts are
/// [`did_core::ingest::judge_received`]'s. `now` is unix seconds.
#[cfg(test)]
pub(crate) fn judge(bytes: &[u8], ledger: &RwLock<Ledger>, limits: &Limits, now: u64) -> Verdict {
    judge_burst(vec![(bytes, None)], ledger, limits, now)
        .pop()
        .map_or_else(|| task_failed().0, |(v, _)| v)
}

/// Where one message of a burst stands before its signatures are checked.
enum Step {
    /// Verdict reached (refused by the screen or by its own rules).
    Done(Verdict),
    /// Held by the ledger when the burst was read: no signature check.
    Held(Received),
    /// Signatures checked by an earlier verdict.
    Proved(Received, SigVerified),
    /// To be checked with the rest of the burst.
    Verify(Received),
}

/// `judge` of every message of a burst, in order, each given the proof
/// of an earlier check of the same bytes if there was one (a child judged
/// again once its parent is written), returning the proof of the check it
/// made or reused, so the writer (and a second verdict) do not check
/// again. The screens, one ledger read for what is held, then the
/// signatures of all the ops the ledger does not hold in one batch
/// ([`verify_batch`]; an op whose batch fails is checked alone, so a
/// forged op costs only its sender's verdict), then the ledger's verdicts
/// under one read lock.
pub(crate) fn judge_burst(
    burst: Vec<(&[u8], Option<SigVerified>)>,
    ledger: &RwLock<Ledger>,
    limits: &Limits,
    now: u64,
) -> Vec<(Verdict, Option<SigVerified>)> {
    let unavailable = || Verdict::Later(OpError::Invalid("ledger unavailable".into()));
    let screened: Vec<_> = burst
        .into_iter()
        .map(|(bytes, proof)| (verdicts::screen(bytes, limits, now), proof))
        .collect();
    let held: Vec<bool> = match ledger.read() {
        Ok(l) => screened
            .iter()
            .map(|(r, _)| r.as_ref().is_ok_and(|r| l.contains(&r.cid)))
            .collect(),
        Err(_) => return screened.iter().map(|_| (unavailable(), None)).collect(),
    };
    let steps: Vec<Step> = screened
        .into_iter()
        .zip(held)
        .map(|((screen, proof), held)| match screen {
            Err(refusal) => Step::Done(refusal.into()),
            Ok(r) if held => Step::Held(r),
            Ok(r) => match proof.filter(|p| p.cid() == r.cid) {
                Some(p) => Step::Proved(r, p),
                None => match r.op.check_formed(&r.form, limits) {
                    Ok(()) => Step::Verify(r),
                    Err(e) => Step::Done(Verdict::Invalid(e)),
                },
            },
        })
        .collect();
    let items: Vec<(&Operation, &Form)> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Verify(r) => Some((&r.op, &r.form)),
            _ => None,
        })
        .collect();
    // One result per `Verify` step, in order.
    let mut checked = verify_batch(&items).into_iter();
    let ledger = ledger.read();
    steps
        .into_iter()
        .map(|s| {
            let (r, proof) = match s {
                Step::Done(v) => return (v, None),
                Step::Held(r) => (r, None),
                Step::Proved(r, p) => (r, Some(p)),
                Step::Verify(r) => match checked.next() {
                    Some(Ok(p)) => (r, Some(p)),
                    Some(Err(e)) => return (Verdict::Invalid(e), None),
                    None => return (unavailable(), None),
                },
            };
            let Ok(ledger) = &ledger else {
                return (unavailable(), proof);
            };
            match &proof {
                Some(p) => (judge_verified(r, ledger, p), proof),
                // Held (or committed meanwhile): did-core's verdict, which
                // answers a held op without a signature check.
                None => (verdicts::judge_received(r, ledger, now), None),
            }
        })
        .collect()
}

/// The verdict on a message whose validation task failed (panicked): left
/// for later, the sender is not at fault.
fn task_failed() -> (Verdict, Option<SigVerified>) {
    let failed = OpError::Invalid("validation task failed".into());
    (Verdict::Later(failed), None)
}

/// [`did_core::ingest::judge_received`] for an op whose signatures were
/// just checked and that the ledger did not hold a moment ago.
fn judge_verified(received: Received, ledger: &Ledger, proof: &SigVerified) -> Verdict {
    let Received { op, cid, form } = received;
    if ledger.contains(&cid) {
        // Committed meanwhile (by a fetch): old news, not forwarded again.
        return Verdict::Known { fresh: false };
    }
    match ledger.validate_formed(&op, form, Some(proof)) {
        Ok(Check::New(v)) => Verdict::New(v),
        Ok(Check::Known(_)) => Verdict::Known { fresh: false },
        Err(OpError::UnknownPrev(_)) => Verdict::Orphan(Box::new(op), cid),
        Err(e) => Verdict::Invalid(e),
    }
}

/// Judges ops from peers and hands the good ones to the writer; shared by
/// the gossip validator and anti-entropy.
#[derive(Clone)]
pub(crate) struct Ingest {
    pub state: Arc<NodeState>,
    pub client: Client,
    /// Ops accepted and not yet durable, so a child that arrives right
    /// behind its parent waits for it instead of becoming an orphan.
    in_flight: Arc<Mutex<HashMap<Cid, watch::Receiver<bool>>>>,
}

impl Ingest {
    pub fn new(state: Arc<NodeState>, client: Client) -> Ingest {
        Ingest {
            state,
            client,
            in_flight: Arc::default(),
        }
    }

    /// [`judge_burst`] of one message on a blocking thread (the blocking pool spreads
    /// the signature checks of concurrent messages over all cores).
    pub async fn judge(
        &self,
        bytes: Arc<Vec<u8>>,
        proof: Option<SigVerified>,
    ) -> (Verdict, Option<SigVerified>) {
        self.judge_all(vec![(bytes, proof)])
            .await
            .pop()
            .unwrap_or_else(task_failed)
    }

    /// [`judge_burst`] of `batch` (bytes, and the proof of an
    /// earlier check of them), in order, in one blocking task.
    pub async fn judge_all(
        &self,
        batch: Vec<(Arc<Vec<u8>>, Option<SigVerified>)>,
    ) -> Vec<(Verdict, Option<SigVerified>)> {
        let state = self.state.clone();
        let n = batch.len();
        let run = move || {
            let burst = batch.iter().map(|(b, p)| (b.as_slice(), *p)).collect();
            judge_burst(burst, &state.ledger, &state.limits, crate::now())
        };
        tokio::task::spawn_blocking(run)
            .await
            .unwrap_or_else(|_| (0..n).map(|_| task_failed()).collect())
    }

    /// Given the verdict on `bytes`: when only the parent was missing and
    /// the parent is being written right now, waits for it and judges
    /// again (without checking the signature again).
    pub async fn after_parent(
        &self,
        bytes: Arc<Vec<u8>>,
        verdict: Verdict,
        proof: Option<SigVerified>,
    ) -> (Verdict, Option<SigVerified>) {
        let Verdict::Orphan(op, _) = &verdict else {
            return (verdict, proof);
        };
        let parent = op
            .prev
            .and_then(|p| self.in_flight.lock().ok()?.get(&p).cloned());
        let Some(mut parent) = parent else {
            return (verdict, proof);
        };
        let arrived = tokio::time::timeout(PARENT_WAIT, parent.wait_for(|done| *done))
            .await
            .is_ok();
        if arrived {
            self.judge(bytes, proof).await
        } else {
            (verdict, proof)
        }
    }

    /// [`did_core::ingest::judge_fetched`] for one op of a fetch response:
    /// `asked` are the CIDs requested, "held" is this node's ledger now.
    pub fn judge_fetched(&self, bytes: &[u8], asked: &HashSet<Cid>, now: u64) -> Fetched {
        let held = |cid: &Cid| self.state.ledger.read().is_ok_and(|l| l.contains(cid));
        verdicts::judge_fetched(bytes, |c| asked.contains(c), held, &self.state.limits, now)
    }

    /// Marks `cid` as being written until the guard is dropped.
    pub fn reserve(&self, cid: Cid) -> InFlight {
        let (done, rx) = watch::channel(false);
        if let Ok(mut m) = self.in_flight.lock() {
            m.insert(cid, rx);
        }
        InFlight {
            cid,
            done,
            map: self.in_flight.clone(),
        }
    }

    /// Stores a fetched op, its signatures checked (`proof`) and its
    /// canonical `form` as parsed, and waits
    /// until it is durable; it is not republished on gossip. Orphans are
    /// not allowed: anti-entropy hands the writer parents before children
    /// and holds back the rest itself, so an op whose parent is still
    /// unknown here is refused (`UnknownPrev`) instead of filling the
    /// ledger's orphan pool outside any peer's budget.
    pub async fn store(
        &self,
        op: Operation,
        form: Form,
        proof: SigVerified,
    ) -> Result<Submitted, SubmitError> {
        let cid = proof.cid();
        let _writing = self.reserve(cid);
        let replication = self.client.replication();
        replication.mark_quiet(cid);
        let r = self
            .state
            .writer
            .submit_formed(op, form, proof, false)
            .await;
        if !matches!(r, Ok(Submitted::Created(_))) {
            // Not committed by this submission: nothing for the publisher
            // to skip.
            replication.take_quiet(&cid);
        }
        r
    }
}

/// An op being written; dropping it wakes the children waiting for it.
pub(crate) struct InFlight {
    cid: Cid,
    done: watch::Sender<bool>,
    map: Arc<Mutex<HashMap<Cid, watch::Receiver<bool>>>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(&self.cid);
        }
        let _ = self.done.send(true);
    }
}

/// An op of a gossiped bundle, judged: its bytes, verdict, the proof of
/// its signature check, and its mark as being written if it was new.
type Judged = (Arc<Vec<u8>>, Verdict, Option<SigVerified>, Option<InFlight>);

/// Validates gossiped bundles as they come and reports each bundle's
/// verdict to gossipsub. The bundles waiting when a round starts (at most
/// [`JUDGE_BATCH`] ops in all) are judged together in one blocking task,
/// at most [`VALIDATION_CONCURRENCY`] such tasks at once: one hand-off to
/// the blocking pool and one signature batch per burst, not per op (a
/// task per message cost more than its signature check under a sustained
/// load; BENCHMARKS.md). Each bundle is then settled in a task of its own,
/// since storing waits for the writer's fsync.
///
/// A bundle is forwarded (Accept) only when every op of it is new or
/// fresh news here, so a node never relays, under its own name, an op a
/// peer would charge it for (an orphan, an op from the future); a bundle
/// holding an invalid op, or whose framing is broken, is rejected as a
/// whole; anything else is ignored. Good ops of a bundle that is not
/// forwarded are still stored (anti-entropy carries them on).
pub(crate) async fn run_validator(mut inbound: mpsc::Receiver<GossipMessage>, ingest: Ingest) {
    let permits = Arc::new(Semaphore::new(VALIDATION_CONCURRENCY));
    while let Some(first) = inbound.recv().await {
        let mut ops = bundle_len_hint(&first.data);
        let mut msgs = vec![first];
        while ops < JUDGE_BATCH {
            match inbound.try_recv() {
                Ok(m) => {
                    ops += bundle_len_hint(&m.data);
                    msgs.push(m);
                }
                Err(_) => break,
            }
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let ingest = ingest.clone();
        tokio::spawn(async move {
            // Each bundle's ops, or why its framing is refused.
            let bundles: Vec<Result<Vec<Arc<Vec<u8>>>, FrameError>> = msgs
                .iter()
                .map(|m| {
                    let ops = decode_bundle(&m.data)?;
                    Ok(ops.into_iter().map(|o| Arc::new(o.to_vec())).collect())
                })
                .collect();
            let batch = bundles
                .iter()
                .flatten()
                .flatten()
                .map(|b| (b.clone(), None))
                .collect();
            let mut verdicts = ingest.judge_all(batch).await.into_iter();
            drop(permit);
            // Every new op of the burst is marked as being written before
            // any bundle is settled, so a child judged in the same burst
            // as its parent waits for it instead of becoming an orphan.
            let judged: Vec<Result<Vec<Judged>, FrameError>> = bundles
                .into_iter()
                .map(|b| {
                    Ok(b?
                        .into_iter()
                        .map(|bytes| {
                            let (verdict, proof) = verdicts.next().unwrap_or_else(task_failed);
                            let writing = match &verdict {
                                Verdict::New(v) => Some(ingest.reserve(v.cid)),
                                _ => None,
                            };
                            (bytes, verdict, proof, writing)
                        })
                        .collect())
                })
                .collect();
            for (msg, ops) in msgs.into_iter().zip(judged) {
                let ingest = ingest.clone();
                tokio::spawn(async move { settle(&ingest, msg, ops).await });
            }
        });
    }
}

/// What one op contributes to its bundle's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Vote {
    Accept,
    Ignore,
    Reject,
}

/// Settles a judged bundle: its new ops go to the writer at once, its
/// orphans wait for a parent being written, then the bundle's verdict is
/// reported (the worst vote of its ops; a broken framing rejects it).
async fn settle(ingest: &Ingest, msg: GossipMessage, ops: Result<Vec<Judged>, FrameError>) {
    let vote = match ops {
        Err(e) => {
            ingest.client.metrics().rejected.inc();
            tracing::info!(peer = %msg.source, reason = e.reason(), "rejected a gossiped bundle");
            Vote::Reject
        }
        Ok(ops) => {
            let mut vote = Vote::Accept;
            let mut waiting = Vec::new();
            for (bytes, verdict, proof, writing) in ops {
                if matches!(verdict, Verdict::Orphan(..)) {
                    waiting.push(async move {
                        let (verdict, proof) = ingest.after_parent(bytes, verdict, proof).await;
                        (verdict, proof, writing)
                    });
                } else {
                    vote = vote.max(settle_op(ingest, &msg, verdict, proof, writing));
                }
            }
            for (verdict, proof, writing) in futures::future::join_all(waiting).await {
                vote = vote.max(settle_op(ingest, &msg, verdict, proof, writing));
            }
            vote
        }
    };
    let acceptance = match vote {
        Vote::Accept => MessageAcceptance::Accept,
        Vote::Ignore => MessageAcceptance::Ignore,
        Vote::Reject => MessageAcceptance::Reject,
    };
    let _ = ingest
        .client
        .report_validation(msg.id, msg.source, acceptance)
        .await;
}

/// One op's verdict: counted, logged, and what it says to store handed to
/// the writer in a task of its own (marked as from a peer, so the
/// publisher does not publish it again). `writing`: the op marked as
/// being written, if it was new when judged.
fn settle_op(
    ingest: &Ingest,
    msg: &GossipMessage,
    verdict: Verdict,
    proof: Option<SigVerified>,
    mut writing: Option<InFlight>,
) -> Vote {
    let metrics = ingest.client.metrics();
    let replication = ingest.client.replication();
    match verdict {
        Verdict::New(v) => {
            metrics.gossip_accepted.inc();
            // A new op is marked as being written before its bundle is
            // forwarded, so a child that follows it closely waits for it
            // (see `after_parent`) instead of being parked as an orphan.
            if writing.as_ref().is_none_or(|w| w.cid != v.cid) {
                writing = Some(ingest.reserve(v.cid));
            }
            let (ingest, cid) = (ingest.clone(), v.cid);
            replication.mark_quiet(cid);
            tokio::spawn(async move {
                let r = ingest.state.writer.submit_validated(*v).await;
                if !matches!(r, Ok(Submitted::Created(_))) {
                    ingest.client.replication().take_quiet(&cid);
                }
                if let Err(e) = r {
                    tracing::debug!(error = %e, "gossiped op not stored");
                }
                drop(writing);
            });
            Vote::Accept
        }
        Verdict::Known { fresh: true } => {
            metrics.gossip_accepted.inc();
            Vote::Accept
        }
        Verdict::Known { fresh: false } => {
            metrics.gossip_ignored.inc();
            Vote::Ignore
        }
        Verdict::Later(e) => {
            metrics.gossip_ignored.inc();
            tracing::debug!(peer = %msg.source, reason = %e, "gossiped op left for later");
            Vote::Ignore
        }
        Verdict::Orphan(op, cid) => {
            metrics.gossip_ignored.inc();
            // Parked only within the sender's orphan budget.
            if let Err(refused) = ingest.client.budgets().charge_orphan(msg.source, cid) {
                tracing::debug!(peer = %msg.source, ?refused, "orphan not parked");
                return Vote::Ignore;
            }
            let ingest = ingest.clone();
            replication.mark_quiet(cid);
            tokio::spawn(async move {
                let writer = &ingest.state.writer;
                let r = match proof {
                    Some(proof) => writer.submit_verified(*op, proof, true).await,
                    None => writer.submit(*op, true).await,
                };
                // Not parked after all (its parent arrived meanwhile, or the
                // writer refused it): nothing to charge.
                if !matches!(r, Ok(Submitted::Orphaned)) {
                    ingest.client.budgets().settle(&cid);
                }
                if !matches!(r, Ok(Submitted::Orphaned | Submitted::Created(_))) {
                    ingest.client.replication().take_quiet(&cid);
                }
                if let Err(e) = r {
                    tracing::debug!(error = %e, "gossiped op not stored");
                }
            });
            Vote::Ignore
        }
        Verdict::Invalid(e) => {
            metrics.rejected.inc();
            tracing::info!(peer = %msg.source, reason = %e, "rejected a gossiped op");
            Vote::Reject
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use did_core::keys::public_of;
    use did_core::DidState;
    use ed25519_dalek::SigningKey;

    /// The node's wrapper gives did-core's verdicts; a poisoned ledger is
    /// "later", never "invalid" (the sender is not at fault).
    #[test]
    fn judges_through_the_shared_ledger() {
        let now = 1_800_000_000;
        let limits = Limits::default();
        let k = SigningKey::from_bytes(&[1; 32]);
        let create = Operation::create(DidState::single_key(public_of(&k)), now, &k).unwrap();
        let bytes = create.canonical_bytes().unwrap();
        let ledger = Arc::new(RwLock::new(Ledger::default()));
        assert!(matches!(
            judge(&bytes, &ledger, &limits, now),
            Verdict::New(_)
        ));
        assert!(matches!(
            judge(b"{}", &ledger, &limits, now),
            Verdict::Invalid(_)
        ));
        let poison = ledger.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poison.write().unwrap();
            panic!("poison the lock");
        })
        .join();
        assert!(matches!(
            judge(&bytes, &ledger, &limits, now),
            Verdict::Later(_)
        ));
    }
}
