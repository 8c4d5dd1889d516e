//! The workload: submitters that send `SubmitJob` with idempotency keys and
//! retry until acknowledged (now and then at the largest allowed payload),
//! and sometimes follow up on a job they submitted: cancel it, cancel one
//! of its shards, or retry its dead shards (only on a job they never
//! cancelled anything of, so a revived shard never meets the sim's
//! cancel-fencing verdict); workers that register,
//! heartbeat the leader, run the attempts it grants, report progress, and
//! report each attempt with its token: mostly a completion, sometimes a
//! retryable or a fatal failure. Submits and completes go into the history;
//! cancels and failure reports are judged by the sim itself (see
//! [`report`]) and show in the final state (cancelled tasks, dead tasks,
//! failed jobs), which the checker accepts as finished.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_chaos::history::CompleteOutcome;
use baton_raft_store::limits::MAX_JOB_PAYLOAD_BYTES;
use baton_raft_store::{Backoff, Command, JobId, JobSpec, NodeId, Outcome, Response, SessionId, TaskKey, Token};

use crate::flows::{self, NotReady};
use crate::net::{ClientReply, client_call, client_write};
use crate::node::{HbReply, heartbeat};
use crate::schedules;
use crate::world::{Attempt, Ending, Phase, Pushed, WorkerState, World};

/// Worker loop period, ms.
const WORKER_TICK_MS: u64 = 50;
/// Worker heartbeat period, ms.
pub const WORKER_HEARTBEAT_MS: u64 = 250;
/// Slots per worker (inclusive range).
pub const WORKER_CAPACITY: (u64, u64) = (4, 5);
/// Chance that a job carries the largest allowed payload
/// (`MAX_JOB_PAYLOAD_BYTES`, split over its shards), per mille. Small: such a
/// job is copied into every replica's log, state and snapshots.
pub const LARGE_JOB_PER_MILLE: u32 = 25;
/// Chance that a submitter cancels a job it just submitted, per mille.
pub const CANCEL_PER_MILLE: u32 = 150;
/// Chance that it cancels one shard of it instead, per mille.
pub const CANCEL_TASK_PER_MILLE: u32 = 60;
/// Chance that it asks for a retry of the job's dead shards later instead
/// (refused with NothingToRetry when none died), per mille.
pub const RETRY_PER_MILLE: u32 = 150;
/// Chance that an attempt ends in a retryable failure report, and in a
/// fatal (non-retryable) one, per mille; the rest complete.
pub const RETRYABLE_FAIL_PER_MILLE: u32 = 120;
pub const FATAL_FAIL_PER_MILLE: u32 = 15;
/// Chance that a worker reports progress halfway through an attempt, per mille.
pub const PROGRESS_PER_MILLE: u32 = 400;

pub(crate) fn retarget<T>(w: &mut World, current: NodeId, reply: &ClientReply<T>) -> NodeId {
    match reply {
        ClientReply::NotLeader(Some(l)) => *l,
        ClientReply::Ok(_) => current,
        _ => w.other_node(current),
    }
}

