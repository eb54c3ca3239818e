//! The daemon's local HTTP endpoint: what Prometheus scrapes, what `berth status` asks when
//! a daemon runs, and how a person or a git host's webhook asks for a reconcile or a fetch.
//!
//! | route                     | answer                                                   |
//! |---------------------------|----------------------------------------------------------|
//! | `GET /healthz`            | 200 while the process serves                             |
//! | `GET /readyz`             | 200 once the engine and the desired state were observed, 503 before |
//! | `GET /metrics`            | the Prometheus text ([`super::metrics`])                 |
//! | `GET /api/v1/status`      | the JSON of `berth status --json`                        |
//! | `POST /api/v1/reconcile`  | 202: a reconcile is enqueued (never run here); on a listener that is not loopback only with the API token, 401 without |
//! | `POST /api/v1/sync`       | with a git source and `--api-token-file`: 202, a fetch now; 401 without the token; 404 otherwise |
//! | `GET /`                   | the status page ([`crate::ui`], docs/status-page.md)      |
//! | `GET /generation/N`       | one generation's timeline, evidence and diff             |
//! | `GET /logs/SERVICE`       | a service's recent log lines, secrets hidden             |
//! | `GET /login?token=TOKEN`  | sets the token as a cookie (exposed listeners with `--ui`), then to `/` |
//! | `GET /api/v1/events`      | server-sent events: the status word, generation and services on every change |
//! | `GET /api/v1/history`     | the page's history as JSON (newest first, evidence and diff of failed ones) |
//! | `GET /api/v1/generation/N`| one generation as JSON                                   |
//!
//! Anything else is 404; a known path with another method is 405 with `Allow`. The token
//! goes as `Authorization: Bearer TOKEN`, or, for the page's routes, as the cookie
//! `/login` sets.
//!
//! The page's routes (the page, `/generation`, `/logs`, `/login`, the events, history
//! and generation JSON) answer on a loopback listener. On an exposed one they need
//! `berth run --ui` and the token, and with `--ui` so does `/api/v1/status`; otherwise
//! they are 401 with a body that says nothing of the project ([`ui_access`]).
//!
//! A listener is untrusted (docs/design.md §12). One on loopback ([`Scope::Loopback`],
//! the default [`DEFAULT_LISTEN`]) is reached only from this host, and a reconcile there
//! needs no token. Anything else ([`Scope::Exposed`]: `host-gateway:PORT`, which every
//! container reaches, a wildcard, another interface) serves only the read-only routes
//! unless `berth run --api-token-file` gave a token, and then changes only for requests
//! that carry it. Whoever reaches a listener gets bounded resources ([`Limits`]): a cap
//! on connections that evicts rather than refuses, header, idle and body timeouts, and a
//! bounded body. However often a reconcile is asked for, the scheduler starts at most one
//! ahead of schedule per 30 s for the API
//! ([`crate::daemon::controller::scheduler::API_INTERVAL`]).
//!
//! Plain hyper 1 with hyper-util rather than axum: bollard already compiles them, and a
//! dozen fixed routes are one `match`, with no router, extractors or tower layers to learn.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::metrics::{self, Metrics};
use crate::runtime::docker::DockerRuntime;
use crate::shutdown::Shutdown;
use crate::status::Report;
use crate::store::Store;

/// Where `berth run --listen` listens unless told otherwise: loopback, the port the
/// stack's Prometheus scrapes (`host.docker.internal:9464`).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// One `--listen` value: an address, or `host-gateway:PORT`, the address containers reach
/// the host by (`host.docker.internal` with `extra_hosts = [...:host-gateway]`), asked of
/// the engine when the daemon starts. That is where the stack's Prometheus scrapes berth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    Addr(SocketAddr),
    HostGateway(u16),
}

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(port) = s.strip_prefix("host-gateway:") {
            return port
                .parse()
                .map(Listen::HostGateway)
                .map_err(|_| format!("{port:?} is not a port (expected host-gateway:PORT)"));
        }
        s.parse().map(Listen::Addr).map_err(|_| {
            format!("{s:?} is not an address to listen on (IP:PORT, or host-gateway:PORT)")
        })
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Addr(a) => write!(f, "{a}"),
            Listen::HostGateway(p) => write!(f, "host-gateway:{p}"),
        }
    }
}

impl Listen {
    /// Who can reach this listener, which decides what it may change.
    pub fn scope(&self) -> Scope {
        match self {
            Listen::Addr(a) if a.ip().is_loopback() => Scope::Loopback,
            // Containers reach host-gateway whatever its address; a wildcard or another
            // interface is reached from beyond this host.
            _ => Scope::Exposed,
        }
    }
}

