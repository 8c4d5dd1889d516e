//! A hand-written history of a healthy chaos run, and helpers to inject
//! anomalies into copies of it.

#![allow(dead_code)] // each test binary uses a different part of this module

use baton_chaos::History;
use baton_chaos::history::{
    Body, CompleteOutcome, Event, FinalJob, FinalShard, FinalState, JobStatus, NemesisOutcome, NemesisPhase,
    ReadInvoke, ReadOk, ReadReply, RunConfig, Targets, TaskKey, TaskStatus,
};

/// The liveness bound the tests check with.
pub const BOUND_MS: u64 = 10_000;
/// When the last fault was healed in [`valid_history`].
pub const LAST_HEAL_T: u64 = 6_000;
/// The run config both histories record: the harness's timing.
pub const RUN_CONFIG: RunConfig = RunConfig { ttl_ms: 1_500, check_interval_ms: 100, election_timeout_max_ms: 120 };
/// ttl + check + the default slack: how long a dead worker's tasks may wait
/// for their next grant when no leader change overlaps.
pub const REASSIGN_BOUND_MS: u64 =
    RUN_CONFIG.ttl_ms + RUN_CONFIG.check_interval_ms + baton_chaos::Config::DEFAULT_REASSIGN_SLACK_MS;
/// How long after a nemesis on nodes a leader change it causes may end.
pub const FAILOVER_MS: u64 = baton_chaos::Config::FAILOVER_ELECTION_TIMEOUTS * RUN_CONFIG.election_timeout_max_ms;

fn task(job: u64, shard: u32) -> TaskKey {
    TaskKey::new(job, shard)
}

fn succeeded(shard: u32, token: u64, result: &str) -> FinalShard {
    FinalShard {
        shard,
        status: TaskStatus::Succeeded,
        result: Some(result.into()),
        token: Some(token),
        latest_token: Some(token),
    }
}

