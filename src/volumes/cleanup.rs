//! Cleanup: unmount and remove every volume of a sandbox, then the views. Idempotent,
//! and it converges after a crash half-way.

use std::fs;
use std::path::Path;
use std::time::Duration;

use super::dirs::remove_if_not_directory;
use super::validate::snapshotter_or_default;
use super::ImageVolumes;
use crate::crash_points;
use crate::error::{Error, Result};
use crate::events::VolumeEventKind;
use crate::layout::validate_sandbox_id;

impl ImageVolumes {
    /// Unmount and remove every image volume of `sandbox_id`: for each, unmount
    /// recursively, remove the view (NotFound is fine), remove the directory; then the
    /// sandbox directory. Idempotent, and converges after a crash half-way. Every volume
    /// is tried; the first error is returned.
    pub fn cleanup(&self, sandbox_id: &str, snapshotter: &str) -> Result<()> {
        validate_sandbox_id(sandbox_id)?;
        let snapshotter = snapshotter_or_default(snapshotter)?;
        self.cleanup_with(sandbox_id, |_| snapshotter)
    }

    /// [`cleanup`](Self::cleanup), each volume's view removed from the snapshotter
    /// `snapshotter_of` names for its target. `sandbox_id` must be validated.
    pub(super) fn cleanup_with<'a>(
        &self,
        sandbox_id: &str,
        snapshotter_of: impl Fn(&Path) -> &'a str,
    ) -> Result<()> {
        self.wait_deferred(Some(sandbox_id));
        self.forget_mounted(sandbox_id);
        let dir = self.layout.sandbox_dir(sandbox_id);
        // A link in place of the sandbox's directory goes, and what it points at stays.
        if remove_if_not_directory(&dir)? {
            return Ok(());
        }
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("reading", &dir, e)),
        };
        let mut first_error = None;
        let mut failed = 0;
        // The views go last, once every mount and directory is gone: a backend may remove
        // them in the background, and on a small machine that work would otherwise take
        // the processor from the unmounts the caller waits for. Each volume's lock is kept
        // until its view's removal is under way, so no mutate makes a view of that key
        // in between.
        let mut views = Vec::new();
        for entry in entries {
            let target = match entry {
                Ok(entry) => entry.path(),
                Err(e) => return Err(Error::io("reading", &dir, e)),
            };
            let lock = self.volume_locks.lock(&target.to_string_lossy());
            match self.unmount_and_remove(&target) {
                Ok(()) => views.push((lock, snapshotter_of(&target), target)),
                Err(e) => {
                    tracing::warn!(target = %target.display(), error = %e, "cleanup of a volume failed");
                    failed += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        // Idmapped layers a crash left staged (normally there is nothing).
        let staging = self.layout.idmap_staging_dir(sandbox_id);
        if let Err(e) = self.remove_staged(&staging) {
            tracing::warn!(dir = %staging.display(), error = %e, "could not remove staged idmapped layers");
        }
        let removed = {
            let _sandbox = self.sandbox_locks.lock(sandbox_id);
            match fs::remove_dir(&dir) {
                // NotEmpty: a mutate for this sandbox made a new volume after the listing
                // above; that mutate came after this cleanup, and its volume is not this
                // call's to take. A volume that failed leaves its directory too.
                Err(e)
                    if !matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::DirectoryNotEmpty
                    ) =>
                {
                    Err(Error::io("removing", &dir, e))
                }
                _ => Ok(()),
            }
        };
        crash_points::reached(crash_points::VOLUMES_REMOVED);
        for (_lock, snapshotter, target) in views {
            // Unmounted and removed: that is the event, whatever becomes of the view.
            self.tell(
                VolumeEventKind::CleanedUp,
                sandbox_id,
                None,
                Some((&target, snapshotter)),
            );
            if let Err(e) = self
                .backend
                .remove_soon(snapshotter, &target.to_string_lossy())
            {
                tracing::warn!(target = %target.display(), error = %e, "cleanup of a volume failed");
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e.context(format!(
                "cleanup of sandbox {sandbox_id:?} ({failed} volumes failed)"
            )));
        }
        removed
    }

    /// Wait until the views of volumes mounted the quick way are made: those of
    /// `sandbox_id`, or all. With the containerd backend a mutate may return before its
    /// volume's view and the sandbox's lease exist (README.md, "Design in brief": the view
    /// after the mount); this is for callers that look at the backend's snapshots or
    /// leases themselves. Cleanup, release and dropping the engine wait by themselves.
    pub fn wait_deferred(&self, sandbox_id: Option<&str>) {
        if !self.deferred.wait(sandbox_id, DEFERRED_WAIT) {
            tracing::warn!(
                sandbox = sandbox_id,
                "views still being made after {DEFERRED_WAIT:?}; going on"
            );
        }
    }

    /// Unmount a volume and remove its directory (already gone is fine; something else in its
    /// place is removed without following it).
    fn unmount_and_remove(&self, target: &Path) -> Result<()> {
        if remove_if_not_directory(target)? {
            return Ok(());
        }
        self.mount_table.unmount_recursive(target)?;
        crash_points::reached(crash_points::UNMOUNTED);
        match fs::remove_dir(target) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("removing", target, e))
            }
            _ => Ok(()),
        }
    }
}

/// How long cleanup, release and the engine's drop wait for deferred views (each is a
/// lease and a view: milliseconds, unless the backend hangs).
const DEFERRED_WAIT: Duration = Duration::from_secs(10);
