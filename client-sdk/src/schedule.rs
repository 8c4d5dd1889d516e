//! Building schedule specs for [`crate::Client::create_schedule`].
//!
//! ```
//! use std::time::Duration;
//! use baton_client::{ScheduleBuilder, proto};
//!
//! let job = proto::JobSpec { shards: 4, ..Default::default() };
//! let spec = ScheduleBuilder::cron("nightly", "reports", "0 2 * * *", "Europe/Berlin")
//!     .job(job)
//!     .jitter(Duration::from_secs(30))
//!     .misfire_fire_all(10)
//!     .overlap(proto::OverlapPolicy::BufferOne)
//!     .build();
//! assert_eq!(spec.misfire_max, 10);
//! ```
//!
//! The cluster judges the spec (cron syntax, time zone, limits) and refuses a
//! bad one with [`crate::Error::InvalidArgument`] naming the field.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::proto;
use crate::proto::cadence::Kind;

/// A [`proto::ScheduleSpec`] under construction. Unset parts take the
/// server's defaults: misfire skip (grace 5 s), overlap skip, no window,
/// no jitter.
#[derive(Debug, Clone)]
pub struct ScheduleBuilder {
    spec: proto::ScheduleSpec,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, ms)
}

impl ScheduleBuilder {
    fn new(namespace: &str, name: &str, kind: Kind) -> Self {
        ScheduleBuilder {
            spec: proto::ScheduleSpec {
                namespace: namespace.to_string(),
                name: name.to_string(),
                cadence: Some(proto::Cadence { kind: Some(kind) }),
                ..Default::default()
            },
        }
    }

    /// Fire at the times of a 5-field (minute first) or 6-field (second
    /// first) cron pattern, read in an IANA time zone (empty: UTC).
    pub fn cron(namespace: &str, name: &str, pattern: &str, time_zone: &str) -> Self {
        let cron = proto::CronCadence { pattern: pattern.to_string(), time_zone: time_zone.to_string() };
        Self::new(namespace, name, Kind::Cron(cron))
    }

    /// Fire every `period` (at least 1 s), counted from the start time, else
    /// from the create.
    pub fn every(namespace: &str, name: &str, period: Duration) -> Self {
        Self::new(namespace, name, Kind::EveryMs(ms(period)))
    }

    /// Fire `delay` (at least 1 s) after the previous run ended; the first
    /// run fires at the start time, else at once.
    pub fn fixed_delay(namespace: &str, name: &str, delay: Duration) -> Self {
        Self::new(namespace, name, Kind::DelayMs(ms(delay)))
    }

    /// Fire once, at `at`.
    pub fn once(namespace: &str, name: &str, at: SystemTime) -> Self {
        Self::new(namespace, name, Kind::AtMs(epoch_ms(at)))
    }

    /// Each run starts this job (its namespace may be left empty).
    pub fn job(mut self, job: proto::JobSpec) -> Self {
        self.spec.template = Some(proto::schedule_spec::Template::Job(job));
        self
    }

    /// Each run starts this workflow (its namespace may be left empty).
    pub fn workflow(mut self, workflow: proto::WorkflowSpec) -> Self {
        self.spec.template = Some(proto::schedule_spec::Template::Workflow(workflow));
        self
    }

    /// No fire before `at`.
    pub fn start(mut self, at: SystemTime) -> Self {
        self.spec.start_ms = epoch_ms(at);
        self
    }

    /// No fire after `at`.
    pub fn end(mut self, at: SystemTime) -> Self {
        self.spec.end_ms = epoch_ms(at);
        self
    }

    /// Each fire waits a deterministic offset below `jitter` (at most 1 h).
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.spec.jitter_ms = ms(jitter);
        self
    }

    /// Missed fire times start nothing (the default).
    pub fn misfire_skip(mut self) -> Self {
        self.spec.misfire = proto::MisfirePolicy::Skip as i32;
        self.spec.misfire_max = 0;
        self
    }

    /// One run for the newest missed fire time.
    pub fn misfire_fire_once(mut self) -> Self {
        self.spec.misfire = proto::MisfirePolicy::FireOnce as i32;
        self.spec.misfire_max = 0;
        self
    }

    /// One run per missed fire time, the newest `max` of them (1..=1000).
    pub fn misfire_fire_all(mut self, max: u32) -> Self {
        self.spec.misfire = proto::MisfirePolicy::FireAll as i32;
        self.spec.misfire_max = max;
        self
    }

    /// How late a fire may be and still be on time (default 5 s).
    pub fn misfire_grace(mut self, grace: Duration) -> Self {
        self.spec.misfire_grace_ms = Some(ms(grace));
        self
    }

    pub fn overlap(mut self, overlap: proto::OverlapPolicy) -> Self {
        self.spec.overlap = overlap as i32;
        self
    }

    pub fn build(self) -> proto::ScheduleSpec {
        self.spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builder_sets_what_it_says_and_leaves_the_rest_to_defaults() {
        let s = ScheduleBuilder::every("ns", "tick", Duration::from_secs(2)).build();
        assert_eq!(s.cadence.unwrap().kind, Some(Kind::EveryMs(2000)));
        assert_eq!((s.misfire, s.misfire_max, s.misfire_grace_ms), (0, 0, None));
        assert!(s.template.is_none());
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let s = ScheduleBuilder::once("ns", "o", at)
            .job(proto::JobSpec { shards: 1, ..Default::default() })
            .misfire_fire_all(3)
            .misfire_fire_once()
            .misfire_grace(Duration::from_millis(250))
            .start(at)
            .end(at + Duration::from_secs(1))
            .build();
        assert_eq!(s.cadence.unwrap().kind, Some(Kind::AtMs(1_700_000_000_123)));
        assert_eq!(s.misfire, proto::MisfirePolicy::FireOnce as i32);
        assert_eq!(s.misfire_max, 0, "a later policy drops the fire-all bound");
        assert_eq!(s.misfire_grace_ms, Some(250));
        assert_eq!((s.start_ms, s.end_ms), (1_700_000_000_123, 1_700_000_001_123));
        assert!(matches!(s.template, Some(proto::schedule_spec::Template::Job(_))));
    }
}
