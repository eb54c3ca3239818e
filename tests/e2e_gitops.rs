//! End-to-end: GitOps, `berth run --git`, with real git repositories on the local disk (a
//! bare repository the test commits and pushes to, fetched by its path and over `git
//! daemon` on 127.0.0.1) and the real Docker engine. No berth command is typed after the
//! daemon starts: pushes deploy.
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

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::git::{Remote, git};
use common::{Project, free_port, wait_for};

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

/// This file's commits: the desired state and the config file it binds.
impl Remote {
    /// Commit the desired state (and the config file it binds) and push; the commit id.
    fn push(&self, toml: &str, conf: &str, subject: &str) -> String {
        self.write_stack(toml);
        self.write("config/web.conf", conf);
        self.commit_and_push(subject, false)
    }

    /// As [`Remote::push`], forced (history rewritten).
    fn push_force(&self, toml: &str, conf: &str, subject: &str) -> String {
        self.write_stack(toml);
        self.write("config/web.conf", conf);
        self.commit_and_push(subject, true)
    }

    /// A commit that touches only the README.
    fn push_readme(&self, text: &str, subject: &str) -> String {
        self.write("README.md", text);
        self.commit_and_push(subject, false)
    }
}

/// This file's daemons: following `url` (with the host directory `host_dir` makes).
impl Daemon {
    fn start(p: &Project, url: &str, extra: &[&str]) -> Daemon {
        Daemon::start_env(p, url, &[], extra)
    }

    fn start_env(p: &Project, url: &str, env: &[(&str, &str)], extra: &[&str]) -> Daemon {
        Daemon::build(p)
            .git(&["--git", url])
            .args(extra)
            .env(env)
            .start()
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

#[test]
fn pushes_deploy_a_bad_commit_is_reverted_and_stays_poisoned_and_the_next_good_one_deploys() {
    let p = Project::new("git-push");
    host_dir(&p);
    let remote = Remote::new(&p);
    let a = remote.push(&stack("1", false), "v1\n", "web v1");
    let d = Daemon::start(&p, remote.bare.to_str().unwrap(), &["--poll", "300ms"]);
    wait_for("commit A deployed", Duration::from_secs(60), || {
        d.deployed(&a)
    });
    let env = p.environment("web");
    assert!(
        env.contains("VERSION=1") && env.contains("GREETING=hello-from-the-host"),
        "the env file comes from the host directory: {env}"
    );
    // The config file bound into the container is the commit's.
    let conf = p.inspect("web", "{{range .Mounts}}{{.Source}}{{end}}");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "v1\n", "{conf}");
    let h = p.history();
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
        p.history().len(),
        1,
        "a commit that changes nothing made a generation"
    );
    assert_eq!(d.status()["git"]["deployed"], a.as_str());

