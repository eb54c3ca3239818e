//! End-to-end: a failed gate puts the whole stack back to the last good generation
//! (docs/design.md §§6 and 7), against the real Docker engine.

mod common;

use common::{Project, docker};

const STACK: &str = r#"
[project]
name = "{project}"

[rollout]
healthy_deadline = "4s"
min_healthy_time = "300ms"

[services.db]
image = "{image}"
environment = { ROLE = "db" }
volumes = ["{project}-data:/data"]
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }

[services.app]
image = "{image}"
depends_on = ["db"]
environment = { ROLE = "app" }
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }
"#;

fn stack(image: &str) -> String {
    STACK.replace("{image}", image)
}

#[test]
fn a_generation_that_never_gets_healthy_is_reverted_to_the_last_good_one() {
    let p = Project::new("revert");
    p.write(&stack(common::FIXTURE));
    assert_eq!(p.berth(&["apply"]).code, 0);
    let good_image = p.inspect("app", "{{.Image}}");
    p.write(&stack(common::FIXTURE).replace(
        "ROLE = \"app\"",
        "ROLE = \"app\", FIXTURE_NEVER_HEALTHY = \"1\"",
    ));
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("service \"app\" failed its gate"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("rolled back"), "{}", run.stderr);
    // app runs generation 1's spec, with generation 1's image ID, and is healthy again.
    let env = p.inspect("app", "{{json .Config.Env}}");
    assert!(!env.contains("FIXTURE_NEVER_HEALTHY"), "{env}");
    assert_eq!(
        p.inspect("app", "{{index .Config.Labels \"berth.generation\"}}"),
        "1"
    );
    assert_eq!(p.inspect("app", "{{.Image}}"), good_image);
    assert_eq!(p.inspect("app", "{{.State.Running}}"), "true");
    let h = p.history();
    assert_eq!(h[1]["outcome"], "rolled-back");
    assert_eq!(h[1]["reverted_to"], 1);
    assert!(
        h[1]["reason"]
            .as_str()
            .unwrap()
            .contains("http :8080/health"),
        "{}",
        h[1]
    );
    let status: serde_json::Value =
        serde_json::from_str(&p.berth(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status[0]["status"], "rolled-back");
}

#[test]
fn a_container_that_crashes_within_min_healthy_time_fails_its_gate_and_is_reverted() {
    let p = Project::new("crash");
    p.write(
        &stack(common::FIXTURE)
            .replace("min_healthy_time = \"300ms\"", "min_healthy_time = \"2s\""),
    );
    assert_eq!(p.berth(&["apply"]).code, 0);
    p.write(
        &stack(common::FIXTURE)
            .replace("min_healthy_time = \"300ms\"", "min_healthy_time = \"2s\"")
            .replace(
                "ROLE = \"app\"",
                "ROLE = \"app\", FIXTURE_HEALTHY_FOR = \"0.5\"",
            ),
    );
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("restarted") || run.stderr.contains("exited"),
        "{}",
        run.stderr
    );
    assert!(
        !p.inspect("app", "{{json .Config.Env}}")
            .contains("FIXTURE_HEALTHY_FOR")
    );
}

#[test]
fn the_revert_runs_the_pinned_image_id_even_after_the_tag_moved() {
    let p = Project::new("retag");
    let tag = format!("berth-e2e-retag-{}:v1", std::process::id());
    assert!(docker(&["tag", common::FIXTURE, &tag]).status.success());
    p.write(&stack(&tag));
    let first = p.berth(&["apply"]);
    let pinned = p.inspect("app", "{{.Image}}");
    // The tag now points at another image; generation 2 then fails.
    docker(&["tag", "berth-fixture:healthcheck", &tag]);
    p.write(&stack(&tag).replace(
        "ROLE = \"app\"",
        "ROLE = \"app\", FIXTURE_NEVER_HEALTHY = \"1\"",
    ));
    let run = p.berth(&["apply"]);
    let after = p.inspect("app", "{{.Image}}");
    let db_after = p.inspect("db", "{{.Image}}");
    drop(p);
    docker(&["rmi", &tag]);
    assert_eq!(first.code, 0);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert_eq!(after, pinned, "app must run generation 1's exact image ID");
    assert_eq!(db_after, pinned, "db too");
}

