//! A migration job (issue 10, item 6): migrations that live in their own image, such as
//! the runbook's Alembic, run by berth in a **one-shot container** on the database
//! service's network.
//!
//! - [`run`] creates the container (labelled with the project and `berth.job`, no
//!   `berth.service`), starts it, waits for it to exit, keeps the end of its output and
//!   removes it, whatever the outcome. A job container left behind by a berth killed
//!   mid-job is waited for (it may be committing) and removed before a new one starts.
//! - [`revision`] reads the revision the tool recorded (`alembic_version`) straight from
//!   the database, so each generation records the revision it reached and a revert knows
//!   where to go back to.
//!
//! The job's environment holds `DATABASE_URL` (a secret): it is never logged, and the
//! output kept is redacted like every other line.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::{Connection, PgConnection, Row};

use crate::runtime::{Networks, Runtime, RuntimeError};
use crate::spec::{DesiredState, LABEL_PROJECT, MigrationJob, Migrations, Service};

/// The label that marks a one-shot job container (its value: what the job is for).
pub const LABEL_JOB: &str = "berth.job";

/// How often a running job is looked at.
const POLL: Duration = Duration::from_millis(100);

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRun {
    pub exit_code: i64,
    /// The end of what it wrote (stdout and stderr).
    pub output: String,
}

impl JobRun {
    /// How a run is kept as an event of its generation: the exit code, the command, then
    /// its output. `exit 0 \`CMD\`` starts the text of a run that succeeded.
    pub fn event_text(&self, command: &str) -> String {
        format!(
            "{}\n{}",
            Self::event_head(self.exit_code, command),
            self.output
        )
    }

    /// The first line of [`JobRun::event_text`].
    pub fn event_head(exit_code: i64, command: &str) -> String {
        format!("exit {exit_code} `{command}`")
    }

    /// The last `n` non-empty lines of the output, for a reason.
    pub fn last_lines(&self, n: usize) -> String {
        let lines: Vec<&str> = self
            .output
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .collect();
        lines[lines.len().saturating_sub(n)..].join(" | ")
    }
}

/// The name of the project's job container.
pub fn container_name(project: &str) -> String {
    format!("{project}-migrations-job")
}

/// `downgrade` with `{revision}` replaced.
pub fn downgrade_command(job: &MigrationJob, revision: &str) -> Option<Vec<String>> {
    job.downgrade.as_ref().map(|cmd| {
        cmd.iter()
            .map(|a| a.replace(MigrationJob::REVISION, revision))
            .collect()
    })
}

/// Run `command` in a one-shot container of `image` (an ID, pinned) on the database
/// service's network, to its end; the container is removed afterwards. `Err` only for
/// the engine: a command that fails is an `Ok` with its exit code.
pub async fn run<R: Runtime>(
    rt: &R,
    desired: &DesiredState,
    m: &Migrations,
    job: &MigrationJob,
    image: &str,
    command: &[String],
) -> Result<JobRun, RuntimeError> {
    let project = &desired.project.name;
    let name = container_name(project);
    clear_leftover(rt, project, &name).await?;

    let db = desired.services.get(&m.service);
    let network = db
        .and_then(|s| s.networks.first())
        .cloned()
        .unwrap_or_else(|| desired.project.network.clone());
    let mut networks = Networks::new();
    networks.insert(network.clone(), rt.ensure_network(&network, project).await?);
    let mut environment = job.environment.clone();
    environment.insert("DATABASE_URL".into(), m.url.clone());
    let spec = Service {
        name: "migrations".into(),
        image: image.to_string(),
        command: Some(command.to_vec()),
        environment,
        networks: vec![network.clone()],
        restart: "no".into(),
        container_name: name.clone(),
        ..empty_service()
    };
    let labels: BTreeMap<String, String> = [
        (LABEL_PROJECT.to_string(), project.clone()),
        (LABEL_JOB.to_string(), "migrations".to_string()),
    ]
    .into();
    let id = rt
        .create_container(&name, &spec, image, &labels, &networks)
        .await?;
    let outcome = async {
        rt.start_container(&id).await?;
        let exit_code = wait(rt, &id, &network).await?;
        let output = rt.container_logs(&id).await?;
        Ok::<JobRun, RuntimeError>(JobRun { exit_code, output })
    }
    .await;
    // Removed whatever happened; a removal the engine refuses is left to the next run.
    let removed = rt.remove_container(&id).await;
    let run = outcome?;
    removed?;
    Ok(run)
}

