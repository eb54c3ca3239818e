//! The Docker boundary.
//!
//! [`Runtime`] is everything the controller needs from a container engine. The real one
//! is [`docker::DockerRuntime`] (bollard); [`fake::FakeRuntime`] keeps containers in memory
//! so controller logic can be tested with paused time. The end-to-end suite in `tests/`
//! always runs against the real engine.

pub mod docker;
pub mod fake;
pub mod logs;
pub mod own;

use std::future::Future;

use crate::spec::{Build, Probe, Service};

pub use logs::{LogLine, LogOptions, LogSource, LogStream};
pub use own::OwnContainer;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{context}: {message}")]
    Api { context: String, message: String },
    /// An image a converge needs cannot be had: absent and not pullable, a pull that
    /// failed (registry down, unknown image, refused credentials), or a pin gone.
    #[error("image {image} cannot be had: {message}")]
    ImageUnavailable { image: String, message: String },
    #[error("building image {image} failed: {message}")]
    Build { image: String, message: String },
    /// The engine gave no answer: the connection was refused or reset, its socket is
    /// missing, or the call timed out. Not a judgement on what was asked: a converge it
    /// interrupts is resumed once the engine answers again, never reverted.
    #[error("{context}: the engine did not answer: {message}")]
    Unreachable { context: String, message: String },
    /// The engine answered that the container is not there (removed, by hand or by
    /// `--rm`): a gate on it fails at once.
    #[error("{context}: no such container")]
    Gone { context: String },
}

impl RuntimeError {
    /// Whether the engine gave no answer at all (as opposed to an answer that refused).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, RuntimeError::Unreachable { .. })
    }
}

/// Network name (as the desired state writes it) → the ID of the network berth uses for it.
pub type Networks = std::collections::BTreeMap<String, String>;

/// Docker's state word for a container, parsed once, here: the rest of berth matches on
/// it, never on the engine's text. What the engine may add later is kept as `Other`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
    Other(String),
}

/// A container's health: its HEALTHCHECK's verdict as the engine reports it, or berth's
/// own probe's in a status report. Parsed once, here, as [`ContainerState`] is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "String", into = "String")]
pub enum HealthState {
    Starting,
    Healthy,
    Unhealthy,
    Other(String),
}

macro_rules! words {
    ($t:ident { $($v:ident => $w:literal),* $(,)? }) => {
        impl $t {
            /// The engine's word for it.
            pub fn as_str(&self) -> &str {
                match self {
                    $($t::$v => $w,)*
                    $t::Other(s) => s,
                }
            }
        }
        impl From<&str> for $t {
            fn from(s: &str) -> $t {
                match s {
                    $($w => $t::$v,)*
                    other => $t::Other(other.to_string()),
                }
            }
        }
        impl From<String> for $t {
            fn from(s: String) -> $t {
                $t::from(s.as_str())
            }
        }
        impl From<$t> for String {
            fn from(t: $t) -> String {
                t.as_str().to_string()
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

words!(ContainerState {
    Created => "created",
    Running => "running",
    Paused => "paused",
    Restarting => "restarting",
    Removing => "removing",
    Exited => "exited",
    Dead => "dead",
});

words!(HealthState {
    Starting => "starting",
    Healthy => "healthy",
    Unhealthy => "unhealthy",
});

/// A container as the list call shows it: enough to plan without an inspect.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSummary {
    pub id: String,
    pub name: String,
    pub service: Option<String>,
    pub config_hash: Option<String>,
    pub generation: Option<u64>,
    pub image_id: String,
    /// Docker's state word: created, running, exited, restarting...
    pub state: ContainerState,
    /// healthy / unhealthy / starting when the container has a HEALTHCHECK.
    pub health: Option<HealthState>,
    /// Host ports the container publishes (while it runs).
    pub published: Vec<u16>,
}

impl ContainerSummary {
    pub fn running(&self) -> bool {
        self.state == ContainerState::Running
    }
}

/// What the gate needs to know about one container, from an inspect.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerDetails {
    pub id: String,
    pub running: bool,
    /// The engine is about to start it again under its restart policy (its `die` event
    /// comes after this is set, with `restart_count` already raised).
    pub restarting: bool,
    pub exit_code: i64,
    /// The kernel's OOM killer ended its last run.
    pub oom_killed: bool,
    pub restart_count: i64,
    pub health: Option<HealthState>,
    /// The container's address on the project network, used by tcp/http probes.
    pub ip: Option<String>,
    pub started_at: Option<String>,
    /// When its last run ended (the engine's RFC 3339 time); None while it has not.
    pub finished_at: Option<String>,
    /// The HEALTHCHECK's last runs as the engine keeps them (at most five), oldest first.
    pub health_log: Vec<HealthRun>,
}

/// One run of a container's HEALTHCHECK, as the engine recorded it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HealthRun {
    pub start: String,
    pub end: String,
    pub exit_code: i64,
    /// What the check printed: the container's words, kept as one bounded line.
    pub output: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageInfo {
    pub id: String,
    pub has_healthcheck: bool,
    /// The `berth.context-hash` label of an image berth built: which build context it
    /// came from, so a changed context rebuilds.
    pub context_hash: Option<String>,
    /// When the image was last tagged here (Docker's `Metadata.LastTagTime`). berth
    /// re-tags after every pull, so for a pulled image this is when it was last pulled:
    /// `pull_policy = every` compares against it.
    pub tagged_at: Option<std::time::SystemTime>,
}

/// How far one pull has got, for the live progress row.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PullProgress {
    /// Layers seen so far, and how many of them are complete (downloaded or already here).
    pub layers: usize,
    pub layers_done: usize,
    /// Bytes downloaded so far, of the total known so far.
    pub bytes: u64,
    pub bytes_total: u64,
}

/// How many characters of a probe's detail are kept.
pub const PROBE_DETAIL_CHARS: usize = 500;

/// The outcome of one probe: passed or not, with what was seen, for reasons and logs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProbeResult {
    pub ok: bool,
    pub detail: String,
    /// What a protocol probe learned on the way (`tables`, `used_memory`...), for
    /// `berth check`.
    pub facts: Vec<(String, String)>,
}

