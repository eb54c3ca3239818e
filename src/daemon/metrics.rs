//! berth's Prometheus metrics, kept with `prometheus-client`, the official Rust client, and
//! served as text by [`super::http`] on `GET /metrics`.
//!
//! Two kinds of series, fed by two kinds of call:
//! - what a reconcile did ([`Metrics::record_reconcile`], [`Metrics::record_outcome`],
//!   [`Metrics::record_repairs`], ...): counters and a histogram of this process, with no
//!   `project` label, since one daemon runs one project;
//! - what a project *is* ([`Metrics::set_status`]): gauges labelled with the project, read
//!   from the same [`Report`] that `berth status` prints, so the dashboard and the command
//!   line never disagree.
//!
//! Every series that an alert or a rate reads exists from the start (at 0), so that
//! `increase()` sees the first event and an alert on "no success for 15 minutes" has a
//! series to read before the first reconcile ends.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::reconcile::ApplyOutcome;
use crate::status::Report;
use crate::store::Outcome;

/// The `Content-Type` of [`Metrics::encode`]'s text: the Prometheus text format 0.0.4,
/// which every Prometheus version scrapes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// How one reconcile ended, as the `result` label of `berth_reconciles_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReconcileResult {
    /// A new or interrupted generation converged and passed its gates.
    Converged,
    /// Nothing differed.
    NoChanges,
    /// Drift of the running generation was put back, gated.
    Repaired,
    /// A gate failed and the stack is back on the last good generation.
    RolledBack,
    /// A gate failed and the stack could not be put back, or drift could not be repaired.
    Degraded,
    /// The desired state already failed once; not applied again.
    Poisoned,
    /// The desired state did not load or validate; nothing changed.
    Invalid,
    /// A runtime error: the engine, the store, an image...
    Error,
    /// A stop was requested in the middle.
    Interrupted,
}

impl ReconcileResult {
    /// Every result, so each `result` series exists at 0 before its first reconcile.
    pub const ALL: [ReconcileResult; 9] = [
        ReconcileResult::Converged,
        ReconcileResult::NoChanges,
        ReconcileResult::Repaired,
        ReconcileResult::RolledBack,
        ReconcileResult::Degraded,
        ReconcileResult::Poisoned,
        ReconcileResult::Invalid,
        ReconcileResult::Error,
        ReconcileResult::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReconcileResult::Converged => "converged",
            ReconcileResult::NoChanges => "no-changes",
            ReconcileResult::Repaired => "repaired",
            ReconcileResult::RolledBack => "rolled-back",
            ReconcileResult::Degraded => "degraded",
            ReconcileResult::Poisoned => "poisoned",
            ReconcileResult::Invalid => "invalid",
            ReconcileResult::Error => "error",
            ReconcileResult::Interrupted => "interrupted",
        }
    }

    /// Whether the stack ended where the desired state (or the running generation) says:
    /// these, and only these, move `berth_last_success_timestamp_seconds`.
    pub fn is_success(self) -> bool {
        matches!(
            self,
            ReconcileResult::Converged | ReconcileResult::NoChanges | ReconcileResult::Repaired
        )
    }

    /// The result of a reconcile that returned an outcome (errors and invalid desired
    /// states never get that far: the daemon names those itself).
    pub fn of(outcome: &ApplyOutcome) -> ReconcileResult {
        match outcome {
            ApplyOutcome::NoChanges => ReconcileResult::NoChanges,
            // `down` is never a daemon's doing; if it were, the stack is where it was asked.
            ApplyOutcome::Converged { .. } | ApplyOutcome::Down { .. } => {
                ReconcileResult::Converged
            }
            ApplyOutcome::Repaired { .. } => ReconcileResult::Repaired,
            ApplyOutcome::RolledBack { .. } => ReconcileResult::RolledBack,
            // Auto-revert off: the failed generation stays, which `status` calls degraded.
            ApplyOutcome::GateFailed { .. } | ApplyOutcome::Degraded { .. } => {
                ReconcileResult::Degraded
            }
            ApplyOutcome::Poisoned { .. } => ReconcileResult::Poisoned,
            ApplyOutcome::WouldRemoveAll { .. } => ReconcileResult::Invalid,
            ApplyOutcome::Interrupted { .. } => ReconcileResult::Interrupted,
        }
    }
}

