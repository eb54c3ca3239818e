//! End-to-end: `contrib/systemd/berth.service` under a real systemd. systemd runs as PID 1
//! in a Debian container (`berth-systemd:test`, images/systemd) with the engine's socket
//! and the berth binary mounted in, and the unit installed as shipped: `systemctl start`
//! returns once berth said READY=1, `StatusText` says what `berth status` says, a turn
//! that hangs on an engine call that never answers stops the loop's beats once it is older
//! than its limit, so the watchdog kills berth and systemd restarts it, and the restarted
//! berth finishes the job, `journalctl -u berth` holds the logs, and `systemctl stop`
//! leaves every container running. The unit's hardening costs no feature: berth runs
//! with its `LimitNOFILE`, sees root's Docker config and nothing else of root's home,
//! publishes a port below 1024 with no capability, and a data directory outside
//! `ReadWritePaths=` is refused naming the setting.
//!
//! The container shares the host's network: berth probes a service's container at its
//! address on the project's bridge network, which the host reaches and a container on
//! another bridge does not. The containers berth makes are the host engine's, labelled
//! with the test's project, and removed with it.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::engine::EngineProxy;
use common::systemd::{DOCKER_STAND_IN, Machine, wait_for};
use common::{ONE_WEB, Project, free_port};

const DOCKER_CONFIG: &str = "{\"auths\":{\"registry.example:5000\":{\"auth\":\"dTpw\"}}}\n";
const UNIT: &str = include_str!("../contrib/systemd/berth.service");

/// systemd as PID 1 with the berth binary and the project's directory (as /srv/berth,
/// the unit's WorkingDirectory) mounted in.
fn boot(p: &Project) -> Machine {
    Machine::boot(
        &format!("{}-systemd", p.name),
        "/srv/berth",
        &[
            "-v",
            &format!("{}:/usr/local/bin/berth:ro", env!("CARGO_BIN_EXE_berth")),
            "-v",
            &format!("{}:/srv/berth", p.dir.path().display()),
        ],
    )
}

/// The proxy's socket as the systemd container sees it: the project's directory is
/// /srv/berth.
impl EngineProxy {
    fn docker_host_in_machine(&self) -> String {
        format!(
            "unix:///srv/berth/{}",
            self.path.file_name().unwrap().to_str().unwrap()
        )
    }
}

/// The desired state the unit reads: `berth.toml` in `-f /srv/berth/desired-state`.
fn desired_file(p: &Project) -> PathBuf {
    p.dir.path().join("desired-state").join("berth.toml")
}

fn assert_all_running(p: &Project, when: &str) {
    let states = p.states();
    assert!(!states.is_empty(), "{when}: the project has no container");
    assert!(
        states.iter().all(|s| s.ends_with(" running")),
        "{when}: every container must still run: {states:?}"
    );
}

/// A log line that starts with a timestamp such as `2026-12-04T21:07:06.123Z`.
fn stamped(line: &str) -> bool {
    let b = line.trim_start().as_bytes();
    b.len() > 11 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[10] == b'T'
}

/// StatusText and the first line of `berth status` agree (re-read until they do: a turn
/// may land between the two reads), and say `want`.
fn status_says(m: &Machine, want: &str) {
    let mut last = (String::new(), String::new());
    let agreed = (0..120).any(|_| {
        let status_text = m.show("StatusText");
        let status = m.berth_status();
        let first = status.lines().next().unwrap_or("").to_string();
        let ok = status_text == want
            && (first == status_text || first.starts_with(&format!("{status_text} ")));
        last = (status_text, status);
        if !ok {
            std::thread::sleep(Duration::from_millis(250));
        }
        ok
    });
    assert!(
        agreed,
        "StatusText {:?} and `berth status` {:?} must both say {want:?}",
        last.0, last.1
    );
}

