//! `berth restore FILE`: a backup into the `[migrations]` database, swapped in.

use std::path::{Path, PathBuf};

use crate::cmd::backup::load_with_migrations;
use crate::cmd::{FileArgs, LockArgs, connect, lock, lock_failed};
use crate::exit::{INVALID as EXIT_INVALID, OK as EXIT_OK, RUNTIME as EXIT_RUNTIME};
use crate::shutdown::Shutdown;
use crate::store::Store;

/// `berth restore`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The backup (`.sql.gz`).
    pub backup: PathBuf,
    #[command(flatten)]
    pub args: FileArgs,
    #[command(flatten)]
    pub lock: LockArgs,
}

/// `berth restore FILE`: under the project's lock, so no converge runs meanwhile.
pub async fn run(
    Args {
        backup: file,
        args,
        lock: lock_args,
    }: Args,
    state_path: &Path,
) -> anyhow::Result<i32> {
    let d = match load_with_migrations(&args) {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let project = d.project.name.clone();
    // Its start checked before anything else: a foreign file is refused without even the
    // lock. The rest is checked as the restore reads it, before anything in use changes.
    match crate::backup::check_start(&file) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("berth: {e}");
            eprintln!("berth: nothing was changed");
            return Ok(match e {
                crate::backup::Error::NotADump { .. } | crate::backup::Error::Unsafe { .. } => {
                    EXIT_INVALID
                }
                _ => EXIT_RUNTIME,
            });
        }
    };
    let shutdown = Shutdown::on_signals();
    let engine = connect().await?;
    let rt = crate::swarm::local::Local::of(&engine, &d).await?;
    let _held = match lock(state_path, &project, "restore", &lock_args, &shutdown).await {
        Ok(l) => l,
        Err(e) => return lock_failed(e),
    };
    let say = |line: &str| println!("restore: {line}");
    // The operator's choice, whatever berth recorded: the restore says when the file is
    // not one berth wrote, or changed since.
    let recorded = match state_path.exists() {
        true => {
            let store = Store::open(state_path).await?;
            let mut found = None;
            for path in [
                std::path::absolute(&file).ok(),
                std::fs::canonicalize(&file).ok(),
            ]
            .into_iter()
            .flatten()
            {
                if found.is_none() {
                    found = store.backup_record(&path.to_string_lossy()).await?;
                }
            }
            found.map(|r| r.sha256)
        }
        false => None,
    };
    let trust = crate::backup::Trust::Operator {
        recorded: recorded.as_deref(),
    };
    let restored = crate::backup::restore(&rt, &d, &file, trust, &say).await;
    let message = match &restored {
        Ok(r) => format!(
            "restored {} into database {} ({} tables); the previous one is kept as {}",
            file.display(),
            r.database,
            r.tables,
            r.kept_as
        ),
        Err(e) => format!("restore of {} failed: {e}", file.display()),
    };
    // An event of the project's newest generation, where there is a store.
    if state_path.exists() {
        let store = Store::open(state_path).await?;
        if let Some(g) = store.latest(&project).await? {
            let service = d.migrations.as_ref().map(|m| m.service.as_str());
            store.add_event(g.id, "restore", service, &message).await?;
        }
    }
    match restored {
        Ok(_) => {
            println!("{message}");
            Ok(EXIT_OK)
        }
        Err(crate::backup::Error::NotADump { .. } | crate::backup::Error::Unsafe { .. }) => {
            eprintln!("berth: {message}");
            eprintln!("berth: nothing was changed");
            Ok(EXIT_INVALID)
        }
        Err(e) => Err(e.into()),
    }
}
