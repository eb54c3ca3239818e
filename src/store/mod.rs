//! The state store: generations in SQLite through sqlx (docs/design.md "Concepts: generation").
//!
//! The default is an embedded SQLite file (`--state`, env `BERTH_STATE`). The store has
//! its own schema migrations in `src/store/migrations`, applied on open. The file holds
//! unredacted specs (a revert needs the real values), so it is created mode 0600.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

mod evidence;
pub use evidence::{Cause, Evidence};
mod timing;
pub use timing::{Timing, Timings};

mod outbox;
pub use outbox::Delivery;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("state store {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("state store schema migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("state store query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("generation {generation} in the state store cannot be read: {message}")]
    Corrupt { generation: i64, message: String },
}

/// How a generation ended (or that it has not yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Its converge is running, or its process died (then readers show `interrupted`).
    Progressing,
    /// Every gate passed.
    Healthy,
    /// A gate failed and the stack was not put back (no last good, or the revert failed).
    Failed,
    /// A gate failed and the whole stack went back to `reverted_to`.
    RolledBack,
    /// Stopped by a signal before it ended; the next converge resumes it.
    Interrupted,
    /// A gate failed and the stack is being put back on `reverted_to`; a converge that
    /// finds it (its process died) finishes the revert, never gates the failed spec again.
    Reverting,
    /// Interrupted, then replaced by a newer desired state before it was resumed.
    Superseded,
    /// `berth down`: the project's containers and network were removed on purpose.
    Down,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Progressing => "progressing",
            Outcome::Healthy => "healthy",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled-back",
            Outcome::Interrupted => "interrupted",
            Outcome::Reverting => "reverting",
            Outcome::Superseded => "superseded",
            Outcome::Down => "down",
        }
    }

    /// Every outcome a generation can have.
    pub const ALL: [Outcome; 8] = [
        Outcome::Progressing,
        Outcome::Healthy,
        Outcome::Failed,
        Outcome::RolledBack,
        Outcome::Interrupted,
        Outcome::Reverting,
        Outcome::Superseded,
        Outcome::Down,
    ];

    fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// A converge of this generation did not end: its process died or was stopped.
    pub fn unfinished(self) -> bool {
        matches!(
            self,
            Outcome::Progressing | Outcome::Interrupted | Outcome::Reverting
        )
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What made a generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// An apply of a desired state (by hand, or the daemon). Only these decide poison.
    Apply,
    /// `berth rollback`: a stored generation's spec and pins, run again by hand.
    Rollback,
    /// `berth down`: every container and the network removed on purpose.
    Down,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Apply => "apply",
            Kind::Rollback => "rollback",
            Kind::Down => "down",
        }
    }
}

/// One generation as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub id: i64,
    pub project: String,
    pub kind: Kind,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    /// SHA-256 of the desired-state files read (where it came from).
    pub source_hash: String,
    /// SHA-256 of what the desired state resolved to: the key of poisoning.
    pub resolved_hash: String,
    pub source: String,
    #[serde(skip)]
    pub spec_json: String,
    pub images: serde_json::Value,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub timings: Timings,
    /// For a rolled-back generation: the generation the stack went back to.
    pub reverted_to: Option<i64>,
    /// The database schema version (newest applied migration) this generation's
    /// migrations step found or left; None without migrations, or before the step
    /// reached the database. A revert undoes migrations down to its target's value.
    pub schema_version: Option<i64>,
    /// The database backup (its path) this generation's migrations step took before
    /// applying; a revert whose down migrations fail restores it. None: none was taken.
    pub backup: Option<String>,
    /// The SHA-256 of `backup` as berth wrote it: the revert restores the file only while
    /// it still has this hash. None: no backup, or one an older berth took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_sha256: Option<String>,
    /// With a migration job instead of sqlx migrations: the revision (Alembic's) its step
    /// found or left. A revert runs the job's downgrade to its target's value.
    pub schema_revision: Option<String>,
    /// Its migration job's upgrade ran to its end and exited 0: a later generation with
    /// the same job and pinned image, finding the database at `schema_revision`, does not
    /// run it again. Not shown: its `migration-job` event says so.
    #[serde(skip)]
    pub job_upgraded: bool,
    /// The git commit it came from (id, subject); None when read from a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_subject: Option<String>,
}

