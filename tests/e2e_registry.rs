//! End-to-end against a real registry: Debian's `docker-registry` on 127.0.0.1, started
//! and killed by each test (see `common::Registry`). Pulls per `pull_policy`, a tag moved
//! in the registry, registry credentials from a Docker config file, and a registry that
//! is down.

mod common;

use common::{FIXTURE, Project, Registry, image_id};

fn service(image: &str, extra: &str) -> String {
    format!(
        r#"
[project]
name = "{{project}}"
[rollout]
healthy_deadline = "5s"
min_healthy_time = "0s"
[services.web]
image = "{image}"
health = {{ probe = "http", port = 8080, path = "/health" }}
{extra}
"#
    )
}

#[test]
fn a_first_pull_fetches_an_image_that_is_absent_locally() {
    let reg = Registry::start();
    let p = Project::new("regfirst");
    let reference = reg.reference(&format!("{}:1", p.name));
    reg.push(FIXTURE, &reference, false);
    assert_eq!(image_id(&reference), None, "premise: absent locally");
    p.write(&service(&reference, ""));

    let plan = p.berth(&["plan"]);
    assert!(plan.stdout.contains("(to be pulled)"), "{}", plan.stdout);
    assert_eq!(image_id(&reference), None, "plan never pulls");

    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains(&format!("web: pulling {reference} from {}", reg.host())),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!("web: pulled {reference}")),
        "{}",
        run.stdout
    );
    let pulled = image_id(&reference).expect("the image is present after apply");
    assert_eq!(pulled, image_id(FIXTURE).unwrap());
    assert_eq!(p.inspect("web", "{{.Image}}"), pulled);
    assert_eq!(p.berth(&["apply"]).stdout.trim_end(), "No changes.");
}

#[test]
fn always_pulls_a_moved_tag_and_recreates_and_a_new_image_that_fails_reverts_to_the_pinned_one() {
    let reg = Registry::start();
    let p = Project::new("regalways");
    let reference = reg.reference(&format!("{}:live", p.name));
    reg.push(FIXTURE, &reference, false);
    p.write(&service(&reference, "pull_policy = \"always\""));
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (id1, img1) = (p.id("web").unwrap(), p.inspect("web", "{{.Image}}"));

    // Nothing moved: always pulls, finds the same image, and changes nothing.
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("pulled"), "{}", run.stdout);
    assert!(run.stdout.contains("No changes."), "{}", run.stdout);

    // The tag moves in the registry to a healthy image: the next apply pulls and recreates.
    let healthy = reg.build_variant("ENV BERTH_E2E_VARIANT=2");
    reg.push(&healthy, &reference, false);
    // Locally the tag still points at the first image, as on a host that has not pulled.
    common::docker(&["tag", &img1, &reference]);
    assert_eq!(
        image_id(&reference).as_deref(),
        Some(img1.as_str()),
        "premise"
    );
    let plan = p.berth(&["plan"]);
    assert_eq!(plan.stdout, "No changes.\n", "plan never pulls");
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("now points to"), "{}", run.stdout);
    let (id2, img2) = (p.id("web").unwrap(), p.inspect("web", "{{.Image}}"));
    assert_ne!(id2, id1);
    assert_eq!(img2, healthy);

    // The tag moves to an image that never becomes healthy: pulled, gated, reverted to the
    // pinned previous image although the tag now points elsewhere.
    let broken = reg.build_variant("ENV FIXTURE_NEVER_HEALTHY=1");
    reg.push(&broken, &reference, false);
    common::docker(&["tag", &healthy, &reference]);
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert_eq!(image_id(&reference).as_deref(), Some(broken.as_str()));
    assert_eq!(
        p.inspect("web", "{{.Image}}"),
        healthy,
        "the pinned image runs"
    );
    assert_eq!(p.inspect("web", "{{.State.Running}}"), "true");
}

#[test]
fn credentials_come_from_the_docker_config_and_without_them_the_pull_fails_naming_the_registry() {
    let password = "s3cret-berth-e2e";
    let reg = Registry::start_with_auth("berth", password);
    let p = Project::new("regauth");
    let reference = reg.reference(&format!("{}:1", p.name));
    reg.push(FIXTURE, &reference, false);
    assert_eq!(image_id(&reference), None, "premise: absent locally");
    p.write(&service(&reference, ""));

    // An empty Docker config: berth pulls anonymously and the registry refuses.
    let empty = tempfile::tempdir().unwrap();
    let run = p.berth_env(
        &["apply"],
        &[("DOCKER_CONFIG", empty.path().to_str().unwrap())],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains(&reference), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("pulling from registry {} failed", reg.host())),
        "{}",
        run.stderr
    );
    assert!(p.containers().is_empty());

    let config = reg.docker_config.clone().unwrap();
    let run = p.berth_env(&["apply"], &[("DOCKER_CONFIG", config.to_str().unwrap())]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        p.inspect("web", "{{.Image}}"),
        image_id(&reference).unwrap()
    );
    assert!(!run.stdout.contains(password) && !run.stderr.contains(password));
}

#[test]
fn a_registry_that_is_down_fails_the_apply_and_leaves_running_containers_alone() {
    let mut reg = Registry::start();
    let p = Project::new("regdown");
    let reference = reg.reference(&format!("{}:1", p.name));
    reg.push(FIXTURE, &reference, false);
    p.write(&service(&reference, "pull_policy = \"always\""));
    assert_eq!(p.berth(&["apply"]).code, 0);
    let id = p.id("web").unwrap();

    reg.kill();
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("image {reference}")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("pulling from registry {} failed", reg.host())),
        "{}",
        run.stderr
    );
    assert_eq!(
        p.id("web").unwrap(),
        id,
        "the running container was not touched"
    );
    assert_eq!(p.inspect("web", "{{.State.Running}}"), "true");
}

#[test]
fn every_pulls_only_when_the_last_pull_is_older_than_its_period() {
    let reg = Registry::start();
    let p = Project::new("regevery");
    let reference = reg.reference(&format!("{}:1", p.name));
    reg.push(FIXTURE, &reference, false);
    p.write(&service(&reference, "pull_policy = \"every_1h\""));
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("pulled"), "{}", run.stdout);
    // Pulled a moment ago: within the hour nothing is pulled.
    let run = p.berth(&["apply"]);
    assert!(!run.stdout.contains("pulling"), "{}", run.stdout);

    // With a period already over, the same image is pulled again, and the pull refreshes
    // the image's LastTagTime even though nothing changed.
    let before = common::text(&common::docker(&[
        "image",
        "inspect",
        "-f",
        "{{.Metadata.LastTagTime}}",
        &reference,
    ]));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    p.write(&service(&reference, "pull_policy = \"every_1s\""));
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("pulled"), "{}", run.stdout);
    let after = common::text(&common::docker(&[
        "image",
        "inspect",
        "-f",
        "{{.Metadata.LastTagTime}}",
        &reference,
    ]));
    assert_ne!(before, after);
}

#[test]
fn never_fails_clearly_when_the_image_is_absent() {
    let p = Project::new("regnever");
    let reference = "127.0.0.1:9/berth-e2e-never-pulled:1";
    assert_eq!(image_id(reference), None, "premise: absent locally");
    p.write(&service(reference, "pull_policy = \"never\""));
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(reference) && run.stderr.contains("pull_policy \"never\""),
        "{}",
        run.stderr
    );
    assert!(p.containers().is_empty());
}
