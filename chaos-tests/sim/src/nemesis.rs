//! The nemesis: one seeded fault at a time, installed, held, then healed,
//! each recorded as `nemesis` start/heal events in the history.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_chaos::history::{NemesisOutcome, NemesisPhase, Targets};
use baton_raft_store::NodeId;
use rand::Rng;

use crate::node;
use crate::world::{NetState, World};

/// A fault being held.
enum Fault {
    Partition,
    Crash(Vec<NodeId>),
    Net,
    Pause,
    /// A node's wall clock stepped; the heal steps it back.
    Clock {
        node: NodeId,
        was_ms: i64,
    },
}

/// Record a nemesis event naming what it hit, so the checker can tell a
/// worker-only fault (which cannot move the leader) from one on nodes.
fn record(w: &mut World, name: &str, phase: NemesisPhase, targets: &Targets, detail: &str) {
    let t = w.now_ms();
    let outcome = match phase {
        NemesisPhase::Start => NemesisOutcome::Installed,
        NemesisPhase::Heal => NemesisOutcome::Healed,
    };
    w.history.nemesis_on(t, name, phase, outcome, targets.clone(), detail);
    w.trace(format_args!("nemesis {name} {phase:?} {detail}"));
}

fn block_between(w: &mut World, a: &BTreeSet<NodeId>, b: &BTreeSet<NodeId>) {
    for x in a {
        for y in b {
            w.net.blocked.insert((*x, *y));
            w.net.blocked.insert((*y, *x));
        }
    }
}

/// Install one random fault; returns its name, what heals it, what it hit and a description.
fn install(w: &mut World) -> Option<(&'static str, Fault, Targets, String)> {
    let n = w.cfg.nodes as NodeId;
    let all: BTreeSet<NodeId> = (1..=n).collect();
    let leader = w.leader();
    let kind = w.range(0, 99);
    Some(match kind {
        0..=12 => {
            // Random halves: a minority side of 1..=n/2 nodes.
            let size = w.range(1, n / 2);
            let mut minority = BTreeSet::new();
            while minority.len() < size as usize {
                minority.insert(w.range(1, n));
            }
            let majority: BTreeSet<NodeId> = all.difference(&minority).copied().collect();
            block_between(w, &minority, &majority);
            w.stats.partitions += 1;
            let detail = format!("{minority:?} | {majority:?}");
            ("partition-halves", Fault::Partition, Targets::nodes(all.iter().copied()), detail)
        }
        13..=25 => {
            let l = leader.unwrap_or(1);
            let rest: BTreeSet<NodeId> = all.iter().copied().filter(|x| *x != l).collect();
            block_between(w, &BTreeSet::from([l]), &rest);
            w.stats.partitions += 1;
            ("isolate-leader", Fault::Partition, Targets::nodes(all.iter().copied()), format!("n{l} alone"))
        }
        26..=35 => {
            // One-way: the leader's outbound links are cut (it hears everyone,
            // nobody hears it), or one node stops receiving from another.
            let (hit, detail) = if w.chance(500) {
                let l = leader.unwrap_or(1);
                for x in all.iter().filter(|x| **x != l) {
                    w.net.blocked.insert((l, *x));
                }
                (Targets::nodes(all.iter().copied()), format!("n{l} -> * blocked"))
            } else {
                let a = w.range(1, n);
                let b = w.other_node(a);
                w.net.blocked.insert((a, b));
                (Targets::nodes([a.min(b), a.max(b)]), format!("n{a} -> n{b} blocked"))
            };
            w.stats.partitions += 1;
            ("partition-one-way", Fault::Partition, hit, detail)
        }
        36..=55 => {
            let down = w.nodes.values().filter(|s| s.run.is_none()).count();
            if down >= (n as usize - 1) / 2 {
                return None;
            }
            // Prefer a node caught with unsynced writes (see `run`), else often the leader.
            let dirty: Vec<NodeId> = w
                .nodes
                .iter()
                .filter(|(_, s)| s.run.is_some() && s.disk.lock().unwrap().pending_len() > 0)
                .map(|(id, _)| *id)
                .collect();
            let target = match leader {
                _ if !dirty.is_empty() && w.chance(700) => dirty[w.range(0, dirty.len() as u64 - 1) as usize],
                Some(l) if w.chance(600) => l,
                _ => w.range(1, n),
            };
            if !node::crash(w, target) {
                return None;
            }
            ("crash", Fault::Crash(vec![target]), Targets::nodes([target]), format!("n{target}"))
        }
        56..=62 => {
            // Power loss: every node at once.
            let mut crashed = Vec::new();
            for id in 1..=n {
                if node::crash(w, id) {
                    crashed.push(id);
                }
            }
            let hit = Targets::nodes(crashed.iter().copied());
            ("power-loss", Fault::Crash(crashed), hit, "all nodes".into())
        }
        63..=72 => {
            w.net.drop_per_mille = w.range(50, 300) as u32;
            let detail = format!("{} per mille", w.net.drop_per_mille);
            ("drop", Fault::Net, Targets::nodes(all.iter().copied()), detail)
        }
        73..=82 => {
            // Up to 45 ms one way: replies overtake each other, and some
            // round trips exceed openraft's heartbeat-interval RPC timeout.
            let hi = w.range(15, 45);
            w.net.delay_ms = (1, hi);
            ("delay", Fault::Net, Targets::nodes(all.iter().copied()), format!("1..={hi} ms"))
        }
        83..=89 => {
            // A wall clock steps (a bad NTP step, a VM resuming), often the
            // leader's: forward, its stamps move log time ahead for good and
            // later leaders trail the log; backward, it trails the log now.
            let target = match leader {
                Some(l) if w.chance(600) => l,
                _ => w.range(1, n),
            };
            let m = w.cfg.max_skew_ms.max(1) as i64;
            let step = w.rng.random_range(-m..=m);
            let slot = w.nodes.get_mut(&target).expect("node exists");
            let was_ms = slot.skew_ms;
            slot.skew_ms = was_ms + step;
            w.stats.clock_jumps += 1;
            let detail = format!("n{target} {step:+} ms");
            ("clock-jump", Fault::Clock { node: target, was_ms }, Targets::nodes([target]), detail)
        }
        _ => {
            // A worker pauses (GC, SIGSTOP) while holding an attempt, past its lease.
            let now = w.now_ms();
            let holders: Vec<usize> = (0..w.workers.len())
                .filter(|i| w.workers[*i].attempts.values().any(|a| !a.reporting) && w.workers[*i].paused_until <= now)
                .collect();
            if holders.is_empty() {
                return None;
            }
            let i = holders[w.range(0, holders.len() as u64 - 1) as usize];
            let pause = w.cfg.ttl_ms + w.range(800, 3_000);
            w.workers[i].paused_until = now + pause;
            w.workers[i].zombie =
                w.workers[i].attempts.iter().filter(|(_, a)| !a.reporting).map(|(k, a)| (*k, a.token)).collect();
            w.stats.pauses += 1;
            let name = w.workers[i].name.clone();
            let detail = format!("{name} for {pause} ms");
            ("pause-worker", Fault::Pause, Targets::workers([name]), detail)
        }
    })
}

