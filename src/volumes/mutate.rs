//! Mutate: validate a container's image mounts, plan their volumes, make sure of each
//! under its lock, and set `host_path`; on any failure undo what the call made
//! (docs/design.md, "The job, step by step").

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use super::call::{Call, Made, MountedVolume, Plan, Shape, ViewRequest, VolumeRequest};
use super::config::MutateOptions;
use super::dirs::expect_directory_or_nothing;
use super::found::Found;
use super::validate::{idmap_of, mount_label, snapshotter_or_default, validate_mount, MAX_MOUNTS};
use super::ImageVolumes;
use crate::cri::Mount;
use crate::error::{shown, Error, Result};
use crate::events::VolumeEventKind;
use crate::layout::validate_sandbox_id;
use crate::mount;
use crate::platform::Platform;
use crate::subpath;

/// What a mutate did for one image mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountOutcome {
    /// The mount's index in the call's mounts.
    pub index: usize,
    /// Where its volume (or sub path) is: what the mount's `host_path` was set to.
    pub host_path: PathBuf,
    /// The ID of the image mounted (KEP-5365: CRI's `ImageSpec.image_ref`, what `image`
    /// was set to): its config's digest, or an artifact's target digest, as containerd's
    /// PullImage returns it. The mount's `image.image_ref` was set to it.
    pub image_ref: String,
    /// Whether the volume shows the mount's uid/gid mappings applied already (a pod in a
    /// user namespace): then they were taken off the mount, and the runtime must not map
    /// the volume again.
    pub mappings_applied: bool,
}

impl ImageVolumes {
    /// For every mount that carries an image: validate it, mount the image's volume for
    /// `sandbox_id` and set `host_path`. Other mounts are left alone. `snapshotter` empty
    /// means the default; `platform` `None` means the host's.
    ///
    /// All image mounts are validated before anything is done. On error, whatever this call
    /// mounted or made is undone and `mounts` is unchanged; volumes made by earlier calls stay.
    pub fn mutate_mounts(
        &self,
        sandbox_id: &str,
        snapshotter: &str,
        platform: Option<&Platform>,
        mounts: &mut [Mount],
    ) -> Result<()> {
        self.mutate_mounts_with(
            sandbox_id,
            snapshotter,
            platform,
            &MutateOptions::default(),
            mounts,
        )
        .map(drop)
    }

