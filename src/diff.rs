//! What changed between two generations (`berth diff`): per service its image (reference
//! and pinned ID), environment, ports, volumes and health settings; for the stack its
//! commit, schema (migrations version or revision) and rollout settings.
//!
//! [`between`] is a pure function of the two generations and their desired states, so it
//! is tested with golden text like the plan. Everything a [`Diff`] holds is already safe
//! to print (docs/design.md §11, §12): a secret's value is never in it, only that its key
//! changed, and every value has passed both generations' redactors and had its control
//! characters escaped. The text, the JSON and the notification [`summary`] are all made
//! from it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::redact::{Redactor, is_secret_key};
use crate::spec::duration::format as duration;
use crate::spec::{DesiredState, Health, Rollout, Service, Volume};
use crate::store::{Generation, StoreError};

/// What changed from generation `from` to generation `to`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diff {
    pub project: String,
    pub from: i64,
    pub to: i64,
    /// Stack-wide settings that changed: `commit`, `schema`, `network` and the
    /// `rollout.*` settings.
    pub stack: Vec<Setting>,
    /// Other parts of the stack that changed, by name only (`migrations`: the block holds
    /// the database URL, whose password is a secret).
    pub stack_other: Vec<String>,
    /// Services added, removed or changed, by name; unchanged ones are left out.
    pub services: Vec<ServiceDiff>,
}

/// A named setting's value before and after; None where it was not set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Setting {
    pub name: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// How one thing (a service, an environment key, a port) differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    Added,
    Removed,
    Changed,
}

impl Change {
    fn sigil(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Changed => '~',
        }
    }
}

/// One service's changes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceDiff {
    pub service: String,
    pub change: Change,
    /// The image before and after (one side only for an added or removed service); None
    /// when neither the reference nor its pinned ID changed.
    pub image: Option<ImageChange>,
    pub environment: Vec<EnvChange>,
    /// Published ports added or removed, as `[IP:]HOST:CONTAINER/PROTOCOL`.
    pub ports: Vec<Item>,
    /// Volumes added or removed, as `NAME_OR_PATH:TARGET[:ro]`.
    pub volumes: Vec<Item>,
    /// Its health block: `probe`, `interval`, `timeout`, `healthy_deadline`,
    /// `min_healthy_time` (unset: the rollout's value applies).
    pub health: Vec<Setting>,
    /// The other fields that changed, by name only (`command`, `labels`, `build`...).
    pub other: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageChange {
    pub before: Option<Image>,
    pub after: Option<Image>,
}

/// An image reference and the ID the generation pinned it to (None: not pinned).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Image {
    pub reference: String,
    pub id: Option<String>,
}

/// One environment key's change. A secret's values are never kept: the key is secret
/// when it looks like one or its value came from an env file, in either generation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnvChange {
    pub key: String,
    pub change: Change,
    pub secret: bool,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// A list entry (a port, a volume) that one side has and the other does not.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    pub change: Change,
    pub value: String,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.stack.is_empty() && self.stack_other.is_empty() && self.services.is_empty()
    }
}

/// What changed from generation `a` to generation `b`, each decoded from the store.
pub fn diff(a: &Generation, b: &Generation) -> Result<Diff, StoreError> {
    Ok(between(a, &a.desired()?, b, &b.desired()?))
}

