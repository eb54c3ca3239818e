//! Converge: carry a plan out against the runtime (docs/design.md §§2-4). This is the
//! executor; what to converge to, and what to do when it fails, is decided by
//! [`crate::reconcile`].
//!
//! Order of work: owned containers nobody wants are removed; the project's networks are
//! found (by label) or created; then each DAG level starts in parallel and a level begins
//! once every service below it passed its probe (pipelined; or closed its stability
//! window, under `stability = "before-dependents"`), while the windows below run on; the
//! migrations step begins right after the database service's level and runs beside the
//! levels above, and only a level holding a dependent of `migrations` waits for it
//! (docs/design.md §5).
//! The containers of a level are created (not started) one level ahead, while the level
//! below gates ([`prepare`]). A recreate creates the new container first (under a
//! temporary name), so a bad spec fails before the old one is stopped.
//! Volumes are never removed. A stop request ([`Shutdown`]) ends a converge at the next
//! step boundary: a gate being waited on, or the start of the next level.

use std::collections::BTreeMap;
use std::time::Instant;

use futures::FutureExt;
use futures::future::join_all;
use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::json;

use crate::gate::{GateOutcome, Watch, effective_probe, gate};
use crate::hash::config_hash;
use crate::images::{Images, Pins, pinned_images};
use crate::observe::Observed;
use crate::plan::{Action, Plan, plan};
use crate::report::Reporter;
use crate::runtime::{Networks, Runtime, RuntimeError};
use crate::shutdown::Shutdown;
use crate::spec::{
    DesiredState, LABEL_CONFIG_HASH, LABEL_GENERATION, LABEL_PROJECT, LABEL_SERVICE,
    MIGRATIONS_NODE, Service, Volume,
};
use crate::store::{Generation, StoreError, now_ms};

#[derive(Debug, thiserror::Error)]
pub enum ConvergeError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
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

/// Why a converge did not end healthy.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// A gate failed, or a step the gates depend on (create, start, network) did.
    Gate(String),
    /// A stop was requested (the signal); the converge ended at a step boundary.
    Interrupted(i32),
    /// The engine stopped answering: nothing was judged. The generation is recorded
    /// `interrupted` and the next converge (once the engine answers) resumes it.
    Unreachable { context: String, message: String },
}

impl Failure {
    /// How a runtime error ends a step: an engine that does not answer interrupts the
    /// converge; an engine that answers with an error fails it.
    pub fn of(e: RuntimeError) -> Failure {
        match e {
            RuntimeError::Unreachable { context, message } => {
                Failure::Unreachable { context, message }
            }
            other => Failure::Gate(other.to_string()),
        }
    }

    /// The error a converge that the engine left unanswered returns, once its
    /// generation is recorded as it stands.
    pub fn unreachable_error(context: &str, message: &str) -> ConvergeError {
        ConvergeError::Runtime(RuntimeError::Unreachable {
            context: context.to_string(),
            message: message.to_string(),
        })
    }

    /// Rank of a failure when several services of one level fail: a stop outranks an
    /// engine gone, which outranks a gate failure it may have caused.
    fn rank(&self) -> u8 {
        match self {
            Failure::Interrupted(_) => 2,
            Failure::Unreachable { .. } => 1,
            Failure::Gate(_) => 0,
        }
    }
}

impl From<crate::migrate::step::StepError> for Failure {
    /// The migrations step fails the converge as a gate does; the engine's errors end it
    /// as they end any other step.
    fn from(e: crate::migrate::step::StepError) -> Failure {
        match e {
            crate::migrate::step::StepError::Runtime(e) => Failure::of(e),
            crate::migrate::step::StepError::Failed(reason) => Failure::Gate(reason),
        }
    }
}

impl From<crate::migrate::revert::RevertError> for ConvergeError {
    fn from(e: crate::migrate::revert::RevertError) -> ConvergeError {
        match e {
            crate::migrate::revert::RevertError::Runtime(e) => ConvergeError::Runtime(e),
            crate::migrate::revert::RevertError::Store(e) => ConvergeError::Store(e),
        }
    }
}

