//! End-to-end: status that tells the truth, `berth down`, the refusal to remove every
//! service, and errors that say what is wrong once (DESIGN.md semantics 7 and 9).

mod common;

use common::{Project, docker, text};

const ONE: &str = r#"
[project]
name = "{project}"
[services.web]
image = "berth-fixture:test"
volumes = ["{project}-data:/data"]
health = { probe = "http", port = 8080, interval = "100ms" }
"#;

fn status_json(p: &Project) -> (i32, serde_json::Value) {
    let run = p.berth(&["status", "--json"]);
    (run.code, serde_json::from_str(&run.stdout).unwrap())
}

#[test]
fn a_paused_container_is_drift_status_says_degraded_and_apply_repairs_it() {
    let p = Project::new("paused");
    p.write(ONE);
    assert_eq!(p.berth(&["apply"]).code, 0);
    let (code, s) = status_json(&p);
    assert_eq!(
        (code, &s[0]["status"]),
        (0, &serde_json::json!("converged"))
    );
    // The health column is berth's own probe, not Docker's word.
    assert_eq!(s[0]["services"][0]["health"], "healthy");

    assert!(docker(&["pause", &p.container("web")]).status.success());
    let plan = p.berth(&["plan"]);
    assert!(
        plan.stdout.contains("recreate  container is paused"),
        "{}",
        plan.stdout
    );
    let (code, s) = status_json(&p);
    assert_eq!(code, 1, "status exits 1 unless converged");
    assert_eq!(s[0]["status"], "degraded");
    assert!(s[0]["reason"].as_str().unwrap().contains("paused"), "{s}");

    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("Repaired: web"), "{}", run.stdout);
    assert_eq!(p.inspect("web", "{{.State.Status}}"), "running");
    let (code, s) = status_json(&p);
    assert_eq!(
        (code, &s[0]["status"]),
        (0, &serde_json::json!("converged"))
    );
    assert_eq!(s[0]["repairs"], 1);
    let h: Vec<serde_json::Value> =
        serde_json::from_str(&p.berth(&["history", "--json"]).stdout).unwrap();
    assert_eq!(h.len(), 1, "a repair is not a generation");
    assert_eq!(h[0]["repairs"], 1);
}

#[test]
fn down_removes_containers_and_network_keeps_volumes_and_is_recorded() {
    let p = Project::new("down");
    p.write(ONE);
    assert_eq!(p.berth(&["apply"]).code, 0);
    let run = p.berth(&["down"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(p.containers().is_empty());
    let label = format!("label=berth.project={}", p.name);
    assert_eq!(
        text(&docker(&["network", "ls", "-q", "--filter", &label])),
        ""
    );
    let vol = format!("{}-data", p.name);
    assert!(
        docker(&["volume", "inspect", &vol]).status.success(),
        "volumes are kept"
    );
    let h: Vec<serde_json::Value> =
        serde_json::from_str(&p.berth(&["history", "--json"]).stdout).unwrap();
    assert_eq!(h[1]["outcome"], "down");
    let (code, s) = status_json(&p);
    assert_eq!((code, &s[0]["status"]), (1, &serde_json::json!("down")));
    // Up again from the same file.
    assert_eq!(p.berth(&["apply"]).code, 0);
    assert_eq!(p.containers(), [p.container("web")]);
}

#[test]
fn a_desired_state_that_would_remove_every_running_service_is_refused() {
    let p = Project::new("empty");
    p.write(ONE);
    assert_eq!(p.berth(&["apply"]).code, 0);
    let id = p.id("web");
    p.write("[project]\nname = \"{project}\"\n[services.other]\nimage = \"berth-fixture:test\"\n");
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("would remove every running service"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("(web)"), "{}", run.stderr);
    assert_eq!(p.id("web"), id, "nothing changed");
    let run = p.berth(&["apply", "--allow-empty"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(p.containers(), [p.container("other")]);
}

#[test]
fn an_unreachable_engine_is_a_runtime_error_and_a_corrupt_store_is_said_once() {
    let p = Project::bare("errors");
    p.write(ONE);
    let run = p.berth_env(
        &["apply"],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    assert_eq!(
        run.code, 1,
        "exit 1, not 2 (invalid desired state): {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("/nonexistent/docker.sock"),
        "{}",
        run.stderr
    );

    std::fs::write(
        p.state(),
        b"this is not a SQLite database, it is garbage....",
    )
    .unwrap();
    let run = p.berth(&["history"]);
    assert_eq!(run.code, 1);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {}", run.stderr);
    let path = p.state().display().to_string();
    assert_eq!(lines[0].matches(&path).count(), 1, "{}", run.stderr);
    assert_eq!(
        lines[0].matches("not a database").count(),
        1,
        "{}",
        run.stderr
    );
}
