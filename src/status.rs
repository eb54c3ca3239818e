//! Honest status (docs/design.md §7): the one place that decides whether a project is
//! `converged`, `progressing`, `interrupted`, `rolled-back`, `degraded`, `blocked` or
//! `down`. The CLI calls it, and so does the daemon for `/api/v1/status`, its metrics and
//! the systemd STATUS line, so exit codes and every report say the same thing.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::check::{CheckReport, ServiceCheck, check};
use crate::converge::{ConvergeError, observed_with_pins};
use crate::exit;
use crate::hash::resolved_hash;
use crate::lock::Holder;
use crate::observe::Observed;
use crate::plan::{Action, Plan, plan};
use crate::runtime::{HealthState, Runtime};
use crate::spec::DesiredState;
use crate::store::{Generation, Outcome, Store};

/// What a project is, in one word and a reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", content = "reason", rename_all = "kebab-case")]
pub enum ProjectStatus {
    /// The newest generation is healthy, nothing drifted, every probe passes.
    Converged,
    /// A converge is running now (a live process holds the lock).
    Progressing(String),
    /// A converge died or was stopped before it ended; the next one resumes it.
    Interrupted(String),
    /// The newest generation failed and the stack is back on the last good one.
    RolledBack(String),
    /// A revert failed, or drift cannot be repaired, or a probe fails.
    Degraded(String),
    /// The desired state given is poisoned (or invalid): it will not be applied.
    Blocked(String),
    /// Taken down on purpose with `berth down`.
    Down,
    /// No generation recorded.
    Unknown,
}

impl ProjectStatus {
    pub fn word(&self) -> &'static str {
        match self {
            ProjectStatus::Converged => "converged",
            ProjectStatus::Progressing(_) => "progressing",
            ProjectStatus::Interrupted(_) => "interrupted",
            ProjectStatus::RolledBack(_) => "rolled-back",
            ProjectStatus::Degraded(_) => "degraded",
            ProjectStatus::Blocked(_) => "blocked",
            ProjectStatus::Down => "down",
            ProjectStatus::Unknown => "unknown",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            ProjectStatus::Progressing(r)
            | ProjectStatus::Interrupted(r)
            | ProjectStatus::RolledBack(r)
            | ProjectStatus::Degraded(r)
            | ProjectStatus::Blocked(r) => Some(r),
            _ => None,
        }
    }

    /// `berth status` exits 0 only when converged.
    pub fn exit_code(&self) -> i32 {
        match self {
            ProjectStatus::Converged => exit::OK,
            _ => exit::RUNTIME,
        }
    }
}

impl std::fmt::Display for ProjectStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.word())?;
        if let Some(r) = self.reason() {
            write!(f, " ({r})")?;
        }
        Ok(())
    }
}

/// One service as `berth status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub service: String,
    pub container: String,
    /// Docker's state word (running, exited, restarting, paused...) or `missing`.
    pub state: String,
    /// berth's own probe, run now: `healthy` or `unhealthy` (None when not running).
    pub health: Option<HealthState>,
    /// What the probe saw.
    pub detail: String,
    /// The generation the container was made by.
    pub generation: Option<u64>,
    /// Under Swarm: running tasks of the desired replicas (`2/2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<String>,
    /// Under Swarm: each task Swarm wants running, with its node and its own probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<crate::swarm::tasks::TaskStatus>>,
}

/// A project's status report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub project: String,
    pub generation: Option<i64>,
    /// The newest generation's outcome, as shown (see [`shown_outcome`]).
    pub outcome: Option<String>,
    #[serde(flatten)]
    pub status: ProjectStatus,
    pub services: Vec<ServiceStatus>,
    /// Drift repairs counted on the running generation.
    pub repairs: usize,
    /// Who is converging it now, when someone is.
    pub holder: Option<Holder>,
    /// The database schema version the running generation reached (its migrations
    /// step); None without migrations.
    #[serde(default)]
    pub schema_version: Option<i64>,
    /// With a migration job: the revision the running generation reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_revision: Option<String>,
    /// The database backup the running generation took before migrating, if any.
    #[serde(default)]
    pub backup: Option<String>,
    /// Where the desired state comes from with a git source: the commit deployed, the
    /// newest one seen, and why the last fetch failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitStatus>,
}

