//! `berth run`: the controller daemon, following a file or a git repository.

use std::path::{Path, PathBuf};

use crate::cmd::FileArgs;
use crate::exit::OK as EXIT_OK;
use crate::spec;

/// `berth run`'s flags: what it follows, where it listens, how often it resyncs.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub args: FileArgs,
    /// Where the local HTTP endpoint (/healthz, /readyz, /metrics, /api/v1/status,
    /// POST /api/v1/reconcile) listens: IP:PORT, or host-gateway:PORT (the address
    /// containers reach the host by, where the stack's Prometheus scrapes berth).
    /// Repeatable; the first is where `berth status` asks the daemon.
    #[arg(long, default_value = crate::daemon::http::DEFAULT_LISTEN)]
    pub listen: Vec<crate::daemon::http::Listen>,
    /// Reconcile at least this often, even when nothing triggered it.
    #[arg(long, default_value = "5m", value_parser = parse_resync)]
    pub resync: std::time::Duration,
    /// A file holding the API token (never logged): requests that change something
    /// carry it as `Authorization: Bearer TOKEN`. POST /api/v1/sync (a git host's
    /// webhook: fetch now) needs it on every listener, POST /api/v1/reconcile on a
    /// listener that is not loopback, such as host-gateway:PORT; without it those
    /// serve only the read-only routes. `--sync-token-file` is the same flag.
    #[arg(long, alias = "sync-token-file", value_name = "PATH")]
    pub api_token_file: Option<PathBuf>,
    /// Serve the status page (/, docs/status-page.md) on listeners that are not loopback
    /// too, to requests that carry the API token (a header, or the cookie /login?token=
    /// sets); with it, /api/v1/status there needs the token as well. Loopback listeners
    /// always serve the page.
    #[arg(long, requires = "api_token_file")]
    pub ui: bool,
    #[command(flatten)]
    pub git: Box<GitArgs>,
}

/// `berth run --git`: follow a git repository instead of a file (docs/gitops.md).
#[derive(clap::Args, Debug, Clone)]
pub struct GitArgs {
    /// The repository to deploy from: https://…, ssh://…, user@host:path, or a local
    /// path. The desired state is read from the fetched commit, never a working tree.
    /// Credentials in it (https://TOKEN@host/…, https://user:password@host/…) are never
    /// shown, but on the command line every user of the host sees them in `ps`: give such
    /// a URL in BERTH_GIT or with --git-url-file.
    // Its id is not `url`: `url` is the group of it and --git-url-file, which the
    // other flags require.
    #[arg(
        long = "git",
        id = "git_url",
        group = "url",
        env = "BERTH_GIT",
        value_name = "URL"
    )]
    pub url: Option<String>,
    /// A file holding the repository's URL (instead of --git): credentials in it stay
    /// out of the command line.
    #[arg(long = "git-url-file", group = "url", value_name = "FILE")]
    pub url_file: Option<PathBuf>,
    /// The branch to follow.
    #[arg(long, default_value = "main", requires = "url")]
    pub branch: String,
    /// Follow a tag instead of a branch.
    #[arg(long, conflicts_with = "branch", requires = "url")]
    pub tag: Option<String>,
    /// The desired state inside the repository: a file or a directory of *.toml.
    #[arg(long = "path", default_value = "desired-state", requires = "url")]
    pub path: PathBuf,
    /// How often the repository is fetched.
    #[arg(long, default_value = "1m", value_parser = crate::spec::duration::parse, requires = "url")]
    pub poll: std::time::Duration,
    /// The host directory standing for the repository's root: paths of the desired state
    /// that the commit does not hold (.env, data/) are taken from here.
    #[arg(long, default_value = ".", requires = "url")]
    pub host_dir: PathBuf,
    /// A private key for ssh remotes.
    #[arg(long, requires = "url")]
    pub ssh_key: Option<PathBuf>,
    /// The known_hosts file ssh checks the server against (strictly).
    #[arg(long, requires = "url")]
    pub known_hosts: Option<PathBuf>,
    /// A file holding a token for https remotes (never logged).
    #[arg(long, requires = "url")]
    pub token_file: Option<PathBuf>,
    /// A host path a commit may name beyond its tree and --host-dir (repeatable): a bind
    /// source, env file, build context, data, backup or snapshot directory at or under
    /// it, matched by whole path components once symlinks are resolved.
    #[arg(long = "allow-host-path", value_name = "PATH", requires = "url")]
    pub allow_host_path: Vec<PathBuf>,
    /// A variable of berth's own environment that `${...}` in a commit may read
    /// (repeatable); otherwise a commit reads only the project env file.
    #[arg(long = "pass-env", value_name = "NAME", requires = "url")]
    pub pass_env: Vec<String>,
}

