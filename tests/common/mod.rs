//! Harness for end-to-end tests against the real Docker engine.
//!
//! Each test gets its own project name, temp dir and state store; dropping the
//! [`Project`] removes the containers, networks and volumes labelled with that project
//! (and only those), so tests never touch anything they did not make.

#![allow(dead_code)]

pub mod backup;
pub mod daemon;
pub mod engine;
pub mod fake;
pub mod git;
pub mod systemd;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const FIXTURE: &str = "berth-fixture:test";

/// The smallest stack: one fixture service, `web`, at VERSION 1, healthy over http, with
/// a 10 s deadline and a 300 ms window. The daemon tests deploy it and edit it.
pub const ONE_WEB: &str = r#"
[project]
name = "{project}"
[rollout]
healthy_deadline = "10s"
min_healthy_time = "300ms"
[services.web]
image = "berth-fixture:test"
environment = { VERSION = "1" }
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }
"#;

pub struct Project {
    pub name: String,
    pub dir: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Project {
    pub fn new(test: &str) -> Project {
        require_images(&[FIXTURE], "scripts/build-fixture.sh");
        Project::bare(test)
    }

    /// A project that needs no particular image.
    pub fn bare(test: &str) -> Project {
        let name = format!("e2e-{test}-{}", std::process::id());
        Project {
            name,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn file(&self) -> PathBuf {
        self.dir.path().join("berth.toml")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    /// Write the desired state; `{project}` in the text is replaced by the project name.
    pub fn write(&self, toml: &str) {
        std::fs::write(self.file(), toml.replace("{project}", &self.name)).unwrap();
    }

    pub fn berth(&self, args: &[&str]) -> Run {
        self.berth_env(args, &[])
    }

    /// Run berth with extra environment variables.
    pub fn berth_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = self.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let run = Run::from(cmd.output().unwrap());
        eprintln!(
            "$ berth {}\n{}{}(exit {})",
            args.join(" "),
            run.stdout,
            run.stderr,
            run.code
        );
        run
    }

    /// `berth ARGS` with the project's state and file, not started yet.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.args(args)
            .env("BERTH_STATE", self.state())
            .env("BERTH_FILE", self.file());
        cmd
    }

    /// `berth ARGS` started in the background (stdout and stderr piped), for a test
    /// that acts while it runs: signals it, reads its output as it comes, races it.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn container(&self, service: &str) -> String {
        format!("{}-{service}", self.name)
    }

    /// Container ID of a service's container, or None.
    pub fn id(&self, service: &str) -> Option<String> {
        let out = docker(&["inspect", "-f", "{{.Id}}", &self.container(service)]);
        out.status.success().then(|| text(&out).trim().to_string())
    }

    pub fn inspect(&self, service: &str, format: &str) -> String {
        text(&docker(&[
            "inspect",
            "-f",
            format,
            &self.container(service),
        ]))
        .trim()
        .to_string()
    }

    /// The fixture's own log timestamp (unix ms) of an event such as `start` or `ready`.
    pub fn fixture_event_ms(&self, service: &str, event: &str) -> Option<i64> {
        let out = docker(&["logs", &self.container(service)]);
        let log = text(&out);
        log.lines()
            .rfind(|l| l.contains(&format!("event={event}")))
            .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("ts_ms=")))
            .and_then(|v| v.parse().ok())
    }

    /// The service's container environment, `K=V` entries each followed by a space.
    pub fn environment(&self, service: &str) -> String {
        self.inspect(service, "{{range .Config.Env}}{{.}} {{end}}")
    }

    /// `docker ps ARGS` over the project's containers (by their `berth.project` label),
    /// one line per container as `format` (a Go template) prints it.
    pub fn ps(&self, args: &[&str], format: &str) -> Vec<String> {
        let label = format!("label=berth.project={}", self.name);
        let mut cmd = vec!["ps"];
        cmd.extend_from_slice(args);
        cmd.extend_from_slice(&["--filter", &label, "--format", format]);
        text(&docker(&cmd)).lines().map(str::to_string).collect()
    }

    /// The names of every container of the project, running or not, sorted.
    pub fn containers(&self) -> Vec<String> {
        let mut v = self.ps(&["-a"], "{{.Names}}");
        v.sort();
        v
    }

    /// Every container of the project, with its state: `name state` lines.
    pub fn states(&self) -> Vec<String> {
        self.ps(&["-a"], "{{.Names}} {{.State}}")
    }

    /// `berth history --json`: the generations, oldest first; fails the test when berth
    /// does.
    pub fn history(&self) -> Vec<serde_json::Value> {
        let run = self.berth(&["history", "--json"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        serde_json::from_str(&run.stdout).unwrap()
    }

    /// Replace the desired state the way editors do, as [`Project::edit_file`] does.
    pub fn edit(&self, text: &str) {
        self.edit_file(&self.file(), text);
    }

    /// Replace `file` the way editors do: write a temporary file beside it, rename it
    /// over (one event for a watcher, never a half-written file). `{project}` in the text
    /// is replaced by the project name.
    pub fn edit_file(&self, file: &Path, text: &str) {
        let name = file.file_name().unwrap().to_str().unwrap();
        let tmp = file.with_file_name(format!(".{name}.tmp"));
        std::fs::write(&tmp, text.replace("{project}", &self.name)).unwrap();
        std::fs::rename(&tmp, file).unwrap();
    }
}

impl Project {
    /// One SQL command through psql in the project's `postgres` container, as user
    /// `assistant` on `database`; its unaligned output, trimmed. Fails the test when psql
    /// does.
    pub fn psql(&self, database: &str, query: &str) -> String {
        let out = docker(&[
            "exec",
            &self.container("postgres"),
            "psql",
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "assistant",
            "-d",
            database,
            "-c",
            query,
        ]);
        assert!(
            out.status.success(),
            "psql {query:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        text(&out).trim().to_string()
    }

    /// Whether `public.<table>` exists in the `assistant` database.
    pub fn table_exists(&self, table: &str) -> bool {
        self.psql(
            "assistant",
            &format!("SELECT to_regclass('public.{table}') IS NOT NULL"),
        ) == "t"
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let label = format!("label=berth.project={}", self.name);
        let ids = text(&docker(&["ps", "-aq", "--filter", &label]));
        for id in ids.split_whitespace() {
            docker(&["rm", "-f", id]);
        }
        for kind in ["network", "volume"] {
            let ids = text(&docker(&[kind, "ls", "-q", "--filter", &label]));
            for id in ids.split_whitespace() {
                docker(&[kind, "rm", id]);
            }
        }
    }
}

/// A file's content in a named volume, copied out through a container that never starts
/// (the fixture image has no shell or cat). None when the file is not there.
pub fn read_volume_file(volume: &str, path: &str) -> Option<String> {
    let reader = text(&docker(&[
        "create",
        "-v",
        &format!("{volume}:/data"),
        FIXTURE,
    ]))
    .trim()
    .to_string();
    let tar = docker(&["cp", &format!("{reader}:/data/{path}"), "-"]);
    docker(&["rm", "-f", &reader]);
    // `docker cp ... -` writes a tar stream; the file's bytes sit in it verbatim.
    tar.status.success().then(|| text(&tar))
}

/// Fail with the command that builds them when any of these images is missing.
pub fn require_images(images: &[&str], how: &str) {
    for image in images {
        assert!(
            docker(&["image", "inspect", image]).status.success(),
            "the image {image} is missing: run {how} (or .ci/run)"
        );
    }
}

/// A TCP port nothing listens on right now.
/// A port nobody listens on now, and one this test process has not handed out before:
/// the kernel may give the same free port to two binds in a row, and two services of one
/// stack must not be given the same host port.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("0.0.0.0:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if GIVEN.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// Wait until `cond` holds (checked every 100 ms), or fail the test after `limit`.
pub fn wait_for(what: &str, limit: Duration, cond: impl FnMut() -> bool) {
    wait_every(what, limit, Duration::from_millis(100), cond);
}

/// [`wait_for`], checking every `every`: for a condition that is itself slow to ask
/// (a `docker exec` into a container).
pub fn wait_every(what: &str, limit: Duration, every: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(every);
    }
}

/// The repository's own `migrations/` (sqlx files 0001..0003), which the migration tests
/// apply or copy.
pub fn repo_migrations() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations")
}