impl ProbeResult {
    /// `detail` may hold a container's words (an exec probe's output, a database's error
    /// text): it is kept as one bounded line (`docs/design.md` §12).
    pub fn new(ok: bool, detail: impl Into<String>) -> Self {
        ProbeResult {
            ok,
            detail: crate::text::one_line(&detail.into(), PROBE_DETAIL_CHARS),
            facts: Vec::new(),
        }
    }

    pub fn with_fact(mut self, key: &str, value: impl Into<String>) -> Self {
        self.facts.push((key.to_string(), value.into()));
        self
    }
}

/// Something the engine says happened to one of the project's containers.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerEvent {
    /// The container's ID.
    pub id: String,
    /// The `berth.service` label of the container, when it has one.
    pub service: Option<String>,
    /// What happened: die, stop, kill, destroy, oom, health_status: unhealthy...
    pub action: EventAction,
}

/// Docker's action word for a container event, parsed once, here. A HEALTHCHECK's
/// verdict (`health_status: unhealthy`) carries its [`HealthState`]; the `exec_*` events a
/// HEALTHCHECK makes on every run, creates and the rest are `Other`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventAction {
    Start,
    Die,
    Stop,
    Kill,
    Destroy,
    Oom,
    Pause,
    Unpause,
    Restart,
    Rename,
    Update,
    Health(HealthState),
    Other(String),
}

impl From<&str> for EventAction {
    fn from(s: &str) -> EventAction {
        use EventAction::*;
        match s {
            "start" => Start,
            "die" => Die,
            "stop" => Stop,
            "kill" => Kill,
            "destroy" => Destroy,
            "oom" => Oom,
            "pause" => Pause,
            "unpause" => Unpause,
            "restart" => Restart,
            "rename" => Rename,
            "update" => Update,
            other => match other.strip_prefix("health_status:") {
                Some(h) => Health(HealthState::from(h.trim())),
                None => Other(other.to_string()),
            },
        }
    }
}

impl From<String> for EventAction {
    fn from(s: String) -> EventAction {
        EventAction::from(s.as_str())
    }
}

impl std::fmt::Display for EventAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use EventAction::*;
        let word = match self {
            Start => "start",
            Die => "die",
            Stop => "stop",
            Kill => "kill",
            Destroy => "destroy",
            Oom => "oom",
            Pause => "pause",
            Unpause => "unpause",
            Restart => "restart",
            Rename => "rename",
            Update => "update",
            Health(h) => return write!(f, "health_status: {h}"),
            Other(s) => s,
        };
        f.write_str(word)
    }
}

