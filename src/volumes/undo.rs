//! Undoing a failed mutate: exactly what the call made, newest first, and nothing an
//! earlier call made.

use super::call::{Call, Made};
use super::dirs::remove_dir_if_empty;
use super::memo::path_key;
use super::ImageVolumes;

impl ImageVolumes {
    /// Undo what a failed call made, newest first; then, if this call created the lease
    /// and the sandbox has no volume left, the lease and the sandbox directory. Errors are
    /// logged: the caller's error is the one that matters.
    pub(super) fn undo_call(&self, sandbox_id: &str, snapshotter: &str, call: &mut Call) {
        // The views still being made come first: they are this call's to remove, and may
        // have made the lease.
        for job in call.deferred.drain(..) {
            call.lease_created |= job.join().unwrap_or(false);
        }
        // A lease this call was still creating counts as made by it if it was.
        self.settle_lease(sandbox_id, call);
        for made in call.made.iter().rev() {
            self.undo(snapshotter, made);
        }
        let _sandbox = self.sandbox_locks.lock(sandbox_id);
        let dir = self.layout.sandbox_dir(sandbox_id);
        remove_dir_if_empty(&dir);
        if call.lease_created && !dir.exists() {
            self.leases.forget(sandbox_id);
            match self.backend.delete_lease(sandbox_id) {
                Err(e) if !e.is_not_found() => {
                    tracing::warn!(sandbox = sandbox_id, error = %e, "undo: could not remove the lease this call made")
                }
                _ => {}
            }
        }
    }

    /// Undo what one volume's making did, in reverse; errors are logged.
    fn undo(&self, snapshotter: &str, made: &Made) {
        self.mount_ids.remove(path_key(&made.target));
        if made.mounted {
            if let Err(e) = self.mount_table.unmount_recursive(&made.target) {
                tracing::warn!(target = %made.target.display(), error = %e, "undo: unmount failed");
            }
        }
        if made.view {
            match self
                .backend
                .remove(snapshotter, &made.target.to_string_lossy())
            {
                Err(e) if !e.is_not_found() => {
                    tracing::warn!(target = %made.target.display(), error = %e, "undo: removing the view failed")
                }
                _ => {}
            }
        }
        remove_dir_if_empty(&made.target);
    }
}
