//! What a receiver is sent: the event as the outbox keeps it ([`Payload`]) made into a
//! request body in the receiver's [`Format`].
//!
//! The body of an event is the same on every retry (its timestamp is when the event
//! happened, not when it was sent), so a receiver that stored it once sees the same bytes.

use serde::{Deserialize, Serialize};

use super::Format;

/// An event as the outbox keeps it: everything a person needs to know what happened
/// where, with secrets already redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    /// The event's id: `{project}:{generation}:{kind}` (`:{n}` after it when that
    /// generation had such an event before). The `webhook-id` of its first delivery.
    pub id: String,
    /// `rolled-back`, `degraded`, `blocked`, `recovered`, `deployed` (or `test`).
    pub event: String,
    pub project: String,
    /// The generation it is about (for `blocked`, the newest one: the one kept running).
    pub generation: i64,
    /// That generation's outcome when the event was written.
    pub outcome: Option<String>,
    /// Why (a gate's reason, the status line of a blocked project); redacted, one line.
    pub reason: Option<String>,
    /// The generation's services.
    pub services: Vec<String>,
    /// The services whose gate failed (from its timings), when any did.
    #[serde(default)]
    pub failing_services: Vec<String>,
    /// For a rolled-back generation: the generation the stack went back to.
    pub reverted_to: Option<i64>,
    /// The git commit it came from, and its subject.
    pub commit: Option<String>,
    pub commit_subject: Option<String>,
    /// The host berth runs on.
    pub host: String,
    pub berth_version: String,
    /// When it happened (unix ms).
    pub at_ms: i64,
    /// For a failure: what each container whose evidence its generation keeps left
    /// behind, in short (the newest of each container). Written with the event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<EvidenceSummary>,
    /// For a rolled-back generation: what it changed from the one the stack went back
    /// to, `berth diff`'s summary lines. Added when it is sent (the two generations never
    /// change, so every attempt sends the same); empty when they are the same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
}

/// One container's evidence, as a notification tells it. Everything the container wrote
/// was redacted and made one line before it was kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceSummary {
    pub service: String,
    pub container: String,
    /// `gate-failed` or `died`.
    pub why: String,
    /// How its last run ended; None when it still ran (a gate can fail on a probe).
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub restart_count: i64,
    /// Its last log line that is not blank.
    pub last_line: Option<String>,
}

impl EvidenceSummary {
    /// `web (shop-web): exited with code 1, OOM killed, 2 restarts; last line: …`.
    pub fn text(&self) -> String {
        let mut how = vec![match self.exit_code {
            Some(code) => format!("exited with code {code}"),
            None => "still running".to_string(),
        }];
        if self.oom_killed {
            how.push("OOM killed".into());
        }
        match self.restart_count {
            0 => {}
            1 => how.push("1 restart".into()),
            n => how.push(format!("{n} restarts")),
        }
        let last = self
            .last_line
            .as_deref()
            .map(|l| format!("; last line: {l}"))
            .unwrap_or_default();
        format!(
            "{} ({}): {}{last}",
            self.service,
            self.container,
            how.join(", ")
        )
    }
}

/// How many evidence lines and change lines a slack text shows (the JSON has them all).
const SLACK_LINES: usize = 5;
/// How long a slack text's extra line may be.
const SLACK_LINE_CHARS: usize = 300;

/// What a delivery adds to its event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Note {
    /// The event itself.
    First,
    /// The `n`th reminder that the failure persists (since the event, `since_ms`).
    Reminder { n: i64, since_ms: i64 },
}

/// The request body of `payload` in `format`.
pub fn body(format: Format, payload: &Payload, note: Note) -> Vec<u8> {
    match format {
        Format::Standard => standard(payload, note),
        Format::Slack => serde_json::to_vec(&serde_json::json!({ "text": text(payload, note) }))
            .expect("a JSON object serializes"),
    }
}

