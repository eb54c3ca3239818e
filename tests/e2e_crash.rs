//! End-to-end: a converge that is killed, raced or stopped still tells the truth
//! (docs/design.md §§7 and 9), against the real Docker engine.
//!
//! - kill trials: `kill -9` at random moments of a converge, then a plain `apply`;
//! - the exact case of a kill inside the gate of a never-healthy service;
//! - two `apply` at once on one project, and `--no-wait`;
//! - SIGTERM during `apply`;
//! - the project's network found by label and duplicates of it repaired.

mod common;

use std::process::Child;
use std::time::Duration;

use common::{Project, Run, docker, text, wait_for};

/// Four fixture services in two dependency levels; `{version}` changes every service's
/// spec, so each trial recreates all four.
const STACK: &str = r#"
[project]
name = "{project}"

[rollout]
healthy_deadline = "8s"
min_healthy_time = "300ms"

[services.db]
image = "berth-fixture:test"
environment = { ROLE = "db", VERSION = "{version}", FIXTURE_READY_AFTER = "0.4" }
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }

[services.cache]
image = "berth-fixture:test"
environment = { ROLE = "cache", VERSION = "{version}", FIXTURE_READY_AFTER = "0.2" }
health = { probe = "tcp", port = 8080, interval = "100ms" }

[services.web]
image = "berth-fixture:test"
depends_on = ["db", "cache"]
environment = { ROLE = "web", VERSION = "{version}", FIXTURE_READY_AFTER = "0.4" }
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }

[services.worker]
image = "berth-fixture:test"
depends_on = ["db"]
environment = { ROLE = "worker", VERSION = "{version}" }
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }
"#;

const SERVICES: [&str; 4] = ["cache", "db", "web", "worker"];

fn stack(version: &str) -> String {
    STACK.replace("{version}", version)
}

fn finish(child: Child) -> Run {
    let run = Run::from(child.wait_with_output().unwrap());
    eprintln!(
        "$ berth (background)\n{}{}(exit {})",
        run.stdout, run.stderr, run.code
    );
    run
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

fn env_of(p: &Project, service: &str) -> String {
    p.inspect(service, "{{json .Config.Env}}")
}

/// A small xorshift generator: the trials' kill times, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// After a converge: exactly one container per service, every one on `version`, the
/// newest generation healthy, no `progressing`/`interrupted` row, and `No changes.`.
fn assert_converged_on(p: &Project, version: &str) {
    let want: Vec<String> = SERVICES.iter().map(|s| p.container(s)).collect();
    assert_eq!(p.containers(), want, "exactly one container per service");
    for s in SERVICES {
        let env = env_of(p, s);
        assert!(
            env.contains(&format!("VERSION={version}")),
            "{s} is not on version {version}: {env}"
        );
        assert_eq!(p.inspect(s, "{{.State.Status}}"), "running", "{s}");
    }
    let h = p.history();
    let newest = h.last().unwrap();
    assert_eq!(newest["outcome"], "healthy", "{h:#?}");
    assert_no_unfinished(&h);
    // Gated: the converge that ended it gated every service (a resumed one too, even a
    // service whose container already looked converged).
    for s in SERVICES {
        assert!(
            newest["timings"][s]["gate_s"].is_number(),
            "{s} was not gated by generation {}: {}",
            newest["id"],
            newest["timings"]
        );
    }
    // The same file was applied again: the interrupted generation was resumed, never
    // superseded by a second generation of the same desired state.
    assert!(h.iter().all(|g| g["outcome"] != "superseded"), "{h:#?}");
    assert_eq!(p.berth(&["plan"]).stdout, "No changes.\n");
    let status = p.berth(&["status"]);
    assert_eq!(
        status.code, 0,
        "status must be converged: {}",
        status.stdout
    );
}

fn assert_no_unfinished(h: &[serde_json::Value]) {
    for g in h {
        assert!(
            !["progressing", "interrupted", "reverting"].contains(&g["outcome"].as_str().unwrap()),
            "a generation was left unfinished: {h:#?}"
        );
    }
}

fn seed() -> u64 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill trial seed: {seed}");
    seed
}

