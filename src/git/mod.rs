//! A git source for `berth run --git URL` (issue 11): the desired state is read from a
//! fetched commit itself, never from a working tree someone could edit.
//!
//! berth drives the `git` program, as Argo CD does: ssh (with ssh-agent, `known_hosts`),
//! https and local paths, credential helpers and proxies all come with it, and its
//! behaviour is the one operators already know. Each source has a bare repository under
//! the state directory (`git/<key>/repo.git`, the key a hash of the URL):
//!
//! - [`Repo::fetch`]: `git fetch --force` of the one branch (or tag) into
//!   `refs/berth/tip`; a force-push is followed (the ref is replaced, old commits stay in
//!   history). Its id and subject are the commit to deploy.
//! - [`Repo::tree`]: the commit's tree, written once with `git archive` into
//!   `trees/<commit>` (read-only by convention; the desired state is loaded from there).
//! - [`Repo::relocate`]: paths of the loaded desired state that point into the tree
//!   (config files bound into containers, build contexts, a migrations directory) are
//!   moved to **content-addressed** copies, `objects/<git object id>/<name>`: a commit
//!   that changes none of them resolves to the same desired state, so it is seen, not
//!   applied; a commit that changes one gives it a new path, so its service is recreated.
//!
//! Credentials come from files and go to git through its environment, never its command
//! line: an SSH key and `known_hosts` through `GIT_SSH_COMMAND`, a token as an HTTP
//! `Authorization` header through `GIT_CONFIG_*`. The token, and the header's base64 of
//! it, are registered as secrets, so no log line, status or history shows them; user info
//! in a URL is hidden the same way.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::process::Command;

/// What berth follows: one branch or one tag of one repository.
#[derive(Debug, Clone, PartialEq)]
pub struct GitSource {
    /// https://…, ssh://…, user@host:path, or a local path.
    pub url: String,
    pub reference: Reference,
    /// The desired state inside the repository: a file or a directory of `*.toml`.
    pub path: PathBuf,
    /// How often the remote is fetched.
    pub poll: Duration,
    /// A private key for ssh (`-i`, with `IdentitiesOnly`).
    pub ssh_key: Option<PathBuf>,
    /// The known_hosts file ssh checks the server against (strictly).
    pub known_hosts: Option<PathBuf>,
    /// A file holding a token for https (sent as HTTP basic auth, `x-access-token:TOKEN`,
    /// which GitHub, GitLab, Gitea and Bitbucket accept).
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Reference {
    Branch(String),
    Tag(String),
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Branch(b) => write!(f, "branch {b}"),
            Reference::Tag(t) => write!(f, "tag {t}"),
        }
    }
}

/// A fetched commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The full object id.
    pub id: String,
    /// The first line of its message.
    pub subject: String,
}

