//! One converge at a time per project (docs/design.md §9).
//!
//! The lock is an advisory, byte-range lock on **the state store itself** (`state.db`): an
//! open-file-description lock (`F_OFD_SETLK`) on one byte far past SQLite's own lock
//! bytes, the byte chosen by a hash of the project's name. The kernel drops it when its
//! holder dies, however it dies (`kill -9`, OOM, a power cut before the next boot), so a
//! dead holder can never leave it stuck: the next converge simply gets it and finishes
//! what the dead one left (see [`crate::reconcile`]).
//!
//! Why the store and not a lock file: a lock file (or directory) deleted while held, by
//! hand or by a tidy-up of "stale locks", would be created afresh by the next taker, who
//! would lock the new one and converge beside the holder of the old (docs/design.md §12).
//! The store is the one file no one deletes without deleting the project's state with
//! it. Two projects whose names hash to the same byte (one chance in 2^40) would only
//! wait for each other.
//!
//! While it is held, `locks/<project>/holder.json` beside the store says who holds it
//! (pid, host, since, which command and generation), so a waiting process can tell the
//! person why it waits. Deleting the note loses only the holder's name.
//!
//! Readers (`status`, `history`) never take the lock; they ask [`is_held`] to tell a
//! generation that is `progressing` under a live holder from one whose holder died.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::shutdown::Shutdown;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("lock file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("project {project:?} is being converged by {holder}; not waiting (--no-wait)")]
    Busy {
        project: String,
        holder: Box<Holder>,
    },
    #[error("stopped by signal {signal} while waiting for the lock of project {project:?}")]
    Interrupted { project: String, signal: i32 },
}

/// Who holds a project's lock, as written into the lock file by the holder.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    /// Unix milliseconds when it took the lock.
    pub since_ms: i64,
    /// What it is doing: `apply`, `rollback`, `down`, `run`.
    pub command: String,
    /// The generation it is converging, once it has one.
    pub generation: Option<i64>,
    /// A `berth run`'s HTTP endpoint (`127.0.0.1:9464`), where `berth status` asks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The desired-state file a `berth run` serves; `berth apply` of another file for
    /// its project is refused rather than fought over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.pid == 0 {
            return write!(f, "another berth process (it has not said who it is yet)");
        }
        write!(
            f,
            "berth {} (pid {} on {}, since {}",
            self.command,
            self.pid,
            self.host,
            crate::store::format_ms(self.since_ms)
        )?;
        if let Some(g) = self.generation {
            write!(f, ", generation {g}")?;
        }
        write!(f, ")")
    }
}

/// A held project lock. Dropping it releases the lock (so does the process dying).
#[derive(Debug)]
pub struct ProjectLock {
    /// The state store, open, with the project's byte locked: closing it releases it.
    _store: File,
    /// The directory of the holder note.
    path: PathBuf,
    holder: Holder,
}

/// The name of the lock one `berth run` per project holds (beside the project's own).
pub fn daemon_lock_name(project: &str) -> String {
    format!("{project}.daemon")
}

/// The directory of `project`'s holder note ([`HOLDER_NOTE`]), beside the store.
pub fn lock_path(state: &Path, project: &str) -> PathBuf {
    let dir = state
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    dir.join("locks").join(project)
}

/// The file in a lock's directory that names its holder.
pub const HOLDER_NOTE: &str = "holder.json";

/// Where the project bytes start: far past SQLite's lock bytes (at 1 GiB) and any real
/// size of the store; a lock may lie past a file's end.
const LOCK_BASE: i64 = 1 << 50;

/// The byte of the store locked for `name`.
fn lock_byte(name: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(name.as_bytes());
    let mut n = [0u8; 8];
    n[3..].copy_from_slice(&h[..5]);
    LOCK_BASE + i64::from_be_bytes(n)
}

