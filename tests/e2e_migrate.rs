//! Database migrations on their own, outside a converge, against the stack's real
//! PostgreSQL image: the repository's `migrations/` applied, reported, undone and applied
//! again through [`berth::migrate`]; an edited applied migration and a dirty record refused
//! before anything runs; and `berth migrate status` / `apply` from the command line, which
//! reach the database through its service's published host port.
//!
//! Each test starts its own PostgreSQL container (`e2e-migrate-<test>-<pid>-<random>`, on a
//! port that Docker picks on 127.0.0.1) and removes it by id when it ends, also on failure.
//! No other container is touched.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use berth::migrate::{self, Error};
use common::{Project, copy_repo_migrations, docker, repo_migrations, require_images, text};
use sqlx::{Connection, PgConnection};

const IMAGE: &str = "berth-postgres:15";
const USER: &str = "assistant";
const DB: &str = "assistant";
const LOCK: Duration = berth::spec::DEFAULT_LOCK_TIMEOUT;

/// Tables of 0001 and 0002, and indexes of 0002 and 0003.
const TABLES_0001: [&str; 5] = [
    "users",
    "conversations",
    "messages",
    "documents",
    "cost_ledger",
];
const INDEXES_0003: [&str; 6] = [
    "messages_conversation_created_idx",
    "conversations_user_updated_idx",
    "documents_user_id_idx",
    "documents_sha256_idx",
    "documents_metadata_gin_idx",
    "cost_ledger_user_created_idx",
];

/// A PostgreSQL container of this test's own; removed (by its id) on drop.
struct Postgres {
    /// The container's id: what the guard removes, so a name clash can never make it
    /// remove someone else's container.
    id: String,
    name: String,
    port: u16,
    password: String,
}

