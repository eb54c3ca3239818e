//! The reconcile: controller policy over the executor in [`crate::converge`].
//!
//! [`reconcile`] is what `berth apply` runs and what the daemon will run on every trigger.
//! It is level-triggered (DESIGN.md semantic 1): it is not told why it runs, it reads the
//! store and the engine afresh, and it decides, in this order:
//!
//! 1. **An unfinished generation** (its converge was killed or stopped; the caller holds
//!    the project's lock, so its process is gone): when the desired state still resolves
//!    to it, it is *resumed* — every service gated again, however converged it looks — and
//!    ends healthy or reverts as usual. A different desired state *supersedes* it: the new
//!    generation gates every service.
//! 2. **Poison** (semantic 6): a desired state whose resolved hash last ended rolled back
//!    is not applied again unless forced.
//! 3. **Removing everything** (semantic 9): a desired state that would remove every running
//!    service of the project is refused unless `allow_empty`.
//! 4. **Drift** of the running generation under the same desired state is *repaired*: an
//!    event of that generation, not a new one (generations are changes of desired state).
//! 5. Otherwise a **new generation**; when a gate fails, the whole stack goes back to the
//!    last good generation and the failed one is poisoned.
//!
//! Every outcome is an [`ApplyOutcome`], which maps to one exit code.

use serde_json::json;

use crate::converge::{
    ConvergeError, Executed, Execution, Failure, check_names, converge_to_pinned, desired_of,
    execute, observed_with_pins, pins_of,
};
use crate::hash::resolved_hash;
use crate::images::ensure_images;
use crate::lock::ProjectLock;
use crate::observe::observe;
use crate::plan::{Action, plan};
use crate::report::Reporter;
use crate::runtime::Runtime;
use crate::shutdown::{Shutdown, signal_name};
use crate::spec::DesiredState;
use crate::status::exit;
use crate::store::{Generation, NewGeneration, Outcome, Store};

/// What a person asked of this reconcile beyond the desired state.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Apply even a poisoned desired state.
    pub force: bool,
    /// Apply a desired state that removes every running service.
    pub allow_empty: bool,
}

/// How one reconcile ended; each maps to one exit code ([`ApplyOutcome::exit_code`]).
#[derive(Debug, Clone, PartialEq)]
pub enum ApplyOutcome {
    /// Nothing differed; no generation was recorded.
    NoChanges,
    /// Every gate passed. `resumed`: the generation was an interrupted one, finished now.
    Converged { generation: i64, resumed: bool },
    /// Drift of the running generation was put back, gated; no new generation.
    Repaired {
        generation: i64,
        services: Vec<String>,
    },
    /// A gate failed and auto-revert is off: the stack is left as it is.
    GateFailed { generation: i64, reason: String },
    /// A gate failed and the whole stack is back on generation `to`, healthy.
    RolledBack {
        generation: i64,
        to: i64,
        reason: String,
    },
    /// A gate failed and there was no last good generation, or the revert failed too, or
    /// drift of the running generation could not be repaired.
    Degraded { generation: i64, reason: String },
    /// This desired state already failed and was rolled back; not applied again.
    Poisoned { generation: i64, reason: String },
    /// The desired state would remove every running service; refused.
    WouldRemoveAll { services: Vec<String> },
    /// A stop was requested; the generation (if one had begun) is `interrupted` and the
    /// next converge resumes it.
    Interrupted {
        generation: Option<i64>,
        signal: i32,
    },
}

impl ApplyOutcome {
    pub fn exit_code(&self) -> i32 {
        match self {
            ApplyOutcome::NoChanges
            | ApplyOutcome::Converged { .. }
            | ApplyOutcome::Repaired { .. } => exit::OK,
            ApplyOutcome::GateFailed { .. } => exit::RUNTIME,
            ApplyOutcome::RolledBack { .. } => exit::ROLLED_BACK,
            ApplyOutcome::Degraded { .. } => exit::DEGRADED,
            ApplyOutcome::Poisoned { .. } => exit::POISONED,
            ApplyOutcome::WouldRemoveAll { .. } => exit::INVALID,
            ApplyOutcome::Interrupted { signal, .. } => 128 + signal,
        }
    }
}

/// The generation whose spec runs now: the newest healthy one, or for a rolled-back
/// newest one, the generation it went back to. None after `down` or before any success.
pub async fn running_generation(
    store: &Store,
    latest: &Generation,
) -> Result<Option<Generation>, ConvergeError> {
    Ok(match (latest.outcome, latest.reverted_to) {
        (Outcome::Healthy, _) => Some(latest.clone()),
        (Outcome::RolledBack, Some(to)) => store.get(&latest.project, to).await?,
        _ => None,
    })
}