async fn heal(world: &Arc<Mutex<World>>, name: &str, fault: Fault, targets: &Targets, detail: &str) {
    match fault {
        Fault::Partition => world.lock().unwrap().net.blocked.clear(),
        Fault::Net => {
            let mut w = world.lock().unwrap();
            w.net.drop_per_mille = 0;
            w.net.delay_ms = NetState::CALM_DELAY;
        }
        Fault::Crash(nodes) => {
            for id in nodes {
                node::start(world, id).await;
            }
        }
        // The pause ends by itself; the heal event marks the end of the fault window.
        Fault::Pause => {}
        Fault::Clock { node, was_ms } => {
            world.lock().unwrap().nodes.get_mut(&node).expect("node exists").skew_ms = was_ms
        }
    }
    record(&mut world.lock().unwrap(), name, NemesisPhase::Heal, targets, detail);
}

/// Run `steps` faults, one after another.
pub async fn run(world: Arc<Mutex<World>>, steps: usize) {
    for _ in 0..steps {
        let (gap, hunt) = {
            let mut w = world.lock().unwrap();
            (w.range(200, 1_200), w.chance(500))
        };
        tokio::time::sleep(Duration::from_millis(gap)).await;
        if hunt {
            // Wait (up to 300 ms) for a moment when some node has written but
            // not yet synced, so that a crash now can lose unsynced writes.
            for _ in 0..300 {
                let dirty = world
                    .lock()
                    .unwrap()
                    .nodes
                    .values()
                    .any(|s| s.run.is_some() && s.disk.lock().unwrap().pending_len() > 0);
                if dirty {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let installed = {
            let mut w = world.lock().unwrap();
            let f = install(&mut w);
            if let Some((name, _, targets, detail)) = &f {
                let (targets, detail) = (targets.clone(), detail.clone());
                record(&mut w, name, NemesisPhase::Start, &targets, &detail);
            }
            f
        };
        let Some((name, fault, targets, detail)) = installed else { continue };
        let hold = {
            let mut w = world.lock().unwrap();
            match fault {
                Fault::Crash(_) => w.range(50, 1_500),
                Fault::Pause => w.workers.iter().map(|x| x.paused_until).max().unwrap_or(0).saturating_sub(w.now_ms()),
                _ => w.range(300, 3_000),
            }
        };
        tokio::time::sleep(Duration::from_millis(hold)).await;
        heal(&world, name, fault, &targets, &detail).await;
    }
}

/// End every fault: links open, calm network, every node up, no worker paused.
pub async fn heal_all(world: &Arc<Mutex<World>>) {
    let down: Vec<NodeId> = {
        let mut w = world.lock().unwrap();
        w.net = NetState::calm();
        let now = w.now_ms();
        for ws in &mut w.workers {
            ws.paused_until = ws.paused_until.min(now);
        }
        w.nodes.iter().filter(|(_, s)| s.run.is_none()).map(|(id, _)| *id).collect()
    };
    for id in down {
        node::start(world, id).await;
    }
    let all = Targets::nodes(1..=world.lock().unwrap().cfg.nodes as NodeId);
    record(&mut world.lock().unwrap(), "heal-all", NemesisPhase::Heal, &all, "every fault removed");
}
