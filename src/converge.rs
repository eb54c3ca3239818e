//! Converge: carry a plan out against the runtime (DESIGN.md semantics 2-4).
//!
//! Order of work: every image is made present before anything running is touched; then
//! owned containers nobody wants are removed; then each DAG level starts in parallel and
//! a level begins only once every service below it passed its gate. A recreate creates the
//! new container first (under a temporary name), so a bad spec fails before the old one
//! is stopped. Volumes are never removed.

use std::collections::BTreeMap;
use std::time::Instant;

use futures::future::join_all;
use serde_json::json;

use crate::gate::{GateOutcome, effective_probe, gate};
use crate::hash::config_hash;
use crate::images::{Images, ensure_images, pinned_images};
use crate::observe::{Observed, observe};
use crate::plan::{Action, Plan, plan};
use crate::report::Reporter;
use crate::runtime::{Runtime, RuntimeError};
use crate::spec::{
    DesiredState, LABEL_CONFIG_HASH, LABEL_GENERATION, LABEL_PROJECT, LABEL_SERVICE, Service,
    Volume,
};
use crate::store::{Generation, Store, StoreError, now_ms};

#[derive(Debug, thiserror::Error)]
pub enum ConvergeError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "container name {name:?} (service {service:?}) is taken by container {id} which berth does not own{}; rename or remove it yourself",
        project.as_ref().map(|p| format!(" (it belongs to project {p:?})")).unwrap_or_default()
    )]
    NameClash {
        name: String,
        service: String,
        id: String,
        project: Option<String>,
    },
    #[error("generation {generation} in the state store cannot be read: {message}")]
    Corrupt { generation: i64, message: String },
}

/// How one `apply` ended; each maps to one exit code (see `cli`).
#[derive(Debug, Clone, PartialEq)]
pub enum ApplyOutcome {
    /// Nothing differed; no generation was recorded.
    NoChanges,
    /// Every gate passed.
    Converged { generation: i64 },
    /// A gate failed and auto-revert is off: the stack is left as it is.
    GateFailed { generation: i64, reason: String },
    /// A gate failed and the whole stack is back on generation `to`, healthy.
    RolledBack {
        generation: i64,
        to: i64,
        reason: String,
    },
    /// A gate failed and there was no last good generation, or the revert failed too.
    Degraded { generation: i64, reason: String },
    /// This desired state already failed and was rolled back; not applied again.
    Poisoned { generation: i64, reason: String },
}

pub use crate::images::Pins;

/// One reconcile: observe, plan, execute, record; on a failed gate, revert the whole stack
/// to the last good generation (DESIGN.md semantic 6). This is what `berth apply` runs
/// and what the daemon will run on every trigger.
pub async fn apply<R: Runtime>(
    rt: &R,
    store: &Store,
    desired: &DesiredState,
    report: &Reporter,
    force: bool,
) -> Result<ApplyOutcome, ConvergeError> {
    let project = &desired.project.name;
    if let Some(latest) = store.latest(project).await?
        && latest.outcome == "rolled-back"
        && latest.source_hash == desired.source_hash
        && !force
    {
        return Ok(ApplyOutcome::Poisoned {
            generation: latest.id,
            reason: latest.reason.unwrap_or_default(),
        });
    }
    let source = desired
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let Some((generation, result)) = converge(rt, store, desired, &source, report).await? else {
        return Ok(ApplyOutcome::NoChanges);
    };
    let reason = match result {
        Ok(()) => return Ok(ApplyOutcome::Converged { generation }),
        Err(reason) => reason,
    };
    if !desired.rollout.auto_revert {
        return Ok(ApplyOutcome::GateFailed { generation, reason });
    }
    let Some(good) = store.last_good(project, generation).await? else {
        return Ok(ApplyOutcome::Degraded {
            generation,
            reason: format!("{reason}; no last good generation to revert to"),
        });
    };
    report.line(&format!(
        "reverting project {project:?} to generation {}: {reason}",
        good.id
    ));
    match revert_to(rt, desired_of(&good)?, &good, report).await? {
        Ok(()) => {
            let why = format!("{reason}; reverted to generation {}", good.id);
            store.mark_rolled_back(generation, good.id, &why).await?;
            Ok(ApplyOutcome::RolledBack {
                generation,
                to: good.id,
                reason,
            })
        }
        Err(revert_reason) => {
            let why = format!(
                "{reason}; the revert to generation {} failed too: {revert_reason}",
                good.id
            );
            store
                .finish(generation, "failed", Some(&why), &json!({}))
                .await
                .ok();
            Ok(ApplyOutcome::Degraded {
                generation,
                reason: why,
            })
        }
    }
}

