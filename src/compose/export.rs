//! `berth export compose`: a desired state as a Compose file, for the subset berth runs
//! (docs/compose.md, "Export"), so that a stack described for berth can be run without it.
//!
//! What goes in: every service with its image or build, command, environment, ports,
//! volumes, networks, `depends_on` (`service_healthy` where berth would wait for a gate),
//! restart, labels and the rest of the keys both have; berth's probe as a `healthcheck`;
//! a `[migrations.job]` as a one-shot service; the Swarm keys as `deploy`, `configs` and
//! `secrets`. What Compose cannot say (the revert, the stability window, the sqlx
//! migrations step, the pre-flight, notifications...) is a comment in the file and a
//! [`Note`], which the command prints on stderr: nothing is dropped silently.
//!
//! Secrets: a value that holds a secret is never written. Where the desired state wrote it
//! as a `${VAR}` reference, the reference is written instead (Compose interpolates it the
//! same way, from the environment or its `--env-file`); a service's `env_file` stays an
//! `env_file`; a secret written literally becomes `${KEY}`, with a note. Everything else is
//! written as berth resolved it, with each `$` doubled so that Compose leaves it alone.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use saphyr::{Mapping, Scalar, Yaml, YamlEmitter};

use crate::redact::{Redactor, is_secret_key};
use crate::spec::{
    DesiredState, Engine, MIGRATIONS_NODE, Port, Probe, PullPolicy, Service, UpdateOrder, Volume,
};

/// The desired state's source as written (before interpolation): where a resolved value
/// holds a secret, what the person wrote (`${POSTGRES_PASSWORD}`) can be written instead.
/// Each table comes with the directory of the file it was read from (relative paths in it
/// are relative to that).
#[derive(Debug, Default)]
pub struct Source {
    project: Option<(toml::Table, PathBuf)>,
    services: BTreeMap<String, (toml::Table, PathBuf)>,
    migrations: Option<(toml::Table, PathBuf)>,
}

impl Source {
    /// Read `path`, a TOML file or a directory of `*.toml` files, as the loader lists them.
    /// A file that cannot be read or parsed is skipped: the loader reports it.
    pub fn read(path: &Path) -> Source {
        let files = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map(|r| {
                    r.filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
                        .collect()
                })
                .unwrap_or_default();
            files.sort();
            files
        } else {
            vec![path.to_path_buf()]
        };
        let mut source = Source::default();
        for file in files {
            let Some(table) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| t.parse::<toml::Table>().ok())
            else {
                continue;
            };
            let dir = absolute(file.parent().unwrap_or(Path::new(".")));
            if let Some(toml::Value::Table(p)) = table.get("project") {
                source.project = Some((p.clone(), dir.clone()));
            }
            if let Some(toml::Value::Table(m)) = table.get("migrations") {
                source.migrations = Some((m.clone(), dir.clone()));
            }
            if let Some(toml::Value::Table(services)) = table.get("services") {
                for (name, s) in services {
                    if let toml::Value::Table(s) = s {
                        source
                            .services
                            .insert(name.clone(), (s.clone(), dir.clone()));
                    }
                }
            }
        }
        source
    }

    /// Every profile a service names.
    pub fn profiles(&self) -> BTreeSet<String> {
        self.services
            .values()
            .flat_map(|(s, _)| strings(s.get("profiles")))
            .collect()
    }

    /// The services of the source, with the profiles each names.
    pub fn services(&self) -> impl Iterator<Item = (&String, Vec<String>)> {
        self.services
            .iter()
            .map(|(n, (s, _))| (n, strings(s.get("profiles"))))
    }

    /// `[project] profiles`: the profiles berth enables without `--profile`.
    fn default_profiles(&self) -> Vec<String> {
        self.project
            .as_ref()
            .map(|(p, _)| strings(p.get("profiles")))
            .unwrap_or_default()
    }

    fn service(&self, name: &str) -> Option<&toml::Table> {
        self.services.get(name).map(|(t, _)| t)
    }

    /// The raw string at `keys` under service `name`.
    fn service_str(&self, name: &str, keys: &[&str]) -> Option<&str> {
        let mut v: &toml::Value = self.service(name)?.get(keys[0])?;
        for k in &keys[1..] {
            v = v.get(k)?;
        }
        v.as_str()
    }

    /// The raw list item `i` of `key` under service `name`, when the list is written as one.
    fn service_item(&self, name: &str, keys: &[&str], i: usize) -> Option<&str> {
        let mut v: &toml::Value = self.service(name)?.get(keys[0])?;
        for k in &keys[1..] {
            v = v.get(k)?;
        }
        v.as_array()?.get(i)?.as_str()
    }
}

fn strings(v: Option<&toml::Value>) -> Vec<String> {
    v.and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// What the export needs beyond the desired state.
#[derive(Debug, Default)]
pub struct Options {
    /// The directory the Compose file will be in: relative paths are written from it.
    pub base: PathBuf,
    /// Per image, whether it has a HEALTHCHECK, where that is known (the image is present
    /// on a reachable engine): a service without a probe is gated on it.
    pub image_healthcheck: BTreeMap<String, bool>,
    /// Services of the source that are not in the desired state, with why.
    pub left_out: Vec<(String, String)>,
}

/// Something berth does that the Compose file cannot say, or says differently.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    /// `<service>.<key>`, or `rollout.<key>`, `migrations`, `preflight`, ...
    pub at: String,
    pub why: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.why)
    }
}

/// The Compose file and what did not carry over.
#[derive(Debug)]
pub struct Export {
    pub yaml: String,
    pub notes: Vec<Note>,
}

