//! Pull: anti-entropy over `/didmesh/sync/1`.
//!
//! On every new connection, and every `--sync-interval-ms` with a random
//! connected peer, this node opens a reconciliation session
//! ([`did_core::sync::Session`]): it sends a message, the peer answers with
//! [`did_core::sync::Reconciler::respond`] (stateless), and so on until one
//! side has nothing left open. After each round the CIDs learned to be
//! missing are fetched from that peer in batches of
//! [`MAX_FETCH_CIDS`](super::codec::MAX_FETCH_CIDS) and stored (orphans wait
//! for their parents in the ledger's bounded pool). The responder learns
//! what *it* lacks from the same rounds and fetches it too, so one session
//! repairs both sides.
//!
//! The [`SharedIndex`] (the sorted CID set with range fingerprints) is built
//! from the ledger at start and extended as ops commit (see
//! [`super::gossip::run_publisher`]).
//!
//! A peer that answers with malformed messages or ops it was not asked for,
//! or serves invalid ops, is punished (gossipsub application score).

use super::codec::{SyncRequest, SyncResponse, MAX_FETCH_CIDS};
use super::event_loop::{Command, SyncEvent};
use super::gossip::Ingest;
use super::{Client, P2pError};
use crate::writer::{SubmitError, Submitted};
use did_core::sync::{Message, Reconciler, Session, SyncConfig, SyncIndex};
use did_core::{Cid, Ledger, Operation};
use libp2p::request_response::ResponseChannel;
use libp2p::PeerId;
use rand::seq::SliceRandom;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

/// Reconciliation sessions this node runs as initiator at once.
pub const MAX_SESSIONS: usize = 4;
/// Inbound sync requests served at once; more are answered `Busy`.
pub const SERVE_CONCURRENCY: usize = 8;
/// While this node is fetching at least this many ops from a peer, it
/// answers that peer's reconciliation rounds `Busy`: they would only list
/// again the difference being fetched (this node's own session with the
/// peer goes on, and tells the peer what the peer lacks).
pub const CATCH_UP_BUSY: usize = 512;

/// The sync index, shared by the publisher (inserts) and the sessions.
#[derive(Clone)]
pub(crate) struct SharedIndex(Arc<RwLock<SyncIndex>>);

impl SharedIndex {
    pub fn from_ledger(ledger: &RwLock<Ledger>) -> SharedIndex {
        let index = ledger
            .read()
            .map(|l| SyncIndex::from_ledger(&l))
            .unwrap_or_default();
        SharedIndex(Arc::new(RwLock::new(index)))
    }

    pub fn insert(&self, cid: Cid) {
        if let Ok(mut i) = self.0.write() {
            i.insert(cid);
        }
    }

    /// Rebuilds from the ledger (after the publisher missed commits).
    pub fn rebuild(&self, ledger: &RwLock<Ledger>) {
        let fresh = ledger.read().map(|l| SyncIndex::from_ledger(&l));
        if let (Ok(fresh), Ok(mut i)) = (fresh, self.0.write()) {
            *i = fresh;
        }
    }

    fn read<R>(&self, f: impl FnOnce(&SyncIndex) -> R) -> Result<R, P2pError> {
        self.0.read().map(|i| f(&i)).map_err(|_| P2pError::Stopped)
    }
}

/// Drives reconciliation sessions and serves the peers' ones.
#[derive(Clone)]
pub(crate) struct AntiEntropy {
    client: Client,
    index: SharedIndex,
    ingest: Ingest,
    interval: Duration,
    config: SyncConfig,
    /// Peers we have a session with right now.
    sessions: Arc<Mutex<HashSet<PeerId>>>,
    /// CIDs being fetched right now (from any peer), so two sessions do not
    /// fetch the same op.
    fetching: Arc<Mutex<HashSet<Cid>>>,
    /// How many of them come from each peer.
    fetching_from: Arc<Mutex<HashMap<PeerId, usize>>>,
    serving: Arc<Semaphore>,
}

/// Ends a session's bookkeeping however it ends.
struct SessionGuard(Arc<Mutex<HashSet<PeerId>>>, PeerId);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.lock() {
            s.remove(&self.1);
        }
    }
}

