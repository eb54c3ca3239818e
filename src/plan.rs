//! The plan: a pure function of desired and observed state (docs/design.md "Concepts: plan").
//!
//! No I/O happens here, so every decision is tested by comparing printed text.

use std::collections::BTreeMap;
use std::fmt;

use crate::hash::config_hash;
use crate::observe::Observed;
use crate::runtime::{ContainerState, ContainerSummary, HealthState, ImageInfo};
use crate::spec::{DesiredState, PullPolicy, Service};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// No container for the service: create and start one.
    Create,
    /// The container's config hash or image differs: replace it.
    Recreate,
    /// The container is right but not running.
    Start,
    /// An owned container no service wants any more (volumes are kept).
    Remove,
    /// Already as desired.
    Noop,
}

impl Action {
    /// The action's word, as `berth plan` prints it and history's timings record it.
    pub fn word(&self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Recreate => "recreate",
            Action::Start => "start",
            Action::Remove => "remove",
            Action::Noop => "noop",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub service: String,
    pub action: Action,
    /// The existing container the step acts on (recreate, start, remove, noop).
    pub container: Option<ContainerSummary>,
    /// Why, in words a person reads in `berth plan`.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub project: String,
    /// Removals first (they free names and ports), then services in dependency order.
    pub steps: Vec<Step>,
}

impl Plan {
    /// Leave these services as they are: a repair on hold for a crash loop.
    pub fn hold(&mut self, services: &std::collections::BTreeSet<String>) {
        for step in self
            .steps
            .iter_mut()
            .filter(|s| services.contains(&s.service))
        {
            step.action = Action::Noop;
        }
    }

    pub fn is_noop(&self) -> bool {
        self.steps.iter().all(|s| s.action == Action::Noop)
    }
    pub fn step(&self, service: &str) -> Option<&Step> {
        self.steps
            .iter()
            .find(|s| s.service == service && s.action != Action::Remove)
    }
}

/// Work out what converging `desired` from `observed` takes.
pub fn plan(desired: &DesiredState, observed: &Observed) -> Plan {
    let mut by_service: BTreeMap<&str, Vec<&ContainerSummary>> = BTreeMap::new();
    for c in &observed.containers {
        by_service
            .entry(c.service.as_deref().unwrap_or(""))
            .or_default()
            .push(c);
    }
    let mut steps = Vec::new();

    // Owned containers that no desired service claims, or extra copies of one.
    for (service, containers) in &by_service {
        let wanted = desired.services.get(*service);
        for c in containers {
            let keep = wanted.is_some_and(|s| c.name == s.container_name);
            if !keep {
                steps.push(Step {
                    service: service.to_string(),
                    action: Action::Remove,
                    container: Some((*c).clone()),
                    reason: if wanted.is_some() {
                        format!("stray container {} of this service", c.name)
                    } else {
                        "no longer desired (volumes are kept)".into()
                    },
                });
            }
        }
    }

    for level in desired.levels() {
        for name in level {
            let s = &desired.services[&name];
            let current = by_service
                .get(name.as_str())
                .and_then(|cs| cs.iter().find(|c| c.name == s.container_name));
            let want_hash = config_hash(s);
            let present = observed.images.get(&s.image).and_then(|i| i.as_ref());
            let want_image = present.map(|i| i.id.as_str());
            let rebuild = present.is_some() && needs_build(s, present);
            let (action, reason) = match current {
                None => {
                    let how = match (want_image, &s.build) {
                        (Some(_), Some(_)) if rebuild => " (to be rebuilt: build context changed)",
                        (Some(_), _) => "",
                        (None, Some(_)) => " (to be built)",
                        (None, None) if s.pull_policy == PullPolicy::Never => {
                            " (absent, and pull_policy is never)"
                        }
                        (None, None) => " (to be pulled)",
                    };
                    (Action::Create, format!("image {}{how}", s.image))
                }
                Some(c) if c.config_hash.as_deref() != Some(want_hash.as_str()) => {
                    (Action::Recreate, "configuration changed".into())
                }
                Some(_) if rebuild => (Action::Recreate, "build context changed (rebuild)".into()),
                Some(c) if want_image.is_some_and(|id| id != c.image_id) => (
                    Action::Recreate,
                    format!(
                        "image {} now points to {}",
                        s.image,
                        short_id(want_image.unwrap())
                    ),
                ),
                // Drift that a start cannot fix: a crash loop, a pause, or the image's own
                // HEALTHCHECK saying unhealthy. Recreated, then gated like any change.
                Some(c) if c.state == ContainerState::Restarting => (
                    Action::Recreate,
                    "container is restarting (crash loop)".into(),
                ),
                Some(c) if c.state == ContainerState::Paused => {
                    (Action::Recreate, "container is paused".into())
                }
                Some(c) if c.running() && c.health == Some(HealthState::Unhealthy) => (
                    Action::Recreate,
                    "container is unhealthy by its HEALTHCHECK".into(),
                ),
                // Made ahead by a converge that ended before its level (docs/design.md §4,
                // "work ahead of the gate"): a create cut short may have left it without
                // all of its networks, which its config hash does not show. It never ran:
                // made again, not started.
                Some(c) if c.state == ContainerState::Created => (
                    Action::Recreate,
                    "container was created but never started".into(),
                ),
                Some(c) if !c.running() => (Action::Start, format!("container is {}", c.state)),
                Some(_) => (Action::Noop, String::new()),
            };
            steps.push(Step {
                service: name.clone(),
                action,
                container: current.map(|c| (*c).clone()),
                reason,
            });
        }
    }
    Plan {
        project: desired.project.name.clone(),
        steps,
    }
}

fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_noop() {
            return writeln!(f, "No changes.");
        }
        writeln!(f, "Plan for project {:?}:", self.project)?;
        let width = self
            .steps
            .iter()
            .map(|s| s.service.len())
            .max()
            .unwrap_or(0);
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &self.steps {
            let sigil = match s.action {
                Action::Create => '+',
                Action::Recreate => '~',
                Action::Start => '>',
                Action::Remove => '-',
                Action::Noop => continue,
            };
            let word = s.action.word();
            *counts.entry(word).or_default() += 1;
            writeln!(
                f,
                "  {sigil} {:<width$}  {word:<8}  {}",
                s.service, s.reason
            )?;
        }
        let summary: Vec<String> = ["create", "recreate", "start", "remove"]
            .iter()
            .filter_map(|w| counts.get(w).map(|n| format!("{n} to {w}")))
            .collect();
        writeln!(f, "{}.", summary.join(", "))
    }
}