/// The desired state `d` as a Compose file.
pub fn export(d: &DesiredState, source: &Source, options: &Options) -> Export {
    let mut x = Exporter {
        d,
        source,
        options,
        redactor: d.redactor(),
        notes: Vec::new(),
        references: false,
    };
    x.write()
}

/// The name the migration job's one-shot service gets: the name `depends_on` already
/// gives the migrations in a desired state (no service may take it).
const JOB_SERVICE: &str = MIGRATIONS_NODE;

struct Exporter<'a> {
    d: &'a DesiredState,
    source: &'a Source,
    options: &'a Options,
    redactor: Redactor,
    notes: Vec<Note>,
    /// Whether a `${VAR}` reference was written (the header then says where Compose
    /// reads them).
    references: bool,
}

impl Exporter<'_> {
    fn note(&mut self, at: impl Into<String>, why: impl Into<String>) {
        self.notes.push(Note {
            at: at.into(),
            why: why.into(),
        });
    }

    fn write(&mut self) -> Export {
        let d = self.d;
        for (service, why) in &self.options.left_out {
            self.note(service.clone(), format!("not exported: {why}"));
        }
        self.project_notes();
        let mut services: Vec<(String, Yaml<'static>)> = Vec::new();
        for (name, s) in &d.services {
            let body = self.service(name, s);
            services.push((name.clone(), body));
        }
        if let Some(job) = self.migration_job() {
            services.push((JOB_SERVICE.to_string(), job));
        }
        let top = self.top_level();

        // The file: the header, then each part dumped by the emitter; a service's notes
        // as comments right above it.
        let mut out = self.header();
        let mut name = Map::new();
        name.put("name", s(&d.project.name));
        out.push_str(&dump(name.into_yaml()));
        out.push_str("services:\n");
        for (name, body) in services {
            let prefix = format!("{name}.");
            for n in self.notes.iter().filter(|n| n.at.starts_with(&prefix)) {
                out.push_str(&comment(&n.to_string(), "  "));
            }
            let mut one = Map::new();
            one.put(&name, body);
            for line in dump(one.into_yaml()).lines() {
                out.push_str("  ");
                out.push_str(line);
                out.push('\n');
            }
        }
        for (key, value) in top {
            let mut one = Map::new();
            one.put(key, value);
            out.push_str(&dump(one.into_yaml()));
        }
        Export {
            yaml: out,
            notes: self.notes.clone(),
        }
    }

    /// The comment block at the top: where the file came from, how to run it, and each
    /// note that is not about one service.
    fn header(&self) -> String {
        let d = self.d;
        let files: Vec<String> = d.files.iter().map(|f| self.relative(f)).collect();
        let mut text = format!(
            "Written by `berth export compose` from {} (project {:?}).\n\
             berth gates each service on its probe and reverts the whole stack when one fails; \
             Compose starts services in depends_on order and waits for a healthcheck only where \
             depends_on asks for service_healthy. What berth does and this file cannot say is \
             listed here and above its service, and was printed on stderr.\n",
            files.join(", "),
            d.project.name
        );
        if self.references {
            let env_file = self.project_env_file();
            text.push_str(&match env_file {
                Some(f) => format!(
                    "The ${{VAR}} references (secrets are never written here) are read by Compose \
                     from the environment or the env file: docker compose --env-file {f} up\n"
                ),
                None => "The ${VAR} references (secrets are never written here) are read by \
                         Compose from the environment or the .env file beside this file.\n"
                    .to_string(),
            });
        }
        let defaults = self.source.default_profiles();
        if !defaults.is_empty() {
            text.push_str(&format!(
                "berth enables the profiles {} without --profile ([project] profiles): \
                 COMPOSE_PROFILES={} docker compose up\n",
                defaults.join(", "),
                defaults.join(",")
            ));
        }
        if d.project.engine == Engine::Swarm {
            text.push_str(
                "engine = \"swarm\": deploy it with docker stack deploy -c FILE STACK \
                 (the deploy, configs and secrets keys are Swarm's).\n",
            );
        }
        let job = d.migrations.as_ref().is_some_and(|m| m.job.is_some());
        let services: BTreeSet<String> = d
            .services
            .keys()
            .map(String::as_str)
            .chain(job.then_some(JOB_SERVICE))
            .map(|n| format!("{n}."))
            .collect();
        for n in &self.notes {
            if !services.iter().any(|p| n.at.starts_with(p.as_str())) {
                text.push_str(&format!("{n}\n"));
            }
        }
        let mut out = String::new();
        for paragraph in text.lines() {
            out.push_str(&comment(paragraph, ""));
        }
        out
    }

    /// The project's env file (interpolation's source), relative to the Compose file.
    fn project_env_file(&self) -> Option<String> {
        let (p, dir) = self.source.project.as_ref()?;
        let f = p.get("env_file")?.as_str()?;
        Some(if f.contains('$') {
            f.to_string()
        } else {
            self.relative(&dir.join(f))
        })
    }

    /// What the project-wide blocks do that Compose has no key for.
    fn project_notes(&mut self) {
        let d = self.d;
        let r = &d.rollout;
        if r.auto_revert {
            self.note(
                "rollout.auto_revert",
                "Compose does not put the stack back to the last good generation when a service fails its healthcheck",
            );
        }
        let stability = match r.stability {
            crate::spec::Stability::Pipelined => "",
            crate::spec::Stability::BeforeDependents => {
                ", and dependents wait for it (stability = \"before-dependents\")"
            }
        };
        self.note(
            "rollout.min_healthy_time",
            format!(
                "Compose has no stability window: a service is healthy at its first passing check; berth wants it to keep passing without a restart for {}{stability}",
                go_duration(r.min_healthy_time)
            ),
        );
        self.note(
            "rollout.progress_deadline",
            format!(
                "no Compose key: `docker compose up --wait --wait-timeout {}` bounds the wait on the command line",
                r.progress_deadline.as_secs().max(1)
            ),
        );
        if d.preflight.declared {
            self.note(
                "preflight",
                "the host checks ([preflight]: required variables, API keys, data directories and their modes, free disk, Docker version) are not exported; Compose creates a missing bind-mount directory as root",
            );
        }
        if !d.notify.is_empty() {
            self.note(
                "notify",
                format!(
                    "{} [[notify]] receiver(s) not exported: Compose sends no notifications",
                    d.notify.len()
                ),
            );
        }
        if let Some(m) = &d.migrations {
            match &m.job {
                None => self.note(
                    "migrations",
                    format!(
                        "the directory of sqlx migrations {} is not exported: Compose has no step that runs them once {} is healthy and reverts them with the stack; run them before its dependents start (berth migrate apply)",
                        self.relative(&m.source),
                        m.service
                    ),
                ),
                Some(job) => {
                    self.note(
                        format!("{JOB_SERVICE}.revert"),
                        format!(
                            "a one-shot service runs the upgrade and its dependents wait for it to complete; Compose never runs the downgrade{} nor restores a backup when a later service fails",
                            job.downgrade
                                .as_ref()
                                .map(|c| format!(" ({})", c.join(" ")))
                                .unwrap_or_default()
                        ),
                    );
                    self.note(
                        format!("{JOB_SERVICE}.timeout"),
                        format!(
                            "no Compose key: berth kills the job after {}",
                            go_duration(job.timeout)
                        ),
                    );
                }
            }
            if m.backup {
                self.note(
                    "migrations.backup",
                    format!(
                        "Compose takes no backup of {} before migrating (berth backup writes one to {}, kept {})",
                        m.service,
                        self.relative(&m.backup_dir),
                        humantime::format_duration(m.retention)
                    ),
                );
            }
        }
        if d.project.engine == Engine::Swarm {
            self.note(
                "project.engine",
                "docker stack deploy ignores depends_on: Swarm starts the services in no order and gates none on another",
            );
        }
    }

    fn service(&mut self, name: &str, svc: &Service) -> Yaml<'static> {
        let swarm = self.d.project.engine == Engine::Swarm;
        let mut m = Map::new();
        let image = self.text(
            name,
            "image",
            &svc.image,
            self.source.service_str(name, &["image"]),
        );
        m.put_opt("image", image);
        if let Some(b) = &svc.build {
            let mut build = Map::new();
            build.put("context", s(&self.relative(&b.context)));
            if b.dockerfile != "Dockerfile" {
                build.put("dockerfile", s(&lit(&b.dockerfile)));
            }
            let args = self.values(
                name,
                "build.args",
                &b.args,
                &["build", "args"],
                &BTreeSet::new(),
            );
            if !args.is_empty() {
                build.put("args", args.into_yaml());
            }
            m.put("build", build.into_yaml());
            if svc.pull_policy != PullPolicy::Missing {
                self.note(
                    format!("{name}.pull_policy"),
                    format!(
                        "berth builds the image and pulls by its pull_policy ({}); Compose's pull_policy: build builds it on every up",
                        pull_policy(svc.pull_policy).unwrap_or_default()
                    ),
                );
            }
            m.put("pull_policy", s("build"));
        } else if let Some(p) = pull_policy(svc.pull_policy) {
            m.put("pull_policy", s(&p));
        }
        if !swarm {
            let c = self.text(
                name,
                "container_name",
                &svc.container_name,
                self.source.service_str(name, &["container_name"]),
            );
            m.put_opt("container_name", c);
        }
        if let Some(c) = &svc.command {
            let v = self.argv(name, "command", c);
            m.put("command", v);
        }
        if let Some(e) = &svc.entrypoint {
            let v = self.argv(name, "entrypoint", e);
            m.put("entrypoint", v);
        }
        if let Some(u) = &svc.user {
            let v = self.text(name, "user", u, self.source.service_str(name, &["user"]));
            m.put_opt("user", v);
        }
        if let Some(w) = &svc.working_dir {
            let v = self.text(
                name,
                "working_dir",
                w,
                self.source.service_str(name, &["working_dir"]),
            );
            m.put_opt("working_dir", v);
        }
        let from_file = self.d.env_file_keys.get(name).cloned().unwrap_or_default();
        let env = self.values(
            name,
            "environment",
            &svc.environment,
            &["environment"],
            &from_file,
        );
        if !env.is_empty() {
            m.put("environment", env.into_yaml());
        }
        if let Some(f) = self.source.service_str(name, &["env_file"]) {
            let dir = &self.source.services[name].1;
            let path = if f.contains('$') {
                raw_for_compose(f)
            } else {
                self.relative(&dir.join(f))
            };
            m.put("env_file", seq(vec![s(&path)]));
            // Compose interpolates `$` in an env file's values; berth takes them as
            // they are. Which keys, not what values: they are secrets.
            let dollars: Vec<&str> = from_file
                .iter()
                .filter(|k| svc.environment.get(*k).is_some_and(|v| v.contains('$')))
                .map(String::as_str)
                .collect();
            if !dollars.is_empty() {
                self.note(
                    format!("{name}.env_file"),
                    format!(
                        "Compose interpolates the $ in the values of {} from its env file; berth takes them as written (write $$ there for Compose)",
                        dollars.join(", ")
                    ),
                );
            }
        } else if !from_file.is_empty() {
            self.note(
                format!("{name}.env_file"),
                "the values its env file gave are secrets and the file's path is not known here: they are not exported",
            );
        }
        let ports: Vec<Yaml> = svc
            .ports
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let raw = self.source.service_item(name, &["ports"], i);
                self.text(name, "ports", &port(p), raw).map(|v| s(&v))
            })
            .collect();
        if !ports.is_empty() {
            m.put("ports", seq(ports));
        }
        let volumes: Vec<Yaml> = svc.volumes.iter().map(|v| s(&self.volume(v))).collect();
        if !volumes.is_empty() {
            m.put("volumes", seq(volumes));
        }
        if svc.networks != [self.d.project.network.clone()] {
            let nets = svc
                .networks
                .iter()
                .map(|n| {
                    if *n == self.d.project.network {
                        s("default")
                    } else {
                        s(&lit(n))
                    }
                })
                .collect();
            m.put("networks", seq(nets));
        }
        if !svc.extra_hosts.is_empty() {
            let hosts = (0..svc.extra_hosts.len())
                .filter_map(|i| {
                    let raw = self.source.service_item(name, &["extra_hosts"], i);
                    self.text(name, "extra_hosts", &svc.extra_hosts[i], raw)
                })
                .map(|h| s(&h))
                .collect();
            m.put("extra_hosts", seq(hosts));
        }
        let deps = self.depends_on(name, svc);
        if !deps.is_empty() {
            m.put("depends_on", deps.into_yaml());
        }
        if let Some(h) = self.healthcheck(name, svc) {
            m.put("healthcheck", h);
        }
        if !swarm {
            // Under Swarm, deploy.restart_policy says it (stack deploy ignores `restart`).
            m.put("restart", s(&svc.restart));
        }
        if !svc.labels.is_empty() {
            let mut labels = Map::new();
            for (k, v) in &svc.labels {
                let raw = self.source.service_str(name, &["labels", k]);
                let v = self.text(name, &format!("labels.{k}"), v, raw);
                labels.put_opt(k, v);
            }
            m.put("labels", labels.into_yaml());
        }
        if let Some(bytes) = svc.mem_limit {
            m.put("mem_limit", s(&size(bytes)));
        }
        if !svc.profiles.is_empty() {
            let p = svc.profiles.iter().map(|p| s(p)).collect();
            m.put("profiles", seq(p));
        }
        if swarm {
            self.swarm(name, svc, &mut m);
        }
        m.into_yaml()
    }

    /// A string value: as berth resolved it, unless a secret was interpolated into it;
    /// then the source as written (its `${VAR}` references interpolated by Compose). A
    /// value written literally in the source holds nothing from an env file. None (with a
    /// note): a secret whose source is not known.
    fn text(
        &mut self,
        service: &str,
        key: &str,
        resolved: &str,
        raw: Option<&str>,
    ) -> Option<String> {
        match raw {
            Some(r) if r.contains("${") && self.secret(resolved) => {
                self.references = true;
                Some(raw_for_compose(r))
            }
            Some(_) => Some(lit(resolved)),
            None if self.secret(resolved) => {
                self.note(
                    format!("{service}.{key}"),
                    "holds a secret, and how the desired state wrote it is not known here: left out",
                );
                None
            }
            None => Some(lit(resolved)),
        }
    }

    /// Does `v` hold a secret of the desired state?
    fn secret(&self, v: &str) -> bool {
        !v.is_empty() && self.redactor.text(v) != v
    }

    /// An environment (or build args): each value as [`Self::text`] writes it, except that
    /// a secret-looking key's value is never written as it is (its `${VAR}` reference, or
    /// `${KEY}` with a note), and the keys its env file gave are left to `env_file`.
    fn values(
        &mut self,
        service: &str,
        key: &str,
        values: &BTreeMap<String, String>,
        raw_keys: &[&str],
        from_file: &BTreeSet<String>,
    ) -> Map {
        let mut out = Map::new();
        for (k, v) in values {
            if from_file.contains(k) {
                continue;
            }
            let mut path = raw_keys.to_vec();
            path.push(k);
            let raw = self.source.service_str(service, &path).map(str::to_string);
            // A value written literally holds nothing from an env file: only its key
            // can make it a secret.
            let interpolated = raw.as_ref().is_none_or(|r| r.contains("${"));
            let secret = (is_secret_key(k) && !v.is_empty()) || (interpolated && self.secret(v));
            let value = match &raw {
                _ if !secret => lit(v),
                Some(r) if r.contains("${") => {
                    self.references = true;
                    raw_for_compose(r)
                }
                _ => {
                    self.references = true;
                    self.note(
                        format!("{service}.{key}.{k}"),
                        format!(
                            "a secret written as a literal in the desired state is not exported: written as ${{{k}}}, to be set in the environment or the env file Compose reads"
                        ),
                    );
                    format!("${{{k}}}")
                }
            };
            out.put(k, s(&value));
        }
        out
    }

    /// `command` or `entrypoint`, as a list.
    fn argv(&mut self, service: &str, key: &str, resolved: &[String]) -> Yaml<'static> {
        let raw = self.source.service(service).and_then(|t| t.get(key));
        match raw {
            // A string the loader split on whitespace: when a secret went into it, the
            // string as written (Compose splits it the same way).
            Some(toml::Value::String(r)) => {
                if resolved.iter().any(|a| self.secret(a)) && r.contains("${") {
                    self.references = true;
                    s(&raw_for_compose(r))
                } else {
                    seq(resolved.iter().map(|a| s(&lit(a))).collect())
                }
            }
            _ => {
                let mut items = Vec::new();
                for (i, a) in resolved.iter().enumerate() {
                    let raw = self.source.service_item(service, &[key], i);
                    if let Some(v) = self.text(service, key, a, raw) {
                        items.push(s(&v));
                    }
                }
                seq(items)
            }
        }
    }

    /// A volume in Compose's short syntax: `name:/path[:ro]`, or a bind mount's source
    /// relative to the Compose file where it can be.
    fn volume(&self, v: &Volume) -> String {
        match v {
            Volume::Named {
                name,
                target,
                read_only,
            } => format!("{}:{}{}", lit(name), lit(target), ro(*read_only)),
            Volume::Bind {
                source,
                target,
                read_only,
            } => format!(
                "{}:{}{}",
                self.relative(source),
                lit(target),
                ro(*read_only)
            ),
        }
    }

    /// `depends_on`, long syntax: `service_healthy` where berth waits for a gate (the
    /// service's probe, or its image's HEALTHCHECK), `service_started` otherwise; the
    /// migrations as the job's `service_completed_successfully`.
    fn depends_on(&mut self, name: &str, svc: &Service) -> Map {
        let mut out = Map::new();
        let condition = |c: &str| {
            let mut m = Map::new();
            m.put("condition", self::s(c));
            m.into_yaml()
        };
        for dep in &svc.depends_on {
            if dep == MIGRATIONS_NODE
                && let Some(m) = &self.d.migrations
            {
                if m.job.is_some() {
                    out.put(JOB_SERVICE, condition("service_completed_successfully"));
                } else {
                    self.note(
                        format!("{name}.depends_on.{MIGRATIONS_NODE}"),
                        format!(
                            "waits for {} to be healthy only: the sqlx migrations are not run",
                            m.service
                        ),
                    );
                    if !out.contains(&m.service) {
                        out.put(&m.service, condition("service_healthy"));
                    }
                }
                continue;
            }
            let Some(other) = self.d.services.get(dep) else {
                continue;
            };
            let healthy = match &other.health {
                Some(_) => true,
                None => match self.options.image_healthcheck.get(&other.image) {
                    Some(has) => *has,
                    None => {
                        self.note(
                            format!("{name}.depends_on.{dep}"),
                            format!(
                                "{dep} has no probe: berth waits for its image's HEALTHCHECK when the image has one, which is not known here (the image is not on a reachable engine); written as service_started"
                            ),
                        );
                        false
                    }
                },
            };
            out.put(
                dep,
                condition(if healthy {
                    "service_healthy"
                } else {
                    "service_started"
                }),
            );
        }
        out
    }

    /// berth's probe as a Compose healthcheck; None for none or the image's own.
    fn healthcheck(&mut self, name: &str, svc: &Service) -> Option<Yaml<'static>> {
        let h = svc.health.as_ref()?;
        let test: Vec<String> = match &h.probe {
            Probe::Docker => return None,
            Probe::Postgres {
                port,
                user,
                database,
                ..
            } => {
                let user = self.text(
                    name,
                    "health.user",
                    user,
                    self.source.service_str(name, &["health", "user"]),
                )?;
                let database = self.text(
                    name,
                    "health.database",
                    database,
                    self.source.service_str(name, &["health", "database"]),
                )?;
                vec![
                    "CMD-SHELL".into(),
                    format!(
                        "pg_isready -U {} -d {} -h localhost -p {port}",
                        sh_quote(&user),
                        sh_quote(&database)
                    ),
                ]
            }
            Probe::Redis { port, password } => match password {
                None => vec![
                    "CMD".into(),
                    "redis-cli".into(),
                    "-p".into(),
                    port.to_string(),
                    "ping".into(),
                ],
                Some(password) => {
                    // The password only through a variable of the container's own
                    // environment, read when the check runs: never written here.
                    let var = svc
                        .environment
                        .iter()
                        .find(|(k, v)| {
                            *v == password
                                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        })
                        .map(|(k, _)| k.clone());
                    match var {
                        Some(var) => vec![
                            "CMD-SHELL".into(),
                            format!(
                                "redis-cli -p {port} -a \"$${var}\" --no-auth-warning ping | grep -q PONG"
                            ),
                        ],
                        None => {
                            self.note(
                                format!("{name}.health.password"),
                                "no variable of the container's environment holds the probe's password, and it is never written here: the healthcheck pings without it (set one, e.g. REDIS_PASSWORD, and add -a \"$$REDIS_PASSWORD\")",
                            );
                            vec![
                                "CMD".into(),
                                "redis-cli".into(),
                                "-p".into(),
                                port.to_string(),
                                "ping".into(),
                            ]
                        }
                    }
                }
            },
            Probe::Http {
                port,
                path,
                expect_json,
            } => {
                if !expect_json.is_empty() {
                    let fields: Vec<String> = expect_json
                        .iter()
                        .map(|(k, v)| format!("{k}={v:?}"))
                        .collect();
                    self.note(
                        format!("{name}.health.expect_json"),
                        format!(
                            "the healthcheck tests the HTTP status only; berth also wants the JSON fields {}",
                            fields.join(", ")
                        ),
                    );
                }
                let path = if path.starts_with('/') {
                    path.clone()
                } else {
                    format!("/{path}")
                };
                let url = sh_quote(&lit(&format!("http://localhost:{port}{path}")));
                vec![
                    "CMD-SHELL".into(),
                    format!("curl -fsS {url} || wget -q --spider {url}"),
                ]
            }
            Probe::Tcp { port } => vec![
                "CMD-SHELL".into(),
                format!("nc -z localhost {port} || bash -c 'exec 3<>/dev/tcp/localhost/{port}'"),
            ],
            Probe::Exec { command } => {
                let mut test = vec!["CMD".to_string()];
                for (i, a) in command.iter().enumerate() {
                    let raw = self.source.service_item(name, &["health", "command"], i);
                    test.push(self.text(name, "health.command", a, raw)?);
                }
                test
            }
        };
        let (deadline, _) = self.d.gate_timing(svc);
        if let Some(min) = h.min_healthy_time {
            self.note(
                format!("{name}.health.min_healthy_time"),
                format!(
                    "Compose has no stability window (berth wants {} of passing checks)",
                    go_duration(min)
                ),
            );
        }
        let interval = h.interval.max(Duration::from_millis(1));
        let retries = deadline.as_nanos().div_ceil(interval.as_nanos()).max(1);
        let mut m = Map::new();
        m.put("test", seq(test.iter().map(|t| s(t)).collect()));
        m.put("interval", s(&go_duration(h.interval)));
        m.put("timeout", s(&go_duration(h.timeout)));
        m.put(
            "retries",
            Yaml::Value(Scalar::Integer(i64::try_from(retries).unwrap_or(i64::MAX))),
        );
        // Compose calls a service unhealthy after start_period + retries × interval;
        // `berth import` reads the deadline back from the same sum, so the retries
        // alone carry it (a start_period would count the deadline twice).
        Some(m.into_yaml())
    }

    /// Swarm's keys: `deploy`, and the service's `configs` and `secrets`.
    fn swarm(&mut self, name: &str, svc: &Service, m: &mut Map) {
        let k = &svc.swarm;
        let mut deploy = Map::new();
        deploy.put(
            "replicas",
            Yaml::Value(Scalar::Integer(
                i64::try_from(k.replicas).unwrap_or(i64::MAX),
            )),
        );
        let p = &k.placement;
        if !p.is_empty() {
            let mut placement = Map::new();
            if !p.constraints.is_empty() {
                placement.put(
                    "constraints",
                    seq(p.constraints.iter().map(|c| s(&lit(c))).collect()),
                );
            }
            if !p.preferences.is_empty() {
                let prefs = p
                    .preferences
                    .iter()
                    .map(|spread| {
                        let mut one = Map::new();
                        one.put("spread", self::s(&lit(spread)));
                        one.into_yaml()
                    })
                    .collect();
                placement.put("preferences", seq(prefs));
            }
            if let Some(n) = p.max_replicas_per_node {
                placement.put(
                    "max_replicas_per_node",
                    Yaml::Value(Scalar::Integer(i64::try_from(n).unwrap_or(i64::MAX))),
                );
            }
            deploy.put("placement", placement.into_yaml());
        }
        if let Some(order) = k.update_order {
            let mut update = Map::new();
            update.put(
                "order",
                s(match order {
                    UpdateOrder::StartFirst => "start-first",
                    UpdateOrder::StopFirst => "stop-first",
                }),
            );
            deploy.put("update_config", update.into_yaml());
        }
        let (condition, attempts) = match svc.restart.as_str() {
            "no" => ("none", None),
            r => match r.strip_prefix("on-failure") {
                Some(n) => (
                    "on-failure",
                    n.strip_prefix(':').and_then(|n| n.parse().ok()),
                ),
                None => ("any", None),
            },
        };
        let mut restart = Map::new();
        restart.put("condition", self::s(condition));
        if let Some(n) = attempts {
            restart.put("max_attempts", Yaml::Value(Scalar::Integer(n)));
        }
        deploy.put("restart_policy", restart.into_yaml());
        m.put("deploy", deploy.into_yaml());
        for (key, files) in [("configs", &k.configs), ("secrets", &k.secrets)] {
            if files.is_empty() {
                continue;
            }
            let items = files
                .iter()
                .map(|f| {
                    let mut one = Map::new();
                    one.put("source", self::s(&file_key(name, &f.source)));
                    one.put("target", self::s(&lit(&f.target)));
                    one.into_yaml()
                })
                .collect();
            m.put(key, seq(items));
        }
    }

    /// `[migrations.job]` as a one-shot service that waits for the database to be healthy;
    /// its dependents wait for it to complete.
    fn migration_job(&mut self) -> Option<Yaml<'static>> {
        let m = self.d.migrations.as_ref()?;
        let job = m.job.as_ref()?;
        let mut out = Map::new();
        out.put("image", s(&lit(&job.image)));
        out.put(
            "command",
            seq(job.upgrade.iter().map(|a| s(&lit(a))).collect()),
        );
        let raw = self.source.migrations.as_ref().map(|(t, _)| t);
        let raw_env = |k: &str| {
            raw.and_then(|t| t.get("job"))
                .and_then(|j| j.get("environment"))
                .and_then(|e| e.get(k))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let mut env = Map::new();
        for (k, v) in &job.environment {
            let interpolated = raw_env(k).is_none_or(|r| r.contains("${"));
            let secret = (is_secret_key(k) && !v.is_empty()) || (interpolated && self.secret(v));
            let value = match raw_env(k) {
                _ if !secret => lit(v),
                Some(r) if r.contains("${") => {
                    self.references = true;
                    raw_for_compose(&r)
                }
                _ => {
                    self.references = true;
                    self.note(
                        format!("{JOB_SERVICE}.environment.{k}"),
                        format!("a secret written as a literal in the desired state is not exported: written as ${{{k}}}"),
                    );
                    format!("${{{k}}}")
                }
            };
            env.put(k, s(&value));
        }
        // The job gets the [migrations] url as DATABASE_URL: a secret as a whole.
        let url = raw
            .and_then(|t| t.get("url"))
            .and_then(|u| u.as_str())
            .filter(|u| u.contains("${") && !self.secret(u));
        self.references = true;
        let url = match url {
            Some(u) => raw_for_compose(u),
            None => {
                self.note(
                    format!("{JOB_SERVICE}.environment.DATABASE_URL"),
                    "the [migrations] url is a secret written as a literal: written as ${DATABASE_URL}",
                );
                "${DATABASE_URL}".to_string()
            }
        };
        if !env.contains("DATABASE_URL") {
            env.put("DATABASE_URL", s(&url));
        }
        out.put("environment", env.into_yaml());
        if let Some(db) = self.d.services.get(&m.service)
            && db.networks != [self.d.project.network.clone()]
        {
            let nets = db
                .networks
                .iter()
                .map(|n| {
                    if *n == self.d.project.network {
                        s("default")
                    } else {
                        s(&lit(n))
                    }
                })
                .collect();
            out.put("networks", seq(nets));
        }
        let mut deps = Map::new();
        let mut cond = Map::new();
        cond.put("condition", s("service_healthy"));
        deps.put(&m.service, cond.into_yaml());
        out.put("depends_on", deps.into_yaml());
        out.put("restart", s("no"));
        if self.d.project.engine == Engine::Swarm {
            self.note(
                format!("{JOB_SERVICE}.deploy"),
                "a one-shot service under docker stack deploy is restarted by Swarm unless its restart_policy is none, and nothing waits for it",
            );
            let mut deploy = Map::new();
            let mut restart = Map::new();
            restart.put("condition", s("none"));
            deploy.put("restart_policy", restart.into_yaml());
            out.put("deploy", deploy.into_yaml());
        }
        Some(out.into_yaml())
    }

    /// The top-level `networks`, `volumes`, `configs` and `secrets` the services use,
    /// each under the name berth gives it on the engine (Compose would prefix the
    /// project's name), so that the export runs on berth's data.
    fn top_level(&self) -> Vec<(&'static str, Yaml<'static>)> {
        let d = self.d;
        let mut networks = Map::new();
        let used: BTreeSet<&String> = d.services.values().flat_map(|s| &s.networks).collect();
        for n in used {
            let mut one = Map::new();
            one.put("name", s(&lit(n)));
            if *n == d.project.network {
                networks.put("default", one.into_yaml());
            } else {
                networks.put(n, one.into_yaml());
            }
        }
        let mut volumes = Map::new();
        for v in d.services.values().flat_map(|s| &s.volumes) {
            if let Volume::Named { name, .. } = v
                && !volumes.contains(name)
            {
                let mut one = Map::new();
                one.put("name", s(&lit(name)));
                volumes.put(name, one.into_yaml());
            }
        }
        let mut configs = Map::new();
        let mut secrets = Map::new();
        for (name, svc) in &d.services {
            for (map, files) in [
                (&mut configs, &svc.swarm.configs),
                (&mut secrets, &svc.swarm.secrets),
            ] {
                for f in files {
                    let mut one = Map::new();
                    one.put("file", s(&self.relative(&f.source)));
                    map.put(&file_key(name, &f.source), one.into_yaml());
                }
            }
        }
        let mut out = Vec::new();
        for (key, map) in [
            ("networks", networks),
            ("volumes", volumes),
            ("configs", configs),
            ("secrets", secrets),
        ] {
            if !map.is_empty() {
                out.push((key, map.into_yaml()));
            }
        }
        out
    }

    /// `p` relative to the Compose file's directory (`./x`, `../x`), or absolute when
    /// the two share no more than `/`; `$` doubled.
    fn relative(&self, p: &Path) -> String {
        lit(&relative_to(&self.options.base, p))
    }
}

