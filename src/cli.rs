//! The command line: the contract other tools and scripts rely on (docs/design.md "Command line").
//!
//! Exit codes: 0 converged; 1 runtime error; 2 invalid desired state (nothing changed);
//! 3 gate failed and rolled back; 4 gate failed and the rollback failed too (degraded);
//! 5 desired state poisoned. With `auto_revert = false` a failed gate leaves the stack as
//! it is and exits 1.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::diag::Diagnostics;
use crate::lock::ProjectLock;
use crate::observe::observe;
use crate::plan::plan;
use crate::reconcile::{ApplyOutcome, Options};
use crate::redact::Redactor;
use crate::report::Reporter;
use crate::runtime::docker::DockerRuntime;
use crate::shutdown::Shutdown;
use crate::spec::{self, DesiredState};
use crate::status::{ProjectStatus, shown_outcome};
use crate::store::{Store, format_ms};

pub use crate::status::exit::{
    DEGRADED as EXIT_DEGRADED, INVALID as EXIT_INVALID, OK as EXIT_OK, POISONED as EXIT_POISONED,
    ROLLED_BACK as EXIT_ROLLED_BACK, RUNTIME as EXIT_RUNTIME,
};

#[derive(Parser, Debug)]
#[command(
    name = "berth",
    version,
    about = "Converge a Docker host to a desired-state TOML, gated on health."
)]
pub struct Cli {
    /// The state store (SQLite file).
    #[arg(long, global = true, env = "BERTH_STATE")]
    pub state: Option<PathBuf>,
    /// How log lines look: `auto` (human lines on a terminal, journald-friendly lines
    /// without colours or timestamps under systemd), `text`, or `json` (one object a line).
    #[arg(long, global = true, env = "BERTH_LOG_FORMAT", default_value = "auto")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines look (`--log-format`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

#[derive(clap::Args, Debug, Clone)]
pub struct FileArgs {
    /// Desired state: a TOML file or a directory of *.toml files.
    #[arg(
        short = 'f',
        long = "file",
        env = "BERTH_FILE",
        default_value = "desired-state"
    )]
    pub file: PathBuf,
    /// Enable services of this profile (repeatable), besides [project].profiles.
    #[arg(long = "profile")]
    pub profiles: Vec<String>,
    /// Leave this service out (repeatable, or comma-separated): for a host that cannot
    /// get its image. A running container of it is removed like any dropped service.
    #[arg(long = "exclude", value_delimiter = ',')]
    pub exclude: Vec<String>,
}