/// What changed from generation `a` (whose desired state is `da`) to `b` (`db`).
pub fn between(a: &Generation, da: &DesiredState, b: &Generation, db: &DesiredState) -> Diff {
    let safe = Safe(da.redactor().union(&db.redactor()));
    let mut stack = Vec::new();
    let commit = |g: &Generation| {
        g.commit.as_ref().map(|c| {
            let short: String = c.chars().take(12).collect();
            match &g.commit_subject {
                Some(s) => format!("{short} {}", crate::text::one_line(s, 72)),
                None => short.to_string(),
            }
        })
    };
    setting(&mut stack, &safe, "commit", commit(a), commit(b));
    setting(&mut stack, &safe, "schema", a.schema(), b.schema());
    setting(
        &mut stack,
        &safe,
        "network",
        Some(da.project.network.clone()),
        Some(db.project.network.clone()),
    );
    rollout(&mut stack, &safe, &da.rollout, &db.rollout);
    let mut stack_other = Vec::new();
    if da.migrations != db.migrations {
        stack_other.push("migrations".to_string());
    }

    let (pins_a, pins_b) = (a.pins(), b.pins());
    let image = |s: &Service, pins: &BTreeMap<String, String>| Image {
        reference: safe.text(&s.image),
        id: pins.get(&s.image).map(|id| safe.text(id)),
    };
    let names: BTreeSet<&String> = da.services.keys().chain(db.services.keys()).collect();
    let mut services = Vec::new();
    for name in names {
        let service = safe.text(name);
        match (da.services.get(name), db.services.get(name)) {
            (Some(sa), None) => services.push(ServiceDiff::only(
                service,
                Change::Removed,
                ImageChange {
                    before: Some(image(sa, &pins_a)),
                    after: None,
                },
            )),
            (None, Some(sb)) => services.push(ServiceDiff::only(
                service,
                Change::Added,
                ImageChange {
                    before: None,
                    after: Some(image(sb, &pins_b)),
                },
            )),
            (Some(sa), Some(sb)) => {
                let (ia, ib) = (image(sa, &pins_a), image(sb, &pins_b));
                let secret_from_file = |d: &DesiredState, key: &str| {
                    d.env_file_keys.get(name).is_some_and(|k| k.contains(key))
                };
                let is_secret = |key: &str| {
                    is_secret_key(key) || secret_from_file(da, key) || secret_from_file(db, key)
                };
                let d = ServiceDiff {
                    service,
                    change: Change::Changed,
                    image: (ia != ib).then_some(ImageChange {
                        before: Some(ia),
                        after: Some(ib),
                    }),
                    environment: environment(&safe, &sa.environment, &sb.environment, is_secret),
                    ports: items(&safe, &sa.ports, &sb.ports, |p| p.to_string()),
                    volumes: items(&safe, &sa.volumes, &sb.volumes, volume_text),
                    health: health(&safe, sa.health.as_ref(), sb.health.as_ref()),
                    other: other_fields(sa, sb),
                };
                if !d.is_empty() {
                    services.push(d);
                }
            }
            // Every name comes from one of the two.
            (None, None) => {}
        }
    }
    Diff {
        project: safe.text(&b.project),
        from: a.id,
        to: b.id,
        stack,
        stack_other,
        services,
    }
}

/// Both generations' secrets hidden, then control characters escaped: what every value
/// in a [`Diff`] passes through.
struct Safe(Redactor);

impl Safe {
    fn text(&self, s: &str) -> String {
        crate::text::escaped(&self.0.text(s))
    }
}

fn setting(
    into: &mut Vec<Setting>,
    safe: &Safe,
    name: &str,
    before: Option<String>,
    after: Option<String>,
) {
    if before != after {
        into.push(Setting {
            name: name.to_string(),
            before: before.map(|v| safe.text(&v)),
            after: after.map(|v| safe.text(&v)),
        });
    }
}

fn rollout(into: &mut Vec<Setting>, safe: &Safe, a: &Rollout, b: &Rollout) {
    // Destructured so that a new rollout setting cannot be left out of the diff unseen.
    let Rollout {
        healthy_deadline,
        min_healthy_time,
        progress_deadline,
        auto_revert,
        stability,
    } = a;
    let mut one = |name: &str, before: String, after: String| {
        setting(
            into,
            safe,
            &format!("rollout.{name}"),
            Some(before),
            Some(after),
        )
    };
    one(
        "healthy_deadline",
        duration(*healthy_deadline),
        duration(b.healthy_deadline),
    );
    one(
        "min_healthy_time",
        duration(*min_healthy_time),
        duration(b.min_healthy_time),
    );
    one(
        "progress_deadline",
        duration(*progress_deadline),
        duration(b.progress_deadline),
    );
    one(
        "auto_revert",
        auto_revert.to_string(),
        b.auto_revert.to_string(),
    );
    one(
        "stability",
        stability_word(*stability),
        stability_word(b.stability),
    );
}

fn stability_word(s: crate::spec::Stability) -> String {
    match s {
        crate::spec::Stability::Pipelined => "pipelined".into(),
        crate::spec::Stability::BeforeDependents => "before-dependents".into(),
    }
}

fn environment(
    safe: &Safe,
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
    is_secret: impl Fn(&str) -> bool,
) -> Vec<EnvChange> {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter_map(|key| {
            let (va, vb) = (a.get(key), b.get(key));
            let change = match (va, vb) {
                (Some(x), Some(y)) if x == y => return None,
                (Some(_), Some(_)) => Change::Changed,
                (None, Some(_)) => Change::Added,
                _ => Change::Removed,
            };
            let secret = is_secret(key);
            let shown = |v: Option<&String>| v.filter(|_| !secret).map(|v| safe.text(v));
            Some(EnvChange {
                key: safe.text(key),
                change,
                secret,
                before: shown(va),
                after: shown(vb),
            })
        })
        .collect()
}

