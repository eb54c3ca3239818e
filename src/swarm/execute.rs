//! The swarm executor: carry a [`Plan`] out as Swarm services, with the shape of
//! [`crate::converge::execute`] (its [`Execution`] in, its [`Executed`] out), so
//! [`crate::reconcile`]'s policy over it is the same.
//!
//! Order of work: services nobody wants are removed; the project's overlay networks are
//! found (by label) or made; then each DAG level in turn, its services at once: created,
//! or updated in place (Swarm replaces the tasks by its `UpdateConfig`), each gated
//! ([`super::gate`]) through its stability window before the next level begins.
//! A stop request ends the converge at the level's gates or before the next level.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::{ListNetworksOptionsBuilder, UpdateServiceOptionsBuilder};

use super::Swarm;
use super::gate::{Gate, gate};
use super::local::Local;
use super::spec::{Image, digest_reference, service_spec};
use crate::converge::{ConvergeError, Executed, Execution, Failure, Pinned};
use crate::gate::effective_probe;
use crate::plan::{Action, Plan, plan};
use crate::runtime::docker::api;
use crate::runtime::{Runtime, RuntimeError};
use crate::spec::{DesiredState, LABEL_PROJECT, MIGRATIONS_NODE, Service};
use crate::store::{Generation, Timing, Timings, now_ms};

/// Carry out `plan` within the desired state's `progress_deadline`.
pub async fn execute<R: Runtime>(
    rt: &R,
    sw: &Swarm,
    desired: &DesiredState,
    plan: &Plan,
    how: Execution<'_>,
) -> Executed {
    let deadline = desired.rollout.progress_deadline;
    let mut timings = Timings::new();
    let steps = execute_steps(rt, sw, desired, plan, &how, &mut timings);
    let result = match tokio::time::timeout(deadline, steps).await {
        Ok(r) => r,
        Err(_) => Err(Failure::Gate(format!(
            "the converge did not finish within progress_deadline {}",
            crate::spec::duration::format(deadline)
        ))),
    };
    if result.is_ok()
        && let crate::converge::SchemaStep::Run(store) = &how.schema
    {
        prune_files(sw, store, desired, &how).await;
    }
    Executed {
        result,
        timings,
        evidence: Vec::new(),
    }
}

async fn execute_steps<R: Runtime>(
    rt: &R,
    sw: &Swarm,
    desired: &DesiredState,
    plan: &Plan,
    how: &Execution<'_>,
    timings: &mut Timings,
) -> Result<(), Failure> {
    for step in plan.steps.iter().filter(|s| s.action == Action::Remove) {
        let Some(c) = &step.container else { continue };
        match sw.docker.delete_service(&c.id).await {
            Ok(()) => how
                .report
                .service(&step.service, &format!("removed ({})", step.reason)),
            Err(e) => {
                let e = api(format!("removing service {}", c.name))(e);
                if !matches!(&e, RuntimeError::Api { message, .. } if message.contains("not found"))
                {
                    return Err(Failure::of(e));
                }
            }
        }
    }
    if desired.services.is_empty() {
        remove_networks(sw, &desired.project.name).await;
        return Ok(());
    }
    let networks = ensure_networks(sw, desired).await.map_err(Failure::of)?;
    for level in desired.levels() {
        if let Some(signal) = how.shutdown.signal() {
            return Err(Failure::Interrupted(signal));
        }
        let runs = level.iter().map(|name| {
            converge_service(sw, desired, plan, &desired.services[name], how, &networks)
        });
        let ended = tokio::select! {
            ended = futures::future::join_all(runs) => ended,
            signal = how.shutdown.requested() => return Err(Failure::Interrupted(signal)),
        };
        let mut failure: Option<Failure> = None;
        for (name, r) in level.iter().zip(ended) {
            let t = match r {
                Ok(t) => t,
                Err((f, t)) => {
                    failure = Some(match failure {
                        Some(prev) if rank(&prev) >= rank(&f) => prev,
                        _ => f,
                    });
                    t
                }
            };
            timings.insert(name.clone(), t);
        }
        if let Some(f) = failure {
            return Err(f);
        }
        migrations_after(rt, sw, desired, &level, how, timings).await?;
    }
    Ok(())
}

