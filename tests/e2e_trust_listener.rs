//! End-to-end: a listener is untrusted (docs/design.md §12), against the real engine, real
//! git and a real `berth run`.
//!
//! - 2000 idle connections and 200 slow-header ones, reopened as fast as berth closes
//!   them, against `--listen` while berth runs with 512 file descriptors (RLIMIT_NOFILE,
//!   as the unit's `LimitNOFILE=` sets it): `/healthz` answers every time, and a commit
//!   pushed during the flood is fetched and deployed (git needs descriptors too).
//! - From inside a container, `POST /api/v1/reconcile` on the host-gateway listener gets
//!   401 without the API token (and with a wrong one) and 202 with it; the read-only
//!   routes answer there without one.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::git::Remote;
use common::{ONE_WEB, Project, docker, free_port, require_images, text, wait_for};

/// [`ONE_WEB`] at `version`.
fn stack(version: &str) -> String {
    ONE_WEB.replace("VERSION = \"1\"", &format!("VERSION = \"{version}\""))
}

/// The file-descriptor limit berth runs under in the flood test.
const NOFILE: u64 = 512;

/// This file's commits: the stack at a version.
impl Remote {
    /// Commit the stack at `version` and push; the commit id.
    fn push(&self, version: &str) -> String {
        self.write_stack(&stack(version));
        self.commit_and_push(&format!("web v{version}"), false)
    }
}

/// This file's daemons: with the project's file (`BERTH_FILE`), given 60 s to be ready.
impl Daemon {
    /// `berth run` with `args`, listening on 127.0.0.1 at a free port, under
    /// RLIMIT_NOFILE `nofile` when given.
    fn start(p: &Project, args: &[&str], nofile: Option<u64>) -> Daemon {
        let mut start = Daemon::build(p)
            .file()
            .args(args)
            .ready("/readyz", Duration::from_secs(60));
        if let Some(n) = nofile {
            start = start.nofile(n);
        }
        start.start()
    }

