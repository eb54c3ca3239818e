//! `berth migrate status|apply`: the `[migrations]` block's database, from the host.

use std::path::Path;

use clap::Subcommand;

use crate::cmd::{FileArgs, connect, load};
use crate::exit::{INVALID as EXIT_INVALID, OK as EXIT_OK, RUNTIME as EXIT_RUNTIME};
use crate::store::Store;

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Applied and pending migrations (exit 0).
    Status(FileArgs),
    /// Apply the pending migrations, each in its own transaction. Exit 2 when an applied
    /// migration's file was edited, 1 on any other failure.
    Apply(FileArgs),
}

/// `berth migrate status|apply`: against the database service's published host port.
pub async fn run(command: Command, state_path: &Path) -> anyhow::Result<i32> {
    use crate::migrate::{self, Error};
    let args = match &command {
        Command::Status(a) | Command::Apply(a) => a,
    };
    let d = match load(args) {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let Some(m) = &d.migrations else {
        eprintln!(
            "berth: {}: the desired state has no [migrations] block",
            args.file.display()
        );
        return Ok(EXIT_INVALID);
    };
    let service = &d.services[&m.service];
    // Through its published port, else at the running container's address on the
    // project network (as a converge reaches it).
    let url = match migrate::host_url(m, service) {
        Ok(url) => url,
        Err(not_published) => {
            let engine = connect().await?;
            let rt = crate::swarm::local::Local::of(&engine, &d).await?;
            match migrate::step::database_url(&rt, &d, m).await {
                Ok(url) => url,
                Err(e) => anyhow::bail!("{not_published}; nor at its container: {e}"),
            }
        }
    };
    let source = match migrate::Runner::of(m) {
        migrate::Runner::Directory { source, .. } => source,
        migrate::Runner::Job(job) => {
            return migrate_job(command, &d, m, job, &url, state_path).await;
        }
    };
    match command {
        Command::Status(_) => {
            let status = migrate::status(&url, source).await?;
            println!(
                "migrations in {} (database service {:?})",
                source.display(),
                m.service
            );
            for a in &status.applied {
                let note = match (a.success, a.checksum_ok) {
                    (false, _) => "  DIRTY: recorded as half-applied",
                    (_, Some(false)) => "  EDITED since it was applied",
                    (_, None) => "  not in the source",
                    _ => "",
                };
                println!("  applied  {:04} {}{note}", a.version, a.description);
            }
            for p in &status.pending {
                println!("  pending  {:04} {}", p.version, p.description);
            }
            println!(
                "{} applied, {} pending (version {})",
                status.applied.len(),
                status.pending.len(),
                status.version()
            );
            print_generations_schema(state_path, &d.project.name, "schema").await?;
            Ok(EXIT_OK)
        }
        Command::Apply(_) => match migrate::apply(&url, source).await {
            Ok(applied) if applied.is_empty() => {
                println!("No pending migrations.");
                Ok(EXIT_OK)
            }
            Ok(applied) => {
                for p in &applied {
                    println!("applied {:04} {}", p.version, p.description);
                }
                println!("{} migration(s) applied", applied.len());
                Ok(EXIT_OK)
            }
            Err(Error::Edited(e)) => {
                eprintln!("berth: {e}");
                eprintln!("berth: nothing was applied");
                Ok(EXIT_INVALID)
            }
            Err(e) => Err(e.into()),
        },
    }
}

/// The schema each recorded generation reached, when the store has any (it is not created
/// just to say so).
async fn print_generations_schema(
    state_path: &Path,
    project: &str,
    word: &str,
) -> anyhow::Result<()> {
    if !state_path.exists() {
        return Ok(());
    }
    let store = Store::open(state_path).await?;
    let gens = store.history(Some(project)).await?;
    let mut gens = gens
        .iter()
        .filter_map(|g| g.schema().map(|s| (g, s)))
        .peekable();
    if gens.peek().is_some() {
        println!("generations of project {project:?}:");
    }
    for (g, schema) in gens {
        println!("  generation {}  {}  {word} {schema}", g.id, g.outcome);
    }
    Ok(())
}

/// `berth migrate status|apply` with a migration job: the revision the database is at
/// (and each generation reached); `apply` runs the job's `upgrade` now, as a converge
/// would (without a backup: `berth backup` first).
async fn migrate_job(
    command: Command,
    d: &crate::spec::DesiredState,
    m: &crate::spec::Migrations,
    job: &crate::spec::MigrationJob,
    url: &str,
    state_path: &Path,
) -> anyhow::Result<i32> {
    let revision = crate::migrate::job::revision(url, &job.version_table).await?;
    match command {
        Command::Status(_) => {
            println!(
                "migration job {} `{}` (database service {:?})",
                job.image,
                job.upgrade.join(" "),
                m.service
            );
            println!("database at revision {revision}");
            print_generations_schema(state_path, &d.project.name, "revision").await?;
            Ok(EXIT_OK)
        }
        Command::Apply(_) => {
            use crate::runtime::Runtime;
            let rt = connect().await?;
            let Some(image) = rt.inspect_image(&job.image).await? else {
                eprintln!("berth: the job image {} is not present", job.image);
                return Ok(EXIT_RUNTIME);
            };
            println!(
                "running `{}` in {} (revision {revision})",
                job.upgrade.join(" "),
                job.image
            );
            let run = crate::migrate::job::run(&rt, d, m, job, &image.id, &job.upgrade).await?;
            // The job's own output, as a terminal may show it: each line's control
            // characters escaped (docs/design.md §12).
            for line in d.redactor().text(&run.output).lines() {
                println!("{}", crate::text::escaped(line));
            }
            if !run.succeeded() {
                eprintln!("berth: the migration job {}", run.ended());
                return Ok(EXIT_RUNTIME);
            }
            let after = crate::migrate::job::revision(url, &job.version_table).await?;
            println!("database at revision {after}");
            Ok(EXIT_OK)
        }
    }
}
