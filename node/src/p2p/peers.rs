//! The snapshot of peers the event loop publishes for readers (`/v1/status`,
//! tests): plain data, so readers never touch the swarm.

use serde::Serialize;

/// One connected peer, as `/v1/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerInfo {
    pub peer_id: String,
    /// Remote address of the first connection.
    pub addr: String,
    /// Addresses this node dialed it at (its open outbound connections):
    /// how a `--bootstrap` address without `/p2p/<id>` is matched to a peer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dialed: Vec<String>,
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

/// What the event loop publishes on every change and every second.
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
