//! The node's metrics: one counter type, the node's and the p2p layer's
//! counters, and the one renderer of the Prometheus text format (version
//! 0.0.4) served at `/metrics`.
//!
//! Metric names are an interface (dashboards, `tests/`, the sidecar and
//! interop scripts read them): rename one only with everything that reads
//! it. What the gauges measure is gathered by [`crate::views`]; this module
//! only holds counters and writes text, so the p2p layer can depend on it
//! without depending on the node.
//!
//! Hand-written rather than the `prometheus-client` crate: that crate
//! writes OpenMetrics (`# EOF`, `_total` added to counter names on its
//! own, another content type), which would change the text every reader
//! parses today, for two dozen counters this file renders in a few lines.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing Prometheus counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
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

/// Counters of the HTTP API and the login flow.
#[derive(Debug, Default)]
pub struct Metrics {
    pub ops_accepted: Counter,
    pub ops_rejected: Counter,
    pub challenges_issued: Counter,
    pub tokens_issued: Counter,
    pub logins_failed: Counter,
    pub rate_limited: Counter,
    pub ops_rate_limited: Counter,
    pub panics: Counter,
}

/// Counters of the peer-to-peer layer.
#[derive(Debug, Default)]
pub struct P2pMetrics {
    /// Gossip messages (bundles of ops) handed to validation.
    pub gossip_received: Counter,
    /// Gossiped ops accepted (valid new ops, or fresh known ones).
    pub gossip_accepted: Counter,
    /// Gossiped ops ignored (unknown parent, stale duplicate); whole
    /// bundles refused unread (duplicate, over the sender's rate,
    /// overload) count once.
    pub gossip_ignored: Counter,
    /// Ops refused as invalid, from gossip or from a fetch: the sender is
    /// scored down.
    pub rejected: Counter,
    /// Gossip messages (bundles) published on the topic.
    pub published: Counter,
    /// Committed ops published on the topic (in those bundles).
    pub published_ops: Counter,
    /// Reconciliation sessions this node started and finished.
    pub sync_sessions: Counter,
    /// Reconciliation sessions that failed (peer gone, timeout, bad message).
    pub sync_failures: Counter,
    /// Ops fetched by anti-entropy and stored.
    pub sync_fetched_ops: Counter,
    /// Bytes of reconciliation frames, sent and received.
    pub sync_reconcile_bytes: Counter,
    /// Bytes of fetch frames (requests and op responses), sent and received.
    pub sync_fetch_bytes: Counter,
    /// Peers disconnected and banned for a low score.
    pub banned: Counter,
    /// Orphans refused because their sender had its per-peer budget
    /// outstanding (see `p2p::budget::ORPHANS_PER_PEER`).
    pub orphans_capped: Counter,
    /// Orphans refused because the node held its maximum of orphans.
    pub orphans_refused_full: Counter,
    /// Orphans that expired unresolved (charged to their senders).
    pub orphans_expired: Counter,
    /// Gossiped ops ignored because their sender exceeded its rate.
    pub gossip_rate_limited: Counter,
    /// Fetch batches delayed by a peer's sync rate.
    pub sync_rate_waits: Counter,
    /// New peers that connected from the address of a banned one.
    pub distrusted: Counter,
}

/// The node's gauges, read when `/metrics` is asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeGauges {
    pub ledger_ops: u64,
    pub ledger_dids: u64,
    pub nonces_redeemed: u64,
    pub rate_limiter_keys: u64,
}

/// The p2p layer's gauges.
#[derive(Debug, Clone, Copy, Default)]
pub struct P2pGauges {
    pub orphans_held: u64,
    pub peers: u64,
}

/// Prometheus text being written.
#[derive(Default)]
struct Text(String);

impl Text {
    fn metric(&mut self, kind: &str, name: &str, help: &str, v: u64) {
        let _ = write!(
            self.0,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
        );
    }
    fn counter(&mut self, name: &str, help: &str, c: &Counter) {
        self.metric("counter", name, help, c.get());
    }
    fn gauge(&mut self, name: &str, help: &str, v: u64) {
        self.metric("gauge", name, help, v);
    }
}

