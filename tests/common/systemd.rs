//! systemd as PID 1 in a Debian container (`berth-systemd:test`, images/systemd), with the
//! host engine's socket mounted in at /run/docker.sock and the host's network: the place
//! tests/e2e_systemd.rs runs the shipped unit and tests/e2e_package.rs installs the
//! Debian package. berth there probes a service's container at its address on the
//! project's bridge network, which the host reaches and a container on another bridge
//! does not; the containers it makes are the host engine's, labelled with the test's
//! project and removed with it.

#![allow(dead_code)]

use std::process::Output;
use std::time::Duration;

use super::{docker, text};

pub const IMAGE: &str = "berth-systemd:test";

/// The unit files' `Requires=docker.service`: the engine is the host's, reached through
/// the mounted socket, so the machine's docker.service is a stand-in that is simply
/// active (docker.io's own units are masked in the image).
pub const DOCKER_STAND_IN: &str = "[Unit]\nDescription=the host's engine (socket mounted in)\n\
     [Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n";

/// The systemd container; dropping it removes it (first, so no berth is left running to
/// put the project's containers back after the project is cleaned up).
pub struct Machine {
    pub name: String,
    /// Where [`Machine::exec`] runs its scripts.
    pub workdir: String,
}

impl Machine {
    /// systemd as PID 1, booted to multi-user.target, with the engine's socket and these
    /// extra `docker run` arguments (mounts).
    pub fn boot(name: &str, workdir: &str, extra: &[&str]) -> Machine {
        super::require_images(&[IMAGE], "scripts/build-images.sh systemd");
        assert!(
            std::path::Path::new("/var/run/docker.sock").exists(),
            "the engine's socket /var/run/docker.sock is missing"
        );
        let m = Machine {
            name: name.to_string(),
            workdir: workdir.to_string(),
        };
        let mut args = vec![
            "run",
            "-d",
            "--name",
            name,
            "--label",
            "berth.test=e2e_systemd",
            "--network",
            "host",
            "--cap-add",
            "SYS_ADMIN",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:ro",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
            "-v",
            "/var/run/docker.sock:/run/docker.sock",
        ];
        args.extend_from_slice(extra);
        args.push(IMAGE);
        let out = docker(&args);
        assert!(
            out.status.success(),
            "docker run {IMAGE}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_for("systemd to boot", Duration::from_secs(60), || {
            let state = m.sh("systemctl is-system-running 2>/dev/null; true");
            let state = state.trim();
            if state == "degraded" {
                eprintln!("{}", m.sh("systemctl --failed --no-pager"));
            }
            state == "running" || state == "degraded"
        });
        m
    }

    /// `docker exec` of a shell script in the workdir: its output, whatever its exit code.
    pub fn sh(&self, script: &str) -> String {
        let out = self.exec(script);
        format!("{}{}", text(&out), String::from_utf8_lossy(&out.stderr))
    }

    pub fn exec(&self, script: &str) -> Output {
        docker(&["exec", "-w", &self.workdir, &self.name, "sh", "-c", script])
    }

    /// Run a command that must succeed; its stdout.
    pub fn ok(&self, script: &str) -> String {
        let out = self.exec(script);
        assert!(
            out.status.success(),
            "`{script}` in the systemd container failed: {}{}",
            text(&out),
            String::from_utf8_lossy(&out.stderr)
        );
        text(&out)
    }

    pub fn write(&self, path: &str, content: &str) {
        let out = std::process::Command::new("docker")
            .args(["exec", "-i", &self.name, "sh", "-c"])
            .arg(format!("mkdir -p \"$(dirname {path})\" && cat > {path}"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(content.as_bytes())?;
                c.wait()
            })
            .unwrap();
        assert!(out.success(), "writing {path} in the systemd container");
    }

    /// `systemctl show -p PROP --value berth`
    pub fn show(&self, prop: &str) -> String {
        self.sh(&format!("systemctl show -p {prop} --value berth"))
            .trim()
            .to_string()
    }

    /// What `berth status` says, run in the container against the unit's state store.
    pub fn berth_status(&self) -> String {
        self.sh("berth --state /var/lib/berth/state.db status")
    }

    pub fn journal(&self) -> String {
        // --all: a line with control characters (colours) would otherwise show as a blob.
        self.ok("journalctl -u berth --all --no-pager -o cat")
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- systemctl status berth\n{}\n--- journalctl -u berth\n{}",
                self.sh("systemctl status berth --no-pager -l"),
                self.sh("journalctl -u berth --all --no-pager")
            );
        }
        docker(&["rm", "-f", "-v", &self.name]);
    }
}

/// Wait until `cond` holds, asking every 250 ms: most conditions here are a `docker exec`
/// into the systemd container.
pub fn wait_for(what: &str, limit: Duration, cond: impl FnMut() -> bool) {
    super::wait_every(what, limit, Duration::from_millis(250), cond);
}
