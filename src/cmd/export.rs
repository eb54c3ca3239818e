//! `berth export compose`.

/// `berth export`'s formats.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Write the desired state as a Compose file, for the subset berth runs.
    Compose(crate::cmd::FileArgs),
}

pub async fn run(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Compose(_) => anyhow::bail!("berth export compose is not built yet"),
    }
}
