//! Reading, interpolating and validating desired-state TOML.
//!
//! # Layout
//! - `raw`: the file as serde reads it, with spans.
//! - `resolve`: the [`Resolver`] that turns raw files into a [`DesiredState`], and the
//!   project-wide checks (one project block, unique services, cycles, ports, names).
//! - `service`, `health`: one service, one health probe.
//! - `env_file`: `KEY=VALUE` env files and what in them is secret.
//! - `preflight`: the `[preflight]` block's checks that need no host.
//! - `migrations`: the `[migrations]` block and its directory of sqlx migrations.
//! - `notify`: the `[[notify]]` receivers of notifications.
//! - `swarm`: `[project] engine` and the service keys only Swarm reads.
//! - `parse`: the small grammars (ports, volumes, names, sizes, versions).

pub(crate) mod env_file;
mod health;
mod migrations;
mod notify;
mod parse;
mod preflight;
mod raw;
mod reference;
mod resolve;
mod service;
mod swarm;
mod timing;

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{At, DesiredState, Selection};
use crate::diag::{Diagnostic, Diagnostics};
pub use parse::{parse_size, parse_version};
use raw::RawFile;
use resolve::Resolver;

/// One parsed file with what is needed to point into it.
struct Source {
    path: PathBuf,
    dir: PathBuf,
    text: String,
    raw: RawFile,
}

/// Load and validate the desired state at `path` with the process environment.
/// `p` made absolute (from the current directory) with its `.` and `..` steps resolved
/// by the letters, as the loader compares paths.
pub fn normalize_path(p: &Path) -> std::path::PathBuf {
    parse::normalize(p)
}

/// Whether `text` is a port berth takes (`[HOST_IP:]HOST:CONTAINER[/PROTO]`), and why not.
pub fn check_port(text: &str) -> Result<(), String> {
    parse::parse_port(text).map(|_| ())
}

pub fn load(path: &Path, selection: &Selection) -> Result<DesiredState, Diagnostics> {
    load_with_env(path, selection, &process_env())
}

/// The process environment as interpolation reads it. A variable whose name or value is
/// not UTF-8 cannot be named by `${...}` nor set in a container from here: it is left
/// out, with one warning per variable for the life of the process (`std::env::vars`
/// would panic on it, and a panic under systemd is a crash loop).
fn process_env() -> HashMap<String, String> {
    static WARNED: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());
    let mut env = HashMap::new();
    for (name, value) in std::env::vars_os() {
        match (name.into_string(), value.into_string()) {
            (Ok(name), Ok(value)) => {
                env.insert(name, value);
            }
            (name, _) => {
                let name = match name {
                    Ok(n) => n,
                    Err(n) => n.to_string_lossy().into_owned(),
                };
                let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
                if warned.insert(name.clone()) {
                    tracing::warn!(
                        variable = %name.escape_debug(),
                        "an environment variable is not UTF-8: interpolation ignores it"
                    );
                }
            }
        }
    }
    env
}

