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
            l.members().iter().any(|m| m.key == state.me.key),
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
            replication: "no peers: this node runs alone",
        },
    };
    Ok(Status {
        node_did: state.me.node_did.clone(),
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
        keys: l.members().iter().flat_map(member_jwks).collect(),
    })
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
