//! Hosts in network namespaces, for multi-host tests (`tests/multihost.rs`)
//! and the nemesis (`src/bin/nemesis.rs`): one namespace per node, each
//! with one veth (`eth0` inside) on a bridge of its own /24, a hosts file
//! naming every node (`/etc/netns/<ns>/hosts`, which `ip netns exec`
//! bind-mounts over `/etc/hosts`), and the host on the bridge too (`.254`)
//! to drive the nodes' HTTP APIs.
//!
//! What it can do to the network: re-address a node ([`Lab::readdress`]),
//! cut it into groups that cannot reach each other ([`Lab::partition`]:
//! blackhole routes inside the namespaces, so packets are dropped silently,
//! as on a real broken link) and heal ([`Lab::heal`]).
//!
//! Names are unique per run (a random tag; the /24 is chosen among unused
//! ones), so runs do not collide. [`Lab`]'s `Drop` deletes the namespaces,
//! the bridge and the `/etc/netns` folders on every exit path, panics
//! included. While the lab lives, the host also holds a blackhole route for
//! the lab's /24 (behind the bridge's own route): a packet a test sends to a
//! node after the bridge is gone is dropped here instead of leaving the
//! machine by the default route. Tests must still stop all traffic before
//! dropping the lab; the route only removed last.
//!
//! Needs root and iproute2; [`Lab::create`] says so when they are missing.

use std::path::PathBuf;
use std::process::Command;

/// Runs `ip args…`; the error names the command and its stderr.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether this process runs as root (namespaces need it).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n")
}

/// A set of namespaced hosts on one bridge (module doc).
pub struct Lab {
    tag: String,
    /// The lab's /24, as `a.b.c` (the host is `a.b.c.254`).
    prefix: String,
    /// Last octet of each node's address (node `i` at index `i - 1`).
    octets: Vec<u8>,
    /// Blackhole routes in place: (node, address blocked).
    cuts: Vec<(usize, String)>,
    host_route: bool,
    created: Vec<usize>,
    bridge: bool,
}

impl Lab {
    /// `n` namespaces `<tag>n1..n` on a new bridge; node `i` at
    /// `a.b.c.i`, named `node<i>` in every namespace's hosts file.
    pub fn create(n: usize) -> Result<Lab, String> {
        if !is_root() || Command::new("ip").arg("-V").output().is_err() {
            return Err("network namespaces need root and iproute2".into());
        }
        let seed: u32 = rand::random();
        let tag = format!("dm{:05x}", seed & 0xfffff);
        let routes = Command::new("ip")
            .args(["-4", "route", "show", "table", "all"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .map_err(|e| format!("ip route: {e}"))?;
        // 10.200.0.0 – 10.239.255.0: a free /24 (none of its addresses in
        // any routing table here).
        let prefix = (0..64u32)
            .map(|k| {
                let r = seed
                    .wrapping_mul(2654435761)
                    .wrapping_add(k.wrapping_mul(40503));
                format!("10.{}.{}", 200 + (r >> 8) % 40, r % 250 + 1)
            })
            .find(|p| !routes.contains(&format!("{p}.")))
            .ok_or("no free 10.2xx.x.0/24 for the lab")?;
        let mut lab = Lab {
            tag,
            prefix,
            octets: (1..=n).map(|i| i as u8).collect(),
            cuts: vec![],
            host_route: false,
            created: vec![],
            bridge: false,
        };
        let br = lab.bridge_name();
        ip(&["link", "add", &br, "type", "bridge"])?;
        lab.bridge = true;
        ip(&["addr", "add", &format!("{}.254/24", lab.prefix), "dev", &br])?;
        ip(&["link", "set", &br, "up"])?;
        ip(&[
            "route",
            "add",
            "blackhole",
            &format!("{}.0/24", lab.prefix),
            "metric",
            "4000",
        ])?;
        lab.host_route = true;
        for i in 1..=n {
            let ns = lab.ns(i);
            ip(&["netns", "add", &ns])?;
            lab.created.push(i);
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let (host, inner) = (format!("{}v{i}", lab.tag), format!("{}p{i}", lab.tag));
            ip(&["link", "add", &host, "type", "veth", "peer", "name", &inner])?;
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["-n", &ns, "link", "set", &inner, "name", "eth0"])?;
            ip(&["link", "set", &host, "master", &br])?;
            ip(&["link", "set", &host, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", lab.ip(i)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        lab.write_hosts()?;
        Ok(lab)
    }

    fn bridge_name(&self) -> String {
        format!("{}br", self.tag)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.octets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.octets.is_empty()
    }

    /// Namespace of node `i` (1-based).
    pub fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    /// The host name of node `i` in every hosts file.
    pub fn name(i: usize) -> String {
        format!("node{i}")
    }

    /// Node `i`'s current address.
    pub fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.prefix, self.octets[i - 1])
    }

    /// The command prefix that runs a program in node `i`'s namespace.
    pub fn wrapper(&self, i: usize) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.ns(i)]
    }

