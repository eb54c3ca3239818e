//! Secrets stay secret (docs/design.md §11).
//!
//! Two rules: values that came from env files are replaced wherever they occur, and the
//! value of any variable whose name looks like a secret is never shown.
//!
//! Printed output goes through a [`Redactor`] made from the desired state
//! ([`crate::spec::DesiredState::redactor`]). Log lines cannot be reached that way (any
//! `tracing` call may format a spec), so the binary's subscriber writes through
//! [`LogWriter`], which redacts every value ever passed to [`register`] in this process.

use std::io::Write;
use std::sync::RwLock;

/// What berth prints in place of a secret.
pub const REDACTED: &str = "<redacted>";

/// Does this variable name look like it holds a secret?
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    ["KEY", "PASSWORD", "SECRET", "TOKEN"]
        .iter()
        .any(|p| k.contains(p))
}

/// Redacts known secret values from text.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    values: Vec<String>,
}

impl Redactor {
    pub fn new(mut values: Vec<String>) -> Self {
        // Longest first, so a secret that contains another is replaced whole.
        values.retain(|v| v.len() >= 3);
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        Redactor { values }
    }

    /// Add more secret values (keeping the longest-first order).
    pub fn extend(&mut self, values: impl IntoIterator<Item = String>) {
        let mut all = std::mem::take(&mut self.values);
        all.extend(values);
        all.sort();
        all.dedup();
        *self = Redactor::new(all);
    }

    pub fn text(&self, s: &str) -> String {
        let mut out = s.to_string();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), REDACTED);
            }
        }
        out
    }

    /// An environment entry as printable `KEY=VALUE`.
    pub fn env_value(&self, key: &str, value: &str) -> String {
        if is_secret_key(key) {
            REDACTED.to_string()
        } else {
            self.text(value)
        }
    }
}

/// The password of a `scheme://user:password@host` value, percent-decoded.
pub fn url_password(v: &str) -> Option<String> {
    let url = url::Url::parse(v).ok()?;
    let p = url.password()?;
    let decoded = percent_decode(p);
    Some(decoded).filter(|p| !p.is_empty())
}

/// `%XX` escapes decoded (a URL's user, password or path), bytes as they are otherwise.
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every secret this process has been told about, for the log writer.
static REGISTERED: RwLock<Option<Redactor>> = RwLock::new(None);

/// Make the log output hide `redactor`'s values from now on. Call it as soon as a desired
/// state is loaded or a generation is read, before anything logs about it.
pub fn register(redactor: &Redactor) {
    // A value is also hidden as `Debug` prints it (quotes and backslashes escaped), since
    // log fields are often formatted with `?`.
    let escaped = redactor.values.iter().filter_map(|v| {
        let e = v.escape_debug().to_string();
        (e != *v).then_some(e)
    });
    let values: Vec<String> = redactor.values.iter().cloned().chain(escaped).collect();
    let mut global = REGISTERED.write().unwrap_or_else(|e| e.into_inner());
    global.get_or_insert_with(Redactor::default).extend(values);
}

/// A redactor with every secret registered so far (for output not tied to one desired
/// state, like the daemon's progress lines).
pub fn registered() -> Redactor {
    let global = REGISTERED.read().unwrap_or_else(|e| e.into_inner());
    global.clone().unwrap_or_default()
}

/// `text` with every registered secret replaced.
pub fn registered_text(text: &str) -> String {
    let global = REGISTERED.read().unwrap_or_else(|e| e.into_inner());
    match global.as_ref() {
        Some(r) => r.text(text),
        None => text.to_string(),
    }
}

/// A `tracing_subscriber` writer for stderr that redacts every registered secret.
///
/// The fmt layer asks for one writer per event and writes the formatted event into it,
/// so each [`LogLine`] buffers its bytes and redacts the whole line when dropped: a
/// secret split across two `write` calls is still found.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;
    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::new())
    }
}

/// One log event on its way to stderr; see [`LogWriter`].
pub struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let text = registered_text(&String::from_utf8_lossy(&self.0));
        // Nowhere to report a failed write to stderr.
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_and_env_file_values_are_hidden() {
        let r = Redactor::new(vec!["hunter22".into()]);
        assert_eq!(r.env_value("DB_PASSWORD", "x"), REDACTED);
        assert_eq!(r.env_value("API_TOKEN", "x"), REDACTED);
        assert_eq!(r.env_value("MODE", "hunter22"), REDACTED);
        assert_eq!(r.text("url=pg://u:hunter22@db"), "url=pg://u:<redacted>@db");
        assert_eq!(r.env_value("MODE", "fast"), "fast");
    }

    #[test]
    fn log_lines_hide_registered_secrets_even_when_debug_escaped() {
        register(&Redactor::new(vec!["s3cr\"et-value".into()]));
        let line = format!("spec={:?} raw=s3cr\"et-value", "s3cr\"et-value");
        let out = registered_text(&line);
        assert!(!out.contains("et-value"), "{out}");
        assert_eq!(out, format!("spec=\"{REDACTED}\" raw={REDACTED}"));
    }

    #[test]
    fn url_passwords_are_decoded() {
        assert_eq!(
            url_password("postgresql://u:p%40ss@db/x").as_deref(),
            Some("p@ss")
        );
        assert_eq!(url_password("postgresql://u@db/x"), None);
    }
}
