//! Pull: anti-entropy over `/didmesh/sync/2`.
//!
//! On every new connection, and every `--sync-interval-ms` with a random
//! connected peer, this node opens a reconciliation session
//! ([`did_core::sync::Session`]): it sends a message, the peer answers with
//! [`did_core::sync::Reconciler::respond`] (stateless), and so on until one
//! side has nothing left open. After each round the CIDs learned to be
//! missing are fetched from that peer in batches of
//! [`MAX_FETCH_CIDS`](super::codec::MAX_FETCH_CIDS) and stored, parents
//! first (see below for children whose parent is not here yet). The responder learns
//! what *it* lacks from the same rounds and fetches it too, so one session
//! repairs both sides.
//!
//! Fetches are paced by the serving peer's sync budget, and ops whose
//! parent is still on its way are held back ([`Deferred`]) rather than
//! parked: a catch-up lists CIDs in hash order, not parents first, and
//! parking them would charge honest peers' orphan budgets (see
//! [`super::budget`]). Fetched ops never go to the ledger's orphan pool:
//! one whose parent never comes is dropped after [`DEFER_GRACE`] and counts
//! against the peer that served it, like an expired gossiped orphan.
//!
//! The [`SharedIndex`] (the sorted CID set with range fingerprints) is built
//! from the ledger at start and extended as ops commit (see
//! [`super::publish::run_publisher`]).
//!
//! Fetched ops are judged by [`super::ingest`] (did-core's
//! [`did_core::ingest::judge_fetched`]), the same checks gossip applies.
//!
//! A peer that answers with malformed messages or ops it was not asked for,
//! or serves invalid ops, is punished (gossipsub application score). A
//! peer that answers `Busy` is not: the session (or fetch) ends and a
//! later round picks it up, and it does not count as a failed session.
//!
//! Catch-up follows the difference (issue 12, item 5): each side fetches
//! what a round shows it lacks at once, while the session goes on (the
//! responder from [`Reconciler::respond`]'s `need`, the initiator from
//! [`Session::take_outcome`]), in batches of
//! [`MAX_FETCH_CIDS`](super::codec::MAX_FETCH_CIDS) with the next batch on
//! the wire while the last one is verified and written, so the two sides
//! repair each other in one session without waiting for a later one. A
//! batch's signatures are checked together on all cores
//! ([`crate::writer::verify_on_all_cores`], on a blocking thread, never on
//! the event loop) and the writer gets the proofs, so no fetched op is
//! verified twice. Fetched ops are not republished on gossip
//! ([`Replication::mark_quiet`]): they are repair, and a late joiner
//! echoing its whole catch-up would make every peer check it again. While
//! a backlog is being fetched the node logs a progress line every
//! [`PROGRESS_EVERY`] (ops/s, ETA) and `/v1/status` shows it as
//! `"catch_up"` ([`CatchUpStatus`]).

use super::codec::{SyncRequest, SyncResponse, MAX_FETCH_CIDS};
use super::event_loop::{Client, P2pError, SyncEvent};
use super::ingest::Ingest;
use crate::writer::{verify_formed_on_all_cores, SubmitError, Submitted};
use did_core::ingest::{self as verdicts, Received};
use did_core::op::Form;
use did_core::sync::{Message, Reconciler, Session, SyncConfig, SyncIndex};
use did_core::verify::SigVerified;
use did_core::{Cid, Ledger, OpError, Operation};
use libp2p::request_response::ResponseChannel;
use libp2p::PeerId;
use rand::seq::SliceRandom;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};

/// Reconciliation sessions this node runs as initiator at once.
pub const MAX_SESSIONS: usize = 4;
/// Inbound sync requests served at once; more are answered `Busy`.
pub const SERVE_CONCURRENCY: usize = 8;
/// While this node is fetching at least this many ops from a peer, it
/// answers that peer's reconciliation rounds `Busy`: they would only list
/// again the difference being fetched. The peer then still lacks what it
/// would have learnt from those rounds (after a partition both sides hold
/// ops the other lacks), so the node owes it a session: when the fetch from
/// the peer ends, it starts one with the peer at once, as initiator, rather
/// than waiting for a periodic round to pick that peer.
pub const CATCH_UP_BUSY: usize = 512;
/// Fetched ops held back until their parent arrives, all peers together.
/// Beyond, they are dropped and fetched again by a later session (after
/// their parents by then). A 10,000-op catch-up from two peers holds back
/// about 1,300 at its peak.
pub const MAX_DEFERRED: usize = 4096;
/// The same, per serving peer: one peer cannot fill the pool alone.
pub const MAX_DEFERRED_PER_PEER: usize = MAX_DEFERRED / 2;
/// A held-back op whose parent did not come within this long, while no
/// fetch is bringing it and its peer has no sync going with us, is dropped
/// and counts against that peer as an unresolved orphan (an honest peer
/// holds the parent of every op it serves, so reconciliation lists it).
pub const DEFER_GRACE: Duration = Duration::from_secs(15);
/// A fetch that would wait longer than this for the peer's sync budget
/// stops; the next session picks up what is left.
const MAX_SYNC_WAIT: Duration = Duration::from_secs(10);
/// How often a catch-up logs its progress.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// A fetch backlog at least this large is a catch-up worth a progress line.
pub const CATCH_UP_REPORT: u64 = 1000;
/// CIDs from peers remembered as not to republish; beyond (a writer that
/// never committed them, orphans never released), the set is cleared: at
/// worst a few ops from peers are published again.
const MAX_QUIET: usize = 1 << 17;

