//! Ops that become durable here — from HTTP, from gossip, released
//! orphans — are published on the gossip topic, unless older than
//! [`GOSSIP_MAX_AGE`]. Ops fetched by anti-entropy are never published
//! ([`super::anti_entropy::Replication::take_fetched`]), however young:
//! they are repair, not news, and a late joiner re-flooding its whole
//! catch-up would cost every peer a validation per op (issue 12, item 5:
//! a 300,000-op join made the seed check 228,328 echoes of its own ops). The same task
//! keeps the sync index in step with the ledger and gives a committed
//! orphan's slot back to the peer it was charged to.

use super::anti_entropy::SharedIndex;
use super::event_loop::Client;
use did_core::ingest::GOSSIP_MAX_AGE;
use did_core::{Ledger, Validated};
use std::sync::{Arc, RwLock};
use tokio::sync::broadcast;

/// Publishes ops as they become durable, and keeps the sync index in step
/// with the ledger. Runs until the writer or the event loop stops.
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
                let fetched = client.replication().take_fetched(&v.cid);
                if !fetched
                    && v.op.created_at.saturating_add(GOSSIP_MAX_AGE) >= crate::now()
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