#[test]
fn kill_9_at_random_moments_then_a_plain_apply_always_ends_converged_and_gated() {
    let p = Project::new("killtrial");
    p.write(&stack("0"));
    assert_eq!(p.berth(&["apply"]).code, 0);
    let mut rng = Rng(seed());
    let trials = 10;
    let mut killed_mid_converge = 0;
    for i in 1..=trials {
        let version = i.to_string();
        p.write(&stack(&version));
        let child = p.spawn(&["apply"]);
        // A whole converge of this stack takes about 2-3 s here: kill anywhere in it.
        let after = rng.below(2500);
        std::thread::sleep(Duration::from_millis(after));
        signal(&child, libc::SIGKILL);
        let killed = finish(child);
        if killed.code == -1 {
            killed_mid_converge += 1;
        }
        eprintln!("trial {i}: killed after {after} ms");
        let run = p.berth(&["apply"]);
        assert_eq!(
            run.code, 0,
            "trial {i} (kill after {after} ms): {}",
            run.stderr
        );
        assert_converged_on(&p, &version);
    }
    eprintln!(
        "kill trials: {trials} run, {killed_mid_converge} killed before they ended, all converged"
    );
    assert!(
        killed_mid_converge >= trials / 2,
        "most kills must land mid-converge"
    );
}

#[test]
fn kill_9_during_a_failing_converge_or_its_revert_always_ends_rolled_back_and_poisoned() {
    let p = Project::new("killrevert");
    let fast = |v: &str| stack(v).replace("healthy_deadline = \"8s\"", "healthy_deadline = \"2s\"");
    p.write(&fast("good"));
    assert_eq!(p.berth(&["apply"]).code, 0);
    let mut rng = Rng(seed());
    let trials = 6;
    for i in 1..=trials {
        let bad = fast(&format!("bad{i}")).replace(
            "ROLE = \"web\",",
            "ROLE = \"web\", FIXTURE_NEVER_HEALTHY = \"1\",",
        );
        p.write(&bad);
        let child = p.spawn(&["apply"]);
        // The failing converge (web's 2 s deadline) and its revert take about 5 s here.
        let after = rng.below(5000);
        std::thread::sleep(Duration::from_millis(after));
        signal(&child, libc::SIGKILL);
        finish(child);
        eprintln!("failing trial {i}: killed after {after} ms");
        let run = p.berth(&["apply"]);
        // 3: this apply failed the gate (again) and reverted; 5: the killed one had
        // already reverted, and the file is poisoned.
        assert!(
            run.code == 3 || run.code == 5,
            "trial {i} (kill after {after} ms): exit {}: {}",
            run.code,
            run.stderr
        );
        let want: Vec<String> = SERVICES.iter().map(|s| p.container(s)).collect();
        assert_eq!(p.containers(), want, "exactly one container per service");
        for s in SERVICES {
            let env = env_of(&p, s);
            assert!(
                env.contains("VERSION=good"),
                "{s} is not back on the good spec: {env}"
            );
            assert_eq!(p.inspect(s, "{{.State.Status}}"), "running", "{s}");
        }
        let h = p.history();
        assert_no_unfinished(&h);
        assert_eq!(h.last().unwrap()["outcome"], "rolled-back", "{h:#?}");
        assert_eq!(
            p.berth(&["apply"]).code,
            5,
            "the bad desired state stays poisoned"
        );
    }
}

