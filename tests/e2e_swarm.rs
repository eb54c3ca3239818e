//! End-to-end: `engine = "swarm"` on a real single-node Swarm (docs/swarm.md). The engine
//! is made a manager for this test only (`docker swarm init --advertise-addr 127.0.0.1`
//! when it is not in a swarm yet) and always leaves again, its services deleted first,
//! even when an assertion fails ([`SwarmGuard`]). Swarm is engine-wide, so every case
//! runs in sequence in one test function (the migrations' test takes its turn after or
//! before it, [`one_swarm_test`]); a single-node swarm leaves plain containers alone,
//! so the one-host tests beside it are not disturbed.
//!
//! The image comes from a registry of the test's own on 127.0.0.1 (Debian's
//! `docker-registry`), so every pin has a registry digest, as Swarm needs.

mod common;

use std::time::Duration;

use common::daemon::Daemon;
use common::{FIXTURE, Project, Registry, docker, text};

const STACK: &str = r#"
[project]
name = "{project}"
engine = "swarm"

[rollout]
healthy_deadline = "{deadline}"
min_healthy_time = "500ms"

[services.db]
image = "{image}"
environment = { FIXTURE_READY_AFTER = "1", ROLE = "{db_role}" }
health = { probe = "http", port = 8080, path = "/health", interval = "200ms" }

[services.api]
image = "{image}"
depends_on = ["db"]
replicas = 2
update_order = "start-first"
environment = { ROLE = "api"{api_extra} }
health = { probe = "http", port = 8080, path = "/health", interval = "200ms" }

[services.web]
image = "{image}"
depends_on = ["api"]
environment = { ROLE = "web" }
health = { probe = "tcp", port = 8080, interval = "200ms" }
"#;

fn stack(image: &str, deadline: &str, db_role: &str, api_extra: &str) -> String {
    STACK
        .replace("{image}", image)
        .replace("{deadline}", deadline)
        .replace("{db_role}", db_role)
        .replace("{api_extra}", api_extra)
}

/// The engine as a single-node Swarm manager for the life of the guard. On drop (or
/// [`SwarmGuard::leave`]) the projects' services are deleted, their tasks waited out and
/// their networks removed, then the engine leaves the swarm.
struct SwarmGuard {
    projects: Vec<String>,
    left: bool,
    /// `docker swarm init` made `docker_gwbridge` (it outlives the swarm): removed on leave.
    made_gwbridge: bool,
}

fn swarm_state() -> String {
    text(&docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]))
        .trim()
        .to_string()
}

