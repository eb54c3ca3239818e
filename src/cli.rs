//! The command line: the contract other tools and scripts rely on (DESIGN.md).
//!
//! Exit codes: 0 converged; 1 runtime error; 2 invalid desired state (nothing changed);
//! 3 gate failed and rolled back; 4 gate failed and the rollback failed too (degraded);
//! 5 desired state poisoned. With `auto_revert = false` a failed gate leaves the stack as
//! it is and exits 1.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::converge::{ApplyOutcome, apply};
use crate::diag::Diagnostics;
use crate::observe::observe;
use crate::plan::plan;
use crate::redact::Redactor;
use crate::report::Reporter;
use crate::runtime::Runtime;
use crate::runtime::docker::DockerRuntime;
use crate::spec::{self, DesiredState};
use crate::store::{Store, format_ms};

pub const EXIT_OK: i32 = 0;
pub const EXIT_RUNTIME: i32 = 1;
pub const EXIT_INVALID: i32 = 2;
pub const EXIT_ROLLED_BACK: i32 = 3;
pub const EXIT_DEGRADED: i32 = 4;
pub const EXIT_POISONED: i32 = 5;

#[derive(Parser, Debug)]
#[command(
    name = "berth",
    version,
    about = "Converge a Docker host to a desired-state TOML, gated on health."
)]
pub struct Cli {
    /// The state store (SQLite file).
    #[arg(long, global = true, env = "BERTH_STATE")]
    pub state: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Args, Debug, Clone)]
pub struct FileArgs {
    /// Desired state: a TOML file or a directory of *.toml files.
    #[arg(
        short = 'f',
        long = "file",
        env = "BERTH_FILE",
        default_value = "desired-state"
    )]
    pub file: PathBuf,
    /// Enable services of this profile (repeatable), besides [project].profiles.
    #[arg(long = "profile")]
    pub profiles: Vec<String>,
    /// Leave this service out (repeatable, or comma-separated): for a host that cannot
    /// get its image. A running container of it is removed like any dropped service.
    #[arg(long = "exclude", value_delimiter = ',')]
    pub exclude: Vec<String>,
}

impl FileArgs {
    pub fn selection(&self) -> spec::Selection {
        spec::Selection {
            profiles: self.profiles.clone(),
            exclude: self.exclude.clone(),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check the desired state and run the pre-flight; exit 2 with FILE:LINE:COL on error.
    Validate {
        #[command(flatten)]
        args: FileArgs,
        /// Check the files and the environment only: not the Docker engine, host ports,
        /// data directories or disk space (and create nothing).
        #[arg(long = "static")]
        static_only: bool,
    },
    /// Print what apply would do; "No changes." when converged.
    Plan(FileArgs),
    /// Converge once, with progress.
    Apply {
        #[command(flatten)]
        args: FileArgs,
        /// Apply even a desired state that failed and was rolled back before.
        #[arg(long)]
        force: bool,
    },
    /// Go back to the last good generation, or the one named; recorded as a new generation.
    Rollback {
        generation: Option<i64>,
        /// The project (default: the only project in the state store).
        #[arg(long)]
        project: Option<String>,
    },
    /// Current generation, status, and each service's state and health.
    Status {
        #[arg(long)]
        json: bool,
        /// Only this project (default: every project in the state store).
        #[arg(long)]
        project: Option<String>,
        /// Also judge this desired state: `blocked` when it is poisoned.
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        /// With -f: the profiles and exclusions it is applied with.
        #[arg(long = "profile")]
        profiles: Vec<String>,
        #[arg(long = "exclude", value_delimiter = ',')]
        exclude: Vec<String>,
    },
    /// Probe every service once, like the runbook's health_check.sh; exit 0 only when
    /// all pass (1 otherwise).
    Check {
        #[command(flatten)]
        args: FileArgs,
        #[arg(long)]
        json: bool,
    },
    /// Generations, outcomes and reasons.
    History {
        #[arg(long)]
        json: bool,
        #[arg(long)]
        project: Option<String>,
    },
}

/// Run the CLI; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    match run_inner(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth: error: {e:#}");
            EXIT_RUNTIME
        }
    }
}

