//! A local cluster of real `baton serve` processes, each with its own data
//! dir, plus the chaos worker processes, all owned by the harness.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use baton_client::{Client, ClientConfig};

use super::net::Net;
use super::secure::{Role, Secure};

/// Worker lease and checks used by chaos clusters: short, so that a run sees
/// many expiries and reassignments in a minute.
pub const WORKER_TTL_MS: u64 = 1_500;
/// Heartbeat interval the cluster asks workers for.
pub const WORKER_HEARTBEAT_MS: u64 = 300;
/// How often the leader checks leases.
pub const WORKER_CHECK_MS: u64 = 100;
/// Raft election timeout range passed to every node (the coordinator's
/// defaults, set explicitly so that the history's `config` event states
/// what the nodes ran with).
pub const RAFT_ELECTION_TIMEOUT_MIN_MS: u64 = 80;
/// See [`RAFT_ELECTION_TIMEOUT_MIN_MS`].
pub const RAFT_ELECTION_TIMEOUT_MAX_MS: u64 = 120;

/// The `baton` binary: `$BATON_BIN`, or next to this executable (cargo puts
/// every workspace binary in the same target dir).
pub fn baton_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("BATON_BIN") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(2) {
        let p = dir.join("baton");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "no `baton` binary next to {}: run `cargo build -p baton-coordinator --bin baton` or set BATON_BIN",
        exe.display()
    )
}

/// A node's process state as the nemesis left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Running normally.
    Running,
    /// Stopped with SIGSTOP.
    Paused,
    /// Killed or stopped; not running.
    Down,
}

/// Builds the command that starts the worker of a given name.
type WorkerCommand = Box<dyn Fn(&str) -> Command + Send>;

/// The nodes, the workers and the network.
pub struct LocalCluster {
    /// Data dirs and logs of every process.
    pub dir: PathBuf,
    /// Where the nodes live, and the partition controls.
    pub net: Net,
    bin: PathBuf,
    nodes: BTreeMap<u64, (Option<Child>, NodeState)>,
    initial: String,
    workers: BTreeMap<String, (Option<Child>, NodeState)>,
    worker_cmd: Option<WorkerCommand>,
    /// TLS and tokens, in a `--secure` run.
    secure: Option<Secure>,
}

impl LocalCluster {
    /// Start `n` voters (ids 1..=n) in `dir`, on `net`; with `secure`, with
    /// TLS and `[auth]` on.
    pub fn start(dir: &Path, mut net: Net, n: u64, secure: Option<Secure>) -> Result<LocalCluster> {
        let bin = baton_bin()?;
        let mut members = Vec::new();
        for id in 1..=n {
            let a = net.add_node(id)?;
            members.push(format!("{id}={}/{}", a.raft_addr(), a.api_addr()));
        }
        let mut c = LocalCluster {
            dir: dir.to_owned(),
            net,
            bin,
            nodes: BTreeMap::new(),
            initial: members.join(","),
            workers: BTreeMap::new(),
            worker_cmd: None,
            secure,
        };
        for id in 1..=n {
            c.spawn_node(id, true)?;
        }
        Ok(c)
    }

