//! The chaos worker: a separate process speaking the public session protocol
//! (`baton.v1.WorkerService/Session`) and recording what it sees.
//!
//! It is deliberately not the SDK's `Worker` runtime: that runtime fences
//! itself when its lease lapses and hides acks, while this one must behave
//! like the worst client the protocol allows. When it is paused past its TTL
//! and resumed (a zombie), it still reports its stale results, and the
//! cluster must answer FENCED. It records every assignment it receives and
//! every complete it sends, with the cluster's reply, matched by (task,
//! token, kind) as the protocol specifies.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use baton_client::proto;
use baton_client::proto::coordinator_message::Msg as Out;
use baton_client::proto::worker_message::Msg as In;
use baton_client::proto::worker_service_client::WorkerServiceClient;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::record::Recorder;
use crate::history::{Assign, CompleteInvoke, CompleteOutcome, Token};

/// Outbound messages queued on one stream; a worker has few in flight.
const OUTBOUND_QUEUE: usize = 256;
/// How often finished attempts are looked for.
const TICK: Duration = Duration::from_millis(5);

/// What one chaos worker process does.
#[derive(Debug, Clone)]
pub struct WorkerOpts {
    /// Stable worker name; also the history's `worker`.
    pub name: String,
    /// Public API addresses, `http://host:port`.
    pub endpoints: Vec<String>,
    /// Most attempts run at once.
    pub capacity: u32,
    /// Simulated work per attempt: uniformly in this range, in ms.
    pub work_ms: (u64, u64),
    /// Seeds the work durations.
    pub seed: u64,
    /// Raw event file.
    pub out: PathBuf,
}

type Key = (u64, u32, Token);

struct State {
    opts: WorkerOpts,
    rec: Recorder,
    rng: rand::rngs::StdRng,
    session: Option<(u64, u64)>,
    /// Attempts being "worked", with when they finish.
    running: BTreeMap<Key, Instant>,
    /// Completes sent and not yet answered: key -> op.
    unacked: BTreeMap<Key, u64>,
    next_op: u64,
    next_url: usize,
    leader: Option<String>,
}

