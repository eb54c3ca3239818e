//! The monitoring configuration under `config/` (runbook "Pre-Deployment Checklist" §5 and
//! "Monitoring and Alerting"): `prometheus.yml` and `alerts.yml` must pass `promtool`
//! (run inside berth-prometheus:2, mounted where the stack mounts them), a broken rule
//! file must make that check fail, and the provisioned Grafana dashboard must query the
//! provisioned Prometheus datasource for every key metric the runbook lists.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const PROMETHEUS_IMAGE: &str = "berth-prometheus:2";

/// The runbook's alert rules (group local_assistant_alerts).
const RUNBOOK_ALERTS: &[&str] = &[
    "HighErrorRate",
    "DatabaseConnectionsHigh",
    "RedisMemoryHigh",
    "ServiceDown",
];

/// The runbook's key metrics; each must be queried by some dashboard panel.
const RUNBOOK_METRICS: &[&str] = &[
    "up",
    "http_requests_total",
    "http_request_duration_seconds_bucket",
    "postgres_active_connections",
    "redis_memory_used_bytes",
    "chroma_collection_documents_total",
];

fn config(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(rel)
}

struct Promtool {
    ok: bool,
    output: String,
}

/// `promtool <args>` in the Prometheus image, with `prometheus_yml` and `alerts_yml`
/// mounted read-only at /etc/prometheus/, as desired-state/local-assistant.toml does.
fn promtool(prometheus_yml: &Path, alerts_yml: &Path, args: &[&str]) -> Promtool {
    common::require_images(&[PROMETHEUS_IMAGE], "scripts/build-images.sh prometheus");
    let mount = |host: &Path, target: &str| {
        let host = host
            .canonicalize()
            .unwrap_or_else(|e| panic!("{host:?}: {e}"));
        format!("{}:{target}:ro", host.display())
    };
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "promtool",
        ])
        .args([
            "-v",
            &mount(prometheus_yml, "/etc/prometheus/prometheus.yml"),
        ])
        .args(["-v", &mount(alerts_yml, "/etc/prometheus/alerts.yml")])
        .arg(PROMETHEUS_IMAGE)
        .args(args)
        .output()
        .expect("docker run failed to start");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "$ promtool {}\n{output}(exit {:?})",
        args.join(" "),
        out.status.code()
    );
    Promtool {
        ok: out.status.success(),
        output,
    }
}

/// Rules defined in a rule file: its `- alert:` and `- record:` entries.
fn rule_count(rules: &str) -> usize {
    rules
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("- alert:") || l.starts_with("- record:"))
        .count()
}

#[test]
fn alerts_yml_has_the_runbooks_rules() {
    let rules = std::fs::read_to_string(config("alerts.yml")).unwrap();
    assert!(rules.contains("- name: local_assistant_alerts"), "{rules}");
    for alert in RUNBOOK_ALERTS {
        assert!(
            rules.contains(&format!("- alert: {alert}\n")),
            "alerts.yml lacks the runbook's {alert} rule"
        );
    }
    assert!(rule_count(&rules) >= RUNBOOK_ALERTS.len());
}

#[test]
fn promtool_accepts_the_prometheus_config_and_its_rules() {
    let prometheus_yml = config("prometheus.yml");
    let alerts_yml = config("alerts.yml");
    let rules = rule_count(&std::fs::read_to_string(&alerts_yml).unwrap());
    let found = format!("SUCCESS: {rules} rules found");

    // `check config` also loads and checks every file in rule_files, so this proves
    // that `rule_files: ['alerts.yml']` resolves to the mounted alerts.yml.
    let run = promtool(
        &prometheus_yml,
        &alerts_yml,
        &["check", "config", "/etc/prometheus/prometheus.yml"],
    );
    assert!(run.ok, "promtool check config failed:\n{}", run.output);
    assert!(
        run.output.contains("SUCCESS: 1 rule files found"),
        "{}",
        run.output
    );
    assert!(
        run.output.contains("/etc/prometheus/alerts.yml"),
        "{}",
        run.output
    );
    assert!(run.output.contains(&found), "{}", run.output);

    let run = promtool(
        &prometheus_yml,
        &alerts_yml,
        &["check", "rules", "/etc/prometheus/alerts.yml"],
    );
    assert!(run.ok, "promtool check rules failed:\n{}", run.output);
    assert!(run.output.contains(&found), "{}", run.output);
}