/// The entries one list has and the other lacks: removed ones first, each in its list's
/// order.
fn items<T: PartialEq>(safe: &Safe, a: &[T], b: &[T], text: impl Fn(&T) -> String) -> Vec<Item> {
    let removed = a.iter().filter(|x| !b.contains(x)).map(|x| Item {
        change: Change::Removed,
        value: safe.text(&text(x)),
    });
    let added = b.iter().filter(|x| !a.contains(x)).map(|x| Item {
        change: Change::Added,
        value: safe.text(&text(x)),
    });
    removed.chain(added).collect()
}

fn volume_text(v: &Volume) -> String {
    let (source, target, read_only) = match v {
        Volume::Named {
            name,
            target,
            read_only,
        } => (name.clone(), target, read_only),
        Volume::Bind {
            source,
            target,
            read_only,
        } => (source.display().to_string(), target, read_only),
    };
    format!("{source}:{target}{}", if *read_only { ":ro" } else { "" })
}

fn health(safe: &Safe, a: Option<&Health>, b: Option<&Health>) -> Vec<Setting> {
    let mut out = Vec::new();
    let probe = |h: Option<&Health>| h.map(|h| h.probe.to_string());
    let (mut before, mut after) = (probe(a), probe(b));
    // A probe's text leaves out its password: a change of that alone still shows.
    if before == after && a.map(|h| &h.probe) != b.map(|h| &h.probe) {
        before = before.map(|p| format!("{p} (old password)"));
        after = after.map(|p| format!("{p} (new password)"));
    }
    setting(&mut out, safe, "probe", before, after);
    let each = |f: fn(&Health) -> Option<std::time::Duration>| {
        (a.and_then(f).map(duration), b.and_then(f).map(duration))
    };
    for (name, (x, y)) in [
        ("interval", each(|h| Some(h.interval))),
        ("timeout", each(|h| Some(h.timeout))),
        ("healthy_deadline", each(|h| h.healthy_deadline)),
        ("min_healthy_time", each(|h| h.min_healthy_time)),
    ] {
        setting(&mut out, safe, name, x, y);
    }
    out
}

/// The names of the fields the diff does not spell out that differ.
fn other_fields(a: &Service, b: &Service) -> Vec<String> {
    // Destructured so that a new field cannot be left out of the diff unseen.
    let Service {
        name: _,
        image: _,
        environment: _,
        ports: _,
        volumes: _,
        health: _,
        build,
        command,
        entrypoint,
        networks,
        depends_on,
        restart,
        labels,
        user,
        working_dir,
        container_name,
        profiles,
        extra_hosts,
        pull_policy,
        mem_limit,
        swarm,
    } = a;
    [
        ("build", *build != b.build),
        ("command", *command != b.command),
        ("entrypoint", *entrypoint != b.entrypoint),
        ("networks", *networks != b.networks),
        ("depends_on", *depends_on != b.depends_on),
        ("restart", *restart != b.restart),
        ("labels", *labels != b.labels),
        ("user", *user != b.user),
        ("working_dir", *working_dir != b.working_dir),
        ("container_name", *container_name != b.container_name),
        ("profiles", *profiles != b.profiles),
        ("extra_hosts", *extra_hosts != b.extra_hosts),
        ("pull_policy", *pull_policy != b.pull_policy),
        ("mem_limit", *mem_limit != b.mem_limit),
        ("replicas, placement, update_order", *swarm != b.swarm),
    ]
    .into_iter()
    .filter(|(_, differs)| *differs)
    .map(|(name, _)| name.to_string())
    .collect()
}

impl ServiceDiff {
    /// A service only one side has.
    fn only(service: String, change: Change, image: ImageChange) -> ServiceDiff {
        ServiceDiff {
            service,
            change,
            image: Some(image),
            environment: Vec::new(),
            ports: Vec::new(),
            volumes: Vec::new(),
            health: Vec::new(),
            other: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.image.is_none()
            && self.environment.is_empty()
            && self.ports.is_empty()
            && self.volumes.is_empty()
            && self.health.is_empty()
            && self.other.is_empty()
    }
}

/// An image ID as people read it: 12 hex digits.
fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

impl fmt::Display for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.id {
            Some(id) => write!(f, "{} ({})", self.reference, short_id(id)),
            None => write!(f, "{} (not pinned)", self.reference),
        }
    }
}

