//! A Compose model ([`super::load::Compose`]) as berth's desired-state TOML, and the
//! report: each Compose key is translated, translated with a change of meaning, or not
//! translated, with its `FILE:LINE:COL` and why. Nothing is dropped silently: a key this
//! file does not know is reported as not translated too.

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml_edit::{Array, DocumentMut, InlineTable, Item, Table, value};

use super::load::{Compose, as_map};
use super::yaml::{Node, Pos};

/// How a Compose key came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum How {
    Translated,
    Changed,
    NotTranslated,
}

#[derive(Debug, Clone)]
pub struct Item_ {
    pub pos: Pos,
    pub how: How,
    /// `services.db.healthcheck: …`.
    pub text: String,
}

/// What the import did with each key.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub items: Vec<Item_>,
}

impl Report {
    fn add(&mut self, pos: &Pos, how: How, text: impl Into<String>) {
        self.items.push(Item_ {
            pos: pos.clone(),
            how,
            text: text.into(),
        });
    }

    /// Warnings: what changed meaning or was not translated.
    pub fn warnings(&self) -> usize {
        self.items
            .iter()
            .filter(|i| i.how != How::Translated)
            .count()
    }

    /// The report as text, paths shown relative to `base` where they are under it.
    pub fn text(&self, base: &Path) -> String {
        let mut out = String::new();
        for (how, title) in [
            (How::Translated, "Translated"),
            (How::Changed, "Translated with a change of meaning"),
            (How::NotTranslated, "Not translated"),
        ] {
            let items: Vec<&Item_> = self.items.iter().filter(|i| i.how == how).collect();
            out.push_str(&format!("{title} ({}):\n", items.len()));
            for i in items {
                let file = i.pos.file.strip_prefix(base).unwrap_or(&i.pos.file);
                out.push_str(&format!(
                    "  {}:{}:{}: {}\n",
                    file.display(),
                    i.pos.line,
                    i.pos.col,
                    i.text
                ));
            }
        }
        out
    }
}

/// The translation: the TOML document(s) and the report.
pub struct Translated {
    pub project: String,
    /// `[project]` and every service, in one document.
    pub doc: DocumentMut,
    /// The same, split: the project's document and one per service (`--split`).
    pub split: Vec<(String, DocumentMut)>,
    pub report: Report,
}

/// Where the output goes, for the paths written in it.
pub struct Target {
    /// The directory the TOML is written to: relative paths in it are from there.
    pub dir: PathBuf,
    /// The project name when the Compose file has none (`name:`).
    pub default_name: String,
    /// Profiles to enable (`--profile`).
    pub profiles: Vec<String>,
}

pub fn translate(c: &Compose, target: &Target) -> Translated {
    let mut r = Report::default();
    for n in &c.notes {
        r.add(&n.pos, How::NotTranslated, n.text.clone());
    }
    let project = c
        .name
        .as_ref()
        .and_then(Node::str)
        .map(sanitize)
        .unwrap_or_else(|| sanitize(&target.default_name));
    let mut head = DocumentMut::new();
    let mut p = Table::new();
    p["name"] = value(project.clone());
    if let Some(env) = &c.env.file {
        p["env_file"] = value(rel(env, &target.dir));
    }
    if !target.profiles.is_empty() {
        p["profiles"] = value(strings(&target.profiles));
    }
    // Compose's own name for the default network: berth's project network.
    let default_net = c
        .top
        .iter()
        .find(|(k, _)| k == "networks")
        .and_then(|(_, n)| n.get("default"))
        .and_then(|d| d.get("name"));
    if let Some(n) = default_net {
        p["network"] = value(written(n));
        r.add(
            &n.pos,
            How::Translated,
            "networks.default.name: the project's network",
        );
    }
    head["project"] = Item::Table(p);
    let cx = Cx {
        c,
        target,
        project: &project,
    };
    for (key, node) in &c.top {
        cx.top_level(key, node, &mut r);
    }
    let mut services = Table::new();
    services.set_implicit(true);
    let mut split = Vec::new();
    for s in &c.services {
        let t = cx.service(&s.name, &s.node, &mut r);
        let mut one = DocumentMut::new();
        let mut wrap = Table::new();
        wrap.set_implicit(true);
        wrap.insert(&toml_key(&s.name), Item::Table(t.clone()));
        one["services"] = Item::Table(wrap);
        split.push((s.name.clone(), one));
        services.insert(&toml_key(&s.name), Item::Table(t));
    }
    let mut doc = head.clone();
    doc["services"] = Item::Table(services);
    let mut all = vec![("project".to_string(), head)];
    all.extend(split);
    Translated {
        project,
        doc,
        split: all,
        report: r,
    }
}