/// Whether this resolved desired state is poisoned: the newest generation that resolved
/// to it was rolled back. A manual rollback does not lift it; a later success does.
pub async fn poisoned_by(
    store: &Store,
    project: &str,
    resolved_hash: &str,
) -> Result<Option<Generation>, ConvergeError> {
    Ok(store
        .newest_with_hash(project, resolved_hash)
        .await?
        .filter(|g| g.outcome == Outcome::RolledBack))
}

fn poisoned_outcome(g: Generation) -> ApplyOutcome {
    ApplyOutcome::Poisoned {
        generation: g.id,
        reason: g.reason.unwrap_or_default(),
    }
}

/// One reconcile of `desired`. The caller holds the project's lock.
pub async fn reconcile<R: Runtime>(
    rt: &R,
    store: &Store,
    desired: &DesiredState,
    lock: &mut ProjectLock,
    opts: Options,
    report: &Reporter,
    shutdown: &Shutdown,
) -> Result<ApplyOutcome, ConvergeError> {
    let project = &desired.project.name;
    let hash = resolved_hash(desired);
    let latest = store.latest(project).await?;
    let poisoned = match opts.force {
        true => None,
        false => poisoned_by(store, project, &hash).await?,
    };

    // 1. A converge that did not end. Its desired state is resumed; a poisoned new one
    //    cannot replace it, so it is resumed then too.
    let mut superseding = None;
    if let Some(g) = latest.clone().filter(|g| g.outcome.unfinished()) {
        if g.resolved_hash == hash || poisoned.is_some() {
            let outcome = resume(rt, store, &g, lock, report, shutdown).await?;
            return Ok(match poisoned {
                Some(p) if g.resolved_hash != hash && outcome.exit_code() == exit::OK => {
                    poisoned_outcome(p)
                }
                _ => outcome,
            });
        }
        superseding = Some(g);
    }

    // 2. Poison.
    if let Some(p) = poisoned {
        return Ok(poisoned_outcome(p));
    }

    // Pulls that the images' pull_policy asks for (always, or a period) come first, so a
    // moved tag shows in the plan.
    crate::images::refresh(rt, desired, report).await?;
    let observed = observe(rt, desired).await?;
    let the_plan = plan(desired, &observed);

    // 3. A desired state that removes every running service.
    if !opts.allow_empty {
        let mut running: Vec<String> = observed
            .containers
            .iter()
            .filter(|c| c.running())
            .filter_map(|c| c.service.clone())
            .collect();
        running.sort();
        running.dedup();
        if !running.is_empty() && !running.iter().any(|s| desired.services.contains_key(s)) {
            return Ok(ApplyOutcome::WouldRemoveAll { services: running });
        }
    }

    if the_plan.is_noop() && superseding.is_none() {
        return Ok(ApplyOutcome::NoChanges);
    }

    // 4. Drift of the running generation: put it back, as that generation.
    if superseding.is_none()
        && let Some(latest) = &latest
        && let Some(running) = running_generation(store, latest).await?
        && running.resolved_hash == hash
    {
        let pinned = plan(
            desired,
            &observed_with_pins(rt, desired, &pins_of(&running)).await?,
        );
        if !pinned.is_noop() {
            return repair(rt, store, &running, &pinned, report, shutdown).await;
        }
    }

    // 5. A new generation.
    check_names(rt, desired, &the_plan).await?;
    let images = ensure_images(rt, desired, &the_plan, &observed, report).await?;
    let spec_json = serde_json::to_string(desired).expect("desired state serializes");
    let images_json = json!(
        images
            .iter()
            .map(|(k, v)| (k.clone(), json!(v.0)))
            .collect::<std::collections::BTreeMap<_, _>>()
    );
    let source = desired
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let generation = store
        .begin(NewGeneration {
            project,
            source_hash: &desired.source_hash,
            resolved_hash: &hash,
            source: &source,
            spec_json: &spec_json,
            images: &images_json,
        })
        .await?;
    lock.set_generation(generation)?;
    if let Some(old) = &superseding {
        store
            .set_outcome(
                old.id,
                Outcome::Superseded,
                Some(&format!(
                    "interrupted before it ended; superseded by generation {generation}, which gated every service again"
                )),
            )
            .await?;
    }
    let executed = execute(
        rt,
        desired,
        &the_plan,
        Execution {
            images: &images,
            generation,
            gate_all: superseding.is_some(),
            report,
            shutdown,
        },
    )
    .await;
    conclude(
        rt, store, desired, generation, executed, false, report, shutdown,
    )
    .await
}

