//! `berth check`: the runbook's `scripts/health_check.sh` as a command.
//!
//! For every service of the desired state, in dependency order: is its container there
//! and running, and does its probe pass right now, and how long did the probe take. A
//! PostgreSQL probe adds the runbook's database checks (connection, queries, table count),
//! a Redis probe the memory in use. Nothing is started, stopped or recorded.

use std::time::Instant;

use serde::Serialize;

use crate::gate::effective_probe;
use crate::runtime::{ProbeResult, Runtime, RuntimeError};
use crate::spec::{DesiredState, Probe};

#[derive(Debug, Clone, Serialize)]
pub struct ServiceCheck {
    pub service: String,
    pub container: String,
    pub healthy: bool,
    /// The probe run, as `berth plan` and gate reasons name it.
    pub probe: String,
    pub detail: String,
    pub response_ms: u128,
    /// What the probe learned: `tables`, `server_version`, `used_memory`.
    pub facts: std::collections::BTreeMap<String, String>,
    /// Whether this is a PostgreSQL probe (its lines get the database section).
    #[serde(skip)]
    pub database: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub project: String,
    pub healthy: bool,
    pub services: Vec<ServiceCheck>,
}

/// Probe every service of `d` once.
pub async fn check<R: Runtime>(rt: &R, d: &DesiredState) -> Result<CheckReport, RuntimeError> {
    let containers = rt.list_project(&d.project.name).await?;
    let mut services = Vec::new();
    for level in d.levels() {
        for name in level {
            let s = &d.services[&name];
            let mut out = ServiceCheck {
                service: name.clone(),
                container: s.container_name.clone(),
                healthy: false,
                probe: "running".into(),
                detail: String::new(),
                response_ms: 0,
                facts: Default::default(),
                database: matches!(
                    s.health.as_ref().map(|h| &h.probe),
                    Some(Probe::Postgres { .. })
                ),
            };
            let Some(c) = containers
                .iter()
                .find(|c| c.service.as_deref() == Some(name.as_str()))
            else {
                out.detail = format!("no container (expected {})", s.container_name);
                services.push(out);
                continue;
            };
            out.container = c.name.clone();
            // The image matters only to a service without its own probe.
            let has_healthcheck = s.health.is_none()
                && matches!(rt.inspect_image(&c.image_id).await, Ok(Some(i)) if i.has_healthcheck);
            let probe = effective_probe(s, has_healthcheck);
            if let Some(p) = &probe {
                out.probe = p.to_string();
            }
            let details = match rt.inspect_container(&c.id, &s.networks[0]).await {
                Ok(d) => d,
                Err(e) => {
                    out.detail = e.to_string();
                    services.push(out);
                    continue;
                }
            };
            if !details.running {
                out.detail = format!(
                    "container {} is {} (exit code {})",
                    c.name, c.state, details.exit_code
                );
                services.push(out);
                continue;
            }
            let timeout = s
                .health
                .as_ref()
                .map(|h| h.timeout)
                .unwrap_or(std::time::Duration::from_secs(2));
            let started = Instant::now();
            let r = match &probe {
                Some(p) => rt.probe(&details, p, timeout).await,
                None => ProbeResult::new(true, "container running"),
            };
            out.response_ms = started.elapsed().as_millis();
            out.healthy = r.ok;
            out.detail = r.detail;
            out.facts = r.facts.into_iter().collect();
            services.push(out);
        }
    }
    Ok(CheckReport {
        project: d.project.name.clone(),
        healthy: services.iter().all(|s| s.healthy),
        services,
    })
}

impl CheckReport {
    /// The runbook's health_check.sh output, one line per check.
    pub fn text(&self) -> String {
        let mut out = format!("Health check of project {:?}\n", self.project);
        let mark = |ok: bool| if ok { "✓" } else { "✗" };
        for s in &self.services {
            if s.healthy {
                out.push_str(&format!(
                    "{} {} is healthy (response time: {}ms): {}\n",
                    mark(true),
                    s.service,
                    s.response_ms,
                    s.detail
                ));
            } else {
                out.push_str(&format!(
                    "{} {} is NOT healthy ({}): {}\n",
                    mark(false),
                    s.service,
                    s.probe,
                    s.detail
                ));
            }
        }
        let dbs: Vec<&ServiceCheck> = self.services.iter().filter(|s| s.database).collect();
        if !dbs.is_empty() {
            out.push_str("Database connectivity:\n");
            for s in dbs {
                out.push_str(&format!(
                    "{} {}: database connection {}\n",
                    mark(s.healthy),
                    s.service,
                    if s.healthy { "successful" } else { "failed" }
                ));
                if let Some(t) = s.facts.get("tables") {
                    out.push_str(&format!(
                        "{} {}: can execute queries ({t} tables found, PostgreSQL {})\n",
                        mark(true),
                        s.service,
                        s.facts
                            .get("server_version")
                            .map(String::as_str)
                            .unwrap_or("?")
                    ));
                }
            }
        }
        let failed = self.services.iter().filter(|s| !s.healthy).count();
        if failed == 0 {
            out.push_str("All checks passed.\n");
        } else {
            out.push_str(&format!(
                "{failed} of {} services failed their check.\n",
                self.services.len()
            ));
        }
        out
    }
}
