//! The read side of the HTTP API: `GET /v1/status`, `GET /v1/network`,
//! `GET /.well-known/jwks.json` as typed [`Serialize`] views, and the
//! gauges of `GET /metrics` (rendered by [`crate::metrics`]).
//!
//! Field names are an interface: tests, `scripts/cluster.sh status`, the
//! sidecars and the interop scripts read them. A view is built from one
//! read of each lock; a poisoned lock (a writer panicked while holding it)
//! is an error the API answers 503, never a view of zeros.

use crate::api::ApiError;
use crate::identity::{self, Member};
use crate::metrics::{self, NodeGauges, P2pGauges};
use crate::p2p::{BannedPeer, PeerInfo};
use crate::NodeState;
use axum::http::StatusCode;
use serde::Serialize;

/// A view could not be read: `what` lock is poisoned.
#[derive(Debug, thiserror::Error)]
#[error("the {0} is unavailable (a writer failed while holding it); restart the node")]
pub struct Unavailable(pub &'static str);

impl From<Unavailable> for ApiError {
    fn from(e: Unavailable) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )
    }
}

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Always false here: while the ledger loads, `/v1/status` is answered
    /// by the starting router (`"starting": true` and the progress).
    pub starting: bool,
    pub node_did: String,
    /// Whether this node's key is a current member's (only members issue
    /// tokens that verifiers accept).
    pub member: bool,
    pub network_id: String,
    pub issuer: String,
    pub op_count: usize,
    pub did_count: usize,
    /// Ops parked in the ledger's orphan pool.
    pub orphans: usize,
    pub log_entries: u64,
    /// Hex of the op log's chain hash.
    pub log_head: String,
    /// Hex digest of the op set: equal on two nodes holding the same ops.
    pub ledger_digest: String,
    /// Hex digest of the resolved state.
    pub state_digest: String,
    /// SMS codes: `{"enabled": false}`, or this month's spend, budget,
    /// blocked prefixes and counts ([`crate::sms::SmsStatus`]).
    pub sms: crate::sms::SmsStatus,
    #[serde(flatten)]
    pub p2p: P2pStatus,
}

/// The p2p fields of [`Status`].
#[derive(Debug, Clone, Serialize)]
pub struct P2pStatus {
    /// `null` when the node runs without p2p (`--no-p2p`, in-process tests).
    pub peer_id: Option<String>,
    /// Addresses with `/p2p/<peer_id>`: what another node passes to
    /// `--bootstrap`.
    pub listen_addrs: Vec<String>,
    pub peers: Vec<PeerInfo>,
    pub banned_peers: Vec<BannedPeer>,
    /// Addresses of banned peers remembered (only with p2p).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub banned_addrs: Option<usize>,
    /// Orphans parked for peers, charged to their budgets (only with p2p).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orphans_by_peers: Option<usize>,
    /// A catch-up in progress (fetched, to go, ops/s, ETA); absent when in step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<crate::p2p::anti_entropy::CatchUpStatus>,
    pub replication: &'static str,
}

/// `GET /v1/network`: the genesis rules and the current member set.
#[derive(Debug, Clone, Serialize)]
pub struct Network {
    pub network_id: String,
    pub issuer: String,
    pub quorum: usize,
    pub founders: Vec<Member>,
    pub members: Vec<Member>,
    /// CID of the last membership op, `null` while the founders rule (on
    /// a fork: the lowest-CID branch head).
    pub membership_head: Option<String>,
    /// Whether membership has forked (then only members every branch
    /// agrees on count, minus equivocators; SECURITY.md).
    pub membership_forked: bool,
    /// Members that signed two different changes on one parent.
    pub equivocations: Vec<EquivocationView>,
}

/// One piece of evidence against a member (did_core::member::Equivocation).
#[derive(Debug, Clone, Serialize)]
pub struct EquivocationView {
    pub member: String,
    /// The parent both changes build on (`null` = the genesis).
    pub parent: Option<String>,
    pub ops: [String; 2],
}

