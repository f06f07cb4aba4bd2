//! Ops that become durable here — from HTTP, or orphans parked by a local
//! submission and released — are published on the gossip topic, unless
//! older than [`GOSSIP_MAX_AGE`], in bundles: what became durable since
//! the last bundle goes out as one message
//! ([`did_core::sync_frame::bundles`] cuts it to the bundle limits), so a
//! burst of writes costs gossip a message per bundle, not per op. Rounds
//! are paced ([`BUNDLE_RATE`], [`BUNDLE_BURST`]): a quiet node publishes
//! each op at once, a busy one waits at most 1/[`BUNDLE_RATE`] s and
//! sends more ops per message. A node whose rounds already hold
//! [`BUSY_OPS`] ops when they start waiting is saturated: it publishes at
//! most [`BUSY_RATE`] rounds a second, so each message carries more ops.
//! Every message costs each peer a validation task, a writer round and a
//! flush, whatever it holds: on the 5-node benchmark (issue 12) the slower
//! busy pace took ≈ 10–20 % off the CPU per replicated op, at the price of
//! at most 1/[`BUSY_RATE`] s of extra latency while saturated. A node
//! taking ops one at a time (every round holds one) never slows down.
//!
//! Ops that came from peers are never published again
//! ([`super::anti_entropy::Replication::take_quiet`]): gossip forwards the
//! bundle that brought them when every op of it was good, and a fetched op
//! is repair, not news (a late joiner re-flooding its whole catch-up
//! would cost every peer a validation per op; issue 12, item 5: a
//! 300,000-op join made the seed check 228,328 echoes of its own ops).
//! The same task keeps the sync index in step with the ledger and gives a
//! committed orphan's slot back to the peer it was charged to.

use super::anti_entropy::SharedIndex;
use super::event_loop::Client;
use crate::writer::COMMITTED_CHANNEL;
use did_core::ingest::GOSSIP_MAX_AGE;
use did_core::sync_frame::{bundles, MAX_BUNDLE_OPS};
use did_core::{Ledger, Validated};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

/// Most ops published in one round (the publisher's throughput is at
/// least this many per 1/[`BUSY_RATE`] s, far above the writer's). Commits
/// that came from peers are not counted: a round takes all that are
/// waiting (up to the channel's capacity), so a node catching up at
/// 15,000 ops/s while it takes local writes never falls behind the
/// channel during a busy round's wait.
const MAX_ROUND: usize = 16 * MAX_BUNDLE_OPS;
/// Rounds of bundles a node publishes per second beyond a burst (20 ms
/// apart)
/// ...
pub const BUNDLE_RATE: f64 = 50.0;
/// ... after a burst of this many at once (a node taking an op now and
/// then never waits).
pub const BUNDLE_BURST: f64 = 10.0;
/// A round that holds this many ops when it starts waiting is a
/// saturated node's ...
pub const BUSY_OPS: usize = 8;
/// ... and waits until 1/`BUSY_RATE` s after the last round.
pub const BUSY_RATE: f64 = 10.0;

/// A token bucket over rounds of bundles (a round may fill several: the
/// pace limits how often small bundles go out, never the ops/s).
struct Pace {
    tokens: f64,
    at: Instant,
    /// When the last round was published.
    last: Option<Instant>,
}

impl Pace {
    fn new() -> Pace {
        Pace {
            tokens: BUNDLE_BURST,
            at: Instant::now(),
            last: None,
        }
    }

    /// How long to wait before the next round, which holds `pending` ops
    /// so far.
    fn wait(&mut self, pending: usize) -> Duration {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * BUNDLE_RATE;
        self.tokens = (self.tokens + refill).min(BUNDLE_BURST);
        self.at = now;
        let paced = Duration::from_secs_f64(((1.0 - self.tokens) / BUNDLE_RATE).max(0.0));
        let busy = match self.last {
            Some(last) if pending >= BUSY_OPS => {
                (last + Duration::from_secs_f64(1.0 / BUSY_RATE)).saturating_duration_since(now)
            }
            _ => Duration::ZERO,
        };
        paced.max(busy)
    }

    /// A round was published.
    fn spend(&mut self) {
        self.tokens -= 1.0;
        self.last = Some(Instant::now());
    }
}

