//! The command line: the contract other tools and scripts rely on (docs/design.md "Command line").
//! Each command lives in its own file under [`crate::cmd`]; this is the list of them and
//! the dispatch.
//!
//! Exit codes: 0 converged; 1 runtime error; 2 invalid desired state (nothing changed);
//! 3 gate failed and rolled back; 4 gate failed and the rollback failed too (degraded);
//! 5 desired state poisoned. With `auto_revert = false` a failed gate leaves the stack as
//! it is and exits 1.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::cmd::{self, FileArgs};
use crate::exit;

/// `berth --version`: the version, the git commit and the build date (build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("VERGEN_GIT_SHA"),
    ", built ",
    env!("VERGEN_BUILD_DATE"),
    ")"
);

#[derive(Parser, Debug)]
#[command(
    name = "berth",
    version = VERSION,
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

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check the desired state and run the pre-flight; exit 2 with FILE:LINE:COL on error.
    Validate(cmd::validate::Args),
    /// Print what apply would do; "No changes." when converged.
    Plan(FileArgs),
    /// Converge once, with progress.
    Apply(cmd::apply::Args),
    /// Go back to the last good generation, or the one named; recorded as a new generation.
    Rollback(cmd::rollback::Args),
    /// Take the project down on purpose: its containers and network are removed, volumes
    /// and data are kept; recorded in history.
    Down(cmd::down::Args),
    /// Current generation, status, and each service's state and health; exit 0 only when
    /// converged (1 otherwise).
    Status(cmd::status::Args),
    /// Probe every service once, like the runbook's health_check.sh; exit 0 only when
    /// all pass (1 otherwise).
    Check(cmd::check::Args),
    /// The project's containers' output, a `name |` prefix per service; `-f` follows it,
    /// also the containers a converge creates meanwhile, until Ctrl-C. `--generation N`:
    /// what was kept of generation N's failed containers (their last lines, how they ended).
    Logs(cmd::logs::Args),
    /// The controller daemon (what the systemd unit runs): converge whenever the desired
    /// state changes, repair drift from the engine's events, resync periodically. SIGTERM
    /// finishes the current step and exits 0 without stopping any container; SIGHUP reads
    /// the desired state again now.
    Run(cmd::run::Args),
    /// The database migrations of the `[migrations]` block, run from the host through
    /// the database service's published port.
    Migrate {
        #[command(subcommand)]
        command: cmd::migrate::Command,
    },
    /// Back up the `[migrations]` database now (pg_dump inside its running container,
    /// gzip, `<backup_dir>/<project>_YYYYMMDD_HHMMSS.sql.gz`, mode 600, then retention).
    /// Exit 2 without a `[migrations]` block, 1 on a runtime error.
    Backup(FileArgs),
    /// Restore a backup into the `[migrations]` database: the file is checked first (exit 2,
    /// nothing touched, when it is not a complete dump); the services that depend on the
    /// database are stopped, the dump goes into a fresh database that is checked and then
    /// swapped in (the old one kept as `<db>_before_restore_<ts>`), and they start again.
    Restore(cmd::restore::Args),
    /// Generations, outcomes and reasons; `history N`: one generation with its events and
    /// the evidence its failed or dead containers left (their last lines, how they ended).
    History(cmd::history::Args),
    /// The `[[notify]]` receivers: send each a test event, or deliver what the outbox
    /// holds now (`berth run` delivers on its own).
    Notify {
        #[command(subcommand)]
        command: cmd::notify::Command,
    },
    /// What changed between two generations (default: the last good one against the
    /// newest), per service; exit 0 whether or not anything did.
    Diff(cmd::diff::Args),
    /// Translate docker-compose files into a desired-state TOML, with a report of what
    /// was translated, what changed meaning and what was not (each at FILE:LINE:COL);
    /// exit 2 with nothing written when a Compose file is invalid.
    Import(cmd::import::Args),
    /// Write the desired state in another format (`berth export compose`).
    Export {
        #[command(subcommand)]
        command: cmd::export::Command,
    },
    /// Print shell completions for bash, zsh or fish to stdout.
    Completions(cmd::manual::CompletionArgs),
    /// Write the man pages (berth.1 and one per command) into a directory.
    Man(cmd::manual::ManArgs),
    /// Print the status page's address for the berth run serving the project (`--open`:
    /// open it in a browser when there is a display).
    Ui(cmd::ui::Args),
    /// Ask a `berth run` whether it serves (GET /healthz on IP:PORT, default its default
    /// listener): exit 0 when it answers 200, 1 otherwise. The image's HEALTHCHECK.
    Healthz(cmd::healthz::Args),
}

/// Run the CLI; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    match run_inner(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth: error: {}", error_chain(e.as_ref()));
            exit::RUNTIME
        }
    }
}

/// One command, against the state store `--state` names (or the default one).
async fn run_inner(cli: Cli) -> anyhow::Result<i32> {
    let state = cli.state.unwrap_or_else(crate::store::default_path);
    match cli.command {
        Command::Validate(args) => cmd::validate::run(args).await,
        Command::Plan(args) => cmd::plan::run(args, &state).await,
        Command::Apply(args) => cmd::apply::run(args, &state).await,
        Command::Rollback(args) => cmd::rollback::run(args, &state).await,
        Command::Down(args) => cmd::down::run(args, &state).await,
        Command::Status(args) => cmd::status::run(args, &state).await,
        Command::Check(args) => cmd::check::run(args).await,
        Command::Logs(args) => cmd::logs::run(args, &state).await,
        Command::Run(args) => cmd::run::run(args, &state).await,
        Command::Migrate { command } => cmd::migrate::run(command, &state).await,
        Command::Backup(args) => cmd::backup::run(args, &state).await,
        Command::Restore(args) => cmd::restore::run(args, &state).await,
        Command::History(args) => cmd::history::run(args, &state).await,
        Command::Notify { command } => cmd::notify::run(command, &state).await,
        Command::Diff(args) => cmd::diff::run(args, &state).await,
        Command::Import(args) => cmd::import::run(args),
        Command::Export { command } => cmd::export::run(command).await,
        Command::Completions(args) => cmd::manual::completions(args),
        Command::Man(args) => cmd::manual::man(args),
        Command::Ui(args) => cmd::ui::run(args, &state).await,
        Command::Healthz(args) => cmd::healthz::run(args).await,
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
