//! Push: one gossipsub topic per network, a bundle of ops per message — the topic,
//! gossipsub's configuration and its peer scoring. What happens to a
//! message once it arrives is [`super::ingest`]'s business; what gets
//! published is [`super::publish`]'s.
//!
//! * Topic `/didmesh/<network_id>/ops/3`; the message is a bundle of 1 to
//!   64 ops' canonical bytes ([`did_core::sync_frame::encode_bundle`]): the
//!   ops a node made durable together, so gossip's per-message costs
//!   (framing, encryption, duplicate copies, validation reports) are paid
//!   once per commit round, not once per op. The message id is the blake3
//!   hash of the bundle; duplicates die in every node's cache.
//! * Messages are unsigned (`Anonymous`): an op carries its own signature,
//!   and the peer that forwarded a message is what scoring needs.
//! * Manual validation (gossipsub's `validate_messages`): every op of a
//!   bundle is fully verified before gossipsub forwards it (see
//!   [`super::ingest`]). A rejected bundle costs the forwarding peer score (P4) until it is
//!   graylisted ([`GRAYLIST_THRESHOLD`]), then banned by the event loop for
//!   [`BAN_DURATION`].
//! * Ops older than [`GOSSIP_MAX_AGE`] are repair, not news: not published
//!   when they commit, and kept no longer in the duplicate cache.

use did_core::sync_frame::MAX_BUNDLE_BYTES;
use did_core::Cid;
use libp2p::gossipsub::{
    self, IdentTopic, MessageAuthenticity, MessageId, PeerScoreParams, PeerScoreThresholds,
    TopicScoreParams, ValidationMode,
};
use std::time::Duration;

pub use did_core::ingest::GOSSIP_MAX_AGE;

/// Below this score a peer's messages are ignored by gossipsub, and the
/// event loop disconnects and bans it for [`BAN_DURATION`].
pub const GRAYLIST_THRESHOLD: f64 = -80.0;
/// How long a peer whose score fell below the graylist threshold stays
/// disconnected (and its address distrusted, see [`super::budget`]); its
/// score is kept as long.
pub const BAN_DURATION: Duration = Duration::from_secs(600);
/// P4 weight: the penalty is `weight * invalid_count^2`, so three invalid
/// ops (-90) graylist a peer, one is forgiven in about a minute.
const INVALID_MESSAGE_WEIGHT: f64 = -10.0;
/// Per-second decay of the invalid-message counter (halves in ~14 s).
const INVALID_MESSAGE_DECAY: f64 = 0.95;

/// The network's op topic.
pub fn topic(network_id: &str) -> IdentTopic {
    IdentTopic::new(format!("/didmesh/{network_id}/ops/3"))
}

/// The message id of a gossiped bundle (blake3 of its bytes, as a
/// [`Cid`]).
pub fn message_cid(data: &[u8]) -> Cid {
    Cid::of(data)
}

/// gossipsub with manual validation, content-addressed message ids and
/// peer scoring.
pub(crate) fn behaviour(
    topic: &IdentTopic,
) -> Result<gossipsub::Behaviour, Box<dyn std::error::Error + Send + Sync>> {
    let config = gossipsub::ConfigBuilder::default()
        .validation_mode(ValidationMode::Anonymous)
        .validate_messages()
        .message_id_fn(|m: &gossipsub::Message| MessageId::new(message_cid(&m.data).digest()))
        // A bundle is at most `MAX_BUNDLE_BYTES`; a message is the bundle
        // plus the topic and protobuf framing. Larger ones count as
        // invalid (P4).
        .max_transmit_size(MAX_BUNDLE_BYTES + 1024)
        .set_topic_max_transmit_size(topic.hash(), MAX_BUNDLE_BYTES + 512)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_the_network() {
        assert_eq!(topic("mesh-abc").to_string(), "/didmesh/mesh-abc/ops/3");
    }
}
