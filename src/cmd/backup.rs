//! `berth backup`: one backup of the `[migrations]` database now.

use std::path::Path;

use crate::cmd::{FileArgs, connect, load};
use crate::exit::{INVALID as EXIT_INVALID, OK as EXIT_OK};
use crate::spec::DesiredState;
use crate::store::Store;

/// The desired state of a backup or restore, or the exit code when it cannot have one.
pub(super) fn load_with_migrations(args: &FileArgs) -> Result<DesiredState, i32> {
    let d = load(args)?;
    if d.migrations.is_none() {
        eprintln!(
            "berth: {}: the desired state has no [migrations] block: nothing to back up",
            args.file.display()
        );
        return Err(EXIT_INVALID);
    }
    Ok(d)
}

/// `berth backup`: one backup now, its path and size. It is recorded in the state store
/// (retention deletes only recorded backups); what retention could not do is a warning.
pub async fn run(args: FileArgs, state_path: &Path) -> anyhow::Result<i32> {
    let d = match load_with_migrations(&args) {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let m = d.migrations.as_ref().expect("checked above");
    let engine = connect().await?;
    let rt = crate::swarm::local::Local::of(&engine, &d).await?;
    let store = Store::open(state_path).await?;
    let taken = crate::backup::take(&rt, Some(&store), &d.project.name, m).await?;
    println!(
        "backup: {} ({})",
        taken.path.display(),
        crate::preflight::human(taken.bytes)
    );
    for s in &taken.snapshots {
        let size = std::fs::metadata(s).map(|m| m.len()).unwrap_or_default();
        println!(
            "snapshot: {} ({})",
            s.display(),
            crate::preflight::human(size)
        );
    }
    for r in &taken.removed {
        println!("retention: removed {}", r.display());
    }
    for w in &taken.warnings {
        eprintln!("berth: warning: {w}");
    }
    Ok(EXIT_OK)
}
