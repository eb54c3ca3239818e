//! `berth run`: the controller daemon, what the systemd unit runs.
//!
//! Triggers only enqueue (the desired state's file, the engine's events, a resync timer,
//! SIGHUP, `POST /api/v1/reconcile`); one scheduler runs one [`turn`] at a time, the same
//! reconcile `berth apply` runs; errors back off. SIGTERM (or SIGINT) finishes the current
//! step, releases the lock and exits 0 without stopping any container.
//!
//! The engine going away does not end it: turns fail unanswered (a converge they cut is
//! recorded `interrupted`, never judged), status says `degraded (engine unreachable: ...)`
//! and `berth_engine_reachable` 0, and the engine coming back reconciles at once.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::daemon::controller::scheduler::{self, Reason};
use crate::daemon::http::{self, Listen, Shared};
use crate::daemon::metrics::{Metrics, ReconcileResult};
use crate::daemon::systemd::{self, Heartbeat};
use crate::daemon::turn::{Memory, Target, TurnOutcome, turn};
use crate::lock::ProjectLock;
use crate::notify::Happened;
use crate::reconcile::ApplyOutcome;
use crate::report::Reporter;
use crate::runtime::docker::DockerRuntime;
use crate::shutdown::Shutdown;
use crate::status::ProjectStatus;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Http(#[from] http::HttpError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("watching {path}: {source}")]
    Watch {
        path: String,
        #[source]
        source: notify::Error,
    },
}

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub target: Target,
    /// Where the HTTP endpoint listens (loopback by default; `host-gateway:PORT` too).
    pub listen: Vec<Listen>,
    /// Reconcile at least this often, even with no trigger.
    pub resync: Duration,
    /// The operator's API token (`--api-token-file`): what `POST /api/v1/sync` (with a
    /// git source) must carry, and `POST /api/v1/reconcile` on a listener that is not
    /// loopback.
    pub api_token: Option<String>,
    /// `--ui`: serve the status page on listeners that are not loopback too, to requests
    /// that carry the API token (loopback listeners always serve it).
    pub ui: bool,
}

