//! The desired state: what the person wants running, resolved and validated.
//!
//! [`load`] reads one TOML file or a directory of `*.toml` files (name order), interpolates
//! `${VAR}` from the process environment and the project env file, and checks everything
//! docs/design.md §10 asks for. What comes out is a [`DesiredState`] in which every value
//! is final: the planner and the converger never see raw TOML. A desired state read from a
//! git commit is confined to what a commit may reach ([`trust`], docs/design.md §12).

pub mod duration;
pub mod interpolate;
mod load;
pub mod trust;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use load::env_file::env_lines;
pub use load::{check_port, load, load_with_env, normalize_path, parse_size, parse_version};
pub use trust::Grants;

/// Label keys berth puts on what it creates (docs/design.md §2).
pub const LABEL_PROJECT: &str = "berth.project";
pub const LABEL_SERVICE: &str = "berth.service";
pub const LABEL_CONFIG_HASH: &str = "berth.config-hash";
pub const LABEL_GENERATION: &str = "berth.generation";

/// A fully resolved desired state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredState {
    pub project: Project,
    pub rollout: Rollout,
    /// Active services only (profiles already applied), by service name.
    pub services: BTreeMap<String, Service>,
    /// SHA-256 of the source files' bytes and names: identifies "this desired state" in
    /// the generation that records it and in a build's context hash. Poisoning keys on
    /// what it resolved to instead (the generation's `resolved_hash`).
    pub source_hash: String,
    /// The files read, in the order read.
    pub files: Vec<PathBuf>,
    /// Every secret value the loader saw (env-file values, secret-looking keys' values,
    /// probe passwords, URL passwords, pre-flight API keys), including those that were
    /// interpolated into other fields. Never stored: a generation's JSON must not hold
    /// secrets in clear; [`DesiredState::redactor`] rebuilds what it can from the spec.
    #[serde(skip)]
    pub secret_values: Vec<String>,
    /// Per service, the environment keys whose values came from its `env_file` (names
    /// only, never values): those values are secrets even in a desired state read back
    /// from the store.
    #[serde(default)]
    pub env_file_keys: BTreeMap<String, BTreeSet<String>>,
    /// What `[preflight]` and the services ask of the host, checked by [`crate::preflight`]
    /// before anything changes. Not part of a generation's record.
    #[serde(skip)]
    pub preflight: Preflight,
    /// Where it came from when read from a git commit (`berth run --git`): recorded on the
    /// generation; not part of the resolved desired state.
    #[serde(skip)]
    pub origin: Option<Origin>,
    /// The `[migrations]` block, when there is one (docs/design.md §5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrations: Option<Migrations>,
    /// The `[[notify]]` receivers (docs/design.md §14). Kept with the generation (its
    /// events go to them) but outside the resolved hash and every config hash: adding a
    /// receiver changes no container and is no new generation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<crate::notify::Receiver>,
}

/// The git commit a desired state was read from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Origin {
    pub commit: String,
    pub subject: String,
}

/// What `depends_on` names to wait for the database migrations instead of a service.
pub const MIGRATIONS_NODE: &str = "migrations";

/// The `[migrations]` block: the database's schema as a directory of sqlx migrations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Migrations {
    /// The database service: migrations run once its gate passed.
    pub service: String,
    /// How the project's containers reach the database: its host is usually the service
    /// name, which only resolves on the project network. A secret (it holds a password).
    pub url: String,
    /// Absolute path of the directory of sqlx migrations (`NNNN_name.up.sql` /
    /// `NNNN_name.down.sql`); empty with a `job`.
    pub source: PathBuf,
    /// SHA-256 over the migration files as sqlx reads them (version, kind, checksum): an
    /// edited or added migration makes another resolved desired state.
    pub source_hash: String,
    /// Take a backup before applying pending migrations.
    pub backup: bool,
    /// Where backups go (absolute).
    pub backup_dir: PathBuf,
    /// How long backups are kept.
    pub retention: Duration,
    /// Data directories (absolute) that `berth backup` archives beside the dump as
    /// `<project>_<ts>.<dir name>.tar.gz` (the runbook copies `data/chroma`). Left out of
    /// the stored JSON when empty, so older desired states keep their hashes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshot: Vec<PathBuf>,
    /// How long a revert's down migrations (or the job's downgrade) wait for a lock
    /// before giving up, so that one blocked by the failed generation's still-running
    /// containers turns into a backup restore instead of a hang. Left out of the stored
    /// JSON at its default, so older desired states keep their hashes.
    #[serde(
        default = "default_lock_timeout",
        skip_serializing_if = "is_default_lock_timeout"
    )]
    pub lock_timeout: Duration,
    /// A migration job instead of a directory of sqlx migrations: migrations that ship in
    /// their own image (Alembic, Flyway, a framework's own command), run as a one-shot
    /// container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<MigrationJob>,
}

