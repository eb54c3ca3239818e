//! An in-memory [`Runtime`] for fast controller tests with paused time.
//!
//! Containers behave like the test fixture, read from their environment:
//! `FIXTURE_READY_AFTER` (seconds until probes pass) and `FIXTURE_NEVER_HEALTHY`.
//! Images live in a local store and in a fake registry ([`FakeRuntime::publish`]): a pull
//! copies the registry's image over the local tag, stamped with the time, and fails
//! naming the registry when the image is not there or the registry is "down". A build
//! makes an image whose ID follows the context hash, labelled with it.
//! It records every call, so tests can assert order and count. It never replaces the
//! end-to-end suite against the real engine in `tests/`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{
    ContainerDetails, ContainerSummary, EngineVersion, ExecOutcome, ImageInfo, NameHolder,
    ProbeResult, PullProgress, Runtime, RuntimeError,
};
use crate::spec::{
    Build, LABEL_CONFIG_HASH, LABEL_GENERATION, LABEL_PROJECT, LABEL_SERVICE, Probe, Service,
};

#[derive(Debug, Clone)]
struct FakeContainer {
    id: String,
    name: String,
    labels: BTreeMap<String, String>,
    image_id: String,
    running: bool,
    started: Option<Instant>,
    ready_after: Duration,
    never_healthy: bool,
    /// `FIXTURE_EXIT_AFTER`: the process exits this long after its start, with
    /// `FIXTURE_EXIT_CODE` (1 unless set), as the real fixture does.
    exit_after: Option<Duration>,
    exit_code: i64,
    /// Killed by hand ([`FakeRuntime::kill_by_hand`]): the exit code and the OOM flag.
    killed: Option<(i64, bool)>,
    /// What it wrote: `event=start` at each start, and what [`FakeRuntime::say`] adds.
    log: Vec<super::LogLine>,
}

impl FakeContainer {
    /// Running, and not past its `FIXTURE_EXIT_AFTER`.
    fn alive(&self) -> bool {
        self.running
            && self
                .exit_after
                .is_none_or(|d| self.started.is_none_or(|t| t.elapsed() < d))
    }
}

#[derive(Default)]
struct State {
    containers: Vec<FakeContainer>,
    /// The container "berth runs in" ([`FakeRuntime::set_own`]).
    own: Option<super::OwnContainer>,
    images: BTreeMap<String, ImageInfo>,
    /// What a pull would fetch: reference → image ID.
    registry: BTreeMap<String, String>,
    registry_down: bool,
    /// The engine does not answer: every call fails [`RuntimeError::Unreachable`].
    engine_down: bool,
    next_id: u64,
    /// (when, what) for every call that changes something, and first passing probes.
    events: Vec<(Instant, String)>,
    calls: BTreeMap<&'static str, usize>,
    /// Who listens to [`Runtime::events`]: told of changes made "by hand".
    listeners: Vec<futures::channel::mpsc::Sender<Result<super::ContainerEvent, RuntimeError>>>,
    /// What every [`Runtime::exec_stream`] writes to its stdout, and the commands it ran.
    exec_stdout: Vec<u8>,
    execs: Vec<Vec<String>>,
    /// Services whose containers the engine refuses to create.
    refuse_create: std::collections::BTreeSet<String>,
    /// Services whose create panics: a stand-in for a bug berth's input finds.
    panic_on_create: std::collections::BTreeSet<String>,
    /// Who follows a container's log (its ID): ended when the container stops or goes.
    log_followers: Vec<(String, futures::channel::mpsc::UnboundedSender<LogResult>)>,
}

type LogResult = Result<super::LogLine, RuntimeError>;

#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
}

