//! `berth history`: generations, outcomes and reasons.

use std::path::Path;

use crate::cmd::print::{HistoryRow, history_json, history_table};
use crate::exit::OK as EXIT_OK;
use crate::status::shown_outcome;
use crate::store::Store;

/// `berth history`'s flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    pub json: bool,
    #[arg(long)]
    pub project: Option<String>,
}

pub async fn run(
    Args {
        json: as_json,
        project,
    }: Args,
    state_path: &Path,
) -> anyhow::Result<i32> {
    let store = Store::open(state_path).await?;
    let gens = store.history(project.as_deref()).await?;
    let mut shown = Vec::new();
    for (i, g) in gens.iter().enumerate() {
        let newest = !gens[i + 1..].iter().any(|n| n.project == g.project);
        let held = newest
            && g.outcome == crate::store::Outcome::Progressing
            && crate::lock::is_held(state_path, &g.project)?.is_some();
        // desired_of registers the generation's secrets for log lines too.
        let r = g.desired().map(|d| d.redactor()).unwrap_or_default();
        let mut g = g.clone();
        g.outcome = shown_outcome(&g, newest, held);
        g.reason = g.reason.map(|x| r.text(&x));
        let events = store.events(g.id).await?;
        let repairs = events.iter().filter(|e| e.kind == "repair").count();
        let events = events
            .into_iter()
            .filter(|e| e.kind != "repair")
            .map(|mut e| {
                e.message = r.text(&e.message);
                e
            })
            .collect();
        shown.push(HistoryRow {
            generation: g,
            repairs,
            events,
        });
    }
    if as_json {
        println!("{}", history_json(&shown)?);
    } else {
        print!("{}", history_table(&shown));
    }
    Ok(EXIT_OK)
}