impl FileArgs {
    pub fn selection(&self) -> spec::Selection {
        spec::Selection {
            profiles: self.profiles.clone(),
            exclude: self.exclude.clone(),
            overlay: None,
        }
    }
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

/// How a converging command treats the project's lock.
#[derive(clap::Args, Debug, Clone)]
pub struct LockArgs {
    /// When another berth process is converging this project, exit 1 at once (naming it)
    /// instead of waiting for it.
    #[arg(long)]
    pub no_wait: bool,
}

/// Which project a command about stored generations means.
#[derive(clap::Args, Debug, Clone)]
pub struct ProjectArg {
    /// The project (default: the only project in the state store).
    #[arg(long)]
    pub project: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check the desired state and run the pre-flight; exit 2 with FILE:LINE:COL on error.
    Validate {
        #[command(flatten)]
        args: FileArgs,
        /// Check the files and the environment only: not the Docker engine, host ports,
        /// data directories or disk space (and create nothing).
        #[arg(long = "static")]
        static_only: bool,
    },
    /// Print what apply would do; "No changes." when converged.
    Plan(FileArgs),
    /// Converge once, with progress.
    Apply {
        #[command(flatten)]
        args: FileArgs,
        #[command(flatten)]
        lock: LockArgs,
        /// Apply even a desired state that failed and was rolled back before.
        #[arg(long)]
        force: bool,
        /// Apply a desired state that removes every running service of the project.
        #[arg(long)]
        allow_empty: bool,
    },
    /// Go back to the last good generation, or the one named; recorded as a new generation.
    Rollback {
        generation: Option<i64>,
        #[command(flatten)]
        project: ProjectArg,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Take the project down on purpose: its containers and network are removed, volumes
    /// and data are kept; recorded in history.
    Down {
        #[command(flatten)]
        project: ProjectArg,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Current generation, status, and each service's state and health; exit 0 only when
    /// converged (1 otherwise).
    Status {
        #[arg(long)]
        json: bool,
        /// Only this project (default: every project in the state store).
        #[arg(long)]
        project: Option<String>,
        /// Also judge this desired state: `blocked` when it is poisoned.
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        /// With -f: the profiles and exclusions it is applied with.
        #[arg(long = "profile")]
        profiles: Vec<String>,
        #[arg(long = "exclude", value_delimiter = ',')]
        exclude: Vec<String>,
    },
    /// Probe every service once, like the runbook's health_check.sh; exit 0 only when
    /// all pass (1 otherwise).
    Check {
        #[command(flatten)]
        args: FileArgs,
        #[arg(long)]
        json: bool,
    },
    /// The controller daemon (what the systemd unit runs): converge whenever the desired
    /// state changes, repair drift from the engine's events, resync periodically. SIGTERM
    /// finishes the current step and exits 0 without stopping any container; SIGHUP reads
    /// the desired state again now.
    Run {
        #[command(flatten)]
        args: FileArgs,
        /// Where the local HTTP endpoint (/healthz, /readyz, /metrics, /api/v1/status,
        /// POST /api/v1/reconcile) listens: IP:PORT, or host-gateway:PORT (the address
        /// containers reach the host by, where the stack's Prometheus scrapes berth).
        /// Repeatable; the first is where `berth status` asks the daemon.
        #[arg(long, default_value = crate::daemon::http::DEFAULT_LISTEN)]
        listen: Vec<crate::daemon::http::Listen>,
        /// Reconcile at least this often, even when nothing triggered it.
        #[arg(long, default_value = "5m", value_parser = parse_resync)]
        resync: std::time::Duration,
        /// A file holding the API token (never logged): requests that change something
        /// carry it as `Authorization: Bearer TOKEN`. POST /api/v1/sync (a git host's
        /// webhook: fetch now) needs it on every listener, POST /api/v1/reconcile on a
        /// listener that is not loopback, such as host-gateway:PORT; without it those
        /// serve only the read-only routes. `--sync-token-file` is the same flag.
        #[arg(long, alias = "sync-token-file", value_name = "PATH")]
        api_token_file: Option<PathBuf>,
        #[command(flatten)]
        git: Box<GitArgs>,
    },
    /// The database migrations of the `[migrations]` block, run from the host through
    /// the database service's published port.
    Migrate {
        #[command(subcommand)]
        command: MigrateCommand,
    },
    /// Back up the `[migrations]` database now (pg_dump inside its running container,
    /// gzip, `<backup_dir>/<project>_YYYYMMDD_HHMMSS.sql.gz`, mode 600, then retention).
    /// Exit 2 without a `[migrations]` block, 1 on a runtime error.
    Backup(FileArgs),
    /// Restore a backup into the `[migrations]` database: the file is checked first (exit 2,
    /// nothing touched, when it is not a complete dump); the services that depend on the
    /// database are stopped, the dump goes into a fresh database that is checked and then
    /// swapped in (the old one kept as `<db>_before_restore_<ts>`), and they start again.
    Restore {
        /// The backup (`.sql.gz`).
        backup: PathBuf,
        #[command(flatten)]
        args: FileArgs,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Generations, outcomes and reasons.
    History {
        #[arg(long)]
        json: bool,
        #[arg(long)]
        project: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum MigrateCommand {
    /// Applied and pending migrations (exit 0).
    Status(FileArgs),
    /// Apply the pending migrations, each in its own transaction. Exit 2 when an applied
    /// migration's file was edited, 1 on any other failure.
    Apply(FileArgs),
}

/// Run the CLI; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    match run_inner(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth: error: {}", error_chain(e.as_ref()));
            EXIT_RUNTIME
        }
    }
}

/// An error and its sources as one line, each cause once: many errors already embed
/// their source's text, and printing both would repeat it.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    crate::redact::registered_text(&text)
}

fn load(args: &FileArgs) -> Result<DesiredState, i32> {
    let mut d = spec::load(&args.file, &args.selection()).map_err(|d: Diagnostics| {
        eprintln!("{d}");
        eprintln!("berth: invalid desired state; nothing was changed");
        EXIT_INVALID
    })?;
    // Registered first thing: from here on no log line can show one of its secrets.
    crate::redact::register(&d.redactor());
    // Build contexts are part of the desired state: hash them once, here.
    crate::build_context::fill_context_hashes(&mut d).map_err(|e| {
        eprintln!("berth: error: {e}");
        EXIT_RUNTIME
    })?;
    Ok(d)
}

/// Connect to the engine; unreachable is a runtime error (exit 1), never "invalid".
async fn connect() -> anyhow::Result<DockerRuntime> {
    DockerRuntime::connect()
        .await
        .map_err(|e| anyhow::anyhow!("the Docker engine is not reachable: {e}"))
}

/// Take the project's lock for a converging command, saying who holds it while waiting.
async fn lock(
    state: &Path,
    project: &str,
    command: &str,
    args: &LockArgs,
    shutdown: &Shutdown,
) -> anyhow::Result<ProjectLock> {
    Ok(crate::lock::acquire(
        state,
        project,
        command,
        !args.no_wait,
        shutdown,
        |holder| {
            eprintln!(
                "berth: project {project:?} is being converged by {holder}; waiting for it to finish"
            )
        },
    )
    .await?)
}

/// The project a command about stored generations means.
async fn project_of(store: &Store, project: &ProjectArg) -> anyhow::Result<String> {
    if let Some(p) = &project.project {
        return Ok(p.clone());
    }
    let mut all = store.projects().await?;
    if all.len() != 1 {
        anyhow::bail!(
            "the state store holds {} projects; name one with --project",
            all.len()
        );
    }
    Ok(all.remove(0))
}

/// The host pre-flight; on success the missing data directories are created and what
/// passed is returned. A failure prints its diagnostics and changes nothing (exit 2).
async fn preflight(rt: &DockerRuntime, d: &DesiredState) -> Result<Vec<String>, i32> {
    let passed = crate::preflight::check(rt, d).await.map_err(|diags| {
        eprintln!("{diags}");
        eprintln!("berth: pre-flight failed; nothing was changed");
        EXIT_INVALID
    })?;
    let created = crate::preflight::create_missing(&passed.missing_dirs).map_err(|e| {
        eprintln!("berth: error: creating data directories: {e}");
        EXIT_RUNTIME
    })?;
    let mut lines = passed.lines;
    if d.preflight.declared {
        lines.insert(0, format!("pre-flight: {} checks passed", lines.len()));
    }
    lines.extend(created.into_iter().map(|c| format!("pre-flight: {c}")));
    Ok(lines)
}

async fn run_inner(cli: Cli) -> anyhow::Result<i32> {
    let state_path = cli.state.clone().unwrap_or_else(crate::store::default_path);
    match cli.command {
        Command::Validate { args, static_only } => {
            let d = match load(&args) {
                Ok(d) => d,
                Err(code) => return Ok(code),
            };
            if !static_only {
                let rt = connect().await?;
                let lines = match preflight(&rt, &d).await {
                    Ok(l) => l,
                    Err(code) => return Ok(code),
                };
                for l in lines.iter().filter(|l| !l.starts_with("pre-flight: ")) {
                    println!("✓ {l}");
                }
                for l in lines.iter().filter_map(|l| l.strip_prefix("pre-flight: ")) {
                    if !l.ends_with("checks passed") {
                        println!("✓ {l}");
                    }
                }
            }
            println!(
                "{}: valid ({} service{}, project {:?})",
                args.file.display(),
                d.services.len(),
                if d.services.len() == 1 { "" } else { "s" },
                d.project.name
            );
            Ok(EXIT_OK)
        }
        Command::Plan(args) => {
            let d = match load(&args) {
                Ok(d) => d,
                Err(code) => return Ok(code),
            };
            let rt = connect().await?;
            let observed = observe(&rt, &d).await?;
            let p = plan(&d, &observed);
            print!("{}", d.redactor().text(&p.to_string()));
            if let Some(m) = &d.migrations
                && let Some(line) = plan_migrations(&rt, &d, m).await
            {
                println!("{}", d.redactor().text(&line));
            }
            // What the store says apply would do first, or refuse. Read only where a store
            // exists: plan creates nothing.
            if state_path.exists() {
                let store = Store::open(&state_path).await?;
                let project = &d.project.name;
                if let Some(latest) = store.latest(project).await?
                    && latest.outcome.unfinished()
                    && crate::lock::is_held(&state_path, project)?.is_none()
                {
                    println!(
                        "Note: generation {} did not end ({}); apply finishes it first, gating every service again.",
                        latest.id, latest.outcome
                    );
                }
                let hash = crate::hash::resolved_hash(&d);
                if let Some(p) = crate::reconcile::poisoned_by(&store, project, &hash).await? {
                    println!(
                        "Note: this desired state is poisoned (generation {} was rolled back); apply refuses it without --force.",
                        p.id
                    );
                }
            }
            Ok(EXIT_OK)
        }
        Command::Apply {
            args,
            lock: lock_args,
            force,
            allow_empty,
        } => {
            let d = match load(&args) {
                Ok(d) => d,
                Err(code) => return Ok(code),
            };
            let redactor = d.redactor();
            let shutdown = Shutdown::on_signals();
            let rt = connect().await?;
            let store = Store::open(&state_path).await?;
            if let Some(daemon) = crate::daemon::client::serving(&state_path, &d.project.name)?
                && !crate::daemon::client::serves_file(&daemon, &args.file)
            {
                eprintln!(
                    "berth: error: project {:?} is served by berth run (pid {} on {}) from {}; \
                     edit that file (the daemon converges it), or stop the daemon first. Nothing was changed.",
                    d.project.name,
                    daemon.pid,
                    daemon.host,
                    daemon.file.as_deref().unwrap_or("?")
                );
                return Ok(EXIT_RUNTIME);
            }
            let mut held =
                match lock(&state_path, &d.project.name, "apply", &lock_args, &shutdown).await {
                    Ok(l) => l,
                    Err(e) => return lock_failed(e),
                };
            match preflight(&rt, &d).await {
                Ok(lines) => lines.iter().for_each(|l| {
                    if l.starts_with("pre-flight: ") {
                        println!("{l}")
                    }
                }),
                Err(code) => return Ok(code),
            }
            let report = Reporter::new(redactor.clone());
            let outcome = crate::reconcile::reconcile(
                &rt,
                &store,
                &d,
                &mut held,
                Options {
                    force,
                    allow_empty,
                    ..Default::default()
                },
                &report,
                &shutdown,
            )
            .await?;
            print_outcome(&d.project.name, &outcome, &redactor);
            Ok(outcome.exit_code())
        }
        Command::Check { args, json } => {
            let d = match load(&args) {
                Ok(d) => d,
                Err(code) => return Ok(code),
            };
            let rt = connect().await?;
            let report = crate::check::check(&rt, &d).await?;
            let redactor = d.redactor();
            if json {
                println!("{}", redactor.text(&serde_json::to_string_pretty(&report)?));
            } else {
                print!("{}", redactor.text(&report.text()));
            }
            Ok(if report.healthy {
                EXIT_OK
            } else {
                EXIT_RUNTIME
            })
        }
        Command::Rollback {
            generation,
            project,
            lock: lock_args,
        } => {
            let Held {
                store,
                project,
                latest,
                shutdown,
                rt,
                lock: mut held,
            } = match held(&state_path, &project, "rollback", &lock_args).await? {
                Ok(h) => h,
                Err(code) => return Ok(code),
            };
            let target = match generation {
                Some(g) => store
                    .get(&project, g)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("project {project:?} has no generation {g}"))?,
                None => store.last_good(&project, latest.id).await?.ok_or_else(|| {
                    anyhow::anyhow!(
                        "project {project:?} has no healthy generation before {}",
                        latest.id
                    )
                })?,
            };
            if target.outcome != crate::store::Outcome::Healthy {
                anyhow::bail!(
                    "generation {} of project {project:?} is {}, not healthy: berth rollback only goes back to a generation whose every gate passed",
                    target.id,
                    target.outcome
                );
            }
            let redactor = crate::converge::desired_of(&target)?.redactor();
            let report = Reporter::new(redactor.clone());
            report.line(&format!(
                "rolling project {project:?} back to generation {}",
                target.id
            ));
            let outcome =
                crate::reconcile::rollback(&rt, &store, &target, &mut held, &report, &shutdown)
                    .await?;
            match &outcome {
                ApplyOutcome::Converged { generation, .. } => println!(
                    "Rolled back: generation {generation} runs generation {}'s spec and is healthy.",
                    target.id
                ),
                other => print_outcome(&project, other, &redactor),
            }
            Ok(outcome.exit_code())
        }
        Command::Down {
            project,
            lock: lock_args,
        } => {
            let Held {
                store,
                project,
                latest,
                shutdown,
                rt,
                lock: mut held,
            } = match held(&state_path, &project, "down", &lock_args).await? {
                Ok(h) => h,
                Err(code) => return Ok(code),
            };
            let report = Reporter::new(Redactor::default());
            let outcome =
                crate::reconcile::down(&rt, &store, &latest, &mut held, &report, &shutdown).await?;
            print_outcome(&project, &outcome, &Redactor::default());
            Ok(outcome.exit_code())
        }
        Command::Status {
            json: as_json,
            project,
            file,
            profiles,
            exclude,
        } => {
            let on_disk = match &file {
                Some(f) => {
                    let args = FileArgs {
                        file: f.clone(),
                        profiles,
                        exclude,
                    };
                    // The same load as apply's, so the hash includes the build contexts.
                    match load(&args) {
                        Ok(d) => Some(d),
                        Err(code) => return Ok(code),
                    }
                }
                None => None,
            };
            let store = Store::open(&state_path).await?;
            // Connected only when a report is worked out here, not asked of a daemon.
            let mut rt: Option<DockerRuntime> = None;
            let projects = match project {
                Some(p) => vec![p],
                None => store.projects().await?,
            };
            let mut out = Vec::new();
            let mut notes = Vec::new();
            for p in projects {
                // A running daemon knows best (the file it serves may be blocked, the
                // engine may be away); with -f the question is about that file.
                if on_disk.is_none()
                    && let Some(daemon) = crate::daemon::client::serving(&state_path, &p)?
                {
                    match crate::daemon::client::status(&daemon, &p).await {
                        Ok(report) => {
                            notes.push(format!(
                                "  (as reported by berth run, pid {} on {})\n",
                                daemon.pid, daemon.host
                            ));
                            out.push(report);
                            continue;
                        }
                        Err(e) => eprintln!(
                            "berth: the berth run serving project {p:?} (pid {} on {}) did not answer ({e}); working the status out here",
                            daemon.pid, daemon.host
                        ),
                    }
                }
                if rt.is_none() {
                    rt = Some(connect().await?);
                }
                let engine = rt.as_ref().expect("connected just above");
                out.push(
                    crate::status::project_status(
                        engine,
                        &store,
                        &state_path,
                        &p,
                        on_disk.as_ref(),
                    )
                    .await?,
                );
                notes.push(String::new());
            }
            let text = if as_json {
                crate::status::reports_json(&out)?
            } else if out.is_empty() {
                format!("No generations recorded in {}.\n", state_path.display())
            } else {
                out.iter()
                    .zip(&notes)
                    .map(|(r, note)| status_text(r) + note)
                    .collect()
            };
            print!("{}", crate::redact::registered_text(&text));
            // Every project must be converged for 0; nothing recorded is not converged.
            Ok(out
                .iter()
                .map(|r| r.status.exit_code())
                .max()
                .unwrap_or(ProjectStatus::Unknown.exit_code()))
        }
        Command::Run {
            args,
            listen,
            resync,
            api_token_file,
            git,
        } => {
            let state_dir = std::path::absolute(&state_path)?
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
                target: crate::turn::Target {
                    selection: args.selection(),
                    file: args.file,
                    state: state_path,
                    git: follow,
                    grants: spec::Grants::new(&git.allow_host_path, &git.pass_env)?,
                },
                listen,
                resync,
                api_token,
            })
            .await?;
            Ok(EXIT_OK)
        }
        Command::Migrate { command } => migrate(command, &state_path).await,
        Command::Backup(args) => backup(&state_path, &args).await,
        Command::Restore {
            backup,
            args,
            lock: lock_args,
        } => restore(&state_path, &backup, &args, &lock_args).await,
        Command::History {
            json: as_json,
            project,
        } => {
            let store = Store::open(&state_path).await?;
            let gens = store.history(project.as_deref()).await?;
            let mut shown = Vec::new();
            for (i, g) in gens.iter().enumerate() {
                let newest = !gens[i + 1..].iter().any(|n| n.project == g.project);
                let held = newest
                    && g.outcome == crate::store::Outcome::Progressing
                    && crate::lock::is_held(&state_path, &g.project)?.is_some();
                // desired_of registers the generation's secrets for log lines too.
                let r = crate::converge::desired_of(g)
                    .map(|d| d.redactor())
                    .unwrap_or_default();
                let mut g = g.clone();
                g.outcome = shown_outcome(&g, newest, held);
                g.reason = g.reason.map(|x| r.text(&x));
                let events = store.events(g.id).await?;
                let repairs = events.iter().filter(|e| e.kind == "repair").count();
                // What else happened to it: a migration job's runs (with their output),
                // a backup restored by its revert. Repairs are only counted.
                let other: Vec<_> = events
                    .into_iter()
                    .filter(|e| e.kind != "repair")
                    .map(|mut e| {
                        e.message = r.text(&e.message);
                        e
                    })
                    .collect();
                shown.push((g, repairs, other));
            }
            if as_json {
                let rows: Vec<_> = shown
                    .iter()
                    .map(|(g, repairs, other)| {
                        let mut v = serde_json::to_value(g).expect("generation serializes");
                        v["repairs"] = (*repairs).into();
                        v["events"] = serde_json::to_value(other).expect("events serialize");
                        v
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                let rows = shown.iter().map(|(g, repairs, other)| {
                    let mut reason = g.reason.clone().unwrap_or_else(|| "-".into());
                    if *repairs > 0 {
                        reason = format!("{reason} [{repairs} drift repairs]");
                    }
                    for e in other.iter().filter(|e| e.kind == "restore") {
                        reason = format!("{reason} [{}]", e.message);
                    }
                    vec![
                        g.id.to_string(),
                        g.project.clone(),
                        format_ms(g.started_ms),
                        g.outcome.to_string(),
                        g.schema()
                            .map(|v| format!("schema {v}"))
                            .unwrap_or_else(|| "-".into()),
                        match &g.commit {
                            Some(c) => format!(
                                "{} {}",
                                &c[..c.len().min(12)],
                                g.commit_subject.as_deref().unwrap_or_default()
                            ),
                            None => "-".into(),
                        },
                        reason,
                    ]
                });
                print!(
                    "{}",
                    table(
                        &[
                            "GEN", "PROJECT", "STARTED", "OUTCOME", "SCHEMA", "COMMIT", "REASON"
                        ],
                        rows
                    )
                );
            }
            Ok(EXIT_OK)
        }
    }
}

/// What a converging command about a stored project works with, its lock held.
struct Held {
    store: Store,
    project: String,
    /// The project's newest generation, read under the lock.
    latest: crate::store::Generation,
    shutdown: Shutdown,
    rt: DockerRuntime,
    lock: ProjectLock,
}

/// Open the store, find the project, connect, and take its lock; Err is an exit code
/// (the lock busy with --no-wait, or a signal while waiting).
async fn held(
    state_path: &Path,
    project: &ProjectArg,
    command: &str,
    lock_args: &LockArgs,
) -> anyhow::Result<Result<Held, i32>> {
    let store = Store::open(state_path).await?;
    let project = project_of(&store, project).await?;
    let shutdown = Shutdown::on_signals();
    let rt = connect().await?;
    let lock = match lock(state_path, &project, command, lock_args, &shutdown).await {
        Ok(l) => l,
        Err(e) => return lock_failed(e).map(Err),
    };
    let latest = store
        .latest(&project)
        .await?
        .ok_or_else(|| anyhow::anyhow!("project {project:?} has no generations"))?;
    Ok(Ok(Held {
        store,
        project,
        latest,
        shutdown,
        rt,
        lock,
    }))
}

/// Exit for a lock that could not be had: busy with --no-wait (1), or a signal while
/// waiting (128+signal).
fn lock_failed(e: anyhow::Error) -> anyhow::Result<i32> {
    match e.downcast_ref::<crate::lock::LockError>() {
        Some(crate::lock::LockError::Interrupted { signal, .. }) => {
            eprintln!("berth: {e}");
            Ok(128 + signal)
        }
        Some(crate::lock::LockError::Busy { .. }) => {
            eprintln!("berth: {e}");
            Ok(EXIT_RUNTIME)
        }
        _ => Err(e),
    }
}

fn print_outcome(project: &str, outcome: &ApplyOutcome, redactor: &Redactor) {
    match outcome {
        ApplyOutcome::NoChanges => println!("No changes."),
        ApplyOutcome::Converged {
            generation,
            resumed,
        } => println!(
            "Converged: generation {generation} of project {project:?} is healthy{}.",
            if *resumed {
                " (resumed after an interrupted converge)"
            } else {
                ""
            }
        ),
        ApplyOutcome::Repaired {
            generation,
            services,
        } => println!(
            "Repaired: {} of project {project:?} back on generation {generation}, healthy.",
            services.join(", ")
        ),
        ApplyOutcome::GateFailed { generation, reason } => {
            eprintln!(
                "berth: generation {generation} failed: {}",
                redactor.text(reason)
            );
            eprintln!(
                "berth: auto_revert is off; project {project:?} is left as it is for inspection"
            );
        }
        ApplyOutcome::RolledBack {
            generation,
            to,
            reason,
        } => {
            eprintln!(
                "berth: generation {generation} failed: {}",
                redactor.text(reason)
            );
            eprintln!(
                "berth: rolled back: project {project:?} is running generation {to} again (healthy); generation {generation} will not be applied again until the desired state changes or --force is given"
            );
        }
        ApplyOutcome::Degraded { generation, reason } => {
            eprintln!(
                "berth: generation {generation} failed: {}",
                redactor.text(reason)
            );
            if reason.contains(crate::reconcile::SCHEMA_NOT_UNDONE) {
                eprintln!(
                    "berth: project {project:?} is degraded: its containers are back on the last good generation, its database schema is not"
                );
            } else {
                eprintln!(
                    "berth: project {project:?} is degraded; the failed containers are left for inspection"
                );
            }
        }
        ApplyOutcome::Poisoned { generation, reason } => {
            eprintln!(
                "berth: this desired state failed as generation {generation} and was rolled back: {}",
                redactor.text(reason)
            );
            eprintln!("berth: not applying it again; change the desired state, or pass --force");
        }
        ApplyOutcome::WouldRemoveAll { services } => {
            eprintln!(
                "berth: this desired state would remove every running service of project {project:?} ({}); nothing was changed",
                services.join(", ")
            );
            eprintln!(
                "berth: to take the project down on purpose run `berth down`, or pass --allow-empty"
            );
        }
        ApplyOutcome::Down { generation } => println!(
            "Down: project {project:?} has no containers and no network now (volumes and data are kept); recorded as generation {generation}."
        ),
        ApplyOutcome::Interrupted { generation, signal } => {
            eprintln!(
                "berth: stopped by {}{}; the next converge resumes it",
                crate::shutdown::signal_name(*signal),
                generation
                    .map(|g| format!(": generation {g} is interrupted"))
                    .unwrap_or_default()
            );
        }
    }
}

fn status_text(r: &crate::status::Report) -> String {
    let mut out = format!(
        "project {}: {} — generation {}{}{}\n",
        r.project,
        r.status,
        r.generation
            .map(|g| g.to_string())
            .unwrap_or_else(|| "-".into()),
        r.schema_revision
            .clone()
            .or_else(|| r.schema_version.map(|v| v.to_string()))
            .map(|v| format!(", schema {v}"))
            .unwrap_or_default(),
        if r.repairs > 0 {
            format!(" ({} drift repairs)", r.repairs)
        } else {
            String::new()
        }
    );
    if let Some(g) = &r.git {
        let short = |c: &str| c[..c.len().min(12)].to_string();
        if !g.source.is_empty() {
            out += &format!("  git: {}\n", g.source);
        }
        if let Some(c) = &g.deployed {
            out += &format!(
                "  deployed commit {} {}\n",
                short(c),
                g.deployed_subject.as_deref().unwrap_or_default()
            );
        }
        if let Some(c) = &g.newest
            && g.newest != g.deployed
        {
            out += &format!(
                "  newest commit   {} {}\n",
                short(c),
                g.newest_subject.as_deref().unwrap_or_default()
            );
        }
        if let Some(p) = &g.problem {
            out += &format!("  git fetch failing: {p}\n");
        }
    }
    let rows = r.services.iter().map(|s| {
        vec![
            s.service.clone(),
            s.state.clone(),
            s.health.clone().unwrap_or_else(|| "-".into()),
            s.generation
                .map(|g| format!("gen {g}"))
                .unwrap_or_else(|| "-".into()),
        ]
    });
    for line in table(&[], rows).lines() {
        out += &format!("  {line}\n");
    }
    out
}

/// Columns as wide as their widest cell, no borders, no wrapping; no header row when
/// `header` is empty.
fn table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled);
    if !header.is_empty() {
        t.set_header(header.to_vec());
    }
    for row in rows {
        t.add_row(row);
    }
    // comfy-table pads every cell by one space on each side: keep the text flush left.
    t.lines()
        .map(|l| format!("{}\n", l.strip_prefix(' ').unwrap_or(&l).trim_end()))
        .collect()
}