/// A project or service name as berth takes it: lower case, `[a-z0-9_-]`.
fn sanitize(name: &str) -> String {
    let s: String = name
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.trim_matches('-').to_string()
}

fn toml_key(name: &str) -> String {
    name.to_string()
}

fn strings(items: &[String]) -> Array {
    items.iter().map(String::as_str).collect()
}

/// `path` relative to `dir` when it is under it, else as it is.
fn rel(path: &Path, dir: &Path) -> String {
    let abs = crate::spec::normalize_path;
    let (p, d) = (abs(path), abs(dir));
    match p.strip_prefix(&d) {
        Ok(r) => r.display().to_string(),
        Err(_) => relative_up(&p, &d).unwrap_or_else(|| p.display().to_string()),
    }
}

/// `p` from `d` with `..` steps, for paths that share a prefix.
fn relative_up(p: &Path, d: &Path) -> Option<String> {
    let pc: Vec<_> = p.components().collect();
    let dc: Vec<_> = d.components().collect();
    let common = pc.iter().zip(&dc).take_while(|(a, b)| a == b).count();
    if common <= 1 {
        return None;
    }
    let mut out = PathBuf::new();
    for _ in common..dc.len() {
        out.push("..");
    }
    for c in &pc[common..] {
        out.push(c);
    }
    Some(out.display().to_string())
}

/// A scalar as the TOML should hold it: as written, `${VAR}` references kept (berth
/// interpolates them from the same env file).
fn written(n: &Node) -> String {
    n.raw().unwrap_or_default().to_string()
}

struct Cx<'a> {
    c: &'a Compose,
    target: &'a Target,
    project: &'a str,
}

/// Container options berth does not set: reported, with this reason.
const NOT_SET: &[&str] = &[
    "cap_add",
    "cap_drop",
    "cgroup_parent",
    "cpu_count",
    "cpu_percent",
    "cpu_shares",
    "cpu_period",
    "cpu_quota",
    "cpus",
    "cpuset",
    "devices",
    "dns",
    "dns_opt",
    "dns_search",
    "domainname",
    "group_add",
    "hostname",
    "init",
    "ipc",
    "isolation",
    "logging",
    "mac_address",
    "mem_reservation",
    "mem_swappiness",
    "memswap_limit",
    "oom_kill_disable",
    "oom_score_adj",
    "pid",
    "pids_limit",
    "platform",
    "privileged",
    "read_only",
    "security_opt",
    "shm_size",
    "stdin_open",
    "stop_grace_period",
    "stop_signal",
    "storage_opt",
    "sysctls",
    "tmpfs",
    "tty",
    "ulimits",
    "userns_mode",
    "uts",
    "runtime",
    "scale",
    "attach",
    "annotations",
    "blkio_config",
    "device_cgroup_rules",
    "gpus",
    "develop",
    "post_start",
    "pre_stop",
    "use_api_socket",
    "volumes_from",
];