    /// Start (or restart) node `id`; `initial` passes the founding members.
    pub fn spawn_node(&mut self, id: u64, initial: bool) -> Result<()> {
        let a = self.net.add_node(id)?;
        let log = OpenOptions::new().create(true).append(true).open(self.dir.join(format!("node{id}.log")))?;
        let mut cmd = match &a.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.args(["serve", "--node-id", &id.to_string()])
            .arg("--data-dir")
            .arg(self.dir.join(format!("node{id}")))
            .args(["--raft-listen", &a.raft_addr(), "--api-listen", &a.api_addr(), "--http-listen", &a.http_addr()])
            .args(["--worker-ttl-ms", &WORKER_TTL_MS.to_string()])
            .args(["--worker-heartbeat-ms", &WORKER_HEARTBEAT_MS.to_string()])
            .args(["--worker-check-ms", &WORKER_CHECK_MS.to_string()])
            .env("BATON_RAFT__ELECTION_TIMEOUT_MIN_MS", RAFT_ELECTION_TIMEOUT_MIN_MS.to_string())
            .env("BATON_RAFT__ELECTION_TIMEOUT_MAX_MS", RAFT_ELECTION_TIMEOUT_MAX_MS.to_string())
            .env("BATON_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if initial {
            cmd.args(["--initial-members", &self.initial]);
        }
        if let Some(s) = &self.secure {
            cmd.args(s.serve_args(id)?);
        }
        let child = cmd.spawn().with_context(|| format!("spawn node {id}"))?;
        self.nodes.insert(id, (Some(child), NodeState::Running));
        Ok(())
    }

    /// The ids of every node ever started.
    pub fn node_ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// What the nemesis last did to node `id`.
    pub fn node_state(&self, id: u64) -> NodeState {
        self.nodes.get(&id).map_or(NodeState::Down, |n| n.1)
    }

