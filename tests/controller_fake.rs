//! Controller logic on the in-memory runtime: ordering, no-op cost and the whole-stack
//! revert, in about a second. (Not on paused tokio time: the SQLite store's pool timeouts
//! would fire while its worker thread runs.) The same behaviours are proved
//! against the real engine in the e2e suites; these pin the controller's decisions.

mod common;

use std::collections::HashMap;

use berth::reconcile::{ApplyOutcome, Options};
use berth::report::Reporter;
use berth::runtime::fake::FakeRuntime;
use berth::shutdown::Shutdown;
use berth::spec::DesiredState;
use berth::store::{Outcome, Store};

/// One `apply`: take the project's lock beside the store, reconcile, release.
async fn apply(
    t: &T,
    d: &DesiredState,
    force: bool,
) -> Result<ApplyOutcome, berth::converge::ConvergeError> {
    apply_with(
        t,
        d,
        Options {
            force,
            ..Default::default()
        },
        &Shutdown::never(),
    )
    .await
}

async fn apply_with(
    t: &T,
    d: &DesiredState,
    opts: Options,
    shutdown: &Shutdown,
) -> Result<ApplyOutcome, berth::converge::ConvergeError> {
    common::fake::apply(&t.rt, &t.store, &t.state, d, opts, shutdown).await
}

/// `berth rollback` to `target`, under the project's lock.
async fn rollback(t: &T, target: &berth::store::Generation) -> ApplyOutcome {
    let never = Shutdown::never();
    let mut lock = berth::lock::acquire(&t.state, "fake", "rollback", false, &never, |_| {})
        .await
        .unwrap();
    berth::reconcile::rollback(
        &t.rt,
        &t.store,
        target,
        &mut lock,
        &Reporter::quiet(),
        &never,
    )
    .await
    .unwrap()
}

/// A test's world: a temp dir, the in-memory engine, the store at `<dir>/state.db`.
struct T {
    dir: tempfile::TempDir,
    rt: FakeRuntime,
    store: Store,
    state: std::path::PathBuf,
}

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

async fn setup() -> T {
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::new();
    rt.add_image("fixture:1", "sha256:one");
    let state = dir.path().join("state.db");
    let store = Store::open(&state).await.unwrap();
    T {
        dir,
        rt,
        store,
        state,
    }
}

#[tokio::test]
async fn each_level_starts_only_after_the_level_below_is_healthy() {
    let t = setup().await;
    let (dir, rt) = (&t.dir, &t.rt);
    let d = desired(dir.path(), STACK);
    let out = apply(&t, &d, false).await.unwrap();
    assert_eq!(
        out,
        ApplyOutcome::Converged {
            generation: 1,
            resumed: false
        }
    );
    let events = rt.events();
    let pos = |e: &str| {
        events
            .iter()
            .position(|x| x == e)
            .unwrap_or_else(|| panic!("{e} missing in {events:?}"))
    };
    assert!(pos("healthy db") < pos("start cache"), "{events:?}");
    assert!(pos("healthy cache") < pos("start app"), "{events:?}");
}

#[tokio::test]
async fn a_no_op_reconcile_makes_one_list_call_and_no_inspects() {
    let t = setup().await;
    let (dir, rt) = (&t.dir, &t.rt);
    let d = desired(dir.path(), STACK);
    apply(&t, &d, false).await.unwrap();
    let before = rt.calls();
    assert_eq!(apply(&t, &d, false).await.unwrap(), ApplyOutcome::NoChanges);
    let after = rt.calls();
    let delta = |k: &str| after.get(k).unwrap_or(&0) - before.get(k).unwrap_or(&0);
    assert_eq!(delta("list_containers"), 1);
    assert_eq!(delta("inspect_container"), 0);
    assert_eq!(delta("create_container"), 0);
    assert_eq!(delta("inspect_image"), 1, "one per distinct image");
}

