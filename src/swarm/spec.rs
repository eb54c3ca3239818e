//! A desired service as a Swarm `ServiceSpec`: pure, so each choice is tested here.
//!
//! - The image is named by registry digest (`repo@sha256:…`): every node pulls exactly
//!   what the generation pins, whatever the tag points at by then.
//! - `UpdateConfig.FailureAction = pause` and no `RollbackConfig`: Swarm never rolls a
//!   service back on its own; a failed gate reverts the whole stack, berth's way.
//! - berth's probes reach every task through a port of the task's own node: the probe
//!   port is published in `host` mode with no fixed number, so Swarm gives each task its
//!   own (two replicas on one node do not collide), read back from the task's
//!   `PortStatus` (docs/swarm.md, "How probes reach the tasks").

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, Limit, Mount, MountType, MountVolumeOptions, NetworkAttachmentConfig,
    ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, ServiceSpecUpdateConfig,
    ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum, TaskSpec,
    TaskSpecContainerSpec, TaskSpecContainerSpecConfigs, TaskSpecContainerSpecFile,
    TaskSpecContainerSpecFile1, TaskSpecContainerSpecSecrets, TaskSpecPlacement,
    TaskSpecPlacementPreferences, TaskSpecPlacementSpread, TaskSpecResources,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};

use super::{LABEL_IMAGE_ID, LABEL_SPEC_HASH};
use crate::hash::config_hash;
use crate::spec::{
    DesiredState, LABEL_CONFIG_HASH, LABEL_GENERATION, LABEL_PROJECT, LABEL_SERVICE, Probe,
    Service, SwarmFile, UpdateOrder, Volume,
};

/// The name berth gives the published probe port, so it is told from the service's own.
pub const PROBE_PORT_NAME: &str = "berth-probe";

/// The image a service runs, by ID and by the registry digest every node pulls.
pub struct Image<'a> {
    pub id: &'a str,
    pub digest_reference: &'a str,
}

/// The port a network probe connects to; None for a probe Swarm itself answers (the
/// image's HEALTHCHECK) or none at all.
pub fn probe_port(probe: Option<&Probe>) -> Option<u16> {
    match probe? {
        Probe::Tcp { port }
        | Probe::Http { port, .. }
        | Probe::Postgres { port, .. }
        | Probe::Redis { port, .. } => Some(*port),
        Probe::Exec { .. } | Probe::Docker => None,
    }
}

/// The labels a task's container carries: enough to tell the tasks of one spec
/// (generation and config hash) from those of the one before. Not `berth.project`: the
/// one-host commands own containers by that label, and these are Swarm's.
pub fn task_labels(s: &Service, generation: i64) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = s.labels.clone();
    labels.insert(LABEL_SERVICE.into(), s.name.clone());
    labels.insert(LABEL_CONFIG_HASH.into(), config_hash(s));
    labels.insert(LABEL_GENERATION.into(), generation.to_string());
    labels
}

/// Whether a file goes to Swarm as a config or a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Config,
    Secret,
}

/// A service's configs and secrets, each with the Swarm name it goes by.
pub fn files<'a>(desired: &DesiredState, s: &'a Service) -> Vec<(String, FileKind, &'a SwarmFile)> {
    let name = |f: &SwarmFile| f.swarm_name(&desired.project.name, &s.name);
    s.swarm
        .configs
        .iter()
        .map(|f| (name(f), FileKind::Config, f))
        .chain(
            s.swarm
                .secrets
                .iter()
                .map(|f| (name(f), FileKind::Secret, f)),
        )
        .collect()
}