/// Run until SIGTERM/SIGINT. Returns only after the current step finished and the lock
/// was released.
pub async fn run(settings: Settings) -> Result<(), DaemonError> {
    let shutdown = Shutdown::on_signals();
    let store = Store::open(&settings.target.state).await?;
    let (queue, scheduler) = scheduler::channel(scheduler::Config {
        resync: settings.resync,
        ..Default::default()
    });
    let wake = {
        let q = queue.clone();
        move |reason: Reason| q.enqueue(reason)
    };
    let shared = Arc::new(Shared::new(Metrics::new(), {
        let wake = wake.clone();
        Arc::new(move || wake(Reason::Api))
    }));
    if let Some(token) = &settings.api_token {
        shared.set_token(token.clone());
    }
    shared.set_ui_exposed(settings.ui);
    // The status page reads the history through a store handle of its own.
    shared.set_ui_store(Store::open(&settings.target.state).await?);
    let notify_wake = spawn_sender(&settings, &shared, &shutdown).await?;
    // Plain addresses are bound at once (a port in use ends the daemon before it does
    // anything); host-gateway ones once the engine told us its address.
    let mut endpoint = None;
    for listen in &settings.listen {
        if let Listen::Addr(addr) = listen {
            serve_on(*addr, listen.scope(), &shared, &shutdown).await?;
            // A loopback listener before any other: it answers `berth status` and
            // `berth ui` without a token, whatever --ui says.
            endpoint = match endpoint {
                Some((_, s))
                    if s != http::Scope::Loopback && listen.scope() == http::Scope::Loopback =>
                {
                    Some((*addr, listen.scope()))
                }
                None => Some((*addr, listen.scope())),
                kept => kept,
            };
        }
    }

    // SIGHUP: read the desired state again now.
    {
        let wake = wake.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .expect("SIGHUP handler installs");
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                wake(Reason::Signal);
            }
        });
    }
    // The desired state's trigger: its file, or the git source's poller.
    let _watcher = match &settings.target.git {
        None => {
            let wake = wake.clone();
            Some(
                crate::daemon::triggers::watch_desired_state(
                    &settings.target.file,
                    Arc::new(move || wake(Reason::File)),
                )
                .map_err(|source| DaemonError::Watch {
                    path: settings.target.file.display().to_string(),
                    source,
                })?,
            )
        }
        Some(git) => {
            let wake = wake.clone();
            tokio::spawn(crate::git::follow(
                git.clone(),
                Arc::new(move || wake(Reason::Git)),
                shutdown.clone(),
            ));
            if settings.api_token.is_some() {
                let git = git.clone();
                shared.set_sync(Arc::new(move || git.sync.notify_one()));
            }
            tracing::info!(source = %git.describe(), poll = ?git.repo.source.poll, "following a git source");
            None
        }
    };
    let heartbeat = Heartbeat::default();
    tokio::spawn(systemd::watchdog(heartbeat.clone(), shutdown.clone()));
    // The loop's pulse: it beats while idle, and while a turn is younger than a converge
    // may take (progress_deadline bounds every converge); a turn older than that is hung,
    // the beats stop, and systemd's watchdog restarts berth.
    let turn_started: Arc<Mutex<Option<Instant>>> = Arc::default();
    tokio::spawn(pulse(
        heartbeat.clone(),
        turn_started.clone(),
        shutdown.clone(),
    ));

    let rt: Arc<DockerRuntime> = Arc::new(connect(&shared, &shutdown).await);
    shared.set_ui_engine(rt.clone());
    for listen in &settings.listen {
        if let Listen::HostGateway(port) = listen {
            let ip = host_gateway(&rt, &shutdown).await;
            let addr = SocketAddr::new(ip, *port);
            serve_on(addr, listen.scope(), &shared, &shutdown).await?;
            endpoint.get_or_insert((addr, listen.scope()));
        }
    }
    // Where `berth status` asks this daemon (named in its lock file).
    let endpoint = endpoint.map(|(a, _)| reachable(a).to_string());
    let mut daemon = Daemon {
        rt,
        store,
        settings,
        shared,
        shutdown: shutdown.clone(),
        wake: Arc::new(wake),
        endpoint,
        memory: Mutex::new(Memory::default()),
        turn_started,
        daemon_lock: None,
        follower: None,
        ready: false,
        crashloops: crate::daemon::controller::crashloop::RestartTracker::new(Default::default()),
        notify_wake,
    };
    scheduler.run(shutdown, async || daemon.turn().await).await;
    systemd::stopping();
    tracing::info!("stopped; no container was stopped");
    Ok(())
}

/// The daemon's loop: what it holds between turns, and one turn with what the daemon
/// adds around it (its lock, the engine follower, the crash-loop holds, metrics, status).
struct Daemon {
    rt: Arc<DockerRuntime>,
    store: Store,
    settings: Settings,
    shared: Arc<Shared>,
    shutdown: Shutdown,
    /// Enqueues a reconcile (what every trigger calls).
    wake: Arc<dyn Fn(Reason) + Send + Sync>,
    /// Where `berth status` asks this daemon (named in its lock file).
    endpoint: Option<String>,
    memory: Mutex<Memory>,
    /// When the running turn started (the pulse judges a hung loop by it).
    turn_started: Arc<Mutex<Option<Instant>>>,
    /// The project's daemon lock (one `berth run` per project) and its engine follower,
    /// both set up once a desired state names the project (the lock with the project it
    /// was taken for).
    daemon_lock: Option<(String, ProjectLock)>,
    follower: Option<(String, tokio::task::JoinHandle<()>)>,
    /// READY=1 was sent.
    ready: bool,
    /// Drift repairs of a service that keeps dying are held, not retried in a tight loop.
    crashloops: crate::daemon::controller::crashloop::RestartTracker,
    /// Wakes the notification sender: a turn may have recorded an event.
    notify_wake: Arc<tokio::sync::Notify>,
}

