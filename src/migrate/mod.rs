//! The database schema (docs/design.md §5), in one place:
//!
//! - [`Runner`]: how a `[migrations]` block's migrations run, decided once from the
//!   block: a directory of sqlx migrations (this module) or a migration [`job`] in its
//!   own image. Each operation below matches on it once.
//! - [`step`]: the migrations step of a converge, after the backup taken before applying.
//! - [`revert`]: the schema half of a revert or a rollback, or the backup restored when
//!   the schema cannot be undone.
//!
//! This module itself is the directory runner: sqlx migrations applied to, or undone on,
//! a PostgreSQL database. Every call works on a **dedicated** connection that it closes
//! whatever the outcome. sqlx's migrator takes a session advisory lock and returns early
//! on an error without unlocking it; closing the session is what releases it, so a
//! failed migration never leaves the lock held for the next one.
//!
//! Before running anything, [`apply`] and [`undo_to`] refuse a database whose record
//! disagrees with the source: an applied migration whose file was edited since
//! ([`Error::Edited`]), a dirty (half-applied) record, an applied migration missing from
//! the source. Each migration then runs in its own transaction (sqlx's default; a file
//! starting with `-- no-transaction` opts out and cannot be rolled back by the database).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::migrate::{Migrate, MigrateError, Migration, Migrator};
use sqlx::{Connection, PgConnection};

use crate::spec::{MigrationJob, Migrations};

pub mod job;
pub mod revert;
pub mod step;

/// How a `[migrations]` block's migrations run, decided once here from the block; each
/// operation (the step's apply, the revert's undo, `berth migrate` and `berth plan`'s
/// status) matches on it. The directory runner is this module's [`status`], [`apply`]
/// and [`undo_to`]; the job runner is [`job`]. A new runner is one variant, its own file
/// and one arm per operation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Runner<'a> {
    /// `source`: a directory of sqlx migrations that berth applies and undoes itself.
    /// `source_hash` is what the directory hashed to when the generation was resolved.
    Directory {
        source: &'a Path,
        source_hash: &'a str,
    },
    /// `[migrations.job]`: migrations in their own image, run in a one-shot container.
    Job(&'a MigrationJob),
}

impl<'a> Runner<'a> {
    /// The runner a `[migrations]` block names: its job when it has one, else its source
    /// directory (the loader accepts exactly one of the two).
    pub fn of(m: &'a Migrations) -> Runner<'a> {
        match &m.job {
            Some(job) => Runner::Job(job),
            None => Runner::Directory {
                source: &m.source,
                source_hash: &m.source_hash,
            },
        }
    }
}

/// The table sqlx records applied migrations in.
pub const TABLE: &str = "_sqlx_migrations";

/// How long to wait for the database to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read migrations from {}: {source}", dir.display())]
    Source {
        dir: PathBuf,
        #[source]
        source: MigrateError,
    },
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("the database did not accept a connection within {}s", CONNECT_TIMEOUT.as_secs())]
    ConnectTimeout,
    #[error("cannot read the applied migrations from {TABLE}: {0}")]
    Record(#[source] sqlx::Error),
    /// An applied migration's file was changed: the database does not have what the file
    /// now says, and running on would build on a schema nobody wrote down.
    #[error(transparent)]
    Edited(EditedMigration),
    #[error(
        "migration {version} ({description}) is recorded as half-applied (dirty, success = false in {TABLE}): repair the database by hand, then delete that row"
    )]
    Dirty { version: i64, description: String },
    #[error(
        "migration {version} ({description}) is applied in the database but not in {}",
        dir.display()
    )]
    Missing {
        version: i64,
        description: String,
        dir: PathBuf,
    },
    #[error(
        "migration {version} ({description}) has no down migration in {}: it cannot be undone",
        dir.display()
    )]
    NoDown {
        version: i64,
        description: String,
        dir: PathBuf,
    },
    #[error("applying migrations: {0}")]
    Apply(#[source] MigrateError),
    #[error("undoing migrations down to version {target}: {source}")]
    Undo {
        target: i64,
        #[source]
        source: MigrateError,
    },
}

