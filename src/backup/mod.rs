//! Backups of the migrations' database (docs/design.md §5; issue 10, item 4): `berth
//! backup` and `berth restore FILE`, and what a converge (or its revert) calls before and
//! after migrating.
//!
//! - [`take`]: `pg_dump` runs **inside the database container** (its client is the
//!   server's own version) through the engine's exec; its output is streamed through gzip
//!   into a temporary file (`O_EXCL`, mode 600) in the backup directory, fsynced, read back
//!   to its end ([`check`]: gzip intact, pg_dump's closing line present), and only then
//!   linked to its final name `<project>_YYYYMMDD_HHMMSS.sql.gz` (UTC). A link never
//!   replaces a file: when the name is taken, the next second's name is used. A failed
//!   dump leaves nothing under a final name. Retention ([`apply_retention`]) runs only
//!   after that success, and never deletes the backup just taken.
//! - [`restore`]: checks the file's start (a foreign file is refused at once:
//!   [`Error::NotADump`]), restores into a fresh database `<db>_restore_<ts>` with `psql
//!   -v ON_ERROR_STOP=1` fed from the file *while checking the rest of it* (gzip intact to
//!   its end, pg_dump's closing line; a cut-short file is refused and the fresh copy
//!   dropped, nothing in use touched), checks that every table the dump defines is there,
//!   and only then stops the running services that depend on the database (transitively;
//!   `"migrations"` in `depends_on` counts), swaps (the old database is kept as
//!   `<db>_before_restore_<ts>`: nothing is dropped), and starts the stopped containers
//!   again, whatever happened. The file is read once.
//!
//! The database's password (from the `[migrations]` URL) goes to the exec's environment
//! as `PGPASSWORD`, never into a command line or a message. The stack's image trusts
//! local socket connections, so it is not needed there; other images may ask for it.

use std::collections::{BTreeSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

use crate::runtime::{Runtime, RuntimeError};
use crate::spec::{DesiredState, Migrations};

/// The line pg_dump writes last (before an optional `\unrestrict`): a dump without it was
/// cut short.
pub const TRAILER: &str = "-- PostgreSQL database dump complete";

/// How long stopped services get to be running again after a restore.
const RESTART_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the desired state has no [migrations] block")]
    NoMigrations,
    #[error("the [migrations] url cannot be used for a backup: {0}")]
    Url(String),
    #[error("the database service {0:?} has no running container")]
    NotRunning(String),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file that is not a complete pg_dump: refused before anything is touched.
    #[error("{} is not a complete database dump: {why}", path.display())]
    NotADump { path: PathBuf, why: String },
    #[error("{what} in the database container failed (exit {code}): {}", stderr.trim())]
    Command {
        what: String,
        code: i64,
        stderr: String,
    },
    #[error("the restored database {database} lacks tables the dump defines: {}", missing.join(", "))]
    Verify {
        database: String,
        missing: Vec<String>,
    },
    #[error("service {service:?} (container {id}) is not running again after the restore")]
    NotRestarted { service: String, id: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        // A backup directory the systemd unit left read-only says which setting to change.
        source: match crate::preflight::read_only_hint(&source, path) {
            Some(hint) => std::io::Error::new(source.kind(), format!("{source}{hint}")),
            None => source,
        },
    }
}

