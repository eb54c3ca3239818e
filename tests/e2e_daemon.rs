//! End-to-end: `berth run`, the daemon, against the real Docker engine. No command is
//! typed after it starts: drift is put back from the engine's events, edits of the desired
//! state converge, a bad edit keeps the running generation, SIGTERM leaves the stack
//! running, and the engine going away (cut off through a proxy) does not end it.

mod common;

use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::engine::EngineProxy;
use common::{ONE_WEB, Project, wait_for};

/// This file's daemons: on the project's file, with `env`.
impl Daemon {
    fn start(p: &Project) -> Daemon {
        Daemon::start_with(p, &[])
    }

    fn start_with(p: &Project, env: &[(&str, &str)]) -> Daemon {
        Daemon::build(p).file().env(env).start()
    }
}

fn healthy_again(p: &Project, d: &Daemon, old_id: &str, what: &str) -> String {
    wait_for(what, Duration::from_secs(20), || {
        p.inspect("web", "{{.State.Status}}") == "running"
            && d.status()["services"][0]["health"] == "healthy"
            && d.status()["status"] == "converged"
    });
    let id = p.id("web").unwrap();
    eprintln!("{what}: back as {} (was {})", &id[..12], &old_id[..12]);
    id
}

#[test]
fn killed_stopped_and_removed_containers_come_back_without_a_command() {
    let p = Project::new("daemon-drift");
    p.write(ONE_WEB);
    let d = Daemon::start(&p);
    wait_for("the first converge", Duration::from_secs(20), || {
        d.status()["status"] == "converged"
    });
    let id = p.id("web").unwrap();
    for (how, args) in [
        ("docker kill", vec!["kill", "CONTAINER"]),
        ("docker stop", vec!["stop", "CONTAINER"]),
        ("docker rm -f", vec!["rm", "-f", "CONTAINER"]),
    ] {
        let started = p.inspect("web", "{{.State.StartedAt}}");
        let c = p.container("web");
        let args: Vec<&str> = args
            .iter()
            .map(|a| if *a == "CONTAINER" { c.as_str() } else { a })
            .collect();
        assert!(common::docker(&args).status.success(), "{how}");
        let t0 = Instant::now();
        wait_for(how, Duration::from_secs(20), || {
            p.inspect("web", "{{.State.Status}}") == "running"
                && p.inspect("web", "{{.State.StartedAt}}") != started
        });
        eprintln!("{how}: running again after {:?}", t0.elapsed());
        healthy_again(&p, &d, &id, how);
    }
    let s = d.status();
    assert_eq!(s["generation"], 1, "repairs are not generations: {s}");
    assert!(s["repairs"].as_u64().unwrap() >= 3, "{s}");
    let (_, metrics) = d.get("/metrics");
    assert!(metrics.contains("berth_engine_reachable 1"), "{metrics}");
    assert!(
        metrics.contains("berth_drift_repairs_total{service=\"web\"}"),
        "{metrics}"
    );
    assert_eq!(d.stop(), 0);
}

