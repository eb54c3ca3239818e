//! `[project] engine` and the service keys only Swarm reads (docs/swarm.md).
//!
//! Under `engine = "docker"` (the default) `replicas`, `placement` and `update_order` are
//! refused: a second replica on one host would collide on its container name and its
//! published ports. Under `engine = "swarm"` a service that keeps data on a node (a bind
//! mount, a local named volume) must be pinned to one node, and what the swarm engine
//! does not do yet is refused rather than ignored.

use std::collections::BTreeMap;

use serde::Deserialize;
use sha2::Digest;
use toml::Spanned;

use super::Source;
use super::parse::parse_volume;
use super::raw::{RawProject, RawService, S};
use super::resolve::Resolver;
use crate::spec::{Engine, FileContent, Placement, SwarmFile, SwarmKeys, UpdateOrder, Volume};

/// `configs = [{ source = "config/x.yml", target = "/etc/x.yml" }]`, and `secrets` alike.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSwarmFile {
    source: S,
    target: S,
}

/// Which of the two a file is: what its target may be, and whether its content is secret.
#[derive(Clone, Copy, PartialEq)]
enum FileKind {
    Config,
    Secret,
}

/// `placement = { constraints = [...], preferences = [...], max_replicas_per_node = N }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlacement {
    #[serde(default)]
    constraints: Vec<S>,
    #[serde(default)]
    preferences: Vec<S>,
    max_replicas_per_node: Option<Spanned<i64>>,
}

