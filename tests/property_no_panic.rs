//! No input panics (docs/design.md §12): generated desired states go through load, plan
//! and, when they load and their gates are short, the in-memory converge. Whatever the
//! input, each step answers with a value or an error, never a panic: under systemd a
//! panic is a crash loop, since the same file is read again before anything is recorded.
//!
//! The generator leans towards what a loader meets in the wild and what trips a careless
//! one: names with multi-byte characters at any byte, durations from `0s` to far past
//! `i64::MAX` seconds, ports outside every range, dependency cycles, unknown probe kinds,
//! and arbitrary text where a string is expected.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use berth::runtime::fake::FakeRuntime;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use toml::{Table, Value};

/// A name: mostly valid, sometimes any text (multi-byte characters included).
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z][a-z0-9_-]{0,12}",
        1 => "[a-zé😀_.-]{1,70}",
        1 => any::<String>(),
    ]
}

/// A duration as text: small ones (so converges run), huge ones, malformed ones.
fn duration() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["0s", "10ms", "20ms", "50ms", "100ms", "300ms", "1s"])
            .prop_map(str::to_string),
        1 => prop::sample::select(vec!["8760h", "8760h1ms", "525600m", "31536000s", "365d"])
            .prop_map(str::to_string),
        1 => "[0-9]{1,30}(ms|s|m|h|d|)",
        1 => "[0-9]{0,4}\\.[0-9]{0,20}(ms|s|m|h)",
        1 => any::<String>(),
    ]
}

fn port() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (1i64..70000).prop_map(Value::Integer),
        1 => any::<i64>().prop_map(Value::Integer),
        1 => "[0-9:./a-z-]{0,20}".prop_map(Value::String),
    ]
}

fn health(names: Vec<String>) -> impl Strategy<Value = Table> {
    let _ = names;
    (
        prop::sample::select(vec![
            "tcp",
            "http",
            "postgres",
            "redis",
            "exec",
            "docker",
            "smoke-signal",
        ]),
        port(),
        duration(),
        duration(),
        duration(),
        duration(),
        prop::option::of("/[a-z/]{0,10}|[^/].{0,10}"),
    )
        .prop_map(|(probe, port, interval, timeout, deadline, window, path)| {
            let mut h = Table::new();
            h.insert("probe".into(), Value::String(probe.into()));
            if probe == "exec" {
                h.insert(
                    "command".into(),
                    Value::Array(vec![Value::String("true".into())]),
                );
            } else {
                h.insert("port".into(), port);
            }
            if let (Some(p), "http") = (path, probe) {
                h.insert("path".into(), Value::String(p));
            }
            h.insert("interval".into(), Value::String(interval));
            h.insert("timeout".into(), Value::String(timeout));
            h.insert("healthy_deadline".into(), Value::String(deadline));
            h.insert("min_healthy_time".into(), Value::String(window));
            h
        })
}

fn service(pool: Vec<String>) -> impl Strategy<Value = Table> {
    (
        prop_oneof![
            4 => Just("fixture:1".to_string()),
            1 => "[a-z0-9./:@_-]{1,30}",
            1 => any::<String>(),
        ],
        prop::option::of(name()),
        prop::collection::vec(port(), 0..3),
        prop::collection::vec(prop::sample::select(pool.clone()), 0..3),
        prop::collection::btree_map("[A-Z_]{1,8}|.{1,8}", ".{0,20}", 0..3),
        prop::option::of(health(pool)),
        prop::option::of(prop::sample::select(vec![
            "no",
            "always",
            "unless-stopped",
            "on-failure",
            "on-failure:3",
            "sometimes",
        ])),
    )
        .prop_map(
            |(image, container_name, ports, deps, env, health, restart)| {
                let mut s = Table::new();
                s.insert("image".into(), Value::String(image));
                if let Some(n) = container_name {
                    s.insert("container_name".into(), Value::String(n));
                }
                if !ports.is_empty() {
                    s.insert(
                        "ports".into(),
                        Value::Array(
                            ports
                                .into_iter()
                                .map(|p| match p {
                                    Value::Integer(i) => Value::String(format!("{i}:8080")),
                                    other => other,
                                })
                                .collect(),
                        ),
                    );
                }
                if !deps.is_empty() {
                    s.insert(
                        "depends_on".into(),
                        Value::Array(deps.into_iter().map(Value::String).collect()),
                    );
                }
                let mut e: Table = env
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect();
                e.insert("FIXTURE_READY_AFTER".into(), Value::String("0".into()));
                s.insert("environment".into(), Value::Table(e));
                if let Some(h) = health {
                    s.insert("health".into(), Value::Table(h));
                }
                if let Some(r) = restart {
                    s.insert("restart".into(), Value::String(r.into()));
                }
                s
            },
        )
}