impl Cx<'_> {
    fn top_level(&self, key: &str, node: &Node, r: &mut Report) {
        for (name, k, v) in node.entries() {
            let at = format!("{key}.{name}");
            if v.get("external").and_then(Node::str) == Some("true") {
                r.add(
                    &k.pos,
                    How::Changed,
                    format!("{at}: external: berth uses an existing {key:?} entry of this name as it finds it"),
                );
            }
            for (opt, ok, _) in v.entries() {
                if !matches!(opt, "external" | "file" | "name" | "content") {
                    r.add(
                        &ok.pos,
                        How::NotTranslated,
                        format!("{at}.{opt}: berth makes {key} with the engine's defaults"),
                    );
                }
            }
            if key == "networks" || key == "volumes" {
                r.add(
                    &k.pos,
                    How::Changed,
                    format!(
                        "{at}: named {name:?} on the engine (labelled with the project), where Compose names it \"{}_{name}\"",
                        self.project
                    ),
                );
            }
        }
    }

    fn service(&self, name: &str, s: &Node, r: &mut Report) -> Table {
        let mut t = Table::new();
        let at = |k: &str| format!("services.{name}.{k}");
        // The one-shot services others wait on to complete.
        let one_shot = self.c.services.iter().any(|o| {
            o.node
                .get("depends_on")
                .map(as_map)
                .and_then(|d| d.get(name).cloned())
                .and_then(|d| d.get("condition").and_then(Node::str).map(String::from))
                .as_deref()
                == Some("service_completed_successfully")
        });
        match (s.get("image"), s.get("build")) {
            (Some(i), _) => {
                t["image"] = value(written(i));
                r.add(&i.pos, How::Translated, at("image"));
            }
            (None, Some(b)) => {
                let image = format!("{}-{name}", self.project);
                t["image"] = value(image.clone());
                r.add(
                    &b.pos,
                    How::Changed,
                    format!(
                        "{}: no image: the built image is tagged {image:?} (Compose's name for it)",
                        at("build")
                    ),
                );
            }
            (None, None) => r.add(
                &s.pos,
                How::NotTranslated,
                format!("services.{name}: neither image nor build"),
            ),
        }
        for (key, k, v) in s.entries() {
            let pos = &k.pos;
            match key {
                "image" => {}
                "build" => self.build(name, v, &mut t, r),
                "command" | "entrypoint" => {
                    t[key] = command_item(v);
                    r.add(pos, How::Translated, at(key));
                }
                "environment" => self.environment(name, v, &mut t, r),
                "env_file" => self.env_file(name, v, &mut t, r),
                "ports" => self.ports(name, v, &mut t, r),
                "volumes" => self.volumes(name, v, &mut t, r),
                "networks" => self.networks(name, v, &mut t, r),
                "depends_on" => self.depends_on(name, v, &mut t, r),
                "healthcheck" => self.healthcheck(name, s, v, &mut t, r),
                "restart" => {
                    let text = v.str().unwrap_or_default();
                    let restart = text.split(':').next().unwrap_or(text);
                    t["restart"] = value(restart);
                    let how = if restart == text {
                        How::Translated
                    } else {
                        How::Changed
                    };
                    r.add(pos, how, at("restart"));
                }
                "container_name" | "user" | "working_dir" | "pull_policy" | "mem_limit" => {
                    t[key] = value(written(v));
                    r.add(pos, How::Translated, at(key));
                }
                "labels" => {
                    let mut labels = InlineTable::new();
                    for (lk, _, lv) in as_map(v).entries() {
                        labels.insert(lk, written(lv).into());
                    }
                    t["labels"] = value(labels);
                    r.add(pos, How::Translated, at("labels"));
                }
                "extra_hosts" => {
                    let hosts: Vec<String> = match v.seq() {
                        Some(items) => items.iter().map(written).collect(),
                        None => v
                            .entries()
                            .map(|(h, _, ip)| format!("{h}:{}", written(ip)))
                            .collect(),
                    };
                    t["extra_hosts"] = value(strings(&hosts));
                    r.add(pos, How::Translated, at("extra_hosts"));
                }
                "profiles" => {
                    let mut p: Vec<String> = v.seq().unwrap_or_default().iter().map(written).collect();
                    if one_shot {
                        p.push("one-shot".into());
                    }
                    t["profiles"] = value(strings(&p));
                    r.add(pos, How::Translated, at("profiles"));
                }
                "deploy" => self.deploy(name, v, &mut t, r),
                "secrets" | "configs" => self.files(name, key, v, &mut t, r),
                "links" | "external_links" => r.add(
                    pos,
                    How::NotTranslated,
                    format!("{}: services reach each other by service name on the project network; links are not needed", at(key)),
                ),
                "network_mode" => r.add(
                    pos,
                    How::NotTranslated,
                    format!("{}: {:?}: berth runs every service on its project networks", at(key), v.str().unwrap_or_default()),
                ),
                "expose" => r.add(
                    pos,
                    How::NotTranslated,
                    format!("{}: documentation only: every port is reachable on the project network", at(key)),
                ),
                "extends" => {}
                k if NOT_SET.contains(&k) => r.add(
                    pos,
                    How::NotTranslated,
                    format!("{}: a container option berth does not set", at(key)),
                ),
                k if k.starts_with("x-") => r.add(
                    pos,
                    How::NotTranslated,
                    format!("{}: an extension field", at(key)),
                ),
                _ => r.add(
                    pos,
                    How::NotTranslated,
                    format!("{}: not a key berth knows", at(key)),
                ),
            }
        }
        if one_shot {
            if s.get("profiles").is_none() {
                t["profiles"] = value(strings(&["one-shot".to_string()]));
            }
            r.add(
                &s.pos,
                How::Changed,
                format!("services.{name}: a one-shot service (others wait for it to complete): berth runs long-lived services only, so it is put under profile \"one-shot\" (not started); make it a [migrations.job] if it migrates a database"),
            );
        }
        t
    }

    fn build(&self, name: &str, v: &Node, t: &mut Table, r: &mut Report) {
        let at = format!("services.{name}.build");
        let mut b = InlineTable::new();
        let context = match v.str() {
            Some(_) => v,
            None => match v.get("context") {
                Some(c) => c,
                None => {
                    r.add(&v.pos, How::NotTranslated, format!("{at}: no context"));
                    return;
                }
            },
        };
        b.insert("context", self.path(context).into());
        if let Some(d) = v.get("dockerfile") {
            b.insert("dockerfile", written(d).into());
        }
        if let Some(a) = v.get("args") {
            let mut args = InlineTable::new();
            for (k, _, val) in as_map(a).entries() {
                args.insert(k, written(val).into());
            }
            b.insert("args", args.into());
        }
        for (k, key, _) in v.entries() {
            if !matches!(k, "context" | "dockerfile" | "args") {
                r.add(
                    &key.pos,
                    How::NotTranslated,
                    format!("{at}.{k}: berth's build takes context, dockerfile and args"),
                );
            }
        }
        t["build"] = value(b);
        r.add(&v.pos, How::Translated, at);
    }

    /// A path from the Compose file's directory, written relative to the output's.
    fn path(&self, n: &Node) -> String {
        let text = n.str().unwrap_or_default();
        if text.contains("://") || Path::new(text).is_absolute() {
            return text.to_string();
        }
        rel(&self.c.dir.join(text), &self.target.dir)
    }

    fn environment(&self, name: &str, v: &Node, t: &mut Table, r: &mut Report) {
        let mut env = InlineTable::new();
        for (k, key, val) in as_map(v).entries() {
            if val.is_null() {
                env.insert(k, format!("${{{k}:-}}").into());
                r.add(
                    &key.pos,
                    How::Changed,
                    format!("services.{name}.environment.{k}: no value: Compose passes the shell's {k}; written as ${{{k}:-}}, which berth reads from its environment or the env file (empty when unset, where Compose leaves it out)"),
                );
            } else {
                env.insert(k, written(val).into());
            }
        }
        t["environment"] = value(env);
        r.add(
            &v.pos,
            How::Translated,
            format!("services.{name}.environment"),
        );
    }

    fn env_file(&self, name: &str, v: &Node, t: &mut Table, r: &mut Report) {
        let files: Vec<&Node> = match v.seq() {
            Some(items) => items.iter().collect(),
            None => vec![v],
        };
        for (i, f) in files.iter().enumerate() {
            let path = f.get("path").unwrap_or(f);
            if i == 0 {
                t["env_file"] = value(self.path(path));
                r.add(
                    &f.pos,
                    How::Changed,
                    format!("services.{name}.env_file: berth requires the file to be private to its owner (chmod 600)"),
                );
            } else {
                r.add(
                    &f.pos,
                    How::NotTranslated,
                    format!("services.{name}.env_file: berth reads one env file per service; merge this one into the first"),
                );
            }
        }
    }

    fn ports(&self, name: &str, v: &Node, t: &mut Table, r: &mut Report) {
        let mut out = Vec::new();
        for p in v.seq().unwrap_or_default() {
            // Checked as interpolated, written as written (references kept).
            let (text, checked) = match p.map() {
                None => (written(p), p.str().unwrap_or_default().to_string()),
                Some(_) => {
                    let get = |k: &str| p.get(k).and_then(Node::str).map(String::from);
                    let Some(target) = get("target") else {
                        r.add(
                            &p.pos,
                            How::NotTranslated,
                            format!("services.{name}.ports: no target"),
                        );
                        continue;
                    };
                    let mut s = String::new();
                    if let Some(ip) = get("host_ip") {
                        s.push_str(&ip);
                        s.push(':');
                    }
                    if let Some(published) = get("published") {
                        s.push_str(&published);
                        s.push(':');
                    }
                    s.push_str(&target);
                    if let Some(proto) = get("protocol") {
                        s.push('/');
                        s.push_str(&proto);
                    }
                    (s.clone(), s)
                }
            };
            match crate::spec::check_port(&checked) {
                Ok(()) => {
                    out.push(text);
                    r.add(&p.pos, How::Translated, format!("services.{name}.ports"));
                }
                Err(why) => r.add(
                    &p.pos,
                    How::NotTranslated,
                    format!("services.{name}.ports: {text:?}: {why}"),
                ),
            }
        }
        if !out.is_empty() {
            t["ports"] = value(strings(&out));
        }
    }

    fn volumes(&self, name: &str, v: &Node, t: &mut Table, r: &mut Report) {
        let mut out = Vec::new();
        for m in v.seq().unwrap_or_default() {
            let (source, target, ro) = match m.map() {
                None => {
                    let text = m.str().unwrap_or_default();
                    let parts: Vec<&str> = text.split(':').collect();
                    match parts.as_slice() {
                        [src, dst] => (src.to_string(), dst.to_string(), false),
                        [src, dst, mode] => (
                            src.to_string(),
                            dst.to_string(),
                            mode.split(',').any(|o| o == "ro"),
                        ),
                        _ => (String::new(), text.to_string(), false),
                    }
                }
                Some(_) => {
                    let get =
                        |k: &str| m.get(k).and_then(Node::str).unwrap_or_default().to_string();
                    if get("type") == "tmpfs" {
                        r.add(&m.pos, How::NotTranslated, format!("services.{name}.volumes: a tmpfs mount: berth mounts volumes and host paths"));
                        continue;
                    }
                    (get("source"), get("target"), get("read_only") == "true")
                }
            };
            if source.is_empty() {
                r.add(
                    &m.pos,
                    How::NotTranslated,
                    format!("services.{name}.volumes: {target:?} is an anonymous volume: name it (NAME:{target}) so berth keeps it across recreates"),
                );
                continue;
            }
            let bind =
                source.starts_with('.') || source.starts_with('/') || source.starts_with('~');
            let source = if bind && !source.starts_with('/') && !source.starts_with('~') {
                rel(&self.c.dir.join(&source), &self.target.dir)
            } else {
                source
            };
            let source = if bind && !source.starts_with('/') && !source.starts_with('.') {
                format!("./{source}")
            } else {
                source
            };
            let mut text = format!("{source}:{target}");
            if ro {
                text.push_str(":ro");
            }
            out.push(text);
            r.add(&m.pos, How::Translated, format!("services.{name}.volumes"));
        }
        if !out.is_empty() {
            t["volumes"] = value(strings(&out));
        }
    }

    fn networks(&self, name: &str, v: &Node, t: &mut Table, r: &mut Report) {
        let mut out = Vec::new();
        match v.seq() {
            Some(items) => out.extend(items.iter().map(written)),
            None => {
                for (n, key, opts) in v.entries() {
                    out.push(n.to_string());
                    for (o, ok, _) in opts.entries() {
                        r.add(
                            &ok.pos,
                            How::NotTranslated,
                            format!("services.{name}.networks.{n}.{o}: berth attaches services by name only"),
                        );
                    }
                    let _ = key;
                }
            }
        }
        t["networks"] = value(strings(&out));
        r.add(&v.pos, How::Translated, format!("services.{name}.networks"));
    }

    fn depends_on(&self, name: &str, v: &Node, t: &mut Table, r: &mut Report) {
        let mut out = Vec::new();
        for (dep, key, opts) in as_map(v).entries() {
            let condition = opts
                .get("condition")
                .and_then(Node::str)
                .unwrap_or("service_started");
            let dep_has_health = self
                .c
                .services
                .iter()
                .find(|s| s.name == dep)
                .and_then(|s| s.node.get("healthcheck"))
                .is_some_and(|h| h.get("disable").and_then(Node::str) != Some("true"));
            let at = format!("services.{name}.depends_on.{dep}");
            match condition {
                "service_healthy" => {
                    out.push(dep.to_string());
                    r.add(&key.pos, How::Translated, format!("{at}: service_healthy: berth starts {name} once {dep} passed its probe"));
                }
                "service_completed_successfully" => r.add(
                    &key.pos,
                    How::NotTranslated,
                    format!("{at}: service_completed_successfully: {dep} is a one-shot, which berth does not run (see services.{dep})"),
                ),
                _ if dep_has_health => {
                    out.push(dep.to_string());
                    r.add(&key.pos, How::Changed, format!("{at}: service_started: berth waits until {dep} passed its probe (its healthcheck), not only until it started"));
                }
                _ => {
                    out.push(dep.to_string());
                    r.add(&key.pos, How::Translated, format!("{at}: service_started: berth starts {name} once {dep} runs"));
                }
            }
            for (o, ok, _) in opts.entries() {
                if !matches!(o, "condition" | "required" | "restart") {
                    r.add(
                        &ok.pos,
                        How::NotTranslated,
                        format!("{at}.{o}: not a depends_on option berth has"),
                    );
                }
            }
        }
        if !out.is_empty() {
            t["depends_on"] = value(strings(&out));
        }
    }

    fn deploy(&self, name: &str, v: &Node, t: &mut Table, r: &mut Report) {
        let at = format!("services.{name}.deploy");
        for (k, key, val) in v.entries() {
            match k {
                "replicas" => {
                    let n: i64 = val.str().and_then(|s| s.parse().ok()).unwrap_or(1);
                    let how = if n == 1 { How::Translated } else { How::NotTranslated };
                    r.add(&key.pos, how, format!("{at}.replicas: {n}: one container per service on one host (engine = \"swarm\" runs replicas)"));
                }
                "resources" => {
                    if let Some(m) = val.get("limits").and_then(|l| l.get("memory")) {
                        t["mem_limit"] = value(written(m));
                        r.add(&m.pos, How::Translated, format!("{at}.resources.limits.memory → mem_limit"));
                    }
                    for (rk, rkey, rv) in val.entries() {
                        for (x, xkey, _) in rv.entries() {
                            if !(rk == "limits" && x == "memory") {
                                r.add(&xkey.pos, How::NotTranslated, format!("{at}.resources.{rk}.{x}: berth sets a memory limit only"));
                            }
                        }
                        let _ = rkey;
                    }
                }
                "restart_policy" => {
                    let cond = val.get("condition").and_then(Node::str).unwrap_or("any");
                    let restart = match cond {
                        "none" => "no",
                        "on-failure" => "on-failure",
                        _ => "always",
                    };
                    if t.get("restart").is_none() {
                        t["restart"] = value(restart);
                    }
                    r.add(&key.pos, How::Changed, format!("{at}.restart_policy: condition {cond} → restart = {restart:?} (delay, max_attempts and window are Swarm's)"));
                }
                _ => r.add(&key.pos, How::NotTranslated, format!("{at}.{k}: a Swarm setting (engine = \"swarm\" has replicas, placement and update_order)")),
            }
        }
    }

    /// Service-level `secrets`/`configs` of file-based top-level entries: on one host
    /// Compose bind-mounts the file, and so does berth (read-only).
    fn files(&self, name: &str, key: &str, v: &Node, t: &mut Table, r: &mut Report) {
        let top = self.c.top.iter().find(|(k, _)| k == key).map(|(_, n)| n);
        let mut mounts: Vec<String> = t
            .get("volumes")
            .and_then(Item::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        for f in v.seq().unwrap_or_default() {
            let (source, target) = match f.str() {
                Some(s) => (s.to_string(), None),
                None => (
                    f.get("source")
                        .and_then(Node::str)
                        .unwrap_or_default()
                        .to_string(),
                    f.get("target").and_then(Node::str).map(String::from),
                ),
            };
            let file = top.and_then(|t| t.get(&source)).and_then(|e| e.get("file"));
            let Some(file) = file else {
                r.add(&f.pos, How::NotTranslated, format!("services.{name}.{key}.{source}: not a file-based {key} entry (inline content, external, or from the environment): berth mounts files only"));
                continue;
            };
            let target = match (key, target) {
                (_, Some(t)) if t.starts_with('/') => t,
                ("secrets", t) => format!("/run/secrets/{}", t.unwrap_or(source.clone())),
                (_, t) => format!("/{}", t.unwrap_or(source.clone())),
            };
            let mut src = self.path(file);
            if !src.starts_with('/') && !src.starts_with('.') {
                src = format!("./{src}");
            }
            mounts.push(format!("{src}:{target}:ro"));
            r.add(&f.pos, How::Changed, format!("services.{name}.{key}.{source}: a read-only bind mount of {} at {target} (as Compose does on one host)", written(file)));
        }
        if !mounts.is_empty() {
            t["volumes"] = value(strings(&mounts));
        }
    }

    fn healthcheck(&self, name: &str, s: &Node, h: &Node, t: &mut Table, r: &mut Report) {
        let at = format!("services.{name}.healthcheck");
        if h.get("disable").and_then(Node::str) == Some("true") {
            r.add(&h.pos, How::Changed, format!("{at}: disabled: berth gates the service on its running (and on the image's HEALTHCHECK, if any, unless told otherwise)"));
            return;
        }
        let Some(test) = h.get("test") else {
            r.add(&h.pos, How::NotTranslated, format!("{at}: no test (the image's HEALTHCHECK applies with these timings; berth's probe = \"docker\" reads it)"));
            return;
        };
        let (shell, argv): (bool, Vec<String>) = match test.seq() {
            Some(items) => {
                let words: Vec<String> = items.iter().map(written).collect();
                match words.first().map(String::as_str) {
                    Some("NONE") => {
                        r.add(&test.pos, How::Changed, format!("{at}: NONE: the image's HEALTHCHECK is off; berth gates the service on its running"));
                        return;
                    }
                    Some("CMD-SHELL") => (true, words[1..].to_vec()),
                    Some("CMD") => (false, words[1..].to_vec()),
                    _ => (false, words),
                }
            }
            None => (true, vec![written(test)]),
        };
        let line = argv.join(" ");
        let env = s.get("environment").map(as_map);
        let env_of = |k: &str| env.as_ref().and_then(|e| e.get(k)).map(written);
        let mut health = InlineTable::new();
        let kind = recognise(&line, &env_of, &mut health);
        if kind == "exec" {
            let command: Vec<String> = if shell {
                vec!["sh".into(), "-c".into(), line.clone()]
            } else {
                argv.clone()
            };
            health.insert("probe", "exec".into());
            health.insert("command", strings(&command).into());
        }
        // Timings: berth's deadline is how long Compose would take to call it unhealthy.
        let d = |k: &str, default: Duration| {
            h.get(k)
                .and_then(Node::str)
                .and_then(|v| crate::spec::duration::parse(v).ok())
                .unwrap_or(default)
        };
        let interval = d("interval", Duration::from_secs(30));
        let timeout = d("timeout", Duration::from_secs(30));
        let start = d("start_period", Duration::ZERO);
        let retries: u32 = h
            .get("retries")
            .and_then(Node::str)
            .and_then(|v| v.parse().ok())
            .unwrap_or(3);
        let deadline = start + interval * retries.max(1);
        let fmt = crate::spec::duration::format;
        health.insert("interval", fmt(interval).into());
        health.insert("timeout", fmt(timeout.min(interval)).into());
        health.insert("healthy_deadline", fmt(deadline).into());
        t["health"] = value(health);
        if let Some(mut k) = t.key_mut("health") {
            k.leaf_decor_mut()
                .set_prefix(format!("# healthcheck: {}\n", line.replace('\n', " ")));
        }
        let how = if kind == "exec" {
            How::Translated
        } else {
            How::Changed
        };
        r.add(
            &test.pos,
            how,
            format!(
                "{at}.test: {} ({line:?})",
                match kind {
                    "exec" => "an exec probe, the same command".to_string(),
                    k => format!("berth's native {k:?} probe, which asks the server itself"),
                }
            ),
        );
        r.add(
            &h.pos,
            How::Changed,
            format!(
                "{at}: interval {} and timeout {} kept; start_period {} + retries {retries} × interval → healthy_deadline {}",
                fmt(interval),
                fmt(timeout.min(interval)),
                fmt(start),
                fmt(deadline)
            ),
        );
    }
}

