//! The [`Resolver`]: turns parsed files into a [`DesiredState`], collecting every
//! diagnostic on the way, and the checks that span the whole project.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::path::PathBuf;

use toml::Spanned;

use super::Source;
use super::at;
use super::parse::{check_network_name, valid_name, valid_project_name};
use super::raw::{RawProject, RawService, S, Scalar, StrOrList};
use super::timing::RolloutOrigins;
use crate::diag::{Diagnostic, Diagnostics};
use crate::spec::interpolate::interpolate;
use crate::spec::{
    DesiredState, HostPort, MIGRATIONS_NODE, Migrations, Project, Rollout, Service, dependencies,
    duration,
};

/// A service as written: its file, its key and its table.
pub(super) type Named<'s> = (&'s Source, &'s S, &'s Spanned<RawService>);

pub(super) struct Resolver<'a> {
    pub(super) env: &'a HashMap<String, String>,
    /// Variables from the project env file: used for interpolation after the process env.
    pub(super) env_file_vars: HashMap<String, String>,
    pub(super) secret_values: BTreeSet<String>,
    /// Per service, the environment keys whose values came from its env file.
    pub(super) env_file_keys: BTreeMap<String, BTreeSet<String>>,
    pub(super) diags: Diagnostics,
    /// Spans of values whose interpolation failed: that error is reported, and checks of
    /// the (meaningless) remaining value are not.
    pub(super) failed_values: BTreeSet<(PathBuf, usize)>,
    /// Set when reading from a git commit's tree: see [`crate::spec::Overlay`].
    pub(super) overlay: Option<crate::spec::Overlay>,
}