impl ConvergeError {
    /// Whether the engine gave no answer (see [`RuntimeError::is_unreachable`]).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ConvergeError::Runtime(e) if e.is_unreachable())
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Gate(reason) => f.write_str(reason),
            Failure::Interrupted(signal) => write!(
                f,
                "stopped by {} before it ended",
                crate::shutdown::signal_name(*signal)
            ),
            Failure::Unreachable { context, message } => {
                write!(f, "{context}: the engine did not answer: {message}")
            }
        }
    }
}

/// What [`execute`] did: how it ended, and per-service timings for the generation.
pub struct Executed {
    pub result: Result<(), Failure>,
    pub timings: serde_json::Value,
}

/// How to carry a plan out.
pub struct Execution<'a> {
    pub images: &'a Images,
    /// The generation the containers are labelled with.
    pub generation: i64,
    /// Gate every service, even one whose container looks converged: after an
    /// interrupted converge nothing may be taken as proven.
    pub gate_all: bool,
    pub report: &'a Reporter,
    pub shutdown: &'a Shutdown,
    /// Whether the migrations step runs, and where it records what it finds.
    pub schema: SchemaStep<'a>,
}

impl<'a> Execution<'a> {
    /// What the migrations step works with, when this converge runs it.
    fn migrations_step(&self) -> Option<crate::migrate::step::Context<'a>> {
        match self.schema {
            SchemaStep::Run(store) => Some(crate::migrate::step::Context {
                images: self.images,
                generation: self.generation,
                store,
                report: self.report,
            }),
            SchemaStep::Skip => None,
        }
    }
}

/// Whether a converge runs the migrations step.
#[derive(Clone, Copy)]
pub enum SchemaStep<'a> {
    /// An apply, its resume, or a rollback: the step runs once the database's level
    /// passed its probes, recording in the store the schema version `generation` reached
    /// (as soon as it knows it, so a kill right after leaves it recorded).
    Run(&'a crate::store::Store),
    /// A revert, a repair or a down: the step does not run at all (a revert puts the
    /// schema back itself, before its converge; a repair changes no desired state; a
    /// down removes every container).
    Skip,
}

/// Put the stack on a stored generation's spec with its pinned image IDs, gated like any
/// converge, containers labelled `generation`. Records nothing itself but the schema
/// version its migrations step finds, on `generation`. A pin that is missing or whose
/// image is gone fails it: a tag may point elsewhere by now.
#[allow(clippy::too_many_arguments)]
pub async fn converge_to_pinned<R: Runtime>(
    rt: &R,
    schema: SchemaStep<'_>,
    target: &Generation,
    generation: i64,
    gate_all: bool,
    skip: &std::collections::BTreeSet<String>,
    report: &Reporter,
    shutdown: &Shutdown,
) -> Result<Executed, ConvergeError> {
    let desired = target.desired()?;
    let pins = target.pins();
    let observed = observed_with_pins(rt, &desired, &pins).await?;
    let mut the_plan = plan(&desired, &observed);
    // Held services are left as they are (a repair on hold for a crash loop).
    for step in the_plan
        .steps
        .iter_mut()
        .filter(|s| skip.contains(&s.service))
    {
        step.action = Action::Noop;
    }
    let pinned = Pinned {
        target: target.id,
        desired: &desired,
        pins: &pins,
    };
    execute_pinned(
        rt, schema, pinned, &the_plan, generation, gate_all, report, shutdown,
    )
    .await
}

/// A stored generation, decoded: what [`execute_pinned`] puts the stack on.
#[derive(Clone, Copy)]
pub struct Pinned<'a> {
    /// The generation it was read from (named when a pin is missing).
    pub target: i64,
    pub desired: &'a DesiredState,
    pub pins: &'a Pins,
}

