//! Exponential backoff with full jitter, for a reconcile that keeps failing.
//!
//! The delay after the n-th consecutive failure is drawn uniformly from
//! `[0, min(cap, base × factor^(n-1))]` ("full jitter"): the ceiling grows so a failing
//! engine is asked less and less often, and the draw spreads the retries of several
//! berth daemons on one engine (or one daemon and a person's `berth apply`) apart
//! instead of having them retry in step. A success resets the count.

use std::time::Duration;

/// How the ceiling of the delay grows: `base × factor^(failures-1)`, never above `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// The ceiling after the first failure.
    pub base: Duration,
    /// How much the ceiling grows with each further failure.
    pub factor: u32,
    /// The longest anyone waits: a fixed engine is picked up within this.
    pub cap: Duration,
}

impl Default for BackoffPolicy {
    /// 1 s, doubling, capped at 5 min (the default resync period: a failing project is
    /// never looked at less often than a healthy one).
    fn default() -> Self {
        BackoffPolicy {
            base: Duration::from_secs(1),
            factor: 2,
            cap: Duration::from_secs(5 * 60),
        }
    }
}

impl BackoffPolicy {
    /// The longest delay after `failures` consecutive failures; zero for none.
    pub fn ceiling(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let mut ceiling = self.base.min(self.cap);
        // Multiplying step by step stops at the cap, so a long outage cannot overflow.
        for _ in 1..failures {
            if ceiling >= self.cap || self.factor <= 1 {
                break;
            }
            ceiling = ceiling.saturating_mul(self.factor).min(self.cap);
        }
        ceiling
    }
}

/// A backoff in progress: the policy, the failures so far and the random source.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    /// Consecutive failures since the last success (or the start).
    failures: u32,
    /// The jitter's source; injectable so tests can predict every delay.
    rng: fastrand::Rng,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(BackoffPolicy::default())
    }
}

impl Backoff {
    /// A backoff with jitter from a randomly seeded source.
    pub fn new(policy: BackoffPolicy) -> Self {
        Backoff::with_rng(policy, fastrand::Rng::new())
    }

    /// A backoff whose jitter comes from `rng` (tests pass `fastrand::Rng::with_seed`).
    pub fn with_rng(policy: BackoffPolicy, rng: fastrand::Rng) -> Self {
        Backoff {
            policy,
            failures: 0,
            rng,
        }
    }

    /// Record a failure; returns how long to wait before the next attempt.
    pub fn fail(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let ceiling = self.policy.ceiling(self.failures);
        // Whole milliseconds: tokio's timers are no finer, so the delay reported is the
        // delay slept.
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(self.rng.u64(0..=millis))
    }

    /// A success: the next failure starts over at `base`.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn policy(&self) -> BackoffPolicy {
        self.policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn the_ceiling_doubles_from_the_base_until_the_cap() {
        let p = BackoffPolicy::default();
        let ceilings: Vec<u64> = (0..=11).map(|n| p.ceiling(n).as_secs()).collect();
        assert_eq!(
            ceilings,
            [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300],
            "zero for no failure, then 1 s doubling, capped at 5 min"
        );
    }

    #[test]
    fn a_very_long_outage_stays_at_the_cap_without_overflow() {
        let p = BackoffPolicy {
            base: SECOND,
            factor: 10,
            cap: Duration::MAX,
        };
        assert_eq!(p.ceiling(u32::MAX), Duration::MAX);
        let mut b = Backoff::with_rng(p, fastrand::Rng::with_seed(3));
        b.failures = u32::MAX - 1;
        b.fail();
        assert_eq!(BackoffPolicy::default().ceiling(u32::MAX), 300 * SECOND);
        let mut b = Backoff {
            failures: u32::MAX,
            ..Backoff::default()
        };
        assert!(b.fail() <= 300 * SECOND);
        assert_eq!(b.failures(), u32::MAX);
    }

    #[test]
    fn every_delay_lies_between_zero_and_its_ceiling() {
        let p = BackoffPolicy::default();
        for seed in 0..200 {
            let mut b = Backoff::with_rng(p, fastrand::Rng::with_seed(seed));
            for n in 1..=12 {
                let d = b.fail();
                assert!(d <= p.ceiling(n), "seed {seed}, failure {n}: {d:?}");
            }
        }
    }

    #[test]
    fn the_jitter_spreads_delays_over_the_whole_range() {
        // Full jitter, not "ceiling ± a little": retries of several clients drift apart.
        let p = BackoffPolicy::default();
        let delays: Vec<Duration> = (0..400)
            .map(|seed| {
                let mut b = Backoff::with_rng(p, fastrand::Rng::with_seed(seed));
                (0..5).map(|_| b.fail()).last().unwrap()
            })
            .collect();
        let ceiling = p.ceiling(5);
        assert!(delays.iter().any(|d| *d < ceiling / 4), "{delays:?}");
        assert!(delays.iter().any(|d| *d > ceiling * 3 / 4), "{delays:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        let p = BackoffPolicy::default();
        let run = || {
            let mut b = Backoff::with_rng(p, fastrand::Rng::with_seed(42));
            (0..8).map(|_| b.fail()).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn a_reset_starts_the_next_failure_over_at_the_base() {
        let p = BackoffPolicy::default();
        let mut b = Backoff::with_rng(p, fastrand::Rng::with_seed(1));
        for _ in 0..9 {
            b.fail();
        }
        assert_eq!(b.failures(), 9);
        b.reset();
        assert_eq!(b.failures(), 0);
        assert!(b.fail() <= SECOND);
        assert_eq!(b.failures(), 1);
    }
}
