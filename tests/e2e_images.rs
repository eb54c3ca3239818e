//! End-to-end: images are made present before anything runs, and a service without a
//! probe of its own is gated on its image's Docker HEALTHCHECK.

mod common;

use common::{Project, docker};

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