/// One submitter: `jobs` jobs, one at a time, each retried with its key until acknowledged.
pub async fn submitter(world: Arc<Mutex<World>>, client: usize, jobs: usize) {
    let name = format!("c{client}");
    let mut target = {
        let mut w = world.lock().unwrap();
        let n = w.cfg.nodes as u64;
        w.range(1, n)
    };
    let mut op = 0u64;
    for k in 0..jobs {
        let (gap, shards, priority, ns, large, followup) = {
            let mut w = world.lock().unwrap();
            let (gap, shards, priority, ns) =
                (w.range(100, 2_000), w.range(1, 4) as usize, w.range(0, 2) as i32, w.range(0, 1));
            let large = w.chance(LARGE_JOB_PER_MILLE);
            let followup = if w.chance(CANCEL_PER_MILLE) {
                Some((w.range(0, 1_500), Followup::Cancel))
            } else if w.chance(CANCEL_TASK_PER_MILLE) {
                Some((w.range(0, 1_500), Followup::CancelTask(w.range(0, shards as u64 - 1) as u32)))
            } else if w.chance(RETRY_PER_MILLE) {
                Some((w.range(500, 4_000), Followup::Retry))
            } else {
                None
            };
            w.stats.large_jobs += u64::from(large);
            (gap, shards, priority, ns, large, followup)
        };
        tokio::time::sleep(Duration::from_millis(gap)).await;
        let key = format!("{name}-k{k}");
        let mut spec = JobSpec::with_shards(&format!("ns{ns}"), shards);
        spec.name = key.clone();
        spec.priority = priority;
        spec.max_attempts = 50;
        spec.backoff = Backoff { base_ms: 50, max_ms: 400 };
        spec.attempt_timeout_ms = 4_000;
        spec.idempotency_key = Some(key.clone());
        let oversized = if client == 1 && k == 0 { world.lock().unwrap().cfg.oversized_job_bytes } else { None };
        for (i, p) in spec.payloads.iter_mut().enumerate() {
            let mut bytes = format!("{key}/{i}").into_bytes();
            if let Some(total) = oversized {
                bytes.resize(total / shards, b'!');
            } else if large {
                // The documented maximum, summed over the shards.
                bytes.resize(MAX_JOB_PAYLOAD_BYTES / shards, b'.');
            }
            *p = serde_bytes::ByteBuf::from(bytes);
        }
        let mut acked = None;
        loop {
            op += 1;
            {
                let mut w = world.lock().unwrap();
                let t = w.now_ms();
                w.history.submit_invoke(t, &name, op, &key, shards as u32);
            }
            let reply = client_write(&world, target, Command::SubmitJob(spec.clone())).await;
            let retry_ms = {
                let mut w = world.lock().unwrap();
                let t = w.now_ms();
                let retry_ms = match &reply {
                    ClientReply::Ok(Response::Done(Outcome::Submitted { job, .. })) => {
                        w.history.submit_ok(t, &name, op, *job);
                        acked = Some(*job);
                        None
                    }
                    ClientReply::Ok(other) => {
                        // Refused by apply(): definitely not applied, and a retry
                        // with the same spec would be refused the same way.
                        w.history.submit_fail(t, &name, op, &format!("{other:?}"));
                        None
                    }
                    ClientReply::NotLeader(_) => {
                        w.history.submit_fail(t, &name, op, "not the leader");
                        Some(20)
                    }
                    ClientReply::Refused(e) => {
                        w.history.submit_fail(t, &name, op, e);
                        Some(100)
                    }
                    ClientReply::Unknown(e) => {
                        w.history.submit_info(t, &name, op, e);
                        Some(w.range(50, 400))
                    }
                };
                target = retarget(&mut w, target, &reply);
                retry_ms.filter(|_| w.phase != Phase::Stopped)
            };
            let Some(retry_ms) = retry_ms else { break };
            tokio::time::sleep(Duration::from_millis(retry_ms)).await;
        }
        if let (Some(job), Some((after_ms, f))) = (acked, followup) {
            tokio::time::sleep(Duration::from_millis(after_ms)).await;
            target = match f {
                Followup::Cancel => cancel_job(&world, &name, target, job).await,
                Followup::CancelTask(shard) => job_op(&world, &name, target, job, f, shard).await,
                Followup::Retry => job_op(&world, &name, target, job, f, 0).await,
            };
        }
    }
    world.lock().unwrap().clients_done += 1;
}

/// What a submitter does about a job after submitting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Followup {
    Cancel,
    /// Cancel this shard.
    CancelTask(u32),
    /// Retry the job's dead shards.
    Retry,
}

