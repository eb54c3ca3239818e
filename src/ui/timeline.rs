//! A generation's converge as an SVG Gantt chart, drawn on the server from its
//! [`Timings`](crate::store::Timings): one row (`g.bar[data-service]`) per service in
//! dependency order. A row shows its container being made (`.seg-create`, from the
//! step's begin to the container existing), started until the probe first passed
//! (`.seg-start`), the stability window until the gate closed (`.seg-stable`), and the
//! failure (`.mark-failed`) or the converge being cut by another's failure (`.seg-cut`).
//! The migrations step is a row of its own after its database's level (`g.step`, not
//! a bar), where the order names it.
//! A rolled-back generation ends in a `g.revert` band from the failure to the end,
//! naming the generation it went back to.

use maud::{Markup, html};

use crate::store::{Generation, Outcome, Timing, now_ms};

const WIDTH: f64 = 800.0;
const LABEL: f64 = 150.0;
const ROW: f64 = 22.0;
const TOP: f64 = 18.0;

/// The chart of generation `g`, rows in `order` (services, and `migrations` where its
/// step ran).
pub fn svg(g: &Generation, order: &[String]) -> Markup {
    let t0 = g.started_ms;
    let points = g.timings.values().flat_map(points);
    let last = points
        .chain(g.finished_ms)
        .max()
        .unwrap_or(t0)
        .max(match g.finished_ms {
            // Still converging: up to now.
            None if g.outcome.unfinished() => now_ms(),
            _ => t0,
        });
    let span = (last - t0).max(1) as f64;
    let x = |ms: i64| LABEL + ((ms - t0).max(0) as f64 / span) * (WIDTH - LABEL - 10.0);
    let rows = order.len();
    let revert = g.outcome == Outcome::RolledBack;
    let height = TOP + ROW * rows as f64 + if revert { ROW + 6.0 } else { 6.0 };
    let failed_at = g.timings.values().filter_map(|t| t.failed_ms).min();
    let mut y = TOP;
    let mut row_y = || {
        let at = y;
        y += ROW;
        at
    };
    html! {
        svg #timeline-svg xmlns="http://www.w3.org/2000/svg" role="img"
            viewBox={ "0 0 " (WIDTH) " " (height) } data-generation=(g.id) data-outcome=(g.outcome.as_str())
            aria-label={ "converge timeline of generation " (g.id) } {
            title { "generation " (g.id) ": " (g.outcome.as_str()) }
            text x="0" y="12" class="mute" { "0" }
            text x=(WIDTH - 10.0) y="12" text-anchor="end" { (super::human_ms(last - t0)) }
            line.axis x1=(LABEL) y1=(TOP - 2.0) x2=(LABEL) y2=(height - 4.0) {}
            @for service in order {
                @let t = g.timings.get(service);
                @if let Some(m) = t.filter(|t| is_step(service, t)) {
                    (step(m, row_y(), &x))
                } @else {
                    (bar(service, t, row_y(), &x))
                }
            }
            @if revert {
                @let from = failed_at.unwrap_or(t0);
                @let to = g.finished_ms.unwrap_or(last);
                @let yy = row_y();
                g.revert data-reverted-to=[g.reverted_to] {
                    title { "reverted to generation " (g.reverted_to.map(|t| t.to_string()).unwrap_or_else(|| "?".into())) }
                    rect x=(x(from)) y=(yy + 3.0) width=((x(to) - x(from)).max(2.0)) height=(ROW - 6.0) {}
                    text x="0" y=(yy + 15.0) { "revert → " (g.reverted_to.map(|t| t.to_string()).unwrap_or_default()) }
                }
            }
        }
    }
}

/// Every time a step recorded.
fn points(t: &Timing) -> impl Iterator<Item = i64> + '_ {
    [
        t.begin_ms,
        t.create_ms,
        t.created_ms,
        t.started_ms,
        t.healthy_ms,
        t.gate_passed_ms,
        t.failed_ms,
        t.cut_ms,
        t.end_ms,
    ]
    .into_iter()
    .flatten()
}