impl Generation {
    /// The image pins it ran: image reference -> image ID.
    pub fn pins(&self) -> std::collections::BTreeMap<String, String> {
        serde_json::from_value(self.images.clone()).unwrap_or_default()
    }

    /// The schema this generation reached, as people read it: `3` (sqlx migrations) or
    /// `def456` (a migration job's revision).
    pub fn schema(&self) -> Option<String> {
        self.schema_revision
            .clone()
            .or_else(|| self.schema_version.map(|v| v.to_string()))
    }
}

/// What a new generation records when it begins.
pub struct NewGeneration<'a> {
    pub project: &'a str,
    pub kind: Kind,
    pub source_hash: &'a str,
    pub resolved_hash: &'a str,
    pub source: &'a str,
    pub spec_json: &'a str,
    pub images: &'a serde_json::Value,
    /// The git commit (id, subject) it came from, when it did.
    pub commit: Option<(&'a str, &'a str)>,
}

/// Something that happened to a generation after it began (a repair, an interruption).
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub generation: i64,
    pub at_ms: i64,
    pub kind: String,
    pub service: Option<String>,
    pub message: String,
}

pub struct Store {
    pool: SqlitePool,
}

/// A file berth wrote into a backup directory.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupRecord {
    /// Its path as written (the backup directory is absolute).
    pub path: String,
    pub project: String,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
    pub bytes: i64,
    pub written_ms: i64,
}

fn row_to_backup(r: sqlx::sqlite::SqliteRow) -> BackupRecord {
    BackupRecord {
        path: r.get(0),
        project: r.get(1),
        sha256: r.get(2),
        bytes: r.get(3),
        written_ms: r.get(4),
    }
}

/// Where the state lives when `--state` and `BERTH_STATE` say nothing.
pub fn default_path() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(d).join("berth/state.db");
    }
    if std::env::var("USER").as_deref() == Ok("root") || std::env::var_os("HOME").is_none() {
        return PathBuf::from("/var/lib/berth/state.db");
    }
    PathBuf::from(std::env::var_os("HOME").unwrap()).join(".local/state/berth/state.db")
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Generation {
    /// The desired state this generation ran. Its secrets are registered with the log
    /// writer before it is returned.
    pub fn desired(&self) -> Result<crate::spec::DesiredState, StoreError> {
        let desired: crate::spec::DesiredState =
            serde_json::from_str(&self.spec_json).map_err(|e| StoreError::Corrupt {
                generation: self.id,
                message: e.to_string(),
            })?;
        crate::redact::register(&desired.redactor());
        Ok(desired)
    }
}

impl Store {
    /// The generation whose spec runs now, given the project's newest: that one when it
    /// is healthy, the one it went back to when it was rolled back. None after `down` or
    /// before any success.
    pub async fn running(&self, latest: &Generation) -> Result<Option<Generation>, StoreError> {
        Ok(match (latest.outcome, latest.reverted_to) {
            (Outcome::Healthy, _) => Some(latest.clone()),
            (Outcome::RolledBack, Some(to)) => self.get(&latest.project, to).await?,
            _ => None,
        })
    }

    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |e: std::io::Error| StoreError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        // Two berth processes may open a new store at once: the schema migrations run
        // under an exclusive flock, so the second waits and then finds them applied. The
        // flock is on a file of its own: closing any descriptor of the database file would
        // drop this process's SQLite (fcntl) locks on it.
        let mut migrate_lock = path.as_os_str().to_owned();
        migrate_lock.push(".migrate-lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&migrate_lock)
            .map_err(io)?;
        let file = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
            .await
            .expect("lock task runs")
            .map_err(io)?;
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        sqlx::migrate!("src/store/migrations").run(&pool).await?;
        drop(file);
        Ok(Store { pool })
    }