    // A bad commit: never healthy. Reverted to A's state, poisoned.
    let b = remote.push(&stack("2", true), "v1\n", "web v2 (broken)");
    wait_for("commit B rolled back", Duration::from_secs(60), || {
        p.history()
            .iter()
            .any(|g| g["commit"] == b.as_str() && g["outcome"] == "rolled-back")
    });
    wait_for("the revert to finish", Duration::from_secs(30), || {
        p.environment("web").contains("VERSION=1")
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
    let rolled_back = p
        .history()
        .iter()
        .filter(|g| g["outcome"] == "rolled-back")
        .count();
    assert_eq!(
        rolled_back, 1,
        "the poisoned state was applied again: {problem}"
    );
    assert!(p.environment("web").contains("VERSION=1"));
    let status_text = p.berth(&["status"]).stdout;
    assert!(
        status_text.contains("poisoned") && status_text.contains(&c[..12]),
        "status names the poisoned commit: {status_text}"
    );

    // The next good commit deploys.
    let e = remote.push(&stack("3", false), "v3\n", "web v3");
    wait_for("commit E deployed", Duration::from_secs(60), || {
        d.deployed(&e)
    });
    let env = p.environment("web");
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
        d.deployed(&a)
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
        || d.deployed(&f),
    );
    assert!(p.environment("web").contains("VERSION=5"));
    let h = p.history();
    assert_eq!(h[0]["commit"], a.as_str(), "old generations keep their ids");
    assert_eq!(h.last().unwrap()["commit"], f.as_str());
}

/// `tests/support/git-http-server.py`: `git http-backend` behind a server that wants a
/// token, on 127.0.0.1.
struct HttpRemote {
    child: Child,
    port: u16,
}

impl HttpRemote {
    /// Over TLS with `tls` (certificate, key).
    fn start(root: &Path, token: &str, tls: Option<(&Path, &Path)>) -> HttpRemote {
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/git-http-server.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(root).arg(port.to_string()).arg(token);
        if let Some((cert, key)) = tls {
            cmd.arg(cert).arg(key);
        }
        let child = cmd.stdin(Stdio::null()).spawn().unwrap();
        wait_for("the git http server", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        HttpRemote { child, port }
    }
}

impl Drop for HttpRemote {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn over_https_with_a_token_the_sync_endpoint_fetches_at_once_and_wants_its_own_token() {
    const FETCH_TOKEN: &str = "fetch-SECRET-0815-zz";
    const SYNC_TOKEN: &str = "sync-SECRET-4711-yy";
    let p = Project::new("git-sync");
    host_dir(&p);
    let remote = Remote::new(&p);
    let a = remote.push(&stack("1", false), "v1\n", "web v1");
    // A certificate for 127.0.0.1, trusted by git through GIT_SSL_CAINFO.
    let cert = p.dir.path().join("cert.pem");
    let key = p.dir.path().join("key.pem");
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let server = HttpRemote::start(p.dir.path(), FETCH_TOKEN, Some((&cert, &key)));
    let url = format!("https://127.0.0.1:{}/remote.git", server.port);
    // The premise: the server refuses a fetch without the token.
    let refused = Command::new("git")
        .args(["ls-remote", &url])
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_SSL_CAINFO", &cert)
        .output()
        .unwrap();
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && (why.contains("401") || why.contains("could not read Username")),
        "the server served without a token: {why}"
    );

    let tokens = p.dir.path().join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    std::fs::write(tokens.join("fetch"), format!("{FETCH_TOKEN}\n")).unwrap();
    std::fs::write(tokens.join("sync"), format!("{SYNC_TOKEN}\n")).unwrap();
    // Polling once an hour: only the start and the sync endpoint fetch.
    let d = Daemon::start_env(
        &p,
        &url,
        &[("GIT_SSL_CAINFO", cert.to_str().unwrap())],
        &[
            "--poll",
            "1h",
            "--token-file",
            tokens.join("fetch").to_str().unwrap(),
            "--sync-token-file",
            tokens.join("sync").to_str().unwrap(),
        ],
    );
    wait_for(
        "commit A deployed over http",
        Duration::from_secs(60),
        || d.deployed(&a),
    );

    let b = remote.push(&stack("2", false), "v2\n", "web v2");
    assert_eq!(d.request("POST", "/api/v1/sync", None).0, 401);
    assert_eq!(d.request("POST", "/api/v1/sync", Some("wrong")).0, 401);
    assert_eq!(d.request("POST", "/api/v1/sync", Some(FETCH_TOKEN)).0, 401);
    assert_eq!(d.request("GET", "/api/v1/sync", Some(SYNC_TOKEN)).0, 405);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        d.status()["git"]["newest"],
        a.as_str(),
        "a refused sync fetched"
    );

    let asked = Instant::now();
    let (code, body) = d.request("POST", "/api/v1/sync", Some(SYNC_TOKEN));
    assert_eq!(code, 202, "{body}");
    wait_for("commit B seen", Duration::from_secs(10), || {
        d.status()["git"]["newest"] == b.as_str()
    });
    eprintln!("sync → commit seen in {:?}", asked.elapsed());
    wait_for("commit B deployed", Duration::from_secs(60), || {
        d.deployed(&b)
    });
    assert!(p.environment("web").contains("VERSION=2"));

    // A remote that cannot be reached: status says so, the deployed commit runs on.
    drop(server);
    assert_eq!(d.request("POST", "/api/v1/sync", Some(SYNC_TOKEN)).0, 202);
    wait_for(
        "the fetch failure in status",
        Duration::from_secs(20),
        || d.status()["git"]["problem"].is_string(),
    );
    let s = d.status();
    assert!(
        s["status"]
            .as_str()
            .unwrap_or_default()
            .contains("degraded")
            || s.to_string().contains("degraded"),
        "{s}"
    );
    assert_eq!(s["git"]["deployed"], b.as_str());
    assert!(p.environment("web").contains("VERSION=2"));

