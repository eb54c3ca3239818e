//! Images: make every image a converge needs present before anything running is touched
//! (pull or build), pull what each service's `pull_policy` asks for, and resolve a
//! generation's pins back to image IDs for a revert.
//!
//! - `missing` (the default) pulls an image only when it is absent;
//! - `always` pulls on every `apply` ([`refresh`], before observing), so a tag that moved
//!   in its registry recreates the containers that run it;
//! - `never` never pulls: an absent image is an error;
//! - `every` pulls when the local copy was last pulled longer ago than its period. Docker
//!   records no pull time, but it records when an image was last tagged
//!   (`Metadata.LastTagTime`), and a pull that finds the image up to date does not touch
//!   it; so every pull re-tags the image under its own name, and LastTagTime becomes
//!   "last pulled".
//!
//! A service with `build` is built when its image is absent or was built from another
//! context (the image's `berth.context-hash` label differs from the desired one, see
//! [`crate::build_context`]). `berth plan` never pulls or builds.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::observe::Observed;
use crate::plan::{Action, Plan, needs_build};
use crate::report::Reporter;
use crate::runtime::{ImageInfo, PullProgress, Runtime, RuntimeError};
use crate::spec::{DesiredState, PullPolicy, registry_of};

use std::collections::BTreeMap;

/// Image reference -> image ID, as a generation pins them.
pub type Pins = BTreeMap<String, String>;

/// Image reference → (image ID, has HEALTHCHECK), for every desired service.
pub type Images = BTreeMap<String, (String, bool)>;

/// What a revert or `status` assumes of a pinned image: exactly what the generation ran.
/// The pin *is* the build, so its context counts as current.
pub fn pinned_image_info(desired: &DesiredState, reference: &str, id: &str) -> ImageInfo {
    ImageInfo {
        id: id.to_string(),
        context_hash: desired
            .services
            .values()
            .find(|s| s.image == reference)
            .and_then(|s| s.build.as_ref()?.context_hash.clone()),
        ..Default::default()
    }
}

/// Pull what the services' `pull_policy` demands before a converge observes anything:
/// `always` images every time, `every` images whose last pull is older than the period.
/// `missing` and `never` pull nothing here (an absent `missing` image is pulled by
/// [`ensure_images`] when a step needs it). A failed pull is an error before anything
/// running is touched.
pub async fn refresh<R: Runtime>(
    rt: &R,
    desired: &DesiredState,
    report: &Reporter,
) -> Result<(), RuntimeError> {
    let mut done: Vec<&str> = Vec::new();
    for s in desired.services.values() {
        if s.build.is_some() || done.contains(&s.image.as_str()) {
            continue;
        }
        let pull = match s.pull_policy {
            PullPolicy::Always => true,
            PullPolicy::Every(period) => {
                let info = rt.inspect_image(&s.image).await?;
                older_than(info.as_ref().and_then(|i| i.tagged_at), period)
            }
            PullPolicy::Missing | PullPolicy::Never => false,
        };
        if pull {
            pull_with_progress(rt, &s.name, &s.image, report).await?;
            done.push(&s.image);
        }
    }
    Ok(())
}

/// Was the last pull (or tag) longer ago than `period`? Unknown counts as long ago.
fn older_than(tagged_at: Option<SystemTime>, period: Duration) -> bool {
    tagged_at
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_none_or(|age| age >= period)
}