/// CancelTask or RetryJob until the answer is definite: committed, or
/// refused (the shard finished first, nothing died, or an earlier try
/// whose answer was lost went through). Returns the node to talk to next.
async fn job_op(
    world: &Arc<Mutex<World>>,
    name: &str,
    mut target: NodeId,
    job: JobId,
    f: Followup,
    shard: u32,
) -> NodeId {
    loop {
        let cmd = match f {
            Followup::CancelTask(_) => {
                Command::CancelTask { task: TaskKey::new(job, shard), reason: format!("{name} dropped it") }
            }
            _ => Command::RetryJob { job },
        };
        let reply = client_write(world, target, cmd).await;
        let retry_ms = {
            let mut w = world.lock().unwrap();
            let retry_ms = match &reply {
                ClientReply::Ok(Response::Done(Outcome::TaskCancelled { task, revoked, .. })) => {
                    w.stats.tasks_cancelled += 1;
                    let token = revoked.as_ref().map(|r| r.token);
                    w.trace(format_args!("cancel-task-committed {name} {task} revoked={token:?}"));
                    None
                }
                ClientReply::Ok(Response::Done(Outcome::JobRetried { requeued, .. })) => {
                    w.stats.jobs_retried += 1;
                    w.trace(format_args!("retry-committed {name} job {job} requeued={requeued}"));
                    None
                }
                ClientReply::Ok(other) => {
                    w.trace(format_args!("{f:?}-refused {name} job {job} {other:?}"));
                    None
                }
                ClientReply::NotLeader(_) => Some(20),
                ClientReply::Refused(_) => Some(100),
                ClientReply::Unknown(_) => Some(w.range(50, 400)),
            };
            target = retarget(&mut w, target, &reply);
            retry_ms.filter(|_| w.phase != Phase::Stopped)
        };
        let Some(retry_ms) = retry_ms else { return target };
        tokio::time::sleep(Duration::from_millis(retry_ms)).await;
    }
}

/// Cancel `job` until the answer is definite: committed, or refused (it
/// finished first, or an earlier try whose answer was lost cancelled it).
/// Returns the node to talk to next.
async fn cancel_job(world: &Arc<Mutex<World>>, name: &str, mut target: NodeId, job: JobId) -> NodeId {
    loop {
        let cmd = Command::CancelJob { job, reason: format!("{name} changed its mind") };
        let reply = client_write(world, target, cmd).await;
        let retry_ms = {
            let mut w = world.lock().unwrap();
            let retry_ms = match &reply {
                ClientReply::Ok(Response::Done(Outcome::Cancelled { tasks_cancelled, .. })) => {
                    let t = w.now_ms();
                    w.cancelled_jobs.insert(job, t);
                    w.stats.cancels += 1;
                    w.trace(format_args!("cancel-committed {name} job {job} tasks={tasks_cancelled}"));
                    None
                }
                ClientReply::Ok(other) => {
                    w.trace(format_args!("cancel-refused {name} job {job} {other:?}"));
                    None
                }
                ClientReply::NotLeader(_) => Some(20),
                ClientReply::Refused(_) => Some(100),
                ClientReply::Unknown(_) => Some(w.range(50, 400)),
            };
            target = retarget(&mut w, target, &reply);
            retry_ms.filter(|_| w.phase != Phase::Stopped)
        };
        let Some(retry_ms) = retry_ms else { return target };
        tokio::time::sleep(Duration::from_millis(retry_ms)).await;
    }
}

pub fn new_worker(w: &mut World, i: usize) -> WorkerState {
    // The chaos harness's 4 slots per worker, plus one for the steady load
    // of schedule and event runs (a held overlap-skip run, ticks, event
    // runs): the reassignment bound promises a regrant when some live
    // worker has room, so the sim keeps room for a paused worker's tasks
    // except after long leaderless spells.
    let capacity = w.range(WORKER_CAPACITY.0, WORKER_CAPACITY.1) as u32;
    let target = w.range(1, w.cfg.nodes as u64);
    WorkerState {
        name: format!("w{i}"),
        capacity,
        session: None,
        registering: false,
        target,
        hb_in_flight: false,
        next_hb: 0,
        paused_until: 0,
        attempts: BTreeMap::new(),
        seen: BTreeSet::new(),
        next_op: 0,
        zombie: BTreeSet::new(),
    }
}

enum Act {
    Register,
    Heartbeat(SessionId),
    Report(TaskKey, Token, Ending, Vec<u8>),
    Progress(TaskKey, Token),
}