    /// Record a generation as `progressing` and return its number. An unfinished
    /// generation it replaces is marked `superseded` in the same transaction, so a kill
    /// between the two can never leave that one unfinished for good.
    pub async fn begin(
        &self,
        g: NewGeneration<'_>,
        supersedes: Option<i64>,
    ) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO generations (project, kind, started_ms, source_hash, resolved_hash, source, spec_json, images_json, outcome, commit_id, commit_subject)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'progressing', ?, ?) RETURNING id",
        )
        .bind(g.project)
        .bind(g.kind.as_str())
        .bind(now_ms())
        .bind(g.source_hash)
        .bind(g.resolved_hash)
        .bind(g.source)
        .bind(g.spec_json)
        .bind(g.images.to_string())
        .bind(g.commit.map(|c| c.0))
        .bind(g.commit.map(|c| c.1))
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = row.get(0);
        if let Some(old) = supersedes {
            sqlx::query("UPDATE generations SET finished_ms = ?, outcome = 'superseded', reason = ? WHERE id = ?")
                .bind(now_ms())
                .bind(format!(
                    "did not end; superseded by generation {id} ({}), which gated every service again",
                    g.source
                ))
                .bind(old)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    /// A gate of generation `id` failed: record that the stack is being put back on `to`
    /// before the revert touches anything.
    pub async fn start_revert(
        &self,
        id: i64,
        to: i64,
        reason: &str,
        timings: &Timings,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE generations SET outcome = 'reverting', reverted_to = ?, reason = ?, timings_json = ? WHERE id = ?")
            .bind(to)
            .bind(reason_line(reason))
            .bind(serde_json::to_string(timings).expect("timings are plain data"))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn finish(
        &self,
        id: i64,
        outcome: Outcome,
        reason: Option<&str>,
        timings: &Timings,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE generations SET finished_ms = ?, outcome = ?, reason = ?, timings_json = ? WHERE id = ?")
            .bind(now_ms())
            .bind(outcome.as_str())
            .bind(reason_line(reason))
            .bind(serde_json::to_string(timings).expect("timings are plain data"))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        // Its notification, in the same transaction (docs/design.md §14).
        outbox::record(&mut tx, id, outbox::happened(outcome), None).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Change a generation's outcome and reason, keeping its timings.
    pub async fn set_outcome(
        &self,
        id: i64,
        outcome: Outcome,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE generations SET finished_ms = ?, outcome = ?, reason = ? WHERE id = ?")
            .bind(now_ms())
            .bind(outcome.as_str())
            .bind(reason_line(reason))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        outbox::record(&mut tx, id, outbox::happened(outcome), None).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Record the schema version a generation's migrations step found or reached.
    pub async fn set_schema_version(&self, id: i64, version: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE generations SET schema_version = ? WHERE id = ?")
            .bind(version)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Record the revision a generation's migration job found or left.
    pub async fn set_schema_revision(&self, id: i64, revision: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE generations SET schema_revision = ? WHERE id = ?")
            .bind(revision)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Record that a generation's migration job upgrade ran to its end and exited 0.
    pub async fn set_job_upgraded(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE generations SET job_upgraded = 1 WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Record the database backup a generation's migrations step took before applying,
    /// with the SHA-256 of the file as berth wrote it.
    pub async fn set_backup(&self, id: i64, path: &str, sha256: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE generations SET backup = ?, backup_sha256 = ? WHERE id = ?")
            .bind(path)
            .bind(sha256)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Record a file berth wrote into a backup directory (a dump or a snapshot archive):
    /// retention deletes only recorded files.
    pub async fn record_backup(&self, b: &BackupRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT OR REPLACE INTO backups (path, project, sha256, bytes, written_ms) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&b.path)
        .bind(&b.project)
        .bind(&b.sha256)
        .bind(b.bytes)
        .bind(b.written_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The files berth recorded writing for `project`, oldest first.
    pub async fn backups(&self, project: &str) -> Result<Vec<BackupRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT path, project, sha256, bytes, written_ms FROM backups WHERE project = ? ORDER BY written_ms, path",
        )
        .bind(project)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(row_to_backup).collect())
    }

    /// The record of the file at `path`, if berth wrote one there.
    pub async fn backup_record(&self, path: &str) -> Result<Option<BackupRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT path, project, sha256, bytes, written_ms FROM backups WHERE path = ?",
        )
        .bind(path)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(row_to_backup))
    }

    /// Forget a recorded file (retention deleted it, or it is gone or no longer berth's).
    pub async fn forget_backup(&self, path: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM backups WHERE path = ?")
            .bind(path)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Mark a generation rolled back to `to`, now that `to` is healthy again.
    pub async fn mark_rolled_back(&self, id: i64, to: i64, reason: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE generations SET outcome = 'rolled-back', finished_ms = ?, reverted_to = ?, reason = ? WHERE id = ?")
            .bind(now_ms())
            .bind(to)
            .bind(reason_line(reason))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        outbox::record(&mut tx, id, outbox::happened(Outcome::RolledBack), None).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest generation older than `before` whose every gate passed, unless the
    /// project was taken down since: then there is nothing to go back to.
    pub async fn last_good(
        &self,
        project: &str,
        before: i64,
    ) -> Result<Option<Generation>, StoreError> {
        self.one(
            "WHERE project = ?1 AND id < ?2 AND outcome IN ('healthy', 'down') ORDER BY id DESC LIMIT 1",
            project,
            before,
        )
        .await
        .map(|g| g.filter(|g| g.outcome == Outcome::Healthy))
    }

    pub async fn get(&self, project: &str, id: i64) -> Result<Option<Generation>, StoreError> {
        self.one("WHERE project = ?1 AND id = ?2", project, id)
            .await
    }

    pub async fn latest(&self, project: &str) -> Result<Option<Generation>, StoreError> {
        // Generation numbers start at 1: every one of the project's is above 0.
        self.one(
            "WHERE project = ?1 AND id > ?2 ORDER BY id DESC LIMIT 1",
            project,
            0,
        )
        .await
    }

    /// The generation that poisons `resolved_hash`, if any: the newest *apply* of it that
    /// ended either healthy or rolled back, when that was rolled back. Rollbacks, downs,
    /// and applies that were interrupted, superseded or failed without a revert (a
    /// `--force` that went wrong) neither poison nor lift poison.
    pub async fn poisoned_by(
        &self,
        project: &str,
        resolved_hash: &str,
    ) -> Result<Option<Generation>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{SELECT} WHERE project = ?1 AND resolved_hash = ?2 AND kind = 'apply'
               AND outcome IN ('healthy', 'rolled-back') ORDER BY id DESC LIMIT 1"
        )))
        .bind(project)
        .bind(resolved_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .map(row_to_generation)
            .filter(|g| g.outcome == Outcome::RolledBack))
    }

    async fn one(
        &self,
        clause: &str,
        project: &str,
        n: i64,
    ) -> Result<Option<Generation>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("{SELECT} {clause}")))
            .bind(project)
            .bind(n)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(row_to_generation))
    }

    /// Generations oldest first, for one project or all.
    pub async fn history(&self, project: Option<&str>) -> Result<Vec<Generation>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{SELECT} WHERE (?1 IS NULL OR project = ?1) ORDER BY id"
        )))
        .bind(project)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(row_to_generation).collect())
    }

    /// What a prune of the git source's copies must keep (`git::Follow::prune`): of
    /// every project, its `newest` newest generations and its newest healthy one, oldest
    /// first.
    pub async fn kept_generations(&self, newest: i64) -> Result<Vec<Generation>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{SELECT} WHERE id IN (
                SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY project ORDER BY id DESC) AS n FROM generations) WHERE n <= ?1
                UNION SELECT MAX(id) FROM generations WHERE outcome = 'healthy' GROUP BY project
            ) ORDER BY id"
        )))
        .bind(newest)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(row_to_generation).collect())
    }

    pub async fn projects(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT DISTINCT project FROM generations ORDER BY project")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// Record something that happened to a generation after it began.
    pub async fn add_event(
        &self,
        generation: i64,
        kind: &str,
        service: Option<&str>,
        message: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO events (generation, at_ms, kind, service, message) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(generation)
        .bind(now_ms())
        .bind(kind)
        .bind(service)
        .bind(message)
        .execute(&mut *tx)
        .await?;
        // A repair of the running generation that failed (or went well after one that
        // failed) is news for notifications, written with the event.
        let happened = match kind {
            "repair-failed" => Some(crate::notify::Happened::RepairFailed),
            "repair" => Some(crate::notify::Happened::Repaired),
            _ => None,
        };
        if let Some(h) = happened {
            outbox::record(&mut tx, generation, h, Some(message)).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A generation's events, oldest first.
    pub async fn events(&self, generation: i64) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT generation, at_ms, kind, service, message FROM events WHERE generation = ? ORDER BY id",
        )
        .bind(generation)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Event {
                generation: r.get(0),
                at_ms: r.get(1),
                kind: r.get(2),
                service: r.get(3),
                message: r.get(4),
            })
            .collect())
    }
}