/// Who can reach a listener (docs/design.md §12, "a listener is untrusted").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Bound to a loopback address: only this host's processes reach it, and
    /// `POST /api/v1/reconcile` is open to them, as it always was.
    Loopback,
    /// host-gateway (every container), a wildcard or another interface: the routes that
    /// change something need the API token here; without one it serves only the
    /// read-only routes.
    Exposed,
}

/// How much one client may hold of the endpoint. Every bound is per process, shared by
/// all listeners, because the file descriptors they spend are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at most. At the cap a new connection is still taken: the one that
    /// can best spare its place is closed for it (the oldest of those that never sent a
    /// complete request, else the one quiet the longest), so idle or slow-header
    /// connections can fill the endpoint but never lock `/healthz` out of it.
    pub max_connections: usize,
    /// A request head must be complete within this from when the connection starts
    /// waiting for it: its accept, or the end of the previous answer. So it also bounds a
    /// keep-alive connection's idle time between requests (hyper's header-read timer).
    pub header_timeout: Duration,
    /// A connection that moves no byte either way for this long is closed, whatever it is
    /// doing: a client that stopped reading its answer, say.
    pub idle_timeout: Duration,
    /// A request body (read only on the routes that act, and thrown away: none takes
    /// one, but a git host's webhook sends its JSON) must arrive within this: 408.
    pub body_timeout: Duration,
    /// ... and be at most this long: 413.
    pub max_body: u64,
}

/// [`Limits::max_connections`] is a quarter of the file-descriptor limit, within these:
/// the other three quarters stay for the engine, git, the store and the probes, whatever
/// the endpoint's clients do. Under the unit's `LimitNOFILE=4096` it is 512.
const MIN_CONNECTIONS: usize = 16;
const MAX_CONNECTIONS: usize = 512;

impl Limits {
    /// The limits for a process that may open `nofile` file descriptors.
    pub fn for_fd_limit(nofile: u64) -> Limits {
        let quarter = usize::try_from(nofile / 4).unwrap_or(usize::MAX);
        Limits {
            max_connections: quarter.clamp(MIN_CONNECTIONS, MAX_CONNECTIONS),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(10),
            max_body: 1024 * 1024,
        }
    }
}

impl Default for Limits {
    /// For this process's file-descriptor limit (`RLIMIT_NOFILE`, its soft value).
    fn default() -> Limits {
        let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        Limits::for_fd_limit(nofile.unwrap_or(u64::MAX))
    }
}

/// How long a stop waits for requests already being answered before dropping them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause after a failed `accept` (out of file descriptors, say) so the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Bind the endpoint's listener, with an error that names the address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// Asks the daemon for a reconcile. It only enqueues (the scheduler collapses duplicates,
/// and starts at most one early run per interval for the API), so it is cheap and never
/// blocks the request.
pub type Enqueue = Arc<dyn Fn() + Send + Sync>;

/// What the daemon loop publishes and the endpoint reads.
pub struct Shared {
    /// The latest status, one report per project, replaced whole by [`Shared::publish`]
    /// so a reader never sees half an update. A std lock: never held across an await.
    reports: RwLock<Vec<Report>>,
    /// Recorded into by the daemon loop, encoded on `GET /metrics`.
    metrics: Metrics,
    /// Set once the daemon has observed the engine and the desired state: `/readyz`.
    ready: AtomicBool,
    /// Called by `POST /api/v1/reconcile`.
    enqueue: Enqueue,
    /// The operator's API token (`--api-token-file`): what a request that changes
    /// something must carry on an exposed listener, and `POST /api/v1/sync` anywhere.
    token: RwLock<Option<String>>,
    /// `POST /api/v1/sync`: the fetch it asks for, with a git source.
    sync: RwLock<Option<Enqueue>>,
    limits: Limits,
    /// Every open connection of every listener.
    connections: Connections,
    /// `berth run --ui`: the page's routes answer on exposed listeners too, with the token.
    ui_exposed: AtomicBool,
    /// What the page reads: the store (set when the daemon starts) and the engine (once
    /// it answered).
    ui_store: std::sync::OnceLock<Store>,
    ui_engine: std::sync::OnceLock<Arc<DockerRuntime>>,
    /// Counts the reports published: the live updates wake on it.
    changes: tokio::sync::watch::Sender<u64>,
    /// Live-update streams open now, at most half of [`Limits::max_connections`].
    streams: Arc<std::sync::atomic::AtomicUsize>,
    /// When the running containers started, by service, as of the report numbered so.
    started: Mutex<Option<(u64, std::collections::BTreeMap<String, i64>)>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("ready", &self.is_ready())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// With the [`Limits`] of this process's file-descriptor limit.
    pub fn new(metrics: Metrics, enqueue: Enqueue) -> Shared {
        Shared::with_limits(metrics, enqueue, Limits::default())
    }

