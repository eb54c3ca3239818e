//! End-to-end: `berth apply` against the real Docker engine with the fixture image,
//! on a three-tier stack db <- cache <- app.

mod common;

use common::{Project, docker, text};

const THREE_TIER: &str = r#"
[project]
name = "{project}"

[rollout]
healthy_deadline = "30s"
min_healthy_time = "500ms"

[services.db]
image = "berth-fixture:test"
environment = { FIXTURE_READY_AFTER = "1.5", ROLE = "db" }
volumes = ["{project}-dbdata:/data"]
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }

[services.cache]
image = "berth-fixture:test"
depends_on = ["db"]
environment = { FIXTURE_READY_AFTER = "1", ROLE = "cache" }
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }

[services.app]
image = "berth-fixture:test"
depends_on = ["cache"]
environment = { FIXTURE_READY_AFTER = "0.5", ROLE = "app" }
health = { probe = "exec", command = ["/berth-fixture", "probe"], interval = "100ms" }
"#;

#[test]
fn cold_apply_starts_each_dependent_after_its_dependency_is_healthy() {
    let p = Project::new("order");
    p.write(THREE_TIER);
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("db: healthy in"), "{}", run.stdout);
    assert!(
        run.stdout.contains("Converged: generation 1"),
        "{}",
        run.stdout
    );
    for (dep, dependent) in [("db", "cache"), ("cache", "app")] {
        // The fixture logs its own readiness; the dependent's process start must come after.
        let ready = p
            .fixture_event_ms(dep, "ready")
            .expect("dependency logged ready");
        let started = p
            .fixture_event_ms(dependent, "start")
            .expect("dependent logged start");
        assert!(
            started >= ready,
            "{dependent} started at {started} before {dep} was ready at {ready}"
        );
    }
    // berth's own record agrees: the probe passed before the dependent began (the
    // stability window runs on beside it: docs/design.md §4), and every window closed
    // before the generation was called healthy.
    let gens = p.history();
    let t = &gens[0]["timings"];
    assert_eq!(gens[0]["outcome"], "healthy");
    let ms = |s: &str, k: &str| t[s][k].as_i64().unwrap_or_else(|| panic!("{s}.{k} in {t}"));
    assert!(ms("db", "healthy_ms") <= ms("cache", "begin_ms"), "{t}");
    assert!(ms("cache", "healthy_ms") <= ms("app", "begin_ms"), "{t}");
    for s in ["db", "cache", "app"] {
        assert!(
            ms(s, "gate_passed_ms") >= ms(s, "healthy_ms") + 500,
            "{s}'s window did not run its 500 ms: {t}"
        );
    }
    // Ownership labels are on every container.
    for s in ["db", "cache", "app"] {
        assert_eq!(
            p.inspect(s, "{{index .Config.Labels \"berth.project\"}}"),
            p.name
        );
        assert_eq!(
            p.inspect(s, "{{index .Config.Labels \"berth.service\"}}"),
            s
        );
        assert_eq!(
            p.inspect(s, "{{index .Config.Labels \"berth.generation\"}}"),
            "1"
        );
    }
}

#[test]
fn second_apply_changes_nothing_and_keeps_every_container_id() {
    let p = Project::new("noop");
    p.write(THREE_TIER);
    assert_eq!(p.berth(&["apply"]).code, 0);
    let before: Vec<_> = ["db", "cache", "app"]
        .iter()
        .map(|s| p.id(s).unwrap())
        .collect();
    let again = p.berth(&["apply"]);
    assert_eq!(again.code, 0);
    assert_eq!(again.stdout.trim(), "No changes.");
    assert_eq!(p.berth(&["plan"]).stdout.trim(), "No changes.");
    let after: Vec<_> = ["db", "cache", "app"]
        .iter()
        .map(|s| p.id(s).unwrap())
        .collect();
    assert_eq!(before, after);
    let status = p.berth(&["status", "--json"]);
    let s: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(s[0]["status"], "converged");
}

