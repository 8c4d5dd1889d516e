//! A token bucket over monotonic ms, pure (time comes in as an argument).
//! Used by the leader core to pace worker expirations and by the API edge
//! for each namespace's submits-per-second quota.

/// `rate` tokens per second, bursts up to `rate` (one second's worth).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    rate: f64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32) -> Self {
        TokenBucket { tokens: rate as f64, rate: rate as f64, last_ms: 0 }
    }

    /// The rate it was made with, per second.
    pub fn rate(&self) -> u32 {
        self.rate as u32
    }

    /// Take one token at `now_ms` if there is one.
    pub fn take(&mut self, now_ms: u64) -> bool {
        self.refill(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long after `now_ms` a token will be there (0: now), in whole ms.
    pub fn wait_ms(&mut self, now_ms: u64) -> u64 {
        self.refill(now_ms);
        if self.tokens >= 1.0 || self.rate <= 0.0 {
            return 0;
        }
        ((1.0 - self.tokens) / self.rate * 1000.0).ceil() as u64
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.last_ms = self.last_ms.max(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_one_seconds_worth_then_refills_at_the_rate() {
        let mut b = TokenBucket::new(4);
        assert!((0..4).all(|_| b.take(1_000)));
        assert!(!b.take(1_000));
        assert_eq!(b.wait_ms(1_000), 250);
        assert_eq!(b.wait_ms(1_100), 150);
        assert!(b.take(1_250));
        assert!(!b.take(1_250));
        // Never more than one second's worth, however long it rested.
        assert!((0..4).all(|_| b.take(100_000)));
        assert!(!b.take(100_000));
    }
}