/// `p` from `base` (both made absolute and normalized lexically).
pub fn relative_to(base: &Path, p: &Path) -> String {
    let base = normalize(&absolute(base));
    let p = normalize(&absolute(p));
    let b: Vec<Component> = base.components().collect();
    let c: Vec<Component> = p.components().collect();
    let common = b.iter().zip(&c).take_while(|(x, y)| x == y).count();
    if common <= 1 {
        return p.to_string_lossy().into_owned();
    }
    let mut parts: Vec<String> = Vec::new();
    for _ in common..b.len() {
        parts.push("..".into());
    }
    for part in &c[common..] {
        parts.push(part.as_os_str().to_string_lossy().into_owned());
    }
    match parts.first().map(String::as_str) {
        None => ".".into(),
        Some("..") => parts.join("/"),
        Some(_) => format!("./{}", parts.join("/")),
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// `.` and `..` taken out lexically.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The key of a Swarm config or secret file under the top-level `configs`/`secrets`.
fn file_key(service: &str, source: &Path) -> String {
    let base: String = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{service}_{base}")
}

/// A resolved value for Compose: every `$` doubled, so Compose interpolates nothing in it.
fn lit(v: &str) -> String {
    v.replace('$', "$$")
}

/// A value as the desired state wrote it, for Compose: its `${...}` references and `$$`
/// stay (Compose reads them as berth does); a lone `$`, literal for berth, is doubled.
fn raw_for_compose(r: &str) -> String {
    let mut out = String::with_capacity(r.len());
    let mut chars = r.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('$') => {
                chars.next();
                out.push_str("$$");
            }
            Some('{') => out.push('$'),
            _ => out.push_str("$$"),
        }
    }
    out
}

