//! End-to-end: what `berth run --git` keeps to itself and how much it takes, with real git
//! (a bare repository on the local disk, served over smart HTTP by `git http-backend`
//! behind `tests/support/git-http-server.py`) and the real engine.
//!
//! - credentials in the URL (`http://user:password@…` given in a file,
//!   `http://TOKEN@…` in `BERTH_GIT`) deploy, and appear in none of: the log,
//!   `/api/v1/status`, `/metrics`, `berth status`, `berth history`, the lock file, the
//!   systemd `STATUS=` line, any file of the state directory, and the argv of any process
//!   (`/proc/*/cmdline` read all along, through slow fetches); one given on berth's
//!   command line is warned about;
//! - a 400 MB file in a commit: the daemon's peak RSS stays under 100 MiB and the state
//!   directory grows by about twice the file (git's copy and one tree); after more
//!   generations than are kept, old trees and objects are pruned, never those the
//!   running or the last good generation uses;
//! - deleting what can be deleted of a held lock does not let a second `apply` in.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::git::{Remote, git};
use common::{Project, free_port, wait_for};

const STACK: &str = r#"
[project]
name = "{project}"

[rollout]
healthy_deadline = "8s"
min_healthy_time = "300ms"

[services.web]
image = "berth-fixture:test"
environment = { VERSION = "{version}"{extra} }
volumes = ["../config/web.conf:/etc/web.conf:ro"]
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }
"#;

/// A bare repository (`remote.git` in the project's directory) that the smart-HTTP
/// server may serve, and a clone that stores large files as they are.
fn remote_for_http(p: &Project) -> Remote {
    let remote = Remote::new(p);
    // Large files are stored as they are: the test's own commits stay quick.
    git(&remote.work, &["config", "core.compression", "0"]);
    git(&remote.work, &["config", "core.bigFileThreshold", "16m"]);
    // The smart-HTTP server serves only repositories that allow it.
    git(&remote.bare, &["config", "http.receivepack", "false"]);
    remote
}

/// This file's commits: a version of the stack.
impl Remote {
    /// Commit the desired state with `version` and the config file it binds; the id.
    fn push(&self, version: &str, never_healthy: bool) -> String {
        let extra = if never_healthy {
            r#", FIXTURE_NEVER_HEALTHY = "1""#
        } else {
            ""
        };
        self.write_stack(
            &STACK
                .replace("{version}", version)
                .replace("{extra}", extra),
        );
        self.write("config/web.conf", &conf(version));
        self.commit_and_push(&format!("web v{version}"), false)
    }
}

/// The config file of version `v`.
fn conf(v: &str) -> String {
    format!("v{v}\n")
}

