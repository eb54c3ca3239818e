//! A backup file is data, never code (docs/design.md §12), against the stack's real
//! PostgreSQL image:
//!
//! - a dump holding `\!` (mid-line, where psql runs it all the same), `\o |cmd` or `COPY …
//!   TO PROGRAM` is refused by `berth restore` with exit 2, naming FILE:LINE, and nothing
//!   runs: each would create a marker file in the database container (shown first by
//!   feeding the same lines to psql by hand), and after berth's refusal the marker is not
//!   there, no `_restore_` database was made and the data and the app are untouched;
//! - a database named `odd=name` (which `psql -d` would read as a connection string)
//!   with data full of backslashes, quotes, `\.` and `\!` inside its COPY data and
//!   function bodies is migrated, backed up and restored to the same bytes;
//! - a backup changed after berth wrote it is not restored by the automatic revert, which
//!   ends degraded naming the file; restoring it by hand is the operator's choice, and
//!   berth says that it changed;
//! - retention deletes only the backups berth recorded: a foreign file named like a
//!   backup (read-only and immutable too) is untouched, and a recorded backup it cannot
//!   delete (immutable) is a warning, not a failed backup.
//!
//! Each test has its own project (the guard removes its containers, network and volume)
//! and keeps its backups in its temp dir.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::backup::{gunzip, printed_path};
use common::{FIXTURE, Project, docker, require_images};

const PG: &str = "berth-postgres:15";
const PASSWORD: &str = "e2e-trust-backup-pw-Hq4";
/// The database the `[migrations]` URL names: libpq reads a `-d` value holding `=` as a
/// connection string.
const ODD: &str = "odd=name";

/// PostgreSQL whose own database is `db`, an app that depends on it, and the repository's
/// migrations applied to `db`; backups in `backups`, kept for `retention`.
fn desired(db: &str, backups: &Path, retention: &str) -> String {
    format!(
        r#"
[project]
name = "{{project}}"

[rollout]
healthy_deadline = "120s"

[services.postgres]
image = "{PG}"
environment = {{ POSTGRES_USER = "assistant", POSTGRES_PASSWORD = "{PASSWORD}", POSTGRES_DB = "{db}" }}
volumes = ["{{project}}-pgdata:/var/lib/postgresql/data"]
health = {{ probe = "postgres", port = 5432, user = "assistant", password = "{PASSWORD}", database = "{db}", interval = "250ms" }}

[services.app]
image = "{FIXTURE}"
depends_on = ["postgres"]
health = {{ probe = "http", port = 8080, path = "/health", interval = "100ms" }}

[migrations]
service = "postgres"
url = "postgresql://assistant:{PASSWORD}@postgres:5432/{db}"
source = "{}"
backup = false
backup_dir = "{}"
retention = "{retention}"
"#,
        common::repo_migrations().display(),
        backups.display()
    )
}

fn project(test: &str) -> Project {
    require_images(&[PG], "scripts/build-images.sh postgres");
    Project::new(test)
}

/// One SQL command through psql in the project's postgres container on `db`, named as a
/// connection string so that `=` in it is part of the name; its unaligned output.
fn sql(p: &Project, db: &str, query: &str) -> String {
    p.psql(&format!("dbname='{}'", db.replace('\'', "\\'")), query)
}

/// Whether `path` exists in the project's postgres container.
fn in_db_container(p: &Project, path: &str) -> bool {
    docker(&["exec", &p.container("postgres"), "test", "-e", path])
        .status
        .success()
}

fn gzip(path: &Path, text: &str) {
    let mut e = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap();
}

/// Everything the test put in the database, as one hash: equal before and after a
/// round trip only if every byte came back.
fn fingerprint(p: &Project) -> String {
    sql(
        p,
        ODD,
        "SELECT md5(string_agg(id || '|' || \"to\" || '|' || body, E'\\n' ORDER BY id)) || '/' || shout() || '/' || atomic_one() FROM program",
    )
}