/// An applied migration whose file no longer matches the checksum recorded when it ran.
#[derive(Debug, thiserror::Error)]
#[error(
    "migration {version} ({}) was applied and has been edited since: its checksum no longer matches the one recorded in {TABLE}; put the file back as it was and write the change as a new migration",
    file.display()
)]
pub struct EditedMigration {
    pub version: i64,
    pub file: PathBuf,
}

/// What the database has applied and what the source still has to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// Recorded in the database, by version.
    pub applied: Vec<Applied>,
    /// In the source and not recorded, by version.
    pub pending: Vec<Pending>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub version: i64,
    pub description: String,
    /// `false`: recorded as half-applied (dirty).
    pub success: bool,
    /// `Some(true)` when the source's up file still has the recorded checksum, `None`
    /// when the source no longer has the migration.
    pub checksum_ok: Option<bool>,
    /// The source's up file, when there is one.
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub version: i64,
    pub description: String,
    pub file: PathBuf,
}

impl Status {
    /// The newest applied version (0 when none is).
    pub fn version(&self) -> i64 {
        self.applied.iter().map(|a| a.version).max().unwrap_or(0)
    }

    /// Why the record and the source disagree, when they do: the first of an edited
    /// file, a dirty record, a migration missing from the source.
    fn refusal(&self, dir: &Path) -> Option<Error> {
        let first = |want: &dyn Fn(&Applied) -> bool| self.applied.iter().find(|a| want(a));
        if let Some(a) = first(&|a| a.checksum_ok == Some(false)) {
            return Some(Error::Edited(EditedMigration {
                version: a.version,
                file: a.file.clone().unwrap_or_default(),
            }));
        }
        if let Some(a) = first(&|a| !a.success) {
            return Some(Error::Dirty {
                version: a.version,
                description: a.description.clone(),
            });
        }
        first(&|a| a.checksum_ok.is_none()).map(|a| Error::Missing {
            version: a.version,
            description: a.description.clone(),
            dir: dir.to_path_buf(),
        })
    }
}

/// The migrations in `dir`, as sqlx reads them, each with its file.
pub fn resolve(dir: &Path) -> Result<Vec<(Migration, PathBuf)>, Error> {
    sqlx::migrate::resolve_blocking(dir).map_err(|e| Error::Source {
        dir: dir.to_path_buf(),
        source: MigrateError::Source(Box::new(e)),
    })
}

/// SHA-256 over the migrations as sqlx reads them (version, kind, checksum): what a
/// generation's `[migrations]` source hashed to, so a converge can tell whether the
/// directory still holds that generation's migrations.
pub fn source_hash(migrations: &[(Migration, PathBuf)]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for (m, _) in migrations {
        hasher.update(m.version.to_le_bytes());
        hasher.update(m.migration_type.suffix().as_bytes());
        hasher.update([0]);
        hasher.update(&*m.checksum);
    }
    format!("{:x}", hasher.finalize())
}

/// Applied and pending migrations. Changes nothing in the database (not even the record
/// table, which may not exist yet).
pub async fn status(url: &str, source: &Path) -> Result<Status, Error> {
    let migrations = resolve(source)?;
    let mut conn = connect(url).await?;
    let result = read_status(&mut conn, &migrations).await;
    close(conn).await;
    result
}

/// Apply every pending migration, in version order, each in its own transaction, after
/// refusing an edited, dirty or missing applied migration. Returns what it applied.
pub async fn apply(url: &str, source: &Path) -> Result<Vec<Pending>, Error> {
    let migrations = resolve(source)?;
    let mut conn = connect(url).await?;
    let result = apply_on(&mut conn, source, migrations).await;
    close(conn).await;
    result
}

/// Run down migrations, newest first, until `target` is the newest applied version
/// (0 undoes all), after the same refusals as [`apply`] and refusing an applied
/// migration above `target` that has no down file. Returns the versions undone.
pub async fn undo_to(
    url: &str,
    source: &Path,
    target: i64,
    lock_timeout: Duration,
) -> Result<Vec<i64>, Error> {
    let migrations = resolve(source)?;
    let mut conn = connect(url).await?;
    // A down migration waits at most this long for a lock (one the failed generation's
    // containers may hold), then fails: the revert restores the backup instead.
    let set = format!("SET lock_timeout = {}", lock_timeout.as_millis().max(1));
    let result = match sqlx::raw_sql(sqlx::AssertSqlSafe(set))
        .execute(&mut conn)
        .await
    {
        Ok(_) => undo_on(&mut conn, source, migrations, target).await,
        Err(e) => Err(Error::Record(e)),
    };
    close(conn).await;
    result
}