/// `v` as one shell word.
fn sh_quote(v: &str) -> String {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c))
    {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', r"'\''"))
    }
}

fn ro(read_only: bool) -> &'static str {
    if read_only { ":ro" } else { "" }
}

/// A port in Compose's short syntax: `[HOST_IP:][HOST:]CONTAINER/PROTO`.
fn port(p: &Port) -> String {
    let mut out = String::new();
    if let Some(ip) = &p.host_ip {
        if ip.contains(':') && !ip.starts_with('[') {
            out.push_str(&format!("[{ip}]:"));
        } else {
            out.push_str(&format!("{ip}:"));
        }
    }
    if let Some(h) = p.host {
        out.push_str(&format!("{h}:"));
    }
    out.push_str(&format!("{}/{}", p.container, p.protocol));
    out
}

/// A duration as Compose (Go) writes one: `250ms`, `1m30s`, `6h`.
fn go_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        let secs = d.as_secs();
        if secs == 0 {
            return "0s".into();
        }
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        let mut out = String::new();
        for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
            if n > 0 {
                out.push_str(&format!("{n}{unit}"));
            }
        }
        out
    } else if d.as_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else if d.as_nanos().is_multiple_of(1_000) {
        format!("{}us", d.as_micros())
    } else {
        format!("{}ns", d.as_nanos())
    }
}