/// How long a revert's down migrations wait for a lock when `[migrations]` does not say.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

fn default_lock_timeout() -> Duration {
    DEFAULT_LOCK_TIMEOUT
}

fn is_default_lock_timeout(d: &Duration) -> bool {
    *d == DEFAULT_LOCK_TIMEOUT
}

/// `[migrations.job]`: migrations that live in their own image (the runbook's Alembic),
/// run by berth in a one-shot container on the database service's network: `upgrade` to
/// completion as the gate (its exit code decides, its output is kept), `downgrade` as the
/// revert, the container removed after. The container gets `DATABASE_URL` (the
/// `[migrations]` url) beside `environment`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationJob {
    pub image: String,
    /// The command that migrates to the newest revision: `alembic upgrade head`.
    pub upgrade: Vec<String>,
    /// The command that goes back to a revision, `{revision}` standing for it
    /// (`alembic downgrade {revision}`; `base` when the target had none). None: a revert
    /// restores the backup taken before the upgrade instead.
    pub downgrade: Option<Vec<String>>,
    pub environment: BTreeMap<String, String>,
    /// The table the tool records its revision in (`alembic_version`): berth reads it to
    /// record which revision each generation reached.
    pub version_table: String,
    /// How long a run (upgrade or downgrade) may take: past it the container is killed
    /// and the run fails (a gate failure for the upgrade), so a hung job never blocks the
    /// deploys after it. Left out of the stored JSON at its default, so older desired
    /// states keep their hashes.
    #[serde(
        default = "default_job_timeout",
        skip_serializing_if = "is_default_job_timeout"
    )]
    pub timeout: Duration,
}

/// How long a migration job may run when `[migrations.job]` does not say.
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(30 * 60);

fn default_job_timeout() -> Duration {
    DEFAULT_JOB_TIMEOUT
}

fn is_default_job_timeout(d: &Duration) -> bool {
    *d == DEFAULT_JOB_TIMEOUT
}

impl MigrationJob {
    /// The placeholder `downgrade` names the target revision with.
    pub const REVISION: &'static str = "{revision}";
    /// The revision of a database the tool has not migrated yet.
    pub const BASE: &'static str = "base";
}

/// Host checks from the runbook's pre-flight, each with the `FILE:LINE:COL` it came from
/// so a failure can point at it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Preflight {
    /// Directories to create where missing, with the mode they must have.
    pub data_dirs: Vec<DataDir>,
    /// Bytes that must be free on the filesystem holding the data directories (or the
    /// desired state when there are none).
    pub min_free_disk: Option<(u64, At)>,
    /// The oldest Docker Engine version accepted, e.g. "20.10".
    pub docker_min_version: Option<((u64, u64), At)>,
    /// Every published host port of an active service.
    pub host_ports: Vec<HostPort>,
    /// Where each active service's table is written, for a check about the service as a
    /// whole (the container berth runs in, [`crate::runtime::own`]).
    pub services: BTreeMap<String, At>,
    /// Where the desired state lives (for the free-disk check without data dirs).
    pub base_dir: PathBuf,
    /// Whether a `[preflight]` block was given at all.
    pub declared: bool,
    /// What the loader already checked against the environment (for the summary).
    pub required_env: usize,
    pub api_keys: usize,
    pub database_url: Option<String>,
}

/// Where in the desired state something was written.
#[derive(Debug, Clone, PartialEq)]
pub struct At {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
}