/// The desired state a stored generation ran.
pub fn desired_of(g: &Generation) -> Result<DesiredState, ConvergeError> {
    serde_json::from_str(&g.spec_json).map_err(|e| ConvergeError::Corrupt {
        generation: g.id,
        message: e.to_string(),
    })
}

/// The image pins a stored generation ran.
pub fn pins_of(g: &Generation) -> Pins {
    serde_json::from_value(g.images.clone()).unwrap_or_default()
}

/// Put the stack back on a stored generation: its spec, its pinned image IDs, gated like
/// any converge, containers labelled with that generation. Records nothing itself.
async fn revert_to<R: Runtime>(
    rt: &R,
    desired: DesiredState,
    good: &Generation,
    report: &Reporter,
) -> Result<Result<(), String>, ConvergeError> {
    let pins = pins_of(good);
    let observed = observed_with_pins(rt, &desired, &pins).await?;
    let the_plan = plan(&desired, &observed);
    if the_plan.is_noop() {
        return Ok(Ok(()));
    }
    let images = match pinned_images(rt, &pins).await {
        Ok(i) => i,
        Err(e) => return Ok(Err(e.to_string())),
    };
    Ok(execute(rt, &desired, &the_plan, &images, good.id, report)
        .await
        .0)
}

/// `berth rollback`: go back by hand to a stored generation, gated, recorded as a new
/// generation. Returns the new generation's number and outcome.
pub async fn rollback<R: Runtime>(
    rt: &R,
    store: &Store,
    target: &Generation,
    report: &Reporter,
) -> Result<(i64, Result<(), String>), ConvergeError> {
    let desired = desired_of(target)?;
    let generation = store
        .begin(
            &target.project,
            &target.source_hash,
            &format!("rollback to generation {}", target.id),
            &target.spec_json,
            &target.images,
        )
        .await?;
    let pins = pins_of(target);
    let observed = observed_with_pins(rt, &desired, &pins).await?;
    let the_plan = plan(&desired, &observed);
    let (result, timings) = match pinned_images(rt, &pins).await {
        Err(e) => (Err(e.to_string()), json!({})),
        Ok(images) => execute(rt, &desired, &the_plan, &images, generation, report).await,
    };
    record(store, generation, &result, &timings).await?;
    Ok((generation, result))
}

/// Observe, with the desired images' IDs taken from pins rather than from what the
/// tags point at now: a tag that has moved since must not matter.
pub async fn observed_with_pins<R: Runtime>(
    rt: &R,
    desired: &DesiredState,
    pins: &Pins,
) -> Result<Observed, RuntimeError> {
    let mut observed = Observed {
        containers: rt.list_project(&desired.project.name).await?,
        images: BTreeMap::new(),
    };
    for (reference, id) in pins {
        observed.images.insert(
            reference.clone(),
            Some(crate::images::pinned_image_info(desired, reference, id)),
        );
    }
    Ok(observed)
}

/// Converge towards `desired` as a new generation. None when there was nothing to do.
async fn converge<R: Runtime>(
    rt: &R,
    store: &Store,
    desired: &DesiredState,
    source: &str,
    report: &Reporter,
) -> Result<Option<(i64, Result<(), String>)>, ConvergeError> {
    crate::images::refresh(rt, desired, report).await?;
    let observed = observe(rt, desired).await?;
    let the_plan = plan(desired, &observed);
    if the_plan.is_noop() {
        return Ok(None);
    }
    check_names(rt, desired, &the_plan).await?;
    let images = ensure_images(rt, desired, &the_plan, &observed, report).await?;
    let spec_json = serde_json::to_string(desired).expect("desired state serializes");
    let images_json = json!(
        images
            .iter()
            .map(|(k, v)| (k.clone(), json!(v.0)))
            .collect::<BTreeMap<_, _>>()
    );
    let generation = store
        .begin(
            &desired.project.name,
            &desired.source_hash,
            source,
            &spec_json,
            &images_json,
        )
        .await?;
    let (result, timings) = execute(rt, desired, &the_plan, &images, generation, report).await;
    record(store, generation, &result, &timings).await?;
    Ok(Some((generation, result)))
}

