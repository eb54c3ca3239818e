//! The gate under Swarm: a service passes when every task of its new spec is `running`
//! (which, for an image with a HEALTHCHECK, Swarm says only once it is healthy), Swarm
//! is not updating it any more, and berth's own probe passes against every task; then it
//! must stay so through `min_healthy_time`. Judged from the tasks' states and the
//! service's `UpdateStatus` as the manager reports them, never from a CLI's exit code.
//!
//! A task of the new spec that is `failed` or `rejected` (or shut down with an error),
//! an update Swarm paused, or a task replaced inside the window fails the gate at once.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bollard::models::{Task, TaskState};

use super::Swarm;
use crate::converge::Failure;
use crate::runtime::docker::api;
use crate::spec::{LABEL_CONFIG_HASH, LABEL_GENERATION, Probe};

/// One task as the gate judges it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    pub id: String,
    pub slot: i64,
    pub node: String,
    /// Swarm wants it running (not one it is shutting down).
    pub desired_running: bool,
    /// Swarm's state word: new … starting, running, complete, failed, rejected, shutdown.
    pub state: String,
    pub err: Option<String>,
    /// It runs the spec being gated (its generation and config hash labels).
    pub of_spec: bool,
    /// It did not exist before this gate's change: its failure is this change's.
    pub new: bool,
    /// The host port its node publishes the probe port on, once it has one.
    pub probe_port: Option<u16>,
}

/// What the tasks say now.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not yet: what is still missing.
    Waiting(String),
    /// Every replica of the spec runs: these tasks.
    Ready(Vec<TaskView>),
    /// A task of the spec failed, or Swarm stopped the update.
    Failed(String),
}

/// The verdict on `service`'s tasks: `replicas` wanted, the update state and message
/// Swarm reports (None when it never updated the service).
pub fn judge(
    service: &str,
    replicas: u64,
    update: Option<(&str, &str)>,
    tasks: &[TaskView],
) -> Verdict {
    match update {
        Some(("paused", message)) => {
            return Verdict::Failed(format!(
                "Swarm paused the update of service {service}: {message}"
            ));
        }
        Some((state, message)) if state.starts_with("rollback") => {
            return Verdict::Failed(format!(
                "Swarm is rolling service {service} back ({state}: {message}); berth never asks for that, so someone else did"
            ));
        }
        _ => {}
    }
    let mut failed: Vec<&TaskView> = tasks
        .iter()
        .filter(|t| t.of_spec && t.new)
        .filter(|t| {
            matches!(t.state.as_str(), "failed" | "rejected")
                || (t.state == "shutdown" && t.err.is_some())
        })
        .collect();
    failed.sort_by_key(|t| t.slot);
    if let Some(t) = failed.first() {
        return Verdict::Failed(format!(
            "task {service}.{} is {}: {}",
            t.slot,
            t.state,
            t.err.as_deref().unwrap_or("no error given")
        ));
    }
    let running: Vec<TaskView> = tasks
        .iter()
        .filter(|t| t.of_spec && t.desired_running && t.state == "running")
        .cloned()
        .collect();
    if update.is_some_and(|(state, _)| state == "updating") {
        return Verdict::Waiting(format!(
            "Swarm is updating it ({}/{replicas} tasks of the new spec running)",
            running.len()
        ));
    }
    if running.len() as u64 >= replicas {
        return Verdict::Ready(running);
    }
    let mut others: Vec<String> = tasks
        .iter()
        .filter(|t| t.of_spec && t.desired_running && t.state != "running")
        .map(|t| format!("{}.{} {}", service, t.slot, t.state))
        .collect();
    others.sort();
    Verdict::Waiting(format!(
        "{}/{replicas} tasks running{}",
        running.len(),
        match others.is_empty() {
            true => String::new(),
            false => format!(" ({})", others.join(", ")),
        }
    ))
}

/// A task of the Swarm API as the gate sees it.
pub fn view(
    t: &Task,
    generation: i64,
    hash: &str,
    before: &BTreeSet<String>,
    probe: Option<u16>,
) -> TaskView {
    let id = t.id.clone().unwrap_or_default();
    let labels = t
        .spec
        .as_ref()
        .and_then(|s| s.container_spec.as_ref())
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
    let status = t.status.clone().unwrap_or_default();
    let probe_port = probe.and_then(|target| {
        status
            .port_status
            .as_ref()?
            .ports
            .as_ref()?
            .iter()
            .find(|p| p.target_port == Some(target.into()) && p.published_port.is_some())
            .and_then(|p| u16::try_from(p.published_port?).ok())
    });
    TaskView {
        new: !before.contains(&id),
        id,
        slot: t.slot.unwrap_or(0),
        node: t.node_id.clone().unwrap_or_default(),
        desired_running: t.desired_state == Some(TaskState::RUNNING),
        state: status.state.map(|s| s.to_string()).unwrap_or_default(),
        err: status.err.filter(|e| !e.is_empty()),
        of_spec: labels.get(LABEL_GENERATION).map(String::as_str)
            == Some(generation.to_string().as_str())
            && labels.get(LABEL_CONFIG_HASH).map(String::as_str) == Some(hash),
        probe_port,
    }
}

