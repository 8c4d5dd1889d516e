//! Node lifecycle (start, crash, restart) and the per-incarnation tasks: the
//! log syncer, the page-cache writeback, and the leader driver that does what
//! `coordinator/src/leader.rs` does (leases, expiry, attempt timeouts,
//! scheduling with the real `scheduler::plan`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_coordinator::scheduler::{PlanLimits, View, plan};
use baton_raft_store::{
    Command, NodeId, NodeInfo, Outcome, Proposal, Raft, Response, SessionId, TaskKey, TaskState, Token,
};

use crate::net::SimNetwork;
use crate::store::{SimLogStore, SimSm, SmState};
use crate::world::{Driver, Phase, Running, World};

/// Raft heartbeat interval, ms.
pub const HEARTBEAT_MS: u64 = 50;
/// Leader driver period (the coordinator's check interval and schedule tick), ms.
pub const DRIVER_TICK_MS: u64 = 50;
/// Most attempt timeouts proposed per entry.
const TIMEOUTS_PER_ENTRY: usize = 100;
/// How long the driver waits for one of its own proposals.
const PROPOSAL_TIMEOUT: Duration = Duration::from_millis(2_000);

fn raft_config(election_min: u64) -> openraft::Config {
    openraft::Config {
        cluster_name: "baton-sim".into(),
        heartbeat_interval: HEARTBEAT_MS,
        // A one-ms range: openraft's draw from its thread RNG always returns
        // `election_min`, so the timeout comes from the sim's seeded RNG only.
        election_timeout_min: election_min,
        election_timeout_max: election_min + 1,
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_payload_entries: 64,
        ..Default::default()
    }
    .validate()
    .expect("valid raft config")
}

pub fn members(n: usize) -> BTreeMap<NodeId, NodeInfo> {
    (1..=n as NodeId)
        .map(|id| (id, NodeInfo { raft_addr: format!("sim-{id}"), api_addr: format!("sim-{id}") }))
        .collect()
}

/// Start a new incarnation of `id` on its disk.
pub async fn start(world: &Arc<Mutex<World>>, id: NodeId) -> Raft {
    let (store, sm, net, election_min) = {
        let mut w = world.lock().unwrap();
        // Distinct per-node timeouts, redrawn on every start.
        let taken: BTreeSet<u64> =
            w.nodes.values().filter_map(|s| s.run.as_ref().map(|r| r.raft.config().election_timeout_min)).collect();
        let election_min = loop {
            let t = w.range(150, 450);
            if !taken.contains(&t) {
                break t;
            }
        };
        let slot = w.nodes.get_mut(&id).expect("node exists");
        let epoch = slot.disk.lock().unwrap().epoch;
        slot.epoch = epoch;
        let store = SimLogStore {
            node: id,
            epoch,
            disk: slot.disk.clone(),
            world: world.clone(),
            sync_kick: Arc::new(tokio::sync::Notify::new()),
            ack_before_fsync: w.cfg.ack_before_fsync,
        };
        let sm = SimSm { node: id, state: Arc::new(Mutex::new(SmState::default())), world: world.clone() };
        let net = SimNetwork { from: id, epoch, world: world.clone() };
        w.trace(format_args!("start n{id} epoch={epoch} election={election_min}"));
        (store, sm, net, election_min)
    };
    let sm_state = sm.state.clone();
    let epoch = store.epoch;
    tokio::spawn(syncer(world.clone(), store.clone()));
    tokio::spawn(writeback(world.clone(), store.clone()));
    let raft = Raft::new(id, Arc::new(raft_config(election_min)), net, store, sm).await.expect("raft starts");
    {
        let mut w = world.lock().unwrap();
        let slot = w.nodes.get_mut(&id).expect("node exists");
        slot.run = Some(Running { raft: raft.clone(), sm: sm_state, driver: Driver::default() });
    }
    tokio::spawn(driver(world.clone(), id, epoch, raft.clone()));
    raft
}

/// Power loss of node `id`: unsynced writes are lost (except a random prefix
/// the disk happened to persist). Returns false if it was already down.
pub fn crash(w: &mut World, id: NodeId) -> bool {
    let Some(slot) = w.nodes.get_mut(&id) else { return false };
    let Some(run) = slot.run.take() else { return false };
    let disk = slot.disk.clone();
    let pending = disk.lock().unwrap().pending_len();
    let survive = if w.chance(500) { 0 } else { w.range(0, pending as u64) as usize };
    let lost = disk.lock().unwrap().crash(survive);
    w.stats.crashes += 1;
    w.stats.lost_unsynced_entries += lost;
    w.trace(format_args!("crash n{id} pending={pending} survive={survive} lost_entries={lost}"));
    // Stop the old incarnation's tasks; its storage handles already fail.
    let raft = run.raft;
    tokio::spawn(async move {
        let _ = raft.shutdown().await;
    });
    true
}