/// How long a stored reason may be.
const REASON_CHARS: usize = 4000;

/// A reason as it is stored: one bounded line. Parts of it are a container's words (a
/// probe's output, a database's error text, a job's last log line) and it is shown by
/// `berth status`, `berth history`, the HTTP status and the STATUS= line
/// (`docs/design.md` §12).
fn reason_line<'a>(reason: impl Into<Option<&'a str>>) -> Option<String> {
    reason
        .into()
        .map(|r| crate::text::one_line(r, REASON_CHARS))
}

const SELECT: &str = "SELECT id, project, started_ms, finished_ms, source_hash, source, spec_json, images_json, outcome, reason, timings_json, reverted_to, resolved_hash, kind, schema_version, backup, schema_revision, commit_id, commit_subject, backup_sha256, job_upgraded FROM generations";

fn row_to_generation(r: sqlx::sqlite::SqliteRow) -> Generation {
    let outcome: String = r.get(8);
    Generation {
        id: r.get(0),
        project: r.get(1),
        started_ms: r.get(2),
        finished_ms: r.get(3),
        source_hash: r.get(4),
        source: r.get(5),
        spec_json: r.get(6),
        images: serde_json::from_str(r.get::<&str, _>(7)).unwrap_or_default(),
        // An outcome this version does not know (a newer berth wrote it) reads as failed:
        // never as healthy, so it is never a revert target.
        outcome: Outcome::parse(&outcome).unwrap_or(Outcome::Failed),
        reason: r.get(9),
        timings: serde_json::from_str(r.get::<&str, _>(10)).unwrap_or_default(),
        reverted_to: r.get(11),
        resolved_hash: r.get(12),
        kind: match r.get::<&str, _>(13) {
            "rollback" => Kind::Rollback,
            "down" => Kind::Down,
            _ => Kind::Apply,
        },
        schema_version: r.get(14),
        backup: r.get(15),
        schema_revision: r.get(16),
        commit: r.get(17),
        commit_subject: r.get(18),
        backup_sha256: r.get(19),
        job_upgraded: r.get(20),
    }
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_ms(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        Err(_) => format!("{ms} ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_unix_ms_as_utc() {
        assert_eq!(format_ms(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_ms(1_795_000_000_000), "2026-11-18 11:06:40 UTC");
    }

    /// A store written before `job_upgraded` kept the fact only in a `migration-job`
    /// event's text; migration 0009 reads it from there.
    #[tokio::test]
    async fn an_upgrade_kept_only_as_event_text_is_recorded_as_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).await.unwrap();
        let spec = r#"{"migrations":{"job":{"upgrade":["alembic","upgrade","head"]}}}"#;
        let new = || NewGeneration {
            project: "p",
            kind: Kind::Apply,
            source_hash: "h",
            resolved_hash: "h",
            source: "f",
            spec_json: spec,
            images: &serde_json::Value::Null,
            commit: None,
        };
        let upgraded = store.begin(new(), None).await.unwrap();
        let job = |text: &'static str, id| {
            let store = &store;
            async move {
                store
                    .add_event(id, "migration-job", Some("migrations"), text)
                    .await
                    .unwrap()
            }
        };
        job("exit 0 `alembic upgrade head`\nINFO ok", upgraded).await;
        let failed = store.begin(new(), None).await.unwrap();
        job("exit 1 `alembic upgrade head`\nboom", failed).await;
        job("exit 0 `alembic downgrade def456`\n", failed).await;
        let none = store.begin(new(), None).await.unwrap();
        sqlx::query("UPDATE generations SET job_upgraded = 0")
            .execute(&store.pool)
            .await
            .unwrap();
        let migration = include_str!("migrations/0009_job_upgraded.sql");
        let backfill = &migration[migration.find(';').unwrap() + 1..];
        sqlx::raw_sql(sqlx::AssertSqlSafe(backfill))
            .execute(&store.pool)
            .await
            .unwrap();
        for (id, want) in [(upgraded, true), (failed, false), (none, false)] {
            let g = store.get("p", id).await.unwrap().unwrap();
            assert_eq!(g.job_upgraded, want, "generation {id}");
        }
    }

    #[tokio::test]
    async fn generations_are_numbered_and_finished() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s/state.db");
        let store = Store::open(&path).await.unwrap();
        let new = |h| NewGeneration {
            project: "p",
            kind: Kind::Apply,
            source_hash: h,
            resolved_hash: h,
            source: "f",
            spec_json: "{}",
            images: &serde_json::Value::Null,
            commit: None,
        };
        let a = store.begin(new("h1"), None).await.unwrap();
        let b = store.begin(new("h2"), Some(a)).await.unwrap();
        assert_eq!(b, a + 1);
        store
            .finish(b, Outcome::Failed, Some("why"), &Timings::new())
            .await
            .unwrap();
        let latest = store.latest("p").await.unwrap().unwrap();
        assert_eq!(
            (latest.id, latest.outcome, latest.reason.as_deref()),
            (b, Outcome::Failed, Some("why"))
        );
        let first = store.get("p", a).await.unwrap().unwrap();
        assert_eq!(first.outcome, Outcome::Superseded);
        assert_eq!(first.schema_version, None);
        store.set_schema_version(b, 3).await.unwrap();
        assert_eq!(store.get("p", b).await.unwrap().unwrap().backup, None);
        store.set_backup(b, "/b/p_1.sql.gz", "ab12").await.unwrap();
        let got = store.get("p", b).await.unwrap().unwrap();
        assert_eq!(
            (got.backup.as_deref(), got.backup_sha256.as_deref()),
            (Some("/b/p_1.sql.gz"), Some("ab12"))
        );
        assert_eq!(
            store.get("p", b).await.unwrap().unwrap().schema_version,
            Some(3)
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[tokio::test]
    async fn backup_records_are_kept_by_path_and_project() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).await.unwrap();
        let rec = |path: &str, project: &str, at| BackupRecord {
            path: path.into(),
            project: project.into(),
            sha256: format!("h-{path}"),
            bytes: 3,
            written_ms: at,
        };
        store.record_backup(&rec("/b/p_2", "p", 2)).await.unwrap();
        store.record_backup(&rec("/b/p_1", "p", 1)).await.unwrap();
        store.record_backup(&rec("/b/q_1", "q", 1)).await.unwrap();
        let paths = |v: Vec<BackupRecord>| v.into_iter().map(|b| b.path).collect::<Vec<_>>();
        assert_eq!(
            paths(store.backups("p").await.unwrap()),
            ["/b/p_1", "/b/p_2"]
        );
        assert_eq!(
            store.backup_record("/b/q_1").await.unwrap(),
            Some(rec("/b/q_1", "q", 1))
        );
        store.forget_backup("/b/p_1").await.unwrap();
        assert_eq!(paths(store.backups("p").await.unwrap()), ["/b/p_2"]);
        assert_eq!(store.backup_record("/b/p_1").await.unwrap(), None);
    }
}