/// What one service's gate is asked.
pub struct Gate<'a> {
    /// The Swarm service's name.
    pub name: &'a str,
    pub service: &'a crate::spec::Service,
    pub generation: i64,
    pub replicas: u64,
    /// berth's own network probe, when the service has one.
    pub probe: Option<&'a Probe>,
    pub healthy_deadline: Duration,
    pub min_healthy_time: Duration,
    /// The service's task IDs before the change.
    pub before: &'a BTreeSet<String>,
}

/// Gate one service: the time to its first healthy moment and what passed, or why not.
pub async fn gate(sw: &Swarm, g: Gate<'_>) -> Result<(Duration, String), Failure> {
    let hash = crate::hash::config_hash(g.service);
    let port = super::spec::probe_port(g.probe);
    let interval = g
        .service
        .health
        .as_ref()
        .map(|h| h.interval)
        .unwrap_or(Duration::from_millis(500))
        .clamp(Duration::from_millis(100), Duration::from_secs(2));
    let start = Instant::now();
    // When every replica first ran and passed its probe, and which tasks they were.
    let mut healthy: Option<(Duration, BTreeSet<String>)> = None;
    let mut last = String::from("no task yet");
    let mut passed = String::new();
    loop {
        let svc = sw
            .docker
            .inspect_service(g.name, None)
            .await
            .map_err(|e| Failure::of(api(format!("inspecting service {}", g.name))(e)))?;
        let tasks = sw.tasks(g.name).await.map_err(Failure::of)?;
        let views: Vec<TaskView> = tasks
            .iter()
            .map(|t| view(t, g.generation, &hash, g.before, port))
            .collect();
        let update = svc.update_status.as_ref().map(|u| {
            (
                u.state.map(|s| s.to_string()).unwrap_or_default(),
                u.message.clone().unwrap_or_default(),
            )
        });
        let verdict = judge(
            g.name,
            g.replicas,
            update.as_ref().map(|(s, m)| (s.as_str(), m.as_str())),
            &views,
        );
        match verdict {
            Verdict::Failed(reason) => return Err(Failure::Gate(reason)),
            Verdict::Waiting(why) => {
                if healthy.is_some() {
                    return Err(Failure::Gate(format!(
                        "service {} did not stay healthy through min_healthy_time: {why}",
                        g.name
                    )));
                }
                // Swarm may hold an update while a new task runs but is not what it
                // should be: berth's probe of the tasks that run says why.
                let running: Vec<TaskView> = views
                    .iter()
                    .filter(|t| t.of_spec && t.desired_running && t.state == "running")
                    .cloned()
                    .collect();
                last = match running.is_empty() {
                    true => why,
                    false => match probe_tasks(sw, g.probe, g.service, &running).await {
                        Ok(_) => why,
                        Err(probe) => format!("{why}; {probe}"),
                    },
                };
            }
            Verdict::Ready(running) => {
                let ids: BTreeSet<String> = running.iter().map(|t| t.id.clone()).collect();
                if let Some((_, first)) = &healthy
                    && *first != ids
                {
                    return Err(Failure::Gate(format!(
                        "a task of service {} was replaced inside min_healthy_time (Swarm restarted it)",
                        g.name
                    )));
                }
                match probe_tasks(sw, g.probe, g.service, &running).await {
                    Ok(how) => {
                        passed = how;
                        if healthy.is_none() {
                            healthy = Some((start.elapsed(), ids));
                        }
                    }
                    Err(why) if healthy.is_some() => {
                        return Err(Failure::Gate(format!(
                            "service {} did not stay healthy through min_healthy_time: {why}",
                            g.name
                        )));
                    }
                    Err(why) => last = why,
                }
            }
        }
        if let Some((after, _)) = &healthy
            && start.elapsed() >= *after + g.min_healthy_time
        {
            return Ok((*after, passed));
        }
        if healthy.is_none() && start.elapsed() >= g.healthy_deadline {
            return Err(Failure::Gate(format!(
                "service {} was not healthy within healthy_deadline {}: {last}",
                g.name,
                crate::spec::duration::format(g.healthy_deadline)
            )));
        }
        tokio::time::sleep(interval).await;
    }
}

