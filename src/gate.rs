//! The health gate (DESIGN.md "gate"): a started container must pass its probe within
//! `healthy_deadline` and then keep passing, without exiting or restarting, for
//! `min_healthy_time`. A container that passes one probe and then crashes fails.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::Notify;

use crate::runtime::{ContainerDetails, ProbeResult, Runtime};
use crate::spec::{Probe, Service};

/// How long a gate that follows the engine's events waits at most before it asks the
/// engine again anyway (an event stream that broke, or an event the engine never sent).
const EVENT_FALLBACK: Duration = Duration::from_secs(2);

/// The project's container events, shared by the gates of one converge: one event stream
/// for the whole converge, not one per gate.
///
/// A gate on an image's HEALTHCHECK, or on "running", judges only what the engine shows
/// of the container (running, exit code, restarts, health), and that changes only with an
/// event: such a gate inspects its container when one of the container's events arrives
/// (`health_status`, `die`, `start`...), when its window ends, and every
/// [`EVENT_FALLBACK`] at most, rather than every probe interval. With 100 containers that
/// is a few inspects per container instead of 400 a second. Probes berth runs itself
/// (http, tcp, exec, postgres, redis) are still run every interval.
pub struct Watch {
    waiting: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    task: tokio::task::AbortHandle,
}

impl Watch {
    /// Follow the project's events from now on.
    pub fn start<R: Runtime>(rt: &R, project: &str) -> Watch {
        let mut events = rt.events(project);
        let waiting: Arc<Mutex<HashMap<String, Arc<Notify>>>> = Arc::default();
        let to = waiting.clone();
        let task = tokio::spawn(async move {
            // An error or the end of the stream (the engine went away) ends the watch;
            // the gates go on at the fallback pace.
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(event) => event,
                    Err(e) => {
                        tracing::warn!(error = %e, "the engine's event stream broke; gates ask the engine every 2 s instead");
                        return;
                    }
                };
                if !event.changes_state() {
                    continue;
                }
                let notify = to.lock().expect("watch lock").get(&event.id).cloned();
                if let Some(n) = notify {
                    n.notify_one();
                }
            }
        })
        .abort_handle();
        Watch { waiting, task }
    }

    /// Be told of `container_id`'s events from now on.
    fn follow(&self, container_id: &str) -> Arc<Notify> {
        self.waiting
            .lock()
            .expect("watch lock")
            .entry(container_id.to_string())
            .or_default()
            .clone()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a gate ended, with enough words for a reason a person can act on.
#[derive(Debug, Clone, PartialEq)]
pub enum GateOutcome {
    /// Healthy `after` its start, and stayed so for min_healthy_time.
    Passed { after: Duration, probe: String },
    Failed {
        reason: String,
        /// The probe's last result, as `probe: result`, kept with the evidence.
        probe: String,
    },
    /// The engine stopped answering: the gate could not be judged.
    Unreachable { context: String, message: String },
}

/// The probe a service is gated on: its own, else its image's HEALTHCHECK, else none
/// (then "running" is the test).
pub fn effective_probe(service: &Service, image_has_healthcheck: bool) -> Option<Probe> {
    match &service.health {
        Some(h) => Some(h.probe.clone()),
        None if image_has_healthcheck => Some(Probe::Docker),
        None => None,
    }
}

/// Gate one started container.
///
/// `ready`, when given, is told the moment the probe first passes (with the time since
/// the start): a pipelined converge (DESIGN.md semantic 4) starts the dependents then,
/// while this gate goes on to the end of the stability window.
///
/// A gate on the image's HEALTHCHECK or on "running" waits for the container's events
/// in `watch` instead of polling (see [`Watch`]).
#[allow(clippy::too_many_arguments)]
pub async fn gate<R: Runtime>(
    rt: &R,
    container_id: &str,
    service: &Service,
    probe: Option<&Probe>,
    healthy_deadline: Duration,
    min_healthy_time: Duration,
    ready: &mut Option<tokio::sync::oneshot::Sender<Duration>>,
    watch: &Watch,
) -> GateOutcome {
    // Told before the first inspect, so no change after it goes unseen. Every gate
    // follows its container's events: one on an image's HEALTHCHECK or on "running" has
    // nothing else to wait for, and one on berth's own probe is woken by a `die` or
    // `destroy` at once instead of at its next probe.
    let events = watch.follow(container_id);
    let mut run = GateRun::new(service, probe, healthy_deadline, min_healthy_time);
    loop {
        if let Some(over) = run.look(rt, container_id).await {
            return over;
        }
        let now = Instant::now();
        if let Some(outcome) = run.judge(now, ready) {
            return outcome;
        }
        tokio::select! {
            () = events.notified() => {}
            () = tokio::time::sleep_until(run.wake_at(now).into()) => {}
        }
    }
}

/// One gate under way: what it probes and how often, and what it has seen so far.
struct GateRun<'a> {
    service: &'a Service,
    probe: Option<&'a Probe>,
    /// The gate is on the image's HEALTHCHECK or on "running": only the engine's view of
    /// the container is judged, and berth runs no probe of its own.
    engine_judged: bool,
    probe_name: String,
    interval: Duration,
    timeout: Duration,
    healthy_deadline: Duration,
    min_healthy_time: Duration,
    start: Instant,
    /// The restart count at the first inspect: a higher one is a restart.
    first_restarts: Option<i64>,
    /// When the current run of passing probes began (None while failing).
    healthy_since: Option<Instant>,
    /// How long after the start the probe first passed.
    first_healthy: Option<Duration>,
    last: ProbeResult,
    /// The wait before the next probe until the first pass; it doubles up to the interval.
    fast: Duration,
    /// When berth's own probe is next due (it is not run again on an event's wake-up).
    probe_due: Instant,
}

