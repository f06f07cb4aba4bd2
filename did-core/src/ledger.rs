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
//!
//! **Memory** (issue 12, item 3): the ledger keeps per op a fixed-size
//! record (`Rec`: CID, created_at, DID, parent, first child and next
//! sibling, priority, kind, flags) and per DID its genesis, head, version
//! and dispute flag. Op bodies live in an [`OpBodies`] store (in memory by
//! default, sled on a node) and are decoded on demand through a bounded
//! cache of decoded ops ([`Ledger::with_state_cache`]); a DID's audit
//! order and its losing branches are walked from the records. Membership
//! ops are few and stay in memory in full. [`Ledger::checkpoint`] and
//! [`Ledger::restore`] save and load the records, so a node restarts
//! without replaying (item 2).

use crate::encoding::Cid;
use crate::keys::PublicKey;
use crate::member::{Equivocation, Member, NetworkRules, RetiredKeys};
use crate::op::{
    check_revocations_transition, did_from_genesis, parse_mesh_did, DidState, Form, Limits,
    OpError, OpKind, Operation, DID_SUFFIX_BYTES,
};
use crate::store::{MemoryBodies, OpBodies};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How many ops may wait for a missing parent. Oldest are dropped first;
/// anti-entropy brings them back once the parent is known.
pub const DEFAULT_ORPHAN_CAPACITY: usize = 10_000;

/// Decoded ops kept by default ([`Ledger::with_state_cache`]).
pub const DEFAULT_STATE_CACHE: usize = 4096;

/// One valid op and what the ledger derived from it (an owned copy: the
/// ledger itself keeps only a compact record, see the module doc).
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

/// "None" in a record's `u32` links.
const NO: u32 = u32::MAX;
/// Record flags.
const F_STATE: u8 = 1;
/// The op's state lists at least one link (the link index needs it).
const F_LINKS: u8 = 2;
/// On its DID's winning chain.
const F_CHAIN: u8 = 4;

/// What the ledger keeps in memory per op (module doc): 64 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rec {
    cid: Cid,
    created_at: u64,
    /// DID ops: the record index of the DID's create op; membership: NO.
    did: u32,
    /// Record index of `prev`, or NO.
    prev: u32,
    /// Children as a linked list (most ops have none or one).
    first_child: u32,
    next_sibling: u32,
    /// Index of the signer in the parent's rotation keys (0 = highest).
    priority: u16,
    kind: u8,
    flags: u8,
}

impl Rec {
    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// Per DID: the winning chain is genesis → … → head along `F_CHAIN`
/// records; `version` is its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DidEntry {
    genesis: u32,
    head: u32,
    version: u32,
    /// The highest-priority key at `head` equivocated (fork rule 2).
    disputed: bool,
}

/// The first bytes of a genesis CID: what a `did:mesh` suffix encodes.
type DidKey = [u8; DID_SUFFIX_BYTES];

fn did_key(genesis: &Cid) -> DidKey {
    let mut k = [0; DID_SUFFIX_BYTES];
    k.copy_from_slice(&genesis.0[..DID_SUFFIX_BYTES]);
    k
}

/// The key of a `did:mesh:` string; `None` if it is not one.
fn did_key_of(did: &str) -> Option<DidKey> {
    let suffix = parse_mesh_did(did).ok()?;
    let bytes = data_encoding::BASE32_NOPAD
        .decode(suffix.to_ascii_uppercase().as_bytes())
        .ok()?;
    bytes.try_into().ok()
}

fn kind_code(kind: OpKind) -> u8 {
    match kind {
        OpKind::Create => 0,
        OpKind::Update => 1,
        OpKind::Deactivate => 2,
        OpKind::MemberAdd => 3,
        OpKind::MemberRemove => 4,
        OpKind::MemberRotate => 5,
        OpKind::MemberRevoke => 6,
    }
}

fn kind_of(code: u8) -> Option<OpKind> {
    Some(match code {
        0 => OpKind::Create,
        1 => OpKind::Update,
        2 => OpKind::Deactivate,
        3 => OpKind::MemberAdd,
        4 => OpKind::MemberRemove,
        5 => OpKind::MemberRotate,
        6 => OpKind::MemberRevoke,
        _ => return None,
    })
}

/// A decoded DID op: the op without its state, and the state shared.
#[derive(Debug)]
struct Decoded {
    op: Operation,
    state: Option<Arc<DidState>>,
}

impl Decoded {
    fn new(mut op: Operation) -> Decoded {
        let state = op.state.take().map(Arc::new);
        Decoded { op, state }
    }

    fn full(&self) -> Operation {
        let mut op = self.op.clone();
        op.state = self.state.as_deref().cloned();
        op
    }
}

/// The current and the previous generation of a [`DecodedCache`].
type Generations = (HashMap<u32, Arc<Decoded>>, HashMap<u32, Arc<Decoded>>);

/// A bounded cache of decoded ops by record index: two generations, the
/// current one filled until half the capacity, then demoted whole (the old
/// one dropped); a hit in the old one moves the entry back. O(1) and
/// close to LRU, in at most `capacity` entries (2 for capacity 1).
#[derive(Debug, Default)]
struct DecodedCache {
    half: usize,
    gens: Mutex<Generations>,
}

impl DecodedCache {
    fn new(capacity: usize) -> DecodedCache {
        DecodedCache {
            half: if capacity == 0 {
                0
            } else {
                capacity.div_ceil(2)
            },
            gens: Mutex::default(),
        }
    }

    fn get(&self, i: u32) -> Option<Arc<Decoded>> {
        if self.half == 0 {
            return None;
        }
        let mut g = self.gens.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = g.0.get(&i) {
            return Some(d.clone());
        }
        let d = g.1.remove(&i)?;
        Self::insert(&mut g, self.half, i, d.clone());
        Some(d)
    }

    fn put(&self, i: u32, d: Arc<Decoded>) {
        if self.half == 0 {
            return;
        }
        let mut g = self.gens.lock().unwrap_or_else(|e| e.into_inner());
        Self::insert(&mut g, self.half, i, d);
    }

    fn insert(g: &mut Generations, half: usize, i: u32, d: Arc<Decoded>) {
        if g.0.len() >= half && !g.0.contains_key(&i) {
            g.1 = std::mem::take(&mut g.0);
        }
        g.0.insert(i, d);
    }

    fn len(&self) -> usize {
        let g = self.gens.lock().unwrap_or_else(|e| e.into_inner());
        g.0.len() + g.1.len()
    }
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

/// The resolved view of one DID (an owned copy; the state is shared with
/// the ledger's cache).
#[derive(Debug, Clone)]
pub struct DidView {
    pub did: String,
    pub genesis: Cid,
    pub head: Cid,
    /// `None` once deactivated.
    pub state: Option<Arc<DidState>>,
    pub created_at: u64,
    pub updated_at: u64,
    pub version: usize,
    /// Set when a key equivocated at `head`: `state` is the state there,
    /// shown for audit; no login may be accepted.
    pub disputed: Option<Dispute>,
}

impl DidView {
    pub fn deactivated(&self) -> bool {
        self.state.is_none()
    }