    /// `http://host:port` (`https://` in a secure run) of node `id`'s public API.
    pub fn endpoint(&self, id: u64) -> String {
        let scheme = if self.secure.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.net.addr(id).api_addr())
    }

    /// The run's TLS and tokens, if it is secure.
    pub fn secure(&self) -> Option<&Secure> {
        self.secure.as_ref()
    }

    /// A client configuration over `ids`' endpoints, with TLS and `role`'s
    /// token in a secure run.
    pub fn client_config(&self, ids: &[u64], role: Role) -> Result<ClientConfig> {
        let cfg = ClientConfig::new(ids.iter().map(|id| self.endpoint(*id)));
        match &self.secure {
            Some(s) => s.apply(cfg, role),
            None => Ok(cfg),
        }
    }

    /// A client over the founding nodes' endpoints, as `role`.
    pub fn client_as(&self, ids: &[u64], role: Role) -> Result<Client> {
        let mut cfg = self.client_config(ids, role)?;
        cfg.rpc_timeout = Duration::from_secs(2);
        Ok(Client::new(cfg)?)
    }

    /// The harness's own client over the founding nodes' endpoints.
    pub fn client(&self, ids: &[u64]) -> Result<Client> {
        self.client_as(ids, Role::Admin)
    }

    fn signal(child: &Child, sig: i32) {
        // SAFETY: sending a signal to a child we own.
        unsafe { libc::kill(child.id() as i32, sig) };
    }

    /// SIGKILL node `id`.
    pub fn kill(&mut self, id: u64) {
        if let Some((Some(mut c), st)) = self.nodes.remove(&id) {
            if st == NodeState::Paused {
                Self::signal(&c, libc::SIGCONT);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.nodes.insert(id, (None, NodeState::Down));
    }

    /// SIGTERM node `id` and wait for it to exit (a clean shutdown).
    pub fn stop(&mut self, id: u64) {
        if let Some((Some(mut c), _)) = self.nodes.remove(&id) {
            Self::signal(&c, libc::SIGCONT);
            Self::signal(&c, libc::SIGTERM);
            for _ in 0..100 {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.nodes.insert(id, (None, NodeState::Down));
    }

    /// Restart node `id` if it is down.
    pub fn restart(&mut self, id: u64) -> Result<()> {
        if self.node_state(id) == NodeState::Down { self.spawn_node(id, false) } else { Ok(()) }
    }

    /// SIGSTOP node `id`.
    pub fn pause(&mut self, id: u64) {
        if let Some((Some(c), st)) = self.nodes.get_mut(&id) {
            Self::signal(c, libc::SIGSTOP);
            *st = NodeState::Paused;
        }
    }

    /// SIGCONT node `id`.
    pub fn resume(&mut self, id: u64) {
        if let Some((Some(c), st)) = self.nodes.get_mut(&id) {
            Self::signal(c, libc::SIGCONT);
            *st = NodeState::Running;
        }
    }

    /// How worker processes are launched: `f(name)` returns the command.
    pub fn set_worker_command(&mut self, f: impl Fn(&str) -> Command + Send + 'static) {
        self.worker_cmd = Some(Box::new(f));
    }

    /// Start (or restart) the worker `name`.
    pub fn spawn_worker(&mut self, name: &str) -> Result<()> {
        let f = self.worker_cmd.as_ref().context("no worker command set")?;
        let log = OpenOptions::new().create(true).append(true).open(self.dir.join(format!("{name}.log")))?;
        let child = f(name).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn()?;
        self.workers.insert(name.to_string(), (Some(child), NodeState::Running));
        Ok(())
    }

    /// Every worker ever started.
    pub fn worker_names(&self) -> Vec<String> {
        self.workers.keys().cloned().collect()
    }

    /// What the nemesis last did to worker `name`.
    pub fn worker_state(&self, name: &str) -> NodeState {
        self.workers.get(name).map_or(NodeState::Down, |w| w.1)
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) a worker.
    pub fn pause_worker(&mut self, name: &str, pause: bool) {
        if let Some((Some(c), st)) = self.workers.get_mut(name) {
            Self::signal(c, if pause { libc::SIGSTOP } else { libc::SIGCONT });
            *st = if pause { NodeState::Paused } else { NodeState::Running };
        }
    }

    /// SIGKILL a worker.
    pub fn kill_worker(&mut self, name: &str) {
        if let Some((Some(mut c), _)) = self.workers.remove(name) {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.workers.insert(name.to_string(), (None, NodeState::Down));
    }

    /// Put every process back to running and every link back up.
    pub fn heal_all(&mut self) -> Result<()> {
        self.net.heal()?;
        let paused: Vec<u64> = self.nodes.iter().filter(|n| n.1.1 == NodeState::Paused).map(|n| *n.0).collect();
        for id in paused {
            self.resume(id);
        }
        let paused: Vec<String> =
            self.workers.iter().filter(|w| w.1.1 == NodeState::Paused).map(|w| w.0.clone()).collect();
        for w in paused {
            self.pause_worker(&w, false);
        }
        Ok(())
    }

    /// Current leader as seen by the live nodes in `ids` (majority answer).
    pub async fn leader(&self, client: &Client, ids: &[u64]) -> Option<u64> {
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for id in ids {
            if self.node_state(*id) != NodeState::Running {
                continue;
            }
            if let Ok(s) = client.status(Some(&self.endpoint(*id))).await
                && s.leader_id != 0
            {
                *votes.entry(s.leader_id).or_default() += 1;
            }
        }
        votes.into_iter().max_by_key(|v| v.1).map(|v| v.0)
    }

    /// Wait until the nodes in `ids` that are running agree on a leader.
    pub async fn wait_leader(&self, client: &Client, ids: &[u64], within: Duration) -> Result<u64> {
        let until = tokio::time::Instant::now() + within;
        loop {
            let mut seen = BTreeSet::new();
            let mut answered = 0;
            for id in ids {
                if self.node_state(*id) != NodeState::Running {
                    continue;
                }
                if let Ok(s) = client.status(Some(&self.endpoint(*id))).await {
                    answered += 1;
                    seen.insert(s.leader_id);
                }
            }
            if answered > 0 && seen.len() == 1 && !seen.contains(&0) {
                return Ok(seen.into_iter().next().unwrap_or(0));
            }
            if tokio::time::Instant::now() > until {
                bail!("no agreed leader among {ids:?} within {within:?} (saw {seen:?})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stop everything.
    pub fn shutdown(&mut self) {
        let names = self.worker_names();
        for w in names {
            self.kill_worker(&w);
        }
        for id in self.node_ids() {
            self.kill(id);
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}