/// The whole `/metrics` text: the node's counters and gauges, then the p2p
/// layer's when it runs.
pub fn render(node: &Metrics, gauges: NodeGauges, p2p: Option<(&P2pMetrics, P2pGauges)>) -> String {
    let mut t = Text::default();
    let m = node;
    t.counter(
        "didmesh_ops_accepted_total",
        "Ops accepted through the API.",
        &m.ops_accepted,
    );
    t.counter(
        "didmesh_ops_rejected_total",
        "Ops refused through the API.",
        &m.ops_rejected,
    );
    t.counter(
        "didmesh_challenges_issued_total",
        "Login challenges issued.",
        &m.challenges_issued,
    );
    t.counter(
        "didmesh_tokens_issued_total",
        "Access tokens issued.",
        &m.tokens_issued,
    );
    t.counter(
        "didmesh_logins_failed_total",
        "Login steps refused.",
        &m.logins_failed,
    );
    t.counter(
        "didmesh_rate_limited_total",
        "Auth requests refused by the rate limit.",
        &m.rate_limited,
    );
    t.counter(
        "didmesh_ops_rate_limited_total",
        "Op submissions refused by the rate limit.",
        &m.ops_rate_limited,
    );
    t.counter(
        "didmesh_handler_panics_total",
        "Requests answered 500 because a handler panicked.",
        &m.panics,
    );
    t.gauge(
        "didmesh_ledger_ops",
        "Ops held in the ledger.",
        gauges.ledger_ops,
    );
    t.gauge(
        "didmesh_ledger_dids",
        "DIDs held in the ledger.",
        gauges.ledger_dids,
    );
    t.gauge(
        "didmesh_nonces_redeemed",
        "Redeemed login nonces remembered until they expire.",
        gauges.nonces_redeemed,
    );
    t.gauge(
        "didmesh_rate_limiter_keys",
        "Client networks tracked by the rate limiters.",
        gauges.rate_limiter_keys,
    );
    t.metric(
        "counter",
        "didmesh_sig_verifications_total",
        "Ops whose signatures this process checked (each op once: gossip, fetches and HTTP \
         pass their proof to the writer).",
        did_core::verify::verified_ops(),
    );
    if let Some((p, g)) = p2p {
        render_p2p(&mut t, p, g);
    }
    t.0
}

