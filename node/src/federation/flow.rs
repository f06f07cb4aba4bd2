//! The node's memory of federated sign-ins in progress: the `state` map
//! of flows sent to a provider, the CLI polls, and the one-time `fed`
//! handles of the not-linked page.
//!
//! A flow is created when the node sends the browser to the provider and
//! *taken out* of the map by the first callback naming its `state` (RFC
//! 6749 §10.12: `state` binds the callback to the request; single use), so
//! a replayed callback, a second use of its nonce, or a callback for a
//! state this node never issued finds nothing. Each flow carries its own
//! random `nonce` (OpenID Connect Core §3.1.2.1) and PKCE verifier (RFC
//! 7636, S256). State lives only at the node that started the flow (each
//! node has its own callback URL), for [`FLOW_LIFE`] (10 minutes), and at
//! most [`MAX_FLOWS`] flows are held: when full of live ones, new flows
//! are refused rather than a live one dropped.
//!
//! A page flow also binds the browser: the start answer sets a cookie
//! whose hash the flow keeps, and the callback must bring it back. Without
//! it, someone could finish a flow with their own provider account and
//! send the callback link to a victim, whose browser would then be signed
//! in to the app as the sender (login CSRF, RFC 6749 §10.12).

use super::super::oidc::request::AuthRequest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use did_core::federation::Attestation;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

/// Life of a flow, a poll and a `fed` handle, seconds.
pub const FLOW_LIFE: u64 = 600;
/// Flows (and, separately, polls and `fed` handles) held at most.
pub const MAX_FLOWS: usize = 10_000;

