//! The peer-to-peer layer: libp2p over TCP with noise and yamux; identify
//! and Kademlia for discovery; gossipsub to push ops; a request-response
//! protocol for anti-entropy (pull).
//!
//! ## Layout
//!
//! * [`key`] — the node's libp2p keypair (`<data-dir>/p2p-key`): a stable
//!   peer id.
//! * [`codec`] — `/didmesh/sync/1` framing, with length limits.
//! * [`gossip`] — the topic, gossipsub's configuration and peer scoring,
//!   and the validation of gossiped ops (accept / ignore / reject).
//! * [`budget`] — per-peer budgets: orphans outstanding, gossip and fetch
//!   rates, and the addresses of banned peers.
//! * [`anti_entropy`] — the sync index and the reconciliation sessions
//!   (did-core's [`did_core::sync`] does the set logic; this drives it).
//! * [`event_loop`] — the one task that owns the swarm.
//! * [`metrics`] — counters for `/metrics`.
//!
//! ## Shape
//!
//! [`start`] builds the swarm and spawns the tasks; it returns a [`Client`],
//! a cheap clonable handle. Everything else talks to the swarm through it:
//! commands go over a bounded channel, answers come back on a oneshot. The
//! event loop never awaits anything but its own channels and the swarm, so
//! validation (signature checks) and storage (fsync) never stall it.
//!
//! ```text
//!  HTTP / sync ──► Writer ──committed──► publisher ──Publish──► ┐
//!                    ▲                                          │
//!                    │ submit(op, orphans allowed)          EventLoop (swarm)
//!  validator ◄──gossip message── ┘ ◄───────────────────────────┤
//!  anti-entropy ◄──inbound sync request / new connection───────┘
//!        └──────────Request / Respond──────────────────────────►
//! ```
//!
//! ## Protocols
//!
//! | protocol | purpose |
//! | --- | --- |
//! | `/didmesh/id/1.0.0` (identify) | agent, listen addresses, protocols |
//! | `/didmesh/kad/1.0.0` (Kademlia) | learn more peers than `--bootstrap` names |
//! | gossipsub topic `/didmesh/<network_id>/ops/1` | push: one op's canonical bytes per message, message id = its CID |
//! | `/didmesh/sync/1` | pull: reconciliation rounds and op fetches, see [`codec`] |

pub mod anti_entropy;
pub mod budget;
pub mod codec;
pub mod event_loop;
pub mod gossip;
pub mod key;
pub mod metrics;

use crate::NodeState;
use budget::Budgets;
use libp2p::{Multiaddr, PeerId};
use metrics::P2pMetrics;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Commands queued for the event loop. Sized for a burst of commits being
/// published (each is one command) without blocking the publisher for long;
/// when full, senders wait (back-pressure), nothing is dropped.
pub const COMMAND_CHANNEL: usize = 1024;

/// What the node needs to join the network.
#[derive(Debug, Clone)]
pub struct P2pConfig {
    /// Where to listen for peers.
    pub listen: Multiaddr,
    /// Peers dialled at start and whenever no peer is connected.
    pub bootstrap: Vec<Multiaddr>,
    /// Time between anti-entropy rounds with a random peer.
    pub sync_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    #[error(transparent)]
    Key(#[from] crate::identity::IdentityError),
    #[error("cannot set up the p2p transport: {0}")]
    Transport(String),
    #[error("cannot listen on {0}: {1}")]
    Listen(Multiaddr, String),
    #[error("the p2p event loop has stopped")]
    Stopped,
    #[error("request to {peer} failed: {why}")]
    Request { peer: PeerId, why: String },
}

/// One connected peer, as `/v1/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerInfo {
    pub peer_id: String,
    /// Remote address of the first connection.
    pub addr: String,
    /// The peer's identify agent, once known.
    pub agent: Option<String>,
    /// Its gossipsub score here (negative: it sent invalid ops).
    pub score: f64,
    /// Ops from it this node refused as invalid.
    pub rejected: u64,
    /// Its orphans parked here now (at most `budget::ORPHANS_PER_PEER`).
    pub orphans: usize,
    /// Its orphans refused because it was at that budget.
    pub orphans_capped: u64,
    /// Connected from the address of a banned peer: smaller budgets, a
    /// negative score, banned at its first invalid op.
    pub distrusted: bool,
}

/// A peer refused for a while (its score fell below the graylist threshold).
#[derive(Debug, Clone, Serialize)]
pub struct BannedPeer {
    pub peer_id: String,
    pub seconds_left: u64,
    /// Its gossipsub score, kept while it is banned.
    pub score: f64,
}

/// A snapshot the event loop publishes for readers (status, tests).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerView {
    pub peer_id: String,
    /// Addresses this node listens on, with `/p2p/<peer_id>`: what another
    /// node passes to `--bootstrap`.
    pub listen_addrs: Vec<String>,
    pub peers: Vec<PeerInfo>,
    /// Peers disconnected for a low score.
    pub banned: Vec<BannedPeer>,
    /// Addresses (IPs) of banned peers, remembered for the ban's length.
    pub banned_addrs: usize,
}

