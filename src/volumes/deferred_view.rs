//! The view made right after the mount: the quick way to a volume of an image this
//! process has already made views of, or has just unpacked.
//!
//! A volume for a new sandbox costs two metadata commits in containerd before anything
//! can be mounted: the sandbox's lease, then the view under it (each an fsync or two;
//! together most of a warm mutate). Yet what a view of a given parent mounts is, for the
//! usual snapshotters, the same for every view (overlayfs: the parent's directories as
//! lower layers, or a bind of the one layer); the backend says so once it has seen two
//! views of one parent mount alike, or once it predicted them from the unpack that just
//! made the parent and such predictions came true (`Backend::known_view_mounts`; see
//! backend/containerd/view_mounts.rs). Then the engine mounts that at once and a thread
//! of its own makes the lease and the view, exactly as the careful way would have, a few
//! milliseconds later. Cleanup, release, an undo and the
//! engine's drop wait for that thread first, so nothing observable through imv differs.
//!
//! What the window changes: for those milliseconds the layers are held by the image's
//! config label (or, just unpacked, by the sandbox's lease they were committed under)
//! rather than by the view under the sandbox's lease (an rmi plus a garbage collection in
//! that window would take the layer directories, while the mount keeps the files it has
//! open in the kernel); a crash in the window leaves a mount without a view, which cleanup
//! handles as any missing view (NotFound is fine). If the thread fails, the volume stays
//! mounted and the failure is logged.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::leases::{KnownLeases, PendingLease};
use crate::backend::Backend;
use crate::digest::Digest;
use crate::error::Result;
use crate::locks::KeyedLocks;
use crate::mount::MountSpec;

/// The lease and view a volume mounted the quick way still needs.
pub(super) struct DeferredView {
    pub backend: Arc<dyn Backend>,
    pub sandbox_locks: Arc<KeyedLocks>,
    /// The engine's sandboxes known to have a lease.
    pub leases: Arc<KnownLeases>,
    pub sandbox_id: String,
    pub snapshotter: String,
    pub key: String,
    pub parent: Option<Digest>,
    pub labels: BTreeMap<String, String>,
    /// The lease creation the mutate started, if it had to.
    pub pending_lease: Option<PendingLease>,
    /// What the volume was mounted from, to check the view against.
    pub mounted: Vec<MountSpec>,
}

impl DeferredView {
    /// Make the sandbox's lease (unless known) and the view under it, under the sandbox's
    /// lock as the careful way does. Whether this created the lease (an undo of the
    /// mutate then deletes it).
    pub fn run(mut self) -> bool {
        let sandbox_locks = Arc::clone(&self.sandbox_locks);
        let _sandbox = sandbox_locks.lock(&self.sandbox_id);
        let pending = self.pending_lease.take();
        let (created, lease) = self.lease(pending);
        if let Err(e) = lease {
            tracing::warn!(sandbox = %self.sandbox_id, key = %self.key, error = %e, "the volume is mounted, but its lease could not be made: the view is not made either");
            return created;
        }
        let mut view = self.view();
        if view.as_ref().is_err_and(|e| e.is_not_found()) {
            // The lease went meanwhile (deleted by hand, or by a failing call of this
            // sandbox): once more, with the lease made anew.
            self.leases.forget(&self.sandbox_id);
            if let (_, Err(e)) = self.create_lease() {
                view = Err(e);
            } else {
                view = self.view();
            }
        }
        match view {
            Ok(mounts) if mounts != self.mounted => {
                tracing::warn!(sandbox = %self.sandbox_id, key = %self.key, ?mounts, mounted = ?self.mounted, "the view mounts otherwise than the volume was mounted from")
            }
            Ok(_) => {}
            // Left by a mutate that died before mounting: the view is there.
            Err(e) if e.is_already_exists() => {}
            Err(e) => {
                tracing::warn!(sandbox = %self.sandbox_id, key = %self.key, error = %e, "the volume is mounted, but its view could not be made")
            }
        }
        created
    }

    /// The outcome of the lease's creation: the mutate's, or this thread's own when the
    /// mutate started none (or its attempt failed) and the lease is not known.
    fn lease(&self, pending: Option<PendingLease>) -> (bool, Result<()>) {
        if let Some(outcome) = pending.map(|outcome| outcome()) {
            if let Ok(created) = self.leases.record(&self.sandbox_id, outcome) {
                return (created, Ok(()));
            }
        }
        if self.leases.contains(&self.sandbox_id) {
            return (false, Ok(()));
        }
        self.create_lease()
    }

    fn create_lease(&self) -> (bool, Result<()>) {
        let outcome = self.backend.create_lease(&self.sandbox_id);
        match self.leases.record(&self.sandbox_id, outcome) {
            Ok(created) => (created, Ok(())),
            Err(e) => (false, Err(e)),
        }
    }

    fn view(&self) -> Result<Vec<MountSpec>> {
        self.backend.view(
            &self.snapshotter,
            &self.key,
            self.parent.as_ref(),
            &self.sandbox_id,
            self.labels.clone(),
        )
    }
}
