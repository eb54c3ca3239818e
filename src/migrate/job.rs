//! A migration job: migrations that live in their own image, such as
//! the runbook's Alembic, run by berth in a **one-shot container** on the database
//! service's network.
//!
//! - [`run`] creates the container (labelled with the project and `berth.job`, no
//!   `berth.service`), starts it, waits for it to exit, keeps the end of its output and
//!   removes it, whatever the outcome. A job still running at its `timeout` (default
//!   30m) is killed (removed by force) and the run fails: a hung job never blocks every
//!   deploy after it. A job container left behind by a berth killed mid-job is waited
//!   for (it may be committing; at most the job's timeout) and removed before a new one
//!   starts.
//! - What is kept of its output is bounded (the engine is asked for its last lines, of
//!   which the last 64 KiB are kept), and it is the container's text: in a reason it is
//!   one line, its control characters escaped ([`crate::text::one_line`]).
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

/// The event kind a job's run (upgrade or downgrade) is kept under on its generation:
/// its exit code, command and output ([`JobRun::event_text`]).
pub const JOB_EVENT: &str = "migration-job";

/// How often a running job is looked at.
const POLL: Duration = Duration::from_millis(100);

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRun {
    /// Its exit code; -1 when it was killed at its timeout.
    pub exit_code: i64,
    /// The end of what it wrote (stdout and stderr).
    pub output: String,
    /// Set when it ran past this timeout and was killed.
    pub timed_out: Option<Duration>,
}

impl JobRun {
    /// Whether it ran to its end and exited 0.
    pub fn succeeded(&self) -> bool {
        self.exit_code == 0 && self.timed_out.is_none()
    }

    /// How it ended, for a reason: `exited 1`, or `was killed after its timeout (3s)`.
    pub fn ended(&self) -> String {
        match self.timed_out {
            Some(t) => format!(
                "was killed after its timeout ({})",
                humantime::format_duration(t)
            ),
            None => format!("exited {}", self.exit_code),
        }
    }

    /// How a run is kept as an event of its generation, for people: the exit code (or the
    /// kill), the command, then its output. Whether an upgrade succeeded is not read back
    /// from this text; the step records it ([`crate::store::Store::set_job_upgraded`]).
    pub fn event_text(&self, command: &str) -> String {
        let head = match self.timed_out {
            Some(_) => format!("{} `{command}`", self.ended()),
            None => format!("exit {} `{command}`", self.exit_code),
        };
        format!("{head}\n{}", self.output)
    }

    /// The last `n` non-empty lines of the output, for a reason: the container's text, so
    /// one line, control characters escaped, at most [`crate::text::REASON_CHARS`]
    /// characters.
    pub fn last_lines(&self, n: usize) -> String {
        let lines: Vec<&str> = self
            .output
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .collect();
        crate::text::one_line(
            &lines[lines.len().saturating_sub(n)..].join(" | "),
            crate::text::REASON_CHARS,
        )
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
/// service's network, to its end or the job's `timeout`, when it is killed; the
/// container is removed afterwards. `Err` only for the engine: a command that fails or
/// is killed is an `Ok` with its exit code or [`JobRun::timed_out`].
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
    clear_leftover(rt, project, &name, job.timeout).await?;

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
        let (exit_code, timed_out) =
            match tokio::time::timeout(job.timeout, wait(rt, &id, &network)).await {
                Ok(exited) => (exited?, None),
                Err(_) => (-1, Some(job.timeout)),
            };
        let output = rt.container_logs(&id).await?;
        Ok::<JobRun, RuntimeError>(JobRun {
            exit_code,
            output,
            timed_out,
        })
    }
    .await;
    // Removed whatever happened (by force: a job past its timeout is killed so); a
    // removal the engine refuses is left to the next run.
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
        mem_limit: None,
        swarm: Default::default(),
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
/// at most `timeout`, then removed (killed, if it still runs).
async fn clear_leftover<R: Runtime>(
    rt: &R,
    project: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), RuntimeError> {
    let containers = rt.list_project(project).await?;
    for c in containers.iter().filter(|c| c.name == name) {
        if c.running()
            && let Ok(waited) = tokio::time::timeout(timeout, wait(rt, &c.id, "")).await
        {
            waited?;
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
            timeout: crate::spec::DEFAULT_JOB_TIMEOUT,
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
            timed_out: None,
        };
        assert_eq!(
            run.last_lines(2),
            "INFO b | sqlalchemy.exc.ProgrammingError: syntax error"
        );
        assert_eq!(run.ended(), "exited 1");
        assert!(!run.succeeded());
    }

    #[test]
    fn a_jobs_text_reaches_a_reason_as_one_bounded_line() {
        let run = JobRun {
            exit_code: -1,
            output: format!("ok\nx\rSTATUS=\u{1b}[2Jbad\x07\n{}\n", "y".repeat(10_000)),
            timed_out: Some(Duration::from_secs(3)),
        };
        let reason = run.last_lines(3);
        assert!(!reason.chars().any(char::is_control), "{reason:?}");
        assert!(
            reason.contains("\\r") && reason.contains("\\u{1b}"),
            "{reason:?}"
        );
        assert!(reason.chars().count() <= crate::text::REASON_CHARS + 1);
        assert_eq!(run.ended(), "was killed after its timeout (3s)");
        assert!(
            run.event_text("sleep 60")
                .starts_with("was killed after its timeout (3s) `sleep 60`\n")
        );
        assert!(!run.succeeded());
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_past_its_timeout_is_killed_and_removed() {
        use crate::runtime::fake::FakeRuntime;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("berth.toml");
        std::fs::write(
            &file,
            "[project]\nname = \"p\"\n[services.db]\nimage = \"postgres:15\"\n\
             [migrations]\nservice = \"db\"\nurl = \"postgresql://u:p@db:5432/app\"\n\
             [migrations.job]\nimage = \"m:1\"\ntimeout = \"3s\"\n",
        )
        .unwrap();
        let d = crate::spec::load_with_env(
            &file,
            &crate::spec::Selection::default(),
            &Default::default(),
        )
        .unwrap();
        let m = d.migrations.as_ref().unwrap();
        let job = m.job.as_ref().unwrap();
        // The fake's containers run until stopped: this job never ends by itself.
        let rt = FakeRuntime::new();
        rt.add_image("m:1", "sha256:m1");
        let started = tokio::time::Instant::now();
        let run = run(&rt, &d, m, job, "sha256:m1", &job.upgrade)
            .await
            .unwrap();
        assert_eq!(run.timed_out, Some(Duration::from_secs(3)));
        assert!(!run.succeeded());
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(3) && waited < Duration::from_secs(4),
            "{waited:?}"
        );
        assert!(
            !rt.container_names().contains(&container_name("p")),
            "{:?}",
            rt.container_names()
        );
    }
}
