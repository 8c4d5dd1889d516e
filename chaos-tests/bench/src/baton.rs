//! Baton: three `baton serve` processes on loopback (fsync is always on), SDK
//! submitters (batched `SubmitJobs`) and SDK workers (capacity > 1).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_client::proto::cluster_service_client::ClusterServiceClient;
use baton_client::proto::job_service_client::JobServiceClient;
use baton_client::{Client, ClientConfig, TaskContext, TaskError, Worker, WorkerStats, proto};
use tokio::sync::oneshot;

use crate::driver::{Load, Shared, drain, sample};
use crate::procs::{Node, free_port};
use crate::stats::{Latency1, Phase, Restart, Summary};

pub const TTL_MS: u64 = 2_000;

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub api: Vec<u16>,
    /// Each node's HTTP port (`/metrics`, `/readyz`).
    pub http: Vec<u16>,
}

impl Cluster {
    pub fn start(bin: &Path, run_dir: &Path) -> anyhow::Result<Cluster> {
        let ports: Vec<(u16, u16, u16)> = (0..3).map(|_| (free_port(), free_port(), free_port())).collect();
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}=127.0.0.1:{}/127.0.0.1:{}", i + 1, p.0, p.1))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            let id = i + 1;
            let data = run_dir.join(format!("baton{id}"));
            let args: Vec<String> = vec![
                "serve".into(),
                "--node-id".into(),
                id.to_string(),
                "--data-dir".into(),
                data.display().to_string(),
                "--raft-listen".into(),
                format!("127.0.0.1:{}", p.0),
                "--api-listen".into(),
                format!("127.0.0.1:{}", p.1),
                "--http-listen".into(),
                format!("127.0.0.1:{}", p.2),
                "--worker-ttl-ms".into(),
                TTL_MS.to_string(),
                "--initial-members".into(),
                members.clone(),
            ];
            let mut n = Node::new(&format!("baton{id}"), bin, args, run_dir);
            n.env.push(("BATON_LOG".into(), "warn".into()));
            n.spawn()?;
            nodes.push(n);
        }
        Ok(Cluster { nodes, api: ports.iter().map(|p| p.1).collect(), http: ports.iter().map(|p| p.2).collect() })
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.api.iter().map(|p| format!("http://127.0.0.1:{p}")).collect()
    }

    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].alive()).collect()
    }

    fn channel(&self, i: usize) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", self.api[i]))
            .expect("endpoint")
            .connect_timeout(Duration::from_millis(300))
            .timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .connect_lazy()
    }

    pub async fn status(&self, i: usize) -> Option<proto::StatusResponse> {
        let mut c = ClusterServiceClient::new(self.channel(i));
        c.status(proto::StatusRequest::default()).await.ok().map(|r| r.into_inner())
    }

    /// Index of the leader once every live node agrees on it and has applied
    /// the same index (a settled cluster).
    pub async fn settled(&self, timeout: Duration) -> anyhow::Result<usize> {
        let until = Instant::now() + timeout;
        loop {
            let mut st = Vec::new();
            for i in self.live() {
                st.push(self.status(i).await);
            }
            if let Some(Some(first)) = st.first() {
                let l = first.leader_id as usize;
                let max_commit = st.iter().flatten().map(|s| s.commit_index).max().unwrap_or(0);
                if l != 0
                    && self.nodes.get(l - 1).is_some_and(|n| n.alive())
                    && st
                        .iter()
                        .all(|s| s.as_ref().is_some_and(|s| s.leader_id as usize == l && s.applied_index >= max_commit))
                {
                    return Ok(l - 1);
                }
            }
            if Instant::now() > until {
                anyhow::bail!("baton: no settled leader within {timeout:?} (see baton*.log)");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn cpu(&self) -> f64 {
        self.nodes.iter().map(|n| n.cpu_s()).sum()
    }

    async fn live_tasks(&self) -> Option<u64> {
        for i in self.live() {
            if let Some(s) = self.status(i).await
                && s.role == "leader"
            {
                return Some(s.live_tasks);
            }
        }
        None
    }

    fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(ClientConfig::new(self.endpoints()))?)
    }
}