#[tokio::test]
async fn a_failed_gate_reverts_to_the_pinned_image_and_poisons_the_desired_state() {
    let t = setup().await;
    let (dir, rt, store) = (&t.dir, &t.rt, &t.store);
    let good = desired(dir.path(), STACK);
    apply(&t, &good, false).await.unwrap();
    // The tag moves, and generation 2 makes app never healthy.
    rt.add_image("fixture:1", "sha256:two");
    let bad = desired(
        dir.path(),
        &STACK.replace("[services.app]\nimage = \"fixture:1\"", "[services.app]\nimage = \"fixture:1\"\nenvironment = { FIXTURE_NEVER_HEALTHY = \"1\" }"),
    );
    match apply(&t, &bad, false).await.unwrap() {
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
        (h[1].outcome, h[1].reverted_to),
        (Outcome::RolledBack, Some(1))
    );
    match apply(&t, &bad, false).await.unwrap() {
        ApplyOutcome::Poisoned { generation: 2, .. } => {}
        other => panic!("expected poisoned, got {other:?}"),
    }
}

#[tokio::test]
async fn a_revert_that_cannot_run_leaves_the_project_degraded() {
    let t = setup().await;
    let (dir, rt, store) = (&t.dir, &t.rt, &t.store);
    apply(&t, &desired(dir.path(), STACK), false).await.unwrap();
    // Generation 1's pinned image is deleted, so the revert cannot recreate app from it.
    rt.add_image("fixture:2", "sha256:two");
    rt.remove_image("sha256:one");
    let bad = desired(dir.path(), &STACK.replace("fixture:1", "fixture:2").replace(
        "[services.app]\nimage = \"fixture:2\"",
        "[services.app]\nimage = \"fixture:2\"\nenvironment = { FIXTURE_NEVER_HEALTHY = \"1\" }",
    ));
    match apply(&t, &bad, false).await.unwrap() {
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
    assert_eq!(h[1].outcome, Outcome::Failed);
}

/// The stack with app never healthy: what a bad deploy looks like.
fn never_healthy_app() -> String {
    STACK.replace("[services.app]\nimage = \"fixture:1\"", NEVER)
}

/// A world where generation 1 (STACK) is healthy.
async fn good_first() -> T {
    let t = setup().await;
    let out = apply(&t, &desired(t.dir.path(), STACK), false)
        .await
        .unwrap();
    assert!(
        matches!(out, ApplyOutcome::Converged { generation: 1, .. }),
        "{out:?}"
    );
    t
}

const NEVER: &str =
    "[services.app]\nimage = \"fixture:1\"\nenvironment = { FIXTURE_NEVER_HEALTHY = \"1\" }";

#[tokio::test]
async fn a_converge_stopped_in_a_gate_is_interrupted_and_the_next_one_resumes_it() {
    let t = setup().await;
    let d = desired(t.dir.path(), STACK);
    let (trigger, shutdown) = Shutdown::new();
    // Stop while db (ready after 0.3 s) is being gated.
    let stop = async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        trigger.fire(15);
    };
    let (out, ()) = tokio::join!(apply_with(&t, &d, Options::default(), &shutdown), stop);
    assert_eq!(
        out.unwrap(),
        ApplyOutcome::Interrupted {
            generation: Some(1),
            signal: 15
        }
    );
    assert_eq!(
        t.store.latest("fake").await.unwrap().unwrap().outcome,
        Outcome::Interrupted
    );
    // The level above was made ahead (created, not started); nothing past the
    // interrupted level starts.
    assert!(
        !t.rt.events().iter().any(|e| e == "start cache"),
        "nothing past the interrupted level starts: {:?}",
        t.rt.events()
    );
    // The next converge finishes generation 1 itself: no new generation.
    assert_eq!(
        apply(&t, &d, false).await.unwrap(),
        ApplyOutcome::Converged {
            generation: 1,
            resumed: true
        }
    );
    let h = t.store.history(Some("fake")).await.unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].outcome, Outcome::Healthy);
    assert_eq!(apply(&t, &d, false).await.unwrap(), ApplyOutcome::NoChanges);
}

