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
use crate::plan::{Action, Plan};
use crate::report::Reporter;
use crate::runtime::{ImageInfo, PullProgress, Runtime, RuntimeError};
use crate::spec::{DesiredState, PullPolicy, Service};

use std::collections::BTreeMap;

/// Image reference -> image ID, as a generation pins them.
pub type Pins = BTreeMap<String, String>;

/// Image reference → (image ID, has HEALTHCHECK), for every desired service.
pub type Images = BTreeMap<String, (String, bool)>;

/// The registry a reference is pulled from, as Docker reads a reference: the first
/// component when it looks like a host (has a `.` or `:`, or is `localhost`), otherwise
/// Docker Hub.
pub fn registry_of(reference: &str) -> &str {
    match reference.split_once('/') {
        Some((host, _)) if host.contains(['.', ':']) || host == "localhost" => host,
        _ => "docker.io",
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
    Ok(images)
}

pub async fn pinned_images<R: Runtime>(rt: &R, pins: &Pins) -> Result<Images, RuntimeError> {
    let mut images = Images::new();
    for (reference, id) in pins {
        let info = rt
            .inspect_image(id)
            .await?
            .ok_or_else(|| RuntimeError::ImageUnavailable {
                image: format!("{reference} (pinned {id})"),
                message: "the pinned image is no longer present".into(),
            })?;
        images.insert(reference.clone(), (info.id, info.has_healthcheck));
    }
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_of_reads_references_like_docker() {
        assert_eq!(registry_of("postgres:15"), "docker.io");
        assert_eq!(registry_of("grafana/grafana:10.4.2"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5000/fx:1"), "127.0.0.1:5000");
        assert_eq!(registry_of("ghcr.io/org/app@sha256:abc"), "ghcr.io");
        assert_eq!(registry_of("localhost/app"), "localhost");
    }

    #[test]
    fn an_unknown_or_old_pull_time_is_older_than_the_period() {
        let hour = Duration::from_secs(3600);
        assert!(older_than(None, hour));
        assert!(older_than(Some(SystemTime::now() - 2 * hour), hour));
        assert!(!older_than(Some(SystemTime::now() - hour / 2), hour));
    }
}
