//! One service: from its raw table to a [`Service`].

use std::collections::BTreeMap;

use toml::Spanned;

use super::Source;
use super::parse::{
    check_network_name, parse_port, parse_pull_policy, parse_volume, valid_container_name,
};
use super::raw::{RawBuild, RawService, S};
use super::reference;
use super::resolve::Resolver;
use crate::spec::{Build, Port, PullPolicy, Service, Volume};

impl Resolver<'_> {
    /// One service, each of its keys checked at its place.
    pub(super) fn service(
        &mut self,
        src: &Source,
        key: &S,
        svc: &Spanned<RawService>,
        (project, network, engine): (&str, &str, crate::spec::Engine),
    ) -> Option<Service> {
        let name = key.get_ref().clone();
        let raw = svc.get_ref();
        let image = self.image(src, key, raw, project)?;
        let build = raw.build.as_ref().map(|b| self.build(src, b));
        let environment = self.environment(src, raw, &name);
        let ports = self.ports(src, raw);
        let volumes = self.volumes(src, raw);
        let networks = self.networks(src, raw, network);
        let restart = self.restart(src, raw);
        let labels = self.labels(src, raw);
        let container_name = self.container_name(src, raw, project, &name);
        let health = raw.health.as_ref().and_then(|h| self.health(src, h));
        let extra_hosts = self.extra_hosts(src, raw);
        let pull_policy = self.pull_policy(src, raw);
        let mem_limit = raw.mem_limit.as_ref().and_then(|m| self.mem_limit(src, m));
        let swarm = self.swarm_keys(src, raw, engine);
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
            pull_policy,
            mem_limit,
            swarm,
        })
    }

    /// `mem_limit`: a size as Docker and Compose write it (`512m`, `1g`, `1.5GiB`,
    /// `268435456`). A single letter means a binary unit, as Docker reads it.
    fn mem_limit(&mut self, src: &Source, raw: &S) -> Option<u64> {
        let v = self.string(src, raw)?;
        let t = v.trim();
        let docker_form = match t.char_indices().last() {
            Some((i, c)) if matches!(c.to_ascii_lowercase(), 'k' | 'm' | 'g' | 't') => {
                format!("{}{}iB", &t[..i], c.to_ascii_uppercase())
            }
            _ => t.to_string(),
        };
        match docker_form.parse::<bytesize::ByteSize>() {
            // Docker's own floor: a smaller limit is refused when the container is made.
            Ok(b) if b.as_u64() >= 6 * 1024 * 1024 => Some(b.as_u64()),
            Ok(_) => {
                self.err(
                    src,
                    raw.span(),
                    format!("mem_limit {v:?} is below Docker's minimum of 6 MiB"),
                );
                None
            }
            Err(_) => {
                self.err(
                    src,
                    raw.span(),
                    format!("bad mem_limit {v:?}: use a size such as \"512m\" or \"1g\""),
                );
                None
            }
        }
    }

    /// The image: as written, or the tag berth makes for a build (`PROJECT-NAME:latest`).
    fn image(&mut self, src: &Source, key: &S, raw: &RawService, project: &str) -> Option<String> {
        let name = key.get_ref();
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
        if let Err(why) = reference::check(&image) {
            match &raw.image {
                Some(i) => self.err(src, i.span(), format!("bad image reference {image:?}: {why}")),
                // The tag berth makes up for a build comes from the service name.
                None => self.err(
                    src,
                    key.span(),
                    format!("the build tag {image:?} made from service {name:?} is not an image reference Docker accepts ({why}): set `image` to name the tag"),
                ),
            }
        }
        Some(image)
    }

    fn build(&mut self, src: &Source, b: &Spanned<RawBuild>) -> Build {
        let br = b.get_ref();
        let context = self.string(src, &br.context).unwrap_or_default();
        let located = self.locate_raw(src, context);
        let context = match self.confine(src, br.context.span(), "build context", located.clone()) {
            Some(c) => {
                if !c.path.is_dir() {
                    self.err(
                        src,
                        br.context.span(),
                        format!("build context {} is not a directory", c.path.display()),
                    );
                }
                c.path
            }
            None => located,
        };
        let args = br
            .args
            .iter()
            .map(|(k, v)| {
                let value = self.scalar(src, v);
                self.secret_if_looks_so(k, &value);
                (k.clone(), value)
            })
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
    }

    /// The environment: the service's env file first, then `environment` over it.
    fn environment(
        &mut self,
        src: &Source,
        raw: &RawService,
        name: &str,
    ) -> BTreeMap<String, String> {
        let mut environment = BTreeMap::new();
        if let Some(env_file) = &raw.env_file {
            let path = self.locate_raw(src, env_file.get_ref());
            if let Some(vars) = self.read_env_file(src, env_file, &path, true) {
                // Key names only, kept in the generation so a redactor rebuilt from the
                // store still knows which values came from the file.
                let keys = vars
                    .keys()
                    .filter(|k| !raw.environment.contains_key(*k))
                    .cloned()
                    .collect::<std::collections::BTreeSet<_>>();
                if !keys.is_empty() {
                    self.env_file_keys.insert(name.to_string(), keys);
                }
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
            self.secret_if_looks_so(k, &value);
            environment.insert(k.clone(), value);
        }

        environment
    }

    fn ports(&mut self, src: &Source, raw: &RawService) -> Vec<Port> {
        let mut ports = Vec::new();
        for p in &raw.ports {
            let text = self.string(src, p).unwrap_or_default();
            match parse_port(&text) {
                Ok(port) => ports.push(port),
                Err(msg) => self.err(src, p.span(), msg),
            }
        }
        ports
    }

    fn volumes(&mut self, src: &Source, raw: &RawService) -> Vec<Volume> {
        let mut volumes = Vec::new();
        for v in &raw.volumes {
            let text = self.string(src, v).unwrap_or_default();
            match parse_volume(&text, &src.dir) {
                Ok(crate::spec::Volume::Bind {
                    source,
                    target,
                    read_only,
                }) => {
                    // An absolute source (or `~/`) names a host path as written; a
                    // relative one is placed by the overlay.
                    let source = if text.starts_with(['/', '~']) {
                        source
                    } else {
                        self.placed(source)
                    };
                    if let Some(c) = self.confine(src, v.span(), "bind source", source) {
                        volumes.push(crate::spec::Volume::Bind {
                            source: c.path,
                            target,
                            read_only,
                        });
                    }
                }
                Ok(vol) => volumes.push(vol),
                Err(msg) => self.err(src, v.span(), msg),
            }
        }
        volumes
    }

    /// The networks: the project's own unless the service names its.
    fn networks(&mut self, src: &Source, raw: &RawService, network: &str) -> Vec<String> {
        if raw.networks.is_empty() {
            vec![network.to_string()]
        } else {
            raw.networks
                .iter()
                .filter_map(|n| {
                    let v = self.string(src, n)?;
                    if let Err(msg) = check_network_name(&v) {
                        self.err(src, n.span(), msg);
                    }
                    Some(v)
                })
                .collect()
        }
    }

    fn restart(&mut self, src: &Source, raw: &RawService) -> String {
        match &raw.restart {
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
        }
    }

    fn labels(&mut self, src: &Source, raw: &RawService) -> BTreeMap<String, String> {
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
        labels
    }

    fn container_name(
        &mut self,
        src: &Source,
        raw: &RawService,
        project: &str,
        name: &str,
    ) -> String {
        match &raw.container_name {
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
        }
    }

    fn extra_hosts(&mut self, src: &Source, raw: &RawService) -> Vec<String> {
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
        extra_hosts
    }

    fn pull_policy(&mut self, src: &Source, raw: &RawService) -> PullPolicy {
        match &raw.pull_policy {
            Some(p) => match self.string(src, p).map(|v| parse_pull_policy(&v)) {
                Some(Ok(policy)) => policy,
                Some(Err(msg)) => {
                    self.err(src, p.span(), msg);
                    PullPolicy::default()
                }
                None => PullPolicy::default(),
            },
            None => PullPolicy::default(),
        }
    }
}
