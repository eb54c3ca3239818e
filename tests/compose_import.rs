//! `berth import` (docs/compose.md): Compose files into a desired-state TOML.
//!
//! - bad input (invalid YAML, a tab indent, a `depends_on` cycle, an unknown top-level
//!   key, a `${VAR:?}` whose variable is unset) exits 2 with `FILE:LINE:COL`, and
//!   nothing is written;
//! - berth's own cases under `tests/compose/cases/` and the real-world corpus under
//!   `tests/compose/corpus/` (its sources in `SOURCES.md`): each one's outcome (imported,
//!   or refused with exit 2 and why) matches its `expected-outcome.txt`; an imported one's
//!   output passes `berth validate` unchanged, and its TOML and report match the golden
//!   files beside it (`expected.toml`, `expected-report.txt`). `BERTH_BLESS=1` writes the
//!   golden files anew. The figures for the corpus are printed.
//!
//! Each case is imported from a copy in a temporary directory (its env files made
//! private, as berth requires of an env file), so the paths in the output are relative
//! and the same on every machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn berth(dir: &Path, args: &[&str]) -> Output {
    // The goldens must not depend on the machine: Compose files interpolate the
    // environment (`${PWD}`, `${HOME}`, `${USER}`), so each run gets the same one.
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PWD", "/srv/compose")
        .env("HOME", "/home/user")
        .env("BERTH_STATE", dir.join("state.db"))
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn bad_compose_files_exit_2_at_their_place_and_write_nothing() {
    let cases = [
        ("invalid-yaml.yml", "4:1: invalid YAML"),
        ("tab-indent.yml", "3:2: invalid YAML: tabs"),
        (
            "depends-on-cycle.yml",
            "8:7: depends_on makes a cycle: a → b → a",
        ),
        (
            "unknown-top-level-key.yml",
            "4:1: unknown top-level key \"service\"",
        ),
        (
            "required-variable-unset.yml",
            "3:12: ${BERTH_TEST_IMPORT_UNSET} is required: set it to the tag",
        ),
    ];
    for (file, expect) in cases {
        let t = tempfile::tempdir().unwrap();
        let src = root().join("tests/compose/bad").join(file);
        let out_dir = t.path().join("out");
        let run = berth(
            t.path(),
            &[
                "import",
                src.to_str().unwrap(),
                "-o",
                out_dir.to_str().unwrap(),
            ],
        );
        let stderr = text(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{file}: {stderr}");
        assert!(
            stderr.contains(&format!("{}:{expect}", src.display())),
            "{file}: expected {expect:?} in {stderr}"
        );
        assert!(!out_dir.exists(), "{file}: something was written");
        assert!(run.stdout.is_empty(), "{file}: {}", text(&run.stdout));
    }
}

/// Copy `dir` (its whole tree) into a temporary directory, env files made private.
fn copy_case(dir: &Path) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let case = t.path().join("case");
    for e in walkdir::WalkDir::new(dir) {
        let e = e.unwrap();
        let to = case.join(e.path().strip_prefix(dir).unwrap());
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
            continue;
        }
        std::fs::copy(e.path(), &to).unwrap();
        let name = to.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".env")
            || name.starts_with(".env")
            || to.parent().is_some_and(|p| p.ends_with("env"))
        {
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    t
}

fn compose_file(dir: &Path) -> Option<PathBuf> {
    [
        "compose.yaml",
        "compose.yml",
        "docker-compose.yml",
        "docker-compose.yaml",
    ]
    .iter()
    .map(|f| dir.join(f))
    .find(|p| p.is_file())
}

struct Imported {
    code: Option<i32>,
    toml: String,
    report: String,
    stderr: String,
    validate: Option<Output>,
}

/// Import one case into `out/` of its copy, and validate what was written.
fn import_case(dir: &Path) -> Imported {
    let t = copy_case(dir);
    let case = t.path().join("case");
    let file = compose_file(&case).expect("a compose file");
    let run = berth(
        &case,
        &[
            "import",
            file.file_name().unwrap().to_str().unwrap(),
            "-o",
            "../out",
        ],
    );
    let stdout = text(&run.stdout);
    let toml_path = std::fs::read_dir(t.path().join("out"))
        .ok()
        .and_then(|mut d| d.next())
        .map(|e| e.unwrap().path());
    let toml = toml_path
        .as_ref()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .unwrap_or_default();
    let validate = toml_path
        .as_ref()
        .map(|p| berth(&case, &["validate", "-f", p.to_str().unwrap()]));
    let report = stdout
        .lines()
        .filter(|l| !l.starts_with("wrote "))
        .map(|l| format!("{l}\n"))
        .collect();
    Imported {
        code: run.status.code(),
        toml,
        report,
        stderr: text(&run.stderr),
        validate,
    }
}

