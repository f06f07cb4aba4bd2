//! The ledger state machine: the set of valid operations and, for every DID,
//! the state that the fork rule selects. PROTOCOL.md states these rules for
//! other implementations; SECURITY.md says what they protect against.
//!
//! **Validity** of an op depends only on its parent (`prev`): the parent must
//! be known and must hold `signer` among its rotation keys. So the set of
//! valid ops is the same whatever order they arrive in, and the state is a
//! pure function of that set.
//!
//! **Fork rule** ([`choose`]): among the valid children of one op,
//!
//! 1. the child signed by the highest-priority rotation key of the parent
//!    (lowest index) wins;
//! 2. if that key signed more than one child, the key **equivocated**
//!    (KERI's duplicity). No order-independent rule can tell the owner's op
//!    from a thief's when both carry the same key's signature, and a CID
//!    tie-break would hand the DID to whoever grinds the lower CID. So no
//!    child wins: the DID is **disputed** at the parent. Resolution shows
//!    the state there with the evidence, and no login is accepted, until a
//!    child signed by a higher-priority key settles it by rule 1. (This also
//!    holds when one of the children is a `deactivate`: the DID is not
//!    usable, and a higher key can still recover it.)
//!
//! CIDs never decide between two different outcomes, so grinding them gains
//! nothing. The winning chain is followed from the genesis op; losing
//! branches stay stored for audit.
//!
//! **Membership** follows [`crate::member`]: strict-majority changes, and
//! on a fork only the members every branch agrees on, minus equivocators.
//!
//! Ops whose parent is unknown can wait in a bounded orphan pool
//! ([`Ledger::apply`]) until the parent arrives.
//!
//! **Link index** ([`Ledger::linked_dids`]): commitment → the DIDs whose
//! head state lists it ([`crate::federation`]). It is updated wherever a
//! DID's head changes (create, update, a fork-rule switch, a dispute, a
//! deactivation, an orphan released), so it always equals a scan of every
//! DID's [`DidView::state`]. A disputed DID stays listed (its head state is
//! the state at the disputed op, and a higher key may settle the dispute
//! either way); a deactivated one is not (it has no state). The index is
//! derived, not part of any digest.

use crate::encoding::Cid;
use crate::keys::PublicKey;
use crate::member::{Equivocation, Member, NetworkRules};
use crate::op::{did_from_genesis, DidState, Limits, OpError, OpKind, Operation};
use std::collections::{BTreeSet, HashMap, VecDeque};

/// How many ops may wait for a missing parent. Oldest are dropped first;
/// anti-entropy brings them back once the parent is known.
pub const DEFAULT_ORPHAN_CAPACITY: usize = 10_000;

/// One valid op and what the ledger derived from it.
#[derive(Debug, Clone)]
pub struct StoredOp {
    pub op: Operation,
    pub cid: Cid,
    /// Canonical bytes (what the CID names).
    pub bytes: Vec<u8>,
    pub did: String,
    /// Index of `signer` in the parent's rotation keys (0 = highest).
    pub priority: usize,
    pub children: Vec<Cid>,
}

#[derive(Debug, Clone)]
struct DidEntry {
    /// The winning chain, genesis first. When disputed, it ends at the op
    /// whose children equivocate.
    chain: Vec<Cid>,
    /// Every op of the DID in audit order: (created_at, cid).
    audit: BTreeSet<(u64, Cid)>,
    /// Set while the highest-priority key at the chain's end equivocated.
    dispute: Option<Dispute>,
}

/// Evidence that a rotation key signed two different children of one op
/// (fork rule 2): the DID is frozen at `at` until a higher-priority key
/// signs a child of `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispute {
    /// The op whose children conflict (the end of the winning chain).
    pub at: Cid,
    /// The rotation key (of the state at `at`) that signed them.
    pub key: PublicKey,
    /// The conflicting children, by CID.
    pub ops: Vec<Cid>,
}

/// What the fork rule selects among the children of one op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// No valid child: the op is a head.
    Head,
    Winner(Cid),
    Disputed(Box<Dispute>),
}