/// berth's own probe against every running task, through the port its node publishes
/// for it: a summary when all passed, else the first failure.
pub(super) async fn probe_tasks(
    sw: &Swarm,
    probe: Option<&Probe>,
    service: &crate::spec::Service,
    running: &[TaskView],
) -> Result<String, String> {
    let Some(probe) = probe.filter(|p| super::spec::probe_port(Some(p)).is_some()) else {
        return Ok(format!(
            "{} tasks running{}",
            running.len(),
            match probe {
                Some(Probe::Docker) => ", healthy by their HEALTHCHECK",
                _ => "",
            }
        ));
    };
    let timeout = service
        .health
        .as_ref()
        .map(|h| h.timeout)
        .unwrap_or(Duration::from_secs(2));
    for t in running {
        let Some(port) = t.probe_port else {
            return Err(format!(
                "task {}.{} has no published probe port yet",
                service.name, t.slot
            ));
        };
        let addr = node_address(sw, &t.node).await?;
        let result = crate::probe::network(&sw.http, &addr, &with_port(probe, port), timeout).await;
        if !result.ok {
            return Err(format!(
                "{probe} on task {}.{} ({addr}:{port}): {}",
                service.name, t.slot, result.detail
            ));
        }
    }
    Ok(format!("{probe} on {} tasks", running.len()))
}

/// Where a node's published ports are reached from berth: the manager berth talks to is
/// this host (127.0.0.1); another node at the address Swarm knows it by.
async fn node_address(sw: &Swarm, node: &str) -> Result<String, String> {
    if node == sw.node_id {
        return Ok("127.0.0.1".into());
    }
    let n = sw
        .docker
        .inspect_node(node)
        .await
        .map_err(|e| format!("inspecting node {node}: {e}"))?;
    n.status
        .and_then(|s| s.addr)
        .filter(|a| !a.is_empty() && a != "0.0.0.0")
        .ok_or_else(|| format!("node {node} has no address berth can reach"))
}

/// The probe against a published port instead of the container's own.
fn with_port(probe: &Probe, port: u16) -> Probe {
    let mut p = probe.clone();
    match &mut p {
        Probe::Tcp { port: p }
        | Probe::Http { port: p, .. }
        | Probe::Postgres { port: p, .. }
        | Probe::Redis { port: p, .. } => *p = port,
        Probe::Exec { .. } | Probe::Docker => {}
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(slot: i64, state: &str) -> TaskView {
        TaskView {
            id: format!("t{slot}-{state}"),
            slot,
            node: "n1".into(),
            desired_running: true,
            state: state.into(),
            err: None,
            of_spec: true,
            new: true,
            probe_port: Some(30000 + slot as u16),
        }
    }

    #[test]
    fn every_replica_of_the_new_spec_must_run_and_the_update_must_be_over() {
        let two = [task(1, "running"), task(2, "starting")];
        assert_eq!(
            judge("p-app", 2, None, &two),
            Verdict::Waiting("1/2 tasks running (p-app.2 starting)".into())
        );
        let both = [task(1, "running"), task(2, "running")];
        assert!(matches!(judge("p-app", 2, None, &both), Verdict::Ready(r) if r.len() == 2));
        assert!(matches!(
            judge("p-app", 2, Some(("updating", "")), &both),
            Verdict::Waiting(w) if w.starts_with("Swarm is updating it")
        ));
        // A task of the old spec does not count.
        let mut old = task(2, "running");
        old.of_spec = false;
        assert!(matches!(
            judge(
                "p-app",
                2,
                Some(("completed", "")),
                &[task(1, "running"), old]
            ),
            Verdict::Waiting(_)
        ));
    }

    #[test]
    fn a_failed_or_rejected_new_task_or_a_paused_update_fails_the_gate() {
        let mut failed = task(2, "failed");
        failed.err = Some("task: non-zero exit (3)".into());
        assert_eq!(
            judge("p-app", 2, None, &[task(1, "running"), failed.clone()]),
            Verdict::Failed("task p-app.2 is failed: task: non-zero exit (3)".into())
        );
        // One that failed before this change is not this change's failure.
        failed.new = false;
        assert!(matches!(
            judge("p-app", 1, None, &[task(1, "running"), failed]),
            Verdict::Ready(_)
        ));
        assert_eq!(
            judge(
                "p-app",
                1,
                Some(("paused", "update paused due to failure")),
                &[]
            ),
            Verdict::Failed(
                "Swarm paused the update of service p-app: update paused due to failure".into()
            )
        );
        assert!(matches!(
            judge("p-app", 1, Some(("rollback_started", "")), &[]),
            Verdict::Failed(r) if r.contains("someone else")
        ));
    }

    #[test]
    fn a_probe_goes_to_the_published_port() {
        let p = Probe::Http {
            port: 8080,
            path: "/health".into(),
            expect_json: Default::default(),
        };
        assert_eq!(with_port(&p, 30001).to_string(), "http :30001/health");
    }
}
