//! The reconcile: controller policy over the executor in [`crate::converge`].
//!
//! [`reconcile`] is what `berth apply` runs and what the daemon runs on every trigger ([`crate::daemon::turn`]).
//! It is level-triggered (docs/design.md §1): it is not told why it runs, it reads the
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
//!
//! The same policy runs over either executor: the one-host [`crate::converge`], or
//! [`crate::swarm`]'s when the desired state (or the stored generation being finished,
//! reverted to or repaired) says `engine = "swarm"`; only the observe, execute and
//! name-check calls differ ([`swarm_of`]).

use serde_json::json;

use crate::converge::{
    ConvergeError, Executed, Execution, Failure, Pinned, SchemaStep, check_names,
    converge_to_pinned, execute, execute_pinned, observed_with_pins, with_pins,
};
use crate::exit;
use crate::hash::resolved_hash;
use crate::images::ensure_images;
use crate::lock::ProjectLock;
use crate::migrate::revert::SchemaUndo;
use crate::observe::observe;
use crate::plan::{Action, plan};
use crate::report::Reporter;
use crate::runtime::Runtime;
use crate::shutdown::{Shutdown, signal_name};
use crate::spec::DesiredState;
use crate::store::{Generation, Kind, NewGeneration, Outcome, Store, Timings};

/// What a person (or the daemon) asked of this reconcile beyond the desired state.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Apply even a poisoned desired state.
    pub force: bool,
    /// Apply a desired state that removes every running service.
    pub allow_empty: bool,
    /// Services whose drift is not repaired now: the daemon holds the repairs of a
    /// service that keeps dying (see [`crate::daemon::controller::crashloop`]).
    pub hold: std::collections::BTreeSet<String>,
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
    /// `berth down` took the project down on purpose.
    Down { generation: i64 },
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
            | ApplyOutcome::Repaired { .. }
            | ApplyOutcome::Down { .. } => exit::OK,
            ApplyOutcome::GateFailed { .. } => exit::RUNTIME,
            ApplyOutcome::RolledBack { .. } => exit::ROLLED_BACK,
            ApplyOutcome::Degraded { .. } => exit::DEGRADED,
            ApplyOutcome::Poisoned { .. } => exit::POISONED,
            ApplyOutcome::WouldRemoveAll { .. } => exit::INVALID,
            ApplyOutcome::Interrupted { signal, .. } => 128 + signal,
        }
    }
}

fn poisoned_outcome(g: Generation) -> ApplyOutcome {
    ApplyOutcome::Poisoned {
        generation: g.id,
        reason: g.reason.unwrap_or_default(),
    }
}

