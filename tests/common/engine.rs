//! A unix-socket proxy between berth and the engine, for the tests that take the engine
//! away from a running berth: it accepts on its own socket and forwards the bytes of each
//! connection both ways to the engine's socket, until the test cuts it, restores it, or
//! tells it to swallow the next container list.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The proxy, listening at `path` while it is not cut; cut when dropped.
///
/// - Cut: it stops accepting (its socket file is removed, so a connect fails at once)
///   and shuts every open connection down, both ways. Restore: it listens again at the
///   same path.
/// - Hang: the next `GET .../containers/json` never reaches the engine, so berth's call
///   waits for an answer that does not come, and nothing more on that connection is
///   forwarded.
pub struct EngineProxy {
    pub path: PathBuf,
    /// The engine's socket: `DOCKER_HOST`'s when it names one, else the default.
    upstream: PathBuf,
    /// Every connection made so far, both ends: what a cut shuts down.
    open: Arc<Mutex<Vec<UnixStream>>>,
    /// Set: swallow the next container list; cleared when one is swallowed.
    hang_next_list: Arc<AtomicBool>,
    /// A container list was swallowed.
    swallowed: Arc<AtomicBool>,
    /// Set to make the accepting thread stop; the thread, while it runs.
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl EngineProxy {
    /// Listen at `path` (a stale file there is removed) and forward to the engine.
    pub fn start(path: PathBuf) -> EngineProxy {
        let upstream = std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|h| h.strip_prefix("unix://").map(Into::into))
            .unwrap_or_else(|| "/var/run/docker.sock".into());
        let mut proxy = EngineProxy {
            path,
            upstream,
            open: Default::default(),
            hang_next_list: Default::default(),
            swallowed: Default::default(),
            stop: Default::default(),
            acceptor: None,
        };
        proxy.restore();
        proxy
    }

    /// What berth is given as its `DOCKER_HOST`.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// Listen (again) and forward every connection to the engine.
    pub fn restore(&mut self) {
        assert!(self.acceptor.is_none(), "the proxy already listens");
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path).unwrap();
        listener.set_nonblocking(true).unwrap();
        self.stop.store(false, Ordering::SeqCst);
        let (stop, open, upstream) = (self.stop.clone(), self.open.clone(), self.upstream.clone());
        let (hang, gone) = (self.hang_next_list.clone(), self.swallowed.clone());
        self.acceptor = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    // Nobody waiting (or a passing error): look again shortly.
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                let Ok(engine) = UnixStream::connect(&upstream) else {
                    continue;
                };
                {
                    let mut open = open.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(engine.try_clone().unwrap());
                }
                let (mut answers, mut to_client) =
                    (engine.try_clone().unwrap(), client.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut answers, &mut to_client);
                    let _ = to_client.shutdown(std::net::Shutdown::Write);
                });
                let (hang, gone) = (hang.clone(), gone.clone());
                std::thread::spawn(move || forward_requests(client, engine, &hang, &gone));
            }
            // The listener is dropped here: nobody accepts any more.
        }));
    }

    /// Stop accepting, remove the socket, and shut every open connection down.
    pub fn cut(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.acceptor.take() {
            t.join().unwrap();
        }
        let _ = std::fs::remove_file(&self.path);
        for c in self.open.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Swallow the next container list berth asks for.
    pub fn hang_next_list(&self) {
        self.hang_next_list.store(true, Ordering::SeqCst);
    }

    /// Whether a container list was swallowed.
    pub fn swallowed(&self) -> bool {
        self.swallowed.load(Ordering::SeqCst)
    }
}

/// Copy berth's requests to the engine; once `hang` is set, the first container list and
/// everything after it on its connection are dropped.
fn forward_requests(
    mut from: UnixStream,
    mut to: UnixStream,
    hang: &AtomicBool,
    gone: &AtomicBool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut swallowing = false;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        let first_line = chunk.split(|b| *b == b'\n').next().unwrap_or_default();
        let is_list = first_line.starts_with(b"GET ")
            && first_line
                .windows(b"/containers/json".len())
                .any(|w| w == b"/containers/json");
        if !swallowing && is_list && hang.swap(false, Ordering::SeqCst) {
            swallowing = true;
            gone.store(true, Ordering::SeqCst);
        }
        if !swallowing && to.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

impl Drop for EngineProxy {
    fn drop(&mut self) {
        self.cut();
    }
}