impl Commit {
    /// The id as people read it (12 characters).
    pub fn short(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run git: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("git {what} failed: {message}")]
    Failed { what: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the token file {path}: {source}")]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How long one git command may take (a fetch of a large repository over a slow link
/// included); a hung remote then counts as unreachable.
const GIT_TIMEOUT: Duration = Duration::from_secs(300);

/// One source's repository under the state directory.
#[derive(Debug, Clone)]
pub struct Repo {
    pub source: GitSource,
    /// `<state dir>/git/<key>`.
    pub dir: PathBuf,
}

impl Repo {
    pub fn new(source: GitSource, state_dir: &Path) -> Repo {
        let key = format!("{:x}", Sha256::digest(source.url.as_bytes()));
        Repo {
            dir: state_dir.join("git").join(&key[..16]),
            source,
        }
    }

    fn bare(&self) -> PathBuf {
        self.dir.join("repo.git")
    }

    /// The URL as it may be shown: user info hidden.
    pub fn shown_url(&self) -> String {
        shown_url(&self.source.url)
    }

    /// Register the token (and URL user info) with the redactor: never shown anywhere.
    pub fn register_secrets(&self) -> Result<(), GitError> {
        let mut secrets = Vec::new();
        if let Some(t) = self.token()? {
            // The header git sends carries it encoded: that form is as secret.
            secrets.push(basic_auth(&t));
            secrets.push(t);
        }
        if let Ok(u) = url::Url::parse(&self.source.url)
            && let Some(p) = u.password()
        {
            secrets.push(p.to_string());
        }
        if !secrets.is_empty() {
            crate::redact::register(&crate::redact::Redactor::new(secrets));
        }
        Ok(())
    }

    fn token(&self) -> Result<Option<String>, GitError> {
        let Some(path) = &self.source.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| GitError::Token {
            path: path.clone(),
            source,
        })?;
        Ok(Some(text.trim().to_string()).filter(|t| !t.is_empty()))
    }

    /// A git command with the source's credentials in its environment, never prompting.
    fn git(&self) -> Result<Command, GitError> {
        let mut cmd = Command::new("git");
        cmd.env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "true")
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if self.source.ssh_key.is_some() || self.source.known_hosts.is_some() {
            let mut ssh = String::from("ssh -o BatchMode=yes");
            if let Some(key) = &self.source.ssh_key {
                ssh += &format!(" -i {} -o IdentitiesOnly=yes", shell_quote(key));
            }
            if let Some(kh) = &self.source.known_hosts {
                ssh += &format!(
                    " -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes",
                    shell_quote(kh)
                );
            }
            cmd.env("GIT_SSH_COMMAND", ssh);
        }
        if let Some(token) = self.token()? {
            let basic = basic_auth(&token);
            cmd.env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env(
                    "GIT_CONFIG_VALUE_0",
                    format!("Authorization: Basic {basic}"),
                );
        }
        Ok(cmd)
    }

