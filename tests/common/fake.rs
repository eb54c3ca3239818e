//! The in-memory engine's side of the harness: one `berth apply` of a desired state on a
//! [`FakeRuntime`], as the command line does it (the project's lock on the state store,
//! then the reconcile), for the controller tests that run without Docker.

#![allow(dead_code)]

use std::path::Path;

use berth::converge::ConvergeError;
use berth::reconcile::{ApplyOutcome, Options, reconcile};
use berth::report::Reporter;
use berth::runtime::fake::FakeRuntime;
use berth::shutdown::Shutdown;
use berth::spec::DesiredState;
use berth::store::Store;

/// One `apply` of `d` on `rt`: take the project's lock on the store at `state`,
/// reconcile, release the lock.
pub async fn apply(
    rt: &FakeRuntime,
    store: &Store,
    state: &Path,
    d: &DesiredState,
    opts: Options,
    shutdown: &Shutdown,
) -> Result<ApplyOutcome, ConvergeError> {
    let mut lock = berth::lock::acquire(state, &d.project.name, "apply", false, shutdown, |_| {})
        .await
        .unwrap();
    reconcile(rt, store, d, &mut lock, opts, &Reporter::quiet(), shutdown).await
}

/// One first `apply` of `d` on `rt` with the default options, its state store made at
/// `<dir>/state.db`.
pub async fn apply_once(
    rt: &FakeRuntime,
    dir: &Path,
    d: &DesiredState,
) -> Result<ApplyOutcome, ConvergeError> {
    let state = dir.join("state.db");
    let store = Store::open(&state).await.unwrap();
    apply(
        rt,
        &store,
        &state,
        d,
        Options::default(),
        &Shutdown::never(),
    )
    .await
}