#[test]
fn a_dump_that_would_run_a_command_is_refused_at_its_line_and_an_odd_name_round_trips() {
    let p = project("trust-dump");
    let backups = p.dir.path().join("backups");
    p.write(&desired(ODD, &backups, "1d"));
    let f = p.file();
    let f = f.to_str().unwrap();
    let run = p.berth(&["apply", "-f", f]);
    assert_eq!(run.code, 0, "apply: {}{}", run.stdout, run.stderr);
    // The migrations reached the database named odd=name.
    assert_eq!(
        sql(&p, ODD, "SELECT to_regclass('public.users') IS NOT NULL"),
        "t"
    );

    // Honest data that looks like commands: backslashes, `\.` and `\!` in COPY data, a
    // psql command in a function body's text, a table named program with a column "to",
    // an SQL-standard function body (BEGIN ATOMIC … END, whose `;` psql does not split).
    sql(
        &p,
        ODD,
        r#"CREATE TABLE program (id int PRIMARY KEY, "to" text, body text);
           INSERT INTO program VALUES
             (1, E'back\\slash', E'\\! touch /tmp/berth-data\n\\.\nafter'),
             (2, 'it''s', '$$ /* -- \ '),
             (3, E'\t\\N', 'COPY t FROM stdin;');
           CREATE FUNCTION shout() RETURNS text LANGUAGE plpgsql
             AS $f$ BEGIN RETURN E'\\! not a command; \\o | neither'; END $f$;
           CREATE FUNCTION atomic_one() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 1; END;"#,
    );
    let before = fingerprint(&p);

    let run = p.berth(&["backup", "-f", f]);
    assert_eq!(run.code, 0, "backup: {}{}", run.stdout, run.stderr);
    let backup = printed_path(&run);
    let dump = gunzip(&backup);
    assert!(
        dump.contains("\\\\! touch /tmp/berth-data"),
        "the COPY data holds the backslashes"
    );

    // Round trip: the same bytes come back into odd=name, nothing in them ran.
    sql(&p, ODD, "DELETE FROM program; DROP FUNCTION shout()");
    let run = p.berth(&["restore", backup.to_str().unwrap(), "-f", f]);
    assert_eq!(run.code, 0, "restore: {}{}", run.stdout, run.stderr);
    assert!(
        !run.stdout.contains("not a backup berth recorded"),
        "berth wrote this one: {}",
        run.stdout
    );
    // PostgreSQL 15.20's psql knows \restrict: psql itself refuses commands too.
    assert!(
        run.stdout.contains("psql runs under \\restrict"),
        "{}",
        run.stdout
    );
    assert_eq!(fingerprint(&p), before, "the data did not come back whole");
    assert!(!in_db_container(&p, "/tmp/berth-data"));
    let kept = sql(
        &p,
        "postgres",
        "SELECT datname FROM pg_database WHERE datname LIKE 'odd=name\\_before\\_restore\\_%'",
    );
    assert_eq!(kept.lines().count(), 1, "{kept}");

    // Hostile dumps: the real one with lines that run a command, each making a marker.
    let at = dump
        .lines()
        .position(|l| l.starts_with("SET standard_conforming_strings"))
        .expect("pg_dump's header")
        + 1;
    let hostile: [(&str, &str, &str); 4] = [
        ("mid-line", "SELECT 1; \\! touch {m}", "`\\!`"),
        ("pipe", "\\o | touch {m}\nSELECT 1;", "`\\o`"),
        ("program", "COPY (SELECT 1) TO PROGRAM 'touch {m}';", "COPY"),
        (
            "in-a-body",
            "CREATE FUNCTION pwn() RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch {m}'''; END $$;\nSELECT pwn();",
            "PROGRAM",
        ),
    ];
    let app_started = p.inspect("app", "{{.State.StartedAt}}");
    for (name, lines, why) in hostile {
        // The premise: these lines run a command when psql reads them.
        let premise = format!("/tmp/premise-{name}");
        let mut psql = Command::new("docker")
            .args(["exec", "-i", &p.container("postgres")])
            .args(["psql", "-X", "-q", "-U", "assistant", "-d", "postgres"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        writeln!(
            psql.stdin.take().unwrap(),
            "{}",
            lines.replace("{m}", &premise)
        )
        .unwrap();
        psql.wait().unwrap();
        assert!(
            in_db_container(&p, &premise),
            "premise: {name:?} does not run a command through psql"
        );

        let marker = format!("/tmp/berth-{name}");
        let mut text: Vec<String> = dump.lines().map(str::to_string).collect();
        text.insert(at, lines.replace("{m}", &marker));
        let file = p.dir.path().join(format!("hostile-{name}.sql.gz"));
        gzip(&file, &(text.join("\n") + "\n"));
        let run = p.berth(&["restore", file.to_str().unwrap(), "-f", f]);
        assert_eq!(run.code, 2, "{name}: {}{}", run.stdout, run.stderr);
        let named = format!("{}:{}:", file.display(), at + 1);
        assert!(
            run.stderr.contains(&named) && run.stderr.contains(why),
            "{name}: the refusal names {named} and {why}: {}",
            run.stderr
        );
        assert!(!in_db_container(&p, &marker), "{name}: the command ran");
        assert_eq!(
            sql(
                &p,
                "postgres",
                "SELECT count(*) FROM pg_database WHERE datname LIKE 'odd=name\\_restore\\_%'"
            ),
            "0",
            "{name}: a database was made for it"
        );
        assert_eq!(fingerprint(&p), before, "{name}: the data changed");
        assert_eq!(
            p.inspect("app", "{{.State.StartedAt}}"),
            app_started,
            "{name}: the app was stopped"
        );
    }
}

/// PostgreSQL, an app that depends on the migrations, `migrations/` of the test's own
/// (so a test can add one), a backup before each migration.
fn migrating(p: &Project, version: &str, never_healthy: bool) -> String {
    let app_env = if never_healthy {
        r#", FIXTURE_NEVER_HEALTHY = "1""#
    } else {
        ""
    };
    format!(
        r#"
[project]
name = "{{project}}"

[rollout]
healthy_deadline = "120s"
min_healthy_time = "500ms"

[services.postgres]
image = "{PG}"
environment = {{ POSTGRES_USER = "assistant", POSTGRES_PASSWORD = "{PASSWORD}", POSTGRES_DB = "assistant" }}
volumes = ["{{project}}-pg:/var/lib/postgresql/data"]
health = {{ probe = "postgres", port = 5432, user = "assistant", password = "{PASSWORD}", database = "assistant", interval = "250ms" }}

[services.app]
image = "{FIXTURE}"
depends_on = ["migrations"]
environment = {{ VERSION = "{version}"{app_env} }}
health = {{ probe = "http", port = 8080, path = "/health", interval = "100ms", healthy_deadline = "10s" }}

[migrations]
service = "postgres"
url = "postgresql://assistant:{PASSWORD}@postgres:5432/assistant"
source = "migrations"
backup = true
backup_dir = "{}"
"#,
        p.dir.path().join("backups").display()
    )
}

#[test]
fn a_backup_changed_after_berth_wrote_it_is_not_restored_by_the_revert() {
    let p = project("trust-revert");
    let migrations = p.dir.path().join("migrations");
    common::copy_repo_migrations(&migrations);
    p.write(&migrating(&p, "1", false));
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    sql(
        &p,
        "assistant",
        "INSERT INTO users (email) VALUES ('kept@example.org')",
    );
    let h = p.history();
    assert!(
        h[0]["backup_sha256"]
            .as_str()
            .is_some_and(|s| s.len() == 64),
        "the backup's hash is recorded: {}",
        h[0]
    );

    // 0004 has no way back, the app never gets healthy: the revert needs the backup
    // taken before 0004. The test changes that file while the app's gate runs.
    std::fs::write(
        migrations.join("0004_no_way_back.up.sql"),
        "CREATE TABLE e2e_no_way_back (id int);\n",
    )
    .unwrap();
    p.write(&migrating(&p, "2", true));
    let mut child = p.spawn(&["apply"]);
    let stdout = child.stdout.take().unwrap();
    let mut seen = String::new();
    let mut lines = BufReader::new(stdout).lines();
    let mut backup = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen += &line;
        seen += "\n";
        if let Some(rest) = line.trim().strip_prefix("migrations: backup ") {
            backup = Some(PathBuf::from(rest.rsplit_once(" (").unwrap().0));
            break;
        }
    }
    let backup = backup.unwrap_or_else(|| panic!("no backup before 0004: {seen}"));
    // The attack: a dump with other data, a perfectly good dump, at the recorded path.
    let tampered = gunzip(&backup).replace("kept@example.org", "evil@example.org");
    assert!(
        tampered.contains("evil@example.org"),
        "premise: the row is in the dump"
    );
    gzip(&backup, &tampered);
    for line in lines {
        seen += &line.unwrap();
        seen += "\n";
    }
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let code = child.wait().unwrap().code();
    let all = format!("{seen}{stderr}");
    assert_eq!(code, Some(4), "degraded: {all}");
    assert!(
        all.contains(&backup.display().to_string()) && all.contains("changed after berth wrote it"),
        "the reason names the file and that it changed: {all}"
    );
    assert!(
        !all.contains("restored from"),
        "the changed file was restored: {all}"
    );
    // Nothing of the file reached the database: 0004's table is still there (the schema
    // was not undone), no evil row; the containers are back on generation 1.
    assert_eq!(
        sql(
            &p,
            "assistant",
            "SELECT to_regclass('public.e2e_no_way_back') IS NOT NULL"
        ),
        "t"
    );
    assert_eq!(
        sql(&p, "assistant", "SELECT string_agg(email, ',') FROM users"),
        "kept@example.org"
    );
    let env = p.environment("app");
    assert!(env.contains("VERSION=1"), "{env}");
    let h = p.history();
    assert_eq!(h[1]["outcome"], "failed", "{}", h[1]);
    let reason = h[1]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&backup.display().to_string())
            && reason.contains("changed after berth wrote it"),
        "{reason}"
    );

    // By hand it is the operator's choice: restored, and berth says it changed.
    let run = p.berth(&["restore", backup.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("changed after berth wrote it")
            && run.stdout.contains("restoring it as asked"),
        "{}",
        run.stdout
    );
    assert_eq!(
        sql(&p, "assistant", "SELECT string_agg(email, ',') FROM users"),
        "evil@example.org"
    );
    // And a dump berth never recorded is restored too, saying so.
    let foreign = p.dir.path().join("foreign.sql.gz");
    gzip(
        &foreign,
        &tampered.replace("evil@example.org", "by-hand@example.org"),
    );
    let run = p.berth(&["restore", foreign.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("not a backup berth recorded writing"),
        "{}",
        run.stdout
    );
}

/// Clears the immutable flag of what a test made immutable, also when it fails (or the
/// temp dir could not be removed).
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(&mut self, path: &Path) {
        let ok = Command::new("chattr")
            .arg("+i")
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "premise: chattr +i must work on {} (root, a filesystem with the flag)",
            path.display()
        );
        self.0.push(path.to_path_buf());
        assert!(
            std::fs::remove_file(path).is_err(),
            "premise: {} cannot be deleted",
            path.display()
        );
    }

    fn clear(&mut self, path: &Path) {
        let _ = Command::new("chattr").arg("-i").arg(path).status();
        self.0.retain(|p| p != path);
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = Command::new("chattr").arg("-i").arg(p).status();
        }
    }
}

