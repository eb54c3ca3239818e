//! `engine = "swarm"` (docs/swarm.md): the same desired state converged as Swarm
//! services through a Swarm manager, with berth's gates, generations and whole-stack
//! revert on top. Swarm schedules the tasks; berth never does.
//!
//! The executor has the shape of the one-host one ([`crate::converge`]), and
//! [`crate::reconcile`] keeps its policy (resume, poison, repair, revert) for both:
//!
//! - observe: the project's services (by the `berth.project` label), each standing in
//!   for a container in [`crate::plan`]'s terms ([`observe`]);
//! - plan: [`crate::plan::plan`] itself: a create is a `create_service`, a recreate or a
//!   start is an `update_service` of the same service (never a remove and create);
//! - execute: level by level in dependency order ([`execute`]), each service gated on
//!   Swarm's task states and its update status, and on berth's own probe of every task
//!   ([`gate`]);
//! - images run by registry digest (`repo@sha256:…`), resolved from the image IDs a
//!   generation pins ([`spec::digest_reference`]); Swarm's own rollback is never asked for
//!   (`FailureAction = pause`), the revert is berth's.
//!
//! # Layout
//! - `spec`: a [`Service`] as a Swarm `ServiceSpec` (pure).
//! - `gate`: the verdict on a service's tasks (pure), and the loop that asks for them.
//! - `check`: each service's replicas and probes now, for `berth status`.
//! - `tasks`: the node, state and probe of each task now, for `berth status`.
//! - `files`: configs and secrets, named by content hash, made before and pruned after.
//! - `execute`: removals, overlay networks, then each level's creates and updates.

pub mod check;
pub mod execute;
pub mod files;
pub mod gate;
pub mod local;
pub mod spec;
pub mod tasks;

use std::collections::{BTreeMap, HashMap};

use bollard::Docker;
use bollard::query_parameters::{ListServicesOptionsBuilder, ListTasksOptionsBuilder};

use crate::converge::ConvergeError;
use crate::images::Pins;
use crate::observe::Observed;
use crate::runtime::docker::api;
use crate::runtime::{ContainerState, ContainerSummary, Runtime, RuntimeError};
use crate::spec::{
    DesiredState, LABEL_CONFIG_HASH, LABEL_GENERATION, LABEL_PROJECT, LABEL_SERVICE,
};

pub use execute::{converge_to_pinned, execute, execute_pinned};

/// The image ID a service's tasks run, on the service: what the plan compares with the
/// desired image's ID (the spec itself names the registry digest).
pub const LABEL_IMAGE_ID: &str = "berth.image-id";

/// [`spec::spec_hash`] of the spec berth set, on the service: a spec that no longer
/// hashes so was changed by hand, though berth's other labels survived.
pub const LABEL_SPEC_HASH: &str = "berth.spec-hash";

#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error(
        "engine = \"swarm\": the Docker engine berth talks to is not a Swarm manager (its swarm state is {state:?}); run berth against a manager, or `docker swarm init` / `docker swarm join` this engine first. Nothing was changed"
    )]
    NotManager { state: String },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl From<SwarmError> for ConvergeError {
    fn from(e: SwarmError) -> ConvergeError {
        match e {
            SwarmError::Runtime(e) => ConvergeError::Runtime(e),
            not_manager => ConvergeError::Runtime(RuntimeError::Api {
                context: "checking the Swarm premise".into(),
                message: not_manager.to_string(),
            }),
        }
    }
}

/// A connection to a Swarm manager.
#[derive(Clone)]
pub struct Swarm {
    pub(crate) docker: Docker,
    /// The manager's own node: its tasks' host ports are reached on 127.0.0.1.
    pub(crate) node_id: String,
    pub(crate) http: reqwest::Client,
}

