//! Build contexts as part of the desired state.
//!
//! A service with `build` is rebuilt when its context changes, not only when its image is
//! absent. The context is hashed the way Docker receives it: the files the classic
//! builder's tar holds (`.dockerignore` honoured with Docker's semantics), their paths,
//! modes and contents, symlink targets, plus the Dockerfile name and the build args.
//! [`context_entries`] is the one list both the hash and the tar that `build_image` sends
//! are made from, so they cannot disagree about what is in the context.
//!
//! `.dockerignore` semantics (Docker 20.10, `pkg/fileutils` and `pkg/archive`):
//! - each line is trimmed; `#` lines and empty lines are skipped; `!` makes an exception;
//! - the pattern is path-cleaned and a leading `/` dropped: every pattern is anchored at
//!   the context root (unlike `.gitignore`, `foo` does not match `a/foo`);
//! - `*` and `?` do not cross `/`, `**` matches any number of directories;
//! - a pattern also matches a path when it matches that path's leading directories of the
//!   pattern's own depth (`dir` excludes `dir/x/y`);
//! - the last matching pattern decides;
//! - an excluded directory is not descended into unless some exception pattern exists;
//! - the Dockerfile and `.dockerignore` are always sent (the CLI appends `!` exceptions).

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};
use sha2::{Digest, Sha256};

use crate::spec::{Build, DesiredState};

/// The image label that records which context an image was built from.
pub const LABEL_CONTEXT_HASH: &str = "berth.context-hash";

#[derive(Debug, thiserror::Error)]
pub enum BuildContextError {
    #[error("reading build context {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: bad pattern {pattern:?}: {message}")]
    Pattern {
        file: PathBuf,
        pattern: String,
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildContextError + '_ {
    move |source| BuildContextError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One thing the build context sends.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Path relative to the context root, `/`-separated.
    pub rel: String,
    /// Where it is on this host.
    pub path: PathBuf,
    pub kind: Kind,
    /// Permission bits (including setuid/setgid/sticky): the tar carries them.
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Dir,
    File,
    Symlink(PathBuf),
}

/// One `.dockerignore` line, compiled.
struct Pattern {
    glob: GlobMatcher,
    /// Number of `/`-separated components: the parent-prefix rule compares that many.
    depth: usize,
    exception: bool,
}

/// The `.dockerignore` of one context, as Docker's pattern matcher reads it.
pub struct Ignore {
    patterns: Vec<Pattern>,
    has_exceptions: bool,
}

impl Ignore {
    /// Compile `.dockerignore` lines, followed by the exceptions Docker's CLI always adds
    /// for the Dockerfile and `.dockerignore` itself.
    pub fn parse(text: &str, dockerfile: &str, file: &Path) -> Result<Ignore, BuildContextError> {
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        lines.push(format!("!{dockerfile}"));
        lines.push("!.dockerignore".into());
        let mut patterns = Vec::new();
        for line in lines {
            let (exception, raw) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line.as_str()),
            };
            let cleaned = clean(raw);
            if cleaned.is_empty() {
                continue;
            }
            // Go's filepath.Match: `*` and `?` never cross `/`; `\\` escapes.
            let glob = GlobBuilder::new(&cleaned)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| BuildContextError::Pattern {
                    file: file.to_path_buf(),
                    pattern: line.clone(),
                    message: e.kind().to_string(),
                })?
                .compile_matcher();
            patterns.push(Pattern {
                depth: cleaned.split('/').count(),
                glob,
                exception,
            });
        }
        let has_exceptions = patterns.iter().any(|p| p.exception);
        Ok(Ignore {
            patterns,
            has_exceptions,
        })
    }

    /// Is `rel` (relative, `/`-separated) excluded? Docker's `PatternMatcher.Matches`.
    pub fn excluded(&self, rel: &str) -> bool {
        let parents: Vec<&str> = match rel.rsplit_once('/') {
            Some((dir, _)) => dir.split('/').collect(),
            None => Vec::new(),
        };
        let mut excluded = false;
        for p in &self.patterns {
            let mut hit = p.glob.is_match(rel);
            if !hit && !parents.is_empty() && p.depth <= parents.len() {
                hit = p.glob.is_match(parents[..p.depth].join("/"));
            }
            if hit {
                excluded = !p.exception;
            }
        }
        excluded
    }
}

