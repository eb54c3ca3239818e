//! A git source for `berth run --git URL` (GitOps): the desired state is read from a
//! fetched commit itself, never from a working tree someone could edit.
//!
//! berth drives the `git` program, as Argo CD does: ssh (with ssh-agent, `known_hosts`),
//! https and local paths, credential helpers and proxies all come with it, and its
//! behaviour is the one operators already know. Each source has a bare repository under
//! the state directory (`git/<key>/repo.git`, the key a hash of the URL):
//!
//! - [`Repo::fetch`]: `git fetch --force --depth=1` of the one branch (or tag) into
//!   `refs/berth/tip`; a force-push is followed (the ref is replaced). Its id and subject
//!   are the commit to deploy. Shallow: berth reads only the commit itself (its tree,
//!   `rev-parse COMMIT:path`), never its history, so history is never fetched.
//! - [`Repo::tree`]: the commit's tree, written once into `trees/<commit>` by streaming
//!   `git archive` into the tar unpacker (never whole in memory; read-only by
//!   convention; the desired state is loaded from there).
//! - [`Repo::relocate`]: paths of the loaded desired state that point into the tree
//!   (config files bound into containers, build contexts, a migrations directory) are
//!   moved to **content-addressed** copies, `objects/<git object id>/<name>`: a commit
//!   that changes none of them resolves to the same desired state, so it is seen, not
//!   applied; a commit that changes one gives it a new path, so its service is recreated.
//!
//! - [`Follow::prune`]: trees and objects no kept generation uses are deleted after each
//!   turn, and git's unreachable objects with them (see there for what is kept).
//!
//! Credentials go to git through its environment, never its command line: an SSH key and
//! `known_hosts` through `GIT_SSH_COMMAND`, a token (from `--token-file`, or the user info
//! of an https URL: `https://TOKEN@host/…`, `https://user:password@host/…`) as an HTTP
//! `Authorization` header through `GIT_CONFIG_*`. git is given the URL without its user
//! info, and berth never shows or stores it with it: the URL is split when the [`Repo`] is
//! made. The token, the password and the header's base64 of them are registered as
//! secrets besides, so no log line, status or history shows them.
//!
//! Every git command runs with `GIT_ALLOW_PROTOCOL` set to [`ALLOWED_PROTOCOLS`].

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
    /// A URL berth will not use as given (the text names it without its user info).
    #[error("{0}")]
    Url(String),
    #[error("the state store: {0}")]
    Store(String),
}

/// The transports git may use for berth (`GIT_ALLOW_PROTOCOL`): local paths (`file`),
/// `git://`, `http(s)://` and ssh, the ones berth documents. Everything else is refused,
/// above all `ext::` (which runs a command the URL names) and `fd::` and other remote
/// helpers, so no URL or submodule makes git run what the operator did not choose.
pub const ALLOWED_PROTOCOLS: &str = "file:git:http:https:ssh";

/// How many of each project's newest generations keep their objects (the copies of the
/// files their containers bind and build from) when the rest are pruned; the last good
/// generation keeps its own besides. A rollback further back than that finds its objects
/// gone.
pub const KEEP_GENERATIONS: i64 = 5;

/// The user info of an http(s) URL, percent-decoded: sent as HTTP basic auth, never put
/// on a command line.
#[derive(Clone, PartialEq)]
struct UrlCredentials {
    user: String,
    /// None for a token given as the user (`https://TOKEN@host/…`).
    password: Option<String>,
}

impl std::fmt::Debug for UrlCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlCredentials(<redacted>)")
    }
}