impl Swarm {
    /// Connect as [`crate::runtime::docker::DockerRuntime`] does (`DOCKER_HOST` or the local
    /// socket, the API version negotiated), and check the premise: this engine is a
    /// Swarm manager. Nothing is changed either way.
    pub async fn connect() -> Result<Swarm, SwarmError> {
        let docker = Docker::connect_with_defaults()
            .map_err(api("connecting to the Docker engine"))?
            .with_timeout(std::time::Duration::from_secs(60))
            .negotiate_version()
            .await
            .map_err(api("negotiating the Docker API version"))?;
        let info = docker
            .info()
            .await
            .map_err(api("asking the engine for its swarm state"))?;
        let swarm = info.swarm.unwrap_or_default();
        let state = swarm
            .local_node_state
            .map(|s| s.to_string())
            .unwrap_or_default();
        if state != "active" || swarm.control_available != Some(true) {
            let state = match (state.as_str(), swarm.control_available) {
                ("active", _) => "active, as a worker".to_string(),
                ("", _) => "inactive".to_string(),
                (s, _) => s.to_string(),
            };
            return Err(SwarmError::NotManager { state });
        }
        Ok(Swarm {
            docker,
            node_id: swarm.node_id.unwrap_or_default(),
            http: crate::notify::tls::builder()
                .no_proxy()
                .build()
                .expect("http client builds"),
        })
    }

    /// The project's services (by label), with their status (running and desired tasks).
    pub(crate) async fn services(
        &self,
        project: &str,
    ) -> Result<Vec<bollard::models::Service>, RuntimeError> {
        let filters = HashMap::from([("label", vec![format!("{LABEL_PROJECT}={project}")])]);
        self.docker
            .list_services(Some(
                ListServicesOptionsBuilder::new()
                    .filters(&filters)
                    .status(true)
                    .build(),
            ))
            .await
            .map_err(api(format!("listing the services of project {project:?}")))
    }

    /// Every task Swarm keeps of one service (running, and the ended ones it remembers).
    pub(crate) async fn tasks(
        &self,
        service: &str,
    ) -> Result<Vec<bollard::models::Task>, RuntimeError> {
        let filters = HashMap::from([("service", vec![service.to_string()])]);
        self.docker
            .list_tasks(Some(
                ListTasksOptionsBuilder::new().filters(&filters).build(),
            ))
            .await
            .map_err(api(format!("listing the tasks of service {service}")))
    }

    /// The project's services as the plan sees containers (see [`summary`]).
    pub async fn list_project(
        &self,
        desired: &DesiredState,
    ) -> Result<Vec<ContainerSummary>, RuntimeError> {
        Ok(self
            .services(&desired.project.name)
            .await?
            .iter()
            .map(|s| summary(s, desired))
            .collect())
    }

    /// Running and desired tasks of each of the project's services, by service name:
    /// `berth status`'s `2/2`. Tasks Swarm is shutting down do not count, though they
    /// may still run.
    pub async fn replicas(
        &self,
        project: &str,
    ) -> Result<BTreeMap<String, (u64, u64)>, RuntimeError> {
        let mut out = BTreeMap::new();
        for s in self.services(project).await? {
            let spec = s.spec.unwrap_or_default();
            let (Some(name), Some(id)) = (
                spec.labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_SERVICE))
                    .cloned(),
                s.id,
            ) else {
                continue;
            };
            let desired = spec
                .mode
                .and_then(|m| m.replicated)
                .and_then(|r| r.replicas)
                .unwrap_or(0);
            let running = self
                .tasks(&id)
                .await?
                .iter()
                .filter(|t| {
                    t.desired_state == Some(bollard::models::TaskState::RUNNING)
                        && t.status.as_ref().and_then(|st| st.state)
                            == Some(bollard::models::TaskState::RUNNING)
                })
                .count();
            out.insert(name, (running as u64, desired.max(0) as u64));
        }
        Ok(out)
    }
}

