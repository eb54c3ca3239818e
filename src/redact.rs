//! Secrets stay secret (DESIGN.md semantic 10).
//!
//! Two rules: values that came from env files are replaced wherever they occur, and the
//! value of any variable whose name looks like a secret is never shown.

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
}
