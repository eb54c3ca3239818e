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
use crate::store::{Cause, Evidence, Generation, StoreError, Timing, Timings, now_ms};

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

/// What [`execute`] did: how it ended, per-service timings for the generation, and the
/// evidence of each container that failed its gate or had died (to keep before anything
/// else touches them).
pub struct Executed {
    pub result: Result<(), Failure>,
    pub timings: Timings,
    pub evidence: Vec<Evidence>,
}

impl Executed {
    /// An execute that ended before any step ran.
    fn before_any_step(result: Result<(), Failure>) -> Executed {
        Executed {
            result,
            timings: Timings::new(),
            evidence: Vec::new(),
        }
    }
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
    pub(crate) fn migrations_step(&self) -> Option<crate::migrate::step::Context<'a>> {
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
    the_plan.hold(skip);
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
    let images = match pinned_images_for(rt, pinned, the_plan, gate_all).await {
        Ok(images) => images,
        Err(ended) => return Ok(ended),
    };
    Ok(execute(
        rt,
        pinned.desired,
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

/// The images a stored generation's plan runs, by their pinned IDs; or how its execute
/// ends before any step: a service without a pin or a pinned image that is gone fails it
/// (a tag may point elsewhere by now), an engine that does not answer is unreachable, and
/// a plan with nothing to do under `gate_all = false` is done. Both engines start here.
pub async fn pinned_images_for<R: Runtime>(
    rt: &R,
    pinned: Pinned<'_>,
    the_plan: &Plan,
    gate_all: bool,
) -> Result<Images, Executed> {
    let Pinned {
        target,
        desired,
        pins,
    } = pinned;
    let failed = |reason: String| Executed::before_any_step(Err(Failure::Gate(reason)));
    if let Some(s) = desired
        .services
        .values()
        .find(|s| !pins.contains_key(&s.image))
    {
        return Err(failed(format!(
            "generation {target} has no pinned image ID for service {:?} ({}); berth does not fall back to the tag, which may point elsewhere now",
            s.name, s.image
        )));
    }
    if the_plan.is_noop() && !gate_all {
        return Err(Executed::before_any_step(Ok(())));
    }
    match pinned_images(rt, pins).await {
        Ok(images) => Ok(images),
        Err(e) if e.is_unreachable() => Err(Executed::before_any_step(Err(Failure::of(e)))),
        Err(e) => Err(failed(e.to_string())),
    }
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
    let mut timings = Timings::new();
    let evidence = std::sync::Mutex::new(Vec::new());
    let steps = execute_steps(rt, desired, plan, &how, &mut timings, &evidence);
    let result = match tokio::time::timeout(deadline, steps).await {
        Ok(r) => r,
        Err(_) => Err(Failure::Gate(format!(
            "the converge did not finish within progress_deadline {}",
            crate::spec::duration::format(deadline)
        ))),
    };
    Executed {
        result,
        timings,
        evidence: evidence.into_inner().expect("evidence lock"),
    }
}

async fn execute_steps<R: Runtime>(
    rt: &R,
    desired: &DesiredState,
    plan: &Plan,
    how: &Execution<'_>,
    timings: &mut Timings,
    evidence: &std::sync::Mutex<Vec<Evidence>>,
) -> Result<(), Failure> {
    remove_unwanted(rt, plan, how).await?;
    let networks = ensure_networks(rt, desired).await?;

    // Every service's converge, from its first action to the end of its stability
    // window. Under the pipelined rollout (docs/design.md §4) the next level starts as
    // soon as every service of this one passed its probe once, and the windows run on
    // beside it; the generation is healthy only once every one of them has closed. Under
    // `stability = "before-dependents"` a level waits for its windows to close first.
    let started = std::sync::Mutex::new(BTreeMap::new());
    let levels = desired.levels();
    // When the migrations step began, while it runs: a converge that fails meanwhile
    // records it as cut short.
    let migrating_since = std::sync::Mutex::new(None);
    let shared = Shared {
        rt,
        desired,
        plan,
        how,
        networks: &networks,
        strict: desired.rollout.stability == crate::spec::Stability::BeforeDependents,
        started_at: &started,
        // Followed from before the first start, so no gate misses an event.
        watch: &Watch::start(rt, &desired.project.name),
        evidence,
    };
    let shared = &shared;
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
            if needs_schema(desired, level) {
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
            make_ahead(shared, level.iter().chain(next), &mut ahead, &mut driving);
            let mut readies = start_level(shared, level, &ahead, &mut running);
            let mut waiting: std::collections::BTreeSet<String> = level.iter().cloned().collect();
            while !waiting.is_empty() {
                // Biased: the level's own starts and gates are polled before the creates
                // made ahead, so they take their places among the engine calls first.
                tokio::select! {
                    biased;
                    Some((name, r)) = running.next() => {
                        waiting.remove(&name);
                        finished(&mut running, timings, name, r)?;
                    }
                    Some(name) = readies.next(), if !shared.strict => {
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
            if let Some(step) = migrations_after(shared, level)? {
                *migrating_since.lock().expect("migrations lock") = Some(now_ms());
                migrating = Some(step);
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
        record_cut(
            timings,
            started.into_inner().expect("started lock"),
            migrating_since.into_inner().expect("migrations lock"),
        );
    }
    result
}

/// Remove the containers of services no longer desired, all at once. Stopped first, so
/// a database shuts down cleanly; a paused container cannot take SIGTERM, and removal
/// kills it outright.
async fn remove_unwanted<R: Runtime>(
    rt: &R,
    plan: &Plan,
    how: &Execution<'_>,
) -> Result<(), Failure> {
    let removals = plan.steps.iter().filter(|s| s.action == Action::Remove);
    for r in join_all(removals.map(|step| async move {
        let c = step
            .container
            .as_ref()
            .expect("remove step has a container");
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
    Ok(())
}

/// Every network a service names, made at once if missing. With no service left, the
/// project's networks go too (never a volume).
async fn ensure_networks<R: Runtime>(rt: &R, desired: &DesiredState) -> Result<Networks, Failure> {
    let project = &desired.project.name;
    let mut wanted: Vec<&str> = desired
        .services
        .values()
        .flat_map(|s| s.networks.iter().map(String::as_str))
        .collect();
    wanted.sort();
    wanted.dedup();
    let networks: Networks =
        futures::future::try_join_all(wanted.into_iter().map(|n| async move {
            Ok::<_, RuntimeError>((n.to_string(), rt.ensure_network(n, project).await?))
        }))
        .await
        .map_err(Failure::of)?
        .into_iter()
        .collect();
    if desired.services.is_empty() {
        rt.remove_project_networks(project)
            .await
            .map_err(Failure::of)?;
    }
    Ok(networks)
}

/// What every service's converge in one execute reads.
struct Shared<'a, R> {
    rt: &'a R,
    desired: &'a DesiredState,
    plan: &'a Plan,
    how: &'a Execution<'a>,
    networks: &'a Networks,
    /// `stability = "before-dependents"`: a level waits for its windows to close.
    strict: bool,
    /// When each service's container started: a converge that fails while others are
    /// still gating records those too (`cut_ms`), so history shows what overlapped.
    started_at: &'a std::sync::Mutex<BTreeMap<String, i64>>,
    /// The project's events, for gates that judge only what the engine shows.
    watch: &'a Watch,
    /// What failed or dead containers left behind, captured before they are touched.
    evidence: &'a std::sync::Mutex<Vec<Evidence>>,
}

/// Does this level hold a dependent of the migrations step?
fn needs_schema(desired: &DesiredState, level: &[String]) -> bool {
    level.iter().any(|n| {
        desired.services[n]
            .depends_on
            .iter()
            .any(|d| d == MIGRATIONS_NODE)
    })
}

/// Begin making the containers of these services (a create or recreate) that are not
/// being made yet; `driving` polls them while the level below gates.
fn make_ahead<'a, 'n, R: Runtime>(
    shared: &'a Shared<'a, R>,
    names: impl Iterator<Item = &'n String>,
    ahead: &mut BTreeMap<String, Prep<'a>>,
    driving: &mut FuturesUnordered<NamedPrep<'a>>,
) {
    let Shared {
        rt,
        desired,
        plan,
        how,
        networks,
        ..
    } = *shared;
    for name in names {
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
}

/// Start every service of a level on its converge (into `running`); what it returns
/// yields each one's name once its probe first passed, or its converge ended.
fn start_level<'a, R: Runtime>(
    shared: &'a Shared<'a, R>,
    level: &'a [String],
    ahead: &BTreeMap<String, Prep<'a>>,
    running: &mut FuturesUnordered<ServiceRun<'a>>,
) -> FuturesUnordered<impl std::future::Future<Output = String> + 'a> {
    let readies = FuturesUnordered::new();
    for name in level {
        let s = &shared.desired.services[name];
        let (tx, rx) = tokio::sync::oneshot::channel();
        let gating = Gating {
            ready: (!shared.strict).then_some(tx),
            started_at: shared.started_at,
            prepared: ahead.get(name).cloned(),
            watch: shared.watch,
            evidence: shared.evidence,
        };
        running.push(Box::pin(async move {
            let Shared {
                rt,
                desired,
                plan,
                how,
                ..
            } = *shared;
            let r = converge_service(rt, desired, plan, s, how, gating).await;
            (s.name.clone(), r)
        }));
        readies.push(async move {
            // A closed channel (the converge ended, or never probes) is ready too: its
            // end arrives through `running`.
            let _ = rx.await;
            name.clone()
        });
    }
    readies
}

/// A converge that failed records what was under way when it ended: each service that
/// started without a timing of its own, and the migrations step if it ran.
fn record_cut(timings: &mut Timings, started: BTreeMap<String, i64>, migrating_since: Option<i64>) {
    let cut = now_ms();
    for (name, ms) in started {
        timings.entry(name).or_insert_with(|| Timing {
            started_ms: Some(ms),
            cut_ms: Some(cut),
            ..Timing::default()
        });
    }
    if let Some(t0) = migrating_since {
        timings
            .entry(MIGRATIONS_NODE.to_string())
            .or_insert_with(|| Timing {
                begin_ms: Some(t0),
                cut_ms: Some(cut),
                ..Timing::of("migrate")
            });
    }
}

/// The migrations step under way. Not `Send`: sqlx's connection futures cannot be proven
/// `Send` in a generic context (its `Acquire` bound is higher-ranked), and the converge
/// held this step across awaits before it was boxed too.
type Migrating<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Failure>> + 'a>>;

/// The migrations step, begun once this level (the database's) passed its probes; None
/// for any other level, or without a migrations step.
fn migrations_after<'a, R: Runtime>(
    shared: &'a Shared<'a, R>,
    level: &[String],
) -> Result<Option<Migrating<'a>>, Failure> {
    let Shared {
        rt, desired, how, ..
    } = *shared;
    let Some(m) = &desired.migrations else {
        return Ok(None);
    };
    if !level.contains(&m.service) {
        return Ok(None);
    }
    let Some(step) = how.migrations_step() else {
        return Ok(None);
    };
    if let Some(signal) = how.shutdown.signal() {
        return Err(Failure::Interrupted(signal));
    }
    Ok(Some(begin_migrations(rt, desired, m, step)))
}

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
    timings: &mut Timings,
    since: &std::sync::Mutex<Option<i64>>,
    r: Result<(), Failure>,
) -> Result<(), Failure> {
    *migrating = None;
    let begin = since
        .lock()
        .expect("migrations lock")
        .take()
        .unwrap_or_default();
    let end = Timing {
        begin_ms: Some(begin),
        end_ms: Some(now_ms()),
        ..Timing::of("migrate")
    };
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
    timings: &mut Timings,
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
    /// Where the evidence of a failed or dead container goes.
    evidence: &'a std::sync::Mutex<Vec<Evidence>>,
}

/// One service's converge, to the end of its gate, named.
type ServiceRun<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = (String, Result<Timing, (Failure, Timing)>)> + Send + 'a>,
>;

/// A service's timings, with when its container was asked for (`create_ms`) and made
/// (`created_ms`) when it was made ahead.
fn with_created(t: Timing, made: Option<Made>) -> Timing {
    match made {
        Some(m) => Timing {
            create_ms: Some(m.asked_ms),
            created_ms: Some(m.made_ms),
            ..t
        },
        None => t,
    }
}

/// A [`prepare`] under way, named.
type NamedPrep<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = (String, Result<Prepared, Failure>)> + Send + 'a>,
>;

/// A container made ahead: a failure to make it fails the converge at once, though its
/// level has not begun (its spec is bad whatever happens below).
fn made_ahead(
    running: &mut FuturesUnordered<ServiceRun<'_>>,
    timings: &mut Timings,
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
            let t = Timing {
                failed_ms: Some(now_ms()),
                ..Timing::of(action)
            };
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
    timings: &mut Timings,
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

/// Bring a service's container up for its gate: start it, or start the one made ahead
/// (for a recreate, in the old one's place). Its id, and when it was made if it was made
/// ahead; None for a noop that is not gated again.
async fn bring_up<R: Runtime>(
    rt: &R,
    s: &Service,
    step: &crate::plan::Step,
    how: &Execution<'_>,
    prepared: Option<Prep<'_>>,
    evidence: &std::sync::Mutex<Vec<Evidence>>,
) -> Result<Option<(String, Option<Made>)>, Failure> {
    let report = how.report;
    // A container of this very generation that died is restarted or replaced here (a
    // repair): what it left behind is kept first, since a start overwrites how it ended
    // and a recreate removes it. (One a revert replaces failed its gate, and was kept
    // then.)
    if let Some(old) = &step.container
        && old.generation == u64::try_from(how.generation).ok()
        && matches!(step.action, Action::Start | Action::Recreate)
        && matches!(
            old.state,
            crate::runtime::ContainerState::Exited | crate::runtime::ContainerState::Dead
        )
    {
        let kept = crate::evidence::capture(
            rt,
            crate::evidence::Subject {
                generation: how.generation,
                service: &s.name,
                id: &old.id,
                container: &old.name,
                cause: Cause::Died,
                probe: None,
            },
        )
        .await;
        evidence.lock().expect("evidence lock").push(kept);
    }
    let existing = || {
        step.container
            .as_ref()
            .expect("a noop or start step has a container")
            .id
            .clone()
    };
    match step.action {
        Action::Noop if !how.gate_all => Ok(None),
        Action::Noop => Ok(Some((existing(), None))),
        Action::Start => {
            let id = existing();
            rt.start_container(&id).await.map_err(Failure::of)?;
            report.service(&s.name, "started");
            Ok(Some((id, None)))
        }
        Action::Create | Action::Recreate => {
            // Made ahead, while the level below was gating (see [`prepare`]).
            let (id, made) = prepared
                .expect("a create or recreate is made ahead")
                .await?;
            if let (Action::Recreate, Some(old)) = (&step.action, &step.container) {
                // A paused container cannot take SIGTERM; removal kills it outright.
                if old.state != crate::runtime::ContainerState::Paused {
                    rt.stop_container(&old.id).await.map_err(Failure::of)?;
                }
                rt.remove_container(&old.id).await.map_err(Failure::of)?;
                rt.rename_container(&id, &s.container_name)
                    .await
                    .map_err(Failure::of)?;
                report.service(&s.name, &format!("recreated ({})", step.reason));
            }
            rt.start_container(&id).await.map_err(Failure::of)?;
            report.service(&s.name, "started");
            Ok(Some((id, Some(made))))
        }
        Action::Remove => unreachable!("removals are not per-service steps"),
    }
}

async fn converge_service<R: Runtime>(
    rt: &R,
    desired: &DesiredState,
    plan: &Plan,
    s: &Service,
    how: &Execution<'_>,
    gating: Gating<'_>,
) -> Result<Timing, (Failure, Timing)> {
    // `ready` lives until this converge returns: its sender dropped reads as "ready" to
    // the level loop, which must not start dependents while a failed gate's evidence is
    // still being kept.
    let Gating {
        mut ready,
        started_at,
        prepared,
        watch,
        evidence,
    } = gating;
    let report = how.report;
    let step = plan
        .step(&s.name)
        .expect("every desired service has a step");
    let t0 = now_ms();
    let has_healthcheck = how.images.get(&s.image).is_some_and(|i| i.1);
    let (id, made) = match bring_up(rt, s, step, how, prepared, evidence).await {
        Ok(Some(up)) => up,
        Ok(None) => return Ok(Timing::of("noop")),
        Err(f) => {
            let failed = Timing {
                failed_ms: Some(now_ms()),
                ..Timing::of(step.action.word())
            };
            return Err((f, failed));
        }
    };
    let started_ms = now_ms();
    started_at
        .lock()
        .expect("started lock")
        .insert(s.name.clone(), started_ms);
    let probe = effective_probe(s, has_healthcheck);
    let (deadline, min_healthy) = desired.gate_timing(s);
    let started = Instant::now();
    // What every outcome of the gate records: the step, begun and started.
    let begun = with_created(
        Timing {
            begin_ms: Some(t0),
            started_ms: Some(started_ms),
            ..Timing::of(step.action.word())
        },
        made,
    );
    let gated = tokio::select! {
        g = gate(rt, &id, s, probe.as_ref(), deadline, min_healthy, &mut ready, watch) => g,
        signal = how.shutdown.requested() => {
            report.service(&s.name, "stopped while gating");
            return Err((Failure::Interrupted(signal), begun));
        }
    };
    match gated {
        GateOutcome::Passed { after, probe } => {
            report.service(
                &s.name,
                &format!("healthy in {:.1} s ({probe})", after.as_secs_f64()),
            );
            Ok(Timing {
                healthy_ms: Some(started_ms + after.as_millis() as i64),
                gate_passed_ms: Some(now_ms()),
                gate_s: Some(started.elapsed().as_secs_f64()),
                ..begun
            })
        }
        GateOutcome::Unreachable { context, message } => {
            report.service(&s.name, "engine unreachable while gating");
            Err((Failure::Unreachable { context, message }, begun))
        }
        GateOutcome::Failed { reason, probe } => {
            report.service(&s.name, "FAILED its gate");
            // Kept before the revert removes the container; its last words go into the
            // reason, so the short cause is what a person reads first.
            let kept = crate::evidence::capture(
                rt,
                crate::evidence::Subject {
                    generation: how.generation,
                    service: &s.name,
                    id: &id,
                    container: &s.container_name,
                    cause: Cause::GateFailed,
                    probe: Some(probe),
                },
            )
            .await;
            let reason = match crate::evidence::last_line(&kept) {
                Some(line) => format!("{reason}; {line}"),
                None => reason,
            };
            evidence.lock().expect("evidence lock").push(kept);
            Err((
                Failure::Gate(reason),
                Timing {
                    failed_ms: Some(now_ms()),
                    ..begun
                },
            ))
        }
    }
}
