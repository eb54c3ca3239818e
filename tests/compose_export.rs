//! `berth export compose`: the desired state as a Compose file (docs/compose.md, "Export").
//! No Docker needed: each test runs the built binary on a desired state in a temp dir and
//! reads the YAML back with saphyr.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use saphyr::{LoadableYamlNode, Yaml};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `berth export compose ARGS` run in `dir`, with none of the variables the desired
/// states below default from the test's own environment.
fn export(dir: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.arg("export").arg("compose").args(args).current_dir(dir);
    for var in [
        "BERTH_FILE",
        "BERTH_PROJECT",
        "POSTGRES_HOST_PORT",
        "REDIS_HOST_PORT",
        "CHROMA_HOST_PORT",
        "PROMETHEUS_HOST_PORT",
        "GRAFANA_HOST_PORT",
        "JAEGER_UI_HOST_PORT",
        "JAEGER_COLLECTOR_HOST_PORT",
        "POSTGRES_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
        "DATABASE_URL",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd.output().unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!(
        "$ berth export compose {}\n{}{}(exit {})",
        args.join(" "),
        run.stdout,
        run.stderr,
        run.code
    );
    run
}

fn parse(text: &str) -> Yaml<'_> {
    let mut docs = Yaml::load_from_str(text).expect("the export is YAML");
    assert_eq!(docs.len(), 1, "one document");
    docs.remove(0)
}

fn str_of<'a>(y: &'a Yaml<'a>) -> &'a str {
    y.as_str().unwrap_or_else(|| panic!("not a string: {y:?}"))
}

fn strings<'a>(y: &'a Yaml<'a>) -> Vec<&'a str> {
    y.as_vec()
        .unwrap_or_else(|| panic!("not a list: {y:?}"))
        .iter()
        .map(str_of)
        .collect()
}

fn keys<'a>(y: &'a Yaml<'a>) -> Vec<&'a str> {
    y.as_mapping()
        .unwrap_or_else(|| panic!("not a mapping: {y:?}"))
        .keys()
        .map(str_of)
        .collect()
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn assert_no_secret(run: &Run, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !run.stdout.contains(s) && !run.stderr.contains(s),
            "the export wrote the secret {s:?}"
        );
    }
}