/// A Swarm service in the terms [`crate::plan::plan`] plans over: its name, berth's
/// labels, and the image ID it runs. Its state is `running` unless its replica count is
/// not the desired one (scaled by hand), or its spec no longer hashes as the one berth
/// set (a `docker service update` by hand): then the plan's "start" puts the spec back.
/// Swarm's own task restarts are not drift: they show in `berth status`, not here.
pub fn summary(s: &bollard::models::Service, desired: &DesiredState) -> ContainerSummary {
    let spec = s.spec.clone().unwrap_or_default();
    let labels = spec.labels.clone().unwrap_or_default();
    let service = labels.get(LABEL_SERVICE).cloned();
    let replicas = spec
        .mode
        .as_ref()
        .and_then(|m| m.replicated.as_ref())
        .and_then(|r| r.replicas)
        .unwrap_or(0);
    let wanted = service
        .as_deref()
        .and_then(|n| desired.services.get(n))
        .map(|d| d.swarm.replicas as i64);
    let changed = labels
        .get(LABEL_SPEC_HASH)
        .is_some_and(|h| *h != spec::spec_hash(&spec));
    let state = match wanted {
        Some(w) if w != replicas => {
            ContainerState::Other(format!("scaled to {replicas} of {w} replicas"))
        }
        _ if changed => {
            ContainerState::Other("changed by hand (its spec is not the one berth set)".into())
        }
        _ => ContainerState::Running,
    };
    ContainerSummary {
        id: s.id.clone().unwrap_or_default(),
        name: spec.name.clone().unwrap_or_default(),
        service,
        config_hash: labels.get(LABEL_CONFIG_HASH).cloned(),
        generation: labels.get(LABEL_GENERATION).and_then(|g| g.parse().ok()),
        image_id: labels.get(LABEL_IMAGE_ID).cloned().unwrap_or_default(),
        state,
        health: None,
        published: Vec::new(),
    }
}

/// Observed state under Swarm: the project's services, and the desired images as they
/// are on the manager (pulled or not), as [`crate::observe::observe`] reads them.
pub async fn observe<R: Runtime>(
    rt: &R,
    sw: &Swarm,
    desired: &DesiredState,
) -> Result<Observed, RuntimeError> {
    let mut observed = crate::observe::observe(rt, desired).await?;
    observed.containers = sw.list_project(desired).await?;
    Ok(observed)
}

/// As [`crate::converge::observed_with_pins`]: a stored generation's services, planned
/// against its pinned image IDs.
pub async fn observed_with_pins(
    sw: &Swarm,
    desired: &DesiredState,
    pins: &Pins,
) -> Result<Observed, RuntimeError> {
    Ok(crate::converge::with_pins(
        sw.list_project(desired).await?,
        desired,
        pins,
    ))
}

/// A service name held by a service berth does not own is an error before anything
/// changes (as a container name is on one host).
pub async fn check_names(
    sw: &Swarm,
    desired: &DesiredState,
    plan: &crate::plan::Plan,
) -> Result<(), ConvergeError> {
    let creates: Vec<&crate::spec::Service> = plan
        .steps
        .iter()
        .filter(|s| s.action == crate::plan::Action::Create)
        .map(|s| &desired.services[&s.service])
        .collect();
    if creates.is_empty() {
        return Ok(());
    }
    let all = sw
        .docker
        .list_services(None::<bollard::query_parameters::ListServicesOptions>)
        .await
        .map_err(api("listing the swarm's services"))?;
    for s in creates {
        let holder = all.iter().find(|x| {
            x.spec.as_ref().and_then(|sp| sp.name.as_deref()) == Some(s.container_name.as_str())
        });
        if let Some(h) = holder {
            let project = h
                .spec
                .as_ref()
                .and_then(|sp| sp.labels.as_ref())
                .and_then(|l| l.get(LABEL_PROJECT))
                .cloned();
            if project.as_deref() != Some(desired.project.name.as_str()) {
                let id = h.id.clone().unwrap_or_default();
                return Err(ConvergeError::NameClash {
                    name: s.container_name.clone(),
                    service: s.name.clone(),
                    id: id[..id.len().min(12)].to_string(),
                    project,
                });
            }
        }
    }
    Ok(())
}
