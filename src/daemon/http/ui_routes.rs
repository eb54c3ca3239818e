//! The status page's routes, once [`super::decide`] let a request through: the page, one
//! generation, a service's log lines, `/login`, the live updates and the history JSON.
//! What they show is drawn by [`crate::ui`] from the published report and the store.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, LOCATION, SET_COOKIE};
use hyper::{Response, StatusCode, Uri};
use sha2::Digest;

use super::{Answer, COOKIE, Scope, Shared, UiRoute, boxed, refused, same_token, text};
use crate::shutdown::Shutdown;
use crate::status::Report;
use crate::ui;

/// A live-update stream sends a comment this often when nothing changed, so neither the
/// endpoint's idle timeout (30 s) nor a proxy closes it.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How soon a browser reconnects a live-update stream that ended.
const RETRY_MS: u64 = 2000;

pub(super) async fn ui_answer(
    shared: &Arc<Shared>,
    scope: Scope,
    route: UiRoute,
    uri: &Uri,
    shutdown: Shutdown,
) -> Answer {
    let report = shared.reports().into_iter().next();
    match route {
        UiRoute::Login => boxed(login(shared, scope, uri.query())),
        UiRoute::Events => events(shared, shutdown),
        UiRoute::Page => boxed(match report {
            Some(report) => page(shared, report).await,
            None => html(
                StatusCode::SERVICE_UNAVAILABLE,
                ui::message_page(
                    "berth",
                    "berth run has not published a status yet: it is reading the desired state or waiting for the engine.",
                ),
            ),
        }),
        UiRoute::Generation | UiRoute::GenerationJson => {
            let n = uri
                .path()
                .rsplit('/')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            boxed(generation(shared, report, n, route == UiRoute::GenerationJson).await)
        }
        UiRoute::History => boxed(history(shared, report).await),
        UiRoute::Logs => {
            let service = uri.path().trim_start_matches("/logs/");
            boxed(logs(shared, report, service).await)
        }
    }
}

