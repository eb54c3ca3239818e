//! End-to-end: `engine = "swarm"` on two nodes of this one machine (docs/swarm.md, "Two
//! nodes"). The host engine is the manager; a second Docker engine runs in a network
//! namespace of the test's own and joins as a worker (hostname `berth-worker`), both
//! made and removed by `scripts/swarm-two-node.sh up|down`. A placement constraint puts
//! the api on the worker; `berth status` names the node of each task; an update whose
//! tasks never become healthy there is reverted there.
//!
//! Swarm is engine-wide: when the host engine is already in a swarm (tests/e2e_swarm.rs
//! may hold it right now), this test says so and returns without touching it. It leaves
//! only the swarm it created.
//!
//! The image: a registry of the test's own on 127.0.0.1, and a second registry process on
//! the worker's own 127.0.0.1 (inside its netns) serving the same storage directory, so
//! the one image reference (`127.0.0.1:PORT/…@sha256:…`) pulls on both nodes, over plain
//! http as Docker allows for loopback registries only.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{FIXTURE, KillOnDrop, Project, docker, text};

const WORKER: &str = "berth-worker";

const STACK: &str = r#"
[project]
name = "{project}"
engine = "swarm"

[rollout]
healthy_deadline = "{deadline}"
min_healthy_time = "500ms"

[services.db]
image = "{image}"
placement = { constraints = ["node.role == manager"] }
environment = { ROLE = "db" }
health = { probe = "http", port = 8080, path = "/health", interval = "200ms" }

[services.api]
image = "{image}"
depends_on = ["db"]
replicas = 2
placement = { constraints = ["node.hostname == berth-worker"] }
environment = { ROLE = "api"{api_extra} }
health = { probe = "http", port = 8080, path = "/health", interval = "200ms" }
"#;

fn stack(image: &str, deadline: &str, api_extra: &str) -> String {
    STACK
        .replace("{image}", image)
        .replace("{deadline}", deadline)
        .replace("{api_extra}", api_extra)
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/swarm-two-node.sh")
}

/// The two nodes, up for the life of the guard: the project's services go first, then
/// `swarm-two-node.sh down` (the worker engine, the netns, the swarm it created).
struct TwoNodes {
    dir: tempfile::TempDir,
    projects: Vec<String>,
    /// The worker's registry process; killed before its netns goes.
    worker_registry: Option<KillOnDrop>,
}

impl TwoNodes {
    /// None when the host engine is already in a swarm: it is not this test's.
    fn up() -> Option<TwoNodes> {
        let state = text(&docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]));
        if state.trim() != "inactive" {
            eprintln!(
                "SKIPPED: the host engine is already in a swarm ({}), which this test did not create (tests/e2e_swarm.rs may be running); run it alone",
                state.trim()
            );
            return None;
        }
        let nodes = TwoNodes {
            dir: tempfile::tempdir().unwrap(),
            projects: Vec::new(),
            worker_registry: None,
        };
        let out = Command::new(script())
            .arg("up")
            .arg(nodes.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        eprintln!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "swarm-two-node.sh up failed");
        Some(nodes)
    }

    /// The netns the worker engine runs in.
    fn netns(&self) -> String {
        let env = std::fs::read_to_string(self.dir.path().join("env")).unwrap();
        env.lines()
            .find_map(|l| l.strip_prefix("ns="))
            .expect("ns= in the script's env file")
            .to_string()
    }

    /// `docker` against the worker engine.
    fn worker_docker(&self, args: &[&str]) -> std::process::Output {
        let host = format!("unix://{}", self.dir.path().join("docker.sock").display());
        Command::new("docker")
            .arg("-H")
            .arg(host)
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for TwoNodes {
    fn drop(&mut self) {
        for p in &self.projects {
            let label = format!("label=berth.project={p}");
            for id in text(&docker(&["service", "ls", "-q", "--filter", &label])).split_whitespace()
            {
                docker(&["service", "rm", id]);
            }
            common::wait_for(
                "the services' tasks to end on both nodes",
                Duration::from_secs(60),
                || {
                    let name = format!("label=com.docker.swarm.service.name={p}-api");
                    let host = format!("label=com.docker.swarm.service.name={p}-db");
                    text(&self.worker_docker(&["ps", "-aq", "--filter", &name]))
                        .trim()
                        .is_empty()
                        && text(&docker(&["ps", "-aq", "--filter", &host]))
                            .trim()
                            .is_empty()
                },
            );
            for id in text(&docker(&["network", "ls", "-q", "--filter", &label])).split_whitespace()
            {
                docker(&["network", "rm", id]);
            }
        }
        drop(self.worker_registry.take());
        let out = Command::new(script())
            .arg("down")
            .arg(self.dir.path())
            .output()
            .unwrap();
        eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    }
}

/// A registry on 127.0.0.1:`port` of the host, serving `storage`.
fn registry_config(dir: &Path, port: u16) -> PathBuf {
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    config
}

fn spawn_registry(netns: Option<&str>, config: &Path) -> Child {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/var/run/netns/{ns}"))
                .arg(common::REGISTRY_BIN);
            c
        }
        None => Command::new(common::REGISTRY_BIN),
    };
    cmd.arg("serve")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry starts")
}