/// Does this service's image have to be (re)built? Only for a service with `build`: when
/// its image is absent, or was built from a different context than the desired one (or
/// carries no context hash at all: built before berth labelled its builds).
pub fn needs_build(s: &Service, present: Option<&ImageInfo>) -> bool {
    let Some(build) = &s.build else {
        return false;
    };
    match (present, &build.context_hash) {
        (None, _) => true,
        (Some(info), Some(want)) => info.context_hash.as_deref() != Some(want.as_str()),
        // No desired hash was computed: build only when absent, as before.
        (Some(_), None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{ContainerSummary, ImageInfo};
    use crate::spec::DesiredState;

    fn desired(toml: &str) -> DesiredState {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("berth.toml");
        std::fs::write(&f, toml).unwrap();
        crate::spec::load_with_env(&f, &Default::default(), &Default::default()).unwrap()
    }

    const STACK: &str = r#"
[project]
name = "shop"
[services.db]
image = "postgres:15"
[services.cache]
image = "redis:7"
depends_on = ["db"]
[services.app]
image = "shop:1"
depends_on = ["cache", "db"]
environment = { API_KEY = "s3cret" }
"#;

    fn container(d: &DesiredState, service: &str, state: &str, image_id: &str) -> ContainerSummary {
        let s = &d.services[service];
        ContainerSummary {
            id: format!("id-{service}"),
            name: s.container_name.clone(),
            service: Some(service.into()),
            config_hash: Some(config_hash(s)),
            generation: Some(1),
            image_id: image_id.into(),
            state: state.into(),
            health: None,
            published: vec![],
        }
    }

    fn images(d: &DesiredState, id: &str) -> BTreeMap<String, Option<ImageInfo>> {
        d.services
            .values()
            .map(|s| {
                (
                    s.image.clone(),
                    Some(ImageInfo {
                        id: id.into(),
                        ..Default::default()
                    }),
                )
            })
            .collect()
    }

    #[test]
    fn plan_from_nothing_creates_in_dependency_order() {
        let d = desired(STACK);
        let observed = Observed {
            containers: vec![],
            images: [("postgres:15".to_string(), None)].into(),
        };
        assert_eq!(
            plan(&d, &observed).to_string(),
            "Plan for project \"shop\":\n  + db     create    image postgres:15 (to be pulled)\n  + cache  create    image redis:7 (to be pulled)\n  + app    create    image shop:1 (to be pulled)\n3 to create.\n"
        );
    }

    #[test]
    fn converged_stack_plans_no_changes() {
        let d = desired(STACK);
        let containers = ["db", "cache", "app"]
            .iter()
            .map(|s| container(&d, s, "running", "sha256:aaa"))
            .collect();
        let p = plan(
            &d,
            &Observed {
                containers,
                images: images(&d, "sha256:aaa"),
            },
        );
        assert!(p.is_noop());
        assert_eq!(p.to_string(), "No changes.\n");
    }

    #[test]
    fn changed_hash_stopped_container_moved_tag_and_orphan_each_get_their_step() {
        let d = desired(STACK);
        let mut app = container(&d, "app", "running", "sha256:aaa");
        app.config_hash = Some("old".into());
        let mut orphan = container(&d, "db", "running", "sha256:aaa");
        orphan.service = Some("search".into());
        orphan.name = "shop-search".into();
        let containers = vec![
            container(&d, "db", "exited", "sha256:aaa"),
            container(&d, "cache", "running", "sha256:old"),
            app,
            orphan,
        ];
        let p = plan(
            &d,
            &Observed {
                containers,
                images: images(&d, "sha256:aaa"),
            },
        );
        assert_eq!(
            p.to_string(),
            "Plan for project \"shop\":\n  - search  remove    no longer desired (volumes are kept)\n  > db      start     container is exited\n  ~ cache   recreate  image redis:7 now points to aaa\n  ~ app     recreate  configuration changed\n2 to recreate, 1 to start, 1 to remove.\n"
        );
        // Secrets never appear in a plan: values are not printed at all.
        assert!(!p.to_string().contains("s3cret"));
    }

    #[test]
    fn a_container_made_ahead_and_never_started_is_made_again() {
        // A converge that ended before the level of a container it made ahead leaves it
        // `created`; a create cut short may have left it without all its networks.
        let d = desired(STACK);
        let containers = vec![
            container(&d, "db", "running", "sha256:aaa"),
            container(&d, "cache", "created", "sha256:aaa"),
            container(&d, "app", "exited", "sha256:aaa"),
        ];
        let p = plan(
            &d,
            &Observed {
                containers,
                images: images(&d, "sha256:aaa"),
            },
        );
        assert_eq!(
            p.to_string(),
            "Plan for project \"shop\":\n  ~ cache  recreate  container was created but never started\n  > app    start     container is exited\n1 to recreate, 1 to start.\n"
        );
    }

    #[test]
    fn restarting_paused_and_unhealthy_containers_are_drift() {
        let d = desired(STACK);
        let mut db = container(&d, "db", "restarting", "sha256:aaa");
        db.health = None;
        let cache = container(&d, "cache", "paused", "sha256:aaa");
        let mut app = container(&d, "app", "running", "sha256:aaa");
        app.health = Some("unhealthy".into());
        let p = plan(
            &d,
            &Observed {
                containers: vec![db, cache, app],
                images: images(&d, "sha256:aaa"),
            },
        );
        assert_eq!(
            p.to_string(),
            "Plan for project \"shop\":\n  ~ db     recreate  container is restarting (crash loop)\n  ~ cache  recreate  container is paused\n  ~ app    recreate  container is unhealthy by its HEALTHCHECK\n3 to recreate.\n"
        );
        // Docker's "starting" is not drift: the container is still coming up.
        let mut app = container(&d, "app", "running", "sha256:aaa");
        app.health = Some("starting".into());
        let others = ["db", "cache"].map(|s| container(&d, s, "running", "sha256:aaa"));
        let mut containers = others.to_vec();
        containers.push(app);
        assert!(
            plan(
                &d,
                &Observed {
                    containers,
                    images: images(&d, "sha256:aaa")
                }
            )
            .is_noop()
        );
    }

    #[test]
    fn depends_on_change_alone_does_not_recreate() {
        let d = desired(STACK);
        let containers = ["db", "cache", "app"]
            .iter()
            .map(|s| container(&d, s, "running", "sha256:aaa"))
            .collect();
        let d2 =
            desired(&STACK.replace("depends_on = [\"cache\", \"db\"]", "depends_on = [\"db\"]"));
        assert!(
            plan(
                &d2,
                &Observed {
                    containers,
                    images: images(&d, "sha256:aaa")
                }
            )
            .is_noop()
        );
    }
}
