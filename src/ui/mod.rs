//! The status page `berth run` serves at `/` (docs/status-page.md): pure functions from
//! what the daemon knows (its published [`Report`], the store's generations, evidence and
//! diffs, gathered by [`gather`]) to HTML, so they are tested without a daemon.
//!
//! Templates are [maud]'s: checked when berth compiles, every value escaped unless it is
//! marked otherwise (only the page's own CSS and script are). Every text that comes from
//! the store, the engine or a container also passes the desired state's redactor before
//! it is escaped, and the finished page passes it once more: a secret value never reaches
//! the page.
//!
//! The DOM is the contract of the browser tests: `#status-word`, `#status-reason`,
//! `#generation`, `tr.service[data-service][data-health][data-state]`, the timeline
//! `svg#timeline-svg` with one `g.bar[data-service]` per service, and one
//! `section#generation-N.generation[data-outcome]` per history entry with `.reason`,
//! `.evidence` and `.diff`.

pub mod gather;
pub mod timeline;

use std::collections::BTreeMap;

use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Serialize;

use crate::diff::Diff;
use crate::redact::Redactor;
use crate::status::Report;
use crate::store::{Evidence, Generation, Outcome, format_ms};

/// How many generations the page's history shows, newest first.
pub const HISTORY: usize = 20;
/// How many of a failed container's kept log lines a history entry shows.
pub const EVIDENCE_LINES: usize = 20;
/// How many recent log lines `/logs/SERVICE` shows.
pub const LOG_LINES: usize = 200;

/// What the page shows of one service besides its report line: what the running
/// generation asked of it, and what the engine says of its container.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServiceInfo {
    /// The image reference (its tag), as the desired state names it.
    pub image: String,
    /// The image ID the running generation pinned it to.
    pub pinned: Option<String>,
    /// Published ports, `[IP:]HOST:CONTAINER/PROTOCOL`.
    pub ports: Vec<String>,
    /// When its container last started (Unix ms), as the engine says.
    pub started_ms: Option<i64>,
    /// Drift repairs of it on the running generation.
    pub repairs: usize,
}

/// One generation as the page shows it: its record (outcome as readers name it, reason
/// redacted), the order of its timeline's rows, and for a failed one its evidence and
/// its diff against the last good generation.
#[derive(Debug, Clone)]
pub struct GenerationView {
    pub generation: Generation,
    /// Its services in dependency order (the timeline's rows); `migrations` is a step
    /// after its database's level, not a row of its own.
    pub order: Vec<String>,
    pub evidence: Vec<Evidence>,
    /// `berth diff LAST_GOOD N`, for a generation that failed.
    pub diff: Option<Diff>,
}

impl GenerationView {
    /// How long its converge (and revert) took, when it ended.
    pub fn duration_ms(&self) -> Option<i64> {
        self.generation
            .finished_ms
            .map(|f| f - self.generation.started_ms)
    }

    /// It failed: its evidence and diff are shown.
    pub fn failed(&self) -> bool {
        matches!(
            self.generation.outcome,
            Outcome::Failed | Outcome::RolledBack
        )
    }
}

/// Everything the page at `/` shows.
#[derive(Debug, Clone)]
pub struct Overview {
    pub report: Report,
    /// Each service's extra facts, by name.
    pub services: BTreeMap<String, ServiceInfo>,
    /// When the running generation became healthy (a rolled-back one: when its revert
    /// ended).
    pub healthy_since_ms: Option<i64>,
    /// The newest generation first, at most [`HISTORY`].
    pub history: Vec<GenerationView>,
    /// The clock the page was drawn at (uptimes).
    pub now_ms: i64,
    /// The secrets of the generations shown.
    pub redactor: Redactor,
}

/// What the live updates carry (`/api/v1/events`): the status word as `berth status`
/// says it, its reason, the generation and each service's state and health.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Live {
    pub project: String,
    pub word: &'static str,
    pub reason: Option<String>,
    pub generation: Option<i64>,
    pub services: Vec<LiveService>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveService {
    pub service: String,
    pub state: String,
    pub health: String,
}

