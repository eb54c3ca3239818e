//! Migrations as a gated node of `berth apply`'s converge (docs/design.md §§5 and 6),
//! against the stack's real PostgreSQL image and the test fixture:
//!
//! - the repository's `migrations/` run once the database passed its gate and before the
//!   app that `depends_on = ["migrations"]`; the generation records schema 3;
//! - a generation adding `0004` whose app never gets healthy is reverted *with the
//!   schema*: 0004 undone, the app back on the old spec, one history entry, exit 3;
//! - a generation whose `0004` has an SQL error fails at the migrations gate: nothing of
//!   it stays applied, exit 3;
//! - a `0004` without a down file cannot be undone: with `backup = false` the revert says
//!   so, naming it, and the project is degraded (exit 4); with `backup = true` the backup
//!   taken before applying it is restored, and the revert is a normal one (exit 3).
//!
//! Each test has its own project (`tests/common` `Project`), whose guard removes the
//! containers, network and volume labelled with it, also when the test fails. The
//! database is inspected through `docker exec … psql`, not through berth.

mod common;

use std::time::Duration;

use common::{FIXTURE, KillOnDrop, Project, require_images, wait_for};

const POSTGRES: &str = "berth-postgres:15";
const PASSWORD: &str = "e2e-mstep-pw-Kq3";

/// PostgreSQL and an app that waits for the migrations. `{app_env}` is the app's extra
/// environment (the fixture's knobs).
const STACK: &str = r#"
[project]
name = "{project}"

[rollout]
healthy_deadline = "120s"
min_healthy_time = "500ms"
progress_deadline = "10m"

[services.postgres]
image = "berth-postgres:15"
environment = { POSTGRES_USER = "assistant", POSTGRES_PASSWORD = "{password}", POSTGRES_DB = "assistant" }
volumes = ["{project}-pg:/var/lib/postgresql/data"]
health = { probe = "postgres", port = 5432, user = "assistant", password = "{password}", database = "assistant", interval = "250ms" }

[services.app]
image = "berth-fixture:test"
depends_on = ["migrations"]
environment = { ROLE = "app", VERSION = "{version}"{app_env} }
health = { probe = "http", port = 8080, path = "/health", interval = "100ms", healthy_deadline = "10s" }

[migrations]
service = "postgres"
url = "postgresql://assistant:{password}@postgres:5432/assistant"
source = "migrations"
backup = false
"#;

fn stack(version: &str, never_healthy: bool) -> String {
    let app_env = if never_healthy {
        r#", FIXTURE_NEVER_HEALTHY = "1""#
    } else {
        ""
    };
    STACK
        .replace("{password}", PASSWORD)
        .replace("{version}", version)
        .replace("{app_env}", app_env)
}

/// `stack` with `backup = true`, its backups in the test's temporary directory.
fn with_backup(stack: String, p: &Project) -> String {
    let dir = p.dir.path().join("backups");
    stack.replace(
        "backup = false\n",
        &format!(
            "backup = true\nbackup_dir = {:?}\n",
            dir.display().to_string()
        ),
    )
}

/// A generation's recorded backup: it exists and is readable by its owner only.
fn assert_backup_file(g: &serde_json::Value, p: &Project) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = g["backup"]
        .as_str()
        .unwrap_or_else(|| panic!("generation {} recorded no backup: {g}", g["id"]));
    let path = std::path::PathBuf::from(path);
    assert!(
        path.starts_with(p.dir.path().join("backups")),
        "the backup {} is not in backup_dir",
        path.display()
    );
    let meta = std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("the recorded backup {}: {e}", path.display()));
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "{}",
        path.display()
    );
    path
}

fn project(test: &str) -> Project {
    require_images(&[POSTGRES], "scripts/build-images.sh postgres");
    require_images(&[FIXTURE], "scripts/build-fixture.sh");
    let p = Project::new(test);
    common::copy_repo_migrations(&p.dir.path().join("migrations"));
    p
}

fn write_migration(p: &Project, name: &str, sql: &str) {
    std::fs::write(p.dir.path().join("migrations").join(name), sql).unwrap();
}

fn remove_migration(p: &Project, name: &str) {
    let _ = std::fs::remove_file(p.dir.path().join("migrations").join(name));
}

fn schema_version(p: &Project) -> String {
    p.psql(
        "assistant",
        "SELECT coalesce(max(version), 0) FROM _sqlx_migrations",
    )
}