#[test]
fn edits_converge_a_bad_edit_keeps_the_running_generation_and_sigterm_leaves_it_running() {
    let p = Project::new("daemon-edit");
    p.write(ONE_WEB);
    let d = Daemon::start(&p);
    wait_for("the first converge", Duration::from_secs(20), || {
        d.status()["status"] == "converged"
    });

    // An edit by atomic rename converges on its own.
    p.edit(&ONE_WEB.replace("VERSION = \"1\"", "VERSION = \"2\""));
    wait_for("the edit to converge", Duration::from_secs(20), || {
        p.inspect("web", "{{json .Config.Env}}")
            .contains("VERSION=2")
            && d.status()["generation"] == 2
            && d.status()["status"] == "converged"
    });
    let id = p.id("web").unwrap();

    // An invalid edit: the running generation stays, status names FILE:LINE:COL.
    p.edit(&ONE_WEB.replace("image = \"berth-fixture:test\"", "image = 12"));
    wait_for("the invalid edit to show", Duration::from_secs(20), || {
        d.status()["status"] == "blocked"
    });
    let s = d.status();
    let reason = s["reason"].as_str().unwrap();
    let at = format!("{}:8:9", p.file().display());
    assert!(reason.contains(&at), "status must name {at}: {reason}");
    assert_eq!(
        p.id("web").as_deref(),
        Some(id.as_str()),
        "nothing was changed"
    );
    // ... and its drift is still repaired.
    assert!(
        common::docker(&["stop", &p.container("web")])
            .status
            .success()
    );
    wait_for(
        "drift repair under a bad edit",
        Duration::from_secs(20),
        || p.inspect("web", "{{.State.Status}}") == "running",
    );

    // SIGTERM: exit 0, the stack keeps running.
    assert_eq!(d.stop(), 0);
    assert_eq!(p.inspect("web", "{{.State.Status}}"), "running");
    assert_eq!(p.id("web").as_deref(), Some(id.as_str()));
}

#[test]
fn under_systemd_it_says_ready_status_watchdog_and_stopping() {
    let p = Project::new("daemon-notify");
    p.write(ONE_WEB);
    let path = p.dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let d = Daemon::start_with(
        &p,
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            // systemd's WatchdogSec=2s: WATCHDOG=1 every second while the loop beats.
            ("WATCHDOG_USEC", "2000000"),
        ],
    );
    let has = |said: &[String], what: &str| said.iter().any(|m| m.contains(what));
    let read = |said: &mut Vec<String>, until: &dyn Fn(&[String]) -> bool| {
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        while !until(said) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "systemd was told only {said:?}"
            );
            if let Ok(n) = sock.recv(&mut buf) {
                said.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    };
    let mut said = Vec::new();
    read(&mut said, &|s| {
        has(s, "READY=1")
            && has(s, "converged")
            && s.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2
    });
    let status = said
        .iter()
        .rev()
        .find(|m| m.starts_with("STATUS="))
        .unwrap()
        .clone();
    assert!(
        status.contains(&format!("project {}: converged", p.name)),
        "{status}"
    );
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) };
    read(&mut said, &|s| has(s, "STOPPING=1"));
    assert_eq!(d.stop(), 0);
}

#[test]
fn a_service_that_keeps_dying_is_held_not_restarted_in_a_tight_loop() {
    let p = Project::new("daemon-crashloop");
    // Passes its gate, then exits 2 s after each start: a crash loop that berth itself
    // would restart (Docker's own restart policy is off).
    p.write(&ONE_WEB.replace(
        "environment = { VERSION = \"1\" }",
        "environment = { VERSION = \"1\", FIXTURE_EXIT_AFTER = \"2\" }\nrestart = \"no\"",
    ));
    let d = Daemon::start(&p);
    wait_for("the crash loop to be held", Duration::from_secs(60), || {
        d.status()["reason"]
            .as_str()
            .is_some_and(|r| r.contains("web: restarted 5 times in"))
    });
    let s = d.status();
    assert_eq!(s["status"], "degraded", "{s}");
    // Held: the container stays down instead of being put back at once.
    wait_for(
        "the held container to exit",
        Duration::from_secs(10),
        || p.inspect("web", "{{.State.Status}}") == "exited",
    );
    let repairs = d.status()["repairs"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        p.inspect("web", "{{.State.Status}}"),
        "exited",
        "held, not restarted"
    );
    assert_eq!(d.status()["repairs"].as_u64().unwrap(), repairs);
    assert_eq!(d.stop(), 0);
}

