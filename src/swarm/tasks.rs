//! Each service's current tasks under Swarm, for `berth status`: which node runs each
//! replica, in which state, and what berth's own probe of that one task says now.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::Swarm;
use super::gate::{TaskView, probe_tasks, view};
use crate::runtime::docker::api;
use crate::runtime::{HealthState, RuntimeError};
use crate::spec::DesiredState;
use crate::text::one_line;

/// One task Swarm wants running, as `berth status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// The replica's slot (`api.2` is slot 2).
    pub slot: i64,
    /// The hostname of the node it was scheduled on (its node ID when the node is gone).
    pub node: String,
    /// Swarm's state word: new … starting, running, failed, rejected.
    pub state: String,
    /// berth's probe of this task alone (None while it does not run).
    pub health: Option<HealthState>,
    /// What the probe saw when it failed, or Swarm's error for the task.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// The tasks Swarm wants running of each of `d`'s services, by service name, in slot
/// order, each probed once. Tasks Swarm is shutting down are left out: they are not
/// the service's any more.
pub async fn tasks(
    sw: &Swarm,
    d: &DesiredState,
) -> Result<BTreeMap<String, Vec<TaskStatus>>, RuntimeError> {
    let mut hostnames: HashMap<String, String> = HashMap::new();
    let mut out = BTreeMap::new();
    for (name, s) in &d.services {
        let probe = s.health.as_ref().map(|h| &h.probe);
        let port = super::spec::probe_port(probe);
        let mut views: Vec<TaskView> = match sw.tasks(&s.container_name).await {
            Ok(t) => t
                .iter()
                .map(|t| view(t, 0, "", &Default::default(), port))
                .filter(|t| t.desired_running)
                .collect(),
            Err(e) if e.is_unreachable() => return Err(e),
            // A service that is missing is said in its row; it has no tasks.
            Err(_) => Vec::new(),
        };
        views.sort_by_key(|t| t.slot);
        let mut shown = Vec::with_capacity(views.len());
        for t in views {
            let node = match hostnames.get(&t.node) {
                Some(h) => h.clone(),
                None => {
                    let h = hostname(sw, &t.node).await?;
                    hostnames.insert(t.node.clone(), h.clone());
                    h
                }
            };
            let (health, detail) = match t.state.as_str() {
                "running" => match probe_tasks(sw, probe, s, std::slice::from_ref(&t)).await {
                    Ok(_) => (Some(HealthState::Healthy), String::new()),
                    Err(why) => (Some(HealthState::Unhealthy), why),
                },
                _ => (None, t.err.clone().unwrap_or_default()),
            };
            shown.push(TaskStatus {
                slot: t.slot,
                node,
                state: t.state,
                health,
                detail: one_line(&detail, 200),
            });
        }
        out.insert(name.clone(), shown);
    }
    Ok(out)
}

/// A node's hostname as Swarm knows it; its ID when the node was removed meanwhile.
async fn hostname(sw: &Swarm, node: &str) -> Result<String, RuntimeError> {
    if node.is_empty() {
        // Not scheduled yet (a task that is `pending`).
        return Ok("-".into());
    }
    match sw.docker.inspect_node(node).await {
        Ok(n) => Ok(n
            .description
            .and_then(|d| d.hostname)
            .map(|h| one_line(&h, 64))
            .unwrap_or_else(|| node.to_string())),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(node[..node.len().min(12)].to_string()),
        Err(e) => Err(api(format!("inspecting node {node}"))(e)),
    }
}

/// The compact form of a service's tasks in `berth status`'s table: `1@vm 2@worker`,
/// a task that does not run or fails its probe marked (`2@worker(starting)`).
pub fn compact(tasks: &[TaskStatus]) -> String {
    tasks
        .iter()
        .map(|t| {
            let mark = match (&t.health, t.state.as_str()) {
                (Some(HealthState::Healthy), _) => String::new(),
                (Some(HealthState::Unhealthy), _) => "(unhealthy)".into(),
                (_, state) => format!("({state})"),
            };
            format!("{}@{}{mark}", t.slot, t.node)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(slot: i64, node: &str, state: &str, health: Option<HealthState>) -> TaskStatus {
        TaskStatus {
            slot,
            node: node.into(),
            state: state.into(),
            health,
            detail: String::new(),
        }
    }

    #[test]
    fn the_compact_form_names_each_slot_with_its_node_and_marks_what_is_not_healthy() {
        let tasks = [
            task(1, "vm", "running", Some(HealthState::Healthy)),
            task(2, "berth-worker", "running", Some(HealthState::Unhealthy)),
            task(3, "-", "pending", None),
        ];
        assert_eq!(
            compact(&tasks),
            "1@vm 2@berth-worker(unhealthy) 3@-(pending)"
        );
        assert_eq!(compact(&[]), "");
    }

    #[test]
    fn a_task_serializes_with_its_node_state_and_probe_result() {
        let t = task(2, "berth-worker", "running", Some(HealthState::Healthy));
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            serde_json::json!({"slot": 2, "node": "berth-worker", "state": "running", "health": "healthy"})
        );
    }
}
