//! Test harness: real `baton serve` processes on loopback, and a test worker
//! speaking the public session protocol.

#![allow(dead_code)]

pub mod blackhole;
pub mod raw;
pub mod recovery;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_client::proto;
use baton_client::proto::cluster_service_client::ClusterServiceClient;
use baton_client::proto::coordinator_message::Msg as Out;
use baton_client::proto::job_service_client::JobServiceClient;
use baton_client::proto::worker_message::Msg as In;
use baton_client::proto::worker_service_client::WorkerServiceClient;
use tokio::sync::mpsc;
use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_baton");

/// Lowest and one past the highest port the harness hands out: below
/// Linux's ephemeral range (32768..61000 by default). A port taken by binding
/// port 0 is itself ephemeral, so between its release and the node's bind an
/// outgoing connection of another node could take it as its source port (a
/// node then failed to start with "address in use" and the cluster never
/// agreed on a leader). Ports below the range are never chosen that way.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port that is free now and that no other cluster of this process was
/// given: the next candidate from a per-process offset, checked by binding.
fn free_port() -> u16 {
    use std::sync::atomic::AtomicU32;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    // Spread processes (test binaries, benches) over the range.
    let offset = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = TEST_PORTS.start + ((offset + n) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {TEST_PORTS:?}");
}

#[derive(Clone, Debug)]
pub struct Opts {
    pub ttl_ms: u64,
    pub heartbeat_ms: u64,
    pub check_ms: u64,
    pub forward: bool,
    /// Extra environment for every node (e.g. BATON_RAFT__… overrides).
    pub env: Vec<(String, String)>,
    /// A command that runs `baton` for some nodes (e.g. `faketime -f -60s`).
    pub wrap: BTreeMap<u64, Vec<String>>,
    /// Extra flags for every node (e.g. `--config <file>`).
    pub args: Vec<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            ttl_ms: 1_500,
            heartbeat_ms: 300,
            check_ms: 100,
            forward: true,
            env: Vec::new(),
            wrap: BTreeMap::new(),
            args: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub raft: u16,
    pub api: u16,
    pub http: u16,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub opts: Opts,
    pub ports: BTreeMap<u64, Ports>,
    pub procs: BTreeMap<u64, Child>,
    pub initial: String,
    /// TLS settings the harness's own channels use (a TLS cluster's nodes
    /// get theirs through `opts.env`); `None`: plaintext.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

impl Cluster {
    /// Start `n` nodes forming a new cluster.
    pub fn start(n: u64, opts: Opts) -> Cluster {
        let mut c = Cluster {
            dir: tempfile::tempdir().unwrap(),
            opts,
            ports: BTreeMap::new(),
            procs: BTreeMap::new(),
            initial: String::new(),
            tls: None,
        };
        for id in 1..=n {
            c.ports.insert(id, Ports { raft: free_port(), api: free_port(), http: free_port() });
        }
        c.initial = c
            .ports
            .iter()
            .map(|(id, p)| format!("{id}=127.0.0.1:{}/127.0.0.1:{}", p.raft, p.api))
            .collect::<Vec<_>>()
            .join(",");
        for id in 1..=n {
            c.spawn(id, true);
        }
        c
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node{id}"))
    }

    /// Start (or restart) node `id`. Nodes added later get no initial members.
    pub fn spawn(&mut self, id: u64, initial: bool) {
        self.spawn_args(id, initial, &[]);
    }

    /// Start (or restart) node `id` with `extra` flags after the usual ones.
    pub fn spawn_args(&mut self, id: u64, initial: bool, extra: &[&str]) {
        let p =
            *self.ports.entry(id).or_insert_with(|| Ports { raft: free_port(), api: free_port(), http: free_port() });
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node{id}.log")))
            .unwrap();
        let mut cmd = match self.opts.wrap.get(&id) {
            Some(w) => {
                let mut c = Command::new(&w[0]);
                c.args(&w[1..]).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        cmd.args(["serve", "--node-id", &id.to_string()])
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .args(["--raft-listen", &format!("127.0.0.1:{}", p.raft)])
            .args(["--api-listen", &format!("127.0.0.1:{}", p.api)])
            .args(["--http-listen", &format!("127.0.0.1:{}", p.http)])
            .args(["--worker-ttl-ms", &self.opts.ttl_ms.to_string()])
            .args(["--worker-heartbeat-ms", &self.opts.heartbeat_ms.to_string()])
            .args(["--worker-check-ms", &self.opts.check_ms.to_string()])
            .args(["--forward-to-leader", &self.opts.forward.to_string()])
            .env("BATON_LOG", "info,openraft=warn")
            .envs(self.opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log);
        if initial {
            cmd.args(["--initial-members", &self.initial]);
        }
        cmd.args(&self.opts.args);
        cmd.args(extra);
        // A node must not outlive the test that started it: a node left
        // running holds ports and CPU, and skews every later benchmark on
        // the machine. Each node gets its own process group, so killing or
        // pausing it reaches the node under a wrapper that forks (faketime);
        // and the kernel kills it if the spawning thread exits first.
        cmd.process_group(0);
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn baton");
        if let Some(old) = self.procs.insert(id, child) {
            // Restarting a node that still runs: stop the old one too.
            kill_group(old);
        }
    }

    pub fn kill(&mut self, id: u64) {
        if let Some(c) = self.procs.remove(&id) {
            kill_group(c);
        }
    }

    /// Signal node `id`'s process group (the node, and its wrapper if any).
    pub fn signal(&self, id: u64, sig: i32) {
        let pid = self.procs[&id].id() as i32;
        unsafe { libc::kill(-pid, sig) };
    }

    pub fn live(&self) -> Vec<u64> {
        self.procs.keys().copied().collect()
    }

    pub fn api(&self, id: u64) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.ports[&id].api)
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.ports.keys().map(|id| self.api(*id)).collect()
    }

    pub async fn channel(&self, id: u64) -> Channel {
        let mut e = tonic::transport::Endpoint::from_shared(self.api(id)).unwrap();
        if let Some(t) = &self.tls {
            e = e.tls_config(t.clone()).unwrap();
        }
        e.connect_timeout(Duration::from_millis(300)).timeout(Duration::from_secs(5)).connect_lazy()
    }

    pub async fn jobs(&self, id: u64) -> JobServiceClient<Channel> {
        JobServiceClient::new(self.channel(id).await)
    }

    pub async fn cluster(&self, id: u64) -> ClusterServiceClient<Channel> {
        ClusterServiceClient::new(self.channel(id).await)
    }

    pub async fn status(&self, id: u64) -> Option<proto::StatusResponse> {
        let mut c = self.cluster(id).await;
        c.status(proto::StatusRequest::default()).await.ok().map(|r| r.into_inner())
    }

    /// Wait until every live node reports the same leader, which is live.
    pub async fn wait_leader(&self, timeout: Duration) -> u64 {
        self.wait_leader_among(&self.live(), timeout).await
    }

    /// Wait until the given nodes report the same live leader.
    pub async fn wait_leader_among(&self, ids: &[u64], timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            for id in ids.iter().copied() {
                seen.push(self.status(id).await.map(|s| s.leader_id));
            }
            if let Some(Some(l)) = seen.first()
                && *l != 0
                && self.procs.contains_key(l)
                && seen.iter().all(|s| s == &Some(*l))
            {
                return *l;
            }
            assert!(Instant::now() < deadline, "no agreed leader within {timeout:?}: {seen:?}\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Tail of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for id in self.ports.keys() {
            let text = std::fs::read_to_string(self.dir.path().join(format!("node{id}.log"))).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- node {id} ---\n{}\n", lines[lines.len().saturating_sub(15)..].join("\n")));
        }
        out
    }
}

/// Kill a node's whole process group (a wrapper's child too) and reap it.
fn kill_group(mut c: Child) {
    unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
    let _ = c.wait();
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in self.live() {
            self.signal(id, libc::SIGCONT);
            self.kill(id);
        }
    }
}

pub fn spec(ns: &str, shards: u32, key: &str) -> proto::JobSpec {
    proto::JobSpec {
        namespace: ns.into(),
        payloads: (0..shards).map(|i| format!("p{i}").into_bytes()).collect(),
        idempotency_key: key.into(),
        attempt_timeout_ms: 60_000,
        ..Default::default()
    }
}

/// Submit through any live node, retrying (same idempotency key) until acknowledged.
pub async fn submit(c: &Cluster, spec: proto::JobSpec, timeout: Duration) -> proto::SubmitJobResponse {
    let deadline = Instant::now() + timeout;
    let mut i = 0usize;
    loop {
        let live = c.live();
        let id = live[i % live.len()];
        i += 1;
        let mut client = c.jobs(id).await;
        match client.submit_job(proto::SubmitJobRequest { spec: Some(spec.clone()) }).await {
            Ok(r) => return r.into_inner(),
            Err(s) => {
                assert!(
                    matches!(
                        s.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Unknown
                            | tonic::Code::Cancelled
                    ),
                    "unexpected submit error: {s:?}"
                );
                assert!(Instant::now() < deadline, "submit not acknowledged within {timeout:?}: {s:?}\n{}", c.logs());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Read a job from any live node (linearizable), retrying through failover.
pub async fn get_job(c: &Cluster, id: u64, timeout: Duration) -> proto::Job {
    let deadline = Instant::now() + timeout;
    loop {
        for n in c.live() {
            let mut client = c.jobs(n).await;
            match client.get_job(proto::GetJobRequest { job_id: id, consistency: 0 }).await {
                Ok(r) => return r.into_inner(),
                Err(s) if s.code() == tonic::Code::NotFound => panic!("job {id} not found: {s:?}"),
                Err(_) => {}
            }
        }
        assert!(Instant::now() < deadline, "job {id} unreadable within {timeout:?}\n{}", c.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until a job reaches a final status.
pub async fn wait_job_done(c: &Cluster, id: u64, timeout: Duration) -> proto::Job {
    let deadline = Instant::now() + timeout;
    loop {
        let j = get_job(c, id, timeout).await;
        if j.finished_ms != 0 {
            return j;
        }
        assert!(Instant::now() < deadline, "job {id} not finished within {timeout:?}: {j:?}\n{}", c.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn results(c: &Cluster, id: u64) -> Vec<proto::ShardResult> {
    for n in c.live() {
        let mut client = c.jobs(n).await;
        if let Ok(r) = client.get_results(proto::GetResultsRequest { job_id: id, ..Default::default() }).await {
            return r.into_inner().results;
        }
    }
    panic!("no node answered GetResults")
}

/// The machine's load average over 1, 5 and 15 minutes, as /proc/loadavg
/// prints it: benchmarks print it first, since the nodes, the load generator
/// and anything else running share the cores.
pub fn load_average() -> String {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// The disk's fsync latency under `dir`, sorted: `n` times a 4 KiB write and
/// the timed fdatasync after it, the probe raft-store's store bench prints
/// (that one lives in another crate's bench binary). Every commit waits for
/// one such fsync on a majority, so benchmarks print it as context.
pub fn fsync_probe(dir: &std::path::Path, n: usize) -> Vec<Duration> {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).unwrap();
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        f.write_all(&[7u8; 4096]).unwrap();
        let t = Instant::now();
        f.sync_data().unwrap();
        samples.push(t.elapsed());
    }
    let _ = std::fs::remove_file(&path);
    samples.sort();
    samples
}

/// What a test worker saw.
#[derive(Debug, Clone)]
pub enum Seen {
    Assigned { job: u64, shard: u32, token: u64, at: Instant },
    Acked { job: u64, shard: u32, token: u64, status: i32 },
}

/// A worker over the raw session protocol: follows leader hints, resumes its
/// session after a leader change, heartbeats, and completes every assignment
/// after `work` with result "<name>:<job>/<shard>" unless told to hold.
pub struct TestWorker {
    pub name: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// While true: no heartbeats and no reports (a stalled process).
    pub paused: Arc<AtomicBool>,
    /// While true: assignments are recorded but not completed.
    pub hold: Arc<AtomicBool>,
    pub session: Arc<Mutex<Option<(u64, u64)>>>,
    report_tx: mpsc::UnboundedSender<proto::WorkerMessage>,
    task: tokio::task::JoinHandle<()>,
}

impl TestWorker {
    pub fn start(endpoints: Vec<String>, name: &str, capacity: u32, work: Duration) -> TestWorker {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let paused = Arc::new(AtomicBool::new(false));
        let hold = Arc::new(AtomicBool::new(false));
        let session = Arc::new(Mutex::new(None));
        let (report_tx, report_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(worker_loop(
            report_tx.clone(),
            endpoints,
            name.to_string(),
            capacity,
            work,
            seen.clone(),
            paused.clone(),
            hold.clone(),
            session.clone(),
            report_rx,
        ));
        TestWorker { name: name.into(), seen, paused, hold, session, report_tx, task }
    }

    /// Abort the worker: like SIGKILL, its stream just stops.
    pub fn kill(&self) {
        self.task.abort();
    }

    /// Send a report through the worker's current stream (e.g. a stale complete).
    pub fn complete(&self, job: u64, shard: u32, token: u64, result: &str) {
        let _ = self.report_tx.send(proto::WorkerMessage {
            msg: Some(In::Complete(proto::Complete {
                task: Some(proto::TaskRef { job_id: job, shard }),
                token,
                result: result.as_bytes().to_vec(),
                log_chunk: None,
            })),
        });
    }

    /// Send any message through the worker's current stream.
    pub fn send(&self, msg: In) {
        let _ = self.report_tx.send(proto::WorkerMessage { msg: Some(msg) });
    }

    pub fn assigned(&self) -> Vec<(u64, u32, u64, Instant)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|s| match s {
                Seen::Assigned { job, shard, token, at } => Some((*job, *shard, *token, *at)),
                _ => None,
            })
            .collect()
    }

    pub fn acks(&self) -> Vec<(u64, u32, u64, i32)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|s| match s {
                Seen::Acked { job, shard, token, status } => Some((*job, *shard, *token, *status)),
                _ => None,
            })
            .collect()
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[allow(clippy::too_many_arguments)]
async fn worker_loop(
    report_tx: mpsc::UnboundedSender<proto::WorkerMessage>,
    endpoints: Vec<String>,
    name: String,
    capacity: u32,
    work: Duration,
    seen: Arc<Mutex<Vec<Seen>>>,
    paused: Arc<AtomicBool>,
    hold: Arc<AtomicBool>,
    session: Arc<Mutex<Option<(u64, u64)>>>,
    mut reports: mpsc::UnboundedReceiver<proto::WorkerMessage>,
) {
    let mut target: Option<String> = None;
    let mut i = 0usize;
    loop {
        while paused.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ep = target.take().unwrap_or_else(|| {
            i += 1;
            endpoints[i % endpoints.len()].clone()
        });
        let Ok(ch) = tonic::transport::Endpoint::from_shared(ep)
            .unwrap()
            .connect_timeout(Duration::from_millis(300))
            .connect()
            .await
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut client = WorkerServiceClient::new(ch);
        let (tx, rx) = mpsc::channel::<proto::WorkerMessage>(1024);
        let (resume_session, resume_epoch) = session.lock().unwrap().unwrap_or((0, 0));
        let _ = tx
            .send(proto::WorkerMessage {
                msg: Some(In::Register(proto::Register {
                    name: name.clone(),
                    capacity,
                    resume_session,
                    resume_epoch,
                    ..Default::default()
                })),
            })
            .await;
        let mut inbound = match client.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await {
            Ok(r) => r.into_inner(),
            Err(s) => {
                if let Some(addr) = s.metadata().get("baton-leader-addr").and_then(|v| v.to_str().ok()) {
                    target = Some(format!("http://{addr}"));
                }
                if s.code() == tonic::Code::FailedPrecondition || s.code() == tonic::Code::NotFound {
                    // Our session ended while we were away: start a new one.
                    *session.lock().unwrap() = None;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let mut hb = tokio::time::interval(Duration::from_millis(100));
        let mut seq = 0u64;
        loop {
            tokio::select! {
                _ = hb.tick() => {
                    if paused.load(Ordering::SeqCst) { continue; }
                    seq += 1;
                    if tx.send(proto::WorkerMessage { msg: Some(In::Heartbeat(proto::Heartbeat { seq })) }).await.is_err() { break; }
                }
                Some(r) = reports.recv() => {
                    if tx.send(r).await.is_err() { break; }
                }
                m = inbound.message() => {
                    let m = match m {
                        Ok(Some(m)) => m,
                        Ok(None) => break,
                        Err(s) => {
                            if let Some(addr) = s.metadata().get("baton-leader-addr").and_then(|v| v.to_str().ok()) {
                                target = Some(format!("http://{addr}"));
                            }
                            if s.code() == tonic::Code::FailedPrecondition {
                                *session.lock().unwrap() = None;
                            }
                            break;
                        }
                    };
                    match m.msg {
                        Some(Out::Registered(r)) => *session.lock().unwrap() = Some((r.session, r.epoch)),
                        Some(Out::Assignment(a)) => {
                            let t = a.task.unwrap();
                            // A resync after a reconnect repeats assignments we
                            // have; the report may have been lost with the old
                            // stream, so do it again (completion is idempotent).
                            let dup = seen.lock().unwrap().iter().any(|s| matches!(s, Seen::Assigned { job, shard, token, .. } if *job == t.job_id && *shard == t.shard && *token == a.token));
                            if !dup {
                                seen.lock().unwrap().push(Seen::Assigned { job: t.job_id, shard: t.shard, token: a.token, at: Instant::now() });
                            }
                            if hold.load(Ordering::SeqCst) { continue; }
                            let (rtx, name2, paused2) = (report_tx.clone(), name.clone(), paused.clone());
                            tokio::spawn(async move {
                                tokio::time::sleep(work).await;
                                while paused2.load(Ordering::SeqCst) {
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                }
                                let _ = rtx.send(proto::WorkerMessage { msg: Some(In::Complete(proto::Complete {
                                    task: Some(t),
                                    token: a.token,
                                    result: format!("{name2}:{}/{}", t.job_id, t.shard).into_bytes(), log_chunk: None,
                                })) });
                            });
                        }
                        Some(Out::ReportAck(a)) => {
                            let t = a.task.unwrap();
                            seen.lock().unwrap().push(Seen::Acked { job: t.job_id, shard: t.shard, token: a.token, status: a.status });
                        }
                        _ => {}
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