    pub fn with_limits(metrics: Metrics, enqueue: Enqueue, limits: Limits) -> Shared {
        Shared {
            reports: RwLock::new(Vec::new()),
            metrics,
            ready: AtomicBool::new(false),
            enqueue,
            token: RwLock::new(None),
            sync: RwLock::new(None),
            connections: Connections::new(limits.max_connections),
            limits,
            ui_exposed: AtomicBool::new(false),
            ui_store: std::sync::OnceLock::new(),
            ui_engine: std::sync::OnceLock::new(),
            changes: tokio::sync::watch::Sender::new(0),
            streams: Arc::default(),
            started: Mutex::new(None),
        }
    }

    /// `berth run --ui`: serve the page on exposed listeners, to requests that carry the
    /// API token (a header, or the cookie `/login` sets).
    pub fn set_ui_exposed(&self, on: bool) {
        self.ui_exposed.store(on, Ordering::Release);
    }

    /// The store the page reads its history from (a handle of its own).
    pub fn set_ui_store(&self, store: Store) {
        let _ = self.ui_store.set(store);
    }

    /// The engine the page asks for uptimes and log lines.
    pub fn set_ui_engine(&self, engine: Arc<DockerRuntime>) {
        let _ = self.ui_engine.set(engine);
    }

    /// The store the page reads, once set.
    pub fn ui_store(&self) -> Option<&Store> {
        self.ui_store.get()
    }

    /// Live-update streams open now.
    pub fn open_streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }

    /// The API token: exposed listeners take requests that change something when they
    /// carry it (`Authorization: Bearer TOKEN`).
    pub fn set_token(&self, token: String) {
        *self.token.write().expect("token lock") = Some(token);
    }

    /// Open `POST /api/v1/sync` (for requests that carry the API token): `fetch` asks the
    /// git source for a fetch now.
    pub fn set_sync(&self, fetch: Enqueue) {
        *self.sync.write().expect("sync lock") = Some(fetch);
    }

    /// Whether an API token was set.
    pub fn has_token(&self) -> bool {
        self.token.read().expect("token lock").is_some()
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Connections open now, on every listener.
    pub fn open_connections(&self) -> usize {
        self.connections.len()
    }

    /// The metrics, for the daemon loop to record into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The daemon has observed the engine and the desired state: `/readyz` answers 200
    /// from now on (readiness is not withdrawn; an unreachable engine shows in status and
    /// `berth_engine_reachable` instead).
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Publish the latest status: served on `/api/v1/status` and shown in the metrics.
    pub fn publish(&self, reports: Vec<Report>) {
        for r in &reports {
            self.metrics.set_status(r);
        }
        *self.reports.write().expect("status lock is not poisoned") = reports;
        // The live updates follow.
        self.changes.send_modify(|n| *n += 1);
    }

    /// The latest published status.
    pub fn reports(&self) -> Vec<Report> {
        self.reports
            .read()
            .expect("status lock is not poisoned")
            .clone()
    }

    fn status_json(&self) -> serde_json::Result<String> {
        crate::status::reports_json(&self.reports.read().expect("status lock is not poisoned"))
    }
}

/// One open connection, as the registry and its own task see it.
#[derive(Debug)]
struct Conn {
    id: u64,
    accepted: Instant,
    /// Milliseconds after `accepted` of the last byte read or written.
    last_io_ms: AtomicU64,
    /// A complete request head has arrived on it.
    requested: AtomicBool,
    /// Told to close, to make room for a newer connection.
    evict: Notify,
}

impl Conn {
    fn touch(&self) {
        let ms = u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_io_ms.store(ms, Ordering::Relaxed);
    }

    fn last_io(&self) -> Instant {
        self.accepted + Duration::from_millis(self.last_io_ms.load(Ordering::Relaxed))
    }

    /// Which connection goes first at the cap: one that never sent a complete request
    /// (idle, or a slow head) before one that did, then the oldest of those, by its
    /// accept or its last byte.
    fn eviction_order(&self) -> (bool, Instant) {
        match self.requested.load(Ordering::Relaxed) {
            false => (false, self.accepted),
            true => (true, self.last_io()),
        }
    }
}

