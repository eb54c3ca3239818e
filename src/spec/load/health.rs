//! A service's `[health]` table: which probe, its fields, its timing.

use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;

use super::Source;
use super::raw::{RawHealth, S};
use super::resolve::Resolver;
use crate::spec::{Health, Probe};

impl Resolver<'_> {
    pub(super) fn health(&mut self, src: &Source, h: &Spanned<RawHealth>) -> Option<Health> {
        let raw = h.get_ref();
        self.check_probe_fields(src, raw);
        let probe = self.probe(src, h)?;
        let interval = self
            .duration(src, &raw.interval)
            .unwrap_or(std::time::Duration::from_millis(500));
        let timeout = self
            .duration(src, &raw.timeout)
            .unwrap_or(std::time::Duration::from_secs(2));
        if interval.is_zero() {
            let span = raw.interval.as_ref().map(|i| i.span()).unwrap_or(h.span());
            self.err(src, span, "health.interval must be greater than 0");
        }
        Some(Health {
            probe,
            interval,
            timeout,
            healthy_deadline: self.duration(src, &raw.healthy_deadline),
            min_healthy_time: self.duration(src, &raw.min_healthy_time),
        })
    }

    /// Fields only some probes take are errors on the others, located at the field.
    fn check_probe_fields(&mut self, src: &Source, raw: &RawHealth) {
        let kind = raw.probe.get_ref().as_str();
        let takes: &[&str] = match kind {
            "tcp" => &["port"],
            "http" => &["port", "path", "expect_json"],
            "exec" => &["command"],
            "postgres" => &["port", "user", "password", "database"],
            "redis" => &["port", "password"],
            _ => &[],
        };
        let given: [(&str, Option<Range<usize>>); 7] = [
            ("port", raw.port.as_ref().map(|p| p.span())),
            ("path", raw.path.as_ref().map(|p| p.span())),
            ("command", raw.command.as_ref().map(|p| p.span())),
            ("user", raw.user.as_ref().map(|p| p.span())),
            ("password", raw.password.as_ref().map(|p| p.span())),
            ("database", raw.database.as_ref().map(|p| p.span())),
            (
                "expect_json",
                raw.expect_json
                    .as_ref()
                    .and_then(|m| m.values().next().map(|v| v.span())),
            ),
        ];
        if !takes.is_empty() {
            for (field, span) in given {
                if let Some(span) = span
                    && !takes.contains(&field)
                {
                    self.err(
                        src,
                        span,
                        format!("health.{field} does not apply to probe = {kind:?}"),
                    );
                }
            }
        }
    }

    /// The probe of `kind` with its fields, each required one named where it is missing.
    fn probe(&mut self, src: &Source, h: &Spanned<RawHealth>) -> Option<Probe> {
        let raw = h.get_ref();
        let kind = raw.probe.get_ref().as_str();
        Some(match kind {
            "tcp" => Probe::Tcp {
                port: self.probe_port(src, h, None)?,
            },
            "http" => {
                let path = raw
                    .path
                    .as_ref()
                    .and_then(|p| self.string(src, p))
                    .unwrap_or_else(|| "/".into());
                if !path.starts_with('/') {
                    let span = raw.path.as_ref().map(|p| p.span()).unwrap_or(h.span());
                    self.err(
                        src,
                        span,
                        format!("health.path {path:?} must start with '/'"),
                    );
                }
                let mut expect_json = BTreeMap::new();
                for (k, v) in raw.expect_json.iter().flatten() {
                    if let Some(v) = self.string(src, v) {
                        expect_json.insert(k.clone(), v);
                    }
                }
                Probe::Http {
                    port: self.probe_port(src, h, None)?,
                    path,
                    expect_json,
                }
            }
            "exec" => match &raw.command {
                Some(c) => {
                    let command = self.list(src, c);
                    if command.is_empty() {
                        self.err(src, h.span(), "health.command is empty");
                    }
                    Probe::Exec { command }
                }
                None => {
                    self.err(
                        src,
                        h.span(),
                        "health.command is required for probe = \"exec\"",
                    );
                    return None;
                }
            },
            "docker" => Probe::Docker,
            "postgres" => {
                let need = |this: &mut Self, field: &str, v: &Option<S>| match v {
                    Some(v) => this.string(src, v),
                    None => {
                        this.err(
                            src,
                            h.span(),
                            format!("health.{field} is required for probe = \"postgres\""),
                        );
                        None
                    }
                };
                let user = need(self, "user", &raw.user);
                let password = need(self, "password", &raw.password);
                self.secret(&password);
                let database = need(self, "database", &raw.database);
                Probe::Postgres {
                    port: self.probe_port(src, h, Some(5432))?,
                    user: user?,
                    password: password?,
                    database: database?,
                }
            }
            "redis" => {
                let password = raw.password.as_ref().and_then(|p| self.string(src, p));
                self.secret(&password);
                Probe::Redis {
                    port: self.probe_port(src, h, Some(6379))?,
                    password,
                }
            }
            other => {
                self.err(
                    src,
                    raw.probe.span(),
                    format!(
                        "unknown probe {other:?}: use \"tcp\", \"http\", \"exec\", \"postgres\", \"redis\" or \"docker\""
                    ),
                );
                return None;
            }
        })
    }

    /// `health.port`: in range, or `default` (the protocol's own port) when it has one.
    fn probe_port(
        &mut self,
        src: &Source,
        h: &Spanned<RawHealth>,
        default: Option<u16>,
    ) -> Option<u16> {
        let raw = h.get_ref();
        let kind = raw.probe.get_ref().as_str();
        match &raw.port {
            Some(p) => match u16::try_from(*p.get_ref()) {
                Ok(v) if v > 0 => Some(v),
                _ => {
                    self.err(
                        src,
                        p.span(),
                        format!("port {} is out of range 1-65535", p.get_ref()),
                    );
                    None
                }
            },
            None if default.is_some() => default,
            None => {
                self.err(
                    src,
                    h.span(),
                    format!("health.port is required for probe = {kind:?}"),
                );
                None
            }
        }
    }
}
