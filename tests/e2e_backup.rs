//! Backups against the stack's real PostgreSQL image: `berth backup` writes a private,
//! complete, never-overwritten dump and applies retention only after a success; `berth
//! restore` refuses a truncated or foreign file touching nothing, and round-trips the data
//! while stopping and restarting the services that depend on the database, keeping the
//! replaced database under its `_before_restore_` name.
//!
//! The stack (postgres on a free loopback port, an app that depends on it, one that does
//! not) is converged by `berth apply` under a project name of the test's own; the
//! [`Project`] guard removes its containers, network and volume, also on failure. Backup
//! files live in the test's temp dir.

mod common;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::backup::{gunzip, printed_path};
use common::{Project, Run, free_port, repo_migrations, require_images};

const PG: &str = "berth-postgres:15";
const PASSWORD: &str = "e2e-backup-pw-Qx7f";
const TRAILER: &str = "-- PostgreSQL database dump complete";

/// The desired state: `url_db` is the database the `[migrations]` URL names. `backup =
/// false`: the converge takes no backup of its own before migrating (that one is
/// `e2e_migrations_converge`'s), so `berth backup` is the only writer of `backup_dir` here.
fn desired(port: u16, backups: &Path, url_db: &str) -> String {
    format!(
        r#"
[project]
name = "{{project}}"

[rollout]
healthy_deadline = "180s"

[services.postgres]
image = "{PG}"
ports = ["127.0.0.1:{port}:5432"]
environment = {{ POSTGRES_USER = "assistant", POSTGRES_PASSWORD = "${{E2E_BACKUP_PASSWORD}}", POSTGRES_DB = "assistant" }}
volumes = ["{{project}}-pgdata:/var/lib/postgresql/data"]
health = {{ probe = "postgres", port = 5432, user = "assistant", password = "${{E2E_BACKUP_PASSWORD}}", database = "assistant", interval = "250ms" }}

[services.app]
image = "berth-fixture:test"
depends_on = ["postgres"]
health = {{ probe = "http", port = 8080, path = "/health", interval = "100ms" }}

[services.other]
image = "berth-fixture:test"
health = {{ probe = "http", port = 8080, path = "/health", interval = "100ms" }}

[migrations]
service = "postgres"
url = "postgresql://assistant:${{E2E_BACKUP_PASSWORD}}@postgres:5432/{url_db}"
source = "{}"
backup = false
backup_dir = "{}"
retention = "1d"
snapshot = ["data/chroma"]
"#,
        repo_migrations().display(),
        backups.display()
    )
}

/// berth with the password in its environment; it must never print it.
fn berth(p: &Project, args: &[&str]) -> Run {
    let run = p.berth_env(args, &[("E2E_BACKUP_PASSWORD", PASSWORD)]);
    assert!(
        !run.stdout.contains(PASSWORD) && !run.stderr.contains(PASSWORD),
        "berth {args:?} printed the password"
    );
    run
}

fn emails(p: &Project) -> String {
    p.psql(
        "assistant",
        "SELECT string_agg(email, ',' ORDER BY email) FROM users",
    )
}

