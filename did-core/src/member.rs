//! Network membership: the nodes whose keys sign access tokens.
//!
//! A network starts from its genesis (founding members and a quorum).
//! `member-add` and `member-remove` ops form a tree rooted at the genesis,
//! each naming the membership op it builds on (`prev`, `null` = the
//! genesis). The rules (PROTOCOL.md, "Membership"; enforced in
//! [`crate::ledger`]):
//!
//! * A change needs distinct signatures of a **strict majority** of the
//!   members at its parent ([`NetworkRules::quorum_for`]); a genesis may ask
//!   for more (extra signatures above a majority), never less. The author signs in `signer`/`sig`, co-signers in
//!   `cosigs`; all sign the same body, which is also what the CID names.
//! * Two strict majorities of one set always share a member, so two
//!   different changes on one parent mean some member signed both: that is
//!   **equivocation**, recorded as evidence against the member.
//! * The members are those of the single chain when there is no fork. When
//!   there is one, a node is a member only if *every* branch's latest set
//!   holds it and it never equivocated. A change built on an old op
//!   therefore cannot bring back anyone a later change removed, and a fork
//!   can only shrink the set, never grow it.
//! * A removal that would leave so few members that losing one more key
//!   freezes membership (fewer than `quorum_for(n) + 1` members) needs the
//!   signed `force` flag.

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
    /// Distinct member signatures a membership change needs, as fixed by
    /// the genesis; the ledger never asks for less than a strict majority
    /// ([`NetworkRules::quorum_for`]).
    pub quorum: usize,
}

impl NetworkRules {
    /// Signatures a change needs when the parent set has `members` members:
    /// a strict majority, plus as many extra signatures as the genesis
    /// quorum asked above the founders' majority (capped at all members).
    /// So a genesis can ask for more than a majority, never less, and what
    /// it asked keeps its meaning as the network grows or shrinks.
    pub fn quorum_for(&self, members: usize) -> usize {
        let extra = self.quorum.saturating_sub(self.founders.len() / 2 + 1);
        (members / 2 + 1 + extra).min(members.max(1))
    }

    /// Whether a set of `members` can lose one key and still reach its
    /// quorum (so membership never freezes on a single lost key).
    pub fn survives_one_loss(&self, members: usize) -> bool {
        members > self.quorum_for(members)
    }
}

/// Evidence that a member signed two different changes on one parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Equivocation {
    pub member: PublicKey,
    /// The parent both changes build on (`None` = the genesis).
    pub parent: Option<crate::encoding::Cid>,
    /// The two conflicting changes, lower CID first.
    pub ops: [crate::encoding::Cid; 2],
}
