//! Node lifecycle (start, crash, restart) and the per-incarnation tasks: the
//! log syncer, the page-cache writeback, and the leader task, which runs the
//! coordinator's own leader core (`baton_coordinator::leader::core`) exactly
//! as `coordinator/src/leader/mod.rs` does, on the node's simulated clocks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_coordinator::clock::LogClock;
use baton_coordinator::error::ApiError;
use baton_coordinator::leader::core::{
    Action, CloseReason, CoreConfig, Event, GATES_PER_ENTRY, LeaderCore, Outcome as CoreOutcome, StateView,
    TIMEOUTS_PER_ENTRY,
};
use baton_coordinator::leader::{QUORUM_SILENCE_ELECTION_TIMEOUTS, leads_with_quorum, outcome_of, quorum_fresh};
use baton_coordinator::scheduler::PlanLimits;
use baton_raft_store::{Command, NodeId, NodeInfo, Proposal, Raft, SessionId};

use crate::net::SimNetwork;
use crate::store::{SimLogStore, SimSm, SmState};
use crate::world::{LeaderSide, Phase, Pushed, Running, Stream, World};

/// Raft heartbeat interval, ms.
pub const HEARTBEAT_MS: u64 = 50;
/// Leader driver period (the coordinator's check interval and schedule tick), ms.
pub const DRIVER_TICK_MS: u64 = 50;
/// Election timeouts are drawn from this range (ms, inclusive), one per
/// node and start; openraft's own range is then pinned to one ms above.
pub const ELECTION_MIN_RANGE_MS: (u64, u64) = (150, 450);
/// The largest election timeout any node can have, ms (for the history's `config`).
pub const ELECTION_TIMEOUT_MAX_MS: u64 = ELECTION_MIN_RANGE_MS.1 + 1;
/// A node snapshots its state machine after this many applied entries, so
/// that snapshots (and the log purges after them) happen during faults: a
/// run applies several hundred entries.
pub const SNAPSHOT_EVERY_ENTRIES: u64 = 25;
/// Log entries kept behind a snapshot: a follower further behind than this
/// catches up by InstallSnapshot.
pub const LOG_KEPT_BEHIND_SNAPSHOT: u64 = 5;
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
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_ENTRIES),
        max_in_snapshot_log_to_keep: LOG_KEPT_BEHIND_SNAPSHOT,
        purge_batch_size: 1,
        max_payload_entries: 64,
        ..Default::default()
    }
    .validate()
    .expect("valid raft config")
}

