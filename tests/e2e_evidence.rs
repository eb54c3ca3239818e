//! End-to-end: evidence outlives the container (docs/design.md §13). Before a revert
//! removes a container whose gate failed, and before a repair restarts one that died,
//! its last log lines, how it ended and its probe are kept on the generation; against
//! the real Docker engine.

mod common;

use common::{Project, docker};

/// `web`, healthy over http with a window long enough to die inside; no restart policy,
/// so an exit is final.
const STACK: &str = r#"
[project]
name = "{project}"
[rollout]
healthy_deadline = "10s"
min_healthy_time = "3s"
[services.web]
image = "berth-fixture:test"
restart = "no"
environment = { VERSION = "1" }
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }
"#;

fn evidence_of(p: &Project, generation: usize) -> serde_json::Value {
    let h = p.history();
    let e = h[generation - 1]["evidence"].clone();
    assert!(
        e.is_array(),
        "history --json holds evidence: {}",
        h[generation - 1]
    );
    e
}

#[test]
fn a_service_that_prints_500_lines_and_exits_3_in_its_window_leaves_its_last_200_lines() {
    let p = Project::new("evidence-exit");
    p.write(STACK);
    assert_eq!(p.berth(&["apply"]).code, 0);
    p.write(&STACK.replace(
        r#"VERSION = "1""#,
        r#"VERSION = "2", FIXTURE_PRINT_LINES = "500", FIXTURE_HEALTHY_FOR = "0.5", FIXTURE_EXIT_CODE = "3""#,
    ));
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 3, "rolled back: {}", run.stderr);
    // The revert happened: web runs generation 1 again.
    assert_eq!(
        p.inspect("web", "{{index .Config.Labels \"berth.generation\"}}"),
        "1"
    );

    let h = p.history();
    let reason = h[1]["reason"].as_str().unwrap();
    assert!(reason.contains("exited (code 3)"), "{reason}");
    assert!(reason.contains("last line: "), "{reason}");

    let e = evidence_of(&p, 2);
    assert_eq!(e.as_array().unwrap().len(), 1, "{e}");
    let web = &e[0];
    assert_eq!(web["service"], "web");
    assert_eq!(web["why"], "gate-failed");
    assert_eq!(web["exit_code"], 3, "{web}");
    assert_eq!(web["oom_killed"], false);
    assert!(
        web["started_at"].is_string() && web["finished_at"].is_string(),
        "{web}"
    );
    assert!(
        web["probe"]
            .as_str()
            .unwrap()
            .starts_with("http :8080/health"),
        "{web}"
    );
    let lines: Vec<&str> = web["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(lines.len(), 200, "the last 200 lines: {lines:?}");
    assert!(lines.contains(&"line 500 of 500"), "{lines:?}");
    assert!(!lines.contains(&"line 1 of 500"), "only the end is kept");
    assert!(lines.last().unwrap().contains("code=3"), "{lines:?}");

    // `berth history 2` shows it.
    let shown = p.berth(&["history", "2"]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(
        shown.stdout.contains("failed its gate; exited code 3"),
        "{}",
        shown.stdout
    );
    assert!(
        shown.stdout.contains("web | line 500 of 500"),
        "{}",
        shown.stdout
    );
    assert_eq!(p.berth(&["history", "99"]).code, 1);

    // `berth logs --generation 2` prints all that was kept.
    let run = p.berth(&["logs", "--generation", "2"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let header = format!("== web (container {}", p.container("web"));
    assert!(lines[0].starts_with(&header), "{}", lines[0]);
    assert!(
        lines[0].contains("gate failed, exited code 3, captured 20"),
        "{}",
        lines[0]
    );
    let body = &lines[1..];
    assert_eq!(body.len(), 200, "the last 200 lines:\n{}", run.stdout);
    assert!(body.iter().all(|l| l.starts_with("web | ")), "{body:?}");
    assert!(body.contains(&"web | line 500 of 500"), "{body:?}");
    assert!(
        !body.contains(&"web | line 1 of 500"),
        "only the end is kept"
    );
    assert!(body.last().unwrap().contains("code=3"), "{body:?}");
    assert!(!run.stdout.contains('\x1b'), "not a terminal: no colour");

    // One service named: the same; one without evidence, or a generation without any, or
    // one that is not there: an error that says which.
    assert_eq!(
        p.berth(&["logs", "--generation", "2", "web"]).stdout,
        run.stdout
    );
    let other = p.berth(&["logs", "--generation", "2", "db"]);
    assert_eq!(other.code, 1);
    assert!(
        other.stderr.contains("no evidence of db (it has: web)"),
        "{}",
        other.stderr
    );
    let healthy = p.berth(&["logs", "--generation", "1"]);
    assert_eq!(healthy.code, 1);
    assert!(
        healthy.stderr.contains("generation 1 of project")
            && healthy.stderr.contains("(healthy) has no evidence"),
        "{}",
        healthy.stderr
    );
    let missing = p.berth(&["logs", "--generation", "99"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("generation 99 does not exist"),
        "{}",
        missing.stderr
    );
}

#[test]
fn an_oom_kill_is_recorded_as_oom_killed() {
    // Premise: this engine can limit a container's memory.
    let info = docker(&["info", "--format", "{{.MemoryLimit}}"]);
    assert_eq!(
        String::from_utf8_lossy(&info.stdout).trim(),
        "true",
        "the engine has no memory limit support"
    );
    let p = Project::new("evidence-oom");
    p.write(STACK);
    assert_eq!(p.berth(&["apply"]).code, 0);
    p.write(
        &STACK
            .replace(
                r#"restart = "no""#,
                r#"restart = "no"
mem_limit = "16m""#,
            )
            .replace(
                r#"VERSION = "1""#,
                r#"VERSION = "2", FIXTURE_ALLOCATE_MB = "64""#,
            ),
    );
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 3, "rolled back: {}", run.stderr);
    let h = p.history();
    let reason = h[1]["reason"].as_str().unwrap();
    assert!(reason.contains("OOM killed"), "{reason}");
    let web = &evidence_of(&p, 2)[0];
    assert_eq!(web["oom_killed"], true, "{web}");
    assert_eq!(web["exit_code"], 137, "{web}");
}

#[test]
fn a_repair_of_a_container_that_died_keeps_what_it_left_before_starting_it_again() {
    let p = Project::new("evidence-died");
    p.write(&STACK.replace(
        r#"VERSION = "1""#,
        r#"VERSION = "1", FIXTURE_PRINT_LINES = "3""#,
    ));
    assert_eq!(p.berth(&["apply"]).code, 0);
    let id = p.id("web").unwrap();
    assert!(docker(&["kill", &id]).status.success());
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(p.inspect("web", "{{.State.Running}}"), "true");
    let e = evidence_of(&p, 1);
    let web = &e[0];
    assert_eq!(web["why"], "died", "{e}");
    assert_eq!(web["exit_code"], 137, "{web}");
    let lines = web["lines"].to_string();
    assert!(lines.contains("line 3 of 3"), "{lines}");
}