/// Bring a generated state close to valid, keeping some of its variety: an acyclic
/// graph, probes the fake engine answers, short coherent gates, no clashing ports. Most
/// cases are tamed so that they get past the loader into a plan and a converge; the rest
/// stay wild and exercise every error path.
fn tame(names: &[String], services: &mut [Table], deadline: &mut String, window: &mut String) {
    let small = ["0s", "10ms", "20ms", "50ms"];
    *deadline = "1s".into();
    if !small.contains(&window.as_str()) {
        *window = "0s".into();
    }
    for (i, s) in services.iter_mut().enumerate() {
        s.insert("image".into(), Value::String("fixture:1".into()));
        s.remove("container_name");
        if let Some(Value::Array(ports)) = s.get_mut("ports") {
            *ports = vec![Value::String(format!("{}:8080", 21000 + i))];
        }
        if let Some(Value::Array(deps)) = s.get_mut("depends_on") {
            deps.retain(|d| names[..i].iter().any(|n| Some(n.as_str()) == d.as_str()));
            deps.dedup();
        }
        if let Some(Value::Table(env)) = s.get_mut("environment") {
            env.retain(|k, _| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            });
        }
        if let Some(Value::String(r)) = s.get("restart")
            && !["no", "always", "unless-stopped", "on-failure"].contains(&r.as_str())
        {
            s.remove("restart");
        }
        if let Some(Value::Table(h)) = s.get_mut("health") {
            let probe = match h.get("probe").and_then(Value::as_str) {
                Some("http") => "http",
                _ => "tcp",
            };
            let kept_window = h
                .get("min_healthy_time")
                .and_then(Value::as_str)
                .filter(|w| small.contains(w))
                .unwrap_or("0s")
                .to_string();
            h.clear();
            h.insert("probe".into(), Value::String(probe.into()));
            h.insert("port".into(), Value::Integer(8080));
            h.insert("interval".into(), Value::String("20ms".into()));
            h.insert("timeout".into(), Value::String("200ms".into()));
            h.insert("min_healthy_time".into(), Value::String(kept_window));
        }
    }
}

/// A whole desired state as TOML text.
fn desired_state() -> impl Strategy<Value = String> {
    (
        name(),
        prop::collection::btree_set(name(), 1..5),
        prop::bool::weighted(0.7),
    )
        .prop_flat_map(|(project, names, tamed)| {
            let names: Vec<String> = names.into_iter().collect();
            let services = prop::collection::vec(service(names.clone()), names.len());
            let project = if tamed {
                Just("prop".to_string()).boxed()
            } else {
                Just(project).boxed()
            };
            (
                project,
                Just(names),
                services,
                duration(),
                duration(),
                Just(tamed),
            )
        })
        .prop_map(
            |(project, names, mut services, mut deadline, mut window, tamed)| {
                if tamed {
                    tame(&names, &mut services, &mut deadline, &mut window);
                }
                let mut root = Table::new();
                let mut p = Table::new();
                p.insert("name".into(), Value::String(project));
                root.insert("project".into(), Value::Table(p));
                let mut r = Table::new();
                r.insert("healthy_deadline".into(), Value::String(deadline));
                r.insert("min_healthy_time".into(), Value::String(window));
                root.insert("rollout".into(), Value::Table(r));
                let s: Table = names
                    .into_iter()
                    .zip(services)
                    .map(|(n, s)| (n, Value::Table(s)))
                    .collect();
                root.insert("services".into(), Value::Table(s));
                toml::to_string(&root).expect("a table serialises")
            },
        )
}