#[tokio::test]
async fn a_resumed_generation_that_fails_its_gate_reverts_instead_of_passing_as_converged() {
    let t = good_first().await;
    let bad = desired(t.dir.path(), &never_healthy_app());
    let (trigger, shutdown) = Shutdown::new();
    let stop = async {
        // db and cache are unchanged; app's gate (deadline 2 s) is running by now.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        trigger.fire(9);
    };
    let (out, ()) = tokio::join!(apply_with(&t, &bad, Options::default(), &shutdown), stop);
    assert!(matches!(
        out.unwrap(),
        ApplyOutcome::Interrupted {
            generation: Some(2),
            ..
        }
    ),);
    // The never-healthy container is in place and its config hash matches: a converge
    // that trusted it would say "No changes.".
    assert!(
        berth::plan::plan(&bad, &berth::observe::observe(&t.rt, &bad).await.unwrap()).is_noop()
    );
    match apply(&t, &bad, false).await.unwrap() {
        ApplyOutcome::RolledBack {
            generation: 2,
            to: 1,
            reason,
        } => {
            assert!(reason.contains("\"app\""), "{reason}")
        }
        other => panic!("expected the resumed gate to fail and revert, got {other:?}"),
    }
}

#[tokio::test]
async fn a_changed_desired_state_supersedes_an_interrupted_generation_and_gates_every_service() {
    let t = setup().await;
    let d = desired(t.dir.path(), STACK);
    let (trigger, shutdown) = Shutdown::new();
    let stop = async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        trigger.fire(2);
    };
    let (out, ()) = tokio::join!(apply_with(&t, &d, Options::default(), &shutdown), stop);
    assert!(matches!(out.unwrap(), ApplyOutcome::Interrupted { .. }));
    let d2 = desired(t.dir.path(), &STACK.replace("\"0.2\"", "\"0.1\""));
    assert_eq!(
        apply(&t, &d2, false).await.unwrap(),
        ApplyOutcome::Converged {
            generation: 2,
            resumed: false
        }
    );
    let h = t.store.history(Some("fake")).await.unwrap();
    assert_eq!(h[0].outcome, Outcome::Superseded);
    assert_eq!(h[1].outcome, Outcome::Healthy);
    // db's container was not changed by generation 2, yet it was gated again.
    let db = &h[1].timings["db"];
    assert_eq!(db.action.as_deref(), Some("noop"), "{db:?}");
    assert!(db.gate_s.is_some(), "db was not gated: {db:?}");
}

#[tokio::test]
async fn poison_follows_what_the_desired_state_resolves_to_not_its_bytes() {
    let t = good_first().await;
    let bad_text = never_healthy_app();
    let bad = desired(t.dir.path(), &bad_text);
    assert!(matches!(
        apply(&t, &bad, false).await.unwrap(),
        ApplyOutcome::RolledBack { .. }
    ));
    // A comment changes the bytes, not the resolved desired state: still poisoned.
    let commented = desired(t.dir.path(), &format!("# tried again\n{bad_text}"));
    assert!(matches!(
        apply(&t, &commented, false).await.unwrap(),
        ApplyOutcome::Poisoned { generation: 2, .. }
    ));
    // A manual rollback does not lift it either: not to the last good generation, and
    // not even to the poisoned generation itself (the CLI refuses that; the store's
    // rule holds regardless).
    for target in [1, 2] {
        let target = t.store.get("fake", target).await.unwrap().unwrap();
        rollback(&t, &target).await;
    }
    apply(&t, &desired(t.dir.path(), STACK), false)
        .await
        .unwrap();
    assert!(matches!(
        apply(&t, &bad, false).await.unwrap(),
        ApplyOutcome::Poisoned { .. }
    ));
    // A fix of what it resolves to applies (here a value; an env file or --profile alike).
    let fixed = desired(
        t.dir.path(),
        &bad_text.replace(
            "FIXTURE_NEVER_HEALTHY = \"1\"",
            "FIXTURE_READY_AFTER = \"0.1\"",
        ),
    );
    assert!(matches!(
        apply(&t, &fixed, false).await.unwrap(),
        ApplyOutcome::Converged { .. }
    ));
}

