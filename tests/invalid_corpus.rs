//! The invalid desired-state corpus: every file in `tests/invalid/` must be rejected by
//! `berth validate`, `berth plan` and `berth apply` with exit code 2 and a
//! `FILE:LINE:COL: message` line pointing at the mistake, and nothing may change: no state
//! store is created and Docker's containers, networks and volumes are as they were.
//!
//! Each corpus file starts with `# expect: LINE:COL: <substring of the message>`. A
//! subdirectory is one case that spans several files: berth reads the whole directory, and
//! exactly one of its files carries the `# expect:` line (the file the error is in).
//!
//! Env-file permission cases are generated at run time, because git does not keep modes.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::docker;

/// Variables the corpus uses in `${...}` and that must therefore be unset.
const UNSET_VARS: &[&str] = &[
    "BERTH_TEST_SURELY_UNSET_VAR",
    "BERTH_TEST_SURELY_UNSET_PASSWORD",
    "BERTH_TEST_ENV_FILE_PASSWORD",
];

const MIN_CASES: usize = 25;

/// One invalid desired state and the diagnostic it must produce.
struct Case {
    /// What is passed to `-f`, relative to the package root: a file or a directory.
    target: PathBuf,
    /// The file the diagnostic must name (the target itself, or a file inside it).
    file: PathBuf,
    line: usize,
    col: usize,
    message: String,
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run berth from the package root with a clean environment for the variables it reads.
fn berth(args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.args(args)
        .current_dir(root())
        .env_remove("BERTH_STATE")
        .env_remove("BERTH_FILE");
    for var in UNSET_VARS {
        cmd.env_remove(var);
    }
    let out = cmd.output().expect("run the berth binary");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Parse `# expect: LINE:COL: message` from the first line of `text`.
fn parse_expect(text: &str) -> Option<(usize, usize, String)> {
    let rest = text.lines().next()?.strip_prefix("# expect:")?.trim_start();
    let mut parts = rest.splitn(3, ':');
    let line = parts.next()?.trim().parse().ok()?;
    let col = parts.next()?.trim().parse().ok()?;
    let message = parts.next()?.trim().to_string();
    (!message.is_empty()).then_some((line, col, message))
}

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

/// Every case in `tests/invalid/`; a file or directory without a usable `# expect:` line
/// is a corpus error and fails the test rather than being skipped.
fn corpus() -> Vec<Case> {
    let base = Path::new("tests/invalid");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(root().join(base))
        .expect("tests/invalid exists")
        .map(|e| base.join(e.expect("directory entry").file_name()))
        .collect();
    entries.sort();
    let mut cases = Vec::new();
    let mut problems = Vec::new();
    for target in entries {
        let abs = root().join(&target);
        let candidates = if abs.is_dir() {
            toml_files(&abs)
                .into_iter()
                .map(|p| target.join(p.file_name().unwrap()))
                .collect()
        } else if target.extension().is_some_and(|x| x == "toml") {
            vec![target.clone()]
        } else {
            problems.push(format!(
                "{}: not a .toml file or a directory",
                target.display()
            ));
            continue;
        };
        let expects: Vec<(PathBuf, (usize, usize, String))> = candidates
            .into_iter()
            .filter_map(|f| {
                // Lossy: one case is a file that is not UTF-8 on purpose.
                let text =
                    String::from_utf8_lossy(&std::fs::read(root().join(&f)).unwrap()).into_owned();
                parse_expect(&text).map(|e| (f, e))
            })
            .collect();
        match <[_; 1]>::try_from(expects) {
            Ok([(file, (line, col, message))]) => cases.push(Case {
                target,
                file,
                line,
                col,
                message,
            }),
            Err(v) => problems.push(format!(
                "{}: needs exactly one `# expect: LINE:COL: message` first line, found {}",
                target.display(),
                v.len()
            )),
        }
    }
    assert!(problems.is_empty(), "bad corpus:\n{}", problems.join("\n"));
    cases
}

/// Does `stderr` hold a diagnostic `FILE:LINE:COL: ...message...`?
fn has_diagnostic(stderr: &str, file: &Path, line: usize, col: usize, message: &str) -> bool {
    let prefix = format!("{}:{line}:{col}: ", file.display());
    stderr
        .lines()
        .any(|l| l.starts_with(&prefix) && l[prefix.len()..].contains(message))
}

/// The containers (with their state), networks and volumes berth could have made for the
/// corpus, each as sorted lines: every corpus file names its project `invalid-corpus...`,
/// so anything berth created for one carries that name (or that `berth.project` label).
/// Other tests' objects on the same engine are left out: they come and go on their own.
fn docker_snapshot() -> BTreeSet<String> {
    let info = docker(&["info"]);
    assert!(
        info.status.success(),
        "this test needs a running Docker engine to prove berth leaves it untouched, \
         but `docker info` failed:\n{}",
        String::from_utf8_lossy(&info.stderr)
    );
    let mut snapshot = BTreeSet::new();
    for (kind, args) in [
        (
            "container",
            &[
                "ps",
                "-a",
                "--format",
                "{{.ID}} {{.Names}} {{.State}} {{.Labels}}",
            ][..],
        ),
        (
            "network",
            &["network", "ls", "--format", "{{.ID}} {{.Name}} {{.Labels}}"][..],
        ),
        (
            "volume",
            &["volume", "ls", "--format", "{{.Name}} {{.Labels}}"][..],
        ),
    ] {
        let out = docker(args);
        assert!(
            out.status.success(),
            "`docker {}` failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.to_lowercase().contains("invalid-corpus") {
                snapshot.insert(format!("{kind} {}", line.trim()));
            }
        }
    }
    snapshot
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

/// Check one run of berth on an invalid case; returns what was wrong, if anything.
fn check_rejected(what: &str, run: &Run, case: &Case) -> Vec<String> {
    let mut wrong = Vec::new();
    if run.code != Some(2) {
        wrong.push(format!("{what}: exit {:?}, expected 2", run.code));
    }
    if !has_diagnostic(&run.stderr, &case.file, case.line, case.col, &case.message) {
        wrong.push(format!(
            "{what}: no line `{}:{}:{}: ...{}...`",
            case.file.display(),
            case.line,
            case.col,
            case.message
        ));
    }
    if !wrong.is_empty() {
        wrong.push(format!(
            "stdout:\n{}  stderr:\n{}",
            indent(&run.stdout),
            indent(&run.stderr)
        ));
    }
    wrong
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

#[test]
fn every_invalid_file_exits_2_with_its_location_and_changes_nothing() {
    let cases = corpus();
    assert!(
        cases.len() >= MIN_CASES,
        "only {} corpus cases in tests/invalid/, expected at least {MIN_CASES}",
        cases.len()
    );
    let before = docker_snapshot();

    let mut failures = Vec::new();
    for case in &cases {
        let target = case.target.to_str().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state.db");
        let state_arg = state.to_str().unwrap();
        let mut wrong = Vec::new();
        for (what, args) in [
            ("validate", vec!["validate", "-f", target]),
            ("plan", vec!["plan", "-f", target, "--state", state_arg]),
            ("apply", vec!["apply", "-f", target, "--state", state_arg]),
        ] {
            wrong.extend(check_rejected(what, &berth(&args), case));
        }
        if state.exists() || !is_empty_dir(tmp.path()) {
            wrong.push(format!(
                "the state store directory {} is not empty after a rejected apply",
                tmp.path().display()
            ));
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{}:\n  {}",
                case.target.display(),
                wrong.join("\n  ")
            ));
        }
    }

    let after = docker_snapshot();
    if before != after {
        let gone: Vec<_> = before.difference(&after).collect();
        let new: Vec<_> = after.difference(&before).collect();
        failures.push(format!(
            "Docker objects of the corpus's projects changed while berth rejected it\n  \
             gone: {gone:?}\n  new: {new:?}"
        ));
    }
    assert!(
        failures.is_empty(),
        "{} of {} invalid cases misbehaved:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn the_corpus_expect_lines_parse() {
    assert_eq!(
        parse_expect("# expect: 7:15: dependency cycle: a -> b -> a\n[project]"),
        Some((7, 15, "dependency cycle: a -> b -> a".to_string()))
    );
    assert_eq!(parse_expect("# expect: 7:15:\n"), None);
    assert_eq!(parse_expect("[project]\n"), None);
}

/// A project with one service whose env file (and optionally the project's) has `mode`.
struct EnvFileProject {
    dir: tempfile::TempDir,
}

const SECRET: &str = "hunter2-berth-test-secret";

impl EnvFileProject {
    /// `at_project`: the env file is named by `[project]` (and feeds interpolation);
    /// otherwise by the service.
    fn new(mode: u32, at_project: bool) -> EnvFileProject {
        let dir = tempfile::tempdir().unwrap();
        let toml = if at_project {
            "[project]\n\
             name = \"invalid-corpus-env\"\n\
             env_file = \"app.env\"\n\
             \n\
             [services.web]\n\
             image = \"nginx:alpine\"\n\
             environment = { PASSWORD = \"${BERTH_TEST_ENV_FILE_PASSWORD}\" }\n"
        } else {
            "[project]\n\
             name = \"invalid-corpus-env\"\n\
             \n\
             [services.web]\n\
             image = \"nginx:alpine\"\n\
             env_file = \"app.env\"\n"
        };
        std::fs::write(dir.path().join("berth.toml"), toml).unwrap();
        let env = dir.path().join("app.env");
        std::fs::write(&env, format!("BERTH_TEST_ENV_FILE_PASSWORD={SECRET}\n")).unwrap();
        std::fs::set_permissions(&env, std::fs::Permissions::from_mode(mode)).unwrap();
        assert_eq!(
            std::fs::metadata(&env).unwrap().permissions().mode() & 0o777,
            mode,
            "could not give the env file mode {mode:03o}"
        );
        EnvFileProject { dir }
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("berth.toml")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }
}

#[test]
fn env_file_readable_by_group_or_others_is_rejected_at_the_env_file_key() {
    let mut failures = Vec::new();
    for (mode, at_project) in [
        (0o644, false),
        (0o640, false),
        (0o604, false),
        (0o644, true),
    ] {
        let p = EnvFileProject::new(mode, at_project);
        // `env_file = "app.env"`: line 3 in [project], line 6 in the service; the value at col 12.
        let case = Case {
            target: p.file(),
            file: p.file(),
            line: if at_project { 3 } else { 6 },
            col: 12,
            message: format!("has mode {mode:03o}"),
        };
        let file = p.file();
        let state = p.state();
        let (file, state) = (file.to_str().unwrap(), state.to_str().unwrap());
        let mut wrong = Vec::new();
        for (what, args) in [
            ("validate", vec!["validate", "-f", file]),
            ("apply", vec!["apply", "-f", file, "--state", state]),
        ] {
            let run = berth(&args);
            wrong.extend(check_rejected(what, &run, &case));
            if run.stderr.contains(SECRET) || run.stdout.contains(SECRET) {
                wrong.push(format!("{what}: printed the env file's secret value"));
            }
        }
        if p.state().exists() {
            wrong.push("apply created the state store".into());
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "mode {mode:03o}, env_file in {}:\n  {}",
                if at_project {
                    "[project]"
                } else {
                    "the service"
                },
                wrong.join("\n  ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn env_file_private_to_its_owner_is_accepted() {
    for at_project in [false, true] {
        let p = EnvFileProject::new(0o600, at_project);
        let run = berth(&["validate", "-f", p.file().to_str().unwrap()]);
        assert_eq!(
            run.code,
            Some(0),
            "env_file in {} with mode 600 should be valid\nstdout:\n{}stderr:\n{}",
            if at_project {
                "[project]"
            } else {
                "the service"
            },
            run.stdout,
            run.stderr
        );
        assert!(
            !run.stdout.contains(SECRET) && !run.stderr.contains(SECRET),
            "validate printed the env file's secret value"
        );
    }
}
