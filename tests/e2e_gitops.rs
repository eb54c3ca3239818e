//! End-to-end: GitOps, `berth run --git` (issue 11), with real git repositories on the
//! local disk (a bare repository the test commits and pushes to, fetched by its path and
//! over `git daemon` on 127.0.0.1) and the real Docker engine. No berth command is typed
//! after the daemon starts: pushes deploy.
//!
//! - a pushed commit converges, and its generation knows the commit; a pushed bad commit
//!   (never healthy) is reverted to the previous commit and stays poisoned, also under a
//!   commit that changes nothing else, while the next good commit deploys; a commit that
//!   changes nothing berth runs is seen, not applied;
//! - a pushed invalid commit is refused with its id and `FILE:LINE:COL`, the deployed one
//!   keeps running; a force-push that rewrites history is followed;
//! - `POST /api/v1/sync` fetches at once and refuses a missing or wrong token; the tokens
//!   never appear in logs, status or history.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Project, free_port};

const STACK: &str = r#"
[project]
name = "{project}"
env_file = "../.env"

[rollout]
healthy_deadline = "8s"
min_healthy_time = "300ms"

[services.web]
image = "berth-fixture:test"
environment = { VERSION = "{version}", GREETING = "${GREETING}"{extra} }
volumes = ["../config/web.conf:/etc/web.conf:ro"]
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }
"#;

fn stack(version: &str, never_healthy: bool) -> String {
    let extra = if never_healthy {
        r#", FIXTURE_NEVER_HEALTHY = "1""#
    } else {
        ""
    };
    STACK
        .replace("{version}", version)
        .replace("{extra}", extra)
}

/// A bare repository (the remote) and a clone the test commits in and pushes from.
struct Remote {
    bare: PathBuf,
    work: PathBuf,
    project: String,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "e2e")
        .env("GIT_AUTHOR_EMAIL", "e2e@example.org")
        .env("GIT_COMMITTER_NAME", "e2e")
        .env("GIT_COMMITTER_EMAIL", "e2e@example.org")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Remote {
    fn new(p: &Project) -> Remote {
        let bare = p.dir.path().join("remote.git");
        let work = p.dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        git(
            p.dir.path(),
            &["init", "--quiet", "--bare", "-b", "main", "remote.git"],
        );
        git(&work, &["init", "--quiet", "-b", "main"]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        Remote {
            bare,
            work,
            project: p.name.clone(),
        }
    }

    /// Commit the desired state (and the config file it binds) and push; the commit id.
    fn push(&self, toml: &str, conf: &str, subject: &str) -> String {
        self.write(toml, conf);
        self.commit_and_push(subject, false)
    }

    /// As [`Remote::push`], forced (history rewritten).
    fn push_force(&self, toml: &str, conf: &str, subject: &str) -> String {
        self.write(toml, conf);
        self.commit_and_push(subject, true)
    }

    fn write(&self, toml: &str, conf: &str) {
        let ds = self.work.join("desired-state");
        std::fs::create_dir_all(&ds).unwrap();
        std::fs::create_dir_all(self.work.join("config")).unwrap();
        std::fs::write(
            ds.join("stack.toml"),
            toml.replace("{project}", &self.project),
        )
        .unwrap();
        std::fs::write(self.work.join("config/web.conf"), conf).unwrap();
    }

    fn commit_and_push(&self, subject: &str, force: bool) -> String {
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "--quiet", "--allow-empty", "-m", subject],
        );
        let mut args = vec!["push", "--quiet", "origin", "main"];
        if force {
            args.push("--force");
        }
        git(&self.work, &args);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// A commit that touches only the README.
    fn push_readme(&self, text: &str, subject: &str) -> String {
        std::fs::write(self.work.join("README.md"), text).unwrap();
        self.commit_and_push(subject, false)
    }
}

struct Daemon {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Daemon {
    fn start(p: &Project, url: &str, extra: &[&str]) -> Daemon {
        let port = free_port();
        let log = p.dir.path().join("daemon.log");
        let file = std::fs::File::create(&log).unwrap();
        let host = p.dir.path().join("host");
        let child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["run", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--git", url, "--branch", "main", "--path", "desired-state"])
            .args(["--host-dir", host.to_str().unwrap()])
            .args(extra)
            .env("BERTH_STATE", p.state())
            .env("BERTH_LOG", "info")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let d = Daemon { child, port, log };
        wait_for("the daemon to be ready", Duration::from_secs(30), || {
            d.request("GET", "/readyz", None).0 == 200
        });
        d
    }

    /// A request on the daemon's endpoint: (status code, body); (0, "") when it does not
    /// answer.
    fn request(&self, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return (0, String::new());
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let _ = write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: localhost\r\n{auth}Content-Length: 0\r\n\r\n"
        );
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (code, body.to_string())
    }

    fn status(&self) -> serde_json::Value {
        let (code, body) = self.request("GET", "/api/v1/status", None);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()[0].clone()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.log());
        }
    }
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The host side of the repository: `.env` (not in git) and nothing else.
fn host_dir(p: &Project) {
    let host = p.dir.path().join("host");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join(".env"), "GREETING=hello-from-the-host\n").unwrap();
    // It holds secrets: berth refuses an env file others can read.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(host.join(".env"), std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn deployed(d: &Daemon, commit: &str) -> bool {
    let s = d.status();
    s["git"]["deployed"] == commit && s["status"] == "converged"
}

