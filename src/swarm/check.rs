//! Each service's health under Swarm, now: for `berth status` (and `berth check`'s
//! report shape). A service is healthy only when it runs every replica it should and
//! berth's own probe passes against every one of its running tasks.

use std::time::Instant;

use super::Swarm;
use super::gate::{probe_tasks, view};
use crate::check::{CheckReport, ServiceCheck};
use crate::runtime::RuntimeError;
use crate::spec::{DesiredState, Probe};

/// Probe every service of `d` once, through each task's published probe port.
pub async fn check(sw: &Swarm, d: &DesiredState) -> Result<CheckReport, RuntimeError> {
    let mut services = Vec::new();
    for level in d.levels() {
        for name in level {
            let s = &d.services[&name];
            let probe = s.health.as_ref().map(|h| h.probe.clone());
            let port = super::spec::probe_port(probe.as_ref());
            let mut out = ServiceCheck {
                service: name.clone(),
                container: s.container_name.clone(),
                healthy: false,
                probe: probe
                    .as_ref()
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "running".into()),
                detail: String::new(),
                response_ms: 0,
                facts: Default::default(),
                database: matches!(probe, Some(Probe::Postgres { .. })),
            };
            let tasks = match sw.tasks(&s.container_name).await {
                Ok(t) => t,
                Err(e) if e.is_unreachable() => return Err(e),
                Err(e) => {
                    out.detail = e.to_string();
                    services.push(out);
                    continue;
                }
            };
            let running: Vec<_> = tasks
                .iter()
                .map(|t| view(t, 0, "", &Default::default(), port))
                .filter(|t| t.desired_running && t.state == "running")
                .collect();
            let wanted = s.swarm.replicas;
            if (running.len() as u64) < wanted {
                out.detail = format!("{}/{wanted} replicas running", running.len());
                services.push(out);
                continue;
            }
            let started = Instant::now();
            let r = probe_tasks(sw, probe.as_ref(), s, &running).await;
            out.response_ms = started.elapsed().as_millis();
            match r {
                Ok(how) => {
                    out.healthy = true;
                    out.detail = how;
                }
                Err(why) => out.detail = why,
            }
            services.push(out);
        }
    }
    Ok(CheckReport {
        project: d.project.name.clone(),
        healthy: services.iter().all(|s| s.healthy),
        services,
    })
}