/// The Swarm spec of service `s` of `desired`, labelled with `generation`, running
/// `image`, attached to `networks` (network name as written → its ID), given its configs
/// and secrets (`file_ids`: Swarm name → ID; they are made before the service).
pub fn service_spec(
    desired: &DesiredState,
    s: &Service,
    image: &Image<'_>,
    generation: i64,
    networks: &BTreeMap<String, String>,
    file_ids: &BTreeMap<String, String>,
) -> ServiceSpec {
    let mut labels: HashMap<String, String> = s.labels.clone().into_iter().collect();
    labels.insert(LABEL_PROJECT.into(), desired.project.name.clone());
    labels.insert(LABEL_SERVICE.into(), s.name.clone());
    labels.insert(LABEL_CONFIG_HASH.into(), config_hash(s));
    labels.insert(LABEL_GENERATION.into(), generation.to_string());
    labels.insert(LABEL_IMAGE_ID.into(), image.id.to_string());
    let (_, min_healthy) = desired.gate_timing(s);
    let mut spec = ServiceSpec {
        name: Some(s.container_name.clone()),
        labels: Some(labels),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                configs: Some(configs(desired, s, file_ids)),
                secrets: Some(secrets(desired, s, file_ids)),
                ..container_spec(desired, s, image, generation)
            }),
            resources: s.mem_limit.map(|m| TaskSpecResources {
                limits: Some(Limit {
                    memory_bytes: Some(m as i64),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            restart_policy: Some(restart_policy(&s.restart)),
            placement: Some(placement(s)),
            networks: Some(
                s.networks
                    .iter()
                    .map(|n| NetworkAttachmentConfig {
                        target: Some(networks.get(n).cloned().unwrap_or_else(|| n.clone())),
                        // Other services reach it by its service name, as on one host.
                        aliases: Some(vec![s.name.clone()]),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(s.swarm.replicas as i64),
            }),
            ..Default::default()
        }),
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(1),
            // Never Swarm's rollback: a failed update stops where it is, and berth's gate
            // decides (and reverts the whole stack).
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::PAUSE),
            monitor: Some(min_healthy.as_nanos().min(i64::MAX as u128) as i64),
            order: s.swarm.update_order.map(|o| match o {
                UpdateOrder::StartFirst => ServiceSpecUpdateConfigOrderEnum::START_FIRST,
                UpdateOrder::StopFirst => ServiceSpecUpdateConfigOrderEnum::STOP_FIRST,
            }),
            ..Default::default()
        }),
        rollback_config: None,
        endpoint_spec: Some(EndpointSpec {
            mode: None,
            ports: Some(ports(s)),
        }),
        ..Default::default()
    };
    let hash = spec_hash(&spec);
    if let Some(l) = spec.labels.as_mut() {
        l.insert(LABEL_SPEC_HASH.into(), hash);
    }
    spec
}

/// A hash of what berth sets in a service's spec, read the same way from the spec it
/// sends and from the spec Swarm holds: a `docker service update` by hand changes it
/// while berth's labels (and with them the config hash) stay as they were. Only the
/// fields berth writes are read, and an empty value counts as absent (Swarm leaves out
/// what is empty, as Go's `omitempty` does), so Swarm's own defaults are not drift.
pub fn spec_hash(spec: &ServiceSpec) -> String {
    use sha2::Digest;
    let task = spec.task_template.clone().unwrap_or_default();
    let c = task.container_spec.unwrap_or_default();
    let view = serde_json::json!({
        "image": c.image,
        "labels": c.labels,
        "command": c.command,
        "args": c.args,
        "env": c.env,
        "dir": c.dir,
        "user": c.user,
        "hosts": c.hosts,
        "mounts": c.mounts.unwrap_or_default().iter().map(|m| serde_json::json!([
            m.typ.map(|t| t.to_string()), m.source, m.target, m.read_only
        ])).collect::<Vec<_>>(),
        "configs": c.configs.unwrap_or_default().iter().map(|x| serde_json::json!([
            x.config_name, x.file.as_ref().and_then(|f| f.name.clone())
        ])).collect::<Vec<_>>(),
        "secrets": c.secrets.unwrap_or_default().iter().map(|x| serde_json::json!([
            x.secret_name, x.file.as_ref().and_then(|f| f.name.clone())
        ])).collect::<Vec<_>>(),
        "memory": task.resources.and_then(|r| r.limits).and_then(|l| l.memory_bytes),
        "restart": task.restart_policy.and_then(|r| r.condition).map(|c| c.to_string()),
        "placement": task.placement.map(|p| serde_json::json!([p.constraints, p.max_replicas])),
        "networks": task.networks.unwrap_or_default().iter().map(|n| serde_json::json!([
            n.target, n.aliases
        ])).collect::<Vec<_>>(),
        "replicas": spec.mode.as_ref().and_then(|m| m.replicated.as_ref()).and_then(|r| r.replicas),
        "ports": spec.endpoint_spec.as_ref().and_then(|e| e.ports.clone()).unwrap_or_default().iter().map(|p| serde_json::json!([
            p.name, p.target_port, p.published_port, p.publish_mode.map(|m| m.to_string()), p.protocol.map(|x| x.to_string())
        ])).collect::<Vec<_>>(),
    });
    let json = serde_json::to_vec(&without_empty(view)).expect("a JSON value serializes");
    format!("{:x}", sha2::Sha256::digest(json))
}

