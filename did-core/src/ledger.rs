//! The ledger state machine: the set of valid operations and, for every DID,
//! the state that the fork rule selects.
//!
//! Validity of an op depends only on its parent (`prev`): the parent must be
//! known and must hold `signer` among its rotation keys. So the set of valid
//! ops is the same whatever order they arrive in, and the state is a pure
//! function of that set:
//!
//! * **Fork rule**: among the children of one op, the one signed by the
//!   higher-priority rotation key of the parent (lower index) wins; a tie
//!   goes to the lower CID (by digest bytes). The winning chain is followed
//!   from the genesis op; losing branches stay stored for audit.
//!
//! Ops whose parent is unknown can wait in a bounded orphan pool
//! ([`Ledger::apply`]) until the parent arrives.

use crate::encoding::Cid;
use crate::member::{Member, NetworkRules};
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
    /// The winning chain, genesis first.
    chain: Vec<Cid>,
    /// Every op of the DID in audit order: (created_at, cid).
    audit: BTreeSet<(u64, Cid)>,
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
}

impl DidView<'_> {
    pub fn deactivated(&self) -> bool {
        self.state.is_none()
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
    /// Membership ops built directly on the genesis.
    member_roots: Vec<Cid>,
    /// Winning membership op, `None` while the genesis set holds.
    member_head: Option<Cid>,
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
            member_roots: vec![],
            member_head: None,
        }
    }

    /// Enables membership ops under `rules` (from the network genesis).
    pub fn with_network(mut self, rules: NetworkRules) -> Ledger {
        self.network = Some(rules);
        self
    }

    /// The current members: the genesis founders changed by the winning
    /// chain of membership ops.
    pub fn members(&self) -> &[Member] {
        match (&self.network, self.member_head) {
            (_, Some(head)) => self
                .member_sets
                .get(&head)
                .map(Vec::as_slice)
                .unwrap_or(&[]),
            (Some(rules), None) => &rules.founders,
            (None, None) => &[],
        }
    }

    /// The winning membership op (`None` = the genesis set).
    pub fn membership_head(&self) -> Option<Cid> {
        self.member_head
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
        if signers.len() < rules.quorum {
            return Err(OpError::BadSignature(format!(
                "{} member signatures, the quorum is {}",
                signers.len(),
                rules.quorum
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
            OpKind::MemberRemove if parent_set.len() <= rules.quorum => {
                return Err(OpError::Invalid(
                    "removal would leave fewer members than the quorum".into(),
                ))
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
        if op.prev.is_none() {
            self.member_roots.push(cid);
        }
        let old = self.member_head;
        let mut head = self
            .member_roots
            .iter()
            .filter_map(|c| self.ops.get(c))
            .min_by_key(|c| (c.priority, c.cid))
            .map(|c| c.cid);
        while let Some(best) = head.and_then(|h| best_child(&self.ops, &h)) {
            head = Some(best);
        }
        if head != old {
            let network = self
                .network
                .as_ref()
                .map(|r| r.network_id.clone())
                .unwrap_or_default();
            if let Some(old) = old {
                xor_into(&mut self.state_xor, &head_digest(&network, &old));
            }
            if let Some(new) = head {
                xor_into(&mut self.state_xor, &head_digest(&network, &new));
            }
            self.member_head = head;
        }
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
        // Same CID = same bytes as an op that already verified: skip the
        // signature (duplicates are the common case in gossip and sync).
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
        if let Some(prev) = prev {
            if let Some(parent) = self.ops.get_mut(&prev) {
                if membership.is_some() {
                    parent.children.push(cid);
                }
            }
        }
        if let Some(op) = membership {
            self.commit_membership(cid, &op);
            return true;
        }
        match prev {
            None => {
                let mut audit = BTreeSet::new();
                audit.insert((created_at, cid));
                xor_into(&mut self.state_xor, &head_digest(&did, &cid));
                self.dids.insert(
                    did,
                    DidEntry {
                        chain: vec![cid],
                        audit,
                    },
                );
            }
            Some(prev) => {
                if let Some(parent) = self.ops.get_mut(&prev) {
                    parent.children.push(cid);
                }
                self.extend_chain(&did, prev, cid, priority, created_at);
            }
        }
        true
    }

    /// Applies the fork rule for a new child `cid` of `prev`.
    fn extend_chain(&mut self, did: &str, prev: Cid, cid: Cid, priority: usize, created_at: u64) {
        let Some(entry) = self.dids.get_mut(did) else {
            return;
        };
        entry.audit.insert((created_at, cid));
        let Some(pos) = entry.chain.iter().position(|c| *c == prev) else {
            return; // builds on a losing branch: stored, does not count
        };
        let old_head = *entry.chain.last().unwrap_or(&prev);
        let wins = match entry.chain.get(pos + 1) {
            None => true,
            Some(current) => match self.ops.get(current) {
                Some(cur) => (priority, cid) < (cur.priority, cur.cid),
                None => true,
            },
        };
        if !wins {
            return;
        }
        entry.chain.truncate(pos + 1);
        entry.chain.push(cid);
        // The new op may already have descendants (e.g. a branch that was
        // losing further up): follow the best child down.
        let mut tip = cid;
        while let Some(best) = best_child(&self.ops, &tip) {
            entry.chain.push(best);
            tip = best;
        }
        if tip != old_head {
            xor_into(&mut self.state_xor, &head_digest(did, &old_head));
            xor_into(&mut self.state_xor, &head_digest(did, &tip));
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
        })
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

    /// Digest of every DID's resolved head.
    pub fn state_digest(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(&(self.dids.len() as u64).to_le_bytes());
        h.update(&self.state_xor);
        *h.finalize().as_bytes()
    }
}

/// The child of `cid` that the fork rule prefers.
fn best_child(ops: &HashMap<Cid, StoredOp>, cid: &Cid) -> Option<Cid> {
    ops.get(cid)?
        .children
        .iter()
        .filter_map(|c| ops.get(c))
        .min_by_key(|c| (c.priority, c.cid))
        .map(|c| c.cid)
}

fn head_digest(did: &str, head: &Cid) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(did.as_bytes());
    h.update(&head.0);
    *h.finalize().as_bytes()
}

fn xor_into(acc: &mut [u8; 32], x: &[u8; 32]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a ^= b;
    }
}
