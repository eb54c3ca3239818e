//! Notifications (docs/design.md §14): someone hears about an outcome that needs a person.
//!
//! A project's `[[notify]]` receivers get an event when a generation is rolled back, the
//! project is degraded or blocked, and when it recovers (and, when asked for, each
//! deploy). Nothing here may slow or fail a converge, and nothing may be lost:
//!
//! - **Durable.** An event is a row of the store's outbox, written in the transaction that
//!   records the outcome ([`crate::store`]'s `outbox`), with one delivery row per receiver
//!   that wants it. A kill right after the outcome cannot lose the event; a kill before it
//!   loses both.
//! - **Sent apart.** The sender ([`send`]) runs beside the daemon's loop and delivers what
//!   is due: POST, retried with exponential backoff and jitter (honouring `Retry-After`)
//!   for 24 h, then given up as failed. `berth notify flush` does one pass by hand.
//! - **Signed.** Standard Webhooks ([`sign`]): `webhook-id` (the event's id, the same on
//!   every retry, so receivers deduplicate), `webhook-timestamp`, `webhook-signature`.
//! - **Never flooding.** A failure opens an *incident* for its project. The same failure
//!   seen again (same [`fingerprint`]: durations, counts and timestamps do not count) is
//!   not a new event; while the incident stays open the sender reminds each receiver at
//!   most once per its `repeat`; `recovered` closes it.
//!
//! What happened is decided by [`decide`], a pure function of what the store just
//! recorded and the open incident; [`format`] turns an event into a request body.

pub mod format;
pub mod send;
pub mod sign;
pub mod tls;

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What an event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// A generation became healthy (no incident was open).
    Deployed,
    /// A gate failed and the whole stack went back to the last good generation.
    RolledBack,
    /// A gate failed with nothing to go back to, a revert failed, or drift of the running
    /// generation could not be repaired.
    Degraded,
    /// The desired state is not applied: poisoned, invalid, or its pre-flight failed.
    Blocked,
    /// The project is converged again after one of the failures above.
    Recovered,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::Deployed,
        EventKind::RolledBack,
        EventKind::Degraded,
        EventKind::Blocked,
        EventKind::Recovered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Deployed => "deployed",
            EventKind::RolledBack => "rolled-back",
            EventKind::Degraded => "degraded",
            EventKind::Blocked => "blocked",
            EventKind::Recovered => "recovered",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// A failure opens an incident (and is reminded of while it stays open).
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            EventKind::RolledBack | EventKind::Degraded | EventKind::Blocked
        )
    }

    /// What a receiver gets when its `events` says nothing: everything that needs a
    /// person. A deploy that went well does not.
    pub fn default_set() -> BTreeSet<EventKind> {
        EventKind::ALL
            .into_iter()
            .filter(|k| *k != EventKind::Deployed)
            .collect()
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body a receiver is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// A JSON object `{"type", "timestamp", "data"}`, as Standard Webhooks suggests.
    #[default]
    Standard,
    /// `{"text": "..."}`: what Slack's, Mattermost's and Discord's (`/slack`) incoming
    /// webhooks and ntfy take.
    Slack,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Standard => "standard",
            Format::Slack => "slack",
        }
    }
}

/// How often a failure that persists is reminded of when `repeat` is not written.
pub const DEFAULT_REPEAT: Duration = Duration::from_secs(3600);

/// One `[[notify]]` receiver, resolved: its `url` and `secret` are secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receiver {
    /// Where events are POSTed (`http://` or `https://`). A secret: a hook's URL is
    /// usually its credential.
    pub url: String,
    /// Signs each request (Standard Webhooks): `whsec_` and base64, or any other text
    /// taken as its bytes. None: requests are not signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The kinds of event it gets.
    pub events: BTreeSet<EventKind>,
    pub format: Format,
    /// How often it is reminded of a failure that persists.
    pub repeat: Duration,
}

