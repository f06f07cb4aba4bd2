//! Per-peer budgets: how much work and memory one peer can make this node
//! spend, and how long a banned address stays distrusted.
//!
//! * **Orphans.** An op whose parent is unknown is parked in the ledger's
//!   orphan pool ([`did_core::Ledger::park_orphan`]), which is global and
//!   evicts the oldest entry when full. Without a per-peer account, one
//!   peer sending valid orphans (signed by its own key, on a made-up
//!   parent) churns the pool and evicts everyone else's. Here every orphan
//!   a peer makes this node park is charged to that peer until it is
//!   resolved (the op itself commits, which it does once its parent
//!   arrives) or expires after [`ORPHAN_TTL`]. A peer holds at most
//!   [`ORPHANS_PER_PEER`] at once; beyond, its orphans are not parked
//!   (gossipsub `Ignore`) and it loses score ([`OVER_CAP_PENALTY`]). An
//!   orphan that expires unresolved costs its sender [`EXPIRED_PENALTY`]:
//!   an honest peer forwards only ops it holds, so their parents can always
//!   be fetched from it.
//! * **Rates.** Each peer has a token bucket for gossiped ops handed to
//!   validation (each costs a signature check) and one for ops fetched from
//!   it by anti-entropy. Gossip beyond the rate is ignored and costs
//!   [`RATE_PENALTY`]; fetches beyond it wait (this node pulls, so it paces
//!   itself instead of punishing anyone). Both are sized well above what
//!   honest replication does (`BENCHMARKS.md`: ~1,100 ops/s sustained over
//!   five nodes, a late joiner pulling 10,000 ops in ~10 s).
//! * **Banned addresses.** When a peer is banned its IP address (an IPv6
//!   address by its /64, which one host gets for free) is remembered for
//!   the ban's length. A *new* peer id connecting from there starts
//!   distrusted: a negative score ([`DISTRUST_SCORE`]), a tenth of the
//!   budgets, and its first invalid op bans it at once (see the event
//!   loop). Peers sharing a NAT with a banned one are affected the same
//!   way; they still replicate, with smaller budgets.
//!
//! Penalties here are gossipsub application scores (P5, weight 1; gossipsub
//! v1.1 spec, "Peer Scoring", P5: application-specific score). Budget
//! penalties decay (half-life [`PENALTY_HALF_LIFE`]) so that a burst an
//! honest peer could cause is forgiven; a flood is not, because it goes on.
//!
//! Everything is bounded: at most [`MAX_TRACKED_ORPHANS`] charges, and
//! entries of disconnected peers are kept (so reconnecting does not reset
//! an account) only while they still hold orphans or a penalty, and never
//! more than [`MAX_RETAINED`] of them.

use crate::metrics::P2pMetrics;
use did_core::Cid;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Orphans one peer may have parked here at once. With at most
/// [`super::event_loop::MAX_PEERS`] peers (50 × 192 = 9,600) they never
/// exceed the ledger's pool of 10,000, so no peer can evict another's.
pub const ORPHANS_PER_PEER: usize = 192;
/// The same for a distrusted peer.
pub const DISTRUSTED_ORPHANS: usize = 16;
/// Orphan charges held at once, all peers together (the ledger's pool).
pub const MAX_TRACKED_ORPHANS: usize = did_core::ledger::DEFAULT_ORPHAN_CAPACITY;
/// An orphan still unresolved after this long is charged to its sender as
/// a failure. Anti-entropy runs every couple of seconds, so an honest
/// orphan's parent arrives long before.
pub const ORPHAN_TTL: Duration = Duration::from_secs(300);
/// Gossiped ops a peer may hand to validation: sustained rate per second
/// and burst.
pub const GOSSIP_RATE: f64 = 4_000.0;
pub const GOSSIP_BURST: f64 = 20_000.0;
/// Ops fetched from one peer by anti-entropy: rate per second and burst.
pub const SYNC_RATE: f64 = 5_000.0;
pub const SYNC_BURST: f64 = 20_000.0;
/// Share of a fetched op's sync token given back once the op was stored as
/// new: a peer that serves only good ops is paced at
/// `SYNC_RATE / (1 - SYNC_REFUND)` (20,000 ops/s), one whose ops turn out
/// invalid, known or refused at `SYNC_RATE`, a distrusted one gets nothing
/// back. (At a flat 5,000 ops/s a node joining a 1,000,000-op network
/// from one peer waited on the budget, not on its CPU: 196 s.)
pub const SYNC_REFUND: f64 = 0.75;
/// A distrusted peer's rates, bursts and orphans are divided by this.
pub const DISTRUST_DIVISOR: f64 = 10.0;
/// Score of each orphan refused because its sender was at its cap.
pub const OVER_CAP_PENALTY: f64 = -0.25;
/// Score of each gossiped op ignored because its sender exceeded its rate.
pub const RATE_PENALTY: f64 = -0.1;
/// Score of each orphan that expired unresolved.
pub const EXPIRED_PENALTY: f64 = -1.0;
/// Budget penalties halve in this time.
pub const PENALTY_HALF_LIFE: Duration = Duration::from_secs(60);
/// Application score of a distrusted peer (below gossipsub's gossip
/// threshold: no gossip is emitted to it), while its address is banned.
pub const DISTRUST_SCORE: f64 = -40.0;
/// Disconnected peers whose accounts are kept.
pub const MAX_RETAINED: usize = 1024;
/// Banned addresses remembered.
pub const MAX_BANNED_ADDRS: usize = 4096;