impl Daemon {
    /// One turn; asks to run again when a crash-loop hold ends.
    async fn turn(&mut self) -> Result<scheduler::Action, crate::daemon::turn::TurnError> {
        let started = Instant::now();
        *self.turn_started.lock().expect("pulse lock") = Some(started);
        let report = Reporter::new(crate::redact::registered());
        let progress = self
            .memory
            .lock()
            .expect("memory lock")
            .project
            .clone()
            .map(|project| {
                tokio::spawn(publish_progress(
                    self.shared.clone(),
                    self.settings.target.state.clone(),
                    project,
                ))
            });
        let result = turn(
            &*self.rt,
            &self.store,
            &self.settings.target,
            &self.memory,
            &report,
            &self.shutdown,
        )
        .await;
        if let Some(task) = progress {
            task.abort();
        }
        *self.turn_started.lock().expect("pulse lock") = None;
        let project = self.memory.lock().expect("memory lock").project.clone();
        if let Some(project) = &project {
            self.hold_project(project).await;
        }
        let (crashlooping, requeue) = self.hold_crashloops(&result);
        self.record(&result, started.elapsed());
        publish(
            &self.rt,
            &self.store,
            &self.settings.target,
            &self.memory,
            &self.shared,
            result.as_ref().err(),
            crashlooping,
        )
        .await;
        self.record_standing(&result).await;
        self.notify_wake.notify_one();
        // The git source's trees and objects no kept generation uses go, now that
        // this turn's generation is recorded.
        if let Some(git) = &self.settings.target.git {
            git.prune(&self.store).await;
        }
        if !self.ready && result.is_ok() {
            self.ready = true;
            self.shared.mark_ready();
            systemd::ready();
        }
        result.map(|_| match requeue {
            Some(after) => scheduler::Action::Requeue(after),
            None => scheduler::Action::AwaitChange,
        })
    }

    /// What only the daemon knows, for notifications (docs/design.md §14): the desired
    /// state is blocked (invalid, its pre-flight failed, poisoned), or the project is
    /// converged again, which ends an incident it was in. The store writes an event only
    /// when it is news: the same blocked desired state on every turn is one event.
    async fn record_standing(&self, result: &Result<TurnOutcome, crate::daemon::turn::TurnError>) {
        let (project, problem) = {
            let m = self.memory.lock().expect("memory lock");
            (m.project.clone(), m.problem.clone())
        };
        let Some(project) = project else { return };
        let status = self
            .shared
            .reports()
            .into_iter()
            .find(|r| r.project == project)
            .map(|r| r.status);
        let happened = match (&problem, status) {
            (Some(_), _) => Happened::Blocked {
                poisoned_by: match result {
                    Ok(TurnOutcome::Reconciled(ApplyOutcome::Poisoned { generation, .. })) => {
                        Some(*generation)
                    }
                    _ => None,
                },
            },
            (None, Some(ProjectStatus::Converged)) => Happened::Converged,
            _ => return,
        };
        if let Err(e) = self
            .store
            .record_standing(&project, happened, problem.as_deref())
            .await
        {
            tracing::warn!(error = %e, "cannot record the project's standing for notifications");
        }
    }

    /// Once a desired state names the project: take its daemon lock (saying where this
    /// daemon serves) and follow the engine's events for it.
    async fn hold_project(&mut self, project: &String) {
        // A desired state that renames the project (the package's example, filled in):
        // the old name's lock goes, the new one's is taken.
        if self.daemon_lock.as_ref().is_some_and(|(p, _)| p != project) {
            self.daemon_lock = None;
        }
        if self.daemon_lock.is_none() {
            let target = &self.settings.target;
            let mut lock = hold_daemon_lock(target, project, &self.shutdown).await;
            let file = match &target.git {
                Some(git) => format!("git {}", git.describe()),
                None => std::path::absolute(&target.file)
                    .unwrap_or_else(|_| target.file.clone())
                    .display()
                    .to_string(),
            };
            if let Err(e) = lock.set_serves(self.endpoint.clone(), file) {
                tracing::warn!(error = %e, "cannot write where this daemon serves into its lock file");
            }
            self.daemon_lock = Some((project.clone(), lock));
        }
        if self.follower.as_ref().is_none_or(|(p, _)| p != project) {
            if let Some((_, task)) = self.follower.take() {
                task.abort();
            }
            let on_event = self.wake.clone();
            let on_service = self.wake.clone();
            let wake = self.wake.clone();
            let on_reachable = engine_reachable(self.shared.clone(), move |r| wake(r));
            let containers = crate::daemon::triggers::follow_engine(
                self.rt.clone(),
                project.clone(),
                Arc::new(move || on_event(Reason::Engine)),
                on_reachable,
                self.shutdown.clone(),
            );
            // Under engine = "swarm" its services' events too (idle on a plain engine).
            let services = crate::daemon::triggers::follow_swarm_services(
                project.clone(),
                Arc::new(move || on_service(Reason::Engine)),
                self.shutdown.clone(),
            );
            self.follower = Some((
                project.clone(),
                tokio::spawn(async move {
                    tokio::join!(containers, services);
                }),
            ));
        }
    }

