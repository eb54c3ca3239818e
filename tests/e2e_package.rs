//! End-to-end: the Debian package (`scripts/build-deb.sh`, which `scripts/test-setup.sh`
//! runs) installed with apt on a machine with a real systemd as PID 1 (`berth-systemd:test`,
//! where docker.io is installed so the package's `Depends` holds, and the engine is the
//! host's through the mounted socket):
//!
//! - the install enables and starts the unit, and so does `systemctl enable --now berth`
//!   after a `disable --now`; it reaches `active`, which a `Type=notify` unit does only
//!   after READY=1, on the example /etc/berth/berth.toml that converges nothing (status
//!   `converged`);
//! - a real desired state written to /etc/berth/berth.toml converges (berth watches it);
//! - `man berth-apply` renders, and bash completes berth from the installed file;
//! - `apt-get install` of a newer build restarts berth (a new main PID) and every
//!   container keeps running, with the same IDs and start times;
//! - `apt-get remove` stops berth and leaves the containers, /var/lib/berth and
//!   /etc/berth in place.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::systemd::{DOCKER_STAND_IN, Machine, wait_for};
use common::{ONE_WEB, Project};

/// The package scripts/build-deb.sh made for this version (revision 1).
fn package() -> PathBuf {
    let deb = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "target/debian/berth_{}-1_amd64.deb",
        env!("CARGO_PKG_VERSION")
    ));
    assert!(
        deb.is_file(),
        "premise: {} is built (scripts/build-deb.sh; scripts/test-setup.sh runs it)",
        deb.display()
    );
    deb
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The commit this checkout is at, as `berth --version` names it.
fn head() -> String {
    run(Command::new("git").args(["rev-parse", "--short=7", "HEAD"]))
        .trim()
        .to_string()
}

/// A newer build of `deb` in `dir`: the same files, the version's revision raised (what a
/// rebuilt package of the next release looks like to apt and to the maintainer scripts).
fn newer_build(deb: &Path, dir: &Path) -> (PathBuf, String) {
    let tree = dir.join("tree");
    run(Command::new("dpkg-deb").arg("-R").arg(deb).arg(&tree));
    let control = tree.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control).unwrap();
    let old = format!("Version: {}-1\n", env!("CARGO_PKG_VERSION"));
    assert!(
        text.contains(&old),
        "premise: the control file says {old:?}"
    );
    let version = format!("{}-2", env!("CARGO_PKG_VERSION"));
    std::fs::write(
        &control,
        text.replace(&old, &format!("Version: {version}\n")),
    )
    .unwrap();
    let out = dir.join(format!("berth_{version}_amd64.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "-b"])
        .arg(&tree)
        .arg(&out));
    (out, version)
}

/// `docker inspect` of a container by ID: its ID and start time, as the engine says.
fn started(id: &str) -> String {
    let out = common::docker(&["inspect", "-f", "{{.Id}} {{.State.StartedAt}}", id]);
    common::text(&out).trim().to_string()
}

