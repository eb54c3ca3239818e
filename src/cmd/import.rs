//! `berth import`: docker-compose files to a desired-state TOML (docs/compose.md).

use std::path::{Path, PathBuf};

use crate::compose::load::{Options, load};
use crate::compose::translate::{Target, translate};
use crate::exit::{INVALID as EXIT_INVALID, OK as EXIT_OK, RUNTIME as EXIT_RUNTIME};

/// `berth import`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The Compose file.
    pub file: PathBuf,
    /// More Compose files, merged over the first in order (as `docker compose -f`).
    #[arg(short = 'f', long = "file")]
    pub more: Vec<PathBuf>,
    /// The env file interpolation reads (default: `.env` beside the first file).
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    /// Where to write: a directory (`<project>.toml` in it, or one file per service with
    /// `--split`) or a `.toml` file. Without it the TOML goes to stdout and the report
    /// to stderr.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// One file for the project and one per service (needs `-o DIR`).
    #[arg(long)]
    pub split: bool,
    /// Compose profiles to enable (written to `[project] profiles`).
    #[arg(long = "profile")]
    pub profiles: Vec<String>,
    /// Replace files that exist already at the output.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let mut files = vec![args.file.clone()];
    files.extend(args.more.iter().cloned());
    let opts = Options {
        files,
        env_file: args.env_file.clone(),
    };
    let compose = match load(&opts, process_env()) {
        Ok(c) => c,
        Err(d) => {
            eprintln!("{d}");
            eprintln!("berth: import: nothing was written");
            return Ok(EXIT_INVALID);
        }
    };
    let (dir, single) = match &args.output {
        Some(o) if o.extension().is_some_and(|e| e == "toml") => (
            o.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
            Some(o.clone()),
        ),
        Some(o) => (o.clone(), None),
        None => (PathBuf::from("."), None),
    };
    if args.split && (args.output.is_none() || single.is_some()) {
        eprintln!("berth: import: --split writes one file per service: give a directory with -o");
        return Ok(EXIT_INVALID);
    }
    let default_name = args
        .file
        .canonicalize()
        .ok()
        .and_then(|p| {
            p.parent()?
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "imported".into());
    let t = translate(
        &compose,
        &Target {
            dir: dir.clone(),
            default_name,
            profiles: args.profiles.clone(),
        },
    );
    let toml = t.doc.to_string();
    // The output must load as berth's desired state where it will be: checked from a
    // file beside it first (its relative paths the same), and removed again.
    std::fs::create_dir_all(&dir)?;
    let check = dir.join(format!(".berth-import-{}.toml", std::process::id()));
    std::fs::write(&check, &toml)?;
    let loaded = crate::spec::load(&check, &Default::default());
    let _ = std::fs::remove_file(&check);
    if let Err(diags) = loaded {
        eprint!("{toml}");
        for d in diags.0.iter() {
            let mut d = d.clone();
            if d.file == check {
                d.file = PathBuf::from("(the TOML above)");
            }
            eprintln!("{d}");
        }
        eprintln!(
            "berth: import: the translation does not load as a desired state (above); nothing was written"
        );
        return Ok(EXIT_INVALID);
    }
    let base = std::env::current_dir().unwrap_or_default();
    let report = t.report.text(&base);
    let outputs: Vec<(PathBuf, String)> = match (&args.output, single, args.split) {
        (None, _, _) => {
            print!("{toml}");
            eprint!("{report}");
            return Ok(EXIT_OK);
        }
        (Some(_), Some(file), _) => vec![(file, toml)],
        (Some(_), None, false) => vec![(dir.join(format!("{}.toml", t.project)), toml)],
        (Some(_), None, true) => t
            .split
            .iter()
            .map(|(name, doc)| (dir.join(format!("{name}.toml")), doc.to_string()))
            .collect(),
    };
    if !args.force
        && let Some((p, _)) = outputs.iter().find(|(p, _)| p.exists())
    {
        eprintln!(
            "berth: import: {} exists already: nothing was written (--force replaces it)",
            p.display()
        );
        return Ok(EXIT_RUNTIME);
    }
    for (path, text) in &outputs {
        std::fs::write(path, text)?;
        println!("wrote {}", path.display());
    }
    print!("{report}");
    Ok(EXIT_OK)
}

fn process_env() -> std::collections::HashMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}
