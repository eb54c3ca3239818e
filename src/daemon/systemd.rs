//! systemd's notify protocol for `berth run` under `Type=notify`: `READY=1` once the
//! engine and the desired state were observed, `STATUS=` with what `berth status` says,
//! `WATCHDOG=1` only while the reconcile loop's heartbeat is fresh (a hung loop stops it,
//! and systemd restarts the service), `STOPPING=1` on SIGTERM. Without `NOTIFY_SOCKET`
//! every call does nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::shutdown::Shutdown;

fn send(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// The service is up: it has observed the engine and the desired state.
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// How long a `STATUS=` line may be: what `systemctl status` shows on one line, with room.
const STATUS_CHARS: usize = 400;

/// One line for `systemctl status` and `systemctl show -p StatusText`. The text may hold
/// a container's words (a probe's output, a database error): it is made one bounded line
/// here, at the socket, so no newline in it can add a `WATCHDOG=`, `MAINPID=` or any
/// other assignment to the datagram (`docs/design.md` §12).
pub fn status(text: &str) {
    let line = crate::text::one_line(text, STATUS_CHARS);
    send(&[NotifyState::Status(&line)]);
}

/// The service is stopping (SIGTERM): the current step finishes first.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// The reconcile loop's sign of life: it beats while it waits for work and at every step
/// of a reconcile, so only a loop that hangs goes quiet.
#[derive(Clone)]
pub struct Heartbeat {
    start: Instant,
    /// Milliseconds since `start` of the latest beat.
    last_ms: Arc<AtomicU64>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Heartbeat {
    pub fn beat(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long since the last beat.
    pub fn age(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// Send `WATCHDOG=1` at half of systemd's `WatchdogSec` while `heartbeat` is younger than
/// the whole period; stop sending when it is older, so systemd kills and restarts a hung
/// loop. Returns at once when the watchdog is off.
pub async fn watchdog(heartbeat: Heartbeat, shutdown: Shutdown) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut tick = tokio::time::interval(period / 2);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.requested() => return,
        }
        if heartbeat.age() < period {
            send(&[NotifyState::Watchdog]);
        } else {
            tracing::error!(
                quiet_s = heartbeat.age().as_secs(),
                "the reconcile loop has not beaten for a whole watchdog period; no WATCHDOG=1"
            );
        }
    }
}