impl ImageChange {
    /// `app:1 (1234567890ab) -> app:2 (abcdef012345)`; `app:1 (1234… -> abcd…)` when only
    /// the pin moved. With `ids` false the IDs are left out unless they are the change.
    fn text(&self, ids: bool) -> String {
        let side = |i: &Image| {
            if ids {
                i.to_string()
            } else {
                i.reference.clone()
            }
        };
        match (&self.before, &self.after) {
            (Some(x), Some(y)) if x.reference == y.reference => {
                fn id(i: &Image) -> &str {
                    i.id.as_deref().map(short_id).unwrap_or("not pinned")
                }
                format!("{} ({} -> {})", x.reference, id(x), id(y))
            }
            (Some(x), Some(y)) => format!("{} -> {}", side(x), side(y)),
            (Some(x), None) | (None, Some(x)) => side(x),
            (None, None) => String::new(),
        }
    }
}

impl Setting {
    fn text(&self) -> String {
        let side = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        format!("{} -> {}", side(&self.before), side(&self.after))
    }
}

impl EnvChange {
    /// `+KEY=value`, `~KEY: old -> new`, `-KEY`; a secret only as `~KEY (secret)`.
    fn text(&self) -> String {
        let sigil = self.change.sigil();
        match (self.secret, &self.before, &self.after) {
            (true, ..) => format!("{sigil}{} (secret)", self.key),
            (false, Some(x), Some(y)) => format!("{sigil}{}: {x} -> {y}", self.key),
            (false, None, Some(y)) => format!("{sigil}{}={y}", self.key),
            (false, ..) => format!("{sigil}{}", self.key),
        }
    }
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(f, "No changes.");
        }
        writeln!(
            f,
            "Changes from generation {} to generation {} of project {:?}:",
            self.from, self.to, self.project
        )?;
        for s in &self.stack {
            writeln!(f, "  {}: {}", s.name, s.text())?;
        }
        if !self.stack_other.is_empty() {
            writeln!(f, "  also changed: {}", self.stack_other.join(", "))?;
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &self.services {
            writeln!(f, "  {} {}", s.change.sigil(), s.service)?;
            let word = match s.change {
                Change::Added => "added",
                Change::Removed => "removed",
                Change::Changed => "changed",
            };
            *counts.entry(word).or_default() += 1;
            if s.change == Change::Removed {
                continue;
            }
            let line = |f: &mut fmt::Formatter<'_>, label: &str, text: String| {
                writeln!(f, "      {label:<7} {text}")
            };
            if let Some(i) = &s.image {
                line(f, "image", i.text(true))?;
            }
            for e in &s.environment {
                line(f, "env", e.text())?;
            }
            for p in &s.ports {
                line(f, "port", format!("{}{}", p.change.sigil(), p.value))?;
            }
            for v in &s.volumes {
                line(f, "volume", format!("{}{}", v.change.sigil(), v.value))?;
            }
            for h in &s.health {
                line(f, "health", format!("{}: {}", h.name, h.text()))?;
            }
            if !s.other.is_empty() {
                line(f, "also", s.other.join(", "))?;
            }
        }
        let summary: Vec<String> = ["changed", "added", "removed"]
            .iter()
            .filter_map(|w| counts.get(w).map(|n| format!("{n} {w}")))
            .collect();
        if !summary.is_empty() {
            writeln!(f, "{}.", summary.join(", "))?;
        }
        Ok(())
    }
}