/// Finish an interrupted generation: gate every one of its services again, from its own
/// stored spec and pins, and end it healthy or reverted.
async fn resume<R: Runtime>(
    rt: &R,
    store: &Store,
    g: &Generation,
    lock: &mut ProjectLock,
    report: &Reporter,
    shutdown: &Shutdown,
) -> Result<ApplyOutcome, ConvergeError> {
    lock.set_generation(g.id)?;
    let how = match g.outcome {
        Outcome::Interrupted => "it was stopped",
        _ => "its berth process died",
    };
    report.line(&format!(
        "resuming generation {} ({how} before it ended): gating every service again",
        g.id
    ));
    store
        .add_event(g.id, "resumed", None, &format!("resumed after {how}"))
        .await?;
    let executed = converge_to_pinned(rt, g, g.id, true, report, shutdown).await?;
    conclude(
        rt,
        store,
        &desired_of(g)?,
        g.id,
        executed,
        true,
        report,
        shutdown,
    )
    .await
}

/// Record how a generation's converge ended, and revert the stack when a gate failed.
#[allow(clippy::too_many_arguments)]
async fn conclude<R: Runtime>(
    rt: &R,
    store: &Store,
    desired: &DesiredState,
    generation: i64,
    executed: Executed,
    resumed: bool,
    report: &Reporter,
    shutdown: &Shutdown,
) -> Result<ApplyOutcome, ConvergeError> {
    let Executed { result, timings } = executed;
    let reason = match result {
        Ok(()) => {
            store
                .finish(generation, Outcome::Healthy, None, &timings)
                .await?;
            return Ok(ApplyOutcome::Converged {
                generation,
                resumed,
            });
        }
        Err(Failure::Interrupted(signal)) => {
            let why = format!(
                "stopped by {} before it ended; the next converge resumes it",
                signal_name(signal)
            );
            store
                .finish(generation, Outcome::Interrupted, Some(&why), &timings)
                .await?;
            return Ok(ApplyOutcome::Interrupted {
                generation: Some(generation),
                signal,
            });
        }
        Err(Failure::Gate(reason)) => reason,
    };
    store
        .finish(generation, Outcome::Failed, Some(&reason), &timings)
        .await?;
    if !desired.rollout.auto_revert {
        return Ok(ApplyOutcome::GateFailed { generation, reason });
    }
    let project = &desired.project.name;
    let Some(good) = store.last_good(project, generation).await? else {
        let why = format!("{reason}; no last good generation to revert to");
        store
            .set_outcome(generation, Outcome::Failed, Some(&why))
            .await?;
        return Ok(ApplyOutcome::Degraded {
            generation,
            reason: why,
        });
    };
    report.line(&format!(
        "reverting project {project:?} to generation {}: {reason}",
        good.id
    ));
    let reverted = converge_to_pinned(rt, &good, good.id, false, report, shutdown).await?;
    match reverted.result {
        Ok(()) => {
            let why = format!("{reason}; reverted to generation {}", good.id);
            store.mark_rolled_back(generation, good.id, &why).await?;
            Ok(ApplyOutcome::RolledBack {
                generation,
                to: good.id,
                reason,
            })
        }
        Err(Failure::Interrupted(signal)) => {
            // The failed generation is resumed next time: gated again, it fails again and
            // the revert runs to its end.
            let why = format!(
                "{reason}; stopped by {} while reverting to generation {}; the next converge finishes it",
                signal_name(signal),
                good.id
            );
            store
                .set_outcome(generation, Outcome::Interrupted, Some(&why))
                .await?;
            Ok(ApplyOutcome::Interrupted {
                generation: Some(generation),
                signal,
            })
        }
        Err(Failure::Gate(revert_reason)) => {
            let why = format!(
                "{reason}; the revert to generation {} failed too: {revert_reason}",
                good.id
            );
            store
                .set_outcome(generation, Outcome::Failed, Some(&why))
                .await?;
            Ok(ApplyOutcome::Degraded {
                generation,
                reason: why,
            })
        }
    }
}