#[test]
fn a_project_taken_down_stays_down_under_the_daemon_until_applied() {
    let p = Project::new("daemon-down");
    p.write(ONE_WEB);
    let d = Daemon::start(&p);
    wait_for("the first converge", Duration::from_secs(20), || {
        d.status()["status"] == "converged"
    });
    let down = p.berth(&["down"]);
    assert_eq!(down.code, 0, "{}", down.stderr);
    // The destroy events wake the daemon; it must not bring the project back.
    wait_for(
        "the daemon to see the down",
        Duration::from_secs(20),
        || {
            d.status()["reason"]
                .as_str()
                .is_some_and(|r| r.contains("taken down"))
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(p.containers().is_empty(), "the daemon undid `berth down`");
    // `berth apply` brings it up, and the daemon keeps it up.
    assert_eq!(p.berth(&["apply"]).code, 0);
    wait_for("converged again", Duration::from_secs(20), || {
        d.status()["status"] == "converged"
    });
    assert_eq!(d.stop(), 0);
}

#[test]
fn the_engine_going_away_does_not_end_the_daemon_and_it_reconciles_when_it_is_back() {
    let p = Project::new("daemon-engine");
    p.write(ONE_WEB);
    let mut proxy = EngineProxy::start(p.dir.path().join("docker.sock"));
    let mut d = Daemon::start_with(&p, &[("DOCKER_HOST", &proxy.docker_host())]);
    wait_for("the first converge", Duration::from_secs(30), || {
        d.status()["status"] == "converged"
    });
    let metric = |d: &Daemon, value: &str| {
        d.get("/metrics")
            .1
            .contains(&format!("berth_engine_reachable {value}"))
    };
    assert!(metric(&d, "1"));
    let alive = |d: &mut Daemon| d.child.try_wait().unwrap().is_none();

    // Cut: the daemon lives on, and its status and metrics say the engine is unreachable.
    proxy.cut();
    wait_for(
        "status and metrics to say the engine is unreachable",
        Duration::from_secs(60),
        || {
            let s = d.status();
            s["status"] == "degraded"
                && s["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("engine unreachable"))
                && metric(&d, "0")
        },
    );
    eprintln!("while cut: {}", d.status());
    // Meanwhile the project's container goes, through the engine itself.
    assert!(
        common::docker(&["rm", "-f", &p.container("web")])
            .status
            .success()
    );
    std::thread::sleep(Duration::from_secs(5));
    assert!(alive(&mut d), "the daemon exited while the engine was away");
    assert_eq!(d.get("/healthz").0, 200);
    let s = d.status();
    assert_eq!(s["status"], "degraded", "{s}");
    assert!(metric(&d, "0"));
    assert_eq!(p.id("web"), None, "nothing was put back while cut");
    // `berth status` (which itself reaches the engine directly) asks the daemon and tells
    // the same story.
    let status = p.berth(&["status"]);
    assert_eq!(status.code, 1, "{}", status.stderr);
    assert!(
        status.stdout.contains("degraded (engine unreachable")
            && status.stdout.contains("as reported by berth run"),
        "{}",
        status.stdout
    );

    // Restore: the container is back and healthy, the status converged, without a command.
    proxy.restore();
    wait_for(
        "the daemon to reconcile once the engine is back",
        Duration::from_secs(60),
        || {
            let s = d.status();
            p.inspect("web", "{{.State.Status}}") == "running"
                && s["status"] == "converged"
                && s["services"][0]["health"] == "healthy"
                && metric(&d, "1")
        },
    );
    assert!(alive(&mut d), "the daemon exited");
    let s = d.status();
    assert_eq!(s["generation"], 1, "a repair, not a new generation: {s}");
    assert!(s["repairs"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(d.stop(), 0);
}

#[test]
fn a_converge_the_engine_stops_answering_is_interrupted_not_reverted_and_resumed_when_it_is_back() {
    let p = Project::new("daemon-engine-mid");
    p.write(ONE_WEB);
    let mut proxy = EngineProxy::start(p.dir.path().join("docker.sock"));
    let mut d = Daemon::start_with(&p, &[("DOCKER_HOST", &proxy.docker_host())]);
    wait_for("the first converge", Duration::from_secs(30), || {
        d.status()["status"] == "converged"
    });

    // Generation 2's web is healthy 12 s after its start: its gate is running when the
    // engine goes away.
    p.edit(
        &ONE_WEB
            .replace(
                "VERSION = \"1\"",
                "VERSION = \"2\", FIXTURE_READY_AFTER = \"12\"",
            )
            .replace("healthy_deadline = \"10s\"", "healthy_deadline = \"90s\""),
    );
    wait_for(
        "generation 2's container to start",
        Duration::from_secs(30),
        || {
            p.inspect("web", "{{json .Config.Env}}")
                .contains("VERSION=2")
                && p.inspect("web", "{{.State.Status}}") == "running"
        },
    );
    proxy.cut();
    wait_for(
        "the converge to end interrupted",
        Duration::from_secs(60),
        || {
            let s = d.status();
            s["status"] == "degraded"
                && s["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("engine unreachable"))
                && p.history()
                    .last()
                    .is_some_and(|g| g["outcome"] == "interrupted")
        },
    );
    // Not judged: no gate failure, no revert; nothing is poisoned.
    let h = p.history();
    assert_eq!(h.len(), 2, "{h:#?}");
    assert_eq!(h[1]["id"], 2, "{h:#?}");
    assert!(
        h[1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("engine stopped answering")),
        "{h:#?}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(d.child.try_wait().unwrap().is_none(), "the daemon exited");
    assert_eq!(p.history().len(), 2);

    // Back: generation 2 is resumed (gated again) and ends healthy; never reverted.
    proxy.restore();
    wait_for(
        "generation 2 to be resumed and converge",
        Duration::from_secs(90),
        || {
            let s = d.status();
            s["status"] == "converged" && s["generation"] == 2
        },
    );
    let h = p.history();
    assert_eq!(h.len(), 2, "{h:#?}");
    assert_eq!(h[1]["outcome"], "healthy", "{h:#?}");
    assert!(
        p.inspect("web", "{{json .Config.Env}}")
            .contains("VERSION=2")
    );
    assert!(d.child.try_wait().unwrap().is_none(), "the daemon exited");
    assert_eq!(d.stop(), 0);
}

/// The project's running containers: (name, id).
fn running(p: &Project) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = p
        .ps(&[], "{{.Names}} {{.ID}}")
        .iter()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, i)| (n.to_string(), i.to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn a_poisoned_edit_is_not_applied_again_and_drift_repair_goes_on() {
    let p = Project::new("daemon-poison");
    let good = ONE_WEB.replace("healthy_deadline = \"10s\"", "healthy_deadline = \"3s\"");
    p.write(&good);
    let d = Daemon::start(&p);
    wait_for("the first converge", Duration::from_secs(20), || {
        d.status()["status"] == "converged"
    });

    // An edit that never gets healthy: generation 2 fails its gate and is rolled back;
    // its desired state is poisoned and is not tried again.
    p.edit(&good.replace(
        "environment = { VERSION = \"1\" }",
        "environment = { VERSION = \"2\", FIXTURE_NEVER_HEALTHY = \"1\" }",
    ));
    wait_for(
        "the poisoned edit to be refused",
        Duration::from_secs(40),
        || {
            let s = d.status();
            s["status"] == "blocked" && s["reason"].as_str().is_some_and(|r| r.contains("poisoned"))
        },
    );
    assert_eq!(d.status()["generation"], 2, "{}", d.status());
    assert!(
        p.inspect("web", "{{json .Config.Env}}")
            .contains("VERSION=1"),
        "the good generation runs"
    );

    // Drift of the running generation is still repaired, with the good spec.
    let old = p.id("web").unwrap();
    assert!(
        common::docker(&["kill", &p.container("web")])
            .status
            .success()
    );
    wait_for(
        "the repair under a poisoned edit",
        Duration::from_secs(20),
        || {
            p.inspect("web", "{{.State.Status}}") == "running"
                && d.status()["repairs"].as_u64().unwrap_or(0) >= 1
        },
    );
    assert!(
        p.inspect("web", "{{json .Config.Env}}")
            .contains("VERSION=1")
    );
    eprintln!("repaired (was {})", &old[..12]);
    // Nothing applied the poisoned state again: no generation after 2.
    std::thread::sleep(Duration::from_secs(2));
    let h = p.history();
    assert_eq!(h.len(), 2, "{h:#?}");
    assert_eq!(d.stop(), 0);
}

#[test]
fn sigterm_mid_converge_leaves_containers_and_the_next_run_finishes_the_job() {
    let p = Project::new("daemon-midterm");
    p.write(ONE_WEB);
    let d = Daemon::start(&p);
    wait_for("the first converge", Duration::from_secs(20), || {
        d.status()["status"] == "converged"
    });
    // A slow edit: the new container takes 6 s to get healthy.
    p.edit(&ONE_WEB.replace(
        "environment = { VERSION = \"1\" }",
        "environment = { VERSION = \"2\", FIXTURE_READY_AFTER = \"6\" }",
    ));
    wait_for("the converge to start", Duration::from_secs(20), || {
        d.status()["status"] == "progressing"
            || p.ps(&[], "{{.Label \"berth.generation\"}}")
                .iter()
                .any(|g| g == "2")
    });
    std::thread::sleep(Duration::from_millis(500));
    let before = running(&p);
    assert_eq!(d.stop(), 0, "SIGTERM mid-converge exits 0");
    assert_eq!(running(&p), before, "no container was stopped or removed");
    let status = p.berth(&["status", "--json"]);
    let s: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(s[0]["status"], "interrupted", "{}", status.stdout);

    // The next berth run finishes generation 2.
    let d = Daemon::start(&p);
    wait_for(
        "the next run to finish the job",
        Duration::from_secs(40),
        || {
            let s = d.status();
            s["status"] == "converged" && s["generation"] == 2
        },
    );
    assert!(
        p.inspect("web", "{{json .Config.Env}}")
            .contains("VERSION=2")
    );
    assert_eq!(d.stop(), 0);
}

#[test]
fn status_asks_the_daemon_and_apply_of_another_file_is_refused() {
    let p = Project::new("daemon-client");
    p.write(ONE_WEB);
    let d = Daemon::start(&p);
    wait_for("the first converge", Duration::from_secs(20), || {
        d.status()["status"] == "converged"
    });
    let status = p.berth(&["status"]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert!(
        status.stdout.contains(&format!(
            "(as reported by berth run, pid {} on",
            d.child.id()
        )),
        "{}",
        status.stdout
    );
    assert!(status.stdout.contains("converged"), "{}", status.stdout);
    let json = p.berth(&["status", "--json"]);
    let s: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(s[0]["status"], "converged");

    // Another file for the daemon's project is refused, and nothing changes.
    let id = p.id("web").unwrap();
    let other = p.dir.path().join("other.toml");
    std::fs::write(
        &other,
        ONE_WEB
            .replace("{project}", &p.name)
            .replace("VERSION = \"1\"", "VERSION = \"9\""),
    )
    .unwrap();
    let refused = p.berth(&["apply", "-f", other.to_str().unwrap()]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("served by berth run")
            && refused.stderr.contains(p.file().to_str().unwrap()),
        "{}",
        refused.stderr
    );
    assert_eq!(p.id("web").as_deref(), Some(id.as_str()));
    // Its own file takes turns with it on the project lock.
    let same = p.berth(&["apply"]);
    assert_eq!(same.code, 0, "{}", same.stderr);
    assert_eq!(d.stop(), 0);
    // With the daemon gone, status works it out itself.
    let status = p.berth(&["status"]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert!(
        !status.stdout.contains("as reported by"),
        "{}",
        status.stdout
    );
}