/// The open connections of every listener, bounded by [`Limits::max_connections`].
#[derive(Debug)]
struct Connections {
    max: usize,
    open: Mutex<Vec<Arc<Conn>>>,
    next_id: AtomicU64,
}

impl Connections {
    fn new(max: usize) -> Connections {
        Connections {
            max: max.max(1),
            open: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
        }
    }

    fn len(&self) -> usize {
        self.open.lock().expect("connections lock").len()
    }

    /// Register a new connection. At the cap, another is told to close first: the new
    /// one is always taken, so a client that fills the endpoint cannot keep others out.
    /// Returns the connection and whether one was evicted for it.
    fn admit(&self) -> (Arc<Conn>, bool) {
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            accepted: Instant::now(),
            last_io_ms: AtomicU64::new(0),
            requested: AtomicBool::new(false),
            evict: Notify::new(),
        });
        let mut open = self.open.lock().expect("connections lock");
        let evicted = open.len() >= self.max && Connections::evict_from(&mut open);
        open.push(conn.clone());
        (conn, evicted)
    }

    /// Close the connection that can best spare its place (out of file descriptors).
    fn evict_one(&self) -> bool {
        Connections::evict_from(&mut self.open.lock().expect("connections lock"))
    }

    fn evict_from(open: &mut Vec<Arc<Conn>>) -> bool {
        let Some(i) = open
            .iter()
            .enumerate()
            .min_by_key(|(_, c)| c.eviction_order())
            .map(|(i, _)| i)
        else {
            return false;
        };
        let victim = open.swap_remove(i);
        // A permit if its task is not waiting right now: it closes at its next look.
        victim.evict.notify_one();
        true
    }

    fn remove(&self, id: u64) {
        self.open
            .lock()
            .expect("connections lock")
            .retain(|c| c.id != id);
    }
}

