//! Admission control at the leader's API edge: each namespace's
//! submits-per-second quota, one token bucket per namespace that sets one.
//! Not replicated and not in apply(): it is the proposing node's pacing, so
//! a new leader starts with full buckets.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use baton_raft_store::limits::MAX_NAMESPACE_RECORDS;
use baton_raft_store::quota::names;

use crate::error::ApiError;
use crate::token_bucket::TokenBucket;

/// Most buckets kept. Only a namespace with a submits quota has one, and a
/// quota lives in a namespace record, of which there are at most
/// [`MAX_NAMESPACE_RECORDS`]; buckets of namespaces whose quota went are
/// dropped when the map is full.
pub const MAX_SUBMIT_BUCKETS: usize = MAX_NAMESPACE_RECORDS;

/// The submit buckets, by namespace.
#[derive(Debug)]
pub struct SubmitLimiter {
    start: Instant,
    buckets: Mutex<BTreeMap<String, TokenBucket>>,
}

impl Default for SubmitLimiter {
    fn default() -> Self {
        SubmitLimiter { start: Instant::now(), buckets: Mutex::default() }
    }
}

impl SubmitLimiter {
    /// Take one submit of `namespace`, whose quota is `rate` per second
    /// (`None`: unlimited). `still_limited` says whether another namespace
    /// still has a quota, to make room when the map is full.
    pub fn admit(
        &self,
        namespace: &str,
        rate: Option<u32>,
        still_limited: impl Fn(&str) -> bool,
    ) -> Result<(), ApiError> {
        let now_ms = self.start.elapsed().as_millis() as u64;
        self.admit_at(namespace, rate, now_ms, still_limited)
    }

    fn admit_at(
        &self,
        namespace: &str,
        rate: Option<u32>,
        now_ms: u64,
        still_limited: impl Fn(&str) -> bool,
    ) -> Result<(), ApiError> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let Some(rate) = rate else {
            buckets.remove(namespace);
            return Ok(());
        };
        if !buckets.contains_key(namespace) && buckets.len() >= MAX_SUBMIT_BUCKETS {
            buckets.retain(|ns, _| still_limited(ns));
            if buckets.len() >= MAX_SUBMIT_BUCKETS {
                // Not reachable while quotas live in namespace records; refuse
                // rather than grow.
                return Err(ApiError::Exhausted(format!("{MAX_SUBMIT_BUCKETS} submit rate buckets")));
            }
        }
        let bucket = buckets.entry(namespace.to_string()).or_insert_with(|| TokenBucket::new(rate));
        if bucket.rate() != rate {
            *bucket = TokenBucket::new(rate);
        }
        if bucket.take(now_ms) {
            return Ok(());
        }
        let retry_after_ms = bucket.wait_ms(now_ms).max(1);
        Err(ApiError::QuotaExceeded {
            quota: names::SUBMITS_PER_SEC.into(),
            retry_after_ms,
            message: format!("namespace {namespace:?} is over its submits_per_sec quota of {rate}/s"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_over_its_rate_is_refused_with_a_hint_and_others_are_not() {
        let l = SubmitLimiter::default();
        let yes = |_: &str| true;
        assert!((0..2).all(|_| l.admit_at("a", Some(2), 0, yes).is_ok()));
        match l.admit_at("a", Some(2), 0, yes) {
            Err(ApiError::QuotaExceeded { quota, retry_after_ms, .. }) => {
                assert_eq!((quota.as_str(), retry_after_ms), ("submits_per_sec", 500));
            }
            r => panic!("{r:?}"),
        }
        l.admit_at("b", Some(2), 0, yes).unwrap();
        l.admit_at("a", None, 0, yes).unwrap();
        assert!(l.buckets.lock().unwrap().get("a").is_none(), "no quota, no bucket");
        // A new rate starts a new, full bucket.
        assert!((0..5).all(|_| l.admit_at("b", Some(5), 0, yes).is_ok()));
        assert!(l.admit_at("b", Some(5), 200, yes).is_ok());
    }
}