impl SwarmGuard {
    fn join() -> SwarmGuard {
        let made_gwbridge = !docker(&["network", "inspect", "docker_gwbridge"])
            .status
            .success();
        if swarm_state() != "active" {
            let out = docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
            assert!(
                out.status.success(),
                "docker swarm init: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_eq!(swarm_state(), "active", "premise: a swarm manager");
        SwarmGuard {
            projects: Vec::new(),
            left: false,
            made_gwbridge,
        }
    }

    fn leave(&mut self) {
        if self.left {
            return;
        }
        self.left = true;
        for p in &self.projects {
            let label = format!("label=berth.project={p}");
            let ids = text(&docker(&["service", "ls", "-q", "--filter", &label]));
            for id in ids.split_whitespace() {
                docker(&["service", "rm", id]);
            }
            // Tasks stop after their service goes; only then do the networks come free.
            common::wait_for(
                "the services' tasks to end",
                std::time::Duration::from_secs(60),
                || {
                    text(&docker(&[
                        "ps",
                        "-aq",
                        "--filter",
                        &format!("label=com.docker.swarm.service.name={p}-api"),
                    ]))
                    .trim()
                    .is_empty()
                        && ["db", "web"].iter().all(|s| {
                            text(&docker(&[
                                "ps",
                                "-aq",
                                "--filter",
                                &format!("label=com.docker.swarm.service.name={p}-{s}"),
                            ]))
                            .trim()
                            .is_empty()
                        })
                },
            );
            let nets = text(&docker(&["network", "ls", "-q", "--filter", &label]));
            for id in nets.split_whitespace() {
                docker(&["network", "rm", id]);
            }
        }
        // Another test may share this engine's swarm (e2e_swarm_two_node): its services
        // are waited out before leaving, so its swarm is not pulled from under it.
        // Never a panic here: this runs in Drop, maybe while unwinding.
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(300)
            && swarm_state() == "active"
            && !text(&docker(&["service", "ls", "-q"])).trim().is_empty()
        {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        docker(&["swarm", "leave", "--force"]);
        if self.made_gwbridge && swarm_state() == "inactive" {
            docker(&["network", "rm", "docker_gwbridge"]);
        }
    }
}

impl Drop for SwarmGuard {
    fn drop(&mut self) {
        self.leave();
    }
}

fn service_inspect(p: &Project, service: &str, format: &str) -> String {
    text(&docker(&[
        "service",
        "inspect",
        "--format",
        format,
        &p.container(service),
    ]))
    .trim()
    .to_string()
}

/// Swarm is engine-wide: this binary's tests take turns, each joining and leaving.
fn one_swarm_test() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn a_stack_on_a_single_node_swarm_converges_in_order_reverts_whole_and_is_repaired() {
    let _one = one_swarm_test();
    assert!(
        std::path::Path::new(common::REGISTRY_BIN).exists(),
        "{} is missing: run scripts/test-setup.sh",
        common::REGISTRY_BIN
    );
    let mut swarm = SwarmGuard::join();
    let reg = Registry::start();
    let p = Project::new("swarm");
    swarm.projects.push(p.name.clone());
    let image = reg.reference(&format!("{}:1", p.name));
    // Kept locally: the pin is the local image ID, its RepoDigest the push's digest.
    reg.push(FIXTURE, &image, true);
    let good = stack(&image, "30s", "db", "");

    // (a) The three tiers converge in dependency order, the api with 2 replicas, every
    // service running its image by registry digest.
    p.write(&good);
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let at = |line: &str| {
        run.stdout
            .find(line)
            .unwrap_or_else(|| panic!("{line:?} in {}", run.stdout))
    };
    assert!(at("db: healthy in") < at("api: created service"));
    assert!(at("api: healthy in") < at("web: created service"));
    assert!(run.stdout.contains("on 2 tasks"), "{}", run.stdout);
    assert!(
        run.stdout.contains("Converged: generation 1"),
        "{}",
        run.stdout
    );
    assert_eq!(
        service_inspect(&p, "api", "{{.Spec.Mode.Replicated.Replicas}}"),
        "2"
    );
    let running_image = service_inspect(&p, "api", "{{.Spec.TaskTemplate.ContainerSpec.Image}}");
    assert!(
        running_image.starts_with(&format!("{}@sha256:", image.rsplit_once(':').unwrap().0)),
        "{running_image}"
    );
    assert_eq!(
        service_inspect(&p, "api", "{{.Spec.UpdateConfig.FailureAction}}"),
        "pause",
        "Swarm's own rollback is never asked for"
    );
    assert_eq!(p.berth(&["apply"]).stdout.trim_end(), "No changes.");

    // (d) status shows each service's replicas and exits 0 when every one is healthy.
    let status = p.berth(&["status"]);
    assert_eq!(status.code, 0, "{}", status.stdout);
    assert!(status.stdout.contains("converged"), "{}", status.stdout);
    let api_row = status
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("api "))
        .unwrap_or_else(|| panic!("an api row in {}", status.stdout));
    assert!(api_row.contains("running 2/2"), "{api_row}");
    assert!(api_row.contains("healthy"), "{api_row}");

    // (b) An update of db (healthy) and api (never healthy) reverts every service to
    // generation 1: exit 3, history rolled-back, and the same state is then poisoned.
    p.write(&stack(
        &image,
        "6s",
        "db-2",
        r#", FIXTURE_NEVER_HEALTHY = "1""#,
    ));
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("db: updated in place"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("api: FAILED its gate"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("reverting project"), "{}", run.stdout);
    for s in ["db", "api", "web"] {
        assert_eq!(
            service_inspect(&p, s, "{{index .Spec.Labels \"berth.generation\"}}"),
            "1",
            "{s} is back on generation 1"
        );
        let env = service_inspect(&p, s, "{{json .Spec.TaskTemplate.ContainerSpec.Env}}");
        assert!(!env.contains("FIXTURE_NEVER_HEALTHY"), "{s}: {env}");
        assert!(!env.contains("db-2"), "{s}: {env}");
    }
    let history = p.history();
    let second = history
        .iter()
        .find(|g| g["outcome"] == "rolled-back")
        .unwrap_or_else(|| panic!("a rolled-back generation in {history:?}"));
    assert!(
        second["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("reverted to generation 1"),
        "{second}"
    );
    let again = p.berth(&["apply"]);
    assert_eq!(again.code, 5, "poisoned: {}{}", again.stdout, again.stderr);

    // (c) A service scaled to 0 by hand is repaired by the next apply, as generation 1.
    p.write(&good);
    assert_eq!(p.berth(&["apply"]).stdout.trim_end(), "No changes.");
    assert!(
        docker(&[
            "service",
            "scale",
            "-d",
            &format!("{}=0", p.container("api"))
        ])
        .status
        .success()
    );
    let status = p.berth(&["status"]);
    assert_eq!(
        status.code, 1,
        "scaled down is not converged: {}",
        status.stdout
    );
    assert!(
        status.stdout.contains("scaled to 0 of 2"),
        "{}",
        status.stdout
    );
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("repairing drift of generation 1"),
        "{}",
        run.stdout
    );
    assert_eq!(
        service_inspect(&p, "api", "{{.Spec.Mode.Replicated.Replicas}}"),
        "2"
    );
    // The newest generation is still the rolled-back one: status says so (exit 1, as
    // on one host), with every replica back.
    let status = p.berth(&["status"]);
    assert_eq!(status.code, 1, "{}", status.stdout);
    assert!(status.stdout.contains("rolled-back"), "{}", status.stdout);
    assert!(
        status.stdout.contains("api  running 2/2  healthy"),
        "{}",
        status.stdout
    );

    // (f) Configs and secrets: made by content hash before the service that uses them
    // (web), a changed config updates only web, the old one is pruned once no generation
    // of the newest five uses it, and the secret's value is never shown nor stored.
    let secret_value = "s3cr3t-swarm-pw-4711";
    let dir = p.dir.path();
    std::fs::write(dir.join("app.yml"), "level: 1\n").unwrap();
    let secret_file = dir.join("db_password");
    std::fs::write(&secret_file, format!("{secret_value}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let with_files = good.replace(
        "[services.web]\n",
        "[services.web]\nconfigs = [{ source = \"app.yml\", target = \"/etc/app.yml\" }]\nsecrets = [{ source = \"db_password\", target = \"db_password\" }]\n",
    );
    p.write(&with_files);
    let plan = p.berth(&["plan"]);
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("web: updated in place"),
        "{}",
        run.stdout
    );
    let configs = || {
        let label = format!("label=berth.project={}", p.name);
        let ls = text(&docker(&[
            "config",
            "ls",
            "--filter",
            &label,
            "--format",
            "{{.Name}}",
        ]));
        ls.split_whitespace().map(String::from).collect::<Vec<_>>()
    };
    let first_configs = configs();
    assert_eq!(first_configs.len(), 1, "{first_configs:?}");
    let first_config = first_configs[0].clone();
    assert!(
        first_config.starts_with(&format!("{}_web_app.yml_", p.name)),
        "{first_config}"
    );
    let web_task = || {
        let filter = format!("label=com.docker.swarm.service.name={}", p.container("web"));
        text(&docker(&["ps", "-q", "--filter", &filter]))
            .split_whitespace()
            .next()
            .map(String::from)
            .unwrap_or_else(|| panic!("a running web task"))
    };
    let in_task = |path: &str| {
        // The fixture is FROM scratch (no cat), and docker cp does not read a task's
        // secrets (a tmpfs): the file is read through the task's root, as root here.
        let pid = text(&docker(&[
            "inspect",
            "--format",
            "{{.State.Pid}}",
            &web_task(),
        ]));
        let file = format!("/proc/{}/root{path}", pid.trim());
        std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("reading {file}: {e}"))
    };
    assert!(in_task("/run/secrets/db_password").contains(secret_value));
    assert!(in_task("/etc/app.yml").contains("level: 1"));
    let version = |s: &str| service_inspect(&p, s, "{{.Version.Index}}");
    let (db_version, api_version) = (version("db"), version("api"));

    // Nowhere in what berth prints or stores.
    let mut shown = String::new();
    for args in [&["plan"][..], &["status"], &["history", "--json"]] {
        let out = p.berth(args);
        shown.push_str(&out.stdout);
        shown.push_str(&out.stderr);
    }
    shown.push_str(&run.stdout);
    shown.push_str(&run.stderr);
    assert!(!shown.contains(secret_value), "the secret shown: {shown}");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("state.db")
        {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(secret_value),
                "the secret is in {}",
                path.display()
            );
        }
    }

