//! berth's exit codes (docs/design.md "Exit codes"): the contract scripts and systemd read.
//! [`crate::status`] decides which one a project's state gives; a command returns it.

/// Converged (or nothing to do).
pub const OK: i32 = 0;
/// A runtime error: the engine, the state store, an image that cannot be had...
pub const RUNTIME: i32 = 1;
/// Invalid desired state; nothing changed.
pub const INVALID: i32 = 2;
/// A gate failed and the stack was rolled back to the last good generation.
pub const ROLLED_BACK: i32 = 3;
/// A gate failed and the rollback failed too (degraded).
pub const DEGRADED: i32 = 4;
/// The desired state is poisoned and was not applied.
pub const POISONED: i32 = 5;