/// Carry out `the_plan` (made against `pinned`: see [`converge_to_pinned`]) with the
/// pinned image IDs. A drift repair, which planned already, calls it directly.
#[allow(clippy::too_many_arguments)]
pub async fn execute_pinned<R: Runtime>(
    rt: &R,
    schema: SchemaStep<'_>,
    pinned: Pinned<'_>,
    the_plan: &Plan,
    generation: i64,
    gate_all: bool,
    report: &Reporter,
    shutdown: &Shutdown,
) -> Result<Executed, ConvergeError> {
    let Pinned {
        target,
        desired,
        pins,
    } = pinned;
    let failed = |reason: String| Executed {
        result: Err(Failure::Gate(reason)),
        timings: json!({}),
    };
    if let Some(s) = desired
        .services
        .values()
        .find(|s| !pins.contains_key(&s.image))
    {
        return Ok(failed(format!(
            "generation {target} has no pinned image ID for service {:?} ({}); berth does not fall back to the tag, which may point elsewhere now",
            s.name, s.image
        )));
    }
    if the_plan.is_noop() && !gate_all {
        return Ok(Executed {
            result: Ok(()),
            timings: json!({}),
        });
    }
    let images = match pinned_images(rt, pins).await {
        Ok(i) => i,
        Err(e) if e.is_unreachable() => {
            return Ok(Executed {
                result: Err(Failure::of(e)),
                timings: json!({}),
            });
        }
        Err(e) => return Ok(failed(e.to_string())),
    };
    Ok(execute(
        rt,
        desired,
        the_plan,
        Execution {
            images: &images,
            generation,
            gate_all,
            report,
            shutdown,
            schema,
        },
    )
    .await)
}

/// Observe, with the desired images' IDs taken from pins rather than from what the
/// tags point at now: a tag that has moved since must not matter.
pub async fn observed_with_pins<R: Runtime>(
    rt: &R,
    desired: &DesiredState,
    pins: &Pins,
) -> Result<Observed, RuntimeError> {
    Ok(with_pins(
        rt.list_project(&desired.project.name).await?,
        desired,
        pins,
    ))
}

/// `containers` (the project's, as listed) with the pinned images standing for the
/// desired ones: what a stored generation is planned against.
pub fn with_pins(
    containers: Vec<crate::runtime::ContainerSummary>,
    desired: &DesiredState,
    pins: &Pins,
) -> Observed {
    let mut observed = Observed {
        containers,
        images: BTreeMap::new(),
    };
    for (reference, id) in pins {
        observed.images.insert(
            reference.clone(),
            Some(crate::images::pinned_image_info(desired, reference, id)),
        );
    }
    observed
}