    // The tokens never show: not in the log, the status, the history. Nor does the
    // fetch token as git sends it, in the `Authorization: Basic` header's base64.
    let basic = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{FETCH_TOKEN}"))
    };
    let secrets = [FETCH_TOKEN, SYNC_TOKEN, basic.as_str()];
    let status = p.berth(&["status"]);
    let history = p.berth(&["history", "--json"]);
    let shown = [
        d.log(),
        d.request("GET", "/api/v1/status", None).1,
        d.request("GET", "/metrics", None).1,
        status.stdout,
        status.stderr,
        history.stdout,
        history.stderr,
    ];
    for text in &shown {
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }
}

/// An `sshd` of our own on 127.0.0.1 (no system service), which lets in one key and
/// runs git's upload-pack for it.
struct SshRemote {
    child: Child,
    port: u16,
    host_key_pub: String,
}

impl SshRemote {
    fn start(dir: &Path, client_pub: &Path) -> SshRemote {
        let port = free_port();
        let host_key = dir.join("ssh_host_ed25519_key");
        keygen(&host_key);
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPidFile {}\n",
                host_key.display(),
                client_pub.display(),
                dir.join("sshd.pid").display()
            ),
        )
        .unwrap();
        // sshd wants its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for("sshd to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let host_key_pub = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
        SshRemote {
            child,
            port,
            host_key_pub,
        }
    }
}

impl Drop for SshRemote {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SSHD: &str = "/usr/sbin/sshd";

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn over_ssh_with_a_key_and_known_hosts_and_an_unknown_host_is_refused() {
    // The premises: an sshd to run, and root (sshd's privilege separation, and the login).
    assert!(
        Path::new(SSHD).exists(),
        "{SSHD} is missing: apt-get install openssh-server (or run .ci/run)"
    );
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test runs sshd, which needs root"
    );
    let p = Project::new("git-ssh");
    host_dir(&p);
    let remote = Remote::new(&p);
    let a = remote.push(&stack("1", false), "v1\n", "web v1");
    let ssh = p.dir.path().join("ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    let client = ssh.join("id_ed25519");
    keygen(&client);
    let server = SshRemote::start(&ssh, &client.with_extension("pub"));
    let url = format!(
        "ssh://root@127.0.0.1:{}{}",
        server.port,
        remote.bare.display()
    );

    // Two known_hosts that do not vouch for this server, both refused: one where the
    // host is absent (ssh's `accept-new` would take its key and deploy) and one where it
    // is listed with another key.
    let other = ssh.join("other_key");
    keygen(&other);
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let absent = ssh.join("known_hosts.absent");
    let other_port = free_port();
    std::fs::write(&absent, format!("[127.0.0.1]:{other_port} {other_pub}")).unwrap();
    let wrong = ssh.join("known_hosts.wrong");
    std::fs::write(&wrong, format!("[127.0.0.1]:{} {other_pub}", server.port)).unwrap();
    for (case, file) in [("absent", &absent), ("changed key", &wrong)] {
        let before = std::fs::read_to_string(file).unwrap();
        let d = Daemon::start(
            &p,
            &url,
            &[
                "--poll",
                "1h",
                "--ssh-key",
                client.to_str().unwrap(),
                "--known-hosts",
                file.to_str().unwrap(),
            ],
        );
        wait_for(
            &format!("the refused host key ({case}) in the log"),
            Duration::from_secs(30),
            || {
                // No desired state was ever read, so no project to report on: the
                // log (and the systemd STATUS line) say why.
                d.log().contains("Host key verification failed")
            },
        );
        assert!(
            p.id("web").is_none(),
            "deployed from an unverified host ({case})"
        );
        assert_eq!(
            std::fs::read_to_string(file).unwrap(),
            before,
            "known_hosts was written ({case})"
        );
    }

    let known = ssh.join("known_hosts");
    std::fs::write(
        &known,
        format!("[127.0.0.1]:{} {}", server.port, server.host_key_pub),
    )
    .unwrap();
    let d = Daemon::start(
        &p,
        &url,
        &[
            "--poll",
            "300ms",
            "--ssh-key",
            client.to_str().unwrap(),
            "--known-hosts",
            known.to_str().unwrap(),
        ],
    );
    wait_for(
        "commit A deployed over ssh",
        Duration::from_secs(60),
        || d.deployed(&a),
    );
    let b = remote.push(&stack("2", false), "v2\n", "web v2");
    wait_for(
        "commit B deployed over ssh",
        Duration::from_secs(60),
        || d.deployed(&b),
    );
    assert!(p.environment("web").contains("VERSION=2"));
}
