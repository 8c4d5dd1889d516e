//! The faults. Each is seeded, logged on the history's timeline as a `start`
//! and a `heal` event, and undone by [`Nemesis::heal`].
//!
//! The topologies (which node still reaches which) are pure functions,
//! unit-tested below; the harness turns them into iptables rules.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};

/// Every fault the harness can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL the leader; restart it at heal.
    KillLeader,
    /// SIGKILL one follower; restart it at heal.
    KillFollower,
    /// SIGKILL a minority (1 of 3, 2 of 5); restart them at heal.
    KillMinority,
    /// SIGSTOP the leader past the election timeout; SIGCONT at heal.
    PauseLeader,
    /// SIGSTOP the leader, then SIGKILL it while stopped; restart at heal.
    PauseThenKill,
    /// SIGSTOP a worker past its lease TTL, so it comes back a zombie.
    PauseWorker,
    /// SIGKILL a worker; restart it (a new session) at heal.
    KillWorker,
    /// Split the nodes into a majority and a minority.
    PartitionHalves,
    /// Cut the leader off from every other node (clients still reach it).
    IsolateLeader,
    /// Every node sees a majority, no two the same one (5 nodes: a ring).
    MajoritiesRing,
    /// Two halves joined only through one bridge node.
    Bridge,
    /// Packets from one node to another are dropped; the reverse flows.
    OneWay,
    /// Restart every node in turn with SIGTERM, waiting for a leader each time.
    RollingRestart,
    /// Grow the voters 3 -> 5 while a follower is down, then shrink to 3.
    Membership,
}

impl Fault {
    /// Every fault, in documentation order.
    pub const ALL: [Fault; 14] = [
        Fault::KillLeader,
        Fault::KillFollower,
        Fault::KillMinority,
        Fault::PauseLeader,
        Fault::PauseThenKill,
        Fault::PauseWorker,
        Fault::KillWorker,
        Fault::PartitionHalves,
        Fault::IsolateLeader,
        Fault::MajoritiesRing,
        Fault::Bridge,
        Fault::OneWay,
        Fault::RollingRestart,
        Fault::Membership,
    ];

    /// The name used on the command line and in histories.
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillLeader => "kill-leader",
            Fault::KillFollower => "kill-follower",
            Fault::KillMinority => "kill-minority",
            Fault::PauseLeader => "pause-leader",
            Fault::PauseThenKill => "pause-then-kill",
            Fault::PauseWorker => "pause-worker",
            Fault::KillWorker => "kill-worker",
            Fault::PartitionHalves => "partition-halves",
            Fault::IsolateLeader => "isolate-leader",
            Fault::MajoritiesRing => "majorities-ring",
            Fault::Bridge => "bridge",
            Fault::OneWay => "one-way",
            Fault::RollingRestart => "rolling-restart",
            Fault::Membership => "membership",
        }
    }

    /// Whether the fault cuts network links (needs namespaces).
    pub fn needs_network(self) -> bool {
        matches!(
            self,
            Fault::PartitionHalves | Fault::IsolateLeader | Fault::MajoritiesRing | Fault::Bridge | Fault::OneWay
        )
    }

    /// Expand a comma-separated list of fault names and groups: `kill`,
    /// `pause`, `partition`, `zombie`, `restart`, `membership`, `all`.
    pub fn parse_list(s: &str) -> Result<Vec<Fault>, String> {
        let mut out = BTreeSet::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let group: &[Fault] = match part {
                "all" => &Fault::ALL,
                "kill" => &[Fault::KillLeader, Fault::KillFollower, Fault::KillMinority],
                "pause" => &[Fault::PauseLeader, Fault::PauseThenKill],
                "partition" => {
                    &[Fault::PartitionHalves, Fault::IsolateLeader, Fault::MajoritiesRing, Fault::Bridge, Fault::OneWay]
                }
                "zombie" => &[Fault::PauseWorker, Fault::KillWorker],
                "restart" => &[Fault::RollingRestart],
                one => {
                    out.insert(one.parse::<Fault>()?);
                    continue;
                }
            };
            out.extend(group.iter().copied());
        }
        if out.is_empty() {
            return Err("no fault named".into());
        }
        Ok(out.into_iter().collect())
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Fault::ALL.iter().copied().find(|f| f.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
            format!(
                "unknown fault {s:?}; use one of {} or a group (kill, pause, partition, zombie, restart, all)",
                names.join(", ")
            )
        })
    }
}