impl Resolver<'_> {
    /// `[project] engine`: `"docker"` (the default) or `"swarm"`.
    pub(super) fn engine(&mut self, src: &Source, praw: &RawProject) -> Engine {
        let Some(raw) = &praw.engine else {
            return Engine::Docker;
        };
        match self.string(src, raw).as_deref() {
            Some("docker") | None => Engine::Docker,
            Some("swarm") => Engine::Swarm,
            Some(other) => {
                self.err(
                    src,
                    raw.span(),
                    format!(
                        "engine {other:?}: use \"docker\" (one Docker host, the default) or \"swarm\" (services on a Swarm, through its manager)"
                    ),
                );
                Engine::Docker
            }
        }
    }

    /// A service's `replicas`, `placement` and `update_order`, and under Swarm the
    /// checks of what the rest of the service asks of it.
    pub(super) fn swarm_keys(
        &mut self,
        src: &Source,
        raw: &RawService,
        engine: Engine,
    ) -> SwarmKeys {
        if engine == Engine::Docker {
            self.refuse_on_docker(src, raw);
            return SwarmKeys::default();
        }
        let mut keys = SwarmKeys::default();
        if let Some(r) = &raw.replicas {
            match u64::try_from(*r.get_ref()) {
                Ok(n) if n >= 1 => keys.replicas = n,
                _ => self.err(
                    src,
                    r.span(),
                    format!(
                        "replicas = {}: a service runs at least 1 replica (remove the service to run none)",
                        r.get_ref()
                    ),
                ),
            }
        }
        if let Some(p) = &raw.placement {
            keys.placement = self.placement(src, p.get_ref());
        }
        if let Some(o) = &raw.update_order {
            match self.string(src, o).as_deref() {
                Some("start-first") => keys.update_order = Some(UpdateOrder::StartFirst),
                Some("stop-first") => keys.update_order = Some(UpdateOrder::StopFirst),
                Some(other) => self.err(
                    src,
                    o.span(),
                    format!("update_order {other:?}: use \"start-first\" or \"stop-first\""),
                ),
                None => {}
            }
        }
        keys.configs = self.swarm_files(src, &raw.configs, FileKind::Config);
        keys.secrets = self.swarm_files(src, &raw.secrets, FileKind::Secret);
        self.check_on_swarm(src, raw, &keys.placement);
        keys
    }

    /// Each file of `configs` or `secrets`: its source confined as any path a commit
    /// names, read now and hashed; a secret's content joins the redacted values.
    fn swarm_files(
        &mut self,
        src: &Source,
        raw: &[Spanned<RawSwarmFile>],
        kind: FileKind,
    ) -> Vec<SwarmFile> {
        let word = match kind {
            FileKind::Config => "config",
            FileKind::Secret => "secret",
        };
        let mut out = Vec::new();
        for f in raw {
            let f = f.get_ref();
            let (Some(source), Some(target)) =
                (self.string(src, &f.source), self.string(src, &f.target))
            else {
                continue;
            };
            let target_ok = match kind {
                FileKind::Config => target.starts_with('/'),
                FileKind::Secret => {
                    target.starts_with('/')
                        || (!target.is_empty() && !target.contains('/') && target != "..")
                }
            };
            if !target_ok {
                let want = match kind {
                    FileKind::Config => "an absolute path in the task, e.g. \"/etc/app/app.yml\"",
                    FileKind::Secret => {
                        "a name under /run/secrets/ (\"db_password\") or an absolute path"
                    }
                };
                self.err(
                    src,
                    f.target.span(),
                    format!("{word} target {target:?}: use {want}"),
                );
                continue;
            }
            let path = self.locate_raw(src, &source);
            let what = format!("{word} source");
            let Some(confined) = self.confine(src, f.source.span(), &what, path) else {
                continue;
            };
            let bytes = match std::fs::read(&confined.path) {
                Ok(b) => b,
                Err(e) => {
                    self.err(
                        src,
                        f.source.span(),
                        format!(
                            "{word} source {} cannot be read: {e}",
                            confined.path.display()
                        ),
                    );
                    continue;
                }
            };
            if kind == FileKind::Secret {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&confined.path)
                    .map(|m| m.permissions().mode() & 0o777)
                    .unwrap_or(0);
                // As for an env file: one that group or others can read has leaked already.
                if mode & 0o077 != 0 {
                    self.err(
                        src,
                        f.source.span(),
                        format!(
                            "secret source {} has mode {mode:03o}: group and others must not read it (chmod 600)",
                            confined.path.display()
                        ),
                    );
                    continue;
                }
            }
            if kind == FileKind::Secret
                && let Ok(text) = std::str::from_utf8(&bytes)
            {
                // Redacted as written and as a shell would read it (without its newline).
                for v in [text, text.trim()] {
                    self.secret(&Some(v.to_string()));
                }
            }
            out.push(SwarmFile {
                source: confined.path,
                target,
                sha256: format!("{:x}", sha2::Sha256::digest(&bytes)),
                content: Some(FileContent(bytes)),
            });
        }
        out
    }

    fn placement(&mut self, src: &Source, raw: &RawPlacement) -> Placement {
        let mut p = Placement::default();
        for c in &raw.constraints {
            let Some(v) = self.string(src, c) else {
                continue;
            };
            if v.contains("==") || v.contains("!=") {
                p.constraints.push(v);
            } else {
                self.err(
                    src,
                    c.span(),
                    format!(
                        "placement constraint {v:?}: write it as Swarm does, e.g. \"node.hostname == db1\" or \"node.labels.role != edge\""
                    ),
                );
            }
        }
        for pref in &raw.preferences {
            let Some(v) = self.string(src, pref) else {
                continue;
            };
            match v.strip_prefix("spread=") {
                Some(d) if !d.trim().is_empty() => p.preferences.push(d.trim().to_string()),
                _ => self.err(
                    src,
                    pref.span(),
                    format!(
                        "placement preference {v:?}: Swarm knows one kind, written \"spread=node.labels.zone\""
                    ),
                ),
            }
        }
        if let Some(m) = &raw.max_replicas_per_node {
            match u64::try_from(*m.get_ref()) {
                Ok(n) if n >= 1 => p.max_replicas_per_node = Some(n),
                _ => self.err(
                    src,
                    m.span(),
                    format!(
                        "max_replicas_per_node = {}: use 1 or more (leave it out for no limit)",
                        m.get_ref()
                    ),
                ),
            }
        }
        p
    }

    /// The Swarm keys given under `engine = "docker"`: each refused where it is written.
    fn refuse_on_docker(&mut self, src: &Source, raw: &RawService) {
        let why = "needs [project] engine = \"swarm\": on one Docker host a second replica would collide with the first on its container name and published ports";
        if let Some(r) = &raw.replicas {
            self.err(src, r.span(), format!("replicas {why}"));
        }
        if let Some(p) = &raw.placement {
            self.err(
                src,
                p.span(),
                "placement needs [project] engine = \"swarm\": one Docker host places nothing",
            );
        }
        if let Some(o) = &raw.update_order {
            self.err(
                src,
                o.span(),
                "update_order needs [project] engine = \"swarm\": one Docker host replaces its one container, there is no order to choose",
            );
        }
        for (list, word) in [(&raw.configs, "configs"), (&raw.secrets, "secrets")] {
            if let Some(first) = list.first() {
                self.err(
                    src,
                    first.span(),
                    format!(
                        "{word} needs [project] engine = \"swarm\" (Swarm {word}); on one Docker host mount the file read-only instead, e.g. volumes = [\"./config/app.yml:/etc/app.yml:ro\"]"
                    ),
                );
            }
        }
    }

    /// What a service asks that Swarm cannot give it, or that the swarm engine does not do
    /// yet: refused at its place, never silently dropped.
    fn check_on_swarm(&mut self, src: &Source, raw: &RawService, placement: &Placement) {
        // Data on a node stays on that node: a task placed elsewhere would start empty.
        if placement.constraints.is_empty() {
            for v in &raw.volumes {
                let Some(text) = self.string(src, v) else {
                    continue;
                };
                let kind = match parse_volume(&text, &src.dir) {
                    Ok(Volume::Bind { .. }) => "a bind mount",
                    Ok(Volume::Named { .. }) => "a local named volume",
                    Err(_) => continue,
                };
                self.err(
                    src,
                    v.span(),
                    format!(
                        "volume {text:?} is {kind}, so the service must be placed on one node: add placement.constraints, e.g. \"node.hostname == …\""
                    ),
                );
            }
        }
        for p in &raw.ports {
            if let Some(text) = self.string(src, p)
                && let Ok(port) = super::parse::parse_port(&text)
                && port.host_ip.is_some()
            {
                self.err(
                    src,
                    p.span(),
                    format!(
                        "port {text:?} names a host address: Swarm publishes on every address of every node (its routing mesh); leave the address out"
                    ),
                );
            }
        }
        if let Some(b) = &raw.build {
            self.err(
                src,
                b.span(),
                "build is not supported under engine = \"swarm\" yet: every node pulls the image by its registry digest, so build and push it yourself and name it in `image`",
            );
        }
        if let Some(h) = &raw.health
            && matches!(h.get_ref().probe.get_ref().as_str(), "exec")
        {
            self.err(
                src,
                h.get_ref().probe.span(),
                "probe \"exec\" is not supported under engine = \"swarm\" yet: use http, tcp, postgres or redis (berth reaches each task), or docker (the image's HEALTHCHECK, which Swarm waits for)",
            );
        }
    }

    /// `[migrations]` under Swarm: berth reaches the database from the manager it talks to
    /// (docs/swarm.md, "Migrations"), so its service runs one replica, placed by a
    /// constraint (on the manager).
    pub(super) fn check_swarm_project(
        &mut self,
        engine: Engine,
        sources: &[Source],
        services: &BTreeMap<String, crate::spec::Service>,
    ) {
        if engine != Engine::Swarm {
            return;
        }
        for src in sources {
            let Some(m) = &src.raw.migrations else {
                continue;
            };
            let db = m.get_ref().service.get_ref();
            let Some(s) = services.get(db) else { continue };
            if s.swarm.replicas != 1 {
                self.err(
                    src,
                    m.get_ref().service.span(),
                    format!(
                        "the migrations' database {db:?} runs {} replicas: under engine = \"swarm\" it runs one (berth migrates, backs up and restores that one)",
                        s.swarm.replicas
                    ),
                );
            }
            if s.swarm.placement.constraints.is_empty() {
                self.err(
                    src,
                    m.get_ref().service.span(),
                    format!(
                        "the migrations' database {db:?} must be placed on the manager berth talks to (berth migrates and backs it up from there): add placement.constraints = [\"node.role == manager\"] to it"
                    ),
                );
            }
        }
    }
}
