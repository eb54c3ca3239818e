//! End-to-end: a container's words cannot drive berth's notify socket (docs/design.md §12).
//!
//! A fixture container's exec probe prints `x\nWATCHDOG=trigger\nMAINPID=1` and fails.
//! The gate's reason quotes that output, and the reason is what `berth run` puts in its
//! systemd `STATUS=` line. With `NOTIFY_SOCKET` pointing at a datagram socket this test
//! binds, every datagram berth sends is read: none holds a second assignment, and the
//! STATUS line holds the output escaped on one line. `berth status` and `berth history`
//! show the same escaped text. (Under a real systemd, that berth is not restarted by
//! it is checked in tests/e2e_systemd.rs.)

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::Project;
use common::daemon::Daemon;

const PAYLOAD: &str = "x\nWATCHDOG=trigger\nMAINPID=1";

#[test]
fn an_exec_probes_output_reaches_status_as_one_escaped_line() {
    let p = Project::new("notifytext");
    p.write(&format!(
        r#"
[project]
name = "{{project}}"
[rollout]
healthy_deadline = "3s"
min_healthy_time = "0s"
[services.web]
image = "berth-fixture:test"
health = {{ probe = "exec", command = ["/berth-fixture", "say", {payload:?}, "1"], interval = "200ms" }}
"#,
        payload = PAYLOAD
    ));
    let sock_path = p.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // Ready once it listens: its gate fails, so it never converges.
    let daemon = Daemon::build(&p)
        .file()
        .env(&[("NOTIFY_SOCKET", sock_path.to_str().unwrap())])
        .ready("/healthz", Duration::from_secs(30))
        .start();

    // Read datagrams until a STATUS line quotes the probe's output (the gate failed).
    let escaped = "x\\nWATCHDOG=trigger\\nMAINPID=1";
    let mut datagrams: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let d = String::from_utf8_lossy(&buf[..n]).into_owned();
            eprintln!("datagram: {d:?}");
            let done = d.contains(escaped);
            datagrams.push(d);
            if done {
                break;
            }
        }
    }
    assert!(
        datagrams.iter().any(|d| d.contains(escaped)),
        "premise: the failed gate's reason, with the probe's output, reaches STATUS=; got {datagrams:#?}\n{}",
        daemon.log()
    );
    for d in &datagrams {
        let lines: Vec<&str> = d.lines().collect();
        assert!(
            lines.iter().filter(|l| l.starts_with("STATUS=")).count() <= 1,
            "two STATUS lines in one datagram: {d:?}"
        );
        for l in &lines {
            assert!(
                !l.starts_with("WATCHDOG=trigger") && !l.starts_with("MAINPID="),
                "a container's output became a notify assignment: {d:?}"
            );
        }
        // Every line is an assignment berth makes itself.
        for l in &lines {
            let key = l.split('=').next().unwrap_or_default();
            assert!(
                ["READY", "STATUS", "WATCHDOG", "STOPPING"].contains(&key),
                "unexpected notify line {l:?} in {d:?}"
            );
            if key == "WATCHDOG" {
                assert_eq!(*l, "WATCHDOG=1", "{d:?}");
            }
        }
    }

    // The terminal and the store show the same one escaped line.
    let status = p.berth(&["status"]);
    assert!(status.stdout.contains(escaped), "{}", status.stdout);
    assert!(
        !status.stdout.lines().any(|l| l.starts_with("WATCHDOG=")),
        "{}",
        status.stdout
    );
    let reasons: Vec<String> = p
        .history()
        .iter()
        .filter_map(|g| g["reason"].as_str().map(str::to_string))
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains(escaped)) && reasons.iter().all(|r| !r.contains('\n')),
        "{reasons:#?}"
    );
}