/// An op that passed every check and can be committed.
#[derive(Debug, Clone)]
pub struct Validated {
    pub op: Operation,
    pub cid: Cid,
    pub bytes: Vec<u8>,
    pub did: String,
    pub priority: usize,
}

/// Outcome of validating an op against the ledger.
#[derive(Debug, Clone)]
pub enum Check {
    /// Already held; nothing to do.
    Known(Cid),
    New(Box<Validated>),
}

/// The resolved view of one DID.
#[derive(Debug, Clone, Copy)]
pub struct DidView<'a> {
    pub did: &'a str,
    pub genesis: Cid,
    pub head: Cid,
    /// `None` once deactivated.
    pub state: Option<&'a DidState>,
    pub created_at: u64,
    pub updated_at: u64,
    pub version: usize,
    /// Set when a key equivocated at `head`: `state` is the state there,
    /// shown for audit; no login may be accepted.
    pub disputed: Option<&'a Dispute>,
}

impl DidView<'_> {
    pub fn deactivated(&self) -> bool {
        self.state.is_none()
    }

    /// The state a login may use: `None` when deactivated or disputed.
    pub fn usable_state(&self) -> Option<&DidState> {
        match self.disputed {
            Some(_) => None,
            None => self.state,
        }
    }
}

/// One op in a DID's audit log.
#[derive(Debug, Clone)]
pub struct LogEntry<'a> {
    pub stored: &'a StoredOp,
    /// On the winning chain.
    pub winning: bool,
}

#[derive(Debug, Default)]
struct OrphanPool {
    capacity: usize,
    /// Missing parent → ops waiting for it.
    waiting: HashMap<Cid, Vec<(Cid, Operation)>>,
    /// Arrival order, for eviction: (missing parent, op cid).
    order: VecDeque<(Cid, Cid)>,
    len: usize,
}

impl OrphanPool {
    fn park(&mut self, missing: Cid, cid: Cid, op: Operation) -> bool {
        let list = self.waiting.entry(missing).or_default();
        if list.iter().any(|(c, _)| *c == cid) {
            return false;
        }
        list.push((cid, op));
        self.order.push_back((missing, cid));
        self.len += 1;
        while self.len > self.capacity {
            let Some((parent, victim)) = self.order.pop_front() else {
                break;
            };
            if let Some(list) = self.waiting.get_mut(&parent) {
                if let Some(pos) = list.iter().position(|(c, _)| *c == victim) {
                    list.swap_remove(pos);
                    self.len -= 1;
                }
                if list.is_empty() {
                    self.waiting.remove(&parent);
                }
            }
        }
        true
    }

    fn release(&mut self, parent: &Cid) -> Vec<Operation> {
        let Some(list) = self.waiting.remove(parent) else {
            return vec![];
        };
        self.len -= list.len();
        self.order.retain(|(p, _)| p != parent);
        list.into_iter().map(|(_, op)| op).collect()
    }
}

/// The in-memory ledger. Storage (durability, the hash-chained log) is the
/// node's business; this type is deterministic and IO-free.
#[derive(Debug)]
pub struct Ledger {
    limits: Limits,
    ops: HashMap<Cid, StoredOp>,
    dids: HashMap<String, DidEntry>,
    orphans: OrphanPool,
    /// XOR of every op CID digest: an order-independent set digest.
    op_xor: [u8; 32],
    /// XOR of blake3(did ‖ head) over DIDs: a digest of resolved state.
    state_xor: [u8; 32],
    /// Membership rules; `None` for a ledger that only tracks DIDs.
    network: Option<NetworkRules>,
    /// Member set after each membership op.
    member_sets: HashMap<Cid, Vec<Member>>,
    /// Children of each membership op (`None` = the genesis).
    member_children: HashMap<Option<Cid>, Vec<Cid>>,
    /// Membership ops with no child: one when there is no fork.
    member_leaves: BTreeSet<Cid>,
    /// The current members (see [`crate::member`]).
    effective_members: Vec<Member>,
    /// Members that signed two changes on one parent.
    member_evidence: Vec<Equivocation>,
    /// Digest of the membership outcome (leaves and effective set).
    member_digest: [u8; 32],
    /// Link commitment → DIDs whose head state lists it (module doc).
    links: HashMap<String, BTreeSet<String>>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger::new(Limits::default())
    }
}