/// The migrations step, once the database's level passed its gates (the levels that
/// need the schema come after it): run as on one host, through [`Local`], which sees
/// the database's task on this node as its container. It fails the converge as a gate
/// does; a stop request ends it as it ends a level.
async fn migrations_after<R: Runtime>(
    rt: &R,
    sw: &Swarm,
    desired: &DesiredState,
    level: &[String],
    how: &Execution<'_>,
    timings: &mut Timings,
) -> Result<(), Failure> {
    let Some(m) = &desired.migrations else {
        return Ok(());
    };
    let Some(step) = how.migrations_step() else {
        return Ok(());
    };
    if !level.contains(&m.service) {
        return Ok(());
    }
    if let Some(signal) = how.shutdown.signal() {
        return Err(Failure::Interrupted(signal));
    }
    let local = Local::on(rt, sw);
    let begin = now_ms();
    let run = crate::migrate::step::migrations_step(&local, desired, m, &step);
    let r = tokio::select! {
        r = run => r.map_err(Failure::from),
        signal = how.shutdown.requested() => {
            timings.insert(MIGRATIONS_NODE.to_string(), Timing {
                begin_ms: Some(begin),
                cut_ms: Some(now_ms()),
                ..Timing::of("migrate")
            });
            return Err(Failure::Interrupted(signal));
        }
    };
    timings.insert(
        MIGRATIONS_NODE.to_string(),
        Timing {
            begin_ms: Some(begin),
            end_ms: Some(now_ms()),
            ..Timing::of("migrate")
        },
    );
    r
}

/// Once a generation is healthy: the project's configs and secrets that none of its
/// newest generations uses go (a revert within them finds its own by name).
async fn prune_files(
    sw: &Swarm,
    store: &crate::store::Store,
    desired: &DesiredState,
    how: &Execution<'_>,
) {
    let project = &desired.project.name;
    let Ok(history) = store.history(Some(project)).await else {
        return;
    };
    let mut kept: Vec<DesiredState> = history
        .iter()
        .rev()
        .filter(|g| g.id <= how.generation)
        .take(super::files::KEEP_GENERATIONS)
        .filter_map(|g| g.desired().ok())
        .collect();
    kept.push(desired.clone());
    for name in super::files::prune(sw, project, &kept).await {
        how.report.line(&format!(
            "removed {name} (no generation of the newest {} uses it)",
            super::files::KEEP_GENERATIONS
        ));
    }
}

/// Of failures at once, a stop outranks an engine gone, which outranks a gate failure.
fn rank(f: &Failure) -> u8 {
    match f {
        Failure::Interrupted(_) => 2,
        Failure::Unreachable { .. } => 1,
        Failure::Gate(_) => 0,
    }
}

/// One service: created, or updated in place, then gated. A noop is gated only when
/// every service must be (`gate_all`: a resumed converge proves nothing converged).
async fn converge_service(
    sw: &Swarm,
    desired: &DesiredState,
    plan: &Plan,
    s: &Service,
    how: &Execution<'_>,
    networks: &BTreeMap<String, String>,
) -> Result<Timing, (Failure, Timing)> {
    let step = plan
        .step(&s.name)
        .expect("every desired service has a step");
    if step.action == Action::Noop && !how.gate_all {
        return Ok(Timing::of("noop"));
    }
    let begun = Timing {
        begin_ms: Some(now_ms()),
        ..Timing::of(step.action.word())
    };
    let fail = |f: Failure, t: &Timing| {
        how.report.service(&s.name, "FAILED");
        (
            f,
            Timing {
                failed_ms: Some(now_ms()),
                ..t.clone()
            },
        )
    };
    let has_healthcheck = how.images.get(&s.image).is_some_and(|i| i.1);
    let before: BTreeSet<String> = match step.action {
        Action::Create => BTreeSet::new(),
        _ => sw
            .tasks(&s.container_name)
            .await
            .map_err(|e| fail(Failure::of(e), &begun))?
            .into_iter()
            .filter_map(|t| t.id)
            .collect(),
    };
    if step.action != Action::Noop {
        apply_spec(sw, desired, s, step, how, networks)
            .await
            .map_err(|f| fail(f, &begun))?;
    }
    let started_ms = now_ms();
    let probe = effective_probe(s, has_healthcheck);
    let (healthy_deadline, min_healthy_time) = desired.gate_timing(s);
    let gated = tokio::select! {
        g = gate(sw, Gate {
            name: &s.container_name,
            service: s,
            generation: how.generation,
            replicas: s.swarm.replicas,
            probe: probe.as_ref(),
            healthy_deadline,
            min_healthy_time,
            before: &before,
        }) => g,
        signal = how.shutdown.requested() => {
            how.report.service(&s.name, "stopped while gating");
            return Err((Failure::Interrupted(signal), begun));
        }
    };
    let begun = Timing {
        started_ms: Some(started_ms),
        ..begun
    };
    match gated {
        Ok((after, passed)) => {
            how.report.service(
                &s.name,
                &format!("healthy in {:.1} s ({passed})", after.as_secs_f64()),
            );
            Ok(Timing {
                healthy_ms: Some(started_ms + after.as_millis() as i64),
                gate_passed_ms: Some(now_ms()),
                gate_s: Some((now_ms() - started_ms) as f64 / 1000.0),
                ..begun
            })
        }
        Err(f) => {
            if matches!(f, Failure::Gate(_)) {
                how.report.service(&s.name, "FAILED its gate");
            }
            Err((
                f,
                Timing {
                    failed_ms: Some(now_ms()),
                    ..begun
                },
            ))
        }
    }
}

