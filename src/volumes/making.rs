//! Making a volume: the sandbox's lease, the image's layers under it, the volume's
//! directory and view, the mount; the quick way first when the backend knows what a view
//! will mount (see deferred_view.rs).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::call::{Call, Made, ViewRequest};
use super::deferred_view::DeferredView;
use super::dirs::create_volume_dir;
use super::mounting::read_only;
use super::{ImageVolumes, LABEL_IMAGE, LABEL_MANIFEST, LABEL_SANDBOX};
use crate::backend::ResolvedImage;
use crate::crash_points;
use crate::error::Result;
use crate::mount::idmap::IdMap;
use crate::mount::MountSpec;

impl ImageVolumes {
    /// Make sure of the sandbox's lease, unpack under it (as containerd's CRI plugin does:
    /// nothing extra to create, delete and collect), then create the target and the view,
    /// and mount. Lease, directory and view are made under the sandbox's lock, so a failing
    /// call cannot drop the lease between another call's lease check and its view. Every
    /// step is recorded in `made` and `call`.
    ///
    /// A NotFound on the way means that what this process believed is gone: the lease
    /// (deleted by another process, by hand, or by a failing call of this sandbox undoing
    /// what it made) or the image's layers (an rmi, then garbage collection). Then both are
    /// made sure of for real and everything is tried once more.
    pub(super) fn make_volume(
        &self,
        view: &ViewRequest<'_>,
        made: &mut Made,
        call: &mut Call,
    ) -> Result<()> {
        let (sandbox_id, reference) = (view.sandbox_id, view.reference);
        if self.mount_known_view(view, made, call)? {
            tracing::info!(sandbox = sandbox_id, image = reference, target = %made.target.display(), "mounted image volume (its view follows)");
            return Ok(());
        }
        let mounts = match self.lease_unpack_view(view, made, call) {
            Err(e) if e.is_not_found() => {
                tracing::debug!(sandbox = sandbox_id, error = %e, "making sure of the lease and the layers again");
                self.leases.forget(sandbox_id);
                self.lease_unpack_view(view, made, call)?
            }
            other => other?,
        };
        let Some(mounts) = mounts else {
            tracing::info!(sandbox = sandbox_id, image = reference, target = %made.target.display(), "mounted image volume (its view follows)");
            return Ok(());
        };
        made.view = true;
        crash_points::reached(crash_points::VIEW_CREATED);
        self.mount_volume(&read_only(mounts), made)?;
        made.mounted = true;
        crash_points::reached(crash_points::MOUNTED);
        self.remember_mount(&made.target)?;
        tracing::info!(sandbox = sandbox_id, image = reference, target = %made.target.display(), "mounted image volume");
        Ok(())
    }

    /// The quick way (see `deferred_view`): mount what the backend knows a view of the
    /// image's layers mounts, and leave the lease and the view to a thread. False, with
    /// nothing left mounted, when the backend knows no such mounts, they do not mount
    /// (the layers were collected and unpacked anew: the backend forgets them then), or
    /// no thread can be had.
    fn mount_known_view(
        &self,
        view: &ViewRequest<'_>,
        made: &mut Made,
        call: &mut Call,
    ) -> Result<bool> {
        // What a view will mount is known for views without remap labels only.
        if made.shape.idmap.is_some() {
            return Ok(false);
        }
        let &ViewRequest {
            sandbox_id,
            snapshotter,
            reference,
            image,
        } = view;
        let parent = image.top_chain_id();
        let Some(mounts) = self
            .backend
            .known_view_mounts(snapshotter, parent.as_ref(), sandbox_id)
        else {
            return Ok(false);
        };
        {
            let _sandbox = self.sandbox_locks.lock(sandbox_id);
            create_volume_dir(&made.target)?;
        }
        if let Err(e) = self.mount_volume(&read_only(mounts.clone()), made) {
            tracing::debug!(target = %made.target.display(), error = %e, "what the image's views mounted does not mount now; making a view first");
            self.backend
                .forget_view_mounts(snapshotter, parent.as_ref());
            return Ok(false);
        }
        crash_points::reached(crash_points::MOUNTED_BEFORE_VIEW);
        let job = DeferredView {
            backend: Arc::clone(&self.backend),
            sandbox_locks: Arc::clone(&self.sandbox_locks),
            leases: Arc::clone(&self.leases),
            sandbox_id: sandbox_id.to_owned(),
            snapshotter: snapshotter.to_owned(),
            key: made.target.to_string_lossy().into_owned(),
            parent,
            labels: view_labels(sandbox_id, reference, image, None),
            pending_lease: call.pending_lease.take(),
            mounted: mounts,
        };
        self.deferred.begin(sandbox_id);
        let deferred = Arc::clone(&self.deferred);
        let sandbox = sandbox_id.to_owned();
        let spawned = std::thread::Builder::new()
            .name("imv-view".to_owned())
            .spawn(move || {
                let created = job.run();
                deferred.end(&sandbox);
                created
            });
        match spawned {
            Ok(handle) => {
                call.deferred.push(handle);
                made.mounted = true;
                // Made by the thread; an undo waits for it, then removes the view.
                made.view = true;
                self.remember_mount(&made.target)?;
                Ok(true)
            }
            Err(e) => {
                // The pending lease went with the job: the careful way makes it anew.
                self.deferred.end(sandbox_id);
                tracing::debug!(error = %e, "no thread for a deferred view; making it now");
                self.mount_table.unmount_recursive(&made.target)?;
                Ok(false)
            }
        }
    }

