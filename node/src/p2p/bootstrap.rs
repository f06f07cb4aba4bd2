//! Bootstrap peers (`--bootstrap`), given by address or by DNS name, and
//! the task that keeps them dialed.
//!
//! An entry is `/ip4|/ip6/ADDR/tcp/PORT[/p2p/ID]` or
//! `/dns|/dns4|/dns6/NAME/tcp/PORT[/p2p/ID]`. Names are resolved here, with
//! the system resolver (getaddrinfo: the hosts file, then DNS, as
//! nsswitch.conf says), every time the entry is dialed; nothing is cached.
//! So a node that comes back at another address (a container rescheduled,
//! a VM or namespace re-addressed) is found again under its name. libp2p's
//! own DNS transport (hickory) also resolves at each dial, but reads the
//! hosts file once, at start: it would miss a changed `/etc/hosts` (Docker's,
//! `ip netns`'). It still resolves the `/dns` addresses peers announce
//! (`--announce`) and Kademlia passes on.
//!
//! Policy: every second, each entry is checked against the event loop's
//! peer snapshot. An entry is connected when its peer (the `/p2p/ID` given,
//! or the peer this node last reached at one of its addresses) is. An entry
//! that is not is resolved and dialed again, [`MIN_BACKOFF`] doubling to
//! [`MAX_BACKOFF`] between tries; the wait falls back to the minimum when
//! its name resolves to new addresses. Before step 10 the node redialed only
//! when it had no peer at all, so a peer that restarted elsewhere stayed
//! lost as long as any other peer was connected.

use super::event_loop::Client;
use super::peers::PeerView;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Time between checks of the entries.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// First wait before an entry is dialed again.
pub const MIN_BACKOFF: Duration = Duration::from_secs(3);
/// Longest wait between two dials of an entry.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A name lookup taking longer counts as failed (tried again later).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Outbound connection addresses remembered per peer (the event loop's
/// bound; connections beyond are still made, just not recorded).
pub(crate) const MAX_DIALED_PER_PEER: usize = 8;

/// Where a bootstrap entry or an `--announce` address points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    /// A name and which families it may resolve to (`dns4`: v4 only,
    /// `dns6`: v6 only, `dns`: both).
    Name {
        name: String,
        v4: bool,
        v6: bool,
    },
}

/// A parsed `--bootstrap` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: Host,
    pub port: u16,
    pub peer: Option<PeerId>,
}

/// Parses `HOST/tcp/PORT[/p2p/ID]` with HOST one of ip4, ip6, dns, dns4,
/// dns6. Anything else is refused with the reason (the node does not start
/// on a bad flag rather than never connecting).
pub fn parse(addr: &Multiaddr) -> Result<Target, String> {
    let mut it = addr.iter();
    let host = match it.next() {
        Some(Protocol::Ip4(ip)) => Host::Ip(ip.into()),
        Some(Protocol::Ip6(ip)) => Host::Ip(ip.into()),
        Some(Protocol::Dns(n)) => Host::Name {
            name: n.to_string(),
            v4: true,
            v6: true,
        },
        Some(Protocol::Dns4(n)) => Host::Name {
            name: n.to_string(),
            v4: true,
            v6: false,
        },
        Some(Protocol::Dns6(n)) => Host::Name {
            name: n.to_string(),
            v4: false,
            v6: true,
        },
        _ => {
            return Err(format!(
                "{addr}: must start with /ip4, /ip6, /dns, /dns4 or /dns6"
            ))
        }
    };
    let port = match it.next() {
        Some(Protocol::Tcp(p)) if p != 0 => p,
        _ => return Err(format!("{addr}: the host must be followed by /tcp/PORT")),
    };
    let peer = match it.next() {
        None => None,
        Some(Protocol::P2p(id)) => Some(id),
        Some(_) => return Err(format!("{addr}: only /p2p/<peer id> may follow the port")),
    };
    if it.next().is_some() {
        return Err(format!("{addr}: nothing may follow /p2p/<peer id>"));
    }
    Ok(Target { host, port, peer })
}

/// Checks an `--announce` address: `HOST/tcp/PORT` as for `--bootstrap`,
/// without `/p2p` (identify adds the peer id itself).
pub fn check_announce(addr: &Multiaddr) -> Result<(), String> {
    match parse(addr)? {
        Target { peer: Some(_), .. } => Err(format!(
            "{addr}: an announced address does not name the peer id"
        )),
        _ => Ok(()),
    }
}

/// `ip` and `port` as a TCP multiaddr.
fn tcp_addr(ip: IpAddr, port: u16) -> Multiaddr {
    Multiaddr::empty().with(ip.into()).with(Protocol::Tcp(port))
}