    /// [`mutate_mounts`](Self::mutate_mounts) with `options`: the volumes get its SELinux
    /// mount label. A pod's volumes share one label: a volume mounted with another (or
    /// none) is FailedPrecondition, as for mappings. Also returns what it did for each
    /// image mount, in the mounts' order.
    pub fn mutate_mounts_with(
        &self,
        sandbox_id: &str,
        snapshotter: &str,
        platform: Option<&Platform>,
        options: &MutateOptions,
        mounts: &mut [Mount],
    ) -> Result<Vec<MountOutcome>> {
        validate_sandbox_id(sandbox_id)?;
        if !options.mount_label.is_empty() {
            mount::selinux::validate_label(&options.mount_label)?;
        }
        if mounts.len() > MAX_MOUNTS {
            return Err(Error::invalid(format!(
                "{} mounts in one call: at most {MAX_MOUNTS}",
                mounts.len()
            )));
        }
        let snapshotter = snapshotter_or_default(snapshotter)?;
        let host;
        let platform = match platform {
            Some(p) => p,
            None => {
                host = Platform::host();
                &host
            }
        };
        let mut wanted = Vec::new();
        let mut idmaps = HashMap::new();
        for (i, m) in mounts.iter().enumerate() {
            if m.image.is_some() {
                let context =
                    |e: Error| e.context(format!("mount {i} ({})", shown(&m.container_path)));
                validate_mount(m).map_err(context)?;
                if let Some(idmap) = idmap_of(m).map_err(context)? {
                    idmaps.insert(i, idmap);
                }
                wanted.push(i);
            }
        }
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let label = mount_label(options)?;

        // A sandbox this process knows no lease of: its creation (a metadata commit in
        // containerd) goes on while the images are resolved.
        let mut call = Call::default();
        if !self.leases.contains(sandbox_id) {
            call.pending_lease = Some(self.backend.start_create_lease(sandbox_id));
        }
        let plans = match self.plan(sandbox_id, platform, mounts, &wanted) {
            Ok(plans) => plans,
            Err(e) => {
                self.undo_call(sandbox_id, snapshotter, &mut call);
                return Err(e);
            }
        };
        let mut targets: Vec<String> = plans
            .iter()
            .map(|p| p.target.to_string_lossy().into_owned())
            .collect();
        targets.sort();
        targets.dedup();
        let _volumes: Vec<_> = targets.iter().map(|t| self.volume_locks.lock(t)).collect();

        let mut host_paths = Vec::with_capacity(plans.len());
        for plan in &plans {
            let m = &mounts[plan.index];
            let request = VolumeRequest {
                sandbox_id,
                snapshotter,
                platform,
                plan,
                shape: Shape {
                    idmap: idmaps.get(&plan.index).cloned(),
                    label: label.clone(),
                },
            };
            let result = self.ensure_volume(&request, &mut call).and_then(|()| {
                match m.image_sub_path.as_str() {
                    "" => Ok(plan.target.clone()),
                    // containerd's phrase first, as callers match on it (its integration
                    // test TestImageVolumeReusableAfterFailure does).
                    sub => subpath::resolve(&plan.target, sub)
                        .map_err(|e| e.context("failed to ensure image subpath")),
                }
            });
            match result {
                Ok(path) => host_paths.push((plan.index, path, plan.image_id.to_string())),
                Err(e) => {
                    self.undo_call(sandbox_id, snapshotter, &mut call);
                    let i = plan.index;
                    return Err(e.context(format!("mount {i} ({})", shown(&m.container_path))));
                }
            }
        }
        // Every volume was there already: the lease's creation only needs its outcome.
        self.settle_lease(sandbox_id, &mut call);
        for plan in &plans {
            let volume = MountedVolume {
                target: plan.target.clone(),
                image_id: plan.image_id.clone(),
            };
            self.remember_mounted(sandbox_id, &plan.reference, platform, volume);
        }
        self.tell_mutated(sandbox_id, snapshotter, &plans, &call);
        let mut outcomes = Vec::with_capacity(host_paths.len());
        for (i, path, image_ref) in host_paths {
            mounts[i].host_path = path.to_string_lossy().into_owned();
            // The runtime's answer in CRI (KEP-5365): the ID of the image mounted, as
            // PullImage returned it, whatever the caller put there.
            if let Some(spec) = mounts[i].image.as_mut() {
                spec.image_ref.clone_from(&image_ref);
            }
            // The volume shows the owners mapped already: a runtime that idmapped the mount
            // again would map them twice (or fail, on an overlay).
            let mappings_applied = idmaps.contains_key(&i);
            if mappings_applied {
                mounts[i].uid_mappings.clear();
                mounts[i].gid_mappings.clear();
            }
            outcomes.push(MountOutcome {
                index: i,
                host_path: path,
                image_ref,
                mappings_applied,
            });
        }
        // In the mounts' order: the plans, hence the host paths, follow it.
        Ok(outcomes)
    }

    /// Tell the events sink what a successful mutate mounted and took over (once per
    /// volume, however many of the call's mounts share it).
    fn tell_mutated(&self, sandbox_id: &str, snapshotter: &str, plans: &[Plan], call: &Call) {
        if self.events.is_none() {
            return;
        }
        let mut told = HashSet::new();
        for plan in plans {
            let target = &plan.target;
            let kind = if call.made.iter().any(|m| m.mounted && m.target == *target) {
                VolumeEventKind::Mounted
            } else if call.taken_over.contains(target) {
                VolumeEventKind::Reused
            } else {
                continue;
            };
            if told.insert(target) {
                self.tell(
                    kind,
                    sandbox_id,
                    Some(&plan.reference),
                    Some((target, snapshotter)),
                );
            }
        }
    }