/// `GET /.well-known/jwks.json`: every current member's token keys (RFC
/// 7517 JWK set): its Ed25519 key (EdDSA, `kty OKP`), and its RSA (RS256)
/// and P-256 (ES256) ID-token keys when its ledger entry carries them. Every
/// `kid` is the key's RFC 7638 thumbprint, so a verifier picks the key by
/// `kid` and can recompute it.
///
/// Keys a `member-rotate` op replaced stay listed until `retired_at +
/// key_overlap_secs` (network rule, default 3600 s: at least the longest
/// access-token lifetime), each carrying the extension member
/// `"didmesh_retires": <unix s>` (RFC 7517 §4: unknown members are
/// ignored by verifiers that do not understand them); a verifier that does
/// refuses a token with that `kid` from that moment even if its cached JWKS
/// still lists it. A removed member's keys, current or retired, leave at
/// once.
#[derive(Debug, Clone, Serialize)]
pub struct Jwks {
    pub keys: Vec<serde_json::Value>,
}

fn hex(b: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(b)
}

pub fn status(state: &NodeState) -> Result<Status, Unavailable> {
    let (op_count, did_count, orphans, ledger_digest, state_digest, member) = {
        let l = state.ledger.read().map_err(|_| Unavailable("ledger"))?;
        (
            l.len(),
            l.did_count(),
            l.orphan_count(),
            hex(&l.op_set_digest()),
            hex(&l.state_digest()),
            l.members()
                .iter()
                .any(|m| m.key == state.token_keys.ed25519_public()),
        )
    };
    let (log_entries, log_head) = {
        let s = state.store.read().map_err(|_| Unavailable("op log"))?;
        (s.count(), s.head_hex())
    };
    let p2p = match state.p2p.get() {
        Some(c) => {
            let view = c.view();
            P2pStatus {
                peer_id: Some(view.peer_id.clone()),
                listen_addrs: view.listen_addrs.clone(),
                peers: view.peers.clone(),
                banned_peers: view.banned.clone(),
                banned_addrs: Some(view.banned_addrs),
                orphans_by_peers: Some(c.orphans_held()),
                catch_up: c.catch_up(),
                replication: "gossipsub push + range-based anti-entropy",
            }
        }
        None => P2pStatus {
            peer_id: None,
            listen_addrs: vec![],
            peers: vec![],
            banned_peers: vec![],
            banned_addrs: None,
            orphans_by_peers: None,
            catch_up: None,
            replication: "no peers: this node runs alone",
        },
    };
    Ok(Status {
        starting: false,
        // The stable member id: unchanged by key rotations.
        node_did: state.token_keys.node_did().to_string(),
        member,
        network_id: state.genesis.network_id.clone(),
        issuer: state.genesis.issuer.clone(),
        op_count,
        did_count,
        orphans,
        log_entries,
        log_head,
        ledger_digest,
        state_digest,
        sms: crate::sms::status(state.sms.as_ref(), crate::now()),
        p2p,
    })
}

pub fn network(state: &NodeState) -> Result<Network, Unavailable> {
    let (members, membership_head, membership_forked, equivocations) = {
        let l = state.ledger.read().map_err(|_| Unavailable("ledger"))?;
        (
            l.members().to_vec(),
            l.membership_head().map(|c| c.to_string()),
            l.membership_forked(),
            l.membership_evidence()
                .iter()
                .map(|e| EquivocationView {
                    member: e.member.to_string(),
                    parent: e.parent.map(|c| c.to_string()),
                    ops: [e.ops[0].to_string(), e.ops[1].to_string()],
                })
                .collect(),
        )
    };
    Ok(Network {
        network_id: state.genesis.network_id.clone(),
        issuer: state.genesis.issuer.clone(),
        quorum: state.genesis.quorum,
        founders: state.genesis.members.clone(),
        members,
        membership_head,
        membership_forked,
        equivocations,
    })
}