impl Receiver {
    /// Its key in the store: the SHA-256 of its URL (the URL itself is a secret).
    pub fn key(&self) -> String {
        receiver_key(&self.url)
    }

    pub fn wants(&self, kind: EventKind) -> bool {
        self.events.contains(&kind)
    }

    /// How it is named in output: scheme and host only, since the rest of a hook's URL
    /// is usually its credential.
    pub fn describe(&self) -> String {
        describe_url(&self.url)
    }
}

/// The store's key of a receiver with this URL.
pub fn receiver_key(url: &str) -> String {
    format!("{:x}", Sha256::digest(url.as_bytes()))
}

/// `https://hooks.example/…`: a receiver's URL as output may show it.
pub fn describe_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!(
                "{}://{}{port}/…",
                u.scheme(),
                u.host_str().unwrap_or_default()
            )
        }
        Err(_) => "an unparsable URL".into(),
    }
}

/// The name of this host: an event says where it happened.
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| crate::text::one_line(h.trim(), 253))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// What the store just recorded about a project, as far as notifications care.
#[derive(Debug, Clone, PartialEq)]
pub enum Happened {
    /// A generation ended healthy: every gate passed.
    Healthy,
    /// A generation's gate failed and the stack went back to the last good one.
    RolledBack,
    /// A generation ended failed: not put back (no last good, auto-revert off), or its
    /// revert failed too.
    Failed,
    /// The project was taken down on purpose.
    Down,
    /// Any other outcome (progressing, reverting, interrupted, superseded): not final, or
    /// not news.
    Unfinished,
    /// Drift of the running generation could not be put back.
    RepairFailed,
    /// Drift of the running generation was put back.
    Repaired,
    /// The daemon does not apply the desired state; `poisoned_by` is the generation that
    /// poisoned it, when that is why.
    Blocked { poisoned_by: Option<i64> },
    /// The daemon found the project converged.
    Converged,
}

/// The project's open incident: its newest failure event not yet closed.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub id: String,
    pub generation: i64,
    pub kind: EventKind,
    pub fingerprint: String,
}

/// What to write for what happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing: not an event, or the failure the open incident already is.
    Nothing,
    /// Close the open incident without an event (the project was taken down on purpose).
    Close,
    /// Write an event. A failure closes the open incident it replaces and opens its own;
    /// `recovered` closes it.
    Event {
        kind: EventKind,
        fingerprint: String,
    },
}

/// What to write when `happened` to `project` (at `generation`, for `reason`, with
/// `failing` services), given its open incident. Pure: the store carries it out.
pub fn decide(
    happened: &Happened,
    project: &str,
    generation: i64,
    reason: &str,
    failing: &[String],
    open: Option<&Incident>,
) -> Decision {
    let event = |kind| Decision::Event {
        kind,
        fingerprint: fingerprint(project, kind, reason, failing),
    };
    let recovered = || match open {
        Some(_) => event(EventKind::Recovered),
        None => Decision::Nothing,
    };
    let failure = |kind| {
        let fp = fingerprint(project, kind, reason, failing);
        match open {
            Some(o) if o.fingerprint == fp => Decision::Nothing,
            _ => Decision::Event {
                kind,
                fingerprint: fp,
            },
        }
    };
    match happened {
        Happened::Healthy => match open {
            Some(_) => event(EventKind::Recovered),
            None => event(EventKind::Deployed),
        },
        Happened::RolledBack => failure(EventKind::RolledBack),
        Happened::Failed | Happened::RepairFailed => failure(EventKind::Degraded),
        Happened::Down => match open {
            Some(_) => Decision::Close,
            None => Decision::Nothing,
        },
        Happened::Unfinished => Decision::Nothing,
        // Only the incident a failed repair opened is closed by a repair: one that went
        // well does not fix a rolled-back deploy or a blocked desired state.
        Happened::Repaired => match open {
            Some(o) if o.kind == EventKind::Degraded && o.generation == generation => recovered(),
            _ => Decision::Nothing,
        },
        // The poison of a rolled-back generation is that incident still: its rollback
        // was the news.
        Happened::Blocked {
            poisoned_by: Some(g),
        } if open.is_some_and(|o| o.generation == *g) => Decision::Nothing,
        Happened::Blocked { .. } => failure(EventKind::Blocked),
        Happened::Converged => recovered(),
    }
}