/// One worker process.
pub async fn worker(world: Arc<Mutex<World>>, i: usize) {
    loop {
        tokio::time::sleep(Duration::from_millis(WORKER_TICK_MS)).await;
        let acts = {
            let mut w = world.lock().unwrap();
            if w.phase == Phase::Stopped {
                return;
            }
            let now = w.now_ms();
            if w.workers[i].paused_until > now {
                continue;
            }
            let mut acts = Vec::new();
            // Reports first: a zombie waking up sends its stale result before it
            // learns that its session is gone.
            let due: Vec<TaskKey> = w.workers[i]
                .attempts
                .iter()
                .filter(|(_, a)| !a.reporting && (a.finish_at <= now || a.progress_at.is_some_and(|p| p <= now)))
                .map(|(t, _)| *t)
                .collect();
            for task in due {
                let a = w.workers[i].attempts[&task].clone();
                if a.finish_at > now {
                    w.workers[i].attempts.get_mut(&task).expect("due").progress_at = None;
                    acts.push(Act::Progress(task, a.token));
                    continue;
                }
                // The grant's job record may not have been readable when it
                // arrived (its node crashed, the others lagged): read it now.
                let origin = match &a.origin {
                    Some(o) => Some(o.clone()),
                    None => flows::origin_of(&w, task.job),
                };
                let result = match (&origin, a.ending) {
                    _ if a.result.is_some() => a.result.clone().expect("just checked"),
                    (None, Ending::Complete) => {
                        w.stats.inputs_not_ready += 1;
                        w.workers[i].attempts.get_mut(&task).expect("due").finish_at = now + 100;
                        continue;
                    }
                    (Some(Some(o)), Ending::Complete) => {
                        let (node, tag) = (w.workers[i].target, w.workers[i].name.clone());
                        match flows::result(&mut w, node, &tag, task, a.token, o) {
                            Ok(r) => r,
                            Err(NotReady(why)) => {
                                // Its input is committed, but no node we can read has applied it yet.
                                w.stats.inputs_not_ready += 1;
                                w.trace(format_args!("not-ready {tag} {task} t{}: {why}", a.token));
                                w.workers[i].attempts.get_mut(&task).expect("due").finish_at = now + 100;
                                continue;
                            }
                        }
                    }
                    _ => format!("{}:{}/{}@{}", w.workers[i].name, task.job, task.shard, a.token).into_bytes(),
                };
                let att = w.workers[i].attempts.get_mut(&task).expect("due");
                att.reporting = true;
                att.result = Some(result.clone());
                acts.push(Act::Report(task, a.token, a.ending, result));
            }
            let ws = &mut w.workers[i];
            match ws.session {
                None if !ws.registering => {
                    ws.registering = true;
                    acts.push(Act::Register);
                }
                Some((s, _)) if !ws.hb_in_flight && now >= ws.next_hb => {
                    ws.hb_in_flight = true;
                    acts.push(Act::Heartbeat(s));
                }
                _ => {}
            }
            acts
        };
        for a in acts {
            match a {
                Act::Register => tokio::spawn(register(world.clone(), i)),
                Act::Heartbeat(s) => tokio::spawn(send_heartbeat(world.clone(), i, s)),
                Act::Report(task, token, ending, result) => {
                    tokio::spawn(report(world.clone(), i, task, token, ending, result))
                }
                Act::Progress(task, token) => tokio::spawn(progress(world.clone(), i, task, token)),
            };
        }
    }
}

async fn register(world: Arc<Mutex<World>>, i: usize) {
    let (target, cmd) = {
        let w = world.lock().unwrap();
        let ws = &w.workers[i];
        let cmd = Command::RegisterWorker {
            name: ws.name.clone(),
            labels: BTreeMap::new(),
            capacity: ws.capacity,
            namespaces: None,
        };
        (ws.target, cmd)
    };
    let reply = client_write(&world, target, cmd).await;
    let mut w = world.lock().unwrap();
    let now = w.now_ms();
    let next = retarget(&mut w, target, &reply);
    let ws = &mut w.workers[i];
    ws.registering = false;
    ws.target = next;
    if let ClientReply::Ok(Response::Done(Outcome::Registered { session, epoch, .. })) = reply {
        ws.session = Some((session, epoch));
        ws.next_hb = now;
        let name = ws.name.clone();
        w.trace(format_args!("registered {name} s{session} e{epoch}"));
    }
}