impl Live {
    /// From a published report, every registered secret hidden.
    pub fn of(report: &Report) -> Live {
        Live {
            project: report.project.clone(),
            word: report.status.word(),
            reason: report.status.reason().map(crate::redact::registered_text),
            generation: report.generation,
            services: report
                .services
                .iter()
                .map(|s| LiveService {
                    service: s.service.clone(),
                    state: s.state.clone(),
                    health: health_word(s),
                })
                .collect(),
        }
    }

    /// One server-sent event (`event: status`), its data one line of JSON.
    pub fn event(&self) -> String {
        let json = serde_json::to_string(self).expect("plain data serializes");
        format!("event: status\ndata: {json}\n\n")
    }
}

fn health_word(s: &crate::status::ServiceStatus) -> String {
    s.health
        .as_ref()
        .map(|h| h.to_string())
        .unwrap_or_else(|| "-".into())
}

/// A duration as people read it: `850 ms`, `4.2 s`, `3 min 10 s`, `2 h 5 min`, `3 d 4 h`.
pub fn human_ms(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {} s", s / 60, s % 60),
        3_600_000..86_400_000 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// A commit as people read it: its first 12 hex digits.
fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// The page's style: plain, one column on a phone, no asset from anywhere.
pub const STYLE: &str = r#"
:root{--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--mute:#57606a;--line:#d0d7de;--bg:#f6f8fa}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1f2328;background:#fff}
main{max-width:1100px;margin:0 auto;padding:12px}
h1{font-size:1.3em;margin:.2em 0}h2{font-size:1.1em;margin:1.2em 0 .4em;border-bottom:1px solid var(--line)}
header#summary{padding:10px;border:1px solid var(--line);border-radius:6px;background:var(--bg)}
.word{font-weight:700;padding:1px 8px;border-radius:10px;color:#fff;background:var(--mute)}
.word-converged{background:var(--ok)}.word-progressing{background:#0969da}
.word-degraded,.word-blocked{background:var(--bad)}.word-rolled-back,.word-interrupted{background:var(--warn)}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:.5em 0 0}
dl.facts dt{color:var(--mute)}dl.facts dd{margin:0;overflow-wrap:anywhere}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}
td.pinned,code{font-family:ui-monospace,monospace;font-size:.9em}
.health-healthy{color:var(--ok);font-weight:600}.health-unhealthy{color:var(--bad);font-weight:600}
section.generation{border:1px solid var(--line);border-radius:6px;padding:8px 10px;margin:8px 0}
section.generation[data-outcome=rolled-back],section.generation[data-outcome=failed]{border-left:4px solid var(--bad)}
section.generation[data-outcome=healthy]{border-left:4px solid var(--ok)}
pre{background:var(--bg);padding:6px;overflow-x:auto;white-space:pre-wrap;overflow-wrap:anywhere;font-size:.85em;margin:4px 0}
.mute{color:var(--mute)}
svg#timeline-svg{width:100%;height:auto;max-width:1100px}
svg text{font:11px system-ui,sans-serif;fill:#1f2328}
.seg-create{fill:#8c959f}.seg-start{fill:#54aeff}.seg-stable{fill:#4ac26b}.seg-migrate{fill:#bf8700}
.seg-cut{fill:#d0d7de}.mark-failed{stroke:var(--bad);stroke-width:3}.mark-healthy{stroke:#116329;stroke-width:2}
.revert rect{fill:#ffebe9;stroke:var(--bad)}.axis{stroke:var(--line)}
@media (max-width:640px){th.opt,td.opt{display:none}main{padding:6px}}
"#;

/// The live updates: the status word, reason, generation and each service's row follow
/// `/api/v1/events` without a reload. With JavaScript off, `<noscript>` reloads instead.
pub const SCRIPT: &str = r#"
(function(){
  if(!window.EventSource)return;
  var es=new EventSource("/api/v1/events");
  function set(id,v){var e=document.getElementById(id);if(e)e.textContent=v;}
  es.addEventListener("status",function(m){
    var s;try{s=JSON.parse(m.data);}catch(e){return;}
    var w=document.getElementById("status-word");
    if(w){w.textContent=s.word;w.className="word word-"+s.word;}
    document.body.setAttribute("data-status",s.word);
    set("status-reason",s.reason||"");
    set("generation",s.generation==null?"-":String(s.generation));
    (s.services||[]).forEach(function(v){
      var row=document.querySelector('tr.service[data-service="'+CSS.escape(v.service)+'"]');
      if(!row)return;
      row.setAttribute("data-health",v.health);row.setAttribute("data-state",v.state);
      var h=row.querySelector("td.health");if(h){h.textContent=v.health;h.className="health health-"+v.health;}
      var st=row.querySelector("td.state");if(st)st.textContent=v.state;
    });
    var live=document.getElementById("live");if(live)live.setAttribute("data-updated",String(Date.now()));
  });
})();
"#;

/// A whole page around `content`.
fn layout(title: &str, status: Option<&str>, live: bool, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) }
                style { (PreEscaped(STYLE)) }
                @if live {
                    noscript { meta http-equiv="refresh" content="5"; }
                }
            }
            body data-status=[status] {
                main { (content) }
                @if live {
                    script { (PreEscaped(SCRIPT)) }
                }
            }
        }
    }
}

/// The finished page's last pass: any secret value left (one that reached the markup
/// some way the fields did not catch) is hidden, and the mark itself escaped.
fn last_pass(r: &Redactor, html: Markup) -> String {
    r.text(&html.into_string())
        .replace(crate::redact::REDACTED, "&lt;redacted&gt;")
}

impl Overview {
    /// A text from the store, the engine or a container, with its secrets hidden.
    fn r(&self, s: &str) -> String {
        self.redactor.text(s)
    }
}

/// The page at `/`.
pub fn page(o: &Overview) -> String {
    let report = &o.report;
    let word = report.status.word();
    let reason = report.status.reason().map(|r| o.r(r));
    let unreachable = reason
        .as_deref()
        .is_some_and(|r| r.contains("engine unreachable"));
    let git = report.git.as_ref();
    let content = html! {
        header #summary {
            h1 { "project " span #project { (report.project) } }
            p #status {
                span #status-word class={ "word word-" (word) } { (word) }
                " "
                span #status-reason { @if let Some(r) = &reason { (r) } }
            }
            dl.facts {
                dt { "generation" }
                dd { span #generation { (report.generation.map(|g| g.to_string()).unwrap_or_else(|| "-".into())) }
                     @if let Some(o) = &report.outcome { " " span.mute #outcome { "(" (o) ")" } } }
                @if let Some(c) = git.and_then(|g| g.deployed.as_deref()) {
                    dt { "commit" }
                    dd { code #commit title=(c) { (short(c)) } " "
                         span #commit-subject { (o.r(git.and_then(|g| g.deployed_subject.as_deref()).unwrap_or_default())) } }
                }
                @if let Some(g) = git.filter(|g| g.newest.is_some() && g.newest != g.deployed) {
                    dt { "newest commit" }
                    dd { code #newest-commit { (short(g.newest.as_deref().unwrap_or_default())) } " "
                         (o.r(g.newest_subject.as_deref().unwrap_or_default())) }
                }
                @if let Some(p) = git.and_then(|g| g.problem.as_deref()) {
                    dt { "git" } dd #git-problem { (o.r(p)) }
                }
                dt { "healthy since" }
                dd #healthy-since { @match o.healthy_since_ms {
                    Some(ms) => { (format_ms(ms)) " " span.mute { "(" (human_ms(o.now_ms - ms)) " ago)" } }
                    None => "-",
                } }
                dt { "engine" }
                dd #engine data-reachable=(!unreachable) { @if unreachable { "unreachable" } @else { "reachable" } }
                @if report.repairs > 0 {
                    dt { "drift repairs" } dd #repairs { (report.repairs) }
                }
                @if let Some(s) = report.schema_revision.clone().or(report.schema_version.map(|v| v.to_string())) {
                    dt { "schema" } dd #schema { (s) }
                }
            }
            p #live.mute data-updated="" {
                "Follows the daemon live; "
                a href="/api/v1/status" { "status as JSON" } ", "
                a href="/api/v1/history" { "history as JSON" } "."
            }
        }
        (services_table(o))
        @if let Some(newest) = o.history.first() {
            section #timeline {
                h2 { "Converge of generation " (newest.generation.id) }
                (timeline::svg(&newest.generation, &newest.order))
                p.mute { a href={ "/generation/" (newest.generation.id) } { "generation " (newest.generation.id) " alone" } }
            }
        }
        section #history {
            h2 { "History" }
            @if o.history.is_empty() { p.mute { "No generation recorded yet." } }
            @for g in &o.history { (generation_section(g, &o.redactor, false)) }
        }
    };
    let html = layout(
        &format!("{} {word} — berth", report.project),
        Some(word),
        true,
        content,
    );
    last_pass(&o.redactor, html)
}