/// "The same failure": SHA-256 of the project, the kind, the reason with every number
/// (durations, counts, timestamps, line numbers) made `#`, and the failing services.
pub fn fingerprint(project: &str, kind: EventKind, reason: &str, failing: &[String]) -> String {
    let mut services: Vec<&str> = failing.iter().map(String::as_str).collect();
    services.sort();
    services.dedup();
    let mut h = Sha256::new();
    for part in [project, kind.as_str(), &without_numbers(reason)] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for s in services {
        h.update(s.as_bytes());
        h.update([0]);
    }
    format!("{:x}", h.finalize())
}

/// `healthy within 10.5 s (3 probes)` -> `healthy within # s (# probes)`.
fn without_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_number = false;
    for c in text.chars() {
        let part_of_number = c.is_ascii_digit() || (in_number && c == '.');
        if part_of_number {
            if !in_number {
                out.push('#');
            }
        } else {
            out.push(c);
        }
        in_number = part_of_number;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(kind: EventKind, generation: i64, reason: &str, failing: &[&str]) -> Incident {
        let failing: Vec<String> = failing.iter().map(|s| s.to_string()).collect();
        Incident {
            id: format!("p:{generation}:{kind}"),
            generation,
            kind,
            fingerprint: fingerprint("p", kind, reason, &failing),
        }
    }

    fn kind(d: Decision) -> Option<EventKind> {
        match d {
            Decision::Event { kind, .. } => Some(kind),
            _ => None,
        }
    }

    #[test]
    fn numbers_do_not_make_another_failure() {
        let a = fingerprint(
            "p",
            EventKind::Degraded,
            "service \"web\" failed its gate: not healthy within 10 s (12 probes, last at 1795000000123)",
            &["web".into()],
        );
        let b = fingerprint(
            "p",
            EventKind::Degraded,
            "service \"web\" failed its gate: not healthy within 9.5 s (3 probes, last at 1795000999999)",
            &["web".into()],
        );
        assert_eq!(a, b);
    }

    #[test]
    fn another_reason_service_kind_or_project_is_another_failure() {
        let base = fingerprint("p", EventKind::Degraded, "exited 1", &["web".into()]);
        assert_ne!(
            base,
            fingerprint(
                "p",
                EventKind::Degraded,
                "exited with a signal",
                &["web".into()]
            )
        );
        assert_ne!(
            base,
            fingerprint("p", EventKind::Degraded, "exited 1", &["db".into()])
        );
        assert_ne!(
            base,
            fingerprint("p", EventKind::Blocked, "exited 1", &["web".into()])
        );
        assert_ne!(
            base,
            fingerprint("q", EventKind::Degraded, "exited 1", &["web".into()])
        );
        assert_eq!(
            fingerprint("p", EventKind::Degraded, "x", &["a".into(), "b".into()]),
            fingerprint("p", EventKind::Degraded, "x", &["b".into(), "a".into()]),
            "the order of the services does not matter"
        );
    }

    #[test]
    fn a_healthy_generation_is_deployed_or_recovered_after_a_failure() {
        let healthy = Happened::Healthy;
        assert_eq!(
            kind(decide(&healthy, "p", 3, "", &[], None)),
            Some(EventKind::Deployed)
        );
        let incident = open(EventKind::RolledBack, 2, "gate", &["web"]);
        assert_eq!(
            kind(decide(&healthy, "p", 3, "", &[], Some(&incident))),
            Some(EventKind::Recovered)
        );
    }

    #[test]
    fn each_failed_outcome_is_its_event_and_unfinished_ones_are_none() {
        let d = |o| kind(decide(&o, "p", 2, "why", &[], None));
        assert_eq!(d(Happened::RolledBack), Some(EventKind::RolledBack));
        assert_eq!(d(Happened::Failed), Some(EventKind::Degraded));
        assert_eq!(d(Happened::RepairFailed), Some(EventKind::Degraded));
        assert_eq!(d(Happened::Unfinished), None);
        assert_eq!(d(Happened::Down), None);
    }

    #[test]
    fn the_same_failure_again_is_not_a_new_event_and_another_one_is() {
        let incident = open(EventKind::Blocked, 4, "invalid: f.toml:8:9: bad", &[]);
        let blocked = Happened::Blocked { poisoned_by: None };
        assert_eq!(
            decide(
                &blocked,
                "p",
                4,
                "invalid: f.toml:9:1: bad",
                &[],
                Some(&incident)
            ),
            Decision::Nothing
        );
        assert_eq!(
            kind(decide(
                &blocked,
                "p",
                4,
                "pre-flight failed: port 80 in use",
                &[],
                Some(&incident)
            )),
            Some(EventKind::Blocked)
        );
    }

    #[test]
    fn the_poison_of_the_rolled_back_generation_is_part_of_its_incident() {
        let incident = open(EventKind::RolledBack, 5, "gate", &["web"]);
        let poisoned = |g| Happened::Blocked {
            poisoned_by: Some(g),
        };
        assert_eq!(
            decide(&poisoned(5), "p", 5, "poisoned", &[], Some(&incident)),
            Decision::Nothing
        );
        assert_eq!(
            kind(decide(&poisoned(5), "p", 6, "poisoned", &[], None)),
            Some(EventKind::Blocked),
            "with no incident open, a poisoned desired state is news"
        );
    }

    #[test]
    fn a_repair_closes_only_the_incident_a_failed_repair_opened() {
        let failed_repair = open(EventKind::Degraded, 3, "drift", &[]);
        assert_eq!(
            kind(decide(
                &Happened::Repaired,
                "p",
                3,
                "",
                &[],
                Some(&failed_repair)
            )),
            Some(EventKind::Recovered)
        );
        let rolled_back = open(EventKind::RolledBack, 4, "gate", &["web"]);
        assert_eq!(
            decide(&Happened::Repaired, "p", 3, "", &[], Some(&rolled_back)),
            Decision::Nothing
        );
        assert_eq!(
            decide(&Happened::Repaired, "p", 3, "", &[], None),
            Decision::Nothing
        );
    }

    #[test]
    fn converged_recovers_an_open_incident_and_down_closes_it_quietly() {
        let incident = open(EventKind::Blocked, 3, "invalid", &[]);
        assert_eq!(
            kind(decide(
                &Happened::Converged,
                "p",
                3,
                "",
                &[],
                Some(&incident)
            )),
            Some(EventKind::Recovered)
        );
        assert_eq!(
            decide(&Happened::Converged, "p", 3, "", &[], None),
            Decision::Nothing
        );
        let down = Happened::Down;
        assert_eq!(
            decide(&down, "p", 4, "", &[], Some(&incident)),
            Decision::Close
        );
        assert_eq!(decide(&down, "p", 4, "", &[], None), Decision::Nothing);
    }

    #[test]
    fn by_default_a_receiver_hears_of_everything_but_a_deploy() {
        let all = EventKind::default_set();
        assert!(!all.contains(&EventKind::Deployed));
        assert_eq!(all.len(), 4);
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
    }

    #[test]
    fn a_receiver_is_shown_by_scheme_and_host_only() {
        assert_eq!(
            describe_url("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            describe_url("http://127.0.0.1:9000/x?token=y"),
            "http://127.0.0.1:9000/…"
        );
    }
}