/// Put drift of the running generation back, from its own spec and pins.
async fn repair<R: Runtime>(
    rt: &R,
    store: &Store,
    running: &Generation,
    drift: &crate::plan::Plan,
    report: &Reporter,
    shutdown: &Shutdown,
) -> Result<ApplyOutcome, ConvergeError> {
    let drifted: Vec<&crate::plan::Step> = drift
        .steps
        .iter()
        .filter(|s| s.action != Action::Noop)
        .collect();
    let services: Vec<String> = drifted.iter().map(|s| s.service.clone()).collect();
    report.line(&format!(
        "repairing drift of generation {}: {}",
        running.id,
        drifted
            .iter()
            .map(|s| format!("{} ({})", s.service, s.reason))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let executed = converge_to_pinned(rt, running, running.id, false, report, shutdown).await?;
    match executed.result {
        Ok(()) => {
            for s in &drifted {
                store
                    .add_event(running.id, "repair", Some(&s.service), &s.reason)
                    .await?;
            }
            Ok(ApplyOutcome::Repaired {
                generation: running.id,
                services,
            })
        }
        Err(Failure::Interrupted(signal)) => Ok(ApplyOutcome::Interrupted {
            generation: None,
            signal,
        }),
        Err(Failure::Gate(reason)) => {
            store
                .add_event(running.id, "repair-failed", None, &reason)
                .await?;
            Ok(ApplyOutcome::Degraded {
                generation: running.id,
                reason: format!(
                    "drift of generation {} could not be repaired: {reason}",
                    running.id
                ),
            })
        }
    }
}

/// `berth rollback`: go back by hand to a stored generation, gated, recorded as a new
/// generation. It does not lift poison: the desired state that failed stays refused.
pub async fn rollback<R: Runtime>(
    rt: &R,
    store: &Store,
    target: &Generation,
    lock: &mut ProjectLock,
    report: &Reporter,
    shutdown: &Shutdown,
) -> Result<(i64, Result<(), Failure>), ConvergeError> {
    let generation = begin_like(
        store,
        target,
        &format!("rollback to generation {}", target.id),
        lock,
    )
    .await?;
    let executed = converge_to_pinned(rt, target, generation, false, report, shutdown).await?;
    let outcome = match &executed.result {
        Ok(()) => Outcome::Healthy,
        Err(Failure::Interrupted(_)) => Outcome::Interrupted,
        Err(Failure::Gate(_)) => Outcome::Failed,
    };
    let reason = executed.result.as_ref().err().map(|f| f.to_string());
    store
        .finish(generation, outcome, reason.as_deref(), &executed.timings)
        .await?;
    Ok((generation, executed.result))
}

/// Begin a generation that runs a stored generation's spec and pins, superseding an
/// unfinished newest generation.
async fn begin_like(
    store: &Store,
    target: &Generation,
    source: &str,
    lock: &mut ProjectLock,
) -> Result<i64, ConvergeError> {
    let latest = store.latest(&target.project).await?;
    let generation = store
        .begin(NewGeneration {
            project: &target.project,
            source_hash: &target.source_hash,
            resolved_hash: &target.resolved_hash,
            source,
            spec_json: &target.spec_json,
            images: &target.images,
        })
        .await?;
    lock.set_generation(generation)?;
    if let Some(old) = latest.filter(|g| g.outcome.unfinished()) {
        store
            .set_outcome(
                old.id,
                Outcome::Superseded,
                Some(&format!(
                    "interrupted before it ended; superseded by generation {generation} ({source})"
                )),
            )
            .await?;
    }
    Ok(generation)
}

/// `berth down`: remove the project's containers and networks on purpose (volumes and
/// data stay), recorded as a generation with outcome `down`. Returns it and what was
/// removed.
pub async fn down<R: Runtime>(
    rt: &R,
    store: &Store,
    latest: &Generation,
    lock: &mut ProjectLock,
    report: &Reporter,
    shutdown: &Shutdown,
) -> Result<(i64, Result<(), Failure>), ConvergeError> {
    let mut desired = desired_of(latest)?;
    desired.services.clear();
    let mut empty = latest.clone();
    empty.spec_json = serde_json::to_string(&desired).expect("desired state serializes");
    empty.resolved_hash = resolved_hash(&desired);
    empty.images = json!({});
    let generation = begin_like(store, &empty, "berth down", lock).await?;
    let observed = observe(rt, &desired).await?;
    let the_plan = plan(&desired, &observed);
    let executed = execute(
        rt,
        &desired,
        &the_plan,
        Execution {
            images: &Default::default(),
            generation,
            gate_all: false,
            report,
            shutdown,
        },
    )
    .await;
    let (outcome, reason) = match &executed.result {
        Ok(()) => (Outcome::Down, None),
        Err(Failure::Interrupted(_)) => (Outcome::Interrupted, executed.result.as_ref().err()),
        Err(Failure::Gate(_)) => (Outcome::Failed, executed.result.as_ref().err()),
    };
    let reason = reason.map(|f| f.to_string());
    store
        .finish(generation, outcome, reason.as_deref(), &executed.timings)
        .await?;
    Ok((generation, executed.result))
}
