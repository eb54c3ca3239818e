//! Env files: `KEY=VALUE` lines that feed interpolation (the project's) or a container's
//! environment (a service's), and the secrets they hold.

use std::collections::HashMap;
use std::path::Path;

use super::Source;
use super::raw::S;
use super::resolve::Resolver;
use crate::diag::Diagnostic;

impl Resolver<'_> {
    /// Read a `KEY=VALUE` env file. It must exist and be private to its owner: it holds
    /// secrets, and a file that group or others can read has already leaked them. A
    /// commit may name only one it may reach (docs/design.md §12).
    pub(super) fn read_env_file(
        &mut self,
        src: &Source,
        at: &S,
        path: &Path,
        all_secret: bool,
    ) -> Option<HashMap<String, String>> {
        use std::os::unix::fs::PermissionsExt;
        let path = &self
            .confine(src, at.span(), "env file", path.to_path_buf())?
            .path;
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) => {
                self.err(
                    src,
                    at.span(),
                    format!("env file {} cannot be read: {e}", path.display()),
                );
                return None;
            }
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            self.err(src, at.span(), format!(
                "env file {} has mode {mode:03o}: it holds secrets, so group and others must not read it (chmod 600)",
                path.display()
            ));
            return None;
        }
        let text = match std::fs::read(path).map(|b| super::utf8(path, b)) {
            Ok(Ok(t)) => t,
            Ok(Err(d)) => {
                self.diags.push(d);
                return None;
            }
            Err(e) => {
                self.err(
                    src,
                    at.span(),
                    format!("env file {} cannot be read: {e}", path.display()),
                );
                return None;
            }
        };
        let mut vars = HashMap::new();
        for (i, line) in env_lines(&text) {
            let Ok((k, v)) = line else {
                self.diags.push(Diagnostic {
                    file: path.to_path_buf(),
                    line: i + 1,
                    col: 1,
                    message: "expected KEY=VALUE".into(),
                });
                continue;
            };
            if !v.is_empty() && (all_secret || crate::redact::is_secret_key(k)) {
                self.secret_values.insert(v.to_string());
            }
            if let Some(password) = crate::redact::url_password(v) {
                self.secret_values.insert(password);
            }
            vars.insert(k.to_string(), v.to_string());
        }
        Some(vars)
    }
}

/// An env file's lines, by 0-based line number: `Ok((key, value))` for each `KEY=VALUE`
/// (an `export ` before it, and one pair of quotes around the value, dropped), `Err` for
/// a line that is none; blank lines and `#` comments are skipped. How berth reads the
/// project's env file, and `berth import` the one beside a Compose file.
pub fn env_lines(text: &str) -> impl Iterator<Item = (usize, Result<(&str, &str), ()>)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Some((i, Err(())));
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        Some((i, Ok((k.trim(), v))))
    })
}