/// A run with everything a real run has to tolerate:
///
/// - job 1 (c1, ok): shard 0 plain; shard 1's first owner w1 is paused past its
///   lease, the shard goes to w2 with a higher token, and w1's late complete
///   is fenced (a zombie);
/// - job 2: the first submit times out (info), the retry with the same key is
///   acknowledged as the same job; its complete times out and the retry is
///   answered duplicate; w2's assignment is redelivered after a reconnect;
/// - job 3: submitted with an info outcome and never retried, but it exists;
///   shard 1's first complete times out and was not applied, so the task is
///   regranted and committed by the new owner;
/// - key k-delta: info, never created; key k-epsilon: refused (fail), never created;
/// - job 4: its shard runs out of attempts (dead); job 5 is cancelled before any grant;
/// - a partition, a leader kill and a worker pause, all healed, each naming
///   its targets; the run config is recorded first; w1 is paused holding
///   (1,1), which is granted again 1300 ms later;
/// - reads: job 1 read while running, job 2 read as succeeded twice, and a
///   read of job 9 (never submitted) answered not found;
/// - two replicas agree at index 40, a third lags at 38.
pub fn valid_history() -> History {
    use CompleteOutcome as C;
    use NemesisOutcome::{Healed, Installed};
    use NemesisPhase::{Heal, Start};

    let mut h = History::new();
    let all_nodes = || Targets::nodes([1, 2, 3]);
    h.config(0, RUN_CONFIG);
    h.leader(50, 1, 1);
    h.nemesis_on(100, "partition", Start, Installed, all_nodes(), "n1 | n2 n3");
    h.submit_invoke(200, "c1", 1, "k-alpha", 2);
    h.submit_invoke(210, "c2", 1, "k-beta", 1);
    h.submit_ok(400, "c1", 1, 1);
    h.push(450, ReadInvoke { client: "r1".into(), op: 1, job: 1 });
    h.push(460, ReadOk { client: "r1".into(), op: 1, status: JobStatus::Queued });
    h.push(470, ReadInvoke { client: "r1".into(), op: 2, job: 9 });
    h.push(480, Body::ReadNotFound(ReadReply { client: "r1".into(), op: 2 }));
    h.assign(500, "w1", task(1, 0), 10);
    h.assign(510, "w1", task(1, 1), 11);
    h.submit_info(1_200, "c2", 1, "deadline exceeded");
    h.submit_invoke(1_300, "c2", 2, "k-beta", 1);
    h.submit_ok(1_400, "c2", 2, 2);
    h.assign(1_500, "w2", task(2, 0), 12);
    h.submit_invoke(1_600, "c1", 2, "k-gamma", 2);
    h.complete_invoke(1_700, "w1", 1, task(1, 0), 10, "a0");
    h.complete_reply(1_750, "w1", 1, C::Ok, "");
    h.nemesis_on(2_000, "pause-worker", Start, Installed, Targets::workers(["w1"]), "SIGSTOP w1");
    h.assign(2_100, "w3", task(3, 0), 13);
    h.assign(2_110, "w3", task(3, 1), 14);
    h.submit_info(2_600, "c1", 2, "connection reset");
    h.nemesis_on(3_000, "kill", Start, Installed, Targets::nodes([1]), "SIGKILL n1 (leader)");
    h.complete_invoke(3_100, "w2", 1, task(2, 0), 12, "b0");
    h.complete_invoke(3_150, "w3", 1, task(3, 0), 13, "c0");
    h.complete_invoke(3_160, "w3", 2, task(3, 1), 14, "c1");
    h.leader(3_250, 2, 2);
    h.assign(3_300, "w2", task(1, 1), 15); // w1's lease on (1,1) expired
    h.complete_reply(3_400, "w3", 1, C::Ok, "");
    h.complete_reply(3_900, "w2", 1, C::Info, "leader lost");
    h.complete_reply(4_000, "w3", 2, C::Info, "deadline exceeded");
    h.assign(4_100, "w2", task(2, 0), 12); // redelivered after w2 reconnected
    h.complete_invoke(4_200, "w2", 2, task(2, 0), 12, "b0");
    h.complete_reply(4_250, "w2", 2, C::Duplicate, "");
    h.push(4_260, ReadInvoke { client: "r1".into(), op: 3, job: 2 });
    h.push(4_270, ReadOk { client: "r1".into(), op: 3, status: JobStatus::Succeeded });
    h.push(4_280, ReadInvoke { client: "r1".into(), op: 4, job: 2 });
    h.push(4_290, ReadOk { client: "r1".into(), op: 4, status: JobStatus::Succeeded });
    h.submit_invoke(4_300, "c2", 3, "k-delta", 1);
    h.submit_info(4_800, "c2", 3, "deadline exceeded");
    h.submit_invoke(4_900, "c1", 3, "k-epsilon", 1);
    h.submit_fail(4_950, "c1", 3, "invalid argument: shards must be > 0");
    h.nemesis_on(5_000, "partition", Heal, Healed, all_nodes(), "");
    h.nemesis_on(5_100, "pause-worker", Heal, Healed, Targets::workers(["w1"]), "SIGCONT w1");
    h.complete_invoke(5_200, "w1", 2, task(1, 1), 11, "a1-zombie");
    h.complete_reply(5_250, "w1", 2, C::Fenced, "fenced: token 11 is not current (latest 15)");
    h.complete_invoke(5_300, "w2", 3, task(1, 1), 15, "a1");
    h.complete_reply(5_350, "w2", 3, C::Ok, "");
    h.submit_invoke(5_400, "c1", 4, "k-zeta", 1);
    h.submit_ok(5_500, "c1", 4, 4);
    h.submit_invoke(5_510, "c2", 4, "k-eta", 1);
    h.submit_ok(5_600, "c2", 4, 5);
    h.assign(5_700, "w2", task(4, 0), 16);
    h.assign(5_800, "w3", task(4, 0), 18); // w2 reported a retryable failure
    h.nemesis_on(LAST_HEAL_T, "kill", Heal, Healed, Targets::nodes([1]), "restarted n1");
    h.assign(6_100, "w1", task(3, 1), 20); // w3's lease on (3,1) expired
    h.complete_invoke(6_200, "w1", 3, task(3, 1), 20, "c1");
    h.complete_reply(6_250, "w1", 3, C::Ok, "");
    let state = FinalState {
        drained_at: Some(8_500),
        jobs: vec![
            FinalJob {
                id: 1,
                key: "k-alpha".into(),
                status: JobStatus::Succeeded,
                shards: vec![succeeded(0, 10, "a0"), succeeded(1, 15, "a1")],
            },
            FinalJob {
                id: 2,
                key: "k-beta".into(),
                status: JobStatus::Succeeded,
                shards: vec![succeeded(0, 12, "b0")],
            },
            FinalJob {
                id: 3,
                key: "k-gamma".into(),
                status: JobStatus::Succeeded,
                shards: vec![succeeded(0, 13, "c0"), succeeded(1, 20, "c1")],
            },
            FinalJob {
                id: 4,
                key: "k-zeta".into(),
                status: JobStatus::Failed,
                shards: vec![FinalShard {
                    shard: 0,
                    status: TaskStatus::Dead,
                    result: None,
                    token: None,
                    latest_token: Some(18),
                }],
            },
            FinalJob {
                id: 5,
                key: "k-eta".into(),
                status: JobStatus::Cancelled,
                shards: vec![FinalShard {
                    shard: 0,
                    status: TaskStatus::Cancelled,
                    result: None,
                    token: None,
                    latest_token: None,
                }],
            },
        ],
    };
    h.final_state(9_000, state);
    h.replica(9_100, 1, 40, "9f2c4e01");
    h.replica(9_110, 2, 40, "9F2C4E01"); // same hash, other case
    h.replica(9_120, 3, 38, "77aa0b3c");
    h
}