/// Replication state shared by anti-entropy, ingest and the publisher
/// (held by the [`Client`]).
#[derive(Default)]
pub(crate) struct Replication {
    /// Ops from peers (fetched, or gossiped) on their way to the writer:
    /// the publisher does not publish them when they commit.
    quiet: Mutex<HashSet<Cid>>,
    pub catch_up: CatchUpMeter,
}

impl Replication {
    /// `cid` came from a peer: not to be republished when it commits.
    pub fn mark_quiet(&self, cid: Cid) {
        if let Ok(mut q) = self.quiet.lock() {
            if q.len() >= MAX_QUIET {
                q.clear();
            }
            q.insert(cid);
        }
    }

    /// Forgets `cid`; true when it came from a peer (then not published).
    pub fn take_quiet(&self, cid: &Cid) -> bool {
        self.quiet.lock().is_ok_and(|mut q| q.remove(cid))
    }
}

/// What a catch-up looks like now (`/v1/status` `"catch_up"`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CatchUpStatus {
    /// Ops fetched and stored since the backlog began.
    pub ops_fetched: u64,
    /// Ops listed as missing and not fetched yet.
    pub ops_pending: u64,
    pub ops_per_s: f64,
    /// Seconds left at the current rate (`None` before the first op).
    pub eta_s: Option<u64>,
}

/// Counts a backlog being fetched: starts when the first fetch of an idle
/// node begins, ends when nothing is left to fetch.
#[derive(Default)]
pub(crate) struct CatchUpMeter(Mutex<Meter>);

#[derive(Default)]
struct Meter {
    pending: u64,
    fetched: u64,
    started: Option<Instant>,
}

impl CatchUpMeter {
    fn listed(&self, n: usize) {
        if let Ok(mut m) = self.0.lock() {
            if m.pending == 0 {
                *m = Meter {
                    started: Some(Instant::now()),
                    ..Meter::default()
                };
            }
            m.pending += n as u64;
        }
    }

    /// `n` listed ops are done with (stored, held or given up).
    fn settled(&self, n: usize) {
        if let Ok(mut m) = self.0.lock() {
            m.pending = m.pending.saturating_sub(n as u64);
        }
    }

    fn stored(&self, n: u64) {
        if let Ok(mut m) = self.0.lock() {
            m.fetched += n;
        }
    }

    /// The backlog now, `None` when there is none.
    pub fn status(&self) -> Option<CatchUpStatus> {
        let m = self.0.lock().ok()?;
        if m.pending == 0 {
            return None;
        }
        let secs = m.started?.elapsed().as_secs_f64().max(1e-3);
        let rate = m.fetched as f64 / secs;
        Some(CatchUpStatus {
            ops_fetched: m.fetched,
            ops_pending: m.pending,
            ops_per_s: (rate * 10.0).round() / 10.0,
            eta_s: (rate > 0.0).then(|| (m.pending as f64 / rate).ceil() as u64),
        })
    }
}