/// A name clash with a container berth does not own is an error before anything changes.
async fn check_names<R: Runtime>(
    rt: &R,
    desired: &DesiredState,
    plan: &Plan,
) -> Result<(), ConvergeError> {
    let wanted: Vec<String> = plan
        .steps
        .iter()
        .filter(|s| s.action == Action::Create)
        .map(|s| desired.services[&s.service].container_name.clone())
        .collect();
    let held = rt.name_holders(&wanted).await?;
    for step in plan.steps.iter().filter(|s| s.action == Action::Create) {
        let s = &desired.services[&step.service];
        if let Some(holder) = held.get(&s.container_name)
            && holder.project.as_deref() != Some(desired.project.name.as_str())
        {
            return Err(ConvergeError::NameClash {
                name: s.container_name.clone(),
                service: s.name.clone(),
                id: holder.id[..holder.id.len().min(12)].to_string(),
                project: holder.project.clone(),
            });
        }
    }
    Ok(())
}

/// Carry out a plan within the desired state's `progress_deadline`. Returns the outcome
/// (a reason on failure) and per-service timings.
async fn execute<R: Runtime>(
    rt: &R,
    desired: &DesiredState,
    plan: &Plan,
    images: &Images,
    generation: i64,
    report: &Reporter,
) -> (Result<(), String>, serde_json::Value) {
    let deadline = desired.rollout.progress_deadline;
    let steps = execute_steps(rt, desired, plan, images, generation, report);
    match tokio::time::timeout(deadline, steps).await {
        Ok(r) => r,
        Err(_) => (
            Err(format!(
                "the converge did not finish within progress_deadline {}",
                crate::spec::duration::format(deadline)
            )),
            json!({}),
        ),
    }
}

/// Record how a generation's converge ended.
async fn record(
    store: &Store,
    generation: i64,
    result: &Result<(), String>,
    timings: &serde_json::Value,
) -> Result<(), StoreError> {
    match result {
        Ok(()) => store.finish(generation, "healthy", None, timings).await,
        Err(reason) => {
            store
                .finish(generation, "failed", Some(reason), timings)
                .await
        }
    }
}

async fn execute_steps<R: Runtime>(
    rt: &R,
    desired: &DesiredState,
    plan: &Plan,
    images: &Images,
    generation: i64,
    report: &Reporter,
) -> (Result<(), String>, serde_json::Value) {
    let mut timings = serde_json::Map::new();
    let removals = plan.steps.iter().filter(|s| s.action == Action::Remove);
    for r in join_all(removals.map(|step| async move {
        let c = step
            .container
            .as_ref()
            .expect("remove step has a container");
        rt.stop_container(&c.id).await?;
        rt.remove_container(&c.id).await?;
        report.service(
            &step.service,
            &format!("removed {} ({}; volumes kept)", c.name, step.reason),
        );
        Ok::<_, RuntimeError>(())
    }))
    .await
    {
        if let Err(e) = r {
            return (Err(e.to_string()), json!(timings));
        }
    }

    let mut networks: Vec<&str> = desired
        .services
        .values()
        .flat_map(|s| s.networks.iter().map(String::as_str))
        .collect();
    networks.sort();
    networks.dedup();
    for n in networks {
        if let Err(e) = rt.ensure_network(n, &desired.project.name).await {
            return (Err(e.to_string()), json!(timings));
        }
    }

    for level in desired.levels() {
        let results = join_all(level.iter().map(|name| {
            let s = &desired.services[name];
            converge_service(rt, desired, plan, s, images, generation, report)
        }))
        .await;
        let mut failure = None;
        for (name, r) in level.iter().zip(results) {
            match r {
                Ok(t) => {
                    timings.insert(name.clone(), t);
                }
                Err((reason, t)) => {
                    timings.insert(name.clone(), t);
                    failure.get_or_insert(reason);
                }
            }
        }
        if let Some(reason) = failure {
            // Dependents of a failed service are never started.
            return (Err(reason), json!(timings));
        }
    }
    (Ok(()), json!(timings))
}

