//! The scheduler of `berth run` on paused tokio time, with a fake reconcile (no engine,
//! no SQLite: the store's pool timeouts misbehave under paused time). Time only moves when
//! every task is idle (tokio's auto-advance) or by `advance`, so "wait 5 minutes" is
//! instant and exact.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth::daemon::controller::scheduler::API_INTERVAL;
use berth::daemon::controller::{Backoff, BackoffPolicy, Config, Queue, Reason, Stats, channel};
use berth::shutdown::{Shutdown, Trigger};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, advance};

const SECOND: Duration = Duration::from_secs(1);
const RESYNC: Duration = Duration::from_secs(5 * 60);

/// A reconcile that takes `work`, counts itself, and fails while `failing` is set.
#[derive(Clone, Default)]
struct Fake {
    /// When each reconcile started.
    starts: Arc<Mutex<Vec<Instant>>>,
    /// Reconciles running now, and the most ever seen at once.
    running: Arc<AtomicUsize>,
    most_at_once: Arc<AtomicUsize>,
    failing: Arc<std::sync::atomic::AtomicBool>,
    work: Duration,
}

#[derive(Debug)]
struct EngineDown;

impl std::fmt::Display for EngineDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("engine unreachable")
    }
}

impl Fake {
    fn with_work(work: Duration) -> Fake {
        Fake {
            work,
            ..Fake::default()
        }
    }

    async fn reconcile(&self) -> Result<(), EngineDown> {
        self.starts.lock().unwrap().push(Instant::now());
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.work).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        match self.failing.load(Ordering::SeqCst) {
            true => Err(EngineDown),
            false => Ok(()),
        }
    }

    fn runs(&self) -> usize {
        self.starts.lock().unwrap().len()
    }

    fn starts(&self) -> Vec<Instant> {
        self.starts.lock().unwrap().clone()
    }

    fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

/// A running loop: its queue, its stats, the stop trigger and the task.
struct Loop {
    queue: Queue,
    stats: watch::Receiver<Stats>,
    stop: Trigger,
    task: JoinHandle<Stats>,
}

fn start(fake: &Fake, config: Config) -> Loop {
    let (queue, scheduler) = channel(config);
    let stats = scheduler.stats();
    let (stop, shutdown) = Shutdown::new();
    let fake = fake.clone();
    // Spawned: the loop's future must be `Send`, to run as a task of a multi-threaded
    // runtime.
    let task = tokio::spawn(scheduler.run(shutdown, async move || fake.reconcile().await));
    Loop {
        queue,
        stats,
        stop,
        task,
    }
}

fn seeded(seed: u64) -> Backoff {
    Backoff::with_rng(BackoffPolicy::default(), fastrand::Rng::with_seed(seed))
}

fn config(seed: u64) -> Config {
    Config {
        resync: RESYNC,
        backoff: seeded(seed),
        ..Config::default()
    }
}

/// Let every ready task run, without moving the clock.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// Wait (moving paused time as needed) until `n` reconciles have ended.
async fn ended(l: &mut Loop, n: u64) -> Stats {
    l.stats
        .wait_for(|s| s.succeeded + s.failed >= n)
        .await
        .unwrap()
        .clone()
}

#[tokio::test(start_paused = true)]
async fn the_loop_reconciles_once_at_start_then_waits_for_a_request() {
    let fake = Fake::with_work(SECOND);
    let mut l = start(&fake, config(1));
    ended(&mut l, 1).await;
    assert_eq!(fake.runs(), 1);
    advance(RESYNC - 2 * SECOND).await;
    settle().await;
    assert_eq!(fake.runs(), 1, "nothing asked, nothing due");
    l.queue.enqueue(Reason::Engine);
    settle().await;
    assert_eq!(fake.runs(), 2, "a request runs at once");
}