/// A token bucket; tokens may go negative when a wait is reserved.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(burst);
        self.at = now;
    }

    /// Takes `n` tokens if there are that many.
    fn take(&mut self, n: f64, rate: f64, burst: f64, now: Instant) -> bool {
        self.refill(rate, burst, now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens now, going into debt; returns how long until the
    /// debt is paid (how long the caller should wait before using them).
    fn reserve(&mut self, n: f64, rate: f64, burst: f64, now: Instant) -> Duration {
        self.refill(rate, burst, now);
        self.tokens -= n;
        if self.tokens >= 0.0 || rate <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / rate)
        }
    }
}

/// One peer's account.
#[derive(Debug)]
struct Account {
    /// Disconnected since (None while connected).
    left_at: Option<Instant>,
    distrusted: bool,
    /// Orphans charged to it now.
    orphans: usize,
    /// Orphans of it refused at the cap, ever (shown in `/v1/status`).
    capped: u64,
    gossip: Bucket,
    sync: Bucket,
    /// Decaying budget penalty (≤ 0) as of `penalty_at`.
    penalty: f64,
    penalty_at: Instant,
    /// Non-decaying penalty for misbehaviour on `/didmesh/sync/2`.
    sync_penalty: f64,
}

impl Account {
    fn new(distrusted: bool, now: Instant) -> Account {
        let div = if distrusted { DISTRUST_DIVISOR } else { 1.0 };
        Account {
            left_at: None,
            distrusted,
            orphans: 0,
            capped: 0,
            gossip: Bucket::full(GOSSIP_BURST / div, now),
            sync: Bucket::full(SYNC_BURST / div, now),
            penalty: 0.0,
            penalty_at: now,
            sync_penalty: 0.0,
        }
    }

    fn divisor(&self) -> f64 {
        if self.distrusted {
            DISTRUST_DIVISOR
        } else {
            1.0
        }
    }

    fn orphan_cap(&self) -> usize {
        if self.distrusted {
            DISTRUSTED_ORPHANS
        } else {
            ORPHANS_PER_PEER
        }
    }

    fn decayed_penalty(&self, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(self.penalty_at).as_secs_f64();
        self.penalty * 0.5f64.powf(dt / PENALTY_HALF_LIFE.as_secs_f64())
    }

    fn penalise(&mut self, by: f64, now: Instant) {
        self.penalty = self.decayed_penalty(now) + by;
        self.penalty_at = now;
    }

    fn score(&self, now: Instant) -> f64 {
        let distrust = if self.distrusted { DISTRUST_SCORE } else { 0.0 };
        self.decayed_penalty(now) + self.sync_penalty + distrust
    }

    /// Nothing worth remembering once the peer is gone.
    fn idle(&self, now: Instant) -> bool {
        self.orphans == 0 && self.sync_penalty == 0.0 && self.decayed_penalty(now) > -1.0
    }
}

