//! End-to-end: a commit reaches only its own tree and `--host-dir` (docs/design.md §12),
//! with a real git repository on the local disk, `berth run --git` and the real Docker
//! engine.
//!
//! A hostile repository pushes, one after the other: a bind of the Docker socket, of `/`
//! and of `../../../..` past the host directory; a committed symlink out of the tree used
//! as a bind, inside a bound directory and as an `env_file`; `build.context = "/"`;
//! `data_dirs` through a symlink; `${HOME}` from the daemon's environment. Each is refused
//! with its commit and `FILE:LINE:COL` in status while the deployed commit runs on (the
//! same container). Then a daemon with the operator's grants (`--allow-host-path`,
//! `--pass-env`) deploys the same commits: the tip first, then each pushed again; `/`
//! and `../../../..` are shown by a `..` that lands in a granted directory, and the build
//! by a context in one (granting `/` proves nothing and hashing it takes long).

mod common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::time::Duration;

use common::daemon::Daemon;
use common::git::{Remote, git};
use common::{Project, docker, wait_for};

/// The desired state; each case fills in `{env}`, `{volumes}`, `{service}` (line 14) and
/// `{tail}`, so that every case's lines before 14 stay where they are.
const STACK: &str = r#"[project]
name = "{project}"
env_file = "../.env"

[rollout]
healthy_deadline = "8s"
min_healthy_time = "300ms"

[services.web]
image = "{image}"
environment = { GREETING = "${GREETING}"{env} }
volumes = ["../config/web.conf:/etc/web.conf:ro"{volumes}]
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }
{service}
{tail}
"#;

/// One commit of the hostile repository.
#[derive(Default, Clone)]
struct Case {
    subject: &'static str,
    env: String,
    volumes: String,
    service: String,
    tail: String,
    /// Built from a context instead of the fixture image.
    built: bool,
    /// What the refusal says after `FILE:LINE:COL: `, and the text its location points
    /// at (the first place in the file it occurs).
    refusal: String,
    at: String,
}

impl Case {
    fn toml(&self, project: &str) -> String {
        let image = if self.built {
            built_image(project)
        } else {
            common::FIXTURE.to_string()
        };
        STACK
            .replace("{project}", project)
            .replace("{image}", &image)
            .replace("{env}", &self.env)
            .replace("{volumes}", &self.volumes)
            .replace("{service}", &self.service)
            .replace("{tail}", &self.tail)
    }

    /// `desired-state/stack.toml:LINE:COL` of `self.at` in the file.
    fn location(&self, project: &str) -> String {
        let text = self.toml(project);
        let offset = text
            .find(&self.at)
            .expect("the located text is in the file");
        let line = text[..offset].matches('\n').count() + 1;
        let col = offset - text[..offset].rfind('\n').map_or(0, |i| i + 1) + 1;
        format!("desired-state/stack.toml:{line}:{col}")
    }
}

fn built_image(project: &str) -> String {
    format!("{project}:built")
}

/// The hostile repository: its clone holds the hostile symlinks from the first commit
/// on (a symlink nothing uses keeps no commit from deploying).
fn hostile_remote(p: &Project, outside: &Path) -> Remote {
    let remote = Remote::new(p);
    let work = &remote.work;
    remote.write("config/web.conf", "v1\n");
    symlink(outside.join("secret.conf"), work.join("config/app.conf")).unwrap();
    symlink(outside.join("app.env"), work.join("config/app.env")).unwrap();
    symlink(outside.join("data"), work.join("data")).unwrap();
    remote
}

/// This file's commits: one a case.
impl Remote {
    /// Commit the case's desired state and push; the commit id.
    fn push(&self, case: &Case) -> String {
        self.write("desired-state/stack.toml", &case.toml(&self.project));
        self.commit_and_push(case.subject, false)
    }
}

/// The daemon's `HOME`: what `${HOME}` would read.
const DAEMON_HOME: &str = "/home/e2e-trust";

/// This file's daemons: following `url`, polling every 300 ms, with `HOME` set.
impl Daemon {
    fn start(p: &Project, url: &str, extra: &[&str]) -> Daemon {
        Daemon::build(p)
            .git(&["--git", url])
            .args(&["--poll", "300ms"])
            .args(extra)
            .env(&[("HOME", DAEMON_HOME)])
            .start()
    }