#[tokio::test]
async fn drift_is_repaired_as_an_event_of_the_running_generation() {
    let t = setup().await;
    let d = desired(t.dir.path(), STACK);
    apply(&t, &d, false).await.unwrap();
    t.rt.remove_by_hand("fake-cache");
    t.rt.stop_by_hand("fake-app");
    match apply(&t, &d, false).await.unwrap() {
        ApplyOutcome::Repaired {
            generation: 1,
            services,
        } => {
            assert_eq!(services, ["cache", "app"])
        }
        other => panic!("expected a repair of generation 1, got {other:?}"),
    }
    assert_eq!(
        t.store.history(Some("fake")).await.unwrap().len(),
        1,
        "no new generation"
    );
    let events = t.store.events(1).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.kind == "repair").count(), 2);
    assert_eq!(apply(&t, &d, false).await.unwrap(), ApplyOutcome::NoChanges);
}

#[tokio::test]
async fn a_drift_repair_lists_the_engines_containers_once_and_carries_out_its_own_plan() {
    let t = setup().await;
    let d = desired(t.dir.path(), STACK);
    apply(&t, &d, false).await.unwrap();
    t.rt.stop_by_hand("fake-app");
    let before = t.rt.calls();
    let outcome = apply(&t, &d, false).await.unwrap();
    assert!(
        matches!(&outcome, ApplyOutcome::Repaired { services, .. } if services == &["app"]),
        "{outcome:?}"
    );
    let after = t.rt.calls();
    let delta = |k: &str| after.get(k).unwrap_or(&0) - before.get(k).unwrap_or(&0);
    // The plan of the desired state and the repair's plan are made from one list.
    assert_eq!(delta("list_containers"), 1);
    assert_eq!(
        delta("create_container"),
        0,
        "a stopped container is started, not made"
    );
}

#[tokio::test]
async fn a_desired_state_that_removes_every_running_service_is_refused_unless_allowed() {
    let t = good_first().await;
    let other = desired(
        t.dir.path(),
        "[project]\nname = \"fake\"\n[services.web]\nimage = \"fixture:1\"\n",
    );
    match apply(&t, &other, false).await.unwrap() {
        ApplyOutcome::WouldRemoveAll { services } => assert_eq!(services, ["app", "cache", "db"]),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        t.rt.container_names(),
        ["fake-app", "fake-cache", "fake-db"]
    );
    let out = apply_with(
        &t,
        &other,
        Options {
            force: false,
            allow_empty: true,
            ..Default::default()
        },
        &Shutdown::never(),
    )
    .await
    .unwrap();
    assert!(
        matches!(out, ApplyOutcome::Converged { generation: 2, .. }),
        "{out:?}"
    );
    assert_eq!(t.rt.container_names(), ["fake-web"]);
}

#[tokio::test]
async fn a_revert_that_was_stopped_is_finished_by_the_next_converge_never_regated() {
    let t = good_first().await;
    let bad = desired(t.dir.path(), &never_healthy_app());
    // app's gate fails after 2 s; the revert then recreates app from generation 1 and
    // gates it (ready at once, stable 200 ms): stop inside that.
    let (trigger, shutdown) = Shutdown::new();
    let stop = async {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let g = t.store.get("fake", 2).await.unwrap();
            if g.is_some_and(|g| g.outcome == Outcome::Reverting) {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        trigger.fire(15);
    };
    let (out, ()) = tokio::join!(apply_with(&t, &bad, Options::default(), &shutdown), stop);
    assert!(matches!(
        out.unwrap(),
        ApplyOutcome::Interrupted {
            generation: Some(2),
            ..
        }
    ),);
    let g2 = t.store.get("fake", 2).await.unwrap().unwrap();
    assert_eq!((g2.outcome, g2.reverted_to), (Outcome::Reverting, Some(1)));

    // Any desired state now: the revert is finished first, and the failed spec is not
    // gated again (that would take its whole healthy_deadline and could pass by luck).
    let calls_before = t.rt.calls().get("create_container").copied().unwrap_or(0);
    match apply(&t, &bad, false).await.unwrap() {
        ApplyOutcome::RolledBack {
            generation: 2,
            to: 1,
            ..
        } => {}
        other => panic!("expected the revert to be finished, got {other:?}"),
    }
    let created = t.rt.calls().get("create_container").copied().unwrap_or(0) - calls_before;
    assert!(
        created <= 1,
        "only app's good container may be made again, not the bad one"
    );
    assert_eq!(t.rt.image_of("fake-app").as_deref(), Some("sha256:one"));
    let events = t.store.events(2).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.message.contains("revert did not end")),
        "{events:?}"
    );
    assert!(matches!(
        apply(&t, &bad, false).await.unwrap(),
        ApplyOutcome::Poisoned { .. }
    ));
}

