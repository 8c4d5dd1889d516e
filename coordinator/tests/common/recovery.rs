//! Helpers for the identity, backup and recovery tests: clusters started
//! node by node, the `baton` CLI as a process, submitters that record what
//! was acknowledged, and growing a cluster with the operator commands.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_client::proto;

use super::{BIN, Cluster, Opts, Ports, free_port, spec};

/// What a `baton` CLI run printed.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The JSON it printed (`--json` runs).
    pub fn json(&self) -> serde_json::Value {
        assert!(self.ok, "command failed: {self:?}");
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// Run the `baton` binary to completion.
pub async fn baton(args: &[&str]) -> Run {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .env("BATON_LOG", "warn")
        .env_remove("BATON_ENDPOINTS")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run baton");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Cluster {
    /// A cluster with no node running and no initial members: nodes are
    /// started with `spawn(id, false)` (ports are drawn then).
    pub fn empty(opts: Opts) -> Cluster {
        Cluster {
            dir: tempfile::tempdir().unwrap(),
            opts,
            ports: BTreeMap::new(),
            procs: BTreeMap::new(),
            initial: String::new(),
            tls: None,
        }
    }

    /// Draw ports for node `id` without starting it.
    pub fn reserve(&mut self, id: u64) {
        self.ports.entry(id).or_insert_with(|| Ports { raft: free_port(), api: free_port(), http: free_port() });
    }

    pub fn raft_addr(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.ports[&id].raft)
    }

    pub fn api_addr(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.ports[&id].api)
    }

    /// The live nodes' API addresses, for `--endpoints`.
    pub fn endpoints_arg(&self) -> String {
        self.live().iter().map(|id| self.api_addr(*id)).collect::<Vec<_>>().join(",")
    }

    /// Start nodes `new` empty, add them with `baton cluster add-node` and
    /// make `voters` the voters with `baton cluster promote`.
    pub async fn grow(&mut self, new: &[u64], voters: &[u64]) {
        for &id in new {
            self.spawn(id, false);
        }
        for &id in new {
            let (raft, api) = (self.raft_addr(id), self.api_addr(id));
            let r = baton(&[
                "--endpoints",
                &self.endpoints_arg(),
                "--timeout-secs",
                "60",
                "cluster",
                "add-node",
                "--id",
                &id.to_string(),
                "--raft-addr",
                &raft,
                "--api-addr",
                &api,
            ])
            .await;
            assert!(r.ok, "add-node {id}: {r:?}\n{}", self.logs());
        }
        let list = voters.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        let r = baton(&[
            "--endpoints",
            &self.endpoints_arg(),
            "--timeout-secs",
            "60",
            "cluster",
            "promote",
            "--voters",
            &list,
        ])
        .await;
        assert!(r.ok, "promote {list}: {r:?}\n{}", self.logs());
    }

    /// Wait until node `id`'s log contains `text`.
    pub async fn wait_log(&self, id: u64, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = std::fs::read_to_string(self.dir.path().join(format!("node{id}.log"))).unwrap_or_default();
            if let Some(line) = log.lines().find(|l| l.contains(text)) {
                return line.to_string();
            }
            assert!(Instant::now() < deadline, "node {id} never logged {text:?}\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Jobs acknowledged by [`Submitters`], with when.
pub type Acked = Arc<Mutex<Vec<(u64, Instant)>>>;

/// Tasks submitting one-shard jobs through any node of a cluster, each job
/// retried with its idempotency key until acknowledged or told to stop.
pub struct Submitters {
    pub acked: Acked,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Submitters {
    pub fn start(c: &Cluster, n: usize, namespace: &str) -> Submitters {
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Acked = Arc::default();
        let apis: Vec<String> = c.ports.values().map(|p| format!("http://127.0.0.1:{}", p.api)).collect();
        let tasks = (0..n)
            .map(|s| {
                let (stop, acked, apis, ns) = (stop.clone(), acked.clone(), apis.clone(), namespace.to_string());
                tokio::spawn(async move {
                    let mut k = 0usize;
                    'jobs: while !stop.load(Ordering::SeqCst) {
                        k += 1;
                        let key = format!("{ns}-s{s}-{k}");
                        let mut i = k;
                        loop {
                            if stop.load(Ordering::SeqCst) {
                                break 'jobs;
                            }
                            let ch = tonic::transport::Endpoint::from_shared(apis[i % apis.len()].clone())
                                .unwrap()
                                .timeout(Duration::from_secs(3))
                                .connect_timeout(Duration::from_millis(200))
                                .connect_lazy();
                            i += 1;
                            let mut client = proto::job_service_client::JobServiceClient::new(ch);
                            let req = proto::SubmitJobRequest { spec: Some(spec(&ns, 1, &key)) };
                            match client.submit_job(req).await {
                                Ok(r) => {
                                    acked.lock().unwrap().push((r.into_inner().job_id, Instant::now()));
                                    continue 'jobs;
                                }
                                Err(_) => tokio::time::sleep(Duration::from_millis(30)).await,
                            }
                        }
                    }
                })
            })
            .collect();
        Submitters { acked, stop, tasks }
    }

    pub fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Wait until at least `n` jobs are acknowledged in all.
    pub async fn wait_acked(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.count() < n {
            assert!(Instant::now() < deadline, "only {} of {n} jobs acknowledged within {timeout:?}", self.count());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stop and wait for every submitter; returns every acknowledged job.
    pub async fn stop(self) -> Vec<(u64, Instant)> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        self.acked.lock().unwrap().clone()
    }
}

/// The node's status, from its own API (no routing).
pub async fn status_of(c: &Cluster, id: u64) -> proto::StatusResponse {
    c.status(id).await.unwrap_or_else(|| panic!("node {id} does not answer Status\n{}", c.logs()))
}

/// Wait until node `id` reports `applied_index >= index`.
pub async fn wait_applied(c: &Cluster, id: u64, index: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if c.status(id).await.is_some_and(|s| s.applied_index >= index) {
            return;
        }
        assert!(Instant::now() < deadline, "node {id} did not apply index {index} within {timeout:?}\n{}", c.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A path as a CLI argument.
pub fn arg(p: &Path) -> String {
    p.display().to_string()
}
