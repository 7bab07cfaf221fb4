//! Listing: the volumes under the state directory, as they are on disk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::dirs::sorted_dir;
use super::{ImageVolumes, LABEL_IMAGE};
use crate::backend::DEFAULT_SNAPSHOTTER;
use crate::digest::Digest;
use crate::error::Result;

/// One mounted (or half-made) image volume, as found under the state directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VolumeInfo {
    /// The sandbox it belongs to.
    pub sandbox_id: String,
    /// The volume's directory: `<state>/image-volumes/<sandbox>/<image digest hex>`.
    pub target: PathBuf,
    /// The digest of the image it was made from (read from the directory's name): that of
    /// the image's target, i.e. the index of a multi-platform image, as
    /// [`ImageRecord::digest`](crate::backend::ImageRecord::digest); not the platform's manifest.
    pub image_digest: Digest,
    /// The image reference it was requested by, when the backend knows it.
    pub image: Option<String>,
    /// Whether the target is a mountpoint right now.
    pub mounted: bool,
}

impl ImageVolumes {
    /// The image volumes under the state directory, sorted by sandbox then target.
    pub fn volumes(&self) -> Result<Vec<VolumeInfo>> {
        let mut out = Vec::new();
        let root = self.layout.volumes_dir();
        for sandbox in sorted_dir(&root)? {
            let Some(sandbox_id) = sandbox
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_owned)
            else {
                continue;
            };
            let targets = sorted_dir(&sandbox)?;
            // The image is a label of the view, which is read where it was made. A backend
            // that cannot say leaves `image` unknown, as a view it cannot read does.
            let made_in = if targets.is_empty() {
                HashMap::new()
            } else {
                self.view_snapshotters(&sandbox_id).unwrap_or_default()
            };
            for target in targets {
                let Some(image_digest) = digest_of_target(&target) else {
                    continue;
                };
                let key = target.to_string_lossy();
                let snapshotter = made_in
                    .get(key.as_ref())
                    .map_or(DEFAULT_SNAPSHOTTER, String::as_str);
                let image = self
                    .backend
                    .view_info(snapshotter, &key)
                    .ok()
                    .and_then(|v| v.labels.get(LABEL_IMAGE).cloned());
                let mounted = self.mount_table.is_mountpoint(&target)?;
                out.push(VolumeInfo {
                    sandbox_id: sandbox_id.clone(),
                    target,
                    image_digest,
                    image,
                    mounted,
                });
            }
        }
        Ok(out)
    }
}

/// The digest a volume's directory is named by (`<state>/image-volumes/<sandbox>/<hex>`).
pub(super) fn digest_of_target(target: &Path) -> Option<Digest> {
    let hex = target.file_name()?.to_str()?;
    Digest::parse(&format!("sha256:{hex}")).ok()
}