#[tokio::test]
async fn drift_of_the_last_good_generation_is_repaired_even_while_the_file_is_poisoned() {
    let t = good_first().await;
    let bad = desired(t.dir.path(), &never_healthy_app());
    assert!(matches!(
        apply(&t, &bad, false).await.unwrap(),
        ApplyOutcome::RolledBack { .. }
    ));
    t.rt.remove_by_hand("fake-db");
    assert!(matches!(
        apply(&t, &bad, false).await.unwrap(),
        ApplyOutcome::Poisoned { .. }
    ));
    assert!(
        t.rt.container_names().contains(&"fake-db".to_string()),
        "db came back"
    );
    let events = t.store.events(1).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.kind == "repair").count(), 1);
}

#[tokio::test]
async fn a_failed_apply_asked_for_again_is_gated_again_not_called_no_changes() {
    let t = setup().await;
    let off = STACK.replace("[rollout]", "[rollout]\nauto_revert = false");
    apply(&t, &desired(t.dir.path(), &off), false)
        .await
        .unwrap();
    let bad = desired(
        t.dir.path(),
        &off.replace("[services.app]\nimage = \"fixture:1\"", NEVER),
    );
    assert!(matches!(
        apply(&t, &bad, false).await.unwrap(),
        ApplyOutcome::GateFailed { generation: 2, .. }
    ));
    // The failed containers are left as they are, and they look converged to a plan.
    match apply(&t, &bad, false).await.unwrap() {
        ApplyOutcome::GateFailed { generation: 2, .. } => {}
        other => panic!("expected generation 2 gated again and failing again, got {other:?}"),
    }
    assert_eq!(t.store.history(Some("fake")).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_forced_apply_that_fails_without_a_revert_does_not_lift_poison() {
    let t = good_first().await;
    let bad_text = never_healthy_app();
    let bad = desired(t.dir.path(), &bad_text);
    assert!(matches!(
        apply(&t, &bad, false).await.unwrap(),
        ApplyOutcome::RolledBack { .. }
    ));
    // Forced and interrupted before it ended, then superseded by another desired state.
    let (trigger, shutdown) = Shutdown::new();
    let stop = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        trigger.fire(2);
    };
    let forced = Options {
        force: true,
        allow_empty: false,
        ..Default::default()
    };
    let (out, ()) = tokio::join!(apply_with(&t, &bad, forced, &shutdown), stop);
    assert!(matches!(out.unwrap(), ApplyOutcome::Interrupted { .. }));
    let other = desired(t.dir.path(), &STACK.replace("\"0.2\"", "\"0.1\""));
    assert!(matches!(
        apply(&t, &other, false).await.unwrap(),
        ApplyOutcome::Converged { .. }
    ));
    assert!(matches!(
        apply(&t, &bad, false).await.unwrap(),
        ApplyOutcome::Poisoned { .. }
    ));
}

#[tokio::test]
async fn a_change_that_touches_no_container_is_a_new_generation_gated_without_recreating() {
    let t = good_first().await;
    let creates = t.rt.calls()["create_container"];
    // Only the probe changes: no container differs, yet this is a new desired state.
    let probe_changed = desired(
        t.dir.path(),
        &STACK.replace(
            "interval = \"20ms\" }\n[services.cache]",
            "interval = \"30ms\" }\n[services.cache]",
        ),
    );
    assert_eq!(
        apply(&t, &probe_changed, false).await.unwrap(),
        ApplyOutcome::Converged {
            generation: 2,
            resumed: false
        }
    );
    assert_eq!(
        t.rt.calls()["create_container"],
        creates,
        "nothing recreated"
    );
    let g2 = t.store.get("fake", 2).await.unwrap().unwrap();
    assert!(g2.timings["db"].gate_s.is_some(), "{:?}", g2.timings);
    assert_eq!(
        apply(&t, &probe_changed, false).await.unwrap(),
        ApplyOutcome::NoChanges
    );
}

#[tokio::test]
async fn a_revert_target_without_a_pin_ends_degraded_instead_of_running_the_tag() {
    let t = good_first().await;
    // Generation 1 as an older berth might have stored it: no image IDs pinned.
    let g1 = t.store.get("fake", 1).await.unwrap().unwrap();
    let pinless = t
        .store
        .begin(
            berth::store::NewGeneration {
                project: "fake",
                kind: berth::store::Kind::Apply,
                source_hash: &g1.source_hash,
                resolved_hash: "pinless",
                source: "test",
                spec_json: &g1.spec_json,
                images: &serde_json::json!({}),
                commit: None,
            },
            None,
        )
        .await
        .unwrap();
    t.store
        .finish(
            pinless,
            Outcome::Healthy,
            None,
            &berth::store::Timings::new(),
        )
        .await
        .unwrap();
    let bad = desired(t.dir.path(), &never_healthy_app());
    match apply(&t, &bad, false).await.unwrap() {
        ApplyOutcome::Degraded { reason, .. } => {
            assert!(reason.contains("no pinned image ID"), "{reason}");
            assert!(reason.contains("does not fall back to the tag"), "{reason}");
        }
        other => panic!("expected degraded, got {other:?}"),
    }
}

#[tokio::test]
async fn an_engine_that_stops_answering_mid_converge_interrupts_it_without_a_verdict() {
    use berth::runtime::Runtime;
    let t = good_first().await;
    // Generation 2 changes app only; app needs a second to be ready, so its gate is
    // running when the engine goes away.
    let next = desired(
        t.dir.path(),
        &STACK.replace(
            "[services.app]\nimage = \"fixture:1\"",
            "[services.app]\nimage = \"fixture:1\"\nenvironment = { FIXTURE_READY_AFTER = \"1\" }",
        ),
    );
    let cut = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        t.rt.set_engine_down(true);
    };
    let (out, ()) = tokio::join!(apply(&t, &next, false), cut);
    let err = out.expect_err("a converge the engine left unanswered is an error, not an outcome");
    assert!(err.is_unreachable(), "{err}");
    // Not judged: no gate failure, no revert, no poison; the generation is interrupted.
    let h = t.store.history(Some("fake")).await.unwrap();
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[1].outcome, Outcome::Interrupted, "{h:?}");
    assert_eq!(h[1].reverted_to, None);
    assert!(
        h[1].reason.as_deref().unwrap_or("").contains("engine"),
        "{:?}",
        h[1].reason
    );
    let hash = berth::hash::resolved_hash(&next);
    assert!(t.store.poisoned_by("fake", &hash).await.unwrap().is_none());
    // While it is away, a converge fails the same way and changes nothing.
    let err = apply(&t, &next, false).await.expect_err("still away");
    assert!(err.is_unreachable(), "{err}");
    assert_eq!(t.store.history(Some("fake")).await.unwrap().len(), 2);

    // Back: the next converge resumes generation 2 and finishes it healthy.
    t.rt.set_engine_down(false);
    assert_eq!(
        apply(&t, &next, false).await.unwrap(),
        ApplyOutcome::Converged {
            generation: 2,
            resumed: true
        }
    );
    let h = t.store.history(Some("fake")).await.unwrap();
    assert_eq!((h.len(), h[1].outcome), (2, Outcome::Healthy));
    let app =
        t.rt.list_project("fake")
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.name == "fake-app")
            .unwrap();
    assert_eq!(
        app.generation,
        Some(2),
        "generation 2's app, never reverted"
    );
    assert_eq!(
        apply(&t, &next, false).await.unwrap(),
        ApplyOutcome::NoChanges
    );
}