/// Who to be and which database, from the `[migrations]` URL.
#[derive(Clone, PartialEq)]
pub struct Database {
    pub user: String,
    /// Never printed (`Debug` leaves it out).
    password: String,
    pub name: String,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("user", &self.user)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Database {
    pub fn from_url(text: &str) -> Result<Database, Error> {
        let url = url::Url::parse(text).map_err(|e| Error::Url(e.to_string()))?;
        let user = crate::redact::percent_decode(url.username());
        if user.is_empty() {
            return Err(Error::Url("it names no user".into()));
        }
        let name = crate::redact::percent_decode(url.path().trim_start_matches('/'));
        Ok(Database {
            name: if name.is_empty() { user.clone() } else { name },
            password: url
                .password()
                .map(crate::redact::percent_decode)
                .unwrap_or_default(),
            user,
        })
    }

    /// The exec's environment: the password, when there is one.
    fn env(&self) -> Vec<String> {
        if self.password.is_empty() {
            Vec::new()
        } else {
            vec![format!("PGPASSWORD={}", self.password)]
        }
    }

    /// `psql` on `database`, stopping at the first error, without asking for a password.
    fn psql(&self, database: &str) -> Vec<String> {
        [
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "--no-password",
            "-U",
            &self.user,
            "-d",
            database,
        ]
        .map(str::to_string)
        .to_vec()
    }
}

/// A new file in `dir` (mode 600, never an existing one) under a hidden temporary name
/// for `stem`, removed when the guard drops unless it was linked to its final name.
fn partial_file(dir: &Path, stem: &str) -> Result<(std::fs::File, PathBuf, RemoveOnDrop), Error> {
    let temp = dir.join(format!(
        ".{stem}.partial-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(io(&temp))?;
    let guard = RemoveOnDrop(Some(temp.clone()));
    Ok((file, temp, guard))
}

/// A PostgreSQL identifier, quoted.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A PostgreSQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A backup that was taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Taken {
    pub path: PathBuf,
    /// Its size on disk (compressed).
    pub bytes: u64,
    /// The archives of the `snapshot` directories beside it,
    /// `<project>_<ts>.<dir name>.tar.gz`.
    pub snapshots: Vec<PathBuf>,
    /// Older backups that retention deleted afterwards.
    pub removed: Vec<PathBuf>,
}

/// What [`check`] read in a dump.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DumpSummary {
    /// `schema.table` of every `CREATE TABLE` in the dump.
    pub tables: BTreeSet<String>,
    /// Bytes of SQL once decompressed.
    pub sql_bytes: u64,
}

/// The ID of the database service's running container.
pub async fn database_container<R: Runtime>(
    rt: &R,
    project: &str,
    service: &str,
) -> Result<String, Error> {
    rt.list_project(project)
        .await?
        .into_iter()
        .find(|c| c.service.as_deref() == Some(service) && c.running())
        .map(|c| c.id)
        .ok_or_else(|| Error::NotRunning(service.to_string()))
}

/// Take a backup of the migrations' database now, then apply retention (see the module
/// doc). The database service's container must be running.
pub async fn take<R: Runtime>(rt: &R, project: &str, m: &Migrations) -> Result<Taken, Error> {
    let db = Database::from_url(&m.url)?;
    let container = database_container(rt, project, &m.service).await?;
    take_from(
        rt,
        &container,
        project,
        &db,
        &m.backup_dir,
        m.retention,
        &m.snapshot,
    )
    .await
}

/// [`take`] from a known container into `dir`, archiving the `snapshot` directories
/// beside the dump.
pub async fn take_from<R: Runtime>(
    rt: &R,
    container: &str,
    project: &str,
    db: &Database,
    dir: &Path,
    retention: Duration,
    snapshot: &[PathBuf],
) -> Result<Taken, Error> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let started = jiff::Timestamp::now();
    // The temporary file goes away unless it becomes the backup.
    let (file, temp, temp_guard) = partial_file(
        dir,
        &format!("{project}_{}", started.strftime("%Y%m%d_%H%M%S")),
    )?;

    let mut gz = GzEncoder::new(std::io::BufWriter::new(file), Compression::default());
    let command = ["pg_dump", "--no-password", "-U", &db.user, "-d", &db.name].map(str::to_string);
    let done = rt
        .exec_stream(container, &command, &db.env(), None, &mut gz)
        .await?;
    if done.exit_code != 0 {
        return Err(Error::Command {
            what: "pg_dump".into(),
            code: done.exit_code,
            stderr: done.stderr_tail,
        });
    }
    let file = gz
        .finish()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .map_err(io(&temp))?;
    file.sync_all().map_err(io(&temp))?;
    drop(file);
    check(&temp).await?;

    let path = link_unique(&temp, dir, project, started).await?;
    drop(temp_guard);
    // The new name must survive a power cut as well as the bytes did.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    let bytes = std::fs::metadata(&path).map_err(io(&path))?.len();
    let mut snapshots = Vec::new();
    for source in snapshot {
        let (dump, source) = (path.clone(), source.clone());
        let archived = tokio::task::spawn_blocking(move || archive(&dump, &source))
            .await
            .map_err(|e| Error::Io {
                path: PathBuf::new(),
                source: std::io::Error::other(e.to_string()),
            })??;
        snapshots.push(archived);
    }
    let mut keep = snapshots.clone();
    keep.push(path.clone());
    let removed = apply_retention(dir, project, retention, &keep)?;
    Ok(Taken {
        path,
        bytes,
        snapshots,
        removed,
    })
}