impl Report {
    /// A project's report before anything is known of it but `status`.
    pub fn empty(project: &str, status: ProjectStatus) -> Report {
        Report {
            project: project.to_string(),
            generation: None,
            outcome: None,
            status,
            services: Vec::new(),
            repairs: 0,
            holder: None,
            schema_version: None,
            schema_revision: None,
            backup: None,
            git: None,
        }
    }
}

/// The git side of a project's status (`berth run --git`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GitStatus {
    /// `URL branch main, desired-state` (the daemon says; empty from the store alone).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// The commit the running generation came from, and its subject.
    pub deployed: Option<String>,
    pub deployed_subject: Option<String>,
    /// The newest commit fetched, and its subject.
    pub newest: Option<String>,
    pub newest_subject: Option<String>,
    /// Why the last fetch failed (the remote cannot be reached, …); retried with backoff.
    pub problem: Option<String>,
}

/// What `berth run` knows of a project that its store and engine do not say: the
/// daemon's side of the status word, decided here with the rest of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DaemonView {
    /// Why the desired state is not applied (invalid, pre-flight, poisoned, taken down,
    /// an internal error): `blocked`.
    pub problem: Option<String>,
    /// The services whose repair is held because they keep dying: `degraded`.
    pub crashlooping: Option<String>,
    /// How the last turn failed, if it did.
    pub turn_error: Option<TurnError>,
    /// Why the git source cannot be fetched now: `degraded` over a converged project
    /// (the deployed commit keeps running).
    pub git_problem: Option<String>,
}

/// A turn that failed, as the status says it.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnError {
    pub message: String,
    /// The engine did not answer (the turn was cut short, not judged).
    pub unreachable: bool,
}

impl DaemonView {
    /// The status word: `worked_out` is what [`project_status`] said just now, or its
    /// error (and whether the engine did not answer it); what the daemon knows goes over
    /// it, the turn's failure last.
    pub fn status(&self, worked_out: Result<ProjectStatus, (String, bool)>) -> ProjectStatus {
        let status = match worked_out {
            Ok(mut status) => {
                if let Some(held) = &self.crashlooping {
                    status = ProjectStatus::Degraded(held.clone());
                }
                if let Some(problem) = &self.problem {
                    status = ProjectStatus::Blocked(problem.clone());
                }
                match &self.turn_error {
                    // The engine answered the status just now: it is back, and the next
                    // turn (asked for by the follower's reconnection) puts things right.
                    Some(e) if e.unreachable => {
                        ProjectStatus::Degraded(format!("engine unreachable: {}", e.message))
                    }
                    Some(e) => {
                        ProjectStatus::Degraded(format!("the last reconcile failed: {}", e.message))
                    }
                    None => status,
                }
            }
            // The status cannot be worked out without the engine (or the store).
            Err((error, unreachable)) => ProjectStatus::Degraded(match &self.turn_error {
                _ if unreachable => format!("engine unreachable: {error}"),
                Some(e) if e.unreachable => format!("engine unreachable: {}", e.message),
                _ => format!("status cannot be read: {error}"),
            }),
        };
        match &self.git_problem {
            Some(p) if status == ProjectStatus::Converged => ProjectStatus::Degraded(format!(
                "git: {p} (retrying; the deployed commit keeps running)"
            )),
            _ => status,
        }
    }

    /// The status line before any desired state named the project.
    pub fn before_a_project(&self) -> String {
        self.problem
            .clone()
            .unwrap_or_else(|| "waiting for a valid desired state".into())
    }
}

/// The JSON of `berth status --json`, which the daemon also serves on `/api/v1/status`:
/// one text for both, with every registered secret hidden (reasons quote the spec).
pub fn reports_json(reports: &[Report]) -> serde_json::Result<String> {
    let json = serde_json::to_string_pretty(reports)? + "\n";
    Ok(crate::redact::registered_text(&json))
}

/// A generation's outcome as readers show it: a `progressing` row whose converge is not
/// running (nobody holds the lock, or it is not the newest) is `interrupted`.
pub fn shown_outcome(g: &Generation, newest: bool, held: bool) -> Outcome {
    match g.outcome {
        Outcome::Progressing | Outcome::Reverting if !(newest && held) => Outcome::Interrupted,
        o => o,
    }
}