/// A connection's socket, noting when a byte last moved (for the idle timeout and the
/// eviction order).
struct Tracked {
    stream: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.conn.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.conn.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Out of file descriptors, for the process (EMFILE) or the system (ENFILE).
fn out_of_fds(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Serve the endpoint on `listener` until `shutdown` fires: then stop accepting, let the
/// requests being answered finish (for at most `DRAIN_TIMEOUT`, 5 s) and return. Errors of
/// one connection or one `accept` are logged; they never end the server. `scope` says who
/// reaches the listener, which decides what it may change.
pub async fn serve(listener: TcpListener, scope: Scope, shared: Arc<Shared>, shutdown: Shutdown) {
    let connections = GracefulShutdown::new();
    let stop = shutdown.requested();
    tokio::pin!(stop);
    let limits = shared.limits;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Another connection gives up its descriptor for the one waiting (which
                // may be /healthz); a client cannot starve the endpoint by holding them.
                Err(e) if out_of_fds(&e) && shared.connections.evict_one() => {
                    tracing::warn!(error = %e, "the HTTP endpoint is out of file descriptors; closed a connection to take a new one");
                    tokio::task::yield_now().await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the HTTP endpoint could not accept a connection");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let (conn, evicted) = shared.connections.admit();
        let service = {
            let (shared, conn, shutdown) = (shared.clone(), conn.clone(), shutdown.clone());
            service_fn(move |req| {
                conn.requested.store(true, Ordering::Relaxed);
                answer(shared.clone(), scope, req, shutdown.clone())
            })
        };
        let io = TokioIo::new(Tracked {
            stream,
            conn: conn.clone(),
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(io, service);
        let connection = connections.watch(connection);
        let shared = shared.clone();
        tokio::spawn(async move {
            // Boxed, so that it can be dropped (closing its socket) before the
            // registry forgets it.
            let mut connection = Box::pin(connection);
            loop {
                tokio::select! {
                    done = &mut connection => {
                        if let Err(e) = done {
                            tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                        }
                        break;
                    }
                    _ = conn.evict.notified() => {
                        tracing::debug!(%peer, "HTTP connection closed to make room for a newer one");
                        break;
                    }
                    _ = tokio::time::sleep_until(conn.last_io() + limits.idle_timeout) => {
                        if conn.last_io().elapsed() >= limits.idle_timeout {
                            tracing::debug!(%peer, "HTTP connection closed: no byte moved for {:?}", limits.idle_timeout);
                            break;
                        }
                    }
                }
            }
            // Dropping the connection closes its socket.
            drop(connection);
            shared.connections.remove(conn.id);
        });
        if evicted {
            // Let the evicted connection's task close its socket before the next accept
            // takes another descriptor.
            tokio::task::yield_now().await;
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP requests still open after {DRAIN_TIMEOUT:?}; dropped");
    }
}

/// The endpoint's routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Healthz,
    Readyz,
    Metrics,
    Status,
    Reconcile,
    Sync,
    /// The status page's routes ([`crate::ui`]).
    Ui(UiRoute),
}

/// The status page's routes: on an exposed listener only with `--ui` and the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UiRoute {
    Page,
    Generation,
    Logs,
    Login,
    Events,
    History,
    GenerationJson,
}

impl Route {
    fn of(path: &str) -> Option<Route> {
        Some(match path {
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/metrics" => Route::Metrics,
            "/api/v1/status" => Route::Status,
            "/api/v1/reconcile" => Route::Reconcile,
            "/api/v1/sync" => Route::Sync,
            "/" => Route::Ui(UiRoute::Page),
            "/login" => Route::Ui(UiRoute::Login),
            "/api/v1/events" => Route::Ui(UiRoute::Events),
            "/api/v1/history" => Route::Ui(UiRoute::History),
            p if p.strip_prefix("/generation/").is_some_and(is_number) => {
                Route::Ui(UiRoute::Generation)
            }
            p if p.strip_prefix("/api/v1/generation/").is_some_and(is_number) => {
                Route::Ui(UiRoute::GenerationJson)
            }
            p if p.strip_prefix("/logs/").is_some_and(is_name) => Route::Ui(UiRoute::Logs),
            _ => return None,
        })
    }

    fn method(self) -> Method {
        match self {
            Route::Reconcile | Route::Sync => Method::POST,
            _ => Method::GET,
        }
    }

    /// [`Route::method`] as the `Allow` header of a 405.
    fn allow(self) -> HeaderValue {
        match self {
            Route::Reconcile | Route::Sync => HeaderValue::from_static("POST"),
            _ => HeaderValue::from_static("GET"),
        }
    }
}

/// A generation number in a path.
fn is_number(s: &str) -> bool {
    !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit())
}

/// A service name in a path (what the desired state allows, and no more).
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// What a request asks that changes something, once it may go ahead.
enum Act {
    Reconcile,
    Sync(Enqueue),
}

/// A response, or something to do once the request's body has arrived.
enum Decision {
    Answer(Response<Full<Bytes>>),
    Act(Act),
    /// A route of the status page, allowed: answered by [`ui_answer`].
    Ui(UiRoute),
}

/// What every answer's body is: whole, or the live updates' stream.
pub type Answer = Response<BoxBody<Bytes, Infallible>>;

fn boxed(r: Response<Full<Bytes>>) -> Answer {
    r.map(BodyExt::boxed)
}

async fn answer(
    shared: Arc<Shared>,
    scope: Scope,
    req: Request<Incoming>,
    shutdown: Shutdown,
) -> Result<Answer, Infallible> {
    let (head, body) = req.into_parts();
    let header = |name| {
        head.headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let auth = header(hyper::header::AUTHORIZATION);
    let cookie = header(hyper::header::COOKIE);
    // A refusal is decided by the request line and headers alone, before any body is
    // read; hyper then closes a connection whose body was left unread.
    let act = match decide(&shared, scope, &head.method, head.uri.path(), auth, cookie) {
        Decision::Answer(r) => return Ok(boxed(r)),
        Decision::Ui(route) => {
            return Ok(ui_answer(&shared, scope, route, &head.uri, shutdown).await);
        }
        Decision::Act(act) => act,
    };
    // A request counts once it has arrived whole: its body is read, within bounds, and
    // thrown away.
    if let Err(refused) = drain(body, &shared.limits).await {
        return Ok(boxed(refused));
    }
    Ok(boxed(match act {
        Act::Reconcile => {
            (shared.enqueue)();
            text(StatusCode::ACCEPTED, "reconcile enqueued\n")
        }
        Act::Sync(fetch) => {
            fetch();
            text(StatusCode::ACCEPTED, "fetch enqueued\n")
        }
    }))
}

/// Read and discard a request body, within [`Limits::body_timeout`] and
/// [`Limits::max_body`]; a response that closes the connection when it is not.
async fn drain(mut body: Incoming, limits: &Limits) -> Result<(), Response<Full<Bytes>>> {
    let too_long = || {
        closing(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "a request body may be {} at most; nothing was done\n",
                crate::preflight::human(limits.max_body)
            ),
        ))
    };
    // A Content-Length over the bound is refused before a byte of it is read.
    if body.size_hint().lower() > limits.max_body {
        return Err(too_long());
    }
    let read = async {
        let mut seen = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                closing(text(
                    StatusCode::BAD_REQUEST,
                    format!("the request body could not be read: {e}; nothing was done\n"),
                ))
            })?;
            if let Some(data) = frame.data_ref() {
                seen = seen.saturating_add(data.len() as u64);
                if seen > limits.max_body {
                    return Err(too_long());
                }
            }
        }
        Ok(())
    };
    match tokio::time::timeout(limits.body_timeout, read).await {
        Ok(read) => read,
        Err(_) => Err(closing(text(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {:?}; nothing was done\n",
                limits.body_timeout
            ),
        ))),
    }
}

