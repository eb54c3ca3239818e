//! `berth down`: take the project down on purpose, recorded in history.

use std::path::Path;

use crate::cmd::print::print_outcome;
use crate::cmd::{Held, LockArgs, ProjectArg, held};
use crate::redact::Redactor;
use crate::report::Reporter;

/// `berth down`'s flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub project: ProjectArg,
    #[command(flatten)]
    pub lock: LockArgs,
}

pub async fn run(
    Args {
        project,
        lock: lock_args,
    }: Args,
    state_path: &Path,
) -> anyhow::Result<i32> {
    let Held {
        store,
        project,
        latest,
        shutdown,
        rt,
        lock: mut held,
    } = match held(state_path, &project, "down", &lock_args).await? {
        Ok(h) => h,
        Err(code) => return Ok(code),
    };
    let report = Reporter::new(Redactor::default());
    let outcome =
        crate::reconcile::down(&rt, &store, &latest, &mut held, &report, &shutdown).await?;
    print_outcome(&project, &outcome, &Redactor::default());
    Ok(outcome.exit_code())
}