/// How a session as initiator ended.
enum SessionEnd {
    /// Nothing left open.
    Done,
    /// The peer answered `Busy`: not a failure, a later round retries.
    Busy,
}

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
    /// Peers whose rounds were answered `Busy` while we fetched from them
    /// ([`CATCH_UP_BUSY`]): each gets a session when that fetch ends.
    owed: Arc<Mutex<HashSet<PeerId>>>,
    /// Fetched ops waiting for a parent that a fetch is bringing.
    deferred: Arc<Mutex<Deferred>>,
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
            owed: Arc::default(),
            deferred: Arc::default(),
            serving: Arc::new(Semaphore::new(SERVE_CONCURRENCY)),
        }
    }

    pub async fn run(self, mut events: mpsc::Receiver<SyncEvent>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = progress.tick() => self.log_progress(),
                event = events.recv() => match event {
                    None => return,
                    Some(SyncEvent::Connected(peer)) => self.start_session(peer),
                    Some(SyncEvent::Request { peer, request, channel }) => self.serve(peer, request, channel),
                },
                _ = tick.tick() => {
                    self.settle_deferred().await;
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
                Ok(SessionEnd::Done) => metrics.sync_sessions.inc(),
                Ok(SessionEnd::Busy) => {
                    tracing::debug!(%peer, "peer busy; a later round syncs with it");
                }
                Err(e) => {
                    metrics.sync_failures.inc();
                    tracing::debug!(%peer, error = %e, "sync session failed");
                }
            }
        });
    }

    /// Logs a catch-up's progress (ops/s, ETA) while a large backlog is
    /// being fetched.
    fn log_progress(&self) {
        let Some(s) = self.client.replication().catch_up.status() else {
            return;
        };
        if s.ops_pending + s.ops_fetched >= CATCH_UP_REPORT {
            let eta = s
                .eta_s
                .map_or_else(|| "unknown".to_string(), |e| format!("{e} s"));
            tracing::info!(
                fetched = s.ops_fetched,
                pending = s.ops_pending,
                ops_per_s = s.ops_per_s,
                "catching up: {} ops fetched, {} to go, {:.0} ops/s, ETA {eta}",
                s.ops_fetched,
                s.ops_pending,
                s.ops_per_s,
            );
        }
    }

    /// One reconciliation session as initiator, fetching as it learns.
    async fn session(&self, peer: PeerId) -> Result<SessionEnd, P2pError> {
        let mut session = Session::new(self.config);
        let mut message = self.index.read(|i| session.initiate(i))?;
        loop {
            let answer = match self
                .client
                .request(peer, SyncRequest::Reconcile(message))
                .await?
            {
                SyncResponse::Reconcile(bytes) => bytes,
                SyncResponse::Busy => return Ok(SessionEnd::Busy),
                SyncResponse::Ops(_) | SyncResponse::Consumed(_) => {
                    self.misbehaved(peer).await;
                    return Err(P2pError::Request {
                        peer,
                        why: "ops or a consume verdict in answer to a reconciliation".into(),
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
                None => return Ok(SessionEnd::Done),
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
            if let Ok(mut owed) = self.owed.lock() {
                owed.insert(peer);
            }
            None
        } else {
            self.serving.clone().try_acquire_owned().ok()
        };
        let Some(permit) = permit else {
            let client = self.client.clone();
            tokio::spawn(async move { client.respond(channel, SyncResponse::Busy).await });
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
                // Both handled by the event loop (consume requests go to
                // crate::oidc::consume, never here).
                SyncRequest::Malformed(_) | SyncRequest::Consume(_) => SyncResponse::Busy,
                SyncRequest::Fetch(cids) => {
                    let ops = this.ingest.state.ledger.read().map(|l| {
                        cids.iter()
                            .filter_map(|c| l.get_bytes(c))
                            .collect::<Vec<_>>()
                    });
                    ops.map(SyncResponse::Ops).unwrap_or(SyncResponse::Busy)
                }
            };
            drop(permit);
            let _ = this.client.respond(channel, response).await;
        });
    }

    /// Fetches `need` from `peer` in batches and stores what arrives. Each
    /// batch is written while the next one is on the wire. Batches are
    /// paced by the peer's sync budget (see [`super::budget`]). Ops whose
    /// parent is still to come (in this fetch or another) are held back
    /// until it does (see [`Deferred`]); when this fetch ends, held-back
    /// ops whose parent no fetch is bringing any more are settled.
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
        let _ = self.count_fetching(peer, need.len(), true);
        let meter = &self.client.replication().catch_up;
        meter.listed(need.len());
        // Batch k is checked (parsed, signatures on all cores) while batch
        // k-1 is being written, and handed to the writer only once k-1 is
        // stored, so parents still reach the writer before children. At
        // most one batch is written, one checked and one on the wire.
        let mut storing: std::collections::VecDeque<tokio::task::JoinHandle<()>> =
            std::collections::VecDeque::new();
        let mut written: Option<tokio::sync::oneshot::Receiver<()>> = None;
        // Listed ops whose batch was stored (progress counts them done).
        let mut done = 0usize;
        for batch in need.chunks(MAX_FETCH_CIDS) {
            let wait = self.client.budgets().sync_delay(peer, batch.len());
            if wait > MAX_SYNC_WAIT {
                tracing::debug!(%peer, ?wait, "fetch paused by the peer's sync budget; left for later");
                break;
            }
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let answer = self
                .client
                .request(peer, SyncRequest::Fetch(batch.to_vec()))
                .await;
            let ops = match answer {
                Ok(SyncResponse::Ops(ops)) => ops,
                Ok(SyncResponse::Busy) => {
                    tracing::debug!(%peer, "peer busy; the rest of the fetch is left for later");
                    break;
                }
                Ok(_) => {
                    self.misbehaved(peer).await;
                    break;
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "fetch failed");
                    break;
                }
            };
            if storing.len() >= 2 {
                if let Some(oldest) = storing.pop_front() {
                    let _ = oldest.await;
                }
                meter.settled(MAX_FETCH_CIDS);
                done += MAX_FETCH_CIDS;
            }
            let this = self.clone();
            let asked: HashSet<Cid> = batch.iter().copied().collect();
            let before = written.take();
            let (stored, next) = tokio::sync::oneshot::channel();
            written = Some(next);
            storing.push_back(tokio::spawn(async move {
                let checked = this.check_fetched(peer, asked, ops).await;
                if let Some(before) = before {
                    // Sent or dropped (a failed task): either way k-1 is
                    // done with the writer.
                    let _ = before.await;
                }
                this.store_checked(peer, checked).await;
                let _ = stored.send(());
            }));
        }
        for task in storing {
            let _ = task.await;
        }
        if let Ok(mut fetching) = self.fetching.lock() {
            for c in &need {
                fetching.remove(c);
            }
        }
        meter.settled(need.len().saturating_sub(done));
        let drained = self.count_fetching(peer, need.len(), false);
        self.settle_deferred().await;
        if drained && self.owed.lock().is_ok_and(|mut o| o.remove(&peer)) {
            self.start_session(peer);
        }
    }

    /// Counts ops being fetched from `peer`; true when none are left.
    fn count_fetching(&self, peer: PeerId, n: usize, started: bool) -> bool {
        let Ok(mut from) = self.fetching_from.lock() else {
            return false;
        };
        let count = from.entry(peer).or_insert(0);
        *count = if started {
            *count + n
        } else {
            count.saturating_sub(n)
        };
        if *count == 0 {
            from.remove(&peer);
            return true;
        }
        false
    }

    /// Judges fetched ops ([`Ingest::judge_fetched`]: asked for, within
    /// the size limit, canonical, not held, not from the future) and checks
    /// their signatures, for [`Self::store_checked`]. The writer does the
    /// full validation; an op it refuses as invalid costs the peer score,
    /// and so does one refused here.
    async fn check_fetched(&self, peer: PeerId, asked: HashSet<Cid>, raw: Vec<Vec<u8>>) -> Checked {
        let now = crate::now();
        let mut ops: Vec<(Operation, Form)> = Vec::with_capacity(raw.len());
        let mut bad_here = 0u64;
        for bytes in raw {
            match self.ingest.judge_fetched(&bytes, &asked, now) {
                verdicts::Fetched::Take(r) => {
                    let Received { op, form, .. } = *r;
                    ops.push((op, form));
                }
                verdicts::Fetched::Invalid(e) => {
                    tracing::debug!(%peer, reason = %e, "peer served an unacceptable op");
                    bad_here += 1;
                }
                // Gossip brought it while the batch was on the wire, or it
                // is ahead of our clock: a later session fetches it again.
                verdicts::Fetched::Known | verdicts::Fetched::Later(_) => {}
            }
        }
        // Signatures, all of the batch on all cores, off the async
        // runtime; the writer gets the proofs and does not check again.
        let limits = self.ingest.state.limits;
        let checked = tokio::task::spawn_blocking(move || {
            let refs: Vec<(&Operation, &Form)> = ops.iter().map(|(op, f)| (op, f)).collect();
            let checked = verify_formed_on_all_cores(&refs, &limits);
            drop(refs);
            (ops, checked)
        })
        .await;
        let Ok((ops, checked)) = checked else {
            tracing::warn!(%peer, "signature check task failed; a later session fetches again");
            return Checked {
                group: vec![],
                bad: bad_here,
            };
        };
        let mut group: Vec<Fetched> = Vec::with_capacity(ops.len());
        for ((op, form), check) in ops.into_iter().zip(checked) {
            match check {
                Some(Ok(proof)) => group.push(Fetched {
                    cid: form.cid,
                    op,
                    form,
                    from: peer,
                    proof,
                }),
                Some(Err(e)) => {
                    tracing::info!(%peer, reason = %e, "peer served an op with a bad signature");
                    bad_here += 1;
                }
                None => {
                    tracing::debug!(%peer, "peer served a malformed op");
                    bad_here += 1;
                }
            }
        }
        Checked {
            group,
            bad: bad_here,
        }
    }

    /// Stores a [`Checked`] fetch response from `peer`, with the held-back
    /// ops it releases, and charges `peer` for what it served wrong.
    async fn store_checked(&self, peer: PeerId, checked: Checked) {
        let Checked {
            mut group,
            bad: bad_here,
        } = checked;
        // What arrived releases the ops held back for it, and so do
        // parents that other fetches or gossip committed meanwhile.
        let arrived: Vec<Cid> = group.iter().map(|f| f.cid).collect();
        group.extend(self.release(arrived));
        let bad = self.store_group(group, true).await;
        // Served ops that were not asked for, not canonical: this peer's.
        if bad_here > 0 {
            self.report_bad(peer, bad_here).await;
        }
        for (from, n) in bad {
            self.report_bad(from, n).await;
        }
    }

    /// Held-back ops whose parent is among `arrived` or now held, with
    /// their descendants.
    fn release(&self, arrived: Vec<Cid>) -> Vec<Fetched> {
        let ledger = self.ingest.state.ledger.read();
        match (ledger, self.deferred.lock()) {
            (Ok(l), Ok(mut d)) => {
                let mut r = d.release(arrived);
                r.extend(d.release_held(|p| l.contains(p)));
                r
            }
            _ => vec![],
        }
    }

    /// Stores held-back ops whose parent is now held, and drops those
    /// that waited [`DEFER_GRACE`] for a parent nobody is bringing (each
    /// counts against the peer that served it).
    async fn settle_deferred(&self) {
        let ready = self.release(vec![]);
        let busy: HashSet<PeerId> = {
            let mut busy: HashSet<PeerId> = self
                .sessions
                .lock()
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default();
            if let Ok(f) = self.fetching_from.lock() {
                busy.extend(f.keys().copied());
            }
            busy
        };
        let expired = match (self.fetching.lock(), self.deferred.lock()) {
            (Ok(fetching), Ok(mut d)) => d.expire(Instant::now(), DEFER_GRACE, |parent, from| {
                fetching.contains(parent) || busy.contains(from)
            }),
            _ => vec![],
        };
        let mut by_peer: HashMap<PeerId, u64> = HashMap::new();
        for f in expired {
            *by_peer.entry(f.from).or_default() += 1;
        }
        for (peer, n) in by_peer {
            tracing::info!(%peer, n, "fetched ops whose parent never came: dropped");
            self.client.budgets().unresolved(peer, n);
        }
        if !ready.is_empty() {
            for (from, n) in self.store_group(ready, true).await {
                self.report_bad(from, n).await;
            }
        }
    }

    /// Hands `group` to the writer together, parents first, so they share
    /// group commits. An op whose parent is neither held nor in the group
    /// is held back in the [`Deferred`] pool until the parent arrives (or
    /// dropped, for a later session, when the pool or the serving peer's
    /// share of it is full, or `may_defer` is false). Nothing fetched is
    /// parked as an orphan in the ledger. Returns, per peer, how many of
    /// its ops the writer refused as invalid.
    async fn store_group(&self, group: Vec<Fetched>, may_defer: bool) -> HashMap<PeerId, u64> {
        let group = parents_first(group);
        let in_group: HashSet<Cid> = group.iter().map(|f| f.cid).collect();
        let places: Vec<Parent> = {
            let Ok(ledger) = self.ingest.state.ledger.read() else {
                return HashMap::new();
            };
            group
                .iter()
                .map(|f| match f.op.prev {
                    None => Parent::Held,
                    Some(p) if in_group.contains(&p) => Parent::InGroup(p),
                    Some(p) if ledger.contains(&p) => Parent::Held,
                    Some(p) => Parent::Away(p),
                })
                .collect()
        };
        let now = Instant::now();
        let mut fate: HashMap<Cid, Fate> = HashMap::with_capacity(group.len());
        let mut store: Vec<Fetched> = Vec::with_capacity(group.len());
        let mut dropped = 0u64;
        for (f, place) in group.into_iter().zip(places) {
            let cid = f.cid;
            let wait_for = match place {
                Parent::Held => None,
                Parent::InGroup(p) => match fate.get(&p) {
                    Some(Fate::Stored) => None,
                    Some(Fate::Deferred) => Some(p),
                    _ => {
                        dropped += 1;
                        fate.insert(cid, Fate::Dropped);
                        continue;
                    }
                },
                Parent::Away(p) => Some(p),
            };
            let outcome = match wait_for {
                None => {
                    store.push(f);
                    Fate::Stored
                }
                Some(p) => {
                    let kept =
                        may_defer && self.deferred.lock().is_ok_and(|mut d| d.push(p, f, now));
                    if kept {
                        Fate::Deferred
                    } else {
                        dropped += 1;
                        Fate::Dropped
                    }
                }
            };
            fate.insert(cid, outcome);
        }
        if dropped > 0 {
            tracing::debug!(dropped, "fetched ops left for a later session");
        }
        let from: Vec<PeerId> = store.iter().map(|f| f.from).collect();
        let results = futures::future::join_all(
            store
                .into_iter()
                .map(|f| self.ingest.store(f.op, f.form, f.proof)),
        )
        .await;
        let metrics = self.client.metrics();
        let meter = &self.client.replication().catch_up;
        let mut bad: HashMap<PeerId, u64> = HashMap::new();
        let mut good: HashMap<PeerId, usize> = HashMap::new();
        for (from, r) in from.into_iter().zip(results) {
            match r {
                Ok(Submitted::Created(_)) => {
                    metrics.sync_fetched_ops.inc();
                    meter.stored(1);
                    *good.entry(from).or_default() += 1;
                }
                Ok(_) => {}
                // Its parent was refused (then the parent's server pays for
                // that) or raced away: a later session fetches it again.
                Err(SubmitError::Op(OpError::UnknownPrev(_))) => {
                    tracing::debug!(peer = %from, "fetched op whose parent is not held: dropped");
                }
                Err(SubmitError::Op(e)) => {
                    tracing::info!(peer = %from, reason = %e, "peer served an invalid op");
                    *bad.entry(from).or_default() += 1;
                }
                Err(e) => tracing::debug!(error = %e, "fetched op not stored"),
            }
        }
        // Good ops give most of their sync budget back (budget::SYNC_REFUND).
        for (peer, n) in good {
            self.client.budgets().sync_refund(peer, n);
        }
        bad
    }

    async fn report_bad(&self, peer: PeerId, bad: u64) {
        if bad > 0 {
            self.client.metrics().rejected.add(bad);
            self.misbehaved(peer).await;
        }
    }

    async fn misbehaved(&self, peer: PeerId) {
        let _ = self.client.punish(peer).await;
    }
}