async fn send_heartbeat(world: Arc<Mutex<World>>, i: usize, session: SessionId) {
    let (target, seq) = {
        let w = world.lock().unwrap();
        (w.workers[i].target, w.now_ms())
    };
    let w2 = world.clone();
    let reply = client_call(&world, target, "heartbeat", move |_, _| async move {
        let mut w = w2.lock().unwrap();
        ClientReply::Ok(heartbeat(&w2, &mut w, target, session, seq))
    })
    .await;
    let mut w = world.lock().unwrap();
    let now = w.now_ms();
    let exec = (w.cfg.exec_ms.0, w.cfg.exec_ms.1);
    let mut next = match &reply {
        ClientReply::Ok(HbReply::NotLeader(Some(l))) => *l,
        ClientReply::Ok(HbReply::NotLeader(None)) => w.other_node(target),
        _ => retarget(&mut w, target, &reply),
    };
    let pushed = match &reply {
        ClientReply::Ok(HbReply::Acked(p) | HbReply::NotAcked(p)) => p.clone(),
        _ => Vec::new(),
    };
    let current = w.workers[i].session.is_some_and(|(s, _)| s == session);
    let mut grants = Vec::new();
    for p in pushed.into_iter().filter(|_| current) {
        match p {
            Pushed::Grant(task, token) => grants.push((task, token)),
            // Stop an attempt the leader took back (a cancelled job, a
            // timeout) unless its report is already on its way.
            Pushed::Cancel(task, token) => {
                let ws = &mut w.workers[i];
                if ws.attempts.get(&task).is_some_and(|a| a.token == token && !a.reporting) {
                    ws.attempts.remove(&task);
                    w.stats.cancels_applied += 1;
                    let name = w.workers[i].name.clone();
                    w.trace(format_args!("cancelled {name} {task} t{token}"));
                }
            }
        }
    }
    {
        let held = &grants;
        for (task, token) in held.iter() {
            if w.workers[i].seen.contains(&(*task, *token)) {
                continue;
            }
            let newer = w.max_token.get(task).is_none_or(|m| token > m);
            w.workers[i].seen.insert((*task, *token));
            if !newer {
                // A grant older than one already delivered elsewhere: it is
                // stale, and recording it would put tokens out of order.
                w.stats.stale_deliveries += 1;
                continue;
            }
            w.max_token.insert(*task, *token);
            let name = w.workers[i].name.clone();
            let origin = flows::origin_of(&w, task.job);
            let step = origin.as_ref().and_then(|o| o.as_ref().map(flows::step_ref));
            w.history.assign_step(now, &name, baton_chaos::history::TaskKey::new(task.job, task.shard), *token, step);
            let mut run_ms = w.range(exec.0, exec.1);
            if let Some(hold) = schedules::hold_ms(&w, *task) {
                // A run of an overlap-skip schedule: longer than its period.
                run_ms = hold;
                w.stats.held_attempts += 1;
            }
            let progress_at = w.chance(PROGRESS_PER_MILLE).then_some(now + run_ms / 2);
            let in_workflow = matches!(origin, Some(Some(_)));
            let fatal = if in_workflow { flows::WORKFLOW_FATAL_FAIL_PER_MILLE } else { FATAL_FAIL_PER_MILLE };
            let ending = if w.chance(fatal) {
                Ending::Fail { retryable: false }
            } else if w.chance(RETRYABLE_FAIL_PER_MILLE) {
                Ending::Fail { retryable: true }
            } else {
                Ending::Complete
            };
            let a = Attempt {
                token: *token,
                session,
                finish_at: now + run_ms,
                progress_at,
                ending,
                reporting: false,
                origin,
                result: None,
            };
            w.workers[i].attempts.insert(*task, a);
        }
    }
    let ws = &mut w.workers[i];
    ws.hb_in_flight = false;
    ws.next_hb = now + WORKER_HEARTBEAT_MS;
    if let ClientReply::Ok(HbReply::Ended) = reply
        && ws.session.is_some_and(|(s, _)| s == session)
    {
        // The session is gone: abandon unfinished work, keep finished results to report.
        ws.session = None;
        ws.attempts.retain(|_, a| a.finish_at <= now);
        let name = ws.name.clone();
        w.trace(format_args!("session-ended {name} s{session}"));
        next = target;
    }
    w.workers[i].target = next;
}