#[test]
fn retention_deletes_only_recorded_backups_and_an_undeletable_one_is_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let p = project("trust-retention");
    let backups = p.dir.path().join("backups");
    // Kept for 2 s: what was taken before the last sleep is due.
    p.write(&desired("assistant", &backups, "2s"));
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let mut immutable = Immutable(Vec::new());

    // Files berth never wrote, named like its backups, old: one plain, one read-only and
    // immutable.
    std::fs::create_dir_all(&backups).unwrap();
    let plain = backups.join(format!("{}_20200101_000000.sql.gz", p.name));
    let locked = backups.join(format!("{}_20200102_000000.sql.gz", p.name));
    for f in [&plain, &locked] {
        std::fs::write(f, b"not berth's").unwrap();
        std::fs::File::options()
            .write(true)
            .open(f)
            .unwrap()
            .set_modified(std::time::SystemTime::UNIX_EPOCH)
            .unwrap();
    }
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o444)).unwrap();
    immutable.set(&locked);

    let run = p.berth(&["backup"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let first = printed_path(&run);
    let run = p.berth(&["backup"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let stuck = printed_path(&run);
    immutable.set(&stuck);
    std::thread::sleep(Duration::from_secs(3));

    // Both recorded backups are due; one cannot go. The backup succeeds all the same.
    let run = p.berth(&["backup"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let third = printed_path(&run);
    assert!(
        run.stdout
            .contains(&format!("retention: removed {}", first.display())),
        "{}",
        run.stdout
    );
    assert!(!first.exists());
    assert!(
        run.stderr.contains("warning")
            && run
                .stderr
                .contains(&format!("could not delete {}", stuck.display())),
        "{}",
        run.stderr
    );
    assert!(stuck.exists() && third.exists());
    for f in [&plain, &locked] {
        assert_eq!(
            std::fs::read(f).unwrap(),
            b"not berth's",
            "{} was touched",
            f.display()
        );
        assert!(
            !run.stdout.contains(&f.display().to_string()),
            "{}",
            run.stdout
        );
    }

    // Once it can go, the next backup's retention deletes it.
    immutable.clear(&stuck);
    std::thread::sleep(Duration::from_secs(3));
    let run = p.berth(&["backup"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(!stuck.exists() && !third.exists(), "{}", run.stdout);
    assert!(plain.exists() && locked.exists());
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
}
