//! The `[preflight]` block (the runbook's `validate_config.py`): what can be checked from
//! the files and the environment alone is checked here; host checks are collected for
//! [`crate::preflight`].

use toml::Spanned;

use super::parse::{parse_size, parse_version};
use super::raw::{RawPreflight, S};
use super::resolve::Resolver;
use super::{Source, at};
use crate::spec::{DataDir, Preflight};

/// A provider prefix followed by at least 20 key characters.
fn plausible_api_key(value: &str, prefix: &str) -> bool {
    value.strip_prefix(prefix).is_some_and(|rest| {
        rest.len() >= 20
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    })
}

/// `postgres[ql]://USER[:PASSWORD]@HOST[:PORT]/DATABASE`; the reason never quotes the URL
/// (it holds a password).
pub(super) fn check_database_url(value: &str) -> Result<(), String> {
    let url = url::Url::parse(value).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(format!(
            "scheme {:?}, expected \"postgresql\"",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    if url.username().is_empty() {
        return Err("no user".into());
    }
    if url.path().trim_start_matches('/').is_empty() {
        return Err("no database name".into());
    }
    Ok(())
}

fn parse_owner(text: &str) -> Option<(u32, u32)> {
    let (u, g) = text.split_once(':')?;
    Some((u.parse().ok()?, g.parse().ok()?))
}

impl Resolver<'_> {
    /// The `[preflight]` block: the checks that need only the files and the environment
    /// run here (so they point at the line), the host checks are collected for
    /// [`crate::preflight`].
    pub(super) fn preflight(&mut self, sources: &[Source]) -> Option<Preflight> {
        let (src, p) = self.preflight_block(sources)?;
        let raw = p.get_ref();
        let mut out = Preflight {
            declared: true,
            required_env: raw.required_env.len(),
            api_keys: raw.api_keys.len(),
            database_url: raw.database_url.as_ref().map(|v| v.get_ref().clone()),
            ..Preflight::default()
        };
        self.check_preflight_variables(src, raw);
        self.host_limits(src, raw, &mut out);
        for (path, spec) in &raw.data_dirs {
            if let Some(dir) = self.data_dir(src, path, spec) {
                out.data_dirs.push(dir);
            }
        }
        Some(out)
    }

    /// The `[preflight]` block: at most one across all files.
    fn preflight_block<'s>(
        &mut self,
        sources: &'s [Source],
    ) -> Option<(&'s Source, &'s Spanned<RawPreflight>)> {
        let mut found: Option<(&Source, &Spanned<RawPreflight>)> = None;
        for src in sources {
            if let Some(p) = &src.raw.preflight {
                if let Some((first, _)) = found {
                    let msg = format!("[preflight] is already defined in {}", first.path.display());
                    self.err(src, p.span(), msg);
                    continue;
                }
                found = Some((src, p));
            }
        }
        found
    }

    /// `required_env`, `api_keys` and `database_url`: set, and plausible, now.
    fn check_preflight_variables(&mut self, src: &Source, raw: &RawPreflight) {
        let set = |this: &Self, name: &str| this.lookup(name).filter(|v| !v.trim().is_empty());
        for name in &raw.required_env {
            if set(self, name.get_ref()).is_none() {
                let msg = format!(
                    "preflight: required variable {} is not set (in the environment or the project env file)",
                    name.get_ref()
                );
                self.err(src, name.span(), msg);
            }
        }
        for (var, prefix) in &raw.api_keys {
            let Some(prefix_v) = self.string(src, prefix) else {
                continue;
            };
            match set(self, var.get_ref()) {
                None => {
                    let msg = format!("preflight: API key {} is not set", var.get_ref());
                    self.err(src, var.span(), msg);
                }
                Some(v) => {
                    self.secret_values.insert(v.clone());
                    if !plausible_api_key(&v, &prefix_v) {
                        let msg = format!(
                            "preflight: {} does not look like an API key: expected {prefix_v:?} followed by at least 20 characters from [A-Za-z0-9_-] (value not shown)",
                            var.get_ref()
                        );
                        self.err(src, var.span(), msg);
                    }
                }
            }
        }
        if let Some(var) = &raw.database_url {
            match set(self, var.get_ref()) {
                None => {
                    let msg = format!(
                        "preflight: database URL variable {} is not set",
                        var.get_ref()
                    );
                    self.err(src, var.span(), msg);
                }
                Some(v) => {
                    self.secret_values.insert(v.clone());
                    if let Err(why) = check_database_url(&v) {
                        let msg = format!(
                            "preflight: {} is not a usable PostgreSQL URL: {why}",
                            var.get_ref()
                        );
                        self.err(src, var.span(), msg);
                    }
                }
            }
        }
    }

    /// `min_free_disk` and `docker_min_version`, for the host checks.
    fn host_limits(&mut self, src: &Source, raw: &RawPreflight, out: &mut Preflight) {
        if let Some(v) = &raw.min_free_disk
            && let Some(text) = self.string(src, v)
        {
            match parse_size(&text) {
                Ok(bytes) => out.min_free_disk = Some((bytes, at(src, v.span()))),
                Err(msg) => self.err(src, v.span(), msg),
            }
        }
        if let Some(v) = &raw.docker_min_version
            && let Some(text) = self.string(src, v)
        {
            match parse_version(&text) {
                Some(ver) => out.docker_min_version = Some((ver, at(src, v.span()))),
                None => self.err(
                    src,
                    v.span(),
                    format!("bad docker_min_version {text:?}: use MAJOR.MINOR, e.g. \"20.10\""),
                ),
            }
        }
    }

    /// One `data_dirs` entry: its mode (and owner), and where it is, confined.
    fn data_dir(&mut self, src: &Source, path: &S, spec: &Spanned<toml::Value>) -> Option<DataDir> {
        let rel = self.string(src, path)?;
        let (mode, owner) = match spec.get_ref() {
            toml::Value::String(m) => (Some(m.clone()), None),
            toml::Value::Table(t) => {
                let mut mode = None;
                let mut owner = None;
                for (k, v) in t {
                    match (k.as_str(), v) {
                        ("mode", toml::Value::String(m)) => mode = Some(m.clone()),
                        ("owner", toml::Value::String(o)) => owner = Some(o.clone()),
                        _ => self.err(
                            src,
                            spec.span(),
                            format!("data_dirs.{rel:?}: unknown or non-string key {k:?}: use mode = \"700\" and owner = \"UID:GID\""),
                        ),
                    }
                }
                (mode, owner)
            }
            _ => (None, None),
        };
        let Some(mode) = mode else {
            self.err(
                src,
                spec.span(),
                format!("data_dirs.{rel:?}: give the mode as an octal string, e.g. \"755\", or {{ mode = \"700\", owner = \"999:999\" }}"),
            );
            return None;
        };
        let mode = match u32::from_str_radix(&mode, 8) {
            Ok(m) if (3..=4).contains(&mode.len()) && m <= 0o7777 => m,
            _ => {
                self.err(
                    src,
                    spec.span(),
                    format!("data_dirs.{rel:?}: bad mode {mode:?}: use 3 or 4 octal digits"),
                );
                return None;
            }
        };
        let owner = match owner.as_deref().map(parse_owner) {
            None => None,
            Some(Some(o)) => Some(o),
            Some(None) => {
                self.err(
                    src,
                    spec.span(),
                    format!("data_dirs.{rel:?}: bad owner: use numeric \"UID:GID\""),
                );
                return None;
            }
        };
        // berth creates, chmods and chowns it as root: the path as resolved, never
        // through a symlink again.
        let located = self.locate(src, &rel);
        let checked = self.confine(src, path.span(), "data directory", located)?;
        Some(DataDir {
            path: checked.resolved,
            mode,
            owner,
            at: at(src, path.span()),
        })
    }
}
