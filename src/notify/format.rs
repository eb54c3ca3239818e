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
}

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
    slack_escaped(&format!(
        "{reminder}berth on {}: project {} {what}{commit}",
        p.host, p.project
    ))
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
}
