//! Per-identity rate limits: a token bucket per caller, so one caller's flood is refused at
//! the door of the engine — before any cluster or policy work — while everyone else goes on.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::EngineError;

/// Callers tracked at most. Beyond, buckets that have refilled (they hold no memory of a
/// flood) are forgotten first, then the longest idle; memory stays bounded whatever the
/// number of identities.
const MAX_TRACKED: usize = 10_000;

/// One caller's tokens.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by identity: `rate` requests per second, bursts of `burst`. A rate of 0
/// admits everything.
#[derive(Debug)]
pub struct RateLimits {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimits {
    pub fn new(rate: f64, burst: u32) -> Self {
        RateLimits {
            rate: if rate.is_finite() && rate > 0.0 {
                rate
            } else {
                0.0
            },
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token of `identity`'s bucket.
    ///
    /// # Errors
    /// [`EngineError::Exhausted`] with the time until the next token, when there is none.
    pub fn admit(&self, identity: &str) -> Result<(), EngineError> {
        self.admit_at(identity, Instant::now())
    }

    fn admit_at(&self, identity: &str, now: Instant) -> Result<(), EngineError> {
        if self.rate == 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(identity) && buckets.len() >= MAX_TRACKED {
            self.forget(&mut buckets, now);
        }
        let bucket = buckets.entry(identity.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate);
        Err(EngineError::Exhausted {
            message: format!(
                "rate limit: {identity} may send {} requests per second (bursts of {}); retry in {} ms",
                self.rate,
                self.burst,
                wait.as_millis().max(1)
            ),
            retry_after: Some(wait),
        })
    }

    /// Makes room for one more identity.
    fn forget(&self, buckets: &mut HashMap<String, Bucket>, now: Instant) {
        let full_after = Duration::from_secs_f64(self.burst / self.rate);
        buckets.retain(|_, b| now.saturating_duration_since(b.at) < full_after);
        if buckets.len() >= MAX_TRACKED {
            if let Some(idle) = buckets
                .iter()
                .min_by_key(|(_, b)| b.at)
                .map(|(k, _)| k.clone())
            {
                buckets.remove(&idle);
            }
        }
    }

    /// Identities tracked now (for tests).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_admitted_then_refused_with_the_wait_until_the_next_token() {
        let limits = RateLimits::new(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            limits.admit_at("alice", t0).unwrap();
        }
        let Err(EngineError::Exhausted {
            retry_after,
            message,
        }) = limits.admit_at("alice", t0)
        else {
            panic!("the fourth request at once is refused");
        };
        assert_eq!(retry_after, Some(Duration::from_millis(500)));
        assert!(message.contains("alice"), "{message}");
        // Another caller is not affected.
        limits.admit_at("bob", t0).unwrap();
        // Half a second later one token is back.
        limits
            .admit_at("alice", t0 + Duration::from_millis(500))
            .unwrap();
        assert!(limits
            .admit_at("alice", t0 + Duration::from_millis(500))
            .is_err());
    }

    #[test]
    fn a_zero_rate_admits_everything() {
        let limits = RateLimits::new(0.0, 1);
        for _ in 0..1000 {
            limits.admit("anyone").unwrap();
        }
    }

    #[test]
    fn the_identities_tracked_stay_bounded() {
        let limits = RateLimits::new(1.0, 1);
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED + 50 {
            let _ = limits.admit_at(&format!("caller-{i}"), t0);
        }
        assert!(limits.tracked() <= MAX_TRACKED);
    }
}
