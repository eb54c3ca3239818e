//! `berth diff [A] [B]`: what changed between two generations. By default the newest
//! healthy generation before the newest against the newest: what the last deploy changed,
//! or, when it was rolled back, what the failed one would have changed.

use std::path::Path;

use crate::cmd::{ProjectArg, project_of};
use crate::exit::OK as EXIT_OK;
use crate::store::Store;

/// `berth diff`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The generation to compare from (default: the newest healthy one before the newest).
    pub a: Option<i64>,
    /// The generation to compare to (default: the newest).
    pub b: Option<i64>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub project: ProjectArg,
}

/// Exit 0 whether or not anything changed (as `git diff` without `--exit-code`); a
/// generation that does not exist is a runtime error that names it.
pub async fn run(
    Args {
        a,
        b,
        json,
        project,
    }: Args,
    state_path: &Path,
) -> anyhow::Result<i32> {
    let store = Store::open(state_path).await?;
    let project = project_of(&store, &project).await?;
    let get = |id: i64| {
        let (store, project) = (&store, &project);
        async move {
            store
                .get(project, id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("project {project:?} has no generation {id}"))
        }
    };
    let newest = store
        .latest(&project)
        .await?
        .ok_or_else(|| anyhow::anyhow!("project {project:?} has no generations"))?;
    let to = match b {
        Some(id) => get(id).await?,
        None => newest.clone(),
    };
    let from = match a {
        Some(id) => get(id).await?,
        None => store.last_good(&project, newest.id).await?.ok_or_else(|| {
            anyhow::anyhow!(
                "project {project:?} has no healthy generation before generation {}; name the two to compare: berth diff A B",
                newest.id
            )
        })?,
    };
    let diff = crate::diff::diff(&from, &to)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&diff)?);
    } else {
        print!("{diff}");
    }
    Ok(EXIT_OK)
}
