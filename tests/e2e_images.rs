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

/// Issue 12: a gate on the image's HEALTHCHECK follows the engine's events (health_status,
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
/// from its `die` event.
#[test]
fn a_healthcheck_gated_container_that_exits_inside_its_window_fails_the_gate() {
    let p = Project::new("imghcdie");
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
environment = { FIXTURE_READY_AFTER = "0.2", FIXTURE_HEALTHY_FOR = "3" }
"#,
    );
    let began = std::time::Instant::now();
    let run = p.berth(&["apply"]);
    // A first apply has nothing to revert to: degraded, exit 4.
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("service \"web\" failed its gate: the container exited (code 1)"),
        "{}",
        run.stderr
    );
    // Seen when it happened, not at the end of the 20 s window.
    assert!(
        began.elapsed() < std::time::Duration::from_secs(15),
        "{:?}",
        began.elapsed()
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