impl<'a> GateRun<'a> {
    fn new(
        service: &'a Service,
        probe: Option<&'a Probe>,
        healthy_deadline: Duration,
        min_healthy_time: Duration,
    ) -> Self {
        let start = Instant::now();
        GateRun {
            service,
            probe,
            engine_judged: matches!(probe, None | Some(Probe::Docker)),
            probe_name: probe
                .map(|p| p.to_string())
                .unwrap_or_else(|| "running".into()),
            interval: service
                .health
                .as_ref()
                .map(|h| h.interval)
                .unwrap_or(Duration::from_millis(250)),
            timeout: service
                .health
                .as_ref()
                .map(|h| h.timeout)
                .unwrap_or(Duration::from_secs(2)),
            healthy_deadline,
            min_healthy_time,
            start,
            first_restarts: None,
            healthy_since: None,
            first_healthy: None,
            last: ProbeResult::new(false, "not probed yet"),
            fast: Duration::from_millis(25),
            probe_due: start,
        }
    }

    /// Inspect the container and, when due, probe it. Some when the gate is over: the
    /// engine stopped answering, or the container is gone, restarted or exited.
    async fn look<R: Runtime>(&mut self, rt: &R, container_id: &str) -> Option<GateOutcome> {
        match rt
            .inspect_container(container_id, &self.service.networks[0])
            .await
        {
            Err(crate::runtime::RuntimeError::Unreachable { context, message }) => {
                Some(GateOutcome::Unreachable { context, message })
            }
            // Removed (by hand, or by anything else): nothing is left to become healthy.
            Err(crate::runtime::RuntimeError::Gone { .. }) => Some(self.over("was removed")),
            Err(e) => {
                self.last = ProbeResult::new(false, e.to_string());
                None
            }
            Ok(c) => {
                if let Some(over) = self.ended(&c) {
                    return Some(over);
                }
                self.probe_if_due(rt, &c).await;
                None
            }
        }
    }

    /// Some when the engine says the container is over.
    fn ended(&mut self, c: &ContainerDetails) -> Option<GateOutcome> {
        let base = *self.first_restarts.get_or_insert(c.restart_count);
        // A restart fails at once. So does an exit the engine will not undo (no restart
        // policy, a policy that does not cover this exit, or a kill, which cancels the
        // policy): the engine has said the container is over, and there is no deadline
        // left worth waiting out, before or after the first pass.
        if c.restart_count > base || c.restarting {
            return Some(self.over(&format!("restarted (last exit {})", exit_words(c))));
        }
        if !c.running {
            return Some(self.over(&format!("exited ({})", exit_words(c))));
        }
        None
    }

