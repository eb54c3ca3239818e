//! Images: make every image a converge needs present before anything running is touched
//! (pull or build), and resolve a generation's pins back to image IDs for a revert.

use crate::observe::Observed;
use crate::plan::{Action, Plan};
use crate::report::Reporter;
use crate::runtime::{Runtime, RuntimeError};
use crate::spec::DesiredState;

use std::collections::BTreeMap;

/// Image reference -> image ID, as a generation pins them.
pub type Pins = BTreeMap<String, String>;

/// Image reference → (image ID, has HEALTHCHECK), for every desired service.
pub type Images = BTreeMap<String, (String, bool)>;

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
        let info = match observed.images.get(&s.image).cloned().flatten() {
            Some(i) => i,
            None => {
                let needed = plan
                    .step(&s.name)
                    .is_some_and(|st| st.action != Action::Noop);
                if !needed {
                    continue;
                }
                if let Some(build) = &s.build {
                    report.service(&s.name, &format!("building {}", s.image));
                    rt.build_image(&s.image, build).await?;
                } else {
                    report.service(&s.name, &format!("pulling {}", s.image));
                    rt.pull_image(&s.image).await?;
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