impl ContainerEvent {
    /// Whether what the engine shows of the container (running, exit code, restarts,
    /// health) may have changed: everything but the `exec_*` events a HEALTHCHECK makes
    /// on every run, and creates, renames and the like.
    pub fn changes_state(&self) -> bool {
        use EventAction::*;
        matches!(
            self.action,
            Start | Die | Stop | Kill | Destroy | Oom | Pause | Unpause | Restart | Health(_)
        )
    }

    /// Whether this may mean drift (a container stopped, gone, or unhealthy) or another
    /// hand at work (a start by `berth apply` or `docker start`), so the project must be
    /// looked at again. Creates and healthy reports are not worth a turn.
    pub fn may_be_drift(&self) -> bool {
        use EventAction::*;
        matches!(
            self.action,
            Start
                | Die
                | Stop
                | Kill
                | Destroy
                | Oom
                | Pause
                | Rename
                | Update
                | Health(HealthState::Unhealthy)
        )
    }
}

/// A stream of the project's container events (from the moment it is asked for: none
/// that happened between the call and the engine's answer are lost); it ends when the engine connection drops.
/// Bounded ([`EVENTS_BUFFERED`]): a container that restarts in a tight loop makes the
/// engine's stream wait for the reader, never berth's memory grow (`docs/design.md` §12).
pub type Events = futures::channel::mpsc::Receiver<Result<ContainerEvent, RuntimeError>>;

/// How many events may wait for their reader.
pub const EVENTS_BUFFERED: usize = 1024;

/// A container that holds a name berth wants.
#[derive(Debug, Clone, PartialEq)]
pub struct NameHolder {
    pub id: String,
    pub project: Option<String>,
}

/// The engine berth talks to.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineVersion {
    /// Docker Engine version, e.g. "20.10.24+dfsg1".
    pub version: String,
    /// The API version it speaks, e.g. "1.41".
    pub api_version: String,
}

/// How a streamed [`Runtime::exec_stream`] ended.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExecOutcome {
    /// The command's exit code (-1 when the engine did not report one).
    pub exit_code: i64,
    /// The last few KiB of what the command wrote to stderr, for the error message.
    pub stderr_tail: String,
}

/// How much of a streamed exec's stderr is kept.
pub const STDERR_TAIL: usize = 4096;

/// How much of a one-shot job's output [`Runtime::container_logs`] returns (its end).
pub const LOG_TAIL: usize = 64 * 1024;

/// Append `more` to a bounded tail, dropping the oldest bytes (on a char boundary).
pub fn push_tail(tail: &mut String, more: &str) {
    push_tail_max(tail, more, STDERR_TAIL)
}

/// [`push_tail`] with another bound.
pub fn push_tail_max(tail: &mut String, more: &str, max: usize) {
    tail.push_str(more);
    if tail.len() > max {
        let mut cut = tail.len() - max;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail.drain(..cut);
    }
}