impl GitArgs {
    /// The source, when `--git` or `--git-url-file` was given.
    pub fn source(&self) -> anyhow::Result<Option<crate::git::GitSource>> {
        let url = match (&self.url, &self.url_file) {
            (_, Some(file)) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| anyhow::anyhow!("--git-url-file {}: {e}", file.display()))?;
                let url = text.trim().to_string();
                anyhow::ensure!(
                    !url.is_empty() && !url.contains('\n'),
                    "--git-url-file {}: expected one URL on one line",
                    file.display()
                );
                url
            }
            (Some(url), None) => {
                if crate::git::has_credentials(url)
                    && std::env::args_os().any(|a| a.to_string_lossy().contains(url.as_str()))
                {
                    tracing::warn!(
                        "the --git URL holds credentials, which every user of this host can read in `ps`; give it in BERTH_GIT or with --git-url-file"
                    );
                }
                url.clone()
            }
            (None, None) => return Ok(None),
        };
        Ok(Some(crate::git::GitSource {
            url,
            reference: match &self.tag {
                Some(t) => crate::git::Reference::Tag(t.clone()),
                None => crate::git::Reference::Branch(self.branch.clone()),
            },
            path: self.path.clone(),
            poll: self.poll,
            ssh_key: self.ssh_key.clone(),
            known_hosts: self.known_hosts.clone(),
            token_file: self.token_file.clone(),
        }))
    }
}

pub async fn run(
    Args {
        args,
        listen,
        resync,
        api_token_file,
        ui,
        git,
    }: Args,
    state_path: &Path,
) -> anyhow::Result<i32> {
    let state_dir = std::path::absolute(state_path)?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let follow = match git.source()? {
        Some(source) => {
            let repo = crate::git::Repo::new(source, &state_dir)?;
            repo.register_secrets()?;
            Some(std::sync::Arc::new(crate::git::Follow::new(
                repo,
                std::path::absolute(&git.host_dir)?,
            )))
        }
        None => None,
    };
    let api_token = match &api_token_file {
        Some(path) => {
            let token = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?
                .trim()
                .to_string();
            anyhow::ensure!(!token.is_empty(), "{} is empty", path.display());
            crate::redact::register(&crate::redact::Redactor::new(vec![token.clone()]));
            Some(token)
        }
        None => None,
    };
    crate::daemon::run::run(crate::daemon::run::Settings {
        target: crate::daemon::turn::Target {
            selection: args.selection(),
            file: args.file,
            state: state_path.to_path_buf(),
            git: follow,
            grants: spec::Grants::new(&git.allow_host_path, &git.pass_env)?,
        },
        listen,
        resync,
        api_token,
        ui,
    })
    .await?;
    Ok(EXIT_OK)
}

/// `--resync`: a duration of at least a second (0 would reconcile without pause) and at
/// most a year, as every duration berth accepts.
fn parse_resync(text: &str) -> Result<std::time::Duration, String> {
    let d = crate::spec::duration::parse(text)?;
    if d < std::time::Duration::from_secs(1) {
        return Err(format!("--resync {text:?} is shorter than 1s"));
    }
    Ok(d)
}