/// The fsync thread: a seeded latency after each request, then everything
/// queued becomes durable and the flush callbacks fire.
async fn syncer(world: Arc<Mutex<World>>, store: SimLogStore) {
    // Each incarnation gets a fast or a slow disk.
    let (lo, hi) = if world.lock().unwrap().chance(500) { (1, 4) } else { (5, 20) };
    loop {
        store.sync_kick.notified().await;
        let latency = world.lock().unwrap().range(lo, hi);
        tokio::time::sleep(Duration::from_millis(latency)).await;
        let mut d = store.disk.lock().unwrap();
        if d.epoch != store.epoch {
            return;
        }
        let n = d.sync();
        drop(d);
        world.lock().unwrap().trace(format_args!("fsync n{} ops={n}", store.node));
    }
}

/// The OS writing back its page cache now and then, fsync or not.
async fn writeback(world: Arc<Mutex<World>>, store: SimLogStore) {
    loop {
        let period = world.lock().unwrap().range(1_000, 3_000);
        tokio::time::sleep(Duration::from_millis(period)).await;
        let mut d = store.disk.lock().unwrap();
        if d.epoch != store.epoch {
            return;
        }
        if d.dirty() {
            let n = d.sync();
            drop(d);
            world.lock().unwrap().trace(format_args!("writeback n{} ops={n}", store.node));
        }
    }
}

/// What the driver decided to propose this tick.
enum Action {
    Expire { session: SessionId, epoch: u64 },
    Timeout(Vec<(TaskKey, Token)>),
    Assign(Vec<baton_raft_store::Assign>),
}

/// The leader driver of one incarnation.
async fn driver(world: Arc<Mutex<World>>, id: NodeId, epoch: u64, raft: Raft) {
    loop {
        tokio::time::sleep(Duration::from_millis(DRIVER_TICK_MS)).await;
        let actions = {
            let mut w = world.lock().unwrap();
            if !w.is_current(id, epoch) {
                return;
            }
            step(&mut w, id)
        };
        for a in actions {
            tokio::spawn(propose(world.clone(), id, epoch, raft.clone(), a));
        }
    }
}

fn step(w: &mut World, id: NodeId) -> Vec<Action> {
    let now = w.now_ms();
    let ttl = w.cfg.ttl_ms;
    let phase = w.phase;
    let run = w.running(id).expect("checked by caller");
    let m = run.raft.metrics().borrow().clone();
    let leading = m.current_leader == Some(id) && m.state.is_leader();
    let sm = run.sm.clone();
    let sm = sm.lock().unwrap();
    let was = run.driver.leading;
    if leading && !was {
        let fresh: BTreeMap<SessionId, u64> = sm.core.idx.sessions.keys().map(|s| (*s, now + ttl)).collect();
        let n = fresh.len();
        let run = w.running_mut(id).expect("running");
        run.driver = Driver { leading: true, deadlines: fresh, ..Driver::default() };
        if w.leader_terms.insert(m.current_term) {
            w.stats.elections += 1;
        }
        w.trace(format_args!("leader n{id} term={} sessions={n}", m.current_term));
    } else if !leading && was {
        w.running_mut(id).expect("running").driver = Driver::default();
        w.trace(format_args!("stepped-down n{id}"));
    }
    if !leading || phase == Phase::Stopped {
        return Vec::new();
    }
    let mut actions = Vec::new();
    let d = &mut w.running_mut(id).expect("running").driver;
    let idx = &sm.core.idx;
    // Sessions registered since takeover get one TTL from when we first see them.
    for s in idx.sessions.keys() {
        d.deadlines.entry(*s).or_insert(now + ttl);
    }
    d.deadlines.retain(|s, _| idx.sessions.contains_key(s));
    d.attached.retain(|s| idx.sessions.contains_key(s));
    let due: Vec<SessionId> =
        d.deadlines.iter().filter(|(s, t)| **t <= now && !d.expiring.contains(s)).map(|(s, _)| *s).collect();
    for session in due {
        d.expiring.insert(session);
        actions.push(Action::Expire { session, epoch: idx.sessions[&session].epoch });
    }
    if !d.timeouts_in_flight {
        let attempts: Vec<(TaskKey, Token)> = idx
            .deadlines
            .iter()
            .take_while(|(t, _, _)| *t <= now)
            .take(TIMEOUTS_PER_ENTRY)
            .map(|(_, k, t)| (*k, *t))
            .collect();
        if !attempts.is_empty() {
            d.timeouts_in_flight = true;
            actions.push(Action::Timeout(attempts));
        }
    }
    if !d.assign_in_flight {
        let eligible: BTreeSet<SessionId> = d
            .attached
            .iter()
            .copied()
            .filter(|s| d.deadlines.get(s).is_some_and(|t| *t > now) && !d.expiring.contains(s))
            .collect();
        if !eligible.is_empty() {
            let limits = PlanLimits { max_assignments: 64, max_scan: 1_000 };
            let assignments = plan(&View { idx, eligible: &eligible, limits }, now);
            if !assignments.is_empty() {
                d.assign_in_flight = true;
                actions.push(Action::Assign(assignments));
            }
        }
    }
    actions
}

