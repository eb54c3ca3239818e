//! End-to-end: notifications (docs/design.md §14) from `berth run` against the real
//! engine, to a receiver of the test's own on 127.0.0.1 that records what it is sent and
//! can be told to answer 500, to never answer, or to be down; over http, or over TLS with
//! a certificate the test makes (rcgen) and serves with rustls. Signatures are checked
//! with Standard Webhooks' reference implementation (the `standardwebhooks` crate).
//!
//! (`e2e_notify_text.rs` is another thing: the text berth writes to systemd's notify
//! socket.)

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::{ONE_WEB, Project, free_port, wait_for};

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// One request the receiver was sent.
#[derive(Debug, Clone)]
struct Request {
    headers: HashMap<String, String>,
    body: String,
    /// What the receiver answered (0: nothing).
    answered: u16,
}

impl Request {
    fn id(&self) -> &str {
        &self.headers["webhook-id"]
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

#[derive(Default)]
struct State {
    requests: Vec<Request>,
    /// Answer 500 to this many requests, then 200.
    fail_next: usize,
    /// Never answer (hold the connection open).
    hang: bool,
    /// Over TLS: connections whose first byte was not a TLS handshake (plain http).
    plain: usize,
    /// Over TLS: connections that ended before a request could be read (the client
    /// refused the certificate).
    no_request: usize,
}

/// A webhook receiver on 127.0.0.1:`port`, until dropped.
struct Receiver {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    fn start(port: u16, state: State) -> Receiver {
        Receiver::listen(port, state, None)
    }

    /// The receiver over TLS, presenting `tls`'s certificate.
    fn start_tls(port: u16, state: State, tls: Arc<rustls::ServerConfig>) -> Receiver {
        Receiver::listen(port, state, Some(tls))
    }

    fn listen(port: u16, state: State, tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(Mutex::new(state));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (s, st, tls) = (s.clone(), st.clone(), tls.clone());
                        conn.set_nonblocking(false).unwrap();
                        std::thread::spawn(move || match tls {
                            None => {
                                let mut conn = conn;
                                serve(&mut conn, &s, &st);
                            }
                            Some(tls) => serve_tls(conn, tls, &s, &st),
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Receiver { state, stop }
    }

    fn url(port: u16) -> String {
        format!("http://127.0.0.1:{port}/hook")
    }

    fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    fn ids(&self) -> Vec<String> {
        self.requests().iter().map(|r| r.id().to_string()).collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One TLS connection: note whether it began as TLS, then serve its request over TLS.
fn serve_tls(
    conn: TcpStream,
    tls: Arc<rustls::ServerConfig>,
    state: &Mutex<State>,
    stop: &AtomicBool,
) {
    conn.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut first = [0u8; 1];
    // 0x16: a TLS handshake record. Anything else is a client speaking plain http.
    if conn.peek(&mut first).unwrap_or(0) == 1 && first[0] != 0x16 {
        state.lock().unwrap().plain += 1;
    }
    let mut stream = rustls::StreamOwned::new(rustls::ServerConnection::new(tls).unwrap(), conn);
    if !serve(&mut stream, state, stop) {
        state.lock().unwrap().no_request += 1;
        return;
    }
    stream.conn.send_close_notify();
    let _ = stream.flush();
}

/// One request on `conn`: read it whole, record it, answer as told. False when no
/// request came (the connection failed or closed first).
fn serve<S: Read + Write>(conn: &mut S, state: &Mutex<State>, stop: &AtomicBool) -> bool {
    let mut reader = BufReader::new(conn);
    let mut headers = HashMap::new();
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return false;
    }
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap_or(());
    let answer = {
        let mut s = state.lock().unwrap();
        let answer = match (s.hang, s.fail_next) {
            (true, _) => 0,
            (false, 0) => 200,
            (false, n) => {
                s.fail_next = n - 1;
                500
            }
        };
        s.requests.push(Request {
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            answered: answer,
        });
        answer
    };
    if answer == 0 {
        // Hold the connection, answering nothing, until the sender gives up on it.
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
        return true;
    }
    let reason = if answer == 200 {
        "OK"
    } else {
        "Internal Server Error"
    };
    let conn = reader.get_mut();
    let _ = write!(
        conn,
        "HTTP/1.1 {answer} {reason}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    );
    let _ = conn.flush();
    true
}

/// ONE_WEB with a 3 s deadline (a failing gate ends soon) and one `[[notify]]` receiver.
fn with_receiver(port: u16, notify: &str, version: &str) -> String {
    format!(
        "{}\n[[notify]]\nurl = \"{}\"\nsecret = \"{SECRET}\"\n{notify}\n",
        ONE_WEB
            .replace("healthy_deadline = \"10s\"", "healthy_deadline = \"3s\"")
            .replace("VERSION = \"1\"", version),
        Receiver::url(port)
    )
}

/// `request` is signed by berth's secret as Standard Webhooks' own library signs.
fn assert_signed(request: &Request) {
    let ts: i64 = request.headers["webhook-timestamp"].parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - ts).abs() < 300, "timestamp {ts} is not now ({now})");
    let expected = standardwebhooks::Webhook::new(SECRET)
        .unwrap()
        .sign(request.id(), ts, request.body.as_bytes())
        .unwrap();
    assert_eq!(
        request.headers["webhook-signature"], expected,
        "{request:?}"
    );
}

fn metric(d: &Daemon, line_start: &str) -> String {
    let (_, text) = d.get("/metrics");
    text.lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_rolled_back_deploy_delivers_one_signed_event_and_recovered_follows_the_fix() {
    let p = Project::new("notify-revert");
    let port = free_port();
    let receiver = Receiver::start(port, State::default());
    // No restart policy: the failed container's exit is final, its exit code certain.
    let text = |env: &str| {
        with_receiver(port, "", env).replace(
            "image = \"berth-fixture:test\"",
            "image = \"berth-fixture:test\"\nrestart = \"no\"",
        )
    };
    p.write(&text("VERSION = \"1\""));
    let d = Daemon::build(&p).file().start();
    wait_for("the first converge", Duration::from_secs(30), || {
        d.status()["status"] == "converged"
    });

    // A deploy whose container exits at once with code 7, having printed a secret: its
    // gate fails, the stack goes back.
    let token = "tok-e2e-4f9a7c1d";
    p.edit(&text(&format!(
        "VERSION = \"2\", FIXTURE_EXIT_AFTER = \"0\", FIXTURE_EXIT_CODE = \"7\", API_TOKEN = \"{token}\", FIXTURE_ECHO_ENV = \"API_TOKEN\""
    )));
    wait_for("the rolled-back event", Duration::from_secs(40), || {
        !receiver.requests().is_empty()
    });
    // The poisoned desired state the next turns find is that same incident: no more.
    std::thread::sleep(Duration::from_secs(3));
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "one event, once: {:?}", receiver.ids());
    let event = &requests[0];
    assert_eq!(event.id(), format!("{}:2:rolled-back", p.name));
    assert_signed(event);
    let v = event.json();
    assert_eq!(v["type"], "berth.rolled-back", "{v}");
    let data = &v["data"];
    assert_eq!(data["project"], p.name.as_str());
    assert_eq!(data["generation"], 2);
    assert_eq!(data["reverted_to"], 1);
    assert_eq!(data["failing_services"], serde_json::json!(["web"]));
    assert_eq!(data["services"], serde_json::json!(["web"]));
    assert!(
        data["reason"].as_str().unwrap().contains("web"),
        "the reason names the service: {data}"
    );
    assert!(
        !event.body.contains(&Receiver::url(port)),
        "the url is a secret"
    );
    // The evidence: how the container ended and its last line.
    let evidence = data["evidence"].as_array().expect("evidence");
    assert_eq!(evidence.len(), 1, "{data}");
    assert_eq!(evidence[0]["service"], "web");
    assert_eq!(evidence[0]["exit_code"], 7, "{data}");
    assert_eq!(evidence[0]["oom_killed"], false);
    let last = evidence[0]["last_line"].as_str().unwrap();
    assert!(
        last.contains("event=exit") && last.contains("code=7"),
        "{last}"
    );
    // What generation 2 changed from generation 1: keys, no secret's value.
    let changes: Vec<&str> = data["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(changes.len(), 1, "{changes:?}");
    for key in ["~VERSION", "+API_TOKEN", "+FIXTURE_EXIT_CODE"] {
        assert!(
            changes[0].starts_with("web: ") && changes[0].contains(key),
            "{changes:?}"
        );
    }
    assert!(
        !event.body.contains(token),
        "the secret the container printed is in no part of the event: {}",
        event.body
    );
    assert_eq!(d.status()["status"], "blocked");

    // The fix: a generation that passes its gate closes the incident.
    p.edit(&text("VERSION = \"3\""));
    wait_for("the recovered event", Duration::from_secs(40), || {
        receiver.requests().len() >= 2
    });
    let recovered = &receiver.requests()[1];
    assert_eq!(recovered.id(), format!("{}:3:recovered", p.name));
    assert_signed(recovered);
    assert_eq!(recovered.json()["type"], "berth.recovered");
    assert_eq!(
        metric(&d, "berth_notifications_total{result=\"delivered\"}"),
        "berth_notifications_total{result=\"delivered\"} 2"
    );
    assert_eq!(
        metric(&d, "berth_notify_outbox_depth"),
        "berth_notify_outbox_depth 0"
    );
    assert_eq!(d.stop(), 0);
}

#[test]
fn a_receiver_that_answers_500_three_times_gets_the_event_once_more_with_the_same_id() {
    let p = Project::new("notify-retry");
    let port = free_port();
    let receiver = Receiver::start(
        port,
        State {
            fail_next: 3,
            ..State::default()
        },
    );
    p.write(&with_receiver(
        port,
        "events = [\"deployed\"]",
        "VERSION = \"1\"",
    ));
    let d = Daemon::build(&p).file().start();
    wait_for("four attempts", Duration::from_secs(60), || {
        receiver.requests().len() >= 4
    });
    std::thread::sleep(Duration::from_secs(3));
    let requests = receiver.requests();
    let answers: Vec<u16> = requests.iter().map(|r| r.answered).collect();
    assert_eq!(answers, [500, 500, 500, 200], "{:?}", receiver.ids());
    let id = format!("{}:1:deployed", p.name);
    for r in &requests {
        assert_eq!(r.id(), id);
        assert_signed(r);
        assert_eq!(r.body, requests[0].body, "the same body on every attempt");
    }
    assert_eq!(
        metric(&d, "berth_notifications_total{result=\"retried\"}"),
        "berth_notifications_total{result=\"retried\"} 3"
    );
    assert_eq!(d.stop(), 0);
}

#[test]
fn with_the_receiver_down_a_killed_daemon_delivers_the_event_once_the_receiver_is_back() {
    let p = Project::new("notify-kill");
    let port = free_port();
    p.write(&with_receiver(
        port,
        "events = [\"deployed\"]",
        "VERSION = \"1\"",
    ));
    let mut first = Daemon::build(&p).file().start();
    wait_for("the first converge", Duration::from_secs(30), || {
        first.status()["status"] == "converged"
    });
    // Refused at least once, then killed outright.
    wait_for("a refused attempt", Duration::from_secs(20), || {
        metric(&first, "berth_notifications_total{result=\"retried\"}")
            != "berth_notifications_total{result=\"retried\"} 0"
    });
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    let second = Daemon::build(&p).file().start();
    let receiver = Receiver::start(port, State::default());
    wait_for(
        "the event after the restart",
        Duration::from_secs(60),
        || !receiver.requests().is_empty(),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(receiver.ids(), [format!("{}:1:deployed", p.name)]);
    assert_signed(&receiver.requests()[0]);
    assert_eq!(second.stop(), 0);
}

#[test]
fn a_failure_that_persists_is_sent_once_then_reminded_once_per_repeat_never_once_per_turn() {
    let p = Project::new("notify-repeat");
    let port = free_port();
    let receiver = Receiver::start(port, State::default());
    let good = with_receiver(port, "repeat = \"2s\"", "VERSION = \"1\"");
    p.write(&good);
    // A turn a second: a flood would show.
    let d = Daemon::build(&p).file().args(&["--resync", "1s"]).start();
    wait_for("the first converge", Duration::from_secs(30), || {
        d.status()["status"] == "converged"
    });
    assert!(
        receiver.requests().is_empty(),
        "deployed is not sent by default"
    );

    p.edit(&good.replace("image = \"berth-fixture:test\"", "image = 12"));
    wait_for("the blocked event", Duration::from_secs(20), || {
        !receiver.requests().is_empty()
    });
    let since = Instant::now();
    // Three reminder intervals.
    std::thread::sleep(Duration::from_millis(6_900));
    let ids = receiver.ids();
    let blocked = format!("{}:1:blocked", p.name);
    assert_eq!(ids[0], blocked, "{ids:?}");
    assert_eq!(
        ids.iter().filter(|i| **i == blocked).count(),
        1,
        "the event once: {ids:?}"
    );
    let reminders: Vec<&String> = ids.iter().skip(1).collect();
    eprintln!("in {:?}: {ids:?}", since.elapsed());
    assert!(
        (2..=4).contains(&reminders.len()),
        "one reminder per 2 s over 7 s: {ids:?}"
    );
    for (n, id) in reminders.iter().enumerate() {
        assert_eq!(**id, format!("{blocked}:reminder:{}", n + 1));
    }
    let last = receiver.requests().last().unwrap().json();
    assert_eq!(last["type"], "berth.blocked", "{last}");
    assert!(
        last["data"]["reminder"]["n"].as_i64().unwrap() >= 2,
        "{last}"
    );
    assert!(
        last["data"]["reason"].as_str().unwrap().contains("invalid"),
        "{last}"
    );

    // Fixed: converged again, and the incident closes.
    p.edit(&good);
    wait_for("the recovered event", Duration::from_secs(20), || {
        receiver.ids().contains(&format!("{}:1:recovered", p.name))
    });
    let count = receiver.requests().len();
    std::thread::sleep(Duration::from_millis(4_500));
    assert_eq!(
        receiver.requests().len(),
        count,
        "no reminder after recovered: {:?}",
        receiver.ids()
    );
    assert_eq!(d.stop(), 0);
}

/// Timings are printed, not asserted: the figures go in the report of the change.
#[test]
fn a_receiver_that_never_answers_does_not_slow_a_converge() {
    fn converges(p: &Project, d: &Daemon, text: &dyn Fn(&str) -> String) -> Vec<f64> {
        let mut took = Vec::new();
        for n in 2..=4 {
            let t0 = Instant::now();
            p.edit(&text(&format!("VERSION = \"{n}\"")));
            wait_for("the edit to converge", Duration::from_secs(40), || {
                let s = d.status();
                s["generation"] == n && s["status"] == "converged"
            });
            took.push(t0.elapsed().as_secs_f64());
        }
        took
    }
    fn recorded(p: &Project) -> Vec<i64> {
        p.history()
            .iter()
            .filter_map(|g| Some(g["finished_ms"].as_i64()? - g["started_ms"].as_i64()?))
            .collect()
    }

    let plain = Project::new("notify-plain");
    let text = |v: &str| ONE_WEB.replace("VERSION = \"1\"", v);
    plain.write(&text("VERSION = \"1\""));
    let d = Daemon::build(&plain).file().start();
    wait_for("the first converge", Duration::from_secs(30), || {
        d.status()["status"] == "converged"
    });
    let without = converges(&plain, &d, &text);
    assert_eq!(d.stop(), 0);

    let p = Project::new("notify-hang");
    let port = free_port();
    let receiver = Receiver::start(
        port,
        State {
            hang: true,
            ..State::default()
        },
    );
    let hanging = |v: &str| {
        with_receiver(port, "events = [\"deployed\"]", v)
            .replace("healthy_deadline = \"3s\"", "healthy_deadline = \"10s\"")
    };
    p.write(&hanging("VERSION = \"1\""));
    let d = Daemon::build(&p).file().start();
    wait_for("the first converge", Duration::from_secs(30), || {
        d.status()["status"] == "converged"
    });
    let with = converges(&p, &d, &hanging);
    assert!(
        !receiver.requests().is_empty(),
        "the receiver was sent events it never answered"
    );
    eprintln!(
        "edit to converged (s), without notify: {without:.2?}; with a receiver that never answers: {with:.2?}"
    );
    eprintln!(
        "recorded converge (ms), without: {:?}; with: {:?}",
        recorded(&plain),
        recorded(&p)
    );
    assert_eq!(d.stop(), 0);
}

#[test]
fn notify_test_prints_each_receivers_answer_and_flush_delivers_what_apply_recorded() {
    let p = Project::new("notify-cli");
    let (up, down) = (free_port(), free_port());
    let receiver = Receiver::start(up, State::default());
    p.write(&format!(
        "{}\n[[notify]]\nurl = \"{}\"\nevents = [\"deployed\"]\n",
        with_receiver(up, "events = [\"deployed\"]", "VERSION = \"1\""),
        Receiver::url(down)
    ));
    let run = p.berth(&["notify", "test"]);
    assert_eq!(run.code, 1, "one receiver is down");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!("receiver 1 http://127.0.0.1:{up}/… (standard, signed): 200 OK: ok")
    );
    assert!(
        lines[1].starts_with(&format!(
            "receiver 2 http://127.0.0.1:{down}/… (standard, unsigned): cannot connect"
        )),
        "{}",
        lines[1]
    );
    let test = &receiver.requests()[0];
    assert_signed(test);
    assert_eq!(test.json()["type"], "berth.test");

    // `apply` records the event and delivers nothing; `flush` delivers it.
    assert_eq!(p.berth(&["apply"]).code, 0);
    assert_eq!(receiver.requests().len(), 1, "apply only records");
    let run = p.berth(&["notify", "flush"]);
    assert_eq!(run.code, 1, "the receiver that is down did not take it");
    let deployed = format!("{}:1:deployed", p.name);
    assert!(
        run.stdout.contains(&format!(
            "{deployed} to http://127.0.0.1:{up}/…: 200 OK: ok (delivered)"
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("1 still waiting in the outbox"),
        "{}",
        run.stdout
    );
    assert_eq!(receiver.ids()[1], deployed);
    assert_signed(&receiver.requests()[1]);
}

/// A CA of the test's own, and the server config of a receiver on 127.0.0.1 whose
/// certificate it signed.
struct Tls {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

fn tls_signed_by(ca_name: &str) -> Tls {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let server =
        rustls::ServerConfig::builder_with_provider(Arc::new(berth::notify::tls::provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone(), ca.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
    Tls {
        ca_pem: ca.pem(),
        server: Arc::new(server),
    }
}

#[test]
fn an_https_receiver_gets_the_signed_event_and_one_whose_certificate_is_not_trusted_gets_nothing() {
    let p = Project::new("notify-tls");
    let (trusted, untrusted) = (free_port(), free_port());
    let ours = tls_signed_by("berth test CA");
    let strangers = tls_signed_by("a CA berth is not told of");
    let good = Receiver::start_tls(trusted, State::default(), ours.server.clone());
    let bad = Receiver::start_tls(untrusted, State::default(), strangers.server.clone());
    let ca_file = p.dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ours.ca_pem).unwrap();
    p.write(&format!(
        "{ONE_WEB}\n[[notify]]\nurl = \"https://127.0.0.1:{trusted}/hook\"\nsecret = \"{SECRET}\"\nevents = [\"deployed\"]\n[[notify]]\nurl = \"https://127.0.0.1:{untrusted}/hook\"\nevents = [\"deployed\"]\n"
    ));
    // berth trusts the test's CA, and only it (SSL_CERT_FILE replaces the host's store).
    let env = [("SSL_CERT_FILE", ca_file.to_str().unwrap())];
    let refused = |state: &Receiver| {
        let s = state.state.lock().unwrap();
        (s.requests.len(), s.no_request > 0, s.plain)
    };

    let t0 = Instant::now();
    let run = p.berth_env(&["notify", "test"], &env);
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "a refused certificate is no hang: {:?}",
        t0.elapsed()
    );
    assert_eq!(run.code, 1, "the untrusted receiver did not take it");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!("receiver 1 https://127.0.0.1:{trusted}/… (standard, signed): 200 OK: ok")
    );
    let untrusted_line = format!(
        "receiver 2 https://127.0.0.1:{untrusted}/… (standard, unsigned): cannot connect: the TLS handshake failed: invalid peer certificate: UnknownIssuer"
    );
    assert!(lines[1].starts_with(&untrusted_line), "{}", lines[1]);
    let test = &good.requests()[0];
    assert_signed(test);
    assert_eq!(test.json()["type"], "berth.test");
    assert_eq!(refused(&bad), (0, true, 0), "nothing read, over TLS only");
    assert_eq!(refused(&good).2, 0, "never plain http");

    // `apply` records the deployed event; `flush` delivers it over TLS to the one, and
    // keeps the other's delivery with the TLS error as its answer.
    assert_eq!(p.berth(&["apply"]).code, 0);
    let run = p.berth_env(&["notify", "flush"], &env);
    assert_eq!(run.code, 1);
    let deployed = format!("{}:1:deployed", p.name);
    assert!(
        run.stdout.contains(&format!(
            "{deployed} to https://127.0.0.1:{trusted}/…: 200 OK: ok (delivered)"
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!(
            "{deployed} to https://127.0.0.1:{untrusted}/…: cannot connect: the TLS handshake failed: invalid peer certificate: UnknownIssuer"
        )) && run.stdout.contains("(not taken; retried after"),
        "{}",
        run.stdout
    );
    assert_eq!(good.ids(), [test.id().to_string(), deployed]);
    assert_signed(&good.requests()[1]);
    assert_eq!(refused(&bad), (0, true, 0));
    assert_eq!(refused(&good).2, 0);
}