#[test]
fn the_local_assistant_stack_exports_every_service_with_its_healthcheck_and_gates() {
    // The repository's layout in a temp dir, as e2e_stack lays it out: the desired state,
    // `.env` from `.env.example` with this test's secrets, config/ and migrations/.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("desired-state")).unwrap();
    std::fs::copy(
        repo().join("desired-state/local-assistant.toml"),
        root.join("desired-state/local-assistant.toml"),
    )
    .unwrap();
    std::os::unix::fs::symlink(repo().join("config"), root.join("config")).unwrap();
    std::os::unix::fs::symlink(repo().join("migrations"), root.join("migrations")).unwrap();
    let password = format!("pg-export-{}-Qx9", std::process::id());
    let env = std::fs::read_to_string(repo().join(".env.example"))
        .unwrap()
        .replace("change-me-too", "grafana-export-pw-7")
        .replace("change-me", &password);
    write_private(&root.join(".env"), &env);

    let run = export(
        root,
        &[
            "-f",
            "desired-state/local-assistant.toml",
            "-o",
            "compose.yml",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "", "with -o nothing goes to stdout");
    let text = std::fs::read_to_string(root.join("compose.yml")).unwrap();
    let secrets = [
        password.as_str(),
        "grafana-export-pw-7",
        "sk-ant-replace-with-your-anthropic-key",
    ];
    assert_no_secret(&run, &secrets);
    for s in secrets {
        assert!(!text.contains(s), "the Compose file holds the secret {s:?}");
    }

    let doc = parse(&text);
    assert_eq!(str_of(&doc["name"]), "assistant");
    let services = &doc["services"];
    // Every service, jaeger too, behind its profile as Compose selects it.
    assert_eq!(
        keys(services),
        [
            "chroma",
            "grafana",
            "jaeger",
            "postgres",
            "prometheus",
            "redis"
        ]
    );
    assert_eq!(strings(&services["jaeger"]["profiles"]), ["tracing"]);

    // The secrets as the desired state wrote them: references, read from the env file.
    let pg = &services["postgres"];
    assert_eq!(
        str_of(&pg["environment"]["POSTGRES_PASSWORD"]),
        "${POSTGRES_PASSWORD}"
    );
    assert_eq!(str_of(&pg["environment"]["POSTGRES_USER"]), "assistant");
    assert_eq!(
        str_of(&services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]),
        "${GRAFANA_ADMIN_PASSWORD}"
    );
    assert!(text.contains("--env-file ./.env"), "{text}");

    // Healthchecks translated from berth's probes, timed from its gate.
    assert_eq!(
        strings(&pg["healthcheck"]["test"]),
        [
            "CMD-SHELL",
            "pg_isready -U assistant -d assistant -h localhost -p 5432"
        ]
    );
    assert_eq!(str_of(&pg["healthcheck"]["interval"]), "250ms");
    assert!(!pg["healthcheck"].contains_mapping_key("start_period"));
    assert_eq!(pg["healthcheck"]["retries"].as_integer(), Some(360));
    assert_eq!(
        strings(&services["redis"]["healthcheck"]["test"]),
        ["CMD", "redis-cli", "-p", "6379", "ping"]
    );
    assert_eq!(
        strings(&services["chroma"]["healthcheck"]["test"]),
        [
            "CMD-SHELL",
            "curl -fsS http://localhost:8000/api/v2/heartbeat || wget -q --spider http://localhost:8000/api/v2/heartbeat"
        ]
    );

    // depends_on waits for the dependency's gate.
    for dep in ["postgres", "redis"] {
        assert_eq!(
            str_of(&services["chroma"]["depends_on"][dep]["condition"]),
            "service_healthy"
        );
    }
    assert_eq!(
        str_of(&services["grafana"]["depends_on"]["prometheus"]["condition"]),
        "service_healthy"
    );

    // Ports as berth has them, bind mounts relative to the Compose file.
    assert_eq!(strings(&pg["ports"]), ["5433:5432/tcp"]);
    assert_eq!(
        strings(&pg["volumes"]),
        ["./data/postgres:/var/lib/postgresql/data"]
    );
    assert_eq!(
        strings(&services["prometheus"]["volumes"])[0],
        "./config/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
    );
    assert_eq!(str_of(&pg["restart"]), "unless-stopped");
    assert_eq!(str_of(&pg["container_name"]), "assistant-postgres");
    assert_eq!(
        str_of(&doc["networks"]["default"]["name"]),
        "assistant-network"
    );

    // What Compose cannot say: a line each on stderr, and a comment in the file.
    let line = |at: &str| {
        run.stderr
            .lines()
            .any(|l| l.starts_with(&format!("berth: export: {at}: ")))
    };
    assert!(line("migrations"), "{}", run.stderr);
    assert!(
        run.stderr.contains("sqlx migrations") && run.stderr.contains("not exported"),
        "{}",
        run.stderr
    );
    assert!(line("grafana.health.expect_json"), "{}", run.stderr);
    assert!(line("rollout.auto_revert"), "{}", run.stderr);
    assert!(text.contains("# migrations: the directory of sqlx migrations"));
    assert!(text.contains("# grafana.health.expect_json:"));

    // A service left out with --exclude is said, not dropped silently.
    let run = export(
        root,
        &[
            "-f",
            "desired-state/local-assistant.toml",
            "--exclude",
            "grafana",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!keys(&parse(&run.stdout)["services"]).contains(&"grafana"));
    assert!(
        run.stderr
            .contains("berth: export: grafana: not exported: left out with --exclude"),
        "{}",
        run.stderr
    );
}

/// A desired state with secrets of each kind: a service env file, the project env file's
/// values interpolated into an environment value, a command and a probe, and a literal.
const SHOP: &str = r#"
[project]
name = "shop"
env_file = "project.env"

[services.db]
image = "postgres:15"
env_file = "db.env"
environment = { POSTGRES_DB = "shop" }
volumes = ["pgdata:/var/lib/postgresql/data"]
health = { probe = "postgres", user = "shop", password = "${DB_PASSWORD}", database = "shop" }

[services.cache]
image = "redis:7"
command = ["redis-server", "--requirepass", "${REDIS_PASS}"]
environment = { REDIS_PASSWORD = "${REDIS_PASS}" }
health = { probe = "redis", password = "${REDIS_PASS}" }

[services.web]
image = "shop/web:1"
command = "serve --key ${SIGNING_KEY}"
environment = { API_TOKEN = "literal-token-5555", PRICE = "5$", DATABASE_URL = "postgresql://shop:${DB_PASSWORD}@db/shop", MODE = "${MODE:-fast}" }
depends_on = ["db", "cache"]
labels = { "traefik.rule" = "Host(`shop`)" }
health = { probe = "tcp", port = 8080 }
"#;

const SHOP_SECRETS: [&str; 5] = [
    "sig-secret-4711",
    "redis-secret-0815",
    "db-secret-2323",
    "file-secret-9999",
    "literal-token-5555",
];

#[test]
fn secrets_are_written_as_references_never_as_values() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("berth.toml"), SHOP).unwrap();
    write_private(
        &root.join("project.env"),
        "SIGNING_KEY=sig-secret-4711\nREDIS_PASS=redis-secret-0815\nDB_PASSWORD=db-secret-2323\n",
    );
    write_private(
        &root.join("db.env"),
        "POSTGRES_PASSWORD=file-secret-9999\nPOSTGRES_USER=shop\n",
    );
    let run = export(root, &["-f", "berth.toml"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_no_secret(&run, &SHOP_SECRETS);
    let doc = parse(&run.stdout);
    let s = &doc["services"];

    // The service env file stays an env file; only the environment's own keys are listed.
    assert_eq!(strings(&s["db"]["env_file"]), ["./db.env"]);
    assert_eq!(keys(&s["db"]["environment"]), ["POSTGRES_DB"]);
    // "shop" is also a value of db.env (all secret), but written literally here: kept.
    assert_eq!(str_of(&s["db"]["environment"]["POSTGRES_DB"]), "shop");
    assert_eq!(
        strings(&s["db"]["healthcheck"]["test"]),
        [
            "CMD-SHELL",
            "pg_isready -U shop -d shop -h localhost -p 5432"
        ]
    );
    assert_eq!(
        str_of(&doc["volumes"]["pgdata"]["name"]),
        "pgdata",
        "berth's volume, not one Compose names after the project"
    );

    // Interpolated secrets: the references as written.
    assert_eq!(
        strings(&s["cache"]["command"]),
        ["redis-server", "--requirepass", "${REDIS_PASS}"]
    );
    assert_eq!(
        str_of(&s["cache"]["environment"]["REDIS_PASSWORD"]),
        "${REDIS_PASS}"
    );
    // The redis probe's password through the container's own variable, at check time.
    let test = strings(&s["cache"]["healthcheck"]["test"]);
    assert_eq!(test[0], "CMD-SHELL");
    assert!(test[1].contains("-a \"$$REDIS_PASSWORD\""), "{test:?}");
    assert_eq!(str_of(&s["web"]["command"]), "serve --key ${SIGNING_KEY}");
    assert_eq!(
        str_of(&s["web"]["environment"]["DATABASE_URL"]),
        "postgresql://shop:${DB_PASSWORD}@db/shop"
    );
    // A secret written literally: a reference to be set, and a note.
    assert_eq!(
        str_of(&s["web"]["environment"]["API_TOKEN"]),
        "${API_TOKEN}"
    );
    assert!(
        run.stderr
            .contains("berth: export: web.environment.API_TOKEN: "),
        "{}",
        run.stderr
    );
    // Values that are no secret as berth resolved them, `$` doubled for Compose.
    assert_eq!(str_of(&s["web"]["environment"]["MODE"]), "fast");
    assert_eq!(str_of(&s["web"]["environment"]["PRICE"]), "5$$");
    assert_eq!(str_of(&s["web"]["labels"]["traefik.rule"]), "Host(`shop`)");
    assert_eq!(
        strings(&s["web"]["healthcheck"]["test"])[0],
        "CMD-SHELL",
        "tcp probes through the shell"
    );
    assert!(strings(&s["web"]["healthcheck"]["test"])[1].contains("nc -z localhost 8080"));
    for dep in ["db", "cache"] {
        assert_eq!(
            str_of(&s["web"]["depends_on"][dep]["condition"]),
            "service_healthy"
        );
    }
    assert!(run.stdout.contains("--env-file ./project.env"));

    // With -o elsewhere, paths are written from the Compose file's directory.
    std::fs::create_dir(root.join("out")).unwrap();
    let run = export(root, &["-f", "berth.toml", "-o", "out/compose.yml"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let text = std::fs::read_to_string(root.join("out/compose.yml")).unwrap();
    assert!(!SHOP_SECRETS.iter().any(|s| text.contains(s)));
    assert_eq!(
        strings(&parse(&text)["services"]["db"]["env_file"]),
        ["../db.env"]
    );
}

#[test]
fn a_migration_job_is_a_one_shot_service_its_dependents_wait_for() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("berth.toml"),
        r#"
[project]
name = "mj"
env_file = ".env"

[services.db]
image = "postgres:15"
environment = { POSTGRES_PASSWORD = "${DB_PASSWORD}" }
health = { probe = "postgres", user = "postgres", password = "${DB_PASSWORD}", database = "app" }

[services.app]
image = "app:1"
depends_on = ["migrations"]

[migrations]
service = "db"
url = "postgresql://postgres:${DB_PASSWORD}@db:5432/app"

[migrations.job]
image = "app-migrate:1"
downgrade = "alembic downgrade {revision}"
environment = { LOG = "info" }
"#,
    )
    .unwrap();
    write_private(&root.join(".env"), "DB_PASSWORD=mj-secret-3131\n");
    let run = export(root, &["-f", "berth.toml"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_no_secret(&run, &["mj-secret-3131"]);
    let doc = parse(&run.stdout);
    let s = &doc["services"];
    let job = &s["migrations"];
    assert_eq!(str_of(&job["image"]), "app-migrate:1");
    assert_eq!(strings(&job["command"]), ["alembic", "upgrade", "head"]);
    assert_eq!(
        str_of(&job["environment"]["DATABASE_URL"]),
        "postgresql://postgres:${DB_PASSWORD}@db:5432/app"
    );
    assert_eq!(str_of(&job["environment"]["LOG"]), "info");
    assert_eq!(
        str_of(&job["depends_on"]["db"]["condition"]),
        "service_healthy"
    );
    assert_eq!(str_of(&job["restart"]), "no");
    assert_eq!(
        str_of(&s["app"]["depends_on"]["migrations"]["condition"]),
        "service_completed_successfully"
    );
    // The revert has no Compose equivalent: said above the job and on stderr.
    assert!(
        run.stderr.contains("berth: export: migrations.revert: ")
            && run.stderr.contains("alembic downgrade {revision}"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("# migrations.revert:"));

    // A [migrations] directory instead: not exported, said so, and its dependents wait
    // for the database only.
    let schema = root.join("schema");
    std::fs::create_dir(&schema).unwrap();
    std::fs::write(schema.join("0001_one.up.sql"), "CREATE TABLE one (id int);").unwrap();
    std::fs::write(schema.join("0001_one.down.sql"), "DROP TABLE one;").unwrap();
    let text = std::fs::read_to_string(root.join("berth.toml")).unwrap();
    let (head, _) = text.split_once("[migrations.job]").unwrap();
    std::fs::write(
        root.join("berth.toml"),
        format!("{head}source = \"schema\"\n"),
    )
    .unwrap();
    let run = export(root, &["-f", "berth.toml"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with("berth: export: migrations: ")
                && l.contains("sqlx migrations ./schema is not exported")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("berth: export: app.depends_on.migrations: ")
    );
    let doc = parse(&run.stdout);
    assert!(!keys(&doc["services"]).contains(&"migrations"));
    assert_eq!(
        str_of(&doc["services"]["app"]["depends_on"]["db"]["condition"]),
        "service_healthy"
    );
}

#[test]
fn swarm_keys_become_deploy_configs_and_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("berth.toml"),
        r#"
[project]
name = "sw"
engine = "swarm"

[services.web]
image = "nginx:1"
replicas = 3
placement = { constraints = ["node.role == worker"], preferences = ["spread=node.labels.zone"], max_replicas_per_node = 2 }
update_order = "start-first"
configs = [{ source = "site.conf", target = "/etc/nginx/conf.d/site.conf" }]
secrets = [{ source = "tls.key", target = "tls_key" }]
ports = ["8080:80"]
restart = "on-failure:5"
health = { probe = "http", port = 80, path = "/" }
"#,
    )
    .unwrap();
    std::fs::write(root.join("site.conf"), "server {}\n").unwrap();
    write_private(&root.join("tls.key"), "tls-secret-content-777\n");
    let run = export(root, &["-f", "berth.toml"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_no_secret(&run, &["tls-secret-content-777"]);
    let doc = parse(&run.stdout);
    let web = &doc["services"]["web"];
    let deploy = &web["deploy"];
    assert_eq!(deploy["replicas"].as_integer(), Some(3));
    assert_eq!(
        strings(&deploy["placement"]["constraints"]),
        ["node.role == worker"]
    );
    assert_eq!(
        str_of(&deploy["placement"]["preferences"][0]["spread"]),
        "node.labels.zone"
    );
    assert_eq!(
        deploy["placement"]["max_replicas_per_node"].as_integer(),
        Some(2)
    );
    assert_eq!(str_of(&deploy["update_config"]["order"]), "start-first");
    assert_eq!(str_of(&deploy["restart_policy"]["condition"]), "on-failure");
    assert_eq!(
        deploy["restart_policy"]["max_attempts"].as_integer(),
        Some(5)
    );
    assert!(!keys(web).contains(&"container_name"));
    assert_eq!(str_of(&web["configs"][0]["source"]), "web_site.conf");
    assert_eq!(
        str_of(&web["configs"][0]["target"]),
        "/etc/nginx/conf.d/site.conf"
    );
    assert_eq!(str_of(&web["secrets"][0]["source"]), "web_tls.key");
    assert_eq!(str_of(&web["secrets"][0]["target"]), "tls_key");
    assert_eq!(
        str_of(&doc["configs"]["web_site.conf"]["file"]),
        "./site.conf"
    );
    assert_eq!(str_of(&doc["secrets"]["web_tls.key"]["file"]), "./tls.key");
    assert!(run.stderr.contains("berth: export: project.engine: "));
}

#[test]
fn builds_exec_probes_networks_and_a_dependency_without_a_probe() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("api")).unwrap();
    std::fs::write(root.join("api/Dockerfile"), "FROM scratch\n").unwrap();
    std::fs::write(
        root.join("berth.toml"),
        r#"
[project]
name = "mini"
network = "mini-net"

[services.api]
build = { context = "./api", args = { VERSION = "2" } }
mem_limit = "512m"
networks = ["mini-net", "backend"]
depends_on = ["worker"]
user = "1000:1000"
health = { probe = "exec", command = ["/bin/check", "--ready"], interval = "2s", timeout = "1s", healthy_deadline = "30s" }

[services.worker]
image = "example.invalid/berth-export-test/worker:1"
networks = ["backend"]
volumes = ["cache:/cache:ro", "/var/lib/berth-export-test:/data"]
restart = "no"
"#,
    )
    .unwrap();
    let run = export(root, &["-f", "berth.toml"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = parse(&run.stdout);
    let api = &doc["services"]["api"];
    assert_eq!(str_of(&api["image"]), "mini-api:latest");
    assert_eq!(str_of(&api["build"]["context"]), "./api");
    assert_eq!(str_of(&api["build"]["args"]["VERSION"]), "2");
    assert_eq!(str_of(&api["pull_policy"]), "build");
    assert_eq!(str_of(&api["mem_limit"]), "512m");
    assert_eq!(str_of(&api["user"]), "1000:1000");
    assert_eq!(strings(&api["networks"]), ["default", "backend"]);
    assert_eq!(
        strings(&api["healthcheck"]["test"]),
        ["CMD", "/bin/check", "--ready"]
    );
    assert_eq!(str_of(&api["healthcheck"]["interval"]), "2s");
    assert_eq!(str_of(&api["healthcheck"]["timeout"]), "1s");
    assert!(!api["healthcheck"].contains_mapping_key("start_period"));
    assert_eq!(api["healthcheck"]["retries"].as_integer(), Some(15));
    // The worker has no probe and its image is on no engine here: berth would wait for
    // the image's HEALTHCHECK if it had one; the export cannot know, and says so.
    assert_eq!(
        str_of(&api["depends_on"]["worker"]["condition"]),
        "service_started"
    );
    assert!(
        run.stderr
            .contains("berth: export: api.depends_on.worker: "),
        "{}",
        run.stderr
    );
    let worker = &doc["services"]["worker"];
    assert!(!keys(worker).contains(&"healthcheck"));
    assert_eq!(str_of(&worker["restart"]), "no");
    assert_eq!(
        strings(&worker["volumes"]),
        ["cache:/cache:ro", "/var/lib/berth-export-test:/data"]
    );
    assert_eq!(str_of(&doc["networks"]["default"]["name"]), "mini-net");
    assert_eq!(str_of(&doc["networks"]["backend"]["name"]), "backend");
    assert_eq!(str_of(&doc["volumes"]["cache"]["name"]), "cache");
}

#[test]
fn an_invalid_desired_state_exits_2_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("berth.toml"),
        "[project]\nname = \"x\"\n[services.a]\n",
    )
    .unwrap();
    let run = export(root, &["-f", "berth.toml", "-o", "compose.yml"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(!root.join("compose.yml").exists());
}
