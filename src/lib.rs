//! berth: a reconciling operator for one Docker host.
//!
//! A person (or a git push) edits a desired-state TOML file; berth diffs it against the
//! containers that are actually there and converges: creates, recreates, starts and
//! removes containers in dependency order, each dependent only after its dependencies
//! passed their health gates. See `docs/design.md` for the semantics.
//!
//! # Layout
//!
//! The code follows the controller pattern observe → plan → execute:
//!
//! - [`spec`]: the desired state. TOML loading, `${VAR}` interpolation, validation with
//!   `FILE:LINE:COL` [`diag`]nostics. Everything downstream sees resolved values only.
//! - [`graph`]: the `depends_on` DAG: levels that start in parallel, cycles named.
//! - [`hash`]: the `berth.config-hash` label: what forces a recreate and what does not.
//! - [`runtime`]: the [`runtime::Runtime`] trait at the Docker boundary; [`runtime::docker`]
//!   implements it with bollard, [`runtime::fake`] in memory for controller tests.
//! - [`observe`]: one pass over Docker: the project's containers (one list call) and the
//!   desired images.
//! - [`plan`]: the pure function `plan(desired, observed) -> Plan`, printed by `berth plan`.
//! - [`gate`]: the gate (healthy within `healthy_deadline`, then stable for
//!   `min_healthy_time`).
//! - [`probe`]: the network probes: tcp, http (with `expect_json`), postgres (sqlx) and
//!   redis, against the container's own address.
//! - [`preflight`]: the runbook's pre-flight host checks (engine, ports, data directories,
//!   disk), run by `validate` and before every `apply`.
//! - [`check`]: `berth check`, the runbook's health_check.sh.
//! - [`images`]: pulls (per `pull_policy`) and builds what a converge needs first;
//!   resolves pins for reverts.
//! - [`build_context`]: what a build sends, hashed: a changed context rebuilds.
//! - [`converge`]: carries a plan out: images first, then each DAG level in parallel.
//! - [`migrate`]: the database schema: its runners (a directory of sqlx migrations, on a
//!   dedicated connection, refusing an edited or half-applied record; a migration job in
//!   its own image) behind [`migrate::Runner`], the converge's migrations
//!   [`migrate::step`] and the schema half of a revert ([`migrate::revert`]).
//! - [`backup`]: `pg_dump` of the migrations' database inside its container, streamed
//!   through gzip to a checked private file with retention; and the restore into a fresh
//!   database that is then swapped in.
//! - [`store`]: generations in SQLite (sqlx), with their own schema migrations.
//! - [`evidence`]: what a failed or dead container leaves behind (last log lines, how it
//!   ended, its health runs), read before it is removed and kept on its generation.
//! - [`diff`]: what changed between two generations, for `berth diff` and notifications.
//! - [`redact`]: secrets never reach output; [`text`]: a container's text is one
//!   bounded line before it reaches a terminal, the journal or the notify socket.
//! - [`report`]: progress lines for `apply`.
//! - [`logs`]: `berth logs`: the project's container logs merged, followed across
//!   recreates, every line redacted and escaped.
//! - [`lock`]: one converge at a time per project; [`shutdown`]: a stop request passed down.
//! - [`notify`]: notifications to the `[[notify]]` receivers: the event decided from
//!   what the store recorded, Standard Webhooks signatures, the sender of the outbox.
//! - [`swarm`]: `engine = "swarm"`: the same plan carried out as Swarm services through a
//!   manager, gated on task states and berth's own probe of every task.
//! - [`reconcile`]: controller policy (resume, poison, repair, revert) over [`converge`].
//! - [`status`]: the one place that decides a project's status and its exit code
//!   ([`exit`]: the codes themselves).
//! - [`daemon`]: all of `berth run`: one turn ([`daemon::turn`]), when turns run
//!   ([`daemon::controller`]: triggers only enqueue, one loop reconciles at a time with
//!   resync, backoff and requeue, a crash-loop policy holds the repair of a service that
//!   keeps dying), what wakes it ([`daemon::triggers`]), systemd's notify protocol, its
//!   Prometheus metrics and its local HTTP endpoint.
//! - [`cli`]: the command line contract and exit codes; [`cmd`]: one file per command,
//!   and what they print.

pub mod backup;
pub mod build_context;
pub mod check;
pub mod cli;
pub mod cmd;
pub mod compose;
pub mod converge;
pub mod daemon;
pub mod diag;
pub mod diff;
pub mod evidence;
pub mod exit;
pub mod gate;
pub mod git;
pub mod graph;
pub mod hash;
pub mod images;
pub mod lock;
pub mod logs;
pub mod migrate;
pub mod notify;
pub mod observe;
pub mod plan;
pub mod preflight;
pub mod probe;
pub mod reconcile;
pub mod redact;
pub mod report;
pub mod runtime;
pub mod shutdown;
pub mod spec;
pub mod status;
pub mod store;
pub mod swarm;
pub mod text;
pub mod ui;
