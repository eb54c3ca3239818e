//! Reading, interpolating and validating desired-state TOML.
//!
//! The raw structs mirror the file with spans (`Spanned`) on everything that a later check
//! may need to point at; `deny_unknown_fields` makes unknown keys errors with a location.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::{
    At, Build, DataDir, DesiredState, Health, HostPort, Port, Preflight, Probe, Project, Rollout,
    Selection, Service, Volume, duration, interpolate::interpolate,
};
use crate::diag::{Diagnostic, Diagnostics};

type S = Spanned<String>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    project: Option<Spanned<RawProject>>,
    rollout: Option<RawRollout>,
    preflight: Option<Spanned<RawPreflight>>,
    #[serde(default)]
    services: BTreeMap<S, Spanned<RawService>>,
}

/// The runbook's pre-flight (`validate_config.py`): see [`crate::preflight`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPreflight {
    #[serde(default)]
    required_env: Vec<S>,
    /// Variable name -> the prefix its value must start with.
    #[serde(default)]
    api_keys: BTreeMap<S, S>,
    /// Name of the variable holding a PostgreSQL URL that must parse.
    database_url: Option<S>,
    min_free_disk: Option<S>,
    docker_min_version: Option<S>,
    /// Path (relative to the file) -> "755" or { mode = "700", owner = "999:999" }.
    #[serde(default)]
    data_dirs: BTreeMap<S, Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProject {
    name: S,
    network: Option<S>,
    env_file: Option<S>,
    #[serde(default)]
    profiles: Vec<S>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRollout {
    healthy_deadline: Option<S>,
    min_healthy_time: Option<S>,
    progress_deadline: Option<S>,
    auto_revert: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StrOrList {
    Str(String),
    List(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuild {
    context: S,
    dockerfile: Option<S>,
    #[serde(default)]
    args: BTreeMap<String, Spanned<Scalar>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    image: Option<S>,
    build: Option<Spanned<RawBuild>>,
    command: Option<Spanned<StrOrList>>,
    entrypoint: Option<Spanned<StrOrList>>,
    #[serde(default)]
    environment: BTreeMap<String, Spanned<Scalar>>,
    env_file: Option<S>,
    #[serde(default)]
    ports: Vec<S>,
    #[serde(default)]
    volumes: Vec<S>,
    #[serde(default)]
    networks: Vec<S>,
    #[serde(default)]
    depends_on: Vec<S>,
    restart: Option<S>,
    #[serde(default)]
    labels: BTreeMap<String, Spanned<Scalar>>,
    user: Option<S>,
    working_dir: Option<S>,
    container_name: Option<S>,
    #[serde(default)]
    profiles: Vec<S>,
    health: Option<Spanned<RawHealth>>,
    #[serde(default)]
    extra_hosts: Vec<S>,
    // TEMPORARY (images branch): the spec branch owns pull_policy's parsing; this minimal
    // form exists so the registry e2e tests can set it. Drop it in favour of theirs.
    pull_policy: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    probe: S,
    port: Option<Spanned<i64>>,
    path: Option<S>,
    command: Option<Spanned<StrOrList>>,
    interval: Option<S>,
    timeout: Option<S>,
    healthy_deadline: Option<S>,
    min_healthy_time: Option<S>,
    user: Option<S>,
    password: Option<S>,
    database: Option<S>,
    expect_json: Option<BTreeMap<String, S>>,
}

/// One parsed file with what is needed to point into it.
struct Source {
    path: PathBuf,
    dir: PathBuf,
    text: String,
    raw: RawFile,
}

/// Load and validate the desired state at `path` with the process environment.
pub fn load(path: &Path, selection: &Selection) -> Result<DesiredState, Diagnostics> {
    let env: HashMap<String, String> = std::env::vars().collect();
    load_with_env(path, selection, &env)
}

/// As [`load`], with an explicit environment (tests use this).
pub fn load_with_env(
    path: &Path,
    selection: &Selection,
    env: &HashMap<String, String>,
) -> Result<DesiredState, Diagnostics> {
    let extra_profiles = &selection.profiles;
    let mut diags = Diagnostics::default();
    let files = list_files(path).map_err(|d| Diagnostics(vec![d]))?;
    let mut hasher = Sha256::new();
    let mut sources = Vec::new();
    for file in &files {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                diags.push(Diagnostic::file(file, format!("cannot read: {e}")));
                continue;
            }
        };
        hasher.update(file.file_name().unwrap_or_default().as_encoded_bytes());
        hasher.update([0]);
        hasher.update(text.as_bytes());
        hasher.update([0]);
        match toml::from_str::<RawFile>(&text) {
            Ok(raw) => sources.push(Source {
                dir: file.parent().unwrap_or(Path::new(".")).to_path_buf(),
                path: file.clone(),
                text,
                raw,
            }),
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                diags.push(Diagnostic::at(
                    file,
                    &text,
                    span,
                    e.message().trim().to_string(),
                ));
            }
        }
    }
    // What is left out is part of "this desired state" too: the same files with another
    // selection are another generation (and are poisoned separately).
    let mut excluded: Vec<&String> = selection.exclude.iter().collect();
    excluded.sort();
    excluded.dedup();
    for name in &excluded {
        hasher.update(b"exclude\0");
        hasher.update(name.as_bytes());
        hasher.update([0]);
    }
    if !diags.is_empty() {
        return Err(diags.sorted());
    }
    let mut ctx = Resolver {
        env,
        env_file_vars: HashMap::new(),
        secret_values: BTreeSet::new(),
        diags: Diagnostics::default(),
        failed_values: BTreeSet::new(),
    };
    let state = ctx.resolve(
        &sources,
        extra_profiles,
        &selection.exclude,
        format!("{:x}", hasher.finalize()),
    );
    match state {
        Some(s) if ctx.diags.is_empty() => Ok(s),
        _ => Err(ctx.diags.sorted()),
    }
}

/// Where `span` of `src` is, for checks that run after loading.
fn at(src: &Source, span: Range<usize>) -> At {
    let (line, col) = crate::diag::line_col(&src.text, span.start);
    At {
        file: src.path.clone(),
        line,
        col,
    }
}

/// The password of a `scheme://user:password@host` value, percent-decoded.
fn url_password(v: &str) -> Option<String> {
    let url = url::Url::parse(v).ok()?;
    let p = url.password()?;
    let decoded = percent_decode(p);
    Some(decoded).filter(|p| !p.is_empty())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
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
fn check_database_url(value: &str) -> Result<(), String> {
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

/// "10GiB", "500MB", "1T", "4096": K/M/G/T and KiB... are powers of 1024, KB... of 1000.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad size {text:?}: use a number and a unit, e.g. \"10GiB\""))?;
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "K" | "KiB" => 1024.0,
        "M" | "MiB" => 1024.0 * 1024.0,
        "G" | "GiB" => 1024.0 * 1024.0 * 1024.0,
        "T" | "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        u => {
            return Err(format!(
                "bad size unit {u:?} in {text:?}: use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB"
            ));
        }
    };
    Ok((n * mult) as u64)
}