impl Ledger {
    pub fn new(limits: Limits) -> Ledger {
        Ledger {
            limits,
            ops: HashMap::new(),
            dids: HashMap::new(),
            orphans: OrphanPool {
                capacity: DEFAULT_ORPHAN_CAPACITY,
                ..Default::default()
            },
            op_xor: [0; 32],
            state_xor: [0; 32],
            network: None,
            member_sets: HashMap::new(),
            member_children: HashMap::new(),
            member_leaves: BTreeSet::new(),
            effective_members: vec![],
            member_evidence: vec![],
            member_digest: [0; 32],
            links: HashMap::new(),
        }
    }

    /// Enables membership ops under `rules` (from the network genesis).
    pub fn with_network(mut self, rules: NetworkRules) -> Ledger {
        self.network = Some(rules);
        self.recompute_membership();
        self
    }

    /// The current members: the genesis founders changed by the chain of
    /// membership ops; on a fork, only those every branch agrees on, minus
    /// members that equivocated.
    pub fn members(&self) -> &[Member] {
        &self.effective_members
    }

    /// The membership op new changes should build on (`None` = the
    /// genesis set). On a fork: the lowest-CID branch head.
    pub fn membership_head(&self) -> Option<Cid> {
        self.member_leaves.iter().next().copied()
    }

    /// Members that signed two different changes on one parent.
    pub fn membership_evidence(&self) -> &[Equivocation] {
        &self.member_evidence
    }

    /// Whether membership has forked (see [`crate::member`]).
    pub fn membership_forked(&self) -> bool {
        self.member_leaves.len() > 1
    }

    pub fn network(&self) -> Option<&NetworkRules> {
        self.network.as_ref()
    }

    fn validate_membership(&self, op: &Operation) -> Result<(String, usize), OpError> {
        let rules = self
            .network
            .as_ref()
            .ok_or_else(|| OpError::Invalid("this ledger takes no membership ops".into()))?;
        if op.did.as_deref() != Some(rules.network_id.as_str()) {
            return Err(OpError::Invalid("membership op for another network".into()));
        }
        let parent_set: &[Member] = match op.prev {
            None => &rules.founders,
            Some(prev) => {
                let parent = self
                    .ops
                    .get(&prev)
                    .ok_or_else(|| OpError::UnknownPrev(prev.to_string()))?;
                if !parent.op.kind.is_membership() {
                    return Err(OpError::Invalid(
                        "prev of a membership op must be a membership op".into(),
                    ));
                }
                if op.created_at < parent.op.created_at {
                    return Err(OpError::Invalid("created_at is earlier than prev's".into()));
                }
                self.member_sets
                    .get(&prev)
                    .map(Vec::as_slice)
                    .unwrap_or(&[])
            }
        };
        let signers = op.signers()?;
        if let Some(outsider) = signers
            .iter()
            .find(|k| !parent_set.iter().any(|m| m.key == **k))
        {
            return Err(OpError::BadSignature(format!(
                "{outsider} is not a member at prev"
            )));
        }
        let quorum = rules.quorum_for(parent_set.len());
        if signers.len() < quorum {
            return Err(OpError::BadSignature(format!(
                "{} member signatures; the quorum for a change to {} members is {quorum} (a strict majority{})",
                signers.len(),
                parent_set.len(),
                if quorum > parent_set.len() / 2 + 1 {
                    ", raised by the genesis quorum"
                } else {
                    ""
                }
            )));
        }
        let member = op
            .member
            .as_ref()
            .ok_or_else(|| OpError::Invalid("no member".into()))?;
        let present = parent_set.iter().any(|m| m.key == member.key);
        match op.kind {
            OpKind::MemberAdd if present => {
                return Err(OpError::Invalid("already a member".into()))
            }
            OpKind::MemberRemove if !present => {
                return Err(OpError::Invalid("not a member".into()))
            }
            OpKind::MemberRemove if parent_set.len() <= 1 => {
                return Err(OpError::Invalid("the last member cannot be removed".into()))
            }
            OpKind::MemberRemove if !op.force && !rules.survives_one_loss(parent_set.len() - 1) => {
                let left = parent_set.len() - 1;
                return Err(OpError::Invalid(format!(
                    "removal would leave {left} members, needing {} signatures: losing one \
                     more key would freeze membership (sign with force to do it anyway)",
                    rules.quorum_for(left)
                )));
            }
            _ => {}
        }
        Ok((rules.network_id.clone(), 0))
    }

