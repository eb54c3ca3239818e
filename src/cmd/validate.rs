//! `berth validate`: the desired state and, unless `--static`, the host's pre-flight.

use crate::cmd::{FileArgs, connect, load, preflight};
use crate::exit::OK as EXIT_OK;

/// `berth validate`'s flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub args: FileArgs,
    /// Check the files and the environment only: not the Docker engine, host ports,
    /// data directories or disk space (and create nothing).
    #[arg(long = "static")]
    pub static_only: bool,
}

pub async fn run(Args { args, static_only }: Args) -> anyhow::Result<i32> {
    let d = match load(&args) {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    if !static_only {
        let rt = connect().await?;
        let passed = match preflight(&rt, &d).await {
            Ok(p) => p,
            Err(code) => return Ok(code),
        };
        for l in passed.checks.iter().chain(&passed.created) {
            println!("✓ {l}");
        }
    }
    println!(
        "{}: valid ({} service{}, project {:?})",
        args.file.display(),
        d.services.len(),
        if d.services.len() == 1 { "" } else { "s" },
        d.project.name
    );
    Ok(EXIT_OK)
}
