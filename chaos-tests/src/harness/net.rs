//! Where the nodes live on the network, and how the nemesis cuts links.
//!
//! With root (CAP_NET_ADMIN) every node runs in its own network namespace
//! with its own address on a private bridge, so a partition is a pair of
//! iptables DROP rules inside the namespaces involved: the real kernel path,
//! with TCP seeing silence rather than resets, as it would across a switch.
//! The harness, the workers and the submitters stay in the root namespace and
//! reach every node through the bridge; partitions only cut node-to-node
//! links, so a client can still talk to a minority-side leader.
//!
//! Without root the nodes share 127.0.0.1 on distinct ports; process faults
//! (kill, pause) still work, and partitions are reported as unsupported.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail};

/// Ports every node uses on its own address (namespace mode).
const RAFT_PORT: u16 = 7100;
const API_PORT: u16 = 7101;
const HTTP_PORT: u16 = 7102;

/// One node's addresses.
#[derive(Debug, Clone)]
pub struct NodeAddr {
    /// The address the node binds and advertises.
    pub ip: String,
    /// Raft (internal) port.
    pub raft: u16,
    /// Public gRPC port.
    pub api: u16,
    /// Metrics and health port.
    pub http: u16,
    /// The namespace to run the node in, if any.
    pub netns: Option<String>,
}

impl NodeAddr {
    /// `host:port` of the Raft service.
    pub fn raft_addr(&self) -> String {
        format!("{}:{}", self.ip, self.raft)
    }
    /// `host:port` of the public API.
    pub fn api_addr(&self) -> String {
        format!("{}:{}", self.ip, self.api)
    }
    /// `host:port` of the HTTP endpoints.
    pub fn http_addr(&self) -> String {
        format!("{}:{}", self.ip, self.http)
    }
}

/// The test network: namespaces and a bridge, or plain loopback.
pub struct Net {
    tag: String,
    subnet: u8,
    namespaced: bool,
    nodes: BTreeMap<u64, NodeAddr>,
    /// Directed links currently dropped: (from, to).
    cut: BTreeSet<(u64, u64)>,
}

fn run(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0]).args(&args[1..]).output().with_context(|| format!("cannot run {}", args[0]))?;
    if !out.status.success() {
        bail!("`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Why namespaces cannot be used here, or `None` if they can.
pub fn namespaces_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("partitions need root (network namespaces and iptables); run as root".into());
    }
    for tool in ["ip", "iptables"] {
        if Command::new(tool).arg("-V").output().is_err() && Command::new(tool).arg("--version").output().is_err() {
            return Some(format!("`{tool}` is not installed (Debian: iproute2, iptables)"));
        }
    }
    None
}

/// Loopback ports handed to nodes. They sit below Linux's ephemeral range
/// (32768-60999 by default): a port from `bind(0)` is ephemeral, and between
/// the probe and the node's own bind the kernel may give it to an outgoing
/// connection (a worker's, a submitter's) as its source port, so the node
/// fails to start and the run sees no leader. Disjoint from the coordinator
/// test suite's 20000-32000, so both can run at once.
const LOOPBACK_PORTS: std::ops::Range<u16> = 10_000..20_000;

/// A loopback port that is free now and was not handed out before by this
/// process: the next candidate from a per-process offset, checked by binding.
fn free_port() -> Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(LOOPBACK_PORTS.end - LOOPBACK_PORTS.start);
    let offset = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOOPBACK_PORTS.start + ((offset + n) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port in {LOOPBACK_PORTS:?}")
}

impl Net {
    /// A loopback network: no partitions.
    pub fn loopback() -> Net {
        Net { tag: String::new(), subnet: 0, namespaced: false, nodes: BTreeMap::new(), cut: BTreeSet::new() }
    }

    /// A bridge with one namespace per node. Stale objects of an earlier,
    /// crashed run with the same tag are removed first.
    pub fn namespaces() -> Result<Net> {
        let pid = std::process::id();
        let net = Net {
            tag: format!("bc{}", pid % 100_000),
            subnet: (pid % 200) as u8 + 20,
            namespaced: true,
            nodes: BTreeMap::new(),
            cut: BTreeSet::new(),
        };
        net.teardown();
        let br = net.bridge();
        run(&["ip", "link", "add", &br, "type", "bridge"])?;
        run(&["ip", "addr", "add", &format!("10.{}.0.1/24", net.subnet), "dev", &br])?;
        run(&["ip", "link", "set", &br, "up"])?;
        // Docker's br_netfilter sends bridged frames through FORWARD, whose
        // policy it sets to DROP; let our bridge's own traffic through.
        run(&["iptables", "-I", "FORWARD", "-i", &br, "-o", &br, "-j", "ACCEPT"])?;
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }

    fn ns(&self, id: u64) -> String {
        format!("{}n{id}", self.tag)
    }

