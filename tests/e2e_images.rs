//! End-to-end: images are made present before anything runs, and a service without a
//! probe of its own is gated on its image's Docker HEALTHCHECK.

mod common;

use common::{Project, docker, text};

#[test]
fn a_service_without_a_probe_is_gated_on_its_images_healthcheck() {
    let p = Project::new("imghc");
    p.write(
        r#"
[project]
name = "{project}"
[rollout]
healthy_deadline = "30s"
min_healthy_time = "0s"
[services.web]
image = "berth-fixture:healthcheck"
environment = { FIXTURE_READY_AFTER = "2" }
"#,
    );
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("(docker healthcheck)"),
        "{}",
        run.stdout
    );
    assert_eq!(p.inspect("web", "{{.State.Health.Status}}"), "healthy");
}

/// A gate on the image's HEALTHCHECK follows the engine's events (health_status,
/// die, start) instead of inspecting the container every probe interval.
#[test]
fn a_healthcheck_gate_follows_the_engines_events_instead_of_polling() {
    let p = Project::new("imghcev");
    p.write(
        r#"
[project]
name = "{project}"
[rollout]
healthy_deadline = "30s"
min_healthy_time = "3s"
[services.web]
image = "berth-fixture:healthcheck"
environment = { FIXTURE_READY_AFTER = "1" }
"#,
    );
    let run = p.berth_env(
        &["apply"],
        &[
            ("BERTH_LOG", "berth::runtime=debug"),
            ("BERTH_LOG_FORMAT", "json"),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("(docker healthcheck)"),
        "{}",
        run.stdout
    );
    // The premise: the calls are counted in the log at all.
    assert!(run.stderr.contains(r#""call":"events""#), "{}", run.stderr);
    // About 4 s from start to the window's end. Polled every 250 ms (the default
    // interval) that is 16 inspects or more; following events it is the first one, one
    // per event (start, health_status), one at the window's end, and a fallback every 2 s.
    let inspects = run.stderr.matches(r#""call":"inspect_container""#).count();
    assert!(
        (1..=8).contains(&inspects),
        "{inspects} inspects of the container while gating"
    );
}

/// A container gated on its HEALTHCHECK that exits inside its window fails the gate, seen
/// from its `die` event, not from the look the gate takes anyway every 2 s (gate.rs's
/// `EVENT_FALLBACK`) when no event comes.
#[test]
fn a_healthcheck_gated_container_that_exits_inside_its_window_fails_the_gate() {
    /// gate.rs's `EVENT_FALLBACK`: a gate that follows events looks again this long after
    /// its previous look when nothing woke it sooner.
    const FALLBACK_MS: i64 = 2000;
    let p = Project::new("imghcdie");
    // The image's HEALTHCHECK runs 1 s after the start, then 1 s after each check ends:
    // the gate hears `health_status: healthy` about 1.05 s in, and without an event it
    // would look again 2 s after that. The fixture exits 1.5 s after its start (ready at
    // 0.2 s, healthy for 1.3 s): inside its 20 s window, about 0.5 s from the checks
    // before and after it (a check that meets the exit reports `unhealthy`, an event of
    // its own) and 1.5 s before the fallback's look.
    p.write(
        r#"
[project]
name = "{project}"
[rollout]
healthy_deadline = "30s"
min_healthy_time = "20s"
[services.web]
image = "berth-fixture:healthcheck"
restart = "no"
environment = { FIXTURE_READY_AFTER = "0.2", FIXTURE_HEALTHY_FOR = "1.3" }
"#,
    );
    let run = p.berth_env(
        &["apply"],
        &[
            ("BERTH_LOG", "berth::runtime=debug"),
            ("BERTH_LOG_FORMAT", "json"),
        ],
    );
    // A first apply has nothing to revert to: degraded, exit 4.
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("service \"web\" failed its gate: the container exited (code 1"),
        "{}",
        run.stderr
    );
    // When it exited (the fixture's own log) and when the gate failed (the generation's
    // timings), both in unix ms of this host's clock.
    let exited_ms = p
        .fixture_event_ms("web", "exit")
        .expect("the fixture logged its exit");
    let history = p.history();
    let failed_ms = history[0]["timings"]["web"]["failed_ms"]
        .as_i64()
        .unwrap_or_else(|| panic!("no failed_ms in {history:?}"));
    // Every look the gate took is one inspect of the container (the only container of the
    // converge), logged as the call begins. After its last look before the exit, a gate
    // that no event wakes looks again only once that look is over and a whole 2 s have
    // passed, and only that look could see the exit: the failure would come 2 s or more
    // after the last look before the exit. Sooner, it was an event after that look that
    // told of the exit, and the only event a container has after its exit is its `die`.
    let looks: Vec<i64> = run
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["call"] == "inspect_container")
        .map(|v| {
            let at: jiff::Timestamp = v["timestamp"].as_str().unwrap().parse().unwrap();
            at.as_millisecond()
        })
        .collect();
    let last_before = looks
        .iter()
        .copied()
        .filter(|&t| t < exited_ms)
        .max()
        .unwrap_or_else(|| panic!("no look before the exit at {exited_ms}: {looks:?}"));
    eprintln!(
        "looks at {:?} ms from the exit; the gate failed {} ms after it",
        looks.iter().map(|t| t - exited_ms).collect::<Vec<_>>(),
        failed_ms - exited_ms
    );
    assert!(
        failed_ms - last_before < FALLBACK_MS,
        "the gate failed {} ms after its last look before the exit: the fallback's look saw it",
        failed_ms - last_before
    );
    // And the failure followed the exit at once. (The event comes within milliseconds;
    // 1 s leaves room for a loaded machine. This bound alone proves nothing, a fallback
    // look may land that soon after an exit too: the gap between the looks above does.)
    assert!(
        failed_ms - exited_ms < 1000,
        "the gate failed {} ms after the exit",
        failed_ms - exited_ms
    );
}

#[test]
fn an_image_that_cannot_be_had_stops_nothing_and_names_the_image() {
    let p = Project::new("noimg");
    let ok = r#"
[project]
name = "{project}"
[services.web]
image = "berth-fixture:test"
"#;
    p.write(ok);
    assert_eq!(p.berth(&["apply"]).code, 0);
    let id = p.id("web").unwrap();
    p.write(&format!(
        "{ok}environment = {{ A = \"1\" }}\n[services.other]\nimage = \"berth-e2e-no-such-image:never\"\n"
    ));
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("berth-e2e-no-such-image:never"),
        "{}",
        run.stderr
    );
    assert_eq!(
        p.id("web").unwrap(),
        id,
        "the running container was not touched"
    );
    assert_eq!(p.inspect("web", "{{.State.Running}}"), "true");
    assert!(p.id("other").is_none());
}

#[test]
fn a_service_with_a_build_context_is_built_with_the_classic_builder() {
    let p = Project::new("build");
    let ctx = p.dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM berth-fixture:test\nARG GREETING\nENV GREETING=$GREETING\n",
    )
    .unwrap();
    p.write(
        r#"
[project]
name = "{project}"
[services.web]
build = { context = "ctx", args = { GREETING = "built-here" } }
health = { probe = "http", port = 8080, path = "/env/GREETING" }
"#,
    );
    let run = p.berth(&["apply"]);
    let image = format!("{}-web:latest", p.name);
    let env = p.inspect("web", "{{json .Config.Env}}");
    docker(&["rm", "-f", &p.container("web")]);
    docker(&["rmi", &image]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains(&format!("building {image}")),
        "{}",
        run.stdout
    );
    assert!(env.contains("GREETING=built-here"), "{env}");
}