/// docs/design.md §4's pipelined stability windows: a dependent starts once its
/// dependency passed its probe, while the dependency's window runs on beside it.
const PIPELINE: &str = r#"
[project]
name = "fake"
[rollout]
healthy_deadline = "2s"
min_healthy_time = "600ms"
{stability}
[services.db]
image = "fixture:1"
environment = { FIXTURE_READY_AFTER = "0.1"{db_env} }
health = { probe = "tcp", port = 8080, interval = "20ms" }
[services.app]
image = "fixture:1"
depends_on = ["db"]
environment = { VERSION = "{version}" }
health = { probe = "http", port = 8080, interval = "20ms" }
"#;

fn pipeline(stability: &str, db_env: &str, version: &str) -> String {
    PIPELINE
        .replace("{stability}", stability)
        .replace("{db_env}", db_env)
        .replace("{version}", version)
}

/// When `what` happened, since the first event.
fn at(rt: &FakeRuntime, what: &str) -> std::time::Duration {
    rt.timed_events()
        .iter()
        .find(|(_, e)| e == what)
        .map(|(t, _)| *t)
        .unwrap_or_else(|| panic!("{what} missing in {:?}", rt.events()))
}

#[tokio::test]
async fn a_dependent_starts_once_its_dependency_probed_healthy_while_the_window_runs_on() {
    let t = setup().await;
    let d = desired(t.dir.path(), &pipeline("", "", "1"));
    let began = std::time::Instant::now();
    let out = apply(&t, &d, false).await.unwrap();
    let took = began.elapsed();
    assert!(matches!(out, ApplyOutcome::Converged { .. }), "{out:?}");
    let db_healthy = at(&t.rt, "healthy db");
    let app_started = at(&t.rt, "start app");
    assert!(
        app_started >= db_healthy,
        "the app started before db's probe passed"
    );
    assert!(
        app_started < db_healthy + std::time::Duration::from_millis(400),
        "the app waited for db's 600 ms window: db healthy at {db_healthy:?}, app started at {app_started:?}"
    );
    // Both windows closed before the generation was called healthy: the converge took at
    // least the app's start plus its own window.
    assert!(
        took >= app_started + std::time::Duration::from_millis(600),
        "{took:?}"
    );
}