impl FakeRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    /// Pretend berth runs in this container: it is left out of the project's list, as the
    /// real runtime leaves it out.
    pub fn set_own(&self, own: Option<super::OwnContainer>) {
        self.state.lock().unwrap().own = own;
    }

    /// Make an image present under `reference` (and under its ID).
    pub fn add_image(&self, reference: &str, id: &str) {
        let mut s = self.state.lock().unwrap();
        let info = ImageInfo {
            id: id.into(),
            ..Default::default()
        };
        s.images.insert(reference.into(), info.clone());
        s.images.insert(id.into(), info);
    }

    /// Put an image into the fake registry under `reference` (moving the tag there).
    pub fn publish(&self, reference: &str, id: &str) {
        self.state
            .lock()
            .unwrap()
            .registry
            .insert(reference.into(), id.into());
    }

    /// Make the engine go away (every call fails unanswered, event streams end) or come
    /// back.
    pub fn set_engine_down(&self, down: bool) {
        let mut s = self.state.lock().unwrap();
        s.engine_down = down;
        if down {
            s.listeners.clear();
        }
    }

    /// Make the engine refuse to create containers of `service` (as it does a spec it
    /// cannot run).
    pub fn refuse_create(&self, service: &str) {
        let mut s = self.state.lock().unwrap();
        s.refuse_create.insert(service.to_string());
    }

    /// Make a create of `service` panic (None: stop), as a bug in berth would: the
    /// daemon's turn must catch it (docs/design.md §12).
    pub fn panic_on_create(&self, service: Option<&str>) {
        let mut s = self.state.lock().unwrap();
        s.panic_on_create.clear();
        s.panic_on_create.extend(service.map(str::to_string));
    }

    /// Make every pull fail as an unreachable registry does.
    pub fn set_registry_down(&self, down: bool) {
        self.state.lock().unwrap().registry_down = down;
    }

    /// What the local store has under `reference`.
    pub fn local_image(&self, reference: &str) -> Option<ImageInfo> {
        self.state.lock().unwrap().images.get(reference).cloned()
    }

    /// Delete an image (by reference or ID), as `docker rmi` would.
    pub fn remove_image(&self, reference: &str) {
        self.state
            .lock()
            .unwrap()
            .images
            .retain(|k, v| k != reference && v.id != reference);
    }

    /// Events so far, with when they happened (since the first one).
    pub fn timed_events(&self) -> Vec<(Duration, String)> {
        let s = self.state.lock().unwrap();
        let Some(first) = s.events.first().map(|(t, _)| *t) else {
            return Vec::new();
        };
        s.events
            .iter()
            .map(|(t, e)| (t.duration_since(first), e.clone()))
            .collect()
    }

    /// Events so far, as "what" strings in order.
    pub fn events(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .events
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// How many times each runtime method was called.
    pub fn calls(&self) -> BTreeMap<&'static str, usize> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Stop a container behind berth's back, as `docker stop` by hand would.
    pub fn stop_by_hand(&self, name: &str) {
        let mut s = self.state.lock().unwrap();
        if let Some(c) = s.containers.iter_mut().find(|c| c.name == name) {
            c.running = false;
            let id = c.id.clone();
            Self::end_logs(&mut s, &id);
        }
        Self::tell(&mut s, name, "die");
    }

    /// Kill a container behind berth's back, as `docker kill` (or the OOM killer, with
    /// `oom`) would: it exits with `exit_code` and no restart policy brings it back.
    pub fn kill_by_hand(&self, name: &str, exit_code: i64, oom: bool) {
        let mut s = self.state.lock().unwrap();
        if let Some(c) = s.containers.iter_mut().find(|c| c.name == name) {
            c.running = false;
            c.killed = Some((exit_code, oom));
            let id = c.id.clone();
            Self::end_logs(&mut s, &id);
        }
        Self::tell(&mut s, name, "die");
    }

    /// Remove a container behind berth's back, as `docker rm -f` by hand would.
    pub fn remove_by_hand(&self, name: &str) {
        let mut s = self.state.lock().unwrap();
        Self::tell(&mut s, name, "destroy");
        if let Some(id) = s
            .containers
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.id.clone())
        {
            Self::end_logs(&mut s, &id);
        }
        s.containers.retain(|c| c.name != name);
    }

    /// Tell every event listener what happened to container `name`.
    fn tell(s: &mut State, name: &str, action: &str) {
        let container = s.containers.iter().find(|c| c.name == name);
        let event = super::ContainerEvent {
            id: container.map(|c| c.id.clone()).unwrap_or_default(),
            service: container.and_then(|c| c.labels.get(LABEL_SERVICE).cloned()),
            action: super::EventAction::from(action),
        };
        s.listeners
            .retain_mut(|l| match l.try_send(Ok(event.clone())) {
                Ok(()) => true,
                // A listener that fell EVENTS_BUFFERED behind misses this one, as a real
                // engine's reader would wait; one that left is dropped.
                Err(e) => !e.is_disconnected(),
            });
    }

    /// Make the container `name` write `text` as one line to `source`.
    pub fn say(&self, name: &str, source: super::LogSource, text: &str) {
        let mut s = self.state.lock().unwrap();
        if let Some(id) = s
            .containers
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.id.clone())
        {
            Self::write_log(&mut s, &id, source, text);
        }
    }

    /// Append a line to a container's log and hand it to who follows it.
    fn write_log(s: &mut State, id: &str, source: super::LogSource, text: &str) {
        let line = super::LogLine {
            source,
            timestamp: Some(jiff::Timestamp::now()),
            text: text.to_string(),
        };
        if let Some(c) = s.containers.iter_mut().find(|c| c.id == id) {
            c.log.push(line.clone());
        }
        s.log_followers
            .retain(|(of, tx)| of != id || tx.unbounded_send(Ok(line.clone())).is_ok());
    }

    /// A container stopped or went: the streams following its log end, as the engine's do.
    fn end_logs(s: &mut State, id: &str) {
        s.log_followers.retain(|(of, _)| of != id);
    }

    /// Names of the containers there are now, any state.
    pub fn container_names(&self) -> Vec<String> {
        let s = self.state.lock().unwrap();
        let mut names: Vec<String> = s.containers.iter().map(|c| c.name.clone()).collect();
        names.sort();
        names
    }

    /// IDs of the containers that run now, sorted.
    pub fn running_ids(&self) -> Vec<String> {
        let s = self.state.lock().unwrap();
        let mut ids: Vec<String> = s
            .containers
            .iter()
            .filter(|c| c.alive())
            .map(|c| c.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// The image ID the container of `name` runs, if it exists.
    pub fn image_of(&self, name: &str) -> Option<String> {
        let s = self.state.lock().unwrap();
        s.containers
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.image_id.clone())
    }

    /// What every streamed exec writes to its stdout from now on.
    pub fn set_exec_stdout(&self, bytes: &[u8]) {
        self.state.lock().unwrap().exec_stdout = bytes.to_vec();
    }

    /// The commands streamed execs ran, in order.
    pub fn execs(&self) -> Vec<Vec<String>> {
        self.state.lock().unwrap().execs.clone()
    }

    /// Count one call; while the engine is "down", every call fails unanswered.
    fn call(&self, name: &'static str) -> Result<std::sync::MutexGuard<'_, State>, RuntimeError> {
        let mut s = self.state.lock().unwrap();
        if s.engine_down {
            return Err(RuntimeError::Unreachable {
                context: name.into(),
                message: "connection refused".into(),
            });
        }
        *s.calls.entry(name).or_default() += 1;
        Ok(s)
    }
}

fn not_found(what: &str) -> RuntimeError {
    RuntimeError::Gone {
        context: what.into(),
    }
}

impl Runtime for FakeRuntime {
    async fn engine_version(&self) -> Result<EngineVersion, RuntimeError> {
        drop(self.call("version")?);
        Ok(EngineVersion {
            version: "20.10.24".into(),
            api_version: "1.41".into(),
        })
    }

    async fn own_container(&self) -> Result<Option<super::OwnContainer>, RuntimeError> {
        Ok(self.state.lock().unwrap().own.clone())
    }

    async fn list_project(&self, project: &str) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let s = self.call("list_containers")?;
        Ok(s.containers
            .iter()
            .filter(|c| c.labels.get(LABEL_PROJECT).map(String::as_str) == Some(project))
            .filter(|c| s.own.as_ref().is_none_or(|own| own.id != c.id))
            .map(|c| ContainerSummary {
                id: c.id.clone(),
                name: c.name.clone(),
                service: c.labels.get(LABEL_SERVICE).cloned(),
                config_hash: c.labels.get(LABEL_CONFIG_HASH).cloned(),
                generation: c.labels.get(LABEL_GENERATION).and_then(|g| g.parse().ok()),
                image_id: c.image_id.clone(),
                state: if c.alive() {
                    super::ContainerState::Running
                } else {
                    super::ContainerState::Exited
                },
                health: None,
                published: vec![],
            })
            .collect())
    }

    async fn name_holders(
        &self,
        names: &[String],
    ) -> Result<BTreeMap<String, NameHolder>, RuntimeError> {
        let s = self.call("list_containers")?;
        Ok(s.containers
            .iter()
            .filter(|c| names.contains(&c.name))
            .map(|c| {
                (
                    c.name.clone(),
                    NameHolder {
                        id: c.id.clone(),
                        project: c.labels.get(LABEL_PROJECT).cloned(),
                    },
                )
            })
            .collect())
    }

    async fn inspect_image(&self, reference: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        Ok(self.call("inspect_image")?.images.get(reference).cloned())
    }

    async fn pull_image(
        &self,
        reference: &str,
        progress: &(dyn Fn(PullProgress) + Sync),
    ) -> Result<(), RuntimeError> {
        let mut s = self.call("create_image")?;
        let registry = crate::spec::registry_of(reference);
        let unavailable = |why: &str| RuntimeError::ImageUnavailable {
            image: reference.into(),
            message: format!("pulling from registry {registry} failed: {why}"),
        };
        if s.registry_down {
            return Err(unavailable("connection refused"));
        }
        let id = s
            .registry
            .get(reference)
            .cloned()
            .ok_or_else(|| unavailable("manifest unknown"))?;
        progress(PullProgress {
            layers: 1,
            layers_done: 1,
            bytes: 1000,
            bytes_total: 1000,
        });
        let info = ImageInfo {
            id: id.clone(),
            tagged_at: Some(std::time::SystemTime::now()),
            ..Default::default()
        };
        s.images.insert(reference.into(), info.clone());
        s.images.insert(id, info);
        s.events.push((Instant::now(), format!("pull {reference}")));
        Ok(())
    }

    async fn build_image(&self, reference: &str, build: &Build) -> Result<(), RuntimeError> {
        let mut s = self.call("build_image")?;
        let hash = build.context_hash.clone();
        let id = format!(
            "sha256:built-{reference}-{}",
            hash.as_deref().map_or("", |h| &h[..h.len().min(8)])
        );
        let info = ImageInfo {
            id: id.clone(),
            context_hash: hash,
            ..Default::default()
        };
        s.images.insert(reference.into(), info.clone());
        s.images.insert(id, info);
        s.events
            .push((Instant::now(), format!("build {reference}")));
        Ok(())
    }

    async fn ensure_network(&self, name: &str, _project: &str) -> Result<String, RuntimeError> {
        drop(self.call("create_network")?);
        Ok(format!("net-{name}"))
    }

    async fn remove_project_networks(&self, _project: &str) -> Result<Vec<String>, RuntimeError> {
        drop(self.call("remove_network")?);
        Ok(Vec::new())
    }

    async fn ensure_volume(&self, _name: &str, _project: &str) -> Result<(), RuntimeError> {
        drop(self.call("create_volume")?);
        Ok(())
    }

    async fn create_container(
        &self,
        name: &str,
        service: &Service,
        image: &str,
        labels: &BTreeMap<String, String>,
        _networks: &super::Networks,
    ) -> Result<String, RuntimeError> {
        let mut s = self.call("create_container")?;
        if s.panic_on_create.contains(&service.name) {
            drop(s);
            panic!("the fake engine panics creating {name}");
        }
        if s.refuse_create.contains(&service.name) {
            return Err(RuntimeError::Api {
                context: format!("creating container {name}"),
                message: "refused by the fake engine".into(),
            });
        }
        if s.containers.iter().any(|c| c.name == name) {
            return Err(RuntimeError::Api {
                context: format!("creating container {name}"),
                message: "name in use".into(),
            });
        }
        let image_id = s.images.get(image).map(|i| i.id.clone()).ok_or_else(|| {
            RuntimeError::ImageUnavailable {
                image: image.into(),
                message: "not present".into(),
            }
        })?;
        s.next_id += 1;
        let id = format!("fake{:08}", s.next_id);
        let env = &service.environment;
        s.containers.push(FakeContainer {
            id: id.clone(),
            name: name.into(),
            labels: labels.clone(),
            image_id,
            running: false,
            started: None,
            ready_after: Duration::from_secs_f64(
                env.get("FIXTURE_READY_AFTER")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0.0),
            ),
            never_healthy: env.get("FIXTURE_NEVER_HEALTHY").is_some_and(|v| v == "1"),
            exit_after: env
                .get("FIXTURE_EXIT_AFTER")
                .and_then(|v| v.parse().ok())
                .map(Duration::from_secs_f64),
            exit_code: env
                .get("FIXTURE_EXIT_CODE")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1),
            killed: None,
            log: Vec::new(),
        });
        s.events
            .push((Instant::now(), format!("create {}", service.name)));
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let mut s = self.call("start_container")?;
        let c = s
            .containers
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or_else(|| not_found(id))?;
        c.running = true;
        c.killed = None;
        c.started = Some(Instant::now());
        let what = format!(
            "start {}",
            c.labels.get(LABEL_SERVICE).cloned().unwrap_or_default()
        );
        s.events.push((Instant::now(), what));
        Self::write_log(&mut s, id, super::LogSource::Stdout, "event=start");
        Ok(())
    }

    async fn stop_container(&self, id: &str) -> Result<(), RuntimeError> {
        let mut s = self.call("stop_container")?;
        if let Some(c) = s.containers.iter_mut().find(|c| c.id == id) {
            c.running = false;
        }
        Self::end_logs(&mut s, id);
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let mut s = self.call("remove_container")?;
        Self::end_logs(&mut s, id);
        if let Some(pos) = s.containers.iter().position(|c| c.id == id) {
            let c = s.containers.remove(pos);
            let what = format!(
                "remove {}",
                c.labels.get(LABEL_SERVICE).cloned().unwrap_or_default()
            );
            s.events.push((Instant::now(), what));
        }
        Ok(())
    }

    async fn rename_container(&self, id: &str, name: &str) -> Result<(), RuntimeError> {
        let mut s = self.call("rename_container")?;
        let c = s
            .containers
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or_else(|| not_found(id))?;
        c.name = name.into();
        Ok(())
    }

    async fn inspect_container(
        &self,
        id: &str,
        _network: &str,
    ) -> Result<ContainerDetails, RuntimeError> {
        let s = self.call("inspect_container")?;
        let c = s
            .containers
            .iter()
            .find(|c| c.id == id)
            .ok_or_else(|| not_found(id))?;
        // Exited by itself (FIXTURE_EXIT_AFTER). The fake has no restart policies: what
        // exits stays exited, whatever the service's `restart`.
        let exited_by_itself = c.running && !c.alive();
        Ok(ContainerDetails {
            id: c.id.clone(),
            running: c.alive(),
            restarting: false,
            exit_code: match c.killed {
                Some((code, _)) => code,
                None if exited_by_itself => c.exit_code,
                None => 0,
            },
            oom_killed: c.killed.is_some_and(|(_, oom)| oom),
            restart_count: 0,
            health: None,
            ip: Some("10.0.0.1".into()),
            started_at: None,
            finished_at: None,
            health_log: Vec::new(),
        })
    }

    async fn container_logs(&self, id: &str) -> Result<String, RuntimeError> {
        let s = self.call("container_logs")?;
        s.containers
            .iter()
            .find(|c| c.id == id)
            .map(|_| String::new())
            .ok_or_else(|| not_found(id))
    }

    /// What the container wrote so far (`since` and `tail` applied), then, when following
    /// a running one, what it writes until it stops.
    fn log_stream(&self, id: &str, options: &super::LogOptions) -> super::LogStream {
        use futures::StreamExt;
        let mut s = match self.call("logs") {
            Ok(s) => s,
            Err(e) => return futures::stream::iter([Err(e)]).boxed(),
        };
        let Some(c) = s.containers.iter().find(|c| c.id == id) else {
            return futures::stream::iter([Err(not_found(id))]).boxed();
        };
        let since = options.since.map(jiff::Timestamp::try_from);
        let mut lines: Vec<super::LogLine> = c
            .log
            .iter()
            .filter(|l| match (&since, l.timestamp) {
                (Some(Ok(since)), Some(t)) => t >= *since,
                _ => true,
            })
            .cloned()
            .collect();
        if let Some(n) = options.tail {
            lines.drain(..lines.len().saturating_sub(n));
        }
        let follow = options.follow && c.alive();
        let backlog = futures::stream::iter(lines.into_iter().map(Ok));
        if !follow {
            return backlog.boxed();
        }
        let (tx, rx) = futures::channel::mpsc::unbounded();
        s.log_followers.push((id.to_string(), tx));
        backlog.chain(rx).boxed()
    }

    fn events(&self, _project: &str) -> super::Events {
        let (tx, rx) = futures::channel::mpsc::channel(super::EVENTS_BUFFERED);
        let mut s = self.state.lock().unwrap();
        // A stream asked of an engine that is gone ends at once.
        if !s.engine_down {
            s.listeners.push(tx);
        }
        rx
    }

    async fn probe(
        &self,
        target: &ContainerDetails,
        probe: &Probe,
        _timeout: Duration,
    ) -> ProbeResult {
        let Ok(mut s) = self.call("probe") else {
            return ProbeResult::new(false, "engine unreachable");
        };
        let Some(c) = s.containers.iter().find(|c| c.id == target.id).cloned() else {
            return ProbeResult::new(false, "no such container");
        };
        let ok = c.alive()
            && !c.never_healthy
            && c.started.is_some_and(|t| t.elapsed() >= c.ready_after);
        if ok {
            let what = format!(
                "healthy {}",
                c.labels.get(LABEL_SERVICE).cloned().unwrap_or_default()
            );
            if !s.events.iter().any(|(_, e)| *e == what) {
                s.events.push((Instant::now(), what));
            }
        }
        ProbeResult::new(
            ok,
            format!(
                "{probe}: {}",
                if ok { "ok" } else { "503 Service Unavailable" }
            ),
        )
    }

    /// Reads `stdin` to its end, writes the configured stdout, exits 0.
    async fn exec_stream(
        &self,
        _id: &str,
        command: &[String],
        _env: &[String],
        stdin: Option<&mut (dyn std::io::Read + Send)>,
        stdout: &mut (dyn std::io::Write + Send),
    ) -> Result<ExecOutcome, RuntimeError> {
        let out = {
            let mut s = self.call("exec_stream")?;
            s.execs.push(command.to_vec());
            s.exec_stdout.clone()
        };
        let io = |e: std::io::Error| RuntimeError::Api {
            context: "fake exec".into(),
            message: e.to_string(),
        };
        if let Some(r) = stdin {
            std::io::copy(r, &mut std::io::sink()).map_err(io)?;
        }
        stdout.write_all(&out).map_err(io)?;
        Ok(ExecOutcome {
            exit_code: 0,
            stderr_tail: String::new(),
        })
    }
}