/// A healthcheck command as one of berth's native probes, filling `health`; the probe's
/// name, or `"exec"` when none fits.
fn recognise(
    line: &str,
    env: &dyn Fn(&str) -> Option<String>,
    health: &mut InlineTable,
) -> &'static str {
    let words: Vec<&str> = line.split_whitespace().collect();
    let flag = |f: &str| {
        words
            .iter()
            .position(|w| *w == f)
            .and_then(|i| words.get(i + 1))
            .map(|w| w.trim_matches(|c| c == '"' || c == '\'').to_string())
    };
    if line.contains("pg_isready") {
        let user = flag("-U")
            .or_else(|| env("POSTGRES_USER"))
            .unwrap_or_else(|| "postgres".into());
        let database = flag("-d")
            .or_else(|| env("POSTGRES_DB"))
            .unwrap_or_else(|| user.clone());
        let Some(password) = env("POSTGRES_PASSWORD") else {
            return "exec";
        };
        health.insert("probe", "postgres".into());
        if let Some(p) = flag("-p").and_then(|p| p.parse::<i64>().ok()) {
            health.insert("port", p.into());
        }
        health.insert("user", user.into());
        health.insert("password", password.into());
        health.insert("database", database.into());
        return "postgres";
    }
    if line.contains("redis-cli") && line.to_lowercase().contains("ping") && !line.contains("&&") {
        health.insert("probe", "redis".into());
        if let Some(p) = flag("-p").and_then(|p| p.parse::<i64>().ok()) {
            health.insert("port", p.into());
        }
        if let Some(a) = flag("-a") {
            health.insert("password", a.into());
        }
        return "redis";
    }
    let http_tool = (line.contains("curl") && (line.contains("-f") || line.contains("--fail")))
        || (line.contains("wget") && (line.contains("--spider") || line.contains("-q")));
    if http_tool && !line.contains("&&") && !line.contains(';') {
        let url = words.iter().find_map(|w| {
            let w = w.trim_matches(|c| c == '"' || c == '\'');
            w.find("http://").map(|i| w[i..].to_string())
        });
        if let Some(url) = url
            && let Ok(u) = url::Url::parse(&url)
            && matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "0.0.0.0"))
        {
            health.insert("probe", "http".into());
            health.insert("port", i64::from(u.port().unwrap_or(80)).into());
            let mut path = u.path().to_string();
            if let Some(q) = u.query() {
                path = format!("{path}?{q}");
            }
            health.insert("path", path.into());
            return "http";
        }
    }
    "exec"
}

fn command_item(v: &Node) -> Item {
    match v.seq() {
        Some(items) => value(strings(&items.iter().map(written).collect::<Vec<_>>())),
        None => value(written(v)),
    }
}
