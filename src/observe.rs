//! Observed state: what Docker says, read in one pass (DESIGN.md "observed state").
//!
//! One list call for the project's containers, filtered by the `berth.project` label, and
//! one image inspect per distinct desired image. No per-container inspect: the list call
//! carries the labels, state and image ID that planning needs.

use std::collections::BTreeMap;

use crate::runtime::{ContainerSummary, ImageInfo, Runtime, RuntimeError};
use crate::spec::DesiredState;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Every container labelled with the project, any state.
    pub containers: Vec<ContainerSummary>,
    /// Desired image reference → what is present locally (None: absent).
    pub images: BTreeMap<String, Option<ImageInfo>>,
}

pub async fn observe<R: Runtime>(rt: &R, desired: &DesiredState) -> Result<Observed, RuntimeError> {
    let containers = rt.list_project(&desired.project.name).await?;
    let mut images = BTreeMap::new();
    for s in desired.services.values() {
        if !images.contains_key(&s.image) {
            images.insert(s.image.clone(), rt.inspect_image(&s.image).await?);
        }
    }
    Ok(Observed { containers, images })
}