/// The first generation: every migration of the repository applied between the
/// database's gate and the app's start; schema 3 recorded.
fn first_generation(p: &Project, backup: bool) {
    if backup {
        p.write(&with_backup(stack("1", false), p));
    } else {
        p.write(&stack("1", false));
    }
    // Nothing runs yet: plan cannot ask the database.
    let run = p.berth(&["plan"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("migrations: cannot tell"),
        "{}",
        run.stdout
    );
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("0001_initial_schema")
            && run.stdout.contains("0003_add_vector_indexes"),
        "the migrations step names what it applies: {}",
        run.stdout
    );
    for table in ["users", "conversations", "messages", "user_sessions"] {
        assert!(p.table_exists(table), "table {table} is missing");
    }
    assert_eq!(schema_version(p), "3");
    // The app started after the last migration was recorded (installed_on is that
    // migration's transaction time; StartedAt the app container's start).
    let migrated = p.psql(
        "assistant",
        "SELECT extract(epoch FROM max(installed_on)) FROM _sqlx_migrations",
    );
    let migrated: f64 = migrated.parse().unwrap();
    let started: jiff::Timestamp = p.inspect("app", "{{.State.StartedAt}}").parse().unwrap();
    let started = started.as_millisecond() as f64 / 1000.0;
    assert!(
        migrated < started,
        "the app started at {started} before the migrations finished at {migrated}"
    );
    let h = p.history();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0]["schema_version"], 3);
    if backup {
        assert!(
            run.stdout.contains("migrations: backup "),
            "the step prints its backup: {}",
            run.stdout
        );
        assert_backup_file(&h[0], p);
    } else {
        assert!(h[0]["backup"].is_null(), "{}", h[0]);
    }
    let run = p.berth(&["history"]);
    assert!(run.stdout.contains("schema 3"), "{}", run.stdout);
}

/// A level without a dependent of `migrations` does not wait for the step: `side` depends
/// on the database only, and its level begins once the database passed its probe, while
/// the migrations run; the app (`migrations` and `side`) begins only after they ended, and
/// the generation is finished only once they are done. (Before, every level above the
/// database's waited for the step.)
#[test]
fn a_level_without_a_dependent_of_migrations_begins_while_they_run() {
    let p = project("mstep-beside");
    let side = "[services.side]\nimage = \"berth-fixture:test\"\ndepends_on = [\"postgres\"]\nhealth = { probe = \"http\", port = 8080, path = \"/health\", interval = \"100ms\" }\n\n[migrations]";
    let stack = stack("1", false)
        .replace(
            "depends_on = [\"migrations\"]",
            "depends_on = [\"migrations\", \"side\"]",
        )
        .replace("[migrations]", side);
    p.write(&stack);
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(schema_version(&p), "3");
    let h = p.history();
    let t = &h[0]["timings"];
    let ms = |svc: &str, key: &str| {
        t[svc][key]
            .as_i64()
            .unwrap_or_else(|| panic!("no {svc}.{key} in {t}"))
    };
    assert!(
        ms("side", "begin_ms") < ms("migrations", "end_ms"),
        "side waited for the migrations it does not depend on: {t}"
    );
    assert!(
        ms("postgres", "healthy_ms") <= ms("migrations", "begin_ms"),
        "the migrations began before the database passed its probe: {t}"
    );
    assert!(
        ms("app", "begin_ms") >= ms("migrations", "end_ms"),
        "the app began before the migrations it depends on ended: {t}"
    );
    assert!(
        h[0]["finished_ms"].as_i64().unwrap() >= ms("migrations", "end_ms"),
        "the generation finished before its migrations: {}",
        h[0]
    );
}

