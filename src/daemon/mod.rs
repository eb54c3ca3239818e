//! `berth run`, the daemon: its loop ([`run`]) and the pieces it is wired from.
//!
//! - [`metrics`]: the Prometheus metrics the loop records into.
//! - [`client`]: how `berth status` and `berth apply` find a running daemon.
//! - [`http`]: the local HTTP endpoint (`/healthz`, `/readyz`, `/metrics`,
//!   `/api/v1/status`, `POST /api/v1/reconcile`) over the [`http::Shared`] state the loop
//!   publishes to.

pub mod client;
pub mod http;
pub mod metrics;
pub mod run;