/// Compare with (or, with BERTH_BLESS=1, write) a golden file.
fn golden(path: &Path, actual: &str) -> Result<(), String> {
    if std::env::var_os("BERTH_BLESS").is_some() {
        std::fs::write(path, actual).unwrap();
        return Ok(());
    }
    let expected = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {e} (BERTH_BLESS=1 writes it)", path.display()))?;
    if expected != actual {
        return Err(format!(
            "{} differs (BERTH_BLESS=1 rewrites it):\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        ));
    }
    Ok(())
}

fn run_cases(dir: &Path, min: usize) -> BTreeMap<String, usize> {
    let mut failures = Vec::new();
    let mut warnings_of = BTreeMap::new();
    let mut warning_lines: BTreeMap<String, usize> = BTreeMap::new();
    let mut refused = 0;
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && compose_file(p).is_some())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= min,
        "{} holds {} cases, fewer than {min}",
        dir.display(),
        cases.len()
    );
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let i = import_case(case);
        // A file that is not whole on its own (a build context or env file its
        // repository has but the corpus does not, an overlay of another file) is
        // refused, with exit 2 and why: that outcome is golden too.
        let outcome = match i.code {
            Some(0) => "imported\n".to_string(),
            Some(2) => {
                let why: Vec<&str> = i
                    .stderr
                    .lines()
                    .filter(|l| l.contains(": ") && !l.starts_with("berth: import:"))
                    .filter(|l| !l.starts_with(['[', ' ', '#']))
                    .filter(|l| l.starts_with('(') || l.contains(".y"))
                    .collect();
                format!("refused (exit 2):\n{}\n", why.join("\n"))
            }
            other => {
                failures.push(format!("{name}: import exit {other:?}: {}", i.stderr));
                continue;
            }
        };
        if let Err(e) = golden(&case.join("expected-outcome.txt"), &outcome) {
            failures.push(format!("{name}: {e}"));
        }
        if i.code != Some(0) {
            refused += 1;
            continue;
        }
        let v = i.validate.as_ref().unwrap();
        if !v.status.success() {
            failures.push(format!(
                "{name}: the output does not validate: {}{}",
                text(&v.stdout),
                text(&v.stderr)
            ));
        }
        for (file, actual) in [
            ("expected.toml", &i.toml),
            ("expected-report.txt", &i.report),
        ] {
            if let Err(e) = golden(&case.join(file), actual) {
                failures.push(format!("{name}: {e}"));
            }
        }
        let mut section = "";
        let mut n = 0;
        for line in i.report.lines() {
            if !line.starts_with(' ') {
                section = line;
                continue;
            }
            if !section.starts_with("Translated (") {
                n += 1;
                // The warning's kind: the Compose key it is about, without the names of
                // services, volumes or variables (`services.environment`, `volumes`).
                let what = line.split(": ").skip(1).collect::<Vec<_>>().join(": ");
                let path: Vec<&str> = what
                    .split(": ")
                    .next()
                    .unwrap_or_default()
                    .split('.')
                    .collect();
                let key = match path.as_slice() {
                    ["services", _, k, ..] => format!("services.*.{k}"),
                    ["services", ..] => "services.*".to_string(),
                    [top, ..] => top.to_string(),
                    [] => String::new(),
                };
                *warning_lines.entry(key).or_default() += 1;
            }
        }
        warnings_of.insert(name, n);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let clean = warnings_of.values().filter(|n| **n == 0).count();
    eprintln!(
        "{}: {} files: {clean} imported with no warning, {} with warnings, {refused} refused",
        dir.display(),
        cases.len(),
        cases.len() - clean - refused
    );
    let mut top: Vec<_> = warning_lines.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (w, n) in top.iter().take(10) {
        eprintln!("  {n:4}  {w}");
    }
    warnings_of
}

#[test]
fn berths_own_cases_import_validate_and_match_their_goldens() {
    run_cases(&root().join("tests/compose/cases"), 1);
}

#[test]
fn the_real_world_corpus_imports_validates_and_matches_its_goldens() {
    let corpus = root().join("tests/compose/corpus");
    assert!(
        corpus.join("SOURCES.md").is_file(),
        "premise: the corpus and its SOURCES.md"
    );
    run_cases(&corpus, 30);
}

