//! `berth rollback`: back to the last good generation, or the one named, recorded as a
//! new generation.

use std::path::Path;

use crate::cmd::print::print_outcome;
use crate::cmd::{Held, LockArgs, ProjectArg, held};
use crate::reconcile::ApplyOutcome;
use crate::report::Reporter;

/// `berth rollback`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    pub generation: Option<i64>,
    #[command(flatten)]
    pub project: ProjectArg,
    #[command(flatten)]
    pub lock: LockArgs,
}

pub async fn run(
    Args {
        generation,
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
    } = match held(state_path, &project, "rollback", &lock_args).await? {
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
    let redactor = target.desired()?.redactor();
    let report = Reporter::new(redactor.clone());
    report.line(&format!(
        "rolling project {project:?} back to generation {}",
        target.id
    ));
    let outcome =
        crate::reconcile::rollback(&rt, &store, &target, &mut held, &report, &shutdown).await?;
    match &outcome {
        ApplyOutcome::Converged { generation, .. } => println!(
            "Rolled back: generation {generation} runs generation {}'s spec and is healthy.",
            target.id
        ),
        other => print_outcome(&project, other, &redactor),
    }
    Ok(outcome.exit_code())
}
