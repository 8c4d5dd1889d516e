//! The workload shared by every system: task ids and timestamps travel in the
//! payload, submit acknowledgements and worker receipts meet in one map, and a
//! sampler turns a completion counter into a throughput timeline.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::stats::{Counter, Lat, Phase, rates, sustained};

/// The workload's knobs, the same for every system.
#[derive(Clone, Debug)]
pub struct Load {
    /// Shards (tasks) per job.
    pub shards: u32,
    /// Jobs per submit request (Baton's SubmitJobs batch; peers: that many
    /// concurrent jobs per submitter).
    pub jobs_per_request: usize,
    /// Concurrent submitters.
    pub submitters: usize,
    /// Workers and tasks each runs at once.
    pub workers: usize,
    pub capacity: usize,
    /// Submitters pause while more tasks than this are submitted but unfinished.
    pub max_in_flight: u64,
    pub secs: usize,
    pub warmup: usize,
}

enum Slot {
    Acked(u64),
    Received,
}

/// What submitters and workers of one phase share.
pub struct Shared {
    t0: Instant,
    next_id: AtomicU64,
    slots: Mutex<HashMap<u64, Slot>>,
    pub submit: Lat,
    pub dispatch: Lat,
    pub e2e: Lat,
    /// Tasks acknowledged to submitters.
    pub submitted: Counter,
    /// Tasks whose worker finished (about to report completion).
    pub done: Counter,
    /// Completions acknowledged by the system (peers count these client-side).
    pub completed: Counter,
    pub errors: Counter,
    pub stop: AtomicBool,
    finished_signal: tokio::sync::Notify,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            t0: Instant::now(),
            next_id: AtomicU64::new(1),
            slots: Mutex::default(),
            submit: Lat::default(),
            dispatch: Lat::default(),
            e2e: Lat::default(),
            submitted: Counter::default(),
            done: Counter::default(),
            completed: Counter::default(),
            errors: Counter::default(),
            stop: AtomicBool::new(false),
            finished_signal: tokio::sync::Notify::new(),
        }
    }
}

impl Shared {
    pub fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// A new task id and its payload: id and submit time, 16 bytes.
    pub fn task(&self, submit_ns: u64) -> (u64, Vec<u8>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        (id, encode(id, submit_ns))
    }

    /// Submitters wait here while too much is in flight.
    pub async fn admit(&self, max_in_flight: u64) {
        while !self.stopped() && self.submitted.get().saturating_sub(self.done.get()) > max_in_flight {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// A submit request covering `ids`, started at `start_ns`, was acknowledged.
    pub fn acked(&self, ids: &[u64], start_ns: u64) {
        let now = self.now_ns();
        self.submit.record_us((now - start_ns) / 1000);
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            match slots.remove(id) {
                // The worker had it before the submitter heard back.
                Some(Slot::Received) => self.dispatch.record_us(0),
                _ => {
                    slots.insert(*id, Slot::Acked(now));
                }
            }
        }
        drop(slots);
        self.submitted.add(ids.len() as u64);
    }

    /// A worker received the task with this payload. Returns its id.
    pub fn received(&self, payload: &[u8]) -> Option<u64> {
        let (id, _) = decode(payload)?;
        let now = self.now_ns();
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        match slots.remove(&id) {
            Some(Slot::Acked(at)) => self.dispatch.record_us(now.saturating_sub(at) / 1000),
            Some(Slot::Received) => {} // a redelivery
            None => {
                slots.insert(id, Slot::Received);
            }
        }
        Some(id)
    }

    /// The worker finished the task (before reporting its completion).
    pub fn finished(&self, payload: &[u8]) {
        if let Some((_, submit_ns)) = decode(payload) {
            self.e2e.record_us(self.now_ns().saturating_sub(submit_ns) / 1000);
        }
        self.done.add(1);
        self.finished_signal.notify_one();
    }

    /// Wait (bounded) until every acknowledged task is done; for one-at-a-time clients.
    pub async fn wait_done(&self, limit: Duration) {
        let until = Instant::now() + limit;
        while self.done.get() < self.submitted.get() && Instant::now() < until {
            let _ = tokio::time::timeout(Duration::from_millis(5), self.finished_signal.notified()).await;
        }
    }
}

pub fn encode(id: u64, submit_ns: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&submit_ns.to_le_bytes());
    v
}