impl AntiEntropy {
    pub fn new(
        client: Client,
        index: SharedIndex,
        ingest: Ingest,
        interval: Duration,
    ) -> AntiEntropy {
        AntiEntropy {
            client,
            index,
            ingest,
            interval,
            config: SyncConfig::default(),
            sessions: Arc::default(),
            fetching: Arc::default(),
            fetching_from: Arc::default(),
            serving: Arc::new(Semaphore::new(SERVE_CONCURRENCY)),
        }
    }

    pub async fn run(self, mut events: mpsc::Receiver<SyncEvent>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    None => return,
                    Some(SyncEvent::Connected(peer)) => self.start_session(peer),
                    Some(SyncEvent::Request { peer, request, channel }) => self.serve(peer, request, channel),
                },
                _ = tick.tick() => {
                    let Ok(peers) = self.client.connected_peers().await else { return };
                    if let Some(peer) = peers.choose(&mut rand::thread_rng()) {
                        self.start_session(*peer);
                    }
                }
            }
        }
    }

    fn start_session(&self, peer: PeerId) {
        {
            let Ok(mut s) = self.sessions.lock() else {
                return;
            };
            if s.len() >= MAX_SESSIONS || !s.insert(peer) {
                return;
            }
        }
        let this = self.clone();
        tokio::spawn(async move {
            let _guard = SessionGuard(this.sessions.clone(), peer);
            let metrics = this.client.metrics();
            match this.session(peer).await {
                Ok(()) => metrics.sync_sessions.inc(),
                Err(e) => {
                    metrics.sync_failures.inc();
                    tracing::debug!(%peer, error = %e, "sync session failed");
                }
            }
        });
    }

    /// One reconciliation session as initiator, fetching as it learns.
    async fn session(&self, peer: PeerId) -> Result<(), P2pError> {
        let mut session = Session::new(self.config);
        let mut message = self.index.read(|i| session.initiate(i))?;
        loop {
            let answer = match self
                .client
                .request(peer, SyncRequest::Reconcile(message))
                .await?
            {
                SyncResponse::Reconcile(bytes) => bytes,
                SyncResponse::Busy => {
                    return Err(P2pError::Request {
                        peer,
                        why: "busy".into(),
                    })
                }
                SyncResponse::Ops(_) => {
                    self.misbehaved(peer).await;
                    return Err(P2pError::Request {
                        peer,
                        why: "ops in answer to a reconciliation".into(),
                    });
                }
            };
            let next = match self.index.read(|i| session.handle(i, &answer))? {
                Ok(next) => next,
                Err(e) => {
                    self.misbehaved(peer).await;
                    return Err(P2pError::Request {
                        peer,
                        why: e.to_string(),
                    });
                }
            };
            let (need, _have) = session.take_outcome();
            self.fetch(peer, need).await;
            match next {
                Some(m) => message = m,
                None => return Ok(()),
            }
        }
    }

    fn serve(&self, peer: PeerId, request: SyncRequest, channel: ResponseChannel<SyncResponse>) {
        let catching_up = matches!(request, SyncRequest::Reconcile(_))
            && self
                .fetching_from
                .lock()
                .map(|f| f.get(&peer).is_some_and(|n| *n >= CATCH_UP_BUSY))
                .unwrap_or(false);
        let permit = if catching_up {
            None
        } else {
            self.serving.clone().try_acquire_owned().ok()
        };
        let Some(permit) = permit else {
            let busy = Command::Respond {
                channel,
                response: SyncResponse::Busy,
            };
            let client = self.client.clone();
            tokio::spawn(async move { client.send(busy).await });
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            let response = match request {
                SyncRequest::Reconcile(bytes) => {
                    let step = this.index.read(|i| {
                        Message::decode(&bytes)
                            .and_then(|m| Reconciler::new(this.config).respond(i, &m))
                    });
                    match step {
                        Ok(Ok(step)) => {
                            if !step.need.is_empty() {
                                // The initiator has ops we lack: take them.
                                let fetcher = this.clone();
                                tokio::spawn(async move { fetcher.fetch(peer, step.need).await });
                            }
                            let reply = step.reply.unwrap_or_default();
                            SyncResponse::Reconcile(reply.encode())
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "malformed reconciliation message");
                            this.misbehaved(peer).await;
                            SyncResponse::Reconcile(Message::default().encode())
                        }
                        Err(_) => SyncResponse::Busy,
                    }
                }
                SyncRequest::Malformed(_) => SyncResponse::Busy, // handled by the event loop
                SyncRequest::Fetch(cids) => {
                    let ops = this.ingest.state.ledger.read().map(|l| {
                        cids.iter()
                            .filter_map(|c| l.get(c).map(|s| s.bytes.clone()))
                            .collect::<Vec<_>>()
                    });
                    ops.map(SyncResponse::Ops).unwrap_or(SyncResponse::Busy)
                }
            };
            drop(permit);
            let _ = this
                .client
                .send(Command::Respond { channel, response })
                .await;
        });
    }

    /// Fetches `need` from `peer` in batches and stores what arrives. Each
    /// batch is written while the next one is on the wire.
    async fn fetch(&self, peer: PeerId, need: Vec<Cid>) {
        let need: Vec<Cid> = {
            let (Ok(ledger), Ok(mut fetching)) =
                (self.ingest.state.ledger.read(), self.fetching.lock())
            else {
                return;
            };
            need.into_iter()
                .filter(|c| !ledger.contains(c) && fetching.insert(*c))
                .collect()
        };
        if need.is_empty() {
            return;
        }
        self.count_fetching(peer, need.len(), true);
        let mut storing: Option<tokio::task::JoinHandle<()>> = None;
        for batch in need.chunks(MAX_FETCH_CIDS) {
            let answer = self
                .client
                .request(peer, SyncRequest::Fetch(batch.to_vec()))
                .await;
            let ops = match answer {
                Ok(SyncResponse::Ops(ops)) => ops,
                Ok(_) => {
                    self.misbehaved(peer).await;
                    break;
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "fetch failed");
                    break;
                }
            };
            if let Some(previous) = storing.take() {
                let _ = previous.await;
            }
            let this = self.clone();
            let asked: HashSet<Cid> = batch.iter().copied().collect();
            storing = Some(tokio::spawn(async move {
                this.store_fetched(peer, asked, ops).await
            }));
        }
        if let Some(last) = storing {
            let _ = last.await;
        }
        if let Ok(mut fetching) = self.fetching.lock() {
            for c in &need {
                fetching.remove(c);
            }
        }
        self.count_fetching(peer, need.len(), false);
    }

    fn count_fetching(&self, peer: PeerId, n: usize, started: bool) {
        let Ok(mut from) = self.fetching_from.lock() else {
            return;
        };
        let count = from.entry(peer).or_insert(0);
        *count = if started {
            *count + n
        } else {
            count.saturating_sub(n)
        };
        if *count == 0 {
            from.remove(&peer);
        }
    }

    /// Checks fetched ops (asked for, canonical, not from the future) and
    /// hands them to the writer together, parents first, so they share
    /// group commits. The writer does the full validation; an op it refuses
    /// as invalid costs the peer score.
    async fn store_fetched(&self, peer: PeerId, asked: HashSet<Cid>, raw: Vec<Vec<u8>>) {
        let limits = self.ingest.state.limits;
        let now = crate::now();
        let mut ops: Vec<Operation> = Vec::with_capacity(raw.len());
        let mut bad = 0u64;
        for bytes in raw {
            let cid = Cid::of(&bytes);
            if !asked.contains(&cid) {
                bad += 1;
                continue;
            }
            // Gossip may have brought it while the batch was on the wire.
            if self
                .ingest
                .state
                .ledger
                .read()
                .is_ok_and(|l| l.contains(&cid))
            {
                continue;
            }
            let op = match Operation::from_json(&bytes) {
                Ok(op) if op.cid().ok() == Some(cid) => op,
                _ => {
                    bad += 1;
                    continue;
                }
            };
            if did_core::op::check_clock(&op, now, &limits).is_ok() {
                ops.push(op);
            }
        }
        // A parent is never younger than its child (the ledger checks it),
        // so this order lets the writer take children in the same batch.
        ops.sort_by_key(|op| op.created_at);
        let results =
            futures::future::join_all(ops.into_iter().map(|op| self.ingest.store(op))).await;
        let metrics = self.client.metrics();
        for r in results {
            match r {
                Ok(Submitted::Created(_)) => metrics.sync_fetched_ops.inc(),
                Ok(_) => {}
                Err(SubmitError::Op(e)) => {
                    tracing::info!(%peer, reason = %e, "peer served an invalid op");
                    bad += 1;
                }
                Err(e) => tracing::debug!(error = %e, "fetched op not stored"),
            }
        }
        if bad > 0 {
            metrics.rejected.add(bad);
            self.misbehaved(peer).await;
        }
    }

    async fn misbehaved(&self, peer: PeerId) {
        let _ = self.client.punish(peer).await;
    }
}