impl EncodeLabelValue for ReconcileResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: ReconcileResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProjectLabels {
    project: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    project: String,
    outcome: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabels {
    project: String,
    status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ServiceLabels {
    project: String,
    service: String,
}

/// How a notification delivery attempt went: `delivered`, `retried` or `failed` (given
/// up after 24 h), as [`crate::notify::send::Next::label`] says.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NotifyLabels {
    result: String,
}

/// Every `result` of `berth_notifications_total`, so each series exists at 0.
const NOTIFY_RESULTS: [&str; 3] = ["delivered", "retried", "failed"];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RepairLabels {
    service: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct GenerationInfoLabels {
    project: String,
    generation: String,
    outcome: String,
    status: String,
    /// The git commit the running generation came from ("" when read from a file).
    commit: String,
}

/// Every generation outcome, so the outcome gauges of a project are all there (0 but one).
const OUTCOMES: [Outcome; 8] = Outcome::ALL;

/// Every [`crate::status::ProjectStatus`] word, for the same reason.
const STATUS_WORDS: [&str; 8] = [
    "converged",
    "progressing",
    "interrupted",
    "rolled-back",
    "degraded",
    "blocked",
    "down",
    "unknown",
];

/// The labelled series last set for one project, so that the next [`Metrics::set_status`]
/// removes those that no longer apply (a service dropped from the desired state must not
/// report its last health for ever).
#[derive(Debug, Default)]
struct Shown {
    services: HashSet<ServiceLabels>,
    info: Option<GenerationInfoLabels>,
}

/// berth's metrics. Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    /// Owns the descriptions; [`Metrics::encode`] reads it.
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    reconcile_duration: Family<ResultLabels, Histogram, fn() -> Histogram>,
    last_success: Gauge<f64, AtomicU64>,
    engine_reachable: Gauge,
    repairs: Family<RepairLabels, Counter>,
    gate_failures: Counter,
    reverts: Counter,
    generation: Family<ProjectLabels, Gauge>,
    outcome: Family<OutcomeLabels, Gauge>,
    status: Family<StatusLabels, Gauge>,
    service_healthy: Family<ServiceLabels, Gauge>,
    generation_info: Family<GenerationInfoLabels, Gauge>,
    notifications: Family<NotifyLabels, Counter>,
    outbox_depth: Gauge,
    /// Per project, what [`Metrics::set_status`] set last.
    shown: Mutex<HashMap<String, Shown>>,
}

/// Reconciles last from milliseconds (nothing to do) to minutes (a gate waiting out
/// `healthy_deadline`, then a revert): 50 ms doubling to about 14 minutes.
fn reconcile_duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("berth"),
            reconciles: Family::default(),
            reconcile_duration: Family::new_with_constructor(reconcile_duration_histogram),
            last_success: Gauge::default(),
            engine_reachable: Gauge::default(),
            repairs: Family::default(),
            gate_failures: Counter::default(),
            reverts: Counter::default(),
            generation: Family::default(),
            outcome: Family::default(),
            status: Family::default(),
            service_healthy: Family::default(),
            generation_info: Family::default(),
            notifications: Family::default(),
            outbox_depth: Gauge::default(),
            shown: Mutex::new(HashMap::new()),
        };
        m.registry.register(
            "reconciles",
            "Reconciles ended, by result",
            m.reconciles.clone(),
        );
        m.registry.register(
            "reconcile_duration_seconds",
            "How long reconciles took, by result",
            m.reconcile_duration.clone(),
        );
        m.registry.register(
            "last_success_timestamp_seconds",
            "When a reconcile last ended converged, with no changes or repaired (unix seconds; 0 before the first)",
            m.last_success.clone(),
        );
        m.registry.register(
            "engine_reachable",
            "1 while the Docker engine answers, 0 while it does not",
            m.engine_reachable.clone(),
        );
        m.registry.register(
            "drift_repairs",
            "Services of the running generation put back after drift, by service",
            m.repairs.clone(),
        );
        m.registry.register(
            "gate_failures",
            "Generations whose health gate failed",
            m.gate_failures.clone(),
        );
        m.registry.register(
            "reverts",
            "Stacks put back on the last good generation after a failed gate",
            m.reverts.clone(),
        );
        m.registry.register(
            "generation",
            "The project's newest generation",
            m.generation.clone(),
        );
        m.registry.register(
            "generation_outcome",
            "1 for the newest generation's outcome (as berth status shows it), 0 for the others",
            m.outcome.clone(),
        );
        m.registry.register(
            "project_status",
            "1 for the project's status word (as berth status says it), 0 for the others",
            m.status.clone(),
        );
        m.registry.register(
            "service_healthy",
            "1 when the service runs and berth's probe passes, 0 otherwise",
            m.service_healthy.clone(),
        );
        m.registry.register(
            "generation_info",
            "The project's newest generation, its outcome and status, and the git commit running, as labels (always 1)",
            m.generation_info.clone(),
        );
        m.registry.register(
            "notifications",
            "Notification delivery attempts, by result: delivered, retried (the receiver did not take it; tried again later), failed (given up after 24 h)",
            m.notifications.clone(),
        );
        m.registry.register(
            "notify_outbox_depth",
            "Notification deliveries waiting in the outbox (not yet taken, not given up)",
            m.outbox_depth.clone(),
        );
        m.registry.register(
            "build",
            "The berth binary serving these metrics",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        for result in ReconcileResult::ALL {
            // Created now, at 0; the guard it returns is not needed.
            let _ = m.reconciles.get_or_create(&ResultLabels { result });
        }
        for result in NOTIFY_RESULTS {
            let _ = m.notifications.get_or_create(&NotifyLabels {
                result: result.into(),
            });
        }
        m
    }

    /// One reconcile ended with `result` after `took`.
    pub fn record_reconcile(&self, result: ReconcileResult, took: Duration) {
        let labels = ResultLabels { result };
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if result.is_success() {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            self.last_success.set(now.as_secs_f64());
        }
    }

    /// One reconcile returned `outcome` after `took`: its result, and the repairs, gate
    /// failures and reverts it says happened. A failed revert ends `Degraded`, whose
    /// reason alone tells a failed gate from unrepairable drift: the daemon, which knows,
    /// calls [`Metrics::record_gate_failure`] for that case itself.
    pub fn record_outcome(&self, outcome: &ApplyOutcome, took: Duration) {
        self.record_reconcile(ReconcileResult::of(outcome), took);
        match outcome {
            ApplyOutcome::Repaired { services, .. } => self.record_repairs(services),
            ApplyOutcome::GateFailed { .. } => self.record_gate_failure(),
            ApplyOutcome::RolledBack { .. } => {
                self.record_gate_failure();
                self.record_revert();
            }
            _ => {}
        }
    }

    /// These services were put back after drift (one count each).
    pub fn record_repairs<S: AsRef<str>>(&self, services: &[S]) {
        for s in services {
            self.repairs
                .get_or_create(&RepairLabels {
                    service: s.as_ref().to_string(),
                })
                .inc();
        }
    }

    /// A generation's gate failed.
    pub fn record_gate_failure(&self) {
        self.gate_failures.inc();
    }

    /// The stack was put back on the last good generation.
    pub fn record_revert(&self) {
        self.reverts.inc();
    }

    /// One notification delivery attempt ended as `result` (`delivered`, `retried`,
    /// `failed`).
    pub fn record_notification(&self, result: &str) {
        self.notifications
            .get_or_create(&NotifyLabels {
                result: result.into(),
            })
            .inc();
    }

    /// How many notification deliveries wait in the outbox.
    pub fn set_outbox_depth(&self, depth: i64) {
        self.outbox_depth.set(depth);
    }

    /// Whether the Docker engine answered the last time the daemon asked.
    pub fn set_engine_reachable(&self, reachable: bool) {
        self.engine_reachable.set(i64::from(reachable));
    }

    /// Show a project as `berth status` reports it: its generation, outcome, status word
    /// and each service's health. Series of services no longer in the report go away.
    /// Meant for one caller at a time (the daemon loop, through `Shared::publish`): two
    /// racing reports of one project could leave the loser's services shown.
    pub fn set_status(&self, report: &Report) {
        let project = &report.project;
        let generation = ProjectLabels {
            project: project.clone(),
        };
        match report.generation {
            Some(g) => {
                self.generation.get_or_create(&generation).set(g);
            }
            None => {
                self.generation.remove(&generation);
            }
        }
        for o in OUTCOMES {
            let current = report.outcome.as_deref() == Some(o.as_str());
            self.outcome
                .get_or_create(&OutcomeLabels {
                    project: project.clone(),
                    outcome: o.as_str().to_string(),
                })
                .set(i64::from(current));
        }
        for word in STATUS_WORDS {
            self.status
                .get_or_create(&StatusLabels {
                    project: project.clone(),
                    status: word.to_string(),
                })
                .set(i64::from(report.status.word() == word));
        }

        let mut services = HashSet::new();
        for s in &report.services {
            let labels = ServiceLabels {
                project: project.clone(),
                service: s.service.clone(),
            };
            let healthy = s.health == Some(crate::runtime::HealthState::Healthy);
            self.service_healthy
                .get_or_create(&labels)
                .set(i64::from(healthy));
            services.insert(labels);
        }
        let info = report.generation.map(|g| GenerationInfoLabels {
            project: project.clone(),
            generation: g.to_string(),
            outcome: report.outcome.clone().unwrap_or_default(),
            status: report.status.word().to_string(),
            commit: report
                .git
                .as_ref()
                .and_then(|g| g.deployed.clone())
                .unwrap_or_default(),
        });
        if let Some(i) = &info {
            self.generation_info.get_or_create(i).set(1);
        }

        let mut shown = self.shown.lock().expect("metrics lock is not poisoned");
        let before = shown.insert(
            project.clone(),
            Shown {
                services: services.clone(),
                info: info.clone(),
            },
        );
        if let Some(before) = before {
            for gone in before.services.difference(&services) {
                self.service_healthy.remove(gone);
            }
            if let Some(old) = before.info
                && Some(&old) != info.as_ref()
            {
                self.generation_info.remove(&old);
            }
        }
    }

    /// The metrics in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{ProjectStatus, ServiceStatus};

    fn service(name: &str, health: Option<&str>) -> ServiceStatus {
        ServiceStatus {
            service: name.into(),
            container: format!("demo-{name}"),
            state: if health.is_some() {
                "running"
            } else {
                "missing"
            }
            .into(),
            health: health.map(crate::runtime::HealthState::from),
            detail: String::new(),
            generation: Some(3),
            replicas: None,
            tasks: None,
        }
    }

    fn report(generation: i64, status: ProjectStatus, services: Vec<ServiceStatus>) -> Report {
        Report {
            generation: Some(generation),
            outcome: Some("healthy".into()),
            services,
            ..Report::empty("demo", status)
        }
    }

    fn has(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[test]
    fn every_result_series_exists_at_zero_before_any_reconcile() {
        let text = Metrics::new().encode();
        for r in ReconcileResult::ALL {
            let line = format!("berth_reconciles_total{{result=\"{}\"}} 0", r.as_str());
            assert!(has(&text, &line), "missing {line} in\n{text}");
        }
        assert!(
            has(&text, "berth_last_success_timestamp_seconds 0.0"),
            "{text}"
        );
        assert!(
            has(&text, "# TYPE berth_reconciles_total counter"),
            "{text}"
        );
        assert!(has(&text, "berth_gate_failures_total 0"), "{text}");
        assert!(has(&text, "berth_reverts_total 0"), "{text}");
        assert!(text.contains("berth_build_info{version=\""), "{text}");
    }

    #[test]
    fn notifications_are_counted_by_result_and_the_outbox_depth_is_shown() {
        let m = Metrics::new();
        let text = m.encode();
        for r in NOTIFY_RESULTS {
            let line = format!("berth_notifications_total{{result=\"{r}\"}} 0");
            assert!(has(&text, &line), "missing {line} in\n{text}");
        }
        assert!(has(&text, "berth_notify_outbox_depth 0"), "{text}");
        m.record_notification("retried");
        m.record_notification("retried");
        m.record_notification("delivered");
        m.set_outbox_depth(3);
        let text = m.encode();
        assert!(
            has(&text, "berth_notifications_total{result=\"retried\"} 2"),
            "{text}"
        );
        assert!(
            has(&text, "berth_notifications_total{result=\"delivered\"} 1"),
            "{text}"
        );
        assert!(has(&text, "berth_notify_outbox_depth 3"), "{text}");
    }

    #[test]
    fn record_reconcile_counts_by_result_and_observes_the_duration() {
        let m = Metrics::new();
        m.record_reconcile(ReconcileResult::Converged, Duration::from_millis(1500));
        m.record_reconcile(ReconcileResult::Converged, Duration::from_millis(500));
        m.record_reconcile(ReconcileResult::Error, Duration::from_millis(10));
        let text = m.encode();
        assert!(
            has(&text, "berth_reconciles_total{result=\"converged\"} 2"),
            "{text}"
        );
        assert!(
            has(&text, "berth_reconciles_total{result=\"error\"} 1"),
            "{text}"
        );
        assert!(
            has(&text, "berth_reconciles_total{result=\"no-changes\"} 0"),
            "{text}"
        );
        assert!(
            has(
                &text,
                "berth_reconcile_duration_seconds_sum{result=\"converged\"} 2.0"
            ),
            "{text}"
        );
        assert!(
            has(
                &text,
                "berth_reconcile_duration_seconds_count{result=\"converged\"} 2"
            ),
            "{text}"
        );
        assert!(
            has(
                &text,
                "berth_reconcile_duration_seconds_bucket{result=\"converged\",le=\"0.8\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn only_a_successful_reconcile_moves_the_last_success_time() {
        let m = Metrics::new();
        m.record_reconcile(ReconcileResult::RolledBack, Duration::from_secs(1));
        assert!(has(&m.encode(), "berth_last_success_timestamp_seconds 0.0"));
        m.record_reconcile(ReconcileResult::NoChanges, Duration::from_secs(1));
        let text = m.encode();
        let line = text
            .lines()
            .find(|l| l.starts_with("berth_last_success_timestamp_seconds "))
            .expect("the gauge is there");
        let at: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        // After 2020 and not in the future: a unix time in seconds.
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert!(at > 1.6e9 && at <= now.as_secs_f64(), "{line}");
    }

    #[test]
    fn a_rolled_back_outcome_counts_a_gate_failure_and_a_revert() {
        let m = Metrics::new();
        m.record_outcome(
            &ApplyOutcome::RolledBack {
                generation: 4,
                to: 3,
                reason: "web: unhealthy".into(),
            },
            Duration::from_secs(30),
        );
        let text = m.encode();
        assert!(
            has(&text, "berth_reconciles_total{result=\"rolled-back\"} 1"),
            "{text}"
        );
        assert!(has(&text, "berth_gate_failures_total 1"), "{text}");
        assert!(has(&text, "berth_reverts_total 1"), "{text}");
    }

    #[test]
    fn a_repaired_outcome_counts_a_repair_per_service() {
        let m = Metrics::new();
        let repaired = ApplyOutcome::Repaired {
            generation: 3,
            services: vec!["web".into(), "db".into()],
        };
        m.record_outcome(&repaired, Duration::from_secs(2));
        m.record_repairs(&["web"]);
        let text = m.encode();
        assert!(
            has(&text, "berth_reconciles_total{result=\"repaired\"} 1"),
            "{text}"
        );
        assert!(
            has(&text, "berth_drift_repairs_total{service=\"web\"} 2"),
            "{text}"
        );
        assert!(
            has(&text, "berth_drift_repairs_total{service=\"db\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn engine_reachability_is_one_or_zero() {
        let m = Metrics::new();
        m.set_engine_reachable(true);
        assert!(has(&m.encode(), "berth_engine_reachable 1"));
        m.set_engine_reachable(false);
        assert!(has(&m.encode(), "berth_engine_reachable 0"));
    }

    #[test]
    fn set_status_shows_generation_outcome_status_and_service_health() {
        let m = Metrics::new();
        m.set_status(&report(
            3,
            ProjectStatus::Degraded("drift: db: unhealthy".into()),
            vec![
                service("web", Some("healthy")),
                service("db", Some("unhealthy")),
            ],
        ));
        let text = m.encode();
        for line in [
            "berth_generation{project=\"demo\"} 3",
            "berth_generation_outcome{project=\"demo\",outcome=\"healthy\"} 1",
            "berth_generation_outcome{project=\"demo\",outcome=\"rolled-back\"} 0",
            "berth_project_status{project=\"demo\",status=\"degraded\"} 1",
            "berth_project_status{project=\"demo\",status=\"converged\"} 0",
            "berth_service_healthy{project=\"demo\",service=\"web\"} 1",
            "berth_service_healthy{project=\"demo\",service=\"db\"} 0",
            "berth_generation_info{project=\"demo\",generation=\"3\",outcome=\"healthy\",status=\"degraded\",commit=\"\"} 1",
        ] {
            assert!(has(&text, line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn set_status_drops_series_of_services_and_generations_no_longer_reported() {
        let m = Metrics::new();
        m.set_status(&report(
            3,
            ProjectStatus::Converged,
            vec![
                service("web", Some("healthy")),
                service("old", Some("healthy")),
            ],
        ));
        m.set_status(&report(
            4,
            ProjectStatus::Converged,
            vec![service("web", None)],
        ));
        let text = m.encode();
        assert!(
            has(
                &text,
                "berth_service_healthy{project=\"demo\",service=\"web\"} 0"
            ),
            "{text}"
        );
        assert!(!text.contains("service=\"old\""), "{text}");
        assert!(!text.contains("generation=\"3\""), "{text}");
        assert!(text.contains("generation=\"4\""), "{text}");
        assert!(has(&text, "berth_generation{project=\"demo\"} 4"), "{text}");
    }
}
