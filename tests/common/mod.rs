//! Harness for end-to-end tests against the real Docker engine.
//!
//! Each test gets its own project name, temp dir and state store; dropping the
//! [`Project`] removes the containers, networks and volumes labelled with that project
//! (and only those), so tests never touch anything they did not make.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const FIXTURE: &str = "berth-fixture:test";

pub struct Project {
    pub name: String,
    pub dir: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Project {
    pub fn new(test: &str) -> Project {
        require_images(&[FIXTURE], "scripts/build-fixture.sh");
        Project::bare(test)
    }

    /// A project that needs no particular image.
    pub fn bare(test: &str) -> Project {
        let name = format!("e2e-{test}-{}", std::process::id());
        Project {
            name,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn file(&self) -> PathBuf {
        self.dir.path().join("berth.toml")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    /// Write the desired state; `{project}` in the text is replaced by the project name.
    pub fn write(&self, toml: &str) {
        std::fs::write(self.file(), toml.replace("{project}", &self.name)).unwrap();
    }

    pub fn berth(&self, args: &[&str]) -> Run {
        self.berth_env(args, &[])
    }

    /// Run berth with extra environment variables.
    pub fn berth_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.args(args)
            .env("BERTH_STATE", self.state())
            .env("BERTH_FILE", self.file());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        eprintln!(
            "$ berth {}\n{}{}(exit {})",
            args.join(" "),
            run.stdout,
            run.stderr,
            run.code
        );
        run
    }

    pub fn container(&self, service: &str) -> String {
        format!("{}-{service}", self.name)
    }

    /// Container ID of a service's container, or None.
    pub fn id(&self, service: &str) -> Option<String> {
        let out = docker(&["inspect", "-f", "{{.Id}}", &self.container(service)]);
        out.status.success().then(|| text(&out).trim().to_string())
    }

    pub fn inspect(&self, service: &str, format: &str) -> String {
        text(&docker(&[
            "inspect",
            "-f",
            format,
            &self.container(service),
        ]))
        .trim()
        .to_string()
    }

    /// The fixture's own log timestamp (unix ms) of an event such as `start` or `ready`.
    pub fn fixture_event_ms(&self, service: &str, event: &str) -> Option<i64> {
        let out = docker(&["logs", &self.container(service)]);
        let log = text(&out);
        log.lines()
            .rfind(|l| l.contains(&format!("event={event}")))
            .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("ts_ms=")))
            .and_then(|v| v.parse().ok())
    }

    pub fn containers(&self) -> Vec<String> {
        let out = docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=berth.project={}", self.name),
            "--format",
            "{{.Names}}",
        ]);
        let mut v: Vec<String> = text(&out).lines().map(str::to_string).collect();
        v.sort();
        v
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let label = format!("label=berth.project={}", self.name);
        let ids = text(&docker(&["ps", "-aq", "--filter", &label]));
        for id in ids.split_whitespace() {
            docker(&["rm", "-f", id]);
        }
        for kind in ["network", "volume"] {
            let ids = text(&docker(&[kind, "ls", "-q", "--filter", &label]));
            for id in ids.split_whitespace() {
                docker(&[kind, "rm", id]);
            }
        }
    }
}

/// A file's content in a named volume, copied out through a container that never starts
/// (the fixture image has no shell or cat). None when the file is not there.
pub fn read_volume_file(volume: &str, path: &str) -> Option<String> {
    let reader = text(&docker(&[
        "create",
        "-v",
        &format!("{volume}:/data"),
        FIXTURE,
    ]))
    .trim()
    .to_string();
    let tar = docker(&["cp", &format!("{reader}:/data/{path}"), "-"]);
    docker(&["rm", "-f", &reader]);
    // `docker cp ... -` writes a tar stream; the file's bytes sit in it verbatim.
    tar.status.success().then(|| text(&tar))
}

/// Fail with the command that builds them when any of these images is missing.
pub fn require_images(images: &[&str], how: &str) {
    for image in images {
        assert!(
            docker(&["image", "inspect", image]).status.success(),
            "the image {image} is missing: run {how} (or .ci/run)"
        );
    }
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI runs")
}

pub fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}