    /// Resolve every image mount first: an unknown image fails the call before anything is
    /// made, and the volumes' paths are known up front so their locks can be taken in one
    /// order (no two calls can deadlock) and held to the end of the call (a volume this
    /// call made is never seen, reused and then undone by a failure later on).
    fn plan(
        &self,
        sandbox_id: &str,
        platform: &Platform,
        mounts: &[Mount],
        wanted: &[usize],
    ) -> Result<Vec<Plan>> {
        let mut plans = Vec::with_capacity(wanted.len());
        for &index in wanted {
            let m = &mounts[index];
            let context =
                |e: Error| e.context(format!("mount {index} ({})", shown(&m.container_path)));
            let spec = m.image.as_ref().expect("validated: image mounts only");
            // `image` only, as containerd reads it: the kubelet puts the reference it
            // pulled there; `image_ref` is the runtime's to report (set below), not an
            // input.
            let reference = spec.image.clone();
            // Another container of the pod on an image named by its digest or ID (what the
            // kubelet sends): the volume this process mounted for it is still there, and
            // such a name cannot have come to mean another image: no resolution at all.
            if let Some(volume) = self.mounted_for(sandbox_id, &reference, platform)? {
                plans.push(Plan {
                    index,
                    reference,
                    image: None,
                    target: volume.target,
                    image_id: volume.image_id,
                });
                continue;
            }
            let image = self
                .backend
                .resolve(&reference, platform)
                .map_err(context)?;
            // Named by the image, not by the platform's manifest, as containerd's CRI
            // plugin does: two platforms of one image in one sandbox get one directory,
            // and the second request reuses what the first mounted (containerd would too).
            let target = self.layout.target(sandbox_id, &image.digest);
            plans.push(Plan {
                index,
                reference,
                image_id: image.id().clone(),
                image: Some(image),
                target,
            });
        }
        Ok(plans)
    }

    /// Make sure the volume `request` wants is mounted: reuse it when it is a mountpoint
    /// (or this call mounted it already), make it otherwise. The caller holds its lock.
    fn ensure_volume(&self, request: &VolumeRequest<'_>, call: &mut Call) -> Result<()> {
        let &VolumeRequest {
            sandbox_id,
            snapshotter,
            platform,
            plan,
            ref shape,
        } = request;
        let target = plan.target.as_path();
        let reference = plan.reference.as_str();
        // The sandbox's directory and the volume's are imv's to make: anything else found
        // there (a symbolic link, a file) is refused, never followed or mounted over.
        expect_directory_or_nothing(&self.layout.sandbox_dir(sandbox_id), sandbox_id)?;
        expect_directory_or_nothing(target, sandbox_id)?;
        if call.made.iter().any(|m| m.target == target) {
            return Ok(());
        }
        let mut made = Made {
            target: target.to_owned(),
            shape: shape.clone(),
            view: false,
            mounted: false,
        };
        let found = match self.mount_table.mount_root(target)? {
            Some(root) => Some(self.check_volume_is_ours(sandbox_id, snapshotter, target, root)?),
            None => None,
        };
        if let Some(Found::Known | Found::TakenOver) = found {
            self.check_same_shape(target, shape)?;
            if let Some(Found::TakenOver) = found {
                call.taken_over.push(target.to_owned());
            }
            tracing::debug!(sandbox = sandbox_id, target = %target.display(), "reusing mounted volume");
            return Ok(());
        }
        // Found mounted without resolving: either without its view, or unmounted since (a
        // cleanup of the same sandbox ran meanwhile). Resolve now.
        let resolved;
        let image = match &plan.image {
            Some(image) => image,
            None => {
                resolved = self.backend.resolve(reference, platform)?;
                if self.layout.target(sandbox_id, &resolved.digest) != target {
                    return Err(Error::unavailable(format!(
                        "image {reference:?} changed while its volume was reused; try again"
                    )));
                }
                &resolved
            }
        };
        let view = ViewRequest {
            sandbox_id,
            snapshotter,
            reference,
            image,
        };
        if let Some(Found::Viewless(mount)) = found {
            self.check_same_shape(target, shape)?;
            self.adopt_viewless(&view, &made, mount, call)?;
            call.taken_over.push(target.to_owned());
            return Ok(());
        }
        if shape.idmap.is_some() {
            // Before anything is made: a snapshotter that cannot idmap fails the call clean.
            self.backend.check_remap(snapshotter)?;
        }
        let result = self.make_volume(&view, &mut made, call);
        call.made.push(made);
        result
    }
}
