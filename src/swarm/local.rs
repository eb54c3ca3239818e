//! The containers on this host as the one-host code sees them, Swarm's tasks included:
//! what the schema's work (the migrations step, its revert, `berth backup`, `restore`,
//! `migrate status` and `plan`'s schema line) needs of the database under
//! `engine = "swarm"`. Under `engine = "docker"` it is the runtime itself.
//!
//! A task's container carries no `berth.project` label (so the one-host code never
//! mistakes it for one of its own), and its address on an overlay network cannot be
//! reached from the host. [`Local`] adds the project's tasks **on this node** to
//! [`Runtime::list_project`], and gives a task container's address on `docker_gwbridge`
//! (the bridge Swarm joins every task to for its traffic out, which the host routes to)
//! instead of its overlay address. So berth reaches PostgreSQL as it does on one host,
//! with no port published, and `pg_dump`/`psql` run in the task's container by `exec`.
//! The database's task must therefore run on the manager berth talks to
//! (`placement.constraints = ["node.role == manager"]`); the loader asks for a
//! constraint, and a database found on another node is said so.
//!
//! A migration job's one-shot container joins the database's overlay network, which
//! berth makes attachable for that.

use std::collections::{BTreeMap, HashMap};

use bollard::query_parameters::ListTasksOptionsBuilder;

use super::Swarm;
use crate::runtime::docker::api;
use crate::runtime::{
    ContainerDetails, ContainerState, ContainerSummary, EngineVersion, Events, ExecOutcome,
    ImageInfo, LogOptions, LogStream, NameHolder, Networks, ProbeResult, PullProgress, Runtime,
    RuntimeError,
};
use crate::spec::{Build, DesiredState, Engine, LABEL_SERVICE, Probe, Service};

/// The bridge Swarm attaches each task container to for traffic leaving the node.
pub const GWBRIDGE: &str = "docker_gwbridge";

/// The runtime, with this node's Swarm tasks of the project seen as its containers
/// when the desired state runs on Swarm.
pub struct Local<'a, R> {
    rt: &'a R,
    sw: Option<Swarm>,
}

impl<'a, R: Runtime> Local<'a, R> {
    /// The view `desired` needs: under `engine = "swarm"` connected to the manager
    /// (which must be one), else `rt` as it is.
    pub async fn of(rt: &'a R, desired: &DesiredState) -> Result<Local<'a, R>, super::SwarmError> {
        let sw = match desired.project.engine {
            Engine::Docker => None,
            Engine::Swarm => Some(Swarm::connect().await?),
        };
        Ok(Local { rt, sw })
    }

    /// Over a Swarm already connected.
    pub fn on(rt: &'a R, sw: &Swarm) -> Local<'a, R> {
        Local {
            rt,
            sw: Some(sw.clone()),
        }
    }
}

impl Swarm {
    /// The project's tasks that run on this node, as containers: one call for the
    /// services, one for the tasks.
    async fn local_tasks(&self, project: &str) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let services: HashMap<String, String> = self
            .services(project)
            .await?
            .into_iter()
            .filter_map(|s| {
                let name = s.spec?.labels?.get(LABEL_SERVICE)?.clone();
                Some((s.id?, name))
            })
            .collect();
        if services.is_empty() {
            return Ok(Vec::new());
        }
        let filters = HashMap::from([
            ("node", vec![self.node_id.clone()]),
            ("desired-state", vec!["running".to_string()]),
        ]);
        let tasks = self
            .docker
            .list_tasks(Some(
                ListTasksOptionsBuilder::new().filters(&filters).build(),
            ))
            .await
            .map_err(api("listing the tasks on this node"))?;
        Ok(tasks
            .into_iter()
            .filter_map(|t| {
                let service = services.get(t.service_id.as_deref()?)?.clone();
                let status = t.status?;
                let id = status.container_status?.container_id?;
                let state = match status.state {
                    Some(bollard::models::TaskState::RUNNING) => ContainerState::Running,
                    other => {
                        ContainerState::Other(other.map(|s| s.to_string()).unwrap_or_default())
                    }
                };
                Some(ContainerSummary {
                    id,
                    name: format!("{service} (task {})", t.id.unwrap_or_default()),
                    service: Some(service),
                    config_hash: None,
                    generation: None,
                    image_id: String::new(),
                    state,
                    health: None,
                    published: Vec::new(),
                })
            })
            .collect())
    }

    /// Each container's address on [`GWBRIDGE`], by container ID: one call.
    async fn gwbridge_addresses(&self) -> Result<BTreeMap<String, String>, RuntimeError> {
        let net = self
            .docker
            .inspect_network(
                GWBRIDGE,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .map_err(api(format!("inspecting network {GWBRIDGE}")))?;
        Ok(net
            .containers
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(id, c)| {
                let cidr = c.ipv4_address?;
                let ip = cidr.split('/').next()?.to_string();
                (!ip.is_empty()).then_some((id, ip))
            })
            .collect())
    }
}

impl<R: Runtime> Runtime for Local<'_, R> {
    fn engine_version(&self) -> impl Future<Output = Result<EngineVersion, RuntimeError>> + Send {
        self.rt.engine_version()
    }

