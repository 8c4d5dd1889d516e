//! The workload: submitters that send `SubmitJob` with idempotency keys and
//! retry until acknowledged, and workers that register, heartbeat the leader,
//! run the attempts it grants and report them with their token. Everything a
//! client sees goes into the history.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_chaos::history::CompleteOutcome;
use baton_raft_store::{Backoff, Command, JobSpec, NodeId, Outcome, Response, SessionId, TaskKey, Token};

use crate::net::{ClientReply, client_call, client_write};
use crate::node::{HbReply, heartbeat};
use crate::world::{Attempt, Phase, Pushed, WorkerState, World};

/// Worker loop period, ms.
const WORKER_TICK_MS: u64 = 50;
/// Worker heartbeat period, ms.
pub const WORKER_HEARTBEAT_MS: u64 = 250;

fn retarget<T>(w: &mut World, current: NodeId, reply: &ClientReply<T>) -> NodeId {
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
        let (gap, shards, priority, ns) = {
            let mut w = world.lock().unwrap();
            (w.range(100, 2_000), w.range(1, 4) as usize, w.range(0, 2) as i32, w.range(0, 1))
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
        for (i, p) in spec.payloads.iter_mut().enumerate() {
            *p = serde_bytes::ByteBuf::from(format!("{key}/{i}").into_bytes());
        }
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
    }
    world.lock().unwrap().clients_done += 1;
}

pub fn new_worker(w: &mut World, i: usize) -> WorkerState {
    let capacity = w.range(1, 2) as u32;
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
    Report(TaskKey, Token),
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
            let ws = &mut w.workers[i];
            if ws.paused_until > now {
                continue;
            }
            let mut acts = Vec::new();
            // Reports first: a zombie waking up sends its stale result before it
            // learns that its session is gone.
            for (task, a) in ws.attempts.iter_mut() {
                if !a.reporting && a.finish_at <= now {
                    a.reporting = true;
                    acts.push(Act::Report(*task, a.token));
                }
            }
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
                Act::Report(task, token) => tokio::spawn(report(world.clone(), i, task, token)),
            };
        }
    }
}

async fn register(world: Arc<Mutex<World>>, i: usize) {
    let (target, cmd) = {
        let w = world.lock().unwrap();
        let ws = &w.workers[i];
        let cmd = Command::RegisterWorker { name: ws.name.clone(), labels: BTreeMap::new(), capacity: ws.capacity };
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
            w.history.assign(now, &name, baton_chaos::history::TaskKey::new(task.job, task.shard), *token);
            let run_ms = w.range(exec.0, exec.1);
            w.workers[i]
                .attempts
                .insert(*task, Attempt { token: *token, session, finish_at: now + run_ms, reporting: false });
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

async fn report(world: Arc<Mutex<World>>, i: usize, task: TaskKey, token: Token) {
    let (target, name, op, result, ended) = {
        let mut w = world.lock().unwrap();
        let t = w.now_ms();
        // If the attempt's session has already ended on some replica, that end is
        // committed before this report can be, so the report must not commit.
        let session = w.workers[i].attempts.get(&task).map(|a| a.session);
        let ended = session.and_then(|s| Some((s, w.session_ended_on(s)?)));
        let ws = &mut w.workers[i];
        ws.next_op += 1;
        let (name, op, target) = (ws.name.clone(), ws.next_op, ws.target);
        let result = format!("{name}:{}/{}@{token}", task.job, task.shard);
        let hk = baton_chaos::history::TaskKey::new(task.job, task.shard);
        w.history.complete_invoke(t, &name, op, hk, token, &result);
        (target, name, op, result, ended)
    };
    let cmd = Command::CompleteTask { task, token, result: serde_bytes::ByteBuf::from(result.into_bytes()) };
    let reply = client_write(&world, target, cmd).await;
    let mut w = world.lock().unwrap();
    let t = w.now_ms();
    let (outcome, detail, done) = match &reply {
        ClientReply::Ok(Response::Done(Outcome::Completed { duplicate: false, .. })) => {
            (CompleteOutcome::Ok, String::new(), true)
        }
        ClientReply::Ok(Response::Done(Outcome::Completed { duplicate: true, .. })) => {
            (CompleteOutcome::Duplicate, String::new(), true)
        }
        ClientReply::Ok(Response::Rejected(e)) if e.is_fenced() => (CompleteOutcome::Fenced, e.to_string(), true),
        ClientReply::Ok(other) => (CompleteOutcome::Fail, format!("{other:?}"), true),
        ClientReply::NotLeader(_) => (CompleteOutcome::Fail, "not the leader".into(), false),
        ClientReply::Refused(e) => (CompleteOutcome::Fail, e.clone(), false),
        ClientReply::Unknown(e) => (CompleteOutcome::Info, e.clone(), false),
    };
    w.history.complete_reply(t, &name, op, outcome, &detail);
    if let Some((session, node)) = ended
        && outcome == CompleteOutcome::Ok
    {
        w.violations.push(format!(
            "{name}'s report of task {task} token {token} (op {op}) was accepted although its session {session} had \
             already ended (applied on node {node}) when the report was sent; it must be fenced"
        ));
    }
    if done && w.workers[i].zombie.remove(&(task, token)) {
        w.stats.zombie_reports += 1;
        w.stats.zombie_fenced += u64::from(outcome == CompleteOutcome::Fenced);
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