/// `{"type": "berth.rolled-back", "timestamp": RFC 3339, "data": {...}}`.
fn standard(payload: &Payload, note: Note) -> Vec<u8> {
    let mut data = serde_json::to_value(payload).expect("a payload serializes");
    let (at_ms, reminder) = match note {
        Note::First => (payload.at_ms, None),
        Note::Reminder { n, since_ms } => (
            since_ms,
            Some(serde_json::json!({ "n": n, "open_since": rfc3339(since_ms) })),
        ),
    };
    data["happened_at"] = rfc3339(at_ms).into();
    if let Some(r) = reminder {
        data["reminder"] = r;
    }
    serde_json::to_vec(&serde_json::json!({
        "type": format!("berth.{}", payload.event),
        "timestamp": rfc3339(payload.at_ms),
        "data": data,
    }))
    .expect("a JSON object serializes")
}

/// One message for a person, as chat hooks show it.
pub fn text(p: &Payload, note: Note) -> String {
    let reason = p
        .reason
        .as_deref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    let what = match p.event.as_str() {
        "rolled-back" => match p.reverted_to {
            Some(to) => format!(
                "generation {} failed and was rolled back to generation {to}{reason}",
                p.generation
            ),
            None => format!(
                "generation {} failed and was rolled back{reason}",
                p.generation
            ),
        },
        "degraded" => format!("degraded at generation {}{reason}", p.generation),
        "blocked" => format!("blocked; generation {} keeps running{reason}", p.generation),
        "recovered" => format!("recovered: converged at generation {}", p.generation),
        "deployed" => format!("deployed generation {}", p.generation),
        other => format!("{other}{reason}"),
    };
    let commit = match (&p.commit, &p.commit_subject) {
        (Some(c), Some(s)) => format!(" (commit {} {s})", &c[..c.len().min(12)]),
        (Some(c), None) => format!(" (commit {})", &c[..c.len().min(12)]),
        _ => String::new(),
    };
    let reminder = match note {
        Note::First => String::new(),
        Note::Reminder { n, since_ms } => {
            format!("Reminder {n}: still so since {}. ", utc(since_ms))
        }
    };
    let mut lines = vec![format!(
        "{reminder}berth on {}: project {} {what}{commit}",
        p.host, p.project
    )];
    lines.extend(details(p));
    slack_escaped(&lines.join("\n"))
}

/// The few short lines after the first: each container's evidence, then what the
/// generation changed.
fn details(p: &Payload) -> Vec<String> {
    let mut lines = Vec::new();
    let short = |l: &str| crate::text::one_line(l, SLACK_LINE_CHARS);
    let more = |n: usize, what: &str| {
        (n > SLACK_LINES).then(|| format!("… and {} more {what}", n - SLACK_LINES))
    };
    for e in p.evidence.iter().take(SLACK_LINES) {
        lines.push(short(&format!("Evidence: {}", e.text())));
    }
    lines.extend(more(p.evidence.len(), "containers"));
    if !p.changes.is_empty() {
        let from = p
            .reverted_to
            .map(|g| format!(" from generation {g}"))
            .unwrap_or_default();
        lines.push(format!("Changes{from}:"));
        lines.extend(p.changes.iter().take(SLACK_LINES).map(|c| short(c)));
        lines.extend(more(p.changes.len(), "lines (berth diff)"));
    }
    lines
}