/// `Connection: close`: the rest of an unread body must not be taken for a request.
fn closing(mut r: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    r.headers_mut()
        .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Equal, in a time that does not depend on where they differ.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// 401, with the challenge.
fn unauthorized(message: impl Into<String>) -> Response<Full<Bytes>> {
    let mut r = text(StatusCode::UNAUTHORIZED, message);
    r.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer"),
    );
    r
}

/// The endpoint as a function of the request line and the `Authorization` header: the
/// answer, or what to do once the body has arrived.
///
/// - the read-only routes answer on every listener;
/// - `POST /api/v1/reconcile` is open on loopback; on an exposed listener it needs the
///   API token, and without one configured there it is always 401;
/// - `POST /api/v1/sync` needs the token everywhere (a git host's webhook calls it), and
///   is 404 without a git source or a token.
fn decide(
    shared: &Shared,
    scope: Scope,
    method: &Method,
    path: &str,
    authorization: Option<&str>,
    cookie: Option<&str>,
) -> Decision {
    let Some(route) = Route::of(path) else {
        return Decision::Answer(text(
            StatusCode::NOT_FOUND,
            format!("no such path: {path}\n"),
        ));
    };
    if *method != route.method() {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path} takes {}\n", route.method()),
        );
        r.headers_mut().insert(ALLOW, route.allow());
        return Decision::Answer(r);
    }
    let token = shared.token.read().expect("token lock").clone();
    let given = authorization
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::trim);
    let carries_token = token
        .as_deref()
        .is_some_and(|t| given.is_some_and(|g| same_token(g, t)));
    let ui_exposed = shared.ui_exposed.load(Ordering::Acquire);
    let page_access = ui_access(scope, ui_exposed, token.as_deref(), authorization, cookie);
    Decision::Answer(match route {
        // /login is how a browser gets the cookie: it checks the token it is given.
        Route::Ui(UiRoute::Login)
            if scope == Scope::Loopback || (ui_exposed && token.is_some()) =>
        {
            return Decision::Ui(UiRoute::Login);
        }
        Route::Ui(route) if page_access => return Decision::Ui(route),
        Route::Ui(_) => refused(),
        Route::Status if ui_exposed && !page_access => refused(),
        Route::Healthz => text(StatusCode::OK, "ok\n"),
        Route::Readyz if shared.is_ready() => text(StatusCode::OK, "ready\n"),
        Route::Readyz => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the engine and the desired state have not been observed yet\n",
        ),
        Route::Metrics => body(
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            shared.metrics.encode(),
        ),
        Route::Status => match shared.status_json() {
            Ok(json) => body(StatusCode::OK, "application/json", json),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the status could not be written as JSON: {e}\n"),
            ),
        },
        Route::Reconcile if scope == Scope::Loopback || carries_token => {
            return Decision::Act(Act::Reconcile);
        }
        Route::Reconcile if token.is_none() => unauthorized(
            "this listener is not loopback: it serves only the read-only routes, since \
             berth run has no --api-token-file\n",
        ),
        Route::Reconcile => unauthorized(
            "this listener is not loopback: a reconcile needs the API token \
             (Authorization: Bearer TOKEN)\n",
        ),
        Route::Sync => {
            let sync = shared.sync.read().expect("sync lock").clone();
            match sync {
                Some(fetch) if carries_token => return Decision::Act(Act::Sync(fetch)),
                Some(_) if token.is_some() => {
                    unauthorized("a sync needs the API token: Authorization: Bearer TOKEN\n")
                }
                _ => text(
                    StatusCode::NOT_FOUND,
                    "no sync here: berth run has no git source, or no --api-token-file\n",
                ),
            }
        }
    })
}

