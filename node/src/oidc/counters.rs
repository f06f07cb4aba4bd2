//! Passkey signature counters, a clone detector (WebAuthn Level 2 §7.2
//! step 21, §6.1.1): an authenticator that keeps a counter increases it on
//! every assertion, so an assertion whose counter does not exceed the last
//! one seen may come from a copy of the credential and is refused.
//! Authenticators that keep no counter always send 0 (synced passkeys do):
//! a 0 after a 0 is accepted.
//!
//! Kept per (DID, credential id) in a sled tree of the node's store
//! (`passkey-sign-counts`, 4 bytes big-endian), written with a
//! compare-and-swap so two concurrent sign-ins cannot both pass with the
//! same counter, and flushed before the sign-in is answered, so a restart
//! cannot roll a counter back. Each node tracks what it has seen; a clone
//! used at another node is caught there once that node has seen a higher
//! counter.

use crate::storage::StorageError;

/// The sled tree's name.
pub const TREE: &str = "passkey-sign-counts";

#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    #[error("the passkey's signature counter did not increase ({seen} seen before, {got} now): the credential may have been cloned")]
    Cloned { seen: u32, got: u32 },
    #[error("sign counter store: {0}")]
    Store(String),
}

/// The counters (module doc).
pub struct SignCounters {
    tree: sled::Tree,
}

fn key(did: &str, credential_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(did.len() + 1 + credential_id.len());
    k.extend_from_slice(did.as_bytes());
    // No DID holds a NUL byte, so the key splits one way only.
    k.push(0);
    k.extend_from_slice(credential_id.as_bytes());
    k
}

impl SignCounters {
    pub fn new(tree: sled::Tree) -> SignCounters {
        SignCounters { tree }
    }

    /// Opens the tree of `store`.
    pub fn open(store: &crate::storage::Store) -> Result<SignCounters, StorageError> {
        Ok(SignCounters::new(store.side_tree(TREE)?))
    }

    /// The last counter seen for this credential (0 when none).
    pub fn get(&self, did: &str, credential_id: &str) -> Result<u32, CounterError> {
        let old = self
            .tree
            .get(key(did, credential_id))
            .map_err(|e| CounterError::Store(e.to_string()))?;
        Ok(old.as_deref().map(read).unwrap_or(0))
    }

    /// Checks `count` against the last counter seen and records it,
    /// durably (module doc).
    pub async fn check_and_record(
        &self,
        did: &str,
        credential_id: &str,
        count: u32,
    ) -> Result<(), CounterError> {
        let k = key(did, credential_id);
        loop {
            let old = self
                .tree
                .get(&k)
                .map_err(|e| CounterError::Store(e.to_string()))?;
            let seen = old.as_deref().map(read).unwrap_or(0);
            if seen == 0 && count == 0 {
                return Ok(());
            }
            if count <= seen {
                return Err(CounterError::Cloned { seen, got: count });
            }
            let swapped = self
                .tree
                .compare_and_swap(&k, old, Some(&count.to_be_bytes()[..]))
                .map_err(|e| CounterError::Store(e.to_string()))?;
            if swapped.is_ok() {
                break;
            }
            // Another sign-in of the same credential won the race: check
            // against its counter.
        }
        // Gated: a flush must not overlap a batch ([`crate::storage::gated`]).
        crate::storage::gated_flush(self.tree.clone())
            .await
            .map_err(|e| CounterError::Store(e.to_string()))?;
        Ok(())
    }
}

fn read(v: &[u8]) -> u32 {
    <[u8; 4]>::try_from(v)
        .map(u32::from_be_bytes)
        .unwrap_or(u32::MAX)
}