/// The backups of the project in `dir`, by name.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn backup_then_restore_round_trips_the_data_and_refuses_a_bad_file() {
    require_images(&[PG], "scripts/build-images.sh");
    let p = Project::new("backup");
    let backups = p.dir.path().join("backups");
    let port = free_port();
    p.write(&desired(port, &backups, "assistant"));
    let f = p.file();
    let f = f.to_str().unwrap();

    let run = berth(&p, &["apply", "-f", f]);
    assert_eq!(run.code, 0, "apply: {}{}", run.stdout, run.stderr);
    let run = berth(&p, &["migrate", "apply", "-f", f]);
    assert_eq!(run.code, 0, "migrate apply: {}{}", run.stdout, run.stderr);
    p.psql(
        "assistant",
        "INSERT INTO users (email) VALUES ('kept@example.org')",
    );

    // A file named like an old backup of this project that berth never wrote, another
    // project's, and a failed backup: a failed dump leaves no file behind, and retention
    // deletes only backups berth recorded writing (tests/e2e_trust_backup.rs has one
    // that is due).
    std::fs::create_dir_all(&backups).unwrap();
    let old = backups.join(format!("{}_20200101_000000.sql.gz", p.name));
    let foreign = backups.join("someone-else_20200101_000000.sql.gz");
    let long_ago = SystemTime::now() - Duration::from_secs(40 * 24 * 3600);
    for path in [&old, &foreign] {
        std::fs::write(path, b"old").unwrap();
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
    }
    let bad = p.dir.path().join("bad-db.toml");
    std::fs::write(
        &bad,
        desired(port, &backups, "no_such_db").replace("{project}", &p.name),
    )
    .unwrap();
    let run = berth(&p, &["backup", "-f", bad.to_str().unwrap()]);
    assert_eq!(run.code, 1, "a dump of a missing database must fail");
    assert!(run.stderr.contains("pg_dump"), "{}", run.stderr);
    assert_eq!(
        listing(&backups),
        vec![
            format!("{}_20200101_000000.sql.gz", p.name),
            "someone-else_20200101_000000.sql.gz".to_string()
        ],
        "a failed backup left a file or applied retention"
    );

    // A data directory to snapshot beside the dump (the runbook's data/chroma).
    let chroma = p.dir.path().join("data/chroma");
    std::fs::create_dir_all(chroma.join("seg")).unwrap();
    std::fs::write(chroma.join("seg/index.bin"), b"vectors-e2e").unwrap();

    // A backup: private, complete, with the row; the files berth did not write stay.
    let run = berth(&p, &["backup", "-f", f]);
    assert_eq!(run.code, 0, "backup: {}{}", run.stdout, run.stderr);
    let first = printed_path(&run);
    assert_eq!(first.parent().unwrap(), backups);
    let name = first.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!("{}_", p.name)) && name.ends_with(".sql.gz"),
        "{name}"
    );
    let mode = std::fs::metadata(&first).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", first.display());
    let dump = gunzip(&first);
    assert!(dump.contains(TRAILER), "no trailer in the dump");
    assert!(
        dump.contains("kept@example.org"),
        "the row is not in the dump"
    );
    assert!(old.exists(), "retention removed a file berth did not write");
    assert!(foreign.exists(), "retention removed another project's file");
    assert!(!run.stdout.contains("retention: removed"), "{}", run.stdout);
    let archive = PathBuf::from(first.to_string_lossy().replace(".sql.gz", ".chroma.tar.gz"));
    assert!(
        run.stdout
            .contains(&format!("snapshot: {}", archive.display())),
        "{}",
        run.stdout
    );
    let mode = std::fs::metadata(&archive).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", archive.display());
    let mut tar = tar::Archive::new(flate2::read::MultiGzDecoder::new(
        std::fs::File::open(&archive).unwrap(),
    ));
    let mut found = false;
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap() == Path::new("chroma/seg/index.bin") {
            let mut body = String::new();
            entry.read_to_string(&mut body).unwrap();
            found = body == "vectors-e2e";
        }
    }
    assert!(
        found,
        "chroma/seg/index.bin is not in {}",
        archive.display()
    );

    // A second backup right away (likely the same second) never overwrites the first.
    let before = std::fs::read(&first).unwrap();
    let run = berth(&p, &["backup", "-f", f]);
    assert_eq!(run.code, 0, "second backup: {}{}", run.stdout, run.stderr);
    let second = printed_path(&run);
    assert_ne!(first, second);
    assert_eq!(
        std::fs::read(&first).unwrap(),
        before,
        "the first was changed"
    );
    assert!(gunzip(&second).contains(TRAILER));

    // The row goes; the app runs.
    p.psql("assistant", "DELETE FROM users");
    assert_eq!(emails(&p), "");
    let app_id = p.id("app").unwrap();
    let app_started = p.inspect("app", "{{.State.StartedAt}}");
    let other_started = p.inspect("other", "{{.State.StartedAt}}");

    // A truncated dump and a foreign file are refused, nothing touched.
    let bytes = std::fs::read(&first).unwrap();
    let cut = p.dir.path().join("cut.sql.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let not_gz = p.dir.path().join("notes.sql.gz");
    std::fs::write(&not_gz, "SELECT 1;\n").unwrap();
    for file in [&cut, &not_gz] {
        let run = berth(&p, &["restore", file.to_str().unwrap(), "-f", f]);
        assert_eq!(run.code, 2, "restore of {}", file.display());
        assert!(
            run.stderr.contains(file.to_str().unwrap()),
            "the refusal does not name the file: {}",
            run.stderr
        );
        assert_eq!(emails(&p), "", "a refused restore changed the data");
        assert_eq!(p.inspect("app", "{{.State.Running}}"), "true");
        assert_eq!(p.inspect("app", "{{.State.StartedAt}}"), app_started);
    }

    // The restore: the row is back, the app was stopped and runs again (same container),
    // the service that does not use the database was left alone, the old database kept.
    let run = berth(&p, &["restore", first.to_str().unwrap(), "-f", f]);
    assert_eq!(run.code, 0, "restore: {}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("stopping app"), "{}", run.stdout);
    assert!(!run.stdout.contains("stopping other"), "{}", run.stdout);
    assert_eq!(emails(&p), "kept@example.org");
    assert_eq!(p.id("app").unwrap(), app_id);
    assert_eq!(p.inspect("app", "{{.State.Running}}"), "true");
    assert_ne!(
        p.inspect("app", "{{.State.StartedAt}}"),
        app_started,
        "the app was not restarted"
    );
    assert_eq!(p.inspect("other", "{{.State.StartedAt}}"), other_started);
    let kept = p.psql(
        "postgres",
        "SELECT datname FROM pg_database WHERE datname LIKE 'assistant\\_before\\_restore\\_%'",
    );
    assert_eq!(kept.lines().count(), 1, "kept databases: {kept:?}");
    assert_eq!(
        p.psql(kept.trim(), "SELECT count(*) FROM users"),
        "0",
        "the kept database is not the one replaced"
    );
    let leftovers = p.psql(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname LIKE 'assistant\\_restore\\_%'",
    );
    assert_eq!(leftovers, "0");
}

#[test]
fn backup_and_restore_need_a_migrations_block() {
    let p = Project::bare("backup-none");
    p.write("[project]\nname = \"{project}\"\n[services.web]\nimage = \"web:1\"\n");
    let f = p.file();
    let f = f.to_str().unwrap();
    let run = p.berth(&["backup", "-f", f]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("[migrations]"), "{}", run.stderr);
    let run = p.berth(&["restore", "x.sql.gz", "-f", f]);
    assert_eq!(run.code, 2);
}
