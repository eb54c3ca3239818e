//! `berth ui`: the status page's address for the `berth run` serving a project on this
//! host (from its daemon lock), opened in a browser with `--open` when there is a display.

use std::path::Path;

use crate::cmd::{ProjectArg, project_of};
use crate::exit::{OK as EXIT_OK, RUNTIME as EXIT_RUNTIME};
use crate::store::Store;

/// `berth ui`'s flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Open the page with xdg-open (only when there is a display).
    #[arg(long)]
    pub open: bool,
    #[command(flatten)]
    pub project: ProjectArg,
}

pub async fn run(Args { open, project }: Args, state_path: &Path) -> anyhow::Result<i32> {
    let store = Store::open(state_path).await?;
    let project = project_of(&store, &project).await?;
    let daemon = crate::daemon::client::serving(state_path, &project)?;
    let Some(endpoint) = daemon.as_ref().and_then(|d| d.endpoint.clone()) else {
        eprintln!(
            "berth: no berth run serves project {project:?} on this host{}; the page is served by berth run",
            if daemon.is_some() {
                " with an HTTP endpoint"
            } else {
                ""
            }
        );
        return Ok(EXIT_RUNTIME);
    };
    let url = format!("http://{endpoint}/");
    println!("{url}");
    if open {
        let display = ["DISPLAY", "WAYLAND_DISPLAY"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|d| !d.is_empty()));
        if !display {
            eprintln!("berth: no display (DISPLAY, WAYLAND_DISPLAY): open {url} yourself");
        } else if let Err(e) = std::process::Command::new("xdg-open")
            .arg(&url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            eprintln!("berth: xdg-open could not be run ({e}): open {url} yourself");
        }
    }
    Ok(EXIT_OK)
}