/// Publishes ops as they become durable, and keeps the sync index in step
/// with the ledger. Runs until the writer or the event loop stops.
pub(crate) async fn run_publisher(
    mut committed: broadcast::Receiver<Arc<Validated>>,
    client: Client,
    index: SharedIndex,
    ledger: Arc<RwLock<Ledger>>,
) {
    let lagged = |missed: u64| {
        // Commits outran us; the index must not miss them.
        tracing::warn!(
            missed,
            "publisher lagged behind the writer; rebuilding the sync index"
        );
        index.rebuild(&ledger);
    };
    let replication = client.replication();
    // Keeps the index and budgets in step with one commit; true if it is
    // news to publish (a local op, young enough).
    let take = |v: &Validated| {
        index.insert(v.cid);
        // A parked orphan that commits is resolved: its sender's budget
        // gets the slot back.
        client.budgets().settle(&v.cid);
        let from_peer = replication.take_quiet(&v.cid);
        !from_peer && v.op.created_at.saturating_add(GOSSIP_MAX_AGE) >= crate::now()
    };
    // Takes the commits already waiting (at most `MAX_ROUND` news).
    let drain = |committed: &mut broadcast::Receiver<Arc<Validated>>,
                 news: &mut Vec<Arc<Validated>>| {
        for _ in 0..COMMITTED_CHANNEL {
            if news.len() >= MAX_ROUND {
                break;
            }
            match committed.try_recv() {
                Ok(v) if take(&v) => news.push(v),
                Ok(_) => {}
                Err(TryRecvError::Lagged(missed)) => lagged(missed),
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
    };
    let mut pace = Pace::new();
    let mut news: Vec<Arc<Validated>> = Vec::new();
    loop {
        match committed.recv().await {
            Ok(v) if take(&v) => news.push(v),
            Ok(_) => {}
            Err(RecvError::Lagged(missed)) => lagged(missed),
            Err(RecvError::Closed) => return,
        }
        drain(&mut committed, &mut news);
        if news.is_empty() {
            // Ops from peers only: nothing to publish, no pace spent.
            continue;
        }
        // Busy: let more local commits arrive. Quiet: let the writer
        // finish sending its round's commits, one after the other.
        match pace.wait(news.len()) {
            Duration::ZERO => tokio::task::yield_now().await,
            wait => tokio::time::sleep(wait).await,
        }
        drain(&mut committed, &mut news);
        pace.spend();
        let bytes: Vec<&[u8]> = news.iter().map(|v| v.bytes.as_slice()).collect();
        for bundle in bundles(&bytes) {
            if client.publish(bundle).await.is_err() {
                return;
            }
        }
        news.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst goes out at once; beyond it, bundles are 1/BUNDLE_RATE
    /// apart; a quiet spell refills the burst.
    #[test]
    fn bundles_are_paced_only_when_busy() {
        let mut p = Pace::new();
        for _ in 0..BUNDLE_BURST as usize {
            assert_eq!(p.wait(1), Duration::ZERO);
            p.spend();
        }
        let wait = p.wait(1);
        assert!(wait > Duration::from_millis(15), "{wait:?}");
        assert!(
            wait <= Duration::from_secs_f64(1.0 / BUNDLE_RATE),
            "{wait:?}"
        );
        p.at -= Duration::from_secs(1);
        assert_eq!(p.wait(1), Duration::ZERO);
        assert!(p.tokens <= BUNDLE_BURST);
    }

    /// Rounds that start out full wait for the busy pace, even with the
    /// burst unspent; single ops never do.
    #[test]
    fn full_rounds_wait_for_the_busy_pace() {
        let mut p = Pace::new();
        assert_eq!(p.wait(BUSY_OPS), Duration::ZERO, "the first round");
        p.spend();
        let wait = p.wait(BUSY_OPS);
        assert!(wait > Duration::from_millis(80), "{wait:?}");
        assert!(wait <= Duration::from_secs_f64(1.0 / BUSY_RATE), "{wait:?}");
        assert_eq!(p.wait(BUSY_OPS - 1), Duration::ZERO);
        p.last = p.last.map(|t| t - Duration::from_secs(1));
        assert_eq!(p.wait(BUSY_OPS), Duration::ZERO);
    }
}