/// When w1 is killed in [`reassign_history`].
pub const WORKER_KILL_T: u64 = 1_000;
/// When the leader is killed in [`reassign_history`].
pub const LEADER_KILL_T: u64 = 2_000;

/// A healthy run around one dead worker, for the reassignment bound. w1 holds
/// three shards of job 1 when it is killed at [`WORKER_KILL_T`]:
///
/// - (1,0) is granted to w2 1400 ms later, within ttl + check + slack;
/// - (1,1) is granted to w3 4500 ms later: over the plain bound, but the
///   leader was killed at [`LEADER_KILL_T`], and the new leader renewed every
///   lease on takeover (by [`FAILOVER_MS`] after the kill, seen at 2300), so
///   the clock restarted then;
/// - (1,2): w1 sent its complete just before it died and the result
///   committed: it finished, nothing to reassign.
pub fn reassign_history() -> History {
    use CompleteOutcome as C;
    use NemesisOutcome::{Healed, Installed};
    use NemesisPhase::{Heal, Start};

    let mut h = History::new();
    h.config(0, RUN_CONFIG);
    h.leader(50, 1, 1);
    h.submit_invoke(100, "c1", 1, "k-r", 3);
    h.submit_ok(150, "c1", 1, 1);
    h.assign(200, "w1", task(1, 0), 10);
    h.assign(210, "w1", task(1, 1), 11);
    h.assign(220, "w1", task(1, 2), 12);
    h.complete_invoke(900, "w1", 1, task(1, 2), 12, "r2"); // no reply: w1 dies
    h.nemesis_on(WORKER_KILL_T, "kill-worker", Start, Installed, Targets::workers(["w1"]), "SIGKILL w1");
    h.nemesis_on(LEADER_KILL_T, "kill-leader", Start, Installed, Targets::nodes([1]), "SIGKILL n1");
    h.leader(2_300, 2, 2);
    h.assign(2_400, "w2", task(1, 0), 13);
    h.complete_invoke(2_500, "w2", 1, task(1, 0), 13, "r0");
    h.complete_reply(2_550, "w2", 1, C::Ok, "");
    h.nemesis_on(3_000, "kill-worker", Heal, Healed, Targets::workers(["w1"]), "restarted w1");
    h.assign(5_500, "w3", task(1, 1), 14);
    h.complete_invoke(5_900, "w3", 1, task(1, 1), 14, "r1");
    h.complete_reply(5_950, "w3", 1, C::Ok, "");
    h.nemesis_on(6_000, "kill-leader", Heal, Healed, Targets::nodes([1]), "restarted n1");
    let state = FinalState {
        drained_at: Some(6_400),
        jobs: vec![FinalJob {
            id: 1,
            key: "k-r".into(),
            status: JobStatus::Succeeded,
            shards: vec![succeeded(0, 13, "r0"), succeeded(1, 14, "r1"), succeeded(2, 12, "r2")],
        }],
    };
    h.final_state(6_500, state);
    for node in 1..=3 {
        h.replica(6_600, node, 20, "5eed");
    }
    h
}

/// Apply `edit` to the events of `h` and rebuild it, renumbering seqs so
/// that inserted events fit.
pub fn edited(h: &History, edit: impl FnOnce(&mut Vec<Event>)) -> History {
    let mut events = h.events().to_vec();
    edit(&mut events);
    for (i, ev) in events.iter_mut().enumerate() {
        ev.seq = i as u64 + 1;
    }
    History::from_events(events).expect("renumbered seqs increase")
}

/// The final state of an event list.
pub fn final_state(events: &mut [Event]) -> &mut FinalState {
    events
        .iter_mut()
        .rev()
        .find_map(|e| match &mut e.body {
            Body::FinalState(s) => Some(s),
            _ => None,
        })
        .expect("the history has a final state")
}

/// The record of `task` in a final state.
pub fn final_shard(state: &mut FinalState, job: u64, shard: u32) -> &mut FinalShard {
    let j = state.jobs.iter_mut().find(|j| j.id == job).expect("job in final state");
    j.shards.iter_mut().find(|s| s.shard == shard).expect("shard in final job")
}

/// Index of the first event matching `pred`.
pub fn position(events: &[Event], pred: impl Fn(&Body) -> bool) -> usize {
    events.iter().position(|e| pred(&e.body)).expect("event present")
}