#[test]
fn dependents_of_a_failing_dependency_are_never_recreated() {
    let p = Project::new("depfail");
    p.write(&stack(common::FIXTURE));
    assert_eq!(p.berth(&["apply"]).code, 0);
    let app_id = p.id("app").unwrap();
    let app_started = p.inspect("app", "{{.State.StartedAt}}");
    p.write(
        &stack(common::FIXTURE)
            .replace(
                "ROLE = \"db\"",
                "ROLE = \"db\", FIXTURE_NEVER_HEALTHY = \"1\"",
            )
            .replace("ROLE = \"app\"", "ROLE = \"app-v2\""),
    );
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("service \"db\""), "{}", run.stderr);
    assert_eq!(p.id("app").unwrap(), app_id, "app was never recreated");
    assert_eq!(
        p.inspect("app", "{{.State.StartedAt}}"),
        app_started,
        "nor restarted"
    );
}

#[test]
fn a_poisoned_desired_state_is_refused_until_it_changes_or_is_forced() {
    let p = Project::new("poison");
    p.write(&stack(common::FIXTURE));
    assert_eq!(p.berth(&["apply"]).code, 0);
    let bad = stack(common::FIXTURE).replace(
        "ROLE = \"app\"",
        "ROLE = \"app\", FIXTURE_NEVER_HEALTHY = \"1\"",
    );
    p.write(&bad);
    assert_eq!(p.berth(&["apply"]).code, 3);
    let ids = (p.id("db").unwrap(), p.id("app").unwrap());
    let again = p.berth(&["apply"]);
    assert_eq!(again.code, 5, "{}", again.stderr);
    assert!(again.stderr.contains("generation 2"), "{}", again.stderr);
    assert_eq!(
        (p.id("db").unwrap(), p.id("app").unwrap()),
        ids,
        "nothing changed"
    );
    assert_eq!(p.history().len(), 2, "no generation recorded");
    // --force applies it (and it fails and reverts again).
    assert_eq!(p.berth(&["apply", "--force"]).code, 3);
    // An edited desired state is applied.
    p.write(&stack(common::FIXTURE).replace("ROLE = \"app\"", "ROLE = \"app-fixed\""));
    assert_eq!(p.berth(&["apply"]).code, 0);
    assert!(
        p.inspect("app", "{{json .Config.Env}}")
            .contains("ROLE=app-fixed")
    );
}

#[test]
fn data_written_by_the_good_generation_survives_a_revert() {
    let p = Project::new("voldata");
    let with = |line: &str, extra: &str| {
        stack(common::FIXTURE).replace(
            "ROLE = \"db\"",
            &format!("ROLE = \"db\", FIXTURE_WRITE_FILE = \"/data/log.txt\", FIXTURE_APPEND_LINE = \"{line}\"{extra}"),
        )
    };
    p.write(&with("gen1", ""));
    assert_eq!(p.berth(&["apply"]).code, 0);
    p.write(&with("gen2", ", FIXTURE_NEVER_HEALTHY = \"1\""));
    assert_eq!(p.berth(&["apply"]).code, 3);
    let vol = format!("{}-data", p.name);
    let content = common::read_volume_file(&vol, "log.txt").expect("log.txt is in the volume");
    assert!(
        content.contains("gen1\ngen2\ngen1\n"),
        "volume content: {content:?}"
    );
}

#[test]
fn rollback_by_hand_to_an_older_generation_is_gated_and_recorded() {
    let p = Project::new("rollback");
    p.write(&stack(common::FIXTURE));
    assert_eq!(p.berth(&["apply"]).code, 0);
    p.write(&stack(common::FIXTURE).replace("ROLE = \"app\"", "ROLE = \"app-v2\""));
    assert_eq!(p.berth(&["apply"]).code, 0);
    let run = p.berth(&["rollback", "1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        p.inspect("app", "{{json .Config.Env}}")
            .contains("ROLE=app\"")
    );
    let h = p.history();
    assert_eq!(h[2]["outcome"], "healthy");
    assert_eq!(h[2]["source"], "rollback to generation 1");
    assert_eq!(
        p.inspect("app", "{{index .Config.Labels \"berth.generation\"}}"),
        "3"
    );
}

#[test]
fn a_first_apply_that_fails_has_nothing_to_return_to_and_is_degraded() {
    let p = Project::new("firstfail");
    p.write(&stack(common::FIXTURE).replace(
        "ROLE = \"db\"",
        "ROLE = \"db\", FIXTURE_NEVER_HEALTHY = \"1\"",
    ));
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr.contains("no last good generation"),
        "{}",
        run.stderr
    );
    assert!(
        p.id("db").is_some(),
        "the failed container is left for inspection"
    );
    let status: serde_json::Value =
        serde_json::from_str(&p.berth(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status[0]["status"], "degraded");
}
