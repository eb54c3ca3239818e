//! [`Runtime`] over the Docker Engine API, through bollard.
//!
//! The API version is negotiated (this host's engine speaks 1.41). Every API call logs a
//! `docker_api` debug event, so `BERTH_LOG=berth::runtime=debug` counts calls.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig,
    PortBinding, RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, RenameContainerOptionsBuilder,
    StopContainerOptionsBuilder, TagImageOptionsBuilder,
};
use futures::StreamExt;

use super::{
    ContainerDetails, ContainerState, ContainerSummary, EngineVersion, ExecOutcome, HealthState,
    ImageInfo, NameHolder, Networks, OwnContainer, ProbeResult, PullProgress, Runtime,
    RuntimeError,
};
use crate::build_context::{LABEL_CONTEXT_HASH, context_entries};
use crate::spec::registry_of;
use crate::spec::{
    Build, LABEL_CONFIG_HASH, LABEL_GENERATION, LABEL_PROJECT, LABEL_SERVICE, Probe, Service,
    Volume,
};

/// The real engine.
#[derive(Clone)]
pub struct DockerRuntime {
    docker: Docker,
    http: reqwest::Client,
    /// The bound on short engine calls under way at once (see [`ENGINE_CALLS`]).
    calls: std::sync::Arc<tokio::sync::Semaphore>,
    /// The ID of the container berth runs in, read from the mount table at connect
    /// ([`super::own`]); its name and labels are asked for once, when first needed.
    own_id: Option<String>,
    /// The writable layer of berth's root filesystem, to confirm `own_id` by.
    own_upperdir: Option<String>,
    own: std::sync::Arc<tokio::sync::OnceCell<Option<OwnContainer>>>,
    /// The networks berth's container joined (or found it was on), by ID.
    joined: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

/// How many short engine calls (create, start, remove, rename, inspect a container, create
/// a volume) berth has under way at once. A converge of 100 services otherwise asks the
/// engine for 100 creates, then 100 starts, at the same moment; the engine serialises
/// much of that work anyway, and its own healthchecks (an exec each) queue behind it. The
/// calls that may take long by design (stop, exec, logs, pulls, builds, events) are not
/// bounded. `BERTH_ENGINE_CALLS` sets it.
pub const ENGINE_CALLS: usize = 8;

pub(crate) fn api(context: impl Into<String>) -> impl FnOnce(BollardError) -> RuntimeError {
    let context = context.into();
    move |e| {
        if no_answer(&e) {
            return RuntimeError::Unreachable {
                context,
                message: e.to_string(),
            };
        }
        RuntimeError::Api {
            context,
            message: match e {
                BollardError::DockerResponseServerError { message, .. } => message,
                other => other.to_string(),
            },
        }
    }
}

/// Whether bollard failed without an answer from the engine: the connection was refused,
/// reset or cut, its socket is missing, or the call timed out. An answer (any status code,
/// or an error the engine wrote into a stream) is not this.
fn no_answer(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::RequestTimeoutError
            | BollardError::HyperLegacyError { .. }
            | BollardError::HyperResponseError { .. }
            | BollardError::IOError { .. }
            | BollardError::SocketNotFoundError(_)
    )
}

/// How long one engine call may wait for the engine's answer (its headers; a stream may
/// run on after them). bollard's default is 2 minutes; an engine that holds a call this
/// long is as good as gone, and the daemon must say so sooner. The longest call berth
/// makes is a stop with a 10 s grace period.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(60);