impl At {
    /// A diagnostic about the thing written here.
    pub fn diag(&self, message: impl Into<String>) -> crate::diag::Diagnostic {
        crate::diag::Diagnostic {
            file: self.file.clone(),
            line: self.line,
            col: self.col,
            message: message.into(),
        }
    }
}

/// Which of the desired state's services to run: `--profile` enables profiles,
/// `--exclude` leaves services out (a host that cannot get their images).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selection {
    pub profiles: Vec<String>,
    pub exclude: Vec<String>,
    /// Set when the desired state is read from a git commit's tree (`berth run --git`).
    pub overlay: Option<Overlay>,
}

/// Where the relative paths of a desired state read from a git commit's tree land: a path
/// the commit holds stays in its tree (`config/prometheus.yml`); one it does not (`.env`,
/// `data/`) is taken from the host directory that stands for the repository's root, at
/// the same place. A path that leaves the repository leaves the host directory the same
/// way. An absolute path stays as written. Where any of them may land is then checked
/// against the tree, the host directory and the operator's grants ([`Overlay::confine`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overlay {
    /// The commit's tree on disk.
    pub tree: PathBuf,
    /// The host directory standing for the repository's root.
    pub host: PathBuf,
    /// What the operator lets a commit reach beyond both (`--allow-host-path`,
    /// `--pass-env`).
    pub grants: Grants,
}

impl Overlay {
    /// `p` (absolute, normalized) as the overlay resolves it.
    pub fn place(&self, p: &std::path::Path) -> PathBuf {
        use std::path::Component;
        if p.starts_with(&self.tree) && p.exists() {
            return p.to_path_buf();
        }
        // `p` relative to the tree, lexically (`..` where it leaves it), then from the
        // host directory.
        let tree: Vec<Component> = self.tree.components().collect();
        let path: Vec<Component> = p.components().collect();
        let common = tree.iter().zip(&path).take_while(|(a, b)| a == b).count();
        let mut out = self.host.clone();
        for _ in common..tree.len() {
            out.pop();
        }
        for c in &path[common..] {
            out.push(c.as_os_str());
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DataDir {
    pub path: PathBuf,
    pub mode: u32,
    /// uid:gid to give a directory berth creates (only when berth runs as root).
    pub owner: Option<(u32, u32)>,
    pub at: At,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HostPort {
    pub host_ip: Option<String>,
    pub port: u16,
    pub protocol: String,
    pub service: String,
    pub at: At,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Project {
    /// Prefix of container names and the value of the `berth.project` label.
    pub name: String,
    /// The network every service joins unless it lists its own.
    pub network: String,
    /// What runs the services: one Docker host, or a Swarm through its manager
    /// (docs/swarm.md). Left out of the stored JSON at its default, so older desired
    /// states keep their resolved hashes.
    #[serde(default, skip_serializing_if = "Engine::is_default")]
    pub engine: Engine,
}

/// `[project] engine`: who runs the services.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    /// Containers on the one engine berth talks to.
    #[default]
    Docker,
    /// Swarm services through the manager berth talks to; Swarm schedules the tasks.
    Swarm,
}

impl Engine {
    fn is_default(&self) -> bool {
        *self == Engine::Docker
    }
}

/// The service keys only `engine = "swarm"` reads (docs/swarm.md): at their defaults
/// under `engine = "docker"`, which refuses them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwarmKeys {
    /// How many tasks Swarm keeps running (never 0: scaling a service away is removing it).
    pub replicas: u64,
    #[serde(default, skip_serializing_if = "Placement::is_empty")]
    pub placement: Placement,
    /// Whether an update starts the new task before stopping the old one; None: Swarm's
    /// default (stop-first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_order: Option<UpdateOrder>,
    /// `configs`: files made Swarm configs, mounted read-only in every task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<SwarmFile>,
    /// `secrets`: files made Swarm secrets. Only their hash is stored, never the content.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SwarmFile>,
}

impl Default for SwarmKeys {
    fn default() -> Self {
        SwarmKeys {
            replicas: 1,
            placement: Placement::default(),
            update_order: None,
            configs: Vec::new(),
            secrets: Vec::new(),
        }
    }
}

/// A file a service gets as a Swarm config or secret. Swarm's are immutable, so each is
/// named by its content's hash ([`SwarmFile::swarm_name`]): a change of the file makes a
/// new one, and changes the config hash of exactly the services that use it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwarmFile {
    /// Where the file was read, as the trust checks confined it.
    pub source: PathBuf,
    /// Where the task sees it: an absolute path, or for a secret a name under /run/secrets/.
    pub target: String,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// The content read at load time; never stored (a stored generation has only the
    /// hash: its Swarm object is found by name, or the file read again if it still hashes so).
    #[serde(skip)]
    pub content: Option<FileContent>,
}

/// A file's bytes, kept out of Debug output (a secret's are secret) and out of equality
/// (the hash beside it decides).
#[derive(Clone)]
pub struct FileContent(pub Vec<u8>);

impl std::fmt::Debug for FileContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

impl PartialEq for FileContent {
    fn eq(&self, _: &FileContent) -> bool {
        true
    }
}

impl SwarmFile {
    /// `<project>_<service>_<basename>_<first 12 hex of sha256>`, within Swarm's rules for
    /// a name (64 characters at most; letters, digits, `-`, `_`, `.`): the basename is
    /// cleaned and shortened first, so the hash always stays whole.
    pub fn swarm_name(&self, project: &str, service: &str) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                        c
                    } else {
                        '-'
                    }
                })
                .collect()
        };
        let base = clean(
            &self
                .source
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        let hash = &self.sha256[..self.sha256.len().min(12)];
        let head = format!("{}_{}", clean(project), clean(service));
        let room = 64usize.saturating_sub(head.len() + hash.len() + 2);
        let base: String = base.chars().take(room).collect();
        let name = format!("{head}_{base}_{hash}");
        // Too long a project and service name: keep the end, where the hash is.
        let name = name[name.len().saturating_sub(64)..].to_string();
        name.trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
            .to_string()
    }
}