#[tokio::test(start_paused = true)]
async fn requests_during_a_reconcile_coalesce_into_exactly_one_next_run() {
    let fake = Fake::with_work(10 * SECOND);
    let mut l = start(&fake, config(1));
    settle().await;
    assert_eq!(fake.runs(), 1, "the first run is under way");
    for reason in [Reason::File, Reason::Engine, Reason::Engine, Reason::Api] {
        l.queue.enqueue(reason);
        advance(SECOND).await;
    }
    ended(&mut l, 2).await;
    let stats = l.stats.borrow().clone();
    assert_eq!(fake.runs(), 2, "four requests, one run");
    let starts = fake.starts();
    assert_eq!(
        starts[1] - starts[0],
        10 * SECOND,
        "as soon as the first ended"
    );
    assert_eq!(stats.succeeded, 2);
    // And nothing more until the resync: the requests were all served by that one run.
    advance(RESYNC - SECOND).await;
    settle().await;
    assert_eq!(fake.runs(), 2);
    l.stop.fire(libc::SIGTERM);
    l.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn never_two_reconciles_run_at_once() {
    let fake = Fake::with_work(3 * SECOND);
    let mut l = start(&fake, config(1));
    // A storm of requests from several triggers, while reconciles run and between them.
    let mut triggers = Vec::new();
    for (i, reason) in [Reason::File, Reason::Engine, Reason::Api, Reason::Signal]
        .into_iter()
        .enumerate()
    {
        let queue = l.queue.clone();
        triggers.push(tokio::spawn(async move {
            for _ in 0..25 {
                queue.enqueue(reason);
                tokio::time::sleep(Duration::from_millis(700 + 100 * i as u64)).await;
            }
        }));
    }
    for t in triggers {
        t.await.unwrap();
    }
    ended(&mut l, u64::try_from(fake.runs()).unwrap()).await;
    assert!(fake.runs() > 5, "{} runs", fake.runs());
    assert_eq!(fake.most_at_once.load(Ordering::SeqCst), 1);
    // Back to back, each after the previous one ended.
    let starts = fake.starts();
    assert!(starts.windows(2).all(|w| w[1] - w[0] >= 3 * SECOND));
}

#[tokio::test(start_paused = true)]
async fn resync_fires_after_the_period_with_no_requests() {
    let fake = Fake::with_work(SECOND);
    let mut l = start(&fake, config(1));
    ended(&mut l, 3).await;
    let starts = fake.starts();
    assert_eq!(
        starts[1] - starts[0],
        RESYNC + SECOND,
        "period counted from the end"
    );
    assert_eq!(starts[2] - starts[1], RESYNC + SECOND);
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_with_growing_ceilings_and_a_success_resets_the_backoff() {
    let fake = Fake::with_work(Duration::ZERO);
    fake.fail(true);
    let mut l = start(&fake, config(7));
    ended(&mut l, 8).await;
    let stats = l.stats.borrow().clone();
    assert_eq!((stats.failed, stats.consecutive_failures), (8, 8));
    assert_eq!(stats.last_error.as_deref(), Some("engine unreachable"));
    // The gaps are exactly the delays of a backoff with the same seed, each within its
    // doubling ceiling.
    let mut twin = seeded(7);
    let expected: Vec<Duration> = (0..7).map(|_| twin.fail()).collect();
    let starts = fake.starts();
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps, expected);
    let policy = BackoffPolicy::default();
    for (n, gap) in gaps.iter().enumerate() {
        assert!(*gap <= policy.ceiling(n as u32 + 1), "gap {n}: {gap:?}");
    }
    assert_eq!(
        stats.backoff,
        Some(twin.fail()),
        "the eighth failure's delay"
    );

    // The engine comes back: the retry succeeds and the backoff starts over.
    fake.fail(false);
    let stats = ended(&mut l, 9).await;
    assert_eq!((stats.succeeded, stats.consecutive_failures), (1, 0));
    assert_eq!((stats.backoff, stats.last_error), (None, None));
    assert!(stats.last_success.is_some());
    fake.fail(true);
    l.queue.enqueue(Reason::File);
    ended(&mut l, 10).await;
    let before = fake.runs();
    advance(SECOND).await;
    settle().await;
    assert_eq!(fake.runs(), before + 1, "the first retry again within 1 s");
}

#[tokio::test(start_paused = true)]
async fn requests_during_a_backoff_wait_for_it_unless_a_person_asks() {
    let fake = Fake::with_work(Duration::ZERO);
    fake.fail(true);
    // Find a seed whose fifth delay is long enough to see (over 10 s of its 16 s ceiling).
    let seed = (0..)
        .find(|s| {
            let mut b = seeded(*s);
            (0..5).map(|_| b.fail()).last().unwrap() > 10 * SECOND
        })
        .unwrap();
    let mut l = start(&fake, config(seed));
    let stats = ended(&mut l, 5).await;
    let backoff = stats.backoff.unwrap();
    assert!(backoff > 10 * SECOND);

    // The engine and the file watcher do not cut the backoff short...
    l.queue.enqueue(Reason::Engine);
    l.queue.enqueue(Reason::File);
    advance(SECOND).await;
    settle().await;
    assert_eq!(fake.runs(), 5);
    advance(4 * SECOND).await;
    settle().await;
    assert_eq!(fake.runs(), 5, "still backing off");
    // ...a person does, and the requests held so far are served by that same run.
    l.queue.enqueue(Reason::Api);
    settle().await;
    assert_eq!(fake.runs(), 6);
    ended(&mut l, 6).await;

    // A SIGHUP does too.
    advance(SECOND / 2).await;
    l.queue.enqueue(Reason::Signal);
    settle().await;
    assert_eq!(fake.runs(), 7);
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_the_loop_after_the_running_reconcile_finishes() {
    let fake = Fake::with_work(30 * SECOND);
    let l = start(&fake, config(1));
    settle().await;
    assert_eq!(fake.running.load(Ordering::SeqCst), 1);
    l.queue.enqueue(Reason::File);
    advance(5 * SECOND).await;
    l.stop.fire(libc::SIGTERM);
    settle().await;
    assert!(
        !l.task.is_finished(),
        "the running reconcile is not abandoned"
    );
    let stats = l.task.await.unwrap();
    assert_eq!(
        stats.succeeded, 1,
        "it ended, and the pending request did not start"
    );
    assert_eq!(fake.runs(), 1);
    assert_eq!(fake.running.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_backoff_ends_the_loop_at_once() {
    let fake = Fake::with_work(Duration::ZERO);
    fake.fail(true);
    let mut l = start(&fake, config(1));
    ended(&mut l, 10).await;
    let waited_from = Instant::now();
    l.stop.fire(libc::SIGTERM);
    l.task.await.unwrap();
    assert_eq!(Instant::now(), waited_from, "no waiting out the backoff");
    assert_eq!(fake.runs(), 10);
}

#[tokio::test(start_paused = true)]
async fn an_enqueue_after_the_loop_stopped_does_nothing() {
    let fake = Fake::with_work(Duration::ZERO);
    let mut l = start(&fake, config(1));
    ended(&mut l, 1).await;
    l.stop.fire(libc::SIGTERM);
    l.task.await.unwrap();
    l.queue.enqueue(Reason::Api);
    settle().await;
    assert_eq!(fake.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_reconcile_may_borrow_the_daemons_state_mutably() {
    // The daemon's closure holds its project lock `&mut` across the reconcile: an async
    // closure, awaited on the daemon's own task rather than spawned.
    let (queue, scheduler) = channel(config(1));
    let (stop, shutdown) = Shutdown::new();
    let mut reconciled = Vec::new();
    let run = scheduler.run(shutdown, async || -> Result<(), EngineDown> {
        reconciled.push(Instant::now());
        tokio::time::sleep(SECOND).await;
        Ok(())
    });
    let drive = async {
        settle().await;
        queue.enqueue(Reason::File);
        advance(3 * SECOND).await;
        settle().await;
        stop.fire(libc::SIGTERM);
    };
    let (stats, ()) = tokio::join!(run, drive);
    assert_eq!(stats.succeeded, 2);
    assert_eq!(reconciled.len(), 2);
}

/// The daemon's wiring on the in-memory engine: a reconcile that needs the engine, the
/// engine follower, and its reachability changes turned into requests, as `berth run`
/// does. While the engine is away every reconcile fails and the backoff grows; when it
/// answers again, the follower's reconnection cuts the backoff short.
#[tokio::test(start_paused = true)]
async fn the_engine_coming_back_cuts_a_backoff_short() {
    use berth::runtime::Runtime;
    use berth::runtime::fake::FakeRuntime;

    let rt = Arc::new(FakeRuntime::new());
    let (queue, scheduler) = channel(config(7));
    let mut stats = scheduler.stats();
    let (stop, shutdown) = Shutdown::new();
    let reachable = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let task = {
        let rt = rt.clone();
        tokio::spawn(scheduler.run(shutdown.clone(), async move || {
            rt.list_project("p")
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }))
    };
    let follower = {
        let (events, away, back) = (queue.clone(), queue.clone(), queue.clone());
        let r = reachable.clone();
        tokio::spawn(berth::daemon::triggers::follow_engine(
            rt.clone(),
            "p".into(),
            Arc::new(move || events.enqueue(Reason::Engine)),
            berth::daemon::triggers::on_reachability(
                Arc::new(move |up| r.store(up, Ordering::SeqCst)),
                Arc::new(move || away.enqueue(Reason::Engine)),
                Arc::new(move || back.enqueue(Reason::Reconnected)),
            ),
            shutdown,
        ))
    };
    stats.wait_for(|s| s.succeeded >= 1).await.unwrap();

    // The engine goes away: the follower notices at once and asks for a reconcile, which
    // fails; the retries fail too, and the backoff grows past a minute.
    rt.set_engine_down(true);
    let s = stats.wait_for(|s| s.failed >= 1).await.unwrap().clone();
    assert!(!reachable.load(Ordering::SeqCst));
    assert!(s.last_error.unwrap().contains("did not answer"));
    let s = stats
        .wait_for(|s| s.backoff.is_some_and(|b| b > 60 * SECOND))
        .await
        .unwrap()
        .clone();
    let (failed, succeeded, backoff) = (s.failed, s.succeeded, s.backoff.unwrap());

    // It comes back: reconciled within the follower's reconnect interval (5 s at most),
    // long before the backoff would have ended, by the reconnection and not a retry.
    let back_at = Instant::now();
    rt.set_engine_down(false);
    let s = stats
        .wait_for(|s| s.succeeded > succeeded)
        .await
        .unwrap()
        .clone();
    let waited = Instant::now() - back_at;
    assert!(waited <= 5 * SECOND + SECOND / 10, "{waited:?}");
    assert!(waited < backoff);
    assert_eq!(s.failed, failed, "no retry ran in between");
    assert_eq!(s.backoff, None);
    assert!(reachable.load(Ordering::SeqCst));

    stop.fire(libc::SIGTERM);
    task.await.unwrap();
    follower.await.unwrap();
}

/// Seconds after `origin` of every reconcile's start.
fn starts_after(fake: &Fake, origin: Instant) -> Vec<f64> {
    fake.starts()
        .iter()
        .map(|t| (*t - origin).as_secs_f64())
        .collect()
}

/// Anyone who reaches the endpoint can call `POST /api/v1/reconcile` in a loop, so a
/// request does not end the backoff at once each time: API requests cut it short once per
/// interval (30 s); the requests between are held and served by the run at the interval's
/// end, while SIGHUP (root's) still cuts it at once.
#[tokio::test(start_paused = true)]
async fn api_requests_cut_a_backoff_short_at_most_once_per_interval() {
    assert_eq!(API_INTERVAL, 30 * SECOND);
    // Every delay long, so no retry falls inside the test: any run is a request's.
    let policy = BackoffPolicy {
        base: 600 * SECOND,
        factor: 1,
        cap: 600 * SECOND,
    };
    let seed = (0..)
        .find(|s| {
            let mut b = Backoff::with_rng(policy, fastrand::Rng::with_seed(*s));
            (0..6).all(|_| b.fail() > 200 * SECOND)
        })
        .unwrap();
    let fake = Fake::with_work(Duration::ZERO);
    fake.fail(true);
    let origin = Instant::now();
    let mut l = start(
        &fake,
        Config {
            resync: RESYNC,
            backoff: Backoff::with_rng(policy, fastrand::Rng::with_seed(seed)),
            ..Config::default()
        },
    );
    ended(&mut l, 1).await;
    assert!(l.stats.borrow().backoff.unwrap() > 200 * SECOND);

    // A request every second for a minute.
    for _ in 0..60 {
        advance(SECOND).await;
        l.queue.enqueue(Reason::Api);
        settle().await;
    }
    advance(SECOND).await;
    settle().await;
    // The first cut at once (1 s), the next at the end of its interval (31 s, 61 s).
    assert_eq!(starts_after(&fake, origin), [0.0, 1.0, 31.0, 61.0]);

    // SIGHUP is not limited: it cuts the backoff at once, inside the interval.
    advance(5 * SECOND).await;
    l.queue.enqueue(Reason::Signal);
    settle().await;
    assert_eq!(starts_after(&fake, origin), [0.0, 1.0, 31.0, 61.0, 66.0]);
    l.stop.fire(libc::SIGTERM);
    l.task.await.unwrap();
}

/// While healthy an API request reconciles at once, and with `pull_policy = "always"`
/// each such run pulls: a flood of requests gets one early run per interval, and the
/// other triggers are not held by it.
#[tokio::test(start_paused = true)]
async fn api_requests_start_at_most_one_early_run_per_interval_and_hold_no_other_trigger() {
    let fake = Fake::with_work(Duration::ZERO);
    let origin = Instant::now();
    let mut l = start(&fake, config(1));
    ended(&mut l, 1).await;
    // A request every 500 ms for 70 s; the file changes at 10 s.
    for i in 1..=140 {
        advance(SECOND / 2).await;
        l.queue.enqueue(Reason::Api);
        if i == 20 {
            l.queue.enqueue(Reason::File);
        }
        settle().await;
    }
    // The start; the first request at once (0.5 s); the file change at once (10 s), which
    // also serves the requests held then; then one per interval after the first.
    assert_eq!(
        starts_after(&fake, origin),
        [0.0, 0.5, 10.0, 30.5, 60.5],
        "{} runs",
        fake.runs()
    );
    assert_eq!(l.stats.borrow().failed, 0);
    l.stop.fire(libc::SIGTERM);
    l.task.await.unwrap();
}

/// A reconcile that asks to run again after a while (a crash-looping service's hold ends
/// then) is run again then, with no trigger; one that asks nothing waits for the resync.
#[tokio::test(start_paused = true)]
async fn a_requeue_asked_by_the_reconcile_runs_it_again_after_that_while() {
    use berth::daemon::controller::scheduler::Action;
    let starts: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let (_queue, scheduler) = channel(config(7));
    let (stop, shutdown) = Shutdown::new();
    let t0 = Instant::now();
    let task = {
        let starts = starts.clone();
        tokio::spawn(scheduler.run(shutdown, async move || {
            let n = {
                let mut s = starts.lock().unwrap();
                s.push(Instant::now());
                s.len()
            };
            Ok::<_, EngineDown>(match n {
                1 => Action::Requeue(10 * SECOND),
                _ => Action::AwaitChange,
            })
        }))
    };
    // Three runs: at start, 10 s later (the requeue), then the resync after that.
    // Paused time moves to the next timer whenever every task is idle: each run starts
    // exactly when it is due.
    while starts.lock().unwrap().len() < 3 {
        tokio::time::sleep(SECOND).await;
    }
    stop.fire(15);
    task.await.unwrap();
    let s = starts.lock().unwrap().clone();
    assert_eq!(s[0] - t0, Duration::ZERO);
    assert_eq!(s[1] - s[0], 10 * SECOND, "the requeue");
    assert_eq!(s[2] - s[1], RESYNC, "then the resync, as after any success");
}