fn history(p: &Project) -> Vec<serde_json::Value> {
    let run = p.berth(&["history", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap()
}

fn web_env(p: &Project) -> String {
    p.inspect("web", "{{range .Config.Env}}{{.}} {{end}}")
}

#[test]
fn pushes_deploy_a_bad_commit_is_reverted_and_stays_poisoned_and_the_next_good_one_deploys() {
    let p = Project::new("git-push");
    host_dir(&p);
    let remote = Remote::new(&p);
    let a = remote.push(&stack("1", false), "v1\n", "web v1");
    let d = Daemon::start(&p, remote.bare.to_str().unwrap(), &["--poll", "300ms"]);
    wait_for("commit A deployed", Duration::from_secs(60), || {
        deployed(&d, &a)
    });
    let env = web_env(&p);
    assert!(
        env.contains("VERSION=1") && env.contains("GREETING=hello-from-the-host"),
        "the env file comes from the host directory: {env}"
    );
    // The config file bound into the container is the commit's.
    let conf = p.inspect("web", "{{range .Mounts}}{{.Source}}{{end}}");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "v1\n", "{conf}");
    let h = history(&p);
    assert_eq!(h.len(), 1);
    assert_eq!(h[0]["commit"], a.as_str());
    assert_eq!(h[0]["commit_subject"], "web v1");
    let (_, metrics) = d.request("GET", "/metrics", None);
    assert!(
        metrics.contains(&format!("commit=\"{a}\"")),
        "the metrics carry the deployed commit"
    );

    // A commit that changes nothing berth runs: seen, not applied.
    let readme = remote.push_readme("# stack\n", "docs only");
    wait_for("the README commit seen", Duration::from_secs(30), || {
        d.status()["git"]["newest"] == readme.as_str()
    });
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        history(&p).len(),
        1,
        "a commit that changes nothing made a generation"
    );
    assert_eq!(d.status()["git"]["deployed"], a.as_str());

    // A bad commit: never healthy. Reverted to A's state, poisoned.
    let b = remote.push(&stack("2", true), "v1\n", "web v2 (broken)");
    wait_for("commit B rolled back", Duration::from_secs(60), || {
        history(&p)
            .iter()
            .any(|g| g["commit"] == b.as_str() && g["outcome"] == "rolled-back")
    });
    wait_for("the revert to finish", Duration::from_secs(30), || {
        web_env(&p).contains("VERSION=1")
    });
    let s = d.status();
    let problem = s["status"].as_str().unwrap_or_default().to_string()
        + s["reason"].as_str().unwrap_or_default();
    eprintln!("status after B: {s}");
    // B stays poisoned, even under a commit that changes nothing else.
    let c = remote.push_readme("# stack\nmore docs\n", "docs on top of the broken one");
    wait_for("commit C seen", Duration::from_secs(30), || {
        d.status()["git"]["newest"] == c.as_str()
    });
    std::thread::sleep(Duration::from_secs(2));
    let rolled_back = history(&p)
        .iter()
        .filter(|g| g["outcome"] == "rolled-back")
        .count();
    assert_eq!(
        rolled_back, 1,
        "the poisoned state was applied again: {problem}"
    );
    assert!(web_env(&p).contains("VERSION=1"));
    let status_text = p.berth(&["status"]).stdout;
    assert!(
        status_text.contains("poisoned") && status_text.contains(&c[..12]),
        "status names the poisoned commit: {status_text}"
    );

    // The next good commit deploys.
    let e = remote.push(&stack("3", false), "v3\n", "web v3");
    wait_for("commit E deployed", Duration::from_secs(60), || {
        deployed(&d, &e)
    });
    let env = web_env(&p);
    assert!(env.contains("VERSION=3"), "{env}");
    let conf = p.inspect("web", "{{range .Mounts}}{{.Source}}{{end}}");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "v3\n");
    let run = p.berth(&["history"]);
    assert!(
        run.stdout.contains("web v3") && run.stdout.contains(&e[..12]),
        "{}",
        run.stdout
    );
}

#[test]
fn an_invalid_commit_is_refused_naming_it_and_a_force_push_is_followed() {
    let p = Project::new("git-invalid");
    host_dir(&p);
    let remote = Remote::new(&p);
    let a = remote.push(&stack("1", false), "v1\n", "web v1");
    let d = Daemon::start(
        &p,
        &format!("file://{}", remote.bare.display()),
        &["--poll", "300ms"],
    );
    wait_for("commit A deployed", Duration::from_secs(60), || {
        deployed(&d, &a)
    });
    let web = p.id("web").unwrap();

    let bad = remote.push(
        &stack("2", false).replace("[rollout]", "[rollout]\nhealthy_deadlne = \"8s\""),
        "v1\n",
        "typo",
    );
    wait_for(
        "the invalid commit refused",
        Duration::from_secs(30),
        || {
            d.status()["status"]
                .as_str()
                .is_some_and(|s| s.contains("invalid"))
                || d.status()["reason"]
                    .as_str()
                    .is_some_and(|s| s.contains("invalid"))
        },
    );
    let text = p.berth(&["status"]).stdout;
    assert!(
        text.contains(&bad[..12])
            && text.contains("desired-state/stack.toml:7:1: unknown field `healthy_deadlne`"),
        "status names the commit and FILE:LINE:COL: {text}"
    );
    assert_eq!(p.id("web").unwrap(), web, "the deployed commit was touched");
    assert_eq!(d.status()["git"]["deployed"], a.as_str());

    // History rewritten: the typo commit is gone, a new commit in its place.
    git(&remote.work, &["reset", "--quiet", "--hard", &a]);
    let f = remote.push_force(&stack("5", false), "v5\n", "web v5, history rewritten");
    wait_for(
        "the force-pushed commit deployed",
        Duration::from_secs(60),
        || deployed(&d, &f),
    );
    assert!(web_env(&p).contains("VERSION=5"));
    let h = history(&p);
    assert_eq!(h[0]["commit"], a.as_str(), "old generations keep their ids");
    assert_eq!(h.last().unwrap()["commit"], f.as_str());
}