/// The IP addresses `target` stands for now: itself, or what its name
/// resolves to (sorted, without duplicates). Empty if the lookup fails.
pub async fn resolve(target: &Target) -> Vec<Multiaddr> {
    let mut ips = match &target.host {
        Host::Ip(ip) => vec![*ip],
        Host::Name { name, v4, v6 } => {
            let lookup = tokio::net::lookup_host((name.as_str(), target.port));
            match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                Ok(Ok(found)) => found
                    .map(|a| a.ip())
                    .filter(|ip| if ip.is_ipv4() { *v4 } else { *v6 })
                    .collect(),
                Ok(Err(e)) => {
                    tracing::debug!(%name, error = %e, "bootstrap name does not resolve");
                    vec![]
                }
                Err(_) => {
                    tracing::debug!(%name, "bootstrap name lookup timed out");
                    vec![]
                }
            }
        }
    };
    ips.sort();
    ips.dedup();
    ips.into_iter()
        .map(|ip| tcp_addr(ip, target.port))
        .collect()
}

/// The IP and port of a TCP multiaddr (`/p2p` and anything after ignored).
fn socket_of(addr: &Multiaddr) -> Option<(IpAddr, u16)> {
    let mut it = addr.iter();
    let ip: IpAddr = match it.next()? {
        Protocol::Ip4(ip) => ip.into(),
        Protocol::Ip6(ip) => ip.into(),
        _ => return None,
    };
    match it.next()? {
        Protocol::Tcp(port) => Some((ip, port)),
        _ => None,
    }
}

/// One `--bootstrap` entry and its redial state.
struct Entry {
    given: Multiaddr,
    target: Target,
    /// The peer last reached at one of the entry's addresses (when the
    /// entry names none).
    learnt: Option<PeerId>,
    /// The addresses of the last resolution.
    resolved: Vec<Multiaddr>,
    next: Instant,
    backoff: Duration,
}

impl Entry {
    /// A bootstrap address not resolved nor dialled yet, due at `now`.
    fn new(given: Multiaddr, target: Target, now: Instant) -> Entry {
        Entry {
            given,
            target,
            learnt: None,
            resolved: vec![],
            next: now,
            backoff: MIN_BACKOFF,
        }
    }

    /// Whether the entry's peer is connected, learning which peer it is
    /// from the addresses this node dialed when the entry names none.
    fn connected(&mut self, view: &PeerView) -> bool {
        let peer = self.target.peer.or(self.learnt);
        if let Some(p) = peer {
            let id = p.to_string();
            if view.peers.iter().any(|x| x.peer_id == id) {
                return true;
            }
            if self.target.peer.is_some() {
                return false;
            }
        }
        let wanted: Vec<(IpAddr, u16)> = self.resolved.iter().filter_map(socket_of).collect();
        let found = view.peers.iter().find(|x| {
            x.dialed.iter().any(|d| {
                d.parse::<Multiaddr>()
                    .ok()
                    .and_then(|m| socket_of(&m))
                    .is_some_and(|s| wanted.contains(&s))
            })
        });
        match found.and_then(|x| x.peer_id.parse::<PeerId>().ok()) {
            Some(p) => {
                self.learnt = Some(p);
                true
            }
            None => false,
        }
    }
}

/// Whether `addr` is one this node listens on (a bootstrap list shared by
/// every node names the node itself too).
fn is_own(addr: &Multiaddr, view: &PeerView) -> bool {
    let Some(own) = socket_of(addr) else {
        return false;
    };
    view.listen_addrs
        .iter()
        .filter_map(|a| a.parse::<Multiaddr>().ok())
        .any(|a| socket_of(&a) == Some(own))
}

