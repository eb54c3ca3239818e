//! The scheduler of `berth run`: triggers ask, one loop reconciles.
//!
//! Every trigger (the desired-state file, a Docker event, a person over the API or by
//! SIGHUP) only calls [`Queue::enqueue`]: "reconcile the project". The [`Reason`] labels
//! the tracing span and nothing else; the reconcile is not told why it runs, it reads
//! everything afresh (docs/design.md §1, kube-runtime's `ReconcileReason`).
//!
//! [`Scheduler::run`] is the one loop that reconciles:
//!
//! - one reconcile at a time; it is awaited, never spawned;
//! - every request that arrives while one runs, or while the loop waits, collapses into
//!   the single next run (there is one project, so one key, so at most one entry);
//! - after a success it waits for the next request or the resync period, whichever
//!   comes first; starting counts as a resync, since nothing has been observed yet;
//! - after an error it backs off ([`Backoff`]); requests during a backoff wait for it to
//!   end (see [`Reason::cuts_backoff`]), and a success resets it;
//! - API requests start at most one reconcile ahead of schedule per
//!   [`Config::api_interval`] (30 s): one that arrives sooner is held, and served by the
//!   next run, which starts when the interval ends at the latest. However many requests a
//!   client sends, it cannot cut a backoff short, or make a `pull_policy = "always"`
//!   service pull, more than once per interval;
//! - it stops when the [`Shutdown`] fires, after the running reconcile has returned (the
//!   reconcile watches the same `Shutdown` and stops at its next step boundary).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::Instrument;

use super::backoff::Backoff;
use crate::shutdown::Shutdown;

/// Why a reconcile was asked for: a label for tracing, never passed to the reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The desired-state file or directory changed.
    File,
    /// A Docker event about one of the project's containers (die, stop, destroy...).
    Engine,
    /// The periodic resync (also the first run at start).
    Resync,
    /// `POST /api/v1/reconcile`, or `berth apply` handing over to the daemon.
    Api,
    /// SIGHUP: re-read the desired state now.
    Signal,
    /// The end of a backoff after a failed reconcile.
    Retry,
    /// The engine answers again after it did not (its event stream reopened).
    Reconnected,
    /// The git source's tip moved (or a fetch failed: status says so).
    Git,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::File => "file",
            Reason::Engine => "engine",
            Reason::Resync => "resync",
            Reason::Api => "api",
            Reason::Signal => "signal",
            Reason::Retry => "retry",
            Reason::Git => "git",
            Reason::Reconnected => "reconnected",
        }
    }

    /// Whether a request for this reason ends a backoff early.
    ///
    /// The explicit asks of a person (SIGHUP, the API) do, and so does the engine coming
    /// back: the backoff most likely grew while it was away (every turn failed
    /// unanswered), and what it was spared is over; the project is reconciled at once,
    /// not minutes later. That wake comes once per reconnection, not per event.
    /// Everything else waits for the backoff to end: an engine that is restarting or
    /// overloaded sends bursts of events, and the file watcher fires on every save;
    /// reconciling on each of them would hammer the engine the backoff is there to spare.
    /// The request is not lost: the retry at the end of the backoff serves it. A person
    /// who fixed the cause and will not wait sends SIGHUP (`systemctl reload berth`) or
    /// calls the API. The API's cuts are rate-limited ([`Config::api_interval`]): anyone
    /// who reaches the endpoint can call it, in a loop.
    pub fn cuts_backoff(self) -> bool {
        matches!(self, Reason::Signal | Reason::Api | Reason::Reconnected)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the queue and the loop share.
#[derive(Debug, Default)]
struct Shared {
    /// The reasons of every request not yet taken by a run; empty when none is pending.
    /// A set, not a list: however many requests arrive, the next run is one run.
    pending: Mutex<BTreeSet<Reason>>,
    /// Wakes the loop. `notify_one` keeps a permit when the loop is not waiting (it is
    /// reconciling), so a request during a run is never missed.
    wake: Notify,
}

/// The handle triggers hold: cheap to clone, `Send`, and it only asks.
#[derive(Debug, Clone)]
pub struct Queue {
    shared: Arc<Shared>,
}

impl Queue {
    /// Ask for a reconcile of the project. Returns at once; requests that arrive before
    /// the next run starts collapse into it. After the loop has stopped, this does nothing.
    pub fn enqueue(&self, reason: Reason) {
        self.shared
            .pending
            .lock()
            .expect("the pending set is never poisoned: nothing panics holding it")
            .insert(reason);
        tracing::debug!(%reason, "reconcile requested");
        self.shared.wake.notify_one();
    }
}

/// How the loop paces itself.
#[derive(Debug, Clone)]
pub struct Config {
    /// With no request, reconcile anyway after this long: catches drift whose event was
    /// lost (an engine restart drops its event buffer) and images whose pull policy is
    /// a period.
    pub resync: Duration,
    /// Delays after failed reconciles.
    pub backoff: Backoff,
    /// At most one reconcile ahead of schedule per this interval is started by
    /// [`Reason::Api`] requests (the daemon's `POST /api/v1/reconcile`): each such run may
    /// cut a backoff short and, with `pull_policy = "always"`, pulls. A request sooner is
    /// held, never lost: the next run serves it, and it starts when the interval ends if
    /// nothing starts one before.
    pub api_interval: Duration,
}

/// [`Config::api_interval`] unless told otherwise: a person who asks twice waits at most
/// this long for the second run, and a client that asks in a loop gets one run (one pull)
/// per 30 s, a tenth of the resync's pace at most.
pub const API_INTERVAL: Duration = Duration::from_secs(30);

impl Default for Config {
    fn default() -> Self {
        Config {
            resync: Duration::from_secs(5 * 60),
            backoff: Backoff::default(),
            api_interval: API_INTERVAL,
        }
    }
}

/// What the daemon shows in `status`, `/metrics` and the systemd `STATUS=` line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Reconciles that returned `Ok`.
    pub succeeded: u64,
    /// Reconciles that returned `Err`.
    pub failed: u64,
    /// A reconcile is running now.
    pub running: bool,
    /// When the last successful reconcile ended (monotonic: for "no success for 15 min").
    pub last_success: Option<Instant>,
    /// The same moment on the wall clock, for the metric's Unix timestamp.
    pub last_success_wall: Option<SystemTime>,
    /// The last failure's message, until a success clears it.
    pub last_error: Option<String>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// The delay of the backoff under way; `None` when not backing off.
    pub backoff: Option<Duration>,
}