    /// The state a login may use: `None` when deactivated or disputed.
    pub fn usable_state(&self) -> Option<&DidState> {
        match self.disputed {
            Some(_) => None,
            None => self.state.as_deref(),
        }
    }
}

/// One op in a DID's audit log.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub stored: StoredOp,
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
/// node's business; this type is deterministic and does no IO itself (op
/// bodies go through an [`OpBodies`] store, module doc).
#[derive(Debug)]
pub struct Ledger {
    limits: Limits,
    /// Every op held, in commit order (parents before children).
    recs: Vec<Rec>,
    /// CID → index in `recs`.
    index: HashMap<Cid, u32>,
    /// Op bodies by CID (module doc).
    bodies: Arc<dyn OpBodies>,
    /// Decoded DID ops by record index.
    cache: DecodedCache,
    /// Bodies the store did not return, or returned corrupt.
    body_errors: AtomicU64,
    /// Membership ops only, in full (few; the membership rules read them).
    /// DID ops are in `recs` and `bodies`.
    ops: HashMap<Cid, StoredOp>,
    dids: HashMap<DidKey, DidEntry>,
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
    /// Keys retired by `member-rotate` ops on the path to each membership
    /// op (the genesis retires none).
    member_retired: HashMap<Cid, Vec<RetiredKeys>>,
    /// Retired keys of current members, from every branch head.
    effective_retired: Vec<RetiredKeys>,
    /// `member-revoke` outcome: DID → the latest `before` any valid op
    /// named (a max, so the same whatever order the ops arrive in).
    member_revocations: HashMap<String, u64>,
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
            recs: Vec::new(),
            index: HashMap::new(),
            bodies: Arc::new(MemoryBodies::new()),
            cache: DecodedCache::new(DEFAULT_STATE_CACHE),
            body_errors: AtomicU64::new(0),
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
            member_retired: HashMap::new(),
            effective_retired: vec![],
            member_revocations: HashMap::new(),
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

    /// Token keys of current members that `member-rotate` ops replaced,
    /// oldest retirement first. Verifiers accept them until
    /// `retired_at + key_overlap_secs` ([`RetiredKeys::retires`]); a
    /// removed member's retired keys are not listed (they leave at once).
    pub fn retired_member_keys(&self) -> &[RetiredKeys] {
        &self.effective_retired
    }

    /// Seconds a retired member key stays valid for verifiers (network
    /// rule, [`crate::member::DEFAULT_KEY_OVERLAP_SECS`] by default).
    pub fn key_overlap_secs(&self) -> u64 {
        self.network
            .as_ref()
            .map_or(crate::member::DEFAULT_KEY_OVERLAP_SECS, |r| {
                r.key_overlap_secs
            })
    }

    /// The latest `before` of every valid `member-revoke` op naming `did`:
    /// sessions of `did` issued before it are revoked by a member quorum.
    pub fn member_revocation(&self, did: &str) -> Option<u64> {
        self.member_revocations.get(did).copied()
    }