    /// Count this turn's repairs and hold the services that repair too often: what
    /// status says of them, and how long until the first hold ends (the next turn then).
    fn hold_crashloops(
        &mut self,
        result: &Result<TurnOutcome, crate::daemon::turn::TurnError>,
    ) -> (Option<String>, Option<Duration>) {
        let repaired: &[String] = match result {
            Ok(TurnOutcome::Reconciled(ApplyOutcome::Repaired { services, .. }))
            | Ok(TurnOutcome::Kept {
                repair: Some(ApplyOutcome::Repaired { services, .. }),
                ..
            }) => services,
            _ => &[],
        };
        let now = tokio::time::Instant::now();
        for service in repaired {
            self.crashloops.record(service, now);
        }
        let held = self.crashloops.held(now);
        self.memory.lock().expect("memory lock").hold =
            held.iter().map(|h| h.service.clone()).collect();
        let requeue = self
            .crashloops
            .next_release(now)
            .map(|at| at.saturating_duration_since(now));
        let crashlooping = (!held.is_empty()).then(|| {
            held.iter()
                .map(|h| h.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        });
        (crashlooping, requeue)
    }

    /// The turn in the metrics.
    fn record(&self, result: &Result<TurnOutcome, crate::daemon::turn::TurnError>, took: Duration) {
        let metrics = self.shared.metrics();
        match result {
            Ok(TurnOutcome::Reconciled(outcome)) => {
                metrics.record_outcome(outcome, took);
                if let ApplyOutcome::Repaired { services, .. } = outcome {
                    metrics.record_repairs(services);
                }
            }
            Ok(TurnOutcome::Kept { repair, .. }) => {
                metrics.record_reconcile(ReconcileResult::Invalid, took);
                if let Some(ApplyOutcome::Repaired { services, .. }) = repair {
                    metrics.record_repairs(services);
                }
            }
            Err(_) => metrics.record_reconcile(ReconcileResult::Error, took),
        }
    }
}

/// Start the notification sender beside the loop, with its own store handle (it never
/// holds up a turn, nor a turn it), counting what it sends in the metrics. What wakes it.
async fn spawn_sender(
    settings: &Settings,
    shared: &Arc<Shared>,
    shutdown: &Shutdown,
) -> Result<Arc<tokio::sync::Notify>, DaemonError> {
    let wake = Arc::new(tokio::sync::Notify::new());
    let observe: crate::notify::send::Observe = {
        let shared = shared.clone();
        Arc::new(move |sent, depth| {
            for s in sent {
                shared.metrics().record_notification(s.next.label());
            }
            shared.metrics().set_outbox_depth(depth);
        })
    };
    tokio::spawn(crate::notify::send::run(
        Store::open(&settings.target.state).await?,
        wake.clone(),
        shutdown.clone(),
        observe,
    ));
    Ok(wake)
}

async fn serve_on(
    addr: SocketAddr,
    scope: http::Scope,
    shared: &Arc<Shared>,
    shutdown: &Shutdown,
) -> Result<(), DaemonError> {
    let listener = http::bind(addr).await?;
    tokio::spawn(http::serve(
        listener,
        scope,
        shared.clone(),
        shutdown.clone(),
    ));
    let limits = shared.limits();
    match scope {
        http::Scope::Loopback => {
            tracing::info!(listen = %addr, max_connections = limits.max_connections, "serving /healthz, /readyz, /metrics, /api/v1/status; POST /api/v1/reconcile")
        }
        http::Scope::Exposed if shared.has_token() => {
            tracing::info!(listen = %addr, max_connections = limits.max_connections, "serving /healthz, /readyz, /metrics, /api/v1/status; POST /api/v1/reconcile with the API token")
        }
        http::Scope::Exposed => {
            tracing::info!(listen = %addr, max_connections = limits.max_connections, "serving /healthz, /readyz, /metrics, /api/v1/status; read-only: this listener is not loopback and there is no --api-token-file")
        }
    }
    Ok(())
}

/// The address a client on this host connects to for a listen address: a wildcard
/// (0.0.0.0, ::) is reached through loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// The engine's host-gateway address, asked until it answers (or a stop is asked).
async fn host_gateway(rt: &DockerRuntime, shutdown: &Shutdown) -> std::net::IpAddr {
    let mut delay = Duration::from_millis(250);
    loop {
        match rt.host_gateway().await {
            Ok(ip) => return ip,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "cannot learn the host-gateway address")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.requested() => std::process::exit(0),
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// How long one turn may run before the loop counts as hung: the longest converge berth
/// allows (a 10 min progress_deadline by default, a revert after it) and some room.
/// `BERTH_TURN_LIMIT` (a duration such as `30s`) sets it.
const TURN_LIMIT: Duration = Duration::from_secs(25 * 60);

async fn pulse(
    heartbeat: Heartbeat,
    turn_started: Arc<Mutex<Option<Instant>>>,
    shutdown: Shutdown,
) {
    let limit = match std::env::var("BERTH_TURN_LIMIT") {
        Ok(v) => crate::spec::duration::parse(&v).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "BERTH_TURN_LIMIT ignored");
            TURN_LIMIT
        }),
        Err(_) => TURN_LIMIT,
    };
    // The turn (by its start) already said to be over its limit.
    let mut told: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.requested() => return,
        }
        let started = *turn_started.lock().expect("pulse lock");
        match started {
            Some(t) if t.elapsed() >= limit => {
                if told != Some(t) {
                    told = Some(t);
                    tracing::error!(
                        limit = %crate::spec::duration::format(limit),
                        "a turn has run longer than its limit; the reconcile loop counts as hung and stops beating"
                    );
                }
            }
            _ => heartbeat.beat(),
        }
    }
}

