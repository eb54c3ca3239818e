//! `berth history`: generations, outcomes and reasons.

use std::path::Path;

use crate::cmd::print::table;
use crate::status::exit::OK as EXIT_OK;
use crate::status::shown_outcome;
use crate::store::{Store, format_ms};

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
        let r = crate::converge::desired_of(g)
            .map(|d| d.redactor())
            .unwrap_or_default();
        let mut g = g.clone();
        g.outcome = shown_outcome(&g, newest, held);
        g.reason = g.reason.map(|x| r.text(&x));
        let events = store.events(g.id).await?;
        let repairs = events.iter().filter(|e| e.kind == "repair").count();
        // What else happened to it: a migration job's runs (with their output),
        // a backup restored by its revert. Repairs are only counted.
        let other: Vec<_> = events
            .into_iter()
            .filter(|e| e.kind != "repair")
            .map(|mut e| {
                e.message = r.text(&e.message);
                e
            })
            .collect();
        shown.push((g, repairs, other));
    }
    if as_json {
        let rows: Vec<_> = shown
            .iter()
            .map(|(g, repairs, other)| {
                let mut v = serde_json::to_value(g).expect("generation serializes");
                v["repairs"] = (*repairs).into();
                v["events"] = serde_json::to_value(other).expect("events serialize");
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let rows = shown.iter().map(|(g, repairs, other)| {
            let mut reason = g.reason.clone().unwrap_or_else(|| "-".into());
            if *repairs > 0 {
                reason = format!("{reason} [{repairs} drift repairs]");
            }
            for e in other.iter().filter(|e| e.kind == "restore") {
                reason = format!("{reason} [{}]", e.message);
            }
            vec![
                g.id.to_string(),
                g.project.clone(),
                format_ms(g.started_ms),
                g.outcome.to_string(),
                g.schema()
                    .map(|v| format!("schema {v}"))
                    .unwrap_or_else(|| "-".into()),
                match &g.commit {
                    Some(c) => format!(
                        "{} {}",
                        &c[..c.len().min(12)],
                        g.commit_subject.as_deref().unwrap_or_default()
                    ),
                    None => "-".into(),
                },
                reason,
            ]
        });
        print!(
            "{}",
            table(
                &[
                    "GEN", "PROJECT", "STARTED", "OUTCOME", "SCHEMA", "COMMIT", "REASON"
                ],
                rows
            )
        );
    }
    Ok(EXIT_OK)
}
