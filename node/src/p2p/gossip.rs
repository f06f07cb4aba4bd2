//! Push: one gossipsub topic per network, one op per message.
//!
//! * Topic `/didmesh/<network_id>/ops/1`; the message is the op's canonical
//!   bytes; the message id is its CID, so the same op published by two
//!   nodes is one message and duplicates die in every node's cache.
//! * Messages are unsigned (`Anonymous`): an op carries its own signature,
//!   and the peer that forwarded a message is what scoring needs.
//! * Manual validation (gossipsub's `validate_messages`): an op is fully
//!   verified — parsed, canonical, within limits, signature, clock, checked
//!   against its parent in the ledger — before gossipsub forwards it.
//!   Valid and new, or held already and fresh: **Accept** (forward, store).
//!   Parent unknown: **Ignore** (park it in the orphan pool, charged to
//!   the forwarding peer's orphan budget, see [`super::budget`];
//!   anti-entropy fills the gap). A peer at its budget gets its orphans
//!   ignored and not parked, and loses score. Too far in the future:
//!   **Ignore** (our clock may be the wrong one). Anything else:
//!   **Reject**, which costs the forwarding peer score (P4) until it is
//!   graylisted, then banned by the event loop. Before any of this, a
//!   message beyond its sender's gossip rate is ignored unvalidated.
//! * Ops that become durable here — from HTTP, from anti-entropy, released
//!   orphans — are published, unless older than [`GOSSIP_MAX_AGE`]: old
//!   ops found by anti-entropy are repair, not news, and re-flooding them
//!   would cost every peer a validation.

use super::anti_entropy::SharedIndex;
use super::event_loop::{GossipMessage, BAN_DURATION};
use super::Client;
use crate::writer::{SubmitError, Submitted};
use crate::NodeState;
use did_core::{Check, Cid, Ledger, Limits, OpError, Operation, Validated};
use libp2p::gossipsub::{
    self, IdentTopic, MessageAcceptance, MessageAuthenticity, MessageId, PeerScoreParams,
    PeerScoreThresholds, TopicScoreParams, ValidationMode,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch, Semaphore};

/// Ops older than this (by `created_at`) are not gossiped when they commit.
pub const GOSSIP_MAX_AGE: u64 = 120;
/// Gossiped ops validated at once (each on a blocking thread: a signature
/// check and a ledger read).
pub const VALIDATION_CONCURRENCY: usize = 8;
/// How long a child waits for its parent, accepted a moment ago and still
/// being written, before it is treated as an orphan.
const PARENT_WAIT: Duration = Duration::from_secs(5);

/// Below this score a peer's messages are ignored by gossipsub, and the
/// event loop disconnects and bans it for [`BAN_DURATION`].
pub const GRAYLIST_THRESHOLD: f64 = -80.0;
/// P4 weight: the penalty is `weight * invalid_count^2`, so three invalid
/// ops (-90) graylist a peer, one is forgiven in about a minute.
const INVALID_MESSAGE_WEIGHT: f64 = -10.0;
/// Per-second decay of the invalid-message counter (halves in ~14 s).
const INVALID_MESSAGE_DECAY: f64 = 0.95;

/// The network's op topic.
pub fn topic(network_id: &str) -> IdentTopic {
    IdentTopic::new(format!("/didmesh/{network_id}/ops/1"))
}

/// gossipsub with manual validation, CID message ids and peer scoring.
pub(crate) fn behaviour(
    topic: &IdentTopic,
    limits: &Limits,
) -> Result<gossipsub::Behaviour, Box<dyn std::error::Error + Send + Sync>> {
    let config = gossipsub::ConfigBuilder::default()
        .validation_mode(ValidationMode::Anonymous)
        .validate_messages()
        .message_id_fn(|m: &gossipsub::Message| MessageId::new(Cid::of(&m.data).digest()))
        // An op is at most `max_op_bytes`; a message is the op plus the
        // topic and protobuf framing. Larger ones count as invalid (P4).
        .set_topic_max_transmit_size(topic.hash(), limits.max_op_bytes + 512)
        .duplicate_cache_time(Duration::from_secs(GOSSIP_MAX_AGE))
        // Ids are content addresses: a peer relaying an op we published
        // (because it got it by anti-entropy and published it too) is
        // normal, not a forgery of our messages to be penalised.
        .allow_self_origin(true)
        .build()?;
    let mut behaviour = gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, config)?;
    let (params, thresholds) = scoring(topic);
    behaviour.with_peer_score(params, thresholds)?;
    Ok(behaviour)
}

