//! `berth run`, the daemon, as a child process of the test: started on a free loopback
//! port with its log in the project's temp dir, asked over plain HTTP/1.0 (one request a
//! connection, as a probe or `curl` would), and killed when dropped, with its log printed
//! when the test failed (the log goes with the temp dir).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Project, free_port, wait_for};

/// A running `berth run`, killed when dropped (its log printed if the test failed).
pub struct Daemon {
    pub child: Child,
    /// Where it listens on 127.0.0.1.
    pub port: u16,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

/// A `berth run` about to start: [`Daemon::build`], what the test adds, [`Start::start`].
pub struct Start {
    cmd: Command,
    port: u16,
    log: PathBuf,
    /// The project's directory and desired-state file.
    dir: PathBuf,
    file: PathBuf,
    ready: &'static str,
    within: Duration,
    nofile: Option<u64>,
}

impl Daemon {
    /// `berth run --listen 127.0.0.1:PORT` on a free port, with the project's state and
    /// `BERTH_LOG=info`, logging to `daemon-PORT.log` in the project's directory (one
    /// file per daemon: a test that starts several keeps every log). Ready once
    /// `/readyz` answers 200, within 30 s.
    pub fn build(p: &Project) -> Start {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.args(["run", "--listen", &format!("127.0.0.1:{port}")])
            .env("BERTH_STATE", p.state())
            .env("BERTH_LOG", "info");
        Start {
            cmd,
            port,
            log: p.dir.path().join(format!("daemon-{port}.log")),
            dir: p.dir.path().to_path_buf(),
            file: p.file(),
            ready: "/readyz",
            within: Duration::from_secs(30),
            nofile: None,
        }
    }

    /// A request on a new connection: (status code, body); (0, "") when it does not
    /// answer. `token` goes in an `Authorization: Bearer` header.
    pub fn request(&self, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
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

    /// A GET without a token: (status code, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, None)
    }

    /// The (first) project's status from `/api/v1/status` (Null before a desired state
    /// was read); fails the test unless it answers 200.
    pub fn status(&self) -> serde_json::Value {
        let (code, body) = self.get("/api/v1/status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()[0].clone()
    }

    /// As [`Daemon::status`], but Null when it does not answer with JSON: for a test
    /// that asks while berth may still be busy starting.
    pub fn try_status(&self) -> serde_json::Value {
        let (_, body) = self.get("/api/v1/status");
        serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default()[0].clone()
    }

    /// Whether `commit` (of `berth run --git`) is deployed and converged.
    pub fn deployed(&self, commit: &str) -> bool {
        let s = self.status();
        s["git"]["deployed"] == commit && s["status"] == "converged"
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and the exit code; the log is printed when it is not 0 (the test fails
    /// on it after the daemon, and its log, are gone).
    pub fn stop(mut self) -> i32 {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                let code = s.code().unwrap_or(-1);
                if code != 0 {
                    eprintln!("--- daemon log ---\n{}", self.log());
                }
                return code;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the daemon did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Start {
    /// `BERTH_FILE`: the daemon follows the project's desired-state file.
    pub fn file(mut self) -> Start {
        self.cmd.env("BERTH_FILE", &self.file);
        self
    }

    /// Follow a repository: `source` names it (`--git URL`, `--git-url-file F`, or
    /// nothing when `BERTH_GIT` does), on branch `main`, desired state in
    /// `desired-state/`, with the project's `host/` directory (made here) as
    /// `--host-dir`.
    pub fn git(mut self, source: &[&str]) -> Start {
        let host = self.dir.join("host");
        std::fs::create_dir_all(&host).unwrap();
        self.cmd
            .args(source)
            .args(["--branch", "main", "--path", "desired-state"])
            .args(["--host-dir", host.to_str().unwrap()]);
        self
    }

    /// More arguments.
    pub fn args(mut self, args: &[&str]) -> Start {
        self.cmd.args(args);
        self
    }

    /// More environment (set last: it may override the state and log level).
    pub fn env(mut self, env: &[(&str, &str)]) -> Start {
        self.cmd.envs(env.iter().copied());
        self
    }

    /// Ready once `path` answers 200 (`/healthz` when the desired state cannot be read
    /// yet), within `within`.
    pub fn ready(mut self, path: &'static str, within: Duration) -> Start {
        self.ready = path;
        self.within = within;
        self
    }

    /// Run under RLIMIT_NOFILE `n` (as the unit's `LimitNOFILE=` sets it).
    pub fn nofile(mut self, n: u64) -> Start {
        self.nofile = Some(n);
        self
    }

    /// Spawn it and wait until it is ready.
    pub fn start(mut self) -> Daemon {
        let file = std::fs::File::create(&self.log).unwrap();
        self.cmd
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null());
        if let Some(n) = self.nofile {
            let limit = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit is async-signal-safe; it only lowers the child's own limit.
            unsafe {
                self.cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let d = Daemon {
            child: self.cmd.spawn().unwrap(),
            port: self.port,
            log: self.log,
        };
        wait_for(
            &format!("the daemon to answer {}", self.ready),
            self.within,
            || d.get(self.ready).0 == 200,
        );
        d
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