/// A URL's user info goes only to https and http, as basic auth. ssh keeps its user (the
/// login, no secret) and takes no password; nothing else has a use for either.
fn split_credentials(url: &str) -> Result<(String, Option<UrlCredentials>), GitError> {
    // User info as the text has it: some URLs (`file:`) have none for the parser, which
    // drops it or refuses the URL, and git would be given it all the same.
    let (scheme, authority) = url.split_once("://").map_or(("", ""), |(scheme, rest)| {
        (
            scheme,
            rest.split(['/', '?', '#']).next().unwrap_or_default(),
        )
    });
    let Some(mut u) = url::Url::parse(url)
        .ok()
        .filter(|u| !u.username().is_empty() || u.password().is_some())
    else {
        if authority.contains('@') && !scheme.contains("ssh") {
            return Err(GitError::Url(format!(
                "--git {scheme}://…: a {scheme}:// URL takes no user or password"
            )));
        }
        // A local path, or ssh's `user@host:path`: no user info to take.
        return Ok((url.to_string(), None));
    };
    let decoded = |s: &str| crate::redact::percent_decode(s);
    let credentials = UrlCredentials {
        user: decoded(u.username()),
        password: u.password().map(decoded),
    };
    let scheme = u.scheme().to_string();
    match scheme.as_str() {
        "https" | "http" => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            Ok((u.to_string(), Some(credentials)))
        }
        "ssh" | "git+ssh" | "ssh+git" if credentials.password.is_none() => {
            Ok((url.to_string(), None))
        }
        _ => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            Err(GitError::Url(if scheme.contains("ssh") {
                format!(
                    "--git {u}: ssh takes no password from the URL; give its key with --ssh-key"
                )
            } else {
                format!("--git {u}: a {scheme}:// URL takes no user or password")
            }))
        }
    }
}

/// How long one git command may take (a fetch of a large repository over a slow link
/// included); a hung remote then counts as unreachable.
const GIT_TIMEOUT: Duration = Duration::from_secs(300);

/// One source's repository under the state directory.
#[derive(Debug, Clone)]
pub struct Repo {
    /// The source, its URL without user info (what git is given, and what is shown).
    pub source: GitSource,
    /// The user info the URL came with, for git's environment.
    credentials: Option<UrlCredentials>,
    /// `<state dir>/git/<key>`.
    pub dir: PathBuf,
}

impl Repo {
    /// The source's repository; user info is taken out of its URL here (see the module
    /// doc). A URL whose user info berth cannot use, or user info beside `--token-file`,
    /// is refused.
    pub fn new(mut source: GitSource, state_dir: &Path) -> Result<Repo, GitError> {
        let (url, credentials) = split_credentials(&source.url)?;
        if credentials.is_some() && source.token_file.is_some() {
            return Err(GitError::Url(format!(
                "--git {url}: the URL holds credentials and --token-file gives a token; give one"
            )));
        }
        source.url = url;
        // Keyed by the URL without its user info: a rotated token keeps the repository.
        let key = format!("{:x}", Sha256::digest(source.url.as_bytes()));
        Ok(Repo {
            dir: state_dir.join("git").join(&key[..16]),
            source,
            credentials,
        })
    }

    fn bare(&self) -> PathBuf {
        self.dir.join("repo.git")
    }

    /// The URL as it may be shown: without user info.
    pub fn shown_url(&self) -> String {
        shown_url(&self.source.url)
    }

    /// Register the token (and the URL's password, or its token given as the user) with
    /// the redactor: never shown anywhere.
    pub fn register_secrets(&self) -> Result<(), GitError> {
        let mut secrets = Vec::new();
        if let Some(t) = self.token()? {
            secrets.push(t);
        }
        if let Some(c) = &self.credentials {
            match &c.password {
                Some(p) => secrets.push(p.clone()),
                // A token as the user. A user name is no secret, and hiding a short one
                // would hide that word in every line (`deploy`): tokens are longer.
                None if c.user.len() >= 16 => secrets.push(c.user.clone()),
                None => {}
            }
        }
        // The header git sends carries it encoded: that form is as secret.
        secrets.extend(self.basic_auth()?);
        if !secrets.is_empty() {
            crate::redact::register(&crate::redact::Redactor::new(secrets));
        }
        Ok(())
    }

