//! The daemon's local HTTP endpoint (issue 9, item 6): what Prometheus scrapes, what
//! `berth status` asks when a daemon runs, and how `berth apply` hands it a reconcile.
//!
//! | route                     | answer                                                   |
//! |---------------------------|----------------------------------------------------------|
//! | `GET /healthz`            | 200 while the process serves                             |
//! | `GET /readyz`             | 200 once the engine and the desired state were observed, 503 before |
//! | `GET /metrics`            | the Prometheus text ([`super::metrics`])                 |
//! | `GET /api/v1/status`      | the JSON of `berth status --json`                        |
//! | `POST /api/v1/reconcile`  | 202: a reconcile is enqueued (never run here)            |
//! | `POST /api/v1/sync`       | with a git source and `--sync-token-file`: 202, a fetch now; 401 without the token (`Authorization: Bearer TOKEN`); 404 otherwise |
//!
//! Anything else is 404; a known path with another method is 405 with `Allow`.
//!
//! Plain hyper 1 with hyper-util rather than axum: bollard already compiles them, and five
//! fixed routes are one `match`, with no router, extractors or tower layers to learn.
//!
//! It listens on loopback by default ([`DEFAULT_LISTEN`]): it has no authentication, and
//! `POST /api/v1/reconcile` must not be open to the network.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use super::metrics::{self, Metrics};
use crate::shutdown::Shutdown;
use crate::status::Report;

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

/// A client that sends no complete request head within this is dropped, so idle or
/// half-open connections cannot pile up in a long-running daemon.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Asks the daemon for a reconcile. It only enqueues (the scheduler collapses duplicates),
/// so it is cheap and never blocks the request.
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
    /// `POST /api/v1/sync`: the token it must carry, and the fetch it asks for.
    sync: RwLock<Option<(String, Enqueue)>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub fn new(metrics: Metrics, enqueue: Enqueue) -> Shared {
        Shared {
            reports: RwLock::new(Vec::new()),
            metrics,
            ready: AtomicBool::new(false),
            enqueue,
            sync: RwLock::new(None),
        }
    }

    /// Open `POST /api/v1/sync`, for requests that carry `token`.
    pub fn set_sync(&self, token: String, fetch: Enqueue) {
        *self.sync.write().expect("sync lock") = Some((token, fetch));
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

/// Serve the endpoint on `listener` until `shutdown` fires: then stop accepting, let the
/// requests being answered finish (for at most `DRAIN_TIMEOUT`, 5 s) and return. Errors of
/// one connection or one `accept` are logged; they never end the server.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: Shutdown) {
    let connections = GracefulShutdown::new();
    let stop = shutdown.requested();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "the HTTP endpoint could not accept a connection");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let shared = shared.clone();
        let service = service_fn(move |req| answer(shared.clone(), req));
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
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

async fn answer(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let auth = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok(respond(
        &shared,
        req.method(),
        req.uri().path(),
        auth.as_deref(),
    ))
}

/// Equal, in a time that does not depend on where they differ.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The whole endpoint as a function of the request line. The body of a request is never
/// read: no route takes one.
fn respond(
    shared: &Shared,
    method: &Method,
    path: &str,
    authorization: Option<&str>,
) -> Response<Full<Bytes>> {
    let Some(route) = Route::of(path) else {
        return text(StatusCode::NOT_FOUND, format!("no such path: {path}\n"));
    };
    if *method != route.method() {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path} takes {}\n", route.method()),
        );
        r.headers_mut().insert(ALLOW, route.allow());
        return r;
    }
    match route {
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
        Route::Reconcile => {
            (shared.enqueue)();
            text(StatusCode::ACCEPTED, "reconcile enqueued\n")
        }
        Route::Sync => {
            let sync = shared.sync.read().expect("sync lock").clone();
            let Some((token, fetch)) = sync else {
                return text(
                    StatusCode::NOT_FOUND,
                    "no sync here: berth run has no git source, or no --sync-token-file\n",
                );
            };
            let given = authorization.and_then(|a| a.strip_prefix("Bearer "));
            if !given.is_some_and(|g| same_token(g.trim(), &token)) {
                let mut r = text(
                    StatusCode::UNAUTHORIZED,
                    "a sync needs the token: Authorization: Bearer TOKEN\n",
                );
                r.headers_mut().insert(
                    hyper::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer"),
                );
                return r;
            }
            fetch();
            text(StatusCode::ACCEPTED, "fetch enqueued\n")
        }
    }
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