impl Postgres {
    fn start(test: &str) -> Postgres {
        require_images(&[IMAGE], "scripts/build-images.sh postgres");
        let name = format!(
            "e2e-migrate-{test}-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        );
        let password = format!("e2e-migrate-pw-{}-Zq8", std::process::id());
        let out = docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "-e",
            &format!("POSTGRES_USER={USER}"),
            "-e",
            &format!("POSTGRES_PASSWORD={password}"),
            "-e",
            &format!("POSTGRES_DB={DB}"),
            "-p",
            "127.0.0.1::5432",
            IMAGE,
        ]);
        // From here on the guard removes the container, whatever happens next.
        let mut pg = Postgres {
            id: text(&out).trim().to_string(),
            name,
            port: 0,
            password,
        };
        assert!(
            out.status.success() && !pg.id.is_empty(),
            "docker run {IMAGE} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = text(&docker(&["port", &pg.id, "5432/tcp"]));
        pg.port = port
            .lines()
            .find_map(|l| l.trim().rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
            .unwrap_or_else(|| panic!("no published port for {}: {port:?}", pg.name));
        pg
    }

    /// The URL as the host reaches this container.
    fn url(&self) -> String {
        format!(
            "postgresql://{USER}:{}@127.0.0.1:{}/{DB}",
            self.password, self.port
        )
    }

    /// Wait until the server accepts connections with the test's credentials (its first
    /// start initialises the cluster and restarts the server: 10 s or more on a busy host).
    async fn ready(&self) -> PgConnection {
        let start = Instant::now();
        loop {
            let last = match PgConnection::connect(&self.url()).await {
                Ok(mut c) => match sqlx::query("SELECT 1").execute(&mut c).await {
                    Ok(_) => return c,
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            let running = self.inspect("{{.State.Running}}");
            assert!(
                running == "true" && start.elapsed() < Duration::from_secs(180),
                "PostgreSQL in {} did not accept connections (running: {running}; last error: {last}); its log:\n{}",
                self.name,
                String::from_utf8_lossy(&docker(&["logs", &self.id]).stderr)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn inspect(&self, format: &str) -> String {
        text(&docker(&["inspect", "-f", format, &self.id]))
            .trim()
            .to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if !self.id.is_empty() {
            docker(&["rm", "-f", "-v", &self.id]);
        }
    }
}

async fn exists(conn: &mut PgConnection, relation: &str) -> bool {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(relation)
        .fetch_one(conn)
        .await
        .unwrap()
}

/// A copy of the repository's migrations to edit.
fn copy_migrations() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_repo_migrations(dir.path());
    dir
}

fn versions(status: &migrate::Status) -> (Vec<i64>, Vec<i64>) {
    (
        status.applied.iter().map(|a| a.version).collect(),
        status.pending.iter().map(|p| p.version).collect(),
    )
}

#[tokio::test]
async fn migrations_apply_report_undo_and_refuse_an_edited_or_dirty_record() {
    let pg = Postgres::start("lib");
    let mut conn = pg.ready().await;
    let url = pg.url();
    let source = repo_migrations();

    // A fresh database: everything pending, and looking changed nothing.
    let s = migrate::status(&url, &source).await.unwrap();
    assert_eq!(versions(&s), (vec![], vec![1, 2, 3]));
    assert!(!exists(&mut conn, migrate::TABLE).await);

    // Apply: the three migrations, their tables and indexes.
    let applied = migrate::apply(&url, &source).await.unwrap();
    assert_eq!(
        applied.iter().map(|p| p.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(applied[1].description, "add user sessions");
    for t in TABLES_0001
        .iter()
        .chain(&["user_sessions"])
        .chain(&INDEXES_0003)
    {
        assert!(exists(&mut conn, t).await, "{t} missing after apply");
    }
    let s = migrate::status(&url, &source).await.unwrap();
    assert_eq!(versions(&s), (vec![1, 2, 3], vec![]));
    assert!(
        s.applied
            .iter()
            .all(|a| a.success && a.checksum_ok == Some(true))
    );
    assert_eq!(s.version(), 3);

    // A second apply runs nothing.
    assert!(migrate::apply(&url, &source).await.unwrap().is_empty());

    // Rows written in between survive an undo of later migrations.
    sqlx::query("INSERT INTO users (email) VALUES ('kept@example.org')")
        .execute(&mut conn)
        .await
        .unwrap();

    // Undo to 1: the sessions table and the indexes go, 0001's tables stay.
    assert_eq!(
        migrate::undo_to(&url, &source, 1, LOCK).await.unwrap(),
        [3, 2]
    );
    assert!(!exists(&mut conn, "user_sessions").await);
    for i in INDEXES_0003 {
        assert!(!exists(&mut conn, i).await, "{i} still there after undo");
    }
    for t in TABLES_0001 {
        assert!(exists(&mut conn, t).await, "{t} gone after undo to 1");
    }
    let s = migrate::status(&url, &source).await.unwrap();
    assert_eq!(versions(&s), (vec![1], vec![2, 3]));
    // Nothing above 1 is left to undo.
    assert!(
        migrate::undo_to(&url, &source, 1, LOCK)
            .await
            .unwrap()
            .is_empty()
    );

    // Apply again.
    let again = migrate::apply(&url, &source).await.unwrap();
    assert_eq!(again.iter().map(|p| p.version).collect::<Vec<_>>(), [2, 3]);
    assert!(exists(&mut conn, "user_sessions").await);
    let kept: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE email = 'kept@example.org'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(kept, 1);

    // An applied migration edited since, beside a new pending one: refused with the
    // checksum error before anything runs (the new migration stays pending).
    let edited = copy_migrations();
    let up = edited.path().join("0001_initial_schema.up.sql");
    let sql = std::fs::read_to_string(&up).unwrap();
    std::fs::write(
        &up,
        sql.replace("display_name  TEXT,", "display_name  TEXT NOT NULL,"),
    )
    .unwrap();
    std::fs::write(
        edited.path().join("0004_add_tags.up.sql"),
        "CREATE TABLE tags (id BIGINT PRIMARY KEY);",
    )
    .unwrap();
    std::fs::write(
        edited.path().join("0004_add_tags.down.sql"),
        "DROP TABLE tags;",
    )
    .unwrap();
    match migrate::apply(&url, edited.path()).await {
        Err(Error::Edited(e)) => {
            assert_eq!(e.version, 1);
            assert_eq!(e.file, up);
            let msg = e.to_string();
            assert!(msg.contains("0001_initial_schema.up.sql"), "{msg}");
            assert!(msg.contains("migration 1 "), "{msg}");
        }
        other => panic!("expected the edited-migration error, got {other:?}"),
    }
    assert!(!exists(&mut conn, "tags").await);
    let s = migrate::status(&url, edited.path()).await.unwrap();
    assert_eq!(versions(&s), (vec![1, 2, 3], vec![4]));
    assert_eq!(s.applied[0].checksum_ok, Some(false));
    assert!(matches!(
        migrate::undo_to(&url, edited.path(), 0, LOCK).await,
        Err(Error::Edited(_))
    ));
    assert!(exists(&mut conn, "users").await);

    // An applied migration without a down file cannot be undone: refused, nothing undone.
    let no_down = copy_migrations();
    std::fs::remove_file(no_down.path().join("0003_add_vector_indexes.down.sql")).unwrap();
    match migrate::undo_to(&url, no_down.path(), 1, LOCK).await {
        Err(Error::NoDown { version: 3, .. }) => {}
        other => panic!("expected the no-down error for 3, got {other:?}"),
    }
    assert!(exists(&mut conn, "user_sessions").await);

    // A dirty (half-applied) record: refused by apply and undo, before anything runs.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {} SET success = false WHERE version = 3",
        migrate::TABLE
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let with_new = copy_migrations();
    std::fs::write(
        with_new.path().join("0004_add_tags.up.sql"),
        "CREATE TABLE tags (id BIGINT PRIMARY KEY);",
    )
    .unwrap();
    match migrate::apply(&url, with_new.path()).await {
        Err(Error::Dirty { version: 3, .. }) => {}
        other => panic!("expected the dirty error for 3, got {other:?}"),
    }
    assert!(!exists(&mut conn, "tags").await);
    match migrate::undo_to(&url, &source, 1, LOCK).await {
        Err(Error::Dirty { version: 3, .. }) => {}
        other => panic!("expected the dirty error for 3, got {other:?}"),
    }
    assert!(exists(&mut conn, "user_sessions").await);
    let s = migrate::status(&url, &source).await.unwrap();
    assert!(!s.applied[2].success);

    // Every call closed its connection: no session of the test user is left but ours,
    // and so no migrator's advisory lock outlived a refusal. (A closed session's backend
    // leaves pg_stat_activity a moment after the client is gone: wait for it.)
    let start = Instant::now();
    loop {
        let (others, locks, who): (i64, i64, Option<String>) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid()), \
                    (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'), \
                    (SELECT string_agg(pid || ' ' || backend_type || ' ' || coalesce(state, '-') || ' ' || coalesce(query, '-'), '; ') \
                       FROM pg_stat_activity WHERE pid <> pg_backend_pid())",
        )
        .bind(USER)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if others == 0 && locks == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{others} other session(s) and {locks} advisory lock(s) left behind: {who:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    conn.close().await.unwrap();
}

/// A desired state whose `postgres` service publishes `pg`'s port (the container is the
/// test's, not berth's: `migrate` only connects), with migrations from `source`.
fn write_desired(p: &Project, pg: &Postgres, source: &Path, publish: bool) {
    let ports = if publish {
        format!("ports = [\"127.0.0.1:{}:5432\"]", pg.port)
    } else {
        String::new()
    };
    p.write(&format!(
        r#"
[project]
name = "{{project}}"

[services.postgres]
image = "{IMAGE}"
{ports}

[services.app]
image = "app:1"
depends_on = ["migrations"]

[migrations]
service = "postgres"
url = "postgresql://{USER}:${{E2E_MIGRATE_PASSWORD}}@postgres:5432/{DB}"
source = "{}"
"#,
        source.display()
    ));
}

#[tokio::test]
async fn the_cli_shows_and_applies_migrations_through_the_published_port() {
    let pg = Postgres::start("cli");
    let p = Project::bare("migrate-cli");
    let file = p.file();
    let f = file.to_str().unwrap();
    let env = [("E2E_MIGRATE_PASSWORD", pg.password.as_str())];
    let berth = |args: &[&str]| {
        let run = p.berth_env(args, &env);
        assert!(
            !run.stdout.contains(&pg.password) && !run.stderr.contains(&pg.password),
            "berth {args:?} printed the password:\n{}{}",
            run.stdout,
            run.stderr
        );
        run
    };
    pg.ready().await.close().await.unwrap();

    write_desired(&p, &pg, &repo_migrations(), true);
    let s = berth(&["migrate", "status", "-f", f]);
    assert_eq!(s.code, 0, "{}{}", s.stdout, s.stderr);
    assert!(s.stdout.contains("0 applied, 3 pending"), "{}", s.stdout);
    assert!(
        s.stdout.contains("pending  0002 add user sessions"),
        "{}",
        s.stdout
    );

    let a = berth(&["migrate", "apply", "-f", f]);
    assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
    assert!(
        a.stdout.contains("applied 0001 initial schema"),
        "{}",
        a.stdout
    );
    assert!(a.stdout.contains("3 migration(s) applied"), "{}", a.stdout);

    let s = berth(&["migrate", "status", "-f", f]);
    assert_eq!(s.code, 0, "{}", s.stderr);
    assert!(
        s.stdout.contains("3 applied, 0 pending (version 3)"),
        "{}",
        s.stdout
    );
    let a = berth(&["migrate", "apply", "-f", f]);
    assert_eq!(a.code, 0, "{}", a.stderr);
    assert!(a.stdout.contains("No pending migrations."), "{}", a.stdout);

    // An applied migration edited since: exit 2, naming the file and the version.
    let edited = copy_migrations();
    let up = edited.path().join("0002_add_user_sessions.up.sql");
    std::fs::write(
        &up,
        "-- edited\n".to_string() + &std::fs::read_to_string(&up).unwrap(),
    )
    .unwrap();
    write_desired(&p, &pg, edited.path(), true);
    let a = berth(&["migrate", "apply", "-f", f]);
    assert_eq!(a.code, 2, "{}{}", a.stdout, a.stderr);
    assert!(a.stderr.contains("migration 2 ("), "{}", a.stderr);
    assert!(
        a.stderr.contains("0002_add_user_sessions.up.sql"),
        "{}",
        a.stderr
    );
    let s = berth(&["migrate", "status", "-f", f]);
    assert_eq!(s.code, 0, "{}", s.stderr);
    assert!(s.stdout.contains("EDITED"), "{}", s.stdout);

    // A database service without a published port: said plainly, a runtime error.
    write_desired(&p, &pg, &repo_migrations(), false);
    let s = berth(&["migrate", "status", "-f", f]);
    assert_eq!(s.code, 1, "{}{}", s.stdout, s.stderr);
    assert!(
        s.stderr
            .contains("the database is not reachable from the host"),
        "{}",
        s.stderr
    );

    // A desired state without a [migrations] block.
    p.write("[project]\nname = \"{project}\"\n[services.web]\nimage = \"web:1\"\n");
    let s = berth(&["migrate", "status", "-f", f]);
    assert_eq!(s.code, 2, "{}", s.stderr);
    assert!(s.stderr.contains("no [migrations] block"), "{}", s.stderr);
}