#[tokio::test]
async fn before_dependents_makes_each_level_wait_for_the_window_below() {
    let t = setup().await;
    let d = desired(
        t.dir.path(),
        &pipeline("stability = \"before-dependents\"", "", "1"),
    );
    let out = apply(&t, &d, false).await.unwrap();
    assert!(matches!(out, ApplyOutcome::Converged { .. }), "{out:?}");
    let db_healthy = at(&t.rt, "healthy db");
    let app_started = at(&t.rt, "start app");
    assert!(
        app_started >= db_healthy + std::time::Duration::from_millis(600),
        "the app started inside db's window: db healthy at {db_healthy:?}, app started at {app_started:?}"
    );
}

/// Work ahead of the gate: the next level's containers are made (not started)
/// while the level below starts and gates, under either stability setting.
#[tokio::test]
async fn the_next_levels_containers_are_created_while_the_level_below_gates() {
    for stability in ["", "stability = \"before-dependents\""] {
        let t = setup().await;
        let d = desired(t.dir.path(), &pipeline(stability, "", "1"));
        let out = apply(&t, &d, false).await.unwrap();
        assert!(matches!(out, ApplyOutcome::Converged { .. }), "{out:?}");
        let db_started = at(&t.rt, "start db");
        let db_healthy = at(&t.rt, "healthy db");
        let app_created = at(&t.rt, "create app");
        let app_started = at(&t.rt, "start app");
        // db is ready 100 ms after its start: the app was made before that.
        assert!(
            app_created < db_healthy,
            "{stability}: the app was created only at {app_created:?}, after db's probe passed at {db_healthy:?} (db started at {db_started:?})"
        );
        assert!(
            app_started >= db_healthy,
            "{stability}: {:?}",
            t.rt.events()
        );
    }
}