#[test]
fn migrations_run_before_their_dependents_and_a_failed_gate_undoes_them() {
    let p = project("mstep-revert");
    first_generation(&p, true);
    // Rows written before the deploys below, as the app would.
    p.psql("assistant", "INSERT INTO users (email) VALUES ('kept@example.org'); INSERT INTO conversations (user_id, title) SELECT id, 'hello' FROM users",
    );
    let rows_intact = |p: &Project| {
        assert_eq!(
            p.psql("assistant", "SELECT count(*) FROM users u JOIN conversations c ON c.user_id = u.id WHERE u.email = 'kept@example.org' AND c.title = 'hello'"
            ),
            "1",
            "the rows written before the deploy are gone"
        );
    };

    // A second apply of the same desired state: nothing to do, nothing printed about
    // migrations, no backup taken.
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stdout.contains("migrations"), "{}", run.stdout);
    let backups = std::fs::read_dir(p.dir.path().join("backups"))
        .unwrap()
        .count();
    assert_eq!(backups, 1, "nothing pending: no backup");

    // 0004 applies, then the app's gate fails: the revert undoes 0004 too.
    write_migration(
        &p,
        "0004_add_widgets.up.sql",
        "CREATE TABLE e2e_widgets (id bigserial PRIMARY KEY, name text NOT NULL);\n",
    );
    write_migration(&p, "0004_add_widgets.down.sql", "DROP TABLE e2e_widgets;\n");
    p.write(&stack("2", true));
    let run = p.berth(&["plan"]);
    assert!(
        run.stdout.contains("migrations: apply 0004_add_widgets"),
        "{}",
        run.stdout
    );
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("0004_add_widgets"),
        "the step names 0004: {}",
        run.stdout
    );
    assert!(
        !p.table_exists("e2e_widgets"),
        "0004's table is still there"
    );
    assert_eq!(schema_version(&p), "3");
    assert!(p.table_exists("user_sessions"), "0002 was undone too");
    rows_intact(&p);
    let env = p.environment("app");
    assert!(
        env.contains("VERSION=1") && !env.contains("FIXTURE_NEVER_HEALTHY"),
        "the app is not back on generation 1's spec: {env}"
    );
    let h = p.history();
    assert_eq!(h.len(), 2, "one history entry for the failed generation");
    assert_eq!(h[1]["outcome"], "rolled-back");
    assert_eq!(h[1]["reverted_to"], 1);
    assert_eq!(h[1]["schema_version"], 4);

    // A 0004 with an SQL error: its transaction is rolled back, nothing of it stays.
    remove_migration(&p, "0004_add_widgets.up.sql");
    remove_migration(&p, "0004_add_widgets.down.sql");
    write_migration(
        &p,
        "0004_broken.up.sql",
        "CREATE TABLE e2e_half (id int);\nSELECT FROM WHERE nonsense;\n",
    );
    write_migration(&p, "0004_broken.down.sql", "DROP TABLE e2e_half;\n");
    p.write(&stack("1", false));
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("0004_broken") || run.stderr.contains("0004_broken"),
        "{}{}",
        run.stdout,
        run.stderr
    );
    assert!(!p.table_exists("e2e_half"), "half of 0004 stayed applied");
    assert_eq!(schema_version(&p), "3");
    rows_intact(&p);
    assert_eq!(
        p.psql(
            "assistant",
            "SELECT count(*) FROM _sqlx_migrations WHERE NOT success"
        ),
        "0",
        "a dirty record was left"
    );
    let h = p.history();
    assert_eq!(h.len(), 3);
    assert_eq!(h[2]["outcome"], "rolled-back");
    assert_eq!(h[2]["schema_version"], 3);
    let run = p.berth(&["status"]);
    assert!(run.stdout.contains("schema 3"), "{}", run.stdout);
}

#[test]
fn a_migration_without_a_down_file_leaves_the_revert_degraded_naming_it() {
    let p = project("mstep-nodown");
    first_generation(&p, false);

    write_migration(
        &p,
        "0004_no_way_back.up.sql",
        "CREATE TABLE e2e_no_way_back (id int);\n",
    );
    // `backup = false` (STACK's): nothing to restore, so the revert stays degraded.
    assert!(stack("2", true).contains("backup = false\n"));
    p.write(&stack("2", true));
    let run = p.berth(&["apply"]);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, 4, "{all}");
    assert!(
        all.contains("no backup"),
        "it names the backup's absence: {all}"
    );
    assert!(
        all.contains("could not be undone") && all.contains("no_way_back"),
        "the revert names the migration it could not undo: {all}"
    );
    assert!(
        all.contains("restore"),
        "it says to restore the backup: {all}"
    );
    assert!(all.contains("its database schema is not"), "{all}");
    // The containers are back on generation 1 even so; the schema is not.
    let env = p.environment("app");
    assert!(env.contains("VERSION=1"), "{env}");
    assert_eq!(schema_version(&p), "4");
    let h = p.history();
    assert_eq!(h.len(), 2);
    assert_eq!(h[1]["outcome"], "failed");
    let run = p.berth(&["status"]);
    assert_ne!(run.code, 0, "{}", run.stdout);
}

