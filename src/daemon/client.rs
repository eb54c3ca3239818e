//! How the other commands find and talk to a running `berth run`: its daemon lock file
//! names its endpoint and the desired-state file it serves.
//!
//! - `berth status` asks the daemon (its report is what the daemon acts on, including a
//!   `blocked` file or an unreachable engine) and says so; when the daemon does not
//!   answer, status works it out itself and says that instead.
//! - `berth apply` of another file for a project a daemon serves is refused: the daemon
//!   would converge its own file back on its next turn, and the two would fight.

use std::path::Path;
use std::time::Duration;

use crate::lock::{Holder, LockError, daemon_lock_name, is_held};
use crate::status::Report;

/// How long `berth status` waits for the daemon's answer before working it out itself.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// The `berth run` serving `project` from this state store, if one runs.
pub fn serving(state: &Path, project: &str) -> Result<Option<Holder>, LockError> {
    is_held(state, &daemon_lock_name(project))
}

/// Ask a daemon for its status report on `project`.
pub async fn status(holder: &Holder, project: &str) -> Result<Report, String> {
    let endpoint = holder
        .endpoint
        .as_deref()
        .ok_or("it has not said where it listens")?;
    let url = format!("http://{endpoint}/api/v1/status");
    let client = crate::notify::tls::builder()
        .no_proxy()
        .timeout(ASK_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()));
    }
    let text = response.text().await.map_err(|e| format!("{url}: {e}"))?;
    let reports: Vec<Report> =
        serde_json::from_str(&text).map_err(|e| format!("{url}: unreadable answer: {e}"))?;
    reports
        .into_iter()
        .find(|r| r.project == project)
        .ok_or_else(|| format!("{url} has no report on project {project:?} yet"))
}

/// Whether `file` is the desired state `holder` (a daemon) serves.
pub fn serves_file(holder: &Holder, file: &Path) -> bool {
    let Some(served) = holder.file.as_deref() else {
        // A daemon that has not said which file it serves is not refused against.
        return true;
    };
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canon(Path::new(served)) == canon(file)
}

#[cfg(test)]
mod tests {
    use crate::status::{ProjectStatus, Report, reports_json};

    fn report(status: ProjectStatus) -> Report {
        Report {
            project: "shop".into(),
            generation: Some(3),
            outcome: Some("healthy".into()),
            status,
            services: Vec::new(),
            repairs: 2,
            holder: None,
            schema_version: None,
            schema_revision: None,
            backup: None,
            git: None,
        }
    }

    /// What the daemon serves is read back as the same report by `berth status`.
    #[test]
    fn a_status_report_survives_the_trip_through_json() {
        for status in [
            ProjectStatus::Converged,
            ProjectStatus::Degraded("engine unreachable: gone".into()),
            ProjectStatus::Blocked("invalid: a.toml:1:2: bad".into()),
            ProjectStatus::Down,
        ] {
            let json = reports_json(&[report(status.clone())]).unwrap();
            let back: Vec<Report> = serde_json::from_str(&json).unwrap();
            assert_eq!(back[0].status, status, "{json}");
            assert_eq!(back[0].repairs, 2);
            assert_eq!(back[0].generation, Some(3));
        }
    }
}
