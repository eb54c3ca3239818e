//! Configs and secrets: a service's files as Swarm configs and secrets, named by their
//! content's hash ([`crate::spec::SwarmFile::swarm_name`]).
//!
//! Swarm's configs and secrets are immutable, so one is never updated: a changed file is a
//! new name, made before the service update that points at it. An existing one of the
//! same name is reused, so a resume, a revert or another service with the same file makes
//! nothing twice. A revert to an older generation finds its old secret by that name: the
//! store holds only a secret's hash, never its content.

use std::collections::{BTreeSet, HashMap};

use base64::Engine as _;
use bollard::models::{ConfigSpec, SecretSpec};
use bollard::query_parameters::{ListConfigsOptionsBuilder, ListSecretsOptionsBuilder};
use sha2::Digest;

use super::Swarm;
use super::spec::{FileKind, files};
use crate::converge::Failure;
use crate::runtime::RuntimeError;
use crate::runtime::docker::api;
use crate::spec::{DesiredState, LABEL_PROJECT, Service, SwarmFile};

/// How many of the newest generations keep their configs and secrets from a prune.
pub const KEEP_GENERATIONS: usize = 5;

impl FileKind {
    fn word(self) -> &'static str {
        match self {
            FileKind::Config => "config",
            FileKind::Secret => "secret",
        }
    }
}

/// The ID of every config and secret service `s` uses, by Swarm name: found, or made.
pub async fn ensure(
    sw: &Swarm,
    desired: &DesiredState,
    s: &Service,
) -> Result<std::collections::BTreeMap<String, String>, Failure> {
    let mut ids = std::collections::BTreeMap::new();
    for (name, kind, f) in files(desired, s) {
        let id = match find(sw, kind, &name).await.map_err(Failure::of)? {
            Some(id) => id,
            None => create(sw, desired, kind, &name, f).await?,
        };
        ids.insert(name, id);
    }
    Ok(ids)
}

/// The ID of the config or secret named exactly `name`, if Swarm has it.
async fn find(sw: &Swarm, kind: FileKind, name: &str) -> Result<Option<String>, RuntimeError> {
    let filters = HashMap::from([("name", vec![name.to_string()])]);
    let context = || format!("looking for {} {name}", kind.word());
    // Swarm's name filter matches a prefix: the exact name is picked here.
    Ok(match kind {
        FileKind::Config => sw
            .docker
            .list_configs(Some(
                ListConfigsOptionsBuilder::new().filters(&filters).build(),
            ))
            .await
            .map_err(api(context()))?
            .into_iter()
            .find(|c| c.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(name))
            .and_then(|c| c.id),
        FileKind::Secret => sw
            .docker
            .list_secrets(Some(
                ListSecretsOptionsBuilder::new().filters(&filters).build(),
            ))
            .await
            .map_err(api(context()))?
            .into_iter()
            .find(|c| c.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(name))
            .and_then(|c| c.id),
    })
}

/// Make the config or secret `name` from the content read at load time, or (a stored
/// generation has only the hash) from its source file if that still hashes the same.
async fn create(
    sw: &Swarm,
    desired: &DesiredState,
    kind: FileKind,
    name: &str,
    f: &SwarmFile,
) -> Result<String, Failure> {
    let bytes = match &f.content {
        Some(c) => c.0.clone(),
        None => {
            let read = std::fs::read(&f.source).ok();
            match read.filter(|b| format!("{:x}", sha2::Sha256::digest(b)) == f.sha256) {
                Some(b) => b,
                None => {
                    return Err(Failure::Gate(format!(
                        "{} {name} is not in the swarm any more, and {} no longer holds the content it was made from (sha256 {}): it cannot be made again",
                        kind.word(),
                        f.source.display(),
                        &f.sha256[..f.sha256.len().min(12)]
                    )));
                }
            }
        }
    };
    let data = Some(base64::engine::general_purpose::STANDARD.encode(&bytes));
    let labels = Some(HashMap::from([(
        LABEL_PROJECT.to_string(),
        desired.project.name.clone(),
    )]));
    let made = match kind {
        FileKind::Config => {
            sw.docker
                .create_config(ConfigSpec {
                    name: Some(name.to_string()),
                    labels,
                    data,
                    ..Default::default()
                })
                .await
        }
        FileKind::Secret => {
            sw.docker
                .create_secret(SecretSpec {
                    name: Some(name.to_string()),
                    labels,
                    data,
                    ..Default::default()
                })
                .await
        }
    };
    match made {
        Ok(r) => Ok(r.id),
        // Made meanwhile by a service beside this one, with the same content (same name).
        Err(e) if e.to_string().contains("already exists") => find(sw, kind, name)
            .await
            .map_err(Failure::of)?
            .ok_or_else(|| {
                Failure::Gate(format!("{} {name} vanished as it was made", kind.word()))
            }),
        Err(e) => Err(Failure::of(api(format!(
            "creating {} {name} (from {})",
            kind.word(),
            f.source.display()
        ))(e))),
    }
}

/// Remove the project's configs and secrets that none of `kept` (the desired states of
/// the newest generations) names, nor any of the project's services uses now. Best
/// effort: one Swarm will not remove (still in use) stays for the next prune.
pub async fn prune(sw: &Swarm, project: &str, kept: &[DesiredState]) -> Vec<String> {
    let mut keep: BTreeSet<String> = kept
        .iter()
        .flat_map(|d| {
            d.services
                .values()
                .flat_map(|s| files(d, s).into_iter().map(|(n, _, _)| n))
                .collect::<Vec<_>>()
        })
        .collect();
    let Ok(services) = sw.services(project).await else {
        return Vec::new();
    };
    for s in services {
        let c = s
            .spec
            .and_then(|sp| sp.task_template)
            .and_then(|t| t.container_spec)
            .unwrap_or_default();
        keep.extend(
            c.configs
                .unwrap_or_default()
                .into_iter()
                .filter_map(|x| x.config_name),
        );
        keep.extend(
            c.secrets
                .unwrap_or_default()
                .into_iter()
                .filter_map(|x| x.secret_name),
        );
    }
    let filters = HashMap::from([("label", vec![format!("{LABEL_PROJECT}={project}")])]);
    let mut removed = Vec::new();
    if let Ok(configs) = sw
        .docker
        .list_configs(Some(
            ListConfigsOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
    {
        for c in configs {
            let (Some(id), Some(name)) = (c.id, c.spec.and_then(|s| s.name)) else {
                continue;
            };
            if !keep.contains(&name) && sw.docker.delete_config(&id).await.is_ok() {
                removed.push(name);
            }
        }
    }
    if let Ok(secrets) = sw
        .docker
        .list_secrets(Some(
            ListSecretsOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
    {
        for c in secrets {
            let (Some(id), Some(name)) = (c.id, c.spec.and_then(|s| s.name)) else {
                continue;
            };
            if !keep.contains(&name) && sw.docker.delete_secret(&id).await.is_ok() {
                removed.push(name);
            }
        }
    }
    removed
}