/// The state store, open for locking (created empty when missing: SQLite takes an empty
/// file for a new database), and the directory of the holder note, made when missing.
fn open(state: &Path, note_dir: &Path) -> Result<File, LockError> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(note_dir)
    {
        Ok(()) => {}
        Err(e) if note_dir.is_dir() => drop(e),
        Err(source) => {
            return Err(LockError::Io {
                path: note_dir.to_path_buf(),
                source,
            });
        }
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(state)
        .map_err(|source| LockError::Io {
            path: state.to_path_buf(),
            source,
        })
}

/// Try to lock `name`'s byte of the open store: exclusively (a converge) or shared (a
/// reader's probe). `Ok(false)` when another open file description holds it.
fn try_lock(store: &File, name: &str, exclusive: bool) -> std::io::Result<bool> {
    let lock = libc::flock {
        l_type: if exclusive {
            libc::F_WRLCK
        } else {
            libc::F_RDLCK
        } as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: lock_byte(name),
        l_len: 1,
        // Must be 0 for open-file-description locks.
        l_pid: 0,
    };
    // SAFETY: fcntl with F_OFD_SETLK reads the flock struct it is given and nothing else;
    // the descriptor is open for as long as `store` lives.
    let r = unsafe { libc::fcntl(store.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown host".into())
}

/// What the holder note says (stale when nobody holds the lock; empty when it was never
/// written or was deleted).
fn read_holder(dir: &Path) -> Holder {
    std::fs::read_to_string(dir.join(HOLDER_NOTE))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// How often a waiting process tries again. Short enough that a no-op `apply` queued
/// behind another is not noticeably delayed, long enough to cost nothing.
const RETRY: Duration = Duration::from_millis(100);

/// Take the project's lock. When another process holds it: with `wait`, call `waiting`
/// once with the holder and try until it is free (or `shutdown` fires); without, fail at
/// once with [`LockError::Busy`].
pub async fn acquire(
    state: &Path,
    project: &str,
    command: &str,
    wait: bool,
    shutdown: &Shutdown,
    waiting: impl FnOnce(&Holder) + Send,
) -> Result<ProjectLock, LockError> {
    let path = lock_path(state, project);
    let store = open(state, &path)?;
    let mut waiting = Some(waiting);
    // Readers probe the lock by taking it for an instant (see `is_held`): even without
    // waiting, a taker tries for a moment before it calls the lock busy.
    let patience = std::time::Instant::now() + Duration::from_millis(300);
    loop {
        match try_lock(&store, project, true) {
            Ok(true) => break,
            Ok(false) => {
                let holder = read_holder(&path);
                if !wait && std::time::Instant::now() < patience {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                if !wait {
                    return Err(LockError::Busy {
                        project: project.to_string(),
                        holder: Box::new(holder),
                    });
                }
                if let Some(say) = waiting.take() {
                    say(&holder);
                }
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    signal = shutdown.requested() => {
                        return Err(LockError::Interrupted { project: project.to_string(), signal });
                    }
                }
            }
            Err(source) => {
                return Err(LockError::Io {
                    path: state.to_path_buf(),
                    source,
                });
            }
        }
    }
    let mut lock = ProjectLock {
        _store: store,
        path,
        holder: Holder {
            pid: std::process::id(),
            host: hostname(),
            since_ms: crate::store::now_ms(),
            command: command.to_string(),
            generation: None,
            endpoint: None,
            file: None,
        },
    };
    lock.write()?;
    Ok(lock)
}

/// Whether some process holds the project's lock right now. Takes and drops it at once
/// when it is free, so it is for readers that must tell a live converge from a dead one.
pub fn is_held(state: &Path, project: &str) -> Result<Option<Holder>, LockError> {
    let io = |source| LockError::Io {
        path: state.to_path_buf(),
        source,
    };
    // Read-only, never created: a reader changes nothing. A read lock needs no more.
    let store = match File::open(state) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io(source)),
    };
    // Shared: two readers probing at once do not see each other as a converge.
    match try_lock(&store, project, false) {
        Ok(true) => Ok(None),
        Ok(false) => Ok(Some(read_holder(&lock_path(state, project)))),
        Err(source) => Err(io(source)),
    }
}

impl Drop for ProjectLock {
    fn drop(&mut self) {
        // Say nothing once released: a later waiter must not name a holder that left.
        // (The store is closed, so the byte unlocked, only after this.)
        let _ = self.write_note("");
    }
}

impl ProjectLock {
    /// Say which generation the holder is converging now.
    pub fn set_generation(&mut self, generation: i64) -> Result<(), LockError> {
        self.holder.generation = Some(generation);
        self.write()
    }

    /// What a `berth run` serves: its endpoint and its desired-state file.
    pub fn set_serves(&mut self, endpoint: Option<String>, file: String) -> Result<(), LockError> {
        self.holder.endpoint = endpoint;
        self.holder.file = Some(file);
        self.write()
    }

    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    /// Write the holder note whole: a temporary file renamed over it, so a reader never
    /// sees half of it (and a deleted note comes back with the next write).
    fn write(&mut self) -> Result<(), LockError> {
        let text = serde_json::to_string(&self.holder).expect("holder serializes");
        self.write_note(&text)
    }

    fn write_note(&self, text: &str) -> Result<(), LockError> {
        let note = self.path.join(HOLDER_NOTE);
        let tmp = self
            .path
            .join(format!(".{HOLDER_NOTE}.{}", std::process::id()));
        let io = |source| LockError::Io {
            path: note.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, &note).map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_taker_is_told_who_holds_the_lock_and_gets_it_once_released() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.db");
        let never = Shutdown::never();
        let mut first = acquire(&state, "p", "apply", false, &never, |_| {})
            .await
            .unwrap();
        first.set_generation(7).unwrap();
        let err = acquire(&state, "p", "apply", false, &never, |_| {})
            .await
            .unwrap_err();
        let LockError::Busy { holder, .. } = &err else {
            panic!("expected Busy, got {err}");
        };
        assert_eq!(holder.pid, std::process::id());
        assert_eq!(holder.generation, Some(7));
        assert!(err.to_string().contains("generation 7"), "{err}");
        assert!(is_held(&state, "p").unwrap().is_some());
        // Another project is independent.
        assert!(is_held(&state, "q").unwrap().is_none());

        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let state = state.clone();
            tokio::spawn(async move {
                acquire(&state, "p", "apply", true, &Shutdown::never(), move |h| {
                    tx.send(h.clone()).unwrap()
                })
                .await
            })
        };
        let told = tokio::task::spawn_blocking(move || rx.recv().unwrap())
            .await
            .unwrap();
        assert_eq!(told.command, "apply");
        drop(first);
        let second = waiter.await.unwrap().unwrap();
        assert_eq!(second.holder().generation, None);
        drop(second);
        assert!(is_held(&state, "p").unwrap().is_none());
    }

    #[tokio::test]
    async fn deleting_every_lock_file_there_is_does_not_free_a_held_lock() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.db");
        let never = Shutdown::never();
        let first = acquire(&state, "p", "apply", false, &never, |_| {})
            .await
            .unwrap();
        // The tidy-up of "stale locks" at its most thorough: `rm -r locks/`.
        std::fs::remove_dir_all(dir.path().join("locks")).unwrap();
        let err = acquire(&state, "p", "apply", false, &never, |_| {})
            .await
            .unwrap_err();
        let LockError::Busy { holder, .. } = &err else {
            panic!("expected Busy, got {err}");
        };
        // Only the holder's name was lost with its note.
        assert_eq!(holder.pid, 0, "{err}");
        assert!(is_held(&state, "p").unwrap().is_some());
        // The daemon's lock of the same project is another byte.
        let daemon = acquire(&state, &daemon_lock_name("p"), "run", false, &never, |_| {})
            .await
            .unwrap();
        drop(first);
        assert!(is_held(&state, "p").unwrap().is_none());
        assert!(is_held(&state, &daemon_lock_name("p")).unwrap().is_some());
        acquire(&state, "p", "apply", false, &never, |_| {})
            .await
            .unwrap();
        drop(daemon);
    }

    #[test]
    fn a_reader_creates_no_store() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.db");
        assert!(is_held(&state, "p").unwrap().is_none());
        assert!(!state.exists());
    }
}
