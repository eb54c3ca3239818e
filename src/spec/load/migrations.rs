//! The `[migrations]` block (docs/design.md §5): which service is the database, how to
//! reach it, and the directory of sqlx migrations, read once here so that a missing,
//! unreadable or misnamed migration is an invalid desired state, not a failed deploy.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::Source;
use super::preflight::check_database_url;
use super::raw::{RawMigrations, S};
use super::resolve::Resolver;
use crate::spec::{Migrations, duration};

/// How long backups are kept when the block does not say (the runbook keeps 30 days).
const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// A retention: a duration as elsewhere, or whole days (`30d`), the unit backups are
/// counted in.
fn parse_retention(text: &str) -> Result<Duration, String> {
    if let Some(days) = text.trim().strip_suffix('d')
        && !days.is_empty()
        && days.bytes().all(|b| b.is_ascii_digit())
    {
        return days
            .parse::<u64>()
            .ok()
            .and_then(|d| d.checked_mul(24 * 3600))
            .map(Duration::from_secs)
            .ok_or_else(|| format!("retention {text:?} is too large"));
    }
    duration::parse(text).map_err(|e| format!("{e}; or whole days, e.g. \"30d\""))
}

impl Resolver<'_> {
    /// The `[migrations]` block, once across all files. `defined` holds every service
    /// name, `active` those that run with this selection.
    /// The `[migrations]` block, once across all files. `defined` holds every service
    /// name, `active` those that run with this selection.
    pub(super) fn migrations(
        &mut self,
        sources: &[Source],
        defined: &BTreeMap<String, PathBuf>,
        active: &BTreeSet<&str>,
    ) -> Option<Migrations> {
        let (src, m) = self.migrations_block(sources)?;
        let raw = m.get_ref();
        let service = self.migrations_service(src, raw, defined, active);
        let url = self.migrations_url(src, raw);
        let source = self.migrations_runner(src, m);
        let backup_dir = self.migrations_backup_dir(src, m);
        let retention = self.migrations_retention(src, raw);
        let lock_timeout = self.migrations_lock_timeout(src, raw);
        let snapshot = self.migrations_snapshots(src, raw);
        let (source, source_hash, job) = source?;
        Some(Migrations {
            service,
            url,
            source,
            source_hash,
            backup: raw.backup.unwrap_or(true),
            backup_dir,
            retention,
            snapshot,
            lock_timeout,
            job,
        })
    }

    fn migrations_block<'s>(
        &mut self,
        sources: &'s [Source],
    ) -> Option<(&'s Source, &'s Spanned<RawMigrations>)> {
        let mut found: Option<(&Source, &Spanned<RawMigrations>)> = None;
        for src in sources {
            if let Some(m) = &src.raw.migrations {
                if let Some((first, _)) = found {
                    let msg = format!(
                        "[migrations] is already defined in {}",
                        first.path.display()
                    );
                    self.err(src, m.span(), msg);
                    continue;
                }
                found = Some((src, m));
            }
        }
        found
    }

    /// The database service: defined, and enabled with this selection.
    fn migrations_service(
        &mut self,
        src: &Source,
        raw: &RawMigrations,
        defined: &BTreeMap<String, PathBuf>,
        active: &BTreeSet<&str>,
    ) -> String {
        let service = self.string(src, &raw.service).unwrap_or_default();
        if !defined.contains_key(&service) {
            let msg = format!("migrations: the database service {service:?} is not defined");
            self.err(src, raw.service.span(), msg);
        } else if !active.contains(service.as_str()) {
            let msg = format!(
                "migrations: the database service {service:?} is not enabled (its profiles are off, or --exclude leaves it out)"
            );
            self.err(src, raw.service.span(), msg);
        }
        service
    }

    /// The database URL, a secret, and usable.
    fn migrations_url(&mut self, src: &Source, raw: &RawMigrations) -> String {
        let url = self.string(src, &raw.url).unwrap_or_default();
        // Registered before any check, so no message can show it.
        self.secret(&Some(url.clone()));
        self.secret_if_looks_so("url", &url);
        if let Err(why) = check_database_url(&url) {
            self.err(
                src,
                raw.url.span(),
                format!("migrations: url is not a usable PostgreSQL URL: {why}"),
            );
        }
        url
    }

    /// What runs the migrations: a directory of sqlx migrations (its path and hash) or a
    /// job, exactly one of them.
    fn migrations_runner(
        &mut self,
        src: &Source,
        m: &Spanned<RawMigrations>,
    ) -> Option<(PathBuf, String, Option<crate::spec::MigrationJob>)> {
        let raw = m.get_ref();
        match (&raw.source, &raw.job) {
            (Some(v), None) => self.migration_source(src, v),
            (None, Some(job)) => self
                .migration_job(src, job)
                .map(|j| (PathBuf::new(), String::new(), Some(j))),
            (Some(v), Some(_)) => {
                self.err(
                    src,
                    v.span(),
                    "migrations: give either source (a directory of sqlx migrations) or [migrations.job], not both",
                );
                None
            }
            (None, None) => {
                self.err(
                    src,
                    m.span(),
                    "migrations: missing source (a directory of sqlx migrations) or [migrations.job] (a migration job image)",
                );
                None
            }
        }
    }

    fn migrations_backup_dir(&mut self, src: &Source, m: &Spanned<RawMigrations>) -> PathBuf {
        let raw = m.get_ref();
        match &raw.backup_dir {
            Some(v) => self
                .string(src, v)
                .map(|rel| self.locate(src, rel))
                .and_then(|p| self.confine(src, v.span(), "backup_dir", p))
                .map(|c| c.path)
                .unwrap_or_default(),
            None => {
                let p = self.locate(src, "data/backups");
                self.confine(src, m.span(), "backup_dir (default data/backups)", p)
                    .map(|c| c.path)
                    .unwrap_or_default()
            }
        }
    }

    fn migrations_retention(&mut self, src: &Source, raw: &RawMigrations) -> Duration {
        match &raw.retention {
            Some(v) => match self.string(src, v).map(|t| parse_retention(&t)) {
                Some(Ok(d)) if !d.is_zero() => d,
                Some(Ok(_)) => {
                    self.err(src, v.span(), "migrations: retention must be above zero");
                    DEFAULT_RETENTION
                }
                Some(Err(msg)) => {
                    self.err(src, v.span(), format!("migrations: {msg}"));
                    DEFAULT_RETENTION
                }
                None => DEFAULT_RETENTION,
            },
            None => DEFAULT_RETENTION,
        }
    }

    fn migrations_lock_timeout(&mut self, src: &Source, raw: &RawMigrations) -> Duration {
        match self.duration(src, &raw.lock_timeout) {
            Some(d) if d.is_zero() => {
                let at = raw.lock_timeout.as_ref().expect("given").span();
                self.err(
                    src,
                    at,
                    "migrations: lock_timeout must be above zero (0 would wait forever)",
                );
                crate::spec::DEFAULT_LOCK_TIMEOUT
            }
            Some(d) => d,
            None => crate::spec::DEFAULT_LOCK_TIMEOUT,
        }
    }

    /// The snapshot directories: confined, and named apart (their archives share the
    /// backup's name).
    fn migrations_snapshots(&mut self, src: &Source, raw: &RawMigrations) -> Vec<PathBuf> {
        let mut snapshot: Vec<PathBuf> = Vec::new();
        for v in &raw.snapshot {
            let Some(rel) = self.string(src, v) else {
                continue;
            };
            let located = self.locate(src, &rel);
            let Some(path) = self
                .confine(src, v.span(), "snapshot directory", located)
                .map(|c| c.path)
            else {
                continue;
            };
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            match name {
                None => self.err(
                    src,
                    v.span(),
                    format!("migrations: snapshot {rel:?} names no directory"),
                ),
                Some(n) if snapshot.iter().any(|p| p.file_name() == path.file_name()) => {
                    self.err(
                        src,
                        v.span(),
                        format!(
                            "migrations: two snapshot directories are named {n:?}; their archives would share a name"
                        ),
                    )
                }
                Some(_) => snapshot.push(path),
            }
        }
        snapshot
    }

    /// `[migrations.job]`, resolved; `None` after reporting what is wrong with it.
    fn migration_job(
        &mut self,
        src: &Source,
        job: &Spanned<super::raw::RawJob>,
    ) -> Option<crate::spec::MigrationJob> {
        use crate::spec::MigrationJob;
        let raw = job.get_ref();
        let image = self.string(src, &raw.image).unwrap_or_default();
        if image.trim().is_empty() {
            self.err(src, raw.image.span(), "migrations: job image is empty");
        }
        let upgrade = match &raw.upgrade {
            Some(v) => {
                let cmd = self.list(src, v);
                if cmd.is_empty() {
                    self.err(src, v.span(), "migrations: job upgrade is empty");
                }
                cmd
            }
            None => vec!["alembic".into(), "upgrade".into(), "head".into()],
        };
        let downgrade = match &raw.downgrade {
            Some(v) => {
                let cmd = self.list(src, v);
                if !cmd.iter().any(|a| a.contains(MigrationJob::REVISION)) {
                    self.err(
                        src,
                        v.span(),
                        format!(
                            "migrations: job downgrade must name the target revision as {} (e.g. \"alembic downgrade {}\")",
                            MigrationJob::REVISION,
                            MigrationJob::REVISION
                        ),
                    );
                }
                Some(cmd)
            }
            None => None,
        };
        let mut environment = BTreeMap::new();
        for (k, v) in &raw.environment {
            let value = self.scalar(src, v);
            self.secret_if_looks_so(k, &value);
            environment.insert(k.clone(), value);
        }
        let version_table = match &raw.version_table {
            Some(v) => {
                let t = self.string(src, v).unwrap_or_default();
                let ok = !t.is_empty()
                    && t.split('.').count() <= 2
                    && t.split('.').all(|p| {
                        !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    });
                if !ok {
                    self.err(
                        src,
                        v.span(),
                        format!("migrations: job version_table {t:?} is not a table name (letters, digits, _; optionally schema.table)"),
                    );
                }
                t
            }
            None => "alembic_version".into(),
        };
        let timeout = match self.duration(src, &raw.timeout) {
            Some(d) if d.is_zero() => {
                let at = raw.timeout.as_ref().expect("given").span();
                self.err(src, at, "migrations: job timeout must be above zero");
                crate::spec::DEFAULT_JOB_TIMEOUT
            }
            Some(d) => d,
            None => crate::spec::DEFAULT_JOB_TIMEOUT,
        };
        Some(MigrationJob {
            image,
            upgrade,
            downgrade,
            environment,
            version_table,
            timeout,
        })
    }

    /// The migrations directory (absolute) and the hash of what sqlx reads from it;
    /// `None` after reporting why it cannot be used.
    fn migration_source(
        &mut self,
        src: &Source,
        v: &S,
    ) -> Option<(PathBuf, String, Option<crate::spec::MigrationJob>)> {
        let rel = self.string(src, v)?;
        let located = self.locate(src, &rel);
        let path = self
            .confine(src, v.span(), "migrations source", located)?
            .path;
        if !path.is_dir() {
            let why = match std::fs::metadata(&path) {
                Ok(_) => "is not a directory".to_string(),
                Err(e) => format!("cannot be read: {e}"),
            };
            self.err(
                src,
                v.span(),
                format!("migrations: source {} {why}", path.display()),
            );
            return None;
        }
        match crate::migrate::resolve(&path) {
            Ok(list) if list.is_empty() => {
                self.err(
                    src,
                    v.span(),
                    format!(
                        "migrations: source {} holds no migrations (NNNN_name.up.sql and NNNN_name.down.sql)",
                        path.display()
                    ),
                );
                None
            }
            Ok(list) => {
                let hash = crate::migrate::source_hash(&list);
                Some((path, hash, None))
            }
            Err(e) => {
                self.err(src, v.span(), format!("migrations: {e}"));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{DesiredState, Selection, load_with_env};
    use std::collections::HashMap;

    const STACK: &str = r#"
[project]
name = "p"

[services.db]
image = "postgres:15"
ports = ["127.0.0.1:5499:5432"]

[services.app]
image = "app:1"
depends_on = ["migrations"]

[migrations]
service = "db"
url = "postgresql://app:${DB_PASSWORD}@db:5432/app"
source = "schema"
"#;

    /// `STACK` in a temp dir with two migrations under `schema/`.
    fn stack() -> (tempfile::TempDir, DesiredState) {
        let dir = tempfile::tempdir().unwrap();
        let schema = dir.path().join("schema");
        std::fs::create_dir(&schema).unwrap();
        std::fs::write(schema.join("0001_one.up.sql"), "CREATE TABLE one (id int);").unwrap();
        std::fs::write(schema.join("0001_one.down.sql"), "DROP TABLE one;").unwrap();
        std::fs::write(schema.join("0002_two.up.sql"), "CREATE TABLE two (id int);").unwrap();
        std::fs::write(dir.path().join("berth.toml"), STACK).unwrap();
        let d = reload(&dir);
        (dir, d)
    }

    fn reload(dir: &tempfile::TempDir) -> DesiredState {
        let env: HashMap<String, String> =
            [("DB_PASSWORD".to_string(), "db-secret-4242".to_string())].into();
        load_with_env(&dir.path().join("berth.toml"), &Selection::default(), &env).unwrap()
    }

    #[test]
    fn a_migrations_block_resolves_with_its_defaults() {
        let (dir, d) = stack();
        let m = d.migrations.as_ref().unwrap();
        assert_eq!(m.service, "db");
        assert_eq!(m.url, "postgresql://app:db-secret-4242@db:5432/app");
        let root = dir.path().canonicalize().unwrap();
        assert_eq!(m.source.canonicalize().unwrap(), root.join("schema"));
        assert!(m.backup);
        assert!(m.backup_dir.ends_with("data/backups"));
        assert_eq!(m.retention, DEFAULT_RETENTION);
    }

    #[test]
    fn the_migrations_url_is_a_secret_fresh_and_from_stored_json() {
        let (_dir, d) = stack();
        assert_eq!(d.redactor().text("pw db-secret-4242"), "pw <redacted>");
        let back: DesiredState = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        let r = back.redactor();
        assert_eq!(r.text("pw db-secret-4242"), "pw <redacted>");
        assert!(!r.text(&d.migrations.unwrap().url).contains("db-secret"));
    }

    #[test]
    fn a_dependent_of_migrations_starts_after_the_database() {
        let (_dir, d) = stack();
        assert_eq!(d.levels(), vec![vec!["db"], vec!["app"]]);
    }

    #[test]
    fn an_edited_migration_changes_the_resolved_hash_and_no_block_keeps_old_hashes() {
        let (dir, d) = stack();
        let before = crate::hash::resolved_hash(&d);
        assert_eq!(before, crate::hash::resolved_hash(&reload(&dir)));
        let up = dir.path().join("schema/0002_two.up.sql");
        std::fs::write(&up, "CREATE TABLE two (id bigint);").unwrap();
        assert_ne!(before, crate::hash::resolved_hash(&reload(&dir)));

        let mut without = d.clone();
        without.migrations = None;
        let json = serde_json::to_string(&without).unwrap();
        assert!(!json.contains(r#""migrations":"#), "{json}");
    }

    /// `STACK` with a `[migrations.job]` instead of `source`, plus `extra` in the job.
    fn with_job(extra: &str) -> Result<DesiredState, String> {
        let dir = tempfile::tempdir().unwrap();
        let text = STACK.replace(
            "source = \"schema\"\n",
            &format!("\n[migrations.job]\nimage = \"app-migrate:1\"\n{extra}"),
        );
        std::fs::write(dir.path().join("berth.toml"), text).unwrap();
        let env: HashMap<String, String> = [
            ("DB_PASSWORD".to_string(), "db-secret-4242".to_string()),
            ("JOB_TOKEN".to_string(), "job-secret-77".to_string()),
        ]
        .into();
        load_with_env(&dir.path().join("berth.toml"), &Selection::default(), &env)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_migration_job_resolves_with_alembics_defaults_and_keeps_its_secrets() {
        let d =
            with_job("environment = { API_TOKEN = \"${JOB_TOKEN}\", LOG = \"info\" }\n").unwrap();
        let m = d.migrations.as_ref().unwrap();
        let job = m.job.as_ref().unwrap();
        assert_eq!(job.image, "app-migrate:1");
        assert_eq!(job.upgrade, ["alembic", "upgrade", "head"]);
        assert_eq!(job.downgrade, None);
        assert_eq!(job.version_table, "alembic_version");
        assert_eq!(job.environment["API_TOKEN"], "job-secret-77");
        // The job's secret stays hidden, also from the stored generation's JSON.
        let back: DesiredState = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back.redactor().text("t=job-secret-77"), "t=<redacted>");
        assert_eq!(back.migrations.unwrap().job.unwrap(), *job);
        assert_eq!(d.levels(), vec![vec!["db"], vec!["app"]]);
    }

    #[test]
    fn a_bad_migration_job_is_refused_at_its_key() {
        let e = with_job("downgrade = \"alembic downgrade -1\"\n").unwrap_err();
        assert!(
            e.contains("berth.toml:")
                && e.contains("job downgrade must name the target revision as {revision}"),
            "{e}"
        );
        let e = with_job("version_table = \"x; DROP TABLE users\"\n").unwrap_err();
        assert!(e.contains("is not a table name"), "{e}");
        let e = with_job("upgrade = []\n").unwrap_err();
        assert!(e.contains("job upgrade is empty"), "{e}");
        let e = with_job("colour = \"blue\"\n").unwrap_err();
        assert!(e.contains("colour"), "{e}");
        // Both a source and a job, or neither.
        let dir = tempfile::tempdir().unwrap();
        let both = STACK.replace(
            "source = \"schema\"\n",
            "source = \"schema\"\n[migrations.job]\nimage = \"m:1\"\n",
        );
        std::fs::write(dir.path().join("berth.toml"), both).unwrap();
        let e = load_with_env(
            &dir.path().join("berth.toml"),
            &Selection::default(),
            &[("DB_PASSWORD".to_string(), "x".to_string())].into(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not both"), "{e}");
        let neither = STACK.replace("source = \"schema\"\n", "");
        std::fs::write(dir.path().join("berth.toml"), neither).unwrap();
        let e = load_with_env(
            &dir.path().join("berth.toml"),
            &Selection::default(),
            &[("DB_PASSWORD".to_string(), "x".to_string())].into(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("missing source"), "{e}");
    }

    #[test]
    fn a_migration_jobs_timeout_is_a_duration_thirty_minutes_unless_said() {
        let job = |extra: &str| with_job(extra).map(|d| d.migrations.unwrap().job.unwrap());
        assert_eq!(
            job("").unwrap().timeout,
            std::time::Duration::from_secs(30 * 60)
        );
        assert_eq!(
            job("timeout = \"3s\"\n").unwrap().timeout,
            std::time::Duration::from_secs(3)
        );
        for (bad, why) in [
            ("timeout = \"0s\"\n", "above zero"),
            ("timeout = \"10\"\n", "unit"),
            ("timeout = \"9000h\"\n", "longer than a year"),
        ] {
            let e = job(bad).unwrap_err();
            assert!(e.contains("berth.toml:") && e.contains(why), "{bad}: {e}");
        }
        // At its default it stays out of the stored JSON (older desired states keep their
        // hashes).
        let stored = serde_json::to_value(job("").unwrap()).unwrap();
        assert!(stored.get("timeout").is_none(), "{stored}");
    }

    #[test]
    fn retention_takes_days_and_durations() {
        assert_eq!(parse_retention("30d"), Ok(DEFAULT_RETENTION));
        assert_eq!(parse_retention("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert!(parse_retention("30").unwrap_err().contains("30d"));
        assert!(parse_retention("99999999999999999999d").is_err());
    }

    #[test]
    fn snapshot_directories_resolve_beside_the_file_and_need_distinct_names() {
        let (dir, d) = stack();
        assert!(d.migrations.unwrap().snapshot.is_empty());
        let file = dir.path().join("berth.toml");
        std::fs::write(&file, format!("{STACK}snapshot = [\"data/chroma\"]\n")).unwrap();
        let m = reload(&dir).migrations.unwrap();
        assert_eq!(
            m.snapshot,
            vec![crate::spec::load::parse::normalize(
                &dir.path().join("data/chroma")
            )]
        );

        std::fs::write(
            &file,
            format!("{STACK}snapshot = [\"data/chroma\", \"other/chroma\"]\n"),
        )
        .unwrap();
        let env: HashMap<String, String> = [("DB_PASSWORD".to_string(), "x".to_string())].into();
        let err = load_with_env(&file, &Selection::default(), &env).unwrap_err();
        assert!(
            err.to_string().contains("two snapshot directories"),
            "{err}"
        );
    }
}
