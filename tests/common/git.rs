//! A git remote on the local disk, for the tests that drive `berth run --git`: a bare
//! repository berth fetches from, and a clone the test commits in and pushes from, both
//! in the project's temp dir. Each test writes its own files and commits them its own
//! way; what they share is here.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use super::Project;

/// `git ARGS` in `dir`, its trimmed stdout; fails the test when git does. Author and
/// committer are fixed, so that commits do not depend on the machine's git config.
pub fn git(dir: &Path, args: &[&str]) -> String {
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

/// A bare repository (the remote, `remote.git` in the project's directory, branch
/// `main`) and a clone (`work`) the test commits in and pushes from.
pub struct Remote {
    pub bare: PathBuf,
    pub work: PathBuf,
    /// The project's name: what `{project}` in a desired state stands for.
    pub project: String,
}

impl Remote {
    /// Both repositories, empty; the clone's `origin` is the bare one.
    pub fn new(p: &Project) -> Remote {
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

    /// Write `text` to `path` (relative to the clone), making its directories.
    pub fn write(&self, path: &str, text: &str) {
        let path = self.work.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// Write the desired state berth is pointed at (`--path desired-state`);
    /// `{project}` in the text is replaced by the project name, as [`Project::write`]
    /// does.
    pub fn write_stack(&self, toml: &str) {
        self.write(
            "desired-state/stack.toml",
            &toml.replace("{project}", &self.project),
        );
    }

    /// Commit everything in the clone (also when nothing changed: each push is a new
    /// commit berth must see) and push it, forced when `force` (history rewritten); the
    /// commit id.
    pub fn commit_and_push(&self, subject: &str, force: bool) -> String {
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
}
