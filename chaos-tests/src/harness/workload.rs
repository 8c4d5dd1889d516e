//! The client side of a run: submitters, a reader, and the leader watcher,
//! each recording what it sees until told to stop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_client::{Client, ClientConfig, proto};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::final_read::{NAMESPACE, job_status};
use super::record::Recorder;
use crate::history::{Body, LeaderSeen, OpFailure, ReadInvoke, ReadOk, ReadReply, SubmitInvoke, SubmitOk};

/// Most submits a submitter retries one idempotency key after `info`.
const SUBMIT_RETRIES: u32 = 10;
/// How often the watcher polls every node for its role and term.
const WATCH_PERIOD: Duration = Duration::from_millis(100);
/// Deadline of one watcher poll of one node: a paused node must not stall the
/// watch for long.
const WATCH_RPC_TIMEOUT: Duration = Duration::from_millis(300);

/// Jobs acknowledged so far, shared by the submitters and the reader.
pub(super) type Acked = Arc<Mutex<Vec<u64>>>;

/// Submit jobs of 1-3 shards until `stop`, retrying an `info` with the same key.
pub(super) async fn submitter(
    client: Client,
    rec: Arc<Recorder>,
    name: String,
    seed: u64,
    stop: Arc<AtomicBool>,
    acked: Acked,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut op = 0u64;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = format!("{name}-{n}");
        let shards = rng.random_range(1..=3u32);
        for _ in 0..=SUBMIT_RETRIES {
            op += 1;
            rec.record(SubmitInvoke { client: name.clone(), op, key: key.clone(), shards });
            let spec = proto::JobSpec {
                namespace: NAMESPACE.into(),
                name: key.clone(),
                shards,
                max_attempts: 50,
                backoff_base_ms: 100,
                backoff_max_ms: 1_000,
                idempotency_key: key.clone(),
                ..Default::default()
            };
            match client.submit(spec).await {
                Ok(r) => {
                    rec.record(SubmitOk { client: name.clone(), op, job: r.job_id });
                    acked.lock().unwrap_or_else(|p| p.into_inner()).push(r.job_id);
                    break;
                }
                Err(e) if e.is_indeterminate() => {
                    rec.record(Body::SubmitInfo(OpFailure { client: name.clone(), op, error: e.to_string() }));
                }
                Err(e) => {
                    rec.record(Body::SubmitFail(OpFailure { client: name.clone(), op, error: e.to_string() }));
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..80))).await;
    }
}

/// Linearizable status reads of random acknowledged jobs until `stop`.
pub(super) async fn reader(client: Client, rec: Arc<Recorder>, seed: u64, stop: Arc<AtomicBool>, acked: Acked) {
    let mut rng = StdRng::seed_from_u64(seed);
    let name = "r1".to_string();
    let mut op = 0;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..200))).await;
        let job = {
            let a = acked.lock().unwrap_or_else(|p| p.into_inner());
            if a.is_empty() {
                continue;
            }
            a[rng.random_range(0..a.len())]
        };
        op += 1;
        rec.record(ReadInvoke { client: name.clone(), op, job });
        match client.get(job).await {
            Ok(j) => rec.record(ReadOk { client: name.clone(), op, status: job_status(j.status) }),
            Err(baton_client::Error::NotFound(_)) => {
                rec.record(Body::ReadNotFound(ReadReply { client: name.clone(), op }))
            }
            Err(e) => rec.record(Body::ReadFail(OpFailure { client: name.clone(), op, error: e.to_string() })),
        }
    }
}

/// Until `stop`, poll every node; record each leader of a term newer than
/// any seen lead before (a `leader` event), and count the elections won
/// after the first leader in `changes`.
pub(super) async fn watch_leader(
    endpoints: Vec<String>,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    changes: Arc<AtomicU64>,
) {
    let mut cfg = ClientConfig::new(endpoints.clone());
    cfg.rpc_timeout = WATCH_RPC_TIMEOUT;
    let Ok(client) = Client::new(cfg) else { return };
    let mut last_term = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for e in &endpoints {
            if let Ok(s) = client.status(Some(e)).await
                && s.role == "leader"
                && s.term > last_term
            {
                rec.record(LeaderSeen { node: s.node_id, term: s.term });
                if last_term != 0 {
                    changes.fetch_add(1, Ordering::Relaxed);
                }
                last_term = s.term;
            }
        }
        tokio::time::sleep(WATCH_PERIOD).await;
    }
}