/// Copy the repository's migrations into `dir` (made when missing), for a test that adds
/// to them or edits them.
pub fn copy_repo_migrations(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for f in std::fs::read_dir(repo_migrations()).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dir.join(f.file_name())).unwrap();
    }
}

/// A child process killed (and reaped) when dropped: on every path out of a test, also a
/// failing assertion, so nothing it started outlives the test. It derefs to the child.
pub struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    pub fn new(child: Child) -> KillOnDrop {
        KillOnDrop(Some(child))
    }

    /// The child, no longer killed on drop: for a test that waits for it to end.
    pub fn take(mut self) -> Child {
        self.0.take().unwrap()
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().unwrap()
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI runs")
}

pub fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Debian's `docker-registry` (the CNCF distribution registry), started on 127.0.0.1 with
/// a free port and temporary storage for one test, and killed when dropped. Docker allows
/// plain-HTTP registries on 127.0.0.0/8, so the engine pushes and pulls without TLS.
/// Dropping it also removes every image reference the test made through it.
pub struct Registry {
    pub port: u16,
    child: std::process::Child,
    dir: tempfile::TempDir,
    /// Image references tagged, pushed or pulled through this registry, and image IDs
    /// built for it: removed on drop.
    made: std::cell::RefCell<Vec<String>>,
    /// With auth: the Docker config directory the test logged in with.
    pub docker_config: Option<PathBuf>,
}

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