/// The cookie `/login` sets: the API token, for the page's routes on exposed listeners.
pub const COOKIE: &str = "berth_token";

/// Whether a request may read the status page's routes (and, with `--ui`, the status
/// JSON) on a listener: always on loopback; on an exposed listener only with `--ui` and
/// the API token, given as `Authorization: Bearer TOKEN` or the [`COOKIE`], compared in
/// constant time.
pub fn ui_access(
    scope: Scope,
    ui_exposed: bool,
    token: Option<&str>,
    authorization: Option<&str>,
    cookie: Option<&str>,
) -> bool {
    if scope == Scope::Loopback {
        return true;
    }
    let Some(token) = token.filter(|_| ui_exposed) else {
        return false;
    };
    let bearer = authorization
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::trim);
    bearer.is_some_and(|g| same_token(g, token))
        || cookie_value(cookie, COOKIE).is_some_and(|g| same_token(g, token))
}

/// The value of cookie `name` in a `Cookie:` header.
fn cookie_value<'a>(header: Option<&'a str>, name: &str) -> Option<&'a str> {
    header?.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then(|| v.trim_matches('"'))
    })
}

/// What a refused request to the page, its live updates or its JSON gets: 401, with a
/// body that says nothing of the project or its status.
pub const REFUSED_BODY: &str = "401 unauthorized: this listener serves the status page and its API only with berth run --ui and the API token\n";

fn refused() -> Response<Full<Bytes>> {
    let mut r = unauthorized(REFUSED_BODY);
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    r
}

fn text(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    body(status, "text/plain; charset=utf-8", message.into())
}

