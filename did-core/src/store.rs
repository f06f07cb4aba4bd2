//! Where the ledger finds op bodies it does not keep in memory.
//!
//! The ledger keeps in memory only what resolution and the fork rule need
//! (issue 12, item 3); the canonical bytes of every op live in an
//! [`OpBodies`] store. did-core has no IO: [`MemoryBodies`] keeps them in
//! a map (tests, tools, small ledgers); the node stores them in sled next
//! to its log and writes them *before* the ledger commits the op.

use crate::encoding::Cid;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A store of op bodies by CID.
pub trait OpBodies: Send + Sync + std::fmt::Debug {
    /// The canonical bytes of a committed op; `None` if not held.
    fn load(&self, cid: &Cid) -> Option<Vec<u8>>;
    /// Called by the ledger when it commits an op. A store that already
    /// holds it (the node's, written before the commit) ignores the call.
    fn keep(&self, cid: &Cid, bytes: &[u8]);
}

/// Every body in memory.
#[derive(Debug, Default)]
pub struct MemoryBodies {
    map: RwLock<HashMap<Cid, Arc<[u8]>>>,
}

impl MemoryBodies {
    pub fn new() -> MemoryBodies {
        MemoryBodies::default()
    }
}

impl OpBodies for MemoryBodies {
    fn load(&self, cid: &Cid) -> Option<Vec<u8>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(cid).map(|b| b.to_vec())
    }

    fn keep(&self, cid: &Cid, bytes: &[u8]) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        map.entry(*cid).or_insert_with(|| Arc::from(bytes));
    }
}
