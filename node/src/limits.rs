//! Rate limits per client network, with bounded memory.
//!
//! A client is keyed by its network, not its address: an IPv4 /24 or an
//! IPv6 /64 (the smallest block a home or cloud customer is usually given,
//! RFC 6177), so one host with many addresses, e.g. all of 127.0.0.0/8 on
//! loopback or a /64 of its own, still counts as a handful of clients.
//! Loopback and IPv4-mapped IPv6 addresses get no special treatment: an
//! IPv4 address is keyed by its /24 whatever it is.
//!
//! governor's keyed limiter keeps an entry per key forever unless told
//! otherwise; [`PrefixLimiter::prune`] (called by the node's housekeeping
//! timer every [`HOUSEKEEPING_INTERVAL`]) drops every entry that is back to
//! a full burst, which is indistinguishable from no entry, so memory is
//! bounded by the networks seen in the last interval or so.

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::Duration;

/// How often rate-limiter entries and redeemed nonces are pruned.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(10);

/// The network a client address is limited as (module doc).
pub fn client_prefix(ip: IpAddr) -> IpAddr {
    let v4 = |a: Ipv4Addr| {
        let [a, b, c, _] = a.octets();
        IpAddr::V4(Ipv4Addr::new(a, b, c, 0))
    };
    match ip {
        IpAddr::V4(a) => v4(a),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(mapped) => v4(mapped),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(a) & !((1u128 << 64) - 1))),
        },
    }
}

/// A keyed rate limiter over [`client_prefix`].
pub struct PrefixLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl PrefixLimiter {
    /// `rate` requests per second per network, bursts of `burst_factor`
    /// times that; `None` when `rate` is 0 (no limit).
    pub fn new(rate: u32, burst_factor: u32) -> Option<PrefixLimiter> {
        let rate = NonZeroU32::new(rate)?;
        let burst = rate.saturating_mul(NonZeroU32::new(burst_factor).unwrap_or(NonZeroU32::MIN));
        Some(PrefixLimiter {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
        })
    }

    /// `Ok` if a request from `ip` may go ahead now; else the seconds to
    /// wait before the next one would.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        use governor::clock::Clock as _;
        self.limiter
            .check_key(&client_prefix(ip))
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                // Rounded up, and at least 1 s (HTTP's unit).
                (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
            })
    }

    /// Drops the entries of networks back at a full burst (module doc).
    pub fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Networks currently tracked.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let p = |s: &str| client_prefix(s.parse().unwrap()).to_string();
        assert_eq!(p("127.0.0.1"), "127.0.0.0");
        assert_eq!(p("127.9.8.7"), "127.9.8.0");
        assert_eq!(p("192.0.2.200"), "192.0.2.0");
        assert_eq!(p("::ffff:192.0.2.200"), "192.0.2.0");
        assert_eq!(p("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::");
        assert_eq!(p("::1"), "::");
    }

    #[test]
    fn one_network_shares_a_budget_and_others_do_not() {
        let l = PrefixLimiter::new(1, 2).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(l.check(ip("10.0.0.1")).is_ok());
        assert!(l.check(ip("10.0.0.2")).is_ok());
        let wait = l.check(ip("10.0.0.3")).unwrap_err();
        assert!((1..=2).contains(&wait), "{wait}");
        assert!(l.check(ip("10.0.1.1")).is_ok());
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn pruning_forgets_quiet_networks() {
        let l = PrefixLimiter::new(50, 2).unwrap();
        for i in 0..=255u8 {
            for j in 0..4u8 {
                assert!(l.check(IpAddr::V4(Ipv4Addr::new(10, i, j, 1))).is_ok());
            }
        }
        assert_eq!(l.len(), 1024);
        // One request is back to a full burst after 1/50 s.
        std::thread::sleep(Duration::from_millis(100));
        l.prune();
        assert_eq!(l.len(), 0);
    }
}
