//! The migrations step of a converge (docs/design.md §5), on top of [`super::apply`]
//! and [`super::job`]; the schema half of a revert is [`super::revert`].
//!
//! berth runs on the host; the `[migrations]` URL names the database as the containers
//! reach it (its service name, which resolves only on the project network). The step
//! reaches the database container by its **address on the project network** instead (as
//! the health probes do), keeping the URL's port, user, password and database: no
//! published port is needed.

use std::path::Path;

use super::Runner;
use crate::images::Images;
use crate::report::Reporter;
use crate::runtime::{Runtime, RuntimeError};
use crate::spec::{DesiredState, MIGRATIONS_NODE, MigrationJob, Migrations};
use crate::store::Store;

/// Why the database could not be addressed.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("the database service {0:?} has no running container")]
    NoContainer(String),
    #[error("the database service {service:?} has no address on network {network:?}")]
    NoAddress { service: String, network: String },
}

/// The `[migrations]` URL with its host replaced by `ip` (its port kept).
pub fn container_url(url: &str, ip: &str) -> String {
    let mut u = url::Url::parse(url).expect("validated when loaded");
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    // A PostgreSQL URL has a host: setting another one cannot fail.
    let _ = u.set_host(Some(&host));
    u.to_string()
}

/// The URL that reaches the database service's running container from the host.
pub async fn database_url<R: Runtime>(
    rt: &R,
    desired: &DesiredState,
    m: &Migrations,
) -> Result<String, AddressError> {
    let containers = rt.list_project(&desired.project.name).await?;
    let c = containers
        .iter()
        .find(|c| c.service.as_deref() == Some(m.service.as_str()) && c.running())
        .ok_or_else(|| AddressError::NoContainer(m.service.clone()))?;
    let network = desired
        .services
        .get(&m.service)
        .and_then(|s| s.networks.first())
        .cloned()
        .unwrap_or_default();
    let details = rt.inspect_container(&c.id, &network).await?;
    let ip = details.ip.ok_or_else(|| AddressError::NoAddress {
        service: m.service.clone(),
        network,
    })?;
    Ok(container_url(&m.url, &ip))
}

/// A migration's name as its files are named: `0002_add_user_sessions`.
pub fn name(file: &std::path::Path) -> String {
    let f = file
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    f.trim_end_matches(".sql")
        .trim_end_matches(".up")
        .to_string()
}

/// `berth plan`'s line about the schema: asked of the running database container (at its
/// address on the project network), or why it cannot tell; None when none would run.
pub async fn would_run<R: Runtime>(rt: &R, d: &DesiredState, m: &Migrations) -> Option<String> {
    let cannot = |why: String| Some(format!("migrations: cannot tell which would run ({why})"));
    let url = match database_url(rt, d, m).await {
        Ok(url) => url,
        Err(e) => return cannot(e.to_string()),
    };
    let source = match Runner::of(m) {
        Runner::Directory { source, .. } => source,
        Runner::Job(job) => {
            let revision = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                super::job::revision(&url, &job.version_table),
            )
            .await;
            return match revision {
                Ok(Ok(rev)) => Some(format!(
                    "migrations: job `{}` in {} when its image has not run to revision {rev} before (database at revision {rev})",
                    job.upgrade.join(" "),
                    job.image
                )),
                Ok(Err(e)) => cannot(e.to_string()),
                Err(_) => cannot("the database did not answer within 10 s".into()),
            };
        }
    };
    let newest = super::resolve(source)
        .map(|l| l.iter().map(|(m, _)| m.version).max().unwrap_or(0))
        .unwrap_or(0);
    let status = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        super::status(&url, source),
    )
    .await;
    match status {
        Ok(Ok(s)) => plan_line(&s, newest),
        Ok(Err(e)) => cannot(e.to_string()),
        Err(_) => cannot("the database did not answer within 10 s".into()),
    }
}

