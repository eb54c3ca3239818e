//! Capturing evidence: what a failed or dead container leaves behind, read from the
//! engine before the container is removed, recreated or restarted (docs/design.md §13).
//!
//! The store keeps it on the generation ([`crate::store::Evidence`]). Everything the
//! container wrote is untrusted text: each log line and each HEALTHCHECK output is
//! redacted of every registered secret and made one bounded line here, before it is
//! kept, shown or sent anywhere.

use crate::runtime::Runtime;
use crate::store::{Cause, Evidence, now_ms};

/// How many characters of one log line are kept.
const LINE_CHARS: usize = 2000;

/// Which container, and why it is captured.
pub struct Subject<'a> {
    pub generation: i64,
    pub service: &'a str,
    pub id: &'a str,
    /// Its name, as a person knows it.
    pub container: &'a str,
    pub cause: Cause,
    /// berth's own last probe result for it, when it was gated.
    pub probe: Option<String>,
}

/// Read a container's state, HEALTHCHECK runs and last log lines. What the engine no
/// longer has (the container is gone, its logs unreadable) is left out, never an error:
/// evidence is kept on a best-effort basis and never stops a revert or a repair.
pub async fn capture<R: Runtime>(rt: &R, subject: Subject<'_>) -> Evidence {
    let details = rt.inspect_container(subject.id, "").await.ok();
    let lines = match rt.container_logs(subject.id).await {
        Ok(tail) => lines_of(&tail),
        Err(e) => vec![format!("(its log could not be read: {e})")],
    };
    let running = details.as_ref().is_some_and(|d| d.running);
    Evidence {
        generation: subject.generation,
        service: subject.service.to_string(),
        container: subject.container.to_string(),
        why: subject.cause,
        captured_ms: now_ms(),
        running,
        exit_code: details.as_ref().filter(|d| !d.running).map(|d| d.exit_code),
        oom_killed: details.as_ref().is_some_and(|d| d.oom_killed),
        restart_count: details.as_ref().map_or(0, |d| d.restart_count),
        started_at: details.as_ref().and_then(|d| d.started_at.clone()),
        finished_at: details.as_ref().and_then(|d| d.finished_at.clone()),
        health: details
            .map(|d| {
                d.health_log
                    .into_iter()
                    .map(|mut r| {
                        r.output = crate::redact::registered_text(&r.output);
                        r
                    })
                    .collect()
            })
            .unwrap_or_default(),
        probe: subject.probe.map(|p| crate::redact::registered_text(&p)),
        lines,
    }
}

/// A log's tail as lines: each redacted, escaped and bounded; at most the last 200.
fn lines_of(tail: &str) -> Vec<String> {
    let all: Vec<&str> = tail.lines().collect();
    let from = all.len().saturating_sub(LOG_LINES);
    all[from..]
        .iter()
        .map(|l| crate::text::one_line(&crate::redact::registered_text(l), LINE_CHARS))
        .collect()
}

/// How many of a container's last log lines are kept.
pub const LOG_LINES: usize = 200;

/// The last non-empty line a container wrote, quoted for a reason: `last line: "…"`.
pub fn last_line(e: &Evidence) -> Option<String> {
    e.lines
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| format!("last line: {:?}", crate::text::one_line(l, 200)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_log_keeps_its_last_two_hundred_lines_each_one_line_and_escaped() {
        let tail: String = (1..=500).map(|i| format!("line {i}\x1b[31m\n")).collect();
        let lines = lines_of(&tail);
        assert_eq!(lines.len(), LOG_LINES);
        assert!(lines[0].starts_with("line 301"), "{}", lines[0]);
        assert!(lines.iter().all(|l| !l.contains('\x1b')), "{lines:?}");
    }

    #[test]
    fn the_last_line_skips_trailing_blank_lines() {
        let e = Evidence {
            generation: 1,
            service: "web".into(),
            container: "p-web".into(),
            why: Cause::GateFailed,
            captured_ms: 0,
            running: false,
            exit_code: Some(3),
            oom_killed: false,
            restart_count: 0,
            started_at: None,
            finished_at: None,
            health: vec![],
            probe: None,
            lines: vec!["boom: out of cheese".into(), "  ".into()],
        };
        assert_eq!(
            last_line(&e).unwrap(),
            r#"last line: "boom: out of cheese""#
        );
    }
}