/// Whether the newest generation must be finished before anything else: its converge
/// did not end, or it is an apply of this very desired state that failed without a
/// revert (retrying it gates it again, rather than calling a failed stack "No changes.").
fn needs_finishing(g: &Generation, hash: &str) -> bool {
    g.outcome.unfinished()
        || (g.outcome == Outcome::Failed && g.kind == Kind::Apply && g.resolved_hash == hash)
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
    // Under Swarm, the premise first: an engine that is not a manager changes nothing.
    let swarm = swarm_of(desired).await?;
    let hash = resolved_hash(desired);
    let poisoned = match opts.force {
        true => None,
        false => store.poisoned_by(project, &hash).await?,
    };

    // 1. The newest generation did not end (or failed and is asked for again).
    let superseding =
        match finish_newest(rt, store, project, &hash, &poisoned, lock, report, shutdown).await? {
            Newest::Done(outcome) => return Ok(outcome),
            Newest::Supersede(g) => g,
        };

    // 2. Poison. Drift of what runs is still repaired: a bad push must not stop a dead
    //    container of the last good generation from coming back.
    if let Some(p) = poisoned {
        if let Some(repaired) =
            repair_running(rt, store, report, shutdown, project, None, None, &opts.hold).await?
            && repaired.exit_code() != exit::OK
        {
            return Ok(repaired);
        }
        return Ok(poisoned_outcome(p));
    }

    if let Some(signal) = shutdown.signal() {
        return Ok(ApplyOutcome::Interrupted {
            generation: None,
            signal,
        });
    }
    // Pulls that the images' pull_policy asks for (always, or a period) come first, so a
    // moved tag shows in the plan.
    crate::images::refresh(rt, desired, report).await?;
    let observed = match &swarm {
        Some(sw) => crate::swarm::observe(rt, sw, desired).await?,
        None => observe(rt, desired).await?,
    };
    let the_plan = plan(desired, &observed);

    // 3. A desired state that removes every running service.
    if !opts.allow_empty
        && let Some(services) = removes_every_running(desired, &observed)
    {
        return Ok(ApplyOutcome::WouldRemoveAll { services });
    }

    // Nothing to create, recreate, start or remove. A desired state that changed only
    // what berth does around the containers (a probe, depends_on, the rollout) is still a
    // new generation: recorded, and every service gated under it.
    let mut gate_all = superseding.is_some();
    if the_plan.is_noop() && !gate_all {
        let latest = store.latest(project).await?;
        let running = match &latest {
            Some(l) => store.running(l).await?,
            None => None,
        };
        match running {
            Some(r) if r.resolved_hash != hash => gate_all = true,
            _ => return Ok(ApplyOutcome::NoChanges),
        }
    }

    // 4. Drift of the running generation: put it back, as that generation.
    if !gate_all
        && let Some(repaired) = repair_running(
            rt,
            store,
            report,
            shutdown,
            project,
            Some(&hash),
            Some(&observed.containers),
            &opts.hold,
        )
        .await?
    {
        return Ok(repaired);
    }

    // 5. A new generation.
    match &swarm {
        Some(sw) => crate::swarm::check_names(sw, desired, &the_plan).await?,
        None => check_names(rt, desired, &the_plan).await?,
    }
    let images = ensure_images(rt, desired, &the_plan, &observed, report).await?;
    if let Some(signal) = shutdown.signal() {
        return Ok(ApplyOutcome::Interrupted {
            generation: None,
            signal,
        });
    }
    let generation =
        begin_generation(store, desired, &hash, &images, superseding.as_deref()).await?;
    lock.set_generation(generation)?;
    let how = Execution {
        images: &images,
        generation,
        gate_all,
        report,
        shutdown,
        schema: SchemaStep::Run(store),
    };
    let executed = match &swarm {
        Some(sw) => crate::swarm::execute(rt, sw, desired, &the_plan, how).await,
        None => execute(rt, desired, &the_plan, how).await,
    };
    conclude(rt, store, desired, generation, executed, report, shutdown).await
}

/// What became of the newest generation, if it needed finishing.
enum Newest {
    /// It was finished (or its revert was), and that is this reconcile's outcome.
    Done(ApplyOutcome),
    /// Go on to the desired state; the generation it replaces, if one is left unfinished.
    Supersede(Option<Box<Generation>>),
}

/// Finish the newest generation if its converge did not end (or it failed and is asked
/// for again): a revert under way is finished whatever is asked now; an apply of this
/// very desired state, or any while the new one is poisoned, is resumed; anything else
/// unfinished is superseded by the new generation.
#[allow(clippy::too_many_arguments)]
async fn finish_newest<R: Runtime>(
    rt: &R,
    store: &Store,
    project: &str,
    hash: &str,
    poisoned: &Option<Generation>,
    lock: &mut ProjectLock,
    report: &Reporter,
    shutdown: &Shutdown,
) -> Result<Newest, ConvergeError> {
    let Some(g) = store
        .latest(project)
        .await?
        .filter(|g| needs_finishing(g, hash))
    else {
        return Ok(Newest::Supersede(None));
    };
    let ours = g.kind == Kind::Apply && g.resolved_hash == hash;
    if g.outcome == Outcome::Reverting {
        let outcome = finish_revert(rt, store, &g, lock, report, shutdown).await?;
        if ours || matches!(outcome, ApplyOutcome::Interrupted { .. }) {
            return Ok(Newest::Done(outcome));
        }
        Ok(Newest::Supersede(None))
    } else if ours || poisoned.is_some() {
        // A poisoned new desired state cannot replace it: it is finished as it is.
        let outcome = resume(rt, store, &g, lock, report, shutdown).await?;
        Ok(Newest::Done(match poisoned {
            Some(p) if !ours && outcome.exit_code() == exit::OK => poisoned_outcome(p.clone()),
            _ => outcome,
        }))
    } else if g.outcome.unfinished() {
        Ok(Newest::Supersede(Some(Box::new(g))))
    } else {
        Ok(Newest::Supersede(None))
    }
}