/// The git object id of `text` (what berth names the copy of a file by).
fn blob_id(dir: &Path, text: &str) -> String {
    let mut child = Command::new("git")
        .args(["hash-object", "--stdin"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `tests/support/git-http-server.py` on `port`: `git http-backend` behind a server that
/// wants `pair` (`user:password`, given in its environment) as basic auth, answering
/// after `delay` seconds.
struct HttpRemote {
    child: Child,
}

impl HttpRemote {
    fn start(root: &Path, port: u16, pair: &str, delay: &str) -> HttpRemote {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/git-http-server.py");
        let child = Command::new("python3")
            .arg(script)
            .arg(root)
            .arg(port.to_string())
            .arg("-")
            .env("GIT_HTTP_SERVER_TOKEN", pair)
            .env("GIT_HTTP_SERVER_DELAY", delay)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        wait_for("the git http server", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        HttpRemote { child }
    }
}

impl Drop for HttpRemote {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This file's daemons: following the repository `git` names (flags, or none when
/// `BERTH_GIT` does), with `env`; ready when they listen, since a remote that is not up
/// yet keeps the desired state from being read.
impl Daemon {
    fn start(p: &Project, git: &[&str], env: &[(&str, &str)], extra: &[&str]) -> Daemon {
        Daemon::build(p)
            .git(git)
            .args(extra)
            .env(env)
            .ready("/healthz", Duration::from_secs(30))
            .start()
    }

    /// The peak resident set of the daemon so far (`VmHWM`), in bytes.
    fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb * 1024
    }
}

/// Whether `commit` is deployed and converged; false while the daemon does not answer
/// its status (it may be busy starting, see [`Daemon::try_status`]).
fn deployed(d: &Daemon, commit: &str) -> bool {
    let s = d.try_status();
    s["git"]["deployed"] == commit && s["status"] == "converged"
}

/// Every command line seen in `/proc` while it runs (but for `skip`'s pids), read as
/// often as it can.
struct Argvs {
    seen: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Argvs {
    fn watch(skip: Vec<u32>) -> Argvs {
        let seen: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (seen, stop) = (seen.clone(), stop.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(procs) = std::fs::read_dir("/proc") else {
                        continue;
                    };
                    for entry in procs.flatten() {
                        let name = entry.file_name();
                        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                            continue;
                        };
                        if skip.contains(&pid) {
                            continue;
                        }
                        if let Ok(argv) = std::fs::read(entry.path().join("cmdline"))
                            && !argv.is_empty()
                        {
                            let argv = String::from_utf8_lossy(&argv).replace('\0', " ");
                            seen.lock().unwrap().insert(argv);
                        }
                    }
                }
            }
        });
        Argvs {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> BTreeSet<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Argvs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Every datagram sent to a `NOTIFY_SOCKET` the test binds (systemd's side).
struct Notify {
    path: PathBuf,
    said: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Notify {
    fn bind(path: PathBuf) -> Notify {
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let said: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        std::thread::spawn({
            let (said, stop) = (said.clone(), stop.clone());
            move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = sock.recv(&mut buf) {
                        said.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                    }
                }
            }
        });
        Notify { path, said, stop }
    }

    fn said(&self) -> Vec<String> {
        self.said.lock().unwrap().clone()
    }
}

impl Drop for Notify {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn basic(pair: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(pair)
}

/// The bytes of every file under `dir` smaller than 64 MiB (the store, git's metadata,
/// the trees' small files), with the path each came from.
fn small_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter(|e| e.metadata().is_ok_and(|m| m.len() < 64 << 20))
        .filter_map(|e| Some((e.path().to_path_buf(), std::fs::read(e.path()).ok()?)))
        .collect()
}

#[test]
fn credentials_in_the_url_are_shown_stored_and_passed_nowhere() {
    // The password holds characters a URL must encode: it is given encoded, and must be
    // found in neither form.
    const PASSWORD: &str = "pa:ss@w/rd-SECRET-1";
    const PASSWORD_ENCODED: &str = "pa%3Ass%40w%2Frd-SECRET-1";
    const TOKEN: &str = "tok-AS-USER-SECRET-0123456789";
    let p = Project::new("git-creds");
    let remote = remote_for_http(&p);
    let a = remote.push("1", false);
    let state_dir = p.dir.path().to_path_buf();
    let cases = [
        (
            "user:password in --git-url-file",
            format!("bot:{PASSWORD}"),
            format!("bot:{PASSWORD_ENCODED}"),
        ),
        (
            "a token as the user in BERTH_GIT",
            format!("{TOKEN}:"),
            TOKEN.to_string(),
        ),
    ];
    let mut generation = 0;
    for (case, pair, userinfo) in &cases {
        generation += 1;
        // The remote is not up yet when the daemon starts: the failed fetch names the URL
        // in status and the STATUS line.
        let port = free_port();
        let url = format!("http://{userinfo}@127.0.0.1:{port}/remote.git");
        let shown = format!("http://127.0.0.1:{port}/remote.git");
        let notify = Notify::bind(p.dir.path().join(format!("notify-{generation}.sock")));
        let url_file = p.dir.path().join("git-url");
        std::fs::write(&url_file, format!("{url}\n")).unwrap();
        let (flags, env): (Vec<&str>, Vec<(&str, &str)>) = if generation == 1 {
            (vec!["--git-url-file", url_file.to_str().unwrap()], vec![])
        } else {
            (vec![], vec![("BERTH_GIT", url.as_str())])
        };
        let mut env = env;
        env.push(("NOTIFY_SOCKET", notify.path.to_str().unwrap()));
        let d = Daemon::start(&p, &flags, &env, &["--poll", "300ms"]);
        let argvs = Argvs::watch(vec![std::process::id()]);
        wait_for(
            &format!("{case}: the failed fetch in the STATUS line"),
            Duration::from_secs(30),
            || notify.said().iter().any(|m| m.contains(&shown)),
        );
        // Slow answers (a second each): every fetch lasts long enough to be seen.
        let server = HttpRemote::start(p.dir.path(), port, pair, "1");
        wait_for(
            &format!("{case}: commit A fetched and deployed"),
            Duration::from_secs(90),
            || deployed(&d, &a) && d.try_status()["git"]["newest"] == a.as_str(),
        );
        // Another fetch or two, watched whole.
        std::thread::sleep(Duration::from_secs(4));
        let argvs_seen = argvs.seen();
        drop(argvs);

        let status = p.berth(&["status"]);
        let history = p.berth(&["history", "--json"]);
        let lock_note = std::fs::read_to_string(
            state_dir
                .join("locks")
                .join(format!("{}.daemon", p.name))
                .join("holder.json"),
        )
        .unwrap();
        let api = d.get("/api/v1/status").1;
        let said = notify.said().join("\n");
        // The premises: each place does name the source, without its user info.
        for (place, text) in [
            ("/api/v1/status", &api),
            ("berth status", &status.stdout),
            ("the lock file", &lock_note),
            ("the STATUS line", &said),
        ] {
            assert!(
                text.contains(&shown),
                "{case}: {place} does not name {shown}: {text}"
            );
        }
        let fetches: Vec<&String> = argvs_seen
            .iter()
            .filter(|a| a.contains(&format!("127.0.0.1:{port}")))
            .collect();
        assert!(
            fetches.iter().any(|a| a.contains("remote-http"))
                && fetches.iter().any(|a| a.contains("fetch")),
            "{case}: no fetch was seen in /proc: {fetches:?}"
        );
        let header = basic(pair);
        let secrets = ["SECRET", header.as_str()];
        let texts = [
            ("the log", d.log()),
            ("/api/v1/status", api),
            ("/metrics", d.get("/metrics").1),
            ("berth status", status.stdout + &status.stderr),
            ("berth history", history.stdout + &history.stderr),
            ("the lock file", lock_note),
            ("the STATUS line", said),
        ];
        for (place, text) in &texts {
            for secret in secrets {
                assert!(
                    !text.contains(secret),
                    "{case}: {secret} in {place}: {text}"
                );
            }
        }
        for argv in &argvs_seen {
            for secret in secrets {
                assert!(
                    !argv.contains(secret),
                    "{case}: {secret} in a command line: {argv}"
                );
            }
        }
        for (path, bytes) in small_files(&state_dir.join("git"))
            .iter()
            .chain(&small_files_of_store(&p))
        {
            let text = String::from_utf8_lossy(bytes);
            for secret in secrets {
                assert!(
                    !text.contains(secret),
                    "{case}: {secret} stored in {}",
                    path.display()
                );
            }
        }
        eprintln!(
            "{case}: {} command lines seen, {} of them fetches",
            argvs_seen.len(),
            fetches.len()
        );
        drop(d);
        drop(server);
    }

    // On berth's own command line the URL is in its argv: it says so.
    let port = free_port();
    let url = format!("http://bot:{PASSWORD_ENCODED}@127.0.0.1:{port}/remote.git");
    let d = Daemon::start(&p, &["--git", &url], &[], &["--poll", "1h"]);
    wait_for("the warning", Duration::from_secs(20), || {
        d.log().contains("every user of this host can read in `ps`")
    });
    assert!(!d.log().contains("SECRET"), "{}", d.log());
}

/// The store's files (`state.db` and its journal) beside the project's.
fn small_files_of_store(p: &Project) -> Vec<(PathBuf, Vec<u8>)> {
    std::fs::read_dir(p.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("state.db"))
        .filter_map(|e| Some((e.path(), std::fs::read(e.path()).ok()?)))
        .collect()
}

/// The bytes of every file under `dir`.
fn size_of(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[test]
fn a_400_mb_file_streams_to_disk_and_what_no_kept_generation_uses_is_pruned() {
    const SIZE: u64 = 400 << 20;
    let p = Project::new("git-big");
    let remote = remote_for_http(&p);
    let a = remote.push("1", false);
    let d = Daemon::start(
        &p,
        &["--git", remote.bare.to_str().unwrap()],
        &[],
        &["--poll", "300ms"],
    );
    wait_for("commit A deployed", Duration::from_secs(60), || {
        deployed(&d, &a)
    });
    let git_dir = std::fs::read_dir(p.dir.path().join("git"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let state_size = || {
        size_of(&git_dir)
            + small_files_of_store(&p)
                .iter()
                .map(|(_, b)| b.len() as u64)
                .sum::<u64>()
    };
    let before = state_size();

    // Random bytes: git cannot compress them, so its copy is as large as the file.
    let big = remote.work.join("big.bin");
    let mut file = std::fs::File::create(&big).unwrap();
    std::io::copy(
        &mut std::fs::File::open("/dev/urandom").unwrap().take(SIZE),
        &mut file,
    )
    .unwrap();
    drop(file);
    let b = remote.push("2", false);
    let pushed = Instant::now();
    wait_for("commit B deployed", Duration::from_secs(300), || {
        deployed(&d, &b)
    });
    eprintln!("the 400 MB commit deployed in {:?}", pushed.elapsed());
    let peak = d.peak_rss();
    let grown = state_size() - before;
    eprintln!(
        "daemon peak RSS {:.1} MiB; state directory grew by {:.1} MiB for a {} MiB file",
        peak as f64 / 1048576.0,
        grown as f64 / 1048576.0,
        SIZE >> 20
    );
    assert!(peak < 100 << 20, "the daemon's peak RSS was {peak} bytes");
    // Twice the file (git's copy, one tree), and a little for git's framing of data it
    // cannot compress, its index and the small files of the commits.
    assert!(
        grown <= 2 * SIZE + (8 << 20),
        "the state directory grew by {grown} bytes"
    );
    let trees = git_dir.join("trees");
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    // The prune follows the turn that recorded B: wait for it, then the only tree is B's.
    let only_b = BTreeSet::from([b.clone()]);
    let pruned = (0..120).any(|_| {
        let done = names(&trees) == only_b;
        if !done {
            std::thread::sleep(Duration::from_millis(250));
        }
        done
    });
    assert!(pruned, "A's tree was kept: {:?}", names(&trees));

    // More generations than are kept (5): the oldest objects go, and every tree but the
    // one deployed.
    let mut last = b.clone();
    for v in 3..=8 {
        last = remote.push(&v.to_string(), false);
        wait_for(&format!("v{v} deployed"), Duration::from_secs(60), || {
            deployed(&d, &last)
        });
    }
    wait_for("the prune after v8", Duration::from_secs(20), || {
        names(&trees) == BTreeSet::from([last.clone()])
    });
    let objects = git_dir.join("objects");
    let kept: BTreeSet<String> = (4..=8)
        .map(|v| blob_id(&remote.work, &conf(&v.to_string())))
        .collect();
    assert_eq!(
        names(&objects),
        kept,
        "the objects of the five newest generations are kept, no others"
    );
    let total = size_of(&git_dir);
    eprintln!(
        "after 8 generations the repository's directory holds {:.1} MiB",
        total as f64 / 1048576.0
    );
    assert!(total <= 2 * SIZE + (16 << 20), "{total} bytes");

    // A bad commit is reverted: what the running (reverted-to) generation uses stays.
    let bad = remote.push("9", true);
    wait_for("the bad commit reverted", Duration::from_secs(90), || {
        let run = p.berth(&["history", "--json"]);
        serde_json::from_str::<Vec<serde_json::Value>>(&run.stdout)
            .unwrap_or_default()
            .iter()
            .any(|g| g["commit"] == bad.as_str() && g["outcome"] == "rolled-back")
    });
    wait_for("the revert to finish", Duration::from_secs(60), || {
        p.inspect("web", "{{range .Config.Env}}{{.}} {{end}}")
            .contains("VERSION=8")
    });
    // A turn or two later (the prune follows each).
    std::thread::sleep(Duration::from_secs(2));
    let mount = p.inspect("web", "{{range .Mounts}}{{.Source}}{{end}}");
    assert_eq!(
        std::fs::read_to_string(&mount).unwrap(),
        conf("8"),
        "{mount}"
    );
    assert!(
        names(&trees).contains(&last),
        "the last good generation's tree was pruned: {:?}",
        names(&trees)
    );
    assert!(names(&objects).contains(&blob_id(&remote.work, &conf("8"))));
}

#[test]
fn deleting_every_lock_file_of_a_held_lock_lets_no_second_apply_in() {
    let p = Project::new("lock-deleted");
    // A gate of 8 s: the first apply holds the lock that long, well past the 1.5 s the
    // test looks at it, even on a loaded machine.
    p.write(
        r#"
[project]
name = "{project}"
[services.slow]
image = "berth-fixture:test"
environment = { FIXTURE_READY_AFTER = "8" }
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }
"#,
    );
    let spawn = || p.spawn(&["apply"]);
    let mut first = spawn();
    let lock = p.dir.path().join("locks").join(&p.name);
    let note = lock.join("holder.json");
    wait_for(
        "the first apply to take the lock",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&note)
                .is_ok_and(|t| t.contains(&format!("\"pid\":{}", first.id())))
        },
    );
    // What an operator who thinks the lock is stale can do to it, at its most thorough:
    // `rm -r locks/`. The lock is on the state store itself, so nothing of it is there.
    std::fs::remove_dir_all(lock.parent().unwrap()).unwrap();
    assert!(!lock.exists());

    let mut second = spawn();
    std::thread::sleep(Duration::from_millis(1500));
    if first.try_wait().unwrap().is_some() {
        let out = first.wait_with_output().unwrap();
        panic!(
            "the premise: the first apply still holds the lock; it ended ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        second.try_wait().unwrap().is_none(),
        "the second apply did not wait"
    );
    let first = first.wait_with_output().unwrap();
    let first_done = Instant::now();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let second = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(
        stderr.contains("waiting for it to finish"),
        "the second apply did not say it waited: {stderr}"
    );
    eprintln!(
        "the second apply ended {:?} after the first",
        first_done.elapsed()
    );
}