/// Where a fetched op's parent is.
enum Parent {
    /// Held by the ledger (or the op has none).
    Held,
    /// Earlier in the same group.
    InGroup(Cid),
    /// Not here (yet): in a later batch, another fetch or a later round.
    Away(Cid),
}

/// What [`AntiEntropy::store_group`] did with an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Stored,
    Deferred,
    Dropped,
}

/// A fetch response, judged and signature-checked, waiting for its turn at
/// the writer.
struct Checked {
    group: Vec<Fetched>,
    /// Ops the peer served that were refused here.
    bad: u64,
}

/// A fetched op and the peer that served it (who answers for it).
pub(crate) struct Fetched {
    cid: Cid,
    op: Operation,
    /// Its canonical form as parsed (the writer does not encode it again).
    form: Form,
    from: PeerId,
    /// Its signatures checked on arrival.
    proof: SigVerified,
}

/// Fetched ops held back until their parent arrives. A catch-up fetches
/// in CID order, not parents first, and reconciliation may list a parent
/// rounds after its child (or another peer's fetch brings it), so children
/// routinely arrive first. They wait here, in the p2p layer, rather than in
/// the ledger's orphan pool, which gossip's per-peer budgets guard (see
/// [`super::budget`]). Bounded by [`MAX_DEFERRED`] and, per serving peer,
/// by [`MAX_DEFERRED_PER_PEER`]; an op leaves when its parent is held, or
/// is dropped after [`DEFER_GRACE`] (see [`AntiEntropy::settle_deferred`]).
#[derive(Default)]
pub(crate) struct Deferred {
    by_parent: HashMap<Cid, Vec<(Fetched, Instant)>>,
    /// CIDs of the ops held.
    held: HashSet<Cid>,
    per_peer: HashMap<PeerId, usize>,
}