    /// File descriptors berth has open now.
    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

/// Connections that hold berth's endpoint: `idle` that never send a byte and `slow` that
/// send a request head one byte at a time and never finish it. Each one berth closes is
/// opened again, until the flood is stopped.
struct Flood {
    stop: Arc<AtomicBool>,
    /// Connections opened, first ones and reopened ones.
    opened: Arc<AtomicUsize>,
    /// Connections berth closed.
    closed: Arc<AtomicUsize>,
    /// Connections open now.
    open: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Whether the server closed `s` (a non-blocking read finds EOF or an error).
fn server_closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a 408 before the close, say
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

impl Flood {
    fn start(port: u16, idle: usize, slow: usize) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let (opened, closed, open) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let thread = {
            let (stop, opened, closed, open) =
                (stop.clone(), opened.clone(), closed.clone(), open.clone());
            std::thread::spawn(move || {
                let connect = || {
                    let s = TcpStream::connect_timeout(
                        &([127, 0, 0, 1], port).into(),
                        Duration::from_secs(2),
                    )
                    .ok()?;
                    s.set_nonblocking(true).ok()?;
                    opened.fetch_add(1, Ordering::SeqCst);
                    Some(s)
                };
                // (socket, slow?) per slot; None until (re)connected.
                let mut slots: Vec<(Option<TcpStream>, bool)> = (0..idle)
                    .map(|_| (None, false))
                    .chain((0..slow).map(|_| (None, true)))
                    .collect();
                while !stop.load(Ordering::SeqCst) {
                    let mut now_open = 0;
                    // Reopened per round at most (2000 a second): a flood, without
                    // taking both of a shared machine's cores from berth and git.
                    let mut reopen = if opened.load(Ordering::SeqCst) < idle + slow {
                        usize::MAX
                    } else {
                        400
                    };
                    for (socket, is_slow) in slots.iter_mut() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        if let Some(s) = socket {
                            if server_closed(s) {
                                closed.fetch_add(1, Ordering::SeqCst);
                                *socket = None;
                            } else if *is_slow {
                                // One more byte of a header that never ends.
                                let _ = s.write(b"a");
                            }
                        }
                        if socket.is_none() && reopen > 0 {
                            reopen -= 1;
                            *socket = connect();
                            if let (Some(s), true) = (socket.as_mut(), *is_slow) {
                                let _ =
                                    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ");
                            }
                        }
                        now_open += usize::from(socket.is_some());
                    }
                    open.store(now_open, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        };
        Flood {
            stop,
            opened,
            closed,
            open,
            thread: Some(thread),
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_flood_of_idle_and_slow_header_connections_under_512_fds_leaves_healthz_and_git_working() {
    let p = Project::new("trust-flood");
    let remote = Remote::new(&p);
    let first = remote.push("1");
    let host = p.dir.path().join("host");
    std::fs::create_dir_all(&host).unwrap();
    let d = Daemon::start(
        &p,
        &[
            "--git",
            remote.bare.to_str().unwrap(),
            "--branch",
            "main",
            "--path",
            "desired-state",
            "--poll",
            "500ms",
            "--host-dir",
            host.to_str().unwrap(),
        ],
        Some(NOFILE),
    );
    wait_for(
        "the first commit to deploy",
        Duration::from_secs(60),
        || {
            let s = d.status();
            s["git"]["deployed"] == first.as_str() && s["status"] == "converged"
        },
    );
    // Premise: berth runs under the limit, and holds far fewer descriptors than it.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        line.split_whitespace().nth(3),
        Some("512"),
        "berth runs with {NOFILE} file descriptors: {line}"
    );
    let quiet_fds = d.open_fds();
    assert!(quiet_fds < 64, "{quiet_fds} descriptors before the flood");

    // The flood: four times the limit's worth of connections, held and reopened.
    let flood = Flood::start(d.port, 2000, 200);
    wait_for(
        "the flood to have opened 2200 connections",
        Duration::from_secs(120),
        || flood.opened.load(Ordering::SeqCst) >= 2200,
    );
    wait_for(
        "berth to close connections to make room",
        Duration::from_secs(30),
        || flood.closed.load(Ordering::SeqCst) > 2000,
    );

    // /healthz answers every time, on a new connection each, while the flood goes on.
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let asked = Instant::now();
        let (code, body) = d.request("GET", "/healthz", None);
        slowest = slowest.max(asked.elapsed());
        assert_eq!((code, body.as_str()), (200, "ok\n"), "during the flood");
        assert!(
            d.open_fds() < NOFILE as usize,
            "berth holds {} descriptors",
            d.open_fds()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "slowest /healthz during the flood: {slowest:?}; flood: {} opened, {} closed by berth, {} open; berth holds {} descriptors",
        flood.opened.load(Ordering::SeqCst),
        flood.closed.load(Ordering::SeqCst),
        flood.open.load(Ordering::SeqCst),
        d.open_fds()
    );
    // Generous: it answers at once on a quiet machine.
    assert!(slowest < Duration::from_secs(5), "{slowest:?}");

    // A commit pushed during the flood is fetched and deployed.
    let second = remote.push("2");
    wait_for(
        "the commit pushed during the flood to be fetched and deployed",
        Duration::from_secs(90),
        || {
            let s = d.status();
            s["git"]["newest"] == second.as_str()
                && s["git"]["deployed"] == second.as_str()
                && s["status"] == "converged"
        },
    );
    assert!(
        p.inspect("web", "{{json .Config.Env}}")
            .contains("VERSION=2"),
        "the new commit runs"
    );
    assert!(
        flood.open.load(Ordering::SeqCst) > 0,
        "premise: the flood still holds connections"
    );
    drop(flood);
    let log = d.log();
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(!log.contains("could not accept"), "{log}");
}

/// The engine's host-gateway address as containers see it is where berth listens for
/// them; a container asks there.
fn from_a_container(port: u16, method: &str, path: &str, token: Option<&str>) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\\r\\n"))
        .unwrap_or_default();
    // bash's /dev/tcp: the image has no curl. The status line is all the test needs.
    let script = format!(
        "exec 3<>/dev/tcp/host.docker.internal/{port} && \
         printf '{method} {path} HTTP/1.0\\r\\nHost: berth\\r\\n{auth}Content-Length: 0\\r\\n\\r\\n' >&3 && \
         head -n 1 <&3"
    );
    let out = docker(&[
        "run",
        "--rm",
        "--label",
        "berth.test=e2e_trust_listener",
        "--add-host",
        "host.docker.internal:host-gateway",
        "debian:bookworm-slim",
        "bash",
        "-c",
        &script,
    ]);
    assert!(
        out.status.success(),
        "the container's request failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text(&out).trim().to_string()
}

#[test]
fn a_container_on_the_host_gateway_listener_needs_the_api_token_to_reconcile() {
    require_images(&["debian:bookworm-slim"], "scripts/test-setup.sh");
    let p = Project::new("trust-gateway");
    p.write(ONE_WEB);
    let token = "gateway-token-e2e-0123456789";
    let token_file = p.dir.path().join("api-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let gateway = free_port();
    let d = Daemon::start(
        &p,
        &[
            "--listen",
            &format!("host-gateway:{gateway}"),
            "--api-token-file",
            token_file.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        d.log().contains(&format!(":{gateway}")),
        "premise: berth serves the host-gateway listener: {}",
        d.log()
    );

    // Premise: the daemon is quiet (nothing left to reconcile), so any run is asked for.
    let mut last = reconciles(&d);
    wait_for("the daemon to be quiet", Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(1500));
        let now = reconciles(&d);
        std::mem::replace(&mut last, now) == now
    });

    // The read-only routes answer the container without a token.
    assert_eq!(
        from_a_container(gateway, "GET", "/healthz", None),
        "HTTP/1.0 200 OK"
    );
    // A change does not, without the token or with a wrong one.
    let before = reconciles(&d);
    assert_eq!(
        from_a_container(gateway, "POST", "/api/v1/reconcile", None),
        "HTTP/1.0 401 Unauthorized"
    );
    assert_eq!(
        from_a_container(gateway, "POST", "/api/v1/reconcile", Some("not-the-token")),
        "HTTP/1.0 401 Unauthorized"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        reconciles(&d),
        before,
        "a refused request reconciles nothing"
    );
    // With it: accepted, and the reconcile runs.
    assert_eq!(
        from_a_container(gateway, "POST", "/api/v1/reconcile", Some(token)),
        "HTTP/1.0 202 Accepted"
    );
    wait_for("the asked reconcile", Duration::from_secs(30), || {
        reconciles(&d) > before
    });
    // Loopback stays open to this host's processes, as before.
    assert_eq!(d.request("POST", "/api/v1/reconcile", None).0, 202);
    // And the token shows nowhere.
    assert!(!d.log().contains(token), "{}", d.log());
    assert!(!d.request("GET", "/api/v1/status", None).1.contains(token));
}

/// Reconciles the daemon ran, from its metrics.
fn reconciles(d: &Daemon) -> u64 {
    let (code, metrics) = d.request("GET", "/metrics", None);
    assert_eq!(code, 200);
    metrics
        .lines()
        .filter(|l| l.starts_with("berth_reconciles_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