fn body(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

mod ui_routes;
use ui_routes::ui_answer;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_loopback_address_is_a_loopback_listener() {
        let scope = |s: &str| s.parse::<Listen>().unwrap().scope();
        assert_eq!(scope("127.0.0.1:9464"), Scope::Loopback);
        assert_eq!(scope("[::1]:9464"), Scope::Loopback);
        assert_eq!(scope("0.0.0.0:9464"), Scope::Exposed);
        assert_eq!(scope("[::]:9464"), Scope::Exposed);
        assert_eq!(scope("172.17.0.1:9464"), Scope::Exposed);
        // Whatever address the engine gives it: every container reaches it.
        assert_eq!(scope("host-gateway:9464"), Scope::Exposed);
    }

    #[test]
    fn the_connection_cap_is_a_quarter_of_the_fd_limit_within_bounds() {
        assert_eq!(Limits::for_fd_limit(512).max_connections, 128);
        assert_eq!(Limits::for_fd_limit(4096).max_connections, 512);
        assert_eq!(Limits::for_fd_limit(1 << 20).max_connections, 512);
        assert_eq!(Limits::for_fd_limit(u64::MAX).max_connections, 512);
        assert_eq!(Limits::for_fd_limit(20).max_connections, 16);
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_the_oldest_connection_without_a_request_makes_room() {
        let c = Connections::new(3);
        let (first, evicted) = c.admit();
        assert!(!evicted);
        tokio::time::advance(Duration::from_secs(1)).await;
        let (second, _) = c.admit();
        tokio::time::advance(Duration::from_secs(1)).await;
        let (third, _) = c.admit();
        // The first has been answered; the second and third never sent a request.
        first.requested.store(true, Ordering::Relaxed);
        let (fourth, evicted) = c.admit();
        assert!(evicted);
        assert_eq!(c.len(), 3);
        let open: Vec<u64> = c.open.lock().unwrap().iter().map(|c| c.id).collect();
        assert!(!open.contains(&second.id), "{open:?}");
        assert!(open.contains(&first.id) && open.contains(&third.id));
        // Told, even though nobody waits yet: a permit.
        tokio::time::timeout(Duration::from_millis(1), second.evict.notified())
            .await
            .expect("the evicted connection is told to close");
        // With only answered connections left, the one quiet the longest goes.
        third.requested.store(true, Ordering::Relaxed);
        tokio::time::advance(Duration::from_secs(1)).await;
        third.touch();
        c.remove(fourth.id);
        assert!(c.evict_one());
        let open: Vec<u64> = c.open.lock().unwrap().iter().map(|c| c.id).collect();
        assert_eq!(open, vec![third.id]);
    }

    fn answer_of(d: Decision) -> Option<Response<Full<Bytes>>> {
        match d {
            Decision::Answer(r) => Some(r),
            _ => None,
        }
    }

    #[test]
    fn the_page_needs_ui_and_the_token_on_an_exposed_listener_only() {
        use Scope::{Exposed, Loopback};
        // Loopback: open, whatever else.
        assert!(ui_access(Loopback, false, None, None, None));
        // Exposed: never without --ui, nor without a token configured.
        assert!(!ui_access(
            Exposed,
            false,
            Some("t0k3n"),
            Some("Bearer t0k3n"),
            None
        ));
        assert!(!ui_access(Exposed, true, None, Some("Bearer t0k3n"), None));
        // With both: the token as a header or as the cookie, and only the right one.
        assert!(ui_access(
            Exposed,
            true,
            Some("t0k3n"),
            Some("Bearer t0k3n"),
            None
        ));
        assert!(ui_access(
            Exposed,
            true,
            Some("t0k3n"),
            None,
            Some("a=b; berth_token=t0k3n")
        ));
        assert!(!ui_access(
            Exposed,
            true,
            Some("t0k3n"),
            Some("Bearer t0k3"),
            None
        ));
        assert!(!ui_access(
            Exposed,
            true,
            Some("t0k3n"),
            None,
            Some("berth_token=nope")
        ));
        assert!(!ui_access(
            Exposed,
            true,
            Some("t0k3n"),
            None,
            Some("other=t0k3n")
        ));
        assert!(!ui_access(Exposed, true, Some("t0k3n"), None, None));
    }

    #[test]
    fn a_refused_page_says_nothing_of_the_project() {
        let shared =
            Shared::with_limits(Metrics::new(), Arc::new(|| {}), Limits::for_fd_limit(1024));
        shared.publish(vec![Report {
            generation: Some(7),
            outcome: Some("healthy".into()),
            ..Report::empty("secretproject", crate::status::ProjectStatus::Converged)
        }]);
        shared.set_token("t0k3n".into());
        let get = |scope, path: &str, auth: Option<&str>, cookie: Option<&str>| {
            decide(&shared, scope, &Method::GET, path, auth, cookie)
        };
        for ui in [false, true] {
            shared.set_ui_exposed(ui);
            for path in [
                "/",
                "/generation/3",
                "/logs/web",
                "/api/v1/events",
                "/api/v1/history",
                "/api/v1/generation/3",
            ] {
                let r = answer_of(get(Scope::Exposed, path, None, None)).expect(path);
                assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
                assert_eq!(r.headers()[hyper::header::WWW_AUTHENTICATE], "Bearer");
                // Loopback: the page's route, answered.
                assert!(
                    matches!(get(Scope::Loopback, path, None, None), Decision::Ui(_)),
                    "{path}"
                );
            }
            // /api/v1/status: with --ui it needs the token there too; without, as before.
            let r = answer_of(get(Scope::Exposed, "/api/v1/status", None, None)).unwrap();
            assert_eq!(
                r.status(),
                if ui {
                    StatusCode::UNAUTHORIZED
                } else {
                    StatusCode::OK
                }
            );
        }
        let r = answer_of(get(Scope::Exposed, "/", None, None)).unwrap();
        let body = futures::executor::block_on(r.into_body().collect())
            .unwrap()
            .to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert_eq!(body, REFUSED_BODY);
        assert!(!body.contains("secretproject") && !body.contains("converged"));
        // With --ui and the token (header or cookie): through.
        assert!(matches!(
            get(Scope::Exposed, "/", Some("Bearer t0k3n"), None),
            Decision::Ui(UiRoute::Page)
        ));
        assert!(matches!(
            get(
                Scope::Exposed,
                "/api/v1/events",
                None,
                Some("berth_token=t0k3n")
            ),
            Decision::Ui(UiRoute::Events)
        ));
        let r = answer_of(get(
            Scope::Exposed,
            "/api/v1/status",
            Some("Bearer t0k3n"),
            None,
        ))
        .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        // /login checks its own query; without --ui it is refused at once.
        assert!(matches!(
            get(Scope::Exposed, "/login", None, None),
            Decision::Ui(UiRoute::Login)
        ));
        shared.set_ui_exposed(false);
        assert!(answer_of(get(Scope::Exposed, "/login", None, None)).is_some());
        // A path that is not a generation or a service is no route.
        for path in ["/generation/x", "/generation/", "/logs/a/b", "/logs/..%2f"] {
            let r = answer_of(get(Scope::Loopback, path, None, None)).expect(path);
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("s3cret", "s3cret"));
        assert!(!same_token("s3cret", "s3cre"));
        assert!(!same_token("s3cret", "s3creT"));
        assert!(!same_token("", "x"));
    }
}
