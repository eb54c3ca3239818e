//! A container that dies while its gate runs fails the gate at once, on the in-memory
//! runtime: the twin of `e2e_gate_dies.rs`. The gate follows the container's `die` and
//! `destroy` events for every probe kind, so a kill before the first probe pass ends the
//! converge in well under the 60 s `healthy_deadline`, whatever the restart policy (a kill
//! cancels it, as the engine does).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use berth::reconcile::ApplyOutcome;
use berth::runtime::fake::FakeRuntime;

/// A one-service project gated on `health` (a TOML inline table, or "" for "running"),
/// never ready by itself within the deadline, with the default `unless-stopped` policy.
fn toml(health: &str, window: &str) -> String {
    format!(
        r#"
[project]
name = "dies"
[rollout]
healthy_deadline = "60s"
min_healthy_time = "{window}"
[services.db]
image = "fixture:1"
environment = {{ FIXTURE_READY_AFTER = "120" }}
{health}
"#
    )
}

/// One apply of `text` on `rt`, with a store and lock of its own.
async fn converge(text: &str, rt: &FakeRuntime) -> ApplyOutcome {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("berth.toml");
    std::fs::write(&file, text).unwrap();
    let d = berth::spec::load_with_env(&file, &Default::default(), &HashMap::new()).unwrap();
    common::fake::apply_once(rt, dir.path(), &d).await.unwrap()
}

/// Apply `health`'s project, do `act` to the container 3.3 s after berth started it, and
/// return how the converge ended, how long after `act` it did, and the fake's events.
async fn apply_and(
    health: &str,
    window: &str,
    act: impl Fn(&FakeRuntime) + Send + 'static,
) -> (ApplyOutcome, Duration, Vec<String>) {
    let rt = std::sync::Arc::new(FakeRuntime::new());
    rt.add_image("fixture:1", "sha256:one");
    // The hand that kills: waits for berth's start, lets the probes fall behind, then acts.
    let hand = {
        let rt = rt.clone();
        tokio::spawn(async move {
            while !rt.events().iter().any(|e| e == "start db") {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Until the first pass berth probes at 25 ms doubling up to the interval
            // (10 s here): probes at 0.03, 0.08, 0.18, 0.38, 0.78, 1.58, 3.18 and then
            // 6.38 s after the start. A kill at 3.3 s is seen by the next probe only
            // 3 s later, so an end within 2 s is the event's doing.
            tokio::time::sleep(Duration::from_millis(3300)).await;
            act(&rt);
            Instant::now()
        })
    };
    let out = converge(&toml(health, window), &rt).await;
    let ended = Instant::now();
    let acted = hand.await.unwrap();
    (out, ended.duration_since(acted), rt.events())
}

/// The reason of a converge that failed with nothing to go back to.
fn reason(out: &ApplyOutcome) -> &str {
    match out {
        ApplyOutcome::Degraded { reason, .. } => reason,
        other => panic!("expected a failed gate with no last good generation, got {other:?}"),
    }
}

const PROBES: &[(&str, &str)] = &[
    (
        "http",
        r#"health = { probe = "http", port = 8080, interval = "10s" }"#,
    ),
    (
        "tcp",
        r#"health = { probe = "tcp", port = 8080, interval = "10s" }"#,
    ),
    (
        "exec",
        r#"health = { probe = "exec", command = ["true"], interval = "10s" }"#,
    ),
    ("docker", r#"health = { probe = "docker" }"#),
];

#[tokio::test]
async fn a_kill_before_the_first_pass_fails_the_gate_at_once_for_every_probe_kind() {
    let runs = PROBES
        .iter()
        .map(|(_, health)| apply_and(health, "0s", |rt| rt.kill_by_hand("dies-db", 137, true)));
    let ends = futures::future::join_all(runs).await;
    for ((kind, _), (out, after, events)) in PROBES.iter().zip(ends) {
        assert!(
            !events.iter().any(|e| e == "healthy db"),
            "{kind}: premise: db never passed a probe: {events:?}"
        );
        let reason = reason(&out);
        assert!(
            reason.contains("\"db\"") && reason.contains("exited (code 137, OOM killed)"),
            "{kind}: {reason}"
        );
        assert!(!reason.contains("healthy_deadline"), "{kind}: {reason}");
        // A 60 s deadline, and for berth's own probes (http, tcp, exec) the next probe
        // 3 s away: only the event ends it this soon. (A gate the engine judges would
        // also see it within its 2 s fallback; e2e_images shows the event there.)
        assert!(
            after < Duration::from_secs(2),
            "{kind}: the gate ended {after:?} after the kill"
        );
    }
}

#[tokio::test]
async fn a_kill_inside_the_window_after_the_first_pass_fails_the_gate_at_once() {
    // Gated on "running" (no probe, no HEALTHCHECK): it passes at once and then holds a
    // 30 s window, which the kill ends.
    let (out, after, _) = apply_and("", "30s", |rt| rt.kill_by_hand("dies-db", 137, false)).await;
    let reason = reason(&out);
    assert!(
        reason.contains("exited (code 137)") && !reason.contains("OOM"),
        "{reason}"
    );
    assert!(
        after < Duration::from_secs(2),
        "ended {after:?} after the kill"
    );
}

#[tokio::test]
async fn a_container_removed_while_gated_fails_the_gate_at_once() {
    let (out, after, _) = apply_and(
        r#"health = { probe = "tcp", port = 8080, interval = "10s" }"#,
        "0s",
        |rt| rt.remove_by_hand("dies-db"),
    )
    .await;
    let reason = reason(&out);
    assert!(reason.contains("was removed"), "{reason}");
    assert!(
        after < Duration::from_secs(2),
        "ended {after:?} after the removal"
    );
}

#[tokio::test]
async fn without_a_death_the_same_gate_waits_for_its_deadline() {
    // The premise the tests above lean on: nothing but the death ends these gates early.
    // A 1 s deadline instead of 60 s keeps it short.
    let rt = FakeRuntime::new();
    rt.add_image("fixture:1", "sha256:one");
    let text = toml(
        r#"health = { probe = "tcp", port = 8080, interval = "10s" }"#,
        "0s",
    )
    .replace(r#"healthy_deadline = "60s""#, r#"healthy_deadline = "1s""#);
    let began = Instant::now();
    let out = converge(&text, &rt).await;
    assert!(reason(&out).contains("healthy_deadline 1s"), "{out:?}");
    assert!(began.elapsed() >= Duration::from_secs(1));
}