impl SwarmKeys {
    pub fn is_default(&self) -> bool {
        *self == SwarmKeys::default()
    }
}

/// Where Swarm may place a service's tasks, as `docker service create` writes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// `node.hostname == db1`, `node.labels.role != edge`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    /// Spread descriptors (`node.labels.zone`), from `spread=node.labels.zone`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas_per_node: Option<u64>,
}

impl Placement {
    pub fn is_empty(&self) -> bool {
        *self == Placement::default()
    }
}

/// `update_order`: Swarm's `UpdateConfig.Order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    StartFirst,
    StopFirst,
}

/// Gate timing defaults for the whole project (docs/design.md "Concepts: gate").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// How long a started container may take to pass its probe.
    pub healthy_deadline: Duration,
    /// How long it must then stay passing, so a crash right after the first probe fails.
    pub min_healthy_time: Duration,
    /// Upper bound for one whole converge.
    pub progress_deadline: Duration,
    /// When a gate fails, put the whole stack back to the last good generation.
    #[serde(default = "yes")]
    pub auto_revert: bool,
    /// When dependents may start (docs/design.md §4). Left out of the stored JSON at
    /// its default, so older desired states keep their hashes.
    #[serde(default, skip_serializing_if = "Stability::is_default")]
    pub stability: Stability,
}

/// `[rollout] stability`: when a service's dependents may start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stability {
    /// Once its probe passed; its `min_healthy_time` window runs on beside them, and the
    /// generation is healthy only when every window closed without a failure or restart.
    #[default]
    Pipelined,
    /// Only once its window closed (each level waits for the one below to be stable).
    BeforeDependents,
}

impl Stability {
    fn is_default(&self) -> bool {
        *self == Stability::Pipelined
    }
}

