//! End-to-end: a Compose file with `service_healthy` conditions, imported with
//! `berth import` and converged by `berth apply` on the real engine, in the order the
//! conditions say (docs/compose.md). The healthchecks are the ones Compose users write
//! (`curl -f http://localhost:8080/health`); berth turns them into its own http probe,
//! so the fixture image (FROM scratch, no curl) passes them.

mod common;

use common::Project;

const COMPOSE: &str = r#"
name: {project}
x-health: &health
  test: ["CMD", "curl", "-f", "http://localhost:8080/health"]
  interval: 200ms
  timeout: 200ms
  retries: 100
services:
  web:
    image: berth-fixture:test
    environment: { ROLE: web }
    depends_on:
      api:
        condition: service_healthy
    healthcheck: *health
  api:
    image: berth-fixture:test
    environment: { ROLE: api, FIXTURE_READY_AFTER: "1" }
    depends_on:
      db:
        condition: service_healthy
    healthcheck: *health
  db:
    image: berth-fixture:test
    environment: { ROLE: db, FIXTURE_READY_AFTER: "1" }
    healthcheck: *health
"#;

#[test]
fn an_imported_compose_file_converges_in_the_order_its_conditions_say() {
    let p = Project::new("compose");
    let compose = p.dir.path().join("docker-compose.yml");
    std::fs::write(&compose, COMPOSE.replace("{project}", &p.name)).unwrap();
    let run = p.berth(&[
        "import",
        compose.to_str().unwrap(),
        "-o",
        p.file().to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let toml = std::fs::read_to_string(p.file()).unwrap();
    assert!(
        toml.contains(r#"probe = "http", port = 8080, path = "/health""#),
        "{toml}"
    );

    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    for s in ["db", "api", "web"] {
        assert!(
            run.stdout.contains(&format!("{s}: healthy in")),
            "{}",
            run.stdout
        );
    }
    // Each service started only once the one it waits for passed its probe.
    let h = p.history();
    let t = &h[0]["timings"];
    let ms = |svc: &str, key: &str| {
        t[svc][key]
            .as_i64()
            .unwrap_or_else(|| panic!("no {svc}.{key} in {t}"))
    };
    assert!(ms("api", "started_ms") >= ms("db", "healthy_ms"), "{t}");
    assert!(ms("web", "started_ms") >= ms("api", "healthy_ms"), "{t}");
    let status = p.berth(&["status"]);
    assert_eq!(status.code, 0, "{}", status.stdout);
}