/// The job gets no ports, volumes, health probe or labels.
fn empty_service() -> Service {
    Service {
        name: String::new(),
        image: String::new(),
        build: None,
        command: None,
        entrypoint: None,
        environment: BTreeMap::new(),
        ports: Vec::new(),
        volumes: Vec::new(),
        networks: Vec::new(),
        depends_on: Vec::new(),
        restart: "no".into(),
        labels: BTreeMap::new(),
        user: None,
        working_dir: None,
        container_name: String::new(),
        profiles: Vec::new(),
        health: None,
        extra_hosts: Vec::new(),
        pull_policy: Default::default(),
    }
}

/// Wait for a container to exit; its exit code.
async fn wait<R: Runtime>(rt: &R, id: &str, network: &str) -> Result<i64, RuntimeError> {
    loop {
        let d = rt.inspect_container(id, network).await?;
        if !d.running {
            return Ok(d.exit_code);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A job container a killed berth left: waited for while it runs (it may be committing),
/// then removed.
async fn clear_leftover<R: Runtime>(rt: &R, project: &str, name: &str) -> Result<(), RuntimeError> {
    let containers = rt.list_project(project).await?;
    for c in containers.iter().filter(|c| c.name == name) {
        if c.running() {
            wait(rt, &c.id, "").await?;
        }
        rt.remove_container(&c.id).await?;
    }
    Ok(())
}

/// Why the recorded revision could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RevisionError {
    #[error(transparent)]
    Connect(#[from] super::Error),
    #[error("cannot read the revision from {table}: {source}")]
    Read {
        table: String,
        #[source]
        source: sqlx::Error,
    },
}

/// The revision the job's tool recorded in `table` ([`MigrationJob::BASE`] when the table
/// is absent or empty: nothing migrated yet). Several rows (Alembic branches) are joined
/// with `+`, sorted.
pub async fn revision(url: &str, table: &str) -> Result<String, RevisionError> {
    let mut conn = super::connect(url).await?;
    let result = read_revision(&mut conn, table).await;
    let _ = conn.close().await;
    result
}

async fn read_revision(conn: &mut PgConnection, table: &str) -> Result<String, RevisionError> {
    let read = |source| RevisionError::Read {
        table: table.to_string(),
        source,
    };
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(table)
        .fetch_one(&mut *conn)
        .await
        .map_err(read)?;
    if exists.is_none() {
        return Ok(MigrationJob::BASE.into());
    }
    // A validated table name (letters, digits, `_`, one optional `.`).
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT version_num::text FROM {table}"
    )))
    .fetch_all(&mut *conn)
    .await
    .map_err(read)?;
    let mut revs: Vec<String> = rows
        .iter()
        .filter_map(|r| r.try_get::<String, _>(0).ok())
        .collect();
    revs.sort();
    if revs.is_empty() {
        return Ok(MigrationJob::BASE.into());
    }
    Ok(revs.join("+"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downgrade_names_the_target_revision() {
        let job = MigrationJob {
            image: "m".into(),
            upgrade: vec!["alembic".into(), "upgrade".into(), "head".into()],
            downgrade: Some(vec![
                "alembic".into(),
                "downgrade".into(),
                "{revision}".into(),
            ]),
            environment: BTreeMap::new(),
            version_table: "alembic_version".into(),
        };
        assert_eq!(
            downgrade_command(&job, "abc123").unwrap(),
            ["alembic", "downgrade", "abc123"]
        );
        let without = MigrationJob {
            downgrade: None,
            ..job
        };
        assert_eq!(downgrade_command(&without, "base"), None);
    }

    #[test]
    fn a_reason_quotes_the_last_lines_of_the_output() {
        let run = JobRun {
            exit_code: 1,
            output: "INFO a\n\nINFO b\nsqlalchemy.exc.ProgrammingError: syntax error\n".into(),
        };
        assert_eq!(
            run.last_lines(2),
            "INFO b | sqlalchemy.exc.ProgrammingError: syntax error"
        );
    }
}