/// Peer-score parameters (gossipsub v1.1 §"Peer Scoring"). Positive credit
/// is capped low, so a peer cannot bank goodwill and then spend it on
/// invalid ops; mesh-delivery penalties (P3, P3b) are off because a quiet
/// network would punish honest peers for silence.
fn scoring(topic: &IdentTopic) -> (PeerScoreParams, PeerScoreThresholds) {
    let topic_params = TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 300.0,
        first_message_deliveries_weight: 0.5,
        first_message_deliveries_decay: 0.9,
        first_message_deliveries_cap: 20.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: INVALID_MESSAGE_WEIGHT,
        invalid_message_deliveries_decay: INVALID_MESSAGE_DECAY,
        ..TopicScoreParams::default()
    };
    let mut params = PeerScoreParams {
        topic_score_cap: 10.0,
        // P5 carries the sync-path penalties (see `event_loop::SYNC_PENALTY`).
        app_specific_weight: 1.0,
        // P7 (GRAFT during backoff, IWANT promises broken): a busy honest
        // peer breaks a few promises; only a pattern (more than 6 at once,
        // then quadratic) is penalised, so a ban takes a dozen or more.
        behaviour_penalty_weight: -2.0,
        behaviour_penalty_threshold: 6.0,
        behaviour_penalty_decay: 0.9,
        // A peer that cannot keep up with a burst is slow, not hostile:
        // gossipsub already drops what it cannot queue.
        slow_peer_weight: 0.0,
        // Keep a misbehaving peer's score as long as its ban.
        retain_score: BAN_DURATION,
        ..PeerScoreParams::default()
    };
    params.topics.insert(topic.hash(), topic_params);
    // Every node of a local cluster shares the loopback address; P6 is a
    // Sybil defence for real addresses only.
    params
        .ip_colocation_factor_whitelist
        .insert(std::net::Ipv4Addr::LOCALHOST.into());
    let thresholds = PeerScoreThresholds {
        gossip_threshold: -10.0,
        publish_threshold: -50.0,
        graylist_threshold: GRAYLIST_THRESHOLD,
        accept_px_threshold: 5.0,
        opportunistic_graft_threshold: 3.0,
    };
    (params, thresholds)
}

/// What a gossiped (or fetched) op is, judged against the ledger.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Valid and not held yet.
    New(Box<did_core::Validated>),
    /// Held already; `fresh` when younger than [`GOSSIP_MAX_AGE`].
    Known { fresh: bool },
    /// Self-consistent (shape, limits, signature) but its parent is unknown.
    Orphan(Box<Operation>, Cid),
    /// Cannot be judged now (its clock is ahead of ours).
    Later(OpError),
    /// Invalid, whatever else arrives.
    Invalid(OpError),
}

/// Judges an op's bytes as received from a peer. Pure apart from the
/// ledger read; `now` is unix seconds.
pub(crate) fn judge(bytes: &[u8], ledger: &RwLock<Ledger>, limits: &Limits, now: u64) -> Verdict {
    if bytes.len() > limits.max_op_bytes {
        return Verdict::Invalid(OpError::Limit(format!(
            "operation is {} bytes",
            bytes.len()
        )));
    }
    // A non-canonical encoding of a valid op would get another message id
    // and circulate as a second message: refuse it.
    let (op, received) = match Operation::from_canonical_json(bytes) {
        Ok(parsed) => parsed,
        Err(e) => return Verdict::Invalid(e),
    };
    if let Err(e) = did_core::op::check_clock(&op, now, limits) {
        return Verdict::Later(e);
    }
    let not_canonical = || Verdict::Invalid(OpError::Malformed("not in canonical encoding".into()));
    let Ok(ledger) = ledger.read() else {
        return Verdict::Later(OpError::Invalid("ledger unavailable".into()));
    };
    // A CID we hold names a body we hold with a valid signature: known, no
    // signature check needed (another signature over the same body, if
    // any, adds nothing).
    if ledger.contains(&received) {
        return Verdict::Known {
            fresh: op.created_at.saturating_add(GOSSIP_MAX_AGE) >= now,
        };
    }
    match ledger.validate(&op) {
        Ok(Check::Known(cid)) if cid == received => Verdict::Known {
            fresh: op.created_at.saturating_add(GOSSIP_MAX_AGE) >= now,
        },
        Ok(Check::New(v)) if v.cid == received => Verdict::New(v),
        Ok(_) => not_canonical(),
        Err(OpError::UnknownPrev(_)) => {
            drop(ledger);
            match op.cid() {
                Ok(cid) if cid == received => Verdict::Orphan(Box::new(op), cid),
                _ => not_canonical(),
            }
        }
        Err(e) => Verdict::Invalid(e),
    }
}

