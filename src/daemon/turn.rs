//! One turn of the daemon (`berth run`): read the desired state afresh and converge it,
//! exactly as `berth apply` does, under the project's lock. The scheduler calls it on every
//! trigger; it is never told why (docs/design.md §1).
//!
//! What `apply` would refuse with an exit code, a turn records as the project's standing
//! problem and goes on: an invalid desired state (its `FILE:LINE:COL` shown in status), a
//! failed pre-flight, a poisoned desired state, one that would remove every service. The
//! last good generation keeps running meanwhile, and its drift keeps being repaired.
//! The pre-flight runs when the desired state changes, not on every turn.

use std::path::PathBuf;
use std::sync::Mutex;

use crate::converge::ConvergeError;
use crate::hash::resolved_hash;
use crate::reconcile::{ApplyOutcome, Options, reconcile, repair_drift};
use crate::report::Reporter;
use crate::runtime::Runtime;
use crate::shutdown::Shutdown;
use crate::spec::{self, DesiredState, Selection};
use crate::store::Store;

/// What the daemon converges.
#[derive(Debug, Clone)]
pub struct Target {
    /// The desired state: a file or a directory of `*.toml` files.
    pub file: PathBuf,
    pub selection: Selection,
    /// The state store; the project's lock lives beside it.
    pub state: PathBuf,
    /// A git source instead of `file` (`berth run --git`): the newest commit fetched is
    /// deployed.
    pub git: Option<std::sync::Arc<crate::git::Follow>>,
    /// What the operator lets a commit reach beyond its tree and the host directory
    /// (`--allow-host-path`, `--pass-env`; docs/design.md §12).
    pub grants: spec::Grants,
}

/// A desired state read, or why it cannot be used (what status shows).
async fn read_desired(target: &Target) -> Result<DesiredState, String> {
    let Some(git) = &target.git else {
        let mut d = spec::load(&target.file, &target.selection).map_err(|d| d.to_string())?;
        crate::build_context::fill_context_hashes(&mut d).map_err(|e| e.to_string())?;
        return Ok(d);
    };
    let Some(commit) = git.latest() else {
        return Err(match git.problem() {
            Some(p) => format!("git: nothing fetched yet from {}: {p}", git.describe()),
            None => format!("git: nothing fetched yet from {}", git.describe()),
        });
    };
    let at = format!("commit {} ({})", commit.short(), commit.subject);
    let tree = git
        .repo
        .tree(&commit)
        .await
        .map_err(|e| format!("git: {at}: {e}"))?;
    let selection = Selection {
        overlay: Some(spec::Overlay {
            tree: tree.clone(),
            host: git.host_dir.clone(),
            grants: target.grants.clone(),
        }),
        ..target.selection.clone()
    };
    let file = tree.join(&git.repo.source.path);
    // Paths in messages as the repository names them (`desired-state/x.toml:3:5`).
    let in_repo = |text: String| text.replace(&format!("{}/", tree.display()), "");
    let mut d = spec::load(&file, &selection).map_err(|d| in_repo(format!("{at}: {d}")))?;
    git.repo
        .relocate(&mut d, &tree, &commit)
        .await
        .map_err(|e| in_repo(format!("git: {at}: {e}")))?;
    crate::build_context::fill_context_hashes(&mut d).map_err(|e| in_repo(format!("{at}: {e}")))?;
    d.origin = Some(spec::Origin {
        commit: commit.id.clone(),
        subject: commit.subject.clone(),
    });
    Ok(d)
}

/// How a turn ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnOutcome {
    /// The desired state was read and reconciled (whatever the outcome).
    Reconciled(ApplyOutcome),
    /// The desired state could not be used; the running generation was kept (and its drift
    /// repaired, when there was any). The text is what status shows.
    Kept {
        problem: String,
        repair: Option<ApplyOutcome>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error(transparent)]
    Converge(#[from] ConvergeError),
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
}

impl TurnError {
    /// Whether the engine gave no answer: the turn was not judged, only cut short.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, TurnError::Converge(e) if e.is_unreachable())
    }
}

