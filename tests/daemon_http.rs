//! The daemon's HTTP endpoint, started for real on `127.0.0.1:0` and asked over HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use berth::daemon::http::{Limits, Scope, Shared, serve};
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
    start_with(Scope::Loopback, Limits::default()).await
}

/// An endpoint whose listener counts as `scope`, with `limits`.
async fn start_with(scope: Scope, limits: Limits) -> Endpoint {
    // The test's own reqwest clients need a TLS provider, as berth's main installs.
    berth::notify::tls::install_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let enqueued = Arc::new(AtomicUsize::new(0));
    let counted = enqueued.clone();
    let shared = Arc::new(Shared::with_limits(
        Metrics::new(),
        Arc::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        }),
        limits,
    ));
    let (stop, shutdown) = Shutdown::new();
    let server = tokio::spawn(serve(listener, scope, shared.clone(), shutdown));
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
            replicas: None,
            tasks: None,
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

// --- A listener is untrusted (docs/design.md §12) -------------------------------------

/// Limits small enough to reach in a test; timeouts long unless a test shortens one.
fn small(max_connections: usize) -> Limits {
    Limits {
        max_connections,
        header_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(60),
        body_timeout: Duration::from_secs(60),
        max_body: 1024,
    }
}

async fn post(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut r = reqwest::Client::new().post(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

impl Endpoint {
    fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }

    /// A raw connection that has sent `bytes`.
    async fn raw(&self, bytes: &[u8]) -> tokio::net::TcpStream {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(self.addr()).await.unwrap();
        s.write_all(bytes).await.unwrap();
        s
    }
}

/// Read until the server closes (or `limit`): what it sent, and whether it closed.
async fn read_until_closed(s: &mut tokio::net::TcpStream, limit: Duration) -> (String, bool) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

/// Whether the server has closed this connection (a read finds EOF or a reset at once).
async fn closed_by_server(s: &mut tokio::net::TcpStream) -> bool {
    read_until_closed(s, Duration::from_millis(200)).await.1
}

#[tokio::test]
async fn on_an_exposed_listener_changes_need_the_token_and_the_read_only_routes_answer() {
    let e = start_with(Scope::Exposed, Limits::default()).await;
    e.shared.publish(vec![report()]);
    let reconcile = format!("{}/api/v1/reconcile", e.base);

    // No token configured: read-only.
    let r = post(&reconcile, None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert!(r.text().await.unwrap().contains("--api-token-file"));
    assert_eq!(post(&reconcile, Some("anything")).await.status(), 401);
    for path in ["/healthz", "/metrics", "/api/v1/status"] {
        assert_eq!(
            get(&format!("{}{path}", e.base)).await.status(),
            200,
            "{path}"
        );
    }
    assert_eq!(e.enqueued.load(Ordering::SeqCst), 0);

    // With a token: only a request that carries it.
    e.shared.set_token("s3cret-token".into());
    assert_eq!(post(&reconcile, None).await.status(), 401);
    assert_eq!(post(&reconcile, Some("s3cret-toke")).await.status(), 401);
    assert_eq!(post(&reconcile, Some("s3cret-tokenX")).await.status(), 401);
    let r = reqwest::Client::new()
        .post(&reconcile)
        .header("authorization", "Basic s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(e.enqueued.load(Ordering::SeqCst), 0);
    assert_eq!(post(&reconcile, Some("s3cret-token")).await.status(), 202);
    assert_eq!(e.enqueued.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn on_loopback_a_reconcile_is_open_and_a_sync_needs_the_token() {
    let e = start().await;
    let sync = format!("{}/api/v1/sync", e.base);
    // No git source, or no token: no sync here.
    assert_eq!(post(&sync, Some("t")).await.status(), 404);
    let fetches = Arc::new(AtomicUsize::new(0));
    let counted = fetches.clone();
    e.shared.set_sync(Arc::new(move || {
        counted.fetch_add(1, Ordering::SeqCst);
    }));
    assert_eq!(post(&sync, Some("t")).await.status(), 404);
    e.shared.set_token("t0ken".into());
    assert_eq!(post(&sync, None).await.status(), 401);
    assert_eq!(post(&sync, Some("t0ke")).await.status(), 401);
    assert_eq!(fetches.load(Ordering::SeqCst), 0);
    assert_eq!(post(&sync, Some("t0ken")).await.status(), 202);
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    // The reconcile needs no token here, with one configured or not.
    let reconcile = format!("{}/api/v1/reconcile", e.base);
    assert_eq!(post(&reconcile, None).await.status(), 202);
    assert_eq!(e.enqueued.load(Ordering::SeqCst), 1);
}

/// Idle and slow-header connections fill the endpoint to its cap: /healthz still answers
/// at once, each newcomer closing the oldest connection that never sent a request, and a
/// client that has been answered keeps its connection.
#[tokio::test]
async fn at_the_cap_idle_and_slow_header_connections_make_room_and_healthz_answers() {
    let e = start_with(Scope::Loopback, small(8)).await;
    // A client answered once, keeping its connection.
    let mut kept = e.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 256];
        let n = kept.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(e.raw(b"").await);
    }
    let mut slow = Vec::new();
    for _ in 0..20 {
        slow.push(e.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await);
    }
    let started = std::time::Instant::now();
    let r = get(&format!("{}/healthz", e.base)).await;
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        e.shared.open_connections() <= 8,
        "{}",
        e.shared.open_connections()
    );
    // The oldest idle ones were closed for the newcomers; the answered client was not.
    let mut closed = 0;
    for s in idle.iter_mut().chain(slow.iter_mut()) {
        closed += usize::from(closed_by_server(s).await);
    }
    assert!(closed >= 40 - 7, "{closed} of 40 closed");
    assert!(closed_by_server(&mut idle[0]).await);
    use tokio::io::AsyncWriteExt;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (said, _) = read_until_closed(&mut kept, Duration::from_secs(5)).await;
    assert!(said.starts_with("HTTP/1.1 200"), "{said:?}");
}

#[tokio::test]
async fn a_slow_header_and_an_idle_keep_alive_are_closed_after_the_header_timeout() {
    let limits = Limits {
        header_timeout: Duration::from_millis(300),
        ..small(8)
    };
    let e = start_with(Scope::Loopback, limits).await;
    let started = std::time::Instant::now();
    let mut slow = e.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    let mut kept = e.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (said, closed) = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(closed, "a slow head is closed");
    // hyper answers a head that timed out with 408 before it closes.
    assert!(
        said.is_empty() || said.starts_with("HTTP/1.1 408"),
        "{said:?}"
    );
    let (said, closed) = read_until_closed(&mut kept, Duration::from_secs(5)).await;
    assert!(said.starts_with("HTTP/1.1 200"), "{said:?}");
    assert!(closed, "an idle keep-alive connection is closed");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_connection_that_moves_no_byte_is_closed_after_the_idle_timeout() {
    let limits = Limits {
        idle_timeout: Duration::from_millis(300),
        ..small(8)
    };
    let e = start_with(Scope::Loopback, limits).await;
    let started = std::time::Instant::now();
    let mut s = e.raw(b"").await;
    assert!(read_until_closed(&mut s, Duration::from_secs(5)).await.1);
    assert!(started.elapsed() >= Duration::from_millis(300));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(e.shared.open_connections(), 0);
}

#[tokio::test]
async fn a_body_too_long_or_too_slow_is_refused_and_nothing_is_done() {
    let limits = Limits {
        body_timeout: Duration::from_millis(300),
        ..small(8)
    };
    let e = start_with(Scope::Loopback, limits).await;
    let head = |extra: &str| {
        format!("POST /api/v1/reconcile HTTP/1.1\r\nHost: x\r\n{extra}\r\n").into_bytes()
    };
    // Announced too long: refused before a byte of it is read.
    let mut s = e.raw(&head("Content-Length: 2048\r\n")).await;
    let (said, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(said.starts_with("HTTP/1.1 413"), "{said:?}");
    assert!(closed);
    // Chunked, growing past the bound.
    let mut s = e.raw(&head("Transfer-Encoding: chunked\r\n")).await;
    {
        use tokio::io::AsyncWriteExt;
        for _ in 0..3 {
            s.write_all(b"200\r\n").await.unwrap();
            s.write_all(&[b'x'; 0x200]).await.unwrap();
            s.write_all(b"\r\n").await.unwrap();
        }
    }
    let (said, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(said.starts_with("HTTP/1.1 413"), "{said:?}");
    // Announced, then never sent.
    let mut s = e.raw(&head("Content-Length: 100\r\n")).await;
    {
        use tokio::io::AsyncWriteExt;
        s.write_all(b"0123456789").await.unwrap();
    }
    let (said, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(said.starts_with("HTTP/1.1 408"), "{said:?}");
    assert_eq!(e.enqueued.load(Ordering::SeqCst), 0);
    // A small body (a webhook's JSON) is read and thrown away.
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/reconcile", e.base))
        .body(vec![b'{'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(e.enqueued.load(Ordering::SeqCst), 1);
}

/// The status page's routes (src/ui): served on loopback from the published report alone
/// when no store was given, and followed live over server-sent events.
#[tokio::test]
async fn the_status_page_shows_the_published_word_and_follows_it_live() {
    let e = start().await;
    let page = format!("{}/", e.base);
    // Nothing published yet: it says so, and is not a status.
    assert_eq!(get(&page).await.status(), 503);
    e.shared.publish(vec![report()]);
    let r = get(&page).await;
    assert_eq!(r.status(), 200);
    assert_eq!(content_type(&r), "text/html; charset=utf-8");
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    let html = r.text().await.unwrap();
    assert!(
        html.contains(r#"<span id="status-word" class="word word-converged">converged</span>"#),
        "{html}"
    );
    assert!(html.contains(r#"data-service="web" data-health="healthy""#));

    // The live updates: the current status at once, then every published one.
    let mut events = reqwest::get(format!("{}/api/v1/events", e.base))
        .await
        .unwrap();
    assert_eq!(content_type(&events), "text/event-stream");
    assert_eq!(e.shared.open_streams(), 1);
    let mut seen = String::new();
    let mut next = async || {
        let chunk = tokio::time::timeout(Duration::from_secs(5), events.chunk())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&chunk).into_owned()
    };
    while !seen.contains(r#""word":"converged""#) {
        seen += &next().await;
    }
    let mut progressing = report();
    progressing.status = ProjectStatus::Progressing("generation 8 by berth run".into());
    progressing.generation = Some(8);
    e.shared.publish(vec![progressing]);
    let mut seen = String::new();
    while !seen.contains(r#""word":"progressing""#) {
        seen += &next().await;
    }
    assert!(seen.contains(r#""generation":8"#), "{seen}");
    drop(events);
    // The stream is let go once the browser goes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while e.shared.open_streams() > 0 && tokio::time::Instant::now() < deadline {
        e.shared.publish(vec![report()]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(e.shared.open_streams(), 0);
    e.stop.fire(15);
    tokio::time::timeout(Duration::from_secs(2), e.server)
        .await
        .expect("a live stream does not hold up the stop")
        .unwrap();
}

#[tokio::test]
async fn on_an_exposed_listener_the_page_is_401_without_ui_and_the_token() {
    let e = start_with(Scope::Exposed, Limits::default()).await;
    e.shared.publish(vec![report()]);
    e.shared.set_token("t0k3n-of-the-page".into());
    for ui in [false, true] {
        e.shared.set_ui_exposed(ui);
        for path in [
            "/",
            "/api/v1/events",
            "/api/v1/history",
            "/generation/7",
            "/logs/web",
        ] {
            let r = get(&format!("{}{path}", e.base)).await;
            assert_eq!(r.status(), 401, "{path} with --ui {ui}");
            let body = r.text().await.unwrap();
            assert!(
                !body.contains("demo") && !body.contains("converged"),
                "{body}"
            );
        }
        // With the page served beyond loopback, the API's status needs the token too.
        if ui {
            let r = get(&format!("{}/api/v1/status", e.base)).await;
            assert_eq!(r.status(), 401, "/api/v1/status with --ui");
            let body = r.text().await.unwrap();
            assert!(
                !body.contains("demo") && !body.contains("converged"),
                "{body}"
            );
        }
    }
    // With --ui: the token as a header, or the cookie /login sets.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client
        .get(format!("{}/", e.base))
        .bearer_auth("t0k3n-of-the-page")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let wrong = client
        .get(format!("{}/login?token=nope", e.base))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let login = client
        .get(format!("{}/login?token=t0k3n-of-the-page", e.base))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let r = client
        .get(format!("{}/", e.base))
        .header("cookie", pair)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains(r#"id="status-word""#));
}