fn yes() -> bool {
    true
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            healthy_deadline: Duration::from_secs(60),
            min_healthy_time: Duration::from_secs(1),
            progress_deadline: Duration::from_secs(600),
            auto_revert: true,
            stability: Stability::Pipelined,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    /// Image reference; for a service with `build`, the tag the build produces.
    pub image: String,
    pub build: Option<Build>,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// Final container environment: env_file entries, then `environment` over them.
    pub environment: BTreeMap<String, String>,
    pub ports: Vec<Port>,
    pub volumes: Vec<Volume>,
    pub networks: Vec<String>,
    pub depends_on: Vec<String>,
    pub restart: String,
    pub labels: BTreeMap<String, String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub container_name: String,
    pub profiles: Vec<String>,
    pub health: Option<Health>,
    /// `HOST:IP` entries for /etc/hosts (`host-gateway` is the Docker host).
    #[serde(default)]
    pub extra_hosts: Vec<String>,
    /// When to pull the image from its registry (compose's `pull_policy`).
    #[serde(default)]
    pub pull_policy: PullPolicy,
    /// The container's memory limit in bytes (`mem_limit`); the kernel's OOM killer
    /// ends it past this. None: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_limit: Option<u64>,
    /// `replicas`, `placement`, `update_order`: read only under `engine = "swarm"`. Left
    /// out of the stored JSON at their defaults, so older desired states keep their hashes.
    #[serde(default, skip_serializing_if = "SwarmKeys::is_default")]
    pub swarm: SwarmKeys,
}

/// When berth pulls a service's image (compose's `pull_policy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullPolicy {
    /// Pull only when the image is not present locally (the default).
    #[default]
    Missing,
    /// Pull on every converge; a moved tag recreates the container.
    Always,
    /// Never pull: the image must be present (built or loaded by hand).
    Never,
    /// Pull when the local copy was last pulled longer ago than this (`daily`, `"6h"`).
    Every(Duration),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Build {
    /// Absolute path of the build context.
    pub context: PathBuf,
    pub dockerfile: String,
    pub args: BTreeMap<String, String>,
    /// SHA-256 of the build context as Docker would see it (`.dockerignore` honoured),
    /// filled in before a converge: a changed context rebuilds and recreates.
    #[serde(default)]
    pub context_hash: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Port {
    pub host_ip: Option<String>,
    pub host: Option<u16>,
    pub container: u16,
    pub protocol: String,
}

impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(ip) = &self.host_ip {
            write!(f, "{ip}:")?;
        }
        if let Some(h) = self.host {
            write!(f, "{h}:")?;
        }
        write!(f, "{}/{}", self.container, self.protocol)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Volume {
    /// A named volume, created on demand and never removed by berth.
    Named {
        name: String,
        target: String,
        read_only: bool,
    },
    /// A host path (absolute after resolution).
    Bind {
        source: PathBuf,
        target: String,
        read_only: bool,
    },
}

/// How a service proves it is healthy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_deadline: Option<Duration>,
    pub min_healthy_time: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Probe {
    /// Connect to the container's address on this port.
    Tcp { port: u16 },
    /// GET this path on the container's address, expecting 2xx and, when `expect_json`
    /// is set, a JSON object whose top-level fields have these (string) values.
    Http {
        port: u16,
        path: String,
        #[serde(default)]
        expect_json: BTreeMap<String, String>,
    },
    /// Connect to PostgreSQL with these credentials, run `SELECT 1` and count the tables.
    Postgres {
        port: u16,
        user: String,
        password: String,
        database: String,
    },
    /// `PING` Redis (after `AUTH` when a password is set) and read its memory in use.
    Redis {
        port: u16,
        #[serde(default)]
        password: Option<String>,
    },
    /// Run a command inside the container, expecting exit code 0.
    Exec { command: Vec<String> },
    /// Wait for the image's own Docker HEALTHCHECK to report healthy.
    Docker,
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Tcp { port } => write!(f, "tcp :{port}"),
            Probe::Http {
                port,
                path,
                expect_json,
            } => {
                write!(f, "http :{port}{path}")?;
                for (k, v) in expect_json {
                    write!(f, " {k}={v:?}")?;
                }
                Ok(())
            }
            Probe::Postgres {
                port,
                user,
                database,
                ..
            } => write!(f, "postgres {user}@:{port}/{database}"),
            Probe::Redis { port, .. } => write!(f, "redis :{port}"),
            Probe::Exec { command } => write!(f, "exec {}", command.join(" ")),
            Probe::Docker => write!(f, "docker healthcheck"),
        }
    }
}

