//! A migration job (migrations shipped in their own image): the runbook's **Alembic**, for
//! real. The image `berth-alembic:test` (`images/alembic`: Debian's python3-alembic and
//! python3-psycopg2) holds the Alembic project of `tests/alembic` (revisions abc123 and
//! def456); each test derives images from it with a third revision (`ghi789`), as a team
//! ships a new migration image. Against the stack's real PostgreSQL image and the test
//! fixture:
//!
//! - a fresh database is upgraded by `alembic upgrade head` in a one-shot container
//!   before the app that `depends_on = ["migrations"]` starts; the generation records
//!   revision def456 and keeps the job's output; the job container is gone afterwards;
//!   a second apply runs nothing and takes no backup, nor does a generation that only
//!   changes the app;
//! - a revision with an SQL error: nothing of it stays, the stack is reverted, exit 3,
//!   rows written before are intact;
//! - the job succeeds but the app's gate fails: `alembic downgrade def456` runs, the
//!   schema is back, rows intact;
//! - a revision whose downgrade fails: the backup taken before the upgrade is restored
//!   and the data matches what it was before the deploy;
//! - a job that hangs past its `timeout` is killed: a gate failure, exit 3, reverted, no
//!   job container left.
//!
//! Each test has its own project (whose guard removes its containers, network and
//! volume) and its own derived image tags (removed by their guard).

mod common;

use common::{FIXTURE, KillOnDrop, Project, docker, require_images, text};

const POSTGRES: &str = "berth-postgres:15";
const ALEMBIC: &str = "berth-alembic:test";
const PASSWORD: &str = "e2e-alembic-pw-Zr8";

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
backup = true
backup_dir = "backups"

[migrations.job]
image = "{job_image}"
upgrade = ["alembic", "upgrade", "head"]
downgrade = ["alembic", "downgrade", "{revision}"]
"#;

fn stack(job_image: &str, version: &str, never_healthy: bool) -> String {
    let app_env = if never_healthy {
        r#", FIXTURE_NEVER_HEALTHY = "1""#
    } else {
        ""
    };
    STACK
        .replace("{password}", PASSWORD)
        .replace("{version}", version)
        .replace("{app_env}", app_env)
        .replace("{job_image}", job_image)
}

/// Images a test derives from `berth-alembic:test`, removed when it ends.
struct Images(Vec<String>);

impl Images {
    /// `berth-alembic:test` plus `versions/ghi789_<name>.py` with these bodies.
    fn with_third_revision(
        &mut self,
        p: &Project,
        name: &str,
        upgrade: &str,
        downgrade: &str,
    ) -> String {
        let tag = format!("{}-alembic:{name}", p.name);
        let ctx = p.dir.path().join(format!("image-{name}"));
        std::fs::create_dir_all(&ctx).unwrap();
        let file = format!("ghi789_{name}.py");
        std::fs::write(
            ctx.join(&file),
            format!(
                "\"\"\"{name}\n\nRevision ID: ghi789\nRevises: def456\n\"\"\"\nfrom alembic import op\n\nrevision = \"ghi789\"\ndown_revision = \"def456\"\nbranch_labels = None\ndepends_on = None\n\n\ndef upgrade():\n{upgrade}\n\n\ndef downgrade():\n{downgrade}\n"
            ),
        )
        .unwrap();
        std::fs::write(
            ctx.join("Dockerfile"),
            format!("FROM {ALEMBIC}\nCOPY {file} /migrations/versions/{file}\n"),
        )
        .unwrap();
        let out = std::process::Command::new("docker")
            .args(["build", "-q", "-t", &tag])
            .arg(&ctx)
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "building {tag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.0.push(tag.clone());
        tag
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        for tag in &self.0 {
            docker(&["rmi", "-f", tag]);
        }
    }
}

fn project(test: &str) -> (Project, Images) {
    require_images(
        &[POSTGRES, ALEMBIC],
        "scripts/build-images.sh postgres alembic",
    );
    require_images(&[FIXTURE], "scripts/build-fixture.sh");
    (Project::new(test), Images(Vec::new()))
}

fn revision(p: &Project) -> String {
    p.psql("assistant", "SELECT version_num FROM alembic_version")
}

