//! `berth status`: each project's status, from the daemon serving it or worked out here.

use std::path::{Path, PathBuf};

use crate::cmd::print::status_text;
use crate::cmd::{FileArgs, connect, load};
use crate::runtime::docker::DockerRuntime;
use crate::status::ProjectStatus;
use crate::store::Store;

/// `berth status`'s flags: which projects, and a desired state to judge besides.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    pub json: bool,
    /// Only this project (default: every project in the state store).
    #[arg(long)]
    pub project: Option<String>,
    /// Also judge this desired state: `blocked` when it is poisoned.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// With -f: the profiles and exclusions it is applied with.
    #[arg(long = "profile")]
    pub profiles: Vec<String>,
    #[arg(long = "exclude", value_delimiter = ',')]
    pub exclude: Vec<String>,
}

pub async fn run(
    Args {
        json: as_json,
        project,
        file,
        profiles,
        exclude,
    }: Args,
    state_path: &Path,
) -> anyhow::Result<i32> {
    let on_disk = match &file {
        Some(f) => {
            let args = FileArgs {
                file: f.clone(),
                profiles,
                exclude,
            };
            // The same load as apply's, so the hash includes the build contexts.
            match load(&args) {
                Ok(d) => Some(d),
                Err(code) => return Ok(code),
            }
        }
        None => None,
    };
    let store = Store::open(state_path).await?;
    // Connected only when a report is worked out here, not asked of a daemon.
    let mut rt: Option<DockerRuntime> = None;
    let projects = match project {
        Some(p) => vec![p],
        None => store.projects().await?,
    };
    let mut out = Vec::new();
    let mut notes = Vec::new();
    for p in projects {
        // A running daemon knows best (the file it serves may be blocked, the
        // engine may be away); with -f the question is about that file.
        if on_disk.is_none()
            && let Some(daemon) = crate::daemon::client::serving(state_path, &p)?
        {
            match crate::daemon::client::status(&daemon, &p).await {
                Ok(report) => {
                    notes.push(format!(
                        "  (as reported by berth run, pid {} on {})\n",
                        daemon.pid, daemon.host
                    ));
                    out.push(report);
                    continue;
                }
                Err(e) => eprintln!(
                    "berth: the berth run serving project {p:?} (pid {} on {}) did not answer ({e}); working the status out here",
                    daemon.pid, daemon.host
                ),
            }
        }
        if rt.is_none() {
            rt = Some(connect().await?);
        }
        let engine = rt.as_ref().expect("connected just above");
        out.push(
            crate::status::project_status(engine, &store, state_path, &p, on_disk.as_ref()).await?,
        );
        notes.push(String::new());
    }
    let text = if as_json {
        crate::status::reports_json(&out)?
    } else if out.is_empty() {
        format!("No generations recorded in {}.\n", state_path.display())
    } else {
        out.iter()
            .zip(&notes)
            .map(|(r, note)| status_text(r) + note)
            .collect()
    };
    print!("{}", crate::redact::registered_text(&text));
    // Every project must be converged for 0; nothing recorded is not converged.
    Ok(out
        .iter()
        .map(|r| r.status.exit_code())
        .max()
        .unwrap_or(ProjectStatus::Unknown.exit_code()))
}