/// The daemon's memory between turns.
#[derive(Default)]
pub struct Memory {
    /// The project, once any desired state was read (an invalid file does not say).
    pub project: Option<String>,
    /// The desired state names no service (the package's example): with no generation
    /// recorded, nothing desired runs and the project is `converged`, not `unknown`.
    pub names_no_service: bool,
    /// The resolved hash the pre-flight last passed for.
    preflighted: Option<String>,
    /// What is wrong with the desired state now, shown as `blocked` in status.
    pub problem: Option<String>,
    /// Services whose drift repair is held (they keep dying): set by the daemon's
    /// crash-loop policy before each turn.
    pub hold: std::collections::BTreeSet<String>,
    /// The resolved hash of the desired state this turn converges (for [`turn`]'s
    /// record of a panic).
    attempting: Option<String>,
    /// A desired state whose turn panicked, and the problem shown: not converged again.
    panicked: Option<(String, String)>,
}

/// One turn. Errors (the engine, the store) are for the scheduler to back off on.
///
/// A panic inside the turn (a bug berth's input found) is caught here, not left to kill
/// the process: under `Restart=on-failure` the same file would be read again before
/// anything is recorded, a crash loop. It becomes the project's standing problem,
/// `blocked (internal error: …)`, and the desired state that caused it is not converged
/// again until it changes; the last good generation keeps running and its drift is
/// repaired (`docs/design.md` §12).
pub async fn turn<R: Runtime>(
    rt: &R,
    store: &Store,
    target: &Target,
    memory: &Mutex<Memory>,
    report: &Reporter,
    shutdown: &Shutdown,
) -> Result<TurnOutcome, TurnError> {
    use futures::FutureExt;
    use std::panic::AssertUnwindSafe;
    let turn = Turn {
        rt,
        store,
        target,
        memory,
        report,
        shutdown,
    };
    let panic = match AssertUnwindSafe(turn.run()).catch_unwind().await {
        Ok(result) => return result,
        Err(panic) => panic,
    };
    // A lock held while it unwound is poisoned: what it guards is still whole (every
    // writer replaces a field at once), so the daemon goes on with it.
    memory.clear_poison();
    let problem = format!(
        "internal error: {}",
        crate::text::one_line(&panic_message(&*panic), 400)
    );
    tracing::error!(%problem, "a turn panicked; the running generation is kept");
    {
        let mut m = memory.lock().expect("memory lock");
        m.panicked = m.attempting.take().map(|hash| (hash, problem.clone()));
    }
    // The repair of the last good generation may meet the same bug: caught as well.
    match AssertUnwindSafe(turn.keep(problem.clone()))
        .catch_unwind()
        .await
    {
        Ok(kept) => kept,
        Err(_) => {
            memory.clear_poison();
            Ok(turn.kept_unrepaired(problem))
        }
    }
}

/// What a panic said (its payload is a `&str` or a `String` when it came from `panic!`).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".into()
    }
}

/// What one turn works with.
struct Turn<'a, R> {
    rt: &'a R,
    store: &'a Store,
    target: &'a Target,
    memory: &'a Mutex<Memory>,
    report: &'a Reporter,
    shutdown: &'a Shutdown,
}

