//! Progress lines for `apply`: one line per service event ("db: healthy in 1.4 s").
//!
//! Lines go to stdout as they happen, with secrets redacted. On a terminal each line is
//! prefixed with the elapsed time so a person can watch the rollout progress.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

use crate::redact::Redactor;

pub struct Reporter {
    redactor: Redactor,
    start: Instant,
    tty: bool,
    quiet: bool,
    out: Mutex<()>,
}

impl Reporter {
    pub fn new(redactor: Redactor) -> Self {
        Reporter {
            redactor,
            start: Instant::now(),
            tty: std::io::stdout().is_terminal(),
            quiet: false,
            out: Mutex::new(()),
        }
    }

    /// A reporter that prints nothing (library use, tests).
    pub fn quiet() -> Self {
        Reporter {
            quiet: true,
            ..Reporter::new(Redactor::default())
        }
    }

    pub fn service(&self, service: &str, message: &str) {
        self.line(&format!("{service}: {message}"));
    }

    pub fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        let text = self.redactor.text(text);
        let _guard = self.out.lock();
        let mut out = std::io::stdout().lock();
        if self.tty {
            let _ = writeln!(
                out,
                "\x1b[2m[{:>6.1}s]\x1b[0m {text}",
                self.start.elapsed().as_secs_f64()
            );
        } else {
            let _ = writeln!(out, "{text}");
        }
    }
}