    fn commit_membership(&mut self, cid: Cid, op: &Operation) {
        let parent_set = match op.prev {
            None => self
                .network
                .as_ref()
                .map(|r| r.founders.clone())
                .unwrap_or_default(),
            Some(prev) => self.member_sets.get(&prev).cloned().unwrap_or_default(),
        };
        let mut set = parent_set;
        if let Some(m) = &op.member {
            match op.kind {
                OpKind::MemberAdd => set.push(m.clone()),
                _ => set.retain(|x| x.key != m.key),
            }
        }
        self.member_sets.insert(cid, set);
        self.member_children.entry(op.prev).or_default().push(cid);
        if let Some(prev) = op.prev {
            self.member_leaves.remove(&prev);
        }
        self.member_leaves.insert(cid);
        self.recompute_membership();
    }

    /// Derives the current members, the head and the evidence from the
    /// membership tree (a pure function of the membership ops held).
    fn recompute_membership(&mut self) {
        let Some(rules) = &self.network else {
            return;
        };
        let mut evidence = vec![];
        for (parent, children) in &self.member_children {
            for (i, a) in children.iter().enumerate() {
                for b in &children[i + 1..] {
                    let (Some(sa), Some(sb)) = (self.ops.get(a), self.ops.get(b)) else {
                        continue;
                    };
                    for key in signer_keys(&sa.op).filter(|k| signer_keys(&sb.op).any(|x| x == *k))
                    {
                        evidence.push(Equivocation {
                            member: *key,
                            parent: *parent,
                            ops: [(*a).min(*b), (*a).max(*b)],
                        });
                    }
                }
            }
        }
        evidence.sort_by_key(|e| (e.ops, e.member.to_string()));
        let sets: Vec<&Vec<Member>> = self
            .member_leaves
            .iter()
            .filter_map(|c| self.member_sets.get(c))
            .collect();
        let effective: Vec<Member> = match sets.split_first() {
            None => rules.founders.clone(),
            Some((first, rest)) => first
                .iter()
                .filter(|m| rest.iter().all(|s| s.iter().any(|x| x.key == m.key)))
                .filter(|m| !evidence.iter().any(|e| e.member == m.key))
                .cloned()
                .collect(),
        };
        let mut h = blake3::Hasher::new();
        h.update(b"didmesh membership");
        for leaf in &self.member_leaves {
            h.update(&leaf.0);
        }
        for m in &effective {
            h.update(m.key.to_string().as_bytes());
        }
        self.member_digest = *h.finalize().as_bytes();
        self.effective_members = effective;
        self.member_evidence = evidence;
    }

