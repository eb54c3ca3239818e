//! End-to-end: the status page `berth run` serves (docs/status-page.md), in a real
//! headless Chromium (Debian's `chromium`, installed by scripts/test-setup.sh):
//!
//! - a stack converged, then a failing deploy reverted: the page's DOM (`--dump-dom`) has
//!   the status word `berth status` has, every service with its health, the failed
//!   generation with its reason and its last log lines, and a timeline SVG with one bar
//!   group per service; no secret value is on it;
//! - a screenshot of it is neither empty nor an error page (its size and its colours, not
//!   its pixels, are checked), written to `target/status-page.png` (and, with
//!   `BERTH_BLESS=1`, to `docs/status-page.png`, the README's picture);
//! - live: with the page open, a deploy makes its status word go to `progressing`, then
//!   `converged`, without a reload (watched through Chromium's DevTools protocol), and
//!   the lag behind the daemon's own status is printed;
//! - a listener beyond loopback answers 401 without the token, for the page and the
//!   API, with nothing of the project in the body.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::{Project, wait_for};

const SECRET: &str = "page-secret-value-7781";

const STACK: &str = r#"
[project]
name = "{project}"

[rollout]
healthy_deadline = "4s"
min_healthy_time = "300ms"

[services.db]
image = "berth-fixture:test"
environment = { ROLE = "db", DB_PASSWORD = "page-secret-value-7781" }
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }

[services.api]
image = "berth-fixture:test"
depends_on = ["db"]
environment = { ROLE = "api", VERSION = "{version}"{api_extra} }
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }

[services.web]
image = "berth-fixture:test"
depends_on = ["api"]
environment = { ROLE = "web" }
health = { probe = "tcp", port = 8080, interval = "100ms" }
"#;

fn stack(version: &str, api_extra: &str) -> String {
    STACK
        .replace("{version}", version)
        .replace("{api_extra}", api_extra)
}

fn chromium_premise() {
    let ok = Command::new("chromium")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "chromium is missing: run scripts/test-setup.sh (it installs Debian's chromium)"
    );
}

/// How every Chromium here runs: headless, in a container-friendly way, with nothing of
/// its own to fetch or load.
const HEADLESS: [&str; 5] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-extensions",
];

/// Chromium headless, ended after a minute at most (`timeout`): a page that never loads
/// fails the test rather than hanging it.
fn chromium(args: &[&str]) -> Command {
    let mut c = Command::new("timeout");
    c.args(["60", "chromium"])
        .args(HEADLESS)
        .arg("--disable-background-networking")
        .args(args);
    c
}