/// What `berth plan` says about the schema: the migrations apply would run, or, when
/// the database has applied migrations the source no longer holds (above its newest),
/// the ones a return to this desired state undoes. None when there is nothing to do.
pub fn plan_line(status: &super::Status, source_newest: i64) -> Option<String> {
    let undo: Vec<String> = status
        .applied
        .iter()
        .rev()
        .filter(|a| a.checksum_ok.is_none() && a.version > source_newest)
        .map(|a| format!("{:04}_{}", a.version, a.description.replace(' ', "_")))
        .collect();
    if !undo.is_empty() {
        return Some(format!(
            "migrations: undo {} (the database is ahead of this desired state's source)",
            undo.join(", ")
        ));
    }
    if status.pending.is_empty() {
        return None;
    }
    let apply: Vec<String> = status.pending.iter().map(|p| name(&p.file)).collect();
    Some(format!("migrations: apply {}", apply.join(", ")))
}

/// What the migrations step works with, from the converge that runs it.
pub struct Context<'a> {
    /// The converge's pinned image IDs: a job runs the ID its generation pinned.
    pub images: &'a Images,
    /// The generation the step records the schema it finds and reaches on.
    pub generation: i64,
    /// Where it records them, a backup it takes, and a job's run.
    pub store: &'a Store,
    pub report: &'a Reporter,
}

/// Why the migrations step did not end well.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The engine refused or did not answer (the converge tells the two apart).
    #[error(transparent)]
    Runtime(RuntimeError),
    /// The step failed, as a gate fails: the reason.
    #[error("{0}")]
    Failed(String),
}

/// The migrations step of a converge, by the block's runner: [`directory_step`] or
/// [`job_step`].
pub async fn migrations_step<R: Runtime>(
    rt: &R,
    desired: &DesiredState,
    m: &Migrations,
    how: &Context<'_>,
) -> Result<(), StepError> {
    // Both runners reach the database the same way; asked once, here.
    let url = match database_url(rt, desired, m).await {
        Ok(url) => url,
        Err(AddressError::Runtime(e)) => return Err(StepError::Runtime(e)),
        Err(e) => return Err(StepError::Failed(format!("migrations: {e}"))),
    };
    match Runner::of(m) {
        Runner::Directory {
            source,
            source_hash,
        } => directory_step(rt, desired, m, &url, source, source_hash, how).await,
        Runner::Job(job) => job_step(rt, desired, m, &url, job, how).await,
    }
}