    pub fn with_orphan_capacity(mut self, capacity: usize) -> Ledger {
        self.orphans.capacity = capacity;
        self
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Number of valid ops held.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn did_count(&self) -> usize {
        self.dids.len()
    }

    pub fn orphan_count(&self) -> usize {
        self.orphans.len
    }

    pub fn contains(&self, cid: &Cid) -> bool {
        self.ops.contains_key(cid)
    }

    pub fn get(&self, cid: &Cid) -> Option<&StoredOp> {
        self.ops.get(cid)
    }

    /// Every op CID held, in no particular order.
    pub fn cids(&self) -> impl Iterator<Item = &Cid> {
        self.ops.keys()
    }

    /// Validates `op` against the ledger without changing it.
    pub fn validate(&self, op: &Operation) -> Result<Check, OpError> {
        let form = op.check_form(&self.limits)?;
        // Same CID = the same signed body as an op that already verified
        // (the CID covers every byte but the signatures): skip the
        // signature; the held op's valid signature stands for it.
        if self.ops.contains_key(&form.cid) {
            return Ok(Check::Known(form.cid));
        }
        op.check_signature(&form.signing_bytes)?;
        let (cid, bytes) = (form.cid, form.bytes);
        let (did, priority) = match op.kind {
            OpKind::MemberAdd | OpKind::MemberRemove => self.validate_membership(op)?,
            OpKind::Create => {
                let state = op
                    .state
                    .as_ref()
                    .ok_or_else(|| OpError::Invalid("create carries a state".into()))?;
                let priority = state.rotation_priority(&op.signer).ok_or_else(|| {
                    OpError::BadSignature(
                        "create must be signed by one of its rotation keys".into(),
                    )
                })?;
                (did_from_genesis(&cid), priority)
            }
            OpKind::Update | OpKind::Deactivate => {
                let prev = op
                    .prev
                    .ok_or_else(|| OpError::Invalid("missing prev".into()))?;
                let parent = self
                    .ops
                    .get(&prev)
                    .ok_or_else(|| OpError::UnknownPrev(prev.to_string()))?;
                if op.did.as_deref() != Some(parent.did.as_str()) {
                    return Err(OpError::Invalid(
                        "did does not match the DID of prev".into(),
                    ));
                }
                let parent_state = parent.op.state.as_ref().ok_or(OpError::Deactivated)?;
                let priority = parent_state.rotation_priority(&op.signer).ok_or_else(|| {
                    OpError::BadSignature(
                        "signer is not a rotation key of the state at prev".into(),
                    )
                })?;
                if op.created_at < parent.op.created_at {
                    return Err(OpError::Invalid("created_at is earlier than prev's".into()));
                }
                (parent.did.clone(), priority)
            }
        };
        Ok(Check::New(Box::new(Validated {
            op: op.clone(),
            cid,
            bytes,
            did,
            priority,
        })))
    }

    /// Inserts a validated op. Returns false if it was already held.
    /// `v` must come from [`Ledger::validate`] on this ledger (parents are
    /// never removed, so a validation stays true).
    pub fn commit(&mut self, v: Validated) -> bool {
        if self.ops.contains_key(&v.cid) {
            return false;
        }
        let Validated {
            op,
            cid,
            bytes,
            did,
            priority,
        } = v;
        let created_at = op.created_at;
        let prev = op.prev;
        let membership = op.kind.is_membership().then(|| op.clone());
        xor_into(&mut self.op_xor, &cid.0);
        self.ops.insert(
            cid,
            StoredOp {
                op,
                cid,
                bytes,
                did: did.clone(),
                priority,
                children: vec![],
            },
        );
        if let Some(op) = membership {
            self.commit_membership(cid, &op);
            return true;
        }
        match prev {
            None => {
                let mut audit = BTreeSet::new();
                audit.insert((created_at, cid));
                xor_into(&mut self.state_xor, &head_digest(&did, &cid, false));
                reindex_links(&mut self.links, &self.ops, &did, None, Some(cid));
                self.dids.insert(
                    did,
                    DidEntry {
                        chain: vec![cid],
                        audit,
                        dispute: None,
                    },
                );
            }
            Some(prev) => {
                if let Some(parent) = self.ops.get_mut(&prev) {
                    parent.children.push(cid);
                }
                self.extend_chain(&did, prev, cid, created_at);
            }
        }
        true
    }

    /// Re-applies the fork rule below `prev` after a new child `cid`.
    fn extend_chain(&mut self, did: &str, prev: Cid, cid: Cid, created_at: u64) {
        let Some(entry) = self.dids.get_mut(did) else {
            return;
        };
        entry.audit.insert((created_at, cid));
        let Some(pos) = entry.chain.iter().position(|c| *c == prev) else {
            return; // builds on a losing branch: stored, does not count
        };
        // The child that won at `prev` still wins: nothing below changes,
        // and the (possibly long) rest of the chain need not be walked again.
        if let (Choice::Winner(w), Some(current)) =
            (choose(&self.ops, &prev), entry.chain.get(pos + 1))
        {
            if w == *current {
                return;
            }
        }
        let old_tip = *entry.chain.last().unwrap_or(&prev);
        let old_digest = head_digest(did, &old_tip, entry.dispute.is_some());
        entry.chain.truncate(pos + 1);
        entry.dispute = None;
        // The new op may already have descendants (e.g. a branch that was
        // losing further up): follow the fork rule down from `prev`.
        let mut tip = prev;
        loop {
            match choose(&self.ops, &tip) {
                Choice::Head => break,
                Choice::Winner(next) => {
                    entry.chain.push(next);
                    tip = next;
                }
                Choice::Disputed(d) => {
                    entry.dispute = Some(*d);
                    break;
                }
            }
        }
        let new_digest = head_digest(did, &tip, entry.dispute.is_some());
        if new_digest != old_digest {
            xor_into(&mut self.state_xor, &old_digest);
            xor_into(&mut self.state_xor, &new_digest);
        }
        if tip != old_tip {
            reindex_links(&mut self.links, &self.ops, did, Some(old_tip), Some(tip));
        }
    }

    /// Parks an op whose parent is unknown. Returns false if already parked.
    pub fn park_orphan(&mut self, op: Operation) -> bool {
        let (Some(prev), Ok(cid)) = (op.prev, op.cid()) else {
            return false;
        };
        self.orphans.park(prev, cid, op)
    }

    /// Takes the orphans that were waiting for `parent`.
    pub fn release_orphans(&mut self, parent: &Cid) -> Vec<Operation> {
        self.orphans.release(parent)
    }

    /// Validates and commits in memory; an op with an unknown parent is
    /// parked and committed once the parent arrives. Returns the CIDs newly
    /// committed (the op and any orphans it released).
    pub fn apply(&mut self, op: Operation) -> Result<Vec<Cid>, OpError> {
        let mut committed = vec![];
        match self.validate(&op) {
            Ok(Check::Known(_)) => return Ok(committed),
            Ok(Check::New(v)) => {
                let cid = v.cid;
                self.commit(*v);
                committed.push(cid);
            }
            Err(OpError::UnknownPrev(_)) => {
                self.park_orphan(op);
                return Ok(committed);
            }
            Err(e) => return Err(e),
        }
        let mut i = 0;
        while i < committed.len() {
            let parent = committed[i];
            for orphan in self.release_orphans(&parent) {
                if let Ok(Check::New(v)) = self.validate(&orphan) {
                    let cid = v.cid;
                    if self.commit(*v) {
                        committed.push(cid);
                    }
                }
            }
            i += 1;
        }
        Ok(committed)
    }

    /// Resolves a DID to the state the fork rule selects.
    pub fn resolve(&self, did: &str) -> Option<DidView<'_>> {
        let (did, entry) = self.dids.get_key_value(did)?;
        let genesis = *entry.chain.first()?;
        let head = *entry.chain.last()?;
        let genesis_op = self.ops.get(&genesis)?;
        let head_op = self.ops.get(&head)?;
        Some(DidView {
            did,
            genesis,
            head,
            state: head_op.op.state.as_ref(),
            created_at: genesis_op.op.created_at,
            updated_at: head_op.op.created_at,
            version: entry.chain.len(),
            disputed: entry.dispute.as_ref(),
        })
    }