/// `pull_policy` as Compose names it; None for `missing`, Compose's default too.
fn pull_policy(p: PullPolicy) -> Option<String> {
    match p {
        PullPolicy::Missing => None,
        PullPolicy::Always => Some("always".into()),
        PullPolicy::Never => Some("never".into()),
        PullPolicy::Every(d) if d == Duration::from_secs(86_400) => Some("daily".into()),
        PullPolicy::Every(d) if d == Duration::from_secs(7 * 86_400) => Some("weekly".into()),
        PullPolicy::Every(d) => Some(format!("every_{}", go_duration(d))),
    }
}

/// Bytes in Compose's units (`1g`, `512m`), exact.
fn size(bytes: u64) -> String {
    for (unit, factor) in [("g", 1u64 << 30), ("m", 1 << 20), ("k", 1 << 10)] {
        if bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    format!("{bytes}b")
}

/// `text` as `#` comment lines, wrapped near 90 columns, each starting with `indent`.
fn comment(text: &str, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && indent.len() + 2 + line.len() + 1 + word.len() > 90 {
            out.push_str(&format!("{indent}# {line}\n"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&format!("{indent}# {line}\n"));
    out
}

fn s(v: &str) -> Yaml<'static> {
    Yaml::Value(Scalar::String(Cow::Owned(v.to_string())))
}

fn seq(items: Vec<Yaml<'static>>) -> Yaml<'static> {
    Yaml::Sequence(items)
}

/// A mapping that keeps its keys in the order they are put.
struct Map(Mapping<'static>);

impl Map {
    fn new() -> Map {
        Map(Mapping::new())
    }

    fn put(&mut self, key: &str, value: Yaml<'static>) {
        self.0.insert(s(key), value);
    }

    fn put_opt(&mut self, key: &str, value: Option<String>) {
        if let Some(v) = value {
            self.put(key, s(&v));
        }
    }

    fn contains(&self, key: &str) -> bool {
        self.0.contains_key(&s(key))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn into_yaml(self) -> Yaml<'static> {
        Yaml::Mapping(self.0)
    }
}

/// One block-style YAML document, without its `---` line, ending in a line break.
fn dump(y: Yaml<'static>) -> String {
    let mut out = String::new();
    YamlEmitter::new(&mut out)
        .dump(&y)
        .expect("writing to a String cannot fail");
    let mut out = out.strip_prefix("---\n").map(str::to_string).unwrap_or(out);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_are_doubled_in_values_and_kept_in_references() {
        assert_eq!(lit("a$b$$c"), "a$$b$$$$c");
        assert_eq!(raw_for_compose("${A:-x} $B $$C $"), "${A:-x} $$B $$C $$");
    }

    #[test]
    fn paths_are_relative_to_the_compose_file_where_they_can_be() {
        let base = Path::new("/srv/stack");
        assert_eq!(
            relative_to(base, Path::new("/srv/stack/data/pg")),
            "./data/pg"
        );
        assert_eq!(
            relative_to(base, Path::new("/srv/config/x.yml")),
            "../config/x.yml"
        );
        assert_eq!(relative_to(base, Path::new("/srv/stack")), ".");
        assert_eq!(relative_to(base, Path::new("/var/lib/x")), "/var/lib/x");
        assert_eq!(
            relative_to(
                Path::new("/srv/stack/desired-state/.."),
                Path::new("/srv/stack/data")
            ),
            "./data"
        );
    }

    #[test]
    fn durations_sizes_and_ports_read_as_compose_writes_them() {
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(60)), "1m");
        assert_eq!(size(1 << 30), "1g");
        assert_eq!(size(512 << 20), "512m");
        assert_eq!(size(6 * 1024 * 1024 + 1), "6291457b");
        let p = Port {
            host_ip: Some("::1".into()),
            host: Some(5433),
            container: 5432,
            protocol: "tcp".into(),
        };
        assert_eq!(port(&p), "[::1]:5433:5432/tcp");
        assert_eq!(
            pull_policy(PullPolicy::Every(Duration::from_secs(6 * 3600))).as_deref(),
            Some("every_6h")
        );
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(sh_quote("assistant"), "assistant");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