/// `berth plan`'s line about the schema: asked of the running database container (at its
/// address on the project network), or why it cannot tell; None when none would run.
async fn plan_migrations(
    rt: &DockerRuntime,
    d: &crate::spec::DesiredState,
    m: &crate::spec::Migrations,
) -> Option<String> {
    use crate::migrate::step;
    let cannot = |why: String| Some(format!("migrations: cannot tell which would run ({why})"));
    let url = match step::database_url(rt, d, m).await {
        Ok(url) => url,
        Err(e) => return cannot(e.to_string()),
    };
    if let Some(job) = &m.job {
        let revision = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            crate::migrate::job::revision(&url, &job.version_table),
        )
        .await;
        return match revision {
            Ok(Ok(rev)) => Some(format!(
                "migrations: job `{}` in {} when its image has not run to revision {rev} before (database at revision {rev})",
                job.upgrade.join(" "),
                job.image
            )),
            Ok(Err(e)) => cannot(e.to_string()),
            Err(_) => cannot("the database did not answer within 10 s".into()),
        };
    }
    let newest = crate::migrate::resolve(&m.source)
        .map(|l| l.iter().map(|(m, _)| m.version).max().unwrap_or(0))
        .unwrap_or(0);
    let status = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        crate::migrate::status(&url, &m.source),
    )
    .await;
    match status {
        Ok(Ok(s)) => step::plan_line(&s, newest),
        Ok(Err(e)) => cannot(e.to_string()),
        Err(_) => cannot("the database did not answer within 10 s".into()),
    }
}

