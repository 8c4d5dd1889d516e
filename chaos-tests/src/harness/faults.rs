//! Running faults against the live cluster: inject one, hold it, undo it,
//! and record both ends as `nemesis` events naming their targets.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use baton_client::Client;
use rand::Rng;
use rand::rngs::StdRng;

use super::cluster::{LocalCluster, NodeState, WORKER_TTL_MS};
use super::nemesis::{Fault, pick, topology};
use super::record::{Recorder, mono_us};
use crate::history::{Nemesis, NemesisOutcome, NemesisPhase, Targets};

/// What the nemesis must undo at heal.
pub(super) enum Undo {
    Restart(Vec<u64>),
    Resume(Vec<u64>),
    ResumeWorker(String),
    RestartWorker(String),
    Net,
    Nothing,
    Membership { down: u64, added: Vec<u64> },
}

/// An installed fault: what to undo, what it hit, and a description.
pub(super) struct Injected {
    pub undo: Undo,
    pub targets: Targets,
    pub detail: String,
}

/// The cluster as the nemesis drives it.
pub(super) struct Harness {
    pub cluster: LocalCluster,
    pub client: Client,
    pub rec: Arc<Recorder>,
    pub rng: StdRng,
    pub founders: Vec<u64>,
    pub start_us: u64,
}

impl Harness {
    pub fn now_ms(&self) -> u64 {
        (mono_us() - self.start_us) / 1000
    }

    pub fn nemesis(&self, name: &str, phase: NemesisPhase, outcome: NemesisOutcome, targets: Targets, detail: String) {
        self.rec.record(Nemesis { name: name.into(), phase, outcome, targets, detail });
    }

    async fn leader(&self) -> Option<u64> {
        self.cluster.leader(&self.client, &self.founders).await
    }

    fn running_nodes(&self) -> Vec<u64> {
        self.founders.iter().copied().filter(|id| self.cluster.node_state(*id) == NodeState::Running).collect()
    }

