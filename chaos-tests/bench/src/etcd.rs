//! etcd 3.4 (Debian `etcd-server`), three members on loopback, default
//! settings (fsync per commit, 100 ms heartbeat, 1 s election timeout), and
//! the usual task-queue recipe over the native gRPC client:
//!
//! - submit: put `/q/<tag>/t/<id>` (a 100-shard job is one txn of 100 puts);
//! - claim: a worker watches `/q/<tag>/t/` and claims a new key with a txn
//!   `mod_revision(task) == seen && create_revision(claim) == 0` →
//!   put `/q/<tag>/c/<id>` attached to the worker's lease (kept alive);
//! - complete: txn `lease(claim) == mine` → delete task and claim keys;
//! - reassign: when a lease expires its claim key is deleted; workers watching
//!   `/q/<tag>/c/` claim the task again.
//!
//! Workers split new keys by `id % workers` so that claims do not collide.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, PutOptions, Txn, TxnOp, WatchFilterType, WatchOptions,
};
use tokio::sync::Semaphore;

use crate::driver::{Load, Shared, decode, drain, sample};
use crate::procs::{Node, free_port};
use crate::stats::{Latency1, Phase, Summary};

pub const LEASE_TTL_S: i64 = 2;

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub client_ports: Vec<u16>,
}

fn opts() -> ConnectOptions {
    ConnectOptions::new().with_connect_timeout(Duration::from_millis(500)).with_timeout(Duration::from_secs(5))
}

