//! One file per command: each holds its arguments (what only it takes) and an
//! `async fn run` that parses nothing, calls the library, prints and returns the exit
//! code. [`crate::cli`] lists them and dispatches; [`print`] holds what more than one
//! command prints; this module the arguments and steps several commands share: the
//! desired state's flags and loading it, the engine, the project and its lock.

pub mod apply;
pub mod backup;
pub mod check;
pub mod diff;
pub mod down;
pub mod export;
pub mod healthz;
pub mod history;
pub mod import;
pub mod logs;
pub mod manual;
pub mod migrate;
pub mod notify;
pub mod plan;
pub mod print;
pub mod restore;
pub mod rollback;
pub mod run;
pub mod status;
pub mod ui;
pub mod validate;

use std::path::{Path, PathBuf};

use crate::diag::Diagnostics;
use crate::exit::{INVALID as EXIT_INVALID, RUNTIME as EXIT_RUNTIME};
use crate::lock::ProjectLock;
use crate::runtime::docker::DockerRuntime;
use crate::shutdown::Shutdown;
use crate::spec::{self, DesiredState};
use crate::store::Store;

/// The desired state a command reads: the file and the services it selects.
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

/// What the host pre-flight found, once it passed.
struct Preflight {
    /// Each check that passed, as a line.
    checks: Vec<String>,
    /// With a `[preflight]` table: how many checks passed.
    summary: Option<String>,
    /// The data directories it created.
    created: Vec<String>,
}

/// The host pre-flight; on success the missing data directories are created and what
/// passed is returned. A failure prints its diagnostics and changes nothing (exit 2).
async fn preflight(rt: &DockerRuntime, d: &DesiredState) -> Result<Preflight, i32> {
    let passed = crate::preflight::check(rt, d).await.map_err(|diags| {
        eprintln!("{diags}");
        eprintln!("berth: pre-flight failed; nothing was changed");
        EXIT_INVALID
    })?;
    let created = crate::preflight::create_missing(&passed.missing_dirs).map_err(|e| {
        eprintln!("berth: error: creating data directories: {e}");
        EXIT_RUNTIME
    })?;
    let checks = passed.lines;
    Ok(Preflight {
        summary: d
            .preflight
            .declared
            .then(|| format!("{} checks passed", checks.len())),
        checks,
        created,
    })
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