pub fn decode(p: &[u8]) -> Option<(u64, u64)> {
    if p.len() < 16 {
        return None;
    }
    Some((u64::from_le_bytes(p[0..8].try_into().ok()?), u64::from_le_bytes(p[8..16].try_into().ok()?)))
}

/// Sample `completed()` once a second for `load.warmup + load.secs` seconds and
/// `cpu()` (server CPU seconds, all nodes) at the edges of the sustained window.
pub async fn sample<C, F>(sh: &Shared, load: &Load, cpu: impl Fn() -> f64, mut completed: C) -> Phase
where
    C: FnMut() -> F,
    F: Future<Output = Option<u64>>,
{
    let mut cum = Vec::new();
    let mut last = 0u64;
    let start = Instant::now();
    let mut cpu0 = 0.0;
    for s in 0..=(load.warmup + load.secs) {
        tokio::time::sleep_until((start + Duration::from_secs(s as u64)).into()).await;
        last = completed().await.unwrap_or(last).max(last);
        cum.push(last);
        if s == load.warmup {
            cpu0 = cpu();
        }
        if s > 0 && s % 10 == 0 {
            let r = rates(&cum);
            eprintln!(
                "    t={s:>3}s  {:>8} tasks/s  (submitted {}, errors {})",
                r.last().unwrap_or(&0),
                sh.submitted.get(),
                sh.errors.get()
            );
        }
    }
    let cpu1 = cpu();
    let window = cum[cum.len() - 1].saturating_sub(cum[load.warmup]);
    Phase {
        tasks_per_s: sustained(&cum, load.warmup),
        timeline: rates(&cum),
        warmup_s: load.warmup,
        submit: sh.submit.summary(),
        dispatch: sh.dispatch.summary(),
        end_to_end: sh.e2e.summary(),
        cpu_s_per_1k: if window > 0 { (cpu1 - cpu0) / window as f64 * 1000.0 } else { 0.0 },
        completed: window,
        lost_attempts: 0,
    }
}

/// Wait (bounded) until every submitted task is done, after a phase's submitters stop.
pub async fn drain(sh: &Shared, limit: Duration) {
    let until = Instant::now() + limit;
    while sh.done.get() < sh.submitted.get() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_roundtrip() {
        assert_eq!(decode(&encode(7, 123_456)), Some((7, 123_456)));
        assert_eq!(decode(b"short"), None);
    }

    #[test]
    fn dispatch_is_measured_whichever_side_comes_first() {
        let sh = Shared::default();
        let (a, pa) = sh.task(sh.now_ns());
        let (_, pb) = sh.task(sh.now_ns());
        let b = decode(&pb).unwrap().0;
        sh.acked(&[a], 0);
        sh.received(&pa);
        sh.received(&pb); // before its ack
        sh.acked(&[b], 0);
        assert_eq!(sh.dispatch.summary().n, 2);
        assert_eq!(sh.submitted.get(), 2);
        assert!(sh.slots.lock().unwrap().is_empty());
    }
}

/// Longest wait for the first commit after a leader kill.
pub const FAILOVER_LIMIT: Duration = Duration::from_secs(30);

/// Failover sample `k` of `system`: retry `commit` until it succeeds and
/// return the time since `killed_at`. After [`FAILOVER_LIMIT`] the sample is
/// noted and excluded from the percentiles.
pub async fn first_commit(
    system: &str,
    k: usize,
    killed_at: Instant,
    mut commit: impl AsyncFnMut() -> bool,
) -> Option<Duration> {
    let took = loop {
        if commit().await {
            break Some(killed_at.elapsed());
        }
        if killed_at.elapsed() > FAILOVER_LIMIT {
            crate::note(format!("failover kill {}: no commit within 30 s (excluded from the percentiles)", k + 1));
            break None;
        }
    };
    eprintln!("    {system} failover {}: {took:?}", k + 1);
    took
}
