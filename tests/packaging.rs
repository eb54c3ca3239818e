//! What ships beside the binary: the systemd unit as written, and berth's own image
//! (`Dockerfile`, built by `scripts/build-image.sh`, which `scripts/test-setup.sh` runs).

mod common;

use std::process::Command;

use common::{docker, require_images, text};

/// `systemd-analyze verify` accepts both units berth ships, contrib/systemd/berth.service
/// (for `install` by hand) and contrib/debian/berth.service (the package's), with
/// `ExecStart` pointed at the binary built here (the shipped paths are not installed on
/// a test machine).
#[test]
fn the_shipped_systemd_units_verify() {
    for (file, binary) in [
        ("contrib/systemd/berth.service", "/usr/local/bin/berth"),
        ("contrib/debian/berth.service", "/usr/bin/berth"),
    ] {
        let unit = std::fs::read_to_string(file).unwrap();
        assert!(
            unit.contains(&format!("ExecStart={binary} ")),
            "premise: {file} runs {binary}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.service");
        std::fs::write(
            &path,
            unit.replace(
                &format!("ExecStart={binary} "),
                &format!("ExecStart={} ", env!("CARGO_BIN_EXE_berth")),
            ),
        )
        .unwrap();
        // `Documentation=man:berth(1)`: verify asks man for it; the pages the package
        // ships are generated here.
        let man1 = dir.path().join("man/man1");
        let made = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["man", man1.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(made.status.success());
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .env("MANPATH", dir.path().join("man"))
            .output()
            .expect(
                "systemd-analyze is missing: run scripts/test-setup.sh (apt-get install systemd)",
            );
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{file}: {said}");
        // verify exits 0 on some warnings; the unit must draw none that name it.
        assert!(!said.contains("berth.service:"), "{file}: {said}");
    }
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

/// `berth --version`: the version, the git commit it was built from and the build date.
#[test]
fn the_version_names_the_commit_and_the_build_date() {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let line = text(&out);
    assert!(
        line.starts_with(&format!("berth {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
    let commit = line
        .split("(commit ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or_default();
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| text(&o).trim().to_string());
    match head {
        // The build ran in this checkout: its commit is HEAD's (the build script reruns
        // when HEAD moves).
        Some(head) => assert!(
            commit.len() >= 7 && head.starts_with(commit),
            "{line}: HEAD is {head}"
        ),
        None => assert_eq!(commit, "unknown", "{line}"),
    }
    let date = line
        .split(", built ")
        .nth(1)
        .map(|d| d.trim_end_matches([')', '\n']))
        .unwrap_or_default();
    assert!(
        date.len() == 10 && date.as_bytes()[4] == b'-' && date.as_bytes()[7] == b'-',
        "a YYYY-MM-DD build date: {line}"
    );
}

/// The completions come from the CLI definition: bash's registers a completion for
/// berth when sourced; zsh's and fish's name every command.
#[test]
fn completions_are_generated_for_bash_zsh_and_fish() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let script = text(&out);
        for command in ["apply", "rollback", "import", "status"] {
            assert!(script.contains(command), "{shell} completes {command}");
        }
        std::fs::write(dir.path().join(shell), script).unwrap();
    }
    let bash = dir.path().join("bash");
    let out = Command::new("bash")
        .args([
            "-c",
            &format!("source {}; complete -p berth", bash.display()),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text(&out).contains("berth"), "{}", text(&out));
}

/// `berth man DIR` writes a page per command, and man renders them.
#[test]
fn man_pages_are_written_for_every_command_and_render() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["man", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    for page in [
        "berth.1",
        "berth-apply.1",
        "berth-import.1",
        "berth-migrate-status.1",
    ] {
        assert!(dir.path().join(page).is_file(), "{page}: {}", text(&out));
    }
    let rendered = Command::new("man")
        .args(["-l", dir.path().join("berth-apply.1").to_str().unwrap()])
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
        .expect("man is missing: run scripts/test-setup.sh");
    let page = text(&rendered);
    assert!(rendered.status.success(), "{page}");
    assert!(page.contains("berth-apply"), "{page}");
    assert!(page.contains("--exclude"), "{page}");
    // The page is named berth-apply; its SYNOPSIS is the command as typed.
    let synopsis = page
        .lines()
        .skip_while(|l| l.trim() != "SYNOPSIS")
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(synopsis.starts_with("berth apply ["), "{synopsis:?}");
    assert!(
        dir.path().join("berth-healthz.1").is_file(),
        "the image's healthcheck command has its page"
    );
}
