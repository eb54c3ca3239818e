//! End-to-end: berth's own image (`Dockerfile`, `scripts/build-image.sh`) as the second
//! way to run it (docs/install.md):
//!
//! - `docker run … -v /var/run/docker.sock -v DIR:/etc/berth -v STATE:/var/lib/berth
//!   berth:latest run` converges a fixture stack, and its HEALTHCHECK (`berth healthz` on
//!   /healthz) reports the container healthy;
//! - it protects itself: a desired state whose service would be the container berth runs
//!   in, by name or by the project's labels, is refused at the service's line and nothing
//!   is made; a container of the project's labels that no service names is left alone,
//!   by `apply` and by `down`, where any other such container is removed.

mod common;

use std::time::Duration;

use common::{ONE_WEB, Project, docker, require_images, text, wait_for};

const IMAGE: &str = "berth:latest";

/// The image's berth is this checkout's (test-setup rebuilds it on every run).
fn require_current_image() {
    require_images(&[IMAGE], "scripts/build-image.sh");
    let head = text(
        &std::process::Command::new("git")
            .args(["rev-parse", "--short=7", "HEAD"])
            .output()
            .unwrap(),
    );
    let out = docker(&["run", "--rm", IMAGE, "--version"]);
    let version = text(&out);
    assert!(
        version.contains(head.trim()),
        "premise: {IMAGE} holds this commit's berth ({}); it says {version:?}: run scripts/build-image.sh",
        head.trim()
    );
}

/// The networks a container is on.
fn networks_of(container: &str) -> Vec<String> {
    text(&docker(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
        container,
    ]))
    .split_whitespace()
    .map(str::to_string)
    .collect()
}

/// `berth status` says the project is converged (its first line).
fn says_converged(status: &str) -> bool {
    let first = status.lines().next().unwrap_or_default();
    first.starts_with("converged") || first.contains(": converged")
}

/// A container this test made without the project's labels: removed when dropped.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- docker logs {}\n{}", self.0, {
                let out = docker(&["logs", &self.0]);
                format!("{}{}", text(&out), String::from_utf8_lossy(&out.stderr))
            });
        }
        docker(&["rm", "-f", "-v", &self.0]);
    }
}