/// The running services a desired state would remove, when it would remove every one of
/// them (refused without `--allow-empty`); None when any would stay.
fn removes_every_running(
    desired: &DesiredState,
    observed: &crate::observe::Observed,
) -> Option<Vec<String>> {
    let mut running: Vec<String> = observed
        .containers
        .iter()
        .filter(|c| c.running())
        .filter_map(|c| c.service.clone())
        .collect();
    running.sort();
    running.dedup();
    (!running.is_empty() && !running.iter().any(|s| desired.services.contains_key(s)))
        .then_some(running)
}

/// Record a new apply generation of `desired`, with the images it pins, superseding an
/// unfinished one if any.
async fn begin_generation(
    store: &Store,
    desired: &DesiredState,
    hash: &str,
    images: &crate::images::Images,
    superseding: Option<&Generation>,
) -> Result<i64, ConvergeError> {
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
    Ok(store
        .begin(
            NewGeneration {
                project: &desired.project.name,
                kind: Kind::Apply,
                source_hash: &desired.source_hash,
                resolved_hash: hash,
                source: &source,
                spec_json: &spec_json,
                images: &images_json,
                commit: desired
                    .origin
                    .as_ref()
                    .map(|o| (o.commit.as_str(), o.subject.as_str())),
            },
            superseding.map(|g| g.id),
        )
        .await?)
}

/// Finish a generation whose converge did not end (or an apply that failed and is asked
/// for again), as what it is: an apply is gated again from its own spec and pins and
/// ends healthy or reverts; a rollback ends healthy or failed; a down is run again.
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
        Outcome::Interrupted => "it was stopped before it ended",
        Outcome::Failed => "it failed; asked for again",
        _ => "its berth process died before it ended",
    };
    report.line(&format!(
        "resuming generation {} ({how}): gating every service again",
        g.id
    ));
    store
        .add_event(g.id, "resumed", None, &format!("resumed: {how}"))
        .await?;
    match g.kind {
        Kind::Apply => {
            let executed = to_pinned(
                rt,
                SchemaStep::Run(store),
                g,
                g.id,
                true,
                &Default::default(),
                report,
                shutdown,
            )
            .await?;
            let desired = g.desired()?;
            let outcome = conclude(rt, store, &desired, g.id, executed, report, shutdown).await?;
            Ok(match outcome {
                ApplyOutcome::Converged { generation, .. } => ApplyOutcome::Converged {
                    generation,
                    resumed: true,
                },
                other => other,
            })
        }
        Kind::Rollback => {
            let executed = to_pinned(
                rt,
                SchemaStep::Run(store),
                g,
                g.id,
                true,
                &Default::default(),
                report,
                shutdown,
            )
            .await?;
            finish_plain(store, g, executed, Outcome::Healthy).await
        }
        Kind::Down => {
            let executed = take_down(rt, g, g.id, report, shutdown).await?;
            finish_plain(store, g, executed, Outcome::Down).await
        }
    }
}

/// Keep what failed or dead containers left behind on generation `on`, before a revert
/// or the next turn touches the stack again.
async fn keep_evidence(
    store: &Store,
    project: &str,
    on: i64,
    executed: &Executed,
) -> Result<(), ConvergeError> {
    let kept: Vec<_> = executed
        .evidence
        .iter()
        .cloned()
        .map(|mut e| {
            e.generation = on;
            e
        })
        .collect();
    store.add_evidence(project, &kept).await?;
    Ok(())
}