/// The migrations step (under its node's name, a `migrate` action), not a service.
fn is_step(name: &str, t: &Timing) -> bool {
    name == crate::spec::MIGRATIONS_NODE && t.action.as_deref() == Some("migrate")
}

fn seg(class: &str, label: &str, from: f64, to: f64, y: f64) -> Markup {
    html! {
        rect class=(class) x=(from) y=(y + 4.0) width=((to - from).max(1.5)) height=(ROW - 8.0) {
            title { (label) }
        }
    }
}

/// One service's row.
fn bar(service: &str, t: Option<&Timing>, y: f64, x: &dyn Fn(i64) -> f64) -> Markup {
    let action = t.and_then(|t| t.action.as_deref()).unwrap_or("none");
    let failed = t.and_then(|t| t.failed_ms);
    let begin = t.and_then(|t| t.begin_ms.or(t.create_ms));
    let created = t.and_then(|t| t.created_ms);
    let started = t.and_then(|t| t.started_ms);
    let healthy = t.and_then(|t| t.healthy_ms);
    let passed = t.and_then(|t| t.gate_passed_ms);
    let cut = t.and_then(|t| t.cut_ms);
    let ended = passed.or(failed).or(cut);
    html! {
        g.bar data-service=(service) data-action=(action) data-failed=(failed.is_some())
            data-healthy=(healthy.is_some()) {
            text x="0" y=(y + 15.0) { (service) @if action == "noop" { " (unchanged)" } }
            @if let (Some(b), Some(c)) = (begin, created.or(started).or(failed).or(cut)) {
                (seg("seg-create", &format!("{service}: {action}, container made"), x(b), x(c), y))
            }
            @if let Some(s) = started.or(created) {
                @if let Some(h) = healthy.or(failed).or(cut) {
                    (seg("seg-start", &format!("{service}: started, probing"), x(s), x(h), y))
                }
            }
            @if let (Some(h), Some(p)) = (healthy, passed.or(failed).or(cut)) {
                (seg("seg-stable", &format!("{service}: healthy, stability window"), x(h), x(p), y))
            }
            @if let Some(h) = healthy {
                line.mark-healthy x1=(x(h)) y1=(y + 2.0) x2=(x(h)) y2=(y + ROW - 2.0) { title { (service) ": first probe pass" } }
            }
            @if let (Some(c), None) = (cut, failed) {
                (seg("seg-cut", &format!("{service}: cut short by another service's failure"), x(c), x(c) + 4.0, y))
            }
            @if let Some(f) = failed {
                line.mark-failed x1=(x(f)) y1=(y + 1.0) x2=(x(f)) y2=(y + ROW - 1.0) { title { (service) ": failed here" } }
            }
            @if ended.is_none() && begin.is_none() && started.is_none() {
                text x=(LABEL + 4.0) y=(y + 15.0) class="mute" { @if action == "noop" { "unchanged" } @else { "—" } }
            }
        }
    }
}

/// The migrations step's row.
fn step(t: &Timing, y: f64, x: &dyn Fn(i64) -> f64) -> Markup {
    let name = crate::spec::MIGRATIONS_NODE;
    html! {
        g.step data-step=(name) data-failed=(t.failed_ms.is_some()) {
            text x="0" y=(y + 15.0) { (name) }
            @if let Some(b) = t.begin_ms {
                @if let Some(e) = t.end_ms.or(t.failed_ms).or(t.cut_ms) {
                    (seg("seg-migrate", "migrations step", x(b), x(e), y))
                }
            }
            @if let Some(f) = t.failed_ms {
                line.mark-failed x1=(x(f)) y1=(y + 1.0) x2=(x(f)) y2=(y + ROW - 1.0) { title { "migrations failed here" } }
            }
        }
    }
}