/// Slack reads `&`, `<` and `>` as markup: a reason quoting a container's words must
/// not make links or mentions.
fn slack_escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `2026-11-18 11:06:40 UTC`, as berth's other output writes times.
fn utc(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        Err(_) => format!("{ms} ms"),
    }
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rolled_back() -> Payload {
        Payload {
            id: "p:3:rolled-back".into(),
            event: "rolled-back".into(),
            project: "p".into(),
            generation: 3,
            outcome: Some("rolled-back".into()),
            reason: Some("service \"web\" failed its gate: <exited 1>".into()),
            services: vec!["web".into()],
            failing_services: vec!["web".into()],
            reverted_to: Some(2),
            commit: Some("0123456789abcdef0123".into()),
            commit_subject: Some("bump web".into()),
            host: "h1".into(),
            berth_version: "0.1.0".into(),
            at_ms: 1_795_000_000_000,
            evidence: vec![],
            changes: vec![],
        }
    }

    fn with_details() -> Payload {
        Payload {
            evidence: vec![EvidenceSummary {
                service: "web".into(),
                container: "p-web".into(),
                why: "gate-failed".into(),
                exit_code: Some(137),
                oom_killed: true,
                restart_count: 2,
                last_line: Some("allocated 64 MiB <oops>".into()),
            }],
            changes: vec!["web: env ~VERSION +API_TOKEN".into()],
            ..rolled_back()
        }
    }

    #[test]
    fn the_standard_body_has_type_timestamp_and_the_event_as_data() {
        let v: serde_json::Value =
            serde_json::from_slice(&body(Format::Standard, &rolled_back(), Note::First)).unwrap();
        assert_eq!(v["type"], "berth.rolled-back");
        assert_eq!(v["timestamp"], "2026-11-18T11:06:40Z");
        assert_eq!(v["data"]["id"], "p:3:rolled-back");
        assert_eq!(v["data"]["reverted_to"], 2);
        assert_eq!(v["data"]["failing_services"][0], "web");
        assert!(v["data"].get("reminder").is_none());
    }

    #[test]
    fn a_reminder_says_so_and_since_when() {
        let note = Note::Reminder {
            n: 2,
            since_ms: 1_795_000_000_000,
        };
        let v: serde_json::Value =
            serde_json::from_slice(&body(Format::Standard, &rolled_back(), note)).unwrap();
        assert_eq!(v["data"]["reminder"]["n"], 2);
        assert_eq!(v["data"]["reminder"]["open_since"], "2026-11-18T11:06:40Z");
        let t = text(&rolled_back(), note);
        assert!(
            t.starts_with("Reminder 2: still so since 2026-11-18 11:06:40 UTC. "),
            "{t}"
        );
    }

    #[test]
    fn the_slack_body_is_one_escaped_text() {
        let v: serde_json::Value =
            serde_json::from_slice(&body(Format::Slack, &rolled_back(), Note::First)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"text": "berth on h1: project p generation 3 failed and was rolled back to generation 2: service \"web\" failed its gate: &lt;exited 1&gt; (commit 0123456789ab bump web)"})
        );
    }

    #[test]
    fn the_slack_text_puts_evidence_and_changes_on_short_lines_after_the_reason() {
        let t = text(&with_details(), Note::First);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].ends_with("(commit 0123456789ab bump web)"), "{t}");
        assert_eq!(
            lines[1..],
            [
                "Evidence: web (p-web): exited with code 137, OOM killed, 2 restarts; last line: allocated 64 MiB &lt;oops&gt;",
                "Changes from generation 2:",
                "web: env ~VERSION +API_TOKEN",
            ]
        );
    }

    #[test]
    fn a_long_list_is_cut_to_a_few_lines_in_slack_and_kept_whole_in_the_standard_body() {
        let mut p = with_details();
        p.changes = (1..=8).map(|n| format!("s{n}: env ~X")).collect();
        let t = text(&p, Note::First);
        assert!(
            t.contains("s5: env ~X\n… and 3 more lines (berth diff)"),
            "{t}"
        );
        assert!(!t.contains("s6:"), "{t}");
        let v: serde_json::Value =
            serde_json::from_slice(&body(Format::Standard, &p, Note::First)).unwrap();
        assert_eq!(v["data"]["changes"].as_array().unwrap().len(), 8);
        assert_eq!(v["data"]["evidence"][0]["exit_code"], 137);
        assert_eq!(v["data"]["evidence"][0]["oom_killed"], true);
    }

    #[test]
    fn a_payload_without_details_has_no_such_fields_and_an_old_one_still_reads() {
        let v: serde_json::Value =
            serde_json::from_slice(&body(Format::Standard, &rolled_back(), Note::First)).unwrap();
        assert!(v["data"].get("evidence").is_none() && v["data"].get("changes").is_none());
        // What the outbox kept before these fields existed reads as it did.
        let stored = serde_json::to_string(&rolled_back()).unwrap();
        assert!(!stored.contains("evidence") && !stored.contains("changes"));
        assert_eq!(
            serde_json::from_str::<Payload>(&stored).unwrap(),
            rolled_back()
        );
    }
}
