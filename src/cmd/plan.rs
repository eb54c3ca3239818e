//! `berth plan`: what apply would do, the schema step it would take, and what the
//! store says it would do first or refuse.

use std::path::Path;

use crate::cmd::{FileArgs, connect, load};
use crate::exit::OK as EXIT_OK;
use crate::observe::observe;
use crate::plan::plan;
use crate::store::Store;

pub async fn run(args: FileArgs, state_path: &Path) -> anyhow::Result<i32> {
    let d = match load(&args) {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let engine = connect().await?;
    // Under engine = "swarm" the project's services stand for its containers, and the
    // database's task on this node for its container.
    let rt = crate::swarm::local::Local::of(&engine, &d).await?;
    let observed = match d.project.engine {
        crate::spec::Engine::Docker => observe(&engine, &d).await?,
        crate::spec::Engine::Swarm => {
            let sw = crate::swarm::Swarm::connect().await?;
            crate::swarm::observe(&engine, &sw, &d).await?
        }
    };
    let p = plan(&d, &observed);
    print!("{}", d.redactor().text(&p.to_string()));
    if let Some(m) = &d.migrations
        && let Some(line) = crate::migrate::step::would_run(&rt, &d, m).await
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