/// Archive the directory `source` beside the dump `dump` as
/// `<dump's stem>.<dir name>.tar.gz`, written like a dump: temporary file (`O_EXCL`, mode
/// 600), fsynced, then linked to its name without replacing anything.
fn archive(dump: &Path, source: &Path) -> Result<PathBuf, Error> {
    let dir = dump.parent().unwrap_or(Path::new("."));
    let stem = dump
        .file_name()
        .map(|n| n.to_string_lossy().trim_end_matches(".sql.gz").to_string())
        .unwrap_or_default();
    let name = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !source.is_dir() {
        return Err(Error::Io {
            path: source.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the snapshot directory is not there",
            ),
        });
    }
    let path = dir.join(format!("{stem}.{name}.tar.gz"));
    let (file, temp, _guard) = partial_file(dir, &format!("{stem}.{name}"))?;
    let gz = GzEncoder::new(std::io::BufWriter::new(file), Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    tar.append_dir_all(&name, source).map_err(io(source))?;
    let file = tar
        .into_inner()
        .and_then(|gz| gz.finish())
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .map_err(io(&temp))?;
    file.sync_all().map_err(io(&temp))?;
    std::fs::hard_link(&temp, &path).map_err(io(&path))?;
    Ok(path)
}

/// Removes a file when dropped, unless emptied.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The final name of a backup taken at `at`.
pub fn backup_name(project: &str, at: jiff::Timestamp) -> String {
    format!("{project}_{}.sql.gz", at.strftime("%Y%m%d_%H%M%S"))
}

/// Whether `name` is one of `project`'s backups: `<project>_YYYYMMDD_HHMMSS.sql.gz`
/// exactly, or a snapshot archive beside one (`<project>_YYYYMMDD_HHMMSS.<dir>.tar.gz`),
/// so that project `a` never takes project `a_b`'s files for its own.
pub fn is_backup_name(project: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(project).and_then(|r| r.strip_prefix('_')) else {
        return false;
    };
    let (Some(stamp), Some(tail)) = (rest.get(..15), rest.get(15..)) else {
        return false;
    };
    let stamp_ok = stamp.bytes().enumerate().all(|(i, b)| match i {
        8 => b == b'_',
        _ => b.is_ascii_digit(),
    });
    let snapshot = tail
        .strip_prefix('.')
        .and_then(|t| t.strip_suffix(".tar.gz"))
        .is_some_and(|dir| !dir.is_empty());
    stamp_ok && (tail == ".sql.gz" || snapshot)
}

/// Hard-link `temp` to the backup's final name: a link never replaces an existing file.
/// When the name is taken (a second backup within the same second), wait for the next
/// second's name.
async fn link_unique(
    temp: &Path,
    dir: &Path,
    project: &str,
    mut at: jiff::Timestamp,
) -> Result<PathBuf, Error> {
    for _ in 0..10 {
        let path = dir.join(backup_name(project, at));
        match std::fs::hard_link(temp, &path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let next = at + jiff::SignedDuration::from_secs(1);
                let wait = next.duration_since(jiff::Timestamp::now());
                if wait.is_positive() {
                    tokio::time::sleep(wait.unsigned_abs()).await;
                }
                at = next.max(jiff::Timestamp::now());
            }
            Err(e) => return Err(io(&path)(e)),
        }
    }
    Err(Error::Io {
        path: dir.join(backup_name(project, at)),
        source: std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "no free backup name in 10 seconds",
        ),
    })
}

/// Delete `project`'s backups (and snapshot archives) in `dir` last modified longer than
/// `retention` ago, except `keep` (what was just taken). Call it only after a backup
/// succeeded.
pub fn apply_retention(
    dir: &Path,
    project: &str,
    retention: Duration,
    keep: &[PathBuf],
) -> Result<Vec<PathBuf>, Error> {
    let now = SystemTime::now();
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let name = entry.file_name();
        if keep.contains(&path) || !is_backup_name(project, &name.to_string_lossy()) {
            continue;
        }
        let modified = entry
            .metadata()
            .and_then(|m| m.modified())
            .map_err(io(&path))?;
        let age = now.duration_since(modified).unwrap_or_default();
        if age > retention {
            std::fs::remove_file(&path).map_err(io(&path))?;
            removed.push(path);
        }
    }
    removed.sort();
    Ok(removed)
}

/// Read a backup to its end: gzip intact and pg_dump's closing line present. Anything
/// else is [`Error::NotADump`].
pub async fn check(path: &Path) -> Result<DumpSummary, Error> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || check_blocking(&path))
        .await
        .map_err(|e| Error::Io {
            path: PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        })?
}

fn check_blocking(path: &Path) -> Result<DumpSummary, Error> {
    let file = std::fs::File::open(path).map_err(io(path))?;
    let mut scan = Scan::new(BufReader::with_capacity(
        256 * 1024,
        MultiGzDecoder::new(file),
    ));
    std::io::copy(&mut scan, &mut std::io::sink()).map_err(io(path))?;
    scan.finish(path)
}