/// Pull one image, with a live progress row on a terminal and a line when it starts and
/// when it ends otherwise.
async fn pull_with_progress<R: Runtime>(
    rt: &R,
    service: &str,
    reference: &str,
    report: &Reporter,
) -> Result<(), RuntimeError> {
    report.service(
        service,
        &format!("pulling {reference} from {}", registry_of(reference)),
    );
    let started = Instant::now();
    let last = Mutex::new((Instant::now(), PullProgress::default()));
    let on_progress = |p: PullProgress| {
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        // Redraw at most ten times a second, and whenever a layer completes.
        if last.0.elapsed() >= Duration::from_millis(100) || p.layers_done != last.1.layers_done {
            report.progress(
                service,
                &format!("pulling {reference}: {}", progress_text(&p)),
            );
            last.0 = Instant::now();
        }
        last.1 = p;
    };
    rt.pull_image(reference, &on_progress).await?;
    let p = last.lock().unwrap_or_else(|e| e.into_inner()).1;
    // No layer messages at all: the image was already here (up to date, or under
    // another name).
    let what = if p.layers == 0 {
        "no layers to fetch".to_string()
    } else {
        progress_text(&p)
    };
    report.service(
        service,
        &format!(
            "pulled {reference} ({what}) in {:.1} s",
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}

fn progress_text(p: &PullProgress) -> String {
    let mb = |b: u64| b as f64 / 1_000_000.0;
    format!(
        "{}/{} layers, {:.1}/{:.1} MB",
        p.layers_done,
        p.layers,
        mb(p.bytes),
        mb(p.bytes_total)
    )
}

pub async fn ensure_images<R: Runtime>(
    rt: &R,
    desired: &DesiredState,
    plan: &Plan,
    observed: &Observed,
    report: &Reporter,
) -> Result<Images, RuntimeError> {
    let mut images = Images::new();
    for s in desired.services.values() {
        if images.contains_key(&s.image) {
            continue;
        }
        let present = observed.images.get(&s.image).cloned().flatten();
        let info = match present {
            Some(i) if !needs_build(s, Some(&i)) => i,
            present => {
                let needed = plan
                    .step(&s.name)
                    .is_some_and(|st| st.action != Action::Noop);
                if !needed {
                    continue;
                }
                if let Some(build) = &s.build {
                    let why = if present.is_some() {
                        "rebuilding (build context changed)"
                    } else {
                        "building"
                    };
                    report.service(&s.name, &format!("{why} {}", s.image));
                    rt.build_image(&s.image, build).await?;
                } else if s.pull_policy == PullPolicy::Never {
                    return Err(RuntimeError::ImageUnavailable {
                        image: s.image.clone(),
                        message: format!(
                            "it is not present locally and service {:?} has pull_policy \"never\"; build or load it first",
                            s.name
                        ),
                    });
                } else {
                    pull_with_progress(rt, &s.name, &s.image, report).await?;
                }
                rt.inspect_image(&s.image)
                    .await?
                    .ok_or_else(|| RuntimeError::ImageUnavailable {
                        image: s.image.clone(),
                        message: "still absent after pull/build".into(),
                    })?
            }
        };
        images.insert(s.image.clone(), (info.id, info.has_healthcheck));
    }
    // A migration job's image is pinned like a service's: a revert runs the downgrade
    // of the very image that upgraded, whatever its tag points at by then.
    if let Some(job) = desired.migrations.as_ref().and_then(|m| m.job.as_ref())
        && !images.contains_key(&job.image)
    {
        let info = match rt.inspect_image(&job.image).await? {
            Some(i) => i,
            None => {
                pull_with_progress(rt, crate::spec::MIGRATIONS_NODE, &job.image, report).await?;
                rt.inspect_image(&job.image).await?.ok_or_else(|| {
                    RuntimeError::ImageUnavailable {
                        image: job.image.clone(),
                        message: "still absent after pull".into(),
                    }
                })?
            }
        };
        images.insert(job.image.clone(), (info.id, info.has_healthcheck));
    }
    Ok(images)
}

pub async fn pinned_images<R: Runtime>(rt: &R, pins: &Pins) -> Result<Images, RuntimeError> {
    // Every pin at once: a revert is on the clock.
    let found = futures::future::try_join_all(pins.iter().map(|(reference, id)| async move {
        let info = rt
            .inspect_image(id)
            .await?
            .ok_or_else(|| RuntimeError::ImageUnavailable {
                image: format!("{reference} (pinned {id})"),
                message: "the pinned image is no longer present".into(),
            })?;
        Ok::<_, RuntimeError>((reference.clone(), (info.id, info.has_healthcheck)))
    }))
    .await?;
    Ok(found.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::observe;
    use crate::plan::plan;
    use crate::runtime::fake::FakeRuntime;

    /// One service `web` running `reg.example:5000/web:1`, with this pull policy.
    fn desired(policy: PullPolicy) -> DesiredState {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("berth.toml");
        std::fs::write(
            &f,
            "[project]\nname = \"p\"\n[services.web]\nimage = \"reg.example:5000/web:1\"\n",
        )
        .unwrap();
        let mut d =
            crate::spec::load_with_env(&f, &Default::default(), &Default::default()).unwrap();
        d.services.get_mut("web").unwrap().pull_policy = policy;
        d
    }

    const WEB: &str = "reg.example:5000/web:1";

    #[tokio::test]
    async fn always_pulls_before_observing_so_a_moved_tag_plans_a_recreate() {
        let rt = FakeRuntime::new();
        rt.add_image(WEB, "sha256:old");
        rt.publish(WEB, "sha256:new");
        let d = desired(PullPolicy::Always);
        refresh(&rt, &d, &Reporter::quiet()).await.unwrap();
        assert_eq!(rt.local_image(WEB).unwrap().id, "sha256:new");
        let mut observed = observe(&rt, &d).await.unwrap();
        observed.containers.push(crate::runtime::ContainerSummary {
            id: "c1".into(),
            name: d.services["web"].container_name.clone(),
            service: Some("web".into()),
            config_hash: Some(crate::hash::config_hash(&d.services["web"])),
            generation: Some(1),
            image_id: "sha256:old".into(),
            state: "running".into(),
            health: None,
            published: vec![],
        });
        assert!(
            plan(&d, &observed)
                .to_string()
                .contains("recreate  image reg.example:5000/web:1 now points to new"),
        );
    }

    #[tokio::test]
    async fn missing_and_never_pull_nothing_before_observing() {
        for policy in [PullPolicy::Missing, PullPolicy::Never] {
            let rt = FakeRuntime::new();
            rt.publish(WEB, "sha256:new");
            refresh(&rt, &desired(policy), &Reporter::quiet())
                .await
                .unwrap();
            assert_eq!(rt.calls().get("create_image"), None, "{policy:?}");
        }
    }

    #[tokio::test]
    async fn every_pulls_only_when_the_last_pull_is_older_than_the_period() {
        let rt = FakeRuntime::new();
        rt.publish(WEB, "sha256:new");
        let hourly = desired(PullPolicy::Every(Duration::from_secs(3600)));
        // Absent: no pull time at all, so it is pulled.
        refresh(&rt, &hourly, &Reporter::quiet()).await.unwrap();
        assert_eq!(rt.calls().get("create_image"), Some(&1));
        // Just pulled: not again within the hour.
        refresh(&rt, &hourly, &Reporter::quiet()).await.unwrap();
        assert_eq!(rt.calls().get("create_image"), Some(&1));
        // A zero period is always over.
        let always = desired(PullPolicy::Every(Duration::ZERO));
        refresh(&rt, &always, &Reporter::quiet()).await.unwrap();
        assert_eq!(rt.calls().get("create_image"), Some(&2));
    }

    #[tokio::test]
    async fn a_registry_that_is_down_is_an_error_naming_the_image_and_registry() {
        let rt = FakeRuntime::new();
        rt.add_image(WEB, "sha256:old");
        rt.set_registry_down(true);
        let e = refresh(&rt, &desired(PullPolicy::Always), &Reporter::quiet())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(WEB) && e.contains("registry reg.example:5000"),
            "{e}"
        );
        assert_eq!(rt.local_image(WEB).unwrap().id, "sha256:old");
    }

    #[tokio::test]
    async fn never_with_the_image_absent_fails_before_anything_runs() {
        let rt = FakeRuntime::new();
        rt.publish(WEB, "sha256:new");
        let d = desired(PullPolicy::Never);
        let observed = observe(&rt, &d).await.unwrap();
        let p = plan(&d, &observed);
        assert!(p.to_string().contains("(absent, and pull_policy is never)"));
        let e = ensure_images(&rt, &d, &p, &observed, &Reporter::quiet())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("pull_policy \"never\""), "{e}");
        assert_eq!(rt.calls().get("create_image"), None);
    }

    #[tokio::test]
    async fn a_stale_context_hash_rebuilds_and_the_new_image_has_the_new_hash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("ctx")).unwrap();
        std::fs::write(dir.path().join("ctx/Dockerfile"), "FROM scratch\n").unwrap();
        let f = dir.path().join("berth.toml");
        std::fs::write(
            &f,
            "[project]\nname = \"p\"\n[services.web]\nbuild = { context = \"ctx\" }\n",
        )
        .unwrap();
        let mut d =
            crate::spec::load_with_env(&f, &Default::default(), &Default::default()).unwrap();
        crate::build_context::fill_context_hashes(&mut d).unwrap();
        let rt = FakeRuntime::new();
        // Built before, from another context (or before berth labelled its builds).
        rt.add_image("p-web:latest", "sha256:unlabelled");
        let observed = observe(&rt, &d).await.unwrap();
        let p = plan(&d, &observed);
        assert!(
            p.to_string()
                .contains("create    image p-web:latest (to be rebuilt: build context changed)"),
            "{p}"
        );
        let images = ensure_images(&rt, &d, &p, &observed, &Reporter::quiet())
            .await
            .unwrap();
        let want = d.services["web"]
            .build
            .as_ref()
            .unwrap()
            .context_hash
            .clone();
        assert_eq!(rt.local_image("p-web:latest").unwrap().context_hash, want);
        assert_ne!(images["p-web:latest"].0, "sha256:unlabelled");
        // Now current: no rebuild is planned.
        let observed = observe(&rt, &d).await.unwrap();
        assert!(!needs_build(
            &d.services["web"],
            observed.images["p-web:latest"].as_ref()
        ));
    }

    #[test]
    fn an_unknown_or_old_pull_time_is_older_than_the_period() {
        let hour = Duration::from_secs(3600);
        assert!(older_than(None, hour));
        assert!(older_than(Some(SystemTime::now() - 2 * hour), hour));
        assert!(!older_than(Some(SystemTime::now() - hour / 2), hour));
    }
}