/// `/login?token=TOKEN`: on an exposed listener with `--ui`, the right token becomes an
/// HttpOnly, SameSite=Strict cookie and the browser goes to `/`; a wrong one is 401. On
/// loopback no token is needed: straight to `/`.
fn login(shared: &Shared, scope: Scope, query: Option<&str>) -> Response<Full<Bytes>> {
    let mut r = text(StatusCode::SEE_OTHER, "to the status page: /\n");
    r.headers_mut()
        .insert(LOCATION, HeaderValue::from_static("/"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if scope == Scope::Loopback {
        return r;
    }
    let token = shared.token.read().expect("token lock").clone();
    let given = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    match (token, given) {
        (Some(t), Some(g)) if same_token(&g, &t) => {
            // The token is what the browser keeps; it is sent back only to this origin.
            let cookie = format!("{COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict");
            match HeaderValue::from_str(&cookie) {
                Ok(v) => {
                    r.headers_mut().insert(SET_COOKIE, v);
                    r
                }
                Err(_) => refused(),
            }
        }
        _ => refused(),
    }
}

/// The content security policy of every page: nothing from anywhere, the page's own
/// style and script by their hashes, the live updates from this origin.
static CSP: LazyLock<String> = LazyLock::new(|| {
    let hash = |s: &str| {
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(s.as_bytes()))
    };
    format!(
        "default-src 'none'; style-src 'sha256-{}'; script-src 'sha256-{}'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hash(ui::STYLE),
        hash(ui::SCRIPT)
    )
});

fn html(status: StatusCode, page: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(page)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if let Ok(v) = HeaderValue::from_str(&CSP) {
        h.insert("content-security-policy", v);
    }
    r
}

fn json(value: &serde_json::Value, redactor: &crate::redact::Redactor) -> Response<Full<Bytes>> {
    let text = serde_json::to_string_pretty(value).unwrap_or_default() + "\n";
    let mut r = Response::new(Full::new(Bytes::from(
        redactor.text(&crate::redact::registered_text(&text)),
    )));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn failed(e: impl std::fmt::Display) -> Response<Full<Bytes>> {
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        crate::redact::registered_text(&format!("the state store could not be read: {e}\n")),
    )
}

/// `/`: from the store when the daemon gave it one, else from the report alone.
async fn page(shared: &Shared, report: Report) -> Response<Full<Bytes>> {
    let Some(store) = shared.ui_store.get() else {
        let o = ui::Overview {
            report,
            services: Default::default(),
            healthy_since_ms: None,
            history: Vec::new(),
            now_ms: crate::store::now_ms(),
            redactor: crate::redact::registered(),
        };
        return html(StatusCode::OK, ui::page(&o));
    };
    let started = started(shared, &report).await;
    match ui::gather::overview(store, report, &started).await {
        Ok(o) => html(StatusCode::OK, ui::page(&o)),
        Err(e) => failed(e),
    }
}

/// When the running containers started: asked of the engine once per published report.
async fn started(shared: &Shared, report: &Report) -> std::collections::BTreeMap<String, i64> {
    let version = *shared.changes.borrow();
    if let Some((v, started)) = shared.started.lock().expect("started lock").as_ref()
        && *v == version
    {
        return started.clone();
    }
    let Some(engine) = shared.ui_engine.get() else {
        return Default::default();
    };
    let started = ui::gather::started(&**engine, report).await;
    *shared.started.lock().expect("started lock") = Some((version, started.clone()));
    started
}

/// A generation as JSON: its record, the order of its timeline, its evidence and diff.
fn generation_json(v: &ui::GenerationView) -> serde_json::Value {
    let mut j = serde_json::to_value(&v.generation).unwrap_or_default();
    j["order"] = serde_json::to_value(&v.order).unwrap_or_default();
    j["duration_ms"] = v.duration_ms().into();
    j["evidence"] = serde_json::to_value(&v.evidence).unwrap_or_default();
    j["diff"] = serde_json::to_value(&v.diff).unwrap_or_default();
    j
}

/// `/generation/N` and `/api/v1/generation/N`.
async fn generation(
    shared: &Shared,
    report: Option<Report>,
    n: i64,
    as_json: bool,
) -> Response<Full<Bytes>> {
    let (Some(store), Some(report)) = (shared.ui_store.get(), report) else {
        return text(StatusCode::NOT_FOUND, format!("no generation {n} (yet)\n"));
    };
    match ui::gather::generation(store, &report.project, n, report.holder.is_some()).await {
        Ok(Some((v, r))) if as_json => json(&generation_json(&v), &r),
        Ok(Some((v, r))) => html(StatusCode::OK, ui::generation_page(&report.project, &v, &r)),
        Ok(None) => text(StatusCode::NOT_FOUND, format!("no generation {n}\n")),
        Err(e) => failed(e),
    }
}

/// `/api/v1/history`: what the page's history shows, newest first.
async fn history(shared: &Shared, report: Option<Report>) -> Response<Full<Bytes>> {
    let (Some(store), Some(report)) = (shared.ui_store.get(), report) else {
        return json(&serde_json::json!([]), &Default::default());
    };
    match ui::gather::overview(store, report, &Default::default()).await {
        Ok(o) => json(
            &serde_json::Value::Array(o.history.iter().map(generation_json).collect()),
            &o.redactor,
        ),
        Err(e) => failed(e),
    }
}

/// `/logs/SERVICE`: the service's recent lines, from the running generation's desired
/// state (its secrets hidden).
async fn logs(shared: &Shared, report: Option<Report>, service: &str) -> Response<Full<Bytes>> {
    let not_found = || {
        text(
            StatusCode::NOT_FOUND,
            format!("no service {service} in the running generation\n"),
        )
    };
    let (Some(store), Some(report)) = (shared.ui_store.get(), report) else {
        return not_found();
    };
    let running = match store.latest(&report.project).await {
        Ok(Some(latest)) => store.running(&latest).await,
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    };
    let desired = match running {
        Ok(Some(g)) => match g.desired() {
            Ok(d) => d,
            Err(e) => return failed(e),
        },
        Ok(None) => return not_found(),
        Err(e) => return failed(e),
    };
    let redactor = crate::redact::registered().union(&desired.redactor());
    let Some(engine) = shared.ui_engine.get() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the engine has not answered berth run yet\n",
        );
    };
    match ui::gather::log_lines(&**engine, &desired, service, &redactor).await {
        None => not_found(),
        Some(Ok(lines)) => html(
            StatusCode::OK,
            ui::logs_page(&report.project, service, &lines, &redactor),
        ),
        Some(Err(e)) => html(
            StatusCode::BAD_GATEWAY,
            ui::message_page("berth: log lines", &redactor.text(&e)),
        ),
    }
}

/// Counts a live-update stream while it is open.
struct Open(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The newest status as one event, when a report was published.
fn status_event(shared: &Shared) -> Option<Bytes> {
    let reports = shared.reports();
    let report = reports.first()?;
    Some(Bytes::from(ui::Live::of(report).event()))
}

/// `/api/v1/events`: `event: status` with the word, reason, generation and services at
/// once and on every published report; a comment every [`KEEP_ALIVE`]; the stream ends
/// when the daemon stops. At most half of the connection cap are streams: past that,
/// 503 (the browser's EventSource retries, and the page still reloads without it).
fn events(shared: &Arc<Shared>, shutdown: Shutdown) -> Answer {
    let cap = (shared.limits.max_connections / 2).max(1);
    if shared.streams.fetch_add(1, Ordering::Relaxed) >= cap {
        shared.streams.fetch_sub(1, Ordering::Relaxed);
        return boxed(text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live pages are open; try again later\n",
        ));
    }
    let open = Open(shared.streams.clone());
    let mut changes = shared.changes.subscribe();
    changes.mark_changed();
    let shared = shared.clone();
    let first = Bytes::from(format!("retry: {RETRY_MS}\n\n"));
    let stream = futures::stream::unfold(
        (Some(first), changes, shared, shutdown, open),
        |(first, mut changes, shared, shutdown, open)| async move {
            if let Some(first) = first {
                return Some((first, (None, changes, shared, shutdown, open)));
            }
            loop {
                tokio::select! {
                    changed = changes.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                        if let Some(event) = status_event(&shared) {
                            return Some((event, (None, changes, shared, shutdown, open)));
                        }
                    }
                    _ = tokio::time::sleep(KEEP_ALIVE) => {
                        return Some((Bytes::from_static(b": keep-alive\n\n"), (None, changes, shared, shutdown, open)));
                    }
                    _ = shutdown.requested() => return None,
                }
            }
        },
    )
    .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