/// "20.10" -> (20, 10); "24" -> (24, 0).
pub fn parse_version(text: &str) -> Option<(u64, u64)> {
    let mut it = text.trim().split('.');
    let major = it.next()?.parse().ok()?;
    let minor = match it.next() {
        Some(m) => m.parse().ok()?,
        None => 0,
    };
    Some((major, minor))
}

fn parse_owner(text: &str) -> Option<(u32, u32)> {
    let (u, g) = text.split_once(':')?;
    Some((u.parse().ok()?, g.parse().ok()?))
}

fn list_files(path: &Path) -> Result<Vec<PathBuf>, Diagnostic> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Diagnostic::file(path, format!("cannot read desired state: {e}")))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Diagnostic::file(path, format!("cannot list directory: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Diagnostic::file(path, "directory holds no *.toml files"));
    }
    Ok(files)
}

struct Resolver<'a> {
    env: &'a HashMap<String, String>,
    /// Variables from the project env file: used for interpolation after the process env.
    env_file_vars: HashMap<String, String>,
    secret_values: BTreeSet<String>,
    diags: Diagnostics,
    /// Spans of values whose interpolation failed: that error is reported, and checks of
    /// the (meaningless) remaining value are not.
    failed_values: BTreeSet<(PathBuf, usize)>,
}

