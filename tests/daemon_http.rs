//! The daemon's HTTP endpoint, started for real on `127.0.0.1:0` and asked over HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use berth::daemon::http::{Shared, serve};
use berth::daemon::metrics::{Metrics, ReconcileResult};
use berth::shutdown::{Shutdown, Trigger};
use berth::status::{ProjectStatus, Report, ServiceStatus};
use tokio::task::JoinHandle;

/// A running endpoint and what a test needs to drive and check it.
struct Endpoint {
    base: String,
    shared: Arc<Shared>,
    /// How many times `POST /api/v1/reconcile` called the enqueue callback.
    enqueued: Arc<AtomicUsize>,
    stop: Trigger,
    server: JoinHandle<()>,
}

async fn start() -> Endpoint {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let enqueued = Arc::new(AtomicUsize::new(0));
    let counted = enqueued.clone();
    let shared = Arc::new(Shared::new(
        Metrics::new(),
        Arc::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        }),
    ));
    let (stop, shutdown) = Shutdown::new();
    let server = tokio::spawn(serve(listener, shared.clone(), shutdown));
    Endpoint {
        base,
        shared,
        enqueued,
        stop,
        server,
    }
}

fn report() -> Report {
    Report {
        project: "demo".into(),
        generation: Some(7),
        outcome: Some("healthy".into()),
        status: ProjectStatus::Converged,
        services: vec![ServiceStatus {
            service: "web".into(),
            container: "demo-web".into(),
            state: "running".into(),
            health: Some("healthy".into()),
            detail: "http 200".into(),
            generation: Some(7),
        }],
        repairs: 1,
        holder: None,
        schema_version: None,
        schema_revision: None,
        backup: None,
        git: None,
    }
}

async fn get(url: &str) -> reqwest::Response {
    reqwest::get(url).await.unwrap()
}

fn content_type(r: &reqwest::Response) -> String {
    r.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn healthz_answers_200_while_the_process_serves() {
    let e = start().await;
    let r = get(&format!("{}/healthz", e.base)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok\n");
}

#[tokio::test]
async fn readyz_answers_503_until_the_daemon_marks_it_ready() {
    let e = start().await;
    let url = format!("{}/readyz", e.base);
    assert_eq!(get(&url).await.status(), 503);
    e.shared.mark_ready();
    assert_eq!(get(&url).await.status(), 200);
}

#[tokio::test]
async fn metrics_serves_the_prometheus_text_with_its_content_type() {
    let e = start().await;
    e.shared
        .metrics()
        .record_reconcile(ReconcileResult::Repaired, Duration::from_secs(2));
    e.shared.metrics().set_engine_reachable(true);
    let r = get(&format!("{}/metrics", e.base)).await;
    assert_eq!(r.status(), 200);
    assert!(
        content_type(&r).starts_with("text/plain; version=0.0.4"),
        "{}",
        content_type(&r)
    );
    let text = r.text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l == "berth_reconciles_total{result=\"repaired\"} 1"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l == "berth_engine_reachable 1"),
        "{text}"
    );
}

#[tokio::test]
async fn status_serves_the_published_reports_as_berth_status_json_prints_them() {
    let e = start().await;
    let url = format!("{}/api/v1/status", e.base);
    assert_eq!(get(&url).await.text().await.unwrap(), "[]\n");

    e.shared.publish(vec![report()]);
    let r = get(&url).await;
    assert_eq!(r.status(), 200);
    assert_eq!(content_type(&r), "application/json");
    let body = r.text().await.unwrap();
    assert_eq!(body, berth::status::reports_json(&[report()]).unwrap());
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json[0]["project"], "demo");
    assert_eq!(json[0]["status"], "converged");
    assert_eq!(json[0]["services"][0]["health"], "healthy");

    // Published status shows in the metrics too.
    let metrics = get(&format!("{}/metrics", e.base))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "berth_service_healthy{project=\"demo\",service=\"web\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn post_reconcile_calls_the_enqueue_callback_once_and_answers_202() {
    let e = start().await;
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/reconcile", e.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(e.enqueued.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn get_reconcile_is_405_and_does_not_enqueue() {
    let e = start().await;
    let r = get(&format!("{}/api/v1/reconcile", e.base)).await;
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    assert_eq!(e.enqueued.load(Ordering::SeqCst), 0);

    let r = reqwest::Client::new()
        .post(format!("{}/metrics", e.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET");
}

#[tokio::test]
async fn an_unknown_path_is_404() {
    let e = start().await;
    assert_eq!(get(&format!("{}/nope", e.base)).await.status(), 404);
    assert_eq!(get(&format!("{}/api/v1", e.base)).await.status(), 404);
}

#[tokio::test]
async fn the_server_stops_accepting_when_shutdown_fires_without_waiting_on_idle_connections() {
    let e = start().await;
    let url = format!("{}/healthz", e.base);
    // This client keeps its connection open (keep-alive) across the stop.
    let client = reqwest::Client::new();
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    e.stop.fire(libc::SIGTERM);
    // Well under the drain timeout: an idle connection is closed at once.
    tokio::time::timeout(Duration::from_secs(2), e.server)
        .await
        .expect("serve returns soon after shutdown")
        .unwrap();
    assert!(
        reqwest::Client::new().get(&url).send().await.is_err(),
        "nothing listens any more"
    );
}