fn load(args: &FileArgs) -> Result<DesiredState, i32> {
    let mut d = spec::load(&args.file, &args.selection()).map_err(|d: Diagnostics| {
        eprintln!("{d}");
        eprintln!("berth: invalid desired state; nothing was changed");
        EXIT_INVALID
    })?;
    // Build contexts are part of the desired state: hash them once, here.
    crate::build_context::fill_context_hashes(&mut d).map_err(|e| {
        eprintln!("berth: error: {e}");
        EXIT_RUNTIME
    })?;
    Ok(d)
}

/// A passed pre-flight: the engine it reached, what passed, and the data directories it
/// then created.
struct Preflighted {
    rt: DockerRuntime,
    passed: Vec<String>,
    created: Vec<String>,
}

/// The host pre-flight; on success the missing data directories are created. A failure
/// prints its diagnostics and changes nothing (exit 2).
async fn preflight(d: &DesiredState) -> Result<Preflighted, i32> {
    let invalid = |diags: Diagnostics| {
        eprintln!("{diags}");
        eprintln!("berth: pre-flight failed; nothing was changed");
        EXIT_INVALID
    };
    let rt = DockerRuntime::connect().await.map_err(|e| {
        let file = d.files.first().cloned().unwrap_or_default();
        invalid(Diagnostics(vec![crate::diag::Diagnostic::file(
            &file,
            format!("preflight: the Docker engine is not reachable: {e}"),
        )]))
    })?;
    let passed = crate::preflight::check(&rt, d).await.map_err(invalid)?;
    let created = crate::preflight::create_missing(&passed.missing_dirs).map_err(|e| {
        eprintln!("berth: error: creating data directories: {e}");
        EXIT_RUNTIME
    })?;
    Ok(Preflighted {
        rt,
        passed: passed.lines,
        created,
    })
}

