//! `berth run`, the daemon: its loop ([`run`]) and the pieces it is wired from. All of
//! the daemon lives here; `berth apply` shares only the reconcile ([`crate::reconcile`]).
//!
//! - [`turn`]: one turn: read the desired state afresh and reconcile it under the lock,
//!   or keep the running generation when it cannot be used.
//! - [`controller`]: when a turn runs: the scheduler (one at a time, requests collapse,
//!   resync, backoff, requeue), backoff, and the crash-loop policy.
//! - [`triggers`]: what wakes it: the desired state's file, the engine's events.
//! - [`systemd`]: READY=1, STATUS=, the watchdog, STOPPING=1.
//! - [`metrics`]: the Prometheus metrics the loop records into.
//! - [`client`]: how `berth status` and `berth apply` find a running daemon.
//! - [`http`]: the local HTTP endpoint (`/healthz`, `/readyz`, `/metrics`,
//!   `/api/v1/status`, `POST /api/v1/reconcile`) over the [`http::Shared`] state the loop
//!   publishes to.

pub mod client;
pub mod controller;
pub mod http;
pub mod metrics;
pub mod run;
pub mod systemd;
pub mod triggers;
pub mod turn;
