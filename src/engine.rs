//! One interface to image volumes, whether they are made in this process
//! ([`ImageVolumes`]) or by a daemon over its socket ([`Client`](crate::service::Client)),
//! as Go's `imv.ImageVolumes` interface is for the bindings' two implementations. A caller
//! written against [`Engine`] (the `imv` command is one) works the same both ways: the
//! same methods, results and errors.

use std::path::Path;

use crate::backend::local::import::ImportOptions;
use crate::backend::{GcStats, ImageRecord};
use crate::cri::Mount;
use crate::error::Result;
use crate::platform::Platform;
use crate::status::Status;
use crate::volumes::{ImageVolumes, MountOutcome, MutateOptions, VolumeInfo};

/// What can be asked of image volumes, here or remote. See [`ImageVolumes`] for what each
/// method does; the daemon's answers are the same.
pub trait Engine: Send + Sync {
    /// [`ImageVolumes::mutate_mounts_with`].
    fn mutate_mounts_with(
        &self,
        sandbox_id: &str,
        snapshotter: &str,
        platform: Option<&Platform>,
        options: &MutateOptions,
        mounts: &mut [Mount],
    ) -> Result<Vec<MountOutcome>>;

    /// [`ImageVolumes::cleanup`].
    fn cleanup(&self, sandbox_id: &str, snapshotter: &str) -> Result<()>;

    /// [`ImageVolumes::release`].
    fn release(&self, sandbox_id: &str) -> Result<()>;

    /// The volumes ([`ImageVolumes::volumes`]), only those of `sandbox_id` when given.
    fn volumes_of(&self, sandbox_id: Option<&str>) -> Result<Vec<VolumeInfo>>;

    /// What serves the volumes and what it holds ([`ImageVolumes::status`]).
    fn status(&self) -> Result<Status>;

    /// [`ImageVolumes::import_with`]. A daemon reads `path` on its own host: give it an
    /// absolute path.
    fn import_with(&self, path: &Path, options: &ImportOptions) -> Result<Vec<ImageRecord>>;

    /// [`ImageVolumes::images`].
    fn images(&self) -> Result<Vec<ImageRecord>>;

    /// [`ImageVolumes::remove_image`].
    fn remove_image(&self, reference: &str) -> Result<ImageRecord>;

    /// [`ImageVolumes::gc`].
    fn gc(&self) -> Result<GcStats>;
}

impl Engine for ImageVolumes {
    fn mutate_mounts_with(
        &self,
        sandbox_id: &str,
        snapshotter: &str,
        platform: Option<&Platform>,
        options: &MutateOptions,
        mounts: &mut [Mount],
    ) -> Result<Vec<MountOutcome>> {
        ImageVolumes::mutate_mounts_with(self, sandbox_id, snapshotter, platform, options, mounts)
    }

    fn cleanup(&self, sandbox_id: &str, snapshotter: &str) -> Result<()> {
        ImageVolumes::cleanup(self, sandbox_id, snapshotter)
    }

    fn release(&self, sandbox_id: &str) -> Result<()> {
        ImageVolumes::release(self, sandbox_id)
    }

    fn volumes_of(&self, sandbox_id: Option<&str>) -> Result<Vec<VolumeInfo>> {
        let mut list = self.volumes()?;
        if let Some(sandbox) = sandbox_id {
            list.retain(|v| v.sandbox_id == sandbox);
        }
        Ok(list)
    }

    fn status(&self) -> Result<Status> {
        // No daemon: no request is in flight but this one's caller.
        ImageVolumes::status(self, 0)
    }

    fn import_with(&self, path: &Path, options: &ImportOptions) -> Result<Vec<ImageRecord>> {
        ImageVolumes::import_with(self, path, options)
    }

    fn images(&self) -> Result<Vec<ImageRecord>> {
        ImageVolumes::images(self)
    }

    fn remove_image(&self, reference: &str) -> Result<ImageRecord> {
        ImageVolumes::remove_image(self, reference)
    }

    fn gc(&self) -> Result<GcStats> {
        ImageVolumes::gc(self)
    }
}

#[cfg(feature = "ttrpc")]
impl Engine for crate::service::Client {
    fn mutate_mounts_with(
        &self,
        sandbox_id: &str,
        snapshotter: &str,
        platform: Option<&Platform>,
        options: &MutateOptions,
        mounts: &mut [Mount],
    ) -> Result<Vec<MountOutcome>> {
        crate::service::Client::mutate_mounts_with(
            self,
            sandbox_id,
            snapshotter,
            platform,
            options,
            mounts,
        )
    }

    fn cleanup(&self, sandbox_id: &str, snapshotter: &str) -> Result<()> {
        crate::service::Client::cleanup(self, sandbox_id, snapshotter)
    }

    fn release(&self, sandbox_id: &str) -> Result<()> {
        crate::service::Client::release(self, sandbox_id)
    }

    fn volumes_of(&self, sandbox_id: Option<&str>) -> Result<Vec<VolumeInfo>> {
        self.volumes(sandbox_id)
    }

    fn status(&self) -> Result<Status> {
        crate::service::Client::status(self)
    }

    fn import_with(&self, path: &Path, options: &ImportOptions) -> Result<Vec<ImageRecord>> {
        crate::service::Client::import_with(self, path, options)
    }

    fn images(&self) -> Result<Vec<ImageRecord>> {
        crate::service::Client::images(self)
    }

    fn remove_image(&self, reference: &str) -> Result<ImageRecord> {
        crate::service::Client::remove_image(self, reference)
    }

    fn gc(&self) -> Result<GcStats> {
        crate::service::Client::gc(self)
    }
}