impl<R: Runtime> Turn<'_, R> {
    /// Read the desired state and reconcile it, or keep the running generation.
    async fn run(&self) -> Result<TurnOutcome, TurnError> {
        let memory = self.memory;
        memory.lock().expect("memory lock").attempting = None;
        let desired = match read_desired(self.target).await {
            Ok(d) => d,
            Err(problem) => {
                tracing::error!(%problem, "the desired state is invalid; the running generation is kept");
                return self.keep(format!("invalid: {problem}")).await;
            }
        };
        crate::redact::register(&desired.redactor());
        let project = desired.project.name.clone();
        let hash = resolved_hash(&desired);
        let (preflight_due, panicked) = {
            let mut m = memory.lock().expect("memory lock");
            m.project = Some(project.clone());
            m.names_no_service = desired.services.is_empty() && desired.migrations.is_none();
            m.attempting = Some(hash.clone());
            let panicked = m
                .panicked
                .as_ref()
                .filter(|(h, _)| *h == hash)
                .map(|(_, p)| p.clone());
            (m.preflighted.as_deref() != Some(hash.as_str()), panicked)
        };
        if let Some(problem) = panicked {
            // This desired state panicked a turn: keep the running generation until it
            // changes (or the daemon restarts with a fixed berth).
            return self.keep(problem).await;
        }
        let mut lock = acquire(self.target, &project, self.shutdown).await?;
        // (Under the lock: a `down` running now has ended by here.)
        // A project taken down on purpose stays down: the daemon does not undo `berth down`
        // at its next trigger; `berth apply` brings the project up again.
        if let Some(g) = self
            .store
            .latest(&project)
            .await
            .map_err(ConvergeError::from)?
            && g.kind == crate::store::Kind::Down
            && g.outcome == crate::store::Outcome::Down
        {
            return Ok(self.kept_unrepaired(format!(
                "taken down with `berth down` (generation {}); `berth apply` brings it up again",
                g.id
            )));
        }
        if preflight_due {
            if let Err(problem) = preflight(self.rt, &desired).await {
                drop(lock);
                tracing::error!(%problem, "the pre-flight failed; the running generation is kept");
                return self.keep(format!("pre-flight failed: {problem}")).await;
            }
            memory.lock().expect("memory lock").preflighted = Some(hash);
        }
        // Services in a crash loop are not repaired while their hold lasts.
        let opts = Options {
            hold: memory.lock().expect("memory lock").hold.clone(),
            ..Default::default()
        };
        let outcome = reconcile(
            self.rt,
            self.store,
            &desired,
            &mut lock,
            opts,
            self.report,
            self.shutdown,
        )
        .await?;
        if let (ApplyOutcome::NoChanges, Some(o)) = (&outcome, &desired.origin) {
            // A commit that changes nothing berth runs: seen, not applied.
            tracing::debug!(commit = %o.commit, subject = %o.subject, "commit seen: its desired state is the one running; nothing applied");
        }
        memory.lock().expect("memory lock").problem = standing_problem(&outcome, &desired);
        Ok(TurnOutcome::Reconciled(outcome))
    }

    /// The desired state cannot be used: keep the running generation, repair its drift.
    async fn keep(&self, problem: String) -> Result<TurnOutcome, TurnError> {
        let (project, hold) = {
            let mut m = self.memory.lock().expect("memory lock");
            m.problem = Some(problem.clone());
            (m.project.clone(), m.hold.clone())
        };
        let repair = match project {
            Some(project) => {
                let _lock = acquire(self.target, &project, self.shutdown).await?;
                repair_drift(
                    self.rt,
                    self.store,
                    &project,
                    &hold,
                    self.report,
                    self.shutdown,
                )
                .await?
            }
            None => None,
        };
        Ok(TurnOutcome::Kept { problem, repair })
    }

    /// Keep the running generation as it is, without a repair: `problem` stands.
    fn kept_unrepaired(&self, problem: String) -> TurnOutcome {
        self.memory.lock().expect("memory lock").problem = Some(problem.clone());
        TurnOutcome::Kept {
            problem,
            repair: None,
        }
    }
}

/// What a reconcile left standing against the desired state (shown as `blocked`): it is
/// poisoned, or it would remove every running service.
fn standing_problem(outcome: &ApplyOutcome, desired: &DesiredState) -> Option<String> {
    match outcome {
        ApplyOutcome::Poisoned { generation, .. } => Some(match &desired.origin {
            Some(o) => format!(
                "commit {} ({}) is poisoned: generation {generation} failed and was rolled back; the next commit that changes the desired state is applied",
                &o.commit[..o.commit.len().min(12)],
                o.subject
            ),
            None => format!(
                "the desired state is poisoned: generation {generation} failed and was rolled back"
            ),
        }),
        ApplyOutcome::WouldRemoveAll { services } => Some(format!(
            "the desired state would remove every running service ({}); run `berth down` to take the project down",
            services.join(", ")
        )),
        _ => None,
    }
}

async fn acquire(
    target: &Target,
    project: &str,
    shutdown: &Shutdown,
) -> Result<crate::lock::ProjectLock, crate::lock::LockError> {
    crate::lock::acquire(&target.state, project, "run", true, shutdown, |holder| {
        tracing::info!(%holder, "waiting for the project's lock");
    })
    .await
}

/// The host pre-flight of `apply`, as one line of problems.
async fn preflight<R: Runtime>(rt: &R, d: &DesiredState) -> Result<(), String> {
    let passed = crate::preflight::check(rt, d)
        .await
        .map_err(|diags| diags.to_string().trim_end().replace('\n', "; "))?;
    crate::preflight::create_missing(&passed.missing_dirs)
        .map(|_| ())
        .map_err(|e| format!("creating data directories: {e}"))
}
