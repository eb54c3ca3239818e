//! What wakes the daemon: the desired state changing on disk, and the engine's events
//! for the project's containers. Triggers only *ask* for a reconcile (docs/design.md
//! §1): they call `wake`, and the reconcile reads everything afresh; it is never told why.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use notify::{RecursiveMode, Watcher};

use crate::runtime::Runtime;
use crate::shutdown::Shutdown;

/// A callback that asks for a reconcile; cheap, never blocks.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// How long file events settle before one wake: editors write a file in several steps
/// (write a temp file, rename it over, touch), and `ln -sfn` swaps come in pairs.
const SETTLE: Duration = Duration::from_millis(150);

/// Watch the desired state: a file, or a directory of `*.toml` files. The *parent*
/// directory of a file is watched (non-recursively), so a file replaced by rename or a
/// symlink swapped with `ln -sfn` keeps being seen; every event naming the file (or any
/// `*.toml` in the watched directory) wakes, trailing-edge debounced. The watcher stops
/// when the returned value is dropped.
pub fn watch_desired_state(path: &Path, wake: Wake) -> notify::Result<notify::RecommendedWatcher> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let (dir, name): (PathBuf, Option<std::ffi::OsString>) = if path.is_dir() {
        (path.clone(), None)
    } else {
        (
            path.parent().unwrap_or(Path::new("/")).to_path_buf(),
            path.file_name().map(|n| n.to_os_string()),
        )
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = match &event {
            // A rescan (the kernel queue overflowed): anything may have changed.
            Err(_) => true,
            Ok(e) if e.need_rescan() => true,
            // Reading the file (berth does, every turn) is not a change.
            Ok(e) if matches!(e.kind, notify::EventKind::Access(_)) => false,
            Ok(e) => e.paths.iter().any(|p| match &name {
                Some(n) => p.file_name() == Some(n.as_os_str()),
                None => p.extension().is_some_and(|x| x == "toml"),
            }),
        };
        if relevant {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    // Trailing edge: wake once the events have been quiet for SETTLE.
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            loop {
                match tokio::time::timeout(SETTLE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            wake();
        }
    });
    Ok(watcher)
}

/// Follow the engine's events for `project` until `shutdown`: an event that may mean drift
/// wakes at once. When the stream ends (the engine restarted or went away), `engine_up`
/// is told, and the stream is opened again with backoff; every (re)connection wakes too,
/// because events missed while disconnected are lost (the engine's replay buffer does not
/// survive its restart) and only a full observation can tell what changed.
pub async fn follow_engine<R: Runtime>(
    rt: Arc<R>,
    project: String,
    wake: Wake,
    engine_up: Arc<dyn Fn(bool) + Send + Sync>,
    shutdown: Shutdown,
) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let reachable = tokio::select! {
            r = rt.engine_version() => r.is_ok(),
            _ = shutdown.requested() => return,
        };
        engine_up(reachable);
        if reachable {
            backoff = Duration::from_millis(250);
            let mut events = rt.events(&project);
            wake();
            loop {
                let next = tokio::select! {
                    n = events.next() => n,
                    _ = shutdown.requested() => return,
                };
                match next {
                    Some(Ok(e)) if e.may_be_drift() => {
                        tracing::debug!(service = ?e.service, action = %e.action, "engine event");
                        wake();
                        // The engine reports `kill` and `die` a moment before its list
                        // shows the container exited: look again shortly (soon, then
                        // later), or that drift would wait for the next resync. Looks
                        // that find nothing are cheap no-op turns, and they coalesce.
                        let again = wake.clone();
                        tokio::spawn(async move {
                            for after in LOOK_AGAIN {
                                tokio::time::sleep(after).await;
                                again();
                            }
                        });
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "the engine's event stream failed");
                        break;
                    }
                    None => break,
                }
            }
            engine_up(false);
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.requested() => return,
        }
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

