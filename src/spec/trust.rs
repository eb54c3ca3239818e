//! What a desired state read from a git commit may reach on the host (docs/design.md
//! §12, "Trust follows the source").
//!
//! The operator's own files and flags may name any host path. A commit is someone else's
//! text, read by a process that runs as root beside the Docker socket: every path it
//! names (bind sources, env files, build contexts, data directories, the backup and
//! snapshot directories, the migrations source) must land, once `..` and every symlink are
//! resolved, inside the commit's tree, inside the host directory the operator gave
//! (`--host-dir`), or under a path the operator granted (`--allow-host-path`). A symlink
//! the commit holds is judged by where it lands, also one inside a directory that is
//! bound or built: as Argo CD refuses a repository's out-of-bounds symlinks. And `${VAR}`
//! in a commit reads only the project env file and the variables the operator passes
//! (`--pass-env`), never the daemon's whole environment (see `Resolver::lookup`).

use std::collections::BTreeSet;
use std::io;
use std::path::{Component, Path, PathBuf};

use super::Overlay;

/// What the operator grants a commit beyond its tree and the host directory (`berth run
/// --git` flags). Without `--git` nothing is confined and these are not read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grants {
    /// `--allow-host-path`: host paths (resolved) a commit may name, with what lies under
    /// them, matched by whole path components.
    pub host_paths: Vec<PathBuf>,
    /// `--pass-env`: variables of berth's own environment `${...}` in a commit may read.
    pub pass_env: BTreeSet<String>,
}

impl Grants {
    /// The grants as the operator wrote them, each path resolved as a commit's paths are
    /// (it need not exist yet).
    pub fn new(host_paths: &[PathBuf], pass_env: &[String]) -> io::Result<Grants> {
        let host_paths = host_paths
            .iter()
            .map(|p| {
                resolve(p).map_err(|e| {
                    io::Error::new(e.kind(), format!("--allow-host-path {}: {e}", p.display()))
                })
            })
            .collect::<io::Result<_>>()?;
        Ok(Grants {
            host_paths,
            pass_env: pass_env.iter().cloned().collect(),
        })
    }
}

/// How many symlinks one path may pass through (Linux's own limit).
const MAX_LINKS: usize = 40;

/// One step of a path being resolved.
enum Step {
    Root,
    Up,
    Name(std::ffi::OsString),
}

/// `p`'s steps, last first (the order [`resolve`] pops them in).
fn steps(p: &Path) -> impl Iterator<Item = Step> + '_ {
    p.components().rev().filter_map(|c| match c {
        Component::RootDir | Component::Prefix(_) => Some(Step::Root),
        Component::CurDir => None,
        Component::ParentDir => Some(Step::Up),
        Component::Normal(n) => Some(Step::Name(n.to_os_string())),
    })
}

/// `p` made absolute with `.`, `..` and every symlink resolved, as the kernel would when
/// opening it. What does not exist (yet) is appended as written, so a directory still to
/// be created, or a file behind a dangling symlink, is judged by where it would land.
pub fn resolve(p: &Path) -> io::Result<PathBuf> {
    let mut todo: Vec<Step> = steps(&std::path::absolute(p)?).collect();
    let mut out = PathBuf::from("/");
    let mut links = 0;
    while let Some(step) = todo.pop() {
        let name = match step {
            Step::Root => {
                out = PathBuf::from("/");
                continue;
            }
            Step::Up => {
                out.pop();
                continue;
            }
            Step::Name(name) => name,
        };
        out.push(name);
        match std::fs::symlink_metadata(&out) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::other(format!(
                        "{}: more than {MAX_LINKS} symbolic links",
                        p.display()
                    )));
                }
                let target = std::fs::read_link(&out)?;
                out.pop();
                // The target's steps come next, then what followed the link.
                todo.extend(steps(&target));
            }
            Ok(_) => {}
            // Nothing there (yet), or a file where a directory would be: no symlink to
            // follow, and what follows is appended as written.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", out.display()))),
        }
    }
    Ok(out)
}

/// A path a commit names, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Confined {
    /// The path to use: as written, unless a symlink in the commit's tree takes it out of
    /// the tree (to the host directory or a grant); then where it lands, so that nothing
    /// later follows the commit's symlink again, and pruning the tree cannot move it.
    pub path: PathBuf,
    /// Where it lands: absolute, `..` and every symlink resolved.
    pub resolved: PathBuf,
}

