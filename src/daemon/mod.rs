//! Pieces of `berth run` (issue 9) that the daemon loop is wired from.
//!
//! - [`metrics`]: the Prometheus metrics the loop records into.

pub mod metrics;
