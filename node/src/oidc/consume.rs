//! Single use of authorization codes across nodes (RFC 6749 §4.1.2: "The
//! client MUST NOT use the authorization code more than once"; §10.5).
//!
//! A code is signed by the member that issued it and names that member's
//! libp2p peer id ([`super::code`]), so every node can check it, but only
//! the issuer remembers which of its codes were used. The node that
//! redeems a code therefore asks the issuer to consume it:
//!
//! ```text
//!  redeemer (token endpoint)                 issuer
//!   consume_code ── SyncRequest::Consume(code) ──► serve_peers:
//!                                                  own signature? not expired?
//!                                                  issued after this start?
//!                                                  record the id
//!                ◄── Consumed(FirstUse | AlreadyUsed | Refused) ──
//! ```
//!
//! over `/didmesh/sync/2` (did-core's `sync_frame`). When the redeemer is
//! the issuer, the same check runs locally. Anything but a first-use answer
//! within [`CONSUME_TIMEOUT`] — an answer of "used", a refusal, an issuer
//! that is down, unreachable or too busy — refuses the code (fail closed):
//! a login the user can retry is better than a code that works twice.
//!
//! The set of used codes is in memory only, bounded by
//! [`MAX_USED_CODES`] and pruned as codes expire (a code lives 60 s). It
//! does not survive a restart, so the issuer refuses to consume any code it
//! issued before its own start: a restart cannot re-open a code that was
//! used. Timestamps are whole seconds, too coarse to tell a code of the
//! previous run from one of this run within the second of the restart, so
//! a code id carries a tag only the current run can make
//! ([`fresh_code_id`]):
//!
//! ```text
//! id = random[8] ‖ blake3_keyed(run secret, "didmesh oidc code id v1" ‖ random)[..8]
//! ```
//!
//! The run secret is the authenticator's, drawn at start and kept in memory
//! only ([`crate::auth`]). A code whose id does not carry this run's tag is
//! refused; so is one whose `issued_at` is before the start.
//!
//! Refresh tokens ([`super::refresh`]) are consumed the same way, at the
//! member that signed them, on each use (rotation) and on `/oidc/revoke`
//! (RFC 7009); their issuer keeps the used ids in sled instead, because a
//! refresh token outlives a restart.

use super::code;
use crate::p2p::codec::{ConsumeVerdict, SyncResponse};
use crate::NodeState;
use libp2p::PeerId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// MAC context of code ids (module doc).
const ID_CONTEXT: &[u8] = b"didmesh oidc code id v1";

/// A new code id for this node's current run (module doc).
pub fn fresh_code_id(state: &NodeState) -> [u8; 16] {
    use rand::RngCore as _;
    let mut id = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut id[..8]);
    let tag = state.auth.mac(ID_CONTEXT, &id[..8]);
    id[8..].copy_from_slice(&tag[..8]);
    id
}

