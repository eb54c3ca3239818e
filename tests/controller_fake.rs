//! Controller logic on the in-memory runtime: ordering, no-op cost and the whole-stack
//! revert, in about a second. (Not on paused tokio time: the SQLite store's pool timeouts
//! would fire while its worker thread runs.) The same behaviours are proved
//! against the real engine in the e2e suites; these pin the controller's decisions.

use std::collections::HashMap;

use berth::converge::{ApplyOutcome, apply};
use berth::report::Reporter;
use berth::runtime::fake::FakeRuntime;
use berth::spec::DesiredState;
use berth::store::Store;

fn desired(dir: &std::path::Path, toml: &str) -> DesiredState {
    let f = dir.join("berth.toml");
    std::fs::write(&f, toml).unwrap();
    berth::spec::load_with_env(&f, &Default::default(), &HashMap::new()).unwrap()
}

const STACK: &str = r#"
[project]
name = "fake"
[rollout]
healthy_deadline = "2s"
min_healthy_time = "200ms"
[services.db]
image = "fixture:1"
environment = { FIXTURE_READY_AFTER = "0.3" }
health = { probe = "http", port = 8080, interval = "20ms" }
[services.cache]
image = "fixture:1"
depends_on = ["db"]
environment = { FIXTURE_READY_AFTER = "0.2" }
health = { probe = "tcp", port = 8080, interval = "20ms" }
[services.app]
image = "fixture:1"
depends_on = ["cache"]
health = { probe = "http", port = 8080, interval = "20ms" }
"#;

async fn setup() -> (tempfile::TempDir, FakeRuntime, Store) {
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::new();
    rt.add_image("fixture:1", "sha256:one");
    let store = Store::open(&dir.path().join("state.db")).await.unwrap();
    (dir, rt, store)
}

#[tokio::test]
async fn each_level_starts_only_after_the_level_below_is_healthy() {
    let (dir, rt, store) = setup().await;
    let d = desired(dir.path(), STACK);
    let out = apply(&rt, &store, &d, &Reporter::quiet(), false)
        .await
        .unwrap();
    assert_eq!(out, ApplyOutcome::Converged { generation: 1 });
    let events = rt.events();
    let pos = |e: &str| {
        events
            .iter()
            .position(|x| x == e)
            .unwrap_or_else(|| panic!("{e} missing in {events:?}"))
    };
    assert!(pos("healthy db") < pos("create cache"), "{events:?}");
    assert!(pos("healthy cache") < pos("create app"), "{events:?}");
}

#[tokio::test]
async fn a_no_op_reconcile_makes_one_list_call_and_no_inspects() {
    let (dir, rt, store) = setup().await;
    let d = desired(dir.path(), STACK);
    apply(&rt, &store, &d, &Reporter::quiet(), false)
        .await
        .unwrap();
    let before = rt.calls();
    assert_eq!(
        apply(&rt, &store, &d, &Reporter::quiet(), false)
            .await
            .unwrap(),
        ApplyOutcome::NoChanges
    );
    let after = rt.calls();
    let delta = |k: &str| after.get(k).unwrap_or(&0) - before.get(k).unwrap_or(&0);
    assert_eq!(delta("list_containers"), 1);
    assert_eq!(delta("inspect_container"), 0);
    assert_eq!(delta("create_container"), 0);
    assert_eq!(delta("inspect_image"), 1, "one per distinct image");
}

#[tokio::test]
async fn a_failed_gate_reverts_to_the_pinned_image_and_poisons_the_desired_state() {
    let (dir, rt, store) = setup().await;
    let good = desired(dir.path(), STACK);
    apply(&rt, &store, &good, &Reporter::quiet(), false)
        .await
        .unwrap();
    // The tag moves, and generation 2 makes app never healthy.
    rt.add_image("fixture:1", "sha256:two");
    let bad = desired(
        dir.path(),
        &STACK.replace("[services.app]\nimage = \"fixture:1\"", "[services.app]\nimage = \"fixture:1\"\nenvironment = { FIXTURE_NEVER_HEALTHY = \"1\" }"),
    );
    match apply(&rt, &store, &bad, &Reporter::quiet(), false)
        .await
        .unwrap()
    {
        ApplyOutcome::RolledBack {
            generation: 2,
            to: 1,
            reason,
        } => {
            assert!(
                reason.contains("service \"app\" failed its gate"),
                "{reason}"
            );
        }
        other => panic!("expected a rollback, got {other:?}"),
    }
    assert_eq!(
        rt.image_of("fake-app").as_deref(),
        Some("sha256:one"),
        "the pinned image, not the moved tag"
    );
    let h = store.history(Some("fake")).await.unwrap();
    assert_eq!(
        (h[1].outcome.as_str(), h[1].reverted_to),
        ("rolled-back", Some(1))
    );
    match apply(&rt, &store, &bad, &Reporter::quiet(), false)
        .await
        .unwrap()
    {
        ApplyOutcome::Poisoned { generation: 2, .. } => {}
        other => panic!("expected poisoned, got {other:?}"),
    }
}

#[tokio::test]
async fn a_revert_that_cannot_run_leaves_the_project_degraded() {
    let (dir, rt, store) = setup().await;
    apply(
        &rt,
        &store,
        &desired(dir.path(), STACK),
        &Reporter::quiet(),
        false,
    )
    .await
    .unwrap();
    // Generation 1's pinned image is deleted, so the revert cannot recreate app from it.
    rt.add_image("fixture:2", "sha256:two");
    rt.remove_image("sha256:one");
    let bad = desired(dir.path(), &STACK.replace("fixture:1", "fixture:2").replace(
        "[services.app]\nimage = \"fixture:2\"",
        "[services.app]\nimage = \"fixture:2\"\nenvironment = { FIXTURE_NEVER_HEALTHY = \"1\" }",
    ));
    match apply(&rt, &store, &bad, &Reporter::quiet(), false)
        .await
        .unwrap()
    {
        ApplyOutcome::Degraded {
            generation: 2,
            reason,
        } => {
            assert!(
                reason.contains("the revert to generation 1 failed too"),
                "{reason}"
            );
            assert!(reason.contains("sha256:one"), "{reason}");
        }
        other => panic!("expected degraded, got {other:?}"),
    }
    let h = store.history(Some("fake")).await.unwrap();
    assert_eq!(h[1].outcome, "failed");
}