#[derive(Debug, Clone, Copy)]
struct Charge {
    peer: PeerId,
    at: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    accounts: HashMap<PeerId, Account>,
    charges: HashMap<Cid, Charge>,
    /// Charges in parking order, for expiry (entries of settled charges are
    /// skipped when they come up).
    order: VecDeque<(Instant, Cid)>,
}

impl Inner {
    fn account(&mut self, peer: PeerId, now: Instant) -> &mut Account {
        self.accounts.entry(peer).or_insert_with(|| {
            let mut a = Account::new(false, now);
            a.left_at = Some(now);
            a
        })
    }

    fn settle(&mut self, cid: &Cid) -> Option<PeerId> {
        let charge = self.charges.remove(cid)?;
        if let Some(a) = self.accounts.get_mut(&charge.peer) {
            a.orphans = a.orphans.saturating_sub(1);
        }
        Some(charge.peer)
    }
}

/// Why an orphan was not parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its sender is at its orphan cap (the sender was penalised).
    PeerCap,
    /// The node holds as many orphans as it will (nobody's fault).
    Full,
}

/// A summary of one peer's account for `/v1/status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccountView {
    pub orphans: usize,
    pub capped: u64,
    pub distrusted: bool,
}

/// The per-peer accounts, shared by the event loop, the gossip validator,
/// anti-entropy and the publisher. Every method takes the lock briefly and
/// never calls out while holding it.
pub struct Budgets {
    inner: Mutex<Inner>,
    metrics: Arc<P2pMetrics>,
}