/// `docker run` of berth's image with the socket, the project's directory as /etc/berth
/// and its state store in /var/lib/berth: the arguments before the image (a name, labels,
/// `-d`, `--network host`), then berth's.
fn berth_in_container(p: &Project, before: &[&str], args: &[&str]) -> std::process::Output {
    let dir = p.dir.path().display().to_string();
    let mut all = vec![
        "run",
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "-v",
    ];
    let etc = format!("{dir}:/etc/berth");
    all.push(&etc);
    let state = format!("{dir}/state:/var/lib/berth");
    all.extend(["-v", &state]);
    all.extend_from_slice(before);
    all.push(IMAGE);
    all.extend_from_slice(args);
    let out = docker(&all);
    eprintln!(
        "$ docker {}\n{}{}",
        all.join(" "),
        text(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_image_runs_the_daemon_converges_a_stack_and_reports_healthy() {
    require_current_image();
    let p = Project::new("image");
    std::fs::write(
        p.dir.path().join("berth.toml"),
        ONE_WEB.replace("{project}", &p.name),
    )
    .unwrap();
    let name = format!("{}-berth", p.name);
    let _berth = Container(name.clone());
    // The command as the issue and docs/install.md give it, without `--network host`:
    // berth joins the project's network to probe the services. The image's own
    // HEALTHCHECK command; only its interval is shortened for the test.
    let out = berth_in_container(
        &p,
        &["-d", "--name", &name, "--health-interval", "1s"],
        &["run"],
    );
    assert!(out.status.success());
    wait_for("the stack to converge", Duration::from_secs(90), || {
        let out = docker(&["exec", &name, "/berth", "status"]);
        says_converged(&text(&out))
    });
    assert_eq!(p.inspect("web", "{{.State.Status}}"), "running");
    let status = text(&docker(&["exec", &name, "/berth", "status"]));
    assert!(status.contains("web"), "{status}");
    wait_for(
        "the HEALTHCHECK to say healthy",
        Duration::from_secs(60),
        || {
            text(&docker(&[
                "inspect",
                "-f",
                "{{.State.Health.Status}}",
                &name,
            ]))
            .trim()
                == "healthy"
        },
    );
    let check = text(&docker(&[
        "inspect",
        "-f",
        "{{json .Config.Healthcheck.Test}}",
        &name,
    ]));
    assert!(
        check.contains("healthz"),
        "the image's HEALTHCHECK: {check}"
    );
    let network = format!("{}_default", p.name);
    let joined = networks_of(&name);
    assert!(
        joined.contains(&network),
        "berth's container joined {network}: {joined:?}"
    );
    // `berth down` in the container: the stack and its network go (berth's container
    // leaves it first), berth's container stays and keeps serving.
    let down = docker(&["exec", &name, "/berth", "down"]);
    assert!(
        down.status.success(),
        "{}{}",
        text(&down),
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(p.containers().is_empty(), "{:?}", p.containers());
    let left = text(&docker(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("name=^{network}$"),
    ]));
    assert!(
        left.trim().is_empty(),
        "the project's network was removed: {left}"
    );
    assert_eq!(
        text(&docker(&["inspect", "-f", "{{.State.Status}}", &name])).trim(),
        "running"
    );
    assert!(
        docker(&["exec", &name, "/berth", "healthz"])
            .status
            .success()
    );
    let up = docker(&["exec", &name, "/berth", "apply"]);
    assert!(
        up.status.success(),
        "{}{}",
        text(&up),
        String::from_utf8_lossy(&up.stderr)
    );
    // The daemon in the container stops on `docker stop` and stops no container.
    let web = p.id("web").unwrap();
    assert!(docker(&["stop", &name]).status.success());
    assert_eq!(
        text(&docker(&["inspect", "-f", "{{.State.ExitCode}}", &name])).trim(),
        "0"
    );
    assert_eq!(p.id("web").as_deref(), Some(web.as_str()));
    assert_eq!(p.inspect("web", "{{.State.Status}}"), "running");

    // A new berth container (as an upgrade of the image makes): the stack is converged,
    // so no converge makes a network, yet the new berth must reach the services to judge
    // them. It joins the project's networks and says converged, not degraded.
    assert!(docker(&["rm", &name]).status.success());
    let out = berth_in_container(&p, &["-d", "--name", &name], &["run"]);
    assert!(out.status.success());
    wait_for(
        "the new berth to say converged",
        Duration::from_secs(60),
        || says_converged(&text(&docker(&["exec", &name, "/berth", "status"]))),
    );
    let joined = networks_of(&name);
    assert!(
        joined.contains(&network),
        "the new berth container joined {network}: {joined:?}"
    );
    assert_eq!(
        p.id("web").as_deref(),
        Some(web.as_str()),
        "nothing was recreated"
    );
}

#[test]
fn berth_never_touches_the_container_it_runs_in() {
    require_current_image();
    let p = Project::new("image-self");
    let file = p.dir.path().join("berth.toml");
    let project = p.name.clone();
    std::fs::write(&file, ONE_WEB.replace("{project}", &project)).unwrap();

    // By name: berth runs in a container named as the service's container would be.
    let by_name = p.container("web");
    let c = Container(by_name.clone());
    let out = berth_in_container(&p, &["--network", "host", "--name", &by_name], &["apply"]);
    assert_eq!(out.status.code(), Some(2), "refused, exit 2");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("/etc/berth/berth.toml:7:")
            && said.contains("service \"web\" is the container berth runs in")
            && said.contains(&format!("its container name \"{by_name}\"")),
        "the refusal names the service at its line and why: {said}"
    );
    assert!(said.contains("nothing was changed"), "{said}");
    assert!(p.containers().is_empty(), "nothing was made");
    drop(c);

    // By label: berth runs in a container labelled as the project's service `web`.
    let labelled = format!("{project}-self");
    let c = Container(labelled.clone());
    let labels = [
        "--network",
        "host",
        "--name",
        &labelled,
        "--label",
        &format!("berth.project={project}"),
        "--label",
        "berth.service=web",
    ];
    let out = berth_in_container(&p, &labels, &["apply"]);
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("service \"web\" is the container berth runs in")
            && said.contains(&format!("berth.project={project} and berth.service=web")),
        "{said}"
    );
    assert_eq!(
        p.containers(),
        vec![labelled.clone()],
        "nothing was made, and berth's container is still there"
    );
    drop(c);

    // Labelled as a service the desired state does not have: any other such container is
    // an orphan the converge removes; berth's own is left alone, by apply and by down.
    let orphan = format!("{project}-orphan");
    let _orphan = Container(orphan.clone());
    let made = docker(&[
        "create",
        "--name",
        &orphan,
        "--label",
        &format!("berth.project={project}"),
        "--label",
        "berth.service=gone",
        common::FIXTURE,
    ]);
    assert!(made.status.success(), "{}", text(&made));
    let own = format!("{project}-own");
    let _own = Container(own.clone());
    let labels = [
        "--network",
        "host",
        "--name",
        &own,
        "--label",
        &format!("berth.project={project}"),
        "--label",
        "berth.service=old",
    ];
    let out = berth_in_container(&p, &labels, &["apply"]);
    assert_eq!(out.status.code(), Some(0), "the stack converges");
    let said = text(&out);
    assert!(
        said.contains(&format!("gone: removed {orphan}")),
        "the other orphan is removed: {said}"
    );
    assert!(
        !said.contains(&own),
        "berth's own container is no step: {said}"
    );
    let mut left = p.containers();
    left.sort();
    let mut want = vec![own.clone(), p.container("web")];
    want.sort();
    assert_eq!(left, want, "the orphan went, berth's container stayed");
    assert_eq!(
        text(&docker(&["inspect", "-f", "{{.State.ExitCode}}", &own])).trim(),
        "0",
        "the apply ran to its end in the container it did not remove"
    );
    // `berth down` from a container of the project's labels: the stack goes, it stays.
    docker(&["rm", &own]);
    let out = berth_in_container(&p, &labels, &["down"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(p.containers(), vec![own.clone()]);
}