    // A changed config: a new config, web alone updated.
    std::fs::write(dir.join("app.yml"), "level: 2\n").unwrap();
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("web: updated in place"),
        "{}",
        run.stdout
    );
    assert_eq!(version("db"), db_version, "db is not touched");
    assert_eq!(version("api"), api_version, "api is not touched");
    assert!(in_task("/etc/app.yml").contains("level: 2"));
    let now = configs();
    assert_eq!(
        now.len(),
        2,
        "the old one is kept while a recent generation uses it: {now:?}"
    );
    // Four more generations, and the first config is used by none of the newest five.
    for level in 3..=6 {
        std::fs::write(dir.join("app.yml"), format!("level: {level}\n")).unwrap();
        let run = p.berth(&["apply"]);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    }
    let now = configs();
    assert!(!now.contains(&first_config), "pruned: {now:?}");
    assert_eq!(
        now.len(),
        5,
        "the newest five generations' configs: {now:?}"
    );
    assert_eq!(version("db"), db_version, "db is not touched");

    // (g) Drift by Swarm's events under `berth run`: a `docker service update` by hand
    // keeps berth's labels but changes the spec; the daemon wakes on the service event
    // and puts the spec back, as a repair of the current generation.
    let d = Daemon::build(&p).file().start();
    common::wait_for("the daemon's first turn", Duration::from_secs(60), || {
        d.status()["status"] == "converged"
    });
    let current = p.history().last().unwrap()["id"].as_i64().unwrap();
    let env = || service_inspect(&p, "web", "{{json .Spec.TaskTemplate.ContainerSpec.Env}}");
    assert!(
        docker(&[
            "service",
            "update",
            "--detach",
            "--env-add",
            "X=1",
            &p.container("web")
        ])
        .status
        .success()
    );
    assert!(env().contains("X=1"), "{}", env());
    let t0 = std::time::Instant::now();
    common::wait_for("the hand update undone", Duration::from_secs(30), || {
        !env().contains("X=1")
    });
    common::wait_for("the repair recorded", Duration::from_secs(30), || {
        d.status()["repairs"].as_u64().unwrap_or(0) >= 1
    });
    eprintln!("a hand update undone in {:?}", t0.elapsed());
    let history = p.history();
    let g = history.last().unwrap();
    assert_eq!(
        g["id"].as_i64(),
        Some(current),
        "a repair, not a generation"
    );
    // history --json counts a generation's repair events (they are not listed).
    assert!(
        g["repairs"].as_u64().unwrap_or(0) >= 1,
        "a repair event of generation {current}: {g}"
    );
    assert_eq!(d.stop(), 0, "the daemon stops cleanly");

    // (e) Against an engine that is not a manager: a clear error, exit 1, nothing changed.
    let generations = p.history().len();
    swarm.leave();
    assert_eq!(swarm_state(), "inactive", "premise: left the swarm");
    p.write(&stack(&image, "30s", "db-3", ""));
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("is not a Swarm manager"),
        "{}",
        run.stderr
    );
    assert_eq!(p.history().len(), generations, "no generation recorded");
    assert!(p.containers().is_empty(), "nothing started");
}