/// The one project's report in `berth status --json` (a list of projects).
fn project_status(stdout: &str) -> serde_json::Value {
    let all: serde_json::Value = serde_json::from_str(stdout).unwrap();
    all[0].clone()
}

/// Each task of `service` in `berth status --json`, as (node, state, health).
fn tasks_of(status: &serde_json::Value, service: &str) -> Vec<(String, String, String)> {
    let s = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == service)
        .unwrap_or_else(|| panic!("{service} in {status}"));
    s["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("tasks of {service} in {status}"))
        .iter()
        .map(|t| {
            (
                t["node"].as_str().unwrap_or_default().to_string(),
                t["state"].as_str().unwrap_or_default().to_string(),
                t["health"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_service_constrained_to_the_worker_runs_there_is_shown_there_and_is_reverted_there() {
    assert!(
        Path::new(common::REGISTRY_BIN).exists(),
        "{} is missing: run scripts/test-setup.sh",
        common::REGISTRY_BIN
    );
    let Some(mut nodes) = TwoNodes::up() else {
        return;
    };
    let p = Project::new("swarm2");
    nodes.projects.push(p.name.clone());

    let reg_dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let config = registry_config(reg_dir.path(), port);
    let _host_registry = KillOnDrop::new(spawn_registry(None, &config));
    nodes.worker_registry = Some(KillOnDrop::new(spawn_registry(
        Some(&nodes.netns()),
        &config,
    )));
    let image = format!("127.0.0.1:{port}/{}:1", p.name);
    common::wait_for("the registry to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(docker(&["tag", FIXTURE, &image]).status.success());
    let push = docker(&["push", &image]);
    assert!(
        push.status.success(),
        "docker push {image}: {}",
        String::from_utf8_lossy(&push.stderr)
    );
    let _untag = Untag(image.clone());

    // The api on the worker, the db on the manager; status names each task's node.
    p.write(&stack(&image, "30s", ""));
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("on 2 tasks"), "{}", run.stdout);
    let manager = text(&docker(&["info", "--format", "{{.Name}}"]))
        .trim()
        .to_string();
    let status = p.berth(&["status", "--json"]);
    assert_eq!(status.code, 0, "{}{}", status.stdout, status.stderr);
    let json = project_status(&status.stdout);
    let healthy_on = |node: &str| (node.to_string(), "running".into(), "healthy".into());
    assert_eq!(
        tasks_of(&json, "api"),
        vec![healthy_on(WORKER), healthy_on(WORKER)]
    );
    assert_eq!(tasks_of(&json, "db"), vec![healthy_on(&manager)]);
    // The worker engine runs the api's containers itself.
    let on_worker = text(&nodes.worker_docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.swarm.service.name={}", p.container("api")),
    ]));
    assert_eq!(on_worker.split_whitespace().count(), 2, "{on_worker}");
    let table = p.berth(&["status"]);
    let api_row = table
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("api "))
        .unwrap_or_else(|| panic!("an api row in {}", table.stdout));
    assert!(
        api_row.contains(&format!("1@{WORKER} 2@{WORKER}")),
        "{api_row}"
    );

    // An api update that never becomes healthy on the worker: the whole stack goes back
    // to generation 1, exit 3, and its tasks run on the worker again, healthy.
    p.write(&stack(&image, "6s", r#", FIXTURE_NEVER_HEALTHY = "1""#));
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("api: FAILED its gate"),
        "{}",
        run.stdout
    );
    let env = text(&docker(&[
        "service",
        "inspect",
        "--format",
        "{{json .Spec.TaskTemplate.ContainerSpec.Env}} {{index .Spec.Labels \"berth.generation\"}}",
        &p.container("api"),
    ]));
    assert!(!env.contains("FIXTURE_NEVER_HEALTHY"), "{env}");
    assert!(
        env.trim_end().ends_with(" 1"),
        "back on generation 1: {env}"
    );
    let status = p.berth(&["status", "--json"]);
    let json = project_status(&status.stdout);
    assert_eq!(json["status"], "rolled-back", "{json}");
    assert_eq!(
        tasks_of(&json, "api"),
        vec![healthy_on(WORKER), healthy_on(WORKER)]
    );
}

/// Removes the test's local tag of the pushed image.
struct Untag(String);

impl Drop for Untag {
    fn drop(&mut self) {
        docker(&["rmi", &self.0]);
    }
}