    /// One try of [`make_volume`](Self::make_volume)'s steps up to the view: its mounts, or
    /// None when the unpack taught the backend what the view will mount and the volume was
    /// mounted the quick way (see `deferred_view`).
    fn lease_unpack_view(
        &self,
        view: &ViewRequest<'_>,
        made: &mut Made,
        call: &mut Call,
    ) -> Result<Option<Vec<MountSpec>>> {
        let sandbox_id = view.sandbox_id;
        self.lease_and_unpack(view, call)?;
        if self.mount_known_view(view, made, call)? {
            return Ok(None);
        }
        let _sandbox = self.sandbox_locks.lock(sandbox_id);
        // Again: a failing call of this sandbox may have dropped the lease meanwhile.
        self.ensure_lease(sandbox_id, call)?;
        create_volume_dir(&made.target)?;
        // One left by a mutate that died before mounting, or mounted before a reboot, is
        // ours to reuse.
        self.view_or_existing(view, made)
            .map(|(mounts, _)| Some(mounts))
    }

    /// Make sure of the sandbox's lease, then of the image's layers under it.
    pub(super) fn lease_and_unpack(&self, view: &ViewRequest<'_>, call: &mut Call) -> Result<()> {
        let &ViewRequest {
            sandbox_id,
            snapshotter,
            image,
            ..
        } = view;
        // Asked while the lease this call started is still being made (the question needs
        // none): one round trip less before an unpack.
        let unpacked = self.backend.is_unpacked(image, snapshotter, true)?;
        {
            let _sandbox = self.sandbox_locks.lock(sandbox_id);
            self.ensure_lease(sandbox_id, call)?;
        }
        if !unpacked {
            self.backend
                .unpack(image, snapshotter, Some(sandbox_id), self.progress.as_ref())?;
        }
        Ok(())
    }

    /// Create the view of the volume `made` under the sandbox's lease, or take the one
    /// that exists already; with whether it was created here. The caller holds the
    /// sandbox's lock and has made sure of the lease.
    pub(super) fn view_or_existing(
        &self,
        view: &ViewRequest<'_>,
        made: &Made,
    ) -> Result<(Vec<MountSpec>, bool)> {
        let &ViewRequest {
            sandbox_id,
            snapshotter,
            reference,
            image,
        } = view;
        let key = made.target.to_string_lossy();
        let top = image.top_chain_id();
        let labels = view_labels(sandbox_id, reference, image, made.shape.idmap.as_ref());
        match self
            .backend
            .view(snapshotter, &key, top.as_ref(), sandbox_id, labels)
        {
            Ok(view) => Ok((view, true)),
            Err(e) if e.is_already_exists() => Ok((self.backend.mounts(snapshotter, &key)?, false)),
            Err(e) => Err(e),
        }
    }
}

/// The labels of a volume's view.
fn view_labels(
    sandbox_id: &str,
    reference: &str,
    image: &ResolvedImage,
    idmap: Option<&IdMap>,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (LABEL_IMAGE.to_owned(), reference.to_owned()),
        (LABEL_SANDBOX.to_owned(), sandbox_id.to_owned()),
        (LABEL_MANIFEST.to_owned(), image.manifest.to_string()),
    ]);
    // As containerd's CRI plugin asks for a pod in a user namespace: the snapshotter makes
    // the view idmapped (see `Backend::check_remap`).
    labels.extend(idmap.into_iter().flat_map(IdMap::remap_labels));
    labels
}