#[test]
fn changing_one_services_environment_recreates_that_service_alone() {
    let p = Project::new("recreate");
    p.write(THREE_TIER);
    assert_eq!(p.berth(&["apply"]).code, 0);
    let before: Vec<_> = ["db", "cache", "app"]
        .iter()
        .map(|s| p.id(s).unwrap())
        .collect();
    p.write(&THREE_TIER.replace("ROLE = \"cache\"", "ROLE = \"cache-v2\""));
    let plan = p.berth(&["plan"]);
    assert!(plan.stdout.contains("~ cache"), "{}", plan.stdout);
    assert!(plan.stdout.contains("1 to recreate."), "{}", plan.stdout);
    assert_eq!(p.berth(&["apply"]).code, 0);
    let after: Vec<_> = ["db", "cache", "app"]
        .iter()
        .map(|s| p.id(s).unwrap())
        .collect();
    assert_eq!(before[0], after[0], "db must not be recreated");
    assert_ne!(before[1], after[1], "cache must be recreated");
    assert_eq!(before[2], after[2], "app must not be recreated");
    let env = p.inspect("cache", "{{json .Config.Env}}");
    assert!(env.contains("\"ROLE=cache-v2\""), "{env}");
    assert_eq!(
        p.inspect("cache", "{{index .Config.Labels \"berth.generation\"}}"),
        "2"
    );
    assert_eq!(
        p.containers().len(),
        3,
        "no temporary container is left behind"
    );
}

#[test]
fn removing_a_service_removes_its_container_and_keeps_its_named_volume() {
    let p = Project::new("remove");
    // db writes into its named volume; then db is dropped from the file.
    p.write(&THREE_TIER.replace(
        "ROLE = \"db\"",
        "ROLE = \"db\", FIXTURE_WRITE_FILE = \"/data/keep.txt\", FIXTURE_WRITE_CONTENT = \"precious\"",
    ));
    assert_eq!(p.berth(&["apply"]).code, 0);
    let without_db = THREE_TIER
        .split("[services.db]")
        .next()
        .unwrap()
        .to_string()
        + "[services.cache]"
        + THREE_TIER
            .split("[services.cache]")
            .nth(1)
            .unwrap()
            .replace("depends_on = [\"db\"]\n", "")
            .as_str();
    p.write(&without_db);
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("removed"), "{}", run.stdout);
    assert!(p.id("db").is_none(), "db container must be gone");
    let vol = format!("{}-dbdata", p.name);
    assert!(
        docker(&["volume", "inspect", &vol]).status.success(),
        "volume {vol} must be kept"
    );
    // And its data is intact.
    let content = common::read_volume_file(&vol, "keep.txt").expect("keep.txt is in the volume");
    assert!(content.contains("precious"), "the volume lost its data");
}

#[test]
fn a_service_that_never_gets_healthy_fails_apply_naming_it() {
    let p = Project::new("unhealthy");
    p.write(
        &THREE_TIER
            .replace("healthy_deadline = \"30s\"", "healthy_deadline = \"3s\"")
            .replace(
                "ROLE = \"cache\"",
                "ROLE = \"cache\", FIXTURE_NEVER_HEALTHY = \"1\"",
            ),
    );
    let run = p.berth(&["apply"]);
    // A first apply has no last good generation to revert to: degraded, exit 4.
    assert_eq!(run.code, 4);
    assert!(
        run.stderr.contains("service \"cache\" failed its gate"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("http :8080/health"), "{}", run.stderr);
    assert!(run.stderr.contains("503"), "{}", run.stderr);
    // Its dependent was made ahead (created) and never started.
    assert_eq!(
        p.inspect("app", "{{.State.Status}} {{.State.StartedAt}}"),
        "created 0001-01-01T00:00:00Z",
        "app must have been made ahead and never started"
    );
    let hist = p.berth(&["history"]);
    assert!(hist.stdout.contains("failed"), "{}", hist.stdout);
}

#[test]
fn a_name_held_by_a_container_berth_does_not_own_is_an_error_and_left_alone() {
    let p = Project::new("clash");
    p.write(THREE_TIER);
    let squatter = p.container("db");
    let out = docker(&["create", "--name", &squatter, common::FIXTURE]);
    assert!(out.status.success());
    let squatter_id = text(&out).trim().to_string();
    let run = p.berth(&["apply"]);
    docker(&["rm", "-f", &squatter]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains(&format!("container name \"{squatter}\"")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&squatter_id[..12]), "{}", run.stderr);
    assert!(run.stderr.contains("does not own"), "{}", run.stderr);
    assert!(p.containers().is_empty(), "nothing was created");
}

#[test]
fn a_stopped_container_is_started_again_without_recreating_it() {
    let p = Project::new("restart");
    p.write(THREE_TIER);
    assert_eq!(p.berth(&["apply"]).code, 0);
    let id = p.id("app").unwrap();
    assert!(docker(&["stop", &p.container("app")]).status.success());
    let plan = p.berth(&["plan"]);
    assert!(plan.stdout.contains("> app"), "{}", plan.stdout);
    assert_eq!(p.berth(&["apply"]).code, 0);
    assert_eq!(p.id("app").unwrap(), id);
    assert_eq!(p.inspect("app", "{{.State.Running}}"), "true");
}

/// A dependency and its dependent, the dependency's stability window long (pipelined
/// windows, docs/design.md §4).
const WINDOW: &str = r#"
[project]
name = "{project}"

[rollout]
healthy_deadline = "30s"
min_healthy_time = "3s"
{stability}

[services.db]
image = "berth-fixture:test"
environment = { ROLE = "db"{db_env} }
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }

