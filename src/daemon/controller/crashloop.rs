//! Crash-loop policy for drift repair: a service that keeps dying is not restarted in a
//! tight loop.
//!
//! Drift repair puts a dead container back within a second of its event. A service whose
//! process exits at start would then be recreated over and over, each time pulling the
//! engine and the gate through a full start. [`RestartTracker`] counts the repairs of each
//! service in a sliding window; once `max_repairs` fall within `window`, the next repair
//! of that service is held for a delay that doubles with every further hold (like
//! kubelet's CrashLoopBackOff), and the project says why: `web: restarted 5 times in 2m`.
//! A service that stays up for a whole window starts over.
//!
//! Pure: every answer is for an `Instant` the caller passes, so tests need no clock.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::backoff::BackoffPolicy;

/// When a service counts as crash-looping, and how long its repairs are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashLoopPolicy {
    /// Repairs within `window` that are made promptly; the next one is held.
    pub max_repairs: usize,
    /// The sliding window the repairs are counted in.
    pub window: Duration,
    /// How long the holds last: no jitter, so the status and the tests can say when the
    /// next repair comes (one service's repairs have nothing to spread apart from).
    pub hold: BackoffPolicy,
}

impl Default for CrashLoopPolicy {
    /// 5 repairs in 2 min, then holds of 10 s doubling up to 5 min (kubelet's numbers).
    fn default() -> Self {
        CrashLoopPolicy {
            max_repairs: 5,
            window: Duration::from_secs(2 * 60),
            hold: BackoffPolicy {
                base: Duration::from_secs(10),
                factor: 2,
                cap: Duration::from_secs(5 * 60),
            },
        }
    }
}

/// Whether a service may be repaired now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Repair,
    /// Not before `until`: the daemon should look again then.
    Hold {
        until: Instant,
    },
}

/// A service whose repairs are held, as the project's status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub service: String,
    /// Repairs since the service last stayed up for a whole window.
    pub restarts: usize,
    /// The time those repairs span: at least the window (they fell within it), more
    /// once the holds outgrow it.
    pub over: Duration,
    pub until: Instant,
}

impl fmt::Display for Held {
    /// `web: restarted 5 times in 2m`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: restarted {} times in {}",
            self.service,
            self.restarts,
            humantime::format_duration(round_to_seconds(self.over))
        )
    }
}

fn round_to_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() >= 500_000_000))
}

/// One service's repairs.
#[derive(Debug, Default)]
struct History {
    /// When each repair within the window was made, oldest first: what trips a hold.
    repairs: VecDeque<Instant>,
    /// Repairs since the service last stayed up for a whole window, and when the first
    /// of them was made: what the status text counts.
    streak: usize,
    streak_start: Option<Instant>,
    /// Holds in this streak: the exponent of the next hold.
    holds: u32,
    /// The end of the hold under way (or of the last one).
    held_until: Option<Instant>,
}

/// The repairs of every service of the project, and which of them are held.
#[derive(Debug, Default)]
pub struct RestartTracker {
    policy: CrashLoopPolicy,
    services: BTreeMap<String, History>,
}

impl RestartTracker {
    pub fn new(policy: CrashLoopPolicy) -> Self {
        RestartTracker {
            policy,
            services: BTreeMap::new(),
        }
    }

    /// Whether `service` may be repaired at `now`.
    pub fn verdict(&self, service: &str, now: Instant) -> Verdict {
        match self.services.get(service).and_then(|h| h.held_until) {
            Some(until) if until > now => Verdict::Hold { until },
            _ => Verdict::Repair,
        }
    }