/// Under `engine = "swarm"`, follow Swarm's service events too, until `shutdown`: a
/// service of `project` updated (`docker service update` by hand, which keeps berth's
/// labels but changes the spec, or a scale) or removed wakes at once, and the turn's
/// observation finds the drift ([`crate::swarm::summary`]). Tasks Swarm restarts make no
/// service event, and are not drift. Service events carry the service's name, not its
/// labels, so the project's services are known by name from a list by label, kept fresh
/// at each event (a removed one is still known from the list before). An engine that is
/// not a Swarm manager is asked again every 30 s; a lost stream is opened again a second
/// later (and wakes, for what it missed).
pub async fn follow_swarm_services(project: String, wake: Wake, shutdown: Shutdown) {
    use std::collections::{BTreeSet, HashMap};
    loop {
        let connected = tokio::select! {
            sw = crate::swarm::Swarm::connect() => sw.ok(),
            _ = shutdown.requested() => return,
        };
        let Some(sw) = connected else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(30)) => continue,
                _ = shutdown.requested() => return,
            }
        };
        let names = |services: Vec<bollard::models::Service>| -> BTreeSet<String> {
            services
                .into_iter()
                .filter_map(|s| s.spec.and_then(|sp| sp.name))
                .collect()
        };
        let mut known = names(sw.services(&project).await.unwrap_or_default());
        let filters = HashMap::from([("type", vec!["service".to_string()])]);
        let mut events = sw.docker.events(Some(
            bollard::query_parameters::EventsOptionsBuilder::new()
                .filters(&filters)
                .build(),
        ));
        wake();
        loop {
            let next = tokio::select! {
                n = events.next() => n,
                _ = shutdown.requested() => return,
            };
            let Some(Ok(e)) = next else { break };
            let name = e
                .actor
                .and_then(|a| a.attributes)
                .and_then(|a| a.get("name").cloned())
                .unwrap_or_default();
            let fresh = names(sw.services(&project).await.unwrap_or_default());
            if known.contains(&name) || fresh.contains(&name) {
                tracing::debug!(service = %name, action = ?e.action, "swarm service event");
                wake();
            }
            known = fresh;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.requested() => return,
        }
    }
}

/// When to look again after an event that may be drift (each relative to the previous).
const LOOK_AGAIN: [Duration; 3] = [
    Duration::from_millis(60),
    Duration::from_millis(140),
    Duration::from_millis(300),
];

/// A reachability callback for [`follow_engine`] that also tells of changes: `reachable`
/// hears every report; `went_away` is called when the engine stops answering after it
/// answered, `came_back` when it answers again after it did not. The engine counts as
/// answering at first (the daemon connected before it follows the events).
pub fn on_reachability(
    reachable: Arc<dyn Fn(bool) + Send + Sync>,
    went_away: Wake,
    came_back: Wake,
) -> Arc<dyn Fn(bool) + Send + Sync> {
    let was_up = std::sync::atomic::AtomicBool::new(true);
    Arc::new(move |up| {
        reachable(up);
        match (was_up.swap(up, std::sync::atomic::Ordering::SeqCst), up) {
            (true, false) => went_away(),
            (false, true) => came_back(),
            _ => {}
        }
    })
}

/// The longest wait between two attempts to reach an engine that went away: one cheap
/// version call, so the daemon notices the engine is back within seconds.
const RECONNECT_MAX: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    async fn wait_for(count: &AtomicUsize, at_least: usize) -> bool {
        for _ in 0..100 {
            if count.load(Ordering::SeqCst) >= at_least {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn an_atomic_rename_over_the_file_wakes_once_and_other_files_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("berth.toml");
        std::fs::write(&file, "a").unwrap();
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        let _watcher = watch_desired_state(
            &file,
            Arc::new(move || {
                w.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap();
        // Another file in the same directory, or reading the file: no wake.
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        std::fs::read_to_string(&file).unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(woken.load(Ordering::SeqCst), 0);
        // What editors do: write a temp file, rename it over the original.
        let tmp = dir.path().join(".berth.toml.swp");
        std::fs::write(&tmp, "b").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        assert!(wait_for(&woken, 1).await, "the rename was not seen");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(woken.load(Ordering::SeqCst), 1, "one wake for one edit");
    }

    #[tokio::test]
    async fn the_fake_engine_s_drift_events_wake_and_a_connection_wakes_once() {
        let rt = Arc::new(crate::runtime::fake::FakeRuntime::new());
        rt.add_image("fixture:1", "sha256:one");
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        let (trigger, shutdown) = Shutdown::new();
        let task = tokio::spawn(follow_engine(
            rt.clone(),
            "p".into(),
            Arc::new(move || {
                w.fetch_add(1, Ordering::SeqCst);
            }),
            Arc::new(|_| {}),
            shutdown,
        ));
        assert!(wait_for(&woken, 1).await, "connecting wakes");
        rt.stop_by_hand("p-web");
        assert!(wait_for(&woken, 2).await, "a die event wakes");
        trigger.fire(libc::SIGTERM);
        task.await.unwrap();
    }
}