#[test]
fn a_migration_without_a_down_file_is_reverted_by_restoring_the_backup_taken_before_it() {
    let p = project("mstep-restore");
    first_generation(&p, true);
    p.psql(
        "assistant",
        "INSERT INTO users (email) VALUES ('kept@example.org')",
    );

    write_migration(
        &p,
        "0004_no_way_back.up.sql",
        "CREATE TABLE e2e_no_way_back (id int);\n",
    );
    p.write(&with_backup(stack("2", true), &p));
    let run = p.berth(&["apply"]);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, 3, "a normal revert: {all}");
    assert!(
        run.stdout.contains("migrations: backup "),
        "the step prints its backup: {all}"
    );
    // The backup was taken before 0004, and restored by the revert.
    assert!(
        !p.table_exists("e2e_no_way_back"),
        "0004's table is still there"
    );
    assert_eq!(schema_version(&p), "3");
    assert!(p.table_exists("user_sessions"));
    assert_eq!(
        p.psql(
            "assistant",
            "SELECT count(*) FROM users WHERE email = 'kept@example.org'"
        ),
        "1",
        "the data written before 0004 is back"
    );
    let env = p.environment("app");
    assert!(
        env.contains("VERSION=1") && !env.contains("FIXTURE_NEVER_HEALTHY"),
        "the app is not back on generation 1's spec: {env}"
    );
    let h = p.history();
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[1]["outcome"], "rolled-back");
    assert_eq!(h[1]["reverted_to"], 1);
    let backup = assert_backup_file(&h[1], &p);
    assert_ne!(
        h[1]["backup"], h[0]["backup"],
        "each generation its own backup"
    );
    let reason = h[1]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("restored from") && reason.contains(&backup.display().to_string()),
        "the reason says the schema was restored from the backup: {reason}"
    );
    // status names the running generation's (generation 1's) backup.
    let run = p.berth(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(status[0]["backup"], h[0]["backup"], "{}", run.stdout);
    let run = p.berth(&["status"]);
    assert!(run.stdout.contains("schema 3"), "{}", run.stdout);
}

