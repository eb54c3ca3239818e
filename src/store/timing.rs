//! When each step of a converge happened, as a generation records it.
//!
//! One [`Timing`] per service (and one for the migrations step, under its node's name),
//! in milliseconds since the epoch on this host's clock. A field is absent when the step
//! never reached it: a noop has only its action, a failed create only `failed_ms`, a
//! converge cut short by another failure `cut_ms`. Stored as JSON in `timings_json`; the
//! fields are written in name order, as the untyped map they replaced wrote them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Each service's (and the migrations step's) timing, by name.
pub type Timings = BTreeMap<String, Timing>;

/// One step of a converge, timed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// The plan's word for what was done (`create`, `recreate`, `start`, `noop`,
    /// `migrate`); absent for a service whose start was recorded only because the
    /// converge was cut short.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The step began (the service's level reached it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub begin_ms: Option<i64>,
    /// Its container was asked for, ahead of its level (a create or recreate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_ms: Option<i64>,
    /// Its container existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_ms: Option<i64>,
    /// Another service's failure ended the converge while this one was under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_ms: Option<i64>,
    /// The migrations step ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<i64>,
    /// The step failed (its gate, or making its container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_ms: Option<i64>,
    /// The gate closed: healthy, then stable through `min_healthy_time`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_passed_ms: Option<i64>,
    /// Seconds from the start to the gate's close.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_s: Option<f64>,
    /// The probe first passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_ms: Option<i64>,
    /// Its container was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<i64>,
}

impl Timing {
    /// A step doing `action`, with nothing timed yet.
    pub fn of(action: &str) -> Timing {
        Timing {
            action: Some(action.to_string()),
            ..Timing::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timing_is_written_as_the_map_it_replaced_with_only_what_happened() {
        let t = Timing {
            begin_ms: Some(1),
            started_ms: Some(2),
            gate_s: Some(0.5),
            ..Timing::of("create")
        };
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"action":"create","begin_ms":1,"gate_s":0.5,"started_ms":2}"#
        );
        assert_eq!(
            serde_json::to_string(&Timing::of("noop")).unwrap(),
            r#"{"action":"noop"}"#
        );
    }

    #[test]
    fn a_stored_timing_with_a_field_berth_no_longer_knows_still_reads() {
        let t: Timing =
            serde_json::from_str(r#"{"action":"start","old_ms":3,"started_ms":4}"#).unwrap();
        assert_eq!(t.started_ms, Some(4));
        assert_eq!(t.action.as_deref(), Some("start"));
    }
}