fn is_not_found(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn call(name: &'static str) {
    tracing::debug!(target: "berth::runtime", call = name, "docker_api");
}

impl DockerRuntime {
    /// Connect with the usual defaults (`DOCKER_HOST`, e.g. `unix:///run/docker.sock`, or
    /// the local socket) and negotiate the API version.
    pub async fn connect() -> Result<Self, RuntimeError> {
        let docker = Docker::connect_with_defaults()
            .map_err(api("connecting to the Docker engine"))?
            .with_timeout(ENGINE_TIMEOUT)
            .negotiate_version()
            .await
            .map_err(api("negotiating the Docker API version"))?;
        let calls = std::env::var("BERTH_ENGINE_CALLS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(ENGINE_CALLS);
        let (own_id, own_upperdir) = super::own::container_id();
        Ok(DockerRuntime {
            docker,
            http: crate::notify::tls::builder()
                .no_proxy()
                .build()
                .expect("http client builds"),
            calls: std::sync::Arc::new(tokio::sync::Semaphore::new(calls)),
            own_id,
            own_upperdir,
            own: Default::default(),
            joined: Default::default(),
        })
    }

    /// Refuse what would stop, remove or rename the container berth runs in (the
    /// pre-flight refuses a desired state that asks for it; this is the last line).
    fn not_own(&self, id: &str, what: &str) -> Result<(), RuntimeError> {
        match &self.own_id {
            Some(own) if super::own::same_id(own, id) => Err(RuntimeError::Api {
                context: format!("{what} container {}", &id[..12]),
                message: "refused: it is the container berth runs in; berth never recreates, stops, removes or renames it".into(),
            }),
            _ => Ok(()),
        }
    }

    /// The network named `name` the project uses: its own (duplicates removed), an
    /// external one of that name, or a new one labelled with the project.
    async fn find_or_create_network(
        &self,
        name: &str,
        project: &str,
    ) -> Result<String, RuntimeError> {
        // Docker's name filter matches substrings: compare exactly afterwards.
        let named: Vec<_> = self
            .networks("name", name)
            .await?
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .collect();
        let (mut own, other): (Vec<_>, Vec<_>) = named.into_iter().partition(|n| {
            n.labels
                .as_ref()
                .and_then(|l| l.get(LABEL_PROJECT))
                .is_some_and(|p| p == project)
        });
        if !own.is_empty() {
            // Oldest first: the one the project's containers most likely sit on.
            own.sort_by(|a, b| a.created.cmp(&b.created));
            let keep = own.remove(0).id.unwrap_or_default();
            for dup in own {
                let id = dup.id.unwrap_or_default();
                // Removing a network that containers still use fails; such a duplicate
                // stays until its containers are recreated onto `keep`.
                call("remove_network");
                match self.docker.remove_network(&id).await {
                    Ok(()) => tracing::warn!(
                        network = name,
                        removed = short(&id),
                        kept = short(&keep),
                        "removed a duplicate of the project's network"
                    ),
                    Err(e) => {
                        tracing::warn!(network = name, duplicate = short(&id), error = %e, "a duplicate of the project's network is still in use")
                    }
                }
            }
            return Ok(keep);
        }
        match other.as_slice() {
            // A network the person made (an external network): use it, never remove it.
            [one] => return Ok(one.id.clone().unwrap_or_default()),
            [] => {}
            many => {
                return Err(RuntimeError::Api {
                    context: format!("finding network {name}"),
                    message: format!(
                        "{} networks are named {name:?} ({}) and none belongs to project {project:?}; remove all but one",
                        many.len(),
                        many.iter()
                            .map(|n| short(n.id.as_deref().unwrap_or("")).to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
        call("create_network");
        let req = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            labels: Some([(LABEL_PROJECT.to_string(), project.to_string())].into()),
            ..Default::default()
        };
        let created = self
            .docker
            .create_network(req)
            .await
            .map_err(api(format!("creating network {name}")))?;
        Ok(created.id)
    }

    /// Whether berth runs in a container that needs the project's networks joined: one
    /// of this engine's, not on the host's network (nor sharing another's).
    async fn own_bridged(&self) -> Result<Option<OwnContainer>, RuntimeError> {
        Ok(self.own_container().await?.filter(|own| {
            !matches!(own.network_mode.as_str(), "host" | "none")
                && !own.network_mode.starts_with("container:")
        }))
    }

    /// berth in a container on a bridge: join the project's network, so its probes and
    /// migrations reach the services at their addresses there (the host routes to every
    /// bridge; a container on another bridge does not).
    async fn join_network(&self, name: &str, id: &str) -> Result<(), RuntimeError> {
        let Some(own) = self.own_bridged().await? else {
            return Ok(());
        };
        call("connect_network");
        let req = bollard::models::NetworkConnectRequest {
            container: own.id.clone(),
            endpoint_config: None,
        };
        match self.docker.connect_network(id, req).await {
            Ok(()) => {
                tracing::info!(network = name, container = %own.name, "berth's container joined the project's network to reach its services");
            }
            Err(BollardError::DockerResponseServerError { message, .. })
                if message.contains("already exists") => {}
            Err(e) => {
                return Err(api(format!(
                    "joining network {name} from berth's container {}",
                    own.name
                ))(e));
            }
        }
        self.joined
            .lock()
            .expect("joined lock")
            .insert(id.to_string());
        Ok(())
    }

    /// Every network labelled with the project that berth's container has not joined yet
    /// (a new berth container, e.g. after an upgrade of the image, finds the project
    /// converged and runs no `ensure_network`, yet must reach its services to judge them).
    async fn join_project_networks(&self, project: &str) -> Result<(), RuntimeError> {
        if self.own_bridged().await?.is_none() {
            return Ok(());
        }
        for n in self
            .networks("label", &format!("{LABEL_PROJECT}={project}"))
            .await?
        {
            let id = n.id.unwrap_or_default();
            if !self.joined.lock().expect("joined lock").contains(&id)
                && let Err(e) = self
                    .join_network(n.name.as_deref().unwrap_or(&id), &id)
                    .await
            {
                // Its probes there fail and say so; listing the containers goes on.
                tracing::warn!(network = %short(&id), error = %e, "berth's container could not join the project's network");
            }
        }
        Ok(())
    }

    /// Before a project network is removed: berth's container leaves it when it is the
    /// only one left on it (one it shares with others, it keeps).
    async fn leave_network_if_alone(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(own) = self.own_bridged().await? else {
            return Ok(());
        };
        call("inspect_network");
        let on = match self.docker.inspect_network(id, None).await {
            Ok(n) => n.containers.unwrap_or_default(),
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(api(format!("inspecting network {}", short(id)))(e)),
        };
        if on.is_empty() || on.keys().any(|c| *c != own.id) {
            return Ok(());
        }
        call("disconnect_network");
        let req = bollard::models::NetworkDisconnectRequest {
            container: own.id.clone(),
            force: Some(false),
        };
        match self.docker.disconnect_network(id, req).await {
            Ok(()) => {
                self.joined.lock().expect("joined lock").remove(id);
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(api(format!("leaving network {}", short(id)))(e)),
        }
    }

    /// A place among the short engine calls under way ([`ENGINE_CALLS`]).
    async fn slot(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.calls
            .acquire()
            .await
            .expect("the semaphore is never closed")
    }
}

impl Runtime for DockerRuntime {
    async fn exec_stream(
        &self,
        id: &str,
        command: &[String],
        env: &[String],
        stdin: Option<&mut (dyn std::io::Read + Send)>,
        stdout: &mut (dyn std::io::Write + Send),
    ) -> Result<ExecOutcome, RuntimeError> {
        let (exec_id, output, input) = self
            .start_attached_exec(id, command, env, stdin.is_some())
            .await?;
        let (stderr_tail, feed_error) = feed_and_drain(stdin, input, output, stdout).await?;
        let exit_code = self.exec_exit_code(&exec_id).await?;
        if let Some(e) = feed_error
            && exit_code == 0
        {
            return Err(io("feeding the command's input")(e));
        }
        Ok(ExecOutcome {
            exit_code,
            stderr_tail,
        })
    }

    async fn engine_version(&self) -> Result<EngineVersion, RuntimeError> {
        call("version");
        let v = self
            .docker
            .version()
            .await
            .map_err(api("asking the Docker engine its version"))?;
        Ok(EngineVersion {
            version: v.version.unwrap_or_default(),
            api_version: v.api_version.unwrap_or_default(),
        })
    }

    async fn own_container(&self) -> Result<Option<OwnContainer>, RuntimeError> {
        let Some(id) = &self.own_id else {
            return Ok(None);
        };
        let own = self
            .own
            .get_or_try_init(|| async {
                call("inspect_container");
                match self.docker.inspect_container(id, None).await {
                    Ok(c) => {
                        let theirs = c
                            .graph_driver
                            .as_ref()
                            .and_then(|g| g.data.get("UpperDir"))
                            .cloned();
                        if let (Some(mine), Some(theirs)) = (&self.own_upperdir, &theirs)
                            && mine != theirs
                        {
                            // `--network container:X`: the mount named X, not berth's own.
                            tracing::warn!(
                                named = %short(id),
                                "berth shares another container's network namespace, so it cannot tell which container it runs in; it protects none (run it on its own network or the host's)"
                            );
                            return Ok(None);
                        }
                        let config = c.config.unwrap_or_default();
                        let labels = config.labels.unwrap_or_default();
                        Ok(Some(OwnContainer {
                            id: id.clone(),
                            name: c
                                .name
                                .unwrap_or_default()
                                .trim_start_matches('/')
                                .to_string(),
                            project: labels.get(LABEL_PROJECT).cloned(),
                            service: labels.get(LABEL_SERVICE).cloned(),
                            network_mode: c
                                .host_config
                                .and_then(|h| h.network_mode)
                                .unwrap_or_default(),
                        }))
                    }
                    // The mount table named a container this engine does not have: berth
                    // runs in a container of another engine (and this one's socket was
                    // given to it), so none of this engine's containers is berth's own.
                    Err(e) if is_not_found(&e) => Ok(None),
                    Err(e) => {
                        tracing::debug!(error = %e, "asking the engine which container berth runs in");
                        Err(api("asking the engine which container berth runs in")(e))
                    }
                }
            })
            .await?;
        Ok(own.clone())
    }

    async fn list_project(&self, project: &str) -> Result<Vec<ContainerSummary>, RuntimeError> {
        self.join_project_networks(project).await?;
        let list = self
            .list("label", vec![format!("{LABEL_PROJECT}={project}")])
            .await?;
        let own = self.own_id.as_deref();
        Ok(list
            .into_iter()
            .filter(|c| c.id.is_none() || c.id.as_deref() != own)
            .map(|c| {
                let labels = c.labels.unwrap_or_default();
                let status = c.status.unwrap_or_default();
                let health = ["healthy", "unhealthy", "health: starting"]
                    .iter()
                    .find(|h| status.contains(&format!("({h})")))
                    .map(|h| HealthState::from(h.trim_start_matches("health: ")));
                ContainerSummary {
                    id: c.id.unwrap_or_default(),
                    name: c
                        .names
                        .and_then(|n| n.into_iter().next())
                        .unwrap_or_default()
                        .trim_start_matches('/')
                        .to_string(),
                    service: labels.get(LABEL_SERVICE).cloned(),
                    config_hash: labels.get(LABEL_CONFIG_HASH).cloned(),
                    generation: labels.get(LABEL_GENERATION).and_then(|g| g.parse().ok()),
                    image_id: c.image_id.unwrap_or_default(),
                    state: ContainerState::from(c.state.map(|s| s.to_string()).unwrap_or_default()),
                    health,
                    published: c
                        .ports
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|p| p.public_port)
                        .collect(),
                }
            })
            .collect())
    }

    async fn name_holders(
        &self,
        names: &[String],
    ) -> Result<BTreeMap<String, NameHolder>, RuntimeError> {
        if names.is_empty() {
            return Ok(BTreeMap::new());
        }
        // Docker's name filter matches substrings; anchor it, then compare exactly.
        let list = self
            .list("name", names.iter().map(|n| format!("^/{n}$")).collect())
            .await?;
        let mut held = BTreeMap::new();
        for c in list {
            let labels = c.labels.unwrap_or_default();
            for n in c.names.unwrap_or_default() {
                let n = n.trim_start_matches('/').to_string();
                if names.contains(&n) {
                    held.insert(
                        n,
                        NameHolder {
                            id: c.id.clone().unwrap_or_default(),
                            project: labels.get(LABEL_PROJECT).cloned(),
                        },
                    );
                }
            }
        }
        Ok(held)
    }

    async fn inspect_image(&self, reference: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        call("inspect_image");
        match self.docker.inspect_image(reference).await {
            Ok(i) => {
                let config = i.config.unwrap_or_default();
                Ok(Some(ImageInfo {
                    id: i.id.unwrap_or_default(),
                    has_healthcheck: config
                        .healthcheck
                        .and_then(|h| h.test)
                        .is_some_and(|t| !t.is_empty() && t[0] != "NONE"),
                    context_hash: config.labels.and_then(|mut l| l.remove(LABEL_CONTEXT_HASH)),
                    // "0001-01-01T00:00:00Z" (never tagged here) fails to parse: None.
                    tagged_at: i
                        .metadata
                        .and_then(|m| m.last_tag_time)
                        .and_then(|t| humantime::parse_rfc3339(&t).ok()),
                }))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(api(format!("inspecting image {reference}"))(e)),
        }
    }

    async fn pull_image(
        &self,
        reference: &str,
        progress: &(dyn Fn(PullProgress) + Sync),
    ) -> Result<(), RuntimeError> {
        let registry = registry_of(reference).to_string();
        let unavailable = |message: String| RuntimeError::ImageUnavailable {
            image: reference.to_string(),
            message: format!("pulling from registry {registry} failed: {message}"),
        };
        let credentials = {
            let registry = registry.clone();
            tokio::task::spawn_blocking(move || credentials_for(&registry))
                .await
                .map_err(|e| unavailable(e.to_string()))?
                .map_err(unavailable)?
        };
        call("create_image");
        let (image, tag) = split_reference(reference);
        let opts = CreateImageOptionsBuilder::default()
            .from_image(image)
            .tag(tag)
            .build();
        let mut stream = self.docker.create_image(Some(opts), None, credentials);
        let mut layers = Layers::default();
        while let Some(item) = stream.next().await {
            let item = item.map_err(|e| match no_answer(&e) {
                true => api(format!("pulling {reference}"))(e),
                false => unavailable(
                    api("pull")(e)
                        .to_string()
                        .trim_start_matches("pull: ")
                        .to_string(),
                ),
            })?;
            if let Some(err) = item.error_detail.and_then(|d| d.message) {
                return Err(unavailable(err));
            }
            if let (Some(id), Some(status)) = (item.id, item.status) {
                let detail = item.progress_detail.unwrap_or_default();
                layers.update(&id, &status, detail.current, detail.total);
                progress(layers.progress());
            }
        }
        // Tag it again under the same name: Docker's LastTagTime then says when it was last
        // pulled, even when the pull found it up to date (which otherwise leaves it alone).
        if !reference.contains('@') {
            call("tag_image");
            let opts = TagImageOptionsBuilder::default()
                .repo(image)
                .tag(tag)
                .build();
            self.docker
                .tag_image(reference, Some(opts))
                .await
                .map_err(api(format!("tagging {reference} after its pull")))?;
        }
        Ok(())
    }

    async fn build_image(&self, reference: &str, build: &Build) -> Result<(), RuntimeError> {
        call("build_image");
        let fail = |message: String| RuntimeError::Build {
            image: reference.to_string(),
            message,
        };
        // Only what .dockerignore lets through, from the same list the context hash is
        // made of.
        let (context, dockerfile) = (build.context.clone(), build.dockerfile.clone());
        let tarball = tokio::task::spawn_blocking(move || {
            let entries = context_entries(&context, &dockerfile).map_err(|e| e.to_string())?;
            let mut b = tar::Builder::new(Vec::new());
            b.follow_symlinks(false);
            for e in entries {
                b.append_path_with_name(&e.path, &e.rel)
                    .map_err(|err| format!("{}: {err}", e.path.display()))?;
            }
            b.into_inner().map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| fail(e.to_string()))?
        .map_err(|e| {
            fail(format!(
                "reading build context {}: {e}",
                build.context.display()
            ))
        })?;
        let labels: HashMap<String, String> = build
            .context_hash
            .iter()
            .map(|h| (LABEL_CONTEXT_HASH.to_string(), h.clone()))
            .collect();
        let args: HashMap<String, String> = build.args.clone().into_iter().collect();
        let opts = BuildImageOptionsBuilder::default()
            .t(reference)
            .dockerfile(&build.dockerfile)
            .buildargs(&args)
            .labels(&labels)
            .rm(true)
            .build();
        let mut stream =
            self.docker
                .build_image(opts, None, Some(bollard::body_full(tarball.into())));
        while let Some(item) = stream.next().await {
            let item = item.map_err(|e| match no_answer(&e) {
                true => api(format!("building {reference}"))(e),
                false => fail(api("build")(e).to_string()),
            })?;
            if let Some(msg) = item.error_detail.and_then(|d| d.message) {
                return Err(fail(msg));
            }
        }
        Ok(())
    }

    async fn ensure_network(&self, name: &str, project: &str) -> Result<String, RuntimeError> {
        let id = self.find_or_create_network(name, project).await?;
        self.join_network(name, &id).await?;
        Ok(id)
    }

    async fn remove_project_networks(&self, project: &str) -> Result<Vec<String>, RuntimeError> {
        let mut removed = Vec::new();
        for n in self
            .networks("label", &format!("{LABEL_PROJECT}={project}"))
            .await?
        {
            let id = n.id.unwrap_or_default();
            if let Err(e) = self.leave_network_if_alone(&id).await {
                tracing::warn!(network = %short(&id), error = %e, "berth's container could not leave the project's network; it stays");
            }
            call("remove_network");
            match self.docker.remove_network(&id).await {
                Ok(()) => removed.push(n.name.unwrap_or(id)),
                // In use (403) or already gone (404): not ours to force.
                Err(BollardError::DockerResponseServerError {
                    status_code: 403 | 404 | 409,
                    ..
                }) => {}
                Err(e) => return Err(api(format!("removing network {}", short(&id)))(e)),
            }
        }
        Ok(removed)
    }

    async fn ensure_volume(&self, name: &str, project: &str) -> Result<(), RuntimeError> {
        call("create_volume");
        let _slot = self.slot().await;
        // Creating an existing volume is a no-op in Docker; its data is untouched.
        let req = VolumeCreateRequest {
            name: Some(name.to_string()),
            labels: Some([(LABEL_PROJECT.to_string(), project.to_string())].into()),
            ..Default::default()
        };
        self.docker
            .create_volume(req)
            .await
            .map(|_| ())
            .map_err(api(format!("creating volume {name}")))
    }

    async fn create_container(
        &self,
        name: &str,
        s: &Service,
        image: &str,
        labels: &BTreeMap<String, String>,
        networks: &Networks,
    ) -> Result<String, RuntimeError> {
        call("create_container");
        let _slot = self.slot().await;
        let body = container_body(s, image, labels, networks);
        let opts = CreateContainerOptionsBuilder::default().name(name).build();
        let created = self
            .docker
            .create_container(Some(opts), body)
            .await
            .map_err(api(format!("creating container {name}")))?;
        // Further networks are joined after create: the API takes one at create time on 1.41.
        for net in s.networks.iter().skip(1) {
            call("connect_network");
            self.docker
                .connect_network(
                    &network_id(networks, net),
                    bollard::models::NetworkConnectRequest {
                        container: created.id.clone(),
                        endpoint_config: Some(endpoint(s)),
                    },
                )
                .await
                .map_err(api(format!("connecting {name} to network {net}")))?;
        }
        Ok(created.id)
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        call("start_container");
        let _slot = self.slot().await;
        self.docker
            .start_container(id, None)
            .await
            .map_err(api(format!("starting container {}", short(id))))
    }

    async fn stop_container(&self, id: &str) -> Result<(), RuntimeError> {
        self.not_own(id, "stopping")?;
        call("stop_container");
        let opts = StopContainerOptionsBuilder::default().t(10).build();
        match self.docker.stop_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(BollardError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            // Gone already (removed by hand, or by a berth that was killed): stopped.
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(api(format!("stopping container {}", short(id)))(e)),
        }
    }

    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        self.not_own(id, "removing")?;
        call("remove_container");
        let _slot = self.slot().await;
        // v=false: anonymous volumes stay too. berth never deletes volume data.
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(false)
            .build();
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(api(format!("removing container {}", short(id)))(e)),
        }
    }

    async fn rename_container(&self, id: &str, name: &str) -> Result<(), RuntimeError> {
        self.not_own(id, "renaming")?;
        call("rename_container");
        let _slot = self.slot().await;
        let opts = RenameContainerOptionsBuilder::default().name(name).build();
        self.docker
            .rename_container(id, opts)
            .await
            .map_err(api(format!("renaming container {} to {name}", short(id))))
    }

    async fn inspect_container(
        &self,
        id: &str,
        network: &str,
    ) -> Result<ContainerDetails, RuntimeError> {
        call("inspect_container");
        let _slot = self.slot().await;
        let c = self.docker.inspect_container(id, None).await.map_err(|e| {
            let context = format!("inspecting container {}", short(id));
            if is_not_found(&e) {
                RuntimeError::Gone { context }
            } else {
                api(context)(e)
            }
        })?;
        let state = c.state.unwrap_or_default();
        let health_log = state
            .health
            .as_ref()
            .and_then(|h| h.log.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|r| super::HealthRun {
                start: r.start.map(|t| t.to_string()).unwrap_or_default(),
                end: r.end.map(|t| t.to_string()).unwrap_or_default(),
                exit_code: r.exit_code.unwrap_or_default(),
                output: crate::text::one_line(&r.output.unwrap_or_default(), 500),
            })
            .collect();
        let ip = c
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|n| n.get(network).and_then(|e| e.ip_address.clone()))
            .filter(|ip| !ip.is_empty());
        Ok(ContainerDetails {
            id: c.id.unwrap_or_default(),
            running: state.running.unwrap_or(false),
            restarting: state.restarting.unwrap_or(false),
            exit_code: state.exit_code.unwrap_or(0),
            oom_killed: state.oom_killed.unwrap_or(false),
            restart_count: c.restart_count.unwrap_or(0),
            health: state
                .health
                .and_then(|h| h.status)
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty() && s != "none")
                .map(HealthState::from),
            ip,
            started_at: state.started_at,
            finished_at: state.finished_at.filter(|t| !t.starts_with("0001-01-01")),
            health_log,
        })
    }

    async fn container_logs(&self, id: &str) -> Result<String, RuntimeError> {
        use bollard::container::LogOutput;
        call("logs");
        // Only the end is asked for: a job's log history is the container's, as long as
        // it made it, and is never read whole (docs/design.md §12).
        let opts = bollard::query_parameters::LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail("200")
            .build();
        let mut stream = std::pin::pin!(self.docker.logs(id, Some(opts)));
        let mut tail = String::new();
        while let Some(chunk) = stream.next().await {
            match chunk.map_err(api(format!("reading the logs of {}", short(id))))? {
                LogOutput::StdOut { message }
                | LogOutput::StdErr { message }
                | LogOutput::Console { message } => super::push_tail_max(
                    &mut tail,
                    &String::from_utf8_lossy(&message),
                    super::LOG_TAIL,
                ),
                LogOutput::StdIn { .. } => {}
            }
        }
        Ok(tail)
    }

    fn events(&self, project: &str) -> super::Events {
        call("events");
        let (mut tx, rx) = futures::channel::mpsc::channel(super::EVENTS_BUFFERED);
        let docker = self.docker.clone();
        let filters: HashMap<String, Vec<String>> = [
            ("type".to_string(), vec!["container".to_string()]),
            (
                "label".to_string(),
                vec![format!("{LABEL_PROJECT}={project}")],
            ),
        ]
        .into();
        // From now, by the engine's clock (the same host's): the engine replays what
        // happened between this call and the stream's start, so a gate that subscribed
        // before a container started sees all of its events.
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let since = format!("{}.{:09}", since.as_secs(), since.subsec_nanos());
        let opts = bollard::query_parameters::EventsOptionsBuilder::default()
            .filters(&filters)
            .since(&since)
            .build();
        // The stream borrows the client: a task owns both and forwards until either side
        // goes (the engine connection drops, or nobody listens any more).
        let own = self.own_id.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(docker.events(Some(opts)));
            // Nobody listening any more (a converge's watch ended): close the stream within a
            // second, rather than at the project's next event.
            let mut check = tokio::time::interval(Duration::from_secs(1));
            loop {
                let item = tokio::select! {
                    item = stream.next() => item,
                    _ = check.tick() => {
                        if tx.is_closed() {
                            return;
                        }
                        continue;
                    }
                };
                let Some(item) = item else { return };
                // What happens to berth's own container is no drift of the project's.
                if let Ok(e) = &item
                    && own.is_some()
                    && e.actor.as_ref().and_then(|a| a.id.as_ref()) == own.as_ref()
                {
                    continue;
                }
                let item = item
                    .map(|e| {
                        let actor = e.actor.unwrap_or_default();
                        super::ContainerEvent {
                            id: actor.id.unwrap_or_default(),
                            service: actor.attributes.and_then(|a| a.get(LABEL_SERVICE).cloned()),
                            action: super::EventAction::from(e.action.unwrap_or_default()),
                        }
                    })
                    .map_err(api("reading the engine's events"));
                // Waits while the reader is EVENTS_BUFFERED behind: the engine's stream
                // holds the rest.
                if futures::SinkExt::send(&mut tx, item).await.is_err() {
                    return;
                }
            }
        });
        rx
    }

    fn log_stream(&self, id: &str, options: &super::LogOptions) -> super::LogStream {
        super::logs::docker_log_stream(&self.docker, id, options)
    }

    async fn probe(&self, c: &ContainerDetails, probe: &Probe, timeout: Duration) -> ProbeResult {
        let fail = |detail: String| ProbeResult::new(false, detail);
        if let Probe::Docker = probe {
            return match &c.health {
                Some(HealthState::Healthy) => ProbeResult::new(true, "docker health: healthy"),
                Some(h) => fail(format!("docker health: {h}")),
                None => fail("the image has no HEALTHCHECK".into()),
            };
        }
        if let Probe::Exec { command } = probe {
            let shown = command.join(" ");
            return match tokio::time::timeout(timeout, self.exec(&c.id, command)).await {
                Ok(Ok((0, _))) => ProbeResult::new(true, format!("exec {shown:?}: exit 0")),
                Ok(Ok((code, out))) => fail(format!("exec {shown:?}: exit {code}: {}", out.trim())),
                Ok(Err(e)) => fail(format!("exec {shown:?}: {e}")),
                Err(_) => fail(format!("exec {shown:?}: timed out after {timeout:?}")),
            };
        }
        // The network probes go to the container's own address: through a published port
        // Docker's proxy accepts connections before the server listens.
        let Some(ip) = c.ip.as_deref() else {
            return fail("container has no address".into());
        };
        crate::probe::network(&self.http, ip, probe, timeout).await
    }
}

impl DockerRuntime {
    /// One list call over the networks matching one filter.
    async fn networks(
        &self,
        filter: &str,
        value: &str,
    ) -> Result<Vec<bollard::models::Network>, RuntimeError> {
        call("list_networks");
        let filters: HashMap<String, Vec<String>> =
            [(filter.to_string(), vec![value.to_string()])].into();
        let opts = bollard::query_parameters::ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        self.docker
            .list_networks(Some(opts))
            .await
            .map_err(api(format!("listing networks by {filter}")))
    }

    /// One list call over all containers (any state) matching one filter.
    async fn list(
        &self,
        filter: &str,
        values: Vec<String>,
    ) -> Result<Vec<bollard::models::ContainerSummary>, RuntimeError> {
        call("list_containers");
        let filters: HashMap<String, Vec<String>> = [(filter.to_string(), values)].into();
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        self.docker
            .list_containers(Some(opts))
            .await
            .map_err(api(format!("listing containers by {filter}")))
    }

    /// Create an exec in container `id` and start it attached: its id, its output and its
    /// stdin.
    async fn start_attached_exec(
        &self,
        id: &str,
        command: &[String],
        env: &[String],
        attach_stdin: bool,
    ) -> Result<(String, ExecOutput, ExecInput), RuntimeError> {
        call("create_exec");
        let exec = self
            .docker
            .create_exec(
                id,
                bollard::models::ExecConfig {
                    cmd: Some(command.to_vec()),
                    env: Some(env.to_vec()),
                    attach_stdin: Some(attach_stdin),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(api(format!("creating exec in container {}", short(id))))?;
        call("start_exec");
        let bollard::exec::StartExecResults::Attached { output, input } = self
            .docker
            .start_exec(&exec.id, None)
            .await
            .map_err(api("starting exec"))?
        else {
            return Err(RuntimeError::Api {
                context: "starting exec".into(),
                message: "the engine started it detached".into(),
            });
        };
        Ok((exec.id, output, input))
    }

    /// The exit code of an exec whose output has ended, or -1 if the engine has none.
    async fn exec_exit_code(&self, exec_id: &str) -> Result<i64, RuntimeError> {
        // The engine records the exit code as the process is reaped, a moment after
        // its output ends.
        let mut exit_code = None;
        for _ in 0..600 {
            call("inspect_exec");
            let info = self
                .docker
                .inspect_exec(exec_id)
                .await
                .map_err(api("inspecting exec"))?;
            if info.running != Some(true) {
                exit_code = info.exit_code;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(exit_code.unwrap_or(-1))
    }

    async fn exec(&self, id: &str, command: &[String]) -> Result<(i64, String), RuntimeError> {
        call("create_exec");
        let exec = self
            .docker
            .create_exec(
                id,
                bollard::models::ExecConfig {
                    cmd: Some(command.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(api("creating exec"))?;
        call("start_exec");
        let mut output = String::new();
        if let bollard::exec::StartExecResults::Attached {
            output: mut out, ..
        } = self
            .docker
            .start_exec(&exec.id, None)
            .await
            .map_err(api("starting exec"))?
        {
            while let Some(Ok(chunk)) = out.next().await {
                if output.len() < 4096 {
                    output.push_str(&chunk.to_string());
                }
            }
        }
        call("inspect_exec");
        let info = self
            .docker
            .inspect_exec(&exec.id)
            .await
            .map_err(api("inspecting exec"))?;
        Ok((info.exit_code.unwrap_or(-1), output))
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// What the engine is asked to create for service `s`: its image, command, environment,
/// labels, ports, volumes, restart policy and first network.
fn container_body(
    s: &Service,
    image: &str,
    labels: &BTreeMap<String, String>,
    networks: &Networks,
) -> ContainerCreateBody {
    let (exposed, port_bindings) = port_settings(s);
    let first_network = network_id(networks, &s.networks[0]);
    ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: s.command.clone(),
        entrypoint: s.entrypoint.clone(),
        env: Some(
            s.environment
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        ),
        labels: Some(labels.clone().into_iter().collect()),
        user: s.user.clone(),
        working_dir: s.working_dir.clone(),
        exposed_ports: Some(exposed),
        host_config: Some(HostConfig {
            port_bindings: Some(port_bindings),
            binds: Some(volume_binds(s)),
            restart_policy: Some(restart_policy(&s.restart)),
            network_mode: Some(first_network.clone()),
            extra_hosts: (!s.extra_hosts.is_empty()).then(|| s.extra_hosts.clone()),
            memory: s.mem_limit.map(|m| m as i64),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some([(first_network, endpoint(s))].into()),
        }),
        ..Default::default()
    }
}

/// A network's ID, by its name: a name can be ambiguous when Docker holds several
/// networks of it. A name not among `networks` is passed as it is.
fn network_id(networks: &Networks, name: &str) -> String {
    networks
        .get(name)
        .cloned()
        .unwrap_or_else(|| name.to_string())
}

/// How service `s` is joined to each of its networks: under its own name.
fn endpoint(s: &Service) -> EndpointSettings {
    EndpointSettings {
        aliases: Some(vec![s.name.clone()]),
        ..Default::default()
    }
}

/// The container ports service `s` exposes (`port/protocol`), and those bound on the host.
fn port_settings(s: &Service) -> (Vec<String>, HashMap<String, Option<Vec<PortBinding>>>) {
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    let mut exposed = Vec::new();
    for p in &s.ports {
        let key = format!("{}/{}", p.container, p.protocol);
        exposed.push(key.clone());
        if let Some(h) = p.host {
            port_bindings
                .entry(key)
                .or_insert_with(|| Some(Vec::new()))
                .as_mut()
                .expect("inserted as Some")
                .push(PortBinding {
                    host_ip: p.host_ip.clone(),
                    host_port: Some(h.to_string()),
                });
        }
    }
    (exposed, port_bindings)
}

/// Service `s`'s volumes as the engine's binds: `source:target`, with `:ro` when read-only.
fn volume_binds(s: &Service) -> Vec<String> {
    s.volumes
        .iter()
        .map(|v| match v {
            Volume::Named {
                name,
                target,
                read_only,
            } => {
                format!("{name}:{target}{}", if *read_only { ":ro" } else { "" })
            }
            Volume::Bind {
                source,
                target,
                read_only,
            } => format!(
                "{}:{target}{}",
                source.display(),
                if *read_only { ":ro" } else { "" }
            ),
        })
        .collect()
}

/// A service's `restart` (`no`, `always`, `unless-stopped`, `on-failure` or
/// `on-failure:N`) as the engine's restart policy.
fn restart_policy(restart: &str) -> RestartPolicy {
    let (policy, retries) = match restart.split_once(':') {
        Some((_, n)) => (RestartPolicyNameEnum::ON_FAILURE, n.parse().ok()),
        None => (
            match restart {
                "always" => RestartPolicyNameEnum::ALWAYS,
                "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
                "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
                _ => RestartPolicyNameEnum::NO,
            },
            None,
        ),
    };
    RestartPolicy {
        name: Some(policy),
        maximum_retry_count: retries,
    }
}

/// An attached exec's output: its stdout and stderr, as frames.
type ExecOutput =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<LogOutput, BollardError>> + Send>>;
/// An attached exec's stdin.
type ExecInput = std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>;

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> RuntimeError {
    move |e| RuntimeError::Api {
        context: context.into(),
        message: e.to_string(),
    }
}

/// Feed `stdin` to an exec and drain its output into `stdout` at once: a command whose
/// output is not read stops reading its input. Gives the tail of its stderr, and the
/// error that ended the feeding, if one did.
async fn feed_and_drain(
    stdin: Option<&mut (dyn std::io::Read + Send)>,
    input: ExecInput,
    output: ExecOutput,
    stdout: &mut (dyn std::io::Write + Send),
) -> Result<(String, Option<std::io::Error>), RuntimeError> {
    let mut feed = std::pin::pin!(feed(stdin, input));
    let mut drain = std::pin::pin!(drain(output, stdout));
    let mut feed_error = None;
    let mut fed = false;
    let stderr_tail = loop {
        tokio::select! {
            r = &mut feed, if !fed => {
                fed = true;
                if let Err(e) = r {
                    // The command may have stopped reading (exited on an error): give
                    // its output a while to end, for its own message.
                    feed_error = Some(e);
                    break tokio::time::timeout(Duration::from_secs(30), &mut drain)
                        .await
                        .unwrap_or_else(|_| Ok(String::new()))?;
                }
            }
            t = &mut drain => break t?,
        }
    };
    Ok((stderr_tail, feed_error))
}

/// Copy `stdin` (if any) into an exec's input, then close it: the command's end of input.
async fn feed(
    stdin: Option<&mut (dyn std::io::Read + Send)>,
    mut input: ExecInput,
) -> Result<(), std::io::Error> {
    use tokio::io::AsyncWriteExt;
    if let Some(r) = stdin {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                break;
            }
            input.write_all(&buf[..n]).await?;
        }
        input.shutdown().await?;
    }
    Ok(())
}

/// Write an exec's stdout into `stdout` until its output ends; gives the tail of its
/// stderr.
async fn drain(
    mut output: ExecOutput,
    stdout: &mut (dyn std::io::Write + Send),
) -> Result<String, RuntimeError> {
    let mut tail = String::new();
    while let Some(chunk) = output.next().await {
        match chunk.map_err(api("reading exec output"))? {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                stdout
                    .write_all(&message)
                    .map_err(io("writing exec output"))?;
            }
            LogOutput::StdErr { message } => {
                super::push_tail(&mut tail, &String::from_utf8_lossy(&message))
            }
            LogOutput::StdIn { .. } => {}
        }
    }
    Ok(tail)
}

/// The credentials the Docker config file has for `registry`, or None to pull anonymously.
/// Never logged: only whether there were any.
fn credentials_for(registry: &str) -> Result<Option<bollard::auth::DockerCredentials>, String> {
    use docker_credential::{CredentialRetrievalError as E, DockerCredential};
    // Docker Hub's credentials are filed under its v1 index address.
    let server = if registry == "docker.io" {
        "https://index.docker.io/v1/"
    } else {
        registry
    };
    let found = match docker_credential::get_credential(server) {
        Ok(c) => c,
        Err(E::NoCredentialConfigured | E::ConfigNotFound | E::ConfigReadError) => {
            tracing::debug!(
                registry,
                "no credentials in the Docker config; pulling anonymously"
            );
            return Ok(None);
        }
        // A helper's output may hold secrets: name the helper, not what it said.
        Err(E::HelperFailure { helper, .. }) => {
            return Err(format!(
                "the credential helper docker-credential-{helper} failed for {registry}"
            ));
        }
        Err(e) => {
            return Err(format!(
                "the Docker config's credentials for {registry}: {e}"
            ));
        }
    };
    tracing::debug!(registry, "using credentials from the Docker config");
    Ok(Some(match found {
        DockerCredential::UsernamePassword(username, password) => {
            bollard::auth::DockerCredentials {
                username: Some(username),
                password: Some(password),
                serveraddress: Some(server.to_string()),
                ..Default::default()
            }
        }
        DockerCredential::IdentityToken(token) => bollard::auth::DockerCredentials {
            identitytoken: Some(token),
            serveraddress: Some(server.to_string()),
            ..Default::default()
        },
    }))
}

/// Per-layer state of one pull, from the engine's progress messages.
#[derive(Default)]
struct Layers {
    /// Layer ID → (bytes downloaded, bytes total, complete).
    layers: BTreeMap<String, (u64, u64, bool)>,
}

impl Layers {
    fn update(&mut self, id: &str, status: &str, current: Option<i64>, total: Option<i64>) {
        // Messages about the pull as a whole carry the tag as their ID; only these layer
        // statuses make an entry.
        const LAYER_STATUS: [&str; 8] = [
            "Pulling fs layer",
            "Waiting",
            "Downloading",
            "Verifying Checksum",
            "Download complete",
            "Extracting",
            "Pull complete",
            "Already exists",
        ];
        if !LAYER_STATUS.iter().any(|s| status.starts_with(s)) {
            return;
        }
        let l = self.layers.entry(id.to_string()).or_default();
        match status {
            s if s.starts_with("Downloading") => {
                l.0 = current.unwrap_or(0).max(0) as u64;
                l.1 = total.unwrap_or(0).max(0) as u64;
            }
            "Download complete" => l.0 = l.1,
            "Pull complete" | "Already exists" => l.2 = true,
            _ => {}
        }
    }

    fn progress(&self) -> PullProgress {
        PullProgress {
            layers: self.layers.len(),
            layers_done: self.layers.values().filter(|l| l.2).count(),
            bytes: self.layers.values().map(|l| l.0).sum(),
            bytes_total: self.layers.values().map(|l| l.1).sum(),
        }
    }
}

/// `repo[:tag]` → (repo, tag), leaving registry ports (`host:5000/x`) alone.
fn split_reference(r: &str) -> (&str, &str) {
    if r.contains('@') {
        return (r, "");
    }
    match r.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (r, "latest"),
    }
}

impl DockerRuntime {
    /// The address Docker's `host-gateway` stands for: the default bridge's gateway, the
    /// host as containers see it (`host.docker.internal` with
    /// `extra_hosts = ["host.docker.internal:host-gateway"]`).
    pub async fn host_gateway(&self) -> Result<std::net::IpAddr, RuntimeError> {
        call("inspect_network");
        let bridge = self
            .docker
            .inspect_network(
                "bridge",
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .map_err(api("inspecting the default bridge network"))?;
        let configs = bridge.ipam.and_then(|i| i.config).unwrap_or_default();
        // The gateway when the engine names it; else the subnet's first address, which
        // is what the engine gives its bridge when none was configured.
        configs
            .iter()
            .filter_map(|c| c.gateway.as_deref())
            .find_map(|g| g.parse::<std::net::Ipv4Addr>().ok())
            .or_else(|| {
                configs
                    .iter()
                    .filter_map(|c| c.subnet.as_deref())
                    .find_map(first_address)
            })
            .map(std::net::IpAddr::V4)
            .ok_or_else(|| RuntimeError::Api {
                context: "inspecting the default bridge network".into(),
                message: "it has no IPv4 gateway (is the engine's bridge disabled?)".into(),
            })
    }
}

/// The first host address of an IPv4 subnet (`172.17.0.0/16` → `172.17.0.1`).
fn first_address(subnet: &str) -> Option<std::net::Ipv4Addr> {
    let (net, bits) = subnet.split_once('/')?;
    let net: std::net::Ipv4Addr = net.parse().ok()?;
    let bits: u32 = bits.parse().ok()?;
    if bits > 30 {
        return None;
    }
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    Some(std::net::Ipv4Addr::from((u32::from(net) & mask) + 1))
}

#[cfg(test)]
mod host_gateway_tests {
    #[test]
    fn the_first_address_of_a_subnet() {
        assert_eq!(
            super::first_address("172.17.0.0/16"),
            Some("172.17.0.1".parse().unwrap())
        );
        assert_eq!(
            super::first_address("10.1.2.128/25"),
            Some("10.1.2.129".parse().unwrap())
        );
        assert_eq!(super::first_address("fd00::/64"), None);
        assert_eq!(super::first_address("10.0.0.0/32"), None);
    }
}

#[cfg(test)]
mod own_container_tests {
    use super::*;

    /// A runtime that believes it runs in container `own` (no engine is asked: the
    /// refusal comes before any call).
    fn runtime_in(own: &str, socket: &std::path::Path) -> DockerRuntime {
        DockerRuntime {
            docker: Docker::connect_with_unix(
                socket.to_str().unwrap(),
                1,
                bollard::API_DEFAULT_VERSION,
            )
            .unwrap(),
            http: crate::notify::tls::builder()
                .no_proxy()
                .build()
                .expect("http client builds"),
            calls: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
            own_id: Some(own.to_string()),
            own_upperdir: None,
            own: Default::default(),
            joined: Default::default(),
        }
    }

    #[tokio::test]
    async fn stopping_removing_or_renaming_berths_own_container_is_refused() {
        let own = "ab".repeat(32);
        // A socket path nothing listens on: a call that reaches the engine fails.
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        std::fs::write(&socket, "").unwrap();
        let rt = runtime_in(&own, &socket);
        for refused in [
            rt.stop_container(&own).await,
            rt.remove_container(&own).await,
            rt.rename_container(&own, "elsewhere").await,
            rt.remove_container(&own[..12]).await,
        ] {
            let e = refused.unwrap_err().to_string();
            assert!(
                e.contains("refused: it is the container berth runs in"),
                "{e}"
            );
        }
        // Another container goes to the engine (which is not there here).
        let other = rt.stop_container(&"cd".repeat(32)).await.unwrap_err();
        assert!(!other.to_string().contains("refused"), "{other}");
    }
}
