//! The `berth.config-hash` label (docs/design.md §3).
//!
//! SHA-256 over the fields that change the container. `depends_on`, `profiles`, `health`
//! and `build` are left out: they change how berth orders and gates a service, not the
//! container itself, so editing them must not recreate anything.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::spec::Service;

#[derive(Serialize)]
struct Hashed<'a> {
    image: &'a str,
    command: &'a Option<Vec<String>>,
    entrypoint: &'a Option<Vec<String>>,
    environment: &'a std::collections::BTreeMap<String, String>,
    ports: &'a [crate::spec::Port],
    volumes: &'a [crate::spec::Volume],
    networks: &'a [String],
    restart: &'a str,
    labels: &'a std::collections::BTreeMap<String, String>,
    user: &'a Option<String>,
    working_dir: &'a Option<String>,
    container_name: &'a str,
    /// Left out when empty, so hashes of services without it did not change.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    extra_hosts: &'a [String],
    /// Left out when unset, likewise: a changed limit recreates the container.
    #[serde(skip_serializing_if = "Option::is_none")]
    mem_limit: &'a Option<u64>,
    /// Swarm's replicas, placement and update order, likewise left out at their defaults.
    #[serde(skip_serializing_if = "crate::spec::SwarmKeys::is_default")]
    swarm: &'a crate::spec::SwarmKeys,
}

/// The config hash of a service, hex encoded.
pub fn config_hash(s: &Service) -> String {
    let h = Hashed {
        image: &s.image,
        command: &s.command,
        entrypoint: &s.entrypoint,
        environment: &s.environment,
        ports: &s.ports,
        volumes: &s.volumes,
        networks: &s.networks,
        restart: &s.restart,
        labels: &s.labels,
        user: &s.user,
        working_dir: &s.working_dir,
        container_name: &s.container_name,
        extra_hosts: &s.extra_hosts,
        mem_limit: &s.mem_limit,
        swarm: &s.swarm,
    };
    let json = serde_json::to_vec(&h).expect("service spec serializes");
    format!("{:x}", Sha256::digest(json))
}

/// The identity of a resolved desired state: SHA-256 over the project, rollout, every
/// active service and the `[migrations]` block with their final values (after env files, the environment, profiles,
/// excludes, and build-context hashes). Poison is keyed on it, so fixing any input lifts
/// poison while a comment or a reordering of the files does not.
pub fn resolved_hash(d: &crate::spec::DesiredState) -> String {
    #[derive(Serialize)]
    struct Resolved<'a> {
        project: &'a crate::spec::Project,
        rollout: &'a crate::spec::Rollout,
        services: &'a std::collections::BTreeMap<String, Service>,
        /// Left out when there is no `[migrations]` block, so hashes of desired states
        /// without one did not change. Holds the migration files' hash: an edited
        /// migration is another desired state.
        #[serde(skip_serializing_if = "Option::is_none")]
        migrations: &'a Option<crate::spec::Migrations>,
    }
    let json = serde_json::to_vec(&Resolved {
        project: &d.project,
        rollout: &d.rollout,
        services: &d.services,
        migrations: &d.migrations,
    })
    .expect("desired state serializes");
    format!("{:x}", Sha256::digest(json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Service;

    fn svc() -> Service {
        Service {
            name: "app".into(),
            image: "fixture:test".into(),
            build: None,
            command: None,
            entrypoint: None,
            environment: [("A".to_string(), "1".to_string())].into(),
            ports: vec![],
            volumes: vec![],
            networks: vec!["net".into()],
            depends_on: vec![],
            restart: "no".into(),
            labels: Default::default(),
            user: None,
            working_dir: None,
            container_name: "p-app".into(),
            profiles: vec![],
            health: None,
            extra_hosts: vec![],
            pull_policy: Default::default(),
            mem_limit: None,
            swarm: Default::default(),
        }
    }

    #[test]
    fn a_memory_limit_changes_the_hash_and_no_limit_keeps_the_old_one() {
        let unlimited = config_hash(&svc());
        let mut b = svc();
        b.mem_limit = Some(64 * 1024 * 1024);
        assert_ne!(config_hash(&b), unlimited);
        // Hashes of services written before mem_limit existed do not move.
        assert_eq!(
            unlimited,
            config_hash(&Service {
                mem_limit: None,
                ..svc()
            })
        );
    }

    #[test]
    fn environment_changes_the_hash() {
        let mut b = svc();
        b.environment.insert("A".into(), "2".into());
        assert_ne!(config_hash(&svc()), config_hash(&b));
    }

    #[test]
    fn depends_on_and_profiles_do_not_change_the_hash() {
        let mut b = svc();
        b.depends_on = vec!["db".into()];
        b.profiles = vec!["tracing".into()];
        assert_eq!(config_hash(&svc()), config_hash(&b));
    }
}