const POSTGRES: &str = "berth-postgres:15";
const PG_PASSWORD: &str = "e2e-swarm-mig-pw-7Rt";

/// PostgreSQL (placed on the manager, its data in a named volume) and an app that waits
/// for the migrations: `db` and `api`, so the guard's clean-up finds their tasks.
const MIGRATING: &str = r#"
[project]
name = "{project}"
engine = "swarm"

[rollout]
healthy_deadline = "{deadline}"
min_healthy_time = "500ms"
progress_deadline = "10m"

[services.db]
image = "{pg}"
environment = { POSTGRES_USER = "assistant", POSTGRES_PASSWORD = "{password}", POSTGRES_DB = "assistant" }
volumes = ["{project}-pg:/var/lib/postgresql/data"]
placement = { constraints = ["node.role == manager"] }
health = { probe = "postgres", port = 5432, user = "assistant", password = "{password}", database = "assistant", interval = "250ms", healthy_deadline = "120s" }

[services.api]
image = "{image}"
depends_on = ["migrations"]
environment = { ROLE = "api", VERSION = "{version}"{api_extra} }
health = { probe = "http", port = 8080, path = "/health", interval = "200ms" }

[migrations]
service = "db"
url = "postgresql://assistant:{password}@db:5432/assistant"
source = "migrations"
backup = true
backup_dir = "{backups}"
"#;