    /// Every DID a member quorum revoked, with its latest `before`.
    pub fn member_revocations(&self) -> impl Iterator<Item = (&str, u64)> {
        self.member_revocations
            .iter()
            .map(|(d, b)| (d.as_str(), *b))
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
        let (parent_set, parent_retired): (&[Member], &[RetiredKeys]) = match op.prev {
            None => (&rules.founders, &[]),
            Some(prev) => {
                let parent = self
                    .ops
                    .get(&prev)
                    .ok_or_else(|| OpError::UnknownPrev(prev.to_string()))?;
                // A member-revoke only names the set that signs it; it is
                // no node of the membership tree (crate::member).
                if !parent.op.kind.changes_members() {
                    return Err(OpError::Invalid(
                        "prev of a membership op must be a member-add, -remove or -rotate op"
                            .into(),
                    ));
                }
                if op.created_at < parent.op.created_at {
                    return Err(OpError::Invalid("created_at is earlier than prev's".into()));
                }
                (
                    self.member_sets
                        .get(&prev)
                        .map(Vec::as_slice)
                        .unwrap_or(&[]),
                    self.member_retired
                        .get(&prev)
                        .map(Vec::as_slice)
                        .unwrap_or(&[]),
                )
            }
        };
        let signers = op.signers()?;
        if let Some(outsider) = signers
            .iter()
            .find(|k| !parent_set.iter().any(|m| m.key == **k))
        {
            // A key retired by a rotation signs nothing any more: a stolen
            // old key is worth no signature (crate::member).
            let retired = parent_retired.iter().any(|r| r.entry.key == *outsider);
            return Err(OpError::BadSignature(format!(
                "{outsider} is not a member at prev{}",
                if retired {
                    " (a key retired by a member-rotate op)"
                } else {
                    ""
                }
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
        if op.kind == OpKind::MemberRevoke {
            // Its shape (a did:mesh DID, before ≤ created_at) is checked
            // by Operation::check_form.
            return Ok((rules.network_id.clone(), 0));
        }
        let member = op
            .member
            .as_ref()
            .ok_or_else(|| OpError::Invalid("no member".into()))?;
        let present = parent_set.iter().any(|m| m.key == member.key);
        // A key a member holds or held (retired by a rotation) is never
        // given to another entry: a retired key may be in a thief's hands.
        let key_used = |k: &crate::keys::PublicKey| {
            parent_set.iter().any(|m| m.key == *k)
                || parent_retired.iter().any(|r| r.entry.key == *k)
        };
        match op.kind {
            OpKind::MemberAdd if present => {
                return Err(OpError::Invalid("already a member".into()))
            }
            OpKind::MemberAdd if key_used(&member.key) => {
                return Err(OpError::Invalid(
                    "that key was retired by a member-rotate op; a retired key never comes back"
                        .into(),
                ))
            }
            OpKind::MemberAdd if parent_set.iter().any(|m| m.node_did == member.node_did) => {
                return Err(OpError::Invalid(
                    "a member already has that node_did".into(),
                ))
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
            OpKind::MemberRotate => {
                validate_rotation(parent_set, parent_retired, member, &key_used)?
            }
            _ => {}
        }
        Ok((rules.network_id.clone(), 0))
    }

    fn commit_membership(&mut self, cid: Cid, op: &Operation) {
        if op.kind == OpKind::MemberRevoke {
            if let Some(r) = &op.revoke {
                let before = self.member_revocations.entry(r.did.clone()).or_insert(0);
                *before = (*before).max(r.before);
            }
            return;
        }
        let (parent_set, parent_retired) = match op.prev {
            None => (
                self.network
                    .as_ref()
                    .map(|r| r.founders.clone())
                    .unwrap_or_default(),
                vec![],
            ),
            Some(prev) => (
                self.member_sets.get(&prev).cloned().unwrap_or_default(),
                self.member_retired.get(&prev).cloned().unwrap_or_default(),
            ),
        };
        let mut set = parent_set;
        let mut retired = parent_retired;
        if let Some(m) = &op.member {
            match op.kind {
                OpKind::MemberAdd => set.push(m.clone()),
                OpKind::MemberRotate => {
                    if let Some(entry) = set.iter_mut().find(|x| x.node_did == m.node_did) {
                        retired.push(RetiredKeys {
                            node_did: m.node_did.clone(),
                            entry: entry.clone(),
                            retired_at: op.created_at,
                        });
                        *entry = m.clone();
                    }
                }
                _ => {
                    // A removed member's retired keys go with it: nothing
                    // of a member removed for cause verifies any more.
                    let gone: Vec<String> = set
                        .iter()
                        .filter(|x| x.key == m.key)
                        .map(|x| x.node_did.clone())
                        .collect();
                    retired.retain(|r| !gone.contains(&r.node_did));
                    set.retain(|x| x.key != m.key);
                }
            }
        }
        self.member_sets.insert(cid, set);
        self.member_retired.insert(cid, retired);
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
        let retired: Vec<&RetiredKeys> = self
            .member_leaves
            .iter()
            .filter_map(|c| self.member_retired.get(c))
            .flatten()
            .collect();
        // A member that equivocated with a key it later rotated away is
        // still an equivocator: map evidence keys to member ids.
        let equivocators: BTreeSet<&str> = evidence
            .iter()
            .flat_map(|e| {
                sets.iter()
                    .flat_map(|s| s.iter())
                    .filter(move |m| m.key == e.member)
                    .map(|m| m.node_did.as_str())
                    .chain(
                        retired
                            .iter()
                            .filter(move |r| r.entry.key == e.member)
                            .map(|r| r.node_did.as_str()),
                    )
            })
            .collect();
        // On a fork a member counts only where every branch holds the same
        // keys for it: a rotation on one branch only (say of a stolen key)
        // leaves the member out until the fork is settled; a fork only
        // ever shrinks the set.
        let same_keys =
            |a: &Member, b: &Member| a.key == b.key && a.rsa == b.rsa && a.p256 == b.p256;
        let effective: Vec<Member> = match sets.split_first() {
            None => rules.founders.clone(),
            Some((first, rest)) => first
                .iter()
                .filter(|m| rest.iter().all(|s| s.iter().any(|x| same_keys(x, m))))
                .filter(|m| !evidence.iter().any(|e| e.member == m.key))
                .filter(|m| !equivocators.contains(m.node_did.as_str()))
                .cloned()
                .collect(),
        };
        let mut effective_retired: Vec<RetiredKeys> = vec![];
        for r in retired {
            if effective.iter().any(|m| m.node_did == r.node_did) && !effective_retired.contains(r)
            {
                effective_retired.push(r.clone());
            }
        }
        effective_retired.sort_by(|a, b| {
            (a.retired_at, &a.node_did, a.entry.key.to_string()).cmp(&(
                b.retired_at,
                &b.node_did,
                b.entry.key.to_string(),
            ))
        });
        let mut h = blake3::Hasher::new();
        h.update(b"didmesh membership");
        for leaf in &self.member_leaves {
            h.update(&leaf.0);
        }
        for m in &effective {
            h.update(m.key.to_string().as_bytes());
        }
        // Only ledgers with rotations hash more, so older digests stay.
        if !effective_retired.is_empty() {
            h.update(b"rotated");
            for m in &effective {
                h.update(m.node_did.as_bytes());
                h.update(m.rsa.as_ref().map_or("", |k| k.n()).as_bytes());
                h.update(
                    m.p256
                        .map(|k| k.to_multibase())
                        .unwrap_or_default()
                        .as_bytes(),
                );
            }
            for r in &effective_retired {
                h.update(r.node_did.as_bytes());
                h.update(r.entry.key.to_string().as_bytes());
                h.update(&r.retired_at.to_le_bytes());
            }
        }
        self.member_digest = *h.finalize().as_bytes();
        self.effective_members = effective;
        self.member_evidence = evidence;
        self.effective_retired = effective_retired;
    }

    pub fn with_orphan_capacity(mut self, capacity: usize) -> Ledger {
        self.orphans.capacity = capacity;
        self
    }

    /// Reads op bodies from `bodies` (and keeps new ones there). Call it on
    /// an empty ledger: the bodies of ops already held are not moved.
    pub fn with_bodies(mut self, bodies: Arc<dyn OpBodies>) -> Ledger {
        self.bodies = bodies;
        self
    }

    /// Keeps at most about `capacity` decoded ops in memory (0 = none:
    /// every read decodes from the store). Resolution is the same whatever
    /// the capacity; only its speed changes.
    pub fn with_state_cache(mut self, capacity: usize) -> Ledger {
        self.cache = DecodedCache::new(capacity);
        self
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Number of valid ops held.
    pub fn len(&self) -> usize {
        self.recs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    pub fn did_count(&self) -> usize {
        self.dids.len()
    }

    pub fn orphan_count(&self) -> usize {
        self.orphans.len
    }

    /// Decoded ops in the cache now.
    pub fn cached_ops(&self) -> usize {
        self.cache.len()
    }

    /// How often the body store missed an op the ledger holds or returned
    /// bytes that are not that op (a damaged store; the node reports it).
    pub fn body_errors(&self) -> u64 {
        self.body_errors.load(Ordering::Relaxed)
    }

    /// Bytes the ledger's own structures take on the heap (records,
    /// indexes, per-DID entries; estimated from capacities), without the
    /// body store, the cache, membership and the link index.
    pub fn heap_estimate(&self) -> usize {
        // hashbrown: one control byte per bucket, buckets = capacity * 8 / 7.
        let table = |cap: usize, entry: usize| cap * 8 / 7 * (entry + 1);
        self.recs.capacity() * std::mem::size_of::<Rec>()
            + table(self.index.capacity(), std::mem::size_of::<(Cid, u32)>())
            + table(
                self.dids.capacity(),
                std::mem::size_of::<(DidKey, DidEntry)>(),
            )
    }

    pub fn contains(&self, cid: &Cid) -> bool {
        self.index.contains_key(cid)
    }

    /// The op `cid` with what the ledger derived from it, read from the
    /// body store (`None` if not held, or if the store lost it).
    pub fn get(&self, cid: &Cid) -> Option<StoredOp> {
        let i = *self.index.get(cid)?;
        if let Some(m) = self.ops.get(cid) {
            return Some(m.clone());
        }
        self.stored(i)
    }

    /// Whether the op held under `op`'s CID carries the same signatures
    /// (`None` if not held). Cheaper than [`Ledger::get`]: a cached op is
    /// not copied, and no state is cloned (gossip echoes ask this often).
    pub fn same_signatures(&self, cid: &Cid, op: &Operation) -> Option<bool> {
        let i = *self.index.get(cid)?;
        let same = |held: &Operation| held.sig == op.sig && held.cosigs == op.cosigs;
        if let Some(m) = self.ops.get(cid) {
            return Some(same(&m.op));
        }
        if let Some(d) = self.cache.get(i) {
            return Some(same(&d.op));
        }
        let rec = *self.rec(i)?;
        let Some(bytes) = self.bodies.load(cid) else {
            self.body_errors.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        Some(same(&self.parse_body(&rec, &bytes)?))
    }

    /// The canonical bytes of op `cid` (what peers fetch), without
    /// decoding it.
    pub fn get_bytes(&self, cid: &Cid) -> Option<Vec<u8>> {
        if !self.index.contains_key(cid) {
            return None;
        }
        if let Some(m) = self.ops.get(cid) {
            return Some(m.bytes.clone());
        }
        let bytes = self.bodies.load(cid);
        if bytes.is_none() {
            self.body_errors.fetch_add(1, Ordering::Relaxed);
        }
        bytes
    }

    /// Every op CID held, in no particular order.
    pub fn cids(&self) -> impl Iterator<Item = &Cid> {
        self.recs.iter().map(|r| &r.cid)
    }

    /// Where `cid` stands in commit order (its log entry number), if held.
    /// Commit order survives a restart: a replay or a checkpoint keeps it.
    pub fn position(&self, cid: &Cid) -> Option<usize> {
        self.index.get(cid).map(|i| *i as usize)
    }

    fn rec(&self, i: u32) -> Option<&Rec> {
        self.recs.get(i as usize)
    }

    fn did_string(&self, genesis: u32) -> String {
        self.rec(genesis)
            .map(|g| did_from_genesis(&g.cid))
            .unwrap_or_default()
    }

    /// Parses a body from the store, checking it is the op recorded.
    fn parse_body(&self, rec: &Rec, bytes: &[u8]) -> Option<Operation> {
        let op = Operation::from_json(bytes)
            .ok()
            .filter(|op| kind_code(op.kind) == rec.kind && op.created_at == rec.created_at)
            .filter(|op| op.cid().ok() == Some(rec.cid));
        if op.is_none() {
            self.body_errors.fetch_add(1, Ordering::Relaxed);
        }
        op
    }

    /// The decoded DID op at record `i`, through the cache.
    fn decoded(&self, i: u32) -> Option<Arc<Decoded>> {
        if let Some(d) = self.cache.get(i) {
            return Some(d);
        }
        let rec = self.rec(i)?;
        let Some(bytes) = self.bodies.load(&rec.cid) else {
            self.body_errors.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let d = Arc::new(Decoded::new(self.parse_body(rec, &bytes)?));
        self.cache.put(i, d.clone());
        Some(d)
    }

    /// The state op `i` carries (`None` for a deactivation or when the
    /// store lost the body).
    fn state_at(&self, i: u32) -> Option<Arc<DidState>> {
        if !self.rec(i)?.has(F_STATE) {
            return None;
        }
        self.decoded(i)?.state.clone()
    }

    fn children(&self, i: u32) -> impl Iterator<Item = u32> + '_ {
        let mut c = self.rec(i).map_or(NO, |r| r.first_child);
        std::iter::from_fn(move || {
            let this = c;
            let rec = self.rec(this)?;
            c = rec.next_sibling;
            Some(this)
        })
    }

    /// A full owned copy of DID op `i` (not put in the cache: audit reads
    /// would flush it).
    fn stored(&self, i: u32) -> Option<StoredOp> {
        let rec = *self.rec(i)?;
        let Some(bytes) = self.bodies.load(&rec.cid) else {
            self.body_errors.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let op = match self.cache.get(i) {
            Some(d) => d.full(),
            None => self.parse_body(&rec, &bytes)?,
        };
        Some(StoredOp {
            op,
            cid: rec.cid,
            bytes,
            did: self.did_string(rec.did),
            priority: usize::from(rec.priority),
            children: self
                .children(i)
                .filter_map(|c| self.rec(c))
                .map(|r| r.cid)
                .collect(),
        })
    }

    /// Validates `op` against the ledger without changing it.
    pub fn validate(&self, op: &Operation) -> Result<Check, OpError> {
        self.validate_inner(op, None)
    }

    /// [`Ledger::validate`] for an op whose signatures were already checked
    /// on this node ([`crate::verify`]): the check is skipped when `proof`
    /// names this very op (same CID and signatures), and done otherwise.
    pub fn validate_verified(
        &self,
        op: &Operation,
        proof: &crate::verify::SigVerified,
    ) -> Result<Check, OpError> {
        self.validate_inner(op, Some(proof))
    }

    /// [`Ledger::validate`] (or [`Ledger::validate_verified`] with a
    /// `proof`) for an op whose canonical form is known already: `form`
    /// must be `op`'s own, from [`Operation::from_canonical_json_form`]
    /// or [`Operation::check_form`] of this very op (debug builds check
    /// it), so the op is not encoded again.
    pub fn validate_formed(
        &self,
        op: &Operation,
        form: Form,
        proof: Option<&crate::verify::SigVerified>,
    ) -> Result<Check, OpError> {
        debug_assert_eq!(op.cid().ok(), Some(form.cid), "a form of another op");
        debug_assert_eq!(op.canonical_bytes().ok().as_ref(), Some(&form.bytes));
        op.check_formed(&form, &self.limits)?;
        self.validate_form(op, form, proof)
    }

    fn validate_inner(
        &self,
        op: &Operation,
        proof: Option<&crate::verify::SigVerified>,
    ) -> Result<Check, OpError> {
        let form = op.check_form(&self.limits)?;
        self.validate_form(op, form, proof)
    }

    fn validate_form(
        &self,
        op: &Operation,
        form: Form,
        proof: Option<&crate::verify::SigVerified>,
    ) -> Result<Check, OpError> {
        // Same CID = the same signed body as an op that already verified
        // (the CID covers every byte but the signatures): skip the
        // signature; the held op's valid signature stands for it.
        if self.index.contains_key(&form.cid) {
            return Ok(Check::Known(form.cid));
        }
        if !proof.is_some_and(|p| p.covers(op, &form)) {
            op.check_signature(&form.signing_bytes)?;
        }
        let (did, priority) = self.check_parent(op, &form)?;
        Ok(Check::New(Box::new(Validated {
            op: op.clone(),
            cid: form.cid,
            bytes: form.bytes,
            did,
            priority,
        })))
    }

    /// Every check of [`Ledger::validate`] after the signature: the op
    /// against its parent. Returns the DID and the signer's priority.
    fn check_parent(&self, op: &Operation, form: &Form) -> Result<(String, usize), OpError> {
        let cid = form.cid;
        Ok(match op.kind {
            OpKind::MemberAdd
            | OpKind::MemberRemove
            | OpKind::MemberRotate
            | OpKind::MemberRevoke => {
                // The membership rules look for prev among membership ops;
                // a DID op as prev is refused here, not left as an orphan.
                if let Some(prev) = op.prev {
                    if self.index.contains_key(&prev) && !self.ops.contains_key(&prev) {
                        return Err(OpError::Invalid(
                            "prev of a membership op must be a membership op".into(),
                        ));
                    }
                }
                self.validate_membership(op)?
            }
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
                // Two creates whose CIDs share the 160 bits a did:mesh
                // keeps would name one DID: the first one held keeps it.
                if self.dids.contains_key(&did_key(&cid)) {
                    return Err(OpError::Invalid(
                        "another create already holds this DID".into(),
                    ));
                }
                (did_from_genesis(&cid), priority)
            }
            OpKind::Update | OpKind::Deactivate => {
                let prev = op
                    .prev
                    .ok_or_else(|| OpError::Invalid("missing prev".into()))?;
                let pi = *self
                    .index
                    .get(&prev)
                    .ok_or_else(|| OpError::UnknownPrev(prev.to_string()))?;
                let parent = *self
                    .rec(pi)
                    .ok_or_else(|| OpError::UnknownPrev(prev.to_string()))?;
                let did = if parent.did == NO {
                    None
                } else {
                    Some(self.did_string(parent.did))
                };
                if did.is_none() || op.did != did {
                    return Err(OpError::Invalid(
                        "did does not match the DID of prev".into(),
                    ));
                }
                if !parent.has(F_STATE) {
                    return Err(OpError::Deactivated);
                }
                let parent_state = self.state_at(pi).ok_or_else(|| {
                    OpError::Invalid("this node's store lost the body of prev".into())
                })?;
                let priority = parent_state.rotation_priority(&op.signer).ok_or_else(|| {
                    OpError::BadSignature(
                        "signer is not a rotation key of the state at prev".into(),
                    )
                })?;
                if op.created_at < parent.created_at {
                    return Err(OpError::Invalid("created_at is earlier than prev's".into()));
                }
                if let Some(next) = &op.state {
                    check_revocations_transition(&parent_state, next)?;
                }
                (did.unwrap_or_default(), priority)
            }
        })
    }

    /// Applies an op from this node's own log: every check but the
    /// signatures, which were verified before the op was appended (issue
    /// 12, item 2). `cid` and `bytes` are what the log holds for it and
    /// must be the op's. Already held: nothing to do.
    pub fn replay_trusted(
        &mut self,
        op: Operation,
        cid: Cid,
        bytes: Vec<u8>,
    ) -> Result<(), OpError> {
        let form = op.check_form(&self.limits)?;
        if form.cid != cid || form.bytes != bytes {
            return Err(OpError::Invalid(
                "log entry: the CID or bytes are not the op's".into(),
            ));
        }
        if self.index.contains_key(&cid) {
            return Ok(());
        }
        let (did, priority) = self.check_parent(&op, &form)?;
        self.commit(Validated {
            op,
            cid,
            bytes,
            did,
            priority,
        });
        Ok(())
    }

    /// Inserts a validated op. Returns false if it was already held.
    /// `v` must come from [`Ledger::validate`] on this ledger (parents are
    /// never removed, so a validation stays true).
    pub fn commit(&mut self, v: Validated) -> bool {
        if self.index.contains_key(&v.cid) || self.recs.len() >= NO as usize {
            return false;
        }
        let Validated {
            op,
            cid,
            bytes,
            did,
            priority,
        } = v;
        let i = self.recs.len() as u32;
        let prev = match op.prev {
            None => NO,
            Some(p) => match self.index.get(&p) {
                Some(pi) => *pi,
                None => return false,
            },
        };
        let membership = op.kind.is_membership();
        // A DID op's parent is an op of the same DID (validate).
        let did_of = match (membership, prev) {
            (true, _) => NO,
            (false, NO) => i,
            (false, pi) => match self.rec(pi) {
                Some(p) if p.did != NO => p.did,
                _ => return false,
            },
        };
        let mut flags = 0;
        if let Some(state) = &op.state {
            flags |= F_STATE;
            if !state.links.is_empty() {
                flags |= F_LINKS;
            }
        }
        let rec = Rec {
            cid,
            created_at: op.created_at,
            did: did_of,
            prev,
            first_child: NO,
            next_sibling: if membership || prev == NO {
                NO
            } else {
                self.recs[prev as usize].first_child
            },
            priority: u16::try_from(priority).unwrap_or(u16::MAX),
            kind: kind_code(op.kind),
            flags: if prev == NO && !membership {
                flags | F_CHAIN
            } else {
                flags
            },
        };
        xor_into(&mut self.op_xor, &cid.0);
        self.bodies.keep(&cid, &bytes);
        self.recs.push(rec);
        self.index.insert(cid, i);
        if membership {
            let kept = StoredOp {
                op,
                cid,
                bytes,
                did,
                priority,
                children: vec![],
            };
            let op = kept.op.clone();
            self.ops.insert(cid, kept);
            self.commit_membership(cid, &op);
            return true;
        }
        self.cache.put(i, Arc::new(Decoded::new(op)));
        if prev == NO {
            xor_into(&mut self.state_xor, &head_digest(&did, &cid, false));
            self.reindex_links(&did, None, Some(i));
            self.dids.insert(
                did_key(&cid),
                DidEntry {
                    genesis: i,
                    head: i,
                    version: 1,
                    disputed: false,
                },
            );
        } else {
            self.recs[prev as usize].first_child = i;
            self.extend_chain(did_of, prev, i);
        }
        true
    }

    /// Re-applies the fork rule below `prev` after a new child.
    fn extend_chain(&mut self, genesis: u32, prev: u32, new: u32) {
        let Some(g) = self.rec(genesis).copied() else {
            return;
        };
        let key = did_key(&g.cid);
        let Some(mut entry) = self.dids.get(&key).copied() else {
            return;
        };
        if !self.rec(prev).is_some_and(|r| r.has(F_CHAIN)) {
            return; // builds on a losing branch: stored, does not count
        }
        // The child that won at `prev` still wins: nothing below changes,
        // and the (possibly long) rest of the chain need not be walked again.
        let current = self
            .children(prev)
            .find(|c| *c != new && self.rec(*c).is_some_and(|r| r.has(F_CHAIN)));
        if let (Pick::Winner(w), Some(current)) = (self.pick(prev), current) {
            if w == current {
                return;
            }
        }
        let did = did_from_genesis(&g.cid);
        let old_tip = entry.head;
        let old_digest = head_digest(&did, &self.recs[old_tip as usize].cid, entry.disputed);
        // Cut the chain back to `prev`.
        let mut t = old_tip;
        while t != prev && t != NO {
            let r = &mut self.recs[t as usize];
            r.flags &= !F_CHAIN;
            t = r.prev;
            entry.version = entry.version.saturating_sub(1);
        }
        entry.disputed = false;
        // The new op may already have descendants (e.g. a branch that was
        // losing further up): follow the fork rule down from `prev`.
        let mut tip = prev;
        loop {
            match self.pick(tip) {
                Pick::Head => break,
                Pick::Winner(next) => {
                    self.recs[next as usize].flags |= F_CHAIN;
                    entry.version += 1;
                    tip = next;
                }
                Pick::Disputed => {
                    entry.disputed = true;
                    break;
                }
            }
        }
        entry.head = tip;
        let new_digest = head_digest(&did, &self.recs[tip as usize].cid, entry.disputed);
        if new_digest != old_digest {
            xor_into(&mut self.state_xor, &old_digest);
            xor_into(&mut self.state_xor, &new_digest);
        }
        self.dids.insert(key, entry);
        if tip != old_tip {
            self.reindex_links(&did, Some(old_tip), Some(tip));
        }
    }

    /// The fork rule for DID ops (module doc, rules 1 and 2) among the
    /// children of record `i`.
    fn pick(&self, i: u32) -> Pick {
        let mut best: Option<(u16, u32, usize)> = None;
        for c in self.children(i) {
            let p = self.recs[c as usize].priority;
            best = match best {
                Some((bp, _, _)) if p > bp => best,
                Some((bp, w, n)) if p == bp => Some((bp, w, n + 1)),
                _ => Some((p, c, 1)),
            };
        }
        match best {
            None => Pick::Head,
            Some((_, w, 1)) => Pick::Winner(w),
            // Rule 2: the key at the best priority equivocated. Even when
            // one of the children deactivates, no child wins: a holder of
            // an old key must not be able to kill a DID that a higher key
            // can recover.
            Some(_) => Pick::Disputed,
        }
    }

    /// The evidence of a dispute at record `at` (the conflicting children
    /// by CID; the key read from the first one's body).
    fn dispute_at(&self, at: u32) -> Option<Dispute> {
        let best = self
            .children(at)
            .map(|c| self.recs[c as usize].priority)
            .min()?;
        let mut top: Vec<(Cid, u32)> = self
            .children(at)
            .filter(|c| self.recs[*c as usize].priority == best)
            .map(|c| (self.recs[c as usize].cid, c))
            .collect();
        top.sort();
        let first = top.first()?.1;
        let key = match self.cache.get(first) {
            Some(d) => d.op.signer,
            None => {
                let rec = *self.rec(first)?;
                let bytes = self.bodies.load(&rec.cid);
                if bytes.is_none() {
                    self.body_errors.fetch_add(1, Ordering::Relaxed);
                }
                self.parse_body(&rec, &bytes?)?.signer
            }
        };
        Some(Dispute {
            at: self.rec(at)?.cid,
            key,
            ops: top.into_iter().map(|(c, _)| c).collect(),
        })
    }

    /// What the fork rule selects among the children of `cid` (`Head` when
    /// `cid` is not a held DID op).
    pub fn choose(&self, cid: &Cid) -> Choice {
        let Some(&i) = self.index.get(cid) else {
            return Choice::Head;
        };
        match self.pick(i) {
            Pick::Head => Choice::Head,
            Pick::Winner(w) => Choice::Winner(self.recs[w as usize].cid),
            Pick::Disputed => match self.dispute_at(i) {
                Some(d) => Choice::Disputed(Box::new(d)),
                None => Choice::Head,
            },
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

    /// Resolves a DID to the state the fork rule selects. A cold DID's
    /// head is decoded from the body store; `None` also when the store
    /// lost it (counted in [`Ledger::body_errors`]).
    pub fn resolve(&self, did: &str) -> Option<DidView> {
        let entry = *self.dids.get(&did_key_of(did)?)?;
        let genesis = *self.rec(entry.genesis)?;
        let head = *self.rec(entry.head)?;
        let state = if head.has(F_STATE) {
            Some(self.state_at(entry.head)?)
        } else {
            None
        };
        let disputed = if entry.disputed {
            Some(self.dispute_at(entry.head)?)
        } else {
            None
        };
        Some(DidView {
            did: did_from_genesis(&genesis.cid),
            genesis: genesis.cid,
            head: head.cid,
            state,
            created_at: genesis.created_at,
            updated_at: head.created_at,
            version: entry.version as usize,
            disputed,
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
    /// Walked from the genesis record: every op of a DID descends from it.
    pub fn did_log(&self, did: &str) -> Option<Vec<LogEntry>> {
        let entry = self.dids.get(&did_key_of(did)?)?;
        let mut all = vec![];
        let mut stack = vec![entry.genesis];
        while let Some(i) = stack.pop() {
            all.push(i);
            stack.extend(self.children(i));
        }
        all.sort_by_key(|i| {
            (
                self.recs[*i as usize].created_at,
                self.recs[*i as usize].cid,
            )
        });
        Some(
            all.into_iter()
                .filter_map(|i| {
                    Some(LogEntry {
                        winning: self.recs[i as usize].has(F_CHAIN),
                        stored: self.stored(i)?,
                    })
                })
                .collect(),
        )
    }

    /// Digest of the op set: equal on two nodes iff (with overwhelming
    /// probability, for honest inputs) they hold the same ops.
    pub fn op_set_digest(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(&(self.recs.len() as u64).to_le_bytes());
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

    /// Moves `did`'s entries in the link index from the state at record
    /// `old` to the state at `new` (`None` or a deactivation = no links).
    fn reindex_links(&mut self, did: &str, old: Option<u32>, new: Option<u32>) {
        let links_at = |i: Option<u32>| -> Vec<String> {
            i.filter(|i| self.rec(*i).is_some_and(|r| r.has(F_LINKS)))
                .and_then(|i| self.state_at(i))
                .map(|st| st.links.iter().map(|l| l.commitment.clone()).collect())
                .unwrap_or_default()
        };
        let (before, after) = (links_at(old), links_at(new));
        for c in &before {
            if after.contains(c) {
                continue;
            }
            if let Some(dids) = self.links.get_mut(c) {
                dids.remove(did);
                if dids.is_empty() {
                    self.links.remove(c);
                }
            }
        }
        for c in after {
            if !before.contains(&c) {
                self.links.entry(c).or_default().insert(did.to_string());
            }
        }
    }
}

/// Checkpoint format tag and version ([`Ledger::checkpoint`]).
const CHECKPOINT_MAGIC: &[u8; 8] = b"DMLEDG01";
/// Bytes of one record in a checkpoint.
const REC_BYTES: usize = 32 + 8 + 4 + 4 + 2 + 1 + 1;

fn bad(what: &str) -> OpError {
    OpError::Malformed(format!("checkpoint: {what}"))
}

/// Reads a checkpoint; every read is bounds-checked (never panics).
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], OpError> {
        if self.bytes.len() < n {
            return Err(bad("truncated"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], OpError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, OpError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, OpError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, OpError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, OpError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A count of items of at least `item` bytes each, bounded by what is
    /// left (so a forged count cannot make us allocate).
    fn count(&mut self, item: usize) -> Result<usize, OpError> {
        let n = self.u64()?;
        match usize::try_from(n) {
            Ok(n) if n.saturating_mul(item.max(1)) <= self.bytes.len() => Ok(n),
            _ => Err(bad("count larger than the data")),
        }
    }

    fn blob(&mut self) -> Result<&'a [u8], OpError> {
        let n = self.count(1)?;
        self.take(n)
    }
}

fn put_blob(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

impl Ledger {
    /// The ledger's in-memory state as bytes, for [`Ledger::restore`]: the
    /// records, the DIDs, the membership ops (whole), the link index, and
    /// `len()`, [`Ledger::op_set_digest`] and [`Ledger::state_digest`] in
    /// the header ([`Ledger::checkpoint_header`] reads them back), so a
    /// node can match a checkpoint to a prefix of its log. Op bodies are
    /// not included: they stay in the body store. Orphans are not kept.
    ///
    /// Layout (little-endian): magic, `len` u64, op-set digest, state
    /// digest, then records (CID, created_at, DID, prev, priority, kind,
    /// flags; 52 bytes each, commit order), membership op bodies in commit
    /// order, DIDs (genesis, head, version, disputed), link index, and
    /// last the blake3 of everything before (a damaged file is refused; a
    /// forged one is the node's MAC's business).
    pub fn checkpoint(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96 + self.recs.len() * (REC_BYTES + 13));
        out.extend_from_slice(CHECKPOINT_MAGIC);
        out.extend_from_slice(&(self.recs.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.op_set_digest());
        out.extend_from_slice(&self.state_digest());
        out.extend_from_slice(&(self.recs.len() as u64).to_le_bytes());
        for r in &self.recs {
            out.extend_from_slice(&r.cid.0);
            out.extend_from_slice(&r.created_at.to_le_bytes());
            out.extend_from_slice(&r.did.to_le_bytes());
            out.extend_from_slice(&r.prev.to_le_bytes());
            out.extend_from_slice(&r.priority.to_le_bytes());
            out.push(r.kind);
            out.push(r.flags);
        }
        let members: Vec<&StoredOp> = self
            .recs
            .iter()
            .filter_map(|r| self.ops.get(&r.cid))
            .collect();
        out.extend_from_slice(&(members.len() as u64).to_le_bytes());
        for m in members {
            put_blob(&mut out, &m.bytes);
        }
        // DIDs in genesis order, so equal ledgers give equal bytes.
        let mut dids: Vec<&DidEntry> = self.dids.values().collect();
        dids.sort_by_key(|e| e.genesis);
        out.extend_from_slice(&(dids.len() as u64).to_le_bytes());
        for e in dids {
            out.extend_from_slice(&e.genesis.to_le_bytes());
            out.extend_from_slice(&e.head.to_le_bytes());
            out.extend_from_slice(&e.version.to_le_bytes());
            out.push(u8::from(e.disputed));
        }
        let mut links: Vec<(&String, &BTreeSet<String>)> = self.links.iter().collect();
        links.sort();
        out.extend_from_slice(&(links.len() as u64).to_le_bytes());
        for (commitment, dids) in links {
            put_blob(&mut out, commitment.as_bytes());
            out.extend_from_slice(&(dids.len() as u64).to_le_bytes());
            for d in dids {
                let genesis = did_key_of(d)
                    .and_then(|k| self.dids.get(&k))
                    .map_or(NO, |e| e.genesis);
                out.extend_from_slice(&genesis.to_le_bytes());
            }
        }
        let sum = *blake3::hash(&out).as_bytes();
        out.extend_from_slice(&sum);
        out
    }

    /// `len()` and [`Ledger::op_set_digest`] of the ledger a checkpoint
    /// holds, read from its header without restoring it.
    pub fn checkpoint_header(bytes: &[u8]) -> Result<(u64, [u8; 32]), OpError> {
        let mut r = Reader { bytes };
        if r.take(CHECKPOINT_MAGIC.len())? != CHECKPOINT_MAGIC {
            return Err(bad("not a didmesh ledger checkpoint (or another version)"));
        }
        Ok((r.u64()?, r.array()?))
    }

    /// The ledger a [`Ledger::checkpoint`] holds, with op bodies read from
    /// `bodies` (which must hold every op of it). The same ledger as a
    /// replay of its ops: the fork rule is run again over the records and
    /// membership ops are re-applied, and the op-set and state digests
    /// must come out as the header says. Malformed or inconsistent bytes
    /// are refused with an error.
    pub fn restore(
        bytes: &[u8],
        limits: Limits,
        network: Option<NetworkRules>,
        bodies: Arc<dyn OpBodies>,
    ) -> Result<Ledger, OpError> {
        let mut l = Ledger::new(limits).with_bodies(bodies);
        if let Some(rules) = network {
            l = l.with_network(rules);
        }
        let (len, op_digest) = Ledger::checkpoint_header(bytes)?;
        let body = bytes
            .len()
            .checked_sub(32)
            .and_then(|end| {
                let (body, sum) = bytes.split_at(end);
                (blake3::hash(body).as_bytes() == sum).then_some(body)
            })
            .ok_or_else(|| bad("checksum mismatch (damaged or truncated)"))?;
        let mut r = Reader {
            bytes: body
                .get(CHECKPOINT_MAGIC.len() + 8 + 32..)
                .unwrap_or_default(),
        };
        let state_digest: [u8; 32] = r.array()?;
        let n = r.count(REC_BYTES)?;
        if n as u64 != len || n >= NO as usize {
            return Err(bad("record count differs from the header"));
        }
        l.recs.reserve_exact(n);
        l.index.reserve(n);
        for i in 0..n as u32 {
            let cid = Cid(r.array()?);
            let created_at = r.u64()?;
            let did = r.u32()?;
            let prev = r.u32()?;
            let priority = r.u16()?;
            let kind = r.u8()?;
            let flags = r.u8()?;
            let k = kind_of(kind).ok_or_else(|| bad("unknown op kind"))?;
            if flags & !(F_STATE | F_LINKS) & !F_CHAIN != 0
                || (flags & F_STATE != 0) != matches!(k, OpKind::Create | OpKind::Update)
                || (flags & F_LINKS != 0 && flags & F_STATE == 0)
            {
                return Err(bad("record flags do not fit its kind"));
            }
            // Parents come before children (commit order), and a DID op's
            // parent is a live op of the same DID.
            let parent = if prev == NO {
                None
            } else if prev < i {
                Some(l.recs[prev as usize])
            } else {
                return Err(bad("a record's parent comes after it"));
            };
            let ok = match (k.is_membership(), parent) {
                (true, None) => did == NO,
                (true, Some(p)) => did == NO && p.did == NO,
                (false, None) => k == OpKind::Create && did == i,
                (false, Some(p)) => {
                    k != OpKind::Create
                        && did == p.did
                        && p.did != NO
                        && p.has(F_STATE)
                        && created_at >= p.created_at
                }
            };
            if !ok {
                return Err(bad("a record does not fit its parent"));
            }
            if l.index.insert(cid, i).is_some() {
                return Err(bad("a CID appears twice"));
            }
            if k == OpKind::Create && l.dids.contains_key(&did_key(&cid)) {
                return Err(bad("two creates for one DID"));
            }
            let mut rec = Rec {
                cid,
                created_at,
                did,
                prev,
                first_child: NO,
                next_sibling: NO,
                priority,
                kind,
                // The chain is derived again below.
                flags: flags & !F_CHAIN,
            };
            if let Some(p) = parent.filter(|_| !k.is_membership()) {
                rec.next_sibling = p.first_child;
                l.recs[prev as usize].first_child = i;
            }
            xor_into(&mut l.op_xor, &cid.0);
            if k == OpKind::Create {
                rec.flags |= F_CHAIN;
                l.dids.insert(
                    did_key(&cid),
                    DidEntry {
                        genesis: i,
                        head: i,
                        version: 1,
                        disputed: false,
                    },
                );
            }
            l.recs.push(rec);
        }
        if l.op_set_digest() != op_digest {
            return Err(bad("the records do not match the op-set digest"));
        }
        // Membership ops, whole, re-applied in commit order.
        let members: Vec<u32> = (0..n as u32)
            .filter(|i| l.recs[*i as usize].did == NO)
            .collect();
        if r.count(8)? != members.len() {
            return Err(bad("membership op count differs from the records"));
        }
        for i in members {
            let body = r.blob()?.to_vec();
            let (op, cid) = Operation::from_canonical_json(&body)
                .map_err(|e| bad(&format!("membership op: {e}")))?;
            let rec = l.recs[i as usize];
            if cid != rec.cid
                || kind_code(op.kind) != rec.kind
                || op.created_at != rec.created_at
                || op.prev.and_then(|p| l.index.get(&p).copied()).unwrap_or(NO) != rec.prev
            {
                return Err(bad("a membership op does not match its record"));
            }
            let did = op.did.clone().unwrap_or_default();
            l.bodies.keep(&cid, &body);
            l.ops.insert(
                cid,
                StoredOp {
                    op: op.clone(),
                    cid,
                    bytes: body,
                    did,
                    priority: usize::from(rec.priority),
                    children: vec![],
                },
            );
            l.commit_membership(cid, &op);
        }
        // The fork rule, run again from every genesis over the records.
        let geneses: Vec<u32> = l.dids.values().map(|e| e.genesis).collect();
        for g in geneses {
            let mut entry = DidEntry {
                genesis: g,
                head: g,
                version: 1,
                disputed: false,
            };
            loop {
                match l.pick(entry.head) {
                    Pick::Head => break,
                    Pick::Winner(next) => {
                        l.recs[next as usize].flags |= F_CHAIN;
                        entry.version += 1;
                        entry.head = next;
                    }
                    Pick::Disputed => {
                        entry.disputed = true;
                        break;
                    }
                }
            }
            let genesis = l.recs[g as usize].cid;
            let head = l.recs[entry.head as usize].cid;
            let did = did_from_genesis(&genesis);
            xor_into(&mut l.state_xor, &head_digest(&did, &head, entry.disputed));
            l.dids.insert(did_key(&genesis), entry);
        }
        let n_dids = r.count(13)?;
        if n_dids != l.dids.len() {
            return Err(bad("DID count differs from the records"));
        }
        for _ in 0..n_dids {
            let (genesis, head, version, disputed) = (r.u32()?, r.u32()?, r.u32()?, r.u8()?);
            let same = l
                .rec(genesis)
                .and_then(|g| l.dids.get(&did_key(&g.cid)))
                .is_some_and(|e| {
                    *e == DidEntry {
                        genesis,
                        head,
                        version,
                        disputed: disputed == 1,
                    }
                });
            if !same || disputed > 1 {
                return Err(bad(
                    "a DID's head differs from the fork rule over the records",
                ));
            }
        }
        // The link index: every DID in it has a head with links, and each
        // such head is listed (the commitments themselves are in the op
        // bodies, which restore does not read).
        let n_links = r.count(16)?;
        let mut listed = std::collections::HashSet::new();
        for _ in 0..n_links {
            let commitment = std::str::from_utf8(r.blob()?)
                .map_err(|_| bad("link commitment is not UTF-8"))?
                .to_string();
            let n = r.count(4)?;
            let mut set = BTreeSet::new();
            for _ in 0..n {
                let g = r.u32()?;
                let head = l
                    .rec(g)
                    .filter(|rec| rec.did == g && rec.prev == NO)
                    .and_then(|rec| l.dids.get(&did_key(&rec.cid)))
                    .map(|e| e.head)
                    .ok_or_else(|| bad("link index names an unknown DID"))?;
                if !l.recs[head as usize].has(F_LINKS) {
                    return Err(bad("link index lists a DID whose head has no links"));
                }
                listed.insert(g);
                set.insert(l.did_string(g));
            }
            if set.is_empty() || l.links.insert(commitment, set).is_some() {
                return Err(bad("link index entry empty or repeated"));
            }
        }
        let linked_heads = l
            .dids
            .values()
            .filter(|e| l.recs[e.head as usize].has(F_LINKS))
            .count();
        if linked_heads != listed.len() {
            return Err(bad("link index misses a DID whose head has links"));
        }
        if !r.bytes.is_empty() {
            return Err(bad("trailing bytes"));
        }
        if l.state_digest() != state_digest {
            return Err(bad("the state digest differs from a replay of the records"));
        }
        Ok(l)
    }
}

/// What the fork rule picks among a record's children.
enum Pick {
    Head,
    Winner(u32),
    Disputed,
}

/// The rules of a `member-rotate` op ([`crate::member`]): it names a
/// current member by its `node_did`, changes at least one key, brings no
/// key any member holds or held, and drops no ID-token key kind (a member
/// that signs RS256 or ES256 keeps a key for it).
fn validate_rotation(
    parent_set: &[Member],
    parent_retired: &[RetiredKeys],
    member: &Member,
    key_used: &dyn Fn(&PublicKey) -> bool,
) -> Result<(), OpError> {
    let current = parent_set
        .iter()
        .find(|m| m.node_did == member.node_did)
        .ok_or_else(|| OpError::Invalid("not a member (no member has that node_did)".into()))?;
    if current.key == member.key && current.rsa == member.rsa && current.p256 == member.p256 {
        return Err(OpError::Invalid(
            "the entry carries the member's current keys: nothing to rotate".into(),
        ));
    }
    if current.key != member.key && key_used(&member.key) {
        return Err(OpError::Invalid(
            "the new Ed25519 key is held or was held by a member".into(),
        ));
    }
    if (current.rsa.is_some() && member.rsa.is_none())
        || (current.p256.is_some() && member.p256.is_none())
    {
        return Err(OpError::Invalid(
            "a rotation replaces ID-token keys, never drops them".into(),
        ));
    }
    let held = parent_set
        .iter()
        .chain(parent_retired.iter().map(|r| &r.entry));
    for m in held {
        if member.rsa.is_some() && member.rsa != current.rsa && m.rsa == member.rsa {
            return Err(OpError::Invalid(
                "the new RSA key is held or was held by a member".into(),
            ));
        }
        if member.p256.is_some() && member.p256 != current.p256 && m.p256 == member.p256 {
            return Err(OpError::Invalid(
                "the new P-256 key is held or was held by a member".into(),
            ));
        }
    }
    Ok(())
}

/// The keys that signed a membership op, author first. Their signatures
/// were verified by [`Ledger::validate`] before the op was committed.
fn signer_keys(op: &Operation) -> impl Iterator<Item = &PublicKey> {
    std::iter::once(&op.signer).chain(op.cosigs.iter().map(|c| &c.signer))
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
