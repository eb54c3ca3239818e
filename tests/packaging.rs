//! What ships beside the binary: the systemd unit as written, and berth's own image
//! (`Dockerfile`, built by `scripts/build-image.sh`, which `scripts/test-setup.sh` runs).

mod common;

use std::process::Command;

use common::{docker, require_images, text};

/// `systemd-analyze verify` accepts contrib/systemd/berth.service, with `ExecStart`
/// pointed at the binary built here (the shipped path, /usr/local/bin/berth, is not
/// installed on a test machine).
#[test]
fn the_shipped_systemd_unit_verifies() {
    let unit = std::fs::read_to_string("contrib/systemd/berth.service").unwrap();
    assert!(
        unit.contains("/usr/local/bin/berth"),
        "premise: the unit runs /usr/local/bin/berth"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/berth", env!("CARGO_BIN_EXE_berth")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze is missing: run scripts/test-setup.sh (apt-get install systemd)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    // verify exits 0 on some warnings; the unit must draw none that name it.
    assert!(!said.contains("berth.service:"), "{said}");
}

/// berth's image runs and talks to the engine through the mounted socket.
#[test]
fn berths_image_plans_against_the_engine_through_the_socket() {
    require_images(&["berth:latest"], "scripts/build-image.sh");
    let examples = std::fs::canonicalize("examples").unwrap();
    let out = docker(&[
        "run",
        "--rm",
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "-v",
        &format!("{}:/ds:ro", examples.display()),
        "berth:latest",
        "plan",
        "-f",
        "/ds/demo.toml",
    ]);
    let said = format!("{}{}", text(&out), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("create"),
        "a plan from nothing creates: {said}"
    );
}