pub fn jwks(state: &NodeState) -> Result<Jwks, Unavailable> {
    let l = state.ledger.read().map_err(|_| Unavailable("ledger"))?;
    Ok(Jwks {
        keys: jwks_of(&l, crate::now()),
    })
}

/// The JWKS of `ledger` at `now` ([`Jwks`]): current members' keys, then
/// rotated-away keys still inside their overlap window.
pub fn jwks_of(ledger: &did_core::Ledger, now: u64) -> Vec<serde_json::Value> {
    let mut keys: Vec<serde_json::Value> = ledger.members().iter().flat_map(member_jwks).collect();
    let overlap = ledger.key_overlap_secs();
    // Latest retirement first: a key replaced twice (an Ed25519 key kept
    // by a rotation of the ID-token keys, then rotated) retires at the
    // later time.
    for r in ledger.retired_member_keys().iter().rev() {
        let retires = r.retires(overlap);
        if retires <= now {
            continue;
        }
        for mut jwk in member_jwks(&r.entry) {
            if keys.iter().any(|k| k["kid"] == jwk["kid"]) {
                continue;
            }
            jwk["didmesh_retires"] = retires.into();
            keys.push(jwk);
        }
    }
    keys
}

/// The Ed25519 key behind an access token's `kid` at `now`: a current
/// member's, or one a rotation replaced less than `key_overlap_secs` ago.
/// A removed member's kid finds nothing (its tokens stop at once).
pub fn access_token_key(
    ledger: &did_core::Ledger,
    kid: &str,
    now: u64,
) -> Option<did_core::PublicKey> {
    if let Some(m) = ledger
        .members()
        .iter()
        .find(|m| identity::kid(&m.key) == kid)
    {
        return Some(m.key);
    }
    let overlap = ledger.key_overlap_secs();
    ledger
        .retired_member_keys()
        .iter()
        .find(|r| r.retires(overlap) > now && identity::kid(&r.entry.key) == kid)
        .map(|r| r.entry.key)
}

/// Whether `key` signs for a member at `now`: a current member's Ed25519
/// key or one a rotation replaced less than `key_overlap_secs` ago (what
/// authorization codes and refresh tokens are checked against, as access
/// tokens are by [`access_token_key`]).
pub fn live_member_key(ledger: &did_core::Ledger, key: &did_core::PublicKey, now: u64) -> bool {
    access_token_key(ledger, &identity::kid(key), now).as_ref() == Some(key)
}

/// Whether `key` is this node's own Ed25519 key at `now`: the one in
/// force, or one of its own keys a rotation retired less than
/// `key_overlap_secs` ago (a code or refresh token it signed before the
/// rotation is still its own to consume during the overlap).
pub fn own_key(state: &NodeState, key: &did_core::PublicKey, now: u64) -> bool {
    if *key == state.token_keys.ed25519_public() {
        return true;
    }
    let Ok(l) = state.ledger.read() else {
        return false;
    };
    let overlap = l.key_overlap_secs();
    let mine = state.token_keys.node_did();
    l.members().iter().any(|m| m.node_did == mine)
        && l.retired_member_keys()
            .iter()
            .any(|r| r.entry.node_did == mine && r.entry.key == *key && r.retires(overlap) > now)
}

/// One member's JWKs: Ed25519 first (its `kid` is unchanged since the JWKS
/// held only that key, so tokens issued before keep verifying), then RSA
/// and P-256 when the ledger has them.
fn member_jwks(m: &Member) -> Vec<serde_json::Value> {
    let mut keys = vec![identity::jwk(&m.key)];
    keys.extend(m.rsa.as_ref().map(|k| k.jwk()));
    keys.extend(m.p256.as_ref().map(did_core::member::p256_jwk));
    keys
}