/// Whether `id` was made by [`fresh_code_id`] in this run (constant time).
fn of_this_run(state: &NodeState, id: &[u8; 16]) -> bool {
    let tag = state.auth.mac(ID_CONTEXT, &id[..8]);
    tag[..8]
        .iter()
        .zip(&id[8..])
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// How long the redeemer waits for the issuer's answer (dial included).
pub const CONSUME_TIMEOUT: Duration = Duration::from_secs(3);
/// Used code ids remembered at most. A code lives 60 s; 250,000 is four
/// times what a node issues in that time at its measured sign-in rate, and
/// ~10 MB. When full of live entries, new consumes are refused rather than
/// a live entry evicted (that would re-open its code).
pub const MAX_USED_CODES: usize = 250_000;
/// Shards of the set, so concurrent redemptions rarely contend.
const SHARDS: usize = 16;

/// Why a code cannot be redeemed. Every variant is `invalid_grant` to the
/// client (RFC 6749 §5.2); the variants say why in the node's log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsumeError {
    #[error("authorization code already used")]
    AlreadyUsed,
    #[error("authorization code refused by its issuer: {0}")]
    Refused(&'static str),
    #[error("the node that issued the authorization code did not confirm its first use: {0}")]
    Unreachable(String),
    #[error("too many authorization codes in flight; try again shortly")]
    Busy,
}

/// The ids of this node's codes that were consumed, with their expiry
/// (after which the code is refused as expired anyway and the entry can
/// go), and the second this node started.
pub struct UsedCodes {
    shards: Vec<Mutex<HashMap<[u8; 16], u64>>>,
    per_shard: usize,
    started_at: u64,
}

impl UsedCodes {
    /// An empty set for a node that started at `started_at` (unix seconds).
    pub fn new(started_at: u64) -> UsedCodes {
        Self::with_capacity(started_at, MAX_USED_CODES)
    }

    pub fn with_capacity(started_at: u64, max: usize) -> UsedCodes {
        UsedCodes {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: (max / SHARDS).max(1),
            started_at,
        }
    }

    /// The second this node started: its codes issued before it are
    /// refused.
    pub fn started_at(&self) -> u64 {
        self.started_at
    }

    /// Consumes code `id` issued at `issued_at`, valid until `expires_at`:
    /// the issuer's check (module doc; the caller has checked that the id
    /// is of this run).
    pub fn consume(
        &self,
        id: [u8; 16],
        issued_at: u64,
        expires_at: u64,
        now: u64,
    ) -> ConsumeVerdict {
        if expires_at <= now || issued_at < self.started_at {
            return ConsumeVerdict::Refused;
        }
        // The id is random: its first byte spreads evenly over the shards.
        let Ok(mut map) = self.shards[usize::from(id[0]) % SHARDS].lock() else {
            return ConsumeVerdict::Refused;
        };
        if map.contains_key(&id) {
            return ConsumeVerdict::AlreadyUsed;
        }
        if map.len() >= self.per_shard {
            map.retain(|_, exp| *exp > now);
            if map.len() >= self.per_shard {
                return ConsumeVerdict::Refused;
            }
        }
        map.insert(id, expires_at);
        ConsumeVerdict::FirstUse
    }

    /// Forgets expired entries.
    pub fn prune(&self, now: u64) {
        for shard in &self.shards {
            if let Ok(mut map) = shard.lock() {
                map.retain(|_, exp| *exp > now);
            }
        }
    }

    /// Entries held (for metrics and tests).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .filter_map(|s| s.lock().ok())
            .map(|m| m.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// This node's libp2p peer id, when p2p runs.
fn local_peer(state: &NodeState) -> Option<PeerId> {
    state.p2p.get().map(|c| c.peer_id())
}

/// The issuer's side for a code this node holds as text: checks that it is
/// a valid code signed by this node (its member key and peer id) and
/// consumes it.
fn consume_own(state: &NodeState, code_text: &str, now: u64) -> ConsumeVerdict {
    // Refresh tokens take the same path to their issuer; their used set
    // is durable ([`super::refresh`]).
    if super::refresh::is_refresh_token(code_text) {
        return super::refresh::consume_own(state, code_text, now);
    }
    let Ok(facts) = code::facts(state, code_text) else {
        return ConsumeVerdict::Refused;
    };
    if !crate::views::own_key(state, &facts.member_key, now) || !of_this_run(state, &facts.id) {
        return ConsumeVerdict::Refused;
    }
    if let (Some(mine), Some(named)) = (local_peer(state), facts.peer.as_deref()) {
        if mine.to_string() != named {
            return ConsumeVerdict::Refused;
        }
    }
    state
        .oidc
        .used_codes
        .consume(facts.id, facts.issued_at, facts.expires_at, now)
}

fn verdict(v: ConsumeVerdict) -> Result<(), ConsumeError> {
    match v {
        ConsumeVerdict::FirstUse => Ok(()),
        ConsumeVerdict::AlreadyUsed => Err(ConsumeError::AlreadyUsed),
        ConsumeVerdict::Refused => Err(ConsumeError::Refused(
            "not its code, expired, or issued before its start",
        )),
    }
}

/// Consumes the authorization code `code_text` (already verified by the
/// caller: signed by a current member, not expired, bound to this client)
/// at the member that issued it, named by `issuer_peer` (its libp2p peer
/// id, `None` for a node running without p2p) and `issuer_key`. `Ok` only
/// on a confirmed first use.
pub async fn consume_code(
    state: &Arc<NodeState>,
    issuer_key: &did_core::PublicKey,
    issuer_peer: Option<&str>,
    code_text: &str,
) -> Result<(), ConsumeError> {
    let mine = local_peer(state);
    let local = match (issuer_peer, mine) {
        (Some(named), Some(mine)) => named == mine.to_string(),
        // The issuer ran without p2p: only it can have issued this code,
        // and only if that is us.
        (None, _) => true,
        // We run without p2p but the code names a peer: ours only if the
        // member key is ours (a node without p2p has no peer id to name).
        (Some(_), None) => crate::views::own_key(state, issuer_key, crate::now()),
    };
    if local {
        if !crate::views::own_key(state, issuer_key, crate::now()) {
            return Err(ConsumeError::Refused(
                "issued by another member without p2p",
            ));
        }
        return verdict(consume_own(state, code_text, crate::now()));
    }
    let named = issuer_peer.unwrap_or_default();
    let peer: PeerId = named
        .parse()
        .map_err(|_| ConsumeError::Refused("the code names no valid peer id"))?;
    let client = state
        .p2p
        .get()
        .ok_or_else(|| ConsumeError::Unreachable("this node runs without p2p".into()))?;
    let answer = tokio::time::timeout(
        CONSUME_TIMEOUT,
        client.consume(peer, code_text.as_bytes().to_vec()),
    )
    .await;
    match answer {
        Ok(Ok(SyncResponse::Consumed(v))) => verdict(v),
        Ok(Ok(SyncResponse::Busy)) => Err(ConsumeError::Unreachable("issuer busy".into())),
        Ok(Ok(_)) => Err(ConsumeError::Unreachable("unexpected answer".into())),
        Ok(Err(e)) => Err(ConsumeError::Unreachable(e.to_string())),
        Err(_) => Err(ConsumeError::Unreachable(format!(
            "no answer within {} s",
            CONSUME_TIMEOUT.as_secs()
        ))),
    }
}

/// Answers peers' consume requests (the issuer's side), until the event
/// loop stops. Each request costs one signature check; the event loop
/// answers `Busy` when this falls behind ([`crate::p2p::event_loop::CONSUME_CHANNEL`]).
pub(crate) async fn serve_peers(
    state: Arc<NodeState>,
    client: crate::p2p::Client,
    mut requests: tokio::sync::mpsc::Receiver<crate::p2p::event_loop::ConsumeRequest>,
) {
    while let Some(req) = requests.recv().await {
        let v = match std::str::from_utf8(&req.code) {
            Ok(text) => consume_own(&state, text, crate::now()),
            Err(_) => ConsumeVerdict::Refused,
        };
        if v != ConsumeVerdict::FirstUse {
            tracing::info!(peer = %req.peer, verdict = ?v, "authorization code not consumed");
        }
        if client
            .respond(req.channel, SyncResponse::Consumed(v))
            .await
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_consumed_once_and_only_while_valid() {
        let used = UsedCodes::new(1000);
        assert_eq!(
            used.consume([1; 16], 1001, 1061, 1010),
            ConsumeVerdict::FirstUse
        );
        assert_eq!(
            used.consume([1; 16], 1001, 1061, 1011),
            ConsumeVerdict::AlreadyUsed
        );
        // expired
        assert_eq!(
            used.consume([2; 16], 1001, 1061, 1061),
            ConsumeVerdict::Refused
        );
        // issued before this node's start: the used set of the previous run
        // is gone, so it cannot be vouched for (within the start second,
        // the id's run tag decides: `of_this_run`)
        assert_eq!(
            used.consume([3; 16], 999, 1061, 1010),
            ConsumeVerdict::Refused
        );
        assert_eq!(
            used.consume([3; 16], 1000, 1061, 1010),
            ConsumeVerdict::FirstUse
        );
        used.prune(1062);
        assert!(used.is_empty());
    }

    #[test]
    fn the_set_is_bounded_and_never_evicts_a_live_code() {
        let used = UsedCodes::with_capacity(0, 64);
        let mut refused = 0;
        for i in 0..200u32 {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            id[0] = i as u8;
            match used.consume(id, 10, 70, 20) {
                ConsumeVerdict::FirstUse => {}
                ConsumeVerdict::Refused => refused += 1,
                ConsumeVerdict::AlreadyUsed => panic!("fresh id seen as used"),
            }
        }
        assert!(refused > 0);
        assert!(used.len() <= 64, "{}", used.len());
        // every accepted one is still remembered
        let mut id = [0u8; 16];
        id[0] = 0;
        assert_eq!(used.consume(id, 10, 70, 21), ConsumeVerdict::AlreadyUsed);
        // after expiry there is room again
        assert_eq!(used.consume([9; 16], 75, 135, 80), ConsumeVerdict::FirstUse);
    }
}