async fn apply_on(
    conn: &mut PgConnection,
    source: &Path,
    migrations: Vec<(Migration, PathBuf)>,
) -> Result<Vec<Pending>, Error> {
    // Held across the check and the run (advisory locks nest within a session), so
    // another migrator cannot change the record in between; closing releases it.
    conn.lock().await.map_err(Error::Apply)?;
    let status = read_status(conn, &migrations).await?;
    if let Some(refusal) = status.refusal(source) {
        return Err(refusal);
    }
    if status.pending.is_empty() {
        return Ok(Vec::new());
    }
    let migrator = Migrator::with_migrations(migrations.into_iter().map(|(m, _)| m).collect());
    migrator.run(&mut *conn).await.map_err(Error::Apply)?;
    Ok(status.pending)
}

async fn undo_on(
    conn: &mut PgConnection,
    source: &Path,
    migrations: Vec<(Migration, PathBuf)>,
    target: i64,
) -> Result<Vec<i64>, Error> {
    conn.lock()
        .await
        .map_err(|source| Error::Undo { target, source })?;
    let status = read_status(conn, &migrations).await?;
    if let Some(refusal) = status.refusal(source) {
        return Err(refusal);
    }
    let undone: Vec<&Applied> = status
        .applied
        .iter()
        .rev()
        .filter(|a| a.version > target)
        .collect();
    // sqlx skips an applied migration without a down file and undoes the ones below it:
    // the schema would then match no version at all.
    for a in &undone {
        let has_down = migrations
            .iter()
            .any(|(m, _)| m.version == a.version && m.migration_type.is_down_migration());
        if !has_down {
            return Err(Error::NoDown {
                version: a.version,
                description: a.description.clone(),
                dir: source.to_path_buf(),
            });
        }
    }
    if undone.is_empty() {
        return Ok(Vec::new());
    }
    let migrator = Migrator::with_migrations(migrations.into_iter().map(|(m, _)| m).collect());
    migrator
        .undo(&mut *conn, target)
        .await
        .map_err(|source| Error::Undo { target, source })?;
    Ok(undone.iter().map(|a| a.version).collect())
}

/// The record compared with the source's up migrations.
async fn read_status(
    conn: &mut PgConnection,
    migrations: &[(Migration, PathBuf)],
) -> Result<Status, Error> {
    let ups: BTreeMap<i64, &(Migration, PathBuf)> = migrations
        .iter()
        .filter(|(m, _)| !m.migration_type.is_down_migration())
        .map(|m| (m.0.version, m))
        .collect();
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(TABLE)
        .fetch_one(&mut *conn)
        .await
        .map_err(Error::Record)?;
    let rows: Vec<(i64, String, bool, Vec<u8>)> = if exists {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT version, description, success, checksum FROM {TABLE} ORDER BY version"
        )))
        .fetch_all(&mut *conn)
        .await
        .map_err(Error::Record)?
    } else {
        Vec::new()
    };
    let applied: Vec<Applied> = rows
        .into_iter()
        .map(|(version, description, success, checksum)| {
            let up = ups.get(&version);
            Applied {
                version,
                description,
                success,
                checksum_ok: up.map(|(m, _)| *m.checksum == *checksum),
                file: up.map(|(_, f)| f.clone()),
            }
        })
        .collect();
    let pending = ups
        .values()
        .filter(|(m, _)| !applied.iter().any(|a| a.version == m.version))
        .map(|(m, f)| Pending {
            version: m.version,
            description: m.description.to_string(),
            file: f.clone(),
        })
        .collect();
    Ok(Status { applied, pending })
}

async fn connect(url: &str) -> Result<PgConnection, Error> {
    tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(url))
        .await
        .map_err(|_| Error::ConnectTimeout)?
        .map_err(Error::Connect)
}

/// Close the session; on a broken connection dropping it is all there is to do, and the
/// server ends the session (and its locks) when the socket goes.
async fn close(conn: PgConnection) {
    if let Err(e) = conn.close().await {
        tracing::debug!("closing the migration connection: {e}");
    }
}

