//! Release: clean a sandbox up and drop its lease, so what only it kept becomes garbage.

use std::collections::HashMap;

use super::ImageVolumes;
use crate::backend::DEFAULT_SNAPSHOTTER;
use crate::crash_points;
use crate::error::Result;
use crate::events::VolumeEventKind;
use crate::layout::validate_sandbox_id;

impl ImageVolumes {
    /// Clean up the sandbox (as [`cleanup`](Self::cleanup), each view removed from the
    /// snapshotter it was made in) and drop its lease, so what only it kept becomes
    /// garbage. Idempotent.
    pub fn release(&self, sandbox_id: &str) -> Result<()> {
        validate_sandbox_id(sandbox_id)?;
        // With nothing on disk there is nothing to look up (and no need of the backend
        // before the lease's deletion).
        let made_in = if self.layout.sandbox_dir(sandbox_id).exists() {
            self.view_snapshotters(sandbox_id)?
        } else {
            HashMap::new()
        };
        self.cleanup_with(sandbox_id, |target| {
            made_in
                .get(target.to_string_lossy().as_ref())
                .map_or(DEFAULT_SNAPSHOTTER, String::as_str)
        })?;
        crash_points::reached(crash_points::CLEANED_UP);
        self.leases.forget(sandbox_id);
        match self.backend.delete_lease(sandbox_id) {
            Err(e) if !e.is_not_found() => {
                Err(e.context(format!("releasing sandbox {sandbox_id:?}")))
            }
            // A sandbox without a lease had nothing to release: no event.
            Err(_) => Ok(()),
            Ok(()) => {
                self.tell(VolumeEventKind::Released, sandbox_id, None, None);
                Ok(())
            }
        }
    }

    /// The snapshotter each view of `sandbox_id` was made in, by key, as the backend keeps
    /// it: the snapshots the sandbox's lease holds. The lease is the record because it
    /// lives exactly as long as the views matter, persistently in the store (containerd's
    /// metadata, the local database), so it survives a restart of imv and of containerd;
    /// and because containerd adds every snapshot made under a lease to it itself, it
    /// covers volumes made by earlier versions of imv. Other places do not work: the volume's
    /// directory is the mountpoint (a file in it is hidden by the mount), a view's labels
    /// cannot be read without knowing its snapshotter, and a containerd lease's labels
    /// cannot be changed after it is made (no Update call), while a sandbox may get
    /// volumes in more than one snapshotter. Empty when the lease is gone: its views were
    /// garbage then.
    pub(super) fn view_snapshotters(&self, sandbox_id: &str) -> Result<HashMap<String, String>> {
        match self.backend.lease_snapshots(sandbox_id) {
            Ok(snapshots) => Ok(snapshots
                .into_iter()
                .map(|s| (s.key, s.snapshotter))
                .collect()),
            Err(e) if e.is_not_found() => Ok(HashMap::new()),
            Err(e) => Err(e.context(format!(
                "finding the snapshotters of sandbox {sandbox_id:?}"
            ))),
        }
    }
}