/// The page's DOM once its scripts ran.
fn dump_dom(url: &str) -> String {
    // No virtual time budget: the page's live stream never ends, and virtual time
    // waits for the network. The DOM is dumped once the page has loaded.
    let out = chromium(&["--dump-dom", url]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text inside the element with `id`.
fn text_of_id(dom: &str, id: &str) -> Option<String> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let open = at + dom[at..].find('>')? + 1;
    let close = open + dom[open..].find('<')?;
    Some(dom[open..close].trim().to_string())
}

/// A stack converged (generation 1) and a deploy whose api never becomes healthy and
/// prints numbered lines, reverted (generation 2).
fn converged_then_reverted(p: &Project) {
    p.write(&stack("1", ""));
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    p.write(&stack(
        "2",
        r#", FIXTURE_NEVER_HEALTHY = "1", FIXTURE_PRINT_LINES = "5""#,
    ));
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
}

#[test]
fn the_page_shows_what_berth_status_says_with_the_failed_generation_and_its_timeline() {
    chromium_premise();
    let p = Project::new("page");
    converged_then_reverted(&p);
    let d = Daemon::build(&p).file().start();
    wait_for("the daemon's first turn", Duration::from_secs(60), || {
        d.status()["status"].is_string()
    });
    let status = p.berth(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let word = status[0]["status"].as_str().unwrap().to_string();

    let url = format!("http://127.0.0.1:{}/", d.port);
    let dom = dump_dom(&url);
    assert!(dom.contains("<html"), "no page: {dom}");
    assert_eq!(
        text_of_id(&dom, "status-word").as_deref(),
        Some(word.as_str()),
        "{dom}"
    );
    for s in ["db", "api", "web"] {
        let row = format!("data-service=\"{s}\"");
        assert!(dom.contains(&row), "{s} is not listed: {dom}");
    }
    assert!(
        dom.matches("data-health=\"healthy\"").count() >= 3,
        "every service healthy after the revert: {dom}"
    );
    // The failed generation: its reason and the api's last lines.
    let h = p.history();
    let failed = h.iter().find(|g| g["outcome"] == "rolled-back").unwrap();
    let id = failed["id"].as_i64().unwrap();
    let section = dom
        .find(&format!("id=\"generation-{id}\""))
        .unwrap_or_else(|| panic!("no section for generation {id}: {dom}"));
    let rest = &dom[section..];
    assert!(rest.contains("not healthy within"), "its reason: {rest}");
    assert!(rest.contains("line 5 of 5"), "its last log lines: {rest}");
    // The timeline: one bar group per service.
    let svg = &dom[dom.find("<svg").expect("a timeline svg")..];
    let svg = &svg[..svg.find("</svg>").unwrap()];
    for s in ["db", "api", "web"] {
        assert_eq!(
            svg.matches(&format!("class=\"bar\" data-service=\"{s}\""))
                .count(),
            1,
            "one bar group for {s}: {svg}"
        );
    }
    assert!(!dom.contains(SECRET), "a secret on the page");

    // A screenshot that shows a page.
    let shot = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = chromium(&[
        "--hide-scrollbars",
        "--window-size=1280,1600",
        &format!("--screenshot={}", shot.display()),
        &url,
    ])
    .output()
    .unwrap();
    assert!(
        shot.is_file(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (w, h, colours, top_share) = picture(&shot);
    eprintln!(
        "screenshot {w}x{h}, {colours} colours, the commonest on {:.0}% of it",
        top_share * 100.0
    );
    assert_eq!((w, h), (1280, 1600));
    assert!(top_share < 0.97, "nearly one colour: an empty page");
    assert!(colours > 16, "too few colours for a page with text");
    if std::env::var_os("BERTH_BLESS").is_some() {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/status-page.png");
        std::fs::copy(&shot, docs).unwrap();
    }
}

/// Width, height, how many colours, and the share of the commonest one.
fn picture(path: &std::path::Path) -> (u32, u32, usize, f64) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    let mut counts = std::collections::HashMap::<&[u8], usize>::new();
    for px in buf[..info.buffer_size()].chunks(step) {
        *counts.entry(&px[..3.min(step)]).or_default() += 1;
    }
    let total: usize = counts.values().sum();
    let top = counts.values().max().copied().unwrap_or(0);
    (
        info.width,
        info.height,
        counts.len(),
        top as f64 / total.max(1) as f64,
    )
}

/// A minimal client of Chromium's DevTools protocol: one page, `Runtime.evaluate`.
struct DevTools {
    browser: Child,
    ws: tungstenite::WebSocket<TcpStream>,
    next: u64,
    _profile: tempfile::TempDir,
}

impl DevTools {
    fn open(url: &str) -> DevTools {
        let profile = tempfile::tempdir().unwrap();
        let port = common::free_port();
        let browser = Command::new("chromium")
            .args(HEADLESS)
            .args([
                &format!("--remote-debugging-port={port}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut list = String::new();
        wait_for(
            "chromium's DevTools endpoint",
            Duration::from_secs(30),
            || {
                list = http_get(port, "/json/list").unwrap_or_default();
                list.contains("webSocketDebuggerUrl")
            },
        );
        let targets: serde_json::Value = serde_json::from_str(&list).unwrap();
        let ws_url = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_string();
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (ws, _) = tungstenite::client(ws_url.as_str(), stream).unwrap();
        let mut d = DevTools {
            browser,
            ws,
            next: 1,
            _profile: profile,
        };
        d.call("Page.navigate", serde_json::json!({ "url": url }));
        d
    }

    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        let id = self.next;
        self.next += 1;
        let msg = serde_json::json!({ "id": id, "method": method, "params": params });
        self.ws
            .send(tungstenite::Message::text(msg.to_string()))
            .unwrap();
        loop {
            let m = self.ws.read().unwrap();
            if let tungstenite::Message::Text(t) = m {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if v["id"] == id {
                    return v["result"].clone();
                }
            }
        }
    }

    /// A JavaScript expression's value in the page.
    fn eval(&mut self, expr: &str) -> serde_json::Value {
        self.call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": expr, "returnByValue": true }),
        )["result"]["value"]
            .clone()
    }
}

impl Drop for DevTools {
    fn drop(&mut self) {
        let _ = self.browser.kill();
        let _ = self.browser.wait();
    }
}

/// A GET on a new connection, its body by Content-Length (Chromium's DevTools server
/// keeps the connection open).
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            });
            if len.is_some_and(|n| body.len() >= n) {
                return Some(body.to_string());
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => {
                return text.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn the_page_follows_a_deploy_without_a_reload() {
    chromium_premise();
    let p = Project::new("page-live");
    p.write(&stack("1", ""));
    assert_eq!(p.berth(&["apply"]).code, 0);
    let d = Daemon::build(&p).file().start();
    wait_for(
        "the daemon to say converged",
        Duration::from_secs(60),
        || d.status()["status"] == "converged",
    );
    let url = format!("http://127.0.0.1:{}/", d.port);
    let mut page = DevTools::open(&url);
    let word = "(document.getElementById('status-word')||{}).textContent";
    wait_for(
        "the page to show converged",
        Duration::from_secs(30),
        || page.eval(word).as_str().map(str::trim) == Some("converged"),
    );
    // A mark that a reload would wipe.
    page.eval("window.__berthMark = 42");

    // A deploy that takes a few seconds: the api gets ready after 2 s.
    p.write(&stack("2", r#", FIXTURE_READY_AFTER = "2""#));
    let _ = d.request("POST", "/api/v1/reconcile", None);
    let start = Instant::now();
    let (mut page_progressing, mut page_converged) = (None, None);
    let (mut daemon_progressing, mut daemon_converged) = (None, None);
    while start.elapsed() < Duration::from_secs(60) && page_converged.is_none() {
        let now = start.elapsed();
        let shown = page
            .eval(word)
            .as_str()
            .unwrap_or_default()
            .trim()
            .to_string();
        let said = d.try_status()["status"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if said == "progressing" && daemon_progressing.is_none() {
            daemon_progressing = Some(now);
        }
        if said == "converged" && daemon_progressing.is_some() && daemon_converged.is_none() {
            daemon_converged = Some(now);
        }
        if shown == "progressing" && page_progressing.is_none() {
            page_progressing = Some(now);
        }
        if shown == "converged" && page_progressing.is_some() {
            page_converged = Some(now);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        page_progressing.is_some(),
        "the page never showed progressing"
    );
    assert!(
        page_converged.is_some(),
        "the page never came back to converged"
    );
    assert_eq!(page.eval("window.__berthMark"), 42, "the page was reloaded");
    let lag = |page: Option<Duration>, daemon: Option<Duration>| match (page, daemon) {
        (Some(p), Some(d)) => format!("{:?}", p.saturating_sub(d)),
        _ => "unknown".into(),
    };
    eprintln!(
        "the page showed progressing {} and converged {} after the daemon said so",
        lag(page_progressing, daemon_progressing),
        lag(page_converged, daemon_converged)
    );
}