impl Deferred {
    /// Holds `f` back until `parent` is released; false (and `f` is
    /// dropped) when full.
    fn push(&mut self, parent: Cid, f: Fetched, now: Instant) -> bool {
        if self.held.contains(&f.cid) {
            return true;
        }
        let mine = self.per_peer.get(&f.from).copied().unwrap_or(0);
        if self.held.len() >= MAX_DEFERRED || mine >= MAX_DEFERRED_PER_PEER {
            return false;
        }
        self.held.insert(f.cid);
        *self.per_peer.entry(f.from).or_default() += 1;
        self.by_parent.entry(parent).or_default().push((f, now));
        true
    }

    fn forget(&mut self, f: &Fetched) {
        self.held.remove(&f.cid);
        if let Some(n) = self.per_peer.get_mut(&f.from) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_peer.remove(&f.from);
            }
        }
    }

    /// The ops waiting for any of `parents`, and for those ops in turn.
    fn release(&mut self, parents: Vec<Cid>) -> Vec<Fetched> {
        let mut out = vec![];
        let mut next = parents;
        while let Some(p) = next.pop() {
            if let Some(children) = self.by_parent.remove(&p) {
                for (c, _) in children {
                    self.forget(&c);
                    next.push(c.cid);
                    out.push(c);
                }
            }
        }
        out
    }

    /// The ops whose parent `held` now says is held, and their descendants.
    fn release_held(&mut self, held: impl Fn(&Cid) -> bool) -> Vec<Fetched> {
        let ready: Vec<Cid> = self.by_parent.keys().filter(|p| held(p)).copied().collect();
        self.release(ready)
    }

    /// Takes out the ops that waited `grace` or longer, unless `waiting`
    /// says their parent may still come, and everything waiting on them.
    fn expire(
        &mut self,
        now: Instant,
        grace: Duration,
        waiting: impl Fn(&Cid, &PeerId) -> bool,
    ) -> Vec<Fetched> {
        let stale: Vec<Cid> = self
            .by_parent
            .iter()
            .filter(|(p, list)| {
                !self.held.contains(*p)
                    && list.iter().all(|(f, at)| {
                        now.saturating_duration_since(*at) >= grace && !waiting(p, &f.from)
                    })
            })
            .map(|(p, _)| *p)
            .collect();
        self.release(stale)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.held.len()
    }
}