/// A progress report: fire and forget (a lost one is harmless).
async fn progress(world: Arc<Mutex<World>>, i: usize, task: TaskKey, token: Token) {
    let target = {
        let mut w = world.lock().unwrap();
        w.stats.progress_reports += 1;
        w.workers[i].target
    };
    let cmd = Command::ReportProgress { task, token, progress_bp: 5_000, message: "halfway".into() };
    let reply = client_write(&world, target, cmd).await;
    let mut w = world.lock().unwrap();
    let name = w.workers[i].name.clone();
    let answer = match &reply {
        ClientReply::Ok(Response::Done(Outcome::Progressed { .. })) => "ok".to_string(),
        ClientReply::Ok(Response::Rejected(e)) if e.is_fenced() => "fenced".to_string(),
        other => format!("{other:?}"),
    };
    w.trace(format_args!("progress {name} {task} t{token} {answer}"));
}

/// How the cluster answered a report, as far as the worker can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// The report changed the task.
    Accepted,
    /// It repeated one already applied; nothing changed.
    Duplicate,
    Fenced,
    /// Refused for another reason; not applied.
    Refused,
    /// Not applied, try again (not the leader, connection refused).
    Retry,
    /// Maybe applied; try again.
    Unknown,
}

/// What was known to be committed when a report was sent.
struct Sent<'a> {
    worker: &'a str,
    /// `report`, `retryable failure report`, ...
    what: &'a str,
    task: TaskKey,
    token: Token,
    op: u64,
    /// The attempt's session, if its end was already applied somewhere, and where.
    ended: Option<(SessionId, NodeId)>,
    /// Why the job was known cancelled, if it was.
    cancelled: Option<&'a str>,
}

impl Sent<'_> {
    /// The sim's fencing verdict: a report sent after its attempt's end was
    /// committed (session expired, job cancelled) must not change the task.
    /// Duplicate, fenced and refused answers change nothing.
    fn breaches(&self, answer: Answer) -> Vec<String> {
        if answer != Answer::Accepted {
            return Vec::new();
        }
        let Sent { worker, what, task, token, op, .. } = self;
        let mut out = Vec::new();
        if let Some((session, node)) = self.ended {
            out.push(format!(
                "{worker}'s {what} of task {task} token {token} (op {op}) was accepted although its session {session} \
                 had already ended (applied on node {node}) when the report was sent; it must be fenced"
            ));
        }
        if let Some(why) = self.cancelled {
            out.push(format!(
                "{worker}'s {what} of task {task} token {token} (op {op}) was accepted although job {} was already \
                 cancelled when the report was sent ({why}); it must be fenced",
                task.job
            ));
        }
        out
    }
}

