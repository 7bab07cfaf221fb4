//! containerd's images and content service as an [`ImageSource`]: resolution itself is
//! shared with the local backend (`crate::backend::resolve`).

use crate::backend::resolve::{ImageSource, Named, ResolveCache};
use crate::digest::Digest;
use crate::error::{Error, Result};

use super::ContainerdBackend;

fn named(image: super::api::containerd::services::images::v1::Image) -> Result<Named> {
    let name = image.name;
    let target = image
        .target
        .ok_or_else(|| Error::invalid(format!("image {name:?} has no target")))?;
    let target = Digest::parse(&target.digest).map_err(|e| e.context(format!("image {name:?}")))?;
    Ok(Named { name, target })
}

impl ImageSource for ContainerdBackend {
    fn image(&self, name: &str) -> Result<Option<Named>> {
        self.get_image(name)?.map(named).transpose()
    }

    fn images(&self) -> Result<Vec<Named>> {
        // An image with a malformed target cannot be resolved; it is skipped, not fatal.
        Ok(self
            .list_images()?
            .into_iter()
            .filter_map(|i| named(i).ok())
            .collect())
    }

    fn read_json(&self, digest: &Digest) -> Result<serde_json::Value> {
        ContainerdBackend::read_json(self, digest)
    }

    fn has_blob(&self, digest: &Digest) -> Result<bool> {
        Ok(self.content_info(digest)?.is_some())
    }

    fn describe(&self) -> &'static str {
        "containerd's content store"
    }

    fn cache(&self) -> Option<&ResolveCache> {
        // Every blob is a round trip to containerd.
        Some(&self.resolved)
    }
}
