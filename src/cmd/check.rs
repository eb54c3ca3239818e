//! `berth check`: probe every service once, as the runbook's health_check.sh.

use crate::cmd::{FileArgs, connect, load};
use crate::exit::{OK as EXIT_OK, RUNTIME as EXIT_RUNTIME};

/// `berth check`'s flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub args: FileArgs,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(Args { args, json }: Args) -> anyhow::Result<i32> {
    let d = match load(&args) {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let report = match d.project.engine {
        crate::spec::Engine::Docker => crate::check::check(&connect().await?, &d).await?,
        // Every replica's task, through its published probe port, as `berth status`.
        crate::spec::Engine::Swarm => {
            crate::swarm::check::check(&crate::swarm::Swarm::connect().await?, &d).await?
        }
    };
    let redactor = d.redactor();
    if json {
        println!("{}", redactor.text(&serde_json::to_string_pretty(&report)?));
    } else {
        print!("{}", redactor.text(&report.text()));
    }
    Ok(if report.healthy {
        EXIT_OK
    } else {
        EXIT_RUNTIME
    })
}
