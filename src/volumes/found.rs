//! A volume found mounted that this process did not mount: whether it is imv's, and
//! taking it over (docs/design.md, "Volumes found mounted").
//!
//! A restart of imv or of its host leaves volumes mounted, and anything else may be mounted
//! at a volume's path too. A mount is reused only when it is what the volume's view mounts.
//! A crash between the mount and the view leaves a mount with no view: the embedded store
//! keeps views in volatile commits, and the quick way (deferred_view.rs) makes the view
//! after the mount. Such a volume is recognised by its layers: the view is made again, as
//! the crashed call would have made it, and the mount is adopted when it is what that view
//! mounts; otherwise the new view goes and the mount is refused.

use std::path::Path;

use super::call::{Call, Made, Shape, ViewRequest};
use super::memo::path_key;
use super::mounting::describe_idmap;
use super::ImageVolumes;
use crate::error::{shown, Error, Result};
use crate::mount::mountinfo::MountInfo;
use crate::mount::{self, selinux, MountRoot, MountSpec};

/// What a mount found at a volume's path is to this process.
pub(super) enum Found {
    /// The mount this process made or checked there.
    Known,
    /// What the volume's view mounts: taken over by this call.
    TakenOver,
    /// A mount with no view: perhaps a volume whose maker died before its view was made
    /// (see [`ImageVolumes::adopt_viewless`]).
    Viewless(Box<FoundMount>),
}

/// A mount found at a volume's path.
pub(super) struct FoundMount {
    root: MountRoot,
    info: Option<MountInfo>,
}

impl ImageVolumes {
    /// A mounted volume is reused only with the shape it was made with: this process
    /// remembers which; of a volume found mounted after a restart the kernel tells
    /// whether it is idmapped (not the mapping) and its label.
    pub(super) fn check_same_shape(&self, target: &Path, shape: &Shape) -> Result<()> {
        let known = self.shapes.get(path_key(target));
        let same = match known {
            Some(known) => known == *shape,
            None => {
                let found = self.mount_table.under(target)?;
                let info = found.first();
                let idmapped = info.is_some_and(|m| self.found_idmapped(m, target));
                let label = info.and_then(|m| selinux::label_of_super_options(&m.super_options));
                idmapped == shape.idmap.is_some() && label == shape.label.as_deref()
            }
        };
        if same {
            return Ok(());
        }
        Err(Error::precondition(format!(
            "{}: the volume is mounted with other uid/gid mappings or another SELinux label \
             than asked (asked: {}, {}); a pod's containers share one mapping and one label \
             (`imv cleanup` of the sandbox unmounts it)",
            target.display(),
            describe_idmap(shape.idmap.as_ref()),
            shape
                .label
                .as_ref()
                .map_or_else(|| "no label".to_owned(), |l| format!("label {l:?}")),
        )))
    }

    /// What the mount `root` found at `target` is: known to this process, what the
    /// volume's view mounts (taken over), or without a view. FailedPrecondition, naming
    /// what is mounted and the cleanup that unmounts it, when the view mounts something
    /// else.
    pub(super) fn check_volume_is_ours(
        &self,
        sandbox_id: &str,
        snapshotter: &str,
        target: &Path,
        root: MountRoot,
    ) -> Result<Found> {
        if self.mount_ids.get(path_key(target)) == Some(root) {
            return Ok(Found::Known);
        }
        let info = self.mount_table.info(root.id)?;
        // A view this process is still making for the sandbox (its volume mounted before
        // it) is waited for: the answer must not depend on that thread's progress.
        self.wait_deferred(Some(sandbox_id));
        let view = match self.backend.mounts(snapshotter, &target.to_string_lossy()) {
            Ok(view) => view,
            Err(e) if e.is_not_found() => {
                return Ok(Found::Viewless(Box::new(FoundMount { root, info })))
            }
            Err(e) => return Err(e),
        };
        let found = FoundMount { root, info };
        if self.is_mount_of_view(&found, &view, target) {
            self.note_mount_id(target, found.root);
            return Ok(Found::TakenOver);
        }
        Err(not_ours(
            sandbox_id,
            target,
            &found,
            "not what the volume's view mounts",
        ))
    }