/// The loop's side: owned by exactly one [`Scheduler::run`], which is what makes "one
/// reconcile at a time" hold.
#[derive(Debug)]
pub struct Scheduler {
    shared: Arc<Shared>,
    config: Config,
    stats: watch::Sender<Stats>,
}

/// A queue for the triggers and the scheduler that serves it.
/// What a successful reconcile asks of the loop, as kube-runtime's `Action`: nothing
/// more until a trigger or the resync, or to run again after a while (a hold that ends,
/// such as a crash-looping service's). A reconcile that returns `()` asks nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    AwaitChange,
    Requeue(Duration),
}

impl From<()> for Action {
    fn from(_: ()) -> Action {
        Action::AwaitChange
    }
}

pub fn channel(config: Config) -> (Queue, Scheduler) {
    let shared = Arc::new(Shared::default());
    let (stats, _) = watch::channel(Stats::default());
    (
        Queue {
            shared: shared.clone(),
        },
        Scheduler {
            shared,
            config,
            stats,
        },
    )
}

/// Why the loop stopped waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// A request (one that may end the current wait). `by_api`: only an API request
    /// could end it, so this run is the API's early run of its interval.
    Requested { by_api: bool },
    /// The resync period or the backoff ran out.
    Due,
}

impl Scheduler {
    /// A view of the loop's stats, updated as each reconcile starts and ends.
    pub fn stats(&self) -> watch::Receiver<Stats> {
        self.stats.subscribe()
    }