/// The three-tier case: what the report says of it, and `berth plan` lists every
/// service of the output (against the real engine: nothing runs, nothing is made).
#[test]
fn the_three_tier_case_keeps_its_meaning_and_plans_every_service() {
    let case = root().join("tests/compose/cases/three-tier");
    let i = import_case(&case);
    assert_eq!(i.code, Some(0), "{}", i.stderr);
    let toml = &i.toml;
    // Interpolation kept as references, the nested default too.
    assert!(
        toml.contains("example/api:${API_TAG:-${DEFAULT_TAG:-1.0}}"),
        "{toml}"
    );
    assert!(toml.contains(r#"health = { probe = "postgres""#), "{toml}");
    assert!(
        toml.contains("# healthcheck: pg_isready -U app -d app"),
        "{toml}"
    );
    assert!(
        toml.contains(r#"probe = "http", port = 8000, path = "/healthz""#),
        "{toml}"
    );
    assert!(
        toml.contains(r#"healthy_deadline = "35s""#),
        "10s + 5 × 5s: {toml}"
    );
    assert!(toml.contains(r#"mem_limit = "256M""#), "{toml}");
    assert!(
        toml.contains(r#""../case/nginx.conf:/etc/nginx/nginx.conf:ro""#),
        "{toml}"
    );
    let r = &i.report;
    assert!(r.contains("compose.yml:52:5: services.web.links"), "{r}");
    assert!(
        r.contains("services.api.environment.LOG_LEVEL: no value"),
        "{r}"
    );
    assert!(
        r.contains(
            "services.web.depends_on.api: service_started: berth waits until api passed its probe"
        ),
        "{r}"
    );

    // plan on the output: every service is a create.
    let t = copy_case(&case);
    let c = t.path().join("case");
    let run = berth(&c, &["import", "compose.yml", "-o", "../out"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let out = t.path().join("out/three-tier.toml");
    let plan = berth(&c, &["plan", "-f", out.to_str().unwrap()]);
    let stdout = text(&plan.stdout);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "{stdout}{}",
        text(&plan.stderr)
    );
    for s in ["db", "api", "web"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains("create") && l.contains(s)),
            "{s} in {stdout}"
        );
    }
    // Importing again refuses to replace what it wrote.
    let again = berth(&c, &["import", "compose.yml", "-o", "../out"]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again.stderr));
    assert!(text(&again.stderr).contains("exists already"));
}

/// The runbook's stack written as a docker-compose.yml (`tests/compose/runbook/`), in the
/// runbook's layout beside a copy of `desired-state/local-assistant.toml`: imported, each
/// service's container is the shipped one's (the same config hash, so a plan of the
/// import against the shipped stack's containers has nothing to do, service by service),
/// with the same dependencies and the same probe. What differs is what Compose cannot
/// say, listed here: the `[migrations]` step (its dependents' order), the pre-flight,
/// grafana's `expect_json`, and the probes' timeouts (Compose's, kept).
#[test]
fn the_runbooks_compose_file_imports_to_the_shipped_stack_service_by_service() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    std::fs::create_dir(dir.join("desired-state")).unwrap();
    std::os::unix::fs::symlink(root().join("config"), dir.join("config")).unwrap();
    std::os::unix::fs::symlink(root().join("migrations"), dir.join("migrations")).unwrap();
    std::fs::copy(
        root().join("desired-state/local-assistant.toml"),
        dir.join("desired-state/local-assistant.toml"),
    )
    .unwrap();
    std::fs::copy(
        root().join("tests/compose/runbook/docker-compose.yml"),
        dir.join("docker-compose.yml"),
    )
    .unwrap();
    let env = dir.join(".env");
    std::fs::copy(root().join(".env.example"), &env).unwrap();
    std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o600)).unwrap();

    let run = berth(
        dir,
        &[
            "import",
            "docker-compose.yml",
            "-o",
            "desired-state/imported.toml",
        ],
    );
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}{}",
        text(&run.stdout),
        text(&run.stderr)
    );
    let load = |f: &str| {
        let sel = berth::spec::Selection {
            profiles: vec!["tracing".into()],
            ..Default::default()
        };
        berth::spec::load(&dir.join("desired-state").join(f), &sel)
            .unwrap_or_else(|e| panic!("{f}: {e:?}"))
    };
    let (shipped, imported) = (load("local-assistant.toml"), load("imported.toml"));
    assert_eq!(shipped.project.name, imported.project.name);
    assert_eq!(shipped.project.network, imported.project.network);
    assert_eq!(
        shipped.services.keys().collect::<Vec<_>>(),
        imported.services.keys().collect::<Vec<_>>()
    );
    for (name, a) in &shipped.services {
        let b = &imported.services[name];
        assert_eq!(
            berth::hash::config_hash(a),
            berth::hash::config_hash(b),
            "{name}: the container differs:\n{a:#?}\n{b:#?}"
        );
        // The migrations step is Compose-less: the shipped file orders nothing on it
        // here, so the dependencies are the same.
        assert_eq!(a.depends_on, b.depends_on, "{name}");
        let probe = |s: &berth::spec::Service| {
            s.health.as_ref().map(|h| match &h.probe {
                berth::spec::Probe::Http { port, path, .. } => format!("http {port} {path}"),
                p => p.to_string(),
            })
        };
        assert_eq!(probe(a), probe(b), "{name}");
    }
    // What Compose cannot say.
    assert!(shipped.migrations.is_some() && imported.migrations.is_none());
    let report = text(&run.stdout);
    assert!(
        report.contains("services.postgres.healthcheck.test: berth's native \"postgres\" probe"),
        "{report}"
    );
}