#[test]
fn promtool_rejects_a_broken_copy_of_the_rules() {
    let rules = std::fs::read_to_string(config("alerts.yml")).unwrap();
    let good = "expr: postgres_active_connections > 80";
    assert!(rules.contains(good), "alerts.yml changed; update this test");
    // A comparison without its right-hand side: valid YAML, invalid PromQL.
    let broken = rules.replace(good, "expr: postgres_active_connections >");
    let dir = tempfile::tempdir().unwrap();
    let broken_yml = dir.path().join("alerts.yml");
    std::fs::write(&broken_yml, broken).unwrap();

    let prometheus_yml = config("prometheus.yml");
    let run = promtool(
        &prometheus_yml,
        &broken_yml,
        &["check", "rules", "/etc/prometheus/alerts.yml"],
    );
    assert!(
        !run.ok,
        "promtool accepted a broken rule file:\n{}",
        run.output
    );
    assert!(run.output.contains("FAILED"), "{}", run.output);
    assert!(
        run.output.contains("unexpected end of input"),
        "{}",
        run.output
    );

    let run = promtool(
        &prometheus_yml,
        &broken_yml,
        &["check", "config", "/etc/prometheus/prometheus.yml"],
    );
    assert!(
        !run.ok,
        "promtool accepted a config whose rule file is broken:\n{}",
        run.output
    );
}

#[test]
fn the_grafana_dashboard_queries_the_provisioned_prometheus_for_every_key_metric() {
    let datasources =
        std::fs::read_to_string(config("grafana/provisioning/datasources/prometheus.yml")).unwrap();
    assert!(
        datasources.lines().any(|l| l.trim() == "uid: prometheus"),
        "the provisioned datasource must have uid \"prometheus\":\n{datasources}"
    );
    let providers =
        std::fs::read_to_string(config("grafana/provisioning/dashboards/dashboards.yml")).unwrap();
    assert!(
        providers.contains("path: /etc/grafana/dashboards"),
        "{providers}"
    );

    let text = std::fs::read_to_string(config("grafana/dashboards/local-assistant.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard is not JSON");
    assert_eq!(dash["uid"], "local-assistant");
    assert_eq!(dash["schemaVersion"], 39);
    assert!(dash["title"].is_string());

    let panels = dash["panels"].as_array().expect("dashboard has no panels");
    assert!(!panels.is_empty());
    let mut ids = std::collections::BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "duplicate panel id in {title}"
        );
        assert_eq!(panel["datasource"]["uid"], "prometheus", "panel {title}");
        assert_eq!(panel["datasource"]["type"], "prometheus", "panel {title}");
        let targets = panel["targets"].as_array().expect("panel without targets");
        assert!(!targets.is_empty(), "panel {title} has no queries");
        for target in targets {
            if !target["datasource"].is_null() {
                assert_eq!(
                    target["datasource"]["uid"], "prometheus",
                    "a query of {title}"
                );
            }
            let expr = target["expr"].as_str().expect("query without expr");
            exprs.push(expr.to_string());
        }
    }
    for metric in RUNBOOK_METRICS {
        assert!(
            exprs.iter().any(|e| mentions(e, metric)),
            "no panel queries {metric}: {exprs:?}"
        );
    }
}

/// `expr` names `metric` as a whole identifier (so `up` is not found in `group_left`).
fn mentions(expr: &str, metric: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    expr.match_indices(metric).any(|(i, _)| {
        let before = expr[..i].chars().next_back();
        let after = expr[i + metric.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}