/// Run `n` SDK workers that do no work; each call of the handler goes through `sh`.
fn start_workers(c: &Cluster, sh: &Arc<Shared>, n: usize, capacity: usize, tag: &str) -> anyhow::Result<Workers> {
    let mut out = Vec::new();
    for i in 0..n {
        let shh = sh.clone();
        let w = Worker::builder()
            .endpoints(c.endpoints())
            .name(format!("bench-{tag}-{i}"))
            .capacity(capacity as u32)
            .shutdown_grace(Duration::from_secs(5))
            .handler(move |ctx: TaskContext| {
                let sh = shh.clone();
                async move {
                    sh.received(&ctx.payload);
                    sh.finished(&ctx.payload);
                    Ok::<Vec<u8>, TaskError>(Vec::new())
                }
            })
            .build()?;
        let (tx, rx) = oneshot::channel::<()>();
        let h = tokio::spawn(async move {
            w.run(async move {
                let _ = rx.await;
            })
            .await
            .ok()
        });
        out.push((tx, h));
    }
    Ok(out)
}

type Workers = Vec<(oneshot::Sender<()>, tokio::task::JoinHandle<Option<WorkerStats>>)>;

/// Shut the workers down gracefully; their summed stats. `fenced` and
/// `abandoned` count attempts a worker lost: with no kills, false expiries.
async fn stop_workers(ws: Workers) -> WorkerStats {
    let mut hs = Vec::new();
    for (tx, h) in ws {
        let _ = tx.send(());
        hs.push(h);
    }
    let mut sum = WorkerStats::default();
    for h in hs {
        if let Ok(Ok(Some(s))) = tokio::time::timeout(Duration::from_secs(8), h).await {
            sum.completed += s.completed;
            sum.failed += s.failed;
            sum.fenced += s.fenced;
            sum.abandoned += s.abandoned;
        }
    }
    sum
}

fn spec(ns: &str, payloads: Vec<Vec<u8>>) -> proto::JobSpec {
    proto::JobSpec { namespace: ns.into(), payloads, attempt_timeout_ms: 600_000, ..Default::default() }
}