#[test]
fn a_kill_inside_the_gate_of_a_never_healthy_service_is_resumed_failed_and_reverted() {
    let p = Project::new("killgate");
    p.write(&stack("1"));
    assert_eq!(p.berth(&["apply"]).code, 0);
    p.write(&stack("1").replace(
        "ROLE = \"web\",",
        "ROLE = \"web\", FIXTURE_NEVER_HEALTHY = \"1\",",
    ));
    let child = p.spawn(&["apply"]);
    // web's new container exists and is running: its gate is being waited on.
    wait_for(
        "web's never-healthy container",
        Duration::from_secs(20),
        || {
            env_of(&p, "web").contains("FIXTURE_NEVER_HEALTHY")
                && p.inspect("web", "{{.State.Status}}") == "running"
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, libc::SIGKILL);
    finish(child);

    // Readers tell the truth before anything resumes it.
    let h = p.history();
    assert_eq!(h[1]["outcome"], "interrupted", "{h:#?}");
    let status = p.berth(&["status"]);
    assert_eq!(status.code, 1);
    assert!(status.stdout.contains("interrupted"), "{}", status.stdout);
    // plan sees a converged-looking container, and says what apply will do first.
    let plan = p.berth(&["plan"]).stdout;
    assert!(plan.starts_with("No changes.\n"), "{plan}");
    assert!(plan.contains("generation 2 did not end"), "{plan}");

    // The never-healthy container looks converged (same config hash, running), but the
    // resumed generation gates it again: it fails and the stack reverts.
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stdout.contains("resuming generation 2"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("service \"web\" failed its gate"),
        "{}",
        run.stderr
    );
    let h = p.history();
    assert_eq!(h.len(), 2, "resumed, not a new generation: {h:#?}");
    assert_eq!(h[1]["outcome"], "rolled-back");
    // web is back, running, on generation 1's spec (an absent web has no env at all).
    assert!(
        p.id("web").is_some(),
        "web has no container after the revert"
    );
    assert_eq!(p.inspect("web", "{{.State.Status}}"), "running");
    let env = env_of(&p, "web");
    assert!(
        env.contains("ROLE=web") && !env.contains("FIXTURE_NEVER_HEALTHY"),
        "{env}"
    );
    // And it stays poisoned.
    assert_eq!(p.berth(&["apply"]).code, 5);
}

#[test]
fn two_applies_at_once_one_converges_and_the_other_waits_then_finds_no_changes() {
    let p = Project::new("race");
    p.write(
        r#"
[project]
name = "{project}"
[services.a]
image = "berth-fixture:test"
environment = { FIXTURE_READY_AFTER = "1" }
health = { probe = "http", port = 8080, interval = "100ms" }
[services.b]
image = "berth-fixture:test"
depends_on = ["a"]
health = { probe = "tcp", port = 8080, interval = "100ms" }
"#,
    );
    let first = p.spawn(&["apply"]);
    let second = p.spawn(&["apply"]);
    let (first, second) = (finish(first), finish(second));
    assert_eq!((first.code, second.code), (0, 0));
    let (winner, waiter) = if first.stdout.contains("Converged") {
        (first, second)
    } else {
        (second, first)
    };
    assert!(
        winner.stdout.contains("Converged: generation 1"),
        "{}",
        winner.stdout
    );
    assert!(
        waiter
            .stderr
            .contains("is being converged by berth apply (pid"),
        "{}",
        waiter.stderr
    );
    assert_eq!(waiter.stdout.trim_end().lines().last(), Some("No changes."));
    assert_eq!(p.history().len(), 1);
    // One network of the project's name, not one per racer.
    let nets = text(&docker(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("label=berth.project={}", p.name),
    ]));
    assert_eq!(nets.lines().count(), 1, "{nets}");

    // --no-wait: exits 1 at once, naming the holder.
    p.write(
        &std::fs::read_to_string(p.file())
            .unwrap()
            .replace("\"1\"", "\"2\""),
    );
    let holder = p.spawn(&["apply"]);
    let lock = p.dir.path().join("locks").join(&p.name).join("holder.json");
    wait_for("the lock to be taken", Duration::from_secs(10), || {
        std::fs::read_to_string(&lock)
            .is_ok_and(|t| t.contains(&format!("\"pid\":{}", holder.id())))
    });
    let busy = p.berth(&["apply", "--no-wait"]);
    assert_eq!(busy.code, 1, "{}", busy.stderr);
    assert!(
        busy.stderr.contains(&format!("pid {}", holder.id())),
        "{}",
        busy.stderr
    );
    assert_eq!(finish(holder).code, 0);
}