/// Keeps dialing the bootstrap entries that are not connected (module
/// doc). Runs until the event loop stops.
pub(crate) async fn run(client: Client, entries: Vec<Multiaddr>) {
    let local = client.peer_id();
    let now = Instant::now();
    let mut entries: Vec<Entry> = entries
        .into_iter()
        .filter_map(|given| match parse(&given) {
            Ok(target) if target.peer == Some(local) => None,
            Ok(target) => Some(Entry::new(given, target, now)),
            // `p2p::start` checked them already.
            Err(_) => None,
        })
        .collect();
    if entries.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let view = client.view();
        for e in &mut entries {
            let now = Instant::now();
            if e.connected(&view) {
                e.backoff = MIN_BACKOFF;
                e.next = now + MIN_BACKOFF;
                continue;
            }
            if now < e.next {
                continue;
            }
            let mut addrs = resolve(&e.target).await;
            addrs.retain(|a| !is_own(a, &view));
            if addrs != e.resolved {
                if !e.resolved.is_empty() {
                    tracing::info!(bootstrap = %e.given, ?addrs, "bootstrap peer resolves to new addresses");
                }
                e.backoff = MIN_BACKOFF;
                e.resolved = addrs.clone();
            }
            if !addrs.is_empty() && client.dial(e.target.peer, addrs).await.is_err() {
                return; // the event loop has stopped
            }
            e.next = now + e.backoff;
            e.backoff = (e.backoff * 2).min(MAX_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::p2p::PeerInfo;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    fn peer(id: &PeerId, addr: &str, dialed: &[&str]) -> PeerInfo {
        PeerInfo {
            peer_id: id.to_string(),
            addr: addr.into(),
            dialed: dialed.iter().map(|d| d.to_string()).collect(),
            agent: None,
            score: 0.0,
            rejected: 0,
            orphans: 0,
            orphans_capped: 0,
            distrusted: false,
        }
    }

    #[test]
    fn parses_names_addresses_and_optional_peer_ids() {
        let id = PeerId::random();
        let t = parse(&ma(&format!("/dns4/node1/tcp/7101/p2p/{id}"))).unwrap();
        assert_eq!(
            t,
            Target {
                host: Host::Name {
                    name: "node1".into(),
                    v4: true,
                    v6: false
                },
                port: 7101,
                peer: Some(id)
            }
        );
        let t = parse(&ma("/dns/node-2.example/tcp/9")).unwrap();
        assert_eq!(t.peer, None);
        assert!(matches!(
            t.host,
            Host::Name {
                v4: true,
                v6: true,
                ..
            }
        ));
        let t = parse(&ma("/ip6/::1/tcp/7101")).unwrap();
        assert_eq!(t.host, Host::Ip("::1".parse().unwrap()));
        for bad in [
            "/dnsaddr/example.com",
            "/dns4/node1",
            "/dns4/node1/udp/7101",
            "/ip4/10.0.0.1/tcp/0",
            "/dns4/node1/tcp/7101/ws",
        ] {
            assert!(parse(&ma(bad)).is_err(), "{bad} accepted");
        }
        assert!(check_announce(&ma("/dns4/node1/tcp/7101")).is_ok());
        assert!(check_announce(&ma(&format!("/ip4/1.2.3.4/tcp/1/p2p/{id}"))).is_err());
    }

    #[tokio::test]
    async fn names_resolve_with_the_system_resolver_each_time() {
        let t = parse(&ma("/dns4/localhost/tcp/7101")).unwrap();
        assert_eq!(resolve(&t).await, vec![ma("/ip4/127.0.0.1/tcp/7101")]);
        let t = parse(&ma("/ip4/192.0.2.1/tcp/7")).unwrap();
        assert_eq!(resolve(&t).await, vec![ma("/ip4/192.0.2.1/tcp/7")]);
        // RFC 6761: `.invalid` never resolves.
        let t = parse(&ma("/dns4/nothing.invalid/tcp/7")).unwrap();
        assert!(resolve(&t).await.is_empty());
    }

    #[test]
    fn an_entry_without_peer_id_learns_its_peer_from_the_address_dialed() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let given = ma("/dns4/n2/tcp/7101");
        let mut e = Entry::new(given.clone(), parse(&given).unwrap(), Instant::now());
        e.resolved = vec![ma("/ip4/10.0.0.2/tcp/7101")];
        // Same host, another port (an inbound connection, or another node
        // on that host): not this entry.
        let mut view = PeerView {
            peers: vec![peer(
                &a,
                "/ip4/10.0.0.2/tcp/40000",
                &["/ip4/10.0.0.2/tcp/7102"],
            )],
            ..Default::default()
        };
        assert!(!e.connected(&view));
        let dialed = format!("/ip4/10.0.0.2/tcp/7101/p2p/{b}");
        view.peers
            .push(peer(&b, "/ip4/10.0.0.9/tcp/5", &[dialed.as_str()]));
        assert!(e.connected(&view));
        assert_eq!(e.learnt, Some(b));
        // The peer left and its name now resolves elsewhere: not connected
        // until a dial at the new address succeeds.
        view.peers.retain(|p| p.peer_id != b.to_string());
        e.resolved = vec![ma("/ip4/10.0.0.22/tcp/7101")];
        assert!(!e.connected(&view));
        view.peers.push(peer(
            &b,
            "/ip4/10.0.0.22/tcp/7101",
            &["/ip4/10.0.0.22/tcp/7101"],
        ));
        assert!(e.connected(&view));
    }

    #[test]
    fn an_entry_with_a_peer_id_is_that_peer() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let given = ma(&format!("/dns4/n2/tcp/7101/p2p/{a}"));
        let mut e = Entry::new(given.clone(), parse(&given).unwrap(), Instant::now());
        e.resolved = vec![ma("/ip4/10.0.0.2/tcp/7101")];
        // Another peer at the address (the name now points elsewhere):
        // not the one the entry names.
        let mut view = PeerView {
            peers: vec![peer(
                &b,
                "/ip4/10.0.0.2/tcp/7101",
                &["/ip4/10.0.0.2/tcp/7101"],
            )],
            ..Default::default()
        };
        assert!(!e.connected(&view));
        view.peers.push(peer(&a, "/ip4/10.0.0.3/tcp/1", &[]));
        assert!(e.connected(&view));
    }

    #[test]
    fn own_listen_addresses_are_skipped() {
        let view = PeerView {
            listen_addrs: vec![format!("/ip4/10.0.0.1/tcp/7101/p2p/{}", PeerId::random())],
            ..Default::default()
        };
        assert!(is_own(&ma("/ip4/10.0.0.1/tcp/7101"), &view));
        assert!(!is_own(&ma("/ip4/10.0.0.1/tcp/7102"), &view));
    }
}