/// A name clash with a container berth does not own is an error before anything changes.
pub async fn check_names<R: Runtime>(
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

/// Carry out a plan within the desired state's `progress_deadline`.
pub async fn execute<R: Runtime>(
    rt: &R,
    desired: &DesiredState,
    plan: &Plan,
    how: Execution<'_>,
) -> Executed {
    let deadline = desired.rollout.progress_deadline;
    let mut timings = serde_json::Map::new();
    let steps = execute_steps(rt, desired, plan, &how, &mut timings);
    let result = match tokio::time::timeout(deadline, steps).await {
        Ok(r) => r,
        Err(_) => Err(Failure::Gate(format!(
            "the converge did not finish within progress_deadline {}",
            crate::spec::duration::format(deadline)
        ))),
    };
    Executed {
        result,
        timings: json!(timings),
    }
}

async fn execute_steps<R: Runtime>(
    rt: &R,
    desired: &DesiredState,
    plan: &Plan,
    how: &Execution<'_>,
    timings: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<(), Failure> {
    let project = &desired.project.name;
    let removals = plan.steps.iter().filter(|s| s.action == Action::Remove);
    for r in join_all(removals.map(|step| async move {
        let c = step
            .container
            .as_ref()
            .expect("remove step has a container");
        // Stopped first, so a database shuts down cleanly; a paused container cannot
        // take SIGTERM, and removal kills it outright.
        if c.state != crate::runtime::ContainerState::Paused {
            rt.stop_container(&c.id).await?;
        }
        rt.remove_container(&c.id).await?;
        how.report.service(
            &step.service,
            &format!("removed {} ({})", c.name, step.reason),
        );
        Ok::<_, RuntimeError>(())
    }))
    .await
    {
        r.map_err(Failure::of)?;
    }

    let mut wanted: Vec<&str> = desired
        .services
        .values()
        .flat_map(|s| s.networks.iter().map(String::as_str))
        .collect();
    wanted.sort();
    wanted.dedup();
    // Every network at once.
    let networks: Networks =
        futures::future::try_join_all(wanted.into_iter().map(|n| async move {
            Ok::<_, RuntimeError>((n.to_string(), rt.ensure_network(n, project).await?))
        }))
        .await
        .map_err(Failure::of)?
        .into_iter()
        .collect();
    if desired.services.is_empty() {
        // The last container went: so does the project's network (never a volume).
        rt.remove_project_networks(project)
            .await
            .map_err(Failure::of)?;
    }

    // Every service's converge, from its first action to the end of its stability
    // window. Under the pipelined rollout (docs/design.md §4) the next level starts as
    // soon as every service of this one passed its probe once, and the windows run on
    // beside it; the generation is healthy only once every one of them has closed. Under
    // `stability = "before-dependents"` a level waits for its windows to close first.
    let strict = desired.rollout.stability == crate::spec::Stability::BeforeDependents;
    let networks = &networks;
    // When each service's container started: a converge that fails while others are
    // still gating records those too (`cut_ms`), so history shows what overlapped.
    let started = std::sync::Mutex::new(BTreeMap::new());
    let started_at = &started;
    // Followed from before the first start, so no gate misses an event.
    let watch = &Watch::start(rt, project);
    let levels = desired.levels();
    // When the migrations step began, while it runs: a converge that fails meanwhile
    // records it as cut short.
    let migrating_since = std::sync::Mutex::new(None);
    let result = async {
        let mut running: FuturesUnordered<ServiceRun<'_>> = FuturesUnordered::new();
        // Containers are made one level ahead: level k+1's while level k starts and
        // gates (see [`prepare`]).
        let mut ahead: BTreeMap<String, Prep<'_>> = BTreeMap::new();
        let mut driving: FuturesUnordered<NamedPrep<'_>> = FuturesUnordered::new();
        // The migrations step once it has begun, until it ends (see below).
        let mut migrating: Option<Migrating<'_>> = None;
        for (index, level) in levels.iter().enumerate() {
            if let Some(signal) = how.shutdown.signal() {
                return Err(Failure::Interrupted(signal));
            }
            // A level that holds a dependent of `migrations` begins once the step is
            // done; the windows below and the creates made ahead go on meanwhile.
            let needs_schema = level.iter().any(|n| {
                desired.services[n]
                    .depends_on
                    .iter()
                    .any(|d| d == MIGRATIONS_NODE)
            });
            if needs_schema {
                await_migrations(
                    &mut migrating,
                    &mut running,
                    &mut driving,
                    timings,
                    plan,
                    how,
                    &migrating_since,
                )
                .await?;
            }
            let next = levels.get(index + 1).map(Vec::as_slice).unwrap_or_default();
            for name in level.iter().chain(next) {
                let makes = plan
                    .step(name)
                    .is_some_and(|st| matches!(st.action, Action::Create | Action::Recreate));
                if makes && !ahead.contains_key(name) {
                    let s = &desired.services[name];
                    let made = prepare(rt, desired, plan, s, networks, how)
                        .boxed()
                        .shared();
                    ahead.insert(name.clone(), made.clone());
                    let name = name.clone();
                    driving.push(Box::pin(async move { (name, made.await) }));
                }
            }
            let mut waiting: std::collections::BTreeSet<String> = level.iter().cloned().collect();
            let mut readies = FuturesUnordered::new();
            for name in level {
                let s = &desired.services[name];
                let (tx, rx) = tokio::sync::oneshot::channel();
                let ready = (!strict).then_some(tx);
                let prepared = ahead.get(name).cloned();
                running.push(Box::pin(async move {
                    (
                        s.name.clone(),
                        converge_service(
                            rt,
                            desired,
                            plan,
                            s,
                            how,
                            Gating {
                                ready,
                                started_at,
                                prepared,
                                watch,
                            },
                        )
                        .await,
                    )
                }));
                let name = name.clone();
                readies.push(async move {
                    // A closed channel (the converge ended, or never probes) is ready too:
                    // its end arrives through `running`.
                    let _ = rx.await;
                    name
                });
            }
            while !waiting.is_empty() {
                // Biased: the level's own starts and gates are polled before the creates
                // made ahead, so they take their places among the engine calls first.
                tokio::select! {
                    biased;
                    Some((name, r)) = running.next() => {
                        waiting.remove(&name);
                        finished(&mut running, timings, name, r)?;
                    }
                    Some(name) = readies.next(), if !strict => {
                        waiting.remove(&name);
                    }
                    r = step_of(&mut migrating) => {
                        migrated(&mut migrating, timings, &migrating_since, r)?;
                    }
                    Some((name, made)) = driving.next() => {
                        made_ahead(&mut running, timings, plan, how, name, made)?;
                    }
                }
            }
            // Migrations are a node of the DAG (docs/design.md §5): they begin once the
            // database's level passed its probes, and run beside the levels above. Only a
            // level that holds a dependent of `migrations` waits for them (above); a
            // service that does not depend on them does not wait for the schema it does
            // not use, and the converge ends only once they are done.
            if let Some(m) = &desired.migrations
                && level.contains(&m.service)
                && let Some(step) = how.migrations_step()
            {
                if let Some(signal) = how.shutdown.signal() {
                    return Err(Failure::Interrupted(signal));
                }
                *migrating_since.lock().expect("migrations lock") = Some(now_ms());
                migrating = Some(begin_migrations(rt, desired, m, step));
            }
        }
        await_migrations(
            &mut migrating,
            &mut running,
            &mut driving,
            timings,
            plan,
            how,
            &migrating_since,
        )
        .await?;
        // Every window must close without a failure or restart.
        while let Some((name, r)) = running.next().await {
            finished(&mut running, timings, name, r)?;
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        let cut = now_ms();
        for (name, ms) in started.into_inner().expect("started lock") {
            timings
                .entry(name)
                .or_insert_with(|| json!({"started_ms": ms, "cut_ms": cut}));
        }
        if let Some(t0) = migrating_since.into_inner().expect("migrations lock") {
            timings
                .entry(MIGRATIONS_NODE.to_string())
                .or_insert_with(|| json!({"action": "migrate", "begin_ms": t0, "cut_ms": cut}));
        }
    }
    result
}

/// The migrations step under way. Not `Send`: sqlx's connection futures cannot be proven
/// `Send` in a generic context (its `Acquire` bound is higher-ranked), and the converge
/// held this step across awaits before it was boxed too.
type Migrating<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Failure>> + 'a>>;

/// The migrations step, begun: it fails the converge as a gate does.
fn begin_migrations<'a, R: Runtime>(
    rt: &'a R,
    desired: &'a DesiredState,
    m: &'a crate::spec::Migrations,
    step: crate::migrate::step::Context<'a>,
) -> Migrating<'a> {
    Box::pin(async move {
        crate::migrate::step::migrations_step(rt, desired, m, &step)
            .await
            .map_err(Failure::from)
    })
}

/// The migrations step's end, if it is under way; never, if not.
async fn step_of(migrating: &mut Option<Migrating<'_>>) -> Result<(), Failure> {
    match migrating.as_mut() {
        Some(step) => step.await,
        None => std::future::pending().await,
    }
}

/// The migrations step ended: recorded (begin, end), and no longer under way. Its failure
/// ends the converge, like a gate's.
fn migrated(
    migrating: &mut Option<Migrating<'_>>,
    timings: &mut serde_json::Map<String, serde_json::Value>,
    since: &std::sync::Mutex<Option<i64>>,
    r: Result<(), Failure>,
) -> Result<(), Failure> {
    *migrating = None;
    let begin = since
        .lock()
        .expect("migrations lock")
        .take()
        .unwrap_or_default();
    let end = json!({"action": "migrate", "begin_ms": begin, "end_ms": now_ms()});
    timings.insert(MIGRATIONS_NODE.to_string(), end);
    r
}

/// Wait for the migrations step under way (if any) to end. The windows of the levels
/// below and the creates made ahead go on meanwhile; one that fails ends the converge at
/// once.
async fn await_migrations<'a>(
    migrating: &mut Option<Migrating<'a>>,
    running: &mut FuturesUnordered<ServiceRun<'a>>,
    driving: &mut FuturesUnordered<NamedPrep<'a>>,
    timings: &mut serde_json::Map<String, serde_json::Value>,
    plan: &Plan,
    how: &Execution<'_>,
    since: &std::sync::Mutex<Option<i64>>,
) -> Result<(), Failure> {
    while migrating.is_some() {
        tokio::select! {
            biased;
            r = step_of(migrating) => migrated(migrating, timings, since, r)?,
            Some((name, r)) = running.next() => finished(running, timings, name, r)?,
            Some((name, made)) = driving.next() => made_ahead(running, timings, plan, how, name, made)?,
        }
    }
    Ok(())
}

