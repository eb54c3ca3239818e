//! The `[migrations]` block (DESIGN.md semantic 5): which service is the database, how to
//! reach it, and the directory of sqlx migrations, read once here so that a missing,
//! unreadable or misnamed migration is an invalid desired state, not a failed deploy.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::Source;
use super::parse::normalize;
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
    pub(super) fn migrations(
        &mut self,
        sources: &[Source],
        defined: &BTreeMap<String, PathBuf>,
        active: &BTreeSet<&str>,
    ) -> Option<Migrations> {
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
        let (src, m) = found?;
        let raw = m.get_ref();

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

        let source = self.migration_source(src, &raw.source);

        let backup_dir = match &raw.backup_dir {
            Some(v) => self
                .string(src, v)
                .map(|rel| normalize(&src.dir.join(rel)))
                .unwrap_or_default(),
            None => normalize(&src.dir.join("data/backups")),
        };
        let retention = match &raw.retention {
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
        };

        let mut snapshot: Vec<PathBuf> = Vec::new();
        for v in &raw.snapshot {
            let Some(rel) = self.string(src, v) else {
                continue;
            };
            let path = normalize(&src.dir.join(&rel));
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

        let (source, source_hash) = source?;
        Some(Migrations {
            service,
            url,
            source,
            source_hash,
            backup: raw.backup.unwrap_or(true),
            backup_dir,
            retention,
            snapshot,
        })
    }

    /// The migrations directory (absolute) and the hash of what sqlx reads from it;
    /// `None` after reporting why it cannot be used.
    fn migration_source(&mut self, src: &Source, v: &S) -> Option<(PathBuf, String)> {
        let rel = self.string(src, v)?;
        let path = normalize(&src.dir.join(&rel));
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
                Some((path, hash))
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
        assert_eq!(m.snapshot, vec![normalize(&dir.path().join("data/chroma"))]);

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