/// One SQL command through psql in the database's task container (this node's).
fn task_psql(p: &Project, query: &str) -> String {
    let filter = format!("label=com.docker.swarm.service.name={}", p.container("db"));
    let task = text(&docker(&["ps", "-q", "--filter", &filter]));
    let task = task
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("a running db task"));
    let out = docker(&[
        "exec",
        task,
        "psql",
        "-X",
        "-At",
        "-v",
        "ON_ERROR_STOP=1",
        "-U",
        "assistant",
        "-d",
        "assistant",
        "-c",
        query,
    ]);
    assert!(
        out.status.success(),
        "psql {query:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text(&out).trim().to_string()
}

/// Migrations under Swarm, with a backup, and a failed deploy reverting the schema with
/// every service.
#[test]
fn migrations_on_a_swarm_run_gated_and_a_failed_deploy_reverts_the_schema_with_the_services() {
    common::require_images(&[POSTGRES], "scripts/build-images.sh postgres");
    let _one = one_swarm_test();
    // Dropped last: its volume comes free once the swarm guard removed the services.
    let p = Project::new("swarm-mig");
    let mut swarm = SwarmGuard::join();
    let reg = Registry::start();
    let app_image = &reg.reference(&format!("{}-app:1", p.name));
    reg.push(FIXTURE, app_image, true);
    swarm.projects.push(p.name.clone());
    common::copy_repo_migrations(&p.dir.path().join("migrations"));
    let pg = reg.reference(&format!("{}-pg:15", p.name));
    reg.push(POSTGRES, &pg, true);
    let backups = p.dir.path().join("backups");
    let stack = |version: &str, deadline: &str, api_extra: &str| {
        MIGRATING
            .replace("{pg}", &pg)
            .replace("{image}", app_image)
            .replace("{password}", PG_PASSWORD)
            .replace("{version}", version)
            .replace("{deadline}", deadline)
            .replace("{api_extra}", api_extra)
            .replace("{backups}", &backups.display().to_string())
    };

    // Generation 1: the migrations run once the database passed its gate, backed up
    // first (pg_dump in the task's container), before the app that waits for them.
    p.write(&stack("1", "30s", ""));
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let at = |out: &str, line: &str| {
        out.find(line)
            .unwrap_or_else(|| panic!("{line:?} in {out}"))
    };
    assert!(at(&run.stdout, "db: healthy in") < at(&run.stdout, "migrations: backup "));
    assert!(
        at(&run.stdout, "migrations: applying 0001_initial_schema")
            < at(&run.stdout, "api: created service")
    );
    assert_eq!(
        task_psql(&p, "SELECT coalesce(max(version), 0) FROM _sqlx_migrations"),
        "3"
    );
    let h = p.history();
    assert_eq!(h[0]["schema_version"], 3, "{}", h[0]);
    let backup = h[0]["backup"]
        .as_str()
        .unwrap_or_else(|| panic!("a recorded backup: {}", h[0]));
    assert!(
        std::path::Path::new(backup).starts_with(&backups),
        "{backup}"
    );
    // plan asks the database on this node, and the services stand for containers.
    let plan = p.berth(&["plan"]);
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    assert!(
        !plan.stdout.contains("create"),
        "nothing to create: {}",
        plan.stdout
    );
    assert!(!plan.stdout.contains("migrations:"), "{}", plan.stdout);
    // berth check probes every task.
    let check = p.berth(&["check"]);
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);

    // Generation 2 adds 0004 and an app that never gets healthy: 0004 is applied, the
    // app fails its gate, and the revert undoes 0004 and puts the app back.
    std::fs::write(
        p.dir.path().join("migrations/0004_add_widgets.up.sql"),
        "CREATE TABLE e2e_widgets (id bigserial PRIMARY KEY);\n",
    )
    .unwrap();
    std::fs::write(
        p.dir.path().join("migrations/0004_add_widgets.down.sql"),
        "DROP TABLE e2e_widgets;\n",
    )
    .unwrap();
    p.write(&stack("2", "6s", r#", FIXTURE_NEVER_HEALTHY = "1""#));
    let plan = p.berth(&["plan"]);
    assert!(
        plan.stdout.contains("migrations: apply 0004_add_widgets"),
        "{}",
        plan.stdout
    );
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(
        at(&run.stdout, "migrations: applying 0004_add_widgets")
            < at(&run.stdout, "api: FAILED its gate"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("reverting project"), "{}", run.stdout);
    assert_eq!(
        task_psql(&p, "SELECT to_regclass('public.e2e_widgets') IS NULL"),
        "t",
        "0004 is undone"
    );
    assert_eq!(
        task_psql(&p, "SELECT coalesce(max(version), 0) FROM _sqlx_migrations"),
        "3"
    );
    assert_eq!(
        service_inspect(&p, "api", "{{index .Spec.Labels \"berth.generation\"}}"),
        "1"
    );
    let env = service_inspect(&p, "api", "{{json .Spec.TaskTemplate.ContainerSpec.Env}}");
    assert!(
        env.contains("VERSION=1") && !env.contains("FIXTURE_NEVER_HEALTHY"),
        "{env}"
    );
    let h = p.history();
    let g = h.last().unwrap();
    assert_eq!(g["outcome"], "rolled-back", "{g}");
    assert!(
        g["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("reverted to generation 1"),
        "{g}"
    );

    // A service removed by hand is made again by the next apply, on the generation it
    // belonged to.
    assert!(
        docker(&["service", "rm", &p.container("api")])
            .status
            .success()
    );
    p.write(&stack("1", "30s", ""));
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("api: created service"),
        "{}",
        run.stdout
    );
    assert_eq!(
        service_inspect(&p, "api", "{{.Spec.Mode.Replicated.Replicas}}"),
        "1"
    );

    // down removes every service and network of the project, and keeps its volume.
    let run = p.berth(&["down"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let label = format!("label=berth.project={}", p.name);
    assert!(
        text(&docker(&["service", "ls", "-q", "--filter", &label]))
            .trim()
            .is_empty(),
        "no service left"
    );
    assert_eq!(p.history().last().unwrap()["outcome"], "down");
    let volume = format!("{}-pg", p.name);
    assert!(
        docker(&["volume", "inspect", &volume]).status.success(),
        "the database's volume {volume} is kept"
    );
    let status = p.berth(&["status"]);
    assert_eq!(status.code, 1, "{}", status.stdout);
    assert!(status.stdout.contains("down"), "{}", status.stdout);
}