impl Resolver<'_> {
    fn err(&mut self, src: &Source, span: Range<usize>, msg: impl Into<String>) {
        if self.failed_values.contains(&(src.path.clone(), span.start)) {
            return;
        }
        self.diags
            .push(Diagnostic::at(&src.path, &src.text, span, msg));
    }

    fn resolve(
        &mut self,
        sources: &[Source],
        extra_profiles: &[String],
        exclude: &[String],
        source_hash: String,
    ) -> Option<DesiredState> {
        // The project block: exactly one across all files.
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
        let praw = praw.get_ref();
        if let Some(env_file) = &praw.env_file {
            let path = psrc.dir.join(env_file.get_ref());
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
                if !valid_name(&v) {
                    self.err(psrc, n.span(), format!("bad network name {v:?}"));
                }
                v
            }
            None => format!("{name}_default"),
        };
        let mut profiles: BTreeSet<String> = extra_profiles.iter().cloned().collect();
        for p in &praw.profiles {
            profiles.insert(p.get_ref().clone());
        }

        let mut rollout = Rollout::default();
        for src in sources {
            if let Some(r) = &src.raw.rollout {
                if let Some(d) = self.duration(src, &r.healthy_deadline) {
                    rollout.healthy_deadline = d;
                }
                if let Some(d) = self.duration(src, &r.min_healthy_time) {
                    rollout.min_healthy_time = d;
                }
                if let Some(d) = self.duration(src, &r.progress_deadline) {
                    rollout.progress_deadline = d;
                }
                if let Some(a) = r.auto_revert {
                    rollout.auto_revert = a;
                }
            }
        }

        // Services, unique across files.
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
        let enabled = |svc: &RawService| {
            svc.profiles.is_empty() || svc.profiles.iter().any(|p| profiles.contains(p.get_ref()))
        };
        let active_names: BTreeSet<&str> = all
            .iter()
            .filter(|(_, k, s)| enabled(s.get_ref()) && !exclude.contains(k.get_ref()))
            .map(|(_, k, _)| k.get_ref().as_str())
            .collect();
        let active = |name: &String| active_names.contains(name.as_str());

        let mut services = BTreeMap::new();
        for (src, key, svc) in &all {
            if !valid_name(key.get_ref()) {
                self.err(
                    src,
                    key.span(),
                    format!("bad service name {:?}: use letters, digits, '_', '.', '-', starting with a letter or digit (at most 63)", key.get_ref()),
                );
            }
            for dep in &svc.get_ref().depends_on {
                let d = dep.get_ref().as_str();
                if !seen.contains_key(d) {
                    self.err(
                        src,
                        dep.span(),
                        format!(
                            "service {:?} depends on {d:?}, which is not defined",
                            key.get_ref()
                        ),
                    );
                } else if active(key.get_ref()) && !active_names.contains(d) {
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
            if !active(key.get_ref()) {
                continue;
            }
            if let Some(s) = self.service(src, key, svc, &name, &network) {
                services.insert(s.name.clone(), s);
            }
        }

        // Cycles, named as a path and located at the first edge of the cycle.
        if let Err(cycle) = crate::graph::levels(services.values().map(|s| {
            (
                s.name.as_str(),
                s.depends_on.iter().map(String::as_str).collect(),
            )
        })) && cycle.len() > 2
        {
            // (A self-dependency, cycle.len() == 2, is reported on its own above.)
            let from = &cycle[0];
            let to = &cycle[1];
            if let Some((src, _, svc)) = all.iter().find(|(_, k, _)| k.get_ref() == from) {
                let span = svc
                    .get_ref()
                    .depends_on
                    .iter()
                    .find(|d| d.get_ref() == to)
                    .map(|d| d.span())
                    .unwrap_or(svc.span());
                self.err(
                    src,
                    span,
                    format!("dependency cycle: {}", cycle.join(" -> ")),
                );
            }
        }

        // Host ports and container names must be unique across the project.
        let mut host_ports: BTreeMap<(String, u16, String), String> = BTreeMap::new();
        let mut host_port_list = Vec::new();
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        for (src, key, svc) in &all {
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

        let mut preflight = self.preflight(sources).unwrap_or_default();
        preflight.host_ports = host_port_list;
        preflight.base_dir = psrc.dir.clone();

        Some(DesiredState {
            project: Project { name, network },
            rollout,
            services,
            source_hash,
            files: sources.iter().map(|s| s.path.clone()).collect(),
            secret_values: self.secret_values.iter().cloned().collect(),
            preflight,
        })
    }

    fn service(
        &mut self,
        src: &Source,
        key: &S,
        svc: &Spanned<RawService>,
        project: &str,
        network: &str,
    ) -> Option<Service> {
        let name = key.get_ref().clone();
        let raw = svc.get_ref();
        let image = match (&raw.image, &raw.build) {
            (Some(i), _) => self.string(src, i).unwrap_or_default(),
            (None, Some(_)) => format!("{project}-{name}:latest"),
            (None, None) => {
                self.err(
                    src,
                    key.span(),
                    format!("service {name:?} needs `image` or `build`"),
                );
                return None;
            }
        };
        if let Some(i) = &raw.image
            && (image.is_empty() || image.contains(char::is_whitespace))
        {
            self.err(src, i.span(), format!("bad image reference {image:?}"));
        }
        let build = raw.build.as_ref().map(|b| {
            let br = b.get_ref();
            let context = self.string(src, &br.context).unwrap_or_default();
            let context = src.dir.join(context);
            if !context.is_dir() {
                self.err(
                    src,
                    br.context.span(),
                    format!("build context {} is not a directory", context.display()),
                );
            }
            let args = br
                .args
                .iter()
                .map(|(k, v)| (k.clone(), self.scalar(src, v)))
                .collect();
            Build {
                context,
                dockerfile: br
                    .dockerfile
                    .as_ref()
                    .and_then(|d| self.string(src, d))
                    .unwrap_or_else(|| "Dockerfile".into()),
                args,
                context_hash: None,
            }
        });

        let mut environment = BTreeMap::new();
        if let Some(env_file) = &raw.env_file {
            let path = src.dir.join(env_file.get_ref());
            if let Some(vars) = self.read_env_file(src, env_file, &path, true) {
                environment.extend(vars);
            }
        }
        for (k, v) in &raw.environment {
            if k.is_empty() || k.contains('=') {
                self.err(
                    src,
                    v.span(),
                    format!("bad environment variable name {k:?}"),
                );
            }
            let value = self.scalar(src, v);
            environment.insert(k.clone(), value);
        }

        let mut ports = Vec::new();
        for p in &raw.ports {
            let text = self.string(src, p).unwrap_or_default();
            match parse_port(&text) {
                Ok(port) => ports.push(port),
                Err(msg) => self.err(src, p.span(), msg),
            }
        }
        let mut volumes = Vec::new();
        for v in &raw.volumes {
            let text = self.string(src, v).unwrap_or_default();
            match parse_volume(&text, &src.dir) {
                Ok(vol) => volumes.push(vol),
                Err(msg) => self.err(src, v.span(), msg),
            }
        }
        let networks = if raw.networks.is_empty() {
            vec![network.to_string()]
        } else {
            raw.networks
                .iter()
                .filter_map(|n| {
                    let v = self.string(src, n)?;
                    if !valid_name(&v) {
                        self.err(src, n.span(), format!("bad network name {v:?}"));
                    }
                    Some(v)
                })
                .collect()
        };
        let restart = match &raw.restart {
            Some(r) => {
                let v = self.string(src, r).unwrap_or_default();
                let ok = matches!(
                    v.as_str(),
                    "no" | "always" | "unless-stopped" | "on-failure"
                ) || v
                    .strip_prefix("on-failure:")
                    .is_some_and(|n| n.parse::<u32>().is_ok());
                if !ok {
                    self.err(src, r.span(), format!("bad restart policy {v:?}: use \"no\", \"always\", \"unless-stopped\", \"on-failure\" or \"on-failure:N\""));
                }
                v
            }
            None => "unless-stopped".into(),
        };
        let mut labels = BTreeMap::new();
        for (k, v) in &raw.labels {
            if k.starts_with("berth.") {
                self.err(
                    src,
                    v.span(),
                    format!("label {k:?}: the berth.* labels are berth's own"),
                );
            }
            let value = self.scalar(src, v);
            labels.insert(k.clone(), value);
        }
        let container_name = match &raw.container_name {
            Some(c) => {
                let v = self.string(src, c).unwrap_or_default();
                if !valid_container_name(&v) {
                    self.err(
                        src,
                        c.span(),
                        format!(
                            "bad container name {v:?}: Docker allows [a-zA-Z0-9][a-zA-Z0-9_.-]+"
                        ),
                    );
                }
                v
            }
            None => format!("{project}-{name}"),
        };
        let health = raw.health.as_ref().and_then(|h| self.health(src, h));
        let mut extra_hosts = Vec::new();
        for e in &raw.extra_hosts {
            let Some(v) = self.string(src, e) else {
                continue;
            };
            match v.split_once(':') {
                Some((host, addr)) if !host.is_empty() && !addr.is_empty() => extra_hosts.push(v),
                _ => self.err(
                    src,
                    e.span(),
                    format!(
                        "bad extra_hosts entry {v:?}: use \"HOST:IP\" (IP may be host-gateway)"
                    ),
                ),
            }
        }
        Some(Service {
            name,
            image,
            build,
            command: raw.command.as_ref().map(|c| self.list(src, c)),
            entrypoint: raw.entrypoint.as_ref().map(|c| self.list(src, c)),
            environment,
            ports,
            volumes,
            networks,
            depends_on: raw.depends_on.iter().map(|d| d.get_ref().clone()).collect(),
            restart,
            labels,
            user: raw.user.as_ref().and_then(|u| self.string(src, u)),
            working_dir: raw.working_dir.as_ref().and_then(|u| self.string(src, u)),
            container_name,
            profiles: raw.profiles.iter().map(|p| p.get_ref().clone()).collect(),
            health,
            extra_hosts,
            pull_policy: match raw.pull_policy.as_ref().map(|p| p.get_ref().as_str()) {
                None | Some("missing") => crate::spec::PullPolicy::Missing,
                Some("always") => crate::spec::PullPolicy::Always,
                Some("never") => crate::spec::PullPolicy::Never,
                Some("daily") => {
                    crate::spec::PullPolicy::Every(std::time::Duration::from_secs(86_400))
                }
                Some("weekly") => {
                    crate::spec::PullPolicy::Every(std::time::Duration::from_secs(7 * 86_400))
                }
                Some(other) => match other
                    .strip_prefix("every_")
                    .map(crate::spec::duration::parse)
                {
                    Some(Ok(d)) => crate::spec::PullPolicy::Every(d),
                    _ => {
                        let at = raw.pull_policy.as_ref().expect("matched Some").span();
                        self.err(src, at, format!("bad pull_policy {other:?}"));
                        crate::spec::PullPolicy::Missing
                    }
                },
            },
        })
    }

    fn health(&mut self, src: &Source, h: &Spanned<RawHealth>) -> Option<Health> {
        let raw = h.get_ref();
        let kind = raw.probe.get_ref().as_str();
        let port_or = |this: &mut Self, default: Option<u16>| -> Option<u16> {
            match &raw.port {
                Some(p) => match u16::try_from(*p.get_ref()) {
                    Ok(v) if v > 0 => Some(v),
                    _ => {
                        this.err(
                            src,
                            p.span(),
                            format!("port {} is out of range 1-65535", p.get_ref()),
                        );
                        None
                    }
                },
                None if default.is_some() => default,
                None => {
                    this.err(
                        src,
                        h.span(),
                        format!("health.port is required for probe = {kind:?}"),
                    );
                    None
                }
            }
        };
        let port = |this: &mut Self| port_or(this, None);
        // Fields only some probes take are errors on the others, located at the field.
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
        let probe = match kind {
            "tcp" => Probe::Tcp { port: port(self)? },
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
                    port: port(self)?,
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
                    port: port_or(self, Some(5432))?,
                    user: user?,
                    password: password?,
                    database: database?,
                }
            }
            "redis" => {
                let password = raw.password.as_ref().and_then(|p| self.string(src, p));
                self.secret(&password);
                Probe::Redis {
                    port: port_or(self, Some(6379))?,
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
        };
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

    /// The `[preflight]` block: the checks that need only the files and the environment
    /// run here (so they point at the line), the host checks are collected for
    /// [`crate::preflight`].
    fn preflight(&mut self, sources: &[Source]) -> Option<Preflight> {
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
        let (src, p) = found?;
        let raw = p.get_ref();
        let mut out = Preflight {
            declared: true,
            required_env: raw.required_env.len(),
            api_keys: raw.api_keys.len(),
            database_url: raw.database_url.as_ref().map(|v| v.get_ref().clone()),
            ..Preflight::default()
        };
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
        for (path, spec) in &raw.data_dirs {
            let Some(rel) = self.string(src, path) else {
                continue;
            };
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
                continue;
            };
            let mode = match u32::from_str_radix(&mode, 8) {
                Ok(m) if (3..=4).contains(&mode.len()) && m <= 0o7777 => m,
                _ => {
                    self.err(
                        src,
                        spec.span(),
                        format!("data_dirs.{rel:?}: bad mode {mode:?}: use 3 or 4 octal digits"),
                    );
                    continue;
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
                    continue;
                }
            };
            out.data_dirs.push(DataDir {
                path: normalize(&src.dir.join(&rel)),
                mode,
                owner,
                at: at(src, path.span()),
            });
        }
        Some(out)
    }

    /// A value that must never be printed (a probe's password).
    fn secret(&mut self, value: &Option<String>) {
        if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
            self.secret_values.insert(v.clone());
        }
    }

    fn lookup(&self, name: &str) -> Option<String> {
        self.env
            .get(name)
            .or_else(|| self.env_file_vars.get(name))
            .cloned()
    }

    /// Interpolate one string value, reporting a missing variable where it is written.
    fn string(&mut self, src: &Source, s: &S) -> Option<String> {
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
                self.err(src, at..at, e.message);
                self.failed_values
                    .insert((src.path.clone(), s.span().start));
                None
            }
        }
    }

    fn scalar(&mut self, src: &Source, v: &Spanned<Scalar>) -> String {
        match v.get_ref() {
            Scalar::Str(s) => self
                .string(src, &Spanned::new(v.span(), s.clone()))
                .unwrap_or_default(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }

    fn list(&mut self, src: &Source, v: &Spanned<StrOrList>) -> Vec<String> {
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

    fn duration(&mut self, src: &Source, v: &Option<S>) -> Option<std::time::Duration> {
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

    /// Read a `KEY=VALUE` env file. It must exist and be private to its owner: it holds
    /// secrets, and a file that group or others can read has already leaked them.
    fn read_env_file(
        &mut self,
        src: &Source,
        at: &S,
        path: &Path,
        all_secret: bool,
    ) -> Option<HashMap<String, String>> {
        use std::os::unix::fs::PermissionsExt;
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
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
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
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let Some((k, v)) = line.split_once('=') else {
                self.diags.push(Diagnostic {
                    file: path.to_path_buf(),
                    line: i + 1,
                    col: 1,
                    message: "expected KEY=VALUE".into(),
                });
                continue;
            };
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            let k = k.trim();
            if !v.is_empty() && (all_secret || crate::redact::is_secret_key(k)) {
                self.secret_values.insert(v.to_string());
            }
            if let Some(password) = url_password(v) {
                self.secret_values.insert(password);
            }
            vars.insert(k.to_string(), v.to_string());
        }
        Some(vars)
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn valid_container_name(s: &str) -> bool {
    s.len() >= 2
        && s.len() <= 128
        && valid_name(&s[..s.len().min(63)])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn valid_project_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c))
}

fn parse_port_number(s: &str, what: &str, full: &str) -> Result<u16, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        Ok(n) => Err(format!(
            "{what} port {n} in {full:?} is out of range 1-65535"
        )),
        Err(_) => Err(format!(
            "bad port mapping {full:?}: {s:?} is not a port number (write \"HOST:CONTAINER\", e.g. \"8080:80\")"
        )),
    }
}