    /// Record that `service` was repaired at `now`; returns whether its next repair may
    /// follow at once or is held.
    ///
    /// Once a service is held, every further repair in the streak holds it again, twice
    /// as long: holds soon outgrow the window, and counting within the window alone
    /// would let a service that never stays up go back to prompt restarts. The streak
    /// ends when the service stays up for a whole window after its last repair or hold.
    pub fn record(&mut self, service: &str, now: Instant) -> Verdict {
        let window = self.policy.window;
        let h = self.services.entry(service.to_string()).or_default();
        // The tracker sees repairs, not deaths: time spent waiting out a hold may have
        // been time down, so "up" is counted from the later of the last repair and the
        // end of the last hold. Conservative: a service is held a little longer, never
        // restarted in a tight loop.
        let up_since = h.repairs.back().copied().max(h.held_until);
        let stayed_up = up_since.is_none_or(|t| now.saturating_duration_since(t) >= window);
        if stayed_up {
            h.streak = 0;
            h.streak_start = Some(now);
            h.holds = 0;
        }
        while h
            .repairs
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            h.repairs.pop_front();
        }
        h.repairs.push_back(now);
        h.streak += 1;
        if h.holds == 0 && h.repairs.len() < self.policy.max_repairs {
            return Verdict::Repair;
        }
        h.holds = h.holds.saturating_add(1);
        let hold = self.policy.hold.ceiling(h.holds);
        let until = now + hold;
        h.held_until = Some(until);
        tracing::warn!(
            service,
            restarts = h.streak,
            ?hold,
            "service keeps dying; holding its next repair"
        );
        Verdict::Hold { until }
    }

    /// Forget a service (it left the desired state, or a new generation replaced it).
    pub fn forget(&mut self, service: &str) {
        self.services.remove(service);
    }

    /// The services held at `now`, by name; their `Display` is the status text.
    pub fn held(&self, now: Instant) -> Vec<Held> {
        self.services
            .iter()
            .filter_map(|(service, h)| {
                let until = h.held_until.filter(|until| *until > now)?;
                let first = h.streak_start?;
                let last = *h.repairs.back()?;
                Some(Held {
                    service: service.clone(),
                    restarts: h.streak,
                    over: (last - first).max(self.policy.window),
                    until,
                })
            })
            .collect()
    }

    /// The earliest end of a hold after `now`: when the daemon should enqueue a retry.
    pub fn next_release(&self, now: Instant) -> Option<Instant> {
        self.held(now).iter().map(|h| h.until).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    /// Record `n` repairs of `service`, `every` apart from `start`; returns the last time.
    fn repairs(
        t: &mut RestartTracker,
        service: &str,
        start: Instant,
        every: Duration,
        n: u32,
    ) -> (Instant, Verdict) {
        let mut verdict = Verdict::Repair;
        let mut at = start;
        for i in 0..n {
            at = start + every * i;
            assert_eq!(t.verdict(service, at), Verdict::Repair, "repair {i}");
            verdict = t.record(service, at);
        }
        (at, verdict)
    }

    #[test]
    fn four_repairs_in_the_window_are_all_made_at_once() {
        let mut t = RestartTracker::default();
        let t0 = Instant::now();
        let (last, verdict) = repairs(&mut t, "web", t0, 10 * SECOND, 4);
        assert_eq!(verdict, Verdict::Repair);
        assert_eq!(t.verdict("web", last), Verdict::Repair);
        assert!(t.held(last).is_empty());
    }

    #[test]
    fn the_fifth_repair_in_two_minutes_holds_the_next_and_says_so() {
        let mut t = RestartTracker::default();
        let t0 = Instant::now();
        let (last, verdict) = repairs(&mut t, "web", t0, 10 * SECOND, 5);
        let until = last + 10 * SECOND;
        assert_eq!(verdict, Verdict::Hold { until });
        assert_eq!(t.verdict("web", last + 9 * SECOND), Verdict::Hold { until });
        assert_eq!(t.verdict("web", until), Verdict::Repair);
        let held = t.held(last);
        assert_eq!(
            held.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["web: restarted 5 times in 2m"]
        );
        assert_eq!(t.next_release(last), Some(until));
        assert_eq!(
            t.verdict("db", last),
            Verdict::Repair,
            "other services go on"
        );
    }

    #[test]
    fn repairs_spread_wider_than_the_window_are_never_held() {
        let mut t = RestartTracker::default();
        let t0 = Instant::now();
        let (_, verdict) = repairs(&mut t, "web", t0, 31 * SECOND, 20);
        assert_eq!(verdict, Verdict::Repair);
    }

    #[test]
    fn each_further_hold_doubles_until_the_cap() {
        let mut t = RestartTracker::default();
        let t0 = Instant::now();
        let (mut now, _) = repairs(&mut t, "web", t0, SECOND, 5);
        let mut holds = Vec::new();
        for _ in 0..8 {
            let Verdict::Hold { until } = t.verdict("web", now) else {
                panic!("held")
            };
            holds.push((until - now).as_secs());
            now = until;
            t.record("web", now);
        }
        assert_eq!(holds, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(
            t.held(now)[0].to_string(),
            "web: restarted 13 times in 20m 14s",
            "the whole streak, once it outgrows the window"
        );
    }

    #[test]
    fn a_whole_window_without_a_repair_starts_the_service_over() {
        let mut t = RestartTracker::default();
        let t0 = Instant::now();
        let (last, _) = repairs(&mut t, "web", t0, SECOND, 5);
        let Verdict::Hold { until } = t.record("web", last + 10 * SECOND) else {
            panic!("held")
        };
        assert_eq!(until, last + 30 * SECOND, "the second hold: 20 s");
        // Quiet for more than the window after the hold: five prompt repairs again,
        // and the first hold after them is the base again.
        let later = until + 2 * 60 * SECOND;
        let (last, verdict) = repairs(&mut t, "web", later, SECOND, 5);
        assert_eq!(
            verdict,
            Verdict::Hold {
                until: last + 10 * SECOND
            }
        );
    }

    #[test]
    fn a_forgotten_service_is_repaired_at_once() {
        let mut t = RestartTracker::default();
        let t0 = Instant::now();
        let (last, _) = repairs(&mut t, "web", t0, SECOND, 5);
        t.forget("web");
        assert_eq!(t.verdict("web", last), Verdict::Repair);
        assert_eq!(t.next_release(last), None);
    }
}