#[test]
fn the_package_installs_converges_upgrades_without_a_restart_of_any_container_and_removes_cleanly()
{
    let deb = package();
    let p = Project::new("package");
    let debs = tempfile::tempdir().unwrap();
    std::fs::copy(&deb, debs.path().join("berth_1.deb")).unwrap();
    let (newer, newer_version) = newer_build(&deb, debs.path());
    // Premise: the package holds this checkout's berth.
    let unpacked = debs.path().join("unpacked");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked));
    let version = run(Command::new(unpacked.join("usr/bin/berth")).arg("--version"));
    assert!(
        version.contains(&head()),
        "premise: {} is built from this commit ({}); it says {version:?}: run scripts/build-deb.sh",
        deb.display(),
        head()
    );

    let m = Machine::boot(
        &format!("{}-pkg", p.name),
        "/",
        &["-v", &format!("{}:/debs:ro", debs.path().display())],
    );
    m.write("/etc/systemd/system/docker.service", DOCKER_STAND_IN);
    m.ok("systemctl daemon-reload");
    assert!(
        m.ok("dpkg -s docker.io | grep '^Status'")
            .contains("install ok installed"),
        "premise: docker.io is installed on the machine"
    );

    // Install: enabled and started by the maintainer scripts, on the example file.
    let installed =
        m.ok("DEBIAN_FRONTEND=noninteractive apt-get install -y /debs/berth_1.deb 2>&1");
    eprintln!("{installed}");
    assert_eq!(m.sh("systemctl is-enabled berth").trim(), "enabled");
    wait_for("berth to be active", Duration::from_secs(30), || {
        m.show("ActiveState") == "active"
    });
    assert_eq!(m.show("Type"), "notify", "active means READY=1 was sent");
    assert_eq!(m.show("SubState"), "running");
    // As a person would after `systemctl disable --now berth`: enable --now returns once
    // READY=1 came.
    m.ok("systemctl disable --now berth");
    assert_eq!(m.show("ActiveState"), "inactive");
    m.ok("systemctl enable --now berth");
    assert_eq!(m.show("ActiveState"), "active");
    let example = m.ok("cat /etc/berth/berth.toml");
    assert!(example.contains("[project]"), "{example}");
    wait_for(
        "the example to be converged",
        Duration::from_secs(30),
        || m.show("StatusText") == "project berth: converged",
    );
    assert!(
        m.ok("ls /var/lib/berth").contains("state.db"),
        "the state store is in /var/lib/berth"
    );
    assert!(
        m.sh("berth --version").contains(&head()),
        "the installed binary is this build"
    );

    // A real desired state: berth sees the file change and converges it.
    m.write(
        "/etc/berth/berth.toml",
        &ONE_WEB.replace("{project}", &p.name),
    );
    let converged = format!("project {}: converged", p.name);
    wait_for("the stack to converge", Duration::from_secs(60), || {
        m.show("StatusText") == converged
    });
    let id = p.id("web").expect("the web container");
    assert_eq!(p.inspect("web", "{{.State.Status}}"), "running");
    let status = m.berth_status();
    assert!(status.starts_with(&converged), "{status}");

    // The man pages and completions the package put in place.
    let page = m.ok("MANPAGER=cat MANWIDTH=80 man berth-apply 2>&1");
    assert!(
        page.contains("berth-apply") && page.contains("Converge once"),
        "man berth-apply: {page}"
    );
    assert!(m.ok("MANPAGER=cat man berth 2>&1").contains("berth-run(1)"));
    let complete =
        m.ok("bash -c 'source /usr/share/bash-completion/completions/berth; complete -p berth'");
    assert!(complete.contains("berth"), "{complete}");
    assert!(m.ok("ls /usr/share/doc/berth/docs").contains("install.md"));

    // Upgrade: berth restarts (a new main PID), no container does.
    let pid = m.show("MainPID");
    let before = started(&id);
    let upgraded = m.ok(&format!(
        "DEBIAN_FRONTEND=noninteractive apt-get install -y /debs/{} 2>&1",
        newer.file_name().unwrap().to_str().unwrap()
    ));
    eprintln!("{upgraded}");
    assert!(
        m.ok("dpkg-query -W -f '${Version}' berth") == newer_version,
        "the newer build is installed"
    );
    wait_for("berth to be active again", Duration::from_secs(30), || {
        m.show("ActiveState") == "active"
    });
    let new_pid = m.show("MainPID");
    assert_ne!(new_pid, pid, "the upgrade restarted berth");
    assert_ne!(new_pid, "0");
    wait_for(
        "the restarted berth to say converged",
        Duration::from_secs(30),
        || m.show("StatusText") == converged,
    );
    assert_eq!(
        started(&id),
        before,
        "the upgrade left the container running, same ID, same start"
    );

    // Remove: berth stops; the containers, the state store and the config stay.
    let removed = m.ok("DEBIAN_FRONTEND=noninteractive apt-get remove -y berth 2>&1");
    eprintln!("{removed}");
    assert_ne!(m.sh("systemctl is-active berth").trim(), "active");
    assert!(m.sh("test -e /usr/bin/berth && echo present").is_empty());
    assert_eq!(
        started(&id),
        before,
        "apt remove left the container running"
    );
    assert_eq!(p.inspect("web", "{{.State.Status}}"), "running");
    assert!(m.ok("ls /var/lib/berth").contains("state.db"));
    assert!(m.ok("cat /etc/berth/berth.toml").contains(&p.name));
    drop(m);
}