    /// Inject `fault`.
    pub async fn inject(&mut self, fault: Fault) -> Result<Injected> {
        let leader = self.leader().await;
        let done = |undo: Undo, targets: Targets, detail: String| -> Result<Injected> {
            Ok(Injected { undo, targets, detail })
        };
        match fault {
            Fault::KillLeader | Fault::PauseLeader | Fault::PauseThenKill => {
                let l = leader.context("no leader known")?;
                match fault {
                    Fault::KillLeader => {
                        self.cluster.kill(l);
                        done(Undo::Restart(vec![l]), Targets::nodes([l]), format!("node={l}"))
                    }
                    Fault::PauseLeader => {
                        self.cluster.pause(l);
                        done(Undo::Resume(vec![l]), Targets::nodes([l]), format!("node={l}"))
                    }
                    _ => {
                        self.cluster.pause(l);
                        tokio::time::sleep(Duration::from_millis(self.rng.random_range(300..1000))).await;
                        self.cluster.kill(l);
                        done(Undo::Restart(vec![l]), Targets::nodes([l]), format!("node={l} paused then killed"))
                    }
                }
            }
            Fault::KillFollower => {
                let fs: Vec<u64> = self.running_nodes().into_iter().filter(|&x| Some(x) != leader).collect();
                let f = *pick(&fs, 1, &mut self.rng).first().context("no follower running")?;
                self.cluster.kill(f);
                done(Undo::Restart(vec![f]), Targets::nodes([f]), format!("node={f}"))
            }
            Fault::KillMinority => {
                let k = (self.founders.len() - 1) / 2;
                let victims = pick(&self.running_nodes(), k, &mut self.rng);
                for &v in &victims {
                    self.cluster.kill(v);
                }
                let detail = format!("nodes={victims:?}");
                done(Undo::Restart(victims.clone()), Targets::nodes(victims), detail)
            }
            Fault::PauseWorker | Fault::KillWorker => {
                let live: Vec<String> = self
                    .cluster
                    .worker_names()
                    .into_iter()
                    .filter(|w| self.cluster.worker_state(w) == NodeState::Running)
                    .collect();
                let i = *pick(&(0..live.len()).collect::<Vec<_>>(), 1, &mut self.rng)
                    .first()
                    .context("no worker running")?;
                let w = live[i].clone();
                let targets = Targets::workers([w.clone()]);
                if fault == Fault::PauseWorker {
                    self.cluster.pause_worker(&w, true);
                    done(Undo::ResumeWorker(w.clone()), targets, format!("worker={w}"))
                } else {
                    self.cluster.kill_worker(&w);
                    done(Undo::RestartWorker(w.clone()), targets, format!("worker={w}"))
                }
            }
            Fault::PartitionHalves | Fault::IsolateLeader | Fault::MajoritiesRing | Fault::Bridge => {
                let reach = topology(fault, &self.founders, leader.unwrap_or(self.founders[0]), &mut self.rng);
                self.cluster.net.install(&reach)?;
                let shape: Vec<String> = reach.iter().map(|(a, s)| format!("{a}->{s:?}")).collect();
                // Every node that lost a link.
                let cut = reach.iter().filter(|(_, s)| s.len() < self.founders.len()).map(|(a, _)| *a);
                done(Undo::Net, Targets::nodes(cut), shape.join(" "))
            }
            Fault::OneWay => {
                let pair = pick(&self.founders, 2, &mut self.rng);
                // Half the time the leader is the one that cannot be heard.
                let from = match leader {
                    Some(l) if self.rng.random_bool(0.5) => l,
                    _ => pair[0],
                };
                let to = if pair[1] != from { pair[1] } else { pair[0] };
                self.cluster.net.drop_link(from, to)?;
                done(Undo::Net, Targets::nodes([from, to]), format!("drop {from}->{to}"))
            }
            Fault::RollingRestart => {
                for id in self.founders.clone() {
                    self.cluster.stop(id);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    self.cluster.restart(id)?;
                    self.cluster.wait_leader(&self.client, &self.founders, Duration::from_secs(20)).await?;
                }
                let detail = format!("nodes={:?} in turn", self.founders);
                done(Undo::Nothing, Targets::nodes(self.founders.clone()), detail)
            }
            Fault::Membership => {
                let fs: Vec<u64> = self.running_nodes().into_iter().filter(|&x| Some(x) != leader).collect();
                let down = *pick(&fs, 1, &mut self.rng).first().context("no follower running")?;
                self.cluster.kill(down);
                let first_new = self.cluster.node_ids().into_iter().max().unwrap_or(0).max(5) + 1;
                let added = vec![first_new, first_new + 1];
                for &id in &added {
                    self.cluster.spawn_node(id, false)?;
                    let a = self.cluster.net.addr(id).clone();
                    self.client.add_learner(id, &a.raft_addr(), &a.api_addr()).await?;
                }
                let voters: Vec<u64> = self.founders.iter().chain(&added).copied().collect();
                self.client.change_membership(voters.clone()).await?;
                let targets = Targets::nodes(std::iter::once(down).chain(added.iter().copied()));
                done(Undo::Membership { down, added }, targets, format!("node {down} down; voters -> {voters:?}"))
            }
        }
    }

    /// Undo a fault; returns a description.
    pub async fn undo(&mut self, undo: Undo) -> Result<String> {
        match undo {
            Undo::Restart(ids) => {
                for &id in &ids {
                    self.cluster.restart(id)?;
                }
                Ok(format!("restarted {ids:?}"))
            }
            Undo::Resume(ids) => {
                for &id in &ids {
                    self.cluster.resume(id);
                }
                Ok(format!("resumed {ids:?}"))
            }
            Undo::ResumeWorker(w) => {
                self.cluster.pause_worker(&w, false);
                Ok(format!("resumed {w}"))
            }
            Undo::RestartWorker(w) => {
                self.cluster.spawn_worker(&w)?;
                Ok(format!("restarted {w}"))
            }
            Undo::Net => {
                self.cluster.net.heal()?;
                Ok("links restored".into())
            }
            Undo::Nothing => Ok(String::new()),
            Undo::Membership { down, added } => {
                self.cluster.restart(down)?;
                self.client.change_membership(self.founders.clone()).await?;
                for id in &added {
                    self.cluster.stop(*id);
                }
                Ok(format!("node {down} restarted; voters -> {:?}; stopped {added:?}", self.founders))
            }
        }
    }
}

/// How long a fault stays in place, in ms.
pub(super) fn hold_ms(fault: Fault, rng: &mut StdRng) -> u64 {
    match fault {
        // Past the lease, so the worker comes back a zombie.
        Fault::PauseWorker => WORKER_TTL_MS + rng.random_range(500..2_000),
        Fault::RollingRestart | Fault::Membership => rng.random_range(500..1_500),
        _ => rng.random_range(1_500..4_000),
    }
}