    /// The basic-auth credentials git sends (base64 of `user:password`), when there are.
    fn basic_auth(&self) -> Result<Option<String>, GitError> {
        if let Some(token) = self.token()? {
            return Ok(Some(basic_auth(&token)));
        }
        Ok(self.credentials.as_ref().map(|c| {
            use base64::Engine;
            let pair = format!("{}:{}", c.user, c.password.as_deref().unwrap_or_default());
            base64::engine::general_purpose::STANDARD.encode(pair)
        }))
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
            .env("GIT_ALLOW_PROTOCOL", ALLOWED_PROTOCOLS)
            // berth's own URL variable may hold credentials: git has no use for it.
            .env_remove("BERTH_GIT")
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
        // Blobs above this are streamed by `git archive` (and stored whole, not as
        // deltas), rather than read into git's memory: the default is 512 MiB.
        let mut config = vec![("core.bigFileThreshold", "16m".to_string())];
        if let Some(basic) = self.basic_auth()? {
            config.push(("http.extraHeader", format!("Authorization: Basic {basic}")));
        }
        cmd.env("GIT_CONFIG_COUNT", config.len().to_string());
        for (i, (key, value)) in config.into_iter().enumerate() {
            cmd.env(format!("GIT_CONFIG_KEY_{i}"), key)
                .env(format!("GIT_CONFIG_VALUE_{i}"), value);
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
                "--depth=1",
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

    /// The commit's tree on disk, `trees/<commit>`: written once, from `git archive`
    /// streamed through a pipe into the tar unpacker, so a large file costs disk, not
    /// memory.
    pub async fn tree(&self, commit: &Commit) -> Result<PathBuf, GitError> {
        let dest = self.dir.join("trees").join(&commit.id);
        if dest.is_dir() {
            return Ok(dest);
        }
        let mut cmd = self.git()?;
        cmd.arg("--git-dir")
            .arg(self.bare())
            .args(["archive", "--format=tar", &commit.id])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(GitError::Spawn)?;
        let stdout = child.stdout.take().expect("piped");
        let stdout = std::fs::File::from(stdout.into_owned_fd().map_err(GitError::Spawn)?);
        let stderr = child.stderr.take().expect("piped");
        let said = tokio::spawn(tail(stderr));
        // Whether git ended well, for the unpacker: an archive cut short (a missing
        // commit, a killed git) is never published as the commit's tree.
        let (whole, is_whole) = std::sync::mpsc::channel::<bool>();
        let unpacked = tokio::task::spawn_blocking({
            let dest = dest.clone();
            move || {
                publish(&dest, |tmp| {
                    let mut archive = tar::Archive::new(stdout);
                    let unpacked = archive.unpack(tmp);
                    // What follows the end of the archive (git pads it) is read too, so
                    // git never writes into a closed pipe.
                    let drained = std::io::copy(&mut archive.into_inner(), &mut std::io::sink());
                    if is_whole.recv() != Ok(true) {
                        return Err(GitError::Failed {
                            what: "archive".into(),
                            message: "git did not finish the archive".into(),
                        });
                    }
                    unpacked.and(drained.map(drop)).map_err(io(tmp))
                })
            }
        });
        let finished = tokio::time::timeout(GIT_TIMEOUT, async {
            let status = child.wait().await;
            let _ = whole.send(status.as_ref().is_ok_and(|s| s.success()));
            (status, unpacked.await)
        })
        .await;
        let failed = |message: String| GitError::Failed {
            what: "archive".into(),
            message,
        };
        let Ok((status, unpacked)) = finished else {
            // Killed when dropped: the unpacker then reads the end of its pipe and stops.
            return Err(failed(format!(
                "no answer within {}s",
                GIT_TIMEOUT.as_secs()
            )));
        };
        let status = status.map_err(GitError::Spawn)?;
        if !status.success() {
            let stderr = said.await.unwrap_or_default();
            return Err(failed(crate::redact::registered_text(&hide_userinfo(
                stderr.trim(),
            ))));
        }
        unpacked.map_err(|e| failed(format!("the unpacker stopped: {e}")))??;
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
            && matches!(
                crate::migrate::Runner::of(m),
                crate::migrate::Runner::Directory { .. }
            )
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
                // The loader refused every other link already (spec::trust); checked
                // again here, where a relative link that climbs out would start to mean
                // a host path: berth itself reads the copy (migrations, .dockerignore).
                if !crate::spec::trust::same_after_copy(&target) {
                    return Err(io(entry.path())(std::io::Error::other(format!(
                        "a symlink to {} in a directory of the commit: a relative link is copied only when it points down inside it",
                        target.display()
                    ))));
                }
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
    /// A shared `flock` on the repository's `users` file, held from the first fetch on:
    /// [`Follow::prune`] deletes only when no other berth holds one (another daemon
    /// following the same URL may be between copying an object and recording the
    /// generation that uses it).
    users: std::sync::Mutex<Option<std::fs::File>>,
    /// What the last prune saw (the newest commit, the newest kept generation): nothing
    /// to do until one changes.
    pruned: std::sync::Mutex<Option<(String, Option<i64>)>>,
}

impl Follow {
    pub fn new(repo: Repo, host_dir: PathBuf) -> Follow {
        Follow {
            repo,
            host_dir,
            latest: Default::default(),
            problem: Default::default(),
            sync: tokio::sync::Notify::new(),
            users: Default::default(),
            pruned: Default::default(),
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
        let fetched = match self.use_repository().await {
            Ok(()) => self.repo.fetch().await,
            Err(e) => Err(e),
        };
        match fetched {
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

impl Follow {
    /// Take this daemon's shared hold on the repository (see [`Follow::users`]), once.
    async fn use_repository(&self) -> Result<(), GitError> {
        if self.users.lock().expect("git lock").is_some() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.repo.dir).map_err(io(&self.repo.dir))?;
        let path = self.repo.dir.join("users");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        // Only a prune holds it exclusively, for as long as it deletes.
        loop {
            match file.try_lock_shared() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(&path)(e)),
            }
        }
        *self.users.lock().expect("git lock") = Some(file);
        Ok(())
    }

    /// Delete the trees and objects no kept generation uses, and git's objects no longer
    /// reachable. Kept:
    ///
    /// - objects (the copies containers bind and build from) of each project's
    ///   [`KEEP_GENERATIONS`] newest generations and of its last good one, with any other
    ///   object the newest fetched commit holds (one not deployed yet, or refused at a
    ///   later step, is not copied again each turn);
    /// - trees (scratch for reading a commit) of the newest fetched commit, of each
    ///   project's newest generation (the one running) and its last good one, and any a
    ///   kept generation's desired state names a path in.
    ///
    /// Every project of the store counts, not only this daemon's: the repository is
    /// shared by URL. Nothing is deleted while another berth uses the repository, nor
    /// when a kept generation's desired state cannot be read. A failure is logged; the
    /// daemon goes on.
    pub async fn prune(&self, store: &crate::store::Store) {
        if let Err(e) = self.try_prune(store).await {
            tracing::warn!(error = %e, "cannot prune the git source's trees and objects");
        }
    }

    async fn try_prune(&self, store: &crate::store::Store) -> Result<(), GitError> {
        let Some(latest) = self.latest() else {
            return Ok(());
        };
        let kept = store
            .kept_generations(KEEP_GENERATIONS)
            .await
            .map_err(|e| GitError::Store(e.to_string()))?;
        let mark = (latest.id.clone(), kept.iter().map(|g| g.id).max());
        if self.pruned.lock().expect("git lock").as_ref() == Some(&mark) {
            return Ok(());
        }
        let trees_dir = self.repo.dir.join("trees");
        let objects_dir = self.repo.dir.join("objects");
        let mut keep = Keep::default();
        keep.trees.insert(latest.id.clone());
        let mut newest: std::collections::BTreeMap<&str, &crate::store::Generation> =
            Default::default();
        let mut good: std::collections::BTreeMap<&str, &crate::store::Generation> =
            Default::default();
        for g in &kept {
            newest.insert(&g.project, g);
            if g.outcome == crate::store::Outcome::Healthy {
                good.insert(&g.project, g);
            }
            keep.named_in(&g.spec_json, &trees_dir, &objects_dir)
                .map_err(|e| GitError::Store(format!("generation {}: {e}", g.id)))?;
        }
        keep.trees.extend(
            newest
                .values()
                .chain(good.values())
                .filter_map(|g| g.commit.clone()),
        );
        let objects = entries(&objects_dir)?;
        keep.objects.extend(self.held_by(&latest, &objects).await?);

        let Some(_exclusive) = self.exclusive().await? else {
            tracing::debug!("another berth uses the git repository; nothing pruned");
            return Ok(());
        };
        let trees = entries(&trees_dir)?;
        let doomed: Vec<PathBuf> = trees
            .iter()
            .filter(|t| !keep.trees.contains(*t))
            .map(|t| trees_dir.join(t))
            .chain(
                objects
                    .iter()
                    .filter(|o| !keep.objects.contains(*o))
                    .map(|o| objects_dir.join(o)),
            )
            .collect();
        let count = doomed.len();
        tokio::task::spawn_blocking(move || {
            for path in doomed {
                std::fs::remove_dir_all(&path)
                    .or_else(|_| std::fs::remove_file(&path))
                    .map_err(io(&path))?;
            }
            Ok::<_, GitError>(())
        })
        .await
        .map_err(|e| GitError::Store(e.to_string()))??;
        // git's copies of commits no ref reaches any more (earlier tips) go too.
        self.repo.run("prune", &["prune", "--expire=now"]).await?;
        self.repo
            .run(
                "gc",
                &["-c", "gc.pruneExpire=now", "gc", "--auto", "--quiet"],
            )
            .await?;
        if count > 0 {
            tracing::info!(
                removed = count,
                "pruned trees and objects no kept generation uses"
            );
        }
        *self.pruned.lock().expect("git lock") = Some(mark);
        Ok(())
    }

    /// The names among `objects` (object ids) that `commit` holds, as a blob or a tree.
    async fn held_by(&self, commit: &Commit, objects: &[String]) -> Result<Vec<String>, GitError> {
        use tokio::io::AsyncBufReadExt;
        if objects.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: std::collections::BTreeSet<&str> = objects.iter().map(String::as_str).collect();
        let mut cmd = self.repo.git()?;
        cmd.arg("--git-dir")
            .arg(self.repo.bare())
            .args(["ls-tree", "-r", "-t", "-z", &commit.id])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().map_err(GitError::Spawn)?;
        // One entry at a time: a repository of many files is never listed in memory.
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped"));
        let mut held = Vec::new();
        let mut entry = Vec::new();
        let listed = async {
            loop {
                entry.clear();
                if lines.read_until(0, &mut entry).await? == 0 {
                    return Ok::<_, std::io::Error>(());
                }
                // `<mode> <type> <object id>\t<path>`
                let text = String::from_utf8_lossy(&entry);
                let oid = text
                    .split('\t')
                    .next()
                    .and_then(|head| head.split(' ').nth(2))
                    .unwrap_or_default();
                if wanted.contains(oid) {
                    held.push(oid.to_string());
                }
            }
        };
        let listed = tokio::time::timeout(GIT_TIMEOUT, listed).await;
        let status = child.wait().await.map_err(GitError::Spawn)?;
        match listed {
            Ok(Ok(())) if status.success() => Ok(held),
            Ok(Err(e)) => Err(GitError::Spawn(e)),
            _ => Err(GitError::Failed {
                what: "ls-tree".into(),
                message: format!("cannot list commit {}", commit.short()),
            }),
        }
    }

    /// The repository to ourselves: the shared hold made exclusive, when no other berth
    /// holds one; given back (shared) when the guard is dropped.
    async fn exclusive(&self) -> Result<Option<Exclusive<'_>>, GitError> {
        self.use_repository().await?;
        let guard = self.users.lock().expect("git lock");
        let file = guard.as_ref().expect("held since use_repository");
        match file.try_lock() {
            Ok(()) => Ok(Some(Exclusive(&self.users))),
            Err(std::fs::TryLockError::WouldBlock) => {
                // Converting a flock is not atomic: the shared hold may be gone. Take it
                // again (only a prune holds it exclusively, briefly).
                let _ = file.lock_shared();
                Ok(None)
            }
            Err(std::fs::TryLockError::Error(e)) => Err(io(&self.repo.dir.join("users"))(e)),
        }
    }
}

/// The repository held exclusively for a prune (see [`Follow::exclusive`]).
struct Exclusive<'a>(&'a std::sync::Mutex<Option<std::fs::File>>);

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        if let Some(file) = self.0.lock().expect("git lock").as_ref() {
            let _ = file.lock_shared();
        }
    }
}