/// What a service's converge tells the level loop: the moment its probe first passed
/// (`ready`; None under `before-dependents`), and when its container started.
struct Gating<'a> {
    ready: Option<tokio::sync::oneshot::Sender<std::time::Duration>>,
    started_at: &'a std::sync::Mutex<BTreeMap<String, i64>>,
    /// The container made ahead ([`prepare`]), for a create or recreate.
    prepared: Option<Prep<'a>>,
    /// The project's events, for gates that judge only what the engine shows.
    watch: &'a Watch,
}

/// One service's converge, to the end of its gate, named.
type ServiceRun<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = (String, Result<Timing, (Failure, Timing)>)> + Send + 'a>,
>;

/// A service's timings, with when its container was asked for (`create_ms`) and made
/// (`created_ms`) when it was made ahead.
fn with_created(mut t: Timing, made: Option<Made>) -> Timing {
    if let (Some(m), Some(map)) = (made, t.as_object_mut()) {
        map.insert("create_ms".into(), json!(m.asked_ms));
        map.insert("created_ms".into(), json!(m.made_ms));
    }
    t
}

/// A [`prepare`] under way, named.
type NamedPrep<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = (String, Result<Prepared, Failure>)> + Send + 'a>,
>;

/// A container made ahead: a failure to make it fails the converge at once, though its
/// level has not begun (its spec is bad whatever happens below).
fn made_ahead(
    running: &mut FuturesUnordered<ServiceRun<'_>>,
    timings: &mut serde_json::Map<String, serde_json::Value>,
    plan: &Plan,
    how: &Execution<'_>,
    name: String,
    made: Result<Prepared, Failure>,
) -> Result<(), Failure> {
    match made {
        Ok(_) => Ok(()),
        Err(f) => {
            let action = plan.step(&name).map_or("", |s| s.action.word());
            how.report.service(&name, &format!("{action} FAILED"));
            let t = json!({"action": action, "failed_ms": now_ms()});
            finished(running, timings, name, Err((f, t)))
        }
    }
}

