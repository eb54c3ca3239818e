//! A panic inside a daemon turn (a bug some input finds) is caught: the project is
//! `blocked (internal error: …)`, the last good generation keeps running, the desired
//! state that panicked is not converged again until it changes, and the daemon goes on
//! (docs/design.md §12). On the in-memory engine, whose `panic_on_create` stands in for
//! the bug.

use std::sync::Mutex;

use berth::daemon::turn::{Memory, Target, TurnOutcome, turn};
use berth::reconcile::ApplyOutcome;
use berth::report::Reporter;
use berth::runtime::fake::FakeRuntime;
use berth::shutdown::Shutdown;
use berth::store::Store;

const GOOD: &str = r#"
[project]
name = "panicky"
[rollout]
healthy_deadline = "2s"
min_healthy_time = "100ms"
[services.web]
image = "fixture:1"
environment = { VERSION = "1" }
health = { probe = "tcp", port = 8080, interval = "20ms" }
"#;

#[tokio::test]
async fn a_panicking_turn_blocks_the_project_and_keeps_the_running_generation() {
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::new();
    rt.add_image("fixture:1", "sha256:one");
    let state = dir.path().join("state.db");
    let store = Store::open(&state).await.unwrap();
    let file = dir.path().join("berth.toml");
    std::fs::write(&file, GOOD).unwrap();
    let target = Target {
        file: file.clone(),
        selection: Default::default(),
        state: state.clone(),
        git: None,
        grants: Default::default(),
    };
    let memory = Mutex::new(Memory::default());
    let report = Reporter::quiet();
    let never = Shutdown::never();

    let first = turn(&rt, &store, &target, &memory, &report, &never)
        .await
        .unwrap();
    assert!(
        matches!(
            first,
            TurnOutcome::Reconciled(ApplyOutcome::Converged { .. })
        ),
        "premise: the first desired state converges: {first:?}"
    );
    let running = rt.container_names();
    assert_eq!(running.len(), 1, "{running:?}");
    let good_id = rt.running_ids();

    // A changed desired state whose converge meets the bug.
    std::fs::write(&file, GOOD.replace("VERSION = \"1\"", "VERSION = \"2\"")).unwrap();
    rt.panic_on_create(Some("web"));
    let second = turn(&rt, &store, &target, &memory, &report, &never)
        .await
        .expect("a panic is an outcome, not an error the scheduler backs off on");
    let TurnOutcome::Kept { problem, .. } = &second else {
        panic!("expected the running generation to be kept: {second:?}");
    };
    assert!(
        problem.starts_with("internal error: the fake engine panics creating"),
        "{problem}"
    );
    assert_eq!(
        memory.lock().unwrap().problem.as_deref(),
        Some(problem.as_str()),
        "status shows it as the project's problem (blocked)"
    );
    // The last good generation runs: the repair put back whatever the panic left.
    let after = rt.running_ids();
    assert_eq!(after.len(), 1, "{after:?}");

    // The same desired state is not converged again: no create is tried, no panic.
    let creates = rt.calls().get("create_container").copied().unwrap_or(0);
    let third = turn(&rt, &store, &target, &memory, &report, &never)
        .await
        .unwrap();
    assert!(matches!(third, TurnOutcome::Kept { .. }), "{third:?}");
    assert_eq!(
        rt.calls().get("create_container").copied().unwrap_or(0),
        creates,
        "the desired state that panicked was converged again"
    );

    // A changed desired state (the fix) converges; the memory is whole again.
    rt.panic_on_create(None);
    std::fs::write(&file, GOOD.replace("VERSION = \"1\"", "VERSION = \"3\"")).unwrap();
    let fourth = turn(&rt, &store, &target, &memory, &report, &never)
        .await
        .unwrap();
    assert!(
        matches!(
            fourth,
            TurnOutcome::Reconciled(ApplyOutcome::Converged { .. })
        ),
        "{fourth:?}"
    );
    assert_eq!(memory.lock().unwrap().problem, None);
    assert_ne!(rt.running_ids(), good_id, "web was recreated for VERSION=3");
}