#[test]
fn berth_killed_while_migrating_is_finished_by_the_next_run_applying_nothing_twice() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let p = project("mstep-kill");
    first_generation(&p, false);

    // 0004 is quick; 0005 takes a while, and berth is killed while it runs.
    write_migration(
        &p,
        "0004_quick.up.sql",
        "CREATE TABLE e2e_quick (id int);\n",
    );
    write_migration(&p, "0004_quick.down.sql", "DROP TABLE e2e_quick;\n");
    write_migration(
        &p,
        "0005_slow.up.sql",
        "CREATE TABLE e2e_slow (id int);\nSELECT pg_sleep(12);\n",
    );
    write_migration(&p, "0005_slow.down.sql", "DROP TABLE e2e_slow;\n");

    let mut child = p
        .command(&["apply"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut child = KillOnDrop::new(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen += &line;
        seen += "\n";
        if line.contains("migrations: applying") {
            break;
        }
    }
    assert!(
        seen.contains("0005_slow"),
        "berth did not start migrating: {seen}"
    );
    // Into 0005's pg_sleep (0004 most likely committed by then; the test holds either way).
    std::thread::sleep(std::time::Duration::from_millis(2500));
    child.kill().unwrap();
    child.wait().unwrap();

    let before: Vec<String> = p
        .psql(
            "assistant",
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM _sqlx_migrations",
        )
        .split(',')
        .map(str::to_string)
        .collect();
    assert!(
        !before.contains(&"5".to_string()),
        "0005 committed: {before:?}"
    );

    // The next run resumes the generation through the migrations step.
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("resuming generation 2"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("0005_slow"), "{}", run.stdout);
    if before.contains(&"4".to_string()) {
        assert!(
            !run.stdout.contains("0004_quick"),
            "0004 was applied again: {}",
            run.stdout
        );
    }
    assert_eq!(
        p.psql(
            "assistant",
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM _sqlx_migrations"
        ),
        "1,2,3,4,5"
    );
    assert_eq!(
        p.psql(
            "assistant",
            "SELECT count(*) FROM _sqlx_migrations WHERE NOT success"
        ),
        "0"
    );
    assert!(p.table_exists("e2e_quick") && p.table_exists("e2e_slow"));
    let h = p.history();
    assert_eq!(h.len(), 2);
    assert_eq!(h[1]["outcome"], "healthy");
    assert_eq!(h[1]["schema_version"], 5);
}

#[test]
fn berth_rollback_undoes_the_schema_to_that_generations_version() {
    let p = project("mstep-rollback");
    first_generation(&p, false);

    write_migration(
        &p,
        "0004_add_gadgets.up.sql",
        "CREATE TABLE e2e_gadgets (id int);\n",
    );
    write_migration(&p, "0004_add_gadgets.down.sql", "DROP TABLE e2e_gadgets;\n");
    p.write(&stack("2", false));
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(schema_version(&p), "4");
    assert!(p.table_exists("e2e_gadgets"));

    let run = p.berth(&["rollback", "1"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(schema_version(&p), "3");
    assert!(!p.table_exists("e2e_gadgets"), "0004 was not undone");
    assert!(
        p.environment("app").contains("VERSION=1"),
        "{}",
        p.environment("app")
    );
    let h = p.history();
    assert_eq!(h.len(), 3);
    assert_eq!(h[1]["schema_version"], 4);
    assert_eq!(h[2]["kind"], "rollback");
    assert_eq!(h[2]["outcome"], "healthy");
    assert_eq!(h[2]["schema_version"], 3);
    // The desired state on disk (with 0004) is applied again by the next apply.
    let run = p.berth(&["plan"]);
    assert!(
        run.stdout.contains("migrations: apply 0004_add_gadgets"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_down_migration_blocked_by_a_lock_gives_up_at_lock_timeout_and_the_backup_is_restored() {
    use std::process::{Command, Stdio};

    let p = project("mstep-locktimeout");
    first_generation(&p, true);
    p.psql(
        "assistant",
        "INSERT INTO users (email) VALUES ('kept@example.org')",
    );

    write_migration(
        &p,
        "0004_add_locked.up.sql",
        "CREATE TABLE e2e_locked (id int);\n",
    );
    write_migration(&p, "0004_add_locked.down.sql", "DROP TABLE e2e_locked;\n");
    let gen2 = with_backup(stack("2", true), &p)
        .replace("[migrations]\n", "[migrations]\nlock_timeout = \"2s\"\n");
    p.write(&gen2);
    let berth = KillOnDrop::new(
        p.command(&["apply"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Once 0004 is applied (the app then spends its 10 s healthy_deadline failing), a
    // session takes a lock on its table and keeps it, as a still-running container of
    // the failed generation could.
    wait_for("0004 to be applied", Duration::from_secs(90), || {
        p.table_exists("e2e_locked")
    });
    let _locker = KillOnDrop::new(
        Command::new("docker")
            .args([
                "exec",
                &p.container("postgres"),
                "psql",
                "-U",
                "assistant",
                "-d",
                "assistant",
                "-c",
                "BEGIN; LOCK TABLE e2e_locked IN ACCESS SHARE MODE; SELECT pg_sleep(300);",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The premise: the lock is held before the revert begins.
    wait_for("the lock to be taken", Duration::from_secs(5), || {
        p.psql(
            "assistant",
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'e2e_locked' AND l.granted",
        ) != "0"
    });
    let out = berth.take().wait_with_output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3), "a normal revert: {all}");
    assert!(
        all.contains("lock timeout"),
        "the down gave up on the lock: {all}"
    );
    assert!(all.contains("restored from"), "{all}");
    assert!(!p.table_exists("e2e_locked"), "0004's table is still there");
    assert_eq!(schema_version(&p), "3");
    assert_eq!(
        p.psql(
            "assistant",
            "SELECT count(*) FROM users WHERE email = 'kept@example.org'"
        ),
        "1"
    );
    let h = p.history();
    assert_eq!(h[1]["outcome"], "rolled-back");
}

#[test]
fn a_backup_that_fails_before_migrating_fails_the_gate_with_nothing_applied() {
    let p = project("mstep-badbackup");
    first_generation(&p, false);

    write_migration(
        &p,
        "0004_after_backup.up.sql",
        "CREATE TABLE e2e_after_backup (id int);\n",
    );
    write_migration(
        &p,
        "0004_after_backup.down.sql",
        "DROP TABLE e2e_after_backup;\n",
    );
    // backup_dir lies under a regular file: no backup can be written there.
    let blocker = p.dir.path().join("not-a-directory");
    std::fs::write(&blocker, "a file\n").unwrap();
    let gen2 = stack("2", false).replace(
        "backup = false\n",
        &format!(
            "backup = true\nbackup_dir = {:?}\n",
            blocker.join("backups").display().to_string()
        ),
    );
    p.write(&gen2);
    let run = p.berth(&["apply"]);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, 3, "{all}");
    assert!(run.stdout.contains("migrations: backup FAILED"), "{all}");
    assert!(
        all.contains("the backup before applying 0004_after_backup failed (nothing applied)"),
        "{all}"
    );
    assert!(
        !p.table_exists("e2e_after_backup"),
        "0004 ran without a backup"
    );
    assert_eq!(schema_version(&p), "3");
    assert_eq!(std::fs::read_to_string(&blocker).unwrap(), "a file\n");
    let h = p.history();
    assert_eq!(h.len(), 2);
    assert_eq!(h[1]["outcome"], "rolled-back");
    assert!(h[1]["backup"].is_null(), "{}", h[1]);
    let env = p.environment("app");
    assert!(env.contains("VERSION=1"), "{env}");
}
