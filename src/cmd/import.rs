//! `berth import`: docker-compose files to a desired-state TOML.

use std::path::PathBuf;

/// `berth import`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The Compose file (more with `-f`, merged in order).
    pub file: PathBuf,
}

pub fn run(_args: Args) -> anyhow::Result<i32> {
    anyhow::bail!("berth import is not built yet")
}