async fn propose(world: Arc<Mutex<World>>, id: NodeId, epoch: u64, raft: Raft, action: Action) {
    let (cmd, label) = match &action {
        Action::Expire { session, epoch } => {
            (Command::ExpireWorker { session: *session, epoch: *epoch }, format!("expire s{session}"))
        }
        Action::Timeout(a) => (Command::TimeoutAttempts { attempts: a.clone() }, format!("timeout x{}", a.len())),
        Action::Assign(a) => (Command::AssignTasks { assignments: a.clone() }, format!("assign x{}", a.len())),
    };
    let now = {
        let mut w = world.lock().unwrap();
        w.trace(format_args!("propose n{id} {label}"));
        w.now_ms()
    };
    let res = tokio::time::timeout(PROPOSAL_TIMEOUT, raft.client_write(Proposal { proposed_at_ms: now, cmd })).await;
    let mut w = world.lock().unwrap();
    let summary = match &res {
        Ok(Ok(r)) => format!("committed at {}", r.log_id),
        Ok(Err(e)) => format!("failed: {e}"),
        Err(_) => "timed out".to_string(),
    };
    w.trace(format_args!("proposed n{id} {label} {summary}"));
    if !w.is_current(id, epoch) {
        return;
    }
    let d = &mut w.running_mut(id).expect("current").driver;
    match action {
        Action::Expire { session, .. } => {
            d.expiring.remove(&session);
            if let Ok(Ok(r)) = &res
                && matches!(r.data, Response::Done(Outcome::SessionEnded { .. }) | Response::Rejected(_))
            {
                d.deadlines.remove(&session);
            }
        }
        Action::Timeout(_) => d.timeouts_in_flight = false,
        Action::Assign(_) => d.assign_in_flight = false,
    }
}

/// A worker heartbeat, as the leader answers it.
#[derive(Debug, Clone)]
pub enum HbReply {
    /// The attempts the session holds, by the leader's applied state.
    Held(Vec<(TaskKey, Token)>),
    /// The session is not live: register again.
    Ended,
    NotLeader(Option<NodeId>),
}

/// Handle a heartbeat on node `id` (called on arrival, under the world lock).
pub fn heartbeat(w: &mut World, id: NodeId, session: SessionId) -> HbReply {
    let now = w.now_ms();
    let ttl = w.cfg.ttl_ms;
    let Some(run) = w.running_mut(id) else { return HbReply::NotLeader(None) };
    if !run.driver.leading {
        return HbReply::NotLeader(run.raft.metrics().borrow().current_leader);
    }
    let sm = run.sm.lock().unwrap();
    if !sm.core.idx.sessions.contains_key(&session) {
        return HbReply::Ended;
    }
    let d = &mut run.driver;
    if !d.expiring.contains(&session) {
        d.deadlines.insert(session, now + ttl);
    }
    d.attached.insert(session);
    let keys: Vec<TaskKey> =
        sm.core.idx.by_session.get(&session).map(|s| s.iter().copied().collect()).unwrap_or_default();
    let held = keys
        .into_iter()
        .filter_map(|k| match sm.core.task(&sm.kv, k) {
            Ok(Some(t)) => match t.state {
                TaskState::Assigned { token, .. } => Some((k, token)),
                _ => None,
            },
            _ => None,
        })
        .collect();
    HbReply::Held(held)
}