impl Registry {
    /// An open registry.
    pub fn start() -> Registry {
        Registry::start_with(None)
    }

    /// A registry that wants `user`/`password` (htpasswd, bcrypt). The test's own Docker
    /// config (for `docker push`) is logged in; berth gets it only through
    /// `DOCKER_CONFIG` when a test says so.
    pub fn start_with_auth(user: &str, password: &str) -> Registry {
        Registry::start_with(Some((user, password)))
    }

    fn start_with(auth: Option<(&str, &str)>) -> Registry {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: apt-get install docker-registry apache2-utils (or run .ci/run)"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = auth {
            // bcrypt is the only hash the registry's htpasswd accepts.
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd runs (apt-get install apache2-utils)");
            assert!(out.status.success(), "htpasswd failed");
            std::fs::write(dir.path().join("htpasswd"), &out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry starts");
        let mut r = Registry {
            port,
            child,
            dir,
            made: Default::default(),
            docker_config: None,
        };
        r.wait_until_listening();
        if let Some((user, password)) = auth {
            let config = r.dir.path().join("docker-config");
            std::fs::create_dir(&config).unwrap();
            let mut login = Command::new("docker")
                .arg("--config")
                .arg(&config)
                .args(["login", "-u", user, "--password-stdin", &r.host()])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            use std::io::Write;
            login
                .stdin
                .take()
                .unwrap()
                .write_all(password.as_bytes())
                .unwrap();
            assert!(login.wait().unwrap().success(), "docker login failed");
            r.docker_config = Some(config);
        }
        r
    }

    fn wait_until_listening(&self) {
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "the registry did not listen on {}: {}",
            self.port,
            std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
        );
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT/name`
    pub fn reference(&self, name: &str) -> String {
        format!("{}/{name}", self.host())
    }

    /// The docker CLI, with this registry's logged-in config when it has auth.
    pub fn docker(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("docker");
        if let Some(c) = &self.docker_config {
            cmd.arg("--config").arg(c);
        }
        cmd.args(args).output().expect("docker CLI runs")
    }

    /// Tag a local image as `reference` and push it there (moving the tag in the
    /// registry), then remove the local tag unless `keep_local`.
    pub fn push(&self, local: &str, reference: &str, keep_local: bool) {
        self.made.borrow_mut().push(reference.to_string());
        assert!(docker(&["tag", local, reference]).status.success());
        let out = self.docker(&["push", reference]);
        assert!(
            out.status.success(),
            "docker push {reference}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if !keep_local {
            docker(&["rmi", reference]);
        }
    }

    /// Build a one-off image `FROM berth-fixture:test` with these Dockerfile lines; its ID.
    pub fn build_variant(&self, lines: &str) -> String {
        let mut child = Command::new("docker")
            .args(["build", "-q", "-"])
            .env("DOCKER_BUILDKIT", "0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("FROM {FIXTURE}\n{lines}\n").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "docker build of a fixture variant");
        let id = text(&out).trim().to_string();
        self.made.borrow_mut().push(id.clone());
        id
    }

    /// Stop serving (the "registry down" case).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
        // References first, with the `repo@digest` references a push or pull leaves,
        // then the IDs of the variants built (untagged by then).
        for r in self.made.borrow().iter().rev() {
            docker(&["rmi", r]);
            if let Some((repo, _tag)) = r.rsplit_once(':').filter(|(repo, _)| repo.contains('/')) {
                let digests = text(&docker(&[
                    "images",
                    "--digests",
                    "--format",
                    "{{.Repository}}@{{.Digest}}",
                    repo,
                ]));
                for d in digests.split_whitespace() {
                    docker(&["rmi", d]);
                }
            }
        }
    }
}

/// The image ID a local reference points at, or None when it is absent.
pub fn image_id(reference: &str) -> Option<String> {
    let out = docker(&["image", "inspect", "-f", "{{.Id}}", reference]);
    out.status.success().then(|| text(&out).trim().to_string())
}
