//! The Local Assistant stack against the real engine: the four services the local build
//! covers — PostgreSQL, Redis, ChromaDB, Prometheus — converged from the real
//! `desired-state/local-assistant.toml` under a test project name and test ports, each one
//! then proved with its own protocol from the test (not through berth), and `berth check`
//! shown to pass and to fail. Grafana and Jaeger need their upstream images, which cannot
//! be pulled here: the test leaves Grafana out with `--exclude grafana`, and Jaeger is
//! behind the `tracing` profile.
//!
//! Also the runbook's pre-flight: each check failing on purpose gives its own line and
//! changes nothing.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Project, Run, docker, free_port, require_images, text};

const IMAGES: [&str; 4] = [
    "berth-postgres:15",
    "berth-redis:7",
    "berth-chroma:latest",
    "berth-prometheus:2",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A copy of the stack's layout in a temp dir: `desired-state/local-assistant.toml`
/// (verbatim, or with one edit), `.env` from `.env.example` with test secrets, and
/// `config/` and `migrations/` pointing at the repository's.
struct Stack {
    p: Project,
    pg: u16,
    redis: u16,
    chroma: u16,
    prom: u16,
    password: String,
}

impl Stack {
    fn new(test: &str) -> Stack {
        let p = Project::bare(test);
        let root = p.dir.path();
        std::fs::create_dir(root.join("desired-state")).unwrap();
        std::os::unix::fs::symlink(repo().join("config"), root.join("config")).unwrap();
        std::os::unix::fs::symlink(repo().join("migrations"), root.join("migrations")).unwrap();
        let s = Stack {
            pg: free_port(),
            redis: free_port(),
            chroma: free_port(),
            prom: free_port(),
            password: format!("e2e-pw-{}-x7Qz", std::process::id()),
            p,
        };
        s.write_file(|t| t);
        s.write_env(|e| e);
        s
    }

    fn root(&self) -> PathBuf {
        self.p.dir.path().to_path_buf()
    }

    fn file(&self) -> PathBuf {
        self.root().join("desired-state/local-assistant.toml")
    }

    /// Write the desired state from the repository's file through `edit`.
    fn write_file(&self, edit: impl FnOnce(String) -> String) {
        let text =
            std::fs::read_to_string(repo().join("desired-state/local-assistant.toml")).unwrap();
        std::fs::write(self.file(), edit(text)).unwrap();
    }

    /// Write `.env` (mode 600) from `.env.example` with this test's secrets, through `edit`.
    fn write_env(&self, edit: impl FnOnce(String) -> String) {
        let example = std::fs::read_to_string(repo().join(".env.example")).unwrap();
        let env = example
            .replace("change-me-too", "grafana-e2e-pw")
            .replace("change-me", &self.password);
        let path = self.root().join(".env");
        std::fs::write(&path, edit(env)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn berth(&self, args: &[&str]) -> Run {
        let file = self.file();
        let mut all = args.to_vec();
        all.extend(["-f", file.to_str().unwrap(), "--exclude", "grafana"]);
        let ports = [
            self.pg.to_string(),
            self.redis.to_string(),
            self.chroma.to_string(),
            self.prom.to_string(),
        ];
        let run = self.p.berth_env(
            &all,
            &[
                ("BERTH_PROJECT", &self.p.name),
                ("POSTGRES_HOST_PORT", &ports[0]),
                ("REDIS_HOST_PORT", &ports[1]),
                ("CHROMA_HOST_PORT", &ports[2]),
                ("PROMETHEUS_HOST_PORT", &ports[3]),
            ],
        );
        // Secrets never appear in anything berth prints.
        for secret in [
            self.password.as_str(),
            "sk-ant-replace-with-your-anthropic-key",
            "grafana-e2e-pw",
        ] {
            assert!(
                !run.stdout.contains(secret) && !run.stderr.contains(secret),
                "berth {args:?} printed a secret"
            );
        }
        run
    }

    fn data(&self, dir: &str) -> PathBuf {
        self.root().join("data").join(dir)
    }

    fn mode(&self, dir: &str) -> u32 {
        std::fs::metadata(self.data(dir))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// GET a URL on the host, returning (status, body).
async fn get(url: &str) -> Result<(u16, String), String> {
    // The test's own reqwest client needs a TLS provider, as berth's main installs.
    berth::notify::tls::install_provider();
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    Ok((status, r.text().await.map_err(|e| e.to_string())?))
}

#[test]
fn the_four_local_services_converge_and_answer_their_own_protocols() {
    require_images(&IMAGES, "scripts/build-images.sh");
    let s = Stack::new("stack");

    // Pre-flight passes and creates the runbook's data directories with its modes.
    let v = s.berth(&["validate"]);
    assert_eq!(v.code, 0, "{}", v.stderr);
    assert!(
        v.stdout
            .contains("all 21 required environment variables are set")
    );
    assert!(v.stdout.contains("Docker Engine"), "{}", v.stdout);
    assert_eq!(s.mode(""), 0o755);
    for private in ["postgres", "redis", "chroma"] {
        assert_eq!(s.mode(private), 0o700, "data/{private}");
    }
    for open in ["prometheus", "logs", "backups", "screenshots", "documents"] {
        assert_eq!(s.mode(open), 0o755, "data/{open}");
    }

    let a = s.berth(&["apply"]);
    assert_eq!(a.code, 0, "{}", a.stderr);
    assert!(a.stdout.contains("Converged: generation 1"), "{}", a.stdout);
    // The migrations step took its backup before applying, into the stack's own
    // data/backups (inside the test's temp dir).
    let backups: Vec<String> = std::fs::read_dir(s.root().join("data/backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sql.gz"))
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert!(
        a.stdout
            .contains(&format!("migrations: backup {}", s.root().display())),
        "{}",
        a.stdout
    );
    // The runbook's start order: chroma only after postgres and redis were healthy, and
    // prometheus only after chroma.
    let started = |svc: &str| {
        let t = s.p.inspect(svc, "{{.State.StartedAt}}");
        chrono_like(&t)
    };
    assert!(started("chroma") > started("postgres"));
    assert!(started("chroma") > started("redis"));
    assert!(started("prometheus") > started("chroma"));
    let names = s.p.containers();
    assert_eq!(
        names,
        ["chroma", "postgres", "prometheus", "redis"]
            .iter()
            .map(|n| s.p.container(n))
            .collect::<Vec<_>>()
    );

    rt().block_on(async {
        // PostgreSQL answers a query on its published port, with the password from .env.
        use sqlx::Connection;
        let url = format!(
            "postgres://assistant:{}@127.0.0.1:{}/assistant?sslmode=disable",
            s.password, s.pg
        );
        let mut pg = sqlx::PgConnection::connect(&url).await.unwrap();
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut pg)
            .await
            .unwrap();
        assert_eq!(one, 1);
        sqlx::query("CREATE TABLE e2e_marker (id int)")
            .execute(&mut pg)
            .await
            .unwrap();
        let version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&mut pg)
            .await
            .unwrap();
        assert!(version.starts_with("15."), "{version}");
        pg.close().await.unwrap();

        // Redis answers PONG.
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/0", s.redis)).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
        assert_eq!(pong, "PONG");

        // Chroma's heartbeat answers (v2: chromadb 1.x answers 410 on the runbook's v1).
        let (code, body) = get(&format!("http://127.0.0.1:{}/api/v2/heartbeat", s.chroma))
            .await
            .unwrap();
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("nanosecond heartbeat"), "{body}");

        // Prometheus reports its own scrape target up (the first scrape can take a
        // scrape interval).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (code, body) = get(&format!("http://127.0.0.1:{}/api/v1/targets", s.prom))
                .await
                .unwrap();
            assert_eq!(code, 200, "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let up = v["data"]["activeTargets"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["labels"]["job"] == "prometheus" && t["health"] == "up");
            if up {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus target never up: {body}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // Its rules are the runbook's alerts, loaded from config/alerts.yml.
        let (_, rules) = get(&format!("http://127.0.0.1:{}/api/v1/rules", s.prom))
            .await
            .unwrap();
        for alert in [
            "HighErrorRate",
            "DatabaseConnectionsHigh",
            "RedisMemoryHigh",
            "ServiceDown",
        ] {
            assert!(rules.contains(alert), "{alert} not loaded: {rules}");
        }
    });

    // berth check: every service healthy with a response time; the tables are counted:
    // the one made above, the six of `migrations/` (apply ran them as a step) and
    // `_sqlx_migrations`.
    let c = s.berth(&["check"]);
    assert_eq!(c.code, 0, "{}", c.stdout);
    for svc in ["postgres", "redis", "chroma", "prometheus"] {
        assert!(
            c.stdout
                .contains(&format!("✓ {svc} is healthy (response time: ")),
            "{svc}: {}",
            c.stdout
        );
    }
    assert!(c.stdout.contains("database connection successful"));
    assert!(
        c.stdout.contains("can execute queries (8 tables found"),
        "{}",
        c.stdout
    );
    assert!(c.stdout.contains("PONG, used_memory"), "{}", c.stdout);
    assert!(c.stdout.contains("All checks passed."));
    let j = s.berth(&["check", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(v["healthy"], true);
    assert_eq!(v["services"].as_array().unwrap().len(), 4);

    // A second apply changes nothing.
    let ids: Vec<_> = ["postgres", "redis", "chroma", "prometheus"]
        .iter()
        .map(|n| s.p.id(n).unwrap())
        .collect();
    let again = s.berth(&["apply"]);
    assert_eq!(again.code, 0);
    assert!(again.stdout.contains("No changes."), "{}", again.stdout);
    let after: Vec<_> = ["postgres", "redis", "chroma", "prometheus"]
        .iter()
        .map(|n| s.p.id(n).unwrap())
        .collect();
    assert_eq!(ids, after);

    // check fails, and says which service, when one is down.
    assert!(
        docker(&["stop", "-t", "1", &s.p.container("redis")])
            .status
            .success()
    );
    let down = s.berth(&["check"]);
    assert_eq!(down.code, 1, "{}", down.stdout);
    assert!(
        down.stdout.contains("✗ redis is NOT healthy"),
        "{}",
        down.stdout
    );
    assert!(down.stdout.contains("✓ postgres is healthy"));
    assert!(down.stdout.contains("1 of 4 services failed their check."));

    // apply puts it back (Docker's restart policy does not restart a stopped container).
    let heal = s.berth(&["apply"]);
    assert_eq!(heal.code, 0, "{}", heal.stderr);
    assert_eq!(s.berth(&["check"]).code, 0);
}

/// Docker's RFC 3339 StartedAt compares correctly as text once the fraction is padded.
fn chrono_like(t: &str) -> String {
    let (head, frac) = t.trim_end_matches('Z').split_once('.').unwrap_or((t, "0"));
    format!("{head}.{frac:0<9}")
}

/// Run `validate` on a stack broken by `breaks`, expecting exit 2 with `expect` in one
/// line located at the file (and nothing created).
fn preflight_fails(s: &Stack, expect: &str) -> String {
    let v = s.berth(&["validate"]);
    assert_eq!(v.code, 2, "expected exit 2: {}{}", v.stdout, v.stderr);
    let line = v
        .stderr
        .lines()
        .find(|l| l.contains(expect))
        .unwrap_or_else(|| panic!("no line with {expect:?} in:\n{}", v.stderr))
        .to_string();
    assert!(
        v.stderr.contains("pre-flight failed; nothing was changed")
            || v.stderr.contains("nothing was changed")
    );
    // `apply` refuses the same way, and starts nothing.
    let a = s.berth(&["apply"]);
    assert_eq!(a.code, 2, "{}", a.stderr);
    assert!(a.stderr.contains(expect));
    assert!(s.p.containers().is_empty());
    line
}

#[test]
fn each_preflight_check_failing_gives_its_own_message() {
    let file = |s: &Stack| s.file().to_str().unwrap().to_string();

    // A required variable is missing: located at its entry in required_env.
    let s = Stack::new("pf-env");
    s.write_env(|e| e.replace("COST_LIMIT_PER_DAY=50.00\n", ""));
    let line = preflight_fails(&s, "required variable COST_LIMIT_PER_DAY is not set");
    assert!(line.starts_with(&format!("{}:", file(&s))), "{line}");
    assert!(!s.data("").exists(), "a failed pre-flight created data/");

    // An API key that does not look like one; its value is not shown.
    let s = Stack::new("pf-key");
    s.write_env(|e| {
        e.replace(
            "OPENAI_API_KEY=sk-replace-with-your-openai-key-000",
            "OPENAI_API_KEY=not-a-key-value",
        )
    });
    let line = preflight_fails(&s, "OPENAI_API_KEY does not look like an API key");
    assert!(!line.contains("not-a-key-value"), "{line}");

    // DATABASE_URL that does not parse as PostgreSQL.
    let s = Stack::new("pf-dburl");
    s.write_env(|e| e.replace("DATABASE_URL=postgresql://", "DATABASE_URL=mysql://"));
    preflight_fails(
        &s,
        "DATABASE_URL is not a usable PostgreSQL URL: scheme \"mysql\"",
    );
    let s = Stack::new("pf-dburl2");
    s.write_env(|e| {
        let start = e.find("DATABASE_URL=").unwrap();
        let end = start + e[start..].find('\n').unwrap();
        format!(
            "{}DATABASE_URL=postgresql://assistant@postgres:5432/{}",
            &e[..start],
            &e[end..]
        )
    });
    preflight_fails(
        &s,
        "DATABASE_URL is not a usable PostgreSQL URL: no database name",
    );

    // A host port someone else holds: located at the service's ports entry.
    let s = Stack::new("pf-port");
    let holder = std::net::TcpListener::bind(("0.0.0.0", s.redis)).unwrap();
    let line = preflight_fails(
        &s,
        &format!(
            "host port 0.0.0.0:{}/tcp (service \"redis\") is already in use",
            s.redis
        ),
    );
    assert!(line.starts_with(&format!("{}:", file(&s))), "{line}");
    drop(holder);

    // .env readable by others.
    let s = Stack::new("pf-envmode");
    std::fs::set_permissions(
        s.root().join(".env"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    preflight_fails(&s, "chmod 600");

    // A data directory with the wrong mode is reported, not changed.
    let s = Stack::new("pf-dirmode");
    std::fs::create_dir_all(s.data("postgres")).unwrap();
    std::fs::set_permissions(s.data("postgres"), std::fs::Permissions::from_mode(0o755)).unwrap();
    preflight_fails(&s, "has mode 0755, expected 0700 (chmod 700 ");
    assert_eq!(s.mode("postgres"), 0o755);
    assert!(!s.data("redis").exists());

    // Not enough free disk.
    let s = Stack::new("pf-disk");
    s.write_file(|t| {
        t.replace(
            "min_free_disk = \"10GiB\"",
            "min_free_disk = \"1000000TiB\"",
        )
    });
    preflight_fails(&s, "free on the filesystem of");

    // A Docker Engine older than asked for.
    let s = Stack::new("pf-docker-old");
    s.write_file(|t| {
        t.replace(
            "docker_min_version = \"20.10\"",
            "docker_min_version = \"99.0\"",
        )
    });
    preflight_fails(&s, "is older than docker_min_version 99.0");

    // No Docker Engine at all: a runtime error (exit 1), not an invalid desired state.
    let s = Stack::new("pf-docker-gone");
    let r = s.p.berth_env(
        &[
            "validate",
            "-f",
            s.file().to_str().unwrap(),
            "--exclude",
            "grafana",
        ],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("the Docker engine is not reachable"),
        "{}",
        r.stderr
    );
    assert!(!s.data("").exists());

    // `--static` checks only the files and the environment.
    let s = Stack::new("pf-static");
    let holder = std::net::TcpListener::bind(("0.0.0.0", s.pg)).unwrap();
    let r = s.berth(&["validate", "--static"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!s.data("").exists());
    drop(holder);

    // Every failure at once, one line each.
    let s = Stack::new("pf-all");
    s.write_env(|e| {
        e.replace("LOG_LEVEL=INFO\n", "")
            .replace("GOOGLE_API_KEY=AIza", "GOOGLE_API_KEY=xx")
    });
    let v = s.berth(&["validate"]);
    assert_eq!(v.code, 2);
    assert!(v.stderr.contains("required variable LOG_LEVEL is not set"));
    assert!(
        v.stderr
            .contains("GOOGLE_API_KEY does not look like an API key")
    );
}

#[test]
fn the_shipped_desired_state_validates_with_the_example_env() {
    // What a person gets from `cp .env.example .env`: valid as shipped, with Grafana in
    // the plan and Jaeger only under the tracing profile.
    let s = Stack::new("shipped");
    let file = s.file();
    let f = file.to_str().unwrap();
    let plain = s.p.berth_env(&["validate", "--static", "-f", f], &[]);
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    assert!(
        plain
            .stdout
            .contains("valid (5 services, project \"assistant\")"),
        "{}",
        plain.stdout
    );
    let tracing = s.p.berth_env(
        &["validate", "--static", "-f", f, "--profile", "tracing"],
        &[],
    );
    assert!(
        tracing.stdout.contains("valid (6 services"),
        "{}",
        tracing.stdout
    );
    let excluded = s.p.berth_env(
        &["validate", "--static", "-f", f, "--exclude", "prometheus"],
        &[],
    );
    assert_eq!(excluded.code, 2);
    assert!(
        excluded
            .stderr
            .contains("service \"grafana\" depends on \"prometheus\", which --exclude leaves out"),
        "{}",
        excluded.stderr
    );
    let unknown = s.p.berth_env(
        &["validate", "--static", "-f", f, "--exclude", "grafna"],
        &[],
    );
    assert_eq!(unknown.code, 2);
    assert!(
        unknown
            .stderr
            .contains("--exclude \"grafna\": no such service")
    );
    let _ = text;
}

/// The Grafana-style check (`/api/health` must say `"database": "ok"`), proved on the test
/// fixture since Grafana's image cannot be had here: the fixture serves an environment
/// variable's value at `/env/NAME`, standing in for Grafana's JSON.
#[test]
fn an_http_probe_with_expect_json_gates_on_the_body() {
    let p = Project::new("expectjson");
    p.write(
        r#"
[project]
name = "{project}"

[rollout]
healthy_deadline = "3s"
min_healthy_time = "300ms"

[services.grafana]
image = "berth-fixture:test"
environment = { HEALTH = '{"commit": "abc", "database": "ok", "version": "10.4.2"}' }
health = { probe = "http", port = 8080, path = "/env/HEALTH", expect_json = { database = "ok" }, interval = "100ms" }
"#,
    );
    let ok = p.berth(&["apply"]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let c = p.berth(&["check"]);
    assert_eq!(c.code, 0, "{}", c.stdout);
    assert!(c.stdout.contains("200 OK, database=\"ok\""), "{}", c.stdout);

    // The server answers 200 but its database is failing: the gate fails on the body.
    let text = std::fs::read_to_string(p.file())
        .unwrap()
        .replace(r#""database": "ok""#, r#""database": "failing""#);
    std::fs::write(p.file(), text).unwrap();
    let bad = p.berth(&["apply"]);
    assert_eq!(bad.code, 3, "{}", bad.stderr);
    assert!(
        bad.stderr
            .contains(r#"200 OK, but database is "failing", expected "ok""#),
        "{}",
        bad.stderr
    );
}

/// Copy a directory tree (the stack's `config/`), so one file in it can be edited.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The stack under `berth run --listen host-gateway:PORT`: the stack's own Prometheus
/// (config/prometheus.yml as shipped, only berth's port changed to a free one) scrapes
/// berth through `host.docker.internal` and reports the `berth` target up.
#[test]
fn under_berth_run_the_stacks_prometheus_scrapes_berth() {
    require_images(&IMAGES, "scripts/build-images.sh");
    let s = Stack::new("stack-run");
    let berth_port = free_port();
    let local_port = free_port();
    let config = s.root().join("config");
    std::fs::remove_file(&config).unwrap();
    copy_tree(&repo().join("config"), &config);
    let prom_yml = config.join("prometheus.yml");
    let shipped = std::fs::read_to_string(&prom_yml).unwrap();
    assert!(
        shipped.contains("host.docker.internal:9464"),
        "premise: the shipped scrape target"
    );
    std::fs::write(
        &prom_yml,
        shipped.replace(
            "host.docker.internal:9464",
            &format!("host.docker.internal:{berth_port}"),
        ),
    )
    .unwrap();

    let log = std::fs::File::create(s.root().join("daemon.log")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "run",
            "-f",
            s.file().to_str().unwrap(),
            "--exclude",
            "grafana",
            "--listen",
            &format!("127.0.0.1:{local_port}"),
            "--listen",
            &format!("host-gateway:{berth_port}"),
        ])
        .env("BERTH_STATE", s.p.state())
        .env("BERTH_LOG", "info")
        .env("BERTH_PROJECT", &s.p.name)
        .env("POSTGRES_HOST_PORT", s.pg.to_string())
        .env("REDIS_HOST_PORT", s.redis.to_string())
        .env("CHROMA_HOST_PORT", s.chroma.to_string())
        .env("PROMETHEUS_HOST_PORT", s.prom.to_string())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            let _ = self.0.wait();
        }
    }
    let guard = Kill(&mut child);

    let rt = rt();
    let wait = |what: &str, limit: Duration, check: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !check() {
            if start.elapsed() > limit {
                let log = std::fs::read_to_string(s.root().join("daemon.log")).unwrap_or_default();
                let status =
                    rt.block_on(get(&format!("http://127.0.0.1:{local_port}/api/v1/status")));
                panic!("timed out waiting for {what}; status: {status:?}\ndaemon log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    wait(
        "the stack to converge under berth run",
        Duration::from_secs(240),
        &|| {
            rt.block_on(get(&format!("http://127.0.0.1:{local_port}/api/v1/status")))
                .is_ok_and(|(code, body)| code == 200 && body.contains("\"status\": \"converged\""))
        },
    );
    // Prometheus scrapes every 15 s; its targets API says whether berth's is up.
    let targets = format!("http://127.0.0.1:{}/api/v1/targets", s.prom);
    wait(
        "Prometheus to report the berth target up",
        Duration::from_secs(90),
        &|| {
            let Ok((200, body)) = rt.block_on(get(&targets)) else {
                return false;
            };
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            v["data"]["activeTargets"].as_array().is_some_and(|ts| {
                ts.iter().any(|t| {
                    t["labels"]["job"] == "berth"
                        && t["health"] == "up"
                        && t["scrapeUrl"]
                            .as_str()
                            .is_some_and(|u| u.contains(&berth_port.to_string()))
                })
            })
        },
    );
    // And what it scraped is berth's: the project's status gauge.
    let query = format!(
        "http://127.0.0.1:{}/api/v1/query?query=berth_engine_reachable",
        s.prom
    );
    let (code, body) = rt.block_on(get(&query)).unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"job\":\"berth\""), "{body}");
    drop(guard);
    assert!(
        child.try_wait().unwrap().is_some_and(|s| s.success()),
        "berth run stopped with exit 0"
    );
}
