//! End-to-end: a container that dies while its gate runs fails the gate as soon as the
//! engine says so, for each family of probe: the image's HEALTHCHECK (judged by the
//! engine), berth's own network probes (tcp, http) and berth's exec probe. The twin on the
//! in-memory runtime is `controller_dies.rs`.
//!
//! Each service is never ready by itself, has a 60 s `healthy_deadline` and berth's own
//! probes every 10 s. berth probes at 25 ms doubling up to the interval until the first
//! pass, so its probes fall 3.18 s and 6.38 s after the start: a `docker kill` at 3.3 s
//! is seen by the next probe only about 3 s later. The gate ending within 2 s of the
//! kill is the `die` event's doing (for the HEALTHCHECK the fallback inspect is also 2 s
//! away at most; `e2e_images.rs` shows the event there).

mod common;

use std::time::{Duration, Instant};

use common::{Project, docker, text};

/// How long after the container's start the test kills it.
const KILL_AT: Duration = Duration::from_millis(3300);

/// The bound: the gate fails within 2 s of the kill, far under the 60 s deadline (the
/// next probe alone would come about 3 s later). Measured here well under it (see the
/// test's stderr).
const WITHIN: Duration = Duration::from_secs(2);

/// Everything berth printed.
fn said(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

struct Case {
    kind: &'static str,
    image: &'static str,
    extra: &'static str,
}

const CASES: &[Case] = &[
    Case {
        kind: "healthcheck",
        image: "berth-fixture:healthcheck",
        extra: r#"environment = { FIXTURE_READY_AFTER = "120" }"#,
    },
    Case {
        kind: "tcp",
        image: "berth-fixture:test",
        extra: r#"environment = { FIXTURE_LISTEN_DELAY = "120" }
health = { probe = "tcp", port = 8080, interval = "10s" }"#,
    },
    Case {
        kind: "http",
        image: "berth-fixture:test",
        extra: r#"environment = { FIXTURE_READY_AFTER = "120" }
health = { probe = "http", port = 8080, path = "/health", interval = "10s" }"#,
    },
    Case {
        kind: "exec",
        image: "berth-fixture:test",
        extra: r#"environment = { FIXTURE_READY_AFTER = "120" }
health = { probe = "exec", command = ["/berth-fixture", "probe"], interval = "10s" }"#,
    },
];

/// Apply the case's project in the background, `docker kill` the container [`KILL_AT`]
/// after its start, and return berth's exit code, output, and how long after the kill it
/// ended.
fn kill_while_gated(case: &Case) -> (i32, String, Duration) {
    let p = Project::new(&format!("dies{}", case.kind));
    p.write(&format!(
        r#"
[project]
name = "{{project}}"
[rollout]
healthy_deadline = "60s"
min_healthy_time = "0s"
[services.web]
image = "{}"
{}
"#,
        case.image, case.extra
    ));
    let child = p.spawn(&["apply"]);
    // Wait for the engine to run it (the container is created ahead, then started).
    let began = Instant::now();
    let started = loop {
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "{}: never started",
            case.kind
        );
        if p.id("web").is_some() && p.inspect("web", "{{.State.Running}}") == "true" {
            break Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(KILL_AT.saturating_sub(started.elapsed()));
    // The premise: still gating (berth has not ended), and never healthy.
    assert_eq!(
        p.inspect("web", "{{.State.Running}}"),
        "true",
        "{}: premise",
        case.kind
    );
    let kill = docker(&["kill", &p.container("web")]);
    assert!(kill.status.success(), "{}", text(&kill));
    let killed = Instant::now();
    let out = child.wait_with_output().unwrap();
    let after = killed.elapsed();
    let output = said(&out);
    eprintln!(
        "{}: berth ended {:.2} s after the kill\n{output}",
        case.kind,
        after.as_secs_f64()
    );
    // A kill cancels the restart policy (unless-stopped here): the engine does not
    // bring it back, which is why the gate may end.
    assert_eq!(p.inspect("web", "{{.RestartCount}}"), "0", "{}", case.kind);
    (out.status.code().unwrap_or(-1), output, after)
}

#[test]
fn a_container_killed_before_its_first_probe_pass_fails_its_gate_at_once() {
    let ends: Vec<_> = std::thread::scope(|s| {
        let runs: Vec<_> = CASES
            .iter()
            .map(|c| s.spawn(move || kill_while_gated(c)))
            .collect();
        runs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (case, (code, output, after)) in CASES.iter().zip(ends) {
        // No last good generation to go back to: degraded, the container left for
        // inspection.
        assert_eq!(code, 4, "{}: {output}", case.kind);
        assert!(
            output.contains("the container exited (code 137)"),
            "{}: {output}",
            case.kind
        );
        assert!(
            !output.contains("healthy_deadline"),
            "{}: {output}",
            case.kind
        );
        assert!(
            after < WITHIN,
            "{}: the gate ended {after:?} after the kill",
            case.kind
        );
    }
}

#[test]
fn a_container_removed_while_gated_fails_its_gate_at_once() {
    let p = Project::new("diesrm");
    p.write(
        r#"
[project]
name = "{project}"
[rollout]
healthy_deadline = "60s"
min_healthy_time = "0s"
[services.web]
image = "berth-fixture:test"
environment = { FIXTURE_READY_AFTER = "120" }
health = { probe = "http", port = 8080, path = "/health", interval = "10s" }
"#,
    );
    let child = p.spawn(&["apply"]);
    let began = Instant::now();
    while p.inspect("web", "{{.State.Running}}") != "true" {
        assert!(began.elapsed() < Duration::from_secs(30), "never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(KILL_AT);
    let rm = docker(&["rm", "-f", &p.container("web")]);
    assert!(rm.status.success(), "{}", text(&rm));
    let removed = Instant::now();
    let out = child.wait_with_output().unwrap();
    let after = removed.elapsed();
    let output = said(&out);
    eprintln!(
        "berth ended {:.2} s after the removal\n{output}",
        after.as_secs_f64()
    );
    assert_eq!(out.status.code(), Some(4), "{output}");
    // `docker rm -f` kills, then removes: the gate may see the `die` first (an exit) or
    // find the container gone; either ends it at once. (controller_dies.rs pins the
    // "was removed" words.)
    assert!(
        output.contains("the container was removed")
            || output.contains("the container exited (code 137)"),
        "{output}"
    );
    assert!(after < WITHIN, "the gate ended {after:?} after the removal");
}