#[test]
fn an_edited_build_context_rebuilds_and_recreates_and_ignored_files_change_nothing() {
    let p = Project::new("rebuild");
    let ctx = p.dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM berth-fixture:test\nENV GREETING=hello\nCOPY . /ctx/\n",
    )
    .unwrap();
    std::fs::write(ctx.join(".dockerignore"), "notes\n*.log\n").unwrap();
    std::fs::write(ctx.join("app.txt"), "version 1").unwrap();
    std::fs::create_dir(ctx.join("notes")).unwrap();
    std::fs::write(ctx.join("notes/todo.md"), "first").unwrap();
    std::fs::write(ctx.join("build.log"), "first").unwrap();
    p.write(
        r#"
[project]
name = "{project}"
[rollout]
min_healthy_time = "0s"
[services.web]
build = { context = "ctx" }
health = { probe = "http", port = 8080, path = "/env/GREETING" }
"#,
    );
    let image = format!("{}-web:latest", p.name);
    let mut images_made = Vec::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let run = p.berth(&["apply"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let (id1, img1) = (p.id("web").unwrap(), p.inspect("web", "{{.Image}}"));
        images_made.push(img1.clone());
        // Only what .dockerignore lets through was sent.
        let cp = |path: &str| docker(&["cp", &format!("{}:{path}", p.container("web")), "-"]);
        assert!(cp("/ctx/app.txt").status.success());
        assert!(
            !cp("/ctx/notes/todo.md").status.success(),
            "notes/ is ignored"
        );
        assert!(!cp("/ctx/build.log").status.success(), "*.log is ignored");
        let label = text(&docker(&[
            "image",
            "inspect",
            "-f",
            "{{index .Config.Labels \"berth.context-hash\"}}",
            &image,
        ]));
        assert_eq!(label.trim().len(), 64, "the image carries its context hash");

        // Editing ignored files is no change.
        std::fs::write(ctx.join("notes/todo.md"), "second").unwrap();
        std::fs::write(ctx.join("build.log"), "second").unwrap();
        let plan = p.berth(&["plan"]);
        assert_eq!(plan.stdout, "No changes.\n");

        // Editing a file that is sent rebuilds, and the new image runs in a new container.
        std::fs::write(ctx.join("app.txt"), "version 2").unwrap();
        let plan = p.berth(&["plan"]);
        assert!(
            plan.stdout
                .contains("web  recreate  build context changed (rebuild)"),
            "{}",
            plan.stdout
        );
        assert_eq!(p.id("web").unwrap(), id1, "plan changes nothing");
        let run = p.berth(&["apply"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(
            run.stdout
                .contains(&format!("rebuilding (build context changed) {image}")),
            "{}",
            run.stdout
        );
        let (id2, img2) = (p.id("web").unwrap(), p.inspect("web", "{{.Image}}"));
        images_made.push(img2.clone());
        assert_ne!(id2, id1, "a new container");
        assert_ne!(img2, img1, "from a new image");
        assert!(text(&cp("/ctx/app.txt")).contains("version 2"));

        let run = p.berth(&["apply"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(run.stdout.trim_end(), "No changes.");
    }));
    docker(&["rm", "-f", &p.container("web")]);
    docker(&["rmi", &image]);
    for id in images_made {
        docker(&["rmi", &id]);
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