[services.app]
image = "berth-fixture:test"
depends_on = ["db"]
environment = { ROLE = "app", VERSION = "{version}" }
health = { probe = "http", port = 8080, path = "/health", interval = "100ms", min_healthy_time = "200ms" }
"#;

fn window(stability: &str, db_env: &str, version: &str) -> String {
    WINDOW
        .replace("{stability}", stability)
        .replace("{db_env}", db_env)
        .replace("{version}", version)
}

fn timings(p: &Project, generation: usize) -> serde_json::Value {
    p.history()[generation - 1]["timings"].clone()
}

#[test]
fn a_dependency_that_exits_inside_its_window_after_its_dependent_started_reverts_both() {
    let p = Project::new("window");
    p.write(&window("", "", "1"));
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    // The app started while db's 3 s window was still open.
    let t = timings(&p, 1);
    let ms = |s: &str, k: &str| t[s][k].as_i64().unwrap_or_else(|| panic!("{s}.{k} in {t}"));
    assert!(ms("app", "begin_ms") < ms("db", "gate_passed_ms"), "{t}");

    // db now exits 2 s after its start: inside its window, after the app started.
    p.write(&window("", r#", FIXTURE_EXIT_AFTER = "2""#, "2"));
    let run = p.berth(&["apply"]);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, 3, "{all}");
    assert!(all.contains(r#"service "db" failed its gate"#), "{all}");
    let t = timings(&p, 2);
    let ms = |s: &str, k: &str| t[s][k].as_i64().unwrap_or_else(|| panic!("{s}.{k} in {t}"));
    assert!(
        ms("app", "started_ms") < ms("db", "failed_ms"),
        "the app had not started before db failed: {t}"
    );
    // Both went back to generation 1's spec.
    let (db, app) = (p.environment("db"), p.environment("app"));
    assert!(!db.contains("FIXTURE_EXIT_AFTER"), "{db}");
    assert!(app.contains("VERSION=1"), "{app}");
    assert_eq!(p.inspect("db", "{{.State.Running}}"), "true");
}

#[test]
fn before_dependents_starts_the_dependent_only_after_the_window_closed() {
    let p = Project::new("strict");
    p.write(&window("stability = \"before-dependents\"", "", "1"));
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let t = timings(&p, 1);
    let ms = |s: &str, k: &str| t[s][k].as_i64().unwrap_or_else(|| panic!("{s}.{k} in {t}"));
    assert!(
        ms("db", "gate_passed_ms") >= ms("db", "healthy_ms") + 3000,
        "{t}"
    );
    assert!(ms("app", "begin_ms") >= ms("db", "gate_passed_ms"), "{t}");
}