/// As [`load`], with an explicit environment (tests use this).
pub fn load_with_env(
    path: &Path,
    selection: &Selection,
    env: &HashMap<String, String>,
) -> Result<DesiredState, Diagnostics> {
    let extra_profiles = &selection.profiles;
    let mut diags = Diagnostics::default();
    // From a commit: `--path` is checked before it is listed, each file before it is read.
    if let Some(overlay) = &selection.overlay {
        confine_files(overlay, &[path.to_path_buf()])?;
    }
    let files = list_files(path).map_err(|d| Diagnostics(vec![d]))?;
    if let Some(overlay) = &selection.overlay {
        confine_files(overlay, &files)?;
    }
    let mut hasher = Sha256::new();
    let mut sources = Vec::new();
    for file in &files {
        let text = match std::fs::read(file) {
            Ok(bytes) => match utf8(file, bytes) {
                Ok(t) => t,
                Err(d) => {
                    diags.push(d);
                    continue;
                }
            },
            Err(e) => {
                diags.push(Diagnostic::file(file, format!("cannot read: {e}")));
                continue;
            }
        };
        hasher.update(file.file_name().unwrap_or_default().as_encoded_bytes());
        hasher.update([0]);
        hasher.update(text.as_bytes());
        hasher.update([0]);
        match toml::from_str::<RawFile>(&text) {
            Ok(raw) => sources.push(Source {
                dir: file.parent().unwrap_or(Path::new(".")).to_path_buf(),
                path: file.clone(),
                text,
                raw,
            }),
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                diags.push(Diagnostic::at(
                    file,
                    &text,
                    span,
                    e.message().trim().to_string(),
                ));
            }
        }
    }
    // What is left out is part of "this desired state" too: the same files with another
    // selection are another generation (and are poisoned separately).
    let mut excluded: Vec<&String> = selection.exclude.iter().collect();
    excluded.sort();
    excluded.dedup();
    for name in &excluded {
        hasher.update(b"exclude\0");
        hasher.update(name.as_bytes());
        hasher.update([0]);
    }
    if !diags.is_empty() {
        return Err(diags.sorted());
    }
    let mut ctx = Resolver {
        env,
        env_file_vars: HashMap::new(),
        secret_values: BTreeSet::new(),
        env_file_keys: Default::default(),
        diags: Diagnostics::default(),
        failed_values: BTreeSet::new(),
        overlay: selection.overlay.clone(),
    };
    let state = ctx.resolve(
        &sources,
        extra_profiles,
        &selection.exclude,
        format!("{:x}", hasher.finalize()),
    );
    match state {
        Some(s) if ctx.diags.is_empty() => Ok(s),
        _ => Err(ctx.diags.sorted()),
    }
}

/// Where `span` of `src` is, for checks that run after loading.
fn at(src: &Source, span: Range<usize>) -> At {
    let (line, col) = crate::diag::line_col(&src.text, span.start);
    At {
        file: src.path.clone(),
        line,
        col,
    }
}

/// A desired state read from a commit is the commit's own: `--path` and every `*.toml`
/// file it lists must resolve (through every symlink) inside the commit's tree. A
/// committed `desired-state/b.toml -> /etc/…` would otherwise have berth read a host file
/// as TOML and show its keys in the diagnostics (docs/design.md §12).
fn confine_files(overlay: &crate::spec::Overlay, files: &[PathBuf]) -> Result<(), Diagnostics> {
    let resolve = crate::spec::trust::resolve;
    let tree = resolve(&overlay.tree)
        .map_err(|e| Diagnostics(vec![Diagnostic::file(&overlay.tree, e.to_string())]))?;
    let mut diags = Vec::new();
    for f in files {
        match resolve(f) {
            Ok(r) if r.starts_with(&tree) => {}
            Ok(r) => diags.push(Diagnostic::file(
                f,
                format!(
                    "the desired state resolves to {}, outside the commit's tree: it is read only from the commit",
                    r.display()
                ),
            )),
            Err(e) => diags.push(Diagnostic::file(f, format!("cannot resolve: {e}"))),
        }
    }
    if diags.is_empty() {
        Ok(())
    } else {
        Err(Diagnostics(diags))
    }
}

fn list_files(path: &Path) -> Result<Vec<PathBuf>, Diagnostic> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Diagnostic::file(path, format!("cannot read desired state: {e}")))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Diagnostic::file(path, format!("cannot list directory: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Diagnostic::file(path, "directory holds no *.toml files"));
    }
    Ok(files)
}