impl Cluster {
    pub fn start(run_dir: &Path) -> anyhow::Result<Cluster> {
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("e{}=http://127.0.0.1:{}", i + 1, p.1))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            let name = format!("e{}", i + 1);
            let args = vec![
                "--name".into(),
                name.clone(),
                "--data-dir".into(),
                run_dir.join(format!("etcd-{name}")).display().to_string(),
                "--listen-client-urls".into(),
                format!("http://127.0.0.1:{}", p.0),
                "--advertise-client-urls".into(),
                format!("http://127.0.0.1:{}", p.0),
                "--listen-peer-urls".into(),
                format!("http://127.0.0.1:{}", p.1),
                "--initial-advertise-peer-urls".into(),
                format!("http://127.0.0.1:{}", p.1),
                "--initial-cluster".into(),
                initial.clone(),
                "--initial-cluster-state".into(),
                "new".into(),
                "--initial-cluster-token".into(),
                "baton-bench".into(),
                "--logger".into(),
                "zap".into(),
                "--log-level".into(),
                "warn".into(),
            ];
            let mut n = Node::new(&format!("etcd{}", i + 1), "etcd", args, run_dir);
            n.spawn()?;
            nodes.push(n);
        }
        Ok(Cluster { nodes, client_ports: ports.iter().map(|p| p.0).collect() })
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.client_ports[i])
    }

    pub fn endpoints(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.endpoint(i)).collect()
    }

    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].alive()).collect()
    }

    pub fn cpu(&self) -> f64 {
        self.nodes.iter().map(|n| n.cpu_s()).sum()
    }

    pub async fn client(&self) -> anyhow::Result<Client> {
        let eps: Vec<String> = self.live().into_iter().map(|i| self.endpoint(i)).collect();
        Ok(Client::connect(eps, Some(opts())).await?)
    }

    /// Index of the leader once every live member agrees on it.
    pub async fn settled(&self, timeout: Duration) -> anyhow::Result<usize> {
        let until = Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            for i in self.live() {
                let st = async {
                    let mut c = Client::connect([self.endpoint(i)], Some(opts())).await.ok()?;
                    let s = tokio::time::timeout(Duration::from_millis(500), c.status()).await.ok()?.ok()?;
                    Some((s.leader(), s.header().map(|h| h.member_id()).unwrap_or(0), i))
                }
                .await;
                seen.push(st);
            }
            if seen.iter().all(|s| s.is_some()) {
                let seen: Vec<(u64, u64, usize)> = seen.into_iter().flatten().collect();
                let l = seen[0].0;
                if l != 0
                    && seen.iter().all(|s| s.0 == l)
                    && let Some(s) = seen.iter().find(|s| s.1 == l)
                {
                    return Ok(s.2);
                }
            }
            if Instant::now() > until {
                anyhow::bail!("etcd: no agreed leader within {timeout:?} (see etcd*.log)");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn tkey(tag: &str, id: u64) -> String {
    format!("/q/{tag}/t/{id:020}")
}

fn ckey(tag: &str, id: u64) -> String {
    format!("/q/{tag}/c/{id:020}")
}

fn id_of(key: &[u8]) -> Option<u64> {
    std::str::from_utf8(key).ok()?.rsplit('/').next()?.parse().ok()
}

/// A lease kept alive every TTL/3 until the returned task is aborted.
async fn lease(c: &mut Client) -> anyhow::Result<(i64, tokio::task::JoinHandle<()>)> {
    let id = c.lease_grant(LEASE_TTL_S, None).await?.id();
    let (mut keeper, mut stream) = c.lease_keep_alive(id).await?;
    let h = tokio::spawn(async move {
        loop {
            if let Err(e) = keeper.keep_alive().await {
                crate::note(format!("etcd lease {id}: keep-alive failed: {e}"));
                return;
            }
            match stream.message().await {
                Ok(Some(r)) if r.ttl() <= 0 => {
                    crate::note(format!("etcd lease {id} expired under load (keep-alive answered TTL {})", r.ttl()));
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    crate::note(format!("etcd lease {id}: keep-alive failed: {e}"));
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis((LEASE_TTL_S as u64 * 1000) / 3)).await;
        }
    });
    Ok((id, h))
}

/// Claim the task at `key` (seen at `rev`) under `lease`; true when won.
async fn claim(c: &mut Client, tag: &str, id: u64, rev: i64, lease: i64, me: &str) -> bool {
    let txn = Txn::new()
        .when([
            Compare::mod_revision(tkey(tag, id), CompareOp::Equal, rev),
            Compare::create_revision(ckey(tag, id), CompareOp::Equal, 0),
        ])
        .and_then([TxnOp::put(ckey(tag, id), me, Some(PutOptions::new().with_lease(lease)))]);
    ok_or_note(c.txn(txn).await.map(|r| r.succeeded()), "claim")
}

/// The first error of each kind becomes a note; an error counts as "not won".
fn ok_or_note(r: Result<bool, etcd_client::Error>, what: &str) -> bool {
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    match r {
        Ok(b) => b,
        Err(e) => {
            let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
            if !seen.iter().any(|w| w == what) {
                seen.push(what.to_string());
                crate::note(format!("etcd {what} txn failed (first of its kind): {e}"));
            }
            false
        }
    }
}

async fn complete(c: &mut Client, tag: &str, id: u64, lease: i64) -> bool {
    let txn = Txn::new()
        .when([Compare::lease(ckey(tag, id), CompareOp::Equal, lease)])
        .and_then([TxnOp::delete(tkey(tag, id), None), TxnOp::delete(ckey(tag, id), None)]);
    ok_or_note(c.txn(txn).await.map(|r| r.succeeded()), "complete")
}

/// Worker `index` of `of`: claims new tasks with `id % of == index`.
async fn worker(
    mut c: Client,
    sh: Arc<Shared>,
    tag: String,
    index: u64,
    of: u64,
    capacity: usize,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let (lease_id, keeper) = lease(&mut c).await?;
    let prefix = format!("/q/{tag}/t/");
    let (_w, mut stream) =
        c.watch(prefix, Some(WatchOptions::new().with_prefix().with_filters([WatchFilterType::NoDelete]))).await?;
    let sem = Arc::new(Semaphore::new(capacity));
    let me = format!("w{index}");
    Ok(tokio::spawn(async move {
        loop {
            let resp = match stream.message().await {
                Ok(Some(r)) => r,
                Ok(None) => {
                    crate::note(format!("etcd worker {index}: its watch stream ended"));
                    break;
                }
                Err(e) => {
                    crate::note(format!("etcd worker {index}: its watch failed: {e}"));
                    break;
                }
            };
            if resp.canceled() {
                crate::note(format!("etcd worker {index}: watch cancelled: {}", resp.cancel_reason()));
                break;
            }
            for ev in resp.events() {
                if ev.event_type() != EventType::Put {
                    continue;
                }
                let Some(kv) = ev.kv() else { continue };
                let Some(id) = id_of(kv.key()) else { continue };
                if kv.create_revision() != kv.mod_revision() || id % of != index {
                    continue;
                }
                let Ok(permit) = sem.clone().acquire_owned().await else { return };
                let (mut c, sh, tag, me) = (c.clone(), sh.clone(), tag.clone(), me.clone());
                let (rev, payload) = (kv.mod_revision(), kv.value().to_vec());
                tokio::spawn(async move {
                    if claim(&mut c, &tag, id, rev, lease_id, &me).await {
                        sh.received(&payload);
                        sh.finished(&payload);
                        if complete(&mut c, &tag, id, lease_id).await {
                            sh.completed.add(1);
                        } else {
                            sh.errors.add(1);
                        }
                    }
                    drop(permit);
                });
            }
        }
        keeper.abort();
    }))
}

/// Submit one job of `shards` tasks: one put, or one txn of puts.
async fn submit_job(c: &mut Client, sh: &Shared, tag: &str, shards: u32) -> anyhow::Result<()> {
    let start = sh.now_ns();
    let tasks: Vec<(u64, Vec<u8>)> = (0..shards).map(|_| sh.task(start)).collect();
    if shards == 1 {
        c.put(tkey(tag, tasks[0].0), tasks[0].1.clone(), None).await?;
    } else {
        let ops: Vec<TxnOp> = tasks.iter().map(|(id, p)| TxnOp::put(tkey(tag, *id), p.clone(), None)).collect();
        c.txn(Txn::new().and_then(ops)).await?;
    }
    let ids: Vec<u64> = tasks.iter().map(|t| t.0).collect();
    sh.acked(&ids, start);
    Ok(())
}

pub async fn latency1(c: &Cluster, samples: usize) -> anyhow::Result<Latency1> {
    c.settled(Duration::from_secs(20)).await?;
    let sh = Arc::new(Shared::default());
    let w = worker(c.client().await?, sh.clone(), "lat".into(), 0, 1, 16).await?;
    let mut client = c.client().await?;
    let warm = samples / 10;
    for i in 0..samples + warm {
        if i == warm {
            drain(&sh, Duration::from_secs(5)).await;
            sh.submit.reset();
            sh.dispatch.reset();
            sh.e2e.reset();
        }
        if submit_job(&mut client, &sh, "lat", 1).await.is_err() {
            sh.errors.add(1);
        }
        sh.wait_done(Duration::from_secs(2)).await;
    }
    drain(&sh, Duration::from_secs(5)).await;
    w.abort();
    Ok(Latency1 { submit: sh.submit.summary(), dispatch: sh.dispatch.summary(), end_to_end: sh.e2e.summary() })
}

pub async fn throughput(c: &Cluster, load: &Load, tag: &str) -> anyhow::Result<Phase> {
    c.settled(Duration::from_secs(20)).await?;
    let sh = Arc::new(Shared::default());
    let mut ws = Vec::new();
    for i in 0..load.workers {
        ws.push(worker(c.client().await?, sh.clone(), tag.into(), i as u64, load.workers as u64, load.capacity).await?);
    }
    let mut subs = Vec::new();
    for _ in 0..load.submitters {
        let (sh, client, load, tag) = (sh.clone(), c.client().await?, load.clone(), tag.to_string());
        subs.push(tokio::spawn(async move {
            while !sh.stopped() {
                sh.admit(load.max_in_flight).await;
                let jobs = (0..load.jobs_per_request).map(|_| {
                    let (mut c, sh, tag) = (client.clone(), sh.clone(), tag.clone());
                    async move {
                        if submit_job(&mut c, &sh, &tag, load.shards).await.is_err() {
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
    Ok(phase)
}

pub async fn failover(c: &mut Cluster, kills: usize) -> anyhow::Result<Summary> {
    let mut out = Vec::new();
    for k in 0..kills {
        let leader = c.settled(Duration::from_secs(30)).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let others: Vec<String> = c.live().into_iter().filter(|i| *i != leader).map(|i| c.endpoint(i)).collect();
        let mut client = Client::connect(others, Some(opts())).await?;
        let t = Instant::now();
        c.nodes[leader].kill();
        let took = crate::driver::first_commit("etcd", k, t, async || {
            let put = client.put(format!("/failover/{k}"), "x", None);
            matches!(tokio::time::timeout(Duration::from_millis(300), put).await, Ok(Ok(_)))
        })
        .await;
        out.extend(took);
        c.nodes[leader].spawn()?;
    }
    Ok(Summary::of_samples(&out))
}

pub async fn reassignment(c: &Cluster, kills: usize, self_exe: &Path, run_dir: &Path) -> anyhow::Result<Summary> {
    let mut out = Vec::new();
    let mut client = c.client().await?;
    for k in 0..kills {
        c.settled(Duration::from_secs(30)).await?;
        let tag = format!("re{k}");
        let eps = c.endpoints().join(",");
        let mut victim = crate::Victim::spawn(self_exe, &format!("etcd:{tag}"), &eps, run_dir)?;
        victim.wait_ready(Duration::from_secs(20))?;
        let sh = Shared::default();
        let (id, p) = sh.task(0);
        client.put(tkey(&tag, id), p, None).await?;
        victim.wait_claim(Duration::from_secs(20))?;
        // The rescuer watches claim keys; a deleted claim (an expired lease)
        // whose task still exists is claimed again.
        let mut rc = c.client().await?;
        let (lease_id, keeper) = lease(&mut rc).await?;
        let (_w, mut stream) = rc
            .watch(
                format!("/q/{tag}/c/"),
                Some(WatchOptions::new().with_prefix().with_filters([WatchFilterType::NoPut])),
            )
            .await?;
        let t = Instant::now();
        victim.kill();
        let got = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(resp)) = stream.message().await {
                for ev in resp.events() {
                    let Some(id) = ev.kv().and_then(|kv| id_of(kv.key())) else { continue };
                    let Ok(r) = rc.get(tkey(&tag, id), None).await else { continue };
                    if let Some(kv) = r.kvs().first()
                        && claim(&mut rc, &tag, id, kv.mod_revision(), lease_id, "rescuer").await
                    {
                        return Some(Instant::now());
                    }
                }
            }
            None
        })
        .await;
        match got {
            Ok(Some(at)) => out.push(at - t),
            _ => anyhow::bail!("etcd: task not reclaimed within 30 s"),
        }
        keeper.abort();
        let _ = rc.lease_revoke(lease_id).await;
        eprintln!("    etcd reassignment {}: {:?}", k + 1, out.last().unwrap());
    }
    Ok(Summary::of_samples(&out))
}

/// The victim process's worker: claims any task of `tag`, holds it until killed.
pub async fn victim(endpoints: Vec<String>, tag: String) -> anyhow::Result<()> {
    let mut c = Client::connect(endpoints, Some(opts())).await?;
    let (lease_id, _keeper) = lease(&mut c).await?;
    let (_w, mut stream) = c
        .watch(
            format!("/q/{tag}/t/"),
            Some(WatchOptions::new().with_prefix().with_filters([WatchFilterType::NoDelete])),
        )
        .await?;
    println!("ready");
    while let Some(resp) = stream.message().await? {
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let Some(id) = id_of(kv.key()) else { continue };
            if claim(&mut c, &tag, id, kv.mod_revision(), lease_id, "victim").await {
                println!("claimed {id} {:?}", decode(kv.value()).map(|d| d.0));
            }
        }
    }
    futures::future::pending::<()>().await;
    Ok(())
}