    /// Whether partitions can be installed.
    pub fn can_partition(&self) -> bool {
        self.namespaced
    }

    /// The client-side address of the harness on this network.
    pub fn describe(&self) -> String {
        if self.namespaced {
            format!("network namespaces on bridge {} (10.{}.0.0/24)", self.bridge(), self.subnet)
        } else {
            "loopback (no partitions)".into()
        }
    }

    /// The IP address node `id` has, or will have once added: what its
    /// TLS certificate must name.
    pub fn ip_of(&self, id: u64) -> String {
        if self.namespaced { format!("10.{}.0.{}", self.subnet, 10 + id) } else { "127.0.0.1".into() }
    }

    /// Create node `id`'s place on the network (idempotent).
    pub fn add_node(&mut self, id: u64) -> Result<NodeAddr> {
        if let Some(a) = self.nodes.get(&id) {
            return Ok(a.clone());
        }
        let addr = if self.namespaced {
            let ns = self.ns(id);
            let veth = format!("{}v{id}", self.tag);
            let ip = self.ip_of(id);
            run(&["ip", "netns", "add", &ns])?;
            run(&["ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            run(&["ip", "link", "set", &veth, "master", &self.bridge(), "up"])?;
            run(&["ip", "-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            NodeAddr { ip, raft: RAFT_PORT, api: API_PORT, http: HTTP_PORT, netns: Some(ns) }
        } else {
            NodeAddr { ip: "127.0.0.1".into(), raft: free_port()?, api: free_port()?, http: free_port()?, netns: None }
        };
        self.nodes.insert(id, addr.clone());
        Ok(addr)
    }

    /// Node `id`'s addresses.
    pub fn addr(&self, id: u64) -> &NodeAddr {
        &self.nodes[&id]
    }

    /// Drop every packet from `from` to `to` (one direction).
    pub fn drop_link(&mut self, from: u64, to: u64) -> Result<()> {
        if !self.namespaced {
            return Err(anyhow!("partitions need network namespaces"));
        }
        if self.cut.insert((from, to)) {
            let src = self.nodes[&from].ip.clone();
            run(&["ip", "netns", "exec", &self.ns(to), "iptables", "-A", "INPUT", "-s", &src, "-j", "DROP"])?;
        }
        Ok(())
    }

    /// Cut every link between `a` and `b`, both directions.
    pub fn cut(&mut self, a: u64, b: u64) -> Result<()> {
        self.drop_link(a, b)?;
        self.drop_link(b, a)
    }

    /// Install a topology: each node reaches exactly the nodes in its set
    /// (and itself); every other link among `nodes` is cut.
    pub fn install(&mut self, reach: &BTreeMap<u64, BTreeSet<u64>>) -> Result<()> {
        for (&a, sees) in reach {
            for &b in reach.keys() {
                if a != b && !sees.contains(&b) {
                    self.drop_link(b, a)?;
                }
            }
        }
        Ok(())
    }

    /// The directed links currently cut.
    pub fn cut_links(&self) -> &BTreeSet<(u64, u64)> {
        &self.cut
    }

    /// Restore every link.
    pub fn heal(&mut self) -> Result<()> {
        let targets: BTreeSet<u64> = self.cut.iter().map(|&(_, to)| to).collect();
        for to in targets {
            run(&["ip", "netns", "exec", &self.ns(to), "iptables", "-F", "INPUT"])?;
        }
        self.cut.clear();
        Ok(())
    }

    /// Remove everything this network created; errors are ignored because
    /// it also runs on objects that may not exist.
    pub fn teardown(&self) {
        if !self.namespaced {
            return;
        }
        let quiet = |args: &[&str]| {
            let _ = Command::new(args[0]).args(&args[1..]).output();
        };
        for id in 1..=9 {
            quiet(&["ip", "netns", "del", &self.ns(id)]);
        }
        let br = self.bridge();
        quiet(&["iptables", "-D", "FORWARD", "-i", &br, "-o", &br, "-j", "ACCEPT"]);
        quiet(&["ip", "link", "del", &br]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's ephemeral port range, from which it picks the source
    /// ports of outgoing connections.
    fn ephemeral_range() -> std::ops::RangeInclusive<u16> {
        let s = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
        let mut it = s.split_whitespace().map(|p| p.parse::<u16>().unwrap());
        it.next().unwrap()..=it.next().unwrap()
    }

    #[test]
    fn node_ports_are_outside_the_ephemeral_range_and_never_repeat() {
        let eph = ephemeral_range();
        let mut seen = BTreeSet::new();
        for _ in 0..200 {
            let p = free_port().unwrap();
            assert!(!eph.contains(&p), "port {p} is in the ephemeral range {eph:?}");
            assert!(seen.insert(p), "port {p} handed out twice");
        }
    }
}