    async fn list_project(&self, project: &str) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let mut all = self.rt.list_project(project).await?;
        if let Some(sw) = &self.sw {
            all.extend(sw.local_tasks(project).await?);
        }
        Ok(all)
    }

    fn name_holders(
        &self,
        names: &[String],
    ) -> impl Future<Output = Result<BTreeMap<String, NameHolder>, RuntimeError>> + Send {
        self.rt.name_holders(names)
    }

    fn inspect_image(
        &self,
        reference: &str,
    ) -> impl Future<Output = Result<Option<ImageInfo>, RuntimeError>> + Send {
        self.rt.inspect_image(reference)
    }

    fn pull_image(
        &self,
        reference: &str,
        progress: &(dyn Fn(PullProgress) + Sync),
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        self.rt.pull_image(reference, progress)
    }

    fn build_image(
        &self,
        reference: &str,
        build: &Build,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        self.rt.build_image(reference, build)
    }

    fn ensure_network(
        &self,
        name: &str,
        project: &str,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send {
        // The project's overlay network is labelled with it, as a bridge network is.
        self.rt.ensure_network(name, project)
    }

    fn remove_project_networks(
        &self,
        project: &str,
    ) -> impl Future<Output = Result<Vec<String>, RuntimeError>> + Send {
        self.rt.remove_project_networks(project)
    }

    fn ensure_volume(
        &self,
        name: &str,
        project: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        self.rt.ensure_volume(name, project)
    }

    fn create_container(
        &self,
        name: &str,
        service: &Service,
        image: &str,
        labels: &BTreeMap<String, String>,
        networks: &Networks,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send {
        self.rt
            .create_container(name, service, image, labels, networks)
    }

    fn start_container(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        self.rt.start_container(id)
    }

    fn stop_container(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        self.rt.stop_container(id)
    }

    fn remove_container(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        self.rt.remove_container(id)
    }

    fn rename_container(
        &self,
        id: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        self.rt.rename_container(id, name)
    }

    async fn inspect_container(
        &self,
        id: &str,
        network: &str,
    ) -> Result<ContainerDetails, RuntimeError> {
        let mut details = self.rt.inspect_container(id, network).await?;
        if let Some(sw) = &self.sw
            && let Some(ip) = sw.gwbridge_addresses().await?.remove(id)
        {
            details.ip = Some(ip);
        }
        Ok(details)
    }

    fn container_logs(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send {
        self.rt.container_logs(id)
    }

    fn events(&self, project: &str) -> Events {
        self.rt.events(project)
    }

    fn log_stream(&self, id: &str, options: &LogOptions) -> LogStream {
        self.rt.log_stream(id, options)
    }

    fn probe(
        &self,
        container: &ContainerDetails,
        probe: &Probe,
        timeout: std::time::Duration,
    ) -> impl Future<Output = ProbeResult> + Send {
        self.rt.probe(container, probe, timeout)
    }

    fn exec_stream(
        &self,
        id: &str,
        command: &[String],
        env: &[String],
        stdin: Option<&mut (dyn std::io::Read + Send)>,
        stdout: &mut (dyn std::io::Write + Send),
    ) -> impl Future<Output = Result<ExecOutcome, RuntimeError>> + Send {
        self.rt.exec_stream(id, command, env, stdin, stdout)
    }
}