/// Whether a symlink's target means the same wherever the directory holding it is
/// copied: an absolute path (judged by where it lands, as any path), or a relative one
/// that only goes down, without `..`. A chain of downward links stays inside any
/// directory that holds them all; one that climbs out lands somewhere else at the copy.
pub fn same_after_copy(target: &Path) -> bool {
    use std::path::Component;
    target.is_absolute()
        || target
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Where a commit may reach, resolved.
struct Roots {
    tree: PathBuf,
    host: PathBuf,
    grants: Vec<PathBuf>,
}

impl Roots {
    fn admit(&self, resolved: &Path) -> bool {
        // `starts_with` compares whole components: /srv/berth2 is not under /srv/berth.
        resolved.starts_with(&self.tree)
            || resolved.starts_with(&self.host)
            || self.grants.iter().any(|g| resolved.starts_with(g))
    }
}

impl Overlay {
    fn roots(&self) -> Result<Roots, String> {
        let tree = resolve(&self.tree).map_err(|e| format!("the commit's tree: {e}"))?;
        let host = resolve(&self.host).map_err(|e| format!("--host-dir: {e}"))?;
        Ok(Roots {
            tree,
            host,
            grants: self.grants.host_paths.clone(),
        })
    }

    /// Check `p` (absolute, as the overlay placed it), which the commit names as `what`
    /// ("bind source", "env file"): where it lands must be in bounds (see the module
    /// doc), and so must every symlink inside it when it is a directory of the commit.
    /// The refusal names the path and the grant that would allow it.
    pub fn confine(&self, what: &str, p: &Path) -> Result<Confined, String> {
        let roots = self.roots()?;
        let resolved = resolve(p).map_err(|e| format!("{what} {}: {e}", p.display()))?;
        if !roots.admit(&resolved) {
            let shown = if resolved == p {
                format!("{what} {} is", p.display())
            } else {
                format!("{what} {} resolves to {},", p.display(), resolved.display())
            };
            return Err(format!(
                "{shown} outside the commit's tree and --host-dir {}; the operator can allow it with --allow-host-path {}",
                self.host.display(),
                resolved.display()
            ));
        }
        if resolved.starts_with(&roots.tree) && resolved.is_dir() {
            self.symlinks_in(&roots, what, p, &resolved)?;
        }
        let path = if p.starts_with(&self.tree) && !resolved.starts_with(&roots.tree) {
            resolved.clone()
        } else {
            p.to_path_buf()
        };
        Ok(Confined { path, resolved })
    }

    /// Every symlink inside `dir` (a directory of the commit's tree, `p` as written) must
    /// land in bounds: a bound directory or a build context carries its symlinks along,
    /// and nothing may follow one out of the tree.
    fn symlinks_in(&self, roots: &Roots, what: &str, p: &Path, dir: &Path) -> Result<(), String> {
        for entry in walkdir::WalkDir::new(dir).follow_links(false) {
            let entry = entry.map_err(|e| format!("{what} {}: {e}", p.display()))?;
            if !entry.path_is_symlink() {
                continue;
            }
            let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
            let link = p.join(rel);
            let target = std::fs::read_link(entry.path())
                .map_err(|e| format!("{what} {}: {}: {e}", p.display(), link.display()))?;
            // The directory is copied as it is (`objects/`, see crate::git): a relative
            // link that climbs with `..` means something else at the copy's place, and
            // the kernel (and berth, reading a migrations directory) follows it from
            // there. Where it lands now proves nothing about where it lands then.
            if !same_after_copy(&target) {
                return Err(format!(
                    "{what} {} holds the symlink {} -> {}: a directory of the commit is copied as it is, so a relative symlink in it must point down inside it (no `..`)",
                    p.display(),
                    link.display(),
                    target.display(),
                ));
            }
            let resolved = resolve(entry.path())
                .map_err(|e| format!("{what} {}: {}: {e}", p.display(), link.display()))?;
            if !roots.admit(&resolved) {
                return Err(format!(
                    "{what} {} holds the symlink {} -> {}, which leaves the commit's tree and --host-dir {}; the operator can allow it with --allow-host-path {}",
                    p.display(),
                    link.display(),
                    target.display(),
                    self.host.display(),
                    resolved.display()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A commit's tree, a host directory and a place outside both, in one temp dir.
    struct World {
        _dir: tempfile::TempDir,
        root: PathBuf,
        overlay: Overlay,
    }

    impl World {
        fn new() -> World {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().canonicalize().unwrap();
            for d in ["tree/config", "host/data", "outside"] {
                std::fs::create_dir_all(root.join(d)).unwrap();
            }
            std::fs::write(root.join("tree/config/app.conf"), "in the tree").unwrap();
            std::fs::write(root.join("outside/secret"), "host file").unwrap();
            let overlay = Overlay {
                tree: root.join("tree"),
                host: root.join("host"),
                grants: Grants::default(),
            };
            World {
                _dir: dir,
                root,
                overlay,
            }
        }

        fn p(&self, rel: &str) -> PathBuf {
            self.root.join(rel)
        }

        fn grant(&mut self, rel: &str) {
            self.overlay.grants = Grants::new(&[self.p(rel)], &[]).unwrap();
        }
    }

    #[test]
    fn resolve_follows_every_symlink_and_appends_what_does_not_exist() {
        let w = World::new();
        symlink("../outside", w.p("tree/up")).unwrap();
        symlink(w.p("tree/up"), w.p("tree/chain")).unwrap();
        symlink("/nowhere/at/all", w.p("tree/dangling")).unwrap();
        assert_eq!(
            resolve(&w.p("tree/up/secret")).unwrap(),
            w.p("outside/secret")
        );
        assert_eq!(
            resolve(&w.p("tree/chain/new/dir")).unwrap(),
            w.p("outside/new/dir")
        );
        assert_eq!(resolve(&w.p("tree/up/../config")).unwrap(), w.p("config"));
        assert_eq!(
            resolve(&w.p("tree/dangling/x")).unwrap(),
            PathBuf::from("/nowhere/at/all/x")
        );
        assert_eq!(
            resolve(&w.p("tree/./config/../config")).unwrap(),
            w.p("tree/config")
        );
        symlink("loop", w.p("tree/loop")).unwrap();
        let e = resolve(&w.p("tree/loop/x")).unwrap_err();
        assert!(e.to_string().contains("symbolic links"), "{e}");
    }

    #[test]
    fn the_tree_and_the_host_directory_are_in_bounds() {
        let w = World::new();
        let c = w
            .overlay
            .confine("bind source", &w.p("tree/config/app.conf"))
            .unwrap();
        assert_eq!(c.path, w.p("tree/config/app.conf"));
        let c = w
            .overlay
            .confine("data directory", &w.p("host/data/new"))
            .unwrap();
        assert_eq!(c.resolved, w.p("host/data/new"));
    }

    #[test]
    fn a_host_path_outside_is_refused_naming_the_grant_and_a_grant_allows_it_by_components() {
        let mut w = World::new();
        let e = w
            .overlay
            .confine("bind source", &w.p("outside/secret"))
            .unwrap_err();
        assert_eq!(
            e,
            format!(
                "bind source {} is outside the commit's tree and --host-dir {}; the operator can allow it with --allow-host-path {}",
                w.p("outside/secret").display(),
                w.p("host").display(),
                w.p("outside/secret").display()
            )
        );
        let e = w
            .overlay
            .confine("build context", Path::new("/"))
            .unwrap_err();
        assert!(e.contains("--allow-host-path /"), "{e}");
        // `..` past the host directory is outside it.
        let e = w
            .overlay
            .confine("bind source", &w.p("host/../outside"))
            .unwrap_err();
        assert!(
            e.contains(&format!("resolves to {},", w.p("outside").display())),
            "{e}"
        );

        w.grant("outside");
        assert!(
            w.overlay
                .confine("bind source", &w.p("outside/secret"))
                .is_ok()
        );
        // Matched by whole components: `outside2` is not under `outside`.
        std::fs::create_dir_all(w.p("outside2")).unwrap();
        assert!(w.overlay.confine("bind source", &w.p("outside2")).is_err());
    }

    #[test]
    fn a_symlink_out_of_the_tree_is_refused_and_once_granted_is_used_where_it_lands() {
        let mut w = World::new();
        symlink(w.p("outside/secret"), w.p("tree/config/link.conf")).unwrap();
        let link = w.p("tree/config/link.conf");
        let e = w.overlay.confine("env file", &link).unwrap_err();
        assert!(
            e.starts_with(&format!(
                "env file {} resolves to {}, outside the commit's tree",
                link.display(),
                w.p("outside/secret").display()
            )),
            "{e}"
        );
        w.grant("outside/secret");
        let c = w.overlay.confine("env file", &link).unwrap();
        assert_eq!(
            c.path,
            w.p("outside/secret"),
            "the tree's symlink is not kept"
        );
        // A symlink within the tree stays as written.
        symlink("app.conf", w.p("tree/config/same.conf")).unwrap();
        let c = w
            .overlay
            .confine("bind source", &w.p("tree/config/same.conf"))
            .unwrap();
        assert_eq!(c.path, w.p("tree/config/same.conf"));
        assert_eq!(c.resolved, w.p("tree/config/app.conf"));
    }

    #[test]
    fn a_symlink_inside_a_directory_of_the_commit_is_judged_too() {
        let mut w = World::new();
        symlink("app.conf", w.p("tree/config/fine")).unwrap();
        assert!(
            w.overlay
                .confine("bind source", &w.p("tree/config"))
                .is_ok()
        );
        // An absolute link is judged by where it lands, here and at the copy alike.
        symlink(w.p("outside/secret"), w.p("tree/config/shadow")).unwrap();
        let e = w
            .overlay
            .confine("build context", &w.p("tree/config"))
            .unwrap_err();
        assert!(
            e.contains(&format!(
                "holds the symlink {} -> {}, which leaves the commit's tree",
                w.p("tree/config/shadow").display(),
                w.p("outside/secret").display()
            )),
            "{e}"
        );
        // A directory of the host's is the operator's: not walked.
        symlink("/etc", w.p("host/data/etc")).unwrap();
        assert!(w.overlay.confine("bind source", &w.p("host/data")).is_ok());
        w.grant("outside");
        assert!(
            w.overlay
                .confine("build context", &w.p("tree/config"))
                .is_ok()
        );
        // A relative link that climbs with `..` means another place once the directory
        // is copied to objects/: refused whatever it reaches now, granted or not.
        symlink("../../outside/secret", w.p("tree/config/climber")).unwrap();
        let e = w
            .overlay
            .confine("build context", &w.p("tree/config"))
            .unwrap_err();
        assert!(
            e.contains("-> ../../outside/secret: a directory of the commit is copied as it is"),
            "{e}"
        );
        std::fs::remove_file(w.p("tree/config/climber")).unwrap();
        symlink("sub/../app.conf", w.p("tree/config/inside")).unwrap();
        assert!(
            w.overlay
                .confine("bind source", &w.p("tree/config"))
                .is_err(),
            "even a climb that stays inside is refused: only downward links are copied"
        );
    }

    #[test]
    fn a_commit_reads_only_the_variables_passed_to_it_and_its_env_file() {
        use std::os::unix::fs::PermissionsExt;
        let mut w = World::new();
        std::fs::create_dir_all(w.p("tree/desired-state")).unwrap();
        let file = w.p("tree/desired-state/stack.toml");
        std::fs::write(
            &file,
            "[project]\nname = \"p\"\nenv_file = \"../.env\"\n\n[services.web]\nimage = \"web:1\"\nenvironment = { HOME_DIR = \"${HOME}\", FROM_FILE = \"${GREETING}\" }\n",
        )
        .unwrap();
        let env_file = w.p("host/.env");
        std::fs::write(&env_file, "GREETING=from-the-env-file\n").unwrap();
        std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let env: std::collections::HashMap<String, String> = [
            ("HOME".to_string(), "/root".to_string()),
            ("GREETING".to_string(), "from-the-daemon".to_string()),
        ]
        .into();
        let load = |w: &World| {
            let selection = crate::spec::Selection {
                overlay: Some(w.overlay.clone()),
                ..Default::default()
            };
            crate::spec::load_with_env(&file, &selection, &env)
        };
        let e = load(&w).unwrap_err().to_string();
        assert!(
            e.contains("stack.toml:7:29: ${HOME} is not passed to the commit")
                && e.contains("--pass-env HOME"),
            "{e}"
        );
        w.overlay.grants = Grants::new(&[], &["HOME".to_string()]).unwrap();
        let d = load(&w).unwrap();
        let env_of = &d.services["web"].environment;
        assert_eq!(env_of["HOME_DIR"], "/root");
        assert_eq!(env_of["FROM_FILE"], "from-the-env-file", "not the daemon's");
    }

    #[test]
    fn the_migrations_source_backup_and_snapshot_directories_are_confined_at_their_lines() {
        let mut w = World::new();
        std::fs::create_dir_all(w.p("tree/desired-state")).unwrap();
        std::fs::create_dir_all(w.p("outside/schema")).unwrap();
        std::fs::write(w.p("outside/schema/0001_one.up.sql"), "SELECT 1;").unwrap();
        symlink(w.p("outside/schema"), w.p("tree/schema")).unwrap();
        let file = w.p("tree/desired-state/stack.toml");
        std::fs::write(
            &file,
            format!(
                "[project]\nname = \"p\"\n\n[services.db]\nimage = \"postgres:15\"\n\n[migrations]\nservice = \"db\"\nurl = \"postgresql://u:p@db/x\"\nsource = \"../schema\"\nbackup_dir = \"{}\"\nsnapshot = [\"../../outside\"]\n",
                w.p("outside/backups").display()
            ),
        )
        .unwrap();
        let load = |w: &World| {
            let selection = crate::spec::Selection {
                overlay: Some(w.overlay.clone()),
                ..Default::default()
            };
            crate::spec::load_with_env(&file, &selection, &Default::default())
        };
        let e = load(&w).unwrap_err().to_string();
        for (at, what) in [
            ("stack.toml:10:10:", "migrations source"),
            ("stack.toml:11:14:", "backup_dir"),
            ("stack.toml:12:13:", "snapshot directory"),
        ] {
            assert!(e.contains(&format!("{at} {what} ")), "{at} {what}: {e}");
        }
        w.grant("outside");
        let m = load(&w).unwrap().migrations.unwrap();
        assert_eq!(m.source, w.p("outside/schema"), "where the symlink lands");
        assert_eq!(m.snapshot, vec![w.p("outside")]);
    }
}