impl DesiredState {
    /// Services in dependency levels: level 0 has no dependencies, level n depends only on
    /// levels below n. Validation has already ruled out cycles.
    pub fn levels(&self) -> Vec<Vec<String>> {
        crate::graph::levels(
            self.services
                .iter()
                .map(|(n, s)| (n.as_str(), dependencies(s, self.migrations.as_ref()))),
        )
        .expect("validated desired state has no dependency cycle")
    }

    /// What hides this desired state's secrets in printed text (docs/design.md §11).
    ///
    /// Works the same fresh from [`load`] and for a desired state read back from a
    /// generation's JSON: it derives the secrets from the spec itself (values of
    /// secret-looking environment keys and build args, values that came from env files,
    /// probe passwords, passwords inside URLs) and adds the loader's in-memory list when
    /// there is one (secrets interpolated elsewhere, e.g. into a command).
    pub fn redactor(&self) -> crate::redact::Redactor {
        use crate::redact::{is_secret_key, url_password};
        let mut values = self.secret_values.clone();
        for (name, service) in &self.services {
            let from_file = self.env_file_keys.get(name);
            let build_args = service.build.iter().flat_map(|b| &b.args);
            for (key, value) in service.environment.iter().chain(build_args) {
                let secret = is_secret_key(key) || from_file.is_some_and(|keys| keys.contains(key));
                if secret && !value.is_empty() {
                    values.push(value.clone());
                }
                values.extend(url_password(value));
            }
            match service.health.as_ref().map(|h| &h.probe) {
                Some(Probe::Postgres { password, .. })
                | Some(Probe::Redis {
                    password: Some(password),
                    ..
                }) => values.push(password.clone()),
                _ => {}
            }
        }
        if let Some(m) = &self.migrations {
            values.push(m.url.clone());
            values.extend(url_password(&m.url));
            for (key, value) in m.job.iter().flat_map(|j| &j.environment) {
                if is_secret_key(key) && !value.is_empty() {
                    values.push(value.clone());
                }
                values.extend(url_password(value));
            }
        }
        for r in &self.notify {
            values.push(r.url.clone());
            values.extend(url_password(&r.url));
            values.extend(r.secret.clone());
        }
        values.sort();
        values.dedup();
        crate::redact::Redactor::new(values)
    }

    /// The gate timing for one service: its own health block over the rollout defaults.
    pub fn gate_timing(&self, service: &Service) -> (Duration, Duration) {
        let h = service.health.as_ref();
        (
            h.and_then(|h| h.healthy_deadline)
                .unwrap_or(self.rollout.healthy_deadline),
            h.and_then(|h| h.min_healthy_time)
                .unwrap_or(self.rollout.min_healthy_time),
        )
    }
}

/// A service's edges in the start-order DAG: its `depends_on`, where `migrations` stands for
/// the migrations' database service: a dependent of `migrations` lands in a level above the
/// database's, and the converge runs the migrations step at the end of the database's
/// level (see `converge::execute_steps`).
pub(crate) fn dependencies<'a>(
    service: &'a Service,
    migrations: Option<&'a Migrations>,
) -> Vec<&'a str> {
    service
        .depends_on
        .iter()
        .map(|d| match migrations {
            Some(m) if d == MIGRATIONS_NODE => m.service.as_str(),
            _ => d.as_str(),
        })
        .collect()
}

/// The registry a reference is pulled from, as Docker reads a reference: the first
/// component when it looks like a host (has a `.` or `:`, or is `localhost`), otherwise
/// Docker Hub.
pub fn registry_of(reference: &str) -> &str {
    match reference.split_once('/') {
        Some((host, _)) if host.contains(['.', ':']) || host == "localhost" => host,
        _ => "docker.io",
    }
}

#[cfg(test)]
mod reference_tests {
    use super::registry_of;

    #[test]
    fn registry_of_reads_references_like_docker() {
        assert_eq!(registry_of("postgres:15"), "docker.io");
        assert_eq!(registry_of("grafana/grafana:10.4.2"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5000/fx:1"), "127.0.0.1:5000");
        assert_eq!(registry_of("ghcr.io/org/app@sha256:abc"), "ghcr.io");
        assert_eq!(registry_of("localhost/app"), "localhost");
    }
}