/// A few short lines for a notification: one for the stack's settings, one a service,
/// names and keys without values (`web: image app:1 -> app:2; env +FOO ~BAR; ports
/// -8080:80/tcp +8081:80/tcp`). "No changes." when there are none.
pub fn summary(d: &Diff) -> String {
    if d.is_empty() {
        return "No changes.".into();
    }
    let mut lines = Vec::new();
    let stack: Vec<String> = d
        .stack
        .iter()
        .map(|s| format!("{} {}", s.name, s.text()))
        .chain(d.stack_other.iter().map(|o| format!("{o} changed")))
        .collect();
    if !stack.is_empty() {
        lines.push(stack.join("; "));
    }
    for s in &d.services {
        let mut parts = Vec::new();
        match s.change {
            Change::Added => parts.push(format!(
                "added ({})",
                s.image.as_ref().map(|i| i.text(false)).unwrap_or_default()
            )),
            Change::Removed => parts.push("removed".into()),
            Change::Changed => {}
        }
        if let (Change::Changed, Some(i)) = (s.change, &s.image) {
            parts.push(format!("image {}", i.text(false)));
        }
        let words = |label: &str, words: Vec<String>| {
            (!words.is_empty()).then(|| format!("{label} {}", words.join(" ")))
        };
        parts.extend(words(
            "env",
            s.environment
                .iter()
                .map(|e| format!("{}{}", e.change.sigil(), e.key))
                .collect(),
        ));
        let signed = |items: &[Item]| -> Vec<String> {
            items
                .iter()
                .map(|i| format!("{}{}", i.change.sigil(), i.value))
                .collect()
        };
        parts.extend(words("ports", signed(&s.ports)));
        parts.extend(words("volumes", signed(&s.volumes)));
        parts.extend(words(
            "health",
            s.health.iter().map(|h| h.name.clone()).collect(),
        ));
        parts.extend(words("also", s.other.clone()));
        lines.push(format!("{}: {}", s.service, parts.join("; ")));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Kind, NewGeneration, Store};
    use std::os::unix::fs::PermissionsExt;

    /// A generation of this desired state (its env file beside it, mode 600) with these
    /// pins, as the store gives it back.
    async fn generation(toml: &str, env_file: &str, pins: &[(&str, &str)]) -> Generation {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("berth.toml");
        std::fs::write(&f, toml).unwrap();
        let env = dir.path().join("web.env");
        std::fs::write(&env, env_file).unwrap();
        std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o600)).unwrap();
        let d = crate::spec::load_with_env(&f, &Default::default(), &Default::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let pins: BTreeMap<&str, &str> = pins.iter().copied().collect();
        let store = Store::open(&dir.path().join("state.db")).await.unwrap();
        let id = store
            .begin(
                NewGeneration {
                    project: &d.project.name,
                    kind: Kind::Apply,
                    source_hash: "h",
                    resolved_hash: "h",
                    source: "berth.toml",
                    spec_json: &serde_json::to_string(&d).unwrap(),
                    images: &serde_json::to_value(pins).unwrap(),
                    commit: None,
                },
                None,
            )
            .await
            .unwrap();
        store.get(&d.project.name, id).await.unwrap().unwrap()
    }

    const ENV_SECRET_1: &str = "envfile-secret-one";
    const ENV_SECRET_2: &str = "envfile-secret-two";

    const SHOP: &str = r#"
