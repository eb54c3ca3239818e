//! `berth plan`: what apply would do, the schema step it would take, and what the
//! store says it would do first or refuse.

use std::path::Path;

use crate::cmd::{FileArgs, connect, load};
use crate::exit::OK as EXIT_OK;
use crate::observe::observe;
use crate::plan::plan;
use crate::runtime::docker::DockerRuntime;
use crate::store::Store;

pub async fn run(args: FileArgs, state_path: &Path) -> anyhow::Result<i32> {
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
        let store = Store::open(state_path).await?;
        let project = &d.project.name;
        if let Some(latest) = store.latest(project).await?
            && latest.outcome.unfinished()
            && crate::lock::is_held(state_path, project)?.is_none()
        {
            println!(
                "Note: generation {} did not end ({}); apply finishes it first, gating every service again.",
                latest.id, latest.outcome
            );
        }
        let hash = crate::hash::resolved_hash(&d);
        if let Some(p) = store.poisoned_by(project, &hash).await? {
            println!(
                "Note: this desired state is poisoned (generation {} was rolled back); apply refuses it without --force.",
                p.id
            );
        }
    }
    Ok(EXIT_OK)
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
    let source = match crate::migrate::Runner::of(m) {
        crate::migrate::Runner::Directory { source, .. } => source,
        crate::migrate::Runner::Job(job) => {
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
    };
    let newest = crate::migrate::resolve(source)
        .map(|l| l.iter().map(|(m, _)| m.version).max().unwrap_or(0))
        .unwrap_or(0);
    let status = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        crate::migrate::status(&url, source),
    )
    .await;
    match status {
        Ok(Ok(s)) => step::plan_line(&s, newest),
        Ok(Err(e)) => cannot(e.to_string()),
        Err(_) => cannot("the database did not answer within 10 s".into()),
    }
}