/// Connect to the engine, retrying with backoff until it answers (or a stop is asked).
async fn connect(shared: &Shared, shutdown: &Shutdown) -> DockerRuntime {
    let mut delay = Duration::from_millis(250);
    loop {
        match DockerRuntime::connect().await {
            Ok(rt) => {
                shared.metrics().set_engine_reachable(true);
                return rt;
            }
            Err(e) => {
                shared.metrics().set_engine_reachable(false);
                systemd::status(&format!("engine unreachable: {e}"));
                tracing::warn!(error = %e, retry_in = ?delay, "the Docker engine is not reachable");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.requested() => std::process::exit(0),
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// What the engine follower says about reachability: the metric follows it; the engine
/// going away asks for a turn (which fails unanswered, backs off and says so in status),
/// and its coming back asks for one that cuts a backoff short ([`Reason::Reconnected`]):
/// what was missed meanwhile is put right at once.
fn engine_reachable(
    shared: Arc<Shared>,
    wake: impl Fn(Reason) + Clone + Send + Sync + 'static,
) -> Arc<dyn Fn(bool) + Send + Sync> {
    let (away, back) = (wake.clone(), wake);
    crate::daemon::triggers::on_reachability(
        Arc::new(move |up| shared.metrics().set_engine_reachable(up)),
        Arc::new(move || {
            tracing::warn!("the Docker engine does not answer; reconnecting with backoff");
            away(Reason::Engine);
        }),
        Arc::new(move || {
            tracing::info!("the Docker engine answers again; reconciling now");
            back(Reason::Reconnected);
        }),
    )
}

/// One `berth run` per project: a second one waits here, and says so.
async fn hold_daemon_lock(target: &Target, project: &str, shutdown: &Shutdown) -> ProjectLock {
    let name = crate::lock::daemon_lock_name(project);
    loop {
        match crate::lock::acquire(&target.state, &name, "run", true, shutdown, |holder| {
            tracing::warn!(%holder, project, "another berth run serves this project; waiting for it to stop");
        })
        .await
        {
            Ok(lock) => return lock,
            Err(crate::lock::LockError::Interrupted { .. }) => std::process::exit(0),
            Err(e) => {
                tracing::error!(error = %e, "cannot take the daemon lock; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// How often a turn looks whether it began a converge.
const PROGRESS_POLL: Duration = Duration::from_millis(250);

/// While a turn runs: once its converge has recorded a generation that is `progressing`
/// (or `reverting`) under a held lock, publish the last report with the status
/// `progressing`, as `berth status` would work it out, so `/api/v1/status`, `berth
/// status` and the status page's live updates say so while it runs, not only after.
/// A turn that changes nothing publishes nothing here. Aborted when the turn ends; the
/// turn's own report follows.
async fn publish_progress(shared: Arc<Shared>, state: std::path::PathBuf, project: String) {
    let mut shown: Option<i64> = None;
    loop {
        tokio::time::sleep(PROGRESS_POLL).await;
        let Some(store) = shared.ui_store() else {
            return;
        };
        let Ok(Some(latest)) = store.latest(&project).await else {
            continue;
        };
        let converging = matches!(
            latest.outcome,
            crate::store::Outcome::Progressing | crate::store::Outcome::Reverting
        );
        if !converging || shown == Some(latest.id) {
            continue;
        }
        let holder = match crate::lock::is_held(&state, &project) {
            Ok(Some(h)) => h,
            _ => continue,
        };
        shown = Some(latest.id);
        let mut report = shared
            .reports()
            .into_iter()
            .find(|r| r.project == project)
            .unwrap_or_else(|| crate::status::Report::empty(&project, ProjectStatus::Unknown));
        report.status = ProjectStatus::Progressing(format!("generation {} by {holder}", latest.id));
        report.generation = Some(latest.id);
        report.outcome = Some(latest.outcome.to_string());
        report.holder = Some(holder);
        systemd::status(&format!("project {}: {}", report.project, report.status));
        shared.publish(vec![report]);
    }
}

/// Work out the project's status and publish it: the HTTP endpoint, the metrics and the
/// systemd STATUS= line all say the same thing.
async fn publish(
    rt: &DockerRuntime,
    store: &Store,
    target: &Target,
    memory: &Mutex<Memory>,
    shared: &Shared,
    error: Option<&crate::daemon::turn::TurnError>,
    crashlooping: Option<String>,
) {
    let (project, problem, names_no_service) = {
        let m = memory.lock().expect("memory lock");
        (m.project.clone(), m.problem.clone(), m.names_no_service)
    };
    // What the daemon knows; the status module decides what it makes of it.
    let view = crate::status::DaemonView {
        problem,
        crashlooping,
        turn_error: error.map(|e| crate::status::TurnError {
            message: e.to_string(),
            unreachable: e.is_unreachable(),
        }),
        git_problem: target.git.as_ref().and_then(|g| g.problem()),
    };
    let Some(project) = project else {
        systemd::status(&view.before_a_project());
        return;
    };
    let mut report =
        match crate::status::project_status(rt, store, &target.state, &project, None).await {
            Ok(mut report) => {
                // The status was read from the engine just now: it answers.
                shared.metrics().set_engine_reachable(true);
                if report.generation.is_none() && names_no_service {
                    report.status = ProjectStatus::Converged;
                }
                report.status = view.status(Ok(report.status.clone()));
                report
            }
            // It cannot be worked out without the engine (or the store): the last report
            // stands, its services as last seen, its status saying why.
            Err(e) => {
                if e.is_unreachable() {
                    shared.metrics().set_engine_reachable(false);
                }
                let mut report = shared
                    .reports()
                    .into_iter()
                    .find(|r| r.project == project)
                    .unwrap_or_else(|| {
                        crate::status::Report::empty(&project, ProjectStatus::Converged)
                    });
                report.status = view.status(Err((e.to_string(), e.is_unreachable())));
                report
            }
        };
    if let Some(git) = &target.git {
        let mut g = report.git.take().unwrap_or_default();
        g.source = git.describe();
        if let Some(c) = git.latest() {
            g.newest = Some(c.id);
            g.newest_subject = Some(c.subject);
        }
        g.problem = view.git_problem.clone();
        report.git = Some(g);
    }
    systemd::status(&format!("project {}: {}", report.project, report.status));
    shared.publish(vec![report]);
}
