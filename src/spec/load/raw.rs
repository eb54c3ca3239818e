//! The desired-state file as serde reads it: spans (`Spanned`) on everything that a later
//! check may need to point at; `deny_unknown_fields` makes unknown keys errors with a
//! location.

use std::collections::BTreeMap;

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use toml::Spanned;

pub(super) type S = Spanned<String>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) project: Option<Spanned<RawProject>>,
    pub(super) rollout: Option<RawRollout>,
    pub(super) preflight: Option<Spanned<RawPreflight>>,
    pub(super) migrations: Option<Spanned<RawMigrations>>,
    #[serde(default)]
    pub(super) services: BTreeMap<S, Spanned<RawService>>,
    /// `[[notify]]` receivers: see `super::notify`.
    #[serde(default)]
    pub(super) notify: Vec<Spanned<super::notify::RawNotify>>,
}

/// The runbook's pre-flight (`validate_config.py`): see [`crate::preflight`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPreflight {
    #[serde(default)]
    pub(super) required_env: Vec<S>,
    /// Variable name -> the prefix its value must start with.
    #[serde(default)]
    pub(super) api_keys: BTreeMap<S, S>,
    /// Name of the variable holding a PostgreSQL URL that must parse.
    pub(super) database_url: Option<S>,
    pub(super) min_free_disk: Option<S>,
    pub(super) docker_min_version: Option<S>,
    /// Path (relative to the file) -> "755" or { mode = "700", owner = "999:999" }.
    #[serde(default)]
    pub(super) data_dirs: BTreeMap<S, Spanned<toml::Value>>,
}

/// The database migrations (docs/design.md §5): see [`crate::spec::Migrations`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMigrations {
    pub(super) service: S,
    pub(super) url: S,
    /// A directory of sqlx migrations, relative to the file (or `job`).
    pub(super) source: Option<S>,
    /// A migration job: a one-shot container that migrates (Alembic), instead of `source`.
    pub(super) job: Option<Spanned<RawJob>>,
    pub(super) backup: Option<bool>,
    pub(super) backup_dir: Option<S>,
    pub(super) retention: Option<S>,
    pub(super) lock_timeout: Option<S>,
    /// Data directories archived beside each dump, relative to the file.
    #[serde(default)]
    pub(super) snapshot: Vec<S>,
}

/// `[migrations.job]`: see [`crate::spec::MigrationJob`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJob {
    pub(super) image: S,
    pub(super) upgrade: Option<Spanned<StrOrList>>,
    pub(super) downgrade: Option<Spanned<StrOrList>>,
    #[serde(default)]
    pub(super) environment: BTreeMap<String, Spanned<Scalar>>,
    pub(super) version_table: Option<S>,
    pub(super) timeout: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProject {
    pub(super) name: S,
    pub(super) network: Option<S>,
    pub(super) env_file: Option<S>,
    #[serde(default)]
    pub(super) profiles: Vec<S>,
    /// `"docker"` or `"swarm"`: see `super::swarm`.
    pub(super) engine: Option<S>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRollout {
    pub(super) healthy_deadline: Option<S>,
    pub(super) min_healthy_time: Option<S>,
    pub(super) progress_deadline: Option<S>,
    pub(super) auto_revert: Option<bool>,
    pub(super) stability: Option<S>,
}

/// `command = "a b"` or `command = ["a", "b"]`. Deserialized by hand rather than with
/// `#[serde(untagged)]`, whose error ("data did not match any variant of untagged enum")
/// does not tell the person what to write.
pub(super) enum StrOrList {
    Str(String),
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for StrOrList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrOrList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StrOrList, E> {
                Ok(StrOrList::Str(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrOrList, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(StrOrList::List(items))
            }
        }
        d.deserialize_any(V)
    }
}

/// An environment, label or build-arg value: TOML scalars are accepted and turned into
/// their text, as compose does. Deserialized by hand for the same reason as [`StrOrList`].
pub(super) enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                i64::try_from(v)
                    .map(Scalar::Int)
                    .map_err(|_| E::custom("integer out of range"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBuild {
    pub(super) context: S,
    pub(super) dockerfile: Option<S>,
    #[serde(default)]
    pub(super) args: BTreeMap<String, Spanned<Scalar>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) image: Option<S>,
    pub(super) build: Option<Spanned<RawBuild>>,
    pub(super) command: Option<Spanned<StrOrList>>,
    pub(super) entrypoint: Option<Spanned<StrOrList>>,
    #[serde(default)]
    pub(super) environment: BTreeMap<String, Spanned<Scalar>>,
    pub(super) env_file: Option<S>,
    #[serde(default)]
    pub(super) ports: Vec<S>,
    #[serde(default)]
    pub(super) volumes: Vec<S>,
    #[serde(default)]
    pub(super) networks: Vec<S>,
    #[serde(default)]
    pub(super) depends_on: Vec<S>,
    pub(super) restart: Option<S>,
    #[serde(default)]
    pub(super) labels: BTreeMap<String, Spanned<Scalar>>,
    pub(super) user: Option<S>,
    pub(super) working_dir: Option<S>,
    pub(super) container_name: Option<S>,
    #[serde(default)]
    pub(super) profiles: Vec<S>,
    pub(super) health: Option<Spanned<RawHealth>>,
    #[serde(default)]
    pub(super) extra_hosts: Vec<S>,
    pub(super) pull_policy: Option<S>,
    pub(super) mem_limit: Option<S>,
    /// Swarm's keys (`super::swarm`): refused under `engine = "docker"`.
    pub(super) replicas: Option<Spanned<i64>>,
    pub(super) placement: Option<Spanned<super::swarm::RawPlacement>>,
    pub(super) update_order: Option<S>,
    #[serde(default)]
    pub(super) configs: Vec<Spanned<super::swarm::RawSwarmFile>>,
    #[serde(default)]
    pub(super) secrets: Vec<Spanned<super::swarm::RawSwarmFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub(super) probe: S,
    pub(super) port: Option<Spanned<i64>>,
    pub(super) path: Option<S>,
    pub(super) command: Option<Spanned<StrOrList>>,
    pub(super) interval: Option<S>,
    pub(super) timeout: Option<S>,
    pub(super) healthy_deadline: Option<S>,
    pub(super) min_healthy_time: Option<S>,
    pub(super) user: Option<S>,
    pub(super) password: Option<S>,
    pub(super) database: Option<S>,
    pub(super) expect_json: Option<BTreeMap<String, S>>,
}
