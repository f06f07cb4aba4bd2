//! Counters of the peer-to-peer layer, exported at `/metrics` next to the
//! node's own.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// A Prometheus counter that can grow by more than one.
#[derive(Debug, Default)]
pub struct Count(AtomicU64);

impl Count {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct P2pMetrics {
    /// Gossip messages handed to validation.
    pub gossip_received: Count,
    /// Gossip messages accepted (valid new ops, or known ones).
    pub gossip_accepted: Count,
    /// Gossip messages ignored (unknown parent, stale duplicate, overload).
    pub gossip_ignored: Count,
    /// Ops refused as invalid, from gossip or from a fetch: the sender is
    /// scored down.
    pub rejected: Count,
    /// Committed ops published on the topic.
    pub published: Count,
    /// Reconciliation sessions this node started and finished.
    pub sync_sessions: Count,
    /// Reconciliation sessions that failed (peer gone, timeout, bad message).
    pub sync_failures: Count,
    /// Ops fetched by anti-entropy and stored.
    pub sync_fetched_ops: Count,
    /// Bytes of reconciliation frames, sent and received.
    pub sync_reconcile_bytes: Count,
    /// Bytes of fetch frames (requests and op responses), sent and received.
    pub sync_fetch_bytes: Count,
    /// Peers disconnected and banned for a low score.
    pub banned: Count,
    /// Orphans refused because their sender had its per-peer budget
    /// outstanding (see `budget::ORPHANS_PER_PEER`).
    pub orphans_capped: Count,
    /// Orphans refused because the node held its maximum of orphans.
    pub orphans_refused_full: Count,
    /// Orphans that expired unresolved (charged to their senders).
    pub orphans_expired: Count,
    /// Gossiped ops ignored because their sender exceeded its rate.
    pub gossip_rate_limited: Count,
    /// Fetch batches delayed by a peer's sync rate.
    pub sync_rate_waits: Count,
    /// New peers that connected from the address of a banned one.
    pub distrusted: Count,
}

impl P2pMetrics {
    /// Prometheus text of these counters plus the `peers` and
    /// `orphans_held` gauges.
    pub fn render(&self, peers: usize, orphans_held: usize) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            );
        };
        counter(
            "didmesh_p2p_gossip_received_total",
            "Gossiped ops received for validation.",
            self.gossip_received.get(),
        );
        counter(
            "didmesh_p2p_gossip_accepted_total",
            "Gossiped ops accepted and forwarded.",
            self.gossip_accepted.get(),
        );
        counter(
            "didmesh_p2p_gossip_ignored_total",
            "Gossiped ops neither accepted nor rejected.",
            self.gossip_ignored.get(),
        );
        counter(
            "didmesh_p2p_rejected_total",
            "Ops from peers refused as invalid (gossip or fetch).",
            self.rejected.get(),
        );
        counter(
            "didmesh_p2p_published_total",
            "Committed ops published on the gossip topic.",
            self.published.get(),
        );
        counter(
            "didmesh_p2p_sync_sessions_total",
            "Anti-entropy sessions completed.",
            self.sync_sessions.get(),
        );
        counter(
            "didmesh_p2p_sync_failures_total",
            "Anti-entropy sessions that failed.",
            self.sync_failures.get(),
        );
        counter(
            "didmesh_p2p_sync_fetched_ops_total",
            "Ops fetched by anti-entropy and stored.",
            self.sync_fetched_ops.get(),
        );
        counter(
            "didmesh_p2p_sync_reconcile_bytes_total",
            "Reconciliation bytes sent and received.",
            self.sync_reconcile_bytes.get(),
        );
        counter(
            "didmesh_p2p_sync_fetch_bytes_total",
            "Op fetch bytes sent and received.",
            self.sync_fetch_bytes.get(),
        );
        counter(
            "didmesh_p2p_banned_total",
            "Peers disconnected and banned for a low score.",
            self.banned.get(),
        );
        counter(
            "didmesh_p2p_orphans_per_peer_capped_total",
            "Orphans refused because their sender was at its per-peer orphan budget.",
            self.orphans_capped.get(),
        );
        counter(
            "didmesh_p2p_orphans_refused_full_total",
            "Orphans refused because the node held its maximum of orphans.",
            self.orphans_refused_full.get(),
        );
        counter(
            "didmesh_p2p_orphans_expired_total",
            "Orphans that expired unresolved, charged to the peers that sent them.",
            self.orphans_expired.get(),
        );
        counter(
            "didmesh_p2p_gossip_rate_limited_total",
            "Gossiped ops ignored because their sender exceeded its rate.",
            self.gossip_rate_limited.get(),
        );
        counter(
            "didmesh_p2p_sync_rate_waits_total",
            "Op fetches delayed by the serving peer's rate budget.",
            self.sync_rate_waits.get(),
        );
        counter(
            "didmesh_p2p_distrusted_total",
            "New peers that connected from the address of a banned peer.",
            self.distrusted.get(),
        );
        let _ = write!(out, "# HELP didmesh_p2p_orphans_held Orphans parked for peers, awaiting their parents.\n# TYPE didmesh_p2p_orphans_held gauge\ndidmesh_p2p_orphans_held {orphans_held}\n");
        let _ = write!(out, "# HELP didmesh_p2p_peers Connected peers.\n# TYPE didmesh_p2p_peers gauge\ndidmesh_p2p_peers {peers}\n");
        out
    }
}