    /// The DIDs whose head state lists a link with `commitment`, sorted.
    /// Includes disputed DIDs (module doc): a caller that signs someone in
    /// keeps only usable states with a valid attestation
    /// ([`crate::federation::find_linked`]).
    pub fn linked_dids(&self, commitment: &str) -> Vec<&str> {
        self.links
            .get(commitment)
            .map(|dids| dids.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// Number of (commitment, DID) pairs in the link index (for metrics
    /// and for checking the index against a scan).
    pub fn link_index_len(&self) -> usize {
        self.links.values().map(BTreeSet::len).sum()
    }

    /// A DID's ops in audit order (created_at, then CID), winners marked.
    pub fn did_log(&self, did: &str) -> Option<Vec<LogEntry<'_>>> {
        let entry = self.dids.get(did)?;
        let winning: BTreeSet<&Cid> = entry.chain.iter().collect();
        Some(
            entry
                .audit
                .iter()
                .filter_map(|(_, cid)| {
                    self.ops.get(cid).map(|stored| LogEntry {
                        stored,
                        winning: winning.contains(cid),
                    })
                })
                .collect(),
        )
    }

    /// Digest of the op set: equal on two nodes iff (with overwhelming
    /// probability, for honest inputs) they hold the same ops.
    pub fn op_set_digest(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(&(self.ops.len() as u64).to_le_bytes());
        h.update(&self.op_xor);
        *h.finalize().as_bytes()
    }

    /// Digest of every DID's resolved head (and dispute) and of the
    /// membership outcome.
    pub fn state_digest(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(&(self.dids.len() as u64).to_le_bytes());
        h.update(&self.state_xor);
        h.update(&self.member_digest);
        *h.finalize().as_bytes()
    }
}

/// The fork rule for DID ops (module doc, rules 1 and 2): what wins among
/// the children of `cid`.
pub fn choose(ops: &HashMap<Cid, StoredOp>, cid: &Cid) -> Choice {
    let Some(parent) = ops.get(cid) else {
        return Choice::Head;
    };
    let children: Vec<&StoredOp> = parent.children.iter().filter_map(|c| ops.get(c)).collect();
    let Some(best) = children.iter().map(|c| c.priority).min() else {
        return Choice::Head;
    };
    let mut top: Vec<&StoredOp> = children
        .into_iter()
        .filter(|c| c.priority == best)
        .collect();
    top.sort_by_key(|c| c.cid);
    match top.as_slice() {
        [] => Choice::Head,
        [only] => Choice::Winner(only.cid),
        several => {
            // Rule 2: the key at `best` equivocated. Even when one of the
            // children deactivates, no child wins: a holder of an old key
            // must not be able to kill a DID that a higher key can recover.
            Choice::Disputed(Box::new(Dispute {
                at: *cid,
                key: several[0].op.signer,
                ops: several.iter().map(|c| c.cid).collect(),
            }))
        }
    }
}

/// The keys that signed a membership op, author first. Their signatures
/// were verified by [`Ledger::validate`] before the op was committed.
fn signer_keys(op: &Operation) -> impl Iterator<Item = &PublicKey> {
    std::iter::once(&op.signer).chain(op.cosigs.iter().map(|c| &c.signer))
}

/// Moves `did`'s entries in the link index from the state at `old` to the
/// state at `new` (`None` or a deactivation = no links).
fn reindex_links(
    index: &mut HashMap<String, BTreeSet<String>>,
    ops: &HashMap<Cid, StoredOp>,
    did: &str,
    old: Option<Cid>,
    new: Option<Cid>,
) {
    let links_at = |cid: Option<Cid>| -> Vec<&str> {
        cid.and_then(|c| ops.get(&c))
            .and_then(|s| s.op.state.as_ref())
            .map(|st| st.links.iter().map(|l| l.commitment.as_str()).collect())
            .unwrap_or_default()
    };
    let (before, after) = (links_at(old), links_at(new));
    for c in &before {
        if after.contains(c) {
            continue;
        }
        if let Some(dids) = index.get_mut(*c) {
            dids.remove(did);
            if dids.is_empty() {
                index.remove(*c);
            }
        }
    }
    for c in after {
        if !before.contains(&c) {
            index
                .entry(c.to_string())
                .or_default()
                .insert(did.to_string());
        }
    }
}

fn head_digest(did: &str, head: &Cid, disputed: bool) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(did.as_bytes());
    h.update(&head.0);
    h.update(&[u8::from(disputed)]);
    *h.finalize().as_bytes()
}

fn xor_into(acc: &mut [u8; 32], x: &[u8; 32]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a ^= b;
    }
}
