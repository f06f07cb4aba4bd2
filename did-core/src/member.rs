//! Network membership: the nodes whose keys sign access tokens.
//!
//! A network starts from its genesis (founding members and a quorum).
//! `member-add` and `member-remove` ops form a chain from the genesis, each
//! naming the membership op it builds on (`prev`, `null` = the genesis) and
//! signed by at least `quorum` distinct members of the set at `prev`: the
//! author in `signer`/`sig`, co-signers in `cosigs`. Forks resolve like DID
//! forks with every signer at equal priority: the lower CID wins.

use crate::keys::PublicKey;
use serde::{Deserialize, Serialize};

/// One member node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Human-readable label (`node1`).
    pub name: String,
    /// The member's DID: the `did:key` of its token-signing key.
    pub node_did: String,
    /// Token-signing key.
    pub key: PublicKey,
}

impl Member {
    pub fn from_key(name: &str, key: PublicKey) -> Member {
        Member {
            name: name.to_string(),
            node_did: key.did_key(),
            key,
        }
    }
}

/// A co-signature on a membership op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoSig {
    pub signer: PublicKey,
    pub sig: String,
}

/// What fixes the membership rules of a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRules {
    pub network_id: String,
    pub founders: Vec<Member>,
    /// Distinct member signatures a membership change needs.
    pub quorum: usize,
}