/// Work out a project's status: from the store, the lock, the engine (drift and berth's
/// own probes), and optionally the desired state on disk (`blocked` when poisoned).
pub async fn project_status<R: Runtime>(
    rt: &R,
    store: &Store,
    state_path: &Path,
    project: &str,
    on_disk: Option<&DesiredState>,
) -> Result<Report, ConvergeError> {
    let holder = crate::lock::is_held(state_path, project)?;
    let mut report = Report {
        holder: holder.clone(),
        ..Report::empty(project, ProjectStatus::Unknown)
    };
    let Some(latest) = store.latest(project).await? else {
        return Ok(report);
    };
    let shown = shown_outcome(&latest, true, holder.is_some());
    report.generation = Some(latest.id);
    report.outcome = Some(shown.to_string());

    // Its reason is shown below: its secrets are hidden from every line printed.
    crate::redact::register(&latest.desired()?.redactor());
    // What runs: the services and probes are judged against the running generation.
    let running = store.running(&latest).await?;
    let judged = running.as_ref().unwrap_or(&latest);
    report.schema_version = judged.schema_version;
    report.schema_revision = judged.schema_revision.clone();
    report.backup = judged.backup.clone();
    report.git = judged.commit.as_ref().map(|c| GitStatus {
        deployed: Some(c.clone()),
        deployed_subject: judged.commit_subject.clone(),
        ..Default::default()
    });
    let desired = judged.desired()?;
    let swarm = match desired.project.engine {
        crate::spec::Engine::Docker => None,
        crate::spec::Engine::Swarm => Some(crate::swarm::Swarm::connect().await?),
    };
    let (observed, checks) = match &swarm {
        Some(sw) => (
            crate::swarm::observed_with_pins(sw, &desired, &judged.pins()).await?,
            crate::swarm::check::check(sw, &desired).await?,
        ),
        None => (
            observed_with_pins(rt, &desired, &judged.pins()).await?,
            check(rt, &desired).await?,
        ),
    };
    let drift = plan(&desired, &observed);
    report.services = service_statuses(&desired, &observed, &checks);
    if let Some(sw) = &swarm {
        let replicas = sw.replicas(project).await?;
        let mut tasks = crate::swarm::tasks::tasks(sw, &desired).await?;
        for s in &mut report.services {
            s.replicas = replicas.get(&s.service).map(|(r, d)| format!("{r}/{d}"));
            s.tasks = tasks.remove(&s.service);
        }
    }
    if let Some(r) = &running {
        report.repairs = store
            .events(r.id)
            .await?
            .iter()
            .filter(|e| e.kind == "repair")
            .count();
    }

    let problems = problems_now(&drift, &report.services);
    report.status = worked_out_status(
        &latest,
        shown,
        holder.as_ref(),
        &problems,
        running.is_some(),
    );

    if let Some(d) = on_disk
        && d.project.name == project
        && let Some(p) = store.poisoned_by(project, &resolved_hash(d)).await?
    {
        report.status = ProjectStatus::Blocked(format!(
            "the desired state is poisoned: generation {} failed and was rolled back; change it, or apply it with --force",
            p.id
        ));
    }
    Ok(report)
}

/// Each desired service as `berth status` shows it: its container's state, and the
/// verdict of berth's own probe while it runs.
fn service_statuses(
    desired: &DesiredState,
    observed: &Observed,
    checks: &CheckReport,
) -> Vec<ServiceStatus> {
    desired
        .services
        .values()
        .map(|s| {
            let c = observed
                .containers
                .iter()
                .find(|c| c.name == s.container_name);
            let probe: Option<&ServiceCheck> = checks.services.iter().find(|k| k.service == s.name);
            let running = c.is_some_and(|c| c.running());
            ServiceStatus {
                service: s.name.clone(),
                container: s.container_name.clone(),
                state: c
                    .map(|c| c.state.to_string())
                    .unwrap_or_else(|| "missing".into()),
                health: running
                    .then(|| {
                        probe.map(|p| match p.healthy {
                            true => HealthState::Healthy,
                            false => HealthState::Unhealthy,
                        })
                    })
                    .flatten(),
                detail: probe.map(|p| p.detail.clone()).unwrap_or_default(),
                generation: c.and_then(|c| c.generation),
                replicas: None,
                tasks: None,
            }
        })
        .collect()
}