fn services_table(o: &Overview) -> Markup {
    // In dependency order, as the timeline's rows (the newest generation's), the rest
    // after them by name.
    let order: &[String] = o.history.first().map(|v| v.order.as_slice()).unwrap_or(&[]);
    let mut rows: Vec<_> = o.report.services.iter().collect();
    rows.sort_by_key(|s| {
        (
            order
                .iter()
                .position(|n| *n == s.service)
                .unwrap_or(usize::MAX),
            s.service.clone(),
        )
    });
    html! {
        section #services {
            h2 { "Services" }
            div.table-wrap { table {
                thead { tr {
                    th { "service" } th { "state" } th { "health" } th { "image" }
                    th.opt { "pinned" } th { "uptime" } th.opt { "repairs" } th.opt { "ports" } th { "logs" }
                } }
                tbody {
                    @for s in rows {
                        @let info = o.services.get(&s.service).cloned().unwrap_or_default();
                        @let health = health_word(s);
                        tr.service data-service=(s.service) data-health=(health) data-state=(s.state) {
                            td.name { (s.service) }
                            td.state { (s.state) @if let Some(r) = &s.replicas { " " (r) } }
                            td class={ "health health-" (health) } title=(o.r(&s.detail)) { (health) }
                            td.image { code { (o.r(&info.image)) } }
                            td.pinned.opt title=[info.pinned.as_deref()] {
                                (info.pinned.as_deref().map(|p| p.trim_start_matches("sha256:").chars().take(12).collect::<String>()).unwrap_or_else(|| "-".into()))
                            }
                            td.uptime { @match info.started_ms.filter(|_| s.state == "running") {
                                Some(t) => (human_ms(o.now_ms - t)),
                                None => "-",
                            } }
                            td.repairs.opt { (info.repairs) }
                            td.ports.opt { @if info.ports.is_empty() { "-" } @else { (info.ports.join(", ")) } }
                            td.logs { a href={ "/logs/" (s.service) } { "recent lines" } }
                        }
                    }
                }
            } }
        }
    }
}