/// Apply the pending migrations on the database container, recording the schema version
/// found (before applying: a kill mid-way leaves a sign that the step reached the
/// database) and the one reached. With `backup = true`, a backup is taken (and recorded)
/// before anything is applied. Nothing pending: nothing runs, nothing is printed. A
/// failed migration is a failed gate; each ran in its own transaction, so nothing of it
/// stays applied (unless it is `-- no-transaction`; see docs/migrations-and-backups.md).
async fn directory_step<R: Runtime>(
    rt: &R,
    desired: &DesiredState,
    m: &Migrations,
    url: &str,
    source: &Path,
    source_hash: &str,
    how: &Context<'_>,
) -> Result<(), StepError> {
    // The database just passed its gate: not reaching it now is a verdict, not an engine
    // that stopped answering.
    let failed = |e: super::Error| StepError::Failed(format!("migrations: {e}"));
    let status = super::status(url, source).await.map_err(failed)?;
    record_schema(how, status.version()).await?;
    if status.pending.is_empty() {
        return Ok(());
    }
    // Only a generation's own migrations are applied: a revert or rollback to an older
    // generation finds the directory holding newer ones (its schema was put back by
    // `undo_to` before this converge), and must not apply them again.
    let same_source = super::resolve(source)
        .map(|list| super::source_hash(&list) == source_hash)
        .unwrap_or(false);
    if !same_source {
        how.report.service(
            MIGRATIONS_NODE,
            &format!(
                "{} has changed since this generation was resolved; not applying {}",
                source.display(),
                status
                    .pending
                    .iter()
                    .map(|p| name(&p.file))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        return Ok(());
    }
    let names: Vec<String> = status.pending.iter().map(|p| name(&p.file)).collect();
    backup_before(rt, desired, m, how, &names.join(", ")).await?;
    how.report
        .service(MIGRATIONS_NODE, &format!("applying {}", names.join(", ")));
    let applied = match super::apply(url, source).await {
        Ok(applied) => applied,
        Err(e) => {
            how.report.service(MIGRATIONS_NODE, "FAILED");
            return Err(StepError::Failed(format!(
                "migrations ({}) failed: {e}",
                names.join(", ")
            )));
        }
    };
    let version = applied
        .iter()
        .map(|p| p.version)
        .max()
        .unwrap_or(0)
        .max(status.version());
    record_schema(how, version).await?;
    how.report
        .service(MIGRATIONS_NODE, &format!("applied; schema {version}"));
    Ok(())
}

/// The backup a revert restores when a down migration is missing or fails: taken before
/// anything is applied (with `backup = true`), and recorded on the generation with its
/// SHA-256 (the revert restores only that file). Failing to take it is a failed gate,
/// with nothing applied; what retention could not do afterwards is said and kept as an
/// event, never a failure.
async fn backup_before<R: Runtime>(
    rt: &R,
    desired: &DesiredState,
    m: &Migrations,
    how: &Context<'_>,
    what: &str,
) -> Result<(), StepError> {
    if !m.backup {
        return Ok(());
    }
    let taken = match crate::backup::take(rt, Some(how.store), &desired.project.name, m).await {
        Ok(taken) => taken,
        Err(crate::backup::Error::Runtime(e)) if e.is_unreachable() => {
            return Err(StepError::Runtime(e));
        }
        Err(e) => {
            how.report.service(MIGRATIONS_NODE, "backup FAILED");
            return Err(StepError::Failed(format!(
                "migrations: the backup before applying {what} failed (nothing applied): {e}"
            )));
        }
    };
    how.report.service(
        MIGRATIONS_NODE,
        &format!(
            "backup {} ({})",
            taken.path.display(),
            crate::preflight::human(taken.bytes)
        ),
    );
    for warning in &taken.warnings {
        how.report.service(MIGRATIONS_NODE, warning);
    }
    how.store
        .set_backup(how.generation, &taken.path.to_string_lossy(), &taken.sha256)
        .await
        .map_err(|e| StepError::Failed(format!("recording the backup: {e}")))?;
    for warning in &taken.warnings {
        how.store
            .add_event(how.generation, "retention", Some(MIGRATIONS_NODE), warning)
            .await
            .map_err(|e| StepError::Failed(format!("recording the backup: {e}")))?;
    }
    Ok(())
}

/// The migrations step with a migration job: the revision the database
/// is at is recorded; unless this very job (same spec, same pinned image) already brought
/// the database to that revision in an earlier generation, a backup is taken and the
/// job's `upgrade` runs in a one-shot container to its end. Its exit code is the gate;
/// its output is kept as an event of the generation; the revision it reached is recorded.
async fn job_step<R: Runtime>(
    rt: &R,
    desired: &DesiredState,
    m: &Migrations,
    url: &str,
    job: &MigrationJob,
    how: &Context<'_>,
) -> Result<(), StepError> {
    use super::job;
    let failed = |e: job::RevisionError| StepError::Failed(format!("migrations: {e}"));
    let found = job::revision(url, &job.version_table)
        .await
        .map_err(failed)?;
    record_revision(how, &found).await?;
    let Some((image, _)) = how.images.get(&job.image) else {
        return Err(StepError::Failed(format!(
            "migrations: the job image {} has no pinned ID",
            job.image
        )));
    };
    if job_already_ran(how.store, desired, job, image, &found, how.generation)
        .await
        .map_err(|e| StepError::Failed(format!("reading the state store: {e}")))?
    {
        return Ok(());
    }
    let command = job.upgrade.join(" ");
    backup_before(rt, desired, m, how, &format!("`{command}`")).await?;
    how.report.service(
        MIGRATIONS_NODE,
        &format!("running `{command}` in {} (revision {found})", job.image),
    );
    let run = job::run(rt, desired, m, job, image, &job.upgrade)
        .await
        .map_err(StepError::Runtime)?;
    record_job(how, desired, &command, &run).await?;
    if !run.succeeded() {
        how.report.service(MIGRATIONS_NODE, "FAILED");
        return Err(StepError::Failed(desired.redactor().text(&format!(
            "migrations job `{command}` {}: {}",
            run.ended(),
            run.last_lines(3)
        ))));
    }
    let reached = job::revision(url, &job.version_table)
        .await
        .map_err(failed)?;
    record_revision(how, &reached).await?;
    how.report
        .service(MIGRATIONS_NODE, &format!("done; revision {reached}"));
    Ok(())
}

/// Whether an earlier generation ran this very job (same spec, same pinned image) to
/// its end ([`Generation::job_upgraded`](crate::store::Generation::job_upgraded)), and
/// left the database at `revision`, where it still is: nothing is pending.
async fn job_already_ran(
    store: &Store,
    desired: &DesiredState,
    job: &MigrationJob,
    image: &str,
    revision: &str,
    current: i64,
) -> Result<bool, crate::store::StoreError> {
    for g in store.history(Some(&desired.project.name)).await? {
        if g.id == current || !g.job_upgraded || g.schema_revision.as_deref() != Some(revision) {
            continue;
        }
        let same_job = serde_json::from_str::<DesiredState>(&g.spec_json)
            .ok()
            .and_then(|d| d.migrations)
            .is_some_and(|m| Runner::of(&m) == Runner::Job(job));
        if same_job && g.pins().get(&job.image).map(String::as_str) == Some(image) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Keep a job's run on the generation: its command, exit code and output (redacted),
/// and, first, whether it upgraded the database (it ran to its end and exited 0).
async fn record_job(
    how: &Context<'_>,
    desired: &DesiredState,
    command: &str,
    run: &super::job::JobRun,
) -> Result<(), StepError> {
    if run.succeeded() {
        how.store
            .set_job_upgraded(how.generation)
            .await
            .map_err(|e| StepError::Failed(format!("recording the job's output: {e}")))?;
    }
    let text = desired.redactor().text(&run.event_text(command));
    how.store
        .add_event(
            how.generation,
            super::job::JOB_EVENT,
            Some(MIGRATIONS_NODE),
            &text,
        )
        .await
        .map_err(|e| StepError::Failed(format!("recording the job's output: {e}")))?;
    Ok(())
}

async fn record_revision(how: &Context<'_>, revision: &str) -> Result<(), StepError> {
    how.store
        .set_schema_revision(how.generation, revision)
        .await
        .map_err(|e| StepError::Failed(format!("recording the schema revision: {e}")))?;
    Ok(())
}

async fn record_schema(how: &Context<'_>, version: i64) -> Result<(), StepError> {
    how.store
        .set_schema_version(how.generation, version)
        .await
        .map_err(|e| StepError::Failed(format!("recording the schema version: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::{Applied, Pending, Status};

    fn applied(version: i64, description: &str, in_source: bool) -> Applied {
        Applied {
            version,
            description: description.into(),
            success: true,
            checksum_ok: in_source.then_some(true),
            file: None,
        }
    }

    #[test]
    fn the_plan_names_the_migrations_to_apply_or_undo() {
        let pending = |v: i64, f: &str| Pending {
            version: v,
            description: String::new(),
            file: format!("/m/{f}.up.sql").into(),
        };
        let s = Status {
            applied: vec![applied(1, "initial schema", true)],
            pending: vec![
                pending(2, "0002_add_user_sessions"),
                pending(3, "0003_add_vector_indexes"),
            ],
        };
        assert_eq!(
            plan_line(&s, 3).as_deref(),
            Some("migrations: apply 0002_add_user_sessions, 0003_add_vector_indexes")
        );
        let s = Status {
            applied: vec![
                applied(1, "initial schema", true),
                applied(2, "add user sessions", false),
            ],
            pending: vec![],
        };
        assert_eq!(
            plan_line(&s, 1).as_deref(),
            Some(
                "migrations: undo 0002_add_user_sessions (the database is ahead of this desired state's source)"
            )
        );
        let s = Status {
            applied: vec![applied(1, "initial schema", true)],
            pending: vec![],
        };
        assert_eq!(plan_line(&s, 1), None);
    }

    #[test]
    fn the_step_reaches_the_database_by_its_container_address_keeping_the_port() {
        assert_eq!(
            container_url(
                "postgresql://u:p%40ss@postgres:5432/app?sslmode=disable",
                "172.18.0.5"
            ),
            "postgresql://u:p%40ss@172.18.0.5:5432/app?sslmode=disable"
        );
        assert_eq!(
            container_url("postgres://u:p@db/app", "fd00::5"),
            "postgres://u:p@[fd00::5]/app"
        );
    }

    #[test]
    fn a_migration_is_named_by_its_file() {
        assert_eq!(
            name(std::path::Path::new("/m/0002_add_user_sessions.up.sql")),
            "0002_add_user_sessions"
        );
        assert_eq!(name(std::path::Path::new("/m/0004_x.sql")), "0004_x");
    }
}