/// Record a service's end. A failure ends the converge: the other converges still
/// running are dropped (their gates stop); of the ones that ended at the same moment, a
/// stop, then an engine gone, outranks a gate failure it may have caused (see
/// [`Failure::rank`]).
fn finished(
    running: &mut FuturesUnordered<ServiceRun<'_>>,
    timings: &mut serde_json::Map<String, serde_json::Value>,
    name: String,
    r: Result<Timing, (Failure, Timing)>,
) -> Result<(), Failure> {
    let (t, failure) = match r {
        Ok(t) => (t, None),
        Err((f, t)) => (t, Some(f)),
    };
    timings.insert(name, t);
    let Some(mut failure) = failure else {
        return Ok(());
    };
    while let Some(Some((other, r))) = running.next().now_or_never() {
        match r {
            Ok(t) => {
                timings.insert(other, t);
            }
            Err((f, t)) => {
                timings.insert(other, t);
                if f.rank() > failure.rank() {
                    failure = f;
                }
            }
        }
    }
    Err(failure)
}

type Timing = serde_json::Value;

/// A service's container, made ahead of its start (docs/design.md §4, work ahead of the gate): its
/// id, and when the create call began and returned.
type Prepared = (String, Made);

/// When a container made ahead was asked for and made (ms since the epoch).
#[derive(Debug, Clone, Copy)]
struct Made {
    asked_ms: i64,
    made_ms: i64,
}

