//! The schema half of a revert or a rollback (semantic 6): the migrations of the
//! generation that failed are undone down to the schema version (or job revision) the
//! generation it goes back to reached; when they cannot be, the backup taken before
//! migrating is restored instead.

use std::path::Path;

use super::Runner;
use crate::report::Reporter;
use crate::runtime::{Runtime, RuntimeError};
use crate::spec::{DesiredState, MIGRATIONS_NODE, MigrationJob, Migrations};
use crate::store::{Generation, Store, StoreError};

/// What a reason says when the containers went back but the schema could not: the CLI
/// tells a person so rather than "the failed containers are left".
pub const SCHEMA_NOT_UNDONE: &str = "the schema could not be undone";

/// How the schema half of a revert ended.
#[derive(Debug, Clone, PartialEq)]
pub enum SchemaUndo {
    /// The schema is where the target generation had it: undone, or nothing to undo
    /// (no migrations, the step never reached the database), or the target recorded no
    /// schema to go back to and it is left as it is.
    Done,
    /// A down migration (or the job's downgrade) was missing or failed, and the backup
    /// taken before migrating was restored instead: the note says from what.
    Restored(String),
    /// The schema is not where the target had it: which migration, which backup, and
    /// what to do.
    NotUndone(String),
}

impl SchemaUndo {
    /// Why the schema is not back, when it is not.
    pub fn not_undone(&self) -> Option<&str> {
        match self {
            SchemaUndo::NotUndone(why) => Some(why),
            _ => None,
        }
    }

    /// A reason is stored and shown: the database's error may quote a secret.
    fn redacted(self, redact: impl Fn(String) -> String) -> SchemaUndo {
        match self {
            SchemaUndo::NotUndone(why) => SchemaUndo::NotUndone(redact(why)),
            other => other,
        }
    }
}

/// Why the schema half of a revert could not be judged at all.
#[derive(Debug, thiserror::Error)]
pub enum RevertError {
    /// The engine did not answer: the revert is finished once it does.
    #[error(transparent)]
    Runtime(RuntimeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The schema half of a revert or a rollback (semantic 6): undo the migrations of
/// `current` (whose desired state is `desired`) down to the schema version `target`
/// reached, with `current`'s source (it holds the down files of what it applied).
/// [`SchemaUndo::Restored`]: a down migration was missing or failed and the backup
/// `current` took before migrating was restored instead (only when `restore` is set: the
/// auto-revert, whose target is the generation right before `current`).
pub async fn undo_schema<R: Runtime>(
    rt: &R,
    store: &Store,
    current: &Generation,
    desired: &DesiredState,
    target: &Generation,
    restore: bool,
    report: &Reporter,
) -> Result<SchemaUndo, RevertError> {
    let Some(m) = &desired.migrations else {
        return Ok(SchemaUndo::Done);
    };
    let Some(to) = UndoTo::of(Runner::of(m), current, target, report) else {
        return Ok(SchemaUndo::Done);
    };
    let redact = |t: String| desired.redactor().text(&t);
    // Both runners reach the database the same way; asked once, here.
    let url = match super::step::database_url(rt, desired, m).await {
        Ok(url) => url,
        Err(super::step::AddressError::Runtime(e)) if e.is_unreachable() => {
            return Err(RevertError::Runtime(e));
        }
        Err(e) => {
            return Ok(SchemaUndo::NotUndone(redact(format!(
                "{SCHEMA_NOT_UNDONE} to {to}: {e}"
            ))));
        }
    };
    let undone = match &to {
        UndoTo::Version { source, version } => {
            undo_directory_schema(&url, source, *version, m, report).await
        }
        UndoTo::Revision { job, revision } => {
            undo_job_schema(rt, store, desired, m, job, current, &url, revision, report).await?
        }
    };
    let error = match undone {
        RunnerUndo::Ended(undo) => return Ok(undo.redacted(redact)),
        RunnerUndo::Failed(error) => error,
    };
    report.service(MIGRATIONS_NODE, "could not be undone");
    if !restore {
        return Ok(SchemaUndo::NotUndone(redact(restore_by_hand(
            current,
            &to.point(),
            &error,
        ))));
    }
    restore_backup_instead(rt, store, desired, current, &to.point(), &error, report)
        .await
        .map(|undo| undo.redacted(redact))
}

/// What the schema goes back to, by the runner of `current`'s migrations.
enum UndoTo<'a> {
    /// A directory's down migrations run down to the schema version `target` recorded.
    Version { source: &'a Path, version: i64 },
    /// The job's downgrade runs to the revision `target` recorded.
    Revision {
        job: &'a MigrationJob,
        revision: String,
    },
}

impl<'a> UndoTo<'a> {
    /// None when there is nothing to undo: `current`'s step never reached the database,
    /// or `target` recorded no schema to go back to (it is left as it is, and the report
    /// says so).
    fn of(
        runner: Runner<'a>,
        current: &Generation,
        target: &Generation,
        report: &Reporter,
    ) -> Option<Self> {
        let (reached, to, word) = match runner {
            Runner::Directory { source, .. } => (
                current.schema_version.is_some(),
                target
                    .schema_version
                    .map(|version| UndoTo::Version { source, version }),
                "version",
            ),
            Runner::Job(job) => (
                current.schema_revision.is_some(),
                target
                    .schema_revision
                    .clone()
                    .map(|revision| UndoTo::Revision { job, revision }),
                "revision",
            ),
        };
        if !reached {
            // Its step never reached the database.
            return None;
        }
        if to.is_none() {
            // Recorded before schema versions were (or it had no migrations): undoing to
            // a guess could drop data; the schema stays as it is.
            report.line(&format!(
                "migrations: generation {} recorded no schema {word}; the schema is left as it is",
                target.id
            ));
        }
        to
    }

    /// The version or revision alone.
    fn point(&self) -> String {
        match self {
            UndoTo::Version { version, .. } => version.to_string(),
            UndoTo::Revision { revision, .. } => revision.clone(),
        }
    }
}

/// `version 5`, `revision 0042`.
impl std::fmt::Display for UndoTo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UndoTo::Version { version, .. } => write!(f, "version {version}"),
            UndoTo::Revision { revision, .. } => write!(f, "revision {revision}"),
        }
    }
}