async fn wait_registered(c: &Cluster, n: u64) {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if let Some(l) = c.settled(Duration::from_secs(5)).await.ok()
            && let Some(s) = c.status(l).await
            && s.live_workers >= n
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One client, one single-shard job at a time, one worker attached.
pub async fn latency1(c: &Cluster, samples: usize) -> anyhow::Result<Latency1> {
    c.settled(Duration::from_secs(15)).await?;
    let sh = Arc::new(Shared::default());
    let ws = start_workers(c, &sh, 1, 16, "lat")?;
    wait_registered(c, 1).await;
    let client = c.client()?;
    let warm = samples / 10;
    for i in 0..samples + warm {
        if i == warm {
            // Forget the warm-up.
            drain(&sh, Duration::from_secs(5)).await;
            sh.submit.reset();
            sh.dispatch.reset();
            sh.e2e.reset();
        }
        let start = sh.now_ns();
        let (id, p) = sh.task(start);
        match client.submit(spec("lat", vec![p])).await {
            Ok(_) => sh.acked(&[id], start),
            Err(_) => sh.errors.add(1),
        }
        // Let the worker receive it before the next submit, as a lone client would.
        sh.wait_done(Duration::from_secs(2)).await;
    }
    drain(&sh, Duration::from_secs(5)).await;
    stop_workers(ws).await;
    Ok(Latency1 { submit: sh.submit.summary(), dispatch: sh.dispatch.summary(), end_to_end: sh.e2e.summary() })
}

/// Sustained lifecycle throughput with `load`.
pub async fn throughput(c: &Cluster, load: &Load, tag: &str) -> anyhow::Result<Phase> {
    c.settled(Duration::from_secs(15)).await?;
    let sh = Arc::new(Shared::default());
    let ws = start_workers(c, &sh, load.workers, load.capacity, tag)?;
    wait_registered(c, load.workers as u64).await;
    let base_live = c.live_tasks().await.unwrap_or(0);
    let mut subs = Vec::new();
    for _ in 0..load.submitters {
        let sh = sh.clone();
        let client = c.client()?;
        let load = load.clone();
        let ns = format!("tp-{tag}");
        subs.push(tokio::spawn(async move {
            while !sh.stopped() {
                sh.admit(load.max_in_flight).await;
                let start = sh.now_ns();
                let mut ids = Vec::new();
                let specs: Vec<proto::JobSpec> = (0..load.jobs_per_request)
                    .map(|_| {
                        let ps = (0..load.shards)
                            .map(|_| {
                                let (id, p) = sh.task(start);
                                ids.push(id);
                                p
                            })
                            .collect();
                        spec(&ns, ps)
                    })
                    .collect();
                match client.submit_batch(specs).await {
                    Ok(rs) => {
                        let per = load.shards as usize;
                        let ok: Vec<u64> = rs
                            .iter()
                            .enumerate()
                            .filter(|(_, r)| r.is_ok())
                            .flat_map(|(j, _)| ids[j * per..(j + 1) * per].iter().copied())
                            .collect();
                        sh.errors.add((ids.len() - ok.len()) as u64);
                        sh.acked(&ok, start);
                    }
                    Err(_) => sh.errors.add(ids.len() as u64),
                }
            }
        }));
    }
    // Completed lifecycles, as the cluster counts them: acknowledged tasks
    // that are no longer live (pending or running) on the leader.
    let phase =
        sample(
            &sh,
            load,
            || c.cpu(),
            || {
                let sh = sh.clone();
                async move {
                    c.live_tasks().await.map(|live| sh.submitted.get().saturating_sub(live.saturating_sub(base_live)))
                }
            },
        )
        .await;
    sh.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in subs {
        let _ = s.await;
    }
    drain(&sh, Duration::from_secs(30)).await;
    let st = stop_workers(ws).await;
    let mut phase = phase;
    phase.lost_attempts = st.fenced + st.abandoned;
    Ok(phase)
}

/// SIGKILL the leader of a settled cluster; time until a submit is acknowledged.
pub async fn failover(c: &mut Cluster, kills: usize) -> anyhow::Result<Summary> {
    let mut out = Vec::new();
    for k in 0..kills {
        let leader = c.settled(Duration::from_secs(30)).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        c.nodes[leader].kill();
        let mut n = 0usize;
        let took = crate::driver::first_commit("baton", k, t, async || {
            let live = c.live();
            let i = live[n % live.len()];
            n += 1;
            let mut jc = JobServiceClient::new(c.channel(i));
            let s = spec("failover", vec![format!("f{k}").into_bytes()]);
            jc.submit_job(proto::SubmitJobRequest { spec: Some(s) }).await.is_ok()
        })
        .await;
        out.extend(took);
        c.nodes[leader].spawn()?;
    }
    Ok(Summary::of_samples(&out))
}

/// SIGKILL a worker process holding a task; time until another worker starts it.
pub async fn reassignment(c: &Cluster, kills: usize, self_exe: &Path, run_dir: &Path) -> anyhow::Result<Summary> {
    let mut out = Vec::new();
    let client = c.client()?;
    for k in 0..kills {
        c.settled(Duration::from_secs(30)).await?;
        let eps = c.endpoints().join(",");
        let mut victim = crate::Victim::spawn(self_exe, "baton", &eps, run_dir)?;
        let job = client.submit(spec("reassign", vec![format!("r{k}").into_bytes()])).await?.job_id;
        victim.wait_claim(Duration::from_secs(20))?;
        // The rescuer: a second worker that records when it is handed the job.
        let sh = Arc::new(Shared::default());
        let got: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
        let g = got.clone();
        let w = Worker::builder()
            .endpoints(c.endpoints())
            .name(format!("rescuer-{k}"))
            .capacity(4)
            .handler(move |ctx: TaskContext| {
                let g = g.clone();
                async move {
                    if ctx.job_id == job {
                        g.lock().unwrap().get_or_insert(Instant::now());
                    }
                    Ok::<Vec<u8>, TaskError>(Vec::new())
                }
            })
            .build()?;
        let (tx, rx) = oneshot::channel::<()>();
        let h = tokio::spawn(async move {
            w.run(async move {
                let _ = rx.await;
            })
            .await
            .ok()
        });
        wait_registered(c, 2).await;
        let t = Instant::now();
        victim.kill();
        loop {
            if let Some(at) = *got.lock().unwrap() {
                out.push(at - t);
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("baton: task not reassigned within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        eprintln!("    baton reassignment {}: {:?}", k + 1, out.last().unwrap());
        stop_workers(vec![(tx, h)]).await;
        drop(sh);
        // Let the victim's session expire before the next round.
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            let l = c.settled(Duration::from_secs(10)).await?;
            if c.status(l).await.is_some_and(|s| s.live_workers == 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(Summary::of_samples(&out))
}

/// Load `tasks` pending tasks (100-shard jobs), measure RSS, SIGKILL every
/// node, restart, and time the first commit and a full listing of the jobs.
pub async fn restart(c: &mut Cluster, tasks: u64) -> anyhow::Result<Restart> {
    c.settled(Duration::from_secs(15)).await?;
    let jobs = tasks / 100;
    let t = Instant::now();
    let mut subs = Vec::new();
    let per_sub = jobs.div_ceil(4);
    for s in 0..4u64 {
        let client = c.client()?;
        subs.push(tokio::spawn(async move {
            let mut j = s * per_sub;
            let end = ((s + 1) * per_sub).min(jobs);
            while j < end {
                let n = (end - j).min(10);
                let specs = (0..n)
                    .map(|_| proto::JobSpec {
                        namespace: "restart".into(),
                        shards: 100,
                        attempt_timeout_ms: 600_000,
                        ..Default::default()
                    })
                    .collect();
                client.submit_batch(specs).await?;
                j += n;
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for s in subs {
        s.await??;
    }
    let load_s = t.elapsed().as_secs_f64();
    eprintln!("    baton: {tasks} tasks loaded in {load_s:.1} s");
    let leader = c.settled(Duration::from_secs(60)).await?;
    let live = c.status(leader).await.map(|s| s.live_tasks).unwrap_or(0);
    eprintln!("    baton: {live} live tasks on the leader");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss: Vec<f64> = c.nodes.iter().map(|n| n.rss_mib().unwrap_or(0.0)).collect();
    for n in &mut c.nodes {
        n.kill();
    }
    let t = Instant::now();
    for n in &mut c.nodes {
        n.spawn()?;
    }
    let mut k = 0usize;
    let first_commit_s = loop {
        let i = k % 3;
        k += 1;
        let mut jc = JobServiceClient::new(c.channel(i));
        if jc.submit_job(proto::SubmitJobRequest { spec: Some(spec("restart-probe", vec![vec![1]])) }).await.is_ok() {
            break t.elapsed().as_secs_f64();
        }
        if t.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("baton: no commit within 120 s of a full restart");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let client = c.client()?;
    let all_queryable_s = loop {
        let mut seen = 0u64;
        let mut token = 0u64;
        let ok = loop {
            let req = proto::ListJobsRequest {
                namespace: "restart".into(),
                page_size: 1000,
                page_token: token,
                ..Default::default()
            };
            match client.list(req).await {
                Ok(r) => {
                    seen += r.jobs.iter().map(|j| j.shards as u64).sum::<u64>();
                    token = r.next_page_token;
                    if token == 0 {
                        break true;
                    }
                }
                Err(_) => break false,
            }
        };
        if ok && seen >= tasks {
            break t.elapsed().as_secs_f64();
        }
        if t.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("baton: only {seen} of {tasks} tasks listed 120 s after a full restart");
        }
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after: Vec<f64> = c.nodes.iter().map(|n| n.rss_mib().unwrap_or(0.0)).collect();
    Ok(Restart {
        tasks,
        load_s,
        rss_mib_per_node: rss,
        first_commit_s,
        all_queryable_s,
        rss_mib_after_restart: rss_after,
    })
}

/// The victim process's worker: takes one task and holds it until killed.
pub async fn victim(endpoints: Vec<String>) -> anyhow::Result<()> {
    let w = Worker::builder()
        .endpoints(endpoints)
        .name(format!("victim-{}", std::process::id()))
        .capacity(1)
        .handler(|ctx: TaskContext| async move {
            println!("claimed {}/{}", ctx.job_id, ctx.shard);
            futures::future::pending::<()>().await;
            Ok::<Vec<u8>, TaskError>(Vec::new())
        })
        .build()?;
    w.run(futures::future::pending::<()>()).await?;
    Ok(())
}