pub trait Runtime: Send + Sync {
    /// The engine's version: one call; proves it is reachable.
    fn engine_version(&self) -> impl Future<Output = Result<EngineVersion, RuntimeError>> + Send;
    /// The container berth itself runs in, when it runs in one ([`own`]): never among
    /// the project's containers, never stopped, removed or renamed.
    fn own_container(
        &self,
    ) -> impl Future<Output = Result<Option<OwnContainer>, RuntimeError>> + Send {
        async { Ok(None) }
    }
    /// Every container (any state) labelled with this project: one list call. The
    /// container berth runs in is never among them.
    fn list_project(
        &self,
        project: &str,
    ) -> impl Future<Output = Result<Vec<ContainerSummary>, RuntimeError>> + Send;
    /// Who holds each of these container names (absent: nobody). One list call.
    fn name_holders(
        &self,
        names: &[String],
    ) -> impl Future<Output = Result<std::collections::BTreeMap<String, NameHolder>, RuntimeError>> + Send;
    fn inspect_image(
        &self,
        reference: &str,
    ) -> impl Future<Output = Result<Option<ImageInfo>, RuntimeError>> + Send;
    /// Pull `reference` from its registry (with the credentials the Docker config file
    /// has for it), telling `progress` how far it got as it goes.
    fn pull_image(
        &self,
        reference: &str,
        progress: &(dyn Fn(PullProgress) + Sync),
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn build_image(
        &self,
        reference: &str,
        build: &Build,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// The network named `name` that this project uses, created (labelled with the
    /// project) when there is none; returns its ID. Docker allows several networks of one
    /// name: berth picks the project's own by label, and removes empty duplicates of it.
    fn ensure_network(
        &self,
        name: &str,
        project: &str,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;
    /// Remove the networks labelled with this project that no container uses any more.
    fn remove_project_networks(
        &self,
        project: &str,
    ) -> impl Future<Output = Result<Vec<String>, RuntimeError>> + Send;
    fn ensure_volume(
        &self,
        name: &str,
        project: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Create (not start) a container for `service` under `name`, running `image`, on
    /// the networks [`Runtime::ensure_network`] returned.
    fn create_container(
        &self,
        name: &str,
        service: &Service,
        image: &str,
        labels: &std::collections::BTreeMap<String, String>,
        networks: &Networks,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;
    fn start_container(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn stop_container(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn remove_container(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn rename_container(
        &self,
        id: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn inspect_container(
        &self,
        id: &str,
        network: &str,
    ) -> impl Future<Output = Result<ContainerDetails, RuntimeError>> + Send;
    /// The end ([`LOG_TAIL`]) of what a container wrote to stdout and stderr, interleaved
    /// as it came: the output of a one-shot job.
    fn container_logs(&self, id: &str)
    -> impl Future<Output = Result<String, RuntimeError>> + Send;
    /// The engine's events for this project's containers, from now on (one long call).
    fn events(&self, project: &str) -> Events;
    /// A container's log as lines (`berth logs`): what `options` selects, then, when
    /// following, what it writes until it stops.
    fn log_stream(&self, id: &str, options: &LogOptions) -> LogStream;
    /// Run one probe against a started container.
    fn probe(
        &self,
        container: &ContainerDetails,
        probe: &Probe,
        timeout: std::time::Duration,
    ) -> impl Future<Output = ProbeResult> + Send;
    /// Run `command` in a running container with extra `env` (`KEY=value`), feeding it
    /// `stdin` to its end (then closing it) and copying its stdout into `stdout` as it
    /// comes, never holding all of it: `pg_dump` and `psql` of a whole database go
    /// through here. The environment is for secrets such as `PGPASSWORD`: it is never
    /// logged.
    fn exec_stream(
        &self,
        id: &str,
        command: &[String],
        env: &[String],
        stdin: Option<&mut (dyn std::io::Read + Send)>,
        stdout: &mut (dyn std::io::Write + Send),
    ) -> impl Future<Output = Result<ExecOutcome, RuntimeError>> + Send;
}

#[cfg(test)]
mod words_tests {
    use super::*;

    #[test]
    fn the_engines_words_are_parsed_once_and_shown_as_they_came() {
        assert_eq!(ContainerState::from("running"), ContainerState::Running);
        assert_eq!(
            ContainerState::from("exotic"),
            ContainerState::Other("exotic".into())
        );
        assert_eq!(ContainerState::Restarting.to_string(), "restarting");
        assert_eq!(HealthState::from("unhealthy"), HealthState::Unhealthy);
        let unhealthy = EventAction::from("health_status: unhealthy");
        assert_eq!(unhealthy, EventAction::Health(HealthState::Unhealthy));
        assert_eq!(unhealthy.to_string(), "health_status: unhealthy");
        assert_eq!(
            EventAction::from("exec_start: /bin/sh -c true"),
            EventAction::Other("exec_start: /bin/sh -c true".into())
        );
        let event = |action: &str| ContainerEvent {
            id: "c".into(),
            service: None,
            action: action.into(),
        };
        assert!(event("die").changes_state() && event("die").may_be_drift());
        assert!(event("health_status: healthy").changes_state());
        assert!(!event("health_status: healthy").may_be_drift());
        assert!(event("health_status: unhealthy").may_be_drift());
        assert!(!event("exec_die").changes_state() && !event("create").may_be_drift());
        assert!(event("rename").may_be_drift() && !event("rename").changes_state());
    }
}
