//! Compose files in and out (docs/compose.md): `berth import` reads docker-compose.yml
//! files into a desired-state TOML with a report of what was translated, what changed
//! meaning and what was not; `berth export compose` writes the subset berth runs back
//! as a Compose file.
//!
//! # Layout
//! - `yaml`: YAML as a tree of nodes that keep their file, line and column (anchors,
//!   aliases and `<<` merge keys resolved).
//! - `load`: the Compose model: several `-f` files merged in order, `extends`,
//!   interpolation from the environment and the env file, profiles.
//! - `translate`: a Compose service as berth's service, and the report.
//! - `export`: a desired state as a Compose file.

pub mod export;
pub mod load;
pub mod translate;
pub mod yaml;
