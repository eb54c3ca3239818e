//! What the commands print that is not one command's own line: a converge's outcome, a
//! project's status report, and the borderless tables.

use crate::reconcile::ApplyOutcome;
use crate::redact::Redactor;
use crate::store::{Event, Evidence, Generation, format_ms};

/// What a converging command (apply, rollback, down) ended with, for a person.
pub(super) fn print_outcome(project: &str, outcome: &ApplyOutcome, redactor: &Redactor) {
    match outcome {
        ApplyOutcome::NoChanges => println!("No changes."),
        ApplyOutcome::Converged {
            generation,
            resumed,
        } => println!(
            "Converged: generation {generation} of project {project:?} is healthy{}.",
            if *resumed {
                " (resumed after an interrupted converge)"
            } else {
                ""
            }
        ),
        ApplyOutcome::Repaired {
            generation,
            services,
        } => println!(
            "Repaired: {} of project {project:?} back on generation {generation}, healthy.",
            services.join(", ")
        ),
        ApplyOutcome::GateFailed { generation, reason } => {
            eprintln!(
                "berth: generation {generation} failed: {}",
                redactor.text(reason)
            );
            eprintln!(
                "berth: auto_revert is off; project {project:?} is left as it is for inspection"
            );
        }
        ApplyOutcome::RolledBack {
            generation,
            to,
            reason,
        } => {
            eprintln!(
                "berth: generation {generation} failed: {}",
                redactor.text(reason)
            );
            eprintln!(
                "berth: rolled back: project {project:?} is running generation {to} again (healthy); generation {generation} will not be applied again until the desired state changes or --force is given"
            );
        }
        ApplyOutcome::Degraded { generation, reason } => {
            eprintln!(
                "berth: generation {generation} failed: {}",
                redactor.text(reason)
            );
            if reason.contains(crate::migrate::revert::SCHEMA_NOT_UNDONE) {
                eprintln!(
                    "berth: project {project:?} is degraded: its containers are back on the last good generation, its database schema is not"
                );
            } else {
                eprintln!(
                    "berth: project {project:?} is degraded; the failed containers are left for inspection"
                );
            }
        }
        ApplyOutcome::Poisoned { generation, reason } => {
            eprintln!(
                "berth: this desired state failed as generation {generation} and was rolled back: {}",
                redactor.text(reason)
            );
            eprintln!("berth: not applying it again; change the desired state, or pass --force");
        }
        ApplyOutcome::WouldRemoveAll { services } => {
            eprintln!(
                "berth: this desired state would remove every running service of project {project:?} ({}); nothing was changed",
                services.join(", ")
            );
            eprintln!(
                "berth: to take the project down on purpose run `berth down`, or pass --allow-empty"
            );
        }
        ApplyOutcome::Down { generation } => println!(
            "Down: project {project:?} has no containers and no network now (volumes and data are kept); recorded as generation {generation}."
        ),
        ApplyOutcome::Interrupted { generation, signal } => {
            eprintln!(
                "berth: stopped by {}{}; the next converge resumes it",
                crate::shutdown::signal_name(*signal),
                generation
                    .map(|g| format!(": generation {g} is interrupted"))
                    .unwrap_or_default()
            );
        }
    }
}

/// One project's status report, as `berth status` prints it.
pub(super) fn status_text(r: &crate::status::Report) -> String {
    let mut out = format!(
        "project {}: {} — generation {}{}{}\n",
        r.project,
        r.status,
        r.generation
            .map(|g| g.to_string())
            .unwrap_or_else(|| "-".into()),
        r.schema_revision
            .clone()
            .or_else(|| r.schema_version.map(|v| v.to_string()))
            .map(|v| format!(", schema {v}"))
            .unwrap_or_default(),
        if r.repairs > 0 {
            format!(" ({} drift repairs)", r.repairs)
        } else {
            String::new()
        }
    );
    if let Some(g) = &r.git {
        if !g.source.is_empty() {
            out += &format!("  git: {}\n", g.source);
        }
        if let Some(c) = &g.deployed {
            out += &format!(
                "  deployed commit {} {}\n",
                short_commit(c),
                g.deployed_subject.as_deref().unwrap_or_default()
            );
        }
        if let Some(c) = &g.newest
            && g.newest != g.deployed
        {
            out += &format!(
                "  newest commit   {} {}\n",
                short_commit(c),
                g.newest_subject.as_deref().unwrap_or_default()
            );
        }
        if let Some(p) = &g.problem {
            out += &format!("  git fetch failing: {p}\n");
        }
    }
    let rows = r.services.iter().map(|s| {
        let mut row = vec![
            s.service.clone(),
            match &s.replicas {
                Some(r) => format!("{} {r}", s.state),
                None => s.state.clone(),
            },
            s.health
                .as_ref()
                .map(|h| h.to_string())
                .unwrap_or_else(|| "-".into()),
            s.generation
                .map(|g| format!("gen {g}"))
                .unwrap_or_else(|| "-".into()),
        ];
        // Under Swarm: where each replica runs (`1@vm 2@worker`).
        if let Some(tasks) = &s.tasks {
            row.push(crate::swarm::tasks::compact(tasks));
        }
        row
    });
    for line in table(&[], rows).lines() {
        out += &format!("  {line}\n");
    }
    out
}

