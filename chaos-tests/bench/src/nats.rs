//! NATS JetStream 2.9 (Debian `nats-server`), three servers on loopback in one
//! cluster, and a work queue: an R3 file-storage stream with work-queue
//! retention, one durable pull consumer shared by every worker, explicit acks
//! (`double_ack`: the worker waits for the server to confirm its ack) and a
//! 2 s ack wait, after which an unacknowledged message is redelivered.
//!
//! Durability: JetStream's default `sync_interval` is two minutes. A publish is
//! acknowledged once a majority has it in its file (page cache), not fsynced,
//! so NATS does less per message than Baton or etcd, which fsync on a majority
//! before they acknowledge.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use tokio::sync::Semaphore;

use crate::driver::{Load, Shared, drain, sample};
use crate::procs::{Node, free_port};
use crate::stats::{Latency1, Phase, Summary};

pub const ACK_WAIT: Duration = Duration::from_secs(2);

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub client_ports: Vec<u16>,
}

impl Cluster {
    pub fn start(run_dir: &Path) -> anyhow::Result<Cluster> {
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let mut nodes = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let routes = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, q)| format!("\"nats-route://127.0.0.1:{}\"", q.1))
                .collect::<Vec<_>>()
                .join(", ");
            let conf = format!(
                "server_name: {name}\nlisten: \"127.0.0.1:{}\"\njetstream {{\n  store_dir: \"{}\"\n}}\ncluster {{\n  name: baton-bench\n  listen: \"127.0.0.1:{}\"\n  routes: [{routes}]\n}}\n",
                p.0,
                run_dir.join(format!("nats-{name}")).display(),
                p.1
            );
            let conf_path = run_dir.join(format!("nats-{name}.conf"));
            std::fs::write(&conf_path, conf)?;
            let args = vec!["-c".into(), conf_path.display().to_string()];
            let mut n = Node::new(&format!("nats{}", i + 1), "nats-server", args, run_dir);
            n.spawn()?;
            nodes.push(n);
        }
        Ok(Cluster { nodes, client_ports: ports.iter().map(|p| p.0).collect() })
    }

    pub fn urls(&self) -> Vec<String> {
        self.client_ports.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect()
    }

    pub fn cpu(&self) -> f64 {
        self.nodes.iter().map(|n| n.cpu_s()).sum()
    }

    pub async fn js(&self) -> anyhow::Result<jetstream::Context> {
        js(self.urls()).await
    }

    /// Create (or reset) the work-queue stream for `tag`, retrying while the
    /// JetStream meta group elects its leader.
    pub async fn stream(&self, tag: &str) -> anyhow::Result<stream::Stream> {
        let js = self.js().await?;
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let _ = js.delete_stream(sname(tag)).await;
            match js.create_stream(config(tag)).await {
                Ok(s) => return Ok(s),
                Err(e) if Instant::now() < until => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => anyhow::bail!("nats: cannot create stream: {e}"),
            }
        }
    }
}

async fn js(urls: Vec<String>) -> anyhow::Result<jetstream::Context> {
    let c = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_millis(500))
        .retry_on_initial_connect()
        .connect(urls)
        .await?;
    Ok(jetstream::new(c))
}

fn sname(tag: &str) -> String {
    format!("Q{}", tag.replace(['-', '.'], "_"))
}

fn config(tag: &str) -> stream::Config {
    stream::Config {
        name: sname(tag),
        subjects: vec![format!("q.{}.>", sname(tag))],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: 3,
        ..Default::default()
    }
}

async fn consumer(s: &stream::Stream) -> anyhow::Result<consumer::PullConsumer> {
    let cfg = consumer::pull::Config {
        durable_name: Some("workers".into()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_ack_pending: 200_000,
        ..Default::default()
    };
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        match s.get_or_create_consumer("workers", cfg.clone()).await {
            Ok(c) => return Ok(c),
            Err(_) if Instant::now() < until => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => anyhow::bail!("nats: cannot create consumer: {e}"),
        }
    }
}

async fn worker(s: &stream::Stream, sh: Arc<Shared>, capacity: usize) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let c = consumer(s).await?;
    let mut msgs = c.messages().await?;
    let sem = Arc::new(Semaphore::new(capacity));
    Ok(tokio::spawn(async move {
        while let Some(m) = msgs.next().await {
            let Ok(m) = m else { continue };
            let Ok(permit) = sem.clone().acquire_owned().await else { return };
            let sh = sh.clone();
            tokio::spawn(async move {
                sh.received(&m.payload);
                sh.finished(&m.payload);
                if m.double_ack().await.is_ok() {
                    sh.completed.add(1);
                } else {
                    sh.errors.add(1);
                }
                drop(permit);
            });
        }
    }))
}

/// Publish one job of `shards` messages and wait for every publish ack.
async fn submit_job(js: &jetstream::Context, sh: &Shared, tag: &str, shards: u32) -> anyhow::Result<()> {
    let start = sh.now_ns();
    let mut acks = Vec::with_capacity(shards as usize);
    let mut ids = Vec::with_capacity(shards as usize);
    for _ in 0..shards {
        let (id, p) = sh.task(start);
        ids.push(id);
        acks.push(js.publish(format!("q.{}.{id}", sname(tag)), p.into()).await?);
    }
    for a in acks {
        a.await?;
    }
    sh.acked(&ids, start);
    Ok(())
}