pub fn members(n: usize) -> BTreeMap<NodeId, NodeInfo> {
    (1..=n as NodeId)
        .map(|id| {
            (id, NodeInfo { raft_addr: format!("sim-{id}"), api_addr: format!("sim-{id}"), ..Default::default() })
        })
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
            let t = w.range(ELECTION_MIN_RANGE_MS.0, ELECTION_MIN_RANGE_MS.1);
            if !taken.contains(&t) {
                break t;
            }
        };
        let ack_before_fsync = w.cfg.ack_before_fsync;
        let slot = w.nodes.get_mut(&id).expect("node exists");
        let epoch = slot.disk.lock().unwrap().epoch;
        slot.epoch = epoch;
        let store = SimLogStore {
            node: id,
            epoch,
            disk: slot.disk.clone(),
            world: world.clone(),
            sync_kick: Arc::new(tokio::sync::Notify::new()),
            ack_before_fsync,
        };
        // The volatile state starts from the durable snapshot, if any;
        // openraft then re-applies the durable log after it.
        let snap = slot.disk.lock().unwrap().snapshot.clone();
        let state = snap.as_ref().map_or_else(SmState::default, |s| s.restore());
        let sm = SimSm {
            node: id,
            epoch,
            state: Arc::new(Mutex::new(state)),
            disk: slot.disk.clone(),
            world: world.clone(),
        };
        let net = SimNetwork { from: id, epoch, world: world.clone() };
        w.stats.snapshot_restores += u64::from(snap.is_some());
        let from = snap.map(|s| s.meta.snapshot_id);
        w.trace(format_args!("start n{id} epoch={epoch} election={election_min} snapshot={from:?}"));
        (store, sm, net, election_min)
    };
    let sm_state = sm.state.clone();
    let epoch = store.epoch;
    tokio::spawn(syncer(world.clone(), store.clone()));
    tokio::spawn(writeback(world.clone(), store.clone()));
    let raft = Raft::new(id, Arc::new(raft_config(election_min)), net, store, sm).await.expect("raft starts");
    {
        let mut w = world.lock().unwrap();
        let leader = LeaderSide {
            core: LeaderCore::new(core_config(&w, id)),
            clock: LogClock::default(),
            streams: BTreeMap::new(),
            next_conn: 0,
            last_applied: None,
        };
        let slot = w.nodes.get_mut(&id).expect("node exists");
        slot.run = Some(Running { raft: raft.clone(), sm: sm_state, leader });
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

/// The leader core's configuration in the sim: the coordinator's, with the
/// sim's lease and smaller rounds.
fn core_config(w: &World, id: NodeId) -> CoreConfig {
    CoreConfig {
        node: id,
        ttl_ms: w.cfg.ttl_ms,
        max_expirations_per_sec: 200,
        plan: PlanLimits { max_assignments: 64, max_scan: 1_000 },
        timeouts_per_entry: TIMEOUTS_PER_ENTRY,
        gates_per_entry: GATES_PER_ENTRY,
    }
}

/// The leader task of one incarnation: what `coordinator/src/leader/mod.rs`
/// does, on the sim's clocks and streams, with the same core.
async fn driver(world: Arc<Mutex<World>>, id: NodeId, epoch: u64, raft: Raft) {
    loop {
        tokio::time::sleep(Duration::from_millis(DRIVER_TICK_MS)).await;
        let mut w = world.lock().unwrap();
        if !w.is_current(id, epoch) {
            return;
        }
        if w.phase == Phase::Stopped {
            continue;
        }
        let m = raft.metrics().borrow().clone();
        let silence = raft.config().election_timeout_max * QUORUM_SILENCE_ELECTION_TIMEOUTS;
        let leading = leads_with_quorum(id, &m, silence);
        let was = w.running(id).expect("current").leader.core.is_leading();
        if leading != was {
            if leading && w.leader_terms.insert(m.current_term) {
                w.stats.elections += 1;
                // The checker restarts its reassignment clock at a takeover:
                // the core renews every live session's lease now.
                if w.leader_terms.last() == Some(&m.current_term) {
                    let t = w.now_ms();
                    w.history.leader(t, id, m.current_term);
                }
            }
            w.trace(format_args!("{} n{id} term={}", if leading { "leader" } else { "stepped-down" }, m.current_term));
        }
        step(&world, &mut w, id, epoch, Event::Leadership { leading, term: m.current_term });
        let applied = m.last_applied.map(|l| l.index);
        let run = w.running_mut(id).expect("current");
        if applied != run.leader.last_applied {
            run.leader.last_applied = applied;
            step(&world, &mut w, id, epoch, Event::Applied { index: applied.unwrap_or(0) });
        }
        step(&world, &mut w, id, epoch, Event::Tick);
    }
}

/// Run one event through node `id`'s leader core and carry out its actions.
pub fn step(world: &Arc<Mutex<World>>, w: &mut World, id: NodeId, epoch: u64, ev: Event) -> Vec<Action> {
    let Some(now) = w.node_now(id) else { return Vec::new() };
    let run = w.running_mut(id).expect("caller checked");
    let sm = run.sm.clone();
    let actions = {
        let sm = sm.lock().unwrap();
        run.leader.core.step(ev, now, &StateView { core: &sm.core, kv: &sm.kv })
    };
    for a in &actions {
        let run = w.running_mut(id).expect("caller checked");
        match a {
            Action::SetLeading(_) => {}
            Action::Propose(p) => {
                let label = match &p.cmd {
                    Command::ExpireWorker { session, .. } => format!("expire s{session}"),
                    Command::TimeoutAttempts { attempts } => format!("timeout x{}", attempts.len()),
                    Command::AssignTasks { assignments } => format!("assign x{}", assignments.len()),
                    Command::ExpireGates { gates } => format!("expire-gates x{}", gates.len()),
                    other => other.kind().to_string(),
                };
                let raft = run.raft.clone();
                w.trace(format_args!("propose n{id} {label}"));
                tokio::spawn(propose(world.clone(), id, epoch, raft, p.clone(), label, now.log_ms));
            }
            Action::Push { session, conn, grant, .. } => {
                if let Some(s) = run.leader.streams.get_mut(session).filter(|s| s.conn == *conn) {
                    s.inbox.push(Pushed::Grant(grant.task, grant.token));
                }
            }
            Action::Cancel { session, conn, task, token, .. } => {
                if let Some(s) = run.leader.streams.get_mut(session).filter(|s| s.conn == *conn) {
                    s.inbox.push(Pushed::Cancel(*task, *token));
                }
            }
            Action::AckHeartbeat { .. } => {}
            Action::Close { session, conn, .. } => {
                if run.leader.streams.get(session).is_some_and(|s| s.conn == *conn) {
                    run.leader.streams.remove(session);
                }
            }
        }
    }
    actions
}

async fn propose(
    world: Arc<Mutex<World>>,
    id: NodeId,
    epoch: u64,
    raft: Raft,
    p: baton_coordinator::leader::core::Proposal,
    label: String,
    stamp: u64,
) {
    let cmd = p.cmd.clone();
    let res = tokio::time::timeout(PROPOSAL_TIMEOUT, raft.client_write(Proposal { proposed_at_ms: stamp, cmd })).await;
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
    let reply = match res {
        Ok(Ok(r)) => Ok(r.data),
        Ok(Err(e)) => Err(ApiError::Unavailable(e.to_string())),
        Err(_) => Err(ApiError::Unavailable("timed out".into())),
    };
    let outcome = outcome_of(&p.kind, reply);
    if let CoreOutcome::GatesExpired(n) = outcome {
        w.stats.gates_expired += n as u64;
    }
    step(&world, &mut w, id, epoch, Event::Proposed { epoch: p.epoch, kind: p.kind, outcome });
}

/// A worker heartbeat, as the leader answers it.
#[derive(Debug, Clone)]
pub enum HbReply {
    /// The lease was renewed; what the leader pushed since the last reply.
    Acked(Vec<Pushed>),
    /// Not renewed (an expiry is in flight); what was pushed anyway.
    NotAcked(Vec<Pushed>),
    /// The session is not live: register again.
    Ended,
    NotLeader(Option<NodeId>),
}

/// Handle a heartbeat of `session` on node `id` (on arrival, under the
/// world lock). The first heartbeat on a node opens a stream there (the
/// session stream's attach); the reply carries what went down the stream.
pub fn heartbeat(world: &Arc<Mutex<World>>, w: &mut World, id: NodeId, session: SessionId, seq: u64) -> HbReply {
    let Some(run) = w.running_mut(id) else { return HbReply::NotLeader(None) };
    let attached = run.leader.streams.get(&session).map(|s| s.conn);
    let epoch = w.nodes[&id].epoch;
    let conn = match attached {
        Some(conn) => conn,
        None => {
            let run = w.running_mut(id).expect("up");
            run.leader.next_conn += 1;
            let conn = run.leader.next_conn;
            run.leader.streams.insert(session, Stream { conn, inbox: Vec::new() });
            let actions = step(world, w, id, epoch, Event::Attach { session, conn });
            if let Some(reason) = closed_reason(&actions, session) {
                return closed_reply(w, id, reason);
            }
            conn
        }
    };
    let quorum_fresh = {
        let raft = &w.running(id).expect("up").raft;
        quorum_fresh(&raft.metrics().borrow(), raft.config().election_timeout_max)
    };
    let actions = step(world, w, id, epoch, Event::Heartbeat { session, conn, seq, quorum_fresh });
    if let Some(reason) = closed_reason(&actions, session) {
        return closed_reply(w, id, reason);
    }
    let acked = actions.iter().any(|a| matches!(a, Action::AckHeartbeat { session: s, .. } if *s == session));
    let stream = w.running_mut(id).expect("up").leader.streams.get_mut(&session);
    let inbox = stream.map(|s| std::mem::take(&mut s.inbox)).unwrap_or_default();
    if acked { HbReply::Acked(inbox) } else { HbReply::NotAcked(inbox) }
}

fn closed_reply(w: &World, id: NodeId, reason: CloseReason) -> HbReply {
    match reason {
        CloseReason::Ended => HbReply::Ended,
        _ => {
            let leader = w.running(id).and_then(|r| r.raft.metrics().borrow().current_leader).filter(|l| *l != id);
            HbReply::NotLeader(leader)
        }
    }
}

fn closed_reason(actions: &[Action], session: SessionId) -> Option<CloseReason> {
    actions.iter().find_map(|a| match a {
        Action::Close { session: s, reason, .. } if *s == session => Some(*reason),
        _ => None,
    })
}