#[test]
fn the_unit_under_a_real_systemd_notifies_is_watched_logs_to_the_journal_and_stops_nothing() {
    let p = Project::new("systemd");
    // The unit's paths: `-f /srv/berth/desired-state`, a directory of *.toml files.
    std::fs::create_dir(p.dir.path().join("desired-state")).unwrap();
    p.edit_file(&desired_file(&p), ONE_WEB);
    // Made before the machine, so it is dropped after it (no berth left to see it go).
    let proxy = EngineProxy::start(p.dir.path().join("engine.sock"));
    let m = boot(&p);

    // The unit as shipped. Its paths hold in the container (/usr/local/bin/berth,
    // /var/lib/berth, /srv/berth); only the endpoint moves to a free port, because the
    // container shares the host's network, where 9464 may be taken.
    let port = free_port();
    let gateway_port = free_port();
    let shipped_listen = "--listen 127.0.0.1:9464 --listen host-gateway:9464";
    assert!(
        UNIT.contains(shipped_listen),
        "the unit's ExecStart changed"
    );
    m.write(
        "/etc/systemd/system/berth.service",
        &UNIT.replace(
            shipped_listen,
            &format!("--listen 127.0.0.1:{port} --listen host-gateway:{gateway_port}"),
        ),
    );
    // `Requires=docker.service`: the engine is the host's, reached through the mounted
    // socket, so a stand-in that is simply active.
    m.write("/etc/systemd/system/docker.service", DOCKER_STAND_IN);
    m.ok("systemctl daemon-reload");
    // Root's registry credentials, as `docker login` leaves them, and something else in
    // root's home the unit must keep hidden.
    m.write("/root/.docker/config.json", DOCKER_CONFIG);
    m.write("/root/not-for-berth", "private\n");

    // `systemctl start` returns once berth said READY=1, which it says after its first
    // turn: by then the service is active, the stack is up and STATUS= was sent.
    m.ok("systemctl start berth");
    assert_eq!(m.show("ActiveState"), "active");
    assert_eq!(m.show("SubState"), "running");
    assert_eq!(m.show("Type"), "notify");
    assert_eq!(
        p.inspect("web", "{{.State.Status}}"),
        "running",
        "READY=1 came before the first converge"
    );
    let status_text = m.show("StatusText");
    assert!(
        status_text.starts_with(&format!("project {}: ", p.name)),
        "STATUS= was sent before READY=1: {status_text:?}"
    );
    // `systemctl show -p StatusText` says what `berth status` says.
    let converged = format!("project {}: converged", p.name);
    status_says(&m, &converged);

    // The journal holds the logs: plain lines, no colours, no timestamps of berth's own.
    let journal = m.journal();
    assert!(journal.contains("web: healthy"), "{journal}");
    assert!(journal.contains("serving /healthz"), "{journal}");
    assert!(
        !journal.contains('\x1b'),
        "colours in the journal:\n{journal}"
    );
    assert!(
        !journal.lines().any(stamped),
        "timestamps of berth's own in the journal:\n{journal}"
    );

    unit_limits_and_views(&m, &p, &converged);

    // `systemctl stop`: berth exits 0 and no container is stopped.
    let id = p.id("web").unwrap();
    m.ok("systemctl stop berth");
    assert_eq!(m.show("ActiveState"), "inactive");
    assert_eq!(m.show("Result"), "success");
    assert_all_running(&p, "after systemctl stop berth");
    assert_eq!(p.id("web").as_deref(), Some(id.as_str()));
    assert!(
        m.journal().contains("stopped; no container was stopped"),
        "{}",
        m.journal()
    );

    // The watchdog's rule: a turn older than its limit stops the loop's beats, so no
    // WATCHDOG=1 is sent and systemd kills and restarts berth. A short WatchdogSec, a 5 s
    // turn limit (BERTH_TURN_LIMIT), and berth's engine reached through the proxy. The
    // proxy swallows the next container list, and the edit's turn makes one: that turn
    // waits for an answer that never comes. (The engine call itself would give up after
    // 60 s and the turn would end without a kill; the limit and the watchdog act first.)
    m.write(
        "/etc/systemd/system/berth.service.d/watchdog.conf",
        &format!(
            "[Service]\nWatchdogSec=5s\nEnvironment=BERTH_TURN_LIMIT=5s\n\
             Environment=DOCKER_HOST={}\n\
             # The watchdog kills with SIGABRT: no core file of the test's binary.\nLimitCORE=0\n",
            proxy.docker_host_in_machine()
        ),
    );
    m.ok("systemctl daemon-reload");
    m.ok("systemctl start berth");
    let hung_pid = m.show("MainPID");
    proxy.hang_next_list();
    p.edit_file(
        &desired_file(&p),
        &ONE_WEB.replace("VERSION = \"1\"", "VERSION = \"2\""),
    );
    wait_for(
        "a turn to make the container list the proxy swallows",
        Duration::from_secs(30),
        || proxy.swallowed(),
    );
    wait_for(
        "the watchdog to kill the hung berth and systemd to restart it",
        Duration::from_secs(50),
        || {
            m.show("NRestarts").parse::<u32>().unwrap_or(0) >= 1
                && m.show("ActiveState") == "active"
                && m.show("MainPID") != hung_pid
        },
    );
    let journal = m.journal();
    assert!(
        journal.contains("a turn has run longer than its limit"),
        "{journal}"
    );
    assert!(
        journal.contains("has not beaten for a whole watchdog period"),
        "{journal}"
    );
    assert!(journal.contains("Watchdog timeout"), "{journal}");

    // The restarted berth does the job: the edit the hung turn was making converges as
    // generation 3 (the second was the low port's).
    wait_for(
        "the restarted berth to converge the edit",
        Duration::from_secs(60),
        || {
            p.inspect("web", "{{json .Config.Env}}")
                .contains("VERSION=2")
                && m.berth_status().contains("generation 3")
        },
    );
    status_says(&m, &converged);
    assert!(
        m.berth_status().contains("generation 3"),
        "{}",
        m.berth_status()
    );

    // And it stops like the first: every container keeps running.
    let id = p.id("web").unwrap();
    m.ok("systemctl stop berth");
    assert_eq!(m.show("ActiveState"), "inactive");
    assert_all_running(&p, "after the second systemctl stop berth");
    assert_eq!(p.id("web").as_deref(), Some(id.as_str()));
    let journal = m.journal();
    assert!(
        !journal.contains('\x1b'),
        "colours in the journal:\n{journal}"
    );

    // A container's words cannot drive the notify socket (docs/design.md §12): an exec
    // probe prints `x\nWATCHDOG=trigger\nMAINPID=1` and fails; with auto_revert off the
    // reason, which quotes it, is what STATUS= says. systemd sees one line, and
    // neither a watchdog trigger nor a new main PID: berth is not restarted.
    m.ok("systemctl start berth");
    let pid = m.show("MainPID");
    let restarts = m.show("NRestarts");
    p.edit_file(&desired_file(&p),
        &format!(
            "{}\n[services.talker]\nimage = \"berth-fixture:test\"\n\
             health = {{ probe = \"exec\", command = [\"/berth-fixture\", \"say\", {:?}, \"1\"], interval = \"200ms\", healthy_deadline = \"3s\", min_healthy_time = \"0s\" }}\n",
            ONE_WEB.replace("[rollout]", "[rollout]\nauto_revert = false"),
            "x\nWATCHDOG=trigger\nMAINPID=1"
        ),
    );
    // The whole output is inside the one STATUS= value: the words after each newline
    // are part of it, not assignments of their own. (systemd drops the backslash of an
    // escape when it shows StatusText, `xnWATCHDOG=trigger…`; the datagram itself is
    // checked in tests/e2e_notify_text.rs.)
    wait_for(
        "the failed gate's reason, with the probe's output, in StatusText",
        Duration::from_secs(60),
        || {
            let t = m.show("StatusText");
            t.contains("WATCHDOG=trigger") && t.contains("MAINPID=1")
        },
    );
    let status_text = m.show("StatusText");
    assert!(
        status_text.starts_with(&format!("project {}: degraded", p.name)),
        "{status_text}"
    );
    // A few watchdog periods (5 s here) pass: a WATCHDOG=trigger would have killed it.
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(
        m.show("MainPID"),
        pid,
        "berth was restarted:\n{}",
        m.journal()
    );
    assert_eq!(m.show("NRestarts"), restarts, "{}", m.journal());
    assert_eq!(m.show("ActiveState"), "active");
    m.ok("systemctl stop berth");
}