/// Create the service, or update it in place to `s` (never removed and made again:
/// Swarm replaces its tasks by its update order).
async fn apply_spec(
    sw: &Swarm,
    desired: &DesiredState,
    s: &Service,
    step: &crate::plan::Step,
    how: &Execution<'_>,
    networks: &BTreeMap<String, String>,
) -> Result<(), Failure> {
    let Some((image_id, _)) = how.images.get(&s.image) else {
        return Err(Failure::Gate(format!(
            "no image ID is known for service {:?} ({}); not running it by tag",
            s.name, s.image
        )));
    };
    let digest = registry_digest(sw, &s.image, image_id).await?;
    // Configs and secrets exist before the spec that points at them.
    let file_ids = super::files::ensure(sw, desired, s).await?;
    let spec = service_spec(
        desired,
        s,
        &Image {
            id: image_id,
            digest_reference: &digest,
        },
        how.generation,
        networks,
        &file_ids,
    );
    if step.action == Action::Create {
        sw.docker
            .create_service(spec, None)
            .await
            .map_err(|e| Failure::of(api(format!("creating service {}", s.container_name))(e)))?;
        how.report.service(
            &s.name,
            &format!(
                "created service {} (replicas: {})",
                s.container_name, s.swarm.replicas
            ),
        );
        return Ok(());
    }
    let current = sw
        .docker
        .inspect_service(&s.container_name, None)
        .await
        .map_err(|e| Failure::of(api(format!("inspecting service {}", s.container_name))(e)))?;
    let version = current.version.and_then(|v| v.index).unwrap_or(0);
    sw.docker
        .update_service(
            &s.container_name,
            spec,
            UpdateServiceOptionsBuilder::new()
                .version(version as i32)
                .build(),
            None,
        )
        .await
        .map_err(|e| Failure::of(api(format!("updating service {}", s.container_name))(e)))?;
    how.report
        .service(&s.name, &format!("updated in place ({})", step.reason));
    Ok(())
}

/// The registry digest reference of the image `reference` pinned as `image_id`: what every
/// node pulls. An image that was never pushed has none, and Swarm cannot run it on
/// another node: that is an error that says so.
async fn registry_digest(sw: &Swarm, reference: &str, image_id: &str) -> Result<String, Failure> {
    let image =
        sw.docker.inspect_image(image_id).await.map_err(|e| {
            Failure::of(api(format!("inspecting image {reference} ({image_id})"))(e))
        })?;
    digest_reference(reference, &image.repo_digests.unwrap_or_default()).ok_or_else(|| {
        Failure::Gate(format!(
            "image {reference} ({image_id}) has no registry digest for its repository: every Swarm node pulls it by digest, so push it first (docker push {reference})"
        ))
    })
}