/// `filepath.Clean` for a `/`-separated pattern, then the leading `/` dropped.
fn clean(pattern: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in pattern.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !pattern.starts_with('/') {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// Everything the context sends, in path order.
pub fn context_entries(context: &Path, dockerfile: &str) -> Result<Vec<Entry>, BuildContextError> {
    let ignore_file = context.join(".dockerignore");
    let text = match std::fs::read_to_string(&ignore_file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(&ignore_file)(e)),
    };
    let ignore = Ignore::parse(&text, &clean(dockerfile), &ignore_file)?;
    let mut entries = Vec::new();
    let mut walk = walkdir::WalkDir::new(context)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
        .into_iter();
    while let Some(item) = walk.next() {
        let item = item.map_err(|e| {
            let path = e.path().unwrap_or(context).to_path_buf();
            BuildContextError::Io {
                source: e.into_io_error().unwrap_or_else(|| {
                    std::io::Error::other("filesystem loop in the build context")
                }),
                path,
            }
        })?;
        let rel = item
            .path()
            .strip_prefix(context)
            .expect("walkdir yields paths under its root")
            .to_string_lossy()
            .into_owned();
        let is_dir = item.file_type().is_dir();
        if ignore.excluded(&rel) {
            // Like Docker's archive walk: an excluded directory is skipped whole unless an
            // exception could bring something inside it back.
            if is_dir && !ignore.has_exceptions {
                walk.skip_current_dir();
            }
            continue;
        }
        let meta = item.path().symlink_metadata().map_err(io(item.path()))?;
        let kind = if meta.file_type().is_symlink() {
            Kind::Symlink(std::fs::read_link(item.path()).map_err(io(item.path()))?)
        } else if is_dir {
            Kind::Dir
        } else {
            Kind::File
        };
        entries.push(Entry {
            rel,
            path: item.path().to_path_buf(),
            kind,
            mode: meta.permissions().mode() & 0o7777,
        });
    }
    Ok(entries)
}

/// SHA-256 (hex) of a build as Docker would receive it: the context's entries with their
/// contents, the Dockerfile name and the build args.
pub fn context_hash(build: &Build) -> Result<String, BuildContextError> {
    let mut h = Sha256::new();
    h.update(b"berth build context v1\0");
    h.update(build.dockerfile.as_bytes());
    h.update(b"\0");
    for (k, v) in &build.args {
        field(&mut h, "arg", &format!("{k}={v}"));
    }
    for e in context_entries(&build.context, &build.dockerfile)? {
        match &e.kind {
            Kind::Dir => field(&mut h, "dir", &format!("{} {:o}", e.rel, e.mode)),
            Kind::Symlink(target) => field(
                &mut h,
                "symlink",
                &format!("{} -> {}", e.rel, target.display()),
            ),
            Kind::File => {
                field(&mut h, "file", &format!("{} {:o}", e.rel, e.mode));
                let mut f = std::fs::File::open(&e.path).map_err(io(&e.path))?;
                let mut content = Sha256::new();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = f.read(&mut buf).map_err(io(&e.path))?;
                    if n == 0 {
                        break;
                    }
                    content.update(&buf[..n]);
                }
                h.update(content.finalize());
            }
        }
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Length-prefixed, so no two different entry lists hash the same byte stream.
fn field(h: &mut Sha256, kind: &str, value: &str) {
    h.update(kind.as_bytes());
    h.update((value.len() as u64).to_le_bytes());
    h.update(value.as_bytes());
}

/// Set `Build.context_hash` for every service with a build. Also folds the hashes into
/// the desired state's `source_hash`: a changed Dockerfile is a changed desired state, so a
/// context edit lifts a poisoning just as a file edit does.
pub fn fill_context_hashes(desired: &mut DesiredState) -> Result<(), BuildContextError> {
    let mut hashes = BTreeMap::new();
    for s in desired.services.values_mut() {
        if let Some(build) = &mut s.build {
            let hash = context_hash(build)?;
            hashes.insert(s.name.clone(), hash.clone());
            build.context_hash = Some(hash);
        }
    }
    if !hashes.is_empty() {
        let mut h = Sha256::new();
        h.update(desired.source_hash.as_bytes());
        for (service, hash) in &hashes {
            field(&mut h, service, hash);
        }
        desired.source_hash = format!("{:x}", h.finalize());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn ctx(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let p = dir.path().join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, content).unwrap();
        }
        dir
    }

    fn build(dir: &Path) -> Build {
        Build {
            context: dir.to_path_buf(),
            dockerfile: "Dockerfile".into(),
            args: BTreeMap::new(),
            context_hash: None,
        }
    }

    fn hash(dir: &Path) -> String {
        context_hash(&build(dir)).unwrap()
    }

    fn sent(dir: &Path) -> Vec<String> {
        context_entries(dir, "Dockerfile")
            .unwrap()
            .into_iter()
            .filter(|e| e.kind != Kind::Dir)
            .map(|e| e.rel)
            .collect()
    }

    fn ignore(text: &str) -> Ignore {
        Ignore::parse(text, "Dockerfile", Path::new(".dockerignore")).unwrap()
    }

    #[test]
    fn editing_an_ignored_file_does_not_change_the_hash() {
        let d = ctx(&[
            ("Dockerfile", "FROM scratch\n"),
            (".dockerignore", "logs\n*.tmp\n"),
            ("logs/today.log", "a"),
            ("scratch.tmp", "a"),
            ("src/main.rs", "fn main() {}"),
        ]);
        let before = hash(d.path());
        fs::write(d.path().join("logs/today.log"), "b").unwrap();
        fs::write(d.path().join("logs/new.log"), "c").unwrap();
        fs::write(d.path().join("scratch.tmp"), "b").unwrap();
        assert_eq!(hash(d.path()), before);
    }

    #[test]
    fn editing_an_included_file_its_mode_or_the_dockerfile_changes_the_hash() {
        let d = ctx(&[
            ("Dockerfile", "FROM scratch\n"),
            ("src/main.rs", "fn main() {}"),
        ]);
        let h0 = hash(d.path());
        fs::write(d.path().join("src/main.rs"), "fn main() { }").unwrap();
        let h1 = hash(d.path());
        assert_ne!(h0, h1);
        fs::set_permissions(
            d.path().join("src/main.rs"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let h2 = hash(d.path());
        assert_ne!(h1, h2);
        fs::write(d.path().join("Dockerfile"), "FROM scratch\nENV A=1\n").unwrap();
        let h3 = hash(d.path());
        assert_ne!(h2, h3);
        // A file that moves is a different context even with the same bytes.
        fs::rename(d.path().join("src/main.rs"), d.path().join("main.rs")).unwrap();
        assert_ne!(hash(d.path()), h3);
    }

    #[test]
    fn a_symlinks_target_is_hashed_not_followed() {
        let d = ctx(&[("Dockerfile", "FROM scratch\n"), ("a", "1"), ("b", "2")]);
        std::os::unix::fs::symlink("a", d.path().join("link")).unwrap();
        let h0 = hash(d.path());
        fs::write(d.path().join("a"), "changed").unwrap();
        let h1 = hash(d.path());
        assert_ne!(h0, h1, "a's own content changed");
        fs::remove_file(d.path().join("link")).unwrap();
        std::os::unix::fs::symlink("b", d.path().join("link")).unwrap();
        assert_ne!(hash(d.path()), h1);
    }

    #[test]
    fn build_args_and_the_dockerfile_name_are_part_of_the_hash() {
        let d = ctx(&[
            ("Dockerfile", "FROM scratch\n"),
            ("Other", "FROM scratch\n"),
        ]);
        let mut b = build(d.path());
        let h0 = context_hash(&b).unwrap();
        b.args.insert("GREETING".into(), "hi".into());
        let h1 = context_hash(&b).unwrap();
        assert_ne!(h0, h1);
        b.dockerfile = "Other".into();
        assert_ne!(context_hash(&b).unwrap(), h1);
    }

    #[test]
    fn dockerignore_patterns_are_anchored_at_the_context_root() {
        let i = ignore("foo\n/bar\n*.log\n");
        assert!(i.excluded("foo"));
        assert!(
            i.excluded("foo/inside"),
            "a directory pattern excludes its contents"
        );
        assert!(
            !i.excluded("sub/foo"),
            "unlike .gitignore, foo does not match sub/foo"
        );
        assert!(i.excluded("bar"));
        assert!(i.excluded("x.log"));
        assert!(!i.excluded("sub/x.log"), "* does not cross /");
    }

    #[test]
    fn double_star_matches_any_depth_and_exceptions_bring_files_back() {
        let i = ignore("**/*.log\n!keep/**/*.log\n");
        assert!(i.excluded("a.log"));
        assert!(i.excluded("a/b/c.log"));
        assert!(!i.excluded("keep/a/c.log"));
        assert!(!i.excluded("keep/c.log"));
        // The last matching pattern decides.
        let i = ignore("!important.txt\n*.txt\n");
        assert!(i.excluded("important.txt"));
    }

    #[test]
    fn patterns_are_cleaned_like_go_filepath_clean() {
        let i = ignore("./docs/\n# comment\n  spaced  \nsrc/../tmp\n");
        assert!(i.excluded("docs/index.md"));
        assert!(i.excluded("spaced"));
        assert!(i.excluded("tmp/x"));
        assert!(!i.excluded("src/x"));
        assert!(!i.excluded("# comment"));
    }

    #[test]
    fn the_dockerfile_and_dockerignore_are_always_sent() {
        let d = ctx(&[
            ("Dockerfile", "FROM scratch\n"),
            (".dockerignore", "*\n!app\n"),
            ("app", "bin"),
            ("secret.env", "KEY=1"),
            ("data/big", "x"),
        ]);
        assert_eq!(sent(d.path()), vec![".dockerignore", "Dockerfile", "app"]);
    }

    #[test]
    fn an_exception_inside_an_excluded_directory_is_sent() {
        let d = ctx(&[
            ("Dockerfile", "FROM scratch\n"),
            (".dockerignore", "target\n!target/release/app\n"),
            ("target/release/app", "bin"),
            ("target/debug/app", "bin"),
        ]);
        assert_eq!(
            sent(d.path()),
            vec![".dockerignore", "Dockerfile", "target/release/app"]
        );
    }

    #[test]
    fn fill_context_hashes_sets_every_builds_hash_and_changes_the_source_hash() {
        let d = ctx(&[("ctx/Dockerfile", "FROM scratch\n")]);
        fs::write(
            d.path().join("berth.toml"),
            "[project]\nname = \"p\"\n[services.web]\nbuild = { context = \"ctx\" }\n[services.db]\nimage = \"db:1\"\n",
        )
        .unwrap();
        let mut desired = crate::spec::load_with_env(
            &d.path().join("berth.toml"),
            &Default::default(),
            &Default::default(),
        )
        .unwrap();
        let before = desired.source_hash.clone();
        fill_context_hashes(&mut desired).unwrap();
        let web = desired.services["web"].build.as_ref().unwrap();
        assert_eq!(web.context_hash, Some(context_hash(web).unwrap()));
        assert!(desired.services["db"].build.is_none());
        assert_ne!(desired.source_hash, before);
    }
}
