//! The controller of `berth run`: what decides *when* the reconcile in
//! [`crate::reconcile`] runs. Triggers only enqueue; one loop reconciles.
//!
//! - [`scheduler`]: the [`Queue`] triggers hold and the loop ([`Scheduler::run`]): one
//!   reconcile at a time, requests collapse, resync, backoff after errors.
//! - [`backoff`]: exponential backoff with full jitter, reset after a success.
//! - [`crashloop`]: drift repair's crash-loop policy: a service that keeps dying is
//!   held, and the project says so.

pub mod backoff;
pub mod crashloop;
pub mod scheduler;

pub use backoff::{Backoff, BackoffPolicy};
pub use crashloop::{CrashLoopPolicy, Held, RestartTracker, Verdict};
pub use scheduler::{Action, Config, Queue, Reason, Scheduler, Stats, channel};