pub async fn latency1(c: &Cluster, samples: usize) -> anyhow::Result<Latency1> {
    let s = c.stream("lat").await?;
    let sh = Arc::new(Shared::default());
    let w = worker(&s, sh.clone(), 16).await?;
    let js = c.js().await?;
    let warm = samples / 10;
    for i in 0..samples + warm {
        if i == warm {
            drain(&sh, Duration::from_secs(5)).await;
            sh.submit.reset();
            sh.dispatch.reset();
            sh.e2e.reset();
        }
        if submit_job(&js, &sh, "lat", 1).await.is_err() {
            sh.errors.add(1);
        }
        sh.wait_done(Duration::from_secs(2)).await;
    }
    drain(&sh, Duration::from_secs(5)).await;
    w.abort();
    Ok(Latency1 { submit: sh.submit.summary(), dispatch: sh.dispatch.summary(), end_to_end: sh.e2e.summary() })
}

pub async fn throughput(c: &Cluster, load: &Load, tag: &str) -> anyhow::Result<Phase> {
    let s = c.stream(tag).await?;
    let sh = Arc::new(Shared::default());
    let mut ws = Vec::new();
    for _ in 0..load.workers {
        ws.push(worker(&s, sh.clone(), load.capacity).await?);
    }
    let mut subs = Vec::new();
    for _ in 0..load.submitters {
        let (sh, js, load, tag) = (sh.clone(), c.js().await?, load.clone(), tag.to_string());
        subs.push(tokio::spawn(async move {
            while !sh.stopped() {
                sh.admit(load.max_in_flight).await;
                let jobs = (0..load.jobs_per_request).map(|_| {
                    let (js, sh, tag) = (js.clone(), sh.clone(), tag.clone());
                    async move {
                        if submit_job(&js, &sh, &tag, load.shards).await.is_err() {
                            sh.errors.add(load.shards as u64);
                        }
                    }
                });
                futures::future::join_all(jobs).await;
            }
        }));
    }
    let phase = sample(
        &sh,
        load,
        || c.cpu(),
        || {
            let n = sh.completed.get();
            async move { Some(n) }
        },
    )
    .await;
    sh.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in subs {
        let _ = s.await;
    }
    drain(&sh, Duration::from_secs(30)).await;
    for w in ws {
        w.abort();
    }
    let _ = c.js().await?.delete_stream(sname(tag)).await;
    Ok(phase)
}

/// SIGKILL the server leading the stream; time until a publish is acknowledged.
pub async fn failover(c: &mut Cluster, kills: usize) -> anyhow::Result<Summary> {
    let mut out = Vec::new();
    let mut s = c.stream("failover").await?;
    for k in 0..kills {
        // Settled: the stream has a leader and every replica is current.
        let until = Instant::now() + Duration::from_secs(60);
        let leader = loop {
            if let Ok(info) = s.info().await
                && let Some(cl) = &info.cluster
                && let Some(l) = &cl.leader
                && cl.replicas.len() == 2
                && cl.replicas.iter().all(|r| r.current && !r.offline)
            {
                break l.clone();
            }
            if Instant::now() > until {
                anyhow::bail!("nats: stream not settled within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let idx: usize = leader.trim_start_matches('n').parse::<usize>()? - 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let others: Vec<String> =
            (0..3).filter(|i| *i != idx).map(|i| format!("nats://127.0.0.1:{}", c.client_ports[i])).collect();
        let js = js(others).await?;
        let t = Instant::now();
        c.nodes[idx].kill();
        let took = crate::driver::first_commit("nats", k, t, async || {
            let attempt = async { js.publish(format!("q.{}.f{k}", sname("failover")), "x".into()).await?.await };
            matches!(tokio::time::timeout(Duration::from_millis(300), attempt).await, Ok(Ok(_)))
        })
        .await;
        out.extend(took);
        c.nodes[idx].spawn()?;
        s = c.js().await?.get_stream(sname("failover")).await?;
    }
    Ok(Summary::of_samples(&out))
}

pub async fn reassignment(c: &Cluster, kills: usize, self_exe: &Path, run_dir: &Path) -> anyhow::Result<Summary> {
    let mut out = Vec::new();
    for k in 0..kills {
        let tag = format!("re{k}");
        let s = c.stream(&tag).await?;
        consumer(&s).await?;
        let urls = c.urls().join(",");
        let mut victim = crate::Victim::spawn(self_exe, &format!("nats:{tag}"), &urls, run_dir)?;
        victim.wait_ready(Duration::from_secs(20))?;
        let js = c.js().await?;
        js.publish(format!("q.{}.1", sname(&tag)), "r".into()).await?.await?;
        victim.wait_claim(Duration::from_secs(20))?;
        let cons = consumer(&s).await?;
        let mut msgs = cons.messages().await?;
        let t = Instant::now();
        victim.kill();
        match tokio::time::timeout(Duration::from_secs(30), msgs.next()).await {
            Ok(Some(Ok(m))) => {
                out.push(t.elapsed());
                let _ = m.ack().await;
            }
            _ => anyhow::bail!("nats: message not redelivered within 30 s"),
        }
        eprintln!("    nats reassignment {}: {:?}", k + 1, out.last().unwrap());
        drop(msgs);
        let _ = js.delete_stream(sname(&tag)).await;
    }
    Ok(Summary::of_samples(&out))
}

/// The victim process's worker: pulls one message and never acknowledges it.
pub async fn victim(urls: Vec<String>, tag: String) -> anyhow::Result<()> {
    let js = js(urls).await?;
    let s = js.get_stream(sname(&tag)).await?;
    let c = consumer(&s).await?;
    let mut msgs = c.messages().await?;
    println!("ready");
    if let Some(m) = msgs.next().await {
        let m = m?;
        println!("claimed {}", m.subject);
    }
    futures::future::pending::<()>().await;
    Ok(())
}