/// What a prune keeps: names of entries under `trees/` and `objects/`.
#[derive(Debug, Default)]
struct Keep {
    trees: std::collections::BTreeSet<String>,
    objects: std::collections::BTreeSet<String>,
}

impl Keep {
    /// Add every tree and object a generation's desired state (its JSON) names a path in,
    /// but for the files it was read from (they name its commit's tree, which is kept
    /// for the running and last good generations only).
    fn named_in(
        &mut self,
        spec_json: &str,
        trees_dir: &Path,
        objects_dir: &Path,
    ) -> Result<(), serde_json::Error> {
        let mut spec: serde_json::Value = serde_json::from_str(spec_json)?;
        if let Some(o) = spec.as_object_mut() {
            o.remove("files");
        }
        let mut stack = vec![&spec];
        while let Some(v) = stack.pop() {
            match v {
                serde_json::Value::String(s) => {
                    let p = Path::new(s);
                    for (dir, set) in [
                        (trees_dir, &mut self.trees),
                        (objects_dir, &mut self.objects),
                    ] {
                        if let Ok(rest) = p.strip_prefix(dir)
                            && let Some(first) = rest.components().next()
                        {
                            set.insert(first.as_os_str().to_string_lossy().into_owned());
                        }
                    }
                }
                serde_json::Value::Array(a) => stack.extend(a),
                serde_json::Value::Object(o) => stack.extend(o.values()),
                _ => {}
            }
        }
        Ok(())
    }
}