/// Run until killed.
pub async fn run(opts: WorkerOpts) -> Result<()> {
    let rec = Recorder::create(&opts.out)?;
    let mut st = State {
        // Each worker draws its own durations from the run's seed.
        rng: rand::rngs::StdRng::seed_from_u64(
            opts.seed ^ u64::from_le_bytes(*b"wrk\0\0\0\0\0") ^ name_hash(&opts.name),
        ),
        rec,
        opts,
        session: None,
        running: BTreeMap::new(),
        unacked: BTreeMap::new(),
        // Op ids must not repeat across restarts of the same worker name:
        // start from the shared monotonic clock.
        next_op: super::record::mono_us(),
        next_url: 0,
        leader: None,
    };
    loop {
        let url = st.leader.take().unwrap_or_else(|| {
            st.next_url += 1;
            st.opts.endpoints[st.next_url % st.opts.endpoints.len()].clone()
        });
        if let Err(e) = st.session_once(&url).await {
            tracing::debug!(worker = %st.opts.name, url = %url, error = %e, "session ended");
        }
        // Every complete still unanswered has an unknown outcome; resend it
        // with the same token as a new op on the next stream.
        let lost: Vec<(Key, u64)> = std::mem::take(&mut st.unacked).into_iter().collect();
        for (key, op) in lost {
            st.rec.record(CompleteOutcome::Info.reply(&st.opts.name, op, "stream closed before the ack"));
            st.running.insert(key, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(st.rng.random_range(20..100))).await;
    }
}

impl State {
    async fn session_once(&mut self, url: &str) -> Result<()> {
        let ch = tonic::transport::Endpoint::from_shared(url.to_string())?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connect {url}"))?;
        let (tx, rx) = mpsc::channel::<proto::WorkerMessage>(OUTBOUND_QUEUE);
        let (resume_session, resume_epoch) = self.session.unwrap_or((0, 0));
        let register = proto::Register {
            name: self.opts.name.clone(),
            labels: Default::default(),
            capacity: self.opts.capacity,
            resume_session,
            resume_epoch,
        };
        tx.send(proto::WorkerMessage { msg: Some(In::Register(register)) }).await?;
        // A stalled node accepts the connection but never answers: bound the wait.
        let mut svc = WorkerServiceClient::new(ch);
        let open = svc.session(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut inbound = match tokio::time::timeout(Duration::from_millis(600), open).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(s)) => {
                self.on_error(&s);
                anyhow::bail!("session refused: {s}");
            }
            Err(_) => anyhow::bail!("{url} did not open a session in time"),
        };
        let mut hb = tokio::time::interval(Duration::from_millis(300));
        let mut tick = tokio::time::interval(TICK);
        let mut seq = 0;
        let mut registered = false;
        let mut last_ack = Instant::now();
        // Like the SDK: a stalled (not dead) node keeps the connection open,
        // so silence is the only sign; reattach elsewhere well within the TTL.
        let mut reconnect_after = Duration::from_millis(600);
        loop {
            tokio::select! {
                biased;
                msg = inbound.message() => {
                    let msg = match msg {
                        Ok(Some(m)) => m,
                        Ok(None) => anyhow::bail!("stream closed by the node"),
                        Err(s) => {
                            self.on_error(&s);
                            anyhow::bail!("stream error: {s}");
                        }
                    };
                    match msg.msg {
                        Some(Out::Registered(r)) => {
                            registered = true;
                            last_ack = Instant::now();
                            reconnect_after = Duration::from_millis((r.heartbeat_interval_ms * 2).max(r.ttl_ms / 3));
                            self.session = Some((r.session, r.epoch));
                            hb = tokio::time::interval(Duration::from_millis(r.heartbeat_interval_ms.max(10)));
                        }
                        Some(Out::Assignment(a)) => self.on_assignment(a),
                        Some(Out::Cancel(c)) => {
                            if let Some(t) = c.task {
                                self.running.remove(&(t.job_id, t.shard, c.token));
                            }
                        }
                        Some(Out::ReportAck(a)) => self.on_ack(a),
                        Some(Out::HeartbeatAck(_)) => last_ack = Instant::now(),
                        None => {}
                    }
                }
                _ = hb.tick(), if registered => {
                    if last_ack.elapsed() > reconnect_after {
                        anyhow::bail!("no heartbeat ack for {:?}", last_ack.elapsed());
                    }
                    seq += 1;
                    tx.send(proto::WorkerMessage { msg: Some(In::Heartbeat(proto::Heartbeat { seq })) }).await?;
                }
                _ = tick.tick(), if registered => {
                    let now = Instant::now();
                    let done: Vec<Key> = self.running.iter().filter(|(_, at)| **at <= now).map(|(k, _)| *k).collect();
                    for key in done {
                        self.running.remove(&key);
                        let op = self.next_op;
                        self.next_op += 1;
                        let result = format!("{}:{}", self.opts.name, key.2);
                        self.rec.record(CompleteInvoke {
                            worker: self.opts.name.clone(),
                            op,
                            job: key.0,
                            shard: key.1,
                            token: key.2,
                            result: result.clone(),
                        });
                        self.unacked.insert(key, op);
                        let complete = proto::Complete {
                            task: Some(proto::TaskRef { job_id: key.0, shard: key.1 }),
                            token: key.2,
                            result: result.into_bytes(),
                        };
                        tx.send(proto::WorkerMessage { msg: Some(In::Complete(complete)) }).await?;
                    }
                }
            }
        }
    }

    fn on_error(&mut self, s: &tonic::Status) {
        self.leader = baton_client::error::leader_hint(s).map(|a| format!("http://{a}"));
        if matches!(s.code(), tonic::Code::FailedPrecondition | tonic::Code::NotFound) {
            // The session ended while we were away: register a new one. The
            // attempts we hold keep running and are still reported; the
            // cluster must fence them.
            self.session = None;
        }
    }

    fn on_assignment(&mut self, a: proto::Assignment) {
        let Some(t) = a.task else { return };
        let key = (t.job_id, t.shard, a.token);
        self.rec.record(Assign { worker: self.opts.name.clone(), job: key.0, shard: key.1, token: key.2, step: None });
        // A resync after reattaching re-sends attempts already held.
        if self.running.contains_key(&key) || self.unacked.contains_key(&key) {
            return;
        }
        let (lo, hi) = self.opts.work_ms;
        let ms = if hi > lo { self.rng.random_range(lo..=hi) } else { lo };
        self.running.insert(key, Instant::now() + Duration::from_millis(ms));
    }

    fn on_ack(&mut self, a: proto::ReportAck) {
        if a.kind != proto::ReportKind::Complete as i32 {
            return;
        }
        let Some(t) = a.task else { return };
        let Some(op) = self.unacked.remove(&(t.job_id, t.shard, a.token)) else { return };
        let outcome = match proto::ReportStatus::try_from(a.status) {
            Ok(proto::ReportStatus::Accepted) => CompleteOutcome::Ok,
            Ok(proto::ReportStatus::Duplicate) => CompleteOutcome::Duplicate,
            Ok(proto::ReportStatus::Fenced) => CompleteOutcome::Fenced,
            Ok(proto::ReportStatus::Rejected) => CompleteOutcome::Fail,
            _ => CompleteOutcome::Info,
        };
        self.rec.record(outcome.reply(&self.opts.name, op, &a.message));
    }
}

fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}