/// Orders ops so that every parent in the set comes before its children
/// (then by `created_at`), so the writer takes a chain in one pass.
fn parents_first(group: Vec<Fetched>) -> Vec<Fetched> {
    let index: HashMap<Cid, usize> = group.iter().enumerate().map(|(i, f)| (f.cid, i)).collect();
    let mut depth: Vec<Option<usize>> = vec![None; group.len()];
    for start in 0..group.len() {
        // Walk up to the first op of known depth (or out of the group),
        // then assign depths on the way back down.
        let mut chain = vec![];
        let mut at = Some(start);
        let mut base = 0;
        while let Some(i) = at {
            if let Some(d) = depth[i] {
                base = d + 1;
                break;
            }
            chain.push(i);
            // CIDs are hashes of the op, prev included: no cycles, but a
            // bound keeps a malformed set from looping.
            if chain.len() > group.len() {
                break;
            }
            at = group[i].op.prev.and_then(|p| index.get(&p).copied());
        }
        for (k, i) in chain.iter().rev().enumerate() {
            depth[*i] = Some(base + k);
        }
    }
    let mut keyed: Vec<(usize, u64, Fetched)> = group
        .into_iter()
        .enumerate()
        .map(|(i, f)| (depth[i].unwrap_or(0), f.op.created_at, f))
        .collect();
    keyed.sort_by_key(|(d, t, _)| (*d, *t));
    keyed.into_iter().map(|(_, _, f)| f).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use did_core::keys::public_of;
    use did_core::DidState;
    use ed25519_dalek::SigningKey;

    /// A create and `n` updates chained on it, all at the same second (so
    /// `created_at` cannot order them).
    fn chain(seed: u8, n: usize) -> Vec<(Cid, Operation)> {
        let k = SigningKey::from_bytes(&[seed; 32]);
        let t = 1_800_000_000;
        let create = Operation::create(DidState::single_key(public_of(&k)), t, &k).unwrap();
        let did = did_core::op::did_from_genesis(&create.cid().unwrap());
        let mut ops = vec![(create.cid().unwrap(), create)];
        for _ in 0..n {
            let prev = ops.last().unwrap().0;
            let op =
                Operation::update(&did, prev, DidState::single_key(public_of(&k)), t, &k).unwrap();
            ops.push((op.cid().unwrap(), op));
        }
        ops
    }

    fn fetched(ops: Vec<(Cid, Operation)>) -> Vec<Fetched> {
        let from = PeerId::random();
        ops.into_iter()
            .map(|(cid, op)| {
                let form = op.check_form(&did_core::Limits::default()).unwrap();
                let proof = did_core::verify::verify_one(&op, &form).unwrap();
                Fetched {
                    cid,
                    op,
                    form,
                    from,
                    proof,
                }
            })
            .collect()
    }

    /// The catch-up line: nothing while idle, then fetched / pending /
    /// rate / ETA, and nothing again once the backlog is done.
    #[test]
    fn catch_up_progress_follows_the_backlog() {
        let m = CatchUpMeter::default();
        assert_eq!(m.status(), None);
        m.listed(1000);
        let s = m.status().unwrap();
        assert_eq!((s.ops_fetched, s.ops_pending, s.eta_s), (0, 1000, None));
        std::thread::sleep(Duration::from_millis(20));
        m.stored(400);
        m.settled(400);
        let s = m.status().unwrap();
        assert_eq!((s.ops_fetched, s.ops_pending), (400, 600));
        assert!(
            s.ops_per_s > 0.0 && s.eta_s.is_some_and(|e| e >= 1),
            "{s:?}"
        );
        m.settled(600);
        assert_eq!(m.status(), None);
        // A new backlog starts a new count.
        m.listed(5);
        assert_eq!(m.status().unwrap().ops_fetched, 0);
    }

    /// An op from a peer is skipped by the publisher once, then forgotten.
    #[test]
    fn ops_from_peers_are_marked_not_to_republish() {
        let r = Replication::default();
        let (a, b) = (Cid::of(b"a"), Cid::of(b"b"));
        r.mark_quiet(a);
        assert!(r.take_quiet(&a));
        assert!(!r.take_quiet(&a));
        assert!(!r.take_quiet(&b));
    }

    #[test]
    fn parents_come_first_whatever_the_input_order() {
        let mut ops = chain(1, 5);
        ops.extend(chain(2, 3));
        ops.reverse();
        ops.swap(1, 6);
        let sorted = parents_first(fetched(ops));
        let mut seen = HashSet::new();
        for f in &sorted {
            if let Some(p) = f.op.prev {
                assert!(seen.contains(&p), "a child came before its parent");
            }
            seen.insert(f.cid);
        }
        assert_eq!(sorted.len(), 10);
    }

    #[test]
    fn deferred_ops_are_released_with_their_descendants_and_bounded() {
        let now = Instant::now();
        let ops = chain(3, 3);
        let create = ops[0].0;
        let mut d = Deferred::default();
        // Each update waits for the op before it.
        for (parent, f) in ops.iter().map(|(c, _)| *c).zip(fetched(ops[1..].to_vec())) {
            assert!(d.push(parent, f, now));
        }
        assert!(d.release(vec![Cid::of(b"unrelated")]).is_empty());
        assert_eq!(d.release(vec![create]).len(), 3);
        assert_eq!(d.len(), 0);
        // Released because the ledger now holds the parent.
        let one = fetched(vec![ops[1].clone()]).pop().unwrap();
        assert!(d.push(create, one, now));
        assert_eq!(d.release_held(|p| *p == create).len(), 1);
        // Bounded per peer (one peer serves all of these), then overall.
        let filler = |i: usize, from: PeerId| {
            let mut f = fetched(vec![ops[1].clone()]).pop().unwrap();
            f.cid = Cid::of(&i.to_le_bytes());
            f.from = from;
            f
        };
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        for i in 0..MAX_DEFERRED_PER_PEER {
            assert!(d.push(Cid::of(b"p"), filler(i, a), now));
        }
        assert!(!d.push(Cid::of(b"p"), filler(usize::MAX, a), now));
        for i in 0..(MAX_DEFERRED - MAX_DEFERRED_PER_PEER) {
            assert!(d.push(Cid::of(b"q"), filler(i + MAX_DEFERRED, b), now));
        }
        assert!(!d.push(Cid::of(b"r"), filler(usize::MAX - 1, c), now));
        assert_eq!(d.release(vec![Cid::of(b"p")]).len(), MAX_DEFERRED_PER_PEER);
    }

    #[test]
    fn deferred_ops_expire_only_when_nothing_can_bring_their_parent() {
        let now = Instant::now();
        let ops = chain(4, 2);
        let mut d = Deferred::default();
        for (parent, f) in ops.iter().map(|(c, _)| *c).zip(fetched(ops[1..].to_vec())) {
            assert!(d.push(parent, f, now));
        }
        let grace = Duration::from_secs(15);
        let later = now + grace;
        // Too young, or the parent may still come: kept.
        assert!(d.expire(now, grace, |_, _| false).is_empty());
        assert!(d.expire(later, grace, |_, _| true).is_empty());
        assert_eq!(d.len(), 2);
        // Stale: the child and the grandchild waiting on it go.
        assert_eq!(d.expire(later, grace, |_, _| false).len(), 2);
        assert_eq!(d.len(), 0);
    }
}