/// The names in `dir` (none when it does not exist).
fn entries(dir: &Path) -> Result<Vec<String>, GitError> {
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut names = Vec::new();
    for entry in read {
        let entry = entry.map_err(io(dir))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

/// The end of what a child wrote (its last 4 KiB), read to its end.
async fn tail(mut from: impl tokio::io::AsyncRead + Unpin) -> String {
    use tokio::io::AsyncReadExt;
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 4096 {
            kept.drain(..kept.len() - 4096);
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
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

/// Whether `url` holds credentials berth would hide: user info but for an ssh login.
pub fn has_credentials(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| {
        u.password().is_some() || (!u.username().is_empty() && !u.scheme().contains("ssh"))
    })
}

/// A URL as it may be shown: without user info (`https://TOKEN@host/…` and
/// `https://user:password@host/…` show as `https://host/…`), but for an ssh URL's user,
/// which is the login and no secret (its password, if any, goes).
pub fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_password(None);
            if !u.scheme().contains("ssh") {
                let _ = u.set_username("");
            }
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// URLs in free text (git's own messages) with their user info taken out as
/// [`shown_url`] does.
fn hide_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let scheme_start = head[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c)))
            .map_or(0, |j| j + 1);
        let ssh = head[scheme_start..i].contains("ssh");
        let end = tail
            .find(|c: char| c == '/' || c == '\'' || c == '"' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) if ssh => {
                out.push_str(authority[..at].split(':').next().unwrap_or_default());
                out.push_str(&authority[at..]);
            }
            Some(at) => out.push_str(&authority[at + 1..]),
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

    fn source(url: &str) -> GitSource {
        GitSource {
            url: url.into(),
            reference: Reference::Branch("main".into()),
            path: "desired-state".into(),
            poll: Duration::from_secs(60),
            ssh_key: None,
            known_hosts: None,
            token_file: None,
        }
    }

    #[test]
    fn user_info_in_a_url_is_never_shown() {
        assert_eq!(
            shown_url("https://bot:s3cret@git.example/team/stack.git"),
            "https://git.example/team/stack.git"
        );
        assert_eq!(
            shown_url("https://ghp_TOKEN0123456789@git.example/team/stack.git"),
            "https://git.example/team/stack.git"
        );
        // An ssh login is no secret; a password there is.
        assert_eq!(
            shown_url("ssh://git@git.example/team/stack.git"),
            "ssh://git@git.example/team/stack.git"
        );
        assert_eq!(
            shown_url("ssh://git:pw@git.example/team/stack.git"),
            "ssh://git@git.example/team/stack.git"
        );
        assert_eq!(
            shown_url("git@host:team/stack.git"),
            "git@host:team/stack.git"
        );
        assert_eq!(shown_url("/srv/stack.git"), "/srv/stack.git");
        for text in [
            "fatal: unable to access 'https://bot:s3cret@git.example/x/':",
            "fatal: unable to access 'https://s3cret@git.example/x/':",
            "see git+https://s3cret@git.example/x and http://bot:s3cret@h",
        ] {
            let shown = hide_userinfo(text);
            assert!(
                !shown.contains("s3cret") && !shown.contains("bot"),
                "{shown}"
            );
            assert!(shown.contains("git.example/x"), "{shown}");
        }
        assert_eq!(
            hide_userinfo("ssh://git:pw@host/x failed"),
            "ssh://git@host/x failed"
        );
        assert!(has_credentials("https://TOKEN@host/x"));
        assert!(has_credentials("https://u:p@host/x"));
        assert!(!has_credentials("ssh://git@host/x"));
        assert!(!has_credentials("https://host/x"));
        assert!(!has_credentials("git@host:x"));
    }

    #[tokio::test]
    async fn credentials_go_to_git_in_its_environment_and_the_url_without_them() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::new(
            source("https://bot:p%40ss-CRED-7@git.example/team/stack.git"),
            dir.path(),
        )
        .unwrap();
        assert_eq!(repo.source.url, "https://git.example/team/stack.git");
        assert_eq!(repo.shown_url(), "https://git.example/team/stack.git");
        assert!(!format!("{repo:?}").contains("CRED"), "{repo:?}");
        // Keyed by the URL without user info: a rotated password keeps the repository.
        let same = Repo::new(source("https://git.example/team/stack.git"), dir.path()).unwrap();
        assert_eq!(repo.dir, same.dir);
        let basic = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode("bot:p@ss-CRED-7")
        };
        let cmd = repo.git().unwrap();
        let cmd = cmd.as_std();
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(!args.concat().contains("CRED"), "{args:?}");
        let env: std::collections::BTreeMap<String, String> = cmd
            .get_envs()
            .filter_map(|(k, v)| {
                Some((
                    k.to_string_lossy().into_owned(),
                    v?.to_string_lossy().into_owned(),
                ))
            })
            .collect();
        assert_eq!(env["GIT_ALLOW_PROTOCOL"], "file:git:http:https:ssh");
        assert!(
            env.values()
                .any(|v| v == &format!("Authorization: Basic {basic}")),
            "{env:?}"
        );
        repo.register_secrets().unwrap();
        let shown = crate::redact::registered_text(&format!("p@ss-CRED-7 p%40ss-CRED-7 {basic}"));
        assert!(
            !shown.contains("CRED") && !shown.contains(&basic),
            "{shown}"
        );

        // A token as the user: sent as the user, with an empty password.
        let repo = Repo::new(
            source("https://tok-AS-USER-0123456789@git.example/x.git"),
            dir.path(),
        )
        .unwrap();
        assert_eq!(repo.source.url, "https://git.example/x.git");
        repo.register_secrets().unwrap();
        assert!(
            !crate::redact::registered_text("tok-AS-USER-0123456789").contains("AS-USER"),
            "a token given as the user is a secret"
        );
    }

    #[test]
    fn user_info_berth_cannot_use_is_refused_without_showing_it() {
        let dir = tempfile::tempdir().unwrap();
        for (url, says) in [
            ("ssh://git:pw-REFUSED@host/x.git", "ssh takes no password"),
            (
                "file://u:pw-REFUSED@/srv/x.git",
                "takes no user or password",
            ),
            ("git://u-REFUSED@host/x.git", "takes no user or password"),
        ] {
            let err = Repo::new(source(url), dir.path()).unwrap_err().to_string();
            assert!(err.contains(says) && !err.contains("REFUSED"), "{err}");
        }
        let mut both = source("https://u:pw-REFUSED@host/x.git");
        both.token_file = Some(dir.path().join("token"));
        let err = Repo::new(both, dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("--token-file") && !err.contains("REFUSED"),
            "{err}"
        );
        // ssh's login stays.
        let repo = Repo::new(source("ssh://git@host/x.git"), dir.path()).unwrap();
        assert_eq!(repo.source.url, "ssh://git@host/x.git");
    }

    fn git_in(dir: &Path, args: &[&str]) {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.org")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.org")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[tokio::test]
    async fn a_commit_is_fetched_shallow_and_its_tree_streamed_to_disk() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(work.join("desired-state")).unwrap();
        git_in(&work, &["init", "--quiet", "-b", "main"]);
        for (i, text) in ["one", "two"].iter().enumerate() {
            std::fs::write(work.join("desired-state/a.toml"), text).unwrap();
            std::fs::write(work.join("big"), vec![i as u8; 3 << 20]).unwrap();
            git_in(&work, &["add", "-A"]);
            git_in(&work, &["commit", "--quiet", "-m", text]);
        }
        let repo = Repo::new(source(work.to_str().unwrap()), &dir.path().join("state")).unwrap();
        let commit = repo.fetch().await.unwrap();
        assert_eq!(commit.subject, "two");
        // Shallow: the commit, not its parent.
        let shallow = std::fs::read_to_string(repo.bare().join("shallow")).unwrap();
        assert_eq!(shallow.trim(), commit.id);
        let tree = repo.tree(&commit).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(tree.join("desired-state/a.toml")).unwrap(),
            "two"
        );
        assert_eq!(std::fs::read(tree.join("big")).unwrap(), vec![1u8; 3 << 20]);
        // A commit git does not have: its message, no half-written tree.
        let missing = Commit {
            id: "0".repeat(40),
            subject: String::new(),
        };
        let err = repo.tree(&missing).await.unwrap_err().to_string();
        assert!(err.contains("archive"), "{err}");
        assert!(!repo.dir.join("trees").join("0".repeat(40)).exists());
    }

    #[test]
    fn a_prune_keeps_what_a_generation_names_but_the_files_it_was_read_from() {
        let trees = Path::new("/var/lib/berth/git/k/trees");
        let objects = Path::new("/var/lib/berth/git/k/objects");
        let spec = serde_json::json!({
            "files": ["/var/lib/berth/git/k/trees/c1/desired-state/stack.toml"],
            "services": {"web": {"volumes": [
                {"Bind": {"source": "/var/lib/berth/git/k/objects/b0b/web.conf"}},
                {"Bind": {"source": "/var/lib/berth/git/k/trees/c2/data"}},
                {"Bind": {"source": "/srv/elsewhere/objects/x"}}
            ]}},
        });
        let mut keep = Keep::default();
        keep.named_in(&spec.to_string(), trees, objects).unwrap();
        assert_eq!(keep.objects.iter().collect::<Vec<_>>(), ["b0b"]);
        assert_eq!(keep.trees.iter().collect::<Vec<_>>(), ["c2"]);
        assert!(keep.named_in("not json", trees, objects).is_err());
    }

    #[test]
    fn the_token_and_its_basic_auth_header_value_are_registered_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "tok-REGISTER-test-1234\n").unwrap();
        let repo = Repo::new(
            GitSource {
                token_file: Some(file),
                ..source("https://git.example/team/stack.git")
            },
            dir.path(),
        )
        .unwrap();
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
        let a = Repo::new(source("/srv/a.git"), Path::new("/var/lib/berth")).unwrap();
        let b = Repo::new(source("/srv/b.git"), Path::new("/var/lib/berth")).unwrap();
        assert_ne!(a.dir, b.dir);
        assert!(a.dir.starts_with("/var/lib/berth/git"));
    }
}