async fn run_inner(cli: Cli) -> anyhow::Result<i32> {
    let state_path = cli.state.clone().unwrap_or_else(crate::store::default_path);
    match cli.command {
        Command::Validate { args, static_only } => {
            let d = match load(&args) {
                Ok(d) => d,
                Err(code) => return Ok(code),
            };
            if !static_only {
                let done = match preflight(&d).await {
                    Ok(done) => done,
                    Err(code) => return Ok(code),
                };
                for l in done.passed.iter().chain(&done.created) {
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
        Command::Plan(args) => {
            let d = match load(&args) {
                Ok(d) => d,
                Err(code) => return Ok(code),
            };
            let rt = DockerRuntime::connect().await?;
            let observed = observe(&rt, &d).await?;
            let p = plan(&d, &observed);
            print!(
                "{}",
                Redactor::new(d.secret_values.clone()).text(&p.to_string())
            );
            Ok(EXIT_OK)
        }
        Command::Apply { args, force } => {
            let d = match load(&args) {
                Ok(d) => d,
                Err(code) => return Ok(code),
            };
            let Preflighted {
                rt,
                passed,
                created,
            } = match preflight(&d).await {
                Ok(done) => done,
                Err(code) => return Ok(code),
            };
            if d.preflight.declared {
                println!("pre-flight: {} checks passed", passed.len());
            }
            for l in created {
                println!("pre-flight: {l}");
            }
            let store = Store::open(&state_path).await?;
            let redactor = Redactor::new(d.secret_values.clone());
            let report = Reporter::new(redactor.clone());
            let project = &d.project.name;
            Ok(match apply(&rt, &store, &d, &report, force).await? {
                ApplyOutcome::NoChanges => {
                    println!("No changes.");
                    EXIT_OK
                }
                ApplyOutcome::Converged { generation } => {
                    println!(
                        "Converged: generation {generation} of project {project:?} is healthy."
                    );
                    EXIT_OK
                }
                ApplyOutcome::GateFailed { generation, reason } => {
                    eprintln!(
                        "berth: generation {generation} failed: {}",
                        redactor.text(&reason)
                    );
                    eprintln!(
                        "berth: auto_revert is off; project {project:?} is left as it is for inspection"
                    );
                    EXIT_RUNTIME
                }
                ApplyOutcome::RolledBack {
                    generation,
                    to,
                    reason,
                } => {
                    eprintln!(
                        "berth: generation {generation} failed: {}",
                        redactor.text(&reason)
                    );
                    eprintln!(
                        "berth: rolled back: project {project:?} is running generation {to} again (healthy); generation {generation} will not be applied again until the desired state changes or --force is given"
                    );
                    EXIT_ROLLED_BACK
                }
                ApplyOutcome::Degraded { generation, reason } => {
                    eprintln!(
                        "berth: generation {generation} failed: {}",
                        redactor.text(&reason)
                    );
                    eprintln!(
                        "berth: project {project:?} is degraded; the failed containers are left for inspection"
                    );
                    EXIT_DEGRADED
                }
                ApplyOutcome::Poisoned { generation, reason } => {
                    eprintln!(
                        "berth: this desired state failed as generation {generation} and was rolled back: {}",
                        redactor.text(&reason)
                    );
                    eprintln!(
                        "berth: not applying it again; change the desired state, or pass --force"
                    );
                    EXIT_POISONED
                }
            })
        }
        Command::Check { args, json } => {
            let d = match load(&args) {
                Ok(d) => d,
                Err(code) => return Ok(code),
            };
            let rt = DockerRuntime::connect().await?;
            let report = crate::check::check(&rt, &d).await?;
            let redactor = Redactor::new(d.secret_values.clone());
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
        Command::Rollback {
            generation,
            project,
        } => {
            let store = Store::open(&state_path).await?;
            let project = match project {
                Some(p) => p,
                None => {
                    let mut all = store.projects().await?;
                    if all.len() != 1 {
                        anyhow::bail!(
                            "the state store holds {} projects; name one with --project",
                            all.len()
                        );
                    }
                    all.remove(0)
                }
            };
            let latest = store
                .latest(&project)
                .await?
                .ok_or_else(|| anyhow::anyhow!("project {project:?} has no generations"))?;
            let target = match generation {
                Some(g) => store
                    .get(&project, g)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("project {project:?} has no generation {g}"))?,
                None => store.last_good(&project, latest.id).await?.ok_or_else(|| {
                    anyhow::anyhow!(
                        "project {project:?} has no healthy generation before {}",
                        latest.id
                    )
                })?,
            };
            let rt = DockerRuntime::connect().await?;
            let secrets = crate::converge::desired_of(&target)?.secret_values;
            let redactor = Redactor::new(secrets);
            let report = Reporter::new(redactor.clone());
            report.line(&format!(
                "rolling project {project:?} back to generation {}",
                target.id
            ));
            let (generation, result) =
                crate::converge::rollback(&rt, &store, &target, &report).await?;
            Ok(match result {
                Ok(()) => {
                    println!(
                        "Rolled back: generation {generation} runs generation {}'s spec and is healthy.",
                        target.id
                    );
                    EXIT_OK
                }
                Err(reason) => {
                    eprintln!(
                        "berth: rollback generation {generation} failed: {}",
                        redactor.text(&reason)
                    );
                    EXIT_DEGRADED
                }
            })
        }
        Command::Status {
            json: as_json,
            project,
            file,
            profiles,
            exclude,
        } => {
            let poisoned_hash = match &file {
                Some(f) => {
                    let args = FileArgs {
                        file: f.clone(),
                        profiles,
                        exclude,
                    };
                    // The same load as apply's, so the hash includes the build contexts.
                    match load(&args) {
                        Ok(d) => Some((d.project.name, d.source_hash)),
                        Err(code) => return Ok(code),
                    }
                }
                None => None,
            };
            let store = Store::open(&state_path).await?;
            let rt = DockerRuntime::connect().await?;
            let projects = match project {
                Some(p) => vec![p],
                None => store.projects().await?,
            };
            let mut out = Vec::new();
            for p in projects {
                let mut st = project_status(&rt, &store, &p).await?;
                // The desired state on disk is the one that failed: berth will not apply it.
                if let Some((name, hash)) = &poisoned_hash
                    && *name == p
                    && let Some(latest) = store.latest(&p).await?
                    && latest.outcome == "rolled-back"
                    && latest.source_hash == *hash
                {
                    st["status"] = json!("blocked");
                    st["reason"] = json!(format!(
                        "the desired state is poisoned: generation {} failed and was rolled back",
                        latest.id
                    ));
                }
                out.push(st);
            }
            if as_json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else if out.is_empty() {
                println!("No generations recorded in {}.", state_path.display());
            } else {
                for s in &out {
                    print_status(s);
                }
            }
            Ok(EXIT_OK)
        }
        Command::History {
            json: as_json,
            project,
        } => {
            let store = Store::open(&state_path).await?;
            let gens = store.history(project.as_deref()).await?;
            let redacted: Vec<_> = gens
                .iter()
                .map(|g| {
                    let secrets = serde_json::from_str::<DesiredState>(&g.spec_json)
                        .map(|d| d.secret_values)
                        .unwrap_or_default();
                    let r = Redactor::new(secrets);
                    let mut g = g.clone();
                    g.reason = g.reason.map(|x| r.text(&x));
                    g
                })
                .collect();
            if as_json {
                println!("{}", serde_json::to_string_pretty(&redacted)?);
            } else {
                println!(
                    "{:<4} {:<14} {:<23} {:<12} REASON",
                    "GEN", "PROJECT", "STARTED", "OUTCOME"
                );
                for g in &redacted {
                    println!(
                        "{:<4} {:<14} {:<23} {:<12} {}",
                        g.id,
                        g.project,
                        format_ms(g.started_ms),
                        g.outcome,
                        g.reason.as_deref().unwrap_or("-")
                    );
                }
            }
            Ok(EXIT_OK)
        }
    }
}

async fn project_status<R: Runtime>(
    rt: &R,
    store: &Store,
    project: &str,
) -> anyhow::Result<serde_json::Value> {
    let Some(latest) = store.latest(project).await? else {
        return Ok(json!({"project": project, "status": "unknown"}));
    };
    // A rolled-back generation's stack runs the generation it went back to.
    let running = match latest.reverted_to {
        Some(to) if latest.outcome == "rolled-back" => {
            store.get(project, to).await?.unwrap_or(latest.clone())
        }
        _ => latest.clone(),
    };
    let desired = crate::converge::desired_of(&running)?;
    let redactor = Redactor::new(desired.secret_values.clone());
    let observed =
        crate::converge::observed_with_pins(rt, &desired, &crate::converge::pins_of(&running))
            .await?;
    let p = plan(&desired, &observed);
    let (status, reason) = match latest.outcome.as_str() {
        "healthy" if p.is_noop() => ("converged", None),
        "healthy" => (
            "degraded",
            Some(format!(
                "drift: {}",
                p.steps
                    .iter()
                    .filter(|s| s.action != crate::plan::Action::Noop)
                    .map(|s| format!("{} ({})", s.service, s.reason))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        ),
        "progressing" => ("progressing", None),
        "rolled-back" if p.is_noop() => ("rolled-back", latest.reason.clone()),
        _ => ("degraded", latest.reason.clone()),
    };
    let services: Vec<_> = desired
        .services
        .values()
        .map(|s| {
            let c = observed
                .containers
                .iter()
                .find(|c| c.name == s.container_name);
            json!({
                "service": s.name,
                "container": s.container_name,
                "state": c.map(|c| c.state.clone()).unwrap_or_else(|| "missing".into()),
                "health": c.and_then(|c| c.health.clone()),
                "generation": c.and_then(|c| c.generation),
            })
        })
        .collect();
    Ok(json!({
        "project": project,
        "generation": latest.id,
        "outcome": latest.outcome,
        "status": status,
        "reason": reason.map(|r| redactor.text(&r)),
        "services": services,
    }))
}

fn print_status(s: &serde_json::Value) {
    let reason = s["reason"]
        .as_str()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    println!(
        "project {}: {}{} — generation {}",
        s["project"].as_str().unwrap_or("?"),
        s["status"].as_str().unwrap_or("?"),
        reason,
        s["generation"]
    );
    if let Some(services) = s["services"].as_array() {
        for svc in services {
            println!(
                "  {:<16} {:<10} {:<10} gen {}",
                svc["service"].as_str().unwrap_or(""),
                svc["state"].as_str().unwrap_or(""),
                svc["health"].as_str().unwrap_or("-"),
                svc["generation"]
            );
        }
    }
}