/// What is wrong with the running services now, one line each: the drift the plan would
/// repair, and the services whose probe fails.
fn problems_now(drift: &Plan, services: &[ServiceStatus]) -> Vec<String> {
    drift
        .steps
        .iter()
        .filter(|s| s.action != Action::Noop)
        .map(|s| format!("{}: {}", s.service, s.reason))
        .chain(
            services
                .iter()
                .filter(|s| s.health == Some(HealthState::Unhealthy))
                .map(|s| format!("{}: unhealthy: {}", s.service, s.detail)),
        )
        .collect()
}

/// The status word from the newest generation's outcome as shown, and the `problems`
/// of what runs (drift counts only while a generation is running).
fn worked_out_status(
    latest: &Generation,
    shown: Outcome,
    holder: Option<&Holder>,
    problems: &[String],
    has_running: bool,
) -> ProjectStatus {
    let reason = |why: &Option<String>| why.clone().unwrap_or_default();
    match shown {
        Outcome::Progressing | Outcome::Reverting => ProjectStatus::Progressing(match holder {
            Some(h) => format!("generation {} by {h}", latest.id),
            None => format!("generation {}", latest.id),
        }),
        Outcome::Interrupted => ProjectStatus::Interrupted(format!(
            "generation {} did not end{}; the next converge resumes it",
            latest.id,
            latest
                .reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        )),
        Outcome::Down => ProjectStatus::Down,
        _ if !problems.is_empty() && has_running => {
            ProjectStatus::Degraded(format!("drift: {}", problems.join("; ")))
        }
        Outcome::Healthy => ProjectStatus::Converged,
        Outcome::RolledBack => ProjectStatus::RolledBack(reason(&latest.reason)),
        Outcome::Failed | Outcome::Superseded => ProjectStatus::Degraded(reason(&latest.reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(message: &str, unreachable: bool) -> Option<TurnError> {
        Some(TurnError {
            message: message.into(),
            unreachable,
        })
    }

    #[test]
    fn what_the_daemon_knows_goes_over_the_worked_out_status_the_turns_failure_last() {
        let converged = || Ok(ProjectStatus::Converged);
        assert_eq!(
            DaemonView::default().status(converged()),
            ProjectStatus::Converged
        );
        let mut v = DaemonView {
            crashlooping: Some("web keeps dying".into()),
            ..Default::default()
        };
        assert_eq!(
            v.status(converged()),
            ProjectStatus::Degraded("web keeps dying".into())
        );
        v.problem = Some("invalid: x.toml:1:1: bad".into());
        assert_eq!(
            v.status(converged()),
            ProjectStatus::Blocked("invalid: x.toml:1:1: bad".into())
        );
        v.turn_error = err("the store is locked", false);
        assert_eq!(
            v.status(converged()),
            ProjectStatus::Degraded("the last reconcile failed: the store is locked".into())
        );
        v.turn_error = err("connection refused", true);
        assert_eq!(
            v.status(converged()),
            ProjectStatus::Degraded("engine unreachable: connection refused".into())
        );
    }

    #[test]
    fn a_status_that_cannot_be_worked_out_says_why() {
        let v = DaemonView::default();
        assert_eq!(
            v.status(Err(("socket gone".into(), true))),
            ProjectStatus::Degraded("engine unreachable: socket gone".into())
        );
        assert_eq!(
            v.status(Err(("disk I/O error".into(), false))),
            ProjectStatus::Degraded("status cannot be read: disk I/O error".into())
        );
        let v = DaemonView {
            turn_error: err("connection reset", true),
            ..Default::default()
        };
        assert_eq!(
            v.status(Err(("disk I/O error".into(), false))),
            ProjectStatus::Degraded("engine unreachable: connection reset".into())
        );
    }

    #[test]
    fn a_git_problem_shows_only_over_a_converged_project() {
        let v = DaemonView {
            git_problem: Some("fetch failed".into()),
            ..Default::default()
        };
        assert_eq!(
            v.status(Ok(ProjectStatus::Converged)),
            ProjectStatus::Degraded(
                "git: fetch failed (retrying; the deployed commit keeps running)".into()
            )
        );
        let blocked = ProjectStatus::Blocked("poisoned".into());
        assert_eq!(v.status(Ok(blocked.clone())), blocked);
        assert_eq!(
            DaemonView::default().before_a_project(),
            "waiting for a valid desired state"
        );
    }
}