/// A [`prepare`] under way, shared by the level loop (which drives it while the level
/// below gates) and the service's own converge (which starts what it made).
type Prep<'a> = futures::future::Shared<
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Prepared, Failure>> + Send + 'a>>,
>;

/// Make a service's container ahead of its level: its named volumes, then the container,
/// created and not started. A create makes it under its own name; a recreate makes the
/// new one under a temporary name beside the old one, which goes on running until the
/// service's level begins (so a bad spec fails before anything is stopped). Nothing
/// listens or binds a port before its start. A converge that ends before the level
/// leaves what was made for the next plan: a container created and never started is
/// made again (a create cut short may lack networks), a temporary copy is a stray and
/// removed.
async fn prepare<R: Runtime>(
    rt: &R,
    desired: &DesiredState,
    plan: &Plan,
    s: &Service,
    networks: &Networks,
    how: &Execution<'_>,
) -> Result<Prepared, Failure> {
    let step = plan
        .step(&s.name)
        .expect("every desired service has a step");
    for v in &s.volumes {
        if let Volume::Named { name, .. } = v {
            rt.ensure_volume(name, &desired.project.name)
                .await
                .map_err(Failure::of)?;
        }
    }
    let mut labels = s.labels.clone();
    labels.insert(LABEL_PROJECT.into(), desired.project.name.clone());
    labels.insert(LABEL_SERVICE.into(), s.name.clone());
    labels.insert(LABEL_CONFIG_HASH.into(), config_hash(s));
    labels.insert(LABEL_GENERATION.into(), how.generation.to_string());
    // The image runs by ID: the generation pins exactly what was checked. Never by tag:
    // a tag may point elsewhere by now.
    let Some((image, _)) = how.images.get(&s.image) else {
        return Err(Failure::Gate(format!(
            "no image ID is known for service {:?} ({}); not running it by tag",
            s.name, s.image
        )));
    };
    let asked_ms = now_ms();
    let made = |id: String| {
        (
            id,
            Made {
                asked_ms,
                made_ms: now_ms(),
            },
        )
    };
    if step.action == Action::Create {
        let id = rt
            .create_container(&s.container_name, s, image, &labels, networks)
            .await
            .map_err(Failure::of)?;
        how.report.service(&s.name, "created");
        return Ok(made(id));
    }
    let temp = format!("{}-berth-{}", s.container_name, &config_hash(s)[..8]);
    let id = match rt
        .create_container(&temp, s, image, &labels, networks)
        .await
    {
        Ok(id) => id,
        Err(e) if !e.is_unreachable() => {
            // A berth killed mid-recreate can leave its temporary copy behind (the engine
            // may even finish that create after berth died). It is this project's own,
            // made for this very spec: remove it and create it again. Anything else
            // holding the name is an error.
            let held = rt.name_holders(std::slice::from_ref(&temp)).await;
            let stale = held
                .ok()
                .and_then(|h| h.get(&temp).cloned())
                .filter(|h| h.project.as_deref() == Some(desired.project.name.as_str()));
            let Some(stale) = stale else {
                return Err(Failure::of(e));
            };
            how.report.service(
                &s.name,
                "removing a temporary copy left by an interrupted recreate",
            );
            rt.remove_container(&stale.id).await.map_err(Failure::of)?;
            rt.create_container(&temp, s, image, &labels, networks)
                .await
                .map_err(Failure::of)?
        }
        Err(e) => return Err(Failure::of(e)),
    };
    Ok(made(id))
}