impl Budgets {
    pub fn new(metrics: Arc<P2pMetrics>) -> Budgets {
        Budgets {
            inner: Mutex::default(),
            metrics,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> Option<R> {
        self.inner.lock().ok().map(|mut i| f(&mut i))
    }

    /// A peer's first connection. `distrusted` when it comes from a banned
    /// address; a known peer keeps its account (and its distrust).
    pub fn connected(&self, peer: PeerId, distrusted: bool) {
        let now = Instant::now();
        self.with(|i| {
            let a = i
                .accounts
                .entry(peer)
                .or_insert_with(|| Account::new(distrusted, now));
            a.left_at = None;
            if distrusted && !a.distrusted {
                a.distrusted = true;
                a.gossip.tokens = a.gossip.tokens.min(GOSSIP_BURST / DISTRUST_DIVISOR);
                a.sync.tokens = a.sync.tokens.min(SYNC_BURST / DISTRUST_DIVISOR);
            }
        });
    }

    /// A peer's last connection closed: its account is dropped unless it
    /// still holds orphans or a penalty (kept until those are gone).
    pub fn disconnected(&self, peer: PeerId) {
        let now = Instant::now();
        self.with(|i| {
            let idle = match i.accounts.get_mut(&peer) {
                Some(a) => {
                    a.left_at = Some(now);
                    a.idle(now)
                }
                None => false,
            };
            if idle {
                i.accounts.remove(&peer);
            }
        });
    }

    /// Lifts the distrust of `peer` (its address's ban expired).
    pub fn trust(&self, peer: &PeerId) {
        self.with(|i| {
            if let Some(a) = i.accounts.get_mut(peer) {
                a.distrusted = false;
            }
        });
    }

    pub fn is_distrusted(&self, peer: &PeerId) -> bool {
        self.with(|i| i.accounts.get(peer).is_some_and(|a| a.distrusted))
            .unwrap_or(false)
    }

    /// A gossiped bundle of `ops` ops from `peer` is about to be validated:
    /// true if its rate allows them all, else it is penalised and the
    /// bundle should be ignored.
    pub fn admit_gossip(&self, peer: PeerId, ops: usize) -> bool {
        let now = Instant::now();
        let ok = self
            .with(|i| {
                let a = i.account(peer, now);
                let div = a.divisor();
                let ok = a
                    .gossip
                    .take(ops as f64, GOSSIP_RATE / div, GOSSIP_BURST / div, now);
                if !ok {
                    a.penalise(RATE_PENALTY, now);
                }
                ok
            })
            .unwrap_or(true);
        if !ok {
            self.metrics.gossip_rate_limited.inc();
        }
        ok
    }

    /// Gives back [`SYNC_REFUND`] of a token for each of `stored` ops
    /// fetched from `peer` that were new and valid (not to a distrusted
    /// peer; never above the burst).
    pub fn sync_refund(&self, peer: PeerId, stored: usize) {
        let now = Instant::now();
        self.with(|i| {
            let a = i.account(peer, now);
            if a.distrusted || stored == 0 {
                return;
            }
            a.sync.refill(SYNC_RATE, SYNC_BURST, now);
            a.sync.tokens = (a.sync.tokens + stored as f64 * SYNC_REFUND).min(SYNC_BURST);
        });
    }

    /// Reserves `n` fetched ops from `peer`; returns how long to wait
    /// before asking for them.
    pub fn sync_delay(&self, peer: PeerId, n: usize) -> Duration {
        let now = Instant::now();
        let wait = self
            .with(|i| {
                let a = i.account(peer, now);
                let div = a.divisor();
                a.sync
                    .reserve(n as f64, SYNC_RATE / div, SYNC_BURST / div, now)
            })
            .unwrap_or_default();
        if !wait.is_zero() {
            self.metrics.sync_rate_waits.inc();
        }
        wait
    }

    /// Charges the orphan `cid` to `peer` before it is parked. Charging the
    /// same CID twice is a no-op (the pool holds it once).
    pub fn charge_orphan(&self, peer: PeerId, cid: Cid) -> Result<(), Refused> {
        let now = Instant::now();
        let r = self
            .with(|i| {
                if i.charges.contains_key(&cid) {
                    return Ok(());
                }
                let full = i.charges.len() >= MAX_TRACKED_ORPHANS;
                let a = i.account(peer, now);
                if a.orphans >= a.orphan_cap() {
                    a.capped += 1;
                    a.penalise(OVER_CAP_PENALTY, now);
                    return Err(Refused::PeerCap);
                }
                if full {
                    return Err(Refused::Full);
                }
                a.orphans += 1;
                i.charges.insert(cid, Charge { peer, at: now });
                i.order.push_back((now, cid));
                Ok(())
            })
            .unwrap_or(Err(Refused::Full));
        match r {
            Err(Refused::PeerCap) => self.metrics.orphans_capped.inc(),
            Err(Refused::Full) => self.metrics.orphans_refused_full.inc(),
            Ok(()) => {}
        }
        r
    }

    /// `cid` is no longer an orphan here: it committed (resolved), or was
    /// not parked after all.
    pub fn settle(&self, cid: &Cid) {
        self.with(|i| i.settle(cid));
    }

    /// CIDs charged now (for [`Budgets::sweep`]'s ledger check).
    pub fn charged(&self) -> Vec<Cid> {
        self.with(|i| i.charges.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Settles the charges in `held` (they committed while the publisher
    /// was not looking), expires charges older than [`ORPHAN_TTL`] (each
    /// costs its sender [`EXPIRED_PENALTY`]), and forgets disconnected
    /// peers with nothing left to remember.
    pub fn sweep(&self, held: &[Cid]) {
        self.sweep_at(held, Instant::now(), ORPHAN_TTL);
    }

    fn sweep_at(&self, held: &[Cid], now: Instant, ttl: Duration) {
        let expired = self
            .with(|i| {
                for cid in held {
                    i.settle(cid);
                }
                let mut expired = 0u64;
                while let Some((at, cid)) = i.order.front().copied() {
                    if now.saturating_duration_since(at) < ttl {
                        break;
                    }
                    i.order.pop_front();
                    // The charge may be gone (settled) or newer (settled,
                    // then charged again).
                    if i.charges.get(&cid).is_some_and(|c| c.at == at) {
                        if let Some(peer) = i.settle(&cid) {
                            i.account(peer, now).penalise(EXPIRED_PENALTY, now);
                            expired += 1;
                        }
                    }
                }
                // Settled charges leave stale entries in `order`: compact
                // when they dominate.
                if i.order.len() > 2 * i.charges.len() + 1024 {
                    let charges = &i.charges;
                    i.order
                        .retain(|(at, cid)| charges.get(cid).is_some_and(|c| c.at == *at));
                }
                i.accounts
                    .retain(|_, a| a.left_at.is_none() || !a.idle(now));
                let mut gone: Vec<(Instant, PeerId)> = i
                    .accounts
                    .iter()
                    .filter_map(|(p, a)| a.left_at.map(|t| (t, *p)))
                    .collect();
                if gone.len() > MAX_RETAINED {
                    gone.sort();
                    let drop: Vec<PeerId> = gone[..gone.len() - MAX_RETAINED]
                        .iter()
                        .map(|(_, p)| *p)
                        .collect();
                    for p in drop {
                        i.accounts.remove(&p);
                    }
                    let accounts = &i.accounts;
                    i.charges.retain(|_, c| accounts.contains_key(&c.peer));
                }
                expired
            })
            .unwrap_or(0);
        self.metrics.orphans_expired.add(expired);
    }

    /// `n` ops fetched from `peer` never found their parent (anti-entropy
    /// dropped them): each costs it like an expired orphan.
    pub fn unresolved(&self, peer: PeerId, n: u64) {
        let now = Instant::now();
        self.with(|i| {
            i.account(peer, now)
                .penalise(EXPIRED_PENALTY * n as f64, now)
        });
        self.metrics.orphans_expired.add(n);
    }

    /// Adds a non-decaying penalty (an invalid op or frame on the sync
    /// protocol; see `event_loop::SYNC_PENALTY`).
    pub fn add_sync_penalty(&self, peer: PeerId, by: f64) {
        let now = Instant::now();
        self.with(|i| i.account(peer, now).sync_penalty += by);
    }

    /// The application score `peer` has earned here (0 if unknown).
    pub fn score(&self, peer: &PeerId) -> f64 {
        let now = Instant::now();
        self.with(|i| i.accounts.get(peer).map_or(0.0, |a| a.score(now)))
            .unwrap_or(0.0)
    }

    /// `/v1/status` figures of `peer`.
    pub fn view(&self, peer: &PeerId) -> AccountView {
        self.with(|i| {
            i.accounts.get(peer).map(|a| AccountView {
                orphans: a.orphans,
                capped: a.capped,
                distrusted: a.distrusted,
            })
        })
        .flatten()
        .unwrap_or_default()
    }

    /// Orphans charged now, all peers together.
    pub fn orphans_held(&self) -> usize {
        self.with(|i| i.charges.len()).unwrap_or(0)
    }

    #[cfg(test)]
    fn accounts(&self) -> usize {
        self.with(|i| i.accounts.len()).unwrap_or(0)
    }
}

/// The part of an address a ban sticks to: the IPv4 address, or the /64 of
/// an IPv6 one (RFC 4291 §2.5.4: a /64 is one subnet, routinely one host).
pub fn ban_key(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => {
            let mut o = ip.octets();
            o[8..].fill(0);
            Some(IpAddr::V6(o.into()))
        }
        _ => None,
    })
}

/// Addresses of banned peers, each until its ban ends. Bounded: the entry
/// that ends soonest is dropped to make room.
#[derive(Debug, Default)]
pub struct BannedAddrs {
    until: HashMap<IpAddr, Instant>,
}

impl BannedAddrs {
    pub fn insert(&mut self, ip: IpAddr, until: Instant) {
        if !self.until.contains_key(&ip) && self.until.len() >= MAX_BANNED_ADDRS {
            if let Some(first) = self
                .until
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(ip, _)| *ip)
            {
                self.until.remove(&first);
            }
        }
        let e = self.until.entry(ip).or_insert(until);
        *e = (*e).max(until);
    }

    pub fn contains(&self, ip: &IpAddr, now: Instant) -> bool {
        self.until.get(ip).is_some_and(|t| *t > now)
    }

    /// Drops expired entries.
    pub fn expire(&mut self, now: Instant) {
        self.until.retain(|_, t| *t > now);
    }

    pub fn len(&self) -> usize {
        self.until.len()
    }

    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budgets() -> Budgets {
        Budgets::new(Arc::new(P2pMetrics::default()))
    }

    fn cid(i: u32) -> Cid {
        Cid::of(&i.to_le_bytes())
    }

    #[test]
    fn orphans_are_capped_per_peer_and_charged_to_the_sender() {
        let b = budgets();
        let (hostile, honest) = (PeerId::random(), PeerId::random());
        b.connected(hostile, false);
        b.connected(honest, false);
        let mut parked = 0;
        for i in 0..1000 {
            if b.charge_orphan(hostile, cid(i)).is_ok() {
                parked += 1;
            }
        }
        assert_eq!(parked, ORPHANS_PER_PEER);
        assert_eq!(b.view(&hostile).capped, 1000 - ORPHANS_PER_PEER as u64);
        assert!(b.score(&hostile) < -100.0, "{}", b.score(&hostile));
        // The other peer's budget is untouched.
        assert!(b.charge_orphan(honest, cid(5000)).is_ok());
        assert_eq!(b.score(&honest), 0.0);
        // Resolving frees the slot; charging the same CID twice is free.
        b.settle(&cid(0));
        assert!(b.charge_orphan(hostile, cid(2000)).is_ok());
        assert!(b.charge_orphan(hostile, cid(2000)).is_ok());
        assert_eq!(b.view(&hostile).orphans, ORPHANS_PER_PEER);
        assert_eq!(b.orphans_held(), ORPHANS_PER_PEER + 1);
    }

    #[test]
    fn unresolved_orphans_expire_against_their_sender() {
        let b = budgets();
        let (p, q) = (PeerId::random(), PeerId::random());
        b.connected(p, false);
        b.connected(q, false);
        for i in 0..100 {
            b.charge_orphan(p, cid(i)).unwrap();
        }
        b.charge_orphan(q, cid(1000)).unwrap();
        // q's orphan resolves; p's never do.
        let later = Instant::now() + ORPHAN_TTL;
        b.sweep_at(&[cid(1000)], later, ORPHAN_TTL);
        assert_eq!(b.view(&p).orphans, 0);
        assert_eq!(b.orphans_held(), 0);
        assert!(
            b.score(&p) <= 100.0 * EXPIRED_PENALTY * 0.99,
            "{}",
            b.score(&p)
        );
        assert_eq!(b.score(&q), 0.0);
    }

    #[test]
    fn disconnecting_does_not_reset_an_account_and_idle_ones_are_pruned() {
        let b = budgets();
        let (p, q) = (PeerId::random(), PeerId::random());
        b.connected(p, false);
        b.connected(q, false);
        for i in 0..ORPHANS_PER_PEER as u32 {
            b.charge_orphan(p, cid(i)).unwrap();
        }
        b.disconnected(p);
        b.disconnected(q);
        assert_eq!(b.accounts(), 1, "q had nothing to remember");
        b.connected(p, false);
        assert_eq!(
            b.charge_orphan(p, cid(9999)),
            Err(Refused::PeerCap),
            "reconnecting must not reset the orphan count"
        );
        // Once everything resolved and the peer left, it is forgotten
        // (after its small penalty decays).
        let held: Vec<Cid> = (0..ORPHANS_PER_PEER as u32).map(cid).collect();
        b.disconnected(p);
        b.sweep_at(
            &held,
            Instant::now() + 20 * PENALTY_HALF_LIFE,
            ORPHAN_TTL * 100,
        );
        assert_eq!(b.accounts(), 0);
    }

    #[test]
    fn retained_accounts_are_bounded() {
        let b = budgets();
        for i in 0..(MAX_RETAINED as u32 + 100) {
            let p = PeerId::random();
            b.connected(p, false);
            b.charge_orphan(p, cid(i)).unwrap();
            b.disconnected(p);
        }
        b.sweep(&[]);
        assert_eq!(b.accounts(), MAX_RETAINED);
        assert_eq!(b.orphans_held(), MAX_RETAINED);
    }

    #[test]
    fn gossip_rate_allows_a_burst_then_limits() {
        let b = budgets();
        let p = PeerId::random();
        b.connected(p, false);
        let admitted = (0..(GOSSIP_BURST as usize + 1000))
            .filter(|_| b.admit_gossip(p, 1))
            .count();
        // The burst, plus what refilled while the loop ran.
        assert!(admitted >= GOSSIP_BURST as usize, "{admitted}");
        assert!(admitted < GOSSIP_BURST as usize + 1000, "{admitted}");
        assert!(b.score(&p) < 0.0);

        // A bundle is charged for each op it holds: the same burst admits
        // 64 times fewer bundles of 64.
        let q = PeerId::random();
        b.connected(q, false);
        let bundles = (0..(GOSSIP_BURST as usize / 64 + 100))
            .filter(|_| b.admit_gossip(q, 64))
            .count();
        assert!(bundles >= GOSSIP_BURST as usize / 64, "{bundles}");
        assert!(bundles < GOSSIP_BURST as usize / 64 + 10, "{bundles}");
    }

    #[test]
    fn sync_fetches_wait_rather_than_fail() {
        let b = budgets();
        let p = PeerId::random();
        b.connected(p, false);
        // A late joiner's 10,000 ops: no wait.
        assert_eq!(b.sync_delay(p, 10_000), Duration::ZERO);
        assert_eq!(b.sync_delay(p, 10_000), Duration::ZERO);
        let wait = b.sync_delay(p, 5_000);
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(b.score(&p), 0.0, "pacing is not a penalty");
    }

    /// Ops that were stored as new give most of their token back, so an
    /// honest peer is paced 4x faster than one whose ops are wasted work;
    /// a distrusted peer gets nothing back.
    #[test]
    fn good_fetched_ops_are_refunded_bad_ones_are_not() {
        let b = budgets();
        let (good, bad, shady) = (PeerId::random(), PeerId::random(), PeerId::random());
        b.connected(good, false);
        b.connected(bad, false);
        b.connected(shady, true);
        let mut waits = vec![];
        for p in [good, bad, shady] {
            // 60,000 ops in batches of 1,000: the burst, then the rate.
            let mut wait = Duration::ZERO;
            for _ in 0..60 {
                wait = b.sync_delay(p, 1_000);
                if p != bad {
                    b.sync_refund(p, 1_000);
                }
            }
            waits.push(wait);
        }
        // Debt after 60,000: bad 40,000 (8 s at 5,000/s); good 60,000 x
        // 0.25 - 20,000 burst = none; shady pays the distrusted rate.
        assert_eq!(waits[0], Duration::ZERO, "{waits:?}");
        assert!(waits[1] > Duration::from_secs(7), "{waits:?}");
        assert!(waits[2] > waits[1], "{waits:?}");
        // Never above the burst.
        b.sync_refund(good, 1_000_000);
        assert_eq!(b.sync_delay(good, 20_000), Duration::ZERO);
        assert!(b.sync_delay(good, 1_000) > Duration::ZERO);
    }

    #[test]
    fn a_distrusted_peer_starts_negative_with_smaller_budgets() {
        let b = budgets();
        let p = PeerId::random();
        b.connected(p, true);
        assert!(b.is_distrusted(&p));
        assert_eq!(b.score(&p), DISTRUST_SCORE);
        let parked = (0..100)
            .filter(|i| b.charge_orphan(p, cid(*i)).is_ok())
            .count();
        assert_eq!(parked, DISTRUSTED_ORPHANS);
        b.trust(&p);
        assert!(!b.is_distrusted(&p));
    }

    #[test]
    fn banned_addresses_by_ip_and_ipv6_prefix_bounded() {
        let a: Multiaddr = "/ip4/192.0.2.7/tcp/4001".parse().unwrap();
        let b: Multiaddr = "/ip6/2001:db8::1/tcp/4001".parse().unwrap();
        let c: Multiaddr = "/ip6/2001:db8::ffff:1/tcp/9".parse().unwrap();
        let d: Multiaddr = "/ip6/2001:db8:0:1::1/tcp/9".parse().unwrap();
        assert_eq!(ban_key(&b), ban_key(&c), "same /64");
        assert_ne!(ban_key(&b), ban_key(&d));
        let now = Instant::now();
        let mut banned = BannedAddrs::default();
        banned.insert(ban_key(&a).unwrap(), now + Duration::from_secs(600));
        assert!(banned.contains(&ban_key(&a).unwrap(), now));
        assert!(!banned.contains(&ban_key(&a).unwrap(), now + Duration::from_secs(601)));
        for i in 0..(MAX_BANNED_ADDRS as u32 + 10) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(i));
            banned.insert(ip, now + Duration::from_secs(u64::from(i) + 1));
        }
        assert_eq!(banned.len(), MAX_BANNED_ADDRS);
        banned.expire(now + Duration::from_secs(u64::from(MAX_BANNED_ADDRS as u32)));
        assert!(banned.len() <= 11);
    }
}