    fn hosts_path(&self, i: usize) -> PathBuf {
        PathBuf::from("/etc/netns").join(self.ns(i)).join("hosts")
    }

    /// (Re)writes every namespace's hosts file with the current addresses.
    /// In place (same inode): a running process sees `/etc/hosts` through
    /// a bind mount made when it started, which a rename would detach.
    pub fn write_hosts(&self) -> Result<(), String> {
        let mut text = String::from("127.0.0.1 localhost\n");
        for i in 1..=self.len() {
            text.push_str(&format!("{} {}\n", self.ip(i), Self::name(i)));
        }
        for i in 1..=self.len() {
            let path = self.hosts_path(i);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            std::fs::write(&path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// Moves node `i` to address `.octet` of the lab's /24 and rewrites the
    /// hosts files. Do it while the node is stopped: its listeners are bound
    /// to the old address.
    pub fn readdress(&mut self, i: usize, octet: u8) -> Result<(), String> {
        if octet == 0 || octet >= 254 || self.octets.contains(&octet) {
            return Err(format!("octet {octet} is taken or reserved"));
        }
        let ns = self.ns(i);
        ip(&["-n", &ns, "addr", "flush", "dev", "eth0"])?;
        self.octets[i - 1] = octet;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", self.ip(i)),
            "dev",
            "eth0",
        ])?;
        self.write_hosts()
    }

    /// Cuts the network into `groups` (node numbers; a node in no group is
    /// cut off from everyone): blackhole routes in each namespace for the
    /// addresses of every node outside its group. Heals any previous cut
    /// first. The host still reaches every node.
    pub fn partition(&mut self, groups: &[Vec<usize>]) -> Result<(), String> {
        self.heal()?;
        let group_of = |n: usize| groups.iter().position(|g| g.contains(&n));
        for i in 1..=self.len() {
            for j in 1..=self.len() {
                if i == j || (group_of(i).is_some() && group_of(i) == group_of(j)) {
                    continue;
                }
                let target = format!("{}/32", self.ip(j));
                ip(&["-n", &self.ns(i), "route", "add", "blackhole", &target])?;
                self.cuts.push((i, target));
            }
        }
        Ok(())
    }

    /// Removes every cut.
    pub fn heal(&mut self) -> Result<(), String> {
        let mut first_err = None;
        for (i, target) in std::mem::take(&mut self.cuts) {
            if let Err(e) = ip(&["-n", &self.ns(i), "route", "del", "blackhole", &target]) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for &i in &self.created {
            // The host end first: deleting a namespace should delete its
            // veth pair, but the kernel (or gVisor) may do that late.
            let _ = ip(&["link", "del", &format!("{}v{i}", self.tag)]);
            let _ = ip(&["netns", "del", &self.ns(i)]);
            if let Some(dir) = self.hosts_path(i).parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        if self.bridge {
            let _ = ip(&["link", "del", &self.bridge_name()]);
        }
        if self.host_route {
            let _ = ip(&[
                "route",
                "del",
                "blackhole",
                &format!("{}.0/24", self.prefix),
                "metric",
                "4000",
            ]);
        }
    }
}
