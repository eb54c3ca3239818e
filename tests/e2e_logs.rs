//! End-to-end: `berth logs` against the real engine with the fixture image, which writes
//! one logfmt line per event (`start`, `wrote_file`, `listening`, `ready`).

mod common;

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{KillOnDrop, Project, wait_for};

const TWO_SERVICES: &str = r#"
[project]
name = "{project}"
[rollout]
healthy_deadline = "10s"
min_healthy_time = "300ms"
[services.web]
image = "berth-fixture:test"
environment = { FIXTURE_WRITE_FILE = "/tmp/hello", FIXTURE_WRITE_CONTENT = "hi" }
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }
[services.worker]
image = "berth-fixture:test"
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }
"#;

#[test]
fn logs_prints_each_services_lines_behind_a_plain_name_prefix_and_tail_keeps_the_last_lines() {
    let p = Project::new("logs");
    p.write(TWO_SERVICES);
    assert_eq!(p.berth(&["apply"]).code, 0);
    // The fixture writes its `ready` line just after it answers /health: wait for it.
    wait_for("web's ready line", Duration::from_secs(10), || {
        p.fixture_event_ms("web", "ready").is_some()
            && p.fixture_event_ms("worker", "ready").is_some()
    });

    let all = p.berth(&["logs"]);
    assert_eq!(all.code, 0, "{}", all.stderr);
    // Not a terminal: no colour, names padded to the longest ("worker").
    assert!(!all.stdout.contains('\x1b'), "{:?}", all.stdout);
    for (prefix, event) in [
        ("web    | ", "event=start"),
        ("web    | ", "event=wrote_file path=/tmp/hello"),
        ("web    | ", "event=ready"),
        ("worker | ", "event=listening"),
        ("worker | ", "event=ready"),
    ] {
        assert!(
            all.stdout
                .lines()
                .any(|l| l.starts_with(prefix) && l.contains(event)),
            "no {prefix:?} line with {event}:\n{}",
            all.stdout
        );
    }
    assert!(
        all.stdout
            .lines()
            .all(|l| l.starts_with("web    | ") || l.starts_with("worker | ")),
        "{}",
        all.stdout
    );

    // web wrote four lines: start, wrote_file, listening, ready.
    let tail = p.berth(&["logs", "web", "--tail", "3"]);
    assert_eq!(tail.code, 0, "{}", tail.stderr);
    let lines: Vec<&str> = tail.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", tail.stdout);
    assert!(lines.iter().all(|l| l.starts_with("web | ")), "{lines:?}");
    // `ready` and `listening` come from two threads of the fixture, in either order.
    assert!(lines[0].contains("event=wrote_file"), "{lines:?}");
    for event in ["event=ready", "event=listening"] {
        assert!(lines[1..].iter().any(|l| l.contains(event)), "{lines:?}");
    }

    let timestamps = p.berth(&["logs", "web", "--tail", "1", "--timestamps"]);
    let line = timestamps.stdout.trim_end();
    let time = line
        .strip_prefix("web | ")
        .unwrap_or_else(|| panic!("{line:?}"));
    let time = time.split(' ').next().unwrap();
    assert!(time.parse::<jiff::Timestamp>().is_ok(), "{line:?}");

    let unknown = p.berth(&["logs", "nosuch"]);
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("no service \"nosuch\"") && unknown.stderr.contains("web, worker"),
        "{}",
        unknown.stderr
    );
}

/// The secret is the path the fixture writes to, which its `wrote_file` line shows: a
/// value from the service's env file.
const SECRET: &str = "logsecret-5f1c9e";

const FOLLOWED: &str = r#"
[project]
name = "{project}"
[rollout]
healthy_deadline = "10s"
min_healthy_time = "300ms"
[services.web]
image = "berth-fixture:test"
env_file = "web.env"
environment = { FIXTURE_READY_AFTER = "{ready}" }
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }
"#;

#[test]
fn logs_follow_keeps_reading_a_service_recreated_while_it_runs_and_shows_no_secret() {
    let p = Project::new("logsf");
    let env = p.dir.path().join("web.env");
    std::fs::write(&env, format!("FIXTURE_WRITE_FILE=/tmp/{SECRET}\n")).unwrap();
    std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.write(&FOLLOWED.replace("{ready}", "0"));
    assert_eq!(p.berth(&["apply"]).code, 0);
    let first = p.id("web").unwrap();

    let mut child = KillOnDrop::new(p.spawn(&["logs", "-f"]));
    let out = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let out = out.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                out.lock().unwrap().push(line.unwrap());
            }
        })
    };
    let count = |what: &str| {
        out.lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(what))
            .count()
    };
    let seen = |what: &str| count(what) > 0;
    wait_for(
        "the first container's ready line",
        Duration::from_secs(10),
        || seen("event=ready"),
    );

    // A changed environment recreates web: a new container, which starts after `logs -f`.
    p.write(&FOLLOWED.replace("{ready}", "0.2"));
    let apply = p.berth(&["apply"]);
    assert_eq!(apply.code, 0, "{}", apply.stderr);
    let second = p.id("web").unwrap();
    assert_ne!(first, second, "premise: web was recreated");
    wait_for("the new container's lines", Duration::from_secs(15), || {
        seen("ready_after=0.2") && count("event=ready") == 2
    });

    // Ctrl-C ends it cleanly.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.take().wait_with_output().unwrap();
    reader.join().unwrap();
    let stderr = String::from_utf8_lossy(&status.stderr).into_owned();
    assert_eq!(status.status.code(), Some(0), "{stderr}");

    let lines = out.lock().unwrap().clone();
    let text = lines.join("\n");
    eprintln!("berth logs -f:\n{text}\n{stderr}");
    assert!(lines.iter().all(|l| l.starts_with("web | ")), "{text}");
    // Both containers' lines, in one output: two starts, two file writes.
    assert_eq!(
        lines.iter().filter(|l| l.contains("event=start")).count(),
        2
    );
    let writes: Vec<&String> = lines.iter().filter(|l| l.contains("wrote_file")).collect();
    assert_eq!(writes.len(), 2, "{text}");
    for w in writes {
        assert!(w.contains("path=<redacted>"), "{w}");
    }
    assert!(
        !text.contains(SECRET) && !stderr.contains(SECRET),
        "{text}\n{stderr}"
    );
}