/// How a runner's own undo ended.
enum RunnerUndo {
    /// The schema is back, or the undo cannot be judged (the reason says why).
    Ended(SchemaUndo),
    /// A down migration or the downgrade is missing or failed (the error): the backup
    /// may stand in.
    Failed(String),
}

/// [`undo_schema`] with a directory of sqlx migrations: its down migrations run, newest
/// first, down to `version`.
async fn undo_directory_schema(
    url: &str,
    source: &Path,
    version: i64,
    m: &Migrations,
    report: &Reporter,
) -> RunnerUndo {
    match super::undo_to(url, source, version, m.lock_timeout).await {
        Ok(undone) if undone.is_empty() => RunnerUndo::Ended(SchemaUndo::Done),
        Ok(undone) => {
            let list: Vec<String> = undone.iter().map(|v| v.to_string()).collect();
            report.service(
                MIGRATIONS_NODE,
                &format!("undone {}; schema {version}", list.join(", ")),
            );
            RunnerUndo::Ended(SchemaUndo::Done)
        }
        Err(e) => RunnerUndo::Failed(e.to_string()),
    }
}

/// [`undo_schema`] with a migration job: when the database is not at `revision`, the
/// job's `downgrade` runs to it in a one-shot container of the image `current` pinned (it
/// holds the revisions it applied); without a downgrade command, or when it fails, the
/// backup `current` took is restored instead (as for a missing or failing down
/// migration).
#[allow(clippy::too_many_arguments)]
async fn undo_job_schema<R: Runtime>(
    rt: &R,
    store: &Store,
    desired: &DesiredState,
    m: &Migrations,
    job: &MigrationJob,
    current: &Generation,
    url: &str,
    revision: &str,
    report: &Reporter,
) -> Result<RunnerUndo, RevertError> {
    use super::job as mjob;
    let redact = |t: String| desired.redactor().text(&t);
    let now = match mjob::revision(url, &job.version_table).await {
        Ok(now) => now,
        Err(e) => {
            return Ok(RunnerUndo::Ended(SchemaUndo::NotUndone(format!(
                "{SCHEMA_NOT_UNDONE} to revision {revision}: {e}"
            ))));
        }
    };
    if now == revision {
        return Ok(RunnerUndo::Ended(SchemaUndo::Done));
    }
    let image = current.pins().get(&job.image).cloned();
    let error: String = match (mjob::downgrade_command(job, revision), image) {
        (None, _) => format!("the migration job has no downgrade command (revision {now})"),
        (Some(_), None) => format!(
            "generation {} has no pinned ID for the job image {}",
            current.id, job.image
        ),
        (Some(cmd), Some(image)) => {
            let command = cmd.join(" ");
            report.service(MIGRATIONS_NODE, &format!("running `{command}` ({now})"));
            // Waits at most lock_timeout for a lock (libpq reads PGOPTIONS), as the
            // down migrations of a directory do.
            let mut job = job.clone();
            let option = format!("-c lock_timeout={}", m.lock_timeout.as_millis().max(1));
            let options = match job.environment.get("PGOPTIONS") {
                Some(given) => format!("{given} {option}"),
                None => option,
            };
            job.environment.insert("PGOPTIONS".into(), options);
            match mjob::run(rt, desired, m, &job, &image, &cmd).await {
                Err(e) if e.is_unreachable() => return Err(RevertError::Runtime(e)),
                Err(e) => e.to_string(),
                Ok(run) => {
                    let after = mjob::revision(url, &job.version_table).await;
                    let text = run.event_text(&command);
                    store
                        .add_event(
                            current.id,
                            mjob::JOB_EVENT,
                            Some(MIGRATIONS_NODE),
                            &redact(text),
                        )
                        .await?;
                    match after {
                        Ok(after) if run.succeeded() && after == revision => {
                            report.service(
                                MIGRATIONS_NODE,
                                &format!("downgraded; revision {revision}"),
                            );
                            return Ok(RunnerUndo::Ended(SchemaUndo::Done));
                        }
                        Ok(after) => format!(
                            "`{command}` {} and left revision {after}: {}",
                            run.ended(),
                            run.last_lines(3)
                        ),
                        Err(e) => format!("`{command}` {}: {e}", run.ended()),
                    }
                }
            }
        }
    };
    Ok(RunnerUndo::Failed(error))
}