/// Shared by gossip validation and anti-entropy: judges ops from peers and
/// hands the good ones to the writer.
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
                    (MessageAcceptance::Accept, Some(Ok(v)))
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
                        Ok(()) => (MessageAcceptance::Ignore, Some(Err((op, cid)))),
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
            let report = super::event_loop::Command::Report {
                id: msg.id,
                source: msg.source,
                acceptance,
            };
            if ingest.client.send(report).await.is_err() {
                return;
            }
            // A new op was verified above: the writer does not verify it again.
            let stored = match store {
                Some(Ok(v)) => Some(ingest.state.writer.submit_validated(*v).await),
                Some(Err((op, cid))) => {
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

/// Publishes ops as they become durable, and keeps the sync index in step
/// with the ledger.
pub(crate) async fn run_publisher(
    mut committed: broadcast::Receiver<Arc<Validated>>,
    client: Client,
    index: SharedIndex,
    ledger: Arc<RwLock<Ledger>>,
) {
    loop {
        match committed.recv().await {
            Ok(v) => {
                index.insert(v.cid);
                // A parked orphan that commits is resolved: its sender's
                // budget gets the slot back.
                client.budgets().settle(&v.cid);
                if v.op.created_at.saturating_add(GOSSIP_MAX_AGE) >= crate::now()
                    && client.publish(v.cid, v.bytes.clone()).await.is_err()
                {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                // Commits outran us; the index must not miss them.
                tracing::warn!(
                    missed,
                    "publisher lagged behind the writer; rebuilding the sync index"
                );
                index.rebuild(&ledger);
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use did_core::keys::public_of;
    use did_core::DidState;
    use ed25519_dalek::SigningKey;

    fn ledger_with(ops: &[&Operation]) -> RwLock<Ledger> {
        let mut l = Ledger::default();
        for op in ops {
            l.apply((*op).clone()).unwrap();
        }
        RwLock::new(l)
    }

    fn bytes(op: &Operation) -> Vec<u8> {
        op.canonical_bytes().unwrap()
    }

    #[test]
    fn verdicts() {
        let now = 1_800_000_000;
        let limits = Limits::default();
        let k = SigningKey::from_bytes(&[1; 32]);
        let create = Operation::create(DidState::single_key(public_of(&k)), now, &k).unwrap();
        let did = did_core::op::did_from_genesis(&create.cid().unwrap());
        let update = Operation::update(
            &did,
            create.cid().unwrap(),
            DidState::single_key(public_of(&k)),
            now,
            &k,
        )
        .unwrap();
        let empty = ledger_with(&[]);
        let held = ledger_with(&[&create]);

        assert!(matches!(
            judge(&bytes(&create), &empty, &limits, now),
            Verdict::New(_)
        ));
        assert!(matches!(
            judge(&bytes(&create), &held, &limits, now),
            Verdict::Known { fresh: true }
        ));
        assert!(matches!(
            judge(&bytes(&create), &held, &limits, now + 10 * GOSSIP_MAX_AGE),
            Verdict::Known { fresh: false }
        ));
        assert!(matches!(
            judge(&bytes(&update), &empty, &limits, now),
            Verdict::Orphan(..)
        ));
        assert!(matches!(
            judge(&bytes(&update), &held, &limits, now),
            Verdict::New(_)
        ));

        // The same op, not canonically encoded: another message id, refused.
        let pretty = serde_json::to_vec_pretty(&create).unwrap();
        assert!(matches!(
            judge(&pretty, &empty, &limits, now),
            Verdict::Invalid(_)
        ));
        assert!(matches!(
            judge(&pretty, &held, &limits, now),
            Verdict::Invalid(_)
        ));
        // Forged signature; garbage; too large.
        let mut forged = create.clone();
        forged.sig = update.sig.clone();
        assert!(matches!(
            judge(&bytes(&forged), &empty, &limits, now),
            Verdict::Invalid(_)
        ));
        assert!(matches!(
            judge(b"{not json", &empty, &limits, now),
            Verdict::Invalid(_)
        ));
        assert!(matches!(
            judge(&vec![b' '; limits.max_op_bytes + 1], &empty, &limits, now),
            Verdict::Invalid(_)
        ));
        // A hijack: an update signed by a key the DID never listed.
        let intruder = SigningKey::from_bytes(&[2; 32]);
        let hijack = Operation::update(
            &did,
            create.cid().unwrap(),
            DidState::single_key(public_of(&intruder)),
            now,
            &intruder,
        )
        .unwrap();
        assert!(matches!(
            judge(&bytes(&hijack), &held, &limits, now),
            Verdict::Invalid(_)
        ));
        // From the future: maybe our clock is wrong; not the sender's fault.
        let future =
            Operation::create(DidState::single_key(public_of(&k)), now + 3600, &k).unwrap();
        assert!(matches!(
            judge(&bytes(&future), &empty, &limits, now),
            Verdict::Later(_)
        ));
    }

    #[test]
    fn topic_names_the_network() {
        assert_eq!(topic("mesh-abc").to_string(), "/didmesh/mesh-abc/ops/1");
    }
}