/// A generation as `berth history` shows it, secrets redacted.
pub(super) struct HistoryRow {
    /// With its outcome as `status` would name it (an unfinished one no process holds
    /// is interrupted).
    pub generation: Generation,
    /// Drift repairs are only counted.
    pub repairs: usize,
    /// What else happened to it: a migration job's runs (with their output), a backup
    /// restored by its revert.
    pub events: Vec<Event>,
    /// What its failed or dead containers left behind.
    pub evidence: Vec<Evidence>,
}

/// `berth history --json`: each generation with its count of drift repairs and its
/// other events.
pub(super) fn history_json(shown: &[HistoryRow]) -> serde_json::Result<String> {
    let rows: Vec<_> = shown
        .iter()
        .map(|s| {
            let mut v = serde_json::to_value(&s.generation).expect("generation serializes");
            v["repairs"] = s.repairs.into();
            v["events"] = serde_json::to_value(&s.events).expect("events serialize");
            v["evidence"] = serde_json::to_value(&s.evidence).expect("evidence serializes");
            v
        })
        .collect();
    serde_json::to_string_pretty(&rows)
}

/// `berth history`: one row a generation; its reason followed by its drift repairs and
/// the backups its revert restored.
pub(super) fn history_table(shown: &[HistoryRow]) -> String {
    let rows = shown.iter().map(|s| {
        let g = &s.generation;
        let mut reason = g.reason.clone().unwrap_or_else(|| "-".into());
        if s.repairs > 0 {
            reason = format!("{reason} [{} drift repairs]", s.repairs);
        }
        for e in s.events.iter().filter(|e| e.kind == "restore") {
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
                    short_commit(c),
                    g.commit_subject.as_deref().unwrap_or_default()
                ),
                None => "-".into(),
            },
            reason,
        ]
    });
    table(
        &[
            "GEN", "PROJECT", "STARTED", "OUTCOME", "SCHEMA", "COMMIT", "REASON",
        ],
        rows,
    )
}

/// `berth history N`: one generation's row, then what happened to it and the evidence
/// its failed or dead containers left (their last `lines` log lines each; `berth logs
/// --generation N` prints all that was kept).
pub(super) fn generation_detail(s: &HistoryRow, lines: usize) -> String {
    let mut out = history_table(std::slice::from_ref(s));
    for e in &s.events {
        out += &format!(
            "{}  {}{}: {}\n",
            format_ms(e.at_ms),
            e.kind,
            e.service
                .as_deref()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default(),
            e.message
        );
    }
    for e in &s.evidence {
        out += &evidence_block(e, lines);
    }
    out
}

/// One container's evidence: how it ended, its health runs and probe, its last lines.
pub(super) fn evidence_block(e: &Evidence, lines: usize) -> String {
    let ended = match (e.running, e.exit_code) {
        (true, _) | (false, None) => "still running".to_string(),
        (false, Some(code)) if e.oom_killed => format!("exited code {code}, OOM killed"),
        (false, Some(code)) => format!("exited code {code}"),
    };
    let why = match e.why {
        crate::store::Cause::GateFailed => "failed its gate",
        crate::store::Cause::Died => "died",
    };
    let mut out = format!(
        "\n== {} ({}, {why}; {ended}; restarts {}; captured {})\n",
        e.service,
        e.container,
        e.restart_count,
        format_ms(e.captured_ms)
    );
    if let Some(t) = &e.started_at {
        out += &format!("started:  {t}\n");
    }
    if let Some(t) = &e.finished_at {
        out += &format!("finished: {t}\n");
    }
    if let Some(p) = &e.probe {
        out += &format!("probe:    {p}\n");
    }
    for h in &e.health {
        out += &format!("health:   {} exit {}: {}\n", h.end, h.exit_code, h.output);
    }
    let from = e.lines.len().saturating_sub(lines);
    if from > 0 {
        out += &format!(
            "({} earlier lines kept: berth logs --generation {})\n",
            from, e.generation
        );
    }
    for l in &e.lines[from..] {
        out += &format!("{} | {l}\n", e.service);
    }
    out
}

/// A commit as people read it: its first 12 hex digits.
fn short_commit(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// Columns as wide as their widest cell, no borders, no wrapping; no header row when
/// `header` is empty.
fn table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled);
    if !header.is_empty() {
        t.set_header(header.to_vec());
    }
    for row in rows {
        t.add_row(row);
    }
    // comfy-table pads every cell by one space on each side: keep the text flush left.
    t.lines()
        .map(|l| format!("{}\n", l.strip_prefix(' ').unwrap_or(&l).trim_end()))
        .collect()
}