    /// Reconcile until `shutdown` fires; returns the final stats.
    ///
    /// `reconcile` is called with no argument: it loads the desired state and runs
    /// [`crate::reconcile::reconcile`] itself. `Err` means "could not reconcile, try
    /// again later" (the engine or the store is unreachable) and backs off; an outcome
    /// that retrying will not change (rolled back, poisoned, invalid) should be `Ok`.
    pub async fn run<R, T, E>(self, shutdown: Shutdown, mut reconcile: R) -> Stats
    where
        R: AsyncFnMut() -> Result<T, E>,
        T: Into<Action>,
        E: fmt::Display,
    {
        let Scheduler {
            shared,
            config,
            stats,
        } = self;
        let Config {
            resync,
            mut backoff,
            api_interval,
        } = config;
        // Starting is a resync: nothing has been observed yet.
        let mut due = Instant::now();
        let mut due_reason = Reason::Resync;
        let mut backing_off = false;
        // When API requests may start a run ahead of schedule again.
        let mut api_open_at: Option<Instant> = None;
        while let Some(wake) = wait(&shared, due, backing_off, api_open_at, &shutdown).await {
            if wake == (Wake::Requested { by_api: true }) {
                api_open_at = Some(Instant::now() + api_interval);
            }
            let mut reasons = std::mem::take(
                &mut *shared
                    .pending
                    .lock()
                    .expect("the pending set is never poisoned"),
            );
            if wake == Wake::Due {
                reasons.insert(due_reason);
            }
            let reasons: Vec<&str> = reasons.iter().map(|r| r.as_str()).collect();
            let span = tracing::info_span!("reconcile", reasons = %reasons.join(","));
            stats.send_modify(|s| s.running = true);
            let result = reconcile().instrument(span).await;
            match result {
                Ok(action) => {
                    backoff.reset();
                    backing_off = false;
                    (due, due_reason) = match action.into() {
                        Action::Requeue(after) if after < resync => {
                            (Instant::now() + after, Reason::Retry)
                        }
                        _ => (Instant::now() + resync, Reason::Resync),
                    };
                    stats.send_modify(|s| {
                        s.running = false;
                        s.succeeded += 1;
                        s.last_success = Some(Instant::now());
                        s.last_success_wall = Some(SystemTime::now());
                        s.last_error = None;
                        s.consecutive_failures = 0;
                        s.backoff = None;
                    });
                }
                Err(e) => {
                    let delay = backoff.fail();
                    tracing::warn!(
                        error = %e,
                        failures = backoff.failures(),
                        retry_in = ?delay,
                        "reconcile failed; retrying after a backoff"
                    );
                    backing_off = true;
                    due = Instant::now() + delay;
                    due_reason = Reason::Retry;
                    stats.send_modify(|s| {
                        s.running = false;
                        s.failed += 1;
                        s.last_error = Some(e.to_string());
                        s.consecutive_failures = backoff.failures();
                        s.backoff = Some(delay);
                    });
                }
            }
        }
        tracing::info!("reconcile loop stopped");
        stats.borrow().clone()
    }
}

/// Wait until `due`, or a request that may end this wait; `None` once `shutdown` fires.
async fn wait(
    shared: &Shared,
    due: Instant,
    backing_off: bool,
    api_open_at: Option<Instant>,
    shutdown: &Shutdown,
) -> Option<Wake> {
    let timer = tokio::time::sleep_until(due);
    tokio::pin!(timer);
    loop {
        // A stop wins over any request already pending.
        if shutdown.signal().is_some() {
            return None;
        }
        // An API request held by its interval ends the wait when the interval does.
        let held_api = {
            let pending = shared
                .pending
                .lock()
                .expect("the pending set is never poisoned");
            match starts_now(&pending, backing_off, api_open_at, Instant::now()) {
                Starts::Now { by_api } => return Some(Wake::Requested { by_api }),
                Starts::ApiAt(at) => Some(at),
                Starts::Not => None,
            }
        };
        let api_timer = async {
            match held_api {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // A stop wins over anything due at the same moment.
            biased;
            _ = shutdown.requested() => return None,
            // A request: look at the pending set again. (A permit left by a request an
            // earlier run already took finds it empty and waits on.)
            _ = shared.wake.notified() => {}
            _ = &mut timer => return Some(Wake::Due),
            _ = api_timer => {}
        }
    }
}

/// What the pending requests allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Starts {
    /// A run now; `by_api` when only an API request allows it.
    Now { by_api: bool },
    /// Only an API request is pending that may start a run, at this moment (its interval
    /// is not over).
    ApiAt(Instant),
    /// Nothing that may end this wait.
    Not,
}

fn starts_now(
    pending: &BTreeSet<Reason>,
    backing_off: bool,
    api_open_at: Option<Instant>,
    now: Instant,
) -> Starts {
    // During a backoff only the reasons that cut it short may start a run (see
    // `Reason::cuts_backoff`); the others are held for the retry at its end.
    let other = pending
        .iter()
        .any(|r| *r != Reason::Api && (!backing_off || r.cuts_backoff()));
    if other {
        return Starts::Now { by_api: false };
    }
    if !pending.contains(&Reason::Api) {
        return Starts::Not;
    }
    match api_open_at {
        Some(at) if at > now => Starts::ApiAt(at),
        _ => Starts::Now { by_api: true },
    }
}