    /// Run git with `args` in the bare repository; its stdout.
    async fn run(&self, what: &str, args: &[&str]) -> Result<Vec<u8>, GitError> {
        let mut cmd = self.git()?;
        cmd.arg("--git-dir").arg(self.bare()).args(args);
        let out = tokio::time::timeout(GIT_TIMEOUT, cmd.output())
            .await
            .map_err(|_| GitError::Failed {
                what: what.to_string(),
                message: format!("no answer within {}s", GIT_TIMEOUT.as_secs()),
            })?
            .map_err(GitError::Spawn)?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            // The end of what git (and ssh) said: ssh's banners are left out.
            let lines: Vec<&str> = stderr
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('@'))
                .collect();
            let message = lines[lines.len().saturating_sub(4)..].join("; ");
            return Err(GitError::Failed {
                what: what.to_string(),
                message: crate::redact::registered_text(&hide_userinfo(&message)),
            });
        }
        Ok(out.stdout)
    }

    /// Fetch the branch (or tag) and name its tip. A force-push is followed.
    pub async fn fetch(&self) -> Result<Commit, GitError> {
        let bare = self.bare();
        if !bare.join("HEAD").exists() {
            std::fs::create_dir_all(&self.dir).map_err(|source| GitError::Io {
                path: self.dir.clone(),
                source,
            })?;
            let tmp = self.dir.join(format!(".init-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            let out = self
                .git()?
                .args(["init", "--bare", "--quiet"])
                .arg(&tmp)
                .output()
                .await
                .map_err(GitError::Spawn)?;
            if !out.status.success() {
                return Err(GitError::Failed {
                    what: "init".into(),
                    message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
            std::fs::rename(&tmp, &bare).map_err(|source| GitError::Io {
                path: bare.clone(),
                source,
            })?;
        }
        let refspec = match &self.source.reference {
            Reference::Branch(b) => format!("+refs/heads/{b}:refs/berth/tip"),
            Reference::Tag(t) => format!("+refs/tags/{t}:refs/berth/tip"),
        };
        self.run(
            &format!("fetch of {} {}", self.shown_url(), self.source.reference),
            &[
                "fetch",
                "--quiet",
                "--no-tags",
                "--no-write-fetch-head",
                "--force",
                "--",
                &self.source.url,
                &refspec,
            ],
        )
        .await?;
        let out = self
            .run(
                "log",
                &[
                    "log",
                    "-1",
                    "--format=%H%n%s",
                    "refs/berth/tip^{commit}",
                    "--",
                ],
            )
            .await?;
        let text = String::from_utf8_lossy(&out);
        let mut lines = text.lines();
        let id = lines.next().unwrap_or_default().trim().to_string();
        let subject = lines.next().unwrap_or_default().trim().to_string();
        Ok(Commit { id, subject })
    }

    /// The commit's tree on disk, `trees/<commit>`: written once, from `git archive`.
    pub async fn tree(&self, commit: &Commit) -> Result<PathBuf, GitError> {
        let dest = self.dir.join("trees").join(&commit.id);
        if dest.is_dir() {
            return Ok(dest);
        }
        let tar = self
            .run("archive", &["archive", "--format=tar", &commit.id])
            .await?;
        let tar = &tar[..];
        publish(&dest, |tmp| {
            tar::Archive::new(tar).unpack(tmp).map_err(io(tmp))
        })?;
        Ok(dest)
    }

    /// The object id of `rel` (a path inside the repository) at `commit`; None when the
    /// commit has no such path.
    async fn object_id(&self, commit: &Commit, rel: &Path) -> Option<String> {
        let spec = format!("{}:{}", commit.id, rel.display());
        self.run("rev-parse", &["rev-parse", "--verify", "--quiet", &spec])
            .await
            .ok()
            .map(|o| String::from_utf8_lossy(&o).trim().to_string())
            .filter(|id| !id.is_empty())
    }

    /// Move every path of `d` that points into `tree` (the commit's tree) to a
    /// content-addressed copy (see the module doc).
    pub async fn relocate(
        &self,
        d: &mut crate::spec::DesiredState,
        tree: &Path,
        commit: &Commit,
    ) -> Result<(), GitError> {
        let mut paths: Vec<&mut PathBuf> = Vec::new();
        for s in d.services.values_mut() {
            for v in &mut s.volumes {
                if let crate::spec::Volume::Bind { source, .. } = v {
                    paths.push(source);
                }
            }
            if let Some(b) = &mut s.build {
                paths.push(&mut b.context);
            }
        }
        if let Some(m) = &mut d.migrations
            && m.job.is_none()
        {
            paths.push(&mut m.source);
        }
        let real_tree = crate::spec::trust::resolve(tree).map_err(io(tree))?;
        for p in paths {
            if !p.starts_with(tree) {
                continue;
            }
            // Where it really is: a symlink to elsewhere in the tree is resolved, so the
            // copy is of the file it names, addressed by that file's object id (not the
            // link's, which stays the same when the file changes). One that leaves the
            // tree was refused by the loader (docs/design.md §12), or taken to where it
            // lands; should one turn up here all the same, berth copies no host file.
            let real = crate::spec::trust::resolve(p).map_err(io(p))?;
            let Ok(rel) = real.strip_prefix(&real_tree).map(Path::to_path_buf) else {
                return Err(io(p)(std::io::Error::other(format!(
                    "resolves to {}, outside the commit's tree",
                    real.display()
                ))));
            };
            let Some(oid) = self.object_id(commit, &rel).await else {
                continue;
            };
            let name = rel
                .file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_else(|| "root".into());
            let dest = self.dir.join("objects").join(&oid).join(&name);
            if !dest.exists() {
                copy_into(&real, &dest)?;
            }
            *p = dest;
        }
        Ok(())
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> GitError + '_ {
    move |source| GitError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `dest` through a temporary sibling that `write` fills, then rename it into
/// place, so a half-written copy never stands under the final name. A `dest` another
/// berth put there meanwhile is the same content: kept.
fn publish(dest: &Path, write: impl FnOnce(&Path) -> Result<(), GitError>) -> Result<(), GitError> {
    let parent = dest.parent().expect("a published path has a parent");
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    let tmp = parent.join(format!(".{name}-{}", std::process::id()));
    let clear = || {
        let _ = std::fs::remove_dir_all(&tmp);
        let _ = std::fs::remove_file(&tmp);
    };
    clear();
    write(&tmp)?;
    match std::fs::rename(&tmp, dest) {
        Ok(()) => Ok(()),
        Err(_) if dest.exists() => {
            clear();
            Ok(())
        }
        Err(e) => Err(io(dest)(e)),
    }
}

/// Copy a file or directory to `dest` (through [`publish`]). Symlinks are never followed:
/// `from` itself must not be one (it is resolved first), and those inside a directory are
/// copied as symlinks.
fn copy_into(from: &Path, dest: &Path) -> Result<(), GitError> {
    let meta = std::fs::symlink_metadata(from).map_err(io(from))?;
    if meta.file_type().is_symlink() {
        return Err(io(from)(std::io::Error::other(
            "is a symlink: berth copies only what it resolves to",
        )));
    }
    publish(dest, |tmp| {
        if !meta.is_dir() {
            return std::fs::copy(from, tmp).map(|_| ()).map_err(io(tmp));
        }
        for entry in walkdir::WalkDir::new(from).follow_links(false) {
            let entry = entry.map_err(|e| io(from)(e.into()))?;
            let rel = entry.path().strip_prefix(from).expect("walked under it");
            let to = tmp.join(rel);
            if entry.file_type().is_dir() {
                std::fs::create_dir_all(&to).map_err(io(&to))?;
            } else if entry.file_type().is_symlink() {
                let target = std::fs::read_link(entry.path()).map_err(io(entry.path()))?;
                std::os::unix::fs::symlink(target, &to).map_err(io(&to))?;
            } else {
                std::fs::copy(entry.path(), &to).map_err(io(&to))?;
            }
        }
        Ok(())
    })
}

/// What the daemon knows of its git source between turns: the newest commit fetched and
/// why the last fetch failed, shared by the poller ([`follow`]), the turn that deploys the
/// newest commit, and the status.
#[derive(Debug)]
pub struct Follow {
    pub repo: Repo,
    /// The host directory standing for the repository's root (`--host-dir`).
    pub host_dir: PathBuf,
    /// The newest commit fetched.
    pub latest: std::sync::Mutex<Option<Commit>>,
    /// Why the last fetch failed (None after a success).
    pub problem: std::sync::Mutex<Option<String>>,
    /// Wakes the poller for a fetch now (`POST /api/v1/sync`).
    pub sync: tokio::sync::Notify,
}

impl Follow {
    pub fn new(repo: Repo, host_dir: PathBuf) -> Follow {
        Follow {
            repo,
            host_dir,
            latest: Default::default(),
            problem: Default::default(),
            sync: tokio::sync::Notify::new(),
        }
    }

    pub fn latest(&self) -> Option<Commit> {
        self.latest.lock().expect("git lock").clone()
    }

    pub fn problem(&self) -> Option<String> {
        self.problem.lock().expect("git lock").clone()
    }

    /// What the source is, as status shows it: `URL branch main, desired-state`.
    pub fn describe(&self) -> String {
        format!(
            "{} {}, {}",
            self.repo.shown_url(),
            self.repo.source.reference,
            self.repo.source.path.display()
        )
    }

    /// One fetch: the newest commit, and whether it is new. A failure is kept for status.
    pub async fn fetch_once(&self) -> Result<bool, GitError> {
        match self.repo.fetch().await {
            Ok(commit) => {
                *self.problem.lock().expect("git lock") = None;
                let mut latest = self.latest.lock().expect("git lock");
                let new = latest.as_ref() != Some(&commit);
                if new {
                    tracing::info!(commit = %commit.short(), subject = %commit.subject, "fetched a new commit");
                }
                *latest = Some(commit);
                Ok(new)
            }
            Err(e) => {
                *self.problem.lock().expect("git lock") = Some(e.to_string());
                Err(e)
            }
        }
    }
}

/// The poller: fetch every `poll` (or at once when [`Follow::sync`] is notified), and call
/// `changed` when the tip moved. A remote that cannot be reached is retried with
/// backoff (1 s doubling up to the poll interval), and `changed` is called after each
/// failure too, so status shows it.
pub async fn follow(
    state: std::sync::Arc<Follow>,
    changed: std::sync::Arc<dyn Fn() + Send + Sync>,
    shutdown: crate::shutdown::Shutdown,
) {
    let poll = state.repo.source.poll;
    let mut backoff = Duration::from_secs(1).min(poll);
    loop {
        let wait = match state.fetch_once().await {
            Ok(new) => {
                backoff = Duration::from_secs(1).min(poll);
                if new {
                    changed();
                }
                poll
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot fetch the git source");
                changed();
                let wait = backoff;
                backoff = (backoff * 2).min(poll.max(Duration::from_secs(1)));
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = state.sync.notified() => {}
            _ = shutdown.requested() => return,
        }
    }
}

/// The credentials of HTTP basic auth for `token`: base64 of `x-access-token:TOKEN`.
fn basic_auth(token: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"))
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// A URL as it may be shown: the password of `https://user:pass@host/…` hidden.
pub fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("<redacted>"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// `https://user:pass@host` in free text (git's own messages) with the password hidden.
fn hide_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c == '\'' || c == '"' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let user = &authority[..at];
                let user = user.split(':').next().unwrap_or_default();
                out.push_str(user);
                if authority[..at].contains(':') {
                    out.push_str(":<redacted>");
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_a_url_is_never_shown() {
        assert_eq!(
            shown_url("https://bot:s3cret@git.example/team/stack.git"),
            "https://bot:%3Credacted%3E@git.example/team/stack.git"
        );
        assert_eq!(
            shown_url("git@host:team/stack.git"),
            "git@host:team/stack.git"
        );
        assert!(
            !hide_userinfo("fatal: unable to access 'https://bot:s3cret@git.example/x/':")
                .contains("s3cret")
        );
    }

    #[test]
    fn the_token_and_its_basic_auth_header_value_are_registered_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "tok-REGISTER-test-1234\n").unwrap();
        let repo = Repo::new(
            GitSource {
                url: "https://git.example/team/stack.git".into(),
                reference: Reference::Branch("main".into()),
                path: "desired-state".into(),
                poll: Duration::from_secs(60),
                ssh_key: None,
                known_hosts: None,
                token_file: Some(file),
            },
            dir.path(),
        );
        repo.register_secrets().unwrap();
        let header = basic_auth("tok-REGISTER-test-1234");
        assert_eq!(
            header,
            "eC1hY2Nlc3MtdG9rZW46dG9rLVJFR0lTVEVSLXRlc3QtMTIzNA=="
        );
        let shown = crate::redact::registered_text(&format!(
            "Authorization: Basic {header} for tok-REGISTER-test-1234"
        ));
        assert!(
            !shown.contains(&header) && !shown.contains("tok-REGISTER-test-1234"),
            "{shown}"
        );
    }

    #[test]
    fn each_url_has_its_own_repository_directory() {
        let src = |url: &str| GitSource {
            url: url.into(),
            reference: Reference::Branch("main".into()),
            path: "desired-state".into(),
            poll: Duration::from_secs(60),
            ssh_key: None,
            known_hosts: None,
            token_file: None,
        };
        let a = Repo::new(src("/srv/a.git"), Path::new("/var/lib/berth"));
        let b = Repo::new(src("/srv/b.git"), Path::new("/var/lib/berth"));
        assert_ne!(a.dir, b.dir);
        assert!(a.dir.starts_with("/var/lib/berth/git"));
    }
}