/// A container of the next level that cannot be made fails the converge at once, while
/// the level below is still in its window, and the revert puts the stack back.
#[tokio::test]
async fn a_container_that_cannot_be_made_ahead_fails_the_converge_at_once() {
    let t = setup().await;
    let good = desired(t.dir.path(), &pipeline("", "", "1"));
    assert!(matches!(
        apply(&t, &good, false).await.unwrap(),
        ApplyOutcome::Converged { .. }
    ));
    // Generation 2 changes both; the engine refuses the app's new container, and db's
    // new one never passes its probe. A converge that waited for db's gate before making
    // the app would fail on db's healthy_deadline instead.
    let bad = desired(
        t.dir.path(),
        &pipeline("", r#", FIXTURE_NEVER_HEALTHY = "1""#, "2"),
    );
    t.rt.refuse_create("app");
    let out = apply(&t, &bad, false).await.unwrap();
    match &out {
        ApplyOutcome::RolledBack { reason, .. } => assert!(
            reason.contains("refused by the fake engine") && !reason.contains("healthy_deadline"),
            "{reason}"
        ),
        other => panic!("expected a revert, got {other:?}"),
    }
    // Back on generation 1: the old app never stopped (its replacement was never made).
    let g = t.store.latest("fake").await.unwrap().unwrap();
    assert_eq!(g.outcome, Outcome::RolledBack);
    let names = t.rt.container_names();
    assert!(names.iter().any(|n| n.ends_with("db")) && names.iter().any(|n| n.ends_with("app")));
}

#[tokio::test]
async fn a_dependency_that_dies_inside_its_window_after_its_dependent_started_reverts_both() {
    let t = setup().await;
    let good = desired(t.dir.path(), &pipeline("", "", "1"));
    assert!(matches!(
        apply(&t, &good, false).await.unwrap(),
        ApplyOutcome::Converged { .. }
    ));
    // db passes its probe at 0.1 s and exits at 0.4 s: inside its 600 ms window, after
    // the app was created and started.
    let bad = desired(
        t.dir.path(),
        &pipeline("", r#", FIXTURE_EXIT_AFTER = "0.4""#, "2"),
    );
    let out = apply(&t, &bad, false).await.unwrap();
    match &out {
        ApplyOutcome::RolledBack { reason, .. } => {
            assert!(
                reason.contains("\"db\"") && reason.contains("exited"),
                "{reason}"
            )
        }
        other => panic!("expected a revert, got {other:?}"),
    }
    // Generation 2's db is the second one started; the revert makes and starts a third.
    // The app was started between the two: by generation 2, while db was in its window
    // (under `before-dependents` it would start only after that window, which db never
    // finishes, so only the revert would start an app).
    let events = t.rt.events();
    let nth = |what: &str, n: usize| {
        events
            .iter()
            .enumerate()
            .filter(|(_, e)| *e == what)
            .nth(n)
            .map(|(i, _)| i)
    };
    let second_db = nth("start db", 1).expect("db started by generation 2");
    let revert_db = nth("create db", 2).expect("db made again by the revert");
    assert!(
        events[second_db..revert_db]
            .iter()
            .any(|e| e == "start app"),
        "the app of generation 2 never started inside db's window: {events:?}"
    );
    // Both are back on generation 1's spec.
    let g = t.store.latest("fake").await.unwrap().unwrap();
    assert_eq!(g.outcome, Outcome::RolledBack);
    let names = t.rt.container_names();
    assert!(names.iter().any(|n| n.ends_with("db")) && names.iter().any(|n| n.ends_with("app")));
}