/// The start of [`check`] alone: the file opens, decompresses, and its first line is
/// pg_dump's. Refuses a foreign file at once; a truncated one passes (a restore finds
/// that out as it reads, before anything is touched).
pub fn check_start(path: &Path) -> Result<(), Error> {
    let file = std::fs::File::open(path).map_err(io(path))?;
    let mut scan = Scan::new(BufReader::with_capacity(
        64 * 1024,
        MultiGzDecoder::new(file),
    ));
    let mut first = [0u8; 1];
    let _ = std::io::Read::read(&mut scan, &mut first).map_err(io(path))?;
    match scan.error.take() {
        Some(why) => Err(Error::NotADump {
            path: path.to_path_buf(),
            why,
        }),
        None if scan.first => Err(Error::NotADump {
            path: path.to_path_buf(),
            why: "it is empty".into(),
        }),
        None => Ok(()),
    }
}

/// A reader of a dump's SQL that passes it through unchanged and checks it on the way:
/// the first line is pg_dump's, the gzip is intact to its end, the closing line is there,
/// and which tables it creates. A fault ends the stream early (the reader sees its end)
/// and is kept for [`Scan::finish`], so a restore fed from it stops at the fault and is
/// then refused.
struct Scan<R> {
    inner: R,
    line: Vec<u8>,
    pos: usize,
    done: bool,
    first: bool,
    trailer: bool,
    error: Option<String>,
    summary: DumpSummary,
}

impl<R: BufRead> Scan<R> {
    fn new(inner: R) -> Self {
        Scan {
            inner,
            line: Vec::new(),
            pos: 0,
            done: false,
            first: true,
            trailer: false,
            error: None,
            summary: DumpSummary::default(),
        }
    }

    /// Read the next line into `line`; false at the end or at a fault.
    fn next_line(&mut self) -> bool {
        self.line.clear();
        self.pos = 0;
        match self.inner.read_until(b'\n', &mut self.line) {
            Ok(0) => return false,
            Ok(n) => self.summary.sql_bytes += n as u64,
            Err(e) => {
                self.error = Some(format!("gzip: {e}"));
                self.line.clear();
                return false;
            }
        }
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end();
        if std::mem::take(&mut self.first)
            && !text.starts_with("--")
            && !text.starts_with("\\restrict")
        {
            self.error = Some("it does not start like pg_dump's SQL output".into());
            self.line.clear();
            return false;
        }
        if text == TRAILER {
            self.trailer = true;
        } else if let Some(table) = created_table(text) {
            self.summary.tables.insert(table);
        }
        true
    }

    /// What was read, or why it is not a complete dump.
    fn finish(self, path: &Path) -> Result<DumpSummary, Error> {
        let why = match self.error {
            Some(why) => why,
            None if !self.trailer => format!("it does not end with {TRAILER:?} (cut short?)"),
            None => return Ok(self.summary),
        };
        Err(Error::NotADump {
            path: path.to_path_buf(),
            why,
        })
    }
}

impl<R: BufRead> std::io::Read for Scan<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            if self.pos == self.line.len() && (self.done || !self.next_line()) {
                self.done = true;
                break;
            }
            let k = (buf.len() - n).min(self.line.len() - self.pos);
            buf[n..n + k].copy_from_slice(&self.line[self.pos..self.pos + k]);
            n += k;
            self.pos += k;
        }
        Ok(n)
    }
}

/// `schema.table` of a `CREATE TABLE` line of pg_dump's.
fn created_table(line: &str) -> Option<String> {
    let rest = line
        .strip_prefix("CREATE TABLE ")
        .or_else(|| line.strip_prefix("CREATE UNLOGGED TABLE "))?;
    let name = rest.split(" (").next()?.trim();
    (!name.is_empty()).then(|| name.replace('"', ""))
}

/// The services that depend on the database service, directly or through others;
/// `"migrations"` in `depends_on` counts as depending on it.
pub fn dependents(d: &DesiredState, database: &str) -> Vec<String> {
    let mut found: BTreeSet<String> = BTreeSet::new();
    let mut queue: VecDeque<String> = [database.to_string(), "migrations".to_string()].into();
    while let Some(dep) = queue.pop_front() {
        for (name, s) in &d.services {
            if name != database && s.depends_on.contains(&dep) && found.insert(name.clone()) {
                queue.push_back(name.clone());
            }
        }
    }
    found.into_iter().collect()
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq)]
pub struct Restored {
    /// The database that now holds the restored data (the URL's).
    pub database: String,
    /// Where the database it replaced is kept.
    pub kept_as: String,
    /// Services stopped for the restore and started again.
    pub restarted: Vec<String>,
    pub tables: usize,
}

