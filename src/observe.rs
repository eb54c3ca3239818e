//! Observed state: what Docker says, read in one pass (docs/design.md "Concepts: observed state").
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
    let references: std::collections::BTreeSet<&str> = desired
        .services
        .values()
        .map(|s| s.image.as_str())
        .collect();
    // The list and the image inspects at once: none depends on another.
    let inspects = futures::future::try_join_all(references.into_iter().map(|r| async move {
        Ok::<_, RuntimeError>((r.to_string(), rt.inspect_image(r).await?))
    }));
    let (containers, images) =
        futures::future::try_join(rt.list_project(&desired.project.name), inspects).await?;
    Ok(Observed {
        containers,
        images: images.into_iter().collect(),
    })
}