    /// Probe the running container if the engine judges it, if berth's probe is due, or
    /// if the stability window has ended.
    async fn probe_if_due<R: Runtime>(&mut self, rt: &R, c: &ContainerDetails) {
        let now = Instant::now();
        // A window ends on a probe of its own, not on the last one before it.
        let window_over = self
            .healthy_since
            .is_some_and(|t| now >= t + self.min_healthy_time);
        if !(self.engine_judged || now >= self.probe_due || window_over) {
            return;
        }
        self.last = match self.probe {
            Some(p) => rt.probe(c, p, self.timeout).await,
            None => ProbeResult::new(true, "container running"),
        };
        // Until the first pass, probe early and then less often (25 ms doubling up to the
        // interval): a service that is ready fast is seen fast, one that is slow is not
        // probed more often than asked.
        let wait = if self.last.ok || self.first_healthy.is_some() {
            self.interval
        } else {
            let w = self.interval.min(self.fast);
            self.fast = self.fast.saturating_mul(2);
            w
        };
        self.probe_due = now + wait;
    }

    /// Some when the gate is decided at `now`: passed (healthy for the whole window) or
    /// failed (not healthy within the deadline). `ready` is told of the first pass.
    fn judge(
        &mut self,
        now: Instant,
        ready: &mut Option<tokio::sync::oneshot::Sender<Duration>>,
    ) -> Option<GateOutcome> {
        if self.last.ok {
            let since = *self.healthy_since.get_or_insert(now);
            let first = *self.first_healthy.get_or_insert(now - self.start);
            if let Some(tx) = ready.take() {
                let _ = tx.send(first);
            }
            if now - since >= self.min_healthy_time {
                return Some(GateOutcome::Passed {
                    after: self.first_healthy.unwrap_or_default(),
                    probe: self.probe_name.clone(),
                });
            }
        } else {
            self.healthy_since = None;
        }
        if now - self.start >= self.healthy_deadline && self.healthy_since.is_none() {
            return Some(GateOutcome::Failed {
                reason: format!(
                    "service {:?} failed its gate: not healthy within healthy_deadline {}; probe {}, last result: {}",
                    self.service.name,
                    crate::spec::duration::format(self.healthy_deadline),
                    self.probe_name,
                    self.last.detail
                ),
                probe: self.last_probe(),
            });
        }
        None
    }

    /// When to look again, unless the container's next event comes first: at the
    /// window's end, the deadline, or the next probe, whichever comes first. A gate the
    /// engine judges has no probe of its own: only an event changes what inspect shows,
    /// so it waits at most the fallback.
    fn wake_at(&self, now: Instant) -> Instant {
        let window_end = match self.healthy_since {
            Some(since) => since + self.min_healthy_time,
            None => (self.start + self.healthy_deadline).max(now),
        };
        if self.engine_judged {
            window_end.min(now + EVENT_FALLBACK)
        } else {
            window_end.min(self.probe_due)
        }
    }

    /// The probe's last result, for the evidence.
    fn last_probe(&self) -> String {
        format!("{}: {}", self.probe_name, self.last.detail)
    }

    /// The container is over: say how, how soon after the start, and what the probe last
    /// saw.
    fn over(&self, what: &str) -> GateOutcome {
        GateOutcome::Failed {
            reason: format!(
                "service {:?} failed its gate: the container {what} {} after start; probe {}, last result: {}",
                self.service.name,
                secs(self.start.elapsed()),
                self.probe_name,
                self.last.detail
            ),
            probe: self.last_probe(),
        }
    }
}

/// "code 137, OOM killed": how the container's last run ended.
fn exit_words(c: &ContainerDetails) -> String {
    if c.oom_killed {
        format!("code {}, OOM killed", c.exit_code)
    } else {
        format!("code {}", c.exit_code)
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