/// The database service publishes no host port for the URL's port: the host cannot
/// reach it (the URL's host is the service name, which resolves only on the project
/// network).
#[derive(Debug, thiserror::Error)]
#[error(
    "the database is not reachable from the host: service {service:?} publishes no host port for its port {port}/tcp (add e.g. ports = [\"{port}:{port}\"] to it)"
)]
pub struct NotReachable {
    pub service: String,
    pub port: u16,
}

/// The `[migrations]` URL rewritten to reach the database from the host: through the
/// database service's published host port for the URL's port (loopback when it is
/// published on every address).
pub fn host_url(
    migrations: &crate::spec::Migrations,
    service: &crate::spec::Service,
) -> Result<String, NotReachable> {
    let mut url = url::Url::parse(&migrations.url).expect("validated when loaded");
    let port = url.port().unwrap_or(5432);
    let not_reachable = || NotReachable {
        service: service.name.clone(),
        port,
    };
    let published = service
        .ports
        .iter()
        .find(|p| p.container == port && p.protocol == "tcp" && p.host.is_some())
        .ok_or_else(not_reachable)?;
    let host = match published.host_ip.as_deref() {
        None | Some("0.0.0.0") | Some("::") | Some("") => "127.0.0.1".to_string(),
        Some(ip) if ip.contains(':') => format!("[{ip}]"),
        Some(ip) => ip.to_string(),
    };
    url.set_host(Some(&host)).map_err(|_| not_reachable())?;
    url.set_port(published.host).map_err(|_| not_reachable())?;
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Migrations, Port, Service};

    fn db(ports: Vec<Port>) -> Service {
        let mut s: Service = serde_json::from_value(serde_json::json!({
            "name": "postgres", "image": "postgres:15", "build": null, "command": null,
            "entrypoint": null, "environment": {}, "ports": [], "volumes": [],
            "networks": [], "depends_on": [], "restart": "no", "labels": {}, "user": null,
            "working_dir": null, "container_name": "p-postgres", "profiles": [],
            "health": null
        }))
        .unwrap();
        s.ports = ports;
        s
    }

    fn port(host_ip: Option<&str>, host: u16, container: u16) -> Port {
        Port {
            host_ip: host_ip.map(str::to_string),
            host: Some(host),
            container,
            protocol: "tcp".into(),
        }
    }

    fn migrations(url: &str) -> Migrations {
        Migrations {
            service: "postgres".into(),
            url: url.into(),
            source: "/m".into(),
            source_hash: String::new(),
            backup: true,
            backup_dir: "/b".into(),
            retention: Duration::from_secs(1),
            snapshot: Vec::new(),
            lock_timeout: crate::spec::DEFAULT_LOCK_TIMEOUT,
            job: None,
        }
    }

    #[test]
    fn the_host_reaches_the_database_through_its_published_port() {
        let m = migrations("postgresql://u:p%40ss@postgres:5432/app?sslmode=disable");
        let url = host_url(&m, &db(vec![port(None, 5433, 5432)])).unwrap();
        assert_eq!(
            url,
            "postgresql://u:p%40ss@127.0.0.1:5433/app?sslmode=disable"
        );
        let url = host_url(&m, &db(vec![port(Some("127.0.0.2"), 6000, 5432)])).unwrap();
        assert_eq!(
            url,
            "postgresql://u:p%40ss@127.0.0.2:6000/app?sslmode=disable"
        );
        // Without a port in the URL, PostgreSQL's own.
        let m = migrations("postgres://u:p@postgres/app");
        let url = host_url(&m, &db(vec![port(None, 7000, 5432)])).unwrap();
        assert_eq!(url, "postgres://u:p@127.0.0.1:7000/app");
    }

    #[test]
    fn an_unpublished_database_is_said_to_be_unreachable() {
        let m = migrations("postgresql://u:p@postgres:5432/app");
        let err = host_url(&m, &db(vec![port(None, 8080, 80)])).unwrap_err();
        assert!(
            err.to_string().contains("not reachable from the host"),
            "{err}"
        );
        assert!(!err.to_string().contains("u:p"), "{err}");
    }
}