fn backups(p: &Project) -> usize {
    std::fs::read_dir(p.dir.path().join("backups"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// No job container is left, running or not.
fn assert_no_job_container(p: &Project) {
    let name = format!("name=^{}-migrations-job$", p.name);
    let left = text(&docker(&["ps", "-aq", "--filter", &name]));
    assert!(left.trim().is_empty(), "the job container was left: {left}");
}

/// The job events of a generation (`berth history --json`).
fn job_events(g: &serde_json::Value) -> Vec<String> {
    g["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["kind"] == "migration-job")
                .map(|e| e["message"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Generation 1: the fresh database upgraded to def456 by Alembic before the app
/// started; some rows written afterwards, as the app would.
fn first_generation(p: &Project) {
    p.write(&stack(ALEMBIC, "1", false));
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("alembic upgrade head") && run.stdout.contains("revision def456"),
        "the step says what it runs and where it got: {}",
        run.stdout
    );
    for table in ["users", "conversations", "user_sessions"] {
        assert!(p.table_exists(table), "table {table} is missing");
    }
    assert_eq!(revision(p), "def456");
    assert_no_job_container(p);
    assert_eq!(backups(p), 1, "a backup before the upgrade");
    let h = p.history();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0]["schema_revision"], "def456");
    let jobs = job_events(&h[0]);
    assert_eq!(jobs.len(), 1, "{}", h[0]);
    assert!(
        jobs[0].starts_with("exit 0 `alembic upgrade head`")
            && jobs[0].contains("Running upgrade  -> abc123")
            && jobs[0].contains("Running upgrade abc123 -> def456"),
        "the job's output is kept: {}",
        jobs[0]
    );
    assert!(
        !jobs[0].contains(PASSWORD) && !run.stdout.contains(PASSWORD),
        "the database password leaked"
    );
    let run = p.berth(&["status"]);
    assert!(run.stdout.contains("schema def456"), "{}", run.stdout);
    p.psql("assistant", "INSERT INTO users (email) VALUES ('kept@example.org'); INSERT INTO conversations (user_id, title) SELECT id, 'hello' FROM users",
    );
}

fn assert_rows_intact(p: &Project) {
    assert_eq!(
        p.psql("assistant", "SELECT count(*) FROM users u JOIN conversations c ON c.user_id = u.id WHERE u.email = 'kept@example.org' AND c.title = 'hello'"
        ),
        "1",
        "the rows written before the deploy are gone"
    );
}

#[test]
fn an_alembic_job_runs_once_and_a_revision_with_an_sql_error_is_reverted() {
    let (p, mut images) = project("alembic-once");
    first_generation(&p);

    // The same desired state again: nothing runs, no backup.
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stdout.contains("migrations"), "{}", run.stdout);
    // A new generation that changes only the app: the same job image already brought
    // the database to def456, so it does not run again, and no backup is taken.
    p.write(&stack(ALEMBIC, "2", false));
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        !run.stdout.contains("alembic upgrade"),
        "the job ran again: {}",
        run.stdout
    );
    assert_eq!(backups(&p), 1, "nothing pending: no backup");
    let h = p.history();
    assert_eq!(h.len(), 2);
    assert_eq!(h[1]["schema_revision"], "def456");
    assert!(job_events(&h[1]).is_empty(), "{}", h[1]);

    // ghi789 creates a table, then fails on an SQL error: Alembic runs the upgrade in one
    // transaction, so nothing of it stays.
    let broken = images.with_third_revision(
        &p,
        "broken",
        "    op.execute(\"CREATE TABLE e2e_half (id int)\")\n    op.execute(\"SELECT FROM WHERE nonsense\")",
        "    op.execute(\"DROP TABLE e2e_half\")",
    );
    p.write(&stack(&broken, "3", false));
    let run = p.berth(&["apply"]);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, 3, "{all}");
    assert!(
        all.contains("alembic upgrade head` exited"),
        "the reason names the job and its exit: {all}"
    );
    assert!(!p.table_exists("e2e_half"), "half of ghi789 stayed");
    assert_eq!(revision(&p), "def456");
    assert_rows_intact(&p);
    assert_no_job_container(&p);
    let env = p.environment("app");
    assert!(
        env.contains("VERSION=2"),
        "the app is not back on generation 2: {env}"
    );
    let h = p.history();
    assert_eq!(h.len(), 3, "one history entry for the failed generation");
    assert_eq!(h[2]["outcome"], "rolled-back");
    assert_eq!(h[2]["reverted_to"], 2);
    let jobs = job_events(&h[2]);
    assert!(
        jobs.len() == 1 && jobs[0].starts_with("exit 1") && jobs[0].contains("syntax error"),
        "the failed job's output is kept: {jobs:?}"
    );
}

#[test]
fn a_failed_gate_after_the_alembic_job_runs_its_downgrade() {
    let (p, mut images) = project("alembic-down");
    first_generation(&p);

    let widgets = images.with_third_revision(
        &p,
        "widgets",
        "    op.execute(\"CREATE TABLE e2e_widgets (id bigserial PRIMARY KEY, name text NOT NULL)\")",
        "    op.execute(\"DROP TABLE e2e_widgets\")",
    );
    p.write(&stack(&widgets, "2", true));
    let run = p.berth(&["apply"]);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, 3, "{all}");
    assert!(
        run.stdout.contains("revision ghi789"),
        "the job reached ghi789 first: {all}"
    );
    assert!(
        run.stdout.contains("alembic downgrade def456"),
        "the revert runs the downgrade: {all}"
    );
    assert!(
        !p.table_exists("e2e_widgets"),
        "ghi789's table is still there"
    );
    assert_eq!(revision(&p), "def456");
    assert_rows_intact(&p);
    assert_no_job_container(&p);
    let env = p.environment("app");
    assert!(
        env.contains("VERSION=1") && !env.contains("FIXTURE_NEVER_HEALTHY"),
        "the app is not back on generation 1's spec: {env}"
    );
    let h = p.history();
    assert_eq!(h.len(), 2);
    assert_eq!(h[1]["outcome"], "rolled-back");
    assert_eq!(h[1]["schema_revision"], "ghi789");
    let jobs = job_events(&h[1]);
    assert!(
        jobs.len() == 2
            && jobs[0].starts_with("exit 0 `alembic upgrade head`")
            && jobs[1].starts_with("exit 0 `alembic downgrade def456`")
            && jobs[1].contains("Running downgrade ghi789 -> def456"),
        "both runs are kept: {jobs:?}"
    );
    let run = p.berth(&["migrate", "status"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("database at revision def456")
            && run.stdout.contains("revision ghi789"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_failing_alembic_downgrade_is_replaced_by_restoring_the_backup() {
    let (p, mut images) = project("alembic-restore");
    first_generation(&p);

    let stuck = images.with_third_revision(
        &p,
        "stuck",
        "    op.execute(\"CREATE TABLE e2e_stuck (id int)\")\n    op.execute(\"UPDATE users SET email = 'changed@example.org'\")",
        "    raise RuntimeError(\"ghi789 cannot be undone\")",
    );
    p.write(&stack(&stuck, "2", true));
    let run = p.berth(&["apply"]);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, 3, "a normal revert: {all}");
    assert!(
        all.contains("ghi789 cannot be undone"),
        "the downgrade's failure is named: {all}"
    );
    assert!(
        !p.table_exists("e2e_stuck"),
        "ghi789's table is still there"
    );
    assert_eq!(revision(&p), "def456");
    assert_rows_intact(&p);
    assert_eq!(
        p.psql(
            "assistant",
            "SELECT count(*) FROM users WHERE email = 'changed@example.org'"
        ),
        "0",
        "the data is not what it was before the deploy"
    );
    let h = p.history();
    assert_eq!(h.len(), 2);
    assert_eq!(h[1]["outcome"], "rolled-back");
    let backup = h[1]["backup"].as_str().expect("generation 2 took a backup");
    let reason = h[1]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("restored from") && reason.contains(backup),
        "{reason}"
    );
    let restores: Vec<_> = h[1]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "restore")
        .collect();
    assert_eq!(restores.len(), 1, "the restore is an event: {}", h[1]);
    let run = p.berth(&["history"]);
    assert!(
        run.stdout.contains(&format!("restored {backup}")),
        "{}",
        run.stdout
    );
}

#[test]
fn berth_killed_while_the_alembic_job_runs_is_finished_by_the_next_run() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let (p, mut images) = project("alembic-kill");
    first_generation(&p);
    // ghi789 takes a while; berth is killed while its job container runs it.
    let slow = images.with_third_revision(
        &p,
        "slow",
        "    op.execute(\"CREATE TABLE e2e_slow (id int)\")\n    op.execute(\"INSERT INTO e2e_slow VALUES (1)\")\n    op.execute(\"SELECT pg_sleep(6)\")",
        "    op.execute(\"DROP TABLE e2e_slow\")",
    );
    p.write(&stack(&slow, "2", false));
    let mut child = p
        .command(&["apply"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut child = KillOnDrop::new(child);
    let mut seen = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        seen += &line;
        seen += "\n";
        if line.contains("running `alembic upgrade head`") {
            break;
        }
    }
    assert!(seen.contains("alembic upgrade head"), "no job ran: {seen}");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    // The premise: the job container outlived berth, still migrating.
    let name = format!("name=^{}-migrations-job$", p.name);
    let running = text(&docker(&["ps", "-q", "--filter", &name]));
    assert!(
        !running.trim().is_empty(),
        "the job container was not running when berth was killed"
    );

    // The next run waits for the job left behind, removes it, and finishes the
    // generation: ghi789 applied once.
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("resuming generation 2"),
        "{}",
        run.stdout
    );
    assert_eq!(revision(&p), "ghi789");
    assert_eq!(p.psql("assistant", "SELECT count(*) FROM e2e_slow"), "1");
    assert_rows_intact(&p);
    assert_no_job_container(&p);
    let h = p.history();
    assert_eq!(h.len(), 2);
    assert_eq!(h[1]["outcome"], "healthy");
    assert_eq!(h[1]["schema_revision"], "ghi789");
}