/// The project's overlay networks, by the name the desired state writes: found by label,
/// or made (attachable, so a one-off container can join them).
async fn ensure_networks(
    sw: &Swarm,
    desired: &DesiredState,
) -> Result<BTreeMap<String, String>, RuntimeError> {
    let project = &desired.project.name;
    let names: BTreeSet<&String> = desired
        .services
        .values()
        .flat_map(|s| &s.networks)
        .collect();
    let mut out = BTreeMap::new();
    for name in names {
        let filters = HashMap::from([
            ("name", vec![name.clone()]),
            ("label", vec![format!("{LABEL_PROJECT}={project}")]),
            ("driver", vec!["overlay".to_string()]),
        ]);
        let found = sw
            .docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::new().filters(&filters).build(),
            ))
            .await
            .map_err(api(format!("listing networks named {name}")))?
            .into_iter()
            .find(|n| n.name.as_deref() == Some(name.as_str()))
            .and_then(|n| n.id);
        let id = match found {
            Some(id) => id,
            None => {
                sw.docker
                    .create_network(NetworkCreateRequest {
                        name: name.clone(),
                        driver: Some("overlay".into()),
                        attachable: Some(true),
                        labels: Some(HashMap::from([(
                            LABEL_PROJECT.to_string(),
                            project.clone(),
                        )])),
                        ..Default::default()
                    })
                    .await
                    .map_err(api(format!("creating overlay network {name}")))?
                    .id
            }
        };
        out.insert(name.clone(), id);
    }
    Ok(out)
}

/// After every service is removed: the project's overlay networks, once their tasks are
/// gone (Swarm stops them after the service goes). One that stays busy is left.
async fn remove_networks(sw: &Swarm, project: &str) {
    let filters = HashMap::from([
        ("label", vec![format!("{LABEL_PROJECT}={project}")]),
        ("driver", vec!["overlay".to_string()]),
    ]);
    for _ in 0..20 {
        let Ok(nets) = sw
            .docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::new().filters(&filters).build(),
            ))
            .await
        else {
            return;
        };
        let mut left = 0;
        for n in nets {
            if let Some(id) = n.id
                && sw.docker.remove_network(&id).await.is_err()
            {
                left += 1;
            }
        }
        if left == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// As [`crate::converge::converge_to_pinned`]: put the project's services on a stored
/// generation's spec with its pinned images, gated, labelled `generation`.
#[allow(clippy::too_many_arguments)]
pub async fn converge_to_pinned<R: Runtime>(
    rt: &R,
    sw: &Swarm,
    target: &Generation,
    generation: i64,
    gate_all: bool,
    skip: &BTreeSet<String>,
    report: &crate::report::Reporter,
    shutdown: &crate::shutdown::Shutdown,
) -> Result<Executed, ConvergeError> {
    let desired = target.desired()?;
    let pins = target.pins();
    let observed = super::observed_with_pins(sw, &desired, &pins).await?;
    let mut the_plan = plan(&desired, &observed);
    the_plan.hold(skip);
    let pinned = Pinned {
        target: target.id,
        desired: &desired,
        pins: &pins,
    };
    execute_pinned(
        rt, sw, pinned, &the_plan, generation, gate_all, report, shutdown,
    )
    .await
}

/// As [`crate::converge::execute_pinned`]: carry out a plan made against a stored
/// generation, with its pinned image IDs (each run by its registry digest).
#[allow(clippy::too_many_arguments)]
pub async fn execute_pinned<R: Runtime>(
    rt: &R,
    sw: &Swarm,
    pinned: Pinned<'_>,
    the_plan: &Plan,
    generation: i64,
    gate_all: bool,
    report: &crate::report::Reporter,
    shutdown: &crate::shutdown::Shutdown,
) -> Result<Executed, ConvergeError> {
    let images = match crate::converge::pinned_images_for(rt, pinned, the_plan, gate_all).await {
        Ok(images) => images,
        Err(ended) => return Ok(ended),
    };
    Ok(execute(
        rt,
        sw,
        pinned.desired,
        the_plan,
        Execution {
            images: &images,
            generation,
            gate_all,
            report,
            shutdown,
            schema: crate::converge::SchemaStep::Skip,
        },
    )
    .await)
}