type Timing = serde_json::Value;

async fn converge_service<R: Runtime>(
    rt: &R,
    desired: &DesiredState,
    plan: &Plan,
    s: &Service,
    images: &Images,
    generation: i64,
    report: &Reporter,
) -> Result<Timing, (String, Timing)> {
    let step = plan
        .step(&s.name)
        .expect("every desired service has a step");
    let t0 = now_ms();
    let fail = |e: String| {
        (
            e,
            json!({"action": format!("{:?}", step.action).to_lowercase(), "failed_ms": now_ms()}),
        )
    };
    let (image_id, has_healthcheck) = images.get(&s.image).cloned().unwrap_or_default();
    let id = match step.action {
        Action::Noop => {
            return Ok(json!({"action": "noop"}));
        }
        Action::Start => {
            let id = step
                .container
                .as_ref()
                .expect("start step has a container")
                .id
                .clone();
            rt.start_container(&id)
                .await
                .map_err(|e| fail(e.to_string()))?;
            report.service(&s.name, "started");
            id
        }
        Action::Create | Action::Recreate => {
            for v in &s.volumes {
                if let Volume::Named { name, .. } = v {
                    rt.ensure_volume(name, &desired.project.name)
                        .await
                        .map_err(|e| fail(e.to_string()))?;
                }
            }
            let mut labels = s.labels.clone();
            labels.insert(LABEL_PROJECT.into(), desired.project.name.clone());
            labels.insert(LABEL_SERVICE.into(), s.name.clone());
            labels.insert(LABEL_CONFIG_HASH.into(), config_hash(s));
            labels.insert(LABEL_GENERATION.into(), generation.to_string());
            // The image runs by ID: the generation pins exactly what was checked.
            let image = if image_id.is_empty() {
                s.image.clone()
            } else {
                image_id.clone()
            };
            let id = if let (Action::Recreate, Some(old)) = (&step.action, &step.container) {
                let temp = format!("{}-berth-{}", s.container_name, &config_hash(s)[..8]);
                let id = rt
                    .create_container(&temp, s, &image, &labels)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                rt.stop_container(&old.id)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                rt.remove_container(&old.id)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                rt.rename_container(&id, &s.container_name)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                report.service(&s.name, &format!("recreated ({})", step.reason));
                id
            } else {
                let id = rt
                    .create_container(&s.container_name, s, &image, &labels)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                report.service(&s.name, "created");
                id
            };
            rt.start_container(&id)
                .await
                .map_err(|e| fail(e.to_string()))?;
            report.service(&s.name, "started");
            id
        }
        Action::Remove => unreachable!("removals are not per-service steps"),
    };
    let started_ms = now_ms();
    let probe = effective_probe(s, has_healthcheck);
    let (deadline, min_healthy) = desired.gate_timing(s);
    let started = Instant::now();
    match gate(rt, &id, s, probe.as_ref(), deadline, min_healthy).await {
        GateOutcome::Passed { after, probe } => {
            report.service(
                &s.name,
                &format!("healthy in {:.1} s ({probe})", after.as_secs_f64()),
            );
            Ok(json!({
                "action": format!("{:?}", step.action).to_lowercase(),
                "begin_ms": t0,
                "started_ms": started_ms,
                "healthy_ms": started_ms + after.as_millis() as i64,
                "gate_passed_ms": now_ms(),
                "gate_s": started.elapsed().as_secs_f64(),
            }))
        }
        GateOutcome::Failed { reason } => {
            report.service(&s.name, "FAILED its gate");
            Err((
                reason,
                json!({
                    "action": format!("{:?}", step.action).to_lowercase(),
                    "begin_ms": t0,
                    "started_ms": started_ms,
                    "failed_ms": now_ms(),
                }),
            ))
        }
    }
}