/// 128 random bits, base64url.
pub fn random_id() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// A PKCE verifier (RFC 7636 §4.1: 43 characters from 32 random bytes) and
/// its S256 challenge (§4.2).
pub fn pkce() -> (String, String) {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    let verifier = URL_SAFE_NO_PAD.encode(b);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// SHA-256 of a browser-binding cookie value.
pub fn binder_hash(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

/// What a flow is for.
#[derive(Debug, Clone)]
pub enum Purpose {
    /// The sign-in page: answer the step-6 authorization request, in the
    /// browser that holds the cookie whose hash is `binder`.
    Page {
        request: AuthRequest,
        binder: [u8; 32],
    },
    /// `didmesh login --via`: the poll `poll` gets a token.
    CliLogin { poll: String },
    /// `didmesh link --via`: the poll `poll` gets an attestation for `did`.
    CliLink { poll: String, did: String },
}

/// A flow sent to a provider.
#[derive(Debug, Clone)]
pub struct Flow {
    pub provider: String,
    pub nonce: String,
    pub verifier: String,
    pub purpose: Purpose,
    pub expires_at: u64,
}

/// What a CLI poll answers (`GET /federation/cli/{poll}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollStatus {
    Waiting,
    Token { token: String, did: String },
    Link(Box<Attestation>),
    Refused { error: String, reason: String },
    Expired,
}

/// A verified provider account that is not linked yet, kept for the
/// not-linked page's "create a DID and link it" (`POST /federation/attest`).
#[derive(Clone, PartialEq, Eq)]
pub struct FedProof {
    pub provider: String,
    pub commitment: String,
    pub expires_at: u64,
}

struct Timed<T> {
    value: T,
    expires_at: u64,
}

/// A bounded map of entries with a life (module doc).
struct Bounded<T> {
    map: Mutex<HashMap<String, Timed<T>>>,
    max: usize,
}

impl<T> Bounded<T> {
    fn new(max: usize) -> Self {
        Bounded {
            map: Mutex::new(HashMap::new()),
            max,
        }
    }

    fn insert(&self, key: String, value: T, expires_at: u64, now: u64) -> bool {
        let Ok(mut map) = self.map.lock() else {
            return false;
        };
        if map.len() >= self.max {
            map.retain(|_, e| e.expires_at > now);
            if map.len() >= self.max {
                return false;
            }
        }
        map.insert(key, Timed { value, expires_at });
        true
    }

    fn take(&self, key: &str, now: u64) -> Option<T> {
        let mut map = self.map.lock().ok()?;
        map.remove(key)
            .filter(|e| e.expires_at > now)
            .map(|e| e.value)
    }

    fn prune(&self, now: u64) {
        if let Ok(mut map) = self.map.lock() {
            map.retain(|_, e| e.expires_at > now);
        }
    }

    fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// The flows, polls and `fed` handles of this node.
pub struct Flows {
    flows: Bounded<Flow>,
    polls: Bounded<PollStatus>,
    proofs: Bounded<FedProof>,
}

impl Default for Flows {
    fn default() -> Self {
        Flows {
            flows: Bounded::new(MAX_FLOWS),
            polls: Bounded::new(MAX_FLOWS),
            proofs: Bounded::new(MAX_FLOWS),
        }
    }
}

impl Flows {
    /// Records a flow; its `state`, or `None` when the node holds too
    /// many.
    pub fn start(&self, flow: Flow, now: u64) -> Option<String> {
        let state = random_id();
        let expires_at = flow.expires_at;
        self.flows
            .insert(state.clone(), flow, expires_at, now)
            .then_some(state)
    }

    /// Takes the flow of `state` out (single use); `None` when unknown,
    /// used or expired.
    pub fn take(&self, state: &str, now: u64) -> Option<Flow> {
        self.flows.take(state, now)
    }

    /// A new poll, waiting; its id, or `None` when full.
    pub fn new_poll(&self, now: u64) -> Option<String> {
        let id = random_id();
        self.polls
            .insert(id.clone(), PollStatus::Waiting, now + FLOW_LIFE, now)
            .then_some(id)
    }

    /// Settles a poll (kept until its own expiry so the CLI can read it).
    pub fn settle(&self, poll: &str, status: PollStatus) {
        if let Ok(mut map) = self.polls.map.lock() {
            if let Some(e) = map.get_mut(poll) {
                e.value = status;
            }
        }
    }

    /// What the CLI's poll reads. A settled answer is handed out once (it
    /// may hold a token), then the poll is gone ("expired").
    pub fn poll(&self, poll: &str, now: u64) -> PollStatus {
        let Ok(mut map) = self.polls.map.lock() else {
            return PollStatus::Expired;
        };
        match map.get(poll) {
            None => PollStatus::Expired,
            Some(e) if e.expires_at <= now => {
                map.remove(poll);
                PollStatus::Expired
            }
            Some(e) if e.value == PollStatus::Waiting => PollStatus::Waiting,
            Some(_) => map.remove(poll).map_or(PollStatus::Expired, |e| e.value),
        }
    }

    /// Keeps a verified, unlinked account for the not-linked page; the
    /// one-time handle, or `None` when full.
    pub fn keep_proof(&self, proof: FedProof, now: u64) -> Option<String> {
        let id = random_id();
        let expires_at = proof.expires_at;
        self.proofs
            .insert(id.clone(), proof, expires_at, now)
            .then_some(id)
    }

    /// A `fed` handle's account, left in place (checks come first).
    pub fn peek_proof(&self, handle: &str, now: u64) -> Option<FedProof> {
        let map = self.proofs.map.lock().ok()?;
        map.get(handle)
            .filter(|e| e.expires_at > now)
            .map(|e| e.value.clone())
    }

    /// Takes a `fed` handle's account out (single use).
    pub fn take_proof(&self, handle: &str, now: u64) -> Option<FedProof> {
        self.proofs.take(handle, now)
    }

    pub fn prune(&self, now: u64) {
        self.flows.prune(now);
        self.polls.prune(now);
        self.proofs.prune(now);
    }

    /// Flows in progress (tests, metrics).
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(expires_at: u64) -> Flow {
        Flow {
            provider: "p".into(),
            nonce: "n".into(),
            verifier: "v".into(),
            purpose: Purpose::CliLogin { poll: "x".into() },
            expires_at,
        }
    }

    #[test]
    fn a_state_is_used_once_and_expires() {
        let f = Flows::default();
        let s = f.start(flow(200), 100).unwrap();
        assert!(f.take(&s, 150).is_some());
        assert!(f.take(&s, 150).is_none());
        let s = f.start(flow(200), 100).unwrap();
        assert!(f.take(&s, 200).is_none());
        assert!(f.take("made-up", 100).is_none());
    }

    #[test]
    fn full_of_live_flows_refuses_new_ones() {
        let f = Flows {
            flows: Bounded::new(2),
            ..Flows::default()
        };
        assert!(f.start(flow(200), 100).is_some());
        assert!(f.start(flow(200), 100).is_some());
        assert!(f.start(flow(200), 100).is_none());
        // once they expire, room again
        assert!(f.start(flow(400), 300).is_some());
    }

    #[test]
    fn a_settled_poll_is_read_once() {
        let f = Flows::default();
        let p = f.new_poll(100).unwrap();
        assert_eq!(f.poll(&p, 101), PollStatus::Waiting);
        f.settle(
            &p,
            PollStatus::Refused {
                error: "e".into(),
                reason: "r".into(),
            },
        );
        assert!(matches!(f.poll(&p, 102), PollStatus::Refused { .. }));
        assert_eq!(f.poll(&p, 103), PollStatus::Expired);
        let p = f.new_poll(100).unwrap();
        assert_eq!(f.poll(&p, 100 + FLOW_LIFE), PollStatus::Expired);
    }
}