#[test]
fn a_migration_job_past_its_timeout_is_killed_and_the_generation_reverted() {
    let (p, mut images) = project("alembic-timeout");
    first_generation(&p);
    // ghi789 hangs (30 s) before touching anything; the job may run 3 s.
    let hang = images.with_third_revision(
        &p,
        "hang",
        "    import time\n    time.sleep(30)\n    op.execute(\"CREATE TABLE e2e_hang (id int)\")",
        "    op.execute(\"DROP TABLE e2e_hang\")",
    );
    let with_timeout = stack(&hang, "2", false).replace(
        "downgrade = [\"alembic\", \"downgrade\", \"{revision}\"]\n",
        "downgrade = [\"alembic\", \"downgrade\", \"{revision}\"]\ntimeout = \"3s\"\n",
    );
    assert!(
        with_timeout.contains("timeout = \"3s\""),
        "premise: the key is set"
    );
    p.write(&with_timeout);
    let started = std::time::Instant::now();
    let run = p.berth(&["apply"]);
    let took = started.elapsed();
    let all = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, 3, "a gate failure, reverted: {all}");
    assert!(
        all.contains("alembic upgrade head` was killed after its timeout (3s)"),
        "the reason says the job was killed at its timeout: {all}"
    );
    // Killed, not waited for: the job would have slept 30 s.
    assert!(
        took < std::time::Duration::from_secs(28),
        "berth waited for the job to end ({took:?})"
    );
    assert_no_job_container(&p);
    assert!(!p.table_exists("e2e_hang"));
    assert_eq!(revision(&p), "def456");
    assert_rows_intact(&p);
    let env = p.environment("app");
    assert!(
        env.contains("VERSION=1"),
        "the app is not back on generation 1: {env}"
    );
    let h = p.history();
    assert_eq!(h.len(), 2);
    assert_eq!(h[1]["outcome"], "rolled-back");
    let jobs = job_events(&h[1]);
    assert!(
        jobs.len() == 1
            && jobs[0].starts_with("was killed after its timeout (3s) `alembic upgrade head`"),
        "the killed run is kept: {jobs:?}"
    );
    // Nothing is left to block the next deploy.
    p.write(&stack(ALEMBIC, "3", false));
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
}
