//! `berth apply`: converge once, under the project's lock, after the pre-flight.

use std::path::Path;

use crate::cmd::print::print_outcome;
use crate::cmd::{FileArgs, LockArgs, connect, load, lock, lock_failed, preflight};
use crate::exit::RUNTIME as EXIT_RUNTIME;
use crate::reconcile::Options;
use crate::report::Reporter;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// `berth apply`'s flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub args: FileArgs,
    #[command(flatten)]
    pub lock: LockArgs,
    /// Apply even a desired state that failed and was rolled back before.
    #[arg(long)]
    pub force: bool,
    /// Apply a desired state that removes every running service of the project.
    #[arg(long)]
    pub allow_empty: bool,
}

pub async fn run(
    Args {
        args,
        lock: lock_args,
        force,
        allow_empty,
    }: Args,
    state_path: &Path,
) -> anyhow::Result<i32> {
    let d = match load(&args) {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let redactor = d.redactor();
    let shutdown = Shutdown::on_signals();
    let rt = connect().await?;
    let store = Store::open(state_path).await?;
    if let Some(daemon) = crate::daemon::client::serving(state_path, &d.project.name)?
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
    let mut held = match lock(state_path, &d.project.name, "apply", &lock_args, &shutdown).await {
        Ok(l) => l,
        Err(e) => return lock_failed(e),
    };
    match preflight(&rt, &d).await {
        Ok(passed) => passed
            .summary
            .iter()
            .chain(&passed.created)
            .for_each(|l| println!("pre-flight: {l}")),
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