async fn converge_service<R: Runtime>(
    rt: &R,
    desired: &DesiredState,
    plan: &Plan,
    s: &Service,
    how: &Execution<'_>,
    gating: Gating<'_>,
) -> Result<Timing, (Failure, Timing)> {
    let Gating {
        ready,
        started_at,
        prepared,
        watch,
    } = gating;
    let report = how.report;
    let step = plan
        .step(&s.name)
        .expect("every desired service has a step");
    let t0 = now_ms();
    let fail_with = |f: Failure| {
        (
            f,
            json!({"action": step.action.word(), "failed_ms": now_ms()}),
        )
    };
    let fail_rt = |e: RuntimeError| fail_with(Failure::of(e));
    let has_healthcheck = how.images.get(&s.image).is_some_and(|i| i.1);
    let mut made = None;
    let id = match step.action {
        Action::Noop if !how.gate_all => {
            return Ok(json!({"action": "noop"}));
        }
        Action::Noop => step
            .container
            .as_ref()
            .expect("noop step has a container")
            .id
            .clone(),
        Action::Start => {
            let id = step
                .container
                .as_ref()
                .expect("start step has a container")
                .id
                .clone();
            rt.start_container(&id).await.map_err(fail_rt)?;
            report.service(&s.name, "started");
            id
        }
        Action::Create | Action::Recreate => {
            // Made ahead, while the level below was gating (see [`prepare`]).
            let (id, at) = prepared
                .expect("a create or recreate is made ahead")
                .await
                .map_err(fail_with)?;
            made = Some(at);
            if let (Action::Recreate, Some(old)) = (&step.action, &step.container) {
                // A paused container cannot take SIGTERM; removal kills it outright.
                if old.state != crate::runtime::ContainerState::Paused {
                    rt.stop_container(&old.id).await.map_err(fail_rt)?;
                }
                rt.remove_container(&old.id).await.map_err(fail_rt)?;
                rt.rename_container(&id, &s.container_name)
                    .await
                    .map_err(fail_rt)?;
                report.service(&s.name, &format!("recreated ({})", step.reason));
            }
            rt.start_container(&id).await.map_err(fail_rt)?;
            report.service(&s.name, "started");
            id
        }
        Action::Remove => unreachable!("removals are not per-service steps"),
    };
    let started_ms = now_ms();
    started_at
        .lock()
        .expect("started lock")
        .insert(s.name.clone(), started_ms);
    let probe = effective_probe(s, has_healthcheck);
    let (deadline, min_healthy) = desired.gate_timing(s);
    let started = Instant::now();
    let gated = tokio::select! {
        g = gate(rt, &id, s, probe.as_ref(), deadline, min_healthy, ready, watch) => g,
        signal = how.shutdown.requested() => {
            report.service(&s.name, "stopped while gating");
            return Err((
                Failure::Interrupted(signal),
                with_created(json!({"action": step.action.word(), "begin_ms": t0, "started_ms": started_ms}), made),
            ));
        }
    };
    let out = match gated {
        GateOutcome::Passed { after, probe } => {
            report.service(
                &s.name,
                &format!("healthy in {:.1} s ({probe})", after.as_secs_f64()),
            );
            Ok(json!({
                "action": step.action.word(),
                "begin_ms": t0,
                "started_ms": started_ms,
                "healthy_ms": started_ms + after.as_millis() as i64,
                "gate_passed_ms": now_ms(),
                "gate_s": started.elapsed().as_secs_f64(),
            }))
        }
        GateOutcome::Unreachable { context, message } => {
            report.service(&s.name, "engine unreachable while gating");
            Err((
                Failure::Unreachable { context, message },
                json!({
                    "action": step.action.word(),
                    "begin_ms": t0,
                    "started_ms": started_ms,
                }),
            ))
        }
        GateOutcome::Failed { reason } => {
            report.service(&s.name, "FAILED its gate");
            Err((
                Failure::Gate(reason),
                json!({
                    "action": step.action.word(),
                    "begin_ms": t0,
                    "started_ms": started_ms,
                    "failed_ms": now_ms(),
                }),
            ))
        }
    };
    match out {
        Ok(t) => Ok(with_created(t, made)),
        Err((f, t)) => Err((f, with_created(t, made))),
    }
}