/// Load; plan against an empty engine; converge on the in-memory engine when every gate
/// is short enough to run here. Any panic fails the property.
static LOADED: AtomicUsize = AtomicUsize::new(0);
static CONVERGED: AtomicUsize = AtomicUsize::new(0);

fn run_one(text: &str) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("berth.toml");
    std::fs::write(&file, text).unwrap();
    let d = match berth::spec::load_with_env(&file, &Default::default(), &HashMap::new()) {
        Ok(d) => d,
        Err(e) => {
            if std::env::var_os("BERTH_PROPTEST_SHOW").is_some() {
                eprintln!("--- {e}");
            }
            return Ok(());
        }
    };
    LOADED.fetch_add(1, Ordering::Relaxed);
    let short = d.services.values().all(|s| {
        let (deadline, window) = d.gate_timing(s);
        deadline <= std::time::Duration::from_secs(1)
            && window <= std::time::Duration::from_millis(300)
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let fake = FakeRuntime::new();
        fake.add_image("fixture:1", "sha256:one");
        let observed = berth::observe::observe(&fake, &d).await.unwrap();
        let _ = berth::plan::plan(&d, &observed).to_string();
        if !short {
            return;
        }
        let _ = common::fake::apply_once(&fake, dir.path(), &d).await;
        CONVERGED.fetch_add(1, Ordering::Relaxed);
    });
    Ok(())
}

#[test]
fn generated_desired_states_never_panic_load_plan_or_converge() {
    let mut runner = TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    });
    runner.run(&desired_state(), |text| run_one(&text)).unwrap();
    // The property means something only if generated states get past the loader and
    // into a converge: a generator that only makes invalid files proves nothing.
    let (loaded, converged) = (
        LOADED.load(Ordering::Relaxed),
        CONVERGED.load(Ordering::Relaxed),
    );
    eprintln!("{loaded} of 96 loaded, {converged} converged");
    assert!(
        loaded >= 10 && converged >= 5,
        "{loaded} loaded, {converged} converged"
    );
}

/// The largest durations berth accepts are safe downstream: a converge whose gate has a
/// year for every duration runs (and ends at once, the probe passing at its first try).
#[tokio::test]
async fn a_converge_over_the_largest_accepted_durations_runs() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("berth.toml");
    std::fs::write(
        &file,
        r#"
[project]
name = "longest"
[rollout]
healthy_deadline = "8760h"
progress_deadline = "8760h"
min_healthy_time = "0s"
[services.web]
image = "fixture:1"
environment = { FIXTURE_READY_AFTER = "0" }
health = { probe = "tcp", port = 8080, interval = "8760h", timeout = "8760h", healthy_deadline = "8760h" }
"#,
    )
    .unwrap();
    let d = berth::spec::load_with_env(&file, &Default::default(), &HashMap::new())
        .expect("a year is accepted");
    assert_eq!(
        d.gate_timing(&d.services["web"]).0,
        berth::spec::duration::MAX
    );
    let fake = FakeRuntime::new();
    fake.add_image("fixture:1", "sha256:one");
    let outcome = common::fake::apply_once(&fake, dir.path(), &d)
        .await
        .unwrap();
    assert!(
        matches!(outcome, berth::reconcile::ApplyOutcome::Converged { .. }),
        "{outcome:?}"
    );
}

#[test]
fn arbitrary_text_never_panics_the_loader() {
    let mut runner = TestRunner::new(Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    });
    let text = prop_oneof![
        any::<String>(),
        // Near-valid files: a valid head, then anything.
        ".{0,200}".prop_map(|t| format!("[project]\nname = \"p\"\n[services.a]\n{t}")),
    ];
    runner
        .run(&text, |t| {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("berth.toml");
            std::fs::write(&file, &t).unwrap();
            let _ = berth::spec::load_with_env(&file, &Default::default(), &HashMap::new());
            Ok(())
        })
        .unwrap();
}
