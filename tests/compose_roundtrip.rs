//! `berth export compose`, then `berth import` of what it wrote, gives the same resolved
//! desired state (docs/compose.md): nobody is locked in. The stack uses what both
//! directions carry: images, environment, ports, named volumes and bind mounts,
//! `depends_on` gated on probes, the http, postgres, redis and exec probes with their
//! timings, restart policies, the project's network and memory limits.

use std::path::Path;
use std::process::Command;

const STACK: &str = r#"
[project]
name = "roundtrip"
network = "roundtrip-net"

[services.db]
image = "postgres:15"
environment = { POSTGRES_USER = "app", POSTGRES_PASSWORD = "not-a-secret-pw", POSTGRES_DB = "app" }
volumes = ["pgdata:/var/lib/postgresql/data"]
restart = "unless-stopped"
health = { probe = "postgres", port = 5432, user = "app", password = "not-a-secret-pw", database = "app", interval = "500ms", timeout = "500ms", healthy_deadline = "60s" }

[services.cache]
image = "redis:7"
restart = "always"
health = { probe = "redis", port = 6379, interval = "1s", timeout = "1s", healthy_deadline = "30s" }

[services.api]
image = "example/api:1.2"
depends_on = ["db", "cache"]
environment = { LOG_LEVEL = "info", DATABASE_HOST = "db" }
ports = ["127.0.0.1:8080:8000"]
volumes = ["./config/api.yml:/etc/api.yml:ro"]
mem_limit = "256MiB"
health = { probe = "http", port = 8000, path = "/healthz", interval = "2s", timeout = "1s", healthy_deadline = "40s" }

[services.worker]
image = "example/worker:1.2"
depends_on = ["api"]
command = ["worker", "--queue", "default"]
health = { probe = "exec", command = ["/bin/check", "--ready"], interval = "5s", timeout = "2s", healthy_deadline = "1m" }
"#;

fn berth(dir: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .current_dir(dir)
        .env_remove("BERTH_FILE")
        .output()
        .unwrap();
    eprintln!(
        "$ berth {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The database password is a secret: the export writes it as `${POSTGRES_PASSWORD}`,
/// never as its value, so both sides read it from the same environment.
fn resolved(file: &Path) -> serde_json::Value {
    let env = std::collections::HashMap::from([(
        "POSTGRES_PASSWORD".to_string(),
        "not-a-secret-pw".to_string(),
    )]);
    let d = berth::spec::load_with_env(file, &Default::default(), &env)
        .unwrap_or_else(|e| panic!("{}: {e:?}", file.display()));
    let mut v = serde_json::to_value(&d.services).unwrap();
    // Where each file was read from is not part of what runs.
    for s in v.as_object_mut().unwrap().values_mut() {
        s.as_object_mut().unwrap().remove("origin");
    }
    serde_json::json!({ "project": d.project, "services": v })
}

#[test]
fn importing_an_export_gives_the_same_resolved_desired_state() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    std::fs::create_dir(dir.join("config")).unwrap();
    std::fs::write(dir.join("config/api.yml"), "level: 1\n").unwrap();
    std::fs::write(dir.join("berth.toml"), STACK).unwrap();
    let export = berth(
        dir,
        &["export", "compose", "-f", "berth.toml", "-o", "compose.yml"],
    );
    assert!(export.status.success());
    let exported = std::fs::read_to_string(dir.join("compose.yml")).unwrap();
    assert!(!exported.contains("not-a-secret-pw"), "{exported}");
    let import = berth(dir, &["import", "compose.yml", "-o", "imported.toml"]);
    assert!(import.status.success());
    let (a, b) = (
        resolved(&dir.join("berth.toml")),
        resolved(&dir.join("imported.toml")),
    );
    assert_eq!(
        a,
        b,
        "\n--- berth.toml\n{}\n--- imported.toml\n{}",
        serde_json::to_string_pretty(&a).unwrap(),
        serde_json::to_string_pretty(&b).unwrap()
    );
}