#[test]
fn sigterm_during_apply_stops_at_a_step_boundary_records_interrupted_and_the_next_apply_resumes() {
    let p = Project::new("sigterm");
    p.write(
        r#"
[project]
name = "{project}"
[services.slow]
image = "berth-fixture:test"
environment = { FIXTURE_READY_AFTER = "4" }
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }
[services.after]
image = "berth-fixture:test"
depends_on = ["slow"]
"#,
    );
    let child = p.spawn(&["apply"]);
    // slow is ready 4 s after its start, so its gate is still running when `after` (the
    // level above, made ahead while slow gates) exists: the signal comes after both.
    wait_for(
        "slow to start and after to be made",
        Duration::from_secs(10),
        || p.inspect("slow", "{{.State.Status}}") == "running" && p.id("after").is_some(),
    );
    signal(&child, libc::SIGTERM);
    let run = finish(child);
    assert_eq!(run.code, 128 + libc::SIGTERM, "{}", run.stderr);
    assert!(run.stderr.contains("stopped by SIGTERM"), "{}", run.stderr);
    let h = p.history();
    assert_eq!(h[0]["outcome"], "interrupted");
    // Nothing past the step it stopped at was started (the level above was made ahead,
    // not started), and nothing running was stopped.
    assert_eq!(p.inspect("slow", "{{.State.Status}}"), "running");
    // The level above was made ahead before the signal, and never started.
    assert!(
        p.id("after").is_some(),
        "after's container made ahead is gone"
    );
    assert_eq!(
        p.inspect("after", "{{.State.Status}} {{.State.StartedAt}}"),
        "created 0001-01-01T00:00:00Z",
        "after must not have started"
    );
    let status = p.berth(&["status"]);
    assert_eq!(status.code, 1);
    assert!(status.stdout.contains("interrupted"), "{}", status.stdout);

    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("resumed"), "{}", run.stdout);
    let h = p.history();
    assert_eq!(
        (h.len(), &h[0]["outcome"]),
        (1, &serde_json::json!("healthy"))
    );
    assert_eq!(p.inspect("after", "{{.State.Status}}"), "running");
}

#[test]
fn duplicate_networks_of_the_project_are_repaired_and_the_network_found_by_label() {
    let p = Project::new("dupnet");
    p.write(
        r#"
[project]
name = "{project}"
[services.a]
image = "berth-fixture:test"
"#,
    );
    let net = format!("{}_default", p.name);
    // Two networks of one name, as two processes creating the project's network at once
    // can leave them: the docker CLI refuses a duplicate name, the engine's API does not.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let engine = bollard::Docker::connect_with_defaults()
            .unwrap()
            .negotiate_version()
            .await
            .unwrap();
        for _ in 0..2 {
            engine
                .create_network(bollard::models::NetworkCreateRequest {
                    name: net.clone(),
                    labels: Some([("berth.project".to_string(), p.name.clone())].into()),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    });
    let names = text(&docker(&["network", "ls", "--format", "{{.Name}}"]));
    assert_eq!(
        names.lines().filter(|n| *n == net).count(),
        2,
        "premise: two networks"
    );
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let nets = text(&docker(&["network", "ls", "--format", "{{.Name}}"]));
    assert_eq!(
        nets.lines().filter(|n| *n == net).count(),
        1,
        "the empty duplicate is removed: {nets}"
    );
    assert_eq!(p.berth(&["apply"]).stdout, "No changes.\n");
}