/// One generation's history entry: outcome, reason, commit, duration; for a failed one
/// its evidence and its diff against the last good one. `open`: the evidence expanded.
fn generation_section(v: &GenerationView, r: &Redactor, open: bool) -> Markup {
    let g = &v.generation;
    let outcome = g.outcome.as_str();
    html! {
        section.generation id={ "generation-" (g.id) } data-generation=(g.id) data-outcome=(outcome) {
            h3 {
                a href={ "/generation/" (g.id) } { "generation " (g.id) } " "
                span.outcome { (outcome) }
                @if let Some(to) = g.reverted_to { " " span.reverted-to data-reverted-to=(to) { "→ back on " (to) } }
            }
            dl.facts {
                dt { "started" } dd.started { (format_ms(g.started_ms)) }
                dt { "duration" } dd.duration { (v.duration_ms().map(human_ms).unwrap_or_else(|| "-".into())) }
                dt { "kind" } dd.kind { (g.kind.as_str()) }
                @if let Some(c) = &g.commit {
                    dt { "commit" } dd.commit { code title=(c) { (short(c)) } " " (r.text(g.commit_subject.as_deref().unwrap_or_default())) }
                }
                @if let Some(s) = g.schema() { dt { "schema" } dd.schema { (s) } }
            }
            p.reason { @match &g.reason { Some(x) => (r.text(x)), None => span.mute { "no reason recorded" } } }
            @if v.failed() || !v.evidence.is_empty() {
                details.evidence open[open || v.failed()] {
                    summary { "evidence (" (v.evidence.len()) ")" }
                    @if v.evidence.is_empty() { p.mute { "No container evidence was kept." } }
                    @for e in &v.evidence { (evidence_block(e, r)) }
                }
            }
            @if let Some(d) = &v.diff {
                details.diff open[open] {
                    summary { "diff against generation " (d.from) }
                    pre { (r.text(&d.to_string())) }
                }
            }
        }
    }
}

