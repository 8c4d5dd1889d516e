//! The session core on a virtual clock: every decision, without a cluster.

use std::collections::{BTreeMap, VecDeque};

use super::*;
use crate::error::ERROR_CODE_HEADER;
use crate::worker::logs::{
    LOG_BUFFER_MAX_BYTES, LOG_BUFFER_MAX_LINES, LOG_FLUSH_INTERVAL_MS, LOG_FLUSH_LINES, LOG_UNACKED_BYTES_MAX,
    LogBatch, LogBuffer, MAX_LOG_LINE_BYTES, REPORT_LOG_BYTES_MAX, decode_chunk,
};

const A: &str = "http://a:1";
const B: &str = "http://b:1";
const C: &str = "http://c:1";
const TTL: u64 = 3_000;
const HB: u64 = 300;
/// `max(2 × HB, TTL / 3)`.
const SILENCE: u64 = 1_000;
/// `max(TTL / 10, FENCE_MARGIN_MIN_MS)`.
const MARGIN: u64 = 300;
const GRACE: u64 = 10_000;
const SESSION: u64 = 7;
/// The worker's wall clock at virtual time 0.
const WALL0: u64 = 1_700_000_000_000;
/// Round trip of an automatic heartbeat ack.
const RTT: u64 = 2;

fn cfg(urls: &[&str]) -> Config {
    Config {
        name: "w".into(),
        labels: BTreeMap::new(),
        capacity: 4,
        urls: urls.iter().map(|u| u.to_string()).collect(),
        shutdown_grace_ms: GRACE,
        seed: 7,
    }
}

fn key(job: u64) -> AttemptKey {
    AttemptKey { job, shard: 0, token: 100 + job }
}

fn registered(session: u64, resumed: bool) -> Out {
    Out::Registered(proto::Registered { session, epoch: 1, ttl_ms: TTL, heartbeat_interval_ms: HB, resumed })
}

fn assignment(k: AttemptKey, deadline_in_ms: u64, deadline_ms: u64) -> Out {
    Out::Assignment(proto::Assignment {
        task: k.task(),
        token: k.token,
        attempt: 1,
        payload: b"p".to_vec(),
        deadline_ms,
        deadline_in_ms,
        workflow: None,
    })
}

fn ack(k: AttemptKey, kind: proto::ReportKind, status: proto::ReportStatus) -> Out {
    Out::ReportAck(proto::ReportAck {
        task: k.task(),
        token: k.token,
        status: status as i32,
        message: String::new(),
        kind: kind as i32,
        seq: 0,
    })
}

fn ok(result: &[u8]) -> Outcome {
    Outcome::Finished(Ok(result.to_vec()))
}

fn sent(acts: &[Action]) -> Vec<In> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Send(proto::WorkerMessage { msg: Some(m) }) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn opens(acts: &[Action]) -> Vec<(String, proto::Register)> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Open { url, register } => Some((url.clone(), register.clone())),
            _ => None,
        })
        .collect()
}

fn is_report(m: &In) -> bool {
    matches!(m, In::Complete(_) | In::Fail(_))
}

/// A session on a virtual clock. Heartbeats are acknowledged after [`RTT`]
/// while `acking` (the node is reachable), never otherwise.
struct H {
    s: Session,
    now: u64,
    acking: bool,
    acks: VecDeque<(u64, u64)>,
    /// Every action so far, with its time.
    log: Vec<(u64, Action)>,
    /// The attempts' log buffers, as the runtime's sinks hold them.
    bufs: BTreeMap<AttemptKey, LogBuffer>,
}

impl H {
    fn new(urls: &[&str]) -> H {
        H {
            s: Session::new(cfg(urls)),
            now: 0,
            acking: true,
            acks: VecDeque::new(),
            log: Vec::new(),
            bufs: BTreeMap::new(),
        }
    }

    /// Registered (new session) on the first endpoint at t=10.
    fn up(urls: &[&str]) -> H {
        let mut h = H::new(urls);
        let acts = h.step(Event::Tick);
        assert_eq!(opens(&acts).len(), 1, "{acts:?}");
        h.now = 10;
        h.msg(registered(SESSION, false));
        h
    }

    /// From now on no heartbeat is acknowledged, not even those in flight.
    fn go_dark(&mut self) {
        self.acking = false;
        self.acks.clear();
    }

    /// Step `e`, and, like the runtime, the buffers its `CollectLogs` take;
    /// returns every action in order.
    fn step(&mut self, e: Event) -> Vec<Action> {
        let mut acts = self.s.step(e, self.now);
        let mut i = 0;
        while i < acts.len() {
            if let Action::CollectLogs(key) = acts[i] {
                let batch = self.bufs.get_mut(&key).map(LogBuffer::take).unwrap_or_default();
                let more = self.s.step(Event::LogsCollected { key, batch }, self.now);
                acts.splice(i + 1..i + 1, more);
            }
            i += 1;
        }
        for a in &acts {
            match a {
                Action::Send(proto::WorkerMessage { msg: Some(In::Heartbeat(hb)) }) if self.acking => {
                    self.acks.push_back((self.now + RTT, hb.seq))
                }
                Action::Close | Action::Open { .. } => self.acks.clear(),
                _ => {}
            }
            self.log.push((self.now, a.clone()));
        }
        if let Some(w) = self.s.next_wakeup_ms() {
            assert!(w >= self.now, "a timer in the past: {w} at {}", self.now);
        }
        acts
    }

    /// A handler logs a line (returns whether its buffer asks for a flush).
    fn log_line(&mut self, k: AttemptKey, message: &str) -> bool {
        let line =
            proto::LogLine { at_ms: WALL0 + self.now, level: proto::LogLevel::Info as i32, message: message.into() };
        self.bufs.entry(k).or_default().push(line)
    }

    /// A handler returns, its last lines with it.
    fn done(&mut self, k: AttemptKey, outcome: Outcome) -> Vec<Action> {
        let logs = self.bufs.remove(&k).map(|mut b| b.take()).unwrap_or_default();
        self.step(Event::HandlerDone { key: k, outcome, logs })
    }

    fn msg(&mut self, m: Out) -> Vec<Action> {
        let wall_ms = WALL0 + self.now;
        self.step(Event::Inbound { msg: m, wall_ms })
    }

    /// Fire every timer and automatic ack due up to `to`, like the runtime;
    /// returns the actions taken meanwhile.
    fn advance(&mut self, to: u64) -> Vec<(u64, Action)> {
        let from = self.log.len();
        let mut same = 0;
        loop {
            let ack_at = self.acks.front().map(|(t, _)| *t);
            let next = match (self.s.next_wakeup_ms(), ack_at) {
                (Some(w), Some(a)) => w.min(a),
                (w, a) => match w.or(a) {
                    Some(t) => t,
                    None => break,
                },
            };
            if next > to {
                break;
            }
            same = if next == self.now { same + 1 } else { 0 };
            assert!(same < 20, "the core busy-loops at {next}");
            self.now = next.max(self.now);
            if ack_at == Some(next) {
                let (_, seq) = self.acks.pop_front().unwrap();
                self.msg(Out::HeartbeatAck(proto::HeartbeatAck { seq }));
            } else {
                self.step(Event::Tick);
            }
        }
        self.now = to.max(self.now);
        self.log[from..].to_vec()
    }