/// Restore `file` into the migrations' database (see the module doc). The caller holds
/// the project's lock.
///
/// The file is checked as it is read: its start before anything else (a foreign file is
/// refused at once), the rest while it fills the fresh database, which is dropped when
/// the file turns out cut short or damaged. Only a complete, verified copy stops the
/// dependents for the swap: a refused file touches nothing in use.
pub async fn restore<R: Runtime>(
    rt: &R,
    d: &DesiredState,
    file: &Path,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Restored, Error> {
    check_start(file)?;
    let m = d.migrations.as_ref().ok_or(Error::NoMigrations)?;
    let db = Database::from_url(&m.url)?;
    let project = &d.project.name;
    let container = database_container(rt, project, &m.service).await?;
    let ts = jiff::Timestamp::now().strftime("%Y%m%d_%H%M%S").to_string();
    let fresh = format!("{}_restore_{ts}", db.name);
    let before = format!("{}_before_restore_{ts}", db.name);
    let summary = fill_fresh(rt, &container, &db, &fresh, file, say).await?;

    let dependents = dependents(d, &m.service);
    let stop: Vec<(String, String)> = rt
        .list_project(project)
        .await?
        .into_iter()
        .filter(|c| c.running())
        .filter_map(|c| {
            let s = c.service.clone()?;
            dependents.contains(&s).then_some((s, c.id))
        })
        .collect();
    let mut stopped = Vec::new();
    let mut outcome = Ok(());
    for (service, id) in &stop {
        say(&format!("stopping {service}"));
        if let Err(e) = rt.stop_container(id).await {
            outcome = Err(e.into());
            break;
        }
        stopped.push((service.clone(), id.clone()));
    }
    let result = match outcome {
        Ok(()) => swap(rt, &container, &db, &fresh, &before, say).await,
        Err(e) => Err(e),
    };
    if result.is_err() {
        // The database in use kept its name: the restored copy goes.
        drop_database(rt, &container, &db, &fresh).await;
    }
    // Started again whatever happened: a failed restore changed nothing.
    let restarted = start_again(rt, project, &stopped, say).await;
    result?;
    restarted?;
    Ok(Restored {
        database: db.name.clone(),
        kept_as: before,
        restarted: stopped.into_iter().map(|(s, _)| s).collect(),
        tables: summary.tables.len(),
    })
}

async fn rename_database<R: Runtime>(
    rt: &R,
    container: &str,
    db: &Database,
    from: &str,
    to: &str,
) -> Result<(), Error> {
    let sql = format!("ALTER DATABASE {} RENAME TO {}", ident(from), ident(to));
    psql(rt, container, db, "postgres", &sql).await.map(|_| ())
}

async fn drop_database<R: Runtime>(rt: &R, container: &str, db: &Database, name: &str) {
    let _ = psql(
        rt,
        container,
        db,
        "postgres",
        &format!("DROP DATABASE IF EXISTS {}", ident(name)),
    )
    .await;
}

/// Create `fresh` and fill it from the file, checking the file as it goes ([`Scan`]) and
/// the tables afterwards; on any failure `fresh` is dropped (the database in use was not
/// touched). What the file held.
async fn fill_fresh<R: Runtime>(
    rt: &R,
    container: &str,
    db: &Database,
    fresh: &str,
    file: &Path,
    say: &(dyn Fn(&str) + Sync),
) -> Result<DumpSummary, Error> {
    say(&format!("creating database {fresh}"));
    psql(
        rt,
        container,
        db,
        "postgres",
        &format!("CREATE DATABASE {} TEMPLATE template0", ident(fresh)),
    )
    .await?;

    let filled = async {
        say(&format!("restoring {} into {fresh}", file.display()));
        let f = std::fs::File::open(file).map_err(io(file))?;
        let mut input = Scan::new(BufReader::with_capacity(256 * 1024, MultiGzDecoder::new(f)));
        let mut sink = std::io::sink();
        let done = rt
            .exec_stream(
                container,
                &db.psql(fresh),
                &db.env(),
                Some(&mut input),
                &mut sink,
            )
            .await?;
        // A cut-short or damaged file outranks what psql made of it.
        let summary = input.finish(file)?;
        if done.exit_code != 0 {
            return Err(Error::Command {
                what: "psql (restore)".into(),
                code: done.exit_code,
                stderr: done.stderr_tail,
            });
        }
        let present = psql(
            rt,
            container,
            db,
            fresh,
            "SELECT schemaname || '.' || tablename FROM pg_tables \
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
        )
        .await?;
        let present: BTreeSet<&str> = present.lines().map(str::trim).collect();
        let missing: Vec<String> = summary
            .tables
            .iter()
            .filter(|t| !present.contains(t.as_str()))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(Error::Verify {
                database: fresh.to_string(),
                missing,
            });
        }
        say(&format!(
            "verified {fresh}: a complete dump, all {} table(s) of it are there",
            summary.tables.len()
        ));
        Ok(summary)
    }
    .await;
    if filled.is_err() {
        // Only the half-made copy goes; the database in use was not touched.
        drop_database(rt, container, db, fresh).await;
    }
    filled
}

