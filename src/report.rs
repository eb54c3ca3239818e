//! Progress for `apply`: one line per service event ("db: healthy in 1.4 s").
//!
//! Not on a terminal (CI, pipes, logs) every event is a plain line as it happens. On a
//! terminal berth keeps a live block, one row per service with its latest state and the
//! time since apply began, redrawn in place; other messages scroll above it. Secrets are
//! redacted either way.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

use crate::redact::Redactor;

pub struct Reporter {
    redactor: Redactor,
    start: Instant,
    /// Some on a terminal: the live rows (service, state, seconds) and how many are drawn.
    live: Option<Mutex<Live>>,
    quiet: bool,
}

#[derive(Default)]
struct Live {
    rows: Vec<(String, String, f64)>,
    drawn: usize,
}

impl Reporter {
    pub fn new(redactor: Redactor) -> Self {
        Reporter {
            redactor,
            start: Instant::now(),
            live: std::io::stdout()
                .is_terminal()
                .then(|| Mutex::new(Live::default())),
            quiet: false,
        }
    }

    /// A reporter that prints nothing (library use, tests).
    pub fn quiet() -> Self {
        Reporter {
            quiet: true,
            live: None,
            ..Reporter::new(Redactor::default())
        }
    }

    pub fn service(&self, service: &str, message: &str) {
        if self.quiet {
            return;
        }
        // A service's message may quote its container (a probe's output, an exit
        // message): one line, no escape sequence reaches the terminal (§12).
        let message = crate::text::one_line(&self.redactor.text(message), 1000);
        match &self.live {
            None => plain(&format!("{service}: {message}")),
            Some(live) => {
                let mut live = live.lock().unwrap_or_else(|e| e.into_inner());
                let t = self.start.elapsed().as_secs_f64();
                match live.rows.iter_mut().find(|r| r.0 == service) {
                    Some(row) => *row = (service.to_string(), message, t),
                    None => live.rows.push((service.to_string(), message, t)),
                }
                redraw(&mut live, None);
            }
        }
    }

    /// A passing state (pull progress): redrawn in the live block on a terminal, dropped
    /// otherwise, where the events before and after it say enough.
    pub fn progress(&self, service: &str, message: &str) {
        if self.live.is_some() {
            self.service(service, message);
        }
    }

    pub fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        // Lines berth composes may span several; each is cleaned of control characters
        // (escape sequences a container's words could carry).
        let text = self
            .redactor
            .text(text)
            .split('\n')
            .map(crate::text::escaped)
            .collect::<Vec<_>>()
            .join("\n");
        match &self.live {
            None => plain(&text),
            Some(live) => {
                let mut live = live.lock().unwrap_or_else(|e| e.into_inner());
                redraw(&mut live, Some(&text));
            }
        }
    }
}

fn plain(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

/// Erase the live block, print `above` (if any), then draw the rows again.
fn redraw(live: &mut Live, above: Option<&str>) {
    let mut out = std::io::stdout().lock();
    if live.drawn > 0 {
        let _ = write!(out, "\x1b[{}A\x1b[J", live.drawn);
    }
    if let Some(text) = above {
        let _ = writeln!(out, "{text}");
    }
    let width = live.rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    for (service, state, t) in &live.rows {
        // One screen row each, or the cursor-up count above would be wrong.
        let state: String = state.chars().take(90).collect();
        let _ = writeln!(out, "  {service:<width$}  {state}  \x1b[2m[{t:.1}s]\x1b[0m");
    }
    live.drawn = live.rows.len();
    let _ = out.flush();
}