    fn reason(&self) -> String {
        self.status()["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Removes the image the build case made (and only it).
struct BuiltImage(String);

impl Drop for BuiltImage {
    fn drop(&mut self) {
        let _ = docker(&["rmi", "--force", &self.0]);
    }
}

/// What a granted commit's deploy must show.
type Check = Box<dyn Fn(&Project)>;

fn mounts(p: &Project) -> String {
    p.inspect(
        "web",
        "{{range .Mounts}}{{.Source}}={{.Destination}} {{end}}",
    )
}

/// `path` with every symlink resolved, as berth names it.
fn real(path: &Path) -> String {
    path.canonicalize().unwrap().display().to_string()
}

#[test]
fn a_commit_reaches_only_its_tree_and_the_host_dir_until_the_operator_grants_more() {
    let p = Project::new("trust-commit");
    let _image = BuiltImage(built_image(&p.name));
    let host = p.dir.path().join("host");
    let outside = p.dir.path().join("outside");
    for dir in [&host, &outside.join("data"), &outside.join("ctx")] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let private = |path: &Path, text: &str| {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    private(&host.join(".env"), "GREETING=hello-from-the-host\n");
    private(&outside.join("app.env"), "FROM_OUTSIDE=outside-env\n");
    std::fs::write(outside.join("secret.conf"), "a host file\n").unwrap();
    std::fs::set_permissions(outside.join("data"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        outside.join("ctx/Dockerfile"),
        format!("FROM {}\nLABEL e2e.trust=built\n", common::FIXTURE),
    )
    .unwrap();
    // The premises: the socket is there, and the daemon's HOME is not in the env file.
    let socket = Path::new("/var/run/docker.sock");
    assert!(socket.exists(), "the Docker socket is not at {socket:?}");
    let outside_real = real(&outside);
    let host_shown = host.display().to_string();

    let remote = hostile_remote(&p, &outside);
    let url = remote.bare.to_str().unwrap().to_string();
    let good = Case {
        subject: "web, its own config",
        ..Case::default()
    };
    let a = remote.push(&good);

    let outside_of = |what: &str, shown: &str, resolved: &str| {
        let shown = if shown == resolved {
            format!("{what} {shown} is")
        } else {
            format!("{what} {shown} resolves to {resolved},")
        };
        format!(
            "{shown} outside the commit's tree and --host-dir {host_shown}; the operator can allow it with --allow-host-path {resolved}"
        )
    };
    let socket_real = real(socket);
    let hostile = vec![
        Case {
            subject: "bind the Docker socket",
            volumes: r#", "/var/run/docker.sock:/var/run/docker.sock""#.into(),
            refusal: outside_of("bind source", "/var/run/docker.sock", &socket_real),
            at: r#""/var/run/docker.sock:"#.into(),
            ..Case::default()
        },
        Case {
            subject: "bind the host's root",
            volumes: r#", "/:/host:ro""#.into(),
            refusal: outside_of("bind source", "/", "/"),
            at: r#""/:/host:ro""#.into(),
            ..Case::default()
        },
        Case {
            subject: "bind past the host directory",
            volumes: r#", "../../../..:/up:ro""#.into(),
            // From desired-state/, the last three `..` leave the tree, and so the host
            // directory, by three levels.
            refusal: {
                let up = host.ancestors().nth(3).unwrap_or(Path::new("/"));
                outside_of("bind source", &up.display().to_string(), &real(up))
            },
            at: r#""../../../..:"#.into(),
            ..Case::default()
        },
        Case {
            subject: "bind a symlink out of the tree",
            volumes: r#", "../config/app.conf:/etc/app.conf:ro""#.into(),
            refusal: outside_of(
                "bind source",
                "config/app.conf",
                &format!("{outside_real}/secret.conf"),
            ),
            at: r#""../config/app.conf:"#.into(),
            ..Case::default()
        },
        Case {
            subject: "bind a directory holding a symlink out of the tree",
            volumes: r#", "../config:/config:ro""#.into(),
            refusal: "bind source config holds the symlink config/app.".into(),
            at: r#""../config:/config:ro""#.into(),
            ..Case::default()
        },
        Case {
            subject: "an env file through a symlink out of the tree",
            service: r#"env_file = "../config/app.env""#.into(),
            refusal: outside_of(
                "env file",
                "config/app.env",
                &format!("{outside_real}/app.env"),
            ),
            at: r#""../config/app.env""#.into(),
            ..Case::default()
        },
        Case {
            subject: "build from the host's root",
            service: r#"build = { context = "/" }"#.into(),
            built: true,
            refusal: outside_of("build context", "/", "/"),
            at: r#""/" }"#.into(),
            ..Case::default()
        },
        Case {
            subject: "a data directory through a symlink",
            tail: "[preflight]\ndata_dirs = { \"../data\" = \"755\" }".into(),
            refusal: outside_of("data directory", "data", &format!("{outside_real}/data")),
            at: r#""../data""#.into(),
            ..Case::default()
        },
        Case {
            subject: "read the daemon's HOME",
            env: r#", HOME_SEEN = "${HOME}""#.into(),
            refusal: "${HOME} is not passed to the commit".into(),
            at: "${HOME}".into(),
            ..Case::default()
        },
    ];

    // Phase 1: no grants. The good commit deploys; each hostile one is refused.
    let d = Daemon::start(&p, &url, &[]);
    wait_for("the good commit deployed", Duration::from_secs(60), || {
        d.deployed(&a)
    });
    let web = p.id("web").unwrap();
    assert_eq!(p.history().len(), 1);
    for case in &hostile {
        let c = remote.push(case);
        wait_for(
            &format!("{:?} refused", case.subject),
            Duration::from_secs(30),
            || d.reason().contains(&c[..12]),
        );
        let reason = d.reason();
        eprintln!("{}: {reason}", case.subject);
        let expected = format!("{}: {}", case.location(&p.name), case.refusal);
        assert!(
            reason.starts_with("invalid: commit ")
                && reason.contains(&format!("{} ({})", &c[..12], case.subject))
                && reason.contains(&expected),
            "{:?}: expected {expected:?} in {reason:?}",
            case.subject
        );
        assert_eq!(d.status()["status"], "blocked");
        assert_eq!(d.status()["git"]["deployed"], a.as_str());
        assert_eq!(
            p.id("web").as_deref(),
            Some(web.as_str()),
            "{:?} touched the deployed commit's container",
            case.subject
        );
        assert_eq!(p.inspect("web", "{{.State.Running}}"), "true");
    }
    let text = p.berth(&["status"]).stdout;
    assert!(
        text.contains(&hostile.last().unwrap().refusal),
        "berth status shows the refusal: {text}"
    );
    assert_eq!(p.history().len(), 1, "a refused commit made a generation");
    // Nothing was created where the data directory's symlink points, nor copied from
    // outside the tree.
    assert_eq!(mounts(&p).matches(&outside_real).count(), 0);
    drop(d);

    // Phase 2: the operator grants the socket, the outside directory and HOME.
    let d = Daemon::start(
        &p,
        &url,
        &[
            "--allow-host-path",
            "/var/run/docker.sock",
            "--allow-host-path",
            outside.to_str().unwrap(),
            "--pass-env",
            "HOME",
        ],
    );
    let tip = git(&remote.work, &["rev-parse", "HEAD"]);
    wait_for("the HOME commit deployed", Duration::from_secs(60), || {
        d.deployed(&tip)
    });
    assert!(
        p.environment("web")
            .contains(&format!("HOME_SEEN={DAEMON_HOME}")),
        "{}",
        p.environment("web")
    );
    let granted: Vec<(Case, Check)> = vec![
        (
            hostile[0].clone(),
            Box::new(|p: &Project| {
                assert!(mounts(p).contains("/var/run/docker.sock=/var/run/docker.sock"))
            }),
        ),
        (
            Case {
                subject: "bind past the host directory, into a granted one",
                volumes: r#", "../../outside:/outside:ro""#.into(),
                ..Case::default()
            },
            Box::new(|p: &Project| {
                let m = mounts(p);
                assert!(
                    m.contains(&format!(
                        "{}=/outside",
                        p.dir.path().join("outside").display()
                    )),
                    "{m}"
                )
            }),
        ),
        (
            hostile[3].clone(),
            Box::new(|p: &Project| {
                // Bound where the symlink lands, not through the commit's tree.
                let m = mounts(p);
                let file = real(&p.dir.path().join("outside/secret.conf"));
                assert!(m.contains(&format!("{file}=/etc/app.conf")), "{m}")
            }),
        ),
        (hostile[4].clone(), Box::new(|_: &Project| {})),
        (
            hostile[5].clone(),
            Box::new(|p: &Project| {
                assert!(
                    p.environment("web").contains("FROM_OUTSIDE=outside-env"),
                    "{}",
                    p.environment("web")
                )
            }),
        ),
        (
            Case {
                subject: "build from a granted context",
                service: format!(
                    r#"build = {{ context = "{}" }}"#,
                    p.dir.path().join("outside/ctx").display()
                ),
                built: true,
                ..Case::default()
            },
            Box::new(|p: &Project| {
                // The image's own label: the container runs what the context built.
                assert_eq!(
                    p.inspect("web", r#"{{index .Config.Labels "e2e.trust"}}"#),
                    "built"
                )
            }),
        ),
        (hostile[7].clone(), Box::new(|_: &Project| {})),
    ];
    for (case, check) in &granted {
        let c = remote.push(case);
        wait_for(
            &format!("{:?} deployed with the grants", case.subject),
            Duration::from_secs(90),
            || d.deployed(&c),
        );
        check(&p);
    }
}
