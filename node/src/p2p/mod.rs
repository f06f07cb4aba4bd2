//! The peer-to-peer layer: libp2p over TCP with noise and yamux; identify
//! and Kademlia for discovery; gossipsub to push ops; a request-response
//! protocol for anti-entropy (pull).
//!
//! ## Layout
//!
//! Modules are layered; each uses only those above it (no cycles):
//!
//! * [`key`] — the node's libp2p keypair (`<data-dir>/p2p-key`): a stable
//!   peer id.
//! * [`peers`] — the peer snapshot the event loop publishes.
//! * [`bootstrap`] — `--bootstrap` entries by address or DNS name,
//!   re-resolved and redialed while disconnected.
//! * [`codec`] — `/didmesh/sync/2` framing, with length limits.
//! * [`budget`] — per-peer budgets: orphans outstanding, gossip and fetch
//!   rates, and the addresses of banned peers.
//! * [`gossip`] — the topic, gossipsub's configuration and peer scoring.
//! * [`event_loop`] — the one task that owns the swarm, and the [`Client`]
//!   that talks to it.
//! * [`ingest`] — where every op from a peer enters: the gossip validator
//!   and the screening of fetched ops (did-core's [`did_core::ingest`]
//!   gives the verdicts), and the hand-off to the writer.
//! * [`anti_entropy`] — the sync index and the reconciliation sessions
//!   (did-core's [`did_core::sync`] does the set logic; this drives it).
//! * [`publish`] — committed ops onto the topic and into the sync index.
//!
//! ```text
//!  event_loop   ──► budget, codec, gossip, peers
//!  ingest       ──► event_loop
//!  anti_entropy ──► codec, event_loop, ingest
//!  publish      ──► anti_entropy, event_loop
//!  bootstrap    ──► event_loop, peers
//!  key, peers, gossip: nothing in p2p; codec, budget: crate::metrics only
//! ```
//!
//! This file only wires them together ([`start`]).
//!
//! ## Across hosts
//!
//! The transport is TCP with DNS (`/dns4/NAME/tcp/PORT` addresses), so a
//! node is named the way a cluster of hosts or containers names it:
//! `--bootstrap /dns4/node1/tcp/7101` (the `/p2p/<peer id>` part is
//! optional) and `--announce /dns4/node2/tcp/7101`, the addresses identify,
//! hence Kademlia, advertise instead of the interfaces the node listens on
//! (NAT, containers). Bootstrap names are resolved again at each redial
//! ([`bootstrap`]).
//!
//! ## Shape
//!
//! [`start`] builds the swarm and spawns the tasks; it returns a [`Client`],
//! a cheap clonable handle (the shape of rust-libp2p's file-sharing
//! example). Everything else talks to the swarm through its typed methods:
//! each is a command over a bounded channel, answers come back on a
//! oneshot; the command type itself is private to the event loop. The
//! event loop never awaits anything but its own channels and the swarm, so
//! validation (signature checks) and storage (fsync) never stall it.
//!
//! ```text
//!  HTTP / sync ──► Writer ──committed──► publisher ──publish──► ┐
//!                    ▲                                          │
//!                    │ submit(op, orphans allowed)          EventLoop (swarm)
//!  ingest ◄──gossip message──── ┘ ◄────────────────────────────┤
//!  anti-entropy ◄──inbound sync request / new connection───────┘
//!        └──────────request / respond──────────────────────────►
//! ```
//!
//! ## Protocols
//!
//! | protocol | purpose |
//! | --- | --- |
//! | `/didmesh/id/1.0.0` (identify) | agent, listen addresses, protocols |
//! | `/didmesh/kad/1.0.0` (Kademlia) | learn more peers than `--bootstrap` names |
//! | gossipsub topic `/didmesh/<network_id>/ops/3` | push: a bundle of the ops one commit round made durable per message, message id = blake3 of the bundle |
//! | `/didmesh/sync/2` | pull: reconciliation rounds and op fetches, see [`codec`]; and the consume requests that keep authorization codes single-use across nodes ([`crate::oidc::consume`]) |

pub mod anti_entropy;
pub mod bootstrap;
pub mod budget;
pub mod codec;
pub mod event_loop;
pub mod gossip;
pub mod ingest;
pub mod key;
pub mod peers;
pub mod publish;

pub use event_loop::{Client, P2pConfig, P2pError};
pub use peers::{BannedPeer, PeerInfo, PeerView};

use crate::metrics::P2pMetrics;
use crate::NodeState;
use budget::Budgets;
use std::sync::Arc;
use std::time::Duration;

/// Starts the p2p layer for `state`: listens, dials the bootstrap peers,
/// spawns the event loop, the gossip validator, the publisher and
/// anti-entropy. Must be called inside a tokio runtime.
pub async fn start(
    state: Arc<NodeState>,
    config: P2pConfig,
    data_dir: &std::path::Path,
) -> Result<Client, P2pError> {
    for addr in &config.bootstrap {
        bootstrap::parse(addr).map_err(|e| P2pError::Transport(format!("--bootstrap {e}")))?;
    }
    for addr in &config.announce {
        bootstrap::check_announce(addr)
            .map_err(|e| P2pError::Transport(format!("--announce {e}")))?;
    }
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
        &config,
        metrics,
        budgets.clone(),
    )?;
    let local = client.peer_id();
    tokio::spawn(event_loop.run());
    tokio::spawn(bootstrap::run(client.clone(), config.bootstrap.clone()));
    let ingest = ingest::Ingest::new(state.clone(), client.clone());
    tokio::spawn(ingest::run_validator(inbound.gossip, ingest.clone()));
    tokio::spawn(publish::run_publisher(
        committed,
        client.clone(),
        index.clone(),
        state.ledger.clone(),
    ));
    tokio::spawn(sweep_orphans(budgets, state.ledger.clone()));
    // Peers redeeming this node's authorization codes ask it to consume
    // them (single use across nodes).
    tokio::spawn(crate::oidc::consume::serve_peers(
        state.clone(),
        client.clone(),
        inbound.consume,
    ));
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