/// `berth migrate status|apply`: against the database service's published host port.
async fn migrate(command: MigrateCommand, state_path: &Path) -> anyhow::Result<i32> {
    use crate::migrate::{self, Error};
    let args = match &command {
        MigrateCommand::Status(a) | MigrateCommand::Apply(a) => a,
    };
    let d = match load(args) {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let Some(m) = &d.migrations else {
        eprintln!(
            "berth: {}: the desired state has no [migrations] block",
            args.file.display()
        );
        return Ok(EXIT_INVALID);
    };
    let service = &d.services[&m.service];
    // Through its published port, else at the running container's address on the
    // project network (as a converge reaches it).
    let url = match migrate::host_url(m, service) {
        Ok(url) => url,
        Err(not_published) => {
            let rt = connect().await?;
            match migrate::step::database_url(&rt, &d, m).await {
                Ok(url) => url,
                Err(e) => anyhow::bail!("{not_published}; nor at its container: {e}"),
            }
        }
    };
    if let Some(job) = &m.job {
        return migrate_job(command, &d, m, job, &url, state_path).await;
    }
    match command {
        MigrateCommand::Status(_) => {
            let status = migrate::status(&url, &m.source).await?;
            println!(
                "migrations in {} (database service {:?})",
                m.source.display(),
                m.service
            );
            for a in &status.applied {
                let note = match (a.success, a.checksum_ok) {
                    (false, _) => "  DIRTY: recorded as half-applied",
                    (_, Some(false)) => "  EDITED since it was applied",
                    (_, None) => "  not in the source",
                    _ => "",
                };
                println!("  applied  {:04} {}{note}", a.version, a.description);
            }
            for p in &status.pending {
                println!("  pending  {:04} {}", p.version, p.description);
            }
            println!(
                "{} applied, {} pending (version {})",
                status.applied.len(),
                status.pending.len(),
                status.version()
            );
            print_generations_schema(state_path, &d.project.name, "schema").await?;
            Ok(EXIT_OK)
        }
        MigrateCommand::Apply(_) => match migrate::apply(&url, &m.source).await {
            Ok(applied) if applied.is_empty() => {
                println!("No pending migrations.");
                Ok(EXIT_OK)
            }
            Ok(applied) => {
                for p in &applied {
                    println!("applied {:04} {}", p.version, p.description);
                }
                println!("{} migration(s) applied", applied.len());
                Ok(EXIT_OK)
            }
            Err(Error::Edited(e)) => {
                eprintln!("berth: {e}");
                eprintln!("berth: nothing was applied");
                Ok(EXIT_INVALID)
            }
            Err(e) => Err(e.into()),
        },
    }
}

/// The desired state of a backup or restore, or the exit code when it cannot have one.
fn load_with_migrations(args: &FileArgs) -> Result<DesiredState, i32> {
    let d = load(args)?;
    if d.migrations.is_none() {
        eprintln!(
            "berth: {}: the desired state has no [migrations] block: nothing to back up",
            args.file.display()
        );
        return Err(EXIT_INVALID);
    }
    Ok(d)
}

/// The schema each recorded generation reached, when the store has any (it is not created
/// just to say so).
async fn print_generations_schema(
    state_path: &Path,
    project: &str,
    word: &str,
) -> anyhow::Result<()> {
    if !state_path.exists() {
        return Ok(());
    }
    let store = Store::open(state_path).await?;
    let gens = store.history(Some(project)).await?;
    let mut gens = gens
        .iter()
        .filter_map(|g| g.schema().map(|s| (g, s)))
        .peekable();
    if gens.peek().is_some() {
        println!("generations of project {project:?}:");
    }
    for (g, schema) in gens {
        println!("  generation {}  {}  {word} {schema}", g.id, g.outcome);
    }
    Ok(())
}

/// `berth migrate status|apply` with a migration job: the revision the database is at
/// (and each generation reached); `apply` runs the job's `upgrade` now, as a converge
/// would (without a backup: `berth backup` first).
async fn migrate_job(
    command: MigrateCommand,
    d: &crate::spec::DesiredState,
    m: &crate::spec::Migrations,
    job: &crate::spec::MigrationJob,
    url: &str,
    state_path: &Path,
) -> anyhow::Result<i32> {
    let revision = crate::migrate::job::revision(url, &job.version_table).await?;
    match command {
        MigrateCommand::Status(_) => {
            println!(
                "migration job {} `{}` (database service {:?})",
                job.image,
                job.upgrade.join(" "),
                m.service
            );
            println!("database at revision {revision}");
            print_generations_schema(state_path, &d.project.name, "revision").await?;
            Ok(EXIT_OK)
        }
        MigrateCommand::Apply(_) => {
            use crate::runtime::Runtime;
            let rt = connect().await?;
            let Some(image) = rt.inspect_image(&job.image).await? else {
                eprintln!("berth: the job image {} is not present", job.image);
                return Ok(EXIT_RUNTIME);
            };
            println!(
                "running `{}` in {} (revision {revision})",
                job.upgrade.join(" "),
                job.image
            );
            let run = crate::migrate::job::run(&rt, d, m, job, &image.id, &job.upgrade).await?;
            // The job's own output, as a terminal may show it: each line's control
            // characters escaped (docs/design.md §12).
            for line in d.redactor().text(&run.output).lines() {
                println!("{}", crate::text::escaped(line));
            }
            if !run.succeeded() {
                eprintln!("berth: the migration job {}", run.ended());
                return Ok(EXIT_RUNTIME);
            }
            let after = crate::migrate::job::revision(url, &job.version_table).await?;
            println!("database at revision {after}");
            Ok(EXIT_OK)
        }
    }
}

/// `berth backup`: one backup now, its path and size. It is recorded in the state store
/// (retention deletes only recorded backups); what retention could not do is a warning.
async fn backup(state_path: &Path, args: &FileArgs) -> anyhow::Result<i32> {
    let d = match load_with_migrations(args) {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let m = d.migrations.as_ref().expect("checked above");
    let rt = connect().await?;
    let store = Store::open(state_path).await?;
    let taken = crate::backup::take(&rt, Some(&store), &d.project.name, m).await?;
    println!(
        "backup: {} ({})",
        taken.path.display(),
        crate::preflight::human(taken.bytes)
    );
    for s in &taken.snapshots {
        let size = std::fs::metadata(s).map(|m| m.len()).unwrap_or_default();
        println!(
            "snapshot: {} ({})",
            s.display(),
            crate::preflight::human(size)
        );
    }
    for r in &taken.removed {
        println!("retention: removed {}", r.display());
    }
    for w in &taken.warnings {
        eprintln!("berth: warning: {w}");
    }
    Ok(EXIT_OK)
}

/// `berth restore FILE`: under the project's lock, so no converge runs meanwhile.
async fn restore(
    state_path: &Path,
    file: &Path,
    args: &FileArgs,
    lock_args: &LockArgs,
) -> anyhow::Result<i32> {
    let d = match load_with_migrations(args) {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let project = d.project.name.clone();
    // Its start checked before anything else: a foreign file is refused without even the
    // lock. The rest is checked as the restore reads it, before anything in use changes.
    match crate::backup::check_start(file) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("berth: {e}");
            eprintln!("berth: nothing was changed");
            return Ok(match e {
                crate::backup::Error::NotADump { .. } | crate::backup::Error::Unsafe { .. } => {
                    EXIT_INVALID
                }
                _ => EXIT_RUNTIME,
            });
        }
    };
    let shutdown = Shutdown::on_signals();
    let rt = connect().await?;
    let _held = match lock(state_path, &project, "restore", lock_args, &shutdown).await {
        Ok(l) => l,
        Err(e) => return lock_failed(e),
    };
    let say = |line: &str| println!("restore: {line}");
    // The operator's choice, whatever berth recorded: the restore says when the file is
    // not one berth wrote, or changed since.
    let recorded = match state_path.exists() {
        true => {
            let store = Store::open(state_path).await?;
            let mut found = None;
            for path in [
                std::path::absolute(file).ok(),
                std::fs::canonicalize(file).ok(),
            ]
            .into_iter()
            .flatten()
            {
                if found.is_none() {
                    found = store.backup_record(&path.to_string_lossy()).await?;
                }
            }
            found.map(|r| r.sha256)
        }
        false => None,
    };
    let trust = crate::backup::Trust::Operator {
        recorded: recorded.as_deref(),
    };
    let restored = crate::backup::restore(&rt, &d, file, trust, &say).await;
    let message = match &restored {
        Ok(r) => format!(
            "restored {} into database {} ({} tables); the previous one is kept as {}",
            file.display(),
            r.database,
            r.tables,
            r.kept_as
        ),
        Err(e) => format!("restore of {} failed: {e}", file.display()),
    };
    // An event of the project's newest generation, where there is a store.
    if state_path.exists() {
        let store = Store::open(state_path).await?;
        if let Some(g) = store.latest(&project).await? {
            let service = d.migrations.as_ref().map(|m| m.service.as_str());
            store.add_event(g.id, "restore", service, &message).await?;
        }
    }
    match restored {
        Ok(_) => {
            println!("{message}");
            Ok(EXIT_OK)
        }
        Err(crate::backup::Error::NotADump { .. } | crate::backup::Error::Unsafe { .. }) => {
            eprintln!("berth: {message}");
            eprintln!("berth: nothing was changed");
            Ok(EXIT_INVALID)
        }
        Err(e) => Err(e.into()),
    }
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
