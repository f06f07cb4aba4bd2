//! Where every op from a peer enters the node, by gossip or by an
//! anti-entropy fetch. The verdicts themselves (size, canonical parse,
//! clock, known / new / orphan / invalid) are did-core's
//! [`did_core::ingest`], shared with the replication simulation; this
//! module runs them off the event loop, turns them into gossipsub's
//! accept / ignore / reject, charges orphans to their sender's budget and
//! hands acceptable ops to the writer.
//!
//! Gossip ([`run_validator`]), per [`Verdict`]:
//!
//! * **New** — Accept (forward) and store; the writer skips a second
//!   signature check.
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
//! Before any of this, the event loop ignores a message beyond its
//! sender's gossip rate, unvalidated.
//!
//! Fetches ([`Ingest::judge_fetched`]): an op must be one that was asked
//! for, in canonical form, within the size limit; held ones are skipped
//! and ones from the future left for a later session. Anti-entropy then
//! hands the rest to the writer parents first ([`Ingest::store`]).

use super::event_loop::{Client, GossipMessage};
use crate::writer::{SubmitError, Submitted};
use crate::NodeState;
use did_core::ingest::{self as verdicts, Fetched, Verdict};
use did_core::{Cid, Ledger, Limits, OpError, Operation};
use libp2p::gossipsub::MessageAcceptance;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};

/// Gossiped ops validated at once (each on a blocking thread: a signature
/// check and a ledger read).
pub const VALIDATION_CONCURRENCY: usize = 8;
/// How long a child waits for its parent, accepted a moment ago and still
/// being written, before it is treated as an orphan.
const PARENT_WAIT: Duration = Duration::from_secs(5);

/// [`did_core::ingest::judge`] against the node's shared ledger: the checks
/// that need no ledger run before the read lock is taken. `now` is unix
/// seconds.
pub(crate) fn judge(bytes: &[u8], ledger: &RwLock<Ledger>, limits: &Limits, now: u64) -> Verdict {
    let received = match verdicts::screen(bytes, limits, now) {
        Ok(r) => r,
        Err(refusal) => return refusal.into(),
    };
    let Ok(ledger) = ledger.read() else {
        return Verdict::Later(OpError::Invalid("ledger unavailable".into()));
    };
    verdicts::judge_received(received, &ledger, now)
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

    /// [`judge`] on a blocking thread.
    pub async fn judge(&self, bytes: Arc<Vec<u8>>) -> Verdict {
        let state = self.state.clone();
        let run = move || judge(&bytes, &state.ledger, &state.limits, crate::now());
        tokio::task::spawn_blocking(run)
            .await
            .unwrap_or_else(|_| Verdict::Later(OpError::Invalid("validation task failed".into())))
    }

    /// Judges `bytes`; when only the parent is missing and the parent is
    /// being written right now, waits for it and judges again.
    pub async fn judge_waiting(&self, bytes: Arc<Vec<u8>>) -> Verdict {
        let verdict = self.judge(bytes.clone()).await;
        let Verdict::Orphan(op, _) = &verdict else {
            return verdict;
        };
        let parent = op
            .prev
            .and_then(|p| self.in_flight.lock().ok()?.get(&p).cloned());
        let Some(mut parent) = parent else {
            return verdict;
        };
        let arrived = tokio::time::timeout(PARENT_WAIT, parent.wait_for(|done| *done))
            .await
            .is_ok();
        if arrived {
            self.judge(bytes).await
        } else {
            verdict
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

    /// Stores a fetched op and waits until it is durable. Orphans are not
    /// allowed: anti-entropy hands the writer parents before children and
    /// holds back the rest itself, so an op whose parent is still unknown
    /// here is refused (`UnknownPrev`) instead of filling the ledger's
    /// orphan pool outside any peer's budget.
    pub async fn store(&self, op: Operation) -> Result<Submitted, SubmitError> {
        let _writing = op.cid().ok().map(|cid| self.reserve(cid));
        self.state.writer.submit(op, false).await
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

/// What to store after a gossip verdict.
enum Store {
    /// Verified new op: the writer does not verify it again.
    Validated(Box<did_core::Validated>),
    /// Parked orphan, charged to its sender's budget under this CID.
    Orphan(Box<Operation>, Cid),
}

/// Validates gossiped ops as they come, at most
/// [`VALIDATION_CONCURRENCY`] at once, and reports each verdict to
/// gossipsub.
pub(crate) async fn run_validator(mut inbound: mpsc::Receiver<GossipMessage>, ingest: Ingest) {
    let permits = Arc::new(Semaphore::new(VALIDATION_CONCURRENCY));
    while let Some(msg) = inbound.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let ingest = ingest.clone();
        tokio::spawn(async move {
            let verdict = ingest.judge_waiting(Arc::new(msg.data)).await;
            drop(permit);
            let metrics = ingest.client.metrics();
            // A new op is marked as being written before it is forwarded, so
            // a child that follows it closely waits for it (see
            // `judge_waiting`) instead of being parked as an orphan.
            let mut writing = None;
            let (acceptance, store) = match verdict {
                Verdict::New(v) => {
                    metrics.gossip_accepted.inc();
                    writing = Some(ingest.reserve(v.cid));
                    (MessageAcceptance::Accept, Some(Store::Validated(v)))
                }
                Verdict::Known { fresh: true } => {
                    metrics.gossip_accepted.inc();
                    (MessageAcceptance::Accept, None)
                }
                Verdict::Known { fresh: false } => {
                    metrics.gossip_ignored.inc();
                    (MessageAcceptance::Ignore, None)
                }
                Verdict::Later(e) => {
                    metrics.gossip_ignored.inc();
                    tracing::debug!(peer = %msg.source, reason = %e, "gossiped op left for later");
                    (MessageAcceptance::Ignore, None)
                }
                Verdict::Orphan(op, cid) => {
                    metrics.gossip_ignored.inc();
                    // Parked only within the sender's orphan budget.
                    match ingest.client.budgets().charge_orphan(msg.source, cid) {
                        Ok(()) => (MessageAcceptance::Ignore, Some(Store::Orphan(op, cid))),
                        Err(refused) => {
                            tracing::debug!(peer = %msg.source, ?refused, "orphan not parked");
                            (MessageAcceptance::Ignore, None)
                        }
                    }
                }
                Verdict::Invalid(e) => {
                    metrics.rejected.inc();
                    tracing::info!(peer = %msg.source, reason = %e, "rejected a gossiped op");
                    (MessageAcceptance::Reject, None)
                }
            };
            let reported = ingest
                .client
                .report_validation(msg.id, msg.source, acceptance)
                .await;
            if reported.is_err() {
                return;
            }
            let stored = match store {
                Some(Store::Validated(v)) => Some(ingest.state.writer.submit_validated(*v).await),
                Some(Store::Orphan(op, cid)) => {
                    let r = ingest.state.writer.submit(*op, true).await;
                    // Not parked after all (its parent arrived meanwhile,
                    // or the writer refused it): nothing to charge.
                    if !matches!(r, Ok(Submitted::Orphaned)) {
                        ingest.client.budgets().settle(&cid);
                    }
                    Some(r)
                }
                None => None,
            };
            if let Some(Err(e)) = stored {
                tracing::debug!(error = %e, "gossiped op not stored");
            }
            drop(writing);
        });
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