fn evidence_block(e: &Evidence, r: &Redactor) -> Markup {
    let ended = match (e.running, e.exit_code) {
        (true, _) | (false, None) => "still running".to_string(),
        (false, Some(code)) if e.oom_killed => format!("exited code {code}, OOM killed"),
        (false, Some(code)) => format!("exited code {code}"),
    };
    let from = e.lines.len().saturating_sub(EVIDENCE_LINES);
    html! {
        div.container-evidence data-service=(e.service) data-exit-code=[e.exit_code] data-oom=(e.oom_killed) {
            p { strong { (e.service) } " " span.mute { (e.container) ", " (e.why.as_str()) "; " } span.ended { (ended) } "; restarts " (e.restart_count) }
            @if let Some(p) = &e.probe { p.probe { "probe: " (r.text(p)) } }
            @for h in &e.health { p.healthcheck.mute { "health: exit " (h.exit_code) ": " (r.text(&h.output)) } }
            @if from > 0 { p.mute { (from) " earlier lines kept: berth logs --generation " (e.generation) } }
            pre.lines { @for l in &e.lines[from..] { (r.text(l)) "\n" } }
        }
    }
}

/// `/generation/N`: one generation's timeline, evidence and diff.
pub fn generation_page(project: &str, v: &GenerationView, r: &Redactor) -> String {
    let g = &v.generation;
    let content = html! {
        p { a href="/" { "← " (project) } }
        h1 { "Generation " (g.id) }
        section #timeline { (timeline::svg(g, &v.order)) }
        (generation_section(v, r, true))
    };
    let html = layout(
        &format!("{project} generation {} — berth", g.id),
        None,
        false,
        content,
    );
    last_pass(r, html)
}

/// `/logs/SERVICE`: a service's recent lines, already redacted and escaped by
/// [`crate::logs`]; redacted here once more.
pub fn logs_page(project: &str, service: &str, lines: &[String], r: &Redactor) -> String {
    let content = html! {
        p { a href="/" { "← " (project) } }
        h1 { "Recent lines of " span #log-service { (service) } }
        p.mute { "The last " (LOG_LINES) " at most, secrets hidden. " a href={ "/logs/" (service) } { "reload" } }
        @if lines.is_empty() { p.mute #no-lines { "No lines." } }
        pre #log-lines data-service=(service) { @for l in lines { (r.text(l)) "\n" } }
    };
    let html = layout(
        &format!("{project} {service} logs — berth"),
        None,
        false,
        content,
    );
    last_pass(r, html)
}

/// A page that only says something is missing (404) or went wrong.
pub fn message_page(title: &str, message: &str) -> String {
    layout(
        title,
        None,
        false,
        html! { p { a href="/" { "← status" } } h1 { (title) } p #message { (message) } },
    )
    .into_string()
}

#[cfg(test)]
mod tests;