/// The file's text, or a diagnostic at the first byte that is not UTF-8 (TOML and env
/// files are UTF-8; a Latin-1 file would otherwise be rejected with no position).
fn utf8(file: &Path, bytes: Vec<u8>) -> Result<String, Diagnostic> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let byte = e.as_bytes()[valid];
        let prefix = std::str::from_utf8(&e.as_bytes()[..valid]).expect("valid up to here");
        Diagnostic::at(
            file,
            prefix,
            valid..valid,
            format!("byte 0x{byte:02x} is not UTF-8: the file must be UTF-8 encoded"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Interpolation as Compose's: a nested default is expanded, where berth once
    /// reported the bad tag `-1.0}`.
    #[test]
    fn a_nested_default_is_expanded_in_the_desired_state() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("berth.toml");
        std::fs::write(
            &file,
            "[project]\nname = \"p\"\n[services.app]\nimage = \"app:${A:-${B:-1.0}}\"\n",
        )
        .unwrap();
        let d = load_with_env(&file, &Selection::default(), &HashMap::new()).unwrap();
        assert_eq!(d.services["app"].image, "app:1.0");
        let env = HashMap::from([("B".to_string(), "2.1".to_string())]);
        let d = load_with_env(&file, &Selection::default(), &env).unwrap();
        assert_eq!(d.services["app"].image, "app:2.1");
    }

    /// A desired state with a secret of every kind, loaded from a temp dir.
    fn with_secrets() -> (tempfile::TempDir, DesiredState) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join("app.env");
        std::fs::write(&env, "PLAIN_SETTING=from-env-file-123\n").unwrap();
        std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o600)).unwrap();
        let project_env = dir.path().join("project.env");
        std::fs::write(&project_env, "SIGNING_KEY=interpolated-key-456\n").unwrap();
        std::fs::set_permissions(&project_env, std::fs::Permissions::from_mode(0o600)).unwrap();
        let file = dir.path().join("berth.toml");
        std::fs::write(
            &file,
            r#"
[project]
name = "p"
env_file = "project.env"

[services.db]
image = "postgres:15"
env_file = "app.env"
environment = { API_TOKEN = "literal-secret-123", DB_URL = "postgresql://u:url-pass-789@db/x", MODE = "fast" }
command = ["serve", "--key", "${SIGNING_KEY}"]
health = { probe = "postgres", user = "u", password = "probe-pass-000", database = "x" }
"#,
        )
        .unwrap();
        let d = load_with_env(&file, &Selection::default(), &HashMap::new()).unwrap();
        (dir, d)
    }

    const SPEC_SECRETS: [&str; 4] = [
        "literal-secret-123",
        "url-pass-789",
        "probe-pass-000",
        "from-env-file-123",
    ];

    #[test]
    fn a_fresh_redactor_hides_every_kind_of_secret_and_nothing_else() {
        let (_dir, d) = with_secrets();
        let r = d.redactor();
        for s in SPEC_SECRETS.iter().chain(&["interpolated-key-456"]) {
            assert_eq!(r.text(&format!("x {s} y")), "x <redacted> y", "{s}");
        }
        assert_eq!(r.text("MODE=fast"), "MODE=fast");
        assert_eq!(
            d.env_file_keys
                .get("db")
                .map(|k| k.iter().map(String::as_str).collect::<Vec<_>>()),
            Some(vec!["PLAIN_SETTING"])
        );
    }

    #[test]
    fn a_redactor_from_stored_json_still_hides_the_spec_secrets() {
        let (_dir, d) = with_secrets();
        let json = serde_json::to_string(&d).unwrap();
        assert!(!json.contains("secret_values"), "{json}");
        // Key names of env-file values are kept, the list of secrets is not.
        assert!(json.contains("PLAIN_SETTING"));
        let back: DesiredState = serde_json::from_str(&json).unwrap();
        assert!(back.secret_values.is_empty());
        let r = back.redactor();
        for s in SPEC_SECRETS {
            assert_eq!(r.text(&format!("x {s} y")), "x <redacted> y", "{s}");
        }
        assert_eq!(r.text("MODE=fast"), "MODE=fast");
    }

    #[test]
    fn non_utf8_is_located_at_the_first_bad_byte() {
        let d = utf8(Path::new("f.toml"), b"a = 1\nb = \"caf\xe9\"\n".to_vec()).unwrap_err();
        assert_eq!((d.line, d.col), (2, 9));
        assert!(d.message.contains("0xe9"), "{}", d.message);
    }
}
