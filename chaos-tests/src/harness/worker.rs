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
//!
//! Jobs a workflow started come with their step (`Assignment.workflow`),
//! which goes into the history. Their results follow the workload's
//! conventions ([`super::workload`]): a number first, so that a reduce can
//! sum; a reduce pages through its map job's committed results with
//! GetResults, as the SDK's reduce input does; a choice or a generator
//! reads what to do from its payload. Every result is a function of the
//! attempt and the committed state, so a resent complete carries the same.

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
use super::workload::{CHOICE_PREFIX, GENERATE_PAYLOAD, REDUCE_PAYLOAD};
use crate::history::{Assign, CompleteInvoke, CompleteOutcome, StepRef, StepRole, Token};

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
    /// TLS settings when the endpoints are `https://` (a `--secure` run).
    pub tls: Option<baton_client::TlsOptions>,
    /// Bearer token for the session and the reads.
    pub token: Option<String>,
}

type Key = (u64, u32, Token);

/// What an attempt computes when its time is up.
#[derive(Debug, Clone)]
enum Work {
    /// A plain job: `<worker>:<token>`.
    Plain,
    /// A workflow job's map shard: a number, then where it came from.
    Value,
    /// Choose among these successors.
    Choose(Vec<String>),
    /// Emit 0-3 child shards.
    Generate,
    /// Sum the committed results of this map job of so many shards (`None`:
    /// no shard was emitted).
    Reduce(Option<(u64, u32)>),
}

struct State {
    opts: WorkerOpts,
    rec: Recorder,
    rng: rand::rngs::StdRng,
    session: Option<(u64, u64)>,
    /// Attempts being "worked", with when they finish and what they compute.
    running: BTreeMap<Key, (Instant, Work)>,
    /// Reduces reading their input; a cancel takes the key out, and the
    /// result is then dropped.
    reducing: BTreeMap<Key, Work>,
    /// Completes of attempts whose result came from a reduce.
    done_tx: mpsc::Sender<(Key, Vec<u8>)>,
    /// Clients reducing read GetResults through.
    client: baton_client::Client,
    /// Completes sent and not yet answered: key -> (op, what it computed).
    unacked: BTreeMap<Key, (u64, Work)>,
    next_op: u64,
    next_url: usize,
    leader: Option<String>,
}

/// Run until killed.
pub async fn run(opts: WorkerOpts) -> Result<()> {
    let rec = Recorder::create(&opts.out)?;
    let mut cfg = baton_client::ClientConfig::new(opts.endpoints.clone());
    cfg.tls = opts.tls.clone();
    cfg.token = opts.token.clone();
    let client = baton_client::Client::new(cfg)?;
    let (done_tx, mut done_rx) = mpsc::channel(OUTBOUND_QUEUE);
    let mut st = State {
        // Each worker draws its own durations from the run's seed.
        rng: rand::rngs::StdRng::seed_from_u64(
            opts.seed ^ u64::from_le_bytes(*b"wrk\0\0\0\0\0") ^ name_hash(&opts.name),
        ),
        rec,
        opts,
        session: None,
        running: BTreeMap::new(),
        reducing: BTreeMap::new(),
        done_tx,
        client,
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
        if let Err(e) = st.session_once(&url, &mut done_rx).await {
            tracing::debug!(worker = %st.opts.name, url = %url, error = %e, "session ended");
        }
        // Every complete still unanswered has an unknown outcome; resend it
        // with the same token as a new op on the next stream.
        let lost: Vec<(Key, (u64, Work))> = std::mem::take(&mut st.unacked).into_iter().collect();
        for (key, (op, work)) in lost {
            st.rec.record(CompleteOutcome::Info.reply(&st.opts.name, op, "stream closed before the ack"));
            st.running.insert(key, (Instant::now(), work));
        }
        tokio::time::sleep(Duration::from_millis(st.rng.random_range(20..100))).await;
    }
}

