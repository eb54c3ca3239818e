//! `berth export compose`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use crate::cmd::{FileArgs, load};
use crate::compose::export::{self, Options, Source};
use crate::exit::OK as EXIT_OK;
use crate::runtime::Runtime;
use crate::runtime::docker::DockerRuntime;
use crate::spec::DesiredState;

/// `berth export`'s formats.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Write the desired state as a Compose file, for the subset berth runs. What berth
    /// does and Compose cannot say is a comment in the file and a line on stderr each;
    /// secrets are written as their `${VAR}` references, never as values.
    Compose(ComposeArgs),
}

/// `berth export compose`'s arguments.
#[derive(clap::Args, Debug)]
pub struct ComposeArgs {
    #[command(flatten)]
    pub file: FileArgs,
    /// Write the Compose file here (default: standard output). Relative paths in it are
    /// written from this file's directory (from the current directory for stdout).
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
}

pub async fn run(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Compose(args) => compose(args).await,
    }
}

async fn compose(ComposeArgs { file, output }: ComposeArgs) -> anyhow::Result<i32> {
    let source = Source::read(&file.file);
    let d = match load_every_profile(&file, &source) {
        Some(d) => d,
        None => match load(&file) {
            Ok(d) => d,
            Err(code) => return Ok(code),
        },
    };
    let base = match &output {
        Some(o) => {
            let dir = o.parent().filter(|p| !p.as_os_str().is_empty());
            dir.map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."))
        }
        None => PathBuf::from("."),
    };
    let left_out = source
        .services()
        .filter(|(name, _)| !d.services.contains_key(*name))
        .map(|(name, profiles)| {
            let why = if file.exclude.contains(name) {
                "left out with --exclude".to_string()
            } else if profiles.is_empty() {
                "not in the desired state as loaded".to_string()
            } else {
                format!(
                    "its profiles ({}) are not enabled: the desired state did not load with them",
                    profiles.join(", ")
                )
            };
            (name.clone(), why)
        })
        .collect();
    let options = Options {
        base: std::path::absolute(&base)?,
        image_healthcheck: image_healthchecks(&d).await,
        left_out,
    };
    let out = export::export(&d, &source, &options);
    match &output {
        Some(path) => std::fs::write(path, &out.yaml)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?,
        None => print!("{}", out.yaml),
    }
    for note in &out.notes {
        eprintln!("berth: export: {note}");
    }
    Ok(EXIT_OK)
}

/// The desired state with every profile its services name enabled, so that each service
/// is written behind its `profiles` key, as Compose selects them; None when that does not
/// load (a profile's service needs a variable that is not set...) or adds nothing: then the
/// selection given is loaded, with its diagnostics.
fn load_every_profile(file: &FileArgs, source: &Source) -> Option<DesiredState> {
    let mut wider = file.clone();
    let given: BTreeSet<String> = file.profiles.iter().cloned().collect();
    let more: Vec<String> = source
        .profiles()
        .into_iter()
        .filter(|p| !given.contains(p))
        .collect();
    if more.is_empty() {
        return None;
    }
    wider.profiles.extend(more);
    let d = crate::spec::load(&wider.file, &wider.selection()).ok()?;
    // As `load` does: from here on no log line can show one of its secrets.
    crate::redact::register(&d.redactor());
    Some(d)
}

/// For the images of services that have no probe and that others depend on: whether each
/// has a HEALTHCHECK (berth gates on it), as far as a reachable engine knows; the export
/// needs no engine, so an unreachable one leaves them unknown.
async fn image_healthchecks(d: &DesiredState) -> BTreeMap<String, bool> {
    let depended: BTreeSet<&String> = d.services.values().flat_map(|s| &s.depends_on).collect();
    let images: BTreeSet<&String> = d
        .services
        .iter()
        .filter(|(name, s)| s.health.is_none() && depended.contains(name))
        .map(|(_, s)| &s.image)
        .collect();
    let mut known = BTreeMap::new();
    if images.is_empty() {
        return known;
    }
    let wait = Duration::from_secs(5);
    let Ok(Ok(rt)) = tokio::time::timeout(wait, DockerRuntime::connect()).await else {
        return known;
    };
    for image in images {
        if let Ok(Ok(Some(info))) = tokio::time::timeout(wait, rt.inspect_image(image)).await {
            known.insert(image.clone(), info.has_healthcheck);
        }
    }
    known
}