/// What a person must do when the schema could not be undone and no backup was restored.
fn restore_by_hand(
    current: &Generation,
    target_version: &str,
    error: &dyn std::fmt::Display,
) -> String {
    match &current.backup {
        Some(b) => format!(
            "{SCHEMA_NOT_UNDONE} to version {target_version}: {error}; restore the database backup generation {} took before migrating (berth restore {b})",
            current.id
        ),
        None => format!(
            "{SCHEMA_NOT_UNDONE} to version {target_version}: {error}; generation {} took no backup before migrating (backup = false): restore one by hand (berth restore FILE)",
            current.id
        ),
    }
}

/// A down migration (or the job's downgrade) is missing or failed, so the database
/// cannot put the schema back by itself; restore the backup `current` took before
/// migrating (the revert holds the project's lock). The restore stops the database's
/// dependents (the failed generation's containers), swaps the restored database in (the
/// one it replaces is kept), and starts them again; the revert's converge then replaces
/// them. [`SchemaUndo::Restored`]: the note says from what. [`SchemaUndo::NotUndone`]:
/// no backup, or the restore failed: the generation ends degraded, the reason naming the
/// migration and the backup.
///
/// A backup file is data, never code (docs/design.md §12): only the file berth wrote is
/// restored, by the SHA-256 it recorded then. A file that changed since, or one an older
/// berth recorded without a hash, is not restored by the revert: the generation ends
/// degraded, naming it, and a person decides (`berth restore FILE`).
async fn restore_backup_instead<R: Runtime>(
    rt: &R,
    store: &Store,
    desired: &DesiredState,
    current: &Generation,
    target_version: &str,
    error: &dyn std::fmt::Display,
    report: &Reporter,
) -> Result<SchemaUndo, RevertError> {
    let Some(backup) = &current.backup else {
        return Ok(SchemaUndo::NotUndone(restore_by_hand(
            current,
            target_version,
            error,
        )));
    };
    let Some(sha256) = &current.backup_sha256 else {
        report.service(
            MIGRATIONS_NODE,
            &format!("not restoring {backup}: berth recorded no hash of it"),
        );
        return Ok(SchemaUndo::NotUndone(format!(
            "{SCHEMA_NOT_UNDONE} to version {target_version}: {error}; berth recorded no SHA-256 of the backup {backup} (an older berth took it), so the revert does not restore it by itself: check it, then restore it by hand (berth restore {backup})"
        )));
    };
    report.service(
        MIGRATIONS_NODE,
        &format!("restoring the backup {backup} ({error})"),
    );
    let say = |t: &str| report.service(MIGRATIONS_NODE, t);
    let trust = crate::backup::Trust::Recorded(sha256);
    match crate::backup::restore(rt, desired, std::path::Path::new(backup), trust, &say).await {
        // The data is back; a dependent that does not run again (the failed generation's
        // own, which may crash) is replaced by the revert's converge anyway.
        Ok(_) | Err(crate::backup::Error::NotRestarted { .. }) => {
            report.service(
                MIGRATIONS_NODE,
                &format!("restored from {backup}; schema {target_version}"),
            );
            store
                .add_event(
                    current.id,
                    "restore",
                    Some(MIGRATIONS_NODE),
                    &format!("restored {backup} ({error})"),
                )
                .await?;
            Ok(SchemaUndo::Restored(format!(
                "the schema was restored from {backup} ({error})"
            )))
        }
        Err(crate::backup::Error::Runtime(e)) if e.is_unreachable() => Err(RevertError::Runtime(e)),
        Err(changed @ crate::backup::Error::Changed { .. }) => {
            report.service(MIGRATIONS_NODE, "restore REFUSED");
            store
                .add_event(
                    current.id,
                    "restore",
                    Some(MIGRATIONS_NODE),
                    &format!("not restoring {backup}: {changed}"),
                )
                .await?;
            Ok(SchemaUndo::NotUndone(format!(
                "{SCHEMA_NOT_UNDONE} to version {target_version}: {error}; {changed}; restore one you trust by hand (berth restore FILE)"
            )))
        }
        Err(restore_error) => {
            report.service(MIGRATIONS_NODE, "restore FAILED");
            store
                .add_event(
                    current.id,
                    "restore",
                    Some(MIGRATIONS_NODE),
                    &format!("restoring {backup} FAILED: {restore_error}"),
                )
                .await?;
            Ok(SchemaUndo::NotUndone(format!(
                "{SCHEMA_NOT_UNDONE} to version {target_version}: {error}; restoring the backup {backup} failed too: {restore_error}; restore it by hand (berth restore {backup})"
            )))
        }
    }
}