/// `v` with null, false, 0, "", [] and {} left out of objects (and arrays' such members
/// kept in place as null, so positions still count).
fn without_empty(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    };
    match v {
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (k, without_empty(v)))
                .filter(|(_, v)| !empty(v))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.into_iter()
                .map(without_empty)
                .map(|v| if empty(&v) { Value::Null } else { v })
                .collect(),
        ),
        other => other,
    }
}

fn container_spec(
    desired: &DesiredState,
    s: &Service,
    image: &Image<'_>,
    generation: i64,
) -> TaskSpecContainerSpec {
    TaskSpecContainerSpec {
        image: Some(image.digest_reference.to_string()),
        labels: Some(task_labels(s, generation).into_iter().collect()),
        command: s.entrypoint.clone(),
        args: s.command.clone(),
        env: Some(
            s.environment
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        ),
        dir: s.working_dir.clone(),
        user: s.user.clone(),
        // Swarm writes hosts entries as "IP NAME", compose as "NAME:IP".
        hosts: (!s.extra_hosts.is_empty()).then(|| {
            s.extra_hosts
                .iter()
                .filter_map(|e| e.split_once(':'))
                .map(|(host, ip)| format!("{ip} {host}"))
                .collect()
        }),
        mounts: Some(
            s.volumes
                .iter()
                .map(|v| match v {
                    Volume::Named {
                        name,
                        target,
                        read_only,
                    } => Mount {
                        typ: Some(MountType::VOLUME),
                        source: Some(name.clone()),
                        target: Some(target.clone()),
                        read_only: Some(*read_only),
                        volume_options: Some(MountVolumeOptions {
                            labels: Some(HashMap::from([(
                                LABEL_PROJECT.to_string(),
                                desired.project.name.clone(),
                            )])),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    Volume::Bind {
                        source,
                        target,
                        read_only,
                    } => Mount {
                        typ: Some(MountType::BIND),
                        source: Some(source.display().to_string()),
                        target: Some(target.clone()),
                        read_only: Some(*read_only),
                        ..Default::default()
                    },
                })
                .collect(),
        ),
        ..Default::default()
    }
}

/// Configs as files in the task, root's and readable by every user (as Swarm's default).
fn configs(
    desired: &DesiredState,
    s: &Service,
    file_ids: &BTreeMap<String, String>,
) -> Vec<TaskSpecContainerSpecConfigs> {
    files(desired, s)
        .into_iter()
        .filter(|(_, kind, _)| *kind == FileKind::Config)
        .map(|(name, _, f)| TaskSpecContainerSpecConfigs {
            file: Some(TaskSpecContainerSpecFile1 {
                name: Some(f.target.clone()),
                uid: Some("0".into()),
                gid: Some("0".into()),
                mode: Some(0o444),
            }),
            config_id: file_ids.get(&name).cloned(),
            config_name: Some(name),
            ..Default::default()
        })
        .collect()
}

/// Secrets in the task's /run/secrets/ (a bare name) or at an absolute path.
fn secrets(
    desired: &DesiredState,
    s: &Service,
    file_ids: &BTreeMap<String, String>,
) -> Vec<TaskSpecContainerSpecSecrets> {
    files(desired, s)
        .into_iter()
        .filter(|(_, kind, _)| *kind == FileKind::Secret)
        .map(|(name, _, f)| TaskSpecContainerSpecSecrets {
            file: Some(TaskSpecContainerSpecFile {
                name: Some(f.target.clone()),
                uid: Some("0".into()),
                gid: Some("0".into()),
                mode: Some(0o444),
            }),
            secret_id: file_ids.get(&name).cloned(),
            secret_name: Some(name),
        })
        .collect()
}

/// Compose's restart words as Swarm's restart conditions.
fn restart_policy(restart: &str) -> TaskSpecRestartPolicy {
    let (condition, max_attempts) = match restart {
        "no" => (TaskSpecRestartPolicyConditionEnum::NONE, None),
        r if r.starts_with("on-failure") => (
            TaskSpecRestartPolicyConditionEnum::ON_FAILURE,
            r.strip_prefix("on-failure:").and_then(|n| n.parse().ok()),
        ),
        _ => (TaskSpecRestartPolicyConditionEnum::ANY, None),
    };
    TaskSpecRestartPolicy {
        condition: Some(condition),
        max_attempts,
        ..Default::default()
    }
}

fn placement(s: &Service) -> TaskSpecPlacement {
    let p = &s.swarm.placement;
    TaskSpecPlacement {
        constraints: Some(p.constraints.clone()),
        preferences: Some(
            p.preferences
                .iter()
                .map(|d| TaskSpecPlacementPreferences {
                    spread: Some(TaskSpecPlacementSpread {
                        spread_descriptor: Some(d.clone()),
                    }),
                })
                .collect(),
        ),
        max_replicas: p.max_replicas_per_node.map(|n| n as i64),
        ..Default::default()
    }
}

/// The service's own ports through Swarm's routing mesh, and the probe port on each
/// task's node (host mode, a port Swarm picks per task).
fn ports(s: &Service) -> Vec<EndpointPortConfig> {
    let protocol = |p: &str| match p {
        "udp" => EndpointPortConfigProtocolEnum::UDP,
        _ => EndpointPortConfigProtocolEnum::TCP,
    };
    let mut ports: Vec<EndpointPortConfig> = s
        .ports
        .iter()
        .map(|p| EndpointPortConfig {
            protocol: Some(protocol(&p.protocol)),
            target_port: Some(p.container.into()),
            published_port: p.host.map(Into::into),
            publish_mode: Some(EndpointPortConfigPublishModeEnum::INGRESS),
            ..Default::default()
        })
        .collect();
    if let Some(port) = probe_port(s.health.as_ref().map(|h| &h.probe)) {
        ports.push(EndpointPortConfig {
            name: Some(PROBE_PORT_NAME.into()),
            protocol: Some(EndpointPortConfigProtocolEnum::TCP),
            target_port: Some(port.into()),
            published_port: None,
            publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
        });
    }
    ports
}

/// The registry digest reference of `reference` among an image's `RepoDigests`: the one
/// of the same repository (`127.0.0.1:5000/app:1` → `127.0.0.1:5000/app@sha256:…`).
pub fn digest_reference(reference: &str, repo_digests: &[String]) -> Option<String> {
    let repo = repository(reference);
    repo_digests
        .iter()
        .find(|d| d.split_once('@').is_some_and(|(r, _)| r == repo))
        .cloned()
}

/// A reference without its tag or digest.
fn repository(reference: &str) -> &str {
    let name = reference.split_once('@').map_or(reference, |(n, _)| n);
    match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(extra: &str) -> DesiredState {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("berth.toml");
        std::fs::write(
            &f,
            format!(
                r#"
[project]
name = "shop"
engine = "swarm"
[rollout]
min_healthy_time = "2s"
[services.app]
image = "127.0.0.1:5000/app:1"
replicas = 2
health = {{ probe = "http", port = 8080, path = "/health" }}
{extra}
"#
            ),
        )
        .unwrap();
        crate::spec::load_with_env(&f, &Default::default(), &Default::default()).unwrap()
    }

    fn spec_of(d: &DesiredState) -> ServiceSpec {
        let image = Image {
            id: "sha256:abc",
            digest_reference: "127.0.0.1:5000/app@sha256:def",
        };
        let networks = BTreeMap::from([("shop_default".to_string(), "net1".to_string())]);
        service_spec(
            d,
            &d.services["app"],
            &image,
            7,
            &networks,
            &BTreeMap::new(),
        )
    }

    #[test]
    fn a_service_runs_its_replicas_by_digest_and_never_asks_swarm_to_roll_back() {
        let d = desired("update_order = \"start-first\"");
        let spec = spec_of(&d);
        let task = spec.task_template.clone().unwrap();
        let container = task.container_spec.unwrap();
        assert_eq!(
            container.image.as_deref(),
            Some("127.0.0.1:5000/app@sha256:def")
        );
        assert_eq!(spec.mode.unwrap().replicated.unwrap().replicas, Some(2));
        let update = spec.update_config.unwrap();
        assert_eq!(
            update.failure_action,
            Some(ServiceSpecUpdateConfigFailureActionEnum::PAUSE)
        );
        assert_eq!(
            update.order,
            Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST)
        );
        assert_eq!(update.monitor, Some(2_000_000_000));
        assert!(spec.rollback_config.is_none());
        let labels = spec.labels.unwrap();
        assert_eq!(labels[LABEL_GENERATION], "7");
        assert_eq!(labels[LABEL_IMAGE_ID], "sha256:abc");
        assert_eq!(labels[LABEL_PROJECT], "shop");
        let task_labels = container.labels.unwrap();
        assert_eq!(task_labels[LABEL_GENERATION], "7");
        assert!(!task_labels.contains_key(LABEL_PROJECT));
        let nets = task.networks.unwrap();
        assert_eq!(nets[0].target.as_deref(), Some("net1"));
        assert_eq!(nets[0].aliases, Some(vec!["app".to_string()]));
    }

    fn with_config(content: &str) -> DesiredState {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.yml"), content).unwrap();
        let f = dir.path().join("berth.toml");
        std::fs::write(
            &f,
            r#"
[project]
name = "shop"
engine = "swarm"
[services.app]
image = "127.0.0.1:5000/app:1"
configs = [{ source = "app.yml", target = "/etc/app.yml" }]
[services.other]
image = "127.0.0.1:5000/app:1"
"#,
        )
        .unwrap();
        crate::spec::load_with_env(&f, &Default::default(), &Default::default()).unwrap()
    }

    #[test]
    fn a_config_is_named_by_its_content_and_a_change_touches_only_its_service() {
        let (one, two) = (with_config("level: 1\n"), with_config("level: 2\n"));
        let names = |d: &DesiredState| -> Vec<String> {
            files(d, &d.services["app"])
                .into_iter()
                .map(|(n, _, _)| n)
                .collect()
        };
        let (n1, n2) = (names(&one), names(&two));
        assert_eq!(n1.len(), 1);
        assert!(n1[0].starts_with("shop_app_app.yml_"), "{n1:?}");
        assert_eq!(n1[0].len(), "shop_app_app.yml_".len() + 12);
        assert_ne!(n1, n2, "new content, new name");
        assert_ne!(
            config_hash(&one.services["app"]),
            config_hash(&two.services["app"])
        );
        assert_eq!(
            config_hash(&one.services["other"]),
            config_hash(&two.services["other"])
        );
        let ids = BTreeMap::from([(n1[0].clone(), "cfg1".to_string())]);
        let image = Image {
            id: "sha256:abc",
            digest_reference: "127.0.0.1:5000/app@sha256:def",
        };
        let spec = service_spec(
            &one,
            &one.services["app"],
            &image,
            1,
            &BTreeMap::new(),
            &ids,
        );
        let configs = spec
            .task_template
            .unwrap()
            .container_spec
            .unwrap()
            .configs
            .unwrap();
        assert_eq!(configs[0].config_id.as_deref(), Some("cfg1"));
        assert_eq!(
            configs[0].file.as_ref().unwrap().name.as_deref(),
            Some("/etc/app.yml")
        );
        // The stored desired state holds the hash, not the content.
        let stored = serde_json::to_string(&one).unwrap();
        assert!(!stored.contains("level: 1"), "{stored}");
    }

    #[test]
    fn a_long_name_keeps_swarms_limit_and_the_whole_hash() {
        let f = crate::spec::SwarmFile {
            source: "/x/a very long file name with spaces and more and more and more.yml".into(),
            target: "/etc/x".into(),
            sha256: "0123456789abcdef".repeat(4),
            content: None,
        };
        let name = f.swarm_name("a-rather-long-project-name", "a-rather-long-service-name");
        assert!(name.len() <= 64, "{name}");
        assert!(name.ends_with("_0123456789ab"), "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
            "{name}"
        );
    }

    #[test]
    fn a_hand_update_changes_the_spec_hash_and_swarms_empty_fields_do_not() {
        let d = desired("");
        let sent = spec_of(&d);
        let label = sent.labels.as_ref().unwrap()[LABEL_SPEC_HASH].clone();
        assert_eq!(spec_hash(&sent), label);
        // As Swarm hands it back: empty lists and false flags left out, its own defaults.
        let mut held = sent.clone();
        let task = held.task_template.as_mut().unwrap();
        let c = task.container_spec.as_mut().unwrap();
        c.mounts = None;
        c.configs = None;
        c.secrets = None;
        c.isolation = Some(bollard::models::TaskSpecContainerSpecIsolationEnum::DEFAULT);
        task.force_update = Some(0);
        assert_eq!(spec_hash(&held), label, "Swarm's normal form is not drift");
        // `docker service update --env-add X=1`: berth's labels stay, the spec differs.
        let c = held
            .task_template
            .as_mut()
            .unwrap()
            .container_spec
            .as_mut()
            .unwrap();
        c.env.as_mut().unwrap().push("X=1".into());
        assert_ne!(spec_hash(&held), label);
    }

    #[test]
    fn the_probe_port_is_published_per_task_on_its_node() {
        let d = desired("");
        let ports = spec_of(&d).endpoint_spec.unwrap().ports.unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].name.as_deref(), Some(PROBE_PORT_NAME));
        assert_eq!(ports[0].target_port, Some(8080));
        assert_eq!(ports[0].published_port, None);
        assert_eq!(
            ports[0].publish_mode,
            Some(EndpointPortConfigPublishModeEnum::HOST)
        );
    }

    #[test]
    fn the_digest_reference_is_the_one_of_the_same_repository() {
        let digests = vec![
            "other/app@sha256:111".to_string(),
            "127.0.0.1:5000/app@sha256:222".to_string(),
        ];
        assert_eq!(
            digest_reference("127.0.0.1:5000/app:1", &digests).as_deref(),
            Some("127.0.0.1:5000/app@sha256:222")
        );
        assert_eq!(
            digest_reference("127.0.0.1:5000/app", &digests).as_deref(),
            Some("127.0.0.1:5000/app@sha256:222")
        );
        assert_eq!(digest_reference("app:1", &digests), None);
        assert_eq!(repository("localhost:5000/a/b:tag"), "localhost:5000/a/b");
        assert_eq!(repository("localhost:5000/a"), "localhost:5000/a");
    }
}