impl Resolver<'_> {
    /// A path of the desired state, relative to the file that names it, made absolute
    /// (and placed by the overlay when reading from a git commit; an absolute path stays
    /// as written).
    pub(super) fn locate(&self, src: &Source, rel: impl AsRef<std::path::Path>) -> PathBuf {
        let p = super::parse::normalize(&src.dir.join(&rel));
        if rel.as_ref().is_absolute() {
            p
        } else {
            self.placed(p)
        }
    }

    /// A path the desired state names as `what` ("bind source"), written at `span`: when
    /// it comes from a git commit, checked against what a commit may reach
    /// ([`crate::spec::Overlay::confine`]). The path to use, or None after reporting
    /// why not.
    pub(super) fn confine(
        &mut self,
        src: &Source,
        span: Range<usize>,
        what: &str,
        p: PathBuf,
    ) -> Option<crate::spec::trust::Confined> {
        let Some(overlay) = &self.overlay else {
            return Some(crate::spec::trust::Confined {
                resolved: p.clone(),
                path: p,
            });
        };
        match overlay.confine(what, &p) {
            Ok(c) => Some(c),
            Err(why) => {
                self.err(src, span, why);
                None
            }
        }
    }

    /// As [`Resolver::locate`], but as the file names it (`dir/rel`, not normalized) when
    /// there is no overlay: messages then show the path the way it was written.
    pub(super) fn locate_raw(&self, src: &Source, rel: impl AsRef<std::path::Path>) -> PathBuf {
        match &self.overlay {
            Some(_) => self.locate(src, rel),
            None => src.dir.join(rel),
        }
    }

    /// An absolute, normalized path as the overlay places it (unchanged without one).
    pub(super) fn placed(&self, p: PathBuf) -> PathBuf {
        match &self.overlay {
            Some(o) => o.place(&p),
            None => p,
        }
    }

    pub(super) fn err(&mut self, src: &Source, span: Range<usize>, msg: impl Into<String>) {
        if self.failed_values.contains(&(src.path.clone(), span.start)) {
            return;
        }
        self.diags
            .push(Diagnostic::at(&src.path, &src.text, span, msg));
    }

    /// The desired state of `sources`, or None when a diagnostic makes it unusable. The
    /// project block first, then the rollout defaults, the services with their
    /// dependencies, the migrations block, and the checks that span the whole project.
    pub(super) fn resolve(
        &mut self,
        sources: &[Source],
        extra_profiles: &[String],
        exclude: &[String],
        source_hash: String,
    ) -> Option<DesiredState> {
        let (psrc, praw) = self.project_block(sources)?;
        let (name, network, profiles) = self.project(psrc, praw, extra_profiles);
        let engine = self.engine(psrc, praw);
        let (rollout, origins) = self.rollout(sources);
        let (seen, all) = self.services_by_name(sources, exclude);
        let enabled = |svc: &RawService| {
            svc.profiles.is_empty() || svc.profiles.iter().any(|p| profiles.contains(p.get_ref()))
        };
        let active_names: BTreeSet<&str> = all
            .iter()
            .filter(|(_, k, s)| enabled(s.get_ref()) && !exclude.contains(k.get_ref()))
            .map(|(_, k, _)| k.get_ref().as_str())
            .collect();

        // `depends_on = ["migrations"]` names the [migrations] block, when there is one.
        let has_migrations = sources.iter().any(|s| s.raw.migrations.is_some());
        let mut services = BTreeMap::new();
        for named in &all {
            self.check_service_name(named, has_migrations);
            self.check_depends_on(named, &seen, &active_names, exclude, has_migrations);
            let (src, key, svc) = named;
            if !active_names.contains(key.get_ref().as_str()) {
                continue;
            }
            if let Some(s) = self.service(src, key, svc, (&name, &network, engine)) {
                services.insert(s.name.clone(), s);
            }
        }

        let migrations = self.migrations(sources, &seen, &active_names);
        self.check_swarm_project(engine, sources, &services);
        self.check_migrations_database(migrations.as_ref(), &all);
        self.check_cycles(&services, migrations.as_ref(), &all);
        let host_port_list = self.check_unique_ports_and_names(&all, &services);
        self.check_gate_timing(&rollout, &origins, &all, &services);

        let mut preflight = self.preflight(sources).unwrap_or_default();
        preflight.host_ports = host_port_list;
        preflight.services = all
            .iter()
            .filter(|(_, key, _)| services.contains_key(key.get_ref()))
            .map(|(src, key, _)| (key.get_ref().clone(), at(src, key.span())))
            .collect();
        preflight.base_dir = psrc.dir.clone();

        Some(DesiredState {
            project: Project {
                name,
                network,
                engine,
            },
            rollout,
            services,
            source_hash,
            files: sources.iter().map(|s| s.path.clone()).collect(),
            secret_values: self.secret_values.iter().cloned().collect(),
            env_file_keys: std::mem::take(&mut self.env_file_keys),
            preflight,
            origin: None,
            migrations,
            notify: self.notify(sources),
        })
    }

    /// The project block: exactly one across all files.
    fn project_block<'s>(&mut self, sources: &'s [Source]) -> Option<(&'s Source, &'s RawProject)> {
        let mut project: Option<(&Source, &Spanned<RawProject>)> = None;
        for src in sources {
            if let Some(p) = &src.raw.project {
                if let Some((first, _)) = project {
                    let msg = format!("[project] is already defined in {}", first.path.display());
                    self.err(src, p.span(), msg);
                } else {
                    project = Some((src, p));
                }
            }
        }
        let Some((psrc, praw)) = project else {
            let first = &sources[0];
            self.err(
                first,
                0..0,
                "missing [project] block (with at least `name`)",
            );
            return None;
        };
        Some((psrc, praw.get_ref()))
    }

    /// The project's env file (read first: the rest interpolates from it), name, network
    /// and enabled profiles.
    fn project(
        &mut self,
        psrc: &Source,
        praw: &RawProject,
        extra_profiles: &[String],
    ) -> (String, String, BTreeSet<String>) {
        if let Some(env_file) = &praw.env_file {
            let path = self.locate_raw(psrc, env_file.get_ref());
            if let Some(vars) = self.read_env_file(psrc, env_file, &path, false) {
                self.env_file_vars = vars;
            }
        }
        let name = self.string(psrc, &praw.name).unwrap_or_default();
        if !valid_project_name(&name) {
            self.err(
                psrc,
                praw.name.span(),
                format!("bad project name {name:?}: use lowercase letters, digits, '-' and '_', starting with a letter or digit"),
            );
        }
        let network = match &praw.network {
            Some(n) => {
                let v = self.string(psrc, n).unwrap_or_default();
                if let Err(msg) = check_network_name(&v) {
                    self.err(psrc, n.span(), msg);
                }
                v
            }
            None => format!("{name}_default"),
        };
        let mut profiles: BTreeSet<String> = extra_profiles.iter().cloned().collect();
        for p in &praw.profiles {
            profiles.insert(p.get_ref().clone());
        }
        (name, network, profiles)
    }

    /// The `[rollout]` defaults, each with the place it was written (for the gate-timing
    /// checks that name it).
    fn rollout<'s>(&mut self, sources: &'s [Source]) -> (Rollout, RolloutOrigins<'s>) {
        let mut rollout = Rollout::default();
        let mut origins = RolloutOrigins::default();
        for src in sources {
            if let Some(r) = &src.raw.rollout {
                let origin = |v: &Option<S>| v.as_ref().map(|v| (src, v.span()));
                if let Some(d) = self.duration(src, &r.healthy_deadline) {
                    rollout.healthy_deadline = d;
                    origins.healthy_deadline = origin(&r.healthy_deadline);
                }
                if let Some(d) = self.duration(src, &r.min_healthy_time) {
                    rollout.min_healthy_time = d;
                    origins.min_healthy_time = origin(&r.min_healthy_time);
                }
                if let Some(d) = self.duration(src, &r.progress_deadline) {
                    rollout.progress_deadline = d;
                    origins.progress_deadline = origin(&r.progress_deadline);
                }
                if let Some(a) = r.auto_revert {
                    rollout.auto_revert = a;
                }
                if let Some(v) = &r.stability {
                    match self.string(src, v).as_deref() {
                        Some("pipelined") => rollout.stability = crate::spec::Stability::Pipelined,
                        Some("before-dependents") => {
                            rollout.stability = crate::spec::Stability::BeforeDependents
                        }
                        Some(other) => self.err(
                            src,
                            v.span(),
                            format!(
                                "rollout.stability {other:?}: use \"pipelined\" (dependents start once the probe passed; the default) or \"before-dependents\" (they wait for min_healthy_time too)"
                            ),
                        ),
                        None => {}
                    }
                }
            }
        }

        (rollout, origins)
    }

    /// Every service by its name, unique across files (a second definition is an error at
    /// its key), and `--exclude` names checked against them.
    fn services_by_name<'s>(
        &mut self,
        sources: &'s [Source],
        exclude: &[String],
    ) -> (BTreeMap<String, PathBuf>, Vec<Named<'s>>) {
        let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut all: Vec<(&Source, &S, &Spanned<RawService>)> = Vec::new();
        for src in sources {
            for (key, svc) in &src.raw.services {
                if let Some(first) = seen.get(key.get_ref()) {
                    let msg = format!(
                        "service {:?} is already defined in {}",
                        key.get_ref(),
                        first.display()
                    );
                    self.err(src, key.span(), msg);
                    continue;
                }
                seen.insert(key.get_ref().clone(), src.path.clone());
                all.push((src, key, svc));
            }
        }
        for name in exclude {
            if !seen.contains_key(name) {
                let first = &sources[0];
                self.diags.push(Diagnostic::file(
                    &first.path,
                    format!("--exclude {name:?}: no such service in the desired state"),
                ));
            }
        }
        (seen, all)
    }

    fn check_service_name(&mut self, (src, key, _): &Named<'_>, has_migrations: bool) {
        if has_migrations && key.get_ref() == MIGRATIONS_NODE {
            self.err(
                src,
                key.span(),
                format!("service name {MIGRATIONS_NODE:?} is taken by the [migrations] block: `depends_on = [\"{MIGRATIONS_NODE}\"]` means the migrations"),
            );
        }
        if !valid_name(key.get_ref()) {
            self.err(
                src,
                key.span(),
                format!("bad service name {:?}: use letters, digits, '_', '.', '-', starting with a letter or digit (at most 63)", key.get_ref()),
            );
        }
    }

    /// Each `depends_on` entry names a defined, enabled service (or the migrations block)
    /// other than the service itself.
    fn check_depends_on(
        &mut self,
        (src, key, svc): &Named<'_>,
        seen: &BTreeMap<String, PathBuf>,
        active_names: &BTreeSet<&str>,
        exclude: &[String],
        has_migrations: bool,
    ) {
        let active = active_names.contains(key.get_ref().as_str());
        for dep in &svc.get_ref().depends_on {
            let d = dep.get_ref().as_str();
            if d == MIGRATIONS_NODE && has_migrations {
                continue;
            }
            if d == MIGRATIONS_NODE && !seen.contains_key(d) {
                self.err(
                    src,
                    dep.span(),
                    format!(
                        "service {:?} depends on \"{MIGRATIONS_NODE}\", but there is no [migrations] block",
                        key.get_ref()
                    ),
                );
            } else if !seen.contains_key(d) {
                self.err(
                    src,
                    dep.span(),
                    format!(
                        "service {:?} depends on {d:?}, which is not defined",
                        key.get_ref()
                    ),
                );
            } else if active && !active_names.contains(d) {
                let why = if exclude.iter().any(|e| e == d) {
                    "which --exclude leaves out"
                } else {
                    "whose profiles are not enabled"
                };
                self.err(
                    src,
                    dep.span(),
                    format!("service {:?} depends on {d:?}, {why}", key.get_ref()),
                );
            } else if d == key.get_ref() {
                self.err(src, dep.span(), format!("service {d:?} depends on itself"));
            }
        }
    }

    /// The database cannot wait for the migrations that wait for it.
    fn check_migrations_database(&mut self, migrations: Option<&Migrations>, all: &[Named<'_>]) {
        if let Some(m) = migrations
            && let Some((src, _, svc)) = all.iter().find(|(_, k, _)| *k.get_ref() == m.service)
            && let Some(dep) = svc
                .get_ref()
                .depends_on
                .iter()
                .find(|d| d.get_ref() == MIGRATIONS_NODE)
        {
            let msg = format!(
                "service {:?} is the migrations' database: it cannot depend on \"{MIGRATIONS_NODE}\", which run after it",
                m.service
            );
            self.err(src, dep.span(), msg);
        }
    }

    /// Cycles, named as a path and located at the first edge of the cycle.
    fn check_cycles(
        &mut self,
        services: &BTreeMap<String, Service>,
        migrations: Option<&Migrations>,
        all: &[Named<'_>],
    ) {
        if let Err(cycle) = crate::graph::levels(
            services
                .values()
                .map(|s| (s.name.as_str(), dependencies(s, migrations))),
        ) && cycle.len() > 2
        {
            // (A self-dependency, cycle.len() == 2, is reported on its own above.)
            let from = &cycle[0];
            let to = &cycle[1];
            if let Some((src, _, svc)) = all.iter().find(|(_, k, _)| k.get_ref() == from) {
                let span = svc
                    .get_ref()
                    .depends_on
                    .iter()
                    .find(|d| {
                        d.get_ref() == to
                            || (d.get_ref() == MIGRATIONS_NODE
                                && migrations.is_some_and(|m| &m.service == to))
                    })
                    .map(|d| d.span())
                    .unwrap_or(svc.span());
                self.err(
                    src,
                    span,
                    format!("dependency cycle: {}", cycle.join(" -> ")),
                );
            }
        }
    }

    /// Host ports and container names must be unique across the project; the published
    /// ports, for the pre-flight.
    fn check_unique_ports_and_names(
        &mut self,
        all: &[Named<'_>],
        services: &BTreeMap<String, Service>,
    ) -> Vec<HostPort> {
        let mut host_ports: BTreeMap<(String, u16, String), String> = BTreeMap::new();
        let mut host_port_list = Vec::new();
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        for (src, key, svc) in all {
            let Some(s) = services.get(key.get_ref()) else {
                continue;
            };
            for (port, raw) in s.ports.iter().zip(&svc.get_ref().ports) {
                let Some(h) = port.host else { continue };
                let k = (
                    port.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into()),
                    h,
                    port.protocol.clone(),
                );
                host_port_list.push(HostPort {
                    host_ip: port.host_ip.clone(),
                    port: h,
                    protocol: port.protocol.clone(),
                    service: s.name.clone(),
                    at: at(src, raw.span()),
                });
                if let Some(other) = host_ports.get(&k) {
                    let msg = format!(
                        "host port {h}/{} is already published by service {other:?}",
                        port.protocol
                    );
                    self.err(src, raw.span(), msg);
                } else {
                    host_ports.insert(k, s.name.clone());
                }
            }
            if let Some(other) = names.get(&s.container_name) {
                let span = svc
                    .get_ref()
                    .container_name
                    .as_ref()
                    .map(|c| c.span())
                    .unwrap_or(key.span());
                let msg = format!(
                    "container name {:?} is already used by service {other:?}",
                    s.container_name
                );
                self.err(src, span, msg);
            } else {
                names.insert(s.container_name.clone(), s.name.clone());
            }
        }
        host_port_list
    }

    /// A value that must never be printed (a probe's password).
    /// A value written in the TOML is a secret when its key looks like one (`API_TOKEN`),
    /// and so is the password of a URL in it, however it was written.
    pub(super) fn secret_if_looks_so(&mut self, key: &str, value: &str) {
        if crate::redact::is_secret_key(key) && !value.is_empty() {
            self.secret_values.insert(value.to_string());
        }
        if let Some(password) = crate::redact::url_password(value) {
            self.secret_values.insert(password);
        }
    }

    pub(super) fn secret(&mut self, value: &Option<String>) {
        if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
            self.secret_values.insert(v.clone());
        }
    }

    /// A variable's value for interpolation: berth's environment, then the project env
    /// file. A commit sees of berth's environment only what the operator passes it.
    pub(super) fn lookup(&self, name: &str) -> Option<String> {
        let passed = match &self.overlay {
            Some(o) => o.grants.pass_env.contains(name),
            None => true,
        };
        passed
            .then(|| self.env.get(name))
            .flatten()
            .or_else(|| self.env_file_vars.get(name))
            .cloned()
    }

    /// Why `${name}` has no value in a commit's desired state, when the operator did
    /// not pass it: interpolation there never reads berth's whole environment.
    fn not_passed(&self, name: &str) -> Option<String> {
        let o = self.overlay.as_ref()?;
        if o.grants.pass_env.contains(name) {
            return None;
        }
        let passed = if o.grants.pass_env.is_empty() {
            "none".to_string()
        } else {
            o.grants
                .pass_env
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        };
        Some(format!(
            "${{{name}}} is not passed to the commit: a desired state read from git reads only the project env file and the variables the operator names with --pass-env (passed: {passed}); set {name} in the env file, or the operator can pass it with --pass-env {name}"
        ))
    }

    /// Interpolate one string value, reporting a missing variable where it is written.
    pub(super) fn string(&mut self, src: &Source, s: &S) -> Option<String> {
        let lookup = |n: &str| self.lookup(n);
        match interpolate(s.get_ref(), &lookup) {
            Ok(v) => Some(v),
            Err(e) => {
                // Point at the failing `${...}` itself in the source: find the same token
                // (the same occurrence of it) inside the value's span.
                let value = s.get_ref();
                let token_end = value[e.offset..]
                    .find('}')
                    .map(|i| e.offset + i + 1)
                    .unwrap_or(value.len());
                let token = &value[e.offset..token_end];
                let nth = value[..e.offset].matches(token).count();
                let raw = &src.text[s.span()];
                let at = raw
                    .match_indices(token)
                    .filter(|(i, _)| !raw[..*i].ends_with('$') || raw[..*i].ends_with("$$$"))
                    .nth(nth)
                    .map(|(i, _)| s.span().start + i)
                    .unwrap_or(s.span().start + 1);
                let message = e
                    .unset
                    .as_deref()
                    .and_then(|name| self.not_passed(name))
                    .unwrap_or(e.message);
                self.err(src, at..at, message);
                self.failed_values
                    .insert((src.path.clone(), s.span().start));
                None
            }
        }
    }

    pub(super) fn scalar(&mut self, src: &Source, v: &Spanned<Scalar>) -> String {
        match v.get_ref() {
            Scalar::Str(s) => self
                .string(src, &Spanned::new(v.span(), s.clone()))
                .unwrap_or_default(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }

    pub(super) fn list(&mut self, src: &Source, v: &Spanned<StrOrList>) -> Vec<String> {
        let at = |s: &String| Spanned::new(v.span(), s.clone());
        match v.get_ref() {
            StrOrList::Str(s) => {
                let text = self.string(src, &at(s)).unwrap_or_default();
                text.split_whitespace().map(str::to_string).collect()
            }
            StrOrList::List(items) => items
                .iter()
                .filter_map(|i| self.string(src, &at(i)))
                .collect(),
        }
    }

    pub(super) fn duration(&mut self, src: &Source, v: &Option<S>) -> Option<std::time::Duration> {
        let v = v.as_ref()?;
        let text = self.string(src, v)?;
        match duration::parse(&text) {
            Ok(d) => Some(d),
            Err(msg) => {
                self.err(src, v.span(), msg);
                None
            }
        }
    }
}