/// Report an attempt's end (`ending`) with its token, retrying until the
/// answer is definite. Completes go into the history (the checker judges
/// them); failure reports do not: the checker has no invariant over them
/// that the final state does not already show (a dead task, a failed job),
/// and whether a stale one was fenced is judged here. The sim judges both
/// kinds: a report sent after its attempt's end was committed (the session
/// expired, or the job was cancelled) must not change the task.
async fn report(world: Arc<Mutex<World>>, i: usize, task: TaskKey, token: Token, ending: Ending, result: Vec<u8>) {
    let (target, name, op, ended, cancelled) = {
        let mut w = world.lock().unwrap();
        let t = w.now_ms();
        // If the attempt's session has already ended on some replica, that end is
        // committed before this report can be, so the report must not commit.
        let session = w.workers[i].attempts.get(&task).map(|a| a.session);
        let ended = session.and_then(|s| Some((s, w.session_ended_on(s)?)));
        // Likewise a cancel of the job: known committed once its reply came
        // back, or once some replica applied it.
        let cancelled = match w.cancelled_jobs.get(&task.job) {
            Some(at) => Some(format!("its cancel was acknowledged at t={at}")),
            None => w.task_cancelled_on(task).map(|n| format!("node {n} had applied its cancel")),
        };
        let ws = &mut w.workers[i];
        ws.next_op += 1;
        let (name, op, target) = (ws.name.clone(), ws.next_op, ws.target);
        match ending {
            Ending::Complete => {
                let hk = baton_chaos::history::TaskKey::new(task.job, task.shard);
                w.history.complete_invoke(t, &name, op, hk, token, &String::from_utf8_lossy(&result));
            }
            Ending::Fail { retryable } => {
                w.stats.fail_reports += 1;
                w.stats.fatal_fail_reports += u64::from(!retryable);
            }
        }
        (target, name, op, ended, cancelled)
    };
    let cmd = match ending {
        Ending::Complete => {
            Command::CompleteTask { task, token, result: serde_bytes::ByteBuf::from(result), logs: Default::default() }
        }
        Ending::Fail { retryable } => {
            let error = format!("{} failed", String::from_utf8_lossy(&result));
            Command::FailTask { task, token, error, retryable, logs: Default::default() }
        }
    };
    let reply = client_write(&world, target, cmd).await;
    let mut w = world.lock().unwrap();
    let t = w.now_ms();
    let (answer, detail) = match &reply {
        ClientReply::Ok(Response::Done(Outcome::Completed { duplicate, .. } | Outcome::Failed { duplicate, .. })) => {
            (if *duplicate { Answer::Duplicate } else { Answer::Accepted }, String::new())
        }
        ClientReply::Ok(Response::Rejected(e)) if e.is_fenced() => (Answer::Fenced, e.to_string()),
        ClientReply::Ok(other) => (Answer::Refused, format!("{other:?}")),
        ClientReply::NotLeader(_) => (Answer::Retry, "not the leader".into()),
        ClientReply::Refused(e) => (Answer::Retry, e.clone()),
        ClientReply::Unknown(e) => (Answer::Unknown, e.clone()),
    };
    let done = !matches!(answer, Answer::Retry | Answer::Unknown);
    let what = match ending {
        Ending::Complete => {
            let outcome = match answer {
                Answer::Accepted => CompleteOutcome::Ok,
                Answer::Duplicate => CompleteOutcome::Duplicate,
                Answer::Fenced => CompleteOutcome::Fenced,
                Answer::Refused | Answer::Retry => CompleteOutcome::Fail,
                Answer::Unknown => CompleteOutcome::Info,
            };
            w.history.complete_reply(t, &name, op, outcome, &detail);
            "report"
        }
        Ending::Fail { retryable: true } => "retryable failure report",
        Ending::Fail { retryable: false } => "fatal failure report",
    };
    let ended_s = ended.map(|(s, _)| s);
    w.trace(format_args!("reported {name} {task} t{token} {ending:?} {answer:?} ended={ended_s:?}"));
    let sent = Sent { worker: &name, what, task, token, op, ended, cancelled: cancelled.as_deref() };
    let breaches = sent.breaches(answer);
    w.violations.extend(breaches);
    if done && w.workers[i].zombie.remove(&(task, token)) {
        w.stats.zombie_reports += 1;
        w.stats.zombie_fenced += u64::from(answer == Answer::Fenced);
    }
    let next = retarget(&mut w, target, &reply);
    let ws = &mut w.workers[i];
    ws.target = next;
    if let Some(a) = ws.attempts.get_mut(&task)
        && a.token == token
    {
        if done {
            ws.attempts.remove(&task);
        } else {
            a.reporting = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(ended: Option<(SessionId, NodeId)>, cancelled: Option<&str>) -> Sent<'_> {
        Sent { worker: "w1", what: "report", task: TaskKey::new(3, 1), token: 17, op: 4, ended, cancelled }
    }

    #[test]
    fn a_report_accepted_after_its_end_was_committed_is_a_breach() {
        let expired = sent(Some((2, 1)), None);
        let b = expired.breaches(Answer::Accepted);
        assert_eq!(b.len(), 1, "{b:?}");
        assert!(b[0].contains("session 2 had already ended"), "{}", b[0]);
        let cancelled = sent(None, Some("its cancel was acknowledged at t=900"));
        let b = cancelled.breaches(Answer::Accepted);
        assert_eq!(b.len(), 1, "{b:?}");
        assert!(b[0].contains("job 3 was already cancelled"), "{}", b[0]);
        assert_eq!(sent(Some((2, 1)), Some("node 1 had applied its cancel")).breaches(Answer::Accepted).len(), 2);
    }

    #[test]
    fn answers_that_change_nothing_are_never_breaches() {
        for answer in [Answer::Duplicate, Answer::Fenced, Answer::Refused, Answer::Retry, Answer::Unknown] {
            assert!(sent(Some((2, 1)), Some("x")).breaches(answer).is_empty(), "{answer:?}");
        }
        assert!(sent(None, None).breaches(Answer::Accepted).is_empty());
    }
}