    fn cancelled_at(&self, k: AttemptKey) -> Option<u64> {
        self.log.iter().find(|(_, a)| *a == Action::Cancel(k)).map(|(t, _)| *t)
    }

    fn aborted_at(&self, k: AttemptKey) -> Option<u64> {
        self.log.iter().find(|(_, a)| *a == Action::Abort(k)).map(|(t, _)| *t)
    }
}

fn actions(log: &[(u64, Action)]) -> Vec<Action> {
    log.iter().map(|(_, a)| a.clone()).collect()
}

#[test]
fn the_first_open_registers_a_new_session_and_heartbeats_at_once() {
    let mut h = H::new(&[A, B]);
    assert_eq!(h.s.next_wakeup_ms(), Some(0));
    let acts = h.step(Event::Tick);
    let o = opens(&acts);
    assert_eq!(o.len(), 1);
    assert_eq!(o[0].0, A);
    assert_eq!((o[0].1.resume_session, o[0].1.resume_epoch, o[0].1.capacity), (0, 0, 4));
    // The open is bounded by the placeholder TTL and heartbeat.
    assert_eq!(h.s.next_wakeup_ms(), Some((2 * HEARTBEAT_BEFORE_REGISTERED_MS).max(TTL_BEFORE_REGISTERED_MS / 3)));
    h.now = 10;
    let acts = h.msg(registered(SESSION, false));
    assert_eq!(sent(&acts), vec![In::Heartbeat(proto::Heartbeat { seq: 1 })]);
    // Next timer: the next heartbeat.
    assert_eq!(h.s.next_wakeup_ms(), Some(10 + HB));
    let log = h.advance(10 + 3 * HB);
    let seqs: Vec<u64> = sent(&actions(&log))
        .into_iter()
        .filter_map(|m| match m {
            In::Heartbeat(hb) => Some(hb.seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, vec![2, 3, 4]);
}

#[test]
fn the_fence_deadline_comes_from_the_send_time_of_the_newest_acknowledged_heartbeat() {
    // Registered at 10 (the open started at 0); heartbeats go out at 10, 310,
    // 610, 910…; the attempt starts at 20. Acks as listed, then none.
    type Acks = &'static [(u64, u64)];
    let cases: &[(&str, Acks, u64)] = &[
        ("no ack: the lease dates from the open", &[], 0),
        ("an ack renews from its heartbeat's send time", &[(12, 1)], 10),
        ("a slow ack renews from the send time, not the arrival", &[(900, 2)], 310),
        ("acks out of order keep the newest", &[(700, 3), (710, 2)], 610),
        ("an ack of an unknown seq renews nothing", &[(12, 1), (20, 99)], 10),
    ];
    for (name, acks, renewed_from) in cases {
        let mut h = H::up(&[A]);
        h.go_dark();
        h.now = 20;
        h.msg(assignment(key(1), 0, 0));
        for (at, seq) in acks.iter() {
            h.advance(*at);
            h.msg(Out::HeartbeatAck(proto::HeartbeatAck { seq: *seq }));
        }
        let fence_at = renewed_from + TTL - MARGIN;
        h.advance(fence_at - 1);
        assert_eq!(h.cancelled_at(key(1)), None, "{name}: fenced early");
        h.advance(fence_at);
        assert_eq!(h.cancelled_at(key(1)), Some(fence_at), "{name}");
    }
}

#[test]
fn the_fence_margin_is_a_tenth_of_the_ttl_with_a_floor() {
    for (ttl, margin) in [(3_000, 300), (600, FENCE_MARGIN_MIN_MS), (100, 50), (60_000, 6_000)] {
        let mut s = Session::new(cfg(&[A]));
        s.ttl_ms = ttl;
        assert_eq!(s.fence_margin_ms(), margin, "ttl {ttl}");
    }
}

#[test]
fn fencing_fires_while_the_worker_is_stuck_opening_and_it_then_registers_anew() {
    // One endpoint that went black: opens hang, nothing ever answers.
    let mut h = H::up(&[A]);
    h.now = 20;
    h.msg(assignment(key(1), 0, 0));
    h.msg(assignment(key(2), 0, 0));
    h.advance(400);
    h.step(Event::HandlerDone { key: key(2), outcome: ok(b"r2"), logs: LogBatch::default() }); // unacknowledged
    h.go_dark();
    let last_acked_send = h
        .log
        .iter()
        .rev()
        .find_map(|(t, a)| match a {
            Action::Send(proto::WorkerMessage { msg: Some(In::Heartbeat(_)) }) if *t <= 400 - RTT => Some(*t),
            _ => None,
        })
        .unwrap();
    let fence_at = last_acked_send + TTL - MARGIN;
    let log = h.advance(fence_at - 1);
    // It gave up on the silent stream and keeps trying to resume, in vain.
    let tries = opens(&actions(&log));
    assert!(tries.len() >= 2, "{log:?}");
    assert!(tries.iter().all(|(url, r)| url == A && r.resume_session == SESSION));
    assert_eq!(h.cancelled_at(key(1)), None);
    // No message, only ticks: the fence fires on time and drops the open.
    let log = h.advance(fence_at);
    assert_eq!(h.cancelled_at(key(1)), Some(fence_at));
    let acts = actions(&log);
    let closed = acts.iter().position(|a| *a == Action::Close).expect("the hanging open is dropped");
    assert_eq!(h.s.stats().abandoned, 1, "the unacknowledged report is dropped with the session");
    let tries = opens(&acts[closed..]);
    assert_eq!(tries.len(), 1, "{log:?}");
    assert_eq!(tries[0].1.resume_session, 0, "a fenced worker registers a new session");
    // The handler returns after all: never reported.
    let acts = h.step(Event::HandlerDone { key: key(1), outcome: ok(b"late"), logs: LogBatch::default() });
    assert!(sent(&acts).is_empty());
    h.acking = true;
    let acts = h.msg(registered(SESSION + 1, false));
    assert!(!sent(&acts).iter().any(is_report), "{acts:?}");
    assert_eq!(h.s.stats().abandoned, 2);
    assert_eq!(h.s.tracked(), 0);
}

#[test]
fn a_stream_that_goes_silent_is_dropped_and_the_worker_reattaches_elsewhere() {
    let mut h = H::up(&[A, B, C]);
    h.advance(100);
    let last_ack = 10 + RTT;
    h.go_dark();
    let log = h.advance(last_ack + SILENCE - 1);
    assert!(!actions(&log).contains(&Action::Close));
    let log = h.advance(last_ack + SILENCE + RECONNECT_BACKOFF_MAX_MS);
    let acts = actions(&log);
    assert_eq!(acts.first(), Some(&Action::Close), "{acts:?}");
    assert_eq!(log[0].0, last_ack + SILENCE);
    let tries = opens(&acts);
    assert_eq!(tries.len(), 1, "{acts:?}");
    assert_ne!(tries[0].0, A, "not straight back to the silent node");
    assert_eq!(tries[0].1.resume_session, SESSION, "the session is kept");
    // That node hints at the silent one: the hint is ignored for now.
    let mut s = tonic::Status::unavailable("not the leader");
    s.metadata_mut().insert(crate::error::LEADER_ADDR_HEADER, "a:1".parse().unwrap());
    h.step(Event::OpenFailed(Failure::from_status(&s)));
    let log = h.advance(h.now + RECONNECT_BACKOFF_MAX_MS);
    let tries = opens(&actions(&log));
    assert_eq!(tries.len(), 1);
    assert_ne!(tries[0].0, A);
}

#[test]
fn a_leader_hint_is_followed() {
    let mut h = H::up(&[A, B, C]);
    let mut s = tonic::Status::unavailable("not the leader");
    s.metadata_mut().insert(crate::error::LEADER_ADDR_HEADER, "c:1".parse().unwrap());
    h.step(Event::StreamEnded(Some(Failure::from_status(&s))));
    let log = h.advance(h.now + RECONNECT_BACKOFF_MAX_MS);
    let tries = opens(&actions(&log));
    assert_eq!(tries.len(), 1);
    assert_eq!(tries[0].0, C);
}

#[test]
fn reconnect_backoff_grows_with_full_jitter_and_stays_bounded() {
    let mut h = H::new(&[A]);
    h.step(Event::Tick);
    let mut gaps = Vec::new();
    for _ in 0..30 {
        h.step(Event::OpenFailed(Failure::transient("refused")));
        let failed_at = h.now;
        let log = h.advance(failed_at + RECONNECT_BACKOFF_MAX_MS);
        let (t, _) =
            log.iter().find(|(_, a)| matches!(a, Action::Open { .. })).expect("reopened within the largest backoff");
        gaps.push(t - failed_at);
    }
    assert!(gaps[0] <= 2 * RECONNECT_BACKOFF_BASE_MS, "the first retry is quick: {gaps:?}");
    assert!(gaps.windows(2).any(|w| w[0] != w[1]), "jittered: {gaps:?}");
    assert!(gaps[10..].iter().any(|g| *g > 4 * RECONNECT_BACKOFF_BASE_MS), "grows: {gaps:?}");
}

#[test]
fn an_open_that_hangs_is_given_up_and_the_next_node_tried() {
    let mut h = H::new(&[A, B]);
    h.step(Event::Tick);
    let log = h.advance(SILENCE + RECONNECT_BACKOFF_MAX_MS);
    let acts = actions(&log);
    assert_eq!(acts.first(), Some(&Action::Close), "{acts:?}");
    assert_eq!(log[0].0, (2 * HEARTBEAT_BEFORE_REGISTERED_MS).max(TTL_BEFORE_REGISTERED_MS / 3));
    assert_eq!(opens(&acts).first().map(|o| o.0.as_str()), Some(B));
}

#[test]
fn stream_failures_keep_the_session_unless_it_ended() {
    fn with_code(mut s: tonic::Status, code: &'static str) -> tonic::Status {
        s.metadata_mut().insert(ERROR_CODE_HEADER, code.parse().unwrap());
        s
    }
    let cases: Vec<(&str, tonic::Status, bool)> = vec![
        ("unavailable", tonic::Status::unavailable("no leader"), true),
        ("lagging leader", with_code(tonic::Status::unavailable("catching up"), "LAGGING"), true),
        ("not the leader", with_code(tonic::Status::unavailable("not the leader"), "NOT_LEADER"), true),
        ("overloaded", with_code(tonic::Status::resource_exhausted("too many sessions"), "OVERLOADED"), true),
        ("replaced stream", tonic::Status::aborted("session reattached on another stream"), true),
        ("timeout", tonic::Status::deadline_exceeded("slow"), true),
        ("not found", tonic::Status::not_found("session 7"), false),
        ("session ended", with_code(tonic::Status::failed_precondition("ended"), "SESSION_ENDED"), false),
        ("session ended, server without codes", tonic::Status::failed_precondition("ended"), false),
        ("generic precondition", with_code(tonic::Status::failed_precondition("no"), "PRECONDITION"), false),
        ("a task's precondition", with_code(tonic::Status::failed_precondition("stale"), "FENCED"), true),
    ];
    for (name, status, keeps) in cases {
        for on_open in [false, true] {
            let mut h = H::up(&[A]);
            h.now = 20;
            h.msg(assignment(key(1), 0, 0));
            h.advance(50);
            let f = Failure::from_status(&status);
            assert_eq!(f.ends_session, !keeps, "{name}");
            if on_open {
                h.step(Event::StreamEnded(None));
                h.advance(h.now + RECONNECT_BACKOFF_MAX_MS);
                h.step(Event::OpenFailed(f));
            } else {
                h.step(Event::StreamEnded(Some(f)));
            }
            let log = h.advance(h.now + RECONNECT_BACKOFF_MAX_MS);
            let tries = opens(&actions(&log));
            assert_eq!(tries.len(), 1, "{name}: {log:?}");
            let expected = if keeps { SESSION } else { 0 };
            assert_eq!(tries[0].1.resume_session, expected, "{name} (on open: {on_open})");
            assert_eq!(h.cancelled_at(key(1)).is_some(), !keeps, "{name}: the ended session's attempt stops");
        }
    }
}

#[test]
fn a_resumed_session_gets_the_unacknowledged_reports_again_and_a_resync_restarts_nothing() {
    let mut h = H::up(&[A]);
    h.msg(assignment(key(1), 0, 0));
    h.msg(assignment(key(2), 0, 0));
    let acts = h.step(Event::HandlerDone { key: key(1), outcome: ok(b"r1"), logs: LogBatch::default() });
    assert!(matches!(sent(&acts)[..], [In::Complete(_)]));
    h.step(Event::StreamEnded(None));
    h.advance(h.now + RECONNECT_BACKOFF_MAX_MS);
    h.now += 5;
    let acts = h.msg(registered(SESSION, true));
    let msgs = sent(&acts);
    assert!(matches!(&msgs[0], In::Complete(c) if c.result == b"r1"), "{msgs:?}");
    // The leader resyncs both attempts: neither starts again.
    let mut acts = h.msg(assignment(key(1), 0, 0));
    acts.extend(h.msg(assignment(key(2), 0, 0)));
    assert!(!acts.iter().any(|a| matches!(a, Action::Start { .. })), "{acts:?}");
    assert!(sent(&acts).is_empty(), "the report already went out on this stream: {acts:?}");
    h.msg(ack(key(1), proto::ReportKind::Complete, proto::ReportStatus::Accepted));
    assert_eq!(h.s.stats().completed, 1);
    assert_eq!(h.s.tracked(), 1);
}

#[test]
fn the_lease_is_renewed_by_the_first_heartbeat_of_a_resumed_session_not_by_the_resume() {
    let mut h = H::up(&[A]);
    h.msg(assignment(key(1), 0, 0));
    h.advance(400);
    h.go_dark();
    let renewed_from = h
        .log
        .iter()
        .rev()
        .find_map(|(t, a)| match a {
            Action::Send(proto::WorkerMessage { msg: Some(In::Heartbeat(_)) }) if *t <= 400 - RTT => Some(*t),
            _ => None,
        })
        .unwrap();
    h.step(Event::StreamEnded(None));
    h.advance(h.now + RECONNECT_BACKOFF_MAX_MS);
    let acts = h.msg(registered(SESSION, true));
    // The heartbeat goes out at once; without its ack the old deadline holds.
    assert!(matches!(sent(&acts)[..], [In::Heartbeat(_)]), "{acts:?}");
    h.advance(renewed_from + TTL - MARGIN);
    assert_eq!(h.cancelled_at(key(1)), Some(renewed_from + TTL - MARGIN));
}

#[test]
fn a_workflow_steps_context_reaches_the_handler() {
    let mut h = H::up(&[A]);
    let wf = proto::WorkflowContext {
        workflow_id: 3,
        step: "sum".into(),
        role: proto::StepRole::Reduce as i32,
        inputs: vec![proto::StepOutput { step: "load".into(), job_id: 8, shards: 1 }],
        reduce_of_job_id: 9,
        reduce_of_shards: 200,
    };
    let Out::Assignment(mut a) = assignment(key(1), 5_000, 0) else { unreachable!() };
    a.workflow = Some(wf.clone());
    let acts = h.msg(Out::Assignment(a));
    assert!(acts.iter().any(|a| matches!(a, Action::Start { workflow: Some(w), .. } if **w == wf)), "{acts:?}");
    let acts = h.msg(assignment(key(2), 5_000, 0));
    assert!(acts.iter().any(|a| matches!(a, Action::Start { workflow: None, .. })), "{acts:?}");
}

#[test]
fn the_attempt_deadline_is_measured_on_the_worker_clock_from_receipt() {
    // Received at t=100; wall clock at t is WALL0 + t.
    let cases: &[(&str, u64, u64, Option<u64>)] = &[
        ("relative deadline", 5_000, WALL0 + 2_000, Some(5_100)),
        ("relative deadline wins over a skewed absolute one", 5_000, WALL0 - 60_000, Some(5_100)),
        ("old server: absolute deadline against the wall clock", 0, WALL0 + 2_100, Some(2_100)),
        ("old server: a deadline already past", 0, WALL0 - 5, Some(100)),
        ("no deadline", 0, 0, None),
    ];
    for (name, deadline_in_ms, deadline_ms, cancel_at) in cases {
        let mut h = H::up(&[A]);
        h.now = 100;
        let acts = h.msg(assignment(key(1), *deadline_in_ms, *deadline_ms));
        assert!(
            acts.iter().any(|a| matches!(a, Action::Start { deadline_ms: d, .. } if d == deadline_ms)),
            "{name}: {acts:?}"
        );
        h.advance(20_000);
        assert_eq!(h.cancelled_at(key(1)), *cancel_at, "{name}");
        assert_eq!(h.aborted_at(key(1)), cancel_at.map(|t| t + CANCEL_GRACE_MS), "{name}");
        assert_eq!(h.s.tracked(), usize::from(cancel_at.is_none()), "{name}");
        let expected_abandoned = u64::from(cancel_at.is_some());
        assert_eq!(h.s.stats().abandoned, expected_abandoned, "{name}");
    }
}

#[test]
fn attempts_are_forgotten_however_they_end() {
    type End = fn(&mut H);
    let cases: &[(&str, End, bool)] = &[
        (
            "cancelled by the cluster, then returns",
            |h| {
                h.msg(Out::Cancel(proto::Cancel { task: key(1).task(), token: key(1).token, reason: "x".into() }));
                h.step(Event::HandlerDone { key: key(1), outcome: ok(b"r"), logs: LogBatch::default() });
            },
            true,
        ),
        (
            "cancelled by the cluster, ignores it, aborted",
            |h| {
                h.msg(Out::Cancel(proto::Cancel { task: key(1).task(), token: key(1).token, reason: "x".into() }));
                h.advance(h.now + CANCEL_GRACE_MS);
            },
            true,
        ),
        (
            "timed out",
            |h| {
                h.advance(h.now + 20_000);
            },
            true,
        ),
        (
            "self-fenced",
            |h| {
                h.go_dark();
                h.advance(h.now + TTL);
                h.advance(h.now + CANCEL_GRACE_MS);
            },
            true,
        ),
        (
            "reported and accepted",
            |h| {
                h.step(Event::HandlerDone { key: key(1), outcome: ok(b"r"), logs: LogBatch::default() });
                h.msg(ack(key(1), proto::ReportKind::Complete, proto::ReportStatus::Accepted));
            },
            false,
        ),
        (
            "reported and fenced",
            |h| {
                h.step(Event::HandlerDone { key: key(1), outcome: ok(b"r"), logs: LogBatch::default() });
                h.msg(ack(key(1), proto::ReportKind::Complete, proto::ReportStatus::Fenced));
            },
            false,
        ),
        (
            "reported, then the session ended",
            |h| {
                h.step(Event::HandlerDone { key: key(1), outcome: ok(b"r"), logs: LogBatch::default() });
                h.step(Event::StreamEnded(Some(Failure::from_status(&tonic::Status::not_found("gone")))));
            },
            true,
        ),
    ];
    for (name, end, abandoned) in cases {
        let mut h = H::up(&[A]);
        h.now = 20;
        h.msg(assignment(key(1), 10_000, 0));
        assert_eq!(h.s.tracked(), 1);
        end(&mut h);
        assert_eq!(h.s.tracked(), 0, "{name}");
        assert_eq!(h.s.stats().abandoned, u64::from(*abandoned), "{name}: {:?}", h.s.stats());
    }
}

#[test]
fn a_cancelled_attempt_is_never_reported() {
    let mut h = H::up(&[A]);
    h.msg(assignment(key(1), 0, 0));
    let acts = h.msg(Out::Cancel(proto::Cancel { task: key(1).task(), token: key(1).token, reason: "job".into() }));
    assert_eq!(acts, vec![Action::Cancel(key(1))]);
    // A cancel for another token of the shard changes nothing.
    let other = AttemptKey { token: 1, ..key(1) };
    let acts = h.msg(Out::Cancel(proto::Cancel { task: other.task(), token: other.token, reason: "job".into() }));
    assert!(acts.is_empty());
    h.step(Event::Progress { key: key(1), progress_bp: 10, message: "late".into() });
    let acts = h.step(Event::HandlerDone { key: key(1), outcome: ok(b"r"), logs: LogBatch::default() });
    assert!(sent(&acts).is_empty(), "{acts:?}");
    let log = h.advance(h.now + PROGRESS_MIN_INTERVAL_MS);
    assert!(!sent(&actions(&log)).iter().any(|m| matches!(m, In::Progress(_))));
}

#[test]
fn progress_is_coalesced_per_attempt_and_sent_at_most_once_per_interval() {
    let mut h = H::up(&[A]);
    h.now = 100;
    h.msg(assignment(key(1), 0, 0));
    h.msg(assignment(key(2), 0, 0));
    let progress = |bp: u32| Event::Progress { key: key(1), progress_bp: bp, message: format!("at {bp}") };
    let acts = h.step(progress(1));
    assert!(matches!(&sent(&acts)[..], [In::Progress(p)] if p.progress_bp == 1), "the first goes out at once");
    h.now = 150;
    assert!(sent(&h.step(progress(2))).is_empty());
    h.now = 200;
    assert!(sent(&h.step(progress(3))).is_empty());
    // Another attempt is not held back by this one.
    let acts = h.step(Event::Progress { key: key(2), progress_bp: 7, message: String::new() });
    assert_eq!(sent(&acts).len(), 1);
    let log = h.advance(100 + PROGRESS_MIN_INTERVAL_MS);
    let p: Vec<(u64, u32)> = log
        .iter()
        .filter_map(|(t, a)| match a {
            Action::Send(proto::WorkerMessage { msg: Some(In::Progress(p)) }) => Some((*t, p.progress_bp)),
            _ => None,
        })
        .collect();
    assert_eq!(p, vec![(100 + PROGRESS_MIN_INTERVAL_MS, 3)], "only the latest, one interval later");
    // Values are clamped and messages cut at a character boundary.
    h.advance(h.now + PROGRESS_MIN_INTERVAL_MS);
    let acts = h.step(Event::Progress { key: key(1), progress_bp: 20_000, message: "é".repeat(600) });
    let [In::Progress(p)] = &sent(&acts)[..] else { panic!("{acts:?}") };
    assert_eq!(p.progress_bp, PROGRESS_BP_MAX);
    assert_eq!(p.message.len(), PROGRESS_MESSAGE_MAX_BYTES);
    // Progress acks, even retry-later ones, are not tracked.
    let acts = h.msg(ack(key(1), proto::ReportKind::Progress, proto::ReportStatus::RetryLater));
    assert!(acts.is_empty());
}

#[test]
fn progress_waits_for_a_stream() {
    let mut h = H::up(&[A]);
    h.msg(assignment(key(1), 0, 0));
    h.step(Event::StreamEnded(None));
    assert!(sent(&h.step(Event::Progress { key: key(1), progress_bp: 5, message: String::new() })).is_empty());
    h.advance(h.now + RECONNECT_BACKOFF_MAX_MS);
    let acts = h.msg(registered(SESSION, true));
    assert!(sent(&acts).iter().any(|m| matches!(m, In::Progress(p) if p.progress_bp == 5)), "{acts:?}");
}

#[test]
fn a_retry_later_report_is_kept_and_resent_after_a_bounded_backoff() {
    let mut h = H::up(&[A]);
    h.msg(assignment(key(1), 0, 0));
    h.now = 100;
    h.step(Event::HandlerDone { key: key(1), outcome: ok(b"r"), logs: LogBatch::default() });
    let mut bound = REPORT_RETRY_BASE_MS;
    for _ in 0..8 {
        let refused_at = h.now;
        assert!(sent(&h.msg(ack(key(1), proto::ReportKind::Complete, proto::ReportStatus::RetryLater))).is_empty());
        let log = h.advance(refused_at + bound);
        let resent: Vec<u64> =
            log.iter().filter(|(_, a)| sent(std::slice::from_ref(a)).iter().any(is_report)).map(|(t, _)| *t).collect();
        assert_eq!(resent.len(), 1, "resent once within {bound} ms: {log:?}");
        assert!(resent[0] >= refused_at + bound / 2, "not at once to an overloaded node: {resent:?}");
        bound = (bound * 2).min(REPORT_RETRY_MAX_MS);
    }
    assert_eq!(h.s.tracked(), 1);
    h.msg(ack(key(1), proto::ReportKind::Complete, proto::ReportStatus::Accepted));
    assert_eq!(h.s.stats(), &WorkerStats { completed: 1, ..Default::default() });
    assert_eq!(h.s.tracked(), 0);
}

#[test]
fn report_outcomes_are_counted() {
    use proto::ReportStatus as S;
    let cases: &[(&str, bool, S, WorkerStats)] = &[
        ("complete accepted", true, S::Accepted, WorkerStats { completed: 1, ..Default::default() }),
        ("complete duplicate", true, S::Duplicate, WorkerStats { completed: 1, ..Default::default() }),
        ("failure accepted", false, S::Accepted, WorkerStats { failed: 1, ..Default::default() }),
        ("fenced", true, S::Fenced, WorkerStats { fenced: 1, ..Default::default() }),
        ("rejected", true, S::Rejected, WorkerStats { failed: 1, ..Default::default() }),
        ("unknown status", true, S::Unspecified, WorkerStats { failed: 1, ..Default::default() }),
    ];
    for (name, succeeded, status, stats) in cases {
        let mut h = H::up(&[A]);
        h.msg(assignment(key(1), 0, 0));
        let (outcome, kind) = if *succeeded {
            (ok(b"r"), proto::ReportKind::Complete)
        } else {
            (Outcome::Finished(Err(TaskError::retryable("x"))), proto::ReportKind::Fail)
        };
        h.step(Event::HandlerDone { key: key(1), outcome, logs: LogBatch::default() });
        h.msg(ack(key(1), kind, *status));
        assert_eq!(h.s.stats(), stats, "{name}");
        assert_eq!(h.s.tracked(), 0, "{name}");
    }
}

#[test]
fn reports_respect_the_size_limits() {
    let big = vec![0u8; MAX_RESULT_BYTES + 1];
    type Check = Box<dyn Fn(&In) -> bool>;
    let cases: Vec<(&str, Outcome, Check)> = vec![
        (
            "a result at the limit",
            ok(&vec![1u8; MAX_RESULT_BYTES]),
            Box::new(|m| matches!(m, In::Complete(c) if c.result.len() == MAX_RESULT_BYTES)),
        ),
        (
            "a result over the limit fails for good",
            Outcome::Finished(Ok(big)),
            Box::new(|m| matches!(m, In::Fail(f) if !f.retryable && f.error.contains("exceeds"))),
        ),
        (
            "a long error is cut at a character boundary",
            Outcome::Finished(Err(TaskError::fatal("ü".repeat(3_000)))),
            Box::new(|m| matches!(m, In::Fail(f) if !f.retryable && f.error.len() == MAX_ERROR_BYTES)),
        ),
        (
            "a panic is a retryable failure",
            Outcome::Panicked("boom".into()),
            Box::new(|m| matches!(m, In::Fail(f) if f.retryable && f.error == "handler panicked: boom")),
        ),
    ];
    for (name, outcome, check) in cases {
        let mut h = H::up(&[A]);
        h.msg(assignment(key(1), 0, 0));
        let acts = h.step(Event::HandlerDone { key: key(1), outcome, logs: LogBatch::default() });
        let msgs = sent(&acts);
        assert_eq!(msgs.len(), 1, "{name}");
        assert!(check(&msgs[0]), "{name}: {:?}", msgs[0]);
    }
}

#[test]
fn a_graceful_shutdown_drains_reports_then_deregisters() {
    let mut h = H::up(&[A]);
    h.msg(assignment(key(1), 0, 0));
    h.now = 50;
    let acts = h.step(Event::Shutdown);
    assert_eq!(sent(&acts), vec![In::Drain(proto::Drain {})]);
    h.advance(2_000);
    let acts = h.step(Event::HandlerDone { key: key(1), outcome: ok(b"r"), logs: LogBatch::default() });
    assert!(matches!(sent(&acts)[..], [In::Complete(_)]));
    assert!(!h.log.iter().any(|(_, a)| sent(std::slice::from_ref(a)).contains(&In::Deregister(proto::Deregister {}))));
    let acts = h.msg(ack(key(1), proto::ReportKind::Complete, proto::ReportStatus::Accepted));
    assert_eq!(sent(&acts), vec![In::Deregister(proto::Deregister {})]);
    assert!(!h.s.is_finished());
    // The stream ends once the cluster committed the deregistration.
    h.step(Event::StreamEnded(None));
    assert!(h.s.is_finished());
    assert_eq!(h.s.next_wakeup_ms(), None);
    assert_eq!(h.s.stats(), &WorkerStats { completed: 1, ..Default::default() });
}

#[test]
fn past_the_grace_handlers_are_cancelled_abandoned_and_the_worker_deregisters() {
    let mut h = H::up(&[A]);
    h.msg(assignment(key(1), 0, 0));
    h.now = 50;
    h.step(Event::Shutdown);
    h.advance(50 + GRACE - 1);
    assert_eq!(h.cancelled_at(key(1)), None);
    let log = h.advance(50 + GRACE + CANCEL_GRACE_MS);
    assert_eq!(h.cancelled_at(key(1)), Some(50 + GRACE));
    assert_eq!(h.aborted_at(key(1)), Some(50 + GRACE + CANCEL_GRACE_MS));
    let deregistered = log
        .iter()
        .find(|(_, a)| sent(std::slice::from_ref(a)).contains(&In::Deregister(proto::Deregister {})))
        .map(|(t, _)| *t);
    assert_eq!(deregistered, Some(50 + GRACE + CANCEL_GRACE_MS));
    h.step(Event::StreamEnded(Some(Failure::transient("closed"))));
    assert!(h.s.is_finished());
    assert_eq!(h.s.stats().abandoned, 1);
}

#[test]
fn a_report_never_acknowledged_does_not_hold_up_the_shutdown_forever() {
    let mut h = H::up(&[A]);
    h.msg(assignment(key(1), 0, 0));
    h.step(Event::HandlerDone { key: key(1), outcome: ok(b"r"), logs: LogBatch::default() });
    h.now = 100;
    h.step(Event::Shutdown);
    let log = h.advance(100 + GRACE + 2 * CANCEL_GRACE_MS);
    assert!(sent(&actions(&log)).contains(&In::Deregister(proto::Deregister {})), "{log:?}");
    // The node never ends the stream either.
    h.advance(100 + GRACE + 2 * CANCEL_GRACE_MS + SILENCE);
    assert!(h.s.is_finished());
    assert_eq!(h.s.stats().abandoned, 1);
}

#[test]
fn shutdown_before_any_session_stops_at_once_and_an_unreachable_cluster_is_given_up() {
    let mut h = H::new(&[A]);
    h.step(Event::Tick);
    h.step(Event::Shutdown);
    h.step(Event::OpenFailed(Failure::transient("refused")));
    assert!(h.s.is_finished());

    // A session is held with a report to deliver, and the cluster is gone
    // for good: the worker tries to resume until a lease past the grace.
    let mut h = H::up(&[A]);
    h.msg(assignment(key(1), 0, 0));
    h.step(Event::HandlerDone { key: key(1), outcome: ok(b"r"), logs: LogBatch::default() });
    h.go_dark();
    h.step(Event::StreamEnded(None));
    h.now = 20;
    h.step(Event::Shutdown);
    let give_up = 20 + GRACE + 2 * CANCEL_GRACE_MS + TTL;
    let log = h.advance(give_up - 1);
    assert!(opens(&actions(&log)).iter().all(|(_, r)| r.resume_session == SESSION), "{log:?}");
    assert!(!h.s.is_finished());
    h.advance(give_up);
    assert!(h.s.is_finished());
    assert_eq!(h.s.stats().abandoned, 1);
}

#[test]
fn a_status_classifies_with_its_hint() {
    let mut s = tonic::Status::unavailable("not the leader");
    s.metadata_mut().insert(crate::error::LEADER_ADDR_HEADER, "10.0.0.1:7201".parse().unwrap());
    s.metadata_mut().insert(ERROR_CODE_HEADER, "NOT_LEADER".parse().unwrap());
    let f = Failure::from_status(&s);
    assert_eq!(f.leader.as_deref(), Some("http://10.0.0.1:7201"));
    assert!(!f.ends_session);
    assert!(f.reason.contains("NOT_LEADER"), "{}", f.reason);
}

// ---------------------------------------------------------------- task logs

fn logs_sent(acts: &[Action]) -> Vec<proto::Logs> {
    sent(acts)
        .into_iter()
        .filter_map(|m| match m {
            In::Logs(l) => Some(l),
            _ => None,
        })
        .collect()
}

/// The lines a message's chunk carries (none without one).
fn lines_of(c: &Option<proto::LogChunk>) -> Vec<proto::LogLine> {
    c.as_ref().map(decode_chunk).unwrap_or_default()
}

fn messages(l: &proto::Logs) -> Vec<String> {
    lines_of(&l.chunk).into_iter().map(|x| x.message).collect()
}

fn logs_ack(l: &proto::Logs, status: proto::ReportStatus) -> Out {
    Out::ReportAck(proto::ReportAck {
        task: l.task,
        token: l.token,
        status: status as i32,
        message: String::new(),
        kind: proto::ReportKind::Logs as i32,
        seq: l.seq,
    })
}

/// The log lines a report carries.
fn report_lines(m: &In) -> Vec<proto::LogLine> {
    match m {
        In::Complete(c) => lines_of(&c.log_chunk),
        In::Fail(f) => lines_of(&f.log_chunk),
        other => panic!("not a report: {other:?}"),
    }
}

fn report_logs(m: &In) -> Vec<String> {
    report_lines(m).into_iter().map(|l| l.message).collect()
}

#[test]
fn an_attempts_last_lines_ride_in_its_report_or_go_just_before_it() {
    let mut h = H::up(&[A]);
    h.msg(assignment(key(1), 0, 0));
    h.now = 50;
    h.log_line(key(1), "reading input");
    h.log_line(key(1), "done");
    let acts = h.done(key(1), Outcome::Finished(Err(TaskError::retryable("boom"))));
    let out = sent(&acts);
    assert_eq!(out.len(), 1, "one message, one command: {out:?}");
    assert!(matches!(&out[0], In::Fail(_)), "{out:?}");
    assert_eq!(report_logs(&out[0]), ["reading input", "done"]);
    assert_eq!(report_lines(&out[0])[0].at_ms, WALL0 + 50);
    // A handler that logged nothing sends only its report, with no lines.
    h.msg(assignment(key(2), 0, 0));
    let out = sent(&h.done(key(2), ok(b"r")));
    assert_eq!(out.len(), 1);
    assert!(report_logs(&out[0]).is_empty());
    // Past what a report may carry, the lines go first, on the same stream.
    h.msg(assignment(key(3), 0, 0));
    let long = "x".repeat(4000);
    let n = REPORT_LOG_BYTES_MAX / long.len() + 1;
    for _ in 0..n {
        h.log_line(key(3), &long);
    }
    let out = sent(&h.done(key(3), ok(b"r")));
    assert_eq!(out.len(), 2, "{out:?}");
    let In::Logs(l) = &out[0] else { panic!("lines first: {out:?}") };
    assert_eq!((lines_of(&l.chunk).len(), l.task, l.token), (n, key(3).task(), key(3).token));
    assert!(is_report(&out[1]) && report_logs(&out[1]).is_empty(), "{out:?}");
}

#[test]
fn a_running_attempts_lines_go_out_every_interval_and_at_once_when_its_buffer_fills() {
    let mut h = H::up(&[A]);
    h.now = 100;
    h.msg(assignment(key(1), 0, 0));
    h.log_line(key(1), "one");
    // Nothing before the interval, then the line, once.
    assert!(logs_sent(&actions(&h.advance(100 + LOG_FLUSH_INTERVAL_MS - 1))).is_empty());
    let log = h.advance(100 + LOG_FLUSH_INTERVAL_MS);
    let l = logs_sent(&actions(&log));
    assert_eq!(l.len(), 1, "{log:?}");
    assert_eq!(messages(&l[0]), ["one"]);
    // An empty buffer sends nothing at the next interval.
    assert!(logs_sent(&actions(&h.advance(100 + 2 * LOG_FLUSH_INTERVAL_MS))).is_empty());
    // A full buffer goes at once (the sink wakes the loop).
    h.now += 10;
    let mut i = 0;
    while !h.log_line(key(1), &format!("l{i}")) {
        i += 1;
    }
    let acts = h.step(Event::LogsFull(key(1)));
    let l = logs_sent(&acts);
    assert_eq!(l.len(), 1);
    assert_eq!(lines_of(&l[0].chunk).len(), LOG_FLUSH_LINES);
    // Each message has its own seq.
    assert!(l[0].seq > 0);
}

#[test]
fn lines_dropped_from_a_full_buffer_are_counted_and_marked() {
    let mut h = H::up(&[A]);
    h.msg(assignment(key(1), 0, 0));
    for i in 0..LOG_BUFFER_MAX_LINES + 9 {
        h.log_line(key(1), &format!("l{i}"));
    }
    let acts = h.done(key(1), ok(b"r"));
    let out = sent(&acts);
    let In::Complete(c) = &out[0] else { panic!("{out:?}") };
    let logs = lines_of(&c.log_chunk);
    assert_eq!(logs.len(), LOG_BUFFER_MAX_LINES);
    assert!(logs[0].message.contains("10 older lines dropped"), "{:?}", logs[0]);
    assert_eq!(logs[0].level, proto::LogLevel::Warn as i32);
    assert_eq!(logs.last().unwrap().message, format!("l{}", LOG_BUFFER_MAX_LINES + 8));
    assert_eq!(h.s.stats().log_lines_dropped, 10);
}

#[test]
fn unacknowledged_lines_are_resent_on_the_next_stream_before_the_report() {
    let mut h = H::up(&[A]);
    h.msg(assignment(key(1), 0, 0));
    h.log_line(key(1), "a");
    // A periodic flush, then the report (which carries the later line).
    let first = logs_sent(&actions(&h.advance(h.now + LOG_FLUSH_INTERVAL_MS)))[0].clone();
    h.log_line(key(1), "b");
    assert_eq!(report_logs(&sent(&h.done(key(1), ok(b"r")))[0]), ["b"]);
    h.step(Event::StreamEnded(None));
    h.advance(h.now + RECONNECT_BACKOFF_MAX_MS);
    let out = sent(&h.msg(registered(SESSION, true)));
    let lines = out.iter().position(|m| matches!(m, In::Logs(l) if *l == first)).expect("resent");
    let report = out.iter().position(is_report).expect("report resent");
    assert!(lines < report, "{out:?}");
    // Acknowledged: never sent again.
    h.msg(logs_ack(&first, proto::ReportStatus::Accepted));
    h.msg(ack(key(1), proto::ReportKind::Complete, proto::ReportStatus::Accepted));
    h.step(Event::StreamEnded(None));
    h.advance(h.now + RECONNECT_BACKOFF_MAX_MS);
    let out = sent(&h.msg(registered(SESSION, true)));
    assert!(!out.iter().any(|m| is_report(m) || matches!(m, In::Logs(_))), "{out:?}");
    assert_eq!(h.s.stats().log_lines_dropped, 0);
}

#[test]
fn lines_the_cluster_is_too_busy_for_are_resent_later_and_fenced_ones_dropped() {
    let mut h = H::up(&[A]);
    h.msg(assignment(key(1), 0, 0));
    h.log_line(key(1), "a");
    h.log_line(key(1), "b");
    let l = logs_sent(&actions(&h.advance(h.now + LOG_FLUSH_INTERVAL_MS)))[0].clone();
    let refused_at = h.now;
    assert!(sent(&h.msg(logs_ack(&l, proto::ReportStatus::RetryLater))).is_empty());
    let log = h.advance(refused_at + REPORT_RETRY_BASE_MS);
    let resent: Vec<(u64, proto::Logs)> =
        log.iter().flat_map(|(t, a)| logs_sent(std::slice::from_ref(a)).into_iter().map(move |m| (*t, m))).collect();
    assert_eq!(resent.len(), 1, "resent once: {log:?}");
    assert_eq!(resent[0].1, l, "unchanged, same seq");
    assert!(resent[0].0 >= refused_at + REPORT_RETRY_BASE_MS / 2, "not at once to a busy node");
    // Another attempt owns the shard by now: dropped and counted.
    h.msg(logs_ack(&l, proto::ReportStatus::Fenced));
    assert_eq!(h.s.stats().log_lines_dropped, 2);
    h.advance(h.now + REPORT_RETRY_MAX_MS);
    h.step(Event::StreamEnded(None));
    h.advance(h.now + RECONNECT_BACKOFF_MAX_MS);
    assert!(logs_sent(&h.msg(registered(SESSION, true))).is_empty());
}

#[test]
fn a_fenced_reports_lines_are_counted_as_dropped_and_an_accepted_ones_are_not() {
    let mut h = H::up(&[A]);
    h.msg(assignment(key(1), 0, 0));
    h.log_line(key(1), "a");
    h.log_line(key(1), "b");
    h.done(key(1), ok(b"r"));
    h.msg(ack(key(1), proto::ReportKind::Complete, proto::ReportStatus::Fenced));
    assert_eq!(h.s.stats().log_lines_dropped, 2);
    h.msg(assignment(key(2), 0, 0));
    h.log_line(key(2), "c");
    h.done(key(2), ok(b"r"));
    h.msg(ack(key(2), proto::ReportKind::Complete, proto::ReportStatus::Accepted));
    assert_eq!(h.s.stats().log_lines_dropped, 2);
}

#[test]
fn the_lines_of_a_report_dropped_with_its_session_are_counted() {
    let mut h = H::up(&[A]);
    h.msg(assignment(key(1), 0, 0));
    h.log_line(key(1), "a");
    h.log_line(key(1), "b");
    h.done(key(1), ok(b"r"));
    let mut gone = tonic::Status::not_found("no such session");
    gone.metadata_mut().insert(ERROR_CODE_HEADER, "NOT_FOUND".parse().unwrap());
    h.step(Event::StreamEnded(Some(Failure::from_status(&gone))));
    assert_eq!(h.s.stats().abandoned, 1);
    assert_eq!(h.s.stats().log_lines_dropped, 2);
}

#[test]
fn lines_of_an_ended_session_are_dropped_and_counted() {
    let mut h = H::up(&[A]);
    h.msg(assignment(key(1), 0, 0));
    h.log_line(key(1), "a");
    h.advance(h.now + LOG_FLUSH_INTERVAL_MS);
    assert_eq!(h.s.logs_unacked.len(), 1);
    let mut gone = tonic::Status::not_found("no such session");
    gone.metadata_mut().insert(ERROR_CODE_HEADER, "NOT_FOUND".parse().unwrap());
    h.step(Event::StreamEnded(Some(Failure::from_status(&gone))));
    assert_eq!(h.s.logs_unacked.len(), 0);
    assert_eq!(h.s.logs_unacked_bytes, 0);
    // The silenced handler still returns with a line: nowhere to send it.
    h.log_line(key(1), "b");
    assert!(sent(&h.done(key(1), ok(b"late"))).is_empty());
    assert_eq!(h.s.stats().log_lines_dropped, 2);
}

#[test]
fn a_cancelled_attempts_lines_are_still_sent_while_the_session_lives() {
    let mut h = H::up(&[A]);
    h.msg(assignment(key(1), 0, 0));
    let c = Out::Cancel(proto::Cancel { task: key(1).task(), token: key(1).token, reason: "job cancelled".into() });
    h.msg(c);
    h.log_line(key(1), "stopping");
    let out = sent(&h.done(key(1), ok(b"ignored")));
    assert_eq!(out.len(), 1, "lines, no report: {out:?}");
    assert!(matches!(&out[0], In::Logs(l) if messages(l) == ["stopping"]));
    assert_eq!(h.s.stats().abandoned, 1);
}

#[test]
fn collection_pauses_while_too_many_bytes_are_unacknowledged() {
    let mut h = H::up(&[A]);
    h.msg(assignment(key(1), 0, 0));
    h.msg(assignment(key(2), 0, 0));
    // Buffers of key(1) collected and never acknowledged, up to the bound.
    let mut sent_msgs = Vec::new();
    while h.s.logs_unacked_bytes < LOG_UNACKED_BYTES_MAX {
        while !h.log_line(key(1), &"x".repeat(MAX_LOG_LINE_BYTES)) {}
        sent_msgs.extend(logs_sent(&h.step(Event::LogsFull(key(1)))));
    }
    assert!(h.s.logs_unacked_bytes < LOG_UNACKED_BYTES_MAX + LOG_BUFFER_MAX_BYTES);
    // Neither a full buffer nor the interval collects now; key(2)'s lines wait.
    h.log_line(key(2), "waiting");
    while !h.log_line(key(1), "y") {}
    assert!(h.step(Event::LogsFull(key(1))).is_empty());
    let log = h.advance(h.now + 3 * LOG_FLUSH_INTERVAL_MS);
    assert!(logs_sent(&actions(&log)).is_empty(), "{:?}", logs_sent(&actions(&log)).len());
    assert!(!log.iter().any(|(_, a)| matches!(a, Action::CollectLogs(_))));
    // Acks make room: the buffers whose interval passed are collected at once.
    let mut after = Vec::new();
    for m in &sent_msgs {
        after.extend(logs_sent(&h.msg(logs_ack(m, proto::ReportStatus::Accepted))));
    }
    assert!(after.iter().any(|m| messages(m) == ["waiting"]), "{}", after.len());
    assert!(after.iter().any(|m| messages(m).len() == LOG_FLUSH_LINES && messages(m)[0] == "y"));
    assert_eq!(h.s.logs_unacked_bytes, "waiting".len() + LOG_FLUSH_LINES);
    // A finished attempt's lines always go, even over the bound.
    assert_eq!(sent(&h.done(key(2), ok(b"r"))).len(), 1);
}

/// A credential the cluster refuses (no grant, a wrong or expired token)
/// cannot start working by trying again: the worker stops with the error
/// instead of reconnecting forever, and says why.
#[test]
fn a_refused_credential_stops_the_worker_with_the_error() {
    for code in [codes::UNAUTHENTICATED, codes::PERMISSION_DENIED] {
        let mut h = H::new(&[A, B]);
        h.step(Event::Tick);
        let grpc = if code == codes::UNAUTHENTICATED {
            tonic::Status::unauthenticated("unknown token")
        } else {
            tonic::Status::permission_denied("needs role worker in namespace any")
        };
        let mut s = grpc;
        s.metadata_mut().insert(crate::error::ERROR_CODE_HEADER, code.parse().unwrap());
        h.step(Event::OpenFailed(Failure::from_status(&s)));
        assert!(h.s.is_finished(), "{code}: the worker keeps trying");
        let e = h.s.refusal().expect("the refusal is kept for the caller");
        assert_eq!(e.code(), Some(code));
        let log = h.advance(h.now + RECONNECT_BACKOFF_MAX_MS * 4);
        assert!(opens(&actions(&log)).is_empty(), "{code}: reopened after the refusal");
    }
}
