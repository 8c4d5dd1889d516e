//! Log time, as the leader estimates it.
//!
//! apply() reads time only from entries: `clock_ms` is the largest
//! `proposed_at_ms` applied so far, and every ready time, backoff and attempt
//! deadline in the table is in that log time. A leader must therefore stamp
//! entries, and compare ready times and deadlines, in log time too. Its own
//! wall clock is not log time: after a failover to a node whose clock is
//! behind, or after one entry stamped by a clock that ran ahead, the wall
//! clock can trail the log by any amount, and a leader that compared log
//! times with it would see no task as ready and no attempt as late until its
//! wall clock caught up.
//!
//! [`LogClock`] keeps the log moving at the rate of the leader's monotonic
//! clock from the last log time it observed, and follows the wall clock when
//! that is ahead: `now = max(wall, observed_log + monotonic time since)`. So
//! it never runs behind the applied log, never goes back, and advances in
//! real time whatever the wall clock says. The cost: a clock that once ran
//! ahead moves log time ahead for good (timestamps shift; nothing stalls).

use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A pure log-time estimator; time comes in as arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogClock {
    /// (log time observed, monotonic ms when it was observed).
    base: Option<(u64, u64)>,
}

impl LogClock {
    /// The applied log has reached `log_ms`, seen at monotonic `mono_ms`.
    /// Only a log time ahead of the current estimate moves the base, so
    /// observing our own (earlier) stamps late never slows the clock.
    pub fn observe(&mut self, log_ms: u64, mono_ms: u64) {
        if log_ms > self.estimate(mono_ms) {
            self.base = Some((log_ms, mono_ms));
        }
    }

    fn estimate(&self, mono_ms: u64) -> u64 {
        match self.base {
            Some((log, at)) => {
                debug_assert!(mono_ms >= at, "monotonic time went back: {mono_ms} < {at}");
                log + mono_ms.saturating_sub(at)
            }
            None => 0,
        }
    }

    /// Log time now: never behind an observed log time plus the monotonic
    /// time since, nor behind the wall clock, nor behind an earlier answer
    /// (each answer is observed, so a wall clock that steps back after it
    /// led cannot take log time back with it).
    pub fn now_ms(&mut self, wall_ms: u64, mono_ms: u64) -> u64 {
        let now = wall_ms.max(self.estimate(mono_ms));
        self.observe(now, mono_ms);
        now
    }
}

/// A point in time as the leader core sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic ms from an arbitrary origin: leases and rate limits.
    pub mono_ms: u64,
    /// Log time ([`LogClock`]): ready times and attempt deadlines.
    pub log_ms: u64,
}

/// The node's [`LogClock`] over its real clocks. Shared by the leader task
/// (which observes every applied log time) and the proposer (which stamps
/// entries with it), so plans and stamps use one time.
#[derive(Debug)]
pub struct NodeClock {
    origin: Instant,
    clock: Mutex<LogClock>,
}

impl Default for NodeClock {
    fn default() -> Self {
        NodeClock { origin: Instant::now(), clock: Mutex::new(LogClock::default()) }
    }
}

/// This machine's wall clock, ms since the Unix epoch.
pub fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl NodeClock {
    fn mono_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogClock> {
        self.clock.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn observe(&self, log_ms: u64) {
        let mono = self.mono_ms();
        self.lock().observe(log_ms, mono);
    }

    pub fn now(&self) -> Now {
        let mono_ms = self.mono_ms();
        let wall = wall_ms();
        let log_ms = self.lock().now_ms(wall, mono_ms);
        Now { mono_ms, log_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wall_clock_behind_the_log_does_not_freeze_log_time() {
        let mut c = LogClock::default();
        // The previous leader stamped 1_000_000; our wall clock is 60 s behind.
        c.observe(1_000_000, 10);
        assert_eq!(c.now_ms(940_000, 10), 1_000_000);
        assert_eq!(c.now_ms(940_500, 510), 1_000_500, "advances at the monotonic rate");
        // Our own stamps come back through apply, late: the clock does not slow.
        c.observe(1_000_200, 700);
        assert_eq!(c.now_ms(940_700, 710), 1_000_700);
    }

    #[test]
    fn a_wall_clock_ahead_of_the_log_is_followed() {
        let mut c = LogClock::default();
        c.observe(1_000, 0);
        assert_eq!(c.now_ms(5_000, 100), 5_000);
        // Then the wall clock steps back: log time goes on from 5_000.
        assert_eq!(c.now_ms(2_000, 300), 5_200, "never goes back");
    }

    #[test]
    fn before_any_observation_it_is_the_wall_clock() {
        assert_eq!(LogClock::default().now_ms(42, 7), 42);
        assert_eq!(LogClock::default().now_ms(0, 7), 0);
    }

    #[test]
    fn it_never_goes_back_whatever_the_inputs() {
        // Monotonic time moves forward; wall and observations jump around.
        let mut c = LogClock::default();
        let mut last = 0;
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 33
        };
        let mut mono = 0;
        for _ in 0..10_000 {
            mono += next() % 50;
            if next() % 3 == 0 {
                c.observe(next() % 100_000, mono);
            }
            let now = c.now_ms(next() % 100_000, mono);
            assert!(now >= last, "went back from {last} to {now}");
            last = now;
        }
    }
}