/// The Prometheus text of `GET /metrics`.
pub fn metrics_text(state: &NodeState) -> Result<String, Unavailable> {
    let (ops, dids) = {
        let l = state.ledger.read().map_err(|_| Unavailable("ledger"))?;
        (l.len() as u64, l.did_count() as u64)
    };
    let gauges = NodeGauges {
        ledger_ops: ops,
        ledger_dids: dids,
        nonces_redeemed: state.auth.redeemed_nonces() as u64,
        rate_limiter_keys: [&state.auth_limiter, &state.ops_limiter]
            .into_iter()
            .flatten()
            .map(|l| l.len() as u64)
            .sum(),
    };
    let p2p = state.p2p.get().map(|c| {
        let gauges = P2pGauges {
            orphans_held: c.orphans_held() as u64,
            peers: c.view().peers.len() as u64,
        };
        (c.metrics(), gauges)
    });
    let mut text = metrics::render(&state.metrics, gauges, p2p);
    text.push_str(&metrics::render_sms(&sms_gauges(state)));
    Ok(text)
}

/// The SMS figures of `/metrics` (zeros when the guard's store fails: the
/// status view says why).
fn sms_gauges(state: &NodeState) -> metrics::SmsGauges {
    let Some(sms) = &state.sms else {
        return metrics::SmsGauges::default();
    };
    let now = crate::now();
    let view = sms.guard.view(now).ok();
    let totals = sms.guard.totals().unwrap_or_default();
    metrics::SmsGauges {
        enabled: true,
        spent: view.as_ref().map_or(0.0, |v| v.spent),
        budget: view.as_ref().map_or(0.0, |v| v.budget),
        sent_total: totals.sent,
        refused_total: totals.refused.into_iter().collect(),
        blocked_prefixes: view
            .map(|v| v.blocked_prefixes.into_iter().map(|b| b.prefix).collect())
            .unwrap_or_default(),
    }
}

impl NodeState {
    /// [`status`] as a JSON value, for tests that read fields by name; a
    /// poisoned lock gives `{"error":"unavailable","reason":…}`.
    pub fn status_json(&self) -> serde_json::Value {
        let unavailable =
            |reason: String| serde_json::json!({"error": "unavailable", "reason": reason});
        match status(self).map(serde_json::to_value) {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => unavailable(e.to_string()),
            Err(e) => unavailable(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use did_core::member::{NetworkRules, DEFAULT_KEY_OVERLAP_SECS};
    use did_core::{Ledger, OpKind, Operation};
    use ed25519_dalek::SigningKey;

    #[test]
    fn a_rotated_key_is_listed_with_its_end_until_the_window_closes() {
        let k = |i: u8| SigningKey::from_bytes(&[i; 32]);
        let founders: Vec<Member> = (1..=3)
            .map(|i| Member::from_key(&format!("n{i}"), did_core::keys::public_of(&k(i))))
            .collect();
        let mut l = Ledger::default().with_network(NetworkRules {
            network_id: "mesh-test".into(),
            founders: founders.clone(),
            quorum: 2,
            key_overlap_secs: DEFAULT_KEY_OVERLAP_SECS,
        });
        let mut entry = Member::from_key("n1", did_core::keys::public_of(&k(9)));
        entry.node_did = founders[0].node_did.clone();
        let op = Operation::membership(
            OpKind::MemberRotate,
            "mesh-test",
            None,
            entry,
            1_000,
            &[&k(1), &k(2)],
        )
        .unwrap();
        l.apply(op).unwrap();
        let old = identity::kid(&founders[0].key);
        let retires = 1_000 + DEFAULT_KEY_OVERLAP_SECS;
        let during = jwks_of(&l, retires - 1);
        assert_eq!(during.len(), 4);
        let listed = during.iter().find(|j| j["kid"] == old.as_str()).unwrap();
        assert_eq!(listed["didmesh_retires"], retires);
        assert_eq!(
            access_token_key(&l, &old, retires - 1),
            Some(founders[0].key)
        );
        let after = jwks_of(&l, retires);
        assert_eq!(after.len(), 3);
        assert!(after.iter().all(|j| j.get("didmesh_retires").is_none()));
        assert_eq!(access_token_key(&l, &old, retires), None);
    }
}