/// What the unit gives the running berth: `LimitNOFILE`, the Docker config
/// (`DOCKER_CONFIG`, the one directory of root's home it sees), a published port below
/// 1024 with no capability to bind it, and a data directory outside `ReadWritePaths=`
/// refused by the pre-flight naming the setting, while the running generation stays.
fn unit_limits_and_views(m: &Machine, p: &Project, converged: &str) {
    let pid = m.show("MainPID");
    let limits = m.ok(&format!("cat /proc/{pid}/limits"));
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default();
    assert_eq!(nofile.split_whitespace().nth(3), Some("4096"), "{nofile}");
    let env = m.ok(&format!("tr '\\0' '\\n' < /proc/{pid}/environ"));
    assert!(
        env.lines().any(|l| l == "DOCKER_CONFIG=/root/.docker"),
        "{env}"
    );
    // berth's own view of the files, through its mount namespace.
    assert_eq!(
        m.ok(&format!("cat /proc/{pid}/root/root/.docker/config.json")),
        DOCKER_CONFIG
    );
    assert!(
        !m.exec(&format!("test -e /proc/{pid}/root/root/not-for-berth"))
            .status
            .success(),
        "the rest of root's home is hidden"
    );

    // A port below 1024, published on loopback: berth has no CAP_NET_BIND_SERVICE, and
    // its pre-flight binds nothing.
    let low = (900..1000)
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port below 1024 on 127.0.0.1");
    let published = ONE_WEB.replace(
        "environment = { VERSION = \"1\" }",
        &format!("environment = {{ VERSION = \"1\" }}\nports = [\"127.0.0.1:{low}:8080\"]"),
    );
    // First with a data directory under ProtectSystem=strict's read-only /opt.
    p.edit_file(
        &desired_file(p),
        &format!("{published}[preflight]\ndata_dirs = {{ \"/opt/berth-e2e-data\" = \"750\" }}\n"),
    );
    wait_for(
        "the pre-flight to refuse /opt",
        Duration::from_secs(30),
        || m.show("StatusText").contains("/opt/berth-e2e-data"),
    );
    let said = m.show("StatusText");
    assert!(
        said.contains("read-only under the unit's ProtectSystem=strict")
            && said.contains("ReadWritePaths="),
        "{said}"
    );
    assert!(!said.contains("host port"), "the low port passes: {said}");
    assert_eq!(
        m.ok("test -e /opt/berth-e2e-data && echo made || echo absent")
            .trim(),
        "absent"
    );
    assert_all_running(p, "while the pre-flight refuses");
    // Without it, the low port is published.
    p.edit_file(&desired_file(p), &published);
    wait_for(
        "the low port to be published",
        Duration::from_secs(30),
        || {
            p.inspect("web", "{{json .HostConfig.PortBindings}}")
                .contains(&format!("\"HostPort\":\"{low}\""))
                && m.show("StatusText") == converged
        },
    );
    assert!(
        m.berth_status().contains("generation 2"),
        "{}",
        m.berth_status()
    );
}