[project]
name = "shop"
[rollout]
healthy_deadline = "30s"
[services.db]
image = "postgres:15"
[services.cache]
image = "redis:7"
[services.web]
image = "shop:1"
env_file = "web.env"
environment = { VERSION = "1", API_TOKEN = "literal-secret-1", OLD = "x" }
ports = ["127.0.0.1:8080:8080"]
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }
"#;

    /// SHOP with web's image tag, two environment values, a published port and its
    /// probe's interval changed, cache dropped and a worker added.
    fn shop_v2() -> String {
        SHOP.replace("shop:1", "shop:2")
            .replace(
                "VERSION = \"1\", API_TOKEN = \"literal-secret-1\", OLD = \"x\"",
                "VERSION = \"2\", API_TOKEN = \"literal-secret-2\", NEW = \"y\"",
            )
            .replace("127.0.0.1:8080:8080", "127.0.0.1:8081:8080")
            .replace("interval = \"100ms\"", "interval = \"200ms\"")
            .replace("healthy_deadline = \"30s\"", "healthy_deadline = \"1m\"")
            .replace(
                "[services.cache]\nimage = \"redis:7\"",
                "[services.worker]\nimage = \"shop:2\"\ncommand = [\"work\"]",
            )
    }

    /// Generation `id` of a shop desired state, its env file holding `secret`.
    async fn shop(id: i64, toml: &str, secret: &str, web_pin: &str) -> Generation {
        let mut g = generation(
            toml,
            &format!("UPSTREAM_CREDENTIAL={secret}\nREGION=eu\n"),
            &[
                ("postgres:15", "sha256:1111111111111111aaaa"),
                ("redis:7", "sha256:2222222222222222bbbb"),
                ("shop:1", "sha256:3333333333333333cccc"),
                ("shop:2", web_pin),
            ],
        )
        .await;
        g.id = id;
        g
    }

    #[tokio::test]
    async fn a_diff_of_image_env_and_ports_reads_as_golden_text_without_any_secret_value() {
        let mut a = shop(3, SHOP, ENV_SECRET_1, "sha256:4444444444444444dddd").await;
        let mut b = shop(5, &shop_v2(), ENV_SECRET_2, "sha256:4444444444444444dddd").await;
        a.schema_version = Some(2);
        b.schema_version = Some(3);
        b.commit = Some("0123456789abcdef0123".into());
        b.commit_subject = Some("web 2\nwith a second line".into());
        let d = diff(&a, &b).unwrap();
        let text = d.to_string();
        assert_eq!(
            text,
            "\
Changes from generation 3 to generation 5 of project \"shop\":
  commit: - -> 0123456789ab web 2\\nwith a second line
  schema: 2 -> 3
  rollout.healthy_deadline: 30s -> 1m
  - cache
  ~ web
      image   shop:1 (333333333333) -> shop:2 (444444444444)
      env     ~API_TOKEN (secret)
      env     +NEW=y
      env     -OLD
      env     ~UPSTREAM_CREDENTIAL (secret)
      env     ~VERSION: 1 -> 2
      port    -127.0.0.1:8080:8080/tcp
      port    +127.0.0.1:8081:8080/tcp
      health  interval: 100ms -> 200ms
  + worker
      image   shop:2 (444444444444)
1 changed, 1 added, 1 removed.
"
        );
        assert_eq!(
            summary(&d),
            "\
commit - -> 0123456789ab web 2\\nwith a second line; schema 2 -> 3; rollout.healthy_deadline 30s -> 1m
cache: removed
web: image shop:1 -> shop:2; env ~API_TOKEN +NEW -OLD ~UPSTREAM_CREDENTIAL ~VERSION; ports -127.0.0.1:8080:8080/tcp +127.0.0.1:8081:8080/tcp; health interval
worker: added (shop:2)"
        );
        let json = serde_json::to_string(&d).unwrap();
        for out in [&text, &summary(&d), &json] {
            for secret in [
                ENV_SECRET_1,
                ENV_SECRET_2,
                "literal-secret-1",
                "literal-secret-2",
            ] {
                assert!(!out.contains(secret), "{secret} shown in:\n{out}");
            }
        }
    }

    #[tokio::test]
    async fn a_moved_pin_under_the_same_tag_is_an_image_change() {
        let a = shop(1, SHOP, ENV_SECRET_1, "sha256:4444444444444444dddd").await;
        let mut b = shop(2, SHOP, ENV_SECRET_1, "sha256:4444444444444444dddd").await;
        b.images["shop:1"] = "sha256:9999999999999999eeee".into();
        let d = diff(&a, &b).unwrap();
        assert_eq!(
            d.to_string(),
            "\
Changes from generation 1 to generation 2 of project \"shop\":
  ~ web
      image   shop:1 (333333333333 -> 999999999999)
1 changed.
"
        );
        assert_eq!(
            summary(&d),
            "web: image shop:1 (333333333333 -> 999999999999)"
        );
    }

    #[tokio::test]
    async fn identical_generations_have_no_changes() {
        let a = shop(1, SHOP, ENV_SECRET_1, "sha256:4444444444444444dddd").await;
        let b = shop(2, SHOP, ENV_SECRET_1, "sha256:4444444444444444dddd").await;
        let d = diff(&a, &b).unwrap();
        assert!(d.is_empty());
        assert_eq!(d.to_string(), "No changes.\n");
        assert_eq!(summary(&d), "No changes.");
    }

    #[tokio::test]
    async fn a_secret_inside_a_plain_value_is_redacted_and_other_fields_are_named() {
        let a = shop(1, SHOP, ENV_SECRET_1, "sha256:4444444444444444dddd").await;
        let v2 = SHOP
            .replace(
                "OLD = \"x\"",
                "OLD = \"x\", UPSTREAM = \"https://u:envfile-secret-one@api\"",
            )
            .replace(
                "[services.db]\n",
                "[services.db]\nlabels = { tier = \"data\" }\n",
            );
        let b = shop(2, &v2, ENV_SECRET_1, "sha256:4444444444444444dddd").await;
        let d = diff(&a, &b).unwrap();
        assert_eq!(
            d.to_string(),
            "\
Changes from generation 1 to generation 2 of project \"shop\":
  ~ db
      also    labels
  ~ web
      env     +UPSTREAM=https://u:<redacted>@api
1 changed.
"
            .replace("1 changed", "2 changed")
        );
    }
}
