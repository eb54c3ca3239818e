//! `berth history`: generations, outcomes and reasons; `berth history N`: one generation
//! with its events and the evidence its failed or dead containers left.

use std::path::Path;

use crate::cmd::print::{HistoryRow, generation_detail, history_json, history_table};
use crate::exit::{OK as EXIT_OK, RUNTIME as EXIT_RUNTIME};
use crate::status::shown_outcome;
use crate::store::{Evidence, Store};

/// How many of a container's kept log lines `berth history N` shows.
const DETAIL_LINES: usize = 20;

/// `berth history`'s flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Show this generation only, with its events and evidence.
    pub generation: Option<i64>,
    #[arg(long)]
    pub json: bool,
    #[arg(long)]
    pub project: Option<String>,
}

pub async fn run(
    Args {
        generation,
        json: as_json,
        project,
    }: Args,
    state_path: &Path,
) -> anyhow::Result<i32> {
    let store = Store::open(state_path).await?;
    let gens = store.history(project.as_deref()).await?;
    let mut shown = Vec::new();
    for (i, g) in gens.iter().enumerate() {
        if generation.is_some_and(|n| n != g.id) {
            continue;
        }
        let newest = !gens[i + 1..].iter().any(|n| n.project == g.project);
        let held = newest
            && g.outcome == crate::store::Outcome::Progressing
            && crate::lock::is_held(state_path, &g.project)?.is_some();
        // desired() registers the generation's secrets for log lines too.
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
        let evidence = store
            .evidence(g.id)
            .await?
            .into_iter()
            .map(|e| redacted(e, &r))
            .collect();
        shown.push(HistoryRow {
            generation: g,
            repairs,
            events,
            evidence,
        });
    }
    if let Some(n) = generation
        && shown.is_empty()
    {
        eprintln!("berth: error: the state store has no generation {n}");
        return Ok(EXIT_RUNTIME);
    }
    if as_json {
        println!("{}", history_json(&shown)?);
    } else if generation.is_some() {
        print!("{}", generation_detail(&shown[0], DETAIL_LINES));
    } else {
        print!("{}", history_table(&shown));
    }
    Ok(EXIT_OK)
}

/// Evidence with the generation's own secrets hidden too (what was kept was redacted of
/// the secrets known when it was captured).
fn redacted(mut e: Evidence, r: &crate::redact::Redactor) -> Evidence {
    for l in &mut e.lines {
        *l = r.text(l);
    }
    for h in &mut e.health {
        h.output = r.text(&h.output);
    }
    e.probe = e.probe.map(|p| r.text(&p));
    e
}
