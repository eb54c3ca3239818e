//! A request to stop, passed down as a value (not a global): SIGINT or SIGTERM during a
//! converge stops it at the next step boundary, so the generation can be recorded as
//! `interrupted` and resumed by the next converge.

use tokio::sync::watch;

/// Cloneable view of "has a stop been requested, and by which signal".
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<Option<i32>>,
    /// Keeps the channel open for [`Shutdown::never`], whose sender nobody else holds.
    _keep: Option<std::sync::Arc<watch::Sender<Option<i32>>>>,
}

/// The sending side, for callers that request a stop themselves (tests, the daemon).
#[derive(Clone, Debug)]
pub struct Trigger(std::sync::Arc<watch::Sender<Option<i32>>>);

impl Trigger {
    /// Ask everything holding the matching [`Shutdown`] to stop, as if by `signal`.
    pub fn fire(&self, signal: i32) {
        self.0.send_replace(Some(signal));
    }
}

impl Shutdown {
    /// A pair: fire the trigger to request a stop.
    pub fn new() -> (Trigger, Shutdown) {
        let (tx, rx) = watch::channel(None);
        (
            Trigger(std::sync::Arc::new(tx)),
            Shutdown { rx, _keep: None },
        )
    }

    /// A stop that is never requested.
    pub fn never() -> Shutdown {
        let (tx, rx) = watch::channel(None);
        Shutdown {
            rx,
            _keep: Some(std::sync::Arc::new(tx)),
        }
    }

    /// Requested by SIGINT or SIGTERM to this process. Must be called inside a runtime.
    pub fn on_signals() -> Shutdown {
        use tokio::signal::unix::{SignalKind, signal};
        let (trigger, shutdown) = Shutdown::new();
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
        tokio::spawn(async move {
            let signal = tokio::select! {
                _ = int.recv() => libc::SIGINT,
                _ = term.recv() => libc::SIGTERM,
            };
            tracing::info!(signal, "stop requested; finishing the current step");
            trigger.fire(signal);
        });
        shutdown
    }

    /// The signal, once a stop was requested.
    pub fn signal(&self) -> Option<i32> {
        *self.rx.borrow()
    }

    /// Resolves with the signal once a stop is requested (at once if it already was).
    pub async fn requested(&self) -> i32 {
        let mut rx = self.rx.clone();
        let signal = rx.wait_for(Option::is_some).await.map(|s| *s);
        match signal {
            Ok(s) => s.expect("waited for Some"),
            // The sender is gone without a stop: nobody can request one any more.
            Err(_) => std::future::pending().await,
        }
    }
}

/// The name of a signal number, for messages.
pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}
