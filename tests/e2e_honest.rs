//! End-to-end: status that tells the truth, `berth down`, the refusal to remove every
//! service, and errors that say what is wrong once (docs/design.md §§7, 9 and 10).

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
    let h = p.history();
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
    let h = p.history();
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

/// Poison follows what the desired state resolves to: the env file, an exported `${VAR}`
/// and `--profile` are part of it; a comment is not.
#[test]
fn poison_is_lifted_by_fixing_the_env_file_the_environment_or_the_profile_not_by_a_comment() {
    use std::os::unix::fs::PermissionsExt;
    let p = Project::new("poisonkey");
    let env = p.dir.path().join(".env");
    let write_env = |text: &str| {
        std::fs::write(&env, text).unwrap();
        std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    let file = r#"
[project]
name = "{project}"
env_file = ".env"
[rollout]
healthy_deadline = "2s"
min_healthy_time = "200ms"
[services.web]
image = "berth-fixture:test"
environment = { FIXTURE_NEVER_HEALTHY = "${WEB_BROKEN}", EXTRA = "${EXTRA:-none}" }
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }
[services.tracer]
image = "berth-fixture:test"
profiles = ["tracing"]
environment = { FIXTURE_NEVER_HEALTHY = "${TRACER_BROKEN:-0}" }
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }
"#;
    write_env("WEB_BROKEN=0\n");
    p.write(file);
    assert_eq!(p.berth(&["apply"]).code, 0);

    // The env file breaks web: rolled back, then poisoned; a comment does not lift it.
    write_env("WEB_BROKEN=1\n");
    assert_eq!(p.berth(&["apply"]).code, 3);
    p.write(&format!("# only a comment changed\n{file}"));
    assert_eq!(
        p.berth(&["apply"]).code,
        5,
        "a comment must not lift poison"
    );
    // Fixing the env file lifts it.
    write_env("WEB_BROKEN=0\n");
    assert_eq!(p.berth(&["apply"]).code, 0, "the fixed env file applies");

    // An exported variable breaks it the same way, and unexporting it fixes it.
    write_env("WEB_BROKEN=0\nEXTRA=from-file\n");
    let broken_env = [("WEB_BROKEN", "1")];
    assert_eq!(p.berth_env(&["apply"], &broken_env).code, 3);
    assert_eq!(p.berth_env(&["apply"], &broken_env).code, 5);
    assert_eq!(p.berth(&["apply"]).code, 0);

    // A profile whose service is broken is poisoned as that selection, not the file.
    write_env("WEB_BROKEN=0\nEXTRA=from-file\nTRACER_BROKEN=1\n");
    assert_eq!(
        p.berth(&["apply"]).code,
        0,
        "without the profile, tracer is not there"
    );
    assert_eq!(p.berth(&["apply", "--profile", "tracing"]).code, 3);
    assert_eq!(p.berth(&["apply", "--profile", "tracing"]).code, 5);
    assert_eq!(
        p.berth(&["apply"]).code,
        0,
        "the same files without the profile"
    );
}