/// What `/metrics` shows of the SMS factor ([`crate::sms`]), gathered by
/// [`crate::views`].
#[derive(Debug, Clone, Default)]
pub struct SmsGauges {
    pub enabled: bool,
    /// This month's spend and budget, in currency units.
    pub spent: f64,
    pub budget: f64,
    /// Messages the provider accepted, since the guard's store was made.
    pub sent_total: u64,
    /// Refusals by reason, since the guard's store was made.
    pub refused_total: Vec<(&'static str, u64)>,
    /// Prefixes the velocity alarm blocks now.
    pub blocked_prefixes: Vec<String>,
}

/// The SMS lines of `/metrics`. Its counters survive restarts (they are
/// kept in sled by the spend guard), so they only ever increase.
pub fn render_sms(g: &SmsGauges) -> String {
    let mut t = Text::default();
    t.gauge(
        "didmesh_sms_enabled",
        "1 when SMS codes are configured (--sms).",
        u64::from(g.enabled),
    );
    if !g.enabled {
        return t.0;
    }
    let _ = write!(
        t.0,
        "# HELP didmesh_sms_spent This month's SMS spend (UTC calendar month), in the configured currency.\n\
         # TYPE didmesh_sms_spent gauge\ndidmesh_sms_spent {}\n\
         # HELP didmesh_sms_budget The monthly SMS budget, in the configured currency.\n\
         # TYPE didmesh_sms_budget gauge\ndidmesh_sms_budget {}\n",
        g.spent, g.budget
    );
    t.metric(
        "counter",
        "didmesh_sms_sent_total",
        "SMS codes the provider accepted.",
        g.sent_total,
    );
    let _ = write!(
        t.0,
        "# HELP didmesh_sms_refused_total SMS codes not sent, by the limit that refused them (or provider_error).\n\
         # TYPE didmesh_sms_refused_total counter\n"
    );
    for (reason, n) in &g.refused_total {
        let _ = writeln!(t.0, "didmesh_sms_refused_total{{reason=\"{reason}\"}} {n}");
    }
    t.gauge(
        "didmesh_sms_blocked_prefixes",
        "Destination prefixes the velocity alarm blocks now.",
        g.blocked_prefixes.len() as u64,
    );
    if !g.blocked_prefixes.is_empty() {
        let _ = write!(
            t.0,
            "# HELP didmesh_sms_prefix_blocked 1 for each destination prefix blocked now.\n\
             # TYPE didmesh_sms_prefix_blocked gauge\n"
        );
        for p in &g.blocked_prefixes {
            let _ = writeln!(t.0, "didmesh_sms_prefix_blocked{{prefix=\"{p}\"}} 1");
        }
    }
    t.0
}

fn render_p2p(t: &mut Text, p: &P2pMetrics, g: P2pGauges) {
    t.counter(
        "didmesh_p2p_gossip_received_total",
        "Gossip messages (bundles of ops) received for validation.",
        &p.gossip_received,
    );
    t.counter(
        "didmesh_p2p_gossip_accepted_total",
        "Gossiped ops accepted (new, or fresh news).",
        &p.gossip_accepted,
    );
    t.counter(
        "didmesh_p2p_gossip_ignored_total",
        "Gossiped ops neither accepted nor rejected (a bundle refused unread counts once).",
        &p.gossip_ignored,
    );
    t.counter(
        "didmesh_p2p_rejected_total",
        "Ops from peers refused as invalid (gossip or fetch).",
        &p.rejected,
    );
    t.counter(
        "didmesh_p2p_published_total",
        "Gossip messages (bundles) published.",
        &p.published,
    );
    t.counter(
        "didmesh_p2p_published_ops_total",
        "Committed ops published on the gossip topic.",
        &p.published_ops,
    );
    t.counter(
        "didmesh_p2p_sync_sessions_total",
        "Anti-entropy sessions completed.",
        &p.sync_sessions,
    );
    t.counter(
        "didmesh_p2p_sync_failures_total",
        "Anti-entropy sessions that failed.",
        &p.sync_failures,
    );
    t.counter(
        "didmesh_p2p_sync_fetched_ops_total",
        "Ops fetched by anti-entropy and stored.",
        &p.sync_fetched_ops,
    );
    t.counter(
        "didmesh_p2p_sync_reconcile_bytes_total",
        "Reconciliation bytes sent and received.",
        &p.sync_reconcile_bytes,
    );
    t.counter(
        "didmesh_p2p_sync_fetch_bytes_total",
        "Op fetch bytes sent and received.",
        &p.sync_fetch_bytes,
    );
    t.counter(
        "didmesh_p2p_banned_total",
        "Peers disconnected and banned for a low score.",
        &p.banned,
    );
    t.counter(
        "didmesh_p2p_orphans_per_peer_capped_total",
        "Orphans refused because their sender was at its per-peer orphan budget.",
        &p.orphans_capped,
    );
    t.counter(
        "didmesh_p2p_orphans_refused_full_total",
        "Orphans refused because the node held its maximum of orphans.",
        &p.orphans_refused_full,
    );
    t.counter(
        "didmesh_p2p_orphans_expired_total",
        "Orphans that expired unresolved, charged to the peers that sent them.",
        &p.orphans_expired,
    );
    t.counter(
        "didmesh_p2p_gossip_rate_limited_total",
        "Gossiped ops ignored because their sender exceeded its rate.",
        &p.gossip_rate_limited,
    );
    t.counter(
        "didmesh_p2p_sync_rate_waits_total",
        "Op fetches delayed by the serving peer's rate budget.",
        &p.sync_rate_waits,
    );
    t.counter(
        "didmesh_p2p_distrusted_total",
        "New peers that connected from the address of a banned peer.",
        &p.distrusted,
    );
    t.gauge(
        "didmesh_p2p_orphans_held",
        "Orphans parked for peers, awaiting their parents.",
        g.orphans_held,
    );
    t.gauge("didmesh_p2p_peers", "Connected peers.", g.peers);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sample line has a HELP and a TYPE line before it, and the
    /// names readers rely on are there with their values.
    #[test]
    fn text_format() {
        let node = Metrics::default();
        node.ops_accepted.add(3);
        let p2p = P2pMetrics::default();
        p2p.rejected.inc();
        let gauges = NodeGauges {
            ledger_ops: 7,
            ..NodeGauges::default()
        };
        let text = render(
            &node,
            gauges,
            Some((
                &p2p,
                P2pGauges {
                    orphans_held: 2,
                    peers: 4,
                },
            )),
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len() % 3, 0);
        for chunk in lines.chunks(3) {
            let name = chunk[2].split(' ').next().unwrap();
            assert!(chunk[0].starts_with(&format!("# HELP {name} ")));
            assert!(
                chunk[1] == format!("# TYPE {name} counter")
                    || chunk[1] == format!("# TYPE {name} gauge")
            );
        }
        for line in [
            "didmesh_ops_accepted_total 3",
            "didmesh_ledger_ops 7",
            "didmesh_p2p_rejected_total 1",
            "didmesh_p2p_orphans_held 2",
            "didmesh_p2p_peers 4",
        ] {
            assert!(lines.contains(&line), "{line} missing");
        }
        assert!(!render(&node, gauges, None).contains("didmesh_p2p_"));
    }
}
