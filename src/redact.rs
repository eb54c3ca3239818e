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

/// What a name holds when it looks like it holds a secret: `DB_PASS`, `SMTP_PASSWD`,
/// `DB_PASSWORD` (all `PASS`), `API_CREDENTIALS`, `BASIC_AUTH` and `OAUTH_CLIENT`
/// (`AUTH`), `API_KEY`, `JWT_SECRET`, `GITHUB_TOKEN`. Broad on purpose: hiding a value
/// that was harmless (`GIT_AUTHOR_NAME`, `COMPASS_MODE`) costs a line of output, showing
/// a password costs the password.
const SECRET_NAME_PARTS: [&str; 6] = ["PASS", "CREDENTIAL", "AUTH", "KEY", "SECRET", "TOKEN"];

/// Does this variable name look like it holds a secret?
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    SECRET_NAME_PARTS.iter().any(|p| k.contains(p))
}

/// Redacts known secret values from text.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    values: Vec<String>,
}

impl Redactor {
    pub fn new(values: Vec<String>) -> Self {
        // A secret is as secret in the forms a URL gives it: `p@ss:word` is written
        // `p%40ss%3Aword` in `postgres://u:p%40ss%3Aword@db`, and a value read back from
        // such a URL may still be encoded. Each value is hidden decoded and encoded.
        Redactor::of_forms(values.into_iter().flat_map(url_forms).collect())
    }

    /// A redactor of exactly these values (their URL forms already added).
    fn of_forms(mut values: Vec<String>) -> Self {
        values.sort();
        values.dedup();
        // Longest first, so a secret that contains another is replaced whole.
        values.retain(|v| v.len() >= 3);
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        Redactor { values }
    }

    /// Add more secret values (keeping the longest-first order).
    pub fn extend(&mut self, values: impl IntoIterator<Item = String>) {
        let mut all = std::mem::take(&mut self.values);
        all.extend(values.into_iter().flat_map(url_forms));
        *self = Redactor::of_forms(all);
    }

    /// One redactor hiding both's values: longest first across the two, so a secret of
    /// one that holds a secret of the other is still replaced whole.
    pub fn union(&self, other: &Redactor) -> Redactor {
        Redactor::of_forms(self.values.iter().chain(&other.values).cloned().collect())
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

/// `v` and the forms it takes in a URL: decoded (when it holds `%XX` escapes) and
/// encoded, both as the WHATWG URL standard encodes user info (what the `url` crate and
/// browsers write) and with everything but RFC 3986's unreserved characters encoded
/// (what `encodeURIComponent` or Python's `quote(safe="")` write), in upper and lower
/// case hex.
fn url_forms(v: String) -> Vec<String> {
    let mut forms = vec![percent_decode(&v)];
    // RFC 3986 unreserved, and what WHATWG's userinfo set leaves as it is besides.
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
    let userinfo_keeps = |b: u8| unreserved(b) || b"!$%&'()*+,".contains(&b);
    for keep in [&unreserved as &dyn Fn(u8) -> bool, &userinfo_keeps] {
        let upper = percent_encode(&v, keep);
        forms.push(upper.clone());
        forms.push(lower_escapes(&upper));
    }
    forms.push(v);
    forms.sort();
    forms.dedup();
    forms
}

/// `s` with each byte `keep` refuses written `%XX` (upper case hex).
fn percent_encode(s: &str, keep: &dyn Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `%XX` escapes of an encoded string in lower case hex (`%3a`).
fn lower_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let escape = rest.get(i..i + 3).unwrap_or(&rest[i..]);
        out.push_str(&escape.to_ascii_lowercase());
        rest = &rest[i + escape.len()..];
    }
    out.push_str(rest);
    out
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
    let mut values: Vec<String> = redactor.values.iter().cloned().chain(escaped).collect();
    let mut global = REGISTERED.write().unwrap_or_else(|e| e.into_inner());
    // The redactor's values already hold their URL forms.
    let global = global.get_or_insert_with(Redactor::default);
    values.append(&mut global.values);
    *global = Redactor::of_forms(values);
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
    fn names_that_look_like_secrets_hide_their_values() {
        let r = Redactor::default();
        for key in [
            "DB_PASS",
            "SMTP_PASSWD",
            "DB_PASSWORD",
            "PGPASSFILE",
            "API_CREDENTIALS",
            "GOOGLE_APPLICATION_CREDENTIAL",
            "BASIC_AUTH",
            "AUTH_HEADER",
            "oauth_client",
            "API_KEY",
            "JWT_SECRET",
            "GITHUB_TOKEN",
        ] {
            assert!(is_secret_key(key), "{key}");
            assert_eq!(r.env_value(key, "value-1"), REDACTED, "{key}");
        }
        for key in ["MODE", "DATABASE_HOST", "PORT", "LOG_LEVEL", "GREETING"] {
            assert!(!is_secret_key(key), "{key}");
            assert_eq!(r.env_value(key, "value-1"), "value-1", "{key}");
        }
    }

    #[test]
    fn a_secret_is_hidden_decoded_and_percent_encoded() {
        // Registered decoded (as `url_password` gives it): the URL's encoded form goes.
        let r = Redactor::new(vec!["p@ss:w/rd".into()]);
        for text in [
            "postgres://u:p%40ss%3Aw%2Frd@db/x",
            "postgres://u:p%40ss%3aw%2frd@db/x",
            "said p@ss:w/rd",
        ] {
            let shown = r.text(text);
            assert!(!shown.contains("ss"), "{text} -> {shown}");
        }
        // Registered encoded (a raw value): its decoded form goes too.
        let r = Redactor::new(vec!["hunter%2142".into()]);
        assert_eq!(r.text("pw hunter!42"), format!("pw {REDACTED}"));
        assert_eq!(r.text("pw hunter%2142"), format!("pw {REDACTED}"));
        // And through a URL password found in a value.
        let pw = url_password("https://bot:t%C3%B6ken%2Fx@git.example/r.git").unwrap();
        assert_eq!(pw, "töken/x");
        let r = Redactor::new(vec![pw]);
        let shown = r.text("https://bot:t%C3%B6ken%2Fx@git.example/r.git töken/x");
        assert!(!shown.contains("ken"), "{shown}");
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