/// Which node each node still reaches, for a partition fault over `nodes`
/// (sorted) with the current `leader`. Every node reaches itself.
pub fn topology(fault: Fault, nodes: &[u64], leader: u64, rng: &mut impl Rng) -> BTreeMap<u64, BTreeSet<u64>> {
    let all: BTreeSet<u64> = nodes.iter().copied().collect();
    let n = nodes.len();
    let mut shuffled = nodes.to_vec();
    shuffled.shuffle(rng);
    let group_of = |groups: &[BTreeSet<u64>]| -> BTreeMap<u64, BTreeSet<u64>> {
        let mut m = BTreeMap::new();
        for g in groups {
            for &a in g {
                m.insert(a, g.clone());
            }
        }
        m
    };
    match fault {
        Fault::PartitionHalves => {
            let (a, b) = shuffled.split_at(n / 2);
            group_of(&[a.iter().copied().collect(), b.iter().copied().collect()])
        }
        Fault::IsolateLeader => {
            let rest: BTreeSet<u64> = all.iter().copied().filter(|&x| x != leader).collect();
            group_of(&[BTreeSet::from([leader]), rest])
        }
        Fault::MajoritiesRing => {
            // Node i reaches its two ring neighbours: with 5 nodes that is a
            // bare majority for every node, and no two share one. With 3 nodes
            // a symmetric ring cannot do that; one cut link (a bridge) is the
            // closest shape.
            let mut m = BTreeMap::new();
            for (i, &a) in shuffled.iter().enumerate() {
                let sees = BTreeSet::from([a, shuffled[(i + 1) % n], shuffled[(i + n - 1) % n]]);
                m.insert(a, sees);
            }
            if n == 3 {
                m.get_mut(&shuffled[0]).map(|s| s.remove(&shuffled[2]));
                m.get_mut(&shuffled[2]).map(|s| s.remove(&shuffled[0]));
            }
            m
        }
        Fault::Bridge => {
            // The bridge node sees everyone; the two sides see only their
            // own side and the bridge.
            let bridge = shuffled[0];
            let rest = &shuffled[1..];
            let (a, b) = rest.split_at(rest.len() / 2);
            let mut m = BTreeMap::new();
            m.insert(bridge, all.clone());
            for side in [a, b] {
                let mut s: BTreeSet<u64> = side.iter().copied().collect();
                s.insert(bridge);
                for &x in side {
                    m.insert(x, s.clone());
                }
            }
            m
        }
        _ => nodes.iter().map(|&a| (a, all.clone())).collect(),
    }
}

/// Pick `k` distinct items.
pub fn pick<T: Copy>(items: &[T], k: usize, rng: &mut impl Rng) -> Vec<T> {
    items.choose_multiple(rng, k).copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn majority(n: usize) -> usize {
        n / 2 + 1
    }

    fn symmetric(m: &BTreeMap<u64, BTreeSet<u64>>) -> bool {
        m.iter().all(|(a, sees)| sees.iter().all(|b| m[b].contains(a)))
    }

    #[test]
    fn topologies_have_the_promised_shape_for_every_seed() {
        for n in [3usize, 5] {
            let nodes: Vec<u64> = (1..=n as u64).collect();
            for seed in 0..200 {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                let leader = nodes[seed as usize % n];

                let halves = topology(Fault::PartitionHalves, &nodes, leader, &mut rng);
                assert!(symmetric(&halves));
                let sizes: BTreeSet<usize> = halves.values().map(|s| s.len()).collect();
                assert_eq!(sizes, BTreeSet::from([n / 2, n - n / 2]), "halves n={n} seed={seed}");

                let iso = topology(Fault::IsolateLeader, &nodes, leader, &mut rng);
                assert_eq!(iso[&leader], BTreeSet::from([leader]));
                assert!(nodes.iter().filter(|&&x| x != leader).all(|x| iso[x].len() == n - 1));

                let bridge = topology(Fault::Bridge, &nodes, leader, &mut rng);
                assert!(symmetric(&bridge));
                let full: Vec<u64> = bridge.iter().filter(|(_, s)| s.len() == n).map(|(a, _)| *a).collect();
                assert_eq!(full.len(), 1, "exactly one bridge node");
                assert!(bridge.values().filter(|s| s.len() < n).all(|s| s.contains(&full[0])));

                if n == 5 {
                    let ring = topology(Fault::MajoritiesRing, &nodes, leader, &mut rng);
                    assert!(symmetric(&ring));
                    assert!(ring.values().all(|s| s.len() == majority(n)), "each sees a bare majority: {ring:?}");
                    let distinct: BTreeSet<&BTreeSet<u64>> = ring.values().collect();
                    assert_eq!(distinct.len(), n, "no two nodes see the same majority");
                }
            }
        }
    }

    #[test]
    fn fault_lists_parse_names_and_groups_and_refuse_unknown_ones() {
        assert_eq!(Fault::parse_list("kill").unwrap().len(), 3);
        assert_eq!(Fault::parse_list("all").unwrap().len(), Fault::ALL.len());
        assert_eq!(Fault::parse_list("bridge,one-way").unwrap(), vec![Fault::Bridge, Fault::OneWay]);
        let e = Fault::parse_list("partition,meteor").unwrap_err();
        assert!(e.contains("\"meteor\"") && e.contains("kill-leader"), "{e}");
        for f in Fault::ALL {
            assert_eq!(f.name().parse::<Fault>().unwrap(), f);
        }
    }
}