/// `CONTAINER`, `HOST:CONTAINER`, `IP:HOST:CONTAINER`, each with an optional `/tcp|/udp`.
fn parse_port(text: &str) -> Result<Port, String> {
    let (spec, protocol) = match text.rsplit_once('/') {
        Some((s, p)) if p == "tcp" || p == "udp" => (s, p.to_string()),
        Some((_, p)) => {
            return Err(format!(
                "bad protocol {p:?} in port {text:?}: use tcp or udp"
            ));
        }
        None => (text, "tcp".to_string()),
    };
    let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
    let (host_ip, host, container) = match parts.as_slice() {
        [c] => (None, None, *c),
        [c, h] => (None, Some(*h), *c),
        [c, h, ip] => (Some(ip.trim_matches(['[', ']']).to_string()), Some(*h), *c),
        _ => unreachable!(),
    };
    if let Some(ip) = &host_ip
        && ip.parse::<std::net::IpAddr>().is_err()
    {
        return Err(format!("bad host address {ip:?} in port {text:?}"));
    }
    Ok(Port {
        host_ip,
        host: host
            .map(|h| parse_port_number(h, "host", text))
            .transpose()?,
        container: parse_port_number(container, "container", text)?,
        protocol,
    })
}

/// `NAME:/path[:ro|:rw]` for a named volume, `./rel:/path` or `/abs:/path` for a bind.
fn parse_volume(text: &str, base: &Path) -> Result<Volume, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [s, t] => (*s, *t, "rw"),
        [s, t, m] => (*s, *t, *m),
        _ => {
            return Err(format!(
                "bad volume {text:?}: write \"SOURCE:/container/path[:ro]\""
            ));
        }
    };
    let read_only = match mode {
        "ro" => true,
        "rw" => false,
        m => return Err(format!("bad volume mode {m:?} in {text:?}: use ro or rw")),
    };
    if !target.starts_with('/') {
        return Err(format!(
            "volume target {target:?} in {text:?} must be an absolute path"
        ));
    }
    let target = target.to_string();
    if source.starts_with('/') || source.starts_with('.') || source.starts_with('~') {
        let source = if let Some(rest) = source.strip_prefix("~/") {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(rest)
        } else {
            base.join(source)
        };
        let source = normalize(&source);
        Ok(Volume::Bind {
            source,
            target,
            read_only,
        })
    } else if valid_name(source) {
        Ok(Volume::Named {
            name: source.to_string(),
            target,
            read_only,
        })
    } else {
        Err(format!("bad volume name {source:?} in {text:?}"))
    }
}

/// Make a path absolute and drop `.` / `..` without touching the filesystem.
fn normalize(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_like_compose() {
        assert_eq!(parse_port("8080:80").unwrap().host, Some(8080));
        let p = parse_port("127.0.0.1:5433:5432").unwrap();
        assert_eq!(
            (p.host_ip.as_deref(), p.host, p.container),
            (Some("127.0.0.1"), Some(5433), 5432)
        );
        assert_eq!(parse_port("53/udp").unwrap().protocol, "udp");
        assert!(parse_port("70000:80").unwrap_err().contains("out of range"));
        assert!(parse_port("x:80").is_err());
    }

    #[test]
    fn volumes_tell_bind_from_named() {
        let base = Path::new("/srv/stack");
        assert!(matches!(
            parse_volume("pgdata:/var/lib/postgresql", base).unwrap(),
            Volume::Named { .. }
        ));
        match parse_volume("./data/pg:/data:ro", base).unwrap() {
            Volume::Bind {
                source, read_only, ..
            } => {
                assert_eq!(source, PathBuf::from("/srv/stack/data/pg"));
                assert!(read_only);
            }
            v => panic!("{v:?}"),
        }
        assert!(parse_volume("data:relative", base).is_err());
    }
}