    /// A volume found mounted without a view (see [`Found::Viewless`]): make its view as
    /// the call that mounted it would have (the sandbox's lease first, the layers unpacked
    /// if they are not), and take the mount over if it is what the view mounts. Otherwise
    /// the view made here goes again and the mount is refused. The caller holds the
    /// volume's lock and has checked the mount's shape.
    pub(super) fn adopt_viewless(
        &self,
        request: &ViewRequest<'_>,
        made: &Made,
        found: Box<FoundMount>,
        call: &mut Call,
    ) -> Result<()> {
        let (view, made_here) = match self.remake_view(request, made, call) {
            Err(e) if e.is_not_found() => {
                // The lease this process knew is gone (see `make_volume`): once more.
                self.leases.forget(request.sandbox_id);
                self.remake_view(request, made, call)?
            }
            other => other?,
        };
        if self.is_mount_of_view(&found, &view, &made.target) {
            self.note_mount_id(&made.target, found.root);
            tracing::info!(sandbox = request.sandbox_id, target = %made.target.display(), "took over a volume found mounted without its view, and made the view");
            return Ok(());
        }
        if made_here {
            let key = made.target.to_string_lossy();
            if let Err(e) = self.backend.remove(request.snapshotter, &key) {
                tracing::warn!(target = %made.target.display(), error = %e, "removing the view made for a mount that is not the volume's failed");
            }
        }
        Err(not_ours(
            request.sandbox_id,
            &made.target,
            &found,
            "and the volume has no view it could be made from",
        ))
    }

    /// Make the view of the volume `made` anew; with whether this call made it (false:
    /// another had meanwhile).
    fn remake_view(
        &self,
        request: &ViewRequest<'_>,
        made: &Made,
        call: &mut Call,
    ) -> Result<(Vec<MountSpec>, bool)> {
        let sandbox_id = request.sandbox_id;
        self.lease_and_unpack(request, call)?;
        let _sandbox = self.sandbox_locks.lock(sandbox_id);
        // Again: a failing call of this sandbox may have dropped the lease meanwhile.
        self.ensure_lease(sandbox_id, call)?;
        self.view_or_existing(request, made)
    }

    /// Whether `found` at `target` is the volume imv makes of `view`: plain, idmapped
    /// (see `is_idmapped_from`) or labelled.
    fn is_mount_of_view(&self, found: &FoundMount, view: &[MountSpec], target: &Path) -> bool {
        let (Some(info), Some(spec)) = (&found.info, view.last()) else {
            return false;
        };
        let made_from = |spec: &MountSpec| {
            mount::is_mounted_from(info, &found.root, spec)
                || self.is_idmapped_from(info, &found.root, spec, target)
        };
        // Labelled, a one-layer volume is an overlay over an empty directory.
        let labelled = || {
            selinux::with_own_superblock(spec.clone(), &self.layout.empty_lower())
                .is_ok_and(|own| own != *spec && made_from(&own))
        };
        made_from(spec) || labelled()
    }

    /// Whether the mount `info` at `target` is an idmapped volume as imv makes them: an
    /// idmapped bind, or an overlay over layers staged for `target` (the overlay itself is
    /// not idmapped: its layers are).
    fn found_idmapped(&self, info: &MountInfo, target: &Path) -> bool {
        if info.mount_options.split(',').any(|o| o == "idmapped") {
            return true;
        }
        let staging = self.layout.idmap_staging(target);
        info.fs_type == "overlay"
            && info
                .super_options
                .contains(&*staging.join("0").to_string_lossy())
    }

    /// Whether `info` is the idmapped overlay imv makes of `spec` at `target`: its lower
    /// directories are the staged idmapped layers, as many as the view's (see
    /// `mount_volume`). An idmapped bind keeps its source's root, which
    /// `is_mounted_from` checks already.
    fn is_idmapped_from(
        &self,
        info: &MountInfo,
        root: &MountRoot,
        spec: &MountSpec,
        target: &Path,
    ) -> bool {
        if spec.kind != "overlay" || !self.found_idmapped(info, target) {
            return false;
        }
        let layers = mount::lower_dirs(spec.options.iter().map(String::as_str)).len();
        let staging = self.layout.idmap_staging(target);
        let staged: Vec<String> = (0..layers)
            .map(|i| staging.join(i.to_string()).to_string_lossy().into_owned())
            .collect();
        let staged = MountSpec {
            kind: spec.kind.clone(),
            source: spec.source.clone(),
            options: vec![format!("lowerdir={}", staged.join(":"))],
        };
        layers > 0 && mount::is_mounted_from(info, root, &staged)
    }
}

/// The refusal of a mount at a volume's path that is not imv's.
fn not_ours(sandbox_id: &str, target: &Path, found: &FoundMount, why: &str) -> Error {
    let what = found.info.as_ref().map_or_else(
        || "a filesystem".to_owned(),
        |i| format!("{} from {}", i.fs_type, shown(&i.source)),
    );
    Error::precondition(format!(
        "{}: {what} is mounted there, {why}; imv does not reuse a mount it did not make \
         (`imv cleanup {sandbox_id}` unmounts it)",
        target.display()
    ))
}