impl State {
    async fn session_once(&mut self, url: &str, done_rx: &mut mpsc::Receiver<(Key, Vec<u8>)>) -> Result<()> {
        let ch = baton_client::tls::endpoint(url, self.opts.tls.as_ref())?
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
        let mut svc = WorkerServiceClient::with_interceptor(ch, self.client.bearer());
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
                                self.reducing.remove(&(t.job_id, t.shard, c.token));
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
                Some((key, result)) = done_rx.recv(), if registered => {
                    // A reduce read its input; send it unless it was cancelled meanwhile.
                    if let Some(work) = self.reducing.remove(&key) {
                        self.send_complete(&tx, key, work, result).await?;
                    }
                }
                _ = tick.tick(), if registered => {
                    let now = Instant::now();
                    let done: Vec<Key> = self.running.iter().filter(|(_, (at, _))| *at <= now).map(|(k, _)| *k).collect();
                    for key in done {
                        let Some((_, work)) = self.running.remove(&key) else { continue };
                        match self.result(key, &work) {
                            Some(result) => self.send_complete(&tx, key, work, result).await?,
                            None => self.start_reduce(key, work),
                        }
                    }
                }
            }
        }
    }

    async fn send_complete(
        &mut self,
        tx: &mpsc::Sender<proto::WorkerMessage>,
        key: Key,
        work: Work,
        result: Vec<u8>,
    ) -> Result<()> {
        let op = self.next_op;
        self.next_op += 1;
        self.rec.record(CompleteInvoke {
            worker: self.opts.name.clone(),
            op,
            job: key.0,
            shard: key.1,
            token: key.2,
            result: String::from_utf8_lossy(&result).into_owned(),
        });
        self.unacked.insert(key, (op, work));
        let complete = proto::Complete {
            task: Some(proto::TaskRef { job_id: key.0, shard: key.1 }),
            token: key.2,
            result,
            log_chunk: None,
        };
        tx.send(proto::WorkerMessage { msg: Some(In::Complete(complete)) }).await?;
        Ok(())
    }

    /// The result of an attempt, or `None` for a reduce, which reads its
    /// input first ([`State::start_reduce`]).
    fn result(&self, (job, shard, token): Key, work: &Work) -> Option<Vec<u8>> {
        let name = &self.opts.name;
        // Drawn from the attempt, not from the worker's RNG: a resent
        // complete carries the same result.
        let draw = name_hash(&format!("{}/{job}/{shard}/{token}", self.opts.seed));
        Some(match work {
            Work::Plain => format!("{name}:{token}").into_bytes(),
            Work::Value => format!("{} {name}:{job}/{shard}@{token}", token % 100).into_bytes(),
            Work::Choose(succs) => {
                let picked: Vec<&str> =
                    succs.iter().enumerate().filter(|(i, _)| draw >> i & 1 == 1).map(|(_, s)| s.as_str()).collect();
                // One draw in eight chooses nothing, which skips every branch.
                let picked = if picked.is_empty() && !draw.is_multiple_of(8) {
                    succs.iter().map(String::as_str).take(1).collect()
                } else {
                    picked
                };
                baton_client::workflow::choose(&picked)
            }
            Work::Generate => {
                let children: Vec<Vec<u8>> = (0..draw % 4).map(|i| format!("child-{i}").into_bytes()).collect();
                baton_client::workflow::emit_children(&children)
            }
            Work::Reduce(_) => return None,
        })
    }

    /// Read a reduce's input off the stream loop, page by page, and hand
    /// back its result; retried until the cluster answers.
    fn start_reduce(&mut self, key: Key, work: Work) {
        let Work::Reduce(map) = work else { return };
        self.reducing.insert(key, work);
        let (client, done, name) = (self.client.clone(), self.done_tx.clone(), self.opts.name.clone());
        tokio::spawn(async move {
            loop {
                match reduce_input_sum(&client, map).await {
                    Ok((sum, shards)) => {
                        let r = format!("{sum} {name}:{}/{}@{} reduce of {shards}", key.0, key.1, key.2);
                        let _ = done.send((key, r.into_bytes())).await;
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(job = key.0, error = %e, "reduce input not read; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
    }

    fn on_error(&mut self, s: &tonic::Status) {
        self.leader = baton_client::error::leader_hint(s)
            .and_then(|a| baton_client::tls::normalize_url(&a, self.client.uses_tls()).ok());
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
        let step = a.workflow.as_ref().map(|w| StepRef {
            workflow: w.workflow_id,
            step: w.step.clone(),
            role: match proto::StepRole::try_from(w.role) {
                Ok(proto::StepRole::Generate) => StepRole::Generate,
                Ok(proto::StepRole::Reduce) => StepRole::Reduce,
                _ => StepRole::Map,
            },
            reduce_of: (w.reduce_of_job_id != 0).then_some(w.reduce_of_job_id),
        });
        let work = match &step {
            None => Work::Plain,
            Some(s) if s.role == StepRole::Reduce && a.payload == REDUCE_PAYLOAD => {
                let shards = a.workflow.as_ref().map_or(0, |w| w.reduce_of_shards);
                Work::Reduce(s.reduce_of.map(|job| (job, shards)))
            }
            Some(_) if a.payload == GENERATE_PAYLOAD => Work::Generate,
            Some(_) => match a.payload.strip_prefix(CHOICE_PREFIX) {
                Some(names) => Work::Choose(
                    String::from_utf8_lossy(names).split(',').filter(|n| !n.is_empty()).map(str::to_string).collect(),
                ),
                None => Work::Value,
            },
        };
        self.rec.record(Assign { worker: self.opts.name.clone(), job: key.0, shard: key.1, token: key.2, step });
        // A resync after reattaching re-sends attempts already held.
        if self.running.contains_key(&key) || self.unacked.contains_key(&key) || self.reducing.contains_key(&key) {
            return;
        }
        let (lo, hi) = self.opts.work_ms;
        let ms = if hi > lo { self.rng.random_range(lo..=hi) } else { lo };
        self.running.insert(key, (Instant::now() + Duration::from_millis(ms), work));
    }

    fn on_ack(&mut self, a: proto::ReportAck) {
        if a.kind != proto::ReportKind::Complete as i32 {
            return;
        }
        let Some(t) = a.task else { return };
        let Some((op, _)) = self.unacked.remove(&(t.job_id, t.shard, a.token)) else { return };
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

/// The sum of the leading numbers of `map`'s committed shard results, read
/// a page at a time as the SDK's reduce input does, and how many shards.
async fn reduce_input_sum(client: &baton_client::Client, map: Option<(u64, u32)>) -> Result<(u64, u32)> {
    let Some((job, shards)) = map else { return Ok((0, 0)) };
    let (mut sum, mut from) = (0u64, 0u32);
    while from < shards {
        let page = client.results_page(job, from, REDUCE_PAGE_SHARDS).await?;
        anyhow::ensure!(page.next_shard > from, "results of job {job} from shard {from} did not advance");
        for r in &page.results {
            anyhow::ensure!(
                r.status == proto::TaskStatus::Succeeded as i32,
                "shard {} of map job {job} is not succeeded",
                r.shard
            );
            let text = String::from_utf8_lossy(&r.result);
            sum += text.split(' ').next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
        from = page.next_shard;
    }
    Ok((sum, shards))
}

/// Shards per GetResults page a reduce reads: small, so that even the
/// workload's few shards take more than one page now and then.
const REDUCE_PAGE_SHARDS: u32 = 2;

fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}
