//! The cache of already-verified tokens: blake3(token) → claims.
//!
//! Clients reuse one access token for its whole lifetime, so most requests
//! carry a token we already checked. A hit costs one blake3 of ~400 bytes and
//! one short lock instead of an Ed25519 verification.
//!
//! * Sharded (`SHARDS` mutexes picked by digest bits) so that threads
//!   rarely contend.
//! * Bounded: each shard holds at most `capacity / SHARDS` entries. When a
//!   shard is full it first drops dead entries, then arbitrary ones down to
//!   7/8 of the bound — simple, and good enough because an evicted token is
//!   only verified again. Freeing an eighth at a time keeps the sweep
//!   amortised: a stream of never-seen tokens into a full cache costs one
//!   sweep per `bound / 8` inserts, not one per insert.
//! * An entry is dead once the token's `exp` is reached or the JWKS generation
//!   moved (a key was removed or replaced), so it never outlives either.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use crate::Claims;

/// Number of shards: a power of two well above the core count.
const SHARDS: usize = 64;

/// A blake3 digest of a token string.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Digest([u8; 32]);

impl Digest {
    /// Hashes a token.
    pub(crate) fn of(token: &str) -> Self {
        Self(*blake3::hash(token.as_bytes()).as_bytes())
    }

    fn shard(&self) -> usize {
        usize::from(self.0[31]) % SHARDS
    }
}

impl Hash for Digest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Already uniformly random: 8 bytes of it are a perfect hash.
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(word));
    }
}

/// Passes [`Digest`]'s precomputed hash through instead of running SipHash
/// over it again. Safe from hash flooding: an attacker cannot choose blake3
/// outputs.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached if something other than `Digest` is hashed; fold it in.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

struct Entry {
    claims: Arc<Claims>,
    /// The token's `exp`: the entry is dead from this second on.
    expires_at: u64,
    /// The JWKS generation the token was verified under.
    generation: u64,
    /// What a revocation check needs beyond the claims.
    meta: TokenMeta,
}

/// What the revocation feed's rules read besides the claims: the header's
/// `kid` (`member` entries).
pub(crate) struct TokenMeta {
    /// The `kid` that signed the token (shared with the key set).
    pub(crate) kid: Arc<str>,
}

type Shard = HashMap<Digest, Entry, BuildHasherDefault<DigestHasher>>;

/// See the module doc.
pub(crate) struct VerifiedTokenCache {
    shards: Box<[Mutex<Shard>]>,
    /// Entries per shard; 0 disables the cache.
    per_shard: usize,
}

impl VerifiedTokenCache {
    /// A cache of about `capacity` entries (rounded up to a multiple of the
    /// shard count); 0 disables it.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: capacity.div_ceil(SHARDS),
        }
    }

    fn shard(&self, digest: &Digest) -> std::sync::MutexGuard<'_, Shard> {
        // A panic while holding the lock cannot leave the map half-updated
        // (std's HashMap is panic-safe), so a poisoned shard is still usable.
        self.shards[digest.shard()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The claims of a live entry, after `check` (the revocation rules;
    /// run under the shard lock, so a hit clones one `Arc` and nothing
    /// else). An entry that `check` refuses is dropped and its error
    /// returned.
    pub(crate) fn get<E>(
        &self,
        digest: &Digest,
        now: u64,
        generation: u64,
        check: impl FnOnce(&Claims, &TokenMeta) -> Result<(), E>,
    ) -> Option<Result<Arc<Claims>, E>> {
        if self.per_shard == 0 {
            return None;
        }
        let mut shard = self.shard(digest);
        let entry = shard.get(digest)?;
        if now < entry.expires_at && entry.generation == generation {
            return match check(&entry.claims, &entry.meta) {
                Ok(()) => Some(Ok(entry.claims.clone())),
                Err(e) => {
                    shard.remove(digest);
                    Some(Err(e))
                }
            };
        }
        shard.remove(digest);
        None
    }

    /// Remembers a verified token until `expires_at`.
    pub(crate) fn insert(
        &self,
        digest: Digest,
        claims: Arc<Claims>,
        meta: TokenMeta,
        expires_at: u64,
        generation: u64,
        now: u64,
    ) {
        if self.per_shard == 0 || expires_at <= now {
            return;
        }
        let mut shard = self.shard(&digest);
        if shard.len() >= self.per_shard && !shard.contains_key(&digest) {
            shard.retain(|_, e| now < e.expires_at && e.generation == generation);
            let keep = self.per_shard - self.per_shard.div_ceil(8);
            if shard.len() > keep {
                let victims: Vec<Digest> = shard.keys().take(shard.len() - keep).copied().collect();
                for victim in victims {
                    shard.remove(&victim);
                }
            }
        }
        shard.insert(
            digest,
            Entry {
                claims,
                expires_at,
                generation,
                meta,
            },
        );
    }

    /// Live and dead entries together (for tests and metrics).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> TokenMeta {
        TokenMeta {
            kid: Arc::from("k"),
        }
    }

    fn ok(_: &Claims, _: &TokenMeta) -> Result<(), ()> {
        Ok(())
    }

    fn claims() -> Arc<Claims> {
        Arc::new(Claims {
            iss: "i".into(),
            sub: "did:mesh:x".into(),
            aud: "a".into(),
            iat: 0,
            nbf: 0,
            exp: 100,
            jti: "j".into(),
            auth_time: 0,
            amr: vec![],
            acr: None,
            key: None,
            rev: None,
        })
    }

    #[test]
    fn hit_until_exp_then_gone() {
        let cache = VerifiedTokenCache::new(1000);
        let d = Digest::of("t");
        cache.insert(d, claims(), meta(), 100, 0, 10);
        assert!(cache.get(&d, 99, 0, ok).is_some());
        assert!(cache.get(&d, 100, 0, ok).is_none());
        assert_eq!(cache.len(), 0, "a dead entry is dropped on lookup");
    }

    #[test]
    fn generation_change_misses() {
        let cache = VerifiedTokenCache::new(1000);
        let d = Digest::of("t");
        cache.insert(d, claims(), meta(), 100, 0, 10);
        assert!(cache.get(&d, 50, 1, ok).is_none());
    }

    #[test]
    fn stays_bounded() {
        let cache = VerifiedTokenCache::new(SHARDS * 4);
        for i in 0..10_000 {
            cache.insert(Digest::of(&i.to_string()), claims(), meta(), 100, 0, 10);
        }
        assert!(cache.len() <= SHARDS * 4);
        // The newest entry is always kept.
        assert!(cache.get(&Digest::of("9999"), 10, 0, ok).is_some());
    }

    #[test]
    fn a_refused_entry_is_dropped() {
        let cache = VerifiedTokenCache::new(1000);
        let d = Digest::of("t");
        cache.insert(d, claims(), meta(), 100, 0, 10);
        assert_eq!(
            cache.get(&d, 20, 0, |_, m| if &*m.kid == "k" {
                Err(7)
            } else {
                Ok(())
            }),
            Some(Err(7))
        );
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn zero_capacity_disables() {
        let cache = VerifiedTokenCache::new(0);
        let d = Digest::of("t");
        cache.insert(d, claims(), meta(), 100, 0, 10);
        assert!(cache.get(&d, 10, 0, ok).is_none());
    }
}