/// A cheap, clonable handle to the p2p layer.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<event_loop::Command>,
    view: watch::Receiver<Arc<PeerView>>,
    metrics: Arc<P2pMetrics>,
    budgets: Arc<Budgets>,
    peer_id: PeerId,
}

impl Client {
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The latest snapshot of peers and addresses.
    pub fn view(&self) -> Arc<PeerView> {
        self.view.borrow().clone()
    }

    pub fn metrics(&self) -> &P2pMetrics {
        &self.metrics
    }

    /// The per-peer budgets.
    pub(crate) fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// `/v1/status` fields of the p2p layer.
    pub fn status_json(&self) -> serde_json::Value {
        let view = self.view();
        serde_json::json!({
            "peer_id": view.peer_id,
            "listen_addrs": view.listen_addrs,
            "peers": view.peers,
            "banned_peers": view.banned,
            "banned_addrs": view.banned_addrs,
            "orphans_by_peers": self.budgets.orphans_held(),
            "replication": "gossipsub push + range-based anti-entropy",
        })
    }

    /// Prometheus text of the p2p counters.
    pub fn metrics_text(&self) -> String {
        let peers = self.view.borrow().peers.len();
        self.metrics.render(peers, self.budgets.orphans_held())
    }

    async fn send(&self, cmd: event_loop::Command) -> Result<(), P2pError> {
        self.commands.send(cmd).await.map_err(|_| P2pError::Stopped)
    }

    /// Publishes an op's canonical bytes on the topic.
    pub(crate) async fn publish(&self, cid: did_core::Cid, bytes: Vec<u8>) -> Result<(), P2pError> {
        self.send(event_loop::Command::Publish { cid, bytes }).await
    }

    /// Sends a sync request and waits for the answer.
    pub(crate) async fn request(
        &self,
        peer: PeerId,
        request: codec::SyncRequest,
    ) -> Result<codec::SyncResponse, P2pError> {
        let (reply, rx) = oneshot::channel();
        self.send(event_loop::Command::Request {
            peer,
            request,
            reply,
        })
        .await?;
        rx.await.map_err(|_| P2pError::Stopped)?
    }

    /// Currently connected peers.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, P2pError> {
        let (reply, rx) = oneshot::channel();
        self.send(event_loop::Command::ConnectedPeers { reply })
            .await?;
        rx.await.map_err(|_| P2pError::Stopped)
    }

    /// Reports that `peer` sent an invalid op outside gossip (a fetch).
    pub(crate) async fn punish(&self, peer: PeerId) -> Result<(), P2pError> {
        self.send(event_loop::Command::Punish { peer }).await
    }
}

/// Starts the p2p layer for `state`: listens, dials the bootstrap peers,
/// spawns the event loop, the gossip validator, the publisher and
/// anti-entropy. Must be called inside a tokio runtime.
pub async fn start(
    state: Arc<NodeState>,
    config: P2pConfig,
    data_dir: &std::path::Path,
) -> Result<Client, P2pError> {
    let keypair = key::load_or_create(data_dir)?;
    let metrics = Arc::new(P2pMetrics::default());
    let budgets = Arc::new(Budgets::new(metrics.clone()));
    // Subscribe before the index is built from the ledger, so no commit
    // falls between the two.
    let committed = state.writer.subscribe();
    let index = anti_entropy::SharedIndex::from_ledger(&state.ledger);
    let (event_loop, client, inbound) = event_loop::EventLoop::new(
        keypair,
        &state.genesis.network_id,
        state.limits,
        &config,
        metrics.clone(),
        budgets.clone(),
    )?;
    let local = client.peer_id;
    tokio::spawn(event_loop.run());
    let ingest = gossip::Ingest::new(state.clone(), client.clone());
    tokio::spawn(gossip::run_validator(inbound.gossip, ingest.clone()));
    tokio::spawn(gossip::run_publisher(
        committed,
        client.clone(),
        index.clone(),
        state.ledger.clone(),
    ));
    tokio::spawn(sweep_orphans(budgets, state.ledger.clone()));
    let sync = anti_entropy::AntiEntropy::new(client.clone(), index, ingest, config.sync_interval);
    tokio::spawn(sync.run(inbound.sync));
    tracing::info!(peer_id = %local, listen = %config.listen, "p2p started");
    Ok(client)
}

/// How often orphan charges are checked against the ledger and expired.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Settles orphan charges whose op is now held (a safety net: the publisher
/// settles them as they commit, but it can lag), expires old ones, and
/// prunes the accounts of departed peers. Runs until the process ends.
async fn sweep_orphans(budgets: Arc<Budgets>, ledger: Arc<std::sync::RwLock<did_core::Ledger>>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // One lock at a time: the charges, then the ledger, then the
        // charges again.
        let charged = budgets.charged();
        let held: Vec<did_core::Cid> = match ledger.read() {
            Ok(l) => charged.into_iter().filter(|c| l.contains(c)).collect(),
            Err(_) => vec![],
        };
        budgets.sweep(&held);
    }
}