/// Swap `fresh` in under the database's name; the one it replaces is kept as `before`.
async fn swap<R: Runtime>(
    rt: &R,
    container: &str,
    db: &Database,
    fresh: &str,
    before: &str,
    say: &(dyn Fn(&str) + Sync),
) -> Result<(), Error> {
    say(&format!(
        "swapping: {} is kept as {before}, {fresh} becomes {}",
        db.name, db.name
    ));
    // Sessions may reconnect between the terminate and the rename: try a few times.
    let mut renamed = Err(Error::NotRunning(String::new()));
    for attempt in 0..10 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let terminated = psql(
            rt,
            container,
            db,
            "postgres",
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = {} AND pid <> pg_backend_pid()",
                literal(&db.name)
            ),
        )
        .await;
        // A terminated session takes a moment to go.
        if !terminated.is_ok_and(|out| out.trim().is_empty()) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        renamed = rename_database(rt, container, db, &db.name, before).await;
        if renamed.is_ok() {
            break;
        }
    }
    renamed?;
    if let Err(e) = rename_database(rt, container, db, fresh, &db.name).await {
        // Put the old one back under its name rather than leave none.
        let _ = rename_database(rt, container, db, before, &db.name).await;
        return Err(e);
    }
    Ok(())
}

/// One SQL command through psql in the container; its output, unaligned.
async fn psql<R: Runtime>(
    rt: &R,
    container: &str,
    db: &Database,
    database: &str,
    sql: &str,
) -> Result<String, Error> {
    let mut command = db.psql(database);
    command.extend(["-A", "-t", "-c", sql].map(str::to_string));
    let mut out = Vec::new();
    let done = rt
        .exec_stream(container, &command, &db.env(), None, &mut out)
        .await?;
    if done.exit_code != 0 {
        return Err(Error::Command {
            what: format!("psql -c {sql:?}"),
            code: done.exit_code,
            stderr: done.stderr_tail,
        });
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Start the containers stopped for the restore and wait until each runs.
async fn start_again<R: Runtime>(
    rt: &R,
    project: &str,
    stopped: &[(String, String)],
    say: &(dyn Fn(&str) + Sync),
) -> Result<(), Error> {
    let mut first_error = None;
    for (service, id) in stopped {
        say(&format!("starting {service}"));
        if let Err(e) = rt.start_container(id).await {
            first_error.get_or_insert(Error::from(e));
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let deadline = tokio::time::Instant::now() + RESTART_DEADLINE;
    loop {
        let running: BTreeSet<String> = rt
            .list_project(project)
            .await?
            .into_iter()
            .filter(|c| c.running())
            .map(|c| c.id)
            .collect();
        let Some((service, id)) = stopped.iter().find(|(_, id)| !running.contains(id)) else {
            return Ok(());
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::NotRestarted {
                service: service.clone(),
                id: id.clone(),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        let mut e = GzEncoder::new(std::fs::File::create(&path).unwrap(), Compression::fast());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap();
        path
    }

    const DUMP: &str = "--\n-- PostgreSQL database dump\n--\n\nCREATE TABLE public.users (\n    id integer\n);\nCREATE TABLE public.\"Odd\" (\n);\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict abc\n";

    #[tokio::test]
    async fn a_complete_dump_passes_the_check_and_lists_its_tables() {
        let dir = tempfile::tempdir().unwrap();
        let s = check(&gz(dir.path(), "a.sql.gz", DUMP)).await.unwrap();
        assert_eq!(
            s.tables.into_iter().collect::<Vec<_>>(),
            ["public.Odd", "public.users"]
        );
    }

    #[tokio::test]
    async fn a_truncated_foreign_or_unfinished_file_is_not_a_dump() {
        let dir = tempfile::tempdir().unwrap();
        let whole = std::fs::read(gz(dir.path(), "a.sql.gz", &DUMP.repeat(200))).unwrap();
        let cut = dir.path().join("cut.sql.gz");
        std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
        let plain = dir.path().join("plain.sql.gz");
        std::fs::write(&plain, DUMP).unwrap();
        let unfinished = gz(dir.path(), "u.sql.gz", "--\nCREATE TABLE public.x (\n");
        let foreign = gz(
            dir.path(),
            "f.sql.gz",
            "hello\n-- PostgreSQL database dump complete\n",
        );
        for p in [cut, plain, unfinished, foreign] {
            match check(&p).await {
                Err(Error::NotADump { path, why }) => assert_eq!(path, p, "{why}"),
                other => panic!("{}: {other:?}", p.display()),
            }
        }
    }

    #[test]
    fn the_scan_passes_the_sql_through_unchanged_and_stops_at_a_fault() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let text = DUMP.repeat(300);
        let path = gz(dir.path(), "a.sql.gz", &text);
        let mut scan = Scan::new(BufReader::new(MultiGzDecoder::new(
            std::fs::File::open(&path).unwrap(),
        )));
        // Small reads cross line boundaries.
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let n = scan.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(String::from_utf8(out).unwrap(), text);
        let summary = scan.finish(&path).unwrap();
        assert_eq!(summary.sql_bytes, text.len() as u64);
        assert_eq!(summary.tables.len(), 2);

        // Cut short: what comes through is a prefix, and the scan says why it stopped.
        let whole = std::fs::read(&path).unwrap();
        let cut = dir.path().join("cut.sql.gz");
        std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
        let mut scan = Scan::new(BufReader::new(MultiGzDecoder::new(
            std::fs::File::open(&cut).unwrap(),
        )));
        let mut out = Vec::new();
        scan.read_to_end(&mut out).unwrap();
        assert!(text.as_bytes().starts_with(&out) && out.len() < text.len());
        assert!(matches!(scan.finish(&cut), Err(Error::NotADump { .. })));

        // The start alone: a foreign or empty file is refused, a cut one is not (yet).
        assert!(check_start(&path).is_ok());
        assert!(check_start(&cut).is_ok());
        let foreign = gz(dir.path(), "f.sql.gz", "hello\n");
        let empty = gz(dir.path(), "e.sql.gz", "");
        let plain = dir.path().join("plain.sql.gz");
        std::fs::write(&plain, DUMP).unwrap();
        for p in [foreign, empty, plain] {
            assert!(
                matches!(check_start(&p), Err(Error::NotADump { .. })),
                "{}",
                p.display()
            );
        }
    }

    #[test]
    fn backup_names_belong_to_their_project_only() {
        assert!(is_backup_name("a", "a_20260101_120000.sql.gz"));
        assert!(!is_backup_name("a", "a_b_20260101_120000.sql.gz"));
        assert!(!is_backup_name("a", "a_20260101_120000.sql.gz.tmp"));
        assert!(!is_backup_name("a", ".a_20260101_120000.partial-1-2"));
        assert!(!is_backup_name("a", "a_2026010x_120000.sql.gz"));
        assert!(is_backup_name("a", "a_20260101_120000.chroma.tar.gz"));
        assert!(!is_backup_name("a", "a_20260101_120000..tar.gz"));
        assert!(!is_backup_name("a", "a_20260101_12000"));
        let at: jiff::Timestamp = "2026-12-04T21:05:09Z".parse().unwrap();
        assert_eq!(backup_name("p", at), "p_20261204_210509.sql.gz");
    }

    #[test]
    fn retention_deletes_old_backups_of_the_project_but_never_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let old = SystemTime::now() - Duration::from_secs(40 * 24 * 3600);
        let mk = |name: &str, at: SystemTime| {
            let p = dir.path().join(name);
            std::fs::File::create(&p).unwrap().set_modified(at).unwrap();
            p
        };
        let stale = mk("p_20200101_000000.sql.gz", old);
        let stale_snapshot = mk("p_20200101_000000.chroma.tar.gz", old);
        let kept_new = mk("p_20261204_000000.sql.gz", old);
        let other = mk("q_20200101_000000.sql.gz", old);
        let fresh = mk("p_20261203_000000.sql.gz", SystemTime::now());
        let removed = apply_retention(
            dir.path(),
            "p",
            Duration::from_secs(30 * 24 * 3600),
            std::slice::from_ref(&kept_new),
        )
        .unwrap();
        assert_eq!(removed, vec![stale_snapshot, stale.clone()]);
        assert!(!stale.exists() && kept_new.exists() && other.exists() && fresh.exists());
    }

    #[test]
    fn the_url_gives_user_database_and_a_hidden_password() {
        let db = Database::from_url("postgresql://app%40x:p%2Fw@db:5432/assistant").unwrap();
        assert_eq!((db.user.as_str(), db.name.as_str()), ("app@x", "assistant"));
        assert_eq!(db.env(), vec!["PGPASSWORD=p/w".to_string()]);
        assert!(!format!("{db:?}").contains("p/w"));
        let db = Database::from_url("postgres://u@db").unwrap();
        assert_eq!(db.name, "u");
        assert!(db.env().is_empty());
    }

    #[tokio::test]
    async fn take_streams_the_dump_into_a_checked_private_file_and_never_overwrites() {
        use crate::runtime::fake::FakeRuntime;
        use std::os::unix::fs::PermissionsExt;
        let rt = FakeRuntime::new();
        rt.set_exec_stdout(DUMP.as_bytes());
        let dir = tempfile::tempdir().unwrap();
        let db = Database::from_url("postgresql://u:pw@db/app").unwrap();
        let day = Duration::from_secs(24 * 3600);
        let a = take_from(&rt, "c1", "p", &db, dir.path(), day, &[])
            .await
            .unwrap();
        let b = take_from(&rt, "c1", "p", &db, dir.path(), day, &[])
            .await
            .unwrap();
        assert_ne!(a.path, b.path);
        for t in [&a, &b] {
            let mode = std::fs::metadata(&t.path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            assert!(check(&t.path).await.is_ok());
        }
        assert_eq!(rt.execs()[0][0], "pg_dump");
        // Nothing but the two backups is left (no temporary file).
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);

        rt.set_exec_stdout(b"--\n-- half a dump\n");
        let failed = take_from(&rt, "c1", "p", &db, dir.path(), day, &[]).await;
        assert!(matches!(failed, Err(Error::NotADump { .. })), "{failed:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[tokio::test]
    async fn snapshot_directories_are_archived_beside_the_dump() {
        use crate::runtime::fake::FakeRuntime;
        use std::os::unix::fs::PermissionsExt;
        let rt = FakeRuntime::new();
        rt.set_exec_stdout(DUMP.as_bytes());
        let dir = tempfile::tempdir().unwrap();
        let chroma = dir.path().join("data/chroma");
        std::fs::create_dir_all(chroma.join("sub")).unwrap();
        std::fs::write(chroma.join("sub/index.bin"), b"vectors").unwrap();
        let out = dir.path().join("backups");
        let db = Database::from_url("postgresql://u@db/app").unwrap();
        let day = Duration::from_secs(24 * 3600);
        let t = take_from(&rt, "c1", "p", &db, &out, day, &[chroma])
            .await
            .unwrap();
        let stem = t.path.to_string_lossy().replace(".sql.gz", "");
        assert_eq!(
            t.snapshots,
            vec![PathBuf::from(format!("{stem}.chroma.tar.gz"))]
        );
        let archive = &t.snapshots[0];
        let mode = std::fs::metadata(archive).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut tar = tar::Archive::new(MultiGzDecoder::new(std::fs::File::open(archive).unwrap()));
        let names: Vec<String> = tar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.contains(&"chroma/sub/index.bin".to_string()),
            "{names:?}"
        );

        let missing = dir.path().join("data/nothing");
        let failed = take_from(&rt, "c1", "p", &db, &out, day, &[missing]).await;
        assert!(matches!(failed, Err(Error::Io { .. })), "{failed:?}");
    }

    #[test]
    fn dependents_of_the_database_are_found_through_migrations_and_other_services() {
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            r#"
[project]
name = "p"
[services.db]
image = "postgres:15"
[services.api]
image = "api:1"
depends_on = ["migrations"]
[services.worker]
image = "worker:1"
depends_on = ["api"]
[services.admin]
image = "admin:1"
depends_on = ["db"]
[services.web]
image = "web:1"
[services.cache]
image = "cache:1"
depends_on = ["web"]
[migrations]
service = "db"
url = "postgresql://u:p@db:5432/app"
source = "{}"
"#,
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .display()
        );
        let file = dir.path().join("berth.toml");
        std::fs::write(&file, toml).unwrap();
        let d = crate::spec::load_with_env(
            &file,
            &crate::spec::Selection::default(),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(dependents(&d, "db"), ["admin", "api", "worker"]);
    }
}