/// Record how a generation's converge ended, and revert the stack when a gate failed.
async fn conclude<R: Runtime>(
    rt: &R,
    store: &Store,
    desired: &DesiredState,
    generation: i64,
    executed: Executed,
    report: &Reporter,
    shutdown: &Shutdown,
) -> Result<ApplyOutcome, ConvergeError> {
    keep_evidence(store, &desired.project.name, generation, &executed).await?;
    let Executed {
        result, timings, ..
    } = executed;
    let reason = match result {
        Ok(()) => {
            store
                .finish(generation, Outcome::Healthy, None, &timings)
                .await?;
            return Ok(ApplyOutcome::Converged {
                generation,
                resumed: false,
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
        // No answer is no verdict: not a gate failure, no revert, no poison.
        Err(Failure::Unreachable { context, message }) => {
            return unanswered(store, generation, &timings, &context, &message).await;
        }
        // Reasons are stored and shown: a probe's output may hold a secret.
        Err(Failure::Gate(reason)) => desired.redactor().text(&reason),
    };
    if !desired.rollout.auto_revert {
        store
            .finish(generation, Outcome::Failed, Some(&reason), &timings)
            .await?;
        return Ok(ApplyOutcome::GateFailed { generation, reason });
    }
    let Some(good) = store.last_good(&desired.project.name, generation).await? else {
        let why = format!("{reason}; no last good generation to revert to");
        store
            .finish(generation, Outcome::Failed, Some(&why), &timings)
            .await?;
        return Ok(ApplyOutcome::Degraded {
            generation,
            reason: why,
        });
    };
    // Recorded before the revert touches anything: a converge that finds this generation
    // (its process died) finishes the revert; it never gates the failed spec again.
    store
        .start_revert(generation, good.id, &reason, &timings)
        .await?;
    revert(rt, store, generation, &good, reason, report, shutdown).await
}

/// The engine stopped answering during a generation's converge: nothing was judged. The
/// generation is recorded `interrupted` (the next converge resumes it, gating every
/// service again) and the error goes up, so the daemon backs off and says the engine is
/// unreachable, and `berth apply` exits 1.
async fn unanswered(
    store: &Store,
    generation: i64,
    timings: &Timings,
    context: &str,
    message: &str,
) -> Result<ApplyOutcome, ConvergeError> {
    let why = format!(
        "the engine stopped answering before it ended ({context}: {message}); the next converge resumes it"
    );
    store
        .finish(generation, Outcome::Interrupted, Some(&why), timings)
        .await?;
    Err(Failure::unreachable_error(context, message))
}

/// Finish the revert of a generation found `reverting` (its process died, or was stopped).
async fn finish_revert<R: Runtime>(
    rt: &R,
    store: &Store,
    g: &Generation,
    lock: &mut ProjectLock,
    report: &Reporter,
    shutdown: &Shutdown,
) -> Result<ApplyOutcome, ConvergeError> {
    lock.set_generation(g.id)?;
    let reason = g.reason.clone().unwrap_or_default();
    let good = match g.reverted_to {
        Some(to) => store.get(&g.project, to).await?,
        None => None,
    };
    let Some(good) = good else {
        let why = format!("{reason}; its revert target is not in the state store");
        store.set_outcome(g.id, Outcome::Failed, Some(&why)).await?;
        return Ok(ApplyOutcome::Degraded {
            generation: g.id,
            reason: why,
        });
    };
    store
        .add_event(
            g.id,
            "resumed",
            None,
            "the revert did not end; finishing it",
        )
        .await?;
    revert(rt, store, g.id, &good, reason, report, shutdown).await
}

/// Put the whole stack back on `good` after `generation` failed for `reason`.
async fn revert<R: Runtime>(
    rt: &R,
    store: &Store,
    generation: i64,
    good: &Generation,
    reason: String,
    report: &Reporter,
    shutdown: &Shutdown,
) -> Result<ApplyOutcome, ConvergeError> {
    report.line(&format!(
        "reverting project {:?} to generation {}: {reason}",
        good.project, good.id
    ));
    // The schema first (semantic 6's order): the last good generation's containers then
    // start, and are gated, on the schema they were gated on before. The failed
    // generation's containers are stopped by the converge below, after the undo.
    let failed =
        store
            .get(&good.project, generation)
            .await?
            .ok_or_else(|| ConvergeError::Corrupt {
                generation,
                message: "the generation being reverted is not in the state store".into(),
            })?;
    let failed_desired = failed.desired()?;
    let local = crate::swarm::local::Local::of(rt, &failed_desired).await?;
    let schema = crate::migrate::revert::undo_schema(
        &local,
        store,
        &failed,
        &failed_desired,
        good,
        true,
        report,
    )
    .await?;
    let reverted = to_pinned(
        rt,
        SchemaStep::Skip,
        good,
        good.id,
        false,
        &Default::default(),
        report,
        shutdown,
    )
    .await?;
    keep_evidence(store, &failed.project, failed.id, &reverted).await?;
    match reverted.result {
        Ok(()) if schema.not_undone().is_some() => {
            let why = format!(
                "{reason}; the containers are back on generation {} but {}",
                good.id,
                schema.not_undone().unwrap_or_default()
            );
            store
                .set_outcome(generation, Outcome::Failed, Some(&why))
                .await?;
            Ok(ApplyOutcome::Degraded {
                generation,
                reason: why,
            })
        }
        Ok(()) => {
            let restored = match &schema {
                SchemaUndo::Restored(note) => format!("; {note}"),
                _ => String::new(),
            };
            let why = format!("{reason}; reverted to generation {}{restored}", good.id);
            store.mark_rolled_back(generation, good.id, &why).await?;
            Ok(ApplyOutcome::RolledBack {
                generation,
                to: good.id,
                reason,
            })
        }
        // Still `reverting`: the next converge finishes the revert.
        Err(Failure::Interrupted(signal)) => Ok(ApplyOutcome::Interrupted {
            generation: Some(generation),
            signal,
        }),
        // Still `reverting` too, once the engine answers again.
        Err(Failure::Unreachable { context, message }) => {
            report.line(
                "the engine stopped answering during the revert; it is finished once the engine is back",
            );
            Err(Failure::unreachable_error(&context, &message))
        }
        Err(Failure::Gate(revert_reason)) => {
            let why = format!(
                "{reason}; the revert to generation {} failed too: {}",
                good.id,
                good.desired()?.redactor().text(&revert_reason)
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

/// Repair drift of the project's running generation only, whatever the desired state on
/// disk says: the daemon's answer to an invalid or blocked desired state (the last good
/// generation keeps running, and keeps being put back). None when nothing drifted. The
/// caller holds the project's lock.
pub async fn repair_drift<R: Runtime>(
    rt: &R,
    store: &Store,
    project: &str,
    hold: &std::collections::BTreeSet<String>,
    report: &Reporter,
    shutdown: &Shutdown,
) -> Result<Option<ApplyOutcome>, ConvergeError> {
    repair_running(rt, store, report, shutdown, project, None, None, hold).await
}

/// When `hash` is None or the running generation's: repair drift of the running
/// generation, if there is any. None when there is nothing to repair. `listed` is the
/// project's containers when this turn listed them already: the engine is asked once,
/// and the plan made here is the one carried out.
#[allow(clippy::too_many_arguments)]
async fn repair_running<R: Runtime>(
    rt: &R,
    store: &Store,
    report: &Reporter,
    shutdown: &Shutdown,
    project: &str,
    hash: Option<&str>,
    listed: Option<&[crate::runtime::ContainerSummary]>,
    hold: &std::collections::BTreeSet<String>,
) -> Result<Option<ApplyOutcome>, ConvergeError> {
    let Some(latest) = store.latest(project).await? else {
        return Ok(None);
    };
    let Some(running) = store.running(&latest).await? else {
        return Ok(None);
    };
    if hash.is_some_and(|h| h != running.resolved_hash) {
        return Ok(None);
    }
    let desired = running.desired()?;
    let pins = running.pins();
    let observed = match (listed, swarm_of(&desired).await?) {
        (Some(containers), _) => with_pins(containers.to_vec(), &desired, &pins),
        (None, Some(sw)) => crate::swarm::observed_with_pins(&sw, &desired, &pins).await?,
        (None, None) => observed_with_pins(rt, &desired, &pins).await?,
    };
    let mut drift = plan(&desired, &observed);
    if drift.is_noop() {
        return Ok(None);
    }
    for step in drift.steps.iter_mut().filter(|s| hold.contains(&s.service)) {
        step.action = Action::Noop;
    }
    if drift.is_noop() {
        // Drift, all of it held (a crash loop): leave it, and do not let it pass for a
        // change of desired state either.
        return Ok(Some(ApplyOutcome::NoChanges));
    }
    let pinned = Pinned {
        target: running.id,
        desired: &desired,
        pins: &pins,
    };
    repair(rt, store, &running, pinned, &drift, report, shutdown)
        .await
        .map(Some)
}

/// Put drift of the running generation back, from its own spec and pins: `drift` is
/// carried out as planned (held services already left out of it).
async fn repair<R: Runtime>(
    rt: &R,
    store: &Store,
    running: &Generation,
    pinned: Pinned<'_>,
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
    let executed = match swarm_of(pinned.desired).await? {
        Some(sw) => {
            crate::swarm::execute_pinned(
                rt, &sw, pinned, drift, running.id, false, report, shutdown,
            )
            .await?
        }
        None => {
            execute_pinned(
                rt,
                SchemaStep::Skip,
                pinned,
                drift,
                running.id,
                false,
                report,
                shutdown,
            )
            .await?
        }
    };
    keep_evidence(store, &running.project, running.id, &executed).await?;
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
        // Not a failed repair: the next turn, once the engine answers, looks again.
        Err(Failure::Unreachable { context, message }) => {
            Err(Failure::unreachable_error(&context, &message))
        }
        Err(Failure::Gate(reason)) => {
            let reason = pinned.desired.redactor().text(&reason);
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

/// Record how a rollback or down ended; neither reverts (`ok` is what success is).
async fn finish_plain(
    store: &Store,
    g: &Generation,
    executed: Executed,
    ok: Outcome,
) -> Result<ApplyOutcome, ConvergeError> {
    keep_evidence(store, &g.project, g.id, &executed).await?;
    if let Err(Failure::Unreachable { context, message }) = &executed.result {
        return unanswered(store, g.id, &executed.timings, context, message).await;
    }
    let (outcome, result) = match executed.result {
        Ok(()) => (
            ok,
            match ok {
                Outcome::Down => ApplyOutcome::Down { generation: g.id },
                _ => ApplyOutcome::Converged {
                    generation: g.id,
                    resumed: false,
                },
            },
        ),
        Err(Failure::Interrupted(signal)) => (
            Outcome::Interrupted,
            ApplyOutcome::Interrupted {
                generation: Some(g.id),
                signal,
            },
        ),
        Err(Failure::Gate(reason)) => (
            Outcome::Failed,
            ApplyOutcome::Degraded {
                generation: g.id,
                reason: g.desired()?.redactor().text(&reason),
            },
        ),
        Err(Failure::Unreachable { .. }) => unreachable!("handled above"),
    };
    let reason = match &result {
        ApplyOutcome::Degraded { reason, .. } => Some(reason.clone()),
        ApplyOutcome::Interrupted { signal, .. } => Some(format!(
            "stopped by {} before it ended; the next converge resumes it",
            signal_name(*signal)
        )),
        _ => None,
    };
    store
        .finish(g.id, outcome, reason.as_deref(), &executed.timings)
        .await?;
    Ok(result)
}

/// `berth rollback`: go back by hand to a stored healthy generation, gated, recorded as a
/// new generation of kind rollback. It does not lift poison, and a failure is not
/// reverted: the project is then degraded.
pub async fn rollback<R: Runtime>(
    rt: &R,
    store: &Store,
    target: &Generation,
    lock: &mut ProjectLock,
    report: &Reporter,
    shutdown: &Shutdown,
) -> Result<ApplyOutcome, ConvergeError> {
    let current = store.latest(&target.project).await?;
    let g = begin_like(
        store,
        target,
        Kind::Rollback,
        &format!("rollback to generation {}", target.id),
        lock,
    )
    .await?;
    // The schema first, as in an auto-revert, with the source of what ran last.
    let schema = match &current {
        Some(c) => {
            let current = c.desired()?;
            let local = crate::swarm::local::Local::of(rt, &current).await?;
            crate::migrate::revert::undo_schema(&local, store, c, &current, target, false, report)
                .await?
        }
        None => SchemaUndo::Done,
    };
    if let SchemaUndo::NotUndone(why) = schema {
        store
            .finish(g.id, Outcome::Failed, Some(&why), &Timings::new())
            .await?;
        return Ok(ApplyOutcome::Degraded {
            generation: g.id,
            reason: why,
        });
    }
    let executed = to_pinned(
        rt,
        SchemaStep::Run(store),
        &g,
        g.id,
        false,
        &Default::default(),
        report,
        shutdown,
    )
    .await?;
    finish_plain(store, &g, executed, Outcome::Healthy).await
}

/// Begin a generation that runs a stored generation's spec and pins, superseding an
/// unfinished newest generation; returns it as stored.
async fn begin_like(
    store: &Store,
    target: &Generation,
    kind: Kind,
    source: &str,
    lock: &mut ProjectLock,
) -> Result<Generation, ConvergeError> {
    let unfinished = store
        .latest(&target.project)
        .await?
        .filter(|g| g.outcome.unfinished());
    let id = store
        .begin(
            NewGeneration {
                project: &target.project,
                kind,
                source_hash: &target.source_hash,
                resolved_hash: &target.resolved_hash,
                source,
                spec_json: &target.spec_json,
                images: &target.images,
                commit: target
                    .commit
                    .as_deref()
                    .map(|c| (c, target.commit_subject.as_deref().unwrap_or_default())),
            },
            unfinished.map(|g| g.id),
        )
        .await?;
    lock.set_generation(id)?;
    Ok(store
        .get(&target.project, id)
        .await?
        .expect("the generation just begun is stored"))
}

/// `berth down`: remove the project's containers and networks on purpose (volumes and
/// data stay), recorded as a generation of kind and outcome `down`.
pub async fn down<R: Runtime>(
    rt: &R,
    store: &Store,
    latest: &Generation,
    lock: &mut ProjectLock,
    report: &Reporter,
    shutdown: &Shutdown,
) -> Result<ApplyOutcome, ConvergeError> {
    let mut desired = latest.desired()?;
    desired.services.clear();
    let mut empty = latest.clone();
    empty.spec_json = serde_json::to_string(&desired).expect("desired state serializes");
    empty.resolved_hash = resolved_hash(&desired);
    empty.images = json!({});
    let g = begin_like(store, &empty, Kind::Down, "berth down", lock).await?;
    let executed = take_down(rt, &g, g.id, report, shutdown).await?;
    finish_plain(store, &g, executed, Outcome::Down).await
}

/// Remove every container of a down generation's project, and its networks.
async fn take_down<R: Runtime>(
    rt: &R,
    g: &Generation,
    generation: i64,
    report: &Reporter,
    shutdown: &Shutdown,
) -> Result<Executed, ConvergeError> {
    let desired = g.desired()?;
    let images = Default::default();
    let how = Execution {
        images: &images,
        generation,
        gate_all: false,
        report,
        shutdown,
        schema: SchemaStep::Skip,
    };
    Ok(match swarm_of(&desired).await? {
        Some(sw) => {
            let observed =
                crate::swarm::observed_with_pins(&sw, &desired, &Default::default()).await?;
            let the_plan = plan(&desired, &observed);
            crate::swarm::execute(rt, &sw, &desired, &the_plan, how).await
        }
        None => {
            let observed = observe(rt, &desired).await?;
            let the_plan = plan(&desired, &observed);
            execute(rt, &desired, &the_plan, how).await
        }
    })
}

/// The Swarm a desired state runs on, connected, when its engine is `"swarm"` (its
/// premise checked: a manager); None for one Docker host.
async fn swarm_of(desired: &DesiredState) -> Result<Option<crate::swarm::Swarm>, ConvergeError> {
    match desired.project.engine {
        crate::spec::Engine::Docker => Ok(None),
        crate::spec::Engine::Swarm => Ok(Some(crate::swarm::Swarm::connect().await?)),
    }
}

/// [`converge_to_pinned`] by the engine the stored generation names.
#[allow(clippy::too_many_arguments)]
async fn to_pinned<R: Runtime>(
    rt: &R,
    schema: SchemaStep<'_>,
    target: &Generation,
    generation: i64,
    gate_all: bool,
    skip: &std::collections::BTreeSet<String>,
    report: &Reporter,
    shutdown: &Shutdown,
) -> Result<Executed, ConvergeError> {
    match swarm_of(&target.desired()?).await? {
        Some(sw) => {
            crate::swarm::converge_to_pinned(
                rt, &sw, target, generation, gate_all, skip, report, shutdown,
            )
            .await
        }
        None => {
            converge_to_pinned(
                rt, schema, target, generation, gate_all, skip, report, shutdown,
            )
            .await
        }
    }
}
