//! What the page shows, read from the store (and, for uptimes and log lines, the engine):
//! everything [`super::page`] and [`super::generation_page`] draw, secrets already hidden
//! where the store's text may quote them.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::Duration;

use super::{GenerationView, HISTORY, LOG_LINES, Overview, ServiceInfo};
use crate::redact::Redactor;
use crate::runtime::{LogOptions, Runtime};
use crate::spec::{DesiredState, MIGRATIONS_NODE};
use crate::status::{Report, shown_outcome};
use crate::store::{Evidence, Generation, Outcome, Store, StoreError, now_ms};

/// How long the page waits for the engine (uptimes, log lines) before it goes without.
pub const ENGINE_WAIT: Duration = Duration::from_secs(3);

/// A desired state's services in dependency order (the converge's levels, by name within
/// a level), with `migrations` right after its database's level when it has a
/// `[migrations]` block.
pub fn order(d: &DesiredState) -> Vec<String> {
    let migrations = d.migrations.as_ref();
    let nodes = d.services.values().map(|s| {
        (
            s.name.as_str(),
            crate::spec::dependencies(s, migrations)
                .into_iter()
                .filter(|dep| *dep != MIGRATIONS_NODE)
                .collect(),
        )
    });
    let levels =
        crate::graph::levels(nodes).unwrap_or_else(|_| vec![d.services.keys().cloned().collect()]);
    let mut out = Vec::new();
    for level in levels {
        let has_db = migrations.is_some_and(|m| level.contains(&m.service));
        out.extend(level);
        if has_db {
            out.push(MIGRATIONS_NODE.to_string());
        }
    }
    out
}

/// Evidence with the generation's own secrets hidden too.
fn redacted(mut e: Evidence, r: &Redactor) -> Evidence {
    for l in &mut e.lines {
        *l = r.text(l);
    }
    for h in &mut e.health {
        h.output = r.text(&h.output);
    }
    e.probe = e.probe.map(|p| r.text(&p));
    e
}

/// One generation as the page shows it. `newest` and `held` decide its outcome as
/// `berth history` names it; its secrets join `redactor`.
pub async fn view(
    store: &Store,
    mut g: Generation,
    newest: bool,
    held: bool,
    redactor: &mut Redactor,
) -> Result<GenerationView, StoreError> {
    let desired = g.desired().ok();
    if let Some(d) = &desired {
        *redactor = redactor.union(&d.redactor());
    }
    g.outcome = shown_outcome(&g, newest, held);
    g.reason = g.reason.map(|x| redactor.text(&x));
    let evidence = store
        .evidence(g.id)
        .await?
        .into_iter()
        .map(|e| redacted(e, redactor))
        .collect();
    let diff = match g.outcome {
        Outcome::Failed | Outcome::RolledBack => match store.last_good(&g.project, g.id).await? {
            Some(good) => crate::diff::diff(&good, &g).ok(),
            None => None,
        },
        _ => None,
    };
    Ok(GenerationView {
        order: desired.as_ref().map(order).unwrap_or_default(),
        generation: g,
        evidence,
        diff,
    })
}

/// When each of the project's running containers last started, by service, as the
/// engine says (what it cannot say within [`ENGINE_WAIT`] is left out).
pub async fn started<R: Runtime>(rt: &R, report: &Report) -> BTreeMap<String, i64> {
    let asks = report
        .services
        .iter()
        .filter(|s| s.state == "running")
        .map(|s| async move {
            let d = rt.inspect_container(&s.container, "").await.ok()?;
            let at: jiff::Timestamp = d.started_at?.parse().ok()?;
            Some((s.service.clone(), at.as_millisecond()))
        });
    tokio::time::timeout(ENGINE_WAIT, futures::future::join_all(asks))
        .await
        .map(|all| all.into_iter().flatten().collect())
        .unwrap_or_default()
}

/// Everything the page at `/` shows for `report`'s project; `started` from [`started`].
pub async fn overview(
    store: &Store,
    report: Report,
    started: &BTreeMap<String, i64>,
) -> Result<Overview, StoreError> {
    let project = report.project.clone();
    let mut redactor = crate::redact::registered();
    let all = store.history(Some(&project)).await?;
    let held = report.holder.is_some();
    let mut history = Vec::new();
    for (i, g) in all.iter().rev().take(HISTORY).enumerate() {
        history.push(view(store, g.clone(), i == 0, held, &mut redactor).await?);
    }
    let latest = all.last();
    let running = match latest {
        Some(l) => store.running(l).await?,
        None => None,
    };
    let healthy_since_ms = match latest {
        Some(l) if matches!(l.outcome, Outcome::Healthy | Outcome::RolledBack) => l.finished_ms,
        _ => None,
    };
    let mut services = BTreeMap::new();
    if let Some(r) = &running
        && let Ok(desired) = r.desired()
    {
        redactor = redactor.union(&desired.redactor());
        let pins = r.pins();
        let events = store.events(r.id).await?;
        for (name, s) in &desired.services {
            services.insert(
                name.clone(),
                ServiceInfo {
                    image: s.image.clone(),
                    pinned: pins.get(&s.image).cloned(),
                    ports: s.ports.iter().map(|p| p.to_string()).collect(),
                    started_ms: started.get(name).copied(),
                    repairs: events
                        .iter()
                        .filter(|e| e.kind == "repair" && e.service.as_deref() == Some(name))
                        .count(),
                },
            );
        }
    }
    Ok(Overview {
        report,
        services,
        healthy_since_ms,
        history,
        now_ms: now_ms(),
        redactor,
    })
}

/// Generation `id` of `project` for `/generation/N`, with the secrets to hide on it;
/// None when the store has no such generation.
pub async fn generation(
    store: &Store,
    project: &str,
    id: i64,
    held: bool,
) -> Result<Option<(GenerationView, Redactor)>, StoreError> {
    let Some(g) = store.get(project, id).await? else {
        return Ok(None);
    };
    let newest = store.latest(project).await?.is_some_and(|l| l.id == id);
    let mut redactor = crate::redact::registered();
    let v = view(store, g, newest, held, &mut redactor).await?;
    Ok(Some((v, redactor)))
}

/// A service's recent log lines (the last [`LOG_LINES`] of its containers), each redacted
/// with `desired`'s secrets and escaped; None when the desired state has no such service.
pub async fn log_lines<R: Runtime>(
    rt: &R,
    desired: &DesiredState,
    service: &str,
    redactor: &Redactor,
) -> Option<Result<Vec<String>, String>> {
    let request = crate::logs::Request::new(
        desired,
        &[service.to_string()],
        LogOptions {
            follow: false,
            since: None,
            tail: Some(LOG_LINES),
        },
    )
    .ok()?;
    let mut lines = Vec::new();
    let never = crate::shutdown::Shutdown::never();
    let read = crate::logs::stream(rt, &request, redactor, &never, |shown| {
        lines.push(shown.text);
        ControlFlow::Continue(())
    });
    Some(match tokio::time::timeout(ENGINE_WAIT, read).await {
        Ok(Ok(())) => {
            let from = lines.len().saturating_sub(LOG_LINES);
            Ok(lines.split_off(from))
        }
        Ok(Err(e)) => Err(redactor.text(&e.to_string())),
        Err(_) => Err(format!(
            "the engine did not answer within {}",
            crate::spec::duration::format(ENGINE_WAIT)
        )),
    })
}
